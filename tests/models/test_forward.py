"""Forward shapes, train/eval behaviour, an end-to-end float64 gradient check and one training step per model.

Inputs are kept small (ImageNet ResNets at 32x32 or 64x64, batch 1-2) so the file stays fast; the full-size
AlexNet forward runs in tests/test_summary.py.
"""
import numpy as np
import pytest

import tinygrad_cnn
from tinygrad_cnn import Tensor, models, nn, optim
from tinygrad_cnn.nn import functional as F


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
        bn.weight.data[...] = rng.uniform(0.5, 1.5, c)
        bn.bias.data[...] = rng.normal(0, 0.3, c)
        bn.running_mean.data[...] = rng.normal(0, 0.3, c)
        bn.running_var.data[...] = rng.uniform(0.5, 1.5, c)
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
