#!/usr/bin/env bash
# Check of tropic's CuPy backend on a GPU machine, in stages that each fit one device-tool call
# (at most 10 minutes a command, and 15 minutes of device time a session, start-up included):
#
#   bash scripts/gpu_check.sh [STAGE ...]   # from the repository root; output also to $OUT if set
#
#   tests    the CuPy GPU tests with skips turned into failures, and the compile tests (<= 200 s)
#   torch    torch CUDA tensors through the CuPy kernels: tests/test_torch_cuda.py (<= 180 s)
#   bench    the benchmark report (benchmarks/bench_cupy.py): G pairs/s of the float32 max-plus
#            products against the issue's targets, tiled and simple, and torch broadcasting
#            (torch.compile with TROPIC_GPU_CHECK_COMPILE=1); their gradients; a max-plus layer's
#            fwd+bwd on torch CUDA tensors; the 7x7 dilation of a (32, 64, 256, 256) batch against
#            kornia; a max-plus conv2d layer against torch unfold (<= 150 s)
#   profile  Nsight Compute on one 4096^3 tiled product launch: where the time goes (<= 120 s)
#   all      tests, torch and bench (the default; up to about 9 minutes)
#
# This workplace's lent GPU machines (see the device tool's KINDS.md) reach no package index; their
# image has python3 3.12 with cupy-cuda13x, numpy, scipy, pytest, hypothesis and torch, but not
# array-api-compat, which tropic needs, nor ml_dtypes, which CuPy (>= 14) needs for bfloat16 arrays (the
# bfloat16 GPU tests skip without it): carry them as wheels, prepared on the CPU machine with
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       -d .whl array-api-compat==1.16.0
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 -d .whl ml_dtypes   # 0.6.0: needs NumPy >= 2 there
# and `carry: [".whl"]`; this script installs .whl/*.whl into /tmp/site without any index. tropic
# itself runs from the checkout (PYTHONPATH), on the NumPy fallback where its C kernels are not built,
# which the GPU tests compare against bitwise all the same.
# Setup (every stage): CuPy is used if importable, else `pip install cupy-cuda12x` (then cupy-cuda13x:
# a machine with only a CUDA 13 driver/toolkit); pip needs the package index or a local wheel
# (PIP_FIND_LINKS=/path/to/wheels PIP_NO_INDEX=1). CuPy compiles the kernels with NVRTC, whose half
# headers come with the toolkit or NVRTC itself.
set -u
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-}"
LOG=/dev/null
if [ -n "$OUT_DIR" ]; then mkdir -p "$OUT_DIR"; LOG="$OUT_DIR/gpu_check.log"; : > "$LOG"; fi
say() { echo "$@" | tee -a "$LOG"; }
run() { say "\$ $*"; "$@" 2>&1 | tee -a "$LOG"; return "${PIPESTATUS[0]}"; }

STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(all)
for stage in "${STAGES[@]}"; do
    case "$stage" in tests|torch|bench|profile|all) ;; *) say "unknown stage: $stage"; exit 2 ;; esac
done
wants() {  # whether stage $1 was asked for ("all" means every stage but profile)
    for stage in "${STAGES[@]}"; do
        if [ "$stage" = "$1" ] || { [ "$stage" = all ] && [ "$1" != profile ]; }; then return 0; fi
    done
    return 1
}
junit() { [ -n "$OUT_DIR" ] && echo "--junitxml=$OUT_DIR/$1.xml"; }

