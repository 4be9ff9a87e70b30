"""PyTorch state_dict -> .npz -> our models: same keys, same shapes, same outputs in eval mode.

torchvision is not needed: the reference networks are written here with torchvision's module names, and
randomly initialised (BatchNorm statistics included, so eval mode is not an identity).
"""
import numpy as np
import pytest

import tinygrad_cnn
from tinygrad_cnn import models
from tinygrad_cnn.models.convert_torch import convert_file, convert_state_dict, main

torch = pytest.importorskip("torch")
tnn = torch.nn


class TorchBasicBlock(tnn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.relu = tnn.ReLU(inplace=True)
        self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchBottleneck(tnn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(planes)
        self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(planes)
        self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(planes * 4)
        self.relu = tnn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchResNet(tnn.Module):
    def __init__(self, block, layers, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(64)
        self.relu = tnn.ReLU(inplace=True)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        self.layer1 = self._stage(block, 64, layers[0], 1)
        self.layer2 = self._stage(block, 128, layers[1], 2)
        self.layer3 = self._stage(block, 256, layers[2], 2)
        self.layer4 = self._stage(block, 512, layers[3], 2)
        self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
        self.fc = tnn.Linear(512 * block.expansion, num_classes)

    def _stage(self, block, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = tnn.Sequential(tnn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                        tnn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return tnn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def torch_alexnet():
    """torchvision's AlexNet layout."""
    model = tnn.Module()
    model.features = tnn.Sequential(
        tnn.Conv2d(3, 64, 11, 4, 2), tnn.ReLU(inplace=True), tnn.MaxPool2d(3, 2),
        tnn.Conv2d(64, 192, 5, padding=2), tnn.ReLU(inplace=True), tnn.MaxPool2d(3, 2),
        tnn.Conv2d(192, 384, 3, padding=1), tnn.ReLU(inplace=True),
        tnn.Conv2d(384, 256, 3, padding=1), tnn.ReLU(inplace=True),
        tnn.Conv2d(256, 256, 3, padding=1), tnn.ReLU(inplace=True), tnn.MaxPool2d(3, 2))
    model.avgpool = tnn.AdaptiveAvgPool2d((6, 6))
    model.classifier = tnn.Sequential(
        tnn.Dropout(0.5), tnn.Linear(9216, 4096), tnn.ReLU(inplace=True),
        tnn.Dropout(0.5), tnn.Linear(4096, 4096), tnn.ReLU(inplace=True), tnn.Linear(4096, 1000))
    model.forward = lambda x: model.classifier(torch.flatten(model.avgpool(model.features(x)), 1))
    return model


def randomise_batchnorm(model):
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, tnn.BatchNorm2d):
                c = module.num_features
                module.weight.copy_(0.5 + torch.rand(c, generator=generator))
                module.bias.copy_(0.2 * torch.randn(c, generator=generator))
                module.running_mean.copy_(0.2 * torch.randn(c, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(c, generator=generator))
                module.num_batches_tracked.fill_(7)
    return model


def compare_outputs(torch_model, ours, input_shape, rtol=2e-4):
    torch_model.eval()
    ours.eval()
    x = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(x)).numpy()
    with tinygrad_cnn.no_grad():
        actual = ours(tinygrad_cnn.Tensor(x)).numpy()
    assert actual.shape == expected.shape
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def keys_and_shapes(state):
    return {k: tuple(v.shape) for k, v in state.items()}


def test_resnet18_weights_give_the_same_outputs(tmp_path, skip_random_init):
    torch.manual_seed(0)
    reference = randomise_batchnorm(TorchResNet(TorchBasicBlock, [2, 2, 2, 2]))
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    out = tmp_path / "resnet18.npz"
    assert main([str(path), str(out), "--model", "resnet18"]) == 0
    ours = models.resnet18()
    assert keys_and_shapes(ours.state_dict()) == keys_and_shapes(reference.state_dict())
    models.load_weights(ours, out)
    assert int(ours.bn1.num_batches_tracked.numpy()) == 7
    compare_outputs(reference, ours, (2, 3, 64, 64))


def test_resnet50_weights_give_the_same_outputs(skip_random_init):
    torch.manual_seed(1)
    reference = randomise_batchnorm(TorchResNet(TorchBottleneck, [3, 4, 6, 3]))
    ours = models.resnet50()
    arrays = convert_state_dict(reference.state_dict())
    assert keys_and_shapes(arrays) == keys_and_shapes(ours.state_dict())
    models.load_weights(ours, arrays)
    compare_outputs(reference, ours, (1, 3, 64, 64))
    # The summary's multiply-accumulates equal PyTorch's own count (FlopCounterMode counts 2 per MAC).
    from torch.utils.flop_counter import FlopCounterMode
    from tinygrad_cnn.summary import summary
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        reference(torch.zeros(1, 3, 64, 64))
    assert summary(ours, (1, 3, 64, 64)).totals["macs"] * 2 == counter.get_total_flops()


def test_torchvision_alexnet_weights_give_the_same_outputs(tmp_path, skip_random_init):
    torch.manual_seed(2)
    reference = torch_alexnet()
    # A DataParallel checkpoint wrapped in a dict: both layers are removed by the converter.
    path = tmp_path / "alexnet.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in reference.state_dict().items()}, "epoch": 3}, path)
    ours = models.alexnet(variant="torchvision")
    arrays = convert_file(path, tmp_path / "alexnet.npz", model=ours)  # checks keys and shapes
    assert list(arrays) == list(reference.state_dict())
    models.load_weights(ours, tmp_path / "alexnet.npz")
    compare_outputs(reference, ours, (1, 3, 224, 224))


def test_converter_checks_against_the_model_before_writing(tmp_path, skip_random_init):
    torch.manual_seed(3)
    reference = TorchResNet(TorchBasicBlock, [2, 2, 2, 2], num_classes=10)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    with pytest.raises(models.WeightsError, match=r"'fc\.weight'.*\(1000, 512\).*\(10, 512\)"):
        convert_file(path, tmp_path / "r18.npz", model="resnet18")
    assert not (tmp_path / "r18.npz").exists()


def test_rename_and_half_precision():
    state = {"backbone.conv.weight": torch.ones(2, 3, dtype=torch.float16), "head.bias": torch.zeros(2)}
    arrays = convert_state_dict(state, rename={"backbone.": "features."})
    assert set(arrays) == {"features.conv.weight", "head.bias"}
    assert arrays["features.conv.weight"].dtype == np.float32
    with pytest.raises(ValueError, match="two entries"):
        convert_state_dict({"module.a": torch.zeros(1), "a": torch.zeros(1)})
