"""nn.init: gains, fans, distributions (statistics), in-place semantics, reproducibility."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_cnn
from tinygrad_cnn import nn
from tinygrad_cnn.nn import init

Tensor = tinygrad_cnn.Tensor


def fresh(shape, dtype=np.float32, requires_grad=False):
    return Tensor(np.zeros(shape, dtype=dtype), requires_grad=requires_grad)


@pytest.mark.parametrize("name, param, expected", [
    ("linear", None, 1.0), ("conv2d", None, 1.0), ("sigmoid", None, 1.0), ("tanh", None, 5 / 3),
    ("relu", None, math.sqrt(2)), ("leaky_relu", None, math.sqrt(2 / (1 + 0.01 ** 2))),
    ("leaky_relu", math.sqrt(5), math.sqrt(1 / 3)), ("selu", None, 0.75)])
def test_calculate_gain(name, param, expected):
    assert init.calculate_gain(name, param) == pytest.approx(expected, rel=1e-12)


def test_calculate_gain_rejects_unknown_input():
    with pytest.raises(ValueError, match="unsupported nonlinearity 'swish'"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="negative_slope"):
        init.calculate_gain("leaky_relu", "big")


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=2, max_size=4))
def test_fans_of_conv_and_linear_weights(shape):
    fan_in, fan_out = init._calculate_fan_in_and_fan_out(fresh(shape))
    receptive = int(np.prod(shape[2:]))
    assert (fan_in, fan_out) == (shape[1] * receptive, shape[0] * receptive)


def test_fans_need_two_dimensions():
    with pytest.raises(ValueError, match=r"fewer than 2 dimensions \(got shape \(5,\)\)"):
        init.kaiming_uniform_(fresh((5,)))
    with pytest.raises(ValueError, match="Mode fan_avg not supported"):
        init.kaiming_normal_(fresh((3, 3)), mode="fan_avg")


# Large tensors so that sample statistics are tight: with n = 2**17 samples the relative standard
# error of a sample std is about 1/sqrt(2n) = 0.2%; 3% tolerances never fail by chance.
SHAPE = (256, 128, 2, 2)   # fan_in = 512, fan_out = 1024


@pytest.mark.parametrize("mode, fan", [("fan_in", 512), ("fan_out", 1024)])
@pytest.mark.parametrize("nonlinearity, a", [("relu", 0), ("leaky_relu", math.sqrt(5)), ("tanh", 0)])
def test_kaiming_statistics(mode, fan, nonlinearity, a):
    gain = init.calculate_gain(nonlinearity, a)
    std = gain / math.sqrt(fan)
    tinygrad_cnn.manual_seed(0)
    w = init.kaiming_uniform_(fresh(SHAPE), a=a, mode=mode, nonlinearity=nonlinearity)
    bound = math.sqrt(3) * std
    assert np.abs(w.array).max() <= bound
    assert np.abs(w.array).max() > 0.99 * bound
    assert w.array.std() == pytest.approx(std, rel=0.03)
    w = init.kaiming_normal_(fresh(SHAPE), a=a, mode=mode, nonlinearity=nonlinearity)
    assert w.array.std() == pytest.approx(std, rel=0.03)
    assert abs(w.array.mean()) < 0.03 * std


@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_xavier_statistics(gain):
    std = gain * math.sqrt(2 / (512 + 1024))
    tinygrad_cnn.manual_seed(1)
    w = init.xavier_uniform_(fresh(SHAPE), gain=gain)
    assert np.abs(w.array).max() <= math.sqrt(3) * std
    assert w.array.std() == pytest.approx(std, rel=0.03)
    w = init.xavier_normal_(fresh(SHAPE), gain=gain)
    assert w.array.std() == pytest.approx(std, rel=0.03)


def test_normal_uniform_and_trunc_normal_statistics():
    tinygrad_cnn.manual_seed(2)
    w = init.normal_(fresh((1 << 17,)), mean=3.0, std=0.5)
    assert w.array.mean() == pytest.approx(3.0, abs=0.01) and w.array.std() == pytest.approx(0.5, rel=0.02)
    w = init.uniform_(fresh((1 << 17,)), -2.0, 4.0)
    assert w.array.min() >= -2.0 and w.array.max() <= 4.0
    assert w.array.mean() == pytest.approx(1.0, abs=0.03)
    assert w.array.std() == pytest.approx(6 / math.sqrt(12), rel=0.02)
    w = init.trunc_normal_(fresh((1 << 17,)), mean=0.0, std=1.0, a=-1.0, b=2.0)
    assert w.array.min() >= -1.0 and w.array.max() <= 2.0
    # mean of N(0,1) truncated to [a, b] is (phi(a) - phi(b)) / (Phi(b) - Phi(a))
    phi = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)   # noqa: E731
    Phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))          # noqa: E731
    expected_mean = (phi(-1.0) - phi(2.0)) / (Phi(2.0) - Phi(-1.0))
    assert w.array.mean() == pytest.approx(expected_mean, abs=0.01)
    with pytest.raises(ValueError, match="rejection sampling would not end"):
        init.trunc_normal_(fresh((2,)), mean=0.0, std=1.0, a=10.0, b=11.0)
    with pytest.raises(ValueError, match="a <= b"):
        init.uniform_(fresh((2,)), 1.0, 0.0)


def test_deterministic_fills():
    assert np.all(init.constant_(fresh((2, 3)), 0.25).array == 0.25)
    assert np.all(init.ones_(fresh((4,))).array == 1)
    t = Tensor(np.ones((3, 2), np.float64))
    assert np.all(init.zeros_(t).array == 0)
    assert np.array_equal(init.eye_(fresh((2, 3))).array, np.eye(2, 3))
    with pytest.raises(ValueError, match="2-D"):
        init.eye_(fresh((2, 2, 2)))


def test_init_is_in_place_keeps_dtype_and_records_no_graph():
    p = nn.Parameter(np.zeros((8, 4), dtype=np.float32))
    array = p.array
    with tinygrad_cnn.enable_grad():
        out = init.kaiming_uniform_(p)
    assert out is p and p.array is array and p.dtype == np.float32
    assert p.is_leaf and p.requires_grad and p.grad is None
    assert np.any(array != 0)
    with pytest.raises(TypeError, match="floating point"):
        init.normal_(Tensor(np.zeros(3, np.int64)))


def test_seeded_and_explicit_generators_are_reproducible():
    tinygrad_cnn.manual_seed(123)
    a = init.kaiming_normal_(fresh((5, 7))).numpy().copy()
    tinygrad_cnn.manual_seed(123)
    b = init.kaiming_normal_(fresh((5, 7))).numpy().copy()
    c = init.kaiming_normal_(fresh((5, 7))).numpy().copy()
    assert np.array_equal(a, b) and not np.array_equal(b, c)
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    assert np.array_equal(init.uniform_(fresh(4), generator=g1).array,
                          init.uniform_(fresh(4), generator=g2).array)


def test_init_on_device(device):
    tinygrad_cnn.manual_seed(7)
    cpu = init.xavier_uniform_(fresh((6, 5))).numpy()
    tinygrad_cnn.manual_seed(7)
    on_device = init.xavier_uniform_(Tensor(np.zeros((6, 5), np.float32), device=device))
    assert on_device.device == device
    assert np.array_equal(on_device.numpy(), cpu)


def test_gains_and_default_bounds_match_torch(torch):
    for name, param in [("relu", None), ("tanh", None), ("leaky_relu", 0.2), ("selu", None)]:
        assert init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param))
    w = torch.empty(64, 32, 3, 3)
    torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5))
    ours = init.kaiming_uniform_(fresh((64, 32, 3, 3)), a=math.sqrt(5))
    bound = 1 / math.sqrt(32 * 9)
    assert w.abs().max().item() <= bound and np.abs(ours.array).max() <= bound
    assert ours.array.std() == pytest.approx(w.std().item(), rel=0.05)


# Each init function against PyTorch's, on a weight of shape (out, in, kH, kW) with
# fan_in != fan_out so that a swapped fan shows: the same distribution, judged by the exact
# bounds of the uniform ones and by the sample std (n = 98304: relative standard error 0.23%,
# so 2% never fails by chance but catches any wrong factor such as sqrt(2) or sqrt(3)).
TORCH_INIT_CASES = [
    ("kaiming_uniform_", {}), ("kaiming_uniform_", {"a": math.sqrt(5)}),
    ("kaiming_uniform_", {"mode": "fan_out", "nonlinearity": "relu"}),
    ("kaiming_normal_", {}), ("kaiming_normal_", {"mode": "fan_out", "nonlinearity": "relu"}),
    ("kaiming_normal_", {"a": 0.2}), ("kaiming_normal_", {"nonlinearity": "tanh"}),
    ("xavier_uniform_", {}), ("xavier_uniform_", {"gain": 2.0}),
    ("xavier_normal_", {}), ("xavier_normal_", {"gain": 0.5}),
    ("uniform_", {"a": -0.3, "b": 0.7}), ("normal_", {"mean": 1.0, "std": 0.2}),
    ("trunc_normal_", {"mean": 0.0, "std": 1.0, "a": -0.5, "b": 1.0}),
]


@pytest.mark.parametrize("name, kwargs", TORCH_INIT_CASES)
def test_init_distributions_match_torch(torch, name, kwargs):
    shape = (96, 64, 4, 4)                     # fan_in = 1024, fan_out = 1536
    torch.manual_seed(0)
    theirs = getattr(torch.nn.init, name)(torch.empty(shape), **kwargs).numpy()
    tinygrad_cnn.manual_seed(0)
    ours = getattr(init, name)(fresh(shape), **kwargs).numpy()
    assert ours.std() == pytest.approx(theirs.std(), rel=0.02)
    assert ours.mean() == pytest.approx(theirs.mean(), abs=0.02 * theirs.std() + 1e-12)
    if "uniform" in name or name == "trunc_normal_":
        # both fill the same interval: the extreme samples are within 0.1% of its ends
        assert ours.min() == pytest.approx(theirs.min(), rel=1e-3)
        assert ours.max() == pytest.approx(theirs.max(), rel=1e-3)


@pytest.mark.parametrize("expression", [
    "nn.Linear(300, 200)", "nn.Conv2d(64, 96, 3)", "nn.Conv2d(64, 96, (5, 3), groups=4)",
    "nn.Conv2d(3, 96, 11, stride=4)", "nn.BatchNorm2d(16)", "nn.LayerNorm([4, 5])",
    "nn.BatchNorm1d(8, affine=False)",
])
def test_default_layer_initialisation_matches_torch(torch, expression):
    torch.manual_seed(0)
    theirs = dict(eval(expression, {"nn": torch.nn}).named_parameters())
    tinygrad_cnn.manual_seed(0)
    ours = dict(eval(expression, {"nn": nn}).named_parameters())
    assert list(ours) == list(theirs)
    for name, value in theirs.items():
        a, b = ours[name].numpy(), value.detach().numpy()
        assert a.shape == b.shape and a.dtype == b.dtype, name
        if b.std() == 0:                                       # ones / zeros
            assert np.array_equal(a, b), name
            continue
        # U(-bound, bound): same bound (the largest |value| is within 2% of it even for the
        # 96 biases) and the same spread
        assert np.abs(a).max() <= np.abs(b).max() * 1.02 + 1e-7, name
        assert np.abs(a).max() >= np.abs(b).max() * 0.9, name
        if b.size >= 10000:
            assert a.std() == pytest.approx(b.std(), rel=0.03), name
