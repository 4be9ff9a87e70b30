"""Normalisation layers as functions: BatchNorm, local response norm, LayerNorm, GroupNorm.

``batch_norm`` and ``local_response_norm`` are fused ops: their forward and first-order backward
run one hand-written kernel each (chosen by :mod:`tinygrad_cnn.backend`; the NumPy references
below define the kernels' signatures). Their ``backward`` is the gradient formula in Tensor ops
(so second derivatives are exact); the first-order ``fast_backward`` that the engine calls when
no graph is recorded is the backward kernel. ``layer_norm`` and ``group_norm`` are compositions
of Tensor ops. The derivations are in ``docs/ops/normalization.md``.

Where the kernels live: the NumPy references below; Numba in
``tinygrad_cnn/kernels/cpu/normalization.py``; CUDA in ``tinygrad_cnn/kernels/cuda/normalization.py``.
"""
from __future__ import annotations

import numbers

import numpy as np

from ... import backend
from ..._arguments import check_tensor, is_int
from ...autograd import Function
from ...backend import get_array_module

__all__ = ["batch_norm", "batch_norm_relu", "local_response_norm", "layer_norm", "group_norm"]


def _tensor_class():
    from ...tensor import Tensor
    return Tensor


def _wrap(array):
    """A constant Tensor around ``array`` (no copy)."""
    return _tensor_class()._wrap(array, requires_grad=False)


def _shape(t):
    return tuple(t.shape)


# ---------------------------------------------------------------------------
# NumPy references (they also run on CuPy arrays: everything goes through ``xp``)
# ---------------------------------------------------------------------------

@backend.register_reference("batch_norm_forward")
def _batch_norm_forward_reference(x, weight, bias, eps, mean=None, var=None):
    """BatchNorm forward on arrays.

    x: (N, C, L) (``L = H * W``; 1 for ``(N, C)`` input); weight, bias: (C,) in x's dtype.
    mean, var: (C,) statistics to normalise with (eval mode: the running statistics), or both
    None (training mode: the batch mean and the *biased* batch variance over the N * L values of
    each channel).
    Returns ``(y, mean, var)``: y (N, C, L) in x's dtype and the (C,) statistics that were used.

        y = (x - mean) / sqrt(var + eps) * weight + bias
    """
    xp = get_array_module(x)
    if mean is None:
        mean64 = x.mean(axis=(0, 2), dtype=xp.float64)
        centred = x - mean64[None, :, None]
        var = (centred * centred).mean(axis=(0, 2)).astype(x.dtype)
        mean = mean64.astype(x.dtype)
    inv_std = 1.0 / xp.sqrt(var.astype(xp.float64) + eps)
    scale = (weight * inv_std).astype(x.dtype)
    y = (x - mean[None, :, None]) * scale[None, :, None] + bias[None, :, None]
    return y.astype(x.dtype, copy=False), mean, var


@backend.register_reference("batch_norm_backward")
def _batch_norm_backward_reference(grad_out, x, weight, mean, inv_std, training):
    """BatchNorm backward on arrays.

    grad_out, x: (N, C, L); weight, mean, inv_std: (C,) with ``inv_std = 1 / sqrt(var + eps)``.
    training: True when mean and inv_std are the batch statistics of x (they then depend on x);
    False when they are constants (eval mode, running statistics).
    Returns ``(grad_x (N, C, L), grad_weight (C,), grad_bias (C,))``.

    With ``xhat = (x - mean) * inv_std``, ``g = grad_out`` and M = N * L values per channel:

        grad_bias   = sum(g)
        grad_weight = sum(g * xhat)
        grad_x      = weight * inv_std / M * (M * g - sum(g) - xhat * sum(g * xhat))   (training)
        grad_x      = weight * inv_std * g                                               (eval)
    """
    xp = get_array_module(x)
    xhat = (x - mean[None, :, None].astype(xp.float64)) * inv_std[None, :, None]
    sum_g = grad_out.sum(axis=(0, 2), dtype=xp.float64)
    sum_g_xhat = (grad_out * xhat).sum(axis=(0, 2))
    gain = weight.astype(xp.float64) * inv_std
    if training:
        count = x.shape[0] * x.shape[2]
        grad_x = (gain / count)[None, :, None] * (
            count * grad_out - sum_g[None, :, None] - xhat * sum_g_xhat[None, :, None])
    else:
        grad_x = grad_out * gain[None, :, None]
    dtype = x.dtype
    return grad_x.astype(dtype), sum_g_xhat.astype(dtype), sum_g.astype(dtype)


