"""Every registered kernel equals its NumPy reference, for every implementation present here:

* ``numba``: the CPU kernels of ``tinygrad_cnn/kernels/cpu`` (needs Numba),
* ``cuda-emulator``: the CUDA kernels of ``tinygrad_cnn/kernels/cuda`` run on the CPU by
  ``tinygrad_cnn.testing.cuda_emulator`` (needs a C++20 compiler),
* ``cupy``: the same CUDA kernels on a GPU (needs CuPy and a device).

The tests are generated from the kernel tables themselves, so a kernel without a case in
``CASES`` fails by construction. Each case draws its inputs with Hypothesis; outputs must have
the reference's shapes and dtypes and equal its values (bit for bit where the kernel only
copies, within a rounding tolerance where it sums in another order).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_cnn.nn.functional  # noqa: F401 - registers the references
import tinygrad_cnn.optim  # noqa: F401
from tinygrad_cnn import backend
from tinygrad_cnn._arguments import WindowGeometry, output_length, phase_grid_length
from tinygrad_cnn.testing import arrays, conv2d_settings, cuda_emulator, pool2d_settings, shapes

FLOATS = [np.float32, np.float64]


@dataclass
class Case:
    """One call: ``args`` for the kernel; ``exact`` outputs must be equal bit for bit; otherwise
    within ``tol[dtype] = (rtol, atol)`` (atol relative to the largest magnitude when ``scaled``). ``in_place`` are
    argument indices the kernel updates, compared after the call; ``kwargs`` its keyword
    arguments. ``chunk_bytes`` sets the size of the CPU's batch slices for the call (the sliced
    convolution)."""

    args: tuple
    dtype: type
    exact: bool = False
    tol: dict = field(default_factory=lambda: {np.float32: (1e-5, 1e-6), np.float64: (1e-12, 1e-12)})
    scaled: bool = False
    in_place: tuple = ()
    chunk_bytes: int | None = None
    kwargs: dict = field(default_factory=dict)


def reference(name):
    return backend.kernel(name, np, impl="numpy")


def _rng(seed):
    return np.random.default_rng(seed)


seeds = st.integers(0, 2**31)
dtypes = st.sampled_from(FLOATS)

# ---------------------------------------------------------------------------- convolution


def _conv_geometry_args(s):
    (kh, kw), (sh, sw) = s["weight_shape"][2:], s["stride"]
    (ph, pw), (dh, dw) = s["padding"], s["dilation"]
    out = tuple(output_length(n, k, st_, p, d) for n, k, st_, p, d in
                zip(s["input_shape"][2:], (kh, kw), (sh, sw), (ph, pw), (dh, dw)))
    return (kh, kw, sh, sw, ph, pw, dh, dw) + out


_conv_settings = conv2d_settings(max_batch=3, max_channels_per_group=3, max_kernel=4, max_stride=3,
                                 max_padding=3, max_dilation=3, max_spatial=9)


@st.composite
def im2col_case(draw):
    s, dtype, seed = draw(_conv_settings), draw(dtypes), draw(seeds)
    x = _rng(seed).standard_normal(s["input_shape"]).astype(dtype)
    return Case((x,) + _conv_geometry_args(s), dtype, exact=True)


@st.composite
def col2im_case(draw):
    s, dtype, seed = draw(_conv_settings), draw(dtypes), draw(seeds)
    args = _conv_geometry_args(s)
    n, c, h, w = s["input_shape"]
    cols = _rng(seed).standard_normal((c * args[0] * args[1], n * args[-2] * args[-1])).astype(dtype)
    return Case((cols, n, c, h, w) + args, dtype, tol={np.float32: (1e-5, 1e-5), np.float64: (1e-12, 1e-12)})


@st.composite
def im2col_wide_case(draw):
    s = draw(conv2d_settings(max_batch=3, max_channels_per_group=3, max_kernel=4, max_stride=1,
                             max_padding=3, max_dilation=3, max_spatial=9))
    dtype, seed = draw(dtypes), draw(seeds)
    (kh, kw), (ph, pw), (dh, dw) = s["weight_shape"][2:], s["padding"], s["dilation"]
    x = _rng(seed).standard_normal(s["input_shape"]).astype(dtype)
    # The straddling columns too: the kernels copy what the reference copies, bit for bit.
    return Case((x, kh, kw, ph, pw, dh, dw), dtype, exact=True)


@st.composite
def col2im_phases_case(draw):
    s, dtype, seed = draw(_conv_settings), draw(dtypes), draw(seeds)
    args = _conv_geometry_args(s)
    n, c, h, w = s["input_shape"]
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = args[:2], args[2:4], args[6:8], args[8:]
    grid_w = phase_grid_length(ow, kw, sw, dw)
    # Nonzero straddling columns: the adjoint adds them too.
    cols = _rng(seed).standard_normal((c * kh * kw, n * oh * grid_w)).astype(dtype)
    return Case((cols, n, c, h, w) + args, dtype, tol={np.float32: (1e-5, 1e-5), np.float64: (1e-12, 1e-12)})


@st.composite
def _conv_problem(draw):
    groups = draw(st.sampled_from([1, 2]))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    # Strided ones (unequal per axis too) take their columns from phase planes.
    stride = draw(st.sampled_from([(1, 1), (1, 1), (2, 2), (3, 3), (2, 1), (1, 3)]))
    dilation = draw(st.integers(1, 2))
    # Padding up to kernel + 1 also covers the case where dx falls back to col2im.
    padding = (draw(st.integers(0, kh + 1)), draw(st.integers(0, kw + 1)))
    h = draw(st.integers(dilation * (kh - 1) + 1, 7))
    w = draw(st.integers(dilation * (kw - 1) + 1, 7))
    n = draw(st.integers(1, 5))
    dtype, rng = draw(dtypes), _rng(draw(seeds))
    geometry = WindowGeometry.build("conv2d", (n, c_in, h, w), (kh, kw), stride, padding, dilation)
    x = rng.standard_normal((n, c_in, h, w)).astype(dtype)
    weight = rng.standard_normal((c_out, c_in // groups, kh, kw)).astype(dtype)
    bias = rng.standard_normal(c_out).astype(dtype) if draw(st.booleans()) else None
    grad = rng.standard_normal((n, c_out) + geometry.out).astype(dtype)
    # 1 byte: one image per slice; 2**30: the whole batch in one.
    chunk = draw(st.sampled_from([1, 1 << 30]))
    return dict(x=x, weight=weight, bias=bias, grad=grad, geometry=geometry, groups=groups,
                dtype=dtype, chunk=chunk)


CONV_TOL = {np.float32: (1e-4, 1e-4), np.float64: (1e-10, 1e-10)}


@st.composite
def conv2d_forward_case(draw):
    p = draw(_conv_problem())
    # The epilogue of inference with folded BatchNorm: a residual sum and ReLU, or neither.
    epilogue = {}
    if draw(st.booleans()):
        epilogue = dict(residual=p["grad"] if draw(st.booleans()) else None, relu=True)
    return Case((p["x"], p["weight"], p["bias"], p["geometry"], p["groups"]), p["dtype"],
                tol=CONV_TOL, chunk_bytes=p["chunk"], kwargs=epilogue)


@st.composite
def conv2d_backward_case(draw):
    p = draw(_conv_problem())
    # dx and dW share the gathered columns of G; each alone takes another route.
    needs = draw(st.sampled_from([(True, True, True), (True, False, False), (False, True, True)]))
    return Case((p["grad"], p["x"], p["weight"], p["geometry"], p["groups"], needs), p["dtype"],
                tol=CONV_TOL, chunk_bytes=p["chunk"])


# ---------------------------------------------------------------------------- pooling

# Winograd tiles: sums of a few products with small integer coefficients, in another order
# than the reference's einsum: compared relative to the largest magnitude.
WINOGRAD_TOL = {np.float32: (1e-5, 1e-6), np.float64: (1e-12, 1e-13)}


@st.composite
def _winograd_output_size(draw):
    return draw(st.integers(1, 11)), draw(st.integers(1, 11))


@st.composite
def winograd_input_tiles_case(draw):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pad_h, pad_w = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    # A 3x3 kernel's output is H + 2p - 2: at least one row and column.
    h, w = draw(st.integers(max(1, 3 - 2 * pad_h), 11)), draw(st.integers(max(1, 3 - 2 * pad_w), 11))
    dtype = draw(dtypes)
    x = _rng(draw(seeds)).standard_normal((n, c, h, w)).astype(dtype)
    return Case((x, pad_h, pad_w, h + 2 * pad_h - 2, w + 2 * pad_w - 2), dtype, tol=WINOGRAD_TOL,
                scaled=True)


@st.composite
def winograd_grad_tiles_case(draw):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    out_h, out_w = draw(_winograd_output_size())
    dtype = draw(dtypes)
    g = _rng(draw(seeds)).standard_normal((n, c, out_h, out_w)).astype(dtype)
    return Case((g, out_h, out_w), dtype, tol=WINOGRAD_TOL, scaled=True)


@st.composite
def winograd_output_tiles_case(draw):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    out_h, out_w = draw(_winograd_output_size())
    dtype, rng = draw(dtypes), _rng(draw(seeds))
    tiles = n * (-(-out_h // 4)) * (-(-out_w // 4))
    m = rng.standard_normal((36, c, tiles)).astype(dtype)
    bias = rng.standard_normal(c).astype(dtype) if draw(st.booleans()) else None
    residual = (rng.standard_normal((n, c, out_h, out_w)).astype(dtype) if draw(st.booleans())
                else None)
    # The sliced convolution passes its output slice; the result must land there.
    out = np.full((n, c, out_h, out_w), np.nan, dtype=dtype) if draw(st.booleans()) else None
    return Case((m, n, out_h, out_w, bias, residual, draw(st.booleans()), out), dtype,
                tol=WINOGRAD_TOL, scaled=True, in_place=() if out is None else (7,))


@st.composite
def matmul_2d_case(draw):
    # Large enough, sometimes, to be split over the workers (kernels/cpu/linear.py); operands
    # as views too (the linear layer passes transposes).
    rows, inner, columns = (draw(st.sampled_from([1, 7, 70, 300])), draw(st.integers(1, 90)),
                            draw(st.sampled_from([1, 5, 64, 200])))
    dtype, rng = draw(dtypes), _rng(draw(seeds))
    a = rng.standard_normal((rows, inner)).astype(dtype)
    b = rng.standard_normal((columns, inner)).astype(dtype).T if draw(st.booleans()) else \
        rng.standard_normal((inner, columns)).astype(dtype)
    return Case((a, b), dtype, tol={np.float32: (1e-5, 1e-5), np.float64: (1e-12, 1e-12)},
                scaled=True)


def _pool_out(s, dilation=True):
    d = s["dilation"] if dilation else (1, 1)
    return tuple(output_length(n, k, st_, p, di, s["ceil_mode"]) for n, k, st_, p, di in
                 zip(s["input_shape"][2:], s["kernel_size"], s["stride"], s["padding"], d))


def _pool_input(draw, shape, dtype):
    """Small integers when ``ties`` (windows with several equal maxima), NaNs when ``nans``."""
    rng = _rng(draw(seeds))
    if draw(st.booleans()):
        x = rng.integers(-2, 3, size=shape).astype(dtype)
    else:
        x = rng.standard_normal(shape).astype(dtype)
    if draw(st.booleans()):
        x.reshape(-1)[rng.integers(0, x.size, size=max(1, x.size // 7))] = np.nan
    return x


@st.composite
def max_pool2d_forward_case(draw):
    s, dtype = draw(pool2d_settings(max_batch=3, max_spatial=9)), draw(dtypes)
    x = _pool_input(draw, s["input_shape"], dtype)
    args = (s["kernel_size"], s["stride"], s["padding"], s["dilation"], _pool_out(s))
    return Case((x,) + args, dtype, exact=True)


@st.composite
def max_pool2d_backward_case(draw):
    s, dtype = draw(pool2d_settings(max_batch=3, max_spatial=9)), draw(dtypes)
    x = _pool_input(draw, s["input_shape"], dtype)
    out, indices = reference("max_pool2d_forward")(
        x, s["kernel_size"], s["stride"], s["padding"], s["dilation"], _pool_out(s))
    grad = _rng(draw(seeds)).standard_normal(out.shape).astype(dtype)
    return Case((grad, indices, s["input_shape"][2:]), dtype)


def _avg_settings(draw):
    s = draw(pool2d_settings(max_batch=3, max_spatial=9))
    return s, (s["kernel_size"], s["stride"], s["padding"]), draw(st.booleans()), \
        draw(st.sampled_from([None, 1, 3]))


@st.composite
def avg_pool2d_forward_case(draw):
    s, geometry, include_pad, divisor = _avg_settings(draw)
    dtype = draw(dtypes)
    x = _rng(draw(seeds)).standard_normal(s["input_shape"]).astype(dtype)
    return Case((x,) + geometry + (_pool_out(s, dilation=False), include_pad, divisor), dtype)


@st.composite
def avg_pool2d_backward_case(draw):
    s, geometry, include_pad, divisor = _avg_settings(draw)
    dtype = draw(dtypes)
    grad = _rng(draw(seeds)).standard_normal(s["input_shape"][:2] + _pool_out(s, dilation=False))
    return Case((grad.astype(dtype), s["input_shape"][2:]) + geometry + (include_pad, divisor), dtype)


# ---------------------------------------------------------------------------- normalization

BN_TOL = {np.float32: (1e-4, 1e-4), np.float64: (1e-10, 1e-10)}
LRN_TOL = {np.float32: (2e-5, 1e-6), np.float64: (1e-12, 1e-12)}


def _ncl(draw, max_side=9):
    """x (N, C, L) with an offset mean and spread per channel, a gradient, and the generator."""
    shape = draw(shapes(min_dims=3, max_dims=3, min_side=1, max_side=max_side))
    dtype, rng = draw(dtypes), _rng(draw(seeds))
    offset = rng.uniform(-4, 4, (1, shape[1], 1))
    spread = rng.uniform(0.2, 3.0, (1, shape[1], 1))
    x = (rng.standard_normal(shape) * spread + offset).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    return shape, dtype, x, grad, rng


@st.composite
def batch_norm_forward_case(draw):
    shape, dtype, x, _, rng = _ncl(draw)
    weight, bias = rng.uniform(-2, 2, shape[1]).astype(dtype), rng.uniform(-1, 1, shape[1]).astype(dtype)
    given = () if draw(st.booleans()) else (x.mean(axis=(0, 2)) + 0.1, x.var(axis=(0, 2)) + 0.2)
    return Case((x, weight, bias, 1e-5) + given, dtype, tol=BN_TOL)


@st.composite
def batch_norm_backward_case(draw):
    shape, dtype, x, grad, rng = _ncl(draw)
    weight = rng.uniform(-2, 2, shape[1]).astype(dtype)
    _, mean, var = reference("batch_norm_forward")(x, weight, np.zeros_like(weight), 1e-5)
    inv_std = (1.0 / np.sqrt(var.astype(np.float64) + 1e-5)).astype(dtype)
    return Case((grad, x, weight, mean, inv_std, draw(st.booleans())), dtype, tol=BN_TOL,
                scaled=True)


@st.composite
def batch_norm_relu_forward_case(draw):
    shape, dtype, x, residual, rng = _ncl(draw)
    weight, bias = rng.uniform(-2, 2, shape[1]).astype(dtype), rng.uniform(-1, 1, shape[1]).astype(dtype)
    given = () if draw(st.booleans()) else (x.mean(axis=(0, 2)) + 0.1, x.var(axis=(0, 2)) + 0.2)
    residual = residual if draw(st.booleans()) else None
    return Case((x, weight, bias, 1e-5, residual) + given, dtype, tol=BN_TOL)


@st.composite
def batch_norm_relu_backward_case(draw):
    shape, dtype, x, grad, rng = _ncl(draw)
    weight = rng.uniform(-2, 2, shape[1]).astype(dtype)
    bias = rng.uniform(-1, 1, shape[1]).astype(dtype)
    residual = rng.standard_normal(shape).astype(dtype)
    y, mean, var = reference("batch_norm_relu_forward")(x, weight, bias, 1e-5, residual)
    inv_std = (1.0 / np.sqrt(var.astype(np.float64) + 1e-5)).astype(dtype)
    return Case((grad, y, x, weight, mean, inv_std, draw(st.booleans()), draw(st.booleans())),
                dtype, tol=BN_TOL, scaled=True)


_lrn_settings = st.tuples(st.integers(1, 7), st.sampled_from([1e-4, 0.1, 2.0]),
                          st.sampled_from([0.75, 0.5, 1.3]), st.sampled_from([1.0, 2.0]))


@st.composite
def lrn_forward_case(draw):
    _, dtype, x, _, _ = _ncl(draw, max_side=8)
    return Case((x,) + draw(_lrn_settings), dtype, tol=LRN_TOL)


@st.composite
def lrn_backward_case(draw):
    _, dtype, x, grad, _ = _ncl(draw, max_side=8)
    size, alpha, beta, k = draw(_lrn_settings)
    _, scale = reference("lrn_forward")(x, size, alpha, beta, k)
    return Case((grad, x, scale, size, alpha, beta), dtype, tol=LRN_TOL)


# ---------------------------------------------------------------------------- activations, dropout

# Values with exact zeros of both signs, NaN and infinities among ordinary numbers.
relu_values = st.one_of(st.floats(-5, 5), st.sampled_from([0.0, -0.0, np.nan, np.inf, -np.inf]))


@st.composite
def relu_forward_case(draw):
    dtype = draw(dtypes)
    x = draw(shapes(0, 3, 1, 6).flatmap(lambda s: arrays(s, elements=relu_values)))
    return Case((np.asarray(x).astype(dtype),), dtype, exact=True)


@st.composite
def relu_backward_case(draw):
    dtype, shape = draw(dtypes), draw(shapes(0, 3, 1, 6))
    x = np.asarray(draw(arrays(shape, elements=relu_values))).astype(dtype)
    g = np.asarray(draw(arrays(shape, elements=relu_values))).astype(dtype)
    return Case((g, reference("relu_forward")(x)), dtype, exact=True)


@st.composite
def erf_case(draw):
    dtype = draw(dtypes)
    x = draw(shapes(0, 3, 1, 6).flatmap(lambda s: arrays(s, elements=st.floats(-8, 8))))
    # Below the normal range values are spaced by the smallest subnormal, so a last-place
    # difference there is that much in absolute terms (erf(x) ~ 1.13 x for tiny x).
    return Case((np.asarray(x).astype(dtype),), dtype,
                tol={t: (rtol, float(np.finfo(t).smallest_subnormal))
                     for t, rtol in ((np.float32, 1e-6), (np.float64, 1e-13))})


@st.composite
def dropout_forward_case(draw):
    dtype = draw(dtypes)
    x = np.asarray(draw(shapes(0, 4, 1, 6).flatmap(arrays))).astype(dtype)
    noise = _rng(draw(seeds)).random(x.shape).astype(dtype)
    p = draw(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9, 1.0]))
    return Case((x, noise, p), dtype, exact=True)


# ---------------------------------------------------------------------------- cross-entropy

@st.composite
def _cross_entropy_problem(draw):
    """Either small rows of moderate logits with any target, weight and smoothing, or rows
    long enough for the vectorised loops with logits far apart (+-1e4: a one-hot softmax),
    -inf logits and a NaN."""
    dtype = draw(dtypes)
    if draw(st.booleans()):
        rows, classes = draw(st.integers(1, 7)), draw(st.integers(1, 9))
        logits = np.asarray(draw(arrays((rows, classes), elements=st.floats(-30, 30)))).astype(dtype)
        ignore_index = draw(st.sampled_from([-100, 0, 2]))
        target = np.asarray(draw(arrays((rows,), np.int64, elements=st.integers(0, classes - 1))))
        if draw(st.booleans()):
            target[0] = ignore_index
        weight = np.asarray(draw(arrays((classes,), elements=st.floats(0.0, 3.0)))).astype(dtype)
        smoothing = draw(st.sampled_from([0.0, 0.2, 1.0]))
        row_grad = np.asarray(draw(arrays((rows,)))).astype(dtype)
    else:
        rows, classes = draw(st.integers(1, 4)), draw(st.integers(2, 300))
        logits = np.asarray(draw(arrays((rows, classes), elements=st.one_of(
            st.floats(-50, 50), st.sampled_from([1e4, -1e4, -np.inf]))))).astype(dtype)
        logits[:, 0] = 1.0                    # no row is all -inf
        if draw(st.booleans()):
            logits[-1, -1] = np.nan
        ignore_index = -100
        target = np.asarray(draw(arrays((rows,), np.int64, elements=st.integers(0, classes - 1))))
        weight = np.ones(classes, dtype=dtype)
        smoothing = draw(st.sampled_from([0.0, 0.1]))
        row_grad = np.ones(rows, dtype=dtype)
    return dtype, logits, (target, weight, ignore_index, smoothing), row_grad


CE_TOL = {np.float32: (2e-5, 2e-5), np.float64: (1e-12, 1e-12)}


@st.composite
def softmax_cross_entropy_forward_case(draw):
    dtype, logits, rest, _ = draw(_cross_entropy_problem())
    return Case((logits,) + rest, dtype, tol=CE_TOL)


@st.composite
def softmax_cross_entropy_backward_case(draw):
    dtype, logits, rest, row_grad = draw(_cross_entropy_problem())
    with np.errstate(invalid="ignore", over="ignore"):
        _, lse = reference("softmax_cross_entropy_forward")(logits, *rest)
    return Case((logits, lse) + rest + (row_grad,), dtype, tol=CE_TOL)


# ---------------------------------------------------------------------------- optimizer updates

OPTIM_TOL = {np.float32: (2e-6, 2e-6), np.float64: (1e-11, 1e-11)}


def _update_case(draw, buffers, options):
    dtype, rng = draw(dtypes), _rng(draw(seeds))
    size = draw(st.integers(1, 70))
    param, grad = rng.standard_normal(size).astype(dtype), rng.standard_normal(size).astype(dtype)
    state = [None if b is None else b(rng, size).astype(dtype) for b in buffers]
    args = (param, grad) + tuple(state)
    in_place = (0,) + tuple(2 + i for i, b in enumerate(state) if b is not None)
    return Case(args, dtype, tol=OPTIM_TOL, in_place=in_place, kwargs=options)


def _normal(rng, size):
    return rng.standard_normal(size)


def _square(rng, size):
    return rng.standard_normal(size) ** 2 + 0.01


@st.composite
def sgd_update_case(draw):
    momentum = draw(st.sampled_from([0.0, 0.9]))
    return _update_case(draw, [_normal if momentum else None], dict(
        lr=draw(st.sampled_from([0.1, 0.05])), momentum=momentum,
        dampening=draw(st.sampled_from([0.0, 0.1])), weight_decay=draw(st.sampled_from([0.0, 0.01])),
        nesterov=draw(st.booleans()) and momentum > 0))


@st.composite
def adam_update_case(draw):
    amsgrad = draw(st.booleans())
    return _update_case(draw, [_normal, _square, _square if amsgrad else None], dict(
        step=draw(st.integers(1, 5)), lr=1e-2, beta1=draw(st.sampled_from([0.9, 0.3])),
        beta2=draw(st.sampled_from([0.999, 0.9])), eps=draw(st.sampled_from([1e-8, 1e-6])),
        weight_decay=draw(st.sampled_from([0.0, 0.1])), amsgrad=amsgrad,
        decoupled_weight_decay=draw(st.booleans())))


@st.composite
def adagrad_update_case(draw):
    return _update_case(draw, [_square], dict(
        step=draw(st.integers(1, 5)), lr=0.1, lr_decay=draw(st.sampled_from([0.0, 0.05])),
        weight_decay=draw(st.sampled_from([0.0, 0.01])), eps=draw(st.sampled_from([1e-10, 1e-6]))))


@st.composite
def rmsprop_update_case(draw):
    centered, momentum = draw(st.booleans()), draw(st.sampled_from([0.0, 0.9]))
    return _update_case(draw, [_square, _normal if centered else None,
                                        _normal if momentum else None], dict(
        lr=0.01, alpha=draw(st.sampled_from([0.99, 0.3])), eps=draw(st.sampled_from([1e-8, 1e-6])),
        weight_decay=draw(st.sampled_from([0.0, 0.01])), momentum=momentum, centered=centered))


CASES = {
    "im2col": im2col_case(), "col2im": col2im_case(), "im2col_wide": im2col_wide_case(),
    # im2col_phases takes im2col's arguments; its straddling columns are compared bit for bit too.
    "im2col_phases": im2col_case(), "col2im_phases": col2im_phases_case(),
    "conv2d_forward": conv2d_forward_case(), "conv2d_backward": conv2d_backward_case(),
    "matmul_2d": matmul_2d_case(),
    "winograd_input_tiles": winograd_input_tiles_case(),
    "winograd_grad_tiles": winograd_grad_tiles_case(),
    "winograd_output_tiles": winograd_output_tiles_case(),
    "max_pool2d_forward": max_pool2d_forward_case(), "max_pool2d_backward": max_pool2d_backward_case(),
    "avg_pool2d_forward": avg_pool2d_forward_case(), "avg_pool2d_backward": avg_pool2d_backward_case(),
    "batch_norm_forward": batch_norm_forward_case(), "batch_norm_backward": batch_norm_backward_case(),
    "batch_norm_relu_forward": batch_norm_relu_forward_case(),
    "batch_norm_relu_backward": batch_norm_relu_backward_case(),
    "lrn_forward": lrn_forward_case(), "lrn_backward": lrn_backward_case(),
    "relu_forward": relu_forward_case(), "relu_backward": relu_backward_case(), "erf": erf_case(),
    "dropout_forward": dropout_forward_case(),
    "softmax_cross_entropy_forward": softmax_cross_entropy_forward_case(),
    "softmax_cross_entropy_backward": softmax_cross_entropy_backward_case(),
    "sgd_update": sgd_update_case(), "adam_update": adam_update_case(),
    "adagrad_update": adagrad_update_case(), "rmsprop_update": rmsprop_update_case(),
}


# ---------------------------------------------------------------------------- the implementations

def _numba_table():
    try:
        import numba  # noqa: F401
    except ImportError:
        return {}
    return backend.kernel_table("cpu")


IMPLEMENTATIONS = {"numba": _numba_table(), "cuda-emulator": backend.kernel_table("cuda"),
                   "cupy": backend.kernel_table("cuda")}


def _unavailable(impl):
    if impl == "numba" and not backend.numba_available():
        return "Numba is not installed"
    if impl == "cuda-emulator" and not cuda_emulator.compiler_available():
        return "the CUDA emulator needs a C++20 compiler (g++ or clang++)"
    if impl == "cupy" and backend.cupy_or_none() is None:
        return "no CUDA device: CuPy is not installed or sees no GPU"
    return None


@contextlib.contextmanager
def _running(impl, case):
    if impl == "cuda-emulator":
        from tinygrad_cnn.kernels.cuda import _runtime
        with _runtime.use_compiler(cuda_emulator.compile_source):
            yield
    elif case.chunk_bytes is not None:
        from tinygrad_cnn.kernels.cpu import _workers
        previous, _workers.CPU_CHUNK_BYTES = _workers.CPU_CHUNK_BYTES, case.chunk_bytes
        try:
            yield
        finally:
            _workers.CPU_CHUNK_BYTES = previous
    else:
        yield


def _copy(value):
    return value.copy() if isinstance(value, np.ndarray) else value


def _call(fn, case, impl):
    """The kernel's outputs and the arrays it updated in place, as NumPy arrays."""
    args = [_copy(a) for a in case.args]
    kwargs = {key: _copy(value) for key, value in case.kwargs.items()}
    if impl == "cupy":
        cupy = backend.cupy_or_none()
        args = [cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
        kwargs = {key: cupy.asarray(value) if isinstance(value, np.ndarray) else value
                  for key, value in kwargs.items()}
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"), _running(impl, case):
        out = fn(*args, **kwargs)
    outputs = list(out) if isinstance(out, tuple) else ([] if out is None else [out])
    outputs += [args[i] for i in case.in_place]
    return [None if o is None else backend.to_host(o) for o in outputs]


def _assert_equal(name, impl, case, got, expected):
    assert len(got) == len(expected), name
    for index, (a, b) in enumerate(zip(got, expected)):
        where = f"{name} [{impl}] output {index}"
        assert (a is None) == (b is None), where
        if b is None:
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, f"{where}: {a.shape} {a.dtype} != {b.shape} {b.dtype}"
        if case.exact and impl != "cupy":
            np.testing.assert_array_equal(a, b, err_msg=where)
            continue
        rtol, atol = case.tol[case.dtype]
        scaled = case.scaled
        if impl != "numba":
            # CUDA reductions sum in another order (and float32 ones in float32).
            cuda_rtol = 2e-6 if case.dtype == np.float32 else 1e-11
            rtol, atol, scaled = max(rtol, cuda_rtol), max(atol, cuda_rtol), True
        finite = b[np.isfinite(b)] if b.dtype.kind == "f" else b
        scale = max(1.0, float(np.abs(finite).max())) if scaled and finite.size else 1.0
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol * scale, err_msg=where)


PAIRS = [(impl, name) for impl, table in IMPLEMENTATIONS.items() for name in sorted(table)]


def test_every_kernel_has_a_case():
    names = {name for _, name in PAIRS}
    assert names <= set(CASES), f"kernels without a case in CASES: {sorted(names - set(CASES))}"
    assert set(CASES) <= names | set(backend._references), "a case for a kernel that does not exist"


@pytest.mark.parametrize("impl, name", PAIRS, ids=[f"{impl}-{name}" for impl, name in PAIRS])
def test_kernel_equals_its_reference(impl, name):
    reason = _unavailable(impl)
    if reason:
        pytest.skip(reason)
    assert name in CASES, f"kernel {name!r} ({impl}) has no case: add one to CASES"
    fn = IMPLEMENTATIONS[impl][name]
    assert fn is not reference(name), name

    @settings(max_examples=25 if impl == "numba" else 12, deadline=None)
    @given(case=CASES[name])
    def check(case):
        expected = _call(reference(name), case, "numba")
        _assert_equal(name, impl, case, _call(fn, case, impl), expected)

    check()
