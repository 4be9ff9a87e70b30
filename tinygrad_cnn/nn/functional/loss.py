"""Loss functions: ``cross_entropy`` (fused log-softmax + NLL), ``nll_loss`` and ``mse_loss``.

Shapes (PyTorch's conventions): ``input`` holds ``C`` class scores along dim 1,

* ``input: (N, C)`` with ``target: (N,)`` class indices, or
* ``input: (N, C, d1, ..., dk)`` with ``target: (N, d1, ..., dk)`` (per-pixel classification), or
* ``input: (C,)`` with ``target: ()`` (one unbatched sample).

``reduction="none"`` returns the per-sample losses (the target's shape), ``"sum"`` their sum,
``"mean"`` their weighted mean: the sum divided by the summed class weights of the targets
that are not ``ignore_index`` (the number of such targets when there are no weights).

The fused cross-entropy
-----------------------
With ``a_ij = w_j * ((1 - eps) [j == t_i] + eps / C)`` (the smoothed one-hot target scaled by
the class weights ``w``) the loss of row ``i`` is::

    loss_i = -sum_j a_ij * log p_ij,      log p_ij = (x_ij - m_i) - log sum_k exp(x_ik - m_i)

with ``m_i = max_k x_ik`` so nothing overflows (logits of +-1e4 give exact, finite losses).
Its gradient, using ``d log p_ij / d x_ik = [j == k] - p_ik``::

    d loss_i / d x_ik = s_i * p_ik - a_ik,      s_i = sum_j a_ij

which for ``eps = 0`` and no weights is the familiar ``softmax - onehot``.

Where the kernels live: the ``softmax_cross_entropy_forward``/``_backward`` references below;
Numba in ``tinygrad_cnn/kernels/cpu/loss.py``; CUDA in ``tinygrad_cnn/kernels/cuda/loss.py``.
"""
from __future__ import annotations

import warnings

import numpy as np

from ... import backend
from ..._arguments import check_tensor
from ...autograd import Function
from ...backend import get_array_module
from .activation import _Softmax, log_softmax

__all__ = ["cross_entropy", "nll_loss", "mse_loss"]

_REDUCTIONS = ("none", "mean", "sum")


# ---------------------------------------------------------------------------
# NumPy references of the fused kernels
# ---------------------------------------------------------------------------

def _smoothed_target_weights(xp, target, class_weight, ignore_index, label_smoothing, num_classes,
                             dtype):
    """a_ij = w_j ((1 - eps) [j == t_i] + eps / C), zero rows where t_i == ignore_index. (M, C)."""
    rows = target.shape[0]
    valid = target != ignore_index
    safe_target = xp.where(valid, target, 0)
    weights = class_weight.astype(dtype, copy=False)
    a = xp.zeros((rows, num_classes), dtype=dtype)
    if label_smoothing != 0:
        a += weights[None, :] * dtype.type(label_smoothing / num_classes)
    a[xp.arange(rows), safe_target] += weights[safe_target] * dtype.type(1.0 - label_smoothing)
    a[~valid] = 0
    return a


@backend.register_reference("softmax_cross_entropy_forward")
def softmax_cross_entropy_forward_reference(logits, target, class_weight, ignore_index,
                                            label_smoothing):
    """Per-row smoothed, weighted cross-entropy.

    logits: (M, C) float; target: (M,) int64 class indices (or ``ignore_index``);
    class_weight: (C,) (ones when unweighted); ignore_index: int; label_smoothing: float in [0, 1].
    Returns ``(loss, logsumexp)``, both (M,): ``loss_i = -sum_j a_ij log p_ij`` in the logits'
    dtype (0 for ignored rows) and ``logsumexp_i = log sum_j exp(logits_ij)`` in float64, saved
    for backward. float64 because in float32 the logsumexp of logits near 1e4 keeps only ~3
    decimals after the point, and ``exp(logits - logsumexp)`` would inherit that error.
    """
    xp = get_array_module(logits)
    rows, num_classes = logits.shape
    row_max = logits.max(axis=1, keepdims=True)
    shifted = logits - row_max
    log_norm = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    log_probs = shifted - log_norm
    valid = target != ignore_index
    safe_target = xp.where(valid, target, 0)
    weights = class_weight.astype(logits.dtype, copy=False)
    loss = -(1.0 - label_smoothing) * weights[safe_target] * log_probs[xp.arange(rows), safe_target]
    if label_smoothing != 0:
        # Skipped when eps == 0 so that a -inf logit of another class does not give 0 * inf.
        loss = loss - (label_smoothing / num_classes) * (log_probs * weights).sum(axis=1)
    loss = xp.where(valid, loss, 0).astype(logits.dtype, copy=False)
    logsumexp = row_max[:, 0].astype(np.float64) + log_norm[:, 0].astype(np.float64)
    return loss, logsumexp


