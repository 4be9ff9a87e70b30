"""What each rank runs in the multi-process tests: ``mpiexec -n 2 python -m mpi4py tests/mpi_ranks.py CHECK``.

Every check asserts on each rank (an assertion aborts the whole job with a non-zero exit code) and
ends by printing ``CHECK ok rank R``, which the launching test looks for on every rank.
"""
import sys

import numpy as np

import tinygrad_cnn
import tinygrad_cnn.distributed as dist
from tinygrad_cnn import nn, optim
from tinygrad_cnn.data import ArrayDataset, DataLoader, DistributedSampler
from tinygrad_cnn.nn.parallel import DistributedDataParallel


def expect_error(kind, fragment, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except kind as exc:
        assert fragment in str(exc), f"{kind.__name__} message {str(exc)!r} lacks {fragment!r}"
        return
    raise AssertionError(f"{getattr(fn, '__name__', fn)} did not raise {kind.__name__}")


def check_collectives():
    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    assert dist.is_initialized() and world == 2 and dist.get_backend() == "mpi"
    base = np.arange(6, dtype=np.float64).reshape(2, 3)
    for dtype in (np.float32, np.float64, np.int64):
        expected = {dist.ReduceOp.SUM: base * 2 + 1, dist.ReduceOp.MAX: base + 1, dist.ReduceOp.MIN: base,
                    dist.ReduceOp.PRODUCT: base * (base + 1)}
        if dtype != np.int64:
            expected[dist.ReduceOp.AVG] = base + 0.5
        for op, want in expected.items():
            t = tinygrad_cnn.tensor(base + rank, dtype=dtype)
            dist.all_reduce(t, op=op)
            assert t.dtype == dtype and np.array_equal(t.numpy(), want.astype(dtype)), (op, dtype, t.numpy())
    scalar = tinygrad_cnn.tensor(2.0 + rank, dtype=np.float64)   # 0-d
    dist.all_reduce(scalar, op=dist.ReduceOp.PRODUCT)
    assert scalar.shape == () and float(scalar.item()) == 6.0, scalar
    # In place on a non-contiguous view: the values land in the viewed elements of the parent.
    parent = np.zeros((3, 4), dtype=np.float32)
    parent[:, ::2] = rank + 1
    t = tinygrad_cnn.Tensor._wrap(parent[:, ::2])
    dist.all_reduce(t)
    assert (parent[:, ::2] == 3).all() and (parent[:, 1::2] == 0).all(), parent
    t = tinygrad_cnn.tensor([10.0 * rank, rank + 0.5])
    dist.broadcast(t, src=1)
    assert np.array_equal(t.numpy(), np.float32([10.0, 1.5])), t.numpy()
    gathered = [tinygrad_cnn.zeros(2, 2, dtype=np.int64) for _ in range(world)]
    dist.all_gather(gathered, tinygrad_cnn.full((2, 2), rank + 7, dtype=np.int64))
    assert [int(g.numpy()[0, 0]) for g in gathered] == [7, 8] and all((g.numpy() == g.numpy()[0, 0]).all()
                                                                      for g in gathered)
    dist.barrier()
    # Mismatches across ranks raise on every rank, naming both ranks' shapes or dtypes.
    expect_error(ValueError, "rank 1: shape (3,)", dist.all_reduce, tinygrad_cnn.zeros(2 + rank))
    expect_error(ValueError, "dtype float64", dist.broadcast,
                 tinygrad_cnn.zeros(2, dtype=np.float32 if rank == 0 else np.float64), 0)
    expect_error(ValueError, "differ in shape or dtype", dist.all_gather,
                 [tinygrad_cnn.zeros(2 + rank) for _ in range(world)], tinygrad_cnn.zeros(2 + rank))
    expect_error(ValueError, "src must be a rank in [0, 2)", dist.broadcast, tinygrad_cnn.zeros(2), 2)
    expect_error(ValueError, "world_size=2 tensors", dist.all_gather, [tinygrad_cnn.zeros(1)], tinygrad_cnn.zeros(1))
    check_sampler_coverage(rank, world)
    dist.destroy_process_group()
    assert not dist.is_initialized()
    print(f"collectives ok rank {rank}", flush=True)


def check_sampler_coverage(rank, world):
    """Through the DataLoader, the ranks' batches together cover each sample once per epoch."""
    for n, drop_last in ((20, False), (21, False), (21, True)):
        data = ArrayDataset(np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1), np.arange(n))
        sampler = DistributedSampler(data, shuffle=True, seed=3, drop_last=drop_last)
        loader = DataLoader(data, batch_size=4, sampler=sampler, prefetch=0)
        for epoch in range(2):
            mine = np.concatenate([labels.numpy() for _, labels in loader])
            both = [tinygrad_cnn.zeros(mine.size, dtype=np.int64) for _ in range(world)]
            dist.all_gather(both, tinygrad_cnn.tensor(mine, dtype=np.int64))
            seen = np.concatenate([b.numpy() for b in both])
            counts = np.bincount(seen, minlength=n)
            if drop_last:
                assert seen.size == n - n % world and counts.max() == 1, (epoch, counts)
            else:
                assert counts.min() >= 1 and seen.size == n + (-n) % world, (epoch, counts)
            orders = [np.asarray(b.numpy()) for b in both]
            if epoch == 0:
                first = orders
            else:
                assert any(not np.array_equal(a, b) for a, b in zip(first, orders)), "set_epoch did not reshuffle"


def small_cnn(dtype):
    tinygrad_cnn.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 10))
    return model.double() if dtype == np.float64 else model


