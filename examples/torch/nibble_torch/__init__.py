"""nibble behind PyTorch (examples/torch/README.md): the ops torch.ops.nibble.{quantize, repack, gemm} and the
checkpoint importers torch.ops.nibble.{import_gptq, import_awq, import_compressed_tensors, import_bnb, import_gguf,
import_hqq, permute_columns}, built and loaded on import (torch.utils.cpp_extension; the first import compiles for a
few minutes); Linear4bit (from_linear, from_plain and from_gptq / from_awq / from_compressed_tensors / from_bnb /
from_gguf / from_hqq); and importers.py's import_* functions (plain layout + format + group + act-order perm, bad
data raised as CheckpointError)."""
from . import importers, ops
from .importers import (
    CheckpointError,
    ImportedWeight,
    import_awq,
    import_bnb,
    import_compressed_tensors,
    import_gguf,
    import_gptq,
    import_hqq,
)
from .linear import Linear4bit, can_swap, swap_linears
from .ops import gemm, permute_columns, quantize, repack

__all__ = [
    "CheckpointError",
    "ImportedWeight",
    "Linear4bit",
    "can_swap",
    "gemm",
    "import_awq",
    "import_bnb",
    "import_compressed_tensors",
    "import_gguf",
    "import_gptq",
    "import_hqq",
    "importers",
    "ops",
    "permute_columns",
    "quantize",
    "repack",
    "swap_linears",
]
