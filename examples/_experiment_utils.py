"""Shared pieces of the backprop experiments in this folder.

Data (MNIST and CIFAR-10 found locally, as normalised float32 arrays), a minimal
training loop that reports training error, evaluation, a results table written as
Markdown and JSON, curve plots (matplotlib, the ``plot`` extra) and image grids
written by a tiny PNG encoder of our own, so filter and saliency pictures need
nothing beyond NumPy.
"""
from __future__ import annotations

import argparse
import json
import struct
import sys
import time
import warnings
import zlib
from pathlib import Path

import numpy as np

import tinygrad_cnn
from tinygrad_cnn import Tensor
from tinygrad_cnn.data import CIFAR10, MNIST, ArrayDataset, DataLoader, find_shared_data
from tinygrad_cnn.nn import functional as F

PLOT_HINT = "the plot needs the `plot` extra: pip install matplotlib (or pip install -e .[plot])"


# ----------------------------------------------------------------------------- command line

def base_parser(description, default_out):
    """Options every experiment has: --smoke, --data-dir, --out, --seed."""
    p = argparse.ArgumentParser(description=description,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="a few seconds on a handful of images: checks the script end to end, results mean nothing")
    p.add_argument("--data-dir", default=None,
                   help="folder holding the dataset (default: shared/data beside the checkout, "
                        "$TINYGRAD_CNN_DATA, or the cache)")
    p.add_argument("--out", default=default_out, help="folder for the PNGs and the results table")
    p.add_argument("--seed", type=int, default=0)
    return p


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


# ----------------------------------------------------------------------------- data

def _locate(name, data_dir):
    if data_dir is not None:
        return Path(data_dir).expanduser()
    found = find_shared_data(name)
    if found is None:
        raise SystemExit(f"no local copy of {name} found (looked in $TINYGRAD_CNN_DATA, shared/data beside the "
                         f"checkout and the cache); pass --data-dir")
    return found


def _pick(n_total, limit, rng):
    if limit is None or limit >= n_total:
        return np.arange(n_total)
    return np.sort(rng.choice(n_total, size=limit, replace=False))


def load_mnist(data_dir=None, limit_train=None, limit_test=None, seed=0, normalize=True):
    """MNIST as float32 ``ArrayDataset``s, (N, 1, 28, 28).

    ``normalize=True`` subtracts the training mean and divides by the training std;
    ``False`` keeps pixels in [0, 1] (what FGSM perturbs). Subsets are drawn at random
    (fixed by ``seed``), so every class is represented.
    """
    root = _locate("mnist", data_dir)
    rng = np.random.default_rng(seed)
    train, test = MNIST(root, train=True), MNIST(root, train=False)
    tr = _pick(len(train), limit_train, rng)
    te = _pick(len(test), limit_test, rng)
    x_train = train.data[tr].astype(np.float32) / 255.0
    x_test = test.data[te].astype(np.float32) / 255.0
    if normalize:
        mean, std = float(x_train.mean()), float(x_train.std())
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    return ArrayDataset(x_train, train.targets[tr]), ArrayDataset(x_test, test.targets[te])


