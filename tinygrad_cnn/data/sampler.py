"""Samplers: which sample indices an epoch visits, in what order (PyTorch's ``torch.utils.data.sampler``).

A sampler is any iterable of indices with ``__len__``; ``DataLoader(sampler=...)`` takes one. A
sampler with ``set_epoch(epoch)`` (e.g. a distributed one) is told each epoch by the DataLoader.
"""
from __future__ import annotations

import numpy as np

from .._arguments import is_int

__all__ = ["Sampler", "SequentialSampler", "RandomSampler", "SubsetRandomSampler", "BatchSampler"]


def _seed_from(generator) -> int:
    if generator is None:
        from tinygrad_cnn.random import seed_from_generator
        return seed_from_generator()
    return int(generator.integers(0, 2**63 - 1))


class Sampler:
    """Base class: subclasses define ``__iter__`` (indices) and ``__len__``."""

    def __init__(self, data_source=None):
        pass

    def __iter__(self):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must define __iter__")


class SequentialSampler(Sampler):
    """0, 1, ..., len(data_source) - 1."""

    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self):
        return len(self.data_source)


class RandomSampler(Sampler):
    """A random permutation each pass (``replacement=True``: ``num_samples`` draws with replacement).

    ``generator`` is a NumPy-style generator (``tinygrad_cnn.Generator`` or ``numpy.random.Generator``);
    without one each pass draws a fresh seed from the global generator (``manual_seed``).
    """

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        self.data_source, self.replacement, self.generator = data_source, bool(replacement), generator
        self._num_samples = num_samples
        if num_samples is not None and int(num_samples) <= 0:
            raise ValueError(f"RandomSampler: num_samples must be a positive integer, got {num_samples}")

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else int(self._num_samples)

    def __iter__(self):
        n = len(self.data_source)
        rng = np.random.default_rng(_seed_from(self.generator))
        if self.replacement:
            return iter(rng.integers(0, n, self.num_samples).tolist())
        order = np.concatenate([rng.permutation(n) for _ in range(-(-self.num_samples // max(n, 1)))])
        return iter(order[:self.num_samples].tolist())

    def __len__(self):
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given ``indices`` in a random order each pass."""

    def __init__(self, indices, generator=None):
        self.indices, self.generator = list(indices), generator

    def __iter__(self):
        rng = np.random.default_rng(_seed_from(self.generator))
        return iter([self.indices[i] for i in rng.permutation(len(self.indices))])

    def __len__(self):
        return len(self.indices)


class BatchSampler(Sampler):
    """Groups the indices of ``sampler`` into lists of ``batch_size`` (the last one shorter unless
    ``drop_last``)."""

    def __init__(self, sampler, batch_size, drop_last):
        if not is_int(batch_size) or batch_size < 1:
            raise ValueError(f"BatchSampler: batch_size should be a positive integer value, "
                             f"got batch_size={batch_size!r}")
        self.sampler, self.batch_size, self.drop_last = sampler, int(batch_size), bool(drop_last)

    def __iter__(self):
        batch = []
        for index in self.sampler:
            batch.append(int(index))
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
