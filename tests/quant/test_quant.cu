// tests/quant/test_quant.cu — the quantizer (include/nibble/quant/): error bounds against bitsandbytes' own test
// bounds, independent oracles for the encoders, double quantization, bit-exact GPU == CPU for every
// format x input type x group x scale type, streaming, the Status of every rejected input, and
// QuantizeOptions::bnb_compatible against an oracle kernel written from bitsandbytes' published algorithm.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <nibble/quant/quantize.cuh>
#include <nibble/quant/streaming.cuh>  // quantize_streaming (quantize.cuh stops including it)
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "common/check.hpp"
#include "common/gpu.hpp"
#include "common/random.hpp"

using namespace nibble;

namespace {

// ---- host / device buffers ----------------------------------------------------------------------------

/// A 256-byte aligned host buffer (carve_packed_matrix needs kPackedAlignment).
struct HostBuffer {
  std::unique_ptr<std::uint8_t[]> raw;
  std::uint8_t* data = nullptr;
  std::size_t bytes = 0;
  explicit HostBuffer(std::size_t n, std::uint8_t fill = 0xA5) : raw(new std::uint8_t[n + kPackedAlignment]) {
    const auto p = reinterpret_cast<std::uintptr_t>(raw.get());
    data = raw.get() + (kPackedAlignment - p % kPackedAlignment) % kPackedAlignment;
    bytes = n;
    std::memset(data, fill, n);
  }
};

/// A device buffer, freed on scope exit.
struct DeviceBuffer {
  void* data = nullptr;
  std::size_t bytes = 0;
  explicit DeviceBuffer(std::size_t n) : bytes(n) { EXPECT_EQ(cudaMalloc(&data, n == 0 ? 1 : n), cudaSuccess); }
  ~DeviceBuffer() { cudaFree(data); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

/// A host packed matrix (view + its storage), poisoned with 0xA5.
struct HostPacked {
  HostBuffer buf;
  PackedMatrix m;
  HostPacked(std::int64_t n, std::int64_t k, const QuantParams& p, std::int64_t ld_codes = 0)
      : buf(packed_bytes(n, k, p, ld_codes).total) {
    EXPECT_EQ(carve_packed_matrix(n, k, p, buf.data, buf.bytes, &m, ld_codes), Status::kSuccess);
  }
};

template <class T>
std::vector<T> convert(const std::vector<float>& v) {
  std::vector<T> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = from_float<T>(v[i]);
  return out;
}

/// [n, ld] row-major matrix of N(0, 1) values in its first k columns (the padding is N(0, 1) too).
std::vector<float> randn_matrix(std::int64_t n, std::int64_t ld) {
  auto rng = nibble_test_rng();
  return nibble_test_normal(rng, std::size_t(n * ld));
}

struct ErrorStats {
  double mean_abs = 0.0;
  double mean_rel = 0.0;
};

/// bitsandbytes' definitions (tests/test_functional.py, test_4bit_quant):
///   err = |A1 - A2|;  relerr = mean(err / (|A1| + 1e-8));  err = mean(err)
ErrorStats roundtrip_error(const std::vector<float>& x, std::int64_t n, std::int64_t k, const QuantParams& p) {
  HostPacked hp(n, k, p);
  EXPECT_EQ(quantize_cpu(x.data(), k, hp.m), Status::kSuccess);
  std::vector<float> dq(std::size_t(n * k));
  EXPECT_EQ(dequantize_cpu(hp.m, dq.data(), k), Status::kSuccess);
  ErrorStats e;
  for (std::size_t i = 0; i < dq.size(); ++i) {
    const double err = std::fabs(double(x[i]) - double(dq[i]));
    e.mean_abs += err;
    e.mean_rel += err / (std::fabs(double(x[i])) + 1e-8);
  }
  e.mean_abs /= double(dq.size());
  e.mean_rel /= double(dq.size());
  return e;
}

// ---- CPU: statistical error against bitsandbytes' bounds ------------------------------------------------
// bitsandbytes' test_4bit_quant asserts err < E + 1e-3 and relerr < R + 1e-3 with (E, R) its averages over
// 1k samples of randn(1024, 1024): nf4 b64 (0.072792, 0.203299), fp4 b64 (0.096545, 0.260130).

TEST(Quant_nf4_b64_f32, ErrorWithinBnbBounds) {
  const auto x = randn_matrix(1024, 1024);
  const ErrorStats e = roundtrip_error(x, 1024, 1024, {Format::kNf4, 64, DType::kF32, false});
  std::printf("[nibble] nf4 b64: mean abs err %.6f, mean rel err %.6f\n", e.mean_abs, e.mean_rel);
  // issue #2's bounds (stricter than bitsandbytes' E + 1e-3); measured 0.072738 / 0.203306 (seed 20261121)
  EXPECT_LT(e.mean_abs, 0.0733);
  EXPECT_LT(e.mean_rel, 0.2057);
}

TEST(Quant_fp4_b64_f32, ErrorWithinBnbBounds) {
  const auto x = randn_matrix(1024, 1024);
  const ErrorStats e = roundtrip_error(x, 1024, 1024, {Format::kFp4, 64, DType::kF32, false});
  std::printf("[nibble] fp4 b64: mean abs err %.6f, mean rel err %.6f\n", e.mean_abs, e.mean_rel);
  // issue #2's bounds (stricter than bitsandbytes' E + 1e-3); measured 0.096546 / 0.260159 (seed 20261121)
  EXPECT_LT(e.mean_abs, 0.0973);
  EXPECT_LT(e.mean_rel, 0.2628);
}

TEST(Quant_nf4_b64_dq_f32, ErrorWithinBnbCompressedStatsBounds) {
  // bitsandbytes' test_4bit_compressed_stats: err < 0.11, relerr < 0.28 (with 1e-15 in the denominator).
  const auto x = randn_matrix(1024, 1024);
  const ErrorStats e = roundtrip_error(x, 1024, 1024, {Format::kNf4, 64, DType::kF32, true});
  std::printf("[nibble] nf4 b64 dq: mean abs err %.6f, mean rel err %.6f\n", e.mean_abs, e.mean_rel);
  EXPECT_LT(e.mean_abs, 0.11);
  EXPECT_LT(e.mean_rel, 0.28);
}

// s4 / u4 g128 on randn(1024, 1024): no external reference, so the bounds are the measured values plus
// about 2.5 %. Measured (default seed 20261121): s4 0.100201 / 0.298195, u4 0.086436 / 0.266683; seeds 1-3
// stay within 0.3 % of these.
constexpr double kS4G128AbsBound = 0.1025, kS4G128RelBound = 0.305;
constexpr double kU4G128AbsBound = 0.0885, kU4G128RelBound = 0.273;
TEST(Quant_s4_g128_f32, ErrorWithinMeasuredBound) {
  const auto x = randn_matrix(1024, 1024);
  const ErrorStats e = roundtrip_error(x, 1024, 1024, {Format::kS4, 128, DType::kF32, false});
  std::printf("[nibble] s4 g128: mean abs err %.6f, mean rel err %.6f\n", e.mean_abs, e.mean_rel);
  EXPECT_LT(e.mean_abs, kS4G128AbsBound);
  EXPECT_LT(e.mean_rel, kS4G128RelBound);
}

TEST(Quant_u4_g128_f32, ErrorWithinMeasuredBound) {
  const auto x = randn_matrix(1024, 1024);
  const ErrorStats e = roundtrip_error(x, 1024, 1024, {Format::kU4, 128, DType::kF32, false});
  std::printf("[nibble] u4 g128: mean abs err %.6f, mean rel err %.6f\n", e.mean_abs, e.mean_rel);
  EXPECT_LT(e.mean_abs, kU4G128AbsBound);
  EXPECT_LT(e.mean_rel, kU4G128RelBound);
}

// ---- CPU: independent oracles for the encoders ------------------------------------------------------------

/// Index of the entry of `book` (n entries) nearest to x, or -1 if the two nearest are within `tie` of
/// each other (a tie: either answer is right, so it is excluded).
int nearest_or_tie(const float* book, int n, double x, double tie) {
  int best = -1;
  double d1 = 1e300, d2 = 1e300;
  for (int i = 0; i < n; ++i) {
    const double d = std::fabs(double(book[i]) - x);
    if (d < d1) {
      d2 = d1;
      d1 = d;
      best = i;
    } else if (d < d2) {
      d2 = d;
    }
  }
  return d2 - d1 <= tie ? -1 : best;
}

/// The codes quantize_cpu gives for codebook formats are the nearest codebook VALUE to x * (1 / absmax).
void check_codebook_nearest(Format f) {
  const std::int64_t n = 64, k = 4096;
  const auto x = randn_matrix(n, k);
  HostPacked hp(n, k, {f, 64, DType::kF32, false});
  ASSERT_EQ(quantize_cpu(x.data(), k, hp.m), Status::kSuccess);
  const Codebook16 book = codebook(f);
  std::int64_t checked = 0, ties = 0;
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::int64_t kk = 0; kk < k; ++kk) {
      const float absmax = static_cast<const float*>(hp.m.scales)[r * (k / 64) + kk / 64];
      const float xn = x[std::size_t(r * k + kk)] * (1.0f / absmax);
      const int want = nearest_or_tie(book.v, 16, xn, 1e-6);
      if (want < 0) {
        ++ties;
        continue;
      }
      const std::uint8_t byte = hp.m.codes[r * hp.m.ld_codes + kk / 2];
      const unsigned got = (kk % 2 == 0 ? byte : byte >> 4) & 0xFu;
      ASSERT_EQ(book[got], book[unsigned(want)]) << to_string(f) << " x=" << xn << " at " << r << "," << kk;
      ++checked;
    }
  }
  EXPECT_GT(checked, n * k * 99 / 100) << "ties excluded: " << ties;
}

TEST(Quant_nf4_b64_f32, CodesAreNearestCodebookValue) { check_codebook_nearest(Format::kNf4); }
TEST(Quant_fp4_b64_f32, CodesAreNearestCodebookValue) { check_codebook_nearest(Format::kFp4); }

/// s4 / u4: every dequantized value is within half a scale of its input (round to nearest). The one
/// exception is a clamped code (0 or 15 for u4, -8 or 7 for s4): a 16-bit scale rounded DOWN can put a
/// group's extreme value just past the last code, by at most 16 codes x the scale's relative rounding error.
void check_half_scale(Format f, DType st) {
  const std::int64_t n = 128, k = 1024, g = 128;
  const auto x = randn_matrix(n, k);
  HostPacked hp(n, k, {f, int(g), st, false});
  ASSERT_EQ(quantize_cpu(x.data(), k, hp.m), Status::kSuccess);
  std::vector<float> dq(std::size_t(n * k));
  ASSERT_EQ(dequantize_cpu(hp.m, dq.data(), k), Status::kSuccess);
  const double rel = st == DType::kF32 ? 1e-6 : st == DType::kF16 ? std::ldexp(1.0, -11) : std::ldexp(1.0, -8);
  int clamped = 0;
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::int64_t kk = 0; kk < k; ++kk) {
      const float s = load_scale(hp.m.scales, st, r * (k / g) + kk / g);
      const std::size_t i = std::size_t(r * k + kk);
      const std::uint8_t byte = hp.m.codes[r * hp.m.ld_codes + kk / 2];
      const unsigned nib = (kk % 2 == 0 ? byte : byte >> 4) & 0xFu;
      const bool at_end = f == Format::kU4 ? (nib == 0 || nib == 15) : (nib == 7 || nib == 8);
      const double err = std::fabs(double(x[i]) - double(dq[i]));
      if (err > 0.5 * s * (1 + 1e-6)) {
        ASSERT_TRUE(at_end) << to_string(f) << " scale type " << int(st) << " at " << r << "," << kk;
        ASSERT_LE(err, s * (0.5 + 16 * rel)) << to_string(f) << " clamped, at " << r << "," << kk;
        ++clamped;
      }
    }
  }
  if (st == DType::kF32) EXPECT_EQ(clamped, 0);
  std::printf("[nibble] %s g128, scale type %d: %d clamped values past half a scale\n", to_string(f), int(st), clamped);
}

