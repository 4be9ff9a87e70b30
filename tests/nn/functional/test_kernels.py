"""The kernel layer as a whole: every fast kernel has a reference and a test, one place picks
the implementation, and without Numba the NumPy references run (with exactly one warning)."""
import importlib
import json
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tinygrad_cnn.nn.functional as F
from tinygrad_cnn import backend

OP_FAMILIES = ("conv", "pooling", "normalization", "activation", "dropout", "loss")

# The hot ops the design requires a hand-written CPU kernel for.
REQUIRED_FAST = ("im2col", "col2im", "max_pool2d_forward", "max_pool2d_backward",
                 "avg_pool2d_forward", "avg_pool2d_backward", "batch_norm_forward",
                 "batch_norm_backward", "lrn_forward", "lrn_backward")

needs_numba = pytest.mark.skipif(not backend.numba_available(), reason="Numba is not installed")


def numba_kernel_names():
    names = {}
    for family in backend.kernel_families("cpu"):
        module = importlib.import_module(f"tinygrad_cnn.kernels.cpu.{family}")
        for name, fn in module.KERNELS.items():
            names[name] = fn
    return names


@needs_numba
def test_every_numba_kernel_has_a_reference_and_the_backend_picks_it():
    """(That each equals its reference is tests/kernels/test_kernels_equal_references.py.)"""
    kernels = numba_kernel_names()
    assert set(kernels) == set(backend.kernel_table("cpu"))
    for name, kernel in kernels.items():
        reference = backend.kernel(name, np, impl="numpy")
        assert reference is not kernel, name
        assert backend.kernel(name, np, impl="numba") is kernel, name
    for name in REQUIRED_FAST:
        assert backend.available_implementations(name)[:2] == ["numpy", "numba"], name


@needs_numba
def test_the_backend_setting_picks_the_implementation():
    for name in numba_kernel_names():
        with backend.cpu_backend("numpy"):
            assert backend.kernel(name, np) is backend.kernel(name, np, impl="numpy")
        with backend.cpu_backend("numba"):
            assert backend.kernel(name, np) is backend.kernel(name, np, impl="numba")
    with pytest.raises(ValueError, match="set_cpu_backend: expected 'numba' or 'numpy'"):
        backend.set_cpu_backend("fortran")


def test_op_files_leave_the_choice_to_the_backend():
    """No op file imports Numba or CuPy or branches on them: backend.kernel decides."""
    functional = pathlib.Path(F.__file__).resolve().parent
    for family in OP_FAMILIES + ("linear",):
        source = (functional / f"{family}.py").read_text()
        for word in ("import numba", "from numba", "import cupy", "numba_available",
                     "cupy_or_none"):
            assert word not in source, (family, word)


# A small CNN step through every op family: conv, BatchNorm, LRN, ReLU, both poolings, GELU,
# dropout, cross-entropy. step() returns the loss, both gradients and the running variance.
STEP = textwrap.dedent("""
    import json
    import numpy as np
    import tinygrad_cnn as tg
    import tinygrad_cnn.nn.functional as F

    def step():
        tg.manual_seed(0)
        rng = np.random.default_rng(0)
        x = tg.Tensor(rng.standard_normal((2, 4, 9, 9)), requires_grad=True)
        w = tg.Tensor(rng.standard_normal((6, 2, 3, 3)) * 0.3, requires_grad=True)
        mean, var = tg.Tensor(np.zeros(6)), tg.Tensor(np.ones(6))
        y = F.conv2d(x, w, stride=1, padding=1, groups=2)
        y = F.batch_norm(y, mean, var, training=True)
        y = F.local_response_norm(y, 3, alpha=0.1, k=2.0)
        y = F.max_pool2d(F.relu(y), 3, 2, ceil_mode=True)
        y = F.avg_pool2d(F.gelu(y), 2, 1, padding=1, count_include_pad=False)
        y = F.dropout(y, 0.25)
        loss = F.cross_entropy(y.flatten(1)[:, :5], tg.Tensor(np.array([1, 4])),
                               label_smoothing=0.1)
        loss.backward()
        return dict(loss=loss.item(), grad_x=x.grad.numpy().ravel().tolist(),
                    grad_w=w.grad.numpy().ravel().tolist(), running_var=var.numpy().tolist())
""")


def test_without_numba_the_references_run_with_exactly_one_warning():
    script = textwrap.dedent("""
        import sys, warnings
        sys.modules["numba"] = None          # `import numba` now fails, as if not installed
        caught = []
        warnings.simplefilter("always")
        warnings.showwarning = lambda message, category, *rest, **kw: caught.append(
            [category.__name__, str(message)])
    """) + STEP + textwrap.dedent("""
        from tinygrad_cnn import backend
        result = step()
        result["second_loss"] = step()["loss"]       # a second step warns no more
        names = %r
        result["references"] = all(
            backend.kernel(n, np) is backend.kernel(n, np, impl="numpy") for n in names)
        result["numba_requests_fall_back"] = all(
            backend.kernel(n, np, impl="numba") is backend.kernel(n, np, impl="numpy")
            for n in names)
        result["warnings"] = caught
        print(json.dumps(result))
    """) % (sorted(numba_kernel_names()),)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    numba_warnings = [w for w in result["warnings"] if "Numba" in w[1]]
    assert len(numba_warnings) == 1, result["warnings"]
    assert numba_warnings[0][0] == "RuntimeWarning"
    assert "NumPy reference" in numba_warnings[0][1] and "pip install numba" in numba_warnings[0][1]
    assert result["references"] and result["numba_requests_fall_back"]
    assert result["second_loss"] == result["loss"]

    # The same step in this process, on the Numba kernels where present: the same numbers.
    namespace = {}
    exec(STEP, namespace)
    expected = namespace["step"]()
    np.testing.assert_allclose(result["loss"], expected["loss"], rtol=1e-12)
    for key in ("grad_x", "grad_w", "running_var"):
        np.testing.assert_allclose(result[key], expected[key], rtol=1e-9, atol=1e-12,
                                   err_msg=key)
