"""The fast convolution: the ``conv2d_forward`` and ``conv2d_backward`` kernels of the CPU (with
the Numba im2col kernels) and of the GPU (with the CUDA ones, on CuPy arrays).

They compute the same sums as the textbook references in ``tinygrad_cnn/nn/functional/conv.py``
(im2col + GEMM; ``dx = col2im(W^T G)``, ``dW = G cols^T``, ``db = sum G``), organised for speed
(see ``docs/ops/conv.md``, "Speed"):

* The batch is processed in slices of images (:func:`_workers.chunk_bytes`): the column matrix
  of a slice is a few MiB, so it is still in the cache when the GEMM reads it, and its buffer is
  recycled from slice to slice. On the CPU the slices run on one worker per core
  (:func:`_workers.map_slices`); the GPU takes the whole batch in one launch.
* Unit stride uses *wide* columns (kernel ``im2col_wide``): windows on the padded-width grid,
  so every row of the column matrix is one contiguous run and building it is a plain copy; the
  few columns that straddle the right edge are computed and dropped.
* Larger strides on the CPU do the same on the input's *phase planes* (kernel
  ``im2col_phases``: every ``s``-th padded pixel, in which each tap is a unit-stride window),
  and ``dx = col2im_phases(W^T G)`` adds the column gradients back run by run.
* Unit stride also gets ``dx`` as a convolution of ``G`` with the flipped, transposed kernel
  (``dx = corr(pad(G), rot180(W)^T)``), a gather plus a GEMM instead of a GEMM plus the
  scatter-add of col2im...
* ...and ``dW`` from the same columns of ``G``: ``Gcols @ x^T`` on the grid, with the taps
  rotated back, so the backward gathers one column matrix, not two.
* On the CPU, ungrouped 3x3 unit-stride layers (padding 0-2) skip the columns altogether and
  run as Winograd F(4x4, 3x3) tiles (:func:`winograd_applies`;
  ``tinygrad_cnn/nn/functional/winograd.py``): 36 GEMMs with 4x fewer multiplications, for
  all three of y, dx and dW.

Both kernels take raw arrays and the :class:`~tinygrad_cnn._arguments.WindowGeometry` of the
convolution; the array module of the inputs picks the im2col kernels they call.
"""
from __future__ import annotations

import os
from dataclasses import replace

import numpy as np

from .. import backend
from .._arguments import phase_grid_length
from ..backend import get_array_module
from ..nn.functional import winograd
from .cpu import _workers

__all__ = ["conv2d_forward", "conv2d_backward", "winograd_applies"]


def conv2d_forward(x, weight, bias, geometry, groups, residual=None, relu=False):
    """y = conv2d(x, weight) + bias (+ residual, then ReLU): (N, C_out, OH, OW), computed slice
    by slice. The epilogue runs on each slice's output while it is still in the cache."""
    xp = get_array_module(x)
    if winograd_applies(geometry, groups, xp):
        return _winograd_forward(x, weight, bias, geometry, residual, relu)
    n_batch, c_out = x.shape[0], weight.shape[0]
    weight_2d = weight.reshape(c_out, -1)
    out = xp.empty((n_batch, c_out) + geometry.out, dtype=x.dtype)

    def run_slice(bounds):
        start, stop = bounds
        y = _output_of_slice(x[start:stop], weight_2d, groups, geometry)
        dest = out[start:stop]
        if bias is None:
            dest[...] = y
        else:
            xp.add(y, bias.reshape(1, c_out, 1, 1), out=dest)
        if residual is not None:
            dest += residual[start:stop]
        if relu:
            xp.maximum(dest, 0, out=dest)

    _workers.map_slices(run_slice, _image_chunks(n_batch, _column_bytes(geometry, xp, x.dtype), xp),
                        xp)
    return out


