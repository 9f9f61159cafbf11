"""torch ``nn.Module`` s of tropic's layers: ``from tropic.torch import nn as tnn``.

Every layer here *is* the :mod:`tropic.nn` layer of the same name: one class body, defined once in
:mod:`tropic.nn` against a small engine interface (:mod:`tropic.nn.layer`), on torch's engine
(:func:`engine_class`). Same constructor arguments and signature (plus torch's ``dtype`` and
``device``), same initial values for the same ``seed``, same forward formula, with tropic's operators
(``tropic.maxplus_matmul``, ``tropic.maxplus_conv2d``, ``tropic.dilation``, ... as ``torch.library``
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

import tropic.nn as _tnn
from tropic.nn.binary import BinarizedNeurons, activable_set_regularization, constant_set_regularization

from ._layer import TorchLayer, engine_class, set_binary
from .convert import (
    Residual,
    ResidualBlock,
    Softplus,
    from_tropic,
    load_tropic_state,
    tropic_state_dict,
    tropical_zero,
)
from .models import (
    GroupMax,
    act_dep,
    act_mp,
    dep,
    hybrid_head,
    hybrid_mlp,
    maxout_head,
    maxout_mlp,
    min_max_plus,
    min_max_plus_neg,
    mlp,
    mp,
    mpm,
    mpm_svd,
    relu_head,
    rmpm,
)

TropicMirror = TorchLayer  # the name of this base class before the layers were defined once

# The layers, defined once in tropic.nn, on torch's engine.
MaxPlus = engine_class(_tnn.MaxPlus)
MinPlus = engine_class(_tnn.MinPlus)
DilationErosion = engine_class(_tnn.DilationErosion)
Maxout = engine_class(_tnn.Maxout)
MaxPlusConv1d = engine_class(_tnn.MaxPlusConv1d)
MinPlusConv1d = engine_class(_tnn.MinPlusConv1d)
MaxPlusConv2d = engine_class(_tnn.MaxPlusConv2d)
MinPlusConv2d = engine_class(_tnn.MinPlusConv2d)
MaxPlusConv3d = engine_class(_tnn.MaxPlusConv3d)
MinPlusConv3d = engine_class(_tnn.MinPlusConv3d)
Dilation1d = engine_class(_tnn.Dilation1d)
Erosion1d = engine_class(_tnn.Erosion1d)
Dilation2d = engine_class(_tnn.Dilation2d)
Erosion2d = engine_class(_tnn.Erosion2d)
Dilation3d = engine_class(_tnn.Dilation3d)
Reconstruction = engine_class(_tnn.Reconstruction)
Erosion3d = engine_class(_tnn.Erosion3d)
BiSE = engine_class(_tnn.BiSE)
LUI = engine_class(_tnn.LUI)
BiSEL = engine_class(_tnn.BiSEL)
DenseLUI = engine_class(_tnn.DenseLUI)
MPM = engine_class(_tnn.dmnn.MPM)
DEP = engine_class(_tnn.dmnn.DEP)
DiagonalActivation = engine_class(_tnn.dmnn.DiagonalActivation)
SVDActivation = engine_class(_tnn.dmnn.SVDActivation)
MPMResidual = engine_class(_tnn.dmnn.MPMResidual)
Negator = engine_class(_tnn.dmnn.Negator)
MPMConv2d = engine_class(_tnn.dmnn_conv.MPMConv2d)
SoftMPMConv2d = engine_class(_tnn.dmnn_conv.SoftMPMConv2d)
ConvLinAct = engine_class(_tnn.dmnn_conv.ConvLinAct)
GlobalAvgPool2d = engine_class(_tnn.dmnn_conv.GlobalAvgPool2d)

__all__ = [
    "DEP",
    "LUI",
    "MPM",
    "BiSE",
    "BiSEL",
    "BinarizedNeurons",
    "ConvLinAct",
    "DenseLUI",
    "DiagonalActivation",
    "Dilation1d",
    "Dilation2d",
    "Dilation3d",
    "DilationErosion",
    "Erosion1d",
    "Erosion2d",
    "Erosion3d",
    "GlobalAvgPool2d",
    "GroupMax",
    "MPMConv2d",
    "MPMResidual",
    "MaxPlus",
    "MaxPlusConv1d",
    "MaxPlusConv2d",
    "MaxPlusConv3d",
    "Maxout",
    "MinPlus",
    "MinPlusConv1d",
    "MinPlusConv2d",
    "MinPlusConv3d",
    "Negator",
    "Reconstruction",
    "Residual",
    "ResidualBlock",
    "SVDActivation",
    "SoftMPMConv2d",
    "Softplus",
    "TorchLayer",
    "TropicMirror",
    "act_dep",
    "act_mp",
    "activable_set_regularization",
    "constant_set_regularization",
    "dep",
    "engine_class",
    "from_tropic",
    "hybrid_head",
    "hybrid_mlp",
    "load_tropic_state",
    "maxout_head",
    "maxout_mlp",
    "min_max_plus",
    "min_max_plus_neg",
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
