"""_workers.map_slices: the worker pool that runs batch slices on every core."""
import threading
import time

import numpy as np
import pytest

from tinygrad_cnn.kernels.cpu import _workers

threadpoolctl = pytest.importorskip("threadpoolctl")


@pytest.fixture
def two_workers(monkeypatch):
    monkeypatch.setattr(_workers, "slice_workers", lambda: 2)


def test_every_slice_once_results_in_slice_order(two_workers):
    calls, lock = [], threading.Lock()

    def fn(index):
        with lock:
            calls.append(index)
        time.sleep(0.0005 * (index % 3))      # uneven slices: workers take them out of order
        return index * index

    slices = list(range(40))
    assert _workers.map_slices(fn, slices, np) == [i * i for i in slices]
    assert sorted(calls) == slices


def test_both_workers_take_slices_with_single_threaded_blas(two_workers):
    names = set()

    def fn(_):
        time.sleep(0.002)                     # lets the second worker start
        names.add(threading.current_thread().name)
        # NumPy's BLAS is loaded before the pool's controller is made, so it is among the
        # libraries the controller limits (a BLAS loaded later, e.g. torch's, is not used).
        return [lib.num_threads for lib in _workers._blas_controller.select(user_api="blas").lib_controllers]

    blas_threads = _workers.map_slices(fn, list(range(20)), np)
    assert len(names) == 2 and all(name.startswith("tinygrad_cnn") for name in names)
    assert all(per_slice and all(count == 1 for count in per_slice) for per_slice in blas_threads)


def test_a_failing_slice_raises_and_the_pool_still_works(two_workers):
    def fn(index):
        if index == 7:
            raise ValueError("slice 7 failed")
        return index

    with pytest.raises(ValueError, match="slice 7 failed"):
        _workers.map_slices(fn, list(range(12)), np)
    assert _workers.map_slices(lambda i: -i, [1, 2, 3], np) == [-1, -2, -3]


def test_one_worker_or_one_slice_is_a_plain_loop(monkeypatch):
    main = threading.current_thread().name
    monkeypatch.setattr(_workers, "slice_workers", lambda: 1)
    assert _workers.map_slices(lambda _: threading.current_thread().name, [0, 1], np) == [main] * 2
    monkeypatch.setattr(_workers, "slice_workers", lambda: 2)
    assert _workers.map_slices(lambda _: threading.current_thread().name, [0], np) == [main]


def test_single_thread_blas_limits_this_threads_blas_and_restores_it():
    # The libraries found when the controller was made (NumPy's BLAS among them; one loaded
    # later, e.g. torch's, is not what our products use).
    with _workers.single_thread_blas():
        pass

    def counts():
        return [lib.num_threads for lib in
                _workers._blas_controller.select(user_api="blas").lib_controllers]

    before = counts()
    if not before:
        pytest.skip("no BLAS library that threadpoolctl can see")
    with _workers.single_thread_blas():
        assert counts() == [1] * len(before)
    assert counts() == before
