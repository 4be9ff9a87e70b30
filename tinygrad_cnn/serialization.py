"""Saving and loading weights as ``.npz`` files: ``tinygrad_cnn.save`` / ``tinygrad_cnn.load``.

Format: a standard NumPy ``.npz`` archive (a zip of ``.npy`` files), one array per key, readable
with nothing but NumPy (``np.load(path)``). No pickle, ever: arrays of Python objects are refused
when writing, and files are read with ``allow_pickle=False``, so loading a file from the internet
cannot run code.

Nested checkpoints round-trip: ``{"net": model.state_dict(), "optimizer": opt.state_dict(),
"acc": 91.2, "epoch": 3}`` loads back with the same nesting and types (Tensors as Tensors, arrays as
arrays, ``int``/``float``/``bool``/``str``/``None``, lists, tuples, integer keys). Each leaf array is
stored under its path joined with ``"/"`` (``"net/conv1.weight"``, ``"epoch"``; ``"."`` stays free for
the dotted names of a state_dict), plus one entry ``"__spec__"``: the tree's layout and leaf types as
JSON (:func:`tinygrad_cnn.optim.flatten_state`). A flat dict of NumPy arrays needs no layout and is
written as a plain ``np.savez``-style archive. A file without ``"__spec__"`` loads as a flat dict of
arrays; :func:`unflatten` nests its ``"/"`` names.

Writes are atomic: the archive is written to a temporary file in the target's directory,
flushed to disk (``fsync``) and then renamed over the target with ``os.replace``. A crash or an
error mid-save leaves the previous file untouched (and no half-written file behind).
"""
from __future__ import annotations

import os
import secrets
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .optim._flatten import SPEC_KEY, flatten_state, unflatten_state

__all__ = ["save", "load", "unflatten", "atomic_write", "atomic_write_bytes"]

SEPARATOR = "/"


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
    try:
        arrays = flatten_state(dict(obj))
    except (TypeError, ValueError) as error:
        raise type(error)("save: " + str(error).removeprefix("flatten_state: ")) from None
    if all(isinstance(k, str) and SEPARATOR not in k and isinstance(v, np.ndarray) for k, v in obj.items()):
        del arrays[SPEC_KEY]     # a flat dict of NumPy arrays: a plain npz loads back as exactly that
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"save: cannot write '{path}': the directory '{directory}' does not "
                                "exist (create it first, e.g. os.makedirs(directory, exist_ok=True))")
    if os.path.isdir(path):
        raise IsADirectoryError(f"save: cannot write '{path}': it is a directory; pass a file name "
                                "such as os.path.join(path, 'weights.npz')")
    atomic_write(path, lambda file: _write_npz(file, arrays, compress))


# ---------------------------------------------------------------------------
# The one atomic writer (weights, checkpoints, optimizer state, reports)
# ---------------------------------------------------------------------------

TEMP_MARK = ".tmp-"


def temp_name(path) -> Path:
    """A temporary name beside ``path``: ``.<name>.tmp-<pid>-<random>``. It starts with ``"."``
    and contains ``".tmp-"``, so it never matches a name a reader looks for, and the pid tells
    whether its writer still runs (see ``checkpoint.remove_stale_temp_files``)."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")


def atomic_write(path, write) -> Path:
    """Call ``write(file_object)`` on a temporary file beside ``path``, flush and ``fsync`` it,
    then ``os.replace`` it over ``path`` and ``fsync`` the folder. A crash or an error at any
    point leaves the previous file untouched and no temporary file behind."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    fsync_directory(path.parent)
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda file: file.write(data))


def fsync_directory(directory) -> None:
    """Make a rename in ``directory`` durable (POSIX); best effort elsewhere (Windows cannot
    open folders, and ``os.replace`` is still atomic there)."""
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


def file_kind(head: bytes) -> str:
    """What a file is, from its first bytes, for the messages that refuse it: ``"npz"`` (a zip
    archive), ``"empty"``, ``"npy"``, ``"pickle"``, ``"text"`` or ``"other"``. Checked before
    ``np.load``, which calls anything it does not recognise "pickled data"."""
    if head.startswith(b"PK"):
        return "npz"
    if not head:
        return "empty"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head[:1] == b"\x80":
        return "pickle"
    if all(32 <= byte < 127 or byte in (9, 10, 13) for byte in head):
        return "text"
    return "other"


def load(path, map_location=None, weights_only=True) -> dict:
    """Read a file written by :func:`save`: the saved dict, with its nesting and types.

    A plain ``np.savez`` file (no ``"__spec__"`` entry) gives a flat dict ``name -> np.ndarray``;
    see :func:`unflatten`. Pass the result (or one sub-dict) to ``model.load_state_dict``.
    ``map_location`` ("cpu", "cuda" or a device) moves the loaded Tensors there (default: the CPU);
    ``weights_only`` is accepted for PyTorch's signature: nothing but arrays is ever loaded.

    Anything that is not an ``.npz`` of plain arrays is refused with a ``ValueError`` that says what the file is instead:
    a pickle or a PyTorch checkpoint (never unpickled: that could run arbitrary code), a single
    ``.npy`` array, an empty, truncated or damaged file.
    """
    path = os.fspath(path)
    with open(path, "rb") as file:              # FileNotFoundError names the path itself
        magic = file.read(6)
    kind = file_kind(magic)
    if kind == "empty":
        raise ValueError(f"load: '{path}' is empty (0 bytes), not an .npz archive; was its save "
                         "interrupted? (tinygrad_cnn.save writes atomically, so never by it)")
    if kind == "npy":
        raise ValueError(f"load: '{path}' holds a single array (.npy), expected an .npz archive "
                         "written by tinygrad_cnn.save or np.savez")
    if kind != "npz":
        kind = ("a pickle (e.g. a PyTorch checkpoint in the legacy format)"
                if kind == "pickle" else f"not a zip archive (it starts with {magic!r})")
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
    if SPEC_KEY not in result:
        return result
    try:
        tree = unflatten_state(result)
    except (KeyError, ValueError) as error:
        raise ValueError(f"load: '{path}' has an inconsistent layout: {error}") from None
    return tree if map_location is None else _to_location(tree, map_location)


def _to_location(node, location):
    from .tensor import Tensor
    if isinstance(node, Tensor):
        return node.to(str(location))
    if isinstance(node, dict):
        return {k: _to_location(v, location) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_to_location(v, location) for v in node)
    return node
