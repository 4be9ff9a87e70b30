"""Fused optimizer updates on the GPU: one kernel launch per parameter, no temporaries.

Each wrapper has the signature of its NumPy reference in ``tinygrad_cnn/optim/*.py`` and
updates the same arrays in place. The arithmetic follows the reference step by step in the
element type ``T`` (hyperparameters are rounded to ``T`` in Python first, as NumPy does when a
Python float meets a float32 array), so results agree with the reference to rounding
(the GPU may fuse a multiply-add).
"""
from __future__ import annotations

import math

from ._runtime import CudaSource, i32, i64, real, reference, supported_dtype

__all__ = ["KERNELS", "SOURCE"]

SOURCE = CudaSource("optim", r"""
// Exponential moving average start <- start + weight * (end - start), evaluated from the
// end side when weight >= 0.5 (from_end = 1), exactly like the reference's _lerp_.
__device__ __forceinline__ T lerp_value(T start, T end, T weight, T one_minus_weight, int from_end) {
    return from_end ? end - one_minus_weight * (end - start) : start + weight * (end - start);
}

// SGD. use_momentum = 0: param -= lr * g. Otherwise the buffer is set to g on the first step,
// else buf = buf * momentum + (1 - dampening) * g, and the step uses buf or g + momentum * buf.
extern "C" __global__ void sgd_update(T* param, const T* grad, T* buf, long long n, T lr, T momentum,
                                      T one_minus_dampening, T weight_decay, int use_weight_decay,
                                      int use_momentum, int first_step, int nesterov) {
    GRID_STRIDE_LOOP(i, n) {
        T p = param[i];
        T g = grad[i];
        if (use_weight_decay) g = g + weight_decay * p;
        if (use_momentum) {
            T b;
            if (first_step) {
                b = g;
            } else {
                b = buf[i] * momentum;
                b = b + one_minus_dampening * g;
            }
            buf[i] = b;
            g = nesterov ? g + momentum * b : b;
        }
        param[i] = p - lr * g;
    }
}

// Adam / AdamW. weight_decay_mode: 0 none, 1 L2 (added to the gradient), 2 decoupled (AdamW).
extern "C" __global__ void adam_update(T* param, const T* grad, T* exp_avg, T* exp_avg_sq,
                                       T* max_exp_avg_sq, long long n, T weight_decay,
                                       T decoupled_factor, int weight_decay_mode, T beta1_weight,
                                       T one_minus_beta1_weight, int lerp_from_end, T beta2,
                                       T one_minus_beta2, T step_size, T sqrt_bias_correction2, T eps,
                                       int amsgrad) {
    GRID_STRIDE_LOOP(i, n) {
        T p = param[i];
        T g = grad[i];
        if (weight_decay_mode == 2) p = p * decoupled_factor;
        else if (weight_decay_mode == 1) g = g + weight_decay * p;
        T m = lerp_value(exp_avg[i], g, beta1_weight, one_minus_beta1_weight, lerp_from_end);
        T v = exp_avg_sq[i] * beta2;
        v = v + one_minus_beta2 * g * g;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        if (amsgrad) {
            T v_max = max_exp_avg_sq[i];
            // a NaN in either operand propagates, like numpy.maximum
            v_max = (v_max != v_max || v_max >= v) ? v_max : v;
            max_exp_avg_sq[i] = v_max;
            v = v_max;
        }
        T denom = sqrt(v) / sqrt_bias_correction2 + eps;
        param[i] = p - step_size * m / denom;
    }
}

extern "C" __global__ void adagrad_update(T* param, const T* grad, T* state_sum, long long n,
                                          T clr, T weight_decay, int use_weight_decay, T eps) {
    GRID_STRIDE_LOOP(i, n) {
        T p = param[i];
        T g = grad[i];
        if (use_weight_decay) g = g + weight_decay * p;
        T s = state_sum[i] + g * g;
        state_sum[i] = s;
        param[i] = p - clr * g / (sqrt(s) + eps);
    }
}

// RMSprop. grad_avg is read/written only when centered, momentum_buffer only when use_momentum.
extern "C" __global__ void rmsprop_update(T* param, const T* grad, T* square_avg, T* grad_avg,
                                          T* momentum_buffer, long long n, T lr, T alpha,
                                          T one_minus_alpha, T ga_weight, T ga_one_minus_weight,
                                          int ga_lerp_from_end, T eps, T weight_decay,
                                          int use_weight_decay, T momentum, int use_momentum,
                                          int centered) {
    GRID_STRIDE_LOOP(i, n) {
        T p = param[i];
        T g = grad[i];
        if (use_weight_decay) g = g + weight_decay * p;
        T v = square_avg[i] * alpha;
        v = v + one_minus_alpha * g * g;
        square_avg[i] = v;
        T avg;
        if (centered) {
            T m = lerp_value(grad_avg[i], g, ga_weight, ga_one_minus_weight, ga_lerp_from_end);
            grad_avg[i] = m;
            avg = sqrt(v - m * m);
        } else {
            avg = sqrt(v);
        }
        avg = avg + eps;
        if (use_momentum) {
            T b = momentum_buffer[i] * momentum;
            b = b + g / avg;
            momentum_buffer[i] = b;
            param[i] = p - lr * b;
        } else {
            param[i] = p - lr * g / avg;
        }
    }
}
""", ["sgd_update", "adam_update", "adagrad_update", "rmsprop_update"])


