"""``nn.parallel``: PyTorch's wrappers for training one model on several devices."""
from .data_parallel import DataParallel

__all__ = ["DataParallel"]
