"""Weight initialisation (PyTorch's ``torch.nn.init``).

Every function fills ``tensor.array`` in place, records nothing for autograd, and returns the
tensor. Random values come from ``tinygrad_cnn.random.get_generator()`` (seeded by
``tinygrad_cnn.manual_seed``), or from ``generator=`` if given. They are drawn on the CPU in the
tensor's dtype (straight into its array when it lives there) and copied to the GPU if needed, so
a seed gives the same initial weights on the CPU and on the GPU.

Fan-in and fan-out of a weight of shape ``(out, in, *kernel)`` are
``fan_in = in * prod(kernel)`` and ``fan_out = out * prod(kernel)``.

* ``kaiming_*``  (He et al. 2015): ``std = gain / sqrt(fan)``; keeps the variance of
  activations (``mode="fan_in"``) or of gradients (``mode="fan_out"``) constant through ReLU nets.
* ``xavier_*`` (Glorot & Bengio 2010): ``std = gain * sqrt(2 / (fan_in + fan_out))``.
* A uniform distribution ``U(-b, b)`` has standard deviation ``b / sqrt(3)``, hence the
  ``sqrt(3)`` in the uniform variants.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backend
from .. import random as _random

__all__ = [
    "calculate_gain", "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_",
    "eye_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
    "reset_weight_and_bias_",
]

_LINEAR_FNS = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
               "conv_transpose3d")


def calculate_gain(nonlinearity: str, param=None) -> float:
    """The recommended gain for a nonlinearity (the factor that restores unit variance).

    ========================== ===================================
    linear, conv*, sigmoid      1
    tanh                        5/3
    relu                        sqrt(2)
    leaky_relu                  sqrt(2 / (1 + negative_slope^2))  (param, default 0.01)
    selu                        3/4
    ========================== ===================================
    """
    if nonlinearity in _LINEAR_FNS or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            negative_slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            negative_slope = float(param)
        else:
            raise ValueError(f"calculate_gain: negative_slope {param!r} is not a valid number")
        return math.sqrt(2.0 / (1 + negative_slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _generator(generator):
    return _random.get_generator() if generator is None else generator


def _fill(tensor, values, op: str):
    """Write ``values`` (a NumPy array or scalar) into ``tensor.array`` in place."""
    data = getattr(tensor, "array", None)
    if data is None or not hasattr(data, "shape"):
        raise TypeError(f"{op}: expected a Tensor, got {type(tensor).__name__}")
    if data.dtype.kind not in "fc" and op not in ("constant_", "zeros_", "ones_", "eye_"):
        raise TypeError(f"{op}: expected a floating point tensor, got dtype {data.dtype}")
    xp = backend.get_array_module(data)
    values = np.asarray(values)
    if xp is not np:
        values = xp.asarray(values)
    if getattr(getattr(data, "flags", None), "writeable", True):
        data[...] = values
    else:
        tensor.array = xp.array(xp.broadcast_to(values, data.shape), dtype=data.dtype)
    if hasattr(tensor, "_bump_version"):
        tensor._bump_version()
    return tensor


def _shape(tensor):
    return tuple(tensor.array.shape) if hasattr(tensor, "array") else tuple(tensor.shape)


def _calculate_fan_in_and_fan_out(tensor):
    shape = _shape(tensor)
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 "
                         f"dimensions (got shape {shape})")
    receptive_field = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive_field, shape[0] * receptive_field


def _calculate_correct_fan(tensor, mode: str) -> int:
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _sample_into(tensor, op: str, generator, draw_standard, scale: float, shift: float):
    """Fill ``tensor`` with ``scale * standard_sample + shift`` without a float64 temporary.

    float32/float64 NumPy arrays are filled in place by the generator (``out=``), which keeps the
    initialisation of a 100M-parameter layer within its own memory. Other dtypes and GPU arrays
    get a host array of the same dtype (float64 for float16), then a copy.
    """
    data = getattr(tensor, "array", None)
    if data is None or not hasattr(data, "shape"):
        raise TypeError(f"{op}: expected a Tensor, got {type(tensor).__name__}")
    if data.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating point tensor, got dtype {data.dtype}")
    rng = _generator(generator)
    sample_dtype = data.dtype if data.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    direct = (isinstance(data, np.ndarray) and data.dtype == sample_dtype and data.flags.c_contiguous
              and data.flags.writeable)
    host = data if direct else np.empty(data.shape, dtype=sample_dtype)
    if host.size:
        draw_standard(rng, host)
        host *= sample_dtype.type(scale)
        host += sample_dtype.type(shift)
    if not direct:
        _fill(tensor, host, op)
    return tensor


def uniform_(tensor, a: float = 0.0, b: float = 1.0, generator=None):
    """Fill with samples of ``U(a, b)``."""
    if not a <= b:
        raise ValueError(f"uniform_: expected a <= b, got a={a}, b={b}")
    return _sample_into(tensor, "uniform_", generator,
                        lambda rng, out: rng.random(out=out, dtype=out.dtype), b - a, a)


def normal_(tensor, mean: float = 0.0, std: float = 1.0, generator=None):
    """Fill with samples of ``N(mean, std^2)``."""
    if not std >= 0:
        raise ValueError(f"normal_: expected std >= 0, got {std}")
    return _sample_into(tensor, "normal_", generator,
                        lambda rng, out: rng.standard_normal(out=out, dtype=out.dtype), std, mean)


def trunc_normal_(tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0,
                  generator=None):
    """Fill with ``N(mean, std^2)`` conditioned on ``a <= x <= b`` (absolute bounds, as PyTorch).

    Rejection sampling: draws that fall outside ``[a, b]`` are drawn again.
    """
    if not a < b:
        raise ValueError(f"trunc_normal_: expected a < b, got a={a}, b={b}")
    if not std > 0:
        raise ValueError(f"trunc_normal_: expected std > 0, got {std}")

    def cdf(x):
        return 0.5 * (1 + math.erf((x - mean) / (std * math.sqrt(2))))

    if cdf(b) - cdf(a) < 1e-4:
        raise ValueError(f"trunc_normal_: the interval [{a}, {b}] holds less than 1e-4 of the "
                         f"probability of N({mean}, {std}^2); rejection sampling would not end")
    rng = _generator(generator)
    shape = _shape(tensor)
    values = rng.normal(mean, std, size=shape)
    flat = values.reshape(-1)
    outside = np.flatnonzero((flat < a) | (flat > b))
    while outside.size:
        flat[outside] = rng.normal(mean, std, size=outside.size)
        outside = outside[(flat[outside] < a) | (flat[outside] > b)]
    return _fill(tensor, values, "trunc_normal_")


def constant_(tensor, val: float):
    """Fill with the constant ``val``."""
    return _fill(tensor, val, "constant_")


def ones_(tensor):
    return _fill(tensor, 1, "ones_")


def zeros_(tensor):
    return _fill(tensor, 0, "zeros_")


def eye_(tensor):
    """Fill a 2-D tensor with the identity matrix (ones on the diagonal)."""
    shape = _shape(tensor)
    if len(shape) != 2:
        raise ValueError(f"eye_: only 2-D tensors are supported, got shape {shape}")
    return _fill(tensor, np.eye(*shape), "eye_")


def xavier_uniform_(tensor, gain: float = 1.0, generator=None):
    """``U(-b, b)`` with ``b = gain * sqrt(6 / (fan_in + fan_out))`` (Glorot uniform)."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain: float = 1.0, generator=None):
    """``N(0, std^2)`` with ``std = gain * sqrt(2 / (fan_in + fan_out))`` (Glorot normal)."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return normal_(tensor, 0.0, std, generator)


def kaiming_uniform_(tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     generator=None):
    """``U(-b, b)`` with ``b = gain * sqrt(3 / fan)``, ``gain = calculate_gain(nonlinearity, a)``.

    a: negative slope of the leaky ReLU that follows (only used with ``"leaky_relu"``).
    mode: ``"fan_in"`` (forward variance preserved) or ``"fan_out"`` (backward).
    PyTorch's default layer initialisation is ``kaiming_uniform_(w, a=sqrt(5))``, i.e.
    ``b = 1 / sqrt(fan_in)``.
    """
    if 0 in _shape(tensor):
        return tensor
    fan = _calculate_correct_fan(tensor, mode)
    gain = calculate_gain(nonlinearity, a)
    bound = math.sqrt(3.0) * gain / math.sqrt(fan)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    generator=None):
    """``N(0, std^2)`` with ``std = gain / sqrt(fan)`` (He normal; ResNets use ``mode="fan_out"``,
    ``nonlinearity="relu"``)."""
    if 0 in _shape(tensor):
        return tensor
    fan = _calculate_correct_fan(tensor, mode)
    std = calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return normal_(tensor, 0.0, std, generator)


def reset_weight_and_bias_(weight, bias, fan_in: int) -> None:
    """PyTorch's default initialisation of ``Linear`` and (transposed) convolution layers.

    ``weight`` by ``kaiming_uniform_(a=sqrt(5))``, which is ``U(-1/sqrt(f), 1/sqrt(f))`` for the
    weight's own fan-in ``f``; ``bias`` (if not None) from ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
    with the layer's ``fan_in`` (zeros when it is 0, where PyTorch leaves the memory as it was).
    """
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        uniform_(bias, -bound, bound)
