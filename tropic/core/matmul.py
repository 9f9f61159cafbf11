"""Tropical matrix products: ``maxplus_matmul``, ``minplus_matmul`` and their vector-Jacobian product."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from . import extremum
from ._array_api import Array, array_namespace, device, index_dtype, sum_to_shape
from .checks import (
    require_floating,
    require_integer,
    require_no_rounding,
    require_same_device,
    require_winners,
    shape_tuple,
)
from .dispatch import kernel_for
from .engines import arrays, engine_of, run_vjp
from .semiring import MAX_PLUS, MIN_PLUS, Semiring, reduce_candidates
from .spec import Operator, define


def maxplus_matmul(a: Array, b: Array, *, bias: Array | None = None, return_indices: bool = False):
    """Max-plus matrix product, optionally with a bias candidate inside the max.

    .. math:: c_{\\dots ij} = \\max\\big(\\beta_j,\\; \\max_k \\; a_{\\dots ik} + b_{\\dots kj}\\big)

    Shapes follow ``matmul``: the last two axes are the matrices, leading axes broadcast, a 1-D
    ``a`` is a row vector and a 1-D ``b`` a column vector (the added axis is removed again).

    Parameters
    ----------
    a : array or tensor, shape (..., M, K) or (K,)
    b : array or tensor, shape (..., K, N) or (K,)
        Real floating point, same array library and device. Dtypes promote as in ``matmul``.
        NumPy, CuPy and other array-API arrays, ``tropic.autodiff`` tensors and torch tensors (the
        last two differentiable).
    bias : array or tensor, optional
        ``β``, broadcast against the output (``(N,)`` for a layer's bias): one more candidate of
        every output, considered before the products. It keeps an output unless a product is strictly
        greater (its gradient takes ties), as ``maximum(bias, product)`` would.
    return_indices : bool
        Also return the winning ``k`` of every output (lowest ``k`` on ties; ``K`` where the bias
        wins; ``-1`` where every candidate is ``-inf``), as the smallest signed integer dtype that
        holds the candidate count.

    Returns
    -------
    c : array, shape (..., M, N)
    indices : array, shape of ``c`` (only if ``return_indices``)

    Notes
    -----
    ``-inf`` is the tropical zero and absorbs: ``-inf + inf`` counts as ``-inf``, not NaN. A NaN in
    row ``i`` of ``a`` or column ``j`` of ``b`` makes ``c[i, j]`` NaN. Memory is O(output): no
    (M, K, N) intermediate is formed. Gradients: :func:`matmul_vjp`, or the tensors' own autodiff.

    Examples
    --------
    >>> import numpy as np, tropic
    >>> a = np.array([[0.0, 1.0], [2.0, -np.inf]])
    >>> b = np.array([[1.0, 0.0], [0.0, 5.0]])
    >>> tropic.maxplus_matmul(a, b)
    array([[1., 6.],
           [3., 2.]])
    >>> tropic.maxplus_matmul(a, b, bias=np.array([4.0, 0.0]), return_indices=True)
    (array([[4., 6.],
           [4., 2.]]), array([[2, 1],
           [2, 0]], dtype=int8))
    """
    return _tropical_matmul(MAX_PLUS, a, b, bias, return_indices)


def minplus_matmul(a: Array, b: Array, *, bias: Array | None = None, return_indices: bool = False):
    """Min-plus matrix product, the dual of :func:`maxplus_matmul`.

    .. math:: c_{\\dots ij} = \\min\\big(\\beta_j,\\; \\min_k \\; a_{\\dots ik} + b_{\\dots kj}\\big)
              = -\\mathrm{maxplus}(-a, -b, \\text{bias}=-\\beta)_{\\dots ij}

    Same shapes, dtypes and conventions as :func:`maxplus_matmul` with ``+inf`` as the zero; the
    indices are the argmin (lowest ``k`` on ties, ``K`` for the bias, ``-1`` where every candidate is
    ``+inf``).

    Examples
    --------
    >>> import numpy as np, tropic
    >>> tropic.minplus_matmul(np.array([[0.0, 1.0]]), np.array([[1.0], [-3.0]]))
    array([[-2.]])
    """
    return _tropical_matmul(MIN_PLUS, a, b, bias, return_indices)


def _tropical_matmul(semiring: Semiring, a: Array, b: Array, bias: Array | None, return_indices: bool):
    engine = engine_of(a, b, bias)
    if engine is None:
        xp = check(a, b, bias)
        values, winners = _run(xp, a, b, bias, maximise=semiring.maximises, winners=return_indices)
    else:
        check(engine.array(a), engine.array(b), None if bias is None else engine.array(bias))
        params = {"maximise": semiring.maximises}
        values, winners = engine.apply(MATMUL, (a, b, bias), params, winners=return_indices)
    return (values, winners) if return_indices else values


def check(a: Array, b: Array, bias: Array | None = None) -> ModuleType:
    """The namespace of a product's operands, after the checks its kernels rely on (``ValueError`` /
    ``TypeError`` naming the argument)."""
    xp = array_namespace(a=a, b=b, bias=bias)
    require_floating(xp, "a", a)
    require_floating(xp, "b", b)
    if bias is not None:
        require_floating(xp, "bias", bias)
    require_same_device(a=a, b=b, bias=bias)
    _checked_shape(tuple(a.shape), tuple(b.shape), None if bias is None else tuple(bias.shape))
    return xp


def _checked_shape(
    a_shape: tuple, b_shape: tuple, bias_shape: tuple | None, bias_name: str = "bias"
) -> tuple[int, ...]:
    """The product's shape; ``ValueError`` naming the operands (the bias as ``bias_name``) unless
    they fit."""
    if len(a_shape) == 0 or len(b_shape) == 0:
        raise ValueError(f"a and b must have at least 1 dimension, got shapes {a_shape} and {b_shape}")
    out_shape = _output_shape(a_shape, b_shape)
    _check_bias_shape(bias_shape, out_shape, bias_name)
    return out_shape


def _check_bias_shape(bias_shape: tuple | None, out_shape: tuple, bias_name: str = "bias") -> None:
    """``ValueError`` naming the bias (``bias_name``) unless it broadcasts to the product's shape
    ``out_shape`` without enlarging it."""
    if bias_shape is not None and bias_shape != out_shape[len(out_shape) - len(bias_shape) :]:
        try:
            broadcast = tuple(np.broadcast_shapes(bias_shape, out_shape))
        except ValueError:
            broadcast = None
        if broadcast != out_shape:
            raise ValueError(
                f"{bias_name} must broadcast to the product's shape {out_shape} (and not enlarge it), got "
                f"shape {bias_shape}"
            )


def _output_shape(
    a_shape: tuple[int, ...], b_shape: tuple[int, ...], names: tuple[str, str] = ("a", "b")
) -> tuple[int, ...]:
    """The product's shape, 1-D operands included (as ``matmul``)."""
    a2 = (1,) + a_shape if len(a_shape) == 1 else a_shape
    b2 = b_shape + (1,) if len(b_shape) == 1 else b_shape
    out = product_shape(a2, b2, names, given=(a_shape, b_shape))
    return out[:-2] + out[-2:-1] * (len(a_shape) > 1) + out[-1:] * (len(b_shape) > 1)


