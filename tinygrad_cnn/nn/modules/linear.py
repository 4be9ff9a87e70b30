"""``Linear`` and ``Identity``."""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .. import init
from ..parameter import add_weight_and_bias
from .module import Module

__all__ = ["Identity", "Linear"]


class Identity(Module):
    """Returns its input unchanged (any constructor arguments are ignored). Handy to remove a
    layer: ``model.fc = nn.Identity()``.

    input: any shape -> output: the same Tensor object. Same as PyTorch.
    """

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Linear(Module):
    """``y = x W^T + b``.

    input: (*, in_features) -> output: (*, out_features).
    weight: (out_features, in_features); bias: (out_features,).
    Default initialisation as PyTorch: ``kaiming_uniform_(weight, a=sqrt(5))`` and
    ``bias ~ U(-1/sqrt(in_features), 1/sqrt(in_features))`` (both bounds are 1/sqrt(fan_in)).

    Differences from PyTorch: ``dtype`` is a NumPy dtype and ``device`` is ``"cpu"`` or ``"cuda"``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"Linear: {name} must be a non-negative integer, got {value!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        add_weight_and_bias(self, (self.out_features, self.in_features), self.out_features if bias else None, dtype, device)

    def reset_parameters(self) -> None:
        init.reset_weight_and_bias_(self.weight, self.bias, self.in_features)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
