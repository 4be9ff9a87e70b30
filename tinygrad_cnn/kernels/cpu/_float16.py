"""float16 for the Numba kernels: computed in float32, returned in float16.

Numba has no float16 arithmetic, and float16 sums over a feature map overflow (65504 is its
largest value) or lose every digit past the third. PyTorch's CPU kernels accumulate float16 in
float32 too. So each kernel of a family's ``KERNELS`` table takes float16 arrays by converting
them to float32, runs unchanged, and converts its floating-point results back to float16; the
rounding to float16 happens once, at the end, and the results are those of the float32 kernel
rounded. Every kernel here returns new arrays (none writes into an argument), which is what
makes the conversion safe.
"""
from __future__ import annotations

import functools

import numpy as np

__all__ = ["computing_float16_in_float32"]


def computing_float16_in_float32(kernels: dict) -> dict:
    """``kernels`` with every function wrapped by :func:`_float16_in_float32`."""
    return {name: _float16_in_float32(fn) for name, fn in kernels.items()}


def _is_float16(value) -> bool:
    return isinstance(value, np.ndarray) and value.dtype == np.float16


def _float16_in_float32(kernel):
    @functools.wraps(kernel)
    def run(*args, **kwargs):
        if not any(_is_float16(arg) for arg in (*args, *kwargs.values())):
            return kernel(*args, **kwargs)
        result = kernel(*(_in_float32(arg) for arg in args),
                        **{key: _in_float32(value) for key, value in kwargs.items()})
        return _rounded_to_float16(result)
    return run


def _in_float32(value):
    return value.astype(np.float32) if _is_float16(value) else value


def _rounded_to_float16(result):
    if isinstance(result, tuple):
        return tuple(_rounded_to_float16(item) for item in result)
    if isinstance(result, np.ndarray) and result.dtype == np.float32:
        return result.astype(np.float16)
    return result
