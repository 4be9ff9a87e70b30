"""2-D pooling: max, average, and adaptive (output-size driven) pooling.

Shapes: ``input`` is ``(N, C, H, W)`` or unbatched ``(C, H, W)``; the output is
``(N, C, OH, OW)`` (or ``(C, OH, OW)``). Along each spatial axis (PyTorch's rule)::

    OH = floor((H + 2*padding - dilation*(kernel_size - 1) - 1) / stride) + 1

with ``ceil`` instead of ``floor`` when ``ceil_mode=True``, and then one window
less if the last window would start in the right padding (at or after
``H + padding``): every window starts inside the image or the left padding.

Gradients (``g = dL/d out``, derivations in ``docs/ops/pooling.md``):

* max pooling ``out[o] = x[argmax(o)]`` is a gather, so ``dx = scatter_add(g, argmax)``;
  on ties the gradient goes to exactly one input, the first maximum in
  row-major order (as PyTorch). The scatter's own backward is again a gather, so
  second derivatives work.
* average pooling ``out = A x`` is linear, so ``dx = A^T g`` (each output spreads
  ``g / divisor`` over its window), and the backward of ``A^T`` is ``A``.
* adaptive average pooling is separable: ``out = P_h x P_w^T`` with row-averaging
  matrices, so it is two matrix products (global pooling is a mean over H, W).

The hot loops are kernels chosen by :mod:`tinygrad_cnn.backend`:
``max_pool2d_forward``, ``max_pool2d_backward``, ``avg_pool2d_forward`` and
``avg_pool2d_backward``.

Where the kernels live: the NumPy references (their contracts) below; Numba in
``tinygrad_cnn/kernels/cpu/pooling.py``; CUDA in ``tinygrad_cnn/kernels/cuda/pooling.py``.
"""
from __future__ import annotations

import numbers

import numpy as np

from ... import backend
from ..._arguments import WindowGeometry, check_tensor, is_int, output_length as pool_output_size, pair
from ...autograd import Function
from ...backend import get_array_module
from ...tensor import Tensor

__all__ = ["max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d"]


# ---------------------------------------------------------------------------
# NumPy references (the kernel contracts)
# ---------------------------------------------------------------------------

def _window_positions(xp, n_out, stride, pad, offset, size):
    """Input positions ``o*stride - pad + offset`` for o < n_out, clipped into the image, and
    the mask of those that really are inside it (the others are padding)."""
    positions = xp.arange(n_out) * stride - pad + offset
    inside = (positions >= 0) & (positions < size)
    return xp.clip(positions, 0, size - 1), inside


@backend.register_reference("max_pool2d_forward")
def _max_pool2d_forward(x, kernel_size, stride, padding, dilation, output_size):
    """Max pooling forward.

    x: (N, C, H, W); kernel_size, stride, padding, dilation: (h, w) pairs of ints;
    output_size: (OH, OW). Returns ``(out, indices)``, both (N, C, OH, OW); ``out`` has
    x's dtype, ``indices`` is int64 with the flat position ``h * W + w`` of the chosen
    element in its (H, W) plane, or -1 where the window covers only padding
    (then ``out`` is -inf).

    Window (oh, ow) reads rows ``oh*sh - ph + i*dh`` and columns ``ow*sw - pw + j*dw``.
    Scanning the window in row-major order, the first element inside the image is
    taken, then replaced only by a strictly greater element or a NaN: ties go to the
    first maximum, NaNs propagate.
    """
    xp = get_array_module(x)
    n, c, height, width = x.shape
    out_h, out_w = output_size
    best = xp.full((n, c, out_h, out_w), -xp.inf, dtype=x.dtype)
    best_index = xp.full((n, c, out_h, out_w), -1, dtype=np.int64)
    for i in range(kernel_size[0]):
        rows, row_inside = _window_positions(xp, out_h, stride[0], padding[0], i * dilation[0],
                                             height)
        for j in range(kernel_size[1]):
            cols, col_inside = _window_positions(xp, out_w, stride[1], padding[1],
                                                 j * dilation[1], width)
            values = x[:, :, rows[:, None], cols[None, :]]
            inside = row_inside[:, None] & col_inside[None, :]
            take = inside & ((best_index < 0) | (values > best) | xp.isnan(values))
            best = xp.where(take, values, best)
            best_index = xp.where(take, rows[:, None] * width + cols[None, :], best_index)
    return best, best_index


