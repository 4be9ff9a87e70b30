"""The autograd engine: ``Function`` nodes, grad mode and the backward pass.

How it works, in four sentences:

1. Every differentiable op is a :class:`Function`. ``Op.apply(*tensors)`` runs
   ``forward`` on the raw arrays and, if any input requires a gradient, links the
   result to the Function instance (``out._ctx``), which remembers its parents.
2. ``tensor.backward()`` orders the Function nodes topologically (an iterative
   depth-first search, so a 20,000-op chain needs no recursion), then walks them
   from the output back to the leaves.
3. Each node's ``backward`` receives the *sum* of the gradients of everything that
   consumed its output (that is the multivariate chain rule), and returns one
   gradient per input.  Leaves accumulate into ``.grad`` (``+=``, as PyTorch).
4. ``backward`` methods are written with ordinary Tensor ops. Normally they run
   under ``no_grad`` (nothing is recorded, nothing costs extra); with
   ``create_graph=True`` they are recorded like any forward computation, so the
   gradient is itself differentiable and second derivatives come for free.

One rule for speed: a Function may also define ``fast_backward``, the same gradients
computed on raw arrays (usually by one fused kernel). The engine calls it instead of
``backward`` whenever no graph is being recorded, i.e. always except under
``create_graph=True``. ``backward`` stays the derivation, and a test checks that both
give the same gradients for every Function that has a fast one.
"""
from __future__ import annotations

import functools
import sys
import threading
import traceback
import weakref

__all__ = [
    "Function", "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled",
    "detect_anomaly", "is_anomaly_enabled", "backward", "Variable", "AccumulateGrad", "inference_mode",
]


class _State(threading.local):
    def __init__(self):
        self.grad_enabled = True
        self.anomaly = False
        self.in_backward = False   # anomaly mode blames the node being differentiated


_state = _State()

# Callables ``observer(node, grad_output, input_grads)`` run after each node's backward
# (before its saved tensors are freed). The backprop tracer in ``tinygrad_cnn.viz`` uses it.
backward_observers = []


def is_grad_enabled() -> bool:
    """True when new operations are recorded for backward."""
    return _state.grad_enabled


class set_grad_enabled:
    """Context manager and decorator that turns recording on or off.

    ``with no_grad():`` is ``set_grad_enabled(False)``. Usable as a decorator:
    each call of the decorated function runs with the chosen mode.
    """

    def __init__(self, mode: bool = False):
        self.mode = bool(mode)
        self._previous = []

    def __enter__(self):
        self._previous.append(_state.grad_enabled)
        _state.grad_enabled = self.mode
        return self

    def __exit__(self, *exc):
        _state.grad_enabled = self._previous.pop()
        return False

    def __call__(self, fn):
        mode = self.mode

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with set_grad_enabled(mode):
                return fn(*args, **kwargs)

        return wrapper


class no_grad(set_grad_enabled):
    """Disable graph recording: ``with tinygrad_cnn.no_grad(): ...`` or ``@no_grad()``."""

    def __init__(self):
        super().__init__(False)


class inference_mode(set_grad_enabled):
    """PyTorch's ``inference_mode(mode=True)``: here the same as ``no_grad()`` when ``mode`` is True."""

    def __init__(self, mode: bool = True):
        super().__init__(not mode)


class enable_grad(set_grad_enabled):
    """Re-enable graph recording inside a ``no_grad`` block."""

    def __init__(self):
        super().__init__(True)


# ---------------------------------------------------------------------------
# Anomaly detection
# ---------------------------------------------------------------------------

def is_anomaly_enabled() -> bool:
    return _state.anomaly


class detect_anomaly:
    """Stop at the first op whose forward or backward produces NaN or Inf.

    The error names the op and the line of user code that created it
    (``file:line``), recorded when the op ran forward. Slow: every output and
    every gradient is scanned. Use as a context manager or decorator.
    """

    def __init__(self, check_nan: bool = True):
        self.check_nan = check_nan
        self._previous = []

    def __enter__(self):
        self._previous.append(_state.anomaly)
        _state.anomaly = self.check_nan
        return self

    def __exit__(self, *exc):
        _state.anomaly = self._previous.pop()
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with detect_anomaly(self.check_nan):
                return fn(*args, **kwargs)

        return wrapper


def _user_frame() -> str:
    """file:line of the innermost stack frame outside this package."""
    import os
    package_dir = os.path.dirname(os.path.abspath(__file__))
    for frame in reversed(traceback.extract_stack()[:-1]):
        if not os.path.abspath(frame.filename).startswith(package_dir):
            return f"{frame.filename}:{frame.lineno} ({frame.line})"
    return "<unknown>"


def _has_non_finite(array) -> bool:
    if array.dtype.kind not in "fc":
        return False
    from .backend import get_array_module
    xp = get_array_module(array)
    return not bool(xp.isfinite(array).all())


