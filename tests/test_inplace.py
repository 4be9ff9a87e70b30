"""In-place ops and the version counter: PyTorch's rules, and never a silently wrong gradient."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinygrad_cnn as tg
from tinygrad_cnn.testing import arrays, check_grad, shapes

torch = None
try:
    import torch
except ImportError:  # pragma: no cover - torch is optional
    pass


def test_inplace_arithmetic_on_plain_tensors():
    x = tg.ones(3)
    x += 2
    x *= tg.tensor([1.0, 2.0, 3.0])
    x -= 1
    x /= 2
    x.add_(1, alpha=2).sub_(tg.ones(3)).mul_(2).div_(4).clamp_(max=2.0)
    np.testing.assert_allclose(x.numpy(), np.minimum(((np.array([3, 6, 9.]) - 1) / 2 + 2 - 1) * 2 / 4, 2))
    assert x._version == 9
    y = tg.zeros(2)
    y.copy_(tg.tensor([1.0, 2.0]))
    y.fill_(3).zero_()
    assert y.tolist() == [0, 0] and y._version == 3


def test_inplace_errors_name_the_op_and_the_problem():
    x = tg.ones(2, 3)
    with pytest.raises(RuntimeError, match=r"add_: the result has shape \(4, 2, 3\)"):
        x.add_(tg.ones(4, 2, 3))
    i = tg.ones(3, dtype=tg.int64)
    with pytest.raises(RuntimeError, match="mul_: result type float32 can't be cast to the dtype int64"):
        i *= 0.5
    leaf = tg.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="add_: a leaf tensor that requires grad cannot be modified in-place"):
        leaf += 1
    with tg.no_grad():
        leaf += 1                                    # how optimizers update parameters
    assert leaf.tolist() == [2, 2, 2]


def test_inplace_on_a_non_leaf_is_recorded():
    a = tg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = a * 2
    b += a                                           # b = 3a
    b.mul_(tg.tensor([1.0, 10.0, 100.0]))
    b.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [3.0, 30.0, 300.0])
    # a constant accumulator that receives a gradient becomes part of the graph, as in PyTorch
    total = tg.zeros(())
    for k in range(3):
        total += (a * k).sum()
    assert not total.is_leaf
    a.grad = None
    total.backward()
    np.testing.assert_allclose(a.grad.numpy(), [3.0, 3.0, 3.0])


def test_modifying_a_saved_tensor_raises_at_backward():
    a = tg.tensor([1.0, 2.0], requires_grad=True)
    e = a.exp()                                      # Exp saves its output
    e.add_(1)
    with pytest.raises(RuntimeError, match=r"Exp: one of the tensors its backward needs .* modified by an "
                                           r"in-place operation.*version 1, expected version 0"):
        e.sum().backward()
    # an input saved by Mul, changed in place through a plain tensor
    w = tg.tensor([1.0, 2.0], requires_grad=True)
    x = tg.tensor([3.0, 4.0])
    loss = (w * x).sum()
    x.mul_(2)
    with pytest.raises(RuntimeError, match="Mul: one of the tensors its backward needs"):
        loss.backward()
    # Relu keeps its output as a plain attribute: covered too
    h = tg.tensor([-1.0, 2.0], requires_grad=True) * 1
    r = h.relu()
    r.mul_(3)
    with pytest.raises(RuntimeError, match="Relu: one of the tensors"):
        r.sum().backward()


def test_a_view_shares_the_version_counter():
    w = tg.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    x = tg.tensor([1.0, 1.0, 1.0, 1.0])
    loss = (w * x).sum()
    view = x.view(2, 2)
    view[0, 0] = 7.0                                 # changes x through its view
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        loss.backward()
    d = x.detach()                                   # detach shares the counter too
    assert d._version == x._version
    before = x._version
    x.data.add_(1)                                   # .data does not (PyTorch's documented hazard)
    assert x._version == before


def test_optimizer_step_between_forward_and_backward_raises():
    w = tg.nn.Parameter(tg.tensor([1.0, 2.0]))
    opt = tg.optim.SGD([w], lr=0.1)
    (w * w).sum().backward()
    loss = (w * w).sum()
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        loss.backward()


def test_unchanged_saved_tensors_and_unsaved_changes_are_fine():
    a = tg.tensor([1.0, 2.0], requires_grad=True)
    x = tg.tensor([5.0, 6.0])
    y = a + x                                        # Add saves nothing
    x.add_(1)
    y.sum().backward()
    np.testing.assert_allclose(a.grad.numpy(), [1.0, 1.0])


@settings(max_examples=25, deadline=None)
@given(shape=shapes(1, 3, 1, 4), data=st.data())
def test_gradient_through_inplace_ops_float64(shape, data):
    a = data.draw(arrays(shape))
    b = data.draw(arrays(shape))

    def fn(x, y):
        h = x * 1.5
        h += y
        h.mul_(y)
        h.sub_(x, alpha=0.5)
        h.div_(2.0)
        return h

    check_grad(fn, a, b)


@pytest.mark.skipif(torch is None, reason="needs torch")
def test_inplace_non_leaf_gradient_matches_torch():
    rng = np.random.default_rng(0)
    a0, b0 = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    results = []
    for lib in (tg, torch):
        a = lib.tensor(a0, requires_grad=True)
        b = lib.tensor(b0, requires_grad=True)
        h = a * b
        h.add_(b, alpha=3).mul_(a).clamp_(-1.0, 2.0)
        h.sum().backward()
        results.append((a.grad.numpy() if lib is tg else a.grad.numpy(), np.asarray(b.grad.detach())))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12)


def test_version_checks_do_not_keep_outputs_alive():
    import gc
    import weakref
    x = tg.randn(1000, requires_grad=True)
    gc.disable()
    try:
        y = (x * 2).relu()                           # Relu keeps its output array for backward
        ref = weakref.ref(y)
        del y
        assert ref() is None                         # freed by reference counting, no cycle
    finally:
        gc.enable()
