"""Transfer learning with tinygrad_cnn: pretrain on MNIST digits 0-4, transfer to digits 5-9.

1. Pretrain a small ResNet (He et al.'s CIFAR design with one block per stage, 16/32/64 channels,
   "ResNet-8", 1 input channel, 74,677 parameters) on the digits 0-4.
2. Transfer to the digits 5-9 with only a few labelled images per class, three ways, same budget:

   * linear probe: load the pretrained weights, replace the head (``model.fc = nn.Linear(64, 5)``), freeze
     the backbone (``requires_grad_(False)``, its BatchNorm kept in eval mode) and train only the head;
   * fine-tune: start from the pretrained backbone and a new head, train everything with parameter
     groups: a 10x smaller learning rate for the backbone than for the head;
   * from scratch: the same network, randomly initialised, all at the head's learning rate.

3. Report the test accuracy of each on 1,000 random test images of the digits 5-9.

    python examples/transfer_learning.py                      # ~9 CPU-minutes; 14 min wall on a busy 2-core box
    python examples/transfer_learning.py --smoke              # tiny subsets: checks that everything runs
    python examples/transfer_learning.py --per-class 5        # fewer labels: transfer matters more
    python examples/transfer_learning.py --pretrain-size 30000 --pretrain-epochs 3 --test-size 0

Defaults: 3,000 pretraining images (digits 0-4) for 2 epochs, 20 labelled target images per digit
(100 in all) for 15 epochs per method, SGD with momentum 0.9, batch 32, 1,000 test images per task
(``--test-size 0``: the whole test set). The MNIST files are found in ``--data-dir``,
``$TINYGRAD_CNN_DATA/mnist`` or ``../shared/data/mnist`` beside the checkout. ``--smoke`` shrinks
everything (300 pretraining images, 10 labels per digit, one epoch each, 500 test images) so the whole
pipeline runs in about 40 s; its accuracies mean nothing.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import tinygrad_cnn
from tinygrad_cnn import nn, optim
from tinygrad_cnn.data import MNIST, ArrayDataset, DataLoader, find_shared_data
from tinygrad_cnn.data import transforms as T
from tinygrad_cnn.models import CifarResNet, load_weights, save_weights
from tinygrad_cnn.nn import functional as F

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
SOURCE_DIGITS, TARGET_DIGITS = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
SMOKE = dict(pretrain_size=300, pretrain_epochs=1, per_class=10, epochs=1, test_size=500)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default=None, help="folder with the MNIST .gz files")
    p.add_argument("--pretrain-size", type=int, default=3000, help="training images of digits 0-4")
    p.add_argument("--pretrain-epochs", type=int, default=2)
    p.add_argument("--per-class", type=int, default=20, help="labelled training images per digit 5-9")
    p.add_argument("--epochs", type=int, default=15, help="epochs of each transfer method")
    p.add_argument("--test-size", type=int, default=1000,
                   help="test images per task (a random subset; 0 = the whole test set)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05, help="head learning rate (backbone: lr * --backbone-lr-scale)")
    p.add_argument("--backbone-lr-scale", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny subsets and one epoch: a quick end-to-end check")
    p.add_argument("--no-verify", action="store_true", help="accept MNIST files whose MD5 is not the official one")
    return p


def digits(dataset, wanted, limit=None, rng=None):
    """The images of the digits ``wanted`` relabelled 0..len(wanted)-1 (a random ``limit`` of them)."""
    index = np.flatnonzero(np.isin(dataset.targets, wanted))
    if limit is not None and limit < index.size:
        index = np.sort(rng.choice(index, size=limit, replace=False))
    relabel = {d: i for i, d in enumerate(wanted)}
    labels = np.array([relabel[int(t)] for t in dataset.targets[index]], dtype=np.int64)
    return ArrayDataset(dataset.data[index], labels)


def balanced(dataset, wanted, per_class, rng):
    """``per_class`` random images of each digit in ``wanted``, relabelled."""
    index = np.concatenate([rng.choice(np.flatnonzero(dataset.targets == d), per_class, replace=False)
                            for d in wanted])
    relabel = {d: i for i, d in enumerate(wanted)}
    labels = np.array([relabel[int(t)] for t in dataset.targets[index]], dtype=np.int64)
    return ArrayDataset(dataset.data[index], labels)


def loader(dataset, batch_size, shuffle, seed):
    preprocess = T.Compose([T.ToFloat(), T.Normalize([MNIST_MEAN], [MNIST_STD])])
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, seed=seed, transform=preprocess)


def train(model, optimizer, data, epochs, keep_eval=()):
    """Plain training loop; ``keep_eval``: submodules that stay in eval mode (a frozen backbone's BatchNorm
    keeps normalising with the pretraining statistics instead of re-estimating them)."""
    for _ in range(epochs):
        model.train()
        for module in keep_eval:
            module.eval()
        for images, labels in data:
            loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model


def accuracy(model, data) -> float:
    model.eval()
    correct = total = 0
    with tinygrad_cnn.no_grad():
        for images, labels in data:
            predicted = model(images).numpy().argmax(axis=1)
            correct += int((predicted == labels.numpy()).sum())
            total += int(labels.shape[0])
    return correct / total


def small_resnet(num_classes):
    """ResNet-8 for 28x28 digits: (N, 1, 28, 28) -> (N, num_classes); its head is ``fc`` (64 -> classes)."""
    return CifarResNet(num_blocks=(1, 1, 1), widths=(16, 32, 64), num_classes=num_classes, in_channels=1)


def from_pretrained(weights_file, num_classes):
    """A fresh ResNet-8 with the pretrained weights loaded and a new, randomly initialised head."""
    model = small_resnet(num_classes=len(SOURCE_DIGITS))
    load_weights(model, weights_file)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def backbone_parameters(model):
    return [p for name, p in model.named_parameters() if not name.startswith("fc.")]


def linear_probe(weights_file, data, epochs, lr):
    """Frozen pretrained backbone (no gradients, BatchNorm in eval mode), new head trained alone."""
    model = from_pretrained(weights_file, num_classes=len(TARGET_DIGITS))
    model.requires_grad_(False)
    model.fc.requires_grad_(True)
    head_only = optim.SGD(model.fc.parameters(), lr=lr, momentum=0.9)
    frozen = [module for name, module in model.named_children() if name != "fc"]
    return train(model, head_only, data, epochs, keep_eval=frozen), head_only


def fine_tune(weights_file, data, epochs, lr, backbone_lr_scale):
    """Everything trains; the pretrained backbone with ``lr * backbone_lr_scale``, the new head with ``lr``."""
    model = from_pretrained(weights_file, num_classes=len(TARGET_DIGITS))
    groups = [{"params": backbone_parameters(model), "lr": lr * backbone_lr_scale},
              {"params": list(model.fc.parameters()), "lr": lr}]
    optimizer = optim.SGD(groups, lr=lr, momentum=0.9)
    return train(model, optimizer, data, epochs), optimizer


def from_scratch(data, epochs, lr):
    """The same network without pretraining, every parameter at ``lr``."""
    model = small_resnet(num_classes=len(TARGET_DIGITS))
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return train(model, optimizer, data, epochs), optimizer


def trainable_count(model) -> int:
    return sum(int(p.array.size) for p in model.parameters() if p.requires_grad)


def main(argv=None, work_dir=None):
    """Run the whole comparison; returns ``{"pretrain": acc, "linear probe": acc, "fine-tune": acc,
    "from scratch": acc, "seconds": total, "models": {name: model}, "weights_file": path}``.

    work_dir: where the pretrained weights are written (default: a temporary folder, removed at the end).
    """
    args = build_parser().parse_args(argv)
    if args.smoke:
        defaults = build_parser().parse_args([])
        for key, value in SMOKE.items():  # only what was not set explicitly on the command line
            if getattr(args, key) == getattr(defaults, key):
                setattr(args, key, value)
    test_size = args.test_size or None
    tinygrad_cnn.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    root = args.data_dir or find_shared_data("mnist")
    train_set = MNIST(root, train=True, verify=not args.no_verify)
    test_set = MNIST(root, train=False, verify=not args.no_verify)
    start = time.perf_counter()

    # 1. Pretraining on digits 0-4.
    pre_train = loader(digits(train_set, SOURCE_DIGITS, args.pretrain_size, rng), args.batch_size, True, args.seed)
    pre_test = loader(digits(test_set, SOURCE_DIGITS, test_size, rng), 500, False, args.seed)
    pretrained = small_resnet(num_classes=len(SOURCE_DIGITS))
    sgd = optim.SGD(pretrained.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    train(pretrained, sgd, pre_train, args.pretrain_epochs)
    pre_acc = accuracy(pretrained, pre_test)
    print(f"pretrained on digits 0-4 ({len(pre_train.dataset)} images, {args.pretrain_epochs} epochs): "
          f"test accuracy {pre_acc:.2%} on {len(pre_test.dataset)} images  [{time.perf_counter() - start:.0f} s]")

    # 2. The target task: few labels of digits 5-9, tested on the 5-9 digits of the test set.
    few = balanced(train_set, TARGET_DIGITS, args.per_class, rng)
    target_train = loader(few, args.batch_size, True, args.seed + 1)
    target_test = loader(digits(test_set, TARGET_DIGITS, test_size, rng), 500, False, args.seed)

    temporary = None
    if work_dir is None:
        temporary = tempfile.TemporaryDirectory()
        work_dir = temporary.name
    weights_file = Path(work_dir) / "resnet8_digits0-4.npz"
    save_weights(pretrained, weights_file)
    methods = {
        "linear probe": lambda: linear_probe(weights_file, target_train, args.epochs, args.lr),
        "fine-tune": lambda: fine_tune(weights_file, target_train, args.epochs, args.lr, args.backbone_lr_scale),
        "from scratch": lambda: from_scratch(target_train, args.epochs, args.lr),
    }
    results, trained = {}, {}
    try:
        for name, run in methods.items():
            t0 = time.perf_counter()
            model, _ = run()
            trained[name] = model
            results[name] = (accuracy(model, target_test), time.perf_counter() - t0, trainable_count(model))
    finally:
        if temporary is not None:
            temporary.cleanup()

    total = time.perf_counter() - start
    print(f"transfer to digits 5-9 with {len(few)} labelled images ({args.per_class} per digit), "
          f"{args.epochs} epochs each, tested on {len(target_test.dataset)} images:")
    for name, (acc, seconds, count) in results.items():
        print(f"  {name:<13} {acc:7.2%}   trainable parameters {count:>6,}   ({seconds:.0f} s)")
    print(f"total {total:.0f} s")
    return {"pretrain": pre_acc, **{k: v[0] for k, v in results.items()}, "seconds": total,
            "models": {"pretrained": pretrained, **trained}, "weights_file": weights_file}


if __name__ == "__main__":
    main()
