"""Collective communication between processes (PyTorch's ``torch.distributed``).

Two backends, both proven engines rather than a protocol of our own:

* ``"mpi"``: MPI through ``mpi4py`` (install the ``distributed`` extra, which also brings MPICH and
  its ``mpiexec``). Processes are started by the MPI launcher (``mpiexec -n 4 python train.py``, or a
  cluster scheduler), and the rank and world size come from MPI itself. CUDA tensors are staged
  through host memory.
* ``"nccl"``: NCCL through CuPy (``cupy.cuda.nccl``) for tensors on NVIDIA GPUs. With more than one
  process, MPI starts them and carries NCCL's 128-byte unique id from rank 0 to the others; a single
  process needs only CuPy. Each process uses the GPU whose index is its rank among the processes of
  its node. CPU tensors (and the small agreement checks below) travel through MPI.

Collectives work in place on Tensors, as PyTorch's do::

    import tinygrad_cnn.distributed as dist
    dist.init_process_group("mpi")
    t = tinygrad_cnn.ones(3) * dist.get_rank()
    dist.all_reduce(t)                      # every rank now holds 0 + 1 + ... + (world - 1)

Before each collective the ranks compare the tensor's shape and dtype (one small all-gather), so a
mismatch raises a ``ValueError`` naming both, on every rank, instead of hanging or mixing bytes.
"""
from __future__ import annotations

import enum
import os

import numpy as np

from .backend import get_array_module

__all__ = ["ReduceOp", "Backend", "init_process_group", "is_initialized", "is_available", "get_rank",
           "get_world_size", "get_backend", "all_reduce", "broadcast", "all_gather", "barrier",
           "destroy_process_group", "launched_with_mpi", "DistributedError"]

EXTRA_HINT = 'pip install "tinygrad_cnn[distributed]"'

# Environment variables set by the launchers of MPICH (hydra), Open MPI and Intel MPI / Slurm's PMI.
_MPI_LAUNCHER_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


class DistributedError(RuntimeError):
    """A collective was misused: called before ``init_process_group``, or the backend is unusable."""


class ReduceOp(enum.Enum):
    """How ``all_reduce`` combines the ranks' values. ``AVG`` is the sum divided by the world size."""
    SUM = "sum"
    PRODUCT = "product"
    MIN = "min"
    MAX = "max"
    AVG = "avg"


class Backend:
    MPI = "mpi"
    NCCL = "nccl"


# ---------------------------------------------------------------------------- raw arrays
# The one place that reaches into a Tensor's storage: collectives (and DistributedDataParallel,
# SyncBatchNorm) work on the raw NumPy/CuPy array, in place.

def _array(tensor):
    return tensor.array


# ---------------------------------------------------------------------------- backends

def _import_mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(f"distributed: the 'mpi' backend needs mpi4py and an MPI library ({exc}); "
                          f"install them with {EXTRA_HINT}") from None
    return MPI


def _import_nccl():
    """``(nccl module, function giving the current CUDA stream pointer)``; tests substitute a stand-in."""
    try:
        import cupy
        from cupy.cuda import nccl
    except ImportError as exc:
        raise ImportError(f"distributed: the 'nccl' backend needs CuPy built with NCCL ({exc}); "
                          "install cupy-cuda12x (pip install \"tinygrad_cnn[cuda]\") and NCCL "
                          "(pip install nvidia-nccl-cu12)") from None
    if not getattr(nccl, "available", True):
        raise ImportError("distributed: CuPy is installed but cannot load the NCCL library; install it with "
                          "python -m cupyx.tools.install_library --library nccl --cuda 12.x (or pip install "
                          "nvidia-nccl-cu12, or a system NCCL)")
    return nccl, lambda: cupy.cuda.get_current_stream().ptr


def launched_with_mpi() -> bool:
    """True when an MPI launcher (``mpiexec``, ``srun`` with PMI) started this process."""
    return any(name in os.environ for name in _MPI_LAUNCHER_VARS)


