"""Hand-written kernels, one module per op family in each of:

* ``cpu/<family>.py``: Numba kernels (``cpu/_workers.py``: the CPU worker pool and memory tuning),
* ``cuda/<family>.py``: CUDA C++ sources and their CuPy wrappers (``cuda/_runtime.py`` compiles them),

and ``sliced_conv.py``, the fast convolution both register. Each family module lists its kernels
in a ``KERNELS`` dict; :mod:`tinygrad_cnn.backend` finds the families on disk and picks one
implementation per call. The NumPy references live with their ops in ``tinygrad_cnn/nn``.
"""
