"""A NumPy-backed stand-in for CuPy: run the ``device="cuda"`` code paths on a machine without a GPU.

This is a test tool, not a backend. It imitates the parts of CuPy's behaviour that device-agnostic
code most often gets wrong, so those bugs show up on the CPU:

* its ``ndarray`` is *not* a ``numpy.ndarray`` (``isinstance`` checks see a foreign array, and
  ``type(x).__module__`` is ``"cupy"``, which is how the backend recognises CuPy arrays);
* implicit device-to-host conversion raises ``TypeError`` exactly like CuPy's
  (``numpy.asarray(gpu_array)``, ``numpy.float64(gpu_array)``, ``numpy_array + gpu_array``...):
  data leaves the "device" only through ``.get()``, ``cupy.asnumpy``, ``.item()``, ``float()``...;
* NumPy arrays are not accepted as operands of ufuncs, operators or array functions (CuPy refuses
  them), nor as ``__setitem__`` values except for the whole-array slice ``a[:] = host_array``;
* reductions and integer indexing return 0-d arrays, not scalars;
* ``RawModule`` sources are run by the CPU emulator of :mod:`tinygrad_cnn.testing.cuda_emulator` (with its argument-width
  and bounds checks), and ``random`` is a generator of its own, seeded by ``cupy.random.seed``.

What it cannot show: anything about the real GPU (NVRTC, cuBLAS, speed, memory), functions NumPy
has but CuPy lacks, and small differences in dtype promotion rules.

Use it for a whole pytest run (every test that takes the ``device`` fixture then also runs on the
simulated "cuda" device)::

    python -m pytest -p tinygrad_cnn.testing.simulated_cupy tests/...

or in a script: ``from tinygrad_cnn.testing import simulated_cupy; simulated_cupy.install()``
before anything asks for the GPU.
"""
from __future__ import annotations

import numbers
import re
import sys
import types

import numpy as np

__all__ = ["install", "uninstall", "ndarray", "asarray", "array", "asnumpy", "get_array_module"]

__version__ = "14.0.0+simulated"

# The public attributes of cupy.ndarray (CuPy 14.2) and the NumPy functions CuPy 14.2 does not have:
# NumPy-only names raise AttributeError here, as on CuPy.
_NDARRAY_ATTRIBUTES = frozenset("""
T all any argmax argmin argpartition argsort astype base byteswap choose clip compress conj conjugate copy
cstruct cumprod cumsum data device diagonal dot dtype dump dumps fill flags flat flatten get imag item
itemsize mT max mdspan mean min nbytes ndim nonzero partition prod ptp put ravel real reduced_view repeat
reshape round scatter_add scatter_max scatter_min searchsorted set shape size sort squeeze std strides sum
swapaxes take toDlpack tobytes tofile tolist trace transpose var view""".split())
_NUMPY_ONLY = frozenset("""
asmatrix block bmat busday_count busday_offset busdaycalendar bytes_ character clongdouble complex256
datetime64 datetime_as_string datetime_data einsum_path errstate flexible float128 frompyfunc fromregex
geomspace get_include getbufsize geterr geterrcall histogram_bin_edges info insert is_busday isnat
longdouble matrix matvec memmap nanpercentile nanquantile ndenumerate nditer nested_iters object_ polyder
polydiv polyint recarray record setbufsize seterr seterrcall show_runtime spacing str_ test timedelta64
unstack vecdot vecmat void""".split())

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a "
             "NumPy array explicitly.")


class _Flags:
    """CuPy's ``ndarray.flags``: contiguity and ownership only (there is no ``writeable``)."""

    def __init__(self, array: np.ndarray):
        self.c_contiguous = bool(array.flags.c_contiguous)
        self.f_contiguous = bool(array.flags.f_contiguous)
        self.owndata = bool(array.flags.owndata)

    def __getitem__(self, key):
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[key]


class _MemoryPointer:
    def __init__(self, array: np.ndarray):
        self.ptr = int(array.ctypes.data)


_MemoryPointer.__module__ = "cupy.cuda.memory"


def _host_operand_error(what: str, value) -> TypeError:
    return TypeError(f"Unsupported type {type(value)} for {what} (simulated CuPy: move host arrays to "
                     "the device with cupy.asarray first)")


