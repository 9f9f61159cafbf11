"""The torch backend: a max-plus layer's training step on CPU tensors against torch autograd of the
broadcast formula (what PyTorch users write today).

Forward and backward of ``y = x ⊗ w`` (max-plus), batch 256, 1024 -> 1024 features, float32:

* ``tropic``: ``tropic.maxplus_matmul(x, w)`` on tensors that require grad, then ``y.backward(g)``
  (the custom ops ``tropic::matmul`` and ``tropic::matmul_backward``; autograd saves the int16 winners);
* ``torch_broadcast``: ``(x[:, :, None] + w[None]).amax(1)`` then ``backward(g)``: a (256, 1024, 1024)
  float32 intermediate (1 GiB) and as much again for its gradient.

``python -m benchmarks.bench_torch [--repeat N]`` prints the medians, the speed-up and the extra peak
resident memory of a step of each (measured in a fresh process per implementation, on its second step,
after the inputs are built), which asv's ``peakmem_*`` cannot separate from the setup.
"""

from __future__ import annotations

import argparse

import numpy as np

import tropic

from .common import (
    Benchmark,
    LayerStepBenchmark,
    compare_layer_steps,
    preload_torch,
    random_array,
    require_torch,
    same_run_ratio,
    size,
    torch_layer_step,
    tropic_torch_layer_step,
)

# Imported once here, so asv's forked benchmark processes do not each import it again.
preload_torch()

BATCH, IN_FEATURES, OUT_FEATURES = size((256, 1024, 1024), (8, 16, 16))
IMPLEMENTATIONS = ("tropic", "torch_broadcast")


def layer_step(implementation: str):
    """A zero-argument callable running one training step of ``implementation`` on fresh inputs."""
    torch = require_torch()
    x = torch.from_numpy(random_array(BATCH, IN_FEATURES, seed=1))
    w = torch.from_numpy(random_array(IN_FEATURES, OUT_FEATURES, seed=2))
    grad = torch.from_numpy(random_array(BATCH, OUT_FEATURES, seed=3))
    if implementation == "tropic":
        return lambda: tropic_torch_layer_step(x, w, grad)
    if implementation == "torch_broadcast":
        return lambda: torch_layer_step(x, w, grad)
    raise NotImplementedError(implementation)


class TorchMaxplusLayerTraining(LayerStepBenchmark):
    """Forward + backward of a max-plus layer on torch tensors (batch 256, 1024 -> 1024, float32)."""

    params = (IMPLEMENTATIONS,)

    def make_step(self, implementation):
        return layer_step(implementation)


# Dense layers y = x @ W.T of the papers' MLPs (batch, in, out): where the glue around the kernels shows
LAYER_SHAPES = size(("64x256x10", "64x256x256", "64x784x256", "256x1024x1024"), ("8x16x12",))


def numpy_and_torch_layer_steps(shape: str):
    """``(numpy_step, torch_step)``: forward and backward of ``x @ W.T`` (W as a layer stores it,
    (out, in)), on NumPy arrays (the product with winners, then ``matmul_vjp``) and on torch tensors
    (autograd of ``tropic.maxplus_matmul``, W requiring a gradient). Both return (grad_x, grad_W.T)."""
    torch = require_torch()
    batch, n_in, n_out = (int(n) for n in shape.split("x"))
    x, w = random_array(batch, n_in, seed=1), random_array(n_out, n_in, seed=2)
    grad = random_array(batch, n_out, seed=3)
    tx, tw, tgrad = torch.from_numpy(x), torch.from_numpy(w).requires_grad_(), torch.from_numpy(grad)

    def numpy_step():
        _, winners = tropic.maxplus_matmul(x, w.T, return_indices=True)
        return tropic.matmul_vjp(grad, winners, x.shape, w.T.shape)

    def torch_step():
        tx_leaf = tx.detach().requires_grad_()
        tw.grad = None
        tropic.maxplus_matmul(tx_leaf, tw.T).backward(tgrad)
        return tx_leaf.grad, tw.grad.T

    return numpy_step, torch_step


class TorchOverNumpyLayer(Benchmark):
    """Same-run ratio of a dense layer's forward + backward on torch tensors over the same on NumPy
    arrays (issue 15's target: at most 1.1; the kernels are the same, the difference is glue)."""

    params = (LAYER_SHAPES,)
    param_names = ("BxINxOUT",)
    unit = "ratio"

    def setup(self, shape):
        numpy_step, torch_step = numpy_and_torch_layer_steps(shape)
        self.ratio = same_run_ratio(torch_step, numpy_step)

    def track_torch_over_numpy(self, shape):
        return self.ratio


