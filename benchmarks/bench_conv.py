"""Max-plus 2-D convolution: tropic against unfold-and-max in NumPy and in PyTorch, and the tap loops'
pair rate against the product kernel's.

The baselines form the (B, Cout, Cin, Ho, Wo, kh, kw) array of sums, as morphological-network code
does today; tropic keeps its memory O(output). ``TimePerPairOverProduct`` tracks issue 15's
target: stride-1 convolutions at the DMNN and BiSE shapes and non-flat dilations at no more than
1/0.6 of the 512^3 product's time per candidate pair, in the same run; ``BackwardOverForward`` its
backward target: each case's vjp (both gradients) in at most twice its forward's time (with winners),
that is at least half the forward's pair rate.
``python -m benchmarks.bench_conv [--repeat N]`` prints both tables for one and two threads.
"""

from __future__ import annotations

import argparse

import tropic

from .common import (
    Benchmark,
    numpy_unfold_conv2d,
    preload_torch,
    random_array,
    require_torch,
    same_run_ratio,
    size,
    torch_unfold_conv2d,
)

preload_torch()


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


# Issue 15's cases: (x shape, w shape, padding) of stride-1 convolutions (DMNN LeNet layers, BiSE-sized
# ones, tropic bench's), and (image, element side) of non-flat dilations.
PAIR_RATE_CASES = {
    "conv x64x1x28x28 w6x1x5x5": (
        "conv",
        size(((64, 1, 28, 28), (6, 1, 5, 5), 2), ((2, 1, 8, 8), (2, 1, 5, 5), 2)),
    ),
    "conv x64x6x14x14 w16x6x5x5": (
        "conv",
        size(((64, 6, 14, 14), (16, 6, 5, 5), 0), ((2, 2, 6, 6), (3, 2, 5, 5), 0)),
    ),
    "conv x64x1x28x28 w8x1x3x3": (
        "conv",
        size(((64, 1, 28, 28), (8, 1, 3, 3), 1), ((2, 1, 8, 8), (2, 1, 3, 3), 1)),
    ),
    "conv x64x8x28x28 w8x8x5x5": (
        "conv",
        size(((64, 8, 28, 28), (8, 8, 5, 5), 2), ((2, 2, 8, 8), (2, 2, 5, 5), 2)),
    ),
    "conv x64x16x32x32 w16x16x3x3": (
        "conv",
        size(((64, 16, 32, 32), (16, 16, 3, 3), 1), ((2, 2, 8, 8), (2, 2, 3, 3), 1)),
    ),
    "conv x64x64x28x28 w64x64x3x3": (
        "conv",
        size(((64, 64, 28, 28), (64, 64, 3, 3), 1), ((2, 4, 8, 8), (4, 4, 3, 3), 1)),
    ),
    "conv x8x16x32x32 w16x16x3x3": (
        "conv",
        size(((8, 16, 32, 32), (16, 16, 3, 3), 1), ((2, 2, 8, 8), (2, 2, 3, 3), 1)),
    ),
    "dilation 8x16x64x64 3x3": ("dilation", size(((8, 16, 64, 64), 3), ((2, 2, 8, 8), 3))),
    "dilation 8x16x64x64 5x5": ("dilation", size(((8, 16, 64, 64), 5), ((2, 2, 8, 8), 5))),
    "dilation 8x16x64x64 7x7": ("dilation", size(((8, 16, 64, 64), 7), ((2, 2, 8, 8), 7))),
}
PRODUCT_SIDE = size(512, 8)


def pair_rate_call(case: str, winners: bool):
    """``(call, pairs)``: a zero-argument callable running ``case`` (``"product"`` or a key of
    ``PAIR_RATE_CASES``), with the winners or not, and its number of candidate pairs."""
    if case == "product":
        a, b = (random_array(PRODUCT_SIDE, PRODUCT_SIDE, seed=s) for s in (1, 2))
        return (lambda: tropic.maxplus_matmul(a, b, return_indices=winners)), PRODUCT_SIDE**3
    kind, shape = PAIR_RATE_CASES[case]
    if kind == "conv":
        x_shape, w_shape, padding = shape
        x, w = random_array(*x_shape, seed=1), random_array(*w_shape, seed=2)
        rows, cols = (x_shape[a] + 2 * padding - w_shape[a] + 1 for a in (2, 3))
        pairs = x_shape[0] * w_shape[0] * rows * cols * w_shape[1] * w_shape[2] * w_shape[3]
        return (lambda: tropic.maxplus_conv2d(x, w, padding=padding, return_indices=winners)), pairs
    image_shape, k = shape
    image, element = random_array(*image_shape, seed=1), random_array(k, k, seed=2)
    run = lambda: tropic.dilation(image, element, axes=(-2, -1), return_indices=winners)  # noqa: E731
    return run, image.size * k * k