def _run(
    xp: ModuleType,
    a: Array,
    b: Array,
    bias: Array | None = None,
    *,
    maximise: bool,
    rounding=None,
    winners: bool = True,
):
    """``(c, winners)`` of checked operands: 1-D operands as matrices, one dtype, the kernel, the bias.
    ``winners=False``: the caller will not read them (a kernel may skip them; then None)."""
    semiring = MAX_PLUS if maximise else MIN_PLUS
    a2, b2 = _as_matrices(xp, a, b)
    dtypes = (a2.dtype, b2.dtype) if bias is None else (a2.dtype, b2.dtype, bias.dtype)
    dtype = a2.dtype if len(set(dtypes)) == 1 else xp.result_type(*dtypes)
    if a2.dtype != dtype or b2.dtype != dtype:
        a2, b2 = xp.astype(a2, dtype, copy=False), xp.astype(b2, dtype, copy=False)
    bias = None if bias is None else xp.astype(bias, dtype, copy=False)
    # Matrices keep every axis, so the kernel can take the bias (a vector operand's dropped axis
    # would change what the bias broadcasts against).
    in_kernel = bias is not None and a.ndim >= 2 and b.ndim >= 2
    kernel = kernel_for("matmul", xp) or matmul_reference
    c, found = kernel(xp, semiring, a2, b2, bias if in_kernel else None, rounding, winners)
    c = _drop_vector_axes(c, a.ndim, b.ndim)
    winners = None if found is None else _drop_vector_axes(found, a.ndim, b.ndim)
    if bias is not None and not in_kernel:
        c, winners = apply_bias(xp, maximise, bias, c, winners, a2.shape[-1])
    return c, winners


