"""The max-plus-min product: a max-plus and a min-plus product of one left operand, summed.

It is the layer of deep morphological networks (:class:`tropic.nn.MPM`): a dilation and an erosion
that share their input (and, there, their weight). As one operator it costs one call, one recorded
node and one backward where the two products cost two of each, plus the add and its node: on small
layers that bookkeeping takes longer than the kernels. Its values, winners and gradients are those of
the two products and the add, bit for bit (the operator is their composition, see
:func:`maxplus_minplus_matmul`).
"""

from __future__ import annotations

from types import ModuleType

from . import matmul
from ._array_api import Array, array_namespace, index_dtype
from .checks import require_floating, require_same_device
from .dispatch import kernel_for
from .engines import engine_of
from .spec import Operator, define

__all__ = ["maxplus_minplus_matmul"]


def maxplus_minplus_matmul(
    a: Array,
    b: Array,
    *,
    bias_max: Array | None = None,
    bias_min: Array | None = None,
    b_min: Array | None = None,
    return_indices: bool = False,
):
    """Max-plus-min product: a max-plus and a min-plus product of ``a``, summed.

    .. math:: c_{\\dots ij} = \\max\\big(\\beta_j,\\; \\max_k \\; a_{\\dots ik} + b_{\\dots kj}\\big)
              + \\min\\big(\\beta'_j,\\; \\min_k \\; a_{\\dots ik} + b'_{\\dots kj}\\big)

    with ``b' = b`` unless ``b_min`` is given. The same values, winners and gradients as
    ``maxplus_matmul(a, b, bias=bias_max) + minplus_matmul(a, b_min, bias=bias_min)``, bit for bit,
    in one call (the layer :class:`tropic.nn.MPM` of deep morphological networks computes it).

    Parameters
    ----------
    a : array or tensor, shape (..., M, K) or (K,)
    b : array or tensor, shape (..., K, N) or (K,)
        The max-plus product's right operand (and the min-plus product's unless ``b_min`` is given).
    bias_max, bias_min : array or tensor, optional
        ``β`` and ``β'``: candidates of the max and of the min, broadcast against the output, as the
        ``bias`` of :func:`~tropic.maxplus_matmul` and :func:`~tropic.minplus_matmul`.
    b_min : array or tensor, optional
        ``b'``, the min-plus product's right operand, of ``b``'s shape (a weight with entries dropped
        differently in the two products: ``-inf`` in the max, ``+inf`` in the min).
    return_indices : bool
        Also return the winners, stacked: ``indices[0]`` those of the max-plus product,
        ``indices[1]`` those of the min-plus product (each as the products give them: lowest ``k``
        on ties, ``K`` where the bias wins, ``-1`` where every candidate is the tropical zero), in the
        smallest signed integer dtype that holds the candidate count.

    Returns
    -------
    c : array, shape (..., M, N)
    indices : array, shape (2, ..., M, N) (only if ``return_indices``)

    Notes
    -----
    The products and the sum follow the products' rules (NaN, infinities, dtype promotion). Where
    the operands do not all share one dtype, the two products are computed by two calls, each in its
    own promoted dtype, and added, as written out above.

    Examples
    --------
    >>> import numpy as np, tropic
    >>> a = np.array([[0.0, 3.0]])
    >>> b = np.array([[0.0], [-1.0]])
    >>> tropic.maxplus_minplus_matmul(a, b)  # max(0, 2) + min(0, 2)
    array([[2.]])
    >>> tropic.maxplus_minplus_matmul(a, b, bias_max=np.array([5.0]), return_indices=True)[1]
    array([[[2]],
    <BLANKLINE>
           [[0]]], dtype=int8)
    """
    b_min = b if b_min is None else b_min
    engine = engine_of(a, b, bias_max, bias_min, b_min)
    given = (a, b, b_min, bias_max, bias_min)
    arrays = given if engine is None else tuple(None if x is None else engine.array(x) for x in given)
    xp = _check(*arrays)
    if len({x.dtype for x in arrays if x is not None}) > 1:
        return _two_calls(a, b, b_min, bias_max, bias_min, return_indices)
    if engine is None:
        values, winners = _run(xp, *(arrays[i] for i in (0, 1, 3, 0, 2, 4)), maximise_first=True,
                               winners=return_indices)  # fmt: skip
        return (values, winners) if return_indices else values
    # An engine adds the gradients that one operand gets from the two products in the order in
    # which it would run two separate calls' nodes (torch: the later call's first), so that a sum
    # of three or more (an input also used elsewhere, as in a residual block) has the same bits.
    max_first = not engine.RUNS_LATER_NODES_FIRST
    inputs = (a, b, bias_max, a, b_min, bias_min) if max_first else (a, b_min, bias_min, a, b, bias_max)
    values, winners = engine.apply(
        MAXPLUS_MINPLUS_MATMUL, inputs, {"maximise_first": max_first}, winners=return_indices
    )
    if return_indices and not max_first:  # the max-plus product's winners first, as documented
        raw = engine.array(winners)
        winners = engine.wrap(array_namespace(indices=raw).flip(raw, axis=0))
    return (values, winners) if return_indices else values


