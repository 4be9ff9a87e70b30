"""The package as a user gets it: what a wheel ships, the import name of the kernels, importing
without CuPy, and the README commands that CI runs."""
import configparser
import importlib.util
import os
import pathlib
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def _source_packages():
    """Dotted names of every folder with Python files under tinygrad_cnn/."""
    names = set()
    for path in (ROOT / "tinygrad_cnn").rglob("*.py"):
        if "__pycache__" in path.parts:
            continue
        names.add(".".join(path.parent.relative_to(ROOT).parts))
    return names


def _found_packages():
    """What setuptools installs from the ``packages = find:`` rule of setup.cfg."""
    setuptools = pytest.importorskip("setuptools")
    include = _config()["options.packages.find"]["include"].split()
    return set(setuptools.find_packages(str(ROOT), include=include))


def test_setup_cfg_finds_every_package_inside_tinygrad_cnn_with_no_folder_remapped():
    options = _config()["options"]
    assert options["packages"].strip() == "find:"
    assert "package_dir" not in options
    assert not (ROOT / "kernels").exists(), "the kernels live in tinygrad_cnn/kernels"
    found = _found_packages()
    assert _source_packages() <= found, f"not installed: {sorted(_source_packages() - found)}"
    assert all(name == "tinygrad_cnn" or name.startswith("tinygrad_cnn.") for name in found), found
    assert {"tinygrad_cnn.kernels.cpu", "tinygrad_cnn.kernels.cuda", "tinygrad_cnn.testing"} <= found
    requires = options["install_requires"]
    assert "numpy" in requires and "numba" in requires
    extras = _config()["options.extras_require"]
    assert "pytest" in extras["test"] and "hypothesis" in extras["test"] and "cupy" in extras["cuda"]
    assert "mpi4py" in extras["distributed"] and "mpich" in extras["distributed"]
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.findall(r"^\[([^\]]+)\]", pyproject, re.M) == ["build-system"]


def test_a_built_wheel_ships_the_kernels_under_tinygrad_cnn_only(tmp_path):
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "tinygrad_cnn", source / "tinygrad_cnn", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
                             "--no-index", "-q", "-w", str(tmp_path / "dist")],
                            cwd=source, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("tinygrad_cnn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    top_level = {n.split("/")[0] for n in names}
    assert "tinygrad_cnn" in top_level and "kernels" not in top_level
    assert all(name == "tinygrad_cnn" or name.endswith(".dist-info") for name in top_level), top_level
    expected = {str(p.relative_to(ROOT)) for p in (ROOT / "tinygrad_cnn").rglob("*.py")
                if "__pycache__" not in p.parts}
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)[:10]}"


def test_no_top_level_kernels_module_is_installed(tmp_path):
    # Run from an empty folder, so the repository root is not on sys.path.
    code = ("import importlib.util as u, tinygrad_cnn.kernels.cpu as k; s = u.find_spec('kernels'); "
            "print(s.origin if s else None); print(k.__name__)")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr
    origin, name = result.stdout.split()
    assert origin == "None" or not pathlib.Path(origin).resolve().is_relative_to(ROOT)
    assert name == "tinygrad_cnn.kernels.cpu"


def test_import_works_without_cupy(tmp_path):
    # A meta-path finder that makes every cupy import fail, as on a machine without it.
    code = (
        "import sys\n"
        "class NoCupy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'cupy' or name.startswith('cupy.') or name.startswith('cupy_'):\n"
        "            raise ImportError('no cupy here')\n"
        "sys.meta_path.insert(0, NoCupy())\n"
        "import tinygrad_cnn, tinygrad_cnn.nn, tinygrad_cnn.optim\n"
        "from tinygrad_cnn import backend\n"
        "assert backend.cupy_or_none() is None\n"
        "t = tinygrad_cnn.randn(2, 3, requires_grad=True)\n"
        "(t * t).sum().backward()\n"
        "print('ok', t.device)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["ok", "cpu"]


def test_readme_has_two_commands_and_ci_runs_the_test_one():
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) == 2, blocks
    main_job, test_command = (block.strip() for block in blocks)
    assert "\n" not in main_job and "\n" not in test_command
    scripts = re.findall(r"python (examples/\S+\.py)", main_job)
    assert scripts and all((ROOT / s).is_file() for s in scripts)
    assert "pytest" in test_command
    ci = (ROOT / ".ci" / "run").read_text()
    assert os.access(ROOT / ".ci" / "run", os.X_OK)
    assert "set -euo pipefail" in ci
    assert ci.strip().splitlines()[-1].strip() == test_command
