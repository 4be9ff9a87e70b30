"""Numba kernels for the Winograd tiles of a 3x3 convolution, F(4x4, 3x3).

The contracts (and the matrices ``B^T``, ``A^T``, ``G``) are the NumPy references in
``tinygrad_cnn/nn/functional/winograd.py``; the sliced convolution
(``tinygrad_cnn/kernels/sliced_conv.py``) runs the GEMMs between them.

Layout: a tile ``t = (b*tiles_h + ty)*tiles_w + tx`` of a slice, and the 36 transformed
values of a tile are 36 separate rows ``(36, C, T)``, so that every step is a loop over a
long contiguous row ``[0, T)`` of one channel:

1. gather: the 6x6 windows (stride 4) of a zero-padded copy of one image plane become 36
   rows ``d[i*6 + j, t] = x_pad[4*ty + i, 4*tx + j]`` (one scalar copy per value);
2. the two 1-D transforms, ``B^T`` along the window's columns then along its rows, each
   output row a sum of at most four input rows with constant coefficients, except that rows
   which come in pairs ``even +/- odd`` (rows 1-4 of ``B^T`` and ``A``, points +-1 and +-2)
   are written two at a time from their shared parts, and ``A^T`` from the sums and
   differences of its input pairs (one core, ResNet and VGG slices: output tiles 20-24%,
   gradient tiles 14-25%, input tiles 4-10% faster than with every row on its own).

A loop that reads many rows and writes many is not vectorised by LLVM (Numba does not tell
it that arrays do not overlap, and the run-time overlap tests it would need are too many),
so each loop over ``t`` writes at most two rows from at most six: those vectorise. A first
version that transformed one tile at a time, all 36 values in registers, ran 10x slower for
this reason.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ...nn.functional.winograd import A_T, B_T, WINDOW, tile_counts

__all__ = ["winograd_input_tiles", "winograd_grad_tiles", "winograd_output_tiles", "KERNELS"]


def _sparse_rows(matrix, width):
    """The nonzero terms of each row of ``matrix``: (column index, coefficient), padded to
    ``width`` terms with a zero coefficient on the row's first column (a term that adds 0)."""
    index = np.zeros((matrix.shape[0], width), dtype=np.int64)
    coefficient = np.zeros((matrix.shape[0], width), dtype=np.float64)
    for row in range(matrix.shape[0]):
        columns = np.flatnonzero(matrix[row])
        assert len(columns) <= width
        index[row] = columns[0]
        index[row, :len(columns)] = columns
        coefficient[row, :len(columns)] = matrix[row, columns]
    return index, coefficient


def _row_pairs(matrix):
    """Rows 1, 2 and rows 3, 4 of ``matrix`` as ``even +/- odd``, each part two terms: their
    (index, coefficient) arrays of shape (2, 4), per pair [even0, even1, odd0, odd1].
    ``B^T`` and ``A`` both have this structure (interpolation points +-1 and +-2), so a pair
    of output rows costs four products and two sums instead of eight products."""
    index = np.zeros((2, 4), dtype=np.int64)
    coefficient = np.zeros((2, 4), dtype=np.float64)
    for pair, row in enumerate((1, 3)):
        for part, half_row in enumerate(((matrix[row] + matrix[row + 1]) / 2,
                                         (matrix[row] - matrix[row + 1]) / 2)):
            columns = np.flatnonzero(half_row)
            assert len(columns) == 2
            index[pair, 2 * part:2 * part + 2] = columns
            coefficient[pair, 2 * part:2 * part + 2] = half_row[columns]
    return index, coefficient


# Input tiles: d -> B^T d B, both passes with the rows of B^T (rows 0 and 5 at most 4 terms
# each, rows 1-4 as two pairs).
_B_T_TERMS = _sparse_rows(B_T, 4) + _row_pairs(B_T)
# Output tiles: m -> A^T m A, both passes by :func:`_a_t_rows`, written for this A^T.
assert np.array_equal(A_T, [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                            [0, 1, -1, 8, -8, 1]])
# Gradient tiles (the adjoint of the output transform): g -> A g A^T, with the rows of A.
_A_TERMS = _sparse_rows(A_T.T, 4) + _row_pairs(A_T.T)


