"""Losses: fused cross-entropy kernels == reference, gradients, PyTorch semantics, extremes, errors."""
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


@st.composite
def classification_problems(draw, max_rows=5, max_classes=5, spatial=True):
    """A dict: logits of shape (N, C[, d1, d2]), class targets (some ignored), weights, options."""
    n = draw(st.integers(1, max_rows))
    c = draw(st.integers(1, max_classes))
    extra = tuple(draw(st.lists(st.integers(1, 3), max_size=2))) if spatial else ()
    logits = draw(arrays((n, c) + extra))
    ignore_index = draw(st.sampled_from([-100, 0, 1]))
    target = np.asarray(draw(arrays((n,) + extra, dtype=np.int64,
                                    elements=st.integers(0, c - 1))))
    if draw(st.booleans()):
        target.reshape(-1)[0] = ignore_index
    weight = (np.asarray(draw(arrays((c,), elements=st.floats(0.1, 3.0))))
              if draw(st.booleans()) else None)
    return dict(logits=logits, target=target, weight=weight, ignore_index=ignore_index,
                label_smoothing=draw(st.sampled_from([0.0, 0.1, 0.45])),
                reduction=draw(st.sampled_from(["mean", "sum", "none"])))


def _ours(problem, logits=None):
    weight = problem["weight"]
    return F.cross_entropy(
        logits if logits is not None else tensor64(problem["logits"]), Tensor(problem["target"]),
        weight=None if weight is None else Tensor(weight), ignore_index=problem["ignore_index"],
        reduction=problem["reduction"], label_smoothing=problem["label_smoothing"])


def _has_valid_target(problem):
    return bool((problem["target"] != problem["ignore_index"]).any())


# ---------------------------------------------------------------------------- kernels (== reference: tests/kernels)

@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.one_of(st.floats(-760.0, 0.0), st.floats(-1.0, 0.0),
                                 st.sampled_from([0.0, -0.0, -708.0, -708.5, -np.inf, np.nan])),
                       min_size=1, max_size=70))
def test_numba_exp_is_numpy_exp_within_an_ulp(values):
    """The kernels' own exp (a Taylor series and exponent bits, so that its loops
    vectorise): within one rounding of np.exp on [-708, 0] at every length (vector body and
    remainder), 0 below -708 and for -inf, NaN kept."""
    pytest.importorskip("numba")
    from tinygrad_cnn.kernels.cpu import loss as kernels
    x = np.array(values, dtype=np.float64)
    out = np.empty_like(x)
    kernels._exp_nonpositive(x, out, np.empty(x.size, dtype=np.int64))
    in_range = x >= -708.0
    np.testing.assert_allclose(out[in_range], np.exp(x[in_range]), rtol=2.3e-16, atol=0)
    assert np.all(out[x < -708.0] == 0.0)
    assert np.array_equal(np.isnan(out), np.isnan(x))


def test_numba_kernels_parallel_path_matches_reference():
    pytest.importorskip("numba")
    from tinygrad_cnn.kernels.cpu import loss as kernels
    rng = np.random.default_rng(0)
    rows, classes = kernels.PARALLEL_MIN_ELEMENTS // 10 + 3, 10
    logits = rng.normal(size=(rows, classes)) * 5
    target = rng.integers(0, classes, rows)
    target[::7] = -100
    weight = rng.uniform(0.5, 2, classes)
    row_grad = rng.normal(size=rows)
    ref_loss, ref_lse = backend.kernel("softmax_cross_entropy_forward", np, impl="numpy")(
        logits, target, weight, -100, 0.1)
    loss, lse = kernels.softmax_cross_entropy_forward(logits, target, weight, -100, 0.1)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-12)
    grad = kernels.softmax_cross_entropy_backward(logits, lse, target, weight, -100, 0.1, row_grad)
    ref_grad = backend.kernel("softmax_cross_entropy_backward", np, impl="numpy")(
        logits, ref_lse, target, weight, -100, 0.1, row_grad)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------- gradients

IMPLEMENTATIONS = ["numpy", "numba"]


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@settings(max_examples=12, deadline=None)
@given(problem=classification_problems())
def test_cross_entropy_gradcheck_and_gradgradcheck(problem, impl):
    if problem["reduction"] == "mean" and not _has_valid_target(problem):
        problem["reduction"] = "sum"     # the mean over no targets is NaN (as PyTorch)
    fn = lambda logits: _ours(problem, logits)   # noqa: E731
    with backend.cpu_backend(impl):
        check_grad(fn, problem["logits"])
        check_gradgrad(fn, problem["logits"])


