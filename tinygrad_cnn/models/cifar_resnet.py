"""CIFAR-10 ResNets and plain nets of He et al. 2015, section 4.2.

Depth ``6n + 2`` for 32x32 inputs::

    conv1  3x3, 16 -> bn1 -> relu                       32x32x16
    layer1 n basic blocks, 16 channels                   32x32x16
    layer2 n basic blocks, 32 channels (first stride 2)  16x16x32
    layer3 n basic blocks, 64 channels (first stride 2)   8x8x64
    avgpool (global) -> flatten -> fc (num_classes)

A basic block is ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``. Where the shape changes
(stride 2, more channels) the paper offers two shortcuts:

* option A (default, no parameters): take every second pixel and append zero channels,
  :class:`ShortcutA`;
* option B: a projection, 1x1 convolution with stride 2 followed by BatchNorm.

``plain*`` networks are the same stacks without any shortcut (the degradation experiment of Fig. 6).

========= === =========== =============
model     n   layers      parameters (A)
========= === =========== =============
resnet20  3   20          269,722  (0.27M)
resnet32  5   32          464,154  (0.46M)
resnet44  7   44          658,586  (0.66M)
resnet56  9   56          853,018  (0.85M)
resnet110 18  110         1,727,962 (1.7M)
resnet1202 200 1202       19,421,274 (19.4M)
========= === =========== =============

Plain nets have the same counts as option A; option B adds the two projections.
"""
from __future__ import annotations

from .. import nn
from ..nn.modules.normalization import conv_bn_relu_of_modules
from ..tensor import pad as _pad
from ._layers import init_batchnorm_, init_conv_kaiming_

__all__ = ["CifarResNet", "CifarBasicBlock", "ShortcutA", "cifar_resnet", "resnet20", "resnet32", "resnet44",
           "resnet56", "resnet110", "resnet1202", "plain20", "plain32", "plain44", "plain56", "plain110"]

_SHORTCUTS = ("A", "B")


def _pad_channels(x, before: int, after: int):
    """(N, C, H, W) -> (N, before + C + after, H, W) with zero channels around ``x`` (differentiable)."""
    return _pad(x, (0, 0, 0, 0, before, after))


class ShortcutA(nn.Module):
    """Option A shortcut: subsample by ``stride`` and pad the channels with zeros (no parameters).

    input: (N, in_channels, H, W) -> output: (N, out_channels, ceil(H / stride), ceil(W / stride)),
    ``x[:, :, ::stride, ::stride]`` followed by ``(out - in) // 2`` zero channels before and the rest after.
    Backward: the gradient of the kept pixels is the gradient of the matching output channels; the
    dropped pixels and the zero channels contribute nothing.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2):
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"ShortcutA: out_channels ({out_channels}) must be >= in_channels ({in_channels})")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x):
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        extra = self.out_channels - self.in_channels
        if extra:
            x = _pad_channels(x, extra // 2, extra - extra // 2)
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class CifarBasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with a shortcut (or none for plain nets).

    Args:
        in_planes, planes: input and output channels.
        stride: 2 at the first block of stages 2 and 3, else 1.
        shortcut: ``"A"`` (zero-padding identity) or ``"B"`` (1x1 conv projection) where the shape changes;
            an identity otherwise.
        residual: False builds the block of a plain net (no shortcut at all).

    input: (N, in_planes, H, W) -> output: (N, planes, H / stride, W / stride).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "A", residual: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.residual = residual
        self.shortcut = None  # identity
        if residual and (stride != 1 or in_planes != planes):
            if shortcut == "A":
                self.shortcut = ShortcutA(in_planes, planes, stride)
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                              nn.BatchNorm2d(planes))

    def forward(self, x):
        # relu(bn(conv(...))) [+ shortcut] run as fused ops (see conv_bn_relu_of_modules).
        out = conv_bn_relu_of_modules(self.conv1, self.bn1, self.relu, x)
        residual = None
        if self.residual:
            residual = x if self.shortcut is None else self.shortcut(x)
        return conv_bn_relu_of_modules(self.conv2, self.bn2, self.relu, out, residual)


class CifarResNet(nn.Module):
    """ResNet (or plain net) for 32x32 images: ``conv1``, three stages ``layer1..layer3``, ``avgpool``, ``fc``.

    Args:
        num_blocks: basic blocks per stage, ``(n, n, n)`` for depth ``6n + 2``.
        num_classes: outputs of ``fc``.
        shortcut: ``"A"`` (default, parameter-free) or ``"B"`` (projection) for shape-changing shortcuts.
        plain: True removes every shortcut (``plain20`` ...).
        widths: channels of the three stages (16, 32, 64 in the paper); the stem has ``widths[0]``.
            A stage list of any length works, every stage after the first starts with stride 2.
        in_channels: image channels.

    input: (N, in_channels, H, W) -> logits (N, num_classes). Convolutions start from Kaiming normal
    (fan_in, ReLU gain) as in He et al., BatchNorm from scale 1 and shift 0.
    """

    def __init__(self, num_blocks=(3, 3, 3), num_classes: int = 10, shortcut: str = "A", plain: bool = False,
                 widths=(16, 32, 64), in_channels: int = 3):
        super().__init__()
        shortcut = str(shortcut).upper()
        if shortcut not in _SHORTCUTS:
            raise ValueError(f"CifarResNet: shortcut must be 'A' or 'B', got {shortcut!r}")
        num_blocks, widths = [int(n) for n in num_blocks], [int(w) for w in widths]
        if len(num_blocks) != len(widths) or not num_blocks or min(num_blocks) < 1:
            raise ValueError(f"CifarResNet: num_blocks {num_blocks} and widths {widths} must be non-empty lists "
                             f"of the same length with at least one block per stage")
        self.shortcut_option = shortcut
        self.plain = bool(plain)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        in_planes = widths[0]
        for index, (blocks, planes) in enumerate(zip(num_blocks, widths)):
            stride = 1 if index == 0 else 2
            stage = []
            for b in range(blocks):
                stage.append(CifarBasicBlock(in_planes, planes, stride if b == 0 else 1, shortcut, not plain))
                in_planes = planes
            setattr(self, f"layer{index + 1}", nn.Sequential(*stage))
        self.num_stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_planes, num_classes)

        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                init_conv_kaiming_(module, mode="fan_in")
            elif isinstance(module, nn.BatchNorm2d):
                init_batchnorm_(module)

    def stages(self):
        """The residual stages in order (``layer1``, ``layer2``, ...)."""
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    def forward_features(self, x):
        """input (N, C, H, W) -> last stage's feature map (N, widths[-1], H / 4, W / 4) for three stages."""
        x = conv_bn_relu_of_modules(self.conv1, self.bn1, self.relu, x)
        for stage in self.stages():
            x = stage(x)
        return x

    def forward(self, x):
        x = self.avgpool(self.forward_features(x))
        return self.fc(x.flatten(1))


