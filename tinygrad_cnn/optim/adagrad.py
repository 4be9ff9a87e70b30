"""AdaGrad: per-coordinate step sizes from the sum of all past squared gradients."""
from __future__ import annotations

from .. import backend
from .optimizer import Optimizer, _check_compat_flags

__all__ = ["Adagrad"]


@backend.register_reference("adagrad_update")
def _adagrad_update(param, grad, state_sum, *, step, lr, lr_decay, weight_decay, eps):
    """One AdaGrad step on arrays, in place (``param`` and ``state_sum`` change).

    param, grad, state_sum: arrays of one shape. ``step`` counts this update (1 on the first).

    g     <- grad + weight_decay * param
    clr   =  lr / (1 + (step - 1) * lr_decay)
    sum   <- sum + g * g
    param <- param - clr * g / (sqrt(sum) + eps)
    """
    xp = backend.get_array_module(param)
    if weight_decay != 0:
        grad = grad + weight_decay * param
    clr = lr / (1 + (step - 1) * lr_decay)
    state_sum += grad * grad
    std = xp.sqrt(state_sum)
    std += eps
    param -= clr * grad / std


class Adagrad(Optimizer):
    r"""AdaGrad (Duchi, Hazan & Singer, 2011), PyTorch's ``torch.optim.Adagrad``.

    For each parameter ``p`` with gradient ``g`` at step ``t = 1, 2, ...``:

    .. code-block:: text

        g     = -g                           (maximize=True only)
        g     = g + weight_decay * p
        clr   = lr / (1 + (t - 1) * lr_decay)
        s_t   = s_{t-1} + g * g              (s_0 = initial_accumulator_value)
        p     = p - clr * g / (sqrt(s_t) + eps)

    Every coordinate gets its own step size ``clr / sqrt(sum of its squared gradients)``:
    rarely-updated (sparse) features keep large steps, frequently-updated ones slow down. Because
    ``s_t`` only grows, the effective step size decays like ``1/sqrt(t)`` even without
    ``lr_decay``; RMSprop and Adam replace the sum by a moving average to avoid that.

    Args:
        params: iterable of Tensors or of parameter-group dicts.
        lr: learning rate (>= 0). Default 1e-2.
        lr_decay: learning-rate decay per step (>= 0). Default 0.
        weight_decay: L2 penalty coefficient (>= 0). Default 0.
        initial_accumulator_value: starting value of ``s`` (>= 0). Default 0.
        eps: added to the denominator for numerical stability (>= 0). Default 1e-10.
        maximize: maximise the objective instead (the gradient is negated first). Default False.
        foreach, fused: accepted for PyTorch compatibility (None or bool); no effect.

    State per parameter: ``"step"`` (int), ``"sum"`` (array shaped like the parameter).
    """

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10, *, maximize=False, foreach=None, fused=None):
        _check_compat_flags("Adagrad", foreach, fused)
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize)
        super().__init__(params, defaults)

    def _validate_group(self, group, group_index):
        for key in ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
            self._check_nonnegative(group, key, group_index)

    def _update_group(self, group):
        for p, param, grad in self._params_with_grad(group):
            state = self.state.get(p)
            if state is None:
                xp = backend.get_array_module(param)
                state = self.state[p] = {
                    "step": 0,
                    "sum": xp.full_like(param, group["initial_accumulator_value"]),
                }
            state["step"] += 1
            update = self._kernel("adagrad_update", param)
            update(param, grad, state["sum"], step=state["step"], lr=group["lr"],
                   lr_decay=group["lr_decay"], weight_decay=group["weight_decay"], eps=group["eps"])
