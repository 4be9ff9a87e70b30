"""BatchNorm (train and eval, forward and backward) and local response norm on the GPU.

Wrappers have the signatures of the NumPy references in
``tinygrad_cnn/nn/functional/normalization.py`` and follow their precision: per-channel
statistics and gradient sums are accumulated in double (in two stages: a block per group of
batch rows of a channel with a tree reduction in shared memory, then the groups of each channel
merged in a fixed order), the per-element arithmetic happens in the element type exactly where
the reference's does.
"""
from __future__ import annotations

from ._runtime import CudaSource, MAX_BLOCK, i32, i64, real, reference, supported_dtype

__all__ = ["KERNELS", "SOURCE"]

SOURCE = CudaSource("normalization", r"""
#define REDUCE_BLOCK 256

// BatchNorm reduces each channel over batch * length elements. One block per channel leaves
// most of a large GPU idle (16 channels on 132 multiprocessors), so the reductions run in two
// stages without atomics: each block reduces one *group* (a channel's rows first .. first+rows-1
// of the batch) and writes its partial result in double; a second kernel combines the groups of
// each channel in a fixed order, so the result does not depend on the grid size.
// x: (batch, channels, length); group g = channel * chunks + chunk covers the batch rows
// [chunk * rows_per_chunk, min(batch, (chunk + 1) * rows_per_chunk)).

// Batch rows in chunk k: rows_per_chunk, fewer in the last chunk.
__device__ long long group_rows(long long k, long long batch, long long rows_per_chunk) {
    long long left = batch - k * rows_per_chunk;
    return left < rows_per_chunk ? left : rows_per_chunk;
}

// Per group: its mean and the sum of squared deviations around that mean (two passes over the
// group, the second mostly from cache), both in double.
extern "C" __global__ void batch_norm_partial_stats(const T* x, double* partial_mean, double* partial_m2,
                                                    long long batch, long long channels, long long length,
                                                    long long rows_per_chunk, long long chunks) {
    __shared__ double shared[REDUCE_BLOCK];
    for (long long g = blockIdx.x; g < channels * chunks; g += gridDim.x) {
        long long c = g / chunks;
        long long first = (g % chunks) * rows_per_chunk;
        long long rows = group_rows(g % chunks, batch, rows_per_chunk);
        double sum = 0.0;
        for (long long n = first; n < first + rows; ++n) {
            const T* row = x + (n * channels + c) * length;
            for (long long l = threadIdx.x; l < length; l += blockDim.x) sum += (double)row[l];
        }
        double mean = block_sum(sum, shared) / (double)(rows * length);
        double squares = 0.0;
        for (long long n = first; n < first + rows; ++n) {
            const T* row = x + (n * channels + c) * length;
            for (long long l = threadIdx.x; l < length; l += blockDim.x) {
                double centred = (double)row[l] - mean;
                squares += centred * centred;
            }
        }
        squares = block_sum(squares, shared);
        if (threadIdx.x == 0) {
            partial_mean[g] = mean;
            partial_m2[g] = squares;
        }
    }
}

// Per channel: the groups' (count, mean, m2) merged in chunk order (Chan et al.'s pairwise
// update: the variance never subtracts two large sums), then mean and biased variance.
extern "C" __global__ void batch_norm_combine_stats(const double* partial_mean, const double* partial_m2,
                                                    T* mean_out, T* var_out, long long batch,
                                                    long long channels, long long length,
                                                    long long rows_per_chunk, long long chunks) {
    GRID_STRIDE_LOOP(c, channels) {
        double count = 0.0, mean = 0.0, m2 = 0.0;
        for (long long k = 0; k < chunks; ++k) {
            double group_count = (double)(group_rows(k, batch, rows_per_chunk) * length);
            double group_mean = partial_mean[c * chunks + k];
            double delta = group_mean - mean;
            double total = count + group_count;
            mean += delta * (group_count / total);
            m2 += partial_m2[c * chunks + k] + delta * delta * (count * group_count / total);
            count = total;
        }
        mean_out[c] = (T)mean;
        var_out[c] = (T)(m2 / count);
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

// Per group: sum of g and sum of g * xhat (double), xhat = (x - mean) * inv_std.
extern "C" __global__ void batch_norm_partial_grad_sums(const T* grad_out, const T* x, const T* mean,
                                                        const T* inv_std, double* partial_g,
                                                        double* partial_g_xhat, long long batch,
                                                        long long channels, long long length,
                                                        long long rows_per_chunk, long long chunks) {
    __shared__ double shared[REDUCE_BLOCK];
    for (long long g = blockIdx.x; g < channels * chunks; g += gridDim.x) {
        long long c = g / chunks;
        long long first = (g % chunks) * rows_per_chunk;
        long long rows = group_rows(g % chunks, batch, rows_per_chunk);
        double m = (double)mean[c];
        double s = (double)inv_std[c];
        double sum_g = 0.0;
        double sum_g_xhat = 0.0;
        for (long long n = first; n < first + rows; ++n) {
            long long offset = (n * channels + c) * length;
            for (long long l = threadIdx.x; l < length; l += blockDim.x) {
                double g_value = (double)grad_out[offset + l];
                sum_g += g_value;
                sum_g_xhat += g_value * (((double)x[offset + l] - m) * s);
            }
        }
        sum_g = block_sum(sum_g, shared);
        sum_g_xhat = block_sum(sum_g_xhat, shared);
        if (threadIdx.x == 0) {
            partial_g[g] = sum_g;
            partial_g_xhat[g] = sum_g_xhat;
        }
    }
}

// Per channel: the groups' sums added in chunk order; kept in double in sums (channels x 2) for
// batch_norm_grad_input, rounded into grad_weight and grad_bias.
extern "C" __global__ void batch_norm_combine_grad_sums(const double* partial_g, const double* partial_g_xhat,
                                                        double* sums, T* grad_weight, T* grad_bias,
                                                        long long channels, long long chunks) {
    GRID_STRIDE_LOOP(c, channels) {
        double sum_g = 0.0;
        double sum_g_xhat = 0.0;
        for (long long k = 0; k < chunks; ++k) {
            sum_g += partial_g[c * chunks + k];
            sum_g_xhat += partial_g_xhat[c * chunks + k];
        }
        sums[2 * c] = sum_g;
        sums[2 * c + 1] = sum_g_xhat;
        grad_weight[c] = (T)sum_g_xhat;
        grad_bias[c] = (T)sum_g;
    }
}

// grad_x = weight * inv_std / count * (count * g - sum_g - xhat * sum_g_xhat) in training,
// g * weight * inv_std with fixed statistics (eval).
extern "C" __global__ void batch_norm_grad_input(const T* grad_out, const T* x, const T* weight,
                                                 const T* mean, const T* inv_std, const double* sums,
                                                 T* grad_x, long long batch, long long channels,
                                                 long long length, int training) {
    long long count = batch * length;
    T count_in_t = (T)count;
    GRID_STRIDE_LOOP(i, batch * channels * length) {
        long long c = (i / length) % channels;
        double s = (double)inv_std[c];
        double gain = (double)weight[c] * s;
        T g = grad_out[i];
        if (training) {
            double xhat = ((double)x[i] - (double)mean[c]) * s;
            grad_x[i] = (T)(gain / (double)count * ((double)(count_in_t * g) - sums[2 * c]
                                                     - xhat * sums[2 * c + 1]));
        } else {
            grad_x[i] = (T)((double)g * gain);
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
""", ["batch_norm_partial_stats", "batch_norm_combine_stats", "batch_norm_scale", "batch_norm_apply",
      "batch_norm_partial_grad_sums", "batch_norm_combine_grad_sums", "batch_norm_grad_input", "lrn_forward",
      "lrn_backward"])