@backend.register_reference("max_pool2d_backward")
def _max_pool2d_backward(grad_output, indices, input_size):
    """Max pooling backward: scatter-add each output gradient to the input it came from.

    grad_output, indices: (N, C, OH, OW) (indices as returned by ``max_pool2d_forward``;
    -1 entries receive nothing); input_size: (H, W). Returns grad_input (N, C, H, W) with
    grad_output's dtype. Overlapping windows may pick the same pixel: those add up.
    """
    xp = get_array_module(grad_output)
    n, c = grad_output.shape[:2]
    height, width = input_size
    plane_size = height * width
    outputs_per_plane = int(np.prod(indices.shape[2:], dtype=np.int64))   # explicit: empty batches
    flat_index = indices.reshape(n * c, outputs_per_plane)
    # One global index per output, so the whole scatter is a single weighted bincount.
    global_index = xp.arange(n * c)[:, None] * plane_size + flat_index
    valid = flat_index >= 0
    summed = xp.bincount(global_index[valid], weights=grad_output.reshape(n * c, outputs_per_plane)[valid],
                         minlength=n * c * plane_size)
    return summed.astype(grad_output.dtype, copy=False).reshape(n, c, height, width)


def _avg_divisor(xp, input_size, output_size, kernel_size, stride, padding, count_include_pad,
                 divisor_override):
    """The (OH, OW) divisors of average pooling (or the scalar ``divisor_override``).

    PyTorch's rule: the window is clipped to the padded image ``[-p, H + p)`` for
    ``count_include_pad=True``, or to the image ``[0, H)`` otherwise.
    """
    if divisor_override:
        return divisor_override
    per_axis = []
    for size, n_out, k, s, p in zip(input_size, output_size, kernel_size, stride, padding):
        start = xp.arange(n_out) * s - p
        end = xp.minimum(start + k, size + p)
        if count_include_pad:
            per_axis.append(end - start)
        else:
            per_axis.append(xp.minimum(end, size) - xp.maximum(start, 0))
    return per_axis[0][:, None] * per_axis[1][None, :]


@backend.register_reference("avg_pool2d_forward")
def _avg_pool2d_forward(x, kernel_size, stride, padding, output_size, count_include_pad,
                        divisor_override):
    """Average pooling forward.

    x: (N, C, H, W); kernel_size, stride, padding: (h, w) pairs; output_size: (OH, OW);
    count_include_pad: bool; divisor_override: positive int or None.
    Returns out (N, C, OH, OW) = window sum / divisor (see ``_avg_divisor``).
    """
    xp = get_array_module(x)
    n, c, height, width = x.shape
    out_h, out_w = output_size
    # float16 window sums overflow past 65504: they accumulate in float32 (as PyTorch's do).
    total = xp.zeros((n, c, out_h, out_w), dtype=np.float32 if x.dtype == np.float16 else x.dtype)
    for i in range(kernel_size[0]):
        rows, row_inside = _window_positions(xp, out_h, stride[0], padding[0], i, height)
        for j in range(kernel_size[1]):
            cols, col_inside = _window_positions(xp, out_w, stride[1], padding[1], j, width)
            inside = row_inside[:, None] & col_inside[None, :]
            total += xp.where(inside, x[:, :, rows[:, None], cols[None, :]], 0)
    divisor = _avg_divisor(xp, (height, width), output_size, kernel_size, stride, padding,
                           count_include_pad, divisor_override)
    return (total / divisor).astype(x.dtype, copy=False)


