"""Shared pytest configuration: Hypothesis profiles and the per-backend fixtures.

Strategies and gradient-check helpers live in :mod:`tinygrad_cnn.testing` (public,
so users can build suites for their own ops); this file only wires pytest.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import tinygrad_cnn
from tinygrad_cnn import backend

settings.register_profile("default", deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", deadline=None, print_blob=True, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "default")


def _cuda_available():
    try:
        from tinygrad_cnn import cuda
        return cuda.is_available()
    except Exception:
        return False


DEVICES = ["cpu"] + (["cuda"] if _cuda_available() else [])


@pytest.fixture(params=["cpu", "cuda"])
def device(request):
    """Run a test once per device; the cuda run is skipped (with the reason) without a GPU."""
    if request.param == "cuda" and not _cuda_available():
        pytest.skip("no CUDA device: CuPy is not installed or no GPU is visible")
    return request.param


@pytest.fixture(scope="session")
def torch():
    """PyTorch, for the tests that compare with it; they skip cleanly where it is not installed.
    (Session-scoped, so Hypothesis tests may take it too.)"""
    return pytest.importorskip("torch")


@pytest.fixture
def torch_2_13(torch):
    """PyTorch, for checks of what PyTorch 2.13 prints and names (module reprs, state-dict keys).

    Earlier releases differ there (BatchNorm, LayerNorm and GroupNorm gained ``bias=`` in their
    arguments and reprs), so such a check skips on them instead of comparing with another API.
    """
    version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    if version < (2, 13):
        pytest.skip(f"compares with PyTorch 2.13's module API; torch {torch.__version__} is installed")
    return torch


@pytest.fixture(params=["numpy", "numba"])
def cpu_backend(request):
    """Run a test with the NumPy reference kernels and with the Numba kernels."""
    if request.param == "numba" and not backend.numba_available():
        pytest.skip("Numba is not installed")
    with backend.cpu_backend(request.param):
        yield request.param


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global seed, so failures reproduce."""
    tinygrad_cnn.manual_seed(0)
    np.random.seed(0)
    yield
