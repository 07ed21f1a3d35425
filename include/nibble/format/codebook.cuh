// nibble/format/codebook.cuh — the NF4 and FP4 16-entry codebooks and their nearest-code encoders.
//
// Both tables, and the encoders' decision thresholds, are bitsandbytes' (csrc/kernels.cu: dDequantizeNF4,
// dQuantizeNF4, dDequantizeFP4Tree, dQuantizeFP4), so that the same normalized input gives the same code.
// They are defined once here, as constexpr functions usable on host and device.
#pragma once

#include "format.cuh"

namespace nibble {

/// A 16-entry table of floats, returned by value so it is usable in constexpr host code and device code.
struct Codebook16 {
  float v[16];
  NIBBLE_HOST_DEVICE constexpr float operator[](unsigned i) const { return v[i & 15u]; }
};

/// NF4 (NormalFloat4, QLoRA): quantiles of N(0,1) normalized to [-1, 1], with an exact zero at code 7.
NIBBLE_HOST_DEVICE constexpr Codebook16 nf4_codebook() {
  return {{-1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f, -0.28444138169288635f,
           -0.18477343022823334f, -0.09105003625154495f, 0.0f, 0.07958029955625534f, 0.16093020141124725f,
           0.24611230194568634f, 0.33791524171829224f, 0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f,
           1.0f}};
}

/// FP4 as bitsandbytes defines it: sign bit 3, then a 3-bit magnitude code e2m1 with exponent bias 3,
/// normalized by its largest magnitude 12:  0, 0.0625, 8, 12, 4, 6, 2, 3 (codes 0..7) divided by 12.
NIBBLE_HOST_DEVICE constexpr Codebook16 fp4_codebook() {
  return {{0.0f, 5.208333333e-03f, 0.66666667f, 1.0f, 0.33333333f, 0.5f, 0.16666667f, 0.25f,  //
           -0.0f, -5.208333333e-03f, -0.66666667f, -1.0f, -0.33333333f, -0.5f, -0.16666667f, -0.25f}};
}

/// The codebook of a codebook format (kNf4 or kFp4).
NIBBLE_HOST_DEVICE constexpr Codebook16 codebook(Format f) {
  return f == Format::kNf4 ? nf4_codebook() : fp4_codebook();
}

/// Nearest NF4 code of `x` (x already divided by the block absmax, so |x| <= 1).
/// The decision thresholds are the midpoints of adjacent codebook values (bitsandbytes computed them in
/// float64 from the same table); `x > t` is strict, so a tie goes to the lower code, NaN to code 0.
NIBBLE_HOST_DEVICE constexpr unsigned encode_nf4(float x) {
  constexpr float kThreshold[15] = {
      -0.8480964004993439f,  -0.6106329262256622f,   -0.4599952697753906f, -0.33967943489551544f, -0.23460740596055984f,
      -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f,   0.2035212516784668f,
      0.2920137718319893f,   0.3893125355243683f,    0.5016634166240692f,  0.6427869200706482f,   0.8614784181118011f};
  unsigned code = 0;
#pragma unroll
  for (int i = 0; i < 15; ++i) code += (x > kThreshold[i]) ? 1u : 0u;
  return code;
}

/// Nearest FP4 code of `x` (normalized by the block absmax). Sign from `x < 0` (so -0 and NaN are
/// positive), magnitude by bitsandbytes' thresholds, strict `>`: a tie goes to the smaller magnitude.
NIBBLE_HOST_DEVICE constexpr unsigned encode_fp4(float x) {
  // Magnitude codes in increasing order of the value they stand for: 0, 1/192, 1/6, 1/4, 1/3, 1/2, 2/3, 1.
  // Packed as one nibble per rank (rank r at bits 4r) so the lookup is a shift, not a local-memory array.
  constexpr unsigned kByMagnitude = 0x32547610u;
  constexpr float kThreshold[7] = {0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f,
                                   0.4166667f,  0.583333f,  0.8333333f};
  const unsigned sign = x < 0.0f ? 0b1000u : 0u;
  const float ax = x < 0.0f ? -x : x;
  unsigned rank = 0;
#pragma unroll
  for (int i = 0; i < 7; ++i) rank += (ax > kThreshold[i]) ? 1u : 0u;
  return ((kByMagnitude >> (4u * rank)) & 0xFu) | sign;
}

}  // namespace nibble
