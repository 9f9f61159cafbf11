"""NumPy backend: importing it registers its kernels with ``tropic.core.dispatch``."""

from . import geodesic, kernels  # noqa: F401
