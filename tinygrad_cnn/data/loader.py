"""DataLoader: PyTorch's signature; shuffled, augmented mini-batches loaded in the calling process, a
background thread or worker processes, deterministic under a seed, with a resumable order."""
from __future__ import annotations

import collections.abc
import multiprocessing
import queue
import random as _py_random
import threading
import traceback
from collections import namedtuple

import numpy as np

from .._arguments import is_int
from .transforms import Transform, get_array_module

__all__ = ["DataLoader", "default_collate", "get_worker_info", "WorkerInfo"]

WorkerInfo = namedtuple("WorkerInfo", ["id", "num_workers", "seed", "dataset"])
_worker_info = None


def get_worker_info():
    """In a DataLoader worker process: ``WorkerInfo(id, num_workers, seed, dataset)``; else None."""
    return _worker_info


def _fresh_seed() -> int:
    try:
        from tinygrad_cnn.random import seed_from_generator
        return int(seed_from_generator())
    except ImportError:  # engine not importable: still give a usable random seed
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))


def default_collate(batch):
    """Merge a list of samples into a batch, with PyTorch's rules.

    Tensors and NumPy arrays are stacked into a Tensor (dtype kept); Python floats become a float64
    Tensor, ints an int64 Tensor, bools a bool Tensor; strings stay a list; dicts, named tuples and
    sequences are collated field by field (a tuple sample gives a list, as in PyTorch).
    """
    from tinygrad_cnn.tensor import Tensor
    elem = batch[0]
    if isinstance(elem, Tensor):
        xp = get_array_module(elem.array)
        return Tensor._wrap(xp.stack([t.array for t in batch]))
    if isinstance(elem, np.ndarray):
        if elem.dtype.kind in "OSU":
            raise TypeError(f"default_collate: cannot batch NumPy arrays of dtype {elem.dtype}")
        return Tensor._wrap(np.stack(batch))
    if isinstance(elem, np.generic):
        return Tensor._wrap(np.asarray(batch))
    if isinstance(elem, bool):
        return Tensor._wrap(np.asarray(batch, dtype=np.bool_))
    if isinstance(elem, float):
        return Tensor._wrap(np.asarray(batch, dtype=np.float64))
    if isinstance(elem, int):
        return Tensor._wrap(np.asarray(batch, dtype=np.int64))
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, collections.abc.Mapping):
        return {key: default_collate([d[key] for d in batch]) for key in elem}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):
        return type(elem)(*(default_collate(list(field)) for field in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        if any(len(sample) != len(elem) for sample in batch):
            raise RuntimeError("default_collate: each element in list of batch should be of equal size")
        return [default_collate(list(field)) for field in zip(*batch)]
    raise TypeError(f"default_collate: batch must contain tensors, NumPy arrays, numbers, dicts or lists; "
                    f"found {type(elem).__name__}")


def default_convert(sample):
    """One sample without a batch dimension, as PyTorch's ``default_convert``: NumPy arrays (of
    numbers) become Tensors; numbers, strings and everything else stay as they are; tuples, lists
    and dicts are converted field by field."""
    from tinygrad_cnn.tensor import Tensor
    if isinstance(sample, np.ndarray) and sample.dtype.kind not in "OSU":
        return Tensor._wrap(np.array(sample, copy=True))
    if isinstance(sample, collections.abc.Mapping):
        return {key: default_convert(value) for key, value in sample.items()}
    if isinstance(sample, tuple) and hasattr(sample, "_fields"):
        return type(sample)(*(default_convert(value) for value in sample))
    if isinstance(sample, (tuple, list)):
        return [default_convert(value) for value in sample]
    return sample


def _is_image_label_pair(sample) -> bool:
    from tinygrad_cnn.tensor import Tensor
    return (isinstance(sample, (tuple, list)) and len(sample) == 2
            and isinstance(sample[0], (np.ndarray, Tensor))
            and isinstance(sample[1], (int, np.integer, Tensor)) and not isinstance(sample[1], bool))


def _raw(value):
    return getattr(value, "array", value)


class _BatchMaker:
    """Builds batch ``b`` of an epoch from its indices; the part of a loader that worker processes run."""

    def __init__(self, dataset, transform, dtype, collate_fn, batched=True):
        self.dataset, self.transform, self.dtype, self.collate_fn = dataset, transform, dtype, collate_fn
        self.batched = batched
        self.array_backed = (batched and collate_fn is None
                             and isinstance(getattr(dataset, "data", None), np.ndarray)
                             and hasattr(dataset, "targets"))
        self.device = "cpu"
        self._arrays = None

    def _source(self):
        if self._arrays is None:
            data, targets = np.asarray(self.dataset.data), np.asarray(self.dataset.targets)
            if self.device == "cuda":
                from tinygrad_cnn.backend import to_device
                data, targets = to_device(data, "cuda"), to_device(targets, "cuda")
            self._arrays = (data, targets)
        return self._arrays

    def __call__(self, seed, epoch, batch_index, indices):
        """``("pair", images, labels)`` raw arrays, or ``("collated", batch)`` from a collate function."""
        rng = np.random.default_rng([seed, epoch, 1, batch_index])
        if not self.batched:
            sample = self.dataset[int(indices[0])]
            return ("collated", (self.collate_fn or default_convert)(sample))
        if self.array_backed:
            data, targets = self._source()
            xp = get_array_module(data)
            idx = xp.asarray(indices)
            images, labels = data[idx], targets[idx]
            transforms = (getattr(self.dataset, "transform", None), self.transform)
        else:
            samples = [self.dataset[int(i)] for i in indices]
            if self.collate_fn is not None or not all(_is_image_label_pair(s) for s in samples):
                return ("collated", (self.collate_fn or default_collate)(samples))
            images = np.stack([np.asarray(_raw(s[0])) for s in samples])
            labels = np.asarray([int(_raw(s[1])) for s in samples])
            if self.device == "cuda":
                from tinygrad_cnn.backend import to_device
                images, labels = to_device(images, "cuda"), to_device(labels, "cuda")
            transforms = (self.transform,)
        for t in transforms:
            if t is not None:
                images = t(images, rng=rng) if isinstance(t, Transform) else t(images)
        xp = get_array_module(images)
        if np.issubdtype(images.dtype, np.floating):
            images = images.astype(self.dtype, copy=False)
        else:
            images = images.astype(self.dtype) * self.dtype.type(1.0 / 255.0)
        return ("pair", xp.ascontiguousarray(images), labels.astype(np.int64, copy=False))


def _worker_loop(maker, worker_id, num_workers, seed, worker_init_fn, tasks, results):
    """A worker process: seed, run ``worker_init_fn``, then build the batches it is sent."""
    global _worker_info
    import tinygrad_cnn
    _py_random.seed(seed)
    np.random.seed(seed % 2**32)
    tinygrad_cnn.manual_seed(seed)
    _worker_info = WorkerInfo(worker_id, num_workers, seed, maker.dataset)
    try:
        if worker_init_fn is not None:
            worker_init_fn(worker_id)
    except BaseException as exc:  # reported with the first batch this worker is asked for
        init_error = _describe(exc, worker_id)
    else:
        init_error = None
    while True:
        task = tasks.get()
        if task is None:
            break
        generation, seed_, epoch, b, indices = task
        if init_error is not None:
            results.put((generation, b, "error", init_error))
            continue
        try:
            results.put((generation, b, "ok", maker(seed_, epoch, b, indices)))
        except BaseException as exc:
            results.put((generation, b, "error", _describe(exc, worker_id)))
    # Exiting waits until the results are written: the loader's receiving thread reads until every
    # worker has exited, so the pipe never fills up and no message is cut short.


def _describe(exc, worker_id):
    return (type(exc), f"{exc}\n\nin DataLoader worker process {worker_id}, original traceback:\n"
                       + "".join(traceback.format_exception(exc)))


class _WorkerPool:
    """``num_workers`` processes, each with its own task queue; batch ``b`` goes to worker ``b % n``,
    so which worker builds a batch (and the global random state it sees) is fixed by the order.

    A receiving thread moves finished batches out of the result pipe as soon as they are written, so
    the transfer overlaps the training step instead of happening when the loop asks for the batch.
    Every iteration has its own ``generation`` number: batches of an iteration stopped early that
    arrive later are dropped.
    """

    def __init__(self, loader, seed):
        context = loader.multiprocessing_context
        if context is None:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
        elif isinstance(context, str):
            context = multiprocessing.get_context(context)
        n = loader.num_workers
        self.generation = 0
        self.results = context.Queue()
        self.ready = queue.Queue()
        self.tasks = [context.Queue() for _ in range(n)]
        self.processes = []
        for worker_id in range(n):
            process = context.Process(
                target=_worker_loop, name=f"DataLoader-worker-{worker_id}", daemon=True,
                args=(loader._maker, worker_id, n, (seed + worker_id) % 2**63, loader.worker_init_fn,
                      self.tasks[worker_id], self.results))
            process.start()
            self.processes.append(process)
        self.stopping = threading.Event()
        self.receiver = threading.Thread(target=self._receive, name="DataLoader-receiver", daemon=True)
        self.receiver.start()

    def _receive(self):
        while not self.stopping.is_set():
            try:
                item = self.results.get(timeout=0.1)
            except queue.Empty:
                continue
            except (EOFError, OSError):     # the pool was closed
                return
            if item is None:                # sent by close() once every worker has exited
                return
            self.ready.put(item)

    def new_generation(self):
        self.generation += 1

    def submit(self, seed, epoch, b, indices):
        self.tasks[b % len(self.tasks)].put((self.generation, seed, epoch, b, indices))

    def get(self, timeout):
        """The next finished ``(b, status, payload)`` of this generation; raises if a worker died or
        ``timeout`` passed."""
        waited = 0.0
        while True:
            try:
                generation, b, status, payload = self.ready.get(
                    timeout=1.0 if not timeout else min(1.0, timeout - waited))
            except queue.Empty:
                waited += 1.0
                for process in self.processes:
                    if not process.is_alive():
                        raise RuntimeError(f"DataLoader worker (pid {process.pid}) exited unexpectedly "
                                           f"with exit code {process.exitcode}") from None
                if timeout and waited >= timeout:
                    raise RuntimeError(f"DataLoader timed out after {timeout} seconds") from None
                continue
            if generation == self.generation:
                return b, status, payload

    def close(self):
        for tasks in self.tasks:
            tasks.put(None)
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
        self.stopping.set()
        self.results.put(None)
        self.receiver.join(timeout=5)
        for q in (self.results, *self.tasks):
            q.cancel_join_thread()
            q.close()
        self.processes = []


class DataLoader:
    """Iterate over ``dataset`` in mini-batches, as ``torch.utils.data.DataLoader`` does.

    PyTorch's arguments:
        dataset: a map-style dataset (``__len__`` and ``__getitem__``). Two kinds:

            * array datasets (``.data`` (N, C, H, W) NumPy array and ``.targets`` (N,), e.g. ``CIFAR10``,
              ``MNIST``, ``ArrayDataset``, their ``Subset``): batches are sliced from the whole arrays;
            * any other dataset: ``dataset[i]`` per sample, merged by ``collate_fn`` (default
              :func:`default_collate`, PyTorch's rules).

            Either way, batches of ``(image, label)`` pairs come out as ``(images, labels)`` Tensors:
            images (B, C, H, W) of ``dtype`` (integer images, i.e. uint8, scaled by 1/255 to [0, 1]),
            labels (B,) int64. With a ``collate_fn`` its result is returned as it is.
        batch_size, drop_last: samples per batch (a positive int; ``None`` turns batching off: each
            sample comes out alone through ``default_convert``, and ``drop_last`` must be False); drop the
            final short batch.
        shuffle: a new permutation every epoch (seeded, see ``seed``); otherwise dataset order.
        sampler: an iterable of indices with ``__len__`` (e.g. ``SubsetRandomSampler``, a distributed
            sampler) giving the order instead of ``shuffle``; ``set_epoch`` is passed on to it.
        batch_sampler: an iterable of index lists, one per batch (excludes batch_size, shuffle, sampler,
            drop_last).
        num_workers: 0 builds batches here (ahead of time in one background thread, see ``prefetch``);
            N > 0 builds them in N worker processes (``fork`` where the platform has it). Batch ``b`` is
            always built by worker ``b % N``, and each worker seeds Python's ``random``, NumPy's global
            generator and ``tinygrad_cnn``'s with ``base_seed + worker_id`` (``base_seed`` from ``seed``
            and the epoch the workers started in), then calls ``worker_init_fn(worker_id)``: a run is
            repeatable for a given seed and ``num_workers``.
        collate_fn, worker_init_fn, timeout, multiprocessing_context: as in PyTorch.
        generator: a ``tinygrad_cnn.Generator`` (or NumPy generator) to draw ``seed`` from.
        prefetch_factor: batches each worker prepares ahead (default 2).
        persistent_workers: keep the worker processes between epochs.
        pin_memory, pin_memory_device: accepted; host memory is not pinned here (a no-op on the CPU;
            with ``device="cuda"`` batches are copied to the GPU by the loader itself).

    Our own arguments (keywords):
        seed: base seed of the order and of the augmentation. ``None`` draws one from ``generator`` or
            the global generator (so ``tinygrad_cnn.manual_seed`` makes runs repeatable). Batch ``b`` of
            epoch ``e`` uses ``numpy.random.default_rng([seed, e, 1, b])`` for its transforms and the
            permutation of epoch ``e`` uses ``default_rng([seed, e, 0])``, so results do not depend on
            prefetching, threads or the number of workers.
        transform: batch transform ``t(x, rng=None)`` (see ``tinygrad_cnn.data.transforms``) applied to whole
            (B, C, H, W) batches after the dataset's own ``transform`` (if any).
        device: "cpu" or "cuda". With "cuda" an array dataset is uploaded once (CuPy) and batches are
            gathered and transformed on the GPU (``num_workers`` must then be 0).
        prefetch: with ``num_workers=0``, batches prepared ahead in a background thread (0 = none).
        dtype: float dtype of the images; float images are cast to it.

    Epochs: each full pass increments ``epoch``; ``set_epoch(n)`` selects the epoch explicitly.
    ``state_dict()`` / ``load_state_dict()`` save and restore ``seed``, ``epoch`` and the number of batches
    already delivered in the current epoch, so a resumed run sees exactly the remaining batches, with the
    same augmentation, and then continues with the same later epochs.
    """

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None, num_workers=0,
                 collate_fn=None, pin_memory=False, drop_last=False, timeout=0, worker_init_fn=None,
                 multiprocessing_context=None, generator=None, *, prefetch_factor=None,
                 persistent_workers=False, pin_memory_device="", in_order=True, seed=None, transform=None,
                 device="cpu", prefetch=2, dtype=np.float32):
        if batch_size is not None and (not is_int(batch_size) or batch_size < 1):
            # 2.5 would silently become 2 under int(); PyTorch refuses it too.
            raise ValueError(f"DataLoader: batch_size should be a positive integer value or None, "
                             f"got batch_size={batch_size!r}")
        if batch_size is None and batch_sampler is None and drop_last:
            raise ValueError("DataLoader: batch_size=None (no batching) is mutually exclusive with drop_last")
        if int(prefetch) < 0:
            raise ValueError(f"DataLoader: prefetch must be >= 0, got {prefetch}")
        if int(num_workers) < 0:
            raise ValueError(f"DataLoader: num_workers must be >= 0, got {num_workers}")
        if float(timeout) < 0:
            raise ValueError(f"DataLoader: timeout must be >= 0, got {timeout}")
        if prefetch_factor is not None and (int(num_workers) == 0 or int(prefetch_factor) < 1):
            raise ValueError(f"DataLoader: prefetch_factor ({prefetch_factor}) needs num_workers > 0 and must "
                             "be >= 1")
        if persistent_workers and int(num_workers) == 0:
            raise ValueError("DataLoader: persistent_workers option needs num_workers > 0")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None and (batch_size != 1 or shuffle or sampler is not None or drop_last):
            raise ValueError("DataLoader: batch_sampler option is mutually exclusive with batch_size, "
                             "shuffle, sampler, and drop_last")
        if not in_order:
            raise ValueError("DataLoader: in_order=False is not supported (batches always come in order)")
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"DataLoader: dtype must be a float dtype, got {self.dtype}")
        device = str(device).lower()
        if not (device == "cpu" or device.startswith("cuda")):
            raise ValueError(f"DataLoader: device must be 'cpu' or 'cuda', got {device!r}")
        if device.startswith("cuda") and int(num_workers) > 0:
            raise ValueError("DataLoader: device='cuda' gathers batches on the GPU in this process; "
                             "use num_workers=0 with it")
        self.dataset = dataset
        self.batch_size = None if batch_sampler is not None or batch_size is None else int(batch_size)
        # batch_size=None: each sample comes out alone, arrays turned into Tensors (PyTorch's
        # "automatic batching disabled").
        self.batched = batch_size is not None or batch_sampler is not None
        self.shuffle = bool(shuffle)
        self.sampler, self.batch_sampler = sampler, batch_sampler
        self.drop_last = bool(drop_last)
        self.num_workers = int(num_workers)
        self.collate_fn = collate_fn
        self.pin_memory, self.pin_memory_device = bool(pin_memory), pin_memory_device
        self.timeout = float(timeout)
        self.worker_init_fn = worker_init_fn
        self.multiprocessing_context = multiprocessing_context
        self.generator = generator
        self.prefetch_factor = 2 if prefetch_factor is None and self.num_workers else prefetch_factor
        self.persistent_workers = bool(persistent_workers)
        if seed is None:
            seed = _fresh_seed() if generator is None else int(generator.integers(0, 2**63 - 1))
        self.seed = int(seed)
        self.transform = transform
        self.device = "cuda" if device.startswith("cuda") else "cpu"
        self.prefetch = int(prefetch)
        self.epoch = 0
        self._position = 0          # batches delivered in the current epoch
        self._resume_position = 0   # where the next iteration starts (set by load_state_dict)
        self._maker = _BatchMaker(dataset, transform, self.dtype, collate_fn, batched=self.batched)
        self._maker.device = self.device
        self._pool = None

    # ------------------------------------------------------------ bookkeeping
    def __len__(self) -> int:
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)
        if not self.batched:
            return n
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (from its first batch); tells the samplers too."""
        if int(epoch) < 0:
            raise ValueError(f"DataLoader.set_epoch: epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)
        self._position = self._resume_position = 0
        for sampler in (self.sampler, self.batch_sampler):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(self.epoch)

    def state_dict(self) -> dict:
        """``{"seed", "epoch", "position"}`` as plain ints (npz/json safe)."""
        epoch, position = self.epoch, self._position
        if position >= len(self):
            epoch, position = epoch + 1, 0
        return {"seed": int(self.seed), "epoch": int(epoch), "position": int(position)}

    def load_state_dict(self, state) -> None:
        """Restore a ``state_dict``; the next iteration resumes after the batches already delivered."""
        try:
            seed, epoch, position = (int(np.asarray(state[k])) for k in ("seed", "epoch", "position"))
        except KeyError as exc:
            raise KeyError(f"DataLoader.load_state_dict: missing key {exc}; expected seed, epoch, position") from None
        if epoch < 0 or not 0 <= position <= len(self):
            raise ValueError(f"DataLoader.load_state_dict: bad epoch {epoch} / position {position} "
                             f"(loader has {len(self)} batches)")
        self.seed, self.epoch = seed, epoch
        self._position = self._resume_position = position

    def order(self, epoch=None) -> np.ndarray:
        """Sample indices (N,) int64 in the order epoch ``epoch`` (default: the current one) visits them.

        With a ``sampler`` this is one pass over it, after ``sampler.set_epoch(epoch)`` when it has one.
        """
        epoch = self.epoch if epoch is None else int(epoch)
        if self.sampler is not None:
            if hasattr(self.sampler, "set_epoch"):
                # The loader counts epochs (and restores the count on resume), so it tells the
                # sampler; a script that also calls sampler.set_epoch(e) passes the same e.
                self.sampler.set_epoch(epoch)
            return np.fromiter((int(i) for i in self.sampler), dtype=np.int64)
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        return np.random.default_rng([self.seed, epoch, 0]).permutation(n).astype(np.int64)

    def _batches(self, epoch):
        """Index arrays of the batches of ``epoch``, in order."""
        if self.batch_sampler is not None:
            return [np.asarray(list(b), dtype=np.int64) for b in self.batch_sampler]
        order = self.order(epoch)
        size = self.batch_size if self.batched else 1
        return [order[b * size:(b + 1) * size] for b in range(len(self))]

    # ------------------------------------------------------------ batch construction
    def make_batch(self, epoch, batch_index, indices):
        """The raw ``(images, labels)`` arrays of batch ``batch_index`` of ``epoch`` for ``indices``
        (for a ``collate_fn``, or samples that are not image/label pairs: the collated batch)."""
        result = self._maker(self.seed, epoch, batch_index, indices)
        return result[1:] if result[0] == "pair" else result[1]

    def _deliver(self, result):
        if result[0] == "collated":
            return result[1]
        from tinygrad_cnn import Tensor
        _, images, labels = result
        # Both arrays are fresh (gathered, stacked or received from a worker): wrap, don't copy.
        return Tensor._wrap(images), Tensor._wrap(labels)

    # ------------------------------------------------------------ iteration
    def __iter__(self):
        epoch = self.epoch
        start = self._resume_position
        self._resume_position = 0
        self._position = start
        batches = self._batches(epoch)
        jobs = [(b, idx) for b, idx in enumerate(batches) if b >= start]
        if self.num_workers > 0:
            yield from self._from_workers(epoch, jobs)
        elif self.prefetch == 0:
            for b, idx in jobs:
                result = self._maker(self.seed, epoch, b, idx)
                self._position = b + 1
                yield self._deliver(result)
        else:
            yield from self._prefetched(epoch, jobs)
        self.epoch = epoch + 1
        self._position = 0

    def _from_workers(self, epoch, jobs):
        pool = self._pool
        if pool is None:
            base_seed = int(np.random.SeedSequence([self.seed, epoch, 2]).generate_state(1, np.uint64)[0] >> 1)
            pool = _WorkerPool(self, base_seed)
            if self.persistent_workers:
                self._pool = pool
        pool.new_generation()
        try:
            ahead = self.prefetch_factor * self.num_workers
            pending = {}
            submitted = 0
            for b, idx in jobs[:ahead]:
                pool.submit(self.seed, epoch, b, idx)
                submitted += 1
            for b, _ in jobs:
                while b not in pending:
                    got, status, payload = pool.get(self.timeout)
                    pending[got] = (status, payload)
                status, payload = pending.pop(b)
                if submitted < len(jobs):
                    nb, idx = jobs[submitted]
                    pool.submit(self.seed, epoch, nb, idx)
                    submitted += 1
                if status == "error":
                    kind, message = payload
                    try:
                        error = kind(message)
                    except Exception:
                        error = RuntimeError(message)
                    raise error
                self._position = b + 1
                yield self._deliver(payload)
        finally:
            if pool is not self._pool:
                pool.close()

    def __del__(self):
        pool = getattr(self, "_pool", None)
        if pool is not None:
            try:
                pool.close()
            except Exception:  # interpreter shutting down
                pass

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_pool"] = None
        return state

    def _prefetched(self, epoch, jobs):
        ready = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(item):
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        def produce():
            try:
                for b, idx in jobs:
                    if stop.is_set() or not put(("batch", b, self._maker(self.seed, epoch, b, idx))):
                        return
                put(("end", None, None))
            except BaseException as exc:  # handed to the consumer, which re-raises it
                put(("error", None, exc))

        worker = threading.Thread(target=produce, name="DataLoader-prefetch", daemon=True)
        worker.start()
        try:
            while True:
                kind, b, payload = ready.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise payload
                self._position = b + 1
                yield self._deliver(payload)
        finally:
            stop.set()
            while True:  # unblock a producer waiting on a full queue
                try:
                    ready.get_nowait()
                except queue.Empty:
                    break
            worker.join(timeout=10)