def cifar_resnet(depth: int, num_classes: int = 10, shortcut: str = "A", plain: bool = False, **kwargs):
    """A CIFAR ResNet (or plain net) of depth ``6n + 2``: three stages of ``n`` basic blocks."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"cifar_resnet: depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110, 1202), got {depth}")
    n = (depth - 2) // 6
    return CifarResNet((n, n, n), num_classes=num_classes, shortcut=shortcut, plain=plain, **kwargs)


def resnet20(num_classes: int = 10, shortcut: str = "A", **kwargs):
    """ResNet-20 (n = 3): 269,722 parameters with option A, 0.27M in the paper's table."""
    return cifar_resnet(20, num_classes, shortcut, **kwargs)


def resnet32(num_classes: int = 10, shortcut: str = "A", **kwargs):
    """ResNet-32 (n = 5): 464,154 parameters with option A."""
    return cifar_resnet(32, num_classes, shortcut, **kwargs)


def resnet44(num_classes: int = 10, shortcut: str = "A", **kwargs):
    """ResNet-44 (n = 7): 658,586 parameters with option A."""
    return cifar_resnet(44, num_classes, shortcut, **kwargs)


def resnet56(num_classes: int = 10, shortcut: str = "A", **kwargs):
    """ResNet-56 (n = 9): 853,018 parameters with option A, 0.85M in the paper's table."""
    return cifar_resnet(56, num_classes, shortcut, **kwargs)


def resnet110(num_classes: int = 10, shortcut: str = "A", **kwargs):
    """ResNet-110 (n = 18): 1,727,962 parameters with option A, 1.7M in the paper's table."""
    return cifar_resnet(110, num_classes, shortcut, **kwargs)


def resnet1202(num_classes: int = 10, shortcut: str = "A", **kwargs):
    """ResNet-1202 (n = 200): 19,421,274 parameters with option A, 19.4M in the paper's table."""
    return cifar_resnet(1202, num_classes, shortcut, **kwargs)


def plain20(num_classes: int = 10, **kwargs):
    """Plain-20: ResNet-20 without shortcuts."""
    return cifar_resnet(20, num_classes, plain=True, **kwargs)


def plain32(num_classes: int = 10, **kwargs):
    """Plain-32: ResNet-32 without shortcuts."""
    return cifar_resnet(32, num_classes, plain=True, **kwargs)


def plain44(num_classes: int = 10, **kwargs):
    """Plain-44: ResNet-44 without shortcuts."""
    return cifar_resnet(44, num_classes, plain=True, **kwargs)


def plain56(num_classes: int = 10, **kwargs):
    """Plain-56: ResNet-56 without shortcuts."""
    return cifar_resnet(56, num_classes, plain=True, **kwargs)


def plain110(num_classes: int = 10, **kwargs):
    """Plain-110: ResNet-110 without shortcuts."""
    return cifar_resnet(110, num_classes, plain=True, **kwargs)
