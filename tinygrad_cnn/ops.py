"""The basic differentiable operations behind Tensor's arithmetic, reductions and reshapes.

Each op is a :class:`~tinygrad_cnn.autograd.Function`: ``forward`` works on raw
arrays, ``backward`` is written with Tensor operations (so it is itself
differentiable and ``create_graph=True`` gives second derivatives). The key
line of every derivation is in the backward's comment-free one-liner; the
notation is ``g = dL/d(out)``.

Broadcasting: a binary op broadcasts its inputs like NumPy; in backward the
gradient of an input that was broadcast is summed back to the input's shape
(:class:`SumTo`), because one input element fed many output elements.
"""
from __future__ import annotations

import numpy as np

from . import backend
from .autograd import Function
from .backend import get_array_module


def _broadcast_check(op, a, b):
    if a.shape != b.shape:
        try:
            np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise ValueError(
                f"{op}: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be broadcast together"
            ) from None


def _promote(a, b):
    """PyTorch's type-category rule: an integer or bool operand takes the floating operand's dtype.

    NumPy alone would turn float32 combined with int64 into float64 (twice the memory and time,
    silently); floating operands of different widths still promote as in NumPy and PyTorch.
    """
    if a.dtype.kind in "biu" and b.dtype.kind in "fc":
        return a.astype(b.dtype), b
    if b.dtype.kind in "biu" and a.dtype.kind in "fc":
        return a, b.astype(a.dtype)
    return a, b


def sum_to(grad, shape):
    """Sum ``grad`` (a Tensor) down to ``shape``: the adjoint of broadcasting."""
    shape = tuple(shape)
    if tuple(grad.shape) == shape:
        return grad
    return SumTo.apply(grad, shape=shape)


# ---------------------------------------------------------------------------
# Binary elementwise
# ---------------------------------------------------------------------------

class Add(Function):
    """out = a + b;  da = g, db = g (each summed to its input's shape)."""

    def forward(self, a, b):
        _broadcast_check("add", a, b)
        a, b = _promote(a, b)
        self.shapes = (a.shape, b.shape)
        return a + b

    def backward(self, g):
        return (sum_to(g, self.shapes[0]) if self.needs_input_grad[0] else None,
                sum_to(g, self.shapes[1]) if self.needs_input_grad[1] else None)


class Sub(Function):
    """out = a - b;  da = g, db = -g."""

    def forward(self, a, b):
        _broadcast_check("sub", a, b)
        a, b = _promote(a, b)
        self.shapes = (a.shape, b.shape)
        return a - b

    def backward(self, g):
        return (sum_to(g, self.shapes[0]) if self.needs_input_grad[0] else None,
                sum_to(-g, self.shapes[1]) if self.needs_input_grad[1] else None)


class Mul(Function):
    """out = a * b;  da = g * b, db = g * a."""

    def forward(self, a, b):
        _broadcast_check("mul", a, b)
        a, b = _promote(a, b)
        self.save_for_backward(a, b)
        return a * b

    def backward(self, g):
        a, b = self.saved_tensors
        return (sum_to(g * b, a.shape) if self.needs_input_grad[0] else None,
                sum_to(g * a, b.shape) if self.needs_input_grad[1] else None)


class Div(Function):
    """out = a / b;  da = g / b, db = -g * a / b**2."""

    def forward(self, a, b):
        _broadcast_check("div", a, b)
        a, b = _promote(a, b)
        self.save_for_backward(a, b)
        return a / b

    def backward(self, g):
        a, b = self.saved_tensors
        return (sum_to(g / b, a.shape) if self.needs_input_grad[0] else None,
                sum_to(-g * a / (b * b), b.shape) if self.needs_input_grad[1] else None)


