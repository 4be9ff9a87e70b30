"""``Tensor``: an n-dimensional array that remembers how it was computed.

A Tensor wraps a NumPy array (or a CuPy array on the GPU) in ``.data``. When
it ``requires_grad``, every op applied to it records a
:class:`~tinygrad_cnn.autograd.Function` node, and ``backward()`` walks those
nodes in reverse to fill ``.grad`` of the leaves.

Deliberate differences from PyTorch (kept small):

* Python numbers and lists become float32 even when they hold integers
  (``Tensor([1, 2])`` is float32); pass ``dtype=np.int64`` for integer data.
  NumPy arrays keep their dtype.
* In-place ops (``t[i] = v``, ``add_`` ...) are refused on a tensor that
  requires grad while grad mode is on, instead of version-counting; wrap
  parameter updates in ``no_grad()`` (optimizers do).
* ``dtype`` is a NumPy dtype (``tinygrad_cnn.float32`` is ``numpy.float32``).
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from . import autograd, ops
from .autograd import is_grad_enabled
from .backend import device_of, get_array_module, normalize_device, to_device

__all__ = ["Tensor", "tensor", "zeros", "ones", "full", "empty", "zeros_like", "ones_like",
           "full_like", "empty_like", "randn", "rand", "randint", "randn_like", "rand_like",
           "arange", "linspace", "eye", "from_numpy", "cat", "stack", "where", "maximum", "minimum",
           "matmul", "flatten", "pad", "exp", "log", "sqrt", "abs", "tanh", "sigmoid", "relu",
           "clamp", "clip", "sum", "mean", "var", "std", "logsumexp", "float16", "float32",
           "float64", "int8", "int32", "int64", "uint8", "bool_"]

float16, float32, float64 = np.float16, np.float32, np.float64
int8, int32, int64, uint8, bool_ = np.int8, np.int32, np.int64, np.uint8, np.bool_

ReductionResult = namedtuple("ReductionResult", ["values", "indices"])


class RemovableHandle:
    """Returned by ``register_hook``; ``handle.remove()`` unregisters the hook."""

    _next_id = 0

    def __init__(self, hooks: dict):
        self._hooks = hooks
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1

    def remove(self):
        self._hooks.pop(self.id, None)


def _to_array(data, dtype):
    """Convert user data to a fresh NumPy array following the dtype rules above."""
    if isinstance(data, np.ndarray) or np.isscalar(data) and isinstance(data, np.generic):
        return np.array(data, dtype=dtype, copy=True)
    array = np.asarray(data)
    if dtype is not None:
        return array.astype(dtype)
    if array.dtype.kind in "iuf":
        # Python numbers and lists become float32 (the framework's default dtype).
        return array.astype(np.float32)
    if array.dtype.kind == "b":
        return array
    raise TypeError(f"Tensor: cannot build a tensor from data of type {type(data).__name__} "
                    f"(NumPy dtype {array.dtype})")


class Tensor:
    """An array with autograd. ``Tensor(data, requires_grad=False, dtype=None, device="cpu")``.

    ``data`` may be a NumPy/CuPy array (dtype kept, copied), a Python number or
    nested list (float32), or another Tensor (copied, detached).
    """

    __array_priority__ = 1000
    __array_ufunc__ = None     # NumPy operators defer to Tensor's reflected operators

    def __init__(self, data, requires_grad=False, dtype=None, device=None):
        # device=None keeps the data where it is: a CuPy array or a CUDA tensor stays on
        # the GPU, everything else lands on the CPU.
        if device is None:
            device = data.device if isinstance(data, Tensor) else (
                "cpu" if get_array_module(data) is np else "cuda")
        device = normalize_device(device)
        if dtype is not None:
            dtype = np.dtype(dtype)
        if isinstance(data, Tensor):
            array = data.data.astype(dtype or data.dtype, copy=True)
            array = to_device(array, device)
        elif get_array_module(data) is not np:          # a CuPy array
            array = data.astype(dtype or data.dtype, copy=True)
            array = to_device(array, device)
        else:
            array = to_device(_to_array(data, dtype), device)
        self.data = array
        self.grad = None
        self._ctx = None
        self._hooks = {}
        self._retains_grad = False
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _wrap(cls, array, requires_grad=False):
        """Wrap an existing array without copying or checking (engine use)."""
        t = cls.__new__(cls)
        t.data = array
        t.grad = None
        t._ctx = None
        t._hooks = {}
        t._retains_grad = False
        t.requires_grad = requires_grad
        return t

    # ------------------------------------------------------------------ properties
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self):
        return device_of(self.data)

    @property
    def is_leaf(self):
        return self._ctx is None

    @property
    def grad_fn(self):
        return self._ctx

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def numel(self):
        return int(self.data.size)

    def dim(self):
        return self.ndim

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __hash__(self):
        return id(self)

    # ------------------------------------------------------------------ conversion
    def numpy(self):
        """The data as a NumPy array (shared on the CPU, copied from the GPU)."""
        if self.device != "cpu":
            return self.data.get()
        return self.data

    def __array__(self, dtype=None, copy=None):
        array = self.numpy()
        return array if dtype is None else array.astype(dtype)

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item: only one-element tensors can be converted to a Python "
                             f"scalar, got shape {self.shape}")
        return self.data.reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError(f"the truth value of a tensor with {self.data.size} elements is "
                               "ambiguous")
        return bool(self.item())

    def detach(self):
        """A new Tensor sharing the data, cut from the graph."""
        return Tensor._wrap(self.data, False)

    def requires_grad_(self, requires_grad=True):
        if requires_grad and self.dtype.kind not in "fc":
            raise TypeError(f"requires_grad: only floating point tensors can require "
                            f"gradients, got dtype {self.dtype}")
        if not requires_grad and self._ctx is not None:
            raise RuntimeError("requires_grad_(False): can only change requires_grad of leaf "
                               "tensors; use detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep ``.grad`` on this non-leaf tensor after backward."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad: tensor does not require grad")
        if self._ctx is not None:
            self._retains_grad = True

    def register_hook(self, hook):
        """``hook(grad) -> Tensor or None`` runs when this tensor's gradient is computed.

        It sees the total gradient of this tensor for one backward pass (once per
        backward, after all contributions are summed) and may return a replacement.
        """
        if not self.requires_grad:
            raise RuntimeError("register_hook: cannot register a hook on a tensor that doesn't "
                               "require gradient")
        handle = RemovableHandle(self._hooks)
        self._hooks[handle.id] = hook
        if self._ctx is not None:
            # The node shares the dict, so the hook outlives this Tensor object.
            self._ctx.output_hooks = self._hooks
        return handle

    def backward(self, gradient=None, retain_graph=None, create_graph=False):
        """Compute d(self)/d(leaf) for every leaf that requires grad, accumulating into ``.grad``."""
        if not self.requires_grad:
            raise RuntimeError("backward: tensor does not require grad and has no grad_fn "
                               "(did you compute it under no_grad or from detached tensors?)")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward: grad can be implicitly created only for scalar outputs; this "
                    f"tensor has shape {self.shape}, pass gradient= of that shape")
            gradient = Tensor._wrap(get_array_module(self.data).ones_like(self.data))
        else:
            if not isinstance(gradient, Tensor):
                gradient = Tensor(gradient, dtype=self.dtype, device=self.device)
            if gradient.shape != self.shape:
                raise RuntimeError(f"backward: gradient has shape {gradient.shape} but the "
                                   f"tensor has shape {self.shape}")
            if not create_graph:
                gradient = gradient.detach()
        if retain_graph is None:
            retain_graph = create_graph
        autograd.backward(self, gradient, retain_graph=retain_graph, create_graph=create_graph)

    # ------------------------------------------------------------------ device / dtype
    def to(self, *args, dtype=None, device=None):
        """``to(device)``, ``to(dtype)`` or ``to(device, dtype)``; differentiable."""
        for arg in args:
            if isinstance(arg, str):
                device = arg
            else:
                dtype = arg
        out = self
        if device is not None:
            device = normalize_device(device)
            if device != out.device:
                out = ops.ToDevice.apply(out, device=device)
        if dtype is not None:
            dtype = np.dtype(dtype)
            if dtype != out.dtype:
                if out.requires_grad and dtype.kind not in "fc":
                    out = out.detach()
                out = ops.Cast.apply(out, dtype=dtype)
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    def half(self):
        return self.to(np.float16)

    def long(self):
        return self.to(np.int64)

    def int(self):
        return self.to(np.int32)

    def bool(self):
        return self.to(np.bool_)

    def type(self, dtype):
        return self.to(dtype)

    # ------------------------------------------------------------------ in place
    def _check_inplace(self, op):
        if self.requires_grad and is_grad_enabled():
            raise RuntimeError(
                f"{op}: in-place modification of a tensor that requires grad is not supported "
                "while grad mode is on; use an out-of-place op, or wrap the update in no_grad()")

    def zero_(self):
        self._check_inplace("zero_")
        self.data[...] = 0
        return self

    def fill_(self, value):
        self._check_inplace("fill_")
        self.data[...] = value
        return self

    def copy_(self, source):
        self._check_inplace("copy_")
        source = source.data if isinstance(source, Tensor) else source
        if tuple(np.shape(source)) != self.shape:
            xp = get_array_module(self.data)
            try:
                xp.broadcast_to(source, self.shape)
            except ValueError:
                raise ValueError(f"copy_: source of shape {tuple(np.shape(source))} cannot be "
                                 f"copied into a tensor of shape {self.shape}") from None
        self.data[...] = to_device(source, self.device) if get_array_module(source) is not \
            get_array_module(self.data) else source
        return self

    def __setitem__(self, key, value):
        self._check_inplace("__setitem__")
        key = _raw_key(key)
        self.data[key] = value.data if isinstance(value, Tensor) else value

    def clone(self):
        return ops.Clone.apply(self)

    def contiguous(self):
        return self

    # ------------------------------------------------------------------ arithmetic
    def _operand(self, other):
        if isinstance(other, Tensor):
            return other
        xp = get_array_module(self.data)
        if isinstance(other, (bool, int, float, np.number)) and not isinstance(other, np.ndarray):
            dtype = self.dtype if self.dtype.kind in "fc" else (
                np.float32 if isinstance(other, float) else self.dtype)
            return Tensor._wrap(xp.asarray(other, dtype=dtype))
        return Tensor._wrap(xp.asarray(other))

    def __add__(self, other):
        return ops.Add.apply(self, self._operand(other))

    def __radd__(self, other):
        return ops.Add.apply(self._operand(other), self)

    def __sub__(self, other):
        return ops.Sub.apply(self, self._operand(other))

    def __rsub__(self, other):
        return ops.Sub.apply(self._operand(other), self)

    def __mul__(self, other):
        return ops.Mul.apply(self, self._operand(other))

    def __rmul__(self, other):
        return ops.Mul.apply(self._operand(other), self)

    def __truediv__(self, other):
        return ops.Div.apply(self, self._operand(other))

    def __rtruediv__(self, other):
        return ops.Div.apply(self._operand(other), self)

    def __pow__(self, exponent):
        if isinstance(exponent, (int, float)) and not isinstance(exponent, bool):
            return ops.PowScalar.apply(self, exponent=exponent)
        return ops.Pow.apply(self, self._operand(exponent))

    def __rpow__(self, base):
        return ops.Pow.apply(self._operand(base), self)

    def __neg__(self):
        return ops.Neg.apply(self)

    def __pos__(self):
        return self

    def __matmul__(self, other):
        return matmul(self, self._operand(other))

    def __rmatmul__(self, other):
        return matmul(self._operand(other), self)

    def __abs__(self):
        return self.abs()

    # Comparisons give bool tensors and are not differentiable.
    def _compare(self, other, fn):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(fn(self.data, other))

    def __eq__(self, other):
        return self._compare(other, lambda a, b: a == b)

    def __ne__(self, other):
        return self._compare(other, lambda a, b: a != b)

    def __lt__(self, other):
        return self._compare(other, lambda a, b: a < b)

    def __le__(self, other):
        return self._compare(other, lambda a, b: a <= b)

    def __gt__(self, other):
        return self._compare(other, lambda a, b: a > b)

    def __ge__(self, other):
        return self._compare(other, lambda a, b: a >= b)

    def __invert__(self):
        return Tensor._wrap(~self.data)

    def __and__(self, other):
        return self._compare(other, lambda a, b: a & b)

    def __or__(self, other):
        return self._compare(other, lambda a, b: a | b)

    eq, ne, lt, le, gt, ge = __eq__, __ne__, __lt__, __le__, __gt__, __ge__
    add, sub, mul, div, matmul = __add__, __sub__, __mul__, __truediv__, __matmul__
    neg = __neg__

    def pow(self, exponent):
        return self ** exponent

    # ------------------------------------------------------------------ unary
    def exp(self):
        return ops.Exp.apply(self)

    def log(self):
        return ops.Log.apply(self)

    def sqrt(self):
        return ops.Sqrt.apply(self)

    def rsqrt(self):
        return 1.0 / self.sqrt()

    def abs(self):
        return ops.Abs.apply(self)

    def tanh(self):
        return ops.Tanh.apply(self)

    def sigmoid(self):
        return ops.Sigmoid.apply(self)

    def relu(self):
        return ops.Relu.apply(self)

    def clamp(self, min=None, max=None):
        if min is None and max is None:
            raise ValueError("clamp: at least one of min and max must be given")
        return ops.Clamp.apply(self, low=min, high=max)

    clip = clamp

    def maximum(self, other):
        return ops.Maximum.apply(self, self._operand(other))

    def minimum(self, other):
        return ops.Minimum.apply(self, self._operand(other))

    def sign(self):
        return Tensor._wrap(get_array_module(self.data).sign(self.data))

    def softmax(self, dim):
        from .nn import functional as F
        return F.softmax(self, dim)

    def log_softmax(self, dim):
        from .nn import functional as F
        return F.log_softmax(self, dim)

    # ------------------------------------------------------------------ reductions
    def sum(self, dim=None, keepdim=False):
        dims = ops.normalize_dims("sum", dim, self.ndim)
        return ops.Sum.apply(self, dims=dims, keepdim=keepdim)

    def mean(self, dim=None, keepdim=False):
        dims = ops.normalize_dims("mean", dim, self.ndim)
        count = int(np.prod([self.shape[d] for d in dims])) if dims else 1
        if count == 0:
            raise ValueError(f"mean: cannot average over an empty dimension (shape {self.shape})")
        return self.sum(dims, keepdim) * (1.0 / count)

    def var(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        """Variance with Bessel's correction by default (``correction=1``), as PyTorch."""
        if correction is None:
            correction = 1 if unbiased is None or unbiased else 0
        dims = ops.normalize_dims("var", dim, self.ndim)
        count = int(np.prod([self.shape[d] for d in dims])) if dims else 1
        if count - correction <= 0:
            raise ValueError(f"var: {count} element(s) with correction={correction} leaves no "
                             "degrees of freedom")
        centred = self - self.mean(dims, keepdim=True)
        return (centred * centred).sum(dims, keepdim) * (1.0 / (count - correction))

    def std(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return self.var(dim, unbiased, keepdim, correction=correction).sqrt()

    def _extremum(self, dim, keepdim, largest):
        name = "max" if largest else "min"
        if dim is None:
            dims = ops.normalize_dims(name, None, self.ndim)
            return ops.MaxAll.apply(self, dims=dims, keepdim=False, largest=largest)
        (axis,) = ops.normalize_dims(name, dim, self.ndim) or (0,)
        values = ops.MaxAlong.apply(self, dim=axis, keepdim=keepdim, largest=largest)
        indices = self.data.argmax(axis=axis) if largest else self.data.argmin(axis=axis)
        if keepdim:
            indices = get_array_module(indices).expand_dims(indices, axis)
        return ReductionResult(values, Tensor._wrap(indices.astype(np.int64)))

    def max(self, dim=None, keepdim=False):
        """``max()`` -> Tensor; ``max(dim)`` -> (values, indices), gradient to the first max."""
        if isinstance(dim, Tensor):
            return self.maximum(dim)
        return self._extremum(dim, keepdim, True)

    def min(self, dim=None, keepdim=False):
        if isinstance(dim, Tensor):
            return self.minimum(dim)
        return self._extremum(dim, keepdim, False)

    def amax(self, dim=None, keepdim=False):
        dims = ops.normalize_dims("amax", dim, self.ndim)
        return ops.MaxAll.apply(self, dims=dims, keepdim=keepdim, largest=True)

    def amin(self, dim=None, keepdim=False):
        dims = ops.normalize_dims("amin", dim, self.ndim)
        return ops.MaxAll.apply(self, dims=dims, keepdim=keepdim, largest=False)

    def argmax(self, dim=None, keepdim=False):
        if dim is None:
            return Tensor._wrap(np.int64(self.data.argmax()) if self.device == "cpu"
                                else self.data.argmax().astype(np.int64))
        return self.max(dim, keepdim).indices

    def argmin(self, dim=None, keepdim=False):
        if dim is None:
            return Tensor._wrap(np.int64(self.data.argmin()) if self.device == "cpu"
                                else self.data.argmin().astype(np.int64))
        return self.min(dim, keepdim).indices

    def logsumexp(self, dim, keepdim=False):
        """log(sum(exp(x))) computed stably: m + log(sum(exp(x - m))) with m = max (constant)."""
        dims = ops.normalize_dims("logsumexp", dim, self.ndim)
        shift = self.data.max(axis=dims, keepdims=True)
        xp = get_array_module(self.data)
        shift = xp.where(xp.isfinite(shift), shift, 0)
        shift_t = Tensor._wrap(shift)
        out = (self - shift_t).exp().sum(dims, keepdim=True).log() + shift_t
        return out if keepdim else out.reshape([s for i, s in enumerate(out.shape) if i not in dims])

    # ------------------------------------------------------------------ shape
    def reshape(self, *shape):
        shape = _shape_arg(shape)
        if shape == self.shape:
            return self
        return ops.Reshape.apply(self, shape=shape)

    def view(self, *shape):
        return self.reshape(*shape)

    def view_as(self, other):
        return self.reshape(other.shape)

    def reshape_as(self, other):
        return self.reshape(other.shape)

    def flatten(self, start_dim=0, end_dim=-1):
        if self.ndim == 0:
            return self.reshape(1)
        start = start_dim % self.ndim
        end = end_dim % self.ndim
        if start > end:
            raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
        shape = self.shape[:start] + (int(np.prod(self.shape[start:end + 1])),) + self.shape[end + 1:]
        return self.reshape(shape)

    def permute(self, *dims):
        dims = _shape_arg(dims)
        if sorted(d % max(self.ndim, 1) for d in dims) != list(range(self.ndim)):
            raise ValueError(f"permute: dims {dims} are not a permutation of the {self.ndim} "
                             f"dimensions of a tensor of shape {self.shape}")
        dims = tuple(d % self.ndim for d in dims)
        if dims == tuple(range(self.ndim)):
            return self
        return ops.Permute.apply(self, dims=dims)

    def transpose(self, dim0, dim1):
        order = list(range(self.ndim))
        try:
            order[dim0], order[dim1] = order[dim1], order[dim0]
        except IndexError:
            raise IndexError(f"transpose: dims ({dim0}, {dim1}) out of range for a tensor of "
                             f"shape {self.shape}") from None
        return self.permute(*order)

    def t(self):
        if self.ndim > 2:
            raise ValueError(f"t: expects a tensor with <= 2 dimensions, got shape {self.shape}")
        return self.transpose(0, 1) if self.ndim == 2 else self

    def squeeze(self, dim=None):
        if dim is None:
            shape = tuple(s for s in self.shape if s != 1)
        else:
            dims = ops.normalize_dims("squeeze", dim, self.ndim)
            shape = tuple(s for i, s in enumerate(self.shape) if not (i in dims and s == 1))
        return self.reshape(shape)

    def unsqueeze(self, dim):
        if not -self.ndim - 1 <= dim <= self.ndim:
            raise IndexError(f"unsqueeze: dim {dim} out of range for a tensor of shape {self.shape}")
        dim = dim % (self.ndim + 1)
        return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

    def expand(self, *sizes):
        sizes = _shape_arg(sizes)
        lead = len(sizes) - self.ndim
        if lead < 0:
            raise ValueError(f"expand: cannot expand shape {self.shape} to fewer dimensions {sizes}")
        shape = tuple(self.shape[i - lead] if s == -1 else s for i, s in enumerate(sizes))
        for i, s in enumerate(self.shape):
            if s != 1 and s != shape[lead + i]:
                raise ValueError(f"expand: the size of dimension {lead + i} ({s}) must be 1 or "
                                 f"equal the expanded size {shape[lead + i]} (expanding "
                                 f"{self.shape} to {sizes})")
        if shape == self.shape:
            return self
        return ops.Expand.apply(self, shape=shape)

    def expand_as(self, other):
        return self.expand(other.shape)

    def split(self, split_size, dim=0):
        size = self.shape[dim]
        sizes = [split_size] * (size // split_size) + ([size % split_size] if size % split_size
                                                        else []) if isinstance(split_size, int) \
            else list(split_size)
        pieces, start = [], 0
        for s in sizes:
            key = (slice(None),) * (dim % self.ndim) + (slice(start, start + s),)
            pieces.append(self[key])
            start += s
        return tuple(pieces)

    def chunk(self, chunks, dim=0):
        return self.split(-(-self.shape[dim] // chunks), dim)

    def __getitem__(self, key):
        return ops.Index.apply(self, key=_raw_key(key))

    def detach_(self):
        self._ctx = None
        self.requires_grad = False
        return self

    def __repr__(self):
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(")
        extras = []
        if self.dtype != np.float32:
            extras.append(f"dtype={self.dtype}")
        if self.device != "cpu":
            extras.append(f"device='{self.device}'")
        if self._ctx is not None:
            extras.append(f"grad_fn=<{type(self._ctx).__name__}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"


def _shape_arg(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = shape[0]
    return tuple(int(s) for s in shape)


def _raw_key(key):
    """Replace Tensors inside an index with their arrays (integer or bool indexing)."""
    if isinstance(key, Tensor):
        return key.data
    if isinstance(key, tuple):
        return tuple(k.data if isinstance(k, Tensor) else k for k in key)
    if isinstance(key, list):
        return np.asarray(key)
    return key


# ---------------------------------------------------------------------------
# Functions on tensors
# ---------------------------------------------------------------------------

def _as_tensor(x, like=None):
    if isinstance(x, Tensor):
        return x
    if like is not None:
        return like._operand(x)
    return Tensor(x)


def matmul(a, b):
    """Matrix product with NumPy's rules: 1-D operands are promoted and the extra dim removed."""
    a, b = _as_tensor(a), _as_tensor(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: both operands need at least one dimension, got shapes "
                         f"{a.shape} and {b.shape}")
    squeeze = []
    if a.ndim == 1:
        a = a.unsqueeze(0)
        squeeze.append(-2)
    if b.ndim == 1:
        b = b.unsqueeze(-1)
        squeeze.append(-1)
    out = ops.Matmul.apply(a, b)
    for dim in sorted(squeeze):
        out = out.squeeze(out.ndim + dim)
    return out


def cat(tensors, dim=0):
    """Join tensors along an existing dimension; all other dimensions must match."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty list of tensors")
    first = tensors[0]
    dim_ = dim % first.ndim if first.ndim else 0
    for i, t in enumerate(tensors):
        if t.ndim != first.ndim or any(s != r for j, (s, r) in enumerate(zip(t.shape, first.shape))
                                       if j != dim_):
            raise ValueError(f"cat: tensor {i} has shape {t.shape}, incompatible with tensor 0's "
                             f"shape {first.shape} along dim {dim}")
    return ops.Cat.apply(*tensors, dim=dim_)


def stack(tensors, dim=0):
    """Join same-shaped tensors along a new dimension."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty list of tensors")
    for i, t in enumerate(tensors):
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack: tensor {i} has shape {t.shape} but tensor 0 has shape "
                             f"{tensors[0].shape}")
    return cat([t.unsqueeze(dim) for t in tensors], dim=dim)


def pad(input, pad, mode="constant", value=0.0):
    """PyTorch's ``F.pad``: ``pad`` lists (before, after) pairs starting from the LAST dimension."""
    if mode != "constant":
        raise NotImplementedError(f"pad: mode {mode!r} is not supported (only 'constant')")
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ValueError(f"pad: padding {tuple(pad)} must have an even length of at most "
                         f"2 * {input.ndim} for an input of shape {input.shape}")
    widths = [(0, 0)] * input.ndim
    for i in range(len(pad) // 2):
        before, after = int(pad[2 * i]), int(pad[2 * i + 1])
        if before < 0 or after < 0:
            raise ValueError(f"pad: negative padding {tuple(pad)} is not supported")
        widths[input.ndim - 1 - i] = (before, after)
    return ops.Pad.apply(input, widths=tuple(widths), value=value)


def where(condition, input, other):
    """Elementwise ``input if condition else other``; differentiable in input and other."""
    if isinstance(input, Tensor):
        other = input._operand(other)
    elif isinstance(other, Tensor):
        input = other._operand(input)
    else:
        input, other = Tensor(input), Tensor(other)
    return ops.where(condition, input, other)


def maximum(a, b):
    return _as_tensor(a).maximum(b)


def minimum(a, b):
    return _as_tensor(a).minimum(b)


def flatten(input, start_dim=0, end_dim=-1):
    return input.flatten(start_dim, end_dim)


def exp(x): return x.exp()
def log(x): return x.log()
def sqrt(x): return x.sqrt()
def abs(x): return x.abs()          # noqa: A001 - PyTorch's name
def tanh(x): return x.tanh()
def sigmoid(x): return x.sigmoid()
def relu(x): return x.relu()
def clamp(x, min=None, max=None): return x.clamp(min, max)   # noqa: A002
clip = clamp
def sum(x, dim=None, keepdim=False): return x.sum(dim, keepdim)   # noqa: A001
def mean(x, dim=None, keepdim=False): return x.mean(dim, keepdim)
def var(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    return x.var(dim, unbiased, keepdim, correction=correction)
def std(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    return x.std(dim, unbiased, keepdim, correction=correction)
def logsumexp(x, dim, keepdim=False): return x.logsumexp(dim, keepdim)


# ---------------------------------------------------------------------------
# Factories
# ---------------------------------------------------------------------------

def _factory(array, dtype, device, requires_grad, default=np.float32):
    array = array.astype(np.dtype(dtype) if dtype is not None else default, copy=False)
    t = Tensor._wrap(to_device(array, normalize_device(device)))
    if requires_grad:
        t.requires_grad_(True)
    return t


def _size(size):
    return _shape_arg(size)


def tensor(data, dtype=None, device="cpu", requires_grad=False):
    """Build a Tensor from data (copied); see :class:`Tensor` for the dtype rules."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype, device=device)


def from_numpy(array):
    """Wrap a NumPy array without copying (changes to one show in the other)."""
    return Tensor._wrap(array)


def zeros(*size, dtype=None, device="cpu", requires_grad=False):
    return _factory(np.zeros(_size(size)), dtype, device, requires_grad)


def ones(*size, dtype=None, device="cpu", requires_grad=False):
    return _factory(np.ones(_size(size)), dtype, device, requires_grad)


def empty(*size, dtype=None, device="cpu", requires_grad=False):
    return _factory(np.empty(_size(size)), dtype, device, requires_grad)


def full(size, fill_value, dtype=None, device="cpu", requires_grad=False):
    return _factory(np.full(_shape_arg((size,)), fill_value), dtype, device, requires_grad)


def zeros_like(t, dtype=None, device=None, requires_grad=False):
    return zeros(t.shape, dtype=dtype or t.dtype, device=device or t.device,
                 requires_grad=requires_grad)


def ones_like(t, dtype=None, device=None, requires_grad=False):
    return ones(t.shape, dtype=dtype or t.dtype, device=device or t.device,
                requires_grad=requires_grad)


def empty_like(t, dtype=None, device=None, requires_grad=False):
    return empty(t.shape, dtype=dtype or t.dtype, device=device or t.device,
                 requires_grad=requires_grad)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, device=device or t.device,
                requires_grad=requires_grad)


def randn(*size, dtype=None, device="cpu", requires_grad=False, generator=None):
    """Standard normal samples from the global generator (seeded by ``manual_seed``)."""
    from .random import get_generator
    rng = generator or get_generator()
    return _factory(rng.standard_normal(_size(size)), dtype, device, requires_grad)


def rand(*size, dtype=None, device="cpu", requires_grad=False, generator=None):
    """Uniform samples on [0, 1) from the global generator."""
    from .random import get_generator
    rng = generator or get_generator()
    return _factory(rng.random(_size(size)), dtype, device, requires_grad)


def randn_like(t, dtype=None, device=None):
    return randn(t.shape, dtype=dtype or t.dtype, device=device or t.device)


def rand_like(t, dtype=None, device=None):
    return rand(t.shape, dtype=dtype or t.dtype, device=device or t.device)


def randint(low, high=None, size=(), dtype=np.int64, device="cpu", generator=None):
    from .random import get_generator
    if high is None:
        low, high = 0, low
    rng = generator or get_generator()
    return _factory(rng.integers(low, high, size=_shape_arg((size,))), dtype, device, False)


def arange(start, end=None, step=1, dtype=None, device="cpu", requires_grad=False):
    """Like PyTorch: integer arguments give int64, any float argument gives float32."""
    if end is None:
        start, end = 0, start
    is_int = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
    default = np.int64 if is_int else np.float32
    return _factory(np.arange(start, end, step), dtype, device, requires_grad, default)


def linspace(start, end, steps, dtype=None, device="cpu", requires_grad=False):
    return _factory(np.linspace(start, end, steps), dtype, device, requires_grad)


def eye(n, m=None, dtype=None, device="cpu", requires_grad=False):
    return _factory(np.eye(n, m), dtype, device, requires_grad)
