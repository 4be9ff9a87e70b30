"""Training and inference throughput of CIFAR ResNets, next to PyTorch on the same machine.

    python benchmarks/bench_train.py                      # ResNet-20, batch 128, vs torch
    python benchmarks/bench_train.py --depth 56 --rounds 3
    python benchmarks/bench_train.py --profile            # time per op of one training step

One *step* is forward, cross-entropy, backward and an SGD momentum update, at batch
``--batch-size`` on random CIFAR-shaped float32 data, after warm-up. Each measurement
runs in a fresh child process (so its peak resident memory is its own), and the
frameworks alternate round by round (ours, torch, ours, torch, ...), so a machine that
slows down mid-run affects both. Both use ``--threads`` threads (Numba and BLAS for us,
``torch.set_num_threads`` for PyTorch). Reported: median images/s over the timed steps of
all rounds, peak RSS of the child, and the ratio ours / torch.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------------------
# child side
# ---------------------------------------------------------------------------

def _peak_rss_mib():
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB


def _current_rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _torch_resnet(depth, num_classes=10):
    """The same CIFAR ResNet (option A shortcuts) written in PyTorch, for reference timing."""
    import torch
    from torch import nn

    class ShortcutA(nn.Module):
        def __init__(self, extra):
            super().__init__()
            self.extra = extra

        def forward(self, x):
            x = x[:, :, ::2, ::2]
            return nn.functional.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = ShortcutA(cout - cin) if (stride != 1 or cin != cout) else nn.Identity()

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return torch.relu(out + self.shortcut(x))

    n = (depth - 2) // 6
    layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
    cin = 16
    for i, width in enumerate((16, 32, 64)):
        for b in range(n):
            layers.append(Block(cin, width, 2 if (i > 0 and b == 0) else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
    return nn.Sequential(*layers)


def _child(framework, depth, batch_size, steps, warmup, threads, mode, clock="wall"):
    import numpy as np
    rng = np.random.default_rng(0)
    images = rng.standard_normal((batch_size, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, batch_size)
    times = []
    if framework == "torch":
        import torch
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = _torch_resnet(depth)
        x, y = torch.from_numpy(images), torch.from_numpy(labels)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        if mode == "train":
            model.train()

            def step():
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
        else:
            model.eval()

            def step():
                with torch.no_grad():
                    model(x)
    else:
        import tinygrad_cnn as tg
        from tinygrad_cnn import models, nn, optim
        tg.manual_seed(0)
        model = getattr(models, f"resnet{depth}")()
        x, y = tg.Tensor(images), tg.Tensor(labels)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        if mode == "train":
            model.train()

            def step():
                opt.zero_grad(set_to_none=True)
                loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
        else:
            model.eval()

            def step():
                with tg.no_grad():
                    model(x)
    # "cpu" counts the CPU time this process used (all its threads): on a machine shared
    # with other work it is far steadier than wall time; with --threads 1 it is the cost
    # of a step on one core.
    timer = time.process_time if clock == "cpu" else time.perf_counter
    before = _current_rss_mib()
    for i in range(warmup + steps):
        start = timer()
        step()
        if i >= warmup:
            times.append(timer() - start)
    return {"framework": framework, "images_per_s": [batch_size / t for t in times],
            "peak_rss_mib": _peak_rss_mib(), "step_mib": _peak_rss_mib() - before}


# ---------------------------------------------------------------------------
# profile: time per op of one training step
# ---------------------------------------------------------------------------

def profile(depth, batch_size, threads, steps=3, clock="wall"):
    """Forward time per Function class (wrapping ``apply``) and backward time per class
    (time between consecutive backward-observer calls, i.e. the node's backward plus the
    accumulation of its gradients). Runs in this process, so the thread counts are set
    before NumPy and Numba load."""
    if "numpy" in sys.modules:
        raise RuntimeError("profile: NumPy is already imported, so --threads cannot apply")
    os.environ.update(_thread_env(threads))
    import numpy as np
    timer = time.process_time if clock == "cpu" else time.perf_counter
    import tinygrad_cnn as tg
    from tinygrad_cnn import autograd, models, nn, optim

    forward_time, backward_time, counts = {}, {}, {}
    original_apply = autograd.Function.apply.__func__

    def timed_apply(cls, *args, **kwargs):
        start = timer()
        out = original_apply(cls, *args, **kwargs)
        if tg.is_grad_enabled() and not autograd._state.in_backward:
            forward_time[cls.__name__] = forward_time.get(cls.__name__, 0.0) + \
                timer() - start
            counts[cls.__name__] = counts.get(cls.__name__, 0) + 1
        return out

    last = [0.0]

    def observer(node, grad_output, input_grads):
        now = timer()
        name = type(node).__name__
        backward_time[name] = backward_time.get(name, 0.0) + now - last[0]
        last[0] = now

    rng = np.random.default_rng(0)
    x = tg.Tensor(rng.standard_normal((batch_size, 3, 32, 32)).astype(np.float32))
    y = tg.Tensor(rng.integers(0, 10, batch_size))
    model = getattr(models, f"resnet{depth}")()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)

    def step():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        t0 = timer()
        last[0] = t0
        loss.backward()
        t1 = timer()
        opt.step()
        return t1 - t0, timer() - t1

    step()   # warm-up (Numba compilation, allocator)
    autograd.Function.apply = classmethod(timed_apply)
    autograd.backward_observers.append(observer)
    total_step = 0.0
    update_time = 0.0
    try:
        for _ in range(steps):
            start = timer()
            _, t_update = step()
            total_step += timer() - start
            update_time += t_update
    finally:
        autograd.Function.apply = classmethod(original_apply)
        autograd.backward_observers.remove(observer)
    names = sorted(set(forward_time) | set(backward_time),
                   key=lambda n: -(forward_time.get(n, 0) + backward_time.get(n, 0)))
    print(f"profile of resnet{depth}, batch {batch_size}, {threads} threads, {steps} steps, "
          f"{clock} clock "
          f"({total_step / steps * 1000:.1f} ms/step, {batch_size * steps / total_step:.1f} img/s)")
    print(f"{'op':<28}{'calls/step':>10}{'forward ms':>12}{'backward ms':>13}{'share':>8}")
    for n in names:
        f, b = forward_time.get(n, 0) / steps * 1000, backward_time.get(n, 0) / steps * 1000
        print(f"{n:<28}{counts.get(n, 0) // steps:>10}{f:>12.2f}{b:>13.2f}"
              f"{(f + b) / (total_step / steps * 1000):>8.1%}")
    print(f"{'optimizer step':<28}{'':>10}{update_time / steps * 1000:>12.2f}")


# ---------------------------------------------------------------------------
# parent side
# ---------------------------------------------------------------------------

def _thread_env(threads):
    """Environment that gives every thread pool (OpenMP, MKL, OpenBLAS, Numba, our slice
    workers) ``threads`` threads; read when those libraries load."""
    return {name: str(threads) for name in (
        "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
        "TINYGRAD_CNN_NUM_THREADS")}


def _run_child(args, framework, mode):
    cmd = [sys.executable, __file__, "--child", framework, "--mode", mode, "--depth", str(args.depth),
           "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup",
           str(args.warmup), "--threads", str(args.threads), "--clock", args.clock]
    env = dict(os.environ, **_thread_env(args.threads))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{framework} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=8, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--modes", default="train,inference")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--child", choices=["ours", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--mode", default="train", help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: images per wall-clock second (the real throughput, needs a quiet "
                        "machine); cpu: images per second of CPU time used by the process, "
                        "steadier on a shared machine (use with --threads 1)")
    args = p.parse_args(argv)

    if args.child:
        print(json.dumps(_child(args.child, args.depth, args.batch_size, args.steps, args.warmup,
                                args.threads, args.mode, args.clock)))
        return
    if args.profile:
        profile(args.depth, args.batch_size, args.threads, clock=args.clock)
        return

    try:
        import torch  # noqa: F401
        have_torch = not args.no_torch
    except ImportError:
        have_torch = False
        print("PyTorch not installed: measuring tinygrad_cnn only (no ratio).")
    frameworks = ["ours"] + (["torch"] if have_torch else [])
    results = {}
    for mode in args.modes.split(","):
        samples = {f: [] for f in frameworks}
        rss = {f: [] for f in frameworks}
        step_mem = {f: [] for f in frameworks}
        for _ in range(args.rounds):
            for f in frameworks:
                r = _run_child(args, f, mode)
                samples[f] += r["images_per_s"]
                rss[f].append(r["peak_rss_mib"])
                step_mem[f].append(r["step_mib"])
        results[mode] = {f: {"median_images_per_s": statistics.median(samples[f]),
                             "peak_rss_mib": max(rss[f]), "step_mib": max(step_mem[f])}
                         for f in frameworks}
        print(f"\nresnet{args.depth} {mode}, batch {args.batch_size}, {args.threads} threads, "
              f"{args.rounds} rounds x {args.steps} steps")
        for f in frameworks:
            r = results[mode][f]
            name = "tinygrad_cnn" if f == "ours" else "torch " + __import__("torch").__version__
            print(f"  {name:<22} {r['median_images_per_s']:8.1f} images/s   peak RSS "
                  f"{r['peak_rss_mib']:7.0f} MiB (growth during the steps {r['step_mib']:6.0f} MiB)")
        if have_torch:
            ours, ref = results[mode]["ours"], results[mode]["torch"]
            print(f"  ratio ours/torch: throughput {ours['median_images_per_s'] / ref['median_images_per_s']:.2f}x,"
                  f" peak memory {ours['peak_rss_mib'] / ref['peak_rss_mib']:.2f}x,"
                  f" step memory {ours['step_mib'] / max(ref['step_mib'], 1e-9):.2f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
