"""A convolutional denoising autoencoder on MNIST: the up-sampling operators at work.

Clean digits ``x`` in [0, 1] get Gaussian noise, ``x_noisy = clip(x + sigma * n, 0, 1)``, and an
encoder-decoder learns to map ``x_noisy`` back to ``x`` (mean squared error, Adam). The encoder
halves the image twice; two decoders grow it back, trained from the same seed on the same
batches, to compare the two ways of up-sampling::

    encoder:  conv 3x3, 1 -> C, pad 1 -> ReLU -> maxpool 2 (indices kept)       (N, C, 14, 14)
              conv 3x3, C -> 2C, pad 1, stride 2 -> ReLU                         (N, 2C, 7, 7)
    "transposed conv + unpool":
              ConvTranspose2d 3x3, 2C -> C, stride 2, pad 1, output_padding 1 -> ReLU  (N, C, 14, 14)
              MaxUnpool2d 2 (the encoder's indices)                              (N, C, 28, 28)
              conv 3x3, C -> 1, pad 1
    "bilinear upsample + conv":
              Upsample x2 bilinear -> conv 3x3, 2C -> C, pad 1 -> ReLU           (N, C, 14, 14)
              Upsample x2 nearest -> conv 3x3, C -> 1, pad 1                     (N, 1, 28, 28)

The output layer is linear, clipped to [0, 1] only when evaluating. With a sigmoid on the output
both decoders (here and in the same network written in PyTorch) collapse within 50 steps to
predicting black everywhere: the target is mostly 0, the sigmoid is pushed towards 0 where its
slope vanishes, and the MSE gradient through it is gone before the net has learnt the strokes.

Quality is the peak signal-to-noise ratio on test digits, ``PSNR = 10 log10(1 / MSE)`` against
the clean image, for the noisy input and for each decoder's output.

Default run (sized for a 2-core CPU shared with other jobs): 6,000 training images, C = 16,
sigma = 0.5, 3 epochs of Adam (lr 2e-3, batch 64), PSNR on 1,000 test images; a few minutes.

    python examples/denoising_autoencoder.py
    python examples/denoising_autoencoder.py --limit-train 60000 --epochs 10   # the full training set
    python examples/denoising_autoencoder.py --smoke                           # seconds; checks the script only

Writes ``<out>/denoising.png`` (rows: noisy, denoised by each decoder, clean; our own PNG
writer) and ``<out>/results.md`` / ``results.json``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tinygrad_cnn  # noqa: E402
from tinygrad_cnn import Tensor, nn, optim  # noqa: E402
from tinygrad_cnn.nn import functional as F  # noqa: E402

import _experiment_utils as ex  # noqa: E402

DECODERS = ("transposed conv + unpool", "bilinear upsample + conv")


def build_parser():
    p = ex.base_parser(__doc__.splitlines()[0], "runs/denoising_autoencoder")
    p.add_argument("--limit-train", type=ex.positive_int, default=6000)
    p.add_argument("--limit-test", type=ex.positive_int, default=1000)
    p.add_argument("--width", type=ex.positive_int, default=16, help="channels C after the first conv")
    p.add_argument("--sigma", type=ex.positive_float, default=0.5, help="std of the added noise")
    p.add_argument("--epochs", type=ex.positive_int, default=3)
    p.add_argument("--batch-size", type=ex.positive_int, default=64)
    p.add_argument("--lr", type=ex.positive_float, default=2e-3)
    return p


class DenoisingAutoencoder(nn.Module):
    """(N, 1, 28, 28) noisy digits -> (N, 1, 28, 28) estimates of the clean ones (linear output);
    ``decoder`` is one of DECODERS."""

    def __init__(self, width, decoder):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"DenoisingAutoencoder: decoder must be one of {DECODERS}, got {decoder!r}")
        self.decoder = decoder
        self.enc1 = nn.Conv2d(1, width, 3, padding=1)
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.enc2 = nn.Conv2d(width, 2 * width, 3, padding=1, stride=2)
        if decoder == DECODERS[0]:
            self.up1 = nn.ConvTranspose2d(2 * width, width, 3, stride=2, padding=1, output_padding=1)
            self.unpool = nn.MaxUnpool2d(2)
        else:
            self.up1 = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"),
                                     nn.Conv2d(2 * width, width, 3, padding=1))
            self.unpool = nn.Upsample(scale_factor=2, mode="nearest")
        self.out = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, x):
        h, indices = self.pool(F.relu(self.enc1(x)))
        h = F.relu(self.enc2(h))
        h = F.relu(self.up1(h))
        h = self.unpool(h, indices) if self.decoder == DECODERS[0] else self.unpool(h)
        return self.out(h)


def add_noise(clean, sigma, rng):
    return np.clip(clean + sigma * rng.standard_normal(clean.shape), 0, 1).astype(np.float32)


def psnr(images, clean):
    """Mean over images of 10 log10(1 / MSE), pixels in [0, 1]."""
    mse = ((images - clean) ** 2).reshape(len(clean), -1).mean(axis=1)
    return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-12))))


def denoise(model, noisy, batch_size=500):
    model.eval()
    with tinygrad_cnn.no_grad():
        out = np.concatenate([model(Tensor(noisy[i:i + batch_size])).numpy()
                              for i in range(0, len(noisy), batch_size)])
    out = np.clip(out, 0, 1)
    model.train()
    return out


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.limit_train, args.limit_test, args.width, args.epochs, args.batch_size = 128, 32, 4, 1, 32
    timer = ex.Timer()
    train, test = ex.load_mnist(args.data_dir, args.limit_train, args.limit_test, args.seed, normalize=False)
    rng = np.random.default_rng(args.seed)
    clean_train, clean_test = train.data.astype(np.float32), test.data.astype(np.float32)
    noisy_test = add_noise(clean_test, args.sigma, rng)
    print(f"MNIST: {len(clean_train)} training and {len(clean_test)} test images, noise sigma {args.sigma}")
    rows, denoised, curves = [["noisy input", "-", f"{psnr(noisy_test, clean_test):.2f}"]], {}, {}
    for decoder in DECODERS:
        tinygrad_cnn.manual_seed(args.seed)
        model = DenoisingAutoencoder(args.width, decoder)
        opt = optim.Adam(model.parameters(), lr=args.lr)
        batch_rng = np.random.default_rng(args.seed + 1)    # the same batches and noise for both
        history = []
        for epoch in range(1, args.epochs + 1):
            order = batch_rng.permutation(len(clean_train))
            total = 0.0
            for start in range(0, len(order), args.batch_size):
                clean = clean_train[order[start:start + args.batch_size]]
                noisy = add_noise(clean, args.sigma, batch_rng)
                loss = F.mse_loss(model(Tensor(noisy)), Tensor(clean))
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(clean)
            out = denoise(model, noisy_test)
            history.append((epoch, total / len(order), psnr(out, clean_test)))
            print(f"{decoder:>26}  epoch {epoch}  train MSE {history[-1][1]:.5f}  test PSNR {history[-1][2]:.2f} dB",
                  flush=True)
        denoised[decoder], curves[decoder] = out, history
        rows.append([decoder, f"{history[-1][1]:.5f}", f"{history[-1][2]:.2f}"])
    shown = slice(0, min(10, len(clean_test)))
    pictures = [noisy_test[shown]] + [denoised[d][shown] for d in DECODERS] + [clean_test[shown]]
    grids = [ex.image_grid(np.round(255 * np.clip(p, 0, 1)).astype(np.uint8), ncols=len(p), zoom=3)
             for p in pictures]
    ex.write_png(Path(args.out) / "denoising.png", ex.stack_rows(grids))
    config = {k: v for k, v in vars(args).items() if k not in ("out", "data_dir")}
    return ex.write_results(
        args.out, "Denoising autoencoder on MNIST", ["images", "final train MSE", "test PSNR (dB)"], rows,
        config, timer.seconds,
        notes=[f"{len(clean_train)} training images, {len(clean_test)} test images, noise sigma {args.sigma}, "
               f"{args.epochs} epochs; denoising.png rows: noisy, " + ", ".join(DECODERS) + ", clean"],
        extra={"curves": curves})


if __name__ == "__main__":
    main()
