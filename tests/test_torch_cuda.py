"""tropic's torch custom ops on CUDA tensors: the CuPy backend's kernels on DLPack views.

GPU tests (marked ``gpu``): every operator through the public functions on CUDA tensors against the
same call on the same data on the CPU (the NumPy backend's kernels), bitwise: values, winners and the
gradients autograd computes (dyadic incoming gradients, so every summation order gives the same
sums); bfloat16 too, with rounding ties float32 has not, where CuPy holds bfloat16 arrays (CuPy >= 14
with ml_dtypes), refused with ``TypeError`` elsewhere; gradcheck in float64; torch.compile(fullgraph=True)
of layers on CUDA against eager; a call on a non-default stream whose inputs are written on that stream
just before; zero-copy inputs; empty and non-contiguous tensors; opcheck; mixed devices refused. They
skip without a CUDA build of torch, CuPy or a device, and fail instead when ``TROPIC_REQUIRE_GPU=1``;
the bfloat16 cases skip (even then: bfloat16 on CUDA is an optional capability) where CuPy has no
bfloat16 arrays.

CPU tests: the CUDA kernels are registered for every op; the error messages (no CuPy, mixed devices,
bfloat16 without CuPy >= 14 and ml_dtypes, other devices) and the bfloat16 capability check; and the
CUDA kernels' glue run on the CPU, with NumPy standing in for CuPy (bfloat16 as ml_dtypes' NumPy
dtype) and the NumPy backend's kernels for the CuPy backend's (the two take the same arguments): what
each op hands its kernel, the device and stream it enters, the DLPack exchanges inside the stream
context and the dtypes it returns, against the CPU op bitwise.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
import warnings

import numpy as np
import pytest

import tropic

from .helpers import assert_identical, require_gpu, skip_gpu_test
from .helpers import sample as numpy_sample
from .test_torch_ops import gradcheck_cases, opcheck_cases

torch = pytest.importorskip("torch")
engine = importlib.import_module("tropic.torch.engine")  # torch is here: fail, not skip
cuda_glue = importlib.import_module("tropic.torch._cuda")
compat_numpy = importlib.import_module("array_api_compat.numpy")
ops = torch.ops.tropic


def cuda_kernel(name: str):
    """The CUDA kernel (a Python function) behind op ``name`` (``"matmul"``, ``"matmul_backward"``)."""
    operator, _, backward = name.partition("_backward")
    return engine.ops(operator).kernels["cuda_backward" if name.endswith("_backward") else "cuda"]


# array_api_compat's lru_cache'd helpers make dynamo warn while it traces core's glue: harmless.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

OPS = [
    "matmul",
    "matmul_backward",
    "morphology",
    "morphology_backward",
    "conv2d",
    "conv2d_backward",
    "maxout",
    "maxout_backward",
    "extremum",
    "extremum_backward",
]
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def sample(rng, shape, dtype=torch.float32, specials=True):
    """helpers.sample as a CPU tensor of ``dtype``."""
    return torch.from_numpy(numpy_sample(rng, shape, np.float64, specials)).to(dtype)


def dyadic(rng, shape, dtype=torch.float32):
    """Incoming gradients whose sums are exact in any order (so every summation order agrees).

    bfloat16: halves of small integers, so that the sums are exact in bfloat16 (8 bits) too. The
    NumPy and CuPy backends round a product's gradient to the operands' dtype in each batch, then sum
    the broadcast batches; the CPU ops' half-precision path sums in float32 and rounds once. The two
    agree where the partial sums are exact, which the float16 gradients here are (11 bits) and the
    bfloat16 ones of the other scale would not be."""
    if dtype == torch.bfloat16:
        return torch.from_numpy(rng.integers(-2, 3, size=shape) / 2).to(dtype)
    return torch.from_numpy(rng.integers(-64, 65, size=shape) / 8).to(dtype)


def assert_same(actual, expected):
    """Same dtype, shape and bits (NaN matches NaN, -0.0 != 0.0); ``actual`` may be on any device."""
    assert isinstance(actual, torch.Tensor), type(actual)
    if expected is None:
        assert actual is None
        return
    actual, expected = actual.detach().cpu(), expected.detach().cpu()
    if torch.bfloat16 in (actual.dtype, expected.dtype):  # NumPy has none: float32 keeps the bits
        assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
        actual, expected = actual.float(), expected.float()
    if actual.dtype == torch.float16:  # NumPy has float16: compare there
        actual, expected = actual.numpy(), expected.numpy()
    assert_identical(np.asarray(actual), np.asarray(expected))


# --- the operators, each a function of tensors returning (values, indices) -----------------------

FORWARD = {
    "maxplus_matmul": (lambda a, b: tropic.maxplus_matmul(a, b, return_indices=True), [(5, 7), (7, 3)]),
    "minplus_matmul_tiles": (
        lambda a, b: tropic.minplus_matmul(a, b, return_indices=True),
        [(130, 33), (33, 65)],  # not multiples of the CuPy product's 64 x 64 tile
    ),
    "matmul_broadcast": (
        lambda a, b: tropic.maxplus_matmul(a, b, return_indices=True),
        [(2, 1, 9, 20), (3, 20, 7)],
    ),
    "matmul_layer": (lambda a, b: tropic.maxplus_matmul(a, b, return_indices=True), [(2, 3, 17), (17, 5)]),
    "matvec": (lambda a, b: tropic.minplus_matmul(a, b, return_indices=True), [(6,), (6, 4)]),
    "dilation": (lambda f, s: tropic.dilation(f, s, return_indices=True), [(2, 9, 11), (3, 4)]),
    "erosion_reflect": (
        lambda f, s: tropic.erosion(f, s, mode="reflect", return_indices=True),
        [(2, 9, 11), (3, 3)],
    ),
    "dilation_footprint": (
        lambda f, s: tropic.dilation(f, s, footprint=[[1, 0, 1], [1, 1, 0]], return_indices=True),
        [(3, 7, 8), (2, 3)],
    ),
    "erosion_flat_constant": (
        lambda f: tropic.erosion(f, size=(3, 2), mode="constant", cval=1.5, return_indices=True),
        [(2, 8, 9)],
    ),
    "dilation_flat_wrap": (lambda f: tropic.dilation(f, size=3, mode="wrap", return_indices=True), [(8, 9)]),
    "maxplus_conv2d": (
        lambda x, w: tropic.maxplus_conv2d(x, w, stride=2, padding=1, return_indices=True),
        [(2, 4, 9, 8), (6, 4, 3, 2)],
    ),
    "minplus_conv2d_groups": (
        lambda x, w: tropic.minplus_conv2d(
            x, w, stride=(1, 2), padding=(2, 0), groups=2, return_indices=True
        ),
        [(2, 4, 7, 8), (6, 2, 3, 2)],
    ),
    "maxout": (lambda x: tropic.maxout(x, 3, return_indices=True), [(4, 12)]),
    "maxout_axis": (lambda x: tropic.maxout(x, 2, axis=1, return_indices=True), [(3, 6, 5)]),
}


def run(case, tensors):
    fn, _ = FORWARD[case]
    return fn(*tensors)


# ------------------------------------------------------------------------------------------ GPU


@pytest.fixture(scope="module")
def cuda():
    """The first CUDA device, with CuPy and the CuPy backend; else skip (fail with TROPIC_REQUIRE_GPU=1)."""
    if not torch.cuda.is_available():
        skip_gpu_test(f"this torch ({torch.__version__}) has no usable CUDA device")
    require_gpu()
    return torch.device("cuda", 0)


def skip_unsupported_bfloat16(dtype: torch.dtype) -> None:
    """Skip a bfloat16 GPU case where CuPy has no bfloat16 arrays: a plain skip, TROPIC_REQUIRE_GPU=1
    or not, since bfloat16 on CUDA rests on optional packages (CuPy >= 14, ml_dtypes); the refusal
    itself is tested (test_bfloat16_runs_where_cupy_has_it_else_is_refused)."""
    reason = cuda_glue.bfloat16_unsupported() if dtype == torch.bfloat16 else None
    if reason is not None:
        pytest.skip(f"bfloat16 CUDA tensors need CuPy >= 14 with ml_dtypes here: {reason}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("case", list(FORWARD))
def test_forward_matches_cpu(cuda, case, dtype):
    skip_unsupported_bfloat16(dtype)
    rng = np.random.default_rng(0)
    for _ in range(2):
        inputs = [sample(rng, shape, dtype) for shape in FORWARD[case][1]]
        expected = run(case, inputs)
        actual = run(case, [t.to(cuda) for t in inputs])
        for mine, reference in zip(actual, expected, strict=True):
            assert mine.device == cuda
            assert_same(mine, reference)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("case", list(FORWARD))
def test_gradients_match_cpu(cuda, case, dtype):
    skip_unsupported_bfloat16(dtype)
    rng = np.random.default_rng(1)
    inputs = [sample(rng, shape, dtype) for shape in FORWARD[case][1]]
    cpu_leaves = [t.clone().requires_grad_() for t in inputs]
    cuda_leaves = [t.to(cuda).requires_grad_() for t in inputs]
    expected, _ = run(case, cpu_leaves)
    g = dyadic(rng, tuple(expected.shape), dtype)
    expected.backward(g)
    actual, _ = run(case, cuda_leaves)
    actual.backward(g.to(cuda))
    for mine, reference in zip(cuda_leaves, cpu_leaves, strict=True):
        assert mine.grad.device == cuda
        assert_same(mine.grad, reference.grad)


@pytest.mark.gpu
def test_public_vjps_on_cuda_match_cpu(cuda):
    rng = np.random.default_rng(2)
    a, b = sample(rng, (2, 6, 9)), sample(rng, (9, 5))
    c, k = tropic.maxplus_matmul(a, b, return_indices=True)
    g = dyadic(rng, tuple(c.shape))
    for mine, reference in zip(
        tropic.matmul_vjp(g.to(cuda), k.to(cuda), a.shape, b.shape),
        tropic.matmul_vjp(g, k, a.shape, b.shape),
        strict=True,
    ):
        assert_same(mine, reference)
    image, structure = sample(rng, (2, 7, 6)), sample(rng, (3, 2))
    out, k = tropic.erosion(image, structure, mode="mirror", return_indices=True)
    g = dyadic(rng, tuple(out.shape))
    args = (image.shape, structure.shape)
    for mine, reference in zip(
        tropic.erosion_vjp(g.to(cuda), k.to(cuda), *args, mode="mirror"),
        tropic.erosion_vjp(g, k, *args, mode="mirror"),
        strict=True,
    ):
        assert_same(mine, reference)


@pytest.mark.gpu
def test_gradcheck_float64_on_cuda(cuda):
    for fn, inputs in gradcheck_cases(np.random.default_rng(3)):
        inputs = tuple(t.to(cuda).requires_grad_() for t in inputs)
        assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5), fn


@pytest.mark.gpu
def test_compile_fullgraph_layers_on_cuda_match_eager(cuda):
    from tropic.torch import nn as tnn

    torch.manual_seed(0)
    cases = [  # inductor (the default) for the dense layer; aot_eager keeps the others quick
        (tnn.MaxPlus(16, 8, seed=0), (5, 16), "inductor"),
        (tnn.MinPlusConv2d(3, 4, kernel_size=3, padding=1, seed=1), (2, 3, 9, 9), "aot_eager"),
        (tnn.Dilation2d(3, kernel_size=3, seed=2), (2, 3, 9, 9), "aot_eager"),
    ]
    for layer, shape, backend in cases:
        eager = layer.to(cuda)
        x = torch.randn(shape, device=cuda)
        expected = eager(x)
        g = torch.randn_like(expected)
        expected.backward(g)
        expected_grads = [p.grad.clone() for p in eager.parameters()]
        eager.zero_grad()
        torch._dynamo.reset()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            actual = torch.compile(eager, fullgraph=True, backend=backend)(x)
            actual.backward(g)
        assert_same(actual, expected)
        for p, reference in zip(eager.parameters(), expected_grads, strict=True):
            assert_same(p.grad, reference)


@pytest.mark.gpu
def test_runs_on_the_current_stream(cuda):
    """Inputs written on a side stream behind a long sleep, the op called on that stream, its results
    read on it: right only if every kernel, and both DLPack exchanges, are ordered on that stream."""
    rng = np.random.default_rng(4)
    a, b = sample(rng, (70, 40)), sample(rng, (40, 33))
    image, structure = sample(rng, (2, 20, 21)), sample(rng, (3, 3))
    expected_c, expected_k = tropic.maxplus_matmul(a, b, return_indices=True)
    expected_out, expected_j = tropic.dilation(image, structure, return_indices=True)
    sources = [t.to(cuda) for t in (a, b, image, structure)]
    targets = [torch.full_like(t, float("nan")) for t in sources]
    torch.cuda.synchronize(cuda)
    side = torch.cuda.Stream(cuda)
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)  # about 50 ms of GPU time before the copies on `side`
        for target, source in zip(targets, sources, strict=True):
            target.copy_(source)
        c, k = tropic.maxplus_matmul(targets[0], targets[1], return_indices=True)
        out, j = tropic.dilation(targets[2], targets[3], return_indices=True)
        results = [t.clone() for t in (c, k, out, j)]
    side.synchronize()
    for mine, reference in zip(results, (expected_c, expected_k, expected_out, expected_j), strict=True):
        assert_same(mine, reference)


@pytest.mark.gpu
def test_backward_on_a_side_stream(cuda):
    rng = np.random.default_rng(5)
    x, w = sample(rng, (2, 3, 8, 8)), sample(rng, (4, 3, 3, 3))
    tx, tw = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = tropic.maxplus_conv2d(tx, tw, padding=1)
    g = dyadic(rng, tuple(y.shape))
    y.backward(g)
    side = torch.cuda.Stream(cuda)
    cx, cw = x.to(cuda).requires_grad_(), w.to(cuda).requires_grad_()
    cg = g.to(cuda)
    side.wait_stream(torch.cuda.current_stream(cuda))
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)
        tropic.maxplus_conv2d(cx, cw, padding=1).backward(cg)
        grads = [cx.grad.clone(), cw.grad.clone()]
    side.synchronize()
    assert_same(grads[0], tx.grad)
    assert_same(grads[1], tw.grad)


@pytest.mark.gpu
def test_inputs_are_viewed_not_copied(cuda, monkeypatch):
    seen = []
    original = cuda_glue.as_cupy

    def spy(cupy, t):
        view = original(cupy, t)
        seen.append((view.data.ptr, t.data_ptr()))
        return view

    monkeypatch.setattr(cuda_glue, "as_cupy", spy)
    rng = np.random.default_rng(6)
    a, b = sample(rng, (4, 6)).to(cuda), sample(rng, (6, 3)).to(cuda)
    tropic.maxplus_matmul(a, b)
    x, w = sample(rng, (1, 2, 5, 5)).to(cuda), sample(rng, (3, 2, 2, 2)).to(cuda)
    tropic.minplus_conv2d(x, w)
    assert len(seen) == 4 and all(view == tensor for view, tensor in seen)


@pytest.mark.gpu
def test_non_contiguous_and_empty_tensors(cuda):
    """Views (transposed, strided) and empty tensors, cut the same way from the same data on both
    devices."""
    rng = np.random.default_rng(7)
    big = sample(rng, (12, 10))

    def maxplus(a, b):
        return tropic.maxplus_matmul(a, b, return_indices=True)

    def minplus(a, b):
        return tropic.minplus_matmul(a, b, return_indices=True)

    cases = [
        (maxplus, lambda t: (t.t(), t[:, ::2])),
        (lambda f: tropic.dilation(f, size=3, return_indices=True), lambda t: (t[::2, 1:],)),
        (lambda x: tropic.maxout(x, 2, axis=0, return_indices=True), lambda t: (t.t(),)),
        (maxplus, lambda t: (t[:0], t[:10, :4])),  # M = 0
        (minplus, lambda t: (t[:3, :0], t[:0, :4])),  # K = 0: the tropical zero, no winners
        (lambda f, s: tropic.erosion(f, s, return_indices=True), lambda t: (t[:0].view(0, 4, 5), t[:2, :2])),
        (lambda x: tropic.maxout(x, 2, return_indices=True), lambda t: (t[:3, :0],)),
    ]
    for fn, cut in cases:
        expected = fn(*cut(big))
        actual = fn(*cut(big.to(cuda)))
        for mine, reference in zip(actual, expected, strict=True):
            assert_same(mine, reference)
    assert not big.to(cuda).t().is_contiguous()  # the views above reach the kernels as views


@pytest.mark.gpu
def test_opcheck_on_cuda(cuda):
    cases = opcheck_cases(np.random.default_rng(8))  # the CPU test's cases, on the GPU
    for op, args in cases:
        args = tuple(a.to(cuda) if isinstance(a, torch.Tensor) else a for a in args)
        torch.library.opcheck(op, args)


@pytest.mark.gpu
def test_mixed_devices_are_refused(cuda):
    a, b = torch.randn(3, 4, device=cuda), torch.randn(4, 2)
    with pytest.raises(ValueError, match="same device"):
        tropic.maxplus_matmul(a, b)
    with pytest.raises(ValueError, match="a on cuda:0, b on cpu"):
        ops.matmul(a, b, None, True)
    c, k = tropic.maxplus_matmul(a, b.to(cuda), return_indices=True)
    with pytest.raises(ValueError, match="grad on cuda:0, indices on cpu"):
        tropic.matmul_vjp(torch.ones_like(c), k.cpu(), a.shape, b.shape)
    with pytest.raises(ValueError, match="image on cpu, structure on cuda:0"):
        structure = torch.zeros(2, 2, device=cuda)
        modes = ["neutral", "neutral"]
        ops.morphology(torch.randn(4, 4), structure, [True] * 4, [2, 2, 1, 1], [-2, -1], True, modes, 0.0)


@pytest.mark.gpu
def test_bfloat16_runs_where_cupy_has_it_else_is_refused(cuda):
    """With CuPy >= 14 and ml_dtypes, bfloat16 CUDA tensors give the CPU's results bitwise; without,
    a TypeError saying what to install (whichever this machine has; the other branch is checked on
    the CPU with the capability check stubbed)."""
    rng = np.random.default_rng(12)
    a, b = sample(rng, (9, 20), torch.bfloat16), sample(rng, (20, 7), torch.bfloat16)
    reason = importlib.import_module("tropic.torch._cuda").bfloat16_unsupported()
    if reason is not None:
        with pytest.raises(TypeError, match=r"a is a bfloat16 CUDA tensor.*CuPy >= 14 with ml_dtypes"):
            tropic.maxplus_matmul(a.to(cuda), b.to(cuda))
        return
    expected = tropic.maxplus_matmul(a, b, return_indices=True)
    actual = tropic.maxplus_matmul(a.to(cuda), b.to(cuda), return_indices=True)
    for mine, reference in zip(actual, expected, strict=True):
        assert mine.device == cuda
        assert_same(mine, reference)


def rounding_tie_cases(rng):
    """(function, bfloat16 inputs) whose candidate sums lie in [245, 265], where bfloat16 keeps only
    the even integers above 256: sums distinct in float32 tie once rounded (257 -> 256, 259 -> 260)."""

    def near_256(shape, sign=1.0):
        return torch.from_numpy(sign * 2.0 * rng.integers(124, 132, size=shape)).bfloat16()

    def small(shape):
        return torch.from_numpy(rng.integers(-3, 4, size=shape).astype(np.float64)).bfloat16()

    return [  # the product and conv2d over several tiles of the tiled kernels, morphology over two
        (
            lambda a, b: tropic.maxplus_matmul(a, b, return_indices=True),
            (near_256((130, 70)), small((70, 66))),
        ),
        (
            lambda a, b: tropic.minplus_matmul(a, b, return_indices=True),
            (near_256((130, 70), -1.0), small((70, 66))),
        ),
        (lambda f, s: tropic.dilation(f, s, return_indices=True), (near_256((2, 40, 36)), small((5, 5)))),
        (
            lambda f, s: tropic.erosion(f, s, mode="reflect", return_indices=True),
            (near_256((2, 40, 36), -1.0), small((5, 5))),
        ),
        (
            lambda x, w: tropic.maxplus_conv2d(x, w, padding=1, groups=2, return_indices=True),
            (near_256((2, 4, 9, 10)), small((70, 2, 3, 3))),
        ),
    ]


def assert_rounding_ties(winners: torch.Tensor, fn, inputs) -> None:
    """The bfloat16 winners come no later than the float32 ones on the same (exactly widened) inputs,
    and earlier somewhere: the first of the candidates whose ROUNDED sums tie won there."""
    _, exact_winners = fn(*(t.float() for t in inputs))
    winners = winners.cpu()
    assert (winners <= exact_winners).all() and (winners < exact_winners).any()


@pytest.mark.gpu
def test_bfloat16_rounding_ties_match_cpu(cuda):
    skip_unsupported_bfloat16(torch.bfloat16)
    for fn, inputs in rounding_tie_cases(np.random.default_rng(11)):
        expected = fn(*inputs)
        actual = fn(*(t.to(cuda) for t in inputs))
        for mine, reference in zip(actual, expected, strict=True):
            assert_same(mine, reference)
        assert_rounding_ties(actual[1], fn, inputs)


@pytest.mark.gpu
def test_second_device(cuda):
    if torch.cuda.device_count() < 2:
        pytest.skip("one CUDA device: the second-device checks need two")
    other = torch.device("cuda", 1)
    rng = np.random.default_rng(9)
    image, structure = sample(rng, (2, 9, 8)), sample(rng, (3, 3))
    expected = tropic.erosion(image, structure, return_indices=True)
    actual = tropic.erosion(image.to(other), structure.to(other), return_indices=True)
    for mine, reference in zip(actual, expected, strict=True):
        assert mine.device == other
        assert_same(mine, reference)
    with pytest.raises(ValueError, match=r"image on cuda:1, structure on cuda:0"):
        ops.morphology(
            image.to(other), structure.to(cuda), [True] * 9, [3, 3, 1, 1], True, "neutral", -np.inf
        )


# ------------------------------------------------------------------------------------------ CPU


def test_every_op_has_a_cuda_kernel():
    for name in OPS:
        assert torch._C._dispatch_has_kernel_for_dispatch_key(f"tropic::{name}", "CUDA"), name


def cupy_available() -> bool:
    from tropic.core import dispatch

    dispatch.load_backend("cupy")
    return dispatch.backend_status()["cupy"] == "loaded"


def test_device_errors():
    cuda_glue.check_device("a", torch.device("cpu"))
    with pytest.raises(NotImplementedError, match="CPU tensors only, got x on meta"):
        cuda_glue.check_device("x", torch.device("meta"))
    with pytest.raises(NotImplementedError, match="CPU tensors only, got a on meta"):
        tropic.maxplus_matmul(torch.empty(3, 4, device="meta"), torch.empty(4, 2, device="meta"))
    cpu, meta = torch.zeros(2, 2), torch.empty(2, 2, device="meta")
    with pytest.raises(ValueError, match="got a on cpu, b on meta"):
        cuda_kernel("matmul")(cpu, meta, None, True)
    with pytest.raises(ValueError, match="got grad on meta, indices on cpu"):
        cuda_kernel("maxout_backward")(meta, cpu.to(torch.int8), [2, 4], [True], 2, 1)
    with pytest.raises(ValueError, match="one CUDA device"):  # no CUDA tensor at all
        cuda_glue.cuda_device(image=cpu, structure=None)


def test_cuda_without_cupy_says_what_to_install(monkeypatch):
    if cupy_available():
        pytest.skip("CuPy is installed here")
    message = r"need the CuPy backend.*pip install cupy-cuda12x.*a is on cuda:0"
    with pytest.raises(NotImplementedError, match=message):
        cuda_glue.check_device("a", torch.device("cuda", 0))
    monkeypatch.setattr(cuda_glue, "cuda_device", lambda **tensors: torch.device("cuda", 0))
    with pytest.raises(NotImplementedError, match=r"not available.*pip install cupy-cuda12x.*tropic::conv2d"):
        cuda_kernel("conv2d")(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 2, 2), [1, 1], [0, 0], 1, True)


def test_bfloat16_cuda_tensors_are_refused_before_any_dlpack_exchange(monkeypatch):
    """Where CuPy has no bfloat16 arrays: a TypeError naming the tensor, what to install and the
    alternatives, before the CuPy kernels (and their DLPack exchanges) are reached."""
    monkeypatch.setattr(cuda_glue, "cuda_device", lambda **tensors: torch.device("cuda", 0))
    monkeypatch.setattr(cuda_glue, "run", lambda *args: pytest.fail("reached the CuPy kernels"))
    monkeypatch.setattr(cuda_glue, "bfloat16_unsupported", lambda: "CuPy 13.6.0 has no bfloat16 arrays")
    x = torch.zeros(2, 4, dtype=torch.bfloat16)
    message = (
        r"x is a bfloat16 CUDA tensor: .*CuPy >= 14 with ml_dtypes only \(CuPy 13.6.0 has no bfloat16 "
        r"arrays\); install both \(`pip install ml_dtypes`, CuPy >= 14\), or use float16, float32 or "
        r"float64 on CUDA \(bfloat16 runs on CPU tensors\)"
    )
    with pytest.raises(TypeError, match=message):
        cuda_kernel("maxout")(x, 2, 1)
    with pytest.raises(TypeError, match="w is a bfloat16"):
        w = torch.zeros(1, 1, 2, 2).bfloat16()
        cuda_kernel("conv2d")(torch.zeros(1, 1, 3, 3), w, [1, 1], [0, 0], 1, True)
    with pytest.raises(TypeError, match="grad is a bfloat16"):
        cuda_kernel("matmul_backward")(
            x, torch.zeros(2, 4, dtype=torch.int8), [2, 3], [3, 4], None, [True, True, False], True
        )


@pytest.mark.parametrize(
    ("ml_dtypes_installed", "cupy_version", "reason"),
    [
        (True, "14.2.0", None),
        (True, "15.0.0a1", None),
        (True, "13.6.0", "CuPy 13.6.0 has no bfloat16 arrays"),
        (False, "14.2.0", "ml_dtypes is not installed"),
        (True, None, "CuPy is not installed"),
    ],
)
def test_bfloat16_capability(monkeypatch, ml_dtypes_installed, cupy_version, reason):
    """CuPy holds bfloat16 arrays from version 14 on, with ml_dtypes: decided from the modules alone."""
    fake_cupy = None if cupy_version is None else types.SimpleNamespace(__version__=cupy_version)
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)  # None: the import fails
    fake_ml_dtypes = types.ModuleType("ml_dtypes") if ml_dtypes_installed else None
    monkeypatch.setitem(sys.modules, "ml_dtypes", fake_ml_dtypes)
    assert cuda_glue.bfloat16_unsupported.__wrapped__() == reason


def test_bfloat16_capability_is_decided_once_per_process(monkeypatch):
    cuda_glue.bfloat16_unsupported.cache_clear()
    try:
        monkeypatch.setitem(sys.modules, "ml_dtypes", None)
        assert cuda_glue.bfloat16_unsupported() == "ml_dtypes is not installed"
        monkeypatch.setitem(sys.modules, "ml_dtypes", types.ModuleType("ml_dtypes"))
        monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(__version__="14.2.0"))
        assert cuda_glue.bfloat16_unsupported() == "ml_dtypes is not installed"
    finally:
        cuda_glue.bfloat16_unsupported.cache_clear()  # the next caller decides from what is installed


def test_bfloat16_rounding_tie_cases_tie_on_the_cpu():
    """The GPU test's cases mean something: on the CPU (its reference) each has rounding ties that
    float32 has not, won by the first candidate."""
    for fn, inputs in rounding_tie_cases(np.random.default_rng(11)):
        assert_rounding_ties(fn(*inputs)[1], fn, inputs)


# --- the CUDA glue on the CPU: NumPy in CuPy's place -----------------------------------------------


def bfloat16_numpy():
    """ml_dtypes' NumPy bfloat16 dtype (what CuPy >= 14 uses); skip without it."""
    return np.dtype(pytest.importorskip("ml_dtypes", reason="bfloat16 arrays need ml_dtypes").bfloat16)


