"""ReLU vs tanh with each activation at its own best learning rate, over several seeds (Krizhevsky et al. 2012, Fig. 1).

The paper: a four-layer convolutional network with ReLUs reaches 25% training error on CIFAR-10
six times faster than the same network with tanh units, "the learning rates for each network
were chosen independently to make training as fast as possible", no regularisation. This script
follows that protocol on the 5,000-image CIFAR-10 subset with the small CNN of relu_vs_tanh.py
(two 5x5 conv layers, two linear layers; SGD with momentum 0.9, no weight decay):

1. for every learning rate in ``--lrs`` and both activations, train from the same initial
   weights (seed ``--seeds[0]``) until the training error of an epoch is at or below
   ``--target`` (counted on the batches as they are trained on, as in the paper's curve);
2. each activation keeps the learning rate that got there in the fewest epochs;
3. the other seeds (new initial weights and batch order, shared by both activations) are run
   at those learning rates, and the ratio ``epochs(tanh) / epochs(ReLU)`` is reported per seed.

Default run (sized for a 2-core CPU shared with other jobs; see docs/experiments.md for the
measured runtime): all 5,000 training images, averaged down to 16x16 (a quarter of the compute;
``--image-size 32`` for the full images), C = 8 filters in the first layer, batch 50, learning
rates 0.03 and 0.1 (0.01 was slower for both in a first run), seeds 0, 1, 2, at most 20 epochs
per run. A network that has not reached the target when it stops counts as ``max-epochs + 1``;
learning rates tie-break on the lowest training error reached. The epochs to the easier
errors of ``--also`` (50%, 40%) are read off the same curves.

    python examples/relu_vs_tanh_sweep.py
    python examples/relu_vs_tanh_sweep.py --init kaiming          # He et al.'s init for both
    python examples/relu_vs_tanh_sweep.py --smoke

Writes ``<out>/relu_vs_tanh_sweep.png`` (matplotlib, the ``plot`` extra) and
``<out>/results.md`` / ``results.json``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tinygrad_cnn  # noqa: E402
from tinygrad_cnn import nn, optim  # noqa: E402

import _experiment_utils as ex  # noqa: E402

ACTIVATIONS = ("relu", "tanh")


def build_parser():
    p = ex.base_parser(__doc__.splitlines()[0], "runs/relu_vs_tanh_sweep")
    p.add_argument("--limit-train", type=ex.positive_int, default=5000)
    p.add_argument("--width", type=ex.positive_int, default=8, help="channels C of the first conv layer")
    p.add_argument("--image-size", type=int, choices=(32, 16), default=16,
                   help="16: CIFAR images averaged down to 16x16 (a quarter of the compute)")
    p.add_argument("--max-epochs", type=ex.positive_int, default=20)
    p.add_argument("--also", type=float, nargs="*", default=[0.5, 0.4],
                   help="easier training errors whose epochs are reported too (read off the same curves)")
    p.add_argument("--target", type=float, default=0.25, help="training error to reach")
    p.add_argument("--batch-size", type=ex.positive_int, default=50)
    p.add_argument("--lrs", type=ex.positive_float, nargs="+", default=[0.03, 0.1])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--init", choices=("default", "kaiming", "normal"), default="default",
                   help="initial weights: the layers' default (PyTorch's), Kaiming normal with zero biases, or "
                        "N(0, 0.01^2) with zero biases (the AlexNet paper's Gaussian)")
    return p


def initial_weights(seed, width, image_size, init):
    tinygrad_cnn.manual_seed(seed)
    reference = ex.small_cnn("relu", width, image_size=image_size)
    for module in reference.modules():
        if init != "default" and isinstance(module, (nn.Conv2d, nn.Linear)):
            if init == "kaiming":
                nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            else:
                nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)
    return reference.state_dict()


def unit_statistics(model, images, activation):
    """Per activation layer, the fraction of units that pass (almost) no gradient on these
    images: tanh with |y| > 0.96 (slope < 0.08, |pre-activation| > 2), ReLU with y = 0;
    and the fraction of tanh units in the near-linear range |y| < 0.46 (|pre-activation| < 0.5)."""
    stats = []
    handles = []

    def record(module, args, output):
        y = output.numpy()
        if activation == "tanh":
            stats.append((float(np.mean(np.abs(y) > 0.96)), float(np.mean(np.abs(y) < 0.46))))
        else:
            stats.append((float(np.mean(y == 0)), float("nan")))

    for module in model.modules():
        if isinstance(module, (nn.ReLU, nn.Tanh)):
            handles.append(module.register_forward_hook(record))
    model.eval()
    with tinygrad_cnn.no_grad():
        model(tinygrad_cnn.Tensor(images))
    model.train()
    for handle in handles:
        handle.remove()
    return stats


def epochs_to_target(activation, weights, train, lr, seed, args):
    """(epochs to reach the target or None, the per-epoch training errors)."""
    model = ex.small_cnn(activation, args.width, image_size=args.image_size)
    model.load_state_dict(weights)
    opt = optim.SGD(model.parameters(), lr=lr, momentum=args.momentum)
    batches = ex.loader(train, args.batch_size, seed)
    errors = []
    probe = train.data[:500]
    print(f"seed {seed}  lr {lr:<6g} {activation:>5}  at init: " + _describe(unit_statistics(model, probe, activation),
                                                                             activation), flush=True)
    for epoch in range(1, args.max_epochs + 1):
        loss, err = ex.train_epoch(model, batches, opt)
        errors.append(err)
        print(f"seed {seed}  lr {lr:<6g} {activation:>5}  epoch {epoch:3d}  loss {loss:.4f}  train error {err:6.2%}",
              flush=True)
        if epoch in (1, args.max_epochs):
            print(f"seed {seed}  lr {lr:<6g} {activation:>5}  after epoch {epoch}: "
                  + _describe(unit_statistics(model, probe, activation), activation), flush=True)
        if not np.isfinite(loss):
            break
        if err <= args.target:
            return epoch, errors
    return None, errors


def _describe(stats, activation):
    if activation == "tanh":
        return "saturated (|y| > 0.96) per layer " + ", ".join(f"{s:.1%}" for s, _ in stats) + \
            "; near-linear (|y| < 0.46) " + ", ".join(f"{n:.1%}" for _, n in stats)
    return "inactive (y = 0) per layer " + ", ".join(f"{s:.1%}" for s, _ in stats)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.limit_train, args.width, args.max_epochs, args.batch_size, args.image_size = 64, 4, 1, 32, 16
        args.lrs, args.seeds = args.lrs[:2], args.seeds[:2]
    timer = ex.Timer()
    train, _ = ex.load_cifar(args.data_dir, args.limit_train, 10, args.seeds[0], args.image_size)
    print(f"CIFAR-10: {len(train)} training images; target training error {args.target:.0%}")
    runs = {}    # (activation, lr, seed) -> (epochs or None, errors)
    first = args.seeds[0]
    weights = initial_weights(first, args.width, args.image_size, args.init)
    for lr in args.lrs:
        for activation in ACTIVATIONS:
            runs[activation, lr, first] = epochs_to_target(activation, weights, train, lr, first, args)
    never = args.max_epochs + 1

    def cost(activation, lr):
        reached, errors = runs[activation, lr, first]
        return (reached if reached is not None else never, min(errors))

    best = {a: min(args.lrs, key=lambda lr, a=a: cost(a, lr)) for a in ACTIVATIONS}
    print("best learning rates:", best)
    for seed in args.seeds[1:]:
        weights = initial_weights(seed, args.width, args.image_size, args.init)
        for activation in ACTIVATIONS:
            runs[activation, best[activation], seed] = epochs_to_target(
                activation, weights, train, best[activation], seed, args)

    def shown(reached):
        return str(reached) if reached is not None else f"> {args.max_epochs}"

    rows = [[a, f"{lr:g}", shown(runs[a, lr, first][0]), f"{min(runs[a, lr, first][1]):.2%}",
             "best" if best[a] == lr else ""] for lr in args.lrs for a in ACTIVATIONS]
    ratios = {}
    for seed in args.seeds:
        relu, tanh = (runs[a, best[a], seed][0] for a in ACTIVATIONS)
        if relu is not None and tanh is not None:
            ratios[seed] = tanh / relu
    per_seed = {seed: {a: runs[a, best[a], seed][0] for a in ACTIVATIONS} for seed in args.seeds}
    if len(ratios) == len(args.seeds):
        values = np.array(list(ratios.values()))
        verdict = (f"epochs(tanh) / epochs(ReLU) at each one's best lr: mean {values.mean():.2f} "
                   f"(per seed: " + ", ".join(f"{s}: {r:.2f}" for s, r in ratios.items()) + ")")
    else:
        verdict = ("not every run reached the target within --max-epochs: "
                   + "; ".join(f"seed {s}: " + ", ".join(f"{a} {shown(e)}" for a, e in v.items())
                               for s, v in per_seed.items()))
    print(verdict)
    series = {}
    for seed in args.seeds:
        for a in ACTIVATIONS:
            errors = runs[a, best[a], seed][1]
            series[f"{a} lr {best[a]:g} seed {seed}"] = (list(range(1, len(errors) + 1)), [100 * e for e in errors])
    sweep = {a: (args.lrs, [cost(a, lr)[0] for lr in args.lrs]) for a in ACTIVATIONS}
    easier = {}
    for level in args.also:
        per = {}
        for seed in args.seeds:
            epochs = {a: next((i + 1 for i, e in enumerate(runs[a, best[a], seed][1]) if e <= level), None)
                      for a in ACTIVATIONS}
            per[seed] = epochs
            rows.append([f"at best lrs, seed {seed}", "", f"to {level:.0%}: relu {shown(epochs['relu'])}, "
                         f"tanh {shown(epochs['tanh'])}", "", ""])
        easier[level] = per
    ex.plot_curves(Path(args.out) / "relu_vs_tanh_sweep.png", [
        {"series": series, "hline": 100 * args.target, "xlabel": "epoch", "ylabel": "training error (%)",
         "styles": {k: ("-o" if k.startswith("relu") else "--s") for k in series},
         "title": f"each activation at its best lr, {len(train)} CIFAR-10 images"},
        {"series": sweep, "xlabel": "learning rate", "ylabel": f"epochs to {args.target:.0%} ({never} = not reached)",
         "title": f"learning-rate sweep (seed {first}, init {args.init})"}])
    config = {k: v for k, v in vars(args).items() if k not in ("out", "data_dir")}
    return ex.write_results(
        args.out, "ReLU vs tanh at each one's best learning rate",
        ["activation", "lr", f"epochs to {args.target:.0%} (seed {first})", "lowest train error", ""], rows,
        config, timer.seconds, notes=[verdict],
        extra={"best_lr": best, "epochs_per_seed": per_seed, "ratios": ratios, "easier_targets": easier,
               "curves": {f"{a}|{lr}|{s}": v[1] for (a, lr, s), v in runs.items()}})


if __name__ == "__main__":
    main()
