"""Train a CIFAR-10 ResNet (He et al., "Deep Residual Learning for Image Recognition", 2015, section 4.2).

The defaults are the paper's ResNet-20 recipe: SGD with momentum 0.9, weight decay 1e-4, batch 128,
lr 0.1 divided by 10 at 50% and 75% of training, 164 epochs (164 x 391 batches of the 50,000 training
images = the paper's 64k iterations, with the drops at epochs 82 and 123 = its 32k and 48k),
4-pixel padding + random 32x32 crop + horizontal flip, per-channel mean/std normalisation, option A
(parameter-free) shortcuts.

    # the paper's ResNet-20 on the full CIFAR-10 (downloaded into the cache on first use)
    python examples/train_resnet_cifar.py --download
    # a short one-cycle run on the 5,000-image subset of this checkout's shared data
    python examples/train_resnet_cifar.py --data-dir ../shared/data/cifar-10-partial-bin --no-verify \\
        --epochs 10 --schedule onecycle --out runs/r20_subset
    # continue where an interrupted run stopped (latest checkpoint in --out)
    python examples/train_resnet_cifar.py --out runs/r20_subset --resume
    # the same run on 4 processes (pip install "tinygrad_cnn[distributed]"); see docs/distributed.md
    mpiexec -n 4 python examples/train_resnet_cifar.py --data-dir ../shared/data/cifar-10-partial-bin \
        --no-verify --epochs 10 --schedule onecycle --out runs/r20_subset_4ranks

Every epoch ends with one summary line, one JSON line appended to ``<out>/metrics.jsonl`` and a checkpoint
``<out>/checkpoint.npz`` (model, optimizer, scheduler, RNG and data-loader state; read it with
``tinygrad_cnn.checkpoint.load_checkpoint`` or plain ``numpy.load(..., allow_pickle=False)``). Ctrl-C
finishes the current batch, saves a checkpoint and exits (a second Ctrl-C aborts at once). The run ends
with the test accuracy with and without flip test-time augmentation, ``<out>/model_final.npz`` (the
weights under their state_dict names), ``<out>/summary.json`` and ``<out>/curves.png`` (with matplotlib).

Data-parallel: started by ``mpiexec -n N`` the script joins a process group (MPI on the CPU, NCCL
with ``--device cuda``; ``--dist-backend`` chooses explicitly) and wraps the model in
``DistributedDataParallel``. Each rank trains on ``batch-size / N`` images of every batch, so the batch
size and the learning rate mean what they mean in one process. Rank 0 alone prints and writes the
outputs; a checkpoint resumes with any number of ranks (the epoch's order of samples does not depend on
it).
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

import tinygrad_cnn
from tinygrad_cnn import checkpoint as ckpt
from tinygrad_cnn import distributed as dist
from tinygrad_cnn import nn, optim
from tinygrad_cnn.data import (CIFAR10, DataLoader, DatasetIntegrityError, DatasetNotFoundError, DistributedSampler,
                               Subset, random_split)
from tinygrad_cnn.data import transforms as T

CHECKPOINT_NAME = "checkpoint.npz"
# Settings that define the experiment: a resumed run takes them from its checkpoint.
RECIPE_KEYS = ("depth", "shortcut", "plain", "epochs", "batch_size", "lr", "momentum", "weight_decay",
               "nesterov", "schedule", "optimizer", "label_smoothing", "seed", "val_split", "limit_train",
               "limit_test", "augment", "pct_start", "warmup_epochs")


# ====================================================================== command line

def _depth(text):
    value = int(text)
    if value < 8 or (value - 2) % 6:
        raise argparse.ArgumentTypeError(f"depth must be 6n + 2 with n >= 1 (8, 20, 32, 44, 56, 110, ...), "
                                         f"got {value}")
    return value


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _non_negative_float(text):
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _split_size(text):
    """``--val-split``: a fraction in [0, 1) or a count of images (>= 1)."""
    value = float(text)
    if value < 0 or (value >= 1 and value != int(value)):
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1) or a whole number of images, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Train a CIFAR-10 ResNet/plain net (He et al. 2015) with tinygrad_cnn.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--depth", type=_depth, default=20, help="6n+2 layers: 20, 32, 44, 56, 110 (8 for smoke tests)")
    g.add_argument("--shortcut", choices=("A", "B"), default="A",
                   help="A: zero-padding identity shortcuts; B: 1x1 projections where the shape changes")
    g.add_argument("--plain", action="store_true", help="the plain net of the same depth (no shortcuts)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=_positive_int, default=164,
                   help="164 epochs x 391 batches of 50k images = the paper's 64k iterations "
                        "(use 182 with --val-split 5000: 182 x 352 batches of 45k images)")
    g.add_argument("--batch-size", type=_positive_int, default=128)
    g.add_argument("--lr", type=_non_negative_float, default=0.1, help="initial lr (step) or peak lr (onecycle)")
    g.add_argument("--momentum", type=_non_negative_float, default=0.9)
    g.add_argument("--weight-decay", type=_non_negative_float, default=1e-4)
    g.add_argument("--nesterov", action="store_true", help="Nesterov momentum (SGD)")
    g.add_argument("--schedule", choices=("step", "onecycle", "cosine", "constant"), default="step",
                   help="step: lr/10 at 50%% and 75%% of the epochs (the paper's); onecycle: per-batch 1cycle "
                        "(short runs); cosine: per-epoch cosine annealing to 0; constant")
    g.add_argument("--pct-start", type=float, default=0.3, help="onecycle: fraction of the steps spent warming up")
    g.add_argument("--warmup-epochs", type=int, default=0,
                   help="step/cosine/constant: train the first epochs at lr/10 (the paper did this for "
                        "ResNet-110, about 400 iterations: use 1)")
    g.add_argument("--optimizer", choices=("sgd", "adam", "adamw", "rmsprop"), default="sgd")
    g.add_argument("--label-smoothing", type=_non_negative_float, default=0.0)
    g.add_argument("--no-augment", dest="augment", action="store_false",
                   help="no random crop / flip (normalisation only)")
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", default=None,
                   help="folder with the CIFAR-10 binary batches (or containing cifar-10-batches-bin/ or one "
                        "data folder such as cifar-10-partial-bin/); default: $TINYGRAD_CNN_DATA, else "
                        "~/.cache/tinygrad_cnn")
    g.add_argument("--download", action="store_true", help="fetch the official archive if the data is missing")
    g.add_argument("--no-verify", dest="verify", action="store_false",
                   help="accept a copy that is not the official CIFAR-10 (e.g. a subset); a warning is printed")
    g.add_argument("--val-split", type=_split_size, default=0.0,
                   help="hold out this fraction (< 1) or number of training images for validation "
                        "(the paper used 5000 for its analysis runs)")
    g.add_argument("--limit-train", type=_positive_int, default=None, help="use only the first N training images")
    g.add_argument("--limit-test", type=_positive_int, default=None, help="use only the first N test images")
    g.add_argument("--eval-batch-size", type=_positive_int, default=500)
    g.add_argument("--prefetch", type=int, default=2, help="batches prepared ahead in a background thread")
    g.add_argument("--num-workers", type=int, default=0,
                   help="worker processes preparing training batches (CPU only; 0: the prefetch thread)")
    g = p.add_argument_group("run")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: cuda when CuPy sees a GPU, else cpu")
    g.add_argument("--dist-backend", choices=("auto", "mpi", "nccl", "none"), default="auto",
                   help="data-parallel backend; auto: under an MPI launcher (mpiexec), nccl on cuda and mpi "
                        "on cpu, else none (one process)")
    g.add_argument("--out", default=None, help="output folder (default: runs/cifar_<model>)")
    g.add_argument("--resume", nargs="?", const="latest", default=None, metavar="PATH",
                   help="continue from a checkpoint: PATH, or without PATH the latest one in --out")
    g.add_argument("--seed", type=int, default=0, help="seeds initialisation, data order, augmentation and split")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no per-batch progress bar")
    g.add_argument("--no-plot", dest="plot", action="store_false", help="do not write curves.png")
    return p


def explicit_options(parser, argv):
    """Names of the options given on the command line (as opposed to defaults)."""
    probe = argparse.ArgumentParser(add_help=False)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            kwargs = {"dest": action.dest, "default": argparse.SUPPRESS}
            if action.nargs == 0:
                probe.add_argument(*action.option_strings, action="store_const", const=True, **kwargs)
            else:
                probe.add_argument(*action.option_strings, nargs=action.nargs, **kwargs)
    known, _ = probe.parse_known_args(argv)
    return set(vars(known))


def model_name(config) -> str:
    kind = "plain" if config["plain"] else "resnet"
    suffix = "" if config["plain"] or config["shortcut"] == "A" else "B"
    return f"{kind}{config['depth']}{suffix}"


# ====================================================================== progress and logging

def _format_seconds(seconds):
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """Per-epoch progress bar with loss, accuracy, images/s and ETA.

    Uses tqdm when it is installed, otherwise a one-line bar on stderr (redrawn in place on a terminal,
    a plain line every 30 s when stderr is a file).
    """

    def __init__(self, total, desc, enabled=True, initial=0):
        self.total, self.desc, self.enabled = total, desc, enabled
        self.count = self.start_count = initial
        self.start = time.perf_counter()
        self.images = 0
        self.postfix = ""
        self._last_draw = 0.0
        self._tty = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True)

    def rate(self):
        elapsed = time.perf_counter() - self.start
        return self.images / elapsed if elapsed > 0 else float("nan")

    def update(self, images, loss, acc):
        self.count += 1
        self.images += images
        if not self.enabled:
            return
        rate = self.rate()
        if self._bar is not None:
            self._bar.set_postfix_str(f"loss {loss:.4f} acc {100 * acc:.2f}% {rate:.0f} img/s", refresh=False)
            self._bar.update(1)
            return
        now = time.perf_counter()
        interval = 0.2 if self._tty else 30.0
        if now - self._last_draw < interval and self.count < self.total:
            return
        self._last_draw = now
        done = self.count / self.total if self.total else 1.0
        eta = (self.total - self.count) * (now - self.start) / max(self.count - self.start_count, 1)
        line = (f"{self.desc} [{'#' * int(20 * done):<20}] {self.count}/{self.total} loss {loss:.4f} "
                f"acc {100 * acc:.2f}% {rate:.0f} img/s ETA {_format_seconds(eta)}")
        if self._tty:
            sys.stderr.write("\r" + line.ljust(100))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self):
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        elif self._tty:
            sys.stderr.write("\r" + " " * 100 + "\r")
            sys.stderr.flush()


class StopRequest:
    """Turns the first Ctrl-C (SIGINT) into a flag the loop checks between batches; a second one aborts."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def request(self):
        self.requested = True

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: finishing this batch, then saving a checkpoint (press Ctrl-C again to abort "
              "without saving)", file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


# ====================================================================== data

def resolve_cifar_root(data_dir):
    """``--data-dir`` as CIFAR10's ``root``; a folder with exactly one data subfolder is entered."""
    if data_dir is None:
        return None
    root = Path(data_dir).expanduser()
    if (root / "data_batch_1.bin").is_file() or (root / "cifar-10-batches-bin").is_dir() or not root.is_dir():
        return root
    holders = sorted(d for d in root.iterdir() if d.is_dir() and (d / "test_batch.bin").is_file())
    return holders[0] if len(holders) == 1 else root


def load_cifar(config, runtime):
    """(train, val or None, test) array datasets as the recipe describes."""
    root = resolve_cifar_root(runtime["data_dir"])
    kwargs = dict(download=runtime["download"], verify=runtime["verify"])
    try:
        train = CIFAR10(root, train=True, **kwargs)
        test = CIFAR10(root, train=False, **kwargs)
    except DatasetNotFoundError as exc:
        raise SystemExit(f"error: {exc}\n(use --data-dir PATH for an existing copy or --download to fetch it)")
    except DatasetIntegrityError as exc:
        hint = ("\n(if this copy is a deliberate subset, such as cifar-10-partial-bin, pass --no-verify; "
                "do not report CIFAR-10 benchmark numbers on it)") if runtime["verify"] else ""
        raise SystemExit(f"error: {exc}{hint}")
    if config["limit_train"] is not None:
        train = Subset(train, np.arange(min(config["limit_train"], len(train))))
    if config["limit_test"] is not None:
        test = Subset(test, np.arange(min(config["limit_test"], len(test))))
    val = None
    split = config["val_split"]
    if split:
        n_val = int(round(split * len(train))) if split < 1 else int(split)
        if not 0 < n_val < len(train):
            raise SystemExit(f"error: --val-split {split} leaves {len(train) - n_val} of {len(train)} "
                             f"training images")
        train, val = random_split(train, [len(train) - n_val, n_val], seed=config["seed"])
    return train, val, test


def make_loaders(config, runtime, train, val, test, device, rank=0, world_size=1):
    """Loaders of this rank: its ``batch_size / world_size`` share of each training batch (the ranks'
    b-th batches together are the b-th batch of one shared order) and every ``world_size``-th
    evaluation image."""
    mean, std = T.compute_channel_stats(train.data)  # from the images actually trained on
    normalize = [T.ToFloat(), T.Normalize(mean, std)]
    augment = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if config["augment"] else []
    if config["batch_size"] % world_size:
        raise SystemExit(f"error: --batch-size {config['batch_size']} must be a multiple of the number of "
                         f"ranks ({world_size})")
    sampler = DistributedSampler(train, num_replicas=world_size, rank=rank, shuffle=True, seed=config["seed"])
    workers = runtime.get("num_workers", 0) if device == "cpu" else 0
    train_loader = DataLoader(train, batch_size=config["batch_size"] // world_size, sampler=sampler,
                              seed=config["seed"], transform=T.Compose(augment + normalize), device=device,
                              prefetch=runtime["prefetch"], num_workers=workers, persistent_workers=workers > 0)
    eval_kwargs = dict(batch_size=runtime["eval_batch_size"], shuffle=False, transform=T.Compose(normalize),
                       device=device, prefetch=runtime["prefetch"], seed=0)

    def shard(dataset):
        return dataset if world_size == 1 else Subset(dataset, np.arange(rank, len(dataset), world_size))

    val_loader = DataLoader(shard(val), **eval_kwargs) if val is not None else None
    return train_loader, val_loader, DataLoader(shard(test), **eval_kwargs), (mean, std)


# ====================================================================== model, optimizer, schedule

def build_model(config):
    from tinygrad_cnn import models
    return models.cifar_resnet(config["depth"], num_classes=10, shortcut=config["shortcut"],
                               plain=config["plain"])


def build_optimizer(config, params):
    name = config["optimizer"]
    lr, wd = config["lr"], config["weight_decay"]
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=config["momentum"], weight_decay=wd, nesterov=config["nesterov"])
    if name == "adam":
        return optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return optim.AdamW(params, lr=lr, weight_decay=wd)
    return optim.RMSprop(params, lr=lr, momentum=config["momentum"], weight_decay=wd)


