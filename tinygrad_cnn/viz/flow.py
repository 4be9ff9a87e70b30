"""Gradient flow: per-layer gradient and weight norms during training, recorded by hooks.

    flow = GradientFlow(model)          # registers a hook on every parameter
    for step, (x, y) in enumerate(loader):
        loss = criterion(model(x), y)
        optimizer.zero_grad(); loss.backward()
        flow.step()                     # closes the record of this step (+ weight norms)
        optimizer.step()
    flow.plot("grad_flow.png")          # needs matplotlib
    flow.remove()

A layer is the module owning the parameter (``layer1.0.conv1`` for
``layer1.0.conv1.weight``). A layer's norm is the Euclidean norm of all its
watched parameters together, ``sqrt(sum_p ||g_p||^2)``; several backward
passes before one ``step()`` (gradient accumulation) are summed first, so the
recorded norm is that of the accumulated ``.grad``. Vanishing gradients show
up as norms falling by orders of magnitude from the last layer to the first.
"""
from __future__ import annotations

import json

import numpy as np

from ..backend import to_host


def _host64(array):
    return np.asarray(to_host(array), dtype=np.float64)


def _squared_norm(array):
    a = _host64(array)
    return float(np.sum(a * a))


class GradientFlow:
    def __init__(self, model, parameters=("weight",)):
        """Watch every parameter whose last name component is in ``parameters``
        (default: weights only; pass ``None`` for all)."""
        self.history = []          # one dict per step: {"step", "grad": {layer: norm}, "weight": ...}
        self._pending = {}         # parameter name -> gradient summed over this step's backwards
        self._handles = []
        self._watched = []
        for name, p in model.named_parameters():
            if parameters is not None and name.rsplit(".", 1)[-1] not in parameters:
                continue
            if not p.requires_grad:
                continue
            layer = name.rsplit(".", 1)[0] if "." in name else name
            self._watched.append((layer, name, p))
            self._handles.append(p.register_hook(self._make_hook(name)))

    def _make_hook(self, name):
        def hook(grad):
            # A leaf's hook runs once per backward with that backward's summed gradient;
            # record it and return None so the gradient itself is left unchanged.
            previous = self._pending.get(name)
            g = _host64(grad.array)
            self._pending[name] = g.copy() if previous is None else previous + g
        return hook

    @property
    def layers(self):
        return list(dict.fromkeys(layer for layer, _, _ in self._watched))

    def step(self):
        """Close the current step: store gradient norms (from the hooks) and weight norms.

        Returns the record ``{"step": k, "grad": {layer: norm}, "weight": {layer: norm}}``; a
        layer whose parameters received no gradient in this step has no ``"grad"`` entry.
        """
        grads, weights = {}, {}
        for layer, name, p in self._watched:
            weights[layer] = weights.get(layer, 0.0) + _squared_norm(p.array)
            if name in self._pending:
                grads[layer] = grads.get(layer, 0.0) + _squared_norm(self._pending[name])
        self.history.append({"step": len(self.history),
                             "grad": {k: float(np.sqrt(v)) for k, v in grads.items()},
                             "weight": {k: float(np.sqrt(v)) for k, v in weights.items()}})
        self._pending = {}
        return self.history[-1]

    def mean_grad(self, last=None):
        """Mean gradient norm per layer over the recorded steps (or the ``last`` ones)."""
        records = self.history[-last:] if last else self.history
        return {layer: float(np.mean([h["grad"][layer] for h in records if layer in h["grad"]]))
                for layer in self.layers if any(layer in h["grad"] for h in records)}

    def table(self, last=None):
        """A text table: layer, mean |grad|, last |weight|, last |grad|/|weight|."""
        means = self.mean_grad(last)
        ratios = self.ratios() if self.history else {}
        lines = [f"{'layer':<24} {'mean |grad|':>12} {'|weight|':>10} {'|grad|/|w|':>11}"]
        for layer in self.layers:
            weight = self.history[-1]["weight"].get(layer, float("nan")) if self.history else float("nan")
            lines.append(f"{layer:<24} {means.get(layer, float('nan')):>12.3e} {weight:>10.3f} "
                         f"{ratios.get(layer, float('nan')):>11.3e}")
        return "\n".join(lines)

    def ratios(self):
        """Last step's ``|grad| / |weight|`` per layer (the update scale before the lr)."""
        last = self.history[-1]
        return {k: last["grad"].get(k, 0.0) / max(v, 1e-30) for k, v in last["weight"].items()}

    def save_jsonl(self, path):
        with open(path, "w") as f:
            for record in self.history:
                f.write(json.dumps(record) + "\n")

    def plot(self, path, title="gradient flow"):
        """Two panels: gradient norm per layer (mean over steps) and its evolution per step."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        layers = self.layers
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
        means = [np.mean([h["grad"].get(l, np.nan) for h in self.history]) for l in layers]
        left.semilogy(range(len(layers)), means, "o-")
        left.set_xticks(range(len(layers)), layers, rotation=90, fontsize=6)
        left.set_ylabel("mean |grad| of weight")
        left.set_title(title)
        for l in layers[:: max(1, len(layers) // 8)]:
            right.semilogy([h["grad"].get(l, np.nan) for h in self.history], label=l)
        right.set_xlabel("step")
        right.legend(fontsize=6)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    def remove(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []
