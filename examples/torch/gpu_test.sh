#!/usr/bin/env bash
# examples/torch/gpu_test.sh — the PyTorch example on a GPU machine, from the repository root:
#
#   OUT=./out bash examples/torch/gpu_test.sh
#
# builds the extension (examples/torch/build, kept between runs: a rebuild compiles only what changed), runs the
# pytest suite with a GPU required (NIBBLE_TORCH_REQUIRE_CUDA=1: no GPU is a failure, not a skip), and writes under
# $OUT: torch_env.txt (versions, device), torch_build.log, torch_pytest.log, torch_pytest.xml (JUnit). Exits non-zero
# if the build or any test failed. Expected time on a 16-core H200 machine: build 2-3 min from scratch, tests ~1 min.
# Environment: PYTHON (default python3), MAX_JOBS (default: the cores), NIBBLE_TORCH_NVCC_THREADS (default 2),
# PYTEST_ARGS (extra pytest arguments, e.g. "-k gemm"), NIBBLE_TORCH_GENCODE (see nibble_torch/_build.py).
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-./out}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export NIBBLE_TORCH_NVCC_THREADS=${NIBBLE_TORCH_NVCC_THREADS:-2}
export NIBBLE_TORCH_VERBOSE=1

{
  date -u
  git rev-parse HEAD 2>/dev/null && git status --short -- include examples/torch | head -20
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
  nvcc --version | tail -2
  "$PYTHON" - <<'PY'
import sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
for name in ("pytest", "transformers", "triton"):
    try:
        m = __import__(name)
        print(name, getattr(m, "__version__", "?"))
    except Exception as e:  # noqa: BLE001
        print(name, "not importable:", e)
PY
} >"$OUT/torch_env.txt" 2>&1
cat "$OUT/torch_env.txt"

status=0
start=$(date +%s)
# A build killed half-way (a run past its time limit) leaves torch.utils.cpp_extension's lock file in the kept build
# folder, and the next load would wait on it for ever; one command runs at a time here, so a lock is always stale.
rm -f "${NIBBLE_TORCH_BUILD_DIR:-examples/torch/build}/lock"
(cd examples/torch && timeout 330 "$PYTHON" -m nibble_torch._build) >"$OUT/torch_build.log" 2>&1 || status=$?
echo "build: exit $status in $(( $(date +%s) - start )) s (log: $OUT/torch_build.log)"
if [ "$status" -ne 0 ]; then
  tail -40 "$OUT/torch_build.log"
  exit "$status"
fi

start=$(date +%s)
# shellcheck disable=SC2086
NIBBLE_TORCH_REQUIRE_CUDA=1 timeout 240 "$PYTHON" -m pytest examples/torch/tests -v -rs --durations=10 -p no:cacheprovider \
  --junitxml="$OUT/torch_pytest.xml" ${PYTEST_ARGS:-} 2>&1 | tee "$OUT/torch_pytest.log" >/dev/null
status=$?
echo "pytest: exit $status in $(( $(date +%s) - start )) s (log: $OUT/torch_pytest.log)"
grep -E "^(SKIPPED|FAILED|ERROR)" "$OUT/torch_pytest.log" | head -40
tail -3 "$OUT/torch_pytest.log"
exit "$status"
