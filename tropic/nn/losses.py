"""Loss functions (``cross_entropy``, ``binary_cross_entropy_with_logits``, ``binary_cross_entropy``,
``mse_loss``, ``dice_loss``) and their module forms.

Each takes predictions as a :class:`~tropic.autodiff.Tensor` (or array) and targets as a raw array, and
returns a 0-d tensor: the mean over samples (``reduction="mean"``), the sum (``"sum"``) or the
per-sample values (``"none"``).
"""

from __future__ import annotations

from typing import Any

from .. import autodiff as ad
from ..core._array_api import array_namespace
from .module import Module

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "MSELoss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "dice_loss",
    "mse_loss",
]

_REDUCTIONS = ("mean", "sum", "none")


def cross_entropy(logits: Any, target: Any, reduction: str = "mean") -> ad.Tensor:
    """Cross-entropy of integer class targets, through a stable ``log_softmax``.

    .. math:: \\ell_n = -\\log \\mathrm{softmax}(z_n)_{t_n} = -z_{n t_n} + \\log \\sum_c e^{z_{nc}}

    Parameters
    ----------
    logits : Tensor or array, shape (N, C)
    target : integer array, shape (N,)
        Class indices in ``[0, C)``.
    reduction : {"mean", "sum", "none"}

    Examples
    --------
    >>> import numpy as np
    >>> from tropic.nn import cross_entropy
    >>> round(cross_entropy(np.zeros((2, 4)), np.array([0, 3])).item(), 6)  # log 4
    1.386294
    """
    logits = _tensor(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got {logits.shape}")
    xp = logits.xp
    target = _int_target(xp, target, logits.shape)
    classes = xp.arange(logits.shape[1], dtype=target.dtype)
    onehot = xp.astype(target[:, None] == classes[None, :], logits.dtype)
    nll = -ad.sum(ad.log_softmax(logits, axis=-1) * onehot, axis=-1)
    return _reduce(nll, reduction)


def binary_cross_entropy_with_logits(logits: Any, target: Any, reduction: str = "mean") -> ad.Tensor:
    """Binary cross-entropy of logits ``z`` and targets ``t in [0, 1]``, in the stable form

    .. math:: \\ell = \\mathrm{softplus}(z) - z t = \\max(z, 0) - z t + \\log(1 + e^{-|z|})

    (no overflow for large ``|z|``). Averaged over all entries with ``reduction="mean"``.
    """
    z = _tensor(logits)
    t = _float_target(z, target)
    return _reduce(ad.softplus(z) - z * t, reduction)


def binary_cross_entropy(probs: Any, target: Any, reduction: str = "mean") -> ad.Tensor:
    """Binary cross-entropy of probabilities ``p`` and targets ``t``:
    ``-(t log p + (1 - t) log(1 - p))``, with each log clamped at -100 (as PyTorch), so that
    ``p = 0`` or ``1`` gives a finite loss and zero gradient there. Prefer
    :func:`binary_cross_entropy_with_logits`, which is exact.
    """
    p = _tensor(probs)
    t = _float_target(p, target)
    xp = p.xp
    tiny = float(xp.finfo(p.dtype).smallest_normal)
    log_p = ad.clamp(ad.log(ad.maximum(p, tiny)), min=-100.0)
    log_q = ad.clamp(ad.log(ad.maximum(1.0 - p, tiny)), min=-100.0)
    return _reduce(-(log_p * t + log_q * (1.0 - t)), reduction)  # Tensor first: strict arrays refuse


def mse_loss(pred: Any, target: Any, reduction: str = "mean") -> ad.Tensor:
    """Mean squared error ``(pred - target)^2`` (mean over all entries)."""
    pred = _tensor(pred)
    diff = pred - _float_target(pred, target)
    return _reduce(diff * diff, reduction)


def dice_loss(pred: Any, target: Any, smooth: float = 1e-6, axis: Any = None) -> ad.Tensor:
    """Soft Dice loss.

    .. math:: L = 1 - \\frac{2 \\sum p t + s}{\\sum p + \\sum t + s}

    Parameters
    ----------
    pred : Tensor or array
        Soft predictions in [0, 1] (e.g. after a sigmoid).
    target : array
        Binary (or soft) targets of the same shape.
    smooth : float
        ``s``; keeps the loss defined (0) when both sets are empty.
    axis : int or tuple of int, optional
        The sums run over these axes (default all) and the loss is averaged over the others
        (e.g. ``axis=(1, 2, 3)`` for a per-image Dice averaged over the batch).

    Examples
    --------
    >>> import numpy as np
    >>> from tropic.nn import dice_loss
    >>> round(dice_loss(np.array([1.0, 0.0]), np.array([1.0, 1.0]), smooth=0.0).item(), 6)  # 1 - 2/3
    0.333333
    """
    p = _tensor(pred)
    t = _float_target(p, target)
    if not smooth >= 0:
        raise ValueError(f"smooth must be >= 0, got {smooth!r}")
    inter = ad.sum(p * t, axis=axis)
    total = ad.sum(p, axis=axis) + ad.sum(t, axis=axis)
    return ad.mean(1.0 - (2.0 * inter + smooth) / (total + smooth))


class _Loss(Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    """Module form of :func:`cross_entropy`."""

    def forward(self, logits: Any, target: Any) -> ad.Tensor:
        return cross_entropy(logits, target, self.reduction)


class BCEWithLogitsLoss(_Loss):
    """Module form of :func:`binary_cross_entropy_with_logits`."""

    def forward(self, logits: Any, target: Any) -> ad.Tensor:
        return binary_cross_entropy_with_logits(logits, target, self.reduction)


class BCELoss(_Loss):
    """Module form of :func:`binary_cross_entropy`."""

    def forward(self, probs: Any, target: Any) -> ad.Tensor:
        return binary_cross_entropy(probs, target, self.reduction)


class MSELoss(_Loss):
    """Module form of :func:`mse_loss`."""

    def forward(self, pred: Any, target: Any) -> ad.Tensor:
        return mse_loss(pred, target, self.reduction)


class DiceLoss(Module):
    """Module form of :func:`dice_loss`."""

    def __init__(self, smooth: float = 1e-6, axis: Any = None) -> None:
        super().__init__()
        self.smooth, self.axis = smooth, axis

    def forward(self, pred: Any, target: Any) -> ad.Tensor:
        return dice_loss(pred, target, self.smooth, self.axis)


def _tensor(x: Any) -> ad.Tensor:
    return x if isinstance(x, ad.Tensor) else ad.Tensor(x)


def _float_target(pred: ad.Tensor, target: Any) -> Any:
    if isinstance(target, ad.Tensor):
        target = target.data
    xp = pred.xp
    if not hasattr(target, "shape"):
        target = xp.asarray(target, dtype=pred.dtype)
    elif array_namespace(target=target) is not xp:
        raise TypeError("target must come from the same array library as the predictions")
    if tuple(target.shape) != pred.shape:
        raise ValueError(f"target must have the predictions' shape {pred.shape}, got {tuple(target.shape)}")
    return xp.astype(target, pred.dtype) if target.dtype != pred.dtype else target


def _int_target(xp: Any, target: Any, logits_shape: tuple[int, ...]) -> Any:
    if isinstance(target, ad.Tensor):
        target = target.data
    if not hasattr(target, "dtype"):
        target = xp.asarray(target)
    if not xp.isdtype(target.dtype, "integral"):
        raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
    n, c = logits_shape
    if tuple(target.shape) != (n,):
        raise ValueError(f"target must have shape ({n},), got {tuple(target.shape)}")
    if n and (int(xp.min(target)) < 0 or int(xp.max(target)) >= c):
        raise ValueError(
            f"target must be in [0, {c}), got values from {int(xp.min(target))} to {int(xp.max(target))}"
        )
    return target


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(values: ad.Tensor, reduction: str) -> ad.Tensor:
    _check_reduction(reduction)
    if reduction == "mean":
        return ad.mean(values)
    if reduction == "sum":
        return ad.sum(values)
    return values
