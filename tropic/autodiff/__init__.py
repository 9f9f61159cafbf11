"""Minimal reverse-mode automatic differentiation over any array-API array.

A :class:`Tensor` wraps an array (NumPy, CuPy, array-api-strict) and, when it requires a gradient,
records the operations applied to it; ``backward()`` then sums gradients into ``.grad`` of the
leaves. Every operation is a function of this namespace that accepts Tensors, raw arrays and Python
scalars (raw arrays and scalars are constants) and returns a Tensor. The tropical operations reuse the
core's forward kernels and vjp rules (the gradient goes to the single winner of each output, the
lowest index on ties).

Examples
--------
>>> import numpy as np
>>> import tropic.autodiff as ad
>>> a = ad.tensor([[0.0, 2.0]], requires_grad=True)
>>> b = ad.tensor([[1.0], [0.5]], requires_grad=True)
>>> c = ad.maxplus_matmul(a, b)
>>> c.data
array([[2.5]])
>>> c.backward()
>>> a.grad, b.grad
(array([[0., 1.]]), array([[0.],
       [1.]]))
"""

import sys as _sys

from . import tensor as _tensor_module
from .elementwise import (
    abs,
    add,
    clamp,
    div,
    exp,
    log,
    mul,
    neg,
    pow,
    relu,
    sigmoid,
    softplus,
    sqrt,
    sub,
    tanh,
    where,
)
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .linalg import matmul
from .nn_ops import conv2d, log_softmax, max_pool2d, pad, softmax
from .reductions import max, mean, min, sum
from .shape import concatenate, expand_dims, flip, getitem, permute_dims, reshape, squeeze, stack, transpose
from .tensor import Tensor, as_tensor, tensor
from .tropical import (
    dilation,
    erosion,
    maximum,
    maxout,
    maxplus_conv2d,
    maxplus_matmul,
    minimum,
    minplus_conv2d,
    minplus_matmul,
)

# Tensor's operators (``+``, ``.sum()``, ...) call the functions of this namespace.
_tensor_module._ops = _sys.modules[__name__]

__all__ = [
    "Tensor",
    "abs",
    "add",
    "as_tensor",
    "clamp",
    "concatenate",
    "conv2d",
    "dilation",
    "div",
    "enable_grad",
    "erosion",
    "exp",
    "expand_dims",
    "flip",
    "getitem",
    "is_grad_enabled",
    "log",
    "log_softmax",
    "matmul",
    "max",
    "max_pool2d",
    "maximum",
    "maxout",
    "maxplus_conv2d",
    "maxplus_matmul",
    "mean",
    "min",
    "minimum",
    "minplus_conv2d",
    "minplus_matmul",
    "mul",
    "neg",
    "no_grad",
    "pad",
    "permute_dims",
    "pow",
    "relu",
    "reshape",
    "set_grad_enabled",
    "sigmoid",
    "softmax",
    "softplus",
    "sqrt",
    "squeeze",
    "stack",
    "sub",
    "sum",
    "tanh",
    "tensor",
    "transpose",
    "where",
]
