"""Up-sampling layers without weights: ``MaxUnpool2d``, ``Upsample`` and its two fixed-mode names."""
from __future__ import annotations

from .. import functional as F
from .module import Module
from ..._arguments import pair

__all__ = ["MaxUnpool2d", "Upsample", "UpsamplingNearest2d", "UpsamplingBilinear2d"]


class MaxUnpool2d(Module):
    """Undo a ``MaxPool2d``: each value goes back to where the pooling found it, zeros elsewhere.

    ``forward(input, indices, output_size=None)``: input and indices (N, C, H, W) from
    ``MaxPool2d(..., return_indices=True)`` -> (N, C, H_out, W_out) with
    ``H_out = (H - 1)*stride - 2*padding + kernel_size`` unless ``output_size`` says
    otherwise (needed when the pooled size was odd). ``stride`` defaults to ``kernel_size``.
    """

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = pair("MaxUnpool2d", "kernel_size", kernel_size, 1)
        self.stride = pair("MaxUnpool2d", "stride", stride, 1) if stride is not None else self.kernel_size
        self.padding = pair("MaxUnpool2d", "padding", padding)

    def forward(self, input, indices, output_size=None):
        return F.max_unpool2d(input, indices, self.kernel_size, self.stride, self.padding,
                              output_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class Upsample(Module):
    """Resize (N, C, H, W) images to ``size`` or by ``scale_factor`` (see ``F.interpolate``).

    mode: ``"nearest"`` (default) or ``"bilinear"``; align_corners: bilinear only.
    """

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None):
        super().__init__()
        self.size = size
        self.scale_factor = float(scale_factor) if isinstance(scale_factor, (int, float)) \
            else scale_factor
        self.mode = mode
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor

    def forward(self, input):
        return F.interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners,
                             self.recompute_scale_factor)

    def extra_repr(self) -> str:
        if self.scale_factor is not None:
            return f"scale_factor={self.scale_factor}, mode='{self.mode}'"
        return f"size={self.size}, mode='{self.mode}'"


class UpsamplingNearest2d(Upsample):
    """``Upsample(size, scale_factor, mode="nearest")``."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    """``Upsample(size, scale_factor, mode="bilinear", align_corners=True)`` (PyTorch's default
    for this old name)."""

    def __init__(self, size=None, scale_factor=None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)
