"""PyTorch as an engine of tropic's operators: custom ops generated from the operator specs.

For every operator of :mod:`tropic.core.spec` this module defines two ``torch.library`` ops in the
``tropic`` namespace, from the spec's signature (its inputs are the tensors, its params the
schema's other arguments):

``tropic::<name>(inputs..., params...) -> (values, winners)``
    CPU kernel: the spec's ``run`` on NumPy views of the tensors (the NumPy backend's compiled
    kernels; float16 / bfloat16 are widened to float32 and every candidate sum is rounded back to
    their precision, so results are those of the narrow dtype, exactly). CUDA kernel: ``run`` on
    CuPy views (:mod:`tropic.torch._cuda`). Fake kernel: the spec's ``meta``. Autograd: the backward op.
``tropic::<name>_backward(grad, winners, shapes..., needs, params...) -> grads``
    The spec's ``vjp``, computing only the gradients in ``needs``. Its own autograd (double
    backward) is the spec's ``jvp``: the vjp is linear in ``grad`` and its adjoint reads the
    gradients at the winners, which is what the jvp does with tangents.

Public functions (``tropic.maxplus_matmul`` and the others) given torch tensors call :func:`apply`.
On plain CPU tensors in eager mode (no graph being captured, no transform, no torch function or
dispatch mode) it calls the ops' kernels directly, inside one small ``autograd.Function`` whose
backward calls the backward kernel (the backward op when the gradient is itself differentiated), or,
when no gradient is needed, the kernel alone: the dispatcher and ``torch.library``'s autograd
wrapper cost more per call than a small layer's kernels take. Otherwise
it calls the forward op, whose registered autograd is the backward op; under ``torch.func`` transforms
(``grad``, ``jacrev``, ``jvp``, ``vmap``) and ``torch.autograd.forward_ad`` (eager) it runs the op
through an ``autograd.Function`` generated from the same spec instead, because those need
``setup_context`` and a ``jvp`` rule, which ops' registered autograd cannot give. Graphs
(``torch.compile``, ``torch.export``, ``torch.jit.trace``) hold ``tropic::*`` nodes that load in a
fresh process after ``import tropic``. Both paths use the same backward op, so gradients and tie
rules are the same everywhere.

Threads: the CPU kernels use torch's intra-op thread count (``torch.get_num_threads()``) unless
tropic's is set (``tropic.set_num_threads``, ``TROPIC_NUM_THREADS``), so ``torch.set_num_threads(1)``
and DataLoader workers (which torch sets to one thread) hold tropic too. The two pools never work at
once: an op runs its kernel to the end on the calling thread and tropic's helpers while torch's
pool waits, as between any two eager torch ops.
"""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy as np_namespace
import array_api_compat.torch as torch_namespace
import numpy as np
import torch
import torch.autograd.forward_ad as _forward_ad
from torch import Tensor
from torch.utils._python_dispatch import is_in_torch_dispatch_mode as _in_dispatch_mode
from torch.utils.dlpack import to_dlpack

from tropic.backends.numpy.kernels import (
    bfloat16_to_float32,
    float16_to_float32,
    float32_to_bfloat16,
    float32_to_float16,
)
from tropic.core._array_api import index_dtype
from tropic.core.config import host_threads
from tropic.core.spec import OPERATORS, Operator

from . import _cuda

__all__ = ["HALF_DTYPES", "RUNS_LATER_NODES_FIRST", "apply", "array", "ops", "vjp", "wrap"]

HALF_DTYPES = {torch.float16: "float16", torch.bfloat16: "bfloat16"}
_PLAIN_TENSORS = (Tensor, torch.nn.Parameter)
_SCHEMA_TYPES = {
    bool: "bool",
    int: "int",
    float: "float",
    str: "str",
    "int[]": "int[]",
    "bool[]": "bool[]",
    "str[]": "str[]",
}
_library = torch.library.Library("tropic", "DEF")  # the ops are defined once, when this module loads
# torch's engine runs ready nodes by sequence number, the most recently recorded first
RUNS_LATER_NODES_FIRST = True


# -- the engine interface (tropic.core.engines) -------------------------------------------------


def array(x: Any) -> Any:
    """A torch tensor is an array-API array already (checks read it through array_api_compat)."""
    return x


def wrap(x: Any) -> Tensor:
    return x


