"""PyTorch backend: tropic's operators as ``torch.library`` custom ops (namespace ``tropic``).

Importing it defines the ops (:mod:`.ops`) and registers the kernels that core's public functions call
for torch tensors (:mod:`.kernels`). CPU tensors run the NumPy backend's kernels on shared memory;
CUDA tensors run the CuPy backend's kernels on DLPack views, on torch's current stream (CuPy must be
installed; without it they raise, saying what to install); other devices raise.
"""

from . import kernels, ops  # noqa: F401
from .ops import check_device

__all__ = ["check_device"]
