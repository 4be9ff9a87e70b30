"""``Tensor``: an n-dimensional array that remembers how it was computed.

A Tensor wraps a NumPy array (or a CuPy array on the GPU), reachable as
``.array`` (the raw storage, shared). When it ``requires_grad``, every op
applied to it records a :class:`~tinygrad_cnn.autograd.Function` node, and
``backward()`` walks those nodes in reverse to fill ``.grad`` of the leaves.
``.data`` is, as in PyTorch, a Tensor sharing the storage and cut from the graph.

In-place ops (``add_``, ``x += y``, ``t[i] = v`` ...) bump the tensor's version
counter, shared with the tensors that view the same storage; a backward that
needs a value saved before such a change raises instead of returning a wrong
gradient (PyTorch's rule).

Deliberate differences from PyTorch (docs/coming_from_pytorch.md lists them all):

* Python numbers and lists become float32 even when they hold integers
  (``Tensor([1, 2])`` is float32); pass ``dtype=np.int64`` for integer data.
  NumPy arrays keep their dtype.
* ``dtype`` is a NumPy dtype (``tinygrad_cnn.float32`` is ``numpy.float32``).
* ``.shape`` is a plain tuple; ``size()`` returns a :class:`Size`.

Data a tensor holds: booleans, integers and floats, in the machine's byte order (other byte
orders are converted when copied in); strings, Python objects and complex numbers are refused.
float16 is computed in float32 and rounded once, as on PyTorch's CPU (docs/failure_modes.md).
"""
from __future__ import annotations

import builtins
import weakref
from collections import namedtuple

import numpy as np

from . import autograd, ops
from .autograd import is_grad_enabled
from .backend import device_of, get_array_module, normalize_device, to_device, to_host
from .devices import as_device, device

__all__ = ["Tensor", "tensor", "zeros", "ones", "full", "empty", "zeros_like", "ones_like",
           "full_like", "empty_like", "randn", "rand", "randint", "randn_like", "rand_like",
           "arange", "linspace", "eye", "from_numpy", "cat", "stack", "where", "maximum", "minimum",
           "matmul", "flatten", "pad", "exp", "log", "sqrt", "abs", "tanh", "sigmoid", "relu",
           "clamp", "clip", "sum", "mean", "var", "std", "logsumexp", "float16", "float32",
           "float64", "int8", "int32", "int64", "uint8", "bool_", "Size", "argmax", "argmin", "max",
           "min", "topk", "sort", "argsort", "norm", "gather", "squeeze", "unsqueeze", "chunk", "softmax",
           "log_softmax", "numel", "is_tensor", "as_tensor"]

float16, float32, float64 = np.float16, np.float32, np.float64
int8, int32, int64, uint8, bool_ = np.int8, np.int32, np.int64, np.uint8, np.bool_

ReductionResult = namedtuple("ReductionResult", ["values", "indices"])


class Size(tuple):
    """A shape: a tuple of ints with PyTorch's repr (``tinygrad_cnn.Size([2, 3])``)."""

    def __new__(cls, sizes=()):
        return super().__new__(cls, (int(s) for s in sizes))

    def __repr__(self):
        return f"tinygrad_cnn.Size({list(self)})"

    __str__ = __repr__

    def __getitem__(self, key):
        item = super().__getitem__(key)
        return Size(item) if isinstance(key, slice) else item

    def numel(self):
        count = 1
        for s in self:
            count *= s
        return count


class VersionCounter:
    """How many times a storage was modified in place; shared by the tensors that view it.

    A backward node records the version of every tensor it saved; if the version differs
    when backward runs, the saved value is stale and the gradient would be wrong.
    """

    __slots__ = ("value",)

    def __init__(self):
        self.value = 0


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
    if dtype is not None:
        _check_element_type(np.dtype(dtype), "requested dtype")
    if isinstance(data, np.ndarray) or np.isscalar(data) and isinstance(data, np.generic):
        _check_element_type(np.asarray(data).dtype, "data")
        return _native(np.array(data, dtype=dtype, copy=True))
    try:
        array = np.asarray(data)
    except ValueError as error:
        raise ValueError(f"Tensor: {_ragged_description(data) or error}") from None
    _check_element_type(array.dtype, "data")
    if dtype is not None:
        return _native(array.astype(dtype))
    if array.dtype.kind in "iuf":
        # Python numbers and lists become float32 (the framework's default dtype).
        return array.astype(np.float32)
    return array


