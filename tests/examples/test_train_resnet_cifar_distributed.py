"""examples/train_resnet_cifar.py on 2 MPI ranks (mpiexec): a few batches, a mid-epoch checkpoint, and resumes
with 2 ranks and with 1, on the tiny synthetic CIFAR files (40 training images, global batch 16)."""
import json
import pathlib
import shutil
import warnings

import numpy as np

from tinygrad_cnn.checkpoint import load_checkpoint
from tinygrad_cnn.testing import load_script, run_mpiexec

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "train_resnet_cifar.py"
RANKS = ROOT / "tests" / "mpi_ranks.py"


def train_on_two_ranks(out, cifar_dir, mode, stop_after=0):
    result = run_mpiexec(2, [RANKS, "train", EXAMPLE, out, cifar_dir, mode, stop_after], timeout=300)
    assert result.returncode == 0, result.stdout
    return result.stdout


def test_two_ranks_checkpoint_and_resume_with_two_or_one(mpi, cifar_dir, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    log = train_on_two_ranks(straight, cifar_dir, "fresh")
    assert "train ok rank 1 of 2: 6 batches, 2 epochs" in log, log
    assert log.count("epoch   2/2 |") == 1, log   # rank 0 alone prints

    log = train_on_two_ranks(resumed, cifar_dir, "fresh", stop_after=2)   # stop after 2 of epoch 1's 3 batches
    assert "train ok rank 0 of 2: 2 batches, 0 epochs, interrupted True" in log, log
    assert "train ok rank 1 of 2: 2 batches, 0 epochs, interrupted True" in log, log
    assert log.count("stopped in epoch 1") == 1, log
    assert load_checkpoint(resumed / "checkpoint.npz")["loader"]["position"] == 2
    one_rank = tmp_path / "one_rank"
    shutil.copytree(resumed, one_rank)

    log = train_on_two_ranks(resumed, cifar_dir, "resume")   # --resume: the remaining 1 + 3 batches
    assert "train ok rank 0 of 2: 4 batches, 2 epochs, interrupted False" in log, log
    want, got = load_checkpoint(straight / "checkpoint.npz"), load_checkpoint(resumed / "checkpoint.npz")
    for name, value in want["model"].items():
        np.testing.assert_array_equal(got["model"][name], value, err_msg=name)
    metrics = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    for record, reference in zip(metrics, want["metrics"], strict=True):   # sums over both ranks, counted once
        for key in ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr"):
            assert record[key] == reference[key], (key, record, reference)
    assert (resumed / "model_final.npz").is_file() and (resumed / "summary.json").is_file()

    # The same checkpoint continued by one process: the epoch's remaining samples, at the global batch size.
    script = load_script(EXAMPLE)
    batches = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        result = script.main(["--out", str(one_rank), "--resume", "--data-dir", str(cifar_dir), "--no-progress",
                              "--no-plot", "--no-verify", "--dist-backend", "none"],
                             hooks={"on_batch_end": lambda loader: batches.append(loader.batch_size)})
    assert result["epochs_done"] == 2 and result["world_size"] == 1 and batches == [16] * 4
    metrics = [json.loads(line) for line in (one_rank / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2] and metrics[0]["train_acc"] * 40 == round(metrics[0]["train_acc"] * 40)
