"""Cache directory, data discovery, verified downloads and safe archive extraction.

Nothing here needs the network unless a download is asked for. Every download is streamed to
``<file>.part`` and only moved into place (``os.replace``) after its MD5 matched, so an interrupted or
corrupted transfer never leaves a file that looks complete.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

__all__ = [
    "DatasetNotFoundError", "DatasetIntegrityError", "default_cache_dir", "find_shared_data",
    "file_md5", "download_url", "extract_archive", "check_archive_members",
]

ENV_DATA_DIR = "TINYGRAD_CNN_DATA"
_CHUNK = 1 << 20


class DatasetNotFoundError(FileNotFoundError):
    """The dataset files are not where the loader looked (and no download was requested)."""


class DatasetIntegrityError(ValueError):
    """A dataset file or archive is truncated, corrupt, or not the expected (official) version."""


def default_cache_dir(cache_dir=None) -> Path:
    """Directory for downloaded datasets.

    Precedence: the ``cache_dir`` argument, then the environment variable ``TINYGRAD_CNN_DATA``, then
    ``~/.cache/tinygrad_cnn``. The directory is not created here.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "tinygrad_cnn"


def _repo_root() -> Path:
    # tinygrad_cnn/data/download.py -> the checkout holding the package
    return Path(__file__).resolve().parents[2]


def find_shared_data(name: str):
    """Locate an existing copy of dataset folder ``name`` without downloading anything.

    Looks, in order, in ``$TINYGRAD_CNN_DATA/<name>``, in a data directory beside the checkout
    (``<checkout>/../shared/data/<name>``, then ``<checkout>/data/<name>``) and likewise relative to the
    current working directory, and finally in the default cache directory. Returns the first existing
    directory as a ``pathlib.Path``, or ``None`` when there is none.
    """
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise ValueError(f"find_shared_data: name must be a plain relative folder name, got {name!r}")
    candidates = []
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        candidates.append(Path(env).expanduser() / name)
    for base in (_repo_root(), Path.cwd()):
        candidates.append(base.parent / "shared" / "data" / name)
        candidates.append(base / "shared" / "data" / name)
        candidates.append(base / "data" / name)
    candidates.append(default_cache_dir() / name)
    for cand in candidates:
        if cand.is_dir():
            return cand
    return None


def file_md5(path, chunk_size: int = _CHUNK) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


class _Progress:
    """tqdm when installed, else a plain one-line bar on stderr."""

    def __init__(self, total, desc, enabled=True):
        self.total, self.desc, self.enabled, self.done = total, desc, enabled, 0
        self._bar = None
        self._last = 0.0
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024)

    def update(self, n):
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last < 0.2 and (self.total is None or self.done < self.total):
            return
        self._last = now
        if self.total:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(30 * frac)
            sys.stderr.write(f"\r{self.desc}: [{bar:<30}] {100 * frac:5.1f}% "
                             f"{self.done / 2**20:.1f}/{self.total / 2**20:.1f} MiB")
        else:
            sys.stderr.write(f"\r{self.desc}: {self.done / 2**20:.1f} MiB")
        sys.stderr.flush()

    def close(self):
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        else:
            sys.stderr.write("\n")
            sys.stderr.flush()


def download_url(url: str, dest, md5: str | None = None, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` and check its MD5.

    An existing ``dest`` whose MD5 already matches is kept and nothing is fetched. The transfer goes to
    ``dest + '.part'``, which is fsynced and moved over ``dest`` atomically only after the checksum matched;
    on a mismatch the partial file is deleted and ``DatasetIntegrityError`` is raised. Returns ``dest``.
    """
    dest = Path(dest)
    if dest.is_file() and md5 is not None and file_md5(dest) == md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.md5()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "tinygrad_cnn"})
        with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
            length = response.headers.get("Content-Length")
            bar = _Progress(int(length) if length else None, f"downloading {dest.name}", progress)
            try:
                for block in iter(lambda: response.read(_CHUNK), b""):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
            finally:
                bar.close()
            out.flush()
            os.fsync(out.fileno())
            if length is not None and bar.done != int(length):
                raise DatasetIntegrityError(
                    f"download of {url} is truncated: got {bar.done} of {length} bytes")
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    got = digest.hexdigest()
    if md5 is not None and got != md5:
        part.unlink(missing_ok=True)
        raise DatasetIntegrityError(
            f"download of {url} failed MD5 verification: expected {md5}, got {got} "
            f"(corrupt transfer or wrong file at that URL); nothing was kept")
    os.replace(part, dest)
    return dest


def check_archive_members(archive: tarfile.TarFile, target) -> list:
    """Validate every member of a tar archive before extracting it into ``target``.

    Rejects absolute names, names containing ``..``, names that would land outside ``target``, links whose
    destination leaves ``target``, and device/FIFO entries. Returns the members in order.
    Raises ``DatasetIntegrityError`` naming the offending member.
    """
    target = Path(target).resolve()
    members = archive.getmembers()
    for member in members:
        name = member.name
        parts = Path(name).parts
        if name.startswith(("/", "\\")) or Path(name).is_absolute() or (len(name) > 1 and name[1] == ":"):
            raise DatasetIntegrityError(f"unsafe archive: member {name!r} has an absolute path")
        if ".." in parts:
            raise DatasetIntegrityError(f"unsafe archive: member {name!r} contains '..'")
        dest = (target / name).resolve()
        if dest != target and target not in dest.parents:
            raise DatasetIntegrityError(f"unsafe archive: member {name!r} would be written outside {target}")
        if member.issym() or member.islnk():
            link = member.linkname
            if Path(link).is_absolute() or link.startswith(("/", "\\")):
                raise DatasetIntegrityError(
                    f"unsafe archive: link {name!r} -> {link!r} points to an absolute path")
            base = dest.parent if member.issym() else target
            link_dest = (base / link).resolve()
            if link_dest != target and target not in link_dest.parents:
                raise DatasetIntegrityError(
                    f"unsafe archive: link {name!r} -> {link!r} points outside {target}")
        elif not (member.isfile() or member.isdir()):
            raise DatasetIntegrityError(f"unsafe archive: member {name!r} is a device or special file")
    return members


def extract_archive(archive_path, target) -> Path:
    """Safely extract a (possibly gzipped) tar archive into ``target`` (see ``check_archive_members``).

    All members are checked before anything is written. Returns ``target``.
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive_path, "r:*") as archive:
            members = check_archive_members(archive, target)
            for member in members:
                if member.isdir():
                    (target / member.name).mkdir(parents=True, exist_ok=True)
                    continue
                if not member.isfile():
                    continue  # links were validated; the datasets never need them
                dest = target / member.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                src = archive.extractfile(member)
                tmp = dest.with_name(dest.name + ".part")
                with open(tmp, "wb") as out:
                    for block in iter(lambda: src.read(_CHUNK), b""):
                        out.write(block)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, dest)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError) and not Path(archive_path).exists():
            raise
        raise DatasetIntegrityError(f"cannot extract {archive_path}: truncated or corrupt archive ({exc})") from exc
    return target