class FakeCupy:
    """NumPy in CuPy's place: records the device and stream contexts the CUDA kernels enter and
    checks that every DLPack exchange happens inside both."""

    def __init__(self, stream_protocol: bool):
        self.entered: list[tuple] = []
        self.depth = 0
        stream = types.SimpleNamespace(from_external=self._from_external) if stream_protocol else object()
        self.cuda = types.SimpleNamespace(Device=self._device, ExternalStream=self._external, Stream=stream)

    @contextlib.contextmanager
    def _context(self, record):
        self.entered.append(record)
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    def _device(self, index):
        assert self.depth == 0
        return self._context(("device", index))

    def _external(self, ptr, device_id):
        assert self.depth == 1, "the stream must be entered inside the device context"
        return self._context(("stream", ptr, device_id))

    def _from_external(self, stream):
        assert self.depth == 1, "the stream must be entered inside the device context"
        return self._context(("stream", stream.cuda_stream, "protocol"))

    def from_dlpack(self, t):
        assert self.depth == 2, "a DLPack exchange outside the device and stream contexts"
        if t.dtype == torch.bfloat16:  # NumPy's DLPack has no bfloat16: the bits, then ml_dtypes' dtype
            return np.from_dlpack(t.view(torch.int16)).view(bfloat16_numpy())
        return np.from_dlpack(t)

    def empty(self, shape, dtype):
        return np.empty(shape, dtype)


