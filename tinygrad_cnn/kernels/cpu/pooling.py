"""Numba kernels for 2-D max and average pooling.

Every kernel has the signature of its NumPy reference in
``tinygrad_cnn/nn/functional/pooling.py`` (see the docstrings there) and
returns the same arrays. Inside, the (N, C) axes are merged into one axis of
``N * C`` independent planes; ``prange`` hands whole planes to threads, so a
thread never writes to another thread's plane and the backward scatters need
no atomics even though overlapping windows hit the same input pixel. Each
kernel has a parallel and a serial driver around the same per-plane loop;
small inputs take the serial one (see ``PARALLEL_MIN_WORK``).

Max pooling splits each output row into the windows inside the image, which need no bounds
tests, and the few that cross the padding. The windows of nearly every CNN, 3x3 and 2x2, get
drivers with the size as a constant, so LLVM unrolls the window and its select chain: on one
thread AlexNet's first pool (16 x 64 x 55 x 55, 3x3 stride 2) takes 9.5 ms instead of 28 ms,
a ResNet stem's (3x3 stride 2 pad 1 on 128 x 16 x 32 x 32) 7.5 instead of 18.7.

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
def _taps_inside(start, dilation, kernel, size):
    """(first, stop): the taps t of a window starting at ``start`` with ``0 <= start + t *
    dilation < size``; first >= stop when there are none."""
    first = 0 if start >= 0 else (dilation - 1 - start) // dilation
    last = size - 1 - start
    stop = kernel if start + (kernel - 1) * dilation < size else (last // dilation + 1 if last >= 0 else 0)
    return first, stop


@njit(cache=True, inline="always")
def _max_step(x, p, h, w, width, best, best_index):
    value = x[p, h, w]
    take = (value > best) | (value != value)
    return (value if take else best), (h * width + w if take else best_index)


@njit(cache=True, inline="always")
def _max_pool_window(x, out, indices, p, oh, ow, row0, i0, i1, kw, sw, pw, dh, dw):
    """One window whose rows i0..i1 are inside the image; its columns are clipped here."""
    width = x.shape[2]
    col0 = ow * sw - pw
    j0, j1 = _taps_inside(col0, dw, kw, width)
    if i0 >= i1 or j0 >= j1:                 # the window lies in the padding
        out[p, oh, ow] = -np.inf
        indices[p, oh, ow] = -1
        return
    best = x[p, row0 + i0 * dh, col0 + j0 * dw]
    best_index = (row0 + i0 * dh) * width + col0 + j0 * dw
    for i in range(i0, i1):
        h = row0 + i * dh
        for j in range(j0, j1):
            best, best_index = _max_step(x, p, h, col0 + j * dw, width, best, best_index)
    out[p, oh, ow] = best
    indices[p, oh, ow] = best_index


@njit(cache=True, inline="always")
def _max_pool_plane(x, out, indices, p, kh, kw, sh, sw, ph, pw, dh, dw):
    height, width = x.shape[1], x.shape[2]
    out_h, out_w = out.shape[1], out.shape[2]
    # Output columns whose windows lie inside the image: ow_lo <= ow < ow_hi.
    ow_lo = min(out_w, (pw + sw - 1) // sw)
    ow_hi = max(ow_lo, min(out_w, (width - 1 - (kw - 1) * dw + pw) // sw + 1))
    for oh in range(out_h):
        row0 = oh * sh - ph
        i0, i1 = _taps_inside(row0, dh, kh, height)
        if i1 - i0 < kh:
            for ow in range(out_w):
                _max_pool_window(x, out, indices, p, oh, ow, row0, i0, i1, kw, sw, pw, dh, dw)
            continue
        for ow in range(ow_lo):
            _max_pool_window(x, out, indices, p, oh, ow, row0, i0, i1, kw, sw, pw, dh, dw)
        for ow in range(ow_lo, ow_hi):
            # Inside the image: no bounds, trip counts kh and kw, which the 3x3 and 2x2
            # drivers make constants, so LLVM unrolls the window.
            col0 = ow * sw - pw
            best = x[p, row0, col0]
            best_index = row0 * width + col0
            for i in range(kh):
                h = row0 + i * dh
                for j in range(kw):
                    best, best_index = _max_step(x, p, h, col0 + j * dw, width, best,
                                                 best_index)
            out[p, oh, ow] = best
            indices[p, oh, ow] = best_index
        for ow in range(ow_hi, out_w):
            _max_pool_window(x, out, indices, p, oh, ow, row0, i0, i1, kw, sw, pw, dh, dw)


@njit(cache=True, parallel=True)
def _max_pool_parallel(x, out, indices, kh, kw, sh, sw, ph, pw, dh, dw):
    for p in prange(x.shape[0]):
        _max_pool_plane(x, out, indices, p, kh, kw, sh, sw, ph, pw, dh, dw)


@njit(cache=True)
def _max_pool_serial(x, out, indices, kh, kw, sh, sw, ph, pw, dh, dw):
    for p in range(x.shape[0]):
        _max_pool_plane(x, out, indices, p, kh, kw, sh, sw, ph, pw, dh, dw)


# The windows of nearly every CNN, with the size written in: the same loop, unrolled.
@njit(cache=True, parallel=True)
def _max_pool_parallel_3x3(x, out, indices, kh, kw, sh, sw, ph, pw, dh, dw):
    for p in prange(x.shape[0]):
        _max_pool_plane(x, out, indices, p, 3, 3, sh, sw, ph, pw, dh, dw)


@njit(cache=True)
def _max_pool_serial_3x3(x, out, indices, kh, kw, sh, sw, ph, pw, dh, dw):
    for p in range(x.shape[0]):
        _max_pool_plane(x, out, indices, p, 3, 3, sh, sw, ph, pw, dh, dw)


@njit(cache=True, parallel=True)
def _max_pool_parallel_2x2(x, out, indices, kh, kw, sh, sw, ph, pw, dh, dw):
    for p in prange(x.shape[0]):
        _max_pool_plane(x, out, indices, p, 2, 2, sh, sw, ph, pw, dh, dw)


@njit(cache=True)
def _max_pool_serial_2x2(x, out, indices, kh, kw, sh, sw, ph, pw, dh, dw):
    for p in range(x.shape[0]):
        _max_pool_plane(x, out, indices, p, 2, 2, sh, sw, ph, pw, dh, dw)


_MAX_POOL_DRIVERS = {(3, 3): (_max_pool_parallel_3x3, _max_pool_serial_3x3),
                     (2, 2): (_max_pool_parallel_2x2, _max_pool_serial_2x2)}


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
    parallel, serial = _MAX_POOL_DRIVERS.get(tuple(kernel_size),
                                             (_max_pool_parallel, _max_pool_serial))
    run = _pick(parallel, serial, out.size * kernel_size[0] * kernel_size[1])
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
