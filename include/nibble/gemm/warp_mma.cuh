// nibble/gemm/warp_mma.cuh — the warp-level building block of the GEMM, public for users' own kernels:
// one lane's packed word of a weight atom -> dequantized B fragments in registers -> mma.m16n8k16.
//
//   const auto ctx = DequantContext<F, T>::make();           // the nf4 / fp4 register codebook (or none)
//   const uint8_t* atom = w.codes + layout::atom_offset(w.shape(), nb, kb);   // a 16 x 64 weight atom
//   for (int j = 0; j < 4; ++j) {                            // its four k-steps of 16
//     ColumnPairQuant<T> q{scale_lo, scale_hi};              // scales of columns g, g + 8 (+ u4 zeros or
//                                                            //  affine u4 offsets)
//     uint32_t b[4];
//     dequant_fragments<T, F>(load_atom_word(atom, lane, j), q, ctx, b);  // 8 weights, scale applied
//     mma_atom_step<T>(acc, a_fragment_of_kstep_j, b);       // C[16 x 16] += A[16 x 16] W^T
//   }
// (examples/custom_kernel.cu is a whole kernel built this way.) load_atom_lane + atom_word read the lane's
// 16-byte slice at once instead.
//
// See layout/gemm_layout.cuh for which weight each value of the word is.
#pragma once

#include "../detail/ptx.cuh"
#include "../layout/gemm_layout.cuh"
#include "../thread/convert.cuh"