def apply(
    operator: Operator, inputs: tuple[Any, ...], params: dict[str, Any], winners: bool = True
) -> tuple[Tensor, Tensor | None]:
    """``(values, winners)`` of ``operator`` on torch tensors, differentiable (see the module docstring).
    ``winners=False``: the caller will not read the winners; on the eager CPU path without a gradient
    to record, an operator that ``skips_winners`` then runs without them (None in their place)."""
    op = _OPS[operator.name]
    args = (*inputs, *(_schema_value(params[name]) for name in operator.param_names))
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        _check_devices(operator, inputs)
        return op.forward(*args)  # graphs hold the ops
    transforms = _transforms_active()
    if not transforms and _plain_cpu(inputs):  # CPU tensors: no device to check
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
            return _EagerFunction.apply(op, *args)
        # nothing to differentiate: the kernel alone, without the winners if the caller skips them
        return op.kernels["cpu_unchecked"](*args, winners=winners or not operator.skips_winners)
    _check_devices(operator, inputs)
    return op.function.apply(*args) if transforms else op.forward(*args)


def eager_cpu(*tensors: Tensor) -> bool:
    """Whether ``tensors`` are plain CPU tensors in eager mode: no graph being captured, no
    ``torch.func`` transform or forward-mode AD, no torch function or dispatch mode (the case in
    which :func:`apply` calls the kernels directly, and host code may read the tensors)."""
    return not torch.compiler.is_compiling() and not _transforms_active() and _plain_cpu(tensors)


def _plain_cpu(inputs: tuple) -> bool:
    """Whether the eager CPU path may call the kernels directly: plain CPU tensors (no subclass that
    overrides torch functions) and no torch function or dispatch mode (``FakeTensorMode``,
    ``make_fx``'s tracer, ``FlopCounterMode``), which must see the op."""
    for t in inputs:
        if t is not None and (type(t) not in _PLAIN_TENSORS or not t.is_cpu):
            return False
    return not (_in_dispatch_mode() or torch._C._is_torch_function_mode_enabled())


def _transforms_active() -> bool:
    """Whether a ``torch.func`` transform or forward-mode AD is active: then the call needs the
    generated ``autograd.Function`` (its jvp and vmap rules); otherwise the op, whose registered
    autograd is the same backward, costs less per call."""
    return torch._C._are_functorch_transforms_active() or _forward_ad._current_level >= 0


def vjp(
    operator: Operator, grad: Tensor, winners: Tensor, shapes: tuple, needs: tuple, params: dict[str, Any]
) -> tuple[Tensor | None, ...]:
    """``operator``'s vjp through its backward op (differentiable once more: double backward)."""
    op = _OPS[operator.name]
    _cuda.check_device("grad", grad.device)
    _cuda.check_device("indices", winners.device)
    shape_args = (None if shape is None else list(shape) for shape in shapes)
    values = (_schema_value(params[name]) for name in operator.param_names)
    return _received(op.backward(grad, winners, *shape_args, list(needs), *values))


def ops(name: str) -> Any:
    """The generated ops of operator ``name``: ``.forward``, ``.backward`` (OpOverloads) and
    ``.function`` (the eager ``autograd.Function``)."""
    return _OPS[name]


def _schema_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# -- the kernels of the generated ops ---------------------------------------------------------------


def _split(operator: Operator, args: tuple) -> tuple[tuple, dict[str, Any]]:
    n = len(operator.inputs)
    return args[:n], dict(zip(operator.param_names, args[n:], strict=True))


def _check_inputs(operator: Operator, inputs: tuple, params: dict[str, Any]) -> tuple[tuple[int, ...], int]:
    """What the kernels rely on, for direct ``torch.ops.tropic`` calls too: floating tensors where
    required, optional ones only where allowed, and shapes that fit (the spec's ``meta`` checks them).
    Returns ``meta``'s (output shape, candidates)."""
    for name, t in zip(operator.inputs, inputs, strict=True):
        if t is None:
            if name not in operator.optional:
                raise TypeError(f"tropic::{operator.name}: {name} is required")
        elif not t.dtype.is_floating_point:
            raise TypeError(
                f"tropic::{operator.name}: {name} must have a real floating-point dtype, got {t.dtype}"
            )
    return operator.meta(_shapes(inputs), **params)


def _shapes(inputs: tuple) -> tuple:
    return tuple([None if t is None else tuple(t.shape) for t in inputs])


def _result_dtype(inputs: tuple) -> torch.dtype:
    result = None
    for t in inputs:
        if t is not None:
            dtype = t.dtype
            # promote_types only where dtypes differ: a call of it costs more than the comparison
            result = dtype if result is None or result == dtype else torch.promote_types(result, dtype)
    return result


