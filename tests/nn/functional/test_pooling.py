"""Pooling: max_pool2d, avg_pool2d, adaptive_avg_pool2d, adaptive_max_pool2d and their kernels."""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tinygrad_cnn
import tinygrad_cnn.nn.functional as F
from tinygrad_cnn import backend
from tinygrad_cnn.nn.functional.pooling import pool_output_size
from tinygrad_cnn.testing import (
    assert_allclose, check_grad, check_gradgrad, distinct_arrays, non_contiguous, pool2d_settings,
    tensor64,
)

Tensor = tinygrad_cnn.Tensor
IMPLS = ["numpy", "numba"]


def tie_heavy_array(seed, shape, dtype=np.float64):
    """Small integers, so windows often hold several equal maxima."""
    return np.random.default_rng(seed).integers(-2, 3, size=shape).astype(dtype)


def max_args(s):
    return dict(kernel_size=s["kernel_size"], stride=s["stride"], padding=s["padding"],
                dilation=s["dilation"], ceil_mode=s["ceil_mode"])


def avg_args(s, count_include_pad, divisor_override):
    return dict(kernel_size=s["kernel_size"], stride=s["stride"], padding=s["padding"],
                ceil_mode=s["ceil_mode"], count_include_pad=count_include_pad,
                divisor_override=divisor_override)


def output_size(s, dilation=True):
    d = s["dilation"] if dilation else (1, 1)
    return tuple(pool_output_size(n, k, st_, p, di, s["ceil_mode"]) for n, k, st_, p, di in
                 zip(s["input_shape"][2:], s["kernel_size"], s["stride"], s["padding"], d))


def has_padding_only_window(s):
    """True if some max-pooling window reads no image pixel (possible with dilation)."""
    for size, k, stride, pad, dil, n_out in zip(s["input_shape"][2:], s["kernel_size"], s["stride"],
                                                s["padding"], s["dilation"], output_size(s)):
        for o in range(n_out):
            if not any(0 <= o * stride - pad + i * dil < size for i in range(k)):
                return True
    return False


# ---------------------------------------------------------------------------
# Brute force: straight from the definitions, one output element at a time
# ---------------------------------------------------------------------------

def brute_max_pool(x, s):
    n, c, height, width = x.shape
    out_h, out_w = output_size(s)
    out = np.full((n, c, out_h, out_w), -np.inf)
    index = np.full((n, c, out_h, out_w), -1, dtype=np.int64)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (s["kernel_size"], s["stride"], s["padding"],
                                              s["dilation"])
    for b in range(n):
        for ch in range(c):
            for oh in range(out_h):
                for ow in range(out_w):
                    # every image pixel of the window, in row-major order
                    pixels = [(oh * sh - ph + i * dh, ow * sw - pw + j * dw)
                              for i in range(kh) for j in range(kw)]
                    pixels = [(h, w) for h, w in pixels if 0 <= h < height and 0 <= w < width]
                    if pixels:
                        best = max(x[b, ch, h, w] for h, w in pixels)
                        h, w = next((h, w) for h, w in pixels if x[b, ch, h, w] == best)
                        out[b, ch, oh, ow], index[b, ch, oh, ow] = best, h * width + w
    return out, index


def brute_avg_pool(x, s, count_include_pad, divisor_override):
    n, c, height, width = x.shape
    out_h, out_w = output_size(s, dilation=False)
    out = np.zeros((n, c, out_h, out_w))
    (kh, kw), (sh, sw), (ph, pw) = s["kernel_size"], s["stride"], s["padding"]
    for oh in range(out_h):
        for ow in range(out_w):
            window = [(oh * sh - ph + i, ow * sw - pw + j) for i in range(kh) for j in range(kw)]
            in_padded = [(h, w) for h, w in window
                         if -ph <= h < height + ph and -pw <= w < width + pw]
            in_image = [(h, w) for h, w in window if 0 <= h < height and 0 <= w < width]
            total = sum(x[:, :, h, w] for h, w in in_image)
            if divisor_override:
                divisor = divisor_override
            else:
                divisor = len(in_padded) if count_include_pad else len(in_image)
            out[:, :, oh, ow] = total / divisor
    return out


def brute_adaptive_windows(size, n_out):
    return [(int(np.floor(i * size / n_out)), int(np.ceil((i + 1) * size / n_out)))
            for i in range(n_out)]


