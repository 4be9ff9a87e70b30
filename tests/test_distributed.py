"""tinygrad_cnn.distributed: errors in one process, the NCCL code path on a stand-in, and the collectives'
values on 2 MPI ranks (mpiexec)."""
import pathlib
import sys

import numpy as np
import pytest

import tinygrad_cnn
import tinygrad_cnn.distributed as dist
from tinygrad_cnn.testing import run_mpiexec

RANKS = pathlib.Path(__file__).resolve().parent / "mpi_ranks.py"


def test_two_ranks_collectives_and_sampler_coverage(mpi):
    result = run_mpiexec(2, [RANKS, "collectives"], timeout=240)
    assert result.returncode == 0, result.stdout
    assert "collectives ok rank 0" in result.stdout and "collectives ok rank 1" in result.stdout, result.stdout


@pytest.mark.parametrize("call", [dist.get_rank, dist.get_world_size, dist.barrier, dist.destroy_process_group,
                                  lambda: dist.all_reduce(tinygrad_cnn.zeros(2)),
                                  lambda: dist.broadcast(tinygrad_cnn.zeros(2), 0),
                                  lambda: dist.all_gather([tinygrad_cnn.zeros(2)], tinygrad_cnn.zeros(2))])
def test_collective_before_init_says_so(call):
    assert not dist.is_initialized()
    with pytest.raises(dist.DistributedError, match="not initialized; call .*init_process_group"):
        call()


def test_missing_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)   # makes "import mpi4py" fail
    with pytest.raises(ImportError, match=r"mpi4py.*tinygrad_cnn\[distributed\]"):
        dist.init_process_group("mpi")
    assert not dist.is_initialized() and not dist.is_available()


def test_missing_cupy_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(ImportError, match=r"'nccl' backend needs CuPy.*cupy-cuda12x"):
        dist.init_process_group("nccl")


def test_bad_arguments_to_init():
    with pytest.raises(ValueError, match="backend must be 'mpi' or 'nccl', got 'gloo'"):
        dist.init_process_group("gloo")
    with pytest.raises(ValueError, match="init_method 'tcp://10.0.0.1:23456' is not supported"):
        dist.init_process_group("mpi", init_method="tcp://10.0.0.1:23456")


def test_launcher_detection(monkeypatch):
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"):
        monkeypatch.delenv(name, raising=False)
    assert not dist.launched_with_mpi()
    monkeypatch.setenv("PMI_SIZE", "2")
    assert dist.launched_with_mpi()


def test_nccl_collectives_pass_pointer_count_type_and_stream(nccl_stand_in):
    S = nccl_stand_in
    dist.init_process_group("nccl", world_size=1, rank=0)
    assert (dist.get_rank(), dist.get_world_size(), dist.get_backend()) == (0, 1, "nccl")
    assert S.calls == [("init", 1, 0)]
    t = tinygrad_cnn.tensor([[1.5, 2.0, 3.0], [4.0, 5.0, 6.0]])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    assert S.calls[-1] == ("allReduce", 6, S.NCCL_FLOAT32, S.NCCL_MAX, S.STREAM)
    dist.all_reduce(t, op=dist.ReduceOp.AVG)   # NCCL sum, then / world size
    assert S.calls[-1] == ("allReduce", 6, S.NCCL_FLOAT32, S.NCCL_SUM, S.STREAM)
    np.testing.assert_array_equal(t.numpy(), [[1.5, 2.0, 3.0], [4.0, 5.0, 6.0]])
    d = tinygrad_cnn.tensor(np.arange(5.0), dtype=np.float64)
    dist.broadcast(d, 0)
    assert S.calls[-1] == ("bcast", 5, S.NCCL_FLOAT64, 0, S.STREAM)
    out = [tinygrad_cnn.zeros(3, dtype=np.int64)]
    dist.all_gather(out, tinygrad_cnn.tensor([7, 8, 9], dtype=np.int64))
    assert S.calls[-1] == ("allGather", 3, S.NCCL_INT64, S.STREAM)
    np.testing.assert_array_equal(out[0].numpy(), [7, 8, 9])   # bytes really moved through the pointers
    with pytest.raises(ValueError, match="NCCL has no type for dtype bool"):
        dist.all_reduce(tinygrad_cnn.tensor([True, False]))
    dist.barrier()
    dist.destroy_process_group()
    assert S.calls[-1] == ("destroy",) and not dist.is_initialized()


