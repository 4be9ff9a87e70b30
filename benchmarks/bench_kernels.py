"""Every CPU kernel against its NumPy reference, at the sizes a training step gives it.

    python benchmarks/bench_kernels.py            # all kernels
    python benchmarks/bench_kernels.py --only pool
    python benchmarks/bench_kernels.py --scale 0.1

The kernel tests compare values, not speed, so a "fast" kernel that is slower than the
reference it replaces passes them; this table shows it (marked ``SLOWER``). Each row is
timed as in bench_ops.py (median of ``--repeat`` samples of about 20 ms, after warm-up), on
the current thread count (Numba's and BLAS's defaults). Sizes are a ResNet-20 stage-1 activation (128, 16, 32, 32),
an AlexNet LRN input and a 1000-class batch; ``--scale`` shrinks the batch dimension.
The Winograd tile kernels run on an 8-image slice of the same activation (a worker's slice
in the stage-1 layers); im2col kernels appear twice: on a 2-image slice, run as a convolution's worker runs it (on
one Numba thread, so the serial loop), and on the whole batch (the differentiable path used
with ``create_graph=True``).
"""
from __future__ import annotations

import argparse

import numpy as np
from bench_ops import _median_time        # a sibling script: this folder is on sys.path

from tinygrad_cnn import backend
from tinygrad_cnn._arguments import WindowGeometry
import tinygrad_cnn.nn.functional  # noqa: F401  (registers the references)


