"""Model weights as ``.npz`` files: one array per state_dict entry, under its state_dict name.

Built on :func:`tinygrad_cnn.save` / :func:`tinygrad_cnn.load`. ``save_weights(model, "resnet18.npz")``
writes ``model.state_dict()`` (parameters and buffers such as BatchNorm running statistics) atomically; ``load_weights(model, "resnet18.npz")`` checks the file's keys
and shapes against the model before copying anything, and names every missing key, unexpected key and
shape mismatch in its error. Files are read with ``numpy.load(..., allow_pickle=False)``: nothing is ever
unpickled. A file written by ``python -m tinygrad_cnn.models.convert_torch`` from a PyTorch state_dict
loads the same way.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..backend import to_host

__all__ = ["save_weights", "read_weights", "load_weights", "state_arrays", "WeightsError"]


class WeightsError(ValueError):
    """A weights file does not fit the model (missing/unexpected keys, shapes) or cannot be read."""


def _host_array(value) -> np.ndarray:
    """A NumPy copy of a Tensor, NumPy array or CuPy array."""
    if hasattr(value, "requires_grad") and hasattr(value, "array"):
        value = value.array
    return np.array(to_host(value), copy=True)


def state_arrays(model_or_state) -> dict:
    """``{name: numpy.ndarray}`` from a Module (its ``state_dict()``) or a mapping of Tensors/arrays."""
    state = model_or_state.state_dict() if hasattr(model_or_state, "state_dict") else model_or_state
    return {str(name): _host_array(value) for name, value in state.items()}


def save_weights(model_or_state, path) -> Path:
    """Write a model's state_dict (or a ``{name: array}`` mapping) to ``path`` atomically.

    A thin layer over :func:`tinygrad_cnn.save` (temporary file beside ``path``, fsync, ``os.replace``)
    that also accepts the Module itself. Returns the path.
    """
    from ..serialization import save

    path = Path(path)
    if path.suffix != ".npz":
        raise WeightsError(f"save_weights: path must end in .npz, got {str(path)!r}")
    save(state_arrays(model_or_state), path)
    return path


def read_weights(path) -> dict:
    """``{name: numpy.ndarray}`` from an ``.npz`` weights file (``allow_pickle=False``)."""
    from ..serialization import load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_weights: no weights file at {str(path)!r}")
    try:
        return load(path)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise WeightsError(f"read_weights: {str(path)!r} is not a readable .npz weights file ({exc})") from exc


def _describe(names, limit: int = 12) -> str:
    names = sorted(names)
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def load_weights(model, source, strict: bool = True) -> tuple:
    """Load weights into ``model`` from an ``.npz`` path or a ``{name: array}`` mapping.

    Everything is checked before anything is copied: with ``strict=True`` a missing or unexpected key is
    an error (every one is named); a shape mismatch is always an error naming the key and both shapes.
    Values are cast to the dtype of the model's tensor. Returns ``(missing_keys, unexpected_keys)``.
    """
    from .. import Tensor

    where = f"{str(source)!r}" if isinstance(source, (str, Path)) else "the given state"
    arrays = read_weights(source) if isinstance(source, (str, Path)) else state_arrays(source)
    target = model.state_dict()
    missing = [k for k in target if k not in arrays]
    unexpected = [k for k in arrays if k not in target]
    problems = []
    if strict and missing:
        problems.append(f"missing keys (in the model, not in the file): {_describe(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys (in the file, not in the model): {_describe(unexpected)}")
    for key in target:
        if key in arrays:
            want, got = tuple(target[key].shape), tuple(arrays[key].shape)
            if want != got:
                problems.append(f"shape mismatch for {key!r}: the model has {want}, {where} has {got}")
    if problems:
        raise WeightsError(f"load_weights: cannot load {where} into {type(model).__name__}: " + "; ".join(problems))
    selected = {}
    for key, value in target.items():
        if key in arrays:
            dtype = getattr(value, "dtype", None)
            selected[key] = Tensor(np.asarray(arrays[key], dtype=dtype))
    model.load_state_dict(selected, strict=False)
    return missing, unexpected
