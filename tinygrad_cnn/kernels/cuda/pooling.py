"""2-D max and average pooling on the GPU (forward and backward).

Wrappers have the signatures of the NumPy references in
``tinygrad_cnn/nn/functional/pooling.py``. One thread computes one output element (forward)
or one input pixel (average-pooling backward, a gather over the windows that cover it, so no
atomics are needed and the sum order equals the reference's). Max-pooling backward only gets
the argmax indices, not the window geometry, so it scatters: one thread per (n, c) plane walks
the plane's outputs in order, which is deterministic (overlapping windows add up in float of
the element type, where the reference accumulates in float64: equal to rounding).
"""
from __future__ import annotations

import numpy as np

from ._runtime import CudaSource, i64, real, reference, supported_dtype

__all__ = ["KERNELS", "SOURCE"]

SOURCE = CudaSource("pooling", r"""
// One thread per output: the first in-image element of the window in row-major order, replaced
// by a strictly greater one or a NaN. Windows covering only padding give neg_inf and index -1.
extern "C" __global__ void max_pool2d_forward(const T* x, T* out, long long* indices, long long planes,
                                              long long height, long long width, long long out_h,
                                              long long out_w, long long kernel_h, long long kernel_w,
                                              long long stride_h, long long stride_w, long long pad_h,
                                              long long pad_w, long long dilation_h,
                                              long long dilation_w, T neg_inf) {
    GRID_STRIDE_LOOP(i, planes * out_h * out_w) {
        long long ow = i % out_w;
        long long oh = (i / out_w) % out_h;
        long long plane = i / (out_w * out_h);
        const T* source = x + plane * height * width;
        T best = neg_inf;
        long long best_index = -1;
        for (long long a = 0; a < kernel_h; ++a) {
            long long h = oh * stride_h - pad_h + a * dilation_h;
            if (h < 0 || h >= height) continue;
            for (long long b = 0; b < kernel_w; ++b) {
                long long w = ow * stride_w - pad_w + b * dilation_w;
                if (w < 0 || w >= width) continue;
                T value = source[h * width + w];
                if (best_index < 0 || value > best || value != value) {
                    best = value;
                    best_index = h * width + w;
                }
            }
        }
        out[i] = best;
        indices[i] = best_index;
    }
}

// One thread per (n, c) plane; grad_input must be zero on entry.
extern "C" __global__ void max_pool2d_backward(const T* grad_output, const long long* indices,
                                               T* grad_input, long long planes, long long out_plane,
                                               long long in_plane) {
    GRID_STRIDE_LOOP(plane, planes) {
        const T* grad = grad_output + plane * out_plane;
        const long long* index = indices + plane * out_plane;
        T* target = grad_input + plane * in_plane;
        for (long long k = 0; k < out_plane; ++k) {
            long long position = index[k];
            if (position >= 0) target[position] += grad[k];
        }
    }
}

// The number averaged by output (oh, ow) (PyTorch's rule), or divisor_override when > 0.
__device__ long long avg_divisor(long long oh, long long ow, long long height, long long width,
                                 long long kernel_h, long long kernel_w, long long stride_h,
                                 long long stride_w, long long pad_h, long long pad_w,
                                 int count_include_pad, long long divisor_override) {
    if (divisor_override > 0) return divisor_override;
    long long h_start = oh * stride_h - pad_h;
    long long w_start = ow * stride_w - pad_w;
    long long h_end = h_start + kernel_h < height + pad_h ? h_start + kernel_h : height + pad_h;
    long long w_end = w_start + kernel_w < width + pad_w ? w_start + kernel_w : width + pad_w;
    if (count_include_pad) return (h_end - h_start) * (w_end - w_start);
    long long rows = (h_end < height ? h_end : height) - (h_start > 0 ? h_start : 0);
    long long cols = (w_end < width ? w_end : width) - (w_start > 0 ? w_start : 0);
    return rows * cols;
}

extern "C" __global__ void avg_pool2d_forward(const T* x, T* out, long long planes, long long height,
                                              long long width, long long out_h, long long out_w,
                                              long long kernel_h, long long kernel_w,
                                              long long stride_h, long long stride_w, long long pad_h,
                                              long long pad_w, int count_include_pad,
                                              long long divisor_override) {
    GRID_STRIDE_LOOP(i, planes * out_h * out_w) {
        long long ow = i % out_w;
        long long oh = (i / out_w) % out_h;
        long long plane = i / (out_w * out_h);
        const T* source = x + plane * height * width;
        T total = (T)0;
        for (long long a = 0; a < kernel_h; ++a) {
            long long h = oh * stride_h - pad_h + a;
            if (h < 0 || h >= height) continue;
            for (long long b = 0; b < kernel_w; ++b) {
                long long w = ow * stride_w - pad_w + b;
                if (w < 0 || w >= width) continue;
                total += source[h * width + w];
            }
        }
        long long divisor = avg_divisor(oh, ow, height, width, kernel_h, kernel_w, stride_h, stride_w,
                                        pad_h, pad_w, count_include_pad, divisor_override);
        out[i] = (T)((double)total / (double)divisor);
    }
}

// One thread per input pixel, summing the shares of every window that covers it, in the
// reference's order of kernel offsets.
extern "C" __global__ void avg_pool2d_backward(const T* grad_output, T* grad_input, long long planes,
                                               long long height, long long width, long long out_h,
                                               long long out_w, long long kernel_h, long long kernel_w,
                                               long long stride_h, long long stride_w, long long pad_h,
                                               long long pad_w, int count_include_pad,
                                               long long divisor_override) {
    GRID_STRIDE_LOOP(i, planes * height * width) {
        long long w = i % width;
        long long h = (i / width) % height;
        long long plane = i / (width * height);
        const T* grad = grad_output + plane * out_h * out_w;
        T total = (T)0;
        for (long long a = 0; a < kernel_h; ++a) {
            long long row_offset = h + pad_h - a;
            if (row_offset < 0 || row_offset % stride_h != 0) continue;
            long long oh = row_offset / stride_h;
            if (oh >= out_h) continue;
            for (long long b = 0; b < kernel_w; ++b) {
                long long col_offset = w + pad_w - b;
                if (col_offset < 0 || col_offset % stride_w != 0) continue;
                long long ow = col_offset / stride_w;
                if (ow >= out_w) continue;
                long long divisor = avg_divisor(oh, ow, height, width, kernel_h, kernel_w, stride_h,
                                                stride_w, pad_h, pad_w, count_include_pad,
                                                divisor_override);
                total += (T)((double)grad[oh * out_w + ow] / (double)divisor);
            }
        }
        grad_input[i] = total;
    }
}
""", ["max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward"])


