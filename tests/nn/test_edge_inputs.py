"""Inputs at the edges of what the ops take: empty batches and float16 on the CPU.

PyTorch's rules, which these follow: an empty batch gives empty results forward and backward
(zero gradients for the parameters, running statistics unchanged), and float16 on the CPU is
computed in float32 and rounded once to float16.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_cnn as tg
import tinygrad_cnn.nn.functional as F
from tinygrad_cnn import Tensor, backend, models, nn

# ------------------------------------------------------------------------------ empty batches

EMPTY_BATCH_LAYERS = {
    "conv": lambda: nn.Conv2d(3, 4, 3, padding=1),
    "conv_strided": lambda: nn.Conv2d(3, 4, 3, stride=2, bias=False),
    "batch_norm_train": lambda: nn.BatchNorm2d(3),
    "batch_norm_eval": lambda: nn.BatchNorm2d(3).eval(),
    "lrn": lambda: nn.LocalResponseNorm(3),
    "max_pool": lambda: nn.MaxPool2d(2),
    "avg_pool": lambda: nn.AvgPool2d(2),
    "adaptive_avg_pool": lambda: nn.AdaptiveAvgPool2d(1),
    "layer_norm": lambda: nn.LayerNorm([8, 8]),
    "group_norm": lambda: nn.GroupNorm(1, 3),
    "dropout": lambda: nn.Dropout(0.5),
    "relu": lambda: nn.ReLU(),
}


@pytest.mark.parametrize("name", sorted(EMPTY_BATCH_LAYERS))
def test_an_empty_batch_gives_empty_results_and_zero_parameter_gradients(name, cpu_backend):
    layer = EMPTY_BATCH_LAYERS[name]()
    buffers = {key: value.numpy().copy() for key, value in layer.named_buffers() if key != "num_batches_tracked"}
    x = Tensor(np.zeros((0, 3, 8, 8), np.float32), requires_grad=True)
    y = layer(x)
    assert y.shape[0] == 0 and y.dtype == np.float32
    y.sum().backward()
    assert x.grad.shape == x.shape
    for key, parameter in layer.named_parameters():
        assert parameter.grad is not None, key
        np.testing.assert_array_equal(parameter.grad.numpy(), 0, err_msg=key)
    for key, value in buffers.items():
        np.testing.assert_array_equal(dict(layer.named_buffers())[key].numpy(), value, err_msg=key)


@pytest.mark.parametrize("name", sorted(EMPTY_BATCH_LAYERS))
def test_an_empty_batch_gives_the_shapes_torch_gives(name, torch_2_13):
    torch = torch_2_13
    ours = EMPTY_BATCH_LAYERS[name]()
    theirs = eval(f"torch.nn.{ours!r}", {"torch": torch})
    if not ours.training:
        theirs.eval()
    x = torch.zeros((0, 3, 8, 8), requires_grad=True)
    assert ours(Tensor(np.zeros((0, 3, 8, 8), np.float32))).shape == tuple(theirs(x).shape)


@pytest.mark.parametrize("factory", [models.resnet20, models.lenet5], ids=["resnet20", "lenet5"])
def test_whole_models_take_an_empty_batch(factory):
    model = factory()
    channels, size = (1, 28) if factory is models.lenet5 else (3, 32)
    out = model(Tensor(np.zeros((0, channels, size, size), np.float32)))
    assert out.shape == (0, 10)
    F.cross_entropy(out, Tensor(np.zeros(0, np.int64)), reduction="sum").backward()
    for key, parameter in model.named_parameters():
        np.testing.assert_array_equal(parameter.grad.numpy(), 0, err_msg=key)


# ------------------------------------------------------------------------------ float16

def _randn(rng, shape):
    return rng.standard_normal(shape).astype(np.float16)


# name -> (op, input shapes); the first input is the one checked for a gradient.
FLOAT16_OPS = {
    "conv2d": (lambda x, w: F.conv2d(x, w, padding=1), [(2, 3, 6, 6), (4, 3, 3, 3)]),
    "conv2d_strided": (lambda x, w: F.conv2d(x, w, stride=2), [(2, 3, 7, 7), (4, 3, 3, 3)]),
    "max_pool2d": (lambda x: F.max_pool2d(x, 2), [(2, 3, 6, 6)]),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 3, stride=2, padding=1), [(2, 3, 6, 6)]),
    "adaptive_max_pool2d": (lambda x: F.adaptive_max_pool2d(x, 2), [(2, 3, 6, 6)]),
    "batch_norm": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), [(4, 3, 5, 5), (3,), (3,)]),
    "local_response_norm": (lambda x: F.local_response_norm(x, 3), [(2, 5, 4, 4)]),
    "cross_entropy": (lambda x: F.cross_entropy(x, Tensor(np.array([0, 1, 2, 3]))), [(4, 5)]),
    "relu": (F.relu, [(4, 5)]),
    "gelu": (F.gelu, [(4, 5)]),
    "dropout": (lambda x: F.dropout(x, 0.0, training=True) * F.dropout(x, 0.3, training=False), [(4, 5)]),
}


@pytest.mark.parametrize("name", sorted(FLOAT16_OPS))
def test_float16_is_computed_in_float32_and_rounded(name, cpu_backend):
    op, shapes = FLOAT16_OPS[name]
    rng = np.random.default_rng(0)
    arrays = [_randn(rng, shape) for shape in shapes]
    half = [Tensor(a, requires_grad=True) for a in arrays]
    single = [Tensor(a.astype(np.float32), requires_grad=True) for a in arrays]
    out_half, out_single = op(*half), op(*single)
    assert out_half.dtype == np.float16
    # Rounding the float32 result once differs from it by half an ulp of float16 at most; the
    # GEMM of the convolution runs in NumPy's float16 matmul, a few ulps.
    np.testing.assert_allclose(out_half.numpy().astype(np.float32), out_single.numpy(), rtol=4e-3, atol=4e-3)
    out_half.sum().backward()
    out_single.sum().backward()
    assert half[0].grad.dtype == np.float16
    np.testing.assert_allclose(half[0].grad.numpy().astype(np.float32), single[0].grad.numpy(),
                               rtol=1e-2, atol=1e-2)


@settings(max_examples=20, deadline=None)
@given(size=st.integers(16, 96), value=st.sampled_from([100.0, 1000.0, 30000.0]))
def test_float16_averages_over_large_maps_do_not_overflow(size, value):
    # size * size * value passes float16's largest value (65504) in every case drawn.
    x = Tensor(np.full((1, 2, size, size), value, np.float16))
    for result in (F.adaptive_avg_pool2d(x, 1), F.avg_pool2d(x, size), x.mean((2, 3)),
                   F.batch_norm(x, None, None, training=True, eps=1e-3) + value):
        np.testing.assert_allclose(result.numpy().astype(np.float64), value, rtol=1e-3)


def test_float16_sums_round_like_torch(torch_2_13):
    torch = torch_2_13
    values = np.random.default_rng(1).standard_normal((3, 700)).astype(np.float16) * 50
    ours = Tensor(values).sum(1).numpy()
    theirs = torch.from_numpy(values).sum(1).numpy()
    np.testing.assert_array_equal(ours, theirs)


def test_every_numba_kernel_takes_float16_as_its_float32_result_rounded():
    pytest.importorskip("numba")
    rng = np.random.default_rng(2)
    x = _randn(rng, (2, 3, 6, 6))
    noise = rng.random((2, 3, 6, 6)).astype(np.float16)
    calls = {
        "im2col": (x, 3, 3, 1, 1, 1, 1, 1, 1, 6, 6),
        "im2col_wide": (x, 3, 3, 1, 1, 1, 1),
        "relu_forward": (x,),
        "erf": (x,),
        "dropout_forward": (x, noise, 0.3),
        "batch_norm_forward": (x.reshape(2, 3, 36), np.ones(3, np.float16), np.zeros(3, np.float16), 1e-5),
        "lrn_forward": (x.reshape(2, 3, 36), 3, 1e-4, 0.75, 1.0),
    }
    for name, args in calls.items():
        fast = backend.kernel(name, impl="numba")
        got = fast(*args)
        want = fast(*(a.astype(np.float32) if isinstance(a, np.ndarray) else a for a in args))
        for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
            assert g.dtype == np.float16, name
            np.testing.assert_array_equal(g, w.astype(np.float16), err_msg=name)
