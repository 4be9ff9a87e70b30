"""``ConvTranspose2d``: a learnable up-sampling layer (PyTorch's ``torch.nn.ConvTranspose2d``)."""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import init
from ..functional.conv_transpose import conv_transpose2d_output_size
from ..parameter import add_weight_and_bias
from .module import Module
from ..._arguments import pair

__all__ = ["ConvTranspose2d"]


class ConvTranspose2d(Module):
    """Transposed 2-D convolution: the adjoint of ``Conv2d`` with the same settings.

    input: (N, C_in, H, W) -> output: (N, C_out, H_out, W_out), with
    ``H_out = (H - 1)*stride - 2*padding + dilation*(kernel - 1) + output_padding + 1``;
    an unbatched (C_in, H, W) input gives (C_out, H_out, W_out).
    weight: (C_in, C_out / groups, kH, kW) (input channels first); bias: (C_out,).
    ``forward(input, output_size=None)``: an explicit (H_out, W_out) (or a longer shape
    ending in it) chooses the output_padding, as PyTorch.
    Default initialisation as PyTorch: ``kaiming_uniform_(weight, a=sqrt(5))``, whose fan-in
    is ``weight.shape[1] * kH * kW = C_out / groups * kH * kW``, and the bias
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with the same fan-in.
    Only ``padding_mode="zeros"`` exists (as in PyTorch).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, groups: int = 1, bias: bool = True, dilation=1,
                 padding_mode: str = "zeros", device=None, dtype=None):
        super().__init__()
        if not isinstance(groups, (int, np.integer)) or groups <= 0:
            raise ValueError(f"ConvTranspose2d: groups must be a positive integer, got {groups!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"ConvTranspose2d: in_channels ({in_channels}) and out_channels "
                             f"({out_channels}) must be divisible by groups ({groups})")
        if padding_mode != "zeros":
            raise ValueError(f"ConvTranspose2d: only padding_mode='zeros' is supported, got "
                             f"{padding_mode!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = pair("ConvTranspose2d", "kernel_size", kernel_size)
        self.stride = pair("ConvTranspose2d", "stride", stride)
        self.padding = pair("ConvTranspose2d", "padding", padding)
        self.output_padding = pair("ConvTranspose2d", "output_padding", output_padding)
        self.dilation = pair("ConvTranspose2d", "dilation", dilation)
        if min(self.kernel_size) <= 0 or min(self.stride) <= 0 or min(self.dilation) <= 0:
            raise ValueError(f"ConvTranspose2d: kernel_size, stride and dilation must be positive, "
                             f"got {self.kernel_size}, {self.stride}, {self.dilation}")
        if any(o >= max(s, d) for o, s, d in zip(self.output_padding, self.stride, self.dilation)):
            raise ValueError(f"ConvTranspose2d: output_padding {self.output_padding} must be "
                             f"smaller than either stride {self.stride} or dilation {self.dilation}")
        self.groups = int(groups)
        self.padding_mode = padding_mode
        add_weight_and_bias(self, (self.in_channels, self.out_channels // self.groups, *self.kernel_size), self.out_channels if bias else None, dtype, device)

    def reset_parameters(self) -> None:
        fan_in = self.out_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        init.reset_weight_and_bias_(self.weight, self.bias, fan_in)

    def _output_padding(self, input, output_size):
        if output_size is None:
            return self.output_padding
        wanted = tuple(int(s) for s in tuple(output_size)[-2:])
        smallest = conv_transpose2d_output_size(tuple(input.shape[-2:]), self.kernel_size,
                                                self.stride, self.padding, 0, self.dilation)
        extra = tuple(w - s for w, s in zip(wanted, smallest))
        if len(wanted) != 2 or any(not 0 <= e < st for e, st in zip(extra, self.stride)):
            raise ValueError(f"ConvTranspose2d: requested output_size {output_size!r} is not "
                             f"reachable from input of shape {tuple(input.shape)}: each size must "
                             f"lie in [{smallest}, {smallest} + stride {self.stride})")
        return extra

    def forward(self, input, output_size=None):
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding,
                                  self._output_padding(input, output_size), self.groups,
                                  self.dilation)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        return text
