"""Up-sampling without weights: max_unpool2d / MaxUnpool2d and interpolate / Upsample."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_cnn
import tinygrad_cnn.nn.functional as F
from tinygrad_cnn import nn
from tinygrad_cnn.nn.functional.upsampling import interpolation_matrix
from tinygrad_cnn.testing import (
    assert_allclose, check_grad, check_gradgrad, distinct_arrays, pool2d_settings,
)

Tensor = tinygrad_cnn.Tensor


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


# ----------------------------------------------------------------------------- max unpooling

def unpool_settings():
    """Pooling settings whose windows do not overlap (stride >= kernel), so every pooled
    value has its own index, as in an encoder-decoder."""
    return pool2d_settings(max_dilation=1, allow_ceil_mode=False).filter(
        lambda s: all(st_ >= k for st_, k in zip(s["stride"], s["kernel_size"])))


def pooled(s, seed=0):
    shape = s["input_shape"]
    x = np.random.default_rng(seed).permutation(np.arange(np.prod(shape), dtype=np.float64))
    values, indices = F.max_pool2d(Tensor(x.reshape(shape)), s["kernel_size"], s["stride"],
                                   s["padding"], return_indices=True)
    return values.numpy(), indices


@settings(max_examples=30, deadline=None)
@given(s=unpool_settings())
def test_unpool_puts_every_value_back_where_it_was(s):
    values, indices = pooled(s)
    out = F.max_unpool2d(Tensor(values), indices, s["kernel_size"], s["stride"], s["padding"],
                         output_size=s["input_shape"][2:]).numpy()
    assert out.shape == s["input_shape"]
    n, c = values.shape[:2]
    flat = out.reshape(n, c, -1)
    for i in range(n):
        for j in range(c):
            np.testing.assert_array_equal(flat[i, j, indices.numpy()[i, j].ravel()],
                                          values[i, j].ravel())
    assert np.count_nonzero(out) == np.count_nonzero(values)   # zeros everywhere else


@settings(max_examples=20, deadline=None)
@given(s=unpool_settings())
def test_unpool_gradients_float64(s):
    values, indices = pooled(s)
    kw = dict(kernel_size=s["kernel_size"], stride=s["stride"], padding=s["padding"],
              output_size=s["input_shape"][2:])
    check_grad(lambda x: F.max_unpool2d(x, indices, **kw), values)
    check_gradgrad(lambda x: F.max_unpool2d(x, indices, **kw), values)


@settings(max_examples=20, deadline=None)
@given(s=unpool_settings())
def test_unpool_matches_torch(s, torch):
    values, indices = pooled(s)
    size = s["input_shape"][2:]
    x = Tensor(values, requires_grad=True)
    ours = F.max_unpool2d(x, indices, s["kernel_size"], s["stride"], s["padding"], output_size=size)
    tx = torch.tensor(values, requires_grad=True)
    theirs = torch.nn.functional.max_unpool2d(tx, torch.tensor(indices.numpy()), s["kernel_size"],
                                              s["stride"], s["padding"], output_size=size)
    assert_allclose(ours, theirs.detach().numpy())
    g = np.random.default_rng(1).standard_normal(ours.shape)
    ours.backward(Tensor(g))
    theirs.backward(torch.tensor(g))
    assert_allclose(x.grad, tx.grad.numpy())


def test_unpool_default_size_module_and_unbatched():
    x = np.arange(32, dtype=np.float64).reshape(2, 4, 4)
    pool, unpool = nn.MaxPool2d(2, return_indices=True), nn.MaxUnpool2d(2)
    values, indices = pool(Tensor(x))
    out = unpool(values, indices)
    assert out.shape == (2, 4, 4)
    expected = np.zeros_like(x)
    expected[:, 1::2, 1::2] = x[:, 1::2, 1::2]
    assert_allclose(out, expected)


@pytest.mark.parametrize("call, message", [
    (lambda v, i: F.max_unpool2d(v, i.numpy(), 2), "integer Tensor"),
    (lambda v, i: F.max_unpool2d(v, Tensor(i.numpy()[:, :, :1]), 2), "shape"),
    (lambda v, i: F.max_unpool2d(v, Tensor(i.numpy() + 100), 2), "[0, 16)"),
    (lambda v, i: F.max_unpool2d(v, i, 2, output_size=(7, 4)), "output_size"),
])
def test_unpool_bad_arguments_are_named(call, message):
    values, indices = F.max_pool2d(Tensor(np.random.default_rng(0).standard_normal((1, 2, 4, 4))),
                                   2, return_indices=True)
    with pytest.raises((TypeError, ValueError), match="max_unpool2d") as info:
        call(values, indices)
    assert message in str(info.value)


# ----------------------------------------------------------------------------- interpolation

@st.composite
def interpolate_settings(draw):
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 6)),
             draw(st.integers(1, 6)))
    mode = draw(st.sampled_from(["nearest", "bilinear"]))
    align_corners = draw(st.booleans()) if mode == "bilinear" else None
    if draw(st.booleans()):
        resize = dict(size=(draw(st.integers(1, 9)), draw(st.integers(1, 9))))
    else:
        factors = st.sampled_from([0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0])
        resize = dict(scale_factor=(draw(factors), draw(factors)))
        if min(int(s * f) for s, f in zip(shape[2:], resize["scale_factor"])) < 1:
            resize = dict(scale_factor=(2.0, 3.0))
    return dict(shape=shape, mode=mode, align_corners=align_corners, **resize)


def call_interpolate(s):
    kw = {k: v for k, v in s.items() if k != "shape"}
    return lambda x: F.interpolate(x, **kw)


@settings(max_examples=40, deadline=None)
@given(s=interpolate_settings())
def test_interpolate_matches_torch(s, torch):
    x = np.random.default_rng(0).standard_normal(s["shape"])
    xt = Tensor(x, requires_grad=True)
    ours = call_interpolate(s)(xt)
    kw = {k: v for k, v in s.items() if k != "shape"}
    tx = torch.tensor(x, requires_grad=True)
    theirs = torch.nn.functional.interpolate(tx, **kw)
    assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = np.random.default_rng(1).standard_normal(ours.shape)
    ours.backward(Tensor(g))
    theirs.backward(torch.tensor(g))
    assert_allclose(xt.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(s=interpolate_settings())
def test_interpolate_gradients_float64(s):
    x = np.random.default_rng(0).standard_normal(s["shape"])
    check_grad(call_interpolate(s), x)


def test_interpolate_second_derivatives():
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 4))
    check_gradgrad(lambda t: F.interpolate(t, size=(5, 7), mode="bilinear"), x)


def test_bilinear_rows_are_convex_combinations_and_keep_linear_ramps():
    for align in (False, True):
        a = interpolation_matrix(5, 12, "bilinear", align)
        assert_allclose(a.sum(1), np.ones(12))
        assert (a >= 0).all() and ((a > 0).sum(1) <= 2).all()
    # align_corners=True maps the corners onto each other, so a ramp stays an exact ramp.
    ramp = np.linspace(0, 1, 5)
    assert_allclose(interpolation_matrix(5, 9, "bilinear", True) @ ramp, np.linspace(0, 1, 9),
                    atol=1e-15)


def test_nearest_doubling_repeats_pixels():
    x = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    out = nn.Upsample(scale_factor=2)(Tensor(x))
    assert out.dtype == np.float32
    assert_allclose(out, x.repeat(2, axis=2).repeat(2, axis=3))


def test_upsampling_module_names_match_torch(torch):
    assert repr(nn.MaxUnpool2d(2)) == repr(torch.nn.MaxUnpool2d(2))
    assert repr(nn.Upsample(scale_factor=2, mode="bilinear")) == repr(
        torch.nn.Upsample(scale_factor=2, mode="bilinear"))
    x = np.random.default_rng(0).standard_normal((1, 2, 3, 4))
    assert_allclose(nn.UpsamplingBilinear2d(scale_factor=2)(Tensor(x)),
                    torch.nn.UpsamplingBilinear2d(scale_factor=2)(torch.tensor(x)).numpy(),
                    rtol=1e-10, atol=1e-12)
    assert_allclose(nn.UpsamplingNearest2d(size=(5, 5))(Tensor(x)),
                    torch.nn.UpsamplingNearest2d(size=(5, 5))(torch.tensor(x)).numpy())


@pytest.mark.parametrize("kwargs, message", [
    (dict(size=4, mode="bicubic"), "mode"),
    (dict(size=4, mode="nearest", align_corners=True), "align_corners"),
    (dict(), "exactly one"),
    (dict(size=4, scale_factor=2), "exactly one"),
    (dict(scale_factor=0.1), "output size"),
    (dict(scale_factor=-1.0), "positive"),
])
def test_interpolate_bad_arguments_are_named(kwargs, message):
    with pytest.raises((TypeError, ValueError), match="interpolate") as info:
        F.interpolate(Tensor(np.ones((1, 1, 3, 3))), **kwargs)
    assert message in str(info.value)


def test_same_results_on_every_device(device):
    """Forward and input gradient of the three up-sampling ops, on the device and on the CPU."""
    from tinygrad_cnn import backend
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 6, 6))
    w = rng.standard_normal((4, 3, 3, 3))
    values, indices = F.max_pool2d(Tensor(x), 2, return_indices=True)
    cases = [
        (lambda t: F.conv_transpose2d(t, Tensor(w, device=t.device), stride=2, padding=1,
                                      output_padding=1), x),
        (lambda t: F.interpolate(t, scale_factor=2, mode="bilinear"), x),
        (lambda t: F.interpolate(t, size=(9, 4), mode="nearest"), x),
        (lambda t: F.max_unpool2d(t, Tensor(indices.numpy(), device=t.device), 2), values.numpy()),
    ]
    for op, array in cases:
        results = []
        for where in ("cpu", device):
            t = Tensor(array, device=where, requires_grad=True)
            out = op(t)
            out.backward(Tensor(np.ones(out.shape), device=where))
            results.append((out.numpy(), t.grad.numpy()))
        assert_allclose(results[1][0], results[0][0], rtol=1e-10, atol=1e-12)
        assert_allclose(results[1][1], results[0][1], rtol=1e-10, atol=1e-12)
