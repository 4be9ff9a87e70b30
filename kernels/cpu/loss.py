"""Numba kernels for the fused softmax cross-entropy (one pass per row).

Signatures follow the NumPy references in ``tinygrad_cnn.nn.functional.loss``:

* ``softmax_cross_entropy_forward(logits, target, class_weight, ignore_index, label_smoothing)
  -> (loss, logsumexp)``
* ``softmax_cross_entropy_backward(logits, logsumexp, target, class_weight, ignore_index,
  label_smoothing, row_grad) -> grad_logits``

Each row is reduced in float64 whatever the input dtype. Rows are independent, so large inputs
are split over threads (``prange``); small ones (a CIFAR batch is 128 x 10) run on one thread,
because starting the thread team costs more than the whole computation.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

__all__ = ["softmax_cross_entropy_forward", "softmax_cross_entropy_backward", "KERNELS",
           "PARALLEL_MIN_ELEMENTS"]

# Below this many logits a single thread is faster than a parallel loop.
PARALLEL_MIN_ELEMENTS = 1 << 18


@numba.njit(cache=True, inline="always")
def _forward_row(logits, target, class_weight, ignore_index, label_smoothing, loss, logsumexp, i):
    classes = logits.shape[1]
    row_max = -np.inf
    for j in range(classes):
        if logits[i, j] > row_max:
            row_max = logits[i, j]
    total = 0.0
    for j in range(classes):
        total += math.exp(logits[i, j] - row_max)
    log_norm = math.log(total)
    logsumexp[i] = row_max + log_norm
    t = target[i]
    if t == ignore_index:
        loss[i] = 0.0
    else:
        # log p_j = (x_j - max) - log(sum exp(x - max)): both terms are small, nothing cancels
        value = -(1.0 - label_smoothing) * class_weight[t] * ((logits[i, t] - row_max) - log_norm)
        if label_smoothing != 0.0:
            smooth = 0.0
            for j in range(classes):
                smooth += class_weight[j] * ((logits[i, j] - row_max) - log_norm)
            value -= label_smoothing / classes * smooth
        loss[i] = value


@numba.njit(cache=True, inline="always")
def _backward_row(logits, logsumexp, target, class_weight, weight_total, ignore_index,
                  label_smoothing, row_grad, grad, i):
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
            prob = math.exp(logits[i, j] - lse)
            grad[i, j] = g * (target_mass * prob - smoothing_per_class * class_weight[j])
        grad[i, t] -= g * (1.0 - label_smoothing) * class_weight[t]


@numba.njit(cache=True)
def _forward_serial(logits, target, class_weight, ignore_index, label_smoothing, loss, logsumexp):
    for i in range(logits.shape[0]):
        _forward_row(logits, target, class_weight, ignore_index, label_smoothing, loss, logsumexp, i)


@numba.njit(cache=True, parallel=True)
def _forward_parallel(logits, target, class_weight, ignore_index, label_smoothing, loss, logsumexp):
    for i in prange(logits.shape[0]):
        _forward_row(logits, target, class_weight, ignore_index, label_smoothing, loss, logsumexp, i)


@numba.njit(cache=True)
def _backward_serial(logits, logsumexp, target, class_weight, ignore_index, label_smoothing,
                     row_grad, grad):
    weight_total = class_weight.sum()
    for i in range(logits.shape[0]):
        _backward_row(logits, logsumexp, target, class_weight, weight_total, ignore_index,
                      label_smoothing, row_grad, grad, i)


@numba.njit(cache=True, parallel=True)
def _backward_parallel(logits, logsumexp, target, class_weight, ignore_index, label_smoothing,
                       row_grad, grad):
    weight_total = class_weight.sum()
    for i in prange(logits.shape[0]):
        _backward_row(logits, logsumexp, target, class_weight, weight_total, ignore_index,
                      label_smoothing, row_grad, grad, i)


def softmax_cross_entropy_forward(logits, target, class_weight, ignore_index, label_smoothing):
    """logits (M, C), target (M,) int, class_weight (C,) -> (loss (M,), logsumexp (M,))."""
    logits = np.ascontiguousarray(logits)
    loss = np.empty(logits.shape[0], dtype=logits.dtype)
    logsumexp = np.empty(logits.shape[0], dtype=np.float64)   # float64: see the reference
    run = _forward_parallel if logits.size >= PARALLEL_MIN_ELEMENTS else _forward_serial
    run(logits, np.ascontiguousarray(target, dtype=np.int64),
        np.ascontiguousarray(class_weight, dtype=np.float64), int(ignore_index),
        float(label_smoothing), loss, logsumexp)
    return loss, logsumexp


def softmax_cross_entropy_backward(logits, logsumexp, target, class_weight, ignore_index,
                                   label_smoothing, row_grad):
    """-> grad_logits (M, C) = row_grad[:, None] * (s * softmax(logits) - a); see the reference."""
    logits = np.ascontiguousarray(logits)
    grad = np.empty_like(logits)
    run = _backward_parallel if logits.size >= PARALLEL_MIN_ELEMENTS else _backward_serial
    run(logits, np.ascontiguousarray(logsumexp, dtype=np.float64),
        np.ascontiguousarray(target, dtype=np.int64),
        np.ascontiguousarray(class_weight, dtype=np.float64), int(ignore_index),
        float(label_smoothing), np.ascontiguousarray(row_grad, dtype=logits.dtype), grad)
    return grad


KERNELS = {
    "softmax_cross_entropy_forward": softmax_cross_entropy_forward,
    "softmax_cross_entropy_backward": softmax_cross_entropy_backward,
}