def _numpy(t: Tensor, widen: bool) -> np.ndarray:
    """A NumPy view of CPU tensor ``t`` through DLPack (no copy, and no pinned storage, unlike
    ``.numpy()``); half precision widened to float32 (exact) when ``widen``, bfloat16 always (NumPy
    has none).

    The conversions run in NumPy, not torch: torch's would start its OpenMP team right before
    tropic's kernel, whose spinning threads then hold the cores tropic's threads need (a float16
    512^3 product took 14.8 ms that way, against 10.5 with the team asleep)."""
    if t.is_neg():  # a lazily negated view: DLPack would hand over the values without their sign
        t = t.detach().resolve_neg()
    if t.dtype == torch.bfloat16:  # NumPy has no bfloat16: read its bits
        return bfloat16_to_float32(np.from_dlpack(_Capsule(t.detach().view(torch.int16))).view(np.uint16))
    x = np.from_dlpack(_Capsule(t))  # (to_dlpack takes a tensor that requires grad: no detach needed)
    return float16_to_float32(x) if widen and x.dtype == np.float16 else x


def _arrays(inputs: tuple, widen: bool) -> tuple:
    """:func:`_numpy` of each input (None stays None), each tensor converted once (an operator that
    stands for two calls takes its shared operands twice)."""
    arrays: list = []
    for i, t in enumerate(inputs):
        if t is None:
            arrays.append(None)
            continue
        for j in range(i):
            if inputs[j] is t:
                arrays.append(arrays[j])
                break
        else:
            arrays.append(_numpy(t, widen))
    return tuple(arrays)


class _Capsule:
    """A CPU tensor's DLPack capsule (``torch.utils.dlpack.to_dlpack``) for ``np.from_dlpack``: a
    third of the cost of the tensor's own ``__dlpack__``, whose checks (gradient, conjugate bit,
    stream) do not apply to the real CPU tensors of the kernels. The arrays come out
    read-only; the kernels only read them."""

    __slots__ = ("capsule",)

    def __init__(self, t: Tensor) -> None:
        self.capsule = to_dlpack(t)

    def __dlpack__(self, **_: Any) -> Any:
        return self.capsule

    def __dlpack_device__(self) -> tuple[int, int]:
        return (1, 0)  # kDLCPU, device 0


def _tensor(x: np.ndarray, dtype: torch.dtype | None = None, contiguous: bool = True) -> Tensor:
    """A kernel result as a contiguous tensor (as the fake kernels promise; ``contiguous=False``: in
    its own layout), in ``dtype``; float32 narrowed to half precision in NumPy, rounding to nearest
    even (see :func:`_numpy`)."""
    if dtype in HALF_DTYPES and x.dtype == np.float32:
        if dtype == torch.float16:
            return torch.from_numpy(float32_to_float16(x))
        return torch.from_numpy(float32_to_bfloat16(x).view(np.int16)).view(torch.bfloat16)
    t = torch.from_numpy(np.ascontiguousarray(x) if contiguous else x)
    return t if dtype is None or t.dtype == dtype else t.to(dtype)


def _forward_cpu(operator: Operator, checked: bool = True):
    """The op's CPU kernel; ``checked=False``: without the checks, for callers that made them
    (the eager path behind tropic's public functions)."""

    def kernel(*args: Any, winners: bool = True) -> tuple[Tensor, Tensor | None]:
        inputs, params = _split(operator, args)
        if checked:
            _check_inputs(operator, inputs, params)
        return _run_on_host(operator, inputs, params, winners)

    return kernel


def _run_on_host(
    operator: Operator, inputs: tuple, params: dict[str, Any], winners: bool = True
) -> tuple[Tensor, Tensor | None]:
    """``operator.run`` on NumPy views of CPU tensors ``inputs`` (the CPU kernel's body; ``winners``
    False only for operators that ``skips_winners``), the results as tensors."""
    dtype = _result_dtype(inputs)
    rounding = HALF_DTYPES.get(dtype)
    arrays = _arrays(inputs, rounding is not None)
    skip = {} if winners else {"winners": False}
    token = host_threads.set(torch.get_num_threads)  # tropic's threads default to torch's
    try:
        values, found = operator.run(np_namespace, *arrays, **params, rounding=rounding, **skip)
    finally:
        host_threads.reset(token)
    return _tensor(values, dtype), None if found is None else _tensor(found)