def _storage_owner(array):
    """The array that owns ``array``'s memory (NumPy and CuPy views point to it as ``base``)."""
    base = getattr(array, "base", None)
    return array if base is None else base


# ---------------------------------------------------------------------------
# Function
# ---------------------------------------------------------------------------

class Function:
    """One differentiable operation and, once applied, one node of the graph.

    Subclasses define::

        def forward(self, *arrays, **options) -> array       # raw NumPy/CuPy arrays
        def backward(self, grad_output: Tensor) -> Tensor | tuple[Tensor | None, ...]

    ``forward`` may call ``self.save_for_backward(...)`` with any of its input
    arrays or its output array: they come back in ``backward`` as
    ``self.saved_tensors``, the *Tensors* themselves, so a backward written in
    Tensor ops is differentiable again. Other state (masks, indices, options)
    is kept as plain attributes and is treated as constant.

    Optionally::

        def fast_backward(self, grad_output: array) -> array | tuple[array | None, ...]

    the same gradients on raw arrays, which the engine calls instead of ``backward``
    when no graph is being recorded (see the module docstring).
    """

    fast_backward = None

    # Fields the engine keeps after the graph is released.
    _engine_fields = ("parents", "needs_input_grad", "output_ref", "output_hooks", "out_shape",
                      "out_dtype", "_released", "created_at")

    def __init__(self):
        self.parents = ()
        self.needs_input_grad = ()
        self.output_ref = None
        # The output's hooks, held here too: they must run even when the output Tensor
        # itself is gone (``(x * 2).register_hook(h)`` and the product is never named).
        self.output_hooks = None
        self._released = False
        self._to_save = ()
        self._saved = None
        self.created_at = None

    # -- used by forward ---------------------------------------------------
    def save_for_backward(self, *items):
        self._to_save = items

    @property
    def saved_tensors(self):
        if self._released:
            raise RuntimeError(
                f"{type(self).__name__}: trying to backward through the graph a second time "
                "(its saved tensors were freed after the first backward). "
                "Pass retain_graph=True to the first backward() if you need to call it again.")
        return self._saved

    def forward(self, *arrays, **options):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must define forward")

    def backward(self, grad_output):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must define backward")

    # -- graph construction ------------------------------------------------
    @classmethod
    def apply(cls, *inputs, **options):
        """Run the op on Tensors (``None`` allowed for optional inputs); return a Tensor."""
        from .tensor import Tensor

        node = cls()
        device = None
        arrays = []
        for i, t in enumerate(inputs):
            if t is None:
                arrays.append(None)
                continue
            if not isinstance(t, Tensor):
                raise TypeError(f"{cls.__name__}: input {i} must be a Tensor, got {type(t).__name__}")
            if device is None:
                device = t.device
            elif t.device != device:
                raise RuntimeError(
                    f"{cls.__name__}: expected all tensors on the same device, "
                    f"got {device} and {t.device} (input {i})")
            arrays.append(t.array)
        record = _state.grad_enabled and any(t is not None and t.requires_grad for t in inputs)
        output = node.forward(*arrays, **options)
        out = Tensor._wrap(output, requires_grad=record)
        out_owner = getattr(output, "base", None)
        if out_owner is not None:
            for t, a in zip(inputs, arrays):
                if a is not None and (a is out_owner or getattr(a, "base", None) is out_owner):
                    # A view (reshape, slice, permutation): in-place changes to one are changes
                    # to the other, so they count versions together.
                    out._version_counter, out._base = t._version_counter, t
                    break
        if _state.anomaly and not _state.in_backward and _has_non_finite(output):
            raise RuntimeError(
                f"detect_anomaly: {cls.__name__} forward produced NaN or Inf "
                f"(output shape {tuple(output.shape)}), created at {_user_frame()}")
        if not record:
            return out
        node.needs_input_grad = tuple(t is not None and t.requires_grad for t in inputs)
        node.parents = tuple(
            None if (t is None or not t.requires_grad) else (t._ctx if t._ctx is not None else t)
            for t in inputs)
        node._saved = tuple(node._resolve(item, inputs, output, out) for item in node._to_save)
        node._to_save = ()
        node._saved_versions = node._versions_to_check(inputs, arrays, out, output)
        node.output_ref = weakref.ref(out)
        node.out_shape, node.out_dtype = tuple(output.shape), output.dtype
        if _state.anomaly:
            node.created_at = _user_frame()
        out._ctx = node
        return out

    @staticmethod
    def _resolve(item, inputs, output, out):
        """Map a saved raw array back to the Tensor it belongs to."""
        from .tensor import Tensor
        if item is None or isinstance(item, Tensor):
            return item
        if item is output:
            return out
        for t in inputs:
            if t is not None and t.array is item:
                return t
        wrapped = Tensor._wrap(item, requires_grad=False)
        owner = _storage_owner(item)
        for t in (*inputs, out):
            if t is not None and _storage_owner(t.array) is owner:
                wrapped._version_counter = t._version_counter    # a view of an input or output
                break
        return wrapped

    def _versions_to_check(self, inputs, arrays, out, output):
        """``(counter, version, shape, dtype)`` for every saved tensor and every kept array that
        views an input or the output: backward reads them, so they must not change in place before
        it runs. The counters, not the tensors, are kept: a node must not hold its own output."""
        tensors = {id(t): t for t in self._saved if t is not None}
        by_owner = {id(_storage_owner(a)): t for t, a in zip((*inputs, out), (*arrays, output))
                    if t is not None}
        for name, value in vars(self).items():
            base = getattr(value, "base", False)          # arrays have .base (None for an owner)
            if base is False or name == "_saved":
                continue
            t = by_owner.get(id(value if base is None else base))
            if t is not None:
                tensors.setdefault(id(t), t)
        return tuple((t._version_counter, t._version_counter.value, t.shape, t.dtype)
                     for t in tensors.values())

    def check_versions(self):
        """Raise if a tensor this node's backward reads was modified in place since forward."""
        for counter, version, shape, dtype in getattr(self, "_saved_versions", ()):
            if counter.value != version:
                raise RuntimeError(
                    f"{type(self).__name__}: one of the tensors its backward needs (shape "
                    f"{shape}, dtype {dtype}) was modified by an in-place operation after "
                    f"it was used: it is at version {counter.value}, expected version {version}. "
                    "clone() it before changing it, or change it after backward().")

    def release(self):
        """Free everything backward needed; keep only the links of the graph."""
        for name in list(vars(self)):
            if name not in self._engine_fields:
                delattr(self, name)
        self._saved = None
        self._released = True

    # -- inspecting the graph (PyTorch's names) ------------------------------
    def name(self) -> str:
        """PyTorch-style node name: ``AddBackward0`` for the ``Add`` op."""
        return f"{type(self).__name__}Backward0"

    @property
    def next_functions(self):
        """One ``(node, 0)`` per input: its Function, ``AccumulateGrad`` for a leaf that requires
        grad, ``None`` for an input without gradient (the graph walk of PyTorch's autograd tutorial)."""
        return tuple((None, 0) if p is None else (p if isinstance(p, Function) else AccumulateGrad(p), 0)
                     for p in self.parents)

    def __repr__(self):
        return f"<{self.name()} object at {id(self):#x}>"


