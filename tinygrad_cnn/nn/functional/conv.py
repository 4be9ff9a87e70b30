"""2-D convolution as im2col + one matrix product, and the im2col/col2im pair itself.

Shapes (PyTorch's conventions)::

    input  x: (N, C_in, H, W)             weight w: (C_out, C_in / groups, kh, kw)
    bias   b: (C_out,)                    output y: (N, C_out, OH, OW)
    OH = floor((H + 2*padding - dilation*(kh - 1) - 1) / stride) + 1      (same for OW)

The column matrix (see ``docs/ops/conv.md`` for the picture) has one row per
(input channel, kernel row, kernel column) and one column per (image, output
pixel)::

    cols: (C_in*kh*kw, N*OH*OW)
    cols[(c*kh + i)*kw + j, n*OH*OW + oh*OW + ow] = x_padded[n, c, oh*sh + i*dh, ow*sw + j*dw]

so the whole batch is ONE row-major GEMM ``w.reshape(C_out, C_in*kh*kw) @ cols``
(per group: the rows of group g are a contiguous block). Gradients, with
``G = dL/dy`` laid out the same way as ``(C_out, N*OH*OW)``::

    dL/dcols = W^T G        ->  dL/dx = col2im(W^T G)      (col2im is the adjoint of im2col)
    dL/dW    = G cols^T     (cols recomputed from x: a column buffer is 9x the input for 3x3)
    dL/db    = G summed over its columns

The backward is written with Tensor ops and the :class:`Im2col`/:class:`Col2im`
Functions, which are each other's backward, so ``create_graph=True`` gives
second derivatives of convolution. Without a graph the engine calls the
``conv2d_backward`` kernel instead, whose reference below is the same three lines.

Where the kernels live: the NumPy references of ``im2col``, ``col2im``,
``conv2d_forward`` and ``conv2d_backward`` (and ``im2col_wide``, ``im2col_phases`` and
``col2im_phases``, the column layouts of the fast path) are below; the Numba
im2col kernels in ``tinygrad_cnn/kernels/cpu/conv.py``, the CUDA ones in
``tinygrad_cnn/kernels/cuda/conv.py``; the fast ``conv2d_forward``/``conv2d_backward``
that both register (batch slices, wide columns) in ``tinygrad_cnn/kernels/sliced_conv.py``.
"""
from __future__ import annotations


from ... import backend
from ..._arguments import WindowGeometry, check_tensor, is_int, pair, phase_grid_length
from ...autograd import Function
from ...backend import get_array_module
from ...tensor import pad as _pad

__all__ = ["conv2d", "im2col", "col2im", "unfold", "fold"]


# ---------------------------------------------------------------------------
# NumPy references (the kernel contracts)
# ---------------------------------------------------------------------------

def _window_slices(offset_h, offset_w, stride_h, stride_w, out_h, out_w):
    """Slices of the padded input read by one kernel offset, for every output pixel."""
    return (slice(offset_h, offset_h + stride_h * (out_h - 1) + 1, stride_h),
            slice(offset_w, offset_w + stride_w * (out_w - 1) + 1, stride_w))


@backend.register_reference("im2col")
def _im2col_reference(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                      out_h, out_w):
    """Unfold every receptive field of ``x`` into a column.

    x: (N, C, H, W) -> cols: (C*kernel_h*kernel_w, N*out_h*out_w), a new C-contiguous array
    with ``cols[(c*kh + i)*kw + j, n*out_h*out_w + oh*out_w + ow]
    = x_padded[n, c, oh*stride_h + i*dil_h, ow*stride_w + j*dil_w]``
    where ``x_padded`` has ``pad_h`` zero rows above and below, ``pad_w`` zero columns
    left and right.
    """
    xp = get_array_module(x)
    n_batch, channels = x.shape[:2]
    x_padded = xp.pad(x, ((0, 0), (0, 0), (pad_h, pad_h), (pad_w, pad_w)))
    cols = xp.empty((channels, kernel_h, kernel_w, n_batch, out_h, out_w), dtype=x.dtype)
    for i in range(kernel_h):
        for j in range(kernel_w):
            rows, columns = _window_slices(i * dil_h, j * dil_w, stride_h, stride_w, out_h, out_w)
            # (N, C, OH, OW) values seen by kernel tap (i, j), stored channel-first.
            cols[:, i, j] = x_padded[:, :, rows, columns].transpose(1, 0, 2, 3)
    return cols.reshape(channels * kernel_h * kernel_w, n_batch * out_h * out_w)


