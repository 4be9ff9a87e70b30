"""Gradient checking: compare backward() with central finite differences.

``gradcheck(fn, inputs)`` builds, for every input ``x_i`` and the output ``y``,
the numeric vector-Jacobian product ``v^T J_i`` with a random, non-uniform
upstream gradient ``v`` and compares it with what backward computes.

* Numeric side: ``d<v, y>/dx_k ~ (<v, y(x + eps e_k)> - <v, y(x - eps e_k)>) / (2 eps)``,
  one pair of forward calls per input element.
* Fast mode (``fast_mode=True``) projects once more: for a random direction ``u``
  it compares ``<v^T J_i, u>`` with ``(<v, y(x + eps u)> - <v, y(x - eps u)>) / (2 eps)``,
  two forward calls per input instead of two per element.
* Why a random ``v``: with ``v = 1`` every output counts equally, and errors that
  cancel in a sum (BatchNorm's mean-centred gradient is the classic case) pass.
* Backward is run twice and the two results must agree (determinism).

On failure a :class:`GradcheckError` is raised whose ``report`` names the input,
the worst element, the analytic and numeric values, the errors and likely causes.
"""
from __future__ import annotations

import contextlib

import numpy as np

from .autograd import enable_grad
from .backend import to_device
from .tensor import Tensor

__all__ = ["gradcheck", "gradgradcheck", "GradcheckError", "GradcheckReport"]


class GradcheckError(AssertionError):
    """Raised by gradcheck on a mismatch; ``.report`` holds the details."""

    def __init__(self, report):
        super().__init__(str(report))
        self.report = report


