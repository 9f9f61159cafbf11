"""The models of ``tropic train``: name -> a :mod:`tropic.nn` model built from the run's config.

Every model is built with :mod:`tropic.nn` (the torch engine converts it with
``tropic.torch.nn.from_tropic``, so both engines start from the same weights for the same seed).

Classifiers take flattened images (``C * H * W`` features) and return logits:

=================  ================================================================================
``relu``           ReLU head of the sparse-hybrid paper: Linear(no bias) -> BatchNorm -> ReLU -> Linear
``maxout``         Maxout head (2 pieces): Linear(no bias) -> BatchNorm -> group max -> Linear
``dense-maxplus``  hybrid head with a dense max-plus layer (W ~ N(0, 1) everywhere)
``sparse-hybrid``  hybrid head with the sparse max-plus layer ("Sparse-Morph", 2 x width finite weights)
``mlp``            ReLU MLP of the DMNN paper (``blocks`` hidden blocks)
``maxout-mlp``     Maxout MLP of the DMNN paper
``mp``, ``act-mp``, ``dep``, ``act-dep``, ``mpm``, ``rmpm``, ``mpm-svd``, ``hybrid-mlp``
                   the DMNN paper's networks (:mod:`tropic.nn.dmnn_models`); ``--preset reference``
                   starts them as the paper's code does
``act-dep-fixed``  ``act-dep`` with the mix fixed at 3/4 (a run of the paper's code)
``min-max-plus``, ``min-max-plus-neg``
                   the paper code's min-max-plus networks (the second negates: ``[x, -x]``)
``mpm-lenet5``, ``lenet5``, ``mpm-resnet20``, ``resnet20``
                   the DMNN paper's convolutional networks (:mod:`tropic.nn.dmnn_conv`) on the
                   unflattened images (LeNet-5: 28 x 28 only); ``--width`` / ``--blocks`` do not
                   apply
``cnn-relu``, ``cnn-maxout``, ``cnn-dense``, ``cnn-sparse``
                   the sparse-hybrid paper's CIFAR-10 CNN with each of its heads
                   (:func:`tropic.nn.cnn_models.cifar_cnn`; cifar10 only)
``rmpm-dropout``   ``rmpm`` with weight dropout p = 0.3 (the paper's best)
``bise``           a BiSE network (Aouad & Talbot), see below
=================  ================================================================================

The heads sit directly on the pixels (the papers put them on a CNN backbone's features).

``bise``: on ``diskorect`` (a segmentation task: learn a morphological operation) one BiSE for a
dilation or an erosion, two chained BiSEs for an opening or a closing, each with the target's
structuring-element size as its kernel, trained with binary cross-entropy (the paper's claims 1, 2).
On a classification set, the paper's MNIST classifier: inputs thresholded at ``threshold`` (one
binary level set), ``DenseLUI(in -> width)`` (binarisable), then a real-valued
``DenseLUI(width -> classes)`` whose scores are the logits (claim 3). Both add
``regularization * constant_set_regularization(model)`` to the loss when ``regularization > 0``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ModelSpec:
    """A ``tropic train`` model: how to build it and the defaults it overrides."""

    name: str
    build: Callable[[dict[str, Any], int, int], Any]  # (config, in_features, classes) -> tropic.nn model
    help: str
    defaults: dict[str, Any] = field(default_factory=dict)
    presets: bool = False  # takes --preset reference (the paper code's initialisation)


def _head(kind: str) -> Callable[[dict[str, Any], int, int], Any]:
    def build(config: dict[str, Any], n_in: int, classes: int) -> Any:
        from tropic.nn import dmnn_models as m

        seed, width = config["seed"], config["width"]
        if kind == "relu":
            return m.relu_head(n_in, width, classes, seed=seed)
        if kind == "maxout":
            return m.maxout_head(n_in, width, classes, pieces=2, seed=seed)
        return m.hybrid_head(n_in, width, classes, init=kind, seed=seed)

    return build


def _dmnn(function: str, **extra: Any) -> Callable[[dict[str, Any], int, int], Any]:
    def build(config: dict[str, Any], n_in: int, classes: int) -> Any:
        from tropic.nn import dmnn_models as m

        options = dict(extra)
        if config.get("preset", "tropic") != "tropic":  # (a run saved before --preset has none)
            options["preset"] = config["preset"]
        return getattr(m, function)(
            n_in, config["width"], classes, blocks=config["blocks"], seed=config["seed"], **options
        )

    return build


def _paper_dmnn(name: str, function: str, help: str, **extra: Any) -> ModelSpec:
    """A DMNN paper network: its defaults, and ``--preset reference``."""
    return ModelSpec(name, _dmnn(function, **extra), help, DMNN_DEFAULTS, presets=True)


def _bise(config: dict[str, Any], n_in: int, classes: int) -> Any:
    import tropic.nn as nn
    from tropic.apps.datasets import _parse_target

    gen = np.random.default_rng(config["seed"])
    if classes == 0:  # segmentation: n_in is the image's channel count
        operation, _, size = _parse_target(config["target"])
        layers = 2 if operation in ("opening", "closing") else 1
        return nn.Sequential(*(nn.BiSE(n_in, n_in, size, rng=gen) for _ in range(layers)))
    return nn.Sequential(
        nn.DenseLUI(n_in, config["width"], init="sparse", rng=gen),
        nn.DenseLUI(config["width"], classes, real_valued=True, rng=gen),
    )


DMNN_DEFAULTS = {"lr": 1e-3, "width": 256, "batch_size": 64}  # the DMNN paper's Adam, batch, width

# The image shape of a data set's flattened inputs (digits, MNIST / Fashion-MNIST, CIFAR-10).
IMAGE_SHAPES = {64: (1, 8, 8), 784: (1, 28, 28), 3072: (3, 32, 32)}


Builder = Callable[[dict[str, Any], int, int], Any]  # (config, in_features, classes) -> tropic.nn model


def _conv_net(function: str, sides: tuple[int, ...] = (8, 28, 32), **extra: Any) -> Builder:
    """A convolutional network (``function`` of :mod:`tropic.nn.dmnn_conv` or
    :mod:`tropic.nn.cnn_models`) on the flattened images, unflattened by its first layer; ``sides``:
    the image sizes it takes."""

    def build(config: dict[str, Any], n_in: int, classes: int) -> Any:
        import tropic.nn as nn
        from tropic.nn import cnn_models, dmnn_conv

        shape = IMAGE_SHAPES.get(n_in)
        if shape is None or shape[-1] not in sides:
            takes = " or ".join(f"{s} x {s}" for s in sides)
            raise ValueError(
                f"it takes {takes} images (of digits, mnist, fashion-mnist, cifar10), not {n_in} inputs"
            )
        if function == "cifar_cnn":
            net = cnn_models.cifar_cnn(
                in_channels=shape[0], num_classes=classes, seed=config["seed"], **extra
            )
        else:
            net = getattr(dmnn_conv, function)(shape[0], classes, seed=config["seed"], **extra)
        return nn.Sequential(nn.Unflatten(shape), *net)

    return build


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec("relu", _head("relu"), "ReLU head (sparse-hybrid paper baseline)"),
        ModelSpec("maxout", _head("maxout"), "maxout head, 2 pieces"),
        ModelSpec("dense-maxplus", _head("dense"), "hybrid head, dense max-plus layer"),
        ModelSpec("sparse-hybrid", _head("sparse"), "hybrid head, sparse max-plus layer (Sparse-Morph)"),
        ModelSpec("mlp", _dmnn("mlp"), "ReLU MLP (DMNN paper baseline)", DMNN_DEFAULTS),
        ModelSpec("maxout-mlp", _dmnn("maxout_mlp"), "maxout MLP (DMNN paper baseline)", DMNN_DEFAULTS),
        _paper_dmnn("mp", "mp", "pure max-plus stack (does not train)"),
        _paper_dmnn("act-mp", "act_mp", "max-plus + diagonal activations"),
        _paper_dmnn("dep", "dep", "dilation-erosion perceptrons"),
        _paper_dmnn("act-dep", "act_dep", "DEP + diagonal activations"),
        _paper_dmnn("act-dep-fixed", "act_dep", "act-dep, mix fixed at 3/4 (a paper code run)", mix=0.75),
        _paper_dmnn("mpm", "mpm", "max-plus-min layers + diagonal activations"),
        _paper_dmnn("rmpm", "rmpm", "residual MPM"),
        _paper_dmnn("rmpm-dropout", "rmpm", "residual MPM, weight dropout 0.3", weight_dropout=0.3),
        _paper_dmnn("mpm-svd", "mpm_svd", "MPM + SVD-constrained activations"),
        _paper_dmnn("hybrid-mlp", "hybrid_mlp", "Linear -> MPM hybrid MLP"),
        _paper_dmnn("min-max-plus", "min_max_plus", "alternating max-plus / min-plus layers, no bias"),
        _paper_dmnn("min-max-plus-neg", "min_max_plus_neg", "min-max-plus with [x, -x] before each max"),
        ModelSpec("mpm-lenet5", _conv_net("mpm_lenet5", (28,)), "MPM-LeNet-5, soft MPM convs", DMNN_DEFAULTS),
        ModelSpec("lenet5", _conv_net("lenet5", (28,)), "LeNet-5 (DMNN paper baseline)", DMNN_DEFAULTS),
        ModelSpec("mpm-resnet20", _conv_net("mpm_resnet20"), "MPM-ResNet-20, MPM convs", DMNN_DEFAULTS),
        ModelSpec("resnet20", _conv_net("resnet20"), "ResNet-20 (DMNN paper baseline)", DMNN_DEFAULTS),
        *(
            ModelSpec(
                f"cnn-{head}",
                _conv_net("cifar_cnn", (32,), head=head),
                f"the sparse-hybrid paper's CIFAR-10 CNN, {head} head",
                {"lr": 1e-3, "batch_size": 64},
            )
            for head in ("relu", "maxout", "dense", "sparse")
        ),
        ModelSpec(
            "bise",
            _bise,
            "BiSE net: learns the diskorect target, or a DenseLUI classifier on thresholded inputs",
            {"lr": 0.01, "width": 1024, "regularization": 0.0},
        ),
    ]
}
