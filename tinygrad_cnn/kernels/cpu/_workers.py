"""The CPU's worker pool and memory tuning, used by the sliced convolution.

* :func:`map_slices` runs independent batch slices on one worker per core, each with
  single-threaded BLAS and Numba, so a slice's GEMM never waits for other threads.
* :data:`CPU_CHUNK_BYTES` is the size of a slice's temporary (its column matrix).
* ``mallopt`` tuning keeps freed activation buffers mapped (see
  :func:`_keep_freed_memory_mapped`); it applies once this module is imported, i.e. when
  the CPU kernels are first loaded.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import os
import sys
import threading

import numpy as np

__all__ = ["CPU_CHUNK_BYTES", "MALLOC_TUNED", "chunk_bytes", "map_slices", "single_thread_blas",
           "slice_workers"]


def _keep_freed_memory_mapped():
    """Let glibc's malloc recycle freed activation buffers instead of unmapping them.

    A training step frees and re-allocates the same few-MiB arrays hundreds of times.
    By default glibc returns large blocks to the OS and every new array is page-faulted
    in again (the kernel zeroes each page); raising the mmap and trim thresholds keeps
    them in the heap, like the caching allocators of other frameworks. Measured 10-15%
    per ResNet-20 step on 2 cores. Memory is returned to the OS later. Arrays from 16 MiB
    up are still mapped and unmapped each time: kept in the heap, VGG-16's 25-51 MB
    activations fragmented it and raised its peak memory by 100-200 MiB (7%), while every
    ResNet-20 array and convolution slice is below that size (the speed is the same with a
    64 MiB threshold). Opt out with TINYGRAD_CNN_MALLOC_TUNING=0. Only on Linux with glibc."""
    if os.environ.get("TINYGRAD_CNN_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 16 << 20)) and \
            bool(libc.mallopt(m_trim_threshold, 512 << 20))
    except (OSError, AttributeError):
        return False


MALLOC_TUNED = _keep_freed_memory_mapped()

# Ops whose backward builds a large temporary (the im2col column matrix) process the batch
# in slices of about this many bytes of temporary on the CPU: a slice stays in the cache
# between being written and being read by the GEMM, and its buffer is recycled by the
# allocator instead of being mapped fresh (and page-faulted) at every call. A GPU has
# the memory bandwidth and wants the largest launches, so it takes the whole batch.
CPU_CHUNK_BYTES = 1 << 20


def chunk_bytes(xp) -> int | None:
    """Target size of a per-slice temporary for array module ``xp``; None = no slicing."""
    return CPU_CHUNK_BYTES if xp is np else None


_slice_pool = None
_blas_controller = None
_slice_pool_lock = threading.Lock()
_blas_controller_lock = threading.Lock()


# os.cpu_count() reads /sys on every call (10 us, 2 ms per ResNet-56 step); the cores stay.
_CPU_COUNT = os.cpu_count() or 1


def slice_workers() -> int:
    """Number of CPU workers :func:`map_slices` uses (env TINYGRAD_CNN_NUM_THREADS, read at
    each call; the number of cores by default)."""
    return max(1, int(os.environ.get("TINYGRAD_CNN_NUM_THREADS", _CPU_COUNT)))


def _single_thread_worker():
    # Inside a worker, kernels and BLAS run on one thread each: the workers already
    # occupy every core, and nested thread pools would only fight over them.
    try:
        import numba
    except ImportError:
        return
    numba.set_num_threads(1)              # thread-local in Numba


def map_slices(fn, slices, xp=np):
    """``[fn(s) for s in slices]``, run by one worker per core on the CPU.

    Slices of a batch are independent, so each worker takes whole slices with
    single-threaded BLAS and kernels: one hand-off per call instead of a
    synchronisation inside every GEMM and kernel (which on a busy machine waits for
    the slowest thread each time). Results come back in slice order, so any sum
    over them is deterministic. On the GPU, or with one slice or one core, it is a
    plain loop."""
    global _slice_pool
    workers = slice_workers()
    if xp is not np or workers == 1 or len(slices) < 2:
        return [fn(s) for s in slices]
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:               # without it BLAS would oversubscribe the cores
        return [fn(s) for s in slices]
    with _slice_pool_lock:
        if _slice_pool is None:
            _slice_pool = concurrent.futures.ThreadPoolExecutor(
                workers, thread_name_prefix="tinygrad_cnn", initializer=_single_thread_worker)
        with single_thread_blas():
            return _run_on_workers(fn, slices, workers)


def single_thread_blas():
    """A context in which BLAS calls run on one thread: the workers of :func:`map_slices`,
    and the small products the main thread makes between parallel sections (the Winograd
    filter transforms). With BLAS's own threads, OpenBLAS leaves its other thread spinning
    for a while after the call, on the core the next :func:`map_slices` needs. Measured:
    ResNet-20 inference's stage-2 and stage-3 convolutions took 2x their isolated time, and
    so did the convolution after them, until these products ran on one thread."""
    global _blas_controller
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return contextlib.nullcontext()
    with _blas_controller_lock:
        if _blas_controller is None:
            # Finding the BLAS libraries scans every loaded library (about 1 ms); done once,
            # a limit costs microseconds.
            _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=1, user_api="blas")


def _run_on_workers(fn, slices, workers):
    """One task per worker, each taking the next slice from a shared counter until none
    is left. A task per slice cost a future and a queue hand-off each, tens of
    microseconds under the GIL: 18% of a ResNet-20 stage-1 convolution, which has 64
    slices. The counter still balances the load when one core is slowed by other work."""
    next_index = itertools.count().__next__        # atomic under the GIL
    results = [None] * len(slices)

    def work():
        while (index := next_index()) < len(slices):
            results[index] = fn(slices[index])

    tasks = [_slice_pool.submit(work) for _ in range(min(workers, len(slices)))]
    for task in tasks:
        task.result()                               # re-raises a worker's exception
    return results
