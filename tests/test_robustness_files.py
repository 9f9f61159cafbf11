"""Crafted data and model files fail fast with a ValueError naming the file, in memory of the order of
what their headers announce: gzip and zip bombs, IDX headers whose sizes overflow, pickles whose
shared references expand exponentially, and pickles that try to run code.

The memory-hungry cases run in a child interpreter whose address space is capped (``RLIMIT_AS``) a
little above what it holds after its imports, and with a timeout: a regression fails the test (a
``MemoryError`` or a timeout in the child) instead of taking the machine's memory.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from tropic.apps import datasets

from .test_datasets import idx_bytes, write_cifar, write_mnist

MiB = 1 << 20

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="RLIMIT_AS and /proc/self/status are Linux's"
)

_CHILD = """
import json, resource, sys
{imports}

def _vm_bytes():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

_, hard = resource.getrlimit(resource.RLIMIT_AS)
resource.setrlimit(resource.RLIMIT_AS, (_vm_bytes() + {extra}, hard))
try:
{body}
    print(json.dumps({{"ok": True}}))
except BaseException as exc:
    print(json.dumps({{"ok": False, "type": type(exc).__name__, "message": str(exc)[:2000]}}))
"""


def run_capped(body: str, *, imports: str, extra_mb: int = 160, timeout: float = 60.0) -> dict:
    """Run ``body`` in a fresh interpreter after ``imports``, its address space capped at its size
    after the imports plus ``extra_mb``; return ``{"ok": ...}`` or the exception's type and message."""
    code = _CHILD.format(imports=imports, extra=extra_mb * MiB, body=textwrap.indent(body, "    "))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"}
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child did not finish in {timeout} s")
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- IDX ---------------------------------------------------------------------------------------------


def gzip_bomb(path, head: bytes, zeros_mib: int) -> None:
    """A gzip file of ``head`` and then ``zeros_mib`` MiB of zeros (one compressed member repeated:
    concatenated members are valid gzip), written in a blink whatever its expanded size."""
    member = gzip.compress(bytes(MiB), compresslevel=9)
    with open(path, "wb") as stream:
        stream.write(gzip.compress(head))
        for _ in range(zeros_mib):
            stream.write(member)


@linux_only
def test_gzip_idx_bomb_reads_only_the_announced_bytes(tmp_path):
    """Under 1 MiB on disk, 384 MiB of zeros after a header that announces 64 x 28 x 28 bytes: the
    read stops one byte after the announced data (it used to decompress everything first)."""
    images = np.arange(64 * 28 * 28, dtype=np.uint8).reshape(64, 28, 28)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    gzip_bomb(path, idx_bytes(images), zeros_mib=384)
    assert path.stat().st_size < MiB
    outcome = run_capped(
        f"tropic.apps.datasets.read_idx({str(path)!r})", imports="import tropic.apps.datasets"
    )
    assert outcome["type"] == "ValueError", outcome
    assert str(path) in outcome["message"] and "more than 50192 bytes" in outcome["message"]


def test_gzip_idx_announcing_more_than_deflate_can_hold_fails_before_reading(tmp_path):
    path = tmp_path / "a.idx.gz"
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">III", 60000, 28000, 28000)
    path.write_bytes(gzip.compress(header + bytes(1000)))
    with pytest.raises(ValueError, match=r"more than a \d+-byte gzip file can hold") as info:
        datasets.read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_dimension_product_overflowing_int64_names_the_file(tmp_path, gz):
    """65536**4 = 2**64 wraps to 0 in int64: a header-only file used to pass the length check and
    end in a NumPy reshape error."""
    header = bytes([0, 0, 0x08, 4]) + struct.pack(">IIII", 65536, 65536, 65536, 65536)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(header) if gz else header)
    with pytest.raises(ValueError, match=r"implies 18446744073709551636") as info:
        datasets.read_idx(path)
    assert str(path) in str(info.value)