def sgd_steps(model, images, labels, steps, micro_batches=1, ddp=None):
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    run = ddp if ddp is not None else model
    for _ in range(steps):
        opt.zero_grad()
        for i, (x, y) in enumerate(zip(np.array_split(images, micro_batches), np.array_split(labels, micro_batches))):
            loss = loss_fn(run(tinygrad_cnn.Tensor(x)), tinygrad_cnn.Tensor(y)) * (1.0 / micro_batches)
            if ddp is not None and i < micro_batches - 1:
                with ddp.no_sync():
                    loss.backward()
            else:
                loss.backward()
        opt.step()
    return {name: p.numpy().copy() for name, p in model.named_parameters()}


def check_ddp():
    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    for dtype, rtol, atol in ((np.float64, 1e-10, 1e-10), (np.float32, 2e-5, 1e-6)):
        rng = np.random.default_rng(0)
        images = rng.normal(size=(128, 3, 8, 8)).astype(dtype)
        labels = rng.integers(0, 10, size=128)
        reference = sgd_steps(small_cnn(dtype), images, labels, steps=5)
        model = small_cnn(dtype)
        if rank == 1:  # construction must replace these with rank 0's values
            for p in model.parameters():
                p.numpy()[...] = 1.0
        ddp = DistributedDataParallel(model, bucket_cap_mb=0.0005)   # several buckets
        assert len(ddp._buckets) > 1 and ddp.module is model
        share = slice(rank * 64, (rank + 1) * 64)
        for micro_batches in (1, 2):
            replica = small_cnn(dtype)
            wrapped = ddp if micro_batches == 1 else DistributedDataParallel(replica)
            trained = sgd_steps(wrapped.module, images[share], labels[share], steps=5,
                                micro_batches=micro_batches, ddp=wrapped)
            for name, want in reference.items():
                np.testing.assert_allclose(trained[name], want, rtol=rtol, atol=atol,
                                           err_msg=f"{name} ({np.dtype(dtype).name}, {micro_batches} micro-batches)")
    check_sync_batchnorm(rank)
    # Buffers come from rank 0 at construction and before each training forward.
    bn = nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2))
    if rank == 1:
        bn[1].running_mean.numpy()[...] = 5.0
    bn_ddp = DistributedDataParallel(bn)
    assert (bn[1].running_mean.numpy() == 0).all()
    bn_ddp(tinygrad_cnn.Tensor(np.full((2, 3, 4, 4), rank, dtype=np.float32)))
    means = [tinygrad_cnn.zeros(2) for _ in range(world)]
    dist.all_gather(means, bn[1].running_mean)
    assert not np.array_equal(means[0].numpy(), means[1].numpy()), "batch statistics should be per rank"
    # Models that differ across ranks are refused at construction, on every rank.
    expect_error(ValueError, "differ in shape or dtype", DistributedDataParallel, nn.Linear(3, 2 + rank))
    expect_error(ValueError, "different numbers of parameters", DistributedDataParallel,
                 nn.Sequential(*[nn.Linear(2, 2) for _ in range(1 + rank)]))
    dist.destroy_process_group()
    print(f"ddp ok rank {rank}", flush=True)


def bn_cnn(norm):
    tinygrad_cnn.manual_seed(2)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), norm(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 10)).double()


def check_sync_batchnorm(rank):
    """SyncBatchNorm on 2 ranks x 64 = BatchNorm in one process x 128: weights and running statistics."""
    rng = np.random.default_rng(1)
    images, labels = rng.normal(2.0, 3.0, size=(128, 3, 8, 8)), rng.integers(0, 10, size=128)
    reference = bn_cnn(nn.BatchNorm2d)
    want = sgd_steps(reference, images, labels, steps=4)
    model = nn.SyncBatchNorm.convert_sync_batchnorm(bn_cnn(nn.BatchNorm2d))
    assert isinstance(model[1], nn.SyncBatchNorm)
    share = slice(rank * 64, (rank + 1) * 64)
    got = sgd_steps(model, images[share], labels[share], steps=4, ddp=DistributedDataParallel(model))
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-10, atol=1e-10, err_msg=f"SyncBatchNorm {name}")
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(getattr(model[1], name).numpy(), getattr(reference[1], name).numpy(),
                                   rtol=1e-10, atol=1e-12, err_msg=f"SyncBatchNorm {name}")
    assert int(model[1].num_batches_tracked.numpy()) == 4


def check_train(example, out, data_dir, mode, stop_after):
    """The CIFAR example on this job's ranks, ``fresh`` or ``resume``d from ``out``; a positive
    ``stop_after`` stops it (checkpointing mid-epoch) after that many batches."""
    from tinygrad_cnn.testing import load_script
    import warnings
    script = load_script(example)
    hooks = {}
    batches = []

    def on_batch_end(loader):
        batches.append(loader.batch_size)
        if stop_after and len(batches) == int(stop_after):
            hooks["stop"].request()

    hooks["on_batch_end"] = on_batch_end
    argv = ["--data-dir", data_dir, "--out", out, "--depth", "8", "--batch-size", "16", "--eval-batch-size", "32",
            "--epochs", "2", "--lr", "0.05", "--no-progress", "--no-plot", "--no-verify"]
    if mode == "resume":
        argv.append("--resume")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = script.main(argv, hooks=hooks)
    world = result["world_size"]
    assert set(batches) == {16 // world}, batches
    print(f"train ok rank {result['rank']} of {world}: {len(batches)} batches, "
          f"{result['epochs_done']} epochs, interrupted {result['interrupted']}", flush=True)


if __name__ == "__main__":
    name, *rest = sys.argv[1:]
    {"collectives": check_collectives, "ddp": check_ddp, "train": check_train}[name](*rest)
