"""Geodesic reconstruction: tropic against scikit-image's ``skimage.morphology.reconstruction``.

A 1024x1024 float64 image of uniform noise in [0, 1), the default 3x3 footprint, three seeds:

* ``h-dome dilation``: seed = image - 0.3 (scikit-image's h-dome example): many short floods;
* ``h-dome erosion``: seed = image + 0.3, reconstruction by erosion (its dual);
* ``marker dilation``: one pixel of the image in a seed that is the image's minimum elsewhere: one
  flood across the whole image, the worst case of the propagation queue.

scikit-image sorts every pixel (O(n log n)); tropic's compiled kernel scans the image twice and then
propagates what is left in a radix-heap queue. Both return float64, bitwise equal.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from tropic import reconstruction

from .common import Benchmark, optional_import, same_run_ratio, size, tropic_or_baseline

optional_import("skimage.morphology")  # imported once, before asv forks the benchmark processes

CASES = ("h-dome dilation", "h-dome erosion", "marker dilation")


def require_skimage():
    """``skimage.morphology``; ``NotImplementedError`` (asv: skip) if scikit-image is missing."""
    morphology = optional_import("skimage.morphology")
    if morphology is None:
        raise NotImplementedError("scikit-image is not installed")
    return morphology


def inputs(case: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(seed, mask, method) of one case."""
    side = size(1024, 32)
    image = np.random.default_rng(1).random((side, side))
    if case == "h-dome dilation":
        return image - 0.3, image, "dilation"
    if case == "h-dome erosion":
        return image + 0.3, image, "erosion"
    seed = np.full_like(image, image.min())
    seed[side // 2, side // 2] = image[side // 2, side // 2]
    return seed, image, "dilation"


def reconstruct(implementation: str, case: str):
    """The zero-argument call that ``implementation`` times on ``case``."""
    seed, mask, method = inputs(case)
    if implementation == "tropic_numpy_path" and case.startswith("marker"):
        # the reference iterates one geodesic dilation per step of the longest path: minutes here
        raise NotImplementedError("the array-API reference is too slow for a flood across the image")
    return tropic_or_baseline(
        implementation,
        partial(reconstruction, seed, mask, method),
        lambda: partial(require_skimage().reconstruction, seed, mask, method=method),
    )


class Reconstruction(Benchmark):
    """Reconstruction of a 1024x1024 float64 image, 3x3 footprint: tropic (compiled kernel and its
    array-API reference) and scikit-image."""

    params = (("tropic", "tropic_numpy_path", "skimage"), CASES)
    param_names = ("implementation", "case")

    def setup(self, implementation, case):
        self.run = reconstruct(implementation, case)

    def time_reconstruction(self, implementation, case):
        self.run()

    def peakmem_reconstruction(self, implementation, case):
        self.run()


class ReconstructionRatio(Benchmark):
    """Same-run ratio tropic time / scikit-image time of each case (``common.same_run_ratio``)."""

    params = (CASES,)
    param_names = ("case",)
    unit = "ratio"

    def setup(self, case):
        self.ratio = same_run_ratio(reconstruct("tropic", case), reconstruct("skimage", case))

    def track_tropic_over_skimage(self, case):
        return self.ratio
