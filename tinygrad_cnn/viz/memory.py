"""Memory and compute accounting: what each layer keeps alive for backward.

``memory_report(model, (N, C, H, W))`` runs one forward pass with autograd on and
attributes every array held by the graph to the leaf module whose forward created it:
saved inputs/outputs (e.g. the input of a convolution or the output of tanh),
masks, argmax indices, an im2col column buffer when a convolution keeps one, and so
on. Parameters and buffers are not counted (they live anyway), nor are views of them
(a linear layer saving ``weight.T``). Memory is counted per underlying buffer: a
saved view (``x.flatten(1)``) counts the array it views, and each buffer is counted
once, at the first layer that saved it.

Convolutions are im2col + one GEMM. The column matrix ``(C_in*kh*kw, N*OH*OW)`` is
``kh*kw`` times the input, so a layer either **stores** it for the weight gradient
``dW = G cols^T`` or **recomputes** it from the saved input in backward. Each row
reports the size of that buffer and which of the two the layer does; a recomputed
buffer is transient (alive only during that layer's backward), so it adds to the
peak, not to what is held.
"""
from __future__ import annotations

import numpy as np

from ..autograd import Function
from .tracer import saved_bytes  # noqa: F401  (documented helper, re-exported)

__all__ = ["memory_report", "MemoryReport"]


def _root(array):
    """The array owning the memory of ``array`` (follows ``.base`` through views)."""
    while isinstance(getattr(array, "base", None), type(array)):
        array = array.base
    return array


def _arrays_of(node):
    """(description, array) pairs a node holds for backward: saved tensors and array attributes."""
    items = []
    for i, t in enumerate(node._saved or ()):
        if t is not None:
            items.append((f"saved[{i}]", t.array))
    for name, value in vars(node).items():
        if name in node._engine_fields or name.startswith("_"):
            continue
        if hasattr(value, "nbytes") and hasattr(value, "shape"):
            items.append((name, value))
    return items


def _column_buffer(node, arrays):
    """(bytes, stored?) of the im2col column matrix of a convolution node, else None.

    A node is a convolution when it carries a geometry with ``rows`` (C_in*kh*kw) and
    ``columns`` (N*OH*OW); it stores the columns when it holds a matrix of that layout:
    ``(rows, columns)``, or ``(groups, rows / groups, columns)`` for a grouped convolution.
    (Matching shapes, not element counts: a 5x5 convolution of a 5x5 map has as many column
    entries as input pixels.)
    """
    geometry = getattr(node, "geometry", None)
    rows, columns = getattr(geometry, "rows", None), getattr(geometry, "columns", None)
    if not isinstance(rows, int) or not isinstance(columns, int):
        return None

    def is_columns(shape):
        shape = tuple(int(s) for s in shape)
        return shape == (rows, columns) or (len(shape) == 3 and shape[0] * shape[1] == rows
                                            and shape[2] == columns)

    stored = any(is_columns(a.shape) for _, a in arrays)
    return rows * columns * np.dtype(node.out_dtype).itemsize, stored


