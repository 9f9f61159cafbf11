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
>>> from tropic.apps import datasets
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
import math
import os
import pickle
import pickletools
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DATASETS",
    "DISKORECT_SIZE",
    "OPERATIONS",
    "SHAPES",
    "diskorect_task",
    "load",
    "read_cifar10",
    "read_idx",
    "split_sizes",
    "structuring_element",
]

DATASETS = ("digits", "diskorect", "mnist", "fashion-mnist", "cifar10")
OPERATIONS = ("dilation", "erosion", "opening", "closing")
SHAPES = ("disk", "cross", "square", "stick")
DISKORECT_SIZE = 32  # the default side of diskorect images
DIGITS_SAMPLES = 1797  # scikit-learn's digits

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
    size: int = DISKORECT_SIZE,
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
    split_sizes(name, test_fraction, count=count)
    if name == "digits":
        from tropic.nn.data import load_digits_split

        x_train, y_train, x_test, y_test = load_digits_split(test_fraction, seed=seed)
        x_train, x_test = x_train.reshape(-1, 1, 8, 8), x_test.reshape(-1, 1, 8, 8)
    elif name == "diskorect":
        from tropic.nn.data import train_test_split

        x, y = diskorect_task(count, size, target=target, seed=seed)
        x_train, y_train, x_test, y_test = train_test_split(x, y, test_fraction, seed=seed)
    else:
        if data_dir is None:
            raise ValueError(f"{name} is read from local files: give data_dir (the folder that holds them)")
        folder = Path(data_dir)
        if not folder.exists():
            raise FileNotFoundError(f"data folder {str(folder)!r} does not exist")
        if not folder.is_dir():
            raise NotADirectoryError(f"data folder {str(folder)!r} is a file, not a folder")
        if name == "cifar10":
            x_train, y_train, x_test, y_test = read_cifar10(folder)
        else:
            x_train, y_train, x_test, y_test = _read_mnist(folder, name)
    if flatten:
        x_train, x_test = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
        if name == "diskorect":
            y_train, y_test = y_train.reshape(len(y_train), -1), y_test.reshape(len(y_test), -1)
    return x_train, y_train, x_test, y_test


def split_sizes(name: str, test_fraction: float, *, count: int = 256) -> tuple[int, int] | None:
    """``(n_train, n_test)`` of the split :func:`load` makes of ``digits`` or ``diskorect`` (``count``
    images), or None for the sets with an official split; :class:`ValueError` when ``test_fraction``
    is not in (0, 1) or leaves the training or the test set empty.

    >>> split_sizes("digits", 0.25)
    (1348, 449)
    """
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if name not in ("digits", "diskorect"):
        return None
    if name == "diskorect" and (
        isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 2
    ):
        return None  # diskorect_task says what is wrong with the count
    n = DIGITS_SAMPLES if name == "digits" else int(count)
    n_test = round(test_fraction * n)  # as tropic.nn.data.train_test_split cuts
    if n_test == 0 or n_test == n:
        part = "test" if n_test == 0 else "training"
        raise ValueError(
            f"test_fraction {test_fraction:g} leaves the {part} set empty ({n_test} of the {n} {name} "
            f"samples held out): use a value from {1 / n:.4g} to {1 - 1 / n:.4g}"
        )
    return n - n_test, n_test


# -- diskorect: synthetic binary images and a morphological target -------------------------------


def structuring_element(shape: str, size: int) -> np.ndarray:
    """A symmetric boolean ``size x size`` structuring element: ``disk`` (Euclidean radius
    ``size // 2``), ``cross`` (the centre row and column), ``square`` (all ones) or ``stick`` (the
    diagonal line through the centre)."""
    _check_element(shape, size)
    r = size // 2
    i, j = np.ogrid[-r : r + 1, -r : r + 1]  # a column and a row, broadcast: no (size, size) index grids
    return {
        "square": lambda: np.ones((size, size), dtype=bool),
        "disk": lambda: i**2 + j**2 <= r**2,
        "cross": lambda: (i == 0) | (j == 0),
        "stick": lambda: i == j,
    }[shape]()