def _forward_cuda(operator: Operator):
    def kernel(*args: Any) -> tuple[Tensor, Tensor]:
        inputs, params = _split(operator, args)
        tensors = dict(zip(operator.inputs, inputs, strict=True))
        device = _cuda.cuda_device(**tensors)
        _cuda.refuse_bfloat16(**tensors)
        _, n_candidates = _check_inputs(operator, inputs, params)
        dtype = _result_dtype(inputs)
        where = f"tropic::{operator.name}"
        values, winners = _cuda.run(
            lambda xp, *arrays: operator.run(xp, *arrays, **params), device, where, *inputs
        )
        return values.to(dtype), winners.to(index_dtype(torch, n_candidates))

    return kernel


def _forward_fake(operator: Operator):
    def kernel(*args: Any) -> tuple[Tensor, Tensor]:
        inputs, params = _split(operator, args)
        shape, n_candidates = _check_inputs(operator, inputs, params)
        first = next(t for t in inputs if t is not None)
        values = first.new_empty(shape, dtype=_result_dtype(inputs))
        return values, first.new_empty(
            operator.winners_shape(tuple(shape)), dtype=index_dtype(torch, n_candidates)
        )

    return kernel


def _check_devices(operator: Operator, inputs: tuple) -> None:
    """Each tensor on a device the ops run on (CPU, or CUDA with CuPy): the error comes before an op is
    called (and at trace time under torch.compile)."""
    for name, t in zip(operator.inputs, inputs, strict=True):
        if t is not None:
            _cuda.check_device(name, t.device)


def _split_backward(operator: Operator, args: tuple) -> tuple[Tensor, Tensor, tuple, tuple, dict[str, Any]]:
    n = len(operator.inputs)
    grad, winners = args[0], args[1]
    shapes = tuple(None if s is None else tuple(s) for s in args[2 : 2 + n])
    needs = tuple(args[2 + n])
    params = dict(zip(operator.param_names, args[3 + n :], strict=True))
    return grad, winners, shapes, needs, params


def _check_backward(
    operator: Operator, grad: Tensor, winners: Tensor, shapes: tuple, needs: tuple, params: dict[str, Any]
) -> None:
    for name, shape in zip(operator.inputs, shapes, strict=True):
        if shape is None and name not in operator.optional:
            raise TypeError(f"tropic::{operator.name}_backward: the shape of {name} is required")
    if len(needs) != len(operator.inputs):
        raise ValueError(f"tropic::{operator.name}_backward: needs must have {len(operator.inputs)} entries")
    where = f"tropic::{operator.name}_backward"
    if not grad.dtype.is_floating_point:
        raise TypeError(f"{where}: grad must have a real floating-point dtype, got {grad.dtype}")
    if winners.dtype.is_floating_point or winners.dtype.is_complex or winners.dtype == torch.bool:
        raise TypeError(f"{where}: indices must have an integer dtype, got {winners.dtype}")
    shape, _ = operator.meta(shapes, **params)
    winners_shape = operator.winners_shape(tuple(shape))
    for name, t, expected in (("grad", grad, shape), ("indices", winners, winners_shape)):
        if tuple(t.shape) != tuple(expected):
            what = "output shape" if tuple(expected) == tuple(shape) else "shape of the winners"
            raise ValueError(
                f"tropic::{operator.name}_backward: {name} must have the {what} {tuple(expected)}, got "
                f"{tuple(t.shape)}"
            )


def _returned(grads: tuple) -> Any:
    """The backward op's return: one gradient per input (the schema's single return is not a tuple)."""
    return grads[0] if len(grads) == 1 else grads


def _received(grads: Any) -> tuple:
    return grads if isinstance(grads, (tuple, list)) else (grads,)


def _backward_cpu(operator: Operator):
    """The backward op's CPU kernel: checked, the gradients contiguous (as its fake kernel promises)."""

    def kernel(*args: Any) -> Any:
        grad, winners, shapes, needs, params = _split_backward(operator, args)
        _check_backward(operator, grad, winners, shapes, needs, params)
        return _returned(_vjp_on_host(operator, grad, winners, shapes, needs, params, {}, True))

    return kernel


def _eager_backward_cpu(operator: Operator):
    """The eager path's backward kernel: called with what its ``ctx`` holds, without the checks
    (``hints``: the vjp's layout hints, see _layout_hints); the gradients in the layouts the vjp
    gives them."""

    def kernel(
        grad: Tensor, winners: Tensor, shapes: tuple, needs: tuple, params: dict, hints: dict
    ) -> tuple:
        return _vjp_on_host(operator, grad, winners, shapes, needs, params, hints, False)

    return kernel


