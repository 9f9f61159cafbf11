"""Data sets for ``tropic train`` and ``tropic reproduce``: one :func:`load` for all of them.

================  =========================================================  =====================
name              source                                                     x (N, C, H, W)
================  =========================================================  =====================
``digits``        scikit-learn's bundled 8 x 8 digits (no download)          (N, 1, 8, 8), 10 classes
``diskorect``     tropic's synthetic binary images; y = a morphological      (N, 1, S, S), y alike
                  operation of x (``target``), a segmentation task
``mnist``         the four IDX files from ``data_dir`` (raw or ``.gz``)      (N, 1, 28, 28)
``fashion-mnist`` likewise (same names and format)                           (N, 1, 28, 28)
``cifar10``       the python pickles ``data_batch_1..5`` and ``test_batch``  (N, 3, 32, 32)
                  in ``data_dir`` or ``data_dir/cifar-10-batches-py``
================  =========================================================  =====================

Pixels are float32 in [0, 1]; labels int64. ``flatten=True`` gives ``(N, C * H * W)`` instead.
Nothing is downloaded: MNIST, Fashion-MNIST and CIFAR-10 are read from local files in their usual
formats, with their official train/test split; ``digits`` and ``diskorect`` are split with
``test_fraction`` and ``seed``. Missing files raise :class:`FileNotFoundError` naming the paths
that were looked for; malformed files raise :class:`ValueError` naming the file.

Examples
--------
>>> from tropic import datasets
>>> x_train, y_train, x_test, y_test = datasets.load("digits")
>>> x_train.shape, x_test.shape, x_train.dtype, int(y_train.max())
((1348, 1, 8, 8), (449, 1, 8, 8), dtype('float32'), 9)
>>> x, y, _, _ = datasets.load("diskorect", count=8, size=16, target="erosion:square:3", test_fraction=0.5)
>>> x.shape == y.shape == (4, 1, 16, 16)
True
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DATASETS",
    "OPERATIONS",
    "SHAPES",
    "diskorect_task",
    "load",
    "read_cifar10",
    "read_idx",
    "structuring_element",
]

DATASETS = ("digits", "diskorect", "mnist", "fashion-mnist", "cifar10")
OPERATIONS = ("dilation", "erosion", "opening", "closing")
SHAPES = ("disk", "cross", "square", "stick")

Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def load(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    test_fraction: float = 0.25,
    flatten: bool = False,
    target: str = "dilation:disk:7",
    count: int = 256,
    size: int = 32,
) -> Split:
    """Load a data set as ``(x_train, y_train, x_test, y_test)`` NumPy arrays.

    Parameters
    ----------
    name : {"digits", "diskorect", "mnist", "fashion-mnist", "cifar10"}
    data_dir : path, optional
        Folder of the files of ``mnist``, ``fashion-mnist`` and ``cifar10`` (required for them).
    seed : int
        Split of ``digits``; images and split of ``diskorect``.
    test_fraction : float
        Share of the samples held out as the test set (``digits`` and ``diskorect`` only: the other
        sets have an official split).
    flatten : bool
        Return images as ``(N, C * H * W)`` (y too, for ``diskorect``).
    target, count, size
        ``diskorect`` only: the morphological target ``"OPERATION[:SHAPE[:SIZE]]"`` (see
        :func:`diskorect_task`), the number of images (train + test) and their side.

    Returns
    -------
    x_train, y_train, x_test, y_test : numpy.ndarray
        float32 images in [0, 1]; int64 labels (float32 0/1 target images for ``diskorect``).
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if name == "digits":
        from .nn.data import load_digits_split

        x_train, y_train, x_test, y_test = load_digits_split(test_fraction, seed=seed)
        x_train, x_test = x_train.reshape(-1, 1, 8, 8), x_test.reshape(-1, 1, 8, 8)
    elif name == "diskorect":
        from .nn.data import train_test_split

        x, y = diskorect_task(count, size, target=target, seed=seed)
        x_train, y_train, x_test, y_test = train_test_split(x, y, test_fraction, seed=seed)
    else:
        if data_dir is None:
            raise ValueError(f"{name} is read from local files: give data_dir (the folder that holds them)")
        folder = Path(data_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"data folder {str(folder)!r} does not exist")
        if name == "cifar10":
            x_train, y_train, x_test, y_test = read_cifar10(folder)
        else:
            x_train, y_train, x_test, y_test = _read_mnist(folder, name)
    if flatten:
        x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
        if name == "diskorect":
            y_train, y_test = y_train.reshape(len(y_train), -1), y_test.reshape(len(y_test), -1)
    return x_train, y_train, x_test, y_test


