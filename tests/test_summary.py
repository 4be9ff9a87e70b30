"""tinygrad_cnn.summary: the AlexNet lecture table, MACs and im2col bytes by hand, side-effect freedom."""
import numpy as np
import pytest

import tinygrad_cnn
from tinygrad_cnn import models, nn
from tinygrad_cnn.summary import summary

# The lecture's AlexNet table (227x227x3 input): layer, output HxWxC, parameters.
LECTURE_ALEXNET = [
    ("conv1", (55, 55, 96), (11 * 11 * 3 + 1) * 96),
    ("pool1", (27, 27, 96), 0),
    ("norm1", (27, 27, 96), 0),
    ("conv2", (27, 27, 256), (5 * 5 * 96 + 1) * 256),
    ("pool2", (13, 13, 256), 0),
    ("norm2", (13, 13, 256), 0),
    ("conv3", (13, 13, 384), (3 * 3 * 256 + 1) * 384),
    ("conv4", (13, 13, 384), (3 * 3 * 384 + 1) * 384),
    ("conv5", (13, 13, 256), (3 * 3 * 384 + 1) * 256),
    ("pool3", (6, 6, 256), 0),
    ("fc6", (4096,), (6 * 6 * 256 + 1) * 4096),
    ("fc7", (4096,), (4096 + 1) * 4096),
    ("fc8", (1000,), (4096 + 1) * 1000),
]
# conv name -> (kernel elements per output value = C_in * kh * kw)
CONV_FAN_IN = {"conv1": 3 * 11 * 11, "conv2": 96 * 5 * 5, "conv3": 256 * 9, "conv4": 384 * 9, "conv5": 384 * 9}


@pytest.fixture(scope="module")
def alexnet_summary():
    tinygrad_cnn.manual_seed(0)
    return summary(models.alexnet(), (1, 3, 227, 227))


def nchw(hwc):
    return (1, hwc[2], hwc[0], hwc[1]) if len(hwc) == 3 else (1, hwc[0])


def test_alexnet_reproduces_the_lecture_table(alexnet_summary):
    s = alexnet_summary
    by_name = {row["name"].split(".")[-1]: row for row in s.rows}
    for name, shape, params in LECTURE_ALEXNET:
        row = by_name[name]
        assert row["output_shape"] == nchw(shape), name
        assert row["params"] == params, name
    assert by_name["conv1"]["params"] == 34_944 and by_name["pool1"]["params"] == 0
    assert s.row("features.conv1")["type"] == "Conv2d"
    assert s.totals["params"] == 62_378_344 == sum(p for _, _, p in LECTURE_ALEXNET)
    assert s.totals["output_shape"] == (1, 1000)
    # Layers run in the lecture's order, each ReLU right after its layer.
    order = [row["name"].split(".")[-1] for row in s.rows]
    assert [n for n in order if n in dict((r[0], 0) for r in LECTURE_ALEXNET)] == [r[0] for r in LECTURE_ALEXNET]
    assert order[1] == "relu1"


def test_alexnet_macs_and_memory_by_hand(alexnet_summary):
    s = alexnet_summary
    total_macs = 0
    for name, shape, _ in LECTURE_ALEXNET:
        row = s.row(("features." if name.startswith(("conv", "pool", "norm")) else "classifier.") + name)
        outputs = int(np.prod(shape))
        if name in CONV_FAN_IN:
            macs = outputs * CONV_FAN_IN[name]
            assert row["im2col_bytes"] == 4 * CONV_FAN_IN[name] * shape[0] * shape[1]
        elif name.startswith("fc"):
            macs = outputs * {"fc6": 9216, "fc7": 4096, "fc8": 4096}[name]
            assert row["im2col_bytes"] == 0
        else:
            macs = 0
        assert row["macs"] == macs, name
        assert row["activation_bytes"] == 4 * outputs, name
        assert row["saved_bytes"] == row["activation_bytes"] + row["im2col_bytes"]
        total_macs += macs
    assert s.row("features.conv1")["macs"] == 105_415_200
    assert s.row("features.conv1")["im2col_bytes"] == 363 * 3025 * 4 == 4_392_300
    assert s.totals["macs"] == total_macs == 1_135_256_096
    assert s.totals["saved_bytes"] == sum(r["saved_bytes"] for r in s.rows)


