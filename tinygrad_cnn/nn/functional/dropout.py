"""Inverted dropout: ``dropout`` (elementwise) and ``dropout2d`` (whole channels).

During training each element is kept with probability ``1 - p`` and scaled by ``1 / (1 - p)``,
so the expected output equals the input and evaluation needs no rescaling: in eval mode
(``training=False``) both functions return their input unchanged.

The mask is drawn from ``tinygrad_cnn.random.get_generator()`` (CuPy's generator for GPU
tensors), so ``tinygrad_cnn.manual_seed(n)`` makes it reproducible.

Where the kernels live: the ``dropout_forward`` reference below; Numba in
``tinygrad_cnn/kernels/cpu/dropout.py``; CUDA in ``tinygrad_cnn/kernels/cuda/dropout.py``.
"""
from __future__ import annotations

import numpy as np

from ... import backend
from ..._arguments import check_tensor
from ...autograd import Function, is_grad_enabled
from ...backend import get_array_module

__all__ = ["dropout", "dropout2d"]


@backend.register_reference("dropout_forward")
def dropout_forward_reference(x, noise, p):
    """Inverted dropout from given noise.

    x: array of any shape; noise: array of x's shape, uniform in [0, 1); p: drop probability.
    Returns ``(output, scaled_mask)``, both of x's shape and dtype:
    ``scaled_mask = [noise >= p] / (1 - p)`` (all zeros when p == 1), ``output = x * scaled_mask``.
    An element is dropped when ``noise < p``, which happens with probability p.
    """
    scale = 1.0 / (1.0 - p) if p < 1.0 else 0.0
    # The threshold is compared in float64 whatever the noise dtype, as the fast kernels do.
    scaled_mask = (noise >= np.float64(p)).astype(x.dtype) * x.dtype.type(scale)
    return x * scaled_mask, scaled_mask


class _MaskMultiply(Function):
    """out = x * mask with a constant ``mask`` (broadcastable to x);  dx = g * mask."""

    def forward(self, x, *, mask):
        self.mask = mask
        return x * mask

    def backward(self, g):
        return _MaskMultiply.apply(g, mask=self.mask)


class _DropoutFromNoise(Function):
    """Forward through the fused kernel; backward dx = g * scaled_mask (the mask is a constant)."""

    def forward(self, x, *, noise, p):
        output, self.mask = backend.kernel("dropout_forward", get_array_module(x))(x, noise, p)
        return output

    def backward(self, g):
        return _MaskMultiply.apply(g, mask=self.mask)


def _check(op, input, p, training):
    check_tensor(op, "input", input)
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)):
        raise TypeError(f"{op}: p must be a number in [0, 1], got {p!r}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: dropout probability has to be between 0 and 1, but got p={p}")
    if input.dtype.kind != "f" and training and p > 0:
        raise TypeError(f"{op}: expected a floating-point input, got dtype {input.dtype}")


def _uniform_noise(xp, shape, dtype):
    """Uniform [0, 1) noise from the global generator (CuPy's on the GPU)."""
    if xp is np:
        from ...random import get_generator
        noise_dtype = np.float32 if dtype == np.float32 else np.float64
        return get_generator().random(shape, dtype=noise_dtype)
    return xp.random.random(shape, dtype=np.float32 if dtype == np.float32 else np.float64)


def _write_in_place(input, output):
    """Overwrite ``input`` with ``output`` when no gradient can flow through the write: grad
    mode is off, or ``input`` does not require grad (then neither does ``output``). A tensor
    that requires grad gets the out-of-place result instead: the graph needs ``input`` unchanged."""
    if not is_grad_enabled() or not input.requires_grad:
        input.array[...] = output.array
        input._bump_version()
        return input
    return output


def dropout(input, p=0.5, training=True, inplace=False):
    """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``.

    ``input: (*)`` -> ``(*)``. Identity (the input itself) when ``training=False`` or ``p == 0``;
    all zeros when ``p == 1``. Backward: ``dx = g * mask / (1 - p)`` with the same mask.
    ``inplace=True`` overwrites ``input`` and returns it, as PyTorch does, unless ``input``
    requires grad while grad mode is on: then the result is a new tensor (the graph needs the
    original values).
    """
    _check("dropout", input, p, training)
    if not training or p == 0:
        return input
    xp = get_array_module(input.array)
    noise = _uniform_noise(xp, input.shape, input.dtype)
    output = _DropoutFromNoise.apply(input, noise=noise, p=float(p))
    return _write_in_place(input, output) if inplace else output


def dropout2d(input, p=0.5, training=True, inplace=False):
    """Channel dropout: zero whole feature maps with probability ``p``, scale the rest by 1/(1-p).

    ``input: (N, C, H, W)`` or ``(C, H, W)`` -> same shape; one draw per ``(n, c)`` channel
    (per ``c`` for unbatched input). Backward: ``dx = g * mask / (1 - p)``, the mask
    broadcast over ``H, W``.
    """
    _check("dropout2d", input, p, training)
    if input.ndim not in (3, 4):
        raise ValueError(f"dropout2d: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got "
                         f"shape {input.shape}")
    if not training or p == 0:
        return input
    xp = get_array_module(input.array)
    channel_shape = input.shape[:-2] + (1, 1)
    noise = _uniform_noise(xp, channel_shape, input.dtype)
    scale = 1.0 / (1.0 - p) if p < 1.0 else 0.0
    mask = (noise >= np.float64(p)).astype(input.dtype) * input.dtype.type(scale)
    output = _MaskMultiply.apply(input, mask=mask)
    return _write_in_place(input, output) if inplace else output
