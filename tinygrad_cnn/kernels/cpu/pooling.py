"""Numba kernels for 2-D max and average pooling.

Every kernel has the signature of its NumPy reference in
``tinygrad_cnn/nn/functional/pooling.py`` (see the docstrings there) and
returns the same arrays. Inside, the (N, C) axes are merged into one axis of
``N * C`` independent planes; ``prange`` hands whole planes to threads, so a
thread never writes to another thread's plane and the backward scatters need
no atomics even though overlapping windows hit the same input pixel. Each
kernel has a parallel and a serial driver around the same per-plane loop;
small inputs take the serial one (see ``PARALLEL_MIN_WORK``).

Conventions shared with the reference:

* window ``(oh, ow)`` covers rows ``oh*sh - ph + i*dh`` (i < kh) and columns
  ``ow*sw - pw + j*dw`` (j < kw); positions outside the image are padding;
* max pooling picks the first valid element of the window, then moves to a
  later one only if it is strictly greater or NaN; so on ties the *first*
  maximum (row-major order) wins and a NaN propagates (the last NaN wins, as
  in PyTorch). ``indices`` is ``h * W + w`` in the input plane, or -1 for a
  window that lies entirely in the padding (output -inf, no gradient);
* the average divisor is PyTorch's: ``divisor_override`` if given, else the
  window area clipped to the padded image (``count_include_pad=True``) or to
  the image itself (``count_include_pad=False``).
"""
import numpy as np
from numba import njit, prange

from ._float16 import computing_float16_in_float32

__all__ = [
    "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward",
    "KERNELS",
]


@njit(cache=True, inline="always")
def _max_pool_plane(x, out, indices, p, kh, kw, sh, sw, ph, pw, dh, dw):
    height, width = x.shape[1], x.shape[2]
    out_h, out_w = out.shape[1], out.shape[2]
    for oh in range(out_h):
        row0 = oh * sh - ph
        for ow in range(out_w):
            col0 = ow * sw - pw
            best = -np.inf
            best_index = -1
            for i in range(kh):
                h = row0 + i * dh
                if h < 0 or h >= height:
                    continue
                for j in range(kw):
                    w = col0 + j * dw
                    if w < 0 or w >= width:
                        continue
                    value = x[p, h, w]
                    # `value != value` is the NaN test; strict `>` keeps the first maximum.
                    if best_index < 0 or value > best or value != value:
                        best = value
                        best_index = h * width + w
            out[p, oh, ow] = best
            indices[p, oh, ow] = best_index


@njit(cache=True, parallel=True)
def _max_pool_parallel(x, out, indices, kh, kw, sh, sw, ph, pw, dh, dw):
    for p in prange(x.shape[0]):
        _max_pool_plane(x, out, indices, p, kh, kw, sh, sw, ph, pw, dh, dw)


@njit(cache=True)
def _max_pool_serial(x, out, indices, kh, kw, sh, sw, ph, pw, dh, dw):
    for p in range(x.shape[0]):
        _max_pool_plane(x, out, indices, p, kh, kw, sh, sw, ph, pw, dh, dw)


@njit(cache=True, inline="always")
def _max_pool_backward_plane(grad_output, indices, grad_input, p):
    for k in range(grad_output.shape[1]):
        target = indices[p, k]
        if target >= 0:
            grad_input[p, target] += grad_output[p, k]


@njit(cache=True, parallel=True)
def _max_pool_backward_parallel(grad_output, indices, grad_input):
    for p in prange(grad_output.shape[0]):
        _max_pool_backward_plane(grad_output, indices, grad_input, p)


@njit(cache=True)
def _max_pool_backward_serial(grad_output, indices, grad_input):
    for p in range(grad_output.shape[0]):
        _max_pool_backward_plane(grad_output, indices, grad_input, p)


@njit(cache=True, inline="always")
def _window(o, stride, pad, kernel, size):
    """(start, end) clipped to the image, and the window length clipped to the padded image."""
    start = o * stride - pad
    end = min(start + kernel, size + pad)
    padded_length = end - start
    return max(start, 0), min(end, size), padded_length


@njit(cache=True, inline="always")
def _divisor(h0, h1, padded_h, w0, w1, padded_w, count_include_pad, divisor_override):
    if divisor_override > 0:
        return divisor_override
    if count_include_pad:
        return padded_h * padded_w
    return (h1 - h0) * (w1 - w0)


@njit(cache=True, inline="always")
def _avg_pool_plane(x, out, p, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override):
    height, width = x.shape[1], x.shape[2]
    out_h, out_w = out.shape[1], out.shape[2]
    for oh in range(out_h):
        h0, h1, padded_h = _window(oh, sh, ph, kh, height)
        for ow in range(out_w):
            w0, w1, padded_w = _window(ow, sw, pw, kw, width)
            total = 0.0
            for h in range(h0, h1):
                for w in range(w0, w1):
                    total += x[p, h, w]
            out[p, oh, ow] = total / _divisor(h0, h1, padded_h, w0, w1, padded_w,
                                              count_include_pad, divisor_override)


@njit(cache=True, parallel=True)
def _avg_pool_parallel(x, out, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override):
    for p in prange(x.shape[0]):
        _avg_pool_plane(x, out, p, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override)


@njit(cache=True)
def _avg_pool_serial(x, out, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override):
    for p in range(x.shape[0]):
        _avg_pool_plane(x, out, p, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override)


