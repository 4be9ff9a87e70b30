"""The CuPy backend on a real NVIDIA GPU. Every test here is skipped where no GPU is visible.

The op/module/optimizer tests elsewhere run on the GPU too through the ``device`` fixture; this
file adds what only makes sense with a device: CPU-vs-GPU parity of every CUDA kernel in float32
and float64, float64 gradient checks of each op with the tensors on the device, seeding, device
movement, the GPU-resident data loader and a short training run.

Tolerances (documented in docs/cuda.md): float64 ``rtol = 1e-10``; float32 ``rtol = 1e-5``,
both with ``atol = rtol * max(1, max |expected|)``. The GPU may fuse multiply-adds, sums run in a
different order, and ``pow``/``exp`` differ from the CPU's by an ulp or two.
"""
import numpy as np
import pytest

import tinygrad_cnn
from tinygrad_cnn import backend
from tinygrad_cnn._arguments import WindowGeometry
from tinygrad_cnn import cuda as tcuda

pytestmark = pytest.mark.skipif(not tcuda.is_available(),
                                reason="no CUDA device: CuPy is not installed or sees no GPU")

DTYPES = [np.float32, np.float64]
RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}


def to_gpu(value):
    import cupy
    return cupy.asarray(value) if isinstance(value, np.ndarray) else value


def to_cpu(value):
    return value.get() if hasattr(value, "get") else value


def assert_close(actual, expected, dtype, err_msg=""):
    actual, expected = np.asarray(to_cpu(actual)), np.asarray(expected)
    assert actual.shape == expected.shape, err_msg
    rtol = RTOL[np.dtype(dtype)]
    finite = expected[np.isfinite(expected)]
    scale = float(np.abs(finite).max()) if finite.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(scale, 1.0), err_msg=err_msg)


# ---------------------------------------------------------------------------
# Kernel parity: CUDA kernel on the GPU == NumPy reference on the CPU
# ---------------------------------------------------------------------------