def apply_bias(
    xp: ModuleType, maximise: bool, bias: Array, c: Array, winners: Array | None, K: int
) -> tuple[Array, Array | None]:
    """``⊕(bias, c)`` with the bias as candidate ``K``: it wins ties, a NaN bias wins, and a NaN
    product beside a number keeps its NaN value but reports the bias (``c > bias`` is false); the
    winners in ``index_dtype`` of ``K + 1`` (None stays None: values only). The rule every kernel
    that takes a bias follows."""
    c, product_wins = extremum.select(xp, maximise, bias, c)
    if winners is None:
        return c, None
    index_type = index_dtype(xp, K + 1)
    at_bias = xp.asarray(K, dtype=index_type, device=device(c))
    return c, xp.where(product_wins, xp.astype(winners, index_type), at_bias)


def bias_vjp(
    xp: ModuleType, grad: Array, winners: Array, K: int, bias_shape: tuple, need: bool
) -> tuple[Array | None, Array]:
    """``(grad_bias, product winners)``: the bias's gradient sums ``grad`` where it won (candidate
    ``K``), in ``grad``'s dtype (None unless ``need``); the winners with the bias's turned into -1,
    for the product's vjp."""
    at_bias = winners == K
    grad_bias = None
    if need:
        zero = xp.zeros((), dtype=grad.dtype, device=device(grad))
        grad_bias = sum_to_shape(xp, xp.where(at_bias, grad, zero), tuple(bias_shape))
        if tuple(grad_bias.shape) != tuple(bias_shape):  # a bias of size-1 axes the sum dropped
            grad_bias = xp.reshape(grad_bias, tuple(bias_shape))
    none = xp.asarray(-1, dtype=winners.dtype, device=device(grad))
    return grad_bias, xp.where(at_bias, none, winners)


def _vjp(
    xp: ModuleType,
    grad: Array,
    winners: Array,
    shapes: tuple,
    needs: tuple,
    *,
    maximise: bool,
    transposed_b_grad: bool = False,
):
    """``(grad_a, grad_b, grad_bias)`` of a product: the bias takes the outputs it won, the rest go to
    the winning ``a[i, k]`` and ``b[k, j]`` (:func:`matmul_vjp`). ``transposed_b_grad``: a layout
    hint for ``grad_b`` (a backend may return it as the transpose of a C-contiguous array, the
    layout of a weight that entered as ``W.T``); the values are the same."""
    a_shape, b_shape, bias_shape = (None if s is None else tuple(s) for s in shapes)
    in_kernel = bias_shape is not None and len(a_shape) >= 2 and len(b_shape) >= 2  # as in _run
    grad_bias = None
    if bias_shape is not None and not in_kernel:
        grad_bias, winners = bias_vjp(xp, grad, winners, a_shape[-1], bias_shape, needs[2])
        bias_shape, needs = None, (needs[0], needs[1], False)
    grad_a = grad_b = None
    if any(needs):
        grads = _product_vjp(xp, grad, winners, a_shape, b_shape, bias_shape, needs, transposed_b_grad)
        grad_a, grad_b = grads[:2]
        grad_bias = grads[2] if in_kernel else grad_bias
    return grad_a, grad_b, grad_bias


def _jvp(xp: ModuleType, tangents: tuple, winners: Array, shapes: tuple, *, maximise: bool):
    """The tangent of ``c``: ``ta[..., i, k*] + tb[..., k*, j]`` at each output's winner ``k*`` (the
    bias's tangent where it won, 0 where nothing won)."""
    ta, tb, tbias = tangents
    a_shape, b_shape, bias_shape = shapes
    K = a_shape[-1]
    known = next(t for t in tangents if t is not None)
    dev = device(winners)
    zero = xp.zeros((), dtype=known.dtype, device=dev)
    k = winners
    if len(b_shape) == 1:
        k = k[..., None]
    if len(a_shape) == 1:
        k = k[..., None, :]
    valid = (k >= 0) & (k < K)
    safe = xp.where(valid, xp.astype(k, xp.int64), xp.zeros((), dtype=xp.int64, device=dev))
    out = xp.zeros(tuple(k.shape), dtype=known.dtype, device=dev)
    if ta is not None:
        ta2 = xp.reshape(ta, (1, K)) if len(a_shape) == 1 else ta
        ta2 = xp.broadcast_to(ta2, tuple(k.shape[:-1]) + (K,))
        out = out + xp.take_along_axis(ta2, safe, axis=-1)
    if tb is not None:
        tb2 = xp.reshape(tb, (K, 1)) if len(b_shape) == 1 else tb
        tb2 = xp.broadcast_to(tb2, tuple(k.shape[:-2]) + (K, k.shape[-1]))
        out = out + xp.take_along_axis(tb2, safe, axis=-2)
    out = xp.where(valid, out, zero)
    out = _drop_vector_axes(out, len(a_shape), len(b_shape))
    if bias_shape is not None:
        bias_tangent = zero if tbias is None else xp.broadcast_to(tbias, tuple(out.shape))
        out = xp.where(winners == K, bias_tangent, out)
    return out


