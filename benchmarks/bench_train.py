"""Training and inference throughput of CIFAR ResNets, AlexNet and VGG-16, next to PyTorch on
the same machine.

    python benchmarks/bench_train.py                      # ResNet-20, batch 128, vs torch
    python benchmarks/bench_train.py --depth 56 --rounds 3
    python benchmarks/bench_train.py --model alexnet      # 224x224, batch 16
    python benchmarks/bench_train.py --model vgg16 --modes train
    python benchmarks/bench_train.py --profile            # time per op and per layer of one step
    python benchmarks/bench_train.py --isa avx2           # both frameworks limited to AVX2

Models (``--model``): ``resnet`` is the CIFAR ResNet of ``--depth`` layers (option A
shortcuts; batch 128 of 32x32 images, 10 classes); ``alexnet`` and ``vgg16`` are torchvision's
layouts (AlexNet: 64-192-384-256-256 channels, conv1 11x11 stride 4 pad 2, adaptive average
pooling to 6x6, fc 9216-4096-4096-1000; VGG-16: configuration D without BatchNorm, adaptive
average pooling to 7x7, fc 25088-4096-4096-1000, dropout in the classifier), on 224x224
images and 1000 classes, batch 16 and 8. torchvision is not needed: the PyTorch models are
written out here, layer for layer the same shapes as ours
(``tinygrad_cnn.models.alexnet(variant="torchvision")`` and ``tinygrad_cnn.models.vgg16()``).

One *step* is forward, cross-entropy, backward and an SGD momentum update, at batch
``--batch-size`` on random float32 data, after warm-up. Each measurement runs in a fresh
child process (so its peak resident memory is its own), and the frameworks alternate round
by round (ours, torch, ours, torch, ...), so a machine that slows down mid-run affects both.
Both use ``--threads`` threads (Numba and BLAS for us, ``torch.set_num_threads`` for
PyTorch). Reported: median images/s over the timed steps of all rounds, peak RSS of the
child, and the ratio ours / torch, after a ``machine:`` line (CPU model, SIMD vector width,
NumPy GEMM peak at ``--threads`` threads); ``--json`` stores all of it.

``--isa avx2`` runs both frameworks with their libraries limited to AVX2 (the variables in
``ISA_ENV``): the narrower vectors measured on an AVX-512 machine. Each child reports what
it used (PyTorch's CPU capability, the CPU Numba compiles for), printed in brackets.

``--profile`` times one model's training steps in this process: time per op type, then per
convolution and linear layer its forward and backward milliseconds, GFLOP/s and share of the
GEMM peak, which is how far each layer is from what this machine's cores can do.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _machine import describe, gemm_peak, machine_line   # a sibling: this folder is on sys.path

HERE = os.path.dirname(os.path.abspath(__file__))

# Per model: input side, classes, the default batch, timed steps and warm-up steps per round
# (VGG-16's are chosen so that a run of all rounds takes minutes on two cores, not hours),
# and the learning rate (torchvision's reference recipes train AlexNet and VGG, which have
# no BatchNorm, at 0.01).
MODELS = {
    "resnet": dict(size=32, classes=10, batch_size=128, steps=8, warmup=2, lr=0.1),
    "alexnet": dict(size=224, classes=1000, batch_size=16, steps=6, warmup=1, lr=0.01),
    "vgg16": dict(size=224, classes=1000, batch_size=8, steps=3, warmup=1, lr=0.01),
}


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


def _torch_alexnet(num_classes=1000):
    """torchvision's AlexNet layout in PyTorch (torchvision itself is not needed), the layer
    shapes of ``tinygrad_cnn.models.alexnet(variant="torchvision")``: input 224x224."""
    import torch
    from torch import nn

    class AlexNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2),
                nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2),
                nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2))
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(
                nn.Dropout(0.5), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
                nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
                nn.Linear(4096, num_classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return AlexNet()


VGG16_CHANNELS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                  512, 512, 512, "M")


def _torch_vgg16(num_classes=1000):
    """torchvision's VGG-16 layout (configuration D, no BatchNorm) in PyTorch, the layer
    shapes of ``tinygrad_cnn.models.vgg16()`` and its initialisation: input 224x224."""
    import torch
    from torch import nn

    class VGG16(nn.Module):
        def __init__(self):
            super().__init__()
            layers, cin = [], 3
            for item in VGG16_CHANNELS:
                if item == "M":
                    layers.append(nn.MaxPool2d(2, stride=2))
                else:
                    layers += [nn.Conv2d(cin, item, 3, padding=1), nn.ReLU(inplace=True)]
                    cin = item
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
                nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
                nn.Linear(4096, num_classes))
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0.0, 0.01)
                    nn.init.zeros_(m.bias)

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return VGG16()


def _torch_model(model, depth):
    if model == "resnet":
        return _torch_resnet(depth, MODELS[model]["classes"])
    return {"alexnet": _torch_alexnet, "vgg16": _torch_vgg16}[model](MODELS[model]["classes"])


def _our_model(model, depth):
    from tinygrad_cnn import models
    if model == "resnet":
        return getattr(models, f"resnet{depth}")(num_classes=MODELS[model]["classes"])
    if model == "alexnet":
        return models.alexnet(num_classes=MODELS[model]["classes"], variant="torchvision")
    return models.vgg16(num_classes=MODELS[model]["classes"])


def _label(model, depth):
    return f"resnet{depth}" if model == "resnet" else model


def _data(model, batch_size):
    """Random images and labels of the model's input shape, the same for both frameworks."""
    import numpy as np
    rng = np.random.default_rng(0)
    size, classes = MODELS[model]["size"], MODELS[model]["classes"]
    images = rng.standard_normal((batch_size, 3, size, size)).astype(np.float32)
    return images, rng.integers(0, classes, batch_size)


