"""Inputs that once crashed, raced, hung or blew up memory in the operators, their gradients and the
torch ops (issue 12): each must now give a clear error or the exact result.

Probes that used to kill the interpreter run in a subprocess, so that a regression fails one test
instead of the whole run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tropic

from .helpers import SPECIAL, assert_identical, hsettings


def run_python(code: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (this checkout on the path), capturing its output."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def assert_clean(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, (
        f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )


# -- 1. gradient functions validate their winners ----------------------------------------------------

# (call, shapes) of each vjp, with a winner array `k` of the output's shape to fill in
VJP_CASES = {
    "matmul": ("tropic.matmul_vjp(g, k, (4, 3), (3, 5))", (4, 5), 3),
    "batched matmul": ("tropic.matmul_vjp(g, k, (2, 4, 3), (3, 5))", (2, 4, 5), 3),
    "dilation": ("tropic.dilation_vjp(g, k, (2, 4, 5), (3, 2))", (2, 4, 5), 6),
    "erosion": ("tropic.erosion_vjp(g, k, (4, 5), (2, 3), mode='reflect')", (4, 5), 6),
    "conv2d": ("tropic.conv2d_vjp(g, k, (2, 4, 5, 5), (6, 2, 3, 3), groups=2)", (2, 6, 3, 3), 18),
    "maxout": ("tropic.maxout_vjp(g, k, (4, 6), 3)", (4, 2), 3),
}


@pytest.mark.parametrize("case", list(VJP_CASES))
def test_out_of_range_winners_raise_in_a_subprocess(case):
    """Winners far out of range (once a segfault) and just out of range (once a silent write past the
    gradient), on the compiled kernels, the NumPy path and the reference: ValueError naming indices."""
    call, shape, n = VJP_CASES[case]
    code = f"""
        import numpy as np, tropic, array_api_strict as xs
        from tropic.backends.numpy import compiled
        shape, n = {shape!r}, {n}
        outcomes = []
        for path in ("compiled", "numpy", "reference"):
            compiled.enabled = path == "compiled"
            for bad, dtype in ((10**8, np.int32), (n, np.int8), (-2, np.int8), (127, np.int8)):
                g, k = np.ones(shape, np.float32), np.zeros(shape, dtype)
                k.flat[-1] = bad
                if path == "reference":
                    g, k = xs.asarray(g), xs.asarray(k)
                try:
                    {call}
                except ValueError as exc:
                    outcomes.append("indices" in str(exc) and f"[0, {{n}})" in str(exc))
                else:
                    outcomes.append(False)
        print(outcomes)
        assert all(outcomes), outcomes
    """
    assert_clean(run_python(code))


@pytest.mark.parametrize("case", list(VJP_CASES))
def test_winners_in_range_and_minus_one_are_accepted(case, cpu_path):
    """The check does not refuse the legal extremes: -1 (no winner) and n - 1."""
    call, shape, n = VJP_CASES[case]
    g = np.ones(shape)
    k = np.full(shape, n - 1, np.int64)
    k.flat[0] = -1
    eval(call, {"tropic": tropic, "g": g, "k": k})


@pytest.mark.parametrize("dtype", [np.float64, np.bool_])
def test_winners_must_be_integers(dtype):
    with pytest.raises(TypeError, match="indices must have an integer dtype"):
        tropic.matmul_vjp(np.ones((2, 2)), np.zeros((2, 2), dtype), (2, 2), (2, 2))


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        ("tropic.matmul_vjp(g, k, 5, (3, 4))", TypeError, "a_shape must be a shape"),
        ("tropic.matmul_vjp(g, k, (4, 2), (3, 4))", ValueError, "contracted dimension"),
        ("tropic.dilation_vjp(g, k, (4,), (3, 3))", ValueError, "image_shape must have at least 2"),
        ("tropic.dilation_vjp(g, k, (4, 4), (3,))", ValueError, "se_shape must have 2"),
        ("tropic.conv2d_vjp(g, k, (4, 4), (1, 1, 1, 1))", ValueError, "x_shape must have 4"),
        ("tropic.maxout_vjp(g, k, 'x', 2)", TypeError, "x_shape must be a shape"),
    ],
)
def test_vjp_shape_arguments_are_checked(call, error, message):
    g, k = np.ones((4, 4)), np.zeros((4, 4), np.int8)
    with pytest.raises(error, match=message):
        eval(call, {"tropic": tropic, "g": g, "k": k})


# -- 2. thread-count changes while other threads compute ---------------------------------------------


def test_thread_count_changes_during_concurrent_calls():
    """Six threads run products (compiled, and the NumPy path with M from 2 to 8) while another
    changes the thread count: no error, no crash, every result bitwise the single-threaded one."""
    code = """
        import threading, numpy as np, tropic
        from tropic.backends.numpy import compiled, kernels
        from tropic.core.semiring import MAX_PLUS
        rng = np.random.default_rng(0)
        a = rng.integers(-8, 9, (512, 192)).astype(np.float32)
        b = rng.integers(-8, 9, (192, 512)).astype(np.float32)
        tropic.set_num_threads(1)
        expected = tropic.maxplus_matmul(a, b, return_indices=True)
        small = [(rng.standard_normal((m, 1024)), rng.standard_normal((64, 1024))) for m in range(2, 9)]
        expected_rows = [kernels.matmul_rows(MAX_PLUS, x, y, np.int16) for x, y in small]
        stop, errors, checked = threading.Event(), [], [0]

        def product():
            while not stop.is_set():
                try:
                    c, k = tropic.maxplus_matmul(a, b, return_indices=True)
                    assert np.array_equal(c, expected[0]) and np.array_equal(k, expected[1])
                    for (x, y), (c0, k0) in zip(small, expected_rows):
                        c, k = kernels.matmul_rows(MAX_PLUS, x, y, np.int16)
                        assert np.array_equal(c, c0) and np.array_equal(k, k0)
                    checked[0] += 1
                except BaseException as exc:
                    errors.append(repr(exc))

        def toggle():
            n = 0
            while not stop.is_set():
                tropic.set_num_threads(n % 8 + 1)
                n += 1

        kernels._PARALLEL_PAIRS = 1  # the NumPy path's stripes run in parallel at these sizes too
        threads = [threading.Thread(target=product) for _ in range(6)] + [threading.Thread(target=toggle)]
        for t in threads:
            t.start()
        stop.wait(3.0)
        stop.set()
        for t in threads:
            t.join()
        print(checked[0], errors[:3])
        assert not errors and checked[0] >= 6
    """
    assert_clean(run_python(code, timeout=300))


def test_parallel_tasks_waits_for_every_task_before_raising():
    """A task that fails does not let the call return while other tasks still write."""
    import threading
    import time

    from tropic.backends.numpy import kernels

    done = []
    lock = threading.Lock()

    def run(t):
        if t == 0:
            raise RuntimeError("task 0 failed")
        time.sleep(0.01)
        with lock:
            done.append(t)

    with pytest.raises(RuntimeError, match="task 0 failed"):
        kernels.parallel_tasks(8, run, 4)
    assert sorted(done) == list(range(1, 8))


def test_thread_count_limits():
    tropic.set_num_threads(np.int64(2))
    try:
        assert tropic.get_num_threads() == 2
        with pytest.raises(ValueError, match="at most 1024"):
            tropic.set_num_threads(10**6)
        for bad in (0, -1, 2.0, True, "3"):
            with pytest.raises(ValueError, match="n must be a positive int"):
                tropic.set_num_threads(bad)
    finally:
        tropic.set_num_threads(None)


def test_bad_thread_environment_variable_warns(monkeypatch):
    from tropic.core import config

    monkeypatch.setattr(config, "_warned", set())
    monkeypatch.setenv("TROPIC_NUM_THREADS", "abc")
    with pytest.warns(RuntimeWarning, match="TROPIC_NUM_THREADS='abc'"):
        assert tropic.get_num_threads() >= 1
    monkeypatch.setenv("TROPIC_NUM_THREADS", "")
    monkeypatch.setenv("OMP_NUM_THREADS", "3,2")  # OpenMP's per-level list: the outer count
    assert tropic.get_num_threads() == 3


# -- 3. the public torch ops check what their kernels rely on ----------------------------------------


def test_torch_ops_check_their_arguments_in_a_subprocess():
    pytest.importorskip("torch")
    code = """
        import numpy as np, torch, tropic
        ops = torch.ops.tropic   # defined by `import tropic` once torch is imported
        f, i8 = torch.zeros, torch.int8
        A, N = [-2, -1], ["neutral"] * 2  # the morphology's axes and modes
        probes = [
            (lambda: ops.matmul(f(1, 10**7), f(1, 16), None, True), ValueError, "contracted dimension"),
            (lambda: ops.matmul(f(64, 100000), f(1, 16), None, True), ValueError, "contracted dimension"),
            (lambda: ops.matmul(f(()), f(4, 4), None, True), ValueError, "at least 1 dimension"),
            (lambda: ops.matmul(f(2, 4, 4), f(3, 4, 4), None, True), ValueError, "must broadcast"),
            (lambda: ops.matmul(f(4, 4), f(4, 4), f(5), True), ValueError, "bias must broadcast"),
            (lambda: ops.matmul(f(4, 4, dtype=torch.int32), f(4, 4, dtype=torch.int32), None, True),
             TypeError, "floating"),
            (lambda: ops.matmul_backward(f(4, 4), f(4, 4, dtype=i8), [4, 3], [3, 5], None,
                                         [True, True, False], True), ValueError, "output shape"),
            (lambda: ops.matmul_backward(f(4, 4), torch.full((4, 4), 7, dtype=i8), [4, 3], [3, 4], None,
                                         [True, True, False], True), ValueError, "indices must hold winners"),
            (lambda: ops.matmul_backward(f(4, 4), f(4, 4), [4, 3], [3, 4], None, [True, True, False], True),
             TypeError, "integer dtype"),
            (lambda: ops.morphology(f(4, 4), None, [True] * 9, [3, 3, 1, 1], A, True, ["bogus"] * 2, 0.0),
             ValueError, "mode must be one of"),
            (lambda: ops.morphology(f(4, 4), f(2, 2), [True] * 9, [3, 3, 1, 1], A, True, N, 0.0),
             ValueError, "structure must have shape"),
            (lambda: ops.morphology(f(4, 4), None, [True] * 4, [3, 3, 1, 1], A, True, N, 0.0),
             ValueError, "support must have"),
            (lambda: ops.morphology(f(4, 4), None, [True] * 9, [3, 3, 5, 1], A, True, N, 0.0),
             ValueError, "centre"),
            (lambda: ops.morphology_backward(f(4, 4), torch.full((4, 4), 50, dtype=i8), [4, 4], None,
                                             [True, False], [True] * 9, [3, 3, 1, 1], A, True, N, 0.0),
             ValueError, "winners"),
            (lambda: ops.morphology_backward(f(4, 4), f(4, 4, dtype=i8), [4, 5], None, [True, False],
                                             [True] * 9, [3, 3, 1, 1], A, True, N, 0.0),
             ValueError, "output shape"),
            (lambda: ops.conv2d(f(1, 1, 4), f(1, 1, 2, 2), [1, 1], [0, 0], 1, True), ValueError,
             "4 dimensions"),
            (lambda: ops.conv2d_backward(f(1, 1, 2, 2), torch.full((1, 1, 2, 2), 9, dtype=i8),
                                         [1, 1, 3, 3], [1, 1, 2, 2], [True, True], [1, 1], [0, 0], 1, True),
             ValueError, "winners"),
            (lambda: ops.maxout_backward(f(3), torch.full((3,), 5, dtype=i8), [6], [True], 2, 0),
             ValueError, "winners"),
            (lambda: ops.maxout_backward(f(3), f(4, dtype=i8), [6], [True], 2, 0), ValueError,
             "output shape"),
            (lambda: ops.maxout(f(3, 5), 2, 1), ValueError, "multiple of pieces"),
            (lambda: ops.extremum(f(3), f(4), True), ValueError, "must broadcast"),
        ]
        for i, (probe, error, message) in enumerate(probes):
            try:
                probe()
            except error as exc:
                assert message in str(exc), (i, str(exc))
            else:
                raise AssertionError(f"probe {i} raised nothing")
        print("ok")
    """
    assert_clean(run_python(code))


# -- 4. a NumPy call while another thread imports torch ----------------------------------------------


def test_numpy_calls_while_another_thread_imports_torch():
    """Calls from two threads while the main thread imports torch: tropic looks for torch in
    ``sys.modules``, where a half-imported torch sits for the whole import.

    The workers pause 0.1 ms between rounds. Threads that never block turn the import (thousands
    of file reads, each giving the GIL away) into a convoy: each read waits up to the interpreter's
    5 ms switch interval to get the GIL back. Measured on a 2-core VM: two plain-Python loops made
    ``import torch`` take 104 s instead of 1.3 s; tropic's loops without the pause 39 s, with it
    about 2.6 s, thousands of calls still landing while torch is half imported (counted below)."""
    pytest.importorskip("torch")
    code = """
        import sys, threading, time, numpy as np, tropic
        assert "torch" not in sys.modules
        a, errors, stop = np.ones((4, 4)), [], threading.Event()
        importing, during_import = [True], [0]

        def work():
            while not stop.is_set():
                try:
                    tropic.maxplus_matmul(a, a); tropic.dilation(a, size=3); tropic.maxout(a, 2)
                    if importing[0] and "torch" in sys.modules:
                        during_import[0] += 1
                except Exception as exc:
                    errors.append(repr(exc))
                time.sleep(1e-4)

        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads:
            t.start()
        import torch
        importing[0] = False
        stop.set()
        for t in threads:
            t.join()
        print(during_import[0], errors[:2])
        assert not errors
        assert during_import[0] > 0, "no call ran while torch was half imported"
    """
    assert_clean(run_python(code))


# -- 6. a flat element far larger than the image -----------------------------------------------------

MODES = ["neutral", "constant", "nearest", "reflect", "mirror", "wrap"]


@pytest.mark.parametrize("op", ["dilation", "erosion"])
@pytest.mark.parametrize("mode", MODES)
def test_huge_size_costs_the_output_not_the_window(op, mode):
    """``size=`` of 10^7 and 10^9 on a 4x4 image: milliseconds and kilobytes (once 18 s and 3.6 GB,
    and 888 PiB asked for), the index dtype that holds the whole element's candidates."""
    image = np.arange(16.0).reshape(4, 4)
    getattr(tropic, op)(image, size=3, mode=mode)  # the backend's first import is not the call's cost
    tracemalloc.start()
    try:
        out, winners = getattr(tropic, op)(image, size=(1, 10**7), mode=mode, return_indices=True)
        peak = tracemalloc.get_traced_memory()[1]
        out9, winners9 = getattr(tropic, op)(image, size=10**9, mode=mode, return_indices=True)
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    assert winners.dtype == np.int32 and winners9.dtype == np.int64
    assert out.shape == out9.shape == (4, 4)
    vjp = getattr(tropic, f"{op}_vjp")
    grad_image, grad_se = vjp(np.ones((4, 4)), winners, (4, 4), (1, 10**7), mode=mode)
    assert grad_se.shape == (1, 10**7) and abs(grad_se.sum()) == (winners >= 0).sum()
    assert grad_image.sum() <= abs(grad_se.sum())  # the rest went to the border (constant mode)


