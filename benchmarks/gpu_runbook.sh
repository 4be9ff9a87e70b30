#!/usr/bin/env bash
# The checks and measurements that need a real NVIDIA GPU (see docs/cuda.md, "GPU run-book").
#
#   bash benchmarks/gpu_runbook.sh STEP [STEP...]
#   STEP: install env kernels gradcheck device_suite suite train nccl bench all
#
# Each step writes its log (and JSON where there is one) to $OUT (default runs/gpu_runbook) and stops
# the script on failure, unless KEEP_GOING=1 (then every step runs and the exit status says whether
# any failed). STEP_TIMEOUT (seconds, default 600) bounds each step, so that one hung step cannot eat
# the time of the others; a step stopped by it counts as failed. "all" runs every step in order.
# CIFAR is read from $CIFAR_DIR (default: the first cifar-10-partial-bin found under shared/data or
# ../shared/data). TRAIN_EPOCHS sets the length of the training step (default 3).
set -euo pipefail

OUT="${OUT:-runs/gpu_runbook}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python}"
STEP_TIMEOUT="${STEP_TIMEOUT:-600}"
KEEP_GOING="${KEEP_GOING:-0}"
FAILED=()

if [[ -z "${CIFAR_DIR:-}" ]]; then
    for candidate in shared/data/cifar-10-partial-bin ../shared/data/cifar-10-partial-bin; do
        if [[ -d "$candidate" ]]; then CIFAR_DIR="$candidate"; break; fi
    done
fi

run() {  # run NAME COMMAND...: tee the output to $OUT/NAME.log, keep the exit status
    local name="$1"; shift
    echo "== $name: $*" | tee "$OUT/$name.log"
    local start=$SECONDS
    set +e
    # SIGINT first: pytest then still prints which tests ran and which failed.
    timeout --signal=INT --kill-after=15 "$STEP_TIMEOUT" "$@" 2>&1 | tee -a "$OUT/$name.log"
    local status=${PIPESTATUS[0]}
    set -e
    if [[ $status -eq 124 ]]; then echo "== $name: stopped after STEP_TIMEOUT=$STEP_TIMEOUT s" | tee -a "$OUT/$name.log"; fi
    echo "== $name: exit $status after $((SECONDS - start)) s" | tee -a "$OUT/$name.log"
    if [[ $status -ne 0 ]]; then
        FAILED+=("$name")
        if [[ "$KEEP_GOING" == 1 ]]; then return 0; fi
    fi
    return "$status"
}

step_install() {   # the checkout, without dependencies and without a package index
    if "$PYTHON" -c "import tinygrad_cnn.kernels" 2>/dev/null; then
        echo "tinygrad_cnn is importable with its kernels; no install needed"
        return 0
    fi
    run install "$PYTHON" -m pip install --no-deps --no-build-isolation --no-index -q -e .
}

step_env() {
    run env_nvidia_smi nvidia-smi || true
    run env_versions "$PYTHON" -c "import sys, numpy, numba, cupy; print(sys.version); print('numpy', numpy.__version__, \
'numba', numba.__version__, 'cupy', cupy.__version__)"
    run env_test_tools "$PYTHON" -c "import pytest, hypothesis; print('pytest', pytest.__version__, \
'hypothesis', hypothesis.__version__)"
    run env_info "$PYTHON" -m tinygrad_cnn.info
    "$PYTHON" -m tinygrad_cnn.info --json > "$OUT/info.json" || true
    # Refuse to go on when tinygrad_cnn does not see the GPU: every later step would only skip.
    run env_cuda_available "$PYTHON" -c "import tinygrad_cnn; assert tinygrad_cnn.cuda.is_available(), \
'tinygrad_cnn sees no GPU (see the info output above)'; print('cuda available:', tinygrad_cnn.cuda.get_device_name())"
}

