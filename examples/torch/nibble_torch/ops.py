"""torch.ops.nibble.{quantize, repack, gemm} and the checkpoint importers (import_gptq, import_awq,
import_compressed_tensors, import_bnb, import_gguf, import_hqq, permute_columns): loads the extension and registers
each op's fake (meta) implementation, which says the output shapes and dtypes without running anything
(torch.compile, FakeTensor, torch.library.opcheck). The C++ library names this module (set_python_module), so
PyTorch asks for it when it needs a fake and finds none.

The shapes are those of nibble's layouts (include/nibble/quant/packed_matrix.cuh, layout/gemm_layout.cuh):
  plain:  codes uint8 [N, K/2]; scales [N, G] (G = K / g, 1 per-channel); zeros uint8 [N, G] (u4);
          offsets [N, G] (affine_u4); a buffer the format lacks: uint8 [0]
  GEMM:   codes uint8 [n_pad * k_pad / 2]; scales, offsets [groups, n_pad] of the activation dtype; zeros uint8
          [groups, n_pad]; n_pad = round_up(N, 16), k_pad = round_up(K, 64), groups = k_pad / g (1 per-channel)

The importers return the plain layout (plus perm int32 [K] with a g_idx, else [0], and flags int32 [1] for GPTQ
and compressed-tensors), with the format, group and scale dtype each checkpoint maps to (include/nibble/import/):

  import_gptq                s4 (sym) / u4, the checkpoint's group, the scales' dtype
  import_awq                 u4, the checkpoint's group, the scales' dtype
  import_compressed_tensors  s4 (symmetric) / u4, group ("group") or per-channel ("channel", "tensor"), the
                             weight_scale's dtype
  import_bnb                 nf4 / fp4, group = blocksize, float32 scales
  import_gguf                Q4_0: s4 g32 float16; Q4_1: affine_u4 g32 float16; Q4_K: affine_u4 g32 float32
  import_hqq                 affine_u4, the checkpoint's group, float32 scales and offsets
A checkpoint group of -1 (or K) is one group per row: nibble's group K when K is 32, 64, 128 or 256, else
per-channel (0) (import_group, nibble::detail::import_group_size).
"""
import torch

from . import _build

_build.load()

FORMATS = ("s4", "u4", "nf4", "fp4", "affine_u4")
PER_CHANNEL = 0  # nibble::kPerChannel


def _round_up(x, m):
    return (x + m - 1) // m * m


def gemm_shape(n, k, group_size):
    """(n_pad, k_pad, groups) of nibble's GEMM layout for an [n, k] weight."""
    n_pad, k_pad = _round_up(n, 16), _round_up(k, 64)
    groups = 1 if group_size == PER_CHANNEL else k_pad // group_size
    return n_pad, k_pad, groups


def _empty_u8(like):
    return like.new_empty((0,), dtype=torch.uint8)


