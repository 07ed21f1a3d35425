// nibble/thread/pack.cuh — two 4-bit values <-> one byte, eight <-> one 32-bit word (scalar, host and device).
//
// Byte: the value with the even index goes in the LOW nibble (bits 0-3), the odd one in the high nibble:
//     byte = (v1 << 4) | (v0 & 0xF)        — so element k of a row lives in byte k/2, nibble k%2.
// Word, NibbleOrder::kSequential: value i in nibble i (bits 4i..4i+3); the word is the little-endian load
//     of four consecutive bytes, i.e. plain memory order.
// Word, NibbleOrder::kInterleaved: even values in the low half-word, odd values in the high half-word:
//     nibble:  7  6  5  4  3  2  1  0
//     value:   7  5  3  1  6  4  2  0
//   so `w & 0x000F000F` holds (v0, v1) in the two 16-bit halves, `w & 0x00F000F0` holds (v2, v3) shifted by
//   4, and `w >> 8` repeats the pattern for (v4..v7): the order thread/convert.cuh's register tricks want.
//
// Values: for Format::kS4 a signed int in [-8, 7] (two's complement in the nibble); for every other format
// an unsigned code in [0, 15]. Out-of-range inputs are truncated to their low 4 bits.
#pragma once

#include "../format/format.cuh"

namespace nibble {

enum class NibbleOrder : std::uint8_t { kSequential = 0, kInterleaved = 1 };

/// The nibble (0..7) of a 32-bit word that holds value `i` (0..7) in `order`.
NIBBLE_HOST_DEVICE constexpr int nibble_position(NibbleOrder order, int i) {
  return order == NibbleOrder::kSequential ? i : ((i & 1) ? 4 + (i >> 1) : (i >> 1));
}
static_assert(nibble_position(NibbleOrder::kInterleaved, 1) == 4 && nibble_position(NibbleOrder::kInterleaved, 6) == 3,
              "interleaved order: odd values in the high half-word");

/// The 4-bit pattern of value `v` in format F.
template <Format F>
NIBBLE_HOST_DEVICE constexpr std::uint32_t to_nibble(int v) {
  return std::uint32_t(v) & 0xFu;
}

/// The value of a 4-bit pattern in format F: sign-extended for kS4, the plain code otherwise.
template <Format F>
NIBBLE_HOST_DEVICE constexpr int from_nibble(std::uint32_t nib) {
  nib &= 0xFu;
  if constexpr (F == Format::kS4)
    return int(nib ^ 0x8u) - 8;  // two's complement: flip sign, unbias
  else
    return int(nib);
}

/// Two values -> one byte: v0 in the low nibble, v1 in the high nibble.
template <Format F>
NIBBLE_HOST_DEVICE constexpr std::uint8_t pack_x2(int v0, int v1) {
  return std::uint8_t(to_nibble<F>(v0) | (to_nibble<F>(v1) << 4));
}

/// One byte -> its two values (low nibble first).
template <Format F>
NIBBLE_HOST_DEVICE constexpr void unpack_x2(std::uint8_t b, int& v0, int& v1) {
  v0 = from_nibble<F>(b);
  v1 = from_nibble<F>(b >> 4);
}

/// Eight values -> one 32-bit word in `order`.
template <Format F, NibbleOrder Order = NibbleOrder::kSequential>
NIBBLE_HOST_DEVICE constexpr std::uint32_t pack_x8(const int (&v)[8]) {
  std::uint32_t w = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) w |= to_nibble<F>(v[i]) << (4 * nibble_position(Order, i));
  return w;
}

/// One 32-bit word in `order` -> its eight values.
template <Format F, NibbleOrder Order = NibbleOrder::kSequential>
NIBBLE_HOST_DEVICE constexpr void unpack_x8(std::uint32_t w, int (&v)[8]) {
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = from_nibble<F>(w >> (4 * nibble_position(Order, i)));
}

/// Sequential word -> interleaved word (same eight values). Format-independent: it moves nibbles.
NIBBLE_HOST_DEVICE constexpr std::uint32_t interleave_x8(std::uint32_t w) {
  std::uint32_t r = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) r |= ((w >> (4 * i)) & 0xFu) << (4 * nibble_position(NibbleOrder::kInterleaved, i));
  return r;
}

/// Interleaved word -> sequential word; the inverse of interleave_x8.
NIBBLE_HOST_DEVICE constexpr std::uint32_t deinterleave_x8(std::uint32_t w) {
  std::uint32_t r = 0;
#pragma unroll
  for (int i = 0; i < 8; ++i) r |= ((w >> (4 * nibble_position(NibbleOrder::kInterleaved, i))) & 0xFu) << (4 * i);
  return r;
}

static_assert(pack_x2<Format::kS4>(-1, 7) == 0x7F, "v0=-1 (0xF) low, v1=7 high");
static_assert(interleave_x8(0x76543210u) == 0x75316420u, "even values low half, odd values high half");
static_assert(deinterleave_x8(interleave_x8(0x89ABCDEFu)) == 0x89ABCDEFu, "round trip");

}  // namespace nibble
