"""``tinygrad_cnn.utils.data``: PyTorch's datasets, samplers, collation and a DataLoader whose workers are
real processes, deterministic under a seed."""
import os

import numpy as np
import pytest

import tinygrad_cnn as torch
from tinygrad_cnn.data import ArrayDataset, transforms as T
from tinygrad_cnn.utils.data import (BatchSampler, ConcatDataset, DataLoader, Dataset, RandomSampler,
                                     SequentialSampler, Subset, SubsetRandomSampler, TensorDataset,
                                     default_collate, get_worker_info, random_split)


class NoisyImages(Dataset):
    """A map-style dataset as scripts write them: per-item random augmentation from np.random,
    returning an (image, label) pair, and recording which process built each item."""

    def __init__(self, n=40):
        self.images = np.arange(n * 12, dtype=np.float32).reshape(n, 3, 2, 2) / 100
        self.labels = [i % 10 for i in range(n)]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        noise = np.random.standard_normal(self.images[index].shape).astype(np.float32)
        return self.images[index] + 0.01 * noise, self.labels[index]


def _run(loader, epochs=1):
    out = []
    for _ in range(epochs):
        out.extend((x.numpy().copy(), y.numpy().copy()) for x, y in loader)
    return out


def test_workers_run_in_other_processes_and_batches_come_in_order():
    pids = []

    class WherePid(Dataset):
        def __len__(self):
            return 24

        def __getitem__(self, i):
            return {"index": i, "pid": os.getpid(), "worker": get_worker_info().id}

    loader = DataLoader(WherePid(), batch_size=4, num_workers=2)
    for batch in loader:
        pids.extend(batch["pid"].tolist())
        assert batch["worker"].tolist() == [batch["index"][0].item() // 4 % 2] * 4   # batch b -> worker b % 2
    assert os.getpid() not in pids and len(set(pids)) == 2
    assert [b["index"].tolist() for b in loader] == [list(range(i, i + 4)) for i in range(0, 24, 4)]
    assert get_worker_info() is None


def test_workers_are_deterministic_under_a_seed():
    ds = NoisyImages()
    kwargs = dict(batch_size=6, shuffle=True, num_workers=2, drop_last=True, pin_memory=True)
    runs = []
    for persistent in (False, False, True, True):
        torch.manual_seed(3)
        runs.append(_run(DataLoader(ds, persistent_workers=persistent, **kwargs), epochs=2))
    first = runs[0]
    assert len(first) == 2 * (40 // 6)
    # Same settings, same batches. Persistent workers keep their random state into the next
    # epoch while fresh ones are seeded again (as in PyTorch), so the two agree on epoch 0 only.
    for run, compared in ((runs[1], first), (runs[3], runs[2]), (runs[2][:6], first[:6])):
        for (xa, ya), (xb, yb) in zip(run, compared):
            np.testing.assert_array_equal(ya, yb)
            np.testing.assert_array_equal(xa, xb)
    torch.manual_seed(4)
    other = _run(DataLoader(ds, **kwargs))
    assert not all(np.array_equal(ya, yb) for (_, ya), (_, yb) in zip(first, other))
    # the shuffled order is the same whatever the number of workers
    labels = [y for _, y in _run(DataLoader(ds, batch_size=6, shuffle=True, seed=9, num_workers=0))]
    labels3 = [y for _, y in _run(DataLoader(ds, batch_size=6, shuffle=True, seed=9, num_workers=3))]
    for a, b in zip(labels, labels3):
        np.testing.assert_array_equal(a, b)


def test_array_datasets_with_batch_augmentation_give_the_same_batches_with_workers():
    rng = np.random.default_rng(0)
    ds = ArrayDataset(rng.integers(0, 256, (50, 3, 8, 8), dtype=np.uint8), np.arange(50) % 10)
    aug = T.Compose([T.RandomCrop(8, padding=2), T.RandomHorizontalFlip(), T.ToFloat()])
    plain = _run(DataLoader(ds, batch_size=8, shuffle=True, seed=5, transform=aug), epochs=2)
    workers = _run(DataLoader(ds, batch_size=8, shuffle=True, seed=5, transform=aug, num_workers=2,
                              persistent_workers=True, prefetch_factor=3), epochs=2)
    for (xa, ya), (xb, yb) in zip(plain, workers):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)


def test_worker_init_fn_runs_in_each_worker_and_resume_works():
    def init(worker_id):
        info = get_worker_info()
        assert info.id == worker_id and info.num_workers == 2
        np.random.seed(1000 + worker_id)

    ds = NoisyImages(30)
    a = DataLoader(ds, batch_size=5, shuffle=True, seed=1, num_workers=2, worker_init_fn=init)
    b = DataLoader(ds, batch_size=5, shuffle=True, seed=1, num_workers=2, worker_init_fn=init)
    for (xa, _), (xb, _) in zip(_run(a), _run(b)):
        np.testing.assert_array_equal(xa, xb)
    # stop early, resume from the state dict in a fresh loader
    it = iter(a)
    seen = [next(it)[1].numpy() for _ in range(2)]
    state = a.state_dict()
    it.close()
    resumed = DataLoader(ds, batch_size=5, shuffle=True, seed=0, num_workers=2)
    resumed.load_state_dict(state)
    assert state == {"seed": 1, "epoch": 1, "position": 2}
    rest = [y for _, y in _run(resumed)]
    a.set_epoch(1)
    expected = [y for _, y in _run(a)]
    assert len(rest) == len(expected) - 2 == 4
    for got, want in zip(seen + rest, expected):
        np.testing.assert_array_equal(got, want)


def test_errors_in_workers_reach_the_training_loop():
    class Broken(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            if i == 5:
                raise KeyError("sample 5 is missing")
            return np.zeros(2, np.float32), 0

    with pytest.raises(KeyError, match="sample 5 is missing.*DataLoader worker process 0"):
        list(DataLoader(Broken(), batch_size=2, num_workers=2))

    def bad_init(worker_id):
        raise ValueError("no GPU here")

    with pytest.raises(ValueError, match="no GPU here"):
        list(DataLoader(Broken(), batch_size=2, num_workers=1, worker_init_fn=bad_init))


def test_collate_fn_sampler_and_batch_sampler():
    ds = TensorDataset(torch.arange(10.0), torch.arange(10) * 2)
    loader = DataLoader(ds, batch_size=3, sampler=SequentialSampler(ds), collate_fn=lambda batch: batch)
    first = next(iter(loader))
    assert isinstance(first, list) and len(first) == 3 and first[1][1].item() == 2
    picked = DataLoader(ds, batch_size=2, sampler=SubsetRandomSampler([1, 3, 5, 7], generator=torch.Generator().manual_seed(0)))
    values = sorted(int(v) for x, _ in picked for v in x.tolist())
    assert values == [1, 3, 5, 7] and len(picked) == 2
    batches = DataLoader(ds, batch_sampler=BatchSampler(SequentialSampler(ds), 4, drop_last=True))
    assert [x.tolist() for x, _ in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]] and len(batches) == 2
    with pytest.raises(ValueError, match="sampler option is mutually exclusive with shuffle"):
        DataLoader(ds, sampler=SequentialSampler(ds), shuffle=True)
    with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive"):
        DataLoader(ds, batch_size=2, batch_sampler=[[0]])
    with pytest.raises(ValueError, match="persistent_workers option needs num_workers > 0"):
        DataLoader(ds, persistent_workers=True)
    assert len(list(RandomSampler(ds, replacement=True, num_samples=25))) == 25


def test_a_distributed_style_sampler_plugs_in_and_hears_the_epoch():
    class EveryOther:
        """The shape of a distributed sampler: indices for one rank, reshuffled by set_epoch."""

        def __init__(self, n, rank):
            self.n, self.rank, self.epoch = n, rank, 0

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __iter__(self):
            order = np.random.default_rng(self.epoch).permutation(self.n)
            return iter(order[self.rank::2].tolist())

        def __len__(self):
            return (self.n - self.rank + 1) // 2

    ds = TensorDataset(torch.arange(12.0), torch.arange(12))
    sampler = EveryOther(12, rank=1)
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=2)
    epoch0 = np.concatenate([y.numpy() for _, y in loader])
    loader.set_epoch(1)
    assert sampler.epoch == 1
    epoch1 = np.concatenate([y.numpy() for _, y in loader])
    np.testing.assert_array_equal(epoch0, np.random.default_rng(0).permutation(12)[1::2])
    np.testing.assert_array_equal(epoch1, np.random.default_rng(1).permutation(12)[1::2])


