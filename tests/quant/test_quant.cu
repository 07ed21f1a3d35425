// tests/quant/test_quant.cu — the quantizer (include/nibble/quant/): error bounds against bitsandbytes' own test
// bounds, independent oracles for the encoders, double quantization, bit-exact GPU == CPU for every
// format x input type x group x scale type, streaming, and the Status of every rejected input.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <nibble/quant/quantize.cuh>
#include <nibble/quant/streaming.cuh>  // quantize_streaming (quantize.cuh stops including it)
#include <string>
#include <vector>

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
  for (Format f : {Format::kS4, Format::kU4, Format::kNf4, Format::kFp4}) {
    HostPacked hp(n, k, {f, 32, DType::kF32, false});
    ASSERT_EQ(quantize_cpu(x.data(), k, hp.m), Status::kSuccess);
    std::vector<float> dq(std::size_t(n * k));
    ASSERT_EQ(dequantize_cpu(hp.m, dq.data(), k), Status::kSuccess);
    for (int i = 32; i < 64; ++i) EXPECT_EQ(dq[std::size_t(i)], 0.0f) << to_string(f) << " at " << i;
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
    for (Format f : {Format::kS4, Format::kU4, Format::kNf4, Format::kFp4})
      for (DType in : {DType::kF32, DType::kF16, DType::kBF16})
        for (int g : {32, 256, kPerChannel}) {
          const bool codebook_format = is_codebook(f);
          v.push_back({f, in, g, codebook_format ? DType::kF32 : DType::kF16, false});
          if (codebook_format && in == DType::kF16) v.push_back({f, in, g, DType::kF32, true});
        }
    return v;
  }
  for (Format f : {Format::kS4, Format::kU4, Format::kNf4, Format::kFp4})
    for (DType in : {DType::kF32, DType::kF16, DType::kBF16})
      for (int g : {32, 64, 128, 256, kPerChannel}) {
        for (DType st : {DType::kF32, DType::kF16, DType::kBF16}) v.push_back({f, in, g, st, false});
        v.push_back({f, in, g, DType::kF32, true});
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
TEST(Quant_streaming_s4_perchannel_f16, PageableMatchesPlainQuantizer) {
  NIBBLE_REQUIRE_GPU();
  run_streaming({Format::kS4, kPerChannel, DType::kBF16, false}, false);
}

}  // namespace