def _fusable(*arrays) -> bool:
    """All arrays given share one supported float dtype and shape and are C-contiguous."""
    first = arrays[0]
    return (supported_dtype(first.dtype)
            and all(a.dtype == first.dtype and a.shape == first.shape and a.flags.c_contiguous
                    for a in arrays))


def _lerp_weights(weight: float, dtype):
    """Scalars for lerp_value, mirroring the reference's choice of formula."""
    return real(weight, dtype), real(1 - weight, dtype), i32(weight >= 0.5)


def sgd_update(param, grad, momentum_buffer, *, lr, momentum, dampening, weight_decay, nesterov):
    """Fused SGD step, same contract as the reference ``sgd_update`` (returns the momentum buffer)."""
    buffers = [momentum_buffer] if (momentum != 0 and momentum_buffer is not None) else []
    if not _fusable(param, grad, *buffers):
        return reference("sgd_update")(param, grad, momentum_buffer, lr=lr, momentum=momentum,
                                       dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
    dtype = param.dtype
    first_step = momentum != 0 and momentum_buffer is None
    if first_step:
        momentum_buffer = _empty_like(param)
    buffer_arg = momentum_buffer if momentum != 0 else param  # placeholder, never read or written
    SOURCE.launch("sgd_update", dtype, param.size, (
        param, grad, buffer_arg, i64(param.size), real(lr, dtype), real(momentum, dtype),
        real(1 - dampening, dtype), real(weight_decay, dtype), i32(weight_decay != 0), i32(momentum != 0),
        i32(first_step), i32(bool(nesterov))))
    return momentum_buffer


def _empty_like(array):
    from tinygrad_cnn.backend import get_array_module
    return get_array_module(array).empty_like(array)


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2, eps,
                weight_decay, amsgrad, decoupled_weight_decay):
    """Fused Adam/AdamW step, same contract as the reference ``adam_update``."""
    buffers = [exp_avg, exp_avg_sq] + ([max_exp_avg_sq] if amsgrad else [])
    if not _fusable(param, grad, *buffers):
        return reference("adam_update")(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step=step, lr=lr,
                                        beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                                        amsgrad=amsgrad, decoupled_weight_decay=decoupled_weight_decay)
    dtype = param.dtype
    mode = 0 if weight_decay == 0 else (2 if decoupled_weight_decay else 1)
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    w1, one_minus_w1, from_end = _lerp_weights(1 - beta1, dtype)
    SOURCE.launch("adam_update", dtype, param.size, (
        param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq if amsgrad else exp_avg_sq, i64(param.size),
        real(weight_decay, dtype), real(1 - lr * weight_decay, dtype), i32(mode), w1, one_minus_w1, from_end,
        real(beta2, dtype), real(1 - beta2, dtype), real(lr / bias_correction1, dtype),
        real(math.sqrt(bias_correction2), dtype), real(eps, dtype), i32(bool(amsgrad))))


def adagrad_update(param, grad, state_sum, *, step, lr, lr_decay, weight_decay, eps):
    """Fused AdaGrad step, same contract as the reference ``adagrad_update``."""
    if not _fusable(param, grad, state_sum):
        return reference("adagrad_update")(param, grad, state_sum, step=step, lr=lr, lr_decay=lr_decay,
                                           weight_decay=weight_decay, eps=eps)
    dtype = param.dtype
    clr = lr / (1 + (step - 1) * lr_decay)
    SOURCE.launch("adagrad_update", dtype, param.size, (
        param, grad, state_sum, i64(param.size), real(clr, dtype), real(weight_decay, dtype),
        i32(weight_decay != 0), real(eps, dtype)))


def rmsprop_update(param, grad, square_avg, grad_avg, momentum_buffer, *, lr, alpha, eps, weight_decay,
                   momentum, centered):
    """Fused RMSprop step, same contract as the reference ``rmsprop_update``."""
    buffers = [square_avg] + ([grad_avg] if centered else []) + ([momentum_buffer] if momentum > 0 else [])
    if not _fusable(param, grad, *buffers):
        return reference("rmsprop_update")(param, grad, square_avg, grad_avg, momentum_buffer, lr=lr,
                                           alpha=alpha, eps=eps, weight_decay=weight_decay,
                                           momentum=momentum, centered=centered)
    dtype = param.dtype
    w, one_minus_w, from_end = _lerp_weights(1 - alpha, dtype)
    SOURCE.launch("rmsprop_update", dtype, param.size, (
        param, grad, square_avg, grad_avg if centered else square_avg,
        momentum_buffer if momentum > 0 else square_avg, i64(param.size), real(lr, dtype), real(alpha, dtype),
        real(1 - alpha, dtype), w, one_minus_w, from_end, real(eps, dtype), real(weight_decay, dtype),
        i32(weight_decay != 0), real(momentum, dtype), i32(momentum > 0), i32(bool(centered))))


KERNELS = {
    "sgd_update": sgd_update,
    "adam_update": adam_update,
    "adagrad_update": adagrad_update,
    "rmsprop_update": rmsprop_update,
}
