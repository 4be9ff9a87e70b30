"""Speed of the up-sampling ops next to PyTorch in the same run: conv_transpose2d at decoder
shapes, bilinear and nearest interpolation, max unpooling; forward and backward.

    python benchmarks/bench_upsampling.py
    python benchmarks/bench_upsampling.py --backend numpy --repeat 3

Times are medians of samples that each last about 20 ms (``bench_ops``' sampler); the forward
runs without a graph, the backward on a graph built once and retained, for both frameworks.
The last column is our time over PyTorch's (forward / backward): 1.0 is parity.
"""
from __future__ import annotations

import argparse

import numpy as np
from bench_ops import _median_time        # a sibling script: this folder is on sys.path

# (name, input shape, op settings): decoder shapes of a small U-Net / autoencoder, batch 32.
CASES = [
    ("conv_transpose2d 32->16 k3 s2 14->28", "conv_transpose2d", (32, 32, 14, 14),
     dict(weight=(32, 16, 3, 3), stride=2, padding=1, output_padding=1)),
    ("conv_transpose2d 64->32 k2 s2 16->32", "conv_transpose2d", (32, 64, 16, 16),
     dict(weight=(64, 32, 2, 2), stride=2)),
    ("conv_transpose2d 16->16 k3 s1 32", "conv_transpose2d", (32, 16, 32, 32),
     dict(weight=(16, 16, 3, 3), stride=1, padding=1)),
    ("interpolate bilinear x2 16->32", "interpolate", (32, 32, 16, 16),
     dict(scale_factor=2, mode="bilinear")),
    ("interpolate nearest x2 16->32", "interpolate", (32, 32, 16, 16),
     dict(scale_factor=2, mode="nearest")),
    ("max_unpool2d 2x2 16->32", "max_unpool2d", (32, 32, 32, 32), dict(kernel_size=2)),
]


def _inputs(kind, shape, settings, rng):
    x = rng.standard_normal(shape, dtype=np.float32)
    if kind == "conv_transpose2d":
        return x, rng.standard_normal(settings["weight"], dtype=np.float32) * 0.1
    return x, None


def _ours(kind, x, w, settings):
    import tinygrad_cnn as tg
    from tinygrad_cnn.nn import functional as F
    rest = {k: v for k, v in settings.items() if k != "weight"}
    if kind == "conv_transpose2d":
        xt, wt = tg.Tensor(x, requires_grad=True), tg.Tensor(w, requires_grad=True)
        return (lambda: F.conv_transpose2d(xt.detach(), wt.detach(), **rest),
                lambda: F.conv_transpose2d(xt, wt, **rest), (xt, wt))
    if kind == "interpolate":
        xt = tg.Tensor(x, requires_grad=True)
        return lambda: F.interpolate(xt.detach(), **rest), lambda: F.interpolate(xt, **rest), (xt,)
    pooled, indices = F.max_pool2d(tg.Tensor(x), rest["kernel_size"], return_indices=True)
    pt = tg.Tensor(pooled.numpy(), requires_grad=True)
    return (lambda: F.max_unpool2d(pt.detach(), indices, **rest),
            lambda: F.max_unpool2d(pt, indices, **rest), (pt,))


def _theirs(torch, kind, x, w, settings):
    F = torch.nn.functional
    rest = {k: v for k, v in settings.items() if k != "weight"}
    if kind == "conv_transpose2d":
        tx, tw = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
        return (lambda: F.conv_transpose2d(tx.detach(), tw.detach(), **rest),
                lambda: F.conv_transpose2d(tx, tw, **rest), (tx, tw))
    if kind == "interpolate":
        tx = torch.from_numpy(x).requires_grad_()
        return lambda: F.interpolate(tx.detach(), **rest), lambda: F.interpolate(tx, **rest), (tx,)
    pooled, indices = F.max_pool2d(torch.from_numpy(x), rest["kernel_size"], return_indices=True)
    tp = pooled.clone().requires_grad_()
    return (lambda: F.max_unpool2d(tp.detach(), indices, **rest),
            lambda: F.max_unpool2d(tp, indices, **rest), (tp,))


def _time(forward, build, leaves, ones, repeat):
    fwd = _median_time(forward, repeat)
    out = build()
    upstream = ones(out)

    def backward():
        for leaf in leaves:
            leaf.grad = None
        out.backward(upstream, retain_graph=True)

    return fwd, _median_time(backward, repeat)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--backend", choices=["numba", "numpy"], default="numba")
    p.add_argument("--no-torch", action="store_true")
    args = p.parse_args(argv)
    from tinygrad_cnn import backend
    with backend.cpu_backend(args.backend):      # restored on return: tests run main() in-process
        return _run(args)


def _run(args):
    import tinygrad_cnn as tg
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            torch = None
    rng = np.random.default_rng(0)
    rows = []
    print(f"backend {args.backend}; torch {torch.__version__ if torch else 'absent'}")
    head = f"{'op':<40}{'fwd ms':>9}{'bwd ms':>9}{'torch fwd':>11}{'torch bwd':>11}{'ours/torch f/b':>16}"
    print(head)
    print("-" * len(head))
    for name, kind, shape, settings in CASES:
        x, w = _inputs(kind, shape, settings, rng)
        fwd, bwd = _time(*_ours(kind, x, w, settings),
                         lambda out: tg.Tensor(np.ones(out.shape, np.float32)), args.repeat)
        row = dict(op=name, fwd_ms=fwd * 1e3, bwd_ms=bwd * 1e3)
        text = f"{name:<40}{fwd * 1e3:>9.2f}{bwd * 1e3:>9.2f}"
        if torch is not None:
            tf, tb = _time(*_theirs(torch, kind, x, w, settings), torch.ones_like, args.repeat)
            row.update(torch_fwd_ms=tf * 1e3, torch_bwd_ms=tb * 1e3)
            text += f"{tf * 1e3:>11.2f}{tb * 1e3:>11.2f}{fwd / tf:>9.1f}/{bwd / tb:<6.1f}"
        print(text, flush=True)
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