@njit(cache=True, inline="always")
def _avg_pool_backward_plane(grad_output, grad_input, p, kh, kw, sh, sw, ph, pw,
                             count_include_pad, divisor_override):
    height, width = grad_input.shape[1], grad_input.shape[2]
    out_h, out_w = grad_output.shape[1], grad_output.shape[2]
    for oh in range(out_h):
        h0, h1, padded_h = _window(oh, sh, ph, kh, height)
        for ow in range(out_w):
            w0, w1, padded_w = _window(ow, sw, pw, kw, width)
            share = grad_output[p, oh, ow] / _divisor(h0, h1, padded_h, w0, w1, padded_w,
                                                      count_include_pad, divisor_override)
            for h in range(h0, h1):
                for w in range(w0, w1):
                    grad_input[p, h, w] += share


@njit(cache=True, parallel=True)
def _avg_pool_backward_parallel(grad_output, grad_input, kh, kw, sh, sw, ph, pw,
                                count_include_pad, divisor_override):
    for p in prange(grad_output.shape[0]):
        _avg_pool_backward_plane(grad_output, grad_input, p, kh, kw, sh, sw, ph, pw,
                                 count_include_pad, divisor_override)


@njit(cache=True)
def _avg_pool_backward_serial(grad_output, grad_input, kh, kw, sh, sw, ph, pw,
                              count_include_pad, divisor_override):
    for p in range(grad_output.shape[0]):
        _avg_pool_backward_plane(grad_output, grad_input, p, kh, kw, sh, sw, ph, pw,
                                 count_include_pad, divisor_override)


# Starting the worker threads costs about a millisecond (more on a busy machine), far more
# than pooling a small batch takes; below this many window reads one thread does the job.
PARALLEL_MIN_WORK = 1 << 17


def _pick(parallel_kernel, serial_kernel, work):
    return parallel_kernel if work >= PARALLEL_MIN_WORK else serial_kernel


def _planes(array):
    """(N, C, H, W) -> a C-contiguous (N*C, H, W) view (or copy)."""
    n, c, h, w = array.shape
    return np.ascontiguousarray(array).reshape(n * c, h, w)


def max_pool2d_forward(x, kernel_size, stride, padding, dilation, output_size):
    """Same contract as the reference: returns ``(out, indices)``, both (N, C, OH, OW)."""
    n, c = x.shape[:2]
    out_h, out_w = output_size
    out = np.empty((n * c, out_h, out_w), dtype=x.dtype)
    indices = np.empty((n * c, out_h, out_w), dtype=np.int64)
    run = _pick(_max_pool_parallel, _max_pool_serial, out.size * kernel_size[0] * kernel_size[1])
    run(_planes(x), out, indices, kernel_size[0], kernel_size[1], stride[0], stride[1],
        padding[0], padding[1], dilation[0], dilation[1])
    return out.reshape(n, c, out_h, out_w), indices.reshape(n, c, out_h, out_w)


def max_pool2d_backward(grad_output, indices, input_size):
    """Same contract as the reference: scatter-add ``grad_output`` to ``indices``."""
    n, c, out_h, out_w = grad_output.shape
    height, width = input_size
    grad_input = np.zeros((n * c, height * width), dtype=grad_output.dtype)
    run = _pick(_max_pool_backward_parallel, _max_pool_backward_serial, grad_output.size)
    run(np.ascontiguousarray(grad_output).reshape(n * c, out_h * out_w),
        np.ascontiguousarray(indices).reshape(n * c, out_h * out_w), grad_input)
    return grad_input.reshape(n, c, height, width)


def avg_pool2d_forward(x, kernel_size, stride, padding, output_size, count_include_pad,
                       divisor_override):
    """Same contract as the reference: returns ``out`` (N, C, OH, OW)."""
    n, c = x.shape[:2]
    out_h, out_w = output_size
    out = np.empty((n * c, out_h, out_w), dtype=x.dtype)
    run = _pick(_avg_pool_parallel, _avg_pool_serial, out.size * kernel_size[0] * kernel_size[1])
    run(_planes(x), out, kernel_size[0], kernel_size[1], stride[0], stride[1], padding[0],
        padding[1], bool(count_include_pad), int(divisor_override or 0))
    return out.reshape(n, c, out_h, out_w)


def avg_pool2d_backward(grad_output, input_size, kernel_size, stride, padding, count_include_pad,
                        divisor_override):
    """Same contract as the reference: returns ``grad_input`` (N, C, H, W)."""
    n, c = grad_output.shape[:2]
    height, width = input_size
    grad_input = np.zeros((n * c, height, width), dtype=grad_output.dtype)
    run = _pick(_avg_pool_backward_parallel, _avg_pool_backward_serial,
                grad_output.size * kernel_size[0] * kernel_size[1])
    run(_planes(grad_output), grad_input, kernel_size[0], kernel_size[1], stride[0], stride[1],
        padding[0], padding[1], bool(count_include_pad), int(divisor_override or 0))
    return grad_input.reshape(n, c, height, width)


KERNELS = computing_float16_in_float32({
    "max_pool2d_forward": max_pool2d_forward,
    "max_pool2d_backward": max_pool2d_backward,
    "avg_pool2d_forward": avg_pool2d_forward,
    "avg_pool2d_backward": avg_pool2d_backward,
})
