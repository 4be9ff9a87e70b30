"""PyTorch's ``torch.backends.cudnn`` settings, accepted so scripts that set them run unchanged.

No cuDNN is used: convolutions run our own kernels (Numba on the CPU, CUDA through CuPy), chosen by
fixed rules from the shapes, never by timing. So:

* ``benchmark`` (PyTorch: time the cuDNN algorithms on the first call and keep the fastest) changes
  nothing: the choice is already made without timing runs.
* ``deterministic`` (PyTorch: only use deterministic algorithms) changes nothing: with a fixed seed
  our kernels give the same result on every run on a given machine (no atomic accumulation;
  every sum has a fixed order).
* ``enabled`` (PyTorch: use cuDNN at all) changes nothing.

The values you set are kept and read back, so ``print(cudnn.benchmark)`` shows your setting.
"""
from __future__ import annotations

__all__ = ["enabled", "benchmark", "deterministic", "allow_tf32", "is_available", "version"]

enabled = True
benchmark = False
deterministic = False
allow_tf32 = True


def is_available() -> bool:
    """False: cuDNN is not used (see the module docstring)."""
    return False


def version():
    """None: cuDNN is not used."""
    return None