def step_milestones(epochs):
    """Epochs after which the lr drops by 10: 50% and 75% of the run (82 and 123 of 164)."""
    return sorted({max(1, int(round(0.5 * epochs))), max(1, int(round(0.75 * epochs)))})


class EpochFactor:
    """lr factor of epoch ``e``: 0.1 during the warm-up epochs, then 0.1 ** (milestones passed) for the
    step schedule, or the cosine factor. A callable object (not a lambda), so LambdaLR saves its state."""

    def __init__(self, kind, epochs, warmup, milestones=()):
        self.kind, self.epochs, self.warmup, self.milestones = kind, int(epochs), int(warmup), list(milestones)

    def __call__(self, epoch):
        if epoch < self.warmup:
            return 0.1
        if self.kind == "step":
            return 0.1 ** sum(epoch >= m for m in self.milestones)
        if self.kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(epoch, self.epochs) / self.epochs))
        return 1.0


def build_scheduler(config, optimizer, steps_per_epoch):
    """(scheduler, steps per batch?) for ``--schedule``."""
    from tinygrad_cnn.optim import lr_scheduler as S
    schedule, epochs, warmup = config["schedule"], config["epochs"], config.get("warmup_epochs", 0)
    if schedule == "onecycle":
        cycle_momentum = config["optimizer"] != "rmsprop" and (config["optimizer"] != "sgd" or config["momentum"] > 0)
        return S.OneCycleLR(optimizer, max_lr=config["lr"], epochs=epochs, steps_per_epoch=steps_per_epoch,
                            pct_start=float(config["pct_start"]), cycle_momentum=cycle_momentum), True
    if schedule == "step" and not warmup:
        return S.MultiStepLR(optimizer, milestones=step_milestones(epochs), gamma=0.1), False
    if schedule == "cosine" and not warmup:
        return S.CosineAnnealingLR(optimizer, T_max=epochs), False
    return S.LambdaLR(optimizer, EpochFactor(schedule, epochs, warmup, step_milestones(epochs))), False