def _kernel_cases(dtype):
    """``{kernel name: (args, kwargs, indices of in-place arrays)}`` with small random inputs."""
    import tinygrad_cnn.nn.functional  # noqa: F401 - registers the references
    import tinygrad_cnn.optim  # noqa: F401
    rng = np.random.default_rng(0)

    def randn(*shape):
        return rng.standard_normal(shape).astype(dtype)

    x = randn(2, 3, 9, 8)
    cols_geometry = (3, 3, 2, 1, 1, 1, 1, 2, 5, 6)  # kh kw sh sw ph pw dh dw oh ow
    x3 = randn(4, 5, 6) * 2 + 1
    c = 5
    weight, bias = randn(c), randn(c)
    mean, var = randn(c), (rng.random(c) + 0.5).astype(dtype)
    inv_std = (1 / np.sqrt(var.astype(np.float64) + 1e-5)).astype(dtype)
    logits = randn(6, 7) * 3
    target = rng.integers(0, 7, 6).astype(np.int64)
    target[1] = -100
    class_weight = (rng.random(7) + 0.5).astype(dtype)
    logsumexp = np.log(np.exp(logits.astype(np.float64)).sum(1))
    _, max_indices = backend.kernel("max_pool2d_forward", np, impl="numpy")(x, (3, 3), (2, 2), (1, 1), (1, 1),
                                                                             (5, 4))
    _, lrn_scale = backend.kernel("lrn_forward", np, impl="numpy")(x3, 5, 1e-2, 0.75, 2.0)
    param = randn(33)
    conv_weight = randn(4, 3, 3, 3)
    conv_geometry = WindowGeometry.build("conv2d", x.shape, 3, 1, 1, 1)
    optional = {}
    if "im2col_wide" in backend._references:
        optional["im2col_wide"] = ((x, 3, 2, 1, 0, 2, 1), {}, ())
    return optional | {
        "im2col": ((x,) + cols_geometry, {}, ()),
        "conv2d_forward": ((x, conv_weight, randn(4), conv_geometry, 1), {}, ()),
        "conv2d_backward": ((randn(2, 4, 9, 8), x, conv_weight, conv_geometry, 1, (True, True, True)), {}, ()),
        "col2im": ((randn(27, 2 * 30), 2, 3, 9, 8) + cols_geometry, {}, ()),
        "max_pool2d_forward": ((x, (3, 3), (2, 2), (1, 1), (1, 1), (5, 4)), {}, ()),
        "max_pool2d_backward": ((randn(2, 3, 5, 4), max_indices, (9, 8)), {}, ()),
        "avg_pool2d_forward": ((x, (3, 2), (2, 2), (1, 1), (5, 5), False, None), {}, ()),
        "avg_pool2d_backward": ((randn(2, 3, 5, 5), (9, 8), (3, 2), (2, 2), (1, 1), True, None), {}, ()),
        "batch_norm_forward": ((x3, weight, bias, 1e-5), {}, ()),
        "batch_norm_backward": ((randn(4, 5, 6), x3, weight, mean, inv_std, True), {}, ()),
        "lrn_forward": ((x3, 5, 1e-2, 0.75, 2.0), {}, ()),
        "lrn_backward": ((randn(4, 5, 6), x3, lrn_scale, 5, 1e-2, 0.75), {}, ()),
        "softmax_cross_entropy_forward": ((logits, target, class_weight, -100, 0.1), {}, ()),
        "softmax_cross_entropy_backward": ((logits, logsumexp, target, class_weight, -100, 0.1, randn(6)), {},
                                           ()),
        "dropout_forward": ((x3, rng.random(x3.shape).astype(dtype), 0.3), {}, ()),
        "sgd_update": ((param.copy(), randn(33), randn(33)),
                       dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-2, nesterov=False), (0, 2)),
        "adam_update": ((param.copy(), randn(33), randn(33) * 0.1, randn(33) ** 2, randn(33) ** 2),
                        dict(step=3, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1, amsgrad=True,
                             decoupled_weight_decay=True), (0, 2, 3, 4)),
        "adagrad_update": ((param.copy(), randn(33), randn(33) ** 2),
                           dict(step=2, lr=0.1, lr_decay=0.01, weight_decay=0.01, eps=1e-10), (0, 2)),
        "rmsprop_update": ((param.copy(), randn(33), randn(33) ** 2 + 1, randn(33) * 0.1, randn(33)),
                           dict(lr=1e-2, alpha=0.9, eps=1e-8, weight_decay=0.01, momentum=0.9, centered=True),
                           (0, 2, 3, 4)),
    }


def _copy(value):
    return value.copy() if isinstance(value, np.ndarray) else value


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_every_cuda_kernel_matches_the_reference(dtype):
    cases = _kernel_cases(dtype)
    for name, (args, kwargs, in_place) in cases.items():
        cpu_args = [_copy(a) for a in args]
        gpu_args = [to_gpu(_copy(a)) for a in args]
        expected = backend.kernel(name, np, impl="numpy")(*cpu_args, **kwargs)
        kernel = backend.kernel(name, backend.get_array_module(gpu_args[0]))
        assert kernel is backend.kernel_table("cuda")[name], f"{name}: {kernel.__module__}"
        got = kernel(*gpu_args, **kwargs)
        if isinstance(expected, tuple):
            for i, (a, b) in enumerate(zip(got, expected)):
                assert_close(a, b, dtype, err_msg=f"{name} output {i}")
        elif expected is not None:
            assert_close(got, expected, dtype, err_msg=name)
        for index in in_place:
            assert_close(gpu_args[index], cpu_args[index], dtype, err_msg=f"{name} in-place argument {index}")


def test_kernels_fall_back_to_the_reference_for_other_dtypes():
    import cupy
    x = cupy.arange(12, dtype=cupy.float16).reshape(1, 1, 3, 4)
    out = backend.kernel("avg_pool2d_forward", cupy)(x, (2, 2), (1, 1), (0, 0), (2, 3), True, None)
    assert out.dtype == cupy.float16 and out.shape == (1, 1, 2, 3)


