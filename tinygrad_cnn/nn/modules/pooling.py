"""Pooling layers: ``MaxPool2d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``, ``AdaptiveMaxPool2d``."""
from __future__ import annotations

from .. import functional as F
from .module import Module

__all__ = ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d"]


class MaxPool2d(Module):
    """Maximum over each (dilated) window.

    input: (N, C, H, W) -> output: (N, C, H_out, W_out), with
    ``H_out = floor((H + 2*padding - dilation*(kernel_size-1) - 1) / stride) + 1`` (ceil with
    ``ceil_mode``). ``stride`` defaults to ``kernel_size`` (non-overlapping windows); AlexNet uses
    overlapping ``MaxPool2d(3, stride=2)``. With ``return_indices=True`` the forward returns
    ``(output, indices)``, indices into the flattened H*W plane. An unbatched (C, H, W) input
    gives (C, H_out, W_out). On ties the gradient goes to the first maximum (as PyTorch).
    Same as PyTorch.
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.return_indices = return_indices
        self.ceil_mode = ceil_mode

    def forward(self, input):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AvgPool2d(Module):
    """Mean over each window; input (N, C, H, W) -> (N, C, H_out, W_out) (sizes as MaxPool2d).

    ``count_include_pad`` (default True): padded zeros count in the divisor.
    ``divisor_override``: divide every window sum by this number instead.
    An unbatched (C, H, W) input gives (C, H_out, W_out). Same as PyTorch.
    """

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def forward(self, input):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed output size, whatever the input size.

    input: (N, C, H, W) -> output: (N, C, *output_size) (or (C, H, W) -> (C, *output_size)).
    ``AdaptiveAvgPool2d(1)`` (or ``(1, 1)``) is global average pooling, the head of every ResNet;
    ``None`` in ``output_size`` keeps that input size. Window ``i`` of ``n`` over a size ``L``
    covers ``[floor(i*L/n), ceil((i+1)*L/n))``, as PyTorch.
    """

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, input):
        return F.adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(Module):
    """Max pooling to a fixed output size: (N, C, H, W) -> (N, C, *output_size)."""

    def __init__(self, output_size, return_indices: bool = False):
        super().__init__()
        self.output_size = output_size
        self.return_indices = return_indices

    def forward(self, input):
        return F.adaptive_max_pool2d(input, self.output_size, self.return_indices)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
