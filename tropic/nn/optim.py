"""Optimisers (``SGD``, ``Adam``, ``AdamW``) and learning-rate schedulers (``StepLR``, ``CosineAnnealingLR``).

Two rules hold for every optimiser, so that tropical weights behave:

* non-finite entries (the tropical zeros ``-inf`` / ``+inf`` of max-plus / min-plus weights) are never
  changed: their gradient is 0, and weight decay, which would turn ``-inf * 0`` or ``-inf - (-inf)``
  into NaN, is applied to finite entries only;
* a parameter's pruning mask (``param.mask``, set by :mod:`tropic.nn.pruning`) is re-applied after
  every step: entries where it is False are reset to ``param.zero``.

And one check: a NaN or infinite gradient on a finite entry makes :meth:`Optimizer.step` raise
:class:`FloatingPointError` naming the parameter and the step, before anything is updated (see
:meth:`Optimizer.step` for why an error and not a warning).

Updates build new arrays (``p.data = ...``); nothing is modified in place. State (momentum, moments)
is kept per parameter in the parameter's dtype and array library.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ..autodiff import Tensor
from ..core._array_api import Array, array_namespace
from ..core.checks import positive_int

__all__ = ["SGD", "Adam", "AdamW", "CosineAnnealingLR", "Optimizer", "StepLR"]


class Optimizer:
    """Base class: holds the parameters, the learning rate ``lr`` and per-parameter ``state``.

    ``params`` is an iterable of parameters, or of ``(name, parameter)`` pairs such as
    ``model.named_parameters()``: the names then appear in the errors of :meth:`step` (which
    otherwise say ``params[i]`` and the shape).

    Subclasses implement ``_update(i, p, grad) -> new data`` for one parameter; :meth:`step`
    applies it to every parameter with a gradient, then the finite-entries and mask rules.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[tuple[str, Tensor]], lr: float) -> None:
        items = list(params)
        self.names: list[str | None] = [None] * len(items)
        for i, item in enumerate(items):
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                self.names[i], items[i] = item
        self.params = items
        if not self.params:
            raise ValueError("params is empty: the optimiser has nothing to train")
        for i, p in enumerate(self.params):
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise TypeError(f"params[{i}] must be a Tensor with requires_grad=True, got {p!r}")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("params contains the same parameter twice")
        self.lr = _non_negative("lr", lr)
        self.initial_lr = self.lr
        self.state: list[dict[str, Any]] = [{} for _ in self.params]
        self.steps = 0

    def zero_grad(self) -> None:
        """Forget every parameter's gradient (``grad = None``)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient (one optimisation step).

        Raises
        ------
        FloatingPointError
            A gradient holds NaN or an infinity where its parameter is finite. The message names the
            parameter (its name when the optimiser was given ``named_parameters()``, else
            ``params[i]`` and its shape), the number of such entries and the step (1 for the first
            call). Every gradient is checked before any parameter or state changes, so after the
            error the model and the optimiser are exactly as before the call: ``zero_grad()`` and
            go on to skip the batch, or stop and look for the source (a NaN in the data, a log of
            0, a learning rate that made the loss overflow).

        Notes
        -----
        An error rather than a warning: one NaN gradient makes that weight NaN for good (every later
        update of it is NaN, and through the next forward pass it reaches every weight downstream),
        so a warning would leave a model that only ever outputs NaN, found epochs later. Gradients
        on entries that are not finite (the tropical zeros ``-inf`` / ``+inf`` of max-plus and
        min-plus weights, which send no gradient and are never updated) are ignored, as before.
        """
        self._check_gradients()
        self.steps += 1
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            xp = array_namespace(data=p.data)
            old = p.data
            finite = xp.isfinite(old)
            grad = xp.where(finite, p.grad, xp.zeros_like(p.grad))
            new = self._update(i, xp, old, finite, grad)
            if new.dtype != old.dtype:  # e.g. a float64 gradient: the parameter keeps its dtype
                new = xp.astype(new, old.dtype)
            new = xp.where(finite, new, old)  # tropical zeros stay exactly where they are
            p.data = apply_mask(p, new)

    def _check_gradients(self) -> None:
        """Raise :class:`FloatingPointError` for the first parameter with a non-finite gradient on a
        finite entry (see :meth:`step`)."""
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            xp = array_namespace(data=p.data)
            bad = xp.logical_and(xp.isfinite(p.data), xp.logical_not(xp.isfinite(p.grad)))
            if not bool(xp.any(bad)):
                continue
            nan = int(xp.sum(xp.astype(xp.logical_and(bad, xp.isnan(p.grad)), xp.int64)))
            inf = int(xp.sum(xp.astype(bad, xp.int64))) - nan
            name = repr(self.names[i]) if self.names[i] is not None else f"params[{i}]"
            raise FloatingPointError(
                f"step {self.steps + 1}: the gradient of parameter {name} (shape {tuple(p.shape)}) "
                f"holds {nan} NaN and {inf} infinite entries where the parameter is finite; nothing "
                f"was updated (zero_grad() and continue to skip this batch)"
            )

    def _update(self, i: int, xp: Any, p: Array, finite: Array, grad: Array) -> Array:
        raise NotImplementedError

    def _decayed(self, xp: Any, p: Array, finite: Array, grad: Array, weight_decay: float) -> Array:
        # L2 decay added to the gradient, finite entries only (no -inf * wd).
        if weight_decay == 0:
            return grad
        return grad + weight_decay * xp.where(finite, p, xp.zeros_like(p))


