"""Numba kernels for activations: ReLU's forward and backward, and the error function.

Signatures follow the NumPy references: ``relu_forward``/``relu_backward`` in
``tinygrad_cnn.ops`` (next to the ReLU op) and ``erf`` in
``tinygrad_cnn.nn.functional.activation`` (used by the exact GELU). Numba compiles
``math.erf`` to the C library's ``erf``, correctly rounded to within an ulp or so.
ReLU is one memory pass on every core instead of NumPy's single-threaded pass (two for
the backward: the mask, then the product). Small arrays run on one thread.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from ._float16 import computing_float16_in_float32

__all__ = ["erf", "relu_forward", "relu_backward", "KERNELS", "PARALLEL_MIN_ELEMENTS"]


PARALLEL_MIN_ELEMENTS = 1 << 16


def _elementwise(serial, parallel, first, *others):
    """Run an elementwise kernel pair ``kernel(*flat_inputs, out)`` on flat views of
    same-shaped arrays; the result has ``first``'s shape and dtype."""
    first = np.asarray(first)
    flats = [np.ascontiguousarray(a).reshape(-1) for a in (first,) + others]
    out = np.empty(flats[0].shape, dtype=first.dtype)
    run = parallel if out.size >= PARALLEL_MIN_ELEMENTS else serial
    run(*flats, out)
    return out.reshape(first.shape)


@numba.njit(cache=True)
def _erf_serial(flat_x, out):
    for i in range(flat_x.size):
        out[i] = math.erf(flat_x[i])


@numba.njit(cache=True, parallel=True)
def _erf_parallel(flat_x, out):
    for i in prange(flat_x.size):
        out[i] = math.erf(flat_x[i])


def erf(x):
    """x: any shape, float dtype -> erf(x), same shape and dtype."""
    return _elementwise(_erf_serial, _erf_parallel, x)


# No fastmath in the ReLU kernels: it would let LLVM assume there are no NaNs, and
# NaN must pass through the forward (as PyTorch) and be blocked where the output is <= 0.

@numba.njit(cache=True, nogil=True)
def _relu_forward_serial(flat_x, out):
    for i in range(flat_x.size):
        value = flat_x[i]
        out[i] = 0 if value <= 0 else value


@numba.njit(cache=True, parallel=True, nogil=True)
def _relu_forward_parallel(flat_x, out):
    for i in prange(flat_x.size):
        value = flat_x[i]
        out[i] = 0 if value <= 0 else value


def relu_forward(x):
    """x: any shape -> max(x, 0) of x's shape and dtype (NaN stays NaN)."""
    return _elementwise(_relu_forward_serial, _relu_forward_parallel, x)


@numba.njit(cache=True, nogil=True)
def _relu_backward_serial(flat_grad, flat_output, grad_x):
    for i in range(flat_grad.size):
        grad_x[i] = flat_grad[i] if flat_output[i] > 0 else 0


@numba.njit(cache=True, parallel=True, nogil=True)
def _relu_backward_parallel(flat_grad, flat_output, grad_x):
    for i in prange(flat_grad.size):
        grad_x[i] = flat_grad[i] if flat_output[i] > 0 else 0


def relu_backward(grad_output, output):
    """grad_output, output: the same shape -> grad_output where output > 0, else 0."""
    return _elementwise(_relu_backward_serial, _relu_backward_parallel, grad_output, output)


KERNELS = computing_float16_in_float32({"erf": erf, "relu_forward": relu_forward, "relu_backward": relu_backward})
