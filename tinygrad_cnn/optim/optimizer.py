"""The optimizer base class: parameter groups, per-parameter state, zero_grad, state_dict.

Subclasses implement :meth:`Optimizer._update_group`, which walks one parameter group and calls
a small array-level update function (``_sgd_update``, ``_adam_update``, ...). Those functions
are registered as the NumPy references of the kernels ``"sgd_update"``, ``"adam_update"``, ...
in :mod:`tinygrad_cnn.backend`, so a fused Numba or CUDA kernel can replace them without
touching the optimizer classes: ``backend.kernel(name, xp)`` picks the implementation.
"""
from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Iterable, MutableMapping

import numpy as np

from .. import backend

__all__ = ["Optimizer", "required"]


def _lerp_(start, end, weight: float):
    """``start <- start + weight * (end - start)`` in place (an exponential moving average).

    For weight >= 0.5 it is evaluated from the ``end`` side, ``end - (1 - weight) * (end - start)``,
    which is exact at weight = 1 and matches PyTorch's ``lerp_`` rounding behaviour.
    """
    if weight < 0.5:
        start += weight * (end - start)
    else:
        start[...] = end - (1 - weight) * (end - start)
    return start


class _RequiredParameter:
    """Marks a hyperparameter without default, to be given per group or to the constructor."""

    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()


def _tensor_class():
    # Imported lazily: the package __init__ may import optim before the Tensor module is ready.
    from .. import Tensor
    return Tensor


class _ParamState(MutableMapping):
    """``{parameter: state dict}`` keyed by parameter identity.

    Tensors overload ``==`` elementwise, so they cannot be ordinary dict keys; this mapping
    uses ``id(param)`` and keeps a reference to the parameter so the id stays valid.
    """

    def __init__(self):
        self._items: dict[int, tuple[object, dict]] = {}

    def __getitem__(self, param):
        try:
            return self._items[id(param)][1]
        except KeyError:
            raise KeyError(f"no optimizer state for parameter of shape {getattr(param, 'shape', '?')}") from None

    def __setitem__(self, param, value):
        self._items[id(param)] = (param, value)

    def __delitem__(self, param):
        del self._items[id(param)]

    def __contains__(self, param):
        return id(param) in self._items

    def __iter__(self):
        return (param for param, _ in self._items.values())

    def __len__(self):
        return len(self._items)

    def __repr__(self):
        return f"_ParamState({len(self)} parameters)"


def _is_named_param(item, tensor_class) -> bool:
    return (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
            and isinstance(item[1], tensor_class))


def _check_compat_flags(name: str, foreach, fused) -> None:
    """``foreach``/``fused`` are accepted as in PyTorch; only their type is checked."""
    for flag, value in (("foreach", foreach), ("fused", fused)):
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{name}: {flag} must be None or a bool, got {value!r}")


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _copy_value(value):
    """Deep copy of a state value; arrays are copied with their own module (NumPy or CuPy)."""
    if isinstance(value, dict):
        return {k: _copy_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_copy_value(v) for v in value)
    if hasattr(value, "copy") and hasattr(value, "shape"):
        return value.copy()
    return copy.copy(value)