def _check_element_type(dtype, what, op="Tensor"):
    # PyTorch has no string or object tensors, and NumPy would happily concatenate strings
    # ("a" + 1 -> "a1") or call Python methods element by element.
    if dtype.kind not in "biuf":
        kinds = {"U": "strings", "S": "bytes", "O": "Python objects", "c": "complex numbers",
                 "M": "datetimes", "m": "time deltas", "V": "raw records"}
        raise TypeError(f"{op}: cannot build a tensor from {what} of dtype {dtype} "
                        f"({kinds.get(dtype.kind, 'unsupported values')}); tensors hold booleans, "
                        "integers or floating-point numbers")


def _native(array):
    """``array`` in the machine's byte order: the kernels (Numba, CUDA) read only native numbers."""
    if array.dtype.isnative:
        return array
    return array.astype(array.dtype.newbyteorder("="))


def _ragged_description(data, dim=0):
    """Where a nested list stops being rectangular, e.g. "expected sequence of length 2 at dim 1
    (got 1, element [1])", or None if it is rectangular."""
    if not isinstance(data, (list, tuple)):
        return None
    lengths = [len(item) if isinstance(item, (list, tuple)) else None for item in data]
    kinds = {length is None for length in lengths}
    if len(kinds) > 1:
        index = lengths.index(None) if lengths[0] is not None else next(
            i for i, length in enumerate(lengths) if length is not None)
        return (f"nested data is ragged: at dim {dim}, element [{index}] is "
                f"{'a number' if lengths[index] is None else 'a sequence'} but element [0] is "
                f"{'a number' if lengths[0] is None else 'a sequence'}")
    if lengths and lengths[0] is not None:
        for index, length in enumerate(lengths):
            if length != lengths[0]:
                return (f"nested data is ragged: expected sequence of length {lengths[0]} at dim {dim + 1} "
                        f"(got {length} at element [{index}])")
        for item in data:
            inner = _ragged_description(item, dim + 1)
            if inner is not None:
                return inner
    return None


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
            array = data.array.astype(dtype or data.dtype, copy=True)
            array = to_device(array, device)
        elif get_array_module(data) is not np:          # a CuPy array
            array = data.astype(dtype or data.dtype, copy=True)
            array = to_device(array, device)
        else:
            array = to_device(_to_array(data, dtype), device)
        self.array = array
        self.grad = None
        self._ctx = None
        self._hooks = {}
        self._retains_grad = False
        self._version_counter = VersionCounter()
        self._base = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _wrap(cls, array, requires_grad=False):
        """Wrap an existing array without copying or checking (engine use)."""
        t = cls.__new__(cls)
        t.array = array
        t.grad = None
        t._ctx = None
        t._hooks = {}
        t._retains_grad = False
        t._version_counter = VersionCounter()
        t._base = None          # the tensor whose storage this one views (set by the engine)
        t.requires_grad = requires_grad
        return t

    # ------------------------------------------------------------------ properties
    @property
    def data(self):
        """A Tensor sharing this tensor's storage, detached from the graph (PyTorch's ``.data``).

        Changes made through it are invisible to autograd (the version counter is not shared),
        exactly as in PyTorch; prefer ``detach()`` or ``no_grad()``. For the raw NumPy/CuPy
        array use ``.array``. Assigning a Tensor (``p.data = t``) makes this tensor use ``t``'s
        storage.
        """
        return Tensor._wrap(self.array, False)

    @data.setter
    def data(self, value):
        if not isinstance(value, Tensor):
            raise TypeError(f"Tensor.data: can only assign a Tensor, got {type(value).__name__} "
                            "(to replace the raw array assign to .array)")
        if self.requires_grad and value.dtype.kind not in "fc":
            raise TypeError(f"Tensor.data: a tensor that requires grad needs floating point data, "
                            f"got dtype {value.dtype}")
        self.array = value.array

    @property
    def _version(self):
        """How many in-place changes this tensor's storage has seen (PyTorch's ``_version``)."""
        return self._version_counter.value

    @property
    def shape(self):
        return tuple(self.array.shape)

    @property
    def ndim(self):
        return self.array.ndim

    @property
    def dtype(self):
        return self.array.dtype

    @property
    def device(self):
        return as_device(device_of(self.array))

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
        """``size()`` -> :class:`Size`; ``size(dim)`` -> int."""
        return Size(self.array.shape) if dim is None else self.shape[dim]

    def numel(self):
        return int(self.array.size)

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
            return to_host(self.array)
        return self.array

    def __array__(self, dtype=None, copy=None):
        array = np.asarray(self.numpy())      # a 0-d result may be held as a NumPy scalar
        if dtype is not None and array.dtype != np.dtype(dtype):
            return array.astype(dtype)
        return array.copy() if copy else array

    def __index__(self):
        """An integer scalar tensor used as a Python index (``range(n)``, ``list[t]``)."""
        if self.array.size != 1 or self.dtype.kind not in "iub":
            raise TypeError(f"__index__: only integer tensors of a single element can be used as "
                            f"an index, got dtype {self.dtype} and shape {self.shape}")
        return int(self.item())

    def item(self):
        if self.array.size != 1:
            raise ValueError(f"item: only one-element tensors can be converted to a Python "
                             f"scalar, got shape {self.shape}")
        return self.array.reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def __float__(self):
        return float(self.item())

    def __format__(self, spec):
        """``f"{loss:.3f}"`` formats a 0-d tensor as its number, as PyTorch does."""
        if self.ndim == 0:
            return self.item().__format__(spec)
        return object.__format__(self, spec)

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self.array.size != 1:
            raise RuntimeError(f"the truth value of a tensor with {self.array.size} elements is "
                               "ambiguous")
        return bool(self.item())

    def detach(self):
        """A new Tensor sharing the data (and its version counter), cut from the graph."""
        out = Tensor._wrap(self.array, False)
        out._version_counter = self._version_counter
        return out

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

    # Set per tensor on the first registration; most tensors never have one.
    _post_accumulate_grad_hooks = None

    def register_post_accumulate_grad_hook(self, hook):
        """``hook(tensor) -> None`` runs after a backward pass has added into this leaf's ``.grad``.

        Data-parallel training reduces gradients there: ``.grad`` then holds everything this
        backward (and earlier ones, when accumulating) contributed.
        """
        if not self.requires_grad or self._ctx is not None:
            raise RuntimeError("register_post_accumulate_grad_hook: only leaf tensors that require "
                               "grad accumulate into .grad")
        if self._post_accumulate_grad_hooks is None:
            self._post_accumulate_grad_hooks = {}
        handle = RemovableHandle(self._post_accumulate_grad_hooks)
        self._post_accumulate_grad_hooks[handle.id] = hook
        return handle

    def backward(self, gradient=None, retain_graph=None, create_graph=False):
        """Compute d(self)/d(leaf) for every leaf that requires grad, accumulating into ``.grad``."""
        if not self.requires_grad:
            raise RuntimeError("backward: tensor does not require grad and has no grad_fn "
                               "(did you compute it under no_grad or from detached tensors?)")
        if gradient is None:
            if self.array.size != 1:
                raise RuntimeError(
                    f"backward: grad can be implicitly created only for scalar outputs; this "
                    f"tensor has shape {self.shape}, pass gradient= of that shape")
            gradient = Tensor._wrap(get_array_module(self.array).ones_like(self.array))
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
    def to(self, *args, dtype=None, device=None, non_blocking=False, copy=False):
        """``to(device)``, ``to(dtype)``, ``to(device, dtype)`` or ``to(other)``; differentiable.

        ``device`` is a name or a :class:`device`; ``non_blocking`` is accepted (copies are
        synchronous here); ``copy=True`` always returns a new tensor.
        """
        for arg in args:
            if isinstance(arg, Tensor):
                device, dtype = arg.device, arg.dtype
            elif isinstance(arg, str):
                device = arg
            elif arg is not None:
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
        if copy and out is self:
            out = self.clone()
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
    # PyTorch's rules: a leaf that requires grad may only change under no_grad() (how optimizers
    # update parameters); any other tensor may change in place, and when the change involves
    # tensors that require grad it is recorded like the out-of-place op. Every change bumps the
    # version counter, so a backward that saved the old value raises instead of using the new.
    def _check_inplace(self, op):
        if self.requires_grad and self._ctx is None and is_grad_enabled():
            raise RuntimeError(
                f"{op}: a leaf tensor that requires grad cannot be modified in-place while grad "
                "mode is on; wrap the update in no_grad() (optimizers do), or use an "
                "out-of-place op")

    def _bump_version(self):
        self._version_counter.value += 1

    def _inplace(self, op, compute, other=None):
        """Store ``compute(value) -> Tensor`` into this tensor's storage; returns ``self``."""
        other_grad = isinstance(other, Tensor) and other.requires_grad
        recording = is_grad_enabled() and (self.requires_grad or other_grad)
        if not recording:
            result = compute(self)
            self._store(op, result.array, result.shape, result.dtype)
            return self
        self._check_inplace(op)
        if self._base is not None:
            raise RuntimeError(
                f"{op}: in-place change of a view (a reshape, slice or permutation of another "
                "tensor) inside a recorded graph is not supported; clone() the view first")
        # The recorded op reads a copy of the old value: the storage is overwritten below.
        previous = Tensor._wrap(self.array.copy(), self.requires_grad)
        previous._ctx = self._ctx
        result = compute(previous)
        self._store(op, result.array, result.shape, result.dtype)
        if result._ctx is not None:
            self._ctx = result._ctx
            self._ctx.output_ref = weakref.ref(self)
            self.requires_grad = True
        return self

    def _store(self, op, array, shape, dtype):
        if tuple(shape) != self.shape:
            raise RuntimeError(f"{op}: the result has shape {tuple(shape)} but the tensor "
                               f"modified in place has shape {self.shape} (an in-place op cannot "
                               "broadcast the tensor it modifies)")
        if dtype != self.dtype and not np.can_cast(dtype, self.dtype, "same_kind"):
            raise RuntimeError(f"{op}: result type {np.dtype(dtype)} can't be cast to the dtype "
                               f"{self.dtype} of the tensor modified in place")
        self.array[...] = array
        self._bump_version()

    def add_(self, other, *, alpha=1):
        other = self._operand(other)
        return self._inplace("add_", lambda x: x + (other if alpha == 1 else other * alpha), other)

    def sub_(self, other, *, alpha=1):
        other = self._operand(other)
        return self._inplace("sub_", lambda x: x - (other if alpha == 1 else other * alpha), other)

    def mul_(self, other):
        other = self._operand(other)
        return self._inplace("mul_", lambda x: x * other, other)

    def div_(self, other):
        other = self._operand(other)
        return self._inplace("div_", lambda x: x / other, other)

    def pow_(self, exponent):
        return self._inplace("pow_", lambda x: x ** exponent, exponent)

    def neg_(self):
        return self._inplace("neg_", lambda x: -x)

    def clamp_(self, min=None, max=None):   # noqa: A002 - PyTorch's names
        return self._inplace("clamp_", lambda x: x.clamp(min, max))

    clip_ = clamp_

    def relu_(self):
        return self._inplace("relu_", lambda x: x.relu())

    def __iadd__(self, other):
        return self.add_(other)

    def __isub__(self, other):
        return self.sub_(other)

    def __imul__(self, other):
        return self.mul_(other)

    def __itruediv__(self, other):
        return self.div_(other)

    def zero_(self):
        return self.fill_(0)

    def fill_(self, value):
        self._check_inplace("fill_")
        if isinstance(value, Tensor):
            if value.array.size != 1:
                raise ValueError(f"fill_: value must be a number or a one-element tensor, got "
                                 f"shape {value.shape}")
            value = value.item()
        self.array[...] = value
        self._bump_version()
        return self

    def copy_(self, source, non_blocking=False):
        """Copy ``source`` (broadcast to this shape) into this tensor's storage."""
        self._check_inplace("copy_")
        if isinstance(source, Tensor) and source.requires_grad and is_grad_enabled():
            source_tensor = source.to(self.device)
            return self._inplace("copy_", lambda x: source_tensor.expand(self.shape).to(
                self.dtype).clone(), source_tensor)
        source = source.array if isinstance(source, Tensor) else source
        if tuple(np.shape(source)) != self.shape:
            xp = get_array_module(self.array)
            try:
                xp.broadcast_to(source, self.shape)
            except ValueError:
                raise ValueError(f"copy_: source of shape {tuple(np.shape(source))} cannot be "
                                 f"copied into a tensor of shape {self.shape}") from None
        self.array[...] = to_device(source, self.device) if get_array_module(source) is not \
            get_array_module(self.array) else source
        self._bump_version()
        return self

    def __setitem__(self, key, value):
        if is_grad_enabled() and (self.requires_grad or
                                  (isinstance(value, Tensor) and value.requires_grad)):
            raise RuntimeError(
                "__setitem__: in-place assignment into a tensor that is part of a recorded graph is not "
                "supported; build the result out of place (torch.where, cat), or assign under "
                "no_grad()")
        key = _raw_key(key)
        self.array[key] = value.array if isinstance(value, Tensor) else value
        self._bump_version()

    def clone(self):
        return ops.Clone.apply(self)

    def contiguous(self):
        return self

    # ------------------------------------------------------------------ arithmetic
    def _operand(self, other):
        if isinstance(other, Tensor):
            return other
        xp = get_array_module(self.array)
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
        other = other.array if isinstance(other, Tensor) else other
        return Tensor._wrap(fn(self.array, other))

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
        return Tensor._wrap(~self.array)

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
        return Tensor._wrap(get_array_module(self.array).sign(self.array))

    def softmax(self, dim):
        from .nn import functional as F
        return F.softmax(self, dim)

    def log_softmax(self, dim):
        from .nn import functional as F
        return F.log_softmax(self, dim)

    # ------------------------------------------------------------------ reductions
    def sum(self, dim=None, keepdim=False):
        dims = ops.normalize_dims("sum", dim, self.ndim)
        if self.dtype == np.float16:
            # float16 stops at 65504 and keeps about 3 digits: accumulate in float32 and round
            # once, as PyTorch does (a 64x64 map of 1000s would otherwise sum to inf).
            return self.float().sum(dim, keepdim).half()
        return ops.Sum.apply(self, dims=dims, keepdim=keepdim)

    def mean(self, dim=None, keepdim=False):
        if self.dtype == np.float16:
            return self.float().mean(dim, keepdim).half()
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
        indices = self.array.argmax(axis=axis) if largest else self.array.argmin(axis=axis)
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
            return Tensor._wrap(np.int64(self.array.argmax()) if self.device == "cpu"
                                else self.array.argmax().astype(np.int64))
        return self.max(dim, keepdim).indices

    def argmin(self, dim=None, keepdim=False):
        if dim is None:
            return Tensor._wrap(np.int64(self.array.argmin()) if self.device == "cpu"
                                else self.array.argmin().astype(np.int64))
        return self.min(dim, keepdim).indices

    def gather(self, dim, index):
        """``out[i][j][k] = self[index[i][j][k]][j][k]`` for ``dim=0`` (and so on); differentiable."""
        index = index.array if isinstance(index, Tensor) else np.asarray(index)
        if index.ndim != self.ndim:
            raise ValueError(f"gather: index of shape {tuple(index.shape)} must have as many dimensions "
                             f"as the input of shape {self.shape}")
        dim = dim % self.ndim
        xp = get_array_module(self.array)
        key = []
        for i in range(self.ndim):
            if i == dim:
                key.append(xp.asarray(index))
            else:
                shape = [1] * self.ndim
                shape[i] = index.shape[i]
                key.append(xp.arange(index.shape[i]).reshape(shape))
        return ops.Index.apply(self, key=tuple(key))

    def sort(self, dim=-1, descending=False, stable=False):
        """``(values, indices)`` sorted along ``dim`` (ties keep their order); values differentiable."""
        if self.ndim == 0:
            return ReductionResult(self, Tensor._wrap(get_array_module(self.array).zeros((), np.int64)))
        dim = dim % self.ndim
        xp = get_array_module(self.array)
        keys = self.array.astype(np.int8) if self.dtype.kind == "b" else self.array
        if descending:
            # Reverse, sort stably, reverse back: the largest first, equal values keep their order.
            flipped = xp.flip(keys, axis=dim)
            order = xp.argsort(flipped, axis=dim, kind="stable")
            indices = (self.shape[dim] - 1) - xp.flip(order, axis=dim)
        else:
            indices = xp.argsort(keys, axis=dim, kind="stable")
        indices = indices.astype(np.int64)
        return ReductionResult(self.gather(dim, indices), Tensor._wrap(indices))

    def argsort(self, dim=-1, descending=False, stable=False):
        return self.sort(dim, descending, stable).indices

    def topk(self, k, dim=-1, largest=True, sorted=True):   # noqa: A002 - PyTorch's name
        """The ``k`` largest (``largest=False``: smallest) along ``dim`` as ``(values, indices)``."""
        dim = dim % builtins.max(self.ndim, 1)
        size = self.shape[dim] if self.ndim else 1
        if not 0 <= int(k) <= size:
            raise ValueError(f"topk: k ({k}) out of range for dimension {dim} of size {size} "
                             f"(shape {self.shape})")
        _, order = self.sort(dim, descending=largest)
        key = (slice(None),) * dim + (slice(0, int(k)),)
        indices = Tensor._wrap(order.array[key])
        return ReductionResult(self.gather(dim, indices), indices)

    def norm(self, p="fro", dim=None, keepdim=False, dtype=None):
        """Vector p-norm over ``dim`` (default all elements): ``p`` = 2/"fro", 1, inf, -inf or any number."""
        x = self if dtype is None else self.to(dtype)
        if p in ("fro", 2, 2.0):
            return (x * x).sum(dim, keepdim).sqrt()
        if p in (1, 1.0):
            return x.abs().sum(dim, keepdim)
        if p == float("inf"):
            return x.abs().amax(dim, keepdim)
        if p == float("-inf"):
            return x.abs().amin(dim, keepdim)
        if isinstance(p, (int, float)) and p > 0:
            return (x.abs() ** p).sum(dim, keepdim) ** (1.0 / p)
        raise ValueError(f"norm: unsupported p={p!r} (2, 'fro', 1, inf, -inf or a positive number)")

    def logsumexp(self, dim, keepdim=False):
        """log(sum(exp(x))) computed stably: m + log(sum(exp(x - m))) with m = max (constant)."""
        dims = ops.normalize_dims("logsumexp", dim, self.ndim)
        shift = self.array.max(axis=dims, keepdims=True)
        xp = get_array_module(self.array)
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
        if sorted(d % builtins.max(self.ndim, 1) for d in dims) != list(range(self.ndim)):
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
            extras.append(f"grad_fn=<{self._ctx.name()}>")
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
        return key.array
    if isinstance(key, tuple):
        return tuple(k.array if isinstance(k, Tensor) else k for k in key)
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


