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
import pkgutil
import warnings

import numpy as np

__all__ = [
    "get_array_module", "cupy_or_none", "numba_available", "register_reference", "kernel",
    "set_cpu_backend", "get_cpu_backend", "cpu_backend", "to_device", "to_host", "is_cupy_array",
    "device_of", "kernel_families", "kernel_table", "kernel_module", "kernel_choice",
    "available_implementations",
]


_references: dict[str, object] = {}
_tables: dict[str, dict[str, object]] = {}     # kind -> {kernel name: implementation}
_owners: dict[str, dict[str, str]] = {}       # kind -> {kernel name: defining module}
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
    """Whether Numba imports. Without it the CPU runs the NumPy references: a deliberate
    fallback (Numba may lag behind a new Python), announced once with the reason."""
    global _numba_state
    if _numba_state is None:
        try:
            import numba  # noqa: F401
            _numba_state = True
        except Exception as error:  # an ImportError, or a broken Numba/llvmlite install
            _numba_state = False
            _warn_fallback("tinygrad_cnn.kernels.cpu", error,
                           "the NumPy reference kernels run on the CPU instead (often 10x slower); "
                           "install Numba with `pip install numba`")
    return _numba_state


def _warn_fallback(module: str, error: BaseException, slower_path: str) -> None:
    warnings.warn(f"tinygrad_cnn: {module} is not usable ({type(error).__name__}: {error}); "
                  f"{slower_path}.", RuntimeWarning, stacklevel=3)


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


def is_cupy_array(value) -> bool:
    """Whether ``value`` is a CuPy array (told by its type, without importing CuPy)."""
    return type(value).__module__.split(".")[0] == "cupy"


def to_host(array) -> np.ndarray:
    """``array`` (NumPy or CuPy) as a NumPy array: itself on the CPU, a copy from the GPU."""
    if isinstance(array, np.ndarray):
        return array
    if is_cupy_array(array):
        return array.get()
    return np.asarray(array)


def device_of(array) -> str:
    return "cuda" if get_array_module(array) is not np else "cpu"


def to_device(array, device: str):
    """Copy ``array`` to ``"cpu"`` or ``"cuda"`` (no copy if it is already there)."""
    device = normalize_device(device)
    if device == "cpu":
        return to_host(array)
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


def kernel_families(kind: str) -> list[str]:
    """The family modules of ``tinygrad_cnn.kernels.<kind>`` (``"cpu"`` or ``"cuda"``), found on disk:
    every module whose name does not start with an underscore."""
    package = importlib.import_module(f"tinygrad_cnn.kernels.{kind}")
    return sorted(info.name for info in pkgutil.iter_modules(package.__path__)
                  if not info.name.startswith("_"))


def kernel_table(kind: str) -> dict[str, object]:
    """``{kernel name: implementation}`` over every family of ``tinygrad_cnn.kernels.<kind>``.

    A family module that exists but fails to import raises: its kernels would otherwise be
    replaced by the slower references without a word. Only a missing Numba is a deliberate
    fallback (warned once by :func:`numba_available`); the CUDA modules never import CuPy."""
    if kind not in _tables:
        table, owners = {}, {}
        if kind == "cpu" and not numba_available():
            _tables[kind], _owners[kind] = table, owners
            return table
        for family in kernel_families(kind):
            module_name = f"tinygrad_cnn.kernels.{kind}.{family}"
            try:
                module = importlib.import_module(module_name)
            except Exception as error:
                raise ImportError(
                    f"tinygrad_cnn: the kernel module {module_name} exists but failed to import "
                    f"({type(error).__name__}: {error}). Its ops would silently run the slower NumPy "
                    "references, so this is an error; `python -m tinygrad_cnn.info` describes the "
                    "installation.") from error
            for name, implementation in getattr(module, "KERNELS", {}).items():
                table[name], owners[name] = implementation, module_name
        _tables[kind], _owners[kind] = table, owners
    return _tables[kind]


def kernel_module(name: str, kind: str) -> str | None:
    """The family module whose ``KERNELS`` registers the ``kind`` implementation of kernel
    ``name`` (None: not written)."""
    kernel_table(kind)
    return _owners[kind].get(name)


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
        table = kernel_table("cuda")
        if name in table:
            return table[name]
        impl = "numpy"  # a reference written with the array module works on CuPy arrays too
    if impl == "numba":
        table = kernel_table("cpu")
        if name in table:
            return table[name]
        impl = "numpy"
    if impl == "numpy":
        if name not in _references:
            raise KeyError(f"no reference implementation registered for kernel {name!r}")
        return _references[name]
    raise ValueError(f"unknown kernel implementation {impl!r}: expected 'numpy', 'numba' or 'cupy'")


def kernel_choice(name: str, on_gpu: bool = False) -> tuple[str, str]:
    """``(implementation, why)``: what :func:`kernel` runs for ``name`` on CPU or GPU arrays."""
    if on_gpu:
        module = kernel_module(name, "cuda")
        if module is not None:
            return "cupy", f"CUDA kernel in {module}"
        from .kernels.cuda import REFERENCE_ONLY
        return "numpy", REFERENCE_ONLY.get(name, "no CUDA kernel written")
    if _cpu_backend != "numba":
        return "numpy", "CPU backend set to numpy (TINYGRAD_CNN_CPU_BACKEND or set_cpu_backend)"
    if not numba_available():
        return "numpy", "Numba is not installed"
    module = kernel_module(name, "cpu")
    if module is not None:
        return "numba", f"Numba kernel in {module}"
    return "numpy", "no Numba kernel written: the NumPy reference is the CPU implementation"


def available_implementations(name: str) -> list[str]:
    """Which implementations of kernel ``name`` exist here (for ``python -m tinygrad_cnn.info``)."""
    found = ["numpy"] if name in _references else []
    if numba_available() and name in kernel_table("cpu"):
        found.append("numba")
    if cupy_or_none() is not None and name in kernel_table("cuda"):
        found.append("cupy")
    return found


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
