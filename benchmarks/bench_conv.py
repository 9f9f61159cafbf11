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
    size,
    torch_unfold_conv2d,
)

optional_import("torch")  # imported once, before asv forks the benchmark processes


class MaxplusConv2d(Benchmark):
    """x (8, 16, 32, 32), w (16, 16, 3, 3), stride 1, no padding, float32."""

    params = (("tropic", "numpy_unfold", "torch_unfold"),)
    param_names = ("implementation",)

    def setup(self, implementation):
        x = random_array(*size((8, 16, 32, 32), (1, 2, 8, 8)), seed=1)
        w = random_array(*size((16, 16, 3, 3), (2, 2, 3, 3)), seed=2)
        if implementation == "tropic":
            self.run = lambda: tropic.maxplus_conv2d(x, w)
        elif implementation == "numpy_unfold":
            self.run = lambda: numpy_unfold_conv2d(x, w)
        else:
            torch = require_torch()
            tx, tw = torch.from_numpy(x), torch.from_numpy(w)
            self.run = lambda: torch_unfold_conv2d(tx, tw)

    def time_maxplus_conv2d(self, implementation):
        self.run()

    def peakmem_maxplus_conv2d(self, implementation):
        self.run()
