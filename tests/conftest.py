"""Shared pytest configuration: Hypothesis profiles and the per-backend fixtures.

Strategies and gradient-check helpers live in :mod:`tinygrad_cnn.testing` (public,
so users can build suites for their own ops); this file only wires pytest.
"""
import ctypes
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


@pytest.fixture
def mpi():
    """Skip (saying why) unless mpi4py and mpiexec are installed (the ``distributed`` extra)."""
    from tinygrad_cnn.testing import mpi_unavailable_reason
    reason = mpi_unavailable_reason()
    if reason:
        pytest.skip(reason)


class StandInNCCL:
    """A one-rank stand-in for ``cupy.cuda.nccl`` working on host memory, for machines without a GPU.

    Its communicator copies bytes between the raw pointers it is given (a one-rank reduction or
    gather is a copy), so a wrong pointer, count or datatype shows in the result, and it logs every
    call for the tests to inspect.
    """
    accepts_host_arrays = True
    NCCL_INT8, NCCL_UINT8, NCCL_INT32, NCCL_INT64, NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64 = 0, 1, 2, 4, 6, 7, 8
    NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN = 0, 1, 2, 3
    ITEMSIZE = {0: 1, 1: 1, 2: 4, 4: 8, 6: 2, 7: 4, 8: 8}
    STREAM = 12345

    def __init__(self):
        self.calls = []
        stand_in = self

        class NcclCommunicator:
            def __init__(self, ndev, commId, rank):
                assert (ndev, rank) == (1, 0) and len(commId) == 128, (ndev, rank, len(commId))
                stand_in.calls.append(("init", ndev, rank))

            def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):
                stand_in.calls.append(("allReduce", count, datatype, op, stream))
                ctypes.memmove(recvbuf, sendbuf, count * stand_in.ITEMSIZE[datatype])

            def bcast(self, buff, count, datatype, root, stream):
                stand_in.calls.append(("bcast", count, datatype, root, stream))

            def allGather(self, sendbuf, recvbuf, count, datatype, stream):
                stand_in.calls.append(("allGather", count, datatype, stream))
                ctypes.memmove(recvbuf, sendbuf, count * stand_in.ITEMSIZE[datatype])

            def destroy(self):
                stand_in.calls.append(("destroy",))

        self.NcclCommunicator = NcclCommunicator

    @staticmethod
    def get_unique_id():
        return tuple((7 * i) % 256 - 128 for i in range(128))


@pytest.fixture
def nccl_stand_in(monkeypatch):
    """The 'nccl' backend of tinygrad_cnn.distributed on a one-rank stand-in for cupy.cuda.nccl."""
    from tinygrad_cnn import distributed as dist
    stand_in = StandInNCCL()
    monkeypatch.setattr(dist, "_import_nccl", lambda: (stand_in, lambda: StandInNCCL.STREAM))
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"):
        monkeypatch.delenv(name, raising=False)
    yield stand_in
    if dist.is_initialized():
        dist.destroy_process_group()
