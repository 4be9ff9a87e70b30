"""The ``device="cuda"`` code paths, run without a GPU on the NumPy-backed CuPy stand-in.

``tinygrad_cnn/testing/simulated_cupy.py`` imitates what device-agnostic code gets wrong most often with
CuPy (no implicit device-to-host conversion, no NumPy operands, 0-d results of reductions) and runs
the CUDA sources in the CPU emulator. The first tests check that the stand-in refuses what CuPy
refuses; the last one runs the GPU test file and every ``device``-parametrised test on it, in a
fresh interpreter. None of this replaces a run on a real GPU (see docs/cuda.md).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from tinygrad_cnn import cuda as tcuda
from tinygrad_cnn.testing import cuda_emulator as _emulator
from tinygrad_cnn.testing import simulated_cupy as sim

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_stand_in_refuses_implicit_host_conversion_like_cupy():
    device = sim.asarray(np.arange(6.0).reshape(2, 3))
    assert type(device).__module__ == "cupy" and not isinstance(device, np.ndarray)
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(device)
    with pytest.raises(TypeError, match="Unsupported type"):
        device + np.ones(3)
    with pytest.raises(TypeError, match="Unsupported type"):
        np.concatenate([device, np.ones((1, 3))])
    with pytest.raises(ValueError, match="fill"):
        device[0] = np.ones(3)
    device[:] = np.zeros((2, 3))                      # the one host assignment CuPy allows
    with pytest.raises(AttributeError):
        device.ctypes                                 # NumPy-only attributes and functions are absent
    with pytest.raises(TypeError, match="no implementation"):
        np.insert(device, 0, 1.0)
    assert float(device.sum()) == 0.0


def test_stand_in_results_stay_on_the_device():
    device = sim.asarray(np.arange(6.0).reshape(2, 3))
    total = device.sum()
    assert isinstance(total, sim.ndarray) and total.shape == ()      # 0-d array, not a scalar
    assert isinstance(np.exp(device), sim.ndarray)
    assert isinstance(device[1, 2], sim.ndarray) and device[1, 2].item() == 5.0
    assert isinstance(sim.matmul(device, device.T), sim.ndarray)
    np.testing.assert_array_equal(sim.asnumpy(device * 2), np.arange(6.0).reshape(2, 3) * 2)
    sim.random.seed(3)
    first = sim.random.random((4,), dtype=np.float32)
    sim.random.seed(3)
    np.testing.assert_array_equal(first.get(), sim.random.random((4,), dtype=np.float32).get())
    assert first.dtype == np.float32


@pytest.mark.skipif(not _emulator.compiler_available(), reason="the CUDA emulator needs a C++20 compiler")
def test_stand_in_raw_module_checks_kernel_arguments():
    code = 'typedef float T;\nextern "C" __global__ void scale(T* x, T factor, long long n) ' \
           '{ for (long long i = threadIdx.x; i < n; i += blockDim.x) x[i] *= factor; }'
    kernel = sim.RawModule(code=code).get_function("scale")
    x = sim.asarray(np.ones(5, np.float32))
    kernel((1,), (4,), (x, np.float32(3), np.int64(5)))
    np.testing.assert_array_equal(x.get(), np.full(5, 3, np.float32))
    with pytest.raises(TypeError, match="expected exactly float32"):
        kernel((1,), (4,), (x, np.float64(3), np.int64(5)))
    with pytest.raises(TypeError, match="Unsupported type"):
        kernel((1,), (4,), (np.ones(5, np.float32), np.float32(3), np.int64(5)))


@pytest.mark.skipif(tcuda.is_available(), reason="a real GPU is present: tests/cuda runs on it instead")
@pytest.mark.skipif(not _emulator.compiler_available(), reason="the CUDA emulator needs a C++20 compiler")
def test_gpu_tests_pass_on_the_simulated_device():
    """Every test whose id names cuda (tests/cuda/test_cuda_backend.py, the ``device``-parametrised
    tests, the other CuPy tests; the two largest models left out for time) on the simulated device:
    every device path runs, and no host/device mix-up slips through."""
    command = [sys.executable, "-m", "pytest", "-p", "tinygrad_cnn.testing.simulated_cupy", "-q",
               "--tb=line", "-rf", "-p", "no:cacheprovider", "-k", "cuda and not alexnet and not resnet20",
               "tests", "--ignore=tests/cuda/test_simulated_device.py", "--ignore=tests/cuda/test_kernel_sources.py"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    summary = result.stdout[-6000:]
    assert result.returncode == 0, f"simulated-GPU run failed:\n{summary}\n{result.stderr[-2000:]}"
    assert " passed" in summary and "deselected" in summary, summary
    passed = int(summary.rsplit(" passed", 1)[0].split()[-1])
    assert passed >= 80, f"only {passed} tests ran on the simulated device:\n{summary}"
