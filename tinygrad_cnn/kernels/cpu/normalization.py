"""Numba kernels for BatchNorm and local response normalisation (CPU).

Each public function here has the signature of the NumPy reference registered under the same
name in ``tinygrad_cnn/nn/functional/normalization.py`` and returns the same values (up to
floating-point rounding); ``KERNELS`` lists them for ``tinygrad_cnn.backend``.

Layout: every kernel sees the input as a C-contiguous ``(N, C, L)`` array (``L = H * W``, or 1
for ``(N, C)`` input), so the inner loop runs over ``L`` contiguous elements.

BatchNorm kernels visit the ``(n, c)`` rows in memory order in both of their passes: the pass
that sums over the batch (the statistics, or the two gradient sums) splits the batch into
``SUM_BLOCKS`` blocks of images, one ``prange`` iteration each, whose per-channel sums are then
added in block order (so the results do not depend on the number of threads); the pass that
writes the output runs one row per iteration. An earlier version ran one channel per
iteration, so that the channel's slice stayed in L2 between its two passes; but a channel's
rows lie ``C * L`` elements apart (256 bytes every 16 KiB in ResNet-20's last stage), and read
that way from memory, as a training step reads its saved activations, they left the hardware
prefetcher behind: with the caches flushed the fused backward took 0.78 ms for
(128, 64, 8, 8) against 0.45 ms in memory order, 1.4-1.7 against 1.1-1.2 ms for
(128, 16, 32, 32), on 2 threads.
Reductions accumulate in float64 even for float32 data. LRN kernels run one (image, channel)
row per iteration.

Each loop body is written once (an ``inline="always"`` function) and driven by a parallel
(``prange``) and a serial loop; inputs below ``PARALLEL_MIN_ELEMENTS`` take the serial one.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import prange

from ._float16 import computing_float16_in_float32

# Reassociation lets LLVM vectorise the float64 reductions; "nnan"/"ninf" are left out on purpose
# so NaN and Inf still propagate as in the reference.
_FASTMATH = {"reassoc", "contract", "nsz"}

__all__ = ["batch_norm_forward", "batch_norm_backward", "batch_norm_relu_forward",
           "batch_norm_relu_backward", "lrn_forward", "lrn_backward", "KERNELS",
           "PARALLEL_MIN_ELEMENTS"]


# ---------------------------------------------------------------------------
# BatchNorm
# ---------------------------------------------------------------------------

# Batch blocks of the passes that sum over the batch: each block's sums are kept apart and
# added in block order afterwards, so the results do not depend on the number of threads.
SUM_BLOCKS = 16


@numba.njit(cache=True, inline="always")
def _block_bounds(n_batch, block, blocks):
    return block * n_batch // blocks, (block + 1) * n_batch // blocks


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _bn_stats_block(x, shift, partial, block):
    """partial[block, c] = (sum of d, sum of d^2), d = x - shift[c], over channel c's rows of
    the images of batch block ``block``, visited in memory order."""
    n_batch, channels, length = x.shape
    for c in range(channels):
        partial[block, c, 0] = 0.0
        partial[block, c, 1] = 0.0
    start, stop = _block_bounds(n_batch, block, partial.shape[0])
    for n in range(start, stop):
        for c in range(channels):
            s = shift[c]
            total = 0.0
            total_sq = 0.0
            for i in range(length):
                d = np.float64(x[n, c, i]) - s
                total += d
                total_sq += d * d
            partial[block, c, 0] += total
            partial[block, c, 1] += total_sq


@numba.njit(cache=True, inline="always")
def _bn_channel_stats(partial, shift, weight, eps, count, mean_out, var_out, scale_buf):
    """Each channel's batch mean and biased variance into mean_out, var_out, and its scale
    ``weight / sqrt(var + eps)`` into scale_buf, from the blocks' shifted sums. With the
    shift a sample of the channel, the shifted mean is of the order of the std, so
    E[d^2] - E[d]^2 does not cancel."""
    for c in range(partial.shape[1]):
        total = 0.0
        total_sq = 0.0
        for block in range(partial.shape[0]):
            total += partial[block, c, 0]
            total_sq += partial[block, c, 1]
        mean_shifted = total / count
        var = total_sq / count - mean_shifted * mean_shifted
        if var < 0.0:
            var = 0.0
        mean_out[c] = shift[c] + mean_shifted
        var_out[c] = var
        scale_buf[c] = weight[c] / np.sqrt(var + eps)


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _bn_output_row(x, mean_c, scale_c, bias_c, residual, has_residual, relu, y, n, c):
    """Row (n, c) of ``(x - mean) * scale + bias``; with ``relu`` the residual (if any) is
    added and ReLU applied. One loop per case rather than a test per element, so that each
    vectorises. mean, scale and bias come in the data's dtype, so the loops run in float32
    lanes for float32 data."""
    if has_residual:
        for i in range(x.shape[2]):
            v = (x[n, c, i] - mean_c) * scale_c + bias_c + residual[n, c, i]
            y[n, c, i] = 0 if v <= 0 else v
    elif relu:
        for i in range(x.shape[2]):
            v = (x[n, c, i] - mean_c) * scale_c + bias_c
            y[n, c, i] = 0 if v <= 0 else v
    else:
        for i in range(x.shape[2]):
            y[n, c, i] = (x[n, c, i] - mean_c) * scale_c + bias_c


@numba.njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _bn_stats_parallel(x, weight, eps, mean_out, var_out, scale_buf, shift, partial):
    for block in prange(partial.shape[0]):
        _bn_stats_block(x, shift, partial, block)
    _bn_channel_stats(partial, shift, weight, eps, x.shape[0] * x.shape[2], mean_out, var_out,
                      scale_buf)


@numba.njit(cache=True, fastmath=_FASTMATH)
def _bn_stats_serial(x, weight, eps, mean_out, var_out, scale_buf, shift, partial):
    for block in range(partial.shape[0]):
        _bn_stats_block(x, shift, partial, block)
    _bn_channel_stats(partial, shift, weight, eps, x.shape[0] * x.shape[2], mean_out, var_out,
                      scale_buf)


@numba.njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _bn_apply_parallel(x, mean, scale, bias, residual, has_residual, relu, y):
    channels = x.shape[1]
    for row in prange(x.shape[0] * channels):
        n = row // channels
        c = row - n * channels
        _bn_output_row(x, mean[c], scale[c], bias[c], residual, has_residual, relu, y, n, c)


@numba.njit(cache=True, fastmath=_FASTMATH)
def _bn_apply_serial(x, mean, scale, bias, residual, has_residual, relu, y):
    channels = x.shape[1]
    for row in range(x.shape[0] * channels):
        n = row // channels
        c = row - n * channels
        _bn_output_row(x, mean[c], scale[c], bias[c], residual, has_residual, relu, y, n, c)


# Starting the thread team costs tens of microseconds (milliseconds when the cores are busy
# with other work), more than normalising a small tensor takes: below this many elements
# one thread runs the same loop.
PARALLEL_MIN_ELEMENTS = 1 << 16


def _pick(parallel_kernel, serial_kernel, size):
    return parallel_kernel if size >= PARALLEL_MIN_ELEMENTS else serial_kernel


def _stand_in(dtype):
    """A 1-element (1, 1, 1) array for an optional array argument that is not given."""
    return np.zeros((1, 1, 1), dtype)


def _normalised(x, weight, bias, eps, residual, relu, mean, var):
    """The two forward kernels: ``(y, mean, var)``, y = batch_norm(x), or with ``relu``
    ``relu(batch_norm(x) + residual)``; batch statistics when mean and var are None."""
    x = np.ascontiguousarray(x)
    dtype = x.dtype
    channels = x.shape[1]
    weight = np.ascontiguousarray(weight, dtype=dtype)
    bias = np.ascontiguousarray(bias, dtype=dtype)
    has_residual = residual is not None
    residual = np.ascontiguousarray(residual, dtype=dtype) if has_residual else _stand_in(dtype)
    if mean is None:
        mean = np.empty(channels, dtype)
        var = np.empty(channels, dtype)
        scale = np.empty(channels, dtype)
        shift = x[0, :, 0].astype(np.float64) if x.size else np.zeros(channels)
        _pick(_bn_stats_parallel, _bn_stats_serial, x.size)(
            x, weight, float(eps), mean, var, scale, shift, np.empty((SUM_BLOCKS, channels, 2)))
    else:
        mean = np.ascontiguousarray(mean, dtype=dtype)
        var = np.ascontiguousarray(var, dtype=dtype)
        scale = (weight / np.sqrt(var.astype(np.float64) + eps)).astype(dtype)
    y = np.empty_like(x)
    _pick(_bn_apply_parallel, _bn_apply_serial, x.size)(
        x, mean, scale, bias, residual, has_residual, relu, y)
    return y, mean, var


def batch_norm_forward(x, weight, bias, eps, mean=None, var=None):
    """Numba version of the ``batch_norm_forward`` reference (same signature and results)."""
    return _normalised(x, weight, bias, eps, None, False, mean, var)


def batch_norm_relu_forward(x, weight, bias, eps, residual=None, mean=None, var=None):
    """Numba version of the ``batch_norm_relu_forward`` reference (same signature and results):
    the sum and the ReLU happen in BatchNorm's output pass."""
    return _normalised(x, weight, bias, eps, residual, True, mean, var)


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _bn_grad_coefficients(weight, inv_std, training, sum_g, sum_g_centred, count, grad_weight,
                          grad_bias, coef_buf, c):
    """grad_weight, grad_bias of channel c, and the coefficients (a, b, d) of its grad_x."""
    inv = np.float64(inv_std[c])
    w = np.float64(weight[c])
    grad_bias[c] = sum_g
    grad_weight[c] = sum_g_centred * inv
    # dx = w*inv/M * (M g - sum(g) - xhat * sum(g xhat))  with xhat = (x - mean) * inv
    #    = a * g + b * (x - mean) + d
    coef_buf[c, 0] = w * inv
    if training:
        coef_buf[c, 1] = -w * inv * inv * inv * sum_g_centred / count
        coef_buf[c, 2] = -w * inv * sum_g / count
    else:
        coef_buf[c, 1] = 0.0
        coef_buf[c, 2] = 0.0


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _bn_grad_sums_block(grad_out, y, x, mean, masked, zero, partial, block):
    """partial[block, c] = (sum of g, sum of g * (x - mean[c])) over channel c's rows of the
    images of batch block ``block``, in memory order; ``masked``: g is ``grad_out * [y > 0]``
    (the fused ReLU). In the masked loop every load is unconditional and the mask a select: a
    load inside the condition would keep LLVM from vectorising it."""
    n_batch, channels, length = x.shape
    for c in range(channels):
        partial[block, c, 0] = 0.0
        partial[block, c, 1] = 0.0
    start, stop = _block_bounds(n_batch, block, partial.shape[0])
    for n in range(start, stop):
        for c in range(channels):
            mean_c = np.float64(mean[c])
            sum_g = 0.0
            sum_g_centred = 0.0
            if masked:
                for i in range(length):
                    g_in = grad_out[n, c, i]
                    g = np.float64(g_in if y[n, c, i] > 0 else zero)
                    sum_g += g
                    sum_g_centred += g * (np.float64(x[n, c, i]) - mean_c)
            else:
                for i in range(length):
                    g = np.float64(grad_out[n, c, i])
                    sum_g += g
                    sum_g_centred += g * (np.float64(x[n, c, i]) - mean_c)
            partial[block, c, 0] += sum_g
            partial[block, c, 1] += sum_g_centred


