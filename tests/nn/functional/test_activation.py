"""Activations: gradients (first and second order), kinks, the ReLU and erf kernels, PyTorch
parity, errors."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_cnn as tg
import tinygrad_cnn.nn.functional as F
from tinygrad_cnn import Tensor, backend
from tinygrad_cnn.testing import (arrays, assert_allclose, check_grad, check_gradgrad, shapes,
                                  tensor64)

# Values at least 0.05 away from 0, so a finite-difference step never crosses a ReLU kink.
away_from_zero = st.floats(0.05, 3.0).flatmap(lambda v: st.sampled_from([v, -v]))

ELEMENTWISE = {
    "relu": F.relu,
    "leaky_relu": lambda t: F.leaky_relu(t, 0.2),
    "leaky_relu_steep": lambda t: F.leaky_relu(t, -1.5),
    "sigmoid": F.sigmoid,
    "tanh": F.tanh,
    "gelu": F.gelu,
    "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"),
    "erf": F.erf,
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
@settings(max_examples=8, deadline=None)
@given(x=shapes(1, 3, 1, 4).flatmap(lambda s: arrays(s, elements=away_from_zero)))
def test_elementwise_gradcheck_and_gradgradcheck(name, x):
    fn = ELEMENTWISE[name]
    check_grad(fn, x)
    check_gradgrad(fn, x)


@pytest.mark.parametrize("op", [F.softmax, F.log_softmax])
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_softmax_family_gradcheck_and_gradgradcheck(op, data):
    shape = data.draw(shapes(1, 3, 1, 4))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = data.draw(arrays(shape))
    check_grad(lambda t: op(t, dim), x)
    check_gradgrad(lambda t: op(t, dim), x)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh", "gelu", "gelu_tanh"])
@settings(max_examples=5, deadline=None)
@given(x=shapes(1, 3, 1, 5).flatmap(lambda s: arrays(s, elements=st.floats(-6, 6))))
def test_elementwise_match_torch(torch, name, x):
    TF = torch.nn.functional
    reference = {"relu": TF.relu, "leaky_relu": lambda t: TF.leaky_relu(t, 0.2),
                 "sigmoid": torch.sigmoid, "tanh": torch.tanh, "gelu": TF.gelu,
                 "gelu_tanh": lambda t: TF.gelu(t, approximate="tanh")}[name]
    ours = tensor64(x)
    out = ELEMENTWISE[name](ours)
    theirs = torch.tensor(x, requires_grad=True)
    expected = reference(theirs)
    upstream = np.linspace(-1.0, 2.0, x.size).reshape(x.shape)
    out.backward(Tensor(upstream))
    expected.backward(torch.tensor(upstream))
    assert_allclose(out, expected.detach().numpy(), rtol=1e-12, atol=1e-15)
    # atol: near x = -5 the tanh-GELU gradient is 1 + tanh(u) ~ 1e-7, a cancellation both share
    assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_softmax_family_match_torch(torch, op, data):
    shape = data.draw(shapes(1, 4, 1, 5))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    x = data.draw(arrays(shape, elements=st.floats(-20, 20)))
    ours = tensor64(x)
    out = getattr(F, op)(ours, dim)
    theirs = torch.tensor(x, requires_grad=True)
    expected = getattr(torch, op)(theirs, dim)
    upstream = np.cos(np.arange(x.size)).reshape(x.shape)
    out.backward(Tensor(upstream))
    expected.backward(torch.tensor(upstream))
    assert_allclose(out, expected.detach().numpy(), rtol=1e-12, atol=1e-15)
    assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------- kinks

def test_relu_gradient_at_zero_is_zero():
    x = tensor64(np.array([-1.0, 0.0, -0.0, 2.0]))
    F.relu(x).sum().backward()
    assert_allclose(x.grad, [0.0, 0.0, 0.0, 1.0])


def test_leaky_relu_gradient_at_zero_is_the_slope():
    x = tensor64(np.array([-1.0, 0.0, 2.0]))
    F.leaky_relu(x, 0.1).sum().backward()
    assert_allclose(x.grad, [0.1, 0.1, 1.0])


def test_kinks_match_torch(torch):
    values = np.array([-1.0, 0.0, 1.0])
    for ours_fn, torch_fn in [(F.relu, torch.relu),
                              (lambda t: F.leaky_relu(t, 0.3),
                               lambda t: torch.nn.functional.leaky_relu(t, 0.3))]:
        ours, theirs = tensor64(values), torch.tensor(values, requires_grad=True)
        ours_fn(ours).sum().backward()
        torch_fn(theirs).sum().backward()
        assert_allclose(ours.grad, theirs.grad.numpy())


def test_relu_second_derivative_is_zero_and_graph_stays_differentiable():
    x = tensor64(np.array([-2.0, 0.5, 3.0]))
    (grad,) = _grad_with_graph(lambda t: (F.relu(t) ** 2).sum(), x)
    # d/dx relu(x)^2 = 2 relu(x) [x > 0]; its derivative is 2 [x > 0]
    assert_allclose(grad, [0.0, 1.0, 6.0])
    grad.sum().backward()
    assert_allclose(x.grad, [0.0, 2.0, 2.0])


def _grad_with_graph(fn, x):
    out = fn(x)
    out.backward(create_graph=True)
    grad = x.grad
    x.grad = None
    return (grad,)


# ---------------------------------------------------------------------------- ReLU kernels

# Values with exact zeros of both signs, NaN and infinities among ordinary numbers.
relu_values = st.one_of(st.floats(-5, 5), st.sampled_from([0.0, -0.0, np.nan, np.inf, -np.inf]))


@settings(max_examples=25, deadline=None)
@given(shape=shapes(0, 3, 1, 6), data=st.data(), dtype=st.sampled_from([np.float32, np.float64]),
       large=st.booleans())
def test_relu_numba_kernels_equal_reference(shape, data, dtype, large):
    pytest.importorskip("numba")
    from tinygrad_cnn.kernels.cpu import activation as kernels
    if large:   # past the threshold of the parallel loop
        shape = (kernels.PARALLEL_MIN_ELEMENTS + 5,)
        x = np.random.default_rng(0).standard_normal(shape)
        x[::7] = 0.0
        x[3] = np.nan
        g = np.random.default_rng(1).standard_normal(shape)
    else:
        x = data.draw(arrays(shape, elements=relu_values))
        g = data.draw(arrays(shape, elements=relu_values))
    x, g = x.astype(dtype), g.astype(dtype)
    for name, args in [("relu_forward", (x,)),
                       ("relu_backward", (g, backend.kernel("relu_forward", np)(x)))]:
        fast = backend.kernel(name, np, impl="numba")(*args)
        reference = backend.kernel(name, np, impl="numpy")(*args)
        assert fast.dtype == reference.dtype == dtype and fast.shape == shape, name
        # Bit for bit, NaNs in the same places; +0 and -0 compare equal.
        np.testing.assert_array_equal(fast, reference, err_msg=name)


def test_relu_kernels_follow_pytorch_on_nan():
    relu = backend.kernel("relu_forward", np, impl="numpy")
    relu_backward = backend.kernel("relu_backward", np, impl="numpy")
    x = np.array([np.nan, -1.0, 0.0, 2.0])
    out = relu(x)
    assert np.isnan(out[0]) and out[1:].tolist() == [0.0, 0.0, 2.0]
    # A NaN gradient is blocked where the unit is off, passed where it is on.
    grad = relu_backward(np.array([1.0, np.nan, np.nan, np.nan]), out)
    assert grad[1:3].tolist() == [0.0, 0.0] and np.isnan(grad[3])


def test_relu_backward_is_the_fast_kernel_and_stays_differentiable():
    rng = np.random.default_rng(4)
    x = tg.Tensor(rng.standard_normal((3, 5)), requires_grad=True)
    g = rng.standard_normal((3, 5))
    F.relu(x).backward(tg.Tensor(g))
    np.testing.assert_array_equal(x.grad.numpy(), np.where(x.numpy() > 0, g, 0))
    x.grad = None
    (F.relu(x) * F.relu(x)).sum().backward(create_graph=True)
    assert x.grad.requires_grad
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.maximum(x.numpy(), 0))


# ---------------------------------------------------------------------------- erf

def test_erf_reference_matches_math_erf_to_float64_accuracy():
    xs = np.concatenate([np.linspace(-7, 7, 20001), [0.0, -0.0, 1e-300, -1e-12, 2.0, 6.0, 40.0]])
    expected = np.array([math.erf(v) for v in xs])
    got = backend.kernel("erf", np, impl="numpy")(xs)
    relative = np.abs(got - expected) / np.maximum(np.abs(expected), np.finfo(float).tiny)
    assert relative.max() < 1e-13
    assert np.signbit(got[xs == 0.0]).tolist() == np.signbit(xs[xs == 0.0]).tolist()


def test_erf_reference_special_values():
    erf = backend.kernel("erf", np, impl="numpy")
    got = erf(np.array([np.inf, -np.inf, np.nan]))
    assert got[0] == 1.0 and got[1] == -1.0 and np.isnan(got[2])
    assert erf(np.array([0.5], np.float32)).dtype == np.float32


def test_erf_numba_kernel_on_a_large_array_uses_the_parallel_path():
    pytest.importorskip("numba")
    from tinygrad_cnn.kernels.cpu import activation as kernels
    x = np.linspace(-5, 5, kernels.PARALLEL_MIN_ELEMENTS + 3)
    np.testing.assert_allclose(kernels.erf(x), backend.kernel("erf", np, impl="numpy")(x),
                               rtol=1e-13, atol=1e-300)


def test_gelu_same_on_both_cpu_backends(cpu_backend):
    x = np.linspace(-4, 4, 17)
    expected = x * 0.5 * (1 + np.array([math.erf(v / math.sqrt(2)) for v in x]))
    assert_allclose(F.gelu(tensor64(x)), expected, rtol=1e-13, atol=1e-16)


# ---------------------------------------------------------------------------- stability

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_and_log_softmax_are_finite_for_huge_logits(dtype):
    x = Tensor(np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=dtype))
    assert_allclose(F.softmax(x, 1), [[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]], rtol=1e-6)
    log_probs = F.log_softmax(x, dim=1).numpy()
    assert log_probs.dtype == dtype
    assert_allclose(log_probs, [[0.0, -2e4, -1e4], [-math.log(3)] * 3], rtol=1e-6)


def test_softmax_rows_sum_to_one_and_dtype_argument():
    x = Tensor(np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32))
    out = F.softmax(x, dim=-2, dtype=np.float64)
    assert out.dtype == np.float64
    assert_allclose(out.numpy().sum(axis=-2), np.ones((3, 5)), rtol=1e-12)
    assert_allclose(x.softmax(1), F.softmax(x, 1))


def test_softmax_without_dim_warns_and_uses_pytorch_legacy_choice():
    x = tensor64(np.arange(6.0).reshape(2, 3), requires_grad=False)
    with pytest.warns(UserWarning, match="implicit dimension"):
        out = F.softmax(x)
    assert_allclose(out, F.softmax(x, 1))


# ---------------------------------------------------------------------------- in place

def test_inplace_relu_writes_into_the_input_under_no_grad():
    x = Tensor(np.array([-1.0, 2.0, -3.0]))
    with tg.no_grad():
        out = F.relu(x, inplace=True)
    assert out is x
    assert_allclose(x, [0.0, 2.0, 0.0])
    y = Tensor(np.array([-1.0, 2.0]))
    with tg.no_grad():
        assert F.leaky_relu(y, 0.5, inplace=True) is y
    assert_allclose(y, [-0.5, 2.0])


def test_inplace_relu_while_recording_keeps_the_input_and_the_gradient():
    x = tensor64(np.array([-1.0, 2.0]))
    out = F.relu(x, inplace=True)
    assert out is not x and x.numpy()[0] == -1.0
    out.sum().backward()
    assert_allclose(x.grad, [0.0, 1.0])


# ---------------------------------------------------------------------------- errors

def test_bad_arguments_raise_clear_errors():
    x = Tensor(np.zeros((2, 3)))
    with pytest.raises(IndexError, match=r"softmax: dim 2 is out of range .* 2 dimensions"):
        F.softmax(x, 2)
    with pytest.raises(ValueError, match="gelu: approximate must be 'none' or 'tanh'"):
        F.gelu(x, approximate="fast")
    with pytest.raises(TypeError, match="relu: argument 'input' must be a Tensor"):
        F.relu(np.zeros(3))
    with pytest.raises(TypeError, match="log_softmax: expected a floating-point input"):
        F.log_softmax(Tensor(np.arange(3)), 0)


# ---------------------------------------------------------------------------- devices

@pytest.mark.parametrize("name", sorted(ELEMENTWISE) + ["softmax", "log_softmax"])
def test_same_values_and_gradients_on_every_device(name, device):
    fn = ELEMENTWISE.get(name) or (lambda t: getattr(F, name)(t, 1))
    x = np.random.default_rng(0).normal(size=(3, 5)) * 3
    results = []
    for where in ("cpu", device):
        t = Tensor(x, requires_grad=True, device=where)
        out = fn(t)
        out.backward(Tensor(np.cos(x), device=where))
        results.append((out.to("cpu").numpy(), t.grad.to("cpu").numpy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
