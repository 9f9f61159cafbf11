"""Host-side arithmetic of the CuPy backend (no CuPy needed, tested on any machine): launch sizes,
the tiled product's grid, the CSR inverse of a morphology window and the chunking of the
deterministic weight-gradient sums."""

from __future__ import annotations

import numpy as np

BLOCK = 256  # threads per block of the one-thread-per-output kernels
MAX_GRID = 65535 * 32  # blocks of a grid-stride launch (a larger grid only adds scheduling)
GRID_YZ = 65535  # the largest grid in y and z
# tropic_matmul_tiled (matmul.cu): a block of TILE_THREADS threads computes TILE_M x TILE_N outputs
# (TROPIC_TILE_TM * TROPIC_TILE_RM rows, TROPIC_TILE_TN * TROPIC_TILE_RN columns; the same for every dtype).
TILE_M = 128
TILE_N = 64
TILE_THREADS = 256  # TROPIC_TILE_TM * TROPIC_TILE_TN
SUM_THREADS = 256  # TROPIC_SUM_THREADS in sums.cu
INT32_MAX = 2**31 - 1


def launch_size(total: int, block: int = BLOCK) -> tuple[tuple[int], tuple[int]]:
    """(grid, block) of a grid-stride launch over ``total`` items (at least one block)."""
    blocks = max(1, min(-(-total // block), MAX_GRID))
    return (blocks,), (block,)


def tile_grid(M: int, N: int, batch: int) -> tuple[int, int, int]:
    """Grid of one ``tropic_matmul_tiled`` launch (batches in launches of at most 65535)."""
    return -(-N // TILE_N), -(-M // TILE_M), min(batch, GRID_YZ)


def tiled_fits(M: int) -> bool:
    """Whether the tiled kernel's grid (``M / TILE_M`` blocks in y) can cover ``M`` rows."""
    return -(-M // TILE_M) <= GRID_YZ


def batch_offsets(shape: tuple[int, ...], batch: tuple[int, ...], size: int) -> np.ndarray:
    """Element offset (int64) of each batch's matrix, in the broadcast ``batch`` order, in a
    C-contiguous array of batch shape ``shape`` holding matrices of ``size`` elements."""
    starts = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(shape) * size
    return np.ascontiguousarray(np.broadcast_to(starts, batch)).ravel()


def inverse_lines(table: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR inverse of a window's source table ``(n_out, k)`` (``-1``: border): for each source
    ``r < n``, the pairs ``(out, tap)`` with ``table[out, tap] == r``, sorted by ``(out, tap)``.

    Returns int32 ``(ptr, out, tap)``: the pairs of source ``r`` are ``ptr[r]:ptr[r + 1]``.

    >>> ptr, out, tap = inverse_lines(np.array([[-1, 0], [0, 1], [1, -1]]), 2)
    >>> ptr.tolist(), out.tolist(), tap.tolist()
    ([0, 2, 4], [0, 1, 1, 2], [1, 0, 1, 0])
    """
    out, tap = np.nonzero(table >= 0)  # row-major: sorted by (out, tap)
    source = table[out, tap]
    order = np.argsort(source, kind="stable")
    ptr = np.zeros(n + 1, np.int64)
    ptr[1:] = np.cumsum(np.bincount(source, minlength=n))
    return ptr.astype(np.int32), out[order].astype(np.int32), tap[order].astype(np.int32)


def chunking(positions: int, keys: int) -> tuple[int, int]:
    """``(chunks, chunk_size)`` of the weight-gradient sums over ``positions`` per key: a function
    of the shapes only (so the summation order, and the result, depends on nothing else), chunks of
    at least 4096 positions, and at most 4 Mi float64 partial sums (32 MiB) in all."""
    chunks = max(1, min(-(-positions // 4096), (1 << 22) // max(keys, 1)))
    return chunks, max(1, -(-positions // chunks))


VJP_THREADS = 1 << 17  # threads that keep a GPU's memory system busy (about 1000 per SM)
VJP_MIN_RUN = 32  # fewer positions per thread cost more in partial sums than they gain
VJP_MAX_PARTIAL = 1 << 25  # float64 partial sums beyond one chunk's (256 MiB)


def vjp_chunking(lines: int, positions: int, keys: int) -> tuple[int, int]:
    """``(chunks, chunk_size)`` of a product gradient's keyed sums (``cuda/matmul_vjp.cu``): each of
    ``lines`` lines of ``positions`` elements is cut into runs of ``chunk_size`` consecutive positions.

    A function of the shapes only, so the summation order (and the result) is too. One chunk when
    ``lines`` alone give enough threads (then the sums run in the NumPy backend's order); otherwise
    enough chunks for about ``VJP_THREADS`` threads, with runs of at least ``VJP_MIN_RUN`` positions and
    at most ``VJP_MAX_PARTIAL`` float64 partial sums beyond the first chunk's ``lines * keys``.

    >>> vjp_chunking(65536, 256, 256), vjp_chunking(256, 65536, 256), vjp_chunking(4, 10, 3)
    ((2, 128), (512, 128), (1, 10))
    """
    wanted = -(-VJP_THREADS // max(lines, 1))
    chunks = max(1, min(wanted, positions // VJP_MIN_RUN, 1 + VJP_MAX_PARTIAL // max(lines * keys, 1)))
    chunk_size = max(1, -(-positions // chunks))
    return max(1, -(-positions // chunk_size)), chunk_size


# tropic_morphology_tiled (morphology.cu): a block of MORPH_THREADS threads computes a MORPH_TILE x
# MORPH_TILE tile of one image's outputs (TROPIC_MORPH_TX columns, TROPIC_MORPH_TY * TROPIC_MORPH_RM
# rows) from the tile and its window halo staged in shared memory, which holds the halo of elements
# up to MORPH_MAX_K x MORPH_MAX_K (TROPIC_MORPH_KMAX) and their taps (at most MORPH_MAX_K ** 2).
MORPH_TILE = 32
MORPH_THREADS = 256
MORPH_MAX_K = 32


def morphology_tiled_fits(H: int, kh: int, kw: int) -> bool:
    """Whether ``tropic_morphology_tiled`` computes a morphology of images ``H`` rows high with a
    ``(kh, kw)`` structuring element: the staged region, ``(MORPH_TILE + kh - 1) x (MORPH_TILE + kw -
    1)`` values, must fit (``kh, kw <= MORPH_MAX_K``: 31 x 31 and 32 x 32 elements do, 33 x 1 does not;
    the other sizes take the one-thread-per-output kernel), and the grid's y dimension (``H /
    MORPH_TILE`` blocks) must cover ``H``. A pure function of the sizes, so the choice of kernel, not
    the result, depends on them.

    >>> [morphology_tiled_fits(256, kh, kw) for kh, kw in ((7, 7), (32, 32), (33, 1), (1, 33))]
    [True, True, False, False]
    """
    return kh <= MORPH_MAX_K and kw <= MORPH_MAX_K and -(-H // MORPH_TILE) <= GRID_YZ


def morphology_tile_grid(H: int, W: int, n: int) -> tuple[int, int, int]:
    """Grid of one ``tropic_morphology_tiled`` launch over ``n`` images of ``H x W``: (tiles along W,
    tiles along H, images), images in launches of at most 65535."""
    return -(-W // MORPH_TILE), -(-H // MORPH_TILE), min(n, GRID_YZ)


# tropic_conv2d_tiled (conv.cu): tiled.cuh's TILE_M x TILE_N block tile over the implicit unfold of one
# group (rows: the B * H_out * W_out output positions; columns: the group's output channels; k the
# C_group * kh * kw window taps, in steps of at most CONV_MAX_BK), with int32 offsets.
CONV_MAX_BK = 32  # TileDepth<float>::BK (16 for double)
CONV_NO_ROW = 2**30  # -TROPIC_CONV_NO_ROW: a padded image side must stay below it


def conv_tiled_fits(
    x_shape: tuple[int, int, int, int],
    w_shape: tuple[int, int, int, int],
    out_shape: tuple[int, int, int, int],
    padding: tuple[int, int],
    groups: int,
) -> bool:
    """Whether ``tropic_conv2d_tiled`` computes this convolution: every element offset of x, y and the
    transposed weights, the rows (``B * H_out * W_out``), columns (``C_out / groups``) and taps
    (``C_group * kh * kw``) plus a tile or step, and the padded image sides fit its int32 arithmetic
    (a side below ``CONV_NO_ROW``, so the rows past the last one stay outside the image), and the grid
    (``conv_tile_grid``) fits its y and z limits. Otherwise the one-thread-per-output kernel (64-bit
    offsets) runs. A pure function of the sizes: the choice of kernel, not the result, depends on them.

    >>> conv_tiled_fits((8, 64, 32, 32), (128, 64, 3, 3), (8, 128, 32, 32), (1, 1), 1)
    True
    >>> conv_tiled_fits((1, 1, 2**16, 2**15), (1, 1, 1, 1), (1, 1, 2**16, 2**15), (0, 0), 1)  # 2^31 x
    False
    >>> conv_tiled_fits((1, 1, 4, 4), (1, 1, 1, 1), (1, 1, 4, 4), (2**29, 0), 1)  # padded side 2^30 + 4
    False
    """
    B, C_in, H, W = x_shape
    C_out, C_group, kh, kw = w_shape
    _, _, H_out, W_out = out_shape
    ph, pw = padding
    per_group = C_out // groups
    sizes_fit = max(B * C_in * H * W, B * C_out * H_out * W_out, C_out * C_group * kh * kw) <= INT32_MAX
    rows, taps = B * H_out * W_out, C_group * kh * kw
    tiles_fit = max(rows + TILE_M, per_group + TILE_N, taps + CONV_MAX_BK) <= INT32_MAX
    sides_fit = max(H + 2 * ph, W + 2 * pw) < CONV_NO_ROW
    grid_fit = -(-per_group // TILE_N) <= GRID_YZ and groups <= GRID_YZ
    return sizes_fit and tiles_fit and sides_fit and grid_fit


def conv_tile_grid(B: int, H_out: int, W_out: int, per_group: int, groups: int) -> tuple[int, int, int]:
    """Grid of a ``tropic_conv2d_tiled`` launch: (row tiles of ``B * H_out * W_out``, column tiles of
    ``per_group``, groups)."""
    return -(-(B * H_out * W_out) // TILE_M), -(-per_group // TILE_N), groups
