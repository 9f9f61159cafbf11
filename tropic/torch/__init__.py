"""tropic for PyTorch users: ``torch.nn.Module`` s of tropic's layers and pruning helpers.

Documented import::

    from tropic.torch import nn as tnn       # the layers (MaxPlus, Dilation2d, BiSE, MPM, ...)
    from tropic.torch import prune           # tropical-zero pruning, compatible with torch.nn.utils.prune
    from tropic.torch import optim           # AveragedModel (SWA/EMA) keeping tropical zeros

tropic's public operators (``tropic.maxplus_matmul`` and the others) accept torch tensors directly
(:mod:`tropic.torch.engine`: ``torch.library`` custom ops generated from the operator specs); this
package holds the layers built on them. Each layer takes its
initialisation and configuration from the matching :mod:`tropic.nn` layer (same constructor
arguments, same seeds, same values), so a layer's definition is written once. Importing it also
makes ``torch.optim``'s weight decay keep the tropical zeros of tropic layers (:mod:`.optim`).
Recipes for DDP, FSDP, ``torch.compile``, export and the rest: ``docs/pytorch.md``.
"""

from . import engine, nn, optim, prune  # engine: torch.ops.tropic.* exist from this import on

__all__ = ["engine", "nn", "optim", "prune"]