@njit(cache=True, nogil=True, inline="always")
def _sum4(out, a, ca, b, cb, c, cc, d, cd):
    for t in range(out.shape[0]):
        out[t] = ca * a[t] + cb * b[t] + cc * c[t] + cd * d[t]


@njit(cache=True, nogil=True, inline="always")
def _pair4(plus, minus, e0, ce0, e1, ce1, o0, co0, o1, co1):
    """plus, minus = even +/- odd with even = ce0*e0 + ce1*e1, odd = co0*o0 + co1*o1: two
    output rows in one loop (it still vectorises: two stores, four loads)."""
    for t in range(plus.shape[0]):
        even = ce0 * e0[t] + ce1 * e1[t]
        odd = co0 * o0[t] + co1 * o1[t]
        plus[t] = even + odd
        minus[t] = even - odd


@njit(cache=True, nogil=True, inline="always")
def _a_t_rows(o0, o1, o2, o3, m0, m1, m2, m3, m4, m5, two, four, eight):
    """(o0, o1, o2, o3) = A^T (m0, ..., m5) row by row, from the sums and differences of
    the pairs (m1, m2) and (m3, m4): ``o0 = m0 + s1 + s2``, ``o2 = s1 + 4 s2``,
    ``o1 = d1 + 2 d2``, ``o3 = d1 + 8 d2 + m5``. Two loops of two rows each (they vectorise)
    instead of four rows of five products."""
    for t in range(o0.shape[0]):
        s1 = m1[t] + m2[t]
        s2 = m3[t] + m4[t]
        o0[t] = m0[t] + s1 + s2
        o2[t] = s1 + four * s2
    for t in range(o0.shape[0]):
        d1 = m1[t] - m2[t]
        d2 = m3[t] - m4[t]
        o1[t] = d1 + two * d2
        o3[t] = d1 + eight * d2 + m5[t]


@njit(cache=True, nogil=True, inline="always")
def _gather_windows(x, c, pad_h, pad_w, plane, window, tiles_h, tiles_w, rows):
    """rows[i*window + j, (b*tiles_h + ty)*tiles_w + tx] = x_pad[b, c, 4*ty + i, 4*tx + j] for
    every image b of the slice, via the zero-padded plane buffer ``plane`` (its border stays
    zero). All ``window`` values of a window row are read together (one short contiguous
    run of the plane): about 20% faster than one row of ``rows`` at a time through an offset
    table, 30% on VGG-16's 224x224 planes."""
    n_batch, _, height, width = x.shape
    tiles = tiles_h * tiles_w
    copy_h = min(height, plane.shape[0] - pad_h)
    copy_w = min(width, plane.shape[1] - pad_w)
    for b in range(n_batch):
        for yy in range(copy_h):
            source = x[b, c, yy]
            dest = plane[yy + pad_h]
            for xx in range(copy_w):
                dest[xx + pad_w] = source[xx]
        for i in range(window):
            for ty in range(tiles_h):
                source = plane[4 * ty + i]
                base = b * tiles + ty * tiles_w
                for tx in range(tiles_w):
                    for j in range(window):
                        rows[i * window + j, base + tx] = source[4 * tx + j]


