"""Optimizer trajectories against hand-written NumPy versions of the textbook update formulas.

Each test runs several steps on parameters of different shapes. The gradient depends on the
current parameter (g = a * p + noise_t), so an error in any step changes every later step.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_cnn
from tinygrad_cnn import optim
from tinygrad_cnn.testing import shapes

STEPS = 6


# ---------------------------------------------------------------- references (plain formulas)
def sgd_reference(params, grad_fn, steps, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    params = [p.copy() for p in params]
    bufs = [None] * len(params)
    for t in range(steps):
        for i, p in enumerate(params):
            g = grad_fn(i, p, t) + weight_decay * p
            if momentum != 0:
                bufs[i] = g.copy() if bufs[i] is None else momentum * bufs[i] + (1 - dampening) * g
                d = g + momentum * bufs[i] if nesterov else bufs[i]
            else:
                d = g
            params[i] = p - lr * d
    return params


def adagrad_reference(params, grad_fn, steps, lr, lr_decay=0.0, weight_decay=0.0,
                      initial_accumulator_value=0.0, eps=1e-10):
    params = [p.copy() for p in params]
    sums = [np.full_like(p, initial_accumulator_value) for p in params]
    for t in range(1, steps + 1):
        for i, p in enumerate(params):
            g = grad_fn(i, p, t - 1) + weight_decay * p
            sums[i] = sums[i] + g ** 2
            step_size = lr / (1 + (t - 1) * lr_decay)
            params[i] = p - step_size * g / (np.sqrt(sums[i]) + eps)
    return params


def rmsprop_reference(params, grad_fn, steps, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                      centered=False):
    params = [p.copy() for p in params]
    v = [np.zeros_like(p) for p in params]
    m = [np.zeros_like(p) for p in params]
    b = [np.zeros_like(p) for p in params]
    for t in range(steps):
        for i, p in enumerate(params):
            g = grad_fn(i, p, t) + weight_decay * p
            v[i] = alpha * v[i] + (1 - alpha) * g ** 2
            if centered:
                m[i] = alpha * m[i] + (1 - alpha) * g
                denom = np.sqrt(v[i] - m[i] ** 2) + eps
            else:
                denom = np.sqrt(v[i]) + eps
            if momentum > 0:
                b[i] = momentum * b[i] + g / denom
                params[i] = p - lr * b[i]
            else:
                params[i] = p - lr * g / denom
    return params


def adam_reference(params, grad_fn, steps, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                   decoupled=False):
    beta1, beta2 = betas
    params = [p.copy() for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    v_max = [np.zeros_like(p) for p in params]
    for t in range(1, steps + 1):
        for i, p in enumerate(params):
            g = grad_fn(i, p, t - 1)
            if decoupled:
                p = p * (1 - lr * weight_decay)
            else:
                g = g + weight_decay * p
            m[i] = beta1 * m[i] + (1 - beta1) * g
            v[i] = beta2 * v[i] + (1 - beta2) * g ** 2
            m_hat = m[i] / (1 - beta1 ** t)
            if amsgrad:
                v_max[i] = np.maximum(v_max[i], v[i])
                v_hat = v_max[i] / (1 - beta2 ** t)
            else:
                v_hat = v[i] / (1 - beta2 ** t)
            params[i] = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return params


# ---------------------------------------------------------------- harness
class Problem:
    """Parameters of several shapes and a parameter-dependent gradient g_i = a_i * p_i + noise_{i,t}."""

    def __init__(self, param_shapes, seed, steps=STEPS):
        rng = np.random.default_rng(seed)
        self.initial = [rng.standard_normal(s) for s in param_shapes]
        self.scales = [rng.uniform(0.5, 2.0, size=s) for s in param_shapes]
        self.noise = [[rng.standard_normal(s) for _ in range(steps)] for s in param_shapes]

    def grad(self, i, p, t):
        return self.scales[i] * p + self.noise[i][t]

    def run(self, make_optimizer, steps=STEPS, dtype=np.float64):
        tensors = [tinygrad_cnn.Tensor(p.astype(dtype), requires_grad=True) for p in self.initial]
        opt = make_optimizer(tensors)
        for t in range(steps):
            for i, p in enumerate(tensors):
                p.grad = tinygrad_cnn.Tensor(self.grad(i, p.array.astype(np.float64), t).astype(dtype))
            opt.step()
        return [p.array for p in tensors]


def check(problem, make_optimizer, expected, rtol=1e-10, atol=1e-12):
    got = problem.run(make_optimizer)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)


param_shape_lists = st.lists(shapes(min_dims=0, max_dims=3, min_side=1, max_side=4), min_size=1, max_size=3)
seeds = st.integers(0, 2 ** 16)
fast = settings(max_examples=12, deadline=None)


# ---------------------------------------------------------------- SGD
@pytest.mark.parametrize("momentum_on,dampening_on,nesterov,wd_on", [
    (False, False, False, False), (False, False, False, True), (True, False, False, False),
    (True, True, False, False), (True, False, True, False), (True, True, False, True), (True, False, True, True),
])
@fast
@given(param_shape_lists, seeds, st.floats(1e-3, 0.3), st.floats(0.1, 0.95), st.floats(0.1, 0.9),
       st.floats(1e-3, 0.2))
def test_sgd_matches_formula(momentum_on, dampening_on, nesterov, wd_on, param_shapes, seed, lr, momentum,
                             dampening, weight_decay):
    kw = dict(lr=lr, momentum=momentum if momentum_on else 0.0, dampening=dampening if dampening_on else 0.0,
              weight_decay=weight_decay if wd_on else 0.0, nesterov=nesterov)
    problem = Problem(param_shapes, seed)
    expected = sgd_reference(problem.initial, problem.grad, STEPS, **kw)
    check(problem, lambda ps: optim.SGD(ps, **kw), expected)


def test_sgd_first_momentum_step_uses_undamped_gradient():
    # PyTorch initialises the buffer with the gradient itself: step 1 moves by lr * g, not lr*(1-d)*g.
    p = tinygrad_cnn.Tensor(np.array([1.0, -2.0]), requires_grad=True)
    opt = optim.SGD([p], lr=0.5, momentum=0.9, dampening=0.5)
    p.grad = tinygrad_cnn.Tensor(np.array([2.0, 4.0]))
    opt.step()
    np.testing.assert_array_equal(p.array, [0.0, -4.0])
    opt.step()  # b = 0.9 * g + 0.5 * g = 1.4 g
    np.testing.assert_allclose(p.array, [0.0 - 0.5 * 2.8, -4.0 - 0.5 * 5.6])


# ---------------------------------------------------------------- Adagrad
@pytest.mark.parametrize("lr_decay_on,wd_on,init_on", [
    (False, False, False), (True, False, False), (False, True, False), (False, False, True), (True, True, True),
])
@fast
@given(param_shape_lists, seeds, st.floats(1e-3, 0.5), st.floats(1e-3, 0.5), st.floats(1e-3, 0.2),
       st.floats(0.01, 1.0), st.sampled_from([1e-10, 1e-3, 0.1]))
def test_adagrad_matches_formula(lr_decay_on, wd_on, init_on, param_shapes, seed, lr, lr_decay, weight_decay,
                                 init, eps):
    kw = dict(lr=lr, lr_decay=lr_decay if lr_decay_on else 0.0, weight_decay=weight_decay if wd_on else 0.0,
              initial_accumulator_value=init if init_on else 0.0, eps=eps)
    problem = Problem(param_shapes, seed)
    expected = adagrad_reference(problem.initial, problem.grad, STEPS, **kw)
    check(problem, lambda ps: optim.Adagrad(ps, **kw), expected)


# ---------------------------------------------------------------- RMSprop
@pytest.mark.parametrize("centered,momentum_on,wd_on", [
    (False, False, False), (True, False, False), (False, True, False), (False, False, True), (True, True, True),
])
@fast
@given(param_shape_lists, seeds, st.floats(1e-3, 0.1), st.floats(0.5, 0.999), st.floats(0.1, 0.95),
       st.floats(1e-3, 0.2), st.sampled_from([1e-8, 1e-3, 0.1]))
def test_rmsprop_matches_formula(centered, momentum_on, wd_on, param_shapes, seed, lr, alpha, momentum,
                                 weight_decay, eps):
    kw = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay if wd_on else 0.0,
              momentum=momentum if momentum_on else 0.0, centered=centered)
    problem = Problem(param_shapes, seed)
    expected = rmsprop_reference(problem.initial, problem.grad, STEPS, **kw)
    # sqrt(v - m^2) loses relative precision when the gradient barely varies: slightly looser.
    check(problem, lambda ps: optim.RMSprop(ps, **kw), expected, rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------- Adam / AdamW
@pytest.mark.parametrize("cls", ["Adam", "AdamW"])
@pytest.mark.parametrize("amsgrad,wd_on", [(False, False), (True, False), (False, True), (True, True)])
@fast
@given(param_shape_lists, seeds, st.floats(1e-3, 0.2), st.floats(0.0, 0.95), st.floats(0.5, 0.9999),
       st.floats(1e-3, 0.3), st.sampled_from([1e-8, 1e-3, 0.1]))
def test_adam_matches_formula(cls, amsgrad, wd_on, param_shapes, seed, lr, beta1, beta2, weight_decay, eps):
    weight_decay = weight_decay if wd_on else 0.0
    kw = dict(lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
    problem = Problem(param_shapes, seed)
    expected = adam_reference(problem.initial, problem.grad, STEPS, decoupled=(cls == "AdamW"), **kw)
    check(problem, lambda ps: getattr(optim, cls)(ps, **kw), expected)


def test_adam_and_adamw_differ_only_with_weight_decay():
    problem = Problem([(3, 2), (4,)], seed=3)
    without = [problem.run(lambda ps, c=c: c(ps, lr=0.05, weight_decay=0.0)) for c in (optim.Adam, optim.AdamW)]
    for a, b in zip(*without):
        np.testing.assert_array_equal(a, b)
    with_wd = [problem.run(lambda ps, c=c: c(ps, lr=0.05, weight_decay=0.1)) for c in (optim.Adam, optim.AdamW)]
    assert not all(np.allclose(a, b) for a, b in zip(*with_wd))


def test_adamw_default_weight_decay_and_decoupled_flag():
    p = tinygrad_cnn.Tensor(np.ones(2), requires_grad=True)
    assert optim.AdamW([p]).defaults["weight_decay"] == 1e-2
    assert optim.Adam([p]).defaults["weight_decay"] == 0.0
    # Adam(decoupled_weight_decay=True) is AdamW.
    problem = Problem([(5,)], seed=7)
    a = problem.run(lambda ps: optim.Adam(ps, lr=0.1, weight_decay=0.2, decoupled_weight_decay=True))
    b = problem.run(lambda ps: optim.AdamW(ps, lr=0.1, weight_decay=0.2))
    np.testing.assert_array_equal(a[0], b[0])


def test_adam_first_step_is_sign_times_lr():
    # With bias correction, step 1 is lr * g / (|g| + eps'): about lr * sign(g) for every coordinate.
    p = tinygrad_cnn.Tensor(np.zeros(3), requires_grad=True)
    opt = optim.Adam([p], lr=0.01, eps=0.0)
    p.grad = tinygrad_cnn.Tensor(np.array([1e-4, -3.0, 250.0]))
    opt.step()
    np.testing.assert_allclose(p.array, [-0.01, 0.01, -0.01], rtol=1e-12)


# ---------------------------------------------------------------- dtypes
@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    lambda ps: optim.Adagrad(ps, lr=0.1, lr_decay=0.01),
    lambda ps: optim.RMSprop(ps, lr=0.01, momentum=0.5, centered=True),
    lambda ps: optim.Adam(ps, lr=0.01, amsgrad=True),
    lambda ps: optim.AdamW(ps, lr=0.01),
], ids=["sgd", "adagrad", "rmsprop", "adam", "adamw"])
def test_float32_parameters_stay_float32_and_track_float64(make):
    problem = Problem([(4, 3), (5,)], seed=11)
    got32 = problem.run(make, dtype=np.float32)
    got64 = problem.run(make, dtype=np.float64)
    for a, b in zip(got32, got64):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