# ---------------------------------------------------------------------------
# Devices, seeding, modules
# ---------------------------------------------------------------------------

def test_tensor_moves_between_devices_and_gradients_follow():
    x = tinygrad_cnn.Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y = x.cuda()
    assert y.device == "cuda" and y.to("cpu").device == "cpu"
    (y * y).sum().backward()
    assert x.grad.device == "cpu"
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.arange(6.0).reshape(2, 3))


def test_a_tensor_built_from_a_gpu_array_stays_on_the_gpu():
    # PyTorch's rule: without device=, a tensor is made where its data already is.
    array = to_gpu(np.arange(6.0).reshape(2, 3))
    t = tinygrad_cnn.Tensor(array)
    assert t.device == "cuda" and t.dtype == np.float64
    assert tinygrad_cnn.Tensor(t).device == "cuda"
    assert tinygrad_cnn.Tensor(array, device="cpu").device == "cpu"
    array[0, 0] = 7.0                      # the tensor holds a copy, as for host arrays
    assert t[0, 0].item() == 0.0


def test_clip_grad_norm_returns_the_norm_on_the_parameters_device():
    p = tinygrad_cnn.Tensor(np.zeros(4, np.float32), device="cuda", requires_grad=True)
    p.grad = tinygrad_cnn.Tensor(np.full(4, 3.0, np.float32), device="cuda")
    total = tinygrad_cnn.nn.utils.clip_grad_norm_([p], max_norm=1.0)
    assert total.device == "cuda" and p.grad.device == "cuda"
    assert abs(total.item() - 6.0) < 1e-5
    assert abs(float(np.linalg.norm(p.grad.numpy())) - 1.0) < 1e-5


def test_mixing_devices_names_both():
    a = tinygrad_cnn.Tensor([1.0, 2.0])
    b = tinygrad_cnn.Tensor([1.0, 2.0], device="cuda")
    with pytest.raises(RuntimeError, match="cpu.*cuda|cuda.*cpu"):
        a + b


def test_synchronize_and_device_facts():
    tcuda.synchronize()
    tcuda.synchronize("cpu")
    assert tcuda.device_count() >= 1
    props = tcuda.get_device_properties()
    assert props["total_memory"] > 0 and props["name"]
    free, total = tcuda.mem_get_info()
    assert 0 < free <= total


def test_manual_seed_makes_gpu_dropout_reproducible():
    import tinygrad_cnn.nn.functional as F
    x = tinygrad_cnn.Tensor(np.ones((64, 64), np.float32), device="cuda")
    tinygrad_cnn.manual_seed(11)
    first = F.dropout(x, 0.5).numpy()
    tinygrad_cnn.manual_seed(11)
    second = F.dropout(x, 0.5).numpy()
    np.testing.assert_array_equal(first, second)
    tinygrad_cnn.manual_seed(12)
    assert not np.array_equal(first, F.dropout(x, 0.5).numpy())
    assert 0.4 < (first == 0).mean() < 0.6


