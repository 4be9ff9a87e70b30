"""Convolution layers of this working tree against those of an earlier git revision, in one
process, alternating old and new round by round (medians, and the median of the per-round
new/old ratios), so that the load of a shared machine falls on both alike.

    python benchmarks/bench_conv_revision.py --rev e819d66            # all layers
    python benchmarks/bench_conv_revision.py --rev main --only down --rounds 15

The revision's ``tinygrad_cnn/kernels/sliced_conv.py`` and ``tinygrad_cnn/kernels/cpu/conv.py``
are loaded from git under private module names and the old sliced convolution is given the
old Numba kernels; the rest of the package (worker pool, BLAS) is this tree's. It times the
``conv2d_forward`` / ``conv2d_backward`` kernels on raw float32 arrays, not the autograd
around them, and checks that both versions give the same results first.
"""
from __future__ import annotations

import argparse
import importlib.util
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]

LAYERS = [
    # name, input shape, weight shape, stride, padding, (dx, dW, db) needed
    ("resnet20 down 16->32 s2", (128, 16, 32, 32), (32, 16, 3, 3), 2, 1, (True, True, True)),
    ("resnet20 down 32->64 s2", (128, 32, 16, 16), (64, 32, 3, 3), 2, 1, (True, True, True)),
    ("resnet20 shortcut B 1x1 s2", (128, 16, 32, 32), (32, 16, 1, 1), 2, 0, (True, True, True)),
    ("alexnet conv1 11x11 s4 227", (16, 3, 227, 227), (96, 3, 11, 11), 4, 0, (True, True, True)),
    ("torchvision alexnet conv1, no dx", (16, 3, 224, 224), (64, 3, 11, 11), 4, 2,
     (False, True, True)),
    # Unit stride 3x3: im2col_wide columns, or (since they were added) Winograd tiles.
    ("resnet20 stage1 3x3", (128, 16, 32, 32), (16, 16, 3, 3), 1, 1, (True, True, True)),
    ("resnet20 stage2 3x3", (128, 32, 16, 16), (32, 32, 3, 3), 1, 1, (True, True, True)),
    ("resnet20 stage3 3x3", (128, 64, 8, 8), (64, 64, 3, 3), 1, 1, (True, True, True)),
    ("vgg16 3x3 128 ch 112x112", (8, 128, 112, 112), (128, 128, 3, 3), 1, 1, (True, True, True)),
    ("vgg16 3x3 512 ch 28x28", (8, 512, 28, 28), (512, 512, 3, 3), 1, 1, (True, True, True)),
]


def _load(name, rev, path, directory):
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    file = pathlib.Path(directory) / f"{name.rsplit('.', 1)[1]}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def load_revision(rev, directory):
    """The revision's sliced convolution, calling the revision's Numba kernels."""
    kernels = _load("tinygrad_cnn.kernels.cpu._revision_conv", rev,
                    "tinygrad_cnn/kernels/cpu/conv.py", directory).KERNELS
    sliced = _load("tinygrad_cnn.kernels._revision_sliced_conv", rev,
                   "tinygrad_cnn/kernels/sliced_conv.py", directory)

    class RevisionKernels:
        @staticmethod
        def kernel(name, xp=np, impl=None):
            return kernels[name]

    sliced.backend = RevisionKernels
    return sliced


def _per_call_ms(fn, calls):
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e3


def compare(layer, old, new, rounds, calls, rng):
    from tinygrad_cnn._arguments import WindowGeometry
    name, x_shape, w_shape, stride, padding, needs = layer
    x = rng.standard_normal(x_shape, dtype=np.float32)
    w = rng.standard_normal(w_shape, dtype=np.float32) * 0.1
    b = rng.standard_normal(w_shape[0], dtype=np.float32)
    geometry = WindowGeometry.build("conv2d", x_shape, w_shape[2:], stride, padding, 1)
    grad = rng.standard_normal((x_shape[0], w_shape[0]) + geometry.out, dtype=np.float32)
    runs = {
        version: (lambda m=module: m.conv2d_forward(x, w, b, geometry, 1),
                  lambda m=module: m.conv2d_backward(grad, x, w, geometry, 1, needs))
        for version, module in (("old", old), ("new", new))}
    for a, c in zip([runs["old"][0]()] + list(runs["old"][1]()),
                    [runs["new"][0]()] + list(runs["new"][1]())):
        assert (a is None) == (c is None), name
        if a is not None:
            np.testing.assert_allclose(c, a, rtol=1e-3, atol=1e-4 * float(np.abs(a).max()),
                                       err_msg=name)
    times = {(version, part): [] for version in runs for part in (0, 1)}
    for r in range(rounds):
        for version in (("old", "new") if r % 2 == 0 else ("new", "old")):
            for part in (0, 1):
                times[version, part].append(_per_call_ms(runs[version][part], calls))
    row = dict(layer=name)
    for part, label in ((0, "fwd"), (1, "bwd")):
        old_t, new_t = times["old", part], times["new", part]
        row[f"old_{label}_ms"] = statistics.median(old_t)
        row[f"new_{label}_ms"] = statistics.median(new_t)
        row[f"{label}_ratio"] = statistics.median(n / o for n, o in zip(new_t, old_t))
        row[f"{label}_wins"] = sum(n < o for n, o in zip(new_t, old_t))
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", required=True, help="the git revision to compare against")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--calls", type=int, default=3, help="calls per timed sample")
    p.add_argument("--only", default="", help="run the layers whose name contains this")
    args = p.parse_args(argv)
    import tinygrad_cnn.nn.functional  # noqa: F401  (registers the references)
    from tinygrad_cnn.kernels import sliced_conv
    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        old = load_revision(args.rev, directory)
        print(f"{'layer':<34}{'fwd old':>9}{'new ms':>8}{'ratio':>7}{'wins':>6}"
              f"{'bwd old':>10}{'new ms':>8}{'ratio':>7}{'wins':>6}")
        for layer in LAYERS:
            if args.only not in layer[0]:
                continue
            r = compare(layer, old, sliced_conv, args.rounds, args.calls, rng)
            print(f"{r['layer']:<34}{r['old_fwd_ms']:>9.2f}{r['new_fwd_ms']:>8.2f}"
                  f"{r['fwd_ratio']:>7.2f}{r['fwd_wins']:>3}/{args.rounds:<2}"
                  f"{r['old_bwd_ms']:>10.2f}{r['new_bwd_ms']:>8.2f}{r['bwd_ratio']:>7.2f}"
                  f"{r['bwd_wins']:>3}/{args.rounds:<2}", flush=True)
            rows.append(r)
    return rows


if __name__ == "__main__":
    main()
