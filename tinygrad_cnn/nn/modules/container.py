"""Containers: ``Sequential``, ``ModuleList``, ``ModuleDict`` (PyTorch semantics)."""
from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Mapping

from .module import Module, _addindent

__all__ = ["Sequential", "ModuleList", "ModuleDict"]


def _normalize_index(index, length: int, owner: str) -> int:
    try:
        index = operator.index(index)
    except TypeError:
        raise TypeError(f"{owner} indices must be integers or slices, not {type(index).__name__}") from None
    if not -length <= index < length:
        raise IndexError(f"index {index} is out of range for {owner} of length {length}")
    return index + length if index < 0 else index


class Sequential(Module):
    """Modules applied one after the other: ``forward(x) = m_n(...m_2(m_1(x)))``.

    ``Sequential(conv, bn, relu)`` names the children ``"0"``, ``"1"``, ``"2"`` (so the keys of
    its state_dict are ``0.weight``, ``1.running_mean``, ...); ``Sequential(OrderedDict(...))``
    uses the given names. Supports ``len``, iteration, ``seq[i]``, ``seq[-1]``, slicing (a new
    Sequential sharing the same modules), ``append``, ``extend``, ``insert``, ``del seq[i]``.
    Shapes: the input is whatever the first module takes, the output whatever the last returns.

    Differences from PyTorch: ``del seq[i]`` renumbers the children to ``0..n-1`` only when all
    names are numbers; PyTorch renumbers always, which would throw away the names given with an
    ``OrderedDict`` (and with them the state_dict keys).
    """

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], (OrderedDict, dict)) and not isinstance(args[0], Module):
            for name, module in args[0].items():
                self.add_module(name, module)
        else:
            for index, module in enumerate(args):
                self.add_module(str(index), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return type(self)(OrderedDict(list(self._modules.items())[index]))
        index = _normalize_index(index, len(self), type(self).__name__)
        return list(self._modules.values())[index]

    def __setitem__(self, index, module: Module) -> None:
        index = _normalize_index(index, len(self), type(self).__name__)
        key = list(self._modules.keys())[index]
        self.add_module(key, module)

    def __delitem__(self, index) -> None:
        if isinstance(index, slice):
            keys = list(self._modules.keys())[index]
        else:
            keys = [list(self._modules.keys())[_normalize_index(index, len(self), type(self).__name__)]]
        for key in keys:
            del self._modules[key]
        # Renumber so that names stay 0..n-1, as PyTorch does.
        self._modules = OrderedDict((str(i), m) for i, m in enumerate(self._modules.values())) \
            if all(k.isdigit() for k in self._modules) else self._modules

    def append(self, module: Module) -> "Sequential":
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules) -> "Sequential":
        for module in modules:
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> "Sequential":
        if not isinstance(module, Module):
            raise TypeError(f"Sequential.insert: expected a Module, got {type(module).__name__}")
        n = len(self)
        if not -n <= index <= n:
            raise IndexError(f"Sequential.insert: index {index} is out of range for length {n}")
        if index < 0:
            index += n
        modules = list(self._modules.values())
        modules.insert(index, module)
        self._modules = OrderedDict((str(i), m) for i, m in enumerate(modules))
        return self

    def __add__(self, other: "Sequential") -> "Sequential":
        if not isinstance(other, Sequential):
            raise TypeError(f"can only add Sequential to Sequential, got {type(other).__name__}")
        return Sequential(*self, *other)

    def forward(self, input):
        for module in self:
            input = module(input)
        return input


class ModuleList(Module):
    """A list of modules, registered so their parameters are found (no ``forward`` of its own).

    Children are named ``"0"``, ``"1"``, ...; a plain Python list of layers would not be seen by
    ``parameters()``, ``to()`` or ``state_dict()``. It has no shapes of its own (calling it is an
    error). ``repr`` collapses runs of identical children (``(0-2): 3 x Linear(...)``).
    Same behaviour as PyTorch.
    """

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return type(self)(list(self._modules.values())[index])
        return self._modules[str(_normalize_index(index, len(self), type(self).__name__))]

    def __setitem__(self, index, module: Module) -> None:
        self.add_module(str(_normalize_index(index, len(self), type(self).__name__)), module)

    def __delitem__(self, index) -> None:
        modules = list(self._modules.values())
        if isinstance(index, slice):
            del modules[index]
        else:
            del modules[_normalize_index(index, len(self), type(self).__name__)]
        self._modules = OrderedDict((str(i), m) for i, m in enumerate(modules))

    def __iadd__(self, modules):
        return self.extend(modules)

    def __add__(self, other):
        return ModuleList(list(self) + list(other))

    def append(self, module: Module) -> "ModuleList":
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules) -> "ModuleList":
        if isinstance(modules, Module) and not isinstance(modules, (ModuleList, Sequential)):
            raise TypeError("ModuleList.extend should be called with an iterable of modules, "
                            f"but got {type(modules).__name__}")
        for module in list(modules):
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList.insert: expected a Module, got {type(module).__name__}")
        modules = list(self._modules.values())
        modules.insert(index, module)
        self._modules = OrderedDict((str(i), m) for i, m in enumerate(modules))

    def __repr__(self):
        # As PyTorch prints a ModuleList: runs of identical children collapse into one line,
        # "(0-5): 6 x BasicBlock(...)", which keeps deep stacks of equal blocks readable.
        if not self._modules:
            return self._get_name() + "()"
        runs = []                                   # [first_index, last_index, text]
        for index, module in enumerate(self._modules.values()):
            text = repr(module)
            if runs and runs[-1][2] == text:
                runs[-1][1] = index
            else:
                runs.append([index, index, text])
        lines = []
        for first, last, text in runs:
            if first == last:
                lines.append(_addindent(f"({first}): {text}", 2))
            else:
                lines.append(_addindent(f"({first}-{last}): {last - first + 1} x {text}", 2))
        return self._get_name() + "(\n  " + "\n  ".join(lines) + "\n)"

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList has no forward: iterate over it in your own forward")


class ModuleDict(Module):
    """A dict of modules (insertion ordered), registered like attributes."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, module)

    def __delitem__(self, key: str) -> None:
        del self._modules[key]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key) -> bool:
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()

    def pop(self, key: str) -> Module:
        module = self[key]
        del self[key]
        return module

    def clear(self) -> None:
        self._modules.clear()

    def update(self, modules) -> None:
        items = modules.items() if isinstance(modules, (Mapping, ModuleDict)) else modules
        for entry in items:
            if not isinstance(entry, (tuple, list)) or len(entry) != 2:
                raise ValueError("ModuleDict.update: expected a mapping or (name, module) pairs, "
                                 f"got element {entry!r}")
            self[entry[0]] = entry[1]

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict has no forward: index it in your own forward")