@backend.register_reference("col2im")
def _col2im_reference(cols, n_batch, channels, height, width, kernel_h, kernel_w, stride_h,
                      stride_w, pad_h, pad_w, dil_h, dil_w, out_h, out_w):
    """Fold columns back into an image, summing where receptive fields overlap.

    cols: (C*kernel_h*kernel_w, N*out_h*out_w) in the layout of the im2col reference
    -> x: (N, C, height, width). This is the adjoint (transpose) of im2col:
    ``<im2col(x), cols> == <x, col2im(cols)>``; padding positions are dropped.
    """
    xp = get_array_module(cols)
    cols = cols.reshape(channels, kernel_h, kernel_w, n_batch, out_h, out_w)
    x_padded = xp.zeros((n_batch, channels, height + 2 * pad_h, width + 2 * pad_w),
                        dtype=cols.dtype)
    for i in range(kernel_h):
        for j in range(kernel_w):
            rows, columns = _window_slices(i * dil_h, j * dil_w, stride_h, stride_w, out_h, out_w)
            # With stride >= 1 a single tap never hits one pixel twice, so += is safe here.
            x_padded[:, :, rows, columns] += cols[:, i, j].transpose(1, 0, 2, 3)
    return x_padded[:, :, pad_h:pad_h + height, pad_w:pad_w + width].copy()


@backend.register_reference("im2col_wide")
def _im2col_wide_reference(x, kernel_h, kernel_w, pad_h, pad_w, dil_h, dil_w):
    """Columns of a unit-stride convolution on the padded-width grid.

    x: (B, C, H, W) -> cols: (C*kernel_h*kernel_w, B*OH*Wp) with Wp = W + 2*pad_w,
    OH = H + 2*pad_h - dil_h*(kernel_h - 1), and
    ``cols[(c*kh + i)*kw + j, b*OH*Wp + r] = x_pad[b, c].flat[i*dil_h*Wp + j*dil_w + r]``.
    Column ``r = oh*Wp + ow`` is the window at (oh, ow) when ``ow < OW``; the last
    ``dil_w*(kernel_w - 1)`` columns of each grid row straddle the right edge and are
    dropped by the caller. Each matrix row is then ONE contiguous run of the padded
    plane, so the "im2col" is a strided copy. x_pad gets one extra zero row at the
    bottom so that the straddling reads of the last row stay inside its plane.
    """
    xp = get_array_module(x)
    n_batch, channels, height, width = x.shape
    padded_h, padded_w = height + 2 * pad_h, width + 2 * pad_w
    out_h = padded_h - dil_h * (kernel_h - 1)
    padded = xp.zeros((n_batch, channels, padded_h + 1, padded_w), dtype=x.dtype)
    padded[:, :, pad_h:pad_h + height, pad_w:pad_w + width] = x
    plane = (padded_h + 1) * padded_w
    item = x.dtype.itemsize
    run = out_h * padded_w
    view = xp.lib.stride_tricks.as_strided(
        padded, shape=(channels, kernel_h, kernel_w, n_batch, run),
        strides=(plane * item, dil_h * padded_w * item, dil_w * item, channels * plane * item,
                 item))
    return xp.ascontiguousarray(view).reshape(channels * kernel_h * kernel_w, n_batch * run)


def _phase_planes_shape(n_batch, channels, kernel_h, kernel_w, stride_h, stride_w, dil_h, dil_w,
                        out_h, out_w):
    """(N, C, sh, sw, GH + 1, GW): the phase planes of a batch, one spare zero row each."""
    grid_h = phase_grid_length(out_h, kernel_h, stride_h, dil_h)
    grid_w = phase_grid_length(out_w, kernel_w, stride_w, dil_w)
    return (n_batch, channels, stride_h, stride_w, grid_h + 1, grid_w)


