"""Dropout: kernel == reference, mask statistics, scaling, eval identity, seeding, gradients."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_cnn as tg
import tinygrad_cnn.nn.functional as F
from tinygrad_cnn import Tensor, backend
from tinygrad_cnn.testing import arrays, assert_allclose, check_grad, check_gradgrad, shapes

probabilities = st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0])


def test_numba_kernel_parallel_path_and_non_finite_inputs():
    pytest.importorskip("numba")
    from tinygrad_cnn.kernels.cpu import dropout as kernels
    rng = np.random.default_rng(1)
    x = rng.normal(size=kernels.PARALLEL_MIN_ELEMENTS + 5)
    x[:3] = [np.nan, np.inf, -np.inf]
    noise = rng.random(x.shape)
    noise[:3] = 0.0   # dropped: NaN * 0 stays NaN, inf * 0 is NaN, as x * mask in the reference
    fast = kernels.dropout_forward(x, noise, 0.3)
    with np.errstate(invalid="ignore"):
        ref = backend.kernel("dropout_forward", np, impl="numpy")(x, noise, 0.3)
    np.testing.assert_array_equal(fast[0], ref[0])
    np.testing.assert_array_equal(fast[1], ref[1])


def _binomial_bound(n, p, sigmas=6.0):
    return sigmas * math.sqrt(n * p * (1 - p)) / n


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_fraction_dropped_is_p_and_kept_values_are_scaled(p, cpu_backend):
    x = Tensor(np.full((200, 500), 3.0, dtype=np.float32))
    out = F.dropout(x, p).numpy()
    dropped = out == 0
    assert abs(dropped.mean() - p) < _binomial_bound(out.size, p)
    np.testing.assert_allclose(out[~dropped], np.float32(3.0) / np.float32(1 - p), rtol=1e-6)
    # Inverted dropout keeps the expectation: the mean stays near the input.
    assert abs(out.mean() - 3.0) < 3.0 * _binomial_bound(out.size, p) / (1 - p)
    assert out.dtype == np.float32


def test_drops_are_independent_of_position():
    # Each column (and row) should see about the same dropout rate: no striping.
    out = F.dropout(Tensor(np.ones((1000, 40))), 0.5).numpy()
    per_column = (out == 0).mean(axis=0)
    assert np.all(np.abs(per_column - 0.5) < _binomial_bound(1000, 0.5))


def test_eval_mode_and_p_zero_return_the_input_itself():
    x = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    assert F.dropout2d(Tensor(np.ones((1, 2, 3, 3))), 0.5, training=False).numpy().sum() == 18


def test_p_one_gives_zeros_and_zero_gradient():
    x = Tensor(np.ones((3, 4)), requires_grad=True)
    out = F.dropout(x, 1.0)
    assert_allclose(out, np.zeros((3, 4)))
    out.sum().backward()
    assert_allclose(x.grad, np.zeros((3, 4)))


def test_gradient_is_the_same_mask_scaled():
    x = Tensor(np.random.default_rng(0).uniform(1, 2, size=(50, 20)), requires_grad=True)
    out = F.dropout(x, 0.4)
    out.backward(Tensor(np.full((50, 20), 2.0)))
    expected = 2.0 * (out.numpy() != 0) / 0.6
    assert_allclose(x.grad, expected, rtol=1e-12)


@settings(max_examples=8, deadline=None)
@given(x=shapes(1, 3, 1, 5).flatmap(arrays), p=st.sampled_from([0.2, 0.5]))
def test_gradcheck_with_a_fixed_mask(x, p):
    def fn(t):
        tg.manual_seed(7)     # the same mask at every evaluation
        return F.dropout(t, p)

    check_grad(fn, x)
    check_gradgrad(fn, x)


def test_manual_seed_reproduces_the_mask_and_seeds_differ(cpu_backend):
    x = Tensor(np.ones((64, 64), dtype=np.float32))
    tg.manual_seed(123)
    first = F.dropout(x, 0.5).numpy()
    second = F.dropout(x, 0.5).numpy()
    tg.manual_seed(123)
    again = F.dropout(x, 0.5).numpy()
    tg.manual_seed(124)
    other = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, other)


def test_rng_state_round_trip_reproduces_the_mask():
    x = Tensor(np.ones(1000))
    state = tg.get_rng_state()
    first = F.dropout(x, 0.3).numpy()
    tg.set_rng_state(state)
    np.testing.assert_array_equal(F.dropout(x, 0.3).numpy(), first)


def test_numpy_and_numba_backends_give_the_same_dropout():
    pytest.importorskip("numba")
    x = Tensor(np.random.default_rng(3).normal(size=(30, 30)).astype(np.float32))
    outputs = []
    for name in ("numpy", "numba"):
        with backend.cpu_backend(name):
            tg.manual_seed(5)
            outputs.append(F.dropout(x, 0.35).numpy())
    np.testing.assert_array_equal(*outputs)


@pytest.mark.parametrize("op", [F.dropout, F.dropout2d])
def test_inplace_writes_into_the_input_unless_the_graph_needs_it(op):
    x = Tensor(np.ones((10, 10, 2, 2)))
    with tg.no_grad():
        out = op(x, 0.5, inplace=True)
    assert out is x and (x.numpy() == 0).any() and (x.numpy() == 2).any()
    # Grad mode on, but nothing to differentiate: written in place, as PyTorch does.
    z = Tensor(np.ones((10, 10, 2, 2)))
    out = op(z, 0.5, inplace=True)
    assert out is z and (z.numpy() == 0).any() and (z.numpy() == 2).any()
    y = Tensor(np.ones((10, 10, 2, 2)), requires_grad=True)
    out = op(y, 0.5, inplace=True)
    assert out is not y and np.all(y.numpy() == 1)


# ---------------------------------------------------------------------------- dropout2d

@pytest.mark.parametrize("shape", [(8, 16, 3, 4), (16, 2, 5)])
def test_dropout2d_zeroes_whole_channels(shape):
    x = Tensor(np.ones(shape))
    out = F.dropout2d(x, 0.5).numpy()
    per_channel = out.reshape(shape[:-2] + (-1,))
    constant = per_channel.min(axis=-1) == per_channel.max(axis=-1)
    assert constant.all()
    values = set(np.unique(per_channel))
    assert values == {0.0, 2.0}


def test_dropout2d_statistics_and_gradient():
    x = Tensor(np.ones((100, 50, 2, 2)), requires_grad=True)
    out = F.dropout2d(x, 0.3)
    dropped = out.numpy()[:, :, 0, 0] == 0
    assert abs(dropped.mean() - 0.3) < _binomial_bound(dropped.size, 0.3)
    out.sum().backward()
    assert_allclose(x.grad, out.numpy())   # input of ones: gradient = mask / (1 - p) = output

    def fn(t):
        tg.manual_seed(11)
        return F.dropout2d(t, 0.5)

    check_grad(fn, np.random.default_rng(0).normal(size=(2, 3, 2, 2)))


# ---------------------------------------------------------------------------- errors

@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_probability_outside_unit_interval_is_rejected(p):
    with pytest.raises(ValueError, match=rf"dropout: dropout probability has to be between 0 and 1, but got p={p}"):
        F.dropout(Tensor(np.ones(3)), p)
    with pytest.raises(ValueError, match="dropout2d"):
        F.dropout2d(Tensor(np.ones((1, 1, 2, 2))), p)


def test_other_bad_arguments():
    with pytest.raises(TypeError, match="dropout: argument 'input' must be a Tensor"):
        F.dropout(np.ones(3))
    with pytest.raises(TypeError, match="dropout: p must be a number"):
        F.dropout(Tensor(np.ones(3)), "0.5")
    with pytest.raises(ValueError, match=r"dropout2d: expected a 3-D .* got shape \(2, 3\)"):
        F.dropout2d(Tensor(np.ones((2, 3))))


def test_dropout_on_every_device(device):
    x = Tensor(np.ones((100, 100), dtype=np.float32), requires_grad=True, device=device)
    out = F.dropout(x, 0.25)
    assert out.device == device
    values = out.to("cpu").numpy()
    assert abs((values == 0).mean() - 0.25) < _binomial_bound(values.size, 0.25)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.to("cpu").numpy(), values)
    tg.manual_seed(9)
    first = F.dropout(x, 0.5).to("cpu").numpy()
    tg.manual_seed(9)
    np.testing.assert_array_equal(F.dropout(x, 0.5).to("cpu").numpy(), first)
