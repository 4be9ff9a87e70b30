"""tinygrad_cnn.checkpoint: npz layout without pickle, atomic writes, fallbacks, exact state restore."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinygrad_cnn import checkpoint as ckpt


def nested_state():
    return {
        "model": {"conv1.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
                  "bn1.num_batches_tracked": np.asarray(7, dtype=np.int64)},
        "optimizer": {"state": {0: {"momentum_buffer": np.full(3, 0.5)}},
                      "param_groups": [{"lr": 0.1, "nesterov": False, "params": [0]}]},
        "epoch": 4,
        "metrics": [{"epoch": 1, "train_loss": 2.25, "note": "warm"}, {"epoch": 2, "train_loss": float("nan")}],
        "config": {"shortcut": "A", "resume": None, "milestones": (2, 3)},
    }


def assert_tree_equal(a, b, path="<root>"):
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_tree_equal(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_tree_equal(x, y, f"{path}/{i}")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), path
    else:
        assert a == b, path


def test_round_trip_and_plain_numpy_layout(tmp_path):
    path = tmp_path / "checkpoint.npz"
    state = nested_state()
    assert ckpt.save_checkpoint(path, state) == path
    assert_tree_equal(ckpt.load_checkpoint(path), state)
    with np.load(path, allow_pickle=False) as f:  # readable without pickle, weights under their names
        np.testing.assert_array_equal(f["model/conv1.weight"], state["model"]["conv1.weight"])
        assert f["epoch"].shape == () and int(f["epoch"]) == 4
        assert f["metrics/0/train_loss"].dtype == np.float64
        assert str(f["config/shortcut"]) == "A"
        assert all(f[k].dtype != object for k in f.files)


leaves = st.one_of(st.integers(-2**62, 2**62), st.floats(allow_nan=False), st.booleans(), st.none(),
                   st.text(max_size=5).filter(lambda s: not s.endswith("\x00")),
                   st.builds(lambda n, k: np.arange(n, dtype=k), st.integers(0, 4),
                             st.sampled_from([np.float32, np.float64, np.int64, np.uint8])))
keys = st.text(alphabet="abc._", min_size=1, max_size=4)
trees = st.recursive(leaves, lambda children: st.one_of(
    st.lists(children, max_size=3), st.dictionaries(keys, children, max_size=3)), max_leaves=8)


@settings(max_examples=30, deadline=None)
@given(tree=trees)
def test_round_trip_random_trees(tmp_path_factory, tree):
    path = tmp_path_factory.mktemp("rt") / "c.npz"
    ckpt.save_checkpoint(path, {"tree": tree})
    assert_tree_equal(ckpt.load_checkpoint(path), {"tree": tree})


def test_keeps_previous_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "checkpoint.npz"
    ckpt.save_checkpoint(path, {"epoch": 1})
    assert not ckpt.previous_path(path).exists()
    ckpt.save_checkpoint(path, {"epoch": 2})
    assert ckpt.load_checkpoint(path)["epoch"] == 2
    assert ckpt.load_checkpoint(ckpt.previous_path(path))["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "checkpoint.prev.npz"]


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.npz"
    ckpt.save_checkpoint(path, {"epoch": 1}, keep_previous=False)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(path, {"epoch": 2}, keep_previous=False)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]


def test_unstorable_leaf_is_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match="model/f"):
        ckpt.save_checkpoint(tmp_path / "c.npz", {"model": {"f": print}})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match=".npz"):
        ckpt.save_checkpoint(tmp_path / "c.pt", {})


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint file"):
        ckpt.load_checkpoint(tmp_path / "missing.npz")
    path = tmp_path / "checkpoint.npz"
    ckpt.save_checkpoint(path, {"model": {"w": np.arange(1000.0)}})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ckpt.CheckpointError, match="truncated or corrupt"):
        ckpt.load_checkpoint(path)
    # flip one byte inside the stored array: caught by the zip CRC check
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(ckpt.CheckpointError, match=str(path.name)):
        ckpt.load_checkpoint(path)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(2))
    with pytest.raises(ckpt.CheckpointError, match="not a"):
        ckpt.load_checkpoint(other)


def test_latest_checkpoint_skips_temp_and_broken_files(tmp_path):
    assert ckpt.latest_checkpoint(tmp_path / "nothing") is None
    assert ckpt.latest_checkpoint(tmp_path) is None
    path = tmp_path / "checkpoint.npz"
    ckpt.save_checkpoint(path, {"epoch": 1})
    ckpt.save_checkpoint(path, {"epoch": 2})
    # what an interrupted write leaves: a partial temp file, newer than everything else
    (tmp_path / ".checkpoint.npz.tmp-999-abcd").write_bytes(b"PK\x03\x04 partial")
    assert ckpt.latest_checkpoint(tmp_path) == path
    path.write_bytes(path.read_bytes()[:50])  # damaged after the fact: fall back to the kept one
    found = ckpt.latest_checkpoint(tmp_path)
    assert found == ckpt.previous_path(path) and ckpt.load_checkpoint(found)["epoch"] == 1


KILL_CHILD = textwrap.dedent("""
    import sys
    import numpy as np
    from tinygrad_cnn.checkpoint import save_checkpoint
    big = np.ones(6_000_000)  # ~48 MB: a save takes long enough to be killed in the middle
    for epoch in range(1000):
        print("saving", epoch, flush=True)
        save_checkpoint(sys.argv[1], {"epoch": epoch, "model": {"w": big * epoch}})
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_during_save_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.npz"
    child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        for line in child.stdout:
            if line.strip() == "saving 2":  # epochs 0 and 1 are complete, epoch 2 is being written
                break
        deadline = time.monotonic() + 20
        while not list(tmp_path.glob(".checkpoint.npz.tmp-*")) and time.monotonic() < deadline:
            time.sleep(0.001)  # kill while the temp file is being written
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()
    assert list(tmp_path.glob(".checkpoint.npz.tmp-*")), "the kill should have hit a write in progress"
    found = ckpt.latest_checkpoint(tmp_path)
    assert found is not None
    state = ckpt.load_checkpoint(found)
    assert state["epoch"] in (1, 2)
    np.testing.assert_array_equal(state["model"]["w"][:5], np.full(5, float(state["epoch"])))
    ckpt.save_checkpoint(path, {"epoch": 3})  # the next save removes the dead writer's temp file
    assert not list(tmp_path.glob(".*.tmp-*"))


