"""nn.parallel.DistributedDataParallel: on 2 MPI ranks against one process with the whole batch, and its
bookkeeping in one process (on the NCCL stand-in)."""
import pathlib

import numpy as np
import pytest

import tinygrad_cnn
import tinygrad_cnn.distributed as dist
from tinygrad_cnn import nn
from tinygrad_cnn.nn.parallel import DistributedDataParallel
from tinygrad_cnn.testing import run_mpiexec

RANKS = pathlib.Path(__file__).resolve().parents[1] / "mpi_ranks.py"


def test_two_ranks_batch_64_equal_one_process_batch_128(mpi):
    """5 SGD steps (momentum, weight decay), float64 to 1e-10 and float32, also accumulating under no_sync;
    parameters and buffers broadcast from rank 0; mismatched models refused."""
    result = run_mpiexec(2, [RANKS, "ddp"], timeout=240)
    assert result.returncode == 0, result.stdout
    assert "ddp ok rank 0" in result.stdout and "ddp ok rank 1" in result.stdout, result.stdout


def test_needs_a_process_group():
    with pytest.raises(dist.DistributedError, match="DistributedDataParallel: the default process group is not "
                                                    "initialized"):
        DistributedDataParallel(nn.Linear(2, 2))


def test_wraps_module_and_keeps_its_gradients_on_one_rank(nccl_stand_in):
    dist.init_process_group("nccl")
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    ddp = DistributedDataParallel(model)
    assert ddp.module is model and list(ddp.parameters()) == list(model.parameters())
    assert sorted(ddp.state_dict()) == sorted(f"module.{k}" for k in model.state_dict())
    # Parameters (all float32) went through one flat broadcast.
    assert ("bcast", sum(p.numel() for p in model.parameters()), nccl_stand_in.NCCL_FLOAT32, 0,
            nccl_stand_in.STREAM) in nccl_stand_in.calls
    x = tinygrad_cnn.randn(5, 3)
    ddp(x).sum().backward()
    grads = [p.grad.numpy().copy() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    for got, p in zip(grads, model.parameters()):
        np.testing.assert_array_equal(got, p.grad.numpy())


def test_buckets_follow_reverse_registration_order_and_the_cap(nccl_stand_in):
    dist.init_process_group("nccl")
    model = nn.Sequential(nn.Linear(100, 100), nn.Linear(100, 10))   # 10100 + 1010 float32 values
    ddp = DistributedDataParallel(model, bucket_cap_mb=20000 / 2 ** 20)   # 5000 values
    names = {id(p): n for n, p in model.named_parameters()}
    assert [[names[id(p)] for p in b.params] for b in ddp._buckets] == [["1.bias", "1.weight", "0.bias"],
                                                                         ["0.weight"]]
    with pytest.raises(ValueError, match="bucket_cap_mb must be > 0"):
        DistributedDataParallel(model, bucket_cap_mb=0)


def test_unused_parameter_is_reported_at_the_next_forward(nccl_stand_in):
    dist.init_process_group("nccl")

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Linear(2, 2), nn.Linear(2, 2)

        def forward(self, x):
            return self.used(x)

    ddp = DistributedDataParallel(TwoHeads(), bucket_cap_mb=1)
    ddp(tinygrad_cnn.randn(3, 2)).sum().backward()
    with pytest.raises(RuntimeError, match="did not produce gradients for every parameter.*unused.weight"):
        ddp(tinygrad_cnn.randn(3, 2))
    ddp(tinygrad_cnn.randn(3, 2))   # reported once; the wrapper is usable again


def test_no_sync_skips_the_reduction(nccl_stand_in, monkeypatch):
    dist.init_process_group("nccl")
    ddp = DistributedDataParallel(nn.Linear(2, 2))
    ddp.world_size = 2   # pretend, so that reductions are attempted
    reduced = []
    monkeypatch.setattr(ddp, "_reduce", lambda bucket: reduced.append(bucket))
    with ddp.no_sync():
        assert not ddp.require_backward_grad_sync
        ddp(tinygrad_cnn.randn(3, 2)).sum().backward()
    assert reduced == [] and ddp.require_backward_grad_sync
    ddp(tinygrad_cnn.randn(3, 2)).sum().backward()
    assert reduced == ddp._buckets


def test_post_accumulate_grad_hook_sees_the_accumulated_grad():
    w = tinygrad_cnn.tensor([1.0, 2.0], requires_grad=True)
    seen = []
    handle = w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    (w * 3).sum().backward()
    (w * w).sum().backward()
    np.testing.assert_array_equal(seen[0], [3.0, 3.0])
    np.testing.assert_array_equal(seen[1], [5.0, 7.0])
    handle.remove()
    (w * 3).sum().backward()
    assert len(seen) == 2
    with pytest.raises(RuntimeError, match="only leaf tensors that require grad"):
        (w * 2).register_post_accumulate_grad_hook(print)


def test_convert_sync_batchnorm_keeps_parameters_and_buffers():
    from tinygrad_cnn import models
    model = models.resnet20()
    before = {name: id(t) for name, t in model.state_dict(keep_vars=True).items()}
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert converted is model
    assert not any(type(m) is nn.BatchNorm2d for m in model.modules())
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in model.modules()) == 19
    assert {name: id(t) for name, t in model.state_dict(keep_vars=True).items()} == before


def test_sync_batchnorm_path_equals_batchnorm_on_one_rank(nccl_stand_in, monkeypatch):
    """The synchronised forward and backward (with the one-rank stand-in's all-reduce) give BatchNorm's
    outputs, input and parameter gradients and running statistics, in float64."""
    dist.init_process_group("nccl")
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)   # take the synchronised path
    x = np.random.default_rng(0).normal(1.0, 2.0, size=(4, 3, 5, 5))
    results = []
    for layer in (nn.BatchNorm2d(3, momentum=None).double(), nn.SyncBatchNorm(3, momentum=None).double()):
        layer.weight.numpy()[...] = [0.5, 1.5, -2.0]
        layer.bias.numpy()[...] = [0.1, 0.2, 0.3]
        t = tinygrad_cnn.tensor(x, dtype=np.float64, requires_grad=True)
        out = layer(t)
        (out * tinygrad_cnn.tensor(np.linspace(-1, 1, out.numel()).reshape(out.shape))).sum().backward()
        results.append([out.numpy(), t.grad.numpy(), layer.weight.grad.numpy(), layer.bias.grad.numpy(),
                        layer.running_mean.numpy(), layer.running_var.numpy()])
    assert any(call[0] == "allReduce" for call in nccl_stand_in.calls)
    for want, got in zip(*results):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_sync_batchnorm_in_one_process_is_batchnorm():
    x = tinygrad_cnn.randn(4, 3, 5)
    np.testing.assert_array_equal(nn.SyncBatchNorm(3)(x).numpy(), nn.BatchNorm1d(3)(x).numpy())
    with pytest.raises(ValueError, match="expected 2D or 3D or 4D or 5D input"):
        nn.SyncBatchNorm(3)(tinygrad_cnn.randn(3))
