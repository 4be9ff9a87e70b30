"""Layers of tinygrad_cnn.nn: signatures, defaults, initialisation, semantics, gradients, parity."""
import math
import re
import warnings
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_cnn
from tinygrad_cnn import backend, nn, optim
from tinygrad_cnn.nn import functional as F
from tinygrad_cnn.testing import assert_allclose, tensor64

Tensor = tinygrad_cnn.Tensor


def randn(*shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------- Linear / Conv2d

def test_linear_shapes_init_and_formula():
    tinygrad_cnn.manual_seed(0)
    layer = nn.Linear(20, 7)
    assert layer.weight.shape == (7, 20) and layer.bias.shape == (7,)
    assert layer.weight.dtype == np.float32 and layer.weight.requires_grad
    bound = 1 / math.sqrt(20)
    assert np.abs(layer.weight.numpy()).max() <= bound and np.abs(layer.bias.numpy()).max() <= bound
    x = randn(3, 5, 20)
    expected = x @ layer.weight.numpy().T + layer.bias.numpy()
    assert_allclose(layer(Tensor(x)), expected, rtol=1e-5, atol=1e-6)
    no_bias = nn.Linear(4, 2, bias=False)
    assert no_bias.bias is None and [n for n, _ in no_bias.named_parameters()] == ["weight"]
    assert repr(no_bias) == "Linear(in_features=4, out_features=2, bias=False)"
    with pytest.raises(ValueError, match="in_features"):
        layer(Tensor(randn(2, 3)))
    assert nn.Linear(2, 3, dtype=np.float64).weight.dtype == np.float64


def test_default_init_statistics_of_conv_and_linear():
    """kaiming_uniform_(a=sqrt(5)) + U(+-1/sqrt(fan_in)) bias: both uniform with bound 1/sqrt(fan_in)."""
    tinygrad_cnn.manual_seed(0)
    conv = nn.Conv2d(64, 128, 3, groups=2)          # fan_in = 32 * 9
    bound = 1 / math.sqrt(32 * 9)
    w = conv.weight.numpy()
    assert w.shape == (128, 32, 3, 3)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    assert np.abs(conv.bias.numpy()).max() <= bound
    linear = nn.Linear(1000, 300)
    assert linear.weight.numpy().std() == pytest.approx(1 / math.sqrt(1000) / math.sqrt(3), rel=0.03)


def test_init_is_reproducible_under_manual_seed():
    tinygrad_cnn.manual_seed(42)
    a = nn.Conv2d(3, 4, 3).weight.numpy().copy()
    tinygrad_cnn.manual_seed(42)
    b = nn.Conv2d(3, 4, 3).weight.numpy().copy()
    assert np.array_equal(a, b)


def test_conv2d_matches_functional_and_validates_arguments():
    tinygrad_cnn.manual_seed(1)
    conv = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    assert conv.kernel_size == (3, 2) and conv.stride == (2, 1) and conv.padding == (1, 1)
    x = Tensor(randn(2, 4, 7, 6))
    expected = F.conv2d(x, conv.weight, conv.bias, stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    assert_allclose(conv(x), expected)
    with pytest.raises(ValueError, match=r"in_channels \(5\) must be divisible by groups \(2\)"):
        nn.Conv2d(5, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode"):
        nn.Conv2d(1, 1, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="4 channels"):
        conv(Tensor(randn(1, 3, 5, 5)))
    with pytest.raises(ValueError, match="4-D input"):
        conv(Tensor(randn(4, 5)))
    # an unbatched (C, H, W) input is a batch of one without the batch axis, as in PyTorch
    single = randn(4, 7, 6)
    assert_allclose(conv(Tensor(single)), conv(Tensor(single[None])).numpy()[0])
    reflect = nn.Conv2d(4, 2, 3, padding="same", padding_mode="reflect")
    assert reflect(Tensor(single)).shape == (2, 7, 6)
    with pytest.raises(ValueError, match="strided"):
        nn.Conv2d(1, 1, 3, stride=2, padding="same")


NP_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap", "zeros": "constant"}


@settings(max_examples=12, deadline=None)
@given(st.sampled_from(["zeros", "reflect", "replicate", "circular"]), st.integers(1, 3),
       st.integers(1, 2), st.integers(0, 2), st.integers(3, 6), st.integers(3, 6),
       st.integers(0, 1000))
def test_conv2d_padding_modes_match_explicit_numpy_padding(mode, kernel, dilation, pad, h, w, seed):
    tinygrad_cnn.manual_seed(seed)
    conv = nn.Conv2d(2, 3, kernel, padding=pad, dilation=dilation, padding_mode=mode)
    x = randn(1, 2, h, w, seed=seed)
    padded = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode=NP_PAD_MODE[mode])
    if padded.shape[2] < dilation * (kernel - 1) + 1 or padded.shape[3] < dilation * (kernel - 1) + 1:
        return
    expected = F.conv2d(Tensor(padded), conv.weight, conv.bias, dilation=dilation)
    assert_allclose(conv(Tensor(x)), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel, dilation", [(3, 1), (4, 1), (2, 3), (5, 2)])
def test_conv2d_same_padding_keeps_the_size(kernel, dilation):
    conv = nn.Conv2d(2, 2, kernel, padding="same", dilation=dilation)
    x = Tensor(randn(1, 2, 9, 8))
    assert conv(x).shape == (1, 2, 9, 8)
    total = dilation * (kernel - 1)
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (total // 2, total - total // 2),
                                (total // 2, total - total // 2)))
    expected = F.conv2d(Tensor(padded), conv.weight, conv.bias, dilation=dilation)
    assert_allclose(conv(x), expected, rtol=1e-5, atol=1e-6)
    assert nn.Conv2d(2, 2, 3, padding="valid")(x).shape == (1, 2, 7, 6)


def test_conv2d_reflect_padding_gradient():
    conv = nn.Conv2d(2, 2, 3, padding=2, padding_mode="reflect").double()
    x = tensor64(randn(1, 2, 4, 5, dtype=np.float64))
    with backend.cpu_backend("numpy"):
        assert tinygrad_cnn.gradcheck(lambda x, w, b: conv(x), (x, conv.weight, conv.bias))


# ---------------------------------------------------------------------------- BatchNorm

def test_batchnorm_parameters_buffers_and_state_dict_keys():
    bn = nn.BatchNorm2d(3)
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert np.all(bn.weight.numpy() == 1) and np.all(bn.bias.numpy() == 0)
    assert np.all(bn.running_mean.numpy() == 0) and np.all(bn.running_var.numpy() == 1)
    assert bn.num_batches_tracked.dtype == np.int64 and bn.num_batches_tracked.shape == ()
    bare = nn.BatchNorm1d(3, affine=False, track_running_stats=False)
    assert list(bare.state_dict()) == [] and bare.running_mean is None and bare.weight is None


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_batchnorm_running_statistics_follow_the_closed_form(momentum):
    bn = nn.BatchNorm2d(3, momentum=momentum)
    rng = np.random.default_rng(0)
    mean, var = np.zeros(3), np.ones(3)
    batches = [rng.standard_normal((4, 3, 2, 3)) * (k + 1) + k for k in range(4)]
    for k, x in enumerate(batches, start=1):
        bn(Tensor(x.astype(np.float32)))
        factor = 1 / k if momentum is None else momentum
        mean = (1 - factor) * mean + factor * x.mean(axis=(0, 2, 3))
        var = (1 - factor) * var + factor * x.var(axis=(0, 2, 3), ddof=1)
        assert bn.num_batches_tracked.item() == k
    assert_allclose(bn.running_mean, mean, rtol=1e-5, atol=1e-6)
    assert_allclose(bn.running_var, var, rtol=1e-5, atol=1e-6)


def test_batchnorm_eval_uses_and_keeps_running_statistics():
    bn = nn.BatchNorm1d(2)
    bn.running_mean.array[...] = [1.0, -1.0]
    bn.running_var.array[...] = [4.0, 0.25]
    bn.weight.array[...] = [2.0, 1.0]
    bn.eval()
    x = randn(5, 2)
    out = bn(Tensor(x))
    expected = (x - [1.0, -1.0]) / np.sqrt(np.array([4.0, 0.25]) + 1e-5) * [2.0, 1.0]
    assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert_allclose(bn.running_mean, [1.0, -1.0]) and bn.num_batches_tracked.item() == 0
    # training mode normalises with the batch statistics
    out = bn.train()(Tensor(x)).numpy()
    assert_allclose(out.mean(0), [0.0, 0.0], atol=1e-5)
    # without running statistics the batch statistics are used in eval too
    free = nn.BatchNorm1d(2, track_running_stats=False).eval()
    assert_allclose(free(Tensor(x)).numpy().mean(0), [0.0, 0.0], atol=1e-5)


def test_batchnorm_input_checks_and_old_checkpoints_without_counter():
    with pytest.raises(ValueError, match=r"expected 4D input \(got 2D input"):
        nn.BatchNorm2d(3)(Tensor(randn(2, 3)))
    one_value = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        one_value(Tensor(randn(1, 3)))
    # a rejected batch leaves the statistics and the counter untouched
    assert one_value.num_batches_tracked.item() == 0
    assert_allclose(one_value.running_var, np.ones(3))
    with pytest.raises(ValueError, match="expected 3 channels"):
        nn.BatchNorm1d(3)(Tensor(randn(2, 4)))
    bn = nn.BatchNorm1d(3)
    bn.num_batches_tracked.array[...] = 5
    state = {k: v.numpy() for k, v in bn.state_dict().items() if k != "num_batches_tracked"}
    assert bn.load_state_dict(state).missing_keys == []
    assert bn.num_batches_tracked.item() == 0


# ---------------------------------------------------------------------------- other layers

def test_activation_layers_match_formulas():
    x = randn(3, 4)
    t = Tensor(x)
    assert_allclose(nn.ReLU()(t), np.maximum(x, 0))
    assert_allclose(nn.LeakyReLU(0.2)(t), np.where(x > 0, x, 0.2 * x), rtol=1e-6)
    assert_allclose(nn.Sigmoid()(t), 1 / (1 + np.exp(-x)), rtol=1e-5)
    assert_allclose(nn.Tanh()(t), np.tanh(x), rtol=1e-5)
    assert_allclose(nn.GELU()(t), F.gelu(t))
    assert_allclose(nn.GELU("tanh")(t), F.gelu(t, approximate="tanh"))
    soft = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    assert_allclose(nn.Softmax(dim=1)(t), soft, rtol=1e-5)
    assert_allclose(nn.LogSoftmax(dim=1)(t), np.log(soft), rtol=1e-5, atol=1e-6)
    with pytest.warns(UserWarning, match="Implicit dimension"):
        assert_allclose(nn.Softmax()(t), soft, rtol=1e-5)
    with pytest.raises(ValueError, match="approximate"):
        nn.GELU("fast")


def test_dropout_layer_follows_training_flag():
    drop = nn.Dropout(0.5)
    x = Tensor(np.ones((200, 50), np.float32))
    tinygrad_cnn.manual_seed(3)
    out = drop(x).numpy()
    assert set(np.unique(out)) <= {0.0, 2.0}
    assert 0.45 < (out == 0).mean() < 0.55
    drop.eval()
    assert_allclose(drop(x), x)
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)


def test_pooling_layers_match_functional():
    x = Tensor(randn(2, 3, 9, 9))
    pool = nn.MaxPool2d(3, stride=2)
    assert_allclose(pool(x), F.max_pool2d(x, 3, 2))
    assert pool(x).shape == (2, 3, 4, 4)
    assert nn.MaxPool2d(2).stride == 2
    out, idx = nn.MaxPool2d(2, return_indices=True)(x)
    assert out.shape == idx.shape == (2, 3, 4, 4)
    assert_allclose(nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)(x),
                    F.avg_pool2d(x, 3, 2, 1, True, False))
    gap = nn.AdaptiveAvgPool2d((1, 1))(x)
    assert_allclose(gap, x.numpy().mean(axis=(2, 3), keepdims=True), rtol=1e-5, atol=1e-6)
    assert nn.AdaptiveAvgPool2d(3)(x).shape == (2, 3, 3, 3)


def test_normalisation_layers_match_functional():
    x = Tensor(randn(2, 6, 3, 3))
    lrn = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    assert_allclose(lrn(x), F.local_response_norm(x, 5, 1e-4, 0.75, 2.0))
    ln = nn.LayerNorm([3, 3])
    assert ln.weight.shape == (3, 3) and ln.normalized_shape == (3, 3)
    out = ln(x).numpy()
    assert_allclose(out.mean(axis=(2, 3)), np.zeros((2, 6)), atol=1e-5)
    assert nn.LayerNorm(3, elementwise_affine=False).weight is None
    with pytest.raises(ValueError, match="normalized_shape"):
        nn.LayerNorm(4)(x)


def test_group_norm_dropout2d_and_adaptive_max_pool():
    x = Tensor(randn(2, 4, 5, 5))
    gn = nn.GroupNorm(2, 4)
    assert [n for n, _ in gn.named_parameters()] == ["weight", "bias"] and gn.weight.shape == (4,)
    out = gn(x).numpy().reshape(2, 2, -1)
    assert_allclose(out.mean(-1), np.zeros((2, 2)), atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(3, 4)
    tinygrad_cnn.manual_seed(0)
    dropped = nn.Dropout2d(0.5)(Tensor(np.ones((8, 16, 3, 3), np.float32))).numpy()
    per_channel = dropped.reshape(8, 16, 9)
    assert np.all(per_channel.min(-1) == per_channel.max(-1))       # whole maps kept or dropped
    assert set(np.unique(dropped)) == {0.0, 2.0}
    assert_allclose(nn.Dropout2d().eval()(x), x)
    assert_allclose(nn.AdaptiveMaxPool2d(1)(x), x.numpy().max(axis=(2, 3), keepdims=True))


def test_flatten_and_unflatten():
    x = Tensor(randn(2, 3, 4, 5))
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0, 2)(x).shape == (24, 5)
    assert tinygrad_cnn.flatten(x, 1).shape == (2, 60)
    assert nn.Unflatten(1, (3, 20))(nn.Flatten()(x)).shape == (2, 3, 20)
    assert nn.Unflatten(1, (-1, 4, 5))(nn.Flatten()(x)).shape == (2, 3, 4, 5)
    with pytest.raises(ValueError, match="cannot split"):
        nn.Unflatten(1, (7, 9))(nn.Flatten()(x))


def test_loss_modules_match_functional_and_weights_are_buffers():
    logits = Tensor(randn(6, 4))
    target = Tensor(np.array([0, 1, 3, 2, 1, 0]), dtype=np.int64)
    weight = np.array([1.0, 2.0, 0.5, 1.0], np.float32)
    loss = nn.CrossEntropyLoss(weight=Tensor(weight), label_smoothing=0.1)
    assert [n for n, _ in loss.named_buffers()] == ["weight"]
    assert_allclose(loss(logits, target),
                    F.cross_entropy(logits, target, weight=Tensor(weight), label_smoothing=0.1))
    assert nn.CrossEntropyLoss(reduction="none")(logits, target).shape == (6,)
    logp = F.log_softmax(logits, dim=1)
    assert_allclose(nn.NLLLoss()(logp, target), nn.CrossEntropyLoss()(logits, target), rtol=1e-6)
    assert_allclose(nn.MSELoss(reduction="sum")(logits, Tensor(np.zeros((6, 4), np.float32))),
                    (logits.numpy() ** 2).sum(), rtol=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss(reduction="avg")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert nn.MSELoss(size_average=False).reduction == "sum"


# ---------------------------------------------------------------------------- gradients

def test_gradcheck_through_a_small_float64_sequential():
    tinygrad_cnn.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 2), nn.BatchNorm2d(2), nn.Tanh(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(2, 3), nn.LayerNorm(3), nn.Sigmoid(),
    ).double()
    x = tensor64(randn(2, 1, 3, 3, dtype=np.float64))
    params = tuple(model.parameters())
    assert all(p.dtype == np.float64 for p in params)
    # The reference kernels: on tiny inputs they are faster than launching parallel Numba kernels
    # (kernel == reference is tested with the ops).
    with backend.cpu_backend("numpy"):
        assert tinygrad_cnn.gradcheck(lambda x, *ps: model(x), (x, *params))
        model.eval()
        assert tinygrad_cnn.gradcheck(lambda x, *ps: model(x), (x, *params))


def test_training_step_changes_every_parameter():
    tinygrad_cnn.manual_seed(0)
    # no conv bias: BatchNorm right after it cancels it, so its gradient is exactly zero
    model = nn.Sequential(nn.Conv2d(1, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Dropout(0.1), nn.Linear(16, 3))
    before = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    opt = optim.SGD(model.parameters(), lr=0.1)
    loss = nn.CrossEntropyLoss()(model(Tensor(randn(4, 1, 6, 6))), Tensor(np.array([0, 1, 2, 1])))
    loss.backward()
    opt.step()
    for name, value in model.state_dict().items():
        assert not np.array_equal(value.numpy(), before[name]), name


# ---------------------------------------------------------------------------- lecture-style code

def lecture_network(nn, flatten):
    """Code as written for PyTorch: only the import differs."""

    class ResBlock(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(channels),
            )

        def forward(self, x):
            return nn.ReLU()(self.body(x) + x)

    class Net(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.MaxPool2d(2))
            self.blocks = nn.Sequential(OrderedDict([("res1", ResBlock(8)), ("res2", ResBlock(8))]))
            self.pool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(8, num_classes)

        def forward(self, x):
            x = self.blocks(self.stem(x))
            x = flatten(self.pool(x), 1)
            return self.fc(x)

    return Net()


def test_lecture_style_resblock_runs_unchanged_and_trains():
    tinygrad_cnn.manual_seed(0)
    model = lecture_network(nn, tinygrad_cnn.flatten)
    x = Tensor(randn(2, 3, 8, 8))
    out = model(x)
    assert out.shape == (2, 10)
    nn.CrossEntropyLoss()(out, Tensor(np.array([1, 7]))).backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())
    assert "blocks.res1.body.1.running_mean" in model.state_dict()
    model.eval()
    assert model(x).shape == (2, 10)


def test_lecture_network_matches_torch_with_the_same_weights(torch):
    theirs = lecture_network(torch.nn, torch.flatten)
    ours = lecture_network(nn, tinygrad_cnn.flatten)
    their_state = theirs.state_dict()
    assert list(ours.state_dict()) == list(their_state)
    ours.load_state_dict({k: v.numpy() for k, v in their_state.items()})
    x = randn(2, 3, 8, 8, seed=5)
    for mode in ("train", "eval"):
        getattr(ours, mode)()
        getattr(theirs, mode)()
        expected = theirs(torch.from_numpy(x)).detach().numpy()
        assert_allclose(ours(Tensor(x)), expected, rtol=1e-4, atol=1e-5, err_msg=mode)
    for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)   # running stats too


LAYER_EXPRESSIONS = [
    "nn.Conv2d(3, 16, 3)", "nn.Conv2d(3, 96, 11, stride=4)",
    "nn.Conv2d(16, 32, (3, 5), stride=2, padding=(1, 2), dilation=2, groups=4, bias=False)",
    "nn.Conv2d(4, 4, 3, padding='same', padding_mode='reflect')",
    "nn.Linear(8, 4)", "nn.BatchNorm2d(16)", "nn.BatchNorm1d(4, momentum=None, affine=False)",
    "nn.ReLU()", "nn.ReLU(inplace=True)", "nn.LeakyReLU(0.2)", "nn.Sigmoid()", "nn.Tanh()",
    "nn.GELU()", "nn.Dropout(0.5)", "nn.MaxPool2d(3, stride=2)", "nn.MaxPool2d(2)",
    "nn.AvgPool2d(2)", "nn.AdaptiveAvgPool2d((1, 1))", "nn.AdaptiveAvgPool2d(1)",
    "nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)", "nn.LayerNorm(10)",
    "nn.LayerNorm([4, 4], bias=False)", "nn.GroupNorm(2, 8)", "nn.BatchNorm2d(3, bias=False)",
    "nn.Dropout2d(0.2)", "nn.AdaptiveMaxPool2d((2, 2))",
    "nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False)",
    "nn.CrossEntropyLoss()", "nn.MSELoss()", "nn.Flatten()", "nn.Identity()", "nn.Softmax(dim=1)",
    "nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())",
    "nn.ModuleList([nn.ReLU(), nn.ReLU(), nn.Linear(2, 3), nn.ReLU()])", "nn.ModuleList()",
    "nn.ModuleList([nn.Sequential(nn.Linear(2, 2), nn.Tanh()) for _ in range(3)])",
    "nn.Sequential(nn.ModuleList([nn.Identity(), nn.Identity()]), nn.Flatten(0, -1))",
]


@pytest.mark.parametrize("expression", LAYER_EXPRESSIONS)
def test_repr_and_state_dict_keys_match_torch(expression, torch_2_13):
    torch = torch_2_13
    ours = eval(expression, {"nn": nn})
    theirs = eval(expression, {"nn": torch.nn})
    assert repr(ours) == repr(theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for name, value in theirs.state_dict().items():
        assert ours.state_dict()[name].shape == tuple(value.shape), name


# ---------------------------------------------------------------------------- parity with PyTorch

# (layer, input shape, modes): the same layer built in both frameworks, PyTorch's weights copied
# in, everything in float64; forward, input gradient, parameter gradients and buffers must agree.
TORCH_PARITY_LAYERS = [
    ("nn.Conv2d(4, 6, 3, stride=2, padding=1)", (2, 4, 7, 6), ("train",)),
    ("nn.Conv2d(4, 6, (3, 2), padding=(1, 0), dilation=(1, 2), groups=2, bias=False)", (2, 4, 7, 6),
     ("train",)),
    ("nn.Conv2d(3, 8, 11, stride=4, padding=2)", (1, 3, 27, 27), ("train",)),          # AlexNet's conv1
    ("nn.Conv2d(4, 4, 3, padding='same', padding_mode='circular')", (4, 5, 6), ("train",)),  # unbatched
    ("nn.Conv2d(2, 3, 2, padding=2, padding_mode='reflect')", (1, 2, 4, 5), ("train",)),
    ("nn.Linear(5, 3)", (2, 4, 5), ("train",)),
    ("nn.Linear(5, 3, bias=False)", (5,), ("train",)),
    ("nn.BatchNorm1d(5)", (6, 5), ("train", "eval")),
    ("nn.BatchNorm1d(5, momentum=None, affine=False)", (4, 5, 3), ("train", "eval")),
    ("nn.BatchNorm2d(4, momentum=0.3)", (3, 4, 3, 3), ("train", "eval")),
    ("nn.BatchNorm2d(4, track_running_stats=False)", (3, 4, 2, 3), ("train", "eval")),
    ("nn.ReLU()", (3, 7), ("train",)),
    ("nn.LeakyReLU(0.2)", (3, 7), ("train",)),
    ("nn.Sigmoid()", (3, 7), ("train",)),
    ("nn.Tanh()", (3, 7), ("train",)),
    ("nn.GELU()", (3, 7), ("train",)),
    ("nn.GELU('tanh')", (3, 7), ("train",)),
    ("nn.Dropout(0.3)", (3, 7), ("eval",)),
    ("nn.MaxPool2d(3, stride=2)", (2, 3, 9, 9), ("train",)),
    ("nn.MaxPool2d(2, padding=1, ceil_mode=True)", (2, 3, 7, 7), ("train",)),
    ("nn.MaxPool2d(3, stride=2)", (3, 7, 7), ("train",)),
    ("nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)", (2, 3, 8, 8), ("train",)),
    ("nn.AvgPool2d(2, ceil_mode=True)", (2, 3, 5, 5), ("train",)),
    ("nn.AdaptiveAvgPool2d((1, 1))", (2, 3, 5, 7), ("train",)),
    ("nn.AdaptiveAvgPool2d((3, 2))", (2, 3, 7, 5), ("train",)),
    ("nn.LocalResponseNorm(5, alpha=1e-2, beta=0.75, k=2.0)", (2, 7, 3, 3), ("train",)),
    ("nn.LocalResponseNorm(2)", (2, 4, 3), ("train",)),
    ("nn.LayerNorm([3, 4])", (2, 5, 3, 4), ("train",)),
    ("nn.LayerNorm(4, elementwise_affine=False)", (3, 4), ("train",)),
    ("nn.Flatten()", (2, 3, 4), ("train",)),
    ("nn.Identity()", (2, 3), ("train",)),
    ("nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), "
     "nn.Linear(16, 3))", (3, 2, 6, 6), ("train", "eval")),
]


@pytest.mark.parametrize("expression, shape, modes", TORCH_PARITY_LAYERS)
def test_layer_matches_torch_with_copied_weights(torch, expression, shape, modes):
    theirs = eval(expression, {"nn": torch.nn}).double()
    ours = eval(expression, {"nn": nn}).double()
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    rng = np.random.default_rng(len(expression))
    for mode in modes:
        ours.train(mode == "train")
        theirs.train(mode == "train")
        x = rng.standard_normal(shape)
        their_x = torch.tensor(x, requires_grad=True)
        their_out = theirs(their_x)
        our_x = tensor64(x)
        our_out = ours(our_x)
        assert our_out.shape == tuple(their_out.shape), mode
        assert_allclose(our_out, their_out.detach().numpy(), rtol=1e-7, atol=1e-9, err_msg=mode)
        upstream = rng.standard_normal(our_out.shape)
        (their_out * torch.from_numpy(upstream)).sum().backward()
        (our_out * Tensor(upstream)).sum().backward()
        assert_allclose(our_x.grad, their_x.grad.numpy(), rtol=1e-7, atol=1e-9, err_msg=mode)
        their_params = dict(theirs.named_parameters())
        for name, param in ours.named_parameters():
            assert_allclose(param.grad, their_params[name].grad.numpy(), rtol=1e-7, atol=1e-9,
                            err_msg=f"{mode}: {name}")
        for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
            assert_allclose(a, b.numpy(), rtol=1e-12, atol=1e-12, err_msg=f"{mode}: {name}")
        ours.zero_grad()
        theirs.zero_grad()


@pytest.mark.parametrize("kwargs", [{}, {"label_smoothing": 0.2}, {"reduction": "sum"},
                                    {"reduction": "none", "label_smoothing": 0.1}, {"weight": True},
                                    {"weight": True, "label_smoothing": 0.3, "ignore_index": 2}])
def test_cross_entropy_loss_matches_torch(torch, kwargs):
    rng = np.random.default_rng(0)
    logits, target = rng.standard_normal((7, 5)), rng.integers(0, 5, size=7)
    weight = rng.uniform(0.5, 2.0, size=5)
    ours_kw = dict(kwargs, weight=Tensor(weight)) if "weight" in kwargs else kwargs
    theirs_kw = dict(kwargs, weight=torch.from_numpy(weight)) if "weight" in kwargs else kwargs
    our_x, their_x = tensor64(logits), torch.tensor(logits, requires_grad=True)
    ours = nn.CrossEntropyLoss(**ours_kw)(our_x, Tensor(target))
    theirs = torch.nn.CrossEntropyLoss(**theirs_kw)(their_x, torch.from_numpy(target))
    assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    ours.sum().backward()
    theirs.sum().backward()
    assert_allclose(our_x.grad, their_x.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_matches_torch(torch, reduction):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    our_x, their_x = tensor64(a), torch.tensor(a, requires_grad=True)
    ours = nn.MSELoss(reduction=reduction)(our_x, Tensor(b))
    theirs = torch.nn.MSELoss(reduction=reduction)(their_x, torch.from_numpy(b))
    assert_allclose(ours, theirs.detach().numpy(), rtol=1e-12)
    ours.sum().backward()
    theirs.sum().backward()
    assert_allclose(our_x.grad, their_x.grad.numpy(), rtol=1e-12)


# The same source text runs on PyTorch and, after swapping the three import lines, on tinygrad_cnn.
LECTURE_IMPORTS_TORCH = ("import torch.nn as nn\nimport torch.nn.functional as F\nimport torch.optim as optim\n"
                         "from torch import flatten\n")
LECTURE_IMPORTS_OURS = ("import tinygrad_cnn.nn as nn\nimport tinygrad_cnn.nn.functional as F\n"
                        "import tinygrad_cnn.optim as optim\nfrom tinygrad_cnn import flatten\n")
LECTURE_BODY = """
class ResBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x):
        return nn.ReLU()(self.conv(x) + x)


class SmallResNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, kernel_size=3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.layers = nn.Sequential(ResBlock(8), ResBlock(8))
        self.pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = self.layers(x)
        x = self.pool(x)
        x = flatten(x, 1)
        return self.fc(x)


# The other common style: F.relu, "out +=", an empty Sequential as identity shortcut, view().
class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super(BasicBlock, self).__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(self.expansion * planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        out = F.relu(out)
        return out


class CifarStyleNet(nn.Module):
    def __init__(self, num_classes=10):
        super(CifarStyleNet, self).__init__()
        self.layer1 = nn.Sequential(BasicBlock(3, 4), BasicBlock(4, 4))
        self.layer2 = nn.Sequential(BasicBlock(4, 8, stride=2))
        self.linear = nn.Linear(8, num_classes)

    def forward(self, x):
        out = self.layer2(self.layer1(x))
        out = F.avg_pool2d(out, 4)
        out = out.view(out.size(0), -1)
        return self.linear(out)


model = MODEL()
criterion = nn.CrossEntropyLoss()
optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

def train_step(images, labels):
    model.train()
    optimizer.zero_grad()
    loss = criterion(model(images), labels)
    loss.backward()
    optimizer.step()
    return loss
"""


@pytest.mark.parametrize("model_class", ["SmallResNet", "CifarStyleNet"])
def test_lecture_source_runs_unchanged_after_swapping_the_import(torch, model_class):
    body = LECTURE_BODY.replace("model = MODEL()", f"model = {model_class}()")
    theirs, ours = {}, {}
    exec(LECTURE_IMPORTS_TORCH + body, theirs)
    exec(LECTURE_IMPORTS_OURS + body, ours)
    assert isinstance(ours["model"], nn.Module)
    ours["model"].load_state_dict({k: v.numpy() for k, v in theirs["model"].state_dict().items()})
    rng = np.random.default_rng(0)
    for step in range(2):
        images = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
        labels = rng.integers(0, 10, size=4)
        their_loss = theirs["train_step"](torch.from_numpy(images), torch.from_numpy(labels))
        our_loss = ours["train_step"](Tensor(images), Tensor(labels))
        assert our_loss.item() == pytest.approx(their_loss.item(), rel=1e-5), step
    # after two SGD steps with momentum the weights and running statistics still agree
    their_state = theirs["model"].state_dict()
    for name, value in ours["model"].state_dict().items():
        assert_allclose(value, their_state[name].numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    ours["model"].eval()
    theirs["model"].eval()
    images = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert_allclose(ours["model"](Tensor(images)),
                    theirs["model"](torch.from_numpy(images)).detach().numpy(), rtol=1e-4, atol=1e-5)


LAYER_CLASSES = ["Conv2d", "Linear", "BatchNorm1d", "BatchNorm2d", "ReLU", "LeakyReLU", "Sigmoid",
                 "Tanh", "GELU", "Dropout", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d",
                 "LocalResponseNorm", "LayerNorm", "Flatten", "CrossEntropyLoss", "MSELoss",
                 "Identity", "Sequential", "ModuleList", "Parameter", "Module"]


@pytest.mark.parametrize("name", LAYER_CLASSES)
def test_every_layer_documents_its_shapes_and_its_differences_from_pytorch(name):
    doc = getattr(nn, name).__doc__ or ""
    gives_shapes = re.search(r"\((N|C|\*)", doc) or "shape" in doc.lower()
    assert gives_shapes, f"nn.{name}: the docstring gives no shapes"
    assert "PyTorch" in doc, f"nn.{name}: the docstring does not compare with PyTorch"


@pytest.mark.parametrize("in_channels, out_channels, bad", [(-3, 8, "in_channels"), (3, -1, "out_channels"),
                                                            (3.0, 8, "in_channels"), (3, "8", "out_channels")])
def test_conv2d_refuses_negative_or_non_integer_channels(in_channels, out_channels, bad):
    with pytest.raises(ValueError, match=f"Conv2d: {bad} must be an integer >= 0, got"):
        nn.Conv2d(in_channels, out_channels, 3)


def test_conv2d_with_zero_output_channels_builds_but_refuses_to_run_as_torch_does():
    layer = nn.Conv2d(3, 0, 3)
    assert layer.weight.shape == (0, 3, 3, 3)
    with pytest.raises(ValueError, match=r"conv2d: weight of shape \(0, 3, 3, 3\) has 0 output channels"):
        layer(tinygrad_cnn.Tensor(np.zeros((1, 3, 5, 5), np.float32)))


# ---------------------------------------------------------------------------
# batch_norm_relu_of_modules: the fused tail of convolution blocks
# ---------------------------------------------------------------------------

def _bn_relu_tail(fused, training, residual, seed=0):
    """Output, input/parameter/residual gradients and running statistics of relu(bn(x) + r),
    with the fusion allowed or prevented (a no-op forward hook keeps the modules separate)."""
    from tinygrad_cnn.nn.modules.normalization import batch_norm_relu_of_modules
    rng = np.random.default_rng(seed)
    bn, relu = nn.BatchNorm2d(3, dtype=np.float64), nn.ReLU(inplace=True)
    bn.weight.array[...] = rng.uniform(0.5, 1.5, 3)
    bn.bias.array[...] = rng.uniform(-0.5, 0.5, 3)
    bn.train(training)
    if not fused:
        relu.register_forward_hook(lambda module, args, out: None)
    x = Tensor(rng.standard_normal((4, 3, 5, 5)), requires_grad=True)
    r = Tensor(rng.standard_normal((4, 3, 5, 5)), requires_grad=True) if residual else None
    out = batch_norm_relu_of_modules(bn, relu, x, r)
    (out * Tensor(rng.standard_normal(out.shape))).sum().backward()
    grads = [x.grad, bn.weight.grad, bn.bias.grad] + ([r.grad] if residual else [])
    return out, [out.numpy()] + [g.numpy() for g in grads] + [bn.running_mean.numpy(),
                                                              bn.running_var.numpy()]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("residual", [True, False])
def test_batch_norm_relu_of_modules_equals_the_modules(training, residual):
    fused_out, fused = _bn_relu_tail(True, training, residual)
    plain_out, plain = _bn_relu_tail(False, training, residual)
    assert type(fused_out._ctx).__name__ == "_BatchNormReLU"
    assert type(plain_out._ctx).__name__ == "Relu"           # the hook kept the modules apart
    for a, b in zip(fused, plain):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_batch_norm_relu_of_modules_runs_other_modules_as_written():
    from tinygrad_cnn.nn.modules.normalization import batch_norm_relu_of_modules
    x = Tensor(np.random.default_rng(0).standard_normal((4, 3, 2, 2)))
    calls = []
    bn = nn.BatchNorm2d(3, dtype=np.float64)
    bn.register_forward_hook(lambda module, args, out: calls.append("bn"))
    out = batch_norm_relu_of_modules(bn, nn.ReLU(), x)
    assert calls == ["bn"] and type(out._ctx).__name__ == "Relu"
    out = batch_norm_relu_of_modules(nn.BatchNorm2d(3, dtype=np.float64), nn.LeakyReLU(0.5), x)
    assert (out.numpy() < 0).any()                           # the given activation ran


# ---------------------------------------------------------------------------
# conv_bn_relu_of_modules: BatchNorm folded into the convolution in inference
# ---------------------------------------------------------------------------

def _conv_block(dtype, stride=1, bias=False, seed=0):
    rng = np.random.default_rng(seed)
    conv = nn.Conv2d(4, 6, 3, stride=stride, padding=1, bias=bias, dtype=dtype)
    bn = nn.BatchNorm2d(6, dtype=dtype)
    bn.running_mean.array[...] = rng.standard_normal(6)
    bn.running_var.array[...] = rng.uniform(0.5, 2.0, 6)
    bn.weight.array[...] = rng.uniform(0.5, 1.5, 6)
    bn.bias.array[...] = rng.uniform(-0.5, 0.5, 6)
    return conv, bn.eval(), nn.ReLU(inplace=True)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("stride,bias", [(1, False), (2, True)])
def test_conv_bn_relu_of_modules_folds_in_inference(dtype, tol, residual, stride, bias):
    from tinygrad_cnn.nn.modules.normalization import conv_bn_relu_of_modules
    conv, bn, relu = _conv_block(dtype, stride, bias)
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((3, 4, 9, 8)).astype(dtype))
    r = Tensor(rng.standard_normal(conv(x).shape).astype(dtype)) if residual else None
    expected = bn(conv(x))
    expected = relu(expected if r is None else expected + r).numpy()
    with tinygrad_cnn.no_grad():
        folded = conv_bn_relu_of_modules(conv, bn, relu, x, r)
    assert folded._ctx is None and folded.dtype == dtype
    np.testing.assert_allclose(folded.numpy(), expected, rtol=tol, atol=tol)
    assert (folded.numpy() >= 0).all() and (expected == 0).any()


def test_conv_bn_relu_of_modules_folds_only_when_no_one_could_tell():
    from tinygrad_cnn.nn.modules.normalization import conv_bn_relu_of_modules
    conv, bn, relu = _conv_block(np.float64)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 4, 5, 5)))
    # Parameters require grad and a graph is recorded: the modules run (gradients flow).
    out = conv_bn_relu_of_modules(conv, bn, relu, x)
    out.sum().backward()
    assert conv.weight.grad is not None and bn.weight.grad is not None
    # Training mode: batch statistics, the fused BatchNorm-ReLU after the convolution.
    with tinygrad_cnn.no_grad():
        out = conv_bn_relu_of_modules(conv, bn.train(), relu, x)
    assert bn.num_batches_tracked.item() == 1
    # A hook on any of the three modules sees its module run.
    seen = []
    bn.eval().register_forward_hook(lambda module, args, output: seen.append(output.shape))
    with tinygrad_cnn.no_grad():
        conv_bn_relu_of_modules(conv, bn, relu, x)
    assert seen == [(2, 6, 5, 5)]
