"""2-D convolution as im2col + one matrix product, and the im2col/col2im pair itself.

Shapes (PyTorch's conventions)::

    input  x: (N, C_in, H, W)             weight w: (C_out, C_in / groups, kh, kw)
    bias   b: (C_out,)                    output y: (N, C_out, OH, OW)
    OH = floor((H + 2*padding - dilation*(kh - 1) - 1) / stride) + 1      (same for OW)

The column matrix (see ``docs/ops/conv.md`` for the picture) has one row per
(input channel, kernel row, kernel column) and one column per (image, output
pixel)::

    cols: (C_in*kh*kw, N*OH*OW)
    cols[(c*kh + i)*kw + j, n*OH*OW + oh*OW + ow] = x_padded[n, c, oh*sh + i*dh, ow*sw + j*dw]

so the whole batch is ONE row-major GEMM ``w.reshape(C_out, C_in*kh*kw) @ cols``
(per group: the rows of group g are a contiguous block). Gradients, with
``G = dL/dy`` laid out the same way as ``(C_out, N*OH*OW)``::

    dL/dcols = W^T G        ->  dL/dx = col2im(W^T G)      (col2im is the adjoint of im2col)
    dL/dW    = G cols^T     (cols recomputed from x: a column buffer is 9x the input for 3x3)
    dL/db    = G summed over its columns

The backward is written with Tensor ops and the :class:`Im2col`/:class:`Col2im`
Functions, which are each other's backward, so ``create_graph=True`` gives
second derivatives of convolution.

The hot loops are the kernels ``"im2col"`` and ``"col2im"`` chosen by
:mod:`tinygrad_cnn.backend`; the NumPy references below define their contracts
and the Numba versions live in ``tinygrad_cnn/kernels/cpu/conv.py``.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, replace

import numpy as np

from ... import backend
from ...autograd import Function, is_grad_enabled
from ...backend import get_array_module
from ...tensor import Tensor, pad as _pad

__all__ = ["conv2d", "im2col", "col2im", "unfold", "fold"]


# ---------------------------------------------------------------------------
# NumPy references (the kernel contracts)
# ---------------------------------------------------------------------------

def _window_slices(offset_h, offset_w, stride_h, stride_w, out_h, out_w):
    """Slices of the padded input read by one kernel offset, for every output pixel."""
    return (slice(offset_h, offset_h + stride_h * (out_h - 1) + 1, stride_h),
            slice(offset_w, offset_w + stride_w * (out_w - 1) + 1, stride_w))


@backend.register_reference("im2col")
def _im2col_reference(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                      out_h, out_w):
    """Unfold every receptive field of ``x`` into a column.

    x: (N, C, H, W) -> cols: (C*kernel_h*kernel_w, N*out_h*out_w), a new C-contiguous array
    with ``cols[(c*kh + i)*kw + j, n*out_h*out_w + oh*out_w + ow]
    = x_padded[n, c, oh*stride_h + i*dil_h, ow*stride_w + j*dil_w]``
    where ``x_padded`` has ``pad_h`` zero rows above and below, ``pad_w`` zero columns
    left and right.
    """
    xp = get_array_module(x)
    n_batch, channels = x.shape[:2]
    x_padded = xp.pad(x, ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)))
    cols = xp.empty((channels, kernel_h, kernel_w, n_batch, out_h, out_w), dtype=x.dtype)
    for i in range(kernel_h):
        for j in range(kernel_w):
            rows, columns = _window_slices(i * dil_h, j * dil_w, stride_h, stride_w, out_h, out_w)
            # (N, C, OH, OW) values seen by kernel tap (i, j), stored channel-first.
            cols[:, i, j] = x_padded[:, :, rows, columns].transpose(1, 0, 2, 3)
    return cols.reshape(channels * kernel_h * kernel_w, n_batch * out_h * out_w)


@backend.register_reference("col2im")
def _col2im_reference(cols, n_batch, channels, height, width, kernel_h, kernel_w, stride_h,
                      stride_w, pad_h, pad_w, dil_h, dil_w, out_h, out_w):
    """Fold columns back into an image, summing where receptive fields overlap.

    cols: (C*kernel_h*kernel_w, N*out_h*out_w) in the layout of the im2col reference
    -> x: (N, C, height, width). This is the adjoint (transpose) of im2col:
    ``<im2col(x), cols> == <x, col2im(cols)>``; padding positions are dropped.
    """
    xp = get_array_module(cols)
    cols = cols.reshape(channels, kernel_h, kernel_w, n_batch, out_h, out_w)
    x_padded = xp.zeros((n_batch, channels, height + 2 * pad_h, width + 2 * pad_w),
                        dtype=cols.dtype)
    for i in range(kernel_h):
        for j in range(kernel_w):
            rows, columns = _window_slices(i * dil_h, j * dil_w, stride_h, stride_w, out_h, out_w)
            # With stride >= 1 a single tap never hits one pixel twice, so += is safe here.
            x_padded[:, :, rows, columns] += cols[:, i, j].transpose(1, 0, 2, 3)
    return x_padded[:, :, pad_h:pad_h + height, pad_w:pad_w + width].copy()


# ---------------------------------------------------------------------------
# Argument handling
# ---------------------------------------------------------------------------

def _pair(value, op, name, minimum):
    """An int or a pair of ints -> (a, b), each >= ``minimum``."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        pair = (int(value), int(value))
    else:
        try:
            pair = tuple(value)
        except TypeError:
            raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}") \
                from None
        if len(pair) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                     for v in pair):
            raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
        pair = (int(pair[0]), int(pair[1]))
    if min(pair) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return pair


