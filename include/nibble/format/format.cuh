// nibble/format/format.cuh — the 4-bit number formats: runtime enum, compile-time tags and traits.
//
// Every format stores one 4-bit code per weight, two codes per byte (see thread/pack.cuh for the nibble
// order), plus one scale per group of `group_size` consecutive weights along K:
//
//   format  code meaning                              dequantized value
//   ------  ----------------------------------------  ---------------------------------
//   kS4     signed two's complement int4, [-8, 7]     q * scale
//   kU4     unsigned int4 [0, 15] + uint8 zero point  (q - zero) * scale
//   kNf4    index into the NF4 codebook (bitsandbytes) nf4_value[q] * absmax
//   kFp4    index into the FP4 codebook (bitsandbytes) fp4_value[q] * absmax
//   kAffineU4  unsigned int4 [0, 15] + float offset      q * scale + offset   (GGUF Q4_1 / Q4_K style)
//
// kAffineU4 carries a second per-group value, the offset (of the scale type): in the plain layout
// (quant/packed_matrix.cuh) and in the GEMM layout (layout/gemm_layout.cuh: a third buffer beside the scales).
#pragma once

#include "../config.cuh"

namespace nibble {

/// The 4-bit formats. Runtime value, for host APIs; kernels take the tags below.
enum class Format : std::uint8_t { kS4 = 0, kU4 = 1, kNf4 = 2, kFp4 = 3, kAffineU4 = 4 };

/// Group size that means "one scale per whole row of K" (per-channel quantization).
inline constexpr int kPerChannel = 0;

/// The group sizes nibble supports besides kPerChannel.
NIBBLE_HOST_DEVICE constexpr bool is_supported_group_size(int g) {
  return g == 32 || g == 64 || g == 128 || g == 256 || g == kPerChannel;
}

/// The effective group length along K: `group_size`, or K itself for kPerChannel.
NIBBLE_HOST_DEVICE constexpr std::int64_t effective_group(int group_size, std::int64_t k) {
  return group_size == kPerChannel ? k : std::int64_t(group_size);
}

NIBBLE_HOST_DEVICE constexpr const char* to_string(Format f) {
  switch (f) {
    case Format::kS4:
      return "s4";
    case Format::kU4:
      return "u4";
    case Format::kNf4:
      return "nf4";
    case Format::kFp4:
      return "fp4";
    case Format::kAffineU4:
      return "affine_u4";
  }
  return "unknown";
}

/// True for the codebook formats (NF4, FP4), whose codes index a 16-entry table.
NIBBLE_HOST_DEVICE constexpr bool is_codebook(Format f) { return f == Format::kNf4 || f == Format::kFp4; }
/// True for the formats that carry a zero point per group.
NIBBLE_HOST_DEVICE constexpr bool has_zero_point(Format f) { return f == Format::kU4; }
/// True for the formats that carry a float offset per group (w = q * scale + offset).
NIBBLE_HOST_DEVICE constexpr bool has_offset(Format f) { return f == Format::kAffineU4; }
/// True for the formats the GEMM layout (layout/gemm_layout.cuh), repack and the GEMM support: all five.
NIBBLE_HOST_DEVICE constexpr bool has_gemm_layout(Format f) {
  return f == Format::kS4 || f == Format::kU4 || f == Format::kNf4 || f == Format::kFp4 || f == Format::kAffineU4;
}

/// Compile-time format tag: a format, a group size (or kPerChannel) and whether scales are double-quantized.
template <Format F, int GroupSize, bool DoubleQuant = false>
struct QuantFormat {
  static_assert(is_supported_group_size(GroupSize), "group size must be 32, 64, 128, 256 or kPerChannel");
  static_assert(!(DoubleQuant && has_offset(F)), "affine u4 has no double quantization");
  static constexpr Format kFormat = F;
  static constexpr int kGroupSize = GroupSize;
  static constexpr bool kDoubleQuant = DoubleQuant;
  static constexpr bool kHasZero = has_zero_point(F);
  static constexpr bool kCodebook = is_codebook(F);
  static constexpr bool kHasOffset = has_offset(F);
};

template <int G, bool DQ = false>
using S4 = QuantFormat<Format::kS4, G, DQ>;
template <int G, bool DQ = false>
using U4 = QuantFormat<Format::kU4, G, DQ>;
template <int G, bool DQ = false>
using Nf4 = QuantFormat<Format::kNf4, G, DQ>;
template <int G, bool DQ = false>
using Fp4 = QuantFormat<Format::kFp4, G, DQ>;
template <int G>
using AffineU4 = QuantFormat<Format::kAffineU4, G>;

/// Element types nibble reads and writes, as a runtime tag for host APIs.
enum class DType : std::uint8_t { kF32 = 0, kF16 = 1, kBF16 = 2 };

template <class T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::kF32;
};
template <>
struct dtype_of<__half> {
  static constexpr DType value = DType::kF16;
};
template <>
struct dtype_of<__nv_bfloat16> {
  static constexpr DType value = DType::kBF16;
};
template <class T>
inline constexpr DType dtype_of_v = dtype_of<T>::value;

NIBBLE_HOST_DEVICE constexpr int size_of(DType t) { return t == DType::kF32 ? 4 : 2; }

/// float → T with round-to-nearest-even, identical on host and device.
template <class T>
NIBBLE_HOST_DEVICE T from_float(float x) {
  if constexpr (std::is_same_v<T, float>)
    return x;
  else if constexpr (std::is_same_v<T, __half>)
    return __float2half_rn(x);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __float2bfloat16_rn(x);
  else
    static_assert(dependent_false<T>, "element type must be float, __half or __nv_bfloat16");
}

/// T → float (exact), identical on host and device.
template <class T>
NIBBLE_HOST_DEVICE float to_float(T x) {
  if constexpr (std::is_same_v<T, float>)
    return x;
  else if constexpr (std::is_same_v<T, __half>)
    return __half2float(x);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>)
    return __bfloat162float(x);
  else
    static_assert(dependent_false<T>, "element type must be float, __half or __nv_bfloat16");
}

}  // namespace nibble
