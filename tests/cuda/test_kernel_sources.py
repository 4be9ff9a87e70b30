"""The CUDA kernels, checked without a GPU.

* Contracts: every CUDA kernel has a NumPy reference with the identical signature, every
  reference has a CUDA kernel (or is declared reference-only), importing the kernel modules
  never imports CuPy or compiles anything.
* The sources compile with ``nvcc`` (a real CUDA front end, when installed).
* The sources *run*: the CPU emulator (``tinygrad_cnn/testing/cuda_emulator.py``) executes the same CUDA
  C++ with real threads per block, checks argument types/widths and out-of-bounds writes, and
  the results are compared with the NumPy references, kernel by kernel and through the public
  ops (including float64 gradient checks) with the CUDA kernels selected by the backend.
"""
import inspect
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_cnn
import tinygrad_cnn.nn.functional as F
import tinygrad_cnn.optim  # noqa: F401 - registers the optimizer references
from tinygrad_cnn import backend
from tinygrad_cnn.kernels import cuda as cuda_kernels
from tinygrad_cnn.kernels.cuda import _runtime
from tinygrad_cnn.testing import cuda_emulator as _emulator
from tinygrad_cnn.kernels.cuda import conv, dropout, loss, normalization, optim, pooling
from tinygrad_cnn.testing import check_grad

FAMILIES = {"conv": conv, "pooling": pooling, "normalization": normalization, "dropout": dropout,
            "loss": loss, "optim": optim}
CUDA_TABLE = {name: fn for module in FAMILIES.values() for name, fn in module.KERNELS.items()}
DTYPES = [np.float32, np.float64]

needs_cxx = pytest.mark.skipif(not _emulator.compiler_available(),
                               reason="the CUDA emulator needs a C++20 compiler (g++ or clang++)")


def reference(name):
    return backend.kernel(name, np, impl="numpy")


def assert_close(actual, expected, dtype, rtol=None, err_msg=""):
    """Emulated CUDA vs reference. float64: equal to ~1e-12 relative; float32: a few ulps of the
    largest magnitude (reductions differ in order and in double vs float accumulation)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{err_msg}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{err_msg}: dtype {actual.dtype} != {expected.dtype}"
    if rtol is None:
        rtol = 1e-11 if np.dtype(dtype) == np.float64 else 2e-6
    finite = expected[np.isfinite(expected)]
    scale = float(np.abs(finite).max()) if finite.size else 1.0
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(scale, 1.0), err_msg=err_msg)


@pytest.fixture(scope="module")
def emulated():
    """Compile and run the CUDA kernels with the CPU emulator inside the tests of this module."""
    if not _emulator.compiler_available():
        pytest.skip("the CUDA emulator needs a C++20 compiler (g++ or clang++)")
    with _runtime.use_compiler(_emulator.compile_source):
        yield


# ---------------------------------------------------------------------------
# Contracts (no compiler needed)
# ---------------------------------------------------------------------------

def test_every_cuda_kernel_has_a_reference_with_the_same_signature():
    for name, fn in CUDA_TABLE.items():
        ref = reference(name)  # KeyError if the reference is missing
        assert inspect.signature(fn) == inspect.signature(ref), (
            f"{name}: CUDA wrapper {inspect.signature(fn)} != reference {inspect.signature(ref)}")


def test_every_reference_has_a_cuda_kernel_or_a_stated_reason():
    references = set(backend._references)
    missing = references - set(CUDA_TABLE) - set(cuda_kernels.REFERENCE_ONLY)
    assert not missing, f"kernels without a CUDA version (add one or list it in REFERENCE_ONLY): {missing}"
    for name in ("im2col", "col2im", "im2col_wide", "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward",
                 "avg_pool2d_backward", "batch_norm_forward", "batch_norm_backward", "lrn_forward",
                 "lrn_backward", "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
                 "dropout_forward", "sgd_update", "adam_update", "adagrad_update", "rmsprop_update"):
        assert name in CUDA_TABLE, f"kernel {name!r} of the engine contract has no CUDA version"


def test_backend_selects_the_cuda_wrappers():
    for name, fn in CUDA_TABLE.items():
        assert backend.kernel(name, np, impl="cupy") is fn


def test_sources_declare_exactly_the_kernels_they_define():
    sources = _runtime.all_sources()
    assert {s.name for s in sources} >= set(FAMILIES)
    for module in FAMILIES.values():
        parsed = _emulator.parse_kernels(module.SOURCE.code)
        assert set(parsed) == set(module.SOURCE.kernel_names), module.SOURCE.name
        for params in parsed.values():
            for param in params:
                assert param.pointer or param.base in ("T", "long long", "int", "double"), param


def test_importing_kernels_needs_no_cupy_and_compiles_nothing():
    script = textwrap.dedent("""
        import sys
        sys.modules["cupy"] = None          # any `import cupy` now raises ImportError
        import numpy as np
        import tinygrad_cnn
        from tinygrad_cnn import cuda, backend
        from tinygrad_cnn.kernels.cuda import conv, pooling, normalization, dropout, loss, optim, _runtime
        assert all(not s.is_compiled() for s in _runtime.all_sources())
        assert backend.kernel("sgd_update", np, impl="cupy") is optim.sgd_update
        assert not cuda.is_available() and cuda.device_count() == 0
        cuda.synchronize("cpu")
        cuda.manual_seed(3)
        for call in (cuda.synchronize, cuda.require, cuda.current_device):
            try:
                call()
            except RuntimeError as error:
                assert "pip install -e .[cuda]" in str(error), error
            else:
                raise AssertionError(f"{call.__name__} did not raise")
        try:
            optim.sgd_update(np.zeros(3, np.float32), np.ones(3, np.float32), None, lr=0.1, momentum=0.0,
                             dampening=0.0, weight_decay=0.0, nesterov=False)
        except RuntimeError as error:
            assert "CuPy" in str(error) and "pip install" in str(error), error
        else:
            raise AssertionError("launching without CuPy did not raise")
        try:
            tinygrad_cnn.Tensor([1.0], device="cuda")
        except RuntimeError as error:
            assert "cuda" in str(error), error
        else:
            raise AssertionError("a cuda Tensor without CuPy did not raise")
        print("OK")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


