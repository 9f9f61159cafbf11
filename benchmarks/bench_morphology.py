"""Grey-level dilation: tropic against scipy.ndimage (the library image-morphology users pick).

tropic runs with ``mode="reflect"``, SciPy's default border, so both compute the same result.
"""

from __future__ import annotations

from functools import partial

import numpy as np

import tropic

from .common import (
    Benchmark,
    optional_import,
    random_array,
    require_ndimage,
    scipy_batched_grey_dilation,
    size,
    tropic_or_baseline,
)

optional_import("scipy.ndimage")  # imported once, before asv forks the benchmark processes


class NonFlatDilation(Benchmark):
    """5x5 non-flat (additive) structuring element on a (8, 16, 64, 64) batch of images.

    SciPy has no batch axis: its baseline loops ``grey_dilation`` over the 128 images.
    """

    params = (("tropic", "tropic_numpy_path", "scipy"),)
    param_names = ("implementation",)

    def setup(self, implementation):
        images = random_array(*size((8, 16, 64, 64), (1, 2, 16, 16)), seed=1)
        structure = random_array(5, 5, seed=2)
        self.run = tropic_or_baseline(
            implementation,
            lambda: tropic.dilation(images, structure, mode="reflect"),
            lambda: partial(scipy_batched_grey_dilation, images, structure, require_ndimage()),
        )

    def time_dilation(self, implementation):
        self.run()

    def peakmem_dilation(self, implementation):
        self.run()


class FlatDilation(Benchmark):
    """Flat 15x15 footprint on a 1024x1024 image (SciPy: ``maximum_filter``, a separable filter)."""

    params = (("tropic", "tropic_numpy_path", "scipy"),)
    param_names = ("implementation",)

    def setup(self, implementation):
        side = size(1024, 32)
        image, footprint = random_array(side, side, seed=1), np.ones((15, 15), dtype=bool)
        self.run = tropic_or_baseline(
            implementation,
            lambda: tropic.dilation(image, footprint=footprint, mode="reflect"),
            lambda: partial(require_ndimage().maximum_filter, image, footprint=footprint),
        )

    def time_dilation(self, implementation):
        self.run()

    def peakmem_dilation(self, implementation):
        self.run()