@numba.njit(cache=True, inline="always")
def _bn_grad_channels(partial, weight, inv_std, training, count, grad_weight, grad_bias,
                      coef_buf):
    for c in range(partial.shape[1]):
        sum_g = 0.0
        sum_g_centred = 0.0
        for block in range(partial.shape[0]):
            sum_g += partial[block, c, 0]
            sum_g_centred += partial[block, c, 1]
        _bn_grad_coefficients(weight, inv_std, training, sum_g, sum_g_centred, count,
                              grad_weight, grad_bias, coef_buf, c)


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _bn_grad_x_row(grad_out, y, x, mean, masked, residual_grad, coef_buf, grad_x, grad_sum, zero,
                   n, c):
    """Row (n, c) of grad_x = a g + b (x - mean) + d; with ``residual_grad`` the masked g is
    also written to grad_sum (the gradient of the residual branch)."""
    a = coef_buf[c, 0]
    b = coef_buf[c, 1]
    d = coef_buf[c, 2]
    mean_t = mean[c]
    if masked and residual_grad:
        for i in range(x.shape[2]):
            g_in = grad_out[n, c, i]
            g = g_in if y[n, c, i] > 0 else zero
            grad_sum[n, c, i] = g
            grad_x[n, c, i] = a * g + b * (x[n, c, i] - mean_t) + d
    elif masked:
        for i in range(x.shape[2]):
            g_in = grad_out[n, c, i]
            g = g_in if y[n, c, i] > 0 else zero
            grad_x[n, c, i] = a * g + b * (x[n, c, i] - mean_t) + d
    else:
        for i in range(x.shape[2]):
            grad_x[n, c, i] = a * grad_out[n, c, i] + b * (x[n, c, i] - mean_t) + d