def conv2d_output_size(size, kernel_size, stride=1, padding=0, dilation=1):
    """(OH, OW) of a convolution (or im2col) of an input with spatial ``size`` (H, W)."""
    size = _pair(size, "conv2d_output_size", "size", 0)
    kernel = _pair(kernel_size, "conv2d_output_size", "kernel_size", 1)
    stride = _pair(stride, "conv2d_output_size", "stride", 1)
    padding = _pair(padding, "conv2d_output_size", "padding", 0)
    dilation = _pair(dilation, "conv2d_output_size", "dilation", 1)
    return tuple((s + 2 * p - d * (k - 1) - 1) // st + 1
                 for s, k, st, p, d in zip(size, kernel, stride, padding, dilation))


@dataclass(frozen=True)
class _Geometry:
    """Everything the kernels need to map an (N, C, H, W) image to its column matrix."""

    n_batch: int
    channels: int
    height: int
    width: int
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    out: tuple

    @classmethod
    def build(cls, op, input_shape, kernel_size, stride, padding, dilation):
        n_batch, channels, height, width = (int(s) for s in input_shape)
        kernel = _pair(kernel_size, op, "kernel_size", 1)
        stride = _pair(stride, op, "stride", 1)
        padding = _pair(padding, op, "padding", 0)
        dilation = _pair(dilation, op, "dilation", 1)
        out = tuple((s + 2 * p - d * (k - 1) - 1) // st + 1 for s, k, st, p, d in
                    zip((height, width), kernel, stride, padding, dilation))
        if min(out) <= 0:
            raise ValueError(
                f"{op}: output size {out} is not positive: input spatial size {(height, width)} "
                f"with padding {padding} is smaller than the dilated kernel "
                f"{tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel))} "
                f"(kernel_size {kernel}, dilation {dilation})")
        return cls(n_batch, channels, height, width, kernel, stride, padding, dilation, out)

    @property
    def rows(self):
        return self.channels * self.kernel[0] * self.kernel[1]

    @property
    def columns(self):
        return self.n_batch * self.out[0] * self.out[1]

    @property
    def input_shape(self):
        return (self.n_batch, self.channels, self.height, self.width)

    def kernel_args(self):
        """The trailing arguments shared by the im2col and col2im kernels."""
        return (self.kernel[0], self.kernel[1], self.stride[0], self.stride[1], self.padding[0],
                self.padding[1], self.dilation[0], self.dilation[1], self.out[0], self.out[1])


def _run_im2col(x, geometry):
    xp = get_array_module(x)
    return backend.kernel("im2col", xp)(xp.ascontiguousarray(x), *geometry.kernel_args())


