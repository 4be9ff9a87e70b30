import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tinygrad_cnn.data import (CIFAR10, MNIST, DatasetIntegrityError, default_cache_dir, download_url,
                               extract_archive, file_md5, find_shared_data)


def test_download_url_verifies_and_replaces_atomically(http_server, tmp_path, datagen):
    base, www, requests = http_server
    payload = os.urandom(3 * 2**20 + 17)
    (www / "blob.bin").write_bytes(payload)
    dest = tmp_path / "cache" / "blob.bin"
    download_url(f"{base}/blob.bin", dest, md5=datagen.md5_bytes(payload), progress=False)
    assert dest.read_bytes() == payload and requests == ["/blob.bin"]
    assert not dest.with_name("blob.bin.part").exists()
    download_url(f"{base}/blob.bin", dest, md5=datagen.md5_bytes(payload), progress=False)
    assert requests == ["/blob.bin"], "a verified copy must not be downloaded again"


def test_download_url_md5_mismatch_keeps_nothing(http_server, tmp_path, capsys):
    base, www, _ = http_server
    (www / "blob.bin").write_bytes(b"corrupted contents")
    dest = tmp_path / "blob.bin"
    with pytest.raises(DatasetIntegrityError, match="failed MD5 verification: expected 0+, got"):
        download_url(f"{base}/blob.bin", dest, md5="0" * 32)
    assert not dest.exists() and not dest.with_name("blob.bin.part").exists()
    assert "downloading blob.bin" in capsys.readouterr().err  # the fallback progress bar


