"""Training checkpoints: one ``.npz`` file, readable with ``numpy.load(path, allow_pickle=False)``.

A checkpoint is a nested dict (model weights, optimizer and scheduler state dicts, RNG and data-loader
state, epoch, metrics, run configuration). :func:`save_checkpoint` flattens it with
:func:`tinygrad_cnn.optim.flatten_state`, so

* every array leaf is one entry named by its path; the model's weights keep their ``state_dict`` names
  under ``model/`` (``model/conv1.weight``, ``model/bn1.running_mean``),
* Python scalars are 0-d arrays (``epoch`` -> int64, a float metric -> float64), strings 0-d unicode
  arrays (``config/shortcut``),
* the tree's shape, the key and leaf types are kept in a small JSON document stored as a 0-d unicode
  array (``__spec__``; it also holds the strings exactly, since NumPy unicode arrays drop trailing NUL
  characters), and a format tag ``__checkpoint_format__`` marks the file.

Nothing is ever unpickled: loading uses ``allow_pickle=False`` and rebuilds plain dicts/lists.

Writes are atomic: the file is written to a temporary name in the destination folder
(``.<name>.tmp-<pid>-<random>``), flushed and ``fsync``-ed, then moved into place with ``os.replace`` and
the folder is ``fsync``-ed. A process killed at any point leaves either the old or the new checkpoint
under the final name, never a partial one; at worst a stray temporary file that every reader here
ignores (and the next save deletes once its writer is gone). With ``keep_previous=True`` the checkpoint being replaced stays available as
``<stem>.prev.npz``, so a checkpoint damaged after it was written (disk full elsewhere, a copy gone
wrong) still leaves one good file; :func:`latest_checkpoint` falls back to it.

Typical use in a training loop::

    state = training_state(model=model, optimizer=opt, scheduler=sched, loader=train_loader,
                           epoch=epoch, metrics=history, config=vars(args))
    save_checkpoint(out / "checkpoint.npz", state)
    ...
    path = latest_checkpoint(out)
    if path is not None:
        state = load_checkpoint(path)
        restore_training_state(state, model=model, optimizer=opt, scheduler=sched, loader=train_loader)
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from .backend import to_host
from .serialization import TEMP_MARK, atomic_write, atomic_write_bytes, file_kind, temp_name
from .optim._flatten import flatten_state, unflatten_state

__all__ = [
    "CheckpointError", "save_checkpoint", "load_checkpoint", "latest_checkpoint", "is_valid_checkpoint",
    "RunDirectoryLock", "RunDirectoryLocked",
    "atomic_write_bytes", "model_state_arrays", "training_state", "restore_training_state",
    "previous_path", "remove_stale_temp_files", "FORMAT",
]

FORMAT = "tinygrad_cnn.checkpoint/1"
_FORMAT_KEY = "__checkpoint_format__"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or not a tinygrad_cnn checkpoint."""


# ---------------------------------------------------------------- temporary files and kept copies

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but is not ours, or the platform cannot tell: leave its file alone
    return True


