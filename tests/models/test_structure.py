"""Model structure: exact parameter counts, torchvision key names, readable names, constructor errors.

Counts come from construction only (no forward pass), so even VGG-16 stays cheap.
"""
import numpy as np
import pytest

from tinygrad_cnn import models, nn


def count(model) -> int:
    return sum(int(p.array.size) for p in model.parameters())


@pytest.fixture(scope="module")
def resnet50():
    return models.resnet50()


@pytest.fixture(scope="module")
def resnet18():
    return models.resnet18()


# ---------------------------------------------------------------- ImageNet models

@pytest.mark.parametrize("builder, expected", [
    (models.resnet34, 21_797_672),
    (models.resnet101, 44_549_160),
    (models.resnet152, 60_192_808),
])
def test_imagenet_resnet_parameter_counts(builder, expected, skip_random_init):
    assert count(builder()) == expected


def test_resnet18_and_resnet50_parameter_counts(resnet18, resnet50):
    assert count(resnet18) == 11_689_512
    assert count(resnet50) == 25_557_032


def test_vgg16_parameter_count_and_first_fc_layer(skip_random_init):
    model = models.vgg16()
    assert count(model) == 138_357_544
    fc6 = model.classifier[0]
    assert isinstance(fc6, nn.Linear)
    assert tuple(fc6.weight.shape) == (4096, 7 * 7 * 512)
    assert fc6.weight.array.size + fc6.bias.array.size == 102_764_544


