"""Gradient clipping: clip_grad_norm_ / clip_grad_value_ (PyTorch semantics)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_cnn
from tinygrad_cnn.nn.utils import clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm
from tinygrad_cnn.testing import shapes

Tensor = tinygrad_cnn.Tensor


def params_with_grads(grad_arrays, dtype=np.float64):
    params = []
    for g in grad_arrays:
        p = Tensor(np.zeros(g.shape, dtype), requires_grad=True)
        p.grad = Tensor(np.array(g, dtype=dtype))
        params.append(p)
    return params


def reference_norm(arrays, norm_type):
    flat = np.concatenate([np.abs(a).ravel() for a in arrays])
    if norm_type == math.inf:
        return flat.max()
    return (flat ** norm_type).sum() ** (1.0 / norm_type)


@settings(max_examples=40, deadline=None)
@given(st.lists(shapes(min_dims=0, max_dims=3, min_side=1, max_side=4), min_size=1, max_size=4),
       st.integers(0, 2 ** 16), st.sampled_from([1.0, 2.0, 3.5, math.inf, "inf"]), st.floats(0.01, 20.0))
def test_clip_grad_norm_matches_formula(param_shapes, seed, norm_type, max_norm):
    rng = np.random.default_rng(seed)
    grads = [rng.standard_normal(s) * rng.uniform(0.1, 5.0) for s in param_shapes]
    params = params_with_grads(grads)
    norm_value = math.inf if norm_type == "inf" else norm_type
    total = reference_norm(grads, norm_value)
    returned = clip_grad_norm_(params, max_norm, norm_type=norm_type)
    assert returned.shape == ()
    np.testing.assert_allclose(returned.item(), total, rtol=1e-12)
    coef = min(1.0, max_norm / (total + 1e-6))
    for p, g in zip(params, grads):
        np.testing.assert_allclose(p.grad.array, g * coef, rtol=1e-12, atol=1e-15)
    clipped_norm = reference_norm([p.grad.array for p in params], norm_value)
    assert clipped_norm <= max(max_norm, total) * (1 + 1e-9)
    if total > max_norm:
        np.testing.assert_allclose(clipped_norm, max_norm * total / (total + 1e-6), rtol=1e-9)


def test_clip_grad_norm_leaves_small_gradients_untouched_and_skips_missing():
    a, b = params_with_grads([np.array([0.3, -0.4]), np.array([[0.0]])])
    c = Tensor(np.ones(3), requires_grad=True)  # no gradient: ignored
    total = clip_grad_norm_([a, b, c], max_norm=1.0)
    assert total.item() == pytest.approx(0.5)
    np.testing.assert_array_equal(a.grad.array, [0.3, -0.4])
    assert c.grad is None


def test_clip_grad_norm_single_tensor_and_float32():
    (p,) = params_with_grads([np.array([3.0, 4.0])], dtype=np.float32)
    total = clip_grad_norm_(p, max_norm=1.0)
    assert total.dtype == np.float32 and p.grad.array.dtype == np.float32
    assert total.item() == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad.array, [0.6, 0.8], rtol=1e-5)


def test_clip_grad_norm_no_gradients_returns_zero():
    p = Tensor(np.ones(2), requires_grad=True)
    assert clip_grad_norm_([p], 1.0).item() == 0.0
    assert clip_grad_norm_([], 1.0).item() == 0.0


def test_clip_grad_norm_nonfinite():
    params = params_with_grads([np.array([1.0, np.inf]), np.array([2.0])])
    with pytest.raises(RuntimeError, match="clip_grad_norm_: the total norm of order 2.0 .* non-finite"):
        clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(params[1].grad.array, [2.0])  # untouched when raising
    total = clip_grad_norm_(params, 1.0)  # default: scale by the non-finite norm like PyTorch
    assert math.isinf(total.item())
    np.testing.assert_array_equal(params[1].grad.array, [0.0])
    params = params_with_grads([np.array([np.nan, 1.0])])
    assert math.isnan(clip_grad_norm_(params, 1.0).item())
    assert np.all(np.isnan(params[0].grad.array))


def test_shared_gradient_array_is_scaled_once():
    shared = np.array([3.0, 4.0])
    a = Tensor(np.zeros(2), requires_grad=True)
    b = Tensor(np.zeros(2), requires_grad=True)
    a.grad = Tensor(shared)
    b.grad = Tensor(shared)
    b.grad.array = a.grad.array  # one array behind two parameters
    total = clip_grad_norm_([a, b], max_norm=1.0)
    assert total.item() == pytest.approx(math.sqrt(50.0))
    np.testing.assert_allclose(a.grad.array, np.array([3.0, 4.0]) / math.sqrt(50.0), rtol=1e-6)


def test_get_total_norm_and_clip_grads_with_norm():
    params = params_with_grads([np.array([1.0, -2.0]), np.array([2.0])])
    total = get_total_norm([p.grad for p in params], norm_type=1)
    assert total.item() == 5.0
    clip_grads_with_norm_(params, 2.5, total)
    np.testing.assert_allclose(params[0].grad.array, [0.5, -1.0], rtol=1e-6)
    clip_grads_with_norm_(params, 10.0, 1.0)  # coefficient capped at 1
    np.testing.assert_allclose(params[1].grad.array, [1.0], rtol=1e-6)


@settings(max_examples=20, deadline=None)
@given(st.lists(shapes(min_dims=0, max_dims=3, min_side=1, max_side=4), min_size=1, max_size=3),
       st.integers(0, 2 ** 16), st.floats(0.0, 3.0))
def test_clip_grad_value_matches_np_clip(param_shapes, seed, clip_value):
    rng = np.random.default_rng(seed)
    grads = [rng.standard_normal(s) * 2 for s in param_shapes]
    params = params_with_grads(grads)
    assert clip_grad_value_(params, clip_value) is None
    for p, g in zip(params, grads):
        np.testing.assert_array_equal(p.grad.array, np.clip(g, -clip_value, clip_value))


def test_bad_arguments():
    params = params_with_grads([np.ones(2)])
    with pytest.raises(ValueError, match="clip_grad_norm_: max_norm must be >= 0, got -1.0"):
        clip_grad_norm_(params, -1.0)
    with pytest.raises(ValueError, match="clip_grad_norm_: norm_type must be a number"):
        clip_grad_norm_(params, 1.0, norm_type="fro")
    with pytest.raises(ValueError, match="clip_grad_value_: clip_value must be >= 0"):
        clip_grad_value_(params, -0.5)
    with pytest.raises(TypeError, match=r"clip_grad_norm_: parameters\[1\] is a ndarray"):
        clip_grad_norm_([params[0], np.ones(2)], 1.0)
    with pytest.raises(TypeError, match="clip_grad_value_: parameters must be a Tensor or an iterable"):
        clip_grad_value_(3.0, 1.0)


@pytest.mark.parametrize("norm_type", [1.0, 2.0, 3.0, math.inf, 0.5])
def test_clip_grad_norm_matches_torch(torch, norm_type):
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(s) for s in [(3, 4), (5,), ()]]
    params = params_with_grads(grads)
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for q, g in zip(theirs, grads):
        q.grad = torch.tensor(g)
    ours_total = clip_grad_norm_(params, 0.7, norm_type=norm_type)
    theirs_total = torch.nn.utils.clip_grad_norm_(theirs, 0.7, norm_type=norm_type)
    np.testing.assert_allclose(ours_total.item(), theirs_total.item(), rtol=1e-12)
    for p, q in zip(params, theirs):
        np.testing.assert_allclose(p.grad.array, q.grad.numpy(), rtol=1e-12)
