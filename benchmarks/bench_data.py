"""Throughput of the CIFAR-10 input pipeline (batch 128, random crop + flip + normalise).

Reports images/s for the transforms alone, for the DataLoader without prefetching, with a
background prefetch thread, and with worker processes (``--num-workers``, CPU only). Then it times a few real training steps (forward + backward + SGD update)
of a CIFAR ResNet (ResNet-20 by default) on the same batches and prints the ratio of the two rates: the
pipeline must deliver batches at least 10x faster than the model consumes them, so that input work
(which the prefetch thread overlaps with compute anyway) never limits training.

    python benchmarks/bench_data.py [--batch-size 128] [--epochs 2] [--device cpu] [--model-depth 20]
    python benchmarks/bench_data.py --model-steps 0          # the pipeline only

Rates are wall-clock images/s measured one after the other in the same process, so on a busy machine
both are slowed alike; the script also prints the CPU seconds each side used.

Uses the CIFAR-10 copy found by ``tinygrad_cnn.data.find_shared_data`` (the partial subset is fine for
timing), else synthetic uint8 images of the same shape.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from tinygrad_cnn.data import ArrayDataset, CIFAR10, DataLoader, find_shared_data
from tinygrad_cnn.data import transforms as T

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


def load_dataset():
    for name in ("cifar-10-batches-bin", "cifar-10-partial-bin"):
        folder = find_shared_data(name)
        if folder is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return CIFAR10(folder, train=True, verify=False), str(folder)
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (10000, 3, 32, 32), dtype=np.uint8)
    return ArrayDataset(data, rng.integers(0, 10, 10000)), "synthetic (no CIFAR-10 copy found)"


def pipeline():
    return T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToFloat(),
                      T.Normalize(CIFAR_MEAN, CIFAR_STD)])


def time_transforms(dataset, batch_size, epochs):
    aug = pipeline()
    rng = np.random.default_rng(0)
    aug(dataset.data[:batch_size], rng=rng)  # warm-up
    images = 0
    start = time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(len(dataset))
        for b in range(0, len(order) - batch_size + 1, batch_size):
            aug(dataset.data[order[b:b + batch_size]], rng=rng)
            images += batch_size
    return images / (time.perf_counter() - start)


def time_loader(dataset, batch_size, epochs, prefetch, device, consume_s=0.0, num_workers=0):
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, seed=0,
                        transform=pipeline(), prefetch=prefetch, device=device, num_workers=num_workers,
                        persistent_workers=num_workers > 0)
    next(iter(loader))  # warm-up (and the one-time upload for device="cuda")
    loader.set_epoch(0)
    images = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for x, _ in loader:
            images += x.shape[0]
            if consume_s:
                time.sleep(consume_s)  # stands in for a training step
    return images / (time.perf_counter() - start)


def time_model(dataset, batch_size, depth, steps, device):
    """Wall and CPU images/s of ``steps`` ResNet training steps (after one warm-up step)."""
    import tinygrad_cnn
    from tinygrad_cnn import models, nn, optim
    tinygrad_cnn.manual_seed(0)
    model = models.cifar_resnet(depth)
    if device != "cpu":
        model.to(device)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    criterion = nn.CrossEntropyLoss()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, seed=0,
                        transform=pipeline(), prefetch=0, device=device)
    batches = iter(loader)
    batch = [next(batches) for _ in range(steps + 1)]

    def step(images, labels):
        loss = criterion(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.item())  # forces the device to finish

    step(*batch[0])  # warm-up: kernel compilation and first-touch allocations
    wall, cpu = time.perf_counter(), time.process_time()
    for images, labels in batch[1:]:
        step(images, labels)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    images = steps * batch_size
    return images / wall, images / max(cpu, 1e-9)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--step-ms", type=float, default=20.0,
                        help="simulated training-step time for the overlap measurement")
    parser.add_argument("--model-depth", type=int, default=20, help="CIFAR ResNet depth for the consumption rate")
    parser.add_argument("--model-steps", type=int, default=3, help="timed training steps (0: skip the model)")
    parser.add_argument("--num-workers", type=int, default=2, help="worker processes for the worker rows (0: skip)")
    args = parser.parse_args()

    dataset, source = load_dataset()
    cpu_start = time.process_time()
    print(f"dataset: {source}, {len(dataset)} images; batch {args.batch_size}; "
          f"pipeline: RandomCrop(32, 4) + RandomHorizontalFlip + ToFloat + Normalize; device {args.device}")
    rows = [("transforms only (no loader)", time_transforms(dataset, args.batch_size, args.epochs))]
    rows.append(("DataLoader prefetch=0", time_loader(dataset, args.batch_size, args.epochs, 0, args.device)))
    rows.append(("DataLoader prefetch=2", time_loader(dataset, args.batch_size, args.epochs, 2, args.device)))
    workers = args.num_workers if args.device == "cpu" else 0
    if workers:
        rows.append((f"DataLoader num_workers={workers}",
                     time_loader(dataset, args.batch_size, args.epochs, 2, args.device, num_workers=workers)))
    step = args.step_ms / 1000
    for prefetch in (0, 2):
        wall = time_loader(dataset, args.batch_size, args.epochs, prefetch, args.device, consume_s=step)
        rows.append((f"with a {args.step_ms:.0f} ms step, prefetch={prefetch} (images/s of the loop)", wall))
    if workers:
        wall = time_loader(dataset, args.batch_size, args.epochs, 2, args.device, consume_s=step,
                           num_workers=workers)
        rows.append((f"with a {args.step_ms:.0f} ms step, num_workers={workers} (images/s of the loop)", wall))
    width = max(len(name) for name, _ in rows)
    for name, rate in rows:
        print(f"  {name:<{width}}  {rate:10.0f} images/s  ({rate / args.batch_size:7.1f} batches/s)")
    pipeline_cpu = time.process_time() - cpu_start
    if args.model_steps <= 0:
        return
    model_rate, model_cpu_rate = time_model(dataset, args.batch_size, args.model_depth, args.model_steps,
                                            args.device)
    deliver = rows[2][1]  # DataLoader with prefetching
    ratio = deliver / model_rate
    print(f"  ResNet-{args.model_depth} training ({args.model_steps} steps of batch {args.batch_size}) consumes "
          f"{model_rate:10.1f} images/s wall ({model_cpu_rate:.1f} images per CPU second)")
    print(f"  pipeline / model = {ratio:.0f}x -> {'OK' if ratio >= 10 else 'TOO SLOW'} (required: >= 10x); "
          f"all pipeline measurements above took {pipeline_cpu:.1f} CPU seconds")
    return ratio


if __name__ == "__main__":
    main()
