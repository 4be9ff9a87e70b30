"""More engine and op checks: broadcasting and non-contiguous inputs for every basic op, second
derivatives of the piecewise-linear ops, hook and grad-mode corner cases, gradient penalties,
and the gradient checker's own promises (random upstream gradient, fast mode cost, hints)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinygrad_cnn as tg
from tinygrad_cnn import Tensor
from tinygrad_cnn.autograd import Function
from tinygrad_cnn.gradcheck import GradcheckError
from tinygrad_cnn.testing import (arrays, broadcastable_shapes, check_grad, check_gradgrad,
                                  conv2d_settings, distinct_arrays, non_contiguous, pool2d_settings,
                                  shapes, tensor64)

FAST = settings(max_examples=10, deadline=None)


def _away_from_kinks(x):
    """Move values off 0 (relu, abs, where) and off +-1 (clamp(-1, 1)) by at least 0.05."""
    x = x + np.where(x >= 0, 0.05, -0.05)
    return np.where(np.abs(np.abs(x) - 1) < 0.05, x * 0.9, x)


def _gapped(shape, offset):
    """Arrays on the grid 0.1 * k + offset: two arrays with offsets 0 and 0.05 never tie."""
    return arrays(shape, elements=st.integers(-30, 30)).map(lambda a: a * 0.1 + offset)


# ---------------------------------------------------------------- broadcasting everywhere
@pytest.mark.parametrize("name", ["maximum", "minimum", "where"])
@FAST
@given(data=st.data())
def test_maximum_minimum_where_broadcast(name, data):
    shape_a, shape_b = data.draw(broadcastable_shapes())
    a, b = data.draw(_gapped(shape_a, 0.0)), data.draw(_gapped(shape_b, 0.05))
    if name == "where":
        cond = data.draw(arrays(np.broadcast_shapes(shape_a, shape_b)[-1:], dtype=np.bool_,
                                elements=st.booleans()))
        op = lambda u, v: tg.where(Tensor(cond), u, v)           # noqa: E731
        reference = np.where(cond, a, b)
    else:
        op = (lambda u, v: u.maximum(v)) if name == "maximum" else (lambda u, v: u.minimum(v))
        reference = getattr(np, name)(a, b)
    out = op(tensor64(a, False), tensor64(b, False))
    np.testing.assert_array_equal(out.numpy(), reference)
    check_grad(op, a, b)          # gradients summed back to each input's own shape
    check_gradgrad(op, a, b)


# ---------------------------------------------------------------- non-contiguous inputs
UNARY = {
    "neg": (lambda x: -x, np.negative),
    "exp": (lambda x: x.exp(), np.exp),
    "log": (lambda x: (x * x + 0.5).log(), lambda x: np.log(x * x + 0.5)),
    "sqrt": (lambda x: (x * x + 0.5).sqrt(), lambda x: np.sqrt(x * x + 0.5)),
    "tanh": (lambda x: x.tanh(), np.tanh),
    "sigmoid": (lambda x: x.sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    "relu": (lambda x: x.relu(), lambda x: np.maximum(x, 0)),
    "abs": (lambda x: x.abs(), np.abs),
    "clamp": (lambda x: x.clamp(-1.0, 1.0), lambda x: np.clip(x, -1, 1)),
    "sum0": (lambda x: x.sum(0), lambda x: x.sum(0)),
    "var1": (lambda x: x.var(1), lambda x: x.var(1, ddof=1)),
    "max1": (lambda x: x.max(1).values, lambda x: x.max(1)),
    "index": (lambda x: x[1:, ::2], lambda x: x[1:, ::2]),
    "matmul": (lambda x: x @ x.transpose(0, 1), lambda x: x @ x.T),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@FAST
@given(data=st.data())
def test_non_contiguous_inputs(name, data):
    op, reference = UNARY[name]
    shape = data.draw(shapes(min_dims=2, max_dims=2, min_side=2, max_side=4))
    x = non_contiguous(_away_from_kinks(data.draw(distinct_arrays(shape, min_gap=1e-2))))
    t = tensor64(x)
    assert not t.array.flags.c_contiguous                  # the layout reaches the op
    np.testing.assert_allclose(op(t).numpy(), reference(x), rtol=1e-12, atol=1e-12)
    check_grad(op, x)


@pytest.mark.parametrize("name", ["add", "mul", "div", "pow"])
@FAST
@given(data=st.data())
def test_binary_ops_on_transposed_views(name, data):
    ops = {"add": lambda a, b: a + b, "mul": lambda a, b: a * b,
           "div": lambda a, b: a / (b * b + 0.5), "pow": lambda a, b: (a * a + 0.5) ** b}
    shape = data.draw(shapes(min_dims=2, max_dims=3, min_side=2, max_side=3))
    a, b = data.draw(arrays(shape)), data.draw(arrays(shape[::-1]))

    def fn(u, v):                       # u.permute(...) is a strided view fed to the op
        return ops[name](u.permute(*reversed(range(u.ndim))), v)

    np.testing.assert_allclose(fn(tensor64(a, False), tensor64(b, False)).numpy(),
                               ops[name](a.T, b), rtol=1e-12)
    check_grad(fn, a, b)


# ---------------------------------------------------------------- second derivatives
SECOND_ORDER = {
    "relu": lambda x: x.relu() * x,
    "abs": lambda x: x.abs() * x,
    "clamp": lambda x: x.clamp(-1.0, 1.0) * x,
    "max_dim": lambda x: x.max(-1).values ** 2,
    "min_dim": lambda x: x.min(0, keepdim=True).values * x,
    "max_all": lambda x: x.max() * x,
    "mean": lambda x: x.mean(-1, keepdim=True) * x,
    "sum": lambda x: x.sum(0) ** 2,
    "cat_stack": lambda x: tg.cat([x * x, tg.stack([x, x], 0).sum(0)], -1),
    "squeeze_flatten": lambda x: x.unsqueeze(0).flatten().squeeze() ** 3,
    "where": lambda x: tg.where(x > 0, x * x, -x * x * x),
    "int_index": lambda x: x[[0, 0, -1]] * x[[1, 0, 0]],
}


@pytest.mark.parametrize("name", sorted(SECOND_ORDER))
@FAST
@given(data=st.data())
def test_second_derivatives(name, data):
    shape = data.draw(shapes(min_dims=1, max_dims=3, min_side=2, max_side=3))
    x = _away_from_kinks(data.draw(distinct_arrays(shape, min_gap=1e-2)))
    check_grad(SECOND_ORDER[name], x)
    check_gradgrad(SECOND_ORDER[name], x)


@FAST
@given(data=st.data())
def test_min_along_dim_matches_numpy(data):
    shape = data.draw(shapes(min_dims=1, max_dims=3))
    x = data.draw(distinct_arrays(shape))
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    values, indices = tensor64(x, False).min(dim)
    np.testing.assert_array_equal(values.numpy(), x.min(axis=dim))
    np.testing.assert_array_equal(indices.numpy(), x.argmin(axis=dim))


# ---------------------------------------------------------------- engine corner cases
def test_leaf_hook_fires_once_per_backward_with_the_total():
    x = Tensor(np.array([1.0, -2.0]), requires_grad=True)
    seen = []
    x.register_hook(lambda g: seen.append(g.numpy().copy()))
    (x * x + x * 3 + x).sum().backward()       # x reaches the loss along four paths
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], 2 * x.numpy() + 4)
    (x * 2).sum().backward()
    assert len(seen) == 2                      # once per backward, not once per path
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 6)


def test_hook_returning_a_wrong_shape_is_an_error():
    x = Tensor(np.ones(3), requires_grad=True)
    h = x * 2
    h.register_hook(lambda g: g.sum())
    with pytest.raises(RuntimeError, match=r"hook returned a gradient of shape \(\) for a tensor of shape \(3,\)"):
        h.sum().backward()


def test_grads_are_tensors_and_intermediate_grads_are_not_kept():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x.tanh()
    (h * h).sum().backward()
    assert isinstance(x.grad, Tensor) and not x.grad.requires_grad
    assert h.grad is None                      # freed unless retain_grad() was asked for


def test_shared_subgraph_cannot_be_walked_twice_without_retain_graph():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = x.exp()
    (y * 2).sum().backward()
    with pytest.raises(RuntimeError, match="second time"):
        (y * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp([1.0, 2.0]))   # nothing added


def test_grad_mode_is_restored_after_an_exception_and_nests():
    @tg.no_grad()
    def failing():
        assert not tg.is_grad_enabled()
        raise KeyError("boom")

    with pytest.raises(KeyError):
        failing()
    assert tg.is_grad_enabled()
    with tg.no_grad():
        with tg.set_grad_enabled(True):
            assert tg.is_grad_enabled()
        assert not tg.is_grad_enabled()

    @tg.set_grad_enabled(False)
    def double(t):
        return t * 2

    assert double(Tensor(np.ones(2), requires_grad=True)).grad_fn is None


def _gradient_penalty(w, x):
    """||d/dx sum(tanh(x @ w))||^2 with x a fresh leaf (the classic WGAN-GP form).

    enable_grad: gradcheck evaluates fn under no_grad for its finite differences, and the
    inner backward needs a graph.
    """
    with tg.enable_grad():
        x = Tensor(x, requires_grad=True)
        saved = w.grad
        (x @ w).tanh().sum().backward(create_graph=True)
        gx = x.grad
        w.grad = saved              # the inner backward also reached w: keep it out of w.grad
        return (gx * gx).sum()


def test_gradient_penalty_through_create_graph_matches_finite_differences():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3))
    w = Tensor(rng.standard_normal((3, 2)), requires_grad=True)
    _gradient_penalty(w, x).backward()
    analytic = w.grad.numpy().copy()
    numeric = np.zeros_like(analytic)
    eps = 1e-6
    for index in np.ndindex(*analytic.shape):
        shifted = []
        for sign in (1, -1):
            data = w.numpy().copy()
            data[index] += sign * eps
            shifted.append(float(_gradient_penalty(Tensor(data, requires_grad=True), x).item()))
        numeric[index] = (shifted[0] - shifted[1]) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
    assert tg.gradcheck(lambda u: _gradient_penalty(u, x), (w,))


# ---------------------------------------------------------------- the gradient checker itself
class _RecordUpstream(Function):
    seen = []

    def forward(self, x):
        return x * 1.0

    def backward(self, g):
        _RecordUpstream.seen.append(g.numpy().copy())
        return g


def test_upstream_gradient_is_random_non_uniform_with_both_signs():
    _RecordUpstream.seen.clear()
    assert tg.gradcheck(lambda u: _RecordUpstream.apply(u), (tensor64(np.zeros(50)),))
    v = _RecordUpstream.seen[0]
    assert len(np.unique(np.abs(v))) > 40 and (v > 0).any() and (v < 0).any()
    assert len(_RecordUpstream.seen) >= 2     # backward ran twice: the determinism check
    np.testing.assert_array_equal(_RecordUpstream.seen[0], _RecordUpstream.seen[1])


@pytest.mark.parametrize("size", [3, 40])
def test_fast_mode_cost_does_not_grow_with_the_input(size):
    calls = []

    def fn(u):
        calls.append(1)
        return (u * u).sum()

    assert tg.gradcheck(fn, (tensor64(np.linspace(-1, 1, size)),), fast_mode=True) is True
    fast_calls = len(calls)
    calls.clear()
    assert tg.gradcheck(fn, (tensor64(np.linspace(-1, 1, size)),)) is True
    assert fast_calls <= 6 and len(calls) >= 2 * size


def test_hints_for_a_max_tie_and_for_a_large_eps():
    tie = tensor64(np.array([1.0, 1.0 + 1e-9, 0.2]))
    report = tg.gradcheck(lambda u: u.max(), (tie,), raise_exception=False, return_report=True)
    assert not report.ok and "tie" in str(report)
    x = tensor64(np.array([0.7, -1.3]))
    report = tg.gradcheck(lambda u: u ** 4, (x,), eps=0.1, atol=1e-8, rtol=1e-8,
                          raise_exception=False, return_report=True)
    assert not report.ok and "eps=0.1 is large" in str(report)
    for key in ("index", "analytic", "numeric", "abs_error", "rel_error"):
        assert key in str(report)


def test_failure_raises_by_default_with_the_report_attached():
    class Wrong(Function):
        def forward(self, x):
            return x * 3

        def backward(self, g):
            return g * 2

    with pytest.raises(GradcheckError) as info:
        tg.gradcheck(lambda u: Wrong.apply(u), (tensor64(np.ones(2)),))
    assert info.value.report.ok is False and info.value.report.failures[0]["input"] == 0


# ---------------------------------------------------------------- the public strategies
@settings(max_examples=25, deadline=None)
@given(pair=broadcastable_shapes(), conv=conv2d_settings(), pool=pool2d_settings(),
       gap_array=distinct_arrays((3, 4), min_gap=1e-3))
def test_strategies_produce_what_they_promise(pair, conv, pool, gap_array):
    np.broadcast_shapes(*pair)
    n, c, h, w = conv["input_shape"]
    out_channels, in_per_group, kh, kw = conv["weight_shape"]
    assert c == in_per_group * conv["groups"] and out_channels % conv["groups"] == 0
    for size, k, s, p, d in zip((h, w), (kh, kw), conv["stride"], conv["padding"], conv["dilation"]):
        assert (size + 2 * p - d * (k - 1) - 1) // s + 1 >= 1
    for size, k, p, d in zip(pool["input_shape"][2:], pool["kernel_size"], pool["padding"], pool["dilation"]):
        assert p <= k // 2 and size + 2 * p - d * (k - 1) - 1 >= 0
    values = np.sort(gap_array.ravel())
    assert np.min(np.diff(values)) >= 1e-3 * 0.999
