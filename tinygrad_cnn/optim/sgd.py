"""Stochastic gradient descent with optional (Nesterov) momentum and weight decay."""
from __future__ import annotations

from .. import backend
from .optimizer import Optimizer, _check_compat_flags

__all__ = ["SGD"]


@backend.register_reference("sgd_update")
def _sgd_update(param, grad, momentum_buffer, *, lr, momentum, dampening, weight_decay, nesterov):
    """One SGD step on arrays, in place. Returns the (possibly new) momentum buffer.

    param, grad: arrays of the same shape (NumPy or CuPy); ``param`` is updated in place.
    momentum_buffer: array of that shape, or None before the first step (or when momentum=0).

    g <- grad + weight_decay * param
    if momentum != 0:
        b <- g                                  (first step)
        b <- momentum * b + (1 - dampening) * g (later steps)
        g <- g + momentum * b   (nesterov)   or   g <- b
    param <- param - lr * g
    """
    if weight_decay != 0:
        grad = grad + weight_decay * param
    if momentum != 0:
        if momentum_buffer is None:
            momentum_buffer = grad.copy()
        else:
            momentum_buffer *= momentum
            momentum_buffer += (1 - dampening) * grad
        grad = grad + momentum * momentum_buffer if nesterov else momentum_buffer
    param -= lr * grad
    return momentum_buffer


class SGD(Optimizer):
    r"""Stochastic gradient descent (PyTorch's ``torch.optim.SGD``), optionally with momentum.

    For each parameter ``p`` with gradient ``g`` at step ``t``:

    .. code-block:: text

        g   = -g                                         (maximize=True only)
        g   = g + weight_decay * p                       (L2 penalty, if weight_decay != 0)
        b_1 = g,   b_t = momentum * b_{t-1} + (1 - dampening) * g      (if momentum != 0)
        g   = g + momentum * b_t   (nesterov=True)       or   g = b_t
        p   = p - lr * g

    Relation to textbook forms: the heavy-ball method writes ``v = mu * v - lr * g; p = p + v``;
    with constant ``lr`` this is the same trajectory as ``b = mu * b + g; p = p - lr * b``
    (``v = -lr * b``), the form used here, which keeps behaving sensibly when a scheduler
    changes ``lr``. The buffer starts as the first gradient (no dampening on step 1).
    ``nesterov=True`` evaluates the momentum "look-ahead" ``g + mu * b`` (Sutskever et al., 2013,
    reformulated so no extra gradient evaluation is needed); it needs ``momentum > 0`` and
    ``dampening == 0``.

    Args:
        params: iterable of Tensors or of parameter-group dicts.
        lr: learning rate (>= 0). Default 1e-3 (as PyTorch 2.x).
        momentum: momentum factor mu (>= 0). Default 0.
        dampening: dampening of the gradient added to the buffer. Default 0.
        weight_decay: L2 penalty coefficient (>= 0). Default 0.
        nesterov: use Nesterov momentum. Default False.
        maximize: maximise the objective instead (the gradient is negated first). Default False.
        foreach, fused: accepted for PyTorch compatibility (None or bool); no effect.

    State per parameter: ``"momentum_buffer"`` (array shaped like the parameter; only when
    momentum != 0).
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, *,
                 maximize=False, foreach=None, fused=None):
        _check_compat_flags("SGD", foreach, fused)
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def _validate_group(self, group, group_index):
        for key in ("lr", "momentum", "dampening", "weight_decay"):
            self._check_nonnegative(group, key, group_index)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: nesterov=True requires momentum > 0 and dampening == 0, got "
                             f"momentum={group['momentum']!r}, dampening={group['dampening']!r}")

    def _update_group(self, group):
        for p, param, grad in self._params_with_grad(group):
            state = self.state.get(p)
            update = self._kernel("sgd_update", param)
            buffer = update(param, grad, state["momentum_buffer"] if state else None, lr=group["lr"],
                            momentum=group["momentum"], dampening=group["dampening"],
                            weight_decay=group["weight_decay"], nesterov=group["nesterov"])
            if buffer is not None:
                self.state[p] = {"momentum_buffer": buffer}
