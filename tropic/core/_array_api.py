"""Array-API plumbing shared by every operator: namespace lookup and small helpers.

Everything here is written against the array API standard so that it works on NumPy, CuPy,
PyTorch and array-api-strict arrays alike.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any

import array_api_compat
import array_api_compat.numpy as compat_numpy
import numpy as np
from array_api_compat import device as _compat_device

__all__ = [
    "Array",
    "array_namespace",
    "backend_name",
    "device",
    "gather_or_fill",
    "index_dtype",
    "scatter_add",
    "sum_to_shape",
    "to_host",
]

Array = Any  # any array-API array; the operators return arrays of the caller's library
_BACKEND_OF_NAMESPACE = {
    "array_api_compat.numpy": "numpy",
    "array_api_compat.cupy": "cupy",
}


def array_namespace(**arrays: Array) -> ModuleType:
    """Return the array-API namespace shared by the named arrays.

    Parameters are passed by keyword so that an error can name the offending argument.
    ``None`` values are ignored.

    Raises
    ------
    TypeError
        If an argument is not an array, or if the arrays come from different libraries.
    """
    # Fast paths: plain NumPy arrays (the common case on the CPU), and torch tensors, for which
    # array_api_compat's cached type checks also make torch.compile warn on every traced call.
    kinds = {type(x) for x in arrays.values()}
    kinds.discard(type(None))
    if kinds == {np.ndarray}:
        return compat_numpy
    tensor_type = _torch_tensor_type()
    if kinds and tensor_type is not None and all(issubclass(kind, tensor_type) for kind in kinds):
        import array_api_compat.torch as compat_torch

        return compat_torch
    given = {name: x for name, x in arrays.items() if x is not None}
    if not given:
        return compat_numpy  # (as before: no arrays, NumPy's namespace)
    namespaces = {}
    for name, x in given.items():
        if isinstance(x, np.ma.MaskedArray):
            raise TypeError(
                f"{name} is a masked array: tropic's operators would ignore its mask; pass "
                f"{name}.filled(value) with the value the masked entries should take (for example the "
                "tropical zero, -inf for max-plus)"
            )
        if not array_api_compat.is_array_api_obj(x) or isinstance(x, (bool, int, float, complex)):
            raise TypeError(
                f"{name} must be an array (NumPy, CuPy, PyTorch or another array-API library), "
                f"got {type(x).__name__}"
            )
        namespaces[name] = array_api_compat.array_namespace(x)
    distinct = {id(ns): ns for ns in namespaces.values()}
    if len(distinct) > 1:
        described = ", ".join(f"{name} from {ns.__name__}" for name, ns in namespaces.items())
        raise TypeError(f"all arrays must come from the same array library, got {described}")
    return next(iter(distinct.values()))


def device(x: Array) -> Any:
    """The device of ``x`` (``array_api_compat.device``; torch tensors answered directly, as in
    :func:`array_namespace`)."""
    return x.device if _is_torch_tensor(x) else _compat_device(x)


def _torch_tensor_type() -> type | None:
    """``torch.Tensor`` if torch is imported, without importing it (it is optional); None otherwise.

    Another thread may be importing torch right now: a partially initialised module may not have
    ``Tensor`` yet, and then no tensor can exist either.
    """
    return getattr(sys.modules.get("torch"), "Tensor", None)


def _is_torch_tensor(x: Any) -> bool:
    """``isinstance(x, torch.Tensor)`` without importing torch."""
    tensor_type = _torch_tensor_type()
    return tensor_type is not None and isinstance(x, tensor_type)


def backend_name(xp: ModuleType) -> str | None:
    """Name of the tropic backend that serves namespace ``xp``, or None for the reference path."""
    name = getattr(xp, "__name__", "")
    if name in _BACKEND_OF_NAMESPACE:  # the namespaces array_namespace returns, by name
        return _BACKEND_OF_NAMESPACE[name]
    if array_api_compat.is_numpy_namespace(xp):
        return "numpy"
    if array_api_compat.is_cupy_namespace(xp):
        return "cupy"
    return None  # torch tensors are an engine's (tropic.torch.engine), which runs these backends


def index_dtype(xp: ModuleType, n_candidates: int) -> Any:
    """Smallest signed integer dtype holding the candidate indices ``-1 .. n_candidates - 1``.

    Signed, because -1 marks an output with no winner (all candidates are the tropical zero),
    and because some libraries treat unsigned byte tensors as boolean masks when indexing.
    """
    for name, bound in (("int8", 2**7), ("int16", 2**15), ("int32", 2**31)):
        if n_candidates <= bound:
            return getattr(xp, name)
    return xp.int64


def sum_to_shape(xp: ModuleType, x: Array, shape: tuple[int, ...]) -> Array:
    """Sum ``x`` over the axes that broadcasting added to or stretched in ``shape``."""
    extra = x.ndim - len(shape)
    if extra:
        x = xp.sum(x, axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    if stretched:
        x = xp.sum(x, axis=stretched, keepdims=True)
    return x


def to_host(x: Array) -> np.ndarray:
    """A NumPy copy of an array of any library (torch tensors detached, CuPy arrays fetched
    explicitly: CuPy refuses implicit conversion), or of nested Python lists."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):
        # not .numpy(): it would pin a torch tensor's storage; a negated view's sign is not in DLPack
        return np.from_dlpack(x.detach().cpu().resolve_neg())
    if hasattr(x, "get"):
        return x.get()
    if hasattr(x, "__dlpack__"):
        return np.from_dlpack(x)
    return np.asarray(x)  # Python lists and scalars