def _vjp_on_host(
    operator: Operator,
    grad: Tensor,
    winners: Tensor,
    shapes: tuple,
    needs: tuple,
    params: dict[str, Any],
    hints: dict[str, Any],
    contiguous: bool,
) -> tuple[Tensor | None, ...]:
    """``operator.vjp`` on NumPy views of CPU tensors (the backward's CPU kernel's body), the
    gradients as tensors of ``grad``'s dtype (``contiguous``: made contiguous, else in the layouts
    the vjp gives them)."""
    g = _numpy(grad, grad.dtype in HALF_DTYPES)
    token = host_threads.set(torch.get_num_threads)
    try:
        grads = operator.vjp(np_namespace, g, _numpy(winners, False), shapes, needs, **params, **hints)
    finally:
        host_threads.reset(token)
    return tuple([None if x is None else _tensor(x, grad.dtype, contiguous) for x in grads])


def _backward_cuda(operator: Operator):
    def kernel(*args: Any) -> tuple[Tensor | None, ...]:
        grad, winners, shapes, needs, params = _split_backward(operator, args)
        device = _cuda.cuda_device(grad=grad, indices=winners)
        _cuda.refuse_bfloat16(grad=grad)
        _check_backward(operator, grad, winners, shapes, needs, params)

        def vjp(xp: Any, g: Any, k: Any) -> tuple:
            return operator.vjp(xp, g, k, shapes, needs, **params)

        grads = _cuda.run(vjp, device, f"tropic::{operator.name}_backward", grad, winners)
        return _returned(tuple(None if x is None else x.to(grad.dtype) for x in grads))

    return kernel


def _backward_fake(operator: Operator):
    def kernel(*args: Any) -> tuple[Tensor | None, ...]:
        grad, winners, shapes, needs, params = _split_backward(operator, args)
        _check_backward(operator, grad, winners, shapes, needs, params)
        return _returned(
            tuple(
                grad.new_empty(shape) if need and shape is not None else None
                for shape, need in zip(shapes, needs, strict=True)
            )
        )

    return kernel


# -- autograd -------------------------------------------------------------------------------------


def _save(ctx: Any, operator: Operator, inputs: tuple, output: tuple) -> None:
    forward_inputs, params = _split(operator, inputs)
    _save_split(ctx, forward_inputs, params, output[1])


def _save_split(ctx: Any, inputs: tuple, params: dict[str, Any], winners: Tensor) -> None:
    """What the backward reads: the winners, the inputs' shapes and dtypes, the params."""
    ctx.save_for_backward(winners)
    ctx.shapes = _shapes(inputs)
    ctx.dtypes = tuple([None if t is None else t.dtype for t in inputs])
    ctx.params = params


def _backward(operator: Operator, run_backward: Any, ctx: Any, grad: Tensor, first: int = 0) -> tuple:
    """The gradients of the forward's arguments through ``run_backward`` (the backward op, or its
    Function under transforms; ``first``: where the operator's inputs start)."""
    (winners,) = ctx.saved_tensors
    n = len(operator.inputs)
    needs = _needs(ctx, first, n)
    if not any(needs):
        return (None,) * (n + len(operator.params))
    params = [_schema_value(ctx.params[name]) for name in operator.param_names]
    shapes = (None if s is None else list(s) for s in ctx.shapes)
    grads = _received(run_backward(grad, winners, *shapes, list(needs), *params))
    return (*_as_dtypes(grads, ctx.dtypes), *(None,) * len(operator.params))


def _needs(ctx: Any, first: int, n: int) -> tuple[bool, ...]:
    """Which of the operator's inputs (the forward's arguments ``first`` to ``first + n``) want a
    gradient: those autograd asks for, except absent optional ones."""
    return tuple(
        [
            bool(need) and shape is not None
            for need, shape in zip(ctx.needs_input_grad[first : first + n], ctx.shapes, strict=True)
        ]
    )


def _as_dtypes(grads: Any, dtypes: tuple) -> tuple:
    """Each gradient in its input's dtype (the vjp gives ``grad``'s)."""
    return tuple(
        [g if g is None or g.dtype == dtype else g.to(dtype) for g, dtype in zip(grads, dtypes, strict=True)]
    )


def _jvp(operator: Operator, ctx: Any, tangents: tuple) -> Tensor:
    (winners,) = ctx.saved_tensors
    n = len(operator.inputs)
    tangents = tangents[:n]
    out = operator.jvp(torch_namespace, tangents, winners, ctx.shapes, **ctx.params)
    values_dtype = next(dtype for dtype in ctx.dtypes if dtype is not None)
    for dtype in ctx.dtypes[1:]:
        if dtype is not None:
            values_dtype = torch.promote_types(values_dtype, dtype)
    return out.to(values_dtype)