def _run_col2im(cols, geometry):
    xp = get_array_module(cols)
    return backend.kernel("col2im", xp)(xp.ascontiguousarray(cols), geometry.n_batch,
                                        geometry.channels, geometry.height, geometry.width,
                                        *geometry.kernel_args())


# ---------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------

class Im2col(Function):
    """cols = im2col(x): (N, C, H, W) -> (C*kh*kw, N*OH*OW), the GEMM layout.

    Linear, so ``dx = im2col^T(g) = col2im(g)``: every column entry came from one
    pixel (or from padding, which has no gradient) and sends its gradient back there.
    """

    def forward(self, x, *, geometry):
        self.geometry = geometry
        return _run_im2col(x, geometry)

    def backward(self, grad_cols):
        return Col2im.apply(grad_cols, geometry=self.geometry)


class Col2im(Function):
    """x = col2im(cols): (C*kh*kw, N*OH*OW) -> (N, C, H, W), summing overlaps.

    The adjoint of im2col, so its backward is im2col: ``dcols = im2col(g)``.
    """

    def forward(self, cols, *, geometry):
        expected = (geometry.rows, geometry.columns)
        if tuple(cols.shape) != expected:
            raise ValueError(f"col2im: columns of shape {tuple(cols.shape)} do not match the "
                             f"geometry, expected {expected}")
        self.geometry = geometry
        return _run_col2im(cols, geometry)

    def backward(self, grad_x):
        return Im2col.apply(grad_x, geometry=self.geometry)


