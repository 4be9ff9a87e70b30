"""Describe the installation: ``python -m tinygrad_cnn.info`` (``--json`` for machine output).

Prints the versions of Python, NumPy, Numba (and its threading layer), CuPy and the CUDA
runtime and driver, the GPU's name and memory, and for every kernel which implementation
``tinygrad_cnn.backend.kernel`` will run on CPU arrays and on GPU arrays. It is the first thing
to run (and to paste into a bug report) when something about the installation looks wrong.
Nothing here raises: every probe that fails reports why instead.
"""
from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys

import numpy as np

__all__ = ["collect", "format_report", "main", "KNOWN_KERNELS"]

# The kernels of the engine contract; any other registered name is listed too.
KNOWN_KERNELS = (
    "im2col", "col2im",
    "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward",
    "batch_norm_forward", "batch_norm_backward", "lrn_forward", "lrn_backward",
    "softmax_cross_entropy_forward", "softmax_cross_entropy_backward",
    "dropout_forward",
    "sgd_update", "adam_update", "adagrad_update", "rmsprop_update",
)


def _error_text(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _numba_info(probe_threading: bool) -> dict:
    try:
        import numba
    except Exception as error:  # noqa: BLE001 - reported, never raised
        return {"installed": False, "error": _error_text(error)}
    info = {"installed": True, "version": numba.__version__,
            "threading_layer_config": str(numba.config.THREADING_LAYER),
            "num_threads": int(numba.config.NUMBA_NUM_THREADS)}
    if probe_threading:
        # The active layer is only known after a parallel function has run once.
        try:
            @numba.njit(parallel=True, cache=False)
            def _probe(n):
                total = 0
                for i in numba.prange(n):
                    total += i
                return total

            _probe(8)
            info["threading_layer"] = numba.threading_layer()
        except Exception as error:  # noqa: BLE001
            info["threading_layer"] = f"unavailable ({_error_text(error)})"
    return info


def _version_triple(number: int) -> str:
    """CUDA encodes versions as 1000 * major + 10 * minor."""
    return f"{number // 1000}.{(number % 1000) // 10}"


def _cuda_info() -> dict:
    try:
        import cupy
    except Exception as error:  # noqa: BLE001
        return {"cupy_installed": False, "error": _error_text(error), "available": False, "devices": []}
    info = {"cupy_installed": True, "cupy_version": cupy.__version__, "available": False, "devices": []}
    runtime = cupy.cuda.runtime
    try:
        info["runtime_version"] = _version_triple(runtime.runtimeGetVersion())
    except Exception as error:  # noqa: BLE001
        info["runtime_version"] = f"unavailable ({_error_text(error)})"
    try:
        info["driver_version"] = _version_triple(runtime.driverGetVersion())
    except Exception as error:  # noqa: BLE001
        info["driver_version"] = f"unavailable ({_error_text(error)})"
    try:
        count = runtime.getDeviceCount()
    except Exception as error:  # noqa: BLE001
        info["error"] = _error_text(error)
        return info
    for index in range(count):
        try:
            props = runtime.getDeviceProperties(index)
            name = props["name"]
            device = {"index": index, "name": name.decode() if isinstance(name, bytes) else str(name),
                      "total_memory_gib": round(int(props["totalGlobalMem"]) / 2**30, 2),
                      "compute_capability": f"{props['major']}.{props['minor']}"}
            with cupy.cuda.Device(index):
                free, _ = runtime.memGetInfo()
            device["free_memory_gib"] = round(int(free) / 2**30, 2)
        except Exception as error:  # noqa: BLE001
            device = {"index": index, "error": _error_text(error)}
        info["devices"].append(device)
    info["available"] = count > 0
    return info


def _load_op_modules() -> list[str]:
    """Import the modules that register the NumPy references; returns the import problems."""
    problems = []
    for name in ("tinygrad_cnn.nn.functional", "tinygrad_cnn.optim"):
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001
            problems.append(f"{name}: {_error_text(error)}")
    return problems


def _kernel_tables() -> tuple[dict, dict, list[str]]:
    """``({name: numba fn}, {name: cuda wrapper}, problems)`` read from the kernel packages."""
    from . import backend
    tables = {"cpu": {}, "cuda": {}}
    problems = []
    for kind in tables:
        try:
            tables[kind] = backend.kernel_table(kind)
        except Exception as error:  # noqa: BLE001 - reported here; backend.kernel raises it
            problems.append(_error_text(error))
    return tables["cpu"], tables["cuda"], problems


def _kernel_choices(gpu_available: bool) -> tuple[list[dict], list[str]]:
    from . import backend
    problems = _load_op_modules()
    cpu_table, cuda_table, table_problems = _kernel_tables()
    problems += table_problems
    references = dict(getattr(backend, "_references", {}))
    names = list(KNOWN_KERNELS) + sorted(
        (set(references) | set(cpu_table) | set(cuda_table)) - set(KNOWN_KERNELS))
    rows = []
    for name in names:
        written = [impl for impl, present in (("numpy", name in references), ("numba", name in cpu_table),
                                              ("cupy", name in cuda_table)) if present]
        try:
            cpu_choice, cpu_why = backend.kernel_choice(name, on_gpu=False)
            if cpu_choice == "numpy" and name not in references:
                cpu_choice, cpu_why = "missing", "no reference registered"
        except Exception as error:  # noqa: BLE001
            cpu_choice, cpu_why = "missing", _error_text(error)
        try:
            gpu_choice, gpu_why = backend.kernel_choice(name, on_gpu=True)
            if gpu_choice == "numpy":
                gpu_choice = "numpy reference on CuPy arrays" if name in references else "missing"
        except Exception as error:  # noqa: BLE001
            gpu_choice, gpu_why = "missing", _error_text(error)
        if not gpu_available:
            gpu_choice += " (no GPU here)"
        try:
            usable = backend.available_implementations(name)
        except Exception as error:  # noqa: BLE001
            usable = [f"unknown ({_error_text(error)})"]
        rows.append({"kernel": name, "written": written, "usable": usable, "cpu": cpu_choice,
                     "cpu_why": cpu_why, "gpu": gpu_choice, "gpu_why": gpu_why})
    return rows, problems


def collect(probe_threading: bool = True) -> dict:
    """Everything :func:`main` prints, as a JSON-serialisable dict."""
    from . import backend
    cuda = _cuda_info()
    usable = backend.cupy_or_none() is not None
    kernels, problems = _kernel_choices(usable)
    try:
        from importlib.metadata import version
        package_version = version("tinygrad_cnn")
    except Exception:  # noqa: BLE001 - running from a source tree that is not installed
        package_version = "not installed (source tree)"
    return {
        "tinygrad_cnn": package_version,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "numba": _numba_info(probe_threading),
        "cuda": cuda,
        "cpu_backend": backend.get_cpu_backend(),
        "kernels": kernels,
        "problems": problems,
    }


def format_report(info: dict) -> str:
    lines = [
        f"tinygrad_cnn  {info['tinygrad_cnn']}",
        f"Python        {info['python']}  ({info['platform']})",
        f"NumPy         {info['numpy']}",
    ]
    numba = info["numba"]
    if numba.get("installed"):
        layer = numba.get("threading_layer", "not probed")
        lines.append(f"Numba         {numba['version']}  (threading layer: {layer}, configured: "
                     f"{numba['threading_layer_config']}, threads: {numba['num_threads']})")
    else:
        lines.append(f"Numba         not installed ({numba.get('error')}): the NumPy reference kernels run "
                     "on the CPU")
    cuda = info["cuda"]
    if cuda.get("cupy_installed"):
        lines.append(f"CuPy          {cuda['cupy_version']}")
        lines.append(f"CUDA runtime  {cuda.get('runtime_version')}")
        lines.append(f"CUDA driver   {cuda.get('driver_version')}")
        if cuda["devices"]:
            for device in cuda["devices"]:
                if "error" in device:
                    lines.append(f"GPU {device['index']}         error: {device['error']}")
                else:
                    lines.append(f"GPU {device['index']}         {device['name']}  (compute "
                                 f"{device['compute_capability']}, {device['total_memory_gib']} GiB, "
                                 f"{device['free_memory_gib']} GiB free)")
        else:
            lines.append(f"GPU           none usable ({cuda.get('error', 'no CUDA device found')})")
    else:
        lines.append(f"CuPy          not installed ({cuda.get('error')})")
        lines.append("GPU           unavailable: install the GPU extra with `pip install -e .[cuda]` "
                     "(or the cupy-cudaXXx wheel for your CUDA) on a machine with an NVIDIA GPU")
    lines.append(f"CPU backend   {info['cpu_backend']}  (set with TINYGRAD_CNN_CPU_BACKEND=numpy|numba)")
    lines.append("")
    width = max(len(row["kernel"]) for row in info["kernels"]) if info["kernels"] else 10
    lines.append("Kernels: implementations written, those usable on this machine, and the one "
                 "backend.kernel picks (and why)")
    lines.append(f"{'kernel'.ljust(width)}  {'written'.ljust(17)}  {'usable here'.ljust(17)}  "
                 f"{'CPU arrays'.ljust(10)}  GPU arrays")
    for row in info["kernels"]:
        lines.append(f"{row['kernel'].ljust(width)}  {','.join(row['written']).ljust(17)}  "
                     f"{','.join(row['usable']).ljust(17)}  {row['cpu'].ljust(10)}  {row['gpu']}")
        lines.append(f"{''.ljust(width)}  CPU: {row['cpu_why']}; GPU: {row['gpu_why']}")
    for problem in info["problems"]:
        lines.append(f"problem: {problem}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinygrad_cnn.info", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    parser.add_argument("--no-threading-probe", action="store_true",
                        help="skip compiling a tiny parallel Numba function to find the threading layer")
    args = parser.parse_args(argv)
    info = collect(probe_threading=not args.no_threading_probe)
    print(json.dumps(info, indent=2) if args.json else format_report(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