TEST(Quant_s4_g128, DequantErrorWithinHalfScale) {
  for (DType st : {DType::kF32, DType::kF16, DType::kBF16}) check_half_scale(Format::kS4, st);
}
TEST(Quant_u4_g128, DequantErrorWithinHalfScale) {
  for (DType st : {DType::kF32, DType::kF16, DType::kBF16}) check_half_scale(Format::kU4, st);
}

TEST(Quant_group, ClampAndSpecialValues) {
  GroupStats st;
  st.add(7.0f);
  st.add(-3.0f);
  const GroupQuantizer s4 = GroupQuantizer::make(Format::kS4, DType::kF32, st);
  EXPECT_EQ(s4.scale, 1.0f);
  EXPECT_EQ(s4.encode(100.0f), 7);
  EXPECT_EQ(s4.encode(-100.0f), -8);
  EXPECT_EQ(s4.encode(-8.4f), -8);
  EXPECT_EQ(s4.encode(2.5f), 2);  // half to even
  EXPECT_EQ(s4.encode(3.5f), 4);
  EXPECT_EQ(s4.encode(INFINITY), 7);
  EXPECT_EQ(s4.encode(-INFINITY), -8);
  EXPECT_EQ(s4.encode(NAN), 0);
  // u4: range [-3, 7] -> scale 10/15, zero = rint(3 / (2/3)) = rint(4.5) = 4 (half to even).
  const GroupQuantizer u4 = GroupQuantizer::make(Format::kU4, DType::kF32, st);
  EXPECT_EQ(u4.scale, 10.0f / 15.0f);
  EXPECT_EQ(u4.zero, 4);
  EXPECT_EQ(u4.encode(1e6f), 15);
  EXPECT_EQ(u4.encode(-1e6f), 0);
  EXPECT_EQ(u4.encode(NAN), 4);
  // All-zero group: s4 scale 0 and codes 0; u4 scale 1, zero 0; nf4 code 0 (bitsandbytes), value -0 * 0.
  const GroupStats zero{};
  EXPECT_EQ(GroupQuantizer::make(Format::kS4, DType::kF32, zero).scale, 0.0f);
  EXPECT_EQ(GroupQuantizer::make(Format::kS4, DType::kF32, zero).encode(0.0f), 0);
  const GroupQuantizer u4z = GroupQuantizer::make(Format::kU4, DType::kF32, zero);
  EXPECT_EQ(u4z.scale, 1.0f);
  EXPECT_EQ(u4z.zero, 0);
  EXPECT_EQ(u4z.encode(0.0f), 0);
  const GroupQuantizer nf4z = GroupQuantizer::make(Format::kNf4, DType::kF32, zero);
  EXPECT_EQ(nf4z.encode(0.0f), 0);
  EXPECT_EQ(dequantize_value(Format::kNf4, 0, nf4z.scale, 0, nf4_codebook().v), 0.0f);
  // NaN is skipped by the statistics.
  GroupStats with_nan = st;
  with_nan.add(NAN);
  EXPECT_EQ(with_nan.absmax, 7.0f);
  EXPECT_EQ(with_nan.min, -3.0f);
  EXPECT_EQ(with_nan.max, 7.0f);
}

TEST(Quant_s4_g32_f32, AllZeroGroupEncodesZero) {
  // The one explicit all-zero case: group 1 of row 0 is zero, everything else random.
  const std::int64_t n = 2, k = 128;
  auto x = randn_matrix(n, k);
  for (int i = 32; i < 64; ++i) x[std::size_t(i)] = 0.0f;
  for (Format f : {Format::kS4, Format::kU4, Format::kNf4, Format::kFp4, Format::kAffineU4}) {
    HostPacked hp(n, k, {f, 32, DType::kF32, false});
    ASSERT_EQ(quantize_cpu(x.data(), k, hp.m), Status::kSuccess);
    std::vector<float> dq(std::size_t(n * k));
    ASSERT_EQ(dequantize_cpu(hp.m, dq.data(), k), Status::kSuccess);
    for (int i = 32; i < 64; ++i) EXPECT_EQ(dq[std::size_t(i)], 0.0f) << to_string(f) << " at " << i;
  }
}

// ---- CPU: affine u4 (kAffineU4: w = q * s + m, min / max rule) --------------------------------------------------

/// Code of element (r, kk) of a plain matrix.
unsigned plain_code(const PackedMatrix& m, std::int64_t r, std::int64_t kk) {
  const std::uint8_t byte = m.codes[r * m.ld_codes + kk / 2];
  return (kk % 2 == 0 ? byte : byte >> 4) & 0xFu;
}

/// Every element of N(0, 1) rows (seed printed by nibble_test_rng): (1) dequantized within the bound of
/// quant/group.cuh, s / 2 + 15 |s - (max - min) / 15| + |m - min| (the roundings of s and m to the scale type)
/// + a few fp32 ulps; (2) its code is rint((x - m) / s) computed in float64 and clamped to [0, 15], except within
/// 1e-4 of a tie (where fp32 and float64 may round differently); (3) m is the group's min rounded to the scale
/// type and s its range / 15 rounded; (4) with fp32 scales the group's min has code 0 and its max code 15.
void check_affine_bound(int g, DType st) {
  SCOPED_TRACE(std::string("group ") + std::to_string(g) + " scale type " + std::to_string(int(st)));
  const std::int64_t n = 48, k = 1024, ge = g == kPerChannel ? k : g, groups = k / ge;
  const auto x = randn_matrix(n, k);
  HostPacked hp(n, k, {Format::kAffineU4, g, st, false});
  ASSERT_EQ(quantize_cpu(x.data(), k, hp.m), Status::kSuccess);
  std::vector<float> dq(std::size_t(n * k));
  ASSERT_EQ(dequantize_cpu(hp.m, dq.data(), k), Status::kSuccess);
  std::int64_t ties = 0;
  for (std::int64_t r = 0; r < n; ++r)
    for (std::int64_t j = 0; j < groups; ++j) {
      const std::int64_t si = r * groups + j;
      const double s = load_scale(hp.m.scales, st, si), m = load_scale(hp.m.offsets, st, si);
      double lo = INFINITY, hi = -INFINITY;
      std::int64_t at_lo = 0, at_hi = 0;
      for (std::int64_t e = 0; e < ge; ++e) {
        const double v = x[std::size_t(r * k + j * ge + e)];
        if (v < lo) lo = v, at_lo = j * ge + e;
        if (v > hi) hi = v, at_hi = j * ge + e;
      }
      ASSERT_EQ(m, double(round_to(st, float(lo))));
      // fp32 (hi - lo) (the float64 difference of two floats is exact, float() rounds it once), then fp32 / 15.
      ASSERT_EQ(s, double(round_to(st, float(hi - lo) / 15.0f)));
      ASSERT_GT(s, 0.0);
      if (st == DType::kF32) {
        EXPECT_EQ(plain_code(hp.m, r, at_lo), 0u);
        EXPECT_EQ(plain_code(hp.m, r, at_hi), 15u);
      }
      const double bound = 0.5 * s + 15.0 * std::fabs(s - (hi - lo) / 15.0) + std::fabs(m - lo);
      for (std::int64_t e = 0; e < ge; ++e) {
        const std::int64_t kk = j * ge + e;
        const double v = x[std::size_t(r * k + kk)], got = dq[std::size_t(r * k + kk)];
        const double ulps = 4.0 * std::ldexp(1.0, -24) * (std::fabs(v) + std::fabs(m) + 15.0 * s);
        ASSERT_LE(std::fabs(v - got), bound + ulps) << "at " << r << "," << kk;
        const double t = (v - m) / s;
        const double want = std::min(15.0, std::max(0.0, std::nearbyint(t)));
        if (std::fabs(t - std::floor(t) - 0.5) < 1e-4) {
          ++ties;
          continue;
        }
        ASSERT_EQ(plain_code(hp.m, r, kk), unsigned(want)) << "at " << r << "," << kk << " (x - m) / s = " << t;
      }
    }
  std::printf("[nibble] affine_u4 %s, scale type %d: %lld near-tie codes not compared\n", group_name(g).c_str(),
              int(st), (long long)ties);
}

TEST(Quant_affine_u4, DequantErrorWithinBoundAndCodesNearest) {
  for (int g : {32, 64, 128, 256, kPerChannel})
    for (DType st : {DType::kF32, DType::kF16, DType::kBF16}) check_affine_bound(g, st);
}

TEST(Quant_affine_u4, GroupQuantizerRule) {
  GroupStats st = GroupStats::start(Format::kAffineU4);
  EXPECT_EQ(st.min, INFINITY);
  EXPECT_EQ(st.max, -INFINITY);
  st.add(7.0f);
  st.add(-3.0f);
  st.add(NAN);  // skipped
  const GroupQuantizer q = GroupQuantizer::make(Format::kAffineU4, DType::kF32, st);
  EXPECT_EQ(q.scale, 10.0f / 15.0f);
  EXPECT_EQ(q.offset, -3.0f);
  EXPECT_EQ(q.encode(-3.0f), 0);
  EXPECT_EQ(q.encode(7.0f), 15);
  EXPECT_EQ(q.encode(1e6f), 15);
  EXPECT_EQ(q.encode(-1e6f), 0);
  EXPECT_EQ(q.encode(INFINITY), 15);
  EXPECT_EQ(q.encode(-INFINITY), 0);
  EXPECT_EQ(q.encode(NAN), 0);
  EXPECT_EQ(q.encode(-2.0f), 2);  // (x - m) / s = 1.5: half to even
  EXPECT_EQ(q.encode(-1.0f), 3);  // 3.0000002: nearest
  EXPECT_EQ(dequantize_value(Format::kAffineU4, 15, q.scale, 0, nullptr, q.offset), 15.0f * (10.0f / 15.0f) - 3.0f);
  // A range that does not hold 0: min / max are the true extremes, not min(x, 0) / max(x, 0) as for kU4.
  GroupStats pos = GroupStats::start(Format::kAffineU4);
  pos.add(2.0f);
  pos.add(5.0f);
  const GroupQuantizer qp = GroupQuantizer::make(Format::kAffineU4, DType::kF16, pos);
  EXPECT_EQ(qp.offset, 2.0f);
  EXPECT_EQ(qp.scale, round_to(DType::kF16, 3.0f / 15.0f));
  // Empty / all-NaN group: s = 0, m = 0, code 0, value 0.
  GroupStats nan = GroupStats::start(Format::kAffineU4);
  nan.add(NAN);
  const GroupQuantizer qn = GroupQuantizer::make(Format::kAffineU4, DType::kF32, nan);
  EXPECT_EQ(qn.scale, 0.0f);
  EXPECT_EQ(qn.offset, 0.0f);
  EXPECT_EQ(qn.encode(NAN), 0);
  // The other formats start from GroupStats{} as before.
  for (Format f : {Format::kS4, Format::kU4, Format::kNf4, Format::kFp4}) {
    const GroupStats z = GroupStats::start(f);
    EXPECT_EQ(z.min, 0.0f);
    EXPECT_EQ(z.max, 0.0f);
    EXPECT_EQ(z.absmax, 0.0f);
  }
}

