"""Transposed convolution (a "deconvolution", a learnable up-sampling).

Shapes (PyTorch's conventions)::

    input  x: (N, C_in, H, W)             weight w: (C_in, C_out / groups, kh, kw)
    bias   b: (C_out,)                    output y: (N, C_out, OH, OW)
    OH = (H - 1)*stride - 2*padding + dilation*(kh - 1) + output_padding + 1   (same for OW)

Note the weight layout: input channels first, the transpose of conv2d's
``(C_out, C_in / groups, kh, kw)``. A ``conv_transpose2d`` with weight ``w`` is
exactly the transpose (adjoint) of the ``conv2d`` with the same ``w``, stride,
padding, dilation and groups that maps an (N, C_out, OH, OW) image to (N, C_in, H, W).

The fact that makes it beautiful. Write that convolution as ``Y = W cols(z)``
(im2col + GEMM, see ``conv.py``). Its input gradient is ``dL/dz = col2im(W^T G)``.
The transposed convolution *is* that map applied to x::

    forward:   y  = col2im(W^T X)        X = x as (C_in, N*H*W), W as (C_in, C_out*kh*kw) per group
    backward:  dx = W im2col(G)  = conv2d(G, w, stride, padding, dilation, groups)
               dW = X im2col(G)^T         (a correlation of G's columns with x)
               db = G summed over N, OH, OW

so its forward is convolution's backward and its backward is a convolution
(``tests/nn/functional/test_conv_transpose.py`` checks both identities).

``output_padding`` only resolves the ambiguity of a strided convolution, which
maps several input sizes to one output size: it adds rows/columns at the bottom
and right that receive no contribution but the bias. PyTorch requires it to be
smaller than the stride or the dilation.

The hot loops are the ``"col2im"`` and ``"im2col"`` kernels (:mod:`tinygrad_cnn.backend`)
and one GEMM; the backward goes through ``conv2d``'s own fast path.

Where the kernels live: none of its own. The forward and the weight gradient call the
convolution's ``col2im`` and ``im2col`` through ``backend.kernel`` (NumPy references in
``tinygrad_cnn/nn/functional/conv.py``, Numba in ``tinygrad_cnn/kernels/cpu/conv.py``, CUDA in
``tinygrad_cnn/kernels/cuda/conv.py``) and BLAS GEMMs; the input gradient is ``conv2d``.
"""
from __future__ import annotations


from ... import backend
from ...autograd import Function
from ...backend import get_array_module
from ...tensor import Tensor, cat
from .conv import conv2d, unfold
from ..._arguments import is_int, pair

__all__ = ["conv_transpose2d", "conv_transpose2d_output_size"]


def conv_transpose2d_output_size(size, kernel_size, stride=1, padding=0, output_padding=0,
                                 dilation=1):
    """(OH, OW) of a transposed convolution of an input with spatial ``size`` (H, W):
    ``(H - 1)*stride - 2*padding + dilation*(k - 1) + output_padding + 1``."""
    op = "conv_transpose2d_output_size"
    size = pair(op, "size", size, 0)
    kernel = pair(op, "kernel_size", kernel_size, 1)
    stride = pair(op, "stride", stride, 1)
    padding = pair(op, "padding", padding, 0)
    output_padding = pair(op, "output_padding", output_padding, 0)
    dilation = pair(op, "dilation", dilation, 1)
    return tuple((s - 1) * st - 2 * p + d * (k - 1) + op_ + 1 for s, k, st, p, op_, d in
                 zip(size, kernel, stride, padding, output_padding, dilation))


