"""Unstructured magnitude pruning (per layer and global) with masks that persist through training.

Which entries are "small" depends on the algebra of the weight (Fotopoulos et al. 2025):

* linear weights (``param.zero == 0``): the smallest ``|w|`` are set to 0 (L1 magnitude pruning);
* max-plus weights (``param.zero == -inf``): the *most negative* ``w`` are set to ``-inf``, the
  tropical zero (such an entry rarely wins the max, so removing it changes the least);
* min-plus weights (``param.zero == +inf``): the *most positive* ``w`` are set to ``+inf``.

The mask (True = kept) is registered as the buffer ``"<name>_mask"`` of the module (so it is saved
and loaded with the state dict) and linked as ``param.mask``; every optimiser step re-applies it, so
pruned entries stay pruned through further training. Entries already equal to the zero (e.g. the
``-inf`` entries of a sparse max-plus layer, which optimisers never change) count as pruned and are
pruned first.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..core._array_api import array_namespace
from ..core.pruning import keep_mask, keep_rows, pruning_score, saliency, saliency_score
from .module import Module, Parameter
from .optim import apply_mask

__all__ = ["global_unstructured", "is_pruned", "l1_unstructured", "remove", "snip", "sparsity_report"]


def l1_unstructured(module: Module, amount: float | int, name: str = "weight") -> Module:
    """Prune the parameter ``name`` of ``module`` so that ``amount`` of its entries are pruned.

    Parameters
    ----------
    module : Module
    amount : float in [0, 1] or int
        Fraction of *all* entries of the parameter that are pruned afterwards (rounded to the nearest
        count), or that count itself. Entries pruned earlier stay pruned (the mask only shrinks).
    name : str
        The parameter (default ``"weight"``).

    Returns
    -------
    module

    Notes
    -----
    Scores (lowest pruned first; ties broken by the lowest flat index): ``|w|`` for a linear weight,
    ``w`` for a max-plus weight, ``-w`` for a min-plus weight; entries already pruned or equal to the
    zero score ``-inf``.

    Examples
    --------
    >>> import numpy as np
    >>> import tropic.nn as nn
    >>> layer = nn.MaxPlus(2, 2, seed=0)
    >>> layer.weight.data[...] = [[0.5, -2.0], [1.0, -1.0]]
    >>> nn.pruning.l1_unstructured(layer, 0.5).weight.data
    array([[ 0.5, -inf],
           [ 1. , -inf]], dtype=float32)
    """
    param = _param(module, name)
    count = _count(amount, param.size)
    keep = _keep(_scores(param).reshape(-1), count)
    _set_mask(module, name, param, keep.reshape(param.shape))
    return module


def global_unstructured(targets: Iterable[tuple[Module, str]], amount: float | int) -> None:
    """Prune ``amount`` of all entries of several parameters together (one ranking for all).

    Parameters
    ----------
    targets : iterable of (module, name)
        The parameters, all of one kind (all linear, all max-plus or all min-plus: scores of different
        algebras are not comparable, so mixing raises ValueError).
    amount : float in [0, 1] or int
        Fraction of the total number of entries (or that count) pruned afterwards; layers with
        smaller scores lose more.
    """
    targets = list(targets)
    if not targets:
        raise ValueError("targets is empty")
    params = [_param(m, n) for m, n in targets]
    zeros = {p.zero for p in params}
    if len(zeros) > 1:
        raise ValueError(f"cannot rank parameters of different algebras together (zeros {sorted(zeros)})")
    scores = [_scores(p).reshape(-1) for p in params]
    flat = np.concatenate(scores)
    keep = _keep(flat, _count(amount, flat.size))
    start = 0
    for (module, name), p in zip(targets, params, strict=True):
        _set_mask(module, name, p, keep[start : start + p.size].reshape(p.shape))
        start += p.size


def snip(
    model: Module,
    batches: Iterable[tuple[Any, Any]],
    loss: Callable[[Any, Any], Any],
    amount: float | int,
    *,
    parameters: Iterable[tuple[Module, str]] | None = None,
    keep_rows_of: Iterable[tuple[Module, str]] = (),
) -> None:
    """SNIP: prune by connection sensitivity, one ranking over parameters of every algebra.

    The score of an entry is its saliency summed over ``batches`` (Lee et al. 2019, as the DMNN
    paper's code applies it, to biases and activations too):

    .. math:: S(w) = \\sum_b \\left| \\frac{\\partial L_b}{\\partial w} \\, w \\right|

    and the ``amount`` lowest-scored entries of all ``parameters`` together are pruned (set to each
    parameter's zero, held there by the optimisers, as :func:`l1_unstructured`). Entries already at
    a tropical zero or pruned score lowest and count towards ``amount``.

    Parameters
    ----------
    model : Module
        Run in its current mode on each batch; its gradients are cleared before and after.
    batches : iterable of (x, y)
        The data for the saliencies (the paper's code: 10 training batches).
    loss : callable
        ``loss(model(x), y)``, a scalar tensor (e.g. :func:`tropic.nn.losses.cross_entropy`).
    amount : float in [0, 1] or int
        Fraction of all entries (or that count) pruned afterwards.
    parameters : iterable of (module, name), optional
        The parameters ranked; default every parameter of ``model``.
    keep_rows_of : iterable of (module, name)
        Parameters whose every row (last axis) keeps at least one entry, its best-scored (the paper's
        code protects the output layer so, with a random entry; 1-D ones are kept whole).

    Examples
    --------
    >>> import numpy as np
    >>> import tropic.nn as nn
    >>> net = nn.Sequential(nn.MaxPlus(4, 3, seed=0), nn.Linear(3, 2, seed=1))
    >>> x, y = np.ones((5, 4), np.float32), np.array([0, 1, 0, 1, 0])
    >>> nn.pruning.snip(net, [(x, y)], nn.losses.cross_entropy, 0.5)
    >>> nn.pruning.sparsity_report(net)  # a constant input: one weight per max-plus row ever wins
    {'0.weight': (3, 12, 0.25), '1.weight': (6, 6, 1.0)}
    """
    targets = _targets(model, parameters)
    params = [_param(m, n) for m, n in targets]
    totals = [None] * len(params)
    model.zero_grad()
    for x, y in batches:
        loss(model(x), y).backward()
        for i, p in enumerate(params):
            if p.grad is not None:
                part = saliency(array_namespace(data=p.data), p.grad, p.data)
                totals[i] = part if totals[i] is None else totals[i] + part
            p.grad = None
    model.zero_grad()
    scores = [
        saliency_score(np, np.zeros(p.size) if t is None else _numpy(t), _numpy(p.data), p.zero, _mask(p))
        for p, t in zip(params, totals, strict=True)
    ]
    flat = np.concatenate(scores)
    keep = _keep(flat, _count(amount, flat.size))
    protected = {(id(m), n) for m, n in keep_rows_of}
    start = 0
    for (module, name), p, score in zip(targets, params, scores, strict=True):
        part = keep[start : start + p.size]
        if (id(module), name) in protected:
            part = keep_rows(np, part, score, tuple(p.shape))
        _set_mask(module, name, p, part.reshape(p.shape))
        start += p.size


def _targets(model: Module, parameters: Iterable[tuple[Module, str]] | None) -> list[tuple[Module, str]]:
    if parameters is not None:
        targets = list(parameters)
    else:
        seen: set[int] = set()
        targets = []
        for _, module in model.named_modules():
            for name, p in module._parameters.items():
                if isinstance(p, Parameter) and id(p) not in seen:
                    seen.add(id(p))
                    targets.append((module, name))
    if not targets:
        raise ValueError("there are no parameters to prune")
    return targets


def _mask(param: Parameter) -> np.ndarray | None:
    return None if param.mask is None else _numpy(param.mask)


def is_pruned(module: Module, name: str = "weight") -> bool:
    """True if parameter ``name`` of ``module`` has a pruning mask."""
    return f"{name}_mask" in module._buffers and module._buffers[f"{name}_mask"] is not None


def remove(module: Module, name: str = "weight") -> Module:
    """Make the pruning of ``name`` permanent: the pruned entries keep their zero value but the mask is
    dropped (they may then be trained again, except tropical zeros, which optimisers never change)."""
    param = _param(module, name)
    if not is_pruned(module, name):
        raise ValueError(f"{name!r} of {type(module).__name__} is not pruned")
    del module._buffers[f"{name}_mask"]
    param.mask = None
    return module


def sparsity_report(model: Module) -> dict[str, tuple[int, int, float]]:
    """Kept entries of every weight of ``model``.

    Returns
    -------
    dict
        ``{dotted parameter name: (kept, total, kept / total)}`` for every parameter with at least
        two dimensions (layer weights; biases and normalisation parameters are left out), in the
        order of ``named_parameters``. An entry is kept when it differs from the parameter's
        zero (0 for linear weights, ``-inf`` / ``+inf`` for max-plus / min-plus ones) and is not
        masked.
    """
    report = {}
    for name, p in model.named_parameters():
        if p.ndim < 2:
            continue
        kept_mask = _numpy(p.data) != p.zero
        if p.mask is not None:
            kept_mask &= _numpy(p.mask)
        kept = int(np.count_nonzero(kept_mask))
        report[name] = (kept, p.size, kept / p.size if p.size else 0.0)
    return report


def _param(module: Module, name: str) -> Parameter:
    if not isinstance(module, Module):
        raise TypeError(f"module must be a Module, got {type(module).__name__}")
    param = module._parameters.get(name)
    if not isinstance(param, Parameter):
        raise ValueError(f"{type(module).__name__} has no parameter {name!r}")
    return param


def _count(amount: Any, total: int) -> int:
    if isinstance(amount, bool):
        raise TypeError("amount must be a float in [0, 1] or an int count, got a bool")
    if isinstance(amount, (int, np.integer)):
        if not 0 <= amount <= total:
            raise ValueError(f"amount as a count must be in [0, {total}], got {amount}")
        return int(amount)
    if isinstance(amount, (float, np.floating)) and 0.0 <= amount <= 1.0:
        return math.floor(amount * total + 0.5)  # round half up: 0.5 of 3 prunes 2
    raise ValueError(f"amount must be a fraction in [0, 1] or an int count, got {amount!r}")


def _scores(param: Parameter) -> np.ndarray:
    """The tropical pruning score of ``param``'s entries (:func:`tropic.core.pruning.pruning_score`)."""
    mask = None if param.mask is None else _numpy(param.mask)
    return pruning_score(np, _numpy(param.data), param.zero, mask)


def _keep(scores: np.ndarray, count: int) -> np.ndarray:
    return keep_mask(np, scores, count)


def _set_mask(module: Module, name: str, param: Parameter, keep: np.ndarray) -> None:
    xp = array_namespace(data=param.data)
    mask = keep if isinstance(param.data, np.ndarray) else xp.asarray(keep)
    module.register_buffer(f"{name}_mask", mask)
    param.mask = mask
    param.data = apply_mask(param, param.data)


def _numpy(x: Any) -> np.ndarray:
    return np.asarray(x) if isinstance(x, np.ndarray) else np.from_dlpack(x)