def pad(input, pad, mode="constant", value=None):
    """PyTorch's ``F.pad``: ``pad`` lists (before, after) pairs starting from the LAST dimension.

    ``mode``: "constant" (fill with ``value``, default 0), "reflect" (mirror without repeating the
    edge), "replicate" (repeat the edge) or "circular" (wrap around). The non-constant modes index the
    input, so their gradient adds up the copies.
    """
    if mode not in ("constant", "reflect", "replicate", "circular"):
        raise ValueError(f"pad: mode {mode!r} is not one of 'constant', 'reflect', 'replicate', 'circular'")
    if mode != "constant" and value not in (None, 0, 0.0):
        raise ValueError(f"pad: value={value} only applies to mode='constant', got mode {mode!r}")
    if len(pad) % 2 or len(pad) // 2 > input.ndim:
        raise ValueError(f"pad: padding {tuple(pad)} must have an even length of at most "
                         f"2 * {input.ndim} for an input of shape {input.shape}")
    widths = [(0, 0)] * input.ndim
    for i in range(len(pad) // 2):
        before, after = int(pad[2 * i]), int(pad[2 * i + 1])
        if before < 0 or after < 0:
            raise ValueError(f"pad: negative padding {tuple(pad)} is not supported")
        widths[input.ndim - 1 - i] = (before, after)
    if mode == "constant":
        return ops.Pad.apply(input, widths=tuple(widths), value=0.0 if value is None else value)
    out = input
    for dim, (before, after) in enumerate(widths):
        if before or after:
            index = _pad_index(mode, input.shape[dim], before, after, input.shape)
            key = (slice(None),) * dim + (get_array_module(input.array).asarray(index),)
            out = out[key]
    return out


def _pad_index(mode, size, before, after, shape):
    """Which input position each output position copies, along one padded dimension."""
    if mode == "reflect" and (before >= size or after >= size):
        raise ValueError(f"pad: reflect padding ({before}, {after}) must be smaller than the padded "
                         f"dimension of size {size} (input shape {shape})")
    if mode == "circular" and (before > size or after > size):
        raise ValueError(f"pad: circular padding ({before}, {after}) must be at most the padded "
                         f"dimension of size {size} (input shape {shape})")
    positions = np.arange(-before, size + after)
    if mode == "reflect":
        positions = np.abs(positions)
        positions = np.where(positions >= size, 2 * (size - 1) - positions, positions)
    elif mode == "replicate":
        positions = np.clip(positions, 0, size - 1)
    else:
        positions = positions % size
    return positions.astype(np.int64)


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
def max(input, dim=None, keepdim=False): return input.max(dim, keepdim)      # noqa: A001
def min(input, dim=None, keepdim=False): return input.min(dim, keepdim)      # noqa: A001
def argmax(input, dim=None, keepdim=False): return input.argmax(dim, keepdim)
def argmin(input, dim=None, keepdim=False): return input.argmin(dim, keepdim)
def topk(input, k, dim=-1, largest=True, sorted=True): return input.topk(k, dim, largest, sorted)  # noqa: A002
def sort(input, dim=-1, descending=False, stable=False): return input.sort(dim, descending, stable)
def argsort(input, dim=-1, descending=False, stable=False): return input.argsort(dim, descending, stable)
def norm(input, p="fro", dim=None, keepdim=False, dtype=None): return input.norm(p, dim, keepdim, dtype)
def gather(input, dim, index): return input.gather(dim, index)
def squeeze(input, dim=None): return input.squeeze(dim)
def unsqueeze(input, dim): return input.unsqueeze(dim)
def chunk(input, chunks, dim=0): return input.chunk(chunks, dim)
def softmax(input, dim): return input.softmax(dim)
def log_softmax(input, dim): return input.log_softmax(dim)
def numel(input): return input.numel()
def is_tensor(obj): return isinstance(obj, Tensor)


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


def as_tensor(data, dtype=None, device=None):
    """Like ``tensor`` but shares ``data`` when it already has the dtype and device (no copy)."""
    if isinstance(data, Tensor):
        return data.to(device=device, dtype=dtype)
    if get_array_module(data) is not np or isinstance(data, np.ndarray):
        array_device = "cpu" if get_array_module(data) is np else "cuda"
        same_device = device is None or normalize_device(device) == array_device
        if same_device and (dtype is None or np.dtype(dtype) == data.dtype):
            return Tensor._wrap(data)
    return Tensor(data, dtype=dtype, device=device)


def from_numpy(array):
    """Wrap a NumPy array without copying (changes to one show in the other)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    _check_element_type(array.dtype, "data", op="from_numpy")
    if not array.dtype.isnative:
        raise ValueError(f"from_numpy: the array's dtype {array.dtype.str} is not in the machine's byte order, "
                         "and a tensor that shares its memory cannot convert it; use Tensor(array), which "
                         "copies into native order")
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