def build_criterion(config):
    return nn.CrossEntropyLoss(label_smoothing=config["label_smoothing"])


def start_process_group(requested, device):
    """Join the process group that ``--dist-backend`` asks for; returns (rank, world size)."""
    backend = requested
    if backend == "auto":
        backend = ("nccl" if device == "cuda" else "mpi") if dist.launched_with_mpi() else "none"
    if backend == "none":
        return 0, 1
    try:
        dist.init_process_group(backend)
    except ImportError as exc:
        raise SystemExit(f"error: {exc}")
    return dist.get_rank(), dist.get_world_size()


def global_sums(values, op=None):
    """``values`` (floats) summed (or combined with ``op``) over the ranks; unchanged in one process."""
    if not dist.is_initialized():
        return list(values)
    total = tinygrad_cnn.tensor(np.asarray(values, dtype=np.float64), dtype=np.float64)
    dist.all_reduce(total, op=op or dist.ReduceOp.SUM)
    return [float(v) for v in total.numpy()]


def stop_agreed(stop):
    """Whether to stop after this batch: every rank must agree, or one would wait forever in the next
    gradient all-reduce (Ctrl-C reaches the ranks at slightly different times)."""
    if not dist.is_initialized():
        return stop.requested
    agreed = global_sums([float(stop.requested)], op=dist.ReduceOp.MAX)[0] > 0
    if agreed:
        stop.request()
    return agreed


