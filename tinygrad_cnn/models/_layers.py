"""Small building helpers shared by the model files."""
from __future__ import annotations

from collections import OrderedDict

from .. import nn


def named_sequential(*layers) -> "nn.Sequential":
    """``nn.Sequential`` whose children carry readable names (``conv1``, ``pool1``, ...).

    layers: ``(name, module)`` pairs, in the order they run. The names become the state_dict
    prefixes (``features.conv1.weight``) and the rows of :func:`tinygrad_cnn.summary`.
    """
    return nn.Sequential(OrderedDict(layers))


def is_leaf(module) -> bool:
    """True for a module without children (a layer that computes something itself)."""
    return next(iter(module.children()), None) is None


def init_conv_kaiming_(module, mode: str = "fan_out") -> None:
    """He et al. 2015 initialisation, ``weight ~ N(0, 2 / fan)``, bias 0.

    torchvision uses ``fan = fan_out = out_channels * kh * kw`` for ResNets and VGG; ``mode="fan_in"``
    (``in_channels / groups * kh * kw``) keeps the forward signal's variance, as in He et al.'s paper."""
    nn.init.kaiming_normal_(module.weight, mode=mode, nonlinearity="relu")
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)


def init_batchnorm_(module, weight: float = 1.0) -> None:
    """BatchNorm's scale ``gamma = weight`` (1, or 0 for a zero-initialised residual branch), shift 0."""
    nn.init.constant_(module.weight, weight)
    nn.init.zeros_(module.bias)