def _xp(array):
    from tinygrad_cnn.backend import get_array_module
    return get_array_module(array)


def max_pool2d_forward(x, kernel_size, stride, padding, dilation, output_size):
    """Same contract as the reference: x (N, C, H, W) -> (out, indices), both (N, C, OH, OW)."""
    if not supported_dtype(x.dtype):
        return reference("max_pool2d_forward")(x, kernel_size, stride, padding, dilation, output_size)
    xp = _xp(x)
    x = xp.ascontiguousarray(x)
    n, c, height, width = x.shape
    out_h, out_w = output_size
    out = xp.empty((n, c, out_h, out_w), dtype=x.dtype)
    indices = xp.empty((n, c, out_h, out_w), dtype=np.int64)
    SOURCE.launch("max_pool2d_forward", x.dtype, out.size, (
        x, out, indices, i64(n * c), i64(height), i64(width), i64(out_h), i64(out_w),
        i64(kernel_size[0]), i64(kernel_size[1]), i64(stride[0]), i64(stride[1]), i64(padding[0]),
        i64(padding[1]), i64(dilation[0]), i64(dilation[1]), real(-np.inf, x.dtype)))
    return out, indices


def max_pool2d_backward(grad_output, indices, input_size):
    """Same contract as the reference: (N, C, OH, OW) gradients and indices -> (N, C, H, W)."""
    if not supported_dtype(grad_output.dtype):
        return reference("max_pool2d_backward")(grad_output, indices, input_size)
    xp = _xp(grad_output)
    grad_output = xp.ascontiguousarray(grad_output)
    indices = xp.ascontiguousarray(indices, dtype=np.int64)
    n, c, out_h, out_w = grad_output.shape
    height, width = input_size
    grad_input = xp.zeros((n, c, height, width), dtype=grad_output.dtype)
    SOURCE.launch("max_pool2d_backward", grad_output.dtype, n * c, (
        grad_output, indices, grad_input, i64(n * c), i64(out_h * out_w), i64(height * width)))
    return grad_input


def avg_pool2d_forward(x, kernel_size, stride, padding, output_size, count_include_pad, divisor_override):
    """Same contract as the reference: x (N, C, H, W) -> out (N, C, OH, OW)."""
    if not supported_dtype(x.dtype):
        return reference("avg_pool2d_forward")(x, kernel_size, stride, padding, output_size,
                                               count_include_pad, divisor_override)
    xp = _xp(x)
    x = xp.ascontiguousarray(x)
    n, c, height, width = x.shape
    out_h, out_w = output_size
    out = xp.empty((n, c, out_h, out_w), dtype=x.dtype)
    SOURCE.launch("avg_pool2d_forward", x.dtype, out.size, (
        x, out, i64(n * c), i64(height), i64(width), i64(out_h), i64(out_w), i64(kernel_size[0]),
        i64(kernel_size[1]), i64(stride[0]), i64(stride[1]), i64(padding[0]), i64(padding[1]),
        np.int32(bool(count_include_pad)), i64(divisor_override or 0)))
    return out


def avg_pool2d_backward(grad_output, input_size, kernel_size, stride, padding, count_include_pad,
                        divisor_override):
    """Same contract as the reference: grad_output (N, C, OH, OW) -> grad_input (N, C, H, W)."""
    if not supported_dtype(grad_output.dtype):
        return reference("avg_pool2d_backward")(grad_output, input_size, kernel_size, stride, padding,
                                                count_include_pad, divisor_override)
    xp = _xp(grad_output)
    grad_output = xp.ascontiguousarray(grad_output)
    n, c, out_h, out_w = grad_output.shape
    height, width = input_size
    grad_input = xp.empty((n, c, height, width), dtype=grad_output.dtype)
    SOURCE.launch("avg_pool2d_backward", grad_output.dtype, grad_input.size, (
        grad_output, grad_input, i64(n * c), i64(height), i64(width), i64(out_h), i64(out_w),
        i64(kernel_size[0]), i64(kernel_size[1]), i64(stride[0]), i64(stride[1]), i64(padding[0]),
        i64(padding[1]), np.int32(bool(count_include_pad)), i64(divisor_override or 0)))
    return grad_input


KERNELS = {
    "max_pool2d_forward": max_pool2d_forward,
    "max_pool2d_backward": max_pool2d_backward,
    "avg_pool2d_forward": avg_pool2d_forward,
    "avg_pool2d_backward": avg_pool2d_backward,
}