def choose_device(requested):
    if requested == "cpu":
        return "cpu"
    available = tinygrad_cnn.backend.cupy_or_none() is not None
    if requested == "cuda" and not available:
        raise SystemExit("error: --device cuda needs CuPy and an NVIDIA GPU (pip install cupy-cuda12x); "
                         "use --device cpu")
    return "cuda" if available else "cpu"


# ====================================================================== training and evaluation

def _correct(logits, labels):
    xp = tinygrad_cnn.backend.get_array_module(logits.array)
    return int(xp.sum(xp.argmax(logits.array, axis=1) == labels.array))


def train_one_epoch(model, loader, criterion, optimizer, scheduler, per_batch_schedule, stop, progress,
                    partial=None, on_batch_end=None, world_size=1):
    """One pass over ``loader`` (from its current position). Returns the accumulated statistics,
    summed over the ranks.

    ``partial`` continues the sums of an epoch interrupted earlier ({loss_sum, correct, seen, seconds}).
    Stops early, after a complete optimizer step, when ``stop.requested`` becomes true (on any rank).
    """
    model.train()
    totals = {"loss_sum": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
    if partial and (not dist.is_initialized() or dist.get_rank() == 0):  # the saved sums are global: count once
        totals.update({k: partial[k] for k in totals})
    start = time.perf_counter()
    for images, labels in loader:
        logits = model(images)
        loss = criterion(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if per_batch_schedule:
            scheduler.step()
        n = labels.shape[0]
        totals["loss_sum"] += float(loss.item()) * n
        totals["correct"] += _correct(logits, labels)
        totals["seen"] += n
        progress.update(n * world_size, totals["loss_sum"] / totals["seen"], totals["correct"] / totals["seen"])
        if on_batch_end is not None:
            on_batch_end(loader)
        if stop_agreed(stop):
            break
    totals["seconds"] += time.perf_counter() - start
    loss_sum, correct, seen = global_sums([totals["loss_sum"], totals["correct"], totals["seen"]])
    seconds, = global_sums([totals["seconds"]], op=dist.ReduceOp.MAX if dist.is_initialized() else None)
    return {"loss_sum": loss_sum, "correct": int(correct), "seen": int(seen), "seconds": seconds}


def evaluate(model, loader, criterion=None, tta=False):
    """Mean loss and accuracy over ``loader`` in eval mode; with ``tta`` also the flip-TTA accuracy.

    Flip-TTA averages the softmax probabilities of each image and its mirror image. With several ranks,
    each evaluates its shard of the images with the same weights (rank 0's BatchNorm statistics) and
    the sums are combined.
    """
    if loader is None:
        return None
    if isinstance(model, nn.parallel.DistributedDataParallel):
        for buffer in model.module.buffers():
            dist.broadcast(buffer, 0)
        model = model.module   # ranks hold different numbers of batches: no collective per batch
    model.eval()
    loss_sum, correct, correct_tta, seen = 0.0, 0, 0, 0
    with tinygrad_cnn.no_grad():
        for images, labels in loader:
            logits = model(images)
            n = labels.shape[0]
            if criterion is not None:
                loss_sum += float(criterion(logits, labels).item()) * n
            correct += _correct(logits, labels)
            if tta:
                probs = nn.functional.softmax(logits, dim=1) + nn.functional.softmax(model(T.hflip(images)), dim=1)
                correct_tta += _correct(probs, labels)
            seen += n
    loss_sum, correct, correct_tta, seen = global_sums([loss_sum, correct, correct_tta, seen])
    out = {"loss": loss_sum / seen if criterion is not None else None, "acc": correct / seen}
    if tta:
        out["acc_tta"] = correct_tta / seen
    return out


def current_lr(optimizer):
    return float(optimizer.param_groups[0]["lr"])


# ====================================================================== outputs

def write_metrics(path, history):
    """Rewrite ``metrics.jsonl`` from the history (used when resuming, so lines match the checkpoint)."""
    ckpt.atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in history).encode())