def scatter_add(xp: ModuleType, values: Array, index: Array, length: int, axis: int) -> Array:
    """Sum ``values`` into ``length`` slots along ``axis``: ``out[.., index[i], ..] += values[.., i, ..]``.

    Entries with ``index[i] == -1`` are dropped. The array API has no scatter-add, so this gathers
    instead: an inverse map lists, for each destination slot, the sources that land there (the map is
    built on the host from the small integer ``index``), and the sum runs over those columns. Exact: no
    multiplication by 0/1 masks, so infinities in ``values`` stay where they belong.
    """
    index_host = to_host(index).astype(np.int64, copy=False)  # (CuPy winners: fetched explicitly)
    sources: list[list[int]] = [[] for _ in range(length)]
    for i, dest in enumerate(index_host.tolist()):
        if dest >= 0:
            sources[dest].append(i)
    axis = axis % values.ndim
    out_shape = values.shape[:axis] + (length,) + values.shape[axis + 1 :]
    out = xp.zeros(out_shape, dtype=values.dtype, device=device(values))
    depth = max((len(s) for s in sources), default=0)
    for t in range(depth):
        take = [s[t] if t < len(s) else 0 for s in sources]
        valid = np.asarray([t < len(s) for s in sources])
        shape = [1] * values.ndim
        shape[axis] = length
        gathered = xp.take(values, xp.asarray(take, device=device(values)), axis=axis)
        mask = xp.reshape(xp.asarray(valid, device=device(values)), tuple(shape))
        out = out + xp.where(mask, gathered, xp.zeros_like(gathered))
    return out


def gather_or_fill(xp: ModuleType, x: Array, index: np.ndarray, axis: int, fill: float) -> Array:
    """``x`` indexed along ``axis`` by host ``index``; ``-1`` entries read the constant ``fill``."""
    outside = index < 0
    taken = xp.take(x, xp.asarray(np.where(outside, 0, index), device=device(x)), axis=axis)
    if not outside.any():
        return taken
    shape = [1] * x.ndim
    shape[axis] = index.shape[0]
    mask = xp.reshape(xp.asarray(outside, device=device(x)), tuple(shape))
    return xp.where(mask, xp.asarray(fill, dtype=x.dtype, device=device(x)), taken)
