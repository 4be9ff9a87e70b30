"""``DataParallel``: PyTorch's single-process multi-GPU wrapper, here over the one device a process uses."""
from __future__ import annotations

from ..modules.module import Module

__all__ = ["DataParallel"]


class DataParallel(Module):
    """Wrap ``module``; ``forward`` calls it unchanged (the batch is not split).

    PyTorch splits each batch across ``device_ids`` and gathers the outputs on ``output_device``. A
    process here drives one device, so the wrapper only keeps the interface: ``.module`` is the wrapped
    model, and the ``state_dict`` keys carry the ``module.`` prefix exactly as PyTorch's do, so
    checkpoints saved from a wrapped model load the same way. ``device_ids`` may name at most one
    device; ``dim`` is accepted.
    """

    def __init__(self, module, device_ids=None, output_device=None, dim=0):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DataParallel: module must be an nn.Module, got {type(module).__name__}")
        ids = [] if device_ids is None else list(device_ids)
        if len(ids) > 1:
            raise ValueError(f"DataParallel: device_ids {ids} name {len(ids)} devices; a process here "
                             "uses one device (use one process per GPU for more)")
        self.module = module
        self.device_ids = ids
        self.output_device = output_device
        self.dim = dim

    def forward(self, *inputs, **kwargs):
        return self.module(*inputs, **kwargs)