class Pow(Function):
    """out = a ** b;  da = g * b * a**(b-1), db = g * a**b * log(a)."""

    def forward(self, a, b):
        _broadcast_check("pow", a, b)
        a, b = _promote(a, b)
        self.save_for_backward(a, b)
        return a ** b

    def backward(self, g):
        a, b = self.saved_tensors
        grad_a = sum_to(g * b * a ** (b - 1), a.shape) if self.needs_input_grad[0] else None
        grad_b = sum_to(g * a ** b * a.log(), b.shape) if self.needs_input_grad[1] else None
        return grad_a, grad_b


class PowScalar(Function):
    """out = x ** p for a constant p;  dx = g * p * x**(p-1)."""

    def forward(self, x, *, exponent):
        self.exponent = exponent
        self.save_for_backward(x)
        return x ** x.dtype.type(exponent) if x.dtype.kind == "f" else x ** exponent

    def backward(self, g):
        (x,) = self.saved_tensors
        p = self.exponent
        if p == 0:
            return g * 0.0
        if p == 1:
            return g
        return g * (p * x ** (p - 1))


class Maximum(Function):
    """out = max(a, b);  the gradient goes to the larger input, split in half on ties."""

    def forward(self, a, b):
        _broadcast_check("maximum", a, b)
        a, b = _promote(a, b)
        xp = get_array_module(a)
        self.shapes = (a.shape, b.shape)
        out = xp.maximum(a, b)
        dtype = out.dtype
        self.weight_a = (a > b).astype(dtype) + 0.5 * (a == b).astype(dtype)
        return out

    def backward(self, g):
        ga = sum_to(g * self.weight_a, self.shapes[0]) if self.needs_input_grad[0] else None
        gb = sum_to(g * (1 - self.weight_a), self.shapes[1]) if self.needs_input_grad[1] else None
        return ga, gb


class Minimum(Function):
    """out = min(a, b);  the gradient goes to the smaller input, split in half on ties."""

    def forward(self, a, b):
        _broadcast_check("minimum", a, b)
        a, b = _promote(a, b)
        xp = get_array_module(a)
        self.shapes = (a.shape, b.shape)
        out = xp.minimum(a, b)
        dtype = out.dtype
        self.weight_a = (a < b).astype(dtype) + 0.5 * (a == b).astype(dtype)
        return out

    def backward(self, g):
        ga = sum_to(g * self.weight_a, self.shapes[0]) if self.needs_input_grad[0] else None
        gb = sum_to(g * (1 - self.weight_a), self.shapes[1]) if self.needs_input_grad[1] else None
        return ga, gb


class Where(Function):
    """out = a where condition else b;  da = g where condition, db = g elsewhere."""

    def forward(self, a, b, *, condition):
        xp = get_array_module(a)
        a, b = _promote(a, b)
        try:
            shape = np.broadcast_shapes(condition.shape, a.shape, b.shape)
        except ValueError:
            raise ValueError(
                f"where: condition {tuple(condition.shape)}, input {tuple(a.shape)} and other "
                f"{tuple(b.shape)} cannot be broadcast together") from None
        self.condition = xp.broadcast_to(condition, shape)
        self.shapes = (a.shape, b.shape)
        return xp.where(condition, a, b)

    def backward(self, g):
        zero = g * 0.0
        ga = sum_to(where(self.condition, g, zero), self.shapes[0]) if self.needs_input_grad[0] else None
        gb = sum_to(where(self.condition, zero, g), self.shapes[1]) if self.needs_input_grad[1] else None
        return ga, gb


def where(condition, a, b):
    """Differentiable ``where`` on Tensors (``condition`` is a bool array or Tensor)."""
    from .tensor import Tensor
    cond = condition.array if isinstance(condition, Tensor) else condition
    return Where.apply(a, b, condition=cond)


# ---------------------------------------------------------------------------
# Unary elementwise
# ---------------------------------------------------------------------------

class Neg(Function):
    """out = -x;  dx = -g."""

    def forward(self, x):
        return -x

    def backward(self, g):
        return -g


