"""Tools for testing ops: Hypothesis strategies and gradient-check helpers.

Our own test suite uses exactly these, and so can yours::

    from hypothesis import given, settings
    from tinygrad_cnn.testing import arrays, shapes, check_grad

    @settings(max_examples=20, deadline=None)
    @given(x=shapes(min_dims=1, max_dims=3).flatmap(arrays))
    def test_my_op(x):
        check_grad(lambda t: my_op(t), x)

Needs Hypothesis (``pip install tinygrad_cnn[test]``).
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import sysconfig

import numpy as np

try:
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError as error:  # pragma: no cover - exercised only without the test extra
    raise ImportError("tinygrad_cnn.testing needs Hypothesis: pip install 'tinygrad_cnn[test]'") \
        from error

from ..gradcheck import gradcheck, gradgradcheck
from ..tensor import Tensor

__all__ = ["shapes", "broadcastable_shapes", "arrays", "finite_floats", "distinct_arrays",
           "conv2d_settings", "conv_transpose2d_settings", "pool2d_settings", "tensor64", "check_grad",
           "check_gradgrad", "assert_allclose", "non_contiguous", "load_script", "find_mpiexec",
           "mpi_unavailable_reason", "run_mpiexec"]


def finite_floats(low=-3.0, high=3.0):
    """Moderate float64 values: large enough to exercise the op, small enough for exp/pow."""
    return st.floats(low, high, allow_nan=False, allow_infinity=False, width=64)


def shapes(min_dims=1, max_dims=4, min_side=1, max_side=4):
    """Array shapes with ``min_dims..max_dims`` dimensions of ``min_side..max_side`` each."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def broadcastable_shapes(min_dims=0, max_dims=3, max_side=4):
    """Pairs of shapes that broadcast together, with size-1 and missing dims on either side."""
    return hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=min_dims, max_dims=max_dims,
                                             max_side=max_side).map(lambda r: r.input_shapes)


def arrays(shape, dtype=np.float64, elements=None):
    """float64 arrays of ``shape`` with moderate values (see :func:`finite_floats`)."""
    return hnp.arrays(dtype, shape, elements=elements if elements is not None else finite_floats())


def distinct_arrays(shape, min_gap=1e-3, scale=1.0):
    """float64 arrays whose values are pairwise at least ``min_gap`` apart (no max ties).

    Built as a random permutation of an evenly spaced grid plus small jitter, so a
    finite-difference step never crosses a tie.
    """
    size = int(np.prod(shape))

    def build(seed):
        rng = np.random.default_rng(seed)
        grid = (np.arange(size) - size / 2) * (4 * min_gap + scale / max(size, 1))
        values = rng.permutation(grid) + rng.uniform(0, min_gap, size)
        return values.reshape(shape)

    return st.integers(0, 2**32 - 1).map(build)


@st.composite
def conv2d_settings(draw, max_batch=2, max_channels_per_group=3, max_groups=2, max_kernel=3,
                    max_stride=2, max_padding=2, max_dilation=2, max_spatial=7):
    """Valid conv2d settings as a dict: shapes of input/weight and stride/padding/dilation/groups.

    Rectangular kernels, per-axis strides/paddings/dilations; always leaves a
    non-empty output.
    """
    groups = draw(st.integers(1, max_groups))
    in_per_group = draw(st.integers(1, max_channels_per_group))
    out_per_group = draw(st.integers(1, max_channels_per_group))
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    sh, sw = draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))
    dh, dw = draw(st.integers(1, max_dilation)), draw(st.integers(1, max_dilation))
    ph, pw = draw(st.integers(0, max_padding)), draw(st.integers(0, max_padding))
    min_h = max(1, dh * (kh - 1) + 1 - 2 * ph)
    min_w = max(1, dw * (kw - 1) + 1 - 2 * pw)
    h = draw(st.integers(min_h, max(min_h, max_spatial)))
    w = draw(st.integers(min_w, max(min_w, max_spatial)))
    n = draw(st.integers(1, max_batch))
    return dict(input_shape=(n, groups * in_per_group, h, w),
                weight_shape=(groups * out_per_group, in_per_group, kh, kw),
                stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=groups,
                bias=draw(st.booleans()))