def test_default_collate_follows_pytorch():
    batch = default_collate([(np.ones((2, 2), np.float32), 1, 0.5, "a", {"k": True}),
                             (np.zeros((2, 2), np.float32), 2, 1.5, "b", {"k": False})])
    images, labels, floats, names, extra = batch
    assert images.shape == (2, 2, 2) and images.dtype == np.float32
    assert labels.dtype == np.int64 and floats.dtype == np.float64 and names == ["a", "b"]
    assert extra["k"].dtype == np.bool_
    with pytest.raises(RuntimeError, match="equal size"):
        default_collate([[1, 2], [1]])
    with pytest.raises(TypeError, match="found object"):
        default_collate([object()])


def test_datasets_subset_split_and_concat():
    ds = NoisyImages(20)
    head = Subset(ds, [0, 5, 7])
    assert len(head) == 3 and head[1][1] == 5
    a, b = random_split(ds, [0.75, 0.25], generator=torch.Generator().manual_seed(42))
    a2, _ = random_split(ds, [15, 5], generator=torch.Generator().manual_seed(42))
    assert len(a) == 15 and len(b) == 5 and list(a.indices) == list(a2.indices)
    assert not set(a.indices) & set(b.indices)
    both = ds + head
    assert isinstance(both, ConcatDataset) and len(both) == 23 and both[21][1] == 5
    with pytest.raises(IndexError, match="out of range"):
        head[3]
    with pytest.raises(ValueError, match="size mismatch"):
        TensorDataset(torch.ones(3), torch.ones(4))
    x, y = next(iter(DataLoader(head, batch_size=3)))
    assert x.shape == (3, 3, 2, 2) and y.tolist() == [0, 5, 7]


def test_persistent_workers_after_an_early_stop_deliver_the_right_batches():
    ds = TensorDataset(torch.arange(60.0).reshape(30, 2), torch.arange(30))
    loader = DataLoader(ds, batch_size=3, shuffle=True, seed=2, num_workers=2, persistent_workers=True,
                        prefetch_factor=4)
    for _ in loader:
        break                                        # batches 1..7 are still being built
    loader.set_epoch(1)
    got = [y.tolist() for _, y in loader]
    reference = DataLoader(ds, batch_size=3, shuffle=True, seed=2)
    reference.set_epoch(1)
    assert got == [y.tolist() for _, y in reference]
