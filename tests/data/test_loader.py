import re
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinygrad_cnn as tg
from tinygrad_cnn.data import ArrayDataset, CIFAR10, DataLoader, random_split
from tinygrad_cnn.data import transforms as T


def _dataset(n=23, seed=0):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3, 6, 6), dtype=np.uint8)
    return ArrayDataset(data, np.arange(n) % 10)


def _collect(loader):
    return [(x.numpy(), y.numpy()) for x, y in loader]


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 30), batch_size=st.integers(1, 12), drop_last=st.booleans(),
       prefetch=st.integers(0, 3))
def test_batches_cover_the_dataset_in_order(n, batch_size, drop_last, prefetch):
    ds = _dataset(n)
    loader = DataLoader(ds, batch_size=batch_size, drop_last=drop_last, prefetch=prefetch, seed=0)
    batches = _collect(loader)
    expected_len = n // batch_size if drop_last else -(-n // batch_size)
    assert len(loader) == len(batches) == expected_len
    if batches:
        sizes = [len(y) for _, y in batches]
        assert all(s == batch_size for s in sizes[:-1])
        assert sizes[-1] == batch_size or not drop_last
        labels = np.concatenate([y for _, y in batches])
        np.testing.assert_array_equal(labels, ds.targets[: len(labels)])
        images = np.concatenate([x for x, _ in batches])
        np.testing.assert_allclose(images, ds.data[: len(images)] / 255.0, rtol=1e-6)


def test_dtypes_and_tensor_types():
    import tinygrad_cnn
    x, y = next(iter(DataLoader(_dataset(), batch_size=4)))
    assert isinstance(x, tinygrad_cnn.Tensor) and isinstance(y, tinygrad_cnn.Tensor)
    assert x.dtype == np.float32 and x.shape == (4, 3, 6, 6)
    assert y.dtype == np.int64 and y.shape == (4,)
    assert 0.0 <= x.numpy().min() and x.numpy().max() <= 1.0
    x64, _ = next(iter(DataLoader(_dataset(), batch_size=4, dtype=np.float64)))
    assert x64.dtype == np.float64
    normalised, _ = next(iter(DataLoader(_dataset(), batch_size=4,
                                         transform=T.Compose([T.ToFloat(), T.Normalize([0.5] * 3, [0.25] * 3)]))))
    np.testing.assert_allclose(normalised.numpy(), (x.numpy() - 0.5) / 0.25, rtol=1e-5, atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size should be a positive integer value or None, got batch_size=0"):
        DataLoader(_dataset(), batch_size=0)
    with pytest.raises(ValueError, match="dtype must be a float dtype"):
        DataLoader(_dataset(), dtype=np.int32)
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'"):
        DataLoader(_dataset(), device="tpu")


def test_shuffle_is_seeded_and_reshuffles_every_epoch():
    ds = _dataset(40)
    a = DataLoader(ds, batch_size=8, shuffle=True, seed=3)
    b = DataLoader(ds, batch_size=8, shuffle=True, seed=3, prefetch=0)
    epoch0_a = np.concatenate([y for _, y in _collect(a)])
    epoch0_b = np.concatenate([y for _, y in _collect(b)])
    np.testing.assert_array_equal(epoch0_a, epoch0_b)
    np.testing.assert_array_equal(np.sort(epoch0_a), np.sort(ds.targets))
    assert not np.array_equal(epoch0_a, ds.targets)
    assert a.epoch == 1
    epoch1 = np.concatenate([y for _, y in _collect(a)])
    assert not np.array_equal(epoch0_a, epoch1)
    np.testing.assert_array_equal(a.order(1), b.order(1))
    b.set_epoch(1)
    np.testing.assert_array_equal(np.concatenate([y for _, y in _collect(b)]), epoch1)
    other = DataLoader(ds, batch_size=8, shuffle=True, seed=4)
    assert not np.array_equal(np.concatenate([y for _, y in _collect(other)]), epoch0_a)


def test_seed_none_follows_the_global_generator():
    import tinygrad_cnn
    tinygrad_cnn.manual_seed(7)
    first = DataLoader(_dataset(), shuffle=True).order()
    tinygrad_cnn.manual_seed(7)
    np.testing.assert_array_equal(DataLoader(_dataset(), shuffle=True).order(), first)


def _augmenting_loader(ds, seed=11, prefetch=2):
    aug = T.Compose([T.RandomCrop(6, padding=2), T.RandomHorizontalFlip(), T.ToFloat(),
                     T.Normalize([0.5] * 3, [0.2] * 3)])
    return DataLoader(ds, batch_size=5, shuffle=True, seed=seed, transform=aug, prefetch=prefetch)


def test_resume_mid_epoch_continues_identically():
    ds = _dataset(33)
    reference = _augmenting_loader(ds)
    full = _collect(reference) + _collect(reference)  # two epochs
    run = _augmenting_loader(ds, seed=999)
    seen = []
    for i, (x, y) in enumerate(run):
        seen.append((x.numpy(), y.numpy()))
        if i == 2:
            break
    state = run.state_dict()
    assert state == {"seed": 999, "epoch": 0, "position": 3}
    state["seed"] = 11  # pretend the checkpoint came from the reference run
    resumed = _augmenting_loader(ds, seed=123, prefetch=0)
    resumed.load_state_dict({k: np.asarray(v) for k, v in state.items()})  # as read back from an npz
    rest = _collect(resumed) + _collect(resumed)
    assert len(rest) == len(full) - 3
    for (xa, ya), (xb, yb) in zip(full[3:], rest):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)
    assert resumed.state_dict() == {"seed": 11, "epoch": 2, "position": 0}