def brute_adaptive_avg(x, out_size):
    rows = brute_adaptive_windows(x.shape[2], out_size[0])
    cols = brute_adaptive_windows(x.shape[3], out_size[1])
    return np.stack([np.stack([x[:, :, h0:h1, w0:w1].mean(axis=(2, 3)) for w0, w1 in cols], -1)
                     for h0, h1 in rows], -2)


# ---------------------------------------------------------------------------
# Forward against the brute force (both CPU backends)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=25, deadline=None)
@given(s=pool2d_settings(), seed=st.integers(0, 2**31))
def test_max_pool2d_matches_brute_force(impl, s, seed):
    x = tie_heavy_array(seed, s["input_shape"])
    with backend.cpu_backend(impl):
        out, indices = F.max_pool2d(Tensor(x), return_indices=True, **max_args(s))
    expected_out, expected_indices = brute_max_pool(x, s)
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(out.numpy(), expected_out)
    np.testing.assert_array_equal(indices.numpy(), expected_indices)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=25, deadline=None)
@given(s=pool2d_settings(), seed=st.integers(0, 2**31), count_include_pad=st.booleans(),
       divisor_override=st.sampled_from([None, 1, 5]))
def test_avg_pool2d_matches_brute_force(impl, s, seed, count_include_pad, divisor_override):
    x = np.random.default_rng(seed).standard_normal(s["input_shape"])
    with backend.cpu_backend(impl):
        out = F.avg_pool2d(Tensor(x), **avg_args(s, count_include_pad, divisor_override))
    assert_allclose(out, brute_avg_pool(x, s, count_include_pad, divisor_override), rtol=1e-12,
                    atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
       out_size=st.tuples(st.integers(1, 9), st.integers(1, 9)), seed=st.integers(0, 2**31))
def test_adaptive_pools_match_brute_force(shape, out_size, seed):
    x = tie_heavy_array(seed, shape) + np.random.default_rng(seed).uniform(0, 0.5, shape)
    assert_allclose(F.adaptive_avg_pool2d(Tensor(x), out_size), brute_adaptive_avg(x, out_size),
                    rtol=1e-12, atol=1e-12)
    rows = brute_adaptive_windows(shape[2], out_size[0])
    cols = brute_adaptive_windows(shape[3], out_size[1])
    expected = np.stack([np.stack([x[:, :, h0:h1, w0:w1].max(axis=(2, 3)) for w0, w1 in cols], -1)
                         for h0, h1 in rows], -2)
    assert_allclose(F.adaptive_max_pool2d(Tensor(x), out_size), expected)


# ---------------------------------------------------------------------------
# The Numba kernels' parallel drivers (kernel == reference in general: tests/kernels)
# ---------------------------------------------------------------------------

def test_kernels_take_the_parallel_path_on_large_inputs():
    """Big enough to cross PARALLEL_MIN_WORK, so the prange drivers are compared too."""
    from tinygrad_cnn.kernels.cpu import pooling as cpu_pooling
    x = tie_heavy_array(0, (4, 16, 33, 33), np.float32)
    out_size = (pool_output_size(33, 3, 2, 1), pool_output_size(33, 3, 2, 1))
    assert x.shape[0] * x.shape[1] * out_size[0] * out_size[1] * 9 >= cpu_pooling.PARALLEL_MIN_WORK
    args = ((3, 3), (2, 2), (1, 1), (1, 1), out_size)
    (ref_out, ref_idx), (out, idx) = [backend.kernel("max_pool2d_forward", np, impl=i)(x, *args)
                                      for i in IMPLS]
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(idx, ref_idx)
    grad = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    grads = [backend.kernel("max_pool2d_backward", np, impl=i)(grad, ref_idx, (33, 33))
             for i in IMPLS]
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-5, atol=1e-6)
    avg_args_ = ((3, 3), (2, 2), (1, 1), out_size, False, None)
    outs = [backend.kernel("avg_pool2d_forward", np, impl=i)(x, *avg_args_) for i in IMPLS]
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    grads = [backend.kernel("avg_pool2d_backward", np, impl=i)(
        grad, (33, 33), *avg_args_[:3], False, None) for i in IMPLS]
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kernel", [2, 3, 4])
@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("stride,padding,dilation",
                         [(2, 0, 1), (2, 1, 1), (1, 1, 2), (3, 1, 1), (1, 2, 1)])
