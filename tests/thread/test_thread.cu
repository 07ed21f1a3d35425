// tests/thread/test_thread.cu — thread/: nibble packing (pack.cuh) and the register conversions
// (convert.cuh) bit for bit, on the host and on the device. (Moved from tests/test_formats.cu.)
//
// CPU tests always run. GPU tests (Convert_*.Device*, CodebookLut_*.DeviceMatchesHost) start with
// NIBBLE_REQUIRE_GPU() and are skipped visibly without a device; they share one kernel run over
// {every byte replicated 4x} ∪ {65536 random words}, whose seed is printed.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nibble/config.cuh>
#include <nibble/detail/ptx.cuh>
#include <nibble/device.cuh>  // check_device
#include <nibble/format/codebook.cuh>
#include <nibble/format/format.cuh>
#include <nibble/status.cuh>
#include <nibble/thread/convert.cuh>
#include <nibble/thread/pack.cuh>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/format_oracles.hpp"
#include "common/gpu.hpp"
#include "common/names.hpp"
#include "common/random.hpp"

namespace {

using nibble::Format;
using nibble::NibbleOrder;
using std::uint16_t;
using std::uint32_t;

// ---- 1. pack_x2 / unpack_x2 -----------------------------------------------------------------------

template <Format F>
void check_pack_x2_all_bytes() {
  Reporter rep;
  const int lo = F == kS4 ? -8 : 0, hi = lo + 15;
  for (int b = 0; b < 256; ++b) {
    int v0 = 99, v1 = 99;
    nibble::unpack_x2<F>(std::uint8_t(b), v0, v1);
    NIBBLE_REPORT_UNLESS(rep, v0 == value_oracle(F, b & 0xF) && v1 == value_oracle(F, b >> 4),
                         "byte " << b << ": unpack_x2 gave (" << v0 << ", " << v1 << "), want ("
                                 << value_oracle(F, b & 0xF) << ", " << value_oracle(F, b >> 4) << ")");
    NIBBLE_REPORT_UNLESS(rep, v0 >= lo && v0 <= hi && v1 >= lo && v1 <= hi, "byte " << b << ": out of range");
    NIBBLE_REPORT_UNLESS(rep, nibble::pack_x2<F>(v0, v1) == b,
                         "byte " << b << " -> values -> byte " << int(nibble::pack_x2<F>(v0, v1)));
  }
}

template <Format F>
void check_pack_x2_all_value_pairs() {
  Reporter rep;
  const int lo = F == kS4 ? -8 : 0;
  for (int v0 = lo; v0 < lo + 16; ++v0)
    for (int v1 = lo; v1 < lo + 16; ++v1) {
      const int b = nibble::pack_x2<F>(v0, v1);
      NIBBLE_REPORT_UNLESS(rep, (b & 0xF) == (v0 & 0xF) && (b >> 4) == (v1 & 0xF),
                           "(" << v0 << ", " << v1 << ") -> byte " << b << ": v0 must be the low nibble");
      int u0 = 99, u1 = 99;
      nibble::unpack_x2<F>(std::uint8_t(b), u0, u1);
      NIBBLE_REPORT_UNLESS(rep, u0 == v0 && u1 == v1,
                           "(" << v0 << ", " << v1 << ") -> byte -> (" << u0 << ", " << u1 << ")");
    }
}

TEST(Pack_s4, AllBytesRoundTrip) { check_pack_x2_all_bytes<kS4>(); }
TEST(Pack_u4, AllBytesRoundTrip) { check_pack_x2_all_bytes<kU4>(); }
TEST(Pack_nf4, AllBytesRoundTrip) { check_pack_x2_all_bytes<kNf4>(); }
TEST(Pack_fp4, AllBytesRoundTrip) { check_pack_x2_all_bytes<kFp4>(); }
TEST(Pack_s4, AllValuePairsRoundTrip) { check_pack_x2_all_value_pairs<kS4>(); }
TEST(Pack_u4, AllValuePairsRoundTrip) { check_pack_x2_all_value_pairs<kU4>(); }
TEST(Pack_nf4, AllValuePairsRoundTrip) { check_pack_x2_all_value_pairs<kNf4>(); }
TEST(Pack_fp4, AllValuePairsRoundTrip) { check_pack_x2_all_value_pairs<kFp4>(); }

TEST(Pack, DocumentedExamplesAndTruncation) {
  EXPECT_EQ(nibble::pack_x2<kS4>(-1, 7), 0x7F);  // v0 = -1 (0xF) low, v1 = 7 high
  EXPECT_EQ(nibble::pack_x2<kS4>(-8, 0), 0x08);
  EXPECT_EQ(nibble::pack_x2<kU4>(0x13, -1), 0xF3);  // out of range: low 4 bits kept
  EXPECT_EQ(nibble::to_nibble<kS4>(-8), 0x8u);
  EXPECT_EQ(nibble::from_nibble<kS4>(0x18u), -8);  // only the low 4 bits are read
  EXPECT_EQ(nibble::from_nibble<kU4>(0xFFu), 15);
}

// ---- 2. pack_x8 / unpack_x8, interleave ---------------------------------------------------------

template <Format F, NibbleOrder O>
void check_pack_x8() {
  const std::vector<uint32_t> words = test_words_for_current_test();
  Reporter rep;
  for (const uint32_t w : words) {
    int v[8];
    for (int& x : v) x = 99;
    nibble::unpack_x8<F, O>(w, v);
    for (int i = 0; i < 8; ++i) {
      const int want = value_oracle(F, w >> (4 * nibble_position_oracle(O, i)));
      NIBBLE_REPORT_UNLESS(rep, v[i] == want, "word " << hex(w) << " value " << i << ": " << v[i] << ", want " << want);
    }
    NIBBLE_REPORT_UNLESS(rep, (nibble::pack_x8<F, O>(v) == w),
                         "word " << hex(w) << " -> values -> " << hex(nibble::pack_x8<F, O>(v)));
  }
  // values -> word -> values, on random in-range values.
  auto rng = nibble_test_rng();
  std::uniform_int_distribution<int> val(F == kS4 ? -8 : 0, F == kS4 ? 7 : 15);
  for (int n = 0; n < 100000; ++n) {
    int v[8], u[8];
    for (int& x : v) x = val(rng);
    const uint32_t w = nibble::pack_x8<F, O>(v);
    nibble::unpack_x8<F, O>(w, u);
    for (int i = 0; i < 8; ++i) {
      NIBBLE_REPORT_UNLESS(rep, u[i] == v[i],
                           "values -> " << hex(w) << " -> value " << i << " = " << u[i] << ", want " << v[i]);
      NIBBLE_REPORT_UNLESS(rep, ((w >> (4 * nibble_position_oracle(O, i))) & 0xF) == uint32_t(v[i] & 0xF),
                           "value " << i << " not at its nibble in " << hex(w));
    }
  }
}

TEST(PackX8_s4, Sequential) { check_pack_x8<kS4, kSeq>(); }
TEST(PackX8_s4, Interleaved) { check_pack_x8<kS4, kIlv>(); }
TEST(PackX8_u4, Sequential) { check_pack_x8<kU4, kSeq>(); }
TEST(PackX8_u4, Interleaved) { check_pack_x8<kU4, kIlv>(); }
TEST(PackX8_nf4, Sequential) { check_pack_x8<kNf4, kSeq>(); }
TEST(PackX8_nf4, Interleaved) { check_pack_x8<kNf4, kIlv>(); }
TEST(PackX8_fp4, Sequential) { check_pack_x8<kFp4, kSeq>(); }
TEST(PackX8_fp4, Interleaved) { check_pack_x8<kFp4, kIlv>(); }

TEST(Interleave, NibblePositionMatchesDiagram) {
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(nibble::nibble_position(kSeq, i), i) << "value " << i;
    EXPECT_EQ(nibble::nibble_position(kIlv, i), kInterleavedNibbleOfValue[i]) << "value " << i;
  }
  EXPECT_EQ(nibble::interleave_x8(0x76543210u), 0x75316420u);
  EXPECT_EQ(nibble::deinterleave_x8(0x75316420u), 0x76543210u);
}

