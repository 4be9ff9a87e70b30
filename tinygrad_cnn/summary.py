"""A per-layer table of a model: output shapes, parameters, multiply-accumulates and memory for backward.

``summary(model, (1, 3, 227, 227))`` runs one forward pass on zeros (under ``no_grad``, in eval mode, the
training flags restored afterwards) with a forward hook on every leaf module, and records for each call:

* ``output_shape``: the layer's output, batch included;
* ``params``: the layer's own parameters, e.g. conv1 of AlexNet ``(11 * 11 * 3 + 1) * 96 = 34,944``;
* ``macs``: multiply-accumulates of the whole batch. Convolution: ``N * C_out * H_out * W_out *
  (C_in / groups) * kh * kw``; Linear: ``N * out_features * in_features``. Other layers (pooling,
  normalisation, activations) are memory-bound and counted as 0;
* ``activation_bytes``: the layer's output, which the next layer keeps for its backward pass (the lecture
  convention of counting each activation once);
* ``im2col_bytes``: for a convolution, the column buffer ``N * (C_in * kh * kw) * (H_out * W_out)``
  elements that im2col builds and the weight gradient needs, 0 otherwise;
* ``saved_bytes = activation_bytes + im2col_bytes``: the memory this layer adds to a training step.

Computation outside leaf modules (the ``+`` of a residual connection, ``flatten``) has no row. A module
called twice (torchvision's shared ``relu``) gets a row per call. The totals count every parameter of the
model once.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["summary", "ModelSummary"]

_COLUMNS = ("name", "type", "input_shape", "output_shape", "params", "macs", "activation_bytes",
            "im2col_bytes", "saved_bytes")


def _shape(value):
    shape = getattr(value, "shape", None)
    return tuple(int(s) for s in shape) if shape is not None else None


def _first_tensor(value):
    """The first array-like among a hook's inputs/outputs (a Tensor, or a tuple holding one)."""
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
        return None
    return value if hasattr(value, "shape") else None


def _numel(shape) -> int:
    return int(math.prod(shape)) if shape else 1


def _itemsize(value) -> int:
    return int(np.dtype(value.dtype).itemsize)


def _is_leaf(module) -> bool:
    return next(iter(module.children()), None) is None


def _layer_cost(module, inp, out):
    """(macs, im2col elements) of one call of ``module`` with input ``inp`` and output ``out``."""
    from . import nn

    if isinstance(module, nn.Conv2d):
        c_out, c_in_per_group, kh, kw = (int(s) for s in module.weight.shape)
        groups = int(getattr(module, "groups", 1))
        n, _, h_out, w_out = _shape(out)
        macs = n * c_out * h_out * w_out * c_in_per_group * kh * kw
        columns = n * (c_in_per_group * groups * kh * kw) * (h_out * w_out)
        return macs, columns
    if isinstance(module, nn.Linear):
        out_features, in_features = (int(s) for s in module.weight.shape)
        return _numel(_shape(out)) * in_features, 0
    return 0, 0


def _format_shape(shape, style: str) -> str:
    if shape is None:
        return "-"
    if style == "hwc" and len(shape) == 4:
        return f"{shape[2]}x{shape[3]}x{shape[1]}"
    if style == "hwc" and len(shape) == 2:
        return str(shape[1])
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _format_count(count: int) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= size:
            return f"{count / size:.3f} {unit}"
    return str(count)


def _format_bytes(count: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count} B"


