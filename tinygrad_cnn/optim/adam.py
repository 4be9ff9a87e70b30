"""Adam and AdamW: momentum on the gradient, RMS scaling per coordinate, bias correction."""
from __future__ import annotations

import math
import numbers

from .. import backend
from .optimizer import Optimizer, _check_compat_flags, _lerp_

__all__ = ["Adam", "AdamW"]


def adam_moments_(param, grad, exp_avg, exp_avg_sq, *, lr, beta1, beta2, weight_decay,
                  decoupled_weight_decay):
    """The part Adam, AdamW, NAdam and RAdam share, in place; returns the gradient used.

    Weight decay, decoupled (``param <- param * (1 - lr * weight_decay)``, AdamW) or added to the
    gradient (``g <- grad + weight_decay * param``), then the moments
    ``m <- beta1 * m + (1 - beta1) * g`` and ``v <- beta2 * v + (1 - beta2) * g^2``.
    """
    if weight_decay != 0:
        if decoupled_weight_decay:
            param *= 1 - lr * weight_decay
        else:
            grad = grad + weight_decay * param
    _lerp_(exp_avg, grad, 1 - beta1)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    return grad


@backend.register_reference("adam_update")
def _adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, step, lr, beta1, beta2, eps,
                 weight_decay, amsgrad, decoupled_weight_decay):
    """One Adam/AdamW step on arrays, in place (``param`` and the moment buffers change).

    param, grad, exp_avg, exp_avg_sq: arrays of one shape; ``max_exp_avg_sq`` such an array when
    amsgrad else None. ``step`` counts this update (1 on the first).

    param <- param * (1 - lr * weight_decay)    (AdamW)   or   g <- grad + weight_decay * param (Adam)
    m     <- beta1 * m + (1 - beta1) * g
    v     <- beta2 * v + (1 - beta2) * g^2
    vmax  <- max(vmax, v)                                       (amsgrad; used instead of v below)
    param <- param - lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
    """
    xp = backend.get_array_module(param)
    grad = adam_moments_(param, grad, exp_avg, exp_avg_sq, lr=lr, beta1=beta1, beta2=beta2,
                         weight_decay=weight_decay, decoupled_weight_decay=decoupled_weight_decay)
    bias_correction1 = 1 - beta1 ** step
    bias_correction2 = 1 - beta2 ** step
    step_size = lr / bias_correction1
    if amsgrad:
        xp.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        denom = xp.sqrt(max_exp_avg_sq)
    else:
        denom = xp.sqrt(exp_avg_sq)
    denom /= math.sqrt(bias_correction2)
    denom += eps
    param -= step_size * exp_avg / denom


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015), PyTorch's ``torch.optim.Adam``.

    For each parameter ``p`` with gradient ``g`` at step ``t = 1, 2, ...``:

    .. code-block:: text

        g     = -g                                         (maximize=True only)
        g     = g + weight_decay * p                       (L2 penalty folded into the gradient)
        m_t   = beta1 * m_{t-1} + (1 - beta1) * g          (first moment, m_0 = 0)
        v_t   = beta2 * v_{t-1} + (1 - beta2) * g^2        (second moment, v_0 = 0)
        m_hat = m_t / (1 - beta1^t),   v_hat = v_t / (1 - beta2^t)
        p     = p - lr * m_hat / (sqrt(v_hat) + eps)

    ``m`` is momentum written as an exponential moving average (the textbook ``m = beta*m + g``
    rescaled by ``1 - beta``), ``v`` is RMSprop's moving average of squared gradients. Both start
    at zero, so early on they underestimate the true moments by the factor ``1 - beta^t``; the
    *bias correction* divides it out (without it the first steps would be tiny for ``m`` and
    huge for ``1/sqrt(v)``). Implementation detail shared with PyTorch: ``eps`` is added to
    ``sqrt(v_t) / sqrt(1 - beta2^t)``, i.e. to ``sqrt(v_hat)``, and ``lr / (1 - beta1^t)`` is
    applied as one scalar step size. ``amsgrad=True`` (Reddi et al., 2018) uses the running
    maximum of ``v_t`` in the denominator, so per-coordinate step sizes never grow.

    Args:
        params: iterable of Tensors or of parameter-group dicts.
        lr: learning rate (>= 0). Default 1e-3.
        betas: ``(beta1, beta2)``, each in [0, 1). Default (0.9, 0.999).
        eps: added to the denominator (>= 0). Default 1e-8.
        weight_decay: L2 penalty coefficient (>= 0). Default 0. See :class:`AdamW`.
        amsgrad: use the AMSGrad variant. Default False.
        decoupled_weight_decay: apply weight decay as AdamW does. Default False.
        maximize: maximise the objective instead (the gradient is negated first). Default False.
        foreach, fused: accepted for PyTorch compatibility (None or bool); no effect.

    State per parameter: ``"step"`` (int), ``"exp_avg"``, ``"exp_avg_sq"`` and, with amsgrad,
    ``"max_exp_avg_sq"`` (arrays shaped like the parameter).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, *,
                 maximize=False, foreach=None, fused=None, decoupled_weight_decay=False):
        _check_compat_flags(type(self).__name__, foreach, fused)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def _validate_group(self, group, group_index):
        name = type(self).__name__
        for key in ("lr", "eps", "weight_decay"):
            self._check_nonnegative(group, key, group_index)
        betas = group["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        for i, beta in enumerate(betas):
            if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0.0 <= beta < 1.0:
                raise ValueError(f"{name}: invalid betas[{i}]={beta!r} in betas={tuple(betas)!r}; "
                                 "each beta must be in [0, 1)")
        group["betas"] = tuple(betas)

    def _update_group(self, group):
        beta1, beta2 = group["betas"]
        for p, param, grad in self._params_with_grad(group):
            state = self.state.get(p)
            if state is None:
                xp = backend.get_array_module(param)
                state = self.state[p] = {"step": 0, "exp_avg": xp.zeros_like(param),
                                         "exp_avg_sq": xp.zeros_like(param)}
            if group["amsgrad"] and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = backend.get_array_module(param).zeros_like(param)
            state["step"] += 1
            update = self._kernel("adam_update", param)
            update(param, grad, state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq"),
                   step=state["step"], lr=group["lr"], beta1=beta1, beta2=beta2, eps=group["eps"],
                   weight_decay=group["weight_decay"], amsgrad=group["amsgrad"],
                   decoupled_weight_decay=group["decoupled_weight_decay"])


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov & Hutter, 2019), PyTorch's ``torch.optim.AdamW``.

    Identical to :class:`Adam` except for the weight decay, which shrinks the parameter directly
    (scaled by the learning rate) instead of being added to the gradient:

    .. code-block:: text

        p     = p * (1 - lr * weight_decay)
        m_t, v_t, m_hat, v_hat as in Adam, computed from the raw gradient g
        p     = p - lr * m_hat / (sqrt(v_hat) + eps)

    Why AdamW is not "Adam + L2": with L2 the decay term ``weight_decay * p`` enters ``m`` and
    ``v`` and is then divided by ``sqrt(v_hat)``, so coordinates with large gradients are barely
    regularised and the effective decay depends on gradient history. For plain SGD both views
    coincide; for adaptive methods only the decoupled form shrinks every weight by the same
    factor ``1 - lr * weight_decay`` per step, which generalises better and makes the best
    ``weight_decay`` largely independent of ``lr``'s schedule shape.

    Args:
        params, lr, betas, eps, amsgrad, maximize, foreach, fused: as :class:`Adam`.
        weight_decay: decoupled decay coefficient (>= 0). Default 1e-2.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, fused=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, foreach=foreach, fused=fused, decoupled_weight_decay=True)
