"""``tinygrad_cnn.utils``: where PyTorch scripts look for ``utils.data`` (``torch.utils.data``)."""
from . import data

__all__ = ["data"]
