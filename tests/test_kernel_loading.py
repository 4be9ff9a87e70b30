"""How the kernels are found: a source tree that was never installed runs them, a kernel module
that exists but cannot import is an error, and a missing Numba is one warning naming the slower
path. Each case runs in a fresh interpreter on a copy of the package."""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tinygrad_cnn import backend

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def source_tree(tmp_path):
    """A copy of the package in a folder that is not installed anywhere."""
    shutil.copytree(ROOT / "tinygrad_cnn", tmp_path / "tinygrad_cnn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _run(tree, code):
    # The copy comes first on sys.path, ahead of the installed (editable) package.
    env = {**os.environ, "PYTHONPATH": str(tree), "NUMBA_CACHE_DIR": str(tree / "numba_cache")}
    return subprocess.run([sys.executable, "-W", "default", "-c", code], cwd=tree, capture_output=True,
                          text=True, timeout=300, env=env)


def test_families_are_the_modules_on_disk():
    for kind in ("cpu", "cuda"):
        folder = ROOT / "tinygrad_cnn" / "kernels" / kind
        on_disk = sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))
        assert backend.kernel_families(kind) == on_disk
    assert "elementwise" not in backend.kernel_families("cpu") + backend.kernel_families("cuda")


def test_every_kernel_names_the_family_module_that_registers_it():
    import importlib
    for kind in ("cpu", "cuda"):
        for name, implementation in backend.kernel_table(kind).items():
            module = importlib.import_module(backend.kernel_module(name, kind))
            assert module.KERNELS[name] is implementation, (kind, name)
    assert backend.kernel_module("im2col", "cpu") == "tinygrad_cnn.kernels.cpu.conv"
    assert backend.kernel_module("no_such_kernel", "cpu") is None


def test_a_source_tree_that_was_never_installed_runs_the_numba_kernels(source_tree):
    pytest.importorskip("numba")
    code = ("import tinygrad_cnn, numpy as np\n"
            "from tinygrad_cnn import backend\n"
            "import tinygrad_cnn.nn.functional\n"
            "print(tinygrad_cnn.__file__)\n"
            "print(backend.kernel('im2col', np).__module__)\n")
    result = _run(source_tree, code)
    assert result.returncode == 0, result.stderr[-3000:]
    package_file, module = result.stdout.split()
    assert pathlib.Path(package_file).is_relative_to(source_tree)
    assert module == "tinygrad_cnn.kernels.cpu.conv"
    assert "Warning" not in result.stderr, result.stderr


def test_a_kernel_module_that_fails_to_import_is_an_error_naming_it(source_tree):
    pytest.importorskip("numba")
    (source_tree / "tinygrad_cnn" / "kernels" / "cpu" / "broken.py").write_text(
        "import a_module_that_does_not_exist\nKERNELS = {}\n")
    code = ("import numpy as np, tinygrad_cnn.nn.functional\n"
            "from tinygrad_cnn import backend\n"
            "backend.kernel('im2col', np)\n")
    result = _run(source_tree, code)
    assert result.returncode != 0
    message = result.stderr.strip().splitlines()[-1]
    assert "tinygrad_cnn.kernels.cpu.broken" in message and "a_module_that_does_not_exist" in message
    assert message.startswith("ImportError"), message


def test_without_numba_one_warning_names_the_module_the_error_and_the_slower_path(source_tree):
    code = ("import sys, warnings\n"
            "class NoNumba:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'numba' or name.startswith('numba.'):\n"
            "            raise ImportError('no numba here')\n"
            "sys.meta_path.insert(0, NoNumba())\n"
            "import numpy as np, tinygrad_cnn.nn.functional\n"
            "from tinygrad_cnn import backend\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    warnings.simplefilter('always')\n"
            "    first = backend.kernel('im2col', np)\n"
            "    second = backend.kernel('col2im', np)\n"
            "assert first is backend.kernel('im2col', np, impl='numpy')\n"
            "assert second is backend.kernel('col2im', np, impl='numpy')\n"
            "print(len(caught))\n"
            "print(caught[0].message)\n")
    result = _run(source_tree, code)
    assert result.returncode == 0, result.stderr[-3000:]
    count, message = result.stdout.split("\n", 1)
    assert count == "1"
    assert "tinygrad_cnn.kernels.cpu" in message and "no numba here" in message
    assert "NumPy reference" in message and "slower" in message
