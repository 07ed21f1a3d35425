// nibble/layout/gemm_layout.cuh — THE packed-weight layout the GEMM mainloops read. Defined once, here: the
// weight view (GemmWeights), its byte sizes and every address into it. The repack (GPU and CPU,
// layout/repack.cuh), the GEMM producer (gemm/producer.cuh), the warp-level building block
// (gemm/warp_mma.cuh) and users' own kernels (examples/custom_kernel.cu) compute addresses only through the
// functions below.
//
// The unit is a 16 (n) x 64 (k) "atom" of 1024 codes = 512 bytes. Within an atom each of the 32 lanes of a
// warp owns 16 contiguous bytes = four 32-bit words, so one 16-byte shared-memory load per lane fetches a
// whole atom for the warp, bank-conflict free. Word j (0..3) of lane l covers k-step j (k = 16j .. 16j+15)
// and holds exactly lane l's B fragments of mma.m16n8k16 for both 8-column halves of the atom:
//
//   lane l: g = l / 4 (fragment row group), t = l % 4 (thread in group)
//   value i of word j   n (within atom)   k (within atom)        mma operand
//   0, 1                g                 16j + 2t     + (0, 1)  b0 of n8-tile 0
//   2, 3                g                 16j + 2t + 8 + (0, 1)  b1 of n8-tile 0
//   4, 5                g + 8             16j + 2t     + (0, 1)  b0 of n8-tile 1
//   6, 7                g + 8             16j + 2t + 8 + (0, 1)  b1 of n8-tile 1
//
// so after thread/convert.cuh turns word j into pairs out[0..3] (out[p] = values 2p, 2p+1), the B fragment
// of n8-tile 0 is {out[0], out[1]} and that of n8-tile 1 is {out[2], out[3]}. Values sit in the word's
// nibbles in gemm_nibble_order(format): kInterleaved for s4/u4 (magic-number conversion), kSequential
// for nf4/fp4 (register table lookup).
//
// Atoms are stored n-block major, k fastest: atom (nb, kb) starts at byte (nb * k_atoms + kb) * 512, with
// n_pad = round_up(N, 16) and k_pad = round_up(K, 64); padding codes are 0 and padding scales 0.
//
// Scales (in the activation type T), u4 zero points (uint8) and affine u4 offsets (in T) are stored
// transposed, group-major: scale (group, n) at [group * n_pad + n], groups = k_pad / g for g in {32..256}
// (the groups past K are padding), and one group (g = k_pad) for per-channel. A CTA's scales for one group
// are then contiguous. Affine u4 (w = q * s + m) keeps its codes exactly like u4 (interleaved, raw codes
// 0..15, no zero point) and its offsets m in a third buffer of the scales' shape; the repack rounds s and m
// to T (padding 0), and the GEMM dequantizes w = fma(q, s, m) in T (one rounding to T per weight).
//
// Double-quantized scales kept compact (nf4 / fp4; repack_dq in layout/repack.cuh): instead of the scales the
// layout holds the second level of quant/double_quant.cuh as it is:
//   dq_codes  uint8 [groups][n_pad]   the 8-bit code of scale (group, n), transposed like the scales (padding 0)
//   dq_stats  fp32  [kDqStatsHeader + blocks]:  [0, 256) the dynamic map, [256] the offset, [257, 260) 0,
//             then absmax2 of the PLAIN order's 256-blocks: scale (group, n) belongs to block
//             (n * plain_groups + group) / 256, plain_groups = K / g (1 per-channel), blocks =
//             ceil(N * plain_groups / 256), exactly as bitsandbytes and the quantizer cut them.
// The GEMM decodes scale (group, n) = T(map[code] * absmax2 + offset) (fp32 multiply, fp32 add, one rounding
// to T: the repack's expansion, bit for bit) for n < N and group < plain_groups, and 0 in the padding. At g = 64
// that is 4 + 8 / 64 + 32 / (64 * 256) = 4.127 bits per weight instead of 4.25 with 16-bit scales.
#pragma once

#include "../format/format.cuh"
#include "../thread/pack.cuh"

