"""Convolution: conv2d, im2col/col2im (unfold/fold) and their kernels."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_cnn
import tinygrad_cnn.nn.functional as F
from tinygrad_cnn import backend
from tinygrad_cnn._arguments import WindowGeometry, phase_grid_length
from tinygrad_cnn.kernels.cpu import _workers
from tinygrad_cnn.testing import (
    assert_allclose, check_grad, check_gradgrad, conv2d_settings, non_contiguous, tensor64,
)

Tensor = tinygrad_cnn.Tensor
IMPLS = ["numpy", "numba"]


def random_arrays(seed, *shapes, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for shape in shapes]


def conv_args(s):
    return dict(stride=s["stride"], padding=s["padding"], dilation=s["dilation"],
                groups=s["groups"])


def output_size(s):
    (_, _, h, w), (_, _, kh, kw) = s["input_shape"], s["weight_shape"]
    return tuple((size + 2 * p - d * (k - 1) - 1) // st + 1 for size, k, st, p, d in
                 zip((h, w), (kh, kw), s["stride"], s["padding"], s["dilation"]))


def direct_conv2d(x, w, b, stride, padding, dilation, groups):
    """Convolution straight from its definition, one output element at a time."""
    n_batch, c_in, height, width = x.shape
    c_out, c_per_group, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n_batch, c_out, out_h, out_w))
    out_per_group = c_out // groups
    for n in range(n_batch):
        for o in range(c_out):
            first_channel = (o // out_per_group) * c_per_group
            for oh in range(out_h):
                for ow in range(out_w):
                    total = 0.0 if b is None else b[o]
                    for c in range(c_per_group):
                        for i in range(kh):
                            for j in range(kw):
                                row, col = oh * sh - ph + i * dh, ow * sw - pw + j * dw
                                if 0 <= row < height and 0 <= col < width:
                                    total += w[o, c, i, j] * x[n, first_channel + c, row, col]
                    out[n, o, oh, ow] = total
    return out


def kernel_geometry(s):
    (kh, kw), (sh, sw) = s["weight_shape"][2:], s["stride"]
    (ph, pw), (dh, dw) = s["padding"], s["dilation"]
    return (kh, kw, sh, sw, ph, pw, dh, dw) + output_size(s)


def wide_case(s):
    """Arguments of the im2col_wide kernel for settings s with unit stride, and its grid."""
    (kh, kw), (ph, pw), (dh, dw) = s["weight_shape"][2:], s["padding"], s["dilation"]
    width = s["input_shape"][3]
    out_h, out_w = output_size(dict(s, stride=(1, 1)))
    return (kh, kw, ph, pw, dh, dw), out_h, out_w, width + 2 * pw


@settings(max_examples=40, deadline=None)
@given(s=conv2d_settings(max_batch=3, max_channels_per_group=3, max_kernel=4, max_stride=1,
                         max_padding=3, max_dilation=3, max_spatial=9),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_wide_im2col_kernel_equals_its_reference_and_plain_im2col(s, dtype, seed):
    """Unit-stride columns on the padded-width grid: column oh*Wp + ow is window (oh, ow)
    for ow < OW; the grid columns past OW are dropped by the caller."""
    pytest.importorskip("numba")
    args, out_h, out_w, grid_w = wide_case(s)
    n_batch, channels = s["input_shape"][:2]
    rows = channels * args[0] * args[1]
    (x,) = random_arrays(seed, s["input_shape"], dtype=dtype)
    plain = backend.kernel("im2col", np, impl="numpy")(
        x, args[0], args[1], 1, 1, *args[2:], out_h, out_w).reshape(rows, n_batch, out_h, out_w)
    results = {}
    for impl in IMPLS:
        wide = backend.kernel("im2col_wide", np, impl=impl)(x, *args)
        assert wide.shape == (rows, n_batch * out_h * grid_w) and wide.dtype == dtype, impl
        grid = wide.reshape(rows, n_batch, out_h, grid_w)
        np.testing.assert_array_equal(grid[..., :out_w], plain, err_msg=impl)
        results[impl] = wide
    # The straddling columns too: the Numba kernel is the reference's copy, bit for bit.
    if len(results) == 2:
        np.testing.assert_array_equal(results["numba"], results["numpy"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_kernels_equal_the_reference_on_large_inputs(dtype):
    """Big enough (~130k column entries) that size-based dispatch takes the threaded loops."""
    pytest.importorskip("numba")
    shape = (3, 8, 31, 29)                      # odd sizes; 3x3 stride 1 padding 1
    (x,) = random_arrays(17, shape, dtype=dtype)
    args = (3, 3, 1, 1, 1, 1, 1, 1, 31, 29)
    cols_ref = backend.kernel("im2col", np, impl="numpy")(x, *args)
    assert cols_ref.size >= 1 << 17
    np.testing.assert_array_equal(backend.kernel("im2col", np, impl="numba")(x, *args), cols_ref)
    (y,) = random_arrays(18, cols_ref.shape, dtype=dtype)
    back_ref = backend.kernel("col2im", np, impl="numpy")(y, *shape, *args)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(backend.kernel("col2im", np, impl="numba")(y, *shape, *args),
                               back_ref, rtol=tol, atol=tol)
    wide = [backend.kernel("im2col_wide", np, impl=impl)(x, 3, 3, 1, 1, 1, 1).reshape(
        72, 3, 31, 31)[..., :29] for impl in IMPLS]
    np.testing.assert_array_equal(wide[1], wide[0])
    np.testing.assert_array_equal(wide[0], cols_ref.reshape(72, 3, 31, 29))


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=25, deadline=None)
@given(s=conv2d_settings(max_batch=2, max_kernel=4, max_stride=3, max_padding=3,
                         max_dilation=3, max_spatial=8),
       seed=st.integers(0, 2**16))
def test_col2im_is_the_adjoint_of_im2col(impl, s, seed):
    """<im2col(x), y> == <x, col2im(y)> for every x and y."""
    n_batch, channels, height, width = s["input_shape"]
    args = kernel_geometry(s)
    x, = random_arrays(seed, s["input_shape"])
    cols = backend.kernel("im2col", np, impl=impl)(x, *args)
    y, = random_arrays(seed + 1, cols.shape)
    folded = backend.kernel("col2im", np, impl=impl)(y, n_batch, channels, height, width, *args)
    np.testing.assert_allclose(np.vdot(cols, y), np.vdot(x, folded), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=25, deadline=None)
@given(s=conv2d_settings(max_batch=2, max_kernel=4, max_stride=4, max_padding=3,
                         max_dilation=3, max_spatial=9),
       seed=st.integers(0, 2**16))
def test_phase_columns_are_standard_columns_and_col2im_phases_their_adjoint(impl, s, seed):
    """im2col_phases on the valid grid (ow < OW) is im2col, with stride 1 it is im2col_wide
    (straddling columns included), and <im2col_phases(x), y> == <x, col2im_phases(y)>."""
    n_batch, channels, height, width = s["input_shape"]
    args = kernel_geometry(s)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = args[:2], args[2:4], args[4:6], args[6:8]
    out_h, out_w = args[8:]
    x, = random_arrays(seed, s["input_shape"])
    cols = backend.kernel("im2col_phases", np, impl=impl)(x, *args)
    grid_w = phase_grid_length(out_w, kw, sw, dw)
    valid = cols.reshape(-1, n_batch, out_h, grid_w)[..., :out_w].reshape(cols.shape[0], -1)
    np.testing.assert_array_equal(valid, backend.kernel("im2col", np, impl="numpy")(x, *args))
    if (sh, sw) == (1, 1):
        wide = backend.kernel("im2col_wide", np, impl="numpy")(x, kh, kw, ph, pw, dh, dw)
        np.testing.assert_array_equal(cols, wide)
    y, = random_arrays(seed + 1, cols.shape)
    folded = backend.kernel("col2im_phases", np, impl=impl)(y, n_batch, channels, height, width,
                                                            *args)
    np.testing.assert_allclose(np.vdot(cols, y), np.vdot(x, folded), rtol=1e-10, atol=1e-10)


def test_phase_kernels_equal_the_reference_on_large_inputs():
    """A ResNet-20 downsampling slice and an AlexNet conv1 image, large enough for the
    threaded loops."""
    pytest.importorskip("numba")
    for shape, kernel, stride, padding in [((4, 16, 32, 32), 3, 2, 1), ((1, 3, 227, 227), 11, 4, 0)]:
        (x,) = random_arrays(19, shape, dtype=np.float32)
        geometry = WindowGeometry.build("conv2d", shape, kernel, stride, padding, 1)
        args = geometry.kernel_args()
        cols = backend.kernel("im2col_phases", np, impl="numpy")(x, *args)
        assert cols.size >= 1 << 17
        np.testing.assert_array_equal(backend.kernel("im2col_phases", np, impl="numba")(x, *args),
                                      cols)
        (y,) = random_arrays(20, cols.shape, dtype=np.float32)
        np.testing.assert_allclose(
            backend.kernel("col2im_phases", np, impl="numba")(y, *shape, *args),
            backend.kernel("col2im_phases", np, impl="numpy")(y, *shape, *args),
            rtol=1e-5, atol=1e-5)


def test_im2col_layout_is_the_documented_one():
    """cols[(c*kh + i)*kw + j, n*L + oh*OW + ow] = x_padded[n, c, oh*s + i*d, ow*s + j*d]."""
    x = np.arange(2 * 3 * 5 * 4, dtype=np.float64).reshape(2, 3, 5, 4)
    kh, kw, sh, sw, ph, pw, dh, dw = 2, 3, 2, 1, 1, 1, 1, 2
    out_h, out_w = (5 + 2 - 1 - 1) // 2 + 1, (4 + 2 - 4 - 1) // 1 + 1
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    for impl in IMPLS:
        cols = backend.kernel("im2col", np, impl=impl)(x, kh, kw, sh, sw, ph, pw, dh, dw, out_h,
                                                       out_w)
        for n, c, i, j, oh, ow in np.ndindex(2, 3, kh, kw, out_h, out_w):
            assert cols[(c * kh + i) * kw + j, n * out_h * out_w + oh * out_w + ow] == \
                padded[n, c, oh * sh + i * dh, ow * sw + j * dw]


def test_the_im2col_picture_in_the_docs_is_what_im2col_returns():
    """docs/ops/conv.md draws cols for two 3x3 images (values 0..17) and a 2x2 kernel."""
    import pathlib
    import re
    doc = pathlib.Path(__file__).resolve().parents[3] / "docs" / "ops" / "conv.md"
    rows = [[int(v) for v in line.split(")")[-1].split()]
            for line in doc.read_text().splitlines() if re.search(r"\(i,j\)=\(\d,\d\)", line)]
    x = np.arange(18.0).reshape(2, 1, 3, 3)
    for impl in IMPLS:
        cols = backend.kernel("im2col", np, impl=impl)(x, 2, 2, 1, 1, 0, 0, 1, 1, 2, 2)
        np.testing.assert_array_equal(cols, np.array(rows, dtype=float))


@pytest.mark.parametrize("impl", IMPLS)
def test_kernels_accept_non_contiguous_input_through_the_public_functions(impl):
    x, = random_arrays(3, (2, 3, 6, 5))
    with backend.cpu_backend(impl):
        expected = F.unfold(Tensor(x), 3, padding=1).numpy()
        assert_allclose(F.unfold(Tensor(non_contiguous(x)), 3, padding=1), expected)
        folded = F.fold(Tensor(non_contiguous(expected)), (6, 5), 3, padding=1)
        assert_allclose(folded, F.fold(Tensor(expected.copy()), (6, 5), 3, padding=1), rtol=1e-12)


# ---------------------------------------------------------------------------
# Forward values
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=25, deadline=None)
@given(s=conv2d_settings(max_batch=2, max_channels_per_group=3, max_groups=3, max_kernel=3,
                         max_spatial=7),
       seed=st.integers(0, 2**16))
def test_conv2d_forward_matches_a_direct_loop(impl, s, seed):
    x, w, b = random_arrays(seed, s["input_shape"], s["weight_shape"], (s["weight_shape"][0],))
    b = b if s["bias"] else None
    expected = direct_conv2d(x, w, b, **conv_args(s))
    with backend.cpu_backend(impl):
        out = F.conv2d(Tensor(x), Tensor(w), None if b is None else Tensor(b), **conv_args(s))
    assert out.shape == expected.shape and out.dtype == np.float64
    assert_allclose(out, expected, rtol=1e-10, atol=1e-12)


def test_conv2d_float32_stays_float32_and_is_accurate():
    x, w, b = random_arrays(7, (2, 4, 9, 9), (8, 2, 3, 3), (8,), dtype=np.float32)
    out = F.conv2d(Tensor(x), Tensor(w), Tensor(b), stride=2, padding=1, groups=2)
    assert out.dtype == np.float32
    expected = direct_conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                             (2, 2), (1, 1), (1, 1), 2)
    assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_int_and_tuple_arguments_are_equivalent():
    x, w = random_arrays(1, (1, 2, 8, 7), (3, 2, 3, 3))
    a = F.conv2d(Tensor(x), Tensor(w), stride=2, padding=1, dilation=2)
    b = F.conv2d(Tensor(x), Tensor(w), stride=(2, 2), padding=[1, 1], dilation=(2, 2))
    assert_allclose(a, b.numpy(), rtol=0)


def test_alexnet_conv1_maps_227_to_55():
    x, w, b = random_arrays(0, (1, 3, 227, 227), (96, 3, 11, 11), (96,), dtype=np.float32)
    out = F.conv2d(Tensor(x), Tensor(w), Tensor(b), stride=4)
    assert out.shape == (1, 96, 55, 55)
    # Spot-check a few output pixels against the definition.
    for o, oh, ow in [(0, 0, 0), (17, 54, 3), (95, 27, 54)]:
        window = x[0, :, oh * 4:oh * 4 + 11, ow * 4:ow * 4 + 11].astype(np.float64)
        expected = (window * w[o]).sum() + b[o]
        np.testing.assert_allclose(out.numpy()[0, o, oh, ow], expected, rtol=1e-4, atol=1e-4)


def test_alexnet_two_group_conv_is_two_independent_convolutions():
    """AlexNet CONV2: 96 -> 256 channels, 5x5, padding 2, groups=2 (small spatial size here)."""
    x, w, b = random_arrays(1, (2, 96, 6, 6), (256, 48, 5, 5), (256,))
    out = F.conv2d(Tensor(x), Tensor(w), Tensor(b), padding=2, groups=2).numpy()
    halves = [F.conv2d(Tensor(x[:, 48 * g:48 * (g + 1)]), Tensor(w[128 * g:128 * (g + 1)]),
                       Tensor(b[128 * g:128 * (g + 1)]), padding=2).numpy() for g in range(2)]
    assert_allclose(out, np.concatenate(halves, axis=1), rtol=1e-12, atol=1e-12)


def test_depthwise_conv_filters_each_channel_alone():
    x, w = random_arrays(2, (2, 5, 6, 6), (5, 1, 3, 3))
    out = F.conv2d(Tensor(x), Tensor(w), padding=1, groups=5).numpy()
    for c in range(5):
        single = F.conv2d(Tensor(x[:, c:c + 1]), Tensor(w[c:c + 1]), padding=1).numpy()
        assert_allclose(out[:, c:c + 1], single, rtol=1e-12, atol=1e-12)


def test_unbatched_input_and_string_padding():
    x, w = random_arrays(4, (2, 7, 6), (3, 2, 4, 3))
    batched = F.conv2d(Tensor(x[None]), Tensor(w), padding=1).numpy()
    assert_allclose(F.conv2d(Tensor(x), Tensor(w), padding=1), batched[0], rtol=0)
    assert_allclose(F.conv2d(Tensor(x), Tensor(w), padding="valid"),
                    F.conv2d(Tensor(x), Tensor(w)).numpy(), rtol=0)
    # 'same' with an even kernel pads (1, 2) rows: the extra one at the bottom, as PyTorch.
    same = F.conv2d(Tensor(x[None]), Tensor(w), padding="same")
    assert same.shape == (1, 3, 7, 6)
    padded = np.pad(x[None], ((0, 0), (0, 0), (1, 2), (1, 1)))
    assert_allclose(same, direct_conv2d(padded, w, None, (1, 1), (0, 0), (1, 1), 1), rtol=1e-10,
                    atol=1e-12)


def test_im2col_unfold_shapes_and_fold_inverts_for_non_overlapping_windows():
    x, = random_arrays(5, (2, 3, 6, 4))
    cols = F.im2col(Tensor(x), (3, 2), stride=(3, 2))
    assert cols.shape == (2, 3 * 3 * 2, 2 * 2)
    assert F.unfold(Tensor(x[0]), (3, 2), stride=(3, 2)).shape == (18, 4)
    # Windows tile the image exactly once, so fold(unfold(x)) == x.
    assert_allclose(F.fold(cols, (6, 4), (3, 2), stride=(3, 2)), x, rtol=0)
    assert_allclose(F.col2im(cols, (6, 4), (3, 2), stride=(3, 2)), x, rtol=0)


def test_fold_of_unfold_counts_window_coverage():
    x = np.ones((1, 1, 4, 4))
    cover = F.fold(F.unfold(Tensor(x), 3, padding=1), (4, 4), 3, padding=1).numpy()[0, 0]
    assert_allclose(cover, np.array([[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4.]]),
                    rtol=0)


# ---------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------

def conv_fn(s):
    if s["bias"]:
        return lambda x, w, b: F.conv2d(x, w, b, **conv_args(s))
    return lambda x, w: F.conv2d(x, w, None, **conv_args(s))


def conv_inputs(s, seed):
    shapes = [s["input_shape"], s["weight_shape"]] + ([(s["weight_shape"][0],)] if s["bias"] else [])
    return random_arrays(seed, *shapes)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=20, deadline=None)
@given(s=conv2d_settings(max_batch=2, max_channels_per_group=2, max_spatial=6),
       seed=st.integers(0, 2**16))
def test_conv2d_gradcheck(impl, s, seed):
    with backend.cpu_backend(impl):
        check_grad(conv_fn(s), *conv_inputs(s, seed))


@settings(max_examples=15, deadline=None)
@given(s=conv2d_settings(max_batch=2, max_channels_per_group=2, max_kernel=3, max_spatial=5),
       seed=st.integers(0, 2**16))
def test_conv2d_gradgradcheck(s, seed):
    # Random projections keep this fast; the full Jacobian is checked in the next test.
    check_gradgrad(conv_fn(s), *conv_inputs(s, seed), fast_mode=True)


def test_conv2d_gradgradcheck_full_jacobian_with_groups_stride_padding_dilation():
    s = dict(input_shape=(2, 4, 5, 4), weight_shape=(2, 2, 2, 3), stride=(2, 1), padding=(1, 2),
             dilation=(1, 2), groups=2, bias=True)
    check_gradgrad(conv_fn(s), *conv_inputs(s, 21))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name, s", [
    # AlexNet CONV1: 11x11 kernel, stride 4, padding 2 (few channels, small image).
    ("alexnet_11x11_stride4", dict(input_shape=(1, 2, 15, 18), weight_shape=(2, 2, 11, 11),
                                   stride=(4, 4), padding=(2, 2), dilation=(1, 1), groups=1,
                                   bias=True)),
    # AlexNet CONV2: two groups, 5x5, padding 2: each half of the filters sees half the channels.
    ("alexnet_two_groups", dict(input_shape=(2, 4, 5, 6), weight_shape=(4, 2, 5, 5),
                                stride=(1, 1), padding=(2, 2), dilation=(1, 1), groups=2,
                                bias=True)),
    # Depthwise with channel multiplier 2, strided, dilated, rectangular padding.
    ("depthwise", dict(input_shape=(2, 3, 7, 6), weight_shape=(6, 1, 3, 3), stride=(2, 1),
                       padding=(1, 2), dilation=(2, 1), groups=3, bias=True)),
])
def test_conv2d_gradcheck_alexnet_and_depthwise_settings(impl, name, s):
    with backend.cpu_backend(impl):
        check_grad(conv_fn(s), *conv_inputs(s, 31))


@settings(max_examples=10, deadline=None)
@given(s=conv2d_settings(max_batch=2, max_channels_per_group=1, max_groups=4, max_spatial=6),
       seed=st.integers(0, 2**16))
def test_depthwise_conv2d_gradcheck_and_gradgradcheck(s, seed):
    """groups == C_in == C_out: one filter per channel."""
    assert s["groups"] == s["input_shape"][1] == s["weight_shape"][0]
    check_grad(conv_fn(s), *conv_inputs(s, seed))
    check_gradgrad(conv_fn(s), *conv_inputs(s, seed), fast_mode=True)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("s", [
    dict(input_shape=(5, 4, 7, 6), weight_shape=(6, 2, 3, 2), stride=(2, 1), padding=(1, 1),
         dilation=(1, 2), groups=2, bias=True),
    # unit stride: the wide columns, and dx as a correlation of G with the flipped kernel
    dict(input_shape=(5, 4, 7, 6), weight_shape=(6, 2, 3, 3), stride=(1, 1), padding=(1, 2),
         dilation=(2, 1), groups=2, bias=True),
], ids=["strided", "unit_stride"])
def test_conv2d_in_batch_slices_equals_the_whole_batch(impl, s, monkeypatch):
    """On the CPU the batch may be processed a few images at a time (a cache-sized column
    buffer): force one-image slices and compare values and gradients with one whole-batch GEMM."""
    arrays = conv_inputs(s, 41)
    (upstream,) = random_arrays(42, (5, 6) + output_size(s))
    results = {}
    for budget in (None, 1):
        monkeypatch.setattr(_workers, "chunk_bytes", lambda xp, budget=budget: budget)
        inputs = [tensor64(a) for a in arrays]
        with backend.cpu_backend(impl):
            out = conv_fn(s)(*inputs)
            (out * Tensor(upstream)).sum().backward()
        results[budget] = [out.numpy()] + [t.grad.numpy() for t in inputs]
    for whole, sliced in zip(results[None], results[1]):
        assert_allclose(sliced, whole, rtol=1e-12, atol=1e-12)
    expected = direct_conv2d(*arrays, **conv_args(s))
    assert_allclose(results[1][0], expected, rtol=1e-10, atol=1e-12)
    with backend.cpu_backend(impl):
        check_grad(conv_fn(s), *conv_inputs(s, 43), fast_mode=True)


def test_conv2d_gradients_of_single_inputs():
    """Only the input, only the weight, only the bias require grad."""
    x, w, b = random_arrays(9, (2, 4, 5, 5), (4, 2, 3, 2), (4,))
    fn = lambda *t: F.conv2d(t[0], t[1], t[2], stride=(1, 2), padding=1, groups=2)  # noqa: E731
    for i in range(3):
        inputs = [tensor64(a, requires_grad=(j == i)) for j, a in enumerate((x, w, b))]
        assert tinygrad_cnn.gradcheck(fn, inputs)


@settings(max_examples=12, deadline=None)
@given(s=conv2d_settings(max_batch=2, max_channels_per_group=2, max_groups=1, max_spatial=6),
       seed=st.integers(0, 2**16))
def test_im2col_and_col2im_gradcheck_and_gradgradcheck(s, seed):
    kernel = s["weight_shape"][2:]
    args = dict(dilation=s["dilation"], padding=s["padding"], stride=s["stride"])
    size = s["input_shape"][2:]
    x, = random_arrays(seed, s["input_shape"])
    unfold = lambda t: F.im2col(t, kernel, **args)  # noqa: E731
    cols = unfold(Tensor(x)).numpy()
    fold = lambda t: F.col2im(t, size, kernel, **args)  # noqa: E731
    y, = random_arrays(seed + 1, cols.shape)
    check_grad(unfold, x)
    check_grad(fold, y)
    check_gradgrad(unfold, x, fast_mode=True)
    check_gradgrad(fold, y, fast_mode=True)


def test_conv2d_backward_of_float32_stays_float32():
    x, w, b = random_arrays(3, (2, 3, 6, 6), (4, 3, 3, 3), (4,), dtype=np.float32)
    tx, tw, tb = (Tensor(a, requires_grad=True) for a in (x, w, b))
    F.conv2d(tx, tw, tb, padding=1).sum().backward()
    assert tx.grad.dtype == tw.grad.dtype == tb.grad.dtype == np.float32


# ---------------------------------------------------------------------------
# Parity with PyTorch (optional)
# ---------------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(s=conv2d_settings(max_batch=2, max_channels_per_group=3, max_groups=3, max_kernel=4,
                         max_stride=3, max_padding=2, max_dilation=2, max_spatial=9),
       seed=st.integers(0, 2**16))
def test_conv2d_matches_torch_forward_and_backward(torch, s, seed):
    x, w, b = random_arrays(seed, s["input_shape"], s["weight_shape"], (s["weight_shape"][0],))
    b = b if s["bias"] else None
    ours = [tensor64(a) for a in (x, w)] + ([tensor64(b)] if b is not None else [])
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, w)] + \
        ([torch.tensor(b, requires_grad=True)] if b is not None else [])
    out = F.conv2d(ours[0], ours[1], ours[2] if b is not None else None, **conv_args(s))
    expected = torch.nn.functional.conv2d(theirs[0], theirs[1],
                                          theirs[2] if b is not None else None, **conv_args(s))
    assert_allclose(out, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    g, = random_arrays(seed + 1, tuple(expected.shape))
    (out * Tensor(g)).sum().backward()
    (expected * torch.tensor(g)).sum().backward()
    for mine, ref in zip(ours, theirs):
        assert_allclose(mine.grad, ref.grad.numpy(), rtol=1e-10, atol=1e-11)


def test_unfold_and_fold_match_torch(torch):
    x, = random_arrays(11, (2, 3, 7, 6))
    args = dict(kernel_size=(3, 2), dilation=(1, 2), padding=(1, 0), stride=(2, 1))
    cols = F.unfold(Tensor(x), **args)
    expected = torch.nn.functional.unfold(torch.tensor(x), **args)
    assert_allclose(cols, expected.numpy(), rtol=0)
    y, = random_arrays(12, tuple(expected.shape))
    assert_allclose(F.fold(Tensor(y), (7, 6), **args),
                    torch.nn.functional.fold(torch.tensor(y), (7, 6), **args).numpy(), rtol=1e-12)


def test_float32_alexnet_conv1_matches_torch(torch):
    x, w, b = random_arrays(13, (2, 3, 227, 227), (96, 3, 11, 11), (96,), dtype=np.float32)
    out = F.conv2d(Tensor(x), Tensor(w), Tensor(b), stride=4)
    expected = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(b),
                                          stride=4)
    assert_allclose(out, expected.numpy(), rtol=1e-4, atol=1e-3)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------

def test_errors_name_the_op_the_argument_and_the_shapes():
    x, w = Tensor(np.zeros((1, 4, 5, 5))), Tensor(np.zeros((6, 2, 3, 3)))
    with pytest.raises(ValueError, match=r"conv2d: input has 4 channels .*\(1, 4, 5, 5\).*"
                                         r"\(6, 2, 3, 3\) with groups=1 expects 2"):
        F.conv2d(x, w)
    with pytest.raises(ValueError, match=r"conv2d: groups \(3\) must divide .*\(4,"):
        F.conv2d(x, Tensor(np.zeros((6, 1, 3, 3))), groups=3)
    with pytest.raises(ValueError, match=r"conv2d: groups must be a positive int, got 0"):
        F.conv2d(x, w, groups=0)
    with pytest.raises(ValueError, match=r"conv2d: output size \(-1, -1\) is not positive"):
        F.conv2d(x, Tensor(np.zeros((6, 4, 7, 7))))
    with pytest.raises(ValueError, match=r"conv2d: stride must be >= 1, got 0"):
        F.conv2d(x, w, groups=2, stride=0)
    with pytest.raises(ValueError, match=r"conv2d: padding must be >= 0"):
        F.conv2d(x, w, groups=2, padding=(1, -1))
    with pytest.raises(ValueError, match=r"conv2d: dilation must be an int or a pair"):
        F.conv2d(x, w, groups=2, dilation=(1, 2, 3))
    with pytest.raises(ValueError, match=r"conv2d: bias must have shape \(6,\).*got \(5,\)"):
        F.conv2d(x, w, Tensor(np.zeros(5)), groups=2)
    with pytest.raises(ValueError, match=r"conv2d: input must be 4-D .* got shape \(4, 5\)"):
        F.conv2d(Tensor(np.zeros((4, 5))), w)
    with pytest.raises(ValueError, match=r"conv2d: weight must be 4-D"):
        F.conv2d(x, Tensor(np.zeros((6, 2, 3))))
    with pytest.raises(TypeError, match=r"conv2d: input dtype float32 and weight dtype float64"):
        F.conv2d(Tensor(np.zeros((1, 4, 5, 5), np.float32)), w, groups=2)
    with pytest.raises(ValueError, match=r"conv2d: padding='same' is not supported for strided"):
        F.conv2d(x, w, groups=2, stride=2, padding="same")
    with pytest.raises(ValueError, match=r"conv2d: padding must be an int, a pair, 'valid' or"):
        F.conv2d(x, w, groups=2, padding="full")
    with pytest.raises(ValueError, match=r"col2im: input of shape \(1, 9, 5\) has 5 windows"):
        F.col2im(Tensor(np.zeros((1, 9, 5))), (4, 4), 3, padding=1)
    with pytest.raises(ValueError, match=r"col2im: .*dimension 1 \(10\) must be divisible by kh\*kw = 9"):
        F.col2im(Tensor(np.zeros((1, 10, 16))), (4, 4), 3, padding=1)
    with pytest.raises(ValueError, match=r"im2col: output size \(0, 1\)"):
        F.im2col(Tensor(np.zeros((1, 1, 2, 4))), (3, 3), padding=(0, 0), dilation=1, stride=(1, 2))
