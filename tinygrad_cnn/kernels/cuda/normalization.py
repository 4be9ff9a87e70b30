"""BatchNorm (train and eval, forward and backward) and local response norm on the GPU.

Wrappers have the signatures of the NumPy references in
``tinygrad_cnn/nn/functional/normalization.py`` and follow their precision: per-channel
statistics and gradient sums are accumulated in double (one block per channel, a tree reduction
in shared memory), the per-element arithmetic happens in the element type exactly where the
reference's does.
"""
from __future__ import annotations

from ._runtime import CudaSource, MAX_BLOCK, i32, i64, real, reference, supported_dtype

__all__ = ["KERNELS", "SOURCE"]

SOURCE = CudaSource("normalization", r"""
#define REDUCE_BLOCK 256

// x: (batch, channels, length). One block per channel: mean, then the biased variance around it
// (two passes, both in double), written in the element type.
extern "C" __global__ void batch_norm_stats(const T* x, T* mean_out, T* var_out, long long batch,
                                            long long channels, long long length) {
    __shared__ double shared[REDUCE_BLOCK];
    long long count = batch * length;
    for (long long c = blockIdx.x; c < channels; c += gridDim.x) {
        double sum = 0.0;
        for (long long k = threadIdx.x; k < count; k += blockDim.x) {
            sum += (double)x[((k / length) * channels + c) * length + k % length];
        }
        double mean = block_sum(sum, shared) / (double)count;
        double squares = 0.0;
        for (long long k = threadIdx.x; k < count; k += blockDim.x) {
            double centred = (double)x[((k / length) * channels + c) * length + k % length] - mean;
            squares += centred * centred;
        }
        double var = block_sum(squares, shared) / (double)count;
        if (threadIdx.x == 0) {
            mean_out[c] = (T)mean;
            var_out[c] = (T)var;
        }
    }
}

// scale[c] = weight[c] / sqrt(var[c] + eps), computed in double and rounded once.
extern "C" __global__ void batch_norm_scale(const T* weight, const T* var, T* scale, long long channels,
                                            double eps) {
    GRID_STRIDE_LOOP(c, channels) {
        scale[c] = (T)((double)weight[c] * (1.0 / sqrt((double)var[c] + eps)));
    }
}

extern "C" __global__ void batch_norm_apply(const T* x, const T* mean, const T* scale, const T* bias,
                                            T* y, long long channels, long long length,
                                            long long total) {
    GRID_STRIDE_LOOP(i, total) {
        long long c = (i / length) % channels;
        y[i] = (x[i] - mean[c]) * scale[c] + bias[c];
    }
}

// One block per channel: the two gradient sums (double), then grad_x for the channel.
extern "C" __global__ void batch_norm_backward(const T* grad_out, const T* x, const T* weight,
                                               const T* mean, const T* inv_std, T* grad_x,
                                               T* grad_weight, T* grad_bias, long long batch,
                                               long long channels, long long length, int training) {
    __shared__ double shared[REDUCE_BLOCK];
    long long count = batch * length;
    T count_in_t = (T)count;
    for (long long c = blockIdx.x; c < channels; c += gridDim.x) {
        double m = (double)mean[c];
        double s = (double)inv_std[c];
        double sum_g = 0.0;
        double sum_g_xhat = 0.0;
        for (long long k = threadIdx.x; k < count; k += blockDim.x) {
            long long index = ((k / length) * channels + c) * length + k % length;
            double g = (double)grad_out[index];
            sum_g += g;
            sum_g_xhat += g * (((double)x[index] - m) * s);
        }
        sum_g = block_sum(sum_g, shared);
        sum_g_xhat = block_sum(sum_g_xhat, shared);
        if (threadIdx.x == 0) {
            grad_weight[c] = (T)sum_g_xhat;
            grad_bias[c] = (T)sum_g;
        }
        double gain = (double)weight[c] * s;
        double gain_over_count = gain / (double)count;
        for (long long k = threadIdx.x; k < count; k += blockDim.x) {
            long long index = ((k / length) * channels + c) * length + k % length;
            T g = grad_out[index];
            if (training) {
                double xhat = ((double)x[index] - m) * s;
                grad_x[index] = (T)(gain_over_count * ((double)(count_in_t * g) - sum_g - xhat * sum_g_xhat));
            } else {
                grad_x[index] = (T)((double)g * gain);
            }
        }
    }
}

// x: (batch, channels, length). scale = k + alpha/size * (sum of x^2 over channels
// c - before .. c + after), y = x * scale^(-beta).
extern "C" __global__ void lrn_forward(const T* x, T* y, T* scale, long long channels, long long length,
                                       long long total, long long before, long long after,
                                       T alpha_over_size, T k, T neg_beta) {
    GRID_STRIDE_LOOP(i, total) {
        long long c = (i / length) % channels;
        long long channel0 = i - c * length;
        T window = (T)0;
        for (long long j = c - before; j <= c + after; ++j) {
            if (j < 0 || j >= channels) continue;
            T value = x[channel0 + j * length];
            window += value * value;
        }
        T s = k + alpha_over_size * window;
        scale[i] = s;
        y[i] = x[i] * pow(s, neg_beta);
    }
}

// grad_x = g * scale^-beta - coefficient * x * (sum over the mirrored window of
// g * x * scale^-beta / scale); before/after describe the mirrored window.
extern "C" __global__ void lrn_backward(const T* grad_out, const T* x, const T* scale, T* grad_x,
                                        long long channels, long long length, long long total,
                                        long long before, long long after, T neg_beta,
                                        T coefficient) {
    GRID_STRIDE_LOOP(i, total) {
        long long c = (i / length) % channels;
        long long channel0 = i - c * length;
        T mirrored = (T)0;
        for (long long j = c - before; j <= c + after; ++j) {
            if (j < 0 || j >= channels) continue;
            long long index = channel0 + j * length;
            T s = scale[index];
            mirrored += grad_out[index] * x[index] * pow(s, neg_beta) / s;
        }
        grad_x[i] = grad_out[i] * pow(scale[i], neg_beta) - coefficient * x[i] * mirrored;
    }
}
""", ["batch_norm_stats", "batch_norm_scale", "batch_norm_apply", "batch_norm_backward", "lrn_forward",
      "lrn_backward"])

