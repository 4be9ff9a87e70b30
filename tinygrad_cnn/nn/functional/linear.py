"""The affine map of a fully connected layer: ``linear(input, weight, bias=None)``.

Where the kernels live: nowhere else; it is one matrix product run by NumPy's or CuPy's BLAS.
"""
from __future__ import annotations

from ..._arguments import check_tensor

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
    if weight.ndim == 2:
        output = rows @ weight.transpose(0, 1)
    else:
        output = rows @ weight.reshape(in_features, 1)
    if bias is not None:
        output = output + bias
    return output.reshape(out_shape)
