"""What the first layer learns: the first-layer filters of a trained CNN drawn as a grid of small images.

Trains the small CNN of these experiments (``_experiment_utils.small_cnn``: two 5x5 conv layers,
two linear layers) and draws its first-layer filters before and after training, one tile per
filter, each enlarged 8x. Colours: each filter is scaled on its own so that 0 is mid-grey, so
a tile shows which colours and which spatial pattern excite (bright) or inhibit (dark) the unit.
Random initial filters are noise; trained ones become smooth blobs, colour-opponent patches and
oriented edges, the kind Krizhevsky et al. (2012, Figure 3) show for ImageNet.

The numbers in the table make "structure" measurable: the spatial smoothness of a filter is the
correlation between horizontally and vertically neighbouring weights (about 0 for noise, towards 1
for smooth patterns), averaged over filters.

Scaled down for a 2-core CPU (honest numbers in docs/experiments.md): by default 16 filters, 1,000
training images of the local CIFAR-10 subset, 5 epochs of SGD (lr 0.02, momentum 0.9). The first
layer starts from N(0, 0.01^2) as in Krizhevsky et al., so after such short training the picture
shows what was learned rather than the initial noise (``--init-std 0`` keeps the framework's
Kaiming-uniform start). Runtime on this machine's shared CPU (``nice -n 10``, heavily loaded): 10 minutes.
``--dataset mnist`` draws grey 5x5 filters learned on digits instead.

    python examples/first_layer_filters.py
    python examples/first_layer_filters.py --limit-train 50000 --epochs 30 --width 64    # sharper filters
    python examples/first_layer_filters.py --smoke

Writes ``<out>/filters_init.png``, ``<out>/filters_trained.png`` (our own PNG writer, no
matplotlib needed) and ``<out>/results.md`` / ``.json``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import tinygrad_cnn  # noqa: E402
from tinygrad_cnn import optim  # noqa: E402

import _experiment_utils as ex  # noqa: E402


def build_parser():
    p = ex.base_parser(__doc__.splitlines()[0], "runs/first_layer_filters")
    p.add_argument("--dataset", choices=("cifar", "mnist"), default="cifar")
    p.add_argument("--width", type=ex.positive_int, default=16, help="number of first-layer filters")
    p.add_argument("--limit-train", type=ex.positive_int, default=1000)
    p.add_argument("--limit-test", type=ex.positive_int, default=500)
    p.add_argument("--epochs", type=ex.positive_int, default=5)
    p.add_argument("--batch-size", type=ex.positive_int, default=25)
    p.add_argument("--lr", type=ex.positive_float, default=0.02)
    p.add_argument("--init-std", type=float, default=0.01,
                   help="first-layer weights start from N(0, std^2), as in Krizhevsky et al.; 0 keeps the "
                        "default (Kaiming uniform), whose noise then dominates the picture after short training")
    p.add_argument("--zoom", type=ex.positive_int, default=8, help="pixels per filter weight in the PNG")
    return p


def smoothness(filters):
    """Mean over filters of the correlation between neighbouring weights (horizontal and vertical).

    filters: (F, C, k, k) -> float in [-1, 1]; ~0 for white noise, near 1 for smooth filters.
    """
    values = []
    for f in np.asarray(filters, dtype=np.float64):
        a = np.concatenate([f[:, :, :-1].ravel(), f[:, :-1, :].ravel()])
        b = np.concatenate([f[:, :, 1:].ravel(), f[:, 1:, :].ravel()])
        a, b = a - a.mean(), b - b.mean()
        values.append(float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-30)))
    return float(np.mean(values))


def filter_grid(filters, zoom):
    """(F, C, k, k) weights -> uint8 picture, one tile per filter, 0 at mid-grey."""
    tiles = ex.to_uint8(filters, per_image=True, symmetric=True)
    ncols = int(np.ceil(np.sqrt(len(tiles))))
    return ex.image_grid(tiles, ncols=ncols, zoom=zoom, pad=2)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.width, args.limit_train, args.limit_test, args.epochs = 8, 64, 64, 1
    timer = ex.Timer()
    if args.dataset == "cifar":
        train, test = ex.load_cifar(args.data_dir, args.limit_train, args.limit_test, args.seed)
    else:
        train, test = ex.load_mnist(args.data_dir, args.limit_train, args.limit_test, args.seed)
    channels, size = train.data.shape[1], train.data.shape[2]
    print(f"{args.dataset}: {len(train)} training and {len(test)} test images, {args.width} first-layer filters")
    tinygrad_cnn.manual_seed(args.seed)
    model = ex.small_cnn("relu", args.width, in_channels=channels, image_size=size)
    first = model[0].weight
    if args.init_std > 0:
        # Small initial filters: what the picture shows after training is then what was learned.
        rng = tinygrad_cnn.random.get_generator()
        first.array[...] = rng.normal(0.0, args.init_std, size=first.shape).astype(first.dtype)
    initial = first.numpy().copy()
    out = Path(args.out)
    ex.write_png(out / "filters_init.png", filter_grid(initial, args.zoom))
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    batches = ex.loader(train, args.batch_size, args.seed)
    start = f"initial (N(0, {args.init_std}^2))" if args.init_std > 0 else "initial (Kaiming uniform)"
    rows = [[start, "-", "-", f"{smoothness(initial):.3f}", f"{np.abs(initial).mean():.4f}"]]
    for epoch in range(1, args.epochs + 1):
        loss, train_err = ex.train_epoch(model, batches, opt)
        _, test_err = ex.evaluate(model, test)
        print(f"epoch {epoch:3d}  loss {loss:.4f}  train error {train_err:6.2%}  test error {test_err:6.2%}  "
              f"smoothness {smoothness(first.numpy()):.3f}", flush=True)
    trained = first.numpy()
    ex.write_png(out / "filters_trained.png", filter_grid(trained, args.zoom))
    rows.append([f"after {args.epochs} epochs", f"{train_err:.2%}", f"{test_err:.2%}",
                 f"{smoothness(trained):.3f}", f"{np.abs(trained).mean():.4f}"])
    config = {k: v for k, v in vars(args).items() if k not in ("out", "data_dir")}
    return ex.write_results(out, f"First-layer filters ({args.dataset})",
                            ["filters", "train error", "test error", "smoothness", "mean abs weight"], rows, config,
                            timer.seconds, notes=[f"{len(train)} training images; pictures: filters_init.png, "
                                                  f"filters_trained.png"])


if __name__ == "__main__":
    main()
