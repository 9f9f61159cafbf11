"""Half precision on the CPU: tropic's operators on float16 and bfloat16 torch tensors against float32.

Values and winners are those of the narrow dtype, bit for bit: with winners, each sum ``x + w`` is
rounded to the narrow dtype before it compares (the compiled kernels do it in their inner loop where
the CPU has AVX2 and F16C); without them (the cases below but ``product fwd+bwd``, whose inputs need
no gradient), the unrounded reduction is rounded once per output, which gives the same bits because
rounding is monotone. Issue 15's target: each case within 2x of its float32 time.

``time_operator``: one call of each case in each dtype; ``HalfPrecisionRatios`` tracks the same-run
ratios float16 / float32 and bfloat16 / float32 (medians of 5 after a warm-up).
``python -m benchmarks.bench_half [--repeat N]`` prints the table.
"""

from __future__ import annotations

import argparse

from .common import Benchmark, preload_torch, require_torch, size

preload_torch()

DTYPES = ("float32", "float16", "bfloat16")
M, K, N = size((512, 512, 512), (8, 6, 5))
BATCH, CHANNELS, SIDE, IMAGE = size((8, 16, 32, 64), (2, 2, 6, 7))
CASES = ("product", "product fwd+bwd", "conv2d 3x3", "dilation 5x5")


def operator_call(case: str, dtype: str):
    """A zero-argument callable running ``case`` on CPU tensors of ``dtype`` (fixed random inputs)."""
    torch = require_torch()
    import tropic

    g = torch.Generator().manual_seed(0)
    dt = getattr(torch, dtype)
    if case.startswith("product"):
        a, b = torch.randn(M, K, generator=g).to(dt), torch.randn(K, N, generator=g).to(dt)
        if case == "product":
            return lambda: tropic.maxplus_matmul(a, b)
        a.requires_grad_(), b.requires_grad_()
        grad = torch.randn(M, N, generator=g).to(dt)  # given: torch's own half-precision sum is slow

        def forward_backward():
            a.grad = b.grad = None
            tropic.maxplus_matmul(a, b).backward(grad)

        return forward_backward
    if case == "conv2d 3x3":
        x = torch.randn(BATCH, CHANNELS, SIDE, SIDE, generator=g).to(dt)
        w = torch.randn(CHANNELS, CHANNELS, 3, 3, generator=g).to(dt)
        return lambda: tropic.maxplus_conv2d(x, w, padding=1)
    if case == "dilation 5x5":
        image = torch.randn(BATCH, CHANNELS, IMAGE, IMAGE, generator=g).to(dt)
        structure = torch.randn(CHANNELS, 5, 5, generator=g).to(dt)
        return lambda: tropic.dilation(image, structure)
    raise NotImplementedError(case)


class HalfPrecision(Benchmark):
    """One call of ``case`` on ``dtype`` tensors (product M x K x N, conv and dilation as named)."""

    params = (CASES, DTYPES)
    param_names = ("case", "dtype")

    def setup(self, case, dtype):
        self.run = operator_call(case, dtype)

    def time_operator(self, case, dtype):
        self.run()


class HalfPrecisionRatios(Benchmark):
    """Same-run ratios to float32 (medians of 5 after a warm-up)."""

    params = (CASES,)
    param_names = ("case",)
    unit = "ratio"

    def setup(self, case):
        from tropic.apps.bench import measure

        self.seconds = {d: measure(operator_call(case, d), 5)[0] for d in DTYPES}

    def track_float16_over_float32(self, case):
        return self.seconds["float16"] / self.seconds["float32"]

    def track_bfloat16_over_float32(self, case):
        return self.seconds["bfloat16"] / self.seconds["float32"]


def main(argv=None) -> None:
    from tropic.apps.bench import measure

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    torch = require_torch()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.repeat}")
    shapes = {
        "product": f"{M}x{K} @ {K}x{N}",
        "product fwd+bwd": f"{M}x{K} @ {K}x{N}",
        "conv2d 3x3": f"x {BATCH}x{CHANNELS}x{SIDE}x{SIDE}, w {CHANNELS}x{CHANNELS}x3x3",
        "dilation 5x5": f"{BATCH}x{CHANNELS}x{IMAGE}x{IMAGE}",
    }
    for case in CASES:
        seconds = {d: measure(operator_call(case, d), args.repeat)[0] for d in DTYPES}
        ratios = "  ".join(
            f"{d} {seconds[d] * 1e3:8.2f} ms ({seconds[d] / seconds['float32']:.2f}x)" for d in DTYPES
        )
        print(f"{case:16s} {shapes[case]:32s} {ratios}")


if __name__ == "__main__":
    main()