def _unwrap(value, what: str, allow_host: bool = False):
    """The NumPy array behind ``value``; host arrays are refused unless ``allow_host``."""
    if isinstance(value, ndarray):
        return value._array
    if isinstance(value, np.ndarray):
        if allow_host:
            return value
        raise _host_operand_error(what, value)
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, what, allow_host) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v, what, allow_host) for k, v in value.items()}
    return value


def _wrap(value):
    """Device arrays for NumPy results; NumPy scalars become 0-d arrays, like CuPy's results."""
    if isinstance(value, np.ndarray):
        return ndarray._of(value)
    if isinstance(value, np.generic):
        return ndarray._of(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _is_operand(value) -> bool:
    return isinstance(value, (ndarray, np.ndarray, np.generic, numbers.Number, bool, list, tuple))


class ndarray:  # noqa: N801 - the name CuPy uses
    """A "device" array: a NumPy array that only leaves the device explicitly."""

    __array_priority__ = 100
    __hash__ = None

    def __init__(self, shape, dtype=float, order="C"):
        self._array = np.empty(shape, dtype=dtype, order=order)

    @classmethod
    def _of(cls, array: np.ndarray) -> "ndarray":
        out = object.__new__(cls)
        out._array = array
        return out

    # -- NumPy interoperability, as CuPy does it
    def __array__(self, dtype=None, copy=None):
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        out = kwargs.get("out")
        arrays = _unwrap(inputs, f"numpy.{ufunc.__name__}")
        if out is not None:
            kwargs["out"] = _unwrap(out, f"numpy.{ufunc.__name__}(out=...)")
        result = getattr(ufunc, method)(*arrays, **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types_, args, kwargs):
        if func.__name__ in _NUMPY_ONLY:
            raise TypeError(f"no implementation found for 'numpy.{func.__name__}' on cupy.ndarray (simulated CuPy)")
        result = func(*_unwrap(args, f"numpy.{func.__name__}"), **_unwrap(kwargs, f"numpy.{func.__name__}"))
        return _wrap(result)

    # -- explicit transfers
    def get(self, stream=None, order="C", out=None, blocking=True):
        host = np.array(self._array, order=order, copy=True)
        if out is not None:
            out[...] = host
            return out
        return host

    def set(self, array, stream=None):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"ndarray.set: expected a numpy.ndarray, got {type(array)}")
        if array.shape != self.shape:
            raise ValueError(f"ndarray.set: shape mismatch {array.shape} != {self.shape}")
        self._array[...] = array

    def item(self, *args):
        return self._array.item(*args)

    def tolist(self):
        return self._array.tolist()

    def __float__(self):
        return float(self._array)

    def __int__(self):
        return int(self._array)

    def __index__(self):
        return self._array.__index__()

    def __complex__(self):
        return complex(self._array)

    def __bool__(self):
        return bool(self._array)

    def __format__(self, spec):
        return format(self._array.item() if self._array.ndim == 0 else self._array, spec)

    def __repr__(self):
        return repr(self._array)

    def __str__(self):
        return str(self._array)

    def __len__(self):
        return len(self._array)

    def __iter__(self):
        if self._array.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (_wrap(self._array[i]) for i in range(len(self._array)))

    def __reduce__(self):
        raise TypeError("simulated cupy arrays are not picklable; save host copies (.get())")

    # -- attributes
    shape = property(lambda self: self._array.shape)
    dtype = property(lambda self: self._array.dtype)
    ndim = property(lambda self: self._array.ndim)
    size = property(lambda self: self._array.size)
    itemsize = property(lambda self: self._array.itemsize)
    nbytes = property(lambda self: self._array.nbytes)
    strides = property(lambda self: self._array.strides)
    flags = property(lambda self: _Flags(self._array))
    data = property(lambda self: _MemoryPointer(self._array))
    device = property(lambda self: cuda.Device(0))
    base = property(lambda self: None if self._array.base is None else _wrap(self._array.base))
    T = property(lambda self: _wrap(self._array.T))
    mT = property(lambda self: _wrap(np.swapaxes(self._array, -1, -2)))
    real = property(lambda self: _wrap(self._array.real))
    imag = property(lambda self: _wrap(self._array.imag))

    # -- indexing
    def __getitem__(self, key):
        return _wrap(self._array[_unwrap(key, "indexing", allow_host=True)])

    def __setitem__(self, key, value):
        if isinstance(value, np.ndarray) and value.ndim > 0 and key != slice(None):
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill (simulated CuPy accepts a "
                             "host array only for a[:] = host)")
        self._array[_unwrap(key, "indexing", allow_host=True)] = _unwrap(value, "assignment", allow_host=True)

    # -- methods: NumPy's, with device arrays in and out
    def __getattr__(self, name):
        if name.startswith("_") or name not in _NDARRAY_ATTRIBUTES:
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r} (simulated CuPy)")
        attribute = getattr(self._array, name)
        if not callable(attribute):
            return _wrap(attribute)

        def method(*args, **kwargs):
            return _wrap(attribute(*_unwrap(args, f"ndarray.{name}"), **_unwrap(kwargs, f"ndarray.{name}")))
        method.__name__ = name
        return method

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        dtype = np.dtype(dtype)
        if not copy and dtype == self.dtype:
            return self
        return _wrap(self._array.astype(dtype, order=order, copy=True))

    def copy(self, order="C"):
        return _wrap(self._array.copy(order=order))