@numba.njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _bn_backward_parallel(grad_out, y, x, weight, mean, inv_std, training, masked, residual_grad,
                          grad_x, grad_weight, grad_bias, grad_sum, coef_buf, zero, partial):
    for block in prange(partial.shape[0]):
        _bn_grad_sums_block(grad_out, y, x, mean, masked, zero, partial, block)
    _bn_grad_channels(partial, weight, inv_std, training, x.shape[0] * x.shape[2], grad_weight,
                      grad_bias, coef_buf)
    channels = x.shape[1]
    for row in prange(x.shape[0] * channels):
        n = row // channels
        c = row - n * channels
        _bn_grad_x_row(grad_out, y, x, mean, masked, residual_grad, coef_buf, grad_x, grad_sum,
                       zero, n, c)


@numba.njit(cache=True, fastmath=_FASTMATH)
def _bn_backward_serial(grad_out, y, x, weight, mean, inv_std, training, masked, residual_grad,
                        grad_x, grad_weight, grad_bias, grad_sum, coef_buf, zero, partial):
    for block in range(partial.shape[0]):
        _bn_grad_sums_block(grad_out, y, x, mean, masked, zero, partial, block)
    _bn_grad_channels(partial, weight, inv_std, training, x.shape[0] * x.shape[2], grad_weight,
                      grad_bias, coef_buf)
    channels = x.shape[1]
    for row in range(x.shape[0] * channels):
        n = row // channels
        c = row - n * channels
        _bn_grad_x_row(grad_out, y, x, mean, masked, residual_grad, coef_buf, grad_x, grad_sum,
                       zero, n, c)


