"""Binarisation of BiSE neurons as pure NumPy functions (no autodiff).

A BiSE neuron (``tropic.nn.BiSE``) has non-negative weights ``w`` (the flattened kernel, length n) and
a bias ``b >= 0``. On a binary input ``1_X`` it computes ``xi(p (conv(1_X, w) - b))`` and its binary
reading is ``conv(1_X, w) > b``. This module decides when that reading *is* a dilation or an erosion
by a structuring element ``S`` (the neuron is "activated"), and how to pick the closest ``S`` when it
is not (Aouad & Talbot, "A foundation for exact binarized morphological neural networks"):

- activation tests (exact): dilation by ``S`` iff ``sum_{k not in S} w_k <= b < min_{s in S} w_s``,
  erosion by ``S`` iff ``sum(w) - min_{s in S} w_s <= b < sum_{s in S} w_s``;
- projection onto the constant set ``A(S) = {t 1_S, t > 0}`` (the default approximation);
- projection onto the set of activable parameters (closed form from the KKT conditions);
- the fast thresholds ``S = {w >= r mean(w)}``, r = 2/3 or 3/4.

Functions take one neuron (``w`` of shape (n,), ``b`` a scalar) or a stack of neurons (``w`` of shape
(..., n), ``b`` of shape (...)) where stated. Computations run in float64 whatever the input dtype.
Structuring elements are boolean masks over the last axis of ``w``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

__all__ = [
    "DILATION",
    "EROSION",
    "METHODS",
    "activable_projection",
    "activation_test",
    "binarize",
    "constant_set_distance",
    "dilation_activated",
    "erosion_activated",
    "find_operation",
    "project_activable",
    "project_constant_set",
    "threshold_set",
]

DILATION = "dilation"
EROSION = "erosion"
Operation = Literal["dilation", "erosion"]
# Approximations used when a neuron is not activated (binarize's ``method``).
METHODS = ("constant", "activable", "threshold_2/3", "threshold_3/4")


def _weights(w: object, b: object | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    w = np.asarray(w, dtype=np.float64)
    if w.ndim < 1 or w.shape[-1] == 0:
        raise ValueError(f"w must have at least one dimension of positive length, got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("w must be finite")
    if b is None:
        return w, None
    b = np.asarray(b, dtype=np.float64)
    if b.shape != w.shape[:-1]:
        raise ValueError(f"b must have shape {w.shape[:-1]} (w's leading axes), got {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ValueError("b must be finite")
    return w, b


def _operation(operation: str) -> str:
    if operation not in (DILATION, EROSION):
        raise ValueError(f"operation must be {DILATION!r} or {EROSION!r}, got {operation!r}")
    return operation


def find_operation(w: object, b: object) -> np.ndarray:
    """The operation a neuron is read as: erosion iff ``b > sum(w) / 2`` (else dilation).

    Parameters
    ----------
    w : array of shape (..., n)
        Non-negative weights.
    b : array of shape (...)
        Biases.

    Returns
    -------
    numpy.ndarray of bool, shape (...)
        True where the neuron is an erosion.

    Examples
    --------
    >>> bool(find_operation([1.0, 1.0, 1.0], 1.0)), bool(find_operation([1.0, 1.0, 1.0], 2.5))
    (False, True)
    """
    w, b = _weights(w, b)
    return b > w.sum(axis=-1) / 2


def dilation_activated(w: object, b: object) -> tuple[np.ndarray, np.ndarray]:
    """Test ``sum_{k not in S} w_k <= b < min_{s in S} w_s`` with the only candidate ``S = {w > b}``.

    Every ``s`` in such an ``S`` has ``w_s > b`` and every ``k`` outside it ``w_k <= sum_{not S} w <= b``
    (``w >= 0``), so ``S = {w > b}`` is forced (the paper writes ``{w >= b}``, which differs only on
    ties where the test fails anyway). ``S`` may be empty: then the neuron is the constant 0, the
    dilation by the empty set.

    Returns
    -------
    activated : numpy.ndarray of bool, shape (...)
    S : numpy.ndarray of bool, shape (..., n)
    """
    w, b = _weights(w, b)
    s = w > b[..., None]
    outside = np.where(s, 0.0, w).sum(axis=-1)
    smallest = np.where(s, w, np.inf).min(axis=-1)
    return (outside <= b) & (b < smallest), s


def erosion_activated(w: object, b: object) -> tuple[np.ndarray, np.ndarray]:
    """Test ``sum(w) - min_{s in S} w_s <= b < sum_{s in S} w_s`` with ``S = {w >= sum(w) - b}``.

    Every ``s`` in such an ``S`` has ``w_s >= sum(w) - b`` and every ``k`` outside it
    ``w_k <= sum_{not S} w = sum(w) - sum_S w < sum(w) - b``, so that ``S`` is forced. An empty ``S``
    would need ``b < 0``: never activated.

    Returns
    -------
    activated : numpy.ndarray of bool, shape (...)
    S : numpy.ndarray of bool, shape (..., n)
    """
    w, b = _weights(w, b)
    total = w.sum(axis=-1)
    s = w >= (total - b)[..., None]
    smallest = np.where(s, w, np.inf).min(axis=-1)
    inside = np.where(s, w, 0.0).sum(axis=-1)
    return (total - smallest <= b) & (b < inside), s


def activation_test(w: object, b: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whether each neuron is exactly a dilation or an erosion, which one, and by which ``S``.

    A neuron can pass both tests only when ``|S| = 1`` (then the dilation and the erosion by a single
    point are the same translation); ``find_operation`` breaks that tie.

    Returns
    -------
    activated : numpy.ndarray of bool, shape (...)
    is_erosion : numpy.ndarray of bool, shape (...)
        Meaningful where activated; elsewhere ``find_operation``'s answer.
    S : numpy.ndarray of bool, shape (..., n)
        The structuring element where activated; elsewhere the candidate of ``find_operation``'s test.

    Examples
    --------
    >>> activated, is_erosion, s = activation_test([3.0, 3.0, 1.0], 1.5)  # 1 <= 1.5 < 3
    >>> bool(activated), bool(is_erosion), s.tolist()
    (True, False, [True, True, False])
    """
    w, b = _weights(w, b)
    dil, s_dil = dilation_activated(w, b)
    ero, s_ero = erosion_activated(w, b)
    preferred = find_operation(w, b)
    is_erosion = np.where(dil & ero, preferred, np.where(dil, False, np.where(ero, True, preferred)))
    s = np.where(is_erosion[..., None], s_ero, s_dil)
    return dil | ero, is_erosion, s


