"""Per-op speed: conv2d (ResNet-20 and AlexNet layer shapes), max pooling, BatchNorm, ReLU and
cross-entropy, forward and backward, next to the machine's measured GEMM peak and PyTorch.

    python benchmarks/bench_ops.py                 # all ops
    python benchmarks/bench_ops.py --only conv     # one family
    python benchmarks/bench_ops.py --backend numpy # the NumPy reference kernels

Convolutions are reported in GFLOP/s (2 * multiply-accumulates; backward = input and weight
gradients, twice the forward work, or once for a layer whose input needs no gradient) and as a
fraction of the GEMM peak (NumPy float32 matmul of 2048x2048 measured in this run; the
``machine:`` line prints it with the CPU model and its vector width, and ``--json`` stores
them with the rows). The count is the direct convolution's, so for the 3x3 unit-stride
layers, which run as Winograd tiles with 4x fewer multiplications, it is an effective rate
and can exceed the GEMM peak. Memory-bound ops are reported in GB/s (bytes read plus written, counted
once). Times are medians after warm-up of samples that each last about
20 ms; the forward runs without a graph, the backward is timed on a graph built once and kept
(``retain_graph=True``), for both frameworks. torch runs in the same process with the same
thread count.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from _machine import describe, gemm_peak, machine_line   # a sibling: this folder is on sys.path


def _median_time(fn, repeat, warmup=2, sample_seconds=0.02):
    """Median seconds per call over ``repeat`` samples. A sample runs ``fn`` enough times to
    last about ``sample_seconds``: one call of a sub-millisecond op is mostly timer and
    scheduler noise on a shared machine."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    fn()
    calls = max(1, int(sample_seconds / max(time.perf_counter() - start, 1e-9)))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


CONV_SHAPES = [
    # name, input shape, weight shape, stride, padding[, whether the input needs a gradient]
    ("resnet20 stage1 3x3", (128, 16, 32, 32), (16, 16, 3, 3), 1, 1),
    ("resnet20 stage2 3x3", (128, 32, 16, 16), (32, 32, 3, 3), 1, 1),
    ("resnet20 stage3 3x3", (128, 64, 8, 8), (64, 64, 3, 3), 1, 1),
    ("resnet20 down 16->32 s2", (128, 16, 32, 32), (32, 16, 3, 3), 2, 1),
    ("resnet20 down 32->64 s2", (128, 32, 16, 16), (64, 32, 3, 3), 2, 1),
    ("resnet20 stem 3->16", (128, 3, 32, 32), (16, 3, 3, 3), 1, 1),
    ("alexnet conv1 11x11 s4", (16, 3, 227, 227), (96, 3, 11, 11), 4, 0),
    # torchvision's AlexNet conv1; in training the images need no gradient: dW and db only.
    ("tv alexnet conv1 s4 p2, no dx", (16, 3, 224, 224), (64, 3, 11, 11), 4, 2, False),
    ("alexnet conv2 5x5", (16, 96, 27, 27), (256, 96, 5, 5), 1, 2),
    ("alexnet conv3 3x3", (16, 256, 13, 13), (384, 256, 3, 3), 1, 1),
]


def _torch():
    try:
        import torch
        return torch
    except ImportError:
        return None


