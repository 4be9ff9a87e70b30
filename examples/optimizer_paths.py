"""Paths of SGD, momentum, AdaGrad, RMSprop, Adam and AdamW on a 2-D test surface.

Every optimizer starts from the same point and minimises the Rosenbrock valley
``f(x, y) = (1 - x)^2 + 100 (y - x^2)^2`` (minimum at (1, 1)) or the Beale function
(minimum at (3, 0.5)). Gradients come from tinygrad_cnn's autograd. The paths are drawn over
the contour plot into a PNG when matplotlib is installed; otherwise the final points are printed.

    python examples/optimizer_paths.py --steps 600 --out optimizer_paths.png
    python examples/optimizer_paths.py --surface beale
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

import tinygrad_cnn
from tinygrad_cnn import optim

SURFACES = {
    # name: (function of the two coordinates, start, minimum, plot window (xmin, xmax, ymin, ymax))
    "rosenbrock": (lambda x, y: (1.0 - x) ** 2 + 100.0 * (y - x * x) ** 2,
                   (-1.5, 2.0), (1.0, 1.0), (-2.0, 2.0, -1.0, 3.0)),
    "beale": (lambda x, y: (1.5 - x + x * y) ** 2 + (2.25 - x + x * y * y) ** 2
              + (2.625 - x + x * y * y * y) ** 2,
              (1.0, 1.5), (3.0, 0.5), (-0.5, 4.0, -1.0, 2.0)),
}

# Per-surface settings, picked so that every method is stable within the plot window and the
# differences show: plain SGD crawls along the valley floor, momentum overshoots and
# oscillates, the adaptive methods take similar-sized steps in both coordinates.
SETTINGS = {
    "rosenbrock": {"SGD": dict(lr=1e-3), "Momentum": dict(lr=2e-4, momentum=0.9), "AdaGrad": dict(lr=0.5),
                   "RMSprop": dict(lr=1e-2), "Adam": dict(lr=5e-2), "AdamW": dict(lr=5e-2, weight_decay=0.1)},
    "beale": {"SGD": dict(lr=1e-3), "Momentum": dict(lr=1e-3, momentum=0.9), "AdaGrad": dict(lr=0.5),
              "RMSprop": dict(lr=1e-2), "Adam": dict(lr=5e-2), "AdamW": dict(lr=5e-2, weight_decay=0.1)},
}
CLASSES = {"SGD": optim.SGD, "Momentum": optim.SGD, "AdaGrad": optim.Adagrad, "RMSprop": optim.RMSprop,
           "Adam": optim.Adam, "AdamW": optim.AdamW}


def run_path(name: str, surface: str, steps: int) -> np.ndarray:
    """Positions visited by optimizer ``name`` (a key of SETTINGS[surface]): array (steps + 1, 2)."""
    fn, start, _, _ = SURFACES[surface]
    xy = tinygrad_cnn.Tensor(np.array(start, dtype=np.float64), requires_grad=True)
    opt = CLASSES[name]([xy], **SETTINGS[surface][name])
    path = [xy.array.copy()]
    for _ in range(steps):
        opt.zero_grad()
        loss = fn(xy[0], xy[1])
        loss.backward()
        opt.step()
        path.append(xy.array.copy())
    return np.stack(path)


def surface_value(surface: str, point) -> float:
    fn = SURFACES[surface][0]
    return float(fn(float(point[0]), float(point[1])))


def plot(paths: dict, surface: str, out: str) -> bool:
    """Draw the paths over the contours; False if matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fn, start, minimum, (x0, x1, y0, y1) = SURFACES[surface]
    grid_x, grid_y = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
    values = fn(grid_x, grid_y)
    fig, ax = plt.subplots(figsize=(8, 6.5))
    ax.contour(grid_x, grid_y, np.log1p(values), levels=30, cmap="Greys", linewidths=0.6)
    for name, path in paths.items():
        inside = np.all(np.isfinite(path), axis=1)
        ax.plot(path[inside, 0], path[inside, 1], lw=1.4, label=name)
    ax.plot(*start, "ko", label="start")
    ax.plot(*minimum, "r*", ms=14, label="minimum")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_title(f"{surface}: {len(next(iter(paths.values()))) - 1} steps")
    ax.legend(loc="best", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return True


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps per method (default 500)")
    parser.add_argument("--out", default="optimizer_paths.png", help="output PNG (default optimizer_paths.png)")
    parser.add_argument("--surface", choices=sorted(SURFACES), default="rosenbrock")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")

    paths = {name: run_path(name, args.surface, args.steps) for name in SETTINGS[args.surface]}
    minimum = SURFACES[args.surface][2]
    print(f"{args.surface}, {args.steps} steps, minimum at {minimum}:")
    for name, path in paths.items():
        x, y = path[-1]
        print(f"  {name:9s} final ({x: .4f}, {y: .4f})  f = {surface_value(args.surface, path[-1]):.3g}")
    if plot(paths, args.surface, args.out):
        print(f"wrote {args.out}")
    else:
        print("matplotlib is not installed, so no plot was drawn; install it with `pip install matplotlib`.",
              file=sys.stderr)
    return paths


if __name__ == "__main__":
    main()