step_kernels() {   # every CUDA kernel vs its NumPy reference, device moves, seeding, loader, layers, models
    run kernels "$PYTHON" -m pytest tests/cuda tests/kernels -q -rs -p no:cacheprovider --durations=15
}

step_gradcheck() { # float64 gradient check of each op with the tensors on the device
    run gradcheck "$PYTHON" -m pytest tests/cuda/test_cuda_backend.py -q -rs -p no:cacheprovider \
        -k "gradcheck_on_device or dropout_gradient_on_device" -v
}

step_device_suite() {  # the device-parametrised tests outside tests/cuda and tests/kernels, on cuda only
    run device_suite "$PYTHON" -m pytest -q -rs -p no:cacheprovider --ignore=tests/cuda --ignore=tests/kernels -k cuda --durations=10
}

step_suite() {     # the whole suite; device-parametrised tests now also run on cuda
    local workers=()
    if "$PYTHON" -c "import xdist" 2>/dev/null; then workers=(-n "${SUITE_WORKERS:-8}"); fi
    run suite "$PYTHON" -m pytest -q -rs -p no:cacheprovider --durations=25 "${workers[@]}"
}

step_train() {     # the training example for a few epochs on the CIFAR-10 subset
    if [[ -z "${CIFAR_DIR:-}" ]]; then echo "set CIFAR_DIR to the cifar-10-partial-bin folder" >&2; return 2; fi
    run train "$PYTHON" examples/train_resnet_cifar.py --device cuda --data-dir "$CIFAR_DIR" --no-verify \
        --epochs "${TRAIN_EPOCHS:-3}" --schedule onecycle --no-progress --no-plot --out "$OUT/train_resnet20"
}

step_nccl() {      # one rank with backend="nccl": NCCL found, the collectives, then the training example
    run nccl_version "$PYTHON" -c "from cupy.cuda import nccl; print('NCCL', nccl.get_version())"
    run nccl_collectives "$PYTHON" -c "import numpy as np, tinygrad_cnn as tg, tinygrad_cnn.distributed as d
d.init_process_group('nccl')
t = tg.ones(4, device='cuda'); d.all_reduce(t, op=d.ReduceOp.AVG)
out = [tg.zeros(4, device='cuda')]; d.all_gather(out, t); d.broadcast(t, 0); d.barrier()
assert t.device == 'cuda' and np.all(t.numpy() == 1) and np.all(out[0].numpy() == 1)
print(d.get_backend(), d.get_rank(), d.get_world_size(), t.numpy(), out[0].numpy()); d.destroy_process_group()"
    if [[ -z "${CIFAR_DIR:-}" ]]; then echo "set CIFAR_DIR to the cifar-10-partial-bin folder" >&2; return 2; fi
    run nccl_train "$PYTHON" examples/train_resnet_cifar.py --device cuda --dist-backend nccl --data-dir "$CIFAR_DIR" \
        --no-verify --epochs 1 --limit-train 1024 --limit-test 500 --no-progress --no-plot --out "$OUT/nccl_one_rank"
}

step_bench() {     # ResNet-20 train steps (batch 128, 512) and ResNet-50 fwd+bwd at 224, next to PyTorch
    run bench "$PYTHON" benchmarks/bench_gpu.py --steps 20 --warmup 5 --json "$OUT/bench_gpu.json" --profile
}

if [[ $# -eq 0 ]]; then
    sed -n '2,12p' "$0"
    exit 2
fi
for step in "$@"; do
    case "$step" in
        install|env|kernels|gradcheck|device_suite|suite|train|nccl|bench) "step_$step" ;;
        all) step_install; step_env; step_kernels; step_gradcheck; step_device_suite; step_suite; step_train; step_nccl
             step_bench ;;
        *) echo "unknown step $step (install env kernels gradcheck device_suite suite train nccl bench all)" >&2; exit 2 ;;
    esac
done
if [[ ${#FAILED[@]} -gt 0 ]]; then
    echo "failed steps: ${FAILED[*]}"
    exit 1
fi
echo "all steps passed"
