"""What machine a benchmark ran on: CPU model, SIMD vector width and measured GEMM peak.

A throughput means little without the machine it came from: the same code runs twice as
fast per core with 512-bit vectors as with 256-bit ones, and a convolution at 100 GFLOP/s is
near the limit on one machine and far from it on another. ``bench_train.py`` and
``bench_ops.py`` print :func:`machine_line` before their results and store :func:`describe`
in their JSON output.

    python benchmarks/_machine.py             # the line, at os.cpu_count() threads
    python benchmarks/_machine.py --json      # the same as JSON

NumPy is imported only inside :func:`gemm_peak`: a script that sets the thread counts of
BLAS and Numba through the environment must be able to import this module first.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

# Widest vector instruction set first: the first flag present decides the width.
_VECTOR_FLAGS = (("avx512f", 512, "AVX-512"), ("avx2", 256, "AVX2"), ("avx", 256, "AVX"),
                 ("asimd", 128, "NEON"), ("neon", 128, "NEON"), ("sse2", 128, "SSE2"))


def _cpuinfo(path="/proc/cpuinfo"):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _field(text, *names):
    """The value of the first ``name : value`` line whose name is one of ``names``."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in names:
            return value.strip()
    return ""


def cpu_model(cpuinfo=None):
    """The CPU's marketing name ("AMD EPYC", "Intel(R) Xeon(R) ..."), or the best the platform
    module knows where /proc/cpuinfo has none (macOS, Windows, some ARM kernels)."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    return (_field(text, "model name") or platform.processor() or platform.machine()
            or "unknown CPU")


def vector_isa(cpuinfo=None):
    """``(bits, name)`` of the widest SIMD instruction set the CPU reports, e.g. ``(512,
    "AVX-512")``; ``(None, "unknown")`` without a flags line."""
    text = _cpuinfo() if cpuinfo is None else cpuinfo
    # x86 says "flags", ARM says "Features".
    flags = set(_field(text, "flags", "features").split())
    for flag, bits, name in _VECTOR_FLAGS:
        if flag in flags:
            return bits, name
    return None, "unknown"


def vector_width_bits(cpuinfo=None):
    """512 (avx512f), 256 (avx2), 128 (sse2 or NEON), or None when the flags are unknown."""
    return vector_isa(cpuinfo)[0]


def gemm_peak(repeat=10, n=2048, timer=time.perf_counter):
    """Measured NumPy float32 matmul rate of an ``n`` x ``n`` x ``n`` product, in GFLOP/s, at
    whatever thread count BLAS has: the practical ceiling a convolution lowered to GEMMs can
    reach on this machine. The fastest of ``repeat`` products after one warm-up: other work
    on a shared machine only ever slows a product down, so a median can land far below what
    the cores do (half of it, seen on two shared cores) while a layer timed a second later
    runs at full speed. ``timer=time.process_time`` gives GFLOP per CPU-second, to compare
    with rates on that clock."""
    import numpy as np
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    best = float("inf")
    for _ in range(repeat):
        start = timer()
        a @ a
        best = min(best, timer() - start)
    return 2 * n ** 3 / best / 1e9


def describe(threads, peak=None):
    """The machine as a JSON-ready dict (``peak``: a GEMM rate already measured, in GFLOP/s)."""
    bits, isa = vector_isa()
    return {"cpu_model": cpu_model(), "vector_isa": isa, "vector_width_bits": bits,
            "threads": threads, "gemm_peak_gflops": peak}


def machine_line(info):
    """``machine: AMD EPYC, 2 threads, AVX-512 (512-bit vectors), GEMM peak 202 GFLOP/s``."""
    vectors = (f"{info['vector_isa']} ({info['vector_width_bits']}-bit vectors)"
               if info["vector_width_bits"] else "unknown vector width")
    peak = ("" if info.get("gemm_peak_gflops") is None
            else f", GEMM peak {info['gemm_peak_gflops']:.0f} GFLOP/s")
    return f"machine: {info['cpu_model']}, {info['threads']} threads, {vectors}{peak}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.add_argument("--threads", type=int, default=None,
                   help="the thread count to report; BLAS takes its own from the environment "
                        "(OPENBLAS_NUM_THREADS and friends), so set both alike")
    args = p.parse_args(argv)
    info = describe(args.threads or os.cpu_count(), gemm_peak())
    print(json.dumps(info) if args.json else machine_line(info))


if __name__ == "__main__":
    main()
