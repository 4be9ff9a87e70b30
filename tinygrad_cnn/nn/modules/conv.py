"""``Conv2d``: a 2-D convolution layer (PyTorch's ``torch.nn.Conv2d``)."""
from __future__ import annotations

import numpy as np

from ..._arguments import is_int, pair
from ...tensor import pad
from .. import functional as F
from .. import init
from ..parameter import add_weight_and_bias
from .module import Module

__all__ = ["Conv2d"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _index_for_padding(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """Source index of every position of a padded axis (reflect/replicate/circular)."""
    positions = np.arange(-before, size + after)
    if mode == "replicate":
        return np.clip(positions, 0, size - 1)
    if mode == "circular":
        return positions % size
    # reflect (mirror without repeating the edge): period 2 * (size - 1)
    period = 2 * (size - 1)
    if period == 0:
        return np.zeros_like(positions)
    folded = positions % period
    return np.where(folded < size, folded, period - folded)


class Conv2d(Module):
    """2-D convolution over a batch of images.

    input: (N, C_in, H, W) -> output: (N, C_out, H_out, W_out), with
    ``H_out = floor((H + 2*padding - dilation*(kernel-1) - 1) / stride) + 1`` (same for W);
    an unbatched (C_in, H, W) input gives (C_out, H_out, W_out).
    weight: (C_out, C_in / groups, kH, kW); bias: (C_out,).

    ``padding`` is an int, a pair, ``"valid"`` (0) or ``"same"`` (stride 1 only; output size =
    input size, an odd total padding puts the extra row/column at the bottom/right as PyTorch).
    ``padding_mode``: ``"zeros"`` (default), ``"reflect"``, ``"replicate"`` or ``"circular"``;
    the non-zero modes pad explicitly (a differentiable gather) and convolve without padding.
    Default initialisation as PyTorch: ``kaiming_uniform_(weight, a=sqrt(5))`` and
    ``bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in = C_in / groups * kH * kW``.

    Differences from PyTorch: ``dtype`` is a NumPy dtype and ``device`` is ``"cpu"`` or
    ``"cuda"``; the forward is im2col + GEMM on every backend (no cuDNN algorithm choice).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 device=None, dtype=None):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not is_int(value) or value < 0:
                raise ValueError(f"Conv2d: {name} must be an integer >= 0, got {value!r}")
        if not isinstance(groups, (int, np.integer)) or groups <= 0:
            raise ValueError(f"Conv2d: groups must be a positive integer, got {groups!r}")
        if in_channels % groups != 0:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) must be divisible by groups ({groups})")
        if out_channels % groups != 0:
            raise ValueError(f"Conv2d: out_channels ({out_channels}) must be divisible by groups ({groups})")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"Conv2d: padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = pair("Conv2d", "kernel_size", kernel_size, 1)
        self.stride = pair("Conv2d", "stride", stride, 1)
        self.dilation = pair("Conv2d", "dilation", dilation, 1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Conv2d: padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("Conv2d: padding='same' is not supported for strided convolutions")
            self.padding = padding
        else:
            self.padding = pair("Conv2d", "padding", padding, 0)
        if min(self.kernel_size) <= 0 or min(self.stride) <= 0 or min(self.dilation) <= 0:
            raise ValueError(f"Conv2d: kernel_size, stride and dilation must be positive, got "
                             f"{self.kernel_size}, {self.stride}, {self.dilation}")
        self.groups = int(groups)
        self.padding_mode = padding_mode
        add_weight_and_bias(self, (self.out_channels, self.in_channels // self.groups, *self.kernel_size), self.out_channels if bias else None, dtype, device)

    def reset_parameters(self) -> None:
        fan_in = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        init.reset_weight_and_bias_(self.weight, self.bias, fan_in)

    def _explicit_padding(self):
        """((top, bottom), (left, right)) padding."""
        if self.padding == "valid":
            return (0, 0), (0, 0)
        if self.padding == "same":
            pads = []
            for d, k in zip(self.dilation, self.kernel_size):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        return (self.padding[0], self.padding[0]), (self.padding[1], self.padding[1])

    def forward(self, input):
        if input.ndim == 3:
            # Unbatched (C, H, W), as PyTorch accepts: a batch of one, then drop the batch axis.
            return self.forward(input.unsqueeze(0)).squeeze(0)
        if input.ndim != 4:
            raise ValueError(f"Conv2d: expected a 4-D input (N, C, H, W) or a 3-D unbatched input "
                             f"(C, H, W), got shape {tuple(input.shape)}")
        if input.shape[1] != self.in_channels:
            raise ValueError(f"Conv2d: expected input with {self.in_channels} channels (in_channels), "
                             f"got input of shape {tuple(input.shape)}")
        (top, bottom), (left, right) = self._explicit_padding()
        if self.padding_mode == "zeros" and top == bottom and left == right:
            return F.conv2d(input, self.weight, self.bias, self.stride, (top, left), self.dilation,
                            self.groups)
        if self.padding_mode == "zeros":
            padded = pad(input, (left, right, top, bottom))
        else:
            height, width = input.shape[2], input.shape[3]
            if self.padding_mode == "reflect" and (max(top, bottom) >= height or max(left, right) >= width):
                raise ValueError(f"Conv2d: reflect padding {self._explicit_padding()} must be smaller "
                                 f"than the input size {(height, width)}")
            rows = _index_for_padding(height, top, bottom, self.padding_mode)
            cols = _index_for_padding(width, left, right, self.padding_mode)
            padded = input[:, :, rows, :][:, :, :, cols]
        return F.conv2d(padded, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    def extra_repr(self) -> str:
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0,) * 2:
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text