def test_idx_exact_reads_raw_and_gzip(tmp_path):
    """Big-endian types come back native; a truncated or over-long gzip file is named."""
    array = np.linspace(-2, 2, 24, dtype=np.float64).reshape(2, 3, 4)
    raw = idx_bytes(array, 0x0E)
    for name, content in [("a.idx", raw), ("a.idx.gz", gzip.compress(raw))]:
        (tmp_path / name).write_bytes(content)
        out = datasets.read_idx(tmp_path / name)
        assert out.dtype == np.float64 and out.dtype.isnative
        np.testing.assert_array_equal(out, array)
    (tmp_path / "short.gz").write_bytes(gzip.compress(raw[:-3]))
    with pytest.raises(ValueError, match=r"short\.gz: 205 bytes, but the header"):
        datasets.read_idx(tmp_path / "short.gz")
    (tmp_path / "long.gz").write_bytes(gzip.compress(raw + b"\0"))
    with pytest.raises(ValueError, match=r"long\.gz: more than 208 bytes, but the header"):
        datasets.read_idx(tmp_path / "long.gz")


def test_mnist_with_no_images_or_labels_names_the_file(tmp_path):
    write_mnist(tmp_path)
    empty = tmp_path / "t10k-images-idx3-ubyte"
    empty.write_bytes(idx_bytes(np.zeros((0, 28, 28), np.uint8)))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(0, np.uint8)))
    with pytest.raises(ValueError, match="holds no images") as info:
        datasets.load("mnist", tmp_path)
    assert str(empty) in str(info.value)
    write_mnist(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte"
    labels.write_bytes(idx_bytes(np.zeros(0, np.uint8)))
    with pytest.raises(ValueError, match="holds no labels") as info:
        datasets.load("mnist", tmp_path)
    assert str(labels) in str(info.value)


def test_mnist_train_and_test_images_of_different_sizes(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((3, 20, 20), np.uint8)))
    with pytest.raises(ValueError, match=r"holds 28 x 28 images but \S+ holds 20 x 20 images") as info:
        datasets.load("mnist", tmp_path)
    assert str(tmp_path / "train-images-idx3-ubyte") in str(info.value)
    assert str(tmp_path / "t10k-images-idx3-ubyte") in str(info.value)


# -- CIFAR-10 pickles ----------------------------------------------------------------------------------


def nested(levels: int, leaf=0, kind=list):
    """``levels`` levels of ``[a, a]``: 2**levels leaves for a walk, a few bytes pickled (shared)."""
    a = leaf
    for _ in range(levels):
        a = kind((a, a))
    return a


def tuple_key_bomb(levels: int) -> bytes:
    """A pickled dict whose key is ``nested(levels, kind=tuple)``: unpickling hashes the key, a walk
    of 2**levels tuples (crafted by hand: building that dict in Python would hash it too)."""
    key = pickle.dumps(nested(levels, kind=tuple), protocol=2)[2:-1]  # no PROTO, no STOP
    return b"\x80\x02}" + key + b"K\x01s."  # EMPTY_DICT, key, BININT1 1, SETITEM, STOP


@linux_only
@pytest.mark.parametrize(
    "content",
    [
        pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": nested(30)}, protocol=2),
        pickle.dumps({b"data": nested(30), b"labels": [0, 1, 2, 3]}, protocol=pickle.HIGHEST_PROTOCOL),
        tuple_key_bomb(40),
    ],
    ids=["nested-labels", "nested-data", "tuple-key-hash"],
)
def test_cifar_shared_reference_bombs_fail_fast(tmp_path, content):
    """A 7 KB pickle of 30 levels of shared lists used to hang the loader (120 s, 5.2 GB)."""
    write_cifar(tmp_path)
    path = tmp_path / "data_batch_2"
    path.write_bytes(content)
    assert len(content) < 16384
    outcome = run_capped(
        f"tropic.apps.datasets.load('cifar10', {str(tmp_path)!r})",
        imports="import tropic.apps.datasets",
        timeout=30,
    )
    assert outcome["type"] == "ValueError", outcome
    assert str(path) in outcome["message"] and "second reference" in outcome["message"]