def _register_autograd(operator: Operator, forward: Any, backward: Any) -> None:
    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        _save(ctx, operator, inputs, output)

    def backward_formula(ctx: Any, grad: Tensor, _grad_winners: Tensor) -> tuple:
        return _backward(operator, backward, ctx, grad)

    torch.library.register_autograd(
        f"tropic::{operator.name}", backward_formula, setup_context=setup_context, lib=_library
    )

    # The backward op is linear in grad: its vjp reads the incoming gradients at the winners (jvp).
    n = len(operator.inputs)

    def setup_backward(ctx: Any, inputs: tuple, output: tuple) -> None:
        grad, winners, shapes, needs, params = _split_backward(operator, inputs)
        ctx.save_for_backward(winners)
        ctx.shapes, ctx.params, ctx.grad_dtype = shapes, params, grad.dtype

    def double_backward(ctx: Any, *grads_of_grads: Tensor | None) -> tuple:
        (winners,) = ctx.saved_tensors
        tangents = tuple(grads_of_grads[:n])
        if all(t is None for t in tangents):
            grad_grad = None
        else:
            grad_grad = operator.jvp(torch_namespace, tangents, winners, ctx.shapes, **ctx.params)
            grad_grad = grad_grad.to(ctx.grad_dtype)
        return (grad_grad, None, *(None,) * n, None, *(None,) * len(operator.params))

    torch.library.register_autograd(
        f"tropic::{operator.name}_backward", double_backward, setup_context=setup_backward, lib=_library
    )


def _backward_function(operator: Operator, backward: Any) -> type:
    """The backward op as an ``autograd.Function`` for ``torch.func`` transforms (a gradient that is
    itself differentiated): its vjp is the spec's jvp, its jvp the backward op (it is linear)."""
    n, n_params = len(operator.inputs), len(operator.params)

    def forward_fn(*args: Any) -> Any:
        return backward(*args)

    def setup_context(ctx: Any, inputs: tuple, output: Any) -> None:
        grad, winners, shapes, needs, params = _split_backward(operator, inputs)
        ctx.save_for_backward(winners)
        ctx.save_for_forward(winners)
        ctx.arguments = (list(inputs[2 : 2 + n]), list(needs), list(inputs[3 + n :]))
        ctx.shapes, ctx.params, ctx.grad_dtype = shapes, params, grad.dtype

    def backward_fn(ctx: Any, *grads_of_grads: Tensor | None) -> tuple:
        (winners,) = ctx.saved_tensors
        tangents = tuple(grads_of_grads[:n])
        grad_grad = None
        if any(t is not None for t in tangents):
            grad_grad = operator.jvp(torch_namespace, tangents, winners, ctx.shapes, **ctx.params)
            grad_grad = grad_grad.to(ctx.grad_dtype)
        return (grad_grad, None, *(None,) * n, None, *(None,) * n_params)

    def jvp_fn(ctx: Any, grad_tangent: Tensor | None, *rest: Any) -> Any:
        (winners,) = ctx.saved_tensors
        shapes, needs, params = ctx.arguments
        return _run_backward(backward, None)(grad_tangent, winners, *shapes, needs, *params)

    name = "".join(part.title() for part in operator.name.split("_"))
    return type(
        f"{name}BackwardFunction",
        (torch.autograd.Function,),
        {
            "__doc__": f"tropic::{operator.name}_backward with its vjp and jvp.",
            "generate_vmap_rule": True,
            "forward": staticmethod(forward_fn),
            "setup_context": staticmethod(setup_context),
            "backward": staticmethod(backward_fn),
            "jvp": staticmethod(jvp_fn),
        },
    )


def _run_backward(backward: Any, function: type | None) -> Any:
    """Call the backward op, or, under ``torch.func`` transforms, its Function (``function``)."""

    def run(*args: Any) -> Any:
        if function is not None and _transforms_active():
            return function.apply(*args)
        return backward(*args)

    return run


def _function(operator: Operator, forward: Any, backward: Any) -> type:
    """The eager path's ``autograd.Function`` (functorch transforms and forward-mode AD)."""
    n_params = len(operator.params)

    def forward_fn(*args: Any) -> tuple[Tensor, Tensor]:
        return forward(*args)

    def setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
        _save(ctx, operator, inputs, output)
        ctx.save_for_forward(output[1])
        ctx.mark_non_differentiable(output[1])

    run_backward = _run_backward(backward, _backward_function(operator, backward))

    def backward_fn(ctx: Any, grad: Tensor, _grad_winners: Tensor) -> tuple:
        return _backward(operator, run_backward, ctx, grad)

    def jvp_fn(ctx: Any, *tangents: Tensor | None) -> tuple[Tensor, None]:
        return _jvp(operator, ctx, tangents), None

    name = "".join(part.title() for part in operator.name.split("_"))
    return type(
        f"{name}Function",
        (torch.autograd.Function,),
        {
            "__doc__": f"tropic::{operator.name} with its vjp and jvp ({n_params} static params).",
            "generate_vmap_rule": True,
            "forward": staticmethod(forward_fn),
            "setup_context": staticmethod(setup_context),
            "backward": staticmethod(backward_fn),
            "jvp": staticmethod(jvp_fn),
        },
    )


