"""benchmarks/compare_torch_cifar.py: skips without PyTorch; the PyTorch side is the same network and recipe."""
import json
import pathlib
import sys
import warnings

import numpy as np
import pytest

import tinygrad_cnn
from tinygrad_cnn import checkpoint, models
from tinygrad_cnn.testing import load_script

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "compare_torch_cifar.py"


@pytest.fixture(scope="module")
def compare():
    return load_script(SCRIPT)


def test_skips_cleanly_without_torch(compare, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes "import torch" raise ImportError
    assert compare.main(["--out", str(tmp_path / "out"), "--epochs", "1"]) is None
    assert "PyTorch is not installed" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_torch_network_equals_ours_from_the_same_weights(torch, compare, shortcut):
    tinygrad_cnn.manual_seed(0)
    ours = models.cifar_resnet(8, num_classes=10, shortcut=shortcut)
    theirs = compare.torch_resnet(torch, 8, shortcut)
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in checkpoint.model_state_arrays(ours).items()})
    x = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32)
    for train in (True, False):  # batch statistics, then running statistics
        ours.train(train)
        theirs.train(train)
        with torch.no_grad():
            expected = theirs(torch.from_numpy(x)).numpy()
        with tinygrad_cnn.no_grad():
            got = ours(tinygrad_cnn.Tensor(x)).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_tiny_comparison_run(torch, compare, tmp_path, capsys):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, 8).astype(np.uint8)
        np.concatenate([labels[:, None], rng.integers(0, 256, (8, 3072)).astype(np.uint8)], axis=1).tofile(folder / name)
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # synthetic files are not the official CIFAR-10
        summary = compare.main(["--data-dir", str(tmp_path), "--no-verify", "--depth", "8", "--epochs", "1",
                                "--batch-size", "16", "--limit-train", "32", "--seeds", "0", "--out", str(out)])
    assert set(summary) == {"torch", "tinygrad_cnn", "difference"}
    saved = json.loads((out / "compare.json").read_text())
    assert [r["framework"] for r in saved["results"]] == ["torch", "tinygrad_cnn"]
    for row in saved["results"]:
        assert 0 <= row["test_acc"] <= 1 and row["train_seconds"] > 0
    assert "difference (tinygrad_cnn - torch)" in capsys.readouterr().out
