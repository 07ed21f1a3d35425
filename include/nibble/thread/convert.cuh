// nibble/thread/convert.cuh — one packed 32-bit word of eight 4-bit codes -> four half2 / bfloat162 pairs
// (or eight int8) in registers, with no memory traffic and no per-value branches.
//
// Output convention for every function here: out[j] holds the pair (v[2j], v[2j+1]) as the bits of a
// __half2 / __nv_bfloat162 (low 16 bits = v[2j]), i.e. exactly one k-pair of an mma B fragment.
//
// Integer formats (s4, u4) take the word in NibbleOrder::kInterleaved and use the "magic number" trick:
// OR-ing a small integer into the mantissa of a power of two builds that power plus the integer exactly,
// and one subtract (or FMA) removes the power again. Codebook formats (nf4, fp4) take the word in
// NibbleOrder::kSequential and look the 16-bit values up in a 16-entry table held in 8 registers (prmt).
#pragma once

#include "../detail/ptx.cuh"
#include "../format/codebook.cuh"
#include "pack.cuh"

namespace nibble {

/// The 2-element vector type of T: __half2 or __nv_bfloat162.
template <class T>
struct Vec2;
template <>
struct Vec2<__half> {
  using type = __half2;
};
template <>
struct Vec2<__nv_bfloat16> {
  using type = __nv_bfloat162;
};
template <class T>
using vec2_t = typename Vec2<T>::type;

/// T(lo) in the low and T(hi) in the high half of a word, each rounded to nearest even (one conversion
/// instruction for the two).
template <class T>
NIBBLE_DEVICE std::uint32_t pack_rn(float lo, float hi) {
  if constexpr (std::is_same_v<T, __half>) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&h);
  } else {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const std::uint32_t*>(&h);
  }
}

/// The 16 bits of a __half / __nv_bfloat16 (host and device).
template <class T>
NIBBLE_HOST_DEVICE std::uint16_t bits_of(T x) {
  if constexpr (std::is_same_v<T, __half>)
    return __half_raw(x).x;
  else
    return __nv_bfloat16_raw(x).x;
}

/// A 16-bit pattern splatted into both halves of a word.
NIBBLE_HOST_DEVICE constexpr std::uint32_t splat2(std::uint32_t bits16) { return bits16 * 0x00010001u; }

// ---- Magic numbers, derived ----------------------------------------------------------------------------
// fp16: 1024 = 2^10 has a 10-bit mantissa of ulp 1, bits 0x6400 (exponent 10 + bias 15 = 25 = 0b11001).
//   0x6400 | u        == 1024 + u        for 0 <= u < 1024  (u = a nibble in bits 0-3)
//   0x6400 | (u << 4) == 1024 + 16 u                        (a nibble in bits 4-7)
//   (1024 + 16u) / 16 == 64 + u; 64 = 2^6 is 0x5400, and 64 + z has bits 0x5400 + 16 z (ulp of 64 is 1/16).
// bf16: 128 = 2^7 has a 7-bit mantissa of ulp 1, bits 0x4300 (exponent 7 + bias 127 = 134 = 0b10000110);
//   0x4300 | u == 128 + u for u < 128. A nibble in bits 4-7 would not fit the mantissa's ulp-1 range
//   cleanly for all 16 values (128 + 16u > 255), so bf16 shifts every nibble down to bits 0-3 instead.
inline constexpr std::uint32_t kF16Exp1024 = 0x6400u;
inline constexpr std::uint32_t kF16Exp64 = 0x5400u;
inline constexpr std::uint32_t kF16OneSixteenth = 0x2C00u;  // 2^-4: exponent -4 + 15 = 11 -> 11 << 10
inline constexpr std::uint32_t kBF16Exp128 = 0x4300u;
inline constexpr std::uint32_t kLowNibblePair = 0x000F000Fu;   // nibble 0 and nibble 4 of a word
inline constexpr std::uint32_t kHighNibblePair = 0x00F000F0u;  // nibble 1 and nibble 5
inline constexpr std::uint32_t kS4SignFlip = 0x88888888u;      // s4 two's complement -> u4 = s + 8
static_assert(kF16Exp1024 == (25u << 10), "fp16 1024.0");
static_assert(kF16Exp64 == (21u << 10), "fp16 64.0");
static_assert(kF16OneSixteenth == (11u << 10), "fp16 0.0625");
static_assert(kBF16Exp128 == (134u << 7), "bf16 128.0");