class FakeStream:
    cuda_stream = 0x5EED

    def __cuda_stream__(self):
        return (0, self.cuda_stream)


@pytest.fixture(params=["ExternalStream", "stream-protocol"])
def emulated(request, monkeypatch):
    """The ops' CUDA kernels made to run on CPU tensors: the tensors are said to be on cuda:1."""
    fake = FakeCupy(stream_protocol=request.param == "stream-protocol")
    streams = []

    def current_stream(device=None):
        streams.append(device)
        return FakeStream()

    from_dlpack = torch.from_dlpack

    def torch_from_dlpack(x):
        assert fake.depth == 2, "a DLPack exchange outside the device and stream contexts"
        if x.dtype.name == "bfloat16":  # (as in FakeCupy.from_dlpack)
            return from_dlpack(x.view(np.int16)).view(torch.bfloat16)
        return from_dlpack(x)

    monkeypatch.setattr(cuda_glue, "cuda_device", lambda **tensors: torch.device("cuda", 1))
    monkeypatch.setattr(cuda_glue, "bfloat16_unsupported", lambda: None)  # CuPy >= 14 with ml_dtypes
    monkeypatch.setattr(cuda_glue, "require_cupy", lambda where: None)
    # NumPy's namespace in CuPy's place: the specs run the NumPy backend's kernels, which take the
    # same arguments as the CuPy backend's.
    monkeypatch.setattr(cuda_glue, "cupy_modules", lambda: (fake, compat_numpy))
    monkeypatch.setattr(torch.cuda, "current_stream", current_stream)
    monkeypatch.setattr(torch, "from_dlpack", torch_from_dlpack)
    fake.streams = streams
    fake.protocol = request.param == "stream-protocol"
    return fake


