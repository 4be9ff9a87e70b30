"""The DOT output of a known graph, checked structurally; the tracer against plain backward."""
import re

import numpy as np
import pytest

import tinygrad_cnn as tg
from tinygrad_cnn import Tensor, viz


def _known_graph():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    w = Tensor(rng.standard_normal((4, 2)), requires_grad=True)
    loss = ((x @ w).tanh() ** 2).sum()
    return x, w, loss


def _parse(dot):
    nodes = dict(re.findall(r'^\s+(\w+) \[.*?label="([^"]*)"', dot, re.M))
    edges = re.findall(r"^\s+(\w+) -> (\w+)", dot, re.M)
    return nodes, edges


def test_dot_structure_of_known_graph():
    x, w, loss = _known_graph()
    nodes, edges = _parse(viz.to_dot(loss, params={"x": x, "w": w}))
    ops = sorted(label.split("\\n")[0] for label in nodes.values())
    assert ops == sorted(["Sum", "PowScalar", "Tanh", "Matmul", "x", "w", "output"])
    by_op = {label.split("\\n")[0]: key for key, label in nodes.items()}
    expected = {("x", "Matmul"), ("w", "Matmul"), ("Matmul", "Tanh"), ("Tanh", "PowScalar"),
                ("PowScalar", "Sum"), ("Sum", "output")}
    assert {(src, dst) for src, dst in edges} == {(by_op[a], by_op[b]) for a, b in expected}
    assert "3x2 float64" in nodes[by_op["Tanh"]]
    assert "saved 48 B" in nodes[by_op["Tanh"]]          # tanh keeps its 3x2 float64 output


def test_dot_after_backward_shows_gradient_norms():
    x, w, loss = _known_graph()
    trace = viz.trace_backward(loss)
    dot = viz.to_dot(loss, params={"x": x, "w": w}, trace=trace)
    nodes, _ = _parse(dot)
    w_label = [l for l in nodes.values() if l.startswith("w\\n")][0]
    assert f"|grad| = {np.linalg.norm(w.grad.numpy()):.3g}" in w_label
    edge_labels = re.findall(r'-> \w+ \[label="([^"]+)"\]', dot)
    assert len(edge_labels) == 5                           # every edge but the output one


def test_tracer_records_the_same_gradients_as_backward():
    x, w, loss = _known_graph()
    trace = viz.trace_backward(loss)
    traced_x, traced_w = x.grad.numpy().copy(), w.grad.numpy().copy()
    x2, w2, loss2 = _known_graph()
    loss2.backward()
    np.testing.assert_array_equal(traced_x, x2.grad.numpy())
    np.testing.assert_array_equal(traced_w, w2.grad.numpy())
    assert [s.op for s in trace] == ["Sum", "PowScalar", "Tanh", "Matmul"]
    matmul = trace[3]
    np.testing.assert_array_equal(matmul.input_grads[0], x2.grad.numpy())
    np.testing.assert_allclose(matmul.input_grads[1], w2.grad.numpy())
    # delta recursion: what Tanh sent out is what Matmul received
    np.testing.assert_array_equal(trace[2].input_grads[0], matmul.grad_output)
    assert "da = g @ b^T" in matmul.rule
    assert "Matmul" in str(trace)


def test_render_dot_and_clear_error_for_svg_without_graphviz(tmp_path, monkeypatch):
    _, _, loss = _known_graph()
    path = viz.render(viz.to_dot(loss), str(tmp_path / "g.dot"))
    assert open(path).read().startswith("digraph")
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(RuntimeError, match="Graphviz"):
        viz.render(viz.to_dot(loss), str(tmp_path / "g.svg"))


# The planted log of a negative number and 1/sqrt(0) are the point of the test.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning")
def test_anomaly_mode_planted_nan_in_forward_and_backward():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    with tg.detect_anomaly():
        y = x * 2
        with pytest.raises(RuntimeError, match=r"Log forward.*test_graph_and_tracer.py:\d+"):
            (y - 3.0).log()
    z = Tensor(np.array([0.0, 4.0]), requires_grad=True)
    with tg.detect_anomaly():
        out = z.sqrt().sum()
        with pytest.raises(RuntimeError, match=r"Sqrt backward.*test_graph_and_tracer.py:\d+"):
            out.backward()
