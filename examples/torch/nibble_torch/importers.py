"""Checkpoint importers: one linear layer's tensors as a quantization tool saved them -> nibble's plain layout
(the torch.ops.nibble.import_* ops, include/nibble/import/), bit-exactly, ready for repack / gemm or
Linear4bit.from_imported.

    w = import_gptq(qweight, qzeros, scales, g_idx, group_size=128, sym=True)   # GPTQ v1 ("gptq") / "gptq_v2"
    w = import_awq(qweight, qzeros, scales, group_size=128)                       # AutoAWQ GEMM
    w = import_compressed_tensors(weight_packed, weight_scale, weight_shape, ...) # llm-compressor pack-quantized
    w = import_bnb(weight, absmax, quant_map, shape, quant_type="nf4", blocksize=64, nested_...)  # bitsandbytes
    w = import_gguf(data, "Q4_K", n, k)                                           # GGUF Q4_0 / Q4_1 / Q4_K
    w = import_hqq(W_q, scale, zero, shape, group_size=64)                        # HQQ 4-bit, axis 1
    w.codes, w.scales, w.zeros, w.offsets, w.format, w.group, w.perm              # an ImportedWeight

Each runs on the device of the layer's main tensor (CPU: nibble's *_host paths; CUDA: its kernels on the current
stream, the same bytes).

Act order (GPTQ desc_act, compressed-tensors weight_g_idx): the import's column p is the checkpoint's column
perm[p] (perm = stable sort of the columns by g_idx), so  W x = W_import x[perm]:  permute the activations with
ops.permute_columns (Linear4bit does, in forward) before the GEMM. ImportedWeight.perm is None where there is
nothing to permute (no g_idx, or g_idx == k // g).

Bad data. The CPU paths refuse it before writing anything. The GPU paths of GPTQ and compressed-tensors check it
on the device and return an error word (the op's `flags` output) rather than synchronize; these functions read it
(flags.item(): a synchronization of the current stream) and, where it is non-zero, run the CPU path on host copies
to name the bad data, and raise. check=False skips the read (and the sync): the caller must then check
ImportedWeight.flags itself (non-zero: the weight is wrong). Every refusal of the data or metadata by the ops is
raised as CheckpointError (a ValueError) naming what is wrong.

Other synchronizations (nibble's API reads these on the host): a g_idx on the GPU (copied to the host to build
perm: pass it as a CPU tensor), GPTQ checkpoint_format "detect" on the GPU (reads qzeros), bitsandbytes' quant_map
/ nested_quant_map on the GPU (checked against nibble's tables: pass them as CPU tensors).
"""
from dataclasses import dataclass

import torch

from . import ops

__all__ = [
    "CheckpointError",
    "ImportedWeight",
    "import_awq",
    "import_bnb",
    "import_compressed_tensors",
    "import_gguf",
    "import_gptq",
    "import_hqq",
]


class CheckpointError(ValueError):
    """A checkpoint's tensors or metadata that nibble's importers refuse (the message names what is wrong)."""


# ImportErrorFlag (include/nibble/import/common.cuh): bits the GPU importers OR into `flags`.
_FLAG_BITS = {
    1: "a qzeros word disagrees with sym / checkpoint_format",
    2: "a permutation entry is outside [0, K)",
    4: "an int8 weight_zero_point is outside [-8, 7]",
}
# Statuses that are not about the data (the device, CUDA itself): left as the op raised them.
_NOT_DATA = ("a CUDA runtime call or kernel launch failed", "no CUDA device")