class _EagerFunction(torch.autograd.Function):
    """The eager CPU path of every operator: the ops' own kernels called directly, without the
    dispatcher and ``torch.library``'s autograd wrapper around them (together about 250 us per
    product's forward and backward, more than a small layer's kernels take). Same kernels, so the
    same values, winners and gradients; a backward that is itself differentiated
    (``create_graph=True``) runs the backward op, whose autograd is the double backward."""

    @staticmethod
    def forward(ctx: Any, op: _Ops, *args: Any) -> tuple[Tensor, Tensor]:
        values, winners = op.kernels["cpu_unchecked"](*args)
        inputs, params = _split(op.operator, args)
        _save_split(ctx, inputs, params, winners)
        ctx.op, ctx.hints = op, _layout_hints(op.operator, inputs)
        ctx.mark_non_differentiable(winners)
        ctx.set_materialize_grads(False)
        return values, winners

    @staticmethod
    def backward(ctx: Any, grad: Tensor | None, _grad_winners: None) -> tuple:
        op = ctx.op
        if grad is None:
            return (None,) * (1 + len(op.operator.inputs) + len(op.operator.params))
        operator = op.operator
        if torch.is_grad_enabled():  # a differentiable backward: the backward op
            return (None, *_backward(operator, op.backward, ctx, grad, first=1))
        (winners,) = ctx.saved_tensors
        needs = _needs(ctx, 1, len(operator.inputs))
        if not any(needs):
            return (None,) * (1 + len(operator.inputs) + len(operator.params))
        kernel = op.kernels["cpu_backward_unchecked"]
        grads = kernel(grad, winners, ctx.shapes, needs, ctx.params, ctx.hints)
        return (None, *_as_dtypes(grads, ctx.dtypes), *(None,) * len(operator.params))


def _layout_hints(operator: Operator, inputs: tuple) -> dict[str, Any]:
    """The operator's vjp layout hints (its spec's ``layout_hints``) for these inputs: an input that
    is the transpose of a C-contiguous matrix (``x @ W.T``'s ``W.T``) gets its gradient in that
    layout, which autograd then hands to ``W.grad`` without the transposing copy it would make of a
    C-contiguous gradient (a tenth of a millisecond for a 256 x 784 weight)."""
    if operator.layout_hints is None:
        return {}
    return operator.layout_hints(tuple([_is_transposed_matrix(t) for t in inputs]))


def _is_transposed_matrix(t: Tensor | None) -> bool:
    """Whether ``t`` is the transposed view of a C-contiguous 2-D tensor (strides (1, rows))."""
    if t is None or t.ndim != 2:
        return False
    strides = t.stride()
    return strides[0] == 1 and strides[1] == t.shape[0] and not t.is_contiguous()


# -- vmap -------------------------------------------------------------------------------------------


def _vmap_rule(op: Any, single: bool, fold: Any = None):
    """The batching rule of ``op``: ``fold(info, in_dims, *args)`` for the cases the op takes as
    leading batch dimensions itself (it returns None where it cannot), else the op on each slice,
    stacked. ``single``: the op returns one tensor (the backward op of a one-input operator)."""

    def rule(info: Any, in_dims: tuple, *args: Any) -> tuple[Any, Any]:
        if fold is not None:
            folded = fold(info, in_dims, *args)
            if folded is not None:
                return folded
        batched = [isinstance(a, Tensor) and d is not None for a, d in zip(args, in_dims, strict=True)]
        moved = [a.movedim(d, 0) if b else a for a, d, b in zip(args, in_dims, batched, strict=True)]
        results = [
            _received(op(*(a[i] if b else a for a, b in zip(moved, batched, strict=True))))
            for i in range(info.batch_size)
        ]
        outputs = tuple(
            None if column[0] is None else torch.stack(list(column)) for column in zip(*results, strict=True)
        )
        dims = tuple(None if o is None else 0 for o in outputs)
        return (outputs[0], dims[0]) if single else (outputs, dims)

    return rule


