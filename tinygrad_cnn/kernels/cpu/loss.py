"""Numba kernels for the fused softmax cross-entropy, row by row.

Signatures follow the NumPy references in ``tinygrad_cnn.nn.functional.loss``:

* ``softmax_cross_entropy_forward(logits, target, class_weight, ignore_index, label_smoothing)
  -> (loss, logsumexp)``
* ``softmax_cross_entropy_backward(logits, logsumexp, target, class_weight, ignore_index,
  label_smoothing, row_grad) -> grad_logits``

Each row is reduced in float64 whatever the input dtype, with an exp written so that the
loops vectorise (see ``_exp_nonpositive``). Rows are independent, so large inputs
are split over threads (``prange``); small ones (a CIFAR batch is 128 x 10) run on one thread,
because starting the thread team costs more than the whole computation.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from ._float16 import computing_float16_in_float32

__all__ = ["softmax_cross_entropy_forward", "softmax_cross_entropy_backward", "KERNELS",
           "PARALLEL_MIN_ELEMENTS"]

# Below this many logits a single thread is faster than a parallel loop.
PARALLEL_MIN_ELEMENTS = 1 << 18


# exp() as plain arithmetic. Numba compiles math.exp to a scalar call into the C
# library, which no loop around it can vectorise: a 1000-class row ran 4x slower than
# NumPy's SIMD exp. Written out, the loop below vectorises. x = k ln2 + r with |r| <= ln2/2,
# so exp(x) = 2^k exp(r); exp(r) is its Taylor series to r^13 (the next term is < 5e-18
# relative), and 2^k is put straight into a float64's exponent bits. Only x <= 0 occurs
# here (logits minus their row maximum or log-sum-exp). Below -708, exp(x) < 3.4e-308 and
# is returned as 0 (the true value would be subnormal: nothing next to a row sum >= 1).
# fastmath "contract" only lets the multiply-adds fuse; NaN and inf keep their meaning.
_LOG2_E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01      # ln2 split in two, so k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_EXP_SMALLEST = -708.0
_INVERSE = (0.0,) + tuple(1.0 / n for n in range(1, 14))


@numba.njit(cache=True, fastmath={"contract"})
def _exp_nonpositive(values, out, scale_bits):
    """out[j] = exp(values[j]) for values <= 0 (NaN stays NaN); float64 (n,) rows;
    scale_bits: int64 (n,) scratch."""
    for j in range(values.size):
        # Clamped first, so that no NaN or -inf reaches the float-to-int conversion.
        x = values[j] if values[j] >= _EXP_SMALLEST else _EXP_SMALLEST
        k = math.floor(x * _LOG2_E + 0.5)
        r = (x - k * _LN2_HI) - k * _LN2_LO
        term = 1.0 + r * _INVERSE[13]
        for n in range(12, 0, -1):          # Horner form of sum_{n<=13} r^n / n!
            term = 1.0 + r * _INVERSE[n] * term
        out[j] = term
        scale_bits[j] = (np.int64(k) + 1023) << 52
    scale = scale_bits.view(np.float64)
    for j in range(values.size):
        x = values[j]
        out[j] = out[j] * scale[j] if x >= _EXP_SMALLEST else (0.0 if x < _EXP_SMALLEST else x)


@numba.njit(cache=True, fastmath={"reassoc"})
def _row_sum(values):
    """Sum of a float64 (n,) row; "reassoc" lets LLVM keep several partial sums in a vector
    (a different, fixed order of additions, not a different precision)."""
    total = 0.0
    for j in range(values.size):
        total += values[j]
    return total


@numba.njit(cache=True, inline="always")
def _forward_row(logits, target, class_weight, ignore_index, label_smoothing, loss, logsumexp, i,
                 shifted, exps, scale_bits):
    classes = logits.shape[1]
    row_max = -np.inf
    for j in range(classes):
        if logits[i, j] > row_max:
            row_max = logits[i, j]
    for j in range(classes):
        shifted[j] = np.float64(logits[i, j]) - row_max
    _exp_nonpositive(shifted, exps, scale_bits)
    log_norm = math.log(_row_sum(exps))
    logsumexp[i] = row_max + log_norm
    t = target[i]
    if t == ignore_index:
        loss[i] = 0.0
    else:
        # log p_j = (x_j - max) - log(sum exp(x - max)): both terms are small, nothing cancels
        value = -(1.0 - label_smoothing) * class_weight[t] * (shifted[t] - log_norm)
        if label_smoothing != 0.0:
            smooth = 0.0
            for j in range(classes):
                smooth += class_weight[j] * (shifted[j] - log_norm)
            value -= label_smoothing / classes * smooth
        loss[i] = value


@numba.njit(cache=True, inline="always")
def _backward_row(logits, logsumexp, target, class_weight, weight_total, ignore_index,
                  label_smoothing, row_grad, grad, i, shifted, probs, scale_bits):
    classes = logits.shape[1]
    smoothing_per_class = label_smoothing / classes
    t = target[i]
    if t == ignore_index:
        for j in range(classes):
            grad[i, j] = 0.0
    else:
        g = row_grad[i]
        target_mass = (1.0 - label_smoothing) * class_weight[t] + smoothing_per_class * weight_total
        lse = logsumexp[i]
        for j in range(classes):
            shifted[j] = np.float64(logits[i, j]) - lse
        _exp_nonpositive(shifted, probs, scale_bits)
        for j in range(classes):
            grad[i, j] = g * (target_mass * probs[j] - smoothing_per_class * class_weight[j])
        grad[i, t] -= g * (1.0 - label_smoothing) * class_weight[t]


@numba.njit(cache=True)
def _forward_rows(logits, target, class_weight, ignore_index, label_smoothing, loss, logsumexp,
                  start, stop):
    """Rows ``start:stop``, with one set of row scratch for all of them."""
    classes = logits.shape[1]
    shifted, exps = np.empty(classes), np.empty(classes)
    scale_bits = np.empty(classes, dtype=np.int64)
    for i in range(start, stop):
        _forward_row(logits, target, class_weight, ignore_index, label_smoothing, loss, logsumexp, i,
                     shifted, exps, scale_bits)


@numba.njit(cache=True, parallel=True)
def _forward_parallel(logits, target, class_weight, ignore_index, label_smoothing, loss, logsumexp,
                      blocks):
    rows = logits.shape[0]
    for block in prange(blocks):
        _forward_rows(logits, target, class_weight, ignore_index, label_smoothing, loss, logsumexp,
                      block * rows // blocks, (block + 1) * rows // blocks)


@numba.njit(cache=True)
def _backward_rows(logits, logsumexp, target, class_weight, ignore_index, label_smoothing,
                   row_grad, grad, start, stop):
    """Rows ``start:stop``, with one set of row scratch for all of them."""
    weight_total = class_weight.sum()
    classes = logits.shape[1]
    shifted, probs = np.empty(classes), np.empty(classes)
    scale_bits = np.empty(classes, dtype=np.int64)
    for i in range(start, stop):
        _backward_row(logits, logsumexp, target, class_weight, weight_total, ignore_index,
                      label_smoothing, row_grad, grad, i, shifted, probs, scale_bits)


@numba.njit(cache=True, parallel=True)
def _backward_parallel(logits, logsumexp, target, class_weight, ignore_index, label_smoothing,
                       row_grad, grad, blocks):
    rows = logits.shape[0]
    for block in prange(blocks):
        _backward_rows(logits, logsumexp, target, class_weight, ignore_index, label_smoothing,
                       row_grad, grad, block * rows // blocks, (block + 1) * rows // blocks)


def softmax_cross_entropy_forward(logits, target, class_weight, ignore_index, label_smoothing):
    """logits (M, C), target (M,) int, class_weight (C,) -> (loss (M,), logsumexp (M,))."""
    logits = np.ascontiguousarray(logits)
    loss = np.empty(logits.shape[0], dtype=logits.dtype)
    logsumexp = np.empty(logits.shape[0], dtype=np.float64)   # float64: see the reference
    args = (logits, np.ascontiguousarray(target, dtype=np.int64),
            np.ascontiguousarray(class_weight, dtype=np.float64), int(ignore_index),
            float(label_smoothing), loss, logsumexp)
    if logits.size >= PARALLEL_MIN_ELEMENTS:
        _forward_parallel(*args, numba.get_num_threads())
    else:
        _forward_rows(*args, 0, logits.shape[0])
    return loss, logsumexp


def softmax_cross_entropy_backward(logits, logsumexp, target, class_weight, ignore_index,
                                   label_smoothing, row_grad):
    """-> grad_logits (M, C) = row_grad[:, None] * (s * softmax(logits) - a); see the reference."""
    logits = np.ascontiguousarray(logits)
    grad = np.empty_like(logits)
    args = (logits, np.ascontiguousarray(logsumexp, dtype=np.float64),
            np.ascontiguousarray(target, dtype=np.int64),
            np.ascontiguousarray(class_weight, dtype=np.float64), int(ignore_index),
            float(label_smoothing), np.ascontiguousarray(row_grad, dtype=logits.dtype), grad)
    if logits.size >= PARALLEL_MIN_ELEMENTS:
        _backward_parallel(*args, numba.get_num_threads())
    else:
        _backward_rows(*args, 0, logits.shape[0])
    return grad


KERNELS = computing_float16_in_float32({
    "softmax_cross_entropy_forward": softmax_cross_entropy_forward,
    "softmax_cross_entropy_backward": softmax_cross_entropy_backward,
})