class Exp(Function):
    """out = e**x;  dx = g * out."""

    def forward(self, x):
        out = get_array_module(x).exp(x)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        (out,) = self.saved_tensors
        return g * out


class Log(Function):
    """out = ln x;  dx = g / x."""

    def forward(self, x):
        self.save_for_backward(x)
        return get_array_module(x).log(x)

    def backward(self, g):
        (x,) = self.saved_tensors
        return g / x


class Sqrt(Function):
    """out = sqrt(x);  dx = g / (2 * out)."""

    def forward(self, x):
        out = get_array_module(x).sqrt(x)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        (out,) = self.saved_tensors
        return g / (out * 2.0)


class Abs(Function):
    """out = |x|;  dx = g * sign(x) (0 at x = 0, as PyTorch)."""

    def forward(self, x):
        xp = get_array_module(x)
        self.sign = xp.sign(x)
        return xp.abs(x)

    def backward(self, g):
        return g * self.sign


class Tanh(Function):
    """out = tanh x;  dx = g * (1 - out**2)."""

    def forward(self, x):
        out = get_array_module(x).tanh(x)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        (out,) = self.saved_tensors
        return g * (1.0 - out * out)


class Sigmoid(Function):
    """out = 1 / (1 + e**-x);  dx = g * out * (1 - out)."""

    def forward(self, x):
        xp = get_array_module(x)
        # Written with exp(-|x|) so neither branch overflows.
        e = xp.exp(-xp.abs(x))
        out = xp.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        self.save_for_backward(out)
        return out

    def backward(self, g):
        (out,) = self.saved_tensors
        return g * out * (1.0 - out)


@backend.register_reference("relu_forward")
def _relu_forward_reference(x):
    """x: any shape -> max(x, 0), same shape and dtype; NaN stays NaN (as PyTorch)."""
    # maximum is one pass (where() with a scalar is much slower in NumPy) and keeps NaN.
    return get_array_module(x).maximum(x, 0)


@backend.register_reference("relu_backward")
def _relu_backward_reference(grad_output, output):
    """grad_output, output: same shape -> grad_output where output > 0, else 0.

    Written as a select, not ``g * mask``, so a NaN gradient does not leak through
    where the unit was off (PyTorch's threshold_backward does the same)."""
    xp = get_array_module(output)
    return xp.where(output > 0, grad_output, xp.zeros((), dtype=grad_output.dtype))


class Relu(Function):
    """out = max(x, 0);  dx = g * [x > 0] (0 at x = 0, as PyTorch).

    The output is kept instead of a mask: out > 0 exactly where x > 0, and the next
    layer holds the output anyway. Kernels ``relu_forward``/``relu_backward``."""

    def forward(self, x):
        self.output = backend.kernel("relu_forward", get_array_module(x))(x)
        return self.output

    def backward(self, g):
        return g * (self.output > 0)      # the mask is a constant: linear in g

    def fast_backward(self, g):
        return backend.kernel("relu_backward", get_array_module(self.output))(g, self.output)


class Clamp(Function):
    """out = min(max(x, low), high);  dx = g where low <= x <= high, else 0."""

    def forward(self, x, *, low=None, high=None):
        xp = get_array_module(x)
        mask = xp.ones(x.shape, dtype=bool)
        if low is not None:
            mask &= x >= low
        if high is not None:
            mask &= x <= high
        self.mask = mask
        return xp.clip(x, low, high).astype(x.dtype, copy=False)

    def backward(self, g):
        return g * self.mask


class Cast(Function):
    """out = x converted to ``dtype``;  dx = g converted back."""

    def forward(self, x, *, dtype):
        self.in_dtype = x.dtype
        return x.astype(dtype)

    def backward(self, g):
        return g.to(self.in_dtype)


class ToDevice(Function):
    """Copy to another device;  dx = g copied back."""

    def forward(self, x, *, device):
        from .backend import device_of, to_device
        self.in_device = device_of(x)
        return to_device(x, device)

    def backward(self, g):
        return g.to(self.in_device)