def test_max_pool_drivers_equal_the_reference(kernel, batch, stride, padding, dilation):
    """2x2 and 3x3 windows have their own (unrolled) drivers, other sizes the general one;
    serial (batch 1) and parallel (batch 64): all equal the reference, ties, NaN and windows
    that cross the padding included. The kernels take padding beyond PyTorch's half-window
    limit (the functional checks it): with padding 2, a 2x2 window at a corner lies wholly in
    the padding (-inf, index -1)."""
    from tinygrad_cnn.kernels.cpu import pooling as cpu_pooling
    x = tie_heavy_array(batch, (batch, 8, 29, 31), np.float32)
    x[0, 0, 3, 4] = np.nan
    out_size = tuple(pool_output_size(n, kernel, stride, padding, dilation) for n in (29, 31))
    work = batch * 8 * out_size[0] * out_size[1] * kernel * kernel
    assert (work >= cpu_pooling.PARALLEL_MIN_WORK) == (batch == 64)
    args = ((kernel, kernel), (stride, stride), (padding, padding), (dilation, dilation), out_size)
    (ref_out, ref_idx), (out, idx) = [backend.kernel("max_pool2d_forward", np, impl=i)(x, *args)
                                      for i in IMPLS]
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(idx, ref_idx)
    assert (idx == -1).any() == (padding == 2 and kernel == 2)


@pytest.mark.parametrize("impl", IMPLS)
def test_non_contiguous_input(impl):
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    strided = non_contiguous(x)
    assert not strided.flags.c_contiguous
    with backend.cpu_backend(impl):
        for fn in (lambda t: F.max_pool2d(t, 3, 2, 1), lambda t: F.avg_pool2d(t, 2, 1, 1)):
            assert_allclose(fn(Tensor(strided)), fn(Tensor(x)).numpy())
        out, idx = backend.kernel("max_pool2d_forward", np)(strided, (2, 2), (2, 2), (0, 0), (1, 1),
                                                            (3, 3))
        assert_allclose(out, backend.kernel("max_pool2d_forward", np)(x, (2, 2), (2, 2), (0, 0),
                                                                      (1, 1), (3, 3))[0])


# ---------------------------------------------------------------------------
# Gradients (float64) over drawn settings
# ---------------------------------------------------------------------------

@settings(max_examples=15, deadline=None)
@given(s=pool2d_settings(max_batch=2, max_channels=2, max_spatial=6), data=st.data())
def test_max_pool2d_gradcheck(s, data):
    assume(not has_padding_only_window(s))
    x = data.draw(distinct_arrays(s["input_shape"]))   # no ties: the max is differentiable
    check_grad(lambda t: F.max_pool2d(t, **max_args(s)), x)
    check_gradgrad(lambda t: F.max_pool2d(t, **max_args(s)), x)


@settings(max_examples=15, deadline=None)
@given(s=pool2d_settings(max_batch=2, max_channels=2, max_spatial=6), data=st.data(),
       count_include_pad=st.booleans(), divisor_override=st.sampled_from([None, 2]))
def test_avg_pool2d_gradcheck(s, data, count_include_pad, divisor_override):
    x = data.draw(distinct_arrays(s["input_shape"]))
    fn = lambda t: F.avg_pool2d(t, **avg_args(s, count_include_pad, divisor_override))  # noqa: E731
    check_grad(fn, x)
    check_gradgrad(fn, x)


@settings(max_examples=12, deadline=None)
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 7), st.integers(1, 7)),
       out_size=st.tuples(st.integers(1, 7), st.integers(1, 7)), data=st.data())
def test_adaptive_pools_gradcheck(shape, out_size, data):
    x = data.draw(distinct_arrays(shape))
    for fn in (lambda t: F.adaptive_avg_pool2d(t, out_size),
               lambda t: F.adaptive_max_pool2d(t, out_size)):
        check_grad(fn, x)
        check_gradgrad(fn, x)


@pytest.mark.parametrize("impl", IMPLS)
def test_gradcheck_on_each_backend(impl):
    """AlexNet's overlapping 3x3 stride-2 windows, with ceil_mode and padding."""
    x = np.random.default_rng(3).permutation(2 * 7 * 7).reshape(1, 2, 7, 7) * 0.01
    with backend.cpu_backend(impl):
        for fn in (lambda t: F.max_pool2d(t, 3, 2, 1, ceil_mode=True),
                   lambda t: F.avg_pool2d(t, 3, 2, 1, ceil_mode=True, count_include_pad=False)):
            check_grad(fn, x)
            check_gradgrad(fn, x)