@settings(max_examples=8, deadline=None)
@given(problem=classification_problems())
def test_nll_loss_gradcheck_and_gradgradcheck(problem):
    if problem["reduction"] == "mean" and not _has_valid_target(problem):
        problem["reduction"] = "sum"
    weight = None if problem["weight"] is None else Tensor(problem["weight"])

    def fn(log_probs):
        return F.nll_loss(log_probs, Tensor(problem["target"]), weight=weight,
                          ignore_index=problem["ignore_index"], reduction=problem["reduction"])

    check_grad(fn, problem["logits"])
    check_gradgrad(fn, problem["logits"])


@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_probability_targets_gradcheck_in_logits_and_targets(data):
    shape = data.draw(st.sampled_from([(3, 4), (2, 3, 2), (4,)]))
    logits = data.draw(arrays(shape))
    probs = np.asarray(data.draw(arrays(shape, elements=st.floats(0.05, 1.0))))
    reduction = data.draw(st.sampled_from(["mean", "sum", "none"]))
    smoothing = data.draw(st.sampled_from([0.0, 0.3]))
    fn = lambda x, q: F.cross_entropy(x, q, reduction=reduction, label_smoothing=smoothing)  # noqa
    check_grad(fn, logits, probs)
    check_gradgrad(fn, logits, probs)


@settings(max_examples=8, deadline=None)
@given(shape_pair=st.sampled_from([((3, 4), (3, 4)), ((2, 3), (3,)), ((5,), (5,))]),
       reduction=st.sampled_from(["mean", "sum", "none"]), data=st.data())
def test_mse_loss_gradcheck(shape_pair, reduction, data):
    x = data.draw(arrays(shape_pair[0]))
    y = data.draw(arrays(shape_pair[1]))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check_grad(lambda a, b: F.mse_loss(a, b, reduction=reduction), x, y)
        check_gradgrad(lambda a, b: F.mse_loss(a, b, reduction=reduction), x, y)


# ---------------------------------------------------------------------------- PyTorch parity