@dataclass
class ImportedWeight:
    """An imported [n, k] weight in nibble's plain layout (what ops.quantize returns) and how to read it."""

    codes: torch.Tensor  # uint8 [n, k/2]
    scales: torch.Tensor  # [n, G]
    zeros: torch.Tensor  # uint8 [n, G] (u4), else uint8 [0]
    offsets: torch.Tensor  # [n, G] (affine_u4), else uint8 [0]
    format: str  # "s4", "u4", "nf4", "fp4" or "affine_u4"
    group: int  # nibble's group size (ops.PER_CHANNEL = 0: one group per row)
    n: int
    k: int
    perm: torch.Tensor | None = None  # int32 [k]: W x = W_import x[perm]; None: no permutation
    flags: torch.Tensor | None = None  # int32 [1], the GPU importer's error word (GPTQ, compressed-tensors)

    @property
    def plain(self):
        """(codes, scales, zeros, offsets): the arguments of ops.repack."""
        return self.codes, self.scales, self.zeros, self.offsets

    def repack(self, act_dtype=torch.float16):
        """The GEMM layout for act_dtype activations (ops.repack; scales and offsets rounded to act_dtype)."""
        return ops.repack(*self.plain, self.format, self.group, act_dtype)


def _call(op, *args):
    """op(*args), a refusal of the data or metadata raised as CheckpointError."""
    try:
        return op(*args)
    except RuntimeError as e:
        msg = str(e)
        if msg.startswith("nibble") and not any(s in msg for s in _NOT_DATA):
            raise CheckpointError(msg) from e
        raise


