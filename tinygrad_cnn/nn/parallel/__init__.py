"""Data-parallel wrappers (PyTorch's ``torch.nn.parallel``): ``DataParallel`` (one device here)
and ``DistributedDataParallel`` (several processes, MPI or NCCL)."""
from .data_parallel import DataParallel
from .distributed import DistributedDataParallel

__all__ = ["DataParallel", "DistributedDataParallel"]
