"""The torch engine: tropic's operators as torch custom ops generated from the specs.

Every operator on CPU tensors against the NumPy backend, bitwise (values, winners, gradients),
including ties, infinities and NaN; gradcheck in float64; torch.compile(fullgraph=True) through the
public functions against eager; no copies of contiguous inputs; dtypes and devices; float16 / bfloat16
against the core reference run natively in those dtypes; the errors for other devices and for mixing
array libraries.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest

import tropic
from tropic.core import conv as core_conv
from tropic.core import matmul as core_matmul
from tropic.core import morphology as core_morphology
from tropic.core.semiring import MAX_PLUS, MIN_PLUS

from .helpers import assert_identical, sample

torch = pytest.importorskip("torch")
torch_namespace = importlib.import_module("array_api_compat.torch")  # torch is here: fail, not skip
importlib.import_module("tropic.torch.engine")  # defines torch.ops.tropic.*
ops = torch.ops.tropic
numpy_kernels = importlib.import_module("tropic.backends.numpy.kernels")
from tropic.core import dispatch  # noqa: E402
from tropic.core._array_api import index_dtype  # noqa: E402

# array_api_compat's lru_cache'd helpers make dynamo warn while it traces core's glue: harmless.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def unique(rng, shape, dtype=torch.float64):
    """Distinct values far apart (unique winners, gradcheck's finite differences stay inside)."""
    n = int(np.prod(shape))
    return torch.tensor(rng.permutation(n) * 1.0 + rng.random(n) * 0.5, dtype=dtype).reshape(shape)


def as_torch(*arrays):
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


def assert_same(actual, expected):
    """torch result vs NumPy result: same dtype, shape and bits (NaN matches NaN)."""
    assert isinstance(actual, torch.Tensor), type(actual)
    assert_identical(actual.detach().numpy(), expected)


# --- the operators, each as (call, inputs, vjp) ----------------------------------------------------

MATMUL_SHAPES = [((3, 5), (5, 4)), ((5,), (5, 4)), ((3, 5), (5,)), ((2, 3, 5), (5, 4)), ((3, 5), (2, 5, 4))]
MORPHOLOGY_CASES = [
    dict(structure=True),
    dict(structure=True, footprint=[[1, 0, 1], [1, 1, 0], [0, 1, 1]]),
    dict(size=(3, 2)),
    dict(footprint=[[True, False], [True, True]]),
    dict(structure=True, mode="reflect"),
    dict(size=3, mode="constant", cval=1.5),
    dict(structure=True, mode="wrap"),
]


def se_shape(case):
    if "footprint" in case:
        return np.shape(case["footprint"])
    size = case.get("size", 3)
    return (size, size) if isinstance(size, int) else size


CONV_CASES = [dict(), dict(stride=2, padding=1), dict(stride=(1, 2), padding=(2, 0), groups=2)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
@pytest.mark.parametrize("op", [tropic.maxplus_matmul, tropic.minplus_matmul], ids=lambda f: f.__name__)
def test_matmul_matches_numpy(op, shapes, dtype):
    rng = np.random.default_rng(0)
    for _ in range(3):
        a, b = sample(rng, shapes[0], dtype), sample(rng, shapes[1], dtype)
        c, k = op(a, b, return_indices=True)
        tc, tk = op(*as_torch(a, b), return_indices=True)
        assert_same(tc, c)
        assert_same(tk, k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", MORPHOLOGY_CASES, ids=str)
@pytest.mark.parametrize("op", [tropic.dilation, tropic.erosion], ids=lambda f: f.__name__)
def test_morphology_matches_numpy(op, case, dtype):
    rng = np.random.default_rng(1)
    kwargs = {k: v for k, v in case.items() if k != "structure"}
    shape = se_shape(case)
    for _ in range(3):
        image = sample(rng, (2, 5, 6), dtype)
        structure = sample(rng, shape, dtype) if case.get("structure") else None
        out, k = op(image, structure, return_indices=True, **kwargs)
        t_structure = None if structure is None else torch.from_numpy(structure)
        t_out, t_k = op(torch.from_numpy(image), t_structure, return_indices=True, **kwargs)
        assert_same(t_out, out)
        assert_same(t_k, k)


@pytest.mark.parametrize(
    "op",
    [tropic.opening, tropic.closing, tropic.morphological_gradient, tropic.white_tophat, tropic.black_tophat],
    ids=lambda f: f.__name__,
)
def test_compositions_match_numpy(op):
    rng = np.random.default_rng(2)
    image, structure = sample(rng, (2, 6, 5), specials=False), sample(rng, (3, 3), specials=False)
    assert_same(op(*as_torch(image, structure)), op(image, structure))
    assert_same(op(torch.from_numpy(image), size=(2, 3)), op(image, size=(2, 3)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
@pytest.mark.parametrize("op", [tropic.maxplus_conv2d, tropic.minplus_conv2d], ids=lambda f: f.__name__)
def test_conv2d_matches_numpy(op, case, dtype):
    rng = np.random.default_rng(3)
    for _ in range(3):
        x, w = sample(rng, (2, 4, 6, 5), dtype), sample(rng, (6, 4 // case.get("groups", 1), 3, 2), dtype)
        y, k = op(x, w, return_indices=True, **case)
        ty, tk = op(*as_torch(x, w), return_indices=True, **case)
        assert_same(ty, y)
        assert_same(tk, k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_maxout_matches_numpy(axis, dtype):
    rng = np.random.default_rng(4)
    x = sample(rng, (6, 6, 6), dtype)
    y, k = tropic.maxout(x, 3, axis=axis, return_indices=True)
    ty, tk = tropic.maxout(torch.from_numpy(x), 3, axis=axis, return_indices=True)
    assert_same(ty, y)
    assert_same(tk, k)


# --- gradients: autograd == NumPy vjp, bitwise; the public vjps on torch tensors -----------------


def leaves(*arrays):
    return [torch.from_numpy(a.copy()).requires_grad_() for a in arrays]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
@pytest.mark.parametrize("op", [tropic.maxplus_matmul, tropic.minplus_matmul], ids=lambda f: f.__name__)
def test_matmul_gradients_match_numpy_vjp(op, shapes):
    rng = np.random.default_rng(5)
    a, b = sample(rng, shapes[0]), sample(rng, shapes[1])
    _, k = op(a, b, return_indices=True)
    g = rng.standard_normal(k.shape)
    ta, tb = leaves(a, b)
    op(ta, tb).backward(torch.from_numpy(g))
    grad_a, grad_b = tropic.matmul_vjp(g, k, a.shape, b.shape)
    assert_same(ta.grad, grad_a)
    assert_same(tb.grad, grad_b)
    public = tropic.matmul_vjp(*as_torch(g, k), a.shape, b.shape)
    assert_same(public[0], grad_a)
    assert_same(public[1], grad_b)


@pytest.mark.parametrize("case", MORPHOLOGY_CASES, ids=str)
@pytest.mark.parametrize("name", ["dilation", "erosion"])
def test_morphology_gradients_match_numpy_vjp(name, case):
    op, vjp = getattr(tropic, name), getattr(tropic, f"{name}_vjp")
    rng = np.random.default_rng(6)
    kwargs = {k: v for k, v in case.items() if k != "structure"}
    shape = se_shape(case)
    image = sample(rng, (2, 5, 6))
    structure = sample(rng, shape) if case.get("structure") else None
    _, k = op(image, structure, return_indices=True, **kwargs)
    g = rng.standard_normal(k.shape)
    t_image = leaves(image)[0]
    t_structure = None if structure is None else leaves(structure)[0]
    op(t_image, t_structure, **kwargs).backward(torch.from_numpy(g))
    mode = kwargs.get("mode", "neutral")
    grad_image, grad_structure = vjp(g, k, image.shape, shape, mode=mode)
    assert_same(t_image.grad, grad_image)
    if structure is not None:
        assert_same(t_structure.grad, grad_structure)  # erosion: 0.0 - g, +0.0 where no tap wins
    public = vjp(*as_torch(g, k), image.shape, shape, mode=mode)
    assert_same(public[0], grad_image)
    assert_same(public[1], grad_structure)


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
@pytest.mark.parametrize("op", [tropic.maxplus_conv2d, tropic.minplus_conv2d], ids=lambda f: f.__name__)
def test_conv2d_gradients_match_numpy_vjp(op, case):
    rng = np.random.default_rng(7)
    x, w = sample(rng, (2, 4, 6, 5)), sample(rng, (6, 4 // case.get("groups", 1), 3, 2))
    _, k = op(x, w, return_indices=True, **case)
    g = rng.standard_normal(k.shape)
    tx, tw = leaves(x, w)
    op(tx, tw, **case).backward(torch.from_numpy(g))
    grad_x, grad_w = tropic.conv2d_vjp(g, k, x.shape, w.shape, **case)
    assert_same(tx.grad, grad_x)
    assert_same(tw.grad, grad_w)
    public = tropic.conv2d_vjp(*as_torch(g, k), x.shape, w.shape, **case)
    assert_same(public[0], grad_x)
    assert_same(public[1], grad_w)


@pytest.mark.parametrize("axis", [0, -1])
def test_maxout_gradients_match_numpy_vjp(axis):
    rng = np.random.default_rng(8)
    x = sample(rng, (6, 4, 6))
    _, k = tropic.maxout(x, 3, axis=axis, return_indices=True)
    g = rng.standard_normal(k.shape)
    (tx,) = leaves(x)
    tropic.maxout(tx, 3, axis=axis).backward(torch.from_numpy(g))
    expected = tropic.maxout_vjp(g, k, x.shape, 3, axis=axis)
    assert_same(tx.grad, expected)
    assert_same(tropic.maxout_vjp(*as_torch(g, k), x.shape, 3, axis=axis), expected)


def gradcheck_cases(rng) -> list:
    """(function, float64 inputs) pairs covering every op, at unique winners (tests/test_torch_cuda.py
    runs them on CUDA)."""
    a, b = unique(rng, (3, 4)), unique(rng, (4, 5))
    image, structure = unique(rng, (2, 5, 6)), unique(rng, (3, 3))
    x, w = unique(rng, (2, 4, 5, 5)), unique(rng, (4, 2, 2, 3))
    return [
        (tropic.maxplus_matmul, (a, b)),
        (tropic.minplus_matmul, (a, b)),
        (
            lambda a, b, b_min, bias: tropic.maxplus_minplus_matmul(a, b, b_min=b_min, bias_min=bias),
            (a, b, unique(rng, (4, 5)), unique(rng, (5,))),
        ),
        (tropic.dilation, (image, structure)),
        (tropic.erosion, (image, structure)),
        (lambda f: tropic.dilation(f, size=(2, 3), mode="reflect"), (image,)),
        (tropic.opening, (image, structure)),
        (tropic.black_tophat, (image, structure)),
        (lambda x, w: tropic.maxplus_conv2d(x, w, stride=2, padding=1, groups=2), (x, w)),
        (lambda x, w: tropic.minplus_conv2d(x, w, padding=(0, 1)), (x, w[:, :1].repeat(1, 4, 1, 1))),
        (lambda x: tropic.maxout(x, 2, axis=1), (x,)),
    ]


def test_gradcheck_float64_at_unique_winners():
    for fn, inputs in gradcheck_cases(np.random.default_rng(9)):
        inputs = tuple(t.detach().requires_grad_() for t in inputs)
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5), fn


def opcheck_cases(rng):
    """(op, args) covering every custom op's schema: CPU tensors (the CUDA test moves them)."""
    return [
        (ops.matmul, (unique(rng, (2, 3, 4)), unique(rng, (4, 5)), None, True)),
        (
            ops.matmul,
            (unique(rng, (3, 4), torch.float32), unique(rng, (2, 4, 5), torch.float32), None, False),
        ),
        (ops.matmul, (unique(rng, (2, 3, 4)), unique(rng, (4, 5)), unique(rng, (5,)), True)),
        (
            ops.morphology,
            (
                unique(rng, (2, 5, 6)),
                unique(rng, (3, 3)),
                [True] * 9,
                [3, 3, 1, 1],
                [-2, -1],
                False,
                ["reflect"] * 2,
                0.0,
            ),
        ),
        (
            ops.morphology,
            (
                unique(rng, (5, 6)),
                None,
                [True, False, True, True],
                [2, 2, 1, 1],
                [-2, -1],
                True,
                ["neutral"] * 2,
                -np.inf,
            ),
        ),
        (ops.conv2d, (unique(rng, (2, 4, 6, 6)), unique(rng, (6, 2, 3, 3)), [2, 1], [1, 0], 2, True)),
        (ops.maxout, (unique(rng, (3, 4, 10)), 5, 2)),
        (ops.extremum, (unique(rng, (3, 4)), unique(rng, (4,)), True)),
        (
            ops.maxplus_minplus_matmul,
            (
                *(unique(rng, (3, 4)), unique(rng, (4, 5)), unique(rng, (5,))),
                *(unique(rng, (3, 4)), unique(rng, (4, 5)), None),
                False,
            ),
        ),
    ]


def test_opcheck_every_op():
    """torch.library.opcheck: schema, fake kernels, autograd registration, AOT dispatch."""
    for op, args in opcheck_cases(np.random.default_rng(10)):
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("K", [128, 129, 2**15, 2**15 + 1])
def test_fake_kernels_give_the_real_index_dtype(K):
    """The winners' dtype switches at the core rule's bounds; the fake kernels follow it."""
    a, b = torch.randn(1, K), torch.randn(K, 1)
    real = ops.matmul(a, b, None, True)
    with torch._subclasses.fake_tensor.FakeTensorMode() as mode:
        fake = ops.matmul(mode.from_tensor(a), mode.from_tensor(b), None, True)
    assert [t.dtype for t in fake] == [t.dtype for t in real]
    expected = {128: torch.int8, 129: torch.int16}.get(K, real[1].dtype)
    assert real[1].dtype == index_dtype(torch, K) == expected
    assert (
        tropic.maxplus_matmul(a, b, return_indices=True)[1].numpy().dtype
        == tropic.maxplus_matmul(a.numpy(), b.numpy(), return_indices=True)[1].dtype
    )


# --- torch.compile(fullgraph=True) through the public functions -----------------------------------


def every_op(a, b, image, structure, x, w):
    """A small function using every operator (compositions included)."""
    terms = [
        tropic.maxplus_matmul(a, b),
        tropic.minplus_matmul(a, b),
        tropic.dilation(image, structure),
        tropic.erosion(image, size=(2, 2), mode="reflect"),
        tropic.opening(image, structure),
        tropic.closing(image, footprint=[[1, 0], [1, 1]]),
        tropic.morphological_gradient(image, structure),
        tropic.white_tophat(image, size=3),
        tropic.black_tophat(image, structure),
        tropic.maxplus_conv2d(x, w, stride=2, padding=1),
        tropic.minplus_conv2d(x, w),
        tropic.maxout(a, 2, axis=-1),
    ]
    return tuple(terms)


def test_compile_fullgraph_matches_eager():
    """Values and gradients (for one fixed incoming gradient per output) of the compiled function
    equal eager's bitwise."""
    rng = np.random.default_rng(11)
    shapes = [(4, 6), (6, 5), (2, 6, 7), (3, 3), (2, 3, 6, 6), (4, 3, 3, 2)]
    inputs = [torch.tensor(rng.permutation(int(np.prod(s))), dtype=torch.float64).reshape(s) for s in shapes]
    eager_inputs = [t.clone().requires_grad_() for t in inputs]
    compiled_inputs = [t.clone().requires_grad_() for t in inputs]
    expected = every_op(*eager_inputs)
    grads = [torch.tensor(rng.integers(-3, 4, size=t.shape), dtype=t.dtype) for t in expected]
    torch.autograd.backward(expected, grads)
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        actual = torch.compile(every_op, fullgraph=True)(*compiled_inputs)
        torch.autograd.backward(actual, grads)
    for mine, reference in zip(actual, expected, strict=True):
        assert_bits(mine.detach(), reference.detach())
    for mine, reference in zip(compiled_inputs, eager_inputs, strict=True):
        assert_bits(mine.grad, reference.grad)


# --- memory: views in, views out ------------------------------------------------------------------


def test_contiguous_inputs_are_not_copied_and_results_are_not_copied(monkeypatch):
    seen = {}
    real = numpy_kernels.matmul

    def spy(xp, semiring, a, b, bias, rounding, winners):
        seen["inputs"] = (a.ctypes.data, b.ctypes.data)
        c, k = real(xp, semiring, a, b, bias, rounding, winners)
        seen["outputs"] = (c.ctypes.data, None if k is None else k.ctypes.data)
        return c, k

    monkeypatch.setitem(dispatch._kernels, ("numpy", "matmul"), spy)
    a, b = torch.randn(8, 5), torch.randn(5, 7)
    c, k = tropic.maxplus_matmul(a, b, return_indices=True)
    assert seen["inputs"] == (a.data_ptr(), b.data_ptr())  # the tensors' own memory
    assert seen["outputs"] == (c.data_ptr(), k.data_ptr())  # the NumPy results' memory
    tropic.maxplus_matmul(a.T.contiguous().T, b)  # a transposed view: one copy, then the kernel
    assert seen["inputs"][0] != a.data_ptr()


def test_morphology_and_conv_inputs_are_not_copied(monkeypatch):
    seen = []
    for name in ("morphology", "conv2d"):
        real = getattr(numpy_kernels, name)

        def spy(xp, semiring, first, *rest, _real=real):
            seen.append(first.ctypes.data)
            return _real(xp, semiring, first, *rest)

        monkeypatch.setitem(dispatch._kernels, ("numpy", name), spy)
    image, x, w = torch.randn(2, 5, 6), torch.randn(1, 2, 5, 5), torch.randn(3, 2, 2, 2)
    tropic.dilation(image, size=3)
    tropic.maxplus_conv2d(x, w)
    assert seen == [image.data_ptr(), x.data_ptr()]


# --- dtypes and devices ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_dtype_and_device_are_preserved(dtype):
    a, b = torch.randn(3, 4, dtype=dtype), torch.randn(4, 2, dtype=dtype)
    image, x, w = (
        torch.randn(2, 5, 5, dtype=dtype),
        torch.randn(1, 2, 5, 5, dtype=dtype),
        torch.randn(3, 2, 2, 2, dtype=dtype),
    )
    results = [
        tropic.maxplus_matmul(a, b),
        tropic.dilation(image, torch.randn(3, 3, dtype=dtype)),
        tropic.erosion(image, size=2),
        tropic.maxplus_conv2d(x, w),
        tropic.maxout(a, 2),
    ]
    for result in results:
        assert result.dtype == dtype and result.device == a.device
    promoted = tropic.maxplus_matmul(a.double(), b.float())
    assert promoted.dtype == torch.float64


def rounded_sample(rng, shape, dtype):
    """Values of every magnitude in ``dtype``, so that many sums round and many rounded sums tie."""
    mantissa = torch.from_numpy(rng.integers(-256, 257, size=shape).astype(np.float32))
    exponent = torch.from_numpy(rng.integers(-12, 6, size=shape).astype(np.float32))
    x = (mantissa * torch.exp2(exponent)).to(dtype)
    x.view(-1)[:: max(1, x.numel() // 3)] = float("-inf")
    return x


def assert_bits(actual, expected):
    """Same dtype, shape, NaN positions and bits elsewhere (so -0.0 != 0.0)."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if actual.is_floating_point():
        nan = actual.isnan()
        assert torch.equal(nan, expected.isnan())
        bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[actual.element_size()]
        actual, expected = actual[~nan].view(bits), expected[~nan].view(bits)
    assert torch.equal(actual, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_is_exact(dtype):
    """Each candidate sum rounded to the dtype before the comparison, ties to the lowest index: the
    core reference run natively in the dtype (torch rounds each addition) is the oracle."""
    rng = np.random.default_rng(12)
    differs_from_float32 = False
    for semiring in (MAX_PLUS, MIN_PLUS):
        a, b = rounded_sample(rng, (2, 7, 40), dtype), rounded_sample(rng, (40, 9), dtype)
        expected = core_matmul.matmul_reference(torch_namespace, semiring, a, b)
        actual = (tropic.maxplus_matmul if semiring.maximises else tropic.minplus_matmul)(
            a, b, return_indices=True
        )
        for mine, reference in zip(actual, expected, strict=True):
            assert_bits(mine, reference)
        # Near-equal sums (64 + small steps): many differ in float32 but tie once rounded, and the
        # lowest index must win. Without the rounding step some winners change.
        a = (64 + torch.from_numpy(rng.integers(0, 4, size=(6, 30))) / 64).to(dtype)
        b = (torch.from_numpy(rng.integers(0, 256, size=(30, 5))) / 256).to(dtype)
        expected = core_matmul.matmul_reference(torch_namespace, semiring, a, b)
        actual = (tropic.maxplus_matmul if semiring.maximises else tropic.minplus_matmul)(
            a, b, return_indices=True
        )
        for mine, reference in zip(actual, expected, strict=True):
            assert_bits(mine, reference)
        unrounded = numpy_kernels.matmul(np, semiring, a.float().numpy(), b.float().numpy(), None)[1]
        differs_from_float32 |= not np.array_equal(unrounded, expected[1].numpy())

        image, structure = rounded_sample(rng, (2, 6, 7), dtype), rounded_sample(rng, (3, 3), dtype)
        weights = structure if semiring.maximises else -structure
        rows = core_morphology.axis_window(6, 3, semiring.maximises, "neutral")
        cols = core_morphology.axis_window(7, 3, semiring.maximises, "neutral")
        expected = core_morphology.morphology_reference(
            torch_namespace, semiring, image, weights, np.ones((3, 3), bool), rows, cols, semiring.zero
        )
        op = tropic.dilation if semiring.maximises else tropic.erosion
        for mine, reference in zip(op(image, structure, return_indices=True), expected, strict=True):
            assert_bits(mine, reference)

        for mode, cval in (("reflect", 0.0), ("constant", 0.1)):  # 0.1: rounded to the dtype first
            for structure in (None, rounded_sample(rng, (2, 3), dtype)):
                rows = core_morphology.axis_window(6, 2, semiring.maximises, mode)
                cols = core_morphology.axis_window(7, 3, semiring.maximises, mode)
                weights = structure if structure is None or semiring.maximises else -structure
                expected = core_morphology.morphology_reference(
                    torch_namespace, semiring, image, weights, np.ones((2, 3), bool), rows, cols, cval
                )
                kwargs = dict(mode=mode, cval=cval, return_indices=True)
                actual = (
                    op(image, structure, **kwargs)
                    if structure is not None
                    else op(image, size=(2, 3), **kwargs)
                )
                for mine, reference in zip(actual, expected, strict=True):
                    assert_bits(mine, reference)

        x, w = rounded_sample(rng, (2, 3, 6, 5), dtype), rounded_sample(rng, (4, 3, 2, 3), dtype)
        geometry = core_conv.ConvGeometry(tuple(x.shape), tuple(w.shape), 1, 1, 1)
        expected = core_conv.conv2d_reference(torch_namespace, semiring, x, w, geometry)
        op = tropic.maxplus_conv2d if semiring.maximises else tropic.minplus_conv2d
        for mine, reference in zip(op(x, w, padding=1, return_indices=True), expected, strict=True):
            assert_bits(mine, reference)
    assert differs_from_float32


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_gradients(dtype):
    """Gradients in the operands' dtype: the NumPy vjp of the float32 gradient, rounded once."""
    rng = np.random.default_rng(13)
    a, b = (
        rounded_sample(rng, (5, 8), dtype).requires_grad_(),
        rounded_sample(rng, (8, 6), dtype).requires_grad_(),
    )
    c, k = tropic.maxplus_matmul(a, b, return_indices=True)
    g = torch.randn(c.shape).to(dtype)
    c.backward(g)
    grad_a, grad_b = tropic.matmul_vjp(g.float().numpy(), k.numpy(), a.shape, b.shape)
    assert torch.equal(a.grad, torch.from_numpy(grad_a).to(dtype))
    assert torch.equal(b.grad, torch.from_numpy(grad_b).to(dtype))


def test_nan_and_infinities_in_half_precision():
    a = torch.tensor([[float("nan"), 1.0], [float("inf"), float("-inf")]], dtype=torch.bfloat16)
    b = torch.tensor([[float("-inf"), 0.0], [2.0, float("inf")]], dtype=torch.bfloat16)
    expected = core_matmul.matmul_reference(torch_namespace, MAX_PLUS, a, b)
    for mine, reference in zip(tropic.maxplus_matmul(a, b, return_indices=True), expected, strict=True):
        assert_bits(mine, reference)


def test_mixing_torch_and_numpy_is_an_error():
    with pytest.raises(TypeError, match="same array library"):
        tropic.maxplus_matmul(torch.randn(2, 3), np.zeros((3, 2)))
    with pytest.raises(TypeError, match="same array library"):
        tropic.dilation(torch.randn(4, 4), np.zeros((3, 3)))
    with pytest.raises(TypeError, match="same array library"):
        tropic.matmul_vjp(torch.randn(2, 2), np.zeros((2, 2), np.int8), (2, 3), (3, 2))


def test_every_operator_has_its_torch_ops():
    """The engine generates a forward and a backward op for every operator spec, with CPU and CUDA
    kernels (torch is an engine now, not a backend: it runs the NumPy and CuPy backends' kernels)."""
    from tropic.core.spec import OPERATORS

    assert set(OPERATORS) >= {"matmul", "morphology", "conv2d", "maxout", "extremum"}
    for name in OPERATORS:
        for op in (getattr(ops, name).default, getattr(ops, f"{name}_backward").default):
            for key in ("CPU", "CUDA"):
                assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), key), (op, key)


def test_compiling_tropic_ops_raises_no_dynamo_warnings():
    """Core's namespace and device lookups answer torch tensors directly, so tracing them does not
    step into array_api_compat's cached type checks (dynamo warns about each such call)."""

    def f(x, w, s):
        return (tropic.maxplus_matmul(x.flatten(1), w).sum() + tropic.dilation(x, s).sum()) * 1.0

    x = torch.randn(2, 1, 4, 4, requires_grad=True)
    w, s = torch.randn(16, 3), torch.zeros(3, 3)
    torch._dynamo.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.compile(f, fullgraph=True, backend="aot_eager")(x, w, s).backward()
    dynamo = [str(w.message) for w in caught if "Dynamo" in str(w.message)]
    assert dynamo == []
    assert x.grad is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(0, 4, 5), (3, 0, 5), (2, 4, 0)], ids=str)
def test_empty_images(shape, dtype):
    """Empty images through the ops (half precision takes its own rounded path): empty results and
    gradients of the right shapes and dtypes."""
    image = torch.zeros(shape, dtype=dtype, requires_grad=True)
    structure = torch.ones(2, 3, dtype=dtype, requires_grad=True)
    for op in (tropic.dilation, tropic.erosion):
        out = op(image, structure)
        assert out.shape == shape and out.dtype == dtype
        out.sum().backward()
        assert image.grad.shape == shape and not structure.grad.any()


# --- the eager CPU path (tropic.torch.engine._EagerFunction) ----------------------------------------


def _counting(monkeypatch, name):
    """Count the eager path's direct kernel calls of operator ``name``."""
    engine = importlib.import_module("tropic.torch.engine")
    kernels = engine.ops(name).kernels
    calls = []
    inner = kernels["cpu_unchecked"]

    def counted(*args, **kwargs):
        calls.append(args)
        return inner(*args, **kwargs)

    monkeypatch.setitem(kernels, "cpu_unchecked", counted)
    return calls


def test_eager_path_matches_the_ops_bitwise_with_gradients_and_double_backward():
    """The eager path calls the ops' kernels directly: the same values, winners, gradients and
    gradients of gradients as the ops themselves, for every op's schema."""
    engine = importlib.import_module("tropic.torch.engine")
    rng = np.random.default_rng(11)
    for op, args in opcheck_cases(rng):
        name = op.__name__
        results = []
        permutation = None
        for path in ("op", "eager"):
            leaves = [a.detach().clone().requires_grad_() if isinstance(a, torch.Tensor) else a for a in args]
            if path == "op":
                values, winners = op(*leaves)
            else:
                values, winners = engine._EagerFunction.apply(engine.ops(name), *leaves)
            tensors = [a for a in leaves if isinstance(a, torch.Tensor)]
            if permutation is None:  # one upstream gradient for both paths
                permutation = rng.permutation(values.numel()).reshape(values.shape) * 1.0
            upstream = torch.from_numpy(permutation)
            upstream = upstream.to(values.dtype).requires_grad_()
            grads = torch.autograd.grad(values, tensors, upstream, create_graph=True)
            # double backward: d/d(upstream) of <grads, 1> reads the gradients back at the winners
            (grad_of_upstream,) = torch.autograd.grad(sum(g.sum() for g in grads), upstream)
            results.append((values, winners, grads, grad_of_upstream))
        (v0, w0, g0, gg0), (v1, w1, g1, gg1) = results
        assert_identical(v1.detach().numpy(), v0.detach().numpy())
        assert_identical(w1.numpy(), w0.numpy())
        for a, b in zip(g1, g0, strict=True):
            assert_identical(a.detach().numpy(), b.detach().numpy())
        assert_identical(gg1.numpy(), gg0.numpy())


def test_plain_cpu_calls_take_the_eager_path(monkeypatch):
    calls = _counting(monkeypatch, "matmul")
    a, b = torch.randn(3, 4, requires_grad=True), torch.randn(4, 2)
    tropic.maxplus_matmul(a, b).sum().backward()
    with torch.no_grad():  # no gradient needed: the kernel alone, no autograd node
        assert tropic.maxplus_matmul(a, b).grad_fn is None
    assert len(calls) == 2
    assert a.grad is not None


def test_modes_and_graphs_see_the_ops(monkeypatch):
    """Torch dispatch modes (FakeTensorMode, make_fx, FlopCounterMode...) and torch.compile must see
    tropic::* ops, not the eager path's direct kernel calls."""
    from torch.utils._python_dispatch import TorchDispatchMode

    calls = _counting(monkeypatch, "matmul")
    seen = []

    class Log(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.append(str(func))
            return func(*args, **(kwargs or {}))

    a, b = torch.randn(3, 4, requires_grad=True), torch.randn(4, 2)
    with Log():
        tropic.maxplus_matmul(a, b)
    assert "tropic.matmul.default" in seen
    compiled = torch.compile(lambda x, y: tropic.maxplus_matmul(x, y), backend="eager", fullgraph=True)
    assert_identical(compiled(a, b).detach().numpy(), tropic.maxplus_matmul(a, b).detach().numpy())
    assert len(calls) == 1  # only the last, plain call


def test_a_weight_transpose_gets_its_gradient_in_the_weights_layout():
    """``x @ W.T`` on the eager path: the gradient of ``W.T`` comes as the transpose of a contiguous
    (N, K) tensor, so W.grad needs no transposing copy; the numbers are those of the NumPy vjp."""
    rng = np.random.default_rng(12)
    x = torch.from_numpy(rng.integers(-2, 3, (6, 40)).astype(np.float32))
    weight = torch.from_numpy(rng.integers(-2, 3, (30, 40)).astype(np.float32)).requires_grad_()
    bias = torch.zeros(30, requires_grad=True)
    upstream = torch.from_numpy(rng.standard_normal((6, 30)).astype(np.float32))
    seen = []
    view = weight.T
    view.register_hook(lambda g: seen.append(g.stride()))
    values, winners = tropic.maxplus_matmul(x, view, bias=bias, return_indices=True)
    values.backward(upstream)
    assert seen == [(1, 40)]  # W's layout, transposed
    grads = tropic.matmul_vjp(
        upstream.numpy(), np.where(winners.numpy() == 40, -1, winners.numpy()), (6, 40), (40, 30)
    )
    assert_identical(weight.grad.numpy(), np.ascontiguousarray(grads[1].T))
    assert weight.grad.is_contiguous()


def test_values_only_calls_give_the_values_of_the_full_ones():
    """Without return_indices and without a gradient to record (torch no_grad, or inputs that do
    not require grad) the kernels skip the winners: the values are the bits of the full calls."""
    rng = np.random.default_rng(14)
    a, b = torch.from_numpy(rng.integers(-2, 3, (6, 40)).astype(np.float32)), torch.randn(40, 7)
    bias = torch.randn(7)
    x, w = torch.from_numpy(rng.integers(-2, 3, (2, 3, 9, 9)).astype(np.float32)), torch.randn(4, 3, 3, 3)
    calls = [
        (tropic.maxplus_matmul, (a, b), {"bias": bias}),
        (tropic.minplus_matmul, (a, b), {}),
        (tropic.maxplus_conv2d, (x, w), {"padding": 1}),
        (tropic.dilation, (x, w[0, 0]), {"mode": "reflect"}),
    ]
    for fn, args, kwargs in calls:
        full = fn(*args, return_indices=True, **kwargs)[0]
        with torch.no_grad():
            assert_identical(fn(*args, **kwargs).numpy(), full.numpy())
        assert_identical(fn(*args, **kwargs).numpy(), full.numpy())


def test_the_backward_fills_no_gradient_for_the_winners():
    """The winners are not differentiable: autograd must not build a zero-filled gradient for them
    before every backward (at 256 x 1024 that fill, on torch's threads right before tropic's,
    made a layer's backward take 8-10 ms instead of 5). The gradients stay the NumPy vjp's."""
    a, b = torch.randn(64, 32, requires_grad=True), torch.randn(32, 16, requires_grad=True)
    upstream = torch.randn(64, 16)
    for call in (tropic.maxplus_matmul, tropic.minplus_matmul):
        a.grad = b.grad = None
        values, winners = call(a, b, return_indices=True)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            values.backward(upstream)
        ran = {event.name for event in prof.events()}
        assert not ran & {"aten::zeros", "aten::zeros_like", "aten::fill_", "aten::zero_"}, ran
        expected = tropic.matmul_vjp(upstream.numpy(), winners.numpy(), (64, 32), (32, 16))
        assert_identical(a.grad.numpy(), expected[0])
        assert_identical(b.grad.numpy(), expected[1])


def test_lazily_negated_views_give_the_values_of_their_copies():
    """A tensor with the negative bit (``torch._neg_view``) holds its values unnegated in memory:
    the kernels must see the negated values, as of ``resolve_neg()`` (DLPack alone drops the bit)."""
    rng = np.random.default_rng(15)
    a = torch.from_numpy(rng.standard_normal((5, 7)).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal((7, 3)).astype(np.float32))
    x = torch.from_numpy(rng.standard_normal((2, 2, 6, 6)).astype(np.float32))
    w = torch.from_numpy(rng.standard_normal((3, 2, 3, 3)).astype(np.float32))
    negated_a, negated_x = torch._neg_view(a), torch._neg_view(x)
    assert negated_a.is_neg() and negated_x.is_neg()
    for got, want in (
        (
            tropic.maxplus_matmul(negated_a, b, return_indices=True),
            tropic.maxplus_matmul(-a, b, return_indices=True),
        ),
        (
            tropic.maxplus_conv2d(negated_x, w, return_indices=True),
            tropic.maxplus_conv2d(-x, w, return_indices=True),
        ),
        (
            tropic.dilation(negated_x, w[0, 0], return_indices=True),
            tropic.dilation(-x, w[0, 0], return_indices=True),
        ),
    ):
        for g, e in zip(got, want, strict=True):
            assert_identical(g.numpy(), e.numpy())
    from tropic.core._array_api import to_host

    assert_identical(to_host(negated_a), (-a).numpy())
