"""Every basic op: forward against NumPy, gradcheck and gradgradcheck over drawn shapes."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinygrad_cnn as tg
from tinygrad_cnn import Tensor
from tinygrad_cnn.testing import (arrays, broadcastable_shapes, check_grad, check_gradgrad,
                                  distinct_arrays, non_contiguous, shapes, tensor64)

FAST = settings(max_examples=15, deadline=None)

# name -> (tinygrad_cnn op, NumPy reference, input strategy transform)
BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / (b * b + 0.5), lambda a, b: a / (b * b + 0.5)),
    "pow": (lambda a, b: (a * a + 0.5) ** b, lambda a, b: (a * a + 0.5) ** b),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@FAST
@given(data=st.data())
def test_binary_ops_broadcast(name, data):
    op, reference = BINARY[name]
    shape_a, shape_b = data.draw(broadcastable_shapes())
    a = data.draw(arrays(shape_a))
    b = data.draw(arrays(shape_b))
    out = op(tensor64(a, False), tensor64(b, False))
    np.testing.assert_allclose(out.numpy(), reference(a, b), rtol=1e-12)
    check_grad(op, a, b)
    check_gradgrad(op, a, b)


@pytest.mark.parametrize("name", ["maximum", "minimum"])
@FAST
@given(data=st.data())
def test_maximum_minimum(name, data):
    shape = data.draw(shapes(max_dims=3))
    pair = data.draw(distinct_arrays((2,) + shape))
    a, b = pair[0], pair[1]
    op = (lambda x, y: x.maximum(y)) if name == "maximum" else (lambda x, y: x.minimum(y))
    np.testing.assert_array_equal(op(Tensor(a), Tensor(b)).numpy(), getattr(np, name)(a, b))
    check_grad(op, a, b)


UNARY = {
    "neg": (lambda x: -x, np.negative, lambda x: x),
    "exp": (lambda x: x.exp(), np.exp, lambda x: x),
    "log": (lambda x: x.log(), np.log, lambda x: np.abs(x) + 0.5),
    "sqrt": (lambda x: x.sqrt(), np.sqrt, lambda x: np.abs(x) + 0.5),
    "abs": (lambda x: x.abs(), np.abs, lambda x: np.where(np.abs(x) < 0.05, 0.3, x)),
    "tanh": (lambda x: x.tanh(), np.tanh, lambda x: x),
    "sigmoid": (lambda x: x.sigmoid(), lambda x: 1 / (1 + np.exp(-x)), lambda x: x),
    "relu": (lambda x: x.relu(), lambda x: np.maximum(x, 0),
             lambda x: np.where(np.abs(x) < 0.05, 0.3, x)),
    "clamp": (lambda x: x.clamp(-1.0, 1.0), lambda x: np.clip(x, -1, 1),
              lambda x: np.where(np.abs(np.abs(x) - 1) < 0.05, 0.3, x)),
    "square": (lambda x: x ** 2, np.square, lambda x: x),
    "rsqrt_pow": (lambda x: x ** -0.5, lambda x: x ** -0.5, lambda x: np.abs(x) + 0.5),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@FAST
@given(data=st.data())
def test_unary_ops(name, data):
    op, reference, domain = UNARY[name]
    x = domain(data.draw(shapes(min_dims=0, max_dims=3).flatmap(arrays)))
    np.testing.assert_allclose(op(tensor64(x, False)).numpy(), reference(x), rtol=1e-12)
    check_grad(op, x)
    if name not in ("relu", "abs", "clamp"):
        check_gradgrad(op, x)


def test_relu_gradient_at_zero_is_zero():
    x = Tensor(np.array([0.0, 1.0, -1.0]), requires_grad=True)
    x.relu().sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.0, 1.0, 0.0])


@FAST
@given(data=st.data())
def test_sum_mean_var_over_dims(data):
    shape = data.draw(shapes(min_dims=1, max_dims=4, min_side=2))
    x = data.draw(arrays(shape))
    dim = data.draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1),
                              st.lists(st.integers(0, len(shape) - 1), min_size=1,
                                       max_size=len(shape), unique=True).map(tuple)))
    keepdim = data.draw(st.booleans())
    axis = dim if dim is None or isinstance(dim, int) else tuple(dim)
    t = tensor64(x, False)
    np.testing.assert_allclose(t.sum(dim, keepdim).numpy(), x.sum(axis=axis, keepdims=keepdim))
    np.testing.assert_allclose(t.mean(dim, keepdim).numpy(), x.mean(axis=axis, keepdims=keepdim))
    np.testing.assert_allclose(t.var(dim, keepdim=keepdim).numpy(),
                               x.var(axis=axis, ddof=1, keepdims=keepdim), rtol=1e-10, atol=1e-12)
    check_grad(lambda u: u.sum(dim, keepdim), x)
    check_grad(lambda u: u.mean(dim, keepdim), x)
    check_grad(lambda u: u.var(dim, keepdim=keepdim), x)
    check_gradgrad(lambda u: u.var(dim, keepdim=keepdim), x)


@FAST
@given(data=st.data())
def test_max_min_along_dim_returns_values_and_indices(data):
    shape = data.draw(shapes(min_dims=1, max_dims=3))
    x = data.draw(distinct_arrays(shape))
    dim = data.draw(st.integers(0, len(shape) - 1))
    keepdim = data.draw(st.booleans())
    values, indices = tensor64(x, False).max(dim, keepdim)
    np.testing.assert_array_equal(values.numpy(), x.max(axis=dim, keepdims=keepdim))
    np.testing.assert_array_equal(indices.numpy(), np.argmax(x, axis=dim) if not keepdim
                                  else np.expand_dims(np.argmax(x, axis=dim), dim))
    assert indices.dtype == np.int64
    check_grad(lambda u: u.max(dim, keepdim).values, x)
    check_grad(lambda u: u.min(dim, keepdim).values, x)
    check_grad(lambda u: u.max(), x)
    check_grad(lambda u: u.amin(dim), x)


def test_max_ties_send_gradient_to_first_maximum():
    x = Tensor(np.array([[1.0, 3.0, 3.0]]), requires_grad=True)
    x.max(1).values.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[0.0, 1.0, 0.0]])


@FAST
@given(data=st.data())
def test_shape_ops(data):
    shape = data.draw(shapes(min_dims=2, max_dims=4))
    x = data.draw(arrays(shape))
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    t = tensor64(x, False)
    np.testing.assert_array_equal(t.permute(*perm).numpy(), x.transpose(perm))
    np.testing.assert_array_equal(t.transpose(0, -1).numpy(), np.swapaxes(x, 0, -1))
    np.testing.assert_array_equal(t.reshape(-1).numpy(), x.reshape(-1))
    np.testing.assert_array_equal(t.flatten(1).numpy(), x.reshape(x.shape[0], -1))
    np.testing.assert_array_equal(t.unsqueeze(1).squeeze(1).numpy(), x)
    check_grad(lambda u: u.permute(*perm) * Tensor(np.arange(x.size, dtype=float)
                                                  .reshape(x.transpose(perm).shape)), x)
    check_grad(lambda u: u.reshape(x.shape[0], -1).transpose(0, 1), x)
    check_grad(lambda u: u.unsqueeze(0).expand(3, *x.shape), x)
    check_gradgrad(lambda u: u.unsqueeze(0).expand(2, *x.shape).permute(*range(len(shape), -1, -1)), x)


@FAST
@given(data=st.data())
def test_indexing_basic_and_integer_arrays(data):
    shape = data.draw(shapes(min_dims=2, max_dims=3, min_side=2))
    x = data.draw(arrays(shape))
    rows = data.draw(st.lists(st.integers(0, shape[0] - 1), min_size=1, max_size=5))
    t = tensor64(x, False)
    np.testing.assert_array_equal(t[1:, ::2].numpy(), x[1:, ::2])
    np.testing.assert_array_equal(t[rows].numpy(), x[rows])
    np.testing.assert_array_equal(t[..., 0].numpy(), x[..., 0])
    check_grad(lambda u: u[1:, ::2], x)
    check_grad(lambda u: u[rows], x)                # repeated rows accumulate
    check_grad(lambda u: u[Tensor(x > 0)], x)
    check_gradgrad(lambda u: u[rows] * u[rows], x)


@FAST
@given(data=st.data())
def test_cat_stack_pad(data):
    shape = data.draw(shapes(min_dims=1, max_dims=3))
    a, b = data.draw(arrays(shape)), data.draw(arrays(shape))
    dim = data.draw(st.integers(0, len(shape) - 1))
    np.testing.assert_array_equal(tg.cat([Tensor(a), Tensor(b)], dim).numpy(),
                                  np.concatenate([a, b], dim))
    np.testing.assert_array_equal(tg.stack([Tensor(a), Tensor(b)], dim).numpy(),
                                  np.stack([a, b], dim))
    widths = data.draw(st.lists(st.integers(0, 2), min_size=2, max_size=2))
    np.testing.assert_array_equal(tg.pad(Tensor(a), widths, value=1.5).numpy(),
                                  np.pad(a, [(0, 0)] * (a.ndim - 1) + [tuple(widths)],
                                         constant_values=1.5))
    check_grad(lambda u, v: tg.cat([u, v * 2], dim), a, b)
    check_grad(lambda u, v: tg.stack([u, v], dim), a, b)
    check_gradgrad(lambda u: tg.pad(u * u, widths), a)


@FAST
@given(data=st.data())
def test_batched_matmul_with_broadcast_and_vectors(data):
    n, k, m = (data.draw(st.integers(1, 4)) for _ in range(3))
    batch_a, batch_b = data.draw(broadcastable_shapes(max_dims=2, max_side=3))
    a = data.draw(arrays(batch_a + (n, k)))
    b = data.draw(arrays(batch_b + (k, m)))
    np.testing.assert_allclose((Tensor(a) @ Tensor(b)).numpy(), a @ b, rtol=1e-12)
    check_grad(lambda u, v: u @ v, a, b)
    check_gradgrad(lambda u, v: u @ v, a, b)
    vec = data.draw(arrays((k,)))
    check_grad(lambda u, v: u @ v, data.draw(arrays((n, k))), vec)
    check_grad(lambda v, u: v @ u, vec, data.draw(arrays((k, m))))


def test_non_contiguous_inputs():
    rng = np.random.default_rng(1)
    x = non_contiguous(rng.standard_normal((3, 4)))
    assert not x.flags.c_contiguous
    check_grad(lambda u: (u @ u.T).tanh().sum(0), x)


def test_where_and_logsumexp():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    cond = x > 0
    np.testing.assert_array_equal(tg.where(Tensor(cond), Tensor(x), Tensor(y)).numpy(),
                                  np.where(cond, x, y))
    check_grad(lambda u, v: tg.where(Tensor(cond), u, v), x, y)
    big = np.array([[1e4, -1e4, 0.0]])
    out = Tensor(big).logsumexp(1)
    np.testing.assert_allclose(out.numpy(), [1e4])
    check_grad(lambda u: u.logsumexp(1), x)
    check_gradgrad(lambda u: u.logsumexp(0), x)


def test_casts_are_differentiable():
    x = np.random.default_rng(3).standard_normal(4)
    check_grad(lambda u: (u.float().double() * 2), x, eps=1e-2, atol=1e-4)
