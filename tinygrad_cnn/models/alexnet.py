"""AlexNet (Krizhevsky, Sutskever and Hinton 2012) in three variants.

``variant="original"`` is the network as taught in the lectures, for 227x227x3 inputs::

    layer       output      parameters
    conv1       55x55x96    (11*11*3 + 1) * 96   =     34,944   96 11x11 filters, stride 4, pad 0
    pool1       27x27x96    0                                   3x3 max pool, stride 2 (overlapping)
    norm1       27x27x96    0                                   local response normalisation
    conv2       27x27x256   (5*5*96 + 1) * 256   =    614,656   pad 2
    pool2       13x13x256   0
    norm2       13x13x256   0
    conv3       13x13x384   (3*3*256 + 1) * 384  =    885,120   pad 1
    conv4       13x13x384   (3*3*384 + 1) * 384  =  1,327,488   pad 1
    conv5       13x13x256   (3*3*384 + 1) * 256  =    884,992   pad 1
    pool3       6x6x256     0
    fc6         4096        (9216 + 1) * 4096    = 37,752,832   dropout 0.5 before, ReLU after
    fc7         4096        (4096 + 1) * 4096    = 16,781,312   dropout 0.5 before, ReLU after
    fc8         1000        (4096 + 1) * 1000    =  4,097,000
    total                                          62,378,344

Every convolution is followed by a ReLU. ``groups=2`` splits conv2, conv4 and conv5 into the paper's two
towers (each filter sees half of the input channels), which gives the paper's 60,965,224 parameters.

The local response normalisation uses the paper's constants ``k=2, n=5, alpha=1e-4, beta=0.75`` in the
paper's formula ``b = a / (k + alpha * sum a^2) ^ beta``; PyTorch's ``LocalResponseNorm`` divides alpha by
the window size, so the layer is built with ``alpha = 5 * 1e-4``.

``variant="torchvision"`` is the single-tower model that torchvision ships (64-192-384-256-256 channels,
no LRN, conv1 pad 2, adaptive average pooling to 6x6, 61,100,840 parameters, input 224x224) with
torchvision's state_dict keys (``features.0.weight`` ... ``classifier.6.bias``), so its weights load.

``variant="cifar"`` is an AlexNet-style network for 32x32x3 images (5 convolutions, 3 overlapping max
pools, 2 LRNs, 3 fully connected layers; 10 classes by default).

``init``: ``"default"`` keeps each layer's PyTorch default initialisation (as torchvision does);
``"paper"`` draws every weight from N(0, 0.01^2) and sets the biases of conv2, conv4, conv5, fc6 and fc7
to 1 (so their ReLUs start with positive inputs) and the others to 0; ``"kaiming"`` uses Kaiming normal
weights (fan_in, ReLU gain) and zero biases.
"""
from __future__ import annotations

from .. import nn
from ._layers import named_sequential

__all__ = ["AlexNet", "alexnet", "VARIANTS", "INITS"]

VARIANTS = ("original", "torchvision", "cifar")
INITS = ("default", "paper", "kaiming")

# Paper values: k = 2, n = 5, alpha = 1e-4 (not divided by n), beta = 0.75.
_LRN_SIZE, _LRN_ALPHA, _LRN_BETA, _LRN_K = 5, 1e-4, 0.75, 2.0


def _lrn() -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(_LRN_SIZE, alpha=_LRN_ALPHA * _LRN_SIZE, beta=_LRN_BETA, k=_LRN_K)


def _classifier(in_features: int, hidden: int, num_classes: int, dropout: float, names: bool):
    """dropout -> fc6 -> relu -> dropout -> fc7 -> relu -> fc8 (torchvision's order)."""
    layers = [
        ("drop6", nn.Dropout(p=dropout)), ("fc6", nn.Linear(in_features, hidden)), ("relu6", nn.ReLU(inplace=True)),
        ("drop7", nn.Dropout(p=dropout)), ("fc7", nn.Linear(hidden, hidden)), ("relu7", nn.ReLU(inplace=True)),
        ("fc8", nn.Linear(hidden, num_classes)),
    ]
    return named_sequential(*layers) if names else nn.Sequential(*(m for _, m in layers))