def _binary(name):
    def operator(self, other):
        if not _is_operand(other):
            return NotImplemented
        return _wrap(getattr(self._array, name)(_unwrap(other, f"operator {name}")))
    operator.__name__ = name
    return operator


def _in_place(name):
    def operator(self, other):
        if not _is_operand(other):
            return NotImplemented
        getattr(self._array, name)(_unwrap(other, f"operator {name}"))
        return self
    operator.__name__ = name
    return operator


def _unary(name):
    def operator(self):
        return _wrap(getattr(self._array, name)())
    operator.__name__ = name
    return operator


for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
              "lshift", "rshift", "divmod"):
    setattr(ndarray, f"__{_name}__", _binary(f"__{_name}__"))
    setattr(ndarray, f"__r{_name}__", _binary(f"__r{_name}__"))
    if _name != "divmod":
        setattr(ndarray, f"__i{_name}__", _in_place(f"__i{_name}__"))
for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    setattr(ndarray, f"__{_name}__", _binary(f"__{_name}__"))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(ndarray, f"__{_name}__", _unary(f"__{_name}__"))
ndarray.__module__ = "cupy"


# ---------------------------------------------------------------------------
# Module-level functions
# ---------------------------------------------------------------------------

def asarray(a, dtype=None, order=None, *, blocking=False):
    """Host data is copied to the "device"; device arrays are returned as they are."""
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    return ndarray._of(np.array(_unwrap(a, "cupy.asarray", allow_host=True), dtype=dtype, order=order or "K",
                                copy=True))


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if isinstance(obj, ndarray):
        return ndarray._of(np.array(obj._array, dtype=dtype, copy=True, order=order, ndmin=ndmin))
    return ndarray._of(np.array(_unwrap(obj, "cupy.array", allow_host=True), dtype=dtype, copy=True,
                                order=order, ndmin=ndmin))


def ascontiguousarray(a, dtype=None):
    if not isinstance(a, ndarray):
        raise TypeError(f"cupy.ascontiguousarray: expected a cupy.ndarray, got {type(a)}")
    return ndarray._of(np.ascontiguousarray(a._array, dtype=dtype))


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    return np.asarray(a, order=order)


def get_array_module(*args):
    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else np


def _host_creation(name):
    numpy_function = getattr(np, name)

    def create(*args, **kwargs):
        return _wrap(numpy_function(*_unwrap(args, f"cupy.{name}"), **_unwrap(kwargs, f"cupy.{name}")))
    create.__name__ = name
    return create


class _Ufunc:
    def __init__(self, ufunc):
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__
        self.nin, self.nout = ufunc.nin, ufunc.nout

    def __call__(self, *args, **kwargs):
        out = kwargs.get("out")
        result = self._ufunc(*_unwrap(args, f"cupy.{self.__name__}"), **_unwrap(kwargs, f"cupy.{self.__name__}"))
        return out if out is not None else _wrap(result)

    def __getattr__(self, name):
        method = getattr(self._ufunc, name)
        return lambda *args, **kwargs: _wrap(method(*_unwrap(args, f"cupy.{self.__name__}.{name}"),
                                                    **_unwrap(kwargs, f"cupy.{self.__name__}.{name}")))


_cache: dict[str, object] = {}


