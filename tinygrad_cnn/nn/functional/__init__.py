"""Functional interface: every operator as a plain function (PyTorch's ``torch.nn.functional``)."""
import importlib as _importlib

# Each op family lives in its own file; everything public in it is re-exported here.
for _family in ("conv", "winograd", "conv_transpose", "upsampling", "pooling", "normalization", "activation", "dropout", "loss", "linear"):
    try:
        _module = _importlib.import_module(f"{__name__}.{_family}")
    except ModuleNotFoundError as _error:  # family not written yet
        if _error.name != f"{__name__}.{_family}":
            raise
        continue
    for _name in getattr(_module, "__all__", ()):
        globals()[_name] = getattr(_module, _name)

# Padding is a tensor op (one implementation, also ``tinygrad_cnn.pad``).
from ...tensor import pad  # noqa: E402,F401
