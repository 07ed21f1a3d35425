"""nibble behind PyTorch (examples/torch/README.md): the ops torch.ops.nibble.{quantize, repack, gemm}, built and
loaded on import (torch.utils.cpp_extension; the first import compiles for a few minutes), and Linear4bit."""
from . import ops
from .linear import Linear4bit, can_swap, swap_linears
from .ops import gemm, quantize, repack

__all__ = ["ops", "Linear4bit", "swap_linears", "can_swap", "quantize", "repack", "gemm"]