@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@settings(max_examples=25, deadline=None)
@given(problem=classification_problems(max_rows=6, max_classes=6))
def test_cross_entropy_matches_torch(torch, problem, impl):
    logits = tensor64(problem["logits"])
    with backend.cpu_backend(impl):
        out = _ours(problem, logits)
    theirs = torch.tensor(problem["logits"], requires_grad=True)
    weight = problem["weight"]
    expected = torch.nn.functional.cross_entropy(
        theirs, torch.tensor(problem["target"]),
        weight=None if weight is None else torch.tensor(weight),
        ignore_index=problem["ignore_index"], reduction=problem["reduction"],
        label_smoothing=problem["label_smoothing"])
    assert out.shape == tuple(expected.shape)
    assert_allclose(out, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    if not np.isfinite(expected.detach().numpy()).all():
        return
    upstream = np.linspace(0.5, 1.5, max(out.array.size, 1)).reshape(out.shape)
    with backend.cpu_backend(impl):
        out.backward(Tensor(upstream))
    expected.backward(torch.tensor(upstream))
    assert_allclose(logits.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)


@settings(max_examples=15, deadline=None)
@given(problem=classification_problems(max_rows=6, max_classes=6))
def test_nll_loss_matches_torch(torch, problem):
    weight = problem["weight"]
    log_probs = tensor64(problem["logits"])
    out = F.nll_loss(log_probs, Tensor(problem["target"]),
                     weight=None if weight is None else Tensor(weight),
                     ignore_index=problem["ignore_index"], reduction=problem["reduction"])
    theirs = torch.tensor(problem["logits"], requires_grad=True)
    expected = torch.nn.functional.nll_loss(
        theirs, torch.tensor(problem["target"]),
        weight=None if weight is None else torch.tensor(weight),
        ignore_index=problem["ignore_index"], reduction=problem["reduction"])
    assert_allclose(out, expected.detach().numpy(), rtol=1e-12, atol=1e-12)
    if np.isfinite(expected.detach().numpy()).all():
        out.sum().backward()
        expected.sum().backward()
        assert_allclose(log_probs.grad, theirs.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 2), (5,)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_probability_targets_match_torch(torch, shape, reduction):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=shape)
    probs = rng.uniform(size=shape)
    probs /= probs.sum(axis=1 if len(shape) > 1 else 0, keepdims=True)
    weight = rng.uniform(0.5, 2.0, size=shape[1] if len(shape) > 1 else shape[0])
    out = F.cross_entropy(tensor64(logits), Tensor(probs), weight=Tensor(weight),
                          reduction=reduction, label_smoothing=0.2)
    expected = torch.nn.functional.cross_entropy(
        torch.tensor(logits), torch.tensor(probs), weight=torch.tensor(weight),
        reduction=reduction, label_smoothing=0.2)
    assert_allclose(out, expected.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_matches_torch_including_weights(torch, reduction):
    rng = np.random.default_rng(2)
    x, y, w = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.uniform(0.1, 2, size=(3, 4))
    assert_allclose(F.mse_loss(Tensor(x), Tensor(y), reduction=reduction),
                    torch.nn.functional.mse_loss(torch.tensor(x), torch.tensor(y),
                                                 reduction=reduction).numpy(), rtol=1e-12)
    assert_allclose(F.mse_loss(Tensor(x), Tensor(y), reduction=reduction, weight=Tensor(w)),
                    torch.nn.functional.mse_loss(torch.tensor(x), torch.tensor(y),
                                                 reduction=reduction,
                                                 weight=torch.tensor(w)).numpy(), rtol=1e-12)


# ---------------------------------------------------------------------------- semantics

def test_weighted_mean_divides_by_the_weights_of_the_targets():
    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0], [1.0, 2.0, 3.0]])
    target = np.array([0, 2, -100])
    weight = np.array([2.0, 1.0, 0.5])
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    nll = -np.array([weight[0] * log_probs[0, 0], weight[2] * log_probs[1, 2]])
    expected = nll.sum() / (weight[0] + weight[2])
    out = F.cross_entropy(Tensor(logits), Tensor(target), weight=Tensor(weight))
    assert_allclose(out, expected, rtol=1e-13)
    # label smoothing: the uniform part is weighted by w_j and divided by the same sum
    eps = 0.3
    smooth = -(log_probs[:2] * weight).sum(axis=1) / 3
    expected = ((1 - eps) * nll + eps * smooth).sum() / (weight[0] + weight[2])
    out = F.cross_entropy(Tensor(logits), Tensor(target), weight=Tensor(weight), label_smoothing=eps)
    assert_allclose(out, expected, rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_logits_give_exact_finite_losses_and_gradients(dtype, cpu_backend):
    logits = Tensor(np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0], [1e4, 1e4, -1e4]], dtype=dtype),
                    requires_grad=True)
    loss = F.cross_entropy(logits, Tensor(np.array([1, 1, 0])), reduction="none")
    expected = np.array([2e4, 0.0, math.log(2)])
    assert loss.dtype == dtype
    assert_allclose(loss, expected, rtol=1e-6 if dtype == np.float32 else 1e-15)
    loss.sum().backward()
    grad = logits.grad.numpy()
    assert np.isfinite(grad).all()
    assert_allclose(grad, [[1, -1, 0], [0, 0, 0], [-0.5, 0.5, 0]], atol=1e-7)
    mean = F.cross_entropy(logits, Tensor(np.array([0, 1, 1])), label_smoothing=0.1)
    assert np.isfinite(mean.item())


def test_shapes_of_unreduced_losses_and_unbatched_input():
    x = Tensor(np.zeros((2, 4, 3, 5)))
    target = Tensor(np.zeros((2, 3, 5), dtype=np.int64))
    assert F.cross_entropy(x, target, reduction="none").shape == (2, 3, 5)
    assert F.nll_loss(x, target, reduction="none").shape == (2, 3, 5)
    single = F.cross_entropy(Tensor(np.array([0.0, 0.0, 0.0, 0.0])), 2, reduction="none")
    assert single.shape == () and abs(single.item() - math.log(4)) < 1e-6


def test_cross_entropy_equals_nll_of_log_softmax():
    rng = np.random.default_rng(5)
    logits = tensor64(rng.normal(size=(4, 3, 2)), requires_grad=False)
    target = Tensor(rng.integers(0, 3, size=(4, 2)))
    weight = Tensor(np.array([0.5, 1.0, 2.0]))
    fused = F.cross_entropy(logits, target, weight=weight, reduction="none")
    composed = F.nll_loss(F.log_softmax(logits, 1), target, weight=weight, reduction="none")
    assert_allclose(fused, composed.numpy(), rtol=1e-13, atol=1e-15)


def test_integral_float_targets_are_accepted_as_class_indices():
    x = Tensor(np.array([[1.0, 2.0], [3.0, 0.0]]))
    as_float = F.cross_entropy(x, Tensor([1, 0]))          # lists become float32 Tensors
    as_int = F.cross_entropy(x, Tensor(np.array([1, 0])))
    assert_allclose(as_float, as_int.numpy())


