"""benchmarks/bench_train.py, bench_ops.py, bench_kernels.py, bench_direct_conv.py, the two
revision comparisons and the shared _machine.py: they run, report what they claim (with the machine they ran on), bench_kernels
covers every CPU kernel, the direct convolutions of bench_direct_conv compute the convolution,
and the PyTorch networks bench_train times have the layers of ours."""
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


@pytest.fixture(scope="module")
def machine():
    return _load("_machine")


MACHINE_LINE = re.compile(r"^machine: .+, 1 threads, .+, GEMM peak \d+ GFLOP/s$", re.M)


def test_train_and_inference_measured_and_written(bench_train, tmp_path, capsys):
    out = tmp_path / "r.json"
    bench_train.main(["--no-torch", "--batch-size", "2", "--steps", "1", "--warmup", "1",
                      "--rounds", "1", "--threads", "1", "--json", str(out)])
    assert MACHINE_LINE.search(capsys.readouterr().out)
    results = json.loads(out.read_text())
    assert set(results) == {"machine", "settings", "train", "inference"}
    assert results["settings"]["model"] == "resnet20"
    assert results["machine"]["threads"] == 1 and results["machine"]["gemm_peak_gflops"] > 0
    assert results["machine"]["cpu_model"]
    for mode in ("train", "inference"):
        ours = results[mode]["ours"]
        assert ours["median_images_per_s"] > 0 and ours["peak_rss_mib"] > 0


def test_alexnet_training_step_measured_at_224(bench_train, tmp_path, capsys):
    out = tmp_path / "r.json"
    bench_train.main(["--model", "alexnet", "--batch-size", "2", "--steps", "1", "--warmup", "0",
                      "--rounds", "1", "--no-torch", "--threads", "1", "--modes", "train",
                      "--json", str(out)])
    printed = capsys.readouterr().out
    assert MACHINE_LINE.search(printed) and "alexnet train, batch 2" in printed
    results = json.loads(out.read_text())
    assert results["settings"] == {"model": "alexnet", "batch_size": 2, "steps": 1, "warmup": 0,
                                   "rounds": 1, "threads": 1, "clock": "wall", "isa": "native"}
    assert results["train"]["ours"]["median_images_per_s"] > 0
    assert results["train"]["ours"]["isa"] == "host"     # no NUMBA_CPU_NAME in the child


def test_isa_cap_reaches_every_library_of_the_children(bench_train, monkeypatch):
    """--isa avx2 sets the variables that make Numba compile for Haswell, OpenBLAS and MKL take
    their AVX2 kernels and ATen and oneDNN dispatch to theirs, in every child and in the GEMM
    peak's measurement; native sets none of them."""
    seen = []

    def fake_run(cmd, env, **kwargs):
        seen.append(env)
        return subprocess.CompletedProcess(cmd, 0, stdout=json.dumps({"gemm_peak_gflops": 1.0}),
                                           stderr="")

    monkeypatch.setattr(bench_train.subprocess, "run", fake_run)
    for isa in ("avx2", "native"):
        args = bench_train.argparse.Namespace(
            model="resnet", depth=20, batch_size=2, steps=1, warmup=0, threads=1, clock="wall",
            isa=isa)
        bench_train._run_child(args, "ours", "train")
        info = bench_train._machine(1, isa)
        assert info.get("isa_cap") == (None if isa == "native" else isa)
    capped, capped_peak, native, native_peak = seen
    for env in (capped, capped_peak):
        assert env["NUMBA_CPU_NAME"] == "haswell" and env["OPENBLAS_CORETYPE"] == "Haswell"
        assert env["ATEN_CPU_CAPABILITY"] == "avx2" and env["ONEDNN_MAX_CPU_ISA"] == "AVX2"
        assert env["MKL_ENABLE_INSTRUCTIONS"] == "AVX2"
    for env in (native, native_peak):
        assert not set(bench_train.ISA_ENV["avx2"]) & (set(env) - set(bench_train.os.environ))


def test_each_model_has_its_defaults(bench_train):
    assert bench_train.MODELS["resnet"]["batch_size"] == 128
    assert bench_train.MODELS["alexnet"]["batch_size"] == 16
    assert bench_train.MODELS["vgg16"]["batch_size"] == 8
    assert {m["size"] for m in bench_train.MODELS.values()} == {32, 224}