@backend.register_reference("batch_norm_relu_forward")
def _batch_norm_relu_forward_reference(x, weight, bias, eps, residual=None, mean=None, var=None):
    """BatchNorm, an optional residual sum and ReLU on arrays: ``relu(batch_norm(x) + residual)``.

    x, residual: (N, C, L) (residual may be None); the other arguments and the returned
    ``(y, mean, var)`` as in ``batch_norm_forward``. ReLU keeps NaN (as ``relu``)."""
    xp = get_array_module(x)
    y, mean, var = _batch_norm_forward_reference(x, weight, bias, eps, mean, var)
    if residual is not None:
        y = y + residual
    return xp.where(y <= 0, y.dtype.type(0), y), mean, var


@backend.register_reference("batch_norm_relu_backward")
def _batch_norm_relu_backward_reference(grad_out, y, x, weight, mean, inv_std, training,
                                        residual_grad):
    """Gradients of ``y = relu(batch_norm(x) + residual)`` given ``y`` itself.

    ``y > 0`` exactly where the sum before ReLU is > 0, so the gradient reaching the sum is
    ``g_sum = grad_out * [y > 0]``; it is the residual's gradient and goes on through BatchNorm
    (``batch_norm_backward``). Returns ``(grad_x, grad_weight, grad_bias, g_sum)``, ``g_sum``
    None unless ``residual_grad``."""
    xp = get_array_module(x)
    g_sum = xp.where(y > 0, grad_out, grad_out.dtype.type(0))
    grad_x, grad_weight, grad_bias = _batch_norm_backward_reference(g_sum, x, weight, mean,
                                                                    inv_std, training)
    return grad_x, grad_weight, grad_bias, (g_sum if residual_grad else None)


def _channel_window_sum_array(a, before, after):
    """out[:, c] = a[:, c - before] + ... + a[:, c + after], zero outside 0..C-1. a: (N, C, ...)."""
    xp = get_array_module(a)
    channels = a.shape[1]
    padded = xp.zeros((a.shape[0], channels + before + after) + tuple(a.shape[2:]), a.dtype)
    padded[:, before:before + channels] = a
    out = padded[:, 0:channels].copy()
    for offset in range(1, before + after + 1):
        out += padded[:, offset:offset + channels]
    return out


