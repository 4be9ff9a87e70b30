"""Lazy compilation and launching of the CUDA C++ sources of ``tinygrad_cnn.kernels.cuda``.

Every kernel family module (``conv``, ``pooling``, ...) holds its GPU code as a plain source
string wrapped in a :class:`CudaSource`, plus Python wrapper functions with exactly the
signature of the kernel's NumPy reference. The wrappers are what the family's ``KERNELS`` dict
lists; importing a family therefore never imports CuPy. The source is compiled (CuPy
``RawModule``, i.e. NVRTC) the first time a wrapper launches one of its kernels, once per
element type, and cached.

Rules every source here follows, so it can be checked without a GPU (see
:mod:`tinygrad_cnn.testing.cuda_emulator` and ``tests/cuda/test_kernel_sources.py``):

* The element type is ``T``; ``typedef float T;`` or ``typedef double T;`` is prepended.
* Kernels are ``extern "C" __global__ void name(...)`` with parameters that are pointers
  (``T*``, ``const T*``, ``const long long*``, ...) or scalars (``T``, ``long long``, ``int``).
* Launches are one-dimensional. Every kernel gives the same result for *any* grid size and any
  power-of-two block size up to ``MAX_BLOCK`` (grid-stride loops everywhere), so the emulator may
  run it with a handful of threads.
* No atomics: each output element is written by exactly one thread, so results are
  deterministic run to run.
* No headers; only CUDA built-ins (``sqrt``, ``exp``, ``log``, ``fmax``, ...).
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

__all__ = ["CudaSource", "PRELUDE", "launch_config", "MAX_BLOCK", "use_compiler", "cupy_module",
           "supported_dtype", "i64", "i32", "real", "reference", "CUDA_INSTALL_HINT", "NVRTC_OPTIONS"]

MAX_BLOCK = 256
# Enough blocks to fill any current GPU several times over; grid-stride loops do the rest.
MAX_GRID = 65535

CUDA_INSTALL_HINT = ("install the GPU extra with `pip install -e .[cuda]` (or the CuPy wheel "
                     "matching your CUDA version, e.g. `pip install cupy-cuda12x` / `cupy-cuda13x`) "
                     "on a machine with an NVIDIA GPU and driver")

# Options handed to NVRTC through CuPy's RawModule (CuPy adds -arch and a few of its own).
NVRTC_OPTIONS = ("--std=c++14",)

_C_TYPE_OF = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}

# The compiler in use: None = CuPy (the real GPU). Tests install the CPU emulator instead.
_compiler = None
_all_sources: list["CudaSource"] = []


def cupy_module():
    """Import and return ``cupy``, or raise a RuntimeError that says how to install it."""
    try:
        import cupy
    except ImportError as error:
        raise RuntimeError(f"tinygrad_cnn CUDA kernels need CuPy, which is not importable ({error}); "
                           f"{CUDA_INSTALL_HINT}") from error
    return cupy


def supported_dtype(dtype) -> bool:
    """Whether the CUDA kernels have a version for this element type (float32 and float64)."""
    return np.dtype(dtype) in _C_TYPE_OF


def c_type(dtype) -> str:
    dtype = np.dtype(dtype)
    if dtype not in _C_TYPE_OF:
        raise TypeError(f"CUDA kernels support float32 and float64, got {dtype}")
    return _C_TYPE_OF[dtype]


def i64(value) -> np.int64:
    """A ``long long`` kernel argument (CuPy passes NumPy scalars by value with their width)."""
    return np.int64(value)


def i32(value) -> np.int32:
    """An ``int`` kernel argument (flags)."""
    return np.int32(value)


def real(value, dtype):
    """A ``T`` kernel argument: ``value`` rounded to the element type, as NumPy would use it."""
    return np.dtype(dtype).type(value)


def launch_config(n: int, block: int = MAX_BLOCK) -> tuple[tuple[int], tuple[int]]:
    """``(grid, block)`` for ``n`` independent work items of a grid-stride loop."""
    grid = max(1, min(MAX_GRID, math.ceil(max(int(n), 1) / block)))
    return (grid,), (block,)


def reference(name: str):
    """The NumPy reference of kernel ``name`` (it also runs on CuPy arrays): used for dtypes the
    CUDA kernels do not cover and for layouts they cannot update in place."""
    from tinygrad_cnn import backend
    return backend.kernel(name, np, impl="numpy")


class _CupyCompiled:
    """The kernels of one source compiled for one dtype with CuPy (NVRTC)."""

    def __init__(self, code: str):
        cupy = cupy_module()
        self._module = cupy.RawModule(code=code, options=NVRTC_OPTIONS)
        self._functions = {}

    def function(self, kernel_name: str):
        if kernel_name not in self._functions:
            raw = self._module.get_function(kernel_name)
            self._functions[kernel_name] = lambda grid, block, args: raw(grid, block, args)
        return self._functions[kernel_name]


# Shared by every source: the grid-stride loop and a block-wide sum in double precision.
PRELUDE = r"""
#define GRID_STRIDE_LOOP(i, n) \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)

