"""``python -m tinygrad_cnn.info``: versions, GPU facts and the kernel each op will use."""
import json
import subprocess
import sys
import types

import numpy as np
import pytest

from tinygrad_cnn import backend, info
from tinygrad_cnn.kernels import cuda as cuda_kernels


def test_module_runs_and_prints_json():
    result = subprocess.run([sys.executable, "-m", "tinygrad_cnn.info", "--json", "--no-threading-probe"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["numpy"] == np.__version__
    assert report["python"] == sys.version.split()[0]
    assert [row["kernel"] for row in report["kernels"]][:len(info.KNOWN_KERNELS)] == list(info.KNOWN_KERNELS)


def test_report_lists_every_contract_kernel_with_a_consistent_choice():
    report = info.collect(probe_threading=False)
    rows = {row["kernel"]: row for row in report["kernels"]}
    assert set(info.KNOWN_KERNELS) <= set(rows)
    for name, row in rows.items():
        if "numpy" not in row["written"]:
            continue  # reference not written yet: reported as such, checked by the op's own tests
        chosen = backend.kernel(name, np)
        expected = "numba" if chosen is not backend.kernel(name, np, impl="numpy") else "numpy"
        assert row["cpu"] == expected, row
        assert set(row["usable"]) == set(backend.available_implementations(name)), row
        assert row["gpu"].startswith("cupy" if "cupy" in row["written"] else "numpy reference"), row


def test_cpu_choice_follows_the_cpu_backend_setting():
    with backend.cpu_backend("numpy"):
        report = info.collect(probe_threading=False)
    assert report["cpu_backend"] == "numpy"
    assert all(row["cpu"] == "numpy" for row in report["kernels"] if "numpy" in row["written"])


def test_text_report_names_versions_and_install_hint():
    report = info.collect(probe_threading=False)
    text = info.format_report(report)
    assert f"NumPy         {np.__version__}" in text
    assert "adam_update" in text and "im2col" in text
    if not report["cuda"]["cupy_installed"]:
        assert "pip install -e .[cuda]" in text


def test_threading_layer_probe():
    numba = pytest.importorskip("numba")
    report = info._numba_info(probe_threading=True)
    assert report["version"] == numba.__version__
    assert report["threading_layer"] in ("omp", "tbb", "workqueue"), report


def _fake_cupy(device_count_error=None):
    def get_device_count():
        if device_count_error:
            raise device_count_error
        return 1

    runtime = types.SimpleNamespace(
        runtimeGetVersion=lambda: 13000, driverGetVersion=lambda: 13010, getDeviceCount=get_device_count,
        getDeviceProperties=lambda i: {"name": b"Fake GPU", "totalGlobalMem": 8 * 2**30, "major": 9, "minor": 0},
        memGetInfo=lambda: (6 * 2**30, 8 * 2**30))

    class Device:
        def __init__(self, index):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    return types.SimpleNamespace(__version__="14.0.0", cuda=types.SimpleNamespace(runtime=runtime, Device=Device))


def test_gpu_facts_are_reported(monkeypatch):
    # Collected before the fake is installed, so the backend's cached CuPy check never sees it.
    report = info.collect(probe_threading=False)
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    cuda = info._cuda_info()
    assert cuda["cupy_version"] == "14.0.0" and cuda["runtime_version"] == "13.0"
    assert cuda["driver_version"] == "13.1" and cuda["available"]
    assert cuda["devices"][0]["name"] == "Fake GPU" and cuda["devices"][0]["total_memory_gib"] == 8.0
    text = info.format_report({**report, "cuda": cuda})
    assert "Fake GPU" in text and "CUDA driver   13.1" in text


def test_broken_cuda_install_is_reported_not_raised(monkeypatch):
    report = info.collect(probe_threading=False)
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(RuntimeError("cudaErrorInsufficientDriver: driver too old")))
    cuda = info._cuda_info()
    assert not cuda["available"] and "driver too old" in cuda["error"]
    text = info.format_report({**report, "cuda": cuda})
    assert "none usable" in text and "driver too old" in text


def test_report_says_why_each_implementation_runs():
    report = info.collect(probe_threading=False)
    rows = {row["kernel"]: row for row in report["kernels"]}
    if backend.numba_available():
        assert rows["im2col"]["cpu_why"] == "Numba kernel in tinygrad_cnn.kernels.cpu.conv"
        assert rows["sgd_update"]["cpu_why"] == "Numba kernel in tinygrad_cnn.kernels.cpu.optim"
        assert rows["rmsprop_update"]["cpu_why"].startswith("no Numba kernel written")
    assert rows["im2col"]["gpu_why"] == "CUDA kernel in tinygrad_cnn.kernels.cuda.conv"
    assert rows["relu_forward"]["gpu_why"] == cuda_kernels.REFERENCE_ONLY["relu_forward"]
    with backend.cpu_backend("numpy"):
        report = info.collect(probe_threading=False)
    assert all("CPU backend set to numpy" in row["cpu_why"] for row in report["kernels"])
    text = info.format_report(report)
    assert "CPU: CPU backend set to numpy" in text and "GPU: CUDA kernel in" in text