TEST(Interleave, InverseOfEachOtherAndMovesValueToItsNibble) {
  const std::vector<uint32_t> words = test_words_for_current_test();
  Reporter rep;
  for (const uint32_t w : words) {
    const uint32_t il = nibble::interleave_x8(w);
    NIBBLE_REPORT_UNLESS(rep, nibble::deinterleave_x8(il) == w,
                         hex(w) << ": deinterleave(interleave) = " << hex(nibble::deinterleave_x8(il)));
    NIBBLE_REPORT_UNLESS(rep, nibble::interleave_x8(nibble::deinterleave_x8(w)) == w,
                         hex(w) << ": interleave(deinterleave) != identity");
    for (int i = 0; i < 8; ++i)
      NIBBLE_REPORT_UNLESS(rep, ((il >> (4 * kInterleavedNibbleOfValue[i])) & 0xF) == ((w >> (4 * i)) & 0xF),
                           hex(w) << " -> " << hex(il) << ": value " << i << " misplaced");
    // The properties convert.cuh relies on: w & 0x000F000F = (v0, v1) in the two 16-bit halves,
    // (w & 0x00F000F0) >> 4 = (v2, v3), and w >> 8 repeats the pattern for (v4, v5), (v6, v7).
    const auto v = [&](int i) { return (w >> (4 * i)) & 0xFu; };
    NIBBLE_REPORT_UNLESS(rep, (il & 0x000F000Fu) == (v(0) | v(1) << 16),
                         hex(w) << ": (v0, v1) not in the low nibbles of the halves");
    NIBBLE_REPORT_UNLESS(rep, ((il & 0x00F000F0u) >> 4) == (v(2) | v(3) << 16), hex(w) << ": (v2, v3)");
    NIBBLE_REPORT_UNLESS(rep, ((il >> 8) & 0x000F000Fu) == (v(4) | v(5) << 16), hex(w) << ": (v4, v5)");
    NIBBLE_REPORT_UNLESS(rep, (((il >> 8) & 0x00F000F0u) >> 4) == (v(6) | v(7) << 16), hex(w) << ": (v6, v7)");
    // interleave_x8 is "sequential values, re-packed interleaved", whatever the format.
    int vals[8];
    nibble::unpack_x8<kU4, kSeq>(w, vals);
    NIBBLE_REPORT_UNLESS(rep, (nibble::pack_x8<kU4, kIlv>(vals) == il),
                         hex(w) << ": interleave_x8 != pack_x8<kInterleaved>(unpack_x8<kSequential>)");
  }
}

