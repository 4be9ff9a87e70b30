"""ImageNet ResNets (He et al. 2015, "Deep Residual Learning for Image Recognition"), torchvision layout.

The structure, the parameter counts and the state_dict key names are exactly torchvision's, so its
published weights load after :mod:`tinygrad_cnn.models.convert_torch` turned them into an ``.npz`` file::

    stem:    conv1 (7x7/2, 64) -> bn1 -> relu -> maxpool (3x3/2)          224 -> 112 -> 56
    layer1:  blocks at  64 * expansion channels, stride 1                   56x56
    layer2:  blocks at 128 * expansion channels, first block stride 2       28x28
    layer3:  blocks at 256 * expansion channels, first block stride 2       14x14
    layer4:  blocks at 512 * expansion channels, first block stride 2        7x7
    head:    avgpool (global) -> flatten -> fc (num_classes)

======== ========== ============ ============
model    block      blocks/stage parameters
======== ========== ============ ============
resnet18 BasicBlock 2, 2, 2, 2   11,689,512
resnet34 BasicBlock 3, 4, 6, 3   21,797,672
resnet50 Bottleneck 3, 4, 6, 3   25,557,032
resnet101 Bottleneck 3, 4, 23, 3 44,549,160
resnet152 Bottleneck 3, 8, 36, 3 60,192,808
======== ========== ============ ============

Bottleneck puts the stride on its 3x3 convolution (the "ResNet v1.5" of torchvision). A shortcut whose
shape changes is a projection ``downsample = Sequential(1x1 conv with the stride, BatchNorm)``.
"""
from __future__ import annotations

from .. import nn
from ..nn.modules.normalization import conv_bn_relu_of_modules
from ._layers import init_batchnorm_, init_conv_kaiming_

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet34", "resnet50", "resnet101",
           "resnet152", "conv3x3", "conv1x1"]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BatchNorm follows): (N, in, H, W) -> (N, out, H/s, W/s)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution without bias: (N, in, H, W) -> (N, out, H/s, W/s)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or projection) shortcut.

    ``out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``

    input: (N, inplanes, H, W) -> output: (N, planes, H / stride, W / stride).
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        # relu(bn(conv(...))) [+ shortcut] run as fused ops (see conv_bn_relu_of_modules).
        out = conv_bn_relu_of_modules(self.conv1, self.bn1, self.relu, x)
        shortcut = x if self.downsample is None else self.downsample(x)
        return conv_bn_relu_of_modules(self.conv2, self.bn2, self.relu, out, shortcut)

    def last_bn(self):
        """The BatchNorm that ends the residual branch (zeroed by ``zero_init_residual``)."""
        return self.bn2


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand (x4), with an identity or projection shortcut.

    input: (N, inplanes, H, W) -> output: (N, 4 * planes, H / stride, W / stride).
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        out = conv_bn_relu_of_modules(self.conv1, self.bn1, self.relu, x)
        out = conv_bn_relu_of_modules(self.conv2, self.bn2, self.relu, out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return conv_bn_relu_of_modules(self.conv3, self.bn3, self.relu, out, shortcut)

    def last_bn(self):
        return self.bn3


class ResNet(nn.Module):
    """An ImageNet ResNet: stem, four stages ``layer1..layer4`` of residual blocks, global pool, ``fc``.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: number of blocks in each of the four stages, e.g. ``[2, 2, 2, 2]`` for ResNet-18.
        num_classes: outputs of the final ``fc`` layer.
        zero_init_residual: start every residual branch at zero (the last BatchNorm's scale is 0), so each
            block is the identity at initialisation (Goyal et al. 2017).
        in_channels: channels of the input image (3 for RGB).

    input: (N, in_channels, H, W), H and W at least 32 (224 for ImageNet) -> logits (N, num_classes).
    Initialisation as torchvision: Kaiming normal (fan_out, ReLU gain) for convolutions, BatchNorm scale 1
    and shift 0, PyTorch's default for ``fc``.
    """

    def __init__(self, block, layers, num_classes: int = 1000, zero_init_residual: bool = False,
                 in_channels: int = 3):
        super().__init__()
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"ResNet: layers must be four positive block counts, got {list(layers)}")
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                init_conv_kaiming_(module)
            elif isinstance(module, nn.BatchNorm2d):
                init_batchnorm_(module)
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, (BasicBlock, Bottleneck)):
                    init_batchnorm_(module.last_bn(), weight=0.0)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        stage = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes) for _ in range(1, int(blocks))]
        return nn.Sequential(*stage)

    def forward_features(self, x):
        """input (N, C, H, W) -> the last stage's feature map (N, 512 * expansion, H/32, W/32)."""
        x = self.maxpool(conv_bn_relu_of_modules(self.conv1, self.bn1, self.relu, x))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward(self, x):
        x = self.avgpool(self.forward_features(x))
        return self.fc(x.flatten(1))


def resnet18(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-18: BasicBlock x [2, 2, 2, 2], 11,689,512 parameters at 1000 classes."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes, **kwargs)


def resnet34(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-34: BasicBlock x [3, 4, 6, 3], 21,797,672 parameters at 1000 classes."""
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes=num_classes, **kwargs)


def resnet50(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-50: Bottleneck x [3, 4, 6, 3], 25,557,032 parameters at 1000 classes."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes, **kwargs)


def resnet101(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-101: Bottleneck x [3, 4, 23, 3], 44,549,160 parameters at 1000 classes."""
    return ResNet(Bottleneck, [3, 4, 23, 3], num_classes=num_classes, **kwargs)


def resnet152(num_classes: int = 1000, **kwargs) -> ResNet:
    """ResNet-152: Bottleneck x [3, 8, 36, 3], 60,192,808 parameters at 1000 classes."""
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes=num_classes, **kwargs)