@backend.register_reference("softmax_cross_entropy_backward")
def softmax_cross_entropy_backward_reference(logits, logsumexp, target, class_weight, ignore_index,
                                             label_smoothing, row_grad):
    """Gradient of the per-row losses.

    logits: (M, C); logsumexp: (M,) float64 from the forward; target, class_weight, ignore_index,
    label_smoothing as in the forward; row_grad: (M,) upstream gradient of each row's loss.
    Returns grad_logits (M, C) = ``row_grad_i * (s_i * softmax(logits)_ij - a_ij)``.
    """
    xp = get_array_module(logits)
    probs = xp.exp(logits - logsumexp[:, None]).astype(logits.dtype, copy=False)
    a = _smoothed_target_weights(xp, target, class_weight, ignore_index, label_smoothing,
                                 logits.shape[1], logits.dtype)
    mass = a.sum(axis=1, keepdims=True)
    return (row_grad[:, None] * (mass * probs - a)).astype(logits.dtype, copy=False)


# ---------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------

class _SoftmaxCrossEntropy(Function):
    """(M, C) logits -> (M,) per-row losses;  dx_ij = g_i * (s_i * p_ij - a_ij) (see module doc)."""

    def forward(self, logits, *, target, class_weight, ignore_index, label_smoothing):
        xp = get_array_module(logits)
        forward = backend.kernel("softmax_cross_entropy_forward", xp)
        loss, self.logsumexp = forward(logits, target, class_weight, ignore_index, label_smoothing)
        self.save_for_backward(logits)
        self.target, self.class_weight = target, class_weight
        self.ignore_index, self.label_smoothing = ignore_index, label_smoothing
        return loss

    def backward(self, g):
        (logits,) = self.saved_tensors
        xp = get_array_module(logits.array)
        a = _smoothed_target_weights(xp, self.target, self.class_weight, self.ignore_index,
                                     self.label_smoothing, logits.shape[1], logits.dtype)
        mass = a.sum(axis=1, keepdims=True)
        probs = _Softmax.apply(logits, dim=1)
        return g.reshape(-1, 1) * (probs * mass - a)

    def fast_backward(self, g):
        (logits,) = self.saved_tensors
        backward = backend.kernel("softmax_cross_entropy_backward", get_array_module(g))
        return backward(logits.array, self.logsumexp, self.target, self.class_weight,
                        self.ignore_index, self.label_smoothing, g)


class _WeightedPick(Function):
    """(M, C) -> (M,): out_i = coef_i * x[i, t_i] (0 for ignored rows);  the adjoint of
    :class:`_WeightedScatter`, so each is the other's backward."""

    def forward(self, x, *, target, coef, valid):
        xp = get_array_module(x)
        self.target, self.coef, self.valid, self.num_classes = target, coef, valid, x.shape[1]
        picked = x[xp.arange(x.shape[0]), target] * coef
        return xp.where(valid, picked, 0).astype(x.dtype, copy=False)

    def backward(self, g):
        return _WeightedScatter.apply(g, target=self.target, coef=self.coef, valid=self.valid,
                                      num_classes=self.num_classes)


class _WeightedScatter(Function):
    """(M,) -> (M, C): out[i, t_i] = coef_i * g_i, zeros elsewhere;  dg_i = coef_i * G[i, t_i]."""

    def forward(self, g, *, target, coef, valid, num_classes):
        xp = get_array_module(g)
        self.target, self.coef, self.valid = target, coef, valid
        out = xp.zeros((g.shape[0], num_classes), dtype=g.dtype)
        out[xp.arange(g.shape[0]), target] = xp.where(valid, g * coef, 0)
        return out

    def backward(self, g):
        return _WeightedPick.apply(g, target=self.target, coef=self.coef, valid=self.valid)


# ---------------------------------------------------------------------------
# Argument handling
# ---------------------------------------------------------------------------

def _legacy_reduction(op, size_average, reduce, reduction):
    if size_average is None and reduce is None:
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")
        return reduction
    warnings.warn(f"{op}: size_average and reduce are deprecated, use reduction= instead",
                  DeprecationWarning, stacklevel=3)
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    if not reduce:
        return "none"
    return "mean" if size_average else "sum"


def _check_input(op, input):
    check_tensor(op, "input", input)
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating-point input, got dtype {input.dtype} "
                        f"(shape {input.shape})")
    if input.ndim == 0:
        raise ValueError(f"{op}: input must have at least 1 dimension (C,) or (N, C, ...), "
                         f"got a 0-d tensor")


