"""Activation functions: ``relu``, ``leaky_relu``, ``sigmoid``, ``tanh``, ``gelu``, ``softmax``,
``log_softmax`` (PyTorch's names, signatures and semantics).

All are elementwise (input and output of any shape ``(*)``) except ``softmax`` and
``log_softmax``, which normalise along ``dim``. Every backward is written with Tensor
operations (masks are constants), so second derivatives work through all of them.

Where the kernels live: ReLU's ``relu_forward``/``relu_backward`` references are in
``tinygrad_cnn/ops.py`` and ``erf``'s below; their Numba versions in
``tinygrad_cnn/kernels/cpu/activation.py``; on the GPU the references run on CuPy arrays
(``REFERENCE_ONLY`` in ``tinygrad_cnn/kernels/cuda/__init__.py`` says why).
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from ... import backend
from ..._arguments import check_tensor
from ...autograd import Function, is_grad_enabled
from ...backend import get_array_module

__all__ = ["relu", "relu_", "leaky_relu", "leaky_relu_", "sigmoid", "tanh", "gelu", "softmax",
           "log_softmax", "erf"]

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _check_float(op, tensor):
    if tensor.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating-point input, got dtype {tensor.dtype} "
                        f"(shape {tensor.shape})")


def _in_place_allowed(tensor) -> bool:
    """In-place writes are only safe when no graph is being recorded.

    While grad mode is on, another op may have saved ``tensor`` for its backward (a conv saves
    its input even if only the weight needs a gradient), so overwriting it would silently
    corrupt gradients; the out-of-place result is returned instead.
    """
    return not is_grad_enabled()


# ---------------------------------------------------------------------------
# ReLU family
# ---------------------------------------------------------------------------

def relu(input, inplace=False):
    """max(input, 0), elementwise. ``input: (*)`` -> ``(*)``.

    Backward: ``dx = g * [x > 0]``; the derivative at exactly 0 is taken as 0 (as PyTorch).
    The mask ``[x > 0]`` is a constant, so the gradient is linear in ``g`` and differentiable.
    ``inplace=True`` overwrites ``input`` when no graph is being recorded (under ``no_grad``);
    otherwise a new tensor is returned (with the same values).
    """
    check_tensor("relu", "input", input)
    if inplace and _in_place_allowed(input):
        xp = get_array_module(input.array)
        xp.maximum(input.array, 0, out=input.array)
        input._bump_version()
        return input
    return input.relu()


def relu_(input):
    """In-place :func:`relu` (see its note on when the write really happens in place)."""
    return relu(input, inplace=True)


class _LeakyReLU(Function):
    """out = x if x > 0 else slope * x;  dx = g * (1 if x > 0 else slope).

    At x = 0 the derivative is ``slope`` (PyTorch's convention for leaky_relu).
    """

    def forward(self, x, *, negative_slope):
        xp = get_array_module(x)
        positive = x > 0
        self.slope_mask = xp.where(positive, x.dtype.type(1), x.dtype.type(negative_slope))
        return xp.where(positive, x, x * x.dtype.type(negative_slope))

    def backward(self, g):
        return g * self.slope_mask


def leaky_relu(input, negative_slope=0.01, inplace=False):
    """``input if input > 0 else negative_slope * input``. ``input: (*)`` -> ``(*)``.

    Backward: ``dx = g * (1 if x > 0 else negative_slope)`` (``negative_slope`` at 0).
    ``inplace`` behaves as in :func:`relu`.
    """
    check_tensor("leaky_relu", "input", input)
    _check_float("leaky_relu", input)
    if not isinstance(negative_slope, (int, float, np.floating)) or isinstance(negative_slope, bool):
        raise TypeError(f"leaky_relu: negative_slope must be a number, got {negative_slope!r}")
    if inplace and _in_place_allowed(input):
        xp = get_array_module(input.array)
        data = input.array
        data[...] = xp.where(data > 0, data, data * data.dtype.type(negative_slope))
        input._bump_version()
        return input
    return _LeakyReLU.apply(input, negative_slope=float(negative_slope))


def leaky_relu_(input, negative_slope=0.01):
    return leaky_relu(input, negative_slope, inplace=True)


def sigmoid(input):
    """1 / (1 + exp(-input)), overflow-free. ``(*)`` -> ``(*)``.  Backward: ``dx = g * s * (1 - s)``."""
    check_tensor("sigmoid", "input", input)
    return input.sigmoid()


def tanh(input):
    """Hyperbolic tangent. ``(*)`` -> ``(*)``.  Backward: ``dx = g * (1 - tanh(x)**2)``."""
    check_tensor("tanh", "input", input)
    return input.tanh()


# ---------------------------------------------------------------------------
# The error function and GELU
# ---------------------------------------------------------------------------
#
# NumPy has no erf. The reference below evaluates two Chebyshev expansions whose coefficients
# are computed once, at import, by interpolating the standard library's math.erf/math.erfc at
# Chebyshev points (21 evaluations each). erf is entire, so the expansions converge
# geometrically; degree 20 gives a relative error below 1e-14 in float64.
#
#   |x| <= 2      : erf(x)  = x * h(x**2),           h(t) = erf(sqrt t) / sqrt t  (smooth, even)
#   2 < |x| <= 6  : erfc(x) = exp(-x**2) * r(x),     r(x) = erfc(x) * exp(x**2)   (slowly varying)
#   |x| > 6       : erf(x)  = sign(x)                (erfc(6) = 2e-17 is below float64's resolution)

_ERF_DEGREE = 20
_ERF_SPLIT = 2.0
_ERF_SATURATE = 6.0


def _chebyshev_fit(fn, low, high, degree):
    nodes = np.cos(np.pi * (np.arange(degree + 1) + 0.5) / (degree + 1))
    values = np.array([fn(low + (high - low) * (t + 1.0) / 2.0) for t in nodes])
    return np.polynomial.chebyshev.chebfit(nodes, values, degree)


def _erf_over_root(t):
    if t == 0.0:
        return _TWO_OVER_SQRT_PI
    root = math.sqrt(t)
    return math.erf(root) / root


_ERF_SMALL_COEFFS = tuple(float(c) for c in _chebyshev_fit(
    _erf_over_root, 0.0, _ERF_SPLIT ** 2, _ERF_DEGREE))
_ERFC_SCALED_COEFFS = tuple(float(c) for c in _chebyshev_fit(
    lambda x: math.erfc(x) * math.exp(x * x), _ERF_SPLIT, _ERF_SATURATE, _ERF_DEGREE))


def _clenshaw(coeffs, u):
    """sum_k coeffs[k] * T_k(u) for u in [-1, 1], elementwise (works on NumPy and CuPy arrays)."""
    b1 = 0.0 * u
    b2 = 0.0 * u
    for c in coeffs[:0:-1]:
        b1, b2 = 2.0 * u * b1 - b2 + c, b1
    return u * b1 - b2 + coeffs[0]


@backend.register_reference("erf")
def erf_reference(x):
    """The error function, elementwise. ``x``: float array of any shape -> same shape and dtype.

    Accurate to about 1e-14 relative in float64 (see the comment above for the method).
    """
    xp = get_array_module(x)
    x64 = x.astype(np.float64, copy=False)
    ax = xp.abs(x64)
    t = xp.minimum(ax, _ERF_SPLIT) ** 2
    small = x64 * _clenshaw(_ERF_SMALL_COEFFS, t * (2.0 / _ERF_SPLIT ** 2) - 1.0)
    clipped = xp.clip(ax, _ERF_SPLIT, _ERF_SATURATE)
    half_width = (_ERF_SATURATE - _ERF_SPLIT) / 2.0
    erfc = xp.exp(-clipped * clipped) * _clenshaw(
        _ERFC_SCALED_COEFFS, (clipped - (_ERF_SPLIT + half_width)) / half_width)
    # NaN fails "ax <= split" and sign(NaN) = NaN, so NaN propagates.
    out = xp.where(ax <= _ERF_SPLIT, small, xp.sign(x64) * (1.0 - erfc))
    return out.astype(x.dtype, copy=False)


class _Erf(Function):
    """out = erf(x);  dx = g * 2/sqrt(pi) * exp(-x**2)."""

    def forward(self, x):
        self.save_for_backward(x)
        return backend.kernel("erf", get_array_module(x))(x)

    def backward(self, g):
        (x,) = self.saved_tensors
        return g * ((-(x * x)).exp() * _TWO_OVER_SQRT_PI)


def erf(input):
    """The error function as a differentiable op. ``(*)`` -> ``(*)``."""
    check_tensor("erf", "input", input)
    _check_float("erf", input)
    return _Erf.apply(input)


class _GELU(Function):
    """out = x * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2 the standard normal CDF.

    dx = g * (Phi(x) + x * phi(x)),  phi(x) = exp(-x**2 / 2) / sqrt(2 pi).
    Phi is recomputed in backward through the differentiable :class:`_Erf`, so the gradient
    can be differentiated again.
    """

    def forward(self, x):
        self.save_for_backward(x)
        xp = get_array_module(x)
        erf_kernel = backend.kernel("erf", xp)
        cdf = (erf_kernel(x * x.dtype.type(_SQRT1_2)) + 1) * x.dtype.type(0.5)
        return x * cdf

    def backward(self, g):
        (x,) = self.saved_tensors
        cdf = (_Erf.apply(x * _SQRT1_2) + 1.0) * 0.5
        pdf = (x * x * -0.5).exp() * _INV_SQRT_2PI
        return g * (cdf + x * pdf)


def gelu(input, approximate="none"):
    """Gaussian error linear unit. ``(*)`` -> ``(*)``.

    ``approximate="none"``: ``x * Phi(x)`` with the exact normal CDF (via erf);
    backward ``dx = g * (Phi(x) + x * phi(x))``.
    ``approximate="tanh"``: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x**3)))``, built from
    differentiable Tensor ops.
    """
    check_tensor("gelu", "input", input)
    _check_float("gelu", input)
    if approximate == "none":
        return _GELU.apply(input)
    if approximate == "tanh":
        inner = (input + input * input * input * 0.044715) * math.sqrt(2.0 / math.pi)
        return input * 0.5 * (inner.tanh() + 1.0)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


# ---------------------------------------------------------------------------
# softmax / log_softmax
# ---------------------------------------------------------------------------

def _softmax_dim(op, dim, ndim):
    if dim is None:
        # PyTorch's legacy choice when dim is omitted (it warns too).
        dim = 0 if ndim in (0, 1, 3) else 1
        warnings.warn(f"{op}: implicit dimension choice is deprecated; pass dim= explicitly "
                      f"(using dim={dim})", UserWarning, stacklevel=3)
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{op}: dim must be an int, got {dim!r}")
    rank = max(ndim, 1)
    if not -rank <= dim < rank:
        raise IndexError(f"{op}: dim {dim} is out of range for a tensor with {ndim} dimensions")
    return int(dim) % rank


def _prepare(op, input, dim, dtype):
    check_tensor(op, "input", input)
    if dtype is not None:
        input = input.to(np.dtype(dtype))
    _check_float(op, input)
    return input, _softmax_dim(op, dim, input.ndim)


def _log_normaliser(xp, x, axis):
    """max + log(sum(exp(x - max))) along ``axis`` (kept), with an all -inf slice giving -inf."""
    row_max = x.max(axis=axis, keepdims=True)
    row_max = xp.where(xp.isfinite(row_max), row_max, 0)
    return row_max, xp.log(xp.exp(x - row_max).sum(axis=axis, keepdims=True))


class _Softmax(Function):
    """y = exp(x - logsumexp(x));  dx = y * (g - sum(g * y, dim))."""

    def forward(self, x, *, dim):
        xp = get_array_module(x)
        axis = dim if x.ndim else None
        shifted = x - _log_normaliser(xp, x, axis)[0]
        e = xp.exp(shifted)
        y = e / e.sum(axis=axis, keepdims=True)
        self.dim = dim if x.ndim else None
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved_tensors
        if self.dim is None:
            return g * y * (1.0 - y)
        return y * (g - (g * y).sum(self.dim, keepdim=True))


class _LogSoftmax(Function):
    """y = x - logsumexp(x);  dx = g - exp(y) * sum(g, dim)."""

    def forward(self, x, *, dim):
        xp = get_array_module(x)
        axis = dim if x.ndim else None
        row_max, log_sum = _log_normaliser(xp, x, axis)
        y = (x - row_max) - log_sum
        self.dim = dim if x.ndim else None
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved_tensors
        if self.dim is None:
            return g - y.exp() * g
        return g - y.exp() * g.sum(self.dim, keepdim=True)


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    """exp(x) / sum(exp(x)) along ``dim``, computed as ``exp(x - max)`` (no overflow).

    ``input: (*)`` -> same shape, each slice along ``dim`` sums to 1. ``dtype`` casts the input
    first. Backward: ``dx = y * (g - sum(g * y, dim))``.
    """
    input, dim = _prepare("softmax", input, dim, dtype)
    return _Softmax.apply(input, dim=dim)


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    """log(softmax(x)) along ``dim``, computed as ``(x - max) - log(sum(exp(x - max)))``.

    Finite for any finite input (logits of +-1e4 included). ``input: (*)`` -> same shape.
    Backward: ``dx = g - softmax(x) * sum(g, dim)``.
    """
    input, dim = _prepare("log_softmax", input, dim, dtype)
    return _LogSoftmax.apply(input, dim=dim)