def __getattr__(name):
    """Everything else is NumPy's function of that name, with device arrays in and out."""
    if name in _cache:
        return _cache[name]
    if name.startswith("__") or name in _NUMPY_ONLY:
        raise AttributeError(f"module 'cupy' (simulated) has no attribute {name!r}")
    try:
        attribute = getattr(np, name)
    except AttributeError:
        raise AttributeError(f"module 'cupy' (simulated) has no attribute {name!r}") from None
    if isinstance(attribute, np.ufunc):
        attribute = _Ufunc(attribute)
    elif isinstance(attribute, (types.FunctionType, types.BuiltinFunctionType)) or \
            type(attribute).__name__ == "_ArrayFunctionDispatcher":
        attribute = _host_creation(name)
    _cache[name] = attribute
    return attribute


def _as_strided(x, shape=None, strides=None):
    """``cupy.lib.stride_tricks.as_strided``: a view with byte strides, like NumPy's."""
    if not isinstance(x, ndarray):
        raise TypeError(f"as_strided: expected a cupy.ndarray, got {type(x)}")
    return ndarray._of(np.lib.stride_tricks.as_strided(x._array, shape=shape, strides=strides))


lib = types.ModuleType("cupy.lib")
lib.stride_tricks = types.SimpleNamespace(as_strided=_as_strided)


# ---------------------------------------------------------------------------
# cupy.random
# ---------------------------------------------------------------------------

class _RandomState:
    """CuPy's global generator (its own stream: not the CPU generator's numbers)."""

    _SALT = 0x5EED_C0DA

    def __init__(self, seed=None):
        self.seed(seed)

    def seed(self, seed=None):
        entropy = None if seed is None else [int(seed), self._SALT]
        self._generator = np.random.Generator(np.random.Philox(entropy))

    def random_sample(self, size=None, dtype=float):
        return _wrap(self._generator.random(size, dtype=np.dtype(dtype).type))

    random = random_sample

    def rand(self, *size, dtype=float):
        return self.random_sample(size, dtype)

    def standard_normal(self, size=None, dtype=float):
        return _wrap(self._generator.standard_normal(size, dtype=np.dtype(dtype).type))

    def randn(self, *size, dtype=float):
        return self.standard_normal(size, dtype)

    def normal(self, loc=0.0, scale=1.0, size=None, dtype=float):
        return _wrap(self._generator.normal(loc, scale, size).astype(dtype))

    def uniform(self, low=0.0, high=1.0, size=None, dtype=float):
        return _wrap(self._generator.uniform(low, high, size).astype(dtype))

    def randint(self, low, high=None, size=None, dtype=int):
        return _wrap(self._generator.integers(low, high, size, dtype=dtype))

    def permutation(self, num):
        return _wrap(self._generator.permutation(num))

    def choice(self, a, size=None, replace=True, p=None):
        return _wrap(self._generator.choice(_unwrap(a, "random.choice"), size, replace,
                                            None if p is None else _unwrap(p, "random.choice")))


random = types.ModuleType("cupy.random")
_state = _RandomState(None)
random.get_random_state = lambda: _state
random.seed = lambda seed=None: _state.seed(seed)
random.RandomState = _RandomState
for _name in ("random_sample", "random", "rand", "standard_normal", "randn", "normal", "uniform", "randint",
              "permutation", "choice"):
    setattr(random, _name, (lambda name: lambda *a, **k: getattr(_state, name)(*a, **k))(_name))


# ---------------------------------------------------------------------------
# cupy.cuda: one simulated device
# ---------------------------------------------------------------------------

_TOTAL_MEMORY = 16 * 2**30


class _Device:
    def __init__(self, index=0):
        self.id = int(index)
        if self.id != 0:
            raise RuntimeError(f"cudaErrorInvalidDevice: simulated CuPy has one device, got {index}")
        self.compute_capability = "90"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def use(self):
        return None

    def synchronize(self):
        return None


class _Stream:
    null = None

    def __init__(self, non_blocking=False):
        pass

    def synchronize(self):
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Event:
    def record(self, stream=None):
        import time
        self.time = time.perf_counter()

    def synchronize(self):
        return None


def _properties(index=0):
    _Device(index)
    return {"name": b"Simulated GPU (NumPy)", "totalGlobalMem": _TOTAL_MEMORY, "multiProcessorCount": 1,
            "major": 9, "minor": 0}


