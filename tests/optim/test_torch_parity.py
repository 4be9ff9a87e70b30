"""Optimizers and schedulers against PyTorch (skipped when torch is not installed)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tinygrad_cnn  # noqa: E402
from tinygrad_cnn import optim  # noqa: E402
from tinygrad_cnn.optim import lr_scheduler as S  # noqa: E402

Tensor = tinygrad_cnn.Tensor

OPTIMIZER_CONFIGS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.8, dampening=0.3, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adagrad", dict(lr=0.1)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.05, weight_decay=0.01, initial_accumulator_value=0.2, eps=1e-6)),
    ("RMSprop", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.7, weight_decay=0.01, eps=1e-4)),
    ("RMSprop", dict(lr=0.01, momentum=0.7, centered=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.05, eps=1e-6)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True, betas=(0.5, 0.9))),
    ("SGD", dict(lr=0.05, momentum=0.9, weight_decay=0.01, maximize=True)),
    ("Adagrad", dict(lr=0.1, weight_decay=0.01, maximize=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.01, maximize=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.05, maximize=True)),
    ("AdamW", dict(lr=0.01, amsgrad=True, maximize=True)),
    ("Adadelta", dict(lr=1.0)),
    ("Adadelta", dict(lr=0.5, rho=0.8, eps=1e-5, weight_decay=0.01, maximize=True)),
    ("NAdam", dict(lr=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.05, momentum_decay=0.01)),
    ("NAdam", dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True)),
    ("RAdam", dict(lr=0.01)),
    ("RAdam", dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.05)),
    ("RAdam", dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True)),
]


@pytest.mark.parametrize("name,kwargs", OPTIMIZER_CONFIGS, ids=lambda v: str(v))
def test_optimizer_matches_torch(name, kwargs):
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,), (2, 1, 3), ()]
    init = [rng.standard_normal(s) for s in shapes]
    ours = [Tensor(a.copy(), requires_grad=True) for a in init]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    # two groups, the second with its own lr
    opt = getattr(optim, name)([{"params": ours[:2]}, {"params": ours[2:], "lr": kwargs["lr"] * 2}], **kwargs)
    ref = getattr(torch.optim, name)([{"params": theirs[:2]}, {"params": theirs[2:], "lr": kwargs["lr"] * 2}],
                                     foreach=False, **kwargs)
    for step in range(8):
        for i, (p, q) in enumerate(zip(ours, theirs)):
            g = np.cos(p.array * (i + 1) + step) + 0.1 * p.array
            p.grad = Tensor(g)
            q.grad = torch.tensor(g)
        opt.step()
        ref.step()
    # PyTorch keeps NAdam's running product of momentum factors in float32; ours is a float64.
    rtol = 1e-7 if name == "NAdam" else 1e-11
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.array, q.detach().numpy(), rtol=rtol, atol=1e-13)
    # The state dicts have the same layout and buffers.
    ours_sd, theirs_sd = opt.state_dict(), ref.state_dict()
    assert sorted(ours_sd["state"]) == sorted(theirs_sd["state"])
    for index, buffers in theirs_sd["state"].items():
        for key, value in buffers.items():
            if value is None:
                continue
            value = value.numpy()
            if key == "step":
                assert ours_sd["state"][index][key] == int(value)
            else:
                np.testing.assert_allclose(ours_sd["state"][index][key], value, rtol=rtol, atol=1e-13)


def _make_pair(lrs=(0.1, 0.5), cls="SGD", **kwargs):
    ours = getattr(optim, cls)([{"params": [Tensor(np.ones(2), requires_grad=True)], "lr": lr} for lr in lrs],
                               **kwargs)
    theirs = getattr(torch.optim, cls)([{"params": [torch.ones(2, requires_grad=True)], "lr": lr} for lr in lrs],
                                       **kwargs)
    return ours, theirs


SCHEDULERS = {
    "step": lambda m, o: m.StepLR(o, step_size=3, gamma=0.3),
    "multistep": lambda m, o: m.MultiStepLR(o, [2, 5, 5, 11], gamma=0.5),
    "exponential": lambda m, o: m.ExponentialLR(o, gamma=0.85),
    "cosine": lambda m, o: m.CosineAnnealingLR(o, T_max=6, eta_min=0.001),
    "linear": lambda m, o: m.LinearLR(o, start_factor=0.2, end_factor=0.8, total_iters=7),
    "lambda": lambda m, o: m.LambdaLR(o, lambda e: 0.95 ** e + 0.1 * (e % 3)),
    "onecycle": lambda m, o: m.OneCycleLR(o, max_lr=[0.3, 0.9], total_steps=25, pct_start=0.25),
    "onecycle3": lambda m, o: m.OneCycleLR(o, max_lr=1.0, total_steps=25, three_phase=True,
                                           anneal_strategy="linear"),
    "sequential": lambda m, o: m.SequentialLR(o, [m.LinearLR(o, 0.1, total_iters=4),
                                                  m.CosineAnnealingLR(o, T_max=8),
                                                  m.ExponentialLR(o, 0.9)], milestones=[4, 12]),
    "cyclic": lambda m, o: m.CyclicLR(o, base_lr=[0.01, 0.02], max_lr=0.1, step_size_up=3, step_size_down=5),
    "cyclic2": lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=4, mode="triangular2"),
    "cyclic_exp": lambda m, o: m.CyclicLR(o, 0.01, 0.1, step_size_up=2, mode="exp_range", gamma=0.9),
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_scheduler_matches_torch(name):
    ours_opt, theirs_opt = _make_pair(momentum=0.9)
    ours = SCHEDULERS[name](S, ours_opt)
    theirs = SCHEDULERS[name](torch.optim.lr_scheduler, theirs_opt)
    for _ in range(24):
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-12, atol=1e-16)
        np.testing.assert_allclose([g["momentum"] for g in ours_opt.param_groups],
                                   [g["momentum"] for g in theirs_opt.param_groups], rtol=1e-12)
        ours_opt.step()
        theirs_opt.step()
        ours.step()
        theirs.step()
    assert ours.last_epoch == theirs.last_epoch


def test_reduce_on_plateau_matches_torch():
    rng = np.random.default_rng(3)
    metrics = np.concatenate([np.linspace(5, 1, 10), np.ones(15), rng.uniform(0.9, 1.1, 25)])
    for kwargs in (dict(patience=2, cooldown=1, factor=0.5, min_lr=[0.01, 0.0]),
                   dict(mode="max", patience=0, threshold=0.05, threshold_mode="abs"),
                   dict(patience=3, threshold=0.02)):
        ours_opt, theirs_opt = _make_pair()
        ours = S.ReduceLROnPlateau(ours_opt, **kwargs)
        theirs = torch.optim.lr_scheduler.ReduceLROnPlateau(theirs_opt, **kwargs)
        for m in metrics:
            ours.step(float(m))
            theirs.step(float(m))
            np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-12)
            assert ours.num_bad_epochs == theirs.num_bad_epochs
            assert ours.cooldown_counter == theirs.cooldown_counter


def test_one_cycle_with_adam_matches_torch():
    ours_opt, theirs_opt = _make_pair(cls="Adam", lrs=(0.1,))
    ours = S.OneCycleLR(ours_opt, max_lr=0.01, total_steps=12)
    theirs = torch.optim.lr_scheduler.OneCycleLR(theirs_opt, max_lr=0.01, total_steps=12)
    for _ in range(11):
        ours_opt.step()
        theirs_opt.step()
        ours.step()
        theirs.step()
        np.testing.assert_allclose(ours.get_last_lr(), theirs.get_last_lr(), rtol=1e-12)
        np.testing.assert_allclose(ours_opt.param_groups[0]["betas"], theirs_opt.param_groups[0]["betas"],
                                   rtol=1e-12)


OPTIMIZER_NAMES = ["SGD", "Adadelta", "Adagrad", "RMSprop", "Adam", "AdamW", "NAdam", "RAdam"]
SCHEDULER_NAMES = ["LambdaLR", "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR",
                   "OneCycleLR", "CyclicLR", "SequentialLR", "ReduceLROnPlateau"]


def _parameters(cls):
    import inspect
    return inspect.signature(cls).parameters


@pytest.mark.parametrize("name", OPTIMIZER_NAMES + SCHEDULER_NAMES)
def test_signature_and_defaults_match_torch(name):
    # Our positional arguments are PyTorch's first ones, in order, with PyTorch's defaults, so a
    # script's calls move over unchanged. Torch-only internals (capturable, differentiable) are
    # the only arguments left out; later torch positionals (e.g. Adagrad's foreach) are keywords.
    if name in OPTIMIZER_NAMES:
        ours, theirs = getattr(optim, name), getattr(torch.optim, name)
    else:
        ours, theirs = getattr(S, name), getattr(torch.optim.lr_scheduler, name)
    ours_params, theirs_params = _parameters(ours), _parameters(theirs)
    missing = set(theirs_params) - set(ours_params) - {"capturable", "differentiable"}
    assert not missing, f"{name} lacks {sorted(missing)}"
    positional = [n for n, p in theirs_params.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    ours_positional = [n for n, p in ours_params.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert ours_positional == positional[:len(ours_positional)]
    for arg, theirs_param in theirs_params.items():
        if arg in ours_params:
            assert ours_params[arg].default == theirs_param.default, (name, arg)


def test_named_parameters_state_dict_layout_matches_torch():
    ours_ps = [Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(3), requires_grad=True)]
    theirs_ps = [torch.ones(2, requires_grad=True), torch.ones(3, requires_grad=True)]
    ours = optim.SGD([("a", ours_ps[0]), ("b", ours_ps[1])], lr=0.1)
    theirs = torch.optim.SGD([("a", theirs_ps[0]), ("b", theirs_ps[1])], lr=0.1)
    ours_group, theirs_group = ours.state_dict()["param_groups"][0], theirs.state_dict()["param_groups"][0]
    assert ours_group["param_names"] == theirs_group["param_names"] == ["a", "b"]
    assert ours_group["params"] == theirs_group["params"] == [0, 1]
    assert ours_group["maximize"] is theirs_group["maximize"] is False
