"""Optimizers, learning-rate schedulers and state-dict <-> array helpers (``torch.optim`` API).

Every optimizer updates parameter arrays in place through a small array-level update function
registered as a kernel reference in :mod:`tinygrad_cnn.backend` (``"sgd_update"``,
``"adagrad_update"``, ``"rmsprop_update"``, ``"adam_update"``), so the same code runs on NumPy and
CuPy arrays and a fused kernel can be plugged in per backend.
"""
from . import lr_scheduler
from ._flatten import arrays_to_state_dict, flatten_state, state_dict_to_arrays, unflatten_state
from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .nadam_radam import NAdam, RAdam
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = [
    "Optimizer", "SGD", "Adadelta", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam", "RAdam", "lr_scheduler",
    "flatten_state", "unflatten_state", "state_dict_to_arrays", "arrays_to_state_dict",
]
