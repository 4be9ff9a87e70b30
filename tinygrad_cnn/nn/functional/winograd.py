"""Winograd's minimal filtering F(4x4, 3x3): a 3x3 stride-1 convolution with 4x fewer products.

Lavin and Gray (2016, "Fast Algorithms for Convolutional Neural Networks") apply Winograd's
algorithm to convolution. A 4x4 tile of outputs of a 3x3 correlation needs the 6x6 window of
input ``d`` around it, and equals::

    Y = A^T [ (G g G^T) (.) (B^T d B) ] A          (.) the elementwise product

with the constant matrices below (interpolation points 0, 1, -1, 2, -2 and infinity). Summed
over input channels, the elementwise product of each of the 36 positions is a matrix product:
``M[p] = U[p] @ V[p]`` with ``U[p]: (C_out, C_in)`` from the filters and ``V[p]: (C_in, T)``
from the T tiles. So one layer is

    V = input tiles of x   (36, C_in, T)      winograd_input_tiles
    U = filter tiles of w  (36, C_out, C_in)  filter_tiles
    M = U @ V              (36, C_out, T)     36 GEMMs
    y = output tiles of M  (N, C_out, OH, OW) winograd_output_tiles

36 products per 16 outputs and channel pair instead of 144: 4x fewer multiplications than
im2col + GEMM, for three cheap transforms (additions and multiplications by small
constants). The backward is Winograd too: ``dx`` is a 3x3 stride-1 convolution of the output
gradient with the flipped, transposed filters (padding ``2 - p``), and ``dW`` follows from
``dM = A dY A^T`` (:func:`winograd_grad_tiles`, the adjoint of the output transform):
``dU[p] = dM[p] @ V[p]^T``, summed over tiles, then ``dW = G^T dU G``
(:func:`filter_tiles_adjoint`).

**Accuracy.** The transforms scale values by up to 25 (``B^T`` on both sides) and 64
(``A^T``) and ``G`` divides by up to 24, so float32 rounding errors are larger than im2col's:
on ResNet-20's layers (N(0, 1) inputs, He-initialised weights) the largest error relative to
the largest magnitude is 3-6e-6 for y, 4-8e-6 for dx and 4-7e-6 for dW, against about 1e-6
for im2col + GEMM; float64 keeps about 1e-13. ``tests/nn/functional/test_winograd.py`` bounds
the float32 error by 3e-5 there. PyTorch's CPU convolution (oneDNN) does not use Winograd by
default; cuDNN does, with the same kind of error.

Shapes: ``x: (B, C, H, W)``; a tile index ``t = (b*tiles_h + ty)*tiles_w + tx`` with
``tiles_h = ceil(OH/4)``; a position ``p = k*6 + l``. The references below are the kernel
contracts (the Numba kernels are in ``tinygrad_cnn/kernels/cpu/winograd.py``); where the
algorithm is used is :func:`tinygrad_cnn.kernels.sliced_conv.winograd_applies`.
"""
from __future__ import annotations

import numpy as np

from ... import backend
from ...backend import get_array_module

__all__ = []

TILE = 4        # outputs per tile side
KERNEL = 3      # filter side
WINDOW = TILE + KERNEL - 1

B_T = np.array([[4, 0, -5, 0, 1, 0],
                [0, -4, -4, 1, 1, 0],
                [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0],
                [0, 2, -1, -2, 1, 0],
                [0, 4, 0, -5, 0, 1]], dtype=np.float64)
G = np.array([[1 / 4, 0, 0],
              [-1 / 6, -1 / 6, -1 / 6],
              [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6],
              [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 1, 1, 0],
                [0, 1, -1, 2, -2, 0],
                [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]], dtype=np.float64)
# G (x) G: row a*6 + b, column i*3 + j holds G[a, i] * G[b, j], so that the 36 values of
# G w G^T are one matrix-vector product with the 9 of w.
_G_KRON = np.kron(G, G)


def tile_counts(out_h, out_w):
    """(tiles_h, tiles_w): 4x4 output tiles covering an (out_h, out_w) output."""
    return -(-out_h // TILE), -(-out_w // TILE)


def filter_tiles(weight):
    """(C_out, C_in, 3, 3) -> U: (36, C_out, C_in), ``U[a*6 + b] = (G w G^T)[a, b]``: for all
    channel pairs at once one product with ``G (x) G``, in the weight's dtype (rounding ``G`` to
    float32 adds about 1e-7 relative, far below the error of the transforms)."""
    xp = get_array_module(weight)
    c_out, c_in = weight.shape[:2]
    flat = weight.reshape(c_out * c_in, KERNEL * KERNEL)
    u = xp.asarray(_G_KRON, dtype=weight.dtype) @ flat.T             # (36, C_out*C_in)
    return u.reshape(WINDOW * WINDOW, c_out, c_in)


def filter_tiles_adjoint(grad_u):
    """(36, C_out, C_in) -> dW: (C_out, C_in, 3, 3), ``dW = G^T dU G`` per channel pair (the
    adjoint of :func:`filter_tiles`), computed in float64 and rounded once."""
    xp = get_array_module(grad_u)
    _, c_out, c_in = grad_u.shape
    flat = grad_u.astype(xp.float64).reshape(WINDOW * WINDOW, c_out * c_in)
    grad_w = flat.T @ xp.asarray(_G_KRON)                            # (C_out*C_in, 9)
    return grad_w.astype(grad_u.dtype).reshape(c_out, c_in, KERNEL, KERNEL)


def _windows(padded, size, step, tiles_h, tiles_w):
    """(B, C, size, size, tiles_h, tiles_w) view: window (ty, tx) of a padded batch."""
    xp = get_array_module(padded)
    view = xp.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(2, 3))
    return view[:, :, ::step, ::step][:, :, :tiles_h, :tiles_w].transpose(0, 1, 4, 5, 2, 3)