# -- diskorect: synthetic binary images and a morphological target -------------------------------


def structuring_element(shape: str, size: int) -> np.ndarray:
    """A symmetric boolean ``size x size`` structuring element: ``disk`` (Euclidean radius
    ``size // 2``), ``cross`` (the centre row and column), ``square`` (all ones) or ``stick`` (the
    diagonal line through the centre)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown structuring element {shape!r}; choose one of {', '.join(SHAPES)}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1 or size % 2 == 0:
        raise ValueError(f"structuring element size must be an odd positive int, got {size!r}")
    r = size // 2
    i, j = np.mgrid[-r : r + 1, -r : r + 1]
    return {
        "disk": i**2 + j**2 <= r**2,
        "cross": (i == 0) | (j == 0),
        "square": np.ones((size, size), dtype=bool),
        "stick": i == j,
    }[shape]


def _parse_target(target: str) -> tuple[str, str, int]:
    parts = str(target).split(":")
    if not 1 <= len(parts) <= 3 or parts[0] not in OPERATIONS:
        raise ValueError(
            f"target must be OPERATION[:SHAPE[:SIZE]] with OPERATION in {', '.join(OPERATIONS)}, "
            f"got {target!r}"
        )
    operation = parts[0]
    shape = parts[1] if len(parts) > 1 else "disk"
    try:
        size = int(parts[2]) if len(parts) > 2 else 7
    except ValueError:
        raise ValueError(f"target {target!r}: the size must be an int") from None
    structuring_element(shape, size)  # validates both
    return operation, shape, size


def diskorect_task(
    count: int, size: int = 32, *, target: str = "dilation:disk:7", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` diskorect images (:func:`tropic.nn._synthetic.diskorect`) and their morphological
    transform: ``(x, y)``, both float32 0/1 of shape ``(count, 1, size, size)``.

    ``target`` is ``"OPERATION[:SHAPE[:SIZE]]"``: ``dilation``, ``erosion``, ``opening`` (erosion
    then dilation) or ``closing`` by a :func:`structuring_element` (default ``disk``, size 7, as the
    7 x 7 elements of Aouad & Talbot). The border replicates the edge pixels (SciPy's ``nearest``),
    the convention of :class:`tropic.nn.BiSE`, so a BiSE network can match the target exactly.
    """
    import tropic

    from .nn._synthetic import diskorect

    operation, shape, k = _parse_target(target)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 2:
        raise ValueError(f"count must be an int >= 2, got {count!r}")
    x = diskorect(int(count), int(size), seed=seed)
    footprint = structuring_element(shape, k)

    def dilate(a):
        return tropic.dilation(a, footprint=footprint, mode="nearest")

    def erode(a):
        return tropic.erosion(a, footprint=footprint, mode="nearest")

    steps = {"dilation": [dilate], "erosion": [erode], "opening": [erode, dilate], "closing": [dilate, erode]}
    y = x
    for step in steps[operation]:
        y = step(y)
    return x, np.ascontiguousarray(y, dtype=np.float32)


# -- MNIST and Fashion-MNIST: IDX files ------------------------------------------------------------