def cases(scale=1.0):
    """{label: (kernel name, args[, keyword args])} for every CPU kernel, at training-step sizes."""
    rng = np.random.default_rng(0)
    batch = max(2, int(128 * scale))

    def randn(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    def reference(name):
        return backend.kernel(name, np, impl="numpy")

    x = randn(batch, 16, 32, 32)
    unit = (3, 3, 1, 1, 1, 1, 1, 1, 32, 32)                 # kernel, stride, pad, dilation, out
    down = (3, 3, 2, 2, 1, 1, 1, 1, 16, 16)
    pooled, argmax = reference("max_pool2d_forward")(x, (3, 3), (2, 2), (1, 1), (1, 1), (16, 16))
    rows = randn(batch, 16, 1024)
    weight, bias = randn(16), randn(16)
    mean = rows.mean(axis=(0, 2))
    inv_std = (1 / np.sqrt(rows.var(axis=(0, 2)) + 1e-5)).astype(np.float32)
    lrn_input = np.abs(randn(max(1, batch // 8), 96, 55 * 55))
    _, lrn_scale = reference("lrn_forward")(lrn_input, 5, 1e-4, 0.75, 2.0)
    logits, target = randn(batch, 1000), rng.integers(0, 1000, batch)
    ones = np.ones(1000, np.float32)
    params = max(1 << 16, int((1 << 22) * scale))
    logsumexp = np.log(np.exp(logits.astype(np.float64)).sum(axis=1))
    down_cols = reference("im2col")(x[:2], *down)
    slice7 = x[:7]                         # a worker's slice of a stride-2 layer
    down_phase_cols = reference("im2col_phases")(slice7, *down)
    conv_weight = randn(16, 16, 3, 3)
    fc_weight, fc_input = randn(4096, 9216), randn(max(2, batch // 8), 9216)
    conv_geometry = WindowGeometry.build("conv2d", x.shape, 3, 1, 1, 1)
    # The Winograd tiles of a worker's slice of a stage-1 layer (8 images, 64 tiles each).
    winograd_m = randn(36, 16, len(x[:8]) * 64)
    return {
        "conv2d_forward 3x3, 16 channels": ("conv2d_forward",
                                            (x, conv_weight, None, conv_geometry, 1)),
        "conv2d_backward 3x3, 16 channels": ("conv2d_backward",
                                             (randn(*x.shape), x, conv_weight, conv_geometry, 1,
                                              (True, True, False))),
        "winograd_input_tiles, 8-image slice": ("winograd_input_tiles", (x[:8], 1, 1, 32, 32)),
        "winograd_grad_tiles, 8-image slice": ("winograd_grad_tiles", (x[:8], 32, 32)),
        "winograd_output_tiles, 8-image slice": ("winograd_output_tiles",
                                                 (winograd_m, len(x[:8]), 32, 32)),
        "im2col_wide, 2-image slice": ("im2col_wide", (x[:2], 3, 3, 1, 1, 1, 1)),
        "im2col_wide, whole batch": ("im2col_wide", (x, 3, 3, 1, 1, 1, 1)),
        "im2col stride 2, 2-image slice": ("im2col", (x[:2],) + down),
        "im2col stride 1, whole batch": ("im2col", (x,) + unit),
        "col2im stride 2, 2-image slice": ("col2im", (down_cols, 2, 16, 32, 32) + down),
        "im2col_phases stride 2, 7-image slice": ("im2col_phases", (slice7,) + down),
        "col2im_phases stride 2, 7-image slice": ("col2im_phases",
                                                  (down_phase_cols, len(slice7), 16, 32, 32) + down),
        "max_pool2d_forward 3x3 s2": ("max_pool2d_forward",
                                      (x, (3, 3), (2, 2), (1, 1), (1, 1), (16, 16))),
        "max_pool2d_backward": ("max_pool2d_backward", (randn(*pooled.shape), argmax, (32, 32))),
        "avg_pool2d_forward 3x3 s2": ("avg_pool2d_forward",
                                      (x, (3, 3), (2, 2), (1, 1), (16, 16), False, None)),
        "avg_pool2d_backward": ("avg_pool2d_backward", (randn(*pooled.shape), (32, 32), (3, 3),
                                                        (2, 2), (1, 1), False, None)),
        "batch_norm_forward": ("batch_norm_forward", (rows, weight, bias, 1e-5)),
        "batch_norm_backward": ("batch_norm_backward",
                                (randn(*rows.shape), rows, weight, mean, inv_std, True)),
        "batch_norm_relu_forward (+ residual)": ("batch_norm_relu_forward",
                                                 (rows, weight, bias, 1e-5, randn(*rows.shape))),
        "batch_norm_relu_backward (+ residual)": (
            "batch_norm_relu_backward", (randn(*rows.shape), np.maximum(rows, 0), rows, weight, mean,
                                         inv_std, True, True)),
        "sgd_update momentum (4M parameters)": ("sgd_update", (
            randn(params), randn(params), randn(params)), dict(
                lr=0.01, momentum=0.9, dampening=0.0, weight_decay=5e-4, nesterov=False)),
        "adam_update (4M parameters)": ("adam_update", (
            randn(params), randn(params), randn(params), np.abs(randn(params)), None), dict(
                step=3, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                amsgrad=False, decoupled_weight_decay=False)),
        "lrn_forward (AlexNet conv1)": ("lrn_forward", (lrn_input, 5, 1e-4, 0.75, 2.0)),
        "lrn_backward": ("lrn_backward",
                         (randn(*lrn_input.shape), lrn_input, lrn_scale, 5, 1e-4, 0.75)),
        "dropout_forward": ("dropout_forward",
                            (rows, rng.random(rows.shape).astype(np.float32), 0.3)),
        "matmul_2d, AlexNet fc6 forward (transposed, 4096 x 9216 @ 9216 x batch)": (
            "matmul_2d", (fc_weight, fc_input.T)),
        "relu_forward": ("relu_forward", (x,)),
        "relu_backward": ("relu_backward", (randn(*x.shape), np.maximum(x, 0))),
        "erf": ("erf", (x,)),
        "softmax_cross_entropy_forward (1000 classes)": (
            "softmax_cross_entropy_forward", (logits, target, ones, -100, 0.0)),
        "softmax_cross_entropy_backward (1000 classes)": (
            "softmax_cross_entropy_backward",
            (logits, logsumexp, target, ones, -100, 0.0, np.ones(batch, np.float32))),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--only", default="", help="run the rows whose label contains this")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the batch of 128")
    args = p.parse_args(argv)
    if not backend.numba_available():
        print("Numba is not installed: there are no fast CPU kernels to compare.")
        return []
    import numba
    rows = []
    print(f"{'kernel':<48}{'numpy ms':>10}{'numba ms':>10}{'speed-up':>10}")
    for label, (name, kernel_args, *options) in cases(args.scale).items():
        if args.only not in label:
            continue
        options = options[0] if options else {}     # keyword arguments (the optimizer steps)
        reference = backend.kernel(name, np, impl="numpy")
        fast = backend.kernel(name, np, impl="numba")
        ref_ms = _median_time(lambda: reference(*kernel_args, **options), args.repeat) * 1e3
        threads = numba.get_num_threads()
        if "slice" in label:
            numba.set_num_threads(1)          # as inside a batch-slice worker
        try:
            fast_ms = _median_time(lambda: fast(*kernel_args, **options), args.repeat) * 1e3
        finally:
            numba.set_num_threads(threads)
        mark = "   SLOWER" if fast_ms > 1.1 * ref_ms else ""
        print(f"{label:<48}{ref_ms:>10.3f}{fast_ms:>10.3f}{ref_ms / fast_ms:>9.2f}x{mark}")
        rows.append(dict(label=label, kernel=name, numpy_ms=ref_ms, numba_ms=fast_ms))
    return rows


if __name__ == "__main__":
    main()
