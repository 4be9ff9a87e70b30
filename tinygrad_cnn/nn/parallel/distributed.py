"""``DistributedDataParallel``: one model replica per process, gradients averaged across processes."""
from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np

from ... import distributed as dist
from ...backend import get_array_module
from ..modules.module import Module

__all__ = ["DistributedDataParallel"]


class _Bucket:
    """Gradients reduced together: one flat buffer, one collective."""

    def __init__(self, params):
        self.params = params
        self.ready = 0


def _flat_groups(tensors, cap_bytes=None):
    """Split ``tensors`` (in order) into runs of one dtype and device, each at most ``cap_bytes``."""
    groups, current, size = [], [], 0
    for t in tensors:
        array = dist._array(t)
        key = (array.dtype, get_array_module(array))
        if current and (key != current_key or (cap_bytes is not None and size + array.nbytes > cap_bytes)):
            groups.append(current)
            current, size = [], 0
        current.append(t)
        current_key = key
        size += array.nbytes
    if current:
        groups.append(current)
    return groups


def _flatten(arrays):
    xp = get_array_module(arrays[0])
    return xp.concatenate([a.reshape(-1) for a in arrays])


def _unflatten_into(flat, arrays):
    offset = 0
    for a in arrays:
        a[...] = flat[offset:offset + a.size].reshape(a.shape)
        offset += a.size