def conv2d_backward(grad_output, x, weight, geometry, groups, needs_input_grad):
    """``(dx, dW, db)`` (None where not needed), slice by slice; dW sums over the slices.

    Unit stride gathers the columns of ``G`` once and uses them twice: for ``dx`` (a
    convolution with the flipped kernel) and for ``dW``, which is the correlation of those
    columns with x (:func:`_weight_grad_from_grad_columns`). So the backward builds one column
    matrix, not two."""
    g = grad_output
    xp = get_array_module(x)
    if winograd_applies(geometry, groups, xp):
        return _winograd_backward(g, x, weight, geometry, needs_input_grad)
    c_out = g.shape[1]
    need_x, need_w, need_b = needs_input_grad
    grad_x = grad_w = grad_b = None
    # Without dx (the first layer) the columns of x are the cheaper gather for dW.
    transposed = _transposed_geometry(geometry, c_out) if need_x else None
    if need_x:
        grad_x = xp.empty(x.shape, dtype=x.dtype)
        if transposed is not None:
            weight_t = _flipped_transposed_weight(weight, groups)
    per_image = _column_bytes(transposed or geometry, xp, x.dtype)

    def run_slice(bounds):
        start, stop = bounds
        g_slice = g[start:stop]
        if transposed is not None:
            grad_cols, grid_width = _columns_of_slice(g_slice, transposed)
            grad_x[start:stop] = _output_from_columns(weight_t, grad_cols, groups, transposed,
                                                      grid_width)
            if need_w:
                return _weight_grad_from_grad_columns(x[start:stop], grad_cols, groups, transposed,
                                                      grid_width)
            return None
        by_phases = need_x and _phase_columns(geometry, xp)
        if by_phases or need_w:
            grad_grid = _pixels_on_grid(g_slice, _grid_width(geometry, xp))
        if by_phases:
            grad_x[start:stop] = _input_grad_by_phase_col2im(grad_grid, weight, groups,
                                                             replace(geometry, n_batch=stop - start))
        elif need_x:
            grad_x[start:stop] = _input_grad_by_col2im(g_slice, weight, groups, geometry)
        if need_w:
            return _weight_grad_from_input_columns(x[start:stop], grad_grid, groups, geometry)
        return None

    partial_w = _workers.map_slices(run_slice, _image_chunks(geometry.n_batch, per_image, xp), xp)
    if need_w:
        grad_w = _sum_in_slice_order(partial_w)
        if grad_w is None:             # an empty batch: no slices, a zero gradient
            grad_w = xp.zeros(weight.shape, dtype=weight.dtype)
        else:
            grad_w = _weight_grad_in_weight_layout(grad_w, weight.shape, transposed is not None)
    if need_b:
        grad_b = g.sum(axis=(0, 2, 3))
    return grad_x, grad_w, grad_b


# ---------------------------------------------------------------------------
# Slicing
# ---------------------------------------------------------------------------

def _unit_stride(geometry):
    return geometry.stride == (1, 1)


def _phase_columns(geometry, xp):
    """Whether a strided convolution takes its wide columns from phase planes
    (``im2col_phases``). Only the CPU has those kernels; on the GPU the general im2col,
    one work item per column, is what runs."""
    return not _unit_stride(geometry) and xp is np


def _grid_width(geometry, xp):
    """Row length of the output grid of the column matrix: the phase-plane width GW
    (``WindowGeometry.grid``; ``W + 2*pw`` with unit stride) for wide columns, else OW.
    Asked for once per slice, so only the one axis is computed."""
    if _unit_stride(geometry) or _phase_columns(geometry, xp):
        return phase_grid_length(geometry.out[1], geometry.kernel[1], geometry.stride[1],
                                 geometry.dilation[1])
    return geometry.out[1]


def _column_bytes(geometry, xp, dtype):
    """Bytes of column matrix per image, for sizing the slices."""
    width = _grid_width(geometry, xp)
    return geometry.rows * geometry.out[0] * width * np.dtype(dtype).itemsize


def _sum_in_slice_order(partial):
    """The sum of the slices' partial results (None for no slices), added in slice order
    whatever thread computed them: deterministic. Adds into the first one."""
    if not partial:
        return None
    total = partial[0]
    for part in partial[1:]:
        total += part
    return total


