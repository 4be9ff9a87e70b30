"""im2col and col2im on the GPU; the convolution's GEMM itself is CuPy's matmul (cuBLAS).

Column layout (the same as the NumPy reference in ``tinygrad_cnn/nn/functional/conv.py`` and
the Numba kernels)::

    cols[(c * kh + i) * kw + j, n * L + oh * OW + ow] = x_padded[n, c, oh*sh + i*dh, ow*sw + j*dw]

with ``L = OH * OW``. im2col runs one work item per (channel, column), which writes that
column's ``kh * kw`` rows (consecutive threads write consecutive columns, so stores coalesce). col2im is the adjoint: one thread per input pixel
gathers every column entry that reads it, in the order of kernel offsets, so there are no
atomics and the sum order is that of the CPU kernels. ``im2col_wide`` is the unit-stride variant
of the fast convolution path: columns on the padded-width grid, one work item per (channel,
column) too.
"""
from __future__ import annotations

from .. import sliced_conv
from ._runtime import CudaSource, i64, reference, supported_dtype

__all__ = ["KERNELS", "SOURCE"]

SOURCE = CudaSource("conv", r"""
// One work item per (channel, column): the column's position is decoded once and the item
// writes its kh * kw rows. Decoding a flat index costs several 64-bit divisions, which made
// a thread per element of cols compute-bound; consecutive items are still consecutive columns,
// so both the loads and the stores of each row coalesce.
extern "C" __global__ void im2col(const T* x, T* cols, long long batch, long long channels,
                                  long long height, long long width, long long kernel_h,
                                  long long kernel_w, long long stride_h, long long stride_w,
                                  long long pad_h, long long pad_w, long long dilation_h,
                                  long long dilation_w, long long out_h, long long out_w) {
    long long plane = out_h * out_w;
    long long columns = batch * plane;
    GRID_STRIDE_LOOP(item, channels * columns) {
        long long c = item / columns;
        long long column = item - c * columns;
        long long n = column / plane;
        long long position = column - n * plane;
        long long oh = position / out_w;
        long long ow = position - oh * out_w;
        const T* image = x + (n * channels + c) * height * width;
        T* out = cols + c * kernel_h * kernel_w * columns + column;
        for (long long i = 0; i < kernel_h; ++i) {
            long long h = oh * stride_h - pad_h + i * dilation_h;
            for (long long j = 0; j < kernel_w; ++j) {
                long long w = ow * stride_w - pad_w + j * dilation_w;
                T value = (T)0;
                if (h >= 0 && h < height && w >= 0 && w < width) value = image[h * width + w];
                out[(i * kernel_w + j) * columns] = value;
            }
        }
    }
}

extern "C" __global__ void col2im(const T* cols, T* x, long long batch, long long channels,
                                  long long height, long long width, long long kernel_h,
                                  long long kernel_w, long long stride_h, long long stride_w,
                                  long long pad_h, long long pad_w, long long dilation_h,
                                  long long dilation_w, long long out_h, long long out_w) {
    long long plane = out_h * out_w;
    long long columns = batch * plane;
    GRID_STRIDE_LOOP(index, batch * channels * height * width) {
        long long w = index % width;
        long long h = (index / width) % height;
        long long c = (index / (width * height)) % channels;
        long long n = index / (width * height * channels);
        T total = (T)0;
        for (long long i = 0; i < kernel_h; ++i) {
            long long row_offset = h + pad_h - i * dilation_h;
            if (row_offset < 0 || row_offset % stride_h != 0) continue;
            long long oh = row_offset / stride_h;
            if (oh >= out_h) continue;
            for (long long j = 0; j < kernel_w; ++j) {
                long long col_offset = w + pad_w - j * dilation_w;
                if (col_offset < 0 || col_offset % stride_w != 0) continue;
                long long ow = col_offset / stride_w;
                if (ow >= out_w) continue;
                long long row = (c * kernel_h + i) * kernel_w + j;
                total += cols[row * columns + n * plane + oh * out_w + ow];
            }
        }
        x[index] = total;
    }
}

// Columns of a unit-stride convolution on the padded-width grid (see the reference
// _im2col_wide_reference): cols[(c*kh + i)*kw + j, n*run + r] = x_pad[n, c].flat[i*dh*Wp + j*dw + r]
// with Wp = width + 2*pad_w, run = out_h * Wp and x_pad zero-padded (plus one zero row at the
// bottom). The padded plane is never built: a flat position outside the image reads as zero.
// One work item per (channel, column), as in im2col. Column r of an image is the padded-grid
// position (oh, ow) = (r / Wp, r % Wp); offset (i, j) reads flat position (oh + i*dh)*Wp + ow + j*dw,
// which wraps into the next padded row when ow + j*dw >= Wp (at most once, since dw*(kw-1) < Wp).
extern "C" __global__ void im2col_wide(const T* x, T* cols, long long batch, long long channels,
                                       long long height, long long width, long long kernel_h,
                                       long long kernel_w, long long pad_h, long long pad_w,
                                       long long dilation_h, long long dilation_w, long long out_h) {
    long long padded_w = width + 2 * pad_w;
    long long run = out_h * padded_w;
    long long columns = batch * run;
    GRID_STRIDE_LOOP(item, channels * columns) {
        long long c = item / columns;
        long long column = item - c * columns;
        long long n = column / run;
        long long r = column - n * run;
        long long oh = r / padded_w;
        long long ow = r - oh * padded_w;
        const T* image = x + (n * channels + c) * height * width;
        T* out = cols + c * kernel_h * kernel_w * columns + column;
        for (long long i = 0; i < kernel_h; ++i) {
            for (long long j = 0; j < kernel_w; ++j) {
                long long w = ow + j * dilation_w;
                long long h = oh + i * dilation_h;
                if (w >= padded_w) {
                    w -= padded_w;
                    h += 1;
                }
                h -= pad_h;
                w -= pad_w;
                T value = (T)0;
                if (h >= 0 && h < height && w >= 0 && w < width) value = image[h * width + w];
                out[(i * kernel_w + j) * columns] = value;
            }
        }
    }
}
""", ["im2col", "col2im", "im2col_wide"])


