"""Synthetic binary images for morphological-layer tests: a small "diskorect" generator.

Random filled disks and axis-aligned rectangles, some with holes cut out, plus salt and pepper noise, in the
spirit of the "diskorect" set of Aouad & Talbot (binarised morphological networks).
"""

from __future__ import annotations

import numpy as np

__all__ = ["diskorect"]


def diskorect(
    count: int,
    size: int = 32,
    *,
    rng: np.random.Generator | None = None,
    seed: int | None = None,
    shapes: tuple[int, int] = (2, 6),
    salt: float = 0.02,
    pepper: float = 0.02,
    dtype: type = np.float32,
) -> np.ndarray:
    """Binary images of random disks and rectangles with holes and salt and pepper noise.

    Parameters
    ----------
    count : int
        Number of images.
    size : int
        Images are ``size x size``.
    rng, seed
        Random source (``rng`` wins; else ``numpy.random.default_rng(seed)``).
    shapes : (int, int)
        Inclusive range of the number of disks and rectangles per image.
    salt, pepper : float
        Probabilities that a pixel is switched on (salt) or off (pepper) by the noise. Both matter when
        learning a morphological operation: an isolated 1 pins the centre of a dilation's structuring
        element, an isolated 0 that of an erosion.
    dtype
        Floating dtype of the result (values exactly 0 and 1).

    Returns
    -------
    numpy.ndarray of shape (count, 1, size, size)

    Examples
    --------
    >>> images = diskorect(4, 16, seed=0)
    >>> images.shape, sorted(set(images.ravel().tolist())) == [0.0, 1.0]
    ((4, 1, 16, 16), True)
    """
    if not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be a non-negative int, got {count!r}")
    if not isinstance(size, int) or size < 4:
        raise ValueError(f"size must be an int >= 4, got {size!r}")
    for name, value in (("salt", salt), ("pepper", pepper)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a probability, got {value!r}")
    rng = rng if rng is not None else np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size]
    out = np.zeros((count, 1, size, size), dtype=bool)
    for image in out[:, 0]:
        for _ in range(rng.integers(shapes[0], shapes[1] + 1)):
            cy, cx = rng.uniform(0, size, 2)
            extent = rng.uniform(size / 16, size / 5)
            if rng.random() < 0.5:
                shape = (rows - cy) ** 2 + (cols - cx) ** 2 <= extent**2
            else:
                hy, hx = extent * rng.uniform(0.5, 1.5, 2)
                shape = (np.abs(rows - cy) <= hy) & (np.abs(cols - cx) <= hx)
            image |= shape
            if rng.random() < 0.5:  # a hole, a smaller disk inside the shape
                hole = (rows - cy) ** 2 + (cols - cx) ** 2 <= (extent * rng.uniform(0.2, 0.5)) ** 2
                image &= ~hole
    noise = rng.random(out.shape)
    out = (out | (noise < salt)) & ~(noise > 1.0 - pepper)
    return out.astype(dtype)
