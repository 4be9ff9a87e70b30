"""MNIST from the official gzipped IDX files."""
from __future__ import annotations

import gzip
import warnings
import zlib
from pathlib import Path

import numpy as np

from .base import ArrayDataset
from .download import DatasetIntegrityError, DatasetNotFoundError, default_cache_dir, download_url, file_md5

__all__ = ["MNIST", "read_idx"]

MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]
MNIST_FILES = {
    True: ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", 60000),
    False: ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", 10000),
}
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_CLASSES = [str(i) for i in range(10)]
_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}


def read_idx(path, ndim):
    """Read a (gzipped) IDX file of unsigned bytes with ``ndim`` dimensions (1 labels, 3 images).

    Checks the magic number (0x0801 / 0x0803), that the payload is exactly count * prod(dims) bytes and that
    the gzip stream is complete. Returns a uint8 array of the stored shape.
    Raises ``DatasetIntegrityError`` ("truncated/corrupt") otherwise.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (EOFError, OSError, zlib.error) as exc:
        raise DatasetIntegrityError(f"MNIST: {path} is truncated/corrupt: cannot decompress ({exc})") from exc
    header_bytes = 4 * (1 + ndim)
    if len(raw) < header_bytes:
        raise DatasetIntegrityError(f"MNIST: {path} is truncated/corrupt: only {len(raw)} bytes")
    header = np.frombuffer(raw, dtype=">u4", count=1 + ndim)
    magic, dims = int(header[0]), tuple(int(d) for d in header[1:])
    if magic != _IDX_MAGIC[ndim]:
        raise DatasetIntegrityError(
            f"MNIST: {path} is truncated/corrupt: magic number 0x{magic:08x}, expected 0x{_IDX_MAGIC[ndim]:08x}")
    expected = int(np.prod(dims, dtype=np.int64))
    payload = len(raw) - header_bytes
    if payload != expected:
        raise DatasetIntegrityError(
            f"MNIST: {path} is truncated/corrupt: header says {dims} = {expected} bytes, file holds {payload}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(dims).copy()


class MNIST(ArrayDataset):
    """MNIST handwritten digits from the four official ``*-idx?-ubyte.gz`` files.

    Args:
        root: folder holding the .gz files, or a folder containing ``mnist/`` (or ``MNIST/raw/``);
            ``None`` means ``<cache dir>/mnist`` (cache dir: ``cache_dir``, else ``$TINYGRAD_CNN_DATA``,
            else ``~/.cache/tinygrad_cnn``).
        train: 60,000 training images (True) or the 10,000 test images (False).
        download: fetch missing or failing files from ``base_url`` (default: known mirrors in turn) into
            the folder, checking each file's MD5; verified files already present are not fetched again.
        transform: optional batch transform ``t(x, rng=None)`` on (N, 1, 28, 28) arrays.
        verify: ``True`` checks the MD5 of each .gz file against the official value and refuses anything
            else; ``False`` loads a differing copy with one ``UserWarning``. Magic numbers, sizes and labels
            (0..9) are always checked; a truncated or corrupt file always raises ``DatasetIntegrityError``.

    Attributes: ``data`` uint8 (N, 1, 28, 28); ``targets`` int64 (N,); ``classes``; ``root``.
    """

    def __init__(self, root=None, train=True, download=False, transform=None, verify=True, cache_dir=None,
                 base_url=None, progress=True):
        self.train = bool(train)
        self.verify = bool(verify)
        image_file, label_file, _ = MNIST_FILES[self.train]
        files = (image_file, label_file)
        base = Path(root).expanduser() if root is not None else default_cache_dir(cache_dir) / "mnist"
        candidates = [base, base / "mnist", base / "MNIST" / "raw"]
        folder = next((c for c in candidates if all((c / f).is_file() for f in files)), None)

        def md5_problems(where):
            out = []
            for name in files:
                got = file_md5(where / name)
                if got != MNIST_MD5[name]:
                    out.append(f"{name}: MD5 {got} differs from the official {MNIST_MD5[name]}")
            return out

        problems = md5_problems(folder) if folder is not None else None
        if download and (folder is None or (problems and verify)):
            folder = base
            mirrors = [base_url] if base_url else MNIST_MIRRORS
            for name in files:
                if (folder / name).is_file() and file_md5(folder / name) == MNIST_MD5[name]:
                    continue
                errors = []
                for mirror in mirrors:
                    try:
                        download_url(mirror.rstrip("/") + "/" + name, folder / name, md5=MNIST_MD5[name],
                                     progress=progress)
                        break
                    except (OSError, DatasetIntegrityError) as exc:
                        errors.append(f"{mirror}: {exc}")
                else:
                    raise DatasetNotFoundError(f"MNIST: could not download {name}: " + "; ".join(errors))
            problems = md5_problems(folder)
        if folder is None:
            looked = ", ".join(str(c) for c in candidates)
            raise DatasetNotFoundError(
                f"MNIST: {list(files)} not found; looked in {looked}. Point root= at a folder holding the "
                f".gz files (or one containing mnist/), set TINYGRAD_CNN_DATA to a directory containing "
                f"mnist/, or pass download=True")
        if problems:
            message = f"MNIST: the copy in {folder} is not the official one: " + "; ".join(problems)
            if verify:
                raise DatasetIntegrityError(message + ". Pass verify=False to load it anyway.")
            warnings.warn(message + " (loaded because verify=False)", UserWarning, stacklevel=2)
        images = read_idx(folder / image_file, 3)
        labels = read_idx(folder / label_file, 1)
        if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
            raise DatasetIntegrityError(
                f"MNIST: {folder}: images {images.shape} and labels {labels.shape} do not match (N, 28, 28)/(N,)")
        if labels.size and labels.max() > 9:
            raise DatasetIntegrityError(f"MNIST: {folder / label_file} is corrupt: label {labels.max()} > 9")
        self.root = folder
        super().__init__(images[:, None], labels.astype(np.int64), transform=transform, classes=MNIST_CLASSES)