class Optimizer:
    """Base class of all optimizers (PyTorch's ``torch.optim.Optimizer`` interface).

    ``params`` is an iterable of Tensors, of ``(name, Tensor)`` pairs (``model.named_parameters()``;
    the names are kept in ``group["param_names"]``), or of dicts
    ``{"params": [...], <hyperparameter>: value}`` (parameter groups; missing hyperparameters are
    taken from ``defaults``).

    Every optimizer also takes PyTorch's keyword ``maximize=False`` (ascend instead of descend:
    the gradient is negated before anything else, weight decay included) and accepts
    ``foreach`` and ``fused`` for compatibility; they change nothing here, because every update
    already works on whole arrays and uses the backend's fused kernel where one is registered.

    Attributes:
        defaults: ``{name: value}`` default hyperparameters of this optimizer.
        param_groups: list of dicts; each holds ``"params"`` (a list of Tensors) and every
            hyperparameter. Schedulers change ``group["lr"]`` between steps.
        state: ``{parameter: {name: array or int}}`` per-parameter buffers (momentum, moments,
            step counters), created on the first step that updates that parameter.
    """

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.state = _ParamState()
        self.param_groups: list[dict] = []
        name = type(self).__name__
        Tensor = _tensor_class()
        if isinstance(params, Tensor):
            raise TypeError(f"{name}: params must be an iterable of Tensors or dicts, but got a single "
                            "Tensor; pass [tensor] or model.parameters()")
        if isinstance(params, dict):
            raise TypeError(f"{name}: params must be an iterable of Tensors or dicts, but got a dict; "
                            "pass a list of parameter groups, e.g. [{'params': ...}]")
        if isinstance(params, (set, frozenset)):
            raise TypeError(f"{name}: params must be an ordered iterable (list, tuple, generator), "
                            "not a set: the order of a set changes between runs, which would break "
                            "state_dict indexing")
        if not isinstance(params, Iterable):
            raise TypeError(f"{name}: params must be an iterable of Tensors or dicts, got "
                            f"{type(params).__name__}")
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError(f"{name} got an empty parameter list (params=[]); "
                             "pass at least one Tensor to optimize")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group: dict) -> None:
        """Add a group ``{"params": [...], <hyperparameter>: value, ...}`` to :attr:`param_groups`.

        ``"params"`` holds Tensors or ``(name, Tensor)`` pairs (then ``group["param_names"]`` keeps
        the names; all groups must agree). Hyperparameters not given are copied from
        :attr:`defaults`. Raises ``TypeError`` for non-Tensor parameters and ``ValueError`` for a
        parameter that is already optimized (in this group or another one), an empty group or an
        invalid hyperparameter.
        """
        name = type(self).__name__
        Tensor = _tensor_class()
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}: a parameter group must be a dict, got {type(param_group).__name__}")
        group_index = len(self.param_groups)
        params = param_group.get("params")
        if params is None:
            raise ValueError(f"{name}: parameter group {group_index} has no 'params' entry")
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(f"{name}: parameter group {group_index}: 'params' must be an ordered "
                            "iterable, not a set")
        else:
            params = list(params)
        if len(params) == 0:
            raise ValueError(f"{name}: parameter group {group_index} has an empty 'params' list")
        param_names = None
        if all(_is_named_param(item, Tensor) for item in params):
            param_names = [item[0] for item in params]
            params = [item[1] for item in params]
        elif "param_names" in param_group:
            param_names = list(param_group["param_names"])
            if len(param_names) != len(params):
                raise ValueError(f"{name}: parameter group {group_index} has {len(params)} params but "
                                 f"{len(param_names)} param_names")
        if self.param_groups and (param_names is None) != ("param_names" not in self.param_groups[0]):
            mismatch = ("has no parameter names but the earlier groups have them" if param_names is None
                        else "has parameter names but the earlier groups have none")
            raise ValueError(f"{name}: parameter group {group_index} {mismatch}; give every group as "
                             "(name, Tensor) pairs or none of them")
        seen = {id(p): i for i, g in enumerate(self.param_groups) for p in g["params"]}
        in_group: set[int] = set()
        for position, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"{name}: params[{position}] of parameter group {group_index} is a "
                                f"{type(p).__name__}, expected a Tensor")
            if not p.is_leaf:
                raise ValueError(f"{name}: params[{position}] of parameter group {group_index} is not a "
                                 "leaf Tensor (it was computed from other tensors); optimize the "
                                 "leaves, e.g. the module's parameters")
            if id(p) in in_group:
                raise ValueError(f"{name}: params[{position}] (shape {tuple(p.shape)}) appears twice in "
                                 f"parameter group {group_index}")
            if id(p) in seen:
                raise ValueError(f"{name}: params[{position}] (shape {tuple(p.shape)}) of parameter group "
                                 f"{group_index} is already in parameter group {seen[id(p)]}; "
                                 "each parameter may be given only once")
            in_group.add(id(p))
        group = {"params": params}
        if param_names is not None:
            group["param_names"] = param_names
        for key, value in param_group.items():
            if key not in ("params", "param_names"):
                group[key] = value
        for key, default in self.defaults.items():
            if key not in group:
                if default is required:
                    raise ValueError(f"{name}: parameter group {group_index} does not specify the "
                                     f"required hyperparameter {key!r}")
                group[key] = default
        if not isinstance(group.get("maximize", False), bool):
            raise ValueError(f"{name}: maximize must be a bool, got {group['maximize']!r}")
        self._validate_group(group, group_index)
        self.param_groups.append(group)

    def _validate_group(self, group: dict, group_index: int) -> None:
        """Check the hyperparameters of one group; subclasses extend this."""

    def _check_nonnegative(self, group: dict, key: str, group_index: int) -> None:
        value = group[key]
        if not _is_number(value) or not (value >= 0.0) or math.isinf(value):
            where = f" in parameter group {group_index}" if group_index > 0 else ""
            raise ValueError(f"{type(self).__name__}: invalid {key}={value!r}{where}; "
                             "expected a finite number >= 0")

    # ------------------------------------------------------------------ stepping
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all optimized parameters.

        ``set_to_none=True`` (default) sets ``p.grad = None`` (saves memory and lets the next
        step skip parameters that got no gradient); ``False`` fills the gradients with zeros.
        """
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                    continue
                grad = p.grad
                data = grad.array
                writeable = getattr(getattr(data, "flags", None), "writeable", True)
                if getattr(grad, "requires_grad", False) or not writeable:
                    # A gradient built with create_graph is part of a graph: replace, don't mutate.
                    xp = backend.get_array_module(data)
                    p.grad = type(p)(xp.zeros_like(data))
                else:
                    data[...] = 0

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns ``closure()`` if given.

        ``closure`` re-evaluates the model and returns the loss (needed by line-search methods;
        the optimizers here call it once, before the update, like PyTorch).
        """
        loss = None
        if closure is not None:
            loss = closure()
        for group in self.param_groups:
            self._update_group(group)
        return loss

    def _update_group(self, group: dict) -> None:
        raise NotImplementedError

    def _params_with_grad(self, group: dict):
        """Yield ``(param, param_array, grad_array)`` for parameters that should be updated.

        With ``maximize`` the gradient array is a negated copy (the stored ``.grad`` is untouched).
        """
        name = type(self).__name__
        maximize = group.get("maximize", False)
        for p in group["params"]:
            if p.grad is None or not p.requires_grad:
                continue
            grad = p.grad.array
            param = p.array
            if grad.shape != param.shape:
                raise ValueError(f"{name}.step: gradient of shape {tuple(grad.shape)} does not match its "
                                 f"parameter of shape {tuple(param.shape)}")
            if backend.get_array_module(grad) is not backend.get_array_module(param):
                raise ValueError(f"{name}.step: gradient and parameter of shape {tuple(param.shape)} are "
                                 "on different devices")
            if not getattr(param.flags, "writeable", True):
                raise ValueError(f"{name}.step: the parameter of shape {tuple(param.shape)} holds a read-only "
                                 "array (e.g. a memory-mapped or broadcast view), and optimizers update "
                                 "parameters in place; give it a writable copy")
            p._bump_version()    # the update is in place: a graph that saved p is now stale
            yield p, param, (-grad if maximize else grad)

    @staticmethod
    def _kernel(kernel_name: str, param_array):
        return backend.kernel(kernel_name, backend.get_array_module(param_array))

    # ------------------------------------------------------------------ state dict
    def state_dict(self) -> dict:
        """``{"state": {index: {...}}, "param_groups": [{..., "params": [index, ...]}]}``.

        Parameters are replaced by their position in the flattened list of all groups, as in
        PyTorch, so the dict can be loaded into an optimizer built over new (but matching)
        parameters. Arrays are copies: stepping afterwards does not change a saved dict.
        Use :func:`tinygrad_cnn.optim.flatten_state` to store it in an ``.npz`` file.
        """
        index_of: dict[int, int] = {}
        groups = []
        for group in self.param_groups:
            packed = {k: _copy_value(v) for k, v in group.items() if k != "params"}
            indices = []
            for p in group["params"]:
                index_of.setdefault(id(p), len(index_of))
                indices.append(index_of[id(p)])
            packed["params"] = indices
            groups.append(packed)
        state = {}
        for p, values in self.state._items.values():
            if id(p) in index_of:
                state[index_of[id(p)]] = _copy_value(values)
        state = dict(sorted(state.items()))
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore hyperparameters and buffers saved by :meth:`state_dict`.

        The optimizer must have the same number of groups with the same number of parameters.
        Buffers are copied, moved to each parameter's device and cast to its dtype (step
        counters stay Python ints), so later steps are bit-identical to an uninterrupted run.
        """
        name = type(self).__name__
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise ValueError(f"{name}.load_state_dict: expected a dict with keys 'state' and "
                             "'param_groups' (as returned by state_dict())")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: the saved state has {len(saved_groups)} parameter "
                             f"groups but the optimizer has {len(self.param_groups)}")
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{name}.load_state_dict: parameter group {i} has "
                                 f"{len(group['params'])} parameters but the saved group has "
                                 f"{len(saved['params'])}")
        param_of: dict[int, object] = {}
        for saved, group in zip(saved_groups, self.param_groups):
            for index, p in zip(saved["params"], group["params"]):
                param_of[int(index)] = p
        new_state = _ParamState()
        for index, values in state_dict["state"].items():
            index = int(index)
            if index not in param_of:
                raise ValueError(f"{name}.load_state_dict: the saved state refers to parameter index "
                                 f"{index}, which no parameter group lists")
            p = param_of[index]
            new_state[p] = {key: self._restore_value(p, key, value, index)
                            for key, value in values.items()}
        new_groups = []
        for saved, group in zip(saved_groups, self.param_groups):
            restored = {k: _copy_value(v) for k, v in saved.items() if k != "params"}
            restored["params"] = group["params"]
            # A state dict written before an option existed keeps that option's default.
            for key, default in self.defaults.items():
                restored.setdefault(key, default)
            new_groups.append(restored)
        self.state = new_state
        self.param_groups = new_groups

    def _restore_value(self, p, key, value, index):
        if key == "step":
            return int(value)
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            if tuple(value.shape) != tuple(p.shape):
                raise ValueError(f"{type(self).__name__}.load_state_dict: state {key!r} of parameter "
                                 f"{index} has shape {tuple(value.shape)} but the parameter has shape "
                                 f"{tuple(p.shape)}")
            xp = backend.get_array_module(p.array)
            if xp is np:
                return np.array(backend.to_host(value), dtype=p.array.dtype, copy=True)
            return xp.array(value, dtype=p.array.dtype, copy=True)
        return _copy_value(value)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)
