"""sort / topk / argmax / max / norm / gather and F.pad's modes: PyTorch's signatures and results,
float64 gradient checks over Hypothesis-drawn shapes."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinygrad_cnn as tg
import tinygrad_cnn.nn.functional as F
from tinygrad_cnn.testing import check_grad, distinct_arrays, shapes

torch = pytest.importorskip("torch")


def _pair(array):
    return tg.tensor(array), torch.tensor(array)


@settings(max_examples=30, deadline=None)
@given(shape=shapes(1, 3, 1, 5), data=st.data())
def test_sort_topk_max_argmax_match_torch(shape, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    array = rng.integers(-3, 4, shape).astype(np.float64)         # ties on purpose
    ours, theirs = _pair(array)
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    descending = data.draw(st.booleans())
    values, indices = tg.sort(ours, dim, descending=descending, stable=True)
    t_values, t_indices = torch.sort(theirs, dim=dim, descending=descending, stable=True)
    np.testing.assert_array_equal(values.numpy(), t_values.numpy())
    np.testing.assert_array_equal(indices.numpy(), t_indices.numpy())
    k = data.draw(st.integers(0, shape[dim]))
    largest = data.draw(st.booleans())
    values, indices = ours.topk(k, dim, largest=largest)
    t_values, t_indices = theirs.topk(k, dim, largest=largest)
    np.testing.assert_array_equal(values.numpy(), t_values.numpy())
    np.testing.assert_array_equal(np.take_along_axis(array, indices.numpy(), dim), t_values.numpy())
    for name in ("max", "min"):
        v, i = getattr(tg, name)(ours, dim, keepdim=True)
        tv, ti = getattr(torch, name)(theirs, dim, keepdim=True)
        np.testing.assert_array_equal(v.numpy(), tv.numpy())
        np.testing.assert_array_equal(i.numpy(), ti.numpy())
    np.testing.assert_array_equal(tg.argmax(ours, dim).numpy(), torch.argmax(theirs, dim).numpy())
    np.testing.assert_array_equal(tg.argmin(ours, dim).numpy(), torch.argmin(theirs, dim).numpy())


@pytest.mark.parametrize("p", [2, "fro", 1, 3, float("inf"), float("-inf")])
def test_norm_matches_torch(p):
    array = np.random.default_rng(0).standard_normal((3, 4))
    ours, theirs = _pair(array)
    np.testing.assert_allclose(tg.norm(ours, p).item(), torch.norm(theirs, p).item(), rtol=1e-12)
    if p != "fro":
        np.testing.assert_allclose(ours.norm(p, dim=1, keepdim=True).numpy(),
                                   theirs.norm(p, dim=1, keepdim=True).numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="norm: unsupported p"):
        ours.norm("nuc")


@settings(max_examples=25, deadline=None)
@given(shape=shapes(1, 3, 2, 4), data=st.data())
def test_sort_topk_gather_norm_gradients_float64(shape, data):
    array = data.draw(distinct_arrays(shape))
    dim = data.draw(st.integers(0, len(shape) - 1))
    k = data.draw(st.integers(1, shape[dim]))
    check_grad(lambda x: x.sort(dim, descending=True).values * 1.0, array)
    check_grad(lambda x: x.topk(k, dim).values, array)
    index = np.random.default_rng(0).integers(0, shape[dim], shape)
    check_grad(lambda x: x.gather(dim, tg.tensor(index, dtype=np.int64)), array)
    check_grad(lambda x: (x + 5.0).norm(dim=dim), array)


def test_gather_matches_torch():
    array = np.arange(12.0).reshape(3, 4)
    index = np.array([[0, 3], [2, 1], [1, 1]])
    np.testing.assert_array_equal(tg.gather(tg.tensor(array), 1, tg.tensor(index, dtype=np.int64)).numpy(),
                                  torch.gather(torch.tensor(array), 1, torch.tensor(index)).numpy())


PAD_CASES = [((1, 2), "constant"), ((2, 1, 0, 3), "constant"), ((1, 1, 1, 1, 1, 0), "constant"),
             ((2, 1), "reflect"), ((1, 2, 2, 1), "reflect"), ((3, 0), "replicate"), ((1, 2, 0, 3), "replicate"),
             ((2, 1), "circular"), ((1, 2, 3, 1), "circular")]


@pytest.mark.parametrize("pad,mode", PAD_CASES)
def test_pad_matches_torch(pad, mode):
    shape = {2: (2, 3, 5), 4: (2, 3, 4, 5), 6: (2, 2, 3, 4, 5)}[len(pad)]
    array = np.random.default_rng(0).standard_normal(shape)
    ours, theirs = _pair(array)
    kwargs = {"value": 1.5} if mode == "constant" else {}
    np.testing.assert_array_equal(F.pad(ours, pad, mode=mode, **kwargs).numpy(),
                                  torch.nn.functional.pad(theirs, pad, mode=mode, **kwargs).numpy())


@settings(max_examples=20, deadline=None)
@given(h=st.integers(2, 5), w=st.integers(3, 5), mode=st.sampled_from(["reflect", "replicate", "circular",
                                                                         "constant"]), data=st.data())
def test_pad_gradients_float64(h, w, mode, data):
    before, after = data.draw(st.integers(0, 1)), data.draw(st.integers(0, 2))
    top = data.draw(st.integers(0, 1))
    array = np.random.default_rng(h * 10 + w).standard_normal((1, 2, h, w))
    check_grad(lambda x: F.pad(x, (before, after, top, 1), mode=mode), array)


def test_pad_errors():
    x = tg.ones(1, 1, 3, 3)
    with pytest.raises(ValueError, match=r"reflect padding \(3, 0\) must be smaller than the padded dimension of size 3"):
        F.pad(x, (3, 0), mode="reflect")
    with pytest.raises(ValueError, match="mode 'wrap' is not one of"):
        F.pad(x, (1, 1), mode="wrap")
    with pytest.raises(ValueError, match="value=2 only applies to mode='constant'"):
        F.pad(x, (1, 1), mode="replicate", value=2)
