"""The classic engine traps: reuse, deep chains, double backward, no_grad, memory, hooks."""
import gc
import weakref

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import Tensor
from tinygrad_cnn.autograd import Function


def test_reused_node_sums_its_gradients():
    a = Tensor(np.array([3.0]), requires_grad=True)
    b = a + a            # db/da = 2
    c = b * b            # dc/db = 2b = 12
    c.backward()
    assert a.grad.item() == 24.0


def test_same_tensor_twice_into_one_op():
    a = Tensor(np.array([3.0, -1.0]), requires_grad=True)
    (a * a).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), [6.0, -2.0])


def test_grad_of_leaf_does_not_alias_another_leaf():
    a = Tensor(np.ones(2), requires_grad=True)
    b = Tensor(np.ones(2), requires_grad=True)
    (a + b).sum().backward()
    a.grad.array += 1
    np.testing.assert_array_equal(b.grad.numpy(), [1.0, 1.0])


def test_a_gradient_no_one_else_holds_becomes_grad_without_a_copy():
    w = Tensor(np.ones((4, 3)), requires_grad=True)
    (Tensor(np.ones((2, 4))) @ w).sum().backward()
    first = w.grad.array
    assert first.base is None and first.flags.owndata
    (Tensor(np.ones((2, 4))) @ w).sum().backward()       # accumulates in place
    assert w.grad.array is first
    np.testing.assert_array_equal(first, np.full((4, 3), 4.0))


def test_grad_never_aliases_an_array_someone_else_can_see():
    # The caller's root gradient: changing .grad must not change it, and the reverse.
    leaf = Tensor(np.ones(3), requires_grad=True)
    upstream = Tensor(np.full(3, 2.0))
    leaf.backward(upstream)
    leaf.grad.array += 1
    np.testing.assert_array_equal(upstream.numpy(), [2.0, 2.0, 2.0])
    # A hook that keeps the gradient it is shown.
    seen = []
    x = Tensor(np.ones(3), requires_grad=True)
    x.register_hook(lambda g: seen.append(g))
    (x * 3.0).sum().backward()
    x.grad.array += 1
    np.testing.assert_array_equal(seen[0].numpy(), [3.0, 3.0, 3.0])
    # One gradient array sent to two leaves through the same op.
    a, b = Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(2), requires_grad=True)
    (a + b).sum().backward()
    assert not np.shares_memory(a.grad.array, b.grad.array)
    # A graph kept alive (retain_graph) may hold the arrays its backward returned.
    y = Tensor(np.ones(2), requires_grad=True)
    out = (y * 2.0).sum()
    out.backward(retain_graph=True)
    y.grad.array += 100
    y.grad = None
    out.backward()
    np.testing.assert_array_equal(y.grad.numpy(), [2.0, 2.0])


def test_twenty_thousand_op_chain_has_no_recursion_limit():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(20_000):
        y = y * 1.0 + 0.0
    y.backward()
    assert x.grad.item() == 1.0


def test_gradients_accumulate_across_backward_calls():
    x = Tensor(np.array([2.0]), requires_grad=True)
    (x * 3).backward()
    (x * 3).backward()
    assert x.grad.item() == 6.0


def test_second_backward_through_freed_graph_raises():
    x = Tensor(np.array([2.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()
    assert x.grad.item() == 4.0          # not silently doubled


def test_retain_graph_allows_second_backward():
    x = Tensor(np.array([2.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.item() == 8.0


def test_no_grad_records_nothing_and_works_as_decorator():
    x = Tensor(np.ones(3), requires_grad=True)
    with tg.no_grad():
        y = x * 2
    assert not y.requires_grad and y.grad_fn is None

    @tg.no_grad()
    def f(t):
        return t * 2

    assert f(x).grad_fn is None
    assert tg.is_grad_enabled()
    with tg.no_grad():
        with tg.enable_grad():
            assert (x * 2).requires_grad


def test_graph_memory_is_released_after_backward():
    x = Tensor(np.random.randn(100, 100), requires_grad=True)
    h = x.tanh()
    saved = weakref.ref(h)
    node = h.grad_fn
    y = (h * 2).sum()
    del h
    gc.collect()
    assert saved() is not None          # kept alive by the graph for backward
    y.backward()
    gc.collect()
    assert saved() is None              # freed: the Tanh node dropped its saved output
    assert node._released


def test_hooks_fire_once_per_backward_with_the_summed_gradient():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 3
    seen = []
    h.register_hook(lambda g: seen.append(g.numpy().copy()))
    (h * h + h).sum().backward()       # h used three times
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], 2 * h.numpy() + 1)


def test_hook_can_replace_gradient_and_be_removed():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    handle = x.register_hook(lambda g: g * 0.5)
    (x * 4).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 2.0])
    handle.remove()
    x.grad = None
    (x * 4).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [4.0, 4.0])


def test_retain_grad_on_intermediate():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    h = x * 3
    h.retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), 2 * h.numpy())


