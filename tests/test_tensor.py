"""Tensor construction, dtype rules, conversions, factories and bad-input errors."""
import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import Tensor
import tinygrad_cnn.nn.functional as F


def test_python_data_becomes_float32_and_numpy_keeps_dtype():
    assert Tensor(3).dtype == np.float32
    assert Tensor([[1, 2], [3, 4]]).dtype == np.float32
    assert Tensor(np.zeros(3, np.float64)).dtype == np.float64
    assert Tensor(np.zeros(3, np.float16)).dtype == np.float16
    assert Tensor(np.arange(3)).dtype == np.int64
    assert Tensor([True, False]).dtype == np.bool_
    assert Tensor([1, 2], dtype=np.int64).dtype == np.int64


def test_numpy_input_is_copied():
    a = np.ones(3)
    t = Tensor(a)
    a[0] = 5
    assert t.numpy()[0] == 1
    shared = tg.from_numpy(a)
    a[1] = 7
    assert shared.numpy()[1] == 7


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="floating point"):
        Tensor(np.arange(3), requires_grad=True)
    with pytest.raises(TypeError, match="floating point"):
        tg.arange(3).requires_grad_()


def test_properties_and_conversions():
    t = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert t.shape == (2, 3) and t.ndim == 2 and t.device == "cpu" and t.is_leaf
    assert t.size() == (2, 3) and t.size(1) == 3 and t.numel() == 6 and len(t) == 2
    assert t.grad is None
    y = t * 2
    assert not y.is_leaf and y.grad_fn is not None
    assert Tensor([2.5]).item() == 2.5
    with pytest.raises(ValueError, match="one-element"):
        t.item()
    assert t.detach().requires_grad is False
    assert t.double().dtype == np.float64 and t.float().dtype == np.float32
    assert t.long().dtype == np.int64
    assert "requires_grad=True" in repr(t)
    assert "grad_fn" in repr(y)
    np.testing.assert_array_equal(np.asarray(t), t.numpy())


def test_factories():
    tg.manual_seed(3)
    a = tg.randn(2, 3)
    tg.manual_seed(3)
    b = tg.randn((2, 3))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert a.dtype == np.float32 and a.shape == (2, 3)
    assert tg.zeros(2, 2).numpy().sum() == 0 and tg.ones(3).numpy().sum() == 3
    assert tg.full((2, 2), 7.0).numpy().max() == 7
    assert tg.arange(5).dtype == np.int64 and tg.arange(0, 1, 0.25).dtype == np.float32
    assert tg.linspace(0, 1, 5).shape == (5,)
    np.testing.assert_array_equal(tg.eye(3).numpy(), np.eye(3))
    assert tg.zeros_like(a).shape == a.shape and tg.ones_like(a, dtype=np.float64).dtype == np.float64
    r = tg.rand(1000)
    assert 0 <= r.numpy().min() and r.numpy().max() < 1
    assert tg.randint(0, 5, (10,)).dtype == np.int64
    assert tg.tensor([1.0, 2.0], requires_grad=True).requires_grad


def test_inplace_refused_on_tensors_that_require_grad():
    w = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="in-place"):
        w[0] = 3.0
    with tg.no_grad():
        w[0] = 3.0
        w.zero_()
    assert w.numpy().sum() == 0


def test_bad_shapes_name_the_op_and_both_shapes():
    a, b = Tensor(np.ones((2, 3))), Tensor(np.ones((4,)))
    with pytest.raises(ValueError, match=r"add: shapes \(2, 3\) and \(4,\)"):
        a + b
    with pytest.raises(ValueError, match=r"mul: shapes \(2, 3\) and \(4,\)"):
        a * b
    with pytest.raises(ValueError, match=r"matmul: shapes \(2, 3\) and \(4, 1\)"):
        a @ Tensor(np.ones((4, 1)))
    with pytest.raises(ValueError, match=r"reshape: shape \(4, 2\) is invalid for input of shape \(2, 3\)"):
        a.reshape(4, 2)
    with pytest.raises(ValueError, match="cat: tensor 1 has shape"):
        tg.cat([a, Tensor(np.ones((3, 3)))], dim=1)
    with pytest.raises(IndexError, match="out of range"):
        a.sum(dim=2)


