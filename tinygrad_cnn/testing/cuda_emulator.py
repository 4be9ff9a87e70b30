"""Run the CUDA kernels of ``tinygrad_cnn.kernels.cuda`` on the CPU, to test them where there is no GPU.

The kernel sources are written in a small subset of CUDA C++ (see ``_runtime``): one-dimensional
launches, grid-stride loops, ``__shared__`` arrays with ``__syncthreads()``, no atomics and no
headers. That subset maps onto plain C++:

* each block runs as ``blockDim.x`` real threads (``std::thread``) so ``__syncthreads()`` is a
  ``std::barrier`` and shared-memory reductions are exercised with true concurrency;
* blocks run one after another, so a ``__shared__`` array can be a function-level ``static``;
* ``threadIdx``/``blockIdx`` are ``thread_local``.

The emulator compiles a source with the system C++ compiler (``g++`` or ``c++``), once per source
(both element types in one shared library, cached on disk by content hash), and loads it with
``ctypes``. On every launch it checks what CuPy cannot check for us on the device:

* the number of arguments and the exact dtype of every scalar and array against the kernel's C
  parameter list (a ``np.float64`` passed for a ``float`` parameter is a silent bug on a GPU);
* arrays are C-contiguous, and arrays written through non-const pointers are writeable;
* no kernel writes outside its arrays: each array is copied between guard bytes that must be
  intact after the launch.

Grid and block sizes are capped to a few blocks of a few threads, which every kernel here must
tolerate (grid-stride loops, power-of-two block reductions).

Use::

    from tinygrad_cnn.kernels.cuda import _runtime
    from tinygrad_cnn.testing import cuda_emulator
    with _runtime.use_compiler(cuda_emulator.compile_source):
        out = some_cuda_wrapper(numpy_arrays...)      # runs the CUDA code on the CPU
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile

import numpy as np

__all__ = ["compiler_available", "compile_source", "parse_kernels", "nvcc_available", "nvcc_check", "nvcc_check_many",
           "nvrtc_available", "nvrtc_check",
           "EMULATED_GRID", "EMULATED_BLOCK"]

EMULATED_GRID = 3   # blocks actually run per launch
EMULATED_BLOCK = 4  # threads actually run per block (a power of two)
_GUARD_BYTES = 256
_GUARD_VALUE = 0x5A

_SHIM = r"""
#include <barrier>
#include <cmath>
#include <functional>
#include <thread>
#include <vector>
struct emu_dim3 { unsigned int x, y, z; };
static thread_local emu_dim3 threadIdx, blockIdx;
static emu_dim3 blockDim, gridDim;
static std::barrier<>* emu_current_barrier = nullptr;
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__ __restrict
static inline void __syncthreads() { emu_current_barrier->arrive_and_wait(); }
using std::sqrt; using std::exp; using std::log; using std::fmax; using std::fmin; using std::pow;
using std::fabs; using std::tanh; using std::floor; using std::isnan;
static void emu_run(unsigned grid, unsigned block, const std::function<void()>& body) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        std::barrier<> barrier_of_block(block);
        emu_current_barrier = &barrier_of_block;
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < block; ++t)
            threads.emplace_back([&body, b, t] { blockIdx = {b, 0, 0}; threadIdx = {t, 0, 0}; body(); });
        for (auto& thread : threads) thread.join();
    }
}
"""

_KERNEL_RE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.S)

_NUMPY_OF_C = {
    "float": np.dtype(np.float32), "double": np.dtype(np.float64), "long long": np.dtype(np.int64),
    "int": np.dtype(np.int32), "unsigned int": np.dtype(np.uint32),
    "unsigned long long": np.dtype(np.uint64), "unsigned char": np.dtype(np.uint8),
    "bool": np.dtype(np.bool_),
}
_C_OF_DTYPE = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_PREFIX_OF_DTYPE = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}


class Parameter:
    """One kernel parameter: ``name``, base C type, pointer or not, const or not."""

    def __init__(self, text: str):
        text = " ".join(text.replace("__restrict__", " ").split())
        match = re.fullmatch(r"(const\s+)?([A-Za-z_ ]+?)\s*(\*?)\s*(\w+)", text)
        if match is None:
            raise ValueError(f"cannot parse kernel parameter {text!r}")
        self.const = bool(match.group(1))
        self.base = match.group(2).strip()
        self.pointer = bool(match.group(3))
        self.name = match.group(4)
        if self.base != "T" and self.base not in _NUMPY_OF_C:
            raise ValueError(f"unsupported kernel parameter type {self.base!r} in {text!r}")

    def dtype(self, element_dtype) -> np.dtype:
        return np.dtype(element_dtype) if self.base == "T" else _NUMPY_OF_C[self.base]

    def c_cast(self) -> str:
        base = ("const " if self.const else "") + self.base
        return f"({base}*)" if self.pointer else f"*({base}*)"

    def __repr__(self):
        return f"{'const ' if self.const else ''}{self.base}{'*' if self.pointer else ''} {self.name}"


def parse_kernels(code: str) -> dict[str, list[Parameter]]:
    """``{kernel name: [Parameter, ...]}`` for every ``extern "C" __global__`` kernel in ``code``."""
    kernels = {}
    for name, params in _KERNEL_RE.findall(code):
        kernels[name] = [Parameter(p) for p in params.split(",") if p.strip()]
    return kernels


def _find_compiler():
    for name in ("g++", "c++", "clang++"):
        path = shutil.which(name)
        if path:
            return path
    return None


def compiler_available() -> bool:
    return _find_compiler() is not None


def _cache_dir() -> str:
    path = os.path.join(tempfile.gettempdir(), f"tinygrad_cnn_cuda_emulator_{os.getuid()}")
    os.makedirs(path, exist_ok=True)
    return path


def _translation_unit(code: str, kernels: dict[str, list[Parameter]]) -> str:
    body = code.replace('extern "C"', "")
    parts = [_SHIM]
    for dtype, prefix in _PREFIX_OF_DTYPE.items():
        parts.append(f"namespace emu_{prefix} {{\ntypedef {_C_OF_DTYPE[dtype]} T;\n{body}\n")
        for name, params in kernels.items():
            call_args = ", ".join(f"{p.c_cast()}args[{i}]" for i, p in enumerate(params))
            parts.append(f'extern "C" void emu_{prefix}_{name}(unsigned grid, unsigned block, void** args) '
                         f"{{ emu_run(grid, block, [&] {{ {name}({call_args}); }}); }}\n")
        parts.append("}\n")
    return "".join(parts)


_libraries: dict[str, ctypes.CDLL] = {}


def _build(code: str, kernels) -> ctypes.CDLL:
    unit = _translation_unit(code, kernels)
    digest = hashlib.sha256(unit.encode()).hexdigest()[:20]
    if digest in _libraries:
        return _libraries[digest]
    compiler = _find_compiler()
    if compiler is None:
        raise RuntimeError("the CUDA emulator needs a C++20 compiler (g++ or clang++) on PATH")
    directory = _cache_dir()
    library = os.path.join(directory, f"emu_{digest}.so")
    if not os.path.exists(library):
        source_path = os.path.join(directory, f"emu_{digest}_{os.getpid()}.cpp")
        temporary = f"{library}.{os.getpid()}.tmp"
        with open(source_path, "w") as handle:
            handle.write(unit)
        command = [compiler, "-std=c++20", "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-pthread",
                   "-Wall", "-Wno-unused-function", "-Wno-unused-variable", "-o", temporary, source_path]
        result = subprocess.run(command, capture_output=True, text=True)
        os.unlink(source_path)
        if result.returncode != 0:
            raise RuntimeError(f"emulator compilation failed:\n{result.stderr[-6000:]}")
        os.replace(temporary, library)
    _libraries[digest] = ctypes.CDLL(library)
    return _libraries[digest]


class _EmulatedKernel:
    def __init__(self, source_name: str, name: str, params, dtype, c_function):
        self.label = f"{source_name}.{name}"
        self.params = params
        self.dtype = np.dtype(dtype)
        self.c_function = c_function
        c_function.restype = None
        c_function.argtypes = [ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p)]

    def __call__(self, grid, block, args):
        grid, block = int(grid[0]), int(block[0])
        if grid < 1 or block < 1 or block & (block - 1) or block > 1024:
            raise ValueError(f"{self.label}: bad launch grid={grid} block={block}")
        if len(args) != len(self.params):
            raise TypeError(f"{self.label}: {len(args)} arguments for {len(self.params)} parameters "
                            f"{self.params}")
        keep_alive, pointers, guarded = [], [], []
        padded_of_memory = {}  # the same array passed twice (an unused placeholder) shares one copy
        for position, (param, value) in enumerate(zip(self.params, args)):
            expected = param.dtype(self.dtype)
            where = f"{self.label} argument {position} ({param!r})"
            if param.pointer:
                if not isinstance(value, np.ndarray):
                    raise TypeError(f"{where}: expected an array, got {type(value).__name__}")
                if value.dtype != expected:
                    raise TypeError(f"{where}: array dtype {value.dtype}, expected {expected}")
                if not value.flags.c_contiguous:
                    raise ValueError(f"{where}: array is not C-contiguous")
                if not param.const and not value.flags.writeable:
                    raise ValueError(f"{where}: array is read-only but the kernel may write it")
                memory = (value.ctypes.data, value.nbytes)
                if memory in padded_of_memory:
                    padded = padded_of_memory[memory]
                    if not param.const:
                        guarded = [(v, p, w, False) if p is padded else (v, p, w, c) for v, p, w, c in guarded]
                else:
                    for start, size in padded_of_memory:
                        if size and value.nbytes and start < memory[0] + memory[1] and memory[0] < start + size:
                            raise ValueError(f"{where}: array overlaps another argument only partly")
                    padded = np.full(value.nbytes + 2 * _GUARD_BYTES, _GUARD_VALUE, dtype=np.uint8)
                    padded[_GUARD_BYTES:_GUARD_BYTES + value.nbytes] = value.reshape(-1).view(np.uint8)
                    padded_of_memory[memory] = padded
                    guarded.append((value, padded, where, param.const))
                    keep_alive.append(padded)
                pointers.append(padded.ctypes.data + _GUARD_BYTES)
            else:
                if not isinstance(value, np.generic) or value.dtype != expected:
                    got = value.dtype if isinstance(value, np.generic) else type(value).__name__
                    raise TypeError(f"{where}: scalar of type {got}, expected exactly {expected} "
                                    "(pass a NumPy scalar of the parameter's width)")
                box = np.array([value], dtype=expected)
                keep_alive.append(box)
                pointers.append(box.ctypes.data)
        pointer_array = (ctypes.c_void_p * max(len(pointers), 1))(*pointers)
        self.c_function(min(grid, EMULATED_GRID), min(block, EMULATED_BLOCK), pointer_array)
        for value, padded, where, const in guarded:
            if (padded[:_GUARD_BYTES] != _GUARD_VALUE).any() or (padded[-_GUARD_BYTES:] != _GUARD_VALUE).any():
                raise AssertionError(f"{where}: kernel wrote outside the array")
            inner = padded[_GUARD_BYTES:_GUARD_BYTES + value.nbytes]
            if const:
                if not np.array_equal(inner, value.reshape(-1).view(np.uint8)):
                    raise AssertionError(f"{where}: kernel wrote through a const pointer")
            elif value.size:
                value.reshape(-1).view(np.uint8)[...] = inner


class _EmulatedSource:
    def __init__(self, source, dtype):
        self.source = source
        self.dtype = np.dtype(dtype)
        self.kernels = parse_kernels(source.code)
        missing = set(source.kernel_names) - set(self.kernels)
        if missing:
            raise ValueError(f"{source.name}: kernels {sorted(missing)} are listed but not defined")
        self.library = _build(source.code, self.kernels)
        self._functions = {}

    def function(self, name: str):
        if name not in self._functions:
            prefix = _PREFIX_OF_DTYPE[self.dtype]
            c_function = getattr(self.library, f"emu_{prefix}_{name}")
            self._functions[name] = _EmulatedKernel(self.source.name, name, self.kernels[name], self.dtype,
                                                    c_function)
        return self._functions[name]


def compile_source(source, dtype):
    """Compiler hook for :func:`tinygrad_cnn.kernels.cuda._runtime.use_compiler`."""
    return _EmulatedSource(source, dtype)


def _find_nvcc():
    path = shutil.which("nvcc")
    if path:
        return path
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and os.path.exists(os.path.join(root, "bin", "nvcc")):
            return os.path.join(root, "bin", "nvcc")
    return None


def nvcc_available() -> bool:
    return _find_nvcc() is not None


def nvcc_check(code: str, arch: str = "compute_80") -> str:
    """Compile ``code`` to PTX with ``nvcc`` (a real CUDA front end; no GPU needed).

    Returns the PTX text; raises RuntimeError with the compiler's messages on any error or warning.
    """
    return nvcc_check_many({"kernels": code}, arch)["kernels"]


def nvcc_check_many(codes: dict, arch: str = "compute_80") -> dict:
    """:func:`nvcc_check` for ``{name: code}`` in one compiler run; returns ``{name: ptx}``."""
    nvcc = _find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    with tempfile.TemporaryDirectory() as directory:
        paths = []
        for name, code in codes.items():
            paths.append(os.path.join(directory, f"{name}.cu"))
            with open(paths[-1], "w") as handle:
                handle.write(code)
        command = [nvcc, "--ptx", f"-arch={arch}", "-std=c++14", "-Werror", "all-warnings",
                   "--output-directory", directory] + paths
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0 or "warning" in result.stderr.lower():
            raise RuntimeError(f"nvcc failed:\n{result.stderr[-6000:]}")
        ptx = {}
        for name in codes:
            with open(os.path.join(directory, f"{name}.ptx")) as handle:
                ptx[name] = handle.read()
        return ptx


def _find_nvrtc():
    """Path of libnvrtc: $TINYGRAD_CNN_NVRTC, the ``nvidia-cuda-nvrtc`` wheel, the system, CUDA_HOME."""
    import ctypes.util
    import glob
    import importlib.util
    candidates = []
    if os.environ.get("TINYGRAD_CNN_NVRTC"):
        candidates.append(os.environ["TINYGRAD_CNN_NVRTC"])
    spec = importlib.util.find_spec("nvidia")
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidates += sorted(glob.glob(os.path.join(root, "*", "lib", "libnvrtc.so*")), reverse=True)
        candidates += sorted(glob.glob(os.path.join(root, "cuda_nvrtc", "lib", "libnvrtc.so*")), reverse=True)
    found = ctypes.util.find_library("nvrtc")
    if found:
        candidates.append(found)
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root:
            candidates += sorted(glob.glob(os.path.join(root, "lib64", "libnvrtc.so*")), reverse=True)
    for path in candidates:
        if "builtins" in os.path.basename(path):
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError:
            continue
    return None, None


def nvrtc_available() -> bool:
    return _find_nvrtc()[0] is not None


def nvrtc_check(code: str, arch: str = "compute_80") -> str:
    """Compile ``code`` with NVRTC, the compiler CuPy uses for ``RawModule`` (no GPU needed).

    Uses the same options CuPy is given (``--std=c++14``) plus ``-arch``. Returns the PTX; raises
    RuntimeError with NVRTC's log on failure.
    """
    library, path = _find_nvrtc()
    if library is None:
        raise RuntimeError("libnvrtc not found (pip install nvidia-cuda-nvrtc, or set TINYGRAD_CNN_NVRTC)")
    program = ctypes.c_void_p()
    status = library.nvrtcCreateProgram(ctypes.byref(program), code.encode(), b"kernels.cu", 0, None, None)
    if status != 0:
        raise RuntimeError(f"nvrtcCreateProgram failed with status {status} ({path})")
    try:
        from ..kernels.cuda._runtime import NVRTC_OPTIONS
        options = [option.encode() for option in NVRTC_OPTIONS] + [f"-arch={arch}".encode()]
        option_array = (ctypes.c_char_p * len(options))(*options)
        status = library.nvrtcCompileProgram(program, len(options), option_array)
        log_size = ctypes.c_size_t()
        library.nvrtcGetProgramLogSize(program, ctypes.byref(log_size))
        log = ctypes.create_string_buffer(log_size.value)
        library.nvrtcGetProgramLog(program, log)
        log_text = log.value.decode(errors="replace").strip()
        if status != 0 or "warning" in log_text.lower():
            raise RuntimeError(f"NVRTC failed (status {status}, {path}):\n{log_text[-6000:]}")
        ptx_size = ctypes.c_size_t()
        library.nvrtcGetPTXSize(program, ctypes.byref(ptx_size))
        ptx = ctypes.create_string_buffer(ptx_size.value)
        library.nvrtcGetPTX(program, ptx)
        return ptx.value.decode()
    finally:
        library.nvrtcDestroyProgram(ctypes.byref(program))