def append_metrics(path, record):
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def plot_curves(path, history, title):
    """Loss and accuracy curves into a PNG; returns False (and says so) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"note: matplotlib is not installed, so {path.name} was not written "
              "(pip install matplotlib; the numbers are in metrics.jsonl)", file=sys.stderr)
        return False
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for split in ("train", "val", "test"):
        if history and history[0].get(f"{split}_loss") is not None:
            ax_loss.plot(epochs, [r[f"{split}_loss"] for r in history], label=split)
            ax_acc.plot(epochs, [100 * r[f"{split}_acc"] for r in history], label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title=title)
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title=title)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def summary_line(record, epochs):
    parts = [f"epoch {record['epoch']:>3}/{epochs}",
             f"train loss {record['train_loss']:.4f} acc {100 * record['train_acc']:6.2f}%"]
    if record.get("val_acc") is not None:
        parts.append(f"val loss {record['val_loss']:.4f} acc {100 * record['val_acc']:6.2f}%")
    parts.append(f"test loss {record['test_loss']:.4f} acc {100 * record['test_acc']:6.2f}%")
    parts.append(f"lr {record['lr']:.4g}")
    parts.append(f"{record['seconds']:.1f}s ({record['img_per_s']:.0f} img/s)")
    return " | ".join(parts)


# ====================================================================== the output folder

OUTPUT_FILES = (CHECKPOINT_NAME, ckpt.previous_path(CHECKPOINT_NAME).name, "metrics.jsonl", "summary.json",
                "model_final.npz", "curves.png")
TRAINING_KEYS = ("config", "epoch", "model", "optimizer", "scheduler", "loader")
# Errors of the machine, not of the program: each becomes one line naming the file.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def load_training_checkpoint(path):
    """The state in ``path`` if it is a training checkpoint of this script, else SystemExit."""
    try:
        state = ckpt.load_checkpoint(path)
    except ckpt.CheckpointError as exc:
        raise SystemExit(f"error: --resume: {exc}") from None
    missing = [key for key in TRAINING_KEYS if key not in state]
    if missing:
        raise SystemExit(f"error: --resume: {path} is not a training checkpoint of this script "
                         f"(no {', '.join(missing)}); final weights such as model_final.npz cannot be resumed")
    return state


def find_resume_checkpoint(out):
    """``(path, state)`` of the checkpoint to resume in ``out``: checkpoint.npz, else the previous
    one kept beside it. Other files in the folder are never candidates: only these two hold the
    full training state. SystemExit, saying what is wrong with each, when neither is usable."""
    problems = []
    for path in (out / CHECKPOINT_NAME, ckpt.previous_path(out / CHECKPOINT_NAME)):
        if not path.exists():
            problems.append(f"{path.name} is missing")
            continue
        try:
            return path, load_training_checkpoint(path)
        except SystemExit as exc:
            problems.append(str(exc).removeprefix("error: --resume: "))
    raise SystemExit(f"error: --resume: no usable checkpoint in {out}: " + "; ".join(problems))


def open_output_folder(out):
    """Create ``out``, take its lock (one writer at a time) and delete the temp files an earlier,
    killed run left there. Returns the held :class:`~tinygrad_cnn.checkpoint.RunDirectoryLock`."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = ckpt.RunDirectoryLock(out).acquire()
    except ckpt.RunDirectoryLocked as exc:
        raise SystemExit(f"error: --out: {exc}") from None
    except OSError as exc:
        raise SystemExit(f"error: --out: cannot use {out} as the output folder: "
                         f"{exc.strerror or exc}") from None
    for name in OUTPUT_FILES:
        ckpt.remove_stale_temp_files(out / name)
    return lock


