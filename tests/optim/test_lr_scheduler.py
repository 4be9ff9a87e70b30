"""Learning-rate schedulers: lr sequences against closed forms, plateau logic, state dicts, errors."""
import math
import warnings

import numpy as np
import pytest

import tinygrad_cnn
from tinygrad_cnn import optim
from tinygrad_cnn.optim import lr_scheduler as S

Tensor = tinygrad_cnn.Tensor
BASE_LRS = (0.1, 0.5)


def make_optimizer(cls=optim.SGD, lrs=BASE_LRS, **kw):
    groups = [{"params": [Tensor(np.ones(2), requires_grad=True)], "lr": lr} for lr in lrs]
    return cls(groups, **kw)


def lr_sequence(scheduler, epochs):
    """lrs of every group for epochs 0 .. epochs-1 (the constructor sets epoch 0)."""
    seq = [scheduler.get_last_lr()]
    for _ in range(epochs - 1):
        scheduler.optimizer.step()
        scheduler.step()
        seq.append(scheduler.get_last_lr())
    return np.array(seq)


def closed(fn, epochs, base_lrs=BASE_LRS):
    return np.array([[fn(base, e) for base in base_lrs] for e in range(epochs)])


SCHEDULE_CASES = {
    "step": (lambda o: S.StepLR(o, step_size=3, gamma=0.5), lambda b, e: b * 0.5 ** (e // 3)),
    "multistep": (lambda o: S.MultiStepLR(o, milestones=[6, 2, 6, 9], gamma=0.1),
                  lambda b, e: b * 0.1 ** sum(m <= e for m in [2, 6, 6, 9])),
    "exponential": (lambda o: S.ExponentialLR(o, gamma=0.9), lambda b, e: b * 0.9 ** e),
    "cosine": (lambda o: S.CosineAnnealingLR(o, T_max=7, eta_min=0.01),
               lambda b, e: 0.01 + (b - 0.01) * (1 + math.cos(math.pi * e / 7)) / 2),
    "linear": (lambda o: S.LinearLR(o, start_factor=0.25, end_factor=0.9, total_iters=6),
               lambda b, e: b * (0.25 + (0.9 - 0.25) * min(e, 6) / 6)),
    "linear_down": (lambda o: S.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=4),
                    lambda b, e: b * (1.0 - min(e, 4) / 4)),
    "lambda": (lambda o: S.LambdaLR(o, lambda e: 1.0 / (1 + e) ** 0.5), lambda b, e: b / (1 + e) ** 0.5),
}


@pytest.mark.parametrize("name", sorted(SCHEDULE_CASES))
def test_lr_sequence_matches_closed_form(name):
    make, formula = SCHEDULE_CASES[name]
    epochs = 25  # past T_max, total_iters and every milestone
    got = lr_sequence(make(make_optimizer()), epochs)
    np.testing.assert_allclose(got, closed(formula, epochs), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", sorted(SCHEDULE_CASES))
def test_constructor_semantics(name):
    make, formula = SCHEDULE_CASES[name]
    opt = make_optimizer()
    scheduler = make(opt)
    assert scheduler.last_epoch == 0
    assert scheduler.base_lrs == list(BASE_LRS)
    assert [g["initial_lr"] for g in opt.param_groups] == list(BASE_LRS)
    assert scheduler.get_last_lr() == [g["lr"] for g in opt.param_groups]
    np.testing.assert_allclose(scheduler.get_last_lr(), [formula(b, 0) for b in BASE_LRS], rtol=1e-12)


@pytest.mark.parametrize("name", ["step", "multistep", "exponential", "cosine", "linear"])
def test_step_with_epoch_uses_closed_form_and_warns(name):
    make, formula = SCHEDULE_CASES[name]
    scheduler = make(make_optimizer())
    with pytest.warns(UserWarning, match="deprecated"):
        scheduler.step(11)
    assert scheduler.last_epoch == 11
    np.testing.assert_allclose(scheduler.get_last_lr(), [formula(b, 11) for b in BASE_LRS], rtol=1e-12)


def test_cosine_continues_past_t_max():
    got = lr_sequence(S.CosineAnnealingLR(make_optimizer(lrs=(1.0,)), T_max=4), 10)[:, 0]
    np.testing.assert_allclose(got[4], 0.0, atol=1e-15)
    np.testing.assert_allclose(got[8], 1.0, rtol=1e-12)  # back up after a full period 2 * T_max


def test_chained_schedulers_multiply():
    opt = make_optimizer(lrs=(1.0,))
    a = S.ExponentialLR(opt, gamma=0.9)
    b = S.StepLR(opt, step_size=2, gamma=0.5)
    for e in range(1, 7):
        opt.step()
        a.step()
        b.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.9 ** e * 0.5 ** (e // 2), rel=1e-12)


def test_sequential_warmup_then_cosine():
    opt = make_optimizer()
    warmup = S.LinearLR(opt, start_factor=0.1, total_iters=4)
    cosine = S.CosineAnnealingLR(opt, T_max=10)
    scheduler = S.SequentialLR(opt, [warmup, cosine], milestones=[4])
    got = lr_sequence(scheduler, 16)

    def expected(b, e):
        if e < 4:
            return b * (0.1 + 0.9 * e / 4)
        return b * (1 + math.cos(math.pi * (e - 4) / 10)) / 2

    np.testing.assert_allclose(got, closed(expected, 16), rtol=1e-12, atol=1e-15)
    assert scheduler.last_epoch == 15


def test_sequential_three_stages():
    opt = make_optimizer(lrs=(1.0,))
    scheds = [S.LambdaLR(opt, lambda e: 0.5), S.ExponentialLR(opt, gamma=0.5), S.StepLR(opt, 2, gamma=0.1)]
    got = lr_sequence(S.SequentialLR(opt, scheds, milestones=[2, 5]), 9)[:, 0]
    expected = [0.5, 0.5, 1.0, 0.5, 0.25, 1.0, 1.0, 0.1, 0.1]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def one_cycle_expected(step, total, max_lr, pct=0.3, div=25.0, final_div=1e4, strategy="cos",
                       base_m=0.85, max_m=0.95, three_phase=False):
    def anneal(start, end, frac):
        if strategy == "cos":
            return end + (start - end) * (1 + math.cos(math.pi * frac)) / 2
        return start + (end - start) * frac

    initial = max_lr / div
    minimum = initial / final_div
    up = pct * total - 1
    if three_phase:
        phases = [(up, initial, max_lr, max_m, base_m), (2 * pct * total - 2, max_lr, initial, base_m, max_m),
                  (total - 1, initial, minimum, max_m, max_m)]
    else:
        phases = [(up, initial, max_lr, max_m, base_m), (total - 1, max_lr, minimum, base_m, max_m)]
    start = 0.0
    for i, (end, lr0, lr1, m0, m1) in enumerate(phases):
        if step <= end or i == len(phases) - 1:
            frac = (step - start) / (end - start)
            return anneal(lr0, lr1, frac), anneal(m0, m1, frac)
        start = end


@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_lr_and_momentum(strategy, three_phase):
    opt = make_optimizer(lrs=(1.0, 1.0), momentum=0.9)
    total = 20
    scheduler = S.OneCycleLR(opt, max_lr=[0.4, 1.0], total_steps=total, anneal_strategy=strategy,
                             three_phase=three_phase)
    for step in range(total):
        for group, max_lr in zip(opt.param_groups, (0.4, 1.0)):
            lr, momentum = one_cycle_expected(step, total, max_lr, strategy=strategy, three_phase=three_phase)
            assert group["lr"] == pytest.approx(lr, rel=1e-12, abs=1e-15)
            assert group["momentum"] == pytest.approx(momentum, rel=1e-12)
        if step < total - 1:
            opt.step()
            scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4 / 25 / 1e4, rel=1e-9)
    scheduler.step()  # step number total is still allowed (PyTorch semantics) ...
    with pytest.raises(ValueError, match="total_steps is 20"):
        scheduler.step()  # ... one more is not


def test_one_cycle_cycles_adam_beta1_and_accepts_epochs():
    opt = make_optimizer(optim.Adam, lrs=(1.0,), betas=(0.9, 0.99))
    scheduler = S.OneCycleLR(opt, max_lr=0.01, epochs=2, steps_per_epoch=5)
    assert scheduler.total_steps == 10
    assert opt.param_groups[0]["betas"] == (pytest.approx(0.95, rel=1e-12), 0.99)
    for _ in range(3):
        opt.step()
        scheduler.step()
    lr, momentum = one_cycle_expected(3, 10, 0.01)
    assert opt.param_groups[0]["betas"][0] == pytest.approx(momentum, rel=1e-12)
    assert opt.param_groups[0]["betas"][1] == 0.99
    assert scheduler.get_last_lr()[0] == pytest.approx(lr, rel=1e-12)


# ---------------------------------------------------------------- ReduceLROnPlateau
@pytest.mark.parametrize("kwargs,metrics,expected", [
    # patience: reduce after more than 2 epochs without improvement
    (dict(factor=0.5, patience=2), [5, 4, 4, 4, 4, 3, 3, 3, 3], [1, 1, 1, 1, .5, .5, .5, .5, .25]),
    # cooldown: two epochs after a reduction are not counted
    (dict(factor=0.5, patience=0, cooldown=2), [1] * 8, [1, .5, .5, .5, .25, .25, .25, .125]),
    # absolute threshold: 9.5 counts as an improvement over 10 (needs < 9.9)
    (dict(patience=0, threshold=0.1, threshold_mode="abs"), [10, 9.5, 9.5], [1, 1, .1]),
    # relative threshold: 9.5 is not (needs < 9.0)
    (dict(patience=0, threshold=0.1, threshold_mode="rel"), [10, 9.5, 9.5], [1, .1, .01]),
    # default threshold 1e-4 rel: a tiny improvement is still "no improvement"
    (dict(patience=0), [1.0, 0.99995, 0.5], [1, .1, .1]),
    # mode max
    (dict(mode="max", patience=0, threshold=0.1), [1, 1.05, 1.2, 1.25], [1, .1, .1, .01]),
    (dict(mode="max", patience=1, threshold=0.0, threshold_mode="abs"), [1, 2, 2, 2, 3], [1, 1, 1, .1, .1]),
    # min_lr floors the lr; later reductions are no-ops
    (dict(patience=0, min_lr=0.05), [1] * 4, [1, .1, .05, .05]),
])
def test_reduce_on_plateau_cases(kwargs, metrics, expected):
    opt = make_optimizer(lrs=(1.0,))
    scheduler = S.ReduceLROnPlateau(opt, **kwargs)
    got = []
    for m in metrics:
        scheduler.step(m)
        got.append(scheduler.get_last_lr()[0])
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert scheduler.last_epoch == len(metrics)


def test_reduce_on_plateau_per_group_min_lr_eps_and_tensor_metric():
    opt = make_optimizer(lrs=(1.0, 2.0))
    scheduler = S.ReduceLROnPlateau(opt, patience=0, min_lr=[0.05, 0.0])
    for _ in range(4):
        scheduler.step(Tensor(np.array(3.0)))
    np.testing.assert_allclose(scheduler.get_last_lr(), [0.05, 0.002], rtol=1e-12)
    opt = make_optimizer(lrs=(1e-7,))
    scheduler = S.ReduceLROnPlateau(opt, patience=0, factor=0.5, eps=1e-7)
    scheduler.step(1.0)
    scheduler.step(1.0)
    assert opt.param_groups[0]["lr"] == 1e-7  # change of 5e-8 < eps is skipped


# ---------------------------------------------------------------- state dicts
STATEFUL = {
    **{name: make for name, (make, _) in SCHEDULE_CASES.items()},
    "onecycle": lambda o: S.OneCycleLR(o, max_lr=1.0, total_steps=30, three_phase=True),
    "sequential": lambda o: S.SequentialLR(o, [S.LinearLR(o, 0.2, total_iters=3), S.ExponentialLR(o, 0.8)], [3]),
    "plateau": lambda o: S.ReduceLROnPlateau(o, patience=1, cooldown=1, factor=0.5),
}


def _advance(scheduler, n, metrics):
    for i in range(n):
        scheduler.optimizer.step()
        if isinstance(scheduler, S.ReduceLROnPlateau):
            scheduler.step(metrics[i % len(metrics)])
        else:
            scheduler.step()
    return scheduler.get_last_lr()


@pytest.mark.parametrize("name", sorted(STATEFUL))
def test_state_dict_round_trip_through_arrays(name, tmp_path):
    metrics = [3.0, 2.0, 2.5, 2.5, 2.4, 2.6]
    make = STATEFUL[name]
    opt = make_optimizer(momentum=0.9)
    scheduler = make(opt)
    _advance(scheduler, 5, metrics)

    path = tmp_path / "sched.npz"
    np.savez(path, **optim.flatten_state(scheduler.state_dict(), prefix="s"),
             **optim.flatten_state(opt.state_dict(), prefix="o"))
    with np.load(path, allow_pickle=False) as f:
        arrays = dict(f)

    opt2 = make_optimizer(momentum=0.9)
    scheduler2 = make(opt2)
    opt2.load_state_dict(optim.unflatten_state(arrays, prefix="o"))
    scheduler2.load_state_dict(optim.unflatten_state(arrays, prefix="s"))
    assert scheduler2.get_last_lr() == scheduler.get_last_lr()
    assert _advance(scheduler2, 6, metrics[::-1]) == _advance(scheduler, 6, metrics[::-1])
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    assert "optimizer" not in scheduler.state_dict()


def test_lambda_state_dict_skips_functions_but_keeps_callable_object_state():
    class Factor:
        def __init__(self):
            self.scale = 1.0

        def __call__(self, epoch):
            return self.scale * 0.5 ** epoch

    opt = make_optimizer()
    fn = Factor()
    fn.scale = 3.0
    scheduler = S.LambdaLR(opt, [fn, lambda e: 1.0])
    state = scheduler.state_dict()
    assert state["lr_lambdas"] == [{"scale": 3.0}, None]
    other = S.LambdaLR(make_optimizer(), [Factor(), lambda e: 1.0])
    other.load_state_dict(optim.unflatten_state(optim.flatten_state(state)))
    assert other.lr_lambdas[0].scale == 3.0


def test_resuming_with_last_epoch():
    opt = make_optimizer()
    S.StepLR(opt, step_size=2)
    resumed = S.StepLR(opt, step_size=2, last_epoch=4)
    assert resumed.last_epoch == 5
    fresh = make_optimizer()
    with pytest.raises(KeyError, match="initial_lr"):
        S.ExponentialLR(fresh, gamma=0.9, last_epoch=3)


# ---------------------------------------------------------------- errors
def test_bad_arguments():
    opt = make_optimizer()
    with pytest.raises(TypeError, match="is not an Optimizer"):
        S.StepLR(object(), step_size=2)
    with pytest.raises(ValueError, match="StepLR: step_size"):
        S.StepLR(opt, step_size=0)
    with pytest.raises(ValueError, match="LinearLR: start_factor"):
        S.LinearLR(opt, start_factor=0.0)
    with pytest.raises(ValueError, match="LinearLR: end_factor"):
        S.LinearLR(opt, end_factor=1.5)
    with pytest.raises(ValueError, match="CosineAnnealingLR: T_max"):
        S.CosineAnnealingLR(opt, T_max=0)
    with pytest.raises(ValueError, match="expected 2 lr_lambdas"):
        S.LambdaLR(opt, [lambda e: 1.0])
    with pytest.raises(ValueError, match="total_steps or both epochs"):
        S.OneCycleLR(opt, max_lr=1.0)
    with pytest.raises(ValueError, match="pct_start"):
        S.OneCycleLR(opt, max_lr=1.0, total_steps=10, pct_start=1.5)
    with pytest.raises(ValueError, match="anneal_strategy"):
        S.OneCycleLR(opt, max_lr=1.0, total_steps=10, anneal_strategy="step")
    with pytest.raises(ValueError, match="max_lr has 3 values"):
        S.OneCycleLR(opt, max_lr=[1.0, 2.0, 3.0], total_steps=10)
    with pytest.raises(ValueError, match="neither"):
        S.OneCycleLR(make_optimizer(optim.Adagrad), max_lr=1.0, total_steps=10)
    with pytest.raises(ValueError, match="factor must be < 1.0"):
        S.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode must be"):
        S.ReduceLROnPlateau(opt, mode="lowest")
    with pytest.raises(ValueError, match="threshold_mode"):
        S.ReduceLROnPlateau(opt, threshold_mode="pct")
    with pytest.raises(ValueError, match="expected 2 min_lrs"):
        S.ReduceLROnPlateau(opt, min_lr=[0.1])
    a, b = S.StepLR(opt, 2), S.StepLR(opt, 3)
    with pytest.raises(ValueError, match="expected 1 milestones"):
        S.SequentialLR(opt, [a, b], milestones=[1, 2])
    with pytest.raises(ValueError, match="different optimizer"):
        S.SequentialLR(opt, [a, S.StepLR(make_optimizer(), 2)], milestones=[2])
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        S.SequentialLR(opt, [a, S.ReduceLROnPlateau(opt)], milestones=[2])


def test_no_warning_in_normal_use():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt = make_optimizer()
        lr_sequence(S.SequentialLR(opt, [S.LinearLR(opt, total_iters=2), S.StepLR(opt, 2)], [2]), 6)
