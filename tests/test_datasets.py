"""tropic.apps.datasets: tiny MNIST IDX files and CIFAR-10 pickles written here in their exact formats,
loaded back (values, shapes, labels), and malformed files rejected with errors naming the file."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest

from tropic.apps import datasets

pytest.importorskip("sklearn", reason="scikit-learn (the test extra) provides the digits data")


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """An IDX file: 0x00 0x00, type code, dims; big-endian sizes; big-endian data."""
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    header = bytes([0, 0, code, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + np.asarray(array, dtype=dtype).tobytes()


def write_mnist(folder, n_train=5, n_test=3, *, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        if gz:
            with gzip.open(folder / f"{name}.gz", "wb") as f:
                f.write(idx_bytes(array))
        else:
            (folder / name).write_bytes(idx_bytes(array))
    return arrays


def write_cifar(folder, per_batch=4, *, protocol=pickle.HIGHEST_PROTOCOL, seed=0):
    rng = np.random.default_rng(seed)
    batches = {}
    folder.mkdir(parents=True, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"batch_label": name.encode(),
            b"labels": rng.integers(0, 10, per_batch).tolist(),
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [b"x.png"] * per_batch,
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        batches[name] = batch
    return batches


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_mnist_idx_raw_and_gz(tmp_path, gz, name):
    arrays = write_mnist(tmp_path, gz=gz)
    x_train, y_train, x_test, y_test = datasets.load(name, tmp_path)
    assert x_train.shape == (5, 1, 28, 28) and x_test.shape == (3, 1, 28, 28)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    np.testing.assert_array_equal(x_train[:, 0], arrays["train-images-idx3-ubyte"] / np.float32(255))
    np.testing.assert_array_equal(y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])
    flat = datasets.load(name, tmp_path, flatten=True)
    assert flat[0].shape == (5, 784)
    np.testing.assert_array_equal(flat[0], x_train.reshape(5, -1))


def test_mnist_torchvision_layout(tmp_path):
    write_mnist(tmp_path / "MNIST" / "raw", gz=True)
    assert datasets.load("mnist", tmp_path)[0].shape == (5, 1, 28, 28)


@pytest.mark.parametrize(("code", "dtype"), [(0x08, np.uint8), (0x0B, np.int16), (0x0D, np.float32)])
def test_read_idx_types_and_shapes(tmp_path, code, dtype):
    array = np.arange(24).reshape(2, 3, 4).astype(dtype)
    path = tmp_path / "a.idx"
    path.write_bytes(idx_bytes(array, code))
    out = datasets.read_idx(path)
    assert out.dtype == dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def corrupt(folder, name, data):
    (folder / name).write_bytes(data)
    return str(folder / name)


def test_mnist_malformed_files(tmp_path):
    arrays = write_mnist(tmp_path)
    images = idx_bytes(arrays["train-images-idx3-ubyte"])
    cases = [
        (b"\x00\x01" + images[2:], "bad IDX magic number 0x00010803"),  # magic must start 0x0000
        (images[:2] + b"\x42" + images[3:], "bad IDX magic"),  # unknown type code
        (images[:-1], "bytes, but the header"),  # one byte short
        (images + b"\0", "bytes, but the header"),
        (images[:6], "truncated IDX header"),
        (idx_bytes(arrays["train-images-idx3-ubyte"].reshape(5, -1)), "expected images"),
        (idx_bytes(arrays["train-images-idx3-ubyte"].astype(np.int16), 0x0B), "expected images"),
    ]
    for data, message in cases:
        path = corrupt(tmp_path, "train-images-idx3-ubyte", data)
        with pytest.raises(ValueError, match=message) as info:
            datasets.load("mnist", tmp_path)
        assert path in str(info.value)
    corrupt(tmp_path, "train-images-idx3-ubyte", images)
    labels = corrupt(tmp_path, "train-labels-idx1-ubyte", idx_bytes(np.array([1, 2, 10, 3, 4])))
    with pytest.raises(ValueError, match=r"label 10 outside 0\.\.9") as info:
        datasets.load("mnist", tmp_path)
    assert labels in str(info.value)
    corrupt(tmp_path, "train-labels-idx1-ubyte", idx_bytes(np.array([1, 2, 3])))
    with pytest.raises(ValueError, match=r"has 5 images but .* has 3 labels"):
        datasets.load("mnist", tmp_path)
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"bad\.gz: cannot read"):
        datasets.read_idx(tmp_path / "bad.gz")


def test_missing_files_name_the_expected_paths(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte") as info:
        datasets.load("mnist", tmp_path)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.load("mnist", tmp_path / "nowhere")
    with pytest.raises(ValueError, match="give data_dir"):
        datasets.load("fashion-mnist")
    with pytest.raises(FileNotFoundError, match="test_batch"):
        datasets.load("cifar10", tmp_path)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
@pytest.mark.parametrize("subfolder", ["", "cifar-10-batches-py"])
def test_cifar10_pickles(tmp_path, protocol, subfolder):
    batches = write_cifar(tmp_path / subfolder, protocol=protocol)
    x_train, y_train, x_test, y_test = datasets.load("cifar10", tmp_path)
    assert x_train.shape == (20, 3, 32, 32) and x_test.shape == (4, 3, 32, 32)
    assert x_train.dtype == np.float32 and 0.0 <= x_train.min() and x_train.max() <= 1.0
    first = batches["data_batch_1"][b"data"][0]
    # CIFAR's row layout: 1024 red, then 1024 green, then 1024 blue values, each row-major 32 x 32
    np.testing.assert_array_equal(x_train[0, 1], first[1024:2048].reshape(32, 32) / np.float32(255))
    expected = [label for i in range(1, 6) for label in batches[f"data_batch_{i}"][b"labels"]]
    np.testing.assert_array_equal(y_train, expected)
    np.testing.assert_array_equal(y_test, batches["test_batch"][b"labels"])
    assert datasets.load("cifar10", tmp_path, flatten=True)[2].shape == (4, 3072)


def test_cifar10_malformed(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "data_batch_3"
    for content, message in [
        (b"garbage", "not a CIFAR-10 python pickle"),
        (pickle.dumps([1, 2]), "expected a dict"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}), "missing the 'data' or 'labels'"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), "shape \\(N, 3072\\)"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "'labels' must be 2 ints"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}), "label 12 outside"),
        (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": print}), "refusing"),
    ]:
        path.write_bytes(content)
        with pytest.raises(ValueError, match=message) as info:
            datasets.load("cifar10", tmp_path)
        assert str(path) in str(info.value)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        datasets.load("cifar10", tmp_path)


def test_digits_split_and_flatten():
    x_train, y_train, x_test, y_test = datasets.load("digits", seed=0)
    assert x_train.shape == (1348, 1, 8, 8) and y_test.shape == (449,)
    flat = datasets.load("digits", seed=0, flatten=True)
    np.testing.assert_array_equal(flat[0], x_train.reshape(1348, 64))
    assert len(datasets.load("digits", test_fraction=0.5)[2]) == round(0.5 * 1797)


def test_diskorect_targets_match_scipy_with_edge_border():
    ndimage = pytest.importorskip("scipy.ndimage")
    for target in ["dilation:disk:7", "erosion:cross:5", "opening:square:3", "closing:stick:5"]:
        x, y = datasets.diskorect_task(3, 24, target=target, seed=1)
        operation, shape, size = target.split(":")
        se = datasets.structuring_element(shape, int(size))
        r = int(size) // 2

        def apply(fn, image, se=se, r=r):
            return fn(np.pad(image, r, mode="edge"), se)[r:-r, r:-r]

        dil, ero = ndimage.binary_dilation, ndimage.binary_erosion
        steps = {"dilation": [dil], "erosion": [ero], "opening": [ero, dil], "closing": [dil, ero]}[operation]
        for image, out in zip(x[:, 0], y[:, 0], strict=True):
            expected = image.astype(bool)
            for step in steps:
                expected = apply(step, expected)
            np.testing.assert_array_equal(out.astype(bool), expected)
    a = datasets.load("diskorect", count=10, size=16, seed=3)
    b = datasets.load("diskorect", count=10, size=16, seed=3)
    assert all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))
    assert a[0].shape == (8, 1, 16, 16) and a[3].shape == (2, 1, 16, 16)


def test_structuring_elements():
    assert datasets.structuring_element("disk", 5).sum() == 13
    assert datasets.structuring_element("cross", 5).sum() == 9
    assert datasets.structuring_element("stick", 5).sum() == 5
    assert datasets.structuring_element("square", 3).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "imagenet"}, "unknown data set"),
        ({"name": "digits", "test_fraction": 1.0}, "test_fraction"),
        ({"name": "diskorect", "target": "thinning"}, "OPERATION"),
        ({"name": "diskorect", "target": "dilation:hexagon"}, "unknown structuring element"),
        ({"name": "diskorect", "target": "dilation:disk:4"}, "odd positive"),
        ({"name": "diskorect", "target": "dilation:disk:x"}, "must be an int"),
        ({"name": "diskorect", "count": 1}, "count"),
        ({"name": "diskorect", "target": "dilation:disk:65"}, r"at most 2 x 32 - 1 = 63 for 32 x 32 images"),
        ({"name": "diskorect", "target": "dilation:disk:17", "size": 8}, r"at most 2 x 8 - 1 = 15"),
        ({"name": "diskorect", "size": 0}, "size must be a positive int"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        datasets.load(**kwargs)
