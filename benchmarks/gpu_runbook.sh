#!/usr/bin/env bash
# The checks and measurements that need a real NVIDIA GPU (see docs/cuda.md, "GPU run-book").
#
#   bash benchmarks/gpu_runbook.sh STEP [STEP...]      STEP: env kernels gradcheck suite train bench all
#
# Each step writes its log (and JSON where there is one) to $OUT (default runs/gpu_runbook) and stops
# the script on failure. Steps are separate so that each fits in a 10-minute command limit; "all" runs
# them in order. CIFAR is read from $CIFAR_DIR (default: the first cifar-10-partial-bin found under
# shared/data or ../shared/data).
set -euo pipefail

OUT="${OUT:-runs/gpu_runbook}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python}"

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
    "$@" 2>&1 | tee -a "$OUT/$name.log"
    local status=${PIPESTATUS[0]}
    set -e
    echo "== $name: exit $status after $((SECONDS - start)) s" | tee -a "$OUT/$name.log"
    return "$status"
}

step_env() {
    run env_nvidia_smi nvidia-smi || true
    run env_versions "$PYTHON" -c "import sys, numpy, numba, cupy; print(sys.version); print('numpy', numpy.__version__, \
'numba', numba.__version__, 'cupy', cupy.__version__)"
    run env_test_tools "$PYTHON" -c "import pytest, hypothesis; print('pytest', pytest.__version__, \
'hypothesis', hypothesis.__version__)"
    run env_info "$PYTHON" -m tinygrad_cnn.info
    "$PYTHON" -m tinygrad_cnn.info --json > "$OUT/info.json"
    # Refuse to go on when tinygrad_cnn does not see the GPU: every later step would only skip.
    run env_cuda_available "$PYTHON" -c "import tinygrad_cnn; assert tinygrad_cnn.cuda.is_available(), \
'tinygrad_cnn sees no GPU (see the info output above)'; print('cuda available:', tinygrad_cnn.cuda.get_device_name())"
}

step_kernels() {   # every CUDA kernel vs its NumPy reference, device moves, seeding, loader, layers, models
    run kernels "$PYTHON" -m pytest tests/cuda -q -rs -p no:cacheprovider --durations=15
}

step_gradcheck() { # float64 gradient check of each op with the tensors on the device
    run gradcheck "$PYTHON" -m pytest tests/cuda/test_cuda_backend.py -q -rs -p no:cacheprovider \
        -k "gradcheck_on_device or dropout_gradient_on_device" -v
}

step_suite() {     # the whole suite; device-parametrised tests now also run on cuda
    run suite "$PYTHON" -m pytest -q -rs -p no:cacheprovider --durations=25
}

step_train() {     # the training example for a few epochs on the CIFAR-10 subset
    if [[ -z "${CIFAR_DIR:-}" ]]; then echo "set CIFAR_DIR to the cifar-10-partial-bin folder" >&2; return 2; fi
    run train "$PYTHON" examples/train_resnet_cifar.py --device cuda --data-dir "$CIFAR_DIR" --no-verify \
        --epochs 5 --schedule onecycle --no-progress --no-plot --out "$OUT/train_resnet20"
}

step_bench() {     # ResNet-20 train steps (batch 128, 512) and ResNet-50 fwd+bwd at 224, next to PyTorch
    run bench "$PYTHON" benchmarks/bench_gpu.py --steps 20 --warmup 5 --json "$OUT/bench_gpu.json"
}

if [[ $# -eq 0 ]]; then
    sed -n '2,9p' "$0"
    exit 2
fi
for step in "$@"; do
    case "$step" in
        env|kernels|gradcheck|suite|train|bench) "step_$step" ;;
        all) step_env; step_kernels; step_gradcheck; step_suite; step_train; step_bench ;;
        *) echo "unknown step $step (env kernels gradcheck suite train bench all)" >&2; exit 2 ;;
    esac
done
