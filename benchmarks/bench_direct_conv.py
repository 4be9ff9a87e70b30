"""A direct 3x3 stride-1 pad-1 convolution written in Numba, against im2col + GEMM.

    python benchmarks/bench_direct_conv.py                  # the three ResNet-20 shapes
    python benchmarks/bench_direct_conv.py --asm chain3     # what LLVM made of one variant

The finding this script backs (docs/performance.md, "A direct convolution in Numba"): none of
these kernels beats the im2col + OpenBLAS path by the 1.2x that would justify it, so the
package does not use them. Everything runs on one thread (Numba, BLAS and the slice workers),
timed in CPU seconds (``time.process_time``), the variants alternating round by round, medians.

Every variant computes on the *padded-width grid* of the wide columns (docs/ops/conv.md): the
input plane is zero-padded to rows of ``Wp = W + 2``, output position ``r = oh*Wp + ow`` is
the window whose top-left corner is flat position ``r`` of the padded plane, so the nine taps
are the plane read at ``r + ki*Wp + kj``. One loop over ``r`` then covers a whole plane, long
and contiguous, which LLVM's loop vectoriser turns into zmm FMAs; the two straddling columns
per row are computed and dropped. For each block of output channels and each input channel,
the loop adds the nine taps of that input plane into the output planes (which stay in L1):
the accumulators live in memory between input channels, the weights in registers.
"""
from __future__ import annotations

import os

os.environ.setdefault("TINYGRAD_CNN_NUM_THREADS", "1")

import argparse        # noqa: E402
import collections     # noqa: E402
import re              # noqa: E402
import time            # noqa: E402

import numba           # noqa: E402
import numpy as np     # noqa: E402
from numba import njit  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from tinygrad_cnn._arguments import WindowGeometry      # noqa: E402
from tinygrad_cnn.kernels.sliced_conv import conv2d_forward  # noqa: E402

# Not cached: Numba cannot show the assembly of a function loaded from its cache (--asm).
FLAGS = dict(cache=False, boundscheck=False, error_model="numpy", nogil=True)
# Contraction only: a*b + c becomes one FMA; the order of the sums is kept.
FAST = {"contract"}


@njit(**FLAGS)
def pad_planes(x, out):
    """x (C, H, W) -> out (C, (H+3)*(W+2)): zero-padded planes, with one extra row at the
    bottom for the reads of the straddling columns of the last row.

    Copies through row views: an index ``base + w`` with a runtime ``base`` makes Numba test
    for negative indices, and the loop no longer vectorises."""
    channels, height, width = x.shape
    wp = width + 2
    for c in range(channels):
        plane = out[c]
        for t in range(wp + 1):
            plane[t] = 0
        for h in range(height):
            dst = plane[(h + 1) * wp + 1:(h + 2) * wp + 1]
            src = x[c, h]
            for w in range(width):
                dst[w] = src[w]
            dst[width] = 0
            dst[width + 1] = 0
        tail = plane[(height + 1) * wp + 1:]
        for t in range(tail.size):
            tail[t] = 0


@njit(**FLAGS)
def unwide(acc, y, wp):
    """acc (C_out, OH*Wp) -> y (C_out, OH, OW), dropping the straddling columns."""
    c_out, out_h, out_w = y.shape
    for o in range(c_out):
        for h in range(out_h):
            src = acc[o, h * wp:h * wp + out_w]
            dst = y[o, h]
            for w in range(out_w):
                dst[w] = src[w]


@njit(inline="always", **FLAGS)
def rows3(plane, wp):
    """The padded plane seen from kernel rows 0, 1 and 2. Indexing these views with the loop
    variable plus a constant keeps every access visibly contiguous and non-negative; with
    ``r + wp`` the vectoriser emitted gathers (vgatherqps) and ran at 5-7 GFLOP/s."""
    return plane[0:], plane[wp:], plane[2 * wp:]


@njit(inline="always", **FLAGS)
def taps(w, co, ci):
    """The nine weights of (co, ci) as a tuple: values, so LLVM can keep them in registers."""
    return (w[co, ci, 0, 0], w[co, ci, 0, 1], w[co, ci, 0, 2],
            w[co, ci, 1, 0], w[co, ci, 1, 1], w[co, ci, 1, 2],
            w[co, ci, 2, 0], w[co, ci, 2, 1], w[co, ci, 2, 2])