def _child(framework, model_name, depth, batch_size, steps, warmup, threads, mode, clock="wall"):
    images, labels = _data(model_name, batch_size)
    times = []
    if framework == "torch":
        import torch
        torch.set_num_threads(threads)
        torch.manual_seed(0)
        model = _torch_model(model_name, depth)
        x, y = torch.from_numpy(images), torch.from_numpy(labels)
        opt = torch.optim.SGD(model.parameters(), lr=MODELS[model_name]["lr"], momentum=0.9,
                              weight_decay=1e-4)
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
        from tinygrad_cnn import nn, optim
        tg.manual_seed(0)
        model = _our_model(model_name, depth)
        x, y = tg.Tensor(images), tg.Tensor(labels)
        opt = optim.SGD(model.parameters(), lr=MODELS[model_name]["lr"], momentum=0.9,
                        weight_decay=1e-4)
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
            "peak_rss_mib": _peak_rss_mib(), "step_mib": _peak_rss_mib() - before,
            "isa": _isa_in_use(framework)}


def _isa_in_use(framework):
    """What the child's libraries compile or dispatch for: PyTorch's ATen CPU capability
    ("AVX512", "AVX2"), or the CPU Numba targets ("host" unless NUMBA_CPU_NAME says)."""
    if framework == "torch":
        import torch
        return torch.backends.cpu.get_cpu_capability()
    import numba
    return numba.config.CPU_NAME or "host"


# ---------------------------------------------------------------------------
# profile: time per op and per layer of one training step
# ---------------------------------------------------------------------------

def _layer_shape(module, input):
    """``conv 64->192 5x5 s1 27x27`` (in->out channels, kernel, stride, input HxW) or
    ``linear 9216->4096``."""
    if hasattr(module, "kernel_size"):
        (kh, kw), (sh, sw) = module.kernel_size, module.stride
        stride = f"s{sh}" if sh == sw else f"s{sh}x{sw}"
        groups = f" g{module.groups}" if module.groups != 1 else ""
        return (f"conv {module.in_channels}->{module.out_channels} {kh}x{kw} {stride}{groups} "
                f"{input.shape[-2]}x{input.shape[-1]}")
    return f"linear {module.in_features}->{module.out_features}"