class ConvTranspose2d(Function):
    """y = conv_transpose2d(x, w, b) = col2im(W^T X) + b.

    x: (N, C_in, H, W); w: (C_in, C_out/groups, kh, kw); b: (C_out,) or None;
    y: (N, C_out, OH, OW). ``kernel_args`` are the trailing arguments of the col2im
    kernel (kernel, stride, padding, dilation, and (H, W) as its window grid);
    ``conv_args`` the (stride, padding, dilation) pairs of the convolution in backward.
    Backward: ``dx = conv2d(G, w)`` (same stride, padding, dilation, groups),
    ``dW = X im2col(G)^T`` per group, ``db = sum of G``. Built from differentiable
    Tensor operations, so second derivatives come with it.
    """

    def forward(self, x, weight, bias, *, out_size, kernel_args, conv_args, groups):
        xp = get_array_module(x)
        self.save_for_backward(x, weight)
        self.kernel_args, self.conv_args, self.groups = kernel_args, conv_args, groups
        n_batch, c_in, height, width = x.shape
        c_out_per_group, kh, kw = weight.shape[1:]
        c_out = c_out_per_group * groups
        # X: (C_in, N*H*W); W: (C_in, C_out/groups*kh*kw); per group a block of rows of each.
        x_gemm = x.reshape(n_batch, c_in, height * width).transpose(1, 0, 2)
        x_gemm = x_gemm.reshape(c_in, n_batch * height * width)
        w_gemm = weight.reshape(c_in, c_out_per_group * kh * kw)
        # W^T X per group: the columns a convolution's input gradient would fold back. One 2-D
        # GEMM per group (a stacked matmul is not handed to BLAS by NumPy: 25x slower here).
        rows_in, rows_out = c_in // groups, c_out_per_group * kh * kw
        cols = xp.empty((c_out * kh * kw, n_batch * height * width), dtype=x.dtype)
        for g in range(groups):
            cols[g * rows_out:(g + 1) * rows_out] = (w_gemm[g * rows_in:(g + 1) * rows_in].T
                                                     @ x_gemm[g * rows_in:(g + 1) * rows_in])
        out = backend.kernel("col2im", xp)(xp.ascontiguousarray(cols), n_batch, c_out,
                                           out_size[0], out_size[1], *kernel_args)
        if bias is not None:
            out += bias.reshape(1, c_out, 1, 1)
        return out

    def backward(self, grad_output):
        x, weight = self.saved_tensors
        stride, padding, dilation = self.conv_args
        groups = self.groups
        need_x, need_w, need_b = self.needs_input_grad
        grad_x = grad_w = grad_b = None
        n_batch, c_in, height, width = x.shape
        if need_x:
            # The adjoint of col2im(W^T .) is W im2col(.): a plain convolution. (With an
            # output_padding >= stride it has windows past (H, W), which are dropped.)
            grad_x = conv2d(grad_output, weight, None, stride, padding, dilation, groups)
            if tuple(grad_x.shape[2:]) != (height, width):
                grad_x = grad_x[:, :, :height, :width]
        if need_w:
            c_out_per_group, kh, kw = weight.shape[1:]
            # im2col(G): (N, C_out*kh*kw, L), one column per window, the first H*W of which
            # are those of the input pixels.
            grad_cols = unfold(grad_output, (kh, kw), dilation, padding, stride)
            if grad_cols.shape[2] != height * width:
                rows = c_out_per_group * groups * kh * kw
                grid = (grad_output.shape[2] + 2 * padding[0] - dilation[0] * (kh - 1) - 1) \
                    // stride[0] + 1
                grad_cols = grad_cols.reshape(n_batch, rows, grid, -1)[:, :, :height, :width]
            # dW_g = X_g im2col(G)_g^T: (C_in/groups, N*H*W) @ (N*H*W, C_out/groups*kh*kw).
            k_group = c_out_per_group * kh * kw
            grad_cols = (grad_cols.reshape(n_batch, groups * k_group, height * width)
                         .permute(0, 2, 1).reshape(n_batch * height * width, groups * k_group))
            x_gemm = (x.reshape(n_batch, c_in, height * width).permute(1, 0, 2)
                      .reshape(c_in, n_batch * height * width))
            rows_in = c_in // groups
            blocks = [x_gemm[g * rows_in:(g + 1) * rows_in] @ grad_cols[:, g * k_group:(g + 1) * k_group]
                      for g in range(groups)]
            grad_w = (blocks[0] if groups == 1 else cat(blocks, 0)).reshape(weight.shape)
        if need_b:
            grad_b = grad_output.sum((0, 2, 3))
        return grad_x, grad_w, grad_b


