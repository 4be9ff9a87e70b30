import hashlib
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinygrad_cnn.data import CIFAR10, DatasetIntegrityError, DatasetNotFoundError, read_cifar_batch
from tinygrad_cnn.data import cifar as cifar_module


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 40))
def test_record_count_comes_from_file_size(tmp_path_factory, n, datagen):
    path = tmp_path_factory.mktemp("c") / "data_batch_1.bin"
    labels = np.arange(n) % 10
    raw, images = datagen.cifar_records(labels, seed=n)
    path.write_bytes(raw)
    x, y = read_cifar_batch(path)
    assert x.shape == (n, 3, 32, 32) and x.dtype == np.uint8
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_array_equal(x, images)


def test_pixel_layout_is_rgb_planes_row_major(tmp_path):
    record = np.zeros(3073, np.uint8)
    record[0] = 4
    record[1 + 0 * 1024 + 0] = 11          # red, row 0, col 0
    record[1 + 1 * 1024 + 1] = 22          # green, row 0, col 1
    record[1 + 2 * 1024 + 32 * 2 + 5] = 33  # blue, row 2, col 5
    (tmp_path / "b.bin").write_bytes(record.tobytes())
    x, y = read_cifar_batch(tmp_path / "b.bin")
    assert y[0] == 4
    assert x[0, 0, 0, 0] == 11 and x[0, 1, 0, 1] == 22 and x[0, 2, 2, 5] == 33
    assert int(x.sum()) == 66


@pytest.mark.parametrize("extra", [1, 3072, -5])
def test_truncated_file_is_a_clear_error(tmp_path, extra, datagen):
    raw, _ = datagen.cifar_records(np.zeros(3, np.uint8))
    raw = raw + b"\0" * extra if extra > 0 else raw[:extra]
    (tmp_path / "b.bin").write_bytes(raw)
    with pytest.raises(DatasetIntegrityError, match="truncated/corrupt"):
        read_cifar_batch(tmp_path / "b.bin")


def test_empty_file_and_bad_label_are_errors(tmp_path, datagen):
    (tmp_path / "e.bin").write_bytes(b"")
    with pytest.raises(DatasetIntegrityError, match="truncated/corrupt"):
        read_cifar_batch(tmp_path / "e.bin")
    raw, _ = datagen.cifar_records([1, 12, 3])
    (tmp_path / "l.bin").write_bytes(raw)
    with pytest.raises(DatasetIntegrityError, match="record 1 has label 12"):
        read_cifar_batch(tmp_path / "l.bin")


def test_truncated_batch_is_refused_even_without_verification(tmp_path, datagen):
    datagen.write_cifar_folder(tmp_path, n=5)
    with open(tmp_path / "data_batch_3.bin", "ab") as fh:
        fh.write(b"\1\2")
    with pytest.raises(DatasetIntegrityError, match="data_batch_3.bin is truncated/corrupt"):
        CIFAR10(tmp_path, verify=False)
    with pytest.warns(UserWarning, match="5 records"):
        CIFAR10(tmp_path, train=False, verify=False)  # the test batch is intact


def _pretend_official(monkeypatch, written):
    """Make the synthetic copy the 'official' one: record count and label hashes."""
    monkeypatch.setattr(cifar_module, "OFFICIAL_RECORDS", 7)
    hashes = {name: hashlib.sha256(labels.tobytes()).hexdigest() for name, (_, labels) in written.items()}
    monkeypatch.setattr(cifar_module, "LABEL_SHA256", hashes)


def test_verified_copy_loads_without_warning(tmp_path, monkeypatch, datagen):
    written = datagen.write_cifar_folder(tmp_path / "cifar-10-batches-bin", n=7)
    _pretend_official(monkeypatch, written)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train = CIFAR10(tmp_path)  # the parent folder holding cifar-10-batches-bin/
        test = CIFAR10(tmp_path / "cifar-10-batches-bin", train=False)
    assert len(train) == 35 and len(test) == 7
    assert train.data.shape == (35, 3, 32, 32) and train.data.dtype == np.uint8
    assert train.targets.dtype == np.int64
    expected = np.concatenate([written[f"data_batch_{i}.bin"][0] for i in range(1, 6)])
    np.testing.assert_array_equal(train.data, expected)
    np.testing.assert_array_equal(test.targets, written["test_batch.bin"][1])
    assert train.classes == cifar_module.CIFAR10_CLASSES  # no batches.meta.txt -> standard names
    image, label = train[8]
    np.testing.assert_array_equal(image, expected[8])
    assert label == int(train.targets[8]) and isinstance(label, int)


