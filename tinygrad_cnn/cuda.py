"""NVIDIA GPU support through CuPy: availability, synchronisation, seeding, device facts.

Everything here works (and answers "no GPU") where CuPy or a GPU is missing; only calls that
really need the device raise, with a message that says how to install the ``cuda`` extra.

    >>> import tinygrad_cnn
    >>> device = "cuda" if tinygrad_cnn.cuda.is_available() else "cpu"
"""
from __future__ import annotations

from . import backend

__all__ = ["is_available", "device_count", "synchronize", "manual_seed", "manual_seed_all",
           "current_device", "get_device_name", "get_device_properties", "mem_get_info", "require",
           "install_hint"]


def install_hint() -> str:
    """How to get a working CUDA setup (used in error messages)."""
    return ("install the GPU extra with `pip install -e .[cuda]` (it pulls a CuPy wheel; if your "
            "CUDA version differs, install the matching `cupy-cuda12x` or `cupy-cuda13x` instead) "
            "on a machine with an NVIDIA GPU and driver; `python -m tinygrad_cnn.info` shows what "
            "is found")


def is_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    return backend.cupy_or_none() is not None


def device_count() -> int:
    """Number of visible CUDA devices (0 without CuPy or a driver)."""
    cupy = backend.cupy_or_none()
    if cupy is None:
        return 0
    return int(cupy.cuda.runtime.getDeviceCount())


def require():
    """The ``cupy`` module, or RuntimeError explaining what is missing and how to install it."""
    cupy = backend.cupy_or_none()
    if cupy is None:
        raise RuntimeError(f"CUDA is not available: CuPy is missing or sees no GPU; {install_hint()}")
    return cupy


def synchronize(device=None) -> None:
    """Wait until all queued GPU work has finished (call before reading a timer).

    ``device="cpu"`` is accepted and does nothing, so device-agnostic timing code can call
    ``synchronize(device)`` unconditionally. Without a GPU any other device raises RuntimeError.
    """
    if device is not None and backend.normalize_device(device) == "cpu":
        return
    cupy = require()
    cupy.cuda.Device().synchronize()


def manual_seed(seed: int) -> None:
    """Seed the GPU random generator only (``tinygrad_cnn.manual_seed`` seeds it already).

    Does nothing without a GPU, so seeding code runs everywhere.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"cuda.manual_seed: seed must be a non-negative integer, got {seed!r}")
    cupy = backend.cupy_or_none()
    if cupy is not None:
        cupy.random.seed(seed)


def manual_seed_all(seed: int) -> None:
    """Seed the generator of every visible GPU."""
    cupy = backend.cupy_or_none()
    if cupy is None:
        manual_seed(seed)
        return
    for index in range(device_count()):
        with cupy.cuda.Device(index):
            manual_seed(seed)


def current_device() -> int:
    """Index of the current CUDA device."""
    return int(require().cuda.runtime.getDevice())


def get_device_properties(index: int | None = None) -> dict:
    """``{"name", "total_memory" (bytes), "multi_processor_count", "compute_capability"}``."""
    cupy = require()
    index = current_device() if index is None else int(index)
    props = cupy.cuda.runtime.getDeviceProperties(index)
    name = props["name"]
    return {
        "name": name.decode() if isinstance(name, bytes) else str(name),
        "total_memory": int(props["totalGlobalMem"]),
        "multi_processor_count": int(props["multiProcessorCount"]),
        "compute_capability": (int(props["major"]), int(props["minor"])),
    }


def get_device_name(index: int | None = None) -> str:
    return get_device_properties(index)["name"]


def mem_get_info() -> tuple[int, int]:
    """``(free, total)`` bytes of the current device."""
    free, total = require().cuda.runtime.memGetInfo()
    return int(free), int(total)
