"""VGG-16 (Simonyan and Zisserman 2014, configuration D), torchvision layout and key names.

Thirteen 3x3 convolutions (pad 1) with ReLU in five blocks of 64, 128, 256, 512, 512 channels, each block
closed by a 2x2 max pool; adaptive average pooling to 7x7; then fc 25088 -> 4096 -> 4096 -> num_classes
with ReLU and dropout. 138,357,544 parameters at 1000 classes, 102,764,544 of them in the first FC layer
(7 * 7 * 512 * 4096 weights + 4096 biases). Input 224x224 -> 7x7x512 before the classifier.

``batch_norm=True`` adds a BatchNorm after every convolution (torchvision's ``vgg16_bn`` layout).
"""
from __future__ import annotations

from .. import nn
from ._layers import init_batchnorm_, init_conv_kaiming_

__all__ = ["VGG", "vgg16", "VGG16_CONFIG"]

# Output channels of each 3x3 convolution; "M" is a 2x2 max pool with stride 2.
VGG16_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _make_features(config, batch_norm: bool, in_channels: int = 3) -> nn.Sequential:
    layers = []
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(in_channels, item, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(item))
        layers.append(nn.ReLU(inplace=True))
        in_channels = item
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG: ``features`` -> ``avgpool`` (adaptive, 7x7) -> flatten -> ``classifier``.

    Args:
        config: channels per convolution and ``"M"`` for max pools (default: VGG-16).
        num_classes: outputs of the last layer.
        batch_norm: BatchNorm after each convolution.
        dropout: drop probability after fc6 and fc7 (torchvision's placement).
        hidden_features: width of fc6 and fc7 (4096 in the paper; a narrow head suits small datasets).

    input: (N, 3, H, W), H and W multiples of 32 (224 for ImageNet) -> logits (N, num_classes).
    Initialisation as torchvision: Kaiming normal (fan_out) convolutions, N(0, 0.01) linear weights, zero
    biases. The state_dict keys are torchvision's numbered ones (``features.0.weight``,
    ``classifier.0.weight``); :attr:`layers` gives the paper's names (``conv1_1`` ... ``pool5``, ``fc6`` ...).
    """

    def __init__(self, config=VGG16_CONFIG, num_classes: int = 1000, batch_norm: bool = False,
                 dropout: float = 0.5, hidden_features: int = 4096):
        super().__init__()
        channels = [item for item in config if item != "M"]
        if not channels or channels[-1] != 512:
            raise ValueError(f"VGG: the last convolution of config must have 512 channels (the classifier "
                             f"expects 512 * 7 * 7 inputs), got config {list(config)}")
        self.config = tuple(config)
        self.features = _make_features(config, batch_norm)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, hidden_features), nn.ReLU(inplace=True), nn.Dropout(p=dropout),
            nn.Linear(hidden_features, hidden_features), nn.ReLU(inplace=True), nn.Dropout(p=dropout),
            nn.Linear(hidden_features, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                init_conv_kaiming_(module)
            elif isinstance(module, nn.BatchNorm2d):
                init_batchnorm_(module)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.01)
                nn.init.zeros_(module.bias)

    @property
    def layers(self) -> dict:
        """``{"conv1_1": Conv2d, ..., "pool1": MaxPool2d, ..., "conv5_3": ..., "pool5": ..., "fc6": Linear,
        "fc7": ..., "fc8": ...}``: the paper's names (block_index) for the numbered torchvision modules."""
        names, block, index = {}, 1, 1
        for module in self.features.children():
            if isinstance(module, nn.Conv2d):
                names[f"conv{block}_{index}"] = module
                index += 1
            elif isinstance(module, nn.MaxPool2d):
                names[f"pool{block}"] = module
                block, index = block + 1, 1
        fcs = [m for m in self.classifier.children() if isinstance(m, nn.Linear)]
        names.update(zip(("fc6", "fc7", "fc8"), fcs))
        return names

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(x.flatten(1))


def vgg16(num_classes: int = 1000, batch_norm: bool = False, **kwargs) -> VGG:
    """VGG-16 (configuration D): 138,357,544 parameters at 1000 classes; see :class:`VGG`."""
    return VGG(VGG16_CONFIG, num_classes=num_classes, batch_norm=batch_norm, **kwargs)