# ---------------------------------------------------------------------------
# Ties, NaN, padding-only windows
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_tie_gradient_goes_to_exactly_the_first_maximum(impl):
    x = tensor64(np.zeros((1, 1, 5, 5)))     # every element ties
    with backend.cpu_backend(impl):
        out, indices = F.max_pool2d(x, 3, stride=2, return_indices=True)   # overlapping windows
        out.sum().backward()
    # window (oh, ow) starts at (2*oh, 2*ow): its first element in row-major order
    np.testing.assert_array_equal(indices.numpy()[0, 0], [[0, 2], [10, 12]])
    expected = np.zeros((5, 5))
    expected[[0, 0, 2, 2], [0, 2, 0, 2]] = 1.0
    np.testing.assert_array_equal(x.grad.numpy()[0, 0], expected)
    assert x.grad.numpy().sum() == out.numel()       # one unit per window, never split

    y = tensor64(np.array([[[[1.0, 5.0, 2.0], [5.0, 0.0, 5.0]]]]))   # first max is not first
    with backend.cpu_backend(impl):
        F.max_pool2d(y, (2, 3)).sum().backward()
    np.testing.assert_array_equal(y.grad.numpy()[0, 0], [[0, 1, 0], [0, 0, 0]])


def test_tie_rule_matches_torch(torch):
    x = np.random.default_rng(0).integers(0, 2, size=(2, 3, 9, 9)).astype(np.float64)
    xt = torch.tensor(x, requires_grad=True)
    expected_out, expected_idx = torch.nn.functional.max_pool2d(xt, 3, 2, 1, return_indices=True)
    expected_out.sum().backward()
    ours = tensor64(x)
    out, idx = F.max_pool2d(ours, 3, 2, 1, return_indices=True)
    out.sum().backward()
    np.testing.assert_array_equal(idx.numpy(), expected_idx.numpy())
    np.testing.assert_array_equal(ours.grad.numpy(), xt.grad.numpy())


@pytest.mark.parametrize("impl", IMPLS)
def test_nan_propagates_like_torch(impl):
    x = np.array([[[[1.0, np.nan, 2.0], [np.nan, 0.0, 3.0]]]])
    with backend.cpu_backend(impl):
        out, idx = F.max_pool2d(Tensor(x), (2, 3), return_indices=True)
    assert np.isnan(out.item())
    assert idx.item() == 3          # PyTorch keeps the last NaN of the window


@pytest.mark.parametrize("impl", IMPLS)
def test_window_of_padding_only(impl):
    # dilation 2 with padding 1 on a 1x1 image: the window reads positions -1 and 1 only
    x = tensor64(np.full((1, 1, 1, 1), 4.0))
    with backend.cpu_backend(impl):
        out, idx = F.max_pool2d(x, 2, stride=1, padding=1, dilation=2, return_indices=True)
        out.sum().backward()
    assert out.shape == (1, 1, 1, 1) and out.item() == -np.inf
    assert idx.item() == -1
    assert x.grad.item() == 0.0


@pytest.mark.parametrize("impl", IMPLS)
def test_all_minus_infinity_window_picks_first_pixel(impl):
    x = tensor64(np.full((1, 1, 2, 2), -np.inf))
    with backend.cpu_backend(impl):
        out, idx = F.max_pool2d(x, 2, padding=1, return_indices=True)
    np.testing.assert_array_equal(idx.numpy()[0, 0], [[0, 1], [2, 3]])


# ---------------------------------------------------------------------------
# PyTorch parity
# ---------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(s=pool2d_settings(), seed=st.integers(0, 2**31), count_include_pad=st.booleans(),
       divisor_override=st.sampled_from([None, 3]))
def test_matches_torch(torch, s, seed, count_include_pad, divisor_override):
    assume(not has_padding_only_window(s))    # PyTorch's index there is meaningless
    TF = torch.nn.functional
    x = tie_heavy_array(seed, s["input_shape"])
    grad = np.random.default_rng(seed + 1).standard_normal(output_size(s))

    xt = torch.tensor(x, requires_grad=True)
    out_t, idx_t = TF.max_pool2d(xt, return_indices=True, **max_args(s))
    (out_t * torch.tensor(np.broadcast_to(grad, out_t.shape).copy())).sum().backward()
    ours = tensor64(x)
    out, idx = F.max_pool2d(ours, return_indices=True, **max_args(s))
    (out * Tensor(np.broadcast_to(grad, out.shape).copy())).sum().backward()
    np.testing.assert_array_equal(out.numpy(), out_t.detach().numpy())
    np.testing.assert_array_equal(idx.numpy(), idx_t.numpy())
    assert_allclose(ours.grad, xt.grad.numpy(), rtol=1e-12, atol=1e-12)

    args = avg_args(s, count_include_pad, divisor_override)
    xt = torch.tensor(x, requires_grad=True)
    out_t = TF.avg_pool2d(xt, **args)
    (out_t * out_t).sum().backward()
    ours = tensor64(x)
    out = F.avg_pool2d(ours, **args)
    (out * out).sum().backward()
    assert_allclose(out, out_t.detach().numpy(), rtol=1e-12, atol=1e-12)
    assert_allclose(ours.grad, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 13),
                      st.integers(1, 13)),
       out_size=st.tuples(st.integers(1, 8), st.one_of(st.none(), st.integers(1, 8))),
       seed=st.integers(0, 2**31))
