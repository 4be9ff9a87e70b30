"""Train LeNet-5 (LeCun et al. 1998) on MNIST with tinygrad_cnn.

Default recipe (reaches >= 99.0% on the official 10,000-image test set): LeNet-5 with ReLU and max
pooling, Adam with a one-cycle schedule peaking at lr 3e-3, batch 128, 4 epochs, inputs normalised with the
training set's mean/std, and a random shift of up to 2 pixels (pad 2 + random 28x28 crop). Three epochs
land right at the threshold (98.96% here, 99.03-99.12% for the same recipe in PyTorch), so the default
keeps one more.

    python examples/train_lenet_mnist.py --data-dir ../shared/data/mnist
    python examples/train_lenet_mnist.py --download                   # into $TINYGRAD_CNN_DATA or the cache
    python examples/train_lenet_mnist.py --activation tanh --pooling avg --epochs 15   # closer to 1998

Prints a progress bar per epoch and one summary line per epoch, appends the metrics to
``<out>/metrics.jsonl``, checkpoints every epoch to ``<out>/checkpoint.npz``, and at the end writes
``<out>/model_final.npz`` (weights under their state_dict names), ``<out>/summary.json`` and, with
matplotlib, ``<out>/curves.png``. Ctrl-C stops after the current batch.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

import tinygrad_cnn
from tinygrad_cnn import checkpoint as ckpt
from tinygrad_cnn import nn, optim
from tinygrad_cnn.data import MNIST, DataLoader, DatasetIntegrityError, DatasetNotFoundError, Subset
from tinygrad_cnn.data import transforms as T


def _load_shared_helpers():
    """The progress bar, evaluation and logging helpers of train_resnet_cifar.py (same folder)."""
    path = Path(__file__).resolve().with_name("train_resnet_cifar.py")
    name = "_train_resnet_cifar_helpers"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


common = _load_shared_helpers()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train LeNet-5 on MNIST with tinygrad_cnn.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=common._positive_int, default=4)
    p.add_argument("--batch-size", type=common._positive_int, default=128)
    p.add_argument("--optimizer", choices=("adam", "sgd"), default="adam")
    p.add_argument("--lr", type=common._non_negative_float, default=3e-3,
                   help="peak lr of the one-cycle schedule (or the constant lr with --schedule constant)")
    p.add_argument("--momentum", type=common._non_negative_float, default=0.9, help="SGD momentum")
    p.add_argument("--weight-decay", type=common._non_negative_float, default=0.0)
    p.add_argument("--schedule", choices=("onecycle", "constant"), default="onecycle")
    p.add_argument("--activation", choices=("relu", "tanh"), default="relu")
    p.add_argument("--pooling", choices=("max", "avg"), default="max")
    p.add_argument("--shift", type=int, default=2, help="random translation of up to this many pixels (0: none)")
    p.add_argument("--data-dir", default=None,
                   help="folder with the four MNIST .gz files (or containing mnist/); default: "
                        "$TINYGRAD_CNN_DATA, else ~/.cache/tinygrad_cnn")
    p.add_argument("--download", action="store_true")
    p.add_argument("--limit-train", type=common._positive_int, default=None)
    p.add_argument("--limit-test", type=common._positive_int, default=None)
    p.add_argument("--eval-batch-size", type=common._positive_int, default=1000)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--out", default="runs/lenet5_mnist")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--no-plot", dest="plot", action="store_false")
    return p


def load_mnist(args):
    root = None if args.data_dir is None else Path(args.data_dir).expanduser()
    try:
        train = MNIST(root, train=True, download=args.download)
        test = MNIST(root, train=False, download=args.download)
    except DatasetNotFoundError as exc:
        raise SystemExit(f"error: {exc}\n(use --data-dir PATH for an existing copy or --download to fetch it)")
    except DatasetIntegrityError as exc:
        raise SystemExit(f"error: {exc}")
    if args.limit_train:
        train = Subset(train, np.arange(min(args.limit_train, len(train))))
    if args.limit_test:
        test = Subset(test, np.arange(min(args.limit_test, len(test))))
    return train, test


def main(argv=None):
    """Run the CLI; returns a summary dict (test accuracy, history, seconds)."""
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = common.choose_device(args.device)
    tinygrad_cnn.manual_seed(args.seed)
    train, test = load_mnist(args)
    mean, std = T.compute_channel_stats(train.data)
    normalize = [T.ToFloat(), T.Normalize(mean, std)]
    augment = [T.RandomCrop(28, padding=args.shift)] if args.shift > 0 else []
    train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, seed=args.seed,
                              transform=T.Compose(augment + normalize), device=device)
    test_loader = DataLoader(test, batch_size=args.eval_batch_size, transform=T.Compose(normalize), device=device,
                             seed=0)

    from tinygrad_cnn import models
    model = models.lenet5(activation=args.activation, pooling=args.pooling)
    if device != "cpu":
        model.to(device)
    if args.optimizer == "adam":
        optimizer = optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    else:
        optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    if args.schedule == "onecycle":
        scheduler = optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, epochs=args.epochs,
                                                  steps_per_epoch=len(train_loader),
                                                  cycle_momentum=args.optimizer == "adam" or args.momentum > 0)
    else:
        scheduler = optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
    per_batch = args.schedule == "onecycle"
    criterion = nn.CrossEntropyLoss()
    n_params = sum(int(np.prod(p.shape)) for p in model.parameters())
    print(f"LeNet-5 ({args.activation}, {args.pooling} pooling): {n_params:,} parameters | train {len(train)} "
          f"test {len(test)} | {args.optimizer} lr {args.lr} {args.schedule} | batch {args.batch_size} "
          f"| {args.epochs} epochs | device {device}")

    metrics_path = out / "metrics.jsonl"
    common.write_metrics(metrics_path, [])
    history = []
    stop = common.StopRequest()
    wall_start = time.perf_counter()
    with stop:
        for epoch in range(args.epochs):
            lr = common.current_lr(optimizer)
            progress = common.Progress(len(train_loader), f"epoch {epoch + 1}/{args.epochs}", enabled=args.progress)
            try:
                totals = common.train_one_epoch(model, train_loader, criterion, optimizer, scheduler, per_batch,
                                                stop, progress)
            finally:
                progress.close()
            if not per_batch:
                scheduler.step()
            test_result = common.evaluate(model, test_loader, criterion)
            record = {"epoch": epoch + 1, "lr": lr,
                      "train_loss": totals["loss_sum"] / totals["seen"], "train_acc": totals["correct"] / totals["seen"],
                      "test_loss": test_result["loss"], "test_acc": test_result["acc"],
                      "seconds": totals["seconds"], "img_per_s": totals["seen"] / max(totals["seconds"], 1e-9)}
            history.append(record)
            ckpt.save_checkpoint(out / "checkpoint.npz", ckpt.training_state(
                model=model, optimizer=optimizer, scheduler=scheduler, loader=train_loader, epoch=epoch + 1,
                metrics=history, config=vars(args)))
            common.append_metrics(metrics_path, record)
            print(common.summary_line(record, args.epochs), flush=True)
            if stop.requested:
                print(f"stopped after epoch {epoch + 1} (Ctrl-C); checkpoint {out / 'checkpoint.npz'}")
                break
    wall = time.perf_counter() - wall_start
    final = history[-1]
    print(f"final test accuracy: {100 * final['test_acc']:.2f}% ({len(test)} test images) | "
          f"wall time {common._format_seconds(wall)} ({wall:.0f} s) for {len(history)} epochs")
    ckpt.save_checkpoint(out / "model_final.npz", {"model": ckpt.model_state_arrays(model)}, keep_previous=False)
    summary = {"model": "lenet5", "activation": args.activation, "pooling": args.pooling, "parameters": n_params,
               "config": vars(args), "device": device, "test_acc": final["test_acc"], "wall_seconds": wall,
               "epochs_done": len(history)}
    ckpt.atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    if args.plot:
        common.plot_curves(out / "curves.png", history, "LeNet-5 on MNIST")
    return {"history": history, "test_acc": final["test_acc"], "wall_seconds": wall,
            "interrupted": stop.requested and len(history) < args.epochs, "model": model}


if __name__ == "__main__":
    sys.exit(130 if main()["interrupted"] else 0)
