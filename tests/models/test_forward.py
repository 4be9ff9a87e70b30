"""Forward shapes, train/eval behaviour, an end-to-end float64 gradient check and one training step per model.

Training-step inputs are kept small (ImageNet ResNets at 32x32, batch 2) so the file stays fast; the
ImageNet models run once at 224x224 through the summary (zero weights, shapes and MACs only), and the
full-size AlexNet forward also runs in tests/test_summary.py.
"""
import numpy as np
import pytest

import tinygrad_cnn
from tinygrad_cnn import Tensor, models, nn, optim
from tinygrad_cnn.nn import functional as F
from tinygrad_cnn.summary import summary


def images(shape, seed=0, dtype=np.float32):
    return Tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


@pytest.mark.parametrize("builder, input_shape, output_shape", [
    (lambda: models.lenet5(), (2, 1, 28, 28), (2, 10)),
    (lambda: models.lenet5(activation="relu", pooling="max"), (1, 1, 28, 28), (1, 10)),
    (lambda: models.resnet20(), (2, 3, 32, 32), (2, 10)),
    (lambda: models.resnet20(shortcut="B", num_classes=100), (2, 3, 32, 32), (2, 100)),
    (lambda: models.plain20(), (2, 3, 32, 32), (2, 10)),
    (lambda: models.alexnet(variant="cifar", groups=2), (2, 3, 32, 32), (2, 10)),
    (lambda: models.resnet18(), (1, 3, 64, 64), (1, 1000)),
    (lambda: models.resnet50(num_classes=10), (1, 3, 64, 64), (1, 10)),
])
def test_output_shapes(builder, input_shape, output_shape):
    model = builder()
    model.eval()
    with tinygrad_cnn.no_grad():
        out = model(images(input_shape))
    assert tuple(out.shape) == output_shape
    assert np.isfinite(out.numpy()).all()


def stage_shapes(report, names):
    return {name: report.row(name)["output_shape"] for name in names}


def test_full_size_imagenet_models(zero_init):
    """ImageNet models at 224x224 (the summary runs the forward pass). The MAC totals equal PyTorch's
    ``FlopCounterMode`` count / 2 on the same architectures (1,814,073,344 and 714,188,480), and VGG-16's
    is the well-known 15.47 G. Weights are not drawn randomly here: only shapes and counts are checked."""
    r18 = summary(models.resnet18(), (1, 3, 224, 224))
    assert stage_shapes(r18, ["maxpool", "layer1.1.relu", "layer2.1.relu", "layer3.1.relu", "layer4.1.relu"]) == {
        "maxpool": (1, 64, 56, 56), "layer1.1.relu": (1, 64, 56, 56), "layer2.1.relu": (1, 128, 28, 28),
        "layer3.1.relu": (1, 256, 14, 14), "layer4.1.relu": (1, 512, 7, 7)}
    assert r18.totals["output_shape"] == (1, 1000) and r18.totals["macs"] == 1_814_073_344

    vgg = summary(models.vgg16(), (1, 3, 224, 224))
    pools = [f"features.{i}" for i in (4, 9, 16, 23, 30)]
    assert [vgg.row(name)["output_shape"] for name in pools] == [
        (1, 64, 112, 112), (1, 128, 56, 56), (1, 256, 28, 28), (1, 512, 14, 14), (1, 512, 7, 7)]
    assert vgg.row("classifier.0")["params"] == 102_764_544
    assert vgg.totals["output_shape"] == (1, 1000) and vgg.totals["macs"] == 15_470_264_320

    tv = summary(models.alexnet(variant="torchvision"), (1, 3, 224, 224))
    assert tv.row("features.0")["output_shape"] == (1, 64, 55, 55)
    assert tv.row("features.12")["output_shape"] == (1, 256, 6, 6)
    assert tv.totals["output_shape"] == (1, 1000) and tv.totals["macs"] == 714_188_480


def test_stage_shapes_of_cifar_resnet():
    model = models.resnet20()
    x = images((1, 3, 32, 32))
    with tinygrad_cnn.no_grad():
        x = model.relu(model.bn1(model.conv1(x)))
        shapes = []
        for stage in model.stages():
            x = stage(x)
            shapes.append(tuple(x.shape))
    assert shapes == [(1, 16, 32, 32), (1, 32, 16, 16), (1, 64, 8, 8)]


def test_option_a_shortcut_subsamples_and_zero_pads():
    shortcut = models.ShortcutA(2, 6, stride=2)
    x = np.arange(2 * 2 * 5 * 5, dtype=np.float64).reshape(2, 2, 5, 5)
    out = shortcut(Tensor(x)).numpy()
    assert out.shape == (2, 6, 3, 3)
    np.testing.assert_array_equal(out[:, 2:4], x[:, :, ::2, ::2])
    assert not out[:, :2].any() and not out[:, 4:].any()