/// Degenerate groups (max == min, a range whose scale rounds to 0, all NaN, one NaN, Inf) among random ones.
TEST(Quant_affine_u4, DegenerateGroups) {
  const std::int64_t n = 2, k = 256, g = 32;
  for (DType st : {DType::kF32, DType::kF16, DType::kBF16}) {
    SCOPED_TRACE("scale type " + std::to_string(int(st)));
    auto x = randn_matrix(n, k);
    auto group = [&](int j) { return x.begin() + j * g; };
    std::fill(group(0), group(1), 0.3f);   // constant, not representable in fp16 / bf16
    std::fill(group(1), group(2), -2.5f);  // constant, exact in every scale type
    std::fill(group(2), group(3), 0.0f);   // all zero
    for (int e = 0; e < g; ++e) *(group(3) + e) = e % 2 ? 1.0f : 1.0f + std::ldexp(1.0f, -23);  // fp16: s -> 0
    std::fill(group(4), group(5), NAN);                                                         // all NaN
    *(group(5) + 7) = NAN;       // one NaN in a random group
    *(group(6) + 3) = INFINITY;  // an Inf: no UB, non-finite results allowed
    HostPacked hp(n, k, {Format::kAffineU4, int(g), st, false});
    ASSERT_EQ(quantize_cpu(x.data(), k, hp.m), Status::kSuccess);
    std::vector<float> dq(std::size_t(n * k));
    ASSERT_EQ(dequantize_cpu(hp.m, dq.data(), k), Status::kSuccess);
    auto scale = [&](int j) { return load_scale(hp.m.scales, st, j); };
    auto offset = [&](int j) { return load_scale(hp.m.offsets, st, j); };
    for (int j : {0, 1, 2, 4}) {
      EXPECT_EQ(scale(j), 0.0f) << "group " << j;
      for (int e = 0; e < g; ++e) EXPECT_EQ(plain_code(hp.m, 0, j * g + e), 0u) << "group " << j;
    }
    if (st == DType::kF16) EXPECT_EQ(scale(3), 0.0f) << "2^-23 / 15 is below fp16's smallest subnormal / 2";
    EXPECT_EQ(offset(0), round_to(st, 0.3f));
    for (int e = 0; e < g; ++e) {
      EXPECT_EQ(dq[std::size_t(e)], round_to(st, 0.3f));
      EXPECT_EQ(dq[std::size_t(g + e)], -2.5f);
      EXPECT_EQ(dq[std::size_t(2 * g + e)], 0.0f);
      EXPECT_LE(std::fabs(dq[std::size_t(3 * g + e)] - x[std::size_t(3 * g + e)]), std::ldexp(1.0f, -23));
      EXPECT_EQ(dq[std::size_t(4 * g + e)], 0.0f) << "all-NaN group: m = 0";
    }
    EXPECT_EQ(dq[std::size_t(5 * g + 7)], offset(5)) << "NaN encodes to code 0, value m";
    for (int e = 0; e < g; ++e)
      if (e != 7) {
        const double s = scale(5), m = offset(5);
        EXPECT_LE(std::fabs(double(dq[std::size_t(5 * g + e)]) - x[std::size_t(5 * g + e)]),
                  0.5 * s + 20 * s * std::ldexp(1.0, -8) + std::fabs(m) * std::ldexp(1.0, -8) + 1e-6);
      }
    EXPECT_TRUE(std::isinf(scale(6)));
  }
}

TEST(Quant_affine_u4, LayoutAndRefusals) {
  const std::int64_t n = 8, k = 256;
  // The offsets buffer: N * G of the scale type, carved after the zeros; no other format gets one and their
  // sizes are unchanged.
  for (DType st : {DType::kF32, DType::kF16, DType::kBF16}) {
    const PackedBytes b = packed_bytes(n, k, {Format::kAffineU4, 64, st, false});
    ASSERT_EQ(b.status, Status::kSuccess);
    EXPECT_EQ(b.offsets, std::size_t(n * 4 * size_of(st)));
    EXPECT_EQ(b.offsets, b.scales);
    EXPECT_EQ(b.zeros, 0u);
    EXPECT_EQ(b.total, 6 * kPackedAlignment);  // codes 1024 bytes (4 x 256), scales and offsets 256 each
  }
  for (Format f : {Format::kS4, Format::kU4, Format::kNf4, Format::kFp4}) {
    const PackedBytes b = packed_bytes(n, k, {f, 64, DType::kF16, false});
    EXPECT_EQ(b.offsets, 0u) << to_string(f);
    EXPECT_EQ(b.total, 4 * kPackedAlignment + kPackedAlignment + (f == Format::kU4 ? kPackedAlignment : 0))
        << to_string(f);
    HostPacked hp(n, k, {f, 64, DType::kF16, false});
    EXPECT_EQ(hp.m.offsets, nullptr) << to_string(f);
  }
  const QuantParams p{Format::kAffineU4, 64, DType::kF16, false};
  HostPacked hp(n, k, p);
  EXPECT_EQ(static_cast<std::uint8_t*>(hp.m.offsets), static_cast<std::uint8_t*>(hp.m.scales) + kPackedAlignment);
  std::vector<float> x(std::size_t(n * k), 1.0f);
  PackedMatrix m = hp.m;
  m.offsets = nullptr;
  EXPECT_STATUS(Status::kErrorNullPointer, quantize_cpu(x.data(), k, m));
  m = hp.m, m.offsets = static_cast<std::uint8_t*>(m.offsets) + 1;
  EXPECT_STATUS(Status::kErrorMisalignedPointer, quantize_cpu(x.data(), k, m));
  m = hp.m, m.zeros = nullptr;  // not used by the format
  EXPECT_STATUS(Status::kSuccess, quantize_cpu(x.data(), k, m));
  // No double quantization, no bitsandbytes arithmetic.
  EXPECT_STATUS(Status::kErrorUnsupportedFormat, packed_bytes(n, k, {Format::kAffineU4, 64, DType::kF32, true}).status);
  QuantizeOptions bnb;
  bnb.bnb_compatible = true;
  EXPECT_STATUS(Status::kErrorUnsupportedFormat, quantize_cpu(x.data(), k, hp.m, bnb));
  EXPECT_STREQ(to_string(Format::kAffineU4), "affine_u4");
  EXPECT_TRUE(has_offset(Format::kAffineU4));
  EXPECT_TRUE(has_gemm_layout(Format::kAffineU4));
  EXPECT_FALSE(has_zero_point(Format::kAffineU4));
  EXPECT_FALSE(is_codebook(Format::kAffineU4));
  static_assert(AffineU4<32>::kHasOffset && !AffineU4<32>::kHasZero && !AffineU4<32>::kCodebook, "tag traits");
  // Valid arguments on a machine without a GPU: kErrorUnsupportedDevice, never a crash.
  if (!nibble_test_has_gpu()) {
    EXPECT_STATUS(Status::kErrorUnsupportedDevice, quantize(x.data(), k, hp.m, nullptr, 0, nullptr));
  }
}

// ---- CPU: the dynamic map and double quantization ----------------------------------------------------------

TEST(Quant_dynamic_map, MatchesBitsandbytes) {
  const float* m = dynamic_map().v;
  for (int i = 0; i + 1 < 256; ++i) ASSERT_LT(m[i], m[i + 1]) << i;
  for (int i = 0; i < 127; ++i) ASSERT_EQ(m[128 + i], -m[126 - i]) << i;
  EXPECT_EQ(m[127], 0.0f);
  EXPECT_EQ(m[255], 1.0f);
  // Entries of bitsandbytes' create_dynamic_map() as shipped (a published dump of the tensor). Indices
  // 18, 20, 23, 25, 28 are among those that differ by one ulp if torch.linspace is evaluated without FMA.
  const struct {
    int i;
    float v;
  } ref[] = {{0, -0.992968738079071f},       {1, -0.9789062738418579f},      {18, -0.7398437261581421f},
             {20, -0.7117187976837158f},     {23, -0.6695312261581421f},     {25, -0.6414062976837158f},
             {28, -0.5992187261581421f},     {34, -0.5148437023162842f},     {36, -0.48671871423721313f},
             {63, -0.10703125596046448f},    {64, -0.09859374910593033f},    {96, -0.009718749672174454f},
             {112, -0.0009437500848434865f}, {120, -8.874999912222847e-05f}, {126, -5.500000384017767e-07f},
             {254, 0.992968738079071f}};
  for (const auto& e : ref) EXPECT_EQ(m[e.i], e.v) << "index " << e.i;
}

TEST(Quant_dynamic_map, BinarySearchIsNearest) {
  auto rng = nibble_test_rng();
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  const float* m = dynamic_map().v;
  int checked = 0;
  for (int t = 0; t < 200000; ++t) {
    // Half uniform, half log-uniform magnitudes so the dense region near 0 is exercised.
    float x = uni(rng);
    if (t % 2) x = std::copysign(std::pow(10.0f, -7.0f * std::fabs(uni(rng))), x);
    const int want = nearest_or_tie(m, 256, x, 1e-12);
    if (want < 0) continue;
    ASSERT_EQ(dynamic_quantize(m, x), want) << "x=" << x;
    ++checked;
  }
  EXPECT_GT(checked, 190000);
  EXPECT_EQ(dynamic_quantize(m, 1.0f), 255);
  EXPECT_EQ(dynamic_quantize(m, -1.0f), 0);
  EXPECT_EQ(dynamic_quantize(m, 0.0f), 127);
  EXPECT_EQ(dynamic_quantize(m, NAN), 0);
}

TEST(Quant_nf4_b64_dq_f32, ScalesWithinMapResolution) {
  const std::int64_t n = 300, k = 1024;  // 4800 scales: 19 blocks of 256, the last partial
  const auto x = randn_matrix(n, k);
  HostPacked hp(n, k, {Format::kNf4, 64, DType::kF32, true});
  ASSERT_EQ(quantize_cpu(x.data(), k, hp.m), Status::kSuccess);
  const std::int64_t S = hp.m.num_scales();
  const auto* s = static_cast<const float*>(hp.m.scales);
  double mean = 0;
  for (std::int64_t i = 0; i < S; ++i) mean += s[i];
  mean /= double(S);
  const float offset = *hp.m.dq.offset;
  EXPECT_NEAR(offset, mean, 1e-6 * mean);
  const float* map = dynamic_map().v;
  float max_gap = 0;
  for (int i = 0; i + 1 < 256; ++i) max_gap = std::max(max_gap, map[i + 1] - map[i]);
  for (std::int64_t i = 0; i < S; ++i) {
    const float a2 = hp.m.dq.absmax2[i / kDoubleQuantBlock];
    const float v = s[i] - offset;
    const int want = nearest_or_tie(map, 256, v * (1.0f / a2), 1e-9);
    if (want >= 0) ASSERT_EQ(int(hp.m.dq.codes[i]), want) << "scale " << i;
    const float deq = effective_scale_cpu(hp.m, i);
    ASSERT_LE(std::fabs(deq - s[i]), 0.5f * max_gap * a2 + 1e-6f * s[i]) << "scale " << i;
  }
  for (std::int64_t b = 0; b * kDoubleQuantBlock < S; ++b) {
    float amax = 0;
    for (std::int64_t i = b * kDoubleQuantBlock; i < std::min(S, (b + 1) * kDoubleQuantBlock); ++i)
      amax = std::max(amax, std::fabs(s[i] - offset));
    EXPECT_EQ(hp.m.dq.absmax2[b], amax) << "block " << b;
  }
}

// ---- CPU: every rejected input returns its Status, before any CUDA call ---------------------------------

