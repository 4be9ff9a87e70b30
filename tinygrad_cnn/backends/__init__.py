"""``tinygrad_cnn.backends``: PyTorch's ``torch.backends`` switches that training scripts set.

``backends.cudnn`` holds accepted settings (no cuDNN is used here); ``backends.mps`` reports that
Apple's Metal backend is not available.
"""
from . import cudnn, mps

__all__ = ["cudnn", "mps"]
