"""Normalisation layers: ``BatchNorm1d``, ``BatchNorm2d``, ``LayerNorm``, ``LocalResponseNorm``."""
from __future__ import annotations

import numpy as np

from ... import backend
from ..._arguments import WindowGeometry
from ...autograd import is_grad_enabled
from ...backend import get_array_module
from ...tensor import Tensor
from .. import functional as F
from .. import init
from ..functional.normalization import checked_normalized_shape
from ..parameter import Parameter
from .module import Module

__all__ = ["BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm", "LocalResponseNorm"]


class _BatchNorm(Module):
    """Shared code of BatchNorm1d/2d (PyTorch's ``_BatchNorm``).

    Parameters: ``weight`` (gamma, ones) and ``bias`` (beta, zeros), shape (C,), if ``affine``
    (``bias=False``, keyword only as in PyTorch 2.x, drops beta).
    Buffers: ``running_mean`` (zeros), ``running_var`` (ones), shape (C,), and
    ``num_batches_tracked`` (0-d int64), if ``track_running_stats``.

    Training: normalise with the batch mean and the *biased* batch variance, then update
    ``running = (1 - momentum) * running + momentum * batch_stat`` with the *unbiased* variance.
    ``momentum=None`` uses the cumulative average (factor ``1 / num_batches_tracked``).
    Evaluation: normalise with the running statistics (and do not change them).

    Differences from PyTorch: a batch that ``batch_norm`` rejects (one value per channel in
    training) leaves ``num_batches_tracked`` unchanged (PyTorch has already counted it);
    ``dtype`` is a NumPy dtype.
    """

    _expected_dims: tuple = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum=0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None, *, bias: bool = True):
        super().__init__()
        if not isinstance(num_features, (int, np.integer)) or num_features <= 0:
            raise ValueError(f"{type(self).__name__}: num_features must be a positive integer, "
                             f"got {num_features!r}")
        self.num_features = int(num_features)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        if affine:
            self.weight = Parameter(np.empty((self.num_features,), dtype=dtype))
            if bias:
                self.bias = Parameter(np.empty((self.num_features,), dtype=dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros((self.num_features,), dtype=dtype)))
            self.register_buffer("running_var", Tensor(np.ones((self.num_features,), dtype=dtype)))
            self.register_buffer("num_batches_tracked", Tensor(np.array(0, dtype=np.int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()
        if device is not None:
            self.to(device)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.array[...] = 0
            self.running_var.array[...] = 1
            self.num_batches_tracked.array[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def _fill_missing_state(self, state_dict, key, name) -> bool:
        # As PyTorch does for checkpoints without version metadata: a missing counter is 0.
        if name == "num_batches_tracked":
            self.num_batches_tracked.array[...] = 0
            return True
        return False

    def _check_input_dim(self, input) -> None:
        if input.ndim not in self._expected_dims:
            wanted = " or ".join(f"{d}D" for d in self._expected_dims)
            raise ValueError(f"{type(self).__name__}: expected {wanted} input (got {input.ndim}D "
                             f"input of shape {tuple(input.shape)})")
        if input.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: expected {self.num_features} channels "
                             f"(num_features) in dimension 1, got input of shape {tuple(input.shape)}")

    def forward(self, input):
        return self._normalise(input)

    def _normalise(self, input, residual=None, relu=False):
        """``batch_norm(input)``, or ``relu(batch_norm(input) + residual)`` fused when ``relu``."""
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        counting = self.training and self.track_running_stats and self.num_batches_tracked is not None
        if counting and self.momentum is None:
            factor = 1.0 / (float(self.num_batches_tracked.array) + 1)   # cumulative average
        # Batch statistics are used in training, and also in eval if there are no running ones.
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        arguments = (input, self.running_mean if track else None,
                     self.running_var if track else None, self.weight, self.bias,
                     use_batch_stats, factor, self.eps)
        output = (F.batch_norm_relu(*arguments, residual=residual) if relu
                  else F.batch_norm(*arguments))
        if counting:
            # Counted only after batch_norm accepted the input: a rejected batch changes nothing.
            self.num_batches_tracked.array += 1
        return output

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


def batch_norm_relu_of_modules(bn, relu, input, residual=None):
    """``relu(bn(input) + residual)`` (residual None: ``relu(bn(input))``) for a BatchNorm module
    ``bn`` and an activation module ``relu``, the tail of most convolution blocks.

    When nothing could tell the difference, it runs as one fused op
    (:func:`tinygrad_cnn.nn.functional.batch_norm_relu`: fewer passes over the activations,
    forward and backward): ``bn`` is exactly a ``BatchNorm1d``/``BatchNorm2d``, ``relu`` exactly
    a ``ReLU``, and neither has forward hooks. Otherwise (``SyncBatchNorm``, a replaced
    activation, a hook that inspects or changes an output) the modules run one by one, as
    written. The models of ``tinygrad_cnn.models`` end their blocks with it."""
    if _fusable_tail(bn, relu):
        return bn._normalise(input, residual, relu=True)
    out = bn(input)
    return relu(out if residual is None else out + residual)


def _fusable_tail(bn, relu):
    """bn exactly a BatchNorm1d/2d, relu exactly a ReLU, neither with forward hooks."""
    from .activation import ReLU
    return (type(bn) in (BatchNorm1d, BatchNorm2d) and type(relu) is ReLU
            and not _hooked(bn) and not _hooked(relu))


def _hooked(module):
    return bool(module._forward_hooks or module._forward_pre_hooks)


def conv_bn_relu_of_modules(conv, bn, relu, input, residual=None):
    """``relu(bn(conv(input)) + residual)`` (residual None: ``relu(bn(conv(input)))``) for a
    Conv2d, a BatchNorm2d and a ReLU module: a convolution block.

    In inference (``bn`` in eval mode and no graph being recorded: ``no_grad``, or nothing
    involved requires a gradient), BatchNorm is an affine map per channel, so it is folded
    into the convolution, ``W' = W * s``, ``b' = (b - running_mean) * s + beta`` with
    ``s = gamma / sqrt(running_var + eps)``, and the convolution adds the residual and applies
    the ReLU as it writes its output (the epilogue of the ``conv2d_forward`` kernel): one pass
    over the activations where the modules make two. The values equal the modules' up to
    float rounding (the folded product rounds differently, about 1e-6 relative in float32).
    Folded only when nothing could tell: exactly these module types, zero padding, no hooks,
    matching shapes and dtypes. Otherwise the convolution runs as a module and the rest goes
    through :func:`batch_norm_relu_of_modules`."""
    geometry = _foldable(conv, bn, relu, input, residual)
    if geometry is not None:
        return _folded_conv_bn_relu(conv, bn, input, residual, geometry)
    return batch_norm_relu_of_modules(bn, relu, conv(input), residual)


def _foldable(conv, bn, relu, input, residual):
    """The convolution's WindowGeometry when the block can be folded, else None."""
    from .conv import Conv2d
    if not (type(conv) is Conv2d and type(bn) is BatchNorm2d and _fusable_tail(bn, relu)):
        return None
    if _hooked(conv) or bn.training or bn.running_mean is None or bn.running_var is None:
        return None
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    if not isinstance(input, Tensor) or input.ndim != 4 or input.shape[1] != conv.in_channels:
        return None
    tensors = [t for t in (input, residual, conv.weight, conv.bias, bn.weight, bn.bias,
                           bn.running_mean, bn.running_var) if t is not None]
    if is_grad_enabled() and any(t.requires_grad for t in tensors):
        return None
    if any(t.dtype != input.dtype or t.device != input.device for t in tensors):
        return None
    geometry = WindowGeometry.build("conv2d", tuple(input.shape), conv.kernel_size, conv.stride,
                                    conv.padding, conv.dilation)
    out_shape = (input.shape[0], conv.out_channels) + geometry.out
    if residual is not None and tuple(residual.shape) != out_shape:
        return None                     # the modules will say what is wrong
    return geometry


def _folded_conv_bn_relu(conv, bn, input, residual, geometry):
    x = input.array
    xp = get_array_module(x)
    # Folded in float64, rounded once to the data's dtype.
    scale = xp.asarray(bn.running_var.array, dtype=xp.float64) + bn.eps
    scale = 1.0 / xp.sqrt(scale)
    if bn.weight is not None:
        scale = scale * bn.weight.array
    shift = -xp.asarray(bn.running_mean.array, dtype=xp.float64)
    if conv.bias is not None:
        shift = shift + conv.bias.array
    shift = shift * scale
    if bn.bias is not None:
        shift = shift + bn.bias.array
    weight = (conv.weight.array * scale.reshape(-1, 1, 1, 1)).astype(x.dtype)
    forward = backend.kernel("conv2d_forward", xp)
    y = forward(x, weight, shift.astype(x.dtype), geometry, conv.groups,
                residual=None if residual is None else residual.array, relu=True)
    return Tensor._wrap(y)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) inputs, statistics per channel C.

    input: (N, C) or (N, C, L) -> output: same shape; statistics over N (and L).
    Parameters and buffers: (C,) each, ``num_batches_tracked`` 0-d int64 (see ``_BatchNorm``).
    Same semantics as PyTorch (the one difference is listed in ``_BatchNorm``).
    """

    _expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) inputs, statistics per channel over N, H, W.

    input: (N, C, H, W) -> output: same shape. Parameters and buffers: (C,) each,
    ``num_batches_tracked`` 0-d int64 (see ``_BatchNorm``). Same semantics as PyTorch (the one
    difference is listed in ``_BatchNorm``).
    """

    _expected_dims = (4,)


def _affine_parameters(module, affine, bias, shape, dtype, device):
    """weight (ones) and bias (zeros) of ``shape`` when ``affine``, else both None."""
    if affine:
        module.weight = Parameter(np.ones(shape, dtype=dtype))
        if bias:
            module.bias = Parameter(np.zeros(shape, dtype=dtype))
        else:
            module.register_parameter("bias", None)
    else:
        module.register_parameter("weight", None)
        module.register_parameter("bias", None)
    if device is not None:
        module.to(device)


class LayerNorm(Module):
    """Normalise over the last ``len(normalized_shape)`` dimensions of each sample.

    input: (*, *normalized_shape) -> same shape. ``weight`` (ones) and ``bias`` (zeros) have
    shape ``normalized_shape`` if ``elementwise_affine``. Mean and biased variance per sample,
    the same in train and eval. Same as PyTorch (``dtype`` is a NumPy dtype).
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.normalized_shape = checked_normalized_shape("LayerNorm", normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        _affine_parameters(self, elementwise_affine, bias, self.normalized_shape, dtype, device)

    def reset_parameters(self) -> None:
        if self.elementwise_affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def forward(self, input):
        n = len(self.normalized_shape)
        if tuple(input.shape[input.ndim - n:]) != self.normalized_shape or input.ndim < n:
            raise ValueError(f"LayerNorm: expected input with trailing dimensions "
                             f"{self.normalized_shape} (normalized_shape), got shape {tuple(input.shape)}")
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class GroupNorm(Module):
    """Normalise each sample over groups of ``num_channels // num_groups`` channels (and space).

    input: (N, C, *) -> same shape. ``weight`` (ones) and ``bias`` (zeros) have shape (C,) if
    ``affine``. Independent of the batch size, unlike BatchNorm; same in train and eval.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 device=None, dtype=None, *, bias: bool = True):
        super().__init__()
        if num_channels % num_groups != 0:
            raise ValueError(f"GroupNorm: num_channels ({num_channels}) must be divisible by "
                             f"num_groups ({num_groups})")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        _affine_parameters(self, affine, bias, (num_channels,), dtype, device)

    def reset_parameters(self) -> None:
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def forward(self, input):
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


class LocalResponseNorm(Module):
    """Local response normalisation across channels (AlexNet's NORM1/NORM2).

    ``b_c = a_c / (k + alpha / size * sum_{c' near c} a_{c'}^2) ** beta``, the sum running over
    ``size`` neighbouring channels. input: (N, C, *) -> same shape. AlexNet:
    ``LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)``.

    Same as PyTorch, including the division ``alpha / size``. The AlexNet paper writes ``alpha``
    alone, so the paper's ``alpha`` equals our ``alpha / size``.
    """

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        if not isinstance(size, (int, np.integer)) or size <= 0:
            raise ValueError(f"LocalResponseNorm: size must be a positive integer, got {size!r}")
        self.size = int(size)
        self.alpha = alpha
        self.beta = beta
        self.k = k

    def forward(self, input):
        return F.local_response_norm(input, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"