def _xp(array):
    from tinygrad_cnn.backend import get_array_module
    return get_array_module(array)


def im2col(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, out_h, out_w):
    """Same contract as the reference: x (N, C, H, W) -> cols (C*kh*kw, N*out_h*out_w)."""
    if not supported_dtype(x.dtype):
        return reference("im2col")(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                                   out_h, out_w)
    xp = _xp(x)
    x = xp.ascontiguousarray(x)
    n, c, height, width = x.shape
    cols = xp.empty((c * kernel_h * kernel_w, n * out_h * out_w), dtype=x.dtype)
    SOURCE.launch("im2col", x.dtype, c * n * out_h * out_w, (
        x, cols, i64(n), i64(c), i64(height), i64(width), i64(kernel_h), i64(kernel_w), i64(stride_h),
        i64(stride_w), i64(pad_h), i64(pad_w), i64(dil_h), i64(dil_w), i64(out_h), i64(out_w)))
    return cols


def col2im(cols, n_batch, channels, height, width, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
           dil_h, dil_w, out_h, out_w):
    """Same contract as the reference: cols (C*kh*kw, N*out_h*out_w) -> x (N, C, H, W), summing
    the entries of overlapping windows."""
    if not supported_dtype(cols.dtype):
        return reference("col2im")(cols, n_batch, channels, height, width, kernel_h, kernel_w, stride_h,
                                   stride_w, pad_h, pad_w, dil_h, dil_w, out_h, out_w)
    xp = _xp(cols)
    cols = xp.ascontiguousarray(cols)
    x = xp.empty((n_batch, channels, height, width), dtype=cols.dtype)
    SOURCE.launch("col2im", cols.dtype, x.size, (
        cols, x, i64(n_batch), i64(channels), i64(height), i64(width), i64(kernel_h), i64(kernel_w),
        i64(stride_h), i64(stride_w), i64(pad_h), i64(pad_w), i64(dil_h), i64(dil_w), i64(out_h),
        i64(out_w)))
    return x


def im2col_wide(x, kernel_h, kernel_w, pad_h, pad_w, dil_h, dil_w):
    """Same contract as the reference: x (N, C, H, W) -> cols (C*kh*kw, N*OH*Wp) with
    Wp = W + 2*pad_w and OH = H + 2*pad_h - dil_h*(kh - 1) (unit stride)."""
    if not supported_dtype(x.dtype):
        return reference("im2col_wide")(x, kernel_h, kernel_w, pad_h, pad_w, dil_h, dil_w)
    xp = _xp(x)
    x = xp.ascontiguousarray(x)
    n, c, height, width = x.shape
    out_h = height + 2 * pad_h - dil_h * (kernel_h - 1)
    cols = xp.empty((c * kernel_h * kernel_w, n * out_h * (width + 2 * pad_w)), dtype=x.dtype)
    SOURCE.launch("im2col_wide", x.dtype, c * n * out_h * (width + 2 * pad_w), (
        x, cols, i64(n), i64(c), i64(height), i64(width), i64(kernel_h), i64(kernel_w), i64(pad_h),
        i64(pad_w), i64(dil_h), i64(dil_w), i64(out_h)))
    return cols


KERNELS = {"im2col": im2col, "col2im": col2im, "im2col_wide": im2col_wide}

# The sliced convolution of tinygrad_cnn.kernels.sliced_conv on CuPy arrays: the whole batch in
# one slice, its GEMMs by cuBLAS around the kernels above.
KERNELS.update(conv2d_forward=sliced_conv.conv2d_forward, conv2d_backward=sliced_conv.conv2d_backward)
