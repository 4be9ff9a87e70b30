"""The CPU's matrix product for fully connected layers: ``matmul_2d``, rows split over the
worker pool.

The reference is ``a @ b`` (``tinygrad_cnn/nn/functional/linear.py``). Here the rows of the
result are cut into one contiguous block per worker (:func:`_workers.map_slices`), and each
worker runs a single-threaded GEMM on its block. BLAS's own threads would compute the same
product as fast, but OpenBLAS leaves its extra thread spinning for a while after each call, on
the core the next convolution's batch slices need: with it AlexNet's inference ran at 87.8
images/s, with its threads kept asleep 112.3 (2 cores, docs/performance.md). Products too
small to split run on the calling thread, with one BLAS thread for the same reason.
"""
from __future__ import annotations

import numpy as np

from . import _workers

__all__ = ["matmul_2d", "KERNELS"]

# Below this many multiply-adds a product is not split (a hand-off to the workers costs tens
# of microseconds; ResNet's 64 -> 10 classifier is 82k).
SPLIT_MIN_PRODUCTS = 1 << 22
# Rows per block at least: fewer make GEMMs too skinny for BLAS's blocking.
MIN_ROWS_PER_BLOCK = 32


def matmul_2d(a, b):
    """(M, K) @ (K, N) -> a new C-contiguous (M, N) array, float32 or float64."""
    rows, inner = a.shape
    columns = b.shape[1]
    out = np.empty((rows, columns), dtype=np.result_type(a, b))
    workers = _workers.slice_workers()
    if rows * inner * columns < SPLIT_MIN_PRODUCTS or rows < 2 * MIN_ROWS_PER_BLOCK or workers == 1:
        with _workers.single_thread_blas():
            np.matmul(a, b, out=out)
        return out
    blocks = min(workers, rows // MIN_ROWS_PER_BLOCK)
    size = -(-rows // blocks)

    def run_block(bounds):
        start, stop = bounds
        np.matmul(a[start:stop], b, out=out[start:stop])

    _workers.map_slices(run_block, [(start, min(start + size, rows))
                                    for start in range(0, rows, size)], np)
    return out


KERNELS = {"matmul_2d": matmul_2d}
