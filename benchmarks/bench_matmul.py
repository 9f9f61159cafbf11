"""Max-plus products: tropic against NumPy broadcasting, a NumPy loop over k and PyTorch.

The classes compare implementations as a parameter, so one asv run (and one ``asv compare``) holds
tropic and its baselines side by side. Unsupported combinations (torch missing, an (M, K, N)
broadcast beyond ``BROADCAST_LIMIT_BYTES``) raise ``NotImplementedError`` in ``setup``: asv skips them.
"""

from __future__ import annotations

import os

import numpy as np

import tropic

from .common import (
    Benchmark,
    broadcast_mib,
    extra_peak_mib,
    loop_maxplus,
    naive_maxplus,
    preload_torch,
    random_array,
    require_broadcast_fits,
    require_compiled,
    require_torch,
    same_run_ratio,
    size,
    torch_layer_step,
    torch_naive_maxplus,
    tropic_layer_step,
)

# Imported once here, so asv's forked benchmark processes do not each import it again.
preload_torch()

# M x K x N: squares, a dense layer's batch, a thin wide product
SHAPES = size(
    ("64x64x64", "256x256x256", "512x512x512", "4096x784x256", "64x4096x4096"), ("16x16x16", "40x24x8")
)
IMPLEMENTATIONS = (
    "tropic",
    "tropic_numpy_path",
    "numpy_broadcast",
    "numpy_loop",
    "torch_broadcast",
    "torch_compile",
)


def _parse(shape: str) -> tuple[int, int, int]:
    m, k, n = map(int, shape.split("x"))
    return m, k, n


def product(implementation: str, a, b):
    """A zero-argument callable computing the float32 max-plus product of ``a`` and ``b``."""
    if implementation == "tropic":
        return lambda: tropic.maxplus_matmul(a, b)
    if implementation == "tropic_numpy_path":
        return require_compiled(lambda: tropic.maxplus_matmul(a, b))
    if implementation == "numpy_loop":
        return lambda: loop_maxplus(a, b)
    require_broadcast_fits(a.shape[0], a.shape[1], b.shape[1])
    if implementation == "numpy_broadcast":
        return lambda: naive_maxplus(a, b)
    torch = require_torch()
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    if implementation == "torch_broadcast":
        return lambda: torch_naive_maxplus(ta, tb)
    if not os.environ.get("TROPIC_ASV_TORCH_COMPILE"):
        raise NotImplementedError("set TROPIC_ASV_TORCH_COMPILE=1 to time torch.compile (slow to compile)")
    compiled = torch.compile(torch_naive_maxplus)
    compiled(ta, tb)  # compile here, not in the timed call
    return lambda: compiled(ta, tb)


class MaxplusMatmul(Benchmark):
    """``c[i, j] = max_k a[i, k] + b[k, j]``, float32, square sizes and a dense layer's shape."""

    params = (SHAPES, IMPLEMENTATIONS)
    param_names = ("MxKxN", "implementation")

    def setup(self, shape, implementation):
        m, k, n = _parse(shape)
        a, b = random_array(m, k, seed=1), random_array(k, n, seed=2)
        self.run = product(implementation, a, b)

    def time_maxplus_matmul(self, shape, implementation):
        self.run()

    def peakmem_maxplus_matmul(self, shape, implementation):
        self.run()


class MaxplusMatmulRatio(Benchmark):
    """Same-run ratio tropic time / baseline time of ``MaxplusMatmul``'s products (``same_run_ratio``)."""

    params = (SHAPES, ("numpy_broadcast", "numpy_loop", "torch_broadcast"))
    param_names = ("MxKxN", "baseline")
    unit = "ratio"

    def setup(self, shape, baseline):
        m, k, n = _parse(shape)
        a, b = random_array(m, k, seed=1), random_array(k, n, seed=2)
        self.ratio = same_run_ratio(product("tropic", a, b), product(baseline, a, b))

    def track_tropic_over_baseline(self, shape, baseline):
        return self.ratio


