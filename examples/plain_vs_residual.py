"""Plain vs residual networks (He et al. 2015, Figure 6): the degradation problem on CIFAR-10.

Trains plain-20, plain-56, ResNet-20 and ResNet-56 (``tinygrad_cnn.models``, option A shortcuts)
from the same recipe and records, per epoch, the training error (counted on each batch as it is
trained on) and the test error; a ``tinygrad_cnn.viz.GradientFlow`` watches the gradient norm of
every convolution and of the classifier at every step. He et al. saw the deeper *plain* net end
with a higher training error than the shallower one (degradation), while the deeper *residual* net
ends lower. The gradient norms per layer show what the shortcuts change: in ResNet-56 they stay
within a small band from the classifier down to conv1, in plain-56 (with BatchNorm) they change by
a factor of about 40 across the depth, growing towards the input. He et al. note that with
BatchNorm the gradients of plain nets do not vanish; here they even explode towards the input.

Scaled down for a 2-core CPU that others share (honest numbers in docs/experiments.md): by default
quarter-width networks (stages of 4, 8, 16 channels instead of 16, 32, 64) on CIFAR images averaged
down to 16x16, 500 training images of the local CIFAR-10 subset, 3 epochs (60 SGD steps), test
error on 500 test images. That is the very start of Figure 6's curves, not its end: the
comparison is about how easily each net can be optimised, and the gradient norms per layer.
Runtime on this machine's shared CPU (``nice -n 10``, load average 15-20): 22 minutes, most of
it the two 56-layer nets (``--depths 20 32`` or ``--epochs 1`` for a shorter run).

    python examples/plain_vs_residual.py
    python examples/plain_vs_residual.py --width 16 --image-size 32 --limit-train 50000 --epochs 160 \
        --batch-size 128 --lr-steps 80 120                                     # the paper's recipe
    python examples/plain_vs_residual.py --smoke

Writes ``<out>/training_error.png``, ``<out>/gradient_norms.png`` (matplotlib, the ``plot`` extra),
``<out>/grad_flow_<net>.jsonl`` and ``<out>/results.md`` / ``.json``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import tinygrad_cnn  # noqa: E402
from tinygrad_cnn import models, optim, viz  # noqa: E402

import _experiment_utils as ex  # noqa: E402


def build_parser():
    p = ex.base_parser(__doc__.splitlines()[0], "runs/plain_vs_residual")
    p.add_argument("--depths", type=int, nargs="+", default=[20, 56], help="6n + 2 each")
    p.add_argument("--width", type=ex.positive_int, default=4, help="channels of the first stage (paper: 16)")
    p.add_argument("--image-size", type=int, choices=(32, 16), default=16,
                   help="16: CIFAR images averaged down to 16x16 (a quarter of the compute)")
    p.add_argument("--limit-train", type=ex.positive_int, default=500)
    p.add_argument("--limit-test", type=ex.positive_int, default=500)
    p.add_argument("--epochs", type=ex.positive_int, default=3)
    p.add_argument("--batch-size", type=ex.positive_int, default=25)
    p.add_argument("--lr", type=ex.positive_float, default=0.1)
    p.add_argument("--lr-steps", type=int, nargs="*", default=[], help="epochs after which the lr is divided by 10")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    return p


def conv_layers(flow):
    """The watched layers in forward order: every conv, then the classifier."""
    return [layer for layer in flow.layers if "conv" in layer or layer == "fc"]


def main(argv=None):
    args = build_parser().parse_args(argv)
    for depth in args.depths:
        if depth < 8 or (depth - 2) % 6:
            raise SystemExit(f"--depths: {depth} is not of the form 6n + 2 (20, 32, 44, 56, 110)")
    if args.smoke:
        args.depths, args.width, args.limit_train, args.limit_test, args.epochs, args.batch_size = \
            [8, 14], 2, 32, 32, 1, 16
    timer = ex.Timer()
    train, test = ex.load_cifar(args.data_dir, args.limit_train, args.limit_test, args.seed, args.image_size)
    print(f"CIFAR-10 at {args.image_size}x{args.image_size}: {len(train)} training and {len(test)} test images; widths "
          f"{args.width}, {2 * args.width}, {4 * args.width}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curves, profiles, rows = {}, {}, []
    for plain in (True, False):
        for depth in args.depths:
            name = f"{'plain' if plain else 'ResNet'}-{depth}"
            tinygrad_cnn.manual_seed(args.seed)
            model = models.cifar_resnet(depth, plain=plain, widths=(args.width, 2 * args.width, 4 * args.width))
            opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
            flow = viz.GradientFlow(model)
            batches = ex.loader(train, args.batch_size, args.seed)
            run_timer = ex.Timer()
            history = []
            for epoch in range(1, args.epochs + 1):
                if epoch - 1 in args.lr_steps:
                    for group in opt.param_groups:
                        group["lr"] *= 0.1
                loss, train_err = ex.train_epoch(model, batches, opt, after_backward=flow.step)
                _, test_err = ex.evaluate(model, test, batch_size=250)
                history.append((epoch, train_err, test_err))
                print(f"{name:>10}  epoch {epoch:3d}  loss {loss:.4f}  train error {train_err:6.2%}  "
                      f"test error {test_err:6.2%}  ({run_timer.seconds:.0f} s)", flush=True)
            flow.remove()
            flow.save_jsonl(out / f"grad_flow_{name}.jsonl")
            layers = conv_layers(flow)
            means = flow.mean_grad()
            profile = [means[layer] for layer in layers]
            profiles[name] = profile
            curves[name] = history
            ratio = profile[0] / profile[-1]
            rows.append([name, f"{history[-1][1]:.2%}", f"{history[-1][2]:.2%}", f"{profile[0]:.3g}",
                         f"{profile[-1]:.3g}", f"{ratio:.3g}", f"{run_timer.seconds:.0f}"])
    ex.plot_curves(out / "training_error.png", [
        {"series": {k: ([h[0] for h in v], [100 * h[1] for h in v]) for k, v in curves.items()},
         "styles": {k: ("--" if k.startswith("plain") else "-") + ("s" if k.endswith(str(max(args.depths))) else "o")
                    for k in curves},
         "xlabel": "epoch", "ylabel": "training error (%)", "title": "training error (He et al. Fig. 6)"},
        {"series": {k: ([h[0] for h in v], [100 * h[2] for h in v]) for k, v in curves.items()},
         "xlabel": "epoch", "ylabel": "test error (%)", "title": "test error"}])
    ex.plot_curves(out / "gradient_norms.png", [{
        "series": {k: (list(np.linspace(0, 1, len(v))), v) for k, v in profiles.items()},
        "logy": True, "xlabel": "relative depth of the layer (0 = conv1, 1 = fc)",
        "ylabel": "mean |dL/dW| over all steps", "title": "gradient norm per layer"}])
    config = {k: v for k, v in vars(args).items() if k not in ("out", "data_dir")}
    return ex.write_results(out, "Plain vs residual nets on CIFAR-10",
                            ["network", "final train error", "final test error", "grad norm conv1", "grad norm fc",
                             "conv1 / fc", "seconds"], rows, config, timer.seconds,
                            notes=[f"{len(train)} training images, {len(test)} test images at {args.image_size}x"
                                   f"{args.image_size}, {args.epochs} epochs, "
                                   f"widths {args.width}/{2 * args.width}/{4 * args.width}; gradient norms are means "
                                   f"over all training steps"],
                            extra={"curves": curves, "gradient_profiles": profiles})


if __name__ == "__main__":
    main()
