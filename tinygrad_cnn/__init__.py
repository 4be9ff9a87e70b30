"""tinygrad_cnn: a small, readable deep-learning framework for CNNs.

NumPy on the CPU (with hand-written Numba kernels for the hot ops) and CuPy on
NVIDIA GPUs. The API follows PyTorch's names and semantics.
"""
import os as _os

from numpy import int16 as _np_int16

# The Numba kernels (OpenMP threads) and BLAS (its own threads) take turns on the same
# cores many times per training step. OpenMP workers that spin after each kernel steal
# the cores from the next GEMM; letting them sleep measured 1.4-1.8x faster per step on
# a 2-core machine. Set before Numba starts its thread pool; an explicit setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import backend, random  # noqa: E402
from .autograd import (Function, Variable, detect_anomaly, enable_grad, inference_mode,
                       is_anomaly_enabled, is_grad_enabled, no_grad, set_grad_enabled)
from .devices import device
from .random import Generator, get_rng_state, initial_seed, manual_seed, set_rng_state
from .tensor import (Size, Tensor, abs, arange, argmax, argmin, argsort, as_tensor, bool_, cat, chunk,
                     clamp, clip, empty, empty_like, exp, eye, flatten, float16, float32, float64,
                     from_numpy, full, full_like, gather, int8, int32, int64, is_tensor, linspace, log,
                     log_softmax, logsumexp, matmul, max, maximum, mean, min, minimum, norm, numel, ones,
                     ones_like, pad, rand, rand_like, randint, randn, randn_like, relu, sigmoid, softmax,
                     sort, sqrt, squeeze, stack, std, sum, tanh, tensor, topk, uint8, unsqueeze, var,
                     where, zeros, zeros_like)
from .gradcheck import GradcheckError, gradcheck, gradgradcheck
from . import accelerator, backends, cuda, nn, optim, utils
from .serialization import load, save
from .summary import summary

# PyTorch's dtype aliases (NumPy dtypes here: tinygrad_cnn.float is numpy.float32).
float, double, half = float32, float64, float16     # noqa: A001
long, int, short, bool = int64, int32, _np_int16, bool_   # noqa: A001

__version__ = "0.1.0"