namespace nibble::layout {

inline constexpr int kAtomN = 16;
inline constexpr int kAtomK = 64;
inline constexpr int kAtomBytes = kAtomN * kAtomK / 2;
inline constexpr int kLaneBytes = kAtomBytes / 32;
static_assert(kAtomBytes == 512 && kLaneBytes == 16, "one 16-byte load per lane per atom");

/// Nibble order of the words of `format` in the GEMM layout.
NIBBLE_HOST_DEVICE constexpr NibbleOrder gemm_nibble_order(Format f) {
  return is_codebook(f) ? NibbleOrder::kSequential : NibbleOrder::kInterleaved;
}

/// Position (n, k) within an atom of value `i` (0..7) of word `j` (0..3) of lane `lane`.
struct AtomCoord {
  int n;
  int k;
};
NIBBLE_HOST_DEVICE constexpr AtomCoord atom_coord(int lane, int j, int i) {
  const int g = lane / 4, t = lane % 4;
  return {g + 8 * (i / 4), 16 * j + 2 * t + 8 * ((i / 2) % 2) + (i % 2)};
}
static_assert(atom_coord(0, 0, 1).k == 1 && atom_coord(0, 0, 2).k == 8 && atom_coord(0, 0, 4).n == 8,
              "value pairs follow the mma.m16n8k16 B fragment");
static_assert(atom_coord(31, 3, 7).n == 15 && atom_coord(31, 3, 7).k == 63, "the last value of an atom");

/// Shape of the GEMM layout for an [N, K] weight quantized with `group_size`.
struct GemmShape {
  std::int64_t n, k;          ///< logical shape
  std::int64_t n_pad, k_pad;  ///< padded to whole atoms
  std::int64_t group;         ///< group length along K in this layout (k_pad for per-channel)
  std::int64_t groups;        ///< number of scale rows (k_pad / group)

  NIBBLE_HOST_DEVICE constexpr std::int64_t k_atoms() const { return k_pad / kAtomK; }
  NIBBLE_HOST_DEVICE constexpr std::int64_t code_bytes() const { return n_pad * k_pad / 2; }
  NIBBLE_HOST_DEVICE constexpr std::int64_t scale_count() const { return groups * n_pad; }
};

NIBBLE_HOST_DEVICE constexpr GemmShape make_gemm_shape(std::int64_t n, std::int64_t k, int group_size) {
  GemmShape s{};
  s.n = n;
  s.k = k;
  s.n_pad = round_up(n, kAtomN);
  s.k_pad = round_up(k, kAtomK);
  s.group = group_size == kPerChannel ? s.k_pad : std::int64_t(group_size);
  s.groups = s.k_pad / s.group;
  return s;
}

// ---- addressing: every offset into the three buffers ------------------------------------------------------

/// Byte offset of atom (nb, kb) (atom column nb = weight rows 16 nb .., atom row kb = k 64 kb ..) in the codes.
NIBBLE_HOST_DEVICE constexpr std::int64_t atom_offset(const GemmShape& s, std::int64_t nb, std::int64_t kb) {
  return (nb * s.k_atoms() + kb) * kAtomBytes;
}
/// Byte offset, within an atom, of lane `lane`'s 16-byte slice (its four words, one per k-step).
NIBBLE_HOST_DEVICE constexpr int lane_slice_offset(int lane) { return lane * kLaneBytes; }
/// Byte offset, within an atom, of word `j` (k-step j, 0..3) of lane `lane`'s slice.
NIBBLE_HOST_DEVICE constexpr int lane_word_offset(int lane, int j) { return lane_slice_offset(lane) + 4 * j; }
/// Words of one atom (32 lanes x 4): word w of an atom is word w % 4 of lane w / 4.
inline constexpr int kAtomWords = kAtomBytes / 4;
/// Element offset of the first scale (and zero point, offset) of group `group` (a row of n_pad values).
NIBBLE_HOST_DEVICE constexpr std::int64_t scale_row_offset(const GemmShape& s, std::int64_t group) {
  return group * s.n_pad;
}
/// Where weight (n, k) lives in the GEMM layout: byte offset of its code and the nibble in that byte.
struct CodeLocation {
  std::int64_t byte;
  int shift;  ///< 0 for the low nibble, 4 for the high one
};
NIBBLE_HOST_DEVICE constexpr CodeLocation code_location(const GemmShape& s, Format f, std::int64_t n, std::int64_t k) {
  const int dn = int(n % kAtomN), dk = int(k % kAtomK);
  // Invert atom_coord: n = g + 8 * (i / 4), k = 16 j + 2 t + 8 * ((i / 2) % 2) + i % 2.
  const int g = dn % 8, j = dk / 16, r = dk % 16;
  const int t = (r % 8) / 2;
  const int i = 4 * (dn / 8) + 2 * (r / 8) + (r % 2);
  const int lane = 4 * g + t;
  const int nib = nibble_position(gemm_nibble_order(f), i);
  return {atom_offset(s, n / kAtomN, k / kAtomK) + lane_word_offset(lane, j) + nib / 2, 4 * (nib % 2)};
}

// ---- compact double-quantized scales ----------------------------------------------------------------------
/// Scales per second-level block (quant/double_quant.cuh: kDoubleQuantBlock).
inline constexpr int kDqBlock = 256;
/// Floats of dq_stats before absmax2: the 256-entry map, the offset, 3 zeros (absmax2 starts 16-byte aligned).
inline constexpr int kDqStatsHeader = 260;
inline constexpr int kDqOffsetIndex = 256;
/// Groups per row of the plain layout (K / g; 1 for per-channel): the row length of the second level's order.
NIBBLE_HOST_DEVICE constexpr std::int64_t dq_plain_groups(const GemmShape& s, int group_size) {
  return group_size == kPerChannel ? 1 : s.k / group_size;
}
/// absmax2 values of an [N, K] weight: ceil(N * plain_groups / 256).
NIBBLE_HOST_DEVICE constexpr std::int64_t dq_blocks(const GemmShape& s, int group_size) {
  return (s.n * dq_plain_groups(s, group_size) + kDqBlock - 1) / kDqBlock;
}
/// The absmax2 block of scale (group, n) (n < N, group < plain_groups).
NIBBLE_HOST_DEVICE constexpr std::int64_t dq_block(std::int64_t n, std::int64_t group, std::int64_t plain_groups) {
  return (n * plain_groups + group) / kDqBlock;
}

/// Index of the scale / zero point / offset of weight (n, k) in the GEMM layout.
NIBBLE_HOST_DEVICE constexpr std::int64_t scale_index(const GemmShape& s, std::int64_t n, std::int64_t k) {
  return (k / s.group) * s.n_pad + n;
}

/// Which word of the layout the 32-bit word at index `word` of the codes is (the inverse of
/// (atom_offset + lane_word_offset) / 4): atom (nb, kb), lane, k-step j.
struct WordCoord {
  std::int64_t nb, kb;
  int lane, j;
};
NIBBLE_HOST_DEVICE constexpr WordCoord word_coord(const GemmShape& s, std::int64_t word) {
  const std::int64_t atom = word / kAtomWords;
  const int in_atom = int(word % kAtomWords);
  return {atom / s.k_atoms(), atom % s.k_atoms(), in_atom / 4, in_atom % 4};
}
static_assert(lane_word_offset(31, 3) + 4 == kAtomBytes && kAtomWords * 4 == kAtomBytes,
              "32 lanes x 4 words fill an atom");

}  // namespace nibble::layout

