"""``Module``: the base class of every layer and model (PyTorch's ``torch.nn.Module``).

A module owns three ordered registries, filled automatically by attribute assignment:

* ``_parameters``: :class:`Parameter` objects (learnable, returned by ``parameters()``),
* ``_buffers``: Tensors that are state but not learned (BatchNorm's running statistics),
* ``_modules``: child modules, which makes the model a tree.

Everything else (``parameters()``, ``state_dict()``, ``train()``, ``to()``, ``repr``) walks
that tree. Names in ``state_dict()`` are the dotted attribute paths (``layer1.0.conv1.weight``),
exactly as PyTorch builds them, so checkpoints converted from PyTorch load by name.
"""
from __future__ import annotations

import itertools
import weakref
from collections import OrderedDict, namedtuple

import numpy as np

from ... import backend
from ...tensor import Tensor
from ..parameter import Parameter

__all__ = ["Module", "RemovableHandle"]


class RemovableHandle:
    """Returned by ``register_forward_hook``: ``handle.remove()`` unregisters the hook.

    Also a context manager: ``with module.register_forward_hook(fn): ...`` removes it at exit.
    """

    _next_id = itertools.count()

    def __init__(self, hooks_dict: OrderedDict):
        self.id = next(RemovableHandle._next_id)
        self._hooks_ref = weakref.ref(hooks_dict)

    def remove(self) -> None:
        hooks = self._hooks_ref()
        if hooks is not None:
            hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


