"""Argument checks and window geometry shared by the ops, the layers and the data transforms.

* :func:`check_tensor`: a Tensor argument (optionally None, optionally floating point).
* :func:`pair`: an int or an ``(h, w)`` pair of ints, each at least a minimum.
* :class:`WindowGeometry`: how a sliding window (a convolution's or a pooling's) maps an
  ``(N, C, H, W)`` input to its ``(OH, OW)`` output positions.

Every error names the op, the argument and the value, as the rest of the package does.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass

__all__ = ["PairError", "check_tensor", "pair", "output_length", "phase_grid_length", "WindowGeometry"]


class PairError(ValueError, TypeError):
    """A value that is neither an int nor a pair of ints: a wrong value and a wrong type at once
    (NumPy's ``AxisError`` is likewise both), so ``except ValueError`` and ``except TypeError``
    both catch it."""


def is_int(value) -> bool:
    """An integer (Python or NumPy), but not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_tensor(op: str, name: str, value, *, optional: bool = False, floating: bool = False):
    """Raise ``TypeError`` unless ``value`` is a Tensor (or None when ``optional``), with a
    floating dtype when ``floating``."""
    from .tensor import Tensor
    if value is None and optional:
        return
    if not isinstance(value, Tensor):
        allowed = "a Tensor or None" if optional else "a Tensor"
        raise TypeError(f"{op}: argument '{name}' must be {allowed}, got {type(value).__name__}")
    if floating and value.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must have a floating dtype, got {value.dtype}")


def pair(op: str, name: str, value, minimum: int = 0) -> tuple[int, int]:
    """An int, or a sequence of one or two ints, as an ``(h, w)`` tuple, each ``>= minimum``."""
    if is_int(value):
        result = (int(value), int(value))
    else:
        try:
            items = tuple(value)
        except TypeError:
            raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}") \
                from None
        if len(items) not in (1, 2) or not all(is_int(v) for v in items):
            raise PairError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
        result = (int(items[0]), int(items[-1]))
    if min(result) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return result


def output_length(size, kernel, stride, padding, dilation=1, ceil_mode=False) -> int:
    """Number of window positions along one axis (PyTorch's formula)::

        floor_or_ceil((size + 2*padding - dilation*(kernel - 1) - 1) / stride) + 1

    With ``ceil_mode`` (pooling only) the last window must start inside the image or the
    left padding."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def phase_grid_length(out, kernel, stride, dilation=1) -> int:
    """Positions along one axis of a *phase plane* (every ``stride``-th padded pixel) that
    the windows of a convolution read: ``out`` window starts plus the farthest tap's offset
    in plane units, ``dilation*(kernel - 1) // stride``. With stride 1 it is the padded size."""
    return out + dilation * (kernel - 1) // stride


@dataclass(frozen=True)
class WindowGeometry:
    """A sliding window over an ``(N, C, H, W)`` input: its size, stride, padding and
    dilation as ``(h, w)`` pairs, and the ``(OH, OW)`` output positions they give."""

    n_batch: int
    channels: int
    height: int
    width: int
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    out: tuple

    @classmethod
    def build(cls, op, input_shape, kernel_size, stride, padding, dilation, ceil_mode=False):
        """The geometry of a convolution or pooling of an input of ``input_shape``, with every
        argument checked; an empty output is an error naming the sizes."""
        n_batch, channels, height, width = (int(s) for s in input_shape)
        kernel = pair(op, "kernel_size", kernel_size, 1)
        stride = pair(op, "stride", stride, 1)
        padding = pair(op, "padding", padding, 0)
        dilation = pair(op, "dilation", dilation, 1)
        out = tuple(output_length(size, k, s, p, d, ceil_mode) for size, k, s, p, d in
                    zip((height, width), kernel, stride, padding, dilation))
        if min(out) <= 0:
            raise ValueError(
                f"{op}: output size {out} is not positive: input of shape {tuple(input_shape)} is "
                f"too small, spatial size {(height, width)} with padding {padding} is smaller than "
                f"the dilated kernel {tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel))} "
                f"(kernel_size {kernel}, dilation {dilation}, stride {stride})")
        return cls(n_batch, channels, height, width, kernel, stride, padding, dilation, out)

    @property
    def rows(self):
        """Rows of the column matrix: one per (channel, kernel row, kernel column)."""
        return self.channels * self.kernel[0] * self.kernel[1]

    @property
    def columns(self):
        """Columns of the column matrix: one per (image, output pixel)."""
        return self.n_batch * self.out[0] * self.out[1]

    @property
    def grid(self):
        """``(rows, columns)`` of one phase plane (:func:`phase_grid_length`): the output grid
        of the wide columns, whose last ``columns - OW`` columns straddle the right edge."""
        return tuple(phase_grid_length(o, k, s, d) for o, k, s, d in
                     zip(self.out, self.kernel, self.stride, self.dilation))

    @property
    def input_shape(self):
        return (self.n_batch, self.channels, self.height, self.width)

    def kernel_args(self):
        """The trailing arguments shared by the im2col and col2im kernels."""
        return (self.kernel[0], self.kernel[1], self.stride[0], self.stride[1], self.padding[0],
                self.padding[1], self.dilation[0], self.dilation[1], self.out[0], self.out[1])