def alexnet_count_by_hand(groups):
    conv = lambda k, c_in, c_out, g=1: (k * k * c_in // g + 1) * c_out  # noqa: E731
    return (conv(11, 3, 96) + conv(5, 96, 256, groups) + conv(3, 256, 384) + conv(3, 384, 384, groups)
            + conv(3, 384, 256, groups) + (9216 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * 1000)


@pytest.mark.parametrize("groups, expected", [(1, 62_378_344), (2, 60_965_224)])
def test_alexnet_original_parameter_counts(groups, expected, skip_random_init):
    assert alexnet_count_by_hand(groups) == expected
    model = models.alexnet(groups=groups)
    assert count(model) == expected
    layers = model.layers
    assert list(layers) == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert layers["conv1"].weight.array.size + layers["conv1"].bias.array.size == 34_944
    # Two towers: each conv2 filter sees 48 of the 96 input channels; conv3 stays fully connected.
    assert tuple(layers["conv2"].weight.shape) == (256, 96 // groups, 5, 5)
    assert tuple(layers["conv3"].weight.shape) == (384, 256, 3, 3)
    assert tuple(layers["conv5"].weight.shape) == (256, 384 // groups, 3, 3)


def test_alexnet_readable_names_in_lecture_order():
    model = models.alexnet(variant="cifar")
    assert [name for name, _ in model.features.named_children()] == [
        "conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2", "norm2",
        "conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "pool3"]
    assert [name for name, _ in model.classifier.named_children()] == [
        "drop6", "fc6", "relu6", "drop7", "fc7", "relu7", "fc8"]
    norm = model.features.norm1
    assert isinstance(norm, nn.LocalResponseNorm)
    # PyTorch's LRN divides alpha by the window: 5e-4 / 5 is the paper's 1e-4.
    assert (norm.size, norm.k, norm.beta) == (5, 2.0, 0.75)
    assert norm.alpha / norm.size == pytest.approx(1e-4)


TORCHVISION_ALEXNET_SHAPES = {
    "features.0.weight": (64, 3, 11, 11), "features.0.bias": (64,),
    "features.3.weight": (192, 64, 5, 5), "features.3.bias": (192,),
    "features.6.weight": (384, 192, 3, 3), "features.6.bias": (384,),
    "features.8.weight": (256, 384, 3, 3), "features.8.bias": (256,),
    "features.10.weight": (256, 256, 3, 3), "features.10.bias": (256,),
    "classifier.1.weight": (4096, 9216), "classifier.1.bias": (4096,),
    "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
    "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
}


def test_alexnet_torchvision_variant_keys_and_count(skip_random_init):
    model = models.alexnet(variant="torchvision")
    assert count(model) == 61_100_840
    state = model.state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == TORCHVISION_ALEXNET_SHAPES
    assert list(state) == list(TORCHVISION_ALEXNET_SHAPES)  # same order as torchvision


def test_resnet18_state_dict_keys_follow_torchvision(resnet18):
    state = resnet18.state_dict()
    keys = list(state)
    assert keys[:7] == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                        "bn1.num_batches_tracked", "layer1.0.conv1.weight"]
    assert keys[-2:] == ["fc.weight", "fc.bias"]
    assert "layer2.0.downsample.0.weight" in state and "layer2.0.downsample.1.running_var" in state
    assert "layer1.0.downsample.0.weight" not in state  # layer1 keeps the shape: identity shortcut
    assert tuple(state["layer4.1.conv2.weight"].shape) == (512, 512, 3, 3)
    assert len(keys) == 122  # torchvision's resnet18 state_dict has 122 entries


def test_resnet50_bottleneck_layout(resnet50):
    model = resnet50
    block = model.layer2[0]
    assert isinstance(block, models.Bottleneck)
    assert tuple(block.conv1.weight.shape) == (128, 256, 1, 1)
    assert block.conv2.stride in (2, (2, 2))  # the stride sits on the 3x3 convolution (v1.5)
    assert tuple(block.conv3.weight.shape) == (512, 128, 1, 1)
    assert tuple(block.downsample[0].weight.shape) == (512, 256, 1, 1)
    assert len(model.state_dict()) == 320  # torchvision's resnet50 state_dict has 320 entries


def test_resnet_initialisation_as_torchvision(resnet18):
    model = resnet18
    w = model.layer3[0].conv1.weight.array  # (256, 128, 3, 3); fan_out = 256 * 9
    assert abs(w.std() - np.sqrt(2.0 / (256 * 9))) < 0.05 * np.sqrt(2.0 / (256 * 9))
    assert np.all(model.bn1.weight.array == 1) and np.all(model.bn1.bias.array == 0)
    zero = models.resnet18(zero_init_residual=True)
    assert all(np.all(b.bn2.weight.array == 0) for stage in (zero.layer1, zero.layer4) for b in stage)
    assert np.all(zero.bn1.weight.array == 1)
    bottleneck = models.ResNet(models.Bottleneck, [1, 1, 1, 1], zero_init_residual=True)
    assert np.all(bottleneck.layer1[0].bn3.weight.array == 0) and np.all(bottleneck.layer1[0].bn2.weight.array == 1)


# ---------------------------------------------------------------- CIFAR ResNets and plain nets

def cifar_count_by_hand(n, option="A"):
    """He et al.'s 6n+2 network: every term written out from the architecture."""
    conv = lambda c_in, c_out, k=3: k * k * c_in * c_out  # noqa: E731  (no bias: BatchNorm follows)
    bn = lambda c: 2 * c  # noqa: E731
    total = conv(3, 16) + bn(16)
    c_in = 16
    for c in (16, 32, 64):
        for b in range(n):
            total += conv(c_in, c) + bn(c) + conv(c, c) + bn(c)
            if option == "B" and c_in != c:
                total += conv(c_in, c, k=1) + bn(c)
            c_in = c
    return total + 64 * 10 + 10


@pytest.mark.parametrize("builder, n, paper_millions", [
    (models.resnet20, 3, 0.27), (models.resnet32, 5, 0.46), (models.resnet44, 7, 0.66),
    (models.resnet56, 9, 0.85), (models.resnet110, 18, 1.7),
])
def test_cifar_resnet_counts_match_the_paper(builder, n, paper_millions):
    expected = cifar_count_by_hand(n)
    assert count(builder()) == expected
    assert round(expected / 1e6, 2 if paper_millions < 1 else 1) == paper_millions
    assert count(builder(shortcut="B")) == cifar_count_by_hand(n, "B")


def test_resnet1202_count(skip_random_init):
    assert count(models.resnet1202()) == cifar_count_by_hand(200) == 19_421_274


def test_cifar_exact_counts():
    assert count(models.resnet20()) == 269_722
    assert count(models.resnet56()) == 853_018
    assert count(models.resnet110()) == 1_727_962


@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_plain_nets_have_no_shortcuts(depth):
    plain = getattr(models, f"plain{depth}")()
    assert count(plain) == cifar_count_by_hand((depth - 2) // 6)
    blocks = [m for m in plain.modules() if isinstance(m, models.CifarBasicBlock)]
    assert len(blocks) == 3 * ((depth - 2) // 6)
    assert all(not b.residual and b.shortcut is None for b in blocks)


def test_cifar_shortcut_options():
    a, b = models.resnet20(), models.resnet20(shortcut="B")
    assert isinstance(a.layer2[0].shortcut, models.ShortcutA) and a.layer1[0].shortcut is None
    assert isinstance(b.layer2[0].shortcut, nn.Sequential) and b.layer2[1].shortcut is None
    assert [name for name, _ in a.named_children()] == ["conv1", "bn1", "relu", "layer1", "layer2", "layer3",
                                                        "avgpool", "fc"]
    with pytest.raises(ValueError, match="shortcut"):
        models.resnet20(shortcut="C")
    with pytest.raises(ValueError, match="6n"):
        models.cifar_resnet(21)


def test_lenet5_count_and_names():
    model = models.lenet5()
    assert count(model) == 156 + 2_416 + 48_120 + 10_164 + 850 == 61_706
    assert [n for n, _ in model.features.named_children()] == ["c1", "act1", "s2", "c3", "act3", "s4", "c5",
                                                               "act5"]


def test_alexnet_paper_initialisation():
    model = models.alexnet(variant="cifar", init="paper")
    layers = model.layers
    for name, layer in layers.items():
        expected_bias = 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0
        assert np.all(layer.bias.array == expected_bias), name
    w = layers["fc6"].weight.array
    assert abs(w.std() - 0.01) < 0.001 and abs(w.mean()) < 0.001


def test_alexnet_original_names_and_dropout_placement(skip_random_init):
    model = models.alexnet()
    assert [name for name, _ in model.features.named_children()] == [
        "conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2", "norm2",
        "conv3", "relu3", "conv4", "relu4", "conv5", "relu5", "pool3"]
    classifier = list(model.classifier.named_children())
    # Dropout 0.5 right before fc6 and fc7, none before fc8.
    assert [(name, type(m).__name__) for name, m in classifier] == [
        ("drop6", "Dropout"), ("fc6", "Linear"), ("relu6", "ReLU"), ("drop7", "Dropout"), ("fc7", "Linear"),
        ("relu7", "ReLU"), ("fc8", "Linear")]
    assert model.classifier.drop6.p == model.classifier.drop7.p == 0.5
    conv1, pool1 = model.features.conv1, model.features.pool1
    assert tuple(conv1.weight.shape) == (96, 3, 11, 11)
    assert conv1.stride in (4, (4, 4)) and conv1.padding in (0, (0, 0))
    assert pool1.kernel_size in (3, (3, 3)) and pool1.stride in (2, (2, 2))  # overlapping pooling
    assert "features.conv1.weight" in model.state_dict() and "classifier.fc8.bias" in model.state_dict()


def test_vgg16_paper_names_over_torchvision_keys(skip_random_init):
    model = models.vgg16()
    layers = model.layers
    assert list(layers) == ["conv1_1", "conv1_2", "pool1", "conv2_1", "conv2_2", "pool2",
                            "conv3_1", "conv3_2", "conv3_3", "pool3", "conv4_1", "conv4_2", "conv4_3", "pool4",
                            "conv5_1", "conv5_2", "conv5_3", "pool5", "fc6", "fc7", "fc8"]
    assert layers["conv1_1"] is model.features[0] and layers["fc6"] is model.classifier[0]
    assert tuple(layers["conv5_3"].weight.shape) == (512, 512, 3, 3)
    keys = list(model.state_dict())
    assert keys[:2] == ["features.0.weight", "features.0.bias"] and keys[-2:] == ["classifier.6.weight",
                                                                                 "classifier.6.bias"]
    assert len(keys) == 32  # torchvision's vgg16 state_dict: 13 convs + 3 linears, weight and bias each
    with pytest.raises(ValueError, match="512"):
        models.VGG(config=(64, "M", 128, "M"))


def test_num_classes_everywhere():
    assert tuple(models.ResNet(models.BasicBlock, [1, 1, 1, 1], num_classes=7).fc.weight.shape) == (7, 512)
    assert tuple(models.ResNet(models.Bottleneck, [1, 1, 1, 1], num_classes=7).fc.weight.shape) == (7, 2048)
    assert tuple(models.resnet20(num_classes=7).fc.weight.shape) == (7, 64)
    assert tuple(models.lenet5(num_classes=7).classifier.output.weight.shape) == (7, 84)
    assert tuple(models.alexnet(variant="cifar", num_classes=7).classifier.fc8.weight.shape) == (7, 1024)
    assert tuple(models.alexnet(variant="cifar").classifier.fc8.weight.shape) == (10, 1024)


def test_num_classes_of_the_large_models(skip_random_init):
    assert tuple(models.alexnet(num_classes=7).classifier.fc8.weight.shape) == (7, 4096)
    assert tuple(models.alexnet(variant="torchvision", num_classes=7).classifier[6].weight.shape) == (7, 4096)
    assert tuple(models.vgg16(num_classes=7).layers["fc8"].weight.shape) == (7, 4096)
    assert tuple(models.resnet18(num_classes=7).fc.weight.shape) == (7, 512)
    assert tuple(models.resnet152(num_classes=7).fc.weight.shape) == (7, 2048)


@pytest.mark.parametrize("kwargs, match", [
    (dict(variant="vgg"), "variant"), (dict(init="xavier"), "init"), (dict(groups=3), "groups"),
    (dict(variant="torchvision", groups=2), "single tower"),
])
def test_alexnet_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.alexnet(**kwargs)
