"""Gradients with respect to the input: saliency maps and the fast gradient sign method (FGSM) on MNIST.

Backprop does not stop at the first layer: one more step gives ``dL/dx``, the gradient with
respect to the pixels. Two uses of it:

* **Saliency** (Simonyan et al. 2013): ``|d score_y / dx|`` for the true class ``y`` shows which
  pixels the class score is most sensitive to; on digits they sit on and around the strokes.
* **FGSM** (Goodfellow et al. 2014): ``x_adv = clip(x + eps * sign(dL/dx), 0, 1)`` moves every
  pixel by ``eps`` in the direction that increases the loss. Accuracy falls quickly with ``eps``
  although the digits stay perfectly readable to a person.

The network is the small CNN of these experiments (two 5x5 conv layers, two linear layers) on
pixels in [0, 1] (no normalisation, so ``eps`` is in pixel units). Scaled down for a 2-core CPU
(honest numbers in docs/experiments.md): by default trained on 3,000 training images for 3 epochs,
SGD with lr 0.05 and momentum 0.9; FGSM measured on 500 test images, next to a control that moves
every pixel by the same ``eps`` in a random direction. Runtime on this machine's shared CPU
(``nice -n 10``, heavily loaded): 11.5 minutes.

    python examples/saliency_fgsm.py
    python examples/saliency_fgsm.py --limit-train 60000 --epochs 8 --limit-test 10000
    python examples/saliency_fgsm.py --smoke

Writes ``<out>/saliency.png`` (rows: images, saliency maps), ``<out>/fgsm_examples.png`` (rows:
clean, then one row per example epsilon), both with our own PNG writer,
``<out>/fgsm_accuracy.png`` (matplotlib, the ``plot`` extra) and ``<out>/results.md`` / ``.json``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import tinygrad_cnn  # noqa: E402
from tinygrad_cnn import Tensor, optim  # noqa: E402
from tinygrad_cnn.nn import functional as F  # noqa: E402

import _experiment_utils as ex  # noqa: E402

DEFAULT_EPSILONS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3]


def build_parser():
    p = ex.base_parser(__doc__.splitlines()[0], "runs/saliency_fgsm")
    p.add_argument("--limit-train", type=ex.positive_int, default=3000)
    p.add_argument("--limit-test", type=ex.positive_int, default=500)
    p.add_argument("--epochs", type=ex.positive_int, default=3)
    p.add_argument("--width", type=ex.positive_int, default=16)
    p.add_argument("--batch-size", type=ex.positive_int, default=50)
    p.add_argument("--lr", type=ex.positive_float, default=0.05)
    p.add_argument("--epsilons", type=float, nargs="+", default=DEFAULT_EPSILONS)
    p.add_argument("--examples", type=ex.positive_int, default=10, help="images drawn in the PNGs")
    return p


def input_gradient(model, images, labels, of="loss"):
    """dL/dx for a batch. images: (N, C, H, W) array, labels: (N,) -> (N, C, H, W) array.

    ``of="loss"``: L = summed cross-entropy (FGSM); ``of="score"``: L = sum of the true-class
    logits (saliency). The model is in eval mode, so dropout/BatchNorm do not depend on the batch.
    """
    x = Tensor(np.ascontiguousarray(images), requires_grad=True)
    logits = model(x)
    if of == "loss":
        objective = F.cross_entropy(logits, Tensor(labels), reduction="sum")
    else:
        onehot = np.zeros(logits.shape, dtype=logits.dtype)
        onehot[np.arange(len(labels)), labels] = 1
        objective = (logits * Tensor(onehot)).sum()
    objective.backward()
    return x.grad.numpy()


def fgsm(model, images, labels, eps):
    """x_adv = clip(x + eps * sign(dL/dx), 0, 1); images: (N, C, H, W) in [0, 1]."""
    if eps == 0:
        return images
    grad = input_gradient(model, images, labels, of="loss")
    return np.clip(images + eps * np.sign(grad), 0.0, 1.0).astype(images.dtype)


def random_sign(images, eps, rng):
    """The control for FGSM: every pixel moved by ``eps`` in a random direction, then clipped."""
    if eps == 0:
        return images
    signs = rng.choice(np.array([-1.0, 1.0], dtype=images.dtype), size=images.shape)
    return np.clip(images + eps * signs, 0.0, 1.0).astype(images.dtype)


def predict(model, images, batch_size=500):
    with tinygrad_cnn.no_grad():
        return np.concatenate([model(Tensor(images[i:i + batch_size])).numpy().argmax(1)
                               for i in range(0, len(images), batch_size)])


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.limit_train, args.limit_test, args.epochs, args.width, args.examples = 128, 64, 1, 4, 4
        args.epsilons = [0.0, 0.1, 0.3]
    timer = ex.Timer()
    train, test = ex.load_mnist(args.data_dir, args.limit_train, args.limit_test, args.seed, normalize=False)
    print(f"MNIST (pixels in [0, 1]): {len(train)} training and {len(test)} test images")
    tinygrad_cnn.manual_seed(args.seed)
    model = ex.small_cnn("relu", args.width, in_channels=1, image_size=28)
    opt = optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    batches = ex.loader(train, args.batch_size, args.seed)
    for epoch in range(1, args.epochs + 1):
        loss, train_err = ex.train_epoch(model, batches, opt)
        print(f"epoch {epoch}  loss {loss:.4f}  train error {train_err:6.2%}", flush=True)
    model.eval()
    x, y = test.data, test.targets

    # FGSM accuracy as a function of epsilon, batch by batch, against random signs of the same size
    accuracies, controls, adversarial = [], [], {}
    k = min(args.examples, len(x))
    noise_rng = np.random.default_rng(args.seed)
    for eps in args.epsilons:
        correct = control = 0
        for start in range(0, len(x), 250):
            xb, yb = x[start:start + 250], y[start:start + 250]
            x_adv = fgsm(model, xb, yb, eps)
            correct += int((predict(model, x_adv) == yb).sum())
            control += int((predict(model, random_sign(xb, eps, noise_rng)) == yb).sum())
            if start == 0:
                adversarial[eps] = x_adv[:k]
        accuracies.append(correct / len(x))
        controls.append(control / len(x))
        print(f"eps {eps:.3f}: accuracy under FGSM {accuracies[-1]:.2%}, under random signs {controls[-1]:.2%}",
              flush=True)

    # pictures: saliency of the first k test images, and their adversarial versions
    examples, labels = x[:k], y[:k]
    saliency = np.abs(input_gradient(model, examples, labels, of="score")).max(axis=1, keepdims=True)
    out = Path(args.out)
    ex.write_png(out / "saliency.png", ex.stack_rows([
        ex.image_grid(ex.to_uint8(examples, per_image=False), ncols=k, zoom=3),
        ex.image_grid(ex.to_uint8(saliency, per_image=True), ncols=k, zoom=3)]))
    shown = [e for e in args.epsilons if e > 0][:3]
    ex.write_png(out / "fgsm_examples.png", ex.stack_rows(
        [ex.image_grid(ex.to_uint8(examples, per_image=False), ncols=k, zoom=3)]
        + [ex.image_grid(ex.to_uint8(np.clip(adversarial[e], 0, 1), per_image=False), ncols=k, zoom=3)
           for e in shown]))
    predictions = {f"eps {e:g}": predict(model, adversarial[e]).tolist() for e in [0.0] + shown
                   if e in adversarial}
    ex.plot_curves(out / "fgsm_accuracy.png", [{
        "series": {"FGSM": (args.epsilons, [100 * a for a in accuracies]),
                   "random signs (control)": (args.epsilons, [100 * a for a in controls])},
        "xlabel": "epsilon (pixel units, images in [0, 1])", "ylabel": "test accuracy (%)",
        "title": f"FGSM on {len(x)} MNIST test images"}])
    rows = [[f"{e:g}", f"{a:.2%}", f"{c:.2%}"] for e, a, c in zip(args.epsilons, accuracies, controls)]
    on_strokes, ink_area = _stroke_share(examples, saliency)
    print(f"saliency on or next to the strokes: {on_strokes:.0%} of the total, on {ink_area:.0%} of the pixels")
    config = {k_: v for k_, v in vars(args).items() if k_ not in ("out", "data_dir")}
    notes = [f"saliency on or next to the strokes: {on_strokes:.0%} of the total, on {ink_area:.0%} of the pixels",
             f"labels of the drawn examples: {labels.tolist()}"] + [
        f"predicted at {name}: {p}" for name, p in predictions.items()]
    return ex.write_results(out, "FGSM: test accuracy against epsilon",
                            ["epsilon", "accuracy under FGSM", "accuracy under random signs"], rows, config,
                            timer.seconds, notes=notes,
                            extra={"epsilons": args.epsilons, "accuracies": accuracies, "controls": controls,
                                   "saliency_on_strokes": on_strokes, "stroke_area": ink_area})


def _stroke_share(images, saliency):
    """(share of the total saliency on or next to ink, share of the pixels that are) -- ink is a
    pixel > 0.1, "next to" a 3x3 dilation. Saliency concentrated on the strokes gives share >> area."""
    ink = images > 0.1
    padded = np.pad(ink, ((0, 0), (0, 0), (1, 1), (1, 1)))
    near = np.zeros_like(ink)
    for i in range(3):
        for j in range(3):
            near |= padded[:, :, i:i + ink.shape[2], j:j + ink.shape[3]]
    return float(saliency[near].sum() / (saliency.sum() + 1e-30)), float(near.mean())


if __name__ == "__main__":
    main()