@st.composite
def conv_transpose2d_settings(draw, max_batch=2, max_channels_per_group=3, max_groups=2,
                              max_kernel=3, max_stride=3, max_padding=2, max_dilation=2,
                              max_spatial=5):
    """Valid conv_transpose2d settings as a dict: input/weight shapes (weight is
    (C_in, C_out/groups, kh, kw)), stride, padding, output_padding (< stride or dilation),
    dilation, groups, bias; the output is always non-empty."""
    groups = draw(st.integers(1, max_groups))
    in_per_group = draw(st.integers(1, max_channels_per_group))
    out_per_group = draw(st.integers(1, max_channels_per_group))
    kernel = tuple(draw(st.integers(1, max_kernel)) for _ in range(2))
    stride = tuple(draw(st.integers(1, max_stride)) for _ in range(2))
    dilation = tuple(draw(st.integers(1, max_dilation)) for _ in range(2))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    size, padding = [], []
    for k, s, d, o in zip(kernel, stride, dilation, output_padding):
        p = draw(st.integers(0, max_padding))
        # output (h - 1)*s - 2p + d(k - 1) + o + 1 >= 1
        min_h = max(1, -(-(2 * p - d * (k - 1) - o) // s) + 1)
        size.append(draw(st.integers(min_h, max(min_h, max_spatial))))
        padding.append(p)
    n = draw(st.integers(1, max_batch))
    return dict(input_shape=(n, groups * in_per_group, *size),
                weight_shape=(groups * in_per_group, out_per_group, *kernel),
                stride=stride, padding=tuple(padding), output_padding=output_padding,
                dilation=dilation, groups=groups, bias=draw(st.booleans()))


@st.composite
def pool2d_settings(draw, max_batch=2, max_channels=3, max_kernel=3, max_stride=3,
                    max_dilation=2, max_spatial=7, allow_ceil_mode=True):
    """Valid max/avg pooling settings (PyTorch's rules: padding <= kernel // 2)."""
    kh, kw = draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel))
    sh, sw = draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))
    dh, dw = draw(st.integers(1, max_dilation)), draw(st.integers(1, max_dilation))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    min_h = max(1, dh * (kh - 1) + 1 - 2 * ph)
    min_w = max(1, dw * (kw - 1) + 1 - 2 * pw)
    h = draw(st.integers(min_h, max(min_h, max_spatial)))
    w = draw(st.integers(min_w, max(min_w, max_spatial)))
    return dict(input_shape=(draw(st.integers(1, max_batch)), draw(st.integers(1, max_channels)),
                             h, w),
                kernel_size=(kh, kw), stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw),
                ceil_mode=draw(st.booleans()) if allow_ceil_mode else False)


def tensor64(array, requires_grad=True):
    """A float64 Tensor (copy of ``array``) for gradient checks."""
    return Tensor(np.asarray(array, dtype=np.float64), dtype=np.float64,
                  requires_grad=requires_grad)


def non_contiguous(array):
    """The same values in a non-C-contiguous layout (a transposed copy, transposed back)."""
    array = np.asarray(array)
    if array.ndim < 2:
        return np.repeat(array, 2)[::2]
    return np.ascontiguousarray(array.swapaxes(0, -1)).swapaxes(0, -1)


def check_grad(fn, *arrays, fast_mode=False, **kwargs):
    """Wrap arrays as float64 tensors that require grad and assert ``gradcheck`` passes.

    Non-float arrays (integer targets, masks) are passed as constant Tensors.
    """
    inputs = tuple(tensor64(a) if np.asarray(a).dtype.kind == "f" else Tensor(np.asarray(a))
                   for a in arrays)
    assert gradcheck(fn, inputs, fast_mode=fast_mode, **kwargs)


def check_gradgrad(fn, *arrays, fast_mode=False, **kwargs):
    """Like :func:`check_grad` for second derivatives (``gradgradcheck``)."""
    inputs = tuple(tensor64(a) if np.asarray(a).dtype.kind == "f" else Tensor(np.asarray(a))
                   for a in arrays)
    assert gradgradcheck(fn, inputs, fast_mode=fast_mode, **kwargs)


def assert_allclose(actual, expected, rtol=1e-7, atol=0.0, err_msg=""):
    """``numpy.testing.assert_allclose`` that also accepts Tensors (and checks shapes)."""
    actual = actual.numpy() if isinstance(actual, Tensor) else np.asarray(actual)
    expected = expected.numpy() if isinstance(expected, Tensor) else np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}. {err_msg}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=err_msg)


def load_script(path):
    """Import the script at ``path`` (an example or a benchmark) as a module, to call its
    functions from a test. Its folder goes on ``sys.path`` first, so a script that imports
    a sibling (``from bench_ops import ...``) works as when it is run."""
    path = pathlib.Path(path).resolve()
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"{path.stem}_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def find_mpiexec():
    """The ``mpiexec`` of this Python's MPI, or None.

    The ``mpich`` wheel installs it into the environment's scripts folder, which is on PATH only when
    the environment is activated, so that folder (next to ``sys.executable``) is searched first.
    """
    folders = [pathlib.Path(sys.executable).parent, pathlib.Path(sysconfig.get_path("scripts")),
               pathlib.Path(sysconfig.get_path("scripts", f"{os.name}_user"))]   # pip install --user
    for folder in folders:
        candidate = folder / "mpiexec"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("mpiexec")


def mpi_unavailable_reason():
    """Why multi-process tests cannot run here (a sentence), or None when they can."""
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed: pip install -e \".[distributed]\" to run the multi-process tests"
    if find_mpiexec() is None:
        return ("mpiexec was not found next to the Python executable nor on PATH: "
                "pip install -e \".[distributed]\" brings MPICH's")
    return None


def run_mpiexec(n, args, timeout=300, cwd=None):
    """Run ``python -m mpi4py ARGS`` on ``n`` ranks; returns the ``CompletedProcess`` (text output).

    ``-m mpi4py`` makes an exception on one rank abort all of them instead of leaving the others
    waiting in a collective. Each rank gets one thread (the ranks share the cores). On timeout the
    whole process group (launcher and ranks) is killed and ``TimeoutError`` names the output so far.
    """
    env = dict(os.environ, OMP_NUM_THREADS="1", NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [find_mpiexec(), "-n", str(n), sys.executable, "-m", "mpi4py", *[str(a) for a in args]]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
                               env=env, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise TimeoutError(f"mpiexec -n {n} {' '.join(command[3:])} did not finish in {timeout} s; "
                           f"output:\n{output}") from None
    return subprocess.CompletedProcess(command, process.returncode, output, None)
