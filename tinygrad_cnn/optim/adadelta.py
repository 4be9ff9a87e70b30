"""Adadelta: step sizes from running averages of squared gradients and of squared updates."""
from __future__ import annotations

from .. import backend
from .optimizer import Optimizer, _check_compat_flags

__all__ = ["Adadelta"]


@backend.register_reference("adadelta_update")
def _adadelta_update(param, grad, square_avg, acc_delta, *, lr, rho, eps, weight_decay):
    """One Adadelta step on arrays, in place (``param``, ``square_avg`` and ``acc_delta`` change).

    g     <- grad + weight_decay * param
    v     <- rho * v + (1 - rho) * g^2
    delta =  sqrt(u + eps) / sqrt(v + eps) * g
    u     <- rho * u + (1 - rho) * delta^2
    param <- param - lr * delta
    """
    xp = backend.get_array_module(param)
    if weight_decay != 0:
        grad = grad + weight_decay * param
    square_avg *= rho
    square_avg += (1 - rho) * grad * grad
    delta = xp.sqrt(acc_delta + eps) / xp.sqrt(square_avg + eps) * grad
    acc_delta *= rho
    acc_delta += (1 - rho) * delta * delta
    param -= lr * delta


class Adadelta(Optimizer):
    r"""Adadelta (Zeiler, 2012), PyTorch's ``torch.optim.Adadelta``.

    .. code-block:: text

        g     = -g                                      (maximize=True only)
        g     = g + weight_decay * p
        v_t   = rho * v_{t-1} + (1 - rho) * g^2         (v_0 = 0)
        delta = sqrt(u_{t-1} + eps) / sqrt(v_t + eps) * g
        u_t   = rho * u_{t-1} + (1 - rho) * delta^2     (u_0 = 0)
        p     = p - lr * delta

    The ratio of the two running RMS values gives each coordinate a step with the units of the
    parameter, so the default ``lr`` is 1.0 (it only rescales).

    Args:
        params: iterable of Tensors or of parameter-group dicts.
        lr: scale of the update (>= 0). Default 1.0.
        rho: smoothing constant of both averages (>= 0). Default 0.9.
        eps: added inside both square roots (>= 0). Default 1e-6.
        weight_decay: L2 penalty coefficient (>= 0). Default 0.
        maximize, foreach, fused, capturable, differentiable: as the other optimizers.

    State per parameter: ``"step"`` (int), ``"square_avg"``, ``"acc_delta"``.
    """

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, foreach=None, *,
                 capturable=False, maximize=False, differentiable=False):
        _check_compat_flags("Adadelta", foreach, None)
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _validate_group(self, group, group_index):
        for key in ("lr", "rho", "eps", "weight_decay"):
            self._check_nonnegative(group, key, group_index)
        if group["rho"] > 1:
            raise ValueError(f"Adadelta: rho must be in [0, 1], got {group['rho']!r} (param group {group_index})")

    def _update_group(self, group):
        for p, param, grad in self._params_with_grad(group):
            state = self.state.get(p)
            if state is None:
                xp = backend.get_array_module(param)
                state = self.state[p] = {"step": 0, "square_avg": xp.zeros_like(param),
                                         "acc_delta": xp.zeros_like(param)}
            state["step"] += 1
            update = self._kernel("adadelta_update", param)
            update(param, grad, state["square_avg"], state["acc_delta"], lr=group["lr"], rho=group["rho"],
                   eps=group["eps"], weight_decay=group["weight_decay"])
