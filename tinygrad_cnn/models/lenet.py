"""LeNet-5 (LeCun, Bottou, Bengio and Haffner 1998) for 28x28 MNIST digits.

The paper feeds 32x32 images; padding conv1 by 2 gives 28x28 MNIST digits the same geometry::

    c1   conv 6 5x5, pad 2     28x28x6     156 parameters
    s2   2x2 pooling, stride 2 14x14x6
    c3   conv 16 5x5           10x10x16    2,416
    s4   2x2 pooling, stride 2  5x5x16
    c5   conv 120 5x5           1x1x120    48,120
    f6   fully connected 84                10,164
    output fully connected 10              850
    total                                  61,706

The paper's squashing function is a scaled tanh and its subsampling layers are trainable averages;
``activation="tanh", pooling="avg"`` (the default) is the closest plain version, ``"relu"``/``"max"``
the modern one. (C3's partial connection table is replaced by full connections, as usual today.)
"""
from __future__ import annotations

from .. import nn
from ._layers import named_sequential

__all__ = ["LeNet5", "lenet5"]

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}
_POOLS = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}


class LeNet5(nn.Module):
    """LeNet-5: ``features`` (c1, s2, c3, s4, c5 with activations) -> flatten -> ``classifier`` (f6, output).

    Args:
        num_classes: outputs of the last layer (10 digits).
        in_channels: image channels (1 for MNIST).
        activation: ``"tanh"`` (default) or ``"relu"``.
        pooling: ``"avg"`` (default) or ``"max"``.

    input: (N, in_channels, 28, 28) -> logits (N, num_classes).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, activation: str = "tanh", pooling: str = "avg"):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"LeNet5: activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        if pooling not in _POOLS:
            raise ValueError(f"LeNet5: pooling must be one of {sorted(_POOLS)}, got {pooling!r}")
        act, pool = _ACTIVATIONS[activation], _POOLS[pooling]
        self.features = named_sequential(
            ("c1", nn.Conv2d(in_channels, 6, 5, padding=2)), ("act1", act()), ("s2", pool(2, stride=2)),
            ("c3", nn.Conv2d(6, 16, 5)), ("act3", act()), ("s4", pool(2, stride=2)),
            ("c5", nn.Conv2d(16, 120, 5)), ("act5", act()),
        )
        self.classifier = named_sequential(
            ("f6", nn.Linear(120, 84)), ("act6", act()), ("output", nn.Linear(84, num_classes)),
        )

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def lenet5(num_classes: int = 10, **kwargs) -> LeNet5:
    """LeNet-5 for MNIST (61,706 parameters at 10 classes); see :class:`LeNet5`."""
    return LeNet5(num_classes=num_classes, **kwargs)