def _small_cnn():
    from tinygrad_cnn import nn
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.LocalResponseNorm(3), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 2 * 2, 5))


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_training_step_matches_cpu(dtype):
    """Forward, backward and an SGD step of a small CNN: GPU == CPU."""
    from tinygrad_cnn import nn, optim
    rng = np.random.default_rng(3)
    images = rng.standard_normal((6, 3, 8, 8)).astype(dtype)
    labels = rng.integers(0, 5, 6)
    results = {}
    for device in ("cpu", "cuda"):
        tinygrad_cnn.manual_seed(0)
        model = _small_cnn().to(dtype)
        model.to(device)
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        loss = nn.CrossEntropyLoss(label_smoothing=0.1)(
            model(tinygrad_cnn.Tensor(images, device=device)), tinygrad_cnn.Tensor(labels, device=device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        results[device] = (loss.item(), [p.numpy() for p in model.parameters()])
    assert_close(results["cuda"][0], results["cpu"][0], dtype, "loss")
    for i, (a, b) in enumerate(zip(results["cuda"][1], results["cpu"][1])):
        assert_close(a, b, dtype, f"parameter {i}")


def _layers():
    """``{name: (factory, input shape)}``: one instance of every layer type, small inputs."""
    from tinygrad_cnn import nn
    return {
        "Conv2d": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 7, 6)),
        "Conv2d_groups_dilation": (lambda: nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2, bias=False),
                                   (2, 4, 6, 6)),
        "Linear": (lambda: nn.Linear(5, 3), (4, 5)),
        "BatchNorm2d_train": (lambda: nn.BatchNorm2d(3), (4, 3, 3, 3)),
        "BatchNorm2d_eval": (lambda: nn.BatchNorm2d(3).eval(), (4, 3, 3, 3)),
        "BatchNorm1d": (lambda: nn.BatchNorm1d(5), (6, 5)),
        "GroupNorm": (lambda: nn.GroupNorm(2, 4), (2, 4, 3, 3)),
        "LayerNorm": (lambda: nn.LayerNorm(5), (3, 5)),
        "LocalResponseNorm": (lambda: nn.LocalResponseNorm(3), (2, 5, 3, 3)),
        "MaxPool2d": (lambda: nn.MaxPool2d(3, stride=2, padding=1), (2, 3, 7, 6)),
        "AvgPool2d": (lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (2, 3, 7, 6)),
        "AdaptiveAvgPool2d": (lambda: nn.AdaptiveAvgPool2d((2, 3)), (2, 3, 5, 7)),
        "AdaptiveMaxPool2d": (lambda: nn.AdaptiveMaxPool2d(2), (2, 3, 5, 5)),
        "ReLU": (nn.ReLU, (3, 4)),
        "LeakyReLU": (lambda: nn.LeakyReLU(0.1), (3, 4)),
        "GELU": (nn.GELU, (3, 4)),
        "Tanh": (nn.Tanh, (3, 4)),
        "Sigmoid": (nn.Sigmoid, (3, 4)),
        "Softmax": (lambda: nn.Softmax(dim=1), (3, 4)),
        "LogSoftmax": (lambda: nn.LogSoftmax(dim=1), (3, 4)),
        "Dropout_eval": (lambda: nn.Dropout(0.5).eval(), (3, 4)),
        "Flatten": (nn.Flatten, (2, 3, 2, 2)),
    }


def _forward_backward(module, x_array, device):
    """Output, input gradient and parameter gradients (host arrays) of ``sum(module(x) * weights)``."""
    x = tinygrad_cnn.Tensor(x_array, device=device, requires_grad=True)
    out = module(x)
    assert out.device == device, f"output on {out.device}, expected {device}"
    upstream = np.linspace(-1.0, 1.0, out.array.size).reshape(out.shape)
    (out * tinygrad_cnn.Tensor(upstream, dtype=out.dtype, device=device)).sum().backward()
    grads = []
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        assert parameter.grad.device == device, f"gradient of {name} is on {parameter.grad.device}"
        grads.append(parameter.grad.numpy())
    assert x.grad.device == device, f"input gradient is on {x.grad.device}"
    return [out.numpy(), x.grad.numpy()] + grads


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("layer", sorted(_layers()))
def test_every_layer_matches_cpu(layer, dtype):
    """Forward and backward of each layer type on the device == on the CPU (same weights)."""
    factory, shape = _layers()[layer]
    x = np.random.default_rng(2).standard_normal(shape).astype(dtype)
    results = {}
    for device in ("cpu", "cuda"):
        tinygrad_cnn.manual_seed(0)
        module = factory().to(dtype).to(device)
        results[device] = _forward_backward(module, x, device)
    for i, (a, b) in enumerate(zip(results["cuda"], results["cpu"])):
        assert_close(a, b, dtype, f"{layer}: result {i} (output, input grad, parameter grads)")


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "alexnet_cifar"])
def test_models_match_cpu(name):
    """A whole model's forward and backward (float64, train mode) on the device == on the CPU."""
    from tinygrad_cnn import models
    factories = {"lenet5": (models.lenet5, (2, 1, 28, 28)), "resnet20": (models.resnet20, (2, 3, 32, 32)),
                 "alexnet_cifar": (lambda: models.alexnet(num_classes=10, variant="cifar", dropout=0.0),
                                   (2, 3, 32, 32))}
    factory, shape = factories[name]
    x = np.random.default_rng(3).standard_normal(shape)
    results = {}
    for device in ("cpu", "cuda"):
        tinygrad_cnn.manual_seed(0)
        model = factory().to(np.float64).to(device)
        results[device] = _forward_backward(model, x, device)
    for i, (a, b) in enumerate(zip(results["cuda"], results["cpu"])):
        assert_close(a, b, np.float64, f"{name}: result {i}")


