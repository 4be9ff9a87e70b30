"""Whitening, as in the lecture: original, decorrelated (PCA basis) and whitened data, and ZCA on images.

Part 1, a correlated 2-D Gaussian cloud ``x``: with its covariance ``Sigma = U diag(lambda) U^T``,

* decorrelated ``U^T (x - mean)``: the PCA basis, covariance ``diag(lambda)``;
* PCA-whitened ``diag(lambda + eps)^(-1/2) U^T (x - mean)``: covariance ~ identity;
* ZCA-whitened ``U diag(lambda + eps)^(-1/2) U^T (x - mean)``: the PCA-whitened cloud rotated back.

Part 2, CIFAR-10 images (each image one vector of D = 3*S*S numbers): ``compute_zca`` on the
training images and ``ZCAWhitening`` applied to a few of them. The whitened images keep their
shapes but lose the smooth colour areas that dominate natural images' variance: what is left
are edges (the directions of small variance, amplified up to ``1/sqrt(eps)``).

Default run: 2,000 points; 2,000 CIFAR-10 images averaged down to 16x16 (D = 768), eps 0.01
(relative to each channel's unit variance); seconds.

    python examples/zca_whitening.py
    python examples/zca_whitening.py --limit-train 5000 --image-size 32     # D = 3,072
    python examples/zca_whitening.py --smoke

Writes ``<out>/whitening_2d.png`` (matplotlib, the ``plot`` extra), ``<out>/zca_images.png``
(rows: original, ZCA-whitened; our PNG writer) and ``<out>/results.md`` / ``results.json``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tinygrad_cnn.data.transforms import ZCAWhitening, compute_zca  # noqa: E402

import _experiment_utils as ex  # noqa: E402


def build_parser():
    p = ex.base_parser(__doc__.splitlines()[0], "runs/zca_whitening")
    p.add_argument("--points", type=ex.positive_int, default=2000)
    p.add_argument("--limit-train", type=ex.positive_int, default=2000)
    p.add_argument("--image-size", type=int, default=16, choices=(8, 16, 32))
    p.add_argument("--eps", type=float, default=0.01, help="added to the eigenvalues of the image covariance")
    return p


def covariance_summary(points):
    """(variances, correlation between the two coordinates) of (N, 2) points."""
    cov = np.cov(points, rowvar=False, bias=True)
    return np.diag(cov), cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])


def whitening_stages(points, eps=0.0):
    """original, decorrelated, PCA-whitened and ZCA-whitened (N, 2) clouds."""
    mean, zca, values, vectors = compute_zca(points.reshape(-1, 2, 1, 1), eps=eps, scale=1.0)
    centred = points - mean
    rotated = centred @ vectors
    pca_white = rotated / np.sqrt(values + eps)
    return {"original": points, "decorrelated": rotated, "PCA-whitened": pca_white,
            "ZCA-whitened": centred @ zca}


def plot_stages(path, stages):
    if not ex.have_matplotlib():
        print(f"{Path(path).name} not written: {ex.PLOT_HINT}", file=sys.stderr)
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(stages), figsize=(3.6 * len(stages), 3.8))
    limit = max(np.abs(p).max() for p in stages.values())
    for ax, (name, p) in zip(axes, stages.items()):
        ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.4)
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        ax.axhline(0, color="gray", linewidth=0.5)
        ax.axvline(0, color="gray", linewidth=0.5)
        variances, corr = covariance_summary(p)
        ax.set_title(f"{name}\nvar {variances[0]:.2f}, {variances[1]:.2f}; corr {corr:+.2f}", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.points, args.limit_train, args.image_size = 300, 200, 8
    timer = ex.Timer()
    rng = np.random.default_rng(args.seed)
    # A cloud stretched 3:1 and turned by 30 degrees, centred away from the origin.
    turn = np.radians(30)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    points = rng.standard_normal((args.points, 2)) * [3.0, 1.0] @ rotation.T + [2.0, 1.0]
    stages = whitening_stages(points)
    plot_stages(Path(args.out) / "whitening_2d.png", stages)
    rows = []
    for name, p in stages.items():
        variances, corr = covariance_summary(p)
        rows.append([name, f"{variances[0]:.3f}", f"{variances[1]:.3f}", f"{corr:+.3f}"])

    train, _ = ex.load_cifar(args.data_dir, args.limit_train, 10, args.seed, args.image_size)
    images = train.data.astype(np.float64)
    # load_cifar standardises each channel (mean 0, std 1): eps is relative to that unit variance.
    mean, matrix, values, _ = compute_zca(images, eps=args.eps, scale=1.0)
    white = ZCAWhitening(mean, matrix, scale=1.0)(images)
    flat = white.reshape(len(white), -1)
    cov = np.cov(flat, rowvar=False, bias=True)
    off = cov - np.diag(np.diag(cov))
    shown = images[:10], white[:10]
    grids = [ex.image_grid(ex.to_uint8(p), ncols=len(p), zoom=4) for p in shown]
    ex.write_png(Path(args.out) / "zca_images.png", ex.stack_rows(grids))
    dim = flat.shape[1]
    kept = float(values.sum() and values[:dim // 10].sum() / values.sum())
    config = {k: v for k, v in vars(args).items() if k not in ("out", "data_dir")}
    notes = [f"CIFAR-10: {len(images)} images at {args.image_size}x{args.image_size} (D = {dim}), eps {args.eps}: "
             f"the top 10% of the eigenvalues hold {kept:.1%} of the variance; after ZCA the covariance "
             f"diagonal lies in [{np.diag(cov).min():.3f}, {np.diag(cov).max():.3f}] and the largest "
             f"|off-diagonal| entry is {np.abs(off).max():.3f}"]
    return ex.write_results(args.out, "Whitening a 2-D cloud (covariance after each stage)",
                            ["stage", "variance 1", "variance 2", "correlation"], rows, config,
                            timer.seconds, notes=notes,
                            extra={"image_cov_diag": [float(np.diag(cov).min()), float(np.diag(cov).max())],
                                   "image_cov_max_offdiag": float(np.abs(off).max()),
                                   "variance_in_top_tenth": kept})


if __name__ == "__main__":
    main()
