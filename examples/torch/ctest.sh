#!/usr/bin/env bash
# CTest's examples.torch: the PyTorch example's pytest suite, where it can run; otherwise a visible skip (CTest
# reports "Skipped" on the "examples/torch SKIPPED:" line). Runs only with NIBBLE_TORCH_TESTS=1, because the first
# run builds the extension (minutes: ten GEMM instance files) and CI installs no PyTorch. Without a GPU the suite's
# GPU tests skip (pytest -rs lists them); NIBBLE_TORCH_REQUIRE_CUDA=1 makes a missing GPU a failure.
set -u
cd "$(dirname "$0")/../.." || exit 1
python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null 2>&1; then
  echo "examples/torch SKIPPED: no $python"
  exit 0
fi
if ! "$python" -c "import torch, pytest" >/dev/null 2>&1; then
  echo "examples/torch SKIPPED: torch or pytest is not importable by $python (pip install torch pytest; see examples/torch/README.md)"
  exit 0
fi
if [[ ${NIBBLE_TORCH_TESTS:-0} != 1 ]]; then
  echo "examples/torch SKIPPED: PyTorch found; set NIBBLE_TORCH_TESTS=1 to build the extension and run its tests"
  exit 0
fi
exec "$python" -m pytest examples/torch/tests -q -rs -p no:cacheprovider
