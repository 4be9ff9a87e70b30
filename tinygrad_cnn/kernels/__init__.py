"""Hand-written kernels, installed as ``tinygrad_cnn.kernels``."""
