"""Numba kernels for the optimizer steps of SGD and Adam/AdamW (CPU).

Each function has the signature of the NumPy reference registered under the same name in
``tinygrad_cnn/optim`` and updates the same arrays in place with the same formulas. The
reference makes one pass over memory per array operation, and allocates a temporary for
each product (``lr * grad`` and the like); for AlexNet's 61 million parameters that is
about ten passes over 244 MB per step. Here every element is read and written once, on every
core. Arrays that are not C-contiguous or whose dtypes differ take the reference (one decision
by their layout). Scalars are given in the parameters' dtype, so float32 arithmetic is float32
as in the reference.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

__all__ = ["sgd_update", "adam_update", "KERNELS", "PARALLEL_MIN_ELEMENTS"]

# Starting the thread team costs more than updating a small parameter.
PARALLEL_MIN_ELEMENTS = 1 << 16


def _reference(name):
    from tinygrad_cnn import backend
    return backend.kernel(name, np, impl="numpy")


def _fusable(*arrays) -> bool:
    first = arrays[0]
    return (isinstance(first, np.ndarray) and first.dtype in (np.float32, np.float64)
            and all(isinstance(a, np.ndarray) and a.dtype == first.dtype and a.shape == first.shape
                    and a.flags.c_contiguous for a in arrays))


# ---------------------------------------------------------------------------
# SGD
# ---------------------------------------------------------------------------

@numba.njit(cache=True, inline="always")
def _sgd_element(param, grad, buf, lr, momentum, one_minus_dampening, weight_decay,
                 use_momentum, first_step, nesterov, i):
    p = param[i]
    g = grad[i]
    if weight_decay != 0:          # not "+ 0 * p", which would turn an infinite p into NaN
        g = g + weight_decay * p
    if use_momentum:
        if first_step:
            b = g
        else:
            b = buf[i] * momentum
            b = b + one_minus_dampening * g
        buf[i] = b
        g = g + momentum * b if nesterov else b
    param[i] = p - lr * g


@numba.njit(cache=True, parallel=True, nogil=True)
def _sgd_parallel(param, grad, buf, lr, momentum, one_minus_dampening, weight_decay,
                  use_momentum, first_step, nesterov):
    for i in prange(param.size):
        _sgd_element(param, grad, buf, lr, momentum, one_minus_dampening, weight_decay,
                     use_momentum, first_step, nesterov, i)


@numba.njit(cache=True, nogil=True)
def _sgd_serial(param, grad, buf, lr, momentum, one_minus_dampening, weight_decay,
                use_momentum, first_step, nesterov):
    for i in range(param.size):
        _sgd_element(param, grad, buf, lr, momentum, one_minus_dampening, weight_decay,
                     use_momentum, first_step, nesterov, i)


def sgd_update(param, grad, momentum_buffer, *, lr, momentum, dampening, weight_decay, nesterov):
    """Numba version of the ``sgd_update`` reference (same contract: returns the buffer)."""
    use_momentum = momentum != 0
    buffers = [momentum_buffer] if use_momentum and momentum_buffer is not None else []
    if not _fusable(param, grad, *buffers):
        return _reference("sgd_update")(param, grad, momentum_buffer, lr=lr, momentum=momentum,
                                        dampening=dampening, weight_decay=weight_decay,
                                        nesterov=nesterov)
    real = param.dtype.type
    first_step = use_momentum and momentum_buffer is None
    if first_step:
        momentum_buffer = np.empty_like(param)
    buf = momentum_buffer if use_momentum else param     # a placeholder, never touched
    run = _sgd_parallel if param.size >= PARALLEL_MIN_ELEMENTS else _sgd_serial
    run(param.reshape(-1), grad.reshape(-1), buf.reshape(-1), real(lr), real(momentum),
        real(1 - dampening), real(weight_decay), use_momentum, first_step, bool(nesterov))
    return momentum_buffer


# ---------------------------------------------------------------------------
# Adam / AdamW
# ---------------------------------------------------------------------------

@numba.njit(cache=True, inline="always")
def _adam_element(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, settings, weight_decay_mode,
                  lerp_from_end, amsgrad, i):
    (weight_decay, decoupled_factor, beta1_weight, one_minus_beta1_weight, beta2,
     one_minus_beta2, step_size, sqrt_bias_correction2, eps) = settings
    p = param[i]
    g = grad[i]
    if weight_decay_mode == 2:
        p = p * decoupled_factor
    elif weight_decay_mode == 1:
        g = g + weight_decay * p
    # The moving average m + w (g - m), from the g side for w >= 0.5 (as the reference's lerp).
    m = exp_avg[i]
    if lerp_from_end:
        m = g - one_minus_beta1_weight * (g - m)
    else:
        m = m + beta1_weight * (g - m)
    exp_avg[i] = m
    v = exp_avg_sq[i] * beta2
    v = v + one_minus_beta2 * g * g
    exp_avg_sq[i] = v
    if amsgrad:
        v = max(max_exp_avg_sq[i], v)
        max_exp_avg_sq[i] = v
    denom = math.sqrt(v) / sqrt_bias_correction2 + eps
    param[i] = p - step_size * m / denom


@numba.njit(cache=True, parallel=True, nogil=True)
def _adam_parallel(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, settings, weight_decay_mode,
                   lerp_from_end, amsgrad):
    for i in prange(param.size):
        _adam_element(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, settings,
                      weight_decay_mode, lerp_from_end, amsgrad, i)


@numba.njit(cache=True, nogil=True)
def _adam_serial(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, settings, weight_decay_mode,
                 lerp_from_end, amsgrad):
    for i in range(param.size):
        _adam_element(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, settings,
                      weight_decay_mode, lerp_from_end, amsgrad, i)


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2, eps,
                weight_decay, amsgrad, decoupled_weight_decay):
    """Numba version of the ``adam_update`` reference (same contract)."""
    buffers = [exp_avg, exp_avg_sq] + ([max_exp_avg_sq] if amsgrad else [])
    if not _fusable(param, grad, *buffers):
        return _reference("adam_update")(
            param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step=step, lr=lr, beta1=beta1,
            beta2=beta2, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
            decoupled_weight_decay=decoupled_weight_decay)
    real = param.dtype.type
    mode = 0 if weight_decay == 0 else (2 if decoupled_weight_decay else 1)
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    vmax = max_exp_avg_sq if amsgrad else exp_avg_sq        # a placeholder when not amsgrad
    settings = tuple(real(value) for value in (
        weight_decay, 1 - lr * weight_decay, 1 - beta1, 1 - (1 - beta1), beta2, 1 - beta2,
        lr / bias_correction1, math.sqrt(bias_correction2), eps))
    run = _adam_parallel if param.size >= PARALLEL_MIN_ELEMENTS else _adam_serial
    run(param.reshape(-1), grad.reshape(-1), exp_avg.reshape(-1), exp_avg_sq.reshape(-1),
        vmax.reshape(-1), settings, mode, (1 - beta1) >= 0.5, bool(amsgrad))


# The steps update their arguments in place, which the float16 wrapper of the other families
# cannot do (it converts copies): float16 parameters take the references (see _fusable).
KERNELS = {
    "sgd_update": sgd_update,
    "adam_update": adam_update,
}
