"""The compiled kernels' task pool (csrc/thread_pool.h): products and stride-1 convolutions split
over the calling thread and C helper threads give the one-thread bits, from several Python threads
at once, after a fork, and a failing task's status reaches the caller."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

import tropic
from tropic.backends.numpy import compiled, kernels

from .helpers import assert_identical

pytestmark = pytest.mark.skipif(
    compiled.raw_function("tropic_matmul_pooled_f32") is None, reason="compiled kernels not built"
)


def _calls(rng):
    """Products and convolutions large enough to be split (above the one-thread thresholds), with
    ties (integer-valued data) so that the winners depend on the candidates' order."""
    a = rng.integers(-3, 4, (64, 512)).astype(np.float32)
    b = rng.integers(-3, 4, (512, 96)).astype(np.float32)
    x = rng.integers(-3, 4, (16, 4, 30, 30)).astype(np.float64)
    w = rng.integers(-3, 4, (6, 4, 3, 3)).astype(np.float64)
    return [
        lambda: tropic.maxplus_matmul(a, b, return_indices=True),
        lambda: tropic.minplus_matmul(b.T, a.T, return_indices=True),
        lambda: tropic.maxplus_matmul(a.astype(np.float64), b.astype(np.float64), return_indices=True),
        lambda: tropic.maxplus_conv2d(x, w, padding=1, return_indices=True),
        lambda: tropic.minplus_conv2d(x.astype(np.float32), w.astype(np.float32), return_indices=True),
    ]


def _one_thread(calls):
    tropic.set_num_threads(1)
    try:
        return [call() for call in calls]
    finally:
        tropic.set_num_threads(None)


def test_split_calls_from_several_threads_at_once_give_the_one_thread_bits(monkeypatch):
    """Four Python threads call split kernels at once: one owns the pool, the others run their
    tasks inline (the kernels run without the GIL); every result is the one-thread result."""
    monkeypatch.setattr(kernels, "_PARALLEL_CANDIDATES", 0)
    calls = _calls(np.random.default_rng(0))
    expected = _one_thread(calls)
    errors: list[str] = []

    def work() -> None:
        try:
            for _ in range(15):
                for call, want in zip(calls, expected, strict=True):
                    for got, ref in zip(call(), want, strict=True):
                        assert_identical(got, ref)
        except AssertionError as exc:  # pragma: no cover - reported below
            errors.append(repr(exc)[:500])

    tropic.set_num_threads(2)
    try:
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        tropic.set_num_threads(None)
    assert not errors, errors[0]


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "darwin", reason="needs fork (Linux)")
def test_a_forked_child_splits_calls_with_helpers_of_its_own():
    """A child's copy of the pool names helpers that were not copied (the fork handler resets it):
    split calls there neither hang nor differ from the parent's."""
    calls = _calls(np.random.default_rng(1))
    tropic.set_num_threads(2)
    try:
        parent = [call() for call in calls]  # the parent's pool has helpers now
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe and exits
            ok = 0
            try:
                ok = all(
                    np.array_equal(g, p) and g.dtype == p.dtype
                    for call, results in zip(calls, parent, strict=True)
                    for g, p in zip(call(), results, strict=True)
                )
            finally:
                os.write(write, b"1" if ok else b"0")
                os._exit(0)
        os.close(write)
        answer = os.read(read, 1)
        os.close(read)
        _, status = os.waitpid(pid, 0)
    finally:
        tropic.set_num_threads(None)
    assert status == 0
    assert answer == b"1", "the child's split results differ from the parent's"


