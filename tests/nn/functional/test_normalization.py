"""Tests of batch_norm, local_response_norm, layer_norm and group_norm and of their kernels."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_cnn as tg
from tinygrad_cnn import backend
from tinygrad_cnn.nn import functional as F
from tinygrad_cnn.testing import (arrays, assert_allclose, check_grad, check_gradgrad, shapes,
                                  non_contiguous, tensor64)

KERNEL_NAMES = ("batch_norm_forward", "batch_norm_backward", "batch_norm_relu_forward",
                "batch_norm_relu_backward", "lrn_forward", "lrn_backward")

# (N, C, *) shapes: (N, C), (N, C, L), (N, C, H, W). Values come from a seeded generator drawn
# by Hypothesis: BatchNorm divides by the batch spread, so arbitrary Hypothesis arrays would
# mostly test the degenerate all-equal channel (which has its own test).
bn_shapes = shapes(min_dims=2, max_dims=4, min_side=1, max_side=4).filter(
    lambda s: int(np.prod(s)) // s[1] > 1)
seeds = st.integers(0, 2**32 - 1)


def normal(seed, shape, scale=1.0, offset=0.0, dtype=np.float64):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + offset).astype(dtype)


def channel_vector(seed, channels):
    rng = np.random.default_rng(seed + 1)
    return rng.uniform(0.5, 1.5, channels) * rng.choice([-1.0, 1.0], channels)


def running_stats(channels, seed=3, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (tg.Tensor(rng.standard_normal(channels).astype(dtype)),
            tg.Tensor(rng.uniform(0.5, 2.0, channels).astype(dtype)))


def grads_of(out, upstream, *inputs, create_graph=False):
    for t in inputs:
        t.grad = None
    (out * tg.Tensor(upstream)).sum().backward(create_graph=create_graph)
    return [t.grad.numpy().copy() for t in inputs]


# ---------------------------------------------------------------------------
# Kernels == references
# ---------------------------------------------------------------------------

def ncl_case(seed, shape, dtype):
    """x, grad_out, weight, bias as (N, C, L) / (C,) arrays with an offset mean per channel."""
    rng = np.random.default_rng(seed)
    channels = shape[1]
    offset = rng.uniform(-4, 4, (1, channels, 1))
    spread = rng.uniform(0.2, 3.0, (1, channels, 1))
    x = (rng.standard_normal(shape) * spread + offset).astype(dtype)
    grad_out = rng.standard_normal(shape).astype(dtype)
    weight = rng.uniform(-2, 2, channels).astype(dtype)
    bias = rng.uniform(-2, 2, channels).astype(dtype)
    return x, grad_out, weight, bias


def tolerances(dtype):
    return dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)


needs_numba = pytest.mark.skipif(not backend.numba_available(), reason="Numba is not installed")
# Ops run on both CPU kernel sets (a context manager, since Hypothesis reruns the test body).
CPU_IMPLS = ["numpy", "numba"] if backend.numba_available() else ["numpy"]


@needs_numba
def test_all_kernels_registered():
    for name in KERNEL_NAMES:
        assert backend.available_implementations(name)[:2] == ["numpy", "numba"], name


@needs_numba
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernels_take_the_parallel_path_on_large_inputs(dtype):
    """Above PARALLEL_MIN_ELEMENTS the prange drivers run: compare them with the reference too."""
    from tinygrad_cnn.kernels.cpu import normalization as kernels
    shape = (3, 5, kernels.PARALLEL_MIN_ELEMENTS // 15 + 7)      # odd sizes, just over the limit
    assert int(np.prod(shape)) >= kernels.PARALLEL_MIN_ELEMENTS
    x, grad_out, weight, bias = ncl_case(11, shape, dtype)
    tol = tolerances(dtype)
    for training in (True, False):
        given_stats = () if training else (x.mean(axis=(0, 2)) - 0.3, x.var(axis=(0, 2)) + 0.5)
        ref = backend.kernel("batch_norm_forward", impl="numpy")(x, weight, bias, 1e-5,
                                                                 *given_stats)
        fast = kernels.batch_norm_forward(x, weight, bias, 1e-5, *given_stats)
        for r, f in zip(ref, fast):
            assert_allclose(f, r, **tol)
        mean, var = ref[1], ref[2]
        inv_std = (1.0 / np.sqrt(var.astype(np.float64) + 1e-5)).astype(dtype)
        ref = backend.kernel("batch_norm_backward", impl="numpy")(grad_out, x, weight, mean,
                                                                  inv_std, training)
        fast = kernels.batch_norm_backward(grad_out, x, weight, mean, inv_std, training)
        for r, f in zip(ref, fast):
            scale = max(1.0, float(np.abs(r).max()))
            assert_allclose(f / scale, r / scale, **tol)
    y_ref, scale_ref = backend.kernel("lrn_forward", impl="numpy")(x, 5, 1e-2, 0.75, 2.0)
    y, scale = kernels.lrn_forward(x, 5, 1e-2, 0.75, 2.0)
    lrn_tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=2e-5, atol=1e-6)
    assert_allclose(y, y_ref, **lrn_tol)
    assert_allclose(scale, scale_ref, **lrn_tol)
    assert_allclose(kernels.lrn_backward(grad_out, x, scale_ref, 5, 1e-2, 0.75),
                    backend.kernel("lrn_backward", impl="numpy")(grad_out, x, scale_ref, 5, 1e-2,
                                                                 0.75), **lrn_tol)


@needs_numba
@pytest.mark.parametrize("length", [3, 1031])
def test_batch_norm_kernels_sum_blocks_of_a_large_batch_the_same_on_any_thread_count(length):
    """The batch sums run over SUM_BLOCKS blocks of images in memory order (37 images: blocks of
    2 and 3); the results equal the reference, serial (3) and parallel (1031) drivers alike,
    and are bit for bit the same with one Numba thread as with all of them."""
    import numba
    from tinygrad_cnn.kernels.cpu import normalization as kernels
    shape = (37, 4, length)
    assert shape[0] > kernels.SUM_BLOCKS
    assert (int(np.prod(shape)) >= kernels.PARALLEL_MIN_ELEMENTS) == (length > 3)
    x, grad_out, weight, bias = ncl_case(5, shape, np.float32)
    residual = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
    tol = tolerances(np.float32)

    def run():
        y, mean, var = kernels.batch_norm_relu_forward(x, weight, bias, 1e-5, residual)
        inv_std = (1.0 / np.sqrt(var.astype(np.float64) + 1e-5)).astype(np.float32)
        grads = kernels.batch_norm_relu_backward(grad_out, y, x, weight, mean, inv_std, True, True)
        return (y, mean, var) + tuple(grads), inv_std

    outputs, inv_std = run()
    ref = backend.kernel("batch_norm_relu_forward", impl="numpy")(x, weight, bias, 1e-5, residual)
    ref += tuple(backend.kernel("batch_norm_relu_backward", impl="numpy")(
        grad_out, ref[0], x, weight, ref[1], inv_std, True, True))
    for r, f in zip(ref, outputs):
        scale = max(1.0, float(np.abs(r).max()))
        assert_allclose(f / scale, r / scale, **tol)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        one_thread, _ = run()
    finally:
        numba.set_num_threads(threads)
    for a, b in zip(outputs, one_thread):
        np.testing.assert_array_equal(a, b)


@needs_numba
def test_batch_norm_kernel_constant_channel():
    # Zero variance: both implementations give y = bias exactly enough, no NaN.
    x = np.full((3, 2, 4), 7.25)
    weight, bias = np.array([2.0, -1.0]), np.array([0.5, 0.25])
    for impl in ("numpy", "numba"):
        y, mean, var = backend.kernel("batch_norm_forward", impl=impl)(x, weight, bias, 1e-5)
        assert_allclose(mean, [7.25, 7.25])
        assert_allclose(var, [0.0, 0.0], atol=1e-20)
        assert_allclose(y, np.broadcast_to(bias[None, :, None], x.shape), atol=1e-9)


# ---------------------------------------------------------------------------
# BatchNorm: gradients
# ---------------------------------------------------------------------------

def bn_fn(training, affine, running=None):
    running_mean, running_var = running if running is not None else (None, None)
    if affine:
        return lambda x, w, b: F.batch_norm(x, running_mean, running_var, w, b, training=training)
    return lambda x: F.batch_norm(x, running_mean, running_var, training=training)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("training", [True, False])
@settings(max_examples=12, deadline=None)
@given(shape=bn_shapes, seed=seeds, affine=st.booleans())
def test_batch_norm_gradcheck(impl, training, shape, seed, affine):
    channels = shape[1]
    running = running_stats(channels, seed % 100)
    fn = bn_fn(training, affine, running)
    x = normal(seed, shape, scale=2.0, offset=1.0)
    args = (x, channel_vector(seed, channels), channel_vector(seed + 7, channels)) if affine \
        else (x,)
    with backend.cpu_backend(impl):
        check_grad(fn, *args)


@pytest.mark.parametrize("training", [True, False])
@settings(max_examples=6, deadline=None)
@given(shape=bn_shapes, seed=seeds)
def test_batch_norm_gradgradcheck(training, shape, seed):
    channels = shape[1]
    fn = bn_fn(training, True, running_stats(channels))
    check_gradgrad(fn, normal(seed, shape, scale=1.5), channel_vector(seed, channels),
                   channel_vector(seed + 7, channels))


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_differentiable_backward_equals_fast_backward(training):
    # create_graph=True takes the Tensor-op path; it must agree with the fused kernel.
    shape = (4, 3, 2, 5)
    x, w, b = tensor64(normal(0, shape, 2.0, 1.0)), tensor64(channel_vector(1, 3)), \
        tensor64(channel_vector(2, 3))
    upstream = normal(5, shape)
    fn = bn_fn(training, True, running_stats(3))
    fast = grads_of(fn(x, w, b), upstream, x, w, b)
    graph = grads_of(fn(x, w, b), upstream, x, w, b, create_graph=True)
    for f, g in zip(fast, graph):
        assert_allclose(g, f, rtol=1e-10, atol=1e-12)


def test_batch_norm_gradient_of_weight_only():
    # Input without requires_grad: only weight and bias get gradients, x gets none.
    x = tg.Tensor(normal(0, (5, 2, 3)))
    w, b = tensor64(channel_vector(1, 2)), tensor64(channel_vector(2, 2))
    F.batch_norm(x, None, None, w, b, training=True).sum().backward()
    assert x.grad is None
    assert_allclose(b.grad, [15.0, 15.0])
    assert_allclose(w.grad, [0.0, 0.0], atol=1e-12)   # sum of xhat is zero per channel


# ---------------------------------------------------------------------------
# BatchNorm: semantics kit
# ---------------------------------------------------------------------------

@settings(max_examples=10, deadline=None)
@given(shape=bn_shapes, seed=seeds, steps=st.integers(1, 4),
       momentum=st.sampled_from([0.1, 0.5, 1.0, 0.0]))
def test_running_stats_closed_form(shape, seed, steps, momentum):
    channels = shape[1]
    running_mean, running_var = running_stats(channels)
    mean0, var0 = running_mean.numpy().copy(), running_var.numpy().copy()
    axes = (0,) + tuple(range(2, len(shape)))
    count = int(np.prod(shape)) // channels
    batches = [normal(seed + i, shape, scale=1.0 + i, offset=i) for i in range(steps)]
    for batch in batches:
        F.batch_norm(tg.Tensor(batch), running_mean, running_var, training=True, momentum=momentum)
    # r_k = (1-m)^k r_0 + sum_i m (1-m)^(k-i) s_i, with s_i the batch mean / unbiased variance
    expected_mean = (1 - momentum) ** steps * mean0
    expected_var = (1 - momentum) ** steps * var0
    for i, batch in enumerate(batches, start=1):
        weight = momentum * (1 - momentum) ** (steps - i)
        expected_mean = expected_mean + weight * batch.mean(axis=axes)
        expected_var = expected_var + weight * batch.var(axis=axes) * count / (count - 1)
    assert_allclose(running_mean, expected_mean, rtol=1e-10, atol=1e-12)
    assert_allclose(running_var, expected_var, rtol=1e-10, atol=1e-12)


def test_running_stats_updated_in_place():
    running_mean, running_var = running_stats(3)
    mean_array, var_array = running_mean.array, running_var.array
    x = tg.Tensor(normal(0, (6, 3, 2, 2), offset=2.0), requires_grad=True)
    F.batch_norm(x, running_mean, running_var, training=True).sum().backward()
    assert running_mean.array is mean_array and running_var.array is var_array
    assert not running_mean.requires_grad and running_mean.grad is None
    assert float(np.abs(mean_array).max()) > 0.1


def test_eval_mode_leaves_running_stats_untouched_and_uses_them():
    running_mean, running_var = running_stats(3, dtype=np.float32)
    mean0, var0 = running_mean.numpy().copy(), running_var.numpy().copy()
    x = normal(0, (5, 3, 4), offset=3.0, dtype=np.float32)
    w, b = channel_vector(1, 3).astype(np.float32), channel_vector(2, 3).astype(np.float32)
    xt = tg.Tensor(x, requires_grad=True)
    out = F.batch_norm(xt, running_mean, running_var, tg.Tensor(w), tg.Tensor(b), training=False)
    out.sum().backward()
    np.testing.assert_array_equal(running_mean.numpy(), mean0)
    np.testing.assert_array_equal(running_var.numpy(), var0)
    expected = (x - mean0[:, None]) / np.sqrt(var0[:, None] + 1e-5) * w[:, None] + b[:, None]
    assert out.dtype == np.float32
    assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert_allclose(xt.grad, np.broadcast_to((w / np.sqrt(var0 + 1e-5))[:, None], x.shape),
                    rtol=1e-5)


def test_eval_output_does_not_change_when_running_stats_change_later():
    running_mean, running_var = running_stats(2)
    x = tensor64(normal(0, (4, 2)))
    out = F.batch_norm(x, running_mean, running_var, training=False)
    before = out.numpy().copy()
    upstream = normal(1, (4, 2))
    grad_before = grads_of(F.batch_norm(x, running_mean, running_var), upstream, x)[0]
    out2 = F.batch_norm(x, running_mean, running_var, training=False)
    running_mean.array += 5.0            # e.g. a training step of the same layer in between
    running_var.array *= 3.0
    assert_allclose(out, before)
    assert_allclose(grads_of(out2, upstream, x)[0], grad_before)


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5), (2, 3, 4, 5)])
@pytest.mark.parametrize("training", [True, False])
def test_fused_equals_composition_of_primitives(shape, training):
    channels = shape[1]
    axes = (0,) + tuple(range(2, len(shape)))
    bshape = (1, channels) + (1,) * (len(shape) - 2)
    x_np, w_np, b_np = normal(0, shape, 2.0, -1.0), channel_vector(1, channels), \
        channel_vector(2, channels)
    upstream = normal(9, shape)
    running_mean, running_var = running_stats(channels)
    eps = 1e-5

    def composed(x, w, b):
        if training:
            mean = x.mean(axes, keepdim=True)
            var = x.var(axes, keepdim=True, unbiased=False)
        else:
            mean = tg.Tensor(running_mean.numpy()).reshape(bshape)
            var = tg.Tensor(running_var.numpy()).reshape(bshape)
        return (x - mean) / (var + eps).sqrt() * w.reshape(bshape) + b.reshape(bshape)

    inputs = [tensor64(a) for a in (x_np, w_np, b_np)]
    fused_out = F.batch_norm(inputs[0], running_mean, running_var, inputs[1], inputs[2],
                             training=training, eps=eps)
    fused_grads = grads_of(fused_out, upstream, *inputs)
    composed_out = composed(*inputs)
    composed_grads = grads_of(composed_out, upstream, *inputs)
    assert_allclose(fused_out, composed_out.numpy(), rtol=1e-10, atol=1e-12)
    for name, f, c in zip(("x", "weight", "bias"), fused_grads, composed_grads):
        assert_allclose(f, c, rtol=1e-9, atol=1e-11, err_msg=name)


# ---------------------------------------------------------------------------
# batch_norm_relu: relu(batch_norm(x) + residual) as one op
# ---------------------------------------------------------------------------

def bn_relu_fn(training, running, with_residual):
    running_mean, running_var = running
    if with_residual:
        return lambda x, w, b, r: F.batch_norm_relu(x, running_mean, running_var, w, b,
                                                    training=training, residual=r)
    return lambda x, w, b: F.batch_norm_relu(x, running_mean, running_var, w, b,
                                             training=training)


def bn_relu_inputs(seed, shape, with_residual):
    channels = shape[1]
    # Offsets put part of every channel below zero and part above, so the mask matters.
    inputs = [normal(seed, shape, scale=2.0, offset=1.0), channel_vector(seed, channels),
              channel_vector(seed + 7, channels) * 0.3]
    return inputs + ([normal(seed + 3, shape)] if with_residual else [])


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("training", [True, False])
@settings(max_examples=10, deadline=None)
@given(shape=bn_shapes, seed=seeds, with_residual=st.booleans())
def test_batch_norm_relu_gradcheck(impl, training, shape, seed, with_residual):
    fn = bn_relu_fn(training, running_stats(shape[1], seed % 100), with_residual)
    with backend.cpu_backend(impl):
        check_grad(fn, *bn_relu_inputs(seed, shape, with_residual))


@pytest.mark.parametrize("training", [True, False])
@settings(max_examples=5, deadline=None)
@given(shape=bn_shapes, seed=seeds, with_residual=st.booleans())
def test_batch_norm_relu_gradgradcheck(training, shape, seed, with_residual):
    fn = bn_relu_fn(training, running_stats(shape[1]), with_residual)
    check_gradgrad(fn, *bn_relu_inputs(seed, shape, with_residual))


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("training", [True, False])
@settings(max_examples=10, deadline=None)
@given(shape=bn_shapes, seed=seeds, with_residual=st.booleans(), momentum=st.sampled_from([0.1, 0.7]))
def test_batch_norm_relu_equals_the_three_ops(impl, training, shape, seed, with_residual, momentum):
    """Values, every gradient and the running statistics of the fused op are those of
    relu(batch_norm(x) + residual) computed op by op."""
    arrays_ = bn_relu_inputs(seed, shape, with_residual)
    upstream = normal(seed + 11, shape)
    results = []
    with backend.cpu_backend(impl):
        for fused in (True, False):
            running = running_stats(shape[1], seed % 100)
            inputs = [tensor64(a) for a in arrays_]
            residual = inputs[3] if with_residual else None
            if fused:
                out = F.batch_norm_relu(inputs[0], *running, inputs[1], inputs[2], training=training,
                                        momentum=momentum, residual=residual)
            else:
                out = F.batch_norm(inputs[0], *running, inputs[1], inputs[2], training=training,
                                   momentum=momentum)
                out = F.relu(out if residual is None else out + residual)
            results.append([out.numpy()] + grads_of(out, upstream, *inputs)
                           + [r.numpy() for r in running])
    names = ["out", "x", "weight", "bias"] + (["residual"] if with_residual else []) + ["mean", "var"]
    for name, f, c in zip(names, *results):
        assert_allclose(f, c, rtol=1e-10, atol=1e-12, err_msg=name)


def test_batch_norm_relu_differentiable_backward_equals_fast_backward():
    shape = (4, 3, 2, 5)
    for training in (True, False):
        fn = bn_relu_fn(training, running_stats(3), True)
        inputs = [tensor64(a) for a in bn_relu_inputs(0, shape, True)]
        upstream = normal(5, shape)
        fast = grads_of(fn(*inputs), upstream, *inputs)
        graph = grads_of(fn(*inputs), upstream, *inputs, create_graph=True)
        for f, g in zip(fast, graph):
            assert_allclose(g, f, rtol=1e-10, atol=1e-12)


def test_batch_norm_relu_matches_torch(torch):
    x, w, b, r = bn_relu_inputs(0, (6, 3, 4, 5), True)
    upstream = normal(3, x.shape)
    for training in (True, False):
        rm, rv = running_stats(3)
        trm, trv = torch.tensor(rm.numpy()), torch.tensor(rv.numpy())
        ours = [tensor64(a) for a in (x, w, b, r)]
        theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b, r)]
        out = F.batch_norm_relu(ours[0], rm, rv, ours[1], ours[2], training=training, momentum=0.3,
                                eps=1e-3, residual=ours[3])
        tout = torch.relu(torch.nn.functional.batch_norm(
            theirs[0], trm, trv, theirs[1], theirs[2], training=training, momentum=0.3, eps=1e-3)
            + theirs[3])
        assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
        assert_allclose(rm, trm.numpy(), rtol=1e-12)
        assert_allclose(rv, trv.numpy(), rtol=1e-12)
        tout.backward(torch.tensor(upstream))
        for g, t in zip(grads_of(out, upstream, *ours), theirs):
            assert_allclose(g, t.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_batch_norm_relu_float32_and_nan():
    x = normal(0, (16, 4, 8, 8), scale=0.5, offset=0.2, dtype=np.float32)
    x[0, 1, 2, 3] = np.nan
    w, b = np.ones(4, np.float32), np.zeros(4, np.float32)
    mean, var = tg.Tensor(np.zeros(4, np.float32)), tg.Tensor(np.ones(4, np.float32))
    out = F.batch_norm_relu(tg.Tensor(x), mean, var, tg.Tensor(w), tg.Tensor(b)).numpy()
    assert out.dtype == np.float32 and np.isnan(out[0, 1, 2, 3])      # NaN passes, as relu
    expected = np.maximum(x / np.sqrt(np.float32(1 + 1e-5)), 0)
    finite = ~np.isnan(x)
    assert_allclose(out[finite], expected[finite], rtol=1e-6, atol=1e-7)


def test_batch_norm_relu_empty_batch():
    x = tg.Tensor(np.zeros((0, 3, 2, 2)), requires_grad=True)
    w = tg.Tensor(np.ones(3), requires_grad=True)
    out = F.batch_norm_relu(x, *running_stats(3), w, None, training=True,
                            residual=tg.Tensor(np.zeros((0, 3, 2, 2))))
    assert out.shape == (0, 3, 2, 2)
    out.sum().backward()
    assert_allclose(w.grad, np.zeros(3))


def test_batch_norm_relu_errors():
    x = tg.Tensor(np.zeros((4, 3, 2)))
    mean, var = running_stats(3)
    with pytest.raises(ValueError, match=r"batch_norm_relu: residual must have the input's shape "
                                         r"\(4, 3, 2\) and dtype float64, got shape \(4, 3\)"):
        F.batch_norm_relu(x, mean, var, residual=tg.Tensor(np.zeros((4, 3))))
    with pytest.raises(ValueError, match=r"residual .*dtype float32"):
        F.batch_norm_relu(x, mean, var, residual=tg.Tensor(np.zeros((4, 3, 2), np.float32)))
    with pytest.raises(TypeError, match="batch_norm_relu: argument 'residual' must be a Tensor"):
        F.batch_norm_relu(x, mean, var, residual=np.zeros((4, 3, 2)))
    with pytest.raises(ValueError, match=r"batch_norm_relu: weight .*got shape \(2,\)"):
        F.batch_norm_relu(x, mean, var, tg.Tensor(np.ones(2)))


def test_batch_norm_float32_large_offset_is_accurate():
    # ResNet-sized activations with a large mean: float32 output within float32 rounding.
    x = normal(0, (16, 4, 8, 8), scale=0.5, offset=100.0, dtype=np.float32)
    out = F.batch_norm(tg.Tensor(x), None, None, training=True)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2, 3), keepdims=True)
    expected = (x64 - mean) / np.sqrt(x64.var(axis=(0, 2, 3), keepdims=True) + 1e-5)
    assert out.dtype == np.float32
    assert_allclose(out, expected, rtol=0, atol=2e-4)


def test_batch_norm_non_contiguous_input():
    x = normal(0, (3, 4, 5))
    upstream = normal(1, x.shape)
    a, b = tensor64(x), tg.Tensor(non_contiguous(x), requires_grad=True)
    out_a = F.batch_norm(a, None, None, training=True)
    out_b = F.batch_norm(b, None, None, training=True)
    assert_allclose(out_b, out_a.numpy())
    assert_allclose(grads_of(out_b, upstream, b)[0], grads_of(out_a, upstream, a)[0])


def test_batch_norm_errors():
    x = tg.Tensor(np.zeros((4, 3, 2)))
    good_mean, good_var = running_stats(3)
    with pytest.raises(ValueError, match=r"batch_norm: running_mean .*\(3,\).*\(4, 3, 2\).*\(5,\)"):
        F.batch_norm(x, tg.Tensor(np.zeros(5)), good_var)
    with pytest.raises(ValueError, match=r"batch_norm: running_var .*got shape \(3, 1\)"):
        F.batch_norm(x, good_mean, tg.Tensor(np.ones((3, 1))), training=True)
    with pytest.raises(ValueError, match=r"batch_norm: weight .*got shape \(2,\)"):
        F.batch_norm(x, good_mean, good_var, tg.Tensor(np.ones(2)))
    with pytest.raises(ValueError, match=r"batch_norm: bias .*got shape \(4,\)"):
        F.batch_norm(x, good_mean, good_var, None, tg.Tensor(np.ones(4)))
    with pytest.raises(ValueError, match=r"more than 1 value per channel.*\(1, 3\)"):
        F.batch_norm(tg.Tensor(np.zeros((1, 3))), good_mean, good_var, training=True)
    with pytest.raises(ValueError, match=r"batch_norm: input must have shape .*\(3,\)"):
        F.batch_norm(tg.Tensor(np.zeros(3)), good_mean, good_var)
    with pytest.raises(ValueError, match="running_mean must be given when training=False"):
        F.batch_norm(x, None, None, training=False)
    with pytest.raises(ValueError, match="momentum=None"):
        F.batch_norm(x, good_mean, good_var, training=True, momentum=None)
    with pytest.raises(TypeError, match="batch_norm: argument 'running_mean' must be a Tensor or None"):
        F.batch_norm(x, np.zeros(3), good_var)
    with pytest.raises(TypeError, match="floating-point"):
        F.batch_norm(tg.Tensor(np.zeros((4, 3), dtype=np.int64)), good_mean, good_var)
    # a single sample is fine in eval mode
    out = F.batch_norm(tg.Tensor(np.zeros((1, 3))), good_mean, good_var, training=False)
    assert out.shape == (1, 3)


def test_batch_norm_matches_torch(torch):
    x = normal(0, (6, 3, 4, 5), 2.0, 0.5)
    w, b = channel_vector(1, 3), channel_vector(2, 3)
    upstream = normal(3, x.shape)
    for training in (True, False):
        rm, rv = running_stats(3)
        trm, trv = torch.tensor(rm.numpy()), torch.tensor(rv.numpy())
        ours = [tensor64(a) for a in (x, w, b)]
        theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
        for _ in range(2):
            out = F.batch_norm(ours[0], rm, rv, ours[1], ours[2], training=training,
                               momentum=0.3, eps=1e-3)
            tout = torch.nn.functional.batch_norm(theirs[0], trm, trv, theirs[1], theirs[2],
                                                  training=training, momentum=0.3, eps=1e-3)
        assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
        assert_allclose(rm, trm.numpy(), rtol=1e-12)
        assert_allclose(rv, trv.numpy(), rtol=1e-12)
        grads = grads_of(out, upstream, *ours)
        tout.backward(torch.tensor(upstream))
        for g, t in zip(grads, theirs):
            assert_allclose(g, t.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_batch_norm_on_device_matches_cpu(device):
    x = normal(0, (4, 3, 5), 2.0, 1.0, dtype=np.float32)
    upstream = normal(1, x.shape, dtype=np.float32)
    results = []
    for dev in ("cpu", device):
        rm, rv = running_stats(3, dtype=np.float32)
        xt = tg.Tensor(x, requires_grad=True, device=dev)
        rm, rv = rm.to(dev), rv.to(dev)
        out = F.batch_norm(xt, rm, rv, training=True)
        (out * tg.Tensor(upstream, device=dev)).sum().backward()
        results.append([out.numpy(), xt.grad.numpy(), rm.numpy(), rv.numpy()])
    for a, b in zip(*results):
        assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# Local response normalisation
# ---------------------------------------------------------------------------

def lrn_brute_force(x, size, alpha, beta, k):
    out = np.empty_like(x)
    n_batch, channels = x.shape[:2]
    for n in range(n_batch):
        for c in range(channels):
            total = np.zeros(x.shape[2:])
            for j in range(c - size // 2, c + (size - 1) // 2 + 1):
                if 0 <= j < channels:
                    total = total + x[n, j] ** 2
            out[n, c] = x[n, c] / (k + alpha / size * total) ** beta
    return out


lrn_shapes = shapes(min_dims=3, max_dims=4, min_side=1, max_side=4)
lrn_settings = dict(size=st.integers(1, 6), alpha=st.sampled_from([1e-4, 0.3, 1.0]),
                    beta=st.sampled_from([0.75, 0.5, 1.5]), k=st.sampled_from([1.0, 2.0]))


@pytest.mark.parametrize("impl", CPU_IMPLS)
@settings(max_examples=20, deadline=None)
@given(x=lrn_shapes.flatmap(arrays), **lrn_settings)
def test_lrn_matches_brute_force(impl, x, size, alpha, beta, k):
    with backend.cpu_backend(impl):
        out = F.local_response_norm(tg.Tensor(x), size, alpha, beta, k)
    assert_allclose(out, lrn_brute_force(x, size, alpha, beta, k), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@settings(max_examples=12, deadline=None)
@given(x=lrn_shapes.flatmap(arrays), **lrn_settings)
def test_lrn_gradcheck(impl, x, size, alpha, beta, k):
    with backend.cpu_backend(impl):
        check_grad(lambda t: F.local_response_norm(t, size, alpha, beta, k), x)


@settings(max_examples=5, deadline=None)
@given(x=shapes(min_dims=3, max_dims=3, min_side=1, max_side=4).flatmap(arrays),
       **lrn_settings)
def test_lrn_gradgradcheck(x, size, alpha, beta, k):
    check_gradgrad(lambda t: F.local_response_norm(t, size, alpha, beta, k), x)


def test_lrn_differentiable_backward_equals_fast_backward():
    x = tensor64(normal(0, (2, 7, 3, 3), 3.0))
    upstream = normal(1, x.shape)
    fn = lambda t: F.local_response_norm(t, 5, alpha=0.2, beta=0.75, k=2.0)  # noqa: E731
    fast = grads_of(fn(x), upstream, x)[0]
    graph = grads_of(fn(x), upstream, x, create_graph=True)[0]
    assert_allclose(graph, fast, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("size,alpha,beta,k", [(5, 1e-4, 0.75, 2.0), (2, 0.5, 0.6, 1.0),
                                               (4, 1.0, 1.25, 1.0)])
def test_lrn_matches_torch(torch, size, alpha, beta, k):
    for shape in [(2, 7, 5, 6), (3, 6, 4)]:
        x = normal(size, shape, 10.0)
        upstream = normal(1, shape)
        ours, theirs = tensor64(x), torch.tensor(x, requires_grad=True)
        out = F.local_response_norm(ours, size, alpha, beta, k)
        tout = torch.nn.functional.local_response_norm(theirs, size, alpha, beta, k)
        assert_allclose(out, tout.detach().numpy(), rtol=1e-12)
        tout.backward(torch.tensor(upstream))
        assert_allclose(grads_of(out, upstream, ours)[0], theirs.grad.numpy(), rtol=1e-9,
                        atol=1e-12)


def test_lrn_float32_alexnet_setting():
    x = normal(0, (2, 96, 6, 6), 20.0, dtype=np.float32)
    out = F.local_response_norm(tg.Tensor(x), 5, alpha=1e-4, beta=0.75, k=2.0)
    assert out.dtype == np.float32
    assert_allclose(out, lrn_brute_force(x.astype(np.float64), 5, 1e-4, 0.75, 2.0), rtol=1e-5)


def test_lrn_errors():
    with pytest.raises(ValueError, match=r"local_response_norm: input must have at least 3 .*\(4, 3\)"):
        F.local_response_norm(tg.Tensor(np.zeros((4, 3))), 2)
    with pytest.raises(ValueError, match="local_response_norm: size must be an integer >= 1, got 0"):
        F.local_response_norm(tg.Tensor(np.zeros((1, 3, 2))), 0)
    with pytest.raises(ValueError, match="size must be an integer"):
        F.local_response_norm(tg.Tensor(np.zeros((1, 3, 2))), 2.5)


# ---------------------------------------------------------------------------
# LayerNorm and GroupNorm
# ---------------------------------------------------------------------------

@settings(max_examples=12, deadline=None)
@given(shape=shapes(min_dims=1, max_dims=4, min_side=2, max_side=4), seed=seeds,
       normalized_dims=st.integers(1, 3), affine=st.booleans())
def test_layer_norm_gradcheck(shape, seed, normalized_dims, affine):
    normalized_shape = shape[len(shape) - min(normalized_dims, len(shape)):]
    x = normal(seed, shape, 2.0)
    if affine:
        w = channel_vector(seed, int(np.prod(normalized_shape))).reshape(normalized_shape)
        b = channel_vector(seed + 1, int(np.prod(normalized_shape))).reshape(normalized_shape)
        check_grad(lambda t, w, b: F.layer_norm(t, normalized_shape, w, b), x, w, b)
        check_gradgrad(lambda t, w, b: F.layer_norm(t, normalized_shape, w, b), x, w, b)
    else:
        check_grad(lambda t: F.layer_norm(t, normalized_shape), x)


def test_layer_norm_matches_torch(torch):
    x = normal(0, (3, 4, 5), 3.0, 1.0)
    w, b = normal(1, (4, 5)), normal(2, (4, 5))
    upstream = normal(3, x.shape)
    for normalized_shape, weight, bias in [((4, 5), w, b), (5, None, None), ([5], w[0], b[0])]:
        ours = [tensor64(a) for a in (x, weight, bias) if a is not None]
        theirs = [torch.tensor(a, requires_grad=True) for a in (x, weight, bias) if a is not None]
        out = F.layer_norm(ours[0], normalized_shape, *ours[1:], eps=1e-4)
        tout = torch.nn.functional.layer_norm(theirs[0], list(np.atleast_1d(normalized_shape)),
                                              *theirs[1:], eps=1e-4)
        assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
        tout.backward(torch.tensor(upstream))
        for g, t in zip(grads_of(out, upstream, *ours), theirs):
            assert_allclose(g, t.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_layer_norm_errors():
    x = tg.Tensor(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"layer_norm: normalized_shape \(3,\) .*\(2, 3, 4\)"):
        F.layer_norm(x, 3)
    with pytest.raises(ValueError, match=r"layer_norm: weight .*\(3, 4\).*\(4,\)"):
        F.layer_norm(x, (3, 4), tg.Tensor(np.ones(4)))


def test_group_norm_matches_torch_and_gradcheck(torch):
    x = normal(0, (2, 6, 3, 2), 2.0, 1.0)
    w, b = channel_vector(1, 6), channel_vector(2, 6)
    check_grad(lambda t, w, b: F.group_norm(t, 3, w, b), x, w, b)
    upstream = normal(3, x.shape)
    for groups in (1, 2, 3, 6):
        ours = [tensor64(a) for a in (x, w, b)]
        theirs = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
        out = F.group_norm(ours[0], groups, ours[1], ours[2])
        tout = torch.nn.functional.group_norm(theirs[0], groups, theirs[1], theirs[2])
        assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
        tout.backward(torch.tensor(upstream))
        for g, t in zip(grads_of(out, upstream, *ours), theirs):
            assert_allclose(g, t.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_group_norm_errors():
    with pytest.raises(ValueError, match=r"group_norm: num_groups .*C = 6, got 4"):
        F.group_norm(tg.Tensor(np.zeros((2, 6, 3))), 4)


def test_public_names():
    from tinygrad_cnn.nn.functional import normalization
    for name in normalization.__all__:
        assert getattr(F, name) is getattr(normalization, name)


# ---------------------------------------------------------------------------- bad arguments

def test_batch_norm_refuses_eps_zero_when_training_and_integer_statistics():
    constant = tg.Tensor(np.ones((2, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"batch_norm: eps must be > 0 when training, got 0"):
        F.batch_norm(constant, None, None, training=True, eps=0)
    # eval mode with eps=0 is allowed: the running variance is what the user gave
    out = F.batch_norm(constant, tg.Tensor(np.zeros(3, np.float32)), tg.Tensor(np.ones(3, np.float32)),
                       training=False, eps=0)
    np.testing.assert_array_equal(out.numpy(), 1.0)
    for name, value in (("running_mean", np.zeros(3, np.int64)), ("running_var", np.ones(3, np.int32))):
        stats = {"running_mean": tg.Tensor(np.zeros(3, np.float32)), "running_var": tg.Tensor(np.ones(3, np.float32))}
        stats[name] = tg.Tensor(value)
        with pytest.raises(TypeError, match=f"batch_norm: {name} must be a floating-point tensor, got dtype int"):
            F.batch_norm(constant, stats["running_mean"], stats["running_var"], training=True)
    with pytest.raises(TypeError, match=r"batch_norm: weight must be a floating-point tensor, got dtype int64"):
        F.batch_norm(constant, None, None, weight=tg.Tensor(np.ones(3, np.int64)), training=True)


@pytest.mark.parametrize("normalized_shape, error, message", [
    (0, ValueError, r"normalized_shape \(0,\) must be a non-empty suffix of the input shape \(2, 3, 4, 4\)"),
    ((), ValueError, r"normalized_shape \(\) must be a non-empty suffix"),
    ((4, 4.5), ValueError, r"normalized_shape must hold integers >= 0, got \(4, 4.5\)"),
    ((-1,), ValueError, r"normalized_shape must hold integers >= 0"),
    ("a", ValueError, r"normalized_shape must hold integers >= 0, got 'a'"),
    (None, TypeError, r"normalized_shape must be an int or a sequence of ints, got None"),
])
def test_layer_norm_names_a_bad_normalized_shape(normalized_shape, error, message):
    x = tg.Tensor(np.ones((2, 3, 4, 4), np.float32))
    with pytest.raises(error, match=f"layer_norm: {message}"):
        F.layer_norm(x, normalized_shape)


def test_layer_norm_module_refuses_negative_or_fractional_shapes():
    from tinygrad_cnn import nn
    for bad in (-2, (3, 2.5), (True,)):
        with pytest.raises(ValueError, match="LayerNorm: normalized_shape must hold integers >= 0"):
            nn.LayerNorm(bad)
    assert nn.LayerNorm(0).weight.shape == (0,)          # accepted, as in PyTorch