def own_function_layer_step(shape: str):
    """The step of :func:`numpy_and_torch_layer_steps` on torch tensors through an
    ``autograd.Function`` written around tropic's NumPy functions: what a user writes to call the
    NumPy kernels from torch code (NumPy views by DLPack, the product with winners forward,
    ``matmul_vjp`` backward). The same kernels, so the same gradients, bit for bit; it pays what any
    ``autograd.Function`` pays (the node, the engine, the gradient accumulation) and no more glue."""
    torch = require_torch()
    batch, n_in, n_out = (int(n) for n in shape.split("x"))
    tx = torch.from_numpy(random_array(batch, n_in, seed=1))
    tw = torch.from_numpy(random_array(n_out, n_in, seed=2)).requires_grad_()
    tgrad = torch.from_numpy(random_array(batch, n_out, seed=3))

    class MaxplusMatmul(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            values, ctx.winners = tropic.maxplus_matmul(
                np.from_dlpack(a.detach()), np.from_dlpack(b.detach()), return_indices=True
            )
            ctx.shapes = (tuple(a.shape), tuple(b.shape))
            return torch.from_numpy(values)

        @staticmethod
        def backward(ctx, grad):
            grads = tropic.matmul_vjp(np.from_dlpack(grad), ctx.winners, *ctx.shapes)
            return tuple(torch.from_numpy(g) for g in grads)

    def own_step():
        tx_leaf = tx.detach().requires_grad_()
        tw.grad = None
        MaxplusMatmul.apply(tx_leaf, tw.T).backward(tgrad)
        return tx_leaf.grad, tw.grad.T

    return own_step


class OwnFunctionOverNumpyLayer(Benchmark):
    """Same-run ratio of the layer step through a hand-written ``autograd.Function`` around tropic's
    NumPy functions (:func:`own_function_layer_step`) over the same step on NumPy arrays: what torch's
    autograd adds to the NumPy kernels for any integration that goes through an
    ``autograd.Function``, the floor of ``TorchOverNumpyLayer``."""

    params = (LAYER_SHAPES,)
    param_names = ("BxINxOUT",)
    unit = "ratio"

    def setup(self, shape):
        numpy_step, _ = numpy_and_torch_layer_steps(shape)
        self.ratio = same_run_ratio(own_function_layer_step(shape), numpy_step)

    def track_own_function_over_numpy(self, shape):
        return self.ratio


class TorchOverOwnFunctionLayer(Benchmark):
    """Same-run ratio of the layer step through tropic's torch path over the hand-written
    ``autograd.Function`` (:func:`own_function_layer_step`): tropic's glue against the least a user
    can write around the same kernels (below 1: tropic's is cheaper)."""

    params = (LAYER_SHAPES,)
    param_names = ("BxINxOUT",)
    unit = "ratio"

    def setup(self, shape):
        _, torch_step = numpy_and_torch_layer_steps(shape)
        self.ratio = same_run_ratio(torch_step, own_function_layer_step(shape))

    def track_torch_over_own_function(self, shape):
        return self.ratio


def mpm_layer_steps(shape: str):
    """``(one_call, two_calls)``: forward and backward of the DMNN MPM layer's sum
    ``maxplus(x, W.T, bias_max) + minplus(x, W.T, bias_min)`` on torch tensors, as one
    ``tropic.maxplus_minplus_matmul`` and as the two products and the add it replaces (what a user
    writes without it). The same values and gradients, bit for bit."""
    torch = require_torch()
    batch, n_in, n_out = (int(n) for n in shape.split("x"))
    x = torch.from_numpy(random_array(batch, n_in, seed=1))
    w = torch.from_numpy(random_array(n_out, n_in, seed=2)).requires_grad_()
    b_max = torch.from_numpy(random_array(n_out, seed=3)).requires_grad_()
    b_min = torch.from_numpy(random_array(n_out, seed=4)).requires_grad_()
    grad = torch.from_numpy(random_array(batch, n_out, seed=5))

    def step(fused: bool):
        x_leaf = x.detach().requires_grad_()
        w.grad = b_max.grad = b_min.grad = None
        if fused:
            y = tropic.maxplus_minplus_matmul(x_leaf, w.T, bias_max=b_max, bias_min=b_min)
        else:
            y = tropic.maxplus_matmul(x_leaf, w.T, bias=b_max) + tropic.minplus_matmul(
                x_leaf, w.T, bias=b_min
            )
        y.backward(grad)
        return x_leaf.grad, w.grad

    return (lambda: step(True)), (lambda: step(False))


class TorchMaxplusMinplusOverTwoCalls(Benchmark):
    """Same-run ratio of an MPM layer's forward + backward as one ``maxplus_minplus_matmul`` over the
    two products and the add it replaces (torch tensors; one call saves the glue and the autograd
    nodes of the other call and of the add, on AVX2 CPUs runs both products in one pass, adding each
    candidate sum once, and runs both backwards' scatters in one call)."""

    params = (size(("64x256x256", "64x784x256", "64x256x10"), ("8x16x12",)),)
    param_names = ("BxINxOUT",)
    unit = "ratio"

    def setup(self, shape):
        one_call, two_calls = mpm_layer_steps(shape)
        self.ratio = same_run_ratio(one_call, two_calls)

    def track_one_call_over_two(self, shape):
        return self.ratio


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    torch = require_torch()
    threads = f"{torch.get_num_threads()} torch threads, {tropic.get_num_threads()} tropic threads"
    print(f"torch {torch.__version__}, {threads}")
    print(f"max-plus layer forward+backward, batch {BATCH}, {IN_FEATURES} -> {OUT_FEATURES}, float32")
    results = compare_layer_steps("benchmarks.bench_torch", IMPLEMENTATIONS, layer_step, args.repeat)
    pairs = zip(results["tropic"][1], results["torch_broadcast"][1], strict=True)
    difference = max(float((a - b).abs().max()) for a, b in pairs)
    print(f"largest gradient difference {difference:.2g} (accumulation order)")


if __name__ == "__main__":
    main()
