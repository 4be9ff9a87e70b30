"""Gradient clipping (``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_``).

Both act in place on ``p.grad`` of the given parameters, between ``loss.backward()`` and
``optimizer.step()``, on NumPy or CuPy arrays alike.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend

__all__ = ["clip_grad_norm_", "clip_grad_value_", "get_total_norm", "clip_grads_with_norm_"]


def _tensor_class():
    from .. import Tensor
    return Tensor


def _as_tensor_list(parameters, op: str) -> list:
    Tensor = _tensor_class()
    if isinstance(parameters, Tensor):
        return [parameters]
    try:
        items = list(parameters)
    except TypeError:
        raise TypeError(f"{op}: parameters must be a Tensor or an iterable of Tensors, got "
                        f"{type(parameters).__name__}") from None
    for i, p in enumerate(items):
        if not isinstance(p, Tensor):
            raise TypeError(f"{op}: parameters[{i}] is a {type(p).__name__}, expected a Tensor")
    return items


def _unique_grad_arrays(grads) -> list:
    """The distinct gradient arrays: one array shared by two parameters is scaled only once."""
    seen, unique = set(), []
    for g in grads:
        if id(g.array) not in seen:
            seen.add(id(g.array))
            unique.append(g.array)
    return unique


def _norm_of(array, norm_type: float):
    """Vector ``norm_type``-norm of all elements of ``array`` as a 0-d array (same module and dtype)."""
    xp = backend.get_array_module(array)
    magnitude = xp.abs(array)
    if array.size == 0:
        return xp.zeros((), dtype=array.dtype)
    if norm_type == math.inf:
        return magnitude.max()
    if norm_type == -math.inf:
        return magnitude.min()
    if norm_type == 0:
        return xp.asarray(xp.count_nonzero(array), dtype=array.dtype)
    if norm_type == 1:
        return magnitude.sum()
    if norm_type == 2:
        return xp.sqrt((magnitude * magnitude).sum())
    return (magnitude ** norm_type).sum() ** (1.0 / norm_type)


def _parse_norm_type(norm_type, op: str) -> float:
    try:
        value = float(norm_type)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: norm_type must be a number or 'inf', got {norm_type!r}") from None
    if math.isnan(value):
        raise ValueError(f"{op}: norm_type must not be NaN")
    return value


def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite: bool = False, foreach=None):
    """The ``norm_type``-norm of all elements of ``tensors`` together, as a 0-d Tensor.

    tensors: a Tensor or an iterable of Tensors of any shapes (all on one device).
    Computed as the norm of the vector of per-tensor norms, which equals the norm of the
    concatenation (for p = inf: the largest absolute value). ``foreach`` is accepted for
    PyTorch compatibility and ignored.
    """
    op = "get_total_norm"
    norm_type = _parse_norm_type(norm_type, op)
    tensors = _as_tensor_list(tensors, op)
    Tensor = _tensor_class()
    if len(tensors) == 0:
        return Tensor(np.zeros((), dtype=np.float32))
    arrays = [t.array for t in tensors]
    xp = backend.get_array_module(arrays[0])
    if any(backend.get_array_module(a) is not xp for a in arrays):
        raise ValueError(f"{op}: all tensors must be on the same device")
    dtype = np.result_type(*[a.dtype for a in arrays])
    norms = xp.stack([_norm_of(a, norm_type).astype(dtype) for a in arrays])
    total = _norm_of(norms, norm_type)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise RuntimeError(f"{op}: the total norm of order {norm_type} of the gradients is non-finite "
                           f"({float(total)}), so it cannot be clipped. Pass error_if_nonfinite=False "
                           "to scale the gradients by it anyway.")
    return Tensor(total)


def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None) -> None:
    """Scale the gradients of ``parameters`` by ``min(1, max_norm / (total_norm + 1e-6))`` in place.

    ``total_norm`` is a number or a 0-d Tensor (e.g. from :func:`get_total_norm`).
    """
    op = "clip_grads_with_norm_"
    max_norm = float(max_norm)
    if not max_norm >= 0:
        raise ValueError(f"{op}: max_norm must be >= 0, got {max_norm}")
    parameters = _as_tensor_list(parameters, op)
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    total = getattr(total_norm, "array", total_norm)
    if not hasattr(total, "dtype"):
        total = float(total)
    for array in _unique_grad_arrays(grads):
        xp = backend.get_array_module(array)
        if isinstance(total, float):
            coef = min(max_norm / (total + 1e-6), 1.0) if not math.isnan(total) else math.nan
        else:
            coef = xp.minimum(max_norm / (xp.asarray(total) + 1e-6), 1.0).astype(array.dtype)
        # Multiply even when coef == 1 (exact), so non-finite norms propagate as in PyTorch
        # (inf * 0 -> nan is intended there, hence no warning).
        with np.errstate(invalid="ignore"):
            array *= coef


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite: bool = False, foreach=None):
    """Rescale gradients so that their joint ``norm_type``-norm is at most ``max_norm``; in place.

    parameters: a Tensor or an iterable of Tensors; those with ``grad is None`` are ignored.
    max_norm: the allowed norm (>= 0).
    norm_type: p of the p-norm; ``float("inf")`` or ``"inf"`` for the max-norm. Default 2.
    error_if_nonfinite: raise ``RuntimeError`` if the total norm is NaN or +-inf (default False:
        the gradients are then multiplied by a NaN/0 coefficient, as in PyTorch).

    With ``total = ||(||g_1||_p, ..., ||g_n||_p)||_p`` every gradient is multiplied by
    ``min(1, max_norm / (total + 1e-6))``. Returns ``total`` (before clipping) as a 0-d Tensor,
    useful for logging. A gradient array shared by several parameters is scaled once.
    """
    op = "clip_grad_norm_"
    max_norm = float(max_norm)
    if not max_norm >= 0:
        raise ValueError(f"{op}: max_norm must be >= 0, got {max_norm}")
    norm_type = _parse_norm_type(norm_type, op)
    parameters = _as_tensor_list(parameters, op)
    grads = [p.grad for p in parameters if p.grad is not None]
    Tensor = _tensor_class()
    if not grads:
        return Tensor(np.zeros((), dtype=np.float32))
    try:
        total_norm = get_total_norm(grads, norm_type, error_if_nonfinite)
    except RuntimeError as error:
        raise RuntimeError(str(error).replace("get_total_norm", op)) from None
    except ValueError as error:
        raise ValueError(str(error).replace("get_total_norm", op)) from None
    clip_grads_with_norm_(parameters, max_norm, total_norm)
    return total_norm


def clip_grad_value_(parameters, clip_value, foreach=None) -> None:
    """Clamp every gradient element into ``[-clip_value, clip_value]`` in place.

    parameters: a Tensor or an iterable of Tensors; those with ``grad is None`` are ignored.
    clip_value: the bound (>= 0).
    """
    op = "clip_grad_value_"
    clip_value = float(clip_value)
    if not clip_value >= 0:
        raise ValueError(f"{op}: clip_value must be >= 0, got {clip_value}")
    parameters = _as_tensor_list(parameters, op)
    for array in _unique_grad_arrays([p.grad for p in parameters if p.grad is not None]):
        xp = backend.get_array_module(array)
        xp.clip(array, -clip_value, clip_value, out=array)
