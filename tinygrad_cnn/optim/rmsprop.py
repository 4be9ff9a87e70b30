"""RMSprop: divide the gradient by a running root-mean-square of recent gradients."""
from __future__ import annotations

from .. import backend
from .optimizer import Optimizer, _check_compat_flags, _lerp_

__all__ = ["RMSprop"]


@backend.register_reference("rmsprop_update")
def _rmsprop_update(param, grad, square_avg, grad_avg, momentum_buffer, *, lr, alpha, eps, weight_decay,
                    momentum, centered):
    """One RMSprop step on arrays, in place (``param`` and the given buffers change).

    param, grad, square_avg: arrays of one shape; ``grad_avg`` such an array when centered else
    None; ``momentum_buffer`` such an array when momentum > 0 else None.

    g   <- grad + weight_decay * param
    v   <- alpha * v + (1 - alpha) * g^2
    m   <- alpha * m + (1 - alpha) * g              (centered only)
    den =  sqrt(v - m^2) + eps  (centered)   or   sqrt(v) + eps
    b   <- momentum * b + g / den;  param <- param - lr * b      (momentum > 0)
    param <- param - lr * g / den                                (otherwise)
    """
    xp = backend.get_array_module(param)
    if weight_decay != 0:
        grad = grad + weight_decay * param
    square_avg *= alpha
    square_avg += (1 - alpha) * grad * grad
    if centered:
        _lerp_(grad_avg, grad, 1 - alpha)
        avg = xp.sqrt(square_avg - grad_avg * grad_avg)
    else:
        avg = xp.sqrt(square_avg)
    avg += eps
    if momentum > 0:
        momentum_buffer *= momentum
        momentum_buffer += grad / avg
        param -= lr * momentum_buffer
    else:
        param -= lr * grad / avg


class RMSprop(Optimizer):
    r"""RMSprop (Hinton, Coursera lecture 6e, 2012), PyTorch's ``torch.optim.RMSprop``.

    For each parameter ``p`` with gradient ``g``:

    .. code-block:: text

        g   = -g                                         (maximize=True only)
        g   = g + weight_decay * p
        v_t = alpha * v_{t-1} + (1 - alpha) * g^2        (v_0 = 0)
        m_t = alpha * m_{t-1} + (1 - alpha) * g          (centered=True only, m_0 = 0)
        den = sqrt(v_t - m_t^2) + eps   (centered)   or   sqrt(v_t) + eps
        b_t = momentum * b_{t-1} + g / den,  p = p - lr * b_t     (momentum > 0, b_0 = 0)
        p   = p - lr * g / den                                    (momentum = 0)

    ``v`` is an exponential moving average of squared gradients, so ``sqrt(v)`` is a running
    RMS of each coordinate's gradient: unlike AdaGrad's ever-growing sum it forgets old
    gradients and the step size does not decay to zero. The centered variant (Graves, 2013)
    divides by an estimate of the gradient's standard deviation instead of its RMS. Note that
    ``eps`` is added after the square root and there is no bias correction (unlike Adam).

    Args:
        params: iterable of Tensors or of parameter-group dicts.
        lr: learning rate (>= 0). Default 1e-2.
        alpha: smoothing constant of the moving averages (>= 0). Default 0.99.
        eps: added to the denominator (>= 0). Default 1e-8.
        weight_decay: L2 penalty coefficient (>= 0). Default 0.
        momentum: momentum factor (>= 0). Default 0.
        centered: normalise by the estimated variance instead of the second moment. Default False.
        maximize: maximise the objective instead (the gradient is negated first). Default False.
        foreach, fused: accepted for PyTorch compatibility (None or bool); no effect.

    State per parameter: ``"step"`` (int), ``"square_avg"``, plus ``"momentum_buffer"`` when
    momentum > 0 and ``"grad_avg"`` when centered (arrays shaped like the parameter).
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                 *, maximize=False, foreach=None, fused=None):
        _check_compat_flags("RMSprop", foreach, fused)
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered, maximize=maximize)
        super().__init__(params, defaults)

    def _validate_group(self, group, group_index):
        for key in ("lr", "alpha", "eps", "weight_decay", "momentum"):
            self._check_nonnegative(group, key, group_index)

    def _update_group(self, group):
        for p, param, grad in self._params_with_grad(group):
            state = self.state.get(p)
            if state is None:
                xp = backend.get_array_module(param)
                state = self.state[p] = {"step": 0, "square_avg": xp.zeros_like(param)}
            # Buffers are created on demand so a group switched to momentum/centered later works.
            if group["momentum"] > 0 and "momentum_buffer" not in state:
                state["momentum_buffer"] = backend.get_array_module(param).zeros_like(param)
            if group["centered"] and "grad_avg" not in state:
                state["grad_avg"] = backend.get_array_module(param).zeros_like(param)
            state["step"] += 1
            update = self._kernel("rmsprop_update", param)
            update(param, grad, state["square_avg"], state.get("grad_avg"), state.get("momentum_buffer"),
                   lr=group["lr"], alpha=group["alpha"], eps=group["eps"],
                   weight_decay=group["weight_decay"], momentum=group["momentum"],
                   centered=group["centered"])
