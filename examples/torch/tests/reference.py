"""Independent float64 references for the tests: unpacking of nibble's PLAIN layout and its dequantization,
written from the layout's documentation (README "Packing", include/nibble/quant/packed_matrix.cuh), not from
nibble's code, and computed on the host in float64.

  codes  uint8 [N, K/2]: element k of a row in byte k // 2, even k in the LOW nibble
  s4     two's complement in [-8, 7]:   w = q * s
  u4     0..15 with a zero point z:      w = (q - z) * s
  nf4    index into NF4:                 w = NF4[q] * s
  fp4    index into bitsandbytes' FP4:   w = FP4[q] * s
  affine_u4  0..15 with an offset m:     w = q * s + m
"""
import torch

# bitsandbytes' published NF4 table (QLoRA; bitsandbytes functional.py / csrc/kernels.cu dDequantizeNF4).
NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]
# bitsandbytes' FP4 (csrc/kernels.cu dDequantizeFP4Tree): sign bit 3; magnitude codes 0..7 stand for
# 0, 0.0625, 8, 12, 4, 6, 2, 3, divided by the largest, 12.
_FP4_MAG = [0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0]
FP4 = [m / 12.0 for m in _FP4_MAG] + [-m / 12.0 for m in _FP4_MAG]


def unpack_codes(codes):
    """uint8 [N, K/2] -> int64 [N, K] of raw 4-bit codes 0..15 (even k from the low nibble)."""
    c = codes.to(torch.int64).cpu()
    out = torch.empty(c.shape[0], c.shape[1] * 2, dtype=torch.int64)
    out[:, 0::2] = c & 0xF
    out[:, 1::2] = c >> 4
    return out


def code_values(fmt, q, value_dtype=None):
    """The number each raw code stands for (before scaling), float64. value_dtype: round the table values to it
    first (the GEMM's nf4 / fp4 tables are in the activation type)."""
    if fmt == "s4":
        v = torch.where(q >= 8, q - 16, q).to(torch.float64)
    elif fmt in ("u4", "affine_u4"):
        v = q.to(torch.float64)
    elif fmt in ("nf4", "fp4"):
        table = torch.tensor(NF4 if fmt == "nf4" else FP4, dtype=torch.float32)
        if value_dtype is not None:
            table = table.to(value_dtype)
        v = table.to(torch.float64)[q]
    else:
        raise ValueError(fmt)
    return v


def expand(per_group, k):
    """[N, G] -> [N, K] (each group's value repeated over its K / G columns), float64."""
    g = per_group.shape[1]
    return per_group.to(torch.float64).cpu().repeat_interleave(k // g, dim=1)


def dequantize(fmt, codes, scales, zeros, offsets, act_dtype=None):
    """float64 [N, K] of the plain layout. act_dtype: use the scales / offsets / table values rounded to the
    activation type, as the GEMM layout holds them (repack rounds them to it)."""
    q = unpack_codes(codes)
    k = q.shape[1]
    s = scales.to(act_dtype) if act_dtype is not None else scales
    v = code_values(fmt, q, act_dtype)
    if fmt == "u4":
        v = v - expand(zeros, k)
    w = v * expand(s, k)
    if fmt == "affine_u4":
        m = offsets.to(act_dtype) if act_dtype is not None else offsets
        w = w + expand(m, k)
    return w


def rel_frobenius(x, ref):
    x = x.to(torch.float64).cpu()
    ref = ref.to(torch.float64).cpu()
    return (torch.linalg.norm(x - ref) / torch.linalg.norm(ref)).item()