TEST(Quant_api, RejectsBadInputsWithTheirStatus) {
  const std::int64_t n = 8, k = 256;
  const QuantParams p{Format::kU4, 64, DType::kF16, false};
  HostPacked hp(n, k, p);
  std::vector<float> x(std::size_t(n * k), 1.0f);
  const float* xp = x.data();
  auto q = [&](const float* in, std::int64_t ld, const PackedMatrix& m) {
    return quantize(in, ld, m, nullptr, 0, nullptr);
  };
  PackedMatrix m = hp.m;
  EXPECT_EQ(q(nullptr, k, m), Status::kErrorNullPointer);
  m = hp.m, m.codes = nullptr;
  EXPECT_EQ(q(xp, k, m), Status::kErrorNullPointer);
  m = hp.m, m.scales = nullptr;
  EXPECT_EQ(q(xp, k, m), Status::kErrorNullPointer);
  m = hp.m, m.zeros = nullptr;
  EXPECT_EQ(q(xp, k, m), Status::kErrorNullPointer);
  EXPECT_EQ(q(reinterpret_cast<const float*>(reinterpret_cast<const char*>(xp) + 2), k, hp.m),
            Status::kErrorMisalignedPointer);
  m = hp.m, m.scales = static_cast<std::uint8_t*>(m.scales) + 1;
  EXPECT_EQ(q(xp, k, m), Status::kErrorMisalignedPointer);
  m = hp.m, m.group_size = 48;
  EXPECT_EQ(q(xp, k, m), Status::kErrorGroupSize);
  m = hp.m, m.k = 96;  // not a multiple of 64
  EXPECT_EQ(q(xp, k, m), Status::kErrorGroupSize);
  m = hp.m, m.n = 0;
  EXPECT_EQ(q(xp, k, m), Status::kErrorInvalidShape);
  m = hp.m, m.k = -2;
  EXPECT_EQ(q(xp, k, m), Status::kErrorInvalidShape);
  m = hp.m, m.k = 255, m.group_size = kPerChannel;  // odd K
  EXPECT_EQ(q(xp, k, m), Status::kErrorInvalidShape);
  EXPECT_EQ(q(xp, k - 2, hp.m), Status::kErrorLeadingDimension);
  m = hp.m, m.ld_codes = k / 2 - 1;
  EXPECT_EQ(q(xp, k, m), Status::kErrorLeadingDimension);
  m = hp.m, m.n = std::int64_t(1) << 60;  // n * ld_codes and n * ld * 4 overflow int64
  EXPECT_EQ(q(xp, k, m), Status::kErrorSizeOverflow);
  m = hp.m, m.format = static_cast<Format>(9);
  EXPECT_EQ(q(xp, k, m), Status::kErrorUnsupportedFormat);
  m = hp.m, m.dq.enabled = true;  // double quant needs fp32 scales
  EXPECT_EQ(q(xp, k, m), Status::kErrorUnsupportedFormat);
  EXPECT_EQ(packed_bytes(std::int64_t(1) << 62, 1024, p).status, Status::kErrorSizeOverflow);
  EXPECT_EQ(packed_bytes(8, 100, p).status, Status::kErrorGroupSize);

  // Double quant: its pointers and its workspace.
  HostPacked hd(n, k, {Format::kNf4, 64, DType::kF32, true});
  std::size_t ws = 0;
  ASSERT_EQ(get_quantize_workspace_size(hd.m, &ws), Status::kSuccess);
  EXPECT_EQ(ws, sizeof(double));  // 32 scales: one 256-block
  m = hd.m, m.dq.absmax2 = nullptr;
  EXPECT_EQ(q(xp, k, m), Status::kErrorNullPointer);
  EXPECT_EQ(quantize(xp, k, hd.m, nullptr, 0, nullptr), Status::kErrorNullPointer);
  alignas(8) unsigned char small[16];
  EXPECT_EQ(quantize(xp, k, hd.m, small, 4, nullptr), Status::kErrorWorkspaceTooSmall);
  EXPECT_EQ(quantize(xp, k, hd.m, small + 1, 15, nullptr), Status::kErrorMisalignedPointer);

  // dequantize and the streaming quantizer.
  std::vector<__half> out(std::size_t(n * k));
  EXPECT_EQ(dequantize(hp.m, out.data(), k - 1, nullptr), Status::kErrorLeadingDimension);
  EXPECT_EQ(dequantize<__half>(hp.m, nullptr, k, nullptr), Status::kErrorNullPointer);
  alignas(256) static unsigned char staging[1024];
  EXPECT_EQ(quantize_streaming(xp, k, hp.m, staging, 1024, nullptr), Status::kErrorWorkspaceTooSmall)
      << "a 1 KiB row does not fit half of 1 KiB";
  EXPECT_EQ(quantize_streaming(xp, k, hp.m, nullptr, 1 << 20, nullptr), Status::kErrorNullPointer);

  // Valid arguments on a machine without a GPU: kErrorUnsupportedDevice, never a crash.
  if (!nibble_test_has_gpu()) {
    EXPECT_EQ(q(xp, k, hp.m), Status::kErrorUnsupportedDevice);
  }
}

// ---- GPU: bit-identical to the CPU path ---------------------------------------------------------------------

struct GpuCase {
  Format format;
  DType input;
  int group;
  DType scale;
  bool dq;
};

std::string case_name(const ::testing::TestParamInfo<GpuCase>& info) {
  const GpuCase& c = info.param;
  auto dt = [](DType t) { return t == DType::kF32 ? "f32" : t == DType::kF16 ? "f16" : "bf16"; };
  return std::string(to_string(c.format)) + (c.group == kPerChannel ? "_perchannel" : "_g" + std::to_string(c.group)) +
         "_in_" + dt(c.input) + "_scale_" + dt(c.scale) + (c.dq ? "_dq" : "");
}

/// Every format x input type x group x scale type (and double quant). Under NIBBLE_QUICK=1 (the
/// compute-sanitizer runs of .ci/gpu-check) a subset that still covers each kernel path once: groups 32
/// (half-warp groups), 256 (whole-warp groups) and per-channel; fp16 scales for s4/u4, fp32 (and double
/// quant) for nf4/fp4.
std::vector<GpuCase> all_gpu_cases() {
  const char* quick_env = std::getenv("NIBBLE_QUICK");
  const bool quick = quick_env != nullptr && std::string(quick_env) == "1";
  std::vector<GpuCase> v;
  if (quick) {
    for (Format f : {Format::kS4, Format::kU4, Format::kNf4, Format::kFp4, Format::kAffineU4})
      for (DType in : {DType::kF32, DType::kF16, DType::kBF16})
        for (int g : {32, 256, kPerChannel}) {
          const bool codebook_format = is_codebook(f);
          v.push_back({f, in, g, codebook_format ? DType::kF32 : DType::kF16, false});
          if (codebook_format && in == DType::kF16) v.push_back({f, in, g, DType::kF32, true});
        }
    return v;
  }
  for (Format f : {Format::kS4, Format::kU4, Format::kNf4, Format::kFp4, Format::kAffineU4})
    for (DType in : {DType::kF32, DType::kF16, DType::kBF16})
      for (int g : {32, 64, 128, 256, kPerChannel}) {
        for (DType st : {DType::kF32, DType::kF16, DType::kBF16}) v.push_back({f, in, g, st, false});
        if (!has_offset(f)) v.push_back({f, in, g, DType::kF32, true});  // affine u4: no double quant
      }
  return v;
}

template <class T>
void expect_bytes_equal(const void* gpu, const void* cpu, std::size_t bytes, const char* what) {
  const auto* a = static_cast<const std::uint8_t*>(gpu);
  const auto* b = static_cast<const std::uint8_t*>(cpu);
  for (std::size_t i = 0; i < bytes; ++i) {
    if (a[i] != b[i]) {
      ADD_FAILURE() << what << ": first difference at byte " << i << " of " << bytes << " (gpu 0x" << std::hex
                    << int(a[i]) << ", cpu 0x" << int(b[i]) << std::dec << ")";
      return;
    }
  }
}