def bench_conv(repeat, torch):
    import tinygrad_cnn as tg
    from tinygrad_cnn.nn import functional as F
    rng = np.random.default_rng(0)
    rows = []
    for name, xs, ws, stride, pad, *input_grad in CONV_SHAPES:
        input_grad = input_grad[0] if input_grad else True
        x = rng.standard_normal(xs, dtype=np.float32)
        w = rng.standard_normal(ws, dtype=np.float32) * 0.1
        n, c, h, wd = xs
        oh = (h + 2 * pad - ws[2]) // stride + 1
        ow = (wd + 2 * pad - ws[3]) // stride + 1
        flops = 2 * n * ws[0] * oh * ow * ws[1] * ws[2] * ws[3]
        xt, wt = tg.Tensor(x, requires_grad=input_grad), tg.Tensor(w, requires_grad=True)
        fwd = _median_time(lambda: F.conv2d(xt.detach(), wt.detach(), stride=stride, padding=pad),
                           repeat)

        upstream = tg.Tensor(np.ones((n, ws[0], oh, ow), np.float32))   # made once, untimed
        out = F.conv2d(xt, wt, stride=stride, padding=pad)

        def bwd():
            xt.grad = wt.grad = None
            out.backward(upstream, retain_graph=True)

        back = _median_time(bwd, repeat)
        row = dict(op=f"conv2d {name}", fwd_ms=fwd * 1e3, bwd_ms=back * 1e3,
                   fwd_rate=flops / fwd / 1e9, bwd_rate=(1 + input_grad) * flops / back / 1e9,
                   unit="GFLOP/s")
        if torch is not None:
            tx = torch.from_numpy(x).requires_grad_(input_grad)
            tw = torch.from_numpy(w).requires_grad_()
            with torch.no_grad():
                tf = _median_time(lambda: torch.nn.functional.conv2d(tx, tw, stride=stride, padding=pad),
                                  repeat)
            t_out = torch.nn.functional.conv2d(tx, tw, stride=stride, padding=pad)
            t_upstream = torch.ones_like(t_out)

            def t_bwd():
                tx.grad = tw.grad = None
                t_out.backward(t_upstream, retain_graph=True)

            row.update(torch_fwd_ms=tf * 1e3, torch_bwd_ms=_median_time(t_bwd, repeat) * 1e3)
        rows.append(row)
    return rows


def _memory_op(name, make, torch_make, nbytes, repeat, torch):
    """Time the forward (no graph) and the backward (of a graph built once and retained) of
    a memory-bound op built by ``make()``."""
    fwd_fn, bwd_fn = make()
    fwd, back = _median_time(fwd_fn, repeat), _median_time(bwd_fn, repeat)
    row = dict(op=name, fwd_ms=fwd * 1e3, bwd_ms=back * 1e3, fwd_rate=nbytes / fwd / 1e9,
               bwd_rate=2 * nbytes / back / 1e9, unit="GB/s")
    if torch is not None and torch_make is not None:
        tf_fn, tb_fn = torch_make()
        row.update(torch_fwd_ms=_median_time(tf_fn, repeat) * 1e3,
                   torch_bwd_ms=_median_time(tb_fn, repeat) * 1e3)
    return row


def bench_memory_bound(repeat, torch, only):
    import tinygrad_cnn as tg
    from tinygrad_cnn.nn import functional as F
    rng = np.random.default_rng(0)
    shape = (128, 16, 32, 32)
    x = rng.standard_normal(shape, dtype=np.float32)
    nbytes = 2 * x.nbytes
    rows = []

    def ours(fn):
        def make():
            xt = tg.Tensor(x, requires_grad=True)

            def fwd():
                with tg.no_grad():
                    fn(xt)

            # The graph and the upstream gradient are made once, outside the timing.
            out = fn(xt)
            upstream = tg.Tensor(np.ones(out.shape, np.float32))

            def bwd():
                xt.grad = None
                out.backward(upstream, retain_graph=True)
            return fwd, bwd
        return make

    def theirs(fn):
        def make():
            tx = torch.from_numpy(x).requires_grad_()

            def fwd():
                with torch.no_grad():
                    fn(tx)

            out = fn(tx)
            upstream = torch.ones_like(out)

            def bwd():
                tx.grad = None
                out.backward(upstream, retain_graph=True)
            return fwd, bwd
        return make if torch is not None else None

    gamma, beta = np.ones(16, np.float32), np.zeros(16, np.float32)
    cases = {
        "relu": (lambda t: F.relu(t), (lambda t: torch.relu(t)) if torch else None),
        "max_pool2d 3x3 s2": (lambda t: F.max_pool2d(t, 3, 2),
                              (lambda t: torch.nn.functional.max_pool2d(t, 3, 2)) if torch else None),
        "batch_norm train": (
            lambda t: F.batch_norm(t, tg.Tensor(np.zeros(16, np.float32)), tg.Tensor(np.ones(16, np.float32)),
                                   tg.Tensor(gamma, requires_grad=True), tg.Tensor(beta, requires_grad=True),
                                   training=True),
            (lambda t: torch.nn.functional.batch_norm(t, torch.zeros(16), torch.ones(16),
                                                      torch.ones(16, requires_grad=True),
                                                      torch.zeros(16, requires_grad=True), training=True))
            if torch else None),
    }
    for name, (fn, tfn) in cases.items():
        if only and only not in name.replace("_", " ") and only not in name:
            continue
        rows.append(_memory_op(name + " (128,16,32,32)", ours(fn), theirs(tfn) if tfn else None,
                               nbytes, repeat, torch))
    if not only or only in "cross_entropy":
        logits = rng.standard_normal((128, 1000), dtype=np.float32)
        labels = rng.integers(0, 1000, 128)

        def make():
            lt = tg.Tensor(logits, requires_grad=True)
            yt = tg.Tensor(labels)

            def fwd():
                with tg.no_grad():
                    F.cross_entropy(lt, yt)

            loss = F.cross_entropy(lt, yt)

            def bwd():
                lt.grad = None
                loss.backward(retain_graph=True)
            return fwd, bwd

        def tmake():
            lt = torch.from_numpy(logits).requires_grad_()
            yt = torch.from_numpy(labels)

            def fwd():
                with torch.no_grad():
                    torch.nn.functional.cross_entropy(lt, yt)

            loss = torch.nn.functional.cross_entropy(lt, yt)

            def bwd():
                lt.grad = None
                loss.backward(retain_graph=True)
            return fwd, bwd

        rows.append(_memory_op("cross_entropy (128,1000)", make, tmake if torch else None,
                               2 * logits.nbytes, repeat, torch))
    return rows