def test_adaptive_matches_torch(torch, shape, out_size, seed):
    x = np.random.default_rng(seed).standard_normal(shape)
    for ours_fn, torch_fn in ((F.adaptive_avg_pool2d, torch.nn.functional.adaptive_avg_pool2d),
                              (F.adaptive_max_pool2d, torch.nn.functional.adaptive_max_pool2d)):
        xt = torch.tensor(x, requires_grad=True)
        out_t = torch_fn(xt, out_size)
        (out_t * out_t).sum().backward()
        ours = tensor64(x)
        out = ours_fn(ours, out_size)
        (out * out).sum().backward()
        assert_allclose(out, out_t.detach().numpy(), rtol=1e-12, atol=1e-12)
        assert_allclose(ours.grad, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# Shapes, output-size rule, dtypes, unbatched input
# ---------------------------------------------------------------------------

def test_alexnet_shapes():
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 55, 55)).astype(np.float32))
    sizes = []
    for _ in range(3):
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        sizes.append(x.shape[-1])
    assert sizes == [27, 13, 6]
    assert x.dtype == np.float32
    assert F.adaptive_avg_pool2d(x, (6, 6)).shape == (2, 3, 6, 6)
    assert_allclose(F.adaptive_avg_pool2d(x, (6, 6)), x)


@pytest.mark.parametrize("size, kernel, stride, padding, dilation, ceil, expected", [
    (5, 2, 2, 0, 1, False, 2),
    (5, 2, 2, 0, 1, True, 3),
    (5, 3, 3, 1, 1, True, 2),    # ceil would give 3, but that window starts in the right padding
    (6, 3, 3, 1, 1, True, 3),
    (55, 3, 2, 0, 1, False, 27),
    (7, 3, 1, 1, 2, False, 5),
])
def test_output_size_rule(size, kernel, stride, padding, dilation, ceil, expected):
    assert pool_output_size(size, kernel, stride, padding, dilation, ceil) == expected
    x = Tensor(np.zeros((1, 1, size, size)))
    out = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=ceil)
    assert out.shape == (1, 1, expected, expected)


def test_global_average_pooling_is_a_mean():
    x = np.random.default_rng(0).standard_normal((2, 3, 5, 4))
    expected = x.mean(axis=(2, 3), keepdims=True)
    assert_allclose(F.adaptive_avg_pool2d(Tensor(x), 1), expected, rtol=1e-12)
    assert_allclose(F.adaptive_avg_pool2d(Tensor(x), (1, 1)), expected, rtol=1e-12)
    assert_allclose(F.avg_pool2d(Tensor(x), (5, 4)), expected, rtol=1e-12)
    t = tensor64(x)
    F.adaptive_avg_pool2d(t, 1).sum().backward()
    assert_allclose(t.grad, np.full(x.shape, 1 / 20), rtol=1e-12)


def test_unbatched_input_and_float32():
    x = np.random.default_rng(0).standard_normal((3, 6, 6)).astype(np.float32)
    t = Tensor(x, requires_grad=True)
    out, idx = F.max_pool2d(t, 2, return_indices=True)
    assert out.shape == idx.shape == (3, 3, 3)
    assert out.dtype == np.float32
    batched = F.max_pool2d(Tensor(x[None]), 2)
    assert_allclose(out, batched.numpy()[0])
    out.sum().backward()
    assert t.grad.dtype == np.float32 and t.grad.shape == (3, 6, 6)
    assert F.avg_pool2d(Tensor(x), 3).shape == (3, 2, 2)
    assert F.adaptive_avg_pool2d(Tensor(x), (2, None)).shape == (3, 2, 6)
    out, idx = F.adaptive_max_pool2d(Tensor(x), 4, return_indices=True)
    assert out.shape == idx.shape == (3, 4, 4)


