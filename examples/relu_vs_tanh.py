"""ReLU vs tanh (Krizhevsky et al. 2012, Figure 1): epochs to reach 25% training error on CIFAR-10.

The same small CNN is trained twice from the same initial weights, on the same batches, with
the same SGD settings; only the activation differs. The paper's four-layer network with ReLUs
reached 25% training error six times faster than with tanh. The training error is counted on
each batch as it is trained on (as in the paper's curve), once per epoch.

Network (four weight layers, input (N, 3, 32, 32))::

    conv 5x5, 3 -> C, pad 2 -> act -> maxpool 2     (N, C, 16, 16)
    conv 5x5, C -> 2C, pad 2 -> act -> maxpool 2    (N, 2C, 8, 8)
    linear 2C*64 -> 64 -> act -> linear 64 -> 10

Scaled down for a 2-core CPU (honest numbers in docs/experiments.md): by default C = 8, 300
training images of the local CIFAR-10 subset, SGD with lr 0.03 and momentum 0.9, batch 25, at most
20 epochs per activation, and a run stops once it has reached the target (``--full`` keeps going
so both curves have every epoch). On so few images "25% training error" measures how fast the net
fits its training set, which is what Figure 1 is about. Runtime on this machine's shared CPU
(``nice -n 10``, heavily loaded): 10 minutes per initialisation.

At this scale we do not reproduce the paper (docs/experiments.md has the runs): with the layers'
default init (PyTorch's Kaiming uniform with a=sqrt(5)), with ``--init kaiming`` (He et al.'s init
for ReLU nets) and at learning rates 0.01, 0.03 and 0.1, the ReLU net sits on a plateau for its
first epochs and the tanh net reaches 25% first.

    python examples/relu_vs_tanh.py
    python examples/relu_vs_tanh.py --limit-train 50000 --width 32 --max-epochs 40 --full   # closer to the paper
    python examples/relu_vs_tanh.py --smoke

The run on all 5,000 images of the subset, each activation at its best learning rate and over
several seeds, with the unit statistics that explain the outcome: ``relu_vs_tanh_sweep.py``.

Writes ``<out>/relu_vs_tanh.png`` (matplotlib, the ``plot`` extra) and ``<out>/results.md`` / ``.json``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tinygrad_cnn  # noqa: E402
from tinygrad_cnn import nn, optim  # noqa: E402

import _experiment_utils as ex  # noqa: E402

ACTIVATIONS = ("relu", "tanh")


def build_parser():
    p = ex.base_parser(__doc__.splitlines()[0], "runs/relu_vs_tanh")
    p.add_argument("--limit-train", type=ex.positive_int, default=300)
    p.add_argument("--width", type=ex.positive_int, default=8, help="channels C of the first conv layer")
    p.add_argument("--max-epochs", type=ex.positive_int, default=20)
    p.add_argument("--target", type=float, default=0.25, help="training error to reach")
    p.add_argument("--batch-size", type=ex.positive_int, default=25)
    p.add_argument("--lr", type=ex.positive_float, default=0.03)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--full", action="store_true", help="train every network for --max-epochs")
    p.add_argument("--init", choices=("default", "kaiming"), default="default",
                   help="the shared initial weights: the layers' default (PyTorch's Kaiming uniform with "
                        "a=sqrt(5)) or He et al.'s Kaiming normal for ReLU (std sqrt(2 / fan_in), zero biases)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.limit_train, args.width, args.max_epochs, args.batch_size = 64, 4, 2, 32
    timer = ex.Timer()
    train, _ = ex.load_cifar(args.data_dir, args.limit_train, 10, args.seed)
    print(f"CIFAR-10: {len(train)} training images; target training error {args.target:.0%}")
    tinygrad_cnn.manual_seed(args.seed)
    reference = ex.small_cnn("relu", args.width)
    if args.init == "kaiming":
        for module in reference.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(module.bias)
    initial = reference.state_dict()   # both nets start from these weights
    curves, reached, rows = {}, {}, []
    for name in ACTIVATIONS:
        model = ex.small_cnn(name, args.width)
        model.load_state_dict(initial)
        opt = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
        batches = ex.loader(train, args.batch_size, args.seed)
        run_timer = ex.Timer()
        errors = []
        for epoch in range(1, args.max_epochs + 1):
            loss, err = ex.train_epoch(model, batches, opt)
            errors.append(err)
            print(f"{name:>5}  epoch {epoch:3d}  train loss {loss:.4f}  train error {err:6.2%}", flush=True)
            if err <= args.target and name not in reached:
                reached[name] = epoch
                if not args.full:
                    break
        curves[name] = errors
        rows.append([name, str(reached.get(name, f"> {args.max_epochs}")), f"{min(errors):.2%}",
                     f"{run_timer.seconds:.0f}"])
    if len(reached) == 2:
        speedup = reached["tanh"] / reached["relu"]
        verdict = f"ReLU reached {args.target:.0%} training error {speedup:.1f}x faster (in epochs) than tanh"
    else:
        verdict = "not every network reached the target within --max-epochs: " + ", ".join(
            f"{k}: {v}" for k, v in reached.items())
    print(verdict)
    ex.plot_curves(Path(args.out) / "relu_vs_tanh.png", [{
        "series": {name: (list(range(1, len(e) + 1)), [100 * v for v in e]) for name, e in curves.items()},
        "styles": {"relu": "-o", "tanh": "--s"}, "hline": 100 * args.target,
        "xlabel": "epoch", "ylabel": "training error (%)",
        "title": f"CNN on {len(train)} CIFAR-10 images (Krizhevsky et al. Fig. 1)"}])
    config = {k: v for k, v in vars(args).items() if k not in ("out", "data_dir")}
    return ex.write_results(args.out, "ReLU vs tanh: epochs to 25% training error",
                            ["activation", f"epochs to {args.target:.0%} train error", "lowest train error",
                             "seconds"], rows, config, timer.seconds, notes=[verdict],
                            extra={"curves": curves, "reached": reached})


if __name__ == "__main__":
    main()