def backward_call(case: str):
    """A zero-argument callable running the vjp of ``case`` (a key of ``PAIR_RATE_CASES``): both
    gradients, from the winners of its forward (``pair_rate_call``'s) and a fixed random output
    gradient."""
    y, winners = pair_rate_call(case, True)[0]()
    grad = random_array(*y.shape, seed=3)
    kind, shape = PAIR_RATE_CASES[case]
    if kind == "conv":
        x_shape, w_shape, padding = shape
        return lambda: tropic.conv2d_vjp(grad, winners, x_shape, w_shape, padding=padding)
    image_shape, k = shape
    return lambda: tropic.dilation_vjp(grad, winners, image_shape, (k, k), axes=(-2, -1))


def backward_over_forward(case: str, repeat: int = 5) -> float:
    """``case``'s backward time over its forward's with winners, measured one after the other
    (medians of ``repeat``): 2 or less meets the target; lower is better."""
    from tropic.apps.bench import measure

    return measure(backward_call(case), repeat)[0] / measure(pair_rate_call(case, True)[0], repeat)[0]


class BackwardOverForward(Benchmark):
    """Same-run ratio of a tap loop's backward (both gradients) to its forward with winners."""

    params = (tuple(PAIR_RATE_CASES),)
    param_names = ("case",)
    unit = "ratio"

    def setup(self, case):
        self.ratio = backward_over_forward(case)

    def track_backward_over_forward(self, case):
        return self.ratio


def per_pair_time_over_product(case: str, winners: bool, repeat: int = 5) -> float:
    """``case``'s time per candidate pair over the product's, measured one after the other (medians of
    ``repeat``): 1/0.6 or less meets the target; lower is better, as asv assumes."""
    from tropic.apps.bench import measure

    (run, pairs), (product, product_pairs) = pair_rate_call(case, winners), pair_rate_call("product", winners)
    return (measure(run, repeat)[0] / pairs) / (measure(product, repeat)[0] / product_pairs)


class TimePerPairOverProduct(Benchmark):
    """Same-run ratio of a tap loop's time per pair to the 512^3 product's, with and without winners."""

    params = (tuple(PAIR_RATE_CASES), (False, True))
    param_names = ("case", "winners")
    unit = "ratio"

    def setup(self, case, winners):
        self.ratio = per_pair_time_over_product(case, winners)

    def track_time_per_pair_over_product(self, case, winners):
        return self.ratio


def main(argv=None) -> None:
    from tropic.apps.bench import measure

    parser = argparse.ArgumentParser(description="The tap loops' G pairs/s against the product's.")
    parser.add_argument("--repeat", type=int, default=11)
    args = parser.parse_args(argv)
    columns = [(threads, winners) for threads in (1, 2) for winners in (False, True)]
    rates: dict = {}
    forward: dict = {}  # (case, threads): forward seconds with winners
    backward: dict = {}  # (case, threads): backward seconds
    try:
        for threads, winners in columns:
            tropic.set_num_threads(threads)
            for case in ("product", *PAIR_RATE_CASES):
                run, pairs = pair_rate_call(case, winners)
                seconds = measure(run, args.repeat)[0]
                rates[case, threads, winners] = pairs / seconds / 1e9
                if winners and case != "product":
                    forward[case, threads] = seconds
                    backward[case, threads] = measure(backward_call(case), args.repeat)[0]
    finally:
        tropic.set_num_threads(None)
    names = [f"{t} thread{'s' * (t > 1)}, {'winners' if w else 'values'}" for t, w in columns]
    print(f"G pairs/s (% of the product's), medians of {args.repeat}")
    print(f"{'case':30s}" + "".join(f"{name:>24s}" for name in names))
    for case in ("product", *PAIR_RATE_CASES):
        cells = []
        for threads, winners in columns:
            rate, product = rates[case, threads, winners], rates["product", threads, winners]
            cells.append(f"{rate:8.1f} ({100 * rate / product:3.0f}%)")
        print(f"{case:30s}" + "".join(f"{cell:>24s}" for cell in cells))
    print("\nbackward (both gradients): ms, and its time over the forward's with winners (target: 2 or less)")
    print(f"{'case':30s}" + "".join(f"{f'{t} thread' + 's' * (t > 1):>24s}" for t in (1, 2)))
    for case in PAIR_RATE_CASES:
        cells = []
        for threads in (1, 2):
            seconds = backward[case, threads]
            cells.append(f"{seconds * 1e3:8.2f} ({seconds / forward[case, threads]:4.2f}x)")
        print(f"{case:30s}" + "".join(f"{cell:>24s}" for cell in cells))


if __name__ == "__main__":
    main()