class Clone(Function):
    """out = a copy of x;  dx = g."""

    def forward(self, x):
        return x.copy()

    def backward(self, g):
        return g


# ---------------------------------------------------------------------------
# Reductions
# ---------------------------------------------------------------------------

def normalize_dims(op, dim, ndim):
    """``dim`` (None, int or sequence) -> sorted tuple of non-negative axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    out = []
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"{op}: dim {d} is out of range for a tensor with {ndim} dimensions")
        out.append(int(d) % max(ndim, 1) if ndim else 0)
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: dim {dims} repeats a dimension")
    return tuple(sorted(out)) if ndim else ()


def _keepdim_shape(shape, dims):
    return tuple(1 if i in dims else s for i, s in enumerate(shape))


class Sum(Function):
    """out = sum of x over ``dims``;  dx = g broadcast back to x's shape."""

    def forward(self, x, *, dims, keepdim):
        self.in_shape, self.dims = x.shape, dims
        return x.sum(axis=dims, keepdims=keepdim)

    def backward(self, g):
        g = g.reshape(_keepdim_shape(self.in_shape, self.dims))
        return g.expand(self.in_shape)


class MaxAlong(Function):
    """Max (or min) over one dim.  dx = g at the position of the FIRST extremum, 0 elsewhere."""

    def forward(self, x, *, dim, keepdim, largest=True):
        xp = get_array_module(x)
        if x.shape[dim] == 0:
            raise ValueError(f"{'max' if largest else 'min'}: cannot reduce over dim {dim} of size 0")
        indices = x.argmax(axis=dim) if largest else x.argmin(axis=dim)
        self.indices = xp.expand_dims(indices, dim)
        self.in_shape, self.dim, self.keepdim = x.shape, dim, keepdim
        out = xp.take_along_axis(x, self.indices, axis=dim)
        return out if keepdim else out.squeeze(dim)

    def backward(self, g):
        xp = get_array_module(self.indices)
        positions = xp.arange(self.in_shape[self.dim]).reshape(
            [-1 if i == self.dim else 1 for i in range(len(self.in_shape))])
        one_hot = positions == self.indices
        if not self.keepdim:
            g = g.unsqueeze(self.dim)
        return g * one_hot


class MaxAll(Function):
    """Max (or min) over ``dims``;  dx = g shared evenly among tied extrema (as PyTorch's amax)."""

    def forward(self, x, *, dims, keepdim, largest=True):
        if x.size == 0:
            raise ValueError(f"{'max' if largest else 'min'}: cannot reduce an empty tensor")
        out = x.max(axis=dims, keepdims=True) if largest else x.min(axis=dims, keepdims=True)
        hits = (x == out)
        self.share = hits / hits.sum(axis=dims, keepdims=True)
        self.share = self.share.astype(x.dtype, copy=False)
        self.in_shape, self.dims = x.shape, dims
        return out if keepdim else out.squeeze(axis=dims)

    def backward(self, g):
        g = g.reshape(_keepdim_shape(self.in_shape, self.dims))
        return g * self.share


# ---------------------------------------------------------------------------
# Shape
# ---------------------------------------------------------------------------

class SumTo(Function):
    """out = x summed down to ``shape`` (adjoint of broadcasting);  dx = g broadcast to x's shape."""

    def forward(self, x, *, shape):
        self.in_shape = x.shape
        lead = x.ndim - len(shape)
        axes = tuple(range(lead)) + tuple(
            lead + i for i, s in enumerate(shape) if s == 1 and x.shape[lead + i] != 1)
        out = x.sum(axis=axes, keepdims=True) if axes else x
        return out.reshape(shape)

    def backward(self, g):
        return g.expand(self.in_shape)