def _check_element(shape: str, size: int) -> None:
    if shape not in SHAPES:
        raise ValueError(f"unknown structuring element {shape!r}; choose one of {', '.join(SHAPES)}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1 or size % 2 == 0:
        raise ValueError(f"structuring element size must be an odd positive int, got {size!r}")


def _parse_target(target: str, image_size: int | None = None) -> tuple[str, str, int]:
    """``(operation, shape, size)`` of a diskorect target, checked without building the element.

    With ``image_size``, the size must be at most ``2 * image_size - 1``: a wider element reaches past
    the image's edges from every pixel (and a huge one would only cost memory).
    """
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
    _check_element(shape, size)
    if image_size is not None and size > 2 * image_size - 1:
        raise ValueError(
            f"target {target!r}: the structuring element size must be at most 2 x {image_size} - 1 = "
            f"{2 * image_size - 1} for {image_size} x {image_size} images, got {size}"
        )
    return operation, shape, size


def diskorect_task(
    count: int, size: int = DISKORECT_SIZE, *, target: str = "dilation:disk:7", seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``count`` diskorect images (:func:`tropic.nn._synthetic.diskorect`) and their morphological
    transform: ``(x, y)``, both float32 0/1 of shape ``(count, 1, size, size)``.

    ``target`` is ``"OPERATION[:SHAPE[:SIZE]]"``: ``dilation``, ``erosion``, ``opening`` (erosion
    then dilation) or ``closing`` by a :func:`structuring_element` (default ``disk``, size 7, as the
    7 x 7 elements of Aouad & Talbot). The border replicates the edge pixels (SciPy's ``nearest``),
    the convention of :class:`tropic.nn.BiSE`, so a BiSE network can match the target exactly.
    """
    import tropic
    from tropic.nn._synthetic import diskorect

    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    operation, shape, k = _parse_target(target, int(size))
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

    The header is read and checked first: two zero bytes, a known type code, a dimension count of 1
    to 4, and a data length that the file can hold (a raw file's size must be header plus data
    exactly; a gzip file cannot hold more than 1032 times its size, deflate's limit). Then exactly the
    announced number of bytes is read, and one more to detect trailing data: memory stays of the
    order of the announced size, whatever a compressed file would expand to. Any mismatch raises a
    :class:`ValueError` naming the file.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if path.name.endswith(".gz"):
                with gzip.GzipFile(fileobj=file, mode="rb") as stream:
                    return _read_idx_stream(stream, path, size, compressed=True)
            return _read_idx_stream(file, path, size, compressed=False)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot read ({exc})") from None


# Deflate emits at least 2 bits per 258-byte match: no gzip file expands by more than 1032 times.
_DEFLATE_MAX_RATIO = 1032


def _read_idx_stream(stream: Any, path: Path, size: int, compressed: bool) -> np.ndarray:
    head = stream.read(4)
    if len(head) < 4:
        raise ValueError(f"{path}: too short for an IDX file ({len(head)} bytes)")
    zero, code, ndim = head[0:2], head[2], head[3]
    magic = int.from_bytes(head, "big")
    if zero != b"\0\0" or code not in _IDX_TYPES or not 1 <= ndim <= 4:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{magic:08x} (expected 0x0000TTDD: type TT, DD dims)"
        )
    sizes = stream.read(4 * ndim)
    if len(sizes) < 4 * ndim:
        raise ValueError(f"{path}: truncated IDX header")
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(sizes[4 * i : 4 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_TYPES[code])
    nbytes = math.prod(dims) * dtype.itemsize  # Python ints: no wrap-around, whatever the header says
    expected = header + nbytes
    announced = f"the header (shape {dims}, {dtype.name}) implies {expected}"
    if not compressed and size != expected:
        raise ValueError(f"{path}: {size} bytes, but {announced}")
    if compressed and expected > _DEFLATE_MAX_RATIO * size:
        raise ValueError(f"{path}: {announced} bytes, more than a {size}-byte gzip file can hold")
    buffer = np.empty(nbytes, dtype=np.uint8)
    got = _read_into(stream, buffer)
    if got < nbytes:
        raise ValueError(f"{path}: {header + got} bytes, but {announced}")
    if stream.read(1):
        raise ValueError(f"{path}: more than {expected} bytes, but {announced}")
    data = buffer.view(dtype).reshape(dims)
    if not dtype.isnative:
        data = data.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return data


def _read_into(stream: Any, buffer: np.ndarray, chunk: int = 1 << 22) -> int:
    """Fill the uint8 ``buffer`` from ``stream`` (at most its length); return the bytes read."""
    view = memoryview(buffer)
    done = 0
    while done < len(view):
        part = stream.read(min(chunk, len(view) - done))
        if not part:
            break
        view[done : done + len(part)] = part
        done += len(part)
    return done


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
        if len(data) == 0 or (images and 0 in data.shape):
            raise ValueError(f"{path}: holds no {'images' if images else 'labels'} (shape {data.shape})")
        if not images and data.max() > 9:
            raise ValueError(f"{path}: label {int(data.max())} outside 0..9")
        arrays[key] = (data, path)
    for part in ("train", "test"):
        (x, x_path), (y, y_path) = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if len(x) != len(y):
            raise ValueError(f"{x_path} has {len(x)} images but {y_path} has {len(y)} labels")
    (x_train, train_path), (x_test, test_path) = arrays["x_train"], arrays["x_test"]
    if x_train.shape[1:] != x_test.shape[1:]:
        train_size, test_size = (" x ".join(map(str, x.shape[1:])) for x in (x_train, x_test))
        raise ValueError(
            f"{train_path} holds {train_size} images but {test_path} holds {test_size} images: "
            f"train and test images must have one size"
        )
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


# Opcodes a CIFAR-10 batch never needs: sets, extensions, persistent ids, out-of-band buffers and the
# object-creating opcodes other than REDUCE (the one NumPy's pickles use).
_REFUSED_OPCODES = frozenset(
    {
        "EMPTY_SET", "ADDITEMS", "FROZENSET", "EXT1", "EXT2", "EXT4", "INST", "OBJ", "NEWOBJ",
        "NEWOBJ_EX", "PERSID", "BINPERSID", "NEXT_BUFFER", "READONLY_BUFFER",
    }
)  # fmt: skip
_CONTAINER_OPCODES = frozenset(
    {"EMPTY_LIST", "LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_DICT", "DICT"}
)
_GET_OPCODES = frozenset({"GET", "BINGET", "LONG_BINGET", "DUP"})
_PUT_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})
_IN_PLACE_OPCODES = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "BUILD"})  # leave their target


class _Shadow:
    """One object of :func:`_check_pickle_structure`'s shadow stack: is it a list, tuple or dict?"""

    __slots__ = ("container",)

    def __init__(self, container: bool) -> None:
        self.container = container


_MARK = _Shadow(False)


def _check_pickle_structure(raw: bytes) -> None:
    """Walk the opcodes of a pickle (without building anything) and refuse what a data file never
    holds: a list, tuple or dict referenced more than once (memo ``GET`` or ``DUP`` of a container).

    Without shared containers the unpickled object graph is a tree of at most the file's size, so
    that nothing downstream (hashing a dict key, ``numpy.asarray``, ``repr``) can blow up: a
    7 KB pickle of 30 nested levels of ``[a, a]`` is a list of 2**30 leaves for anything that walks
    it. Opcodes a CIFAR batch does not use are refused too (:data:`_REFUSED_OPCODES`). Raises
    :class:`pickle.UnpicklingError` (or the ``ValueError``, ``IndexError`` or ``KeyError`` of a
    malformed stream).
    """
    stack: list[_Shadow] = []
    memo: dict[int, _Shadow] = {}
    for op, arg, pos in pickletools.genops(raw):
        name = op.name
        if name in _REFUSED_OPCODES:
            raise pickle.UnpicklingError(f"refusing the opcode {name} (byte {pos}) in a data file")
        if name in _GET_OPCODES:
            target = stack[-1] if name == "DUP" else memo[arg]
            if target.container:
                raise pickle.UnpicklingError(
                    f"refusing a second reference to a list, tuple or dict (byte {pos}): shared or "
                    f"self-referencing containers are not allowed in a data file"
                )
            stack.append(target)
            continue
        if name in _PUT_OPCODES:
            memo[len(memo) if name == "MEMOIZE" else arg] = stack[-1]
            continue
        before = op.stack_before
        popped = []
        if pickletools.markobject in before:
            while stack[-1] is not _MARK:
                stack.pop()
            stack.pop()
            before = before[: before.index(pickletools.markobject)]
        for _ in before:
            popped.append(stack.pop())
        if name in _IN_PLACE_OPCODES:
            stack.append(popped[-1])  # the list, dict or object the opcode changed
        elif op.stack_after == [pickletools.markobject]:
            stack.append(_MARK)
        else:
            stack.extend(_Shadow(name in _CONTAINER_OPCODES) for _ in op.stack_after)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 batch, checked in this order: the pickle's structure (no code, no shared
    containers), a dict with ``data`` and ``labels``, their types and sizes, the label values; only
    then is anything converted."""
    try:
        with open(path, "rb") as stream:
            raw = stream.read()
        _check_pickle_structure(raw)
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except FileNotFoundError:
        raise
    except Exception as exc:  # any unpickling failure of a malformed or refused file
        raise ValueError(f"{path}: not a CIFAR-10 python pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a dict, got {type(batch).__name__}")
    entries = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in entries or "labels" not in entries:
        keys = sorted(repr(k)[:40] for k in entries if isinstance(k, str))
        raise ValueError(f"{path}: missing the 'data' or 'labels' entry (has {', '.join(keys) or 'none'})")
    data = _cifar_data(entries["data"], path)
    return data, _cifar_labels(entries["labels"], len(data), path)


def _cifar_data(data: Any, path: Path) -> np.ndarray:
    """``data`` as float32 images ``(N, 3, 32, 32)``: a uint8 array ``(N, 3072)`` or its raw bytes."""
    row = 3 * 32 * 32
    if isinstance(data, (bytes, bytearray)):
        if len(data) % row:
            raise ValueError(f"{path}: 'data' holds {len(data)} bytes, not a multiple of {row} (3 x 32 x 32)")
        data = np.frombuffer(data, dtype=np.uint8).reshape(-1, row)
    if not isinstance(data, np.ndarray):
        raise ValueError(f"{path}: 'data' must be uint8 of shape (N, 3072), got a {type(data).__name__}")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row:
        raise ValueError(f"{path}: 'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    return data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0


def _cifar_labels(labels: Any, n: int, path: Path) -> np.ndarray:
    """``labels`` as int64: a flat list of ``n`` ints in 0..9, or a 1-D integer array of them.

    Types and the length are checked before any conversion: a nested list is refused at its first
    element, never expanded."""
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or len(labels) != n or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{path}: 'labels' must be {n} ints, got {labels.dtype} {labels.shape}")
        values = labels.astype(np.int64)
    elif isinstance(labels, list):
        if len(labels) != n:
            raise ValueError(f"{path}: 'labels' must be {n} ints, got a list of {len(labels)}")
        for i, v in enumerate(labels):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{path}: 'labels' must be {n} ints, got a {type(v).__name__} at index {i}")
            if not 0 <= v <= 9:
                raise ValueError(f"{path}: label {int(v)} outside 0..9 (index {i})")
        return np.array(labels, dtype=np.int64)
    else:
        raise ValueError(f"{path}: 'labels' must be a list of {n} ints, got a {type(labels).__name__}")
    bad = np.flatnonzero((values < 0) | (values > 9))
    if bad.size:
        raise ValueError(f"{path}: label {int(values[bad[0]])} outside 0..9 (index {int(bad[0])})")
    return values


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