def _gradients(grad_out, y, x, weight, mean, inv_std, training, residual_grad):
    """The two backward kernels: ``(grad_x, grad_weight, grad_bias, grad_sum or None)``; y is
    the fused op's output (its ReLU mask), or None for plain BatchNorm."""
    x = np.ascontiguousarray(x)
    dtype = x.dtype
    masked = y is not None
    residual_grad = masked and bool(residual_grad)
    channels = x.shape[1]
    grad_x = np.empty_like(x)
    grad_sum = np.empty_like(x) if residual_grad else _stand_in(dtype)
    grad_weight = np.empty(channels, dtype)
    grad_bias = np.empty(channels, dtype)
    coef = np.empty((channels, 3), dtype)
    run = _pick(_bn_backward_parallel, _bn_backward_serial, x.size)
    run(np.ascontiguousarray(grad_out, dtype=dtype),
        np.ascontiguousarray(y, dtype=dtype) if masked else _stand_in(dtype), x,
        np.ascontiguousarray(weight, dtype=dtype), np.ascontiguousarray(mean, dtype=dtype),
        np.ascontiguousarray(inv_std, dtype=dtype), bool(training), masked, residual_grad,
        grad_x, grad_weight, grad_bias, grad_sum, coef,
        dtype.type(0),    # a zero of the data's dtype keeps the masked gradient in its lanes
        np.empty((SUM_BLOCKS, channels, 2)))
    return grad_x, grad_weight, grad_bias, (grad_sum if residual_grad else None)


def batch_norm_backward(grad_out, x, weight, mean, inv_std, training):
    """Numba version of the ``batch_norm_backward`` reference (same signature and results)."""
    return _gradients(grad_out, None, x, weight, mean, inv_std, training, False)[:3]


def batch_norm_relu_backward(grad_out, y, x, weight, mean, inv_std, training, residual_grad):
    """Numba version of the ``batch_norm_relu_backward`` reference (same signature and results):
    the ReLU mask is read inside BatchNorm's two gradient passes."""
    return _gradients(grad_out, y, x, weight, mean, inv_std, training, residual_grad)


# ---------------------------------------------------------------------------
# Local response normalisation (across channels)
# ---------------------------------------------------------------------------

@numba.njit(cache=True, inline="always")
def _neg_power(s, beta):
    """s ** -beta; AlexNet's beta = 0.75 uses two square roots, which vectorise, instead of pow."""
    if beta == 0.75:
        return 1.0 / np.sqrt(s * np.sqrt(s))
    return s ** -beta


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _lrn_forward_row(x, before, after, alpha_over_size, beta, k, y, scale, row):
    channels, length = x.shape[1], x.shape[2]
    n = row // channels
    c = row - n * channels
    lo = max(c - before, 0)
    hi = min(c + after, channels - 1)
    for i in range(length):
        scale[n, c, i] = 0.0
    for j in range(lo, hi + 1):
        for i in range(length):
            v = x[n, j, i]
            scale[n, c, i] += v * v
    for i in range(length):
        s = k + alpha_over_size * scale[n, c, i]
        scale[n, c, i] = s
        y[n, c, i] = x[n, c, i] * _neg_power(s, beta)


