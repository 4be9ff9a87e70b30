"""``Dropout`` and ``Dropout2d``: inverted dropout in training mode, identity in evaluation mode."""
from __future__ import annotations

from .. import functional as F
from .module import Module

__all__ = ["Dropout", "Dropout2d"]


class _DropoutNd(Module):
    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)`` while
    ``self.training``; identity after ``eval()``. Any shape in, same shape out.

    The mask comes from the global generator (``tinygrad_cnn.manual_seed``).

    Differences from PyTorch: the random stream is NumPy's, so a seed gives different masks
    than in PyTorch (same distribution); ``inplace=True`` writes in place only under ``no_grad``.
    """

    def forward(self, input):
        return F.dropout(input, self.p, self.training, inplace=self.inplace)


class Dropout2d(_DropoutNd):
    """Zero whole channels: each (sample, channel) feature map is dropped with probability ``p``,
    the rest scaled by ``1 / (1 - p)``. input: (N, C, H, W) or (C, H, W) -> same shape; identity
    in eval. Differences from PyTorch: as :class:`Dropout`."""

    def forward(self, input):
        return F.dropout2d(input, self.p, self.training, inplace=self.inplace)