// ---- 5. s4x8_to_s8x8 on the host ------------------------------------------------------------------

TEST(Convert_s4_s8, HostMatchesUnpackAllBytes) {
  const std::vector<uint32_t> words = test_words_for_current_test();
  Reporter rep;
  for (const uint32_t w : words) {
    uint32_t out[2] = {0xA5A5A5A5u, 0xA5A5A5A5u};
    nibble::s4x8_to_s8x8(w, out);
    int v[8];
    nibble::unpack_x8<kS4, kSeq>(w, v);
    for (int i = 0; i < 8; ++i) {
      const int got = std::int8_t((out[i / 4] >> (8 * (i % 4))) & 0xFFu);
      NIBBLE_REPORT_UNLESS(rep, got == v[i] && v[i] == value_oracle(kS4, w >> (4 * i)),
                           "word " << hex(w) << " value " << i << ": s8 " << got << ", want " << v[i]);
    }
  }
}

// ---- 6. reference_value ---------------------------------------------------------------------------

template <Format F, class T>
void check_reference_value() {
  const std::vector<uint32_t> words = test_words_for_current_test(20000);
  Reporter rep;
  const int zero_count = F == kU4 ? 16 : 1;
  for (const uint32_t w : words) {
    for (int zero = 0; zero < zero_count; ++zero) {
      for (int i = 0; i < 8; ++i) {
        float want;
        if constexpr (F == kS4 || F == kU4) {
          int v[8];
          nibble::unpack_x8<F, kIlv>(w, v);  // the integer conversions take interleaved words
          want = float(v[i] - (F == kU4 ? zero : 0));
        } else {
          int c[8];
          nibble::unpack_x8<F, kSeq>(w, c);  // the codebook conversions take sequential words
          const float entry = (F == kNf4 ? kBnbNf4 : kBnbFp4)[c[i]];
          want = std::is_same_v<T, float> ? entry : value16<T>(bits16<T>(entry));
        }
        const float got = F == kU4 ? nibble::reference_value<F, T>(w, i, zero) : nibble::reference_value<F, T>(w, i);
        NIBBLE_REPORT_UNLESS(
            rep, float_bits(got) == float_bits(want),
            "word " << hex(w) << " value " << i << " zero " << zero << ": " << got << ", want " << want);
      }
    }
  }
}

