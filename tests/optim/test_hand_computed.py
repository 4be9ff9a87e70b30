"""Three optimizer steps per option against numbers worked out by hand from the docstring formulas.

Every case starts at p = 1 and sees the gradients g = 1, 2, -1 (independent of p, except through
weight decay), so each step can be followed with pen and paper; the first steps are written out
in the comments. The same scalar trajectory is run on parameters of shapes (), (3,) and (2, 2),
all in one optimizer, so the whole-array update and the per-parameter state are exercised too.
"""
import numpy as np
import pytest

import tinygrad_cnn
from tinygrad_cnn import optim

GRADS = (1.0, 2.0, -1.0)
AMSGRAD_GRADS = (2.0, 0.5, 1.0)   # v falls after step 1, so max(v) differs from v
SHAPES = [(), (3,), (2, 2)]

CASES = {
    # b_1 = g; p = p - lr * b.                      p: 1 - .1 = .9, .9 - .2 = .7, .7 + .1 = .8
    "sgd": (lambda ps: optim.SGD(ps, lr=0.1), GRADS, [0.9, 0.7, 0.8]),
    # b: 1, .9*1 + 2 = 2.9, .9*2.9 - 1 = 1.61;      p: .9, .9 - .29 = .61, .61 - .161 = .449
    "sgd_momentum": (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), GRADS, [0.9, 0.61, 0.449]),
    # b: 1 (no dampening on step 1), .9 + .5*2 = 1.9, 1.71 - .5 = 1.21;  p: .9, .71, .589
    "sgd_dampening": (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.5), GRADS,
                      [0.9, 0.71, 0.589]),
    # b as sgd_momentum; step g + .9 b: 1.9, 2 + 2.61 = 4.61, -1 + 1.449 = .449;  p: .81, .349, .3041
    "sgd_nesterov": (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True), GRADS,
                     [0.81, 0.349, 0.3041]),
    # g + .5 p: 1.5, 2 + .425 = 2.425, -1 + .30375 = -.69625;  p: .85, .6075, .677125
    "sgd_weight_decay": (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=0.5), GRADS,
                         [0.85, 0.6075, 0.677125]),
    # the gradient is negated: p = 1 + .1, 1.1 + .2, 1.3 - .1
    "sgd_maximize": (lambda ps: optim.SGD(ps, lr=0.1, maximize=True), GRADS, [1.1, 1.3, 1.2]),
    # s: 1, 5, 6;  p: 1 - .1*1/1 = .9, .9 - .1*2/sqrt(5), ... + .1/sqrt(6)
    "adagrad": (lambda ps: optim.Adagrad(ps, lr=0.1, eps=0.0), GRADS,
                [0.9, 0.8105572809, 0.851382109946]),
    # clr = .1 / (1 + (t-1)*.5): .1, .1/1.5, .05
    "adagrad_lr_decay": (lambda ps: optim.Adagrad(ps, lr=0.1, lr_decay=0.5, eps=0.0), GRADS,
                         [0.9, 0.8403715206, 0.860783935123]),
    # s: 3 + 1 = 4, 8, 9;  p: 1 - .1/2 = .95, .95 - .2/sqrt(8), ... + .1/3
    "adagrad_initial_accumulator": (lambda ps: optim.Adagrad(ps, lr=0.1, initial_accumulator_value=3.0, eps=0.0),
                                    GRADS, [0.95, 0.879289321881, 0.912622655215]),
    # g + .5 p = 1.5, s = 2.25, p = 1 - .1 * 1.5/1.5 = .9; then g = 2.45, s = 8.2525, ...
    "adagrad_weight_decay": (lambda ps: optim.Adagrad(ps, lr=0.1, weight_decay=0.5, eps=0.0), GRADS,
                             [0.9, 0.814714869592, 0.834919437861]),
    # v: .1, .09 + .4 = .49, .441 + .1 = .541;  p: 1 - .01/sqrt(.1), - .01*2/.7, + .01/sqrt(.541)
    "rmsprop": (lambda ps: optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=0.0), GRADS,
                [0.968377223398, 0.939805794827, 0.953401488393]),
    # m: .1, .29, .161;  den: sqrt(.1 - .01) = .3, sqrt(.49 - .0841), ...;  p: 1 - .01/.3, ...
    "rmsprop_centered": (lambda ps: optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=0.0, centered=True), GRADS,
                         [0.966666666667, 0.935274559377, 0.949208151011]),
    # b: 1/sqrt(.1), .5 b + 2/.7, ...;  p = p - .01 b
    "rmsprop_momentum": (lambda ps: optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=0.0, momentum=0.5), GRADS,
                         [0.968377223398, 0.923994406526, 0.915398691656]),
    # g + .5 p = 1.5: v = .225, step .01 * 1.5/sqrt(.225) = .01/sqrt(.1) as in "rmsprop"
    "rmsprop_weight_decay": (lambda ps: optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=0.0, weight_decay=0.5),
                             GRADS, [0.968377223398, 0.940937579134, 0.94698907707]),
    # betas (.5, .75). t=1: m = .5, v = .25, m_hat = 1, v_hat = 1 -> p = .9.
    # t=2: m = 1.25, v = 1.1875, m_hat = 1.25/.75, v_hat = 1.1875/.4375 -> p = .9 - .1*1.6667/1.6475
    "adam": (lambda ps: optim.Adam(ps, lr=0.1, betas=(0.5, 0.75), eps=0.0), GRADS,
             [0.9, 0.798837170222, 0.788666691584]),
    # L2: g + .5 p = 1.5 enters m and v; step 1 is still lr * m_hat/sqrt(v_hat) = .1
    "adam_weight_decay": (lambda ps: optim.Adam(ps, lr=0.1, betas=(0.5, 0.75), eps=0.0, weight_decay=0.5),
                          GRADS, [0.9, 0.79823121872, 0.763160935571]),
    # v: 1, .8125 (< 1, so v_max stays 1), ...
    "adam_amsgrad": (lambda ps: optim.Adam(ps, lr=0.1, betas=(0.5, 0.75), eps=0.0, amsgrad=True),
                     AMSGRAD_GRADS, [0.9, 0.833856217223, 0.757821685595]),
    # p * (1 - .1*.5) = .95, then the Adam step .1 -> .85; t=2: .85 * .95 - .1008... (same m, v as "adam")
    "adamw": (lambda ps: optim.AdamW(ps, lr=0.1, betas=(0.5, 0.75), eps=0.0, weight_decay=0.5), GRADS,
              [0.85, 0.706337170222, 0.660849833073]),
    "adamw_amsgrad": (lambda ps: optim.AdamW(ps, lr=0.1, betas=(0.5, 0.75), eps=0.0, weight_decay=0.5,
                                             amsgrad=True), AMSGRAD_GRADS,
                      [0.85, 0.741356217223, 0.628253874733]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_three_steps_match_hand_computation(name):
    make, grads, expected = CASES[name]
    params = [tinygrad_cnn.Tensor(np.ones(shape), requires_grad=True) for shape in SHAPES]
    opt = make(params)
    for g, want in zip(grads, expected):
        for p in params:
            p.grad = tinygrad_cnn.Tensor(np.full(p.shape, g))
        opt.step()
        for p in params:
            assert p.array.shape == p.shape
            np.testing.assert_allclose(p.array, np.full(p.shape, want), rtol=1e-11, atol=0)