say "== gpu_check ${STAGES[*]} $(date -u +%FT%TZ) at $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
python() { "${PYTHON:-python3}" "$@"; }  # the image's python3 is the one with torch and CuPy
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ls .whl/*.whl >/dev/null 2>&1; then
    run python -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || say "could not install the carried wheels"
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
run nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || say "nvidia-smi failed"
if ! python -c "import cupy" 2>/dev/null; then
    run python -m pip install --quiet cupy-cuda12x || run python -m pip install --quiet cupy-cuda13x \
        || { say "FAILED: could not install CuPy"; exit 1; }
fi
run python -c "import cupy; print('cupy', cupy.__version__, 'CUDA runtime', cupy.cuda.runtime.runtimeGetVersion(), \
'device', cupy.cuda.runtime.getDeviceProperties(0)['name'].decode())" || { say "FAILED: CuPy has no device"; exit 1; }
# CuPy compiles with NVRTC: from the CUDA toolkit, or the pip wheels of NVRTC (and the runtime's headers)
probe='import cupy; cupy.RawKernel(r"""extern "C" __global__ void k(float* x) { x[0] = 1.0f; }""", "k").compile(); print("NVRTC ok")'
if ! run python -c "$probe"; then
    run python -m pip install --quiet "nvidia-cuda-nvrtc-cu12" "nvidia-cuda-runtime-cu12" || true
    run python -c "$probe" || { say "FAILED: CuPy cannot compile kernels (no NVRTC)"; exit 1; }
fi
# Headers of the half types for NVRTC: the toolkit's, else the CUDA 12 runtime wheel's
python - <<'PY' || run python -m pip install --quiet "nvidia-cuda-runtime-cu12"
import importlib, sys, types
package = types.ModuleType("glue"); package.__path__ = ["tropic/backends/cupy"]; sys.modules["glue"] = package
include = importlib.import_module("glue.module").toolkit_include()
print("half-type headers:", include)
sys.exit(include is None)
PY
python -c "import numpy, array_api_compat" 2>/dev/null || run python -m pip install --quiet numpy array-api-compat
python -c "import pytest, hypothesis, scipy" 2>/dev/null || run python -m pip install --quiet pytest hypothesis scipy

status=0

if wants tests; then
    TROPIC_REQUIRE_GPU=1 run timeout 200 python -m pytest -q --maxfail=25 -p no:cacheprovider $(junit gpu_tests) \
        tests/test_cupy_backend.py tests/test_cupy_compile.py && say "GPU tests: PASSED" \
        || { say "GPU tests: FAILED"; status=1; }
fi

if wants torch; then  # torch CUDA tensors through the CuPy backend (DLPack, current stream, autograd, compile)
    TROPIC_REQUIRE_GPU=1 run timeout 180 python -m pytest -q --maxfail=25 -p no:cacheprovider \
        $(junit gpu_torch_tests) tests/test_torch_cuda.py && say "torch CUDA tests: PASSED" \
        || { say "torch CUDA tests: FAILED"; status=1; }
fi

if wants bench; then
    if [ "${TROPIC_GPU_CHECK_COMPILE:-0}" = "1" ]; then export TROPIC_ASV_TORCH_COMPILE=1; fi
    run timeout 150 python - <<'PY' || say "benchmark report: FAILED or timed out"
import json, os, sys
sys.path.insert(0, ".")
from benchmarks import bench_cupy

results = bench_cupy.report()
out = os.environ.get("OUT")
if out:
    with open(os.path.join(out, "gpu_bench.json"), "w") as f:
        json.dump(results, f, indent=1, default=str)
PY
fi

if wants profile; then  # one warmed-up launch of the tiled product, profiled (ncu replays it per section)
    cat > /tmp/tropic_profile.py <<'PY'
import sys
sys.path.insert(0, ".")
from benchmarks import bench_cupy

run = bench_cupy.product("tropic_cupy", 4096, 4096, 4096)
run()
bench_cupy.require_cupy().cuda.Device().synchronize()
run()
bench_cupy.require_cupy().cuda.Device().synchronize()
PY
    NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || true)
    if [ -z "$NCU" ]; then
        say "profile: no ncu on this machine"
    else
        run timeout 120 "$NCU" --target-processes all --kernel-name regex:tropic_matmul_tiled --launch-skip 1 \
            --launch-count 1 --section SpeedOfLight --section ComputeWorkloadAnalysis \
            --section InstructionStats --section WarpStateStats --section Occupancy --section LaunchStats \
            python /tmp/tropic_profile.py || say "profile: ncu FAILED or timed out"
    fi
fi
exit $status
