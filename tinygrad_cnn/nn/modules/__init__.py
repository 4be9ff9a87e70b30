"""All layer classes of ``tinygrad_cnn.nn``."""
from .module import Module, RemovableHandle
from .container import ModuleDict, ModuleList, Sequential
from .linear import Identity, Linear
from .conv import Conv2d
from .conv_transpose import ConvTranspose2d
from .upsampling import MaxUnpool2d, Upsample, UpsamplingBilinear2d, UpsamplingNearest2d
from .pooling import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d, MaxPool2d
from .normalization import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm, LocalResponseNorm
from .sync_batchnorm import SyncBatchNorm
from .activation import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .dropout import Dropout, Dropout2d
from .loss import CrossEntropyLoss, MSELoss, NLLLoss
from .flatten import Flatten, Unflatten

__all__ = [
    "Module", "RemovableHandle", "Sequential", "ModuleList", "ModuleDict", "Identity", "Linear",
    "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "BatchNorm1d",
    "BatchNorm2d", "SyncBatchNorm", "LayerNorm", "GroupNorm", "LocalResponseNorm", "ReLU", "LeakyReLU", "Sigmoid",
    "Tanh", "GELU", "Softmax", "LogSoftmax", "Dropout", "Dropout2d", "CrossEntropyLoss", "NLLLoss",
    "MSELoss", "Flatten", "Unflatten", "ConvTranspose2d", "MaxUnpool2d", "Upsample",
    "UpsamplingNearest2d", "UpsamplingBilinear2d",
]