def _raw(value, xp):
    from ...tensor import Tensor
    if isinstance(value, Tensor):
        return value.array
    return xp.asarray(value)


def _class_weight(op, weight, num_classes, xp, dtype):
    if weight is None:
        return xp.ones(num_classes, dtype=dtype)
    array = _raw(weight, xp)
    if tuple(array.shape) != (num_classes,):
        raise ValueError(f"{op}: weight must have shape ({num_classes},) (one entry per class), "
                         f"got shape {tuple(array.shape)}")
    return array.astype(dtype, copy=False)


def _class_targets(op, target, input, num_classes, ignore_index):
    """Validated int64 class indices, flattened to (M,), plus the per-sample target shape."""
    xp = get_array_module(input.array)
    array = _raw(target, xp)
    expected = input.shape[:1] + input.shape[2:] if input.ndim > 1 else ()
    if tuple(array.shape) != expected:
        raise ValueError(
            f"{op}: target shape {tuple(array.shape)} does not match input shape {input.shape}: "
            f"expected class indices of shape {expected}" +
            (f" or class probabilities of shape {input.shape}" if op == "cross_entropy" else ""))
    if array.dtype.kind == "f":
        # Tensor([1, 2]) is float32 in this framework: accept whole-number floats as indices.
        if not bool(xp.all(array == xp.round(array))):
            raise TypeError(f"{op}: class-index targets must be integers, got non-integer values "
                            f"of dtype {array.dtype} (shape {tuple(array.shape)})")
    elif array.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class indices, got dtype {array.dtype}")
    flat = array.reshape(-1).astype(np.int64)
    valid = flat != ignore_index
    out_of_range = valid & ((flat < 0) | (flat >= num_classes))
    if bool(out_of_range.any()):
        bad = int(flat[xp.argmax(out_of_range)])
        raise IndexError(f"{op}: target value {bad} is out of range for {num_classes} classes "
                         f"(expected 0 <= target < {num_classes}, or ignore_index={ignore_index})")
    return flat, valid, expected


def _classes_last(input):
    """(N, C, d1, ..., dk) -> (N * d1 * ... * dk, C); (C,) -> (1, C)."""
    if input.ndim == 1:
        return input.reshape(1, -1)
    if input.ndim > 2:
        input = input.permute(0, *range(2, input.ndim), 1)
    return input.reshape(-1, input.shape[-1])


def _reduce(rows, reduction, sample_shape, denominator):
    if reduction == "none":
        return rows.reshape(sample_shape)
    total = rows.sum()
    if reduction == "sum":
        return total
    if denominator == 0:
        # Every target ignored (or an empty batch): 0 / 0, NaN as in PyTorch.
        return total * float("nan")
    return total / float(denominator)


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------

