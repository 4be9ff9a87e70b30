"""Saving and loading weights as ``.npz`` files: ``tinygrad_cnn.save`` / ``tinygrad_cnn.load``.

Format: a standard NumPy ``.npz`` archive (a zip of ``.npy`` files), one array per key, readable
with nothing but NumPy (``np.load(path)``). No pickle, ever: arrays of Python objects are refused
when writing, and files are read with ``allow_pickle=False``, so loading a file from the internet
cannot run code.

Nested dictionaries are flattened with ``"/"``: ``{"model": model.state_dict(), "epoch": 3}``
is stored under the keys ``"model/conv1.weight"``, ..., ``"epoch"`` (``"."`` stays free for the
dotted names of a state_dict). ``load`` returns the flat dict; :func:`unflatten` rebuilds the
nesting.

Writes are atomic: the archive is written to a temporary file in the target's directory,
flushed to disk (``fsync``) and then renamed over the target with ``os.replace``. A crash or an
error mid-save leaves the previous file untouched (and no half-written file behind).
"""
from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Mapping

import numpy as np

__all__ = ["save", "load", "flatten_dict", "unflatten"]

SEPARATOR = "/"


def _to_array(value, key: str):
    """A NumPy array for one leaf value (Tensor, NumPy/CuPy array, number, bool or string)."""
    from .tensor import Tensor
    if isinstance(value, Tensor):
        value = value.array
    if hasattr(value, "get") and type(value).__module__.startswith("cupy"):
        value = value.get()
    if isinstance(value, np.ndarray):
        array = value
    elif isinstance(value, (bool, int, float, complex, str, bytes, np.generic)):
        array = np.asarray(value)
    elif isinstance(value, (list, tuple)):
        try:
            array = np.asarray(value)
        except ValueError:
            array = np.empty(0, dtype=object)
    else:
        raise TypeError(f"save: cannot store the value of key '{key}' of type {type(value).__name__}: "
                        "expected a Tensor, an array, a number, a string or a nested dict of those")
    if array.dtype.hasobject:
        raise TypeError(f"save: the value of key '{key}' would need pickle (an array of Python "
                        "objects); store plain numbers, strings or arrays instead")
    return array


def flatten_dict(obj: Mapping, prefix: str = "") -> dict:
    """``{"a": {"b": x}}`` -> ``{"a/b": x}`` (leaves converted to NumPy arrays)."""
    flat = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise TypeError(f"save: keys must be strings, got {key!r} ({type(key).__name__})")
        if key == "":
            raise ValueError(f"save: empty key under '{prefix or '<root>'}'")
        full = prefix + key
        if isinstance(value, Mapping):
            items = flatten_dict(value, full + SEPARATOR)
        else:
            items = {full: _to_array(value, full)}
        for name, array in items.items():
            if name in flat:
                raise ValueError(f"save: two entries map to the same key '{name}' after flattening "
                                 f"nested dicts with '{SEPARATOR}'")
            flat[name] = array
    return flat


def unflatten(flat: Mapping, sep: str = SEPARATOR) -> dict:
    """Inverse of the flattening done by :func:`save`: ``{"a/b": x}`` -> ``{"a": {"b": x}}``."""
    nested: dict = {}
    for key, value in flat.items():
        parts = key.split(sep)
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"unflatten: key '{key}' conflicts with a value stored at '{part}'")
        if parts[-1] in node and isinstance(node[parts[-1]], dict):
            raise ValueError(f"unflatten: key '{key}' conflicts with nested keys under it")
        node[parts[-1]] = value
    return nested


