"""CuPy backend: hand-written CUDA kernels for every tropical operator (CuPy arrays in and out).

Importing it needs CuPy (``ImportError`` otherwise, which ``tropic.core.dispatch`` records as "not
available" and answers with the core's array-API reference) and registers the kernels of
:mod:`.kernels`; the CUDA sources are compiled on first use (:mod:`.module`).
"""

import cupy  # noqa: F401  (ImportError here: the backend is not available)

from . import kernels  # noqa: F401