# The shared-memory arrays above hold REDUCE_BLOCK doubles.
assert MAX_BLOCK <= 256


def _xp(array):
    from tinygrad_cnn.backend import get_array_module
    return get_array_module(array)


def _same_dtype(dtype, *arrays) -> bool:
    return supported_dtype(dtype) and all(a.dtype == dtype for a in arrays)


def batch_norm_forward(x, weight, bias, eps, mean=None, var=None):
    """Same contract as the reference: x (N, C, L), weight/bias (C,) -> (y, mean, var)."""
    given = [a for a in (mean, var) if a is not None]
    if not _same_dtype(x.dtype, weight, bias, *given) or (mean is None) != (var is None):
        return reference("batch_norm_forward")(x, weight, bias, eps, mean, var)
    xp = _xp(x)
    x = xp.ascontiguousarray(x)
    weight, bias = xp.ascontiguousarray(weight), xp.ascontiguousarray(bias)
    n, c, length = x.shape
    dtype = x.dtype
    if mean is None:
        mean = xp.empty(c, dtype=dtype)
        var = xp.empty(c, dtype=dtype)
        SOURCE.launch_blocks("batch_norm_stats", dtype, c, (x, mean, var, i64(n), i64(c), i64(length)))
    else:
        mean, var = xp.ascontiguousarray(mean), xp.ascontiguousarray(var)
    scale = xp.empty(c, dtype=dtype)
    SOURCE.launch("batch_norm_scale", dtype, c, (weight, var, scale, i64(c), real(eps, "float64")))
    y = xp.empty_like(x)
    SOURCE.launch("batch_norm_apply", dtype, x.size, (x, mean, scale, bias, y, i64(c), i64(length),
                                                      i64(x.size)))
    return y, mean, var


def batch_norm_backward(grad_out, x, weight, mean, inv_std, training):
    """Same contract as the reference: -> (grad_x (N, C, L), grad_weight (C,), grad_bias (C,))."""
    if not _same_dtype(x.dtype, grad_out, weight, mean, inv_std):
        return reference("batch_norm_backward")(grad_out, x, weight, mean, inv_std, training)
    xp = _xp(x)
    grad_out, x = xp.ascontiguousarray(grad_out), xp.ascontiguousarray(x)
    weight, mean, inv_std = (xp.ascontiguousarray(a) for a in (weight, mean, inv_std))
    n, c, length = x.shape
    dtype = x.dtype
    grad_x = xp.empty_like(x)
    grad_weight = xp.empty(c, dtype=dtype)
    grad_bias = xp.empty(c, dtype=dtype)
    SOURCE.launch_blocks("batch_norm_backward", dtype, c, (
        grad_out, x, weight, mean, inv_std, grad_x, grad_weight, grad_bias, i64(n), i64(c), i64(length),
        i32(bool(training))))
    return grad_x, grad_weight, grad_bias


def lrn_forward(x, size, alpha, beta, k):
    """Same contract as the reference: x (N, C, L) -> (y, scale), both (N, C, L)."""
    if not supported_dtype(x.dtype):
        return reference("lrn_forward")(x, size, alpha, beta, k)
    xp = _xp(x)
    x = xp.ascontiguousarray(x)
    n, c, length = x.shape
    dtype = x.dtype
    y = xp.empty_like(x)
    scale = xp.empty_like(x)
    SOURCE.launch("lrn_forward", dtype, x.size, (
        x, y, scale, i64(c), i64(length), i64(x.size), i64(size // 2), i64((size - 1) // 2),
        real(alpha / size, dtype), real(k, dtype), real(-beta, dtype)))
    return y, scale


def lrn_backward(grad_out, x, scale, size, alpha, beta):
    """Same contract as the reference: grad_out, x, scale (N, C, L) -> grad_x (N, C, L)."""
    if not _same_dtype(x.dtype, grad_out, scale):
        return reference("lrn_backward")(grad_out, x, scale, size, alpha, beta)
    xp = _xp(x)
    grad_out, x, scale = (xp.ascontiguousarray(a) for a in (grad_out, x, scale))
    n, c, length = x.shape
    dtype = x.dtype
    grad_x = xp.empty_like(x)
    SOURCE.launch("lrn_backward", dtype, x.size, (
        grad_out, x, scale, grad_x, i64(c), i64(length), i64(x.size), i64((size - 1) // 2), i64(size // 2),
        real(-beta, dtype), real(2.0 * alpha * beta / size, dtype)))
    return grad_x


KERNELS = {
    "batch_norm_forward": batch_norm_forward,
    "batch_norm_backward": batch_norm_backward,
    "lrn_forward": lrn_forward,
    "lrn_backward": lrn_backward,
}
