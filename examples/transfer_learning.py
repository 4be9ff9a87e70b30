"""Transfer learning with tinygrad_cnn: pretrain on MNIST digits 0-4, transfer to digits 5-9.

1. Pretrain a small ResNet (He et al.'s CIFAR design with one block per stage, 16/32/64 channels,
   "ResNet-8", 1 input channel) on the digits 0-4.
2. Transfer to the digits 5-9 with only a few labelled images per class, three ways, same budget:

   * linear probe: load the pretrained weights, replace the head (``model.fc = nn.Linear(64, 5)``), freeze
     the backbone (``requires_grad_(False)``, its BatchNorm kept in eval mode) and train only the head;
   * fine-tune: start from the pretrained backbone and a new head, train everything with parameter
     groups: a 10x smaller learning rate for the backbone than for the head;
   * from scratch: the same network, randomly initialised, all at the head's learning rate.

3. Report the test accuracy of each on all digits 5-9 of the official MNIST test set.

    python examples/transfer_learning.py                      # ~3-5 minutes on a 2-core CPU
    python examples/transfer_learning.py --per-class 20       # fewer labels: transfer matters more
    python examples/transfer_learning.py --data-dir ../shared/data/mnist --pretrain-size 30000 --pretrain-epochs 3

Defaults: 6,000 pretraining images (digits 0-4) for 2 epochs, 100 labelled target images per digit
(500 in all) for 15 epochs per method, SGD with momentum 0.9, batch 64. The MNIST files are found in
``--data-dir``, ``$TINYGRAD_CNN_DATA/mnist`` or ``../shared/data/mnist`` beside the checkout.
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default=None, help="folder with the MNIST .gz files")
    p.add_argument("--pretrain-size", type=int, default=6000, help="training images of digits 0-4")
    p.add_argument("--pretrain-epochs", type=int, default=2)
    p.add_argument("--per-class", type=int, default=100, help="labelled training images per digit 5-9")
    p.add_argument("--epochs", type=int, default=15, help="epochs of each transfer method")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05, help="head learning rate (backbone: lr * --backbone-lr-scale)")
    p.add_argument("--backbone-lr-scale", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
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
    model = small_resnet(num_classes=5)
    load_weights(model, weights_file)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def main(argv=None):
    args = build_parser().parse_args(argv)
    tinygrad_cnn.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    root = args.data_dir or find_shared_data("mnist")
    train_set, test_set = MNIST(root, train=True), MNIST(root, train=False)
    source, target = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
    start = time.perf_counter()

    # 1. Pretraining on digits 0-4.
    pre_train = loader(digits(train_set, source, args.pretrain_size, rng), args.batch_size, True, args.seed)
    pre_test = loader(digits(test_set, source), 500, False, args.seed)
    pretrained = small_resnet(num_classes=5)
    sgd = optim.SGD(pretrained.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    train(pretrained, sgd, pre_train, args.pretrain_epochs)
    pre_acc = accuracy(pretrained, pre_test)
    print(f"pretrained on digits 0-4 ({len(pre_train.dataset)} images, {args.pretrain_epochs} epochs): "
          f"test accuracy {pre_acc:.2%}  [{time.perf_counter() - start:.0f} s]")

    # 2. The target task: few labels of digits 5-9, tested on every 5-9 digit of the test set.
    few = balanced(train_set, target, args.per_class, rng)
    target_train = loader(few, args.batch_size, True, args.seed + 1)
    target_test = loader(digits(test_set, target), 500, False, args.seed)
    results = {}

    weights_file = Path(tempfile.mkdtemp()) / "resnet8_digits0-4.npz"
    save_weights(pretrained, weights_file)

    # Linear probe: frozen backbone (no gradients, BatchNorm statistics of the pretraining), new head.
    t0 = time.perf_counter()
    probe = from_pretrained(weights_file, num_classes=5)
    probe.requires_grad_(False)
    probe.fc.requires_grad_(True)
    head_only = optim.SGD(probe.fc.parameters(), lr=args.lr, momentum=0.9)
    frozen = [module for name, module in probe.named_children() if name != "fc"]
    train(probe, head_only, target_train, args.epochs, keep_eval=frozen)
    results["linear probe"] = (accuracy(probe, target_test), time.perf_counter() - t0)

    # Fine-tuning: everything trains, the pretrained backbone with a smaller learning rate.
    t0 = time.perf_counter()
    tuned = from_pretrained(weights_file, num_classes=5)
    backbone = [p for name, p in tuned.named_parameters() if not name.startswith("fc.")]
    groups = [{"params": backbone, "lr": args.lr * args.backbone_lr_scale},
              {"params": list(tuned.fc.parameters()), "lr": args.lr}]
    train(tuned, optim.SGD(groups, lr=args.lr, momentum=0.9), target_train, args.epochs)
    results["fine-tune"] = (accuracy(tuned, target_test), time.perf_counter() - t0)

    # From scratch: same network and budget, no pretraining.
    t0 = time.perf_counter()
    scratch = small_resnet(num_classes=5)
    train(scratch, optim.SGD(scratch.parameters(), lr=args.lr, momentum=0.9), target_train, args.epochs)
    results["from scratch"] = (accuracy(scratch, target_test), time.perf_counter() - t0)

    print(f"transfer to digits 5-9 with {len(few)} labelled images ({args.per_class} per digit), "
          f"{args.epochs} epochs each, tested on {len(target_test.dataset)} images:")
    for name, (acc, seconds) in results.items():
        print(f"  {name:<13} {acc:7.2%}   ({seconds:.0f} s)")
    print(f"total {time.perf_counter() - start:.0f} s")
    return {"pretrain": pre_acc, **{k: v[0] for k, v in results.items()}}


if __name__ == "__main__":
    main()