def _plain_fake(like, n, k, group, format, scale_dtype):
    """The plain layout of an [n, k] weight (what quantize and every importer return), on like's device."""
    g = 1 if group == PER_CHANNEL else k // group
    codes = like.new_empty((n, k // 2), dtype=torch.uint8)
    scales = like.new_empty((n, g), dtype=scale_dtype)
    zeros = like.new_empty((n, g), dtype=torch.uint8) if format == "u4" else _empty_u8(like)
    offsets = like.new_empty((n, g), dtype=scale_dtype) if format == "affine_u4" else _empty_u8(like)
    return codes, scales, zeros, offsets


@torch.library.register_fake("nibble::quantize")
def _quantize_fake(weight, format, group_size, scale_dtype=None):
    n, k = weight.shape
    return _plain_fake(weight, n, k, group_size, format, weight.dtype if scale_dtype is None else scale_dtype)


@torch.library.register_fake("nibble::repack")
def _repack_fake(codes, scales, zeros, offsets, format, group_size, act_dtype):
    n, k = codes.shape[0], codes.shape[1] * 2
    n_pad, k_pad, groups = gemm_shape(n, k, group_size)
    g_codes = codes.new_empty((n_pad * k_pad // 2,), dtype=torch.uint8)
    g_scales = codes.new_empty((groups, n_pad), dtype=act_dtype)
    g_zeros = codes.new_empty((groups, n_pad), dtype=torch.uint8) if format == "u4" else _empty_u8(codes)
    g_offsets = codes.new_empty((groups, n_pad), dtype=act_dtype) if format == "affine_u4" else _empty_u8(codes)
    return g_codes, g_scales, g_zeros, g_offsets


@torch.library.register_fake("nibble::gemm")
def _gemm_fake(a, codes, scales, zeros, offsets, bias, format, group_size, n, k, out_dtype=None):
    torch._check(a.shape[-1] == k, lambda: f"nibble::gemm: a must be [..., {k}], got {tuple(a.shape)}")
    return a.new_empty((*a.shape[:-1], n), dtype=out_dtype if out_dtype is not None else a.dtype)


# ---- checkpoint importers ---------------------------------------------------------------------------------------

_GROUP_SIZES = (32, 64, 128, 256)


def import_group(group_size, k):
    """nibble's group size for a checkpoint's group of `group_size` columns along K (nibble::detail::
    import_group_size): -1 or K is one group per row (K itself where K is 32..256, else PER_CHANNEL)."""
    if group_size == -1 or group_size == k:
        return group_size if group_size == k and group_size in _GROUP_SIZES else PER_CHANNEL
    return group_size


def _perm_flags_fake(like, k, g_idx):
    perm = like.new_empty((k,) if g_idx is not None else (0,), dtype=torch.int32)
    return perm, like.new_empty((1,), dtype=torch.int32)


@torch.library.register_fake("nibble::import_gptq")
def _import_gptq_fake(qweight, qzeros, scales, g_idx=None, bits=4, group_size=128, sym=True, checkpoint_format="gptq"):
    torch._check(bits == 4, lambda: f"nibble::import_gptq: bits={bits}: only 4")
    k, n = qweight.shape[0] * 8, qweight.shape[1]
    plain = _plain_fake(qweight, n, k, import_group(group_size, k), "s4" if sym else "u4", scales.dtype)
    return (*plain, *_perm_flags_fake(qweight, k, g_idx))


@torch.library.register_fake("nibble::import_awq")
def _import_awq_fake(qweight, qzeros, scales, bits=4, group_size=128, zero_point=True):
    torch._check(bits == 4, lambda: f"nibble::import_awq: bits={bits}: only 4")
    k, n = qweight.shape[0], qweight.shape[1] * 8
    return _plain_fake(qweight, n, k, import_group(group_size, k), "u4", scales.dtype)


@torch.library.register_fake("nibble::import_compressed_tensors")
def _import_ct_fake(weight_packed, weight_scale, weight_shape, weight_zero_point=None, weight_g_idx=None, num_bits=4,
                    strategy="group", group_size=128, symmetric=True):
    torch._check(num_bits == 4, lambda: f"nibble::import_compressed_tensors: num_bits={num_bits}: only 4")
    n, k = weight_shape
    group = import_group(group_size if strategy == "group" else -1, k)
    plain = _plain_fake(weight_packed, n, k, group, "s4" if symmetric else "u4", weight_scale.dtype)
    return (*plain, *_perm_flags_fake(weight_packed, k, weight_g_idx))


@torch.library.register_fake("nibble::import_bnb")
def _import_bnb_fake(weight, absmax, quant_map, shape, quant_type="nf4", blocksize=64, nested_absmax=None,
                     nested_quant_map=None, nested_blocksize=256, nested_offset=0.0):
    n, k = shape
    return _plain_fake(weight, n, k, import_group(blocksize, k), quant_type, torch.float32)


_GGUF_TYPES = {"q4_0": ("s4", torch.float16), "q4_1": ("affine_u4", torch.float16),
               "q4_k": ("affine_u4", torch.float32)}


@torch.library.register_fake("nibble::import_gguf")
def _import_gguf_fake(data, type, n, k):
    torch._check(type.lower() in _GGUF_TYPES, lambda: f"nibble::import_gguf: type {type!r}: Q4_0, Q4_1 or Q4_K")
    fmt, scale_dtype = _GGUF_TYPES[type.lower()]
    return _plain_fake(data, n, k, 32, fmt, scale_dtype)


@torch.library.register_fake("nibble::import_hqq")
def _import_hqq_fake(W_q, scale, zero, shape, group_size=64, nbits=4, axis=1):
    n, k = shape
    return _plain_fake(W_q, n, k, import_group(group_size, k), "affine_u4", torch.float32)


@torch.library.register_fake("nibble::permute_columns")
def _permute_columns_fake(x, perm):
    torch._check(perm.dim() == 1 and perm.shape[0] == x.shape[-1],
                 lambda: f"nibble::permute_columns: perm must be [{x.shape[-1]}]")
    return torch.empty_like(x, memory_format=torch.contiguous_format)


quantize = torch.ops.nibble.quantize
repack = torch.ops.nibble.repack
gemm = torch.ops.nibble.gemm
import_gptq = torch.ops.nibble.import_gptq
import_awq = torch.ops.nibble.import_awq
import_compressed_tensors = torch.ops.nibble.import_compressed_tensors
import_bnb = torch.ops.nibble.import_bnb
import_gguf = torch.ops.nibble.import_gguf
import_hqq = torch.ops.nibble.import_hqq
permute_columns = torch.ops.nibble.permute_columns