TEST(ReferenceValue_s4, MatchesUnpack) {
  check_reference_value<kS4, __half>();
  check_reference_value<kS4, __nv_bfloat16>();
}
TEST(ReferenceValue_u4, MatchesUnpackAllZeros) {
  check_reference_value<kU4, __half>();
  check_reference_value<kU4, __nv_bfloat16>();
}
TEST(ReferenceValue_nf4, MatchesCodebookRounded) {
  check_reference_value<kNf4, __half>();
  check_reference_value<kNf4, __nv_bfloat16>();
  check_reference_value<kNf4, float>();
}
TEST(ReferenceValue_fp4, MatchesCodebookRounded) {
  check_reference_value<kFp4, __half>();
  check_reference_value<kFp4, __nv_bfloat16>();
  check_reference_value<kFp4, float>();
}

// ---- 8. magic constants ---------------------------------------------------------------------------

TEST(MagicConstants, F16AndBf16BitsMeanWhatTheySay) {
  EXPECT_EQ(f16_value(nibble::kF16Exp1024), 1024.0f);
  EXPECT_EQ(f16_value(nibble::kF16Exp64), 64.0f);
  EXPECT_EQ(f16_value(nibble::kF16OneSixteenth), 0.0625f);
  EXPECT_EQ(bf16_value(nibble::kBF16Exp128), 128.0f);
  EXPECT_EQ(nibble::splat2(0x1234u), 0x12341234u);
  EXPECT_EQ(nibble::splat2(0xFFFFu), 0xFFFFFFFFu);
  EXPECT_EQ(nibble::kLowNibblePair, 0x000F000Fu);
  EXPECT_EQ(nibble::kHighNibblePair, 0x00F000F0u);
  for (unsigned u = 0; u < 16; ++u) {
    // The identities convert.cuh is built on, for every nibble u and every zero point z = u.
    EXPECT_EQ(f16_value(uint16_t(nibble::kF16Exp1024 | u)), 1024.0f + u);
    EXPECT_EQ(f16_value(uint16_t(nibble::kF16Exp1024 | (u << 4))), 1024.0f + 16.0f * u);
    EXPECT_EQ(f16_value(uint16_t(nibble::kF16Exp1024 + u)), 1024.0f + u) << "sub_lo for zero " << u;
    EXPECT_EQ(f16_value(uint16_t(0x8000u | (nibble::kF16Exp64 + 16u * u))), -(64.0f + u)) << "sub_hi for zero " << u;
    EXPECT_EQ((1024.0f + 16.0f * u) * f16_value(nibble::kF16OneSixteenth), 64.0f + u);
    EXPECT_EQ(bf16_value(uint16_t(nibble::kBF16Exp128 | u)), 128.0f + u);
    EXPECT_EQ(bf16_value(uint16_t(nibble::kBF16Exp128 + u)), 128.0f + u) << "bf16 sub for zero " << u;
    // s4 -> u4 by flipping bit 3: s + 8.
    EXPECT_EQ(int((u ^ nibble::kS4SignFlip) & 0xFu), value_oracle(kS4, u) + 8) << "nibble " << u;
  }
  // lop3's truth table: bit (a << 2 | b << 1 | c) of the LUT is f(a, b, c).
  for (int a = 0; a < 2; ++a)
    for (int b = 0; b < 2; ++b)
      for (int c = 0; c < 2; ++c)
        EXPECT_EQ((nibble::detail::kLutAndOr >> (a << 2 | b << 1 | c)) & 1, (a & b) | c) << a << b << c;
}

// ---- codebook LUT layout (host) -------------------------------------------------------------------

