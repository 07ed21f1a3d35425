"""torch.ops.nibble.{quantize, repack, gemm}: loads the extension and registers each op's fake (meta)
implementation, which says the output shapes and dtypes without running anything (torch.compile, FakeTensor,
torch.library.opcheck). The C++ library names this module (set_python_module), so PyTorch asks for it when it
needs a fake and finds none.

The shapes are those of nibble's layouts (include/nibble/quant/packed_matrix.cuh, layout/gemm_layout.cuh):
  plain:  codes uint8 [N, K/2]; scales [N, G] (G = K / g, 1 per-channel); zeros uint8 [N, G] (u4);
          offsets [N, G] (affine_u4); a buffer the format lacks: uint8 [0]
  GEMM:   codes uint8 [n_pad * k_pad / 2]; scales, offsets [groups, n_pad] of the activation dtype; zeros uint8
          [groups, n_pad]; n_pad = round_up(N, 16), k_pad = round_up(K, 64), groups = k_pad / g (1 per-channel)
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


@torch.library.register_fake("nibble::quantize")
def _quantize_fake(weight, format, group_size, scale_dtype=None):
    n, k = weight.shape
    if scale_dtype is None:
        scale_dtype = weight.dtype
    g = 1 if group_size == PER_CHANNEL else k // group_size
    codes = weight.new_empty((n, k // 2), dtype=torch.uint8)
    scales = weight.new_empty((n, g), dtype=scale_dtype)
    zeros = weight.new_empty((n, g), dtype=torch.uint8) if format == "u4" else _empty_u8(weight)
    offsets = weight.new_empty((n, g), dtype=scale_dtype) if format == "affine_u4" else _empty_u8(weight)
    return codes, scales, zeros, offsets


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


quantize = torch.ops.nibble.quantize
repack = torch.ops.nibble.repack
gemm = torch.ops.nibble.gemm
