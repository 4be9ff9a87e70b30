"""``tinygrad_cnn.accelerator``: PyTorch's ``torch.accelerator``, the device-agnostic view of the GPU.

The one accelerator here is an NVIDIA GPU through CuPy (``tinygrad_cnn.cuda``):

    >>> import tinygrad_cnn as torch
    >>> device = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else torch.device("cpu")
"""
from __future__ import annotations

from . import cuda
from .devices import device

__all__ = ["is_available", "current_accelerator", "device_count", "current_device_index", "synchronize"]


def is_available() -> bool:
    """True when a CUDA GPU is usable (CuPy imports and sees a device)."""
    return cuda.is_available()


def current_accelerator(check_available: bool = False):
    """``device("cuda")`` when a GPU is usable, else None."""
    return device("cuda") if cuda.is_available() else None


def device_count() -> int:
    return cuda.device_count()


def current_device_index() -> int:
    """0 with a GPU (one GPU per process here), -1 without."""
    return 0 if cuda.is_available() else -1


def synchronize(device=None) -> None:
    """Wait for the GPU's queued work; nothing to wait for without one."""
    if cuda.is_available():
        cuda.synchronize()