_OPTIMIZERS = {
    "SGD": dict(lr=0.1, momentum=0.9, dampening=0.1, weight_decay=1e-2),
    "SGD_nesterov": dict(lr=0.1, momentum=0.9, nesterov=True),
    "Adam": dict(lr=1e-2, weight_decay=1e-2, amsgrad=True),
    "AdamW": dict(lr=1e-2, weight_decay=1e-2),
    "Adagrad": dict(lr=0.1, lr_decay=1e-2, weight_decay=1e-2),
    "RMSprop": dict(lr=1e-2, momentum=0.9, centered=True, weight_decay=1e-2),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", sorted(_OPTIMIZERS))
def test_every_optimizer_matches_cpu_and_keeps_state_on_device(name, dtype):
    from tinygrad_cnn import optim
    kind = getattr(optim, name.split("_")[0])
    rng = np.random.default_rng(5)
    initial = [rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal(7).astype(dtype)]
    grads = [[rng.standard_normal(a.shape).astype(dtype) for a in initial] for _ in range(3)]
    results = {}
    for device in ("cpu", "cuda"):
        params = [tinygrad_cnn.Tensor(a, device=device, requires_grad=True) for a in initial]
        opt = kind(params, **_OPTIMIZERS[name])
        for step_grads in grads:
            for p, g in zip(params, step_grads):
                p.grad = tinygrad_cnn.Tensor(g, device=device)
            opt.step()
        for p in params:
            assert p.device == device and p.dtype == dtype
        for state in opt.state.values():
            for key, value in state.items():
                if hasattr(value, "shape") and getattr(value, "ndim", 0) > 0:
                    assert backend.device_of(value) == device, f"{name}: state {key!r} left the device"
        results[device] = [p.numpy() for p in params]
    for i, (a, b) in enumerate(zip(results["cuda"], results["cpu"])):
        assert_close(a, b, dtype, f"{name}: parameter {i}")


def test_model_state_dict_round_trip_through_the_host(tmp_path):
    """save_weights/load_weights and checkpoints read device tensors through host copies."""
    from tinygrad_cnn import models
    tinygrad_cnn.manual_seed(0)
    model = models.lenet5().to("cuda")
    state = model.state_dict()
    assert all(t.device == "cuda" for t in state.values())
    tinygrad_cnn.manual_seed(1)
    other = models.lenet5().to("cuda")
    other.load_state_dict(state)
    for key, value in other.state_dict().items():
        assert value.device == "cuda", key
        np.testing.assert_array_equal(value.numpy(), state[key].numpy(), err_msg=key)
    path = tmp_path / "lenet.npz"
    models.save_weights(model, str(path))
    tinygrad_cnn.manual_seed(2)
    loaded = models.lenet5().to("cuda")
    models.load_weights(loaded, str(path))
    for key, value in loaded.state_dict().items():
        assert value.device == "cuda", key
        np.testing.assert_array_equal(value.numpy(), state[key].numpy(), err_msg=key)


# ---------------------------------------------------------------------------
# float64 gradient checks with the tensors on the device
# ---------------------------------------------------------------------------

def _device_ops():
    import tinygrad_cnn.nn.functional as F
    rng = np.random.default_rng(1)
    x4 = rng.standard_normal((2, 3, 6, 5))
    ops = {
        "max_pool2d": (lambda x: F.max_pool2d(x, 3, stride=2, padding=1), [x4]),
        "avg_pool2d": (lambda x: F.avg_pool2d(x, 3, stride=2, padding=1), [x4]),
        "batch_norm": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                       [x4, rng.random(3) + 0.5, rng.standard_normal(3)]),
        "local_response_norm": (lambda x: F.local_response_norm(x, 3, alpha=0.5, beta=0.75, k=1.5), [x4]),
        "cross_entropy": (lambda x: F.cross_entropy(
            x, tinygrad_cnn.Tensor(np.array([0, 2, 1, 2]), device="cuda"), label_smoothing=0.1),
            [rng.standard_normal((4, 3))]),
        "conv2d": (lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1),
                   [x4, rng.standard_normal((2, 3, 3, 3)), rng.standard_normal(2)]),
        "linear": (lambda x, w: F.linear(x, w), [rng.standard_normal((3, 4)), rng.standard_normal((2, 4))]),
    }
    return ops


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d", "batch_norm", "local_response_norm", "cross_entropy",
                                "conv2d", "linear"])
