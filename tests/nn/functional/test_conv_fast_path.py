"""The fast convolution path (batch slices, wide columns, dx as a convolution) equals the
textbook path it replaces: the differentiable backward built from Im2col/Col2im and the
whole-batch reference kernels."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tinygrad_cnn as tc
from tinygrad_cnn import backend
from tinygrad_cnn._arguments import WindowGeometry
from tinygrad_cnn.nn import functional as F
from tinygrad_cnn.kernels import sliced_conv
from tinygrad_cnn.kernels.cpu import _workers
from tinygrad_cnn.testing import assert_allclose


def _grads(x, w, b, g, slow, needs=(True, True, True), **kw):
    X, W, B = (tc.Tensor(a, requires_grad=need) for a, need in zip((x, w, b), needs))
    y = F.conv2d(X, W, B, **kw)
    if slow:
        # create_graph=True takes the differentiable (textbook) backward.
        y.backward(tc.Tensor(g), create_graph=True)
    else:
        y.backward(tc.Tensor(g))
    return (y.numpy(),) + tuple(None if t.grad is None else t.grad.numpy() for t in (X, W, B))


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 2]))
    c_in = groups * draw(st.integers(1, 3))
    c_out = groups * draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    # Strided ones (unequal per axis too) take their columns from phase planes.
    stride = draw(st.sampled_from([1, 1, 2, 3, (2, 1), (1, 3)]))
    dilation = draw(st.integers(1, 2))
    # Padding up to kernel + 1 also covers the case where dx falls back to col2im.
    padding = (draw(st.integers(0, kh + 1)), draw(st.integers(0, kw + 1)))
    h = draw(st.integers(dilation * (kh - 1) + 1, 7))
    w = draw(st.integers(dilation * (kw - 1) + 1, 7))
    n = draw(st.integers(1, 5))
    return dict(n=n, c_in=c_in, c_out=c_out, kernel=(kh, kw), stride=stride, padding=padding,
                dilation=dilation, groups=groups, size=(h, w))


@pytest.mark.parametrize("chunk_bytes", [1, 1 << 30])
@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])   # the patch is constant
@given(case=conv_cases(), seed=st.integers(0, 2**16),
       # dx and dW share the gathered columns of G; each alone takes another route.
       needs=st.sampled_from([(True, True, True), (True, False, False), (False, True, True)]))
def test_fast_backward_equals_textbook_backward(monkeypatch, cpu_backend, chunk_bytes, case, seed,
                                                needs):
    # chunk_bytes=1 processes one image per slice; 2**30 takes the whole batch at once.
    monkeypatch.setattr(_workers, "CPU_CHUNK_BYTES", chunk_bytes)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case["n"], case["c_in"]) + case["size"])
    w = rng.standard_normal((case["c_out"], case["c_in"] // case["groups"]) + case["kernel"])
    b = rng.standard_normal(case["c_out"])
    kw = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
              groups=case["groups"])
    y_ref = F.conv2d(tc.Tensor(x), tc.Tensor(w), tc.Tensor(b), **kw).numpy()
    g = rng.standard_normal(y_ref.shape)
    fast = _grads(x, w, b, g, slow=False, needs=needs, **kw)
    slow = _grads(x, w, b, g, slow=True, needs=needs, **kw)
    for a, c, name, need in zip(fast, slow, ["y", "dx", "dw", "db"], (True,) + needs):
        assert (a is not None) == need, name
        if need:
            assert_allclose(a, c, rtol=1e-10, atol=1e-10, err_msg=name)


def test_forward_matches_the_reference_kernels_whole_batch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 9, 8))
    w = rng.standard_normal((6, 4, 3, 3))
    y = F.conv2d(tc.Tensor(x), tc.Tensor(w), padding=1).numpy()
    # Direct sum, no im2col at all.
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.zeros_like(y)
    for i in range(3):
        for j in range(3):
            expected += np.einsum("oc,nchw->nohw", w[:, :, i, j], xp[:, :, i:i + 9, j:j + 8])
    assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_wide_columns_are_standard_columns_on_the_valid_grid():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 5, 6))
    cols = backend.kernel("im2col_wide", np, impl="numpy")(x, 3, 2, 1, 0, 1, 2)
    standard = backend.kernel("im2col", np, impl="numpy")(x, 3, 2, 1, 1, 1, 0, 1, 2, 5, 4)
    grid = cols.reshape(cols.shape[0], 2, 5, 6)[..., :4].reshape(cols.shape[0], -1)
    np.testing.assert_array_equal(grid, standard)


def test_slices_cover_the_batch_exactly(monkeypatch):
    monkeypatch.setattr(_workers, "CPU_CHUNK_BYTES", 100)
    monkeypatch.setattr(_workers, "slice_workers", lambda: 2)
    # 7 images of 30 bytes in 100-byte slices: 3 slices, rounded up to 4 for 2 workers.
    assert sliced_conv._image_chunks(7, 30, np) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    assert sliced_conv._image_chunks(7, 10**9, np) == [(i, i + 1) for i in range(7)]
    assert sliced_conv._image_chunks(1, 10**9, np) == [(0, 1)]
    monkeypatch.setattr(_workers, "CPU_CHUNK_BYTES", 10**9)
    assert sliced_conv._image_chunks(7, 30, np) == [(0, 4), (4, 7)]


def test_threaded_slices_give_the_same_bits_as_one_thread(monkeypatch):
    pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    g = rng.standard_normal((9, 4, 6, 6)).astype(np.float32)
    monkeypatch.setattr(_workers, "CPU_CHUNK_BYTES", 1)

    def run(workers):
        monkeypatch.setattr(_workers, "slice_workers", lambda: workers)
        X, W = tc.Tensor(x, requires_grad=True), tc.Tensor(w, requires_grad=True)
        y = F.conv2d(X, W, padding=1)
        y.backward(tc.Tensor(g))
        return y.numpy(), X.grad.numpy(), W.grad.numpy()

    for a, b in zip(run(1), run(2)):
        np.testing.assert_array_equal(a, b)