class _MPIBackend:
    name = Backend.MPI

    def __init__(self):
        MPI = _import_mpi()
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.rank, self.world_size = self.comm.Get_rank(), self.comm.Get_size()
        self.ops = {ReduceOp.SUM: MPI.SUM, ReduceOp.PRODUCT: MPI.PROD, ReduceOp.MIN: MPI.MIN,
                    ReduceOp.MAX: MPI.MAX, ReduceOp.AVG: MPI.SUM}

    # MPI works on host memory: a CUDA array goes down and comes back (MPICH's wheel is not CUDA-aware).
    @staticmethod
    def _host(array):
        return np.ascontiguousarray(array if get_array_module(array) is np else array.get())

    @staticmethod
    def _store(target, host):
        if target is not host:
            xp = get_array_module(target)
            target[...] = host if xp is np else xp.asarray(host)

    def all_reduce(self, array, op):
        host = self._host(array)
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=self.ops[op])
        self._store(array, host)

    def broadcast(self, array, src):
        host = self._host(array)
        self.comm.Bcast(host, root=src)
        self._store(array, host)

    def all_gather(self, array):
        host = self._host(array)
        out = np.empty((self.world_size,) + host.shape, dtype=host.dtype)
        self.comm.Allgather(host, out)
        return out

    def barrier(self):
        self.comm.Barrier()

    def destroy(self):
        pass  # MPI itself is finalised by mpi4py at exit


class _NCCLBackend:
    name = Backend.NCCL

    def __init__(self):
        self.nccl, self.stream = _import_nccl()
        nccl = self.nccl
        self.mpi = None
        self.rank, self.world_size = 0, 1
        if launched_with_mpi():
            self.mpi = _MPIBackend()
            self.rank, self.world_size = self.mpi.rank, self.mpi.world_size
        uid = np.zeros(128, dtype=np.int8)
        if self.rank == 0:
            uid[:] = np.asarray(nccl.get_unique_id(), dtype=np.int64).astype(np.int8)
        if self.mpi is not None:
            self.mpi.broadcast(uid, 0)
            _select_local_gpu(self.mpi)
        self.comm = nccl.NcclCommunicator(self.world_size, tuple(int(v) for v in uid), self.rank)
        self.types = {np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.float32): nccl.NCCL_FLOAT32,
                      np.dtype(np.float64): nccl.NCCL_FLOAT64, np.dtype(np.int32): nccl.NCCL_INT32,
                      np.dtype(np.int64): nccl.NCCL_INT64, np.dtype(np.uint8): nccl.NCCL_UINT8,
                      np.dtype(np.int8): nccl.NCCL_INT8}
        self.ops = {ReduceOp.SUM: nccl.NCCL_SUM, ReduceOp.PRODUCT: nccl.NCCL_PROD,
                    ReduceOp.MIN: nccl.NCCL_MIN, ReduceOp.MAX: nccl.NCCL_MAX, ReduceOp.AVG: nccl.NCCL_SUM}

    def _in_host_memory(self, array):
        # NCCL reads GPU memory only; host arrays (CPU tensors, the agreement checks' metadata) go
        # through MPI, and in a single process there is nothing to exchange. A stand-in communicator
        # that works on host memory (for tests without a GPU) sets ``accepts_host_arrays``.
        return get_array_module(array) is np and not getattr(self.nccl, "accepts_host_arrays", False)

    def _buffer(self, array, what):
        if array.dtype not in self.types:
            raise ValueError(f"{what}: NCCL has no type for dtype {array.dtype}; supported: "
                             f"{', '.join(str(t) for t in self.types)}")
        if not array.flags.c_contiguous:
            raise ValueError(f"{what}: NCCL needs a contiguous tensor, got strides {array.strides}")
        return _pointer(array), array.size, self.types[array.dtype]

    def all_reduce(self, array, op):
        if self._in_host_memory(array):
            if self.mpi is not None:
                self.mpi.all_reduce(array, op)
            return
        ptr, count, dtype = self._buffer(array, "all_reduce")
        self.comm.allReduce(ptr, ptr, count, dtype, self.ops[op], self.stream())

    def broadcast(self, array, src):
        if self._in_host_memory(array):
            if self.mpi is not None:
                self.mpi.broadcast(array, src)
            return
        ptr, count, dtype = self._buffer(array, "broadcast")
        self.comm.bcast(ptr, count, dtype, src, self.stream())

    def all_gather(self, array):
        if self._in_host_memory(array):
            return self.mpi.all_gather(array) if self.mpi is not None else array[None].copy()
        xp = get_array_module(array)
        out = xp.empty((self.world_size,) + array.shape, dtype=array.dtype)
        ptr, count, dtype = self._buffer(array, "all_gather")
        self.comm.allGather(ptr, _pointer(out), count, dtype, self.stream())
        return out

    def barrier(self):
        if self.mpi is not None:
            self.mpi.barrier()

    def destroy(self):
        self.comm.destroy()


