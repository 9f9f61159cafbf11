"""Pruning of tropical layers, compatible with ``torch.nn.utils.prune``.

``torch.nn.utils.prune`` stores ``<name>_orig`` and a 0/1 ``<name>_mask`` and recomputes
``<name> = <name>_orig * <name>_mask`` before every forward pass. For a max-plus weight that gives
0, a live connection, where the pruned entry must be the tropical zero ``-inf`` (``+inf`` for
min-plus). The methods here keep torch's machinery (the same attributes, hooks, ``prune.remove``,
``prune.is_pruned``, iterative pruning through a ``PruningContainer``) and replace only the mask
application: pruned entries become the parameter's tropical zero (:func:`tropic.torch.nn.tropical_zero`).

Ranking, as :mod:`tropic.nn.pruning` (Fotopoulos et al. 2025): the most negative max-plus weights
and the most positive min-plus weights go first; entries already at the zero (the ``-inf`` entries
of a sparse layer) or already pruned rank before everything; ties go to the lowest flat index. A
parameter whose zero is 0 (linear weights, the shared weight of an ``MPM``) is pruned by torch's own
``l1_unstructured``.

Examples
--------
>>> import torch
>>> from tropic.torch import nn as tnn, prune
>>> layer = tnn.MaxPlus(2, 2, seed=0)
>>> with torch.no_grad():
...     _ = layer.weight.copy_(torch.tensor([[0.5, -2.0], [1.0, -1.0]]))
>>> layer = prune.l1_unstructured(layer, "weight", amount=0.5)
>>> layer.weight
tensor([[0.5000,   -inf],
        [1.0000,   -inf]], grad_fn=<WhereBackward0>)
>>> prune.sparsity_report(layer)
{'weight': (2, 4, 0.5)}
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import array_api_compat.torch as torch_namespace
import torch
from torch.nn.utils import prune as _prune
from torch.nn.utils.prune import is_pruned, remove

from tropic.core.pruning import keep_mask, keep_rows, pruning_score, saliency, saliency_score
from tropic.nn.pruning import _count

from .nn.convert import tropical_zero

__all__ = [
    "TropicalFromMask",
    "TropicalPruningContainer",
    "TropicalUnstructured",
    "custom_from_mask",
    "global_unstructured",
    "is_pruned",
    "l1_unstructured",
    "remove",
    "snip",
    "sparsity_report",
]


class _TropicalMask:
    """``apply_mask`` that writes the tropical zero where the mask is 0 (instead of multiplying)."""

    zero: float

    def apply_mask(self, module: torch.nn.Module) -> torch.Tensor:
        mask = getattr(module, self._tensor_name + "_mask")
        orig = getattr(module, self._tensor_name + "_orig")
        return torch.where(mask != 0, orig, self.zero)


class TropicalPruningContainer(_TropicalMask, _prune.PruningContainer):
    """``PruningContainer`` (iterative pruning of one parameter) with the tropical mask application."""

    def __init__(self, *args: Any, zero: float) -> None:
        super().__init__(*args)
        self.zero = zero


class _TropicalMethod(_TropicalMask, _prune.BasePruningMethod):
    @classmethod
    def apply(cls, module: torch.nn.Module, name: str, *args: Any, **kwargs: Any) -> Any:
        zero = kwargs.setdefault("zero", tropical_zero(module, name))
        # torch wraps an earlier pruning of the same parameter into a PruningContainer, whose
        # apply_mask multiplies: put a tropical container in its place first.
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, _prune.BasePruningMethod) and hook._tensor_name == name:
                if not isinstance(hook, TropicalPruningContainer):
                    methods = tuple(hook) if isinstance(hook, _prune.PruningContainer) else (hook,)
                    container = TropicalPruningContainer(methods[0], zero=zero)
                    for method in methods[1:]:
                        container.add_pruning_method(method)
                    module._forward_pre_hooks[key] = container
        return super().apply(module, name, *args, **kwargs)


class TropicalUnstructured(_TropicalMethod):
    """Magnitude pruning in the tropical sense: the ``amount`` lowest-ranked entries are set to ``zero``.

    Parameters
    ----------
    amount : float in [0, 1] or int
        Fraction (rounded half up, as tropic.nn.pruning) or number of the entries to prune; counted
        among the entries not pruned yet, like torch's methods when pruning iteratively.
    zero : float
        ``-inf`` (max-plus: the most negative weights go first) or ``+inf`` (min-plus: the most
        positive go first).
    """

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount: float | int, zero: float = -float("inf")) -> None:
        if zero not in (-float("inf"), float("inf")):
            raise ValueError(f"zero must be -inf or +inf for tropical pruning, got {zero!r}")
        self.amount, self.zero = amount, zero

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        keep = _keep(_scores(t, default_mask, self.zero), _count(self.amount, t.numel()))
        return default_mask * keep.reshape(default_mask.shape).to(default_mask.dtype)


class TropicalFromMask(_TropicalMethod):
    """Prune with a given mask (0/False = pruned), writing the tropical ``zero`` there."""

    PRUNING_TYPE = "global"

    def __init__(self, mask: torch.Tensor, zero: float = -float("inf")) -> None:
        self.mask, self.zero = mask, zero

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        if self.mask.shape != default_mask.shape:
            raise ValueError(
                f"mask must have shape {tuple(default_mask.shape)}, got {tuple(self.mask.shape)}"
            )
        return default_mask * self.mask.to(dtype=default_mask.dtype, device=default_mask.device)


def _scores(t: torch.Tensor, default_mask: torch.Tensor, zero: float) -> torch.Tensor:
    """The tropical pruning score (:func:`tropic.core.pruning.pruning_score`); masked entries dead."""
    return pruning_score(torch_namespace, t.detach(), zero, default_mask != 0)


def _keep(scores: torch.Tensor, count: int) -> torch.Tensor:
    return keep_mask(torch_namespace, scores, count)


def l1_unstructured(
    module: torch.nn.Module, name: str, amount: float | int, importance_scores: torch.Tensor | None = None
) -> torch.nn.Module:
    """``torch.nn.utils.prune.l1_unstructured`` that knows tropical weights.

    A parameter whose tropical zero is ``-inf`` / ``+inf`` (see :func:`tropic.torch.nn.tropical_zero`)
    is pruned with :class:`TropicalUnstructured` (pruned entries become that zero); any other
    parameter (linear weights, torch's own modules) with torch's ``l1_unstructured``.

    Returns
    -------
    module
    """
    zero = tropical_zero(module, name)
    if zero == 0.0:
        return _prune.l1_unstructured(module, name, amount, importance_scores=importance_scores)
    TropicalUnstructured.apply(module, name, amount, zero=zero, importance_scores=importance_scores)
    return module


def custom_from_mask(module: torch.nn.Module, name: str, mask: torch.Tensor) -> torch.nn.Module:
    """``torch.nn.utils.prune.custom_from_mask`` that writes the tropical zero for tropical weights."""
    zero = tropical_zero(module, name)
    if zero == 0.0:
        return _prune.custom_from_mask(module, name, mask)
    TropicalFromMask.apply(module, name, mask, zero=zero)
    return module


def global_unstructured(parameters: Iterable[tuple[torch.nn.Module, str]], amount: float | int) -> None:
    """Prune ``amount`` of all entries of several parameters together (one ranking for all).

    The parameters must share one algebra (all max-plus, all min-plus, or all linear: scores of
    different algebras are not comparable, mixing raises ValueError). Linear parameters go to
    ``torch.nn.utils.prune.global_unstructured`` with L1 ranking. Tropical ones are ranked as in
    :func:`l1_unstructured`, over all entries together (pruned entries count towards ``amount``,
    as :func:`tropic.nn.pruning.global_unstructured`), and each gets its part of the mask.
    """
    parameters = list(parameters)
    if not parameters:
        raise ValueError("parameters is empty")
    zeros = {tropical_zero(m, n) for m, n in parameters}
    if len(zeros) > 1:
        raise ValueError(f"cannot rank parameters of different algebras together (zeros {sorted(zeros)})")
    zero = zeros.pop()
    if zero == 0.0:
        _prune.global_unstructured(parameters, pruning_method=_prune.L1Unstructured, amount=amount)
        return
    scores, sizes = [], []
    for module, name in parameters:
        t = getattr(module, name)
        mask = getattr(module, f"{name}_mask", None)
        scores.append(_scores(t, torch.ones_like(t) if mask is None else mask, zero))
        sizes.append(t.numel())
    flat = torch.cat(scores)
    keep = _keep(flat, _count(amount, flat.numel()))
    for (module, name), part in zip(parameters, torch.split(keep, sizes), strict=True):
        TropicalFromMask.apply(module, name, part.reshape(getattr(module, name).shape), zero=zero)


def snip(
    model: torch.nn.Module,
    batches: Iterable[tuple[Any, Any]],
    loss: Callable[[Any, Any], torch.Tensor],
    amount: float | int,
    *,
    parameters: Iterable[tuple[torch.nn.Module, str]] | None = None,
    keep_rows_of: Iterable[tuple[torch.nn.Module, str]] = (),
) -> None:
    """SNIP on a torch model: :func:`tropic.nn.pruning.snip` (the same scores, ranking and masks),
    with pruned entries written as each parameter's zero through :func:`custom_from_mask`.

    ``parameters`` defaults to every parameter of ``model`` (under its own name when already
    pruned); their gradients are cleared before and after.
    """
    targets = _named_targets(model) if parameters is None else list(parameters)
    if not targets:
        raise ValueError("there are no parameters to prune")
    # the trained tensor: "<name>_orig" once torch's pruning has reparametrised the parameter
    leaves = [m._parameters.get(f"{n}_orig", m._parameters.get(n)) for m, n in targets]
    totals: list[torch.Tensor | None] = [None] * len(targets)
    model.zero_grad(set_to_none=True)
    for x, y in batches:
        loss(model(x), y).backward()
        for i, leaf in enumerate(leaves):
            if leaf.grad is not None:
                part = saliency(torch_namespace, leaf.grad.detach(), leaf.detach())
                totals[i] = part if totals[i] is None else totals[i] + part
        model.zero_grad(set_to_none=True)
    scores = []
    for (module, name), total in zip(targets, totals, strict=True):
        value = getattr(module, name).detach()
        mask = getattr(module, f"{name}_mask", None)
        total = torch.zeros(value.shape, dtype=torch.float64, device=value.device) if total is None else total
        scores.append(saliency_score(torch_namespace, total, value, tropical_zero(module, name), mask))
    flat = torch.cat(scores)
    keep = _keep(flat, _count(amount, flat.numel()))
    protected = {(id(m), n) for m, n in keep_rows_of}
    for (module, name), part, score in zip(targets, torch.split(keep, [s.numel() for s in scores]), scores,
                                           strict=True):  # fmt: skip
        shape = tuple(getattr(module, name).shape)
        if (id(module), name) in protected:
            part = keep_rows(torch_namespace, part, score, shape)
        custom_from_mask(module, name, part.reshape(shape))


def _named_targets(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str]]:
    """``(module, name)`` of every parameter of ``model``, a pruned one under its own name."""
    targets, seen = [], set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            base = pname[: -len("_orig")]
            pruned = pname.endswith("_orig") and f"{base}_mask" in module._buffers
            targets.append((module, base if pruned else pname))
    return targets


def sparsity_report(model: torch.nn.Module) -> dict[str, tuple[int, int, float]]:
    """Kept entries of every weight (parameter with at least two dimensions) of ``model``.

    Returns
    -------
    dict
        ``{dotted name: (kept, total, kept / total)}``; a pruned parameter is reported under its own
        name (``"0.weight"``, not ``"0.weight_orig"``) from its pruned value. An entry is kept when it
        differs from the parameter's zero (0, ``-inf`` or ``+inf``) and is not masked.
    """
    report = {}
    for prefix, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            base = pname[: -len("_orig")]
            name = base if pname.endswith("_orig") and f"{base}_mask" in module._buffers else pname
            if p.ndim < 2:
                continue
            value = getattr(module, name)
            kept_mask = value.detach() != tropical_zero(module, name)
            mask = getattr(module, f"{name}_mask", None)
            if mask is not None:
                kept_mask &= mask != 0
            kept = int(kept_mask.sum())
            report[f"{prefix}.{name}" if prefix else name] = (
                kept,
                p.numel(),
                kept / p.numel() if p.numel() else 0.0,
            )
    return report
