// tests/test_formats.cu — the 4-bit formats bit for bit: nibble packing, the NF4 / FP4 codebooks and
// encoders, and the register conversions of thread/convert.cuh on the device.
//
// Oracles are independent of the headers under test: the codebooks are bitsandbytes' literals (copied
// from bitsandbytes' csrc/kernels.cu dDequantizeNF4 / dDequantizeFP4Tree / dQuantizeNF4 / dQuantizeFP4 and
// bitsandbytes/functional.py get_4bit_type), the interleaved nibble order is the diagram of
// thread/pack.cuh written out by hand, and host conversions use cuda_fp16.h / cuda_bf16.h directly.
//
// CPU tests always run. GPU tests (Convert_*.Device*, CodebookLut_*.DeviceMatchesHost) start with
// NIBBLE_REQUIRE_GPU() and are skipped visibly without a device; they share one kernel run over
// {every byte replicated 4x} ∪ {65536 random words}, whose seed is printed.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <nibble/config.cuh>
#include <nibble/detail/ptx.cuh>
#include <nibble/format/codebook.cuh>
#include <nibble/format/format.cuh>
#include <nibble/status.cuh>
#include <nibble/thread/convert.cuh>
#include <nibble/thread/pack.cuh>

#include "common/gpu.hpp"
#include "common/names.hpp"
#include "common/random.hpp"

namespace {

using nibble::Format;
using nibble::NibbleOrder;
using std::uint16_t;
using std::uint32_t;

constexpr NibbleOrder kSeq = NibbleOrder::kSequential;
constexpr NibbleOrder kIlv = NibbleOrder::kInterleaved;

// ---- independent oracles --------------------------------------------------------------------------

// bitsandbytes csrc/kernels.cu dDequantizeNF4 (same list as functional.py get_4bit_type("nf4")).
constexpr float kBnbNf4[16] = {
    -1.0f,                 -0.6961928009986877f,  -0.5250730514526367f,  -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f,  0.16093020141124725f,  0.24611230194568634f,  0.33791524171829224f,
    0.44070982933044434f,  0.5626170039176941f,   0.7229568362236023f,   1.0f};
// bitsandbytes csrc/kernels.cu dDequantizeFP4Tree: magnitude literal * sign (code 8 gives 0 * -1 = -0).
constexpr float kBnbFp4[16] = {
    0.00000000f,  5.208333333e-03f,  0.66666667f,  1.00000000f,  0.33333333f,  0.50000000f,
    0.16666667f,  0.25000000f,       -0.00000000f, -5.208333333e-03f, -0.66666667f, -1.00000000f,
    -0.33333333f, -0.50000000f,      -0.16666667f, -0.25000000f};
// bitsandbytes functional.py get_4bit_type("fp4") before its division by the largest magnitude, 12.
constexpr float kBnbFp4Unnormalized[16] = {0, 0.0625f, 8, 12, 4, 6, 2, 3,
                                           -0.0f, -0.0625f, -8, -12, -4, -6, -2, -3};
// bitsandbytes csrc/kernels.cu dQuantizeNF4: `x > t` decides between code i (below) and i + 1 (above).
constexpr float kBnbNf4Threshold[15] = {
    -0.8480964004993439f,  -0.6106329262256622f, -0.4599952697753906f,   -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f,   0.2035212516784668f,   0.2920137718319893f,    0.3893125355243683f,
    0.5016634166240692f,   0.6427869200706482f,   0.8614784181118011f};
// bitsandbytes csrc/kernels.cu dQuantizeFP4: |x| > t decides between magnitude code below / above.
struct Fp4Split {
  float t;
  unsigned below, above;
};
constexpr Fp4Split kBnbFp4Split[7] = {{0.00260417f, 0b000, 0b001}, {0.0859375f, 0b001, 0b110},
                                      {0.20833333f, 0b110, 0b111}, {0.29166667f, 0b111, 0b100},
                                      {0.4166667f, 0b100, 0b101},  {0.583333f, 0b101, 0b010},
                                      {0.8333333f, 0b010, 0b011}};

// thread/pack.cuh's diagram, written out: nibble 7..0 hold values 7 5 3 1 6 4 2 0.
constexpr int kInterleavedNibbleOfValue[8] = {0, 4, 1, 5, 2, 6, 3, 7};

int nibble_position_oracle(NibbleOrder order, int i) {
  return order == kSeq ? i : kInterleavedNibbleOfValue[i];
}
// The value a 4-bit pattern stands for: two's complement for s4, the plain code otherwise.
int value_oracle(Format f, unsigned nib) {
  nib &= 0xFu;
  return (f == kS4 && nib >= 8) ? int(nib) - 16 : int(nib);
}
uint32_t float_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
}
// Host round-to-nearest-even conversions straight from cuda_fp16.h / cuda_bf16.h.
uint16_t f16_bits(float x) { return __half_raw(__float2half_rn(x)).x; }
uint16_t bf16_bits(float x) { return __nv_bfloat16_raw(__float2bfloat16_rn(x)).x; }
float f16_value(uint16_t bits) {
  __half_raw r;
  r.x = bits;
  return __half2float(__half(r));
}
float bf16_value(uint16_t bits) {
  __nv_bfloat16_raw r;
  r.x = bits;
  return __bfloat162float(__nv_bfloat16(r));
}
template <class T>
uint16_t bits16(float x) {
  return std::is_same_v<T, __half> ? f16_bits(x) : bf16_bits(x);
}
template <class T>
float value16(uint16_t bits) {
  return std::is_same_v<T, __half> ? f16_value(bits) : bf16_value(bits);
}
template <class T>
const char* type_name() {
  return std::is_same_v<T, __half> ? "f16" : std::is_same_v<T, __nv_bfloat16> ? "bf16" : "f32";
}

