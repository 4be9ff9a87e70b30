"""linear: gradients (first and second order) over leading shapes, PyTorch parity, errors."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tinygrad_cnn.nn.functional as F
from tinygrad_cnn import Tensor
from tinygrad_cnn.testing import arrays, assert_allclose, check_grad, check_gradgrad, tensor64


@st.composite
def linear_problems(draw):
    leading = tuple(draw(st.lists(st.integers(1, 3), max_size=3)))
    in_features = draw(st.integers(1, 4))
    vector_weight = draw(st.booleans())
    out_shape = () if vector_weight else (draw(st.integers(1, 4)),)
    x = draw(arrays(leading + (in_features,)))
    weight = draw(arrays(out_shape + (in_features,)))
    bias = draw(arrays(out_shape)) if draw(st.booleans()) else None
    return x, weight, bias


@settings(max_examples=20, deadline=None)
@given(problem=linear_problems())
def test_gradcheck_and_gradgradcheck(problem):
    x, weight, bias = problem
    if bias is None:
        check_grad(F.linear, x, weight)
        check_gradgrad(F.linear, x, weight)
    else:
        check_grad(F.linear, x, weight, bias)
        check_gradgrad(F.linear, x, weight, bias)


@settings(max_examples=15, deadline=None)
@given(problem=linear_problems())
def test_matches_torch(torch, problem):
    x, weight, bias = problem
    # torch 2.x routes a 2-D input with a 1-D weight and a bias to addmm, which rejects the
    # 1-D weight ("mat2 must be a matrix"); that combination is checked by gradcheck only.
    assume(not (x.ndim == 2 and weight.ndim == 1 and bias is not None))
    ours = [tensor64(a) for a in (x, weight, bias) if a is not None]
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, weight, bias) if a is not None]
    out = F.linear(*ours)
    expected = torch.nn.functional.linear(*theirs)
    assert out.shape == tuple(expected.shape)
    assert_allclose(out, expected.detach().numpy(), rtol=1e-12, atol=1e-14)
    upstream = np.sin(np.arange(max(out.array.size, 1))).reshape(out.shape)
    out.backward(Tensor(upstream))
    expected.backward(torch.tensor(upstream))
    for a, b in zip(ours, theirs):
        assert_allclose(a.grad, b.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_known_values_and_dtype():
    x = Tensor(np.array([[1.0, 2.0]], dtype=np.float32))
    w = Tensor(np.array([[1.0, 0.0], [0.5, -1.0], [2.0, 3.0]], dtype=np.float32))
    b = Tensor(np.array([0.0, 1.0, -1.0], dtype=np.float32))
    out = F.linear(x, w, b)
    assert out.dtype == np.float32 and out.shape == (1, 3)
    assert_allclose(out, [[1.0, -0.5, 7.0]])
    # 1-D weight: one output per row, the bias a scalar
    rows = Tensor(np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]]))
    out = F.linear(rows, Tensor(np.array([0.5, 1.0, -1.0])), Tensor(np.array(2.0)))
    assert out.shape == (2,)
    assert_allclose(out, [0.5 + 2.0 - 3.0 + 2.0, 0.0 - 1.0 - 4.0 + 2.0])


def test_shape_errors_name_the_shapes():
    x = Tensor(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"linear: input shape \(2, 5\) and weight shape \(3, 4\)"):
        F.linear(x, Tensor(np.zeros((3, 4))))
    with pytest.raises(ValueError, match=r"linear: bias shape \(4,\) does not match weight shape \(3, 5\)"):
        F.linear(x, Tensor(np.zeros((3, 5))), Tensor(np.zeros(4)))
    with pytest.raises(ValueError, match=r"weight must have shape .* got shape \(1, 3, 5\)"):
        F.linear(x, Tensor(np.zeros((1, 3, 5))))
    with pytest.raises(TypeError, match="linear: argument 'weight' must be a Tensor"):
        F.linear(x, np.zeros((3, 5)))


@settings(max_examples=25, deadline=None)
@given(rows=st.sampled_from([1, 3, 255, 256, 257, 600]), inner=st.integers(1, 9), columns=st.integers(1, 700),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_the_product_behind_linear_equals_matmul_on_both_paths(rows, inner, columns, dtype):
    import sys
    product = sys.modules["tinygrad_cnn.nn.functional.linear"]._product
    rng = np.random.default_rng(rows * 1000 + columns)
    a, b = rng.standard_normal((rows, inner)).astype(dtype), rng.standard_normal((inner, columns)).astype(dtype)
    out = product(a, b)
    assert out.flags.c_contiguous and out.dtype == dtype
    np.testing.assert_allclose(out, a @ b, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