def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
                  reduction="mean", label_smoothing=0.0):
    """Cross-entropy between softmax(input) and the targets, fused (log-softmax + NLL).

    input: ``(N, C)``, ``(N, C, d1, ..., dk)`` or ``(C,)`` unnormalised scores (logits).
    target: class indices ``(N,)`` / ``(N, d1, ..., dk)`` / ``()`` (int; ``ignore_index`` marks
    entries that contribute nothing), or class probabilities of ``input``'s shape.
    weight: ``(C,)`` rescaling per class (a constant). label_smoothing ``eps`` in [0, 1]: the
    target becomes ``(1 - eps) * onehot + eps / C``.
    Returns a scalar (``"mean"``, ``"sum"``) or the target's shape (``"none"``).

    ``"mean"`` with class indices divides by the summed weights of the non-ignored targets
    (PyTorch's weighted mean, also for the smoothing term); with probabilities it divides by
    the number of samples ``N * d1 * ... * dk``.

    Backward (class indices): ``dx = g * (s * softmax(x) - a)``, ``a`` the weighted smoothed
    one-hot target and ``s`` its row sum (``softmax - onehot`` in the plain case); one fused
    kernel for first-order gradients, a differentiable formula under ``create_graph=True``.
    """
    op = "cross_entropy"
    reduction = _legacy_reduction(op, size_average, reduce, reduction)
    _check_input(op, input)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float, np.floating)):
        raise TypeError(f"{op}: label_smoothing must be a float in [0, 1], got {label_smoothing!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    label_smoothing = float(label_smoothing)
    xp = get_array_module(input.array)
    num_classes = input.shape[1] if input.ndim > 1 else input.shape[0]
    class_weight = _class_weight(op, weight, num_classes, xp, input.dtype)

    target_shape = tuple(target.shape) if hasattr(target, "shape") else np.shape(target)
    target_dtype = _raw(target, xp).dtype
    if target_dtype.kind == "f" and target_shape == input.shape:
        return _probability_cross_entropy(input, target, class_weight, ignore_index, reduction,
                                          label_smoothing, num_classes)

    flat_target, valid, sample_shape = _class_targets(op, target, input, num_classes, ignore_index)
    rows = _SoftmaxCrossEntropy.apply(
        _classes_last(input), target=flat_target, class_weight=class_weight,
        ignore_index=int(ignore_index), label_smoothing=label_smoothing)
    denominator = float(class_weight[xp.where(valid, flat_target, 0)][valid].sum())
    return _reduce(rows, reduction, sample_shape, denominator)


def _probability_cross_entropy(input, target, class_weight, ignore_index, reduction,
                               label_smoothing, num_classes):
    """Soft targets q (input's shape): loss = -sum_j w_j q_j log p_j per sample.

    Built from log_softmax and Tensor ops, so it is differentiable in the target as well.
    """
    from ...tensor import Tensor
    if ignore_index >= 0:
        raise ValueError(f"cross_entropy: ignore_index={ignore_index} is not supported for "
                         f"class-probability targets")
    if not isinstance(target, Tensor):
        target = Tensor(_raw(target, get_array_module(input.array)), dtype=input.dtype)
    if label_smoothing != 0:
        target = target * (1.0 - label_smoothing) + label_smoothing / num_classes
    class_dim = 1 if input.ndim > 1 else 0
    weight_shape = [1] * input.ndim
    weight_shape[class_dim] = num_classes
    log_probs = log_softmax(input, dim=class_dim)
    rows = -(log_probs * target * class_weight.reshape(weight_shape)).sum(class_dim)
    samples = input.array.size // num_classes
    return _reduce(rows, reduction, rows.shape, samples)


def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None,
             reduction="mean"):
    """Negative log-likelihood: ``loss_i = -w[t_i] * input[i, t_i]`` for log-probabilities input.

    input: ``(N, C)``, ``(N, C, d1, ..., dk)`` or ``(C,)`` log-probabilities (e.g. from
    :func:`log_softmax`); target: ``(N,)``, ``(N, d1, ..., dk)`` or ``()`` class indices.
    ``"mean"`` divides by the summed weights of the non-ignored targets.
    Backward: ``dx[i, t_i] = -w[t_i] * g_i``, zero elsewhere (a scatter, whose own backward is
    the gather again).
    """
    op = "nll_loss"
    reduction = _legacy_reduction(op, size_average, reduce, reduction)
    _check_input(op, input)
    xp = get_array_module(input.array)
    num_classes = input.shape[1] if input.ndim > 1 else input.shape[0]
    class_weight = _class_weight(op, weight, num_classes, xp, input.dtype)
    flat_target, valid, sample_shape = _class_targets(op, target, input, num_classes, ignore_index)
    safe_target = xp.where(valid, flat_target, 0)
    coef = xp.where(valid, class_weight[safe_target], 0).astype(input.dtype, copy=False)
    picked = _WeightedPick.apply(_classes_last(input), target=safe_target, coef=coef, valid=valid)
    return _reduce(-picked, reduction, sample_shape, float(coef.sum()))


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Mean squared error ``(input - target)**2``, reduced. input, target: ``(*)``, same shape.

    A target of another (broadcastable) shape is broadcast with a warning, as PyTorch does.
    ``weight`` (input's shape) multiplies each squared error; ``"mean"`` then divides by the
    sum of the weights. Backward: ``dx = 2 (x - y) g``, ``dy = -2 (x - y) g`` (divided by the
    count for ``"mean"``).
    """
    from ...tensor import Tensor
    op = "mse_loss"
    reduction = _legacy_reduction(op, size_average, reduce, reduction)
    check_tensor(op, "input", input)
    if not isinstance(target, Tensor):
        target = input._operand(target)
    if target.shape != input.shape:
        try:
            np.broadcast_shapes(input.shape, target.shape)
        except ValueError:
            raise ValueError(f"{op}: target shape {target.shape} cannot be broadcast to input "
                             f"shape {input.shape}") from None
        warnings.warn(f"{op}: using a target shape {target.shape} that is different from the "
                      f"input shape {input.shape}; they will be broadcast, which is likely not "
                      f"what you want", UserWarning, stacklevel=2)
    squared = (input - target) ** 2
    if weight is not None:
        weight = weight if isinstance(weight, Tensor) else input._operand(weight)
        if weight.shape != input.shape:
            raise ValueError(f"{op}: weight shape {weight.shape} must equal input shape "
                             f"{input.shape}")
        squared = squared * weight
        if reduction == "mean":
            return squared.sum() / weight.sum()
    if reduction == "none":
        return squared
    if reduction == "sum":
        return squared.sum()
    return squared.mean()