@contextlib.contextmanager
def writing(path, out):
    """Turn a full disk, a file-size limit or a read-only folder while writing ``path`` into one
    line naming the file, and say which checkpoint is still intact (writes are atomic)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        kept = out / CHECKPOINT_NAME
        note = (f"; the last checkpoint {kept} is intact (continue with --resume once there is room)"
                if kept.exists() else "")
        raise SystemExit(f"error: cannot write {path}: {exc.strerror or exc}{note}") from None


# ====================================================================== main

def main(argv=None, *, hooks=None):
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns a summary dict.

    ``hooks`` (for embedding and tests): optional callables ``on_batch_end(loader)``,
    ``on_epoch_end(epoch, record)``, each receiving the run's ``stop`` object as ``hooks["stop"]``
    is set, so a hook can request the same clean stop as Ctrl-C via ``hooks["stop"].request()``.
    """
    hooks = {} if hooks is None else hooks
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    given = explicit_options(parser, argv)
    config = {k: getattr(args, k) for k in RECIPE_KEYS}
    runtime = {k: getattr(args, k) for k in ("data_dir", "download", "verify", "eval_batch_size", "prefetch",
                                             "num_workers")}

    out = Path(args.out) if args.out else Path("runs") / f"cifar_{model_name(config)}"
    device = choose_device(args.device)
    rank, world_size = start_process_group(args.dist_backend, device)
    lead = rank == 0   # rank 0 alone prints and writes
    say = print if lead else (lambda *a, **k: None)
    state = None
    if args.resume is not None:
        if args.resume == "latest":
            resume_path, state = find_resume_checkpoint(out)
        else:
            resume_path = Path(args.resume)
            state = load_training_checkpoint(resume_path)
        saved = state["config"]
        conflicts = [f"--{k.replace('_', '-')} {getattr(args, k)} (checkpoint: {saved[k]})"
                     for k in RECIPE_KEYS if k in given and k in saved and getattr(args, k) != saved[k]]
        if conflicts:
            raise SystemExit("error: --resume continues the checkpoint's recipe; these options differ: "
                             + ", ".join(conflicts))
        config = {k: saved.get(k, config[k]) for k in RECIPE_KEYS}
        if args.out is None and args.resume != "latest":
            out = Path(resume_path).parent
        say(f"resuming from {resume_path} (epoch {state['epoch']} of {config['epochs']} done)")
    lock = open_output_folder(out) if lead else None      # rank 0 alone writes
    try:
        return _train(args, config, runtime, out, state, hooks, device, rank, world_size)
    finally:
        if lock is not None:
            lock.release()