def _pointer(array):
    return array.ctypes.data if get_array_module(array) is np else array.data.ptr


def _select_local_gpu(mpi):
    """Use GPU ``i`` for the ``i``-th process on this node (ranks sharing memory form a node)."""
    import cupy
    local = mpi.comm.Split_type(mpi.MPI.COMM_TYPE_SHARED)
    cupy.cuda.Device(local.Get_rank() % cupy.cuda.runtime.getDeviceCount()).use()
    local.Free()


# ---------------------------------------------------------------------------- process group

_group = None


def is_available() -> bool:
    """True when mpi4py can be imported (the MPI backend is usable)."""
    try:
        _import_mpi()
    except ImportError:
        return False
    return True


def init_process_group(backend="mpi", init_method=None, world_size=-1, rank=-1, **unused):
    """Join the default process group.

    ``backend``: ``"mpi"`` or ``"nccl"``. The rank and world size come from the MPI launcher;
    ``world_size`` / ``rank`` may be passed to check that expectation (PyTorch passes them for its
    TCP rendezvous, which is not used here).
    """
    global _group
    if _group is not None:
        raise DistributedError("init_process_group: the default process group is already initialized; "
                               "call destroy_process_group() first")
    if init_method not in (None, "env://"):
        raise ValueError(f"init_process_group: init_method {init_method!r} is not supported; processes "
                         "are started and connected by the MPI launcher (mpiexec)")
    name = str(backend).lower()
    if name == Backend.MPI:
        group = _MPIBackend()
    elif name == Backend.NCCL:
        group = _NCCLBackend()
    else:
        raise ValueError(f"init_process_group: backend must be 'mpi' or 'nccl', got {backend!r}")
    for label, expected, actual in (("world_size", world_size, group.world_size), ("rank", rank, group.rank)):
        if int(expected) != -1 and int(expected) != actual:
            raise ValueError(f"init_process_group: {label}={expected} was requested but the launcher "
                             f"started this process with {label} {actual}")
    _group = group


def is_initialized() -> bool:
    return _group is not None


def _require(what):
    if _group is None:
        raise DistributedError(f"{what}: the default process group is not initialized; call "
                               "tinygrad_cnn.distributed.init_process_group('mpi' or 'nccl') first")
    return _group


def get_rank() -> int:
    return _require("get_rank").rank


def get_world_size() -> int:
    return _require("get_world_size").world_size


def get_backend() -> str:
    return _require("get_backend").name


def destroy_process_group() -> None:
    global _group
    group = _require("destroy_process_group")
    group.barrier()
    group.destroy()
    _group = None


# ---------------------------------------------------------------------------- agreement checks

_SIGNATURE_DIMS = 6


def _signature(array):
    """A fixed-size int64 fingerprint of an array's dtype and shape, comparable across ranks."""
    shape = tuple(array.shape)
    head = list(shape[:_SIGNATURE_DIMS - 1])
    rest = int(np.prod(shape[_SIGNATURE_DIMS - 1:])) if len(shape) >= _SIGNATURE_DIMS else -1
    head += [-1] * (_SIGNATURE_DIMS - 1 - len(head))
    return np.array([ord(array.dtype.char), array.dtype.itemsize, len(shape), *head, rest], dtype=np.int64)


def _describe(signature):
    ndim = int(signature[2])
    dims = [str(int(d)) for d in signature[3:3 + min(ndim, _SIGNATURE_DIMS - 1)]]
    if ndim >= _SIGNATURE_DIMS:
        dims.append(f"... ({int(signature[-1])} elements in dims {_SIGNATURE_DIMS - 1}+)")
    shape = f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"
    return f"shape {shape} dtype {np.dtype(chr(int(signature[0])))}"