@backend.register_reference("winograd_input_tiles")
def _input_tiles_reference(x, pad_h, pad_w, out_h, out_w):
    """x: (B, C, H, W) -> V: (36, C, T), ``V[k*6 + l, c, t] = (B^T d B)[k, l]`` with ``d`` the
    6x6 window of ``x`` (zero-padded by ``pad_h``/``pad_w``, and past the edge) whose top-left
    corner is padded pixel (4*ty, 4*tx)."""
    xp = get_array_module(x)
    n_batch, channels, height, width = x.shape
    tiles_h, tiles_w = tile_counts(out_h, out_w)
    padded = xp.zeros((n_batch, channels, TILE * tiles_h + 2, TILE * tiles_w + 2), dtype=x.dtype)
    rows, cols = min(height, padded.shape[2] - pad_h), min(width, padded.shape[3] - pad_w)
    padded[:, :, pad_h:pad_h + rows, pad_w:pad_w + cols] = x[:, :, :rows, :cols]
    d = _windows(padded, WINDOW, TILE, tiles_h, tiles_w)             # (B, C, 6, 6, th, tw)
    b_t = xp.asarray(B_T, dtype=x.dtype)
    v = xp.einsum("ki,bcijyx,lj->klcbyx", b_t, d, b_t)
    return xp.ascontiguousarray(v).reshape(WINDOW * WINDOW, channels, -1)


@backend.register_reference("winograd_grad_tiles")
def _grad_tiles_reference(g, out_h, out_w):
    """g: (B, C, out_h, out_w) -> dM: (36, C, T), ``dM[k*6 + l, c, t] = (A e A^T)[k, l]`` with
    ``e`` the 4x4 tile (ty, tx) of ``g`` (zero past the edge). It is the adjoint of
    :func:`_output_tiles_reference` without bias: ``<output(M), g> = <M, grad_tiles(g)>``."""
    xp = get_array_module(g)
    n_batch, channels = g.shape[:2]
    tiles_h, tiles_w = tile_counts(out_h, out_w)
    padded = xp.zeros((n_batch, channels, TILE * tiles_h, TILE * tiles_w), dtype=g.dtype)
    padded[:, :, :out_h, :out_w] = g
    e = _windows(padded, TILE, TILE, tiles_h, tiles_w)                # (B, C, 4, 4, th, tw)
    a_t = xp.asarray(A_T, dtype=g.dtype)
    dm = xp.einsum("ik,bcijyx,jl->klcbyx", a_t, e, a_t)
    return xp.ascontiguousarray(dm).reshape(WINDOW * WINDOW, channels, -1)


@backend.register_reference("winograd_output_tiles")
def _output_tiles_reference(m, n_batch, out_h, out_w, bias=None, residual=None, relu=False,
                            out=None):
    """M: (36, C, T) -> y: (n_batch, C, out_h, out_w): tile (ty, tx) of y is ``A^T m A`` with
    ``m[k, l] = M[k*6 + l, :, t]`` (the part past the edge dropped); then ``+ bias[c]``,
    ``+ residual`` and ReLU, each where given. Written into ``out`` when given."""
    xp = get_array_module(m)
    channels = m.shape[1]
    tiles_h, tiles_w = tile_counts(out_h, out_w)
    m = m.reshape(WINDOW, WINDOW, channels, n_batch, tiles_h, tiles_w)
    a_t = xp.asarray(A_T, dtype=m.dtype)
    y = xp.einsum("ik,klcbyx,jl->bcyixj", a_t, m, a_t)
    y = y.reshape(n_batch, channels, TILE * tiles_h, TILE * tiles_w)[:, :, :out_h, :out_w]
    y = xp.ascontiguousarray(y)
    if bias is not None:
        y += bias.reshape(1, channels, 1, 1)
    if residual is not None:
        y += residual
    if relu:
        xp.maximum(y, 0, out=y)
    if out is not None:
        out[...] = y
        return out
    return y
