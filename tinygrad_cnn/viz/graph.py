"""Draw the computational graph of a Tensor as Graphviz DOT (and SVG/PNG when Graphviz exists).

Nodes: every Function (op name, output shape and dtype, bytes saved for backward)
and every leaf Tensor (name when given, shape, dtype, and ``|grad|`` after a
backward). Edges point the way data flows forward; when a
:class:`~tinygrad_cnn.viz.tracer.BackwardTrace` is given, each edge out of an op is
labelled with the norm of the gradient that flowed back along it, so one can see
where gradients shrink or explode.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np

from ..autograd import Function
from .tracer import saved_bytes


def _fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _shape(shape):
    return "x".join(str(s) for s in shape) or "scalar"


def _escape(text):
    return str(text).replace("\\", "\\\\").replace('"', '\\"')


def _label(parts):
    return "\\n".join(_escape(p) for p in parts)


def to_dot(output, params=None, trace=None, title=None):
    """DOT source of the graph that produced ``output``.

    Args:
        output: the Tensor whose history is drawn (e.g. the loss).
        params: optional ``{name: Tensor}`` (e.g. ``dict(model.named_parameters())``)
            used to label leaves.
        trace: optional :class:`BackwardTrace` from ``trace_backward``; edges then show
            the gradient norm that flowed along them.
    """
    names = {id(t): name for name, t in (params or {}).items()}
    edge_norms = trace.grad_norm_by_edge() if trace is not None else {}
    saved_by_node = {step.node_id: step.saved_bytes for step in trace} if trace is not None else {}
    lines = ["digraph tinygrad_cnn {", '  rankdir="BT";',
             '  node [fontname="Helvetica", fontsize=10];']
    if title:
        lines.append(f'  labelloc="t"; label="{_escape(title)}";')
    seen = set()

    def leaf_id(t):
        key = f"t{id(t)}"
        if key not in seen:
            seen.add(key)
            label = [names.get(id(t), "leaf"), f"{_shape(t.shape)} {t.dtype}"]
            if t.grad is not None:
                g = np.asarray(t.grad.numpy(), dtype=np.float64)
                label.append(f"|grad| = {np.sqrt((g * g).sum()):.3g}")
            lines.append(f'  {key} [shape=box, style=filled, fillcolor="lightblue", '
                         f'label="{_label(label)}"];')
        return key

    if output._ctx is None:
        leaf_id(output)
    else:
        stack = [output._ctx]
        while stack:
            node = stack.pop()
            key = f"f{id(node)}"
            if key in seen:
                continue
            seen.add(key)
            label = [type(node).__name__, f"{_shape(node.out_shape)} {node.out_dtype}"]
            if not node._released:
                label.append(f"saved {_fmt_bytes(saved_bytes(node))}")
            elif id(node) in saved_by_node:      # freed by backward; the trace measured it
                label.append(f"saved {_fmt_bytes(saved_by_node[id(node)])} (freed)")
            else:
                label.append("saved: freed")
            lines.append(f'  {key} [shape=ellipse, label="{_label(label)}"];')
            for i, parent in enumerate(node.parents):
                if parent is None:
                    continue
                if isinstance(parent, Function):
                    src = f"f{id(parent)}"
                    stack.append(parent)
                else:
                    src = leaf_id(parent)
                norm = edge_norms.get((id(node), i))
                attr = f' [label="{norm:.3g}"]' if norm is not None else ""
                lines.append(f"  {src} -> {key}{attr};")
    out_key = "output"
    lines.append(f'  {out_key} [shape=box, style=filled, fillcolor="lightyellow", '
                 f'label="output\\n{_shape(output.shape)} {output.dtype}"];')
    src = f"f{id(output._ctx)}" if output._ctx is not None else f"t{id(output)}"
    lines.append(f"  {src} -> {out_key};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot_source, path, format=None):
    """Write ``dot_source`` to ``path``: ``.dot`` always works; ``.svg``/``.png`` need the
    Graphviz ``dot`` program. Returns the path written."""
    format = format or os.path.splitext(path)[1].lstrip(".") or "dot"
    if format == "dot":
        with open(path, "w") as f:
            f.write(dot_source)
        return path
    exe = shutil.which("dot")
    if exe is None:
        raise RuntimeError(f"render: writing {format!r} needs the Graphviz 'dot' program "
                           "(e.g. apt install graphviz); write a .dot file instead")
    subprocess.run([exe, f"-T{format}", "-o", path], input=dot_source.encode(), check=True)
    return path