def _check_tensor(op, name, value):
    if not isinstance(value, Tensor):
        raise TypeError(f"{op}: {name} must be a Tensor, got {type(value).__name__}")
    if value.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must have a floating dtype, got {value.dtype}")


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1):
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    input: (N, C_in, H, W) or unbatched (C_in, H, W); weight: (C_in, C_out/groups, kh, kw);
    bias: (C_out,) or None; stride, padding, output_padding, dilation: int or (h, w) pair;
    groups divides C_in and C_out. ``output_padding`` must be smaller than the stride or the
    dilation (per axis). Returns (N, C_out, OH, OW) (or (C_out, OH, OW)) with
    ``OH = (H - 1)*stride - 2*padding + dilation*(kh - 1) + output_padding + 1``.

    Forward: ``col2im(W^T X)``, the input gradient of ``conv2d(., weight)``.
    Backward: ``dx = conv2d(G, weight, stride, padding, dilation, groups)``,
    ``dW = X im2col(G)^T``, ``db = sum of G over N, OH, OW``.
    """
    op = "conv_transpose2d"
    _check_tensor(op, "input", input)
    _check_tensor(op, "weight", weight)
    if weight.ndim != 4:
        raise ValueError(f"{op}: weight must be 4-D (C_in, C_out/groups, kh, kw), got shape "
                         f"{tuple(weight.shape)}")
    if input.ndim == 3:
        out = conv_transpose2d(input.unsqueeze(0), weight, bias, stride, padding, output_padding,
                               groups, dilation)
        return out.squeeze(0)
    if input.ndim != 4:
        raise ValueError(f"{op}: input must be 4-D (N, C_in, H, W) or 3-D (C_in, H, W), got shape "
                         f"{tuple(input.shape)}")
    if not is_int(groups) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    groups = int(groups)
    c_in = input.shape[1]
    if weight.shape[0] != c_in:
        raise ValueError(f"{op}: input has {c_in} channels (shape {tuple(input.shape)}) but weight "
                         f"of shape {tuple(weight.shape)} expects {weight.shape[0]} "
                         f"(the weight is (C_in, C_out/groups, kh, kw))")
    if c_in % groups:
        raise ValueError(f"{op}: groups ({groups}) must divide the input channels ({c_in}, input "
                         f"shape {tuple(input.shape)})")
    c_out = weight.shape[1] * groups
    if input.dtype != weight.dtype:
        raise TypeError(f"{op}: input dtype {input.dtype} and weight dtype {weight.dtype} differ")
    if bias is not None:
        _check_tensor(op, "bias", bias)
        if tuple(bias.shape) != (c_out,):
            raise ValueError(f"{op}: bias must have shape ({c_out},) to match weight of shape "
                             f"{tuple(weight.shape)} with groups={groups}, got {tuple(bias.shape)}")
        if bias.dtype != input.dtype:
            raise TypeError(f"{op}: bias dtype {bias.dtype} differs from input dtype {input.dtype}")
    kernel = tuple(int(k) for k in weight.shape[2:])
    stride = pair(op, "stride", stride, 1)
    padding = pair(op, "padding", padding, 0)
    output_padding = pair(op, "output_padding", output_padding, 0)
    dilation = pair(op, "dilation", dilation, 1)
    if any(o >= max(s, d) for o, s, d in zip(output_padding, stride, dilation)):
        raise ValueError(f"{op}: output_padding {output_padding} must be smaller than either "
                         f"stride {stride} or dilation {dilation}")
    in_size = tuple(int(s) for s in input.shape[2:])
    out_size = conv_transpose2d_output_size(in_size, kernel, stride, padding, output_padding,
                                            dilation)
    if min(out_size) <= 0:
        raise ValueError(f"{op}: output size {out_size} is not positive: input spatial size "
                         f"{in_size}, kernel_size {kernel}, stride {stride}, padding {padding}, "
                         f"output_padding {output_padding}, dilation {dilation}")
    # The col2im kernel folds (C_out*kh*kw, N*H*W) columns into (OH, OW) images; its window
    # grid is the input's (H, W), which the convolution of an (OH, OW) image would produce.
    kernel_args = (kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1],
                   dilation[0], dilation[1], in_size[0], in_size[1])
    return ConvTranspose2d.apply(input, weight, bias, out_size=out_size, kernel_args=kernel_args,
                                 conv_args=(stride, padding, dilation), groups=groups)