class TinyModel:
    """Minimal object with the state_dict protocol of nn.Module (weights as Tensors)."""

    def __init__(self, tensor_cls, rng):
        self.weight = tensor_cls(rng.standard_normal((3, 2)).astype(np.float32), requires_grad=True)
        self.running_mean = np.zeros(3, dtype=np.float32)

    def parameters(self):
        return [self.weight]

    def state_dict(self):
        return {"weight": self.weight, "running_mean": self.running_mean}

    def load_state_dict(self, state):
        self.weight.array[...] = state["weight"]
        self.running_mean[...] = state["running_mean"]


def test_training_state_restores_exactly(tmp_path):
    tg = pytest.importorskip("tinygrad_cnn")
    Tensor = getattr(tg, "Tensor", None)
    if Tensor is None:
        pytest.skip("tinygrad_cnn.Tensor is not available yet")
    from tinygrad_cnn.data import ArrayDataset, DataLoader
    from tinygrad_cnn.optim import SGD
    from tinygrad_cnn.optim.lr_scheduler import OneCycleLR
    from tinygrad_cnn.random import get_generator, manual_seed

    def make():
        model = TinyModel(Tensor, np.random.default_rng(0))
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        sched = OneCycleLR(opt, max_lr=0.5, total_steps=20)
        data = ArrayDataset(np.arange(40, dtype=np.float32).reshape(10, 1, 2, 2), np.arange(10) % 3)
        loader = DataLoader(data, batch_size=3, shuffle=True, seed=5, prefetch=0)
        return model, opt, sched, loader

    def steps(model, opt, sched, batches, count):
        for _ in range(count):
            images, _labels = next(batches)
            opt.zero_grad()
            g = images.array.reshape(images.shape[0], -1)[:, :2].sum(0) * get_generator().standard_normal()
            model.weight.grad = Tensor(np.broadcast_to(g, (3, 2)).astype(np.float32).copy())
            opt.step()
            sched.step()
            model.running_mean += 1

    manual_seed(3)
    model, opt, sched, loader = make()
    batches = iter(loader)
    steps(model, opt, sched, batches, 2)
    ckpt.save_checkpoint(tmp_path / "c.npz", ckpt.training_state(model, opt, sched, loader, epoch=0))
    steps(model, opt, sched, batches, 2)
    expected = model.weight.array.copy(), model.running_mean.copy(), sched.get_last_lr()

    manual_seed(99)  # different global RNG and fresh objects: everything must come from the file
    model2, opt2, sched2, loader2 = make()
    state = ckpt.restore_training_state(ckpt.load_checkpoint(tmp_path / "c.npz"), model2, opt2, sched2, loader2)
    assert state["epoch"] == 0
    steps(model2, opt2, sched2, iter(loader2), 2)
    np.testing.assert_array_equal(model2.weight.array, expected[0])
    np.testing.assert_array_equal(model2.running_mean, expected[1])
    assert sched2.get_last_lr() == expected[2]
    with pytest.raises(ckpt.CheckpointError, match="'scheduler'"):
        ckpt.restore_training_state({"model": {}}, scheduler=sched2)


@pytest.mark.parametrize("content, kind", [(b"epoch 3, loss 0.2\n", "a text file"), (b"\x80\x04\x95pickle", "a pickle"),
                                           (b"\x93NUMPY\x01\x00", "a NumPy .npy array"), (b"", None)])
def test_a_file_that_is_not_an_npz_archive_is_named_for_what_it_is(tmp_path, content, kind):
    path = tmp_path / "checkpoint.npz"
    path.write_bytes(content)
    expected = f"{path} is empty" if kind is None else f"{path} is not a checkpoint .*look like {kind}"
    with pytest.raises(ckpt.CheckpointError, match=expected) as info:
        ckpt.load_checkpoint(path)
    assert "pickled data" not in str(info.value)