def test_cifar_self_reference_and_wrong_types_are_refused(tmp_path):
    write_cifar(tmp_path)
    path = tmp_path / "test_batch"
    loop: list = []
    loop.append(loop)
    data = np.zeros((2, 3072), np.uint8)

    def batch(labels, data=data, protocol=pickle.HIGHEST_PROTOCOL):
        return pickle.dumps({b"data": data, b"labels": labels}, protocol=protocol)

    for content, message in [
        (batch(loop), "second reference"),
        (batch([0, 1], data=data.tolist()), "'data' must be uint8 .* got a list"),
        (batch([0, [1]]), "'labels' must be 2 ints, got a list at index 1"),
        (batch([0, 1.0]), "got a float at index 1"),
        (batch([True, 1]), "got a bool at index 0"),
        (batch((0, 1)), "'labels' must be a list of 2 ints, got a tuple"),
        (batch(np.array([[0, 1]])), r"'labels' must be 2 ints, got int64 \(1, 2\)"),
        (batch(np.array([0, -1])), r"label -1 outside 0\.\.9 \(index 1\)"),
        (batch([0, 1], data=bytes(3072 * 2 + 1)), "not a multiple of 3072"),
        (batch([0, 1], protocol=0)[:-1], "not a CIFAR-10 python pickle"),  # no STOP
        (pickle.dumps({(1, 2): 3}), r"missing the 'data' or 'labels' entry \(has none\)"),
    ]:
        path.write_bytes(content)
        with pytest.raises(ValueError, match=message) as info:
            datasets.load("cifar10", tmp_path)
        assert str(path) in str(info.value)


def test_cifar_data_as_bytes_and_labels_as_an_array(tmp_path):
    batches = write_cifar(tmp_path)
    raw = batches["test_batch"][b"data"]
    (tmp_path / "test_batch").write_bytes(
        pickle.dumps({b"data": raw.tobytes(), b"labels": np.array([3, 1, 4, 1], dtype=np.uint8)})
    )
    _, _, x_test, y_test = datasets.load("cifar10", tmp_path)
    np.testing.assert_array_equal(x_test.reshape(4, -1), raw / np.float32(255))
    assert y_test.dtype == np.int64 and y_test.tolist() == [3, 1, 4, 1]