def test_alexnet_lrn_is_the_papers_formula():
    """b = a / (k + alpha * sum_{|j - i| <= n/2} a_j^2) ** beta with the paper's k=2, n=5, alpha=1e-4, beta=0.75."""
    norm = models.alexnet(variant="cifar").features.norm1
    a = np.random.default_rng(0).normal(0, 30, (2, 7, 3, 3))  # large activations, so the sum matters
    padded = np.pad(a ** 2, ((0, 0), (2, 2), (0, 0), (0, 0)))
    window_sums = sum(padded[:, j:j + 7] for j in range(5))
    expected = a / (2.0 + 1e-4 * window_sums) ** 0.75
    np.testing.assert_allclose(norm(Tensor(a)).numpy(), expected, rtol=1e-12)
    assert np.abs(expected / a - 2.0 ** -0.75).max() > 0.1  # not just the constant k


@pytest.mark.parametrize("layer", ["conv2", "conv4", "conv5"])
def test_alexnet_two_towers_do_not_mix(layer):
    """groups=2: each half of the output channels sees only its own half of the input channels."""
    conv = getattr(models.alexnet(variant="cifar", groups=2).features, layer)
    c_in, c_out = conv.in_channels, conv.out_channels
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, c_in, 5, 5)).astype(np.float32)
    changed = x.copy()
    changed[:, c_in // 2:] += rng.standard_normal((1, c_in - c_in // 2, 5, 5)).astype(np.float32)
    with tinygrad_cnn.no_grad():
        before, after = conv(Tensor(x)).numpy(), conv(Tensor(changed)).numpy()
    np.testing.assert_array_equal(after[:, :c_out // 2], before[:, :c_out // 2])  # first tower untouched
    assert not np.allclose(after[:, c_out // 2:], before[:, c_out // 2:])


def test_zero_init_residual_blocks_start_as_identity():
    model = models.ResNet(models.BasicBlock, [2, 1, 1, 1], num_classes=4, zero_init_residual=True)
    model.train()
    x = Tensor(np.abs(np.random.default_rng(2).standard_normal((2, 64, 8, 8))).astype(np.float32))
    block = model.layer1[1]  # identity shortcut; its input comes after a ReLU, so it is >= 0
    np.testing.assert_array_equal(block(x).numpy(), x.numpy())
    # The first step: the residual branch's convolutions get no gradient through the zero scale,
    # while that scale (bn2.weight) does; everything else learns as usual.
    loss = F.cross_entropy(model(images((2, 3, 32, 32))), Tensor(np.array([0, 3])))
    loss.backward()
    assert np.all(block.conv1.weight.grad.numpy() == 0) and np.all(block.conv2.weight.grad.numpy() == 0)
    assert np.any(block.bn2.weight.grad.numpy() != 0)
    assert np.any(model.conv1.weight.grad.numpy() != 0) and np.any(model.fc.weight.grad.numpy() != 0)


def test_dropout_differs_in_train_mode_and_not_in_eval_mode():
    model = models.alexnet(variant="cifar")
    x = images((2, 3, 32, 32))
    model.train()
    a, b = model(x).numpy(), model(x).numpy()
    assert not np.allclose(a, b)  # fresh dropout masks
    model.eval()
    with tinygrad_cnn.no_grad():
        c, d = model(x).numpy(), model(x).numpy()
    np.testing.assert_array_equal(c, d)
    model.classifier.drop6.p = 0.0  # eval output == a train pass whose dropout keeps everything
    model.classifier.drop7.p = 0.0
    model.train()
    np.testing.assert_allclose(model(x).numpy(), c, rtol=1e-5, atol=1e-6)


def test_batchnorm_train_and_eval_modes():
    model = models.resnet20()
    x = images((4, 3, 32, 32))
    bn = model.layer1[0].bn1
    model.eval()
    with tinygrad_cnn.no_grad():
        eval_out = model(x).numpy()
    assert np.all(bn.running_mean.numpy() == 0) and int(bn.num_batches_tracked.numpy()) == 0
    model.train()
    train_out = model(x).numpy()
    assert not np.allclose(train_out, eval_out, rtol=1e-3)  # batch statistics instead of running ones
    assert not np.allclose(bn.running_mean.numpy(), 0) and int(bn.num_batches_tracked.numpy()) == 1
    model.eval()
    running = bn.running_var.numpy().copy()
    with tinygrad_cnn.no_grad():
        again = model(x).numpy()
    np.testing.assert_array_equal(bn.running_var.numpy(), running)
    assert not np.allclose(again, eval_out)  # the running statistics moved


def tiny_resnet(shortcut, plain=False):
    """Two stages of one block each (2 -> 4 channels): both kinds of shortcut appear once."""
    model = models.CifarResNet(num_blocks=(1, 1), widths=(2, 4), num_classes=3, shortcut=shortcut, plain=plain)
    return model.double()


@pytest.mark.parametrize("shortcut", ["A", "B"])
@pytest.mark.parametrize("training", [True, False])
def test_tiny_resnet_gradcheck_end_to_end(shortcut, training):
    tinygrad_cnn.manual_seed(3)
    model = tiny_resnet(shortcut)
    rng = np.random.default_rng(4)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        # Away from the trivial initial values, so eval mode really uses the running statistics.
        c = bn.num_features
        bn.weight.array[...] = rng.uniform(0.5, 1.5, c)
        bn.bias.array[...] = rng.normal(0, 0.3, c)
        bn.running_mean.array[...] = rng.normal(0, 0.3, c)
        bn.running_var.array[...] = rng.uniform(0.5, 1.5, c)
    model.train(training)
    x = Tensor(rng.standard_normal((3, 3, 6, 6)), requires_grad=True)
    params = list(model.parameters())
    assert x.dtype == np.float64 and all(p.dtype == np.float64 for p in params)

    def fn(x, *parameters):  # gradcheck perturbs the parameters in place
        return model(x)

    # Fast mode: one random direction per tensor (two forward passes each) instead of every element;
    # a wrong gradient anywhere in a tensor still changes the projected value.
    assert tinygrad_cnn.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=True)


def all_models_for_a_training_step():
    return [
        ("lenet5", lambda: models.lenet5(), (2, 1, 28, 28), 10),
        ("resnet20-A", lambda: models.resnet20(), (2, 3, 32, 32), 10),
        ("resnet20-B", lambda: models.resnet20(shortcut="B"), (2, 3, 32, 32), 10),
        ("plain20", lambda: models.plain20(), (2, 3, 32, 32), 10),
        ("alexnet-cifar", lambda: models.alexnet(variant="cifar", groups=2, init="paper"), (2, 3, 32, 32), 10),
        ("alexnet", lambda: models.alexnet(num_classes=10), (1, 3, 227, 227), 10),
        ("resnet18", lambda: models.resnet18(num_classes=10), (2, 3, 32, 32), 10),
        ("resnet50", lambda: models.resnet50(num_classes=10), (2, 3, 32, 32), 10),
        # VGG-16's thirteen convolutions with a narrow head (the 4096-wide one only adds cost, not code).
        ("vgg16-features", lambda: models.VGG(num_classes=10, hidden_features=32), (2, 3, 32, 32), 10),
    ]


@pytest.mark.parametrize("name, builder, input_shape, num_classes", all_models_for_a_training_step(),
                         ids=[m[0] for m in all_models_for_a_training_step()])
def test_one_training_step_changes_every_parameter(name, builder, input_shape, num_classes):
    model = builder()
    model.train()
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = images(input_shape, seed=1)
    y = Tensor(np.arange(input_shape[0]) % num_classes)
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert np.isfinite(loss.item())
    after = model.state_dict()
    for key, value in model.named_parameters():
        assert value.grad is not None, key
        assert not np.array_equal(after[key].numpy(), before[key]), f"{name}: {key} did not change"
    for key in before:
        if key.endswith(("running_mean", "running_var")):
            assert not np.array_equal(after[key].numpy(), before[key]), f"{name}: {key} did not change"
        if key.endswith("num_batches_tracked"):
            assert int(after[key].numpy()) == int(before[key]) + 1


def test_frozen_backbone_does_not_change():
    model = models.resnet20()
    model.requires_grad_(False)
    model.fc = nn.Linear(64, 5)
    head_before = model.fc.weight.numpy().copy()
    backbone_before = {k: v.numpy().copy() for k, v in model.named_parameters() if not k.startswith("fc.")}
    optimizer = optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = F.cross_entropy(model(images((4, 3, 32, 32))), Tensor(np.array([0, 1, 2, 3])))
    loss.backward()
    optimizer.step()
    assert not np.array_equal(model.fc.weight.numpy(), head_before)
    for key, value in model.named_parameters():
        if not key.startswith("fc."):
            assert value.grad is None, key
            np.testing.assert_array_equal(value.numpy(), backbone_before[key], err_msg=key)


def test_double_precision_model_runs_in_float64():
    model = models.lenet5().double()
    out = model(images((1, 1, 28, 28), dtype=np.float64))
    assert out.dtype == np.float64
