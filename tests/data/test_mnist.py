import gzip
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinygrad_cnn.data import MNIST, DatasetIntegrityError, DatasetNotFoundError, read_idx


@pytest.fixture(scope="module")
def mnist_train(shared_mnist_dir):
    return MNIST(shared_mnist_dir, train=True)


@pytest.fixture(scope="module")
def mnist_test(shared_mnist_dir):
    return MNIST(shared_mnist_dir.parent, train=False)  # parent folder containing mnist/


def test_real_mnist_loads_verified(mnist_train, mnist_test):
    assert mnist_train.data.shape == (60000, 1, 28, 28) and mnist_train.data.dtype == np.uint8
    assert mnist_test.data.shape == (10000, 1, 28, 28)
    assert mnist_train.targets.dtype == np.int64 and mnist_train.targets.shape == (60000,)
    assert abs(mnist_train.data.mean() / 255 - 0.1307) < 5e-4
    np.testing.assert_array_equal(mnist_train.targets[:6], [5, 0, 4, 1, 9, 2])
    np.testing.assert_array_equal(mnist_test.targets[:5], [7, 2, 1, 0, 4])
    assert set(np.unique(mnist_train.targets)) == set(range(10))
    image, label = mnist_train[0]
    assert image.shape == (1, 28, 28) and label == 5


def _write_fake(folder, datagen, n=5, train=False, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    prefix = "train" if train else "t10k"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(datagen.idx_bytes(images))
    (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(datagen.idx_bytes(labels))
    return images, labels


def test_non_official_copy_refused_unless_verify_false(tmp_path, datagen):
    images, labels = _write_fake(tmp_path, datagen)
    with pytest.raises(DatasetIntegrityError, match="t10k-images-idx3-ubyte.gz: MD5 .* differs.*verify=False"):
        MNIST(tmp_path, train=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = MNIST(tmp_path, train=False, verify=False)
    assert len(caught) == 1 and "not the official" in str(caught[0].message)
    np.testing.assert_array_equal(ds.data[:, 0], images)
    np.testing.assert_array_equal(ds.targets, labels)


@settings(max_examples=10, deadline=None)
@given(shape=st.tuples(st.integers(0, 4), st.integers(1, 5), st.integers(1, 5)), gz=st.booleans())
def test_read_idx_roundtrip(tmp_path_factory, datagen, shape, gz):
    array = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path_factory.mktemp("idx") / ("x.gz" if gz else "x")
    path.write_bytes(datagen.idx_bytes(array, gz=gz))
    np.testing.assert_array_equal(read_idx(path, 3), array)


def test_bad_magic_size_and_truncation_are_errors(tmp_path, datagen):
    images = np.zeros((3, 28, 28), np.uint8)
    good = datagen.idx_bytes(images, gz=False)
    cases = {
        "magic": (b"\0\0\x08\x01" + good[4:], "magic number 0x00000801"),
        "short": (good[:-10], "file holds"),
        "long": (good + b"\0", "file holds"),
        "header": (good[:6], "only 6 bytes"),
    }
    for name, (raw, message) in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(DatasetIntegrityError, match=message):
            read_idx(tmp_path / name, 3)
    (tmp_path / "cut.gz").write_bytes(gzip.compress(good)[:-20])
    with pytest.raises(DatasetIntegrityError, match="truncated/corrupt: cannot decompress"):
        read_idx(tmp_path / "cut.gz", 3)


def test_mismatched_counts_and_bad_labels_are_errors(tmp_path, datagen):
    _write_fake(tmp_path, datagen, n=4)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(datagen.idx_bytes(np.zeros(3, np.uint8)))
    with pytest.warns(UserWarning), pytest.raises(DatasetIntegrityError, match="do not match"):
        MNIST(tmp_path, train=False, verify=False)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(datagen.idx_bytes(np.full(4, 11, np.uint8)))
    with pytest.warns(UserWarning), pytest.raises(DatasetIntegrityError, match="label 11"):
        MNIST(tmp_path, train=False, verify=False)


def test_missing_files_error_says_where_it_looked(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        MNIST(tmp_path / "empty", train=True)
    message = str(info.value)
    assert str(tmp_path / "empty") in message and "root=" in message and "download=True" in message