/// out[j] = (u[2j] - z, u[2j+1] - z) for eight unsigned codes u (0..15) in an interleaved word, where
/// z = zero_lo for values 0-3 (out[0], out[1]) and z = zero_hi for values 4-7 (out[2], out[3]).
/// Exact for 0 <= z <= 15: every intermediate is a small integer, representable in fp16 and bf16.
template <class T>
NIBBLE_DEVICE void u4x8_minus_zeros(std::uint32_t w, int zero_lo, int zero_hi, std::uint32_t (&out)[4]) {
  using V2 = vec2_t<T>;
  auto as_v2 = [](std::uint32_t u) { return *reinterpret_cast<V2*>(&u); };
  auto as_u32 = [](V2 v) { return *reinterpret_cast<std::uint32_t*>(&v); };
  if constexpr (std::is_same_v<T, __half>) {
    const V2 one_16th = as_v2(splat2(kF16OneSixteenth));  // 1/16
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // h = 0: values 0-3, h = 1: values 4-7 (nibbles shifted down by 8)
      const std::uint32_t z = std::uint32_t(h == 0 ? zero_lo : zero_hi);
      const V2 sub_lo = as_v2(splat2(kF16Exp1024 + z));                  // 1024 + z
      const V2 sub_hi = as_v2(splat2(0x8000u | (kF16Exp64 + 16u * z)));  // -(64 + z)
      const std::uint32_t s = w >> (8 * h);
      const std::uint32_t lo = detail::lop3<detail::kLutAndOr>(s, kLowNibblePair, splat2(kF16Exp1024));
      const std::uint32_t hi = detail::lop3<detail::kLutAndOr>(s, kHighNibblePair, splat2(kF16Exp1024));
      out[2 * h] = as_u32(__hsub2(as_v2(lo), sub_lo));                // (1024 + u) - (1024 + z)
      out[2 * h + 1] = as_u32(__hfma2(as_v2(hi), one_16th, sub_hi));  // (1024 + 16u) / 16 - (64 + z)
    }
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {  // pair j = nibbles j and j + 4
      const std::uint32_t z = std::uint32_t(j < 2 ? zero_lo : zero_hi);
      const std::uint32_t v = detail::lop3<detail::kLutAndOr>(w >> (4 * j), kLowNibblePair, splat2(kBF16Exp128));
      out[j] = as_u32(__hsub2(as_v2(v), as_v2(splat2(kBF16Exp128 + z))));  // (128 + u) - (128 + z)
    }
  } else {
    static_assert(dependent_false<T>, "T must be __half or __nv_bfloat16");
  }
}

/// u4x8_minus_zeros with one zero point for all eight values.
template <class T>
NIBBLE_DEVICE void u4x8_minus_zero(std::uint32_t w, int zero, std::uint32_t (&out)[4]) {
  u4x8_minus_zeros<T>(w, zero, zero, out);
}

/// out[j] = (s[2j], s[2j+1]) for eight signed int4 values in an interleaved word: u4x8_minus_zero(w ^ 0x88888888,
/// 8), with the sign flip folded into the masking lop3 ((w & m) ^ (magic | (m & 0x88888888)): the magic exponent
/// bits lie outside m), one instruction per word fewer.
template <class T>
NIBBLE_DEVICE void s4x8_to_pairs(std::uint32_t w, std::uint32_t (&out)[4]) {
  using V2 = vec2_t<T>;
  auto as_v2 = [](std::uint32_t u) { return *reinterpret_cast<V2*>(&u); };
  auto as_u32 = [](V2 v) { return *reinterpret_cast<std::uint32_t*>(&v); };
  constexpr int kLutAndXor = (0xF0 & 0xCC) ^ 0xAA;  // (a & b) ^ c
  if constexpr (std::is_same_v<T, __half>) {
    const V2 one_16th = as_v2(splat2(kF16OneSixteenth));
    const V2 sub_lo = as_v2(splat2(kF16Exp1024 + 8u));                  // 1024 + 8
    const V2 sub_hi = as_v2(splat2(0x8000u | (kF16Exp64 + 16u * 8u)));  // -(64 + 8)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const std::uint32_t x = w >> (8 * h);
      const std::uint32_t lo =
          detail::lop3<kLutAndXor>(x, kLowNibblePair, splat2(kF16Exp1024) | (kLowNibblePair & kS4SignFlip));
      const std::uint32_t hi =
          detail::lop3<kLutAndXor>(x, kHighNibblePair, splat2(kF16Exp1024) | (kHighNibblePair & kS4SignFlip));
      out[2 * h] = as_u32(__hsub2(as_v2(lo), sub_lo));
      out[2 * h + 1] = as_u32(__hfma2(as_v2(hi), one_16th, sub_hi));
    }
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const std::uint32_t v =
          detail::lop3<kLutAndXor>(w >> (4 * j), kLowNibblePair, splat2(kBF16Exp128) | (kLowNibblePair & kS4SignFlip));
      out[j] = as_u32(__hsub2(as_v2(v), as_v2(splat2(kBF16Exp128 + 8u))));
    }
  } else {
    static_assert(dependent_false<T>, "T must be __half or __nv_bfloat16");
  }
}

