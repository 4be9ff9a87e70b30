"""``SyncBatchNorm``: BatchNorm whose training statistics span every rank of the process group."""
from __future__ import annotations

import numpy as np

from ... import distributed as dist
from ...autograd import Function, is_grad_enabled
from ...backend import get_array_module
from .normalization import _BatchNorm

__all__ = ["SyncBatchNorm"]


def _channel_sums(array3):
    """(N, C, L) -> (C,) sums, accumulated in float64 (the all-reduce then adds a few of these)."""
    return array3.sum(axis=(0, 2), dtype=np.float64)


def _summed_over_ranks(*vectors):
    """Each (C,) float64 vector summed over the ranks, with one all-reduce for all of them."""
    xp = get_array_module(vectors[0])
    flat = xp.concatenate(vectors)
    dist.reduce_array(flat, dist.ReduceOp.SUM)
    return xp.split(flat, len(vectors))


class _SyncBatchNormTrain(Function):
    """BatchNorm of x (N, C, *) with the mean and biased variance of all ranks' batches together.

    Forward: ``mean = sum_ranks sum(x) / M`` and ``var = sum_ranks sum((x - mean)^2) / M`` with M the
    values per channel over all ranks (two all-reduces, the second one of centred values, as
    accurate as one process computing over the whole batch). Backward, with ``g`` this rank's
    gradient of its own loss: ``dx = weight / sqrt(var + eps) / M * (M g - S_g - xhat S_gxhat)`` with
    ``S_g = sum_ranks sum(g)`` and ``S_gxhat = sum_ranks sum(g xhat)`` (one all-reduce); ``dweight``
    and ``dbias`` are this rank's own sums, which DistributedDataParallel then averages like any
    gradient. With every rank's loss a mean over its share, this is the gradient of the mean loss
    over the global batch times the number of ranks, which DDP's averaging divides out.
    """

    def forward(self, x, weight, bias, *, eps, running_mean, running_var, momentum):
        xp = get_array_module(x)
        channels = x.shape[1]
        x3 = x.reshape(x.shape[0], channels, -1)
        count = np.array([x3.shape[0] * x3.shape[2]], dtype=np.float64)
        total, = _summed_over_ranks(xp.asarray(count))
        total = float(total[0])
        if total <= 1:
            raise ValueError(f"SyncBatchNorm: expected more than 1 value per channel over all ranks, got "
                             f"{int(total)} (input of shape {tuple(x.shape)} on this rank)")
        sums, = _summed_over_ranks(_channel_sums(x3))
        mean = sums / total
        centred = x3 - mean.astype(x.dtype)[None, :, None]
        squares, = _summed_over_ranks(_channel_sums(centred * centred))
        var = squares / total
        inv_std = 1.0 / xp.sqrt(var + eps)
        xhat = centred * inv_std.astype(x.dtype)[None, :, None]
        y = xhat
        if weight is not None:
            y = y * weight[None, :, None]
        if bias is not None:
            y = y + bias[None, :, None]
        if running_mean is not None:
            running_mean *= 1.0 - momentum
            running_mean += (momentum * mean).astype(running_mean.dtype)
        if running_var is not None:
            running_var *= 1.0 - momentum
            running_var += (momentum * var * (total / (total - 1))).astype(running_var.dtype)
        self.total, self.xhat, self.inv_std = total, xhat, inv_std.astype(x.dtype)
        self.save_for_backward(x, weight)
        return y.reshape(x.shape)

    def backward(self, grad_output):
        x, weight = self.saved_tensors
        if is_grad_enabled():
            raise NotImplementedError("SyncBatchNorm: double backward (create_graph=True) is not supported")
        g3 = dist._array(grad_output).reshape(self.xhat.shape)
        local_g, local_g_xhat = _channel_sums(g3), _channel_sums(g3 * self.xhat)
        sum_g, sum_g_xhat = _summed_over_ranks(local_g, local_g_xhat)
        dtype = self.xhat.dtype
        gain = self.inv_std if weight is None else self.inv_std * dist._array(weight)
        needs = self.needs_input_grad
        grad_x = None
        if needs[0]:
            grad_x = (gain[None, :, None] / self.total * (
                self.total * g3 - sum_g.astype(dtype)[None, :, None]
                - self.xhat * sum_g_xhat.astype(dtype)[None, :, None])).reshape(x.shape)
        tensor = type(grad_output)
        return (tensor._wrap(grad_x) if needs[0] else None,
                tensor._wrap(local_g_xhat.astype(dtype)) if needs[1] else None,
                tensor._wrap(local_g.astype(dtype)) if needs[2] else None)


class SyncBatchNorm(_BatchNorm):
    """Batch normalisation over the whole distributed batch (PyTorch's ``torch.nn.SyncBatchNorm``).

    In training, with an initialized process group of more than one rank, each channel is normalised
    with the mean and variance of all ranks' inputs together, so 2 ranks with batch 64 compute what one
    process computes with batch 128 (the running statistics too). In eval mode, or in one process, it
    is ``BatchNorm``. Inputs (N, C, *) with N, C and * free: ``SyncBatchNorm`` serves 1d, 2d and 3d.
    ``convert_sync_batchnorm(model)`` swaps every BatchNorm of a model for one.
    """

    _expected_dims = (2, 3, 4, 5)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 process_group=None, device=None, dtype=None):
        if process_group is not None:
            raise NotImplementedError("SyncBatchNorm: only the default process group exists; pass "
                                      "process_group=None")
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype)

    def forward(self, input):
        distributed = dist.is_initialized() and dist.get_world_size() > 1
        if not (self.training and distributed):
            return super().forward(input)
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        counting = self.track_running_stats and self.num_batches_tracked is not None
        if counting and self.momentum is None:
            factor = 1.0 / (float(self.num_batches_tracked.numpy()) + 1)
        output = _SyncBatchNormTrain.apply(
            input, self.weight, self.bias, eps=float(self.eps),
            running_mean=None if self.running_mean is None else dist._array(self.running_mean),
            running_var=None if self.running_var is None else dist._array(self.running_var),
            momentum=float(factor))
        if counting:
            dist._array(self.num_batches_tracked)[...] += 1
        return output

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """``module`` with every ``BatchNorm1d``/``2d`` replaced by a ``SyncBatchNorm`` holding the same
        parameters, buffers and settings (the module itself if it is one)."""
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            sync = cls(module.num_features, module.eps, module.momentum, module.affine,
                       module.track_running_stats, process_group)
            for name in ("weight", "bias"):
                setattr(sync, name, getattr(module, name))
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(sync, name, getattr(module, name))
            sync.train(module.training)
            return sync
        for name, child in list(module.named_children()):
            converted = cls.convert_sync_batchnorm(child, process_group)
            if converted is not child:
                setattr(module, name, converted)
        return module
