"""A training or inference step of this checkout against an earlier revision, alternating.

    python benchmarks/bench_revisions.py --rev e819d66                    # ResNet-20 training
    python benchmarks/bench_revisions.py --rev e819d66 --model alexnet --mode inference
    python benchmarks/bench_revisions.py --rev e819d66 --model resnet56 --rounds 3

The earlier revision is checked out into a temporary git worktree (removed afterwards). Each
round runs one child process per tree (this checkout's ``tinygrad_cnn`` first on its
``PYTHONPATH``, then the other's), each timing ``--steps`` steps after two warm-up steps, and
the trees alternate round by round, so a machine that slows down affects both. Reported: the
median step time of each tree over the rounds and their ratio (new / old). The models are the
package's own (``resnet20``, ``resnet56``, ``alexnet(variant="torchvision")``) on random data, SGD with
momentum 0.9 and weight decay 5e-4, as in ``bench_train.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

_CHILD = r'''
import json, sys, time
import numpy as np
import tinygrad_cnn as tg
from tinygrad_cnn import optim
import tinygrad_cnn.nn.functional as F
model, mode, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(0)
if model.startswith("resnet"):
    from tinygrad_cnn import models
    net, shape, classes, lr = getattr(models, model)(), (128, 3, 32, 32), 10, 0.1
else:
    from tinygrad_cnn.models import alexnet
    net, shape, classes, lr = alexnet(variant="torchvision"), (16, 3, 224, 224), 1000, 0.01
x = tg.Tensor(rng.standard_normal(shape, dtype=np.float32))
y = tg.Tensor(rng.integers(0, classes, shape[0]))
optimizer = optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
if mode == "inference":
    net.eval()

def step():
    if mode == "train":
        optimizer.zero_grad()
        F.cross_entropy(net(x), y).backward()
        optimizer.step()
    else:
        with tg.no_grad():
            net(x)

for _ in range(2):
    step()
times = []
for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
print(json.dumps(sorted(times)[len(times) // 2]))
'''


def _step_time(tree, model, mode, steps):
    env = dict(os.environ, PYTHONPATH=tree)
    done = subprocess.run([sys.executable, "-c", _CHILD, model, mode, str(steps)], env=env,
                          capture_output=True, text=True, cwd=tempfile.gettempdir())
    if done.returncode != 0:
        raise RuntimeError(f"the step in {tree} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rev", required=True, help="the earlier revision (any git revision name)")
    p.add_argument("--model", choices=["resnet20", "resnet56", "alexnet"], default="resnet20")
    p.add_argument("--mode", choices=["train", "inference"], default="train")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=8, help="timed steps per child")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        old_tree = os.path.join(scratch, "old")
        subprocess.run(["git", "worktree", "add", "--detach", "-q", old_tree, args.rev], cwd=ROOT,
                       check=True, capture_output=True)
        try:
            trees = {"old": old_tree, "new": ROOT}
            times = {name: [] for name in trees}
            for _ in range(args.rounds):
                for name, tree in trees.items():
                    times[name].append(_step_time(tree, args.model, args.mode, args.steps))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", old_tree], cwd=ROOT,
                           capture_output=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name in trees:
        rounds = ", ".join(f"{value * 1e3:.1f}" for value in times[name])
        print(f"{args.model} {args.mode} {name:>3} ({args.rev if name == 'old' else 'this checkout'}): "
              f"median step {medians[name] * 1e3:.1f} ms (rounds: {rounds})")
    ratio = medians["new"] / medians["old"]
    print(f"time ratio new / old: {ratio:.2f}")
    return dict(model=args.model, mode=args.mode, old_ms=medians["old"] * 1e3,
                new_ms=medians["new"] * 1e3, ratio=ratio)


if __name__ == "__main__":
    main()
