"""The shared argument checks and window geometry (tinygrad_cnn/_arguments.py)."""
import numpy as np
import pytest

from tinygrad_cnn import Tensor
from tinygrad_cnn._arguments import PairError, WindowGeometry, check_tensor, output_length, pair


@pytest.mark.parametrize("value, expected", [(3, (3, 3)), ((2, 5), (2, 5)), ([4], (4, 4)),
                                             (np.int64(2), (2, 2))])
def test_pair_accepts_an_int_or_one_or_two_ints(value, expected):
    assert pair("op", "stride", value, 1) == expected


@pytest.mark.parametrize("value", [(1, 2, 3), (), (1.0, 2), (True, 1)])
def test_pair_refuses_other_sequences_as_value_and_type_error(value):
    with pytest.raises(PairError, match=r"op: stride must be an int or a pair of ints"):
        pair("op", "stride", value, 1)
    assert issubclass(PairError, ValueError) and issubclass(PairError, TypeError)


def test_pair_errors_name_the_op_the_argument_and_the_value():
    with pytest.raises(TypeError, match=r"op: kernel_size must be an int or a pair of ints, got 2.5"):
        pair("op", "kernel_size", 2.5, 1)
    with pytest.raises(ValueError, match=r"op: padding must be >= 0, got \(1, -1\)"):
        pair("op", "padding", (1, -1), 0)


def test_check_tensor():
    check_tensor("op", "x", Tensor(np.zeros(2)), floating=True)
    check_tensor("op", "x", None, optional=True)
    with pytest.raises(TypeError, match=r"op: argument 'x' must be a Tensor, got ndarray"):
        check_tensor("op", "x", np.zeros(2))
    with pytest.raises(TypeError, match=r"op: argument 'x' must be a Tensor or None, got list"):
        check_tensor("op", "x", [], optional=True)
    with pytest.raises(TypeError, match=r"op: x must have a floating dtype, got int64"):
        check_tensor("op", "x", Tensor(np.zeros(2, dtype=np.int64), dtype=np.int64), floating=True)


def test_output_length_matches_pytorchs_formula_with_and_without_ceil_mode():
    assert output_length(32, 3, 1, 1) == 32
    assert output_length(7, 3, 2, 0) == 3
    assert output_length(6, 3, 2, 0, ceil_mode=True) == 3
    assert output_length(5, 2, 2, 1, ceil_mode=True) == 3      # the last window starts in the image


def test_window_geometry():
    g = WindowGeometry.build("conv2d", (2, 3, 8, 6), 3, (2, 1), 1, (1, 2))
    assert g.out == (4, 4) and g.rows == 27 and g.columns == 32 and g.input_shape == (2, 3, 8, 6)
    assert g.kernel_args() == (3, 3, 2, 1, 1, 1, 1, 2, 4, 4)
    with pytest.raises(ValueError, match=r"conv2d: output size \(-2, -2\) is not positive: input of "
                                         r"shape \(1, 1, 2, 2\) is too small"):
        WindowGeometry.build("conv2d", (1, 1, 2, 2), 5, 1, 0, 1)
