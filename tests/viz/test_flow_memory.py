"""GradientFlow against gradient norms derived by hand; memory_report against byte counts derived by hand."""
import json
import types

import numpy as np
import pytest

from tinygrad_cnn import Tensor, nn, viz
from tinygrad_cnn.autograd import Function


# ----------------------------------------------------------------------------- GradientFlow

def _two_layer(rng):
    """Linear(3, 4) -> tanh -> Linear(4, 2) in float64 with known weights."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    for p in model.parameters():
        p.array = rng.standard_normal(p.shape)
    return model


def _hand_gradients(model, x):
    """Gradients of L = sum(model(x)), derived by hand.

    h = x W1^T + b1, a = tanh h, y = a W2^T + b2.  dL/dy = 1, so dL/db2 = N * 1,
    dL/dW2 = 1^T a (column sums of a, one row per output), dL/da = 1 W2,
    dL/dh = dL/da * (1 - a^2), dL/dW1 = (dL/dh)^T x, dL/db1 = column sums of dL/dh.
    """
    w1, b1, w2, b2 = (p.array for p in model.parameters())
    a = np.tanh(x @ w1.T + b1)
    ones = np.ones((x.shape[0], w2.shape[0]))
    g_h = (ones @ w2) * (1 - a ** 2)
    return {"0.weight": g_h.T @ x, "0.bias": g_h.sum(0), "2.weight": ones.T @ a, "2.bias": ones.sum(0)}


def _norm(*arrays):
    return float(np.sqrt(sum(np.sum(np.asarray(a) ** 2) for a in arrays)))


def test_gradient_and_weight_norms_equal_hand_computed():
    rng = np.random.default_rng(0)
    model = _two_layer(rng)
    x = rng.standard_normal((5, 3))
    flow = viz.GradientFlow(model, parameters=None)       # weights and biases
    assert flow.layers == ["0", "2"]
    model(Tensor(x)).sum().backward()
    record = flow.step()
    hand = _hand_gradients(model, x)
    w1, b1, w2, b2 = (p.array for p in model.parameters())
    assert record["step"] == 0
    assert record["grad"]["0"] == pytest.approx(_norm(hand["0.weight"], hand["0.bias"]), rel=1e-12)
    assert record["grad"]["2"] == pytest.approx(_norm(hand["2.weight"], hand["2.bias"]), rel=1e-12)
    assert record["weight"]["0"] == pytest.approx(_norm(w1, b1), rel=1e-12)
    assert record["weight"]["2"] == pytest.approx(_norm(w2, b2), rel=1e-12)
    assert flow.ratios()["2"] == pytest.approx(record["grad"]["2"] / record["weight"]["2"])

    # the default watches weights only
    weights_only = viz.GradientFlow(model)
    for p in model.parameters():
        p.grad = None
    model(Tensor(x)).sum().backward()
    record = weights_only.step()
    assert record["grad"]["0"] == pytest.approx(_norm(hand["0.weight"]), rel=1e-12)
    assert record["grad"]["2"] == pytest.approx(_norm(hand["2.weight"]), rel=1e-12)
    assert record["weight"]["2"] == pytest.approx(_norm(w2), rel=1e-12)


def test_hooks_leave_gradients_unchanged_and_accumulate_like_grad():
    rng = np.random.default_rng(1)
    model = _two_layer(rng)
    x1, x2 = rng.standard_normal((4, 3)), rng.standard_normal((6, 3))
    reference = [g.copy() for g in _hand_gradients(model, x1).values()]
    flow = viz.GradientFlow(model, parameters=None)
    model(Tensor(x1)).sum().backward()
    for p, expected in zip(model.parameters(), reference):
        np.testing.assert_allclose(p.grad.numpy(), expected, rtol=1e-12)
    model(Tensor(x2)).sum().backward()              # gradient accumulation: two backwards, one step
    record = flow.step()
    accumulated = {name: p.grad.numpy() for name, p in model.named_parameters()}
    assert record["grad"]["0"] == pytest.approx(_norm(accumulated["0.weight"], accumulated["0.bias"]), rel=1e-12)
    assert record["grad"]["2"] == pytest.approx(_norm(accumulated["2.weight"], accumulated["2.bias"]), rel=1e-12)
    assert flow.step()["grad"] == {}                # nothing flowed since the last step


def test_frozen_parameters_remove_history_and_table(tmp_path):
    rng = np.random.default_rng(2)
    model = _two_layer(rng)
    model[0].weight.requires_grad_(False)
    flow = viz.GradientFlow(model)
    assert flow.layers == ["2"]                     # a frozen weight cannot take a hook
    x = rng.standard_normal((3, 3))
    for _ in range(3):
        model(Tensor(x)).sum().backward()
        flow.step()
        model[2].weight.grad = None
    expected = _norm(_hand_gradients(model, x)["2.weight"])
    assert [h["step"] for h in flow.history] == [0, 1, 2]
    assert flow.mean_grad() == {"2": pytest.approx(expected, rel=1e-12)}
    assert "2" in flow.table() and f"{expected:.3e}" in flow.table()
    flow.save_jsonl(tmp_path / "flow.jsonl")
    lines = (tmp_path / "flow.jsonl").read_text().splitlines()
    assert [json.loads(line)["grad"]["2"] for line in lines] == pytest.approx([expected] * 3)
    flow.remove()
    model(Tensor(x)).sum().backward()
    assert flow.step()["grad"] == {}


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    model = _two_layer(np.random.default_rng(3))
    flow = viz.GradientFlow(model)
    model(Tensor(np.ones((2, 3)))).sum().backward()
    flow.step()
    path = flow.plot(str(tmp_path / "flow.png"))
    assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- memory_report

def _cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64, 10))


def _expected_bytes(n):
    """Bytes held for backward by _cnn() at input (n, 1, 8, 8) float32, derived by hand.

    conv:    its input x, n*1*8*8 floats (weights are parameters: not counted)
    bn:      its input, n*4*8*8 floats, plus batch mean and 1/std, 4 floats each
    tanh:    its output (dx = g * (1 - y^2)), n*4*8*8 floats
    maxpool: argmax indices, n*4*4*4 int64
    flatten: nothing (a view)
    linear:  its input, a view of the pooled map: n*64 floats (weight.T is a view of a parameter)
    """
    return {"0": 4 * n * 64, "1": 4 * n * 4 * 64 + 2 * 4 * 4, "2": 4 * n * 4 * 64, "3": 8 * n * 4 * 16,
            "4": 0, "5": 4 * n * 64}


@pytest.mark.parametrize("n", [2, 5])
def test_memory_report_matches_hand_computed_bytes(n):
    report = viz.memory_report(_cnn(), (n, 1, 8, 8))
    expected = _expected_bytes(n)
    assert [r["name"] for r in report.rows] == list(expected)
    assert {r["name"]: r["bytes"] for r in report.rows} == expected
    assert report.total_bytes == sum(expected.values())
    conv = report.row("0")
    # im2col columns: (C_in*kh*kw, N*OH*OW) = (1*3*3, n*8*8) floats, rebuilt from x in backward
    assert conv["column_bytes"] == 4 * 9 * n * 64
    assert conv["columns"] == "recomputed" and conv["mode"] == "recomputes im2col"
    assert report.peak_recomputed_bytes == 4 * 9 * n * 64
    assert [report.row(k)["mode"] for k in ("1", "2", "3", "4", "5")] == ["stores"] * 3 + ["nothing", "stores"]
    assert all(r["columns"] is None and r["column_bytes"] == 0 for r in report.rows[1:])
    assert ("Tanh", "saved[0]", (n, 4, 8, 8), "float32", 4 * n * 256) in report.row("2")["items"]
    text = str(report)
    assert "recomputes im2col" in text and "total held" in text
    with pytest.raises(KeyError, match="no layer named 'nope'"):
        report.row("nope")


def test_memory_report_counts_a_shared_input_once():
    # conv2 reads what relu wrote: the buffer is counted at relu, conv2 holds nothing new
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 3, 3))
    report = viz.memory_report(model, (2, 2, 7, 7))
    second = report.row("2")
    assert second["bytes"] == 0 and second["mode"] == "recomputes im2col"
    assert second["column_bytes"] == 4 * (3 * 9) * (2 * 3 * 3)
    assert report.row("0")["column_bytes"] == 4 * (2 * 9) * (2 * 5 * 5)
    assert report.peak_recomputed_bytes == report.row("0")["column_bytes"]


class _ConvKeepingColumns(Function):
    """A convolution that stores its im2col columns (to test the 'stores' branch).

    x: (N, C, H, W), w: (F, C, k, k), no padding, stride 1 -> (N, F, OH, OW).
    """

    def forward(self, x, w):
        n, c, h, width = x.shape
        f, _, k, _ = w.shape
        oh, ow = h - k + 1, width - k + 1
        windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))   # (N, C, OH, OW, k, k)
        self.cols = np.ascontiguousarray(windows.transpose(1, 4, 5, 0, 2, 3).reshape(c * k * k, n * oh * ow))
        self.geometry = types.SimpleNamespace(rows=c * k * k, columns=n * oh * ow)
        return (w.reshape(f, -1) @ self.cols).reshape(f, n, oh, ow).transpose(1, 0, 2, 3).copy()

    def backward(self, grad_output):  # pragma: no cover - only the forward graph is inspected
        raise NotImplementedError


class _ColumnConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(Tensor(np.ones((2, 1, 3, 3), np.float32)))

    def forward(self, x):
        return _ConvKeepingColumns.apply(x, self.weight)


def test_memory_report_sees_stored_columns():
    report = viz.memory_report(nn.Sequential(_ColumnConv()), (2, 1, 6, 6))
    row = report.row("0")
    columns = 4 * 9 * 2 * 4 * 4
    assert row["columns"] == "stored" and row["mode"] == "stores im2col"
    assert row["column_bytes"] == columns and row["bytes"] == columns
    assert report.peak_recomputed_bytes == 0


def test_kernel_as_large_as_the_map_is_not_mistaken_for_stored_columns():
    # a 5x5 kernel on a 5x5 map: the column matrix has as many entries as the saved input
    report = viz.memory_report(nn.Sequential(nn.Conv2d(2, 3, 5)), (4, 2, 5, 5))
    row = report.row("0")
    assert row["columns"] == "recomputed" and row["bytes"] == 4 * 4 * 2 * 25
    assert row["column_bytes"] == 4 * (2 * 25) * (4 * 1)