def _train(args, config, runtime, out, state, hooks, device, rank, world_size):
    """The run itself; rank 0 holds the output folder's lock and alone prints and writes."""
    lead = rank == 0
    say = print if lead else (lambda *a, **k: None)
    tinygrad_cnn.manual_seed(config["seed"])
    train, val, test = load_cifar(config, runtime)
    train_loader, val_loader, test_loader, (mean, std) = make_loaders(config, runtime, train, val, test, device,
                                                                      rank, world_size)
    model = build_model(config)
    if device != "cpu":
        model.to(device)
    optimizer = build_optimizer(config, model.parameters())
    scheduler, per_batch = build_scheduler(config, optimizer, len(train_loader))
    criterion = build_criterion(config)
    n_params = sum(int(np.prod(p.shape)) for p in model.parameters())

    history, partial, start_epoch = [], None, 0
    if state is not None:
        ckpt.restore_training_state(state, model=model, optimizer=optimizer, scheduler=scheduler,
                                    loader=train_loader)
        history = list(state.get("metrics") or [])
        partial = state.get("partial")
        start_epoch = int(state["epoch"])
    trained = model   # what the optimizer steps and checkpoints save; ``model`` may wrap it
    if dist.is_initialized():
        model = nn.parallel.DistributedDataParallel(trained)
    metrics_path = out / "metrics.jsonl"
    if lead:
        with writing(metrics_path, out):
            write_metrics(metrics_path, history)

    title = model_name(config)
    ranks = f" | {world_size} ranks x batch {config['batch_size'] // world_size} ({dist.get_backend()})" \
        if dist.is_initialized() else ""
    say(f"{title}: {n_params:,} parameters | train {len(train)} val {len(val) if val else 0} test {len(test)} "
        f"| {config['optimizer']} lr {config['lr']} {config['schedule']} | batch {config['batch_size']} "
        f"| {config['epochs']} epochs | device {device}{ranks} | out {out}")

    def save(epoch_done, partial_totals=None):
        path = out / CHECKPOINT_NAME
        if lead:
            extra = {"config": config, "partial": partial_totals,
                     "normalization": {"mean": np.asarray(mean), "std": np.asarray(std)}}
            with writing(path, out):
                ckpt.save_checkpoint(path, ckpt.training_state(
                    model=trained, optimizer=optimizer, scheduler=scheduler, loader=train_loader,
                    epoch=epoch_done, metrics=history, **extra))
        if dist.is_initialized():
            dist.barrier()   # the checkpoint is complete before any rank goes on (or exits)
        return path

    stop = StopRequest()
    hooks["stop"] = stop
    interrupted = False
    with stop:
        for epoch in range(start_epoch, config["epochs"]):
            lr = partial["lr"] if partial else current_lr(optimizer)  # the lr this epoch started with
            progress = Progress(len(train_loader), f"epoch {epoch + 1}/{config['epochs']}",
                                enabled=args.progress and lead, initial=train_loader.state_dict()["position"])
            try:
                totals = train_one_epoch(model, train_loader, criterion, optimizer, scheduler, per_batch, stop,
                                         progress, partial=partial, on_batch_end=hooks.get("on_batch_end"),
                                         world_size=world_size)
            finally:
                progress.close()
            partial = None
            if stop.requested and train_loader.state_dict()["epoch"] == epoch:  # stopped inside the epoch
                path = save(epoch, partial_totals={**totals, "lr": lr})
                say(f"stopped in epoch {epoch + 1} after {totals['seen']} images; checkpoint {path}; "
                      f"continue with --resume")
                interrupted = True
                break
            if not per_batch:
                scheduler.step()
            val_result = evaluate(model, val_loader, criterion)
            test_result = evaluate(model, test_loader, criterion)
            record = {"epoch": epoch + 1, "lr": lr,
                      "train_loss": totals["loss_sum"] / totals["seen"], "train_acc": totals["correct"] / totals["seen"],
                      "val_loss": val_result["loss"] if val_result else None,
                      "val_acc": val_result["acc"] if val_result else None,
                      "test_loss": test_result["loss"], "test_acc": test_result["acc"],
                      "seconds": totals["seconds"], "img_per_s": totals["seen"] / max(totals["seconds"], 1e-9)}
            history.append(record)
            save(epoch + 1)
            if lead:
                with writing(metrics_path, out):
                    append_metrics(metrics_path, record)
            say(summary_line(record, config["epochs"]), flush=True)
            if hooks.get("on_epoch_end") is not None:
                hooks["on_epoch_end"](epoch + 1, record)
            if stop.requested and epoch + 1 < config["epochs"]:
                say(f"stopped after epoch {epoch + 1}; checkpoint {out / CHECKPOINT_NAME}; continue with --resume")
                interrupted = True
                break

    result = {"out": str(out), "epochs_done": len(history), "history": history, "interrupted": interrupted,
              "model": trained, "parameters": n_params, "rank": rank, "world_size": world_size}
    if interrupted or not (history and history[-1]["epoch"] == config["epochs"]):
        return _finish(result)
    final = evaluate(model, test_loader, criterion, tta=True)
    result.update(test_acc=final["acc"], test_acc_tta=final["acc_tta"], test_loss=final["loss"])
    train_seconds = sum(r["seconds"] for r in history)
    say(f"final test accuracy: {100 * final['acc']:.2f}% | with flip-TTA: {100 * final['acc_tta']:.2f}% "
        f"| {len(test)} test images | training time {_format_seconds(train_seconds)} "
        f"({sum(len(train) for _ in history) / max(train_seconds, 1e-9):.0f} img/s)")
    if lead:
        with writing(out / "model_final.npz", out):
            ckpt.save_checkpoint(out / "model_final.npz", {"model": ckpt.model_state_arrays(trained)},
                                 keep_previous=False)
        summary = {"model": title, "parameters": n_params, "config": config, "device": device,
                   "world_size": world_size, "train_images": len(train), "test_images": len(test),
                   "test_acc": final["acc"], "test_acc_tta": final["acc_tta"], "test_loss": final["loss"],
                   "train_seconds": train_seconds}
        with writing(out / "summary.json", out):
            ckpt.atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
        if args.plot:
            with writing(out / "curves.png", out):
                plot_curves(out / "curves.png", history, title)
    return _finish(result)


def _finish(result):
    """Leave the process group (after every rank is done with the outputs) and hand back ``result``."""
    if dist.is_initialized():
        dist.destroy_process_group()
    return result


if __name__ == "__main__":
    outcome = main()
    sys.exit(130 if outcome["interrupted"] else 0)