def _image_chunks(n_batch, per_image_bytes, xp):
    """(start, stop) slices covering the batch, each with at most about ``chunk_bytes`` of
    columns, and (when the batch allows) a multiple of the number of CPU workers of them
    in nearly equal sizes, so that no worker waits for a long last slice."""
    if n_batch == 0:
        return []
    budget = _workers.chunk_bytes(xp)
    if budget is None:
        return [(0, n_batch)]
    workers = _workers.slice_workers()
    count = -(-n_batch * max(per_image_bytes, 1) // budget)          # ceil
    count = min(n_batch, -(-max(count, workers) // workers) * workers)
    size = -(-n_batch // count)
    return [(start, min(start + size, n_batch)) for start in range(0, n_batch, size)]


# ---------------------------------------------------------------------------
# Columns and the GEMMs on them
# ---------------------------------------------------------------------------

def _columns_of_slice(x, geometry):
    """Column matrix of a slice of images and the row length of its output grid."""
    xp = get_array_module(x)
    x = xp.ascontiguousarray(x)
    if _unit_stride(geometry):
        cols = backend.kernel("im2col_wide", xp)(
            x, geometry.kernel[0], geometry.kernel[1], geometry.padding[0], geometry.padding[1],
            geometry.dilation[0], geometry.dilation[1])
    else:
        name = "im2col_phases" if _phase_columns(geometry, xp) else "im2col"
        cols = backend.kernel(name, xp)(x, *geometry.kernel_args())
    return cols, _grid_width(geometry, xp)


def _output_of_slice(x, weight_2d, groups, geometry):
    """conv of a slice x: (B, C, H, W) with weight_2d: (C_out, C/groups*kh*kw), no bias.

    Returns a (B, C_out, OH, OW) view of the GEMM result."""
    cols, grid_width = _columns_of_slice(x, geometry)
    return _output_from_columns(weight_2d, cols, groups, geometry, grid_width)


def _output_from_columns(weight_2d, cols, groups, geometry, grid_width):
    """``weight_2d @ cols`` as a (B, C_out, OH, OW) view, dropping the straddling columns."""
    c_out = weight_2d.shape[0]
    y = _group_matmul(weight_2d, cols, groups)                       # (C_out, B*OH*grid_width)
    y = y.reshape(c_out, -1, geometry.out[0], grid_width)
    return y[..., :geometry.out[1]].transpose(1, 0, 2, 3)


def _pixels_on_grid(a, grid_width):
    """(B, C, R, W) -> (B*R*grid_width, C): pixels as rows on a grid of ``grid_width``
    columns (zero beyond W), channels last, so that a column matrix times it is one GEMM
    whose operands are both read along their rows."""
    xp = get_array_module(a)
    size, channels, rows, width = a.shape
    out = xp.empty((size, rows, grid_width, channels), dtype=a.dtype)
    out[:, :, width:] = 0
    out[:, :, :width] = a.transpose(0, 2, 3, 1)
    return out.reshape(-1, channels)


def _weight_grad_from_input_columns(x, grad_grid, groups, geometry):
    """A slice's part of dW from the columns of x: ``cols G^T``, (groups, C/g*kh*kw, C_out/g),
    with ``grad_grid`` G as :func:`_pixels_on_grid` lays it out on the columns' grid.

    The edge columns of the wide grid get zero gradient, so they add nothing."""
    xp = get_array_module(x)
    c_out = grad_grid.shape[1]
    cols, _ = _columns_of_slice(x, geometry)
    grad_y = grad_grid.reshape(-1, groups, c_out // groups).transpose(1, 0, 2)
    return xp.matmul(cols.reshape(groups, geometry.rows // groups, -1), grad_y)


def _weight_grad_from_grad_columns(x, grad_cols, groups, transposed, grid_width):
    """A slice's part of dW from the columns of G already built for dx.

    With ``Gcols[(o, i', j'), (h, w)] = G_pad[o, h + i'*d, w + j'*d]`` (the transposed
    geometry) and the forward ``dW[o, c, i, j] = sum_(h,w) G[o, h - i*d + p, w - j*d + p]
    x[c, h, w]``, tap ``(i', j') = (kh-1-i, kw-1-j)`` reads exactly that G value, so
    ``dW`` (flipped, transposed) ``= Gcols x^T``: (groups, C_out/g*kh*kw, C/g)."""
    xp = get_array_module(x)
    channels = x.shape[1]
    pixels = _pixels_on_grid(x, grid_width)                         # (B*H*grid, C)
    pixels = pixels.reshape(-1, groups, channels // groups).transpose(1, 0, 2)
    return xp.matmul(grad_cols.reshape(groups, transposed.rows // groups, -1), pixels)


def _weight_grad_in_weight_layout(partial_sum, weight_shape, from_grad_columns):
    """The summed per-slice parts of dW -> dW of ``weight_shape`` (C_out, C/g, kh, kw)."""
    c_out, c_per_group, kh, kw = weight_shape
    groups = partial_sum.shape[0]
    if from_grad_columns:
        # (groups, (o, i', j'), c) with (i', j') the flipped tap.
        grad = partial_sum.reshape(groups, c_out // groups, kh, kw, c_per_group)
        grad = grad[:, :, ::-1, ::-1].transpose(0, 1, 4, 2, 3)
    else:
        # (groups, (c, i, j), o).
        grad = partial_sum.reshape(groups, c_per_group, kh, kw, c_out // groups)
        grad = grad.transpose(0, 4, 1, 2, 3)
    xp = get_array_module(grad)
    return xp.ascontiguousarray(grad).reshape(weight_shape)


def _input_grad_by_col2im(g, weight, groups, geometry):
    """dx of a slice as col2im(W^T G) (any stride)."""
    xp = get_array_module(g)
    size, c_out = g.shape[:2]
    chunk = replace(geometry, n_batch=size)
    grad_y = xp.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(groups, c_out // groups, -1)
    w = weight.reshape(groups, c_out // groups, -1)
    grad_cols = xp.matmul(w.transpose(0, 2, 1), grad_y).reshape(geometry.rows, -1)
    return backend.kernel("col2im", xp)(grad_cols, chunk.n_batch, chunk.channels, chunk.height,
                                        chunk.width, *chunk.kernel_args())


def _input_grad_by_phase_col2im(grad_grid, weight, groups, geometry):
    """dx of a slice (``geometry.n_batch`` images) of a strided convolution as
    ``col2im_phases(W^T G)``: the gradient of the wide columns of its phase planes, added
    back run by run. ``grad_grid`` is G on the grid (:func:`_pixels_on_grid`), zero in the
    straddling columns, so their column gradients are zero and add nothing."""
    xp = get_array_module(grad_grid)
    c_out = grad_grid.shape[1]
    grad_y = grad_grid.reshape(-1, groups, c_out // groups).transpose(1, 2, 0)
    w = weight.reshape(groups, c_out // groups, -1)
    grad_cols = xp.matmul(w.transpose(0, 2, 1), grad_y).reshape(geometry.rows, -1)
    return backend.kernel("col2im_phases", xp)(grad_cols, geometry.n_batch, geometry.channels,
                                               geometry.height, geometry.width,
                                               *geometry.kernel_args())


def _transposed_geometry(geometry, c_out):
    """Geometry of dx = corr(pad(G), rot180(W)^T) for a unit-stride conv, or None.

    Padding G by ``d*(k-1) - p`` on each side makes the correlation's output exactly
    H x W; when the forward padding exceeds the dilated kernel (negative padding) the
    col2im route is used instead."""
    if not _unit_stride(geometry):
        return None
    pads = tuple(d * (k - 1) - p for k, d, p in
                 zip(geometry.kernel, geometry.dilation, geometry.padding))
    if min(pads) < 0:
        return None
    return type(geometry)(geometry.n_batch, c_out, geometry.out[0], geometry.out[1],
                          geometry.kernel, (1, 1), pads, geometry.dilation,
                          (geometry.height, geometry.width))


def _flipped_transposed_weight(weight, groups):
    """(C_out, C/g, kh, kw) -> the (C, C_out/g*kh*kw) matrix of rot180(W)^T, per group."""
    xp = get_array_module(weight)
    c_out, c_per_group, kh, kw = weight.shape
    w = weight.reshape(groups, c_out // groups, c_per_group, kh, kw)[..., ::-1, ::-1]
    w = w.transpose(0, 2, 1, 3, 4)                  # (groups, C/g, C_out/g, kh, kw)
    return xp.ascontiguousarray(w).reshape(groups * c_per_group, (c_out // groups) * kh * kw)


def _group_matmul(weight_2d, cols, groups):
    """(C_out, K) @ (K, M) with the block-diagonal structure of grouped convolution."""
    if groups == 1:
        return weight_2d @ cols
    c_out, k_per_group = weight_2d.shape
    xp = get_array_module(cols)
    w = weight_2d.reshape(groups, c_out // groups, k_per_group)
    out = xp.matmul(w, cols.reshape(groups, k_per_group, cols.shape[1]))
    return out.reshape(c_out, cols.shape[1])


# ---------------------------------------------------------------------------
# Winograd F(4x4, 3x3)
# ---------------------------------------------------------------------------

def winograd_applies(geometry, groups, xp):
    """Whether a convolution runs as Winograd tiles (``tinygrad_cnn/nn/functional/winograd.py``):
    on the CPU, for ungrouped 3x3 kernels with unit stride and dilation and padding 0-2 (so
    that ``dx``, a convolution with padding ``2 - p``, is one too). That is every convolution
    of the ResNets except the strided ones, and VGG-16's. The GPU keeps im2col. The
    environment variable ``TINYGRAD_CNN_WINOGRAD=0``, read at each call, turns it off (for
    im2col's smaller float32 rounding error, or to compare the two)."""
    return (xp is np and groups == 1 and geometry.kernel == (3, 3)
            and geometry.stride == (1, 1) and geometry.dilation == (1, 1)
            and all(0 <= p <= 2 for p in geometry.padding)
            and os.environ.get("TINYGRAD_CNN_WINOGRAD", "1") != "0")


def _winograd_chunks(x, c_out, out_size, min_tiles=1):
    """Batch slices whose tile matrices ``(36, max(C_in, C_out), T)`` are about
    ``chunk_bytes``, or larger where needed for at least ``min_tiles`` tiles per slice."""
    tiles = int(np.prod(winograd.tile_counts(*out_size)))
    per_image = (winograd.WINDOW * winograd.WINDOW * max(x.shape[1], c_out) * tiles
                 * x.dtype.itemsize)
    # Sized as if an image were smaller, so that a slice holds enough tiles.
    per_image = min(per_image, _workers.chunk_bytes(np) * tiles // min_tiles or 1)
    return _image_chunks(x.shape[0], per_image, np)


def _filter_tiles(weight):
    """winograd.filter_tiles on one BLAS thread (see :func:`_workers.single_thread_blas`)."""
    with _workers.single_thread_blas():
        return winograd.filter_tiles(weight)


def _winograd_slice(x, filter_tiles, padding, dest, bias=None, residual=None, relu=False):
    """One slice's convolution into ``dest``: input tiles, the 36 GEMMs, output tiles (and
    epilogue)."""
    size = dest.shape[2:]
    tiles = backend.kernel("winograd_input_tiles", np)(x, padding[0], padding[1], *size)
    products = np.matmul(filter_tiles, tiles)                     # (36, C_out, T)
    backend.kernel("winograd_output_tiles", np)(products, x.shape[0], *size, bias, residual,
                                                relu, out=dest)


def _winograd_forward(x, weight, bias, geometry, residual, relu):
    n_batch, c_out = x.shape[0], weight.shape[0]
    out = np.empty((n_batch, c_out) + geometry.out, dtype=x.dtype)
    filter_tiles = _filter_tiles(weight)

    def run_slice(bounds):
        start, stop = bounds
        _winograd_slice(x[start:stop], filter_tiles, geometry.padding, out[start:stop], bias,
                        None if residual is None else residual[start:stop], relu)

    _workers.map_slices(run_slice, _winograd_chunks(x, c_out, geometry.out), np)
    return out


# A slice's part of dW in the Winograd domain is (36, C_out, C_in), added to the others; with
# fewer tiles than this per slice, that sum and the skinny GEMMs cost more than they save
# (VGG-16's 512-channel layers: 49 tiles per image, 38 MB of partial sum per image).
WINOGRAD_MIN_TILES_FOR_DW = 256


def _winograd_backward(g, x, weight, geometry, needs_input_grad):
    """``dx`` as the Winograd convolution of G with the flipped, transposed filters (padding
    ``2 - p``); ``dW = G^T (sum over slices of dM V^T) G`` with ``dM`` the gradient tiles of
    G and ``V`` the input tiles of x; ``db`` the sum of G."""
    need_x, need_w, need_b = needs_input_grad
    c_out, c_in = weight.shape[:2]
    grad_x = grad_w = grad_b = None
    if need_x:
        flipped = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        transposed = _transposed_geometry(geometry, c_out)
    partial_bytes = winograd.WINDOW * winograd.WINDOW * c_in * c_out * x.dtype.itemsize
    if need_x and need_w and partial_bytes <= _workers.chunk_bytes(np):
        # Few channels (ResNet-20's up to 64): one pass over the slices, so that each slice of
        # G is read from memory once, for both of its transforms; the partial sums of dW are
        # no larger than a slice's tiles.
        grad_x = np.empty(x.shape, dtype=x.dtype)
        flipped_tiles = _filter_tiles(flipped)

        def run_slice(bounds):
            start, stop = bounds
            _winograd_slice(g[start:stop], flipped_tiles, transposed.padding, grad_x[start:stop])
            return _winograd_weight_grad_of_slice(g[start:stop], x[start:stop], geometry)

        partial = _workers.map_slices(run_slice, _winograd_chunks(x, c_out, geometry.out), np)
        grad_w = _weight_grad_from_partial_sums(partial, weight.shape, x.dtype)
    else:
        if need_x:
            grad_x = _winograd_forward(g, flipped, None, transposed, None, False)
        if need_w:
            grad_w = _winograd_weight_grad(g, x, geometry, weight.shape)
    if need_b:
        grad_b = g.sum(axis=(0, 2, 3))
    return grad_x, grad_w, grad_b


def _winograd_weight_grad_of_slice(g, x, geometry):
    """A slice's ``dM V^T``: (36, C_out, C_in), its part of dW in the Winograd domain."""
    x_tiles = backend.kernel("winograd_input_tiles", np)(
        x, geometry.padding[0], geometry.padding[1], *geometry.out)
    grad_tiles = backend.kernel("winograd_grad_tiles", np)(g, *geometry.out)
    return np.matmul(grad_tiles, x_tiles.transpose(0, 2, 1))


def _weight_grad_from_partial_sums(partial, weight_shape, dtype):
    total = _sum_in_slice_order(partial)
    if total is None:                  # an empty batch: no slices, a zero gradient
        return np.zeros(weight_shape, dtype=dtype)
    with _workers.single_thread_blas():
        return winograd.filter_tiles_adjoint(total)


def _winograd_weight_grad(g, x, geometry, weight_shape):
    """dW alone, slice by slice, with at least ``WINOGRAD_MIN_TILES_FOR_DW`` tiles per slice
    where the batch has them."""
    def run_slice(bounds):
        start, stop = bounds
        return _winograd_weight_grad_of_slice(g[start:stop], x[start:stop], geometry)

    chunks = _winograd_chunks(x, g.shape[1], geometry.out, WINOGRAD_MIN_TILES_FOR_DW)
    partial = _workers.map_slices(run_slice, chunks, np)
    return _weight_grad_from_partial_sums(partial, weight_shape, x.dtype)