def _write_npz(file, arrays: dict, compress: bool) -> None:
    compression = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(file, mode="w", compression=compression, allowZip64=True) as archive:
        for name, array in arrays.items():
            with archive.open(name + ".npy", mode="w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def save(obj, path, compress: bool = False) -> None:
    """Write a state_dict (or any dict, possibly nested, of Tensors/arrays/numbers) to ``path``.

    obj: ``model.state_dict()``, ``optimizer``-style nested dicts, or plain ``{name: array}``.
        Tensors are stored as NumPy arrays (GPU arrays are copied to the host).
    path: the file name, used exactly as given (no ``.npz`` is appended).
    compress: deflate the arrays (smaller, slower).

    The write is atomic (temporary file in the same directory, fsync, ``os.replace``).
    """
    from .nn.modules.module import Module
    if isinstance(obj, Module):
        raise TypeError("save: pass model.state_dict(), not the Module itself (modules are not "
                        "pickled; rebuild the model in code and load_state_dict the weights)")
    if not isinstance(obj, Mapping):
        raise TypeError(f"save: expected a dict of arrays (e.g. model.state_dict()), got {type(obj).__name__}")
    arrays = flatten_dict(obj)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"save: cannot write '{path}': the directory '{directory}' does not "
                                "exist (create it first, e.g. os.makedirs(directory, exist_ok=True))")
    if os.path.isdir(path):
        raise IsADirectoryError(f"save: cannot write '{path}': it is a directory; pass a file name "
                                "such as os.path.join(path, 'weights.npz')")
    fd, temp_path = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                                     suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            _write_npz(file, arrays, compress)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp creates the file readable by its owner only; give it the usual permissions.
        os.chmod(temp_path, 0o666 & ~_current_umask())
        os.replace(temp_path, path)
    except BaseException:
        try:
            os.unlink(temp_path)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); best effort elsewhere."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path) -> dict:
    """Read a file written by :func:`save` (or ``np.savez``): a flat dict ``name -> np.ndarray``.

    Nested dicts come back flattened (``"model/conv1.weight"``); see :func:`unflatten`.
    Pass the result (or one sub-dict) to ``model.load_state_dict``. Anything that is not an
    ``.npz`` of plain arrays is refused with a ``ValueError`` that says what the file is instead:
    a pickle or a PyTorch checkpoint (never unpickled: that could run arbitrary code), a single
    ``.npy`` array, an empty, truncated or damaged file.
    """
    path = os.fspath(path)
    with open(path, "rb") as file:              # FileNotFoundError names the path itself
        magic = file.read(6)
    if not magic:
        raise ValueError(f"load: '{path}' is empty (0 bytes), not an .npz archive; was its save "
                         "interrupted? (tinygrad_cnn.save writes atomically, so never by it)")
    if magic.startswith(b"\x93NUMPY"):
        raise ValueError(f"load: '{path}' holds a single array (.npy), expected an .npz archive "
                         "written by tinygrad_cnn.save or np.savez")
    if not magic.startswith(b"PK"):
        kind = ("a pickle (e.g. a PyTorch checkpoint in the legacy format)"
                if magic[:1] == b"\x80" else f"not a zip archive (it starts with {magic!r})")
        raise ValueError(f"load: '{path}' is not an .npz archive: it is {kind}. tinygrad_cnn never "
                         "unpickles files (that can run arbitrary code); convert PyTorch weights "
                         "where PyTorch is installed: np.savez(path, **{k: v.numpy() for k, v in "
                         "state_dict.items()})")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise ValueError(f"load: '{path}' is a damaged .npz archive (truncated or corrupted): "
                         f"{error}") from None
    foreign = [name for name in members if not name.endswith(".npy")]
    if foreign:
        shown = ", ".join(repr(name) for name in foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        hint = (" It looks like a PyTorch checkpoint (torch.save), which needs pickle; convert it "
                "where PyTorch is installed: np.savez(path, **{k: v.numpy() for k, v in "
                "state_dict.items()})." if any(name.endswith(".pkl") for name in foreign) else "")
        raise ValueError(f"load: '{path}' is a zip archive but not an .npz of arrays: it holds "
                         f"{shown}, which are not .npy arrays.{hint}")
    with np.load(path, allow_pickle=False) as archive:
        result = {}
        for name in archive.files:
            try:
                result[name] = archive[name]
            except ValueError as error:
                raise ValueError(f"load: the entry '{name}' of '{path}' is a pickled object array, "
                                 "which tinygrad_cnn never loads (it could run arbitrary code). "
                                 f"({error})") from None
            except (zipfile.BadZipFile, EOFError, OSError) as error:
                raise ValueError(f"load: the entry '{name}' of '{path}' is damaged (truncated or "
                                 f"corrupted): {error}") from None
    return result
