"""NAdam (Adam with Nesterov momentum) and RAdam (Adam with a rectified warm-up)."""
from __future__ import annotations

import math

from .. import backend
from .adam import adam_moments_
from .optimizer import Optimizer, _check_compat_flags

__all__ = ["NAdam", "RAdam"]


@backend.register_reference("nadam_update")
def _nadam_update(param, grad, exp_avg, exp_avg_sq, *, step, mu, mu_next, mu_product, lr, beta1, beta2,
                  eps, weight_decay, decoupled_weight_decay):
    """One NAdam step on arrays, in place. ``mu_product`` is prod(mu_1 .. mu_step).

    m <- beta1 * m + (1 - beta1) * g;   v <- beta2 * v + (1 - beta2) * g^2
    den = sqrt(v / (1 - beta2^step)) + eps
    param <- param - lr * (1 - mu) / (1 - mu_product) * g / den
                   - lr * mu_next / (1 - mu_product * mu_next) * m / den
    """
    xp = backend.get_array_module(param)
    grad = adam_moments_(param, grad, exp_avg, exp_avg_sq, lr=lr, beta1=beta1, beta2=beta2,
                         weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay)
    denom = xp.sqrt(exp_avg_sq / (1 - beta2 ** step))
    denom += eps
    param -= lr * (1 - mu) / (1 - mu_product) * grad / denom
    param -= lr * mu_next / (1 - mu_product * mu_next) * exp_avg / denom


@backend.register_reference("radam_update")
def _radam_update(param, grad, exp_avg, exp_avg_sq, *, step, lr, beta1, beta2, eps, weight_decay,
                  decoupled_weight_decay):
    """One RAdam step on arrays, in place.

    m, v as Adam; m_hat = m / (1 - beta1^step)
    rho_inf = 2 / (1 - beta2) - 1;   rho = rho_inf - 2 step beta2^step / (1 - beta2^step)
    rho > 5:  param <- param - lr * m_hat * r * sqrt(1 - beta2^step) / (sqrt(v) + eps),
              r = sqrt((rho - 4)(rho - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho))
    else:     param <- param - lr * m_hat        (the variance estimate is not yet trusted)
    """
    xp = backend.get_array_module(param)
    grad = adam_moments_(param, grad, exp_avg, exp_avg_sq, lr=lr, beta1=beta1, beta2=beta2,
                         weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay)
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    rho_inf = 2 / (1 - beta2) - 1
    rho = rho_inf - 2 * step * beta2 ** step / bias_correction2
    if rho > 5:
        rect = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
        adaptive = math.sqrt(bias_correction2) / (xp.sqrt(exp_avg_sq) + eps)
        param -= lr / bias_correction1 * rect * exp_avg * adaptive
    else:
        param -= lr / bias_correction1 * exp_avg


class _AdamFamily(Optimizer):
    def _validate_group(self, group, group_index):
        name = type(self).__name__
        for key in ("lr", "eps", "weight_decay"):
            self._check_nonnegative(group, key, group_index)
        beta1, beta2 = group["betas"]
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"{name}: betas must be in [0, 1), got {group['betas']!r} (param group {group_index})")

    def _state_for(self, p, param):
        state = self.state.get(p)
        if state is None:
            xp = backend.get_array_module(param)
            state = self.state[p] = {"step": 0, "exp_avg": xp.zeros_like(param),
                                     "exp_avg_sq": xp.zeros_like(param)}
        return state


class NAdam(_AdamFamily):
    r"""NAdam (Dozat, 2016), PyTorch's ``torch.optim.NAdam``: Adam whose momentum looks one step ahead.

    .. code-block:: text

        mu_t  = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay))
        m_t, v_t as Adam;  den = sqrt(v_t / (1 - beta2^t)) + eps
        p = p - lr (1 - mu_t) / (1 - prod_{i<=t} mu_i) g / den
              - lr mu_{t+1} / (1 - prod_{i<=t+1} mu_i) m_t / den

    Args: lr (default 2e-3), betas (0.9, 0.999), eps 1e-8, weight_decay 0, momentum_decay 4e-3,
    decoupled_weight_decay False (True: AdamW-style decay), maximize, foreach, ... as the others.
    State per parameter: ``"step"``, ``"mu_product"``, ``"exp_avg"``, ``"exp_avg_sq"``.
    """

    def __init__(self, params, lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, momentum_decay=4e-3,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False):
        _check_compat_flags("NAdam", foreach, None)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                        maximize=maximize)
        super().__init__(params, defaults)

    def _validate_group(self, group, group_index):
        super()._validate_group(group, group_index)
        self._check_nonnegative(group, "momentum_decay", group_index)

    def _update_group(self, group):
        beta1, beta2 = group["betas"]
        for p, param, grad in self._params_with_grad(group):
            state = self._state_for(p, param)
            state.setdefault("mu_product", 1.0)
            state["step"] += 1
            step = state["step"]
            mu = beta1 * (1 - 0.5 * 0.96 ** (step * group["momentum_decay"]))
            mu_next = beta1 * (1 - 0.5 * 0.96 ** ((step + 1) * group["momentum_decay"]))
            state["mu_product"] *= mu
            update = self._kernel("nadam_update", param)
            update(param, grad, state["exp_avg"], state["exp_avg_sq"], step=step, mu=mu, mu_next=mu_next,
                   mu_product=state["mu_product"], lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                   weight_decay=group["weight_decay"], decoupled_weight_decay=group["decoupled_weight_decay"])


class RAdam(_AdamFamily):
    r"""RAdam (Liu et al., 2020), PyTorch's ``torch.optim.RAdam``: Adam that takes plain momentum
    steps until the variance of its adaptive step size can be estimated (``rho_t > 5``), then
    rectifies it.

    Args: lr (default 1e-3), betas (0.9, 0.999), eps 1e-8, weight_decay 0, decoupled_weight_decay
    False, maximize, foreach, ... as the others. State per parameter: ``"step"``, ``"exp_avg"``,
    ``"exp_avg_sq"``.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False):
        _check_compat_flags("RAdam", foreach, None)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _update_group(self, group):
        beta1, beta2 = group["betas"]
        for p, param, grad in self._params_with_grad(group):
            state = self._state_for(p, param)
            state["step"] += 1
            update = self._kernel("radam_update", param)
            update(param, grad, state["exp_avg"], state["exp_avg_sq"], step=state["step"], lr=group["lr"],
                   beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                   decoupled_weight_decay=group["decoupled_weight_decay"])
