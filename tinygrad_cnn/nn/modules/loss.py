"""Loss modules: ``CrossEntropyLoss``, ``NLLLoss``, ``MSELoss``."""
from __future__ import annotations

import warnings

from ...tensor import Tensor
from .. import functional as F
from .module import Module

__all__ = ["CrossEntropyLoss", "NLLLoss", "MSELoss"]

_REDUCTIONS = ("none", "mean", "sum")


def _legacy_reduction(size_average, reduce) -> str:
    warnings.warn("size_average and reduce args will be deprecated, please use reduction= instead.",
                  stacklevel=3)
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


class _Loss(Module):
    def __init__(self, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__()
        if size_average is not None or reduce is not None:
            reduction = _legacy_reduction(size_average, reduce)
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {_REDUCTIONS}, "
                             f"got {reduction!r}")
        self.reduction = reduction


class _WeightedLoss(_Loss):
    def __init__(self, weight=None, size_average=None, reduce=None, reduction: str = "mean"):
        super().__init__(size_average, reduce, reduction)
        if weight is not None and not isinstance(weight, Tensor):
            weight = Tensor(weight)
        self.register_buffer("weight", weight)


class CrossEntropyLoss(_WeightedLoss):
    """Softmax + negative log-likelihood, fused (``F.cross_entropy``).

    input: (N, C) logits (or (N, C, d1, ...)); target: (N,) class indices (int) or (N, C) class
    probabilities; output: scalar (``"mean"``, ``"sum"``) or (N,) (``"none"``).
    weight: (C,) class weights (a buffer, moved by ``to()``). label_smoothing in [0, 1].
    With ``"mean"`` and class weights the sum is divided by the summed weights of the targets.

    Differences from PyTorch: class indices may have any integer dtype (PyTorch wants int64)
    and ``weight`` may be a list or an array as well as a Tensor.
    """

    def __init__(self, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__(weight, size_average, reduce, reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ValueError(f"CrossEntropyLoss: label_smoothing must be in [0, 1], got {label_smoothing}")
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(_WeightedLoss):
    """Negative log-likelihood of log-probabilities: ``-input[n, target[n]]`` (weighted).

    input: (N, C) log-probabilities (e.g. from ``LogSoftmax(dim=1)``); target: (N,) ints.
    """

    def __init__(self, weight=None, size_average=None, ignore_index: int = -100, reduce=None,
                 reduction: str = "mean"):
        super().__init__(weight, size_average, reduce, reduction)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return F.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class MSELoss(_Loss):
    """Squared error ``(input - target)^2`` reduced by ``reduction``.

    input: (*), target: (*) same shape (broadcasting works but warns, as PyTorch) -> output:
    scalar for ``"mean"``/``"sum"``, (*) for ``"none"``. Same as PyTorch.
    """

    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)
