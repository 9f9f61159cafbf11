"""tropic's operators as ``torch.library`` custom ops (namespace ``tropic``).

Every forward op returns ``(values, indices)``; its autograd formula saves only the integer winners
and the operand shapes, and its backward is a custom op of its own (``*_backward``), so
``torch.compile(fullgraph=True)`` sees two opaque nodes and no Python in between. The fake (meta)
implementations give the output shapes and dtypes: the values in the operands' dtype, the winners in
the smallest signed integer dtype that holds the candidate count (``tropic.core``'s ``index_dtype``
rule, the dtype the NumPy kernels return).

CPU implementation: the NumPy backend's kernels on zero-copy views (``t.numpy()`` of a contiguous
tensor; ``torch.from_numpy`` of the results). float16 / bfloat16 operands are widened to float32 (exact),
every candidate sum is rounded back to the operands' precision before it is compared (the
``_rounded_*`` kernels below; a float32 sum of two half-precision numbers rounded to half precision is
the correctly rounded half-precision sum, since 24 >= 2 * 11 + 2), and the values are narrowed
again (exact: they are half-precision numbers).

CUDA implementation (``register_kernel("cuda")``): the CuPy backend's kernels, found through
``tropic.core.dispatch`` (backends never import each other), on zero-copy CuPy views of the tensors
(``cupy.from_dlpack``; the kernels make their own contiguous copies where they need them), launched on
torch's current stream of the tensors' device and returned with ``torch.from_dlpack``, no
synchronisation. The results live in CuPy's memory pool, not torch's caching allocator. float16 and
bfloat16 run the CuPy backend's half kernels (each candidate sum rounded to the half type, as on the
CPU). bfloat16 needs CuPy >= 14 with ``ml_dtypes`` installed (CuPy's bfloat16 arrays and their DLPack
exchange are built on ml_dtypes' NumPy dtype); elsewhere bfloat16 CUDA tensors raise ``TypeError``
saying so, before any DLPack exchange (older CuPy versions crash on a bfloat16 DLPack tensor).
Without CuPy, CUDA tensors raise
``NotImplementedError`` saying what to install. Tensors on different devices raise ``ValueError``
(tropic never moves a tensor). Other devices raise (:func:`check_device`).
"""

from __future__ import annotations

import functools
import math
import re

import array_api_compat.numpy as np_namespace
import numpy as np
import torch
from torch import Tensor

from tropic.backends.numpy import kernels as numpy_kernels
from tropic.core import dispatch
from tropic.core._array_api import index_dtype as _core_index_dtype
from tropic.core.checks import positive_int, shape_tuple
from tropic.core.conv import ConvGeometry
from tropic.core.matmul import product_shape
from tropic.core.maxout import maxout_vjp_reference
from tropic.core.morphology import axis_window, check_mode
from tropic.core.semiring import MAX_PLUS, MIN_PLUS

__all__ = [
    "HALF_DTYPES",
    "check_device",
    "check_devices",
    "conv2d",
    "conv2d_backward",
    "index_dtype",
    "matmul",
    "matmul_backward",
    "maxout",
    "maxout_backward",
    "morphology",
    "morphology_backward",
]

HALF_DTYPES = (torch.float16, torch.bfloat16)
_CUPY_INSTALL = "install CuPy built for your CUDA version (`pip install cupy-cuda12x`, or cupy-cuda13x)"


def check_device(name: str, device: torch.device) -> None:
    """Raise unless ``device`` is the CPU, or a CUDA device with the CuPy backend available: tropic
    never moves a tensor between devices itself."""
    if device.type == "cpu":
        return
    if device.type == "cuda":
        _require_cupy(f"{name} is on {device}")
        return
    raise NotImplementedError(
        f"tropic's torch operators run on CUDA tensors (with CuPy) and CPU tensors only, got {name} on "
        f"{device}"
    )


def _require_cupy(where: str) -> None:
    """Load the CuPy backend (once), or raise ``NotImplementedError`` saying what to install."""
    dispatch.load_backend("cupy")
    status = dispatch.backend_status()["cupy"]
    if status != "loaded":
        raise NotImplementedError(
            f"CUDA kernels for torch tensors need the CuPy backend, which is {status}: {_CUPY_INSTALL} "
            f"({where})"
        )


def index_dtype(n_candidates: int) -> torch.dtype:
    """Smallest signed integer dtype holding ``-1 .. n_candidates - 1`` (core's ``index_dtype``)."""
    return _core_index_dtype(torch, n_candidates)


def _semiring(maximise: bool):
    return MAX_PLUS if maximise else MIN_PLUS