# ---------------------------------------------------------------------------
# The sources compile with a CUDA compiler
# ---------------------------------------------------------------------------

@pytest.mark.skipif(not _emulator.nvcc_available(), reason="nvcc (CUDA toolkit) is not installed")
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_sources_compile_with_nvcc(dtype):
    ptx = _emulator.nvcc_check_many({family: module.SOURCE.full_code(dtype) for family, module in FAMILIES.items()})
    for family, module in FAMILIES.items():
        for name in module.SOURCE.kernel_names:
            assert f".entry {name}(" in ptx[family], f"{family}.{name} missing from the PTX"


@pytest.mark.skipif(not _emulator.nvcc_available(), reason="nvcc (CUDA toolkit) is not installed")
def test_nvcc_check_reports_errors():
    with pytest.raises(RuntimeError, match="nvcc failed"):
        _emulator.nvcc_check('extern "C" __global__ void broken(float* x) { x[0] = undefined_name; }')


@pytest.mark.skipif(not _emulator.nvrtc_available(),
                    reason="libnvrtc not found (pip install nvidia-cuda-nvrtc, or set TINYGRAD_CNN_NVRTC)")
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_source_compiles_with_nvrtc(family, dtype):
    """NVRTC is the compiler CuPy's RawModule uses: no host headers, only CUDA built-ins."""
    ptx = _emulator.nvrtc_check(FAMILIES[family].SOURCE.full_code(dtype))
    for name in FAMILIES[family].SOURCE.kernel_names:
        assert f".entry {name}(" in ptx, f"{name} missing from the PTX"


@pytest.mark.skipif(not _emulator.nvrtc_available(), reason="libnvrtc not found")
def test_nvrtc_check_reports_errors():
    with pytest.raises(RuntimeError, match="NVRTC failed"):
        _emulator.nvrtc_check('extern "C" __global__ void broken(float* x) { x[0] = undefined_name; }')


def _cupy_compiler_or_skip():
    """CuPy's compiler module where CuPy imports and finds libnvrtc (no GPU needed), else skip."""
    try:
        import cupy.cuda.compiler as compiler
        compiler._get_nvrtc_version()
    except Exception as error:  # noqa: BLE001 - no CuPy, or CuPy without libnvrtc
        pytest.skip(f"CuPy's NVRTC is not usable here ({type(error).__name__}: {error})")
    return compiler


