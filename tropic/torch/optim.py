"""Tropical zeros under ``torch.optim``: weight decay and weight averaging keep them exact.

A max-plus weight entry that is exactly ``-inf`` (``+inf`` for min-plus) is the tropical zero: no
connection (sparse initialisation, ``tropic.torch.prune.remove``). Its gradient is exactly 0, so a
plain optimiser step leaves it alone, but two things users reach for turn it into NaN:

* **weight decay** of the coupled (L2) kind adds ``weight_decay * p`` to the gradient, and
  ``-inf - lr * (weight_decay * -inf)`` is ``-inf + inf = NaN`` (``SGD``, ``Adam``, ``RMSprop``,
  ``Adagrad``, ... with ``weight_decay > 0``);
* **weight averaging** (``torch.optim.swa_utils.AveragedModel``, SWA and EMA) computes
  ``avg + w * (p - avg)``, and ``-inf - (-inf)`` is NaN.

This module, loaded with :mod:`tropic.torch`, handles both:

* every ``torch.optim`` optimiser: after a step of a parameter group with ``weight_decay != 0``, the
  entries of tropic layers' parameters that were not finite before the step are written back, and the
  optimiser's per-entry state there (momentum, moments), which the decay made infinite or NaN, is
  reset to 0. This is the contract of
  :mod:`tropic.nn.optim` (non-finite entries are never updated); finite entries are untouched, so
  every other value is bitwise what torch computes. It is a global step hook of ``torch.optim``
  (:func:`torch.optim.optimizer.register_optimizer_step_pre_hook`), acting only on parameters made
  by tropic layers (they carry their tropical zero) and costing nothing for groups without decay.
* :class:`AveragedModel`: torch's ``AveragedModel`` (same arguments, any ``avg_fn`` /
  ``multi_avg_fn``), except that an entry where the average and the model hold the same infinity
  keeps it. Use it in place of torch's for SWA and EMA of tropic models.

Which ``torch.optim`` settings are safe for models with tropical zeros: every optimiser with
``weight_decay=0``; with decay, every optimiser once :mod:`tropic.torch` is imported (the hook); the
decoupled decay of ``AdamW`` (``p *= 1 - lr * weight_decay``) keeps ``-inf`` by itself as long as
``lr * weight_decay < 1``. Parameters that wrappers replace by their own (FSDP's sharded
parameters) lose the mark the hook reads: there, use ``weight_decay=0`` on the tropical weights
(a parameter group of their own) or the decoupled decay of ``AdamW``.

Examples
--------
>>> import torch
>>> from tropic.torch import nn as tnn, optim
>>> layer = tnn.MaxPlus(4, 3, init="sparse", count=6, seed=0)
>>> sgd = torch.optim.SGD(layer.parameters(), lr=0.1, weight_decay=1e-2)
>>> layer(torch.randn(2, 4)).sum().backward()
>>> sgd.step()
>>> bool(torch.isnan(layer.weight).any()), int(torch.isinf(layer.weight).sum())
(False, 6)
>>> ema = optim.AveragedModel(layer, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.9))
>>> ema.update_parameters(layer); ema.update_parameters(layer)
>>> int(torch.isinf(ema.module.weight).sum())
6
"""

from __future__ import annotations

import itertools
import weakref
from typing import Any

import torch
from torch.optim import swa_utils
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

__all__ = ["AveragedModel", "has_tropical_zero"]

# optimizer -> [(parameter, its non-finite entries before the step, its values before the step)]
_BEFORE_STEP: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def has_tropical_zero(p: torch.Tensor) -> bool:
    """Whether ``p`` is a parameter of a tropic layer whose zero is not 0 (a max-plus or min-plus
    weight: its non-finite entries are tropical zeros)."""
    return getattr(p, "_tropic_zero", 0.0) != 0.0


def _decayed_tropical_parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [
        p
        for group in optimizer.param_groups
        if group.get("weight_decay")  # 0, absent, None: no decay, nothing to keep
        for p in group["params"]
        if has_tropical_zero(p)
    ]


def _record(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    params = _decayed_tropical_parameters(optimizer)
    if not params:
        return
    with torch.no_grad():
        _BEFORE_STEP[optimizer] = [(p, ~torch.isfinite(p), p.detach().clone()) for p in params]


def _restore(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    recorded = _BEFORE_STEP.pop(optimizer, None)
    if not recorded:
        return
    with torch.no_grad():
        for p, zeros, before in recorded:
            p.copy_(torch.where(zeros, before, p))
            # The decay left inf or NaN in the per-entry state there (momentum, moments): reset it
            # to 0, so that no inf or NaN stays in the optimiser (its state_dict, its checks).
            for value in optimizer.state.get(p, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.is_floating_point():
                    value.masked_fill_(zeros, 0)


# A pre-hook records, a post-hook restores. Nothing changes before the step, so a closure that the
# step calls (LBFGS, SGD(closure)) sees the model as it is, and a step that raises leaves it intact.
register_optimizer_step_pre_hook(_record)
register_optimizer_step_post_hook(_restore)


class AveragedModel(swa_utils.AveragedModel):
    """``torch.optim.swa_utils.AveragedModel`` that keeps tropical zeros exact.

    .. math:: \\bar p \\leftarrow \\begin{cases} p & \\text{if } \\bar p = p = \\pm\\infty \\\\
              \\text{avg}(\\bar p, p, n) & \\text{otherwise} \\end{cases}

    where ``avg`` is the averaging of torch's class (``avg_fn`` / ``multi_avg_fn``; default: the
    running mean of SWA). torch's own averaging gives ``-inf - (-inf) = NaN`` at every entry that is
    ``-inf`` in both. Same arguments and behaviour as torch's class otherwise.
    """

    def _pairs(self, model: torch.nn.Module) -> Any:
        if self.use_buffers:
            own = itertools.chain(self.module.parameters(), self.module.buffers())
            theirs = itertools.chain(model.parameters(), model.buffers())
        else:
            own, theirs = self.parameters(), model.parameters()
        return zip(own, theirs, strict=False)

    def update_parameters(self, model: torch.nn.Module) -> None:
        kept = []
        with torch.no_grad():
            for averaged, current in self._pairs(model):
                if averaged.is_floating_point():
                    current = current.detach().to(averaged.device)
                    kept.append((averaged, torch.isinf(current) & (averaged == current), current))
        super().update_parameters(model)
        with torch.no_grad():
            for averaged, same, current in kept:
                averaged.copy_(torch.where(same, current, averaged))