def _meta(shapes: tuple, *, maximise: bool) -> tuple[tuple[int, ...], int]:
    a_shape, b_shape, bias_shape = shapes
    out_shape = _checked_shape(
        tuple(a_shape), tuple(b_shape), None if bias_shape is None else tuple(bias_shape)
    )
    # (an int, not a bool: under torch's symbolic shapes a bool in a size sum is a sympy error)
    return out_shape, a_shape[-1] + (1 if bias_shape is not None else 0)


MATMUL = define(
    Operator(
        name="matmul",
        inputs=("a", "b", "bias"),
        optional=("bias",),
        params=(("maximise", bool),),
        run=_run,
        vjp=_vjp,
        jvp=_jvp,
        meta=_meta,
        skips_winners=True,
        layout_hints=lambda transposed: {"transposed_b_grad": True} if transposed[1] else {},
        kernel=("matmul", ("xp", "semiring", "a", "b", "bias", "rounding", "winners")),
        vjp_kernel=(
            "matmul_vjp",
            ("xp", "grad", "indices", "a_shape", "b_shape", "bias_shape", "needs", "transposed_b_grad"),
        ),
    )
)


def matmul_reference(
    xp: ModuleType,
    semiring: Semiring,
    a: Array,
    b: Array,
    bias: Array | None = None,
    rounding: str | None = None,
    winners: bool = True,
) -> tuple[Array, Array]:
    """Reference kernel: ``a`` (..., M, K) and ``b`` (..., K, N) of one dtype, and a ``bias`` of that
    dtype broadcast to the output (candidate ``K``, :func:`apply_bias`) -> (c, indices) (the indices
    whatever ``winners`` says)."""
    require_no_rounding(rounding)
    K = a.shape[-1]
    batch = tuple(np.broadcast_shapes(tuple(a.shape[:-2]), tuple(b.shape[:-2])))
    out_shape = batch + (a.shape[-2], b.shape[-1])
    candidates = ((k, a[..., :, k : k + 1], b[..., k : k + 1, :]) for k in range(K))
    c, found = reduce_candidates(xp, semiring, candidates, out_shape, a.dtype, index_dtype(xp, K), device(a))
    return (c, found) if bias is None else apply_bias(xp, semiring.maximises, bias, c, found, K)


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
    raw_grad, raw_indices = arrays(grad, indices)
    xp = array_namespace(grad=raw_grad, indices=raw_indices)
    require_floating(xp, "grad", raw_grad)
    require_integer(xp, "indices", raw_indices)
    a_shape, b_shape = shape_tuple("a_shape", a_shape, 1), shape_tuple("b_shape", b_shape, 1)
    expected = _output_shape(a_shape, b_shape, ("a_shape", "b_shape"))
    for name, x in (("grad", grad), ("indices", indices)):
        if tuple(x.shape) != expected:
            raise ValueError(
                f"{name} must have the product's output shape {expected} for operands of shapes "
                f"{a_shape} and {b_shape}, got {tuple(x.shape)}"
            )
    shapes, params = (a_shape, b_shape, None), {"maximise": True}  # the vjp is the same for both
    return run_vjp(MATMUL, grad, indices, shapes, (True, True, False), params)[:2]


