"""Nested state dicts <-> flat ``{str: numpy.ndarray}`` dicts, for ``.npz`` files without pickle.

Optimizer and scheduler state dicts are trees of dicts (string or integer keys), lists, tuples
and leaves (arrays, Python ``int``/``float``/``bool``/``str``, NumPy scalars, ``None``).
``np.savez`` can only store arrays, and loading object arrays needs pickle, which this project
never uses. :func:`flatten_state` therefore turns a tree into

* one array per leaf (a Tensor's array, marked so it comes back a Tensor), named by its path (``"state/0/exp_avg"``, ``"param_groups/0/lr"``), and
* one extra entry ``"__spec__"``: a 0-d unicode array holding a JSON description of the tree
  (container kinds, key types, leaf types), so that :func:`unflatten_state` rebuilds exactly the
  same Python types: ``1`` stays ``int``, ``0.1`` stays ``float`` (bit-exact), tuples stay tuples.

Both accept a ``prefix`` so that several trees (model, optimizer, scheduler) can share one file::

    arrays = {**flatten_state(opt.state_dict(), prefix="optimizer"),
              **flatten_state(sched.state_dict(), prefix="scheduler")}
    np.savez(path, **arrays)
    with np.load(path, allow_pickle=False) as f:
        opt.load_state_dict(unflatten_state(dict(f), prefix="optimizer"))
"""
from __future__ import annotations

import json

import numpy as np

from ..backend import is_cupy_array, to_host

__all__ = ["flatten_state", "unflatten_state", "state_dict_to_arrays", "arrays_to_state_dict"]

SPEC_KEY = "__spec__"


def _key_of(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def _is_array(value) -> bool:
    return isinstance(value, np.ndarray) or is_cupy_array(value)


def flatten_state(tree, prefix: str = "") -> dict[str, np.ndarray]:
    """Flatten a nested state dict into ``{path: numpy.ndarray}`` plus a ``"__spec__"`` entry.

    Arrays are stored as they are (CuPy arrays are copied to the host, object arrays refused);
    Python scalars become 0-d arrays (``int`` -> int64, ``float`` -> float64, ``bool`` -> bool);
    strings, ``None`` and empty containers live only in the spec.
    Raises ``TypeError`` for any other leaf (functions, objects) naming its path.
    """
    if prefix and not isinstance(prefix, str):
        raise TypeError(f"flatten_state: prefix must be a str, got {type(prefix).__name__}")
    out: dict[str, np.ndarray] = {}

    def store(path: str, value: np.ndarray):
        key = _key_of(prefix, path)
        if key in out or key == _key_of(prefix, SPEC_KEY):
            raise ValueError(f"flatten_state: two entries map to the same name {key!r}; "
                             "rename keys so that str(key) differs")
        out[key] = value

    def walk(node, path: str):
        where = path or "<root>"
        if isinstance(node, dict):
            items = []
            for k, v in node.items():
                if isinstance(k, bool) or not isinstance(k, (str, int)):
                    raise TypeError(f"flatten_state: dict keys must be str or int, got "
                                    f"{type(k).__name__} {k!r} at {where}")
                child = f"{path}/{k}" if path else str(k)
                items.append(["i" if isinstance(k, int) else "s", k, walk(v, child)])
            return {"t": "dict", "items": items}
        if isinstance(node, (list, tuple)):
            kind = "list" if isinstance(node, list) else "tuple"
            return {"t": kind, "items": [walk(v, f"{path}/{i}" if path else str(i))
                                         for i, v in enumerate(node)]}
        if node is None:
            return {"t": "none"}
        if hasattr(node, "requires_grad") and hasattr(node, "array"):    # a Tensor
            store(path, np.array(to_host(node.array), copy=True))
            return {"t": "tensor"}
        if _is_array(node):
            array = to_host(node)
            if array.dtype.hasobject:
                raise TypeError(f"flatten_state: object array at {where} cannot be saved without pickle")
            store(path, array)
            return {"t": "array"}
        if isinstance(node, np.generic):
            store(path, np.asarray(node))
            return {"t": "npscalar"}
        if isinstance(node, bool):
            store(path, np.asarray(node, dtype=np.bool_))
            return {"t": "bool"}
        if isinstance(node, int):
            store(path, np.asarray(node, dtype=np.int64))
            return {"t": "int"}
        if isinstance(node, float):
            store(path, np.asarray(node, dtype=np.float64))
            return {"t": "float"}
        if isinstance(node, str):
            # Kept in the JSON spec: NumPy unicode arrays drop trailing NUL characters.
            return {"t": "str", "v": node}
        raise TypeError(f"flatten_state: cannot store a {type(node).__name__} at {where}; "
                        "state must hold only dicts, lists, tuples, arrays, numbers, str and None")

    spec = walk(tree, "")
    out[_key_of(prefix, SPEC_KEY)] = np.asarray(json.dumps(spec), dtype=np.str_)
    return out


def unflatten_state(arrays, prefix: str = ""):
    """Rebuild the tree written by :func:`flatten_state` (the inverse, types included).

    ``arrays`` is any mapping ``{str: array}``, e.g. ``dict(np.load(path, allow_pickle=False))``.
    Arrays are returned as fresh NumPy copies, so the result does not depend on an open file.
    """
    spec_key = _key_of(prefix, SPEC_KEY)
    if spec_key not in arrays:
        raise KeyError(f"unflatten_state: no {spec_key!r} entry; was this written by flatten_state"
                       + (f" with prefix={prefix!r}" if prefix else "") + "?")
    spec = json.loads(str(np.asarray(arrays[spec_key])[()]))

    def leaf(path: str) -> np.ndarray:
        key = _key_of(prefix, path)
        if key not in arrays:
            raise KeyError(f"unflatten_state: missing entry {key!r}")
        return np.array(arrays[key], copy=True)

    def build(node, path: str):
        kind = node["t"]
        if kind == "dict":
            result = {}
            for key_type, k, child in node["items"]:
                result[int(k) if key_type == "i" else k] = build(child, f"{path}/{k}" if path else str(k))
            return result
        if kind in ("list", "tuple"):
            items = [build(child, f"{path}/{i}" if path else str(i)) for i, child in enumerate(node["items"])]
            return items if kind == "list" else tuple(items)
        if kind == "none":
            return None
        if kind == "str":
            return node["v"]
        if kind == "array":
            return leaf(path)
        if kind == "tensor":
            from ..tensor import Tensor
            return Tensor._wrap(leaf(path))
        value = leaf(path)
        if kind == "npscalar":
            return value[()]
        if kind == "bool":
            return bool(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        raise ValueError(f"unflatten_state: unknown node type {kind!r} at {path or '<root>'}")

    return build(spec, "")


def state_dict_to_arrays(state_dict, prefix: str = "") -> dict[str, np.ndarray]:
    """Alias of :func:`flatten_state` named after its most common use."""
    return flatten_state(state_dict, prefix=prefix)


def arrays_to_state_dict(arrays, prefix: str = ""):
    """Alias of :func:`unflatten_state`."""
    return unflatten_state(arrays, prefix=prefix)

