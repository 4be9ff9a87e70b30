"""``DistributedSampler``: each process's share of a dataset (PyTorch's ``torch.utils.data.DistributedSampler``)."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["DistributedSampler"]


class DistributedSampler:
    """The indices rank ``rank`` of ``num_replicas`` processes visits in one epoch.

    Every epoch the indices ``0 .. N-1`` are put in one order shared by all ranks (a permutation from
    ``numpy.random.default_rng([seed, epoch])`` when ``shuffle``, else dataset order) and dealt out in
    turn: rank ``r`` takes positions ``r, r + num_replicas, r + 2 * num_replicas, ...``. So when the
    ranks each batch ``B`` of their samples, their ``b``-th batches together are positions
    ``b * B * num_replicas ...`` of the shared order, whatever the number of ranks.

    All ranks must see the same number of samples (they take part in the same collectives). When
    ``N`` is not a multiple of ``num_replicas``, ``drop_last=False`` repeats the first indices of the
    order to fill the last round, and ``drop_last=True`` drops the last ``N % num_replicas`` positions.

    ``num_replicas`` and ``rank`` default to the world size and rank of the initialized process group.
    ``set_epoch(e)`` selects the epoch's order; the ``DataLoader`` calls it for every epoch it runs.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        if num_replicas is None or rank is None:
            from tinygrad_cnn import distributed as dist
            if not dist.is_initialized():
                raise RuntimeError("DistributedSampler: num_replicas and rank default to the process group's, "
                                   "but it is not initialized; call init_process_group or pass both")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if int(num_replicas) < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be >= 1, got {num_replicas}")
        if not 0 <= int(rank) < int(num_replicas):
            raise ValueError(f"DistributedSampler: rank must be in [0, {num_replicas}), got {rank}")
        self.dataset = dataset
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0
        n = len(dataset)
        if self.drop_last:
            self.num_samples = n // self.num_replicas
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        """This rank's indices (num_samples,) int64 for the current epoch."""
        n = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(n).astype(np.int64)
        else:
            order = np.arange(n, dtype=np.int64)
        if self.total_size > n:
            order = np.resize(order, self.total_size)   # np.resize repeats from the start
        order = order[:self.total_size]
        return order[self.rank::self.num_replicas]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.num_samples

    def __repr__(self):
        return (f"DistributedSampler(num_replicas={self.num_replicas}, rank={self.rank}, shuffle={self.shuffle}, "
                f"seed={self.seed}, drop_last={self.drop_last})")