class AlexNet(nn.Module):
    """AlexNet: ``features`` (convolutions, pooling, LRN) -> flatten -> ``classifier`` (three FC layers).

    Args:
        num_classes: outputs of fc8; default 1000 (10 for ``variant="cifar"``).
        groups: 1, or 2 for the paper's two-tower conv2/conv4/conv5 (``"original"`` and ``"cifar"``).
        variant: ``"original"`` (227x227 input), ``"torchvision"`` (224x224) or ``"cifar"`` (32x32).
        init: ``"default"``, ``"paper"`` or ``"kaiming"`` (see the module docstring).
        dropout: drop probability before fc6 and fc7.

    input: (N, 3, 227, 227) / (N, 3, 224, 224) / (N, 3, 32, 32) -> logits (N, num_classes).
    Layers are named ``conv1 ... fc8`` (``features.conv1``, ``classifier.fc6``), except in the torchvision
    variant, which keeps torchvision's numbered keys; :attr:`layers` maps the lecture names to the modules
    in every variant.
    """

    def __init__(self, num_classes=None, groups: int = 1, variant: str = "original", init: str = "default",
                 dropout: float = 0.5):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"AlexNet: variant must be one of {VARIANTS}, got {variant!r}")
        if init not in INITS:
            raise ValueError(f"AlexNet: init must be one of {INITS}, got {init!r}")
        if groups not in (1, 2):
            raise ValueError(f"AlexNet: groups must be 1 or 2, got {groups!r}")
        if variant == "torchvision" and groups != 1:
            raise ValueError("AlexNet: the torchvision variant has a single tower; use groups=1")
        if num_classes is None:
            num_classes = 10 if variant == "cifar" else 1000
        self.variant = variant
        self.groups = groups
        self.avgpool = None
        if variant == "original":
            self.features = named_sequential(
                ("conv1", nn.Conv2d(3, 96, 11, stride=4, padding=0)), ("relu1", nn.ReLU(inplace=True)),
                ("pool1", nn.MaxPool2d(3, stride=2)), ("norm1", _lrn()),
                ("conv2", nn.Conv2d(96, 256, 5, padding=2, groups=groups)), ("relu2", nn.ReLU(inplace=True)),
                ("pool2", nn.MaxPool2d(3, stride=2)), ("norm2", _lrn()),
                ("conv3", nn.Conv2d(256, 384, 3, padding=1)), ("relu3", nn.ReLU(inplace=True)),
                ("conv4", nn.Conv2d(384, 384, 3, padding=1, groups=groups)), ("relu4", nn.ReLU(inplace=True)),
                ("conv5", nn.Conv2d(384, 256, 3, padding=1, groups=groups)), ("relu5", nn.ReLU(inplace=True)),
                ("pool3", nn.MaxPool2d(3, stride=2)),
            )
            self.classifier = _classifier(256 * 6 * 6, 4096, num_classes, dropout, names=True)
        elif variant == "torchvision":
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2),
                nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2),
                nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2),
            )
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = _classifier(256 * 6 * 6, 4096, num_classes, dropout, names=False)
        else:  # cifar: 32 -> conv1 32 -> pool 15 -> conv2 15 -> pool 7 -> conv3..5 7 -> pool 3
            self.features = named_sequential(
                ("conv1", nn.Conv2d(3, 64, 5, stride=1, padding=2)), ("relu1", nn.ReLU(inplace=True)),
                ("pool1", nn.MaxPool2d(3, stride=2)), ("norm1", _lrn()),
                ("conv2", nn.Conv2d(64, 192, 5, padding=2, groups=groups)), ("relu2", nn.ReLU(inplace=True)),
                ("pool2", nn.MaxPool2d(3, stride=2)), ("norm2", _lrn()),
                ("conv3", nn.Conv2d(192, 384, 3, padding=1)), ("relu3", nn.ReLU(inplace=True)),
                ("conv4", nn.Conv2d(384, 256, 3, padding=1, groups=groups)), ("relu4", nn.ReLU(inplace=True)),
                ("conv5", nn.Conv2d(256, 256, 3, padding=1, groups=groups)), ("relu5", nn.ReLU(inplace=True)),
                ("pool3", nn.MaxPool2d(3, stride=2)),
            )
            self.classifier = _classifier(256 * 3 * 3, 1024, num_classes, dropout, names=True)
        self._initialise(init)

    @property
    def layers(self) -> dict:
        """``{"conv1": Conv2d, ..., "fc8": Linear}``: the lecture's names for the learnable layers."""
        convs = [m for m in self.features.children() if isinstance(m, nn.Conv2d)]
        fcs = [m for m in self.classifier.children() if isinstance(m, nn.Linear)]
        names = [f"conv{i}" for i in range(1, 6)] + ["fc6", "fc7", "fc8"]
        return dict(zip(names, convs + fcs))

    def _initialise(self, init: str) -> None:
        if init == "default":
            return
        bias_one = {"conv2", "conv4", "conv5", "fc6", "fc7"}
        for name, layer in self.layers.items():
            if init == "paper":
                nn.init.normal_(layer.weight, mean=0.0, std=0.01)
                nn.init.constant_(layer.bias, 1.0 if name in bias_one else 0.0)
            else:
                nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    def forward(self, x):
        x = self.features(x)
        if self.avgpool is not None:
            x = self.avgpool(x)
        return self.classifier(x.flatten(1))


def alexnet(num_classes=None, groups: int = 1, variant: str = "original", init: str = "default",
            dropout: float = 0.5) -> AlexNet:
    """AlexNet; see :class:`AlexNet`. ``alexnet()`` is the lecture's 227x227 network (62,378,344
    parameters), ``alexnet(groups=2)`` the paper's two-tower version (60,965,224),
    ``alexnet(variant="torchvision")`` torchvision's (61,100,840)."""
    return AlexNet(num_classes=num_classes, groups=groups, variant=variant, init=init, dropout=dropout)