def constant_set_distance(w: object, s: object) -> np.ndarray:
    """Squared distance from ``w`` to ``A(S) = {t 1_S, t > 0}``: ``||w||^2 - (sum_S w)^2 / |S|``.

    (The closest point is ``mean_S(w) 1_S``; with ``w >= 0`` its ``t`` is positive.)
    """
    w, _ = _weights(w)
    s = np.asarray(s, dtype=bool)
    if s.shape != w.shape:
        raise ValueError(f"s must have w's shape {w.shape}, got {s.shape}")
    size = s.sum(axis=-1)
    if np.any(size == 0):
        raise ValueError("s must be non-empty for every neuron")
    inside = np.where(s, w, 0.0).sum(axis=-1)
    return (w * w).sum(axis=-1) - inside**2 / size


def project_constant_set(w: object) -> tuple[np.ndarray, np.ndarray]:
    """The ``S`` whose constant set ``A(S)`` is closest to ``w``, and that squared distance.

    Minimising ``||w||^2 - (sum_S w)^2 / |S|`` over ``|S| = j`` takes the ``j`` largest weights, so
    ``S`` is the top-``j*`` set with ``j* = argmax_j c_j / sqrt(j)``, ``c_j`` the sum of the ``j``
    largest weights (``w >= 0``); O(n log n). Ties: the smallest ``j*``, and among equal weights the
    lowest indices.

    Parameters
    ----------
    w : array of shape (..., n)
        Non-negative weights.

    Returns
    -------
    S : numpy.ndarray of bool, shape (..., n)
    distance2 : numpy.ndarray, shape (...)

    Examples
    --------
    >>> s, d2 = project_constant_set([0.1, 2.0, 1.9, 0.0])
    >>> s.tolist(), round(float(d2), 4)
    ([False, True, True, False], 0.015)
    """
    w, _ = _weights(w)
    order = np.argsort(-w, axis=-1, kind="stable")
    top = np.cumsum(np.take_along_axis(w, order, axis=-1), axis=-1)
    j = np.arange(1, w.shape[-1] + 1)
    best = np.argmax(top / np.sqrt(j), axis=-1)  # first maximum: the smallest j*
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(j - 1, order.shape), axis=-1)
    s = rank <= best[..., None]
    c = np.take_along_axis(top, best[..., None], axis=-1)[..., 0]
    distance2 = np.maximum((w * w).sum(axis=-1) - c * c / (best + 1), 0.0)
    return s, distance2