/// Eight signed int4 values in a SEQUENTIAL word -> eight int8: out[0] = v0..v3, out[1] = v4..v7
/// (byte i of out[0] is v_i). Host and device; pure integer arithmetic, no cross-byte carries.
NIBBLE_HOST_DEVICE std::uint32_t sext_nibbles_in_bytes(std::uint32_t x) {
  // A nibble 0..15 in each byte; 0x08 * 0x1E = 0xF0 ORs the sign into bits 4-7 without touching the next byte.
  return x | ((x & 0x08080808u) * 0x1Eu);
}
NIBBLE_HOST_DEVICE void s4x8_to_s8x8(std::uint32_t w, std::uint32_t (&out)[2]) {
  const std::uint32_t even = sext_nibbles_in_bytes(w & 0x0F0F0F0Fu);        // v0 v2 v4 v6
  const std::uint32_t odd = sext_nibbles_in_bytes((w >> 4) & 0x0F0F0F0Fu);  // v1 v3 v5 v7
#if defined(__CUDA_ARCH__)
  out[0] = detail::prmt(even, odd, 0x5140u);  // bytes: even.0 odd.0 even.1 odd.1
  out[1] = detail::prmt(even, odd, 0x7362u);  // bytes: even.2 odd.2 even.3 odd.3
#else
  auto byte = [](std::uint32_t x, int i) { return (x >> (8 * i)) & 0xFFu; };
  out[0] = byte(even, 0) | byte(odd, 0) << 8 | byte(even, 1) << 16 | byte(odd, 1) << 24;
  out[1] = byte(even, 2) | byte(odd, 2) << 8 | byte(even, 3) << 16 | byte(odd, 3) << 24;
#endif
}

/// A 16-entry codebook of T held in registers: lo[i] / hi[i] hold the low / high bytes of entries 4i..4i+3.
struct CodebookLut {
  std::uint32_t lo[4];
  std::uint32_t hi[4];
};

/// Builds the register table of codebook `F` (kNf4 or kFp4) in type T (each entry rounded to nearest).
template <Format F, class T>
NIBBLE_HOST_DEVICE CodebookLut make_codebook_lut() {
  static_assert(is_codebook(F), "make_codebook_lut: F must be kNf4 or kFp4");
  constexpr Codebook16 book = codebook(F);
  CodebookLut lut{};
#pragma unroll
  for (int i = 0; i < 16; ++i) {
    const std::uint32_t b = bits_of(from_float<T>(book.v[i]));
    lut.lo[i / 4] |= (b & 0xFFu) << (8 * (i % 4));
    lut.hi[i / 4] |= (b >> 8) << (8 * (i % 4));
  }
  return lut;
}

namespace detail {
/// Bytes of table `t` (16 entries in 4 regs) selected by the four codes in the low 16 bits of `codes`.
NIBBLE_DEVICE std::uint32_t lut16_bytes(const std::uint32_t (&t)[4], std::uint32_t codes) {
  const std::uint32_t sel = codes & 0x7777u;           // entry within a group of 8 (prmt's 3 bits)
  const std::uint32_t upper = (codes & 0x8888u) >> 1;  // 4 where the code is >= 8, in each nibble
  const std::uint32_t first8 = prmt(t[0], t[1], sel);  // candidates from entries 0..7
  const std::uint32_t last8 = prmt(t[2], t[3], sel);   // candidates from entries 8..15
  return prmt(first8, last8, 0x3210u | upper);         // byte i from last8 where code i >= 8
}
}  // namespace detail

/// out[j] = (book[c[2j]], book[c[2j+1]]) for eight codebook codes c in a SEQUENTIAL word.
NIBBLE_DEVICE void codebook_x8_to_pairs(const CodebookLut& lut, std::uint32_t w, std::uint32_t (&out)[4]) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {  // codes 4h .. 4h+3
    const std::uint32_t codes = w >> (16 * h);
    const std::uint32_t lo = detail::lut16_bytes(lut.lo, codes);
    const std::uint32_t hi = detail::lut16_bytes(lut.hi, codes);
    out[2 * h] = detail::prmt(lo, hi, 0x5140u);      // lo.0 hi.0 lo.1 hi.1 = (c0, c1)
    out[2 * h + 1] = detail::prmt(lo, hi, 0x7362u);  // lo.2 hi.2 lo.3 hi.3 = (c2, c3)
  }
}

/// Host/device scalar reference of the pair conversions above: value i of word `w` as a float.
/// (s4: signed value; u4: code - zero; affine u4: the code; nf4/fp4: codebook entry rounded to T.)
template <Format F, class T>
NIBBLE_HOST_DEVICE float reference_value(std::uint32_t w, int i, int zero = 0) {
  static_assert(has_gemm_layout(F), "reference_value: a format of the GEMM layout");
  if constexpr (F == Format::kS4 || F == Format::kU4 || F == Format::kAffineU4) {
    const int v = from_nibble<F>(w >> (4 * nibble_position(NibbleOrder::kInterleaved, i)));
    return float(F == Format::kU4 ? v - zero : v);
  } else {
    const unsigned c = (w >> (4 * i)) & 0xFu;
    return to_float(from_float<T>(codebook(F)[c]));
  }
}

}  // namespace nibble
