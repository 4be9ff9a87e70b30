"""tinygrad_cnn.serialization: .npz save/load, atomic writes, no pickle."""
import os
import pickle
import zipfile

import numpy as np
import pytest

import tinygrad_cnn
from tinygrad_cnn import nn
from tinygrad_cnn import serialization
from tinygrad_cnn.serialization import load, save, unflatten
from tinygrad_cnn.testing import assert_allclose

Tensor = tinygrad_cnn.Tensor


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)

    def forward(self, x):
        return self.bn(self.fc(x))


def test_state_dict_round_trip_keeps_names_values_and_dtypes(tmp_path):
    model = Net()
    model.bn.num_batches_tracked.array[...] = 4
    path = tmp_path / "weights.npz"
    save(model.state_dict(), path)
    loaded = load(path)
    assert list(loaded) == list(model.state_dict())
    for name, tensor in model.state_dict().items():
        assert isinstance(loaded[name], Tensor)
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape, name
        assert_allclose(loaded[name], tensor, err_msg=name)
    assert loaded["bn.num_batches_tracked"].shape == () and loaded["bn.num_batches_tracked"] == 4
    other = Net()
    other.load_state_dict(loaded)
    x = Tensor(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))
    assert_allclose(other.eval()(x), model.eval()(x))
    # the file is a plain npz that NumPy reads on its own
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted([*loaded, "__spec__"])


def test_path_is_used_as_given_and_compression_round_trips(tmp_path):
    path = str(tmp_path / "model.weights")
    save({"a": np.arange(1000.0)}, path, compress=True)
    assert os.listdir(tmp_path) == ["model.weights"]
    assert np.array_equal(load(path)["a"], np.arange(1000.0))
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("a.npy").compress_type == zipfile.ZIP_DEFLATED


def test_saved_file_gets_the_usual_permissions(tmp_path):
    old_mask = os.umask(0o022)
    try:
        save({"a": np.zeros(1)}, tmp_path / "w.npz")
    finally:
        os.umask(old_mask)
    assert (tmp_path / "w.npz").stat().st_mode & 0o777 == 0o644


def test_nested_checkpoint_round_trips_with_its_nesting_and_types(tmp_path):
    model = Net()
    opt = tinygrad_cnn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(Tensor(np.ones((2, 3), dtype=np.float32))).sum().backward()
    opt.step()
    checkpoint = {"net": model.state_dict(), "optimizer": opt.state_dict(), "acc": 91.2, "epoch": 3,
                  "name": "resnet20", "history": {"loss": [1.0, 0.5]}, "flag": True, "best": None,
                  "shape": (3, 4)}
    save(checkpoint, tmp_path / "ckpt.npz")
    loaded = load(tmp_path / "ckpt.npz")
    assert set(loaded) == set(checkpoint)
    assert loaded["acc"] == 91.2 and type(loaded["acc"]) is float
    assert loaded["epoch"] == 3 and type(loaded["epoch"]) is int
    assert loaded["name"] == "resnet20" and loaded["flag"] is True and loaded["best"] is None
    assert loaded["history"] == {"loss": [1.0, 0.5]} and loaded["shape"] == (3, 4)
    assert list(loaded["net"]) == list(model.state_dict())
    assert all(isinstance(v, Tensor) for v in loaded["net"].values())
    assert loaded["optimizer"]["param_groups"][0]["lr"] == 0.1
    assert set(loaded["optimizer"]["state"]) == set(opt.state_dict()["state"])   # integer keys
    restored = Net()
    restored.load_state_dict(loaded["net"])
    opt2 = tinygrad_cnn.optim.SGD(restored.parameters(), lr=0.5)
    opt2.load_state_dict(loaded["optimizer"])
    assert opt2.param_groups[0]["momentum"] == 0.9
    # the arrays stay readable with NumPy alone, under their "/" paths
    with np.load(tmp_path / "ckpt.npz", allow_pickle=False) as archive:
        assert "net/fc.weight" in archive.files and archive["epoch"] == 3
    # a plain np.savez file with "/" names still loads flat, and unflatten nests it
    np.savez(tmp_path / "plain.npz", **{"a/b": np.ones(2), "c": np.zeros(1)})
    flat = load(tmp_path / "plain.npz")
    assert set(flat) == {"a/b", "c"} and isinstance(flat["c"], np.ndarray)
    assert set(unflatten(flat)["a"]) == {"b"}
    with pytest.raises(ValueError, match="save: .*same name 'a/b'"):
        save({"a/b": 1, "a": {"b": 2}}, tmp_path / "clash.npz")