class MemoryReport:
    """Rows of :func:`memory_report`, one per leaf module, in forward order.

    Each row is a dict: ``name``, ``type``, ``output_shape``, ``bytes`` (held for backward),
    ``items`` (list of ``(op, what, shape, dtype, bytes)``), ``column_bytes`` (im2col buffer
    size, 0 when the layer is no convolution), ``columns`` (``"stored"``, ``"recomputed"`` or
    ``None``), ``mode`` (``"stores"``, ``"stores im2col"``, ``"recomputes im2col"`` or
    ``"nothing"``) and ``kept`` (a readable summary).
    """

    def __init__(self, rows, input_shape):
        self.rows = rows
        self.input_shape = input_shape

    @property
    def total_bytes(self):
        """Bytes held for backward by the whole graph after the forward pass."""
        return sum(r["bytes"] for r in self.rows)

    @property
    def peak_recomputed_bytes(self):
        """The largest column buffer rebuilt during backward (transient, on top of ``total_bytes``)."""
        return max([r["column_bytes"] for r in self.rows if r["columns"] == "recomputed"], default=0)

    def row(self, name):
        for r in self.rows:
            if r["name"] == name:
                return r
        raise KeyError(f"memory_report: no layer named {name!r}; layers: {[r['name'] for r in self.rows]}")

    def __str__(self):
        head = (f"{'layer':<24} {'type':<14} {'output':<18} {'held for bwd':>12} {'im2col cols':>12}  "
                f"{'mode':<18} kept")
        lines = [f"memory held for backward, input {self.input_shape}", head, "-" * len(head)]
        for r in self.rows:
            cols = _human(r["column_bytes"]) if r["columns"] else "-"
            lines.append(f"{r['name']:<24} {r['type']:<14} {str(r['output_shape']):<18} "
                         f"{_human(r['bytes']):>12} {cols:>12}  {r['mode']:<18} {r['kept']}")
        lines.append("-" * len(head))
        lines.append(f"{'total held':<58} {_human(self.total_bytes):>12}")
        lines.append(f"{'+ largest recomputed column buffer (transient)':<58} "
                     f"{_human(self.peak_recomputed_bytes):>12}")
        return "\n".join(lines)

    __repr__ = __str__


def _human(nbytes):
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= size:
            return f"{nbytes / size:.2f} {unit}"
    return f"{nbytes} B"


def memory_report(model, input_shape, dtype=np.float32, input=None):
    """Per-leaf-module bytes held for backward after one forward pass at ``input_shape``.

    model: a ``tinygrad_cnn.nn.Module`` (in its current train/eval mode); input_shape:
    (N, C, H, W) (or any shape the model takes); ``input``: a Tensor to use instead of random
    data. The input itself counts where a layer saves it (the first convolution keeps it for
    ``dW``). Returns a :class:`MemoryReport`.
    """
    from ..tensor import Tensor

    counted = {id(_root(p.array)) for p in model.parameters()}
    counted |= {id(_root(b.array)) for b in model.buffers() if b is not None}
    keep_alive = []   # the graph must live until every layer is attributed
    seen_nodes = set()
    rows = []
    handles = []

    def attribute(name, module, output):
        if not isinstance(output, Tensor) or output._ctx is None:
            return
        keep_alive.append(output)
        nbytes, items = 0, []
        column_bytes, columns = 0, None
        stack = [output._ctx]
        while stack:
            node = stack.pop()
            if id(node) in seen_nodes:
                continue
            seen_nodes.add(id(node))
            arrays = _arrays_of(node)
            buffer = _column_buffer(node, arrays)
            if buffer is not None:
                column_bytes += buffer[0]
                columns = "stored" if buffer[1] else (columns or "recomputed")
            for desc, array in arrays:
                root = _root(array)
                if id(root) in counted:
                    continue
                counted.add(id(root))
                nbytes += int(root.nbytes)
                items.append((type(node).__name__, desc, tuple(array.shape), str(array.dtype), int(root.nbytes)))
            stack.extend(p for p in node.parents if isinstance(p, Function))
        if columns == "stored":
            mode = "stores im2col"
        elif columns == "recomputed":
            mode = "recomputes im2col"
        else:
            mode = "stores" if items else "nothing"
        kept = ", ".join(f"{op}.{what}{shape}" for op, what, shape, _, _ in items[:4])
        kept += " ..." if len(items) > 4 else ""
        if columns == "recomputed":
            kept = (kept or "its input, already held by an earlier layer") + \
                "; im2col columns rebuilt from the saved input in backward"
        rows.append(dict(name=name, type=type(module).__name__, output_shape=tuple(output.shape), bytes=nbytes,
                         items=items, column_bytes=column_bytes, columns=columns, mode=mode,
                         kept=kept or "-"))

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
        before = len(rows)
        attribute("(rest of graph)", model, out)
        if len(rows) > before and rows[-1]["bytes"] == 0 and rows[-1]["columns"] is None:
            rows.pop()   # ops between the leaf modules that hold nothing: not worth a row
    finally:
        for h in handles:
            h.remove()
    return MemoryReport(rows, tuple(input.shape))