def test_all_targets_ignored_gives_nan_mean_like_torch():
    x = Tensor(np.zeros((2, 3)))
    out = F.cross_entropy(x, Tensor(np.array([-100, -100])))
    assert np.isnan(out.item())
    assert F.cross_entropy(x, Tensor(np.array([-100, -100])), reduction="sum").item() == 0


def test_first_order_backward_records_nothing_and_create_graph_path_agrees():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(4, 3))
    target = Tensor(np.array([0, 2, 1, 1]))
    weight = Tensor(np.array([1.0, 2.0, 0.5]))
    grads = []
    for create_graph in (False, True):
        x = tensor64(logits)
        F.cross_entropy(x, target, weight=weight, label_smoothing=0.2).backward(
            create_graph=create_graph)
        grads.append(x.grad)
    assert not grads[0].requires_grad and grads[1].requires_grad
    assert_allclose(grads[0], grads[1].numpy(), rtol=1e-14)


def test_mse_loss_broadcast_warns_with_both_shapes():
    with pytest.warns(UserWarning, match=r"target shape \(3,\) .* input shape \(2, 3\)"):
        F.mse_loss(Tensor(np.zeros((2, 3))), Tensor(np.ones(3)))


# ---------------------------------------------------------------------------- errors

def test_target_out_of_range_names_the_value():
    x = Tensor(np.zeros((3, 4)))
    with pytest.raises(IndexError, match=r"cross_entropy: target value 7 is out of range for 4 classes"):
        F.cross_entropy(x, Tensor(np.array([0, 7, 1])))
    with pytest.raises(IndexError, match=r"nll_loss: target value -3 is out of range"):
        F.nll_loss(x, Tensor(np.array([0, -3, 1])))


def test_shape_mismatches_name_the_shapes():
    x = Tensor(np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"target shape \(2,\) does not match input shape \(3, 4\)"):
        F.cross_entropy(x, Tensor(np.array([0, 1])))
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\) .* got shape \(3,\)"):
        F.cross_entropy(x, Tensor(np.array([0, 1, 2])), weight=Tensor(np.ones(3)))
    with pytest.raises(ValueError, match=r"mse_loss: target shape \(2,\) cannot be broadcast to input shape \(3, 4\)"):
        F.mse_loss(x, Tensor(np.zeros(2)))


def test_other_bad_arguments():
    x = Tensor(np.zeros((3, 4)))
    t = Tensor(np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="reduction must be one of"):
        F.cross_entropy(x, t, reduction="average")
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got 1.5"):
        F.cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(TypeError, match="class-index targets must be integers"):
        F.cross_entropy(x, Tensor(np.array([0.5, 1.0, 2.0])))
    with pytest.raises(TypeError, match="expected a floating-point input"):
        F.nll_loss(Tensor(np.zeros((3, 4), dtype=np.int64)), t)
    with pytest.raises(ValueError, match="ignore_index=1 is not supported for class-probability"):
        F.cross_entropy(x, Tensor(np.full((3, 4), 0.25)), ignore_index=1)


def test_legacy_size_average_and_reduce_arguments():
    x = Tensor(np.array([[1.0, 2.0], [0.0, 0.0]]))
    t = Tensor(np.array([0, 1]))
    with pytest.warns(DeprecationWarning):
        summed = F.cross_entropy(x, t, size_average=False)
    assert_allclose(summed, F.cross_entropy(x, t, reduction="sum").numpy())
    with pytest.warns(DeprecationWarning):
        assert F.nll_loss(x, t, reduce=False).shape == (2,)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_and_nll_on_every_device(device, smoothing):
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(4, 5, 3)) * 4
    target = rng.integers(0, 5, size=(4, 3))
    target[0, 0] = -100
    weight = rng.uniform(0.5, 2, size=5)
    results = []
    for where in ("cpu", device):
        x = Tensor(logits, requires_grad=True, device=where)
        loss = F.cross_entropy(x, Tensor(target, device=where), weight=Tensor(weight, device=where),
                               label_smoothing=smoothing)
        nll = F.nll_loss(F.log_softmax(x, 1), Tensor(target, device=where),
                         weight=Tensor(weight, device=where))
        (loss + nll).backward()
        results.append((loss.to("cpu").numpy(), nll.to("cpu").numpy(), x.grad.to("cpu").numpy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