/// Copies a device packed matrix to a host one of the same parameters (buffers are laid out identically).
void download(const PackedMatrix& dev, const DeviceBuffer& dbuf, HostPacked& host) {
  ASSERT_EQ(cudaMemcpy(host.buf.data, dbuf.data, host.buf.bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  (void)dev;
}

void expect_packed_equal(const HostPacked& gpu, const HostPacked& cpu) {
  ASSERT_EQ(gpu.buf.bytes, cpu.buf.bytes);
  const PackedBytes b = packed_bytes(cpu.m.n, cpu.m.k, cpu.m.params(), cpu.m.ld_codes);
  expect_bytes_equal<std::uint8_t>(gpu.m.codes, cpu.m.codes, b.codes, "codes (incl. row padding)");
  expect_bytes_equal<std::uint8_t>(gpu.m.scales, cpu.m.scales, b.scales, "scales");
  if (b.zeros) expect_bytes_equal<std::uint8_t>(gpu.m.zeros, cpu.m.zeros, b.zeros, "zeros");
  if (b.offsets) expect_bytes_equal<std::uint8_t>(gpu.m.offsets, cpu.m.offsets, b.offsets, "offsets");
  if (b.dq_codes) {
    expect_bytes_equal<std::uint8_t>(gpu.m.dq.codes, cpu.m.dq.codes, b.dq_codes, "dq codes");
    expect_bytes_equal<std::uint8_t>(gpu.m.dq.absmax2, cpu.m.dq.absmax2, b.dq_absmax2, "dq absmax2");
    expect_bytes_equal<std::uint8_t>(gpu.m.dq.offset, cpu.m.dq.offset, b.dq_offset, "dq offset");
  }
}

template <class T>
void run_gpu_case(const GpuCase& c, std::int64_t n, std::int64_t k, std::int64_t ld, std::int64_t ld_codes) {
  SCOPED_TRACE("n=" + std::to_string(n) + " k=" + std::to_string(k) + " ld=" + std::to_string(ld) +
               " ld_codes=" + std::to_string(ld_codes));
  const QuantParams p{c.format, c.group, c.scale, c.dq};
  const std::vector<T> x = convert<T>(randn_matrix(n, ld));
  const PackedBytes b = packed_bytes(n, k, p, ld_codes);
  ASSERT_EQ(b.status, Status::kSuccess);

  HostPacked cpu(n, k, p, ld_codes);
  ASSERT_EQ(quantize_cpu(x.data(), ld, cpu.m), Status::kSuccess);

  DeviceBuffer d_x(x.size() * sizeof(T)), d_packed(b.total);
  ASSERT_EQ(cudaMemcpy(d_x.data, x.data(), d_x.bytes, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(d_packed.data, 0xA5, b.total),
            cudaSuccess);  // poison, like the host buffers
  PackedMatrix dm;
  ASSERT_EQ(carve_packed_matrix(n, k, p, d_packed.data, b.total, &dm, ld_codes), Status::kSuccess);
  std::size_t ws_bytes = 0;
  ASSERT_EQ(get_quantize_workspace_size(dm, &ws_bytes), Status::kSuccess);
  DeviceBuffer d_ws(ws_bytes);
  ASSERT_EQ(quantize(static_cast<const T*>(d_x.data), ld, dm, d_ws.data, ws_bytes, nullptr), Status::kSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  HostPacked gpu(n, k, p, ld_codes);
  download(dm, d_packed, gpu);
  expect_packed_equal(gpu, cpu);

  // Dequantize both ways from the SAME (GPU) packed data, into poisoned outputs with a padded pitch.
  const std::int64_t ld_out = ld % 2 == 0 ? k + 8 : k + 3;  // k + 8: 16-byte aligned rows (vector stores)
  std::vector<T> out_cpu(std::size_t(n * ld_out));
  std::memset(out_cpu.data(), 0xA5, out_cpu.size() * sizeof(T));
  ASSERT_EQ(dequantize_cpu(gpu.m, out_cpu.data(), ld_out), Status::kSuccess);
  DeviceBuffer d_out(out_cpu.size() * sizeof(T));
  ASSERT_EQ(cudaMemset(d_out.data, 0xA5, d_out.bytes), cudaSuccess);
  ASSERT_EQ(dequantize(dm, static_cast<T*>(d_out.data), ld_out, nullptr), Status::kSuccess);
  std::vector<T> out_gpu(out_cpu.size());
  ASSERT_EQ(cudaMemcpy(out_gpu.data(), d_out.data, d_out.bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  expect_bytes_equal<T>(out_gpu.data(), out_cpu.data(), d_out.bytes, "dequantized output (incl. padding)");
}

class QuantGpu : public ::testing::TestWithParam<GpuCase> {};

TEST_P(QuantGpu, BitIdenticalToCpu) {
  NIBBLE_REQUIRE_GPU();
  const GpuCase& c = GetParam();
  // 67 rows; k = 768 (a multiple of every group and of the 256 values a warp covers per step), and
  // k = 768 + g, whose last step leaves part of a warp idle (per-channel: k = 770, not a multiple of 8).
  // Each once with pitches that allow vector loads / stores, once with odd pitches (scalar paths).
  const std::int64_t n = 67;
  const std::int64_t k_odd = c.group == kPerChannel ? 770 : 768 + c.group;
  for (std::int64_t k : {std::int64_t(768), k_odd}) {
    if (k == 1024) continue;  // g = 256: already a multiple of 256
    for (int aligned = 1; aligned >= 0; --aligned) {
      const std::int64_t ld = aligned ? k + 64 : k + 5;
      const std::int64_t ld_codes = aligned ? k / 2 + 16 : k / 2 + 3;
      switch (c.input) {
        case DType::kF32:
          run_gpu_case<float>(c, n, k, ld, ld_codes);
          break;
        case DType::kF16:
          run_gpu_case<__half>(c, n, k, ld, ld_codes);
          break;
        case DType::kBF16:
          run_gpu_case<__nv_bfloat16>(c, n, k, ld, ld_codes);
          break;
      }
      if (HasFailure()) return;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllFormats, QuantGpu, ::testing::ValuesIn(all_gpu_cases()), case_name);

// ---- GPU: streaming from host memory ------------------------------------------------------------------------

void run_streaming(const QuantParams& p, bool pinned) {
  // [N = 1024, K = 4096] fp16 = 8 MiB, staged through 1 MiB (two 512 KiB halves of 64 rows): 16 chunks.
  const std::int64_t n = 1024, k = 4096, ld = k + 8;
  const std::size_t staging_bytes = std::size_t(1) << 20;
  const std::vector<__half> x = convert<__half>(randn_matrix(n, ld));
  __half* host = nullptr;
  std::vector<__half> pageable;
  if (pinned) {
    ASSERT_EQ(cudaMallocHost(&host, x.size() * sizeof(__half)), cudaSuccess);
    std::memcpy(host, x.data(), x.size() * sizeof(__half));
  } else {
    pageable = x;
    host = pageable.data();
  }
  const PackedBytes b = packed_bytes(n, k, p);
  ASSERT_EQ(b.status, Status::kSuccess);
  ASSERT_GE(std::size_t(n * k) * sizeof(__half), 4 * staging_bytes);

  // Peak device memory: no allocation inside the call. Free memory right after allocating output + staging
  // must not drop during the call (1 MiB slack for the driver's own bookkeeping).
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::size_t free0 = 0, free1 = 0, free2 = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free0, &total), cudaSuccess);  // before output + staging exist
  {
    DeviceBuffer d_packed(b.total), d_staging(staging_bytes);
    ASSERT_EQ(cudaMemset(d_packed.data, 0xA5, b.total), cudaSuccess);
    PackedMatrix dm;
    ASSERT_EQ(carve_packed_matrix(n, k, p, d_packed.data, b.total, &dm), Status::kSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::size_t free_alloc = 0;
    ASSERT_EQ(cudaMemGetInfo(&free_alloc, &total), cudaSuccess);
    cudaStream_t stream;
    ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
    // Warm-up call: with lazy module loading (the CUDA 12+ default) the first launch of each kernel loads
    // its code into device memory, which is the driver's, not an allocation of quantize_streaming.
    ASSERT_EQ(quantize_streaming(host, ld, dm, d_staging.data, staging_bytes, stream), Status::kSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    ASSERT_EQ(cudaMemset(d_packed.data, 0xA5, b.total), cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    ASSERT_EQ(cudaMemGetInfo(&free1, &total), cudaSuccess);
    ASSERT_EQ(quantize_streaming(host, ld, dm, d_staging.data, staging_bytes, stream), Status::kSuccess);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    ASSERT_EQ(cudaMemGetInfo(&free2, &total), cudaSuccess);
    ASSERT_EQ(cudaStreamDestroy(stream), cudaSuccess);
    std::printf(
        "[nibble] streaming (%s): packed %zu B + staging %zu B; free memory drop: allocation %zu "
        "B, "
        "during the call %lld B\n",
        pinned ? "pinned" : "pageable", b.total, staging_bytes, free0 - free_alloc,
        static_cast<long long>(free1) - static_cast<long long>(free2));
    EXPECT_LE(static_cast<long long>(free1) - static_cast<long long>(free2), 1ll << 20);
    EXPECT_LE(free0 - free_alloc, b.total + staging_bytes + (std::size_t(4) << 20))
        << "allocation granularity (2 MiB pages) aside, output + staging is all the device memory "
           "used";
    HostPacked streamed(n, k, p);
    ASSERT_EQ(cudaMemcpy(streamed.buf.data, d_packed.data, b.total, cudaMemcpyDeviceToHost), cudaSuccess);

    // The plain GPU quantizer on the same data (now the full matrix may live on the device).
    DeviceBuffer d_x(x.size() * sizeof(__half)), d_plain(b.total);
    ASSERT_EQ(cudaMemcpy(d_x.data, x.data(), d_x.bytes, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_EQ(cudaMemset(d_plain.data, 0xA5, b.total), cudaSuccess);
    PackedMatrix pm;
    ASSERT_EQ(carve_packed_matrix(n, k, p, d_plain.data, b.total, &pm), Status::kSuccess);
    std::size_t ws = 0;
    ASSERT_EQ(get_quantize_workspace_size(pm, &ws), Status::kSuccess);
    DeviceBuffer d_ws(ws);
    ASSERT_EQ(quantize(static_cast<const __half*>(d_x.data), ld, pm, d_ws.data, ws, nullptr), Status::kSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    HostPacked plain(n, k, p);
    ASSERT_EQ(cudaMemcpy(plain.buf.data, d_plain.data, b.total, cudaMemcpyDeviceToHost), cudaSuccess);
    expect_packed_equal(streamed, plain);
  }
  if (pinned) ASSERT_EQ(cudaFreeHost(host), cudaSuccess);
}

TEST(Quant_streaming_nf4_b64_dq_f16, PinnedMatchesPlainQuantizer) {
  NIBBLE_REQUIRE_GPU();
  run_streaming({Format::kNf4, 64, DType::kF32, true}, true);
}
TEST(Quant_streaming_nf4_b64_dq_f16, PageableMatchesPlainQuantizer) {
  NIBBLE_REQUIRE_GPU();
  run_streaming({Format::kNf4, 64, DType::kF32, true}, false);
}
TEST(Quant_streaming_u4_g128_f16, PinnedMatchesPlainQuantizer) {
  NIBBLE_REQUIRE_GPU();
  run_streaming({Format::kU4, 128, DType::kF16, false}, true);
}
TEST(Quant_streaming_affine_u4_g32_f16, PinnedMatchesPlainQuantizer) {
  NIBBLE_REQUIRE_GPU();
  run_streaming({Format::kAffineU4, 32, DType::kF16, false}, true);
}
TEST(Quant_streaming_s4_perchannel_f16, PageableMatchesPlainQuantizer) {
  NIBBLE_REQUIRE_GPU();
  run_streaming({Format::kS4, kPerChannel, DType::kBF16, false}, false);
}

// ---- bitsandbytes-compatible quantization (QuantizeOptions::bnb_compatible) -------------------------------
//
// The oracle is bitsandbytes' CUDA kQuantizeBlockwise written here from its published algorithm
// (csrc/kernels.cu: kQuantizeBlockwise, dQuantizeNF4, dQuantizeFP4, dQuantize<0>; bitsandbytes/functional.py:
// quantize_4bit with compress_statistics = quantize_blockwise(absmax - absmax.mean(), blocksize=256)), not from
// nibble's quant/group.cuh: one CUDA block per quantization block, a shared-memory max, the encoders as
// bitsandbytes' decision trees, and every fp32 operation spelled as the PTX instruction that bitsandbytes'
// --use_fast_math build makes of it (abs.ftz, max.ftz, rcp.approx.ftz for `1.0f / absmax`, mul.rn.ftz,
// add.rn.ftz). Test data: N(0, 1) groups, and groups whose values sit exactly on (and one representable value
// either side of) the decision thresholds times the group's absmax, in the input type; for fp32 / bf16 inputs
// also fp32 subnormals and products below 2^-126, where ftz decides.

__device__ __forceinline__ float ptx_abs_ftz(float x) {
  float r;
  asm("abs.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ float ptx_max_ftz(float a, float b) {
  float r;
  asm("max.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
__device__ __forceinline__ float ptx_rcp_approx_ftz(float x) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ float ptx_mul_ftz(float a, float b) {
  float r;
  asm("mul.rn.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
__device__ __forceinline__ float ptx_add_ftz(float a, float b) {
  float r;
  asm("add.rn.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}

/// bitsandbytes' NF4 decision tree (strict `>` at each of the 15 midpoints; NaN falls to code 0).
__device__ unsigned oracle_bnb_nf4(float x) {
  if (x > 0.03979014977812767f) {
    if (x > 0.3893125355243683f) {
      if (x > 0.6427869200706482f) return x > 0.8614784181118011f ? 15u : 14u;
      return x > 0.5016634166240692f ? 13u : 12u;
    }
    if (x > 0.2035212516784668f) return x > 0.2920137718319893f ? 11u : 10u;
    return x > 0.1202552504837513f ? 9u : 8u;
  }
  if (x > -0.33967943489551544f) {
    if (x > -0.13791173323988914f) return x > -0.045525018125772476f ? 7u : 6u;
    return x > -0.23460740596055984f ? 5u : 4u;
  }
  if (x > -0.6106329262256622f) return x > -0.4599952697753906f ? 3u : 2u;
  return x > -0.8480964004993439f ? 1u : 0u;
}

/// bitsandbytes' FP4 decision tree: sign bit 8 from `x < 0`, then the magnitude code of |x| (0, 1/192: code 1,
/// 1/6: 6, 1/4: 7, 1/3: 4, 1/2: 5, 2/3: 2, 1: 3).
__device__ unsigned oracle_bnb_fp4(float x) {
  const unsigned sign = x < 0.0f ? 8u : 0u;
  const float a = ptx_abs_ftz(x);
  unsigned c;
  if (a > 0.29166667f) {
    if (a > 0.583333f)
      c = a > 0.8333333f ? 3u : 2u;
    else
      c = a > 0.4166667f ? 5u : 4u;
  } else if (a > 0.0859375f) {
    c = a > 0.20833333f ? 7u : 6u;
  } else {
    c = a > 0.00260417f ? 1u : 0u;
  }
  return c + sign;
}

/// bitsandbytes' dQuantize<0>: a 7-step binary search from entry 127 of the sorted 256-entry map, then the
/// nearer of the final entry and its neighbour, the midpoint (a + b) * 0.5f compared strictly.
__device__ int oracle_bnb_dynamic(const float* map, float x) {
  int p = 127, hi = 255, lo = 0;
  float hi_v = 1.0f, lo_v = -1.0f;
  float v = map[p];
  for (int step = 64; step >= 1; step /= 2) {
    if (x > v) {
      lo = p;
      lo_v = v;
      p += step;
    } else {
      hi = p;
      hi_v = v;
      p -= step;
    }
    v = map[p];
  }
  if (hi == 255) hi_v = map[255];
  if (lo == 0) lo_v = map[0];
  if (x > v) return x > ptx_mul_ftz(ptx_add_ftz(hi_v, v), 0.5f) ? hi : p;
  return x < ptx_mul_ftz(ptx_add_ftz(lo_v, v), 0.5f) ? lo : p;
}

constexpr int kOracleThreads = 64;

/// Oracle first level: grid (k / g, n), kOracleThreads threads; codes_o [n, k] one code per byte,
/// absmax_o [n, k / g].
template <class T>
__global__ void oracle_bnb_quantize_4bit(const T* x, std::int64_t ld, std::int64_t k, int g, bool nf4,
                                         std::uint8_t* codes_o, float* absmax_o) {
  __shared__ float sMax[kOracleThreads];
  __shared__ float sInv;
  const std::int64_t r = blockIdx.y, j = blockIdx.x;
  const T* gX = x + r * ld + j * g;
  float m = -3.402823466e38f;  // bitsandbytes starts its per-thread max at -FLT_MAX
  for (int e = int(threadIdx.x); e < g; e += kOracleThreads) m = ptx_max_ftz(m, ptx_abs_ftz(to_float(gX[e])));
  sMax[threadIdx.x] = m;
  __syncthreads();
  if (threadIdx.x == 0) {
    float a = sMax[0];
    for (int t = 1; t < kOracleThreads; ++t) a = ptx_max_ftz(a, sMax[t]);
    absmax_o[r * (k / g) + j] = a;
    sInv = ptx_rcp_approx_ftz(a);  // `1.0f / local_abs_max` under --use_fast_math
  }
  __syncthreads();
  for (int e = int(threadIdx.x); e < g; e += kOracleThreads) {
    const float xn = ptx_mul_ftz(to_float(gX[e]), sInv);
    codes_o[r * k + j * g + e] = std::uint8_t(nf4 ? oracle_bnb_nf4(xn) : oracle_bnb_fp4(xn));
  }
}

/// Oracle second level: quantize_blockwise(scales - offset, blocksize=256) with the signed dynamic map. One
/// block of 256 threads per 256-block.
__global__ void oracle_bnb_quantize_8bit(const float* scales, std::int64_t num_scales, float offset, DynamicMap map,
                                         std::uint8_t* codes_o, float* absmax2_o) {
  __shared__ float sMap[256];
  __shared__ float sMax[256];
  __shared__ float sInv;
  const std::int64_t i = std::int64_t(blockIdx.x) * 256 + threadIdx.x;
  const bool valid = i < num_scales;
  const float v = valid ? __fsub_rn(scales[i], offset) : 0.0f;  // torch's `absmax - offset`: IEEE, no ftz
  sMap[threadIdx.x] = map.v[threadIdx.x];
  sMax[threadIdx.x] = ptx_max_ftz(-3.402823466e38f, ptx_abs_ftz(v));  // past the end: bitsandbytes loads 0
  __syncthreads();
  if (threadIdx.x == 0) {
    float a = sMax[0];
    for (int t = 1; t < 256; ++t) a = ptx_max_ftz(a, sMax[t]);
    absmax2_o[blockIdx.x] = a;
    sInv = ptx_rcp_approx_ftz(a);
  }
  __syncthreads();
  if (valid) codes_o[i] = std::uint8_t(oracle_bnb_dynamic(sMap, ptx_mul_ftz(v, sInv)));
}

/// bitsandbytes' decision thresholds, for building tie inputs (the FP4 ones apply to |x|).
constexpr float kBnbNf4Thresholds[15] = {
    -0.8480964004993439f,  -0.6106329262256622f,   -0.4599952697753906f, -0.33967943489551544f, -0.23460740596055984f,
    -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f, 0.1202552504837513f,   0.2035212516784668f,
    0.2920137718319893f,   0.3893125355243683f,    0.5016634166240692f,  0.6427869200706482f,   0.8614784181118011f};
constexpr float kBnbFp4Thresholds[7] = {0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f,
                                        0.4166667f,  0.583333f,  0.8333333f};

/// `t` moved `steps` (-1, 0, 1) representable values of T away from zero (toward zero if negative).
template <class T>
T nudge(T t, int steps) {
  using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint16_t>;
  static_assert(sizeof(T) == sizeof(Bits), "fp32, fp16 or bf16");
  Bits b;
  std::memcpy(&b, &t, sizeof b);
  const Bits sign = Bits(Bits(1) << (8 * sizeof(Bits) - 1));
  const Bits mag = Bits(b & Bits(~sign));
  if (mag == 0) return t;
  b = Bits((b & sign) | Bits(mag + Bits(steps)));
  std::memcpy(&t, &b, sizeof b);
  return t;
}

/// [n, ld] input in T for the bnb tests. Groups (r, j) by (r * groups + j) % 4: 0 N(0, 1); 1, 2 ties with an
/// absmax from a fixed list (small fractions, so x / absmax is short: 1, 3, 12, ...); 3 ties with a random
/// absmax. Each tie group: element 0 = +-absmax, the rest round_T(threshold * absmax) nudged by -1, 0 or +1
/// representable values (FP4: random sign). For fp32 / bf16 (`wide`) the last two rows are special: row n-1
/// holds fp32 subnormals only (bitsandbytes' ftz makes its absmax 0); row n-2 groups have absmax 2^100 and
/// values -m * 2^-40, whose normalized value (about 2^-140) is subnormal and flushed to -0 (FP4 code 0, not 8),
/// and one subnormal input per group next to a normal absmax.
template <class T>
std::vector<T> bnb_test_matrix(Format f, std::int64_t n, std::int64_t k, std::int64_t ld, std::int64_t g) {
  auto rng = nibble_test_rng();
  std::vector<T> x = convert<T>(nibble_test_normal(rng, std::size_t(n * ld)));
  std::uniform_int_distribution<int> pick(0, 1 << 30);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  constexpr float kAbsmax[] = {1.0f, 3.0f, 12.0f, 6.0f, 10.0f, 7.0f, 0.75f, 2.5f, 0.1f, 5.5f, 0.3f, 1.5f, 2.0f, 0.5f};
  constexpr int kAbsmaxCount = int(sizeof(kAbsmax) / sizeof(kAbsmax[0]));
  const bool nf4 = f == Format::kNf4;
  const float* th = nf4 ? kBnbNf4Thresholds : kBnbFp4Thresholds;
  const int th_count = nf4 ? 15 : 7;
  const bool wide = !std::is_same_v<T, __half>;
  const std::int64_t groups = k / g;
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::int64_t j = 0; j < groups; ++j) {
      T* grp = x.data() + r * ld + j * g;
      if (wide && r == n - 1) {  // fp32 subnormals only: +-m * 2^-133, m in [1, 127] (exact in bf16 too)
        for (std::int64_t e = 0; e < g; ++e) {
          const float v = std::ldexp(float(1 + pick(rng) % 127), -133);
          grp[e] = from_float<T>(pick(rng) % 2 ? v : -v);
        }
        continue;
      }
      if (wide && r == n - 2) {  // absmax 2^100, products below 2^-126, one subnormal input
        grp[0] = from_float<T>(std::ldexp(1.0f, 100));
        for (std::int64_t e = 1; e < g; ++e) grp[e] = from_float<T>(-std::ldexp(float(1 + pick(rng) % 127), -40));
        grp[1] = from_float<T>(-std::ldexp(1.0f, -130));
        continue;
      }
      const int kind = int((r * groups + j) % 4);
      if (kind == 0) continue;
      float a = kind == 3 ? std::fabs(normal(rng)) * 4.0f + 0.05f : kAbsmax[pick(rng) % kAbsmaxCount];
      a = to_float(from_float<T>(a));
      grp[0] = from_float<T>(pick(rng) % 2 ? a : -a);
      for (std::int64_t e = 1; e < g; ++e) {
        float t = th[pick(rng) % th_count];
        if (!nf4 && pick(rng) % 2) t = -t;
        const T v = from_float<T>(static_cast<float>(double(t) * double(a)));
        grp[e] = nudge(v, pick(rng) % 3 - 1);
      }
      if (wide && kind == 3) grp[g - 1] = from_float<T>(-std::ldexp(1.0f, -128));  // a subnormal input
    }
  }
  return x;
}

/// 4-bit code (r, kk) of a plain-layout packed matrix (host memory).
unsigned code_at(const PackedMatrix& m, std::int64_t r, std::int64_t kk) {
  const std::uint8_t byte = m.codes[r * m.ld_codes + kk / 2];
  return (kk % 2 == 0 ? byte : byte >> 4) & 0xFu;
}

std::uint32_t bits_of(float v) {
  std::uint32_t b;
  std::memcpy(&b, &v, 4);
  return b;
}

struct BnbCase {
  Format format;
  DType input;
  int group;
};

std::string bnb_case_name(const ::testing::TestParamInfo<BnbCase>& info) {
  const BnbCase& c = info.param;
  const char* in = c.input == DType::kF32 ? "f32" : c.input == DType::kF16 ? "f16" : "bf16";
  return std::string(to_string(c.format)) + (c.group == kPerChannel ? "_perchannel" : "_g" + std::to_string(c.group)) +
         "_in_" + in;
}

std::vector<BnbCase> all_bnb_cases() {
  std::vector<BnbCase> v;
  for (Format f : {Format::kNf4, Format::kFp4})
    for (DType in : {DType::kF32, DType::kF16, DType::kBF16})
      for (int g : {32, 64, 128, 256, kPerChannel}) v.push_back({f, in, g});
  return v;
}

/// Quantizes x [n, k] (host, pitch ld) on the GPU with `opt` into a host copy of the packed matrix.
template <class T>
void gpu_quantize_to_host(const std::vector<T>& x, std::int64_t ld, const QuantParams& p, const QuantizeOptions& opt,
                          HostPacked& out) {
  const std::int64_t n = out.m.n, k = out.m.k;
  const PackedBytes b = packed_bytes(n, k, p);
  ASSERT_EQ(b.status, Status::kSuccess);
  DeviceBuffer d_x(x.size() * sizeof(T)), d_packed(b.total);
  ASSERT_EQ(cudaMemcpy(d_x.data, x.data(), d_x.bytes, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(d_packed.data, 0xA5, b.total), cudaSuccess);
  PackedMatrix dm;
  ASSERT_EQ(carve_packed_matrix(n, k, p, d_packed.data, b.total, &dm), Status::kSuccess);
  std::size_t ws_bytes = 0;
  ASSERT_EQ(get_quantize_workspace_size(dm, &ws_bytes), Status::kSuccess);
  DeviceBuffer d_ws(ws_bytes);
  ASSERT_EQ(quantize(static_cast<const T*>(d_x.data), ld, dm, opt, d_ws.data, ws_bytes, nullptr), Status::kSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  ASSERT_EQ(out.buf.bytes, b.total);
  ASSERT_EQ(cudaMemcpy(out.buf.data, d_packed.data, b.total, cudaMemcpyDeviceToHost), cudaSuccess);
}

/// The oracle's first level on x [n, k] (host, pitch ld): codes [n * k] one per byte, absmax [n * k / g].
template <class T>
void oracle_first_level(const std::vector<T>& x, std::int64_t n, std::int64_t k, std::int64_t ld, std::int64_t g,
                        Format f, std::vector<std::uint8_t>* codes, std::vector<float>* absmax) {
  DeviceBuffer d_x(x.size() * sizeof(T)), d_codes{std::size_t(n * k)}, d_absmax(std::size_t(n * (k / g)) * 4);
  ASSERT_EQ(cudaMemcpy(d_x.data, x.data(), d_x.bytes, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(d_codes.data, 0xFF, d_codes.bytes), cudaSuccess);
  oracle_bnb_quantize_4bit<T><<<dim3(unsigned(k / g), unsigned(n)), kOracleThreads>>>(
      static_cast<const T*>(d_x.data), ld, k, int(g), f == Format::kNf4, static_cast<std::uint8_t*>(d_codes.data),
      static_cast<float*>(d_absmax.data));
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  codes->resize(d_codes.bytes);
  absmax->resize(std::size_t(n * (k / g)));
  ASSERT_EQ(cudaMemcpy(codes->data(), d_codes.data, d_codes.bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(absmax->data(), d_absmax.data, d_absmax.bytes, cudaMemcpyDeviceToHost), cudaSuccess);
}

/// The oracle's second level on `scales` (host) with `offset`: codes [S], absmax2 [ceil(S / 256)].
void oracle_second_level(const float* scales, std::int64_t num_scales, float offset, std::vector<std::uint8_t>* codes,
                         std::vector<float>* absmax2) {
  const std::int64_t blocks = (num_scales + 255) / 256;
  DeviceBuffer d_s(std::size_t(num_scales) * 4), d_codes{std::size_t(num_scales)}, d_a2(std::size_t(blocks) * 4);
  ASSERT_EQ(cudaMemcpy(d_s.data, scales, d_s.bytes, cudaMemcpyHostToDevice), cudaSuccess);
  oracle_bnb_quantize_8bit<<<unsigned(blocks), 256>>>(static_cast<const float*>(d_s.data), num_scales, offset,
                                                      dynamic_map(), static_cast<std::uint8_t*>(d_codes.data),
                                                      static_cast<float*>(d_a2.data));
  ASSERT_EQ(cudaGetLastError(), cudaSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  codes->resize(std::size_t(num_scales));
  absmax2->resize(std::size_t(blocks));
  ASSERT_EQ(cudaMemcpy(codes->data(), d_codes.data, d_codes.bytes, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(absmax2->data(), d_a2.data, d_a2.bytes, cudaMemcpyDeviceToHost), cudaSuccess);
}

template <class T>
void run_bnb_case(const BnbCase& c, std::int64_t n, std::int64_t k, std::int64_t ld) {
  SCOPED_TRACE("n=" + std::to_string(n) + " k=" + std::to_string(k) + " ld=" + std::to_string(ld));
  const std::int64_t g = effective_group(c.group, k);
  const QuantParams p{c.format, c.group, DType::kF32, false};
  const std::vector<T> x = bnb_test_matrix<T>(c.format, n, k, ld, g);
  std::vector<std::uint8_t> want;
  std::vector<float> want_absmax;
  oracle_first_level<T>(x, n, k, ld, g, c.format, &want, &want_absmax);
  if (::testing::Test::HasFatalFailure()) return;

  QuantizeOptions bnb;
  bnb.bnb_compatible = true;
  HostPacked got(n, k, p), def(n, k, p), cpu_def(n, k, p), cpu_bnb(n, k, p);
  gpu_quantize_to_host<T>(x, ld, p, bnb, got);
  gpu_quantize_to_host<T>(x, ld, p, QuantizeOptions{}, def);
  if (::testing::Test::HasFatalFailure()) return;
  ASSERT_EQ(quantize_cpu(x.data(), ld, cpu_def.m), Status::kSuccess);
  ASSERT_EQ(quantize_cpu(x.data(), ld, cpu_bnb.m, bnb), Status::kSuccess);

  const std::int64_t groups = k / g;
  int bad_scales = 0;
  for (std::int64_t si = 0; si < n * groups; ++si) {
    const float s = static_cast<const float*>(got.m.scales)[si];
    if (bits_of(s) != bits_of(want_absmax[std::size_t(si)]) && bad_scales++ < 5)
      ADD_FAILURE() << "absmax of group " << si << ": nibble " << s << ", bitsandbytes "
                    << want_absmax[std::size_t(si)];
  }
  std::int64_t bad = 0, default_differs = 0, cpu_bnb_differs = 0;
  for (std::int64_t r = 0; r < n; ++r) {
    for (std::int64_t kk = 0; kk < k; ++kk) {
      const unsigned w = want[std::size_t(r * k + kk)];
      const unsigned gcode = code_at(got.m, r, kk);
      if (gcode != w && bad++ < 8) {
        const float xv = to_float(x[std::size_t(r * ld + kk)]);
        const float a = want_absmax[std::size_t(r * groups + kk / g)];
        ADD_FAILURE() << "code (" << r << ", " << kk << "): nibble bnb_compatible " << gcode << ", bitsandbytes " << w
                      << "; x = " << xv << " (0x" << std::hex << bits_of(xv) << "), absmax = " << a << " (0x"
                      << bits_of(a) << std::dec << ")";
      }
      default_differs += code_at(def.m, r, kk) != w;
      cpu_bnb_differs += code_at(cpu_bnb.m, r, kk) != gcode;
    }
  }
  EXPECT_EQ(bad, 0) << "codes differing from the bitsandbytes oracle, of " << n * k;
  // The default rule is unchanged: the GPU equals the CPU reference bit for bit on the same (tie) data.
  expect_packed_equal(def, cpu_def);
  std::printf(
      "[nibble] %s %s g%lld ld=%lld: bnb_compatible == oracle on %lld codes; default rule differs from "
      "bitsandbytes on %lld codes, the CPU bnb path (IEEE reciprocal) from the GPU on %lld\n",
      to_string(c.format),
      c.input == DType::kF32   ? "f32"
      : c.input == DType::kF16 ? "f16"
                               : "bf16",
      static_cast<long long>(g), static_cast<long long>(ld), static_cast<long long>(n * k - bad),
      static_cast<long long>(default_differs), static_cast<long long>(cpu_bnb_differs));
  // By construction (row n-2: products below 2^-126 of negative values) the default FP4 rule keeps the sign
  // bit where bitsandbytes' ftz makes the code 0: the option matters for fp32 / bf16 inputs.
  if (c.format == Format::kFp4 && c.input != DType::kF16) EXPECT_GT(default_differs, 0);
}

class QuantBnbGpu : public ::testing::TestWithParam<BnbCase> {};

TEST_P(QuantBnbGpu, CodesMatchBitsandbytesOracle) {
  NIBBLE_REQUIRE_GPU();
  const BnbCase& c = GetParam();
  const std::int64_t n = 64, k = c.group == kPerChannel ? 1024 : 768;
  for (std::int64_t ld : {k + 8, k + 5}) {  // vector loads, then scalar ones
    switch (c.input) {
      case DType::kF32:
        run_bnb_case<float>(c, n, k, ld);
        break;
      case DType::kF16:
        run_bnb_case<__half>(c, n, k, ld);
        break;
      case DType::kBF16:
        run_bnb_case<__nv_bfloat16>(c, n, k, ld);
        break;
    }
    if (::testing::Test::HasFailure()) return;
  }
}

INSTANTIATE_TEST_SUITE_P(Bnb, QuantBnbGpu, ::testing::ValuesIn(all_bnb_cases()), bnb_case_name);

/// fp64 sum of `count` floats, in order (the tests' own; nibble's order is a tree).
double sum_f64(const float* v, std::int64_t count) {
  double s = 0.0;
  for (std::int64_t i = 0; i < count; ++i) s += double(v[i]);
  return s;
}

/// bitsandbytes' compress_statistics on the GPU, both ways of getting the offset, nf4 and fp4.
TEST(QuantBnbGpu_dq, SecondLevelMatchesOracle) {
  NIBBLE_REQUIRE_GPU();
  const std::int64_t n = 300, k = 1024, ld = k + 8;  // 4800 scales: 19 blocks of 256, the last partial
  for (Format f : {Format::kNf4, Format::kFp4}) {
    SCOPED_TRACE(to_string(f));
    const QuantParams p{f, 64, DType::kF32, true};
    const std::vector<__half> x = bnb_test_matrix<__half>(f, n, k, ld, 64);
    std::vector<std::uint8_t> want1;
    std::vector<float> want_absmax;
    oracle_first_level<__half>(x, n, k, ld, 64, f, &want1, &want_absmax);
    if (::testing::Test::HasFatalFailure()) return;
    const std::int64_t S = n * (k / 64);
    const float* oracle_scales = want_absmax.data();

    // (a) No override: offset = float(sum) * (1.0f / S), torch's last step, from the correctly rounded sum.
    QuantizeOptions bnb;
    bnb.bnb_compatible = true;
    HostPacked got(n, k, p);
    gpu_quantize_to_host<__half>(x, ld, p, bnb, got);
    if (::testing::Test::HasFatalFailure()) return;
    const float* scales = static_cast<const float*>(got.m.scales);  // the fp32 first level (scratch)
    for (std::int64_t i = 0; i < S; ++i) ASSERT_EQ(bits_of(scales[i]), bits_of(oracle_scales[i])) << "scale " << i;
    const float want_offset =
        static_cast<float>(sum_f64(oracle_scales, S)) * (1.0f / static_cast<float>(S));  // fp32 multiply
    EXPECT_EQ(bits_of(*got.m.dq.offset), bits_of(want_offset))
        << "offset " << *got.m.dq.offset << ", want " << want_offset;
    std::vector<std::uint8_t> want2;
    std::vector<float> want_absmax2;
    oracle_second_level(oracle_scales, S, *got.m.dq.offset, &want2, &want_absmax2);
    if (::testing::Test::HasFatalFailure()) return;
    int bad = 0;
    for (std::int64_t i = 0; i < S; ++i)
      if (got.m.dq.codes[i] != want2[std::size_t(i)] && bad++ < 5)
        ADD_FAILURE() << "dq code " << i << ": nibble " << int(got.m.dq.codes[i]) << ", bitsandbytes "
                      << int(want2[std::size_t(i)]);
    for (std::size_t b = 0; b < want_absmax2.size(); ++b)
      EXPECT_EQ(bits_of(got.m.dq.absmax2[b]), bits_of(want_absmax2[b])) << "absmax2 block " << b;
    for (std::int64_t r = 0; r < n && bad == 0; ++r)
      for (std::int64_t kk = 0; kk < k; ++kk)
        if (code_at(got.m, r, kk) != want1[std::size_t(r * k + kk)] && bad++ < 5)
          ADD_FAILURE() << "code (" << r << ", " << kk << ")";

    // (b) With the caller's offset (here: a sequential fp32 sum times 1 / S, a value a torch mean could give;
    // nudged by one ulp so that it differs from (a)): stored as given, and the second level uses it.
    float seq = 0.0f;
    for (std::int64_t i = 0; i < S; ++i) seq += oracle_scales[i];
    const float override_offset = std::nextafter(seq * (1.0f / static_cast<float>(S)), 1.0f);
    QuantizeOptions bnb_o = bnb;
    bnb_o.dq_offset_override = override_offset;
    HostPacked got_o(n, k, p);
    gpu_quantize_to_host<__half>(x, ld, p, bnb_o, got_o);
    if (::testing::Test::HasFatalFailure()) return;
    EXPECT_EQ(bits_of(*got_o.m.dq.offset), bits_of(override_offset));
    oracle_second_level(oracle_scales, S, override_offset, &want2, &want_absmax2);
    if (::testing::Test::HasFatalFailure()) return;
    bad = 0;
    for (std::int64_t i = 0; i < S; ++i)
      if (got_o.m.dq.codes[i] != want2[std::size_t(i)] && bad++ < 5)
        ADD_FAILURE() << "dq code " << i << " (override): nibble " << int(got_o.m.dq.codes[i]) << ", bitsandbytes "
                      << int(want2[std::size_t(i)]);
    for (std::size_t b = 0; b < want_absmax2.size(); ++b)
      EXPECT_EQ(bits_of(got_o.m.dq.absmax2[b]), bits_of(want_absmax2[b])) << "absmax2 block " << b << " (override)";
  }
}

/// quantize_streaming passes the options through: bnb_compatible + double quant + override, fp4, fp16.
TEST(QuantBnbGpu_streaming_fp4_b64_dq_f16, MatchesPlainQuantizer) {
  NIBBLE_REQUIRE_GPU();
  const std::int64_t n = 256, k = 1024, ld = k + 8;
  const QuantParams p{Format::kFp4, 64, DType::kF32, true};
  const std::vector<__half> x = bnb_test_matrix<__half>(p.format, n, k, ld, 64);
  QuantizeOptions opt;
  opt.bnb_compatible = true;
  opt.dq_offset_override = 0.75f;
  HostPacked plain(n, k, p);
  gpu_quantize_to_host<__half>(x, ld, p, opt, plain);
  if (::testing::Test::HasFatalFailure()) return;
  const PackedBytes b = packed_bytes(n, k, p);
  const std::size_t staging_bytes = 16 * 1024;  // two 8 KiB halves: 4 rows of 2 KiB per chunk
  DeviceBuffer d_packed(b.total), d_staging(staging_bytes);
  ASSERT_EQ(cudaMemset(d_packed.data, 0xA5, b.total), cudaSuccess);
  PackedMatrix dm;
  ASSERT_EQ(carve_packed_matrix(n, k, p, d_packed.data, b.total, &dm), Status::kSuccess);
  ASSERT_EQ(quantize_streaming(x.data(), ld, dm, opt, d_staging.data, staging_bytes, nullptr), Status::kSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  HostPacked streamed(n, k, p);
  ASSERT_EQ(cudaMemcpy(streamed.buf.data, d_packed.data, b.total, cudaMemcpyDeviceToHost), cudaSuccess);
  expect_packed_equal(streamed, plain);
  EXPECT_EQ(*streamed.m.dq.offset, 0.75f);
}

// ---- CPU: bnb_compatible's API and the host side of its rule ------------------------------------------------

TEST(Quant_bnb_api, RejectsBadOptionCombinations) {
  const std::int64_t n = 8, k = 256;
  std::vector<float> x(std::size_t(n * k), 0.5f);
  const float* xp = x.data();
  QuantizeOptions bnb;
  bnb.bnb_compatible = true;
  QuantizeOptions offset_only;
  offset_only.dq_offset_override = 0.25f;
  alignas(256) static unsigned char staging[1 << 16];
  // Every entry point returns the same Status before any CUDA call.
  auto all = [&](const PackedMatrix& m, const QuantizeOptions& o, Status want, const char* what) {
    EXPECT_EQ(can_implement_quantize(xp, k, m, o), want) << what;
    EXPECT_EQ(quantize_cpu(xp, k, m, o), want) << what;
    EXPECT_EQ(quantize(xp, k, m, o, staging, sizeof staging, nullptr), want) << what;
    EXPECT_EQ(quantize_streaming(xp, k, m, o, staging, sizeof staging, nullptr), want) << what;
  };
  for (Format f : {Format::kS4, Format::kU4}) {
    HostPacked hp(n, k, {f, 64, DType::kF16, false});
    all(hp.m, bnb, Status::kErrorUnsupportedFormat, "bnb_compatible with s4 / u4");
  }
  for (DType st : {DType::kF16, DType::kBF16}) {
    HostPacked hp(n, k, {Format::kNf4, 64, st, false});
    all(hp.m, bnb, Status::kErrorUnsupportedFormat, "bnb_compatible with 16-bit scales");
  }
  HostPacked plain(n, k, {Format::kFp4, 64, DType::kF32, false});
  all(plain.m, offset_only, Status::kErrorInvalidArgument, "dq_offset_override without double quant");
  QuantizeOptions bnb_offset = bnb;
  bnb_offset.dq_offset_override = 0.25f;
  all(plain.m, bnb_offset, Status::kErrorInvalidArgument, "dq_offset_override without double quant (bnb)");
  HostPacked dq(n, k, {Format::kNf4, 64, DType::kF32, true});
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    QuantizeOptions o = bnb;
    o.dq_offset_override = bad;
    all(dq.m, o, Status::kErrorInvalidArgument, "non-finite dq_offset_override");
  }
  // The matrix's own errors still come first (documented order), then the options'.
  PackedMatrix broken = dq.m;
  broken.codes = nullptr;
  EXPECT_EQ(can_implement_quantize(xp, k, broken, offset_only), Status::kErrorNullPointer);
  HostPacked s4(n, k, {Format::kS4, 64, DType::kF16, false});
  EXPECT_EQ(can_implement_quantize(xp, k - 2, s4.m, bnb), Status::kErrorLeadingDimension);
  // Valid combinations.
  EXPECT_EQ(can_implement_quantize(xp, k, plain.m, bnb), Status::kSuccess);
  EXPECT_EQ(can_implement_quantize(xp, k, dq.m, bnb_offset), Status::kSuccess);
  EXPECT_EQ(can_implement_quantize(xp, k, dq.m, offset_only), Status::kSuccess);
  EXPECT_EQ(quantize_cpu(xp, k, dq.m, bnb_offset), Status::kSuccess);
  if (!nibble_test_has_gpu()) {
    EXPECT_EQ(quantize(xp, k, plain.m, bnb, nullptr, 0, nullptr), Status::kErrorUnsupportedDevice);
  }
}

TEST(Quant_bnb_cpu, DefaultOptionsAreTheDefaultRule) {
  const std::int64_t n = 32, k = 512;
  const auto x = randn_matrix(n, k);
  for (Format f : {Format::kS4, Format::kU4, Format::kNf4, Format::kFp4}) {
    for (bool dq : {false, true}) {
      if (dq && !is_codebook(f)) continue;
      const QuantParams p{f, 64, DType::kF32, dq};
      HostPacked a(n, k, p), b(n, k, p);
      ASSERT_EQ(quantize_cpu(x.data(), k, a.m), Status::kSuccess);
      ASSERT_EQ(quantize_cpu(x.data(), k, b.m, QuantizeOptions{}), Status::kSuccess);
      expect_packed_equal(a, b);
    }
  }
}

TEST(Quant_bnb_cpu, PowerOfTwoAbsmaxGivesTheDefaultCodes) {
  // With an absmax that is a power of two, 1 / absmax is exact either way and normal inputs never meet ftz, so
  // bnb_compatible's host path gives the default codes: the two rules differ only where they should.
  const std::int64_t n = 64, k = 1024, g = 64;
  auto x = randn_matrix(n, k);
  for (std::int64_t r = 0; r < n; ++r)
    for (std::int64_t j = 0; j < k / g; ++j) {
      float* grp = x.data() + r * k + j * g;
      float m = 0.0f;
      for (std::int64_t e = 0; e < g; ++e) m = std::max(m, std::fabs(grp[e]));
      grp[(r + j) % g] = std::exp2(std::ceil(std::log2(m)));  // the group's absmax, a power of two
    }
  for (Format f : {Format::kNf4, Format::kFp4}) {
    const QuantParams p{f, int(g), DType::kF32, false};
    QuantizeOptions bnb;
    bnb.bnb_compatible = true;
    HostPacked def(n, k, p), got(n, k, p);
    ASSERT_EQ(quantize_cpu(x.data(), k, def.m), Status::kSuccess);
    ASSERT_EQ(quantize_cpu(x.data(), k, got.m, bnb), Status::kSuccess);
    expect_packed_equal(got, def);
  }
}

TEST(Quant_bnb_cpu, FlushesSubnormalsLikeFastMath) {
  // One row, four groups of 32, fp32 input:
  //   group 0: absmax 1, x[1] = -1e-40 (subnormal): bnb flushes it to -0 (fp4 code 0), the default keeps the
  //            sign (code 8); nf4 gives code 7 (zero) both ways.
  //   group 1: subnormals only: bnb's absmax is 0 (all codes 0, bitsandbytes' NaN path); the default's is the
  //            largest subnormal.
  //   group 2: absmax 2^100, x[1] = -2^-40: x / absmax = -2^-140 is subnormal: bnb code 0, default code 8.
  //   group 3: absmax 3, N(0, 1) / 2 values: the same scale either way.
  const std::int64_t k = 128;
  auto x = randn_matrix(1, k);
  for (float& v : x) v = std::max(-0.9f, std::min(0.9f, 0.25f * v));
  x[0] = 1.0f;
  x[1] = -1e-40f;
  for (int e = 32; e < 64; ++e) x[std::size_t(e)] = (e % 2 ? -1.0f : 1.0f) * std::ldexp(float(e), -140);
  x[64] = std::ldexp(1.0f, 100);
  for (int e = 65; e < 96; ++e) x[std::size_t(e)] = -std::ldexp(1.0f, -40);
  x[96] = 3.0f;
  ASSERT_EQ(std::fpclassify(x[1]), FP_SUBNORMAL);
  QuantizeOptions bnb;
  bnb.bnb_compatible = true;
  for (Format f : {Format::kNf4, Format::kFp4}) {
    SCOPED_TRACE(to_string(f));
    const QuantParams p{f, 32, DType::kF32, false};
    HostPacked def(1, k, p), got(1, k, p);
    ASSERT_EQ(quantize_cpu(x.data(), k, def.m), Status::kSuccess);
    ASSERT_EQ(quantize_cpu(x.data(), k, got.m, bnb), Status::kSuccess);
    const float* sd = static_cast<const float*>(def.m.scales);
    const float* sb = static_cast<const float*>(got.m.scales);
    EXPECT_EQ(sb[0], 1.0f);
    EXPECT_EQ(sb[1], 0.0f) << "ftz: an all-subnormal group has absmax 0";
    EXPECT_EQ(sd[1], std::ldexp(63.0f, -140));
    EXPECT_EQ(sb[2], std::ldexp(1.0f, 100));
    EXPECT_EQ(sb[3], 3.0f);
    EXPECT_EQ(sd[3], 3.0f);
    const unsigned zero = f == Format::kNf4 ? 7u : 0u;
    EXPECT_EQ(code_at(got.m, 0, 1), zero);
    EXPECT_EQ(code_at(def.m, 0, 1), f == Format::kNf4 ? 7u : 8u);
    for (int e = 32; e < 64; ++e) EXPECT_EQ(code_at(got.m, 0, e), 0u) << e;
    for (int e = 65; e < 96; ++e) {
      EXPECT_EQ(code_at(got.m, 0, e), zero) << e;
      EXPECT_EQ(code_at(def.m, 0, e), f == Format::kNf4 ? 7u : 8u) << e;
    }
    // Normal inputs of group 3: only the reciprocal can differ (IEEE on the host either way here).
    for (int e = 96; e < 128; ++e) EXPECT_EQ(code_at(got.m, 0, e), code_at(def.m, 0, e)) << e;
    // All of these dequantize to what the default does up to the sign of zero.
    std::vector<float> dd(k), db(k);
    ASSERT_EQ(dequantize_cpu(def.m, dd.data(), k), Status::kSuccess);
    ASSERT_EQ(dequantize_cpu(got.m, db.data(), k), Status::kSuccess);
    EXPECT_EQ(db[1], 0.0f);
    for (int e = 65; e < 96; ++e) EXPECT_EQ(db[std::size_t(e)], 0.0f) << e;
  }
}

TEST(Quant_bnb_cpu, DoubleQuantOffset) {
  const std::int64_t n = 300, k = 1024;  // 4800 scales, not a power of two
  const auto x = randn_matrix(n, k);
  const QuantParams p{Format::kNf4, 64, DType::kF32, true};
  const std::int64_t S = n * (k / 64);
  QuantizeOptions bnb;
  bnb.bnb_compatible = true;
  HostPacked def(n, k, p), got(n, k, p);
  ASSERT_EQ(quantize_cpu(x.data(), k, def.m), Status::kSuccess);
  ASSERT_EQ(quantize_cpu(x.data(), k, got.m, bnb), Status::kSuccess);
  const float* s = static_cast<const float*>(got.m.scales);
  const double sum = sum_f64(s, S);
  // Default: float(sum / S). bnb_compatible: torch's MeanOps, float(sum) * (1.0f / float(S)).
  EXPECT_EQ(*def.m.dq.offset, static_cast<float>(sum / double(S)));
  EXPECT_EQ(*got.m.dq.offset, static_cast<float>(sum) * (1.0f / static_cast<float>(S)));
  std::printf("[nibble] dq offset of %lld scales: default %.9g, bnb_compatible %.9g\n", static_cast<long long>(S),
              double(*def.m.dq.offset), double(*got.m.dq.offset));

  // An override is stored as given, in either rule, and the second level is computed from it.
  for (bool with_bnb : {false, true}) {
    QuantizeOptions o;
    o.bnb_compatible = with_bnb;
    o.dq_offset_override = 0.625f;
    HostPacked hp(n, k, p);
    ASSERT_EQ(quantize_cpu(x.data(), k, hp.m, o), Status::kSuccess);
    EXPECT_EQ(*hp.m.dq.offset, 0.625f);
    const float* hs = static_cast<const float*>(hp.m.scales);
    const float* map = dynamic_map().v;
    for (std::int64_t b = 0; b * kDoubleQuantBlock < S; ++b) {
      float amax = 0.0f;
      for (std::int64_t i = b * kDoubleQuantBlock; i < std::min(S, (b + 1) * kDoubleQuantBlock); ++i)
        amax = std::max(amax, std::fabs(hs[i] - 0.625f));
      ASSERT_EQ(hp.m.dq.absmax2[b], amax) << "block " << b;
    }
    for (std::int64_t i = 0; i < S; ++i) {
      const float a2 = hp.m.dq.absmax2[i / kDoubleQuantBlock];
      const int want = nearest_or_tie(map, 256, (hs[i] - 0.625f) * (1.0f / a2), 1e-9);
      if (want >= 0) ASSERT_EQ(int(hp.m.dq.codes[i]), want) << "scale " << i;
    }
  }
}

TEST(Quant_group, BitsandbytesArithmeticOnTheHost) {
  using A = QuantArithmetic;
  EXPECT_EQ(detail::flush_subnormal(1e-40f), 0.0f);
  EXPECT_TRUE(std::signbit(detail::flush_subnormal(-1e-40f)));
  EXPECT_EQ(detail::flush_subnormal(std::ldexp(1.0f, -126)), std::ldexp(1.0f, -126));
  EXPECT_TRUE(std::isnan(detail::flush_subnormal(NAN)));
  EXPECT_EQ(detail::rcp_approx_ftz(0.0f), INFINITY);
  EXPECT_EQ(detail::rcp_approx_ftz(std::ldexp(1.0f, 127)), 0.0f) << "2^-127 is subnormal: flushed";
  EXPECT_EQ(detail::mul_rn_ftz(std::ldexp(1.0f, -70), -std::ldexp(1.0f, -70)), 0.0f);
  GroupStats st;
  st.add(12.0f);
  const GroupQuantizer q = GroupQuantizer::make<A::kBitsandbytes>(Format::kFp4, DType::kF32, st);
  EXPECT_EQ(q.scale, 12.0f);
  EXPECT_EQ(q.inv, 1.0f / 12.0f);  // the host's reciprocal is IEEE
  EXPECT_EQ(q.encode<A::kBitsandbytes>(-1e-40f), 0);
  EXPECT_EQ(q.encode<A::kIeee>(-1e-40f), 8);
  EXPECT_EQ(q.encode<A::kBitsandbytes>(NAN), 0);
  EXPECT_EQ(q.encode<A::kBitsandbytes>(-12.0f), 0b1011);
  GroupStats zero;
  const GroupQuantizer z = GroupQuantizer::make<A::kBitsandbytes>(Format::kNf4, DType::kF32, zero);
  EXPECT_EQ(z.encode<A::kBitsandbytes>(0.0f), 0) << "0 * inf = NaN: code 0, as bitsandbytes";
}

}  // namespace
