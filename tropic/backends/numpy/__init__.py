"""NumPy backend: importing it registers its kernels with ``tropic.core.dispatch``."""

from . import kernels  # noqa: F401
