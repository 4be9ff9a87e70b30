"""DataLoader: shuffled, augmented mini-batches with background prefetching and resumable order."""
from __future__ import annotations

import queue
import threading

import numpy as np

from .transforms import Transform, get_array_module

__all__ = ["DataLoader"]


def _fresh_seed() -> int:
    try:
        from tinygrad_cnn.random import seed_from_generator
        return int(seed_from_generator())
    except ImportError:  # engine not importable: still give a usable random seed
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0] >> np.uint64(1))


class DataLoader:
    """Iterate over ``dataset`` in mini-batches of ``(images, labels)`` Tensors.

    Args:
        dataset: an array dataset (``.data`` (N, C, H, W) and ``.targets`` (N,), e.g. ``CIFAR10``, ``MNIST``,
            ``ArrayDataset``): batches are sliced from the whole arrays. Any other object with ``__len__``
            and ``__getitem__`` returning ``(image, label)`` also works (one Python call per sample).
        batch_size: samples per batch. drop_last: drop the final short batch.
        shuffle: a new permutation every epoch; otherwise dataset order.
        sampler: an object with ``__iter__`` and ``__len__`` giving the sample indices of an epoch (e.g.
            ``DistributedSampler``); excludes ``shuffle``. Its ``set_epoch(epoch)``, when it has one, is
            called before each epoch, so resumed and later epochs see the sampler's order for them.
        seed: base seed of the order and of the augmentation. ``None`` draws one from the global generator
            (so ``tinygrad_cnn.manual_seed`` makes runs repeatable). Batch ``b`` of epoch ``e`` uses the
            generator ``numpy.random.default_rng([seed, e, 1, b])`` for its transforms and the permutation of
            epoch ``e`` uses ``default_rng([seed, e, 0])``, so results do not depend on prefetching or threads.
        transform: batch transform ``t(x, rng=None)`` (see ``tinygrad_cnn.data.transforms``) applied to whole
            (B, C, H, W) batches after the dataset's own ``transform`` (if any).
        device: "cpu" or "cuda". With "cuda" the whole dataset is uploaded once (CuPy) and batches are
            gathered and transformed on the GPU with the same code as on the CPU.
        prefetch: batches prepared ahead in a background thread (0 = in the calling thread).
        dtype: float dtype of the images. Images that are still integers after the transforms (uint8) are
            converted to ``dtype`` and scaled by 1/255, i.e. to [0, 1]; float results are only cast.

    Yields ``(images (B, C, H', W') float Tensor, labels (B,) int64 Tensor)``.

    Epochs: each full pass increments ``epoch``; ``set_epoch(n)`` selects the epoch explicitly.
    ``state_dict()`` / ``load_state_dict()`` save and restore ``seed``, ``epoch`` and the number of batches
    already delivered in the current epoch, so a resumed run sees exactly the remaining batches, with the
    same augmentation, and then continues with the same later epochs.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None, transform=None,
                 device="cpu", prefetch=2, dtype=np.float32, sampler=None):
        if int(batch_size) < 1:
            raise ValueError(f"DataLoader: batch_size must be >= 1, got {batch_size}")
        if int(prefetch) < 0:
            raise ValueError(f"DataLoader: prefetch must be >= 0, got {prefetch}")
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"DataLoader: dtype must be a float dtype, got {self.dtype}")
        device = str(device).lower()
        if not (device == "cpu" or device.startswith("cuda")):
            raise ValueError(f"DataLoader: device must be 'cpu' or 'cuda', got {device!r}")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
        self.dataset = dataset
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = _fresh_seed() if seed is None else int(seed)
        self.transform = transform
        self.device = "cuda" if device.startswith("cuda") else "cpu"
        self.prefetch = int(prefetch)
        self.epoch = 0
        self._position = 0          # batches delivered in the current epoch
        self._resume_position = 0   # where the next iteration starts (set by load_state_dict)
        self._arrays = None
        self._array_backed = hasattr(dataset, "data") and hasattr(dataset, "targets")

    # ------------------------------------------------------------ bookkeeping
    def __len__(self) -> int:
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (from its first batch)."""
        if int(epoch) < 0:
            raise ValueError(f"DataLoader.set_epoch: epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)
        self._position = self._resume_position = 0

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
        """Sample indices (N,) int64 in the order epoch ``epoch`` (default: the current one) visits them."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self.sampler is not None:
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(epoch)
            return np.fromiter(iter(self.sampler), dtype=np.int64)
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        return np.random.default_rng([self.seed, epoch, 0]).permutation(n).astype(np.int64)

    # ------------------------------------------------------------ batch construction
    def _source(self):
        if self._arrays is None:
            data, targets = np.asarray(self.dataset.data), np.asarray(self.dataset.targets)
            if self.device == "cuda":
                from tinygrad_cnn.backend import to_device
                data, targets = to_device(data, "cuda"), to_device(targets, "cuda")
            self._arrays = (data, targets)
        return self._arrays

    def make_batch(self, epoch, batch_index, indices):
        """The raw ``(images, labels)`` arrays of batch ``batch_index`` of ``epoch`` for ``indices``."""
        rng = np.random.default_rng([self.seed, epoch, 1, batch_index])
        if self._array_backed:
            data, targets = self._source()
            xp = get_array_module(data)
            idx = xp.asarray(indices)
            images, labels = data[idx], targets[idx]
            transforms = (getattr(self.dataset, "transform", None), self.transform)
        else:
            samples = [self.dataset[int(i)] for i in indices]
            images = np.stack([np.asarray(s[0]) for s in samples])
            labels = np.asarray([int(s[1]) for s in samples])
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
        return xp.ascontiguousarray(images), labels.astype(np.int64, copy=False)

    def _wrap(self, images, labels):
        from tinygrad_cnn import Tensor
        return (Tensor(images, dtype=self.dtype, device=self.device),
                Tensor(labels, dtype=np.int64, device=self.device))

    # ------------------------------------------------------------ iteration
    def __iter__(self):
        epoch = self.epoch
        start = self._resume_position
        self._resume_position = 0
        self._position = start
        order = self.order(epoch)
        n_batches = len(self)
        jobs = [(b, order[b * self.batch_size:(b + 1) * self.batch_size]) for b in range(start, n_batches)]
        if self.prefetch == 0:
            for b, idx in jobs:
                images, labels = self.make_batch(epoch, b, idx)
                self._position = b + 1
                yield self._wrap(images, labels)
        else:
            yield from self._prefetched(epoch, jobs)
        self.epoch = epoch + 1
        self._position = 0

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
                    if stop.is_set() or not put(("batch", b, self.make_batch(epoch, b, idx))):
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
                yield self._wrap(*payload)
        finally:
            stop.set()
            while True:  # unblock a producer waiting on a full queue
                try:
                    ready.get_nowait()
                except queue.Empty:
                    break
            worker.join(timeout=10)
