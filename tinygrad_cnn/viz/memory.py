"""Memory and compute accounting: what each layer keeps alive for backward.

``memory_report(model, (N, C, H, W))`` runs one forward pass with autograd on and
attributes every array held by the graph to the layer whose forward created it:
saved inputs/outputs (e.g. the input of a convolution or the output of tanh),
masks, argmax indices, the im2col column buffer when a convolution keeps it, and
so on. Parameters are not counted (they live anyway). Each array is counted once,
at the first layer that saved it.

The ``kept`` column names what is stored; an op that stores only its input (and
rebuilds e.g. im2col columns in backward) is marked ``recomputes``.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from .tracer import saved_bytes  # noqa: F401  (documented helper, re-exported)


def _arrays_of(node):
    """(description, array) pairs a node holds for backward."""
    items = []
    for i, t in enumerate(node._saved or ()):
        if t is not None:
            items.append((f"saved[{i}]", t.data))
    for name, value in vars(node).items():
        if name in node._engine_fields or name.startswith("_"):
            continue
        if hasattr(value, "nbytes") and hasattr(value, "shape"):
            items.append((name, value))
    return items


class MemoryReport:
    def __init__(self, rows, input_shape):
        self.rows = rows
        self.input_shape = input_shape

    @property
    def total_bytes(self):
        return sum(r["bytes"] for r in self.rows)

    def __str__(self):
        head = f"{'layer':<28} {'type':<18} {'output':<18} {'kept for backward':>18}  kept"
        lines = [f"memory held for backward, input {self.input_shape}", head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r['name']:<28} {r['type']:<18} {str(r['output_shape']):<18} "
                         f"{r['bytes'] / 2**20:>15.2f} MiB  {r['kept']}")
        lines.append("-" * len(head))
        lines.append(f"{'total':<66} {self.total_bytes / 2**20:>15.2f} MiB")
        return "\n".join(lines)

    __repr__ = __str__


def memory_report(model, input_shape, dtype=np.float32, input=None):
    """Per-leaf-module bytes held for backward for one forward pass at ``input_shape``."""
    from ..tensor import Tensor

    param_ids = {id(p.data) for p in model.parameters()}
    counted = set(param_ids)
    seen_nodes = set()
    rows = []
    handles = []

    def attribute(name, module, output):
        if not isinstance(output, Tensor) or output._ctx is None:
            return
        nbytes, kept = 0, []
        stack = [output._ctx]
        while stack:
            node = stack.pop()
            if id(node) in seen_nodes:
                continue
            seen_nodes.add(id(node))
            for desc, array in _arrays_of(node):
                if id(array) in counted:
                    continue
                counted.add(id(array))
                nbytes += int(array.nbytes)
                kept.append(f"{type(node).__name__}.{desc}{tuple(array.shape)}")
            stack.extend(p for p in node.parents if isinstance(p, Function))
        big = [k for k in kept if "col" in k.lower()]
        how = "stores im2col columns" if big else ("recomputes" if not kept else "")
        rows.append(dict(name=name, type=type(module).__name__, output_shape=output.shape,
                         bytes=nbytes, kept=(how + ": " if how else "") + ", ".join(kept[:4])
                         + (" ..." if len(kept) > 4 else "")))

    for name, module in model.named_modules():
        if name and not list(module.children()):
            handles.append(module.register_forward_hook(
                lambda m, inp, out, name=name: attribute(name, m, out)))
    try:
        if input is None:
            rng = np.random.default_rng(0)
            input = Tensor(rng.standard_normal(input_shape).astype(dtype))
        input.requires_grad_(True)
        out = model(input)
        attribute("(rest of graph)", model, out)
    finally:
        for h in handles:
            h.remove()
    return MemoryReport(rows, tuple(input_shape))
