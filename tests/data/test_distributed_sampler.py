"""data.DistributedSampler: every index once per epoch across ranks, PyTorch's dealing and padding, and the
DataLoader's sampler= (epochs, resume)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinygrad_cnn.data import ArrayDataset, DataLoader, DistributedSampler


def dataset(n):
    return ArrayDataset(np.zeros((n, 1, 1, 1), np.uint8), np.arange(n))


@settings(max_examples=60)
@given(n=st.integers(0, 40), replicas=st.integers(1, 5), shuffle=st.booleans(), drop_last=st.booleans(),
       epoch=st.integers(0, 3))
def test_ranks_cover_every_index_once(n, replicas, shuffle, drop_last, epoch):
    samplers = [DistributedSampler(dataset(n), replicas, r, shuffle=shuffle, seed=5, drop_last=drop_last)
                for r in range(replicas)]
    for s in samplers:
        s.set_epoch(epoch)
    shares = [list(s) for s in samplers]
    assert len({len(share) for share in shares}) == 1 and all(len(share) == len(s) for share, s in zip(shares, samplers))
    seen = np.concatenate([np.asarray(share, dtype=np.int64) for share in shares])
    counts = np.bincount(seen, minlength=n)
    if drop_last:
        assert seen.size == n - n % replicas and counts.max(initial=0) <= 1
    else:
        padding = (-n) % replicas   # the first indices of the epoch's order, dealt again
        assert counts.min(initial=1) >= 1 and seen.size == n + padding
        assert counts.max(initial=0) <= 1 + -(-padding // max(n, 1))


def test_matches_pytorch_without_shuffle():
    torch_data = pytest.importorskip("torch.utils.data")
    for n, replicas, drop_last in ((10, 3, False), (10, 3, True), (2, 3, False), (12, 4, False)):
        for rank in range(replicas):
            theirs = list(torch_data.DistributedSampler(range(n), replicas, rank, shuffle=False, drop_last=drop_last))
            ours = list(DistributedSampler(dataset(n), replicas, rank, shuffle=False, drop_last=drop_last))
            assert ours == theirs, (n, replicas, rank, drop_last)


def test_epochs_reshuffle_the_same_way_on_every_rank():
    a, b = (DistributedSampler(dataset(50), 2, r, seed=1) for r in range(2))
    first = list(a) + list(b)
    a.set_epoch(1)
    b.set_epoch(1)
    assert sorted(list(a) + list(b)) == sorted(first) and list(a) + list(b) != first


def test_arguments_are_checked():
    with pytest.raises(ValueError, match=r"rank must be in \[0, 2\), got 2"):
        DistributedSampler(dataset(4), num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas must be >= 1, got 0"):
        DistributedSampler(dataset(4), num_replicas=0, rank=0)
    with pytest.raises(RuntimeError, match="process group's, but it is not initialized"):
        DistributedSampler(dataset(4))
    with pytest.raises(ValueError, match="sampler option is mutually exclusive with shuffle"):
        DataLoader(dataset(4), sampler=DistributedSampler(dataset(4), 1, 0), shuffle=True)


def test_loader_draws_its_epochs_from_the_sampler_and_resumes():
    data = dataset(21)
    sampler = DistributedSampler(data, num_replicas=2, rank=1, seed=3)
    loader = DataLoader(data, batch_size=4, sampler=sampler, prefetch=0, seed=0)
    assert len(loader) == 3   # 11 samples on this rank
    epochs = [np.concatenate([y.numpy() for _, y in loader]) for _ in range(2)]
    for e, labels in enumerate(epochs):
        sampler.set_epoch(e)
        np.testing.assert_array_equal(labels, list(sampler))
    assert loader.epoch == 2
    loader.set_epoch(1)
    batches = iter(loader)
    next(batches)
    state = loader.state_dict()
    fresh = DataLoader(data, batch_size=4, sampler=DistributedSampler(data, 2, 1, seed=3), prefetch=0, seed=0)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(np.concatenate([y.numpy() for _, y in fresh]), epochs[1][4:])
