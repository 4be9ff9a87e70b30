"""``Parameter``: a Tensor that a :class:`~tinygrad_cnn.nn.Module` registers as learnable.

Assigning a Parameter to a module attribute (``self.weight = Parameter(...)``) is what makes it
appear in ``module.parameters()`` and in ``module.state_dict()``; a plain Tensor assigned the
same way is just an attribute.
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..tensor import Tensor

__all__ = ["Parameter", "add_weight_and_bias"]


class Parameter(Tensor):
    """A leaf Tensor with ``requires_grad=True`` (by default) that modules collect.

    data: a Tensor, a NumPy/CuPy array, or anything ``Tensor`` accepts; ``None`` gives an empty
        float32 tensor. A Tensor's array is used as it is (no copy), as in PyTorch.
    requires_grad: default True; ``False`` gives a frozen parameter that is still saved and
        loaded with the module.
    Shape and dtype are those of ``data``.

    Differences from PyTorch: the storage is a NumPy or CuPy array (``.array``), and
    ``Parameter()`` without data is an empty float32 tensor of shape (0,).
    """

    def __init__(self, data=None, requires_grad: bool = True):
        if data is None:
            array = np.empty((0,), dtype=np.float32)
        elif isinstance(data, Tensor):
            array = data.array                       # shared, like torch.nn.Parameter(tensor)
        elif isinstance(data, np.ndarray) or backend.get_array_module(data) is not np:
            array = data                            # a NumPy or CuPy array, shared
        else:
            array = Tensor(data).array               # numbers and lists: float32, as Tensor does
        # Build an empty Tensor of the right dtype, then adopt the array without copying it.
        super().__init__(np.empty((0,), dtype=array.dtype))
        self.array = array
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


def add_weight_and_bias(module, weight_shape, bias_size, dtype=None, device=None) -> None:
    """Give a layer its ``weight`` (``weight_shape``) and ``bias`` (``(bias_size,)``, or a
    registered ``None`` when ``bias_size`` is None), initialise them with the layer's
    ``reset_parameters()`` and move them to ``device``: what ``Linear``, ``Conv2d`` and
    ``ConvTranspose2d`` do on construction. ``dtype`` defaults to float32."""
    dtype = np.dtype(np.float32 if dtype is None else dtype)
    module.weight = Parameter(np.empty(tuple(weight_shape), dtype=dtype))
    if bias_size is None:
        module.register_parameter("bias", None)
    else:
        module.bias = Parameter(np.empty((bias_size,), dtype=dtype))
    module.reset_parameters()
    if device is not None:
        module.to(device)
