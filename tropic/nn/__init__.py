"""tropic.nn: modules, layers, initialisers, optimisers, losses and pruning for morphological networks.

Built on :mod:`tropic.autodiff`: a layer's ``forward`` takes a :class:`~tropic.autodiff.Tensor` (or an
array) and returns a Tensor; ``loss.backward()`` fills the ``.grad`` of every :class:`Parameter`.

Examples
--------
>>> import numpy as np
>>> import tropic.nn as nn
>>> net = nn.Sequential(
...     nn.Linear(64, 32, bias=False, seed=0), nn.BatchNorm1d(32),
...     nn.MaxPlus(32, 32, init="sparse", count=64, seed=1), nn.Linear(32, 10, seed=2))
>>> loss = nn.cross_entropy(net(np.ones((4, 64), dtype=np.float32)), np.array([0, 1, 2, 3]))
>>> loss.backward()
>>> opt = nn.Adam(net.parameters(), lr=1e-3)
>>> opt.step()
"""

from . import data, init, pruning
from .activations import ReLU, Sigmoid, Softplus, Tanh
from .conv import (
    Conv2d,
    Dilation1d,
    Dilation2d,
    Dilation3d,
    Erosion1d,
    Erosion2d,
    Erosion3d,
    MaxPlusConv1d,
    MaxPlusConv2d,
    MaxPlusConv3d,
    MaxPool2d,
    MinPlusConv1d,
    MinPlusConv2d,
    MinPlusConv3d,
)
from .dropout import DropConnect, Dropout, WeightDropout
from .geodesic import Reconstruction
from .linear import Flatten, Identity, Linear, Unflatten
from .losses import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    DiceLoss,
    MSELoss,
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    dice_loss,
    mse_loss,
)
from .module import Module, ModuleList, Parameter, Sequential, load_state
from .normalization import BatchNorm1d, BatchNorm2d
from .optim import SGD, Adam, AdamW, CosineAnnealingLR, Optimizer, StepLR
from .pruning import global_unstructured, l1_unstructured, sparsity_report
from .residual import Residual
from .tropical import DilationErosion, Maxout, MaxPlus, MinPlus

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "BCELoss",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "BatchNorm2d",
    "Conv2d",
    "CosineAnnealingLR",
    "CrossEntropyLoss",
    "DiceLoss",
    "Dilation1d",
    "Dilation2d",
    "Dilation3d",
    "DilationErosion",
    "DropConnect",
    "Dropout",
    "Erosion1d",
    "Erosion2d",
    "Erosion3d",
    "Flatten",
    "Identity",
    "Linear",
    "MSELoss",
    "MaxPlus",
    "MaxPlusConv1d",
    "MaxPlusConv2d",
    "MaxPlusConv3d",
    "MaxPool2d",
    "Maxout",
    "MinPlus",
    "MinPlusConv1d",
    "MinPlusConv2d",
    "MinPlusConv3d",
    "Module",
    "ModuleList",
    "Optimizer",
    "Parameter",
    "ReLU",
    "Reconstruction",
    "Residual",
    "Sequential",
    "Sigmoid",
    "Softplus",
    "StepLR",
    "Tanh",
    "Unflatten",
    "WeightDropout",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "data",
    "dice_loss",
    "global_unstructured",
    "init",
    "l1_unstructured",
    "load_state",
    "mse_loss",
    "pruning",
    "sparsity_report",
]

# The layers of the binarised (BiSE) and deep-morphological-network families, built on the above.
from . import (
    cnn_models,  # the sparse-hybrid paper's CIFAR-10 CNN with its four heads: cnn_models.cifar_cnn(...)
    dmnn_conv,  # the paper code's convolutional variants: dmnn_conv.mpm_lenet5(...), ...
    dmnn_models,  # the papers' architectures: dmnn_models.mpm(...), .hybrid_head(...), ...
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
from .dmnn import DEP, MPM, DiagonalActivation, MPMResidual, Negator, SVDActivation
from .dmnn_conv import ConvLinAct, GlobalAvgPool2d, MPMConv2d, ResidualBlock, SoftMPMConv2d

__all__ += [
    "DEP",
    "LUI",
    "MPM",
    "BiSE",
    "BiSEL",
    "BinarizedNeurons",
    "ConvLinAct",
    "DenseLUI",
    "DiagonalActivation",
    "GlobalAvgPool2d",
    "MPMConv2d",
    "MPMResidual",
    "Negator",
    "ResidualBlock",
    "SVDActivation",
    "SoftMPMConv2d",
    "activable_set_regularization",
    "cnn_models",
    "constant_set_regularization",
    "dmnn_conv",
    "dmnn_models",
]
