"""``Module`` and ``Parameter``: the containers every layer of ``tropic.nn`` is built from.

A :class:`Module` registers the :class:`Parameter` s, sub-modules and buffers assigned to it as
attributes, in assignment order, so that ``named_parameters()``, ``state_dict()`` and the ``.npz``
round trip see one stable, dotted naming (``"0.weight"``, ``"block.bn.running_mean"``).
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from ..autodiff import Tensor
from ..core._array_api import Array, array_namespace

__all__ = ["Module", "ModuleList", "Parameter", "Sequential", "load_state"]


class Parameter(Tensor):
    """A trainable :class:`~tropic.autodiff.Tensor` (``requires_grad=True``) owned by a module.

    Parameters
    ----------
    data : array
        The initial values (any array-API array), kept as given (not copied).
    zero : float
        The value that means "no connection" for this weight: ``0.0`` for a linear weight, ``-inf``
        for a max-plus weight, ``+inf`` for a min-plus weight. Pruning and weight dropout write it,
        and optimisers keep entries equal to an infinite ``zero`` fixed.

    Attributes
    ----------
    mask : boolean array or None
        Set by pruning: entries where it is False are held at ``zero`` by every optimiser step. A
        module keeps it as its buffer ``"<name>_mask"`` (saved with the state dict) and links the
        parameter to that buffer whenever the buffer is set or loaded.
    """

    def __init__(self, data: Array, zero: float = 0.0) -> None:
        super().__init__(data, requires_grad=True)
        self.zero = float(zero)
        self.mask = None

    def __repr__(self) -> str:
        return f"Parameter(shape={tuple(self.shape)}, dtype={self.dtype})"


class IncompatibleKeys(NamedTuple):
    """Keys of a state dict that did not match the module (returned by a non-strict load)."""

    missing: list[str]
    unexpected: list[str]


class Module:
    """Base class of all layers and models (the design of ``torch.nn.Module``).

    Subclasses call ``super().__init__()`` first, then assign :class:`Parameter` s and sub-modules as
    attributes (registered in that order) and implement ``forward``; calling the module calls
    ``forward``. Non-trainable state (running statistics, pruning masks) is registered with
    :meth:`register_buffer` and is part of :meth:`state_dict`.

    Attributes
    ----------
    training : bool
        Training mode (``True``) or evaluation mode; changed for the whole tree by :meth:`train` /
        :meth:`eval`.
    binary_mode : bool
        Set for the whole tree by :meth:`binary`; binarised layers read it.

    Examples
    --------
    >>> import numpy as np
    >>> import tropic.nn as nn
    >>> class Affine(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.scale = nn.Parameter(np.ones(3))
    ...         self.shift = nn.Parameter(np.zeros(3))
    ...     def forward(self, x):
    ...         return x * self.scale + self.shift
    >>> [name for name, _ in Affine().named_parameters()]
    ['scale', 'shift']
    """

    training: bool
    binary_mode: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "binary_mode", False)

    # -- registration -------------------------------------------------------------------------

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() ran: call super().__init__() first "
                f"in {type(self).__name__}.__init__"
            )
        params, buffers, modules = self._parameters, self._buffers, self._modules
        if isinstance(value, Parameter):
            self._forget(name)
            params[name] = value
        elif isinstance(value, Module):
            self._forget(name)
            modules[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign {type(value).__name__} to parameter {name!r} of "
                    f"{type(self).__name__}: use a Parameter (or None)"
                )
            params[name] = None
        elif name in modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} to sub-module {name!r}")
            modules[name] = None
        elif name in buffers:
            buffers[name] = value
            self._link_masks()
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails: the registered names live in the three dicts.
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        for store in (self._parameters, self._buffers, self._modules):
            if name in store:
                del store[name]
                return
        object.__delattr__(self, name)

    def _forget(self, name: str) -> None:
        for store in (self._parameters, self._buffers, self._modules):
            store.pop(name, None)
        self.__dict__.pop(name, None)

    def register_buffer(self, name: str, array: Array | None) -> None:
        """Register non-trainable state (part of :meth:`state_dict`, untouched by optimisers).

        Parameters
        ----------
        name : str
            Attribute name; must not clash with a parameter or sub-module.
        array : array or None
            The buffer's value; reassigning the attribute later replaces it.
        """
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"buffer name must be a non-empty str without '.', got {name!r}")
        if name in self._parameters or name in self._modules:
            raise ValueError(f"name {name!r} is already a parameter or sub-module of {type(self).__name__}")
        if array is not None:
            array_namespace(array=array)  # a clear TypeError for non-arrays
        self.__dict__.pop(name, None)
        self._buffers[name] = array
        self._link_masks()

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register ``param`` under ``name`` (same as assigning it as an attribute)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"param must be a Parameter or None, got {type(param).__name__}")
        self._forget(name)
        self._parameters[name] = param

    def add_module(self, name: str, module: Module | None) -> None:
        """Register ``module`` under ``name`` (same as assigning it as an attribute)."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"module must be a Module or None, got {type(module).__name__}")
        self._forget(name)
        self._modules[name] = module

    # -- traversal ----------------------------------------------------------------------------

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        """Yield ``(dotted name, module)`` for this module (name ``prefix``) and all below it, once each."""
        seen: set[int] = set()
        stack: list[tuple[str, Module]] = [(prefix, self)]
        while stack:  # iterative pre-order: deep nets do not hit the recursion limit
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [
                (f"{name}.{child_name}" if name else child_name, child)
                for child_name, child in module._modules.items()
                if child is not None
            ]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        """Yield every module of the tree (this one first), once each."""
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Yield ``(name, module)`` for the direct sub-modules."""
        for name, child in self._modules.items():
            if child is not None:
                yield name, child

    def children(self) -> Iterator[Module]:
        """Yield the direct sub-modules."""
        for _, child in self.named_children():
            yield child

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Yield ``(dotted name, parameter)``: a module's own parameters, then its sub-modules' in order.

        A parameter shared by several modules is yielded once, under its first name.
        """
        seen: set[int] = set()
        for module_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{module_name}.{name}" if module_name else name), p

    def parameters(self) -> Iterator[Parameter]:
        """Yield every parameter of the tree once (the order of :meth:`named_parameters`)."""
        for _, p in self.named_parameters():
            yield p

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Array]]:
        """Yield ``(dotted name, array)`` for every buffer of the tree."""
        for module_name, module in self.named_modules(prefix):
            for name, b in module._buffers.items():
                if b is not None:
                    yield (f"{module_name}.{name}" if module_name else name), b

    def buffers(self) -> Iterator[Array]:
        """Yield every buffer of the tree."""
        for _, b in self.named_buffers():
            yield b

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call ``fn(module)`` on every sub-module (children first) and then on this one; return self."""
        for module in reversed(list(self.modules())):
            fn(module)
        return self

    # -- modes --------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> Module:
        """Set training mode (``mode=True``) or evaluation mode on the whole tree; return self."""
        return self._set_flag("training", mode)

    def eval(self) -> Module:
        """Evaluation mode for the whole tree (``train(False)``); return self."""
        return self.train(False)

    def binary(self, mode: bool = True) -> Module:
        """Set ``binary_mode`` on every module of the tree (binarised layers read it); return self."""
        return self._set_flag("binary_mode", mode)

    def _set_flag(self, attr: str, mode: bool) -> Module:
        if not isinstance(mode, bool):
            raise TypeError(f"mode must be a bool, got {type(mode).__name__}")
        for module in self.modules():
            object.__setattr__(module, attr, mode)
        return self

    def zero_grad(self) -> None:
        """Forget the accumulated gradients (``grad = None``) of every parameter."""
        for p in self.parameters():
            p.grad = None

    # -- state --------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Array]:
        """Copies of every parameter's and buffer's array, keyed by dotted name.

        Parameters come first (order of :meth:`named_parameters`), then buffers. Shared parameters
        appear once.
        """
        state: dict[str, Array] = {}
        for name, p in self.named_parameters():
            state[name] = _copy(p.data)
        for name, b in self.named_buffers():
            state[name] = _copy(b)
        return state

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy the arrays of ``state`` into this module's parameters and buffers.

        Parameters
        ----------
        state : dict
            Name -> array, as made by :meth:`state_dict` or :func:`load_state`.
        strict : bool
            If True (default), the keys must match exactly. A key ``"<param>_mask"`` for an existing
            parameter (a pruning mask) is accepted even when this module is not pruned yet.

        Returns
        -------
        IncompatibleKeys
            ``(missing, unexpected)`` key lists (both empty after a strict load).

        Raises
        ------
        KeyError
            ``strict`` and keys missing or unexpected (all of them named).
        ValueError
            A shape or dtype differs from the module's (nothing is loaded then).
        """
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict of arrays, got {type(state).__name__}")
        targets, missing, unexpected = self._match_keys(state, strict, "state dict")
        updates = []
        for key, (module, name, kind) in targets.items():
            if key not in state:
                continue
            current = module._parameters[name].data if kind == "param" else module._buffers.get(name)
            value = state[key]
            if current is None:  # a new mask: boolean, shaped like its parameter
                current = module._parameters[name[: -len("_mask")]].data
                xp = array_namespace(current=current)
                value = _convert(xp, value, key)
                if value.dtype != xp.bool or tuple(value.shape) != tuple(current.shape):
                    raise ValueError(
                        f"{key}: a mask must be boolean with shape {tuple(current.shape)}, "
                        f"got {value.dtype} {tuple(value.shape)}"
                    )
            else:
                xp = array_namespace(current=current)
                value = _convert(xp, value, key)
                if tuple(value.shape) != tuple(current.shape) or value.dtype != current.dtype:
                    raise ValueError(
                        f"{key}: expected shape {tuple(current.shape)} and dtype {current.dtype}, got "
                        f"shape {tuple(value.shape)} and dtype {value.dtype}"
                    )
            updates.append((module, name, kind, value))
        for module, name, kind, value in updates:
            if kind == "param":
                module._parameters[name].data = value
            else:
                module._buffers[name] = value
        for module in self.modules():
            module._link_masks()
        return IncompatibleKeys(missing, unexpected)

    def _match_keys(
        self, keys: Iterable[str], strict: bool, what: str
    ) -> tuple[dict[str, tuple[Module, str, str]], list[str], list[str]]:
        """``(targets, missing, unexpected)`` for loading the state ``keys``: ``targets`` maps every
        key this module can take to ``(module, attribute, kind)`` (kind ``"param"``, ``"buffer"`` or
        ``"new mask"``: a pruning mask ``"<param>_mask"`` in ``keys`` for an unpruned parameter).
        ``strict`` and a mismatch raise :class:`KeyError` naming ``what`` and every key."""
        keys = list(keys)
        given = set(keys)
        targets: dict[str, tuple[Module, str, str]] = {}
        for module_name, module in self.named_modules():
            dot = f"{module_name}." if module_name else ""
            for name, p in module._parameters.items():
                if p is not None:
                    targets.setdefault(dot + name, (module, name, "param"))
            for name, b in module._buffers.items():
                if b is not None:
                    targets[dot + name] = (module, name, "buffer")
            for name, p in module._parameters.items():
                key = f"{dot}{name}_mask"
                if p is not None and key not in targets and key in given:
                    targets[key] = (module, f"{name}_mask", "new mask")
        missing = [k for k in targets if k not in given and targets[k][2] != "new mask"]
        unexpected = [k for k in keys if k not in targets]
        if strict and (missing or unexpected):
            raise KeyError(
                f"{what} does not match {type(self).__name__}: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        return targets, missing, unexpected

    def _link_masks(self) -> None:
        # A buffer "<name>_mask" is parameter <name>'s pruning mask: optimisers read it from the
        # parameter, so the link is renewed whenever a buffer is set or replaced.
        for name, p in self._parameters.items():
            if isinstance(p, Parameter):
                p.mask = self._buffers.get(f"{name}_mask")

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` to an uncompressed ``.npz`` file (NumPy's ``savez``).

        Values are stored exactly (``-inf`` weights and running statistics included), so
        ``load`` reproduces outputs bitwise. As NumPy does, ``.npz`` is appended to a path without
        it: ``save("model")`` writes ``model.npz``, and ``load("model")`` reads it back.
        """
        target = path if hasattr(path, "write") else _npz_path(path)
        np.savez(target, **{k: _to_numpy(v) for k, v in self.state_dict().items()})

    def load(self, path: str | os.PathLike, strict: bool = True) -> IncompatibleKeys:
        """Load a file written by :meth:`save` (see :meth:`load_state_dict`).

        ``path`` is the one given to :meth:`save`: ``.npz`` is appended to a name without it (a file
        at exactly ``path`` is read when ``path + ".npz"`` does not exist).

        The file is checked before any array is read: its member names against this module's keys
        (a strict load raises :class:`KeyError` for missing or unexpected ones; a non-strict load
        skips unexpected members unread), then each member's ``.npy`` header (dtype and shape) and
        size against the parameter or buffer it fills (:class:`ValueError` naming the file and the
        key). Reading stops at the announced size, so memory stays of the order of the model,
        whatever the file holds or would expand to.
        """
        with _NpzReader(path) as npz:
            targets, missing, unexpected = self._match_keys(npz.names, strict, str(npz.path))
            expected = {}
            for key in npz.names:
                if key not in targets:
                    continue
                module, name, kind = targets[key]
                if kind == "param":
                    current = module._parameters[name].data
                elif kind == "buffer":
                    current = module._buffers[name]
                else:  # a new mask: boolean, shaped like its parameter
                    current = module._parameters[name[: -len("_mask")]].data
                shape, dtype = tuple(current.shape), _numpy_dtype(current)
                expected[key] = (shape, np.dtype(bool) if kind == "new mask" else dtype)
            for key, (shape, dtype) in expected.items():
                npz.check(key, shape, dtype)  # every header before any data
            state = {key: npz.read(key) for key in expected}
        self.load_state_dict(state, strict=strict)
        return IncompatibleKeys(missing, unexpected)

    def to(self, target: Any) -> Module:
        """Move every parameter and buffer to an array library, or cast the floating ones to a dtype.

        Parameters
        ----------
        target : array namespace (module) or dtype
            A namespace such as ``numpy``, ``array_api_strict`` or ``cupy``: every array is copied
            through the host into it (values, dtypes and ``-inf`` entries unchanged). A dtype: every
            floating-point parameter and buffer is cast (integer and boolean buffers are kept).

        Returns
        -------
        self
            Parameters stay the same objects (``.data`` is replaced); gradients are dropped. Create
            optimisers after moving, since their state lives in the old library.
        """
        if isinstance(target, ModuleType):

            def convert(x):
                return target.asarray(_to_numpy(x).copy())

        else:

            def convert(x):
                xp = array_namespace(x=x)
                return xp.astype(x, target) if xp.isdtype(x.dtype, "real floating") else x

        for module in self.modules():
            for p in module._parameters.values():
                if p is not None:
                    p.data = convert(p.data)
                    p.grad = None
            for name, b in module._buffers.items():
                if b is not None:
                    module._buffers[name] = convert(b)
            module._link_masks()
        return self

    # -- display ------------------------------------------------------------------------------

    def extra_repr(self) -> str:
        """The text inside this module's parentheses in ``repr`` (layers override it)."""
        return ""

    def __repr__(self) -> str:
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        if self.extra_repr():
            lines.append(f"  {self.extra_repr()}")
        for name, child in children:
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        lines.append(")")
        return "\n".join(lines)


class Sequential(Module):
    """Modules applied one after another: ``Sequential(f, g)(x) == g(f(x))``.

    Indexable (an int gives a module, a slice a new ``Sequential`` sharing the modules), iterable,
    ``len``; sub-modules are named ``"0"``, ``"1"``, ...

    Examples
    --------
    >>> import tropic.nn as nn
    >>> net = nn.Sequential(nn.Linear(4, 3, seed=0), nn.ReLU())
    >>> len(net), type(net[1]).__name__
    (2, 'ReLU')
    """

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for i, module in enumerate(modules):
            if not isinstance(module, Module):
                raise TypeError(f"Sequential takes Modules, argument {i} is {type(module).__name__}")
            self.add_module(str(i), module)

    def forward(self, x: Any) -> Any:
        for module in self._modules.values():
            x = module(x)
        return x

    def __getitem__(self, index: int | slice) -> Any:
        items = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*items[index])
        return items[_index(index, len(items))]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))


class ModuleList(Module):
    """A list of modules, registered as sub-modules ``"0"``, ``"1"``, ... (no ``forward`` of its own)."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        self.extend(modules)

    def append(self, module: Module) -> ModuleList:
        """Add ``module`` at the end; return self."""
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList holds Modules, got {type(module).__name__}")
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        """Append every module of ``modules``; return self."""
        for module in modules:
            self.append(module)
        return self

    def __getitem__(self, index: int | slice) -> Any:
        items = list(self._modules.values())
        if isinstance(index, slice):
            return ModuleList(items[index])
        return items[_index(index, len(items))]

    def __setitem__(self, index: int, module: Module) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList holds Modules, got {type(module).__name__}")
        self._modules[str(_index(index, len(self._modules)))] = module

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))


def load_state(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a ``.npz`` written by :meth:`Module.save` into a state dict of NumPy arrays.

    ``path`` as for :meth:`Module.load`. Every member must be a numeric or boolean ``.npy`` array
    whose size in the archive is the one its header announces (no pickles, no trailing data); a
    :class:`ValueError` names the file and the member otherwise.
    """
    with _NpzReader(path) as npz:
        for key in npz.names:
            npz.check(key)
        return {key: npz.read(key) for key in npz.names}


def _npz_path(path: str | os.PathLike) -> str:
    """The file :meth:`Module.save` writes for ``path``: NumPy's rule, ``.npz`` appended unless there."""
    path = os.fspath(path)
    return path if str(path).endswith(".npz") else path + ".npz"


# Deflate emits at least 2 bits per 258-byte match: no member expands by more than 1032 times.
_DEFLATE_MAX_RATIO = 1032


class _NpzReader:
    """The members of a ``.npz`` file, read header first and never past the announced size.

    ``names`` lists the arrays (member names without ``.npy``); :meth:`check` reads a member's
    ``.npy`` header and compares it with the zip directory's size and, if given, with the expected
    shape and dtype; :meth:`read` then reads exactly the announced bytes (the zip layer checks the
    CRC at the end). Every failure is a :class:`ValueError` naming the file (and the member).
    """

    def __init__(self, path: Any) -> None:
        if hasattr(path, "read"):
            self.path, source = getattr(path, "name", "<file>"), path
        else:
            name = os.fspath(path)
            source = _npz_path(name)
            if not os.path.exists(source) and os.path.exists(name):
                source = name
            self.path = source
        try:
            self.zip = zipfile.ZipFile(source)
        except FileNotFoundError:
            raise
        except (OSError, zipfile.BadZipFile, ValueError) as exc:
            raise ValueError(f"{self.path}: not an .npz file ({exc})") from None
        try:
            self._archive_size = os.fstat(self.zip.fp.fileno()).st_size if self.zip.fp else None
        except (AttributeError, OSError, ValueError):  # an in-memory file
            self._archive_size = None
        members = self.zip.infolist()
        names = [m.filename for m in members]
        if len(set(names)) != len(names):
            self.close()
            raise ValueError(f"{self.path}: a member name appears twice")
        bad = [n for n in names if not n.endswith(".npy")]
        if bad:
            self.close()
            raise ValueError(f"{self.path}: member {bad[0]!r} is not an .npy array")
        self.members = {m.filename[: -len(".npy")]: m for m in members}
        self.names = list(self.members)
        self._headers: dict[str, tuple[tuple[int, ...], bool, np.dtype, int]] = {}

    def __enter__(self) -> _NpzReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.zip.close()

    def _fail(self, key: str, message: str) -> ValueError:
        return ValueError(f"{self.path}: {key}: {message}")

    def check(self, key: str, shape: tuple[int, ...] | None = None, dtype: np.dtype | None = None) -> None:
        """Read and check ``key``'s header (and ``shape`` / ``dtype`` where given); no array data."""
        info = self.members[key]
        if self._archive_size is not None and info.compress_size > self._archive_size:
            raise self._fail(key, f"the zip directory announces {info.compress_size} bytes in a "
                             f"{self._archive_size}-byte file")  # fmt: skip
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self._fail(key, f"zip compression method {info.compress_type} is not one NumPy writes")
        deflated = info.compress_type == zipfile.ZIP_DEFLATED
        if info.file_size > info.compress_size * (_DEFLATE_MAX_RATIO if deflated else 1):
            raise self._fail(key, f"the zip directory announces {info.file_size} bytes, more than "
                             f"{info.compress_size} stored bytes can hold")  # fmt: skip
        try:
            with self.zip.open(info) as stream:
                version = np.lib.format.read_magic(stream)
                if version == (1, 0):
                    header = np.lib.format.read_array_header_1_0(stream)
                elif version == (2, 0):
                    header = np.lib.format.read_array_header_2_0(stream)
                else:
                    raise ValueError(f".npy format version {version} is not one save writes")
                offset = stream.tell()
        except (OSError, EOFError, RuntimeError, zipfile.BadZipFile, zlib.error, ValueError) as exc:
            raise self._fail(key, f"not an .npy array ({exc})") from None
        found_shape, fortran, found_dtype = header
        if found_dtype.kind not in "biufc" or found_dtype.fields is not None or found_dtype.subdtype:
            raise self._fail(key, f"dtype {found_dtype} is not a numeric or boolean array dtype")
        if shape is not None and tuple(found_shape) != tuple(shape):
            raise self._fail(key, f"expected shape {tuple(shape)}, the file holds {tuple(found_shape)}")
        if dtype is not None and found_dtype != dtype:
            raise self._fail(key, f"expected dtype {dtype}, the file holds {found_dtype}")
        nbytes = math.prod(found_shape) * found_dtype.itemsize
        if info.file_size != offset + nbytes:
            raise self._fail(
                key,
                f"{info.file_size} bytes in the archive, but its header (shape {tuple(found_shape)}, "
                f"{found_dtype}) implies {offset + nbytes}",
            )
        self._headers[key] = (tuple(found_shape), fortran, found_dtype, offset)

    def read(self, key: str) -> np.ndarray:
        """The array of ``key`` (checked first if :meth:`check` was not called): exactly the bytes
        its header announces."""
        if key not in self._headers:
            self.check(key)
        shape, fortran, dtype, offset = self._headers[key]
        flat = np.empty(math.prod(shape), dtype=dtype)
        view = memoryview(flat.view(np.uint8).reshape(-1))
        try:
            with self.zip.open(self.members[key]) as stream:
                stream.read(offset)
                done = 0
                while done < len(view):
                    part = stream.read(min(1 << 22, len(view) - done))
                    if not part:
                        raise self._fail(key, f"the array data ends after {done} of {len(view)} bytes")
                    view[done : done + len(part)] = part
                    done += len(part)
        except (OSError, EOFError, RuntimeError, zipfile.BadZipFile, zlib.error) as exc:
            raise self._fail(key, f"cannot read the array data ({exc})") from None
        if fortran:
            return flat.reshape(shape[::-1]).transpose()
        return flat.reshape(shape)


def _index(index: Any, n: int) -> int:
    if not isinstance(index, int) or isinstance(index, bool):
        raise TypeError(f"index must be an int or a slice, got {type(index).__name__}")
    if not -n <= index < n:
        raise IndexError(f"index {index} out of range for {n} modules")
    return index % n


def _copy(x: Array) -> Array:
    if isinstance(x, np.ndarray):
        return x.copy()
    xp = array_namespace(x=x)
    return xp.asarray(x, copy=True)


def _to_numpy(x: Array) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "get") and type(x).__module__.startswith("cupy"):
        return x.get()  # CuPy: device to host
    return np.from_dlpack(x)


def _numpy_dtype(x: Array) -> np.dtype | None:
    """The NumPy dtype of an array of any library (None where it has no NumPy equivalent)."""
    try:
        return np.dtype(x.dtype)
    except TypeError:
        pass
    xp = array_namespace(x=x)
    for name in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                 "float32", "float64", "complex64", "complex128"):  # fmt: skip
        if getattr(xp, name, None) == x.dtype:
            return np.dtype(name)
    return None


def _convert(xp: Any, value: Any, key: str) -> Array:
    """``value`` as a fresh array of namespace ``xp`` (NumPy arrays from ``.npz`` go to any library)."""
    try:
        if isinstance(value, np.ndarray) and xp.__name__.split(".")[-1] != "numpy":
            return xp.asarray(value.copy())
        vxp = array_namespace(value=value)
    except TypeError as err:
        raise TypeError(f"{key}: expected an array, got {type(value).__name__}") from err
    if vxp is not xp:
        raise TypeError(f"{key}: expected an array of {xp.__name__}, got one of {vxp.__name__}")
    return _copy(value)