def _limit_threads(threads):
    """Give our kernels, the slice workers and BLAS ``threads`` threads (torch gets the same
    through ``torch.set_num_threads``), before the first op runs."""
    import numba
    from threadpoolctl import threadpool_limits
    os.environ["TINYGRAD_CNN_NUM_THREADS"] = str(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    threadpool_limits(threads, user_api="blas")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--only", default="", help="conv, relu, pool, batch_norm, cross_entropy")
    p.add_argument("--backend", choices=["numba", "numpy"], default="numba")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--json", help="also write the machine and the rows to this JSON file")
    args = p.parse_args(argv)
    _limit_threads(args.threads)
    from tinygrad_cnn import backend
    with backend.cpu_backend(args.backend):      # restored on return: tests run main() in-process
        return _run(args)


def _run(args):
    torch = None if args.no_torch else _torch()
    if torch is not None:
        torch.set_num_threads(args.threads)
    machine = describe(args.threads, gemm_peak())
    peak = machine["gemm_peak_gflops"]
    print(machine_line(machine))
    print(f"GEMM peak (NumPy float32 2048^3 matmul): {peak:.1f} GFLOP/s; backend {args.backend}; "
          f"torch {'%s' % torch.__version__ if torch else 'absent'}")
    rows = []
    if not args.only or args.only == "conv":
        rows += bench_conv(args.repeat, torch)
    if args.only != "conv":
        rows += bench_memory_bound(args.repeat, torch, args.only)
    head = (f"{'op':<38}{'fwd ms':>9}{'bwd ms':>9}{'fwd rate':>11}{'bwd rate':>11}{'unit':>9}"
            f"{'%peak f/b':>12}{'torch fwd/bwd ms':>19}")
    print(head)
    print("-" * len(head))
    for r in rows:
        frac = (f"{r['fwd_rate'] / peak:>5.0%}/{r['bwd_rate'] / peak:<5.0%}"
                if r["unit"] == "GFLOP/s" else "")
        ref = (f"{r['torch_fwd_ms']:8.2f}/{r['torch_bwd_ms']:<8.2f}" if "torch_fwd_ms" in r else "")
        print(f"{r['op']:<38}{r['fwd_ms']:>9.2f}{r['bwd_ms']:>9.2f}{r['fwd_rate']:>11.1f}"
              f"{r['bwd_rate']:>11.1f}{r['unit']:>9}{frac:>12}{ref:>19}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"machine": machine, "backend": args.backend, "rows": rows}, fh, indent=2)
    return rows


if __name__ == "__main__":
    main()