def _view(t: Tensor) -> np.ndarray:
    """A NumPy view of ``t`` (a copy only if ``t`` is not contiguous, or float32 for half dtypes)."""
    t = t.detach()
    if t.dtype in HALF_DTYPES:
        return t.float().numpy()
    return t.contiguous().numpy()


def _tensor(x: np.ndarray, dtype: torch.dtype | None = None) -> Tensor:
    """``torch.from_numpy`` of a kernel result, contiguous (as the fake kernels promise)."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    return t if dtype is None or t.dtype == dtype else t.to(dtype)


def _round(block: np.ndarray, dtype: torch.dtype) -> None:
    """Round the float32 ``block`` to ``dtype``'s precision, in place (round to nearest even)."""
    t = torch.from_numpy(block)
    t.copy_(t.to(dtype))


def check_devices(**tensors: Tensor | None) -> None:
    """:func:`check_device` for each given tensor (by its argument name)."""
    for name, t in tensors.items():
        if t is not None:
            check_device(name, t.device)


def _check_operands(op: str, **tensors: Tensor | None) -> None:
    """The floating operands of a forward op share one real floating dtype (core promotes before it
    calls an op; a direct ``torch.ops.tropic.*`` call must not reach a kernel with anything else)."""
    given = {name: t for name, t in tensors.items() if t is not None}
    for name, t in given.items():
        if not t.dtype.is_floating_point:
            raise TypeError(f"tropic::{op}: {name} must have a real floating-point dtype, got {t.dtype}")
    if len({t.dtype for t in given.values()}) > 1:
        described = ", ".join(f"{name} {t.dtype}" for name, t in given.items())
        raise TypeError(f"tropic::{op}: the operands must have one dtype, got {described}")


def _check_gradient(op: str, grad: Tensor, indices: Tensor, shape: tuple[int, ...]) -> None:
    """A backward op's ``grad`` (floating) and ``indices`` (integer) have the forward output's shape."""
    if not grad.dtype.is_floating_point:
        raise TypeError(f"tropic::{op}: grad must have a real floating-point dtype, got {grad.dtype}")
    if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise TypeError(f"tropic::{op}: indices must have an integer dtype, got {indices.dtype}")
    for name, t in (("grad", grad), ("indices", indices)):
        if tuple(t.shape) != tuple(shape):
            raise ValueError(
                f"tropic::{op}: {name} must have the output shape {tuple(shape)}, got {tuple(t.shape)}"
            )


