"""Datasets: PyTorch's map-style ``Dataset`` family, and array-backed datasets held as whole arrays in
memory so a loader can slice batches without per-image Python."""
from __future__ import annotations

import bisect

import numpy as np

__all__ = ["Dataset", "TensorDataset", "ConcatDataset", "ArrayDataset", "Subset", "random_split"]


class Dataset:
    """A map-style dataset: ``__getitem__(index)`` returns one sample, ``__len__`` how many.

    Subclass it as in PyTorch; ``a + b`` concatenates two datasets.
    """

    def __getitem__(self, index):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __add__(self, other):
        return ConcatDataset([self, other])


class TensorDataset(Dataset):
    """Sample ``i`` is ``tuple(t[i] for t in tensors)``; all tensors share their first dimension."""

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset: expected at least one tensor")
        sizes = [t.shape[0] if len(t.shape) else None for t in tensors]
        if any(size != sizes[0] for size in sizes) or sizes[0] is None:
            raise ValueError(f"TensorDataset: size mismatch between tensors: first dimensions {sizes}")
        self.tensors = tensors

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __len__(self):
        return int(self.tensors[0].shape[0])


class ConcatDataset(Dataset):
    """The samples of several datasets, one after the other."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset: datasets should not be an empty iterable")
        self.cumulative_sizes = list(np.cumsum([len(d) for d in self.datasets]).tolist())

    def __len__(self):
        return self.cumulative_sizes[-1]

    def __getitem__(self, index):
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"ConcatDataset: index {index} out of range for {n} samples")
        index = index % n
        which = bisect.bisect_right(self.cumulative_sizes, index)
        start = self.cumulative_sizes[which - 1] if which else 0
        return self.datasets[which][index - start]


class ArrayDataset(Dataset):
    """A dataset held as two aligned arrays.

    data: (N, C, H, W) (any dtype; uint8 for raw images). targets: (N,) int64.
    ``transform`` (optional) is a batch transform ``t(x, rng=None)`` working on (N, C, H, W) arrays;
    ``__getitem__`` applies it to a batch of one, and ``DataLoader`` applies it to whole batches.
    """

    def __init__(self, data, targets, transform=None, classes=None):
        data = np.asarray(data)
        targets = np.asarray(targets)
        if targets.ndim != 1 or data.shape[:1] != targets.shape:
            raise ValueError(f"ArrayDataset: data (N, ...) and targets (N,) must agree, "
                             f"got data {data.shape} and targets {targets.shape}")
        self.data = data
        self.targets = targets.astype(np.int64, copy=False)
        self.transform = transform
        if classes is not None:
            self.classes = list(classes)

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __getitem__(self, index):
        """Returns ``(image, label)``: image (C, H, W) (transformed if a transform is set), label int."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{type(self).__name__}: index {index} out of range for {n} samples")
        image = self.data[index]
        if self.transform is not None:
            image = self.transform(image[None])[0]
        return image, int(self.targets[index])

    def __repr__(self):
        return f"{type(self).__name__}(n={len(self)}, image_shape={tuple(self.data.shape[1:])})"


class Subset(Dataset):
    """The samples ``indices`` of ``dataset`` (PyTorch's ``Subset``).

    For an array dataset (``.data`` and ``.targets`` arrays) the subset's arrays are copied once by
    fancy indexing, so it is array-backed too and a loader still slices whole batches; any other
    dataset is indexed lazily, ``subset[i]`` being ``dataset[indices[i]]``.
    """

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if _is_array_backed(dataset):
            self.data = dataset.data[self.indices]
            self.targets = np.asarray(dataset.targets)[self.indices]
            self.transform = getattr(dataset, "transform", None)
            if getattr(dataset, "classes", None) is not None:
                self.classes = list(dataset.classes)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, index):
        if isinstance(index, (list, tuple)):
            return [self[i] for i in index]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"Subset: index {index} out of range for {n} samples")
        if hasattr(self, "data"):
            return ArrayDataset.__getitem__(self, index)
        return self.dataset[int(self.indices[index])]

    def __repr__(self):
        return f"Subset(n={len(self)}, of={type(self.dataset).__name__})"


def _is_array_backed(dataset) -> bool:
    return isinstance(getattr(dataset, "data", None), np.ndarray) and hasattr(dataset, "targets")


def random_split(dataset, lengths, generator=None, seed=None):
    """Split ``dataset`` into non-overlapping ``Subset``s of the given lengths (or fractions).

    The permutation comes from ``generator`` (``tinygrad_cnn.Generator().manual_seed(42)`` or a
    NumPy generator, as PyTorch's ``generator=``) or from ``numpy.random.default_rng(seed)``; with
    neither, from the global generator (``manual_seed``). Fractions that do not divide the length
    exactly hand the remainder out one by one from the first split, as PyTorch does.
    """
    n = len(dataset)
    lengths = list(lengths)
    if lengths and all(isinstance(x, float) for x in lengths) and abs(sum(lengths) - 1.0) < 1e-9:
        if any(x < 0 for x in lengths):
            raise ValueError(f"random_split: fractions {lengths} must be non-negative")
        counts = [int(np.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if sum(lengths) != n or any(x < 0 for x in lengths):
        raise ValueError(f"random_split: lengths {lengths} must be non-negative and sum to len(dataset)={n}")
    if generator is not None and seed is not None:
        raise ValueError("random_split: pass generator= or seed=, not both")
    if generator is None:
        if seed is None:
            from tinygrad_cnn.random import seed_from_generator
            seed = seed_from_generator()
        generator = np.random.default_rng(seed)
    perm = generator.permutation(n)
    out, start = [], 0
    for length in lengths:
        out.append(Subset(dataset, perm[start:start + length]))
        start += length
    return out