@st.composite
def long_elements(draw):
    """An image and a flat element longer than 4n + 4 on at least one axis (the cut-down windows)."""
    H, W = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kh = draw(st.integers(1, 4 * H + 12))
    kw = draw(st.integers(4 * W + 5, 4 * W + 14)) if kh <= 4 * H + 4 else draw(st.integers(1, 12))
    batch = draw(st.integers(1, 2))
    values = draw(st.lists(SPECIAL, min_size=batch * H * W, max_size=batch * H * W))
    return np.array(values).reshape(batch, H, W), (kh, kw)


@hsettings(60)
@given(
    case=long_elements(),
    mode=st.sampled_from(["neutral", "constant", "nearest", "reflect", "mirror", "wrap"]),
)
@pytest.mark.parametrize("op", ["dilation", "erosion"])
def test_long_flat_elements_equal_the_whole_window(cpu_path, op, case, mode):
    """``size=(kh, kw)`` (cut down) and ``footprint=ones((kh, kw))`` (every tap): values, winners
    and both gradients bitwise equal, every border mode, ties, infinities and NaN."""
    image, shape = case
    fn, vjp = getattr(tropic, op), getattr(tropic, f"{op}_vjp")
    cut, cut_winners = fn(image, size=shape, mode=mode, cval=0.5, return_indices=True)
    whole, winners = fn(image, footprint=np.ones(shape, bool), mode=mode, cval=0.5, return_indices=True)
    assert_identical(cut, whole)
    assert_identical(cut_winners, winners)
    g = np.arange(image.size, dtype=np.float64).reshape(image.shape) - 3.0
    from tropic.backends.numpy import kernels
    from tropic.core.morphology import axis_window

    reflected = op == "dilation"
    rows, cols = (axis_window(n, k, reflected, mode) for n, k in zip(image.shape[-2:], shape, strict=True))
    grad_image, grad_se = kernels.morphology_vjp(np, g, winners, image.shape, rows, cols, (True, True))
    cut_grads = vjp(g, winners, image.shape, shape, mode=mode)
    assert_identical(cut_grads[0], grad_image)
    assert_identical(cut_grads[1], grad_se if reflected else 0.0 - grad_se)