# IDX type codes (the third byte of the magic number) and the big-endian NumPy dtypes they denote.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# Folders (under data_dir) where the files are also looked for: torchvision's layout among them.
_MNIST_FOLDERS = {"mnist": ("", "raw", "MNIST/raw"), "fashion-mnist": ("", "raw", "FashionMNIST/raw")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (raw, or gzip-compressed if its name ends with ``.gz``) into a native-endian
    NumPy array of its declared type and shape.

    The header is checked exactly: two zero bytes, a known type code, a dimension count of 1 to 4,
    and a file length equal to header plus data; a :class:`ValueError` names the file otherwise.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as stream:
            raw = stream.read()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: cannot read ({exc})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX file ({len(raw)} bytes)")
    zero, code, ndim = raw[0:2], raw[2], raw[3]
    magic = int.from_bytes(raw[:4], "big")
    if zero != b"\0\0" or code not in _IDX_TYPES or not 1 <= ndim <= 4:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{magic:08x} (expected 0x0000TTDD: type TT, DD dims)"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[code])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: {len(raw)} bytes, but the header (shape {dims}, {dtype.name}) implies {expected}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _find(folder: Path, subfolders: tuple[str, ...], names: list[str], what: str) -> Path:
    candidates = [folder / sub / name for sub in subfolders for name in names]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    shown = ", ".join(str(c) for c in candidates[:2]) + (", ..." if len(candidates) > 2 else "")
    raise FileNotFoundError(f"{what}: none of {shown} exists (looked for {' / '.join(names)})")


def _read_mnist(folder: Path, name: str) -> Split:
    arrays = {}
    for key, stem in _MNIST_FILES.items():
        dotted = stem.replace("-idx", ".idx")  # "train-images.idx3-ubyte", another common spelling
        names = [stem, stem + ".gz", dotted, dotted + ".gz"]
        path = _find(folder, _MNIST_FOLDERS[name], names, f"{name} {key}")
        data = read_idx(path)
        images = key.startswith("x")
        if data.dtype != np.uint8 or data.ndim != (3 if images else 1):
            kind = "images (unsigned bytes, 3 dims)" if images else "labels (unsigned bytes, 1 dim)"
            raise ValueError(f"{path}: expected {kind}, got {data.dtype} with shape {data.shape}")
        if not images and data.size and data.max() > 9:
            raise ValueError(f"{path}: label {int(data.max())} outside 0..9")
        arrays[key] = (data, path)
    for part in ("train", "test"):
        (x, x_path), (y, y_path) = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if len(x) != len(y):
            raise ValueError(f"{x_path} has {len(x)} images but {y_path} has {len(y)} labels")
    out = []
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"][0], arrays[f"y_{part}"][0]
        out += [(x.astype(np.float32) / 255.0)[:, None], y.astype(np.int64)]
    return tuple(out)  # type: ignore[return-value]


# -- CIFAR-10: python pickles ----------------------------------------------------------------------

_CIFAR_TRAIN = [f"data_batch_{i}" for i in range(1, 6)]
_CIFAR_TEST = ["test_batch"]


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and NumPy arrays, and nothing else: a data file
    cannot run code."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),  # arrays pickled with protocol 5
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # bytes pickled by Python 3 with protocol 2
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as stream:
            batch = _ArrayUnpickler(io.BytesIO(stream.read()), encoding="bytes").load()
    except FileNotFoundError:
        raise
    except Exception as exc:  # any unpickling failure of a malformed file
        raise ValueError(f"{path}: not a CIFAR-10 python pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a dict, got {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        raise ValueError(f"{path}: missing the 'data' or 'labels' entry (has {sorted(map(str, batch))})")
    data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.ndim != 1 or len(labels) != len(data) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: 'labels' must be {len(data)} ints, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(
            f"{path}: label {int(labels.max() if labels.max() > 9 else labels.min())} outside 0..9"
        )
    return (data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0), labels.astype(np.int64)


def read_cifar10(folder: str | os.PathLike) -> Split:
    """CIFAR-10 from its python pickles (``data_batch_1`` ... ``data_batch_5``, ``test_batch``) in
    ``folder`` or ``folder/cifar-10-batches-py``: images ``(N, 3, 32, 32)`` float32 in [0, 1]."""
    folder = Path(folder)
    base = next((f for f in (folder, folder / "cifar-10-batches-py") if (f / "test_batch").is_file()), None)
    if base is None:
        wanted = ", ".join(_CIFAR_TRAIN + _CIFAR_TEST)
        raise FileNotFoundError(
            f"cifar10: {folder / 'test_batch'} and {folder / 'cifar-10-batches-py' / 'test_batch'} are "
            f"missing (expected {wanted} in one of these folders)"
        )
    parts = []
    for names in (_CIFAR_TRAIN, _CIFAR_TEST):
        missing = [str(base / n) for n in names if not (base / n).is_file()]
        if missing:
            raise FileNotFoundError(f"cifar10: missing {', '.join(missing)}")
        batches = [_read_cifar_batch(base / n) for n in names]
        parts += [np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])]
    return tuple(parts)  # type: ignore[return-value]