@njit(inline="always", fastmath=FAST, **FLAGS)
def sum9(x, r, t):
    """The nine taps at r, summed per kernel row and then added (a multiply and two FMAs per
    row, two adds): shorter dependency chains, more instructions."""
    x0, x1, x2 = x
    s = t[0] * x0[r] + t[1] * x0[r + 1] + t[2] * x0[r + 2]
    s += t[3] * x1[r] + t[4] * x1[r + 1] + t[5] * x1[r + 2]
    s += t[6] * x2[r] + t[7] * x2[r + 1] + t[8] * x2[r + 2]
    return s


@njit(inline="always", fastmath=FAST, **FLAGS)
def fma9(acc, x, r, t):
    """acc plus the nine taps at r as one chain of nine FMAs."""
    x0, x1, x2 = x
    acc += t[0] * x0[r]
    acc += t[1] * x0[r + 1]
    acc += t[2] * x0[r + 2]
    acc += t[3] * x1[r]
    acc += t[4] * x1[r + 1]
    acc += t[5] * x1[r + 2]
    acc += t[6] * x2[r]
    acc += t[7] * x2[r + 1]
    acc += t[8] * x2[r + 2]
    return acc


@njit(fastmath=FAST, **FLAGS)
def sum4(xpad, w, out, wp):
    """4 output channels per pass over an input plane, taps summed by ``sum9``."""
    length = out.shape[1]
    for co in range(0, w.shape[0], 4):
        o0, o1, o2, o3 = out[co], out[co + 1], out[co + 2], out[co + 3]
        for ci in range(xpad.shape[0]):
            x = rows3(xpad[ci], wp)
            t0, t1, t2, t3 = taps(w, co, ci), taps(w, co + 1, ci), taps(w, co + 2, ci), \
                taps(w, co + 3, ci)
            for r in range(length):
                o0[r] += sum9(x, r, t0)
                o1[r] += sum9(x, r, t1)
                o2[r] += sum9(x, r, t2)
                o3[r] += sum9(x, r, t3)


@njit(fastmath=FAST, **FLAGS)
def chain2(xpad, w, out, wp):
    """2 output channels per pass, FMA chains: 18 weights in registers."""
    length = out.shape[1]
    for co in range(0, w.shape[0], 2):
        o0, o1 = out[co], out[co + 1]
        for ci in range(xpad.shape[0]):
            x = rows3(xpad[ci], wp)
            t0, t1 = taps(w, co, ci), taps(w, co + 1, ci)
            for r in range(length):
                o0[r] = fma9(o0[r], x, r, t0)
                o1[r] = fma9(o1[r], x, r, t1)


@njit(fastmath=FAST, **FLAGS)
def chain3(xpad, w, out, wp):
    """3 output channels per pass: 27 weights, 3 accumulators and a temporary are about
    the 32 zmm registers (the channels left over by 3 go one at a time)."""
    length = out.shape[1]
    c_out = w.shape[0]
    for co in range(0, c_out - 2, 3):
        o0, o1, o2 = out[co], out[co + 1], out[co + 2]
        for ci in range(xpad.shape[0]):
            x = rows3(xpad[ci], wp)
            t0, t1, t2 = taps(w, co, ci), taps(w, co + 1, ci), taps(w, co + 2, ci)
            for r in range(length):
                o0[r] = fma9(o0[r], x, r, t0)
                o1[r] = fma9(o1[r], x, r, t1)
                o2[r] = fma9(o2[r], x, r, t2)
    for co in range(c_out - c_out % 3, c_out):
        o0 = out[co]
        for ci in range(xpad.shape[0]):
            x = rows3(xpad[ci], wp)
            t0 = taps(w, co, ci)
            for r in range(length):
                o0[r] = fma9(o0[r], x, r, t0)


@njit(fastmath=FAST, **FLAGS)
def chain4(xpad, w, out, wp):
    """4 output channels per pass: 36 weights, more than the registers hold."""
    length = out.shape[1]
    for co in range(0, w.shape[0], 4):
        o0, o1, o2, o3 = out[co], out[co + 1], out[co + 2], out[co + 3]
        for ci in range(xpad.shape[0]):
            x = rows3(xpad[ci], wp)
            t0, t1, t2, t3 = taps(w, co, ci), taps(w, co + 1, ci), taps(w, co + 2, ci), \
                taps(w, co + 3, ci)
            for r in range(length):
                o0[r] = fma9(o0[r], x, r, t0)
                o1[r] = fma9(o1[r], x, r, t1)
                o2[r] = fma9(o2[r], x, r, t2)
                o3[r] = fma9(o3[r], x, r, t3)


