"""Numba kernels for convolution: im2col and col2im, and the fast path's column layouts.

im2col and col2im use the column layout documented in ``docs/ops/conv.md`` and in
the NumPy references in ``tinygrad_cnn/nn/functional/conv.py``:

    cols[(c * kh + i) * kw + j, n * L + oh * OW + ow] = x_padded[n, c, oh*sh + i*dh, ow*sw + j*dw]

with ``L = OH * OW``. One row per (channel, kernel offset), one column per
(image, output pixel). A row is a run of ``N * L`` floats, so im2col writes
long contiguous runs and the GEMM ``weight (C_out, C*kh*kw) @ cols`` is one
plain row-major BLAS call.

The loops first compute, per kernel offset, the range of output columns whose
input column is inside the image; the inner loops then run without bounds
tests (and vectorise), and the padding is written as zeros separately.

``im2col_phases`` / ``col2im_phases`` (and ``im2col_wide``, the stride-1 case) are the
fast path's layout: the input split once into its stride phase planes, so that every
row of the column matrix is one contiguous run of one plane (``docs/ops/conv.md``,
"Phase planes"). Strided loops index with ``uint64``: with a signed index Numba tests
each access for wrap-around, which also keeps the loop from vectorising.

The Python wrappers allocate the outputs with NumPy and the compiled loops fill them.
NumPy asks the kernel for transparent huge pages on large arrays; an array allocated
inside compiled code above malloc's mmap threshold was page-faulted in 4 KiB at a time
on every call (19,000 faults, about 27 ms, for a 75 MiB whole-batch column matrix).
"""
import numba
import numpy as np
from numba import njit, prange, uint64

from ..._arguments import phase_grid_length
from .. import sliced_conv
from ._float16 import computing_float16_in_float32

__all__ = ["im2col", "col2im", "im2col_wide", "im2col_phases", "col2im_phases", "KERNELS"]


@njit(cache=True, nogil=True, inline="always")
def _valid_range(offset, stride, size, n_out):
    """Output positions ``o`` in ``[lo, hi)`` with ``0 <= o*stride + offset < size``."""
    # o*stride + offset >= 0  <=>  o >= ceil(-offset / stride)
    lo = 0
    if offset < 0:
        lo = (-offset + stride - 1) // stride
    # o*stride + offset <= size - 1  <=>  o <= floor((size - 1 - offset) / stride)
    last = size - 1 - offset
    if last < 0:
        hi = 0
    else:
        hi = last // stride + 1
    if hi > n_out:
        hi = n_out
    if lo > hi:
        lo = hi
    return lo, hi


@njit(cache=True, nogil=True, inline="always")
def _copy(dst, src):
    """dst[t] = src[t] for two 1-D views of one length.

    A plain loop over views: Numba turns it into a vectorised copy, while the slice
    assignment ``a[i:j] = b[k:l]`` of two arrays measured 3-4x slower (a generic
    element-by-element copy)."""
    for t in range(dst.size):
        dst[t] = src[t]


@njit(cache=True, nogil=True, inline="always")
def _fill(dst, value):
    for t in range(dst.size):
        dst[t] = value


