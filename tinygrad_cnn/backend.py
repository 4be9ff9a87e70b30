"""The one place that chooses how an array operation is carried out.

Arrays live in NumPy (CPU) or CuPy (NVIDIA GPU). Hot operations (im2col,
pooling, BatchNorm, ...) exist in up to three implementations:

* ``"numpy"``: the reference, registered by the op file that owns it. It reads
  like the textbook and is the oracle the fast versions are tested against.
* ``"numba"``: hand-written CPU kernels in ``tinygrad_cnn.kernels.cpu.<family>``,
  each module listing its kernels in a ``KERNELS`` dict.
* ``"cupy"``: GPU kernels in ``tinygrad_cnn.kernels.cuda.<family>``, likewise.

Ops call ``kernel(name, xp)`` and never test for Numba or CuPy themselves.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import sys
import warnings

import concurrent.futures
import itertools
import threading

import numpy as np

__all__ = [
    "get_array_module", "cupy_or_none", "numba_available", "register_reference", "kernel",
    "set_cpu_backend", "get_cpu_backend", "cpu_backend", "to_device", "device_of",
    "KERNEL_FAMILIES", "available_implementations", "chunk_bytes", "map_slices", "slice_workers",
]

# Modules under kernels/cpu and kernels/cuda that may define kernels.
KERNEL_FAMILIES = ("conv", "pooling", "normalization", "activation", "dropout", "loss", "optim",
                   "elementwise")

def _keep_freed_memory_mapped():
    """Let glibc's malloc recycle freed activation buffers instead of unmapping them.

    A training step frees and re-allocates the same few-MiB arrays hundreds of times.
    By default glibc returns large blocks to the OS and every new array is page-faulted
    in again (the kernel zeroes each page); raising the mmap and trim thresholds keeps
    them in the heap, like the caching allocators of other frameworks. Measured 10-15%
    per ResNet-20 step on 2 cores. Peak memory is unchanged; memory is returned to the
    OS later. Opt out with TINYGRAD_CNN_MALLOC_TUNING=0. Only on Linux with glibc."""
    if os.environ.get("TINYGRAD_CNN_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 64 << 20)) and \
            bool(libc.mallopt(m_trim_threshold, 512 << 20))
    except (OSError, AttributeError):
        return False


MALLOC_TUNED = _keep_freed_memory_mapped()

# Ops whose backward builds a large temporary (the im2col column matrix) process the batch
# in slices of about this many bytes of temporary on the CPU: a slice stays in the cache
# between being written and being read by the GEMM, and its buffer is recycled by the
# allocator instead of being mapped fresh (and page-faulted) at every call. A GPU has
# the memory bandwidth and wants the largest launches, so it takes the whole batch.
CPU_CHUNK_BYTES = 1 << 20

_references: dict[str, object] = {}
_compiled: dict[str, dict[str, object]] = {}
_cpu_backend = os.environ.get("TINYGRAD_CNN_CPU_BACKEND", "numba").lower()
_cupy = None
_cupy_checked = False
_numba_state = None  # None = not checked, True/False afterwards


def cupy_or_none():
    """The ``cupy`` module if it imports and sees a GPU, else None (checked once)."""
    global _cupy, _cupy_checked
    if not _cupy_checked:
        _cupy_checked = True
        try:
            import cupy
            if cupy.cuda.runtime.getDeviceCount() > 0:
                _cupy = cupy
        except Exception:  # no cupy, no driver, or no device: the CPU path is used
            _cupy = None
    return _cupy


def numba_available() -> bool:
    global _numba_state
    if _numba_state is None:
        try:
            import numba  # noqa: F401
            _numba_state = True
        except Exception:
            _numba_state = False
            warnings.warn("Numba is not installed: tinygrad_cnn falls back to its (slower) NumPy "
                          "reference kernels. Install it with `pip install numba`.", RuntimeWarning)
    return _numba_state


def get_array_module(x):
    """``numpy`` or ``cupy``, whichever owns ``x`` (an array or a Tensor)."""
    data = getattr(x, "array", x) if not isinstance(x, np.ndarray) else x
    if isinstance(data, np.ndarray) or np.isscalar(data):
        return np
    module = type(data).__module__
    if module.startswith("cupy"):
        import cupy
        return cupy
    return np


def device_of(array) -> str:
    return "cuda" if get_array_module(array) is not np else "cpu"


def to_device(array, device: str):
    """Copy ``array`` to ``"cpu"`` or ``"cuda"`` (no copy if it is already there)."""
    device = normalize_device(device)
    if device == "cpu":
        if isinstance(array, np.ndarray):
            return array
        if hasattr(array, "get"):
            return array.get()
        return np.asarray(array)
    cupy = cupy_or_none()
    if cupy is None:
        raise RuntimeError(
            "device 'cuda' was requested but CuPy or a CUDA GPU is not available. Install the "
            "GPU extra with `pip install tinygrad_cnn[cuda]` (a CuPy wheel matching your CUDA "
            "version, e.g. cupy-cuda12x) on a machine with an NVIDIA GPU.")
    return cupy.asarray(array)


def normalize_device(device) -> str:
    name = str(device).lower()
    if name.startswith("cuda"):
        return "cuda"
    if name == "cpu":
        return "cpu"
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")


def register_reference(name: str, fn=None):
    """Register the NumPy reference implementation of kernel ``name`` (usable as decorator)."""
    if fn is None:
        return lambda f: register_reference(name, f)
    _references[name] = fn
    return fn


def _load_family_kernels(kind: str) -> dict:
    if kind not in _compiled:
        table = {}
        for family in KERNEL_FAMILIES:
            try:
                module = importlib.import_module(f"tinygrad_cnn.kernels.{kind}.{family}")
            except ModuleNotFoundError as error:
                if error.name and error.name.startswith("tinygrad_cnn.kernels"):
                    continue
                if kind == "cpu" and error.name == "numba":
                    continue
                raise
            table.update(getattr(module, "KERNELS", {}))
        _compiled[kind] = table
    return _compiled[kind]


def kernel(name: str, xp=np, impl: str | None = None):
    """The implementation of kernel ``name`` for arrays of module ``xp``.

    ``impl`` forces ``"numpy"`` (the reference), ``"numba"`` or ``"cupy"``.
    """
    if impl is None:
        if xp is not np:
            impl = "cupy"
        elif _cpu_backend == "numba" and numba_available():
            impl = "numba"
        else:
            impl = "numpy"
    if impl == "cupy":
        table = _load_family_kernels("cuda")
        if name in table:
            return table[name]
        impl = "numpy"  # a reference written with the array module works on CuPy arrays too
    if impl == "numba":
        table = _load_family_kernels("cpu")
        if name in table:
            return table[name]
        impl = "numpy"
    if impl == "numpy":
        if name not in _references:
            raise KeyError(f"no reference implementation registered for kernel {name!r}")
        return _references[name]
    raise ValueError(f"unknown kernel implementation {impl!r}: expected 'numpy', 'numba' or 'cupy'")


def available_implementations(name: str) -> list[str]:
    """Which implementations of kernel ``name`` exist here (for ``python -m tinygrad_cnn.info``)."""
    found = ["numpy"] if name in _references else []
    if numba_available() and name in _load_family_kernels("cpu"):
        found.append("numba")
    if cupy_or_none() is not None and name in _load_family_kernels("cuda"):
        found.append("cupy")
    return found


def chunk_bytes(xp) -> int | None:
    """Target size of a per-slice temporary for array module ``xp``; None = no slicing."""
    return CPU_CHUNK_BYTES if xp is np else None


_slice_pool = None
_blas_controller = None
_slice_pool_lock = threading.Lock()


def slice_workers() -> int:
    """Number of CPU workers :func:`map_slices` uses (env TINYGRAD_CNN_NUM_THREADS)."""
    return max(1, int(os.environ.get("TINYGRAD_CNN_NUM_THREADS", os.cpu_count() or 1)))


def _single_thread_worker():
    # Inside a worker, kernels and BLAS run on one thread each: the workers already
    # occupy every core, and nested thread pools would only fight over them.
    if numba_available():
        import numba
        numba.set_num_threads(1)          # thread-local in Numba


def map_slices(fn, slices, xp=np):
    """``[fn(s) for s in slices]``, run by one worker per core on the CPU.

    Slices of a batch are independent, so each worker takes whole slices with
    single-threaded BLAS and kernels: one hand-off per call instead of a
    synchronisation inside every GEMM and kernel (which on a busy machine waits for
    the slowest thread each time). Results come back in slice order, so any sum
    over them is deterministic. On the GPU, or with one slice or one core, it is a
    plain loop."""
    global _slice_pool, _blas_controller
    workers = slice_workers()
    if xp is not np or workers == 1 or len(slices) < 2:
        return [fn(s) for s in slices]
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:               # without it BLAS would oversubscribe the cores
        return [fn(s) for s in slices]
    with _slice_pool_lock:
        if _slice_pool is None:
            _slice_pool = concurrent.futures.ThreadPoolExecutor(
                workers, thread_name_prefix="tinygrad_cnn", initializer=_single_thread_worker)
            # Finding the BLAS libraries scans every loaded library (about 1 ms); done once,
            # a limit costs microseconds.
            _blas_controller = ThreadpoolController()
        with _blas_controller.limit(limits=1, user_api="blas"):
            return _run_on_workers(fn, slices, workers)


def _run_on_workers(fn, slices, workers):
    """One task per worker, each taking the next slice from a shared counter until none
    is left. A task per slice cost a future and a queue hand-off each, tens of
    microseconds under the GIL: 18% of a ResNet-20 stage-1 convolution, which has 64
    slices. The counter still balances the load when one core is slowed by other work."""
    next_index = itertools.count().__next__        # atomic under the GIL
    results = [None] * len(slices)

    def work():
        while (index := next_index()) < len(slices):
            results[index] = fn(slices[index])

    tasks = [_slice_pool.submit(work) for _ in range(min(workers, len(slices)))]
    for task in tasks:
        task.result()                               # re-raises a worker's exception
    return results


def set_cpu_backend(name: str) -> None:
    """Choose the CPU kernels: ``"numba"`` (default, fast) or ``"numpy"`` (the reference)."""
    global _cpu_backend
    name = name.lower()
    if name not in ("numba", "numpy"):
        raise ValueError(f"set_cpu_backend: expected 'numba' or 'numpy', got {name!r}")
    _cpu_backend = name


def get_cpu_backend() -> str:
    return _cpu_backend


@contextlib.contextmanager
def cpu_backend(name: str):
    """``with cpu_backend("numpy"): ...`` runs the block on the reference kernels."""
    previous = _cpu_backend
    set_cpu_backend(name)
    try:
        yield
    finally:
        set_cpu_backend(previous)
