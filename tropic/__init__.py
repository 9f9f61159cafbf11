"""tropic: morphological (tropical, max-plus / min-plus) operators and networks.

The operators accept NumPy arrays (compiled CPU kernels), CuPy arrays (CUDA kernels), any other
array-API array (the core's reference path), and the tensors of two engines with an autodiff of their
own, ``tropic.autodiff.Tensor`` and ``torch.Tensor`` (differentiable results); they return arrays or
tensors of the caller's library. Conventions are in ``tropic.core``; each operator is declared once
in ``tropic.core.spec``'s table, from which the engines are generated.
"""

from . import ndimage  # SciPy's grey-morphology names and defaults (tropic.ndimage.grey_dilation, ...)
from .core.config import get_num_threads, set_num_threads
from .core.conv import conv2d_vjp, maxplus_conv1d, maxplus_conv2d, minplus_conv1d, minplus_conv2d
from .core.conv3d import conv3d_vjp, maxplus_conv3d, minplus_conv3d
from .core.engines import define_torch_ops_with_torch as _define_torch_ops_with_torch
from .core.extremum import maximum, minimum
from .core.geodesic import (
    closing_by_reconstruction,
    fill_holes,
    opening_by_reconstruction,
    reconstruction,
    reconstruction_vjp,
    regional_maxima,
    regional_minima,
)
from .core.matmul import matmul_vjp, maxplus_matmul, minplus_matmul
from .core.maxout import maxout, maxout_vjp
from .core.morphology import (
    black_tophat,
    closing,
    dilation,
    dilation_vjp,
    erosion,
    erosion_vjp,
    morphological_gradient,
    morphological_laplace,
    opening,
    white_tophat,
)
from .core.mpm import maxplus_minplus_matmul
from .core.semiring import MAX_PLUS, MIN_PLUS, Semiring

__version__ = "0.1.0"

# torch.ops.tropic.* exist whenever torch is imported (now, or later), not only after a first call:
# exported programs name them.
_define_torch_ops_with_torch()

__all__ = [
    "MAX_PLUS",
    "MIN_PLUS",
    "Semiring",
    "black_tophat",
    "closing",
    "closing_by_reconstruction",
    "conv2d_vjp",
    "conv3d_vjp",
    "dilation",
    "dilation_vjp",
    "erosion",
    "erosion_vjp",
    "fill_holes",
    "get_num_threads",
    "matmul_vjp",
    "maximum",
    "maxout",
    "maxout_vjp",
    "maxplus_conv1d",
    "maxplus_conv2d",
    "maxplus_conv3d",
    "maxplus_matmul",
    "maxplus_minplus_matmul",
    "minimum",
    "minplus_conv1d",
    "minplus_conv2d",
    "minplus_conv3d",
    "minplus_matmul",
    "morphological_gradient",
    "morphological_laplace",
    "ndimage",
    "opening",
    "opening_by_reconstruction",
    "reconstruction",
    "reconstruction_vjp",
    "regional_maxima",
    "regional_minima",
    "set_num_threads",
    "white_tophat",
]