@njit(cache=True, nogil=True, inline="always")
def _window_tiles(x, pad_h, pad_w, window, tiles_h, tiles_w, index, coefficient, pair_index,
                  pair_coefficient, out):
    """out[k*6 + l, c, t] = (M d M^T)[k, l] for the ``window`` x ``window`` window d of tile t
    (stride 4), with M the 6 x ``window`` matrix whose nonzero terms are (index, coefficient),
    its rows 1-4 also as the pairs of :func:`_row_pairs`: ``B^T`` on the 6x6 input windows,
    ``A`` on the 4x4 gradient tiles."""
    n_batch, channels = x.shape[:2]
    coef = coefficient.astype(x.dtype)
    pair_coef = pair_coefficient.astype(x.dtype)
    tiles = n_batch * tiles_h * tiles_w
    # The padded plane: the windows of the last tiles reach window - 4 past 4 * tiles.
    plane = np.zeros((tiles_h * 4 + window - 4, tiles_w * 4 + window - 4), dtype=x.dtype)
    windows = np.empty((window * window, tiles), dtype=x.dtype)
    half = np.empty((window * 6, tiles), dtype=x.dtype)     # M applied along the columns
    for c in range(channels):
        _gather_windows(x, c, pad_h, pad_w, plane, window, tiles_h, tiles_w, windows)
        for i in range(window):
            row = i * window
            for l in (0, 5):
                _sum4(half[i * 6 + l], windows[row + index[l, 0]], coef[l, 0],
                      windows[row + index[l, 1]], coef[l, 1], windows[row + index[l, 2]],
                      coef[l, 2], windows[row + index[l, 3]], coef[l, 3])
            for p in range(2):
                _pair4(half[i * 6 + 2 * p + 1], half[i * 6 + 2 * p + 2],
                       windows[row + pair_index[p, 0]], pair_coef[p, 0],
                       windows[row + pair_index[p, 1]], pair_coef[p, 1],
                       windows[row + pair_index[p, 2]], pair_coef[p, 2],
                       windows[row + pair_index[p, 3]], pair_coef[p, 3])
        for l in range(6):
            for k in (0, 5):
                _sum4(out[k * 6 + l, c], half[index[k, 0] * 6 + l], coef[k, 0],
                      half[index[k, 1] * 6 + l], coef[k, 1], half[index[k, 2] * 6 + l], coef[k, 2],
                      half[index[k, 3] * 6 + l], coef[k, 3])
            for p in range(2):
                _pair4(out[(2 * p + 1) * 6 + l, c], out[(2 * p + 2) * 6 + l, c],
                       half[pair_index[p, 0] * 6 + l], pair_coef[p, 0],
                       half[pair_index[p, 1] * 6 + l], pair_coef[p, 1],
                       half[pair_index[p, 2] * 6 + l], pair_coef[p, 2],
                       half[pair_index[p, 3] * 6 + l], pair_coef[p, 3])


# Two compiled callers with the window size as a constant: with it as an argument LLVM left
# the gradient tiles 35% slower.
@njit(cache=True, nogil=True)
def _input_tiles(x, pad_h, pad_w, tiles_h, tiles_w, index, coefficient, pair_index,
                 pair_coefficient, out):
    _window_tiles(x, pad_h, pad_w, 6, tiles_h, tiles_w, index, coefficient, pair_index,
                  pair_coefficient, out)


@njit(cache=True, nogil=True)
def _grad_tiles(g, tiles_h, tiles_w, index, coefficient, pair_index, pair_coefficient, out):
    _window_tiles(g, 0, 0, 4, tiles_h, tiles_w, index, coefficient, pair_index,
                  pair_coefficient, out)


@njit(cache=True, nogil=True)
def _output_tiles(m, out, bias, residual, relu, tiles_h, tiles_w):
    n_batch, channels, out_h, out_w = out.shape
    # Constants of the data's dtype: a float32 row times an integer literal is float64.
    constants = np.array((2.0, 4.0, 8.0)).astype(out.dtype)
    two, four, eight = constants[0], constants[1], constants[2]
    per_image = tiles_h * tiles_w
    tiles = n_batch * per_image
    half = np.empty((24, tiles), dtype=out.dtype)          # A^T applied along the rows
    tile_rows = np.empty((16, tiles), dtype=out.dtype)
    whole = out_w // 4                                     # tiles wholly inside a row
    for c in range(channels):
        for l in range(6):
            _a_t_rows(half[l], half[6 + l], half[12 + l], half[18 + l], m[l, c], m[6 + l, c],
                      m[12 + l, c], m[18 + l, c], m[24 + l, c], m[30 + l, c], two, four, eight)
        for i in range(4):
            r = i * 6
            _a_t_rows(tile_rows[i * 4], tile_rows[i * 4 + 1], tile_rows[i * 4 + 2],
                      tile_rows[i * 4 + 3], half[r], half[r + 1], half[r + 2], half[r + 3],
                      half[r + 4], half[r + 5], two, four, eight)
        shift = bias[c]
        for b in range(n_batch):
            for ty in range(tiles_h):
                t0 = b * per_image + ty * tiles_w
                for i in range(min(4, out_h - ty * 4)):
                    dest = out[b, c, ty * 4 + i]
                    r0 = tile_rows[i * 4, t0:t0 + tiles_w]
                    r1 = tile_rows[i * 4 + 1, t0:t0 + tiles_w]
                    r2 = tile_rows[i * 4 + 2, t0:t0 + tiles_w]
                    r3 = tile_rows[i * 4 + 3, t0:t0 + tiles_w]
                    for tx in range(whole):
                        dest[tx * 4] = r0[tx] + shift
                        dest[tx * 4 + 1] = r1[tx] + shift
                        dest[tx * 4 + 2] = r2[tx] + shift
                        dest[tx * 4 + 3] = r3[tx] + shift
                    for xx in range(whole * 4, out_w):
                        dest[xx] = tile_rows[i * 4 + xx - whole * 4, t0 + whole] + shift
                    if residual is not None:
                        add = residual[b, c, ty * 4 + i]
                        for xx in range(out_w):
                            dest[xx] += add[xx]
                    if relu:
                        for xx in range(out_w):
                            if dest[xx] < 0:
                                dest[xx] = 0


