"""Neural-network building blocks (PyTorch's ``torch.nn``).

``nn.Module`` and its layers, ``nn.Parameter``, ``nn.functional`` (every op as a function),
``nn.init`` (weight initialisation) and ``nn.utils`` (gradient clipping).
"""
from .parameter import Parameter
from .modules import *  # noqa: F401,F403
from .modules import __all__ as _modules_all
from . import functional, init, parallel, utils
from .parallel import DataParallel

__all__ = ["Parameter", "functional", "init", "utils", "parallel", "DataParallel", *_modules_all]
