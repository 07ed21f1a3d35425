// tests/format/test_format.cu — format/ (and the base status.cuh): the NF4 / FP4 codebooks against
// bitsandbytes' literals, the encoders against a nearest-value oracle and bitsandbytes' decision
// boundaries, and the to_string / trait functions. CPU only. (Moved from tests/test_formats.cu.)
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

// ---- 3. codebooks ---------------------------------------------------------------------------------

TEST(Codebook_nf4, MatchesBitsandbytes) {
  const nibble::Codebook16 book = nibble::nf4_codebook();
  const nibble::Codebook16 by_format = nibble::codebook(kNf4);
  for (unsigned i = 0; i < 16; ++i) {
    EXPECT_EQ(float_bits(book.v[i]), float_bits(kBnbNf4[i]))
        << "code " << i << ": " << book.v[i] << " vs " << kBnbNf4[i];
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
    EXPECT_EQ(float_bits(book.v[i]), float_bits(kBnbFp4[i]))
        << "code " << i << ": " << book.v[i] << " vs " << kBnbFp4[i];
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
    NIBBLE_REPORT_UNLESS(rep, got < 16 && table[got] == table[want],
                         "x = " << x << ": code " << got << " (" << table[got & 15] << "), nearest is code " << want
                                << " (" << table[want] << ")");
    if (F == kFp4)
      NIBBLE_REPORT_UNLESS(rep, (got & 8u) == (x < 0 ? 8u : 0u), "x = " << x << ": fp4 sign bit of code " << got);
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

// ---- 7. strings -----------------------------------------------------------------------------------

TEST(Status, ToStringNonEmptyAndDistinct) {
  using nibble::Status;
  const Status all[] = {Status::kSuccess,
                        Status::kErrorNullPointer,
                        Status::kErrorMisalignedPointer,
                        Status::kErrorInvalidShape,
                        Status::kErrorGroupSize,
                        Status::kErrorLeadingDimension,
                        Status::kErrorSizeOverflow,
                        Status::kErrorUnsupportedFormat,
                        Status::kErrorUnsupportedDevice,
                        Status::kErrorWorkspaceTooSmall,
                        Status::kErrorInvalidArgument,
                        Status::kErrorCuda};
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

}  // namespace
