"""tropic under PyTorch's transforms and graph capture: torch.func.grad / jacrev / jvp, forward-mode
AD, double backward, torch.export and torch.jit.trace (saved and loaded in a fresh process).

Every operator and every layer: the transforms agree with eager autograd and, away from ties (distinct
input values), with finite differences; exported and traced programs keep eager's tie rule (a bias
tie sends its gradient to the bias).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tropic

torch = pytest.importorskip("torch")
tnn = importlib.import_module("tropic.torch.nn")  # torch is here: fail, not skip
func = torch.func

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def distinct(rng, shape):
    """Values far apart (one winner per output, finite differences stay on one side)."""
    n = int(np.prod(shape))
    return torch.tensor(rng.permutation(n) * 1.0 + rng.random(n) * 0.25, dtype=torch.float64).reshape(shape)


OPERATORS = {
    "maxplus_matmul": (lambda a, b: tropic.maxplus_matmul(a, b), [(3, 4), (4, 5)]),
    "minplus_matmul_bias": (lambda a, b, c: tropic.minplus_matmul(a, b, bias=c), [(2, 3, 4), (4, 5), (5,)]),
    "maxplus_minplus_matmul": (
        lambda a, b, c, d: tropic.maxplus_minplus_matmul(a, b, bias_max=c, bias_min=d),
        [(3, 4), (4, 5), (5,), (5,)],
    ),
    "dilation": (lambda f, s: tropic.dilation(f, s), [(2, 5, 6), (3, 3)]),
    "erosion_reflect": (lambda f, s: tropic.erosion(f, s, mode="reflect"), [(5, 6), (2, 3)]),
    "dilation_per_channel": (lambda f, s: tropic.dilation(f, s), [(1, 2, 5, 4), (2, 3, 3)]),
    "dilation_flat": (lambda f: tropic.dilation(f, size=3), [(5, 5)]),
    "maxplus_conv2d": (
        lambda x, w: tropic.maxplus_conv2d(x, w, padding=1, stride=2),
        [(1, 2, 5, 5), (3, 2, 2, 2)],
    ),
    "minplus_conv2d": (lambda x, w: tropic.minplus_conv2d(x, w, groups=2), [(1, 4, 4, 4), (2, 2, 3, 2)]),
    "maxout": (lambda x: tropic.maxout(x, 2, axis=-1), [(3, 6)]),
    "maximum": (lambda a, b: tropic.maximum(a, b), [(3, 4), (4,)]),
}


def numerical_jacobian(fn, inputs, index, eps=1e-6):
    """Central differences of ``fn`` in input ``index`` (float64), shape output + input."""
    x = inputs[index]
    out = fn(*inputs)
    jac = torch.zeros(out.shape + x.shape, dtype=torch.float64)
    flat = x.reshape(-1)
    for i in range(flat.numel()):
        step = torch.zeros_like(flat)
        step[i] = eps
        plus = list(inputs)
        minus = list(inputs)
        plus[index] = (flat + step).reshape(x.shape)
        minus[index] = (flat - step).reshape(x.shape)
        jac.reshape(out.shape + (-1,))[..., i] = (fn(*plus) - fn(*minus)) / (2 * eps)
    return jac


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_grad_jacrev_jvp_and_forward_ad_agree_with_finite_differences(name):
    fn, shapes = OPERATORS[name]
    rng = np.random.default_rng(sorted(OPERATORS).index(name))
    inputs = [distinct(rng, s) for s in shapes]
    for index in range(len(inputs)):
        expected = numerical_jacobian(fn, inputs, index)

        def of(x, index=index):
            args = list(inputs)
            args[index] = x
            return fn(*args)

        jacobian = func.jacrev(of)(inputs[index])
        torch.testing.assert_close(jacobian, expected, atol=1e-6, rtol=0)
        grad = func.grad(lambda x: of(x).sum())(inputs[index])
        torch.testing.assert_close(grad, expected.reshape(-1, *inputs[index].shape).sum(0), atol=1e-6, rtol=0)
        tangent = torch.tensor(rng.integers(-3, 4, size=shapes[index]), dtype=torch.float64)
        out, jvp = func.jvp(of, (inputs[index],), (tangent,))
        expected_jvp = (expected.reshape(out.numel(), -1) @ tangent.reshape(-1)).reshape(out.shape)
        torch.testing.assert_close(jvp, expected_jvp, atol=1e-6, rtol=0)
        import torch.autograd.forward_ad as fwad

        with fwad.dual_level():
            dual = fwad.make_dual(inputs[index], tangent)
            forward = fwad.unpack_dual(of(dual)).tangent
        assert forward is not None
        assert torch.equal(forward, jvp)


def test_jvp_of_a_flat_dilation_is_not_zero():
    """The issue's example: a 3x3 flat dilation of a 5x5 image with a tangent of ones."""
    x = distinct(np.random.default_rng(0), (5, 5))
    _, tangent = func.jvp(lambda a: tropic.dilation(a, size=3), (x,), (torch.ones_like(x),))
    assert float(tangent.sum()) == 25.0


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_double_backward(name):
    fn, shapes = OPERATORS[name]
    rng = np.random.default_rng(10 + sorted(OPERATORS).index(name))
    inputs = [distinct(rng, s).requires_grad_() for s in shapes]
    assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_vmap_has_batching_rules(name):
    """vmap over each input in turn (and over a grad of it) equals the loop over the batch bitwise,
    without torch's fallback warning ("no batching rule")."""
    import warnings

    fn, shapes = OPERATORS[name]
    rng = np.random.default_rng(20 + sorted(OPERATORS).index(name))
    inputs = [distinct(rng, s) for s in shapes]
    for index in range(len(inputs)):
        batch = torch.stack([inputs[index] + k for k in (0.0, 0.5, -1.25)])

        def of(x, index=index):
            args = list(inputs)
            args[index] = x
            return fn(*args)

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            values = func.vmap(of)(batch)
            grads = func.vmap(func.grad(lambda x: of(x).sum()))(batch)
        assert torch.equal(values, torch.stack([of(b) for b in batch]))
        assert torch.equal(grads, torch.stack([func.grad(lambda x: of(x).sum())(b) for b in batch]))