def load_cifar(data_dir=None, limit_train=None, limit_test=None, seed=0, image_size=32):
    """CIFAR-10 (the local copy may be a subset: loaded with ``verify=False``) as per-channel
    standardised float32 ``ArrayDataset``s, (N, 3, S, S).

    ``image_size`` 16 (or 8) averages 2x2 (4x4) pixel blocks: a quarter of the compute per image,
    for runs that must fit a small CPU budget.
    """
    if image_size not in (8, 16, 32):
        raise SystemExit(f"image size must be 32, 16 or 8, got {image_size}")
    root = _locate("cifar-10-partial-bin", data_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)     # "not the official copy": expected for the subset
        train, test = CIFAR10(root, train=True, verify=False), CIFAR10(root, train=False, verify=False)
    rng = np.random.default_rng(seed)
    tr = _pick(len(train), limit_train, rng)
    te = _pick(len(test), limit_test, rng)
    x_train = _downsample(train.data[tr].astype(np.float32) / 255.0, 32 // image_size)
    x_test = _downsample(test.data[te].astype(np.float32) / 255.0, 32 // image_size)
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True)
    return (ArrayDataset((x_train - mean) / std, train.targets[tr], classes=train.classes),
            ArrayDataset((x_test - mean) / std, test.targets[te], classes=train.classes))


def _downsample(images, factor):
    """(N, C, H, W) -> (N, C, H/f, W/f), the mean of each f x f block."""
    if factor == 1:
        return images
    n, c, h, w = images.shape
    return images.reshape(n, c, h // factor, factor, w // factor, factor).mean(axis=(3, 5))


# ----------------------------------------------------------------------------- models

def small_cnn(activation="relu", width=16, in_channels=3, image_size=32, kernel_size=5):
    """The small CNN of the experiments: four weight layers, input (N, in_channels, S, S) -> logits (N, 10)::

        conv k x k, in -> C, pad k//2 -> act -> maxpool 2     (N, C, S/2, S/2)
        conv k x k, C -> 2C, pad k//2 -> act -> maxpool 2     (N, 2C, S/4, S/4)
        linear 2C*(S/4)^2 -> 64 -> act -> linear 64 -> 10

    ``activation``: "relu" or "tanh". The first layer is ``model[0]`` (its filters are drawn by
    first_layer_filters.py).
    """
    from tinygrad_cnn import nn
    act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
    pad, side = kernel_size // 2, image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, width, kernel_size, padding=pad), act(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, kernel_size, padding=pad), act(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * side * side, 64), act(), nn.Linear(64, 10))


# ----------------------------------------------------------------------------- training

def train_epoch(model, loader, optimizer, after_backward=None):
    """One pass over ``loader``. Returns (mean loss, training error in [0, 1]).

    The training error is counted on the fly, on each batch as it is trained on (the
    curves of Krizhevsky et al. and He et al. are of this kind). ``after_backward()`` runs
    after every backward, before the update (gradient-flow logging).
    """
    model.train()
    total_loss, wrong, seen = 0.0, 0, 0
    for images, labels in loader:
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        if after_backward is not None:
            after_backward()
        optimizer.step()
        n = labels.shape[0]
        total_loss += loss.item() * n
        wrong += int((logits.array.argmax(1) != labels.array).sum())
        seen += n
    return total_loss / max(seen, 1), wrong / max(seen, 1)


def evaluate(model, dataset, batch_size=500):
    """(mean loss, error in [0, 1]) of ``model`` in eval mode on a whole ``ArrayDataset``."""
    model.eval()
    total_loss, wrong = 0.0, 0
    with tinygrad_cnn.no_grad():
        for start in range(0, len(dataset), batch_size):
            x = Tensor(dataset.data[start:start + batch_size])
            y = Tensor(dataset.targets[start:start + batch_size])
            logits = model(x)
            total_loss += F.cross_entropy(logits, y, reduction="sum").item()
            wrong += int((logits.array.argmax(1) != y.array).sum())
    model.train()
    return total_loss / len(dataset), wrong / len(dataset)


def loader(dataset, batch_size, seed, shuffle=True):
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, seed=seed, prefetch=0)


# ----------------------------------------------------------------------------- results

class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self):
        return time.perf_counter() - self.start