def threshold_set(w: object, ratio: float = 2.0 / 3.0) -> np.ndarray:
    """The fast ternary-network threshold ``S = {w >= ratio * mean(w)}`` (ratio 2/3 or 3/4 in the paper).

    Examples
    --------
    >>> threshold_set([0.1, 2.0, 1.9, 0.0]).tolist()
    [False, True, True, False]
    """
    w, _ = _weights(w)
    if not (np.isfinite(ratio) and ratio > 0):
        raise ValueError(f"ratio must be a positive number, got {ratio!r}")
    return w >= ratio * w.mean(axis=-1, keepdims=True)


def _dilation_candidates(w: np.ndarray, b: float, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KKT points of ``min ||w'-w||^2 + (b'-b)^2`` s.t. ``sum_{not S} w' <= b' <= min_S w'``, ``w' >= 0``.

    Stationarity with multipliers ``mu_s`` (for ``b' <= w'_s``) and ``nu`` (for the sum) gives
    ``w'_s = max(w_s, b')``, ``w'_k = (w_k - nu)_+`` outside ``S`` and ``b' = b + nu - sum_s mu_s``.
    With ``A`` the ``a`` smallest weights of ``S`` (those raised to ``b'``, sum ``S_A``) and ``P`` the
    ``p`` largest outside ``S`` (those left positive, sum ``S_P``):
    ``nu = 0``: ``b' = (b + S_A) / (1 + a)``; ``nu > 0`` (the sum is tight, ``S_P - p nu = b'``):
    ``b' = (p (b + S_A) + S_P) / (p (1 + a) + 1)``, ``nu = (S_P - b') / p``; and the corner
    ``b' = 0``, ``w'_{not S} = 0``. Returns every candidate point (rows); the caller keeps the closest
    feasible one, which is the KKT point (the problem is convex, its KKT point is among the rows).
    """
    inside, outside = np.sort(w[s]), -np.sort(-w[~s])
    sa = np.concatenate([[0.0], np.cumsum(inside)])  # S_A for a = 0..|S|
    sp = np.concatenate([[0.0], np.cumsum(outside)])  # S_P for p = 0..|not S|
    a = np.arange(inside.size + 1, dtype=np.float64)
    p = np.arange(1, outside.size + 1, dtype=np.float64)
    b_free = (b + sa) / (1 + a)
    nu_free = np.zeros_like(b_free)
    b_tight = (p[None, :] * (b + sa[:, None]) + sp[None, 1:]) / (p[None, :] * (1 + a[:, None]) + 1)
    nu_tight = (sp[None, 1:] - b_tight) / p[None, :]
    corner_nu = outside[0] if outside.size else 0.0
    bias = np.concatenate([b_free, b_tight.ravel(), [0.0]])
    nu = np.concatenate([nu_free, nu_tight.ravel(), [corner_nu]])
    points = np.where(s, np.maximum(w, bias[:, None]), np.maximum(w - nu[:, None], 0.0))
    return points, bias


def _erosion_candidates(w: np.ndarray, b: float, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """KKT points of ``min ||w'-w||^2 + (b'-b)^2`` s.t. ``sum(w') - min_S w' <= b' <= sum_S w'``, ``w' >= 0``.

    With ``D = sum(w') - b'``, multipliers ``mu_s`` (for ``D <= w'_s``, total ``M``) and ``nu`` (for
    ``b' <= sum_S w'``), stationarity gives ``w'_k = (w_k - M)_+`` outside ``S``,
    ``w'_s = max(w_s + delta, D)`` in ``S`` with ``delta = nu - M``, and ``b' = b + M - nu``.
    Let ``A`` be the ``a`` smallest weights of ``S`` (clamped to ``D``, sum ``S_A``), ``r = |S| - a``
    and ``S_R`` the sum of the others, ``P`` the ``p`` largest outside ``S`` (positive, sum ``S_P``).

    - ``nu = 0``: ``D ((1-a)^2 + a(p+r+1)) = (1-a)(S_P + S_R - b) + (p+r+1) S_A``,
      ``M = (S_P + S_R - b - (1-a) D) / (p+r+1)``, ``delta = -M``, ``b' = b + M``.
    - ``nu > 0`` (``sum_S w' = b'``, so ``sum_{not S} w' = D``): with ``q = b - S_R``,
      ``det = -(p a^2 + (r+1)(1+pa))``: ``D = (-q p a - (r+1)(S_P + p S_A)) / det``,
      ``delta = (a (S_P + p S_A) - (1+pa) q) / det``, ``M = a D - S_A - a delta``, ``b' = b - delta``.

    Returns every candidate point (rows); the caller keeps the closest feasible one.
    """
    inside, outside = np.sort(w[s]), -np.sort(-w[~s])
    sa = np.concatenate([[0.0], np.cumsum(inside)])[:, None]  # (a, 1)
    a = np.arange(inside.size + 1, dtype=np.float64)[:, None]
    r = inside.size - a
    sr = inside.sum() - sa
    sp = np.concatenate([[0.0], np.cumsum(outside)])[None, :]  # (1, p)
    p = np.arange(outside.size + 1, dtype=np.float64)[None, :]
    # nu = 0
    d0 = ((1 - a) * (sp + sr - b) + (p + r + 1) * sa) / ((1 - a) ** 2 + a * (p + r + 1))
    m0 = (sp + sr - b - (1 - a) * d0) / (p + r + 1)
    delta0, bias0 = -m0, b + m0
    # nu > 0
    q = b - sr
    det = -(p * a * a + (r + 1) * (1 + p * a))
    d1 = (-q * p * a - (r + 1) * (sp + p * sa)) / det
    delta1 = (a * (sp + p * sa) - (1 + p * a) * q) / det
    m1 = a * d1 - sa - a * delta1
    bias1 = b - delta1
    d = np.concatenate([d0.ravel(), d1.ravel()])
    m = np.concatenate([m0.ravel(), m1.ravel()])
    delta = np.concatenate([delta0.ravel(), delta1.ravel()])
    bias = np.concatenate([bias0.ravel(), bias1.ravel()])
    points = np.where(
        s, np.maximum(w + delta[:, None], d[:, None]), np.maximum(w - np.maximum(m, 0.0)[:, None], 0.0)
    )
    return points, bias


def _feasible(points: np.ndarray, bias: np.ndarray, s: np.ndarray, operation: str) -> np.ndarray:
    """Closure of the activation constraints (``<`` read as ``<=``), with a rounding tolerance."""
    scale = 1.0 + np.abs(points).sum(axis=-1) + np.abs(bias)
    tol = 1e-10 * scale
    smallest = np.where(s, points, np.inf).min(axis=-1)
    inside = np.where(s, points, 0.0).sum(axis=-1)
    ok = np.all(points >= 0, axis=-1)
    if operation == DILATION:
        outside = np.where(s, 0.0, points).sum(axis=-1)
        return ok & (outside <= bias + tol) & (bias <= smallest + tol) & (bias >= -tol)
    total = points.sum(axis=-1)
    return ok & (total - smallest <= bias + tol) & (bias <= inside + tol)


def project_activable(
    w: object, b: float, s: object, operation: Operation
) -> tuple[np.ndarray, float, float]:
    """Closest parameters ``(w', b')`` that make one neuron the ``operation`` by ``S``.

    Solves ``min ||w' - w||^2 + (b' - b)^2`` subject to the activation constraints of ``operation``
    by ``S`` (their closure: ``<`` read as ``<=``, so the infimum is attained) and ``w' >= 0``, in
    closed form: the KKT conditions fix ``(w', b')`` once the active sets are known, the active sets
    are prefixes of the sorted weights (``O(n^2)`` candidates), and the closest feasible candidate is
    the solution (see ``_dilation_candidates`` and ``_erosion_candidates`` for the formulas).

    Parameters
    ----------
    w : array of shape (n,)
        Non-negative weights of one neuron.
    b : float
        Its bias.
    s : array of bool, shape (n,)
        Non-empty structuring element.
    operation : {"dilation", "erosion"}

    Returns
    -------
    w_proj : numpy.ndarray of shape (n,)
    b_proj : float
    distance2 : float
        ``||w_proj - w||^2 + (b_proj - b)^2``.

    Examples
    --------
    >>> w_proj, b_proj, d2 = project_activable([2.0, 2.0, 1.0], 1.0, [True, True, False], "dilation")
    >>> w_proj.tolist(), b_proj, d2  # already a dilation by S (1 <= 1 < 2): nothing moves
    ([2.0, 2.0, 1.0], 1.0, 0.0)
    """
    w, bb = _weights(w, b)
    if w.ndim != 1:
        raise ValueError(f"w must be one neuron's weights, shape (n,), got {w.shape}")
    s = np.asarray(s, dtype=bool)
    if s.shape != w.shape or not s.any():
        raise ValueError(f"s must be a non-empty boolean mask of shape {w.shape}")
    if np.any(w < 0):
        raise ValueError("w must be non-negative")
    b = float(bb)
    if _operation(operation) == DILATION:
        points, bias = _dilation_candidates(w, b, s)
    else:
        points, bias = _erosion_candidates(w, b, s)
    distance2 = ((points - w) ** 2).sum(axis=-1) + (bias - b) ** 2
    distance2 = np.where(_feasible(points, bias, s, operation), distance2, np.inf)
    best = int(np.argmin(distance2))
    return points[best], float(bias[best]), float(distance2[best])


def activable_projection(w: object, b: float) -> tuple[str, np.ndarray, np.ndarray, float, float]:
    """Closest activable parameters over the candidates ``S = {w >= w_k}`` and both operations.

    Returns
    -------
    operation : str
    S : numpy.ndarray of bool, shape (n,)
    w_proj : numpy.ndarray of shape (n,)
    b_proj : float
    distance2 : float
        0 exactly when the neuron is already activated.
    """
    w, bb = _weights(w, b)
    if w.ndim != 1:
        raise ValueError(f"w must be one neuron's weights, shape (n,), got {w.shape}")
    activated, is_erosion, s = activation_test(w, bb)
    if activated and s.any():
        return (EROSION if is_erosion else DILATION), s, w.copy(), float(bb), 0.0
    best: tuple[str, np.ndarray, np.ndarray, float, float] | None = None
    for threshold in np.unique(w)[::-1]:
        candidate = w >= threshold
        for operation in (DILATION, EROSION):
            w_proj, b_proj, d2 = project_activable(w, float(bb), candidate, operation)
            if best is None or d2 < best[4]:
                best = (operation, candidate, w_proj, b_proj, d2)
    assert best is not None
    return best


def activable_targets(weights: object, biases: object) -> tuple[np.ndarray, np.ndarray]:
    """The closest activable parameters ``(W*, B*)`` of every neuron (rows of ``weights``, entries of
    ``biases``), by :func:`activable_projection`: the targets of the activable-set regularisation."""
    pairs = zip(np.asarray(weights), np.asarray(biases), strict=True)
    targets = [activable_projection(w, b) for w, b in pairs]
    return np.stack([t[2] for t in targets]), np.array([t[3] for t in targets])


def binarize(w: object, b: object, method: str = "constant") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Operation and structuring element of each neuron: exact if activated, else ``method``'s guess.

    Parameters
    ----------
    w : array of shape (..., n)
    b : array of shape (...)
    method : {"constant", "activable", "threshold_2/3", "threshold_3/4"}
        ``"constant"`` (default): ``S`` from the projection onto the constant sets, the operation from
        ``find_operation``; ``"activable"``: operation and ``S`` of the closest activable parameters;
        thresholds: ``S = {w >= r mean(w)}``, the operation from ``find_operation``.

    Returns
    -------
    is_erosion : numpy.ndarray of bool, shape (...)
    S : numpy.ndarray of bool, shape (..., n)
    activated : numpy.ndarray of bool, shape (...)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    w, b = _weights(w, b)
    activated, is_erosion, s = activation_test(w, b)
    todo = ~activated
    if not todo.any():
        return is_erosion, s, activated
    s, is_erosion = s.copy(), is_erosion.copy()
    if method == "constant":
        s[todo] = project_constant_set(w[todo])[0]
    elif method == "activable":
        for index in np.ndindex(todo.shape):
            if not todo[index]:
                continue
            operation, s_best, *_ = activable_projection(w[index], float(b[index]))
            s[index], is_erosion[index] = s_best, operation == EROSION
    else:
        s[todo] = threshold_set(w[todo], 2.0 / 3.0 if method == "threshold_2/3" else 0.75)
    return is_erosion, s, activated