def test_backward_on_non_scalar_needs_gradient():
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar outputs"):
        (x * 2).backward()
    with pytest.raises(RuntimeError, match="gradient has shape"):
        (x * 2).backward(np.ones(4))
    (x * 2).backward(np.ones(3))
    np.testing.assert_array_equal(x.grad.numpy(), [2, 2, 2])
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(3)).sum().backward()


def test_cuda_request_without_cupy_is_clear():
    from tinygrad_cnn import backend
    if backend.cupy_or_none() is not None:
        pytest.skip("CuPy is installed")
    with pytest.raises(RuntimeError, match=r"tinygrad_cnn\[cuda\]"):
        Tensor([1.0], device="cuda")


def test_mixed_dtypes_promote_and_gradients_keep_input_dtype():
    a = Tensor(np.ones(3, np.float32), requires_grad=True)
    b = Tensor(np.ones(3, np.float64), requires_grad=True)
    y = (a * b).sum()
    assert y.dtype == np.float64
    y.backward()
    assert a.grad.dtype == np.float32 and b.grad.dtype == np.float64


def test_numpy_scalars_on_the_left_defer_to_tensor():
    t = Tensor(np.ones(2, np.float32), requires_grad=True)
    out = np.float32(2.0) * t
    assert isinstance(out, Tensor) and out.requires_grad
    assert isinstance(np.ones(2) + t, Tensor)


def test_comparisons_are_bool_and_not_differentiable():
    t = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    mask = t > 1.5
    assert mask.dtype == np.bool_ and not mask.requires_grad
    np.testing.assert_array_equal((t == 2.0).numpy(), [False, True, False])


def test_integer_operands_take_the_float_dtype_as_in_pytorch():
    t = Tensor(np.ones(2, np.float32), requires_grad=True)
    assert (t * Tensor(np.array([1, 0]))).dtype == np.float32
    assert (t + [1, 2]).dtype == np.float32
    assert (Tensor(np.array([1, 2])) + 1.5).dtype == np.float32
    assert (Tensor(np.array([1, 2])) * Tensor(np.array([3, 4]))).dtype == np.int64
    assert (t.double() + t).dtype == np.float64


# ---------------------------------------------------------------------------- data a tensor refuses

@pytest.mark.parametrize("data, kind", [(np.array(["a", "b"]), "strings"), (np.array([b"a"]), "bytes"),
                                        (np.array([1, "a"], dtype=object), "Python objects"),
                                        (["a", "b"], "strings"), ([1, "a"], "strings"),
                                        (np.array([1 + 2j]), "complex")])
def test_strings_objects_and_complex_numbers_are_refused(data, kind):
    with pytest.raises(TypeError, match=f"Tensor: .*dtype .*{kind}"):
        Tensor(data)


@pytest.mark.parametrize("data, message", [
    ([[1, 2], [3]], r"expected sequence of length 2 at dim 1 \(got 1 at element \[1\]\)"),
    ([[[1, 2], [3, 4]], [[1, 2], [3]]], r"expected sequence of length 2 at dim 2 \(got 1 at element \[1\]\)"),
    ([[1, 2], 3], r"at dim 0, element \[1\] is a number but element \[0\] is a sequence"),
])
def test_ragged_nested_lists_name_the_dimension_and_lengths(data, message):
    with pytest.raises(ValueError, match=message):
        Tensor(data)


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">i8", "<f4"])
def test_byte_order_is_converted_to_the_machines(dtype):
    values = np.arange(12, dtype=dtype).reshape(3, 4)
    t = Tensor(values)
    assert t.dtype.isnative and t.dtype == values.dtype.newbyteorder("=")
    np.testing.assert_array_equal(t.numpy(), values)
    if t.dtype.kind == "f":
        weight = Tensor(np.ones((2, 1, 2, 2), dtype=t.dtype))
        out = F.conv2d(t.reshape(1, 1, 3, 4), weight).relu()     # reaches the Numba kernels
        np.testing.assert_allclose(out.numpy()[0, 0], [[10, 14, 18], [26, 30, 34]])


def test_from_numpy_refuses_what_it_cannot_share():
    with pytest.raises(ValueError, match="from_numpy: .*>f4.*byte order"):
        tg.from_numpy(np.ones(3, dtype=">f4"))
    with pytest.raises(TypeError, match="from_numpy: .*strings"):
        tg.from_numpy(np.array(["a"]))
    with pytest.raises(TypeError, match="from_numpy: expected a numpy.ndarray, got list"):
        tg.from_numpy([1.0])