def test_augmentation_is_reproducible_and_independent_of_prefetch():
    ds = _dataset(30)
    a = _collect(_augmenting_loader(ds, prefetch=3))
    b = _collect(_augmenting_loader(ds, prefetch=0))
    for (xa, _), (xb, _) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
    c = _collect(_augmenting_loader(ds, seed=12))
    assert not all(np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))


def test_state_dict_errors():
    loader = DataLoader(_dataset(10), batch_size=5)
    with pytest.raises(KeyError, match="position"):
        loader.load_state_dict({"seed": 1, "epoch": 0})
    with pytest.raises(ValueError, match="bad epoch 0 / position 7"):
        loader.load_state_dict({"seed": 1, "epoch": 0, "position": 7})


def test_prefetch_runs_ahead_in_a_background_thread():
    calls = []

    def slow(x):
        calls.append(threading.current_thread().name)
        return x

    loader = DataLoader(_dataset(40), batch_size=4, transform=slow, prefetch=3)
    it = iter(loader)
    next(it)
    deadline = time.monotonic() + 5
    while len(calls) < 1 + 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    assert len(calls) == 1 + 3 + 1 or len(calls) == 1 + 3  # the queue holds 3, the worker may hold one more
    assert set(calls) == {"DataLoader-prefetch"}
    it.close()  # stopping early must not leave the worker blocked
    assert not any(t.name == "DataLoader-prefetch" and t.is_alive() for t in threading.enumerate())


def test_worker_errors_are_raised_in_the_consumer():
    def broken(x):
        raise RuntimeError("bad augmentation")

    with pytest.raises(RuntimeError, match="bad augmentation"):
        list(DataLoader(_dataset(), batch_size=4, transform=broken, prefetch=2))


def test_dataset_transform_and_generic_datasets():
    ds = _dataset(12)
    ds.transform = T.CenterCrop(2)
    x, _ = next(iter(DataLoader(ds, batch_size=12)))
    assert x.shape == (12, 3, 2, 2)

    class ListDataset:
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return np.full((1, 2, 2), i, dtype=np.float64), i % 3

    batches = _collect(DataLoader(ListDataset(), batch_size=4, shuffle=True, seed=0))
    labels = np.concatenate([y for _, y in batches])
    images = np.concatenate([x for x, _ in batches])
    np.testing.assert_array_equal(images[:, 0, 0, 0] % 3, labels)
    assert sorted(images[:, 0, 0, 0]) == list(range(6))


