"""GPU training throughput of tinygrad_cnn next to PyTorch on the same GPU, in the same run.

Measures (float32, images/s, higher is better):

* ResNet-20 (CIFAR, 32x32) training steps: forward, cross-entropy, backward and an SGD step
  (momentum 0.9, weight decay 5e-4), at batch 128 and 512;
* ResNet-50 (224x224) forward + backward (no optimizer step), at ``--resnet50-batch``.

Every timed region starts and ends with a device synchronisation, so queued GPU work is counted.
The PyTorch models are built here with the same architectures (no torchvision needed); PyTorch
runs with ``cudnn.benchmark = True`` and, unless ``--torch-tf32`` is given, with TF32 disabled so
both frameworks do true float32 arithmetic.

    python benchmarks/bench_gpu.py [--steps 20] [--warmup 5] [--resnet50-batch 32] [--json out.json]

Without a GPU (no CuPy, or no device) it prints why and exits with status 0.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback

import numpy as np

import tinygrad_cnn
from tinygrad_cnn import cuda as tcuda


# ---------------------------------------------------------------------------
# tinygrad_cnn side
# ---------------------------------------------------------------------------

def _tinygrad_step_fn(model_name: str, batch: int, train_step: bool, device: str):
    from tinygrad_cnn import models, nn, optim
    tinygrad_cnn.manual_seed(0)
    if model_name == "resnet20":
        model, size, classes = models.resnet20(), 32, 10
    else:
        model, size, classes = models.resnet50(), 224, 1000
    model.to(device)
    model.train()
    rng = np.random.default_rng(0)
    images = tinygrad_cnn.Tensor(rng.standard_normal((batch, 3, size, size)).astype(np.float32), device=device)
    labels = tinygrad_cnn.Tensor(rng.integers(0, classes, batch), device=device)
    criterion = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        opt.zero_grad()
        loss = criterion(model(images), labels)
        loss.backward()
        if train_step:
            opt.step()

    return step


def _tinygrad_peak_bytes() -> int:
    import cupy
    return int(cupy.get_default_memory_pool().total_bytes())


def _tinygrad_reset_memory():
    import cupy
    cupy.get_default_memory_pool().free_all_blocks()


# ---------------------------------------------------------------------------
# PyTorch side (same architectures)
# ---------------------------------------------------------------------------

def _torch_models():
    import torch
    from torch import nn

    class CifarBlock(nn.Module):
        """ResNet-20 basic block with the parameter-free option-A shortcut (He et al., 2016)."""

        def __init__(self, in_planes, planes, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.stride, self.pad = stride, planes - in_planes

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            shortcut = x
            if self.stride != 1 or self.pad:
                shortcut = x[:, :, ::self.stride, ::self.stride]
                shortcut = nn.functional.pad(shortcut, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
            return torch.relu(out + shortcut)

    class ResNet20(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn = nn.BatchNorm2d(16)
            blocks, in_planes = [], 16
            for planes, stride in ((16, 1), (32, 2), (64, 2)):
                for i in range(3):
                    blocks.append(CifarBlock(in_planes, planes, stride if i == 0 else 1))
                    in_planes = planes
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            x = self.blocks(torch.relu(self.bn(self.conv(x))))
            return self.fc(x.mean((2, 3)))

    class Bottleneck(nn.Module):
        def __init__(self, in_planes, planes, stride):
            super().__init__()
            out_planes = planes * 4
            self.body = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
                nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
                nn.Conv2d(planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes))
            self.down = None
            if stride != 1 or in_planes != out_planes:
                self.down = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_planes))

        def forward(self, x):
            return torch.relu(self.body(x) + (x if self.down is None else self.down(x)))

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                                      nn.MaxPool2d(3, 2, 1))
            layers, in_planes = [], 64
            for planes, count, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
                for i in range(count):
                    layers.append(Bottleneck(in_planes, planes, stride if i == 0 else 1))
                    in_planes = planes * 4
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(2048, 1000)

        def forward(self, x):
            return self.fc(self.layers(self.stem(x)).mean((2, 3)))

    return {"resnet20": ResNet20, "resnet50": ResNet50}


def _torch_step_fn(model_name: str, batch: int, train_step: bool, device: str):
    import torch
    torch.manual_seed(0)
    model = _torch_models()[model_name]().to(device).train()
    size, classes = (32, 10) if model_name == "resnet20" else (224, 1000)
    images = torch.randn(batch, 3, size, size, device=device)
    labels = torch.randint(0, classes, (batch,), device=device)
    criterion = torch.nn.CrossEntropyLoss()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = criterion(model(images), labels)
        loss.backward()
        if train_step:
            opt.step()

    return step


# ---------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------

def time_steps(step, synchronize, steps: int, warmup: int) -> float:
    """Seconds per step, averaged over ``steps`` after ``warmup`` untimed steps."""
    for _ in range(warmup):
        step()
    synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize()
    return (time.perf_counter() - start) / steps


def run_case(framework: str, model_name: str, batch: int, train_step: bool, steps: int, warmup: int,
             device: str = "cuda") -> dict:
    result = {"framework": framework, "model": model_name, "batch": batch,
              "measure": "train step" if train_step else "forward+backward"}
    try:
        on_gpu = device == "cuda"
        result["peak_memory_gib"] = "n/a"
        if framework == "tinygrad_cnn":
            if on_gpu:
                _tinygrad_reset_memory()
            step = _tinygrad_step_fn(model_name, batch, train_step, device)
            seconds = time_steps(step, lambda: tcuda.synchronize(device), steps, warmup)
            if on_gpu:
                result["peak_memory_gib"] = round(_tinygrad_peak_bytes() / 2**30, 2)
        else:
            import torch
            if on_gpu:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            step = _torch_step_fn(model_name, batch, train_step, device)
            seconds = time_steps(step, torch.cuda.synchronize if on_gpu else (lambda: None), steps, warmup)
            if on_gpu:
                result["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result["ms_per_step"] = round(seconds * 1e3, 2)
        result["images_per_s"] = round(batch / seconds, 1)
    except Exception as error:  # noqa: BLE001 - one failing case (e.g. out of memory) must not hide the others
        traceback.print_exc()
        result["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (kernel compilation, caches)")
    parser.add_argument("--resnet20-batches", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--resnet50-batch", type=int, default=32)
    parser.add_argument("--skip-resnet50", action="store_true")
    parser.add_argument("--skip-torch", action="store_true", help="measure tinygrad_cnn only")
    parser.add_argument("--torch-tf32", action="store_true", help="let PyTorch use TF32 tensor cores")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--profile", action="store_true",
                        help="after the timings, break a tinygrad_cnn ResNet-20 step down: GPU kernels "
                             "(through PyTorch's CUDA profiler, which sees every kernel of the process) "
                             "and host-side Python functions (cProfile)")
    parser.add_argument("--cpu-dry-run", action="store_true",
                        help="run the same harness on the CPU with tiny settings (checks the script, not a benchmark)")
    args = parser.parse_args(argv)

    if args.cpu_dry_run:
        return _cpu_dry_run(args)
    if not tcuda.is_available():
        print(f"SKIP: no CUDA GPU available to tinygrad_cnn; {tcuda.install_hint()}")
        return 0

    frameworks = ["tinygrad_cnn"]
    torch_note = "not run (--skip-torch)"
    if not args.skip_torch:
        try:
            import torch
            if torch.cuda.is_available():
                torch.backends.cudnn.benchmark = True
                torch.backends.cuda.matmul.allow_tf32 = args.torch_tf32
                torch.backends.cudnn.allow_tf32 = args.torch_tf32
                frameworks.append("torch")
                torch_note = f"torch {torch.__version__} (cuDNN {torch.backends.cudnn.version()}, " \
                             f"TF32 {'on' if args.torch_tf32 else 'off'})"
            else:
                torch_note = f"torch {torch.__version__} sees no GPU"
        except ImportError:
            torch_note = "torch not installed"

    import cupy
    props = tcuda.get_device_properties()
    header = {
        "gpu": props["name"], "gpu_memory_gib": round(props["total_memory"] / 2**30, 1),
        "python": platform.python_version(), "numpy": np.__version__, "cupy": cupy.__version__,
        "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(), "torch": torch_note,
        "steps": args.steps, "warmup": args.warmup,
    }
    print(" | ".join(f"{k}: {v}" for k, v in header.items()))

    cases = [("resnet20", batch, True) for batch in args.resnet20_batches]
    if not args.skip_resnet50:
        cases.append(("resnet50", args.resnet50_batch, False))
    results = []
    print(f"{'model':9} {'batch':>5} {'measure':17} {'framework':13} {'ms/step':>9} {'images/s':>10} {'peak GiB':>9}")
    for model_name, batch, train_step in cases:
        for framework in frameworks:
            result = run_case(framework, model_name, batch, train_step, args.steps, args.warmup)
            results.append(result)
            if "error" in result:
                print(f"{model_name:9} {batch:>5} {result['measure']:17} {framework:13} failed: {result['error']}")
            else:
                print(f"{model_name:9} {batch:>5} {result['measure']:17} {framework:13} {result['ms_per_step']:>9} "
                      f"{result['images_per_s']:>10} {result['peak_memory_gib']:>9}")
            sys.stdout.flush()
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"header": header, "results": results}, handle, indent=2)
    if args.profile:
        for batch in args.resnet20_batches:
            profile_resnet20_step(batch)
    return 0


def profile_resnet20_step(batch: int, steps: int = 3) -> None:
    """Where a tinygrad_cnn ResNet-20 training step spends its time, on the GPU and on the host.

    The GPU side sums each kernel's device time over ``steps`` steps; comparing that sum with the
    wall time tells whether the step is bound by the kernels or by launching them from Python.
    """
    import cProfile
    import io
    import pstats

    step = _tinygrad_step_fn("resnet20", batch, True, "cuda")
    for _ in range(3):
        step()
    tcuda.synchronize("cuda")
    print(f"\n== profile: tinygrad_cnn ResNet-20 train step, batch {batch}, {steps} steps")
    try:
        import torch
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            start = time.perf_counter()
            for _ in range(steps):
                step()
            tcuda.synchronize("cuda")
            wall = time.perf_counter() - start
        events = prof.key_averages()
        kernel_us = sum(e.self_device_time_total for e in events)
        print(f"wall {wall / steps * 1e3:.2f} ms/step; GPU kernels {kernel_us / steps / 1e3:.2f} ms/step "
              f"in {sum(e.count for e in events) // steps} launches/step")
        print(events.table(sort_by="self_device_time_total", row_limit=30, max_name_column_width=70))
    except Exception:  # noqa: BLE001 - the host profile below is still worth having
        traceback.print_exc()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    tcuda.synchronize("cuda")
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(30)
    print(text.getvalue())


def _cpu_dry_run(args) -> int:
    frameworks = ["tinygrad_cnn"]
    try:
        import torch  # noqa: F401
        frameworks.append("torch")
    except ImportError:
        pass
    results = [run_case(framework, "resnet20", 4, True, steps=1, warmup=1, device="cpu") for framework in frameworks]
    for result in results:
        print(result)
    return 1 if any("error" in result for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