def _shape2(name, shape):
    """[N, K] metadata (a list, tuple or tensor of two integers) -> (n, k) ints, else CheckpointError."""
    try:
        n, k = (int(d) for d in shape)
    except (TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{name} must be [N, K] (out_features, in_features), got {shape!r}") from e
    return n, k


def _cpu(a):
    return a.cpu() if isinstance(a, torch.Tensor) else a


def _check_flags(name, flags, op, args):
    """Raises where the GPU importer's error word is non-zero (flags.item(): synchronizes). The CPU path, run on
    host copies of the arguments, names the bad data."""
    word = int(flags.item())
    if word == 0:
        return
    what = "; ".join(m for b, m in _FLAG_BITS.items() if word & b) or "unknown bits"
    try:
        op(*[_cpu(a) for a in args])
    except RuntimeError as e:
        raise CheckpointError(f"{name}: the GPU importer flagged the data (flags={word:#x}: {what}): {e}") from e
    raise CheckpointError(f"{name}: the GPU importer flagged the data (flags={word:#x}: {what})")


def _perm_or_none(perm, g_idx, k, group):
    """perm, or None where g_idx is absent or k // g (the identity: read from g_idx, which the op has already
    copied to the host when it is on the GPU)."""
    if g_idx is None or perm.numel() == 0:
        return None
    g = k if group == ops.PER_CHANNEL else group
    gi = g_idx.detach().cpu().to(torch.int64)
    if torch.equal(gi, torch.arange(k, dtype=torch.int64) // g):
        return None
    return perm


def _result(out, format, group, n, k, perm=None, flags=None):
    codes, scales, zeros, offsets = out[:4]
    return ImportedWeight(codes, scales, zeros, offsets, format, group, n, k, perm, flags)


def import_gptq(qweight, qzeros, scales, g_idx=None, *, bits=4, group_size=128, sym=True, checkpoint_format="gptq",
                check=True):
    """A GPTQ layer (AutoGPTQ / GPTQModel: qweight int32 [K/8, N], qzeros int32 [G, N/8], scales [G, N], g_idx
    int32 [K] or None) -> s4 (sym) or u4. checkpoint_format: "gptq" (v1: stored zero = z - 1), "gptq_v2", or
    "detect" (sym only: from the qzeros words). check: read the GPU importer's error word (a sync) and raise."""
    args = (qweight, qzeros, scales, g_idx, bits, group_size, sym, checkpoint_format)
    out = _call(ops.import_gptq, *args)
    k, n = qweight.shape[0] * 8, qweight.shape[1]
    group = ops.import_group(group_size, k)
    if check and qweight.is_cuda:
        _check_flags("import_gptq", out[5], ops.import_gptq, args)
    return _result(out, "s4" if sym else "u4", group, n, k, _perm_or_none(out[4], g_idx, k, group), out[5])


def import_awq(qweight, qzeros, scales, *, bits=4, group_size=128, zero_point=True):
    """An AutoAWQ GEMM layer (qweight int32 [K, N/8] and qzeros int32 [G, N/8] in AWQ's nibble order [0, 2, 4, 6,
    1, 3, 5, 7], scales [G, N]) -> u4. Every bit pattern is valid data: no error word."""
    out = _call(ops.import_awq, qweight, qzeros, scales, bits, group_size, zero_point)
    k, n = qweight.shape[0], qweight.shape[1] * 8
    return _result(out, "u4", ops.import_group(group_size, k), n, k)


def import_compressed_tensors(weight_packed, weight_scale, weight_shape, weight_zero_point=None, weight_g_idx=None,
                              *, num_bits=4, strategy="group", group_size=128, symmetric=True, check=True):
    """A compressed-tensors pack-quantized layer (weight_packed int32 [N, ceil(K/8)], weight_scale [N, G] or [1],
    weight_shape [N, K], weight_zero_point int32 [ceil(N/8), G] packed or int8 [N, G] when asymmetric,
    weight_g_idx int32 [K] or None) -> s4 (symmetric) or u4. strategy "group", "channel" or "tensor". check: read
    the GPU importer's error word (a sync) and raise."""
    n, k = _shape2("weight_shape", weight_shape)
    args = (weight_packed, weight_scale, [n, k], weight_zero_point, weight_g_idx, num_bits, strategy, group_size,
            symmetric)
    out = _call(ops.import_compressed_tensors, *args)
    group = ops.import_group(group_size if strategy == "group" else -1, k)
    if check and weight_packed.is_cuda:
        _check_flags("import_compressed_tensors", out[5], ops.import_compressed_tensors, args)
    return _result(out, "s4" if symmetric else "u4", group, n, k, _perm_or_none(out[4], weight_g_idx, k, group),
                   out[5])


def import_bnb(weight, absmax, quant_map, shape, *, quant_type="nf4", blocksize=64, nested_absmax=None,
               nested_quant_map=None, nested_blocksize=256, nested_offset=0.0):
    """A bitsandbytes Params4bit (weight uint8 [N*K/2, 1], absmax fp32 [nb] or, double-quantized, uint8 [nb] with
    nested_absmax fp32, nested_quant_map fp32 [256] and nested_offset, quant_map fp32 [16]; shape [N, K] from the
    quant_state) -> nf4 / fp4 with float32 scales (double quant: the effective absmax, bitsandbytes' fp32
    arithmetic). nested_offset: a float32 value (quant_state.offset.item())."""
    n, k = _shape2("shape", shape)
    out = _call(ops.import_bnb, weight, absmax, quant_map, [n, k], quant_type, blocksize, nested_absmax,
                nested_quant_map, nested_blocksize, float(nested_offset))
    return _result(out, quant_type, ops.import_group(blocksize, k), n, k)


def import_gguf(data, type, n, k):
    """A GGUF tensor's bytes (uint8, ne = [K, N]) of type "Q4_0" (-> s4 g32, fp16 scales), "Q4_1" (-> affine_u4
    g32, fp16) or "Q4_K" (-> affine_u4 g32, fp32 scales d * sc and offsets -(dmin * mn))."""
    out = _call(ops.import_gguf, data, type, n, k)
    fmt = "s4" if type.lower() == "q4_0" else "affine_u4"
    return _result(out, fmt, 32, n, k)


def import_hqq(W_q, scale, zero, shape, *, group_size=64, nbits=4, axis=1):
    """An HQQLinear (axis 1, packing "4bit_u8": W_q uint8 [N*G/2, g] or its view_as_float view, scale / zero
    [N*G, 1], shape [N, K] = meta["shape"]; group_size None: one group per row) -> affine_u4 with float32 scales
    and offsets -(zero * scale)."""
    n, k = _shape2("shape", shape)
    g = -1 if group_size is None else group_size
    out = _call(ops.import_hqq, W_q, scale, zero, [n, k], g, nbits, axis)
    return _result(out, "affine_u4", ops.import_group(g, k), n, k)