def _check(a: Array, b: Array, b_min: Array, bias_max: Array | None, bias_min: Array | None) -> ModuleType:
    """The namespace of the operands, after the products' checks (:func:`tropic.core.matmul.check`,
    made once for the five arrays)."""
    named = {"a": a, "b": b, "b_min": b_min, "bias_max": bias_max, "bias_min": bias_min}
    xp = array_namespace(**named)
    for name, x in named.items():
        if x is not None and (x is not b or name == "b"):
            require_floating(xp, name, x)
    require_same_device(**named)
    if b_min is not b and tuple(b_min.shape) != tuple(b.shape):
        raise ValueError(f"b_min must have b's shape {tuple(b.shape)}, got {tuple(b_min.shape)}")
    a_shape, b_shape = tuple(a.shape), tuple(b.shape)
    out_shape = matmul._checked_shape(
        a_shape, b_shape, None if bias_max is None else tuple(bias_max.shape), "bias_max"
    )
    if bias_min is not None:
        matmul._check_bias_shape(tuple(bias_min.shape), out_shape, "bias_min")
    return xp


def _two_calls(a, b, b_min, bias_max, bias_min, return_indices: bool):
    """The sum of the two products computed apart (operands of mixed dtypes: each product promotes
    its own)."""
    if not return_indices:
        return matmul.maxplus_matmul(a, b, bias=bias_max) + matmul.minplus_matmul(a, b_min, bias=bias_min)
    c_max, k_max = matmul.maxplus_matmul(a, b, bias=bias_max, return_indices=True)
    c_min, k_min = matmul.minplus_matmul(a, b_min, bias=bias_min, return_indices=True)
    engine = engine_of(k_max)
    if engine is not None:
        k_max, k_min = engine.array(k_max), engine.array(k_min)
    xp = array_namespace(k=k_max)
    dtype = xp.result_type(k_max.dtype, k_min.dtype)
    stacked = xp.stack([xp.astype(k_max, dtype), xp.astype(k_min, dtype)])
    return c_max + c_min, stacked if engine is None else engine.wrap(stacked)


def _run(
    xp: ModuleType,
    a_first: Array,
    b_first: Array,
    bias_first: Array | None,
    a_second: Array,
    b_second: Array,
    bias_second: Array | None,
    *,
    maximise_first: bool,
    rounding=None,
    winners: bool = True,
):
    """``(c_first + c_second, stack([winners_first, winners_second]))`` of checked operands of one
    dtype: the first product max-plus if ``maximise_first``, else min-plus, the second its dual
    (winners None when ``winners`` is False). A backend's ``matmul_pair`` kernel may compute both
    products at once (one add per pair for the max and the min: an MPM layer's shared weight); where
    it declines, two calls of the products' kernel."""
    operands = (
        (a_first, b_first, bias_first, maximise_first),
        (a_second, b_second, bias_second, not maximise_first),
    )
    pair = kernel_for("matmul_pair", xp)  # a backend's kernel for both products at once
    done = None if pair is None else pair(xp, *operands, rounding, winners)
    if done is not None:
        return done
    first, second = (
        matmul._run(xp, a, b, bias, maximise=maximise, rounding=rounding, winners=winners)
        for a, b, bias, maximise in operands
    )
    # c_max + c_min in this order whichever runs first: where both are NaN, the add keeps the first's
    values = first[0] + second[0] if maximise_first else second[0] + first[0]
    if first[1] is None:
        return values, None
    any_bias = bias_first is not None or bias_second is not None
    dtype = index_dtype(xp, a_first.shape[-1] + (1 if any_bias else 0))
    return values, xp.stack([xp.astype(k, dtype, copy=False) for k in (first[1], second[1])])


