"""The global random state: one NumPy Generator (and CuPy's, when present).

``manual_seed(n)`` makes initialisation, dropout masks and augmentation
reproducible. ``get_rng_state()`` returns plain integer arrays, so the state
can be saved in an ``.npz`` checkpoint without pickle.
"""
from __future__ import annotations

import numpy as np

__all__ = ["manual_seed", "get_generator", "get_rng_state", "set_rng_state", "seed_from_generator",
           "initial_seed", "Generator"]

_generator = np.random.Generator(np.random.PCG64(0))
_seed = 0
_MASK64 = (1 << 64) - 1


def manual_seed(seed: int) -> np.random.Generator:
    """Seed every random number generator tinygrad_cnn uses (CPU and, if present, GPU)."""
    global _generator, _seed
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"manual_seed: seed must be a non-negative integer, got {seed!r}")
    _seed = int(seed)
    _generator = np.random.Generator(np.random.PCG64(_seed))
    from .backend import cupy_or_none
    cupy = cupy_or_none()
    if cupy is not None:
        cupy.random.seed(_seed)
    return _generator


def initial_seed() -> int:
    """The seed last given to ``manual_seed`` (0 before any)."""
    return _seed


class Generator:
    """PyTorch's ``torch.Generator``: a random stream of its own, e.g. ``Generator().manual_seed(42)``.

    It is a NumPy ``Generator`` underneath: functions taking ``generator=`` (``randn``, ``random_split``,
    ``RandomSampler`` ...) call its NumPy methods (``integers``, ``permutation``, ``standard_normal`` ...).
    Draws happen on the CPU, so ``device`` is accepted for PyTorch's signature only.
    """

    def __init__(self, device="cpu"):
        self.device = device
        self.manual_seed(67280421310721)      # PyTorch's default seed

    def manual_seed(self, seed):
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"Generator.manual_seed: seed must be a non-negative integer, got {seed!r}")
        self._seed = int(seed)
        self._rng = np.random.Generator(np.random.PCG64(self._seed))
        return self

    def initial_seed(self) -> int:
        return self._seed

    def seed(self) -> int:
        """Reseed from fresh OS entropy; returns the new seed."""
        self.manual_seed(int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1)))
        return self._seed

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._rng, name)


def get_generator() -> np.random.Generator:
    """The global NumPy generator (initialisation, dropout on the CPU, shuffling)."""
    return _generator


def seed_from_generator() -> int:
    """A fresh 63-bit seed drawn from the global generator (to seed other generators)."""
    return int(_generator.integers(0, 2**63 - 1))


def _split(value: int) -> np.ndarray:
    return np.array([(value >> 64) & _MASK64, value & _MASK64], dtype=np.uint64)


def _join(words) -> int:
    words = np.asarray(words, dtype=np.uint64)
    return (int(words[0]) << 64) | int(words[1])


def get_rng_state() -> dict:
    """The global generator's state as a dict of NumPy arrays (npz-safe)."""
    state = _generator.bit_generator.state
    return {
        "pcg64_state": _split(state["state"]["state"]),
        "pcg64_inc": _split(state["state"]["inc"]),
        "has_uint32": np.array(state["has_uint32"], dtype=np.int64),
        "uinteger": np.array(state["uinteger"], dtype=np.uint64),
    }


def set_rng_state(state: dict) -> None:
    """Restore a state returned by :func:`get_rng_state`."""
    missing = {"pcg64_state", "pcg64_inc", "has_uint32", "uinteger"} - set(state)
    if missing:
        raise KeyError(f"set_rng_state: missing keys {sorted(missing)}")
    _generator.bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": _join(state["pcg64_state"]), "inc": _join(state["pcg64_inc"])},
        "has_uint32": int(np.asarray(state["has_uint32"])),
        "uinteger": int(np.asarray(state["uinteger"])),
    }
