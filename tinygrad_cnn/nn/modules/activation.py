"""Activation layers: thin modules around ``tinygrad_cnn.nn.functional``.

``inplace=True`` is passed on to the functional, which overwrites the input only when no graph
is being recorded (under ``no_grad``) and otherwise returns a new tensor with the same values.
"""
from __future__ import annotations

import warnings

from .. import functional as F
from .module import Module

__all__ = ["ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "LogSoftmax"]


class ReLU(Module):
    """``max(0, x)`` elementwise. input: (*) -> output: (*), same shape.

    Differences from PyTorch: ``inplace=True`` overwrites the input only under ``no_grad``; while
    a graph is recorded it returns a new tensor, because the input may be saved for another
    op's backward (PyTorch detects that case at backward time and raises).
    """

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input):
        return F.relu(input, inplace=self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class LeakyReLU(Module):
    """``x if x >= 0 else negative_slope * x``. input: (*) -> output: (*), same shape.

    Differences from PyTorch: ``inplace=True`` as in :class:`ReLU` (in place only under
    ``no_grad``).
    """

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, input):
        return F.leaky_relu(input, self.negative_slope, inplace=self.inplace)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class Sigmoid(Module):
    """``1 / (1 + exp(-x))``. input: (*) -> output: (*), same shape. Same as PyTorch."""

    def forward(self, input):
        return F.sigmoid(input)


class Tanh(Module):
    """``tanh(x)``. input: (*) -> output: (*), same shape. Same as PyTorch."""

    def forward(self, input):
        return F.tanh(input)


class GELU(Module):
    """``x * Phi(x)``, Phi the standard normal CDF (``approximate="tanh"``: the tanh formula).

    input: (*) -> output: (*), same shape. Same as PyTorch.
    """

    def __init__(self, approximate: str = "none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, input):
        return F.gelu(input, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


def _legacy_softmax_dim(ndim: int, name: str) -> int:
    warnings.warn(f"Implicit dimension choice for {name} has been deprecated. Change the call to "
                  "include dim=X as an argument.", stacklevel=3)
    return 0 if ndim in (0, 1, 3) else 1


class Softmax(Module):
    """``exp(x_i) / sum_j exp(x_j)`` along ``dim``; any shape."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        dim = self.dim if self.dim is not None else _legacy_softmax_dim(input.ndim, "softmax")
        return F.softmax(input, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """``x_i - logsumexp_j(x_j)`` along ``dim``; any shape."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        dim = self.dim if self.dim is not None else _legacy_softmax_dim(input.ndim, "log_softmax")
        return F.log_softmax(input, dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