# Whether the caller reads the winners: a training forward does (return_indices, or autograd), an
# inference forward does not, and then the kernels skip them (values only, the same bits).
WINNER_SHAPES = size(("64x784x256", "512x512x512"), ("16x16x16",))
WINNER_CALLS = ("values", "values_and_winners", "torch_no_grad")


def winner_call(call: str, a, b):
    """A zero-argument callable: the product as ``call`` says (torch: CPU tensors under no_grad)."""
    if call == "values":
        return lambda: tropic.maxplus_matmul(a, b)
    if call == "values_and_winners":
        return lambda: tropic.maxplus_matmul(a, b, return_indices=True)
    torch = require_torch()
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)

    def no_grad():
        with torch.no_grad():
            return tropic.maxplus_matmul(ta, tb)

    return no_grad


class MaxplusMatmulWinners(Benchmark):
    """The product without winners (NumPy arrays, and torch tensors under ``no_grad``) and with them."""

    params = (WINNER_SHAPES, WINNER_CALLS)
    param_names = ("MxKxN", "call")

    def setup(self, shape, call):
        m, k, n = _parse(shape)
        self.run = winner_call(call, random_array(m, k, seed=1), random_array(k, n, seed=2))

    def time_product(self, shape, call):
        self.run()


class MaxplusMatmulWinnersRatio(Benchmark):
    """Same-run ratios: the product with winners over the values-only one (what skipping them saves),
    and torch tensors under ``no_grad`` over NumPy arrays (the torch glue; target at most 1.1)."""

    params = (WINNER_SHAPES, ("values_and_winners", "torch_no_grad"))
    param_names = ("MxKxN", "call")
    unit = "ratio"

    def setup(self, shape, call):
        m, k, n = _parse(shape)
        a, b = random_array(m, k, seed=1), random_array(k, n, seed=2)
        self.ratio = same_run_ratio(winner_call(call, a, b), winner_call("values", a, b))

    def track_over_values_only(self, shape, call):
        return self.ratio


# A Sparse-Morph layer's product x @ W.T: about 1/256 of W kept (the paper's 1024 of 512 x 512), the
# rest the tropical zero; tropic reduces over the kept entries. "dense": every entry kept.
SPARSE_SHAPES = size(("64x512x512",), ("8x256x64",))


def sparse_layer(shape: str, weights: str):
    """A zero-argument callable: the layer's product with winners (a training forward)."""
    m, k, n = _parse(shape)
    x, w = random_array(m, k, seed=1), random_array(n, k, seed=2)
    if weights == "sparse_morph":
        w[np.random.default_rng(3).random(w.shape) >= 1 / 256] = -np.inf
    return lambda: tropic.maxplus_matmul(x, w.T, return_indices=True)


class SparseMaxplusLayer(Benchmark):
    """A max-plus layer's product with Sparse-Morph weights and with dense ones of the same shape."""

    params = (SPARSE_SHAPES, ("sparse_morph", "dense"))
    param_names = ("MxKxN", "weights")

    def setup(self, shape, weights):
        self.run = sparse_layer(shape, weights)

    def time_layer_product(self, shape, weights):
        self.run()


class SparseMaxplusLayerRatio(Benchmark):
    """Same-run ratio of the Sparse-Morph layer's product over the dense one (below 1: the kept
    entries are all that is paid for)."""

    params = (SPARSE_SHAPES,)
    param_names = ("MxKxN",)
    unit = "ratio"

    def setup(self, shape):
        self.ratio = same_run_ratio(sparse_layer(shape, "sparse_morph"), sparse_layer(shape, "dense"))

    def track_sparse_over_dense(self, shape):
        return self.ratio