# The shared-memory arrays above hold REDUCE_BLOCK doubles.
assert MAX_BLOCK <= 256


def _xp(array):
    from tinygrad_cnn.backend import get_array_module
    return get_array_module(array)


# About this many groups (blocks) per reduction keep every multiprocessor of a large GPU busy;
# tests lower it to split even tiny batches into one group per row.
TARGET_GROUPS = 1024


def _groups(batch: int, channels: int) -> tuple[int, int]:
    """``(rows_per_chunk, chunks)``: how each channel's batch rows are split into groups."""
    chunks = max(1, min(batch, -(-TARGET_GROUPS // max(channels, 1))))
    rows_per_chunk = -(-batch // chunks) if batch else 1
    return rows_per_chunk, (-(-batch // rows_per_chunk) if batch else 1)


def _block_for(length: int) -> int:
    """Threads per group: the spatial length rounded up to a power of two, 32 to MAX_BLOCK."""
    block = 32
    while block < min(length, MAX_BLOCK):
        block *= 2
    return block


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
        rows_per_chunk, chunks = _groups(n, c)
        partial_mean = xp.empty(c * chunks, dtype=xp.float64)
        partial_m2 = xp.empty(c * chunks, dtype=xp.float64)
        geometry = (i64(n), i64(c), i64(length), i64(rows_per_chunk), i64(chunks))
        SOURCE.launch_blocks("batch_norm_partial_stats", dtype, c * chunks, (x, partial_mean, partial_m2) + geometry,
                             block=_block_for(length))
        SOURCE.launch("batch_norm_combine_stats", dtype, c, (partial_mean, partial_m2, mean, var) + geometry)
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
    if x.size == 0:
        grad_weight[...] = 0
        grad_bias[...] = 0
        return grad_x, grad_weight, grad_bias
    rows_per_chunk, chunks = _groups(n, c)
    partial_g = xp.empty(c * chunks, dtype=xp.float64)
    partial_g_xhat = xp.empty(c * chunks, dtype=xp.float64)
    sums = xp.empty(2 * c, dtype=xp.float64)
    SOURCE.launch_blocks("batch_norm_partial_grad_sums", dtype, c * chunks, (
        grad_out, x, mean, inv_std, partial_g, partial_g_xhat, i64(n), i64(c), i64(length), i64(rows_per_chunk),
        i64(chunks)), block=_block_for(length))
    SOURCE.launch("batch_norm_combine_grad_sums", dtype, c, (
        partial_g, partial_g_xhat, sums, grad_weight, grad_bias, i64(c), i64(chunks)))
    SOURCE.launch("batch_norm_grad_input", dtype, x.size, (
        grad_out, x, weight, mean, inv_std, sums, grad_x, i64(n), i64(c), i64(length), i32(bool(training))))
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


def batch_norm_relu_forward(x, weight, bias, eps, residual=None, mean=None, var=None):
    """The reference's contract, as ``batch_norm_forward`` followed by the sum and ReLU in
    elementwise array ops (two more passes; a fused GPU kernel is not written yet)."""
    y, mean, var = batch_norm_forward(x, weight, bias, eps, mean, var)
    xp = _xp(y)
    if residual is not None:
        y += residual
    return xp.where(y <= 0, y.dtype.type(0), y), mean, var


def batch_norm_relu_backward(grad_out, y, x, weight, mean, inv_std, training, residual_grad):
    """The reference's contract: the ReLU mask applied in one array op, then ``batch_norm_backward``."""
    xp = _xp(grad_out)
    g_sum = xp.where(y > 0, grad_out, grad_out.dtype.type(0))
    grad_x, grad_weight, grad_bias = batch_norm_backward(g_sum, x, weight, mean, inv_std, training)
    return grad_x, grad_weight, grad_bias, (g_sum if residual_grad else None)


KERNELS = {
    "batch_norm_forward": batch_norm_forward,
    "batch_norm_backward": batch_norm_backward,
    "batch_norm_relu_forward": batch_norm_relu_forward,
    "batch_norm_relu_backward": batch_norm_relu_backward,
    "lrn_forward": lrn_forward,
    "lrn_backward": lrn_backward,
}