class DistributedDataParallel(Module):
    """Data-parallel training across processes (PyTorch's ``torch.nn.parallel.DistributedDataParallel``).

    Every process holds a replica of ``module`` and trains on its own share of each batch. At
    construction rank 0's parameters and buffers are copied to every rank (after checking that all
    ranks built the same parameter shapes), so the replicas start equal. In each backward pass, once
    every gradient of a bucket (about ``bucket_cap_mb`` MB of parameters, taken in reverse order of
    registration, the order in which backward produces them) has been accumulated into ``.grad``,
    the bucket is flattened into one buffer and averaged across ranks with a single all-reduce. After
    ``backward()`` returns, every rank's ``.grad`` holds the gradient of the mean loss over the global
    batch, so identical optimizer steps keep the replicas identical.

    Args:
        module: the model. Reach it through ``.module`` (to save it, or to evaluate it rank by rank).
        broadcast_buffers: copy rank 0's buffers (BatchNorm running statistics) to every rank at the
            start of each training-mode forward, as PyTorch does. Batch statistics themselves are
            computed per rank, on the rank's share of the batch.
        bucket_cap_mb: bucket size in MB.
        device_ids, output_device: accepted for PyTorch compatibility; the model stays where it is.

    ``no_sync()`` skips the reduction for gradient accumulation: backward passes inside it only
    accumulate locally, and the first backward outside it averages everything accumulated.

    Every parameter that requires grad must receive a gradient in each synchronised backward (the
    reduction waits for it); the next forward raises otherwise. ``comm_seconds`` accumulates the
    wall time spent inside the gradient all-reduces.

    The reduction runs when backward has finished computing (the engine accumulates leaf gradients
    at the end of a pass), not overlapped with it: see docs/distributed.md for what that costs.
    """

    def __init__(self, module, device_ids=None, output_device=None, dim=0, broadcast_buffers=True,
                 bucket_cap_mb=25):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel: module must be an nn.Module, got {type(module).__name__}")
        if dim != 0:
            raise ValueError(f"DistributedDataParallel: only dim=0 (batch dimension) is supported, got {dim}")
        if device_ids is not None and len(device_ids) > 1:
            raise ValueError(f"DistributedDataParallel: one device per process; got device_ids={device_ids}")
        if not dist.is_initialized():
            raise dist.DistributedError("DistributedDataParallel: the default process group is not "
                                        "initialized; call tinygrad_cnn.distributed.init_process_group first")
        if not float(bucket_cap_mb) > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be > 0, got {bucket_cap_mb}")
        self.module = module
        self.broadcast_buffers = bool(broadcast_buffers)
        self.world_size = dist.get_world_size()
        self.require_backward_grad_sync = True
        self.comm_seconds = 0.0
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self._verify_same_parameters(named)
        self._broadcast([p for _, p in module.named_parameters()] + self._buffers_to_sync())
        self._names = {id(p): n for n, p in named}
        self._buckets = [_Bucket(group) for group in
                         _flat_groups([p for _, p in reversed(named)], int(float(bucket_cap_mb) * 2 ** 20))]
        self._bucket_of = {id(p): b for b in self._buckets for p in b.params}
        self._handles = [p.register_post_accumulate_grad_hook(self._grad_ready) for _, p in named]

    # ------------------------------------------------------------ construction
    def _buffers_to_sync(self):
        return [b for b in self.module.buffers() if b is not None]

    def _verify_same_parameters(self, named):
        """Every rank must register the same parameters (count, shapes, dtypes), or training would hang."""
        signatures = np.stack([dist._signature(dist._array(p)) for _, p in named]) if named else \
            np.zeros((0, dist._SIGNATURE_DIMS + 3), dtype=np.int64)
        counts = np.array([len(named)], dtype=np.int64)
        low, high = counts.copy(), counts.copy()
        dist.reduce_array(low, dist.ReduceOp.MIN)
        dist.reduce_array(high, dist.ReduceOp.MAX)
        if low[0] != high[0]:
            raise ValueError(f"DistributedDataParallel: the ranks' models have different numbers of parameters "
                             f"requiring grad (between {low[0]} and {high[0]}; this rank: {len(named)})")
        reference = signatures.copy()
        dist.broadcast_array(reference, 0)
        mismatch = np.flatnonzero((reference != signatures).any(axis=1))
        flag = np.array([mismatch.size], dtype=np.int64)
        dist.reduce_array(flag, dist.ReduceOp.MAX)
        if flag[0]:
            where = (f"first on this rank: {named[mismatch[0]][0]} has {dist._describe(signatures[mismatch[0]])}, "
                     f"rank 0 has {dist._describe(reference[mismatch[0]])}") if mismatch.size else \
                "this rank matches rank 0, another rank does not"
            raise ValueError(f"DistributedDataParallel: the ranks' parameters differ in shape or dtype ({where})")

    def _broadcast(self, tensors):
        """Rank 0's values into ``tensors``: one broadcast per dtype (BatchNorm interleaves float
        statistics with int64 counters)."""
        by_dtype = {}
        for t in tensors:
            array = dist._array(t)
            by_dtype.setdefault((array.dtype, get_array_module(array)), []).append(t)
        for group in by_dtype.values():
            arrays = [dist._array(t) for t in group]
            flat = _flatten(arrays)
            dist.broadcast_array(flat, 0)
            _unflatten_into(flat, arrays)

    # ------------------------------------------------------------ training
    def forward(self, *inputs, **kwargs):
        pending = [self._names[id(p)] for b in self._buckets if b.ready for p in b.params]
        if pending:
            for b in self._buckets:
                b.ready = 0
            raise RuntimeError(
                "DistributedDataParallel: the previous backward did not produce gradients for every "
                f"parameter, so their reduction never ran (in an unfinished bucket: {', '.join(pending[:5])}"
                f"{', ...' if len(pending) > 5 else ''}); make every parameter take part in the loss, or set "
                "requires_grad=False on the ones that do not")
        if self.broadcast_buffers and self.training and self.world_size > 1:
            self._broadcast(self._buffers_to_sync())
        return self.module(*inputs, **kwargs)

    @contextmanager
    def no_sync(self):
        """Accumulate gradients locally (no communication) inside this block."""
        previous, self.require_backward_grad_sync = self.require_backward_grad_sync, False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    def _grad_ready(self, param):
        if not self.require_backward_grad_sync:
            return
        bucket = self._bucket_of[id(param)]
        bucket.ready += 1
        if bucket.ready == len(bucket.params):
            bucket.ready = 0
            self._reduce(bucket)

    def _reduce(self, bucket):
        """Average the bucket's gradients across ranks, writing the mean back into each ``.grad``."""
        if self.world_size == 1:
            return
        arrays = [dist._array(p.grad) for p in bucket.params]
        flat = _flatten(arrays)
        start = time.perf_counter()
        dist.reduce_array(flat, dist.ReduceOp.SUM)
        self.comm_seconds += time.perf_counter() - start
        flat /= self.world_size
        _unflatten_into(flat, arrays)

    def extra_repr(self) -> str:
        return f"world_size={self.world_size}, buckets={len(self._buckets)}"