class AccumulateGrad:
    """The end of a graph walk: the leaf tensor (``.variable``) whose ``.grad`` a backward fills."""

    next_functions = ()

    def __init__(self, variable):
        self.variable = variable

    def name(self) -> str:
        return "AccumulateGrad"

    def __repr__(self):
        return f"<AccumulateGrad object at {id(self):#x}>"


def Variable(data, requires_grad=False, volatile=False):  # noqa: N802 - PyTorch's (deprecated) name
    """PyTorch's deprecated ``Variable(tensor, requires_grad=False)``: returns a Tensor.

    As in PyTorch since 0.4, a Variable is just a Tensor: a Tensor argument is returned itself (with
    ``requires_grad`` set when asked), anything else becomes a new Tensor. ``volatile`` is ignored
    (use ``no_grad()``).
    """
    from .tensor import Tensor
    tensor = data if isinstance(data, Tensor) else Tensor(data)
    if requires_grad:
        tensor.requires_grad_(True)
    return tensor


# ---------------------------------------------------------------------------
# The backward pass
# ---------------------------------------------------------------------------

def _topological_order(root):
    """Function nodes reachable from ``root``, every node after all of its inputs."""
    order, expanded = [], set()
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            order.append(node)
            continue
        if id(node) in expanded:
            continue
        expanded.add(id(node))
        stack.append((node, True))
        for parent in node.parents:
            if isinstance(parent, Function) and id(parent) not in expanded:
                stack.append((parent, False))
    return order


def _apply_hooks(hooks, grad):
    for hook in list(hooks.values()):
        result = hook(grad)
        if result is not None:
            if tuple(result.shape) != tuple(grad.shape):
                raise RuntimeError(
                    f"hook returned a gradient of shape {tuple(result.shape)} for a tensor of "
                    f"shape {tuple(grad.shape)}")
            grad = result
    return grad


def _referenced_only_by(tensor) -> bool:
    """True when nothing but ``tensor`` holds its array (CPython reference counts, the test
    NumPy uses to reuse temporaries): no other Tensor, graph node or user variable can see
    a later in-place change of it."""
    if sys.implementation.name != "cpython":
        return False
    array = tensor.array
    # The references counted: tensor.array, the local name and getrefcount's argument.
    return getattr(array, "base", True) is None and sys.getrefcount(array) <= 3


