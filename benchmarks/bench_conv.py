"""Max-plus 2-D convolution: tropic against unfold-and-max in NumPy and in PyTorch.

The baselines form the (B, Cout, Cin, Ho, Wo, kh, kw) array of sums, as morphological-network code
does today; tropic keeps its memory O(output).
"""

from __future__ import annotations

import tropic

from .common import (
    Benchmark,
    numpy_unfold_conv2d,
    optional_import,
    random_array,
    require_torch,
    same_run_ratio,
    size,
    torch_unfold_conv2d,
)

optional_import("torch")  # imported once, before asv forks the benchmark processes


def convolution(implementation: str):
    """A zero-argument callable: ``implementation``'s max-plus convolution of the fixed inputs."""
    x = random_array(*size((8, 16, 32, 32), (1, 2, 8, 8)), seed=1)
    w = random_array(*size((16, 16, 3, 3), (2, 2, 3, 3)), seed=2)
    if implementation == "tropic":
        return lambda: tropic.maxplus_conv2d(x, w)
    if implementation == "numpy_unfold":
        return lambda: numpy_unfold_conv2d(x, w)
    torch = require_torch()
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    return lambda: torch_unfold_conv2d(tx, tw)


class MaxplusConv2d(Benchmark):
    """x (8, 16, 32, 32), w (16, 16, 3, 3), stride 1, no padding, float32."""

    params = (("tropic", "numpy_unfold", "torch_unfold"),)
    param_names = ("implementation",)

    def setup(self, implementation):
        self.run = convolution(implementation)

    def time_maxplus_conv2d(self, implementation):
        self.run()

    def peakmem_maxplus_conv2d(self, implementation):
        self.run()


class MaxplusConv2dRatio(Benchmark):
    """Same-run ratio tropic time / baseline time of ``MaxplusConv2d`` (``common.same_run_ratio``)."""

    params = (("numpy_unfold", "torch_unfold"),)
    param_names = ("baseline",)
    unit = "ratio"

    def setup(self, baseline):
        self.ratio = same_run_ratio(convolution("tropic"), convolution(baseline))

    def track_tropic_over_baseline(self, baseline):
        return self.ratio