def _check_same(group, array, what):
    """Raise on every rank when the ranks' tensors differ in shape or dtype."""
    if group.world_size == 1:
        return
    mpi = group if isinstance(group, _MPIBackend) else group.mpi
    if mpi is None:
        return
    mine = _signature(array)
    everyone = mpi.all_gather(mine)
    if not (everyone == mine).all():
        listing = "; ".join(f"rank {r}: {_describe(s)}" for r, s in enumerate(everyone))
        raise ValueError(f"{what}: the ranks' tensors differ in shape or dtype ({listing})")


def _tensor_array(tensor, what):
    from .tensor import Tensor
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{what}: expected a Tensor, got {type(tensor).__name__}")
    return _array(tensor)


# ---------------------------------------------------------------------------- collectives

def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Combine ``tensor`` across ranks with ``op``; every rank ends with the result, in place."""
    pg = _require("all_reduce")
    _no_group_or_async("all_reduce", group, async_op)
    if not isinstance(op, ReduceOp):
        raise TypeError(f"all_reduce: op must be a ReduceOp, got {op!r}")
    array = _tensor_array(tensor, "all_reduce")
    if op is ReduceOp.AVG and array.dtype.kind not in "fc":
        raise TypeError(f"all_reduce: ReduceOp.AVG needs a floating point tensor, got dtype {array.dtype}")
    _check_same(pg, array, "all_reduce")
    reduce_array(array, op)


def reduce_array(array, op=ReduceOp.SUM):
    """``all_reduce`` on a raw contiguous array, without the agreement check (callers that verified
    their layout once, such as ``DistributedDataParallel``, reduce many buckets this way)."""
    pg = _require("all_reduce")
    work = array if array.flags.c_contiguous else get_array_module(array).ascontiguousarray(array)
    pg.all_reduce(work, op)
    if op is ReduceOp.AVG:
        work /= pg.world_size
    if work is not array:
        array[...] = work


def broadcast(tensor, src, group=None, async_op=False):
    """Copy rank ``src``'s ``tensor`` into every rank's ``tensor``, in place."""
    pg = _require("broadcast")
    _no_group_or_async("broadcast", group, async_op)
    if not 0 <= int(src) < pg.world_size:
        raise ValueError(f"broadcast: src must be a rank in [0, {pg.world_size}), got {src}")
    array = _tensor_array(tensor, "broadcast")
    _check_same(pg, array, "broadcast")
    broadcast_array(array, int(src))


def broadcast_array(array, src=0):
    """``broadcast`` on a raw array, without the agreement check."""
    pg = _require("broadcast")
    work = array if array.flags.c_contiguous else get_array_module(array).ascontiguousarray(array)
    pg.broadcast(work, src)
    if work is not array:
        array[...] = work


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """Fill ``tensor_list[r]`` (one tensor per rank, each shaped like ``tensor``) with rank ``r``'s ``tensor``."""
    pg = _require("all_gather")
    _no_group_or_async("all_gather", group, async_op)
    array = _tensor_array(tensor, "all_gather")
    if len(tensor_list) != pg.world_size:
        raise ValueError(f"all_gather: tensor_list must hold world_size={pg.world_size} tensors, "
                         f"got {len(tensor_list)}")
    for i, out in enumerate(tensor_list):
        target = _tensor_array(out, "all_gather")
        if target.shape != array.shape or target.dtype != array.dtype:
            raise ValueError(f"all_gather: tensor_list[{i}] has shape {tuple(target.shape)} dtype "
                             f"{target.dtype}, but tensor has shape {tuple(array.shape)} dtype {array.dtype}")
    _check_same(pg, array, "all_gather")
    contiguous = array if array.flags.c_contiguous else get_array_module(array).ascontiguousarray(array)
    gathered = pg.all_gather(contiguous)
    for out, piece in zip(tensor_list, gathered):
        target = _array(out)
        xp = get_array_module(target)
        target[...] = piece if get_array_module(piece) is xp else xp.asarray(piece)


def barrier(group=None, async_op=False):
    """Wait until every rank has reached this call."""
    pg = _require("barrier")
    _no_group_or_async("barrier", group, async_op)
    pg.barrier()


def _no_group_or_async(what, group, async_op):
    if group is not None:
        raise NotImplementedError(f"{what}: only the default process group exists; pass group=None")
    if async_op:
        raise NotImplementedError(f"{what}: async_op=True is not supported; collectives are blocking")
