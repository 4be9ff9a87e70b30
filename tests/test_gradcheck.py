"""gradcheck must catch wrong backwards (negative controls) and explain failures."""
import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import Tensor
from tinygrad_cnn.autograd import Function
from tinygrad_cnn.gradcheck import GradcheckError, gradcheck


class TransposedMatmulGrad(Function):
    """a @ b with the gradient of a computed as g @ b (missing transpose)."""

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return a @ b

    def backward(self, g):
        a, b = self.saved_tensors
        return g @ b, a.transpose(0, 1) @ g


class MeanWithoutOneOverN(Function):
    def forward(self, x):
        self.shape = x.shape
        return x.mean(axis=0)

    def backward(self, g):
        return g.unsqueeze(0).expand(self.shape)


class IgnoresIncomingGradient(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return x * x

    def backward(self, g):
        (x,) = self.saved_tensors
        return 2 * x


class NonDeterministic(Function):
    calls = 0

    def forward(self, x):
        return x * 2

    def backward(self, g):
        NonDeterministic.calls += 1
        return g * (2 + 1e-3 * NonDeterministic.calls)


def _t(shape, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


def test_transposed_matmul_gradient_fails():
    a, b = _t((3, 3)), _t((3, 3), 1)
    with pytest.raises(GradcheckError) as info:
        tg.gradcheck(lambda x, y: TransposedMatmulGrad.apply(x, y), (a, b))
    assert "input 0" in str(info.value)


def test_missing_one_over_n_fails_and_hints_constant_factor():
    x = _t((4, 3))
    report = tg.gradcheck(lambda u: MeanWithoutOneOverN.apply(u), (x,), raise_exception=False,
                          return_report=True)
    assert not report.ok
    text = str(report)
    assert "analytic" in text and "numeric" in text and "index" in text
    assert "constant factor" in text


def test_ignoring_incoming_gradient_fails():
    with pytest.raises(GradcheckError):
        tg.gradcheck(lambda u: IgnoresIncomingGradient.apply(u), (_t((5,)),))


def test_uniform_upstream_would_hide_a_centred_error_but_random_one_catches_it():
    # Backward that drops the mean-centring term: wrong, but correct for g = 1.
    class NoCentring(Function):
        def forward(self, x):
            return x - x.mean()

        def backward(self, g):
            return g - 0 * g.mean()

    with pytest.raises(GradcheckError):
        tg.gradcheck(lambda u: NoCentring.apply(u), (_t((6,)),))


def test_nondeterministic_backward_is_reported():
    with pytest.raises(GradcheckError, match="not deterministic"):
        tg.gradcheck(lambda u: NonDeterministic.apply(u), (_t((3,)),))


def test_fast_mode_catches_wrong_gradient_and_passes_right_one():
    a, b = _t((6, 5)), _t((5, 4), 1)
    with pytest.raises(GradcheckError):
        tg.gradcheck(lambda x, y: MeanWithoutOneOverN.apply(x @ y), (a, b), fast_mode=True)
    assert tg.gradcheck(lambda x, y: (x @ y).tanh(), (a, b), fast_mode=True)


def test_returns_false_without_raising_and_keeps_report():
    ok = tg.gradcheck(lambda u: IgnoresIncomingGradient.apply(u), (_t((3,)),),
                      raise_exception=False)
    assert ok is False
    assert not tg.gradcheck.last_report.ok


def test_float32_input_gets_a_hint():
    x = Tensor(np.random.default_rng(0).standard_normal(3).astype(np.float32), requires_grad=True)
    report = tg.gradcheck(lambda u: u.exp(), (x,), raise_exception=False, return_report=True)
    assert not report.ok
    assert "float64" in str(report)


def test_kink_hint_near_relu_zero():
    x = Tensor(np.array([1e-8, 1.0]), requires_grad=True)
    report = tg.gradcheck(lambda u: u.relu(), (x,), raise_exception=False, return_report=True)
    assert not report.ok
    assert "kink" in str(report)


def test_gradgradcheck_catches_wrong_second_derivative():
    class WrongSecond(Function):
        # First derivative right (3x^2) but written with a constant array, so the
        # second derivative is lost.
        def forward(self, x):
            self.x = x
            return x ** 3

        def backward(self, g):
            return g * Tensor(3 * self.x ** 2)

    x = _t((3,))
    assert tg.gradcheck(lambda u: WrongSecond.apply(u), (x,))
    with pytest.raises(GradcheckError):
        tg.gradgradcheck(lambda u: WrongSecond.apply(u), (x,))


def test_requires_an_input_that_needs_grad():
    with pytest.raises(ValueError, match="no input requires grad"):
        tg.gradcheck(lambda u: u * 2, (Tensor(np.ones(2)),))


def test_report_names_the_failing_output_of_a_multi_output_function():
    class WrongFactor(Function):
        def forward(self, x):
            return x * 3

        def backward(self, g):
            return g * 2

    report = tg.gradcheck(lambda u: (u * 2, WrongFactor.apply(u), u.tanh()), (_t((4,)),),
                          raise_exception=False, return_report=True)
    assert not report.ok and report.failures[0]["output"] == "1"
    assert "output     1" in str(report)


def test_fn_may_register_a_hook_on_an_intermediate_tensor():
    seen = []

    def observed(x):
        y = x * 2
        y.register_hook(lambda g: seen.append(g.shape))   # observes, changes nothing
        return (y * y).sum(0)

    assert gradcheck(observed, _t((3, 2)))
    assert seen, "the hook never ran during the analytic backward"


def test_a_gradient_bug_planted_in_a_hook_is_caught_and_explained():
    def tripled(x):
        y = x * 2
        y.register_hook(lambda g: g * 3)   # the bug: the gradient through y is scaled
        return y.tanh()

    with pytest.raises(GradcheckError) as info:
        gradcheck(tripled, _t((2, 3)))
    report = str(info.value)
    assert "do not match finite differences" in report
    assert "constant factor" in report   # analytic / numeric == 3


def test_hooks_fn_registers_on_its_inputs_do_not_pile_up():
    x = _t((2, 2))
    calls = []

    def hooked_on_input(t):
        t.register_hook(lambda g: calls.append(1))
        return t * t

    assert gradcheck(hooked_on_input, x)
    assert x._hooks == {}
    calls.clear()
    (x * 1.0).sum().backward()
    assert calls == []