LAYERS = [
    (lambda: tnn.MaxPlus(5, 4, seed=0, dtype=torch.float64), (3, 5)),
    (lambda: tnn.MinPlus(5, 4, init="sparse", p=0.7, seed=1, dtype=torch.float64), (3, 5)),
    (lambda: tnn.DilationErosion(5, 3, seed=2, dtype=torch.float64), (3, 5)),
    (lambda: tnn.Maxout(5, 3, 2, seed=3, dtype=torch.float64), (3, 5)),
    (lambda: tnn.MaxPlusConv2d(2, 3, 3, padding=1, bias=True, seed=4, dtype=torch.float64), (2, 2, 5, 5)),
    (lambda: tnn.MinPlusConv2d(2, 2, 2, seed=5, dtype=torch.float64), (2, 2, 4, 5)),
    (lambda: tnn.Dilation2d(2, 3, init="normal", seed=6, dtype=torch.float64), (2, 2, 5, 4)),
    (lambda: tnn.Erosion2d(2, 3, init="normal", seed=7, dtype=torch.float64), (2, 2, 5, 4)),
    (lambda: tnn.BiSE(2, 3, 3, seed=8, dtype=torch.float64), (2, 2, 5, 5)),
    (lambda: tnn.BiSEL(2, 2, 3, seed=9, dtype=torch.float64), (1, 2, 5, 5)),
    (lambda: tnn.DenseLUI(6, 3, seed=10, dtype=torch.float64), (4, 6)),
    (lambda: tnn.MPM(5, 4, seed=11, dtype=torch.float64), (3, 5)),
    (lambda: tnn.DEP(5, 4, seed=12, dtype=torch.float64), (3, 5)),
    (lambda: tnn.DiagonalActivation(5, seed=13, dtype=torch.float64), (3, 5)),
    (lambda: tnn.SVDActivation(5, seed=14, dtype=torch.float64), (3, 5)),
    (lambda: tnn.MPMResidual(5, seed=15, dtype=torch.float64), (3, 5)),
]


@pytest.mark.parametrize("index", range(len(LAYERS)), ids=lambda i: type(LAYERS[i][0]()).__name__)
def test_layers_under_torch_func(index):
    """functional_call + grad equals eager backward bitwise; jvp in the parameters equals the eager
    directional derivative of finite differences."""
    make, shape = LAYERS[index]
    layer = make()
    x = distinct(np.random.default_rng(index), shape)
    params = {k: v.detach() for k, v in layer.named_parameters()}
    layer(x).sum().backward()
    eager = {k: v.grad for k, v in layer.named_parameters()}
    grads = func.grad(lambda p: func.functional_call(layer, p, (x,)).sum())(params)
    for name in params:
        assert torch.equal(grads[name], eager[name]), name
    tangents = {k: torch.ones_like(v) for k, v in params.items()}
    out, jvp = func.jvp(lambda p: func.functional_call(layer, p, (x,)), (params,), (tangents,))
    eps = 1e-6
    plus = func.functional_call(layer, {k: v + eps for k, v in params.items()}, (x,))
    minus = func.functional_call(layer, {k: v - eps for k, v in params.items()}, (x,))
    torch.testing.assert_close(jvp, (plus - minus) / (2 * eps), atol=1e-5, rtol=1e-5)


class _BiasTie(torch.nn.Module):
    """A MaxPlus whose bias ties with its product at every output."""

    def __init__(self):
        super().__init__()
        self.layer = tnn.MaxPlus(2, 2, seed=0, dtype=torch.float64)
        with torch.no_grad():
            self.layer.weight.zero_()
            self.layer.bias.zero_()

    def forward(self, x):
        return self.layer(x)