def test_reordered_labels_fail_verification(tmp_path, monkeypatch, datagen):
    written = datagen.write_cifar_folder(tmp_path, n=7)
    _pretend_official(monkeypatch, written)
    raw = bytearray((tmp_path / "data_batch_2.bin").read_bytes())
    raw[0] = (raw[0] + 1) % 10
    (tmp_path / "data_batch_2.bin").write_bytes(bytes(raw))
    with pytest.raises(DatasetIntegrityError, match="data_batch_2.bin: label sequence SHA-256"):
        CIFAR10(tmp_path)


def test_partial_shared_copy_is_refused_unless_verify_false(shared_cifar_dir):
    with pytest.raises(DatasetIntegrityError, match="1000 records instead of the official 10000.*verify=False"):
        CIFAR10(shared_cifar_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = CIFAR10(shared_cifar_dir, verify=False)
    assert len([w for w in caught if issubclass(w.category, UserWarning)]) == 1
    assert "not the official" in str(caught[0].message)
    with pytest.warns(UserWarning, match="test_batch.bin: 1000 records"):
        test = CIFAR10(shared_cifar_dir, train=False, verify=False)
    assert len(train) == 5000 and len(test) == 1000
    np.testing.assert_array_equal(train.targets[:10], [6, 9, 9, 4, 1, 1, 2, 7, 8, 3])
    np.testing.assert_array_equal(test.targets[:10], [3, 8, 8, 0, 6, 6, 1, 6, 3, 1])
    np.testing.assert_array_equal(np.bincount(train.targets[:1000], minlength=10),
                                  [102, 112, 99, 92, 99, 85, 107, 102, 99, 103])
    np.testing.assert_array_equal(np.bincount(test.targets, minlength=10),
                                  [103, 89, 100, 103, 90, 86, 112, 102, 106, 109])
    channel_means = train.data.mean(axis=(0, 2, 3)) / 255
    np.testing.assert_allclose(channel_means, [0.49, 0.48, 0.45], atol=0.02)
    assert train.classes[0] == "airplane" and train.classes[9] == "truck"


def test_missing_files_error_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYGRAD_CNN_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError) as info:
        CIFAR10(tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message and "cifar-10-batches-bin" in message
    assert "root=" in message and "TINYGRAD_CNN_DATA" in message and "download=True" in message


def test_root_none_uses_cache_dir_argument_then_env(tmp_path, monkeypatch, datagen):
    written = datagen.write_cifar_folder(tmp_path / "a" / "cifar-10-batches-bin", n=2, seed=1)
    datagen.write_cifar_folder(tmp_path / "b" / "cifar-10-batches-bin", n=3, seed=2)
    monkeypatch.setenv("TINYGRAD_CNN_DATA", str(tmp_path / "b"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert len(CIFAR10(None, train=False, verify=False)) == 3
        from_arg = CIFAR10(None, train=False, verify=False, cache_dir=tmp_path / "a")
    np.testing.assert_array_equal(from_arg.targets, written["test_batch.bin"][1])


def test_classes_come_from_meta_file(tmp_path, datagen):
    datagen.write_cifar_folder(tmp_path, n=1)
    names = [f"class{i}" for i in range(10)]
    (tmp_path / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    with pytest.warns(UserWarning):
        ds = CIFAR10(tmp_path, train=False, verify=False)
    assert ds.classes == names


def test_getitem_applies_transform(tmp_path, datagen):
    datagen.write_cifar_folder(tmp_path, n=4)
    with pytest.warns(UserWarning):
        ds = CIFAR10(tmp_path, train=False, verify=False, transform=lambda x: x[:, :, :4, :4] * 2.0)
    image, label = ds[3]
    assert image.shape == (3, 4, 4)
    np.testing.assert_array_equal(image, ds.data[3, :, :4, :4] * 2.0)
    with pytest.raises(IndexError, match="out of range"):
        ds[4]


def test_a_download_without_network_says_where_to_put_the_archive(tmp_path):
    # Port 9 (discard) on the loopback address: the connection is refused at once.
    url = "http://127.0.0.1:9/cifar-10-binary.tar.gz"
    with pytest.raises(DatasetNotFoundError) as info:
        CIFAR10(tmp_path, download=True, url=url, progress=False)
    message = str(info.value)
    assert f"CIFAR10: could not download {url}" in message
    assert f"place it at {tmp_path / 'cifar-10-binary.tar.gz'}" in message and "MD5" in message
    assert not any(tmp_path.glob("*.part"))