def test_download_url_missing_file_leaves_nothing(http_server, tmp_path):
    base, _, _ = http_server
    with pytest.raises(OSError):
        download_url(f"{base}/absent.bin", tmp_path / "out" / "x", md5=None, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def _link(name, target, kind=tarfile.SYMTYPE):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return name, info


@pytest.mark.parametrize("entry, message", [
    (("/etc/evil.txt", b"x"), "absolute path"),
    (("cifar-10-batches-bin/../../evil.txt", b"x"), r"contains '\.\.'"),
    (_link("cifar-10-batches-bin/link", "../../outside"), "points outside"),
    (_link("cifar-10-batches-bin/abs", "/etc/passwd"), "absolute path"),
    (_link("cifar-10-batches-bin/hard", "../x", tarfile.LNKTYPE), "contains|outside"),
])
def test_extract_rejects_unsafe_members(tmp_path, datagen, entry, message):
    archive = tmp_path / "bad.tar.gz"
    archive.write_bytes(datagen.tar_bytes([("cifar-10-batches-bin/ok.txt", b"fine"), entry]))
    target = tmp_path / "out"
    with pytest.raises(DatasetIntegrityError, match=message):
        extract_archive(archive, target)
    assert not (target / "cifar-10-batches-bin" / "ok.txt").exists(), "nothing is written before all checks pass"
    assert not (tmp_path / "evil.txt").exists()


def test_extract_truncated_archive_is_an_error(tmp_path, datagen):
    raw = datagen.tar_bytes([("a/b.bin", os.urandom(50000))])
    (tmp_path / "cut.tar.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DatasetIntegrityError, match="truncated or corrupt archive"):
        extract_archive(tmp_path / "cut.tar.gz", tmp_path / "out")


def _cifar_archive(datagen, tmp_path, n=3):
    folder = tmp_path / "src" / "cifar-10-batches-bin"
    written = datagen.write_cifar_folder(folder, n=n)
    entries = [(f"cifar-10-batches-bin/{p.name}", p.read_bytes()) for p in sorted(folder.iterdir())]
    return datagen.tar_bytes(entries), written


def test_cifar_download_extract_and_no_redownload(http_server, tmp_path, datagen):
    base, www, requests = http_server
    raw, written = _cifar_archive(datagen, tmp_path)
    (www / "cifar-10-binary.tar.gz").write_bytes(raw)
    url, md5 = f"{base}/cifar-10-binary.tar.gz", datagen.md5_bytes(raw)
    root = tmp_path / "data"
    with pytest.warns(UserWarning, match="3 records instead"):
        ds = CIFAR10(root, train=False, download=True, url=url, md5=md5, verify=False, progress=False)
    assert requests == ["/cifar-10-binary.tar.gz"]
    assert ds.root == root / "cifar-10-batches-bin"
    np.testing.assert_array_equal(ds.data, written["test_batch.bin"][0])
    assert file_md5(root / "cifar-10-binary.tar.gz") == md5

    with pytest.warns(UserWarning):
        CIFAR10(root, train=True, download=True, url=url, md5=md5, verify=False, progress=False)
    assert len(requests) == 1, "an existing copy must be used without downloading"

    shutil.rmtree(root / "cifar-10-batches-bin")
    with pytest.warns(UserWarning):
        again = CIFAR10(root, train=False, download=True, url=url, md5=md5, verify=False, progress=False)
    assert len(requests) == 1, "a verified tarball must be re-extracted, not downloaded again"
    np.testing.assert_array_equal(again.data, ds.data)


def test_cifar_download_into_cache_dir(http_server, tmp_path, datagen, monkeypatch):
    base, www, _ = http_server
    raw, _ = _cifar_archive(datagen, tmp_path, n=2)
    (www / "mirror.tgz").write_bytes(raw)
    monkeypatch.setenv("TINYGRAD_CNN_DATA", str(tmp_path / "cache"))
    with pytest.warns(UserWarning):
        ds = CIFAR10(None, train=False, download=True, url=f"{base}/mirror.tgz", md5=datagen.md5_bytes(raw),
                     verify=False, progress=False)
    assert ds.root == tmp_path / "cache" / "cifar-10-batches-bin" and len(ds) == 2


def test_cifar_download_corrupt_archive_refused(http_server, tmp_path, datagen):
    base, www, _ = http_server
    raw, _ = _cifar_archive(datagen, tmp_path)
    good_md5 = datagen.md5_bytes(raw)
    corrupted = bytearray(raw)
    corrupted[len(raw) // 2] ^= 0xFF
    (www / "c.tar.gz").write_bytes(bytes(corrupted))
    root = tmp_path / "data"
    with pytest.raises(DatasetIntegrityError, match="failed MD5 verification"):
        CIFAR10(root, download=True, url=f"{base}/c.tar.gz", md5=good_md5, verify=False, progress=False)
    assert not root.exists() or list(root.iterdir()) == []


def test_cifar_download_path_traversal_refused(http_server, tmp_path, datagen):
    base, www, _ = http_server
    raw = datagen.tar_bytes([("cifar-10-batches-bin/../../escaped.bin", b"\0" * 3073)])
    (www / "t.tar.gz").write_bytes(raw)
    root = tmp_path / "data"
    with pytest.raises(DatasetIntegrityError, match="unsafe archive"):
        CIFAR10(root, download=True, url=f"{base}/t.tar.gz", md5=datagen.md5_bytes(raw), progress=False)
    assert not (tmp_path / "escaped.bin").exists() and not (root.parent.parent / "escaped.bin").exists()


def test_cifar_download_replaces_a_copy_that_fails_verification(http_server, tmp_path, datagen):
    base, www, requests = http_server
    raw, written = _cifar_archive(datagen, tmp_path, n=4)
    (www / "c.tar.gz").write_bytes(raw)
    root = tmp_path / "data"
    (root / "cifar-10-batches-bin").mkdir(parents=True)
    (root / "cifar-10-batches-bin" / "test_batch.bin").write_bytes(b"\0" * 100)  # truncated
    with pytest.warns(UserWarning):
        ds = CIFAR10(root, train=False, download=True, url=f"{base}/c.tar.gz", md5=datagen.md5_bytes(raw),
                     verify=False, progress=False)
    assert len(requests) == 1 and len(ds) == 4


def test_mnist_download_from_local_mirror(http_server, tmp_path, shared_mnist_dir):
    base, www, requests = http_server
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(shared_mnist_dir / name, www / name)
    root = tmp_path / "mnist"
    ds = MNIST(root, train=False, download=True, base_url=base + "/", progress=False)
    assert len(ds) == 10000 and sorted(requests) == ["/t10k-images-idx3-ubyte.gz", "/t10k-labels-idx1-ubyte.gz"]
    MNIST(root, train=False, download=True, base_url=base, progress=False)
    assert len(requests) == 2, "verified files must not be downloaded again"


def test_mnist_download_corrupt_file_refused(http_server, tmp_path, shared_mnist_dir):
    base, www, _ = http_server
    raw = bytearray((shared_mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    raw[100] ^= 1
    (www / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(raw))
    shutil.copy(shared_mnist_dir / "t10k-images-idx3-ubyte.gz", www / "t10k-images-idx3-ubyte.gz")
    root = tmp_path / "mnist"
    with pytest.raises(OSError, match="t10k-labels-idx1-ubyte.gz.*failed MD5 verification"):
        MNIST(root, train=False, download=True, base_url=base, progress=False)
    assert not (root / "t10k-labels-idx1-ubyte.gz").exists()
    assert not (root / "t10k-labels-idx1-ubyte.gz.part").exists()


def test_default_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYGRAD_CNN_DATA", raising=False)
    assert default_cache_dir() == Path.home() / ".cache" / "tinygrad_cnn"
    monkeypatch.setenv("TINYGRAD_CNN_DATA", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    assert default_cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_find_shared_data(tmp_path, monkeypatch):
    (tmp_path / "mydata").mkdir()
    monkeypatch.setenv("TINYGRAD_CNN_DATA", str(tmp_path))
    assert find_shared_data("mydata") == tmp_path / "mydata"
    monkeypatch.chdir(tmp_path)
    assert find_shared_data("surely-not-a-dataset-name") is None
    for bad in ("../x", "/abs", ""):
        with pytest.raises(ValueError, match="plain relative folder name"):
            find_shared_data(bad)
