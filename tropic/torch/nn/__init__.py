"""torch ``nn.Module`` s of tropic's layers: ``from tropic.torch import nn as tnn``.

Every layer mirrors the :mod:`tropic.nn` layer of the same name: same constructor arguments (plus
torch's ``dtype`` and ``device``), same initial values for the same ``seed`` (the tropic layer's own
initialisation code runs and its arrays are copied), same forward formula, with tropic's operators
(``tropic.maxplus_matmul``, ``tropic.maxplus_conv2d``, ``tropic.maxout``, ... as ``torch.library``
custom ops) so that gradients follow tropic's subgradient rule and ``torch.compile(fullgraph=True)``
sees no graph break.

Examples
--------
>>> import torch
>>> from tropic.torch import nn as tnn
>>> head = torch.nn.Sequential(torch.nn.Linear(64, 64, bias=False), torch.nn.BatchNorm1d(64),
...                            tnn.MaxPlus(64, 64, init="sparse", count=128, seed=0),
...                            torch.nn.Linear(64, 10))
>>> loss = head(torch.randn(8, 64)).logsumexp(-1).sum()
>>> loss.backward()

Converting: :func:`from_tropic` turns a tropic.nn layer or model into the equivalent torch module;
:func:`load_tropic_state` loads a tropic state dict; :func:`tropic_state_dict` goes back.
"""

from ._mirror import (
    Residual,
    Softplus,
    TropicMirror,
    from_tropic,
    load_tropic_state,
    set_binary,
    tropic_state_dict,
    tropical_zero,
)
from .binary import (
    LUI,
    BinarizedNeurons,
    BiSE,
    BiSEL,
    DenseLUI,
    activable_set_regularization,
    constant_set_regularization,
)
from .conv import Dilation2d, Erosion2d, MaxPlusConv2d, MinPlusConv2d
from .dmnn import DEP, MPM, DiagonalActivation, MPMResidual, SVDActivation
from .models import (
    GroupMax,
    act_dep,
    act_mp,
    dep,
    hybrid_head,
    hybrid_mlp,
    maxout_head,
    maxout_mlp,
    mlp,
    mp,
    mpm,
    mpm_svd,
    relu_head,
    rmpm,
)
from .tropical import DilationErosion, Maxout, MaxPlus, MinPlus

__all__ = [
    "DEP",
    "LUI",
    "MPM",
    "BiSE",
    "BiSEL",
    "BinarizedNeurons",
    "DenseLUI",
    "DiagonalActivation",
    "Dilation2d",
    "DilationErosion",
    "Erosion2d",
    "GroupMax",
    "MPMResidual",
    "MaxPlus",
    "MaxPlusConv2d",
    "Maxout",
    "MinPlus",
    "MinPlusConv2d",
    "Residual",
    "SVDActivation",
    "Softplus",
    "TropicMirror",
    "act_dep",
    "act_mp",
    "activable_set_regularization",
    "constant_set_regularization",
    "dep",
    "from_tropic",
    "hybrid_head",
    "hybrid_mlp",
    "load_tropic_state",
    "maxout_head",
    "maxout_mlp",
    "mlp",
    "mp",
    "mpm",
    "mpm_svd",
    "relu_head",
    "rmpm",
    "set_binary",
    "tropic_state_dict",
    "tropical_zero",
]