def test_printed_table_in_lecture_notation(alexnet_summary):
    text = alexnet_summary.table(shape_style="hwc")
    conv1_line = next(line for line in text.splitlines() if line.startswith("features.conv1 "))
    assert "55x55x96" in conv1_line and "34,944" in conv1_line and "105,415,200" in conv1_line
    pool1_line = next(line for line in text.splitlines() if line.startswith("features.pool1 "))
    assert "27x27x96" in pool1_line
    total_line = next(line for line in text.splitlines() if line.startswith("Total"))
    assert "62,378,344" in total_line
    assert "(1, 96, 55, 55)" in str(alexnet_summary)  # default style: PyTorch's NCHW


def test_two_tower_alexnet_halves_the_grouped_layers():
    s = summary(models.alexnet(groups=2), (1, 3, 227, 227))
    full = {"conv2": 447_897_600, "conv4": 224_280_576, "conv5": 149_520_384}
    for name, macs in full.items():
        assert s.row(f"features.{name}")["macs"] == macs // 2
    assert s.row("features.conv2")["params"] == (5 * 5 * 48 + 1) * 256
    # The column buffer holds all groups' columns: same size as without groups.
    assert s.row("features.conv2")["im2col_bytes"] == 4 * 96 * 25 * 27 * 27
    assert s.totals["params"] == 60_965_224


def test_small_model_every_number_by_hand():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 9, 5))
    model.double()
    s = summary(model, (2, 3, 5, 5))
    conv, relu, flat, fc = s.rows
    assert conv["output_shape"] == (2, 8, 3, 3) and conv["input_shape"] == (2, 3, 5, 5)
    assert conv["params"] == 8 * 27 + 8
    assert conv["macs"] == 2 * 8 * 9 * 27
    assert conv["im2col_bytes"] == 8 * 2 * 27 * 9  # float64: 8 bytes
    assert conv["activation_bytes"] == 8 * 2 * 8 * 9
    assert relu["macs"] == 0 and relu["params"] == 0
    assert flat["output_shape"] == (2, 72)
    assert fc["macs"] == 2 * 5 * 72 and fc["params"] == 72 * 5 + 5
    assert s.totals["param_bytes"] == 8 * (8 * 27 + 8 + 72 * 5 + 5)
    assert s.totals["input_bytes"] == 8 * 2 * 3 * 25
    assert len(s) == 4 and s[0] is conv and list(s) == s.rows
    assert [r["name"] for r in s] == ["0", "1", "2", "3"]


def test_summary_has_no_side_effects():
    model = models.resnet20(shortcut="B")
    model.train()
    model.layer2.eval()  # a mixed state must come back exactly
    before = {k: np.array(v.numpy(), copy=True) for k, v in model.state_dict().items()}
    rng_before = tinygrad_cnn.random.get_rng_state()
    s = summary(model, (2, 3, 32, 32))
    assert model.training and model.layer1.training and not model.layer2.training
    assert not model.layer2[0].bn1.training and model.layer3[0].bn1.training
    after = model.state_dict()
    for key, value in before.items():
        np.testing.assert_array_equal(after[key].numpy(), value, err_msg=key)
    rng_after = tinygrad_cnn.random.get_rng_state()
    assert all(np.array_equal(np.asarray(rng_before[k]), np.asarray(rng_after[k])) for k in rng_before)
    # The shared ReLU of a block runs twice per block: one row per call.
    assert sum(r["name"] == "layer1.0.relu" for r in s.rows) == 2
    assert s.totals["params"] == sum(int(p.array.size) for p in model.parameters())
    assert s.row("layer2.0.shortcut.0")["output_shape"] == (2, 32, 16, 16)
    assert s.totals["output_shape"] == (2, 10)
    assert model.conv1.weight.grad is None


def test_frozen_parameters_counted_as_not_trainable():
    model = models.lenet5()
    model.features.requires_grad_(False)
    s = summary(model, (1, 1, 28, 28))
    frozen = sum(int(p.array.size) for p in model.features.parameters())
    assert s.totals["params"] == 61_706
    assert s.totals["trainable_params"] == 61_706 - frozen
    assert s.row("features.c5")["output_shape"] == (1, 120, 1, 1)


def test_bad_arguments():
    model = models.lenet5()
    with pytest.raises(ValueError, match="shape_style"):
        summary(model, (1, 1, 28, 28), shape_style="chw")
    with pytest.raises(ValueError, match="batch"):
        summary(model, (28,))
    with pytest.raises(TypeError, match="input_shape"):
        summary(model, None)
    with pytest.raises(KeyError, match="no layer named"):
        summary(model, (1, 1, 28, 28)).row("conv9")
