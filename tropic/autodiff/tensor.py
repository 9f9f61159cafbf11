"""The Tensor: an array-API array with an optional gradient, the tape, and ``backward``.

Every operation returns a new :class:`Tensor`. When grad mode is on and an operand requires a
gradient, the result remembers its operands (``_parents``) and a closure (``_vjp``) that maps the
gradient of the result to the gradients of the operands (a vector-Jacobian product). ``backward``
orders that graph once, iteratively (no recursion limit), and runs the closures from the output back
to the leaves, where gradients are summed into ``.grad``. Broadcasting and dtype promotion are undone
in one place, :func:`_accumulate`: a closure may return a gradient in the result's broadcast shape
and dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from ..core._array_api import Array, array_namespace, device, sum_to_shape
from .grad_mode import is_grad_enabled

__all__ = ["Tensor", "as_tensor", "record", "tensor"]

Vjp = Callable[[Array], Sequence[Any]]


def _is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray) or (
        array_api_compat.is_array_api_obj(x) and not isinstance(x, (bool, int, float, complex))
    )


def _floating(xp: ModuleType, dtype: Any) -> bool:
    return xp.isdtype(dtype, "real floating")


class Tensor:
    """An array-API array with an optional gradient.

    Parameters
    ----------
    data : array or array-like
        Any array-API array (NumPy, CuPy, array-api-strict) is wrapped as it is (not copied, never
        modified). Python scalars and (nested) lists are converted with NumPy.
    requires_grad : bool
        Record operations on this tensor so that ``backward`` fills ``.grad``; floating dtypes only.

    Attributes
    ----------
    data : array
        The raw array.
    grad : array or None
        The gradient, summed over ``backward`` calls; reset with ``t.grad = None`` or ``zero_grad()``.
    requires_grad : bool

    Examples
    --------
    >>> import numpy as np
    >>> from tropic.autodiff import Tensor
    >>> x = Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    >>> y = (x * x).sum()
    >>> y.backward()
    >>> x.grad
    array([ 2., -4.,  6.])
    """

    # NumPy defers ``ndarray + Tensor`` to ``Tensor.__radd__`` instead of making an object array;
    # CuPy does so for a higher priority.
    __array_ufunc__ = None
    __array_priority__ = 1000

    def __init__(self, data: Any, requires_grad: bool = False) -> None:
        self.data = data.data if isinstance(data, Tensor) else data
        self.grad: Array | None = None
        self._parents: tuple[Tensor, ...] = ()
        self._vjp: Vjp | None = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad = True

    # -- attributes ---------------------------------------------------------------------------
    @property
    def data(self) -> Array:
        """The raw array. Assigning another array (an optimiser step) keeps the tape untouched."""
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        if isinstance(value, np.generic) or not _is_array(value):
            value = np.asarray(value)  # NumPy scalars (results of 0-d arithmetic), lists, numbers
        self._xp = array_namespace(data=value)
        self._data = value

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value and not _floating(self._xp, self.data.dtype):
            raise TypeError(f"only real floating tensors can require gradients, got dtype {self.data.dtype}")
        self._requires_grad = bool(value)

    @property
    def xp(self) -> ModuleType:
        """The array namespace of ``data``."""
        return self._xp

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def device(self) -> Any:
        return device(self.data)

    @property
    def is_leaf(self) -> bool:
        """True for tensors made by the user (not by an operation that recorded the tape)."""
        return self._vjp is None

    @property
    def T(self) -> Tensor:
        """All axes reversed (the transpose of a matrix)."""
        return _ops.transpose(self)

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __bool__(self) -> bool:
        return bool(self.data)  # the array library decides (ambiguous for several elements)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    # Copies and pickles carry the data, gradient and flag, not the namespace (a module) or the
    # tape: a copy is a leaf, as ``detach`` makes.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in ("_xp", "_parents", "_vjp"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.data = state["_data"]  # recomputes the namespace
        self._parents, self._vjp = (), None

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({self.data!r}{grad})"

    # -- conversion ---------------------------------------------------------------------------
    def detach(self) -> Tensor:
        """The same data, cut from the tape (no gradient)."""
        return Tensor(self.data)

    def item(self) -> Any:
        """The single value as a Python scalar."""
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        value = self._xp.reshape(self.data, ())
        if self._xp.isdtype(value.dtype, "bool"):
            return bool(value)
        if self._xp.isdtype(value.dtype, "integral"):
            return int(value)
        return float(value) if _floating(self._xp, value.dtype) else complex(value)

    def numpy(self) -> np.ndarray:
        """A NumPy copy of ``data``."""
        if isinstance(self.data, np.ndarray):
            return np.array(self.data, copy=True)
        if array_api_compat.is_cupy_array(self.data):
            return self.data.get()
        return np.array(np.from_dlpack(self.data), copy=True)

    def zero_grad(self) -> None:
        """Forget the accumulated gradient (``grad = None``)."""
        self.grad = None

    # -- backward -----------------------------------------------------------------------------
    def backward(self, grad: Any = None) -> None:
        """Accumulate ``d self / d leaf`` (times ``grad``) into the ``.grad`` of every leaf.

        Parameters
        ----------
        grad : array or Tensor, optional
            The gradient of some scalar with respect to this tensor, of this tensor's shape.
            Defaults to one for a tensor with one element.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (and has no tape)")
        xp = self._xp
        if grad is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward() without grad needs a tensor with one element, got shape {self.shape}; "
                    "pass grad= of that shape"
                )
            grad = xp.ones(self.data.shape, dtype=self.dtype, device=self.device)
        else:
            grad = grad.data if isinstance(grad, Tensor) else grad
            grad = xp.asarray(grad, dtype=self.dtype, device=self.device)
            if tuple(grad.shape) != self.shape:
                raise ValueError(f"grad must have the tensor's shape {self.shape}, got {tuple(grad.shape)}")
        grads: dict[int, Array] = {id(self): grad}
        for node in reversed(_topological_order(self)):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._vjp is None:
                # A leaf: copy on first store, so that no two .grad share an array with each other
                # or with the caller's grad.
                node.grad = xp.asarray(g, copy=True) if node.grad is None else node.grad + g
                continue
            for parent, parent_grad in zip(node._parents, node._vjp(g), strict=True):
                if parent_grad is not None and parent.requires_grad:
                    _accumulate(grads, parent, parent_grad)

    # -- operators (the functions live in the op modules) -------------------------------------
    def __add__(self, other: Any) -> Tensor:
        return _ops.add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return _ops.add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return _ops.sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return _ops.sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return _ops.mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return _ops.mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return _ops.div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _ops.div(other, self)

    def __matmul__(self, other: Any) -> Tensor:
        return _ops.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _ops.matmul(other, self)

    def __pow__(self, exponent: Any) -> Tensor:
        return _ops.pow(self, exponent)

    def __neg__(self) -> Tensor:
        return _ops.neg(self)

    def __pos__(self) -> Tensor:
        return self

    # Comparisons give raw boolean arrays: they have no gradient. (``==`` stays identity, so that
    # tensors can be dictionary keys and set members.)
    def __lt__(self, other: Any) -> Array:
        return self.data < _raw(other)

    def __le__(self, other: Any) -> Array:
        return self.data <= _raw(other)

    def __gt__(self, other: Any) -> Array:
        return self.data > _raw(other)

    def __ge__(self, other: Any) -> Array:
        return self.data >= _raw(other)

    __hash__ = object.__hash__

    def __getitem__(self, key: Any) -> Tensor:
        return _ops.getitem(self, key)

    # -- method forms -------------------------------------------------------------------------
    def sum(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        return _ops.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        return _ops.mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        return _ops.max(self, axis=axis, keepdims=keepdims)

    def min(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        return _ops.min(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _ops.reshape(self, shape)

    def transpose(self, *axes: Any) -> Tensor:
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = tuple(axes[0]) if axes[0] is not None else ()
        return _ops.transpose(self, axes or None)

    def exp(self) -> Tensor:
        return _ops.exp(self)

    def log(self) -> Tensor:
        return _ops.log(self)

    def relu(self) -> Tensor:
        return _ops.relu(self)

    def tanh(self) -> Tensor:
        return _ops.tanh(self)

    def sigmoid(self) -> Tensor:
        return _ops.sigmoid(self)

    def abs(self) -> Tensor:
        return _ops.abs(self)

    def sqrt(self) -> Tensor:
        return _ops.sqrt(self)

    def clamp(self, min: Any = None, max: Any = None) -> Tensor:
        return _ops.clamp(self, min=min, max=max)


def tensor(data: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of ``data`` (an array, a Python scalar or a nested list).

    Python scalars and lists become NumPy arrays (``tensor(1.0)`` is a 0-d float64 array); arrays
    keep their library. ``dtype`` converts.

    Examples
    --------
    >>> from tropic.autodiff import tensor
    >>> tensor([1.0, 2.0], requires_grad=True)
    Tensor(array([1., 2.]), requires_grad=True)
    """
    if isinstance(data, Tensor):
        data = data.data
    if not _is_array(data) or isinstance(data, np.generic):
        data = np.asarray(data)
    xp = array_namespace(data=data)
    data = xp.asarray(data, dtype=dtype, copy=True) if dtype is not None else xp.asarray(data, copy=True)
    return Tensor(data, requires_grad=requires_grad)


def as_tensor(value: Any, like: Tensor | None = None) -> Tensor:
    """``value`` as a Tensor: Tensors as they are, arrays wrapped as constants, Python scalars as
    0-d constants of ``like``'s library and dtype (array-API promotion: a Python float does not
    upcast a float32 tensor), anything else through NumPy."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (bool, int, float)) and like is not None:
        xp, dtype = like.xp, like.dtype
        kind = "bool" if isinstance(value, bool) else "numeric" if isinstance(value, int) else "real floating"
        if isinstance(like.data, np.ndarray):  # fast path: the same rule through NumPy's dtype kinds
            keeps = dtype.kind in {"bool": "b", "numeric": "iuf", "real floating": "f"}[kind]
            return Tensor(np.asarray(value, dtype=dtype if keeps else None))
        keeps = xp.isdtype(dtype, kind)
        return Tensor(xp.asarray(value, dtype=dtype if keeps else None, device=like.device))
    return Tensor(value)


def operands(*values: Any) -> tuple[Tensor, ...]:
    """Tensors for the operands of one operation; scalars take the first tensor or array's dtype."""
    like = next((v for v in values if isinstance(v, Tensor)), None)
    if like is None:
        like = next((Tensor(v) for v in values if _is_array(v)), None)
    tensors = tuple(as_tensor(v, like) for v in values)
    if len({type(t.data) for t in tensors}) > 1:  # the error names the libraries that were mixed
        array_namespace(**{f"operand {i}": t.data for i, t in enumerate(tensors)})
    return tensors


def needs_grad(*tensors: Tensor) -> bool:
    """True when an operation on these operands must record the tape."""
    return is_grad_enabled() and any(t.requires_grad for t in tensors)


def record(data: Array, parents: tuple[Tensor, ...], vjp: Vjp) -> Tensor:
    """Wrap an operation's result; remember ``parents`` and ``vjp`` when it must record.

    ``vjp(g)`` returns one gradient (or None) per parent, each either in the parent's shape and
    dtype or in a shape/dtype that broadcasting and promotion made from them.
    """
    out = Tensor(data)
    if needs_grad(*parents):
        out._requires_grad = True
        out._parents = parents
        out._vjp = vjp
    return out


def _raw(value: Any) -> Any:
    return value.data if isinstance(value, Tensor) else value


def _accumulate(grads: dict[int, Array], parent: Tensor, g: Array) -> None:
    """Add ``g`` to the gradient of ``parent``, first undoing broadcasting and dtype promotion."""
    if tuple(g.shape) != parent.shape:
        g = sum_to_shape(parent.xp, g, parent.shape)
        if tuple(g.shape) != parent.shape:  # e.g. a size-1 axis that an op dropped
            g = parent.xp.reshape(g, parent.shape)
    if g.dtype != parent.dtype:
        g = parent.xp.astype(g, parent.dtype)
    key = id(parent)
    grads[key] = g if key not in grads else grads[key] + g


def _topological_order(root: Tensor) -> list[Tensor]:
    """Nodes that lead to ``root`` (and require grad), every node after all of its parents."""
    order: list[Tensor] = []
    seen: set[int] = set()
    stack: list[tuple[Tensor, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((p, False) for p in node._parents if p.requires_grad and id(p) not in seen)
    return order


# The operator functions, bound by the package's ``__init__`` (the op modules import this one).
_ops: Any = None