namespace nibble {

/// Non-owning view of a weight in the GEMM layout, repacked for one activation type (scales are of that
/// type). Sizes: codes shape().code_bytes(), scales, zeros and offsets shape().scale_count()
/// (gemm_weight_bytes).
struct GemmWeights {
  Format format = Format::kS4;
  int group_size = 128;            ///< 32, 64, 128, 256 or kPerChannel
  std::int64_t n = 0, k = 0;       ///< logical [N, K]
  DType scale_type = DType::kF16;  ///< the activation type this weight was repacked for
  const std::uint8_t* codes = nullptr;
  const void* scales = nullptr;         ///< [groups][n_pad] of scale_type
  const std::uint8_t* zeros = nullptr;  ///< [groups][n_pad], u4 only
  const void* offsets = nullptr;        ///< [groups][n_pad] of scale_type, affine u4 only
  /// Compact double-quantized scales (nf4 / fp4, layout::repack_dq): when set, `scales` is null and the GEMM
  /// decodes the scales from these (the layout comment above).
  const std::uint8_t* dq_codes = nullptr;  ///< [groups][n_pad]
  const float* dq_stats = nullptr;         ///< [kDqStatsHeader + dq_blocks]

  NIBBLE_HOST_DEVICE layout::GemmShape shape() const { return layout::make_gemm_shape(n, k, group_size); }
  NIBBLE_HOST_DEVICE bool dq_compact() const { return dq_codes != nullptr; }
};

/// Bytes of the GEMM-layout buffers for an [N, K] weight: codes, scales, u4 zeros, affine u4 offsets (0 for the
/// buffers a format does not have; all 0 for an invalid format).
struct GemmWeightBytes {
  std::size_t codes = 0, scales = 0, zeros = 0, offsets = 0;
  std::size_t dq_codes = 0, dq_stats = 0;  ///< compact double quantization only (scales is 0 then)
  std::size_t total() const { return codes + scales + zeros + offsets + dq_codes + dq_stats; }
};
/// `dq_compact`: the buffers of repack_dq (nf4 / fp4 only; all 0 for another format).
inline GemmWeightBytes gemm_weight_bytes(Format f, std::int64_t n, std::int64_t k, int group_size, DType act,
                                         bool dq_compact = false) {
  GemmWeightBytes b;
  if (!has_gemm_layout(f) || (dq_compact && !is_codebook(f))) return b;
  const layout::GemmShape s = layout::make_gemm_shape(n, k, group_size);
  b.codes = std::size_t(s.code_bytes());
  if (dq_compact) {
    b.dq_codes = std::size_t(s.scale_count());
    b.dq_stats = std::size_t(layout::kDqStatsHeader + layout::dq_blocks(s, group_size)) * sizeof(float);
    return b;
  }
  b.scales = std::size_t(s.scale_count()) * size_of(act);
  b.zeros = has_zero_point(f) ? std::size_t(s.scale_count()) : 0;
  b.offsets = has_offset(f) ? std::size_t(s.scale_count()) * size_of(act) : 0;
  return b;
}

}  // namespace nibble