def test_a_failing_task_reports_its_status_through_the_pool():
    """Every task of this convolution asks for 5 output channels at once (the kernel takes 1 to 4)
    and returns BAD_ARGUMENT; the pooled call returns it, on one thread and split. A winner width
    the tasks cannot narrow into is refused before any task runs."""
    pooled = compiled.raw_function("tropic_conv_pooled_f32")
    x = np.zeros((2, 1, 6, 6), np.float32)
    w = np.zeros((5, 9), np.float32)
    tap_row = np.repeat(np.arange(3), 3).astype(np.int64)
    tap_col = np.tile(np.arange(3), 3).astype(np.int64)
    tap_index = np.arange(9, dtype=np.int32)
    y = np.empty((2, 5, 4, 4), np.float32)
    tasks = np.array([(0, 5, 0, 1), (0, 5, 1, 2)], np.int64)
    for threads in (1, 2):
        status = pooled(
            x.ctypes.data, 1, 1, 6, 6, 4, 4, 5, 5, tap_row.ctypes.data, tap_col.ctypes.data, w.ctypes.data,
            tap_index.ctypes.data, 9, 1, 0, y.ctypes.data, None, 0, tasks.ctypes.data, len(tasks), threads,
        )  # fmt: skip
        assert status == 1
    tasks[:, 1] = 4  # a valid split: status 0
    status = pooled(
        x.ctypes.data, 1, 1, 6, 6, 4, 4, 5, 5, tap_row.ctypes.data, tap_col.ctypes.data, w.ctypes.data,
        tap_index.ctypes.data, 9, 1, 0, y.ctypes.data, None, 0, tasks.ctypes.data, len(tasks), 2,
    )  # fmt: skip
    assert status == 0
    # winners in a width that is no index type (3 bytes): refused
    winner = np.empty(y.shape, np.int32)
    status = pooled(
        x.ctypes.data, 1, 1, 6, 6, 4, 4, 5, 5, tap_row.ctypes.data, tap_col.ctypes.data, w.ctypes.data,
        tap_index.ctypes.data, 9, 1, 0, y.ctypes.data, winner.ctypes.data, 3, tasks.ctypes.data, len(tasks),
        2,
    )  # fmt: skip
    assert status == 1


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("size", [3, 13], ids=["int8 winners", "int16 winners"])
def test_pooled_morphology_matches_the_numpy_path(monkeypatch, threads, size):
    """The tap loops' tasks (pad a block, reduce it, narrow its winners) on the pool: values and
    winners of dilations and erosions are the NumPy path's, with ties, both infinities and NaN (the
    pad reports it and the NaN rule runs), whole images and row bands of one image."""
    monkeypatch.setattr(kernels, "_PARALLEL_CANDIDATES", 0)
    rng = np.random.default_rng(size)
    se = rng.integers(-2, 3, (size, size)).astype(np.float32)
    se[0, -1] = -np.inf
    images = [rng.integers(-3, 4, shape).astype(np.float32) for shape in ((6, 20, 23), (1, 40, 17))]
    images[0][2, 5, 5], images[0][3, 0, 0] = np.inf, -np.inf
    with_nan = images[1].copy()
    with_nan[0, 7, 3] = np.nan
    images.append(with_nan)
    tropic.set_num_threads(threads)
    try:
        for image in images:
            for op in (tropic.dilation, tropic.erosion):
                for mode in ("neutral", "reflect"):
                    got = op(image, se, mode=mode, return_indices=True)
                    with monkeypatch.context() as m:
                        m.setattr(compiled, "enabled", False)
                        want = op(image, se, mode=mode, return_indices=True)
                    for g, w in zip(got, want, strict=True):
                        assert_identical(g, w)
    finally:
        tropic.set_num_threads(None)


@pytest.mark.parametrize("threads", [1, 2])
def test_pooled_flat_rectangles_match_the_numpy_path(monkeypatch, threads):
    """Flat full rectangles (the van Herk kernel per block on the pool): the NumPy path's values and
    winners, whole images and row bands of one image, dilation (whose window runs backwards: the
    kernel reads a flipped copy) and erosion."""
    monkeypatch.setattr(kernels, "_PARALLEL_CANDIDATES", 0)
    rng = np.random.default_rng(7)
    images = [rng.integers(-3, 4, shape).astype(np.float64) for shape in ((5, 19, 22), (1, 45, 16))]
    tropic.set_num_threads(threads)
    try:
        for image in images:
            for op in (tropic.dilation, tropic.erosion):
                for size in ((3, 3), (5, 4)):
                    got = op(image, size=size, return_indices=True)
                    with monkeypatch.context() as m:
                        m.setattr(compiled, "enabled", False)
                        want = op(image, size=size, return_indices=True)
                    for g, w in zip(got, want, strict=True):
                        assert_identical(g, w)
    finally:
        tropic.set_num_threads(None)


