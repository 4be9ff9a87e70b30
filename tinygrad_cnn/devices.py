"""``device``: PyTorch's ``torch.device``, the name of where a tensor's storage lives.

A ``device`` is a ``str`` ("cpu" or "cuda", optionally "cuda:0"), so everything that already
takes a device name takes one, and ``tensor.device == "cpu"`` keeps working.

    >>> import tinygrad_cnn as torch
    >>> dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    >>> dev.type in ("cpu", "cuda")
    True
"""
from __future__ import annotations

__all__ = ["device"]


class device(str):  # noqa: N801 - PyTorch's name
    """``device("cpu")``, ``device("cuda")``, ``device("cuda:0")`` or ``device("cuda", 0)``.

    ``.type`` is "cpu" or "cuda"; ``.index`` the GPU number or None. There is one GPU per process
    here, so ``cuda:N`` names the current GPU whatever N is (see docs/coming_from_pytorch.md).
    """

    def __new__(cls, type, index=None):  # noqa: A002 - PyTorch's argument name
        if isinstance(type, device) and index is None:
            return type
        name = str(type).lower()
        kind, _, number = name.partition(":")
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"device: expected 'cpu' or 'cuda' (optionally 'cuda:N'), got {type!r}")
        if number:
            if index is not None:
                raise ValueError(f"device: index given twice ({type!r} and index={index})")
            if not number.isdigit():
                raise ValueError(f"device: bad device index in {type!r}")
            index = int(number)
        if index is not None:
            index = int(index)
            if index < 0:
                raise ValueError(f"device: index must be >= 0, got {index}")
            if kind == "cpu" and index != 0:
                raise ValueError(f"device: cpu has only index 0, got {index}")
        self = super().__new__(cls, kind if index is None else f"{kind}:{index}")
        self.type, self.index = kind, index
        return self

    def __repr__(self):
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"

    def __hash__(self):
        return str.__hash__(self)

    def __eq__(self, other):
        return str.__eq__(self, other)

    def __ne__(self, other):
        return str.__ne__(self, other)

    def __reduce__(self):
        return (device, (str(self),))


_BY_NAME = {"cpu": device("cpu"), "cuda": device("cuda")}


def as_device(name: str) -> device:
    """The shared ``device`` object for an engine device name ("cpu" or "cuda")."""
    return _BY_NAME[name]