class GradcheckReport:
    """The outcome of a check: ``ok``, and on failure the details of the worst mismatch."""

    def __init__(self):
        self.ok = True
        self.failures = []   # list of dicts
        self.notes = []

    def fail(self, **details):
        self.ok = False
        self.failures.append(details)

    def __bool__(self):
        return self.ok

    def __str__(self):
        if self.ok:
            return "gradcheck passed"
        lines = ["gradcheck failed:"]
        for f in self.failures:
            lines.append(f"  {f['what']}")
            for key in ("input", "output", "index", "analytic", "numeric", "abs_error",
                        "rel_error", "tolerance"):
                if key in f:
                    lines.append(f"    {key:<10} {f[key]}")
            for hint in f.get("hints", ()):
                lines.append(f"    hint: {hint}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    __repr__ = __str__


def _as_tuple(inputs):
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _outputs_of(fn, inputs):
    """``fn(*inputs)`` as a tuple of Tensors, with gradient recording on.

    Recording stays on even for the finite-difference evaluations: ``fn`` may register
    hooks on its intermediate tensors (as PyTorch's gradcheck allows), and a hook needs a
    tensor that requires grad. The graph is dropped with the outputs.
    """
    with enable_grad():
        out = fn(*inputs)
    outs = _as_tuple(out)
    for o in outs:
        if not isinstance(o, Tensor):
            raise TypeError(f"gradcheck: fn must return Tensors, got {type(o).__name__}")
    return outs


@contextlib.contextmanager
def _hooks_on_inputs_undone(inputs):
    """Remove the hooks ``fn`` registered on the inputs themselves once a call is over, so
    they do not pile up over the many evaluations (and run once per backward, not N times)."""
    saved = [dict(x._hooks) if isinstance(x, Tensor) else None for x in inputs]
    try:
        yield
    finally:
        for x, hooks in zip(inputs, saved):
            if hooks is not None:
                x._hooks.clear()
                x._hooks.update(hooks)


def _hints(inputs, x_index, eps, flat_index, analytic, numeric):
    hints = []
    x = inputs[x_index]
    if x.dtype != np.float64:
        hints.append(f"input {x_index} is {x.dtype}; finite differences need float64 "
                     "(use .double())")
    values = np.asarray(x.numpy()).ravel()
    if values.size:
        v = values[flat_index]
        if abs(v) < 10 * eps:
            hints.append(f"input value {v:.3g} is within {10 * eps:g} of 0: a kink such as ReLU "
                         "or abs at 0 makes the numeric derivative meaningless there")
        others = np.delete(values, flat_index)
        if others.size and np.min(np.abs(others - v)) < 10 * eps:
            hints.append("another input element is nearly equal to this one: a tie in max/"
                         "max-pooling is a non-differentiable point")
    if eps < 1e-8:
        hints.append(f"eps={eps:g} is very small: round-off dominates the difference quotient")
    elif eps > 1e-3:
        hints.append(f"eps={eps:g} is large: curvature (truncation error) dominates")
    if analytic == 0 and numeric != 0:
        hints.append("analytic gradient is exactly 0: is the incoming gradient ignored or "
                     "the input detached/unused in backward?")
    if numeric != 0 and analytic != 0 and abs(analytic / numeric - round(analytic / numeric)) \
            < 1e-6 and round(analytic / numeric) not in (0, 1):
        hints.append(f"analytic/numeric = {analytic / numeric:.6g}: a missing or extra constant "
                     "factor (e.g. 1/N in a mean, 2 in a square)")
    return hints


def _vjp(fn, inputs, vs, create_graph=False):
    """Analytic <v, y> gradients w.r.t. every input (list of arrays or None)."""
    for x in inputs:
        x.grad = None
    with _hooks_on_inputs_undone(inputs):
        return _vjp_of_outputs(fn, inputs, vs, create_graph)


def _vjp_of_outputs(fn, inputs, vs, create_graph):
    outs = _outputs_of(fn, inputs)
    total = None
    for o, v in zip(outs, vs):
        if not o.requires_grad:
            continue
        # v is a host array; the output may live on the GPU.
        term = (o * Tensor._wrap(to_device(v, o.device))).sum()
        total = term if total is None else total + term
    if total is None:
        return [None] * len(inputs)
    total.backward(create_graph=create_graph)
    grads = [None if x.grad is None else np.array(x.grad.numpy(), copy=True) for x in inputs]
    for x in inputs:
        x.grad = None
    return grads


def _scalar(fn, inputs, vs):
    with _hooks_on_inputs_undone(inputs):
        outs = _outputs_of(fn, inputs)
    return float(sum(np.sum(np.asarray(o.numpy(), dtype=np.float64) * v) for o, v in zip(outs, vs)))


def _blame_outputs(fn, inputs, vs, i, index, eps, atol, rtol):
    """The outputs whose own vector-Jacobian product is wrong at element ``index`` of input ``i``."""
    data = inputs[i].array
    value = data[index]
    blamed = []
    for j in range(len(vs)):
        only_j = [v if k == j else np.zeros_like(v) for k, v in enumerate(vs)]
        grad = _vjp(fn, inputs, only_j)[i]
        analytic = 0.0 if grad is None else float(grad[index])
        try:
            data[index] = value + eps
            plus = _scalar(fn, inputs, only_j)
            data[index] = value - eps
            minus = _scalar(fn, inputs, only_j)
        finally:
            data[index] = value
        numeric = (plus - minus) / (2 * eps)
        if not abs(analytic - numeric) <= atol + rtol * abs(numeric):
            blamed.append(j)
    return blamed


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, fast_mode=False,
              raise_exception=True, seed=0, check_determinism=True, nondet_tol=0.0,
              return_report=False):
    """Check ``fn``'s backward against central differences.

    Args:
        fn: callable taking the input Tensors and returning a Tensor (or a tuple of them).
            It is always evaluated with gradient recording on, so ``fn`` may register hooks on
            intermediate tensors (a hook that changes the gradient is then caught here) or
            call ``backward`` itself (a gradient penalty).
            With several outputs, a failure names the output(s) that fail on their own.
        inputs: a Tensor or tuple of Tensors; those with ``requires_grad`` are checked.
            They should be float64.
        eps: finite-difference step.
        atol, rtol: pass when ``|analytic - numeric| <= atol + rtol * |numeric|`` everywhere.
        fast_mode: compare one random projection per input instead of the full Jacobian.
        raise_exception: raise :class:`GradcheckError` on failure (default) or return False.
        seed: seed of the random upstream gradient and projection directions.
        check_determinism: run backward twice and require equal results (within nondet_tol).
        return_report: return the :class:`GradcheckReport` instead of a bool.
    Returns:
        True on success (or the report when ``return_report``).
    """
    inputs = _as_tuple(inputs)
    report = GradcheckReport()
    rng = np.random.default_rng(seed)
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad; nothing to check")
    for i in checked:
        if inputs[i].dtype != np.float64:
            report.notes.append(f"input {i} has dtype {inputs[i].dtype}; float64 is strongly "
                                "recommended")
    with _hooks_on_inputs_undone(inputs):
        outs = _outputs_of(fn, inputs)
    # Upstream gradient: random and non-uniform, in [0.5, 1.5) with random signs.
    vs = [(rng.uniform(0.5, 1.5, size=o.shape) * rng.choice([-1.0, 1.0], size=o.shape))
          for o in outs]

    analytic = _vjp(fn, inputs, vs)
    if check_determinism:
        again = _vjp(fn, inputs, vs)
        for i in checked:
            a, b = analytic[i], again[i]
            if (a is None) != (b is None) or (a is not None and
                                              np.max(np.abs(a - b), initial=0) > nondet_tol):
                report.fail(what=f"backward is not deterministic for input {i}: two runs gave "
                                 "different gradients", input=i)

    for i in checked:
        x = inputs[i]
        grad = analytic[i]
        if grad is None:
            grad = np.zeros(x.shape)
        data = x.array
        original = data.copy()
        try:
            if fast_mode:
                u = rng.standard_normal(x.shape)
                u_here = to_device(u, x.device)
                data[...] = original + eps * u_here
                plus = _scalar(fn, inputs, vs)
                data[...] = original - eps * u_here
                minus = _scalar(fn, inputs, vs)
                numeric = (plus - minus) / (2 * eps)
                value = float(np.sum(grad * u))
                err = abs(value - numeric)
                tol = atol + rtol * abs(numeric)
                if not err <= tol:
                    report.fail(what=f"input {i}: projected gradient <grad, u> does not match "
                                     "finite differences (fast mode; rerun with fast_mode=False "
                                     "for the element)", input=i, output="all (projected)",
                                analytic=value, numeric=numeric, abs_error=err,
                                rel_error=err / max(abs(numeric), 1e-300), tolerance=tol,
                                hints=_hints(inputs, i, eps, 0, value, numeric)[:1]
                                if x.dtype != np.float64 else [])
                continue
            numeric = np.zeros(x.shape)
            flat = data.reshape(-1) if data.flags.c_contiguous else None
            for k in range(x.array.size):
                index = np.unravel_index(k, x.shape)
                data[index] = original[index] + eps
                plus = _scalar(fn, inputs, vs)
                data[index] = original[index] - eps
                minus = _scalar(fn, inputs, vs)
                data[index] = original[index]
                numeric[index] = (plus - minus) / (2 * eps)
            del flat
        finally:
            data[...] = original
        err = np.abs(grad - numeric)
        tol = atol + rtol * np.abs(numeric)
        bad = ~(err <= tol)
        if bad.any():
            worst = int(np.argmax(np.where(bad, err - tol, -np.inf)))
            index = np.unravel_index(worst, x.shape)
            a, n = float(grad[index]), float(numeric[index])
            if len(outs) == 1:
                output = "0 (weighted by a random upstream gradient)"
            else:
                blamed = _blame_outputs(fn, inputs, vs, i, index, eps, atol, rtol)
                output = (", ".join(str(j) for j in blamed) if blamed else
                          f"none of the {len(outs)} outputs alone; only their weighted sum")
            report.fail(what=f"input {i} (shape {x.shape}): {int(bad.sum())} of {bad.size} "
                             "gradient elements do not match finite differences",
                        input=i, output=output,
                        index=tuple(int(j) for j in index), analytic=a, numeric=n,
                        abs_error=abs(a - n), rel_error=abs(a - n) / max(abs(n), 1e-300),
                        tolerance=float(tol[index]),
                        hints=_hints(inputs, i, eps, worst, a, n))
    if return_report:
        if not report.ok and raise_exception:
            raise GradcheckError(report)
        return report
    if not report.ok:
        if raise_exception:
            raise GradcheckError(report)
        gradcheck.last_report = report
        return False
    gradcheck.last_report = report
    return True