def test_gradcheck_on_device(op):
    fn, arrays = _device_ops()[op]
    inputs = tuple(tinygrad_cnn.Tensor(a, dtype=np.float64, device="cuda", requires_grad=True) for a in arrays)
    assert tinygrad_cnn.gradcheck(fn, inputs)


def test_dropout_gradient_on_device():
    import tinygrad_cnn.nn.functional as F
    x = tinygrad_cnn.Tensor(np.linspace(1, 2, 50), device="cuda", requires_grad=True)
    tinygrad_cnn.manual_seed(4)
    out = F.dropout(x, 0.3)
    out.sum().backward()
    kept = out.numpy() != 0
    np.testing.assert_allclose(x.grad.numpy(), kept / 0.7)


# ---------------------------------------------------------------------------
# GPU-resident data loading and a short training run
# ---------------------------------------------------------------------------

def test_gpu_resident_loader_yields_device_batches_equal_to_cpu():
    from tinygrad_cnn.data import ArrayDataset, DataLoader
    rng = np.random.default_rng(0)
    dataset = ArrayDataset(rng.integers(0, 256, (20, 3, 8, 8), dtype=np.uint8), rng.integers(0, 10, 20))
    batches = {}
    for device in ("cpu", "cuda"):
        loader = DataLoader(dataset, batch_size=8, shuffle=True, seed=5, device=device, prefetch=0)
        batches[device] = [(x, y) for x, y in loader]
    for (xc, yc), (xg, yg) in zip(batches["cpu"], batches["cuda"]):
        assert xg.device == "cuda" and yg.device == "cuda"
        np.testing.assert_allclose(xg.numpy(), xc.numpy(), rtol=1e-6)
        np.testing.assert_array_equal(yg.numpy(), yc.numpy())


def test_resnet20_trains_on_gpu():
    """A few SGD steps on one fixed batch must lower the loss (the whole model on the device)."""
    from tinygrad_cnn import models, nn, optim
    tinygrad_cnn.manual_seed(0)
    model = models.resnet20().to("cuda")
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    rng = np.random.default_rng(0)
    images = tinygrad_cnn.Tensor(rng.standard_normal((32, 3, 32, 32)).astype(np.float32), device="cuda")
    labels = tinygrad_cnn.Tensor(rng.integers(0, 10, 32), device="cuda")
    criterion = nn.CrossEntropyLoss()
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = criterion(model(images), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] * 0.7, losses


def test_info_reports_the_gpu_and_cupy_kernels():
    from tinygrad_cnn import info
    report = info.collect(probe_threading=False)
    assert report["cuda"]["available"] and report["cuda"]["devices"]
    rows = {row["kernel"]: row for row in report["kernels"]}
    for name in info.KNOWN_KERNELS:
        assert rows[name]["gpu"] == "cupy" and "cupy" in rows[name]["usable"], rows[name]