def apply_mask(p: Any, data: Array) -> Array:
    """``data`` with the entries that ``p.mask`` prunes set to ``p.zero`` (``data`` if no mask)."""
    mask = getattr(p, "mask", None)
    if mask is None:
        return data
    xp = array_namespace(data=data)
    return xp.where(mask, data, xp.asarray(p.zero, dtype=data.dtype))


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov momentum and L2 weight decay (PyTorch's rule).

    .. math:: d_t = g_t + \\lambda p_{t-1}, \\quad b_t = \\mu b_{t-1} + (1 - \\tau) d_t \\;(b_1 = d_1),
              \\quad p_t = p_{t-1} - \\eta \\,(d_t + \\mu b_t \\text{ if Nesterov else } b_t)

    Parameters
    ----------
    params : iterable of Parameter, or of (name, Parameter) pairs
        ``model.parameters()`` or ``model.named_parameters()`` (names then appear in errors).
    lr : float
        ``eta``.
    momentum : float
        ``mu`` (0: plain SGD).
    dampening : float
        ``tau``.
    nesterov : bool
        Needs ``momentum > 0`` and ``dampening == 0``.
    weight_decay : float
        ``lambda``, applied to finite entries only.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        self.momentum = _non_negative("momentum", momentum)
        self.dampening = _non_negative("dampening", dampening)
        self.weight_decay = _non_negative("weight_decay", weight_decay)
        if nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening == 0")
        self.nesterov = bool(nesterov)

    def _update(self, i, xp, p, finite, grad):
        d = self._decayed(xp, p, finite, grad, self.weight_decay)
        if self.momentum:
            state = self.state[i]
            if "momentum_buffer" not in state:
                buf = d
            else:
                buf = self.momentum * state["momentum_buffer"] + (1 - self.dampening) * d
            state["momentum_buffer"] = buf
            d = d + self.momentum * buf if self.nesterov else buf
        return p - self.lr * d


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction and optional L2 weight decay added to the gradient.

    .. math:: m_t = \\beta_1 m_{t-1} + (1 - \\beta_1) g_t, \\quad
              v_t = \\beta_2 v_{t-1} + (1 - \\beta_2) g_t^2,
              \\quad p_t = p_{t-1} - \\eta \\,
              \\frac{m_t / (1 - \\beta_1^t)}{\\sqrt{v_t / (1 - \\beta_2^t)} + \\epsilon}

    with ``g_t = grad + weight_decay * p`` (finite entries). Parameters as in ``torch.optim.Adam``.
    """

    _decoupled = False

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        b1, b2 = betas
        for name, b in (("betas[0]", b1), ("betas[1]", b2)):
            if not 0.0 <= b < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {b!r}")
        self.betas = (float(b1), float(b2))
        self.eps = _non_negative("eps", eps)
        self.weight_decay = _non_negative("weight_decay", weight_decay)

    def _update(self, i, xp, p, finite, grad):
        if self._decoupled:
            if self.weight_decay:
                p = xp.where(finite, p * (1 - self.lr * self.weight_decay), p)
        else:
            grad = self._decayed(xp, p, finite, grad, self.weight_decay)
        b1, b2 = self.betas
        state = self.state[i]
        t = state["step"] = state.get("step", 0) + 1
        if t == 1:
            state["exp_avg"] = xp.zeros_like(p)
            state["exp_avg_sq"] = xp.zeros_like(p)
        m = state["exp_avg"] = b1 * state["exp_avg"] + (1 - b1) * grad
        v = state["exp_avg_sq"] = b2 * state["exp_avg_sq"] + (1 - b2) * (grad * grad)
        step_size = self.lr / (1 - b1**t)
        denom = xp.sqrt(v) / math.sqrt(1 - b2**t) + self.eps
        return p - step_size * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): ``p <- p (1 - eta lambda)`` before the
    Adam step, on finite entries only. Default ``weight_decay=1e-2`` as in ``torch.optim.AdamW``."""

    _decoupled = True

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay)


class _Scheduler:
    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a tropic.nn Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.epoch = 0

    def step(self) -> None:
        """Advance one epoch and set the optimiser's ``lr``."""
        self.epoch += 1
        self.optimizer.lr = self.lr_at(self.epoch)

    def get_last_lr(self) -> float:
        return self.optimizer.lr

    def lr_at(self, epoch: int) -> float:
        raise NotImplementedError


class StepLR(_Scheduler):
    """``lr = base_lr * gamma ** (epoch // step_size)``, updated by :meth:`step` (once per epoch)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer)
        self.step_size, self.gamma = positive_int("step_size", step_size), _non_negative("gamma", gamma)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(_Scheduler):
    """``lr = eta_min + (base_lr - eta_min) (1 + cos(pi * epoch / T_max)) / 2``.

    Closed form in the epoch count (so the rate rises again after ``T_max``: period ``2 T_max``).
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        super().__init__(optimizer)
        self.T_max, self.eta_min = positive_int("T_max", T_max), _non_negative("eta_min", eta_min)

    def lr_at(self, epoch: int) -> float:
        cos = (1 + math.cos(math.pi * epoch / self.T_max)) / 2
        return self.eta_min + (self.base_lr - self.eta_min) * cos


def _non_negative(name: str, value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not (value >= 0 and math.isfinite(value)):  # NaN fails both; an infinite rate makes NaN weights
        raise ValueError(f"{name} must be >= 0 and finite, got {value!r}")
    return value
