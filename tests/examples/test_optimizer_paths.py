"""Smoke test of examples/optimizer_paths.py (few steps, output into tmp_path)."""
import pathlib

import numpy as np
import pytest

from tinygrad_cnn.testing import load_script

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "optimizer_paths.py"


@pytest.fixture(scope="module")
def example():
    return load_script(EXAMPLE)


@pytest.mark.parametrize("surface", ["rosenbrock", "beale"])
def test_runs_and_every_optimizer_descends(example, surface, tmp_path, capsys):
    out = tmp_path / "paths.png"
    paths = example.main(["--steps", "40", "--out", str(out), "--surface", surface])
    assert set(paths) == {"SGD", "Momentum", "AdaGrad", "RMSprop", "Adam", "AdamW"}
    start = example.SURFACES[surface][1]
    f_start = example.surface_value(surface, start)
    for name, path in paths.items():
        assert path.shape == (41, 2) and np.all(np.isfinite(path)), name
        np.testing.assert_array_equal(path[0], start)
        assert example.surface_value(surface, path[-1]) < f_start, name
    captured = capsys.readouterr()
    assert "Adam" in captured.out and "final" in captured.out
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "pip install matplotlib" in captured.err
        assert not out.exists()
    else:
        assert out.exists() and out.stat().st_size > 0


def test_rejects_bad_steps(example):
    with pytest.raises(SystemExit):
        example.main(["--steps", "0"])