def test_export_keeps_the_bias_tie_rule():
    """Eager sends a bias tie's gradient to the bias; so does the exported program."""
    module = _BiasTie()
    x = torch.zeros(3, 2, dtype=torch.float64)
    module(x).sum().backward()
    eager = module.layer.bias.grad.clone(), module.layer.weight.grad.clone()
    assert torch.equal(eager[0], torch.full((2,), 3.0, dtype=torch.float64))
    assert not eager[1].any()
    program = torch.export.export(module, (x,)).module()
    for p in program.parameters():
        p.grad = None
    program(x).sum().backward()
    grads = dict(program.named_parameters())
    assert torch.equal(grads["layer.bias"].grad, eager[0])
    assert not grads["layer.weight"].grad.any()


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        tnn.Dilation2d(1, 3, init="normal", seed=0),
        tnn.MaxPlusConv2d(1, 2, 3, padding=1, seed=1),
        torch.nn.Flatten(),
        tnn.MaxPlus(32, 4, init="sparse", p=0.5, seed=2),
    )


def _run_fresh(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env
    )


@pytest.mark.parametrize("imports", ["import tropic, torch", "import torch, tropic"])
@pytest.mark.parametrize("kind", ["export", "jit.trace"])
def test_saved_programs_load_in_a_fresh_process(tmp_path, kind, imports):
    """``import tropic`` in a fresh process, before or after torch, defines the ops a saved program
    refers to (``torch.ops.tropic.*``)."""
    model = _model()
    x = torch.randn(2, 1, 4, 4)
    expected = model(x).detach()
    path = tmp_path / ("model.pt2" if kind == "export" else "model.pt")
    if kind == "export":
        torch.export.save(torch.export.export(model, (x,)), path)
        load = "torch.export.load(path).module()"
    else:
        torch.jit.trace(model, (x,)).save(str(path))
        load = "torch.jit.load(path)"
    torch.save({"x": x, "expected": expected}, tmp_path / "data.pt")
    code = f"""
        {imports}
        path = {str(path)!r}
        data = torch.load({str(tmp_path / "data.pt")!r})
        model = {load}
        x = data["x"].clone().requires_grad_()
        out = model(x)
        assert torch.equal(out, data["expected"]), (out, data["expected"])
        out.sum().backward()
        assert x.grad is not None
        print("ok")
    """
    result = _run_fresh(code)
    assert result.returncode == 0, result.stderr[-3000:]


def test_aoti_package_runs_in_a_fresh_process(tmp_path):
    """An AOTInductor package of a tropic model (compiled C++ around the custom ops) loads and runs
    in a fresh process that imports tropic first, giving the eager outputs bitwise."""
    pytest.importorskip("torch._inductor")
    torch.manual_seed(0)
    model = torch.nn.Sequential(tnn.MaxPlusConv2d(1, 2, 3, padding=1, seed=1), torch.nn.Flatten())
    x = torch.randn(2, 1, 4, 4)
    path = torch._inductor.aoti_compile_and_package(
        torch.export.export(model, (x,)), package_path=str(tmp_path / "model.pt2")
    )
    torch.save({"x": x, "expected": model(x).detach()}, tmp_path / "data.pt")
    result = _run_fresh(f"""
        import tropic, torch
        data = torch.load({str(tmp_path / "data.pt")!r})
        model = torch._inductor.aoti_load_package({str(path)!r})
        assert torch.equal(model(data["x"]), data["expected"])
    """)
    assert result.returncode == 0, result.stderr[-3000:]


def test_compile_before_any_eager_call_does_not_recompile():
    """A model compiled in a fresh process before tropic ran anything eagerly compiles once: no guard
    on state that tropic fills lazily."""
    result = _run_fresh("""
        import torch
        import tropic.torch.nn as tnn
        torch._dynamo.config.error_on_recompile = True
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            tnn.Dilation2d(1, 3, init="normal", seed=0),
            tnn.MaxPlusConv2d(1, 2, 3, padding=1, seed=1),
            torch.nn.Flatten(),
            tnn.MaxPlus(32, 4, init="sparse", p=0.5, seed=2),
            tnn.MinPlus(4, 3, seed=3),
        )
        compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
        for _ in range(3):
            x = torch.randn(2, 1, 4, 4, requires_grad=True)
            compiled(x).sum().backward()
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1
    """)
    assert result.returncode == 0, result.stderr[-3000:]


def test_autodiff_tensors_go_through_the_public_functions():
    """tropic.maxplus_matmul, dilation and maxplus_conv2d take tropic.autodiff tensors and record."""
    import tropic.autodiff as ad

    rng = np.random.default_rng(3)
    a, b = (ad.Tensor(rng.standard_normal(s), requires_grad=True) for s in ((3, 4), (4, 2)))
    tropic.maxplus_matmul(a, b).sum().backward()
    assert a.grad is not None and b.grad is not None and a.grad.sum() == 2 * 3
    f, s = (ad.Tensor(rng.standard_normal(shape), requires_grad=True) for shape in ((5, 5), (3, 3)))
    tropic.dilation(f, s).sum().backward()
    assert f.grad.sum() == 25 and s.grad.sum() == 25
    x, w = (
        ad.Tensor(rng.standard_normal(shape), requires_grad=True) for shape in ((1, 1, 4, 4), (2, 1, 2, 2))
    )
    tropic.maxplus_conv2d(x, w).sum().backward()
    assert x.grad.sum() == 18 and w.grad.sum() == 18