class Conv2d(Function):
    """y = conv2d(x, w, b). Forward: one im2col and one GEMM per group.

    ``y[n, o] = sum_{c,i,j} w[o, c, i, j] x_pad[n, c, oh*s + i*d, ow*s + j*d] + b[o]``
    i.e. ``Y = W cols + b`` with Y: (C_out, N*OH*OW). Backward (``G = dL/dY``):
    ``dx = col2im(W^T G)``, ``dW = G cols^T``, ``db = G 1``. Only x and w are
    saved; cols is rebuilt in backward, trading one im2col for 9x less memory.

    How the fast path computes the same sums (see docs/ops/conv.md, "Speed"):

    * The batch is processed in slices of images (``backend.chunk_bytes``): the
      column matrix of a slice is a few MiB, so it is still in the cache when the
      GEMM reads it, and its buffer is recycled from slice to slice.
    * Unit stride uses *wide* columns (:func:`_im2col_wide_reference`): windows on
      the padded-width grid, so every row of the column matrix is one contiguous run
      and building it is a plain copy; the few columns that straddle the right edge
      are computed and dropped.
    * Unit stride also gets ``dx`` as a convolution of ``G`` with the flipped,
      transposed kernel (``dx = corr(pad(G), rot180(W)^T)``), a gather plus a GEMM
      instead of a GEMM plus the scatter-add of col2im.
    * ...and ``dW`` from the same columns of ``G``: ``Gcols @ x^T`` on the grid, with
      the taps rotated back, so the backward gathers one column matrix, not two.
    * With ``create_graph=True`` the backward is built from differentiable Tensor
      operations and the :class:`Im2col`/:class:`Col2im` pair instead.
    """

    def forward(self, x, weight, bias, *, geometry, groups):
        xp = get_array_module(x)
        self.geometry, self.groups = geometry, groups
        self.save_for_backward(x, weight)
        n_batch, c_out = x.shape[0], weight.shape[0]
        weight_2d = weight.reshape(c_out, -1)
        out = xp.empty((n_batch, c_out) + geometry.out, dtype=x.dtype)

        def run_slice(bounds):
            start, stop = bounds
            products = _conv_products(x[start:stop], weight_2d, groups, geometry)
            if bias is None:
                out[start:stop] = products
            else:
                xp.add(products, bias.reshape(1, c_out, 1, 1), out=out[start:stop])

        backend.map_slices(run_slice, _image_chunks(n_batch, _column_bytes(geometry, x.dtype), xp),
                           xp)
        return out

    def backward(self, grad_output):
        if is_grad_enabled():
            # create_graph=True: build the gradients from differentiable pieces.
            return self._differentiable_backward(grad_output)
        return self._fast_backward(grad_output)

    def _differentiable_backward(self, grad_output):
        x, weight = self.saved_tensors
        geometry, groups = self.geometry, self.groups
        n_batch, c_out = grad_output.shape[:2]
        plane = geometry.out[0] * geometry.out[1]
        # G in the GEMM layout: (groups, C_out/groups, N*L); one copy of the output size.
        lead = (groups,) if groups > 1 else ()
        grad_y = (grad_output.reshape(n_batch, c_out, plane).permute(1, 0, 2)
                  .reshape(lead + (c_out // groups, n_batch * plane)))
        w = weight.reshape(lead + (c_out // groups, -1))
        grad_x = grad_w = grad_b = None
        if self.needs_input_grad[0]:
            grad_cols = (w.transpose(-1, -2) @ grad_y).reshape(geometry.rows, geometry.columns)
            grad_x = Col2im.apply(grad_cols, geometry=geometry)
            del grad_cols
        if self.needs_input_grad[1]:
            cols = Im2col.apply(x, geometry=geometry).reshape(lead + (geometry.rows // groups, -1))
            grad_w = (grad_y @ cols.transpose(-1, -2)).reshape(weight.shape)
        if self.needs_input_grad[2]:
            grad_b = grad_y.sum(-1).reshape(c_out)
        return grad_x, grad_w, grad_b

    def _fast_backward(self, grad_output):
        """The same formulas on raw arrays, slice by slice; dW sums over the slices.

        Unit stride gathers the columns of ``G`` once and uses them twice: for
        ``dx`` (a convolution with the flipped kernel) and for ``dW``, which is the
        correlation of those columns with x (:func:`_weight_products_of_grad_columns`).
        So the backward builds one column matrix, not two."""
        x_tensor, weight_tensor = self.saved_tensors
        x, weight, g = x_tensor.array, weight_tensor.array, grad_output.array
        xp = get_array_module(x)
        geometry, groups = self.geometry, self.groups
        c_out = g.shape[1]
        need_x, need_w, need_b = self.needs_input_grad
        grad_x = grad_w = grad_b = None
        # Without dx (the first layer) the columns of x are the cheaper gather for dW.
        transposed = _transposed_geometry(geometry, c_out) if need_x else None
        if need_x:
            grad_x = xp.empty(x.shape, dtype=x.dtype)
            if transposed is not None:
                weight_t = _flipped_transposed_weight(weight, groups)
        per_image = _column_bytes(transposed or geometry, x.dtype)

        def run_slice(bounds):
            start, stop = bounds
            g_slice = g[start:stop]
            if transposed is not None:
                grad_cols, grid_width = _columns(g_slice, transposed)
                grad_x[start:stop] = _grid_products(weight_t, grad_cols, groups, transposed,
                                                    grid_width)
                if need_w:
                    return _weight_products_of_grad_columns(x[start:stop], grad_cols, groups,
                                                            transposed, grid_width)
                return None
            if need_x:
                grad_x[start:stop] = _col2im_of_products(g_slice, weight, groups, geometry)
            if need_w:
                return _weight_products(x[start:stop], g_slice, groups, geometry)
            return None

        partial_w = backend.map_slices(
            run_slice, _image_chunks(geometry.n_batch, per_image, xp), xp)
        if need_w:
            # Summed in slice order whatever thread computed them: deterministic.
            grad_w = partial_w[0]
            for part in partial_w[1:]:
                grad_w += part
            grad_w = _weight_from_products(grad_w, weight.shape, transposed is not None)
        if need_b:
            grad_b = g.sum(axis=(0, 2, 3))
        # _wrap keeps the arrays where they are (no copy, same device).
        return tuple(None if array is None else Tensor._wrap(array)
                     for array in (grad_x, grad_w, grad_b))


# ---------------------------------------------------------------------------
# Raw-array pieces of the fast path
# ---------------------------------------------------------------------------

def _unit_stride(geometry):
    return geometry.stride == (1, 1)


def _wide_width(geometry):
    """Row length Wp of the padded-width grid used by the wide columns."""
    return geometry.width + 2 * geometry.padding[1]


def _column_bytes(geometry, dtype):
    """Bytes of column matrix per image, for sizing the slices."""
    width = _wide_width(geometry) if _unit_stride(geometry) else geometry.out[1]
    return geometry.rows * geometry.out[0] * width * np.dtype(dtype).itemsize


def _image_chunks(n_batch, per_image_bytes, xp):
    """(start, stop) slices covering the batch, each with at most about ``chunk_bytes`` of
    columns, and (when the batch allows) a multiple of the number of CPU workers of them
    in nearly equal sizes, so that no worker waits for a long last slice."""
    budget = backend.chunk_bytes(xp)
    if budget is None:
        return [(0, n_batch)]
    workers = backend.slice_workers()
    count = -(-n_batch * max(per_image_bytes, 1) // budget)          # ceil
    count = min(n_batch, -(-max(count, workers) // workers) * workers)
    size = -(-n_batch // count)
    return [(start, min(start + size, n_batch)) for start in range(0, n_batch, size)]


def _columns(x, geometry):
    """Column matrix of a slice of images and the row length of its output grid."""
    xp = get_array_module(x)
    size = x.shape[0]
    if _unit_stride(geometry):
        cols = backend.kernel("im2col_wide", xp)(
            xp.ascontiguousarray(x), geometry.kernel[0], geometry.kernel[1], geometry.padding[0],
            geometry.padding[1], geometry.dilation[0], geometry.dilation[1])
        return cols, _wide_width(geometry)
    return _run_im2col(x, replace(geometry, n_batch=size)), geometry.out[1]


def _conv_products(x, weight_2d, groups, geometry):
    """conv of a slice x: (B, C, H, W) with weight_2d: (C_out, C/groups*kh*kw), no bias.

    Returns a (B, C_out, OH, OW) view of the GEMM result."""
    cols, grid_width = _columns(x, geometry)
    return _grid_products(weight_2d, cols, groups, geometry, grid_width)


def _grid_products(weight_2d, cols, groups, geometry, grid_width):
    """``weight_2d @ cols`` as a (B, C_out, OH, OW) view, dropping the straddling columns."""
    c_out = weight_2d.shape[0]
    products = _group_matmul(weight_2d, cols, groups)              # (C_out, B*OH*grid_width)
    products = products.reshape(c_out, -1, geometry.out[0], grid_width)
    return products[..., :geometry.out[1]].transpose(1, 0, 2, 3)


def _on_grid_transposed(a, grid_width):
    """(B, C, R, W) -> (B*R*grid_width, C): pixels as rows on a grid of ``grid_width``
    columns (zero beyond W), channels last, so that a column matrix times it is one GEMM
    whose operands are both read along their rows."""
    xp = get_array_module(a)
    size, channels, rows, width = a.shape
    out = xp.empty((size, rows, grid_width, channels), dtype=a.dtype)
    out[:, :, width:] = 0
    out[:, :, :width] = a.transpose(0, 2, 3, 1)
    return out.reshape(-1, channels)


def _weight_products(x, g, groups, geometry):
    """dW of a slice from the columns of x: ``cols G^T``, (groups, C/g*kh*kw, C_out/g).

    The edge columns of the wide grid get zero gradient, so they add nothing."""
    xp = get_array_module(x)
    c_out = g.shape[1]
    cols, grid_width = _columns(x, geometry)
    grad_y = _on_grid_transposed(g, grid_width)                    # (B*OH*grid, C_out)
    grad_y = grad_y.reshape(-1, groups, c_out // groups).transpose(1, 0, 2)
    return xp.matmul(cols.reshape(groups, geometry.rows // groups, -1), grad_y)


def _weight_products_of_grad_columns(x, grad_cols, groups, transposed, grid_width):
    """dW of a slice from the columns of G already built for dx.

    With ``Gcols[(o, i', j'), (h, w)] = G_pad[o, h + i'*d, w + j'*d]`` (the transposed
    geometry) and the forward ``dW[o, c, i, j] = sum_(h,w) G[o, h - i*d + p, w - j*d + p]
    x[c, h, w]``, tap ``(i', j') = (kh-1-i, kw-1-j)`` reads exactly that G value, so
    ``dW`` (flipped, transposed) ``= Gcols x^T``: (groups, C_out/g*kh*kw, C/g)."""
    xp = get_array_module(x)
    channels = x.shape[1]
    pixels = _on_grid_transposed(x, grid_width)                    # (B*H*grid, C)
    pixels = pixels.reshape(-1, groups, channels // groups).transpose(1, 0, 2)
    return xp.matmul(grad_cols.reshape(groups, transposed.rows // groups, -1), pixels)


def _weight_from_products(products, weight_shape, from_grad_columns):
    """The summed slice products -> dW of ``weight_shape`` (C_out, C/g, kh, kw)."""
    c_out, c_per_group, kh, kw = weight_shape
    groups = products.shape[0]
    if from_grad_columns:
        # (groups, (o, i', j'), c) with (i', j') the flipped tap.
        products = products.reshape(groups, c_out // groups, kh, kw, c_per_group)
        products = products[:, :, ::-1, ::-1].transpose(0, 1, 4, 2, 3)
    else:
        # (groups, (c, i, j), o).
        products = products.reshape(groups, c_per_group, kh, kw, c_out // groups)
        products = products.transpose(0, 4, 1, 2, 3)
    xp = get_array_module(products)
    return xp.ascontiguousarray(products).reshape(weight_shape)


def _col2im_of_products(g, weight, groups, geometry):
    """dx of a slice as col2im(W^T G) (any stride)."""
    xp = get_array_module(g)
    size, c_out = g.shape[:2]
    chunk = replace(geometry, n_batch=size)
    grad_y = xp.ascontiguousarray(g.transpose(1, 0, 2, 3)).reshape(groups, c_out // groups, -1)
    w = weight.reshape(groups, c_out // groups, -1)
    grad_cols = xp.matmul(w.transpose(0, 2, 1), grad_y).reshape(geometry.rows, -1)
    return _run_col2im(grad_cols, chunk)


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
    return _Geometry(geometry.n_batch, c_out, geometry.out[0], geometry.out[1], geometry.kernel,
                     (1, 1), pads, geometry.dilation, (geometry.height, geometry.width))


def _flipped_transposed_weight(weight, groups):
    """(C_out, C/g, kh, kw) -> the (C, C_out/g*kh*kw) matrix of rot180(W)^T, per group."""
    xp = get_array_module(weight)
    c_out, c_per_group, kh, kw = weight.shape
    w = weight.reshape(groups, c_out // groups, c_per_group, kh, kw)[..., ::-1, ::-1]
    w = w.transpose(0, 2, 1, 3, 4)                  # (groups, C/g, C_out/g, kh, kw)
    return xp.ascontiguousarray(w).reshape(groups * c_per_group, (c_out // groups) * kh * kw)


@backend.register_reference("im2col_wide")
def _im2col_wide_reference(x, kernel_h, kernel_w, pad_h, pad_w, dil_h, dil_w):
    """Columns of a unit-stride convolution on the padded-width grid.

    x: (B, C, H, W) -> cols: (C*kernel_h*kernel_w, B*OH*Wp) with Wp = W + 2*pad_w,
    OH = H + 2*pad_h - dil_h*(kernel_h - 1), and
    ``cols[(c*kh + i)*kw + j, b*OH*Wp + r] = x_pad[b, c].flat[i*dil_h*Wp + j*dil_w + r]``.
    Column ``r = oh*Wp + ow`` is the window at (oh, ow) when ``ow < OW``; the last
    ``dil_w*(kernel_w - 1)`` columns of each grid row straddle the right edge and are
    dropped by the caller. Each matrix row is then ONE contiguous run of the padded
    plane, so the "im2col" is a strided copy. x_pad gets one extra zero row at the
    bottom so that the straddling reads of the last row stay inside its plane.
    """
    xp = get_array_module(x)
    n_batch, channels, height, width = x.shape
    padded_h, padded_w = height + 2 * pad_h, width + 2 * pad_w
    out_h = padded_h - dil_h * (kernel_h - 1)
    padded = xp.zeros((n_batch, channels, padded_h + 1, padded_w), dtype=x.dtype)
    padded[:, :, pad_h:pad_h + height, pad_w:pad_w + width] = x
    plane = (padded_h + 1) * padded_w
    item = x.dtype.itemsize
    run = out_h * padded_w
    view = xp.lib.stride_tricks.as_strided(
        padded, shape=(channels, kernel_h, kernel_w, n_batch, run),
        strides=(plane * item, dil_h * padded_w * item, dil_w * item, channels * plane * item,
                 item))
    return xp.ascontiguousarray(view).reshape(channels * kernel_h * kernel_w, n_batch * run)


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
# Public functions
# ---------------------------------------------------------------------------

def _check_tensor(op, name, value):
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(value).__name__}")
    if value.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must have a floating dtype, got {value.dtype}")


def _same_padding(op, kernel, dilation, stride):
    """((top, bottom), (left, right)) for padding='same' (extra row/column at the end)."""
    if stride != (1, 1):
        raise ValueError(f"{op}: padding='same' is not supported for strided convolutions "
                         f"(stride {stride})")
    totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
    return tuple((t // 2, t - t // 2) for t in totals)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    input: (N, C_in, H, W) or unbatched (C_in, H, W); weight: (C_out, C_in/groups, kh, kw);
    bias: (C_out,) or None; stride, padding, dilation: int or (h, w) pair, and padding may
    also be ``"valid"`` (0) or ``"same"`` (stride 1 only; an odd total padding puts the
    extra row/column at the bottom/right, as PyTorch). groups: C_in and C_out must both
    be divisible by it (``groups == C_in`` is a depthwise convolution).
    Returns (N, C_out, OH, OW) (or (C_out, OH, OW)).

    Backward (``G = dL/dy`` as a (C_out, N*OH*OW) matrix): ``dx = col2im(W^T G)``,
    ``dW = G im2col(x)^T``, ``db = sum of G over N, OH, OW``.
    """
    op = "conv2d"
    _check_tensor(op, "input", input)
    _check_tensor(op, "weight", weight)
    if weight.ndim != 4:
        raise ValueError(f"{op}: weight must be 4-D (C_out, C_in/groups, kh, kw), got shape "
                         f"{tuple(weight.shape)}")
    if input.ndim == 3:
        out = conv2d(input.unsqueeze(0), weight, bias, stride, padding, dilation, groups)
        return out.squeeze(0)
    if input.ndim != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W) or 3-D (C, H, W), got shape "
                         f"{tuple(input.shape)}")
    if not isinstance(groups, numbers.Integral) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    groups = int(groups)
    c_in, c_out = input.shape[1], weight.shape[0]
    if c_in % groups or c_out % groups:
        raise ValueError(f"{op}: groups ({groups}) must divide both the input channels ({c_in}, "
                         f"input shape {tuple(input.shape)}) and the output channels ({c_out}, "
                         f"weight shape {tuple(weight.shape)})")
    if weight.shape[1] * groups != c_in:
        raise ValueError(f"{op}: input has {c_in} channels (shape {tuple(input.shape)}) but weight "
                         f"of shape {tuple(weight.shape)} with groups={groups} expects "
                         f"{weight.shape[1] * groups} channels")
    if input.dtype != weight.dtype:
        raise TypeError(f"{op}: input dtype {input.dtype} and weight dtype {weight.dtype} differ")
    if bias is not None:
        _check_tensor(op, "bias", bias)
        if tuple(bias.shape) != (c_out,):
            raise ValueError(f"{op}: bias must have shape ({c_out},) to match weight of shape "
                             f"{tuple(weight.shape)}, got {tuple(bias.shape)}")
        if bias.dtype != input.dtype:
            raise TypeError(f"{op}: bias dtype {bias.dtype} differs from input dtype {input.dtype}")
    kernel = tuple(weight.shape[2:])
    if isinstance(padding, str):
        stride_pair = _pair(stride, op, "stride", 1)
        dilation_pair = _pair(dilation, op, "dilation", 1)
        if padding == "valid":
            padding = 0
        elif padding == "same":
            (top, bottom), (left, right) = _same_padding(op, kernel, dilation_pair, stride_pair)
            if (top, left) != (bottom, right):
                # The kernels pad symmetrically; the odd extra row/column is padded explicitly.
                input = _pad(input, (0, right - left, 0, bottom - top))
            padding = (top, left)
        else:
            raise ValueError(f"{op}: padding must be an int, a pair, 'valid' or 'same', "
                             f"got {padding!r}")
    geometry = _Geometry.build(op, input.shape, kernel, stride, padding, dilation)
    return Conv2d.apply(input, weight, bias, geometry=geometry, groups=groups)


def _unbatched(op, input, expected_batched_dims):
    if input.ndim == expected_batched_dims - 1:
        return input.unsqueeze(0), True
    if input.ndim != expected_batched_dims:
        raise ValueError(f"{op}: input must be {expected_batched_dims}-D (batched) or "
                         f"{expected_batched_dims - 1}-D (unbatched), got shape "
                         f"{tuple(input.shape)}")
    return input, False


def im2col(input, kernel_size, dilation=1, padding=0, stride=1):
    """Extract sliding windows: (N, C, H, W) -> (N, C*kh*kw, L) with L = OH*OW.

    Same as ``torch.nn.functional.unfold`` (an unbatched (C, H, W) input gives
    (C*kh*kw, L)). Row ``(c*kh + i)*kw + j`` holds channel c at kernel offset (i, j).
    The result is a view of the (C*kh*kw, N, L) GEMM layout the kernels produce.
    Backward: ``col2im`` of the gradient (im2col is linear and col2im is its adjoint).
    """
    op = "im2col"
    _check_tensor(op, "input", input)
    input, unbatched = _unbatched(op, input, 4)
    geometry = _Geometry.build(op, input.shape, kernel_size, stride, padding, dilation)
    cols = Im2col.apply(input, geometry=geometry)
    out = cols.reshape(geometry.rows, geometry.n_batch, -1).permute(1, 0, 2)
    return out.squeeze(0) if unbatched else out


def col2im(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """Sum sliding windows back into an image: (N, C*kh*kw, L) -> (N, C, H, W).

    Same as ``torch.nn.functional.fold``; ``output_size`` is (H, W). Overlapping
    windows add up, so ``col2im(im2col(x))`` is ``x`` times how many windows cover
    each pixel. It is the adjoint of im2col, whose backward it is, and vice versa.
    """
    op = "col2im"
    _check_tensor(op, "input", input)
    input, unbatched = _unbatched(op, input, 3)
    height, width = _pair(output_size, op, "output_size", 1)
    kernel = _pair(kernel_size, op, "kernel_size", 1)
    n_batch, rows, length = input.shape
    if rows % (kernel[0] * kernel[1]):
        raise ValueError(f"{op}: input of shape {tuple(input.shape)}: dimension 1 ({rows}) must be "
                         f"divisible by kh*kw = {kernel[0] * kernel[1]} (kernel_size {kernel})")
    channels = rows // (kernel[0] * kernel[1])
    geometry = _Geometry.build(op, (n_batch, channels, height, width), kernel, stride, padding,
                               dilation)
    if length != geometry.out[0] * geometry.out[1]:
        raise ValueError(f"{op}: input of shape {tuple(input.shape)} has {length} windows per image "
                         f"but output_size {(height, width)}, kernel_size {kernel}, stride "
                         f"{geometry.stride}, padding {geometry.padding} and dilation "
                         f"{geometry.dilation} give {geometry.out[0]}x{geometry.out[1]} = "
                         f"{geometry.out[0] * geometry.out[1]}")
    cols = input.permute(1, 0, 2).reshape(geometry.rows, geometry.columns)
    out = Col2im.apply(cols, geometry=geometry)
    return out.squeeze(0) if unbatched else out


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """PyTorch's name for :func:`im2col`: (N, C, H, W) -> (N, C*kh*kw, L)."""
    return im2col(input, kernel_size, dilation, padding, stride)


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """PyTorch's name for :func:`col2im`: (N, C*kh*kw, L) -> (N, C, H, W)."""
    return col2im(input, output_size, kernel_size, dilation, padding, stride)
