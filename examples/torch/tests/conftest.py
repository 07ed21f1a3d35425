import os
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # examples/torch: the nibble_torch package
sys.path.insert(0, HERE)  # reference.py

HAS_CUDA = torch.cuda.is_available()
# A GPU test without a GPU reports SKIPPED with this reason (pytest -rs prints it); with NIBBLE_TORCH_REQUIRE_CUDA=1
# (gpu_test.sh) a missing GPU fails the run instead.
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device: nibble::gemm needs an sm_80+ GPU")


def pytest_sessionstart(session):
    if os.environ.get("NIBBLE_TORCH_REQUIRE_CUDA") == "1" and not HAS_CUDA:
        raise pytest.UsageError("NIBBLE_TORCH_REQUIRE_CUDA=1 but torch.cuda.is_available() is False")


@pytest.fixture
def gen():
    seed = int(os.environ.get("NIBBLE_SEED", "20261203"))
    print(f"seed {seed}")
    return torch.Generator().manual_seed(seed)
