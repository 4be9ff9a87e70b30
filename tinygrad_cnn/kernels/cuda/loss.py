"""Fused softmax cross-entropy on the GPU (forward: one block per row; backward: elementwise).

Wrappers have the signatures of the NumPy references in
``tinygrad_cnn/nn/functional/loss.py``. Row reductions (max, sum of exponentials, the
label-smoothing sum) run in double whatever the logits' dtype, like the Numba kernels, so
float32 losses are as accurate as a float32 result can be.
"""
from __future__ import annotations

import numpy as np

from ._runtime import CudaSource, i64, real, reference, supported_dtype

__all__ = ["KERNELS", "SOURCE"]

SOURCE = CudaSource("loss", r"""
#define REDUCE_BLOCK 256

// Maximum over the block, NaN-propagating like numpy.max; same calling rules as block_sum.
__device__ double block_max(double value, double* shared) {
    shared[threadIdx.x] = value;
    __syncthreads();
    for (unsigned int half = blockDim.x / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) {
            double other = shared[threadIdx.x + half];
            double mine = shared[threadIdx.x];
            shared[threadIdx.x] = (other > mine || other != other) ? other : mine;
        }
        __syncthreads();
    }
    double result = shared[0];
    __syncthreads();
    return result;
}

// logits (rows, classes); target (rows,); class_weight (classes,) in double.
// loss_i = -(1 - eps) w_t log p_it - eps / C * sum_j w_j log p_ij (0 for ignored rows),
// logsumexp_i = log sum_j exp(logits_ij), kept in double for the backward pass.
extern "C" __global__ void softmax_cross_entropy_forward(const T* logits, const long long* target,
                                                         const double* class_weight, T* loss,
                                                         double* logsumexp, long long rows,
                                                         long long classes, long long ignore_index,
                                                         double label_smoothing) {
    __shared__ double shared[REDUCE_BLOCK];
    for (long long i = blockIdx.x; i < rows; i += gridDim.x) {
        const T* row = logits + i * classes;
        double row_max = -1.0 / 0.0;
        for (long long j = threadIdx.x; j < classes; j += blockDim.x) {
            double value = (double)row[j];
            row_max = (value > row_max || value != value) ? value : row_max;
        }
        row_max = block_max(row_max, shared);
        double total = 0.0;
        for (long long j = threadIdx.x; j < classes; j += blockDim.x) total += exp((double)row[j] - row_max);
        double log_norm = log(block_sum(total, shared));
        long long t = target[i];
        double value = 0.0;
        if (t != ignore_index) {
            double smooth = 0.0;
            if (label_smoothing != 0.0) {
                for (long long j = threadIdx.x; j < classes; j += blockDim.x)
                    smooth += class_weight[j] * (((double)row[j] - row_max) - log_norm);
                smooth = block_sum(smooth, shared);
            }
            if (t >= 0 && t < classes) {
                value = -(1.0 - label_smoothing) * class_weight[t] * (((double)row[t] - row_max) - log_norm)
                        - label_smoothing / (double)classes * smooth;
            } else {
                value = 0.0 / 0.0;  // out-of-range target: NaN rather than a wild read
            }
        }
        if (threadIdx.x == 0) {
            loss[i] = (T)value;
            logsumexp[i] = row_max + log_norm;
        }
    }
}

// grad_ij = row_grad_i * (s_i * p_ij - a_ij), a_ij = w_j ((1 - eps) [j == t_i] + eps / C),
// s_i = sum_j a_ij = (1 - eps) w_t + eps / C * weight_total; zero for ignored rows.
extern "C" __global__ void softmax_cross_entropy_backward(const T* logits, const double* logsumexp,
                                                          const long long* target,
                                                          const double* class_weight,
                                                          const double* weight_total, const T* row_grad,
                                                          T* grad, long long rows, long long classes,
                                                          long long ignore_index,
                                                          double label_smoothing) {
    GRID_STRIDE_LOOP(index, rows * classes) {
        long long i = index / classes;
        long long j = index % classes;
        long long t = target[i];
        double result = 0.0;
        if (t != ignore_index) {
            if (t >= 0 && t < classes) {
                double smoothing_per_class = label_smoothing / (double)classes;
                double hit = (1.0 - label_smoothing) * class_weight[t];
                double target_mass = hit + smoothing_per_class * weight_total[0];
                double prob = exp((double)logits[index] - logsumexp[i]);
                double a = smoothing_per_class * class_weight[j] + (j == t ? hit : 0.0);
                result = (double)row_grad[i] * (target_mass * prob - a);
            } else {
                result = 0.0 / 0.0;
            }
        }
        grad[index] = (T)result;
    }
}
""", ["softmax_cross_entropy_forward", "softmax_cross_entropy_backward"])


def _xp(array):
    from tinygrad_cnn.backend import get_array_module
    return get_array_module(array)


def softmax_cross_entropy_forward(logits, target, class_weight, ignore_index, label_smoothing):
    """Same contract as the reference: logits (M, C), target (M,) -> (loss (M,), logsumexp (M,))."""
    if not supported_dtype(logits.dtype):
        return reference("softmax_cross_entropy_forward")(logits, target, class_weight, ignore_index,
                                                          label_smoothing)
    xp = _xp(logits)
    logits = xp.ascontiguousarray(logits)
    rows, classes = logits.shape
    target = xp.ascontiguousarray(target, dtype=np.int64)
    weights = xp.ascontiguousarray(class_weight, dtype=np.float64)
    loss = xp.empty(rows, dtype=logits.dtype)
    logsumexp = xp.empty(rows, dtype=np.float64)  # float64 whatever the logits' dtype, as the reference
    SOURCE.launch_blocks("softmax_cross_entropy_forward", logits.dtype, rows, (
        logits, target, weights, loss, logsumexp, i64(rows), i64(classes), i64(ignore_index),
        real(label_smoothing, "float64")))
    return loss, logsumexp


def softmax_cross_entropy_backward(logits, logsumexp, target, class_weight, ignore_index, label_smoothing,
                                   row_grad):
    """Same contract as the reference: -> grad_logits (M, C)."""
    if not supported_dtype(logits.dtype):
        return reference("softmax_cross_entropy_backward")(logits, logsumexp, target, class_weight,
                                                           ignore_index, label_smoothing, row_grad)
    xp = _xp(logits)
    logits = xp.ascontiguousarray(logits)
    rows, classes = logits.shape
    dtype = logits.dtype
    target = xp.ascontiguousarray(target, dtype=np.int64)
    weights = xp.ascontiguousarray(class_weight, dtype=np.float64)
    # A one-element device array: reading it as a Python float would wait for the GPU.
    weight_total = weights.sum(keepdims=True).reshape(1)
    grad = xp.empty_like(logits)
    SOURCE.launch("softmax_cross_entropy_backward", dtype, logits.size, (
        logits, xp.ascontiguousarray(logsumexp, dtype=np.float64), target, weights, weight_total,
        xp.ascontiguousarray(row_grad, dtype=dtype), grad, i64(rows), i64(classes), i64(ignore_index),
        real(label_smoothing, "float64")))
    return grad


KERNELS = {
    "softmax_cross_entropy_forward": softmax_cross_entropy_forward,
    "softmax_cross_entropy_backward": softmax_cross_entropy_backward,
}