def test_unsupported_values_are_refused_before_anything_is_written(tmp_path):
    path = tmp_path / "x.npz"
    with pytest.raises(TypeError, match="save: object array at bad cannot be saved without pickle"):
        save({"bad": np.array([{"a": 1}], dtype=object)}, path)
    with pytest.raises(TypeError, match="save: cannot store a object at obj"):
        save({"obj": object()}, path)
    with pytest.raises(TypeError, match="keys must be str or int"):
        save({(1, 2): np.zeros(1)}, path)
    with pytest.raises(TypeError, match=r"pass model.state_dict\(\), not the Module"):
        save(Net(), path)
    assert not os.listdir(tmp_path)


def test_crash_during_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "weights.npz"
    save({"w": np.ones(3)}, path)
    original = path.read_bytes()
    calls = []
    real_write = np.lib.format.write_array

    def write_then_crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:            # the second array: the archive is half written
            raise OSError("disk full (simulated)")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", write_then_crash)
    with pytest.raises(OSError, match="simulated"):
        save({"w": np.zeros(3), "v": np.zeros(2)}, path)
    assert len(calls) == 2
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["weights.npz"]
    monkeypatch.undo()
    assert np.array_equal(load(path)["w"], np.ones(3))


def test_interrupt_before_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "weights.npz"
    save({"w": np.ones(3)}, path)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(serialization.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save({"w": np.zeros(3)}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["weights.npz"]
    assert np.array_equal(load(path)["w"], np.ones(3))


def test_files_needing_pickle_are_refused(tmp_path):
    with_objects = tmp_path / "objects.npz"
    np.savez(with_objects, fine=np.ones(2), evil=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="entry 'evil' .* pickled object array"):
        load(with_objects)
    pickled = tmp_path / "model.pt"
    pickled.write_bytes(pickle.dumps({"w": [1.0, 2.0]}))
    with pytest.raises(ValueError, match="not an .npz archive: it is a pickle"):
        load(pickled)
    single = tmp_path / "array.npy"
    np.save(single, np.ones(2))
    with pytest.raises(ValueError, match="single array"):
        load(single)


def test_tensors_on_device_are_saved_from_host_memory(tmp_path, device):
    model = Net().to(device)
    save(model.state_dict(), tmp_path / "w.npz")
    loaded = load(tmp_path / "w.npz")
    assert_allclose(loaded["fc.weight"], model.fc.weight.numpy())
    fresh = Net().to(device)
    fresh.load_state_dict(loaded)
    assert fresh.fc.weight.device == device
    assert_allclose(fresh.fc.weight, model.fc.weight)


def test_pytorch_zip_checkpoints_are_refused_not_returned_as_bytes(tmp_path):
    # torch.save writes a zip holding "<name>/data.pkl" and raw storages; np.load would open it
    # as an NpzFile and hand back bytes, which load_state_dict could not make sense of.
    fake = tmp_path / "resnet.pt"
    with zipfile.ZipFile(fake, "w") as archive:
        archive.writestr("resnet/data.pkl", pickle.dumps({"w": 1}))
        archive.writestr("resnet/data/0", b"\0" * 16)
    with pytest.raises(ValueError, match=r"not an .npz of arrays: it holds 'resnet/data.pkl', "
                                         r"'resnet/data/0'.*PyTorch checkpoint"):
        load(fake)


def test_real_pytorch_checkpoint_is_refused(torch, tmp_path):
    new_format, old_format = tmp_path / "new.pt", tmp_path / "old.pt"
    torch.save(torch.nn.Linear(2, 2).state_dict(), new_format)
    torch.save(torch.nn.Linear(2, 2).state_dict(), old_format, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="PyTorch checkpoint"):
        load(new_format)
    with pytest.raises(ValueError, match="it is a pickle"):
        load(old_format)


def test_damaged_empty_and_foreign_files_give_clear_errors(tmp_path):
    good = tmp_path / "good.npz"
    save({"w": np.arange(1000.0), "v": np.ones(3)}, good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="damaged .npz archive"):
        load(truncated)
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"is empty \(0 bytes\)"):
        load(empty)
    text = tmp_path / "notes.npz"
    text.write_text("not weights")
    with pytest.raises(ValueError, match="not a zip archive"):
        load(text)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load(tmp_path / "missing.npz")


def test_saving_into_a_missing_directory_or_onto_a_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="the directory .*nowhere' does not exist"):
        save({"w": np.ones(2)}, tmp_path / "nowhere" / "w.npz")
    with pytest.raises(IsADirectoryError, match="it is a directory"):
        save({"w": np.ones(2)}, tmp_path)
    assert os.listdir(tmp_path) == []