class MaxplusMatmulMemory(Benchmark):
    """Extra memory of an n^3 float32 product, measured with tracemalloc around the call.

    tropic needs O(output) (a few MiB at n = 1024, well under 64 MiB); broadcasting forms the
    (n, n, n) array: 64 MiB at n = 256, 4 GiB at n = 1024 (not run: see ``BroadcastIntermediate``).
    tracemalloc sees NumPy's buffers but not PyTorch's allocator, so torch is not measured here.
    """

    params = (size((256, 1024), (16, 32)), ("tropic", "numpy_loop", "numpy_broadcast"))
    param_names = ("n", "implementation")

    def setup(self, n, implementation):
        if implementation == "numpy_broadcast" and n > size(256, 16):
            raise NotImplementedError("the broadcast needs 4 GiB at n = 1024; its size is tracked instead")
        self.run = product(implementation, random_array(n, n, seed=1), random_array(n, n, seed=2))

    def track_extra_peak_mib(self, n, implementation):
        return round(extra_peak_mib(self.run), 2)

    track_extra_peak_mib.unit = "MiB"

    def peakmem_product(self, n, implementation):
        self.run()


class BroadcastIntermediate:
    """The size of the (n, n, n) float32 array ``np.max(a[:, :, None] + b[None], 1)`` forms."""

    params = (size((256, 512, 1024), (16,)),)
    param_names = ("n",)

    def track_broadcast_intermediate_mib(self, n):
        return broadcast_mib(n, n, n)

    track_broadcast_intermediate_mib.unit = "MiB"


class MaxplusLayerTraining(Benchmark):
    """Forward and backward of a max-plus layer, batch 256, 1024 -> 1024 features.

    tropic: the product with ``return_indices`` then ``matmul_vjp``; torch: autograd of the
    broadcast formula (a 1 GiB intermediate, and as much again for its gradient).
    """

    params = (("tropic", "torch_autograd"),)
    param_names = ("implementation",)

    def setup(self, implementation):
        batch, features = size((256, 1024), (8, 16))
        x, w = random_array(batch, features, seed=1), random_array(features, features, seed=2)
        grad = random_array(batch, features, seed=3)
        if implementation == "tropic":
            self.run = lambda: tropic_layer_step(x, w, grad)
        else:
            torch = require_torch()
            tx, tw, tg = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(grad)
            self.run = lambda: torch_layer_step(tx, tw, tg)

    def time_forward_backward(self, implementation):
        self.run()

    def peakmem_forward_backward(self, implementation):
        self.run()


class CallOverhead(Benchmark):
    """The fixed cost of one call: a 4 x 4 float64 max-plus product, where the work is nothing.

    tropic on NumPy arrays against ``np.max(a[:, :, None] + b[None], axis=1)`` on the same arrays, and
    on torch tensors against ``(a[:, :, None] + b[None]).amax(1)`` (the formula a user would write).
    ``track_overhead_ratio`` is the same-run median ratio tropic / formula.
    """

    params = (("numpy", "torch"),)
    param_names = ("library",)
    repeat = 20

    def setup(self, library):
        a, b = random_array(4, 4, seed=1).astype("float64"), random_array(4, 4, seed=2).astype("float64")
        if library == "torch":
            torch = require_torch()
            a, b = torch.from_numpy(a), torch.from_numpy(b)
            self.formula = lambda: (a[:, :, None] + b[None]).amax(1)
        else:
            self.formula = lambda: naive_maxplus(a, b)
        self.tropic = lambda: tropic.maxplus_matmul(a, b)
        self.tropic()

    def time_tropic(self, library):
        self.tropic()

    def time_formula(self, library):
        self.formula()

    def track_overhead_ratio(self, library):
        import timeit

        tropic_time = min(timeit.repeat(self.tropic, number=200, repeat=15))
        formula_time = min(timeit.repeat(self.formula, number=200, repeat=15))
        return round(tropic_time / formula_time, 2)

    track_overhead_ratio.unit = "ratio"
