"""CUDA kernels (CuPy ``RawModule`` sources), one module per op family.

Each family module (``conv``, ``pooling``, ``normalization``, ``dropout``, ``loss``, ``optim``)
lists its kernels in a ``KERNELS`` dict of Python wrappers whose signatures equal the NumPy
references'. Importing them never imports CuPy: sources are compiled on first launch (see
``_runtime``). ``tinygrad_cnn.testing.cuda_emulator`` runs the same sources on the CPU for the tests.
"""

# Kernel names whose NumPy reference is used on GPU arrays as well (it is written with the
# array module, so it runs on CuPy as a few fused CuPy ufunc calls), with the reason.
REFERENCE_ONLY = {
    "erf": "a polynomial of elementwise CuPy ufuncs; a hand-written kernel would not be faster",
    "relu_forward": "one elementwise CuPy ufunc (maximum), already a single fused pass",
    "relu_backward": "one elementwise CuPy where(), already a single fused pass",
    "adadelta_update": "a handful of whole-array CuPy ops once per parameter per step; rarely used, not yet fused",
    "nadam_update": "a handful of whole-array CuPy ops once per parameter per step; rarely used, not yet fused",
    "radam_update": "a handful of whole-array CuPy ops once per parameter per step; rarely used, not yet fused",
    "im2col_phases": "the GPU's strided convolution uses im2col, one work item per column: the phase "
                     "planes make per-row copies contiguous, which is what the CPU needed",
    "col2im_phases": "the GPU's strided convolution uses col2im, one thread per pixel gathering its "
                     "entries: no scatter to make contiguous",
    "matmul_2d": "CuPy's @ is cuBLAS's GEMM",
    "winograd_input_tiles": "Winograd tiles are the CPU's 3x3 convolution; the GPU keeps im2col + "
                            "GEMM (not yet measured against it on a GPU)",
    "winograd_grad_tiles": "Winograd tiles are the CPU's 3x3 convolution; the GPU keeps im2col + GEMM",
    "winograd_output_tiles": "Winograd tiles are the CPU's 3x3 convolution; the GPU keeps im2col + GEMM",
}