class _IncompatibleKeys(namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """``(missing_keys, unexpected_keys)`` returned by ``load_state_dict``."""

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


def _addindent(text: str, spaces: int) -> str:
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


def _forward_unimplemented(self, *args, **kwargs):
    raise NotImplementedError(
        f'Module [{type(self).__name__}] is missing the required "forward" function: '
        "define `def forward(self, ...)` in your subclass")


def _check_name(kind: str, name) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{kind} name should be a string, got {type(name).__name__}")
    if name == "":
        raise KeyError(f'{kind} name can\'t be empty string ""')
    if "." in name:
        raise KeyError(f'{kind} name can\'t contain ".", got: {name!r}')


def _parse_to_args(args, kwargs):
    """``to(device)``, ``to(dtype)``, ``to(device, dtype)``, ``to(tensor)``, keywords too."""
    device = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    kwargs.pop("non_blocking", None)
    if kwargs:
        raise TypeError(f"Module.to: unexpected keyword arguments {sorted(kwargs)}")
    for arg in args:
        if isinstance(arg, Tensor):
            device, dtype = arg.device, arg.dtype
        elif isinstance(arg, str) and (arg.lower() == "cpu" or arg.lower().startswith("cuda")):
            device = arg
        elif arg is None:
            continue
        else:
            try:
                dtype = np.dtype(arg)
            except TypeError:
                raise TypeError(
                    f"Module.to: expected a device ('cpu', 'cuda'), a dtype or a Tensor, "
                    f"got {arg!r}") from None
    if device is not None:
        device = backend.normalize_device(device)
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype.kind not in "fc":
            raise TypeError(f"Module.to only accepts floating point dtypes, but got desired dtype={dtype}")
    return device, dtype


class Module:
    """Base class of all layers and models.

    Subclasses call ``super().__init__()`` first, assign parameters, buffers and sub-modules as
    attributes, and define ``forward``. Call the module (``model(x)``), not ``forward``, so that
    hooks run. Input and output shapes are whatever ``forward`` takes and returns.

    Differences from PyTorch (deliberate, to stay small): no backward hooks and no global hooks;
    ``register_forward_hook`` has no ``prepend``/``with_kwargs``/``always_call`` options;
    ``state_dict()`` carries no ``_metadata`` version numbers and ``load_state_dict`` has no
    ``assign=``; ``to()`` takes NumPy dtypes and the devices ``"cpu"`` / ``"cuda"``. A failed
    ``load_state_dict`` leaves the module untouched (PyTorch has already copied the entries that
    matched when it raises).
    """

    training: bool
    forward = _forward_unimplemented

    def __init__(self, *args, **kwargs):
        if args or kwargs:
            raise TypeError(f"{type(self).__name__}.__init__() got unexpected arguments: "
                            f"{args!r} {kwargs!r}")
        # object.__setattr__: our own __setattr__ needs these registries to exist.
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers_set", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())

    # ------------------------------------------------------------------ registration
    def register_parameter(self, name: str, param) -> None:
        """Add a parameter (a :class:`Parameter` or ``None``) under ``name``."""
        if "_parameters" not in self.__dict__:
            raise AttributeError("cannot assign parameter before Module.__init__() call")
        _check_name("parameter", name)
        if hasattr(self, name) and name not in self._parameters:
            raise KeyError(f"attribute '{name}' already exists")
        if param is None:
            self._parameters[name] = None
            return
        if not isinstance(param, Parameter):
            raise TypeError(
                f"cannot assign '{type(param).__name__}' object to parameter '{name}' "
                "(tinygrad_cnn.nn.Parameter or None required)")
        if not param.is_leaf:
            raise ValueError(
                f"Cannot assign non-leaf Tensor to parameter '{name}'. Model parameters must be "
                "created explicitly: wrap the value with Parameter(value.detach()).")
        self._parameters[name] = param

    def register_buffer(self, name: str, tensor, persistent: bool = True) -> None:
        """Add a buffer (state that is not learned, e.g. BatchNorm's ``running_mean``).

        persistent: whether the buffer is part of ``state_dict()``.
        """
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        _check_name("buffer", name)
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"attribute '{name}' already exists")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' "
                            "(Tensor or None required)")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def add_module(self, name: str, module) -> None:
        """Add a child module under ``name`` (``None`` is allowed, as a placeholder)."""
        if not isinstance(module, Module) and module is not None:
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        _check_name("module", name)
        if hasattr(self, name) and name not in self._modules:
            raise KeyError(f"attribute '{name}' already exists")
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name: str, value) -> None:
        def remove_from(*dicts_or_sets):
            for d in dicts_or_sets:
                if name in d:
                    if isinstance(d, dict):
                        del d[name]
                    else:
                        d.discard(name)

        params = self.__dict__.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            remove_from(self.__dict__, self._buffers, self._modules, self._non_persistent_buffers_set)
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                    "(tinygrad_cnn.nn.Parameter or None expected)")
            self.register_parameter(name, value)
        else:
            modules = self.__dict__.get("_modules")
            if isinstance(value, Module):
                if modules is None:
                    raise AttributeError("cannot assign module before Module.__init__() call")
                remove_from(self.__dict__, self._parameters, self._buffers,
                            self._non_persistent_buffers_set)
                modules[name] = value
            elif modules is not None and name in modules:
                if value is not None:
                    raise TypeError(f"cannot assign '{type(value).__name__}' as child module "
                                    f"'{name}' (Module or None expected)")
                modules[name] = value
            else:
                buffers = self.__dict__.get("_buffers")
                if buffers is not None and name in buffers:
                    if value is not None and not isinstance(value, Tensor):
                        raise TypeError(f"cannot assign '{type(value).__name__}' as buffer "
                                        f"'{name}' (Tensor or None expected)")
                    buffers[name] = value
                else:
                    object.__setattr__(self, name, value)

    def __getattr__(self, name: str):
        # Only called when normal lookup fails, i.e. for registered items.
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            items = d.get(registry)
            if items is not None and name in items:
                return items[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for registry in ("_parameters", "_buffers", "_modules"):
            items = self.__dict__.get(registry)
            if items is not None and name in items:
                del items[name]
                self._non_persistent_buffers_set.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        keys = list(super().__dir__()) + list(self._parameters) + list(self._buffers) + list(self._modules)
        return sorted(k for k in set(keys) if not k[0].isdigit())

    # ------------------------------------------------------------------ calling
    def register_forward_pre_hook(self, hook) -> RemovableHandle:
        """``hook(module, args) -> None or new args`` runs before ``forward``.

        ``args`` is the tuple of positional inputs; a non-tuple return value is wrapped into a
        one-element tuple.
        """
        handle = RemovableHandle(self._forward_pre_hooks)
        self._forward_pre_hooks[handle.id] = hook
        return handle

    def register_forward_hook(self, hook) -> RemovableHandle:
        """``hook(module, args, output) -> None or new output`` runs after ``forward``.

        Typical use: record activations (``features[name] = output.detach()``).
        """
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    def __call__(self, *args, **kwargs):
        for hook in list(self._forward_pre_hooks.values()):
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        output = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            result = hook(self, args, output)
            if result is not None:
                output = result
        return output

    # ------------------------------------------------------------------ traversal
    def _named_members(self, get_members, prefix="", recurse=True, remove_duplicate=True):
        seen = set()
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) \
            if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in get_members(module):
                if value is None:
                    continue
                if remove_duplicate:
                    if id(value) in seen:
                        continue
                    seen.add(id(value))
                yield (module_prefix + "." + name if module_prefix else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """Yield ``(dotted_name, Parameter)``; a parameter shared by two layers appears once."""
        yield from self._named_members(lambda m: m._parameters.items(), prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True):
        """Yield every parameter of this module (and, with ``recurse``, of all sub-modules)."""
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        yield from self._named_members(lambda m: m._buffers.items(), prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True):
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    def named_children(self):
        """Yield ``(name, module)`` of the direct children (each module object once)."""
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        """Yield ``(dotted_name, module)`` for this module (name ``prefix``) and all descendants."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            sub_prefix = prefix + ("." if prefix else "") + name
            yield from module.named_modules(memo, sub_prefix, remove_duplicate)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def get_submodule(self, target: str) -> "Module":
        """The sub-module at dotted path ``target`` (``""`` is the module itself)."""
        if target == "":
            return self
        module = self
        walked = []
        for item in target.split("."):
            if not (isinstance(module, Module) and item in module._modules
                    and module._modules[item] is not None):
                where = ".".join(walked) or type(self).__name__
                raise AttributeError(f"get_submodule: {where} has no sub-module '{item}' "
                                     f"(looking up '{target}')")
            module = module._modules[item]
            walked.append(item)
        return module

    def get_parameter(self, target: str) -> Parameter:
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        if name not in module._parameters or module._parameters[name] is None:
            raise AttributeError(f"get_parameter: '{module_path or type(self).__name__}' has no "
                                 f"parameter '{name}'")
        return module._parameters[name]

    def get_buffer(self, target: str) -> Tensor:
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        if name not in module._buffers or module._buffers[name] is None:
            raise AttributeError(f"get_buffer: '{module_path or type(self).__name__}' has no "
                                 f"buffer '{name}'")
        return module._buffers[name]

    def apply(self, fn):
        """Call ``fn(m)`` on every sub-module (children first) and on ``self``; return ``self``.

        Typical use: custom initialisation, ``model.apply(init_weights)``.
        """
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ modes and gradients
    def train(self, mode: bool = True):
        """Set training mode (``True``) or evaluation mode (``False``) here and in all descendants.

        Affects Dropout (identity in eval) and BatchNorm (running statistics in eval).
        """
        if not isinstance(mode, bool):
            raise ValueError(f"training mode is expected to be boolean, got {mode!r}")
        self.training = mode
        for module in self.children():
            module.train(mode)
        return self

    def eval(self):
        """``train(False)``."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True):
        """Set ``requires_grad`` of every parameter (``False`` freezes the module); returns self."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients of all parameters: to ``None`` (default) or to zeros."""
        for p in self.parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                data = p.grad.array
                writeable = getattr(getattr(data, "flags", None), "writeable", True)
                if p.grad._ctx is not None or not writeable:
                    # Part of a graph (create_graph=True) or a read-only broadcast view: replace.
                    p.grad = Tensor._wrap(backend.get_array_module(data).zeros(data.shape, data.dtype))
                else:
                    data[...] = 0

    # ------------------------------------------------------------------ device and dtype
    def _apply(self, convert):
        """Replace ``.array`` (and ``.grad.array``) of every parameter and buffer by ``convert(data)``.

        The Tensor objects stay the same, so optimizers built before ``to()`` remain valid.
        """
        for module in self.modules():
            for tensors in (module._parameters, module._buffers):
                for t in tensors.values():
                    if t is None:
                        continue
                    t.array = convert(t.array)
                    if t.grad is not None:
                        t.grad.array = convert(t.grad.array)
        return self

    def to(self, *args, **kwargs):
        """Move and/or cast parameters and buffers in place; returns ``self``.

        ``to("cuda")``, ``to("cpu")``, ``to(np.float64)``, ``to("cuda", np.float32)``,
        ``to(tensor)`` (its device and dtype), or keywords ``device=``, ``dtype=``. Only floating
        point tensors are cast (``num_batches_tracked`` stays int64).
        """
        device, dtype = _parse_to_args(args, kwargs)

        def convert(array):
            if device is not None:
                array = backend.to_device(array, device)
            if dtype is not None and array.dtype.kind in "fc" and array.dtype != dtype:
                array = array.astype(dtype)
            return array

        return self._apply(convert)

    def cuda(self, device=None):
        return self.to("cuda")

    def cpu(self):
        return self.to("cpu")

    def double(self):
        """Cast floating point parameters and buffers to float64 (for gradient checks)."""
        return self.to(np.float64)

    def float(self):
        return self.to(np.float32)

    def half(self):
        return self.to(np.float16)

    # ------------------------------------------------------------------ state dict
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        for name, param in self._parameters.items():
            if param is not None:
                destination[prefix + name] = param if keep_vars else param.detach()
        for name, buf in self._buffers.items():
            if buf is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = buf if keep_vars else buf.detach()

    def state_dict(self, *, destination=None, prefix: str = "", keep_vars: bool = False):
        """``OrderedDict`` name -> Tensor of all parameters and persistent buffers.

        Names are dotted paths, in PyTorch's order (each module's parameters, then its buffers,
        then its children). Values are detached Tensors sharing memory with the model (pass
        ``keep_vars=True`` for the Parameters themselves). Save it with ``tinygrad_cnn.save``.
        """
        if destination is None:
            destination = OrderedDict()
        self._save_to_state_dict(destination, prefix, keep_vars)
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination=destination, prefix=prefix + name + ".",
                                  keep_vars=keep_vars)
        return destination

    def _expected_state(self):
        """``{key: (module, name, tensor)}`` for every entry ``state_dict`` would produce."""
        expected = {}
        # remove_duplicate=False: a shared sub-module is saved under each of its names.
        for module_prefix, module in self.named_modules(remove_duplicate=False):
            full = module_prefix + "." if module_prefix else ""
            for name, param in module._parameters.items():
                if param is not None:
                    expected[full + name] = (module, name, param)
            for name, buf in module._buffers.items():
                if buf is not None and name not in module._non_persistent_buffers_set:
                    expected[full + name] = (module, name, buf)
        return expected

    def _fill_missing_state(self, state_dict, key: str, name: str) -> bool:
        """Hook: a module may supply a default for a missing entry (return True if it did)."""
        return False

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy parameters and buffers from ``state_dict`` (name -> Tensor or array) into the model.

        Values are copied into the existing arrays (cast to the parameter's dtype and moved to
        its device), so Parameter objects and any optimizer that holds them stay valid.

        strict: if True, missing and unexpected keys are errors. Shape mismatches are always
            errors. All problems are reported together, each naming the key.
        Returns ``(missing_keys, unexpected_keys)`` as a named tuple.
        """
        if not hasattr(state_dict, "keys") or not hasattr(state_dict, "__getitem__"):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict).__name__}.")
        expected = self._expected_state()
        missing, unexpected, errors = [], [], []
        to_copy = []
        for key, (module, name, target) in expected.items():
            if key not in state_dict:
                if not module._fill_missing_state(state_dict, key, name):
                    missing.append(key)
                continue
            value = state_dict[key]
            array = value.array if isinstance(value, Tensor) else value
            if not hasattr(array, "shape") or not hasattr(array, "dtype"):
                if isinstance(array, (int, float, bool, np.number, np.bool_)):
                    array = np.asarray(array)
                else:
                    errors.append(f'While copying the parameter named "{key}", expected a Tensor or '
                                  f"an array from checkpoint but received {type(value).__name__}")
                    continue
            if tuple(array.shape) != tuple(target.shape):
                errors.append(f"size mismatch for {key}: copying a param with shape "
                              f"{tuple(array.shape)} from checkpoint, the shape in current model "
                              f"is {tuple(target.shape)}.")
                continue
            to_copy.append((target, array))
        for key in state_dict.keys():
            if key not in expected:
                unexpected.append(key)
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: "
                              + ", ".join(f'"{k}"' for k in unexpected) + ". ")
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: "
                              + ", ".join(f'"{k}"' for k in missing) + ". ")
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(errors))
        # Copy only once everything checked out, so a failed load leaves the model untouched.
        for target, array in to_copy:
            xp = backend.get_array_module(target.array)
            source = backend.to_device(array, "cuda" if xp is not np else "cpu")
            data = target.array
            if getattr(getattr(data, "flags", None), "writeable", True):
                data[...] = source
            else:
                target.array = xp.array(source, dtype=data.dtype, copy=True)
            target._bump_version()
        return _IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        """One line of settings shown in ``repr`` (override in layers, e.g. ``in_features=4``)."""
        return ""

    def _get_name(self) -> str:
        return type(self).__name__

    def __repr__(self):
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        for name, module in self._modules.items():
            lines.append(f"({name}): " + _addindent(repr(module), 2))
        main = self._get_name() + "("
        if lines:
            if len(lines) == 1 and not self._modules:
                main += lines[0]
            else:
                main += "\n  " + "\n  ".join(lines) + "\n"
        return main + ")"