@njit(**FLAGS)
def layout_only(xpad, w, out, wp):
    """No arithmetic: the time of the padding, bias and output passes around a kernel."""


VARIANTS = {"layout-only": layout_only, "sum4": sum4, "chain2": chain2, "chain3": chain3,
            "chain4": chain4}
# The output channels must be a multiple of this (the kernels do not bounds-check).
CHANNEL_MULTIPLE = {"layout-only": 1, "sum4": 4, "chain2": 2, "chain3": 1, "chain4": 4}


def make_driver(kernel):
    """conv2d forward of a batch, image by image: pad, start from the bias, run ``kernel``,
    drop the straddling columns. (A closure over the kernel, so each variant compiles its
    own driver with the kernel inlined into the call.)"""
    @njit(**FLAGS)
    def run(x, w, bias, y):
        n_batch, channels, height, width = x.shape
        wp = width + 2
        xpad = np.empty((channels, (height + 3) * wp), x.dtype)
        acc = np.empty((w.shape[0], height * wp), x.dtype)
        for n in range(n_batch):
            pad_planes(x[n], xpad)
            for o in range(w.shape[0]):
                plane = acc[o]
                for t in range(plane.size):
                    plane[t] = bias[o]
            kernel(xpad, w, acc, wp)
            unwide(acc, y[n], wp)
    return run


SHAPES = [(16, 32, 16), (32, 16, 32), (64, 8, 64)]       # (C, H = W, C_out) of ResNet-20


def show_asm(name):
    """Counts of the vector instructions of one kernel and of its stack traffic (spills)."""
    c, hw, c_out = SHAPES[0]
    wp = hw + 2
    kernel = VARIANTS[name]
    kernel(np.zeros((c, (hw + 3) * wp), np.float32), np.zeros((c_out, c, 3, 3), np.float32),
           np.zeros((c_out, hw * wp), np.float32), wp)
    asm = kernel.inspect_asm(kernel.signatures[0])
    counts = collections.Counter()
    for line in asm.splitlines():
        match = re.match(r"\s+(v\w+)\s.*?\b(zmm|ymm|xmm)", line)
        if match:
            counts[f"{match.group(1)} {match.group(2)}"] += 1
    stack = sum(1 for line in asm.splitlines() if "(%rsp)" in line and "vmov" in line)
    print(f"{name}: vector instructions (whole function, hot loop and remainders)")
    for key, count in counts.most_common(12):
        print(f"  {count:5d}  {key}")
    print(f"  {stack:5d}  vector moves to or from the stack (spilled registers)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--asm", metavar="VARIANT", help="show the assembly counts instead")
    args = parser.parse_args(argv)
    if args.asm:
        show_asm(args.asm)
        return
    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    drivers = {name: make_driver(VARIANTS[name]) for name in args.variants.split(",")}
    with threadpool_limits(1):
        for c, hw, c_out in SHAPES:
            x = rng.standard_normal((args.batch, c, hw, hw)).astype(np.float32)
            w = (rng.standard_normal((c_out, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
            b = rng.standard_normal(c_out).astype(np.float32)
            geometry = WindowGeometry.build("conv2d", x.shape, 3, 1, 1, 1)
            ref = conv2d_forward(x, w, b, geometry, 1)
            calls = {"im2col+gemm": lambda: conv2d_forward(x, w, b, geometry, 1)}
            for name, driver in drivers.items():
                assert c_out % CHANNEL_MULTIPLE[name] == 0, (name, c_out)
                y = np.empty_like(ref)
                driver(x, w, b, y)
                if name != "layout-only":
                    error = np.abs(y - ref).max() / np.abs(ref).max()
                    assert error < 1e-5, f"{name}: relative error {error}"
                calls[name] = (lambda driver=driver, y=y: driver(x, w, b, y))
            times = {name: [] for name in calls}
            for _ in range(args.rounds):
                for name, call in calls.items():
                    start = time.process_time()
                    call()
                    times[name].append(time.process_time() - start)
            flops = 2 * args.batch * c_out * c * 9 * hw * hw
            base = np.median(times["im2col+gemm"])
            print(f"C={c}, {hw}x{hw} -> {c_out}, batch {args.batch} ({flops / 1e9:.2f} GFLOP), "
                  f"one thread, CPU ms (median of {args.rounds}):")
            for name, samples in times.items():
                median = np.median(samples)
                print(f"  {name:12s} {median * 1e3:7.2f} ms  {flops / median / 1e9:6.1f} GFLOP/s"
                      f"  {base / median:5.2f}x")


if __name__ == "__main__":
    main()
