"""Array-backed datasets: whole arrays in memory so a loader can slice batches without per-image Python."""
from __future__ import annotations

import numpy as np

__all__ = ["ArrayDataset", "Subset", "random_split"]


class ArrayDataset:
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


class Subset(ArrayDataset):
    """The samples ``indices`` of an array dataset (arrays are copied once by fancy indexing)."""

    def __init__(self, dataset, indices):
        indices = np.asarray(indices, dtype=np.int64)
        super().__init__(dataset.data[indices], dataset.targets[indices],
                         transform=getattr(dataset, "transform", None),
                         classes=getattr(dataset, "classes", None))
        self.dataset, self.indices = dataset, indices


def random_split(dataset, lengths, seed=None):
    """Split an array dataset into non-overlapping ``Subset``s of the given lengths (or fractions).

    The permutation comes from ``numpy.random.default_rng(seed)``, so a fixed seed gives a fixed split.
    """
    n = len(dataset)
    lengths = list(lengths)
    if lengths and all(isinstance(x, float) for x in lengths) and abs(sum(lengths) - 1.0) < 1e-9:
        counts = [int(np.floor(n * f)) for f in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if sum(lengths) != n or any(x < 0 for x in lengths):
        raise ValueError(f"random_split: lengths {lengths} must be non-negative and sum to len(dataset)={n}")
    perm = np.random.default_rng(seed).permutation(n)
    out, start = [], 0
    for length in lengths:
        out.append(Subset(dataset, perm[start:start + length]))
        start += length
    return out
