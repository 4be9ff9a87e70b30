"""The affine map of a fully connected layer: ``linear(input, weight, bias=None)``.

Where the kernels live: its products are the ``matmul_2d`` kernel, whose reference (below) is
``a @ b`` by NumPy's or CuPy's BLAS; the CPU's splits the rows over the worker pool
(``tinygrad_cnn/kernels/cpu/linear.py``).
"""
from __future__ import annotations

from ... import backend
from ..._arguments import check_tensor
from ...autograd import Function
from ...backend import get_array_module

__all__ = ["linear"]


def linear(input, weight, bias=None):
    """``y = input @ weight.T + bias`` over the last dimension.

    Shapes: ``input: (*, in_features)``, ``weight: (out_features, in_features)``,
    ``bias: (out_features,)`` -> ``(*, out_features)``. A 1-D ``weight: (in_features,)`` gives
    ``(*)`` (and then ``bias`` is a scalar ``()``), as in PyTorch.

    The leading dimensions are flattened so that the product is one 2-D GEMM. Backward, with
    ``g = dL/dy`` flattened to ``(M, out)`` and ``x`` to ``(M, in)``::

        dx = g @ W          dW = g.T @ x          db = g.sum(0)
    """
    check_tensor("linear", "input", input)
    check_tensor("linear", "weight", weight)
    check_tensor("linear", "bias", bias, optional=True)
    if input.ndim == 0:
        raise ValueError("linear: input must have at least 1 dimension (*, in_features), got a "
                         "0-d tensor")
    if weight.ndim not in (1, 2):
        raise ValueError(f"linear: weight must have shape (out_features, in_features) or "
                         f"(in_features,), got shape {weight.shape}")
    in_features = weight.shape[-1]
    if input.shape[-1] != in_features:
        raise ValueError(f"linear: input shape {input.shape} and weight shape {weight.shape} do "
                         f"not match: the last dimension of input ({input.shape[-1]}) must equal "
                         f"in_features ({in_features})")
    out_shape = input.shape[:-1] + weight.shape[:-1]
    if bias is not None and bias.shape != weight.shape[:-1]:
        raise ValueError(f"linear: bias shape {bias.shape} does not match weight shape "
                         f"{weight.shape}: expected {weight.shape[:-1]}")
    rows = input.reshape(-1, in_features)
    if weight.ndim == 2 and rows.dtype == weight.dtype and (bias is None or bias.dtype == weight.dtype):
        return _Linear.apply(rows, weight, bias).reshape(out_shape)
    # A 1-D weight, or dtypes to promote: the generic matmul (which promotes as PyTorch does).
    if weight.ndim == 2:
        output = rows @ weight.transpose(0, 1)
    else:
        output = rows @ weight.reshape(in_features, 1)
    if bias is not None:
        output = output + bias
    return output.reshape(out_shape)


class _Linear(Function):
    """y = x W^T + b for x (M, in), W (out, in), b (out,) or None.

    ``dx = g W``, ``dW = g^T x``, ``db = sum over rows of g``: each gradient is one GEMM whose
    operands BLAS reads as they are stored (``W^T`` and ``g^T`` are views it reads transposed), and
    ``dW`` comes out in W's own (out, in) layout. Built from the generic matmul and transpose ops,
    ``dW`` arrived as a transposed view, and storing it as the parameter's ``.grad`` copied it
    element by element: about 0.2 s for a 4096 x 9216 layer, more than the three GEMMs together.
    """

    def forward(self, x, weight, bias):
        self.save_for_backward(x, weight)
        out = _product(x, weight.T)
        if bias is not None:
            out += bias
        return out

    def backward(self, grad_output):
        x, weight = self.saved_tensors
        need_x, need_w, need_b = self.needs_input_grad
        return (grad_output @ weight if need_x else None,
                grad_output.transpose(0, 1) @ x if need_w else None,
                grad_output.sum(0) if need_b else None)

    def fast_backward(self, grad_output):
        x, weight = (t.array for t in self.saved_tensors)
        need_x, need_w, need_b = self.needs_input_grad
        return (_product(grad_output, weight) if need_x else None,
                _product(grad_output.T, x) if need_w else None,
                grad_output.sum(axis=0) if need_b else None)


@backend.register_reference("matmul_2d")
def _matmul_2d_reference(a, b):
    """(M, K) @ (K, N) -> (M, N), a new C-contiguous array."""
    return get_array_module(a).ascontiguousarray(a @ b)


def _product(a, b):
    """``a @ b`` as a C-contiguous array, computed as ``(b^T a^T)^T`` when it has a few rows (a
    batch) and many more columns. BLAS splits a GEMM along its rows: a batch of 16 against a
    4096 x 9216 weight ran 2-5x slower as (16 x 9216)(9216 x 4096) than as its transpose (2 cores,
    docs/performance.md). The transposed result is copied back to rows, which is cheap only while
    it is small, so weight gradients (thousands of rows) take the direct product."""
    xp = get_array_module(a)
    matmul = backend.kernel("matmul_2d", xp)
    rows, columns = a.shape[0], b.shape[1]
    if rows <= _FEW_ROWS and rows < columns:
        return xp.ascontiguousarray(matmul(b.T, a.T).T)
    return matmul(a, b)


_FEW_ROWS = 256