def _layer_flops(module, output):
    """Forward FLOPs (2 per multiply-add) of a convolution or linear layer, from its output."""
    outputs = 1
    for side in output.shape:
        outputs *= side
    if hasattr(module, "kernel_size"):
        kh, kw = module.kernel_size
        return 2 * outputs * (module.in_channels // module.groups) * kh * kw
    return 2 * outputs * module.in_features


def profile(depth, batch_size, threads, steps=3, clock="wall", model_name="resnet", isa="native"):
    """Time per op type and per layer of a training step of ``model_name``, in this process
    (so the thread counts and the ``--isa`` limit are set before NumPy and Numba load).

    Per op: forward time per Function class (wrapping ``apply``) and backward time per class
    (time between consecutive backward-observer calls, i.e. the node's backward plus the
    accumulation of its gradients).

    Per convolution and linear layer: the forward of the module, and the backward of every
    node its forward created (the same observer intervals), with the FLOPs of the gradients
    computed: the weight gradient always, the input gradient unless the layer's input needs
    none (the first layer's), each as many FLOPs as the forward; bias gradients are not
    counted. The rates are compared with the GEMM peak measured here (before and after the
    steps, the better of the two), at the same thread count and on the same clock."""
    if "numpy" in sys.modules:
        raise RuntimeError("profile: NumPy is already imported, so --threads cannot apply")
    os.environ.update(_thread_env(threads), **ISA_ENV[isa])
    import numpy as np  # noqa: F401  (loads with the thread counts and ISA limit just set)
    timer = time.process_time if clock == "cpu" else time.perf_counter
    import tinygrad_cnn as tg
    from tinygrad_cnn import autograd, nn, optim

    forward_time, backward_time, counts = {}, {}, {}
    layers = {}       # id(module) -> its record, in the order of the first forward
    running = []      # records of the layers whose forward is running
    node_layer = {}   # id(graph node) -> record of the layer whose forward created it
    original_apply = autograd.Function.apply.__func__

    def timed_apply(cls, *args, **kwargs):
        start = timer()
        out = original_apply(cls, *args, **kwargs)
        if tg.is_grad_enabled() and not autograd._state.in_backward:
            forward_time[cls.__name__] = forward_time.get(cls.__name__, 0.0) + \
                timer() - start
            counts[cls.__name__] = counts.get(cls.__name__, 0) + 1
            if running and out._ctx is not None:
                node_layer[id(out._ctx)] = running[-1]
        return out

    last = [0.0]

    def observer(node, grad_output, input_grads):
        now = timer()
        name = type(node).__name__
        backward_time[name] = backward_time.get(name, 0.0) + now - last[0]
        record = node_layer.get(id(node))
        if record is not None:
            record["bwd_s"] += now - last[0]
        last[0] = now

    model = _our_model(model_name, depth)
    names = {id(m): name for name, m in model.named_modules()}

    def timed_forward(original):
        def forward(module, input, *args, **kwargs):
            record = layers.get(id(module))
            if record is None:
                record = layers[id(module)] = dict(
                    name=names.get(id(module), "?"), shape=_layer_shape(module, input),
                    fwd_s=0.0, bwd_s=0.0, fwd_flops=0, bwd_flops=0, dx=input.requires_grad)
            running.append(record)
            start = timer()
            try:
                out = original(module, input, *args, **kwargs)
            finally:
                running.pop()
            record["fwd_s"] += timer() - start
            flops = _layer_flops(module, out)
            record["fwd_flops"] += flops
            record["bwd_flops"] += flops * (2 if input.requires_grad else 1)
            return out
        return forward

    images, labels = _data(model_name, batch_size)
    x, y = tg.Tensor(images), tg.Tensor(labels)
    opt = optim.SGD(model.parameters(), lr=MODELS[model_name]["lr"], momentum=0.9,
                    weight_decay=1e-4)

    def step():
        node_layer.clear()
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        t0 = timer()
        last[0] = t0
        loss.backward()
        t1 = timer()
        opt.step()
        return t1 - t0, timer() - t1

    peak = gemm_peak(timer=timer)
    step()   # warm-up (Numba compilation, allocator)
    patched = {cls: cls.forward for cls in (nn.Conv2d, nn.Linear)}
    autograd.Function.apply = classmethod(timed_apply)
    autograd.backward_observers.append(observer)
    for cls, original in patched.items():
        cls.forward = timed_forward(original)
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
        for cls, original in patched.items():
            cls.forward = original
    # Measured again after the steps: a burst of other work on the machine during one
    # measurement would otherwise put layers above "100%" of the peak.
    peak = max(peak, gemm_peak(timer=timer))
    step_ms = total_step / steps * 1000
    print(machine_line(describe(threads, peak)))
    if clock == "cpu":
        print("(cpu clock: the GEMM peak and every rate below are per CPU-second)")
    names_by_time = sorted(set(forward_time) | set(backward_time),
                           key=lambda n: -(forward_time.get(n, 0) + backward_time.get(n, 0)))
    print(f"profile of {_label(model_name, depth)}, batch {batch_size}, {threads} threads, "
          f"{steps} steps, {clock} clock "
          f"({step_ms:.1f} ms/step, {batch_size * steps / total_step:.1f} img/s)")
    print(f"{'op':<28}{'calls/step':>10}{'forward ms':>12}{'backward ms':>13}{'share':>8}")
    for n in names_by_time:
        f, b = forward_time.get(n, 0) / steps * 1000, backward_time.get(n, 0) / steps * 1000
        print(f"{n:<28}{counts.get(n, 0) // steps:>10}{f:>12.2f}{b:>13.2f}"
              f"{(f + b) / step_ms:>8.1%}")
    print(f"{'optimizer step':<28}{'':>10}{update_time / steps * 1000:>12.2f}")
    _print_layers(list(layers.values()), steps, peak, step_ms)


def _print_layers(records, steps, peak, step_ms):
    """The per-layer table of :func:`profile` (times and FLOPs summed over ``steps``)."""
    print(f"\nper layer (backward: dW, and dx where the input needs it; "
          f"%peak: share of the GEMM peak, {peak:.0f} GFLOP/s)")
    head = (f"{'layer':<18}{'shape':<30}{'grads':>6}{'fwd ms':>9}{'bwd ms':>9}"
            f"{'fwd GFLOP/s':>12}{'bwd GFLOP/s':>12}{'fwd %peak':>10}{'bwd %peak':>10}")
    print(head)
    print("-" * len(head))
    total = dict(name="all of them", shape="", fwd_s=0.0, bwd_s=0.0, fwd_flops=0, bwd_flops=0,
                 dx=None)
    for r in records:
        for key in ("fwd_s", "bwd_s", "fwd_flops", "bwd_flops"):
            total[key] += r[key]
    for r in records + [total]:
        fwd_rate = r["fwd_flops"] / max(r["fwd_s"], 1e-12) / 1e9
        bwd_rate = r["bwd_flops"] / max(r["bwd_s"], 1e-12) / 1e9
        grads = {True: "dW+dx", False: "dW", None: ""}[r["dx"]]
        print(f"{r['name']:<18}{r['shape']:<30}{grads:>6}{r['fwd_s'] / steps * 1e3:>9.2f}"
              f"{r['bwd_s'] / steps * 1e3:>9.2f}{fwd_rate:>12.1f}{bwd_rate:>12.1f}"
              f"{fwd_rate / peak:>10.0%}{bwd_rate / peak:>10.0%}")
    share = (total["fwd_s"] + total["bwd_s"]) / steps * 1e3 / step_ms
    print(f"({len(records)} layers, {share:.0%} of the step)")


# ---------------------------------------------------------------------------
# parent side
# ---------------------------------------------------------------------------

# ``--isa avx2`` restricts every library of both frameworks to AVX2 (with FMA) on a CPU that
# has AVX-512, so that one machine measures both vector widths: Numba compiles for Haswell,
# OpenBLAS and MKL take their Haswell/AVX2 kernels, ATen its AVX2 kernels and oneDNN its AVX2
# ones (8-channel blocks instead of 16). The memory system stays this machine's, so it is the
# instruction set of an AVX2 machine, not such a machine.
ISA_ENV = {"native": {},
           "avx2": {"NUMBA_CPU_NAME": "haswell", "OPENBLAS_CORETYPE": "Haswell",
                    "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",
                    "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def _thread_env(threads):
    """Environment that gives every thread pool (OpenMP, MKL, OpenBLAS, Numba, our slice
    workers) ``threads`` threads; read when those libraries load."""
    return {name: str(threads) for name in (
        "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
        "TINYGRAD_CNN_NUM_THREADS")}


def _run_child(args, framework, mode):
    cmd = [sys.executable, __file__, "--child", framework, "--mode", mode, "--model", args.model,
           "--depth", str(args.depth), "--batch-size", str(args.batch_size), "--steps",
           str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--clock", args.clock]
    env = dict(os.environ, **_thread_env(args.threads), **ISA_ENV[args.isa])
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{framework} child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _machine(threads, isa="native"):
    """The machine's description with its GEMM peak at ``threads`` threads (with the kernels
    ``isa`` leaves BLAS), measured in a child process: BLAS reads its thread count and kernel
    choice from the environment when it loads."""
    cmd = [sys.executable, os.path.join(HERE, "_machine.py"), "--json", "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True,
                         env=dict(os.environ, **_thread_env(threads), **ISA_ENV[isa]))
    if out.returncode != 0:
        raise RuntimeError(f"measuring the GEMM peak failed:\n{out.stderr[-3000:]}")
    info = json.loads(out.stdout.strip().splitlines()[-1])
    if isa != "native":
        info["isa_cap"] = isa
    return info


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted(MODELS), default="resnet",
                   help="resnet (CIFAR, --depth layers), alexnet or vgg16 (torchvision's layouts, "
                        "224x224)")
    p.add_argument("--depth", type=int, default=20, help="layers of the CIFAR ResNet")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: 128 (resnet), 16 (alexnet), 8 (vgg16)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per round; default: 8 (resnet), 6 (alexnet), 3 (vgg16); "
                        "3 with --profile")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps per round; default: 2 (resnet), 1 (alexnet, vgg16)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--modes", default="train,inference")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--profile", action="store_true",
                   help="time per op type and per convolution/linear layer of our training step")
    p.add_argument("--isa", choices=sorted(ISA_ENV), default="native",
                   help="avx2: restrict both frameworks' libraries to AVX2 on an AVX-512 CPU "
                        "(environment variables of Numba, OpenBLAS, MKL, ATen and oneDNN)")
    p.add_argument("--child", choices=["ours", "torch"], help=argparse.SUPPRESS)
    p.add_argument("--mode", default="train", help=argparse.SUPPRESS)
    p.add_argument("--json", help="also write the machine, the settings and the results to this "
                                  "JSON file")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: images per wall-clock second (the real throughput, needs a quiet "
                        "machine); cpu: images per second of CPU time used by the process, "
                        "steadier on a shared machine (use with --threads 1)")
    args = p.parse_args(argv)
    defaults = MODELS[args.model]
    if args.batch_size is None:
        args.batch_size = defaults["batch_size"]
    if args.warmup is None:
        args.warmup = defaults["warmup"]

    if args.profile:
        profile(args.depth, args.batch_size, args.threads, steps=args.steps or 3,
                clock=args.clock, model_name=args.model, isa=args.isa)
        return
    if args.steps is None:
        args.steps = defaults["steps"]
    if args.child:
        print(json.dumps(_child(args.child, args.model, args.depth, args.batch_size, args.steps,
                                args.warmup, args.threads, args.mode, args.clock)))
        return

    label = _label(args.model, args.depth)
    machine = _machine(args.threads, args.isa)
    print(machine_line(machine) + ("" if args.isa == "native" else
                                   f"; instruction set capped at {args.isa.upper()} in both "
                                   "frameworks (--isa)"))
    try:
        import torch  # noqa: F401
        have_torch = not args.no_torch
    except ImportError:
        have_torch = False
        print("PyTorch not installed: measuring tinygrad_cnn only (no ratio).")
    frameworks = ["ours"] + (["torch"] if have_torch else [])
    results = {"machine": machine,
               "settings": {"model": label, "batch_size": args.batch_size, "steps": args.steps,
                            "warmup": args.warmup, "rounds": args.rounds,
                            "threads": args.threads, "clock": args.clock, "isa": args.isa}}
    for mode in args.modes.split(","):
        samples = {f: [] for f in frameworks}
        rss = {f: [] for f in frameworks}
        step_mem = {f: [] for f in frameworks}
        isa_used = {}
        for _ in range(args.rounds):
            for f in frameworks:
                r = _run_child(args, f, mode)
                samples[f] += r["images_per_s"]
                rss[f].append(r["peak_rss_mib"])
                step_mem[f].append(r["step_mib"])
                isa_used[f] = r["isa"]
        results[mode] = {f: {"median_images_per_s": statistics.median(samples[f]),
                             "peak_rss_mib": max(rss[f]), "step_mib": max(step_mem[f]),
                             "isa": isa_used[f]}
                         for f in frameworks}
        print(f"\n{label} {mode}, batch {args.batch_size}, {args.threads} threads, "
              f"{args.rounds} rounds x {args.steps} steps")
        for f in frameworks:
            r = results[mode][f]
            name = "tinygrad_cnn" if f == "ours" else "torch " + __import__("torch").__version__
            rate = r["median_images_per_s"]
            # VGG-16 runs at about one image per second: one decimal would hide a 5% change.
            print(f"  {name:<22} {rate:8.{1 if rate >= 10 else 2}f} images/s   peak RSS "
                  f"{r['peak_rss_mib']:7.0f} MiB (growth during the steps {r['step_mib']:6.0f} MiB)"
                  + ("" if args.isa == "native" else f"   [{r['isa']}]"))
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