def _tap_starts(kernel_h, kernel_w, stride_h, stride_w, dil_h, dil_w, grid_w):
    """For every tap (i, j): its phase (p, q) and the flat start of its run in that plane."""
    for i in range(kernel_h):
        for j in range(kernel_w):
            yield (i, j, i * dil_h % stride_h, j * dil_w % stride_w,
                   i * dil_h // stride_h * grid_w + j * dil_w // stride_w)


@backend.register_reference("im2col_phases")
def _im2col_phases_reference(x, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                             out_h, out_w):
    """Wide columns of a convolution with any stride, taken from its *phase planes*.

    The padded input splits into ``sh*sw`` phase planes
    ``phases[n, c, p, q, a, b] = x_pad[n, c, a*sh + p, b*sw + q]`` (zero outside x), each of
    ``GH x GW`` positions (``WindowGeometry.grid``) and one spare zero row. Window (oh, ow)
    reads tap (i, j) at padded ``(oh*sh + i*dh, ow*sw + j*dw)``, i.e. in phase
    ``(i*dh % sh, j*dw % sw)`` at ``(oh + i*dh // sh, ow + j*dw // sw)``: a unit-stride window
    of that plane. So on the grid of GW columns per output row every row of the column matrix
    is ONE contiguous run of one plane, as for ``im2col_wide`` (which this is, with stride 1):

    x: (N, C, H, W) -> cols: (C*kh*kw, N*OH*GW),
    ``cols[(c*kh + i)*kw + j, n*OH*GW + r] = phases[n, c, i*dh % sh, j*dw % sw].flat[
    (i*dh // sh)*GW + j*dw // sw + r]``. Column ``r = oh*GW + ow`` is the window at (oh, ow)
    when ``ow < OW``; the other ``GW - OW`` columns of each grid row straddle the right edge.
    """
    xp = get_array_module(x)
    n_batch, channels, height, width = x.shape
    shape = _phase_planes_shape(n_batch, channels, kernel_h, kernel_w, stride_h, stride_w,
                                dil_h, dil_w, out_h, out_w)
    rows, grid_w = shape[4], shape[5]
    padded = xp.zeros((n_batch, channels, stride_h * rows, stride_w * grid_w), dtype=x.dtype)
    # Input rows/columns past the last plane position are read by no window.
    keep_h = max(0, min(height, padded.shape[2] - pad_h))
    keep_w = max(0, min(width, padded.shape[3] - pad_w))
    padded[:, :, pad_h:pad_h + keep_h, pad_w:pad_w + keep_w] = x[:, :, :keep_h, :keep_w]
    phases = padded.reshape(n_batch, channels, rows, stride_h, grid_w, stride_w)
    phases = phases.transpose(0, 1, 3, 5, 2, 4).reshape(n_batch, channels, stride_h, stride_w, -1)
    run = out_h * grid_w
    cols = xp.empty((channels, kernel_h, kernel_w, n_batch, run), dtype=x.dtype)
    for i, j, p, q, start in _tap_starts(kernel_h, kernel_w, stride_h, stride_w, dil_h, dil_w,
                                         grid_w):
        cols[:, i, j] = phases[:, :, p, q, start:start + run].transpose(1, 0, 2)
    return cols.reshape(channels * kernel_h * kernel_w, n_batch * run)


@backend.register_reference("col2im_phases")
def _col2im_phases_reference(cols, n_batch, channels, height, width, kernel_h, kernel_w, stride_h,
                             stride_w, pad_h, pad_w, dil_h, dil_w, out_h, out_w):
    """The adjoint of ``im2col_phases``: cols (C*kh*kw, N*OH*GW) -> x (N, C, H, W).

    Every entry is added into the phase-plane position it was copied from, the planes are
    interleaved back into the padded image and the padding is dropped. Being the exact
    adjoint, it also adds the straddling columns (which read real pixels of the next grid
    row): ``col2im`` of a convolution's gradient needs them zero."""
    xp = get_array_module(cols)
    shape = _phase_planes_shape(n_batch, channels, kernel_h, kernel_w, stride_h, stride_w,
                                dil_h, dil_w, out_h, out_w)
    rows, grid_w = shape[4], shape[5]
    run = out_h * grid_w
    cols = cols.reshape(channels, kernel_h, kernel_w, n_batch, run)
    phases = xp.zeros((n_batch, channels, stride_h, stride_w, rows * grid_w), dtype=cols.dtype)
    for i, j, p, q, start in _tap_starts(kernel_h, kernel_w, stride_h, stride_w, dil_h, dil_w,
                                         grid_w):
        phases[:, :, p, q, start:start + run] += cols[:, i, j].transpose(1, 0, 2)
    padded = phases.reshape(shape).transpose(0, 1, 4, 2, 5, 3)
    padded = padded.reshape(n_batch, channels, stride_h * rows, stride_w * grid_w)
    x = xp.zeros((n_batch, channels, height, width), dtype=cols.dtype)
    keep_h = max(0, min(height, padded.shape[2] - pad_h))
    keep_w = max(0, min(width, padded.shape[3] - pad_w))
    x[:, :, :keep_h, :keep_w] = padded[:, :, pad_h:pad_h + keep_h, pad_w:pad_w + keep_w]
    return x


@backend.register_reference("conv2d_forward")
def _conv2d_forward_reference(x, weight, bias, geometry, groups, residual=None, relu=False):
    """The textbook convolution: one im2col of the batch and one GEMM per group.

    x: (N, C, H, W); weight: (C_out, C/groups, kh, kw); bias: (C_out,) or None; geometry:
    the :class:`WindowGeometry` of x. Returns y: (N, C_out, OH, OW), a new array.
    The optional epilogue (used by inference with BatchNorm folded into weight and bias):
    ``y + residual`` (residual of y's shape), then ``max(y, 0)`` when ``relu``."""
    xp = get_array_module(x)
    n_batch, c_out = x.shape[0], weight.shape[0]
    cols = _run_im2col(x, geometry).reshape(groups, geometry.rows // groups, -1)
    y = xp.matmul(weight.reshape(groups, c_out // groups, -1), cols)        # Y = W cols
    y = y.reshape(c_out, n_batch, *geometry.out).transpose(1, 0, 2, 3)
    if bias is not None:
        y = y + bias.reshape(1, c_out, 1, 1)
    if residual is not None:
        y = y + residual
    if relu:
        y = xp.maximum(y, 0)
    return xp.ascontiguousarray(y)


@backend.register_reference("conv2d_backward")
def _conv2d_backward_reference(grad_output, x, weight, geometry, groups, needs_input_grad):
    """The textbook gradients, with ``G`` = grad_output as (C_out, N*OH*OW) per group::

        dx = col2im(W^T G)        dW = G cols^T        db = G summed over its columns

    Returns ``(dx, dW, db)``, None where ``needs_input_grad`` says no."""
    xp = get_array_module(grad_output)
    c_out = weight.shape[0]
    grad_y = grad_output.transpose(1, 0, 2, 3).reshape(groups, c_out // groups, -1)
    w = weight.reshape(groups, c_out // groups, -1)
    need_x, need_w, need_b = needs_input_grad
    grad_x = grad_w = grad_b = None
    if need_x:
        grad_cols = xp.matmul(w.transpose(0, 2, 1), grad_y).reshape(geometry.rows, -1)
        grad_x = _run_col2im(grad_cols, geometry)
    if need_w:
        cols = _run_im2col(x, geometry).reshape(groups, geometry.rows // groups, -1)
        grad_w = xp.matmul(grad_y, cols.transpose(0, 2, 1)).reshape(weight.shape)
    if need_b:
        grad_b = grad_y.sum(axis=2).reshape(c_out)
    return grad_x, grad_w, grad_b


def _run_im2col(x, geometry):
    xp = get_array_module(x)
    return backend.kernel("im2col", xp)(xp.ascontiguousarray(x), *geometry.kernel_args())


def _run_col2im(cols, geometry):
    xp = get_array_module(cols)
    return backend.kernel("col2im", xp)(xp.ascontiguousarray(cols), geometry.n_batch,
                                        geometry.channels, geometry.height, geometry.width,
                                        *geometry.kernel_args())


# ---------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------

class Im2col(Function):
    """cols = im2col(x): (N, C, H, W) -> (C*kh*kw, N*OH*OW), the GEMM layout.

    Linear, so ``dx = im2col^T(g) = col2im(g)``: every column entry came from one
    pixel (or from padding, which has no gradient) and sends its gradient back there.
    """

    def forward(self, x, *, geometry):
        self.geometry = geometry
        return _run_im2col(x, geometry)

    def backward(self, grad_cols):
        return Col2im.apply(grad_cols, geometry=self.geometry)


class Col2im(Function):
    """x = col2im(cols): (C*kh*kw, N*OH*OW) -> (N, C, H, W), summing overlaps.

    The adjoint of im2col, so its backward is im2col: ``dcols = im2col(g)``.
    """

    def forward(self, cols, *, geometry):
        expected = (geometry.rows, geometry.columns)
        if tuple(cols.shape) != expected:
            raise ValueError(f"col2im: columns of shape {tuple(cols.shape)} do not match the "
                             f"geometry, expected {expected}")
        self.geometry = geometry
        return _run_col2im(cols, geometry)

    def backward(self, grad_x):
        return Im2col.apply(grad_x, geometry=self.geometry)


class Conv2d(Function):
    """y = conv2d(x, w, b): ``Y = W cols + b`` with Y: (C_out, N*OH*OW), one GEMM per group.

    ``y[n, o] = sum_{c,i,j} w[o, c, i, j] x_pad[n, c, oh*s + i*d, ow*s + j*d] + b[o]``.
    Backward (``G = dL/dY``): ``dx = col2im(W^T G)``, ``dW = G cols^T``, ``db = G 1``. Only x
    and w are saved; cols is rebuilt in backward, trading one im2col for 9x less memory.

    ``backward`` is that derivation in Tensor ops and the :class:`Im2col`/:class:`Col2im`
    pair, so it is differentiable again; ``fast_backward`` (no graph recorded) and the
    forward call the ``conv2d_backward`` and ``conv2d_forward`` kernels, whose references
    are :func:`_conv2d_forward_reference` and :func:`_conv2d_backward_reference`.
    """

    def forward(self, x, weight, bias, *, geometry, groups):
        self.geometry, self.groups = geometry, groups
        self.save_for_backward(x, weight)
        forward = backend.kernel("conv2d_forward", get_array_module(x))
        return forward(x, weight, bias, geometry, groups)

    def backward(self, grad_output):
        x, weight = self.saved_tensors
        geometry, groups = self.geometry, self.groups
        n_batch, c_out = grad_output.shape[:2]
        plane = geometry.out[0] * geometry.out[1]
        # G in the GEMM layout: (groups, C_out/groups, N*L); one copy of the output size.
        lead = (groups,) if groups > 1 else ()
        grad_y = (grad_output.reshape(n_batch, c_out, plane).permute(1, 0, 2)
                  .reshape(lead + (c_out // groups, n_batch * plane)))
        w = weight.reshape(lead + (c_out // groups, -1))
        grad_x = grad_w = grad_b = None
        if self.needs_input_grad[0]:
            grad_cols = (w.transpose(-1, -2) @ grad_y).reshape(geometry.rows, geometry.columns)
            grad_x = Col2im.apply(grad_cols, geometry=geometry)
            del grad_cols
        if self.needs_input_grad[1]:
            cols = Im2col.apply(x, geometry=geometry).reshape(lead + (geometry.rows // groups, -1))
            grad_w = (grad_y @ cols.transpose(-1, -2)).reshape(weight.shape)
        if self.needs_input_grad[2]:
            grad_b = grad_y.sum(-1).reshape(c_out)
        return grad_x, grad_w, grad_b

    def fast_backward(self, grad_output):
        x, weight = self.saved_tensors
        return backend.kernel("conv2d_backward", get_array_module(grad_output))(
            grad_output, x.array, weight.array, self.geometry, self.groups, self.needs_input_grad)


# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------

def _same_padding(op, kernel, dilation, stride):
    """((top, bottom), (left, right)) for padding='same' (extra row/column at the end)."""
    if stride != (1, 1):
        raise ValueError(f"{op}: padding='same' is not supported for strided convolutions "
                         f"(stride {stride})")
    totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
    return tuple((t // 2, t - t // 2) for t in totals)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    input: (N, C_in, H, W) or unbatched (C_in, H, W); weight: (C_out, C_in/groups, kh, kw);
    bias: (C_out,) or None; stride, padding, dilation: int or (h, w) pair, and padding may
    also be ``"valid"`` (0) or ``"same"`` (stride 1 only; an odd total padding puts the
    extra row/column at the bottom/right, as PyTorch). groups: C_in and C_out must both
    be divisible by it (``groups == C_in`` is a depthwise convolution).
    Returns (N, C_out, OH, OW) (or (C_out, OH, OW)).

    Backward (``G = dL/dy`` as a (C_out, N*OH*OW) matrix): ``dx = col2im(W^T G)``,
    ``dW = G im2col(x)^T``, ``db = sum of G over N, OH, OW``.

    Differs from PyTorch: on the CPU, ungrouped 3x3 convolutions with stride 1, dilation 1
    and padding 0-2 run as Winograd F(4x4, 3x3) tiles (``winograd.py``), whose float32
    results differ from a direct convolution by about 1e-5 of their largest magnitude;
    ``TINYGRAD_CNN_WINOGRAD=0`` turns that off.
    """
    op = "conv2d"
    check_tensor(op, "input", input, floating=True)
    check_tensor(op, "weight", weight, floating=True)
    if weight.ndim != 4:
        raise ValueError(f"{op}: weight must be 4-D (C_out, C_in/groups, kh, kw), got shape "
                         f"{tuple(weight.shape)}")
    if input.ndim == 3:
        out = conv2d(input.unsqueeze(0), weight, bias, stride, padding, dilation, groups)
        return out.squeeze(0)
    if input.ndim != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C, H, W) or 3-D (C, H, W), got shape "
                         f"{tuple(input.shape)}")
    if not is_int(groups) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    groups = int(groups)
    c_in, c_out = input.shape[1], weight.shape[0]
    if c_in % groups or c_out % groups:
        raise ValueError(f"{op}: groups ({groups}) must divide both the input channels ({c_in}, "
                         f"input shape {tuple(input.shape)}) and the output channels ({c_out}, "
                         f"weight shape {tuple(weight.shape)})")
    if c_out == 0:
        # PyTorch refuses it too: a convolution must produce at least one channel.
        raise ValueError(f"{op}: weight of shape {tuple(weight.shape)} has 0 output channels; "
                         "expected at least 1")
    if weight.shape[1] * groups != c_in:
        raise ValueError(f"{op}: input has {c_in} channels (shape {tuple(input.shape)}) but weight "
                         f"of shape {tuple(weight.shape)} with groups={groups} expects "
                         f"{weight.shape[1] * groups} channels")
    if input.dtype != weight.dtype:
        raise TypeError(f"{op}: input dtype {input.dtype} and weight dtype {weight.dtype} differ")
    if bias is not None:
        check_tensor(op, "bias", bias, floating=True)
        if tuple(bias.shape) != (c_out,):
            raise ValueError(f"{op}: bias must have shape ({c_out},) to match weight of shape "
                             f"{tuple(weight.shape)}, got {tuple(bias.shape)}")
        if bias.dtype != input.dtype:
            raise TypeError(f"{op}: bias dtype {bias.dtype} differs from input dtype {input.dtype}")
    kernel = tuple(weight.shape[2:])
    if isinstance(padding, str):
        stride_pair = pair(op, "stride", stride, 1)
        dilation_pair = pair(op, "dilation", dilation, 1)
        if padding == "valid":
            padding = 0
        elif padding == "same":
            (top, bottom), (left, right) = _same_padding(op, kernel, dilation_pair, stride_pair)
            if (top, left) != (bottom, right):
                # The kernels pad symmetrically; the odd extra row/column is padded explicitly.
                input = _pad(input, (0, right - left, 0, bottom - top))
            padding = (top, left)
        else:
            raise ValueError(f"{op}: padding must be an int, a pair, 'valid' or 'same', "
                             f"got {padding!r}")
    geometry = WindowGeometry.build(op, input.shape, kernel, stride, padding, dilation)
    return Conv2d.apply(input, weight, bias, geometry=geometry, groups=groups)


def _unbatched(op, input, expected_batched_dims):
    if input.ndim == expected_batched_dims - 1:
        return input.unsqueeze(0), True
    if input.ndim != expected_batched_dims:
        raise ValueError(f"{op}: input must be {expected_batched_dims}-D (batched) or "
                         f"{expected_batched_dims - 1}-D (unbatched), got shape "
                         f"{tuple(input.shape)}")
    return input, False


def im2col(input, kernel_size, dilation=1, padding=0, stride=1):
    """Extract sliding windows: (N, C, H, W) -> (N, C*kh*kw, L) with L = OH*OW.

    Same as ``torch.nn.functional.unfold`` (an unbatched (C, H, W) input gives
    (C*kh*kw, L)). Row ``(c*kh + i)*kw + j`` holds channel c at kernel offset (i, j).
    The result is a view of the (C*kh*kw, N, L) GEMM layout the kernels produce.
    Backward: ``col2im`` of the gradient (im2col is linear and col2im is its adjoint).
    """
    op = "im2col"
    check_tensor(op, "input", input, floating=True)
    input, unbatched = _unbatched(op, input, 4)
    geometry = WindowGeometry.build(op, input.shape, kernel_size, stride, padding, dilation)
    cols = Im2col.apply(input, geometry=geometry)
    out = cols.reshape(geometry.rows, geometry.n_batch, -1).permute(1, 0, 2)
    return out.squeeze(0) if unbatched else out


def col2im(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """Sum sliding windows back into an image: (N, C*kh*kw, L) -> (N, C, H, W).

    Same as ``torch.nn.functional.fold``; ``output_size`` is (H, W). Overlapping
    windows add up, so ``col2im(im2col(x))`` is ``x`` times how many windows cover
    each pixel. It is the adjoint of im2col, whose backward it is, and vice versa.
    """
    op = "col2im"
    check_tensor(op, "input", input, floating=True)
    input, unbatched = _unbatched(op, input, 3)
    height, width = pair(op, "output_size", output_size, 1)
    kernel = pair(op, "kernel_size", kernel_size, 1)
    n_batch, rows, length = input.shape
    if rows % (kernel[0] * kernel[1]):
        raise ValueError(f"{op}: input of shape {tuple(input.shape)}: dimension 1 ({rows}) must be "
                         f"divisible by kh*kw = {kernel[0] * kernel[1]} (kernel_size {kernel})")
    channels = rows // (kernel[0] * kernel[1])
    geometry = WindowGeometry.build(op, (n_batch, channels, height, width), kernel, stride, padding,
                               dilation)
    if length != geometry.out[0] * geometry.out[1]:
        raise ValueError(f"{op}: input of shape {tuple(input.shape)} has {length} windows per image "
                         f"but output_size {(height, width)}, kernel_size {kernel}, stride "
                         f"{geometry.stride}, padding {geometry.padding} and dilation "
                         f"{geometry.dilation} give {geometry.out[0]}x{geometry.out[1]} = "
                         f"{geometry.out[0] * geometry.out[1]}")
    cols = input.permute(1, 0, 2).reshape(geometry.rows, geometry.columns)
    out = Col2im.apply(cols, geometry=geometry)
    return out.squeeze(0) if unbatched else out


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """PyTorch's name for :func:`im2col`: (N, C, H, W) -> (N, C*kh*kw, L)."""
    return im2col(input, kernel_size, dilation, padding, stride)


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """PyTorch's name for :func:`col2im`: (N, C*kh*kw, L) -> (N, C, H, W)."""
    return col2im(input, output_size, kernel_size, dilation, padding, stride)
