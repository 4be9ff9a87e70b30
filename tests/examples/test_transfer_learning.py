"""examples/transfer_learning.py in its --smoke mode, on tiny synthetic MNIST files.

Beyond "it runs": the linear probe must leave every backbone tensor (BatchNorm statistics included) exactly
as pretrained, fine-tuning must move the backbone with a 10x smaller learning rate than the head, and the
from-scratch network must share nothing with the pretrained one.
"""
import gzip
import pathlib
import struct
import warnings

import numpy as np
import pytest

from tinygrad_cnn.models import read_weights
from tinygrad_cnn.testing import load_script

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "transfer_learning.py"


@pytest.fixture(scope="module")
def script():
    return load_script(EXAMPLE)


def write_idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x801 if array.ndim == 1 else 0x803
    path.write_bytes(gzip.compress(struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.tobytes()))


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    """MNIST-format files, 12 training and 6 test images per digit: a bright bar whose position is the digit."""
    root = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)

    def make(per_digit):
        labels = np.repeat(np.arange(10), per_digit)
        images = rng.integers(0, 40, (labels.size, 28, 28))
        for i, d in enumerate(labels):
            images[i, 2 + 2 * d:4 + 2 * d, 4:24] = 255
        order = rng.permutation(labels.size)
        return images[order], labels[order]

    for prefix, per_digit in (("train", 12), ("t10k", 6)):
        images, labels = make(per_digit)
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return root


@pytest.fixture(scope="module")
def smoke_run(script, mnist_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("work")
    argv = ["--smoke", "--data-dir", str(mnist_dir), "--no-verify", "--pretrain-size", "60",
            "--per-class", "6", "--batch-size", "16", "--test-size", "0"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "not the official copy" (--no-verify)
        return script.main(argv, work_dir=work)


def test_smoke_run_reports_every_accuracy(smoke_run, capsys):
    for name in ("pretrain", "linear probe", "fine-tune", "from scratch"):
        assert 0.0 <= smoke_run[name] <= 1.0, name
    assert smoke_run["seconds"] > 0


def test_linear_probe_keeps_the_backbone_exactly(smoke_run):
    pretrained = read_weights(smoke_run["weights_file"])
    probe = smoke_run["models"]["linear probe"]
    state = probe.state_dict()
    backbone = [key for key in state if not key.startswith("fc.")]
    assert any(key.endswith("running_mean") for key in backbone)
    for key in backbone:
        np.testing.assert_array_equal(state[key].numpy(), pretrained[key], err_msg=key)
    assert all(not p.requires_grad and p.grad is None for name, p in probe.named_parameters()
               if not name.startswith("fc."))
    assert probe.fc.weight.requires_grad and probe.fc.weight.grad is not None
    assert tuple(probe.fc.weight.shape) == (5, 64)


def test_fine_tune_moves_the_backbone_and_scratch_is_independent(smoke_run):
    pretrained = read_weights(smoke_run["weights_file"])
    for name in ("fine-tune", "from scratch"):
        state = smoke_run["models"][name].state_dict()
        assert not np.array_equal(state["layer1.0.conv1.weight"].numpy(), pretrained["layer1.0.conv1.weight"])
        assert all(p.requires_grad for p in smoke_run["models"][name].parameters())
    scratch = smoke_run["models"]["from scratch"].state_dict()
    tuned = smoke_run["models"]["fine-tune"].state_dict()
    # Fine-tuning started at the pretrained weights with a small lr: it stays far closer to them.
    key = "layer3.0.conv2.weight"
    assert np.abs(tuned[key].numpy() - pretrained[key]).max() < np.abs(scratch[key].numpy() - pretrained[key]).max()


def test_fine_tune_parameter_groups(script, smoke_run):
    model, optimizer = script.fine_tune(smoke_run["weights_file"], [], epochs=0, lr=0.2, backbone_lr_scale=0.1)
    backbone, head = optimizer.param_groups
    assert backbone["lr"] == pytest.approx(0.02) and head["lr"] == pytest.approx(0.2)
    assert {id(p) for p in head["params"]} == {id(model.fc.weight), id(model.fc.bias)}
    assert len(backbone["params"]) + 2 == len(list(model.parameters()))