@pytest.mark.skipif(tinygrad_cnn.cuda.is_available(),
                    reason="a GPU is present: RawModule compiles the sources for real")
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_sources_compile_through_cupys_nvrtc_path(monkeypatch, dtype):
    """The exact compile call behind ``cupy.RawModule`` (CuPy adds its own NVRTC options), for sm_90.

    CuPy asks the current device for the architecture; without a GPU that private helper is replaced
    by a fixed ``compute_90`` (the H100/H200 generation)."""
    import io
    compiler = _cupy_compiler_or_skip()
    monkeypatch.setattr(compiler, "_get_arch_for_options_for_nvrtc", lambda arch: ("-arch=compute_90", "ptx"))
    for family, module in FAMILIES.items():
        log = io.StringIO()
        ptx, _ = compiler.compile_using_nvrtc(module.SOURCE.full_code(dtype), options=_runtime.NVRTC_OPTIONS,
                                              arch="90", log_stream=log)
        ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
        assert "warning" not in log.getvalue().lower(), f"{family}: {log.getvalue()}"
        for name in module.SOURCE.kernel_names:
            assert f".entry {name}(" in ptx, f"{family}.{name} missing from the PTX"


# ---------------------------------------------------------------------------
# The emulator's own checks can fail
# ---------------------------------------------------------------------------

_BAD = _runtime.CudaSource("bad_for_tests", r"""
extern "C" __global__ void write_past_end(T* x, long long n) {
    GRID_STRIDE_LOOP(i, n) { x[i + 1] = (T)1; }
}
extern "C" __global__ void write_const(const T* x, long long n) {
    GRID_STRIDE_LOOP(i, n) { ((T*)x)[i] = (T)2; }
}
extern "C" __global__ void shared_sum(const T* x, T* out, long long n) {
    __shared__ double shared[256];
    double partial = 0.0;
    for (long long i = threadIdx.x; i < n; i += blockDim.x) partial += (double)x[i];
    double total = block_sum(partial, shared);
    if (threadIdx.x == 0 && blockIdx.x == 0) out[0] = (T)total;
}
""", ["write_past_end", "write_const", "shared_sum"])
_runtime._all_sources.remove(_BAD)  # not a real kernel family


@needs_cxx
def test_emulator_rejects_wrong_argument_types(emulated):
    x = np.zeros(4, np.float32)
    with pytest.raises(TypeError, match="expected exactly int64"):
        _BAD.launch("write_past_end", np.float32, 4, (x, 4))  # a Python int, not np.int64
    with pytest.raises(TypeError, match="array dtype float64, expected float32"):
        _BAD.launch("write_past_end", np.float32, 4, (np.zeros(4), np.int64(3)))
    with pytest.raises(TypeError, match="arguments for"):
        _BAD.launch("write_past_end", np.float32, 4, (x,))


@needs_cxx
def test_emulator_detects_out_of_bounds_and_const_writes(emulated):
    with pytest.raises(AssertionError, match="outside the array"):
        _BAD.launch("write_past_end", np.float64, 4, (np.zeros(4), np.int64(4)))
    with pytest.raises(AssertionError, match="const pointer"):
        _BAD.launch("write_const", np.float64, 4, (np.zeros(4), np.int64(4)))


@needs_cxx
def test_emulator_runs_block_reductions_with_real_threads(emulated):
    x = np.arange(1.0, 12.0)
    out = np.zeros(1)
    _BAD.launch_blocks("shared_sum", np.float64, 1, (x, out, np.int64(x.size)))
    assert out[0] == x.sum()


# ---------------------------------------------------------------------------
# Emulated CUDA kernels == NumPy references
# ---------------------------------------------------------------------------


@needs_cxx
@settings(max_examples=12, deadline=None)
@given(shape=st.tuples(st.integers(1, 7), st.integers(1, 4), st.integers(1, 7)), dtype=st.sampled_from(DTYPES),
       seed=st.integers(0, 2**16), eps=st.sampled_from([1e-5, 1e-3]), training=st.booleans(),
       target_groups=st.sampled_from([1, 2, 5, normalization.TARGET_GROUPS]))