@numba.njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _lrn_forward_parallel(x, before, after, alpha_over_size, beta, k, y, scale):
    for row in prange(x.shape[0] * x.shape[1]):
        _lrn_forward_row(x, before, after, alpha_over_size, beta, k, y, scale, row)


@numba.njit(cache=True, fastmath=_FASTMATH)
def _lrn_forward_serial(x, before, after, alpha_over_size, beta, k, y, scale):
    for row in range(x.shape[0] * x.shape[1]):
        _lrn_forward_row(x, before, after, alpha_over_size, beta, k, y, scale, row)


def lrn_forward(x, size, alpha, beta, k):
    """Numba version of the ``lrn_forward`` reference (same signature and results)."""
    x = np.ascontiguousarray(x)
    dtype = x.dtype
    y = np.empty_like(x)
    scale = np.empty_like(x)
    size = int(size)
    run = _pick(_lrn_forward_parallel, _lrn_forward_serial, x.size)
    run(x, size // 2, (size - 1) // 2, dtype.type(alpha / size), dtype.type(beta),
                 dtype.type(k), y, scale)
    return y, scale


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _lrn_direct_row(grad_out, x, scale, beta, grad_x, work, row):
    """grad_x = g * s^-beta (the direct term) and work = g * x * s^(-beta-1), for one row."""
    channels, length = x.shape[1], x.shape[2]
    n = row // channels
    c = row - n * channels
    for i in range(length):
        s = scale[n, c, i]
        p = _neg_power(s, beta)
        g = grad_out[n, c, i]
        grad_x[n, c, i] = g * p
        work[n, c, i] = g * x[n, c, i] * p / s


@numba.njit(cache=True, fastmath=_FASTMATH, inline="always")
def _lrn_cross_row(x, before, after, coef, grad_x, work, row):
    """Each x_c feeds the scales of channels c - after .. c + before (the window, mirrored)."""
    channels, length = x.shape[1], x.shape[2]
    n = row // channels
    c = row - n * channels
    lo = max(c - after, 0)
    hi = min(c + before, channels - 1)
    for j in range(lo, hi + 1):
        for i in range(length):
            grad_x[n, c, i] -= coef * x[n, c, i] * work[n, j, i]


@numba.njit(cache=True, parallel=True, fastmath=_FASTMATH)
def _lrn_backward_parallel(grad_out, x, scale, before, after, coef, beta, grad_x, work):
    rows = x.shape[0] * x.shape[1]
    # Two passes: the second reads ``work`` of neighbouring channels, so all of it must exist.
    for row in prange(rows):
        _lrn_direct_row(grad_out, x, scale, beta, grad_x, work, row)
    for row in prange(rows):
        _lrn_cross_row(x, before, after, coef, grad_x, work, row)


@numba.njit(cache=True, fastmath=_FASTMATH)
def _lrn_backward_serial(grad_out, x, scale, before, after, coef, beta, grad_x, work):
    rows = x.shape[0] * x.shape[1]
    for row in range(rows):
        _lrn_direct_row(grad_out, x, scale, beta, grad_x, work, row)
    for row in range(rows):
        _lrn_cross_row(x, before, after, coef, grad_x, work, row)


def lrn_backward(grad_out, x, scale, size, alpha, beta):
    """Numba version of the ``lrn_backward`` reference (same signature and results)."""
    x = np.ascontiguousarray(x)
    dtype = x.dtype
    grad_out = np.ascontiguousarray(grad_out, dtype=dtype)
    scale = np.ascontiguousarray(scale, dtype=dtype)
    size = int(size)
    grad_x = np.empty_like(x)
    work = np.empty_like(x)
    run = _pick(_lrn_backward_parallel, _lrn_backward_serial, x.size)
    run(grad_out, x, scale, size // 2, (size - 1) // 2,
                  dtype.type(2.0 * alpha * beta / size), dtype.type(beta), grad_x, work)
    return grad_x


KERNELS = computing_float16_in_float32({
    "batch_norm_forward": batch_norm_forward,
    "batch_norm_backward": batch_norm_backward,
    "batch_norm_relu_forward": batch_norm_relu_forward,
    "batch_norm_relu_backward": batch_norm_relu_backward,
    "lrn_forward": lrn_forward,
    "lrn_backward": lrn_backward,
})