def format_table(header, rows):
    """A Markdown table: header is a list of column names, rows lists of cells."""
    cells = [[str(c) for c in header]] + [[c if isinstance(c, str) else _fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]])


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_results(out, title, header, rows, config, seconds, notes=(), extra=None):
    """Print the results table and write ``results.md`` and ``results.json`` into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = format_table(header, rows)
    command = "python " + " ".join([Path(sys.argv[0]).name] + sys.argv[1:]) if sys.argv and sys.argv[0] else ""
    text = [f"# {title}", "", table, "", f"runtime: {seconds:.0f} s", f"settings: {json.dumps(config)}"]
    text += [f"note: {n}" for n in notes]
    (out / "results.md").write_text("\n".join(text) + "\n")
    record = {"title": title, "header": list(header), "rows": [list(map(_jsonable, r)) for r in rows],
              "config": config, "seconds": seconds, "notes": list(notes), "command": command}
    if extra:
        record.update({k: _jsonable(v) for k, v in extra.items()})
    (out / "results.json").write_text(json.dumps(record, indent=1) + "\n")
    print()
    print(table)
    print(f"runtime {seconds:.0f} s; results in {out}/results.md")
    return record


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


# ----------------------------------------------------------------------------- plots

def have_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_curves(path, panels, title=None):
    """Line plots with matplotlib. ``panels``: list of dicts with ``series`` ({label: (x, y)}),
    ``xlabel``, ``ylabel`` and optional ``logy``/``title``/``hline``. Returns the path, or None
    (with a hint on stderr) when matplotlib is missing."""
    if not have_matplotlib():
        print(f"{Path(path).name} not written: {PLOT_HINT}", file=sys.stderr)
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for label, (x, y) in panel["series"].items():
            style = panel.get("styles", {}).get(label, "-o")
            ax.plot(x, y, style, label=label, markersize=3)
        if panel.get("logy"):
            ax.set_yscale("log")
        if panel.get("hline") is not None:
            ax.axhline(panel["hline"], color="gray", linestyle=":", linewidth=1)
        ax.set_xlabel(panel.get("xlabel", ""))
        ax.set_ylabel(panel.get("ylabel", ""))
        if panel.get("title"):
            ax.set_title(panel["title"], fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


# ----------------------------------------------------------------------------- images

def write_png(path, image):
    """Write an 8-bit grey (H, W) or RGB (H, W, 3) uint8 array as a PNG (zlib + struct only).

    A PNG is the 8-byte signature and chunks (length, type, data, CRC-32); IHDR gives size
    and colour type, IDAT the zlib-compressed scanlines, each prefixed by filter byte 0.
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"write_png: image must be uint8 (H, W) or (H, W, 3), got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    colour_type = 0 if image.ndim == 2 else 2
    rows = image.reshape(height, -1)
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    payload = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9))
               + chunk(b"IEND", b""))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(payload)
    return str(path)


def to_uint8(images, per_image=True, symmetric=False):
    """Scale float images (N, C, H, W) to uint8 for display.

    ``per_image`` stretches each image to the full range on its own (filters);
    ``symmetric`` maps 0 to mid-grey, so positive and negative weights are told apart.
    """
    x = np.asarray(images, dtype=np.float64)
    axes = tuple(range(1, x.ndim)) if per_image else None
    if symmetric:
        scale = np.abs(x).max(axis=axes, keepdims=True) + 1e-12
        x = 0.5 + 0.5 * x / scale
    else:
        low = x.min(axis=axes, keepdims=True)
        high = x.max(axis=axes, keepdims=True)
        x = (x - low) / (high - low + 1e-12)
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def image_grid(images, ncols, zoom=1, pad=1, background=255):
    """Tile uint8 images (N, C, H, W) with C in {1, 3} into one (H', W') or (H', W', 3) array,
    each image enlarged ``zoom`` times (nearest neighbour) and separated by ``pad`` pixels."""
    images = np.asarray(images)
    n, c, h, w = images.shape
    if c not in (1, 3):
        raise ValueError(f"image_grid: images must have 1 or 3 channels, got shape {images.shape}")
    images = images.repeat(zoom, axis=2).repeat(zoom, axis=3)
    h, w = h * zoom, w * zoom
    nrows = -(-n // ncols)
    grid = np.full((c, pad + nrows * (h + pad), pad + ncols * (w + pad)), background, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top:top + h, left:left + w] = images[i]
    return grid[0] if c == 1 else grid.transpose(1, 2, 0)


def stack_rows(grids, gap=4, background=255):
    """Stack 2-D or 3-D uint8 pictures vertically (padded to the widest), ``gap`` pixels apart."""
    grids = [g if g.ndim == 3 else np.repeat(g[:, :, None], 3, axis=2) for g in grids]
    width = max(g.shape[1] for g in grids)
    parts = []
    for g in grids:
        padded = np.full((g.shape[0], width, 3), background, np.uint8)
        padded[:, :g.shape[1]] = g
        parts += [padded, np.full((gap, width, 3), background, np.uint8)]
    return np.concatenate(parts[:-1], axis=0)