template <Format F, class T>
void check_host_lut_layout() {
  const nibble::CodebookLut lut = nibble::make_codebook_lut<F, T>();
  for (int i = 0; i < 16; ++i) {
    const uint32_t lo = (lut.lo[i / 4] >> (8 * (i % 4))) & 0xFFu, hi = (lut.hi[i / 4] >> (8 * (i % 4))) & 0xFFu;
    const float entry = (F == kNf4 ? kBnbNf4 : kBnbFp4)[i];
    EXPECT_EQ(lo | hi << 8, bits16<T>(entry)) << nibble::to_string(F) << "/" << type_name<T>() << " entry " << i;
  }
}
TEST(CodebookLut_nf4_f16, HostLayoutMatchesCodebook) { check_host_lut_layout<kNf4, __half>(); }
TEST(CodebookLut_nf4_bf16, HostLayoutMatchesCodebook) { check_host_lut_layout<kNf4, __nv_bfloat16>(); }
TEST(CodebookLut_fp4_f16, HostLayoutMatchesCodebook) { check_host_lut_layout<kFp4, __half>(); }
TEST(CodebookLut_fp4_bf16, HostLayoutMatchesCodebook) { check_host_lut_layout<kFp4, __nv_bfloat16>(); }

// ---- 9, 10. device conversions --------------------------------------------------------------------

// Output slots of the one conversion kernel; each slot holds 4 words per input word.
enum Slot : int {
  kSlotS4F16 = 0,
  kSlotS4Bf16 = 1,
  kSlotU4F16 = 2,                      // + zero, zero = 0..15
  kSlotU4Bf16 = kSlotU4F16 + 16,       // + zero
  kSlotU4SplitF16 = kSlotU4Bf16 + 16,  // + z: zero_lo = z (values 0-3), zero_hi = 15 - z (values 4-7)
  kSlotU4SplitBf16 = kSlotU4SplitF16 + 16,
  kSlotNf4F16 = kSlotU4SplitBf16 + 16,
  kSlotNf4Bf16,
  kSlotFp4F16,
  kSlotFp4Bf16,
  kSlotS8,  // words 0, 1 written; 2, 3 must keep the poison
  kSlotCount
};
constexpr int kZeroCount = 16;
constexpr uint32_t kPoison = 0xA5A5A5A5u;  // never a valid output: f16 -0.0222, bf16 -2.9e-16, s8 -91

__device__ void store_slot(uint32_t* out, int slot, int n, int idx, const uint32_t (&r)[4]) {
  uint32_t* p = out + (std::size_t(slot) * n + idx) * 4;
  p[0] = r[0], p[1] = r[1], p[2] = r[2], p[3] = r[3];
}

__global__ void convert_all_kernel(const uint32_t* __restrict__ words, int n, int zero_count,
                                   uint32_t* __restrict__ out) {
  const int idx = blockIdx.x * blockDim.x + threadIdx.x;
  if (idx >= n) return;
  const uint32_t w = words[idx];
  uint32_t r[4];
  nibble::s4x8_to_pairs<__half>(w, r);
  store_slot(out, kSlotS4F16, n, idx, r);
  nibble::s4x8_to_pairs<__nv_bfloat16>(w, r);
  store_slot(out, kSlotS4Bf16, n, idx, r);
#pragma unroll 1
  for (int z = 0; z < zero_count; ++z) {  // zero is a runtime value, as in a GEMM
    nibble::u4x8_minus_zero<__half>(w, z, r);
    store_slot(out, kSlotU4F16 + z, n, idx, r);
    nibble::u4x8_minus_zero<__nv_bfloat16>(w, z, r);
    store_slot(out, kSlotU4Bf16 + z, n, idx, r);
    nibble::u4x8_minus_zeros<__half>(w, z, kZeroCount - 1 - z, r);
    store_slot(out, kSlotU4SplitF16 + z, n, idx, r);
    nibble::u4x8_minus_zeros<__nv_bfloat16>(w, z, kZeroCount - 1 - z, r);
    store_slot(out, kSlotU4SplitBf16 + z, n, idx, r);
  }
  const nibble::CodebookLut nf4_f16 = nibble::make_codebook_lut<kNf4, __half>();
  const nibble::CodebookLut nf4_bf16 = nibble::make_codebook_lut<kNf4, __nv_bfloat16>();
  const nibble::CodebookLut fp4_f16 = nibble::make_codebook_lut<kFp4, __half>();
  const nibble::CodebookLut fp4_bf16 = nibble::make_codebook_lut<kFp4, __nv_bfloat16>();
  nibble::codebook_x8_to_pairs(nf4_f16, w, r);
  store_slot(out, kSlotNf4F16, n, idx, r);
  nibble::codebook_x8_to_pairs(nf4_bf16, w, r);
  store_slot(out, kSlotNf4Bf16, n, idx, r);
  nibble::codebook_x8_to_pairs(fp4_f16, w, r);
  store_slot(out, kSlotFp4F16, n, idx, r);
  nibble::codebook_x8_to_pairs(fp4_bf16, w, r);
  store_slot(out, kSlotFp4Bf16, n, idx, r);
  uint32_t s8[2];
  nibble::s4x8_to_s8x8(w, s8);
  uint32_t* p = out + (std::size_t(kSlotS8) * n + idx) * 4;
  p[0] = s8[0], p[1] = s8[1];
}

