"""Up-sampling without learned weights: max unpooling and interpolation.

Shapes: ``input`` is (N, C, H, W) (or unbatched (C, H, W)); the output is (N, C, OH, OW).

* ``max_unpool2d`` puts every value back where ``max_pool2d(..., return_indices=True)``
  found it and zeros elsewhere: a scatter ``out.flat[indices[k]] = x[k]`` per (n, c)
  plane. Its gradient is the gather ``dx[k] = g.flat[indices[k]]``, whose own
  backward is the scatter again (so second derivatives work).
* ``interpolate`` (nearest or bilinear) is linear and *separable*: every output row
  is a fixed combination of input rows, and likewise for columns, so::

      out = A_h x A_w^T            A_h: (OH, H), A_w: (OW, W), x one (H, W) plane
      dx  = A_h^T g A_w            (the transpose of a linear map is its adjoint)

  A row of A has one 1 (nearest) or two weights ``1 - t, t`` (bilinear). The
  matrices are built once per call from PyTorch's source-coordinate rule (see
  :func:`interpolation_matrix`) and applied as two batched GEMMs: for the image
  sizes of this course (up to a few hundred pixels a side) a dense GEMM costs less
  than a gather-and-scatter with its index arithmetic, and its backward is the same
  Function with the transposed matrices.

Where the kernels live: nowhere else. Unpooling is an indexed scatter/gather and
interpolation two small GEMMs, written with the array module, so the same code runs on
NumPy (CPU) and CuPy (GPU).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from ... import backend
from ...autograd import Function
from ...backend import get_array_module
from ...tensor import Tensor
from ..._arguments import pair

__all__ = ["max_unpool2d", "interpolate", "upsample", "interpolation_matrix"]


def _check_input(op, input):
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: input must be a floating point tensor, got dtype {input.dtype}")


# ---------------------------------------------------------------------------
# Max unpooling: scatter by index, and its adjoint the gather
# ---------------------------------------------------------------------------

def _scatter(values, indices, out_size):
    """out[n, c].flat[indices[n, c, k]] = values[n, c, k]; zeros elsewhere."""
    xp = get_array_module(values)
    n, c = values.shape[:2]
    out = xp.zeros((n * c, out_size[0] * out_size[1]), dtype=values.dtype)
    planes = xp.arange(n * c)[:, None]
    out[planes, indices.reshape(n * c, -1)] = values.reshape(n * c, -1)
    return out.reshape(n, c, *out_size)


class _MaxUnpool(Function):
    """out = scatter(x, indices) into (N, C, OH, OW).  dx = gather(g, indices)."""

    def forward(self, x, *, indices, out_size):
        self.indices = indices
        return _scatter(x, indices, out_size)

    def backward(self, grad_output):
        return _GatherAt.apply(grad_output, indices=self.indices)


class _GatherAt(Function):
    """out[n, c, k] = g[n, c].flat[indices[n, c, k]].  Its adjoint: a scatter-add.

    The scatter-add is the ``max_pool2d_backward`` kernel (the same gather/scatter pair).
    """

    def forward(self, grad, *, indices):
        self.indices = indices
        self.size = tuple(grad.shape[2:])
        xp = get_array_module(grad)
        n, c = grad.shape[:2]
        flat = grad.reshape(n, c, -1)
        return xp.take_along_axis(flat, indices.reshape(n, c, -1), axis=2).reshape(indices.shape)

    def backward(self, grad_output):
        return _ScatterAdd.apply(grad_output, indices=self.indices, size=self.size)


class _ScatterAdd(Function):
    def forward(self, values, *, indices, size):
        self.indices = indices
        xp = get_array_module(values)
        return backend.kernel("max_pool2d_backward", xp)(values, indices, size)

    def backward(self, grad_output):
        return _GatherAt.apply(grad_output, indices=self.indices)


def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Partial inverse of ``max_pool2d``, as ``torch.nn.functional.max_unpool2d``.

    input: (N, C, H, W) or (C, H, W), the pooled values; indices: same shape, integer,
    the flat positions ``h * OW + w`` returned by ``max_pool2d(..., return_indices=True)``;
    kernel_size, stride (default kernel_size), padding: those of the pooling.
    output_size: (OH, OW) (or a longer shape whose last two entries are used); default
    ``OH = (H - 1)*stride - 2*padding + kernel_size``; an explicit size must lie strictly
    within ``stride`` of the default (pooling floors, so several sizes pool to H).
    Returns (N, C, OH, OW): each value at its index, zeros elsewhere.

    Backward: ``dx[k] = g.flat[indices[k]]`` (a gather).
    """
    op = "max_unpool2d"
    _check_input(op, input)
    if not isinstance(indices, Tensor) or indices.dtype.kind not in "iu":
        raise TypeError(f"{op}: indices must be an integer Tensor (from max_pool2d(..., "
                        f"return_indices=True)), got "
                        f"{indices.dtype if isinstance(indices, Tensor) else type(indices).__name__}")
    if input.ndim not in (3, 4):
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W) or 3-D (C, H, W), got shape "
                         f"{tuple(input.shape)}")
    if tuple(indices.shape) != tuple(input.shape):
        raise ValueError(f"{op}: indices of shape {tuple(indices.shape)} must have the shape of "
                         f"the input {tuple(input.shape)}")
    if input.ndim == 3:
        return max_unpool2d(input.unsqueeze(0), indices.unsqueeze(0), kernel_size, stride,
                            padding, output_size).squeeze(0)
    kernel = pair(op, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None else pair(op, "stride", stride, 1)
    padding = pair(op, "padding", padding, 0)
    height, width = input.shape[2:]
    default = ((height - 1) * stride[0] - 2 * padding[0] + kernel[0],
               (width - 1) * stride[1] - 2 * padding[1] + kernel[1])
    if output_size is None:
        out_size = default
    else:
        try:
            out_size = tuple(int(s) for s in tuple(output_size)[-2:])
        except TypeError:
            raise TypeError(f"{op}: output_size must be a sequence of ints, got "
                            f"{output_size!r}") from None
        if len(out_size) != 2:
            raise ValueError(f"{op}: output_size must end in (OH, OW), got {output_size!r}")
        for axis in range(2):
            low, high = default[axis] - stride[axis], default[axis] + stride[axis]
            if not low < out_size[axis] < high:
                raise ValueError(f"{op}: output_size {out_size} is invalid for input of shape "
                                 f"{tuple(input.shape)} with kernel_size {kernel}, stride "
                                 f"{stride}, padding {padding}: each size must lie strictly "
                                 f"between default - stride and default + stride "
                                 f"(default {default})")
    if min(out_size) < 1:
        raise ValueError(f"{op}: output size {out_size} is not positive (input shape "
                         f"{tuple(input.shape)}, kernel_size {kernel}, stride {stride}, "
                         f"padding {padding})")
    index_array = indices.array
    xp = get_array_module(index_array)
    plane = out_size[0] * out_size[1]
    if index_array.size:
        low, high = int(index_array.min()), int(index_array.max())
        if low < 0 or high >= plane:
            raise ValueError(f"{op}: indices must lie in [0, {plane}) for output size {out_size}, "
                             f"got values from {low} to {high}")
    return _MaxUnpool.apply(input, indices=xp.asarray(index_array, dtype=np.int64),
                            out_size=out_size)


# ---------------------------------------------------------------------------
# Interpolation as two matrix products
# ---------------------------------------------------------------------------

def interpolation_matrix(in_size, out_size, mode, align_corners=False, scale=None):
    """The (out_size, in_size) float64 NumPy matrix of 1-D interpolation, PyTorch's rule.

    ``scale`` is the source step per output pixel: ``in_size / out_size`` unless the
    caller gave a scale factor (then ``1 / scale_factor``, as PyTorch).

    * ``"nearest"``: ``src = min(floor(dst * scale), in - 1)``; weight 1.
    * ``"bilinear"`` (one axis of it), ``align_corners=False``: pixel centres line up,
      ``src = max((dst + 0.5) * scale - 0.5, 0)``; with ``align_corners=True`` the corner
      pixels do, ``src = dst * (in - 1) / (out - 1)``. Then ``i0 = floor(src)``,
      ``i1 = min(i0 + 1, in - 1)``, weights ``1 - t`` and ``t`` with ``t = src - i0``.
    """
    if scale is None:
        scale = in_size / out_size
    dst = np.arange(out_size, dtype=np.float64)
    matrix = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    if mode == "nearest":
        src = np.minimum(np.floor(dst * scale).astype(np.int64), in_size - 1)
        matrix[rows, src] = 1.0
        return matrix
    if align_corners:
        step = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
        src = dst * step
    else:
        src = np.maximum((dst + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    t = src - i0
    np.add.at(matrix, (rows, i0), 1.0 - t)
    np.add.at(matrix, (rows, i1), t)
    return matrix


class _Separable(Function):
    """out = A_h x A_w^T on every (H, W) plane.  dx = A_h^T g A_w: the same map, transposed.

    x: (N, C, H, W); rows: A_h (OH, H); cols: A_w (OW, W) (constants) -> (N, C, OH, OW).
    """

    def forward(self, x, *, rows, cols):
        self.rows, self.cols = rows, cols
        xp = get_array_module(x)
        return xp.matmul(xp.matmul(rows, x), cols.T)

    def backward(self, grad_output):
        return _Separable.apply(grad_output, rows=self.rows.T, cols=self.cols.T)


_MODES = ("nearest", "bilinear")


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize images, as ``torch.nn.functional.interpolate`` for 4-D input.

    input: (N, C, H, W); size: OH or (OH, OW); or scale_factor: a float or a pair
    (output ``floor(H * scale_factor)``); exactly one of the two. mode: ``"nearest"``
    or ``"bilinear"``. align_corners (bilinear only; default False): map the corner
    pixel centres onto each other instead of the image edges. recompute_scale_factor:
    True uses ``H / OH`` as the source step instead of ``1 / scale_factor``.
    Returns (N, C, OH, OW).

    Backward: ``dx = A_h^T g A_w`` with the interpolation matrices of
    :func:`interpolation_matrix`.
    """
    op = "interpolate"
    _check_input(op, input)
    if mode not in _MODES:
        raise ValueError(f"{op}: mode must be one of {_MODES}, got {mode!r}")
    if antialias:
        raise ValueError(f"{op}: antialias=True is not supported")
    if input.ndim != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W) for mode {mode!r}, got shape "
                         f"{tuple(input.shape)}")
    if mode == "nearest" and align_corners is not None:
        raise ValueError(f"{op}: align_corners can only be set with mode 'bilinear', got mode "
                         f"{mode!r}")
    align_corners = bool(align_corners)
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{op}: give exactly one of size and scale_factor, got size={size!r} "
                         f"and scale_factor={scale_factor!r}")
    in_size = tuple(int(s) for s in input.shape[2:])
    if size is not None:
        out_size = pair(op, "size", size, 1)
        scales = (None, None)
    else:
        if isinstance(scale_factor, numbers.Real) and not isinstance(scale_factor, bool):
            factors = (float(scale_factor),) * 2
        elif isinstance(scale_factor, (tuple, list)) and len(scale_factor) == 2:
            factors = tuple(float(f) for f in scale_factor)
        else:
            raise TypeError(f"{op}: scale_factor must be a number or a pair, got {scale_factor!r}")
        if not all(math.isfinite(f) and f > 0 for f in factors):
            raise ValueError(f"{op}: scale_factor must be positive and finite, got {scale_factor!r}")
        out_size = tuple(int(math.floor(s * f)) for s, f in zip(in_size, factors))
        if min(out_size) < 1:
            raise ValueError(f"{op}: input of spatial size {in_size} with scale_factor "
                             f"{scale_factor!r} gives output size {out_size}")
        scales = (None, None) if recompute_scale_factor else tuple(1.0 / f for f in factors)
    xp = get_array_module(input.array)
    rows, cols = (xp.asarray(interpolation_matrix(i, o, mode, align_corners, s), dtype=input.dtype)
                  for i, o, s in zip(in_size, out_size, scales))
    return _Separable.apply(input, rows=rows, cols=cols)


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """The older name of :func:`interpolate` (``torch.nn.functional.upsample``)."""
    return interpolate(input, size, scale_factor, mode, align_corners)