class _Run:
    """Pickles as ``callable(*args)``: the classic code-execution payload."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def malicious_pickles(marker) -> list[bytes]:
    """Pickles that touch ``marker``: the first five and OBJ do under a plain ``pickle.loads``; the
    others try the remaining object-building opcodes (NEWOBJ, a refused class inside an allowed
    function, extensions, persistent ids)."""
    command = f"touch {marker}"
    payload = json.dumps(command).encode()  # a quoted string, valid in protocol 0 too
    python = json.dumps(f"__import__('os').system({command!r})").encode()
    return [
        pickle.dumps({b"data": _Run(os.system, command), b"labels": [0]}, protocol=2),
        pickle.dumps({b"data": _Run(eval, json.loads(python))}, protocol=4),
        b"cos\nsystem\n(S" + payload + b"\ntR.",  # protocol 0: GLOBAL, MARK, STRING, TUPLE, REDUCE
        b"(S" + payload + b"\nios\nsystem\n.",  # INST
        b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93S" + python + b"\n\x85R.",  # STACK_GLOBAL, TUPLE1, REDUCE
        b"\x80\x02cos\nsystem\n)\x81.",  # NEWOBJ
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncos\nsystem\nS" + payload + b"\n\x86R.",
        b"\x80\x02(cos\nsystem\nS" + payload + b"\no.",  # OBJ
        b"\x80\x02\x82\x01.",  # EXT1 (copyreg's extension registry)
        b"\x80\x02S" + payload + b"\nQ.",  # BINPERSID
    ]  # fmt: skip


def test_code_execution_through_pickles_stays_refused(tmp_path):
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    for content in malicious_pickles(marker):
        path.write_bytes(content)
        with pytest.raises(ValueError, match="not a CIFAR-10 python pickle") as info:
            datasets.load("cifar10", tmp_path)
        assert str(path) in str(info.value)
        assert not marker.exists(), content


def test_structure_check_accepts_what_pickle_writes():
    """Every protocol's pickle of a CIFAR-like batch passes the opcode walk (shared bytes and dtypes
    are fine: only containers may not be shared)."""
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [1, 2, 3],
        b"data": np.zeros((3, 3072), np.uint8),
        b"filenames": [b"same.png"] * 3,
        b"extra": (np.zeros(2, np.uint8), np.ones(2, np.uint8), (1, 2), [], {}),
    }
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        datasets._check_pickle_structure(pickle.dumps(batch, protocol=protocol))


# -- model .npz files --------------------------------------------------------------------------------


def npy_header(shape, dtype) -> bytes:
    """The ``.npy`` header (magic, version 1.0, dict) of an array of ``shape`` and ``dtype``."""
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        stream,
        {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape},
    )
    return stream.getvalue()


def add_zeros_member(path, name: str, mib: int) -> None:
    """Append ``name`` to the zip ``path``: a uint8 ``.npy`` of ``mib`` MiB of zeros, deflated (about
    ``mib`` KiB on disk)."""
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open(name, "w", force_zip64=True) as member:
            member.write(npy_header((mib * MiB,), np.uint8))
            chunk = bytes(MiB)
            for _ in range(mib):
                member.write(chunk)


def small_net():
    import tropic.nn as nn

    return nn.Sequential(nn.Linear(4, 3, seed=0), nn.BatchNorm1d(3))


_NET = "import tropic.nn as nn\nnet = nn.Sequential(nn.Linear(4, 3, seed=0), nn.BatchNorm1d(3))"


@linux_only
def test_model_npz_with_a_huge_unexpected_member_fails_before_reading_it(tmp_path):
    """A 1 MiB model file with an unexpected 1 GiB member used to peak at 2.1 GB before the KeyError:
    the member names are compared first (here 256 MiB, in a child capped 160 MiB above its start)."""
    path = tmp_path / "model.npz"
    small_net().save(path)
    add_zeros_member(path, "extra.npy", 256)
    assert path.stat().st_size < 2 * MiB
    outcome = run_capped(f"net.load({str(path)!r})", imports=_NET)
    assert outcome["type"] == "KeyError", outcome
    assert str(path) in outcome["message"] and "unexpected keys ['extra']" in outcome["message"]
    body = f"assert net.load({str(path)!r}, strict=False).unexpected == ['extra']"
    assert run_capped(body, imports=_NET) == {"ok": True}  # skipped unread


@linux_only
def test_model_npz_member_announcing_another_shape_fails_before_reading_it(tmp_path):
    """The expected name with a 256 MiB array where a (3, 4) weight belongs: the header is compared
    with the parameter first."""
    path = tmp_path / "model.npz"
    net = small_net()
    state = {k: v for k, v in net.state_dict().items() if k != "0.weight"}
    np.savez(path, **state)
    add_zeros_member(path, "0.weight.npy", 256)
    outcome = run_capped(f"net.load({str(path)!r})", imports=_NET)
    assert outcome["type"] == "ValueError", outcome
    assert f"{path}: 0.weight: expected shape (3, 4), the file holds (268435456,)" in outcome["message"]


def test_model_npz_members_are_checked_against_their_headers(tmp_path):
    net = small_net()
    good = net.state_dict()
    cases = []
    cases.append(({**good, "0.weight": good["0.weight"].astype(np.float64)}, "expected dtype float32"))
    cases.append(({**good, "0.bias": np.array([None, 1, 2], dtype=object)}, "dtype object is not a numeric"))
    for i, (state, message) in enumerate(cases):
        path = tmp_path / f"case{i}.npz"
        np.savez(path, **state)
        with pytest.raises(ValueError, match=message) as info:
            small_net().load(path)
        assert str(path) in str(info.value)
    # trailing bytes after the array data, in a member whose header is right
    path = tmp_path / "trailing.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for key, value in good.items():
            stream = io.BytesIO()
            np.lib.format.write_array(stream, value)
            archive.writestr(f"{key}.npy", stream.getvalue() + (b"junk" if key == "1.running_var" else b""))
    with pytest.raises(ValueError, match=r"1\.running_var: .* bytes in the archive, but its header"):
        small_net().load(path)
    # not a zip at all, and a member that is not an array
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(ValueError, match=r"text\.npz: not an \.npz file"):
        small_net().load(tmp_path / "text.npz")
    with zipfile.ZipFile(tmp_path / "other.npz", "w") as archive:
        archive.writestr("notes.txt", "x")
    with pytest.raises(ValueError, match=r"member 'notes\.txt' is not an \.npy array"):
        small_net().load(tmp_path / "other.npz")
    # a truncated deflated member: the zip layer's CRC / length check, named
    path = tmp_path / "deflated.npz"
    np.savez_compressed(path, **good)
    net = small_net()
    net.load(path)  # compressed files load too
    for key, value in good.items():
        np.testing.assert_array_equal(net.state_dict()[key], value)