def _assert_every_needed_gradient_is_the_numpy_paths(monkeypatch, gradients) -> None:
    """``gradients(first, second)`` (which inputs require grad) against the NumPy path: both, and
    each alone, bit for bit, with None where a gradient was not asked for."""
    for needs in ((True, True), (True, False), (False, True)):
        got = gradients(*needs)
        with monkeypatch.context() as m:
            m.setattr(compiled, "enabled", False)
            want = gradients(*needs)
        for g, ref in zip(got, want, strict=True):
            assert (g is None) == (ref is None)
            if g is not None:
                assert_identical(g, ref)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_morphology_gradients_match_the_numpy_path(monkeypatch, threads, dtype):
    """The morphology backward on the pool: image gradients per run of images, the element's
    gradient as one task over every output in order (fused into the image pass on one thread).
    Both gradients, and each alone (torch asks only for what requires grad), are the NumPy path's
    float64 sums rounded once; a winner out of range is still refused."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(kernels, "_PARALLEL_CANDIDATES", 0)
    rng = np.random.default_rng(3)
    x = rng.integers(-2, 3, (4, 5, 12, 11)).astype(dtype)  # ties: many outputs share a winner
    se = rng.integers(-2, 3, (3, 4)).astype(dtype)
    _, winners = tropic.dilation(x, se, mode="mirror", return_indices=True)
    grad = rng.standard_normal(winners.shape).astype(dtype)

    def gradients(image_grad: bool, se_grad: bool) -> list:
        tx = torch.tensor(x, requires_grad=image_grad)
        tse = torch.tensor(se, requires_grad=se_grad)
        tropic.dilation(tx, tse, mode="mirror").backward(torch.tensor(grad))
        return [None if t.grad is None else t.grad.numpy() for t in (tx, tse)]

    tropic.set_num_threads(threads)
    try:
        _assert_every_needed_gradient_is_the_numpy_paths(monkeypatch, gradients)
        bad = winners.copy()
        bad[3, 4, 11, 10] = 12  # 12 candidates: 0 .. 11
        with pytest.raises(ValueError):
            tropic.dilation_vjp(grad, bad, x.shape, se.shape, mode="mirror")
    finally:
        tropic.set_num_threads(None)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_convolution_gradients_match_the_numpy_path(monkeypatch, threads, dtype):
    """The convolution backward on the pool: input gradients per run of batch entries, the weight's
    as one task over every output in order (fused on one thread); groups, a stride and padding
    (contributions on the padding dropped). Every combination of needed gradients is the NumPy
    path's, bit for bit."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(kernels, "_PARALLEL_CANDIDATES", 0)
    rng = np.random.default_rng(4)
    x = rng.integers(-2, 3, (9, 4, 10, 9)).astype(dtype)
    w = rng.integers(-2, 3, (6, 2, 3, 2)).astype(dtype)
    for stride in ((1, 1), (2, 1)):
        y = tropic.maxplus_conv2d(x, w, stride=stride, padding=1, groups=2)
        grad = rng.standard_normal(y.shape).astype(dtype)

        def gradients(x_grad: bool, w_grad: bool, stride=stride, grad=grad) -> list:
            tx, tw = torch.tensor(x, requires_grad=x_grad), torch.tensor(w, requires_grad=w_grad)
            tropic.maxplus_conv2d(tx, tw, stride=stride, padding=1, groups=2).backward(torch.tensor(grad))
            return [None if t.grad is None else t.grad.numpy() for t in (tx, tw)]

        tropic.set_num_threads(threads)
        try:
            _assert_every_needed_gradient_is_the_numpy_paths(monkeypatch, gradients)
        finally:
            tropic.set_num_threads(None)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_split_product_gradients_match_the_numpy_path(monkeypatch, threads, dtype):
    """The product backward on the pool: row tasks (the left operand's gradient) and column tasks
    (the right operand's and the bias's, every batch of a column in order), written in the
    gradient's dtype, or as float64 sums where broadcast batches are summed afterwards. A layer's
    ``x @ W.T + b`` (W's gradient in W's layout), a batched product with a shared right operand,
    every combination of needed gradients: the NumPy path's bits."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(kernels, "_PARALLEL_PRODUCT_PAIRS", 0)
    rng = np.random.default_rng(5)
    x = rng.integers(-3, 4, (37, 19)).astype(dtype)  # ties: several winners per column
    weight = rng.integers(-3, 4, (23, 19)).astype(dtype)
    bias = rng.integers(-3, 4, 23).astype(dtype)
    batched = rng.integers(-3, 4, (3, 11, 19)).astype(dtype)
    grad_layer = rng.standard_normal((37, 23)).astype(dtype)
    grad_batched = rng.standard_normal((3, 11, 23)).astype(dtype)

    def layer(x_grad: bool, w_grad: bool) -> list:
        tx, tw = torch.tensor(x, requires_grad=x_grad), torch.tensor(weight, requires_grad=w_grad)
        tb = torch.tensor(bias, requires_grad=True)
        tropic.maxplus_matmul(tx, tw.T, bias=tb).backward(torch.tensor(grad_layer))
        return [None if t.grad is None else t.grad.numpy() for t in (tx, tw, tb)]

    def shared_right(x_grad: bool, w_grad: bool) -> list:
        tx, tw = (
            torch.tensor(batched, requires_grad=x_grad),
            torch.tensor(weight.T.copy(), requires_grad=w_grad),
        )
        tropic.minplus_matmul(tx, tw).backward(torch.tensor(grad_batched))
        return [None if t.grad is None else t.grad.numpy() for t in (tx, tw)]

    tropic.set_num_threads(threads)
    try:
        for gradients in (layer, shared_right):
            _assert_every_needed_gradient_is_the_numpy_paths(monkeypatch, gradients)
    finally:
        tropic.set_num_threads(None)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc (Linux)")
def test_every_kernel_module_uses_one_set_of_helpers():
    """Products, convolutions, dilations and their backward passes (three kernel modules) split on
    two threads start one helper thread in all, not one per module: the modules share one pool."""
    code = """
        import os, numpy as np, tropic
        tropic.set_num_threads(2)
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((64, 512)), rng.standard_normal((512, 96))
        x, w = rng.standard_normal((16, 4, 30, 30)), rng.standard_normal((6, 4, 3, 3))
        before = len(os.listdir("/proc/self/task"))
        c, k = tropic.maxplus_matmul(a, b, return_indices=True)
        y, j = tropic.maxplus_conv2d(x, w, padding=1, return_indices=True)
        d, t = tropic.dilation(x, w[0, 0], return_indices=True)
        tropic.matmul_vjp(np.ones_like(c), k, a.shape, b.shape)
        tropic.conv2d_vjp(np.ones_like(y), j, x.shape, w.shape, padding=1)
        tropic.dilation_vjp(np.ones_like(d), t, x.shape, (3, 3))
        print(len(os.listdir("/proc/self/task")) - before)
    """
    import subprocess
    import textwrap

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.split()[-1]) == 1


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_element_gradient_sums_with_special_values_match_the_numpy_path(monkeypatch, threads, dtype):
    """The element's gradient of a small element on two threads is summed in vector lanes (+0.0
    added to the other slots' lanes): with -0.0, infinities of both signs, NaN and values far apart
    in the incoming gradient, every slot is still the NumPy path's float64 sum, bit for bit."""
    monkeypatch.setattr(kernels, "_PARALLEL_CANDIDATES", 0)
    rng = np.random.default_rng(6)
    x = rng.integers(-2, 3, (6, 3, 15, 14)).astype(dtype)
    for shape in ((3, 3), (4, 4), (2, 3)):
        se = rng.integers(-2, 3, shape).astype(dtype)
        _, winners = tropic.dilation(x, se, return_indices=True)
        values = np.array([-0.0, 0.0, 1.5, -2.25, 1e30, -1e-30, 3e-39, np.inf, -np.inf], dtype)
        grad = rng.choice(values, x.shape)
        lonely = grad.copy()  # a slot that gets only -0.0 sums to +0.0 (NumPy's sums start at +0.0)
        lonely[winners == 0] = -0.0
        with_nan = grad.copy()
        with_nan[0, 0, 0, :3] = np.nan
        for g in (np.abs(grad), lonely, grad, with_nan):
            tropic.set_num_threads(threads)
            try:
                got = tropic.dilation_vjp(g, winners, x.shape, shape)
            finally:
                tropic.set_num_threads(None)
            with monkeypatch.context() as m:
                m.setattr(compiled, "enabled", False)
                want = tropic.dilation_vjp(g, winners, x.shape, shape)
            for a, b in zip(got, want, strict=True):
                assert_identical(a, b)