__device__ void store_lut(uint32_t* out, const nibble::CodebookLut& lut) {
  for (int i = 0; i < 4; ++i) out[i] = lut.lo[i], out[4 + i] = lut.hi[i];
}
__global__ void codebook_lut_kernel(uint32_t* out) {  // 4 tables x 8 words: nf4/f16, nf4/bf16, fp4/f16, fp4/bf16
  store_lut(out + 0, nibble::make_codebook_lut<kNf4, __half>());
  store_lut(out + 8, nibble::make_codebook_lut<kNf4, __nv_bfloat16>());
  store_lut(out + 16, nibble::make_codebook_lut<kFp4, __half>());
  store_lut(out + 24, nibble::make_codebook_lut<kFp4, __nv_bfloat16>());
}

struct DeviceRun {
  std::string error;  // empty when every CUDA call succeeded
  std::vector<uint32_t> words;
  std::vector<uint32_t> out;   // [kSlotCount][words.size()][4]
  std::vector<uint32_t> luts;  // 32 words
  uint32_t at(int slot, std::size_t word, int j) const { return out[(slot * words.size() + word) * 4 + j]; }
};

#define NIBBLE_RUN_TRY(expr)                                                                       \
  do {                                                                                             \
    const cudaError_t e_ = (expr);                                                                 \
    if (e_ != cudaSuccess) {                                                                       \
      run.error = std::string(#expr) + ": " + cudaGetErrorName(e_) + " " + cudaGetErrorString(e_); \
      return run;                                                                                  \
    }                                                                                              \
  } while (0)

DeviceRun run_device_once() {
  DeviceRun run;
  if (nibble::check_device() != nibble::Status::kSuccess) {
    run.error = "check_device(): no device of compute capability >= 8.0";
    return run;
  }
  auto rng = nibble_test_rng(nibble_test_hash("test_formats.device_words"));
  run.words = test_words(rng, 65536, "device conversion words");
  const int n = int(run.words.size());
  const std::size_t out_words = std::size_t(kSlotCount) * n * 4;
  uint32_t *d_words = nullptr, *d_out = nullptr, *d_luts = nullptr;
  struct Free {
    uint32_t** p[3];
    ~Free() {
      for (auto q : p) cudaFree(*q);
    }
  } guard{{&d_words, &d_out, &d_luts}};
  NIBBLE_RUN_TRY(cudaMalloc(&d_words, n * sizeof(uint32_t)));
  NIBBLE_RUN_TRY(cudaMalloc(&d_out, out_words * sizeof(uint32_t)));
  NIBBLE_RUN_TRY(cudaMalloc(&d_luts, 32 * sizeof(uint32_t)));
  NIBBLE_RUN_TRY(cudaMemcpy(d_words, run.words.data(), n * sizeof(uint32_t), cudaMemcpyHostToDevice));
  NIBBLE_RUN_TRY(cudaMemset(d_out, 0xA5, out_words * sizeof(uint32_t)));  // poison
  NIBBLE_RUN_TRY(cudaMemset(d_luts, 0xA5, 32 * sizeof(uint32_t)));
  convert_all_kernel<<<(n + 127) / 128, 128>>>(d_words, n, kZeroCount, d_out);
  NIBBLE_RUN_TRY(cudaGetLastError());
  codebook_lut_kernel<<<1, 1>>>(d_luts);
  NIBBLE_RUN_TRY(cudaGetLastError());
  NIBBLE_RUN_TRY(cudaDeviceSynchronize());
  run.out.assign(out_words, 0);
  run.luts.assign(32, 0);
  NIBBLE_RUN_TRY(cudaMemcpy(run.out.data(), d_out, out_words * sizeof(uint32_t), cudaMemcpyDeviceToHost));
  NIBBLE_RUN_TRY(cudaMemcpy(run.luts.data(), d_luts, 32 * sizeof(uint32_t), cudaMemcpyDeviceToHost));
  return run;
}
#undef NIBBLE_RUN_TRY

const DeviceRun& device_run() {
  static const DeviceRun run = run_device_once();
  return run;
}

// Compares slot `slot` against pairs built on the host: want(w, k) is value k of word w as T's bits.
template <class T, class Want>
void compare_pairs(const DeviceRun& run, int slot, const char* what, Want want) {
  Reporter rep;
  for (std::size_t n = 0; n < run.words.size(); ++n) {
    const uint32_t w = run.words[n];
    for (int j = 0; j < 4; ++j) {
      const uint16_t lo = want(w, 2 * j), hi = want(w, 2 * j + 1);
      const uint32_t expect = uint32_t(lo) | uint32_t(hi) << 16, got = run.at(slot, n, j);
      NIBBLE_REPORT_UNLESS(rep, got == expect,
                           what << " word " << hex(w) << " out[" << j << "] = " << hex(got) << " ("
                                << value16<T>(uint16_t(got)) << ", " << value16<T>(uint16_t(got >> 16)) << "), want "
                                << hex(expect) << " (" << value16<T>(lo) << ", " << value16<T>(hi) << ")");
    }
  }
}

#define NIBBLE_DEVICE_RUN_OR_FAIL(run) \
  NIBBLE_REQUIRE_GPU();                \
  const DeviceRun& run = device_run(); \
  ASSERT_TRUE(run.error.empty()) << run.error

template <class T>
void check_device_s4(const DeviceRun& run, int slot) {
  compare_pairs<T>(run, slot, type_name<T>(), [](uint32_t w, int k) {
    int v[8];
    nibble::unpack_x8<kS4, kIlv>(w, v);
    return bits16<T>(float(v[k]));
  });
}
// split = false: one zero z for all values; split = true: zero_lo = z for values 0-3, zero_hi = 15 - z
// for values 4-7 (u4x8_minus_zeros).
template <class T>
void check_device_u4(const DeviceRun& run, int first_slot, bool split) {
  for (int z = 0; z < kZeroCount; ++z) {
    const int zero_lo = z, zero_hi = split ? kZeroCount - 1 - z : z;
    SCOPED_TRACE(::testing::Message() << "zero_lo = " << zero_lo << ", zero_hi = " << zero_hi);
    compare_pairs<T>(run, first_slot + z, type_name<T>(), [=](uint32_t w, int k) {
      int v[8];
      nibble::unpack_x8<kU4, kIlv>(w, v);
      return bits16<T>(float(v[k] - (k < 4 ? zero_lo : zero_hi)));
    });
  }
}
template <class T>
void check_device_codebook(const DeviceRun& run, int slot, const float (&table)[16]) {
  compare_pairs<T>(run, slot, type_name<T>(), [&table](uint32_t w, int k) {
    int c[8];
    nibble::unpack_x8<kU4, kSeq>(w, c);
    return bits16<T>(table[c[k]]);
  });
}

TEST(Convert_s4_f16, DeviceMatchesHostAllBytes) {
  NIBBLE_DEVICE_RUN_OR_FAIL(run);
  check_device_s4<__half>(run, kSlotS4F16);
}
TEST(Convert_s4_bf16, DeviceMatchesHostAllBytes) {
  NIBBLE_DEVICE_RUN_OR_FAIL(run);
  check_device_s4<__nv_bfloat16>(run, kSlotS4Bf16);
}
TEST(Convert_u4_f16, DeviceMatchesHostAllBytesAllZeros) {
  NIBBLE_DEVICE_RUN_OR_FAIL(run);
  check_device_u4<__half>(run, kSlotU4F16, false);
}
TEST(Convert_u4_bf16, DeviceMatchesHostAllBytesAllZeros) {
  NIBBLE_DEVICE_RUN_OR_FAIL(run);
  check_device_u4<__nv_bfloat16>(run, kSlotU4Bf16, false);
}
TEST(Convert_u4_f16, DeviceSplitZerosMatchHost) {
  NIBBLE_DEVICE_RUN_OR_FAIL(run);
  check_device_u4<__half>(run, kSlotU4SplitF16, true);
}
TEST(Convert_u4_bf16, DeviceSplitZerosMatchHost) {
  NIBBLE_DEVICE_RUN_OR_FAIL(run);
  check_device_u4<__nv_bfloat16>(run, kSlotU4SplitBf16, true);
}
TEST(Convert_nf4_f16, DeviceMatchesHostAllBytes) {
  NIBBLE_DEVICE_RUN_OR_FAIL(run);
  check_device_codebook<__half>(run, kSlotNf4F16, kBnbNf4);
}
TEST(Convert_nf4_bf16, DeviceMatchesHostAllBytes) {
  NIBBLE_DEVICE_RUN_OR_FAIL(run);
  check_device_codebook<__nv_bfloat16>(run, kSlotNf4Bf16, kBnbNf4);
}
TEST(Convert_fp4_f16, DeviceMatchesHostAllBytes) {
  NIBBLE_DEVICE_RUN_OR_FAIL(run);
  check_device_codebook<__half>(run, kSlotFp4F16, kBnbFp4);
}
TEST(Convert_fp4_bf16, DeviceMatchesHostAllBytes) {
  NIBBLE_DEVICE_RUN_OR_FAIL(run);
  check_device_codebook<__nv_bfloat16>(run, kSlotFp4Bf16, kBnbFp4);
}

TEST(Convert_s4_s8, DeviceMatchesHostAllBytes) {
  NIBBLE_DEVICE_RUN_OR_FAIL(run);
  Reporter rep;
  for (std::size_t n = 0; n < run.words.size(); ++n) {
    const uint32_t w = run.words[n];
    uint32_t host[2] = {kPoison, kPoison};
    nibble::s4x8_to_s8x8(w, host);
    int v[8];
    nibble::unpack_x8<kS4, kSeq>(w, v);
    for (int i = 0; i < 8; ++i) {
      const int got = std::int8_t((run.at(kSlotS8, n, i / 4) >> (8 * (i % 4))) & 0xFFu);
      NIBBLE_REPORT_UNLESS(rep, got == v[i],
                           "word " << hex(w) << " value " << i << ": device s8 " << got << ", want " << v[i]);
    }
    NIBBLE_REPORT_UNLESS(rep, run.at(kSlotS8, n, 0) == host[0] && run.at(kSlotS8, n, 1) == host[1],
                         "word " << hex(w) << ": device " << hex(run.at(kSlotS8, n, 0)) << " "
                                 << hex(run.at(kSlotS8, n, 1)) << " != host " << hex(host[0]) << " " << hex(host[1]));
    NIBBLE_REPORT_UNLESS(rep, run.at(kSlotS8, n, 2) == kPoison && run.at(kSlotS8, n, 3) == kPoison,
                         "word " << hex(w) << ": the kernel wrote past the two s8 words");
  }
}

template <Format F, class T>
void check_device_lut(const DeviceRun& run, int offset) {
  const nibble::CodebookLut host = nibble::make_codebook_lut<F, T>();
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(run.luts[offset + i], host.lo[i])
        << "lo[" << i << "]: device " << hex(run.luts[offset + i]) << " host " << hex(host.lo[i]);
    EXPECT_EQ(run.luts[offset + 4 + i], host.hi[i])
        << "hi[" << i << "]: device " << hex(run.luts[offset + 4 + i]) << " host " << hex(host.hi[i]);
  }
}
TEST(CodebookLut_nf4_f16, DeviceMatchesHost) {
  NIBBLE_DEVICE_RUN_OR_FAIL(run);
  check_device_lut<kNf4, __half>(run, 0);
}
TEST(CodebookLut_nf4_bf16, DeviceMatchesHost) {
  NIBBLE_DEVICE_RUN_OR_FAIL(run);
  check_device_lut<kNf4, __nv_bfloat16>(run, 8);
}
TEST(CodebookLut_fp4_f16, DeviceMatchesHost) {
  NIBBLE_DEVICE_RUN_OR_FAIL(run);
  check_device_lut<kFp4, __half>(run, 16);
}
TEST(CodebookLut_fp4_bf16, DeviceMatchesHost) {
  NIBBLE_DEVICE_RUN_OR_FAIL(run);
  check_device_lut<kFp4, __nv_bfloat16>(run, 24);
}

}  // namespace