@njit(cache=True, nogil=True)
def _im2col_task(x, cols, task, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h,
                 dil_w, out_h, out_w):
    """Fill one (row, image) run of out_h*out_w columns.

    Works on flat 1-D views with explicit index arithmetic: slicing a Numba array costs
    a view construction per output row, which at 32 elements per row was most of the time.
    """
    n_batch, channels, height, width = x.shape
    plane = out_h * out_w
    row = task // n_batch
    n = task - row * n_batch
    c = row // (kernel_h * kernel_w)
    ki = (row // kernel_w) % kernel_h
    kj = row % kernel_w
    row_off = ki * dil_h - pad_h
    col_off = kj * dil_w - pad_w
    i_lo, i_hi = _valid_range(row_off, stride_h, height, out_h)
    j_lo, j_hi = _valid_range(col_off, stride_w, width, out_w)
    flat_x = x.reshape(-1)
    flat_cols = cols.reshape(-1)
    dst0 = row * (n_batch * plane) + n * plane
    src0 = (n * channels + c) * (height * width)
    for oi in range(out_h):
        base = dst0 + oi * out_w
        if oi < i_lo or oi >= i_hi:
            for oj in range(out_w):
                flat_cols[base + oj] = 0
            continue
        src_base = src0 + (oi * stride_h + row_off) * width + col_off
        for oj in range(j_lo):
            flat_cols[base + oj] = 0
        if j_hi > j_lo and stride_w == 1:
            # A view with a step (even a step of 1) copies element by element.
            _copy(flat_cols[base + j_lo:base + j_hi], flat_x[src_base + j_lo:src_base + j_hi])
        else:
            for oj in range(j_lo, j_hi):
                flat_cols[uint64(base + oj)] = flat_x[uint64(src_base + oj * stride_w)]
        for oj in range(j_hi, out_w):
            flat_cols[base + oj] = 0


@njit(cache=True, parallel=True, nogil=True)
def _im2col_parallel(x, cols, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                     out_h, out_w):
    for task in prange(cols.shape[0] * x.shape[0]):
        _im2col_task(x, cols, task, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h,
                     dil_w, out_h, out_w)


@njit(cache=True, nogil=True)
def _im2col_serial(x, cols, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                   out_h, out_w):
    for task in range(cols.shape[0] * x.shape[0]):
        _im2col_task(x, cols, task, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h,
                     dil_w, out_h, out_w)


@njit(cache=True, nogil=True)
def _col2im_task(cols, x, task, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h,
                 dil_w, out_h, out_w):
    """Sum every column entry of one (image, channel) into its output plane."""
    n_batch, channels, height, width = x.shape
    plane = out_h * out_w
    n = task // channels
    c = task - n * channels
    flat_x = x.reshape(-1)
    flat_cols = cols.reshape(-1)
    dst0 = task * (height * width)
    for p in range(height * width):
        flat_x[dst0 + p] = 0
    for ki in range(kernel_h):
        row_off = ki * dil_h - pad_h
        i_lo, i_hi = _valid_range(row_off, stride_h, height, out_h)
        for kj in range(kernel_w):
            col_off = kj * dil_w - pad_w
            j_lo, j_hi = _valid_range(col_off, stride_w, width, out_w)
            src0 = ((c * kernel_h + ki) * kernel_w + kj) * (n_batch * plane) + n * plane
            if j_hi <= j_lo:
                continue
            for oi in range(i_lo, i_hi):
                dst_base = dst0 + (oi * stride_h + row_off) * width + col_off
                src_base = src0 + oi * out_w
                # Views, not flat indices: the loop then vectorises (see _copy).
                dst = flat_x[dst_base + j_lo * stride_w:
                             dst_base + (j_hi - 1) * stride_w + 1:stride_w]
                src = flat_cols[src_base + j_lo:src_base + j_hi]
                for t in range(dst.size):
                    dst[t] += src[t]


@njit(cache=True, parallel=True, nogil=True)
def _col2im_parallel(cols, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                     out_h, out_w):
    # One task per (image, channel): it owns its output plane, so no two threads
    # ever add into the same element.
    for task in prange(x.shape[0] * x.shape[1]):
        _col2im_task(cols, x, task, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h,
                     dil_w, out_h, out_w)


@njit(cache=True, nogil=True)
def _col2im_serial(cols, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                   out_h, out_w):
    for task in range(x.shape[0] * x.shape[1]):
        _col2im_task(cols, x, task, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h,
                     dil_w, out_h, out_w)


@njit(cache=True, nogil=True, inline="always")
def _phases_read(kernel, dilation, stride):
    """used[p]: whether some tap reads phase p along this axis (a 1x1 kernel reads only 0)."""
    used = np.zeros(stride, dtype=np.bool_)
    for i in range(kernel):
        used[i * dilation % stride] = True
    return used


@njit(cache=True, nogil=True)
def _split_phases(x, pad_h, pad_w, kernel_h, kernel_w, dil_h, dil_w, phases):
    """phases[n, c, p, q, a, b] = x_pad[n, c, a*sh + p, b*sw + q]; zero outside x.

    One pass over the input; every later read of it (the kh*kw runs per row of the column
    matrix) is then a contiguous copy. With stride 1 it is the padding of ``im2col_wide``.
    Phases that no tap reads are left unwritten. Flat unsigned indices: the rows are short
    (16 entries for a 32-wide input at stride 2), too short for a view per row, and a
    signed index makes Numba test every access for a negative (wrap-around) index, which
    measured twice as slow."""
    n_batch, channels, height, width = x.shape
    stride_h, stride_w, rows, grid_w = phases.shape[2:]
    flat_ph = phases.reshape(-1)
    if stride_h == 1 and stride_w == 1:
        # Plain padding (im2col_wide), with row views: measured 1.6x faster on 8x8 planes
        # than the general loop below.
        _fill(flat_ph, 0)
        for n in range(n_batch):
            for c in range(channels):
                for i in range(height):
                    _copy(phases[n, c, 0, 0, pad_h + i, pad_w:pad_w + width], x[n, c, i])
        return
    used_h = _phases_read(kernel_h, dil_h, stride_h)
    used_w = _phases_read(kernel_w, dil_w, stride_w)
    plane = rows * grid_w
    flat_x = x.reshape(-1)
    # Zeroing whole planes first is one vectorised pass (all of them at once when every
    # phase is read); zeroing only the borders row by row measured slower on small planes.
    every_phase = used_h.all() and used_w.all()
    if every_phase:
        _fill(flat_ph, 0)
    for image in range(n_batch * channels):
        src0 = image * (height * width)
        for p in range(stride_h):
            if not used_h[p]:
                continue
            a_lo, a_hi = _valid_range(p - pad_h, stride_h, height, rows)
            for q in range(stride_w):
                if not used_w[q]:
                    continue
                b_lo, b_hi = _valid_range(q - pad_w, stride_w, width, grid_w)
                dst0 = ((image * stride_h + p) * stride_w + q) * plane
                if not every_phase:
                    _fill(flat_ph[dst0:dst0 + plane], 0)
                for a in range(a_lo, a_hi):
                    dst = dst0 + a * grid_w
                    src = src0 + (a * stride_h + p - pad_h) * width + q - pad_w
                    if stride_w == 1:
                        _copy(flat_ph[dst + b_lo:dst + b_hi], flat_x[src + b_lo:src + b_hi])
                    else:
                        for b in range(b_lo, b_hi):
                            flat_ph[uint64(dst + b)] = flat_x[uint64(src + b * stride_w)]


@njit(cache=True, nogil=True)
def _tap_starts(kernel_h, kernel_w, stride_h, stride_w, dil_h, dil_w, plane, grid_w):
    """For each tap (i, j), the offset within one image-channel's phase planes of the run
    its row of the column matrix copies: the tap's phase plane, then its offset there.
    Computed once per call: per (row, image) task the four divisions cost more than the
    copy of a short run."""
    starts = np.empty(kernel_h * kernel_w, dtype=np.int64)
    for i in range(kernel_h):
        for j in range(kernel_w):
            phase = (i * dil_h % stride_h) * stride_w + j * dil_w % stride_w
            starts[i * kernel_w + j] = (phase * plane + i * dil_h // stride_h * grid_w
                                        + j * dil_w // stride_w)
    return starts


@njit(cache=True, nogil=True)
def _phase_copy_task(flat_phases, flat_cols, task, n_batch, channels, starts, image_span, run):
    # One (row, image) pair is ONE contiguous run of a phase plane: a single copy.
    taps = starts.size
    row = task // n_batch
    n = task - row * n_batch
    c = row // taps
    src = (n * channels + c) * image_span + starts[row - c * taps]
    dst = row * (n_batch * run) + n * run
    _copy(flat_cols[dst:dst + run], flat_phases[src:src + run])


@njit(cache=True, nogil=True, inline="always")
def _split_and_starts(x, phases, kernel_h, kernel_w, pad_h, pad_w, dil_h, dil_w):
    _split_phases(x, pad_h, pad_w, kernel_h, kernel_w, dil_h, dil_w, phases)
    stride_h, stride_w, rows, grid_w = phases.shape[2:]
    return _tap_starts(kernel_h, kernel_w, stride_h, stride_w, dil_h, dil_w, rows * grid_w,
                       grid_w)


# One compiled call per im2col (split, tap offsets and copies): a ResNet-20 step makes
# thousands of them on small slices, where each call's argument checking shows.
@njit(cache=True, parallel=True, nogil=True)
def _phase_columns_parallel(x, phases, cols, kernel_h, kernel_w, pad_h, pad_w, dil_h, dil_w):
    starts = _split_and_starts(x, phases, kernel_h, kernel_w, pad_h, pad_w, dil_h, dil_w)
    n_batch, channels = x.shape[:2]
    image_span = phases[0, 0].size
    run = cols.shape[1] // n_batch
    flat_phases, flat_cols = phases.reshape(-1), cols.reshape(-1)
    for task in prange(cols.shape[0] * n_batch):
        _phase_copy_task(flat_phases, flat_cols, task, n_batch, channels, starts, image_span, run)


@njit(cache=True, nogil=True)
def _phase_columns_serial(x, phases, cols, kernel_h, kernel_w, pad_h, pad_w, dil_h, dil_w):
    starts = _split_and_starts(x, phases, kernel_h, kernel_w, pad_h, pad_w, dil_h, dil_w)
    n_batch, channels = x.shape[:2]
    image_span = phases[0, 0].size
    run = cols.shape[1] // n_batch
    flat_phases, flat_cols = phases.reshape(-1), cols.reshape(-1)
    for task in range(cols.shape[0] * n_batch):
        _phase_copy_task(flat_phases, flat_cols, task, n_batch, channels, starts, image_span, run)


def _phase_planes(n_batch, channels, stride_h, stride_w, grid_h, grid_w, dtype):
    """An uninitialised (N, C, sh, sw, GH + 1, GW) array for the phase planes. The spare
    zero row below each plane holds the reads of the last straddling columns."""
    return np.empty((n_batch, channels, stride_h, stride_w, grid_h + 1, grid_w), dtype=dtype)


def _phase_columns(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, out_h,
                   grid_h, grid_w):
    n_batch, channels = x.shape[:2]
    phases = _phase_planes(n_batch, channels, stride_h, stride_w, grid_h, grid_w, x.dtype)
    cols = np.empty((channels * kernel_h * kernel_w, n_batch * out_h * grid_w), dtype=x.dtype)
    run = _phase_columns_parallel if _worth_threads(cols.size) else _phase_columns_serial
    run(x, phases, cols, kernel_h, kernel_w, pad_h, pad_w, dil_h, dil_w)
    return cols


def im2col_phases(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, out_h,
                  out_w):
    """x: (B, C, H, W) -> (C*kh*kw, B*OH*GW); exactly the NumPy reference: split the padded
    input into its phase planes once, then every (row, image) run is one contiguous copy."""
    return _phase_columns(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                          out_h, phase_grid_length(out_h, kernel_h, stride_h, dil_h),
                          phase_grid_length(out_w, kernel_w, stride_w, dil_w))


def im2col_wide(x, kernel_h, kernel_w, pad_h, pad_w, dil_h, dil_w):
    """x: (B, C, H, W) -> (C*kh*kw, B*OH*Wp): ``im2col_phases`` with stride 1, whose one
    phase plane is the padded image (``GH x GW = Hp x Wp``)."""
    padded_h, padded_w = x.shape[2] + 2 * pad_h, x.shape[3] + 2 * pad_w
    return _phase_columns(x, kernel_h, kernel_w, 1, 1, pad_h, pad_w, dil_h, dil_w,
                          padded_h - dil_h * (kernel_h - 1), padded_h, padded_w)


@njit(cache=True, nogil=True)
def _col2im_phases_task(flat_cols, phases, x, task, kernel_h, kernel_w, dil_h, dil_w, pad_h,
                        pad_w, starts, run):
    """One (image, channel): add its kh*kw runs into its own phase planes (contiguous adds),
    then interleave the planes into its output plane. A task owns both, so no two threads
    ever add into the same element."""
    n_batch, channels, height, width = x.shape
    stride_h, stride_w, rows, grid_w = phases.shape[2:]
    n = task // channels
    c = task - n * channels
    used_h = _phases_read(kernel_h, dil_h, stride_h)
    used_w = _phases_read(kernel_w, dil_w, stride_w)
    plane = rows * grid_w
    planes = phases.reshape(-1)[task * (stride_h * stride_w * plane):
                                (task + 1) * (stride_h * stride_w * plane)]
    for p in range(stride_h):
        for q in range(stride_w):
            if used_h[p] and used_w[q]:
                _fill(planes[(p * stride_w + q) * plane:(p * stride_w + q + 1) * plane], 0)
    taps = kernel_h * kernel_w
    for t in range(taps):
        row = c * taps + t
        start = starts[t]
        first = row * (n_batch * run) + n * run
        dst = planes[start:start + run]
        src = flat_cols[first:first + run]
        for k in range(run):
            dst[k] += src[k]
    out0 = task * (height * width)
    out = x.reshape(-1)
    _fill(out[out0:out0 + height * width], 0)
    for p in range(stride_h):
        if not used_h[p]:
            continue
        a_lo, a_hi = _valid_range(p - pad_h, stride_h, height, rows)
        for q in range(stride_w):
            if not used_w[q]:
                continue
            b_lo, b_hi = _valid_range(q - pad_w, stride_w, width, grid_w)
            src0 = (p * stride_w + q) * plane
            for a in range(a_lo, a_hi):
                src = src0 + a * grid_w
                dst = out0 + (a * stride_h + p - pad_h) * width + q - pad_w
                if stride_w == 1:
                    _copy(out[dst + b_lo:dst + b_hi], planes[src + b_lo:src + b_hi])
                else:
                    # Unsigned indices: no wrap-around test per element (see _split_phases).
                    for b in range(b_lo, b_hi):
                        out[uint64(dst + b * stride_w)] = planes[uint64(src + b)]


@njit(cache=True, parallel=True, nogil=True)
def _col2im_phases_parallel(flat_cols, phases, x, kernel_h, kernel_w, dil_h, dil_w, pad_h, pad_w,
                            starts, run):
    for task in prange(x.shape[0] * x.shape[1]):
        _col2im_phases_task(flat_cols, phases, x, task, kernel_h, kernel_w, dil_h, dil_w, pad_h,
                            pad_w, starts, run)


@njit(cache=True, nogil=True)
def _col2im_phases_serial(flat_cols, phases, x, kernel_h, kernel_w, dil_h, dil_w, pad_h, pad_w,
                          starts, run):
    for task in range(x.shape[0] * x.shape[1]):
        _col2im_phases_task(flat_cols, phases, x, task, kernel_h, kernel_w, dil_h, dil_w, pad_h,
                            pad_w, starts, run)


def col2im_phases(cols, n_batch, channels, height, width, kernel_h, kernel_w, stride_h, stride_w,
                  pad_h, pad_w, dil_h, dil_w, out_h, out_w):
    """cols: (C*kh*kw, N*OH*GW) -> x: (N, C, H, W), the adjoint of ``im2col_phases``."""
    cols = np.ascontiguousarray(cols)
    phases = _phase_planes(n_batch, channels, stride_h, stride_w,
                           phase_grid_length(out_h, kernel_h, stride_h, dil_h),
                           phase_grid_length(out_w, kernel_w, stride_w, dil_w), cols.dtype)
    x = np.empty((n_batch, channels, height, width), dtype=cols.dtype)
    rows, grid_w = phases.shape[4:]
    starts = _tap_starts(kernel_h, kernel_w, stride_h, stride_w, dil_h, dil_w, rows * grid_w,
                         grid_w)
    run = _col2im_phases_parallel if _worth_threads(cols.size) else _col2im_phases_serial
    run(cols.reshape(-1), phases, x, kernel_h, kernel_w, dil_h, dil_w, pad_h, pad_w, starts,
        out_h * grid_w)
    return x


# Below this many column entries, starting the worker threads costs more than it saves.
PARALLEL_MIN_ELEMENTS = 1 << 16


def _worth_threads(size):
    """Whether to run the parallel loop: a big enough job, and more than one Numba thread
    for this caller (a batch-slice worker has one, and entering a parallel region there
    only costs time)."""
    return size >= PARALLEL_MIN_ELEMENTS and numba.get_num_threads() > 1


def im2col(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, out_h, out_w):
    """x: (N, C, H, W) -> cols: (C*kh*kw, N*out_h*out_w); same contract as the reference."""
    cols = np.empty((x.shape[1] * kernel_h * kernel_w, x.shape[0] * out_h * out_w), dtype=x.dtype)
    run = _im2col_parallel if _worth_threads(cols.size) else _im2col_serial
    run(x, cols, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, out_h, out_w)
    return cols


def col2im(cols, n_batch, channels, height, width, kernel_h, kernel_w, stride_h, stride_w,
           pad_h, pad_w, dil_h, dil_w, out_h, out_w):
    """cols: (C*kh*kw, N*out_h*out_w) -> x: (N, C, H, W), summing overlapping windows."""
    x = np.empty((n_batch, channels, height, width), dtype=cols.dtype)
    run = _col2im_parallel if _worth_threads(cols.size) else _col2im_serial
    run(cols, x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, out_h, out_w)
    return x


# The sliced convolution runs its GEMMs around the kernels above, on the CPU's worker pool.
KERNELS = computing_float16_in_float32({
    "im2col": im2col, "col2im": col2im, "im2col_wide": im2col_wide,
    "im2col_phases": im2col_phases, "col2im_phases": col2im_phases,
    "conv2d_forward": sliced_conv.conv2d_forward, "conv2d_backward": sliced_conv.conv2d_backward})