@backend.register_reference("lrn_forward")
def _lrn_forward_reference(x, size, alpha, beta, k):
    """Local response normalisation across channels, forward, on arrays.

    x: (N, C, L). Returns ``(y, scale)``, both (N, C, L):

        scale[n, c] = k + alpha / size * sum_{j = c - size//2}^{c + (size-1)//2} x[n, j]^2
        y = x * scale ** -beta

    (channels outside 0..C-1 count as zeros, the divisor is always ``size``: PyTorch's
    semantics). ``scale`` is kept for the backward pass.
    """
    scale = k + (alpha / size) * _channel_window_sum_array(x * x, size // 2, (size - 1) // 2)
    return (x * scale ** -beta).astype(x.dtype, copy=False), scale.astype(x.dtype, copy=False)


@backend.register_reference("lrn_backward")
def _lrn_backward_reference(grad_out, x, scale, size, alpha, beta):
    """Local response normalisation backward on arrays.

    grad_out, x, scale: (N, C, L) (``scale`` from ``lrn_forward``). Returns grad_x (N, C, L):

        grad_x[c] = g[c] * scale[c]^-beta
                    - 2 * alpha * beta / size * x[c] * sum_{j = c - (size-1)//2}^{c + size//2}
                                                        g[j] * x[j] * scale[j]^(-beta - 1)

    (x[c] enters the scale of every channel j whose window contains c; that is the window
    mirrored.)
    """
    power = scale ** -beta
    work = grad_out * x * power / scale
    mirrored = _channel_window_sum_array(work, (size - 1) // 2, size // 2)
    grad_x = grad_out * power - (2.0 * alpha * beta / size) * x * mirrored
    return grad_x.astype(x.dtype, copy=False)


# ---------------------------------------------------------------------------
# Argument checking
# ---------------------------------------------------------------------------

def _check_channel_vector(op, name, value, channels, input_shape):
    if value is None:
        return
    if _shape(value) != (channels,):
        raise ValueError(
            f"{op}: {name} must have shape (C,) = ({channels},) for input of shape "
            f"{input_shape} (C = input.shape[1]), got shape {_shape(value)}")
    if value.dtype.kind != "f":
        # Running statistics are updated in place with fractional momenta.
        raise TypeError(f"{op}: {name} must be a floating-point tensor, got dtype {value.dtype}")


def _check_float(op, input):
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: input must be a floating-point Tensor, got dtype {input.dtype}")


def _checked_input_shape(op, input, min_dims=0, expected=""):
    """The shape of ``input`` after checking it is a floating Tensor with >= min_dims dims."""
    check_tensor(op, "input", input)
    _check_float(op, input)
    shape = _shape(input)
    if len(shape) < min_dims:
        raise ValueError(f"{op}: input must have {expected}, got shape {shape}")
    return shape


# ---------------------------------------------------------------------------
# BatchNorm
# ---------------------------------------------------------------------------

def _as_ncl(array):
    xp = get_array_module(array)
    # The length is spelled out: reshape cannot infer -1 for an empty batch.
    length = int(np.prod(array.shape[2:], dtype=np.int64))
    return xp.ascontiguousarray(array.reshape(array.shape[0], array.shape[1], length))


def _channel_vector_or(value, fill, channels, dtype, xp):
    if value is None:
        return xp.full(channels, fill, dtype=dtype)
    return value.astype(dtype, copy=False)


def _sum_over_batch_and_space(t):
    """(N, C, L) Tensor -> (1, C, 1) sums, with ops every backend supports."""
    return t.sum(2, keepdim=True).sum(0, keepdim=True)


def _batch_norm_kernel_backward(grad_output, x, weight, mean, inv_std, training, needs):
    """The raw-array gradients of both BatchNorm Functions, by one ``batch_norm_backward`` kernel."""
    xp = get_array_module(grad_output)
    w = _channel_vector_or(weight.array if weight is not None else None, 1.0, x.shape[1], x.dtype, xp)
    grad_x, grad_weight, grad_bias = backend.kernel("batch_norm_backward", xp)(
        _as_ncl(grad_output), _as_ncl(x.array), w, mean, inv_std, training)
    return (grad_x.reshape(x.shape) if needs[0] else None,
            grad_weight if needs[1] else None,
            grad_bias if needs[2] else None)


def _batch_norm_train_grads(grad_output, x, weight, eps, needs):
    """BatchNorm's gradients with batch statistics, in Tensor ops: the statistics are recomputed
    from x, so the result is differentiable again. Returns ``(grad_x, grad_weight, grad_bias)``."""
    shape = _shape(x)
    n_batch, channels = shape[0], shape[1]
    x3 = x.reshape(n_batch, channels, -1)
    g3 = grad_output.reshape(n_batch, channels, -1)
    count = n_batch * x3.shape[2]
    mean = _sum_over_batch_and_space(x3) / count
    centred = x3 - mean
    var = _sum_over_batch_and_space(centred * centred) / count
    inv_std = (var + eps) ** -0.5
    xhat = centred * inv_std
    sum_g = _sum_over_batch_and_space(g3)
    sum_g_xhat = _sum_over_batch_and_space(g3 * xhat)
    grad_x = None
    if needs[0]:
        gain = inv_std if weight is None else inv_std * weight.reshape(1, channels, 1)
        grad_x = (gain / count * (g3 * count - sum_g - xhat * sum_g_xhat)).reshape(shape)
    return (grad_x,
            sum_g_xhat.reshape(channels) if needs[1] else None,
            sum_g.reshape(channels) if needs[2] else None)


def _batch_norm_eval_grads(grad_output, x, weight, mean, inv_std, needs):
    """BatchNorm's gradients with constant statistics (arrays ``mean``, ``inv_std``), in Tensor
    ops. Returns ``(grad_x, grad_weight, grad_bias)``."""
    shape = _shape(x)
    channels = shape[1]
    g3 = grad_output.reshape(shape[0], channels, -1)
    inv_std = _wrap(inv_std.reshape(1, channels, 1))
    xhat = (x.reshape(shape[0], channels, -1) - _wrap(mean.reshape(1, channels, 1))) * inv_std
    grad_x = None
    if needs[0]:
        gain = inv_std if weight is None else inv_std * weight.reshape(1, channels, 1)
        grad_x = (g3 * gain).reshape(shape)
    return (grad_x,
            _sum_over_batch_and_space(g3 * xhat).reshape(channels) if needs[1] else None,
            _sum_over_batch_and_space(g3).reshape(channels) if needs[2] else None)


def _update_running_stats(running_mean, running_var, mean, var, momentum, count):
    """``running = (1 - momentum) * running + momentum * batch`` with the unbiased variance.
    Running statistics are buffers, updated in place (views of them stay valid)."""
    if running_mean is not None:
        running_mean *= 1.0 - momentum
        running_mean += momentum * mean
    if running_var is not None:
        xp = get_array_module(var)
        running_var *= 1.0 - momentum
        running_var += momentum * (var.astype(xp.float64) * (count / (count - 1)))


class _BatchNormTrain(Function):
    """BatchNorm with batch statistics. Inputs: x (N, C, *), weight (C,) or None, bias (C,) or None."""

    def forward(self, x, weight, bias, *, eps, running_mean=None, running_var=None, momentum=0.1):
        xp = get_array_module(x)
        channels = x.shape[1]
        x3 = _as_ncl(x)
        count = x3.shape[0] * x3.shape[2]
        w = _channel_vector_or(weight, 1.0, channels, x.dtype, xp)
        b = _channel_vector_or(bias, 0.0, channels, x.dtype, xp)
        y, mean, var = backend.kernel("batch_norm_forward", xp)(x3, w, b, eps)
        _update_running_stats(running_mean, running_var, mean, var, momentum, count)
        self.eps = eps
        self.mean = mean
        self.inv_std = (1.0 / xp.sqrt(var.astype(xp.float64) + eps)).astype(x.dtype)
        self.save_for_backward(x, weight)
        return y.reshape(x.shape)

    def fast_backward(self, grad_output):
        x, weight = self.saved_tensors
        return _batch_norm_kernel_backward(grad_output, x, weight, self.mean, self.inv_std, True,
                                           self.needs_input_grad)

    def backward(self, grad_output):
        x, weight = self.saved_tensors
        return _batch_norm_train_grads(grad_output, x, weight, self.eps, self.needs_input_grad)


class _BatchNormEval(Function):
    """BatchNorm with given (constant) statistics. Inputs: x (N, C, *), weight, bias (C,) or None."""

    def forward(self, x, weight, bias, *, mean, var, eps):
        xp = get_array_module(x)
        channels = x.shape[1]
        w = _channel_vector_or(weight, 1.0, channels, x.dtype, xp)
        b = _channel_vector_or(bias, 0.0, channels, x.dtype, xp)
        mean = mean.astype(x.dtype, copy=False)   # a copy: later running-stat updates must not leak in
        var = var.astype(x.dtype)
        y, _, _ = backend.kernel("batch_norm_forward", xp)(_as_ncl(x), w, b, eps, mean, var)
        self.mean = mean
        self.inv_std = (1.0 / xp.sqrt(var.astype(xp.float64) + eps)).astype(x.dtype)
        self.save_for_backward(x, weight)
        return y.reshape(x.shape)

    def backward(self, grad_output):
        x, weight = self.saved_tensors
        return _batch_norm_eval_grads(grad_output, x, weight, self.mean, self.inv_std,
                                      self.needs_input_grad)

    def fast_backward(self, grad_output):
        x, weight = self.saved_tensors
        return _batch_norm_kernel_backward(grad_output, x, weight, self.mean, self.inv_std, False,
                                           self.needs_input_grad)


class _BatchNormReLU(Function):
    """``relu(batch_norm(x) + residual)`` as one op: one kernel forward, one backward.

    Inputs: x (N, C, *), weight, bias (C,) or None, residual (x's shape) or None. Options as
    ``_BatchNormTrain`` (``training=True``) or ``_BatchNormEval`` (``training=False``, with
    ``mean``/``var``). Unfused, the three ops make five passes over the activations forward
    (statistics, normalise, add, ReLU's read and write) and the ReLU mask costs one more pass
    backward; fused, the sum and the ReLU happen in BatchNorm's output pass, and the mask is
    read in BatchNorm's gradient passes. The output is kept for the mask (as ``Relu``)."""

    def forward(self, x, weight, bias, residual, *, training, eps, running_mean=None,
                running_var=None, momentum=0.1, mean=None, var=None):
        xp = get_array_module(x)
        channels = x.shape[1]
        x3 = _as_ncl(x)
        w = _channel_vector_or(weight, 1.0, channels, x.dtype, xp)
        b = _channel_vector_or(bias, 0.0, channels, x.dtype, xp)
        r3 = None if residual is None else _as_ncl(residual)
        if not training:
            mean, var = mean.astype(x.dtype), var.astype(x.dtype)   # copies: see _BatchNormEval
        y, mean, var = backend.kernel("batch_norm_relu_forward", xp)(x3, w, b, eps, r3, mean, var)
        if training:
            _update_running_stats(running_mean, running_var, mean, var, momentum,
                                  x3.shape[0] * x3.shape[2])
        self.training = training
        self.eps = eps
        self.mean = mean
        self.inv_std = (1.0 / xp.sqrt(var.astype(xp.float64) + eps)).astype(x.dtype)
        self.output = y.reshape(x.shape)
        self.save_for_backward(x, weight)
        return self.output

    def fast_backward(self, grad_output):
        x, weight = self.saved_tensors
        xp = get_array_module(grad_output)
        needs = self.needs_input_grad
        w = _channel_vector_or(weight.array if weight is not None else None, 1.0, x.shape[1],
                               x.dtype, xp)
        grad_x, grad_weight, grad_bias, grad_sum = backend.kernel("batch_norm_relu_backward", xp)(
            _as_ncl(grad_output), _as_ncl(self.output), _as_ncl(x.array), w, self.mean,
            self.inv_std, self.training, needs[3])
        return (grad_x.reshape(x.shape) if needs[0] else None,
                grad_weight if needs[1] else None,
                grad_bias if needs[2] else None,
                grad_sum.reshape(x.shape) if needs[3] else None)

    def backward(self, grad_output):
        x, weight = self.saved_tensors
        grad_sum = grad_output * (self.output > 0)        # the mask is a constant
        needs = self.needs_input_grad
        if self.training:
            grads = _batch_norm_train_grads(grad_sum, x, weight, self.eps, needs)
        else:
            grads = _batch_norm_eval_grads(grad_sum, x, weight, self.mean, self.inv_std, needs)
        return grads + ((grad_sum if needs[3] else None),)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch normalisation (PyTorch's ``torch.nn.functional.batch_norm``).

    Shapes: input (N, C), (N, C, L) or (N, C, H, W) (any (N, C, *)); running_mean,
    running_var, weight, bias: (C,) or None. Output: the shape of input.

    ``training=True``: normalise each channel with the mean and the *biased* variance of its
    N * L values in this batch; if given, the running statistics are updated in place,
    ``running = (1 - momentum) * running + momentum * batch``, with the *unbiased* batch variance
    (``var * M / (M - 1)``, M = N * L). ``training=False``: normalise with running_mean and
    running_var (required), which are left untouched.

        y = (x - mean) / sqrt(var + eps) * weight + bias

    Backward (training), with ``xhat = (x - mean) / sqrt(var + eps)``:
    ``dx = weight / sqrt(var + eps) / M * (M * g - sum(g) - xhat * sum(g * xhat))``,
    ``dweight = sum(g * xhat)``, ``dbias = sum(g)`` (sums over N and L).
    In eval mode ``dx = weight / sqrt(running_var + eps) * g``. The running statistics get no
    gradient. ``momentum=None`` (a cumulative average) needs the number of batches seen, which
    only the BatchNorm module knows: it passes ``momentum = 1 / num_batches_tracked`` here.
    """
    return _batch_norm("batch_norm", input, running_mean, running_var, weight, bias, training,
                       momentum, eps)


def batch_norm_relu(input, running_mean, running_var, weight=None, bias=None, training=False,
                    momentum=0.1, eps=1e-5, residual=None):
    """``relu(batch_norm(input, ...) + residual)`` in one fused op (not a PyTorch function).

    Arguments as :func:`batch_norm`, plus ``residual``: None or a Tensor of ``input``'s shape
    and dtype, added after the normalisation and before the ReLU (the end of a residual block).
    Same values and gradients as the three ops, in fewer passes over memory: the sum and
    the ReLU happen in BatchNorm's output pass, and the backward reads the ReLU mask (from
    the output) inside BatchNorm's gradient passes. Backward, with ``g_sum = g * [out > 0]``:
    the residual gets ``g_sum`` and BatchNorm's backward runs on ``g_sum``.
    The models of ``tinygrad_cnn.models`` call it through ``batch_norm_relu_of_modules``."""
    return _batch_norm("batch_norm_relu", input, running_mean, running_var, weight, bias,
                       training, momentum, eps, residual=residual, relu=True)


def _batch_norm(op, input, running_mean, running_var, weight, bias, training, momentum, eps,
                residual=None, relu=False):
    """Checks, then the BatchNorm Function (or the fused BatchNorm-ReLU one when ``relu``)."""
    shape = _checked_input_shape(op, input, 2, "shape (N, C) or (N, C, *)")
    channels = shape[1]
    for name, value in (("running_mean", running_mean), ("running_var", running_var),
                        ("weight", weight), ("bias", bias)):
        check_tensor(op, name, value, optional=True)
        _check_channel_vector(op, name, value, channels, shape)
    if residual is not None:
        check_tensor(op, "residual", residual)
        if _shape(residual) != shape or residual.dtype != input.dtype:
            raise ValueError(f"{op}: residual must have the input's shape {shape} and dtype "
                             f"{input.dtype}, got shape {_shape(residual)}, dtype {residual.dtype}")
    if not isinstance(eps, numbers.Real) or not eps >= 0:
        raise ValueError(f"{op}: eps must be a number >= 0, got {eps!r}")
    if training and eps == 0:
        # A channel with constant values has variance 0: eps is all that keeps 1/sqrt(var + eps)
        # finite. PyTorch refuses it too.
        raise ValueError(f"{op}: eps must be > 0 when training, got {eps!r}")
    if training:
        if momentum is None:
            raise ValueError(
                f"{op}: momentum=None (cumulative moving average) is handled by the BatchNorm "
                "module, which passes momentum = 1 / num_batches_tracked; pass a number here")
        if not isinstance(momentum, numbers.Real):
            raise TypeError(f"{op}: momentum must be a number, got {type(momentum).__name__}")
        values_per_channel = int(np.prod(shape)) // channels if channels else 0
        if values_per_channel == 0:
            # PyTorch's rule for an empty batch: an empty result, the running statistics kept,
            # zero gradients for weight and bias.
            return _relu_of_sum(_affine_of_empty(input, weight, bias), residual, relu)
        if values_per_channel == 1:
            raise ValueError(
                f"{op}: expected more than 1 value per channel when training, got input of "
                f"shape {shape}")
        running = dict(running_mean=None if running_mean is None else running_mean.array,
                       running_var=None if running_var is None else running_var.array,
                       momentum=float(momentum))
        if relu:
            return _BatchNormReLU.apply(input, weight, bias, residual, training=True,
                                        eps=float(eps), **running)
        return _BatchNormTrain.apply(input, weight, bias, eps=float(eps), **running)
    if running_mean is None or running_var is None:
        missing = "running_mean" if running_mean is None else "running_var"
        raise ValueError(f"{op}: {missing} must be given when training=False (eval mode "
                         "normalises with the running statistics)")
    if relu:
        if input.numel() == 0:
            return _relu_of_sum(_BatchNormEval.apply(input, weight, bias, mean=running_mean.array,
                                                     var=running_var.array, eps=float(eps)),
                                residual, relu)
        return _BatchNormReLU.apply(input, weight, bias, residual, training=False, eps=float(eps),
                                    mean=running_mean.array, var=running_var.array)
    return _BatchNormEval.apply(input, weight, bias, mean=running_mean.array, var=running_var.array,
                                eps=float(eps))


def _relu_of_sum(out, residual, relu):
    """The unfused tail, for inputs without elements (no kernel runs on those)."""
    if residual is not None:
        out = out + residual
    return out.relu() if relu else out


def _affine_of_empty(input, weight, bias):
    """``input * weight + bias`` per channel for an input with no elements (still in the graph,
    so weight and bias get their zero gradients)."""
    view = (1, input.shape[1]) + (1,) * (input.ndim - 2)
    out = input
    if weight is not None:
        out = out * weight.reshape(view)
    if bias is not None:
        out = out + bias.reshape(view)
    return out


# ---------------------------------------------------------------------------
# Local response normalisation
# ---------------------------------------------------------------------------

class _ChannelWindowSum(Function):
    """out[:, c] = sum of in[:, c - before .. c + after] (zeros outside). Its adjoint is the same
    sum with ``before`` and ``after`` swapped, so it is differentiable any number of times."""

    def forward(self, a, *, before, after):
        self.before, self.after = before, after
        return _channel_window_sum_array(a, before, after)

    def backward(self, grad_output):
        return _ChannelWindowSum.apply(grad_output, before=self.after, after=self.before)


class _LocalResponseNorm(Function):
    def forward(self, x, *, size, alpha, beta, k):
        xp = get_array_module(x)
        y, scale = backend.kernel("lrn_forward", xp)(_as_ncl(x), size, alpha, beta, k)
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.scale = scale
        self.save_for_backward(x)
        return y.reshape(x.shape)

    def backward(self, grad_output):
        """The scale recomputed from x in Tensor ops, so this is differentiable again."""
        (x,) = self.saved_tensors
        size, alpha, beta = self.size, self.alpha, self.beta
        scale = self.k + (alpha / size) * _ChannelWindowSum.apply(
            x * x, before=size // 2, after=(size - 1) // 2)
        power = scale ** -beta
        work = grad_output * x * power / scale
        mirrored = _ChannelWindowSum.apply(work, before=(size - 1) // 2, after=size // 2)
        return grad_output * power - (2.0 * alpha * beta / size) * x * mirrored

    def fast_backward(self, grad_output):
        (x,) = self.saved_tensors
        grad_x = backend.kernel("lrn_backward", get_array_module(grad_output))(
            _as_ncl(grad_output), _as_ncl(x.array), self.scale, self.size, self.alpha, self.beta)
        return grad_x.reshape(x.shape)


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """Local response normalisation across channels (PyTorch's ``F.local_response_norm``).

    Shapes: input (N, C, *) with at least 3 dimensions; output: the same shape.

        b[n, c] = a[n, c] / (k + alpha / size * sum_{j in window(c)} a[n, j]^2) ** beta

    window(c) = c - size//2 .. c + (size-1)//2, channels outside 0..C-1 count as zeros, and the
    sum is divided by ``size`` even at the edges. (AlexNet's NORM1/NORM2 use size=5,
    alpha=1e-4, beta=0.75, k=2; note the original paper does not divide alpha by size.)

    Backward, with ``s`` the bracket above:
    ``da[c] = g[c] s[c]^-beta - 2 alpha beta / size * a[c] * sum_{j: c in window(j)} g[j] a[j] s[j]^(-beta-1)``.
    """
    op = "local_response_norm"
    _checked_input_shape(op, input, 3, "at least 3 dimensions (N, C, *)")
    if not is_int(size) or size < 1:
        raise ValueError(f"{op}: size must be an integer >= 1, got {size!r}")
    for name, value in (("alpha", alpha), ("beta", beta), ("k", k)):
        if not isinstance(value, numbers.Real):
            raise TypeError(f"{op}: {name} must be a number, got {type(value).__name__}")
    return _LocalResponseNorm.apply(input, size=int(size), alpha=float(alpha), beta=float(beta),
                                    k=float(k))


# ---------------------------------------------------------------------------
# LayerNorm and GroupNorm (compositions of Tensor ops)
# ---------------------------------------------------------------------------

def _normalize_last_axis(x2, eps):
    """Normalise the rows of a 2-D or 3-D Tensor over its last axis (biased variance)."""
    width = x2.shape[-1]
    mean = x2.sum(-1, keepdim=True) / width
    centred = x2 - mean
    var = (centred * centred).sum(-1, keepdim=True) / width
    return centred * (var + eps) ** -0.5


def checked_normalized_shape(op, normalized_shape) -> tuple:
    """``normalized_shape`` (an int or a sequence of ints >= 0) as a tuple, or a clear error:
    ``int()`` would silently turn 4.5 into 4."""
    dims = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) else normalized_shape
    try:
        dims = tuple(dims)
    except TypeError:
        raise TypeError(f"{op}: normalized_shape must be an int or a sequence of ints, "
                        f"got {normalized_shape!r}") from None
    if not all(is_int(d) and d >= 0 for d in dims):
        raise ValueError(f"{op}: normalized_shape must hold integers >= 0, got {normalized_shape!r}")
    return tuple(int(d) for d in dims)


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer normalisation over the trailing ``normalized_shape`` dims (PyTorch's ``F.layer_norm``).

    Shapes: input (*, *normalized_shape); weight, bias: normalized_shape or None; output: the
    shape of input. Each sample is normalised with its own mean and biased variance over the
    last ``len(normalized_shape)`` dimensions, then scaled by weight and shifted by bias.
    The backward is that of the composition of Tensor ops, i.e. per row of D values
    ``dx = inv_std / D * (D * g' - sum(g') - xhat * sum(g' * xhat))`` with ``g' = g * weight``.
    """
    op = "layer_norm"
    shape = _checked_input_shape(op, input)
    normalized_shape = checked_normalized_shape(op, normalized_shape)
    if len(normalized_shape) == 0 or len(shape) < len(normalized_shape) or \
            shape[len(shape) - len(normalized_shape):] != normalized_shape:
        raise ValueError(f"{op}: normalized_shape {normalized_shape} must be a non-empty suffix "
                         f"of the input shape {shape}")
    for name, value in (("weight", weight), ("bias", bias)):
        check_tensor(op, name, value, optional=True)
        if value is not None and _shape(value) != normalized_shape:
            raise ValueError(f"{op}: {name} must have shape normalized_shape = {normalized_shape}, "
                             f"got shape {_shape(value)}")
    width = int(np.prod(normalized_shape))
    out = _normalize_last_axis(input.reshape(-1, width), eps).reshape(shape)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalisation (PyTorch's ``F.group_norm``).

    Shapes: input (N, C, *) with C divisible by num_groups; weight, bias: (C,) or None; output:
    the shape of input. The C channels are split into ``num_groups`` groups and each (sample,
    group) is normalised with its own mean and biased variance; weight/bias act per channel.
    """
    op = "group_norm"
    shape = _checked_input_shape(op, input, 2, "shape (N, C, *)")
    channels = shape[1]
    if not is_int(num_groups) or \
            num_groups < 1 or channels % num_groups:
        raise ValueError(f"{op}: num_groups must be a positive divisor of the number of channels "
                         f"C = {channels}, got {num_groups!r}")
    for name, value in (("weight", weight), ("bias", bias)):
        check_tensor(op, name, value, optional=True)
        _check_channel_vector(op, name, value, channels, shape)
    n_batch = shape[0]
    group_size = int(np.prod(shape[1:], dtype=np.int64)) // int(num_groups)   # explicit: an empty batch
    out = _normalize_last_axis(input.reshape(n_batch, int(num_groups), group_size), eps).reshape(shape)
    affine_shape = (1, channels) + (1,) * (len(shape) - 2)
    if weight is not None:
        out = out * weight.reshape(affine_shape)
    if bias is not None:
        out = out + bias.reshape(affine_shape)
    return out