def _accumulate_into_grad(tensor, grad, create_graph, may_take=False):
    """``tensor.grad += grad`` (set on the first call). ``may_take``: ``grad`` is a Tensor that
    only the engine has seen (not the caller's root gradient, not given to a hook), so its
    array may become ``.grad`` without a copy when no one else holds the array either."""
    if tensor.grad is None:
        if create_graph:
            tensor.grad = grad
        elif may_take and _referenced_only_by(grad):
            # A gradient computed for this leaf alone becomes ``.grad`` as it is: copying the
            # gradient of a 9216 x 4096 layer costs more than computing some layers' gradients.
            tensor.grad = type(grad)._wrap(grad.array, False)
        else:
            # Shared (``a + a`` sends one array to two leaves; a hook or the caller may hold
            # it): a later ``+=`` into one ``.grad`` must not change the others.
            tensor.grad = type(grad)._wrap(grad.array.copy(), False)
    elif create_graph:
        tensor.grad = tensor.grad + grad
    else:
        tensor.grad.array += grad.array


def _wrap_arrays(grads):
    """The raw arrays returned by a ``fast_backward`` as Tensors (no copy, same device)."""
    from .tensor import Tensor
    if not isinstance(grads, tuple):
        return Tensor._wrap(grads)
    return tuple(None if g is None else Tensor._wrap(g) for g in grads)


def backward(root, gradient, retain_graph=False, create_graph=False):
    """Backpropagate ``gradient`` (d loss / d root) to every leaf that requires grad."""
    from .tensor import Tensor

    leaf_grads = {}   # id(leaf) -> [leaf, summed gradient]

    def send(parent, grad, owner):
        dtype = parent.dtype if isinstance(parent, Tensor) else parent.out_dtype
        if grad.dtype != dtype:
            grad = grad.to(dtype)
        if isinstance(parent, Tensor):
            entry = leaf_grads.get(id(parent))
            if entry is None:
                leaf_grads[id(parent)] = [parent, grad]
            else:
                entry[1] = entry[1] + grad
        else:
            existing = node_grads.get(id(parent))
            node_grads[id(parent)] = grad if existing is None else existing + grad

    with set_grad_enabled(create_graph):
        if root._ctx is None:
            leaf_grads[id(root)] = [root, gradient]
            order = []
        else:
            order = _topological_order(root._ctx)
        node_grads = {} if root._ctx is None else {id(root._ctx): gradient}
        for node in reversed(order):
            grad = node_grads.pop(id(node), None)
            if grad is None:
                continue
            name = type(node).__name__
            if node._released:
                raise RuntimeError(
                    f"{name}: trying to backward through the graph a second time (its saved "
                    "tensors were freed after the first backward). Pass retain_graph=True to the "
                    "first backward() if you need to call it again.")
            out = node.output_ref() if node.output_ref is not None else None
            if node.output_hooks:
                grad = _apply_hooks(node.output_hooks, grad)
            if out is not None:
                if out._retains_grad:
                    _accumulate_into_grad(out, grad, create_graph)
            node.check_versions()
            previous, _state.in_backward = _state.in_backward, True
            try:
                if node.fast_backward is not None and not create_graph:
                    input_grads = _wrap_arrays(node.fast_backward(grad.array))
                else:
                    input_grads = node.backward(grad)
            finally:
                _state.in_backward = previous
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            if len(input_grads) != len(node.parents):
                raise RuntimeError(
                    f"{name}.backward returned {len(input_grads)} gradients for "
                    f"{len(node.parents)} inputs")
            for i, (parent, g) in enumerate(zip(node.parents, input_grads)):
                if parent is None or g is None:
                    continue
                expected = parent.shape if isinstance(parent, Tensor) else parent.out_shape
                if tuple(g.shape) != tuple(expected):
                    raise RuntimeError(
                        f"{name}.backward returned a gradient of shape {tuple(g.shape)} for "
                        f"input {i} of shape {tuple(expected)}")
                if _state.anomaly and _has_non_finite(g.array):
                    raise RuntimeError(
                        f"detect_anomaly: {name} backward produced NaN or Inf in the gradient "
                        f"of input {i}; the op was created at {node.created_at or '<unknown>'}")
                send(parent, g, node)
            for observer in backward_observers:
                observer(node, grad, input_grads)
            if not retain_graph:
                node.release()
        for leaf, grad in leaf_grads.values():
            may_take = grad is not gradient and not leaf._hooks
            if leaf._hooks:
                grad = _apply_hooks(leaf._hooks, grad)
            _accumulate_into_grad(leaf, grad, create_graph, may_take)
        for leaf, _ in leaf_grads.values():
            if leaf._post_accumulate_grad_hooks:
                for hook in list(leaf._post_accumulate_grad_hooks.values()):
                    hook(leaf)

