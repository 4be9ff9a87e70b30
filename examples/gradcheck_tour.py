"""A tour of the gradient checker: a correct op, a buggy op, a kink, float32 vs float64.

    python examples/gradcheck_tour.py

Runtime: about a second on a laptop CPU. Each section prints what gradcheck says and why.
"""
import numpy as np

import tinygrad_cnn as tg
from tinygrad_cnn.autograd import Function


class Softplus(Function):
    """out = log(1 + e**x);  dx = g * sigmoid(x)."""

    def forward(self, x):
        self.save_for_backward(x)
        return np.logaddexp(0, x)

    def backward(self, g):
        (x,) = self.saved_tensors
        return g * x.sigmoid()


class BuggySoftplus(Softplus):
    """Same forward; backward forgets the incoming gradient g (a classic slip)."""

    def backward(self, g):
        (x,) = self.saved_tensors
        return x.sigmoid()


def section(title):
    print("\n" + "=" * 70 + f"\n{title}\n" + "=" * 70)


def main():
    rng = np.random.default_rng(0)
    x = tg.tensor(rng.standard_normal(5), dtype=np.float64, requires_grad=True)

    section("1. A correct op passes (float64, random upstream gradient)")
    print("gradcheck:", tg.gradcheck(lambda t: Softplus.apply(t), (x,)))
    print("gradgradcheck (second derivative through the Tensor-op backward):",
          tg.gradgradcheck(lambda t: Softplus.apply(t), (x,)))

    section("2. A buggy backward fails, and the report says where and why")
    report = tg.gradcheck(lambda t: BuggySoftplus.apply(t), (x,), raise_exception=False,
                          return_report=True)
    print(report)

    section("3. A kink: ReLU at exactly 0 is not differentiable")
    at_kink = tg.tensor([0.0, 1.0, -2.0], dtype=np.float64, requires_grad=True)
    print(tg.gradcheck(lambda t: t.relu(), (at_kink,), raise_exception=False, return_report=True))
    away = tg.tensor([0.3, 1.0, -2.0], dtype=np.float64, requires_grad=True)
    print("Move the inputs away from the kink and it passes:",
          tg.gradcheck(lambda t: t.relu(), (away,)))

    section("4. float32 inputs: eps=1e-6 is below float32 resolution")
    x32 = tg.tensor(rng.standard_normal(4).astype(np.float32), requires_grad=True)
    print(tg.gradcheck(lambda t: t.tanh(), (x32,), raise_exception=False, return_report=True))
    print("The same check in float64:", tg.gradcheck(lambda t: t.tanh(), (x32.detach().double()
                                                                         .requires_grad_(),)))


if __name__ == "__main__":
    main()