def assert_entered_cuda_1(fake, calls: int):
    stream = ("stream", FakeStream.cuda_stream, "protocol" if fake.protocol else 1)
    assert fake.entered == [("device", 1), stream] * calls
    assert fake.streams == [torch.device("cuda", 1)] * calls
    assert fake.depth == 0


def op_cases(rng, dtype):
    """(op name, args) for every op, the backward ops fed the winners of their forward op."""
    a, b = sample(rng, (2, 5, 7), dtype), sample(rng, (7, 4), dtype)
    image, structure = sample(rng, (2, 6, 7), dtype), sample(rng, (3, 2), dtype)
    x, w = sample(rng, (2, 4, 7, 6), dtype), sample(rng, (6, 2, 3, 2), dtype)
    grouped = sample(rng, (3, 4, 5), dtype)
    cases = []
    needs = [True, True, False]
    _, k = ops.matmul(a, b, None, True)
    cases += [("matmul", (a, b, None, True)), ("matmul", (a, b, None, False))]
    cases += [("matmul", (a[0], b[None], None, True)), ("matmul", (a, b, b[0], True))]
    cases += [("matmul_backward", (dyadic(rng, k.shape, dtype), k, [2, 5, 7], [7, 4], None, needs, True))]
    _, k = ops.matmul(a[:1], b[None].expand(3, 7, 4), None, True)  # broadcast batch: grad_a summed back
    cases += [("matmul_backward", (dyadic(rng, k.shape, dtype), k, [1, 5, 7], [3, 7, 4], None, needs, True))]
    borders = [(True, "neutral", -np.inf), (False, "reflect", 0.0), (False, "constant", 1.1)]
    for maximise, mode, fill in borders:
        params = ([True, False, True, True, False, True], [3, 2, 1, 1], [-2, -1], maximise, [mode] * 2, fill)
        cases += [("morphology", (image, structure, *params)), ("morphology", (image, None, *params))]
        _, k = ops.morphology(image, structure, *params)
        g = dyadic(rng, k.shape, dtype)
        cases += [("morphology_backward", (g, k, [2, 6, 7], [3, 2], [True, True], *params))]
    conv = ([2, 1], [1, 0], 2, True)
    _, k = ops.conv2d(x, w, *conv)
    cases += [("conv2d", (x, w, *conv)), ("conv2d", (x, w, [1, 2], [0, 1], 2, False))]
    g = dyadic(rng, k.shape, dtype)
    cases += [("conv2d_backward", (g, k, [2, 4, 7, 6], [6, 2, 3, 2], [True, True], *conv))]
    _, k = ops.maxout(grouped, 5, 2)
    cases += [("maxout", (grouped, 5, 2)), ("maxout", (grouped.transpose(0, 1), 5, 2))]  # strided input
    cases += [("maxout_backward", (dyadic(rng, k.shape, dtype), k, [3, 4, 5], [True], 5, 2))]
    return cases


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_emulated_cuda_kernels_match_the_cpu_ops(emulated, dtype):
    """Each CUDA kernel with NumPy for CuPy gives the CPU op's results bitwise, in the promised
    dtypes, having entered the tensors' device and torch's current stream there once per call
    (bfloat16 as ml_dtypes' NumPy arrays, as CuPy >= 14 holds it)."""
    if dtype == torch.bfloat16:
        bfloat16_numpy()
    rng = np.random.default_rng(10)
    cases = op_cases(rng, dtype)
    for name, args in cases:
        expected = getattr(ops, name)(*args)
        actual = cuda_kernel(name)(*args)
        expected = expected if isinstance(expected, tuple) else (expected,)
        actual = actual if isinstance(actual, tuple) else (actual,)
        for mine, reference in zip(actual, expected, strict=True):
            assert (mine is None) == (reference is None)
            if mine is not None:
                assert mine.is_contiguous()
                assert_same(mine, reference)
    assert_entered_cuda_1(emulated, len(cases))


def test_emulated_cuda_kernels_take_empty_tensors(emulated, monkeypatch):
    """Empty tensors never reach DLPack (nothing to share): they become empty arrays and back."""
    monkeypatch.setattr(cuda_glue, "cuda_device", lambda **tensors: torch.device("cpu"))
    cases = [
        ("matmul", (torch.zeros(0, 3), torch.ones(3, 2), None, True)),
        (
            "matmul",
            (torch.zeros(2, 0, dtype=torch.float64), torch.zeros(0, 3, dtype=torch.float64), None, False),
        ),
        ("maxout", (torch.zeros(0, 4), 2, 1)),
    ]
    if importlib.util.find_spec("ml_dtypes") is not None:  # CuPy's empty bfloat16 arrays need it
        cases += [("maxout", (torch.zeros(3, 0, 2, dtype=torch.bfloat16), 2, 2))]
    for name, args in cases:
        expected = getattr(ops, name)(*args)
        for mine, reference in zip(cuda_kernel(name)(*args), expected, strict=True):
            assert_same(mine, reference)
