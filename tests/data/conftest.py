"""Fixtures for the data-pipeline tests: shared real data, synthetic dataset files, a local HTTP server."""
import functools
import gzip
import hashlib
import http.server
import io
import struct
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from tinygrad_cnn.data import find_shared_data


def _shared(name):
    path = find_shared_data(name)
    if path is None:
        pytest.skip(f"no local copy of '{name}' (set TINYGRAD_CNN_DATA or put a data directory "
                    f"'shared/data/{name}' beside the checkout)")
    return path


@pytest.fixture(scope="session")
def shared_mnist_dir():
    return _shared("mnist")


@pytest.fixture(scope="session")
def shared_cifar_dir():
    return _shared("cifar-10-partial-bin")


def cifar_records(labels, seed=0):
    """(bytes of binary-version records, images (N, 3, 32, 32) uint8) for the given labels."""
    labels = np.asarray(labels, dtype=np.uint8)
    images = np.random.default_rng(seed).integers(0, 256, (labels.size, 3, 32, 32), dtype=np.uint8)
    records = np.concatenate([labels[:, None], images.reshape(labels.size, -1)], axis=1)
    return records.tobytes(), images


def write_cifar_folder(folder, n=7, seed=0):
    """Write all six batch files with ``n`` records each; returns {file name: (images, labels)}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for k, name in enumerate(names):
        labels = np.random.default_rng(seed + k).integers(0, 10, n).astype(np.uint8)
        raw, images = cifar_records(labels, seed=seed + 100 + k)
        (folder / name).write_bytes(raw)
        out[name] = (images, labels)
    return out


def idx_bytes(array, gz=True):
    """IDX encoding of a uint8 array (1-D labels or 3-D images)."""
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x801 if array.ndim == 1 else 0x803
    raw = struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.tobytes()
    return gzip.compress(raw) if gz else raw


def md5_bytes(data):
    return hashlib.md5(data).hexdigest()


def tar_bytes(entries):
    """A .tar.gz from entries (name, bytes) or (name, tarfile.TarInfo prepared by the caller)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, payload in entries:
            if isinstance(payload, tarfile.TarInfo):
                archive.addfile(payload)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                archive.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def http_server(tmp_path):
    """Serve ``tmp_path/'www'`` on 127.0.0.1; yields (base_url, folder, list of requested paths)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_Handler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, server.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def datagen():
    """Builders of synthetic dataset files (as a namespace, so test modules need no imports from here)."""
    import types
    return types.SimpleNamespace(cifar_records=cifar_records, write_cifar_folder=write_cifar_folder,
                                 idx_bytes=idx_bytes, md5_bytes=md5_bytes, tar_bytes=tar_bytes)