def _fold_leading(operator: Operator, op: Any):
    """The forward op's own batch handling: the vmapped dimension of the first input in front, the
    other inputs unbatched, for the operators that treat leading dimensions of it as a batch."""

    def fold(info: Any, in_dims: tuple, *args: Any) -> tuple[Any, Any] | None:
        n = len(operator.inputs)
        first, rest = in_dims[0], in_dims[1:n]
        if first is None or any(d is not None for d in rest):
            return None
        x = args[0].movedim(first, 0)
        name = operator.name
        if name == "matmul":
            if x.ndim < 2:  # a batched vector: one row per slice, the same as a matrix
                return None
            return op(x, *args[1:]), (0, 0)
        if name == "morphology":
            structure, axes = args[1], args[2 + operator.param_names.index("axes")]
            if structure is not None and structure.ndim == len(axes) + 1:  # one element per channel
                return None
            return op(x, *args[1:]), (0, 0)
        if name in ("conv2d", "conv3d"):
            B = x.shape[0]
            values, winners = op(x.reshape(B * x.shape[1], *x.shape[2:]), *args[1:])
            return (values.reshape(B, -1, *values.shape[1:]), winners.reshape(B, -1, *winners.shape[1:])), (
                0,
                0,
            )
        if name == "maxout":
            pieces, axis = args[1], args[2]
            return op(x, pieces, (axis % (x.ndim - 1)) + 1), (0, 0)
        return None

    return fold


# -- definitions ------------------------------------------------------------------------------------


class _Ops:
    """One operator's ops (OpOverloads), its eager Function, and the Python kernels behind the ops."""

    def __init__(
        self, operator: Operator, forward: Any, backward: Any, function: type, kernels: dict[str, Any]
    ) -> None:
        self.operator = operator
        self.forward, self.backward, self.function = forward, backward, function
        # {"cpu", "cuda", "cpu_backward", "cuda_backward"}, and the CPU ones "_unchecked" (the eager path)
        self.kernels = kernels


def _schema(operator: Operator) -> tuple[str, str]:
    inputs = [f"Tensor{'?' if name in operator.optional else ''} {name}" for name in operator.inputs]
    params = [f"{_SCHEMA_TYPES[kind]} {name}" for name, kind in operator.params]
    forward = f"{operator.name}({', '.join(inputs + params)}) -> (Tensor, Tensor)"
    shapes = [f"int[]{'?' if name in operator.optional else ''} {name}_shape" for name in operator.inputs]
    returns = ", ".join(["Tensor?"] * len(operator.inputs))
    arguments = ", ".join(["Tensor grad", "Tensor indices", *shapes, "bool[] needs", *params])
    backward = f"{operator.name}_backward({arguments}) -> ({returns})"
    return forward, backward


def _define(operator: Operator) -> _Ops:
    forward_schema, backward_schema = _schema(operator)
    _library.define(forward_schema)
    _library.define(backward_schema)
    name, backward_name = f"tropic::{operator.name}", f"tropic::{operator.name}_backward"
    kernels = {
        "cpu": _forward_cpu(operator),
        "cuda": _forward_cuda(operator),
        "cpu_backward": _backward_cpu(operator),
        "cuda_backward": _backward_cuda(operator),
        "cpu_unchecked": _forward_cpu(operator, checked=False),
        "cpu_backward_unchecked": _eager_backward_cpu(operator),
    }
    torch.library.impl(name, "cpu", kernels["cpu"], lib=_library)
    torch.library.impl(name, "cuda", kernels["cuda"], lib=_library)
    torch.library.register_fake(name, _forward_fake(operator), lib=_library)
    torch.library.impl(backward_name, "cpu", kernels["cpu_backward"], lib=_library)
    torch.library.impl(backward_name, "cuda", kernels["cuda_backward"], lib=_library)
    torch.library.register_fake(backward_name, _backward_fake(operator), lib=_library)
    forward = getattr(torch.ops.tropic, operator.name).default
    backward = getattr(torch.ops.tropic, f"{operator.name}_backward").default
    _register_autograd(operator, forward, backward)
    torch.library.register_vmap(
        name, _vmap_rule(forward, False, _fold_leading(operator, forward)), lib=_library
    )
    torch.library.register_vmap(backward_name, _vmap_rule(backward, len(operator.inputs) == 1), lib=_library)
    return _Ops(operator, forward, backward, _function(operator, forward, backward), kernels)


def _load_operators() -> None:
    # The operator modules define their specs when imported; tropic's package import has done so.
    import tropic  # noqa: F401


_load_operators()
_OPS = {name: _define(operator) for name, operator in OPERATORS.items()}
