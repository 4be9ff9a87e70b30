"""Dropout on MNIST (Srivastava et al. 2014): test error of the same network with and without dropout.

The network is the paper's fully connected kind, ``784 - H - H - 10`` with ReLU; the dropout
variant drops inputs with probability 0.2 and hidden units with 0.5 (the paper's values).
Both train with SGD + momentum under the same seed, and the test error is measured on MNIST's
official test images after every epoch. Without dropout the network fits the training set
perfectly and its test error stalls; with dropout the training error stays above zero and
the test error ends lower.

Scaled down for a 2-core CPU (honest numbers in docs/experiments.md): by default 2,000 training
images (of 60,000; few images make overfitting, and so dropout's effect, visible quickly), hidden
width 512 (the paper: 1024-8192), 30 epochs of SGD (lr 0.05, momentum 0.9, batch 100), test error
on 5,000 of the 10,000 test images. Runtime on this machine's shared CPU (``nice -n 10``, under
heavy load from other jobs): 12 minutes for both networks together.

    python examples/dropout_mnist.py                          # the default, scaled-down run
    python examples/dropout_mnist.py --limit-train 60000 --hidden 1024 --epochs 100   # closer to the paper
    python examples/dropout_mnist.py --smoke                  # seconds; checks the script only

Writes ``<out>/dropout_curves.png`` (with matplotlib, the ``plot`` extra) and
``<out>/results.md`` / ``results.json``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tinygrad_cnn  # noqa: E402
from tinygrad_cnn import nn, optim  # noqa: E402

import _experiment_utils as ex  # noqa: E402


def build_parser():
    p = ex.base_parser(__doc__.splitlines()[0], "runs/dropout_mnist")
    p.add_argument("--limit-train", type=ex.positive_int, default=2000)
    p.add_argument("--limit-test", type=ex.positive_int, default=5000)
    p.add_argument("--hidden", type=ex.positive_int, default=512)
    p.add_argument("--epochs", type=ex.positive_int, default=30)
    p.add_argument("--batch-size", type=ex.positive_int, default=100)
    p.add_argument("--lr", type=ex.positive_float, default=0.05)
    p.add_argument("--p-input", type=float, default=0.2)
    p.add_argument("--p-hidden", type=float, default=0.5)
    return p


def build_mlp(hidden, p_input=0.0, p_hidden=0.0):
    """(N, 1, 28, 28) -> logits (N, 10): flatten, [dropout], two hidden ReLU layers with [dropout]."""
    layers = [nn.Flatten()]
    if p_input:
        layers.append(nn.Dropout(p_input))
    layers += [nn.Linear(784, hidden), nn.ReLU()]
    if p_hidden:
        layers.append(nn.Dropout(p_hidden))
    layers += [nn.Linear(hidden, hidden), nn.ReLU()]
    if p_hidden:
        layers.append(nn.Dropout(p_hidden))
    layers.append(nn.Linear(hidden, 10))
    return nn.Sequential(*layers)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.limit_train, args.limit_test, args.hidden, args.epochs = 300, 200, 32, 2
    timer = ex.Timer()
    train, test = ex.load_mnist(args.data_dir, args.limit_train, args.limit_test, args.seed)
    print(f"MNIST: {len(train)} training and {len(test)} test images")
    variants = {"no dropout": (0.0, 0.0), f"dropout {args.p_input}/{args.p_hidden}": (args.p_input, args.p_hidden)}
    curves, rows = {}, []
    for label, (p_in, p_hid) in variants.items():
        tinygrad_cnn.manual_seed(args.seed)
        model = build_mlp(args.hidden, p_in, p_hid)
        opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
        batches = ex.loader(train, args.batch_size, args.seed)
        history = []
        for epoch in range(1, args.epochs + 1):
            train_loss, train_err = ex.train_epoch(model, batches, opt)
            _, test_err = ex.evaluate(model, test)
            history.append((epoch, train_err, test_err))
            print(f"{label:>16}  epoch {epoch:3d}  train loss {train_loss:.4f}  train error {train_err:6.2%}  "
                  f"test error {test_err:6.2%}", flush=True)
        curves[label] = history
        best = min(h[2] for h in history)
        rows.append([label, f"{history[-1][1]:.2%}", f"{history[-1][2]:.2%}", f"{best:.2%}"])
    ex.plot_curves(Path(args.out) / "dropout_curves.png", [
        {"series": {f"{k} (train)": ([h[0] for h in v], [100 * h[1] for h in v]) for k, v in curves.items()},
         "xlabel": "epoch", "ylabel": "training error (%)", "title": "training error"},
        {"series": {f"{k} (test)": ([h[0] for h in v], [100 * h[2] for h in v]) for k, v in curves.items()},
         "xlabel": "epoch", "ylabel": "test error (%)", "title": "test error"},
    ], title=f"MLP 784-{args.hidden}-{args.hidden}-10 on {len(train)} MNIST images")
    config = {k: v for k, v in vars(args).items() if k not in ("out", "data_dir")}
    return ex.write_results(args.out, "Dropout on MNIST", ["network", "final train error", "final test error",
                                                           "best test error"], rows, config, timer.seconds,
                            notes=[f"MLP 784-{args.hidden}-{args.hidden}-10, {len(train)} training images, "
                                   f"{len(test)} test images, {args.epochs} epochs"],
                            extra={"curves": curves})


if __name__ == "__main__":
    main()
