"""The Numba optimizer steps beyond the small cases of test_kernels_equal_references: the
parallel loop on large parameters, and the arrays they hand to the references."""
import numpy as np
import pytest

from tinygrad_cnn import backend

pytestmark = pytest.mark.skipif(not backend.numba_available(), reason="Numba is not installed")


def _steps(name, size, dtype, layout="contiguous"):
    """(reference's arrays, kernel's arrays) after three steps from the same start."""
    from tinygrad_cnn.kernels.cpu import optim as kernels
    rng = np.random.default_rng(size)
    buffers = 1 if name == "sgd_update" else 3
    start = [rng.standard_normal(size).astype(dtype) for _ in range(2)]
    start += [np.abs(rng.standard_normal(size)).astype(dtype) for _ in range(buffers)]
    results = []
    for fn in (backend.kernel(name, np, impl="numpy"), getattr(kernels, name)):
        arrays = [a.copy() for a in start]
        if layout == "strided":
            arrays = [np.repeat(a, 2)[::2] for a in arrays]
        for step in range(1, 4):
            grad = arrays[1] * np.asarray(step, dtype)
            if name == "sgd_update":
                arrays[2] = fn(arrays[0], grad, None if step == 1 else arrays[2], lr=0.1,
                               momentum=0.9, dampening=0.1, weight_decay=0.01, nesterov=False)
            else:
                fn(arrays[0], grad, arrays[2], arrays[3], arrays[4], step=step, lr=1e-2,
                   beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, amsgrad=True,
                   decoupled_weight_decay=step % 2 == 0)
        results.append(arrays)
    return results


@pytest.mark.parametrize("name", ["sgd_update", "adam_update"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_parallel_loop_equals_reference(name, dtype):
    from tinygrad_cnn.kernels.cpu.optim import PARALLEL_MIN_ELEMENTS
    expected, got = _steps(name, PARALLEL_MIN_ELEMENTS + 17, dtype)
    tol = 2e-6 if dtype == np.float32 else 1e-12
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["sgd_update", "adam_update"])
@pytest.mark.parametrize("dtype,layout", [(np.float16, "contiguous"), (np.float32, "strided")])
def test_arrays_it_cannot_take_go_to_the_reference(name, dtype, layout):
    expected, got = _steps(name, 300, dtype, layout)
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g, e)