def _product_shape(a: Tensor, b: Tensor) -> tuple:
    """The output shape of ``tropic::matmul``, after the checks a kernel relies on (symbolic shapes
    allowed: the fake kernel runs it under torch.compile)."""
    _check_operands("matmul", a=a, b=b)
    if a.dim() < 2 or b.dim() < 2:
        raise ValueError(
            f"tropic::matmul: a and b must have at least 2 dimensions (..., M, K) and (..., K, N), got "
            f"shapes {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"tropic::matmul: a.shape[-1] must equal b.shape[-2] (the contracted dimension K), got shapes "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    try:
        batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except RuntimeError:
        raise ValueError(
            f"tropic::matmul: the batch dimensions of a and b must broadcast, got shapes {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        ) from None
    return (*batch, a.shape[-2], b.shape[-1])


# --- the CUDA path: the CuPy backend's kernels on DLPack views -------------------------------------


def _cuda_device(**tensors: Tensor | None) -> torch.device:
    """The one CUDA device holding every given tensor; ``ValueError`` naming them otherwise (a call
    mixing devices reaches the CUDA kernel whenever one tensor is on CUDA)."""
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    first = next(iter(devices.values()))
    if first.type != "cuda" or any(d != first for d in devices.values()):
        described = ", ".join(f"{name} on {d}" for name, d in devices.items())
        raise ValueError(
            f"all tensors must be on one CUDA device (tropic never moves tensors), got {described}"
        )
    return first


@functools.cache
def _bfloat16_unsupported() -> str | None:
    """Why CuPy cannot hold bfloat16 arrays in this process, or None where it can (CuPy >= 14 with
    ml_dtypes importable: CuPy's bfloat16 dtype, and its DLPack exchange, are ml_dtypes' NumPy dtype).
    Decided from what is installed, without touching a GPU; once per process."""
    try:
        import ml_dtypes  # noqa: F401  (CuPy imports it itself where it can; this only asks)
    except ImportError:
        return "ml_dtypes is not installed"
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed"
    major = re.match(r"\d+", cupy.__version__)
    if major is None or int(major[0]) < 14:
        return f"CuPy {cupy.__version__} has no bfloat16 arrays"
    return None


def _refuse_bfloat16(**tensors: Tensor | None) -> None:
    """``TypeError`` for a bfloat16 CUDA tensor where CuPy cannot hold it (:func:`_bfloat16_unsupported`),
    raised before any DLPack exchange."""
    for name, t in tensors.items():
        if t is not None and t.dtype == torch.bfloat16:
            reason = _bfloat16_unsupported()
            if reason is None:
                return
            raise TypeError(
                f"{name} is a bfloat16 CUDA tensor: the CUDA kernels take bfloat16 through CuPy >= 14 with "
                f"ml_dtypes only ({reason}); install both (`pip install ml_dtypes`, CuPy >= 14), or use "
                "float16, float32 or float64 on CUDA (bfloat16 runs on CPU tensors)"
            )


@functools.cache
def _cupy_modules():
    """CuPy and its array-API namespace (the ``xp`` the CuPy backend's kernels take); imported once
    the backend has loaded (:func:`_require_cupy`)."""
    import array_api_compat.cupy as cupy_namespace
    import cupy

    return cupy, cupy_namespace


def _cupy_kernel(operator: str, xp):
    kernel = dispatch.kernel_for(operator, xp)
    if kernel is None:
        raise RuntimeError(f"the CuPy backend registered no {operator!r} kernel")
    return kernel


def _cupy_stream(cupy, device: torch.device):
    """torch's current stream of ``device`` as a CuPy stream (the same CUDA stream, not a new one)."""
    stream = torch.cuda.current_stream(device)
    from_external = getattr(cupy.cuda.Stream, "from_external", None)
    if from_external is not None and hasattr(stream, "__cuda_stream__"):
        return from_external(stream)  # CuPy 14: the CUDA stream protocol (ExternalStream deprecated)
    return cupy.cuda.ExternalStream(stream.cuda_stream, device.index)


def _as_cupy(cupy, t: Tensor):
    """A zero-copy CuPy view of ``t`` (strides kept: the kernels copy what they need contiguous)."""
    t = t.detach()
    if t.numel() == 0:  # nothing to share (and no data pointer to hand over)
        return cupy.empty(tuple(t.shape), str(t.dtype).removeprefix("torch."))
    return cupy.from_dlpack(t)


def _as_torch(x, device: torch.device) -> Tensor:
    """``torch.from_dlpack`` of a kernel result, contiguous (as the fake kernels promise; the kernels'
    results already are, so no copy)."""
    if x.size == 0:
        return torch.empty(tuple(x.shape), dtype=getattr(torch, x.dtype.name), device=device)
    return torch.from_dlpack(x).contiguous()


def _on_cupy(operator: str, device: torch.device, *args):
    """Run the CuPy backend's ``operator`` kernel on ``args`` (tensors as CuPy views) on torch's
    current stream of ``device``; its array results as tensors. Everything, the DLPack exchanges
    included, happens inside the stream context, so producer and consumer share one stream and
    neither side inserts a synchronisation."""
    _require_cupy(f"tropic::{operator} on {device}")
    cupy, xp = _cupy_modules()
    kernel = _cupy_kernel(operator, xp)
    with cupy.cuda.Device(device.index), _cupy_stream(cupy, device):
        result = kernel(xp, *(_as_cupy(cupy, a) if isinstance(a, Tensor) else a for a in args))
        if isinstance(result, tuple):
            return tuple(_as_torch(r, device) for r in result)
        return _as_torch(result, device)


def _cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` in ``dtype`` (the CuPy kernels already return the promised dtypes: no copy then)."""
    return t if t.dtype == dtype else t.to(dtype)


# --- max-plus / min-plus products ----------------------------------------------------------------


@torch.library.custom_op("tropic::matmul", mutates_args=())
def matmul(a: Tensor, b: Tensor, maximise: bool) -> tuple[Tensor, Tensor]:
    """``(c, indices)`` of the tropical product of ``a`` (..., M, K) and ``b`` (..., K, N), one dtype."""
    check_devices(a=a, b=b)
    _product_shape(a, b)
    semiring = _semiring(maximise)
    if a.dtype in HALF_DTYPES:
        c, indices = _rounded_matmul(semiring, _view(a), _view(b), a.dtype)
    else:
        c, indices = numpy_kernels.matmul(np_namespace, semiring, _view(a), _view(b))
    return _tensor(c, a.dtype), _tensor(indices)


@matmul.register_fake
def _(a: Tensor, b: Tensor, maximise: bool) -> tuple[Tensor, Tensor]:
    shape = _product_shape(a, b)
    return a.new_empty(shape), a.new_empty(shape, dtype=index_dtype(a.shape[-1]))


@matmul.register_kernel("cuda")
def _matmul_cuda(a: Tensor, b: Tensor, maximise: bool) -> tuple[Tensor, Tensor]:
    device = _cuda_device(a=a, b=b)
    _refuse_bfloat16(a=a, b=b)
    _product_shape(a, b)
    c, indices = _on_cupy("matmul", device, _semiring(maximise), a, b)
    return _cast(c, a.dtype), _cast(indices, index_dtype(a.shape[-1]))


@torch.library.custom_op("tropic::matmul_backward", mutates_args=())
def matmul_backward(
    grad: Tensor, indices: Tensor, a_shape: list[int], b_shape: list[int]
) -> tuple[Tensor, Tensor]:
    """``(grad_a, grad_b)`` of a product of operands (>= 2-D) of shapes ``a_shape`` and ``b_shape``."""
    check_devices(grad=grad, indices=indices)
    _check_matmul_backward(grad, indices, a_shape, b_shape)
    g, k = _view(grad), _view(indices)
    grad_a, grad_b = numpy_kernels.matmul_vjp(np_namespace, g, k, tuple(a_shape), tuple(b_shape))
    return _tensor(grad_a, grad.dtype), _tensor(grad_b, grad.dtype)


@matmul_backward.register_fake
def _(grad, indices, a_shape, b_shape):
    _check_matmul_backward(grad, indices, a_shape, b_shape)
    return grad.new_empty(a_shape), grad.new_empty(b_shape)


def _check_matmul_backward(grad: Tensor, indices: Tensor, a_shape: list[int], b_shape: list[int]) -> None:
    a_shape = shape_tuple("a_shape", a_shape, 2)
    b_shape = shape_tuple("b_shape", b_shape, 2)
    _check_gradient("matmul_backward", grad, indices, product_shape(a_shape, b_shape, ("a_shape", "b_shape")))


@matmul_backward.register_kernel("cuda")
def _matmul_backward_cuda(
    grad: Tensor, indices: Tensor, a_shape: list[int], b_shape: list[int]
) -> tuple[Tensor, Tensor]:
    device = _cuda_device(grad=grad, indices=indices)
    _refuse_bfloat16(grad=grad)
    _check_matmul_backward(grad, indices, a_shape, b_shape)
    grad_a, grad_b = _on_cupy("matmul_vjp", device, grad, indices, tuple(a_shape), tuple(b_shape))
    return _cast(grad_a, grad.dtype), _cast(grad_b, grad.dtype)


def _matmul_setup(ctx, inputs, output) -> None:
    a, b, _ = inputs
    ctx.save_for_backward(output[1])
    ctx.shapes = (list(a.shape), list(b.shape))


def _matmul_grad(ctx, grad_c, _grad_indices):
    (indices,) = ctx.saved_tensors
    grad_a, grad_b = matmul_backward(grad_c, indices, *ctx.shapes)
    return grad_a, grad_b, None


matmul.register_autograd(_matmul_grad, setup_context=_matmul_setup)


def _rounded_matmul(semiring, a: np.ndarray, b: np.ndarray, dtype: torch.dtype):
    """Product of float32 ``a`` (..., M, K) and ``b`` (..., K, N) with every candidate rounded to
    ``dtype`` before it is compared; values in float32 (representable in ``dtype``)."""
    K = a.shape[-1]
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    M, N = a.shape[-2], b.shape[-1]
    a = np.broadcast_to(a, batch + (M, K))
    b = np.broadcast_to(b, batch + (K, N))
    c = np.empty(batch + (M, N), np.float32)
    winner = np.empty(batch + (M, N), _core_index_dtype(np, K))
    for i in np.ndindex(*batch):
        c[i], winner[i] = _rounded_product(semiring, a[i], np.ascontiguousarray(b[i].T), dtype, winner.dtype)
    return c, winner


def _rounded_product(semiring, a: np.ndarray, b_t: np.ndarray, dtype: torch.dtype, index_type):
    """``c[i, j] = ⊕_k round(a[i, k] + b_t[j, k])``: the NumPy path of the NumPy backend's products
    with the rounding step between the sums and the selection."""
    return numpy_kernels.matmul_rows(semiring, a, b_t, index_type, lambda block: _round(block, dtype))


# --- grey-level morphology -----------------------------------------------------------------------


def _check_morphology(
    image: Tensor, structure: Tensor | None, support: list[bool] | None, window: list[int], mode: str
) -> tuple[int, int]:
    """What the morphology kernels rely on, checked for direct ``torch.ops.tropic`` calls too;
    ``(kh, kw)``."""
    _check_operands("morphology", image=image, structure=structure)
    kh, kw = _window_shape(window)
    if image.dim() < 2:
        raise ValueError(
            f"tropic::morphology: image must have at least 2 dimensions (..., H, W), got {tuple(image.shape)}"
        )
    if structure is not None and tuple(structure.shape) != (kh, kw):
        raise ValueError(
            f"tropic::morphology: structure must have shape (kh, kw) = {(kh, kw)}, got "
            f"{tuple(structure.shape)}"
        )
    if support is not None and len(support) != kh * kw:
        raise ValueError(
            f"tropic::morphology: support must have kh * kw = {kh * kw} entries, got {len(support)}"
        )
    check_mode(mode)
    return kh, kw


def _window_shape(window: list[int]) -> tuple[int, int]:
    """``(kh, kw)`` of ``window = [kh, kw, row_centre, col_centre]`` (the element's shape and the
    taps at its origin), checked."""
    if len(window) != 4:
        raise ValueError(f"window must be [kh, kw, row_centre, col_centre], got {window!r}")
    kh, kw = positive_int("kh", window[0]), positive_int("kw", window[1])
    if not (0 <= window[2] < kh and 0 <= window[3] < kw):
        raise ValueError(f"window's centre must be a tap of the ({kh}, {kw}) element, got {window!r}")
    return kh, kw


def _windows(image_shape, window: list[int], reflected: bool, mode: str):
    """The row and column axis windows of a morphology of images of ``image_shape`` (..., H, W)."""
    (H, W), (kh, kw, row_centre, col_centre) = image_shape[-2:], window
    return axis_window(H, kh, reflected, mode, row_centre), axis_window(W, kw, reflected, mode, col_centre)


def _morphology_frame(
    image: Tensor, support: list[bool], window: list[int], maximise: bool, mode: str, fill: float
):
    """``(rows, cols, mask, fill)`` of a morphology op: the axis windows, the footprint as a boolean
    (kh, kw) array and the border value in the image's precision (as on every backend)."""
    kh, kw = _check_morphology(image, None, support, window, mode)
    rows, cols = _windows(image.shape, window, maximise, mode)
    mask = np.asarray(support, dtype=bool).reshape(kh, kw)
    if image.dtype in HALF_DTYPES:
        fill = float(torch.tensor(fill).to(image.dtype))
    return rows, cols, mask, fill


@torch.library.custom_op("tropic::morphology", mutates_args=())
def morphology(
    image: Tensor,
    structure: Tensor | None,
    support: list[bool],
    window: list[int],
    maximise: bool,
    mode: str,
    fill: float,
) -> tuple[Tensor, Tensor]:
    """Dilation (``maximise``) or erosion of ``image`` (..., H, W) on its last two axes.

    ``structure`` (kh, kw) or None (flat) is the structuring element as the user gave it (erosion
    subtracts it), ``support`` its row-major footprint, ``window`` ``[kh, kw, row_centre,
    col_centre]`` its shape and origin, ``mode`` the border rule, ``fill`` the value outside the image
    where the rule reads one (the tropical zero or ``cval``).
    """
    check_devices(image=image, structure=structure)
    _check_morphology(image, structure, support, window, mode)
    semiring = _semiring(maximise)
    weights = None
    if structure is not None:
        weights = _view(structure)
        weights = weights if maximise else np.negative(weights)
    rows, cols, mask, fill = _morphology_frame(image, support, window, maximise, mode, fill)
    if image.dtype in HALF_DTYPES and weights is not None:  # flat: no sums, nothing to round
        out, indices = _rounded_morphology(
            semiring, _view(image), weights, mask, rows, cols, fill, image.dtype
        )
    else:
        out, indices = numpy_kernels.morphology(
            np_namespace, semiring, _view(image), weights, mask, rows, cols, fill
        )
    return _tensor(out, image.dtype), _tensor(indices)


@morphology.register_fake
def _(image, structure, support, window, maximise, mode, fill):
    kh, kw = _check_morphology(image, structure, support, window, mode)
    return image.new_empty(image.shape), image.new_empty(image.shape, dtype=index_dtype(kh * kw))


@morphology.register_kernel("cuda")
def _morphology_cuda(
    image: Tensor,
    structure: Tensor | None,
    support: list[bool],
    window: list[int],
    maximise: bool,
    mode: str,
    fill: float,
) -> tuple[Tensor, Tensor]:
    device = _cuda_device(image=image, structure=structure)
    _refuse_bfloat16(image=image, structure=structure)
    kh, kw = _check_morphology(image, structure, support, window, mode)
    # The kernels add the weights: erosion's are the negated structure (exact).
    weights = structure if structure is None or maximise else torch.neg(structure.detach())
    rows, cols, mask, fill = _morphology_frame(image, support, window, maximise, mode, fill)
    semiring = _semiring(maximise)
    out, indices = _on_cupy("morphology", device, semiring, image, weights, mask, rows, cols, fill)
    return _cast(out, image.dtype), _cast(indices, index_dtype(kh * kw))


@torch.library.custom_op("tropic::morphology_backward", mutates_args=())
def morphology_backward(
    grad: Tensor, indices: Tensor, image_shape: list[int], window: list[int], reflected: bool, mode: str
) -> tuple[Tensor, Tensor]:
    """``(grad_image, grad_weights)``: the NumPy kernel's vjp (``grad_weights`` not negated)."""
    check_devices(grad=grad, indices=indices)
    _check_morphology_backward(grad, indices, image_shape, window, mode)
    rows, cols = _windows(image_shape, window, reflected, mode)
    grad_image, grad_weights = numpy_kernels.morphology_vjp(
        np_namespace, _view(grad), _view(indices), tuple(image_shape), rows, cols
    )
    return _tensor(grad_image, grad.dtype), _tensor(grad_weights, grad.dtype)


@morphology_backward.register_fake
def _(grad, indices, image_shape, window, reflected, mode):
    kh, kw = _check_morphology_backward(grad, indices, image_shape, window, mode)
    return grad.new_empty(image_shape), grad.new_empty((kh, kw))


@morphology_backward.register_kernel("cuda")
def _morphology_backward_cuda(
    grad: Tensor, indices: Tensor, image_shape: list[int], window: list[int], reflected: bool, mode: str
) -> tuple[Tensor, Tensor]:
    device = _cuda_device(grad=grad, indices=indices)
    _refuse_bfloat16(grad=grad)
    _check_morphology_backward(grad, indices, image_shape, window, mode)
    rows, cols = _windows(image_shape, window, reflected, mode)
    grad_image, grad_weights = _on_cupy(
        "morphology_vjp", device, grad, indices, tuple(image_shape), rows, cols
    )
    return _cast(grad_image, grad.dtype), _cast(grad_weights, grad.dtype)


def _check_morphology_backward(
    grad: Tensor, indices: Tensor, image_shape: list[int], window: list[int], mode: str
) -> tuple[int, int]:
    kh, kw = _window_shape(window)
    check_mode(mode)
    _check_gradient("morphology_backward", grad, indices, shape_tuple("image_shape", image_shape, 2))
    return kh, kw


def _morphology_setup(ctx, inputs, output) -> None:
    image, structure, _, window, maximise, mode, _ = inputs
    ctx.save_for_backward(output[1])
    ctx.args = (list(image.shape), window, maximise, mode)
    ctx.has_structure = structure is not None


def _morphology_grad(ctx, grad_out, _grad_indices):
    (indices,) = ctx.saved_tensors
    image_shape, window, maximise, mode = ctx.args
    grad_image, grad_weights = morphology_backward(grad_out, indices, image_shape, window, maximise, mode)
    grad_structure = None
    if ctx.has_structure:  # erosion subtracts the structure (0.0 - g: taps that never win get +0.0)
        grad_structure = grad_weights if maximise else 0.0 - grad_weights
    return grad_image, grad_structure, None, None, None, None, None


morphology.register_autograd(_morphology_grad, setup_context=_morphology_setup)


def _rounded_morphology(semiring, image, weights, support, row_window, col_window, fill, dtype):
    """Non-flat morphology of float32 ``image`` with every candidate sum rounded to ``dtype``: the
    NumPy backend's tap loop (strict comparisons: ties keep the earliest tap) with the rounding step,
    then the NaN rule (an output with a NaN operand among its candidates is NaN, won by the first)."""
    kh, kw = support.shape
    H, W = image.shape[-2:]
    flat = image.reshape(math.prod(image.shape[:-2]), H, W)
    index_type = _core_index_dtype(np, kh * kw)
    if flat.size == 0:  # no pixel to pad from, and nothing to compute
        return np.empty(image.shape, np.float32), np.empty(image.shape, index_type)
    padded = numpy_kernels.pad(flat, row_window, col_window, fill)
    taps = list(zip(*np.nonzero(support), strict=True))
    out, winner = numpy_kernels.numpy_taps(
        semiring, padded, weights, taps, kw, row_window, col_window, H, W, lambda c: _round(c, dtype)
    )
    # NaN dominates (an inf - inf sum is not a NaN operand: it never beats)
    numpy_kernels.propagate_nan(padded, weights, taps, row_window, col_window, kw, out, winner)
    return out.reshape(image.shape), winner.astype(index_type).reshape(image.shape)


# --- tropical convolutions -----------------------------------------------------------------------


@torch.library.custom_op("tropic::conv2d", mutates_args=())
def conv2d(
    x: Tensor, w: Tensor, stride: list[int], padding: list[int], groups: int, maximise: bool
) -> tuple[Tensor, Tensor]:
    """``(y, indices)`` of the max-plus (``maximise``) or min-plus convolution of ``x`` and ``w``."""
    check_devices(x=x, w=w)
    semiring = _semiring(maximise)
    geometry = _conv_geometry(x, w, stride, padding, groups)
    if x.dtype in HALF_DTYPES:
        y, indices = _rounded_conv2d(semiring, _view(x), _view(w), geometry, x.dtype)
    else:
        y, indices = numpy_kernels.conv2d(np_namespace, semiring, _view(x), _view(w), geometry)
    return _tensor(y, x.dtype), _tensor(indices)


@conv2d.register_fake
def _(x, w, stride, padding, groups, maximise):
    geometry = _conv_geometry(x, w, stride, padding, groups)
    n_candidates = w.shape[1] * w.shape[2] * w.shape[3]
    return x.new_empty(geometry.out_shape), x.new_empty(geometry.out_shape, dtype=index_dtype(n_candidates))


@conv2d.register_kernel("cuda")
def _conv2d_cuda(
    x: Tensor, w: Tensor, stride: list[int], padding: list[int], groups: int, maximise: bool
) -> tuple[Tensor, Tensor]:
    device = _cuda_device(x=x, w=w)
    _refuse_bfloat16(x=x, w=w)
    geometry = _conv_geometry(x, w, stride, padding, groups)
    y, indices = _on_cupy("conv2d", device, _semiring(maximise), x, w, geometry)
    return _cast(y, x.dtype), _cast(indices, index_dtype(w.shape[1] * w.shape[2] * w.shape[3]))


@torch.library.custom_op("tropic::conv2d_backward", mutates_args=())
def conv2d_backward(
    grad: Tensor,
    indices: Tensor,
    x_shape: list[int],
    w_shape: list[int],
    stride: list[int],
    padding: list[int],
    groups: int,
) -> tuple[Tensor, Tensor]:
    """``(grad_x, grad_w)`` of a tropical convolution (the NumPy kernel's vjp)."""
    check_devices(grad=grad, indices=indices)
    geometry = _conv_backward_geometry(grad, indices, x_shape, w_shape, stride, padding, groups)
    grad_x, grad_w = numpy_kernels.conv2d_vjp(np_namespace, _view(grad), _view(indices), geometry)
    return _tensor(grad_x, grad.dtype), _tensor(grad_w, grad.dtype)


@conv2d_backward.register_fake
def _(grad, indices, x_shape, w_shape, stride, padding, groups):
    _conv_backward_geometry(grad, indices, x_shape, w_shape, stride, padding, groups)
    return grad.new_empty(x_shape), grad.new_empty(w_shape)


@conv2d_backward.register_kernel("cuda")
def _conv2d_backward_cuda(
    grad: Tensor,
    indices: Tensor,
    x_shape: list[int],
    w_shape: list[int],
    stride: list[int],
    padding: list[int],
    groups: int,
) -> tuple[Tensor, Tensor]:
    device = _cuda_device(grad=grad, indices=indices)
    _refuse_bfloat16(grad=grad)
    geometry = _conv_backward_geometry(grad, indices, x_shape, w_shape, stride, padding, groups)
    grad_x, grad_w = _on_cupy("conv2d_vjp", device, grad, indices, geometry)
    return _cast(grad_x, grad.dtype), _cast(grad_w, grad.dtype)


def _conv_geometry(x: Tensor, w: Tensor, stride, padding, groups) -> ConvGeometry:
    _check_operands("conv2d", x=x, w=w)
    for name, t, layout in (("x", x, "B, Cin, H, W"), ("w", w, "Cout, Cin // groups, kh, kw")):
        if t.dim() != 4:
            raise ValueError(
                f"tropic::conv2d: {name} must have 4 dimensions ({layout}), got {tuple(t.shape)}"
            )
    return ConvGeometry(tuple(x.shape), tuple(w.shape), tuple(stride), tuple(padding), groups)


def _conv_backward_geometry(grad, indices, x_shape, w_shape, stride, padding, groups) -> ConvGeometry:
    x_shape, w_shape = shape_tuple("x_shape", x_shape, ndim=4), shape_tuple("w_shape", w_shape, ndim=4)
    geometry = ConvGeometry(x_shape, w_shape, tuple(stride), tuple(padding), groups)
    _check_gradient("conv2d_backward", grad, indices, geometry.out_shape)
    return geometry


def _conv2d_setup(ctx, inputs, output) -> None:
    x, w, stride, padding, groups, _ = inputs
    ctx.save_for_backward(output[1])
    ctx.args = (list(x.shape), list(w.shape), stride, padding, groups)


def _conv2d_grad(ctx, grad_y, _grad_indices):
    (indices,) = ctx.saved_tensors
    grad_x, grad_w = conv2d_backward(grad_y, indices, *ctx.args)
    return grad_x, grad_w, None, None, None, None


conv2d.register_autograd(_conv2d_grad, setup_context=_conv2d_setup)


def _rounded_conv2d(semiring, x, w, geometry, dtype):
    """Convolution of float32 ``x`` and ``w`` with every candidate rounded to ``dtype``: im2col per
    image and group (the NumPy backend's layout, candidates in ``(c, u, v)`` order), then
    :func:`_rounded_product`."""
    B, _, _, _ = geometry.x_shape
    C_out, C_group, kh, kw = geometry.w_shape
    G, (sh, sw), (ph, pw) = geometry.groups, geometry.stride, geometry.padding
    _, _, H_out, W_out = geometry.out_shape
    index_type = _core_index_dtype(np, C_group * kh * kw)
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=semiring.zero)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw][:, :, :H_out, :W_out]  # (B, C_in, H_out, W_out, kh, kw)
    y = np.empty(geometry.out_shape, np.float32)
    winner = np.empty(geometry.out_shape, index_type)
    o_per_group = C_out // G
    for g in range(G):
        w_g = np.ascontiguousarray(w[g * o_per_group : (g + 1) * o_per_group].reshape(o_per_group, -1))
        channels, outputs = (
            slice(g * C_group, (g + 1) * C_group),
            slice(g * o_per_group, (g + 1) * o_per_group),
        )
        for b in range(B):
            block = windows[b, channels].transpose(1, 2, 0, 3, 4).reshape(H_out * W_out, -1)
            values, k = _rounded_product(semiring, np.ascontiguousarray(block), w_g, dtype, index_type)
            y[b, outputs] = values.T.reshape(o_per_group, H_out, W_out)
            winner[b, outputs] = k.T.reshape(o_per_group, H_out, W_out)
    return y, winner


# --- maxout --------------------------------------------------------------------------------------


@torch.library.custom_op("tropic::maxout", mutates_args=())
def maxout(grouped: Tensor) -> tuple[Tensor, Tensor]:
    """``(values, indices)``: the max over the last axis of ``grouped`` (..., m, pieces)."""
    check_devices(grouped=grouped)
    _check_maxout(grouped)
    # No sums: widening half precision to float32 changes no value and no comparison.
    values, indices = numpy_kernels.maxout(np_namespace, _view(grouped))
    return _tensor(values, grouped.dtype), _tensor(indices)


@maxout.register_fake
def _(grouped):
    _check_maxout(grouped)
    shape = grouped.shape[:-1]
    return grouped.new_empty(shape), grouped.new_empty(shape, dtype=index_dtype(grouped.shape[-1]))


@maxout.register_kernel("cuda")
def _maxout_cuda(grouped: Tensor) -> tuple[Tensor, Tensor]:
    device = _cuda_device(grouped=grouped)
    _refuse_bfloat16(grouped=grouped)
    _check_maxout(grouped)
    values, indices = _on_cupy("maxout", device, grouped)
    return _cast(values, grouped.dtype), _cast(indices, index_dtype(grouped.shape[-1]))


@torch.library.custom_op("tropic::maxout_backward", mutates_args=())
def maxout_backward(grad: Tensor, indices: Tensor, pieces: int) -> Tensor:
    """Gradient of the grouped input (..., m, pieces): ``grad`` where ``indices`` names the piece."""
    check_devices(grad=grad, indices=indices)
    _check_maxout_backward(grad, indices, pieces)
    spread = maxout_vjp_reference(np_namespace, _view(grad), _view(indices), pieces)
    return _tensor(spread, grad.dtype)


@maxout_backward.register_fake
def _(grad, indices, pieces):
    _check_maxout_backward(grad, indices, pieces)
    return grad.new_empty((*grad.shape, pieces))


@maxout_backward.register_kernel("cuda")
def _maxout_backward_cuda(grad: Tensor, indices: Tensor, pieces: int) -> Tensor:
    device = _cuda_device(grad=grad, indices=indices)
    _refuse_bfloat16(grad=grad)
    _check_maxout_backward(grad, indices, pieces)
    return _cast(_on_cupy("maxout_vjp", device, grad, indices, pieces), grad.dtype)


def _check_maxout(grouped: Tensor) -> None:
    _check_operands("maxout", grouped=grouped)
    if grouped.dim() < 1:
        raise ValueError("tropic::maxout: grouped must have at least 1 dimension (..., pieces), got a scalar")


def _check_maxout_backward(grad: Tensor, indices: Tensor, pieces: int) -> None:
    positive_int("pieces", pieces)
    _check_gradient("maxout_backward", grad, indices, tuple(grad.shape))


def _maxout_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(output[1])
    ctx.pieces = inputs[0].shape[-1]


def _maxout_grad(ctx, grad_values, _grad_indices):
    (indices,) = ctx.saved_tensors
    return maxout_backward(grad_values, indices, ctx.pieces)


maxout.register_autograd(_maxout_grad, setup_context=_maxout_setup)
