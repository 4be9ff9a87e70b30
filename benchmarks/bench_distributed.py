"""Data-parallel scaling on one machine: threads vs processes, next to PyTorch's DistributedDataParallel.

    python benchmarks/bench_distributed.py                 # ResNet-20, global batch 128, 2 cores
    python benchmarks/bench_distributed.py --rounds 3 --steps 10

Configurations, for each framework (ours: MPI through mpi4py; PyTorch: its ``gloo`` backend):

* ``1x1``: one process, one thread (the unit the others are compared with);
* ``1x2``: one process, two threads (Numba and BLAS threads for us, ``torch.set_num_threads``);
* ``2x1``: two processes of one thread each, each with half of every batch, gradients averaged by
  ``DistributedDataParallel``.

One step is forward, cross-entropy, backward (with the gradient all-reduce in ``2x1``) and an SGD
momentum update on random CIFAR-shaped float32 data, after warm-up. Reported: images/s of the global
batch (median over rounds, and the best round: on a machine shared with other work the best round is
the closest to an unloaded machine), the CPU time all processes together spent per image (steadier than
wall time when other work shares the cores; MPI's shared-memory transport polls while it waits, so
waiting for the other rank counts too), the scaling efficiency ``images/s / (cores x images/s of 1x1)``, and for
``2x1`` the communication cost per step measured two ways: the same steps under ``no_sync()`` (no
all-reduce) are faster by the *overhead*; and, for us, the time spent inside the all-reduce calls
(which includes waiting for the slower rank). The frameworks alternate within each round, so a machine
that slows down affects both.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_train import _thread_env, _torch_resnet  # noqa: E402

CONFIGS = ((1, 1), (1, 2), (2, 1))   # (processes, threads per process)


# ---------------------------------------------------------------------------
# child side: one rank
# ---------------------------------------------------------------------------

def _launch_rank_and_world():
    """Rank and world size as the MPI launcher set them (1 process when started plainly)."""
    for rank_var, size_var in (("PMI_RANK", "PMI_SIZE"), ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE")):
        if size_var in os.environ:
            return int(os.environ[rank_var]), int(os.environ[size_var])
    return 0, 1


def _ours(images, labels, threads):
    import tinygrad_cnn as tg
    from tinygrad_cnn import distributed as dist
    from tinygrad_cnn import models, nn, optim
    rank, world = _launch_rank_and_world()
    tg.manual_seed(0)
    model = models.resnet20()
    wrapped = model
    if world > 1:
        dist.init_process_group("mpi")
        wrapped = nn.parallel.DistributedDataParallel(model)
    x, y = tg.Tensor(images), tg.Tensor(labels)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(wrapped(x), y).backward()
        opt.step()

    def comm_seconds():
        return wrapped.comm_seconds if world > 1 else 0.0

    def barrier():
        if world > 1:
            dist.barrier()
    return rank, world, model.train(), wrapped, step, comm_seconds, barrier


def _torch(images, labels, threads, port):
    import torch
    import torch.distributed as tdist
    from torch.nn.parallel import DistributedDataParallel
    rank, world = _launch_rank_and_world()
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = _torch_resnet(20)
    wrapped = model
    if world > 1:
        tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        wrapped = DistributedDataParallel(model)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(wrapped(x), y).backward()
        opt.step()

    def barrier():
        if world > 1:
            tdist.barrier()
    return rank, world, model.train(), wrapped, step, lambda: float("nan"), barrier


def _child(framework, batch_size, steps, warmup, threads, port, result_dir):
    import numpy as np
    rank, world = _launch_rank_and_world()
    rng = np.random.default_rng(rank)
    share = batch_size // world
    images = rng.standard_normal((share, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, share)
    if framework == "torch":
        rank, world, model, wrapped, step, comm_seconds, barrier = _torch(images, labels, threads, port)
    else:
        rank, world, model, wrapped, step, comm_seconds, barrier = _ours(images, labels, threads)

    def timed(n):
        barrier()
        comm_before, start, cpu_start = comm_seconds(), time.perf_counter(), time.process_time()
        for _ in range(n):
            step()
        barrier()
        return time.perf_counter() - start, comm_seconds() - comm_before, time.process_time() - cpu_start

    for _ in range(warmup):
        step()
    seconds, comm, cpu = timed(steps)
    result = {"framework": framework, "rank": rank, "world": world, "threads": threads,
              "images_per_s": batch_size * steps / seconds, "step_ms": 1e3 * seconds / steps,
              "cpu_ms_per_image": 1e3 * cpu / (batch_size * steps)}
    if world > 1:
        with wrapped.no_sync():
            local, _, _ = timed(steps)
        result.update(no_sync_step_ms=1e3 * local / steps, allreduce_ms=1e3 * comm / steps)
    with open(os.path.join(result_dir, f"rank{rank}.json"), "w") as f:   # the parent adds up the CPU times
        json.dump(result, f)


# ---------------------------------------------------------------------------
# parent side
# ---------------------------------------------------------------------------

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mpiexec():
    from tinygrad_cnn.testing import find_mpiexec
    path = find_mpiexec()
    if path is None:
        raise SystemExit('error: mpiexec not found; pip install -e ".[distributed]"')
    return path


def _run(framework, processes, threads, args):
    with tempfile.TemporaryDirectory() as result_dir:
        child = [sys.executable, __file__, "--child", framework, "--batch-size", str(args.batch_size), "--steps",
                 str(args.steps), "--warmup", str(args.warmup), "--threads", str(threads), "--port",
                 str(_free_port()), "--result-dir", result_dir]
        cmd = child if processes == 1 else [_mpiexec(), "-n", str(processes), *child]
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **_thread_env(threads)),
                             timeout=1200)
        if out.returncode != 0:
            raise RuntimeError(f"{framework} {processes}x{threads} failed:\n{out.stdout[-2000:]}\n"
                               f"{out.stderr[-3000:]}")
        ranks = []
        for rank in range(processes):
            with open(os.path.join(result_dir, f"rank{rank}.json")) as f:
                ranks.append(json.load(f))
    result = ranks[0]
    result["cpu_ms_per_image"] = sum(r["cpu_ms_per_image"] for r in ranks)
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=128, help="global batch (split over the processes)")
    p.add_argument("--steps", type=int, default=8, help="timed steps per configuration and round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--child", choices=("ours", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--result-dir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _child(args.child, args.batch_size, args.steps, args.warmup, args.threads, args.port, args.result_dir)
        return None
    frameworks = ["ours"] if args.no_torch else ["ours", "torch"]
    runs = {}
    for r in range(args.rounds):
        for processes, threads in CONFIGS:
            for framework in frameworks:
                result = _run(framework, processes, threads, args)
                runs.setdefault((framework, processes, threads), []).append(result)
                print(f"round {r + 1}: {framework} {processes}x{threads}: {result['images_per_s']:.1f} images/s",
                      file=sys.stderr, flush=True)
    print(f"ResNet-20, global batch {args.batch_size}, {args.steps} timed steps x {args.rounds} rounds "
          f"(efficiency = images/s / (cores x 1x1 images/s), from the medians; step times are medians)")
    print("| framework | processes x threads | images/s median | images/s best | efficiency | CPU ms/image | "
          "CPU efficiency | step ms | no_sync step ms | all-reduce overhead ms/step | time in all-reduce ms/step |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for framework in frameworks:
        base = statistics.median(r["images_per_s"] for r in runs[(framework, 1, 1)])
        base_cpu = statistics.median(r["cpu_ms_per_image"] for r in runs[(framework, 1, 1)])
        for processes, threads in CONFIGS:
            rs = runs[(framework, processes, threads)]
            ips = statistics.median(r["images_per_s"] for r in rs)
            best = max(r["images_per_s"] for r in rs)
            cpu = statistics.median(r["cpu_ms_per_image"] for r in rs)
            eff = ips / (processes * threads * base)
            summary[(framework, processes, threads)] = eff
            step = statistics.median(r["step_ms"] for r in rs)
            if processes > 1:
                local = statistics.median(r["no_sync_step_ms"] for r in rs)
                inside = statistics.median(r["allreduce_ms"] for r in rs)
                extra = f"{local:.0f} | {step - local:.1f} | " + ("-" if inside != inside else f"{inside:.1f}")
            else:
                extra = "- | - | -"
            name = "tinygrad_cnn (MPI)" if framework == "ours" else "PyTorch (gloo)"
            print(f"| {name} | {processes}x{threads} | {ips:.0f} | {best:.0f} | {eff:.2f} | {cpu:.2f} | "
                  f"{base_cpu / cpu:.2f} | {step:.0f} | {extra} |")
    if not args.no_torch:
        print(f"2x1 efficiency ratio ours / PyTorch: {summary[('ours', 2, 1)] / summary[('torch', 2, 1)]:.2f}; "
              f"2x1 vs 1x2 images/s: ours {summary[('ours', 2, 1)] / summary[('ours', 1, 2)]:.2f}, "
              f"PyTorch {summary[('torch', 2, 1)] / summary[('torch', 1, 2)]:.2f}")
    return summary


if __name__ == "__main__":
    main()