def _product_vjp(
    xp: ModuleType,
    grad: Array,
    indices: Array,
    a_shape: tuple,
    b_shape: tuple,
    bias_shape: tuple | None,
    needs: tuple,
    transposed_b_grad: bool = False,
):
    """The vjp kernel's ``(grad_a, grad_b, grad_bias)`` (1-D operands included, without a bias);
    None for a gradient not needed."""
    kernel = kernel_for("matmul_vjp", xp) or matmul_vjp_reference
    if len(a_shape) >= 2 and len(b_shape) >= 2:  # matrices already (the reshapes would change nothing)
        return kernel(xp, grad, indices, a_shape, b_shape, bias_shape, tuple(needs), transposed_b_grad)
    a2_shape = (1,) + a_shape if len(a_shape) == 1 else a_shape
    b2_shape = b_shape + (1,) if len(b_shape) == 1 else b_shape
    out2_shape = product_shape(a2_shape, b2_shape)
    grad, indices = xp.reshape(grad, out2_shape), xp.reshape(indices, out2_shape)
    grad_a, grad_b, grad_bias = kernel(
        xp, grad, indices, a2_shape, b2_shape, bias_shape, tuple(needs), transposed_b_grad
    )
    grad_a = None if grad_a is None else xp.reshape(grad_a, a_shape)
    grad_b = None if grad_b is None else xp.reshape(grad_b, b_shape)
    return grad_a, grad_b, grad_bias


def matmul_vjp_reference(
    xp: ModuleType,
    grad: Array,
    indices: Array,
    a_shape: tuple[int, ...],
    b_shape: tuple[int, ...],
    bias_shape: tuple[int, ...] | None = None,
    needs: tuple[bool, ...] = (True, True, True),
    transposed_b_grad: bool = False,
) -> tuple[Array | None, Array | None, Array | None]:
    """Reference vjp on matrix-shaped (>= 2-D) operands: one masked sum per candidate ``k``; with a
    ``bias_shape``, candidate ``K`` is the bias (:func:`bias_vjp`). ``transposed_b_grad``, a layout
    hint, is not needed here."""
    K = a_shape[-1]
    grad_bias = None
    if bias_shape is not None:
        grad_bias, indices = bias_vjp(xp, grad, indices, K, bias_shape, needs[2])
    require_winners(xp, "indices", indices, K)
    zeros = xp.zeros_like(grad)
    per_k = [xp.where(indices == k, grad, zeros) for k in range(K)]
    grad_a = grad_b = None
    if needs[0]:
        if K:
            grad_a = xp.stack([xp.sum(g, axis=-1) for g in per_k], axis=-1)
        else:
            grad_a = xp.zeros(grad.shape[:-1] + (0,), dtype=grad.dtype, device=device(grad))
        grad_a = sum_to_shape(xp, grad_a, a_shape)
    if needs[1]:
        if K:
            grad_b = xp.stack([xp.sum(g, axis=-2) for g in per_k], axis=-2)
        else:
            grad_b = xp.zeros(grad.shape[:-2] + (0, grad.shape[-1]), dtype=grad.dtype, device=device(grad))
        grad_b = sum_to_shape(xp, grad_b, b_shape)
    return grad_a, grad_b, grad_bias


def product_shape(
    a_shape: tuple[int, ...],
    b_shape: tuple[int, ...],
    names: tuple[str, str] = ("a", "b"),
    given: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
) -> tuple[int, ...]:
    """Output shape ``(*batch, M, N)`` of a product of matrix-shaped (>= 2-D) operands (..., M, K) and
    (..., K, N); ``ValueError`` naming the operands (``names``, shown as ``given``) if they do not fit."""
    given = given or (a_shape, b_shape)
    if a_shape[-1] != b_shape[-2]:
        shapes = [name if name.endswith("_shape") else f"{name}.shape" for name in names]
        raise ValueError(
            f"{shapes[0]}[-1] must equal {shapes[1]}[-2] (the contracted dimension K), got shapes "
            f"{given[0]} and {given[1]}"
        )
    try:
        batch = (
            ()
            if len(a_shape) == len(b_shape) == 2
            else tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
        )
    except ValueError:
        raise ValueError(
            f"the batch dimensions of {names[0]} and {names[1]} must broadcast, got {given[0]} and {given[1]}"
        ) from None
    return batch + (a_shape[-2], b_shape[-1])


def _as_matrices(xp: ModuleType, a: Array, b: Array) -> tuple[Array, Array]:
    a2 = xp.reshape(a, (1, a.shape[0])) if a.ndim == 1 else a
    b2 = xp.reshape(b, (b.shape[0], 1)) if b.ndim == 1 else b
    return a2, b2


def _drop_vector_axes(c: Array, a_ndim: int, b_ndim: int) -> Array:
    """Undo the matrix promotion of 1-D operands, as ``matmul`` does."""
    if b_ndim == 1:
        c = c[..., 0]
    if a_ndim == 1:
        c = c[..., 0] if b_ndim == 1 else c[..., 0, :]
    return c
