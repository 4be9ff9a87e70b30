"""Loss landscapes of a ResNet and the plain net of the same depth (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets").

After training, the loss is evaluated on a 2-D slice of weight space through the trained
weights ``theta``::

    f(a, b) = L(theta + a d1 + b d2),    a, b in [-span, span]

with two random Gaussian directions made *filter-normalised*: for every filter (an output
channel of a convolution, a row of a linear layer) the direction's filter is rescaled to the
norm of the network's filter, ``d_ij <- d_ij / |d_ij| * |theta_ij|``, and the directions of the
BatchNorm and bias parameters are zero (as in the paper). Without this, a net whose weights are
large would look flat only because a unit step is small compared with its weights; with it, the
two nets' slices are comparable. BatchNorm uses the running statistics of the trained net (``--bn batch``: each evaluation
batch's own statistics).

Li et al. found that skip connections keep the landscape of a deep net smooth and convex-looking
around the minimum, while the plain net of the same depth is chaotic and sharp; at 20 layers the
difference is mild, at 56 it is dramatic. Sharpness is reported in numbers: the mean and the
largest rise of the loss over the grid points within distance span/2 (and span) of the centre, and
the curvature along each direction from central differences, ``(f(h, 0) + f(-h, 0) - 2 f(0, 0)) / h^2``.

Default run (sized for a 2-core CPU shared with other jobs; runtime in docs/experiments.md):
ResNet-20 and plain-20 at half the paper's width (stages of 8, 16, 32 channels), 2,000 CIFAR-10
training images averaged down to 16x16, 8 epochs of SGD (lr 0.05, momentum 0.9, weight decay
5e-4, batch 50); the surface on a 13 x 13 grid over [-1, 1]^2 on 500 of the training images.

    python examples/loss_landscape.py
    python examples/loss_landscape.py --depths 20 56                      # also ResNet-56 vs plain-56
    python examples/loss_landscape.py --width 16 --image-size 32 --limit-train 5000 --epochs 30
    python examples/loss_landscape.py --smoke

Writes ``<out>/loss_contours.png`` and ``<out>/loss_surfaces.png`` (matplotlib, the ``plot``
extra), ``<out>/surfaces.npz`` (the grids) and ``<out>/results.md`` / ``results.json``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tinygrad_cnn  # noqa: E402
from tinygrad_cnn import Tensor, models, optim  # noqa: E402
from tinygrad_cnn.nn import functional as F  # noqa: E402

import _experiment_utils as ex  # noqa: E402


def build_parser():
    p = ex.base_parser(__doc__.splitlines()[0], "runs/loss_landscape")
    p.add_argument("--depths", type=int, nargs="+", default=[20], help="6n + 2 each")
    p.add_argument("--width", type=ex.positive_int, default=8, help="channels of the first stage (paper: 16)")
    p.add_argument("--image-size", type=int, choices=(32, 16), default=16)
    p.add_argument("--limit-train", type=ex.positive_int, default=2000)
    p.add_argument("--limit-eval", type=ex.positive_int, default=500, help="training images the surface is measured on")
    p.add_argument("--epochs", type=ex.positive_int, default=8)
    p.add_argument("--batch-size", type=ex.positive_int, default=50)
    p.add_argument("--lr", type=ex.positive_float, default=0.05)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--grid", type=ex.positive_int, default=13, help="points per axis (odd: the centre is on it)")
    p.add_argument("--span", type=ex.positive_float, default=1.0)
    p.add_argument("--bn", choices=("running", "batch", "both"), default="running",
                   help="BatchNorm while measuring the surface: the trained running statistics, or the "
                        "statistics of each evaluation batch (then BN makes the loss invariant to the scale "
                        "of the filter before it, which filter normalisation assumes), or both surfaces")
    return p


def filter_normalised_direction(model, rng):
    """{name: direction array}: Gaussian, each filter rescaled to the norm of the model's filter;
    zero for 1-D parameters (BatchNorm scales and shifts, biases)."""
    direction = {}
    for name, param in model.named_parameters():
        weights = param.array
        if weights.ndim <= 1:
            direction[name] = np.zeros_like(weights)
            continue
        d = rng.standard_normal(weights.shape).astype(weights.dtype)
        axes = tuple(range(1, weights.ndim))
        d_norm = np.sqrt((d ** 2).sum(axis=axes, keepdims=True))
        w_norm = np.sqrt((weights ** 2).sum(axis=axes, keepdims=True))
        direction[name] = d * (w_norm / (d_norm + 1e-10))
    return direction


def mean_loss(model, images, labels, batch_size=250, bn="running"):
    """Mean cross-entropy; ``bn="batch"`` normalises with each batch's statistics (train mode)
    and puts the running statistics back afterwards."""
    saved = [(b, b.array.copy()) for _, b in model.named_buffers()] if bn == "batch" else []
    model.train(bn == "batch")
    total = 0.0
    try:
        with tinygrad_cnn.no_grad():
            for start in range(0, len(images), batch_size):
                logits = model(Tensor(images[start:start + batch_size]))
                total += F.cross_entropy(logits, Tensor(labels[start:start + batch_size]), reduction="sum").item()
    finally:
        for buffer, value in saved:
            buffer.array[...] = value
        model.eval()
    return total / len(images)


def loss_surface(model, images, labels, d1, d2, coords, bn="running"):
    """f[i, j] = loss at theta + coords[i] d1 + coords[j] d2 (rows: a along d1)."""
    params = dict(model.named_parameters())
    base = {name: p.array.copy() for name, p in params.items()}
    surface = np.empty((len(coords), len(coords)))
    try:
        for i, a in enumerate(coords):
            for j, b in enumerate(coords):
                for name, p in params.items():
                    p.array[...] = base[name] + a * d1[name] + b * d2[name]
                surface[i, j] = mean_loss(model, images, labels, bn=bn)
    finally:
        for name, p in params.items():
            p.array[...] = base[name]
    return surface


def sharpness(surface, coords):
    """Numbers that say how sharp the minimum at the centre is."""
    centre = len(coords) // 2
    f0 = surface[centre, centre]
    a, b = np.meshgrid(coords, coords, indexing="ij")
    radius = np.hypot(a, b)
    numbers = {"loss at centre": f0}
    for r in (0.5, 1.0):
        near = (radius <= r * coords[-1] + 1e-9) & (radius > 0)
        numbers[f"mean rise r<={r}"] = float((surface[near] - f0).mean())
        numbers[f"max rise r<={r}"] = float((surface[near] - f0).max())
    h = coords[centre + 1] - coords[centre]
    numbers["curvature d1"] = float((surface[centre + 1, centre] + surface[centre - 1, centre] - 2 * f0) / h ** 2)
    numbers["curvature d2"] = float((surface[centre, centre + 1] + surface[centre, centre - 1] - 2 * f0) / h ** 2)
    return numbers


def plot_surfaces(out, coords, surfaces):
    if not ex.have_matplotlib():
        print(f"loss_contours.png / loss_surfaces.png not written: {ex.PLOT_HINT}", file=sys.stderr)
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    a, b = np.meshgrid(coords, coords, indexing="ij")
    # Panels of the same BatchNorm mode share their levels, so ResNet and plain net compare
    # directly; log-spaced, so the basin gets as many contours as the walls.
    groups = {}
    for name, s in surfaces.items():
        groups.setdefault(name.partition(", ")[2], []).append(s)
    scale = {}
    for key, members in groups.items():
        top = max(float(np.percentile(s, 95)) for s in members)
        scale[key] = (top, np.geomspace(min(float(s.min()) for s in members), top, 20))
    fig, axes = plt.subplots(1, len(surfaces), figsize=(4.2 * len(surfaces), 4), squeeze=False)
    for ax, (name, s) in zip(axes[0], surfaces.items()):
        top, levels = scale[name.partition(", ")[2]]
        contour = ax.contour(a, b, np.minimum(s, top), levels=levels, cmap="viridis")
        ax.clabel(contour, contour.levels[::3], fontsize=6, fmt="%.2f")
        ax.plot([0], [0], "r+")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("d1")
        ax.set_ylabel("d2")
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(Path(out) / "loss_contours.png", dpi=75)
    plt.close(fig)
    fig = plt.figure(figsize=(4.6 * len(surfaces), 4.2))
    for k, (name, s) in enumerate(surfaces.items()):
        top, levels = scale[name.partition(", ")[2]]
        ax = fig.add_subplot(1, len(surfaces), k + 1, projection="3d")
        ax.plot_surface(a, b, np.minimum(s, top), cmap="viridis", linewidth=0, antialiased=True)
        ax.set_zlim(levels[0], top)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("d1")
        ax.set_ylabel("d2")
    fig.tight_layout()
    fig.savefig(Path(out) / "loss_surfaces.png", dpi=75)
    plt.close(fig)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.depths, args.width, args.limit_train, args.limit_eval = [8], 4, 64, 32
        args.epochs, args.batch_size, args.grid = 1, 32, 5
    if args.grid < 3 or args.grid % 2 == 0:
        raise SystemExit(f"--grid must be odd and >= 3 (the centre must be a grid point), got {args.grid}")
    for depth in args.depths:
        if depth < 8 or (depth - 2) % 6:
            raise SystemExit(f"every depth must be 6n + 2 (8, 14, 20, 56, ...), got {depth}")
    timer = ex.Timer()
    train, _ = ex.load_cifar(args.data_dir, args.limit_train, 10, args.seed, args.image_size)
    eval_images, eval_labels = train.data[:args.limit_eval], train.targets[:args.limit_eval]
    coords = np.linspace(-args.span, args.span, args.grid)
    widths = (args.width, 2 * args.width, 4 * args.width)
    surfaces, rows, numbers = {}, [], {}
    for depth in args.depths:
        for plain in (False, True):
            name = f"{'plain' if plain else 'ResNet'}-{depth}"
            tinygrad_cnn.manual_seed(args.seed)
            model = models.cifar_resnet(depth, plain=plain, widths=widths)
            opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
            batches = ex.loader(train, args.batch_size, args.seed)
            run_timer = ex.Timer()
            for epoch in range(1, args.epochs + 1):
                loss, err = ex.train_epoch(model, batches, opt)
                print(f"{name:>9}  epoch {epoch:3d}  train loss {loss:.4f}  train error {err:6.2%}", flush=True)
            train_seconds = run_timer.seconds
            rng = np.random.default_rng(args.seed + 1)
            d1, d2 = filter_normalised_direction(model, rng), filter_normalised_direction(model, rng)
            modes = ("running", "batch") if args.bn == "both" else (args.bn,)
            for mode in modes:
                label = name if len(modes) == 1 else f"{name}, {mode} BN"
                surfaces[label] = loss_surface(model, eval_images, eval_labels, d1, d2, coords, mode)
                numbers[label] = n = sharpness(surfaces[label], coords)
                print(f"{label:>9}  " + "  ".join(f"{k} {v:.4g}" for k, v in n.items()), flush=True)
                rows.append([label, f"{err:.2%}", f"{n['loss at centre']:.3f}", f"{n['mean rise r<=0.5']:.3f}",
                             f"{n['max rise r<=0.5']:.3f}", f"{n['mean rise r<=1.0']:.3f}",
                             f"{n['max rise r<=1.0']:.3f}", f"{n['curvature d1']:.3f}", f"{n['curvature d2']:.3f}",
                             f"{train_seconds:.0f} + {run_timer.seconds - train_seconds:.0f}"])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    np.savez(Path(args.out) / "surfaces.npz", coords=coords,
             **{k.replace("-", "_").replace(", ", "_").replace(" ", "_"): v for k, v in surfaces.items()})
    plot_surfaces(args.out, coords, surfaces)
    config = {k: v for k, v in vars(args).items() if k not in ("out", "data_dir")}
    return ex.write_results(
        args.out, "Loss landscape around the trained weights (filter-normalised directions)",
        ["network", "final train error", "loss at centre", "mean rise r<=0.5", "max rise r<=0.5",
         "mean rise r<=1", "max rise r<=1", "curvature d1", "curvature d2", "seconds (train + surface)"],
        rows, config, timer.seconds,
        notes=[f"{len(train)} training images at {args.image_size}x{args.image_size}, stages {widths}, "
               f"{args.epochs} epochs; surface on {len(eval_images)} training images, {args.grid}x{args.grid} grid "
               f"over [-{args.span}, {args.span}]^2, BatchNorm with {args.bn} statistics"],
        extra={"sharpness": numbers, "surfaces": {k: v.tolist() for k, v in surfaces.items()},
               "coords": coords.tolist()})


if __name__ == "__main__":
    main()
