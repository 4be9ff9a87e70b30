"""The CIFAR ResNet recipe of examples/train_resnet_cifar.py in PyTorch and in tinygrad_cnn, side by side.

Both frameworks see exactly the same data: the batches (order, random crops and flips, normalisation) come
from one tinygrad_cnn ``DataLoader`` configuration with the same seed, and the PyTorch model starts from
the same initial weights (the tinygrad_cnn model's state_dict, copied by name), so differences come only
from floating-point arithmetic. Over several seeds, the test accuracies should agree within noise.

    python benchmarks/compare_torch_cifar.py --data-dir ../shared/data/cifar-10-partial-bin --no-verify \\
        --epochs 10 --schedule onecycle --seeds 0 1 2
    python benchmarks/compare_torch_cifar.py ... --frameworks torch      # only the PyTorch side

Without PyTorch installed the script says so and exits with status 0 (nothing to compare against).
Results go to ``<out>/compare.json``; the tinygrad_cnn runs keep their own folders ``<out>/tinygrad_seed<k>``.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_resnet_cifar.py"


def load_example():
    spec = importlib.util.spec_from_file_location("train_resnet_cifar_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-verify", dest="verify", action="store_false")
    p.add_argument("--depth", type=int, default=20)
    p.add_argument("--shortcut", choices=("A", "B"), default="A")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--schedule", choices=("step", "onecycle"), default="onecycle")
    p.add_argument("--limit-train", type=int, default=None)
    p.add_argument("--limit-test", type=int, default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--frameworks", nargs="+", choices=("torch", "tinygrad"), default=["torch", "tinygrad"])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--out", default="runs/compare_torch_cifar")
    return p


def recipe_argv(args, seed):
    argv = ["--depth", str(args.depth), "--shortcut", args.shortcut, "--epochs", str(args.epochs),
            "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--momentum", str(args.momentum),
            "--weight-decay", str(args.weight_decay), "--schedule", args.schedule, "--seed", str(seed),
            "--device", "cpu", "--no-plot"]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    if not args.verify:
        argv.append("--no-verify")
    for flag, value in (("--limit-train", args.limit_train), ("--limit-test", args.limit_test)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def torch_resnet(torch, depth, shortcut):
    """He et al.'s CIFAR ResNet in torch.nn with the same module names as tinygrad_cnn.models.cifar_resnet."""
    tnn = torch.nn

    class ShortcutA(tnn.Module):
        def __init__(self, extra):
            super().__init__()
            self.extra = extra

        def forward(self, x):
            x = x[:, :, ::2, ::2]
            return tnn.functional.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))

    class Block(tnn.Module):
        def __init__(self, in_planes, planes, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.relu = tnn.ReLU(inplace=True)
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.shortcut = None
            if stride != 1 or in_planes != planes:
                self.shortcut = (ShortcutA(planes - in_planes) if shortcut == "A" else
                                 tnn.Sequential(tnn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                                tnn.BatchNorm2d(planes)))

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + (x if self.shortcut is None else self.shortcut(x)))

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            n = (depth - 2) // 6
            self.conv1 = tnn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(16)
            self.relu = tnn.ReLU(inplace=True)
            in_planes = 16
            for i, planes in enumerate((16, 32, 64)):
                blocks = []
                for b in range(n):
                    blocks.append(Block(in_planes, planes, 2 if (i > 0 and b == 0) else 1))
                    in_planes = planes
                setattr(self, f"layer{i + 1}", tnn.Sequential(*blocks))
            self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
            self.fc = tnn.Linear(64, 10)

        def forward(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            x = self.layer3(self.layer2(self.layer1(x)))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return Net()


def run_torch(torch, example, args, seed):
    """Train the PyTorch model on the tinygrad_cnn data pipeline; returns the result dict."""
    parser = example.build_parser()
    cli = parser.parse_args(recipe_argv(args, seed))
    config = {k: getattr(cli, k) for k in example.RECIPE_KEYS}
    runtime = {k: getattr(cli, k) for k in ("data_dir", "download", "verify", "eval_batch_size", "prefetch")}
    import tinygrad_cnn
    from tinygrad_cnn import checkpoint
    tinygrad_cnn.manual_seed(seed)  # same order of global-RNG use as the example: seed, data, model
    train, val, test = example.load_cifar(config, runtime)
    train_loader, _, test_loader, _ = example.make_loaders(config, runtime, train, val, test, "cpu")
    init = checkpoint.model_state_arrays(example.build_model(config))
    torch.manual_seed(seed)
    model = torch_resnet(torch, config["depth"], config["shortcut"])
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in init.items()})
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"],
                          weight_decay=config["weight_decay"])
    if config["schedule"] == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config["lr"], epochs=config["epochs"],
                                                    steps_per_epoch=len(train_loader), pct_start=config["pct_start"])
    else:
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, example.step_milestones(config["epochs"]), 0.1)
    per_batch = config["schedule"] == "onecycle"
    loss_fn = torch.nn.CrossEntropyLoss()
    start = time.perf_counter()
    for epoch in range(config["epochs"]):
        model.train()
        seen = correct = 0
        loss_sum = 0.0
        for images, labels in train_loader:
            x, y = torch.from_numpy(images.numpy()), torch.from_numpy(labels.numpy())
            logits = model(x)
            loss = loss_fn(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if per_batch:
                sched.step()
            seen += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += loss.item() * len(y)
        if not per_batch:
            sched.step()
        print(f"  torch seed {seed} epoch {epoch + 1}/{config['epochs']}: train loss {loss_sum / seen:.4f} "
              f"acc {100 * correct / seen:.2f}%", flush=True)
    seconds = time.perf_counter() - start
    model.eval()
    correct = correct_tta = seen = 0
    with torch.no_grad():
        for images, labels in test_loader:
            x, y = torch.from_numpy(images.numpy()), torch.from_numpy(labels.numpy())
            logits = model(x)
            probs = logits.softmax(1) + model(torch.flip(x, dims=[3])).softmax(1)
            correct += int((logits.argmax(1) == y).sum())
            correct_tta += int((probs.argmax(1) == y).sum())
            seen += len(y)
    return {"framework": "torch", "seed": seed, "test_acc": correct / seen, "test_acc_tta": correct_tta / seen,
            "train_seconds": seconds}


def run_tinygrad(example, args, seed, out):
    start = time.perf_counter()
    result = example.main(recipe_argv(args, seed) + ["--out", str(out / f"tinygrad_seed{seed}"), "--no-progress"])
    return {"framework": "tinygrad_cnn", "seed": seed, "test_acc": result["test_acc"],
            "test_acc_tta": result["test_acc_tta"],
            "train_seconds": sum(r["seconds"] for r in result["history"]),
            "wall_seconds": time.perf_counter() - start}


def mean_std(values):
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        import torch
    except ImportError:
        print("PyTorch is not installed: nothing to compare against (pip install torch). Skipping.")
        return None
    if args.threads:
        torch.set_num_threads(args.threads)
    example = load_example()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in args.seeds:
        if "torch" in args.frameworks:
            results.append(run_torch(torch, example, args, seed))
            print(json.dumps(results[-1]), flush=True)
        if "tinygrad" in args.frameworks:
            results.append(run_tinygrad(example, args, seed, out))
            print(json.dumps(results[-1]), flush=True)
    print(f"\nResNet-{args.depth} ({args.shortcut}), {args.epochs} epochs, {args.schedule}, seeds {args.seeds}, "
          f"torch {torch.__version__}")
    summary = {}
    for name in ("torch", "tinygrad_cnn"):
        rows = [r for r in results if r["framework"] == name]
        if not rows:
            continue
        acc, acc_sd = mean_std([r["test_acc"] for r in rows])
        tta, tta_sd = mean_std([r["test_acc_tta"] for r in rows])
        secs, _ = mean_std([r["train_seconds"] for r in rows])
        summary[name] = {"test_acc_mean": acc, "test_acc_std": acc_sd, "test_acc_tta_mean": tta,
                         "test_acc_tta_std": tta_sd, "train_seconds_mean": secs, "runs": len(rows)}
        print(f"{name:>13}: test acc {100 * acc:.2f} +- {100 * acc_sd:.2f}% | flip-TTA {100 * tta:.2f} +- "
              f"{100 * tta_sd:.2f}% | {secs:.0f} s training per run")
    if len(summary) == 2:
        a, b = summary["torch"], summary["tinygrad_cnn"]
        diff = b["test_acc_mean"] - a["test_acc_mean"]
        n = min(a["runs"], b["runs"])
        noise = 2 * math.sqrt((a["test_acc_std"] ** 2 + b["test_acc_std"] ** 2) / max(n, 1))
        summary["difference"] = {"tinygrad_minus_torch": diff, "two_standard_errors": noise,
                                 "within_noise": abs(diff) <= max(noise, 1e-12)}
        print(f"difference (tinygrad_cnn - torch): {100 * diff:+.2f} points; two standard errors "
              f"{100 * noise:.2f} -> {'within' if abs(diff) <= noise else 'OUTSIDE'} noise")
    (out / "compare.json").write_text(json.dumps({"args": vars(args), "results": results, "summary": summary},
                                                 indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