def _vjp(
    xp: ModuleType,
    grad: Array,
    winners: Array,
    shapes: tuple,
    needs: tuple,
    *,
    maximise_first: bool,
    transposed_b_first_grad: bool = False,
    transposed_b_second_grad: bool = False,
):
    """The two products' vjps (:func:`tropic.core.matmul._vjp`), each of ``grad`` in full: the first
    product's operands' gradients from ``winners[0]``, the second's from ``winners[1]`` (in one call
    of a backend's ``matmul_vjp_pair`` kernel where it has one that takes them)."""
    pair = kernel_for("matmul_vjp_pair", xp)
    done = None
    if pair is not None:
        done = pair(xp, grad, winners, shapes, needs, transposed_b_first_grad, transposed_b_second_grad)
    if done is not None:
        return done
    first = matmul._vjp(
        xp, grad, winners[0, ...], shapes[:3], needs[:3], maximise=maximise_first,
        transposed_b_grad=transposed_b_first_grad,
    )  # fmt: skip
    second = matmul._vjp(
        xp, grad, winners[1, ...], shapes[3:], needs[3:], maximise=not maximise_first,
        transposed_b_grad=transposed_b_second_grad,
    )  # fmt: skip
    return (*first, *second)


def _jvp(xp: ModuleType, tangents: tuple, winners: Array, shapes: tuple, *, maximise_first: bool):
    """The tangent of ``c``: each product's tangent at its winners (:func:`tropic.core.matmul._jvp`),
    summed; a product none of whose operands has a tangent adds nothing."""
    parts = [
        matmul._jvp(xp, tangents[at : at + 3], winners[which, ...], shapes[at : at + 3], maximise=maximise)
        for at, which, maximise in ((0, 0, maximise_first), (3, 1, not maximise_first))
        if any(t is not None for t in tangents[at : at + 3])
    ]
    return parts[0] if len(parts) == 1 else parts[0] + parts[1]


def _meta(shapes: tuple, *, maximise_first: bool) -> tuple[tuple[int, ...], int]:
    shape_first, candidates_first = matmul._meta(shapes[:3], maximise=maximise_first)
    shape_second, candidates_second = matmul._meta(shapes[3:], maximise=not maximise_first)
    if shape_first != shape_second:
        raise ValueError(f"the two products must have one shape, got {shape_first} and {shape_second}")
    return shape_first, max(candidates_first, candidates_second)


MAXPLUS_MINPLUS_MATMUL = define(
    Operator(
        name="maxplus_minplus_matmul",
        inputs=("a_first", "b_first", "bias_first", "a_second", "b_second", "bias_second"),
        optional=("bias_first", "bias_second"),
        params=(("maximise_first", bool),),
        run=_run,
        vjp=_vjp,
        jvp=_jvp,
        meta=_meta,
        # optional: both products in one backend call (else two calls of matmul's kernel)
        kernel=("matmul_pair", ("xp", "first", "second", "rounding", "winners")),
        vjp_kernel=(
            "matmul_vjp_pair",
            (
                "xp",
                "grad",
                "winners",
                "shapes",
                "needs",
                "transposed_b_first_grad",
                "transposed_b_second_grad",
            ),
        ),
        winners_shape=lambda shape: (2, *shape),
        skips_winners=True,
        layout_hints=lambda transposed: {
            "transposed_b_first_grad": transposed[1],
            "transposed_b_second_grad": transposed[4],
        },
    )
)
