"""Backprop tracer: record a backward pass one Function at a time.

``trace = trace_backward(loss)`` runs ``loss.backward()`` and records, for every
node in the order the engine visits it, the incoming gradient ``dL/d(out)``, the
outgoing gradients ``dL/d(input_i)`` and the local rule (the first line of the
op's docstring, e.g. ``out = a * b;  da = g * b, db = g * a``). Iterate over it to
step through the delta recursion of the lecture::

    for step in trace_backward(loss):
        print(step)

The gradients left in ``.grad`` are exactly those of a plain ``loss.backward()``.
"""
from __future__ import annotations

import numpy as np

from .. import autograd


def _rule(node):
    doc = type(node).__doc__ or ""
    for line in doc.strip().splitlines():
        if line.strip():
            return line.strip()
    return "(no docstring)"


def _array(t):
    return None if t is None else np.array(t.numpy(), copy=True)


def _norm(a):
    return None if a is None else float(np.sqrt(np.sum(np.asarray(a, dtype=np.float64) ** 2)))


def saved_bytes(node) -> int:
    """Bytes a Function node holds for its backward: saved tensors plus array attributes."""
    total, seen = 0, set()

    def add(array):
        nonlocal total
        if array is None or not hasattr(array, "nbytes") or id(array) in seen:
            return
        seen.add(id(array))
        total += int(array.nbytes)

    for t in (node._saved or ()):
        add(getattr(t, "array", None))
    for name, value in vars(node).items():
        if name in node._engine_fields or name.startswith("_"):
            continue
        if hasattr(value, "nbytes") and hasattr(value, "shape"):
            add(value)
        elif isinstance(value, (tuple, list)):
            for item in value:
                if hasattr(item, "nbytes") and hasattr(item, "shape"):
                    add(item)
    return total


class BackwardStep:
    """One node of the backward pass: what came in, what went out, and the rule used."""

    def __init__(self, index, node, grad_output, input_grads, nbytes):
        self.index = index
        self.op = type(node).__name__
        self.node_id = id(node)
        self.rule = _rule(node)
        self.output_shape = tuple(node.out_shape)
        self.grad_output = _array(grad_output)
        self.input_grads = [_array(g) for g in input_grads]
        self.saved_bytes = nbytes

    @property
    def grad_output_norm(self):
        return _norm(self.grad_output)

    @property
    def input_grad_norms(self):
        return [_norm(g) for g in self.input_grads]

    def __str__(self):
        outs = ", ".join("-" if n is None else f"{n:.4g}" for n in self.input_grad_norms)
        return (f"step {self.index:3d}  {self.op:<12} out {self.output_shape}  "
                f"|dL/dout| = {self.grad_output_norm:.4g}  ->  |dL/din| = [{outs}]\n"
                f"          rule: {self.rule}")

    __repr__ = __str__


class BackwardTrace:
    """A recorded backward pass: a list of :class:`BackwardStep`, in execution order."""

    def __init__(self, steps):
        self.steps = steps

    def __iter__(self):
        return iter(self.steps)

    def __len__(self):
        return len(self.steps)

    def __getitem__(self, i):
        return self.steps[i]

    def grad_norm_by_node(self):
        """``id(node) -> |dL/d(node output)|``; used by ``to_dot`` to annotate edges."""
        return {s.node_id: s.grad_output_norm for s in self.steps}

    def grad_norm_by_edge(self):
        """``(id(node), input index) -> |gradient sent to that input|`` (for ``to_dot``)."""
        return {(s.node_id, i): n for s in self.steps
                for i, n in enumerate(s.input_grad_norms) if n is not None}

    def __str__(self):
        return "\n".join(str(s) for s in self.steps)


def trace_backward(output, gradient=None, retain_graph=False):
    """Run ``output.backward(gradient)`` and return the recorded :class:`BackwardTrace`."""
    steps = []

    def observe(node, grad_output, input_grads):
        steps.append(BackwardStep(len(steps), node, grad_output, input_grads, saved_bytes(node)))

    autograd.backward_observers.append(observe)
    try:
        output.backward(gradient, retain_graph=retain_graph)
    finally:
        autograd.backward_observers.remove(observe)
    return BackwardTrace(steps)