def remove_stale_temp_files(path) -> list:
    """Delete temp files of ``path`` left by writers that no longer run (killed mid-write); returns them."""
    path = Path(path)
    removed = []
    for tmp in path.parent.glob(f".{path.name}{TEMP_MARK}*"):
        try:
            pid = int(tmp.name[len(f".{path.name}{TEMP_MARK}"):].split("-")[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


def previous_path(path) -> Path:
    """Where the replaced checkpoint is kept: ``run/checkpoint.npz`` -> ``run/checkpoint.prev.npz``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix or '.npz'}")


def _keep_copy(src: Path, dst: Path) -> None:
    """Atomically make ``dst`` a copy of ``src`` (a hard link when possible: no data is copied)."""
    if dst.exists() and os.path.samefile(src, dst):
        return  # already the same file (rename between two links of one file would be a no-op)
    tmp = temp_name(dst)
    try:
        try:
            os.link(src, tmp)
        except OSError:  # file systems without hard links
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                while True:
                    block = fin.read(1 << 20)
                    if not block:
                        break
                    fout.write(block)
                fout.flush()
                os.fsync(fout.fileno())
        os.replace(tmp, dst)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


# ---------------------------------------------------------------- save / load

def save_checkpoint(path, state: dict, keep_previous: bool = True) -> Path:
    """Write the nested dict ``state`` to ``path`` (an ``.npz`` file) atomically; returns the path.

    ``state`` may hold dicts (str or int keys), lists, tuples, NumPy/CuPy arrays (CuPy ones are copied
    to the host), Python/NumPy scalars, strings and ``None`` (see ``tinygrad_cnn.optim.flatten_state``).
    A Tensor leaf is stored as its array. With ``keep_previous`` an existing file at ``path`` that is a
    valid checkpoint is kept as ``previous_path(path)`` before the new one takes its place.
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"save_checkpoint: path must end in .npz, got {str(path)!r}")
    if not isinstance(state, dict):
        raise TypeError(f"save_checkpoint: state must be a dict, got {type(state).__name__}")
    if _FORMAT_KEY in state:
        raise ValueError(f"save_checkpoint: the key {_FORMAT_KEY!r} is reserved")
    tree = _tensors_to_arrays(state)
    arrays = flatten_state(tree)
    for key, text in _string_leaves(tree):
        # Readable with plain numpy.load; the JSON spec stays the authority (keeps trailing NULs).
        arrays.setdefault(key, np.asarray(text, dtype=np.str_))
    arrays[_FORMAT_KEY] = np.asarray(FORMAT, dtype=np.str_)

    def write(fh):
        np.savez(fh, **arrays)

    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    remove_stale_temp_files(previous_path(path))
    if keep_previous and path.exists() and is_valid_checkpoint(path):
        # The old file stays reachable under the final name until os.replace below, and under
        # previous_path from now on: there is no moment without a good checkpoint on disk.
        _keep_copy(path, previous_path(path))
    return atomic_write(path, write)


def load_checkpoint(path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (never unpickles anything).

    Returns the nested dict; arrays are NumPy copies. Raises ``CheckpointError`` naming the file when it
    is missing, truncated, fails its zip CRC check, or is not a tinygrad_cnn checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"load_checkpoint: no checkpoint file at {path}")
    _check_is_zip(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            # Reading every member makes zipfile verify each CRC: damage anywhere is caught here.
            arrays = {key: archive[key] for key in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise CheckpointError(f"load_checkpoint: {path} is truncated or corrupt ({type(exc).__name__}: {exc})") from None
    tag = arrays.pop(_FORMAT_KEY, None)
    if tag is None or str(tag[()]) != FORMAT:
        found = None if tag is None else str(tag[()])
        raise CheckpointError(f"load_checkpoint: {path} is not a {FORMAT} checkpoint (format tag {found!r})")
    try:
        return unflatten_state(arrays)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"load_checkpoint: {path} has an inconsistent layout: {exc}") from None


_KIND_WORDS = {"pickle": "a pickle (never loaded: unpickling can run code)", "npy": "a NumPy .npy array",
               "text": "a text file", "other": "some other format"}


def _check_is_zip(path: Path) -> None:
    """Refuse anything that is not a zip archive before NumPy sees it (see ``file_kind``)."""
    with open(path, "rb") as handle:
        head = handle.read(6)
    kind = file_kind(head)
    if kind == "npz":
        return
    if kind == "empty":
        raise CheckpointError(f"load_checkpoint: {path} is empty (0 bytes)")
    raise CheckpointError(f"load_checkpoint: {path} is not a checkpoint (.npz zip archive): its first bytes "
                          f"{head!r} look like {_KIND_WORDS[kind]}")


def is_valid_checkpoint(path) -> bool:
    """True when :func:`load_checkpoint` would succeed on ``path``."""
    try:
        load_checkpoint(path)
    except CheckpointError:
        return False
    return True


def latest_checkpoint(directory, name: str = "checkpoint.npz"):
    """The most recent loadable checkpoint in ``directory``, or ``None``.

    Candidates are ``name`` and its kept predecessor (``previous_path(name)``) first, then any other
    ``*.npz`` file in the folder, newest modification time first. Temporary files left behind by an
    interrupted write (``.<name>.tmp-*``) are ignored, and so is every candidate that fails to load.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    preferred = [directory / name, previous_path(directory / name)]
    others = sorted((p for p in directory.glob("*.npz")
                     if p not in preferred and not p.name.startswith(".") and TEMP_MARK not in p.name),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for candidate in preferred + others:
        if candidate.is_file() and is_valid_checkpoint(candidate):
            return candidate
    return None


# ---------------------------------------------------------------- one writer per run folder

class RunDirectoryLocked(RuntimeError):
    """Another live process is writing into the same run folder."""


class RunDirectoryLock:
    """An exclusive OS lock on a run folder, held while a training run writes into it.

    ``with RunDirectoryLock(out): ...`` or ``lock = RunDirectoryLock(out).acquire()``. The lock is
    ``flock`` on ``<out>/.lock`` (which holds the owner's PID for the message a second writer
    gets): the kernel releases it when the process ends in any way, ``kill -9`` included, so a
    crashed run never leaves the folder locked. A second process raises
    :class:`RunDirectoryLocked` naming the holder's PID. Where ``fcntl`` does not exist (Windows)
    the lock is a no-op.
    """

    def __init__(self, directory):
        self.directory = Path(directory)
        self.path = self.directory / ".lock"
        self._handle = None

    def acquire(self) -> "RunDirectoryLock":
        try:
            import fcntl
        except ImportError:
            return self
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise RunDirectoryLocked(f"{self.directory} is in use by another run (PID {holder}); wait for it "
                                     "to finish, stop it, or choose another output folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()        # closing the descriptor releases the flock
            self._handle = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


# ---------------------------------------------------------------- training-state helpers

def _tensors_to_arrays(node):
    """Replace Tensor leaves (anything with ``.array`` and ``.requires_grad``) by host arrays."""
    if isinstance(node, dict):
        return {k: _tensors_to_arrays(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_tensors_to_arrays(v) for v in node]
    if isinstance(node, tuple):
        return tuple(_tensors_to_arrays(v) for v in node)
    if hasattr(node, "requires_grad") and hasattr(node, "array"):
        return to_host(node.array)
    return node


def _string_leaves(node, path=""):
    """``(path, text)`` for every str leaf, with the same path names as ``flatten_state``."""
    if isinstance(node, dict):
        items = ((str(k), v) for k, v in node.items())
    elif isinstance(node, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(node))
    else:
        if isinstance(node, str) and path:
            yield path, node
        return
    for name, child in items:
        yield from _string_leaves(child, f"{path}/{name}" if path else name)


def model_state_arrays(model) -> dict:
    """``model.state_dict()`` as ``{name: numpy.ndarray}`` (host copies, names unchanged)."""
    from .models.weights import state_arrays
    return state_arrays(model)


def training_state(model=None, optimizer=None, scheduler=None, loader=None, epoch=None, metrics=None,
                   rng=True, **extra) -> dict:
    """Collect what an exact resume needs into one dict for :func:`save_checkpoint`.

    Keys (each only when given): ``model`` (weights and buffers by state_dict name), ``optimizer``,
    ``scheduler``, ``loader`` (``DataLoader.state_dict()``: seed, epoch, batches delivered), ``rng`` (the
    global generator, ``tinygrad_cnn.random.get_rng_state()``), ``epoch``, ``metrics``, plus ``extra``.
    """
    state: dict = {}
    if model is not None:
        state["model"] = model_state_arrays(model)
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if loader is not None:
        state["loader"] = loader.state_dict()
    if rng:
        from .random import get_rng_state
        state["rng"] = get_rng_state()
    if epoch is not None:
        state["epoch"] = int(epoch)
    if metrics is not None:
        state["metrics"] = metrics
    state.update(extra)
    return state


def restore_training_state(state: dict, model=None, optimizer=None, scheduler=None, loader=None,
                           rng=True) -> dict:
    """Load the parts of ``state`` (from :func:`load_checkpoint`) into the given objects; returns ``state``.

    A requested part that the checkpoint lacks raises ``CheckpointError`` naming it.
    """
    def part(key):
        if key not in state:
            raise CheckpointError(f"restore_training_state: the checkpoint has no {key!r} entry "
                                  f"(it has {sorted(state)})")
        return state[key]

    if model is not None:
        _load_model_state(model, part("model"))
    if optimizer is not None:
        optimizer.load_state_dict(part("optimizer"))
    if scheduler is not None:
        scheduler.load_state_dict(part("scheduler"))
    if loader is not None:
        loader.load_state_dict(part("loader"))
    if rng and "rng" in state:
        from .random import set_rng_state
        set_rng_state(state["rng"])
    return state


def _load_model_state(model, arrays: dict) -> None:
    """``model.load_state_dict`` with arrays; falls back to Tensors if the module wants those."""
    try:
        model.load_state_dict(arrays)
    except (TypeError, AttributeError):
        from . import Tensor
        model.load_state_dict({k: Tensor(v) for k, v in arrays.items()})