namespace nibble::gemm {

/// The scale (and u4 zero point, affine u4 offset) of the two weight columns a lane's word covers: column g
/// (values 0-3) and column g + 8 (values 4-7) of the atom.
template <class T>
struct ColumnPairQuant {
  T scale_lo;
  T scale_hi;
  int zero_lo = 0;
  int zero_hi = 0;
  T offset_lo{};  // zero (value-initialized) unless the format has offsets
  T offset_hi{};
};

/// Everything the dequantization of format F needs besides the word: the register codebook for nf4/fp4.
template <Format F, class T>
struct DequantContext {
  CodebookLut lut{};
  NIBBLE_DEVICE static DequantContext make() {
    DequantContext c;
    if constexpr (is_codebook(F)) c.lut = make_codebook_lut<F, T>();
    return c;
  }
};

/// The codebook of F (nf4 / fp4) as a byte -> pair table in shared memory, the faster alternative to the
/// register table for kernels that can spare smem_codebook_bytes(copies): entry b (a byte of a SEQUENTIAL
/// word, two codes, low nibble first) holds (book[b & 15], book[b >> 4]) as a T pair, so four 32-bit shared
/// loads decode a word (about a third of the integer work of the register table). The table is stored
/// `kCopies` times, interleaved word by word, and lane l reads copy l % kCopies: with 32 copies a warp's 32
/// random lookups never share a bank (one wavefront per load); with 16, two lanes share each bank pair
/// and nearly every load takes two wavefronts (measured on the H100: 3.7 M bank conflicts in 12 M
/// wavefronts at M = 1), for half the shared memory.
inline constexpr int kSmemCodebookCopies = 16;  ///< the default number of copies
NIBBLE_HOST_DEVICE constexpr int smem_codebook_bytes(int copies = kSmemCodebookCopies) { return 256 * 4 * copies; }
inline constexpr int kSmemCodebookBytes = smem_codebook_bytes();  // 16 KiB (32 KiB with 32 copies)

/// Writes the table of F in T, kCopies (16 or 32) times, at `table` (shared memory, 16-byte aligned,
/// smem_codebook_bytes(kCopies) bytes), cooperatively by `threads` threads; the caller synchronizes
/// (barrier) before any thread reads it.
template <Format F, class T, int kCopies = kSmemCodebookCopies>
NIBBLE_DEVICE void fill_smem_codebook(void* table, int tid, int threads) {
  static_assert(is_codebook(F), "fill_smem_codebook: F must be kNf4 or kFp4");
  static_assert(kCopies == 16 || kCopies == 32, "16 or 32 copies");
  // Entry b is what the register table makes of a word whose low byte is b: the two tables agree by
  // construction (and the register one has no dynamically indexed array, so nothing goes to local memory).
  // One thread per entry computes it once and writes its kCopies words with 16-byte stores, starting at
  // an entry-dependent store so that the eight threads of a quarter warp write different banks.
  constexpr int kStores = kCopies / 4;
  const CodebookLut lut = make_codebook_lut<F, T>();
  uint4* t = static_cast<uint4*>(table);
  for (int e = tid; e < 256; e += threads) {
    std::uint32_t pairs[4];
    codebook_x8_to_pairs(lut, std::uint32_t(e), pairs);
    const uint4 v = make_uint4(pairs[0], pairs[0], pairs[0], pairs[0]);
#pragma unroll
    for (int s = 0; s < kStores; ++s) t[e * kStores + (s + e) % kStores] = v;
  }
}

/// Decoding context of a codebook format that reads the shared-memory table (see fill_smem_codebook).
template <Format F, class T, int kCopies = kSmemCodebookCopies>
struct SmemCodebookContext {
  static_assert(kCopies == 16 || kCopies == 32, "16 or 32 copies");
  const std::uint32_t* lane_table;  ///< copy lane % kCopies of the table
  NIBBLE_DEVICE static SmemCodebookContext make(const void* table, int lane) {
    return {static_cast<const std::uint32_t*>(table) + lane % kCopies};
  }
};

/// Word `j` (0..3) of a lane's 16-byte atom slice.
NIBBLE_DEVICE std::uint32_t atom_word(const uint4& atom, int j) {
  return j == 0 ? atom.x : (j == 1 ? atom.y : (j == 2 ? atom.z : atom.w));
}

/// 16-byte load of this lane's slice of an atom (`atom` points at the atom's first byte; shared or global).
NIBBLE_DEVICE uint4 load_atom_lane(const void* atom, int lane) {
  return *reinterpret_cast<const uint4*>(static_cast<const unsigned char*>(atom) + layout::lane_slice_offset(lane));
}

/// Word `j` (0..3) of this lane's slice of an atom (shared or global), as a single 32-bit load.
NIBBLE_DEVICE std::uint32_t load_atom_word(const void* atom, int lane, int j) {
  return *reinterpret_cast<const std::uint32_t*>(static_cast<const unsigned char*>(atom) +
                                                 layout::lane_word_offset(lane, j));
}

/// Decodes one word (eight weights of format F, GEMM-layout order) into the two B fragments of an atom
/// k-step WITHOUT the scale: b[0], b[1] for n8-tile 0 (column g), b[2], b[3] for n8-tile 1 (column g + 8).
/// Values: the s4 integer, the u4 code minus q's zero points, the affine u4 code, or the codebook entry (all
/// exact in T but the codebook entries, rounded to T).
template <class T, Format F>
NIBBLE_DEVICE void decode_fragments(std::uint32_t word, const ColumnPairQuant<T>& q, const DequantContext<F, T>& ctx,
                                    std::uint32_t (&b)[4]) {
  if constexpr (F == Format::kS4) {
    s4x8_to_pairs<T>(word, b);
  } else if constexpr (F == Format::kU4) {
    u4x8_minus_zeros<T>(word, q.zero_lo, q.zero_hi, b);
  } else if constexpr (F == Format::kAffineU4) {
    u4x8_minus_zero<T>(word, 0, b);  // the raw codes: the offset comes with the scale (dequant_fragments)
  } else if constexpr (is_codebook(F)) {
    codebook_x8_to_pairs(ctx.lut, word, b);
  } else {
    static_assert(dependent_false<T>, "unknown format");
  }
}

/// decode_fragments for a codebook format through the shared-memory table: value pair j is entry byte j.
template <class T, Format F, int kCopies>
NIBBLE_DEVICE void decode_fragments(std::uint32_t word, const ColumnPairQuant<T>& /*q*/,
                                    const SmemCodebookContext<F, T, kCopies>& ctx, std::uint32_t (&b)[4]) {
  static_assert(is_codebook(F), "the shared-memory table holds nf4 / fp4 codebooks");
  // Entry byte j of copy c is word (byte_j * kCopies + c) of the table: byte_j * kCopies * 4 bytes past
  // lane_table, one shift and one and per byte.
  constexpr int kShift = kCopies == 16 ? 6 : 7;  // log2(kCopies * 4)
  static_assert((1 << kShift) == kCopies * 4, "byte offsets are byte << kShift");
  constexpr std::uint32_t kMask = 0xFFu << kShift;
  const unsigned char* t = reinterpret_cast<const unsigned char*>(ctx.lane_table);
  auto entry = [&](std::uint32_t offset) { return *reinterpret_cast<const std::uint32_t*>(t + (offset & kMask)); };
  b[0] = entry(word << kShift);
  b[1] = entry(word >> (8 - kShift));
  b[2] = entry(word >> (16 - kShift));
  b[3] = entry(word >> (24 - kShift));
}

/// Dequantizes one word into the two B fragments of an atom k-step: decode_fragments, then times the
/// column's scale in T arithmetic (one rounding to T per weight); affine u4: q * s + m in one fma (one
/// rounding too). Ctx: DequantContext<F, T>, or SmemCodebookContext<F, T, kCopies> for nf4 / fp4.
template <class T, Format F, class Ctx>
NIBBLE_DEVICE void dequant_fragments(std::uint32_t word, const ColumnPairQuant<T>& q, const Ctx& ctx,
                                     std::uint32_t (&b)[4]) {
  using V2 = vec2_t<T>;
  decode_fragments<T, F>(word, q, ctx, b);
  const V2 s_lo{q.scale_lo, q.scale_lo};
  const V2 s_hi{q.scale_hi, q.scale_hi};
  const V2 m_lo{q.offset_lo, q.offset_lo};  // (affine u4 only)
  const V2 m_hi{q.offset_hi, q.offset_hi};
#pragma unroll
  for (int p = 0; p < 4; ++p) {
    V2 v = *reinterpret_cast<V2*>(&b[p]);
    if constexpr (has_offset(F))
      v = __hfma2(v, p < 2 ? s_lo : s_hi, p < 2 ? m_lo : m_hi);
    else
      v = __hmul2(v, p < 2 ? s_lo : s_hi);
    b[p] = *reinterpret_cast<std::uint32_t*>(&v);
  }
}

/// acc[h] += A(16 x 16) * B_h(16 x 8) for the atom's two n8-tiles h = 0, 1; b from dequant_fragments.
template <class T>
NIBBLE_DEVICE void mma_atom_step(float (&acc)[2][4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[4]) {
  const std::uint32_t b0[2] = {b[0], b[1]};
  const std::uint32_t b1[2] = {b[2], b[3]};
  nibble::detail::mma_m16n8k16<T>(acc[0], a, b0);
  nibble::detail::mma_m16n8k16<T>(acc[1], a, b1);
}

}  // namespace nibble::gemm
