"""examples/train_resnet_cifar.py run in-process on tiny synthetic CIFAR files (ResNet-8, a few batches).

The central property: a run interrupted (Ctrl-C) after its first epoch, or in the middle of an epoch, and
then resumed ends with weights, optimizer and scheduler state identical to an uninterrupted run.
"""
import json
import os
import pathlib
import signal
import warnings

import numpy as np
import pytest

from tinygrad_cnn.checkpoint import load_checkpoint
from tinygrad_cnn.data import find_shared_data
from tinygrad_cnn.testing import load_script

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "train_resnet_cifar.py"
TINY = ["--depth", "8", "--batch-size", "16", "--eval-batch-size", "32", "--no-progress", "--no-plot",
        "--no-verify", "--lr", "0.05"]


@pytest.fixture(scope="module")
def script():
    return load_script(EXAMPLE)


def run(script, argv, hooks=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "not the official copy" (--no-verify)
        return script.main(argv, hooks=hooks)


def final_state(out):
    state = load_checkpoint(out / "checkpoint.npz")
    return state["model"], state["optimizer"], state["scheduler"], state["loader"], state["metrics"]


def assert_same_state(a, b):
    model_a, opt_a, sched_a, loader_a, metrics_a = a
    model_b, opt_b, sched_b, loader_b, metrics_b = b
    assert list(model_a) == list(model_b)
    for name in model_a:
        np.testing.assert_array_equal(model_a[name], model_b[name], err_msg=name)
    for index, buffers in opt_a["state"].items():
        for key, value in buffers.items():
            np.testing.assert_array_equal(value, opt_b["state"][index][key], err_msg=f"optimizer {index}/{key}")
    assert opt_a["param_groups"] == opt_b["param_groups"]
    assert sched_a == sched_b and loader_a == loader_b
    strip = [{k: v for k, v in r.items() if k not in ("seconds", "img_per_s")} for r in metrics_a]
    assert strip == [{k: v for k, v in r.items() if k not in ("seconds", "img_per_s")} for r in metrics_b]


def sigint_after(condition):
    """Hook that delivers a real SIGINT (as Ctrl-C does) once ``condition(...)`` holds."""
    def hook(*args):
        if condition(*args):
            os.kill(os.getpid(), signal.SIGINT)
    return hook


@pytest.fixture(scope="module")
def reference_runs(script, cifar_dir, tmp_path_factory):
    """Uninterrupted 2-epoch runs with the step and the one-cycle schedule."""
    outs = {}
    for schedule in ("step", "onecycle"):
        out = tmp_path_factory.mktemp(f"ref_{schedule}")
        result = run(script, TINY + ["--data-dir", str(cifar_dir), "--epochs", "2", "--schedule", schedule,
                                     "--out", str(out)])
        assert not result["interrupted"] and result["epochs_done"] == 2
        outs[schedule] = (out, result)
    return outs


def test_outputs_of_a_complete_run(reference_runs, capsys):
    out, result = reference_runs["step"]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2]
    assert set(records[0]) >= {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds", "img_per_s"}
    assert records[0]["lr"] == pytest.approx(0.05) and records[1]["lr"] == pytest.approx(0.005)  # /10 at 50%
    assert 0 <= result["test_acc"] <= 1 and 0 <= result["test_acc_tta"] <= 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_acc"] == result["test_acc"] and summary["config"]["depth"] == 8
    with np.load(out / "model_final.npz", allow_pickle=False) as f:
        names = set(f.files)
    assert "model/conv1.weight" in names and "model/fc.bias" in names
    assert any(n.endswith("running_mean") for n in names)
    with np.load(out / "checkpoint.npz", allow_pickle=False) as f:
        assert int(f["epoch"]) == 2 and "optimizer/state/0/momentum_buffer" in f.files
    # a two-epoch run on separable synthetic colours learns something
    assert records[-1]["train_loss"] < records[0]["train_loss"] or records[-1]["test_acc"] > 0.2


@pytest.mark.parametrize("schedule", ["step", "onecycle"])
def test_resume_after_first_epoch_is_exact(script, cifar_dir, reference_runs, tmp_path, schedule, capsys):
    out = tmp_path / "run"
    argv = TINY + ["--data-dir", str(cifar_dir), "--epochs", "2", "--schedule", schedule, "--out", str(out)]
    first = run(script, argv, hooks={"on_epoch_end": sigint_after(lambda epoch, record: epoch == 1)})
    assert first["interrupted"] and first["epochs_done"] == 1
    assert "stopped after epoch 1" in capsys.readouterr().out
    # what a SIGKILL in the middle of a later save leaves behind: a partial temp file; it is ignored
    (out / ".checkpoint.npz.tmp-999999-dead").write_bytes(b"PK\x03\x04 partial write")
    second = run(script, ["--out", str(out), "--resume", "--no-progress", "--no-plot", "--no-verify",
                          "--data-dir", str(cifar_dir)])
    assert not second["interrupted"] and second["epochs_done"] == 2
    assert "resuming from" in capsys.readouterr().out
    ref_out, ref = reference_runs[schedule]
    assert_same_state(final_state(ref_out), final_state(out))
    assert second["test_acc"] == ref["test_acc"] and second["test_acc_tta"] == ref["test_acc_tta"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_ctrl_c_mid_epoch_saves_and_resumes_exactly(script, cifar_dir, reference_runs, tmp_path, capsys):
    out = tmp_path / "run"
    argv = TINY + ["--data-dir", str(cifar_dir), "--epochs", "2", "--schedule", "onecycle", "--out", str(out)]
    # 40 images / 16 = 3 batches per epoch (16, 16, 8): stop after batch 2 of the second epoch
    first = run(script, argv, hooks={"on_batch_end": sigint_after(
        lambda loader: loader.epoch == 1 and loader.state_dict()["position"] == 2)})
    assert first["interrupted"] and first["epochs_done"] == 1
    state = load_checkpoint(out / "checkpoint.npz")
    assert state["epoch"] == 1 and state["loader"]["position"] == 2 and state["partial"]["seen"] == 32
    assert "stopped in epoch 2" in capsys.readouterr().out
    run(script, ["--out", str(out), "--resume", str(out / "checkpoint.npz"), "--no-progress", "--no-plot",
                 "--no-verify", "--data-dir", str(cifar_dir)])
    assert_same_state(final_state(reference_runs["onecycle"][0]), final_state(out))


def test_resume_refuses_a_different_recipe(script, reference_runs):
    out, _ = reference_runs["step"]
    with pytest.raises(SystemExit, match="--depth 20"):
        run(script, ["--out", str(out), "--resume", "--depth", "20"])


def test_resume_without_checkpoint_and_missing_data(script, tmp_path):
    with pytest.raises(SystemExit, match="no usable checkpoint in .*empty: checkpoint.npz is missing; "
                                         "checkpoint.prev.npz is missing"):
        run(script, ["--out", str(tmp_path / "empty"), "--resume"])
    with pytest.raises(SystemExit, match="looked in"):
        run(script, TINY + ["--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])


def test_defaults_are_the_papers_recipe(script):
    args = script.build_parser().parse_args([])
    assert (args.depth, args.shortcut, args.plain) == (20, "A", False)
    assert (args.optimizer, args.lr, args.momentum, args.weight_decay, args.batch_size) == ("sgd", 0.1, 0.9, 1e-4, 128)
    assert (args.schedule, args.augment, args.verify, args.device) == ("step", True, True, "auto")
    # 391 batches of 128 per epoch: the paper's 32k, 48k and 64k iterations
    assert args.epochs == 164 and script.step_milestones(args.epochs) == [82, 123]
    assert [e * 391 for e in (82, 123, 164)] == [32062, 48093, 64124]
    for bad in (["--depth", "21"], ["--depth", "2"], ["--shortcut", "C"], ["--batch-size", "0"]):
        with pytest.raises(SystemExit):
            script.build_parser().parse_args(bad)
    assert script.explicit_options(script.build_parser(), ["--lr", "0.2", "--plain"]) == {"lr", "plain"}


def test_validation_split_and_subset_data_dir(script, cifar_dir):
    config = {"limit_train": 40, "limit_test": None, "val_split": 0.2, "seed": 0}
    runtime = {"data_dir": str(cifar_dir), "download": False, "verify": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        train, val, test = script.load_cifar(config, runtime)
    assert (len(train), len(val), len(test)) == (32, 8, 8)
    assert not set(map(bytes, train.data)) & set(map(bytes, val.data))


def test_shared_subset_needs_no_verify(script):
    shared = find_shared_data("cifar-10-partial-bin")
    if shared is None:
        pytest.skip("the CIFAR-10 subset (shared/data/cifar-10-partial-bin) is not present")
    config = {"limit_train": None, "limit_test": None, "val_split": 0, "seed": 0}
    for data_dir in (shared, shared.parent):  # the subset folder itself, or the data folder holding it
        with pytest.raises(SystemExit, match="--no-verify"):
            script.load_cifar(config, {"data_dir": str(data_dir), "download": False, "verify": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        train, _, test = script.load_cifar(config, {"data_dir": str(shared.parent), "download": False, "verify": False})
    assert (len(train), len(test)) == (5000, 1000)


@pytest.mark.parametrize("schedule, warmup, expected", [
    ("step", 0, [0.1, 0.1, 0.01, 0.001]),
    ("step", 1, [0.01, 0.1, 0.01, 0.001]),
    ("cosine", 0, [0.1, 0.0853553, 0.05, 0.0146447]),
    ("cosine", 1, [0.01, 0.0853553, 0.05, 0.0146447]),
    ("constant", 0, [0.1] * 4),
])
def test_epoch_schedules(script, schedule, warmup, expected):
    from tinygrad_cnn import Tensor
    config = {"schedule": schedule, "epochs": 4, "warmup_epochs": warmup, "lr": 0.1, "momentum": 0.9,
              "weight_decay": 0.0, "nesterov": False, "optimizer": "sgd"}
    opt = script.build_optimizer(config, [Tensor(np.zeros(2, np.float32), requires_grad=True)])
    sched, per_batch = script.build_scheduler(config, opt, steps_per_epoch=3)
    assert not per_batch
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    np.testing.assert_allclose(lrs, expected, rtol=1e-5)
    assert script.step_milestones(4) == [2, 3]


def test_lenet_mnist_smoke(tmp_path, capsys):
    """examples/train_lenet_mnist.py on 256 real MNIST images for one epoch."""
    mnist = find_shared_data("mnist")
    if mnist is None:
        pytest.skip("MNIST (shared/data/mnist) is not present")
    module = load_script(EXAMPLE.with_name("train_lenet_mnist.py"))
    result = module.main(["--data-dir", str(mnist), "--limit-train", "256", "--limit-test", "128", "--epochs", "1",
                          "--no-progress", "--no-plot", "--out", str(tmp_path)])
    assert len(result["history"]) == 1 and 0 <= result["test_acc"] <= 1
    assert "final test accuracy" in capsys.readouterr().out
    with np.load(tmp_path / "model_final.npz", allow_pickle=False) as f:
        assert "model/features.c1.weight" in f.files
    assert json.loads((tmp_path / "summary.json").read_text())["epochs_done"] == 1


# ---------------------------------------------------------------------------- the output folder

def copy_run(src, dst):
    import shutil
    shutil.copytree(src, dst)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


def test_resume_uses_only_training_checkpoints_and_says_why_none_is_usable(script, reference_runs, tmp_path):
    out = copy_run(reference_runs["step"][0], tmp_path / "run")
    (out / "checkpoint.npz").write_text("not a checkpoint\n")
    (out / "checkpoint.prev.npz").unlink()
    assert (out / "model_final.npz").is_file()          # loadable, but never a resume candidate
    with pytest.raises(SystemExit, match=r"no usable checkpoint in .*run: .*checkpoint.npz is not a checkpoint "
                                         r".*a text file; checkpoint.prev.npz is missing"):
        run(script, ["--out", str(out), "--resume"])
    with pytest.raises(SystemExit, match=r"model_final.npz is not a training checkpoint .*no config, epoch"):
        run(script, ["--resume", str(out / "model_final.npz")])


def test_resume_falls_back_to_the_previous_checkpoint(script, reference_runs, cifar_dir, tmp_path, capsys):
    out = copy_run(reference_runs["step"][0], tmp_path / "run")
    (out / "checkpoint.npz").write_bytes(b"PK\x03\x04 truncated")
    result = run(script, ["--out", str(out), "--resume", "--data-dir", str(cifar_dir), "--no-verify", "--no-progress"])
    assert f"resuming from {out / 'checkpoint.prev.npz'} (epoch 1 of 2 done)" in capsys.readouterr().out
    assert result["epochs_done"] == 2


def test_a_second_writer_of_the_same_folder_is_refused_with_the_holders_pid(script, cifar_dir, tmp_path):
    from tinygrad_cnn.checkpoint import RunDirectoryLock
    out = tmp_path / "busy"
    out.mkdir()
    with RunDirectoryLock(out):
        with pytest.raises(SystemExit, match=rf"--out: .*busy is in use by another run \(PID {os.getpid()}\)"):
            run(script, TINY + ["--data-dir", str(cifar_dir), "--epochs", "1", "--out", str(out)])
    # released: the same run now goes through
    assert run(script, TINY + ["--data-dir", str(cifar_dir), "--epochs", "1", "--out", str(out)])["epochs_done"] == 1


def test_the_lock_dies_with_its_process(tmp_path):
    import subprocess
    import sys
    code = ("import os, signal; from tinygrad_cnn.checkpoint import RunDirectoryLock; "
            f"RunDirectoryLock({str(tmp_path)!r}).acquire(); os.kill(os.getpid(), signal.SIGKILL)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == -signal.SIGKILL
    from tinygrad_cnn.checkpoint import RunDirectoryLock
    RunDirectoryLock(tmp_path).acquire().release()       # not left locked by the killed process


def test_stale_temp_files_of_a_killed_run_are_removed_on_start(script, cifar_dir, tmp_path):
    import subprocess
    import sys
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    stale = [out / f".metrics.jsonl.tmp-{dead.pid}-0a1b2c3d", out / f".checkpoint.npz.tmp-{dead.pid}-deadbeef",
             out / f".summary.json.tmp-{dead.pid}-00ff00ff"]
    alive = out / f".metrics.jsonl.tmp-{os.getpid()}-11111111"       # a live writer's file stays
    for path in stale + [alive]:
        path.write_bytes(b"partial")
    run(script, TINY + ["--data-dir", str(cifar_dir), "--epochs", "1", "--out", str(out)])
    assert not any(path.exists() for path in stale) and alive.exists()


def test_an_impossible_output_folder_is_one_line(script, cifar_dir, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit, match=r"^error: --out: cannot use .*file/run as the output folder: Not a directory$"):
        run(script, TINY + ["--data-dir", str(cifar_dir), "--out", str(tmp_path / "file" / "run")])


def test_a_failed_write_names_the_file_and_the_intact_checkpoint(script, cifar_dir, tmp_path, monkeypatch):
    import errno
    real_save = script.ckpt.save_checkpoint
    calls = []

    def save_until_the_disk_is_full(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(script.ckpt, "save_checkpoint", save_until_the_disk_is_full)
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match=r"^error: cannot write .*run/checkpoint.npz: No space left on device; "
                                         r"the last checkpoint .*run/checkpoint.npz is intact"):
        run(script, TINY + ["--data-dir", str(cifar_dir), "--epochs", "2", "--out", str(out)])
    assert load_checkpoint(out / "checkpoint.npz")["epoch"] == 1


def test_a_file_size_limit_ends_the_script_with_one_line_and_status_1(cifar_dir, tmp_path):
    import resource
    import subprocess
    import sys

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (32 << 10, 32 << 10))   # a checkpoint is ~0.5 MiB

    arguments = [sys.executable, str(EXAMPLE)] + TINY + ["--data-dir", str(cifar_dir), "--epochs", "1"]
    # The same run without the limit first: it compiles and caches the Numba kernels, whose
    # cache files (written by Numba, larger than the limit) are not what this test is about.
    warm = subprocess.run(arguments + ["--out", str(tmp_path / "warm")], capture_output=True, text=True,
                          timeout=600)
    assert warm.returncode == 0, warm.stderr[-2000:]
    out = tmp_path / "run"
    done = subprocess.run(arguments + ["--out", str(out)], capture_output=True, text=True,
                          preexec_fn=limit_file_size, timeout=600)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: cannot write {out / 'checkpoint.npz'}: File too large")