gradcheck.last_report = None


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3,
                  fast_mode=False, raise_exception=True, seed=0, return_report=False):
    """Check second derivatives: gradcheck of ``x -> d<v, fn(x)>/dx`` computed with create_graph.

    ``grad_outputs`` (the fixed upstream ``v``) defaults to a random non-uniform array,
    and is itself checked as an input (the gradient is linear in it).
    """
    inputs = _as_tuple(inputs)
    rng = np.random.default_rng(seed + 1)
    with _hooks_on_inputs_undone(inputs):
        outs = _outputs_of(fn, inputs)
    if grad_outputs is None:
        grad_outputs = tuple(Tensor(rng.uniform(0.5, 1.5, size=o.shape)
                                    * rng.choice([-1.0, 1.0], size=o.shape),
                                    dtype=np.float64, device=o.device, requires_grad=True)
                              for o in outs)
    grad_outputs = _as_tuple(grad_outputs)
    checked = [i for i, x in enumerate(inputs) if x.requires_grad]

    def first_derivative(*args):
        xs, gos = args[:len(inputs)], args[len(inputs):]
        # The first derivative needs its graph whatever mode the caller is in.
        with enable_grad():
            results = _as_tuple(fn(*xs))
            total = None
            for o, go in zip(results, gos):
                if o.requires_grad:
                    term = (o * go).sum()
                    total = term if total is None else total + term
            saved = [a.grad for a in args]
            for a in args:
                a.grad = None
            if total is not None:
                total.backward(create_graph=True)
            grads = []
            for j in checked:
                g = xs[j].grad
                grads.append(g if g is not None else xs[j] * 0.0)
            # The inner backward must not leak into the outer one's accumulation.
            for a, g in zip(args, saved):
                a.grad = g
        return tuple(grads)

    return gradcheck(first_derivative, tuple(inputs) + tuple(grad_outputs), eps=eps, atol=atol,
                     rtol=rtol, fast_mode=fast_mode, raise_exception=raise_exception,
                     seed=seed, return_report=return_report)