def test_process_group_checks(nccl_stand_in):
    with pytest.raises(ValueError, match="world_size=4 was requested but the launcher started this process "
                                         "with world_size 1"):
        dist.init_process_group("nccl", world_size=4)
    dist.init_process_group("nccl")
    with pytest.raises(dist.DistributedError, match="already initialized"):
        dist.init_process_group("nccl")
    with pytest.raises(TypeError, match="op must be a ReduceOp"):
        dist.all_reduce(tinygrad_cnn.zeros(2), op="sum")
    with pytest.raises(TypeError, match="ReduceOp.AVG needs a floating point tensor, got dtype int64"):
        dist.all_reduce(tinygrad_cnn.zeros(2, dtype=np.int64), op=dist.ReduceOp.AVG)
    with pytest.raises(TypeError, match="expected a Tensor, got ndarray"):
        dist.all_reduce(np.zeros(2))
    with pytest.raises(ValueError, match=r"tensor_list\[0\] has shape \(3,\) dtype float32, but tensor has "
                                         r"shape \(2,\)"):
        dist.all_gather([tinygrad_cnn.zeros(3)], tinygrad_cnn.zeros(2))
    with pytest.raises(NotImplementedError, match="async_op=True is not supported"):
        dist.barrier(async_op=True)


def test_signature_describes_shape_and_dtype():
    assert dist._describe(dist._signature(np.zeros((2, 3), np.float32))) == "shape (2, 3) dtype float32"
    many = dist._signature(np.zeros((1, 2, 3, 4, 5, 6, 7), np.int64))
    assert dist._describe(many) == "shape (1, 2, 3, 4, 5, ... (42 elements in dims 5+)) dtype int64"
    assert dist._describe(dist._signature(np.zeros(3, np.float64))) == "shape (3,) dtype float64"
    assert dist._describe(dist._signature(np.zeros((), np.float64))) == "shape () dtype float64"
    assert not np.array_equal(dist._signature(np.zeros((2, 3))), dist._signature(np.zeros((3, 2))))
    assert not np.array_equal(dist._signature(np.zeros(4, np.float32)), dist._signature(np.zeros(4, np.int32)))


def test_nccl_without_host_access_leaves_host_arrays_to_mpi(nccl_stand_in, monkeypatch):
    """With the real NCCL (GPU memory only), a CPU tensor in a one-process group is left as it is."""
    monkeypatch.setattr(type(nccl_stand_in), "accepts_host_arrays", False)
    dist.init_process_group("nccl")
    t = tinygrad_cnn.tensor([1.0, 2.0])
    dist.all_reduce(t)
    dist.broadcast(t, 0)
    out = [tinygrad_cnn.zeros(2)]
    dist.all_gather(out, t)
    np.testing.assert_array_equal(out[0].numpy(), [1.0, 2.0])
    assert [c[0] for c in nccl_stand_in.calls] == ["init"]


def test_multi_process_tests_say_why_they_skip(monkeypatch, tmp_path):
    import importlib.util
    from tinygrad_cnn import testing
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mpi4py" else real_find_spec(name, *a))
    assert "mpi4py is not installed: pip install -e \".[distributed]\"" in testing.mpi_unavailable_reason()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    monkeypatch.setattr(testing, "find_mpiexec", lambda: None)
    assert "mpiexec was not found" in testing.mpi_unavailable_reason()


def test_mpiexec_is_found_next_to_the_python_executable(monkeypatch, tmp_path):
    from tinygrad_cnn import testing
    launcher = tmp_path / "bin" / "mpiexec"
    launcher.parent.mkdir()
    launcher.write_text("#!/bin/sh\n")
    launcher.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setenv("PATH", "/nonexistent")
    assert testing.find_mpiexec() == str(launcher)