@backend.register_reference("avg_pool2d_backward")
def _avg_pool2d_backward(grad_output, input_size, kernel_size, stride, padding, count_include_pad,
                         divisor_override):
    """Average pooling backward (the transpose of the forward).

    grad_output: (N, C, OH, OW); input_size: (H, W); the other arguments as in
    ``avg_pool2d_forward``. Returns grad_input (N, C, H, W): every output spreads
    ``grad_output / divisor`` evenly over the image pixels of its window.
    """
    xp = get_array_module(grad_output)
    n, c, out_h, out_w = grad_output.shape
    height, width = input_size
    divisor = _avg_divisor(xp, input_size, (out_h, out_w), kernel_size, stride, padding,
                           count_include_pad, divisor_override)
    share = (grad_output / divisor).astype(grad_output.dtype, copy=False)
    grad_input = xp.zeros((n, c, height, width), dtype=grad_output.dtype)
    for i in range(kernel_size[0]):
        rows, row_inside = _window_positions(xp, out_h, stride[0], padding[0], i, height)
        for j in range(kernel_size[1]):
            cols, col_inside = _window_positions(xp, out_w, stride[1], padding[1], j, width)
            # For one kernel offset, distinct windows hit distinct pixels (stride >= 1),
            # so a plain fancy-index += does not lose updates.
            target_rows, target_cols = rows[row_inside], cols[col_inside]
            grad_input[:, :, target_rows[:, None], target_cols[None, :]] += (
                share[:, :, row_inside][:, :, :, col_inside])
    return grad_input


# ---------------------------------------------------------------------------
# Argument checking
# ---------------------------------------------------------------------------

def _check_input(op, input):
    check_tensor(op, "input", input)
    if input.ndim not in (3, 4):
        raise ValueError(f"{op}: expected a 3D (C, H, W) or 4D (N, C, H, W) input, got shape "
                         f"{tuple(input.shape)}")
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: input must be a floating point tensor, got dtype {input.dtype}")
    if min(input.shape[-3:]) == 0:
        raise ValueError(f"{op}: expected non-empty C, H and W, got input shape "
                         f"{tuple(input.shape)}")


def _as_batch(input):
    """(C, H, W) -> (1, C, H, W); 4D input unchanged. Returns (tensor, was_unbatched)."""
    if input.ndim == 3:
        return input.reshape(1, *input.shape), True
    return input, False


