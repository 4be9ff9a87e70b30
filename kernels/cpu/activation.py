"""Numba kernel for the error function (used by the exact GELU).

Signature follows the NumPy reference in ``tinygrad_cnn.nn.functional.activation``:
``erf(x) -> array of x's shape and dtype``. Numba compiles ``math.erf`` to the C library's
``erf``, correctly rounded to within an ulp or so. Small arrays run on one thread.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

__all__ = ["erf", "KERNELS", "PARALLEL_MIN_ELEMENTS"]


PARALLEL_MIN_ELEMENTS = 1 << 16


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
    x = np.asarray(x)
    flat_x = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(flat_x.shape, dtype=x.dtype)
    run = _erf_parallel if flat_x.size >= PARALLEL_MIN_ELEMENTS else _erf_serial
    run(flat_x, out)
    return out.reshape(x.shape)


KERNELS = {"erf": erf}
