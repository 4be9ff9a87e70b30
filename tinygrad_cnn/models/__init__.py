"""Model zoo built from ``tinygrad_cnn.nn`` layers.

* ImageNet: :func:`alexnet` (lecture/paper, torchvision and CIFAR variants), :func:`resnet18` ...
  :func:`resnet152` (torchvision layout and key names), :func:`vgg16`.
* CIFAR-10 (He et al. 2015, section 4.2): :func:`resnet20` ... :func:`resnet1202` with shortcut option A or
  B, and the plain nets :func:`plain20` ... :func:`plain110`.
* MNIST: :func:`lenet5`.
* Weights: :func:`save_weights` / :func:`load_weights` (``.npz``, no pickle); PyTorch state_dicts convert
  with ``python -m tinygrad_cnn.models.convert_torch``.
"""
from .alexnet import AlexNet, alexnet
from .cifar_resnet import (CifarBasicBlock, CifarResNet, ShortcutA, cifar_resnet, plain20, plain32, plain44,
                           plain56, plain110, resnet20, resnet32, resnet44, resnet56, resnet110, resnet1202)
from .lenet import LeNet5, lenet5
from .resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50, resnet101, resnet152
from .vgg import VGG, vgg16
from .weights import WeightsError, load_weights, read_weights, save_weights, state_arrays

__all__ = [
    "AlexNet", "alexnet",
    "ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "CifarResNet", "CifarBasicBlock", "ShortcutA", "cifar_resnet", "resnet20", "resnet32", "resnet44", "resnet56",
    "resnet110", "resnet1202", "plain20", "plain32", "plain44", "plain56", "plain110",
    "LeNet5", "lenet5", "VGG", "vgg16",
    "save_weights", "load_weights", "read_weights", "state_arrays", "WeightsError",
]