// Sum of value over the threads of the block, returned to every thread. shared holds
// blockDim.x doubles; blockDim.x must be a power of two. Every thread of the block must call it.
__device__ double block_sum(double value, double* shared) {
    shared[threadIdx.x] = value;
    __syncthreads();
    for (unsigned int half = blockDim.x / 2; half > 0; half >>= 1) {
        if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
        __syncthreads();
    }
    double total = shared[0];
    __syncthreads();  // the caller may reuse shared right away
    return total;
}
"""


class CudaSource:
    """One CUDA C++ source whose kernels are compiled on first use, once per element type.

    ``code`` is prefixed with :data:`PRELUDE`; ``kernel_names`` lists the ``extern "C"``
    kernels it defines.
    """

    def __init__(self, name: str, code: str, kernel_names):
        self.name = name
        self.code = PRELUDE + code
        self.kernel_names = tuple(kernel_names)
        self._compiled: dict[tuple[object, np.dtype], object] = {}
        _all_sources.append(self)

    def full_code(self, dtype) -> str:
        """The exact text handed to the compiler for element type ``dtype``."""
        return f"typedef {c_type(dtype)} T;\n{self.code}"

    def is_compiled(self) -> bool:
        return bool(self._compiled)

    def function(self, kernel_name: str, dtype):
        """The launchable kernel ``kernel_name`` for ``dtype``: ``f(grid, block, args)``."""
        if kernel_name not in self.kernel_names:
            raise KeyError(f"{self.name}: no kernel {kernel_name!r} (has {self.kernel_names})")
        dtype = np.dtype(dtype)
        key = (id(_compiler), dtype)
        if key not in self._compiled:
            if _compiler is None:
                self._compiled[key] = _CupyCompiled(self.full_code(dtype))
            else:
                self._compiled[key] = _compiler(self, dtype)
        return self._compiled[key].function(kernel_name)

    def launch(self, kernel_name: str, dtype, n_items: int, args, block: int = MAX_BLOCK):
        """Launch ``kernel_name`` on enough blocks for ``n_items`` grid-stride work items."""
        if n_items <= 0:
            return
        grid, block_shape = launch_config(n_items, block)
        self.function(kernel_name, dtype)(grid, block_shape, tuple(args))

    def launch_blocks(self, kernel_name: str, dtype, n_groups: int, args, block: int = MAX_BLOCK):
        """Launch a kernel that gives each of ``n_groups`` groups (e.g. channels) to one block
        (grid-stride over groups) and reduces over the group's elements with ``block`` threads."""
        if n_groups <= 0:
            return
        grid = (max(1, min(MAX_GRID, int(n_groups))),)
        self.function(kernel_name, dtype)(grid, (block,), tuple(args))


@contextlib.contextmanager
def use_compiler(compiler):
    """Compile and run kernels with ``compiler(source, dtype) -> object with .function(name)``
    inside the block (the CPU emulator in tests) instead of CuPy."""
    global _compiler
    previous = _compiler
    _compiler = compiler
    try:
        yield
    finally:
        _compiler = previous
        for source in _all_sources:
            for key in [k for k in source._compiled if k[0] == id(compiler)]:
                del source._compiled[key]


def all_sources() -> list[CudaSource]:
    """Every :class:`CudaSource` defined by the imported family modules."""
    return list(_all_sources)
