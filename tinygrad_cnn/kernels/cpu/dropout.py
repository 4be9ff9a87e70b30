"""Numba kernel for inverted dropout: threshold the noise, scale and multiply in one pass.

Signature follows the NumPy reference in ``tinygrad_cnn.nn.functional.dropout``:
``dropout_forward(x, noise, p) -> (output, scaled_mask)``. Small arrays run on one thread
(a parallel loop's start-up costs more than the work); large ones use ``prange``.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ._float16 import computing_float16_in_float32

__all__ = ["dropout_forward", "KERNELS", "PARALLEL_MIN_ELEMENTS"]

PARALLEL_MIN_ELEMENTS = 1 << 18


@numba.njit(cache=True, inline="always")
def _dropout_element(x, noise, p, scale, output, scaled_mask, i):
    keep = scale if noise[i] >= p else 0.0
    scaled_mask[i] = keep
    # x * 0 rather than a literal 0, so NaN and Inf propagate exactly as in the reference
    output[i] = x[i] * scaled_mask[i]


@numba.njit(cache=True)
def _dropout_serial(x, noise, p, scale, output, scaled_mask):
    for i in range(x.size):
        _dropout_element(x, noise, p, scale, output, scaled_mask, i)


@numba.njit(cache=True, parallel=True)
def _dropout_parallel(x, noise, p, scale, output, scaled_mask):
    for i in prange(x.size):
        _dropout_element(x, noise, p, scale, output, scaled_mask, i)


def dropout_forward(x, noise, p):
    """x, noise: arrays of one shape (noise uniform in [0, 1)) -> (output, scaled_mask), x's dtype."""
    flat_x = np.ascontiguousarray(x).reshape(-1)
    flat_noise = np.ascontiguousarray(noise).reshape(-1)
    output = np.empty(flat_x.shape, dtype=x.dtype)
    scaled_mask = np.empty(flat_x.shape, dtype=x.dtype)
    scale = 1.0 / (1.0 - p) if p < 1.0 else 0.0
    run = _dropout_parallel if flat_x.size >= PARALLEL_MIN_ELEMENTS else _dropout_serial
    run(flat_x, flat_noise, float(p), scale, output, scaled_mask)
    return output.reshape(x.shape), scaled_mask.reshape(x.shape)


KERNELS = computing_float16_in_float32({"dropout_forward": dropout_forward})
