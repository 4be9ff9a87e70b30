"""Winograd F(4x4, 3x3) (``tinygrad_cnn/nn/functional/winograd.py``): the algebra of its
references, and the convolution the sliced path builds from its kernels, against im2col."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tinygrad_cnn import backend
from tinygrad_cnn._arguments import WindowGeometry
from tinygrad_cnn.kernels import sliced_conv
from tinygrad_cnn.kernels.cpu import _workers
from tinygrad_cnn.nn.functional import winograd
from tinygrad_cnn.testing import assert_allclose


def _reference(name):
    return backend.kernel(name, np, impl="numpy")


@st.composite
def winograd_convolutions(draw, max_side=12):
    """A 3x3, stride-1 convolution Winograd runs: padding 0-2 per axis, any image size."""
    pad_h, pad_w = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, 3 - 2 * pad_h), max_side))
    w = draw(st.integers(max(1, 3 - 2 * pad_w), max_side))
    return dict(n=draw(st.integers(1, 4)), c_in=draw(st.integers(1, 5)),
                c_out=draw(st.integers(1, 5)), size=(h, w), padding=(pad_h, pad_w),
                seed=draw(st.integers(0, 2**16)))


def _problem(case, dtype=np.float64):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c_in"]) + case["size"]).astype(dtype)
    weight = rng.standard_normal((case["c_out"], case["c_in"], 3, 3)).astype(dtype)
    geometry = WindowGeometry.build("conv2d", x.shape, (3, 3), (1, 1), case["padding"], (1, 1))
    g = rng.standard_normal((case["n"], case["c_out"]) + geometry.out).astype(dtype)
    return x, weight, g, geometry


@settings(max_examples=40, deadline=None)
@given(case=winograd_convolutions())
def test_the_three_transforms_compute_the_convolution(case):
    # y = A^T [U (.) V] A, tile by tile: the references alone, in float64, equal im2col.
    x, weight, _, geometry = _problem(case)
    tiles = _reference("winograd_input_tiles")(x, *geometry.padding, *geometry.out)
    products = np.matmul(winograd.filter_tiles(weight), tiles)
    y = _reference("winograd_output_tiles")(products, x.shape[0], *geometry.out)
    expected = _reference("conv2d_forward")(x, weight, None, geometry, 1)
    assert_allclose(y, expected, rtol=1e-11, atol=1e-11)


@settings(max_examples=40, deadline=None)
@given(case=winograd_convolutions())
def test_gradient_tiles_and_filter_adjoint_give_the_weight_gradient(case):
    # dW = G^T (dM V^T) G with dM = A dY A^T, summed over all tiles.
    x, weight, g, geometry = _problem(case)
    tiles = _reference("winograd_input_tiles")(x, *geometry.padding, *geometry.out)
    grad_tiles = _reference("winograd_grad_tiles")(g, *geometry.out)
    grad_w = winograd.filter_tiles_adjoint(np.matmul(grad_tiles, tiles.transpose(0, 2, 1)))
    _, expected, _ = _reference("conv2d_backward")(g, x, weight, geometry, 1, (False, True, False))
    assert_allclose(grad_w, expected, rtol=1e-11, atol=1e-11)


@settings(max_examples=25, deadline=None)
@given(case=winograd_convolutions(), data=st.data())
def test_gradient_tiles_and_filter_adjoint_are_adjoints(case, data):
    # <output(M), g> = <M, grad_tiles(g)> and <filter_tiles(w), dU> = <w, adjoint(dU)>.
    x, weight, g, geometry = _problem(case)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    tiles_h, tiles_w = winograd.tile_counts(*geometry.out)
    m = rng.standard_normal((36, case["c_out"], case["n"] * tiles_h * tiles_w))
    y = _reference("winograd_output_tiles")(m, case["n"], *geometry.out)
    grad_m = _reference("winograd_grad_tiles")(g, *geometry.out)
    assert np.isclose(np.vdot(y, g), np.vdot(m, grad_m), rtol=1e-11, atol=1e-9)
    grad_u = rng.standard_normal((36,) + weight.shape[:2])
    assert np.isclose(np.vdot(winograd.filter_tiles(weight), grad_u),
                      np.vdot(weight, winograd.filter_tiles_adjoint(grad_u)), rtol=1e-11, atol=1e-9)


@pytest.mark.parametrize("chunk_bytes", [1, 1 << 30])
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])   # the patch is constant
@given(case=winograd_convolutions(), epilogue=st.sampled_from(["none", "relu", "residual"]),
       needs=st.sampled_from([(True, True, True), (True, False, False), (False, True, True)]))
def test_sliced_winograd_convolution_equals_the_reference(monkeypatch, chunk_bytes, case, epilogue,
                                                          needs):
    # The fast kernels (Numba tiles, slices of one image or the whole batch) against the
    # textbook im2col references, forward with each epilogue and backward.
    pytest.importorskip("numba")
    monkeypatch.setattr(_workers, "CPU_CHUNK_BYTES", chunk_bytes)
    x, weight, g, geometry = _problem(case)
    assert sliced_conv.winograd_applies(geometry, 1, np)
    bias = np.random.default_rng(case["seed"] + 1).standard_normal(case["c_out"])
    options = {"none": {}, "relu": dict(relu=True), "residual": dict(residual=g, relu=True)}[epilogue]
    forward = backend.kernel("conv2d_forward", np, impl="numba")
    y = forward(x, weight, bias, geometry, 1, **options)
    expected = _reference("conv2d_forward")(x, weight, bias, geometry, 1, **options)
    assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    backward = backend.kernel("conv2d_backward", np, impl="numba")
    got = backward(g, x, weight, geometry, 1, needs)
    for a, b in zip(got, _reference("conv2d_backward")(g, x, weight, geometry, 1, needs)):
        assert (a is None) == (b is None)
        if b is not None:
            assert_allclose(a, b, rtol=1e-10, atol=1e-10)


# ResNet-20's three layer shapes (a smaller batch): the float32 error documented in
# winograd.py, relative to the largest magnitude of each result.
@pytest.mark.parametrize("channels, side", [(16, 32), (32, 16), (64, 8)])
def test_float32_error_on_resnet_layers(channels, side):
    pytest.importorskip("numba")
    rng = np.random.default_rng(channels)
    x = rng.standard_normal((4, channels, side, side))
    weight = rng.standard_normal((channels, channels, 3, 3)) * np.sqrt(2 / (9 * channels))
    geometry = WindowGeometry.build("conv2d", x.shape, (3, 3), (1, 1), (1, 1), (1, 1))
    g = rng.standard_normal((4, channels, side, side))
    exact = [_reference("conv2d_forward")(x, weight, None, geometry, 1),
             *_reference("conv2d_backward")(g, x, weight, geometry, 1, (True, True, False))[:2]]
    f32 = [a.astype(np.float32) for a in (x, weight, g)]
    got = [backend.kernel("conv2d_forward", np, impl="numba")(f32[0], f32[1], None, geometry, 1),
           *backend.kernel("conv2d_backward", np, impl="numba")(f32[2], f32[0], f32[1], geometry,
                                                                1, (True, True, False))[:2]]
    for name, a, b in zip(["y", "dx", "dW"], got, exact):
        error = np.abs(a - b).max() / np.abs(b).max()
        assert error < 3e-5, f"{name}: relative error {error:.2e}"


@pytest.mark.parametrize("kernel, stride, padding, dilation, groups, applies", [
    ((3, 3), (1, 1), (1, 1), (1, 1), 1, True),
    ((3, 3), (1, 1), (0, 2), (1, 1), 1, True),
    ((3, 3), (1, 1), (3, 1), (1, 1), 1, False),     # dx would need padding -1
    ((3, 3), (2, 2), (1, 1), (1, 1), 1, False),
    ((3, 3), (1, 1), (2, 2), (2, 2), 1, False),
    ((3, 3), (1, 1), (1, 1), (1, 1), 2, False),
    ((5, 5), (1, 1), (2, 2), (1, 1), 1, False),
    ((3, 1), (1, 1), (1, 0), (1, 1), 1, False),
])
def test_where_winograd_applies(kernel, stride, padding, dilation, groups, applies):
    geometry = WindowGeometry.build("conv2d", (2, 4, 9, 9), kernel, stride, padding, dilation)
    assert sliced_conv.winograd_applies(geometry, groups, np) is applies