def _profile(*args):
    # In a fresh process: the thread counts must be set before NumPy loads.
    run = subprocess.run([sys.executable, str(BENCHMARKS / "bench_train.py"), "--profile",
                          "--threads", "1", "--steps", "1", *args],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    ops, _, layers = run.stdout.partition("\nper layer")
    assert layers, "no per-layer table"
    return ops, layers


def _layer_rows(table):
    """{name: (shape, grads, fwd ms, bwd ms, fwd GFLOP/s, bwd GFLOP/s)} of the per-layer table."""
    rows = {}
    for m in re.finditer(r"^(\S+)\s+((?:conv|linear) [^\n]*?)\s+(dW\+dx|dW)\s+([\d.]+)\s+([\d.]+)"
                         r"\s+([\d.]+)\s+([\d.]+)\s+\d+%\s+\d+%$", table, re.M):
        rows[m.group(1)] = (m.group(2), m.group(3), *(float(v) for v in m.group(4, 5, 6, 7)))
    return rows


def test_profile_lists_every_op_and_layer_of_a_resnet20_step_at_the_asked_threads():
    ops, layers = _profile("--batch-size", "2")
    assert MACHINE_LINE.search(ops) and "1 threads" in ops
    calls = {m.group(1): int(m.group(2))
             for m in re.finditer(r"^(\w+)\s+(\d+)\s+[\d.]+\s+[\d.]+", ops, re.M)}
    # ResNet-20: 19 convolutions, each followed by BatchNorm and a ReLU (the stem's, two per
    # block), the two fused into one op (the second of each block with the shortcut's sum).
    assert calls["Conv2d"] == 19 and calls["_BatchNormReLU"] == 19 and "Relu" not in calls
    assert "optimizer step" in ops
    rows = _layer_rows(layers)
    assert len(rows) == 20                               # 19 convolutions and the classifier
    # The stem's input (the images) needs no gradient, so its backward is dW alone.
    assert rows["conv1"][:2] == ("conv 3->16 3x3 s1 32x32", "dW")
    assert rows["layer2.0.conv1"][:2] == ("conv 16->32 3x3 s2 32x32", "dW+dx")
    assert rows["fc"][:2] == ("linear 64->10", "dW+dx")
    assert all(fwd > 0 and bwd > 0 for _, _, fwd, bwd, _, _ in rows.values())
    assert "all of them" in layers


def test_profile_of_alexnet_lists_its_eight_layers():
    _, layers = _profile("--model", "alexnet", "--batch-size", "1")
    rows = _layer_rows(layers)
    assert [shape for shape, *_ in rows.values()] == [
        "conv 3->64 11x11 s4 224x224", "conv 64->192 5x5 s1 27x27", "conv 192->384 3x3 s1 13x13",
        "conv 384->256 3x3 s1 13x13", "conv 256->256 3x3 s1 13x13",
        "linear 9216->4096", "linear 4096->4096", "linear 4096->1000"]
    # 2 FLOPs * 64 output channels * 55 * 55 positions * 3 * 11 * 11 multiply-adds each, batch 1.
    _, grads, fwd_ms, _, fwd_rate, _ = rows["features.0"]
    assert grads == "dW"
    assert abs(fwd_rate - 2 * 64 * 55 * 55 * 3 * 121 / (fwd_ms * 1e-3) / 1e9) <= 0.01 * fwd_rate + 0.1


X86_AVX512 = """processor	: 0
vendor_id	: AuthenticAMD
model name	: AMD EPYC 9R14 96-Core Processor
flags		: fpu sse sse2 avx avx2 fma avx512f avx512bw
"""
X86_AVX2 = "model name\t: Intel(R) Xeon(R) CPU\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
ARM64 = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm aes crc32\n"


def test_machine_reads_the_cpu_model_and_vector_width(machine):
    assert machine.cpu_model(X86_AVX512) == "AMD EPYC 9R14 96-Core Processor"
    assert machine.vector_width_bits(X86_AVX512) == 512
    assert machine.vector_isa(X86_AVX512) == (512, "AVX-512")
    assert machine.vector_width_bits(X86_AVX2) == 256
    assert machine.vector_isa(ARM64) == (128, "NEON")
    assert machine.vector_isa("") == (None, "unknown")
    # No "model name" line (ARM kernels, no /proc): the platform module's answer, never empty.
    assert machine.cpu_model(ARM64)


def test_machine_line(machine):
    info = dict(cpu_model="AMD EPYC", vector_isa="AVX-512", vector_width_bits=512, threads=2,
                gemm_peak_gflops=201.6)
    assert machine.machine_line(info) == \
        "machine: AMD EPYC, 2 threads, AVX-512 (512-bit vectors), GEMM peak 202 GFLOP/s"
    info.update(vector_isa="unknown", vector_width_bits=None, gemm_peak_gflops=None)
    assert machine.machine_line(info) == "machine: AMD EPYC, 2 threads, unknown vector width"


def test_machine_describes_this_machine(machine):
    info = machine.describe(3, 12.5)
    assert info["threads"] == 3 and info["gemm_peak_gflops"] == 12.5 and info["cpu_model"]
    assert info["vector_width_bits"] in (None, 128, 256, 512)


def test_profile_refuses_once_numpy_is_loaded(bench_train):
    with pytest.raises(RuntimeError, match="NumPy is already imported"):
        bench_train.profile(20, 2, 1)


def test_torch_network_is_ours(torch, bench_train):
    """The PyTorch ResNet-20 bench_train times computes the same function as ours: same
    weights in, same outputs and loss gradient out, in training mode. In float64: in float32
    the first layer's weight gradient of a 4-image batch is ill-conditioned (BatchNorm over 4
    images, ReLU masks near zero; moving the input by 1e-6 of itself moves it by up to 1e-3),
    so rounding differences between any two implementations show there, not the function."""
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
    ours, theirs = ours.to(tinygrad_cnn.float64), theirs.double()
    x = np.random.default_rng(0).normal(size=(4, 3, 32, 32))
    y = np.array([1, 0, 3, 9])
    ours.train(), theirs.train()
    our_logits = ours(tinygrad_cnn.Tensor(x))
    loss = tinygrad_cnn.nn.functional.cross_entropy(our_logits, tinygrad_cnn.Tensor(y))
    loss.backward()
    their_logits = theirs(torch.from_numpy(x))
    their_loss = torch.nn.functional.cross_entropy(their_logits, torch.from_numpy(y))
    their_loss.backward()
    np.testing.assert_allclose(our_logits.numpy(), their_logits.detach().numpy(),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ours.conv1.weight.grad.numpy(),
                               theirs[0].weight.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_torch_alexnet_is_ours(torch, bench_train):
    """bench_train's PyTorch AlexNet (torchvision's layout) computes the same function as
    ``alexnet(variant="torchvision")``: same keys and shapes, same logits from the same weights."""
    ours = models.alexnet(variant="torchvision")
    theirs = bench_train._torch_model("alexnet", 20)
    our_state = checkpoint.model_state_arrays(ours)
    assert {k: tuple(v.shape) for k, v in theirs.state_dict().items()} == \
        {k: tuple(np.shape(v)) for k, v in our_state.items()}
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in our_state.items()})
    ours.eval(), theirs.eval()
    x = np.random.default_rng(0).normal(size=(1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    with tinygrad_cnn.no_grad():
        np.testing.assert_allclose(ours(tinygrad_cnn.Tensor(x)).numpy(), expected,
                                   rtol=1e-3, atol=1e-4)


def test_torch_vgg16_has_our_layers(torch, bench_train):
    """bench_train's PyTorch VGG-16 (torchvision's layout) has ``vgg16()``'s modules and parameter
    shapes (built on the meta device: 138 million parameters need no memory there)."""
    with torch.device("meta"):
        theirs = bench_train._torch_model("vgg16", 20)
    ours = models.vgg16()
    assert {k: tuple(v.shape) for k, v in theirs.state_dict().items()} == \
        {k: tuple(np.shape(v)) for k, v in checkpoint.model_state_arrays(ours).items()}
    assert [type(m).__name__ for m in theirs.modules()][1:] == \
        [type(m).__name__ for m in ours.modules()][1:]


def test_bench_ops_reports_each_family(tmp_path):
    out = tmp_path / "ops.json"
    run = subprocess.run([sys.executable, str(BENCHMARKS / "bench_ops.py"), "--only", "relu",
                          "--repeat", "1", "--no-torch", "--threads", "1", "--json", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert MACHINE_LINE.search(run.stdout)
    written = json.loads(out.read_text())
    assert written["machine"]["threads"] == 1 and written["machine"]["gemm_peak_gflops"] > 0
    assert [row["op"] for row in written["rows"]] == ["relu (128,16,32,32)"]
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


@pytest.fixture
def git_checkout():
    """The revision comparisons check out an earlier revision: they need a git checkout (CI
    runs on a clone; an unpacked source archive has no history)."""
    inside_git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=BENCHMARKS, capture_output=True)
    if inside_git.returncode != 0:
        pytest.skip("not a git checkout: there is no earlier revision to check out")


def test_bench_conv_revision_times_a_layer_against_a_revision(git_checkout):
    pytest.importorskip("numba")
    rows = _load("bench_conv_revision").main(["--rev", "HEAD", "--rounds", "1", "--calls", "1",
                                              "--only", "shortcut"])
    assert [row["layer"] for row in rows] == ["resnet20 shortcut B 1x1 s2"]
    assert all(rows[0][key] > 0 for key in ("old_fwd_ms", "new_fwd_ms", "old_bwd_ms", "new_bwd_ms"))


def test_bench_revisions_times_this_checkout_against_a_revision(git_checkout, capsys):
    result = _load("bench_revisions").main(["--rev", "HEAD", "--mode", "inference", "--rounds", "1",
                                            "--steps", "1"])
    assert result["old_ms"] > 0 and result["new_ms"] > 0
    assert "time ratio new / old" in capsys.readouterr().out
    worktrees = subprocess.run(["git", "worktree", "list"], cwd=BENCHMARKS, capture_output=True,
                               text=True).stdout
    assert "/old " not in worktrees                      # the temporary tree is removed


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