class Expand(Function):
    """out = x broadcast to ``shape`` (a view);  dx = g summed back to x's shape."""

    def forward(self, x, *, shape):
        self.in_shape = x.shape
        return get_array_module(x).broadcast_to(x, shape)

    def backward(self, g):
        return sum_to(g, self.in_shape)


class Reshape(Function):
    """out = x with a new shape, same elements;  dx = g reshaped back."""

    def forward(self, x, *, shape):
        self.in_shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise ValueError(
                f"reshape: shape {tuple(shape)} is invalid for input of shape "
                f"{tuple(x.shape)} ({x.size} elements)") from None

    def backward(self, g):
        return g.reshape(self.in_shape)


class Permute(Function):
    """out = x with axes reordered;  dx = g with the inverse permutation."""

    def forward(self, x, *, dims):
        self.dims = dims
        return x.transpose(dims)

    def backward(self, g):
        return g.permute(*np.argsort(self.dims).tolist())


def _is_basic_index(key):
    items = key if isinstance(key, tuple) else (key,)
    return all(isinstance(k, (int, np.integer, slice)) or k is None or k is Ellipsis for k in items)


class Index(Function):
    """out = x[key];  dx = zeros with g added at the indexed places (repeats accumulate)."""

    def forward(self, x, *, key):
        self.in_shape, self.key = x.shape, key
        try:
            return x[key]
        except IndexError as error:
            raise IndexError(f"index: {error} (tensor of shape {tuple(x.shape)})") from None

    def backward(self, g):
        return IndexAdd.apply(g, key=self.key, shape=self.in_shape)


class IndexAdd(Function):
    """out = zeros(shape) with x added at ``key``;  dx = g[key] (the adjoint of indexing)."""

    def forward(self, x, *, key, shape):
        xp = get_array_module(x)
        self.key = key
        out = xp.zeros(shape, dtype=x.dtype)
        if _is_basic_index(key):
            out[key] = x          # basic indexing never selects an element twice
        elif xp is np:
            np.add.at(out, key, x)
        else:
            xp.add.at(out, key, x)
        return out

    def backward(self, g):
        return Index.apply(g, key=self.key)


class Cat(Function):
    """out = inputs joined along ``dim``;  each input's gradient is its slice of g."""

    def forward(self, *arrays, dim):
        xp = get_array_module(arrays[0])
        self.dim = dim
        self.sizes = [a.shape[dim] for a in arrays]
        return xp.concatenate(arrays, axis=dim)

    def backward(self, g):
        grads, start = [], 0
        for size, needed in zip(self.sizes, self.needs_input_grad):
            key = (slice(None),) * self.dim + (slice(start, start + size),)
            grads.append(g[key] if needed else None)
            start += size
        return tuple(grads)


class Pad(Function):
    """Constant padding;  dx = the central (unpadded) slice of g."""

    def forward(self, x, *, widths, value):
        xp = get_array_module(x)
        self.key = tuple(slice(before, before + size) for (before, _), size in zip(widths, x.shape))
        return xp.pad(x, widths, mode="constant", constant_values=value)

    def backward(self, g):
        return g[self.key]


class Matmul(Function):
    """out = a @ b for a (..., n, k), b (..., k, m);  da = g @ b^T, db = a^T @ g."""

    def forward(self, a, b):
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(
                f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} are not aligned "
                f"({a.shape[-1]} != {b.shape[-2]})")
        try:
            np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            raise ValueError(f"matmul: batch dimensions of {tuple(a.shape)} and {tuple(b.shape)} "
                             "cannot be broadcast together") from None
        a, b = _promote(a, b)
        self.save_for_backward(a, b)
        return a @ b

    def backward(self, g):
        a, b = self.saved_tensors
        grad_a = sum_to(g @ b.transpose(-1, -2), a.shape) if self.needs_input_grad[0] else None
        grad_b = sum_to(a.transpose(-1, -2) @ g, b.shape) if self.needs_input_grad[1] else None
        return grad_a, grad_b
