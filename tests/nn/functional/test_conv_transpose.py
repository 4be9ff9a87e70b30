"""Transposed convolution: conv_transpose2d and ConvTranspose2d.

The two identities that define it are tested exactly: its forward is the input gradient
of conv2d with the same weight, and its input gradient is conv2d itself.
"""
import numpy as np
import pytest
from hypothesis import given, settings

import tinygrad_cnn
import tinygrad_cnn.nn.functional as F
from tinygrad_cnn import backend, nn
from tinygrad_cnn.nn.functional.conv_transpose import conv_transpose2d_output_size
from tinygrad_cnn.testing import (
    assert_allclose, check_grad, check_gradgrad, conv_transpose2d_settings, non_contiguous,
    tensor64,
)

Tensor = tinygrad_cnn.Tensor
# The forward folds with the "col2im" kernel: run it with the reference and the Numba version.
IMPLS = ["numpy"] + (["numba"] if backend.numba_available() else [])


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def draw_arrays(s, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(s["input_shape"])
    w = rng.standard_normal(s["weight_shape"])
    b = rng.standard_normal(s["weight_shape"][1] * s["groups"]) if s["bias"] else None
    return x, w, b


def args(s):
    return dict(stride=s["stride"], padding=s["padding"], output_padding=s["output_padding"],
                groups=s["groups"], dilation=s["dilation"])


def direct_conv_transpose2d(x, w, b, stride, padding, output_padding, groups, dilation):
    """From the definition: every input pixel adds w times itself into the output window."""
    n_batch, c_in, height, width = x.shape
    _, out_per_group, kh, kw = w.shape
    out_h, out_w = conv_transpose2d_output_size((height, width), (kh, kw), stride, padding,
                                                output_padding, dilation)
    out = np.zeros((n_batch, out_per_group * groups, out_h, out_w))
    in_per_group = c_in // groups
    for n in range(n_batch):
        for c in range(c_in):
            g = c // in_per_group
            for h in range(height):
                for v in range(width):
                    for o in range(out_per_group):
                        for i in range(kh):
                            for j in range(kw):
                                row = h * stride[0] - padding[0] + i * dilation[0]
                                col = v * stride[1] - padding[1] + j * dilation[1]
                                if 0 <= row < out_h and 0 <= col < out_w:
                                    out[n, g * out_per_group + o, row, col] += x[n, c, h, v] * w[c, o, i, j]
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


@settings(max_examples=25, deadline=None)
@given(s=conv_transpose2d_settings())
@pytest.mark.parametrize("impl", IMPLS)
def test_forward_matches_the_definition(impl, s):
    with backend.cpu_backend(impl):
        _test_forward_matches_the_definition(s)


def _test_forward_matches_the_definition(s):
    x, w, b = draw_arrays(s)
    out = F.conv_transpose2d(Tensor(non_contiguous(x)), Tensor(w), None if b is None else Tensor(b),
                             **args(s))
    assert_allclose(out, direct_conv_transpose2d(x, w, b, **args(s)), rtol=1e-10, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(s=conv_transpose2d_settings())
@pytest.mark.parametrize("impl", IMPLS)
def test_forward_is_the_input_gradient_of_conv2d(impl, s):
    with backend.cpu_backend(impl):
        _test_forward_is_the_input_gradient_of_conv2d(s)


def _test_forward_is_the_input_gradient_of_conv2d(s):
    """conv_transpose2d(x, w) == d<conv2d(z, w), x>/dz, z of the transposed output's shape."""
    x, w, _ = draw_arrays(s)
    y = F.conv_transpose2d(Tensor(x), Tensor(w), **args(s))
    z = Tensor(np.zeros(y.shape), requires_grad=True)
    conv = F.conv2d(z, Tensor(w), None, s["stride"], s["padding"], s["dilation"], s["groups"])
    # conv2d of an (OH, OW) image has at least H x W windows; the first H x W are x's.
    h, v = s["input_shape"][2:]
    grad = np.zeros(conv.shape)
    grad[:, :, :h, :v] = x
    conv.backward(Tensor(grad))
    assert_allclose(y, z.grad, rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(s=conv_transpose2d_settings())
def test_input_gradient_is_conv2d(s):
    """d<conv_transpose2d(x, w), G>/dx == conv2d(G, w) with the same stride/padding/dilation."""
    x, w, _ = draw_arrays(s)
    xt = Tensor(x, requires_grad=True)
    y = F.conv_transpose2d(xt, Tensor(w), **args(s))
    g = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(Tensor(g))
    conv = F.conv2d(Tensor(g), Tensor(w), None, s["stride"], s["padding"], s["dilation"],
                    s["groups"])
    h, v = s["input_shape"][2:]
    assert_allclose(xt.grad, conv[:, :, :h, :v], rtol=1e-12, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(s=conv_transpose2d_settings(max_spatial=4))
def test_gradients_float64(s):
    x, w, b = draw_arrays(s)
    a = args(s)
    if b is None:
        check_grad(lambda xt, wt: F.conv_transpose2d(xt, wt, None, **a), x, w)
    else:
        check_grad(lambda xt, wt, bt: F.conv_transpose2d(xt, wt, bt, **a), x, w, b)


@settings(max_examples=8, deadline=None)
@given(s=conv_transpose2d_settings(max_batch=1, max_channels_per_group=2, max_spatial=3))
def test_second_derivatives(s):
    x, w, _ = draw_arrays(s)
    check_gradgrad(lambda xt, wt: F.conv_transpose2d(xt, wt, None, **args(s)), x, w,
                   fast_mode=True)


@settings(max_examples=25, deadline=None)
@given(s=conv_transpose2d_settings())
def test_matches_torch(s, torch):
    x, w, b = draw_arrays(s)
    xt, wt = tensor64(x), tensor64(w)
    bt = None if b is None else tensor64(b)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    tb = None if b is None else torch.tensor(b, requires_grad=True)
    a = args(s)
    ours = F.conv_transpose2d(xt, wt, bt, **a)
    theirs = torch.nn.functional.conv_transpose2d(tx, tw, tb, a["stride"], a["padding"],
                                                  a["output_padding"], a["groups"], a["dilation"])
    assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-10)
    g = np.random.default_rng(2).standard_normal(ours.shape)
    ours.backward(Tensor(g))
    theirs.backward(torch.tensor(g))
    assert_allclose(xt.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-10)
    assert_allclose(wt.grad, tw.grad.numpy(), rtol=1e-10, atol=1e-10)
    if b is not None:
        assert_allclose(bt.grad, tb.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_float32_and_unbatched():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    out = F.conv_transpose2d(Tensor(x), Tensor(w), stride=2)
    assert out.dtype == np.float32 and out.shape == (2, 9, 11)
    batched = F.conv_transpose2d(Tensor(x[None]), Tensor(w), stride=2)
    assert_allclose(out, batched.numpy()[0])


@pytest.mark.parametrize("call, message", [
    (lambda x, w: F.conv_transpose2d(x, Tensor(np.ones((2, 1, 3, 3)))), "expects 2"),
    (lambda x, w: F.conv_transpose2d(x, w, stride=2, output_padding=2), "output_padding"),
    (lambda x, w: F.conv_transpose2d(x, w, groups=2), "groups"),
    (lambda x, w: F.conv_transpose2d(x, w, Tensor(np.ones(3))), "bias must have shape (2,)"),
    (lambda x, w: F.conv_transpose2d(x, w, padding=5), "not positive"),
    (lambda x, w: F.conv_transpose2d(x.reshape(3, 4, 5), Tensor(np.ones((2, 3)))), "4-D"),
])
def test_bad_arguments_are_named(call, message):
    x = Tensor(np.ones((1, 3, 4, 5)))
    w = Tensor(np.ones((3, 2, 3, 3)))
    with pytest.raises((ValueError, TypeError), match="conv_transpose2d") as info:
        call(x, w)
    assert message in str(info.value)


def test_module_matches_torch_layer(torch_2_13):
    torch = torch_2_13
    ours = nn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, output_padding=1, groups=2,
                              dilation=(1, 2), dtype=np.float64)
    theirs = torch.nn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, output_padding=1,
                                      groups=2, dilation=(1, 2)).double()
    assert tuple(ours.weight.shape) == tuple(theirs.weight.shape)
    assert repr(ours) == repr(theirs)
    theirs.weight.data = torch.tensor(ours.weight.numpy())
    theirs.bias.data = torch.tensor(ours.bias.numpy())
    x = np.random.default_rng(0).standard_normal((2, 4, 5, 6))
    assert_allclose(ours(Tensor(x)), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-10,
                    atol=1e-12)
    sized = ours(Tensor(x), output_size=(9, 12))
    assert sized.shape == tuple(theirs(torch.tensor(x), output_size=[9, 12]).shape)


def test_module_default_init_has_torchs_bounds():
    layer = nn.ConvTranspose2d(8, 4, 3)
    fan_in = 4 * 3 * 3   # weight.shape[1] * kh * kw, as PyTorch computes it
    assert np.abs(layer.weight.numpy()).max() <= 1 / np.sqrt(fan_in)
    assert np.abs(layer.bias.numpy()).max() <= 1 / np.sqrt(fan_in)
    with pytest.raises(ValueError, match="output_size"):
        layer(Tensor(np.ones((1, 8, 4, 4), np.float32)), output_size=(9, 9))
