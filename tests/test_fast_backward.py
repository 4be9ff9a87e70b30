"""The engine's one rule for speed: a Function's ``fast_backward`` (raw arrays, used when no graph
is recorded) gives the same gradients as its ``backward`` (the derivation in Tensor ops, used
under ``create_graph=True``). Every Function that defines one must have a case here."""
import numpy as np
import pytest

import tinygrad_cnn.nn.functional as F
from tinygrad_cnn import Tensor
from tinygrad_cnn.autograd import Function
from tinygrad_cnn.testing import assert_allclose


def _functions_with_a_fast_backward():
    found, stack = {}, [Function]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            stack.append(sub)
            if sub.fast_backward is not None:
                found[sub.__name__] = sub
    return found


def _param(rng, *shape):
    return Tensor(rng.normal(size=shape), requires_grad=True)


def _batch_norm_eval(rng):
    x, w, b = _param(rng, 3, 4, 5), _param(rng, 4), _param(rng, 4)
    mean, var = Tensor(rng.normal(size=4)), Tensor(rng.uniform(0.5, 2, size=4))
    return F.batch_norm(x, mean, var, w, b, training=False), (x, w, b)


def _batch_norm_relu(training, residual):
    def case(rng):
        x, w, b = _param(rng, 3, 4, 5), _param(rng, 4), _param(rng, 4)
        r = _param(rng, 3, 4, 5) if residual else None
        mean, var = Tensor(rng.normal(size=4)), Tensor(rng.uniform(0.5, 2, size=4))
        out = F.batch_norm_relu(x, mean, var, w, b, training=training, residual=r)
        return out, tuple(t for t in (x, w, b, r) if t is not None)
    return case


def _cross_entropy(rng):
    logits = _param(rng, 6, 5)
    target = Tensor(np.array([0, 4, -100, 2, 1, 3]), dtype=np.int64)
    loss = F.cross_entropy(logits, target, weight=Tensor(rng.uniform(0.5, 2, size=5)),
                           reduction="none", label_smoothing=0.1)
    return loss, (logits,)


def _conv(stride, padding, dilation, groups, bias=True, kernel=3):
    def case(rng):
        x = _param(rng, 2, 4, 7, 6)
        w = _param(rng, 6, 4 // groups, kernel, kernel)
        b = _param(rng, 6) if bias else None
        out = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
        return out, tuple(t for t in (x, w, b) if t is not None)
    return case


CASES = {
    "Relu": [lambda rng: ((x := _param(rng, 3, 4)).relu(), (x,))],
    "_SoftmaxCrossEntropy": [_cross_entropy],
    "_BatchNormTrain": [lambda rng: (F.batch_norm(x := _param(rng, 3, 4, 5), None, None,
                                                  w := _param(rng, 4), b := _param(rng, 4),
                                                  training=True), (x, w, b)),
                        lambda rng: (F.batch_norm(x := _param(rng, 4, 3, 2, 2), None, None,
                                                  training=True), (x,))],
    "_BatchNormEval": [_batch_norm_eval],
    "_BatchNormReLU": [_batch_norm_relu(training=True, residual=True),
                       _batch_norm_relu(training=False, residual=True),
                       _batch_norm_relu(training=True, residual=False)],
    # a batch of 3 (the transposed product) and of 300 rows (the direct one), with and without bias
    "_Linear": [lambda rng: (F.linear(x := _param(rng, 3, 5), w := _param(rng, 4, 5), b := _param(rng, 4)),
                             (x, w, b)),
                lambda rng: (F.linear(x := _param(rng, 300, 6), w := _param(rng, 2, 6)), (x, w))],
    "_LocalResponseNorm": [lambda rng: (F.local_response_norm(x := _param(rng, 2, 5, 3, 3), 3,
                                                              alpha=0.1, k=2.0), (x,))],
    "Conv2d": [_conv(1, 1, 1, 1), _conv(2, 1, 1, 1), _conv(1, 0, 2, 2), _conv(1, 3, 1, 1, bias=False),
               _conv((2, 1), (0, 2), 1, 2, kernel=2)],
}


def test_every_function_with_a_fast_backward_has_a_case():
    assert set(_functions_with_a_fast_backward()) == set(CASES)


@pytest.mark.parametrize("name, index", [(name, i) for name, cases in CASES.items()
                                         for i in range(len(cases))])
def test_fast_backward_equals_the_tensor_op_backward(name, index):
    build = CASES[name][index]
    gradients = []
    for create_graph in (False, True):
        rng = np.random.default_rng(index)
        out, inputs = build(rng)
        assert type(out._ctx).__name__ == name
        upstream = Tensor(rng.normal(size=out.shape))
        (out * upstream).sum().backward(create_graph=create_graph)
        gradients.append([t.grad.numpy() for t in inputs])
    for fast, derived in zip(*gradients):
        assert_allclose(fast, derived, rtol=1e-9, atol=1e-10)