def test_create_graph_gives_second_derivatives():
    x = Tensor(np.array([0.3, -1.2]), requires_grad=True)
    y = (x ** 3).sum()
    y.backward(create_graph=True)
    grad = x.grad                        # 3x^2, itself differentiable
    np.testing.assert_allclose(grad.numpy(), 3 * x.numpy() ** 2)
    x.grad = None
    grad.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 6 * x.numpy())


def test_hessian_vector_product_of_tanh_network():
    rng = np.random.default_rng(0)
    w = Tensor(rng.standard_normal((3, 3)), requires_grad=True)
    x = Tensor(rng.standard_normal((4, 3)))
    v = rng.standard_normal((3, 3))
    loss = (x @ w).tanh().sum()
    loss.backward(create_graph=True)
    g = w.grad
    w.grad = None
    (g * Tensor(v)).sum().backward()
    hvp = w.grad.numpy()
    # finite-difference check of the HVP
    eps = 1e-6

    def grad_at(wv):
        t = Tensor(wv, requires_grad=True)
        (x @ t).tanh().sum().backward()
        return t.grad.numpy()

    numeric = (grad_at(w.numpy() + eps * v) - grad_at(w.numpy() - eps * v)) / (2 * eps)
    np.testing.assert_allclose(hvp, numeric, rtol=1e-5, atol=1e-7)


def test_custom_function_and_needs_input_grad():
    class Cube(Function):
        def forward(self, x):
            self.save_for_backward(x)
            return x ** 3

        def backward(self, g):
            (x,) = self.saved_tensors
            return g * 3 * x * x

    x = Tensor(np.array([2.0]), requires_grad=True)
    y = Cube.apply(x)
    y.backward()
    assert x.grad.item() == 12.0
    assert tg.gradgradcheck(lambda t: Cube.apply(t), (Tensor(np.array([0.7, -0.2]),
                                                           requires_grad=True),))


def test_backward_returning_wrong_shape_is_reported():
    class Bad(Function):
        def forward(self, x):
            return x.sum(axis=0)

        def backward(self, g):
            return g

    x = Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"Bad.backward returned a gradient of shape \(3,\) "
                                           r"for input 0 of shape \(2, 3\)"):
        Bad.apply(x).sum().backward()


def test_mixing_devices_names_both(monkeypatch):
    a = Tensor(np.ones(2), requires_grad=True)
    b = Tensor(np.ones(2))
    monkeypatch.setattr(type(b), "device", property(
        lambda self: "cuda" if self is b else "cpu"))
    with pytest.raises(RuntimeError, match="cpu and cuda"):
        a + b


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_detect_anomaly_names_op_and_user_line():
    x = Tensor(np.array([-1.0, 1.0]), requires_grad=True)
    with tg.detect_anomaly():
        with pytest.raises(RuntimeError, match=r"Log forward produced NaN.*test_autograd.py:\d+"):
            x.log()
    with tg.detect_anomaly():
        z = Tensor(np.array([0.0, 1.0]), requires_grad=True)
        out = z.sqrt()           # forward finite; backward 1/(2*0) = inf
        with pytest.raises(RuntimeError, match=r"Sqrt backward produced NaN or Inf.*test_autograd.py"):
            out.sum().backward()


def test_a_hook_runs_even_when_its_tensor_object_is_gone():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    (x * 2).register_hook(lambda g: g * 10)   # the product is never named: only the graph holds it
    y = x * 2
    y.register_hook(lambda g: g * 10)
    out = y * 3
    del y
    out.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((2, 3), 60.0))