cuda = types.ModuleType("cupy.cuda")
cuda.Device = _Device
cuda.Stream = _Stream
cuda.Event = _Event
cuda.get_current_stream = lambda: _Stream()
cuda.get_elapsed_time = lambda start, end: 1000.0 * (end.time - start.time)
cuda.runtime = types.SimpleNamespace(
    getDeviceCount=lambda: 1, getDevice=lambda: 0, getDeviceProperties=_properties,
    memGetInfo=lambda: (_TOTAL_MEMORY // 2, _TOTAL_MEMORY), runtimeGetVersion=lambda: 13000,
    driverGetVersion=lambda: 13000, deviceSynchronize=lambda: None)
cuda.is_available = lambda: True


class _MemoryPool:
    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0

    def free_all_blocks(self):
        return None


_pool = _MemoryPool()
get_default_memory_pool = lambda: _pool  # noqa: E731
get_default_pinned_memory_pool = lambda: _pool  # noqa: E731


# ---------------------------------------------------------------------------
# RawModule: the CUDA source runs in the CPU emulator
# ---------------------------------------------------------------------------

_TYPEDEF = re.compile(r"^\s*typedef\s+(float|double)\s+T\s*;\s*\n")


class _RawFunction:
    def __init__(self, emulated):
        self._emulated = emulated

    def __call__(self, grid, block, args, shared_mem=0, stream=None):
        host_args = []
        for position, value in enumerate(args):
            if isinstance(value, np.ndarray):
                raise _host_operand_error(f"kernel argument {position}", value)
            host_args.append(value._array if isinstance(value, ndarray) else value)
        self._emulated(tuple(grid), tuple(block), tuple(host_args))


class RawModule:
    """Compiles ``code`` with the CPU emulator; the source must start with ``typedef float|double T;``
    (as every source of ``tinygrad_cnn.kernels.cuda`` does)."""

    def __init__(self, code=None, path=None, options=(), backend="nvrtc", name_expressions=None, **kwargs):
        from . import cuda_emulator as _emulator
        match = _TYPEDEF.match(code or "")
        if match is None:
            raise NotImplementedError("simulated RawModule: the source must begin with `typedef float T;` "
                                      "or `typedef double T;`")
        self.options = tuple(options)
        body = code[match.end():]
        source = types.SimpleNamespace(name="RawModule", code=body,
                                       kernel_names=tuple(_emulator.parse_kernels(body)))
        self._compiled = _emulator.compile_source(source, np.float32 if match.group(1) == "float" else np.float64)

    def get_function(self, name):
        return _RawFunction(self._compiled.function(name))


def RawKernel(*args, **kwargs):  # noqa: N802
    raise NotImplementedError("simulated CuPy: only RawModule is emulated")


ElementwiseKernel = ReductionKernel = RawKernel


# ---------------------------------------------------------------------------
# Installing
# ---------------------------------------------------------------------------

_previous: dict[str, object] = {}


def install():
    """Make ``import cupy`` return this module and let the backend see one (simulated) GPU."""
    module = sys.modules[__name__]
    for name, value in (("cupy", module), ("cupy.random", random), ("cupy.cuda", cuda)):
        if name not in _previous:
            _previous[name] = sys.modules.get(name)
        sys.modules[name] = value
    _reset_backend_cache()


def uninstall():
    for name, value in _previous.items():
        if value is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = value
    _previous.clear()
    _reset_backend_cache()
    from ..kernels.cuda import _runtime
    for source in _runtime.all_sources():  # kernels "compiled" by the stand-in's RawModule
        for key in [k for k in source._compiled if k[0] == id(None)]:
            del source._compiled[key]


def _reset_backend_cache():
    backend = sys.modules.get("tinygrad_cnn.backend")
    if backend is not None:
        backend._cupy = None
        backend._cupy_checked = False


def pytest_report_header(config):
    return "tinygrad_cnn: CuPy is SIMULATED with NumPy (tinygrad_cnn/testing/simulated_cupy.py); not a GPU run"


def pytest_load_initial_conftests(early_config, parser, args):
    """Loaded as a pytest plugin (``-p tinygrad_cnn.testing.simulated_cupy``): install the stand-in
    before any conftest file imports tinygrad_cnn and caches whether CuPy is present."""
    install()
