"""benchmarks/bench_train.py, bench_ops.py, bench_kernels.py and bench_direct_conv.py: they run,
report what they claim, bench_kernels covers every CPU kernel, the direct convolutions of
bench_direct_conv compute the convolution, and the PyTorch network bench_train times is
the same function as ours."""
import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_cnn
from tinygrad_cnn import checkpoint, models
from tinygrad_cnn.testing import load_script

BENCHMARKS = pathlib.Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name):
    return load_script(BENCHMARKS / f"{name}.py")


@pytest.fixture(scope="module")
def bench_train():
    return _load("bench_train")


def test_train_and_inference_measured_and_written(bench_train, tmp_path):
    out = tmp_path / "r.json"
    bench_train.main(["--no-torch", "--batch-size", "2", "--steps", "1", "--warmup", "1",
                      "--rounds", "1", "--threads", "1", "--json", str(out)])
    results = json.loads(out.read_text())
    assert set(results) == {"train", "inference"}
    for mode in results.values():
        ours = mode["ours"]
        assert ours["median_images_per_s"] > 0 and ours["peak_rss_mib"] > 0


def test_profile_lists_every_op_of_a_resnet20_step_at_the_asked_threads():
    # In a fresh process: the thread counts must be set before NumPy loads.
    run = subprocess.run([sys.executable, str(BENCHMARKS / "bench_train.py"), "--profile",
                          "--threads", "1", "--batch-size", "2"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "1 threads" in run.stdout
    calls = {m.group(1): int(m.group(2))
             for m in re.finditer(r"^(\w+)\s+(\d+)\s+[\d.]+\s+[\d.]+", run.stdout, re.M)}
    # ResNet-20: 19 convolutions, each followed by BatchNorm and a ReLU (the stem's, two per
    # block), the two fused into one op (the second of each block with the shortcut's sum).
    assert calls["Conv2d"] == 19 and calls["_BatchNormReLU"] == 19 and "Relu" not in calls
    assert "optimizer step" in run.stdout


def test_profile_refuses_once_numpy_is_loaded(bench_train):
    with pytest.raises(RuntimeError, match="NumPy is already imported"):
        bench_train.profile(20, 2, 1)


def test_torch_network_is_ours(torch, bench_train):
    """The PyTorch ResNet-20 bench_train times computes the same function as ours: same
    weights in, same outputs and loss gradient out, in training mode."""
    tinygrad_cnn.manual_seed(0)
    ours = models.resnet20()
    theirs = bench_train._torch_resnet(20)
    our_state = checkpoint.model_state_arrays(ours)
    their_names = list(theirs.state_dict())
    assert len(their_names) == len(our_state)
    mapped = {}
    for their_name, (our_name, value) in zip(their_names, our_state.items()):
        assert their_name.split(".")[-1] == our_name.split(".")[-1]
        mapped[their_name] = torch.from_numpy(np.array(value))
    theirs.load_state_dict(mapped)
    x = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32)
    y = np.array([1, 0, 3, 9])
    ours.train(), theirs.train()
    our_logits = ours(tinygrad_cnn.Tensor(x))
    loss = tinygrad_cnn.nn.functional.cross_entropy(our_logits, tinygrad_cnn.Tensor(y))
    loss.backward()
    their_logits = theirs(torch.from_numpy(x))
    their_loss = torch.nn.functional.cross_entropy(their_logits, torch.from_numpy(y))
    their_loss.backward()
    np.testing.assert_allclose(our_logits.numpy(), their_logits.detach().numpy(),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours.conv1.weight.grad.numpy(),
                               theirs[0].weight.grad.numpy(), rtol=1e-3, atol=1e-5)


def test_bench_ops_reports_each_family():
    run = subprocess.run([sys.executable, str(BENCHMARKS / "bench_ops.py"), "--only", "relu",
                          "--repeat", "1", "--no-torch", "--threads", "1"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "GEMM peak" in run.stdout
    row = next(line for line in run.stdout.splitlines() if line.startswith("relu"))
    fwd_ms, bwd_ms = (float(v) for v in row.split()[2:4])
    assert fwd_ms > 0 and bwd_ms > 0


def test_bench_kernels_times_every_cpu_kernel_against_its_reference():
    pytest.importorskip("numba")
    bench_kernels = _load("bench_kernels")
    from tinygrad_cnn import backend
    cpu_kernels = set(backend.kernel_table("cpu"))
    assert {case[0] for case in bench_kernels.cases(scale=0.02).values()} == cpu_kernels
    rows = bench_kernels.main(["--scale", "0.02", "--repeat", "1", "--only", "_update"])
    assert [row["kernel"] for row in rows] == ["sgd_update", "adam_update"]
    assert all(row["numpy_ms"] > 0 and row["numba_ms"] > 0 for row in rows)


def test_bench_upsampling_times_every_case():
    bench = _load("bench_upsampling")
    rows = bench.main(["--repeat", "1", "--backend", "numpy"])
    assert [row["op"] for row in rows] == [case[0] for case in bench.CASES]
    assert all(row["fwd_ms"] > 0 and row["bwd_ms"] > 0 for row in rows)


def test_bench_conv_revision_times_a_layer_against_a_revision():
    pytest.importorskip("numba")
    inside_git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=BENCHMARKS, capture_output=True)
    if inside_git.returncode != 0:
        pytest.skip("not a git checkout: there is no earlier revision to load")
    rows = _load("bench_conv_revision").main(["--rev", "HEAD", "--rounds", "1", "--calls", "1",
                                              "--only", "shortcut"])
    assert [row["layer"] for row in rows] == ["resnet20 shortcut B 1x1 s2"]
    assert all(rows[0][key] > 0 for key in ("old_fwd_ms", "new_fwd_ms", "old_bwd_ms", "new_bwd_ms"))


def test_bench_direct_conv_kernels_compute_the_convolution(capsys):
    pytest.importorskip("numba")
    bench = _load("bench_direct_conv")
    from tinygrad_cnn import backend
    reference = backend.kernel("conv2d_forward", np, impl="numpy")
    rng = np.random.default_rng(0)
    # 5 output channels: chain3's block of 3 and a channel left over.
    for c_out in (5, 8):
        x = rng.standard_normal((2, 3, 7, 9)).astype(np.float32)
        w = rng.standard_normal((c_out, 3, 3, 3)).astype(np.float32)
        b = rng.standard_normal(c_out).astype(np.float32)
        geometry = bench.WindowGeometry.build("conv2d", x.shape, 3, 1, 1, 1)
        expected = reference(x, w, b, geometry, 1)
        for name, kernel in bench.VARIANTS.items():
            if name == "layout-only" or c_out % bench.CHANNEL_MULTIPLE[name]:
                continue
            y = np.empty_like(expected)
            bench.make_driver(kernel)(x, w, b, y)
            np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5, err_msg=name)
    bench.main(["--batch", "2", "--rounds", "1", "--variants", "chain3"])
    assert "chain3" in capsys.readouterr().out
