"""PyTorch backend: tropic's operators as ``torch.library`` custom ops (namespace ``tropic``).

Importing it defines the ops (:mod:`.ops`) and registers the kernels that core's public functions call
for torch tensors (:mod:`.kernels`). CPU tensors run the NumPy backend's kernels on shared memory;
other devices raise (CUDA needs the CuPy backend).
"""

from . import kernels, ops  # noqa: F401
from .ops import check_device

__all__ = ["check_device"]