const char* hex(uint32_t x) {
  static thread_local char buf[4][16];
  static thread_local int slot = 0;
  slot = (slot + 1) % 4;
  std::snprintf(buf[slot], sizeof buf[slot], "0x%08X", x);
  return buf[slot];
}

// At most kMaxReports failure messages per check, then a count (so one bug cannot print 100k lines).
class Reporter {
 public:
  static constexpr int kMaxReports = 10;
  bool report() { return ++failures_ <= kMaxReports; }
  ~Reporter() {
    if (failures_ > kMaxReports) ADD_FAILURE() << failures_ << " mismatches in total (first " << kMaxReports << " shown)";
  }

 private:
  int failures_ = 0;
};
#define NIBBLE_CHECK(rep, cond, msg)           \
  do {                                         \
    if (!(cond) && (rep).report()) ADD_FAILURE() << msg; \
  } while (0)

// ---- test words -----------------------------------------------------------------------------------

// Every byte value replicated into all four bytes: each value in every nibble position.
std::vector<uint32_t> replicated_byte_words() {
  std::vector<uint32_t> w(256);
  for (uint32_t b = 0; b < 256; ++b) w[b] = b * 0x01010101u;
  return w;
}
// Replicated bytes, then `random_count` words of four independent random bytes; prints how to replay.
std::vector<uint32_t> test_words(std::mt19937_64& rng, std::size_t random_count, const char* what) {
  std::vector<uint32_t> w = replicated_byte_words();
  std::uniform_int_distribution<uint32_t> byte(0, 255);
  for (std::size_t i = 0; i < random_count; ++i)
    w.push_back(byte(rng) | byte(rng) << 8 | byte(rng) << 16 | byte(rng) << 24);
  std::printf("[nibble] %s: 256 replicated-byte words + %zu random words (NIBBLE_SEED=%llu)\n", what,
              random_count, static_cast<unsigned long long>(nibble_test_seed()));
  return w;
}
std::vector<uint32_t> test_words_for_current_test(std::size_t random_count = 100000) {
  auto rng = nibble_test_rng();
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string name = std::string(info->test_suite_name()) + "." + info->name();
  return test_words(rng, random_count, name.c_str());
}

// ---- 1. pack_x2 / unpack_x2 -----------------------------------------------------------------------