class ModelSummary:
    """The result of :func:`summary`: ``rows`` (one dict per leaf-module call, keys ``name, type,
    input_shape, output_shape, params, macs, activation_bytes, im2col_bytes, saved_bytes``) and ``totals``.

    ``str(s)`` / ``print(s)`` gives the table; ``s.row("features.conv1")`` the first row of that name.
    ``totals``: ``params`` (every parameter once), ``trainable_params``, ``macs``, ``activation_bytes``,
    ``im2col_bytes``, ``saved_bytes``, ``param_bytes``, ``input_bytes``, ``input_shape``, ``output_shape``.
    """

    columns = _COLUMNS

    def __init__(self, model_name: str, rows: list, totals: dict, shape_style: str = "nchw"):
        self.model_name = model_name
        self.rows = rows
        self.totals = totals
        self.shape_style = shape_style

    def row(self, name: str) -> dict:
        for row in self.rows:
            if row["name"] == name:
                return row
        raise KeyError(f"summary: no layer named {name!r}; layers: {[r['name'] for r in self.rows]}")

    def __getitem__(self, index):
        return self.rows[index]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)

    def table(self, shape_style=None) -> str:
        style = shape_style or self.shape_style
        header = ("Layer", "Type", "Output shape", "Params", "MACs", "Kept for backward", "of which im2col")
        lines = []
        for r in self.rows:
            lines.append((r["name"], r["type"], _format_shape(r["output_shape"], style), f"{r['params']:,}",
                          f"{r['macs']:,}", f"{r['saved_bytes']:,}", f"{r['im2col_bytes']:,}"))
        t = self.totals
        total_line = ("Total", "", _format_shape(t["output_shape"], style), f"{t['params']:,}", f"{t['macs']:,}",
                      f"{t['saved_bytes']:,}", f"{t['im2col_bytes']:,}")
        widths = [max(len(str(row[i])) for row in [header, total_line, *lines]) for i in range(len(header))]
        right = {3, 4, 5, 6}

        def fmt(row):
            return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                             for i, (c, w) in enumerate(zip(row, widths))).rstrip()

        rule = "-" * len(fmt(header))
        out = [f"{self.model_name}, input {_format_shape(t['input_shape'], 'nchw')}", rule, fmt(header), rule]
        out += [fmt(line) for line in lines]
        out += [rule, fmt(total_line), rule]
        out.append(f"Parameters: {t['params']:,} ({t['trainable_params']:,} trainable), "
                   f"{_format_bytes(t['param_bytes'])}")
        out.append(f"Multiply-accumulates per forward pass: {t['macs']:,} ({_format_count(t['macs'])})")
        out.append(f"Kept for backward: {_format_bytes(t['saved_bytes'])} (activations "
                   f"{_format_bytes(t['activation_bytes'])} + im2col {_format_bytes(t['im2col_bytes'])}); "
                   f"input {_format_bytes(t['input_bytes'])}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return self.table()


def summary(model, input_shape, dtype=None, device=None, shape_style: str = "nchw") -> ModelSummary:
    """Table of ``model``'s layers for an input of ``input_shape`` (batch included, e.g. ``(1, 3, 227, 227)``).

    Args:
        model: an ``nn.Module``.
        input_shape: the input's shape, batch dimension first.
        dtype: input dtype; default the dtype of the model's first floating parameter (else float32).
        device: ``"cpu"``/``"cuda"``; default the device of the model's first parameter.
        shape_style: how the printed table writes 4-d shapes: ``"nchw"`` -> ``(1, 96, 55, 55)``,
            ``"hwc"`` -> ``55x55x96`` (the lecture's notation). ``rows`` always hold tuples ``(N, C, H, W)``.

    Returns a :class:`ModelSummary`; print it for the table, read ``.rows`` / ``.totals`` for the numbers.
    The forward pass runs on zeros under ``no_grad`` in eval mode, so BatchNorm running statistics and the
    random generator are untouched and each module's ``training`` flag is restored afterwards.
    """
    from . import Tensor, no_grad

    if shape_style not in ("nchw", "hwc"):
        raise ValueError(f"summary: shape_style must be 'nchw' or 'hwc', got {shape_style!r}")
    try:
        input_shape = tuple(int(s) for s in input_shape)
    except TypeError:
        raise TypeError(f"summary: input_shape must be a tuple of ints with the batch first, got {input_shape!r}") \
            from None
    if len(input_shape) < 2 or min(input_shape) < 1:
        raise ValueError(f"summary: input_shape must include the batch dimension and be positive, e.g. "
                         f"(1, 3, 224, 224); got {input_shape}")
    parameters = list(model.parameters())
    if dtype is None:
        floating = [p for p in parameters if np.issubdtype(np.dtype(p.dtype), np.floating)]
        dtype = floating[0].dtype if floating else np.float32
    dtype = np.dtype(dtype)
    if device is None:
        device = getattr(parameters[0], "device", "cpu") if parameters else "cpu"

    names = {}
    for name, module in model.named_modules():
        names.setdefault(id(module), name or type(model).__name__)
    rows = []

    def hook(module, inputs, output):
        inp, out = _first_tensor(inputs), _first_tensor(output)
        out_shape = _shape(out)
        macs, columns = _layer_cost(module, inp, out)
        itemsize = _itemsize(out) if out is not None else dtype.itemsize
        activation = _numel(out_shape) * itemsize if out is not None else 0
        im2col = columns * itemsize
        rows.append({
            "name": names[id(module)], "type": type(module).__name__, "input_shape": _shape(inp),
            "output_shape": out_shape, "params": sum(_numel(_shape(p)) for p in module.parameters()),
            "macs": int(macs), "activation_bytes": int(activation), "im2col_bytes": int(im2col),
            "saved_bytes": int(activation + im2col),
        })

    leaves = [m for _, m in model.named_modules() if _is_leaf(m)]
    seen, handles = set(), []
    for module in leaves:
        if id(module) not in seen:
            seen.add(id(module))
            handles.append(module.register_forward_hook(hook))
    modes = [(m, m.training) for _, m in model.named_modules()]
    x = Tensor(np.zeros(input_shape, dtype=dtype))
    if device != "cpu":
        x = x.to(device)
    try:
        model.eval()
        with no_grad():
            output = model(x)
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in modes:
            module.training = flag

    unique, seen_ids = [], set()
    for p in parameters:
        if id(p) not in seen_ids:
            seen_ids.add(id(p))
            unique.append(p)
    out = _first_tensor(output)
    totals = {
        "params": sum(_numel(_shape(p)) for p in unique),
        "trainable_params": sum(_numel(_shape(p)) for p in unique if getattr(p, "requires_grad", True)),
        "param_bytes": sum(_numel(_shape(p)) * _itemsize(p) for p in unique),
        "macs": sum(r["macs"] for r in rows),
        "activation_bytes": sum(r["activation_bytes"] for r in rows),
        "im2col_bytes": sum(r["im2col_bytes"] for r in rows),
        "saved_bytes": sum(r["saved_bytes"] for r in rows),
        "input_bytes": _numel(input_shape) * dtype.itemsize,
        "input_shape": input_shape,
        "output_shape": _shape(out),
    }
    return ModelSummary(type(model).__name__, rows, totals, shape_style)
