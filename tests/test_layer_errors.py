"""Mistakes with a layer name the layer, on both engines (tropic.nn and tropic.torch.nn).

A wrong input shape says which layer and what shape it was built for (not the operator's view of
its transposed weight); a misspelt keyword is reported against the class the user called (not the
base class that defines ``__init__``); ``inspect.signature`` shows the real arguments.
"""

from __future__ import annotations

import importlib
import inspect
import re

import numpy as np
import pytest

import tropic.nn as tn

try:
    import torch

    tnn = importlib.import_module("tropic.torch.nn")
except ImportError:  # the torch engine's cases skip
    torch = tnn = None

ENGINES = ["autodiff", "torch"]

# (class name, args, a wrong input shape, the shape the message must name)
DENSE = [
    ("MaxPlus", (4, 3), (2, 5), "(..., 4)"),
    ("MinPlus", (4, 3), (2, 5), "(..., 4)"),
    ("DilationErosion", (4, 2), (2, 5), "(..., 4)"),
    ("Maxout", (4, 3, 2), (2, 5), "(..., 4)"),
    ("MPM", (4, 2), (2, 5), "(..., 4)"),
    ("DEP", (4, 2), (2, 5), "(..., 4)"),
    ("DiagonalActivation", (4,), (2, 5), "(..., 4)"),
    ("SVDActivation", (4,), (2, 5), "(..., 4)"),
    ("MPMResidual", (4,), (2, 5), "(..., 4)"),
    ("DenseLUI", (4, 2), (2, 5), "(..., 4)"),
    ("MaxPlusConv2d", (2, 3, 3), (1, 1, 6, 6), "(B, 2, H, W)"),
    ("MinPlusConv2d", (4, 2, 3), (1, 2, 6, 6), "(B, 4, H, W)"),
    ("Dilation2d", (2, 3), (1, 3, 6, 6), "(B, 2, H, W)"),
    ("Erosion2d", (2, 3), (2, 6, 6), "(B, 2, H, W)"),
    ("BiSE", (2, 2, 3), (1, 1, 6, 6), "(B, 2, H, W)"),
    ("LUI", (2, 2), (1, 3, 6, 6), "(B, 2, H, W)"),
    ("BiSEL", (2, 2, 3), (1, 1, 6, 6), "(B, 2, H, W)"),
]


def layer_class(engine: str, name: str) -> type:
    if engine == "torch":
        if tnn is None:
            pytest.skip("torch is not installed")
        return getattr(tnn, name)
    return getattr(tn, name)


def wrong_input(engine: str, shape: tuple[int, ...]):
    x = np.zeros(shape, dtype=np.float32)
    return torch.from_numpy(x) if engine == "torch" else x


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("name", "args", "shape", "expected"), DENSE, ids=[c[0] for c in DENSE])
def test_wrong_input_shape_names_the_layer(engine, name, args, shape, expected):
    layer = layer_class(engine, name)(*args)
    message = f"{name}: x must have shape {expected}, got {shape}"
    with pytest.raises(ValueError, match=re.escape(message)):
        layer(wrong_input(engine, shape))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", ["MaxPlus", "MinPlus", "MaxPlusConv2d", "Erosion2d", "BiSE", "LUI", "MPM"])
def test_misspelt_keyword_names_the_class(engine, name):
    cls = layer_class(engine, name)
    args = next(c[1] for c in DENSE if c[0] == name)
    with pytest.raises(TypeError, match=rf"^{name}\(\) got an unexpected keyword argument 'sed'$"):
        cls(*args, sed=0)


@pytest.mark.parametrize("engine", ENGINES)
def test_signature_shows_the_arguments(engine):
    parameters = inspect.signature(layer_class(engine, "MaxPlus")).parameters
    assert list(parameters)[:3] == ["in_features", "out_features", "bias"]
    assert {"init", "p", "count", "seed", "dtype", "device"} <= set(parameters)
    assert "args" not in parameters and "kwargs" not in parameters