template <Format F>
void check_pack_x2_all_bytes() {
  Reporter rep;
  const int lo = F == kS4 ? -8 : 0, hi = lo + 15;
  for (int b = 0; b < 256; ++b) {
    int v0 = 99, v1 = 99;
    nibble::unpack_x2<F>(std::uint8_t(b), v0, v1);
    NIBBLE_CHECK(rep, v0 == value_oracle(F, b & 0xF) && v1 == value_oracle(F, b >> 4),
                 "byte " << b << ": unpack_x2 gave (" << v0 << ", " << v1 << "), want ("
                         << value_oracle(F, b & 0xF) << ", " << value_oracle(F, b >> 4) << ")");
    NIBBLE_CHECK(rep, v0 >= lo && v0 <= hi && v1 >= lo && v1 <= hi, "byte " << b << ": out of range");
    NIBBLE_CHECK(rep, nibble::pack_x2<F>(v0, v1) == b,
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
      NIBBLE_CHECK(rep, (b & 0xF) == (v0 & 0xF) && (b >> 4) == (v1 & 0xF),
                   "(" << v0 << ", " << v1 << ") -> byte " << b << ": v0 must be the low nibble");
      int u0 = 99, u1 = 99;
      nibble::unpack_x2<F>(std::uint8_t(b), u0, u1);
      NIBBLE_CHECK(rep, u0 == v0 && u1 == v1,
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
  EXPECT_EQ(nibble::pack_x2<kS4>(-1, 7), 0x7F);   // v0 = -1 (0xF) low, v1 = 7 high
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
      NIBBLE_CHECK(rep, v[i] == want, "word " << hex(w) << " value " << i << ": " << v[i] << ", want " << want);
    }
    NIBBLE_CHECK(rep, (nibble::pack_x8<F, O>(v) == w),
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
      NIBBLE_CHECK(rep, u[i] == v[i], "values -> " << hex(w) << " -> value " << i << " = " << u[i] << ", want " << v[i]);
      NIBBLE_CHECK(rep, ((w >> (4 * nibble_position_oracle(O, i))) & 0xF) == uint32_t(v[i] & 0xF),
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
    NIBBLE_CHECK(rep, nibble::deinterleave_x8(il) == w, hex(w) << ": deinterleave(interleave) = " << hex(nibble::deinterleave_x8(il)));
    NIBBLE_CHECK(rep, nibble::interleave_x8(nibble::deinterleave_x8(w)) == w, hex(w) << ": interleave(deinterleave) != identity");
    for (int i = 0; i < 8; ++i)
      NIBBLE_CHECK(rep, ((il >> (4 * kInterleavedNibbleOfValue[i])) & 0xF) == ((w >> (4 * i)) & 0xF),
                   hex(w) << " -> " << hex(il) << ": value " << i << " misplaced");
    // The properties convert.cuh relies on: w & 0x000F000F = (v0, v1) in the two 16-bit halves,
    // (w & 0x00F000F0) >> 4 = (v2, v3), and w >> 8 repeats the pattern for (v4, v5), (v6, v7).
    const auto v = [&](int i) { return (w >> (4 * i)) & 0xFu; };
    NIBBLE_CHECK(rep, (il & 0x000F000Fu) == (v(0) | v(1) << 16), hex(w) << ": (v0, v1) not in the low nibbles of the halves");
    NIBBLE_CHECK(rep, ((il & 0x00F000F0u) >> 4) == (v(2) | v(3) << 16), hex(w) << ": (v2, v3)");
    NIBBLE_CHECK(rep, ((il >> 8) & 0x000F000Fu) == (v(4) | v(5) << 16), hex(w) << ": (v4, v5)");
    NIBBLE_CHECK(rep, (((il >> 8) & 0x00F000F0u) >> 4) == (v(6) | v(7) << 16), hex(w) << ": (v6, v7)");
    // interleave_x8 is "sequential values, re-packed interleaved", whatever the format.
    int vals[8];
    nibble::unpack_x8<kU4, kSeq>(w, vals);
    NIBBLE_CHECK(rep, (nibble::pack_x8<kU4, kIlv>(vals) == il), hex(w) << ": interleave_x8 != pack_x8<kInterleaved>(unpack_x8<kSequential>)");
  }
}

// ---- 3. codebooks ---------------------------------------------------------------------------------

TEST(Codebook_nf4, MatchesBitsandbytes) {
  const nibble::Codebook16 book = nibble::nf4_codebook();
  const nibble::Codebook16 by_format = nibble::codebook(kNf4);
  for (unsigned i = 0; i < 16; ++i) {
    EXPECT_EQ(float_bits(book.v[i]), float_bits(kBnbNf4[i])) << "code " << i << ": " << book.v[i] << " vs " << kBnbNf4[i];
    EXPECT_EQ(float_bits(by_format.v[i]), float_bits(kBnbNf4[i])) << "codebook(kNf4) code " << i;
    EXPECT_EQ(float_bits(book[i + 16]), float_bits(kBnbNf4[i])) << "operator[] must mask the code to 4 bits";
    if (i > 0) EXPECT_LT(book.v[i - 1], book.v[i]) << "NF4 must be strictly increasing";
  }
  EXPECT_EQ(float_bits(book.v[7]), float_bits(0.0f)) << "exact +0 at code 7";
}

TEST(Codebook_fp4, MatchesBitsandbytes) {
  const nibble::Codebook16 book = nibble::fp4_codebook();
  const nibble::Codebook16 by_format = nibble::codebook(kFp4);
  for (unsigned i = 0; i < 16; ++i) {
    EXPECT_EQ(float_bits(book.v[i]), float_bits(kBnbFp4[i])) << "code " << i << ": " << book.v[i] << " vs " << kBnbFp4[i];
    EXPECT_EQ(float_bits(by_format.v[i]), float_bits(kBnbFp4[i])) << "codebook(kFp4) code " << i;
    EXPECT_EQ(std::signbit(book.v[i]), i >= 8) << "sign bit is bit 3 of the code, code " << i;
  }
}

TEST(Codebook_fp4, MatchesE2m1WithBiasDescription) {
  // Magnitudes {0, 0.0625, 8, 12, 4, 6, 2, 3} / 12, bit 3 the sign; and bitsandbytes' Python table
  // (functional.py, float32 division by 12) gives the very same floats as its CUDA literals.
  const nibble::Codebook16 book = nibble::fp4_codebook();
  for (int i = 0; i < 16; ++i) {
    const double want = double(kBnbFp4Unnormalized[i]) / 12.0;
    EXPECT_NEAR(book.v[i], want, 1e-7) << "code " << i;
    EXPECT_EQ(float_bits(std::fabs(book.v[i])), float_bits(std::fabs(kBnbFp4Unnormalized[i]) / 12.0f)) << "code " << i;
    EXPECT_EQ(std::fabs(book.v[i]), std::fabs(book.v[i ^ 8])) << "code " << i << " and its negation";
  }
  // The 3-bit magnitude code [e1 e0 m]: e = 0 is subnormal (0 or 0.0625), else 2^(4 - e) * (1 + m / 2).
  for (int code = 0; code < 8; ++code) {
    const int e = code >> 1, m = code & 1;
    const double magnitude = e == 0 ? 0.0625 * m : std::ldexp(1.0 + 0.5 * m, 4 - e);
    EXPECT_EQ(magnitude, std::fabs(kBnbFp4Unnormalized[code])) << "magnitude code " << code;
    EXPECT_NEAR(book.v[code] * 12.0, magnitude, 1e-6) << "magnitude code " << code;
  }
}

// ---- 4. encoders ----------------------------------------------------------------------------------

// argmin_i |x - table[i]| in double, first index on ties.
unsigned nearest_oracle(const float (&table)[16], float x) {
  unsigned best = 0;
  double best_d = std::fabs(double(x) - double(table[0]));
  for (unsigned i = 1; i < 16; ++i) {
    const double d = std::fabs(double(x) - double(table[i]));
    if (d < best_d) best = i, best_d = d;
  }
  return best;
}
// Distance from x to the nearest midpoint between two neighbouring (distinct) codebook values.
double distance_to_midpoint(const float (&table)[16], float x) {
  std::vector<double> s(table, table + 16);
  std::sort(s.begin(), s.end());
  double best = 1e30;
  for (int i = 0; i + 1 < 16; ++i)
    if (s[i] != s[i + 1]) best = std::min(best, std::fabs(double(x) - 0.5 * (s[i] + s[i + 1])));
  return best;
}

template <Format F>
void check_encoder_against_oracle() {
  const auto& table = F == kNf4 ? kBnbNf4 : kBnbFp4;
  auto encode = [](float x) { return F == kNf4 ? nibble::encode_nf4(x) : nibble::encode_fp4(x); };
  auto rng = nibble_test_rng();
  std::uniform_real_distribution<float> dist(-1.2f, 1.2f);
  Reporter rep;
  int skipped = 0;
  constexpr int kCount = 1 << 20;
  for (int n = 0; n < kCount; ++n) {
    const float x = dist(rng);
    if (distance_to_midpoint(table, x) < 1e-6) {
      ++skipped;
      continue;
    }
    const unsigned got = encode(x), want = nearest_oracle(table, x);
    NIBBLE_CHECK(rep, got < 16 && table[got] == table[want],
                 "x = " << x << ": code " << got << " (" << table[got & 15] << "), nearest is code " << want << " ("
                        << table[want] << ")");
    if (F == kFp4) NIBBLE_CHECK(rep, (got & 8u) == (x < 0 ? 8u : 0u), "x = " << x << ": fp4 sign bit of code " << got);
  }
  EXPECT_LT(skipped, kCount / 1000) << "too many inputs near a midpoint";
}

TEST(Encode_nf4, MatchesNearestOracle) { check_encoder_against_oracle<kNf4>(); }
TEST(Encode_fp4, MatchesNearestOracle) { check_encoder_against_oracle<kFp4>(); }

TEST(Encode_nf4, CodebookValuesEncodeToOwnIndex) {
  for (unsigned i = 0; i < 16; ++i) EXPECT_EQ(nibble::encode_nf4(kBnbNf4[i]), i) << kBnbNf4[i];
  EXPECT_EQ(nibble::encode_nf4(-0.0f), 7u);
}

TEST(Encode_fp4, CodebookValuesEncodeToOwnIndex) {
  for (unsigned i = 0; i < 16; ++i) {
    if (i == 8) continue;  // -0: the sign comes from x < 0, so -0 encodes as +0 (code 0)
    EXPECT_EQ(nibble::encode_fp4(kBnbFp4[i]), i) << kBnbFp4[i];
  }
  EXPECT_EQ(nibble::encode_fp4(0.0f), 0u);
  EXPECT_EQ(nibble::encode_fp4(-0.0f), 0u) << "documented: -0 is positive";
  EXPECT_EQ(nibble::encode_fp4(-std::numeric_limits<float>::denorm_min()), 8u) << "tiny negative -> -0 code";
  EXPECT_EQ(nibble::encode_fp4(std::numeric_limits<float>::denorm_min()), 0u);
}

TEST(Encode_nf4, NaNIsCodeZero) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(nibble::encode_nf4(nan), 0u);
  EXPECT_EQ(nibble::encode_nf4(-nan), 0u);
}

TEST(Encode_fp4, NaNIsCodeZero) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(nibble::encode_fp4(nan), 0u);
  EXPECT_EQ(nibble::encode_fp4(-nan), 0u) << "x < 0 is false for NaN, so no sign bit";
}

TEST(Encode_nf4, SaturatesBeyondOne) {
  const float inf = std::numeric_limits<float>::infinity();
  for (float x : {1.0f, std::nextafter(1.0f, 2.0f), 1.2f, 2.0f, 1e30f, inf}) {
    EXPECT_EQ(nibble::encode_nf4(x), 15u) << x;
    EXPECT_EQ(nibble::encode_nf4(-x), 0u) << -x;
  }
}

TEST(Encode_fp4, SaturatesBeyondOne) {
  const float inf = std::numeric_limits<float>::infinity();
  for (float x : {1.0f, std::nextafter(1.0f, 2.0f), 1.2f, 2.0f, 1e30f, inf}) {
    EXPECT_EQ(nibble::encode_fp4(x), 0b0011u) << x;
    EXPECT_EQ(nibble::encode_fp4(-x), 0b1011u) << -x;
  }
}

// bitsandbytes' exact float decision points: t itself stays below (strict `>`), the next float goes above.
TEST(Encode_nf4, DecisionBoundariesMatchBitsandbytes) {
  for (unsigned i = 0; i < 15; ++i) {
    const float t = kBnbNf4Threshold[i];
    EXPECT_EQ(nibble::encode_nf4(t), i) << "at threshold " << t;
    EXPECT_EQ(nibble::encode_nf4(std::nextafter(t, 2.0f)), i + 1) << "just above threshold " << t;
    EXPECT_EQ(nibble::encode_nf4(std::nextafter(t, -2.0f)), i) << "just below threshold " << t;
    EXPECT_NEAR(t, 0.5 * (double(kBnbNf4[i]) + double(kBnbNf4[i + 1])), 1e-7) << "threshold " << i << " is a midpoint";
  }
}

TEST(Encode_fp4, DecisionBoundariesMatchBitsandbytes) {
  for (const Fp4Split& s : kBnbFp4Split) {
    EXPECT_EQ(nibble::encode_fp4(s.t), s.below) << "at " << s.t;
    EXPECT_EQ(nibble::encode_fp4(std::nextafter(s.t, 2.0f)), s.above) << "just above " << s.t;
    EXPECT_EQ(nibble::encode_fp4(-s.t), s.below | 8u) << "at " << -s.t;
    EXPECT_EQ(nibble::encode_fp4(-std::nextafter(s.t, 2.0f)), s.above | 8u) << "just below " << -s.t;
    EXPECT_NEAR(s.t, 0.5 * (double(kBnbFp4[s.below]) + double(kBnbFp4[s.above])), 1e-6) << "split " << s.t;
  }
}

static_assert(nibble::encode_nf4(1.0f) == 15 && nibble::encode_fp4(-1.0f) == 11, "encoders are constexpr");

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
      NIBBLE_CHECK(rep, got == v[i] && v[i] == value_oracle(kS4, w >> (4 * i)),
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
        NIBBLE_CHECK(rep, float_bits(got) == float_bits(want),
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

// ---- 7. strings -----------------------------------------------------------------------------------

TEST(Status, ToStringNonEmptyAndDistinct) {
  using nibble::Status;
  const Status all[] = {Status::kSuccess,           Status::kErrorNullPointer,      Status::kErrorMisalignedPointer,
                        Status::kErrorInvalidShape, Status::kErrorGroupSize,        Status::kErrorLeadingDimension,
                        Status::kErrorSizeOverflow, Status::kErrorUnsupportedFormat, Status::kErrorUnsupportedDevice,
                        Status::kErrorWorkspaceTooSmall, Status::kErrorInvalidArgument, Status::kErrorCuda};
  const std::string unknown = nibble::to_string(static_cast<Status>(12345));
  EXPECT_FALSE(unknown.empty());
  std::set<std::string> seen;
  for (const Status s : all) {
    const char* text = nibble::to_string(s);
    ASSERT_NE(text, nullptr) << int(s);
    EXPECT_GT(std::strlen(text), 0u) << int(s);
    EXPECT_NE(text, unknown) << "enumerator " << int(s) << " falls through to the default text";
    EXPECT_TRUE(seen.insert(text).second) << "duplicate text '" << text << "' for enumerator " << int(s);
  }
  EXPECT_EQ(int(Status::kSuccess), 0);
  EXPECT_EQ(int(Status::kErrorCuda), 11) << "a new enumerator needs a to_string case and a line above";
  EXPECT_EQ(nibble::from_cuda(cudaSuccess), Status::kSuccess);
  EXPECT_EQ(nibble::from_cuda(cudaErrorInvalidValue), Status::kErrorCuda);
}

TEST(Format, ToStringAndTraits) {
  EXPECT_STREQ(nibble::to_string(kS4), "s4");
  EXPECT_STREQ(nibble::to_string(kU4), "u4");
  EXPECT_STREQ(nibble::to_string(kNf4), "nf4");
  EXPECT_STREQ(nibble::to_string(kFp4), "fp4");
  EXPECT_STREQ(nibble::to_string(static_cast<Format>(200)), "unknown");
  EXPECT_FALSE(nibble::is_codebook(kS4));
  EXPECT_FALSE(nibble::is_codebook(kU4));
  EXPECT_TRUE(nibble::is_codebook(kNf4));
  EXPECT_TRUE(nibble::is_codebook(kFp4));
  EXPECT_TRUE(nibble::has_zero_point(kU4));
  EXPECT_FALSE(nibble::has_zero_point(kS4) || nibble::has_zero_point(kNf4) || nibble::has_zero_point(kFp4));
  for (int g = -1; g <= 512; ++g)
    EXPECT_EQ(nibble::is_supported_group_size(g), g == 0 || g == 32 || g == 64 || g == 128 || g == 256) << g;
  EXPECT_EQ(nibble::effective_group(nibble::kPerChannel, 4096), 4096);
  EXPECT_EQ(nibble::effective_group(128, 4096), 128);
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
  kSlotU4F16 = 2,                  // + zero, zero = 0..15
  kSlotU4Bf16 = kSlotU4F16 + 16,   // + zero
  kSlotU4SplitF16 = kSlotU4Bf16 + 16,   // + z: zero_lo = z (values 0-3), zero_hi = 15 - z (values 4-7)
  kSlotU4SplitBf16 = kSlotU4SplitF16 + 16,
  kSlotNf4F16 = kSlotU4SplitBf16 + 16,
  kSlotNf4Bf16,
  kSlotFp4F16,
  kSlotFp4Bf16,
  kSlotS8,                         // words 0, 1 written; 2, 3 must keep the poison
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
  std::vector<uint32_t> out;  // [kSlotCount][words.size()][4]
  std::vector<uint32_t> luts;  // 32 words
  uint32_t at(int slot, std::size_t word, int j) const { return out[(slot * words.size() + word) * 4 + j]; }
};

#define NIBBLE_RUN_TRY(expr)                                                               \
  do {                                                                                     \
    const cudaError_t e_ = (expr);                                                         \
    if (e_ != cudaSuccess) {                                                               \
      run.error = std::string(#expr) + ": " + cudaGetErrorName(e_) + " " + cudaGetErrorString(e_); \
      return run;                                                                          \
    }                                                                                      \
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
      NIBBLE_CHECK(rep, got == expect,
                   what << " word " << hex(w) << " out[" << j << "] = " << hex(got) << " ("
                        << value16<T>(uint16_t(got)) << ", " << value16<T>(uint16_t(got >> 16)) << "), want "
                        << hex(expect) << " (" << value16<T>(lo) << ", " << value16<T>(hi) << ")");
    }
  }
}

#define NIBBLE_DEVICE_RUN_OR_FAIL(run)                  \
  NIBBLE_REQUIRE_GPU();                                 \
  const DeviceRun& run = device_run();                  \
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
      NIBBLE_CHECK(rep, got == v[i], "word " << hex(w) << " value " << i << ": device s8 " << got << ", want " << v[i]);
    }
    NIBBLE_CHECK(rep, run.at(kSlotS8, n, 0) == host[0] && run.at(kSlotS8, n, 1) == host[1],
                 "word " << hex(w) << ": device " << hex(run.at(kSlotS8, n, 0)) << " " << hex(run.at(kSlotS8, n, 1))
                         << " != host " << hex(host[0]) << " " << hex(host[1]));
    NIBBLE_CHECK(rep, run.at(kSlotS8, n, 2) == kPoison && run.at(kSlotS8, n, 3) == kPoison,
                 "word " << hex(w) << ": the kernel wrote past the two s8 words");
  }
}

template <Format F, class T>
void check_device_lut(const DeviceRun& run, int offset) {
  const nibble::CodebookLut host = nibble::make_codebook_lut<F, T>();
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(run.luts[offset + i], host.lo[i]) << "lo[" << i << "]: device " << hex(run.luts[offset + i]) << " host " << hex(host.lo[i]);
    EXPECT_EQ(run.luts[offset + 4 + i], host.hi[i]) << "hi[" << i << "]: device " << hex(run.luts[offset + 4 + i]) << " host " << hex(host.hi[i]);
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