def test_long_flat_elements_on_torch_and_the_reference():
    """The cut-down window through the torch ops (and their gradient) and the array-API reference."""
    torch = pytest.importorskip("torch")
    xs = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(3)
    image = rng.integers(-2, 3, (2, 3, 4)).astype(np.float64)
    for mode in ("neutral", "nearest", "wrap"):
        expected, winners = tropic.dilation(
            image, footprint=np.ones((2, 40), bool), mode=mode, return_indices=True
        )
        x = torch.from_numpy(image).requires_grad_()
        out, k = tropic.dilation(x, size=(2, 40), mode=mode, return_indices=True)
        assert_identical(out.detach().numpy(), expected)
        assert_identical(k.numpy(), winners)
        out.sum().backward()
        grad, _ = tropic.dilation_vjp(np.ones_like(image), winners, image.shape, (2, 40), mode=mode)
        assert_identical(x.grad.numpy(), grad)
        out, k = tropic.dilation(xs.asarray(image), size=(2, 40), mode=mode, return_indices=True)
        assert_identical(np.from_dlpack(out), expected)
        assert_identical(np.from_dlpack(k), winners)


def test_empty_axis_with_periodic_modes_is_silent():
    """A zero-length image axis under "reflect" / "wrap" (once a divide-by-zero RuntimeWarning)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for mode in ("reflect", "wrap", "mirror", "nearest"):
            out = tropic.dilation(np.ones((0, 4)), footprint=np.ones((3, 3), bool), mode=mode)
            assert out.shape == (0, 4)
            out = tropic.erosion(np.ones((3, 0)), size=10**6, mode=mode)
            assert out.shape == (3, 0)


# -- 10. clear errors for arguments --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["opening", "closing", "morphological_gradient", "white_tophat", "black_tophat"]
)
def test_compositions_refuse_return_indices(name):
    with pytest.raises(TypeError, match=f"{name} does not take return_indices"):
        getattr(tropic, name)(np.ones((3, 3)), size=2, return_indices=True)


def test_argument_errors_name_the_argument():
    image = np.ones((4, 4))
    with pytest.raises(ValueError, match="mode must be one of"):
        tropic.dilation(image, size=3, mode=["reflect"])
    with pytest.raises(TypeError, match="cval must be a real number"):
        tropic.dilation(image, size=3, mode="constant", cval="x")
    with pytest.raises(TypeError, match="masked array"):
        tropic.maxplus_matmul(np.ma.masked_array(image, mask=image > 0), image)


def test_numpy_integers_are_accepted_for_integer_arguments():
    image, x, w = np.ones((4, 4)), np.ones((1, 1, 5, 5)), np.zeros((1, 1, 2, 2))
    assert_identical(tropic.dilation(image, size=np.int64(3)), tropic.dilation(image, size=3))
    expected = tropic.maxplus_conv2d(x, w, stride=2, padding=1)
    assert_identical(tropic.maxplus_conv2d(x, w, stride=np.int64(2), padding=(np.int32(1), 1)), expected)


def test_import_tropic_defines_the_torch_ops_when_torch_is_imported():
    pytest.importorskip("torch")
    result = run_python(
        "import torch, tropic; print(torch.ops.tropic.matmul, torch.ops.tropic.conv2d_backward)"
    )
    assert_clean(result)
    result = run_python("import tropic.torch, torch; print(torch.ops.tropic.morphology)")
    assert_clean(result)