def winograd_input_tiles(x, pad_h, pad_w, out_h, out_w):
    """x: (B, C, H, W) -> (36, C, T): ``B^T d B`` of every 6x6 window at stride 4 of the
    padded input, T = B * ceil(out_h/4) * ceil(out_w/4)."""
    tiles_h, tiles_w = tile_counts(out_h, out_w)
    x = np.ascontiguousarray(x)
    out = np.empty((WINDOW * WINDOW, x.shape[1], x.shape[0] * tiles_h * tiles_w), dtype=x.dtype)
    _input_tiles(x, pad_h, pad_w, tiles_h, tiles_w, *_B_T_TERMS, out)
    return out


def winograd_grad_tiles(g, out_h, out_w):
    """g: (B, C, out_h, out_w) -> (36, C, T): ``A g A^T`` of every 4x4 tile (zero past the
    edge), the adjoint of :func:`winograd_output_tiles`."""
    tiles_h, tiles_w = tile_counts(out_h, out_w)
    g = np.ascontiguousarray(g)
    out = np.empty((WINDOW * WINDOW, g.shape[1], g.shape[0] * tiles_h * tiles_w), dtype=g.dtype)
    _grad_tiles(g, tiles_h, tiles_w, *_A_TERMS, out)
    return out


def winograd_output_tiles(m, n_batch, out_h, out_w, bias=None, residual=None, relu=False,
                          out=None):
    """m: (36, C, T) -> y: (n_batch, C, out_h, out_w), ``A^T m A`` of every tile placed at
    stride 4 (the part past the edge dropped), then ``+ bias``, ``+ residual``, ReLU.
    Written into ``out`` (C-contiguous, of y's shape and dtype) when given."""
    tiles_h, tiles_w = tile_counts(out_h, out_w)
    m = np.ascontiguousarray(m)
    shape = (n_batch, m.shape[1], out_h, out_w)
    if out is None:
        out = np.empty(shape, dtype=m.dtype)
    elif out.shape != shape or out.dtype != m.dtype or not out.flags.c_contiguous:
        raise ValueError(f"winograd_output_tiles: out must be a C-contiguous {m.dtype} array of "
                         f"shape {shape}, got {out.dtype} {out.shape}")
    if residual is not None:
        residual = np.ascontiguousarray(residual, dtype=m.dtype)
    bias = (np.zeros(m.shape[1], dtype=m.dtype) if bias is None
            else np.ascontiguousarray(bias, dtype=m.dtype))
    _output_tiles(m, out, bias, residual, bool(relu), tiles_h, tiles_w)
    return out


# Not wrapped for float16 (the output kernel may write into an argument): the sliced
# convolution, their only caller, already runs float16 in float32.
KERNELS = {"winograd_input_tiles": winograd_input_tiles,
           "winograd_grad_tiles": winograd_grad_tiles,
           "winograd_output_tiles": winograd_output_tiles}
