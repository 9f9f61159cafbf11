"""Grey-level dilation: tropic against scipy.ndimage (the library image-morphology users pick).

tropic runs with ``mode="reflect"``, SciPy's default border, so both compute the same result: 2-D
batches, and the N-D cases (3-D volumes, 1-D signals) with ``axes=``.
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
    same_run_ratio,
    scipy_batched_grey_dilation,
    size,
    tropic_or_baseline,
)

optional_import("scipy.ndimage")  # imported once, before asv forks the benchmark processes


def non_flat(implementation: str):
    """5x5 non-flat element on a (8, 16, 64, 64) batch; SciPy loops over the 128 images."""
    images = random_array(*size((8, 16, 64, 64), (1, 2, 16, 16)), seed=1)
    structure = random_array(5, 5, seed=2)
    return tropic_or_baseline(
        implementation,
        lambda: tropic.dilation(images, structure, mode="reflect"),
        lambda: partial(scipy_batched_grey_dilation, images, structure, require_ndimage()),
    )


def flat(implementation: str):
    """Flat 15x15 footprint on a 1024x1024 image; SciPy's ``maximum_filter`` (separable)."""
    side = size(1024, 32)
    image, footprint = random_array(side, side, seed=1), np.ones((15, 15), dtype=bool)
    return tropic_or_baseline(
        implementation,
        lambda: tropic.dilation(image, footprint=footprint, mode="reflect"),
        lambda: partial(require_ndimage().maximum_filter, image, footprint=footprint),
    )


def volume(implementation: str, element: str):
    """A 64^3 float32 volume: a 5x5x5 non-flat element, or a flat 5x5x5 box."""
    side = size(64, 12)
    image = random_array(side, side, side, seed=1)
    if element == "non-flat 5^3":
        structure = random_array(5, 5, 5, seed=2)
        return tropic_or_baseline(
            implementation,
            lambda: tropic.dilation(image, structure, axes=(0, 1, 2), mode="reflect"),
            lambda: partial(require_ndimage().grey_dilation, image, structure=structure, mode="reflect"),
        )
    return tropic_or_baseline(
        implementation,
        lambda: tropic.dilation(image, size=5, axes=(0, 1, 2), mode="reflect"),
        lambda: partial(require_ndimage().grey_dilation, image, size=5, mode="reflect"),
    )


def signal(implementation: str, element: str):
    """A float32 signal of length 10^6: a non-flat element of 9 samples, or a flat one."""
    x = random_array(size(1_000_000, 5000), seed=1)
    if element == "non-flat 9":
        structure = random_array(9, seed=2)
        return tropic_or_baseline(
            implementation,
            lambda: tropic.dilation(x, structure, axes=0, mode="reflect"),
            lambda: partial(require_ndimage().grey_dilation, x, structure=structure, mode="reflect"),
        )
    return tropic_or_baseline(
        implementation,
        lambda: tropic.dilation(x, size=9, axes=0, mode="reflect"),
        lambda: partial(require_ndimage().grey_dilation, x, size=9, mode="reflect"),
    )


class VolumeDilation(Benchmark):
    """3-D morphology: a 64^3 volume, 5x5x5 non-flat element or flat box, against SciPy."""

    params = (("non-flat 5^3", "flat box 5^3"), ("tropic", "scipy"))
    param_names = ("element", "implementation")

    def setup(self, element, implementation):
        self.run = volume(implementation, element)

    def time_dilation(self, element, implementation):
        self.run()


class SignalDilation(Benchmark):
    """1-D morphology: a signal of 10^6 samples, 9-sample non-flat or flat element, against SciPy."""

    params = (("non-flat 9", "flat 9"), ("tropic", "scipy"))
    param_names = ("element", "implementation")

    def setup(self, element, implementation):
        self.run = signal(implementation, element)

    def time_dilation(self, element, implementation):
        self.run()


class NonFlatDilation(Benchmark):
    """5x5 non-flat (additive) structuring element on a (8, 16, 64, 64) batch of images.

    SciPy has no batch axis: its baseline loops ``grey_dilation`` over the 128 images.
    """

    params = (("tropic", "tropic_numpy_path", "scipy"),)
    param_names = ("implementation",)

    def setup(self, implementation):
        self.run = non_flat(implementation)

    def time_dilation(self, implementation):
        self.run()

    def peakmem_dilation(self, implementation):
        self.run()


class FlatDilation(Benchmark):
    """Flat 15x15 footprint on a 1024x1024 image (SciPy: ``maximum_filter``, a separable filter)."""

    params = (("tropic", "tropic_numpy_path", "scipy"),)
    param_names = ("implementation",)

    def setup(self, implementation):
        self.run = flat(implementation)

    def time_dilation(self, implementation):
        self.run()

    def peakmem_dilation(self, implementation):
        self.run()


class DilationRatio(Benchmark):
    """Same-run ratio tropic time / SciPy time of the dilations above (``common.same_run_ratio``)."""

    params = (("non-flat 5x5", "flat 15x15", "non-flat 5^3", "flat box 5^3", "non-flat 9", "flat 9"),)
    param_names = ("case",)
    unit = "ratio"

    def setup(self, case):
        if case.endswith("^3"):
            make = partial(volume, element=case)
        elif case.endswith(" 9"):
            make = partial(signal, element=case)
        else:
            make = non_flat if case.startswith("non-flat") else flat
        self.ratio = same_run_ratio(make("tropic"), make("scipy"))

    def track_tropic_over_scipy(self, case):
        return self.ratio