def test_random_split_is_disjoint_and_seeded():
    ds = _dataset(50)
    a, b = random_split(ds, [40, 10], seed=0)
    assert len(a) == 40 and len(b) == 10
    assert set(a.indices) | set(b.indices) == set(range(50)) and not set(a.indices) & set(b.indices)
    np.testing.assert_array_equal(a.data, ds.data[a.indices])
    np.testing.assert_array_equal(random_split(ds, [0.8, 0.2], seed=0)[1].indices, b.indices)
    with pytest.raises(ValueError, match="sum to len"):
        random_split(ds, [10, 10])


def test_real_cifar_subset_pipeline(shared_cifar_dir):
    with pytest.warns(UserWarning):
        train = CIFAR10(shared_cifar_dir, verify=False)
    mean, std = T.compute_channel_stats(train.data)
    # flips keep the statistics, so the normalised stream is zero-mean / unit-std per channel
    aug = T.Compose([T.RandomHorizontalFlip(), T.ToFloat(), T.Normalize(mean, std)])
    loader = DataLoader(train, batch_size=500, shuffle=True, seed=0, transform=aug)
    sums, squares, count = np.zeros(3), np.zeros(3), 0
    for x, y in loader:
        assert x.shape == (500, 3, 32, 32)
        sums += x.numpy().sum(axis=(0, 2, 3), dtype=np.float64)
        squares += np.square(x.numpy(), dtype=np.float64).sum(axis=(0, 2, 3))
        count += x.shape[0] * 32 * 32
    np.testing.assert_allclose(sums / count, 0, atol=1e-4)
    np.testing.assert_allclose(np.sqrt(squares / count), 1, atol=1e-4)
    # images stay paired with their labels under shuffling
    plain = DataLoader(train, batch_size=700, shuffle=True, seed=5)
    x, y = next(iter(plain))
    order = plain.order(0)[:700]
    np.testing.assert_array_equal(y.numpy(), train.targets[order])
    np.testing.assert_allclose(x.numpy(), train.data[order] / 255.0, rtol=1e-6)
    crops, _ = next(iter(DataLoader(train, batch_size=64, transform=T.RandomCrop(28, padding=4), seed=0)))
    assert crops.shape == (64, 3, 28, 28)


# ---------------------------------------------------------------------------- batch_size and odd items

@pytest.mark.parametrize("batch_size", [2.5, "a", 0, -1, True])
def test_batch_size_must_be_a_positive_integer_or_none(batch_size):
    dataset = [(np.zeros(2, np.float32), 0)] * 5
    with pytest.raises(ValueError, match=rf"DataLoader: batch_size should be a positive integer value or None, "
                                         rf"got batch_size={re.escape(repr(batch_size))}"):
        DataLoader(dataset, batch_size=batch_size)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batch_size_none_gives_each_sample_alone_as_torch_does(num_workers):
    dataset = [(np.full(3, i, np.float32), i) for i in range(5)]
    loader = DataLoader(dataset, batch_size=None, shuffle=True, seed=3, num_workers=num_workers)
    items = list(loader)
    assert len(loader) == len(items) == 5
    assert sorted(label for _, label in items) == [0, 1, 2, 3, 4]
    for image, label in items:
        assert isinstance(image, tg.Tensor) and image.shape == (3,) and np.all(image.numpy() == label)
    with pytest.raises(ValueError, match="batch_size=None .* mutually exclusive with drop_last"):
        DataLoader(dataset, batch_size=None, drop_last=True)


def test_items_that_cannot_be_batched_are_named():
    with pytest.raises(TypeError, match="default_collate: .*found object"):
        next(iter(DataLoader([object()] * 4, batch_size=2)))
    # anything else PyTorch can collate works: plain arrays, triples, dicts
    batch = next(iter(DataLoader([np.ones(2)] * 4, batch_size=2)))
    assert batch.shape == (2, 2)
    a, b, c = next(iter(DataLoader([(np.ones(2), 1, "x")] * 4, batch_size=2)))
    assert a.shape == (2, 2) and b.shape == (2,) and c == ["x", "x"]


def test_batch_sampler_refuses_a_fractional_batch_size():
    from tinygrad_cnn.data import BatchSampler, SequentialSampler
    with pytest.raises(ValueError, match=r"BatchSampler: batch_size should be a positive integer value, got batch_size=2.5"):
        BatchSampler(SequentialSampler(range(4)), 2.5, False)
