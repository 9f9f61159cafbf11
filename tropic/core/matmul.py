"""Tropical matrix products: ``maxplus_matmul``, ``minplus_matmul`` and their vector-Jacobian product."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from ._array_api import Array, array_namespace, device, index_dtype, sum_to_shape
from .checks import require_floating, require_integer, require_same_device, require_winners, shape_tuple
from .dispatch import kernel_for
from .semiring import MAX_PLUS, MIN_PLUS, Semiring, reduce_candidates


def maxplus_matmul(a: Array, b: Array, *, return_indices: bool = False):
    """Max-plus matrix product.

    .. math:: c_{\\dots ij} = \\max_k \\; a_{\\dots ik} + b_{\\dots kj}

    Shapes follow ``matmul``: the last two axes are the matrices, leading axes broadcast, a 1-D
    ``a`` is a row vector and a 1-D ``b`` a column vector (the added axis is removed again).

    Parameters
    ----------
    a : array, shape (..., M, K) or (K,)
    b : array, shape (..., K, N) or (K,)
        Real floating point, same array library and device. Dtypes promote as in ``matmul``.
    return_indices : bool
        Also return the winning ``k`` of every output (lowest ``k`` on ties; ``-1`` where every
        candidate is ``-inf``), as the smallest signed integer dtype that holds ``K``.

    Returns
    -------
    c : array, shape (..., M, N)
    indices : array, shape of ``c`` (only if ``return_indices``)

    Notes
    -----
    ``-inf`` is the tropical zero and absorbs: ``-inf + inf`` counts as ``-inf``, not NaN. A NaN in
    row ``i`` of ``a`` or column ``j`` of ``b`` makes ``c[i, j]`` NaN. Memory is O(output): no
    (M, K, N) intermediate is formed. Gradients: :func:`matmul_vjp`.

    Examples
    --------
    >>> import numpy as np, tropic
    >>> a = np.array([[0.0, 1.0], [2.0, -np.inf]])
    >>> b = np.array([[1.0, 0.0], [0.0, 5.0]])
    >>> tropic.maxplus_matmul(a, b)
    array([[1., 6.],
           [3., 2.]])
    """
    return _tropical_matmul(MAX_PLUS, a, b, return_indices)


def minplus_matmul(a: Array, b: Array, *, return_indices: bool = False):
    """Min-plus matrix product, the dual of :func:`maxplus_matmul`.

    .. math:: c_{\\dots ij} = \\min_k \\; a_{\\dots ik} + b_{\\dots kj}
              = -\\mathrm{maxplus}(-a, -b)_{\\dots ij}

    Same shapes, dtypes and conventions as :func:`maxplus_matmul` with ``+inf`` as the zero; the
    indices are the argmin (lowest ``k`` on ties, ``-1`` where every candidate is ``+inf``).

    Examples
    --------
    >>> import numpy as np, tropic
    >>> tropic.minplus_matmul(np.array([[0.0, 1.0]]), np.array([[1.0], [-3.0]]))
    array([[-2.]])
    """
    return _tropical_matmul(MIN_PLUS, a, b, return_indices)


def _tropical_matmul(semiring: Semiring, a: Array, b: Array, return_indices: bool):
    xp = array_namespace(a=a, b=b)
    require_floating(xp, "a", a)
    require_floating(xp, "b", b)
    require_same_device(a=a, b=b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(
            f"a and b must have at least 1 dimension, got shapes {tuple(a.shape)} and {tuple(b.shape)}"
        )
    a2, b2 = _as_matrices(xp, a, b)
    product_shape(tuple(a2.shape), tuple(b2.shape), given=(tuple(a.shape), tuple(b.shape)))
    dtype = xp.result_type(a2.dtype, b2.dtype)
    a2, b2 = xp.astype(a2, dtype, copy=False), xp.astype(b2, dtype, copy=False)
    kernel = kernel_for("matmul", xp) or matmul_reference
    c, indices = kernel(xp, semiring, a2, b2)
    c, indices = _drop_vector_axes(xp, a, b, c), _drop_vector_axes(xp, a, b, indices)
    return (c, indices) if return_indices else c


def matmul_reference(xp: ModuleType, semiring: Semiring, a: Array, b: Array) -> tuple[Array, Array]:
    """Reference kernel: ``a`` (..., M, K) and ``b`` (..., K, N) of one dtype -> (c, indices)."""
    K = a.shape[-1]
    batch = tuple(np.broadcast_shapes(tuple(a.shape[:-2]), tuple(b.shape[:-2])))
    out_shape = batch + (a.shape[-2], b.shape[-1])
    candidates = ((k, a[..., :, k : k + 1], b[..., k : k + 1, :]) for k in range(K))
    return reduce_candidates(xp, semiring, candidates, out_shape, a.dtype, index_dtype(xp, K), device(a))


def matmul_vjp(
    grad: Array, indices: Array, a_shape: tuple[int, ...], b_shape: tuple[int, ...]
) -> tuple[Array, Array]:
    """Vector-Jacobian product of a tropical (max-plus or min-plus) matrix product.

    With ``k* = indices[..., i, j]`` the winner of output ``(i, j)``:

    .. math:: \\frac{\\partial L}{\\partial a_{ik}} = \\sum_j g_{ij} [k^*_{ij} = k], \\qquad
              \\frac{\\partial L}{\\partial b_{kj}} = \\sum_i g_{ij} [k^*_{ij} = k]

    summed over broadcast batch dimensions. Outputs with ``indices == -1`` send nothing.

    Parameters
    ----------
    grad : array, shape of the product's output
        The incoming gradient ``dL/dc``.
    indices : array, shape of ``grad``
        The winners returned by ``maxplus_matmul(..., return_indices=True)`` (or min-plus).
    a_shape, b_shape : tuple of int
        Shapes of the product's operands.

    Returns
    -------
    grad_a, grad_b : arrays of shapes ``a_shape`` and ``b_shape``, in ``grad``'s dtype.
    """
    xp = array_namespace(grad=grad, indices=indices)
    require_floating(xp, "grad", grad)
    require_integer(xp, "indices", indices)
    a_shape, b_shape = shape_tuple("a_shape", a_shape, 1), shape_tuple("b_shape", b_shape, 1)
    a2_shape = (1,) + a_shape if len(a_shape) == 1 else a_shape
    b2_shape = b_shape + (1,) if len(b_shape) == 1 else b_shape
    out2_shape = product_shape(a2_shape, b2_shape, ("a_shape", "b_shape"), (a_shape, b_shape))
    expected = out2_shape[:-2] + out2_shape[-2:-1] * (len(a_shape) > 1) + out2_shape[-1:] * (len(b_shape) > 1)
    for name, x in (("grad", grad), ("indices", indices)):
        if tuple(x.shape) != expected:
            raise ValueError(
                f"{name} must have the product's output shape {expected} for operands of shapes "
                f"{a_shape} and {b_shape}, got {tuple(x.shape)}"
            )
    grad, indices = xp.reshape(grad, out2_shape), xp.reshape(indices, out2_shape)
    kernel = kernel_for("matmul_vjp", xp) or matmul_vjp_reference
    grad_a, grad_b = kernel(xp, grad, indices, a2_shape, b2_shape)
    return xp.reshape(grad_a, a_shape), xp.reshape(grad_b, b_shape)


def matmul_vjp_reference(
    xp: ModuleType, grad: Array, indices: Array, a_shape: tuple[int, ...], b_shape: tuple[int, ...]
) -> tuple[Array, Array]:
    """Reference vjp on matrix-shaped (>= 2-D) operands: one masked sum per candidate ``k``."""
    K = a_shape[-1]
    require_winners(xp, "indices", indices, K)
    zeros = xp.zeros_like(grad)
    per_k = [xp.where(indices == k, grad, zeros) for k in range(K)]
    if K:
        grad_a = xp.stack([xp.sum(g, axis=-1) for g in per_k], axis=-1)
        grad_b = xp.stack([xp.sum(g, axis=-2) for g in per_k], axis=-2)
    else:
        grad_a = xp.zeros(grad.shape[:-1] + (0,), dtype=grad.dtype, device=device(grad))
        grad_b = xp.zeros(grad.shape[:-2] + (0, grad.shape[-1]), dtype=grad.dtype, device=device(grad))
    return sum_to_shape(xp, grad_a, a_shape), sum_to_shape(xp, grad_b, b_shape)


def product_shape(
    a_shape: tuple[int, ...],
    b_shape: tuple[int, ...],
    names: tuple[str, str] = ("a", "b"),
    given: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
) -> tuple[int, ...]:
    """Output shape ``(*batch, M, N)`` of a product of matrix-shaped (>= 2-D) operands (..., M, K) and
    (..., K, N); ``ValueError`` naming the operands (``names``, shown as ``given``) if they do not fit."""
    given = given or (a_shape, b_shape)
    shapes = [name if name.endswith("_shape") else f"{name}.shape" for name in names]
    if a_shape[-1] != b_shape[-2]:
        raise ValueError(
            f"{shapes[0]}[-1] must equal {shapes[1]}[-2] (the contracted dimension K), got shapes "
            f"{given[0]} and {given[1]}"
        )
    try:
        batch = tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    except ValueError:
        raise ValueError(
            f"the batch dimensions of {names[0]} and {names[1]} must broadcast, got {given[0]} and {given[1]}"
        ) from None
    return batch + (a_shape[-2], b_shape[-1])


def _as_matrices(xp: ModuleType, a: Array, b: Array) -> tuple[Array, Array]:
    a2 = xp.reshape(a, (1, a.shape[0])) if a.ndim == 1 else a
    b2 = xp.reshape(b, (b.shape[0], 1)) if b.ndim == 1 else b
    return a2, b2


def _drop_vector_axes(xp: ModuleType, a: Array, b: Array, c: Array) -> Array:
    """Undo the matrix promotion of 1-D operands, as ``matmul`` does."""
    if b.ndim == 1:
        c = c[..., 0]
    if a.ndim == 1:
        c = c[..., 0] if b.ndim == 1 else c[..., 0, :]
    return c