def _pool_geometry(op, input, kernel_size, stride, padding, dilation, ceil_mode):
    """The checked :class:`WindowGeometry` of pooling ``input`` ((N, C, H, W) or (C, H, W))."""
    kernel = pair(op, "kernel_size", kernel_size, 1)
    # PyTorch accepts stride=None or an empty sequence for "same as kernel_size".
    if stride is None or (isinstance(stride, (tuple, list)) and not stride):
        stride = kernel
    pads = pair(op, "padding", padding, 0)
    # PyTorch's rule bounds the padding by the kernel size itself, whatever the dilation.
    if any(p > k // 2 for p, k in zip(pads, kernel)):
        raise ValueError(
            f"{op}: pad should be at most half of kernel size, but got "
            f"padding={padding!r}, kernel_size={kernel_size!r} and dilation={dilation!r}")
    shape = (1,) * (4 - input.ndim) + tuple(input.shape)
    return WindowGeometry.build(op, shape, kernel, stride, pads, dilation, ceil_mode)


# ---------------------------------------------------------------------------
# Gather / scatter by index: max pooling and its derivatives
# ---------------------------------------------------------------------------

def _gather(source, indices):
    """out[n, c, k] = source[n, c].flat[indices[n, c, k]] (0 where the index is -1)."""
    xp = get_array_module(source)
    n, c = source.shape[:2]
    flat_source = source.reshape(n, c, -1)
    flat_index = indices.reshape(n, c, -1)
    valid = flat_index >= 0
    gathered = xp.take_along_axis(flat_source, xp.maximum(flat_index, 0), axis=2)
    if not bool(valid.all()):
        gathered = xp.where(valid, gathered, 0).astype(source.dtype, copy=False)
    return gathered.reshape(indices.shape)


class MaxPool2d(Function):
    """out[o] = max of x over window o, i.e. ``x[argmax(o)]``.  dx = scatter_add(g, argmax).

    x: (N, C, H, W) -> out: (N, C, OH, OW); the argmax ``indices`` (int64, ``h * W + w``
    per plane) are kept as a constant, so the backward is the scatter of :class:`_ScatterByIndex`,
    whose own backward is the gather again (second derivatives work). ``indices_out``, a list,
    receives the indices for ``return_indices``."""

    def forward(self, x, *, geometry, indices_out=None):
        xp = get_array_module(x)
        out, self.indices = backend.kernel("max_pool2d_forward", xp)(
            x, geometry.kernel, geometry.stride, geometry.padding, geometry.dilation, geometry.out)
        self.input_size = tuple(x.shape[-2:])
        if indices_out is not None:
            indices_out.append(self.indices)
        return out

    def backward(self, grad_output):
        return _ScatterByIndex.apply(grad_output, indices=self.indices, input_size=self.input_size)


class _GatherByIndex(Function):
    """out = x gathered at ``indices`` (per (n, c) plane).  dx = scatter_add(g, indices).

    x: (N, C, H, W); indices: (N, C, OH, OW) int64 constant; out: (N, C, OH, OW).
    """

    def forward(self, x, *, indices):
        self.indices = indices
        self.input_size = tuple(x.shape[-2:])
        return _gather(x, indices)

    def backward(self, grad_output):
        return _ScatterByIndex.apply(grad_output, indices=self.indices, input_size=self.input_size)


class _ScatterByIndex(Function):
    """out = scatter_add(g, indices) into (N, C, H, W).  Its adjoint: dg = gather(gg, indices)."""

    def forward(self, grad, *, indices, input_size):
        self.indices = indices
        xp = get_array_module(grad)
        return backend.kernel("max_pool2d_backward", xp)(grad, indices, input_size)

    def backward(self, grad_output):
        return _GatherByIndex.apply(grad_output, indices=self.indices)


# ---------------------------------------------------------------------------
# Average pooling and its adjoint
# ---------------------------------------------------------------------------

class _AvgPool2d(Function):
    """out = A x (window means).  dx = A^T g (each g / divisor spread over its window)."""

    def forward(self, x, *, geometry, count_include_pad, divisor_override):
        self.geometry = geometry
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override
        xp = get_array_module(x)
        return backend.kernel("avg_pool2d_forward", xp)(
            x, geometry.kernel, geometry.stride, geometry.padding, geometry.out, count_include_pad,
            divisor_override)

    def backward(self, grad_output):
        return _AvgPool2dTranspose.apply(grad_output, geometry=self.geometry,
                                         count_include_pad=self.count_include_pad,
                                         divisor_override=self.divisor_override)


class _AvgPool2dTranspose(Function):
    """out = A^T g.  The adjoint of a transpose is the map itself: dg = A gg."""

    def forward(self, grad, *, geometry, count_include_pad, divisor_override):
        self.geometry = geometry
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override
        xp = get_array_module(grad)
        return backend.kernel("avg_pool2d_backward", xp)(
            grad, (geometry.height, geometry.width), geometry.kernel, geometry.stride,
            geometry.padding, count_include_pad, divisor_override)

    def backward(self, grad_output):
        return _AvgPool2d.apply(grad_output, geometry=self.geometry,
                                count_include_pad=self.count_include_pad,
                                divisor_override=self.divisor_override)


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------

def _indices_tensor(indices, unbatched):
    tensor = Tensor._wrap(indices, requires_grad=False)
    return tensor.reshape(*indices.shape[1:]) if unbatched else tensor


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    """2-D max pooling (PyTorch's ``torch.nn.functional.max_pool2d``).

    Args:
        input: (N, C, H, W) or (C, H, W), floating point.
        kernel_size, stride, padding, dilation: int or (h, w). ``stride`` defaults to
            ``kernel_size``; padding (implicit -inf) is at most ``kernel_size // 2`` (as
            PyTorch, also with dilation).
        ceil_mode: round the output size up (the last window must still start inside the
            image or the left padding).
        return_indices: also return the argmax indices, int64 ``h * W + w`` per plane.
    Returns:
        out: (N, C, OH, OW) (or (C, OH, OW)), and the indices of the same shape if asked.

    Backward: ``dx[n, c].flat[indices[n, c, o]] += g[n, c, o]``: only the chosen element of
    each window gets gradient, and on ties that is the first maximum in row-major order.
    """
    op = "max_pool2d"
    _check_input(op, input)
    geometry = _pool_geometry(op, input, kernel_size, stride, padding, dilation, ceil_mode)
    x, unbatched = _as_batch(input)
    indices = []
    out = MaxPool2d.apply(x, geometry=geometry, indices_out=indices)
    if unbatched:
        out = out.reshape(*out.shape[1:])
    if return_indices:
        return out, _indices_tensor(indices[0], unbatched)
    return out


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    """2-D average pooling (PyTorch's ``torch.nn.functional.avg_pool2d``).

    Args:
        input: (N, C, H, W) or (C, H, W), floating point.
        kernel_size, stride, padding: int or (h, w); ``stride`` defaults to ``kernel_size``;
            padding (implicit zeros) at most half the kernel size.
        ceil_mode: round the output size up (see :func:`pool_output_size`).
        count_include_pad: divide by the window area including padding (clipped to the
            padded image) rather than by the number of image pixels in the window.
        divisor_override: if given (a positive int), divide every window sum by it.
    Returns:
        out: (N, C, OH, OW) (or (C, OH, OW)).

    Backward (linear map A, out = A x): ``dx = A^T g``, i.e. each pixel of window o
    receives ``g[o] / divisor[o]``.
    """
    op = "avg_pool2d"
    _check_input(op, input)
    geometry = _pool_geometry(op, input, kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override is not None and (
            not isinstance(divisor_override, numbers.Integral) or isinstance(divisor_override, bool)
            or divisor_override <= 0):
        raise ValueError(f"{op}: divisor_override must be a positive int or None, got "
                         f"{divisor_override!r}")
    x, unbatched = _as_batch(input)
    height, width = x.shape[-2:]
    if (geometry.kernel == (height, width) and geometry.out == (1, 1)
            and geometry.padding == (0, 0) and divisor_override is None):
        out = _global_avg_pool(x)     # one window covering the image: a plain mean
    else:
        out = _AvgPool2d.apply(x, geometry=geometry, count_include_pad=bool(count_include_pad),
                               divisor_override=None if divisor_override is None
                               else int(divisor_override))
    return out.reshape(*out.shape[1:]) if unbatched else out


def _global_avg_pool(x):
    """(N, C, H, W) -> (N, C, 1, 1): mean over H and W."""
    return x.mean(dim=(2, 3), keepdim=True)


def _adaptive_output_size(op, input, output_size):
    if is_int(output_size):
        sizes = (output_size, output_size)
    elif isinstance(output_size, (tuple, list)) and len(output_size) == 2:
        sizes = tuple(output_size)
    else:
        raise TypeError(f"{op}: output_size must be an int or a pair (None keeps the input size), "
                        f"got {output_size!r}")
    resolved = []
    for size, in_size in zip(sizes, input.shape[-2:]):
        if size is None:
            size = in_size
        if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 1:
            raise ValueError(f"{op}: output_size entries must be positive ints or None, got "
                             f"{output_size!r}")
        resolved.append(int(size))
    return tuple(resolved)


def adaptive_windows(in_size, out_size):
    """PyTorch's adaptive windows along one axis: ``[floor(i*in/out), ceil((i+1)*in/out))``."""
    return [((i * in_size) // out_size, -((-(i + 1) * in_size) // out_size))
            for i in range(out_size)]


def _averaging_matrix(in_size, out_size, dtype, xp):
    """(out, in) matrix whose row i averages the i-th adaptive window."""
    matrix = np.zeros((out_size, in_size), dtype=dtype)
    for i, (start, end) in enumerate(adaptive_windows(in_size, out_size)):
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix if xp is np else xp.asarray(matrix)


def adaptive_avg_pool2d(input, output_size):
    """Adaptive 2-D average pooling (PyTorch's ``adaptive_avg_pool2d``).

    Args:
        input: (N, C, H, W) or (C, H, W).
        output_size: int or (OH, OW); ``None`` keeps that input dimension.
    Returns:
        out: (N, C, OH, OW) (or (C, OH, OW)); output row i averages input rows
        ``floor(i*H/OH) .. ceil((i+1)*H/OH) - 1`` (windows may overlap), likewise columns.

    Output (1, 1) is global average pooling, a mean over H and W. Evenly dividing sizes
    are ordinary average pooling with kernel = stride = H/OH. Otherwise the op is
    separable, ``out = P_h @ x @ P_w^T`` with averaging matrices P, whose gradient is
    ``dx = P_h^T @ g @ P_w``.
    """
    op = "adaptive_avg_pool2d"
    _check_input(op, input)
    out_h, out_w = _adaptive_output_size(op, input, output_size)
    x, unbatched = _as_batch(input)
    height, width = x.shape[-2:]
    if (out_h, out_w) == (1, 1):
        out = _global_avg_pool(x)
    elif height % out_h == 0 and width % out_w == 0:
        kernel = (height // out_h, width // out_w)
        geometry = WindowGeometry.build(op, x.shape, kernel, kernel, 0, 1)
        out = _AvgPool2d.apply(x, geometry=geometry, count_include_pad=True, divisor_override=None)
    else:
        xp = get_array_module(x.array)
        rows = Tensor._wrap(_averaging_matrix(height, out_h, x.dtype, xp))
        cols = Tensor._wrap(_averaging_matrix(width, out_w, x.dtype, xp).T.copy())
        out = rows @ (x @ cols)
    return out.reshape(*out.shape[1:]) if unbatched else out


def _adaptive_max_indices(x, out_size):
    """argmax indices (N, C, OH, OW) of adaptive max pooling: ``h * W + w`` per plane.

    Ties go to the first maximum in row-major order; a NaN in a window is chosen.
    """
    xp = get_array_module(x)
    n, c, height, width = x.shape
    out_h, out_w = out_size
    indices = xp.empty((n, c, out_h, out_w), dtype=np.int64)
    for i, (h0, h1) in enumerate(adaptive_windows(height, out_h)):
        for j, (w0, w1) in enumerate(adaptive_windows(width, out_w)):
            window = x[:, :, h0:h1, w0:w1].reshape(n, c, -1)
            local = xp.argmax(window, axis=2)        # first maximum; NaN counts as maximal
            indices[:, :, i, j] = (h0 + local // (w1 - w0)) * width + (w0 + local % (w1 - w0))
    return indices


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """Adaptive 2-D max pooling (PyTorch's ``adaptive_max_pool2d``).

    Args:
        input: (N, C, H, W) or (C, H, W).
        output_size: int or (OH, OW); ``None`` keeps that input dimension.
        return_indices: also return the int64 argmax indices ``h * W + w`` per plane.
    Returns:
        out: (N, C, OH, OW) (or (C, OH, OW)); windows as in :func:`adaptive_avg_pool2d`.

    Backward: ``dx.flat[indices[o]] += g[o]`` per plane, ties to the first maximum.
    """
    op = "adaptive_max_pool2d"
    _check_input(op, input)
    out_size = _adaptive_output_size(op, input, output_size)
    x, unbatched = _as_batch(input)
    indices = _adaptive_max_indices(x.array, out_size)
    out = _GatherByIndex.apply(x, indices=indices)
    if unbatched:
        out = out.reshape(*out.shape[1:])
    if return_indices:
        return out, _indices_tensor(indices, unbatched)
    return out
