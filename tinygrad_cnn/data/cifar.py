"""CIFAR-10, binary version (``cifar-10-batches-bin``)."""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np

from .base import ArrayDataset
from .download import (DatasetIntegrityError, DatasetNotFoundError, default_cache_dir, download_url,
                       extract_archive, file_md5)

__all__ = ["CIFAR10", "read_cifar_batch", "verify_cifar_batch", "CIFAR10_CLASSES"]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_TGZ_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_FOLDER = "cifar-10-batches-bin"
RECORD_BYTES = 1 + 3 * 32 * 32
OFFICIAL_RECORDS = 10000
TRAIN_FILES = [f"data_batch_{i}.bin" for i in range(1, 6)]
TEST_FILES = ["test_batch.bin"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
# SHA-256 of the 10,000 label bytes of each official batch, in file order.
LABEL_SHA256 = {
    "data_batch_1.bin": "d829dbdf32167c9d7b3687cee66d92d80d46c441308b5aca0d11e8b69e27dac9",
    "data_batch_2.bin": "5d18f7371ed35ea9ade77952fe958b0660a45cd6c8b8a8970030f21612cfd7e3",
    "data_batch_3.bin": "32cf77b0ee2e790b1c4384d2d82e42dc1571b87e67f6da8f444b2725b2973f65",
    "data_batch_4.bin": "d2815e3f8f656272864920fc0edde56b04ec9cf81bf397c0dd3069f4aea51aeb",
    "data_batch_5.bin": "2ddf3ab27d5d04409c94ce7b56849c243129c10de1058ae0bfe14c77e934800c",
    "test_batch.bin": "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5",
}


def read_cifar_batch(path):
    """Read one binary-version batch file.

    Each record is 1 label byte then 3072 pixel bytes (R, G, B planes, each 32x32 row-major). The record
    count is ``file size / 3073``; a size that is zero or not a multiple of 3073 raises
    ``DatasetIntegrityError`` ("truncated/corrupt"), as does a label outside 0..9.
    Returns ``(images, labels)``: images uint8 (N, 3, 32, 32), labels uint8 (N,).
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0 or size % RECORD_BYTES:
        raise DatasetIntegrityError(
            f"CIFAR10: {path} is truncated/corrupt: its size {size} bytes is not a positive multiple of the "
            f"{RECORD_BYTES}-byte record (1 label + 3072 pixels); {size % RECORD_BYTES} trailing bytes")
    records = np.fromfile(path, dtype=np.uint8).reshape(size // RECORD_BYTES, RECORD_BYTES)
    labels = records[:, 0].copy()
    if labels.size and labels.max() > 9:
        bad = int(np.argmax(labels > 9))
        raise DatasetIntegrityError(
            f"CIFAR10: {path} is truncated/corrupt: record {bad} has label {int(labels[bad])} (expected 0..9)")
    images = np.ascontiguousarray(records[:, 1:]).reshape(-1, 3, 32, 32)
    return images, labels


def verify_cifar_batch(name, labels):
    """Check one batch against the official binary version; returns a problem string or None.

    Official means: exactly 10,000 records and the SHA-256 of the label bytes equal to the known value.
    """
    if name not in LABEL_SHA256:
        return f"{name}: not an official CIFAR-10 batch name"
    if labels.shape[0] != OFFICIAL_RECORDS:
        return f"{name}: {labels.shape[0]} records instead of the official {OFFICIAL_RECORDS}"
    digest = hashlib.sha256(np.ascontiguousarray(labels, dtype=np.uint8).tobytes()).hexdigest()
    if digest != LABEL_SHA256[name]:
        return f"{name}: label sequence SHA-256 {digest} differs from the official {LABEL_SHA256[name]}"
    return None


class CIFAR10(ArrayDataset):
    """CIFAR-10 from the official binary version (``cifar-10-binary.tar.gz`` / ``cifar-10-batches-bin``).

    Args:
        root: folder holding the ``*.bin`` batch files, or a folder containing ``cifar-10-batches-bin/``.
            ``None`` means the cache directory (``cache_dir`` argument, else ``$TINYGRAD_CNN_DATA``, else
            ``~/.cache/tinygrad_cnn``).
        train: ``data_batch_1..5.bin`` (True) or ``test_batch.bin`` (False).
        download: when the files are missing or fail verification, fetch ``url`` into ``root`` (or the cache
            directory), check the tarball MD5 (``md5``; the official tarball's by default), extract it
            safely, and load. A tarball already present with the right MD5 is not fetched again, and a copy
            that is already present and accepted is used without touching the network.
        transform: optional batch transform ``t(x, rng=None)`` on (N, 3, 32, 32) arrays (see ``transforms``).
        verify: see "Verification" below.
        url, md5: override the download location and expected tarball MD5 (mirrors, tests).

    Attributes: ``data`` uint8 (N, 3, 32, 32); ``targets`` int64 (N,); ``classes`` (from
    ``batches.meta.txt`` when present, else the 10 standard names); ``root`` (the folder actually read).
    ``dataset[i]`` returns ``(image, label)`` with image uint8 (3, 32, 32), or transformed.

    Verification (what is and is not checked, honestly):
        The official per-file MD5s of the *binary* ``.bin`` files are not known to this package; only the
        MD5 of the official tarball (``c32a1d4a...``) is. So:
        * Always: every file's size must be a positive multiple of 3073 bytes and labels must be 0..9;
          otherwise ``DatasetIntegrityError`` ("truncated/corrupt") is raised, whatever ``verify`` says.
        * ``verify=True`` additionally requires each batch to be official: exactly 10,000 records and the
          SHA-256 of its 10,000 label bytes equal to the known value. This detects subsets, truncated or
          reordered copies and wrong files, but NOT corruption of pixel bytes inside an otherwise complete
          file. Pixel bytes are only covered by the tarball MD5, i.e. when the copy came through
          ``download=True``. Anything else is refused with ``DatasetIntegrityError``.
        * ``verify=False`` loads a non-official copy (e.g. a partial subset) and emits one ``UserWarning``
          listing what differs from the official data.
    """

    def __init__(self, root=None, train=True, download=False, transform=None, verify=True, cache_dir=None,
                 url=CIFAR10_URL, md5=CIFAR10_TGZ_MD5, progress=True):
        self.train = bool(train)
        self.verify = bool(verify)
        files = TRAIN_FILES if self.train else TEST_FILES
        base = Path(root).expanduser() if root is not None else default_cache_dir(cache_dir)
        candidates = [base, base / CIFAR10_FOLDER]
        folder = next((c for c in candidates if all((c / f).is_file() for f in files)), None)

        loaded = None
        if folder is not None:
            try:
                loaded = self._load(folder, files, verify)
            except DatasetIntegrityError:
                if not download:
                    raise
                loaded = None
        if loaded is None:
            if not download:
                looked = ", ".join(str(c) for c in candidates)
                missing = [f for f in files if not any((c / f).is_file() for c in candidates)]
                raise DatasetNotFoundError(
                    f"CIFAR10: batch files {missing} not found; looked in {looked}. Point root= at a folder "
                    f"holding the *.bin files (or one containing {CIFAR10_FOLDER}/), set the environment "
                    f"variable TINYGRAD_CNN_DATA to a directory containing {CIFAR10_FOLDER}/, or pass "
                    f"download=True to fetch {url}")
            archive = base / Path(url.split("?")[0]).name
            if not archive.name.endswith((".tar.gz", ".tgz", ".tar")):
                archive = base / "cifar-10-binary.tar.gz"
            if not (archive.is_file() and md5 is not None and file_md5(archive) == md5):
                try:
                    download_url(url, archive, md5=md5, progress=progress)
                except OSError as exc:   # no network, DNS, refused, timed out (URLError is an OSError)
                    reason = getattr(exc, "reason", None) or exc
                    raise DatasetNotFoundError(
                        f"CIFAR10: could not download {url} ({reason}). Without network access, fetch that "
                        f"archive elsewhere and place it at {archive} (it is checked against MD5 {md5}), or put "
                        f"the extracted {CIFAR10_FOLDER}/ folder in {base}") from None
            extract_archive(archive, base)
            folder = next((c for c in candidates if all((c / f).is_file() for f in files)), None)
            if folder is None:
                raise DatasetIntegrityError(
                    f"CIFAR10: archive {archive} does not contain {files} (directly or under {CIFAR10_FOLDER}/)")
            loaded = self._load(folder, files, verify)
        data, targets, classes = loaded
        self.root = folder
        super().__init__(data, targets, transform=transform, classes=classes)

    @staticmethod
    def _load(folder, files, verify):
        images, labels, problems = [], [], []
        for name in files:
            x, y = read_cifar_batch(folder / name)
            problem = verify_cifar_batch(name, y)
            if problem is not None:
                problems.append(problem)
            images.append(x)
            labels.append(y)
        if problems:
            message = (f"CIFAR10: the copy in {folder} is not the official binary version: "
                       + "; ".join(problems))
            if verify:
                raise DatasetIntegrityError(
                    message + ". Pass verify=False to load it anyway (for example a deliberate subset).")
            warnings.warn(message + " (loaded because verify=False)", UserWarning, stacklevel=3)
        meta = folder / "batches.meta.txt"
        classes = CIFAR10_CLASSES
        if meta.is_file():
            names = [line.strip() for line in meta.read_text().splitlines() if line.strip()]
            if len(names) == 10:
                classes = names
        data = images[0] if len(images) == 1 else np.concatenate(images)
        targets = (labels[0] if len(labels) == 1 else np.concatenate(labels)).astype(np.int64)
        return data, targets, list(classes)
