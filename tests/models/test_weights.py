"""save_weights / load_weights: round trip, atomicity, no pickle, and errors that name the key."""
import os

import numpy as np
import pytest

import tinygrad_cnn
from tinygrad_cnn import models
from tinygrad_cnn.models import WeightsError, load_weights, read_weights, save_weights


def states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        np.testing.assert_array_equal(sa[key].numpy(), sb[key].numpy(), err_msg=key)


def test_round_trip_includes_batchnorm_buffers(tmp_path):
    tinygrad_cnn.manual_seed(1)
    source = models.resnet20(shortcut="B")
    for name, buffer in source.named_buffers():
        buffer.array[...] = np.arange(buffer.array.size).reshape(buffer.shape) + 3
    path = save_weights(source, tmp_path / "r20.npz")
    tinygrad_cnn.manual_seed(2)
    target = models.resnet20(shortcut="B")
    missing, unexpected = load_weights(target, path)
    assert missing == [] and unexpected == []
    states_equal(source, target)
    arrays = read_weights(path)
    assert arrays["layer1.0.bn1.num_batches_tracked"].dtype.kind == "i"
    assert arrays["conv1.weight"].dtype == np.float32
    # The file is a plain .npz readable without pickle.
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(source.state_dict())
    assert [p.name for p in tmp_path.iterdir()] == ["r20.npz"]  # no temporary file left behind


def test_loaded_model_computes_the_same_function(tmp_path):
    a, b = models.lenet5(), models.lenet5()
    save_weights(a, tmp_path / "lenet.npz")
    load_weights(b, tmp_path / "lenet.npz")
    x = tinygrad_cnn.Tensor(np.random.default_rng(0).standard_normal((2, 1, 28, 28)).astype(np.float32))
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


def test_missing_and_unexpected_keys_are_named(tmp_path):
    arrays = {k: v.numpy() for k, v in models.resnet20(shortcut="B").state_dict().items()}
    model = models.resnet20(shortcut="A")  # option A has no projection weights
    with pytest.raises(WeightsError, match=r"unexpected keys.*layer2\.0\.shortcut\.0\.weight"):
        load_weights(model, arrays)
    del arrays["fc.bias"]
    with pytest.raises(WeightsError, match=r"missing keys.*'fc\.bias'"):
        load_weights(models.resnet20(shortcut="B"), arrays)
    before = models.resnet20(shortcut="A")
    reference = {k: v.numpy().copy() for k, v in before.state_dict().items()}
    missing, unexpected = load_weights(before, arrays, strict=False)
    assert "fc.bias" in missing and "layer2.0.shortcut.0.weight" in unexpected
    np.testing.assert_array_equal(before.fc.bias.numpy(), reference["fc.bias"])  # untouched
    assert not np.array_equal(before.conv1.weight.numpy(), reference["conv1.weight"])  # loaded


def test_shape_mismatch_names_key_and_shapes_and_loads_nothing(tmp_path):
    save_weights(models.resnet20(num_classes=10), tmp_path / "ten.npz")
    model = models.resnet20(num_classes=5)
    conv_before = model.conv1.weight.numpy().copy()
    with pytest.raises(WeightsError, match=r"'fc\.weight'.*\(5, 64\).*\(10, 64\)"):
        load_weights(model, tmp_path / "ten.npz")
    np.testing.assert_array_equal(model.conv1.weight.numpy(), conv_before)  # checked before copying


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weights file"):
        read_weights(tmp_path / "nope.npz")
    with pytest.raises(WeightsError, match=r"\.npz"):
        save_weights(models.lenet5(), tmp_path / "lenet.pth")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"this is not a zip archive")
    with pytest.raises((WeightsError, ValueError)):
        read_weights(bad)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, weights=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickle"):
        read_weights(pickled)


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "w.npz"
    save_weights({"a": np.ones(3)}, path)
    with pytest.raises(TypeError):
        save_weights({"a": np.array([object()], dtype=object)}, path)
    np.testing.assert_array_equal(read_weights(path)["a"], np.ones(3))
    assert sorted(os.listdir(tmp_path)) == ["w.npz"]
