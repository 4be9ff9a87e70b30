"""Inverted dropout on the GPU: mask, scale and multiply in one pass.

The uniform noise comes from the caller (CuPy's generator, seeded by
``tinygrad_cnn.manual_seed``), exactly as for the NumPy reference in
``tinygrad_cnn/nn/functional/dropout.py``, whose signature the wrapper has.
"""
from __future__ import annotations

from ._runtime import CudaSource, i64, real, reference, supported_dtype

__all__ = ["KERNELS", "SOURCE"]

SOURCE = CudaSource("dropout", r"""
// Keep an element when noise >= p (compared in double); kept elements are scaled by scale.
extern "C" __global__ void dropout_forward(const T* x, const T* noise, T* out, T* scaled_mask,
                                           long long n, double p, T scale) {
    GRID_STRIDE_LOOP(i, n) {
        T mask = ((double)noise[i] >= p) ? scale : (T)0;
        scaled_mask[i] = mask;
        out[i] = x[i] * mask;
    }
}
""", ["dropout_forward"])


def dropout_forward(x, noise, p):
    """Same contract as the reference: x, noise (same shape) -> (output, scaled_mask)."""
    if not supported_dtype(x.dtype) or noise.dtype != x.dtype or noise.shape != x.shape:
        return reference("dropout_forward")(x, noise, p)
    from tinygrad_cnn.backend import get_array_module
    xp = get_array_module(x)
    shape = x.shape            # ascontiguousarray makes a 0-d array 1-d
    x, noise = xp.ascontiguousarray(x), xp.ascontiguousarray(noise)
    scale = 1.0 / (1.0 - p) if p < 1.0 else 0.0
    out = xp.empty_like(x)
    scaled_mask = xp.empty_like(x)
    SOURCE.launch("dropout_forward", x.dtype, x.size, (
        x, noise, out, scaled_mask, i64(x.size), real(p, "float64"), real(scale, x.dtype)))
    return out.reshape(shape), scaled_mask.reshape(shape)


KERNELS = {"dropout_forward": dropout_forward}