def test_stride_defaults_to_kernel_size():
    x = Tensor(np.random.default_rng(0).standard_normal((1, 2, 8, 8)))
    assert_allclose(F.max_pool2d(x, 2), F.max_pool2d(x, 2, stride=2).numpy())
    assert_allclose(F.avg_pool2d(x, (2, 4)), F.avg_pool2d(x, (2, 4), stride=(2, 4)).numpy())
    assert F.avg_pool2d(x, (2, 4)).shape == (1, 2, 4, 2)


def test_exported_names():
    from tinygrad_cnn.nn.functional import pooling
    assert set(pooling.__all__) == {"max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
                                    "adaptive_max_pool2d"}
    for name in pooling.__all__:
        assert getattr(F, name) is getattr(pooling, name)


# ---------------------------------------------------------------------------
# Error messages
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("call, error, words", [
    (lambda x: F.max_pool2d(x, 2, padding=2), ValueError,
     ["max_pool2d", "pad should be at most half of kernel size", "padding=2"]),
    # PyTorch bounds the padding by kernel_size // 2 even when dilation widens the window.
    (lambda x: F.max_pool2d(x, 3, padding=(0, 2), dilation=2), ValueError,
     ["max_pool2d", "pad should be at most half of kernel size", "padding=(0, 2)", "dilation=2"]),
    (lambda x: F.avg_pool2d(x, 3, padding=2), ValueError,
     ["avg_pool2d", "padding=2", "kernel_size=3"]),
    (lambda x: F.max_pool2d(x, 5), ValueError, ["max_pool2d", "too small", "(1, 2, 3, 3)"]),
    (lambda x: F.max_pool2d(x, 0), ValueError, ["max_pool2d", "kernel_size", ">= 1"]),
    (lambda x: F.max_pool2d(x, 2, stride=0), ValueError, ["max_pool2d", "stride"]),
    (lambda x: F.max_pool2d(x, 2, dilation=0), ValueError, ["max_pool2d", "dilation"]),
    (lambda x: F.max_pool2d(x, 2.5), TypeError, ["max_pool2d", "kernel_size", "2.5"]),
    (lambda x: F.max_pool2d(x, (2, 2, 2)), TypeError, ["max_pool2d", "kernel_size"]),
    (lambda x: F.max_pool2d(x.reshape(2, 9), 2), ValueError, ["max_pool2d", "3D", "4D", "(2, 9)"]),
    (lambda x: F.avg_pool2d(x, 2, divisor_override=0), ValueError,
     ["avg_pool2d", "divisor_override"]),
    (lambda x: F.adaptive_avg_pool2d(x, 0), ValueError, ["adaptive_avg_pool2d", "output_size"]),
    (lambda x: F.adaptive_max_pool2d(x, (1, 2, 3)), TypeError,
     ["adaptive_max_pool2d", "output_size"]),
    (lambda x: F.max_pool2d(x.numpy(), 2), TypeError, ["max_pool2d", "Tensor", "ndarray"]),
])
def test_error_messages(call, error, words):
    x = Tensor(np.zeros((1, 2, 3, 3)))
    with pytest.raises(error) as info:
        call(x)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_integer_input_is_rejected():
    x = Tensor(np.zeros((1, 1, 4, 4), dtype=np.int64), dtype=np.int64)
    with pytest.raises(TypeError, match="avg_pool2d: input must be a floating point tensor"):
        F.avg_pool2d(x, 2)


# ---------------------------------------------------------------------------
# Device: the same results on a GPU (skipped without one)
# ---------------------------------------------------------------------------

def test_cuda_matches_cpu():
    if backend.cupy_or_none() is None:
        pytest.skip("no CUDA device: CuPy is not installed or no GPU is visible")
    device = "cuda"
    x = np.random.default_rng(0).standard_normal((2, 3, 9, 9))
    results = {}
    for where in ("cpu", device):
        t = Tensor(x, requires_grad=True, device=where)
        avg = F.avg_pool2d(t, 3, 2, 1, ceil_mode=True)
        adaptive = F.adaptive_avg_pool2d(t, (4, 5))
        out = F.max_pool2d(t, 3, 2, 1).sum() + (avg * avg).sum() + (adaptive * adaptive).sum()
        out.backward()
        results[where] = (out.item(), t.grad.to("cpu").numpy())
    assert results[device][0] == pytest.approx(results["cpu"][0], rel=1e-12)
    assert_allclose(results[device][1], results["cpu"][1], rtol=1e-10, atol=1e-12)