def test_batch_norm_reduction_groups_do_not_change_the_result(emulated, shape, dtype, seed, eps, training,
                                                             target_groups):
    # Not a duplicate of tests/kernels (which checks every kernel against its reference at the
    # default grouping): target_groups decides how the CUDA kernels split each channel's batch
    # rows into reduction groups (one group, groups of several rows with a shorter last one, or
    # one row per group), and every split must give the reference's statistics and gradients.
    default_groups = normalization.TARGET_GROUPS
    normalization.TARGET_GROUPS = target_groups
    try:
        _check_batch_norm(shape, dtype, seed, eps, training)
    finally:
        normalization.TARGET_GROUPS = default_groups


def _check_batch_norm(shape, dtype, seed, eps, training):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3 + 2).astype(dtype)
    c = shape[1]
    weight, bias = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    stats = () if training else (rng.standard_normal(c).astype(dtype), (rng.random(c) + 0.2).astype(dtype))
    got = normalization.batch_norm_forward(x, weight, bias, eps, *stats)
    want = reference("batch_norm_forward")(x, weight, bias, eps, *stats)
    for name, a, b in zip(("y", "mean", "var"), got, want):
        assert_close(a, b, dtype, err_msg=name)
    mean, var = want[1], want[2]
    inv_std = (1.0 / np.sqrt(var.astype(np.float64) + eps)).astype(dtype)
    grad = rng.standard_normal(shape).astype(dtype)
    got = normalization.batch_norm_backward(grad, x, weight, mean, inv_std, training)
    want = reference("batch_norm_backward")(grad, x, weight, mean, inv_std, training)
    for name, a, b in zip(("grad_x", "grad_weight", "grad_bias"), got, want):
        assert_close(a, b, dtype, rtol=1e-10 if dtype == np.float64 else 1e-5, err_msg=name)


# ---------------------------------------------------------------------------
# Public ops with the CUDA kernels selected (emulated "device" runs)
# ---------------------------------------------------------------------------

@pytest.fixture
def cuda_kernels_selected(emulated, monkeypatch):
    """backend.kernel picks the CUDA implementation for every array, as it does on a GPU."""
    original = backend.kernel

    def select_cuda(name, xp=np, impl=None):
        return original(name, xp, impl="cupy" if impl is None else impl)

    monkeypatch.setattr(backend, "kernel", select_cuda)
    yield


def _ops():
    x4 = np.random.default_rng(0).standard_normal((2, 3, 5, 5))
    ops = {
        "max_pool2d": (lambda x: F.max_pool2d(x, 3, stride=2, padding=1), [x4]),
        "avg_pool2d": (lambda x: F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False), [x4]),
        "batch_norm": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
                       [x4, np.linspace(0.5, 1.5, 3), np.linspace(-1, 1, 3)]),
        "local_response_norm": (lambda x: F.local_response_norm(x, 3, alpha=0.5, beta=0.75, k=1.5), [x4]),
        "cross_entropy": (lambda x: F.cross_entropy(x, tinygrad_cnn.Tensor(np.array([0, 2, 1, 2])),
                                                    label_smoothing=0.1),
                          [np.random.default_rng(1).standard_normal((4, 3))]),
    }
    if hasattr(F, "conv2d"):
        ops["conv2d"] = (lambda x, w: F.conv2d(x, w, stride=2, padding=1),
                         [x4, np.random.default_rng(2).standard_normal((2, 3, 3, 3))])
    return ops


@needs_cxx
@pytest.mark.parametrize("op", sorted(_ops()))
def test_op_gradcheck_with_cuda_kernels(cuda_kernels_selected, op):
    fn, arrays = _ops()[op]
    check_grad(fn, *arrays)


@needs_cxx
def test_dropout_op_with_cuda_kernel_equals_cpu(cuda_kernels_selected):
    x = tinygrad_cnn.Tensor(np.linspace(-1, 1, 40).reshape(4, 10), requires_grad=True)
    tinygrad_cnn.manual_seed(5)
    out = F.dropout(x, 0.4)
    out.sum().backward()
    tinygrad_cnn.manual_seed(5)
    y = tinygrad_cnn.Tensor(np.linspace(-1, 1, 40).reshape(4, 10), requires_grad=True)
    expected = reference("dropout_forward")(y.array, tinygrad_cnn.random.get_generator().random((4, 10)), 0.4)[0]
    np.testing.assert_array_equal(out.numpy(), expected)
    np.testing.assert_array_equal(x.grad.numpy(), (expected != 0) / 0.6)
