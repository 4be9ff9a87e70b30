"""Fixtures shared by the tests of the example scripts."""
import numpy as np
import pytest


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    """Binary-format CIFAR files with 8 train records per batch file and 8 test records.

    Each class has its own mean colour, so a network can learn something in two epochs.
    """
    root = tmp_path_factory.mktemp("cifar") / "cifar-10-batches-bin"
    root.mkdir()
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 215, size=(10, 3))

    def write(name, n):
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        pixels = np.clip(colours[labels][:, :, None] + rng.normal(0, 40, (n, 3, 1024)), 0, 255).astype(np.uint8)
        records = np.concatenate([labels[:, None], pixels.reshape(n, 3072)], axis=1)
        records.tofile(root / name)

    for i in range(1, 6):
        write(f"data_batch_{i}.bin", 8)
    write("test_batch.bin", 8)
    return root.parent  # a folder containing cifar-10-batches-bin/, like the cache layout
