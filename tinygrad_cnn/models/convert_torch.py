"""Convert a PyTorch ``state_dict`` into a tinygrad_cnn weights file (``.npz``).

Run it where PyTorch is installed (tinygrad_cnn itself never needs PyTorch)::

    # a state_dict saved with torch.save(model.state_dict(), "resnet18.pth")
    python -m tinygrad_cnn.models.convert_torch resnet18.pth resnet18.npz --model resnet18

    # torchvision's published ImageNet weights (needs torchvision and a network connection)
    python -m tinygrad_cnn.models.convert_torch --torchvision resnet18 resnet18.npz

and load the result anywhere::

    from tinygrad_cnn.models import resnet18, load_weights
    model = resnet18()
    load_weights(model, "resnet18.npz")

The ImageNet ResNets, ``alexnet(variant="torchvision")`` and ``vgg16()`` use torchvision's state_dict
names, so the keys pass through unchanged; ``--model NAME`` builds that model here and checks every key and
shape before the file is written. ``module.`` prefixes left by ``DataParallel`` are stripped, a checkpoint
dict holding the weights under ``"state_dict"`` or ``"model"`` is unwrapped, and ``--rename OLD=NEW``
replaces key prefixes. The ``.pth`` file is read with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

__all__ = ["convert_state_dict", "load_torch_state_dict", "convert_file", "main"]


def _to_numpy(value) -> np.ndarray:
    """A torch tensor (any device, any float type) or array-like -> NumPy array (bfloat16/half -> float32)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) in ("torch.bfloat16", "torch.float16"):
            value = value.float()
        return np.array(value.numpy(), copy=True)
    return np.array(value, copy=True)


def convert_state_dict(state_dict, strip_prefixes=("module.",), rename=None) -> dict:
    """``{name: torch.Tensor}`` -> ``{name: numpy.ndarray}`` with tinygrad_cnn's key names.

    Args:
        state_dict: a PyTorch state_dict (any mapping of names to tensors or arrays).
        strip_prefixes: prefixes removed from every key that has them (``DataParallel``'s ``module.``).
        rename: optional ``{old_prefix: new_prefix}`` applied after stripping.
    """
    rename = dict(rename or {})
    out = {}
    for key, value in state_dict.items():
        name = str(key)
        for prefix in strip_prefixes:
            if prefix and name.startswith(prefix):
                name = name[len(prefix):]
        for old, new in rename.items():
            if name.startswith(old):
                name = new + name[len(old):]
                break
        if name in out:
            raise ValueError(f"convert_state_dict: two entries map to the key {name!r}")
        out[name] = _to_numpy(value)
    return out


def load_torch_state_dict(path):
    """Read a ``.pth``/``.pt`` file with PyTorch (imported here, lazily) and return its state_dict."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError("convert_torch: reading a PyTorch file needs PyTorch (`pip install torch`); run the "
                          "converter where it is installed and copy the .npz file") from exc
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        for wrapper in ("state_dict", "model", "model_state_dict"):
            if wrapper in state and isinstance(state[wrapper], dict):
                state = state[wrapper]
                break
    if not isinstance(state, dict):
        raise ValueError(f"convert_torch: {path} holds a {type(state).__name__}, expected a state_dict")
    return state


def _torchvision_state_dict(name: str):
    try:
        import torchvision
    except ImportError as exc:
        raise ImportError("convert_torch: --torchvision needs torchvision (`pip install torchvision`)") from exc
    builder = getattr(torchvision.models, name, None)
    if builder is None:
        raise ValueError(f"convert_torch: torchvision.models has no model {name!r}")
    return builder(weights="DEFAULT").state_dict()


def _our_model(name: str):
    from .. import models

    if name == "alexnet":  # torchvision's AlexNet is our torchvision variant
        return models.alexnet(variant="torchvision")
    builder = getattr(models, name, None)
    if builder is None or not callable(builder):
        raise ValueError(f"convert_torch: tinygrad_cnn.models has no model {name!r}")
    return builder()


def convert_file(source, destination, model=None, strip_prefixes=("module.",), rename=None, torchvision=None):
    """Convert ``source`` (a ``.pth`` path; or ``torchvision=NAME`` for published weights) to ``destination``.

    ``model``: a tinygrad_cnn model name (``"resnet18"``) or Module whose keys and shapes the converted
    weights must match exactly (checked before writing). Returns ``{name: array}`` as written.
    """
    from .weights import load_weights, save_weights

    state = _torchvision_state_dict(torchvision) if torchvision else load_torch_state_dict(source)
    arrays = convert_state_dict(state, strip_prefixes=strip_prefixes, rename=rename)
    if model is not None:
        target = _our_model(model) if isinstance(model, str) else model
        load_weights(target, arrays, strict=True)
    save_weights(arrays, destination)
    return arrays


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinygrad_cnn.models.convert_torch",
                                     description="Convert a PyTorch state_dict to a tinygrad_cnn .npz weights file.")
    parser.add_argument("source", nargs="?", help="the .pth/.pt file (omit with --torchvision)")
    parser.add_argument("destination", help="the .npz file to write")
    parser.add_argument("--torchvision", metavar="NAME", help="convert torchvision's pretrained NAME (e.g. resnet50)")
    parser.add_argument("--model", metavar="NAME", help="check keys and shapes against tinygrad_cnn.models.NAME")
    parser.add_argument("--rename", metavar="OLD=NEW", action="append", default=[],
                        help="replace the key prefix OLD by NEW (repeatable)")
    parser.add_argument("--keep-module-prefix", action="store_true", help="do not strip 'module.' prefixes")
    args = parser.parse_args(argv)
    if (args.source is None) == (args.torchvision is None):
        parser.error("give either a source .pth file or --torchvision NAME")
    rename = {}
    for item in args.rename:
        if "=" not in item:
            parser.error(f"--rename expects OLD=NEW, got {item!r}")
        old, new = item.split("=", 1)
        rename[old] = new
    model = args.model or (args.torchvision if args.torchvision else None)
    arrays = convert_file(args.source, args.destination, model=model, rename=rename, torchvision=args.torchvision,
                          strip_prefixes=() if args.keep_module_prefix else ("module.",))
    count = sum(int(a.size) for k, a in arrays.items() if not k.endswith("num_batches_tracked"))
    print(f"wrote {args.destination}: {len(arrays)} arrays, {count:,} values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
