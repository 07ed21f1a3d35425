// tests/common/host_weights.hpp — plain-layout weights and GEMM problems in host memory, and the
// dequantization the references use: HostWeights / make_weights (random codes, power-of-two or random
// scales, u4 zero points, affine u4 offsets, poisoned row padding), HostProblem / make_problem (activations of T with
// NaN in the lda padding, bias), code_value (a code as the kernel holds it in T), HostGemmBuffers (poisoned GEMM-layout
// buffers for repack_host).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <nibble/format/codebook.cuh>
#include <nibble/layout/repack.cuh>
#include <random>
#include <string>
#include <vector>

#include "common/check.hpp"

using nibble::GemmWeights;
using nibble::PlainWeights;

/// The value of code `nib` of format f as the kernel holds it in T, before the zero point (offset) and the scale.
inline double code_value(Format f, DType act, int nib) {
  switch (f) {
    case Format::kS4:
      return nib >= 8 ? nib - 16 : nib;
    case Format::kU4:
    case Format::kAffineU4:
      return nib;
    default:
      return t_round(act, nibble::codebook(f)[unsigned(nib)]);
  }
}

// ---- host weights, activations, reference --------------------------------------------------------------

enum class Data { kExact, kRandom };

/// A plain-layout weight ([N, K] codes, [N, K / g] scales, zeros and offsets) in host memory.
struct HostWeights {
  Format format = kS4;
  int group = 128;
  int64_t n = 0, k = 0;
  DType scale_type = kF16;
  int64_t ld_codes = 0;
  std::vector<uint8_t> codes;    // n * ld_codes, padding bytes 0xFF
  std::vector<uint8_t> scales;   // n * groups of scale_type
  std::vector<uint8_t> zeros;    // n * groups, u4 only
  std::vector<uint8_t> offsets;  // n * groups of scale_type, affine u4 only

  int64_t groups() const { return src_groups(group, k); }
  int64_t group_of(int64_t kk) const { return group == kPC ? 0 : kk / group; }
  int code(int64_t nn, int64_t kk) const { return (codes[nn * ld_codes + kk / 2] >> (4 * (kk % 2))) & 0xF; }
  float value_of(const std::vector<uint8_t>& v, int64_t nn, int64_t g) const {
    const int64_t i = nn * groups() + g;
    if (scale_type == kF32) {
      float f;
      std::memcpy(&f, v.data() + 4 * i, 4);
      return f;
    }
    uint16_t b;
    std::memcpy(&b, v.data() + 2 * i, 2);
    return from_bits(scale_type, b);
  }
  float scale(int64_t nn, int64_t g) const { return value_of(scales, nn, g); }
  float offset(int64_t nn, int64_t g) const { return offsets.empty() ? 0.0f : value_of(offsets, nn, g); }
  int zero(int64_t nn, int64_t g) const { return zeros.empty() ? 0 : zeros[nn * groups() + g]; }
  PlainWeights view(const void* c, const void* s, const void* z, const void* o = nullptr) const {
    PlainWeights p;
    p.format = format;
    p.group_size = group;
    p.n = n;
    p.k = k;
    p.codes = static_cast<const uint8_t*>(c);
    p.ld_codes = ld_codes;
    p.scales = s;
    p.scale_type = scale_type;
    p.zeros = static_cast<const uint8_t*>(z);
    p.offsets = o;
    return p;
  }
};

/// Random codes (uniform nibbles), scales (powers of two 2^-2..2^1 for Data::kExact, |N(0,1)| * 0.1 + 0.01
/// otherwise, rounded to scale_type), u4 zero points (uniform 0..15) and affine u4 offsets, large against the
/// scale as GGUF Q4_1 / Q4_K minima are: m = -c * s with c uniform in 0..15 for Data::kExact (q * s + m exact in
/// T), m = (-8 + N(0,1) / 2) * s otherwise. Codes rows are `ld_pad` bytes longer than K / 2, the padding
/// poisoned with 0xFF.
inline HostWeights make_weights(std::mt19937_64& rng, Format f, int group, int64_t n, int64_t k, DType scale_type,
                                Data data, int64_t ld_pad = 0) {
  HostWeights w;
  w.format = f;
  w.group = group;
  w.n = n;
  w.k = k;
  w.scale_type = scale_type;
  w.ld_codes = k / 2 + ld_pad;
  w.codes.assign(std::size_t(n * w.ld_codes), 0xFF);
  for (int64_t r = 0; r < n; ++r) {
    std::uint64_t bits = 0;
    for (int64_t b = 0; b < k / 2; ++b) {
      if (b % 8 == 0) bits = rng();
      w.codes[r * w.ld_codes + b] = uint8_t(bits >> (8 * (b % 8)));
    }
  }
  const int64_t count = n * w.groups();
  w.scales.assign(std::size_t(count * nibble::size_of(scale_type)), 0);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto store = [&](std::vector<uint8_t>& v, int64_t i, float x) {
    if (scale_type == kF32) {
      std::memcpy(v.data() + 4 * i, &x, 4);
    } else {
      const uint16_t b = to_bits(scale_type, x);
      std::memcpy(v.data() + 2 * i, &b, 2);
    }
  };
  if (nibble::has_offset(f)) w.offsets.assign(w.scales.size(), 0);
  for (int64_t i = 0; i < count; ++i) {
    const float s = data == Data::kExact ? std::ldexp(1.0f, int(rng() % 4) - 2) : std::fabs(normal(rng)) * 0.1f + 0.01f;
    store(w.scales, i, s);
    if (nibble::has_offset(f))
      store(w.offsets, i, data == Data::kExact ? -float(rng() % 16) * s : (-8.0f + 0.5f * normal(rng)) * s);
  }
  if (nibble::has_zero_point(f)) {
    w.zeros.resize(std::size_t(count));
    for (auto& z : w.zeros) z = uint8_t(rng() % 16);
  }
  return w;
}

/// The second level (double quantization) of a weight's fp32 scales, computed on the host as quantize()'s does
/// it (quant/double_quant.cuh: double_quantize_cpu): 8-bit codes [n * groups], absmax2 per 256, the offset.
struct HostDq {
  std::vector<uint8_t> codes;
  std::vector<float> absmax2;
  float offset = 0.0f;
  /// `w`'s plain view with these double-quantized scales (device or host pointers; `w.scales` is not read).
  PlainWeights view(const HostWeights& w, const void* codes_ptr, const void* dq_codes, const float* absmax2_ptr,
                    const float* offset_ptr) const {
    PlainWeights p = w.view(codes_ptr, nullptr, nullptr);
    p.dq_codes = static_cast<const uint8_t*>(dq_codes);
    p.dq_absmax2 = absmax2_ptr;
    p.dq_offset = offset_ptr;
    return p;
  }
};
inline HostDq make_dq(const HostWeights& w) {
  const int64_t count = w.n * w.groups();
  std::vector<float> s(static_cast<std::size_t>(count));
  for (int64_t i = 0; i < count; ++i) s[std::size_t(i)] = w.scale(i / w.groups(), i % w.groups());
  HostDq dq;
  dq.codes.resize(std::size_t(count));
  dq.absmax2.resize(std::size_t((count + nibble::kDoubleQuantBlock - 1) / nibble::kDoubleQuantBlock));
  nibble::detail::double_quantize_cpu(s.data(), count, dq.codes.data(), dq.absmax2.data(), &dq.offset,
                                      nibble::QuantizeOptions{});
  return dq;
}
/// `w` with its scales replaced by the double-quantized ones, expanded to fp32 as repack() expands them
/// (dq_scale): the weight a GEMM of the compact layout must multiply by.
inline HostWeights expand_dq(const HostWeights& w, const HostDq& dq) {
  HostWeights e = w;
  e.scale_type = kF32;
  e.scales.assign(std::size_t(w.n * w.groups()) * 4, 0);
  for (std::size_t i = 0; i < dq.codes.size(); ++i) {
    const float v =
        nibble::dq_scale(nibble::dynamic_map().v, dq.codes[i], dq.absmax2[i / nibble::kDoubleQuantBlock], dq.offset);
    std::memcpy(e.scales.data() + 4 * i, &v, 4);
  }
  return e;
}

/// One GEMM problem on the host: activations (bits of act), bias, and a weight owned by the caller.
struct HostProblem {
  DType act = kF16;
  Data data = Data::kExact;
  const HostWeights* w = nullptr;
  int64_t m = 0, lda = 0;
  std::vector<uint16_t> a;     // m * lda; columns past K are NaN
  std::vector<uint16_t> bias;  // n

  int64_t n() const { return w->n; }
  int64_t k() const { return w->k; }
  bool exact() const { return data == Data::kExact && (w->format == kS4 || w->format == kU4 || w->format == kAU4); }
  std::string name() const {
    return std::string("Gemm_") + dtype_name(act) + "_" + nibble::to_string(w->format) + "_" + group_name(w->group) +
           ".M" + std::to_string(m) + "_N" + std::to_string(n()) + "_K" + std::to_string(k());
  }
};

inline HostProblem make_problem(std::mt19937_64& rng, DType act, const HostWeights& w, int64_t m, Data data,
                                int64_t lda_pad = 0) {
  HostProblem p;
  p.act = act;
  p.data = data;
  p.w = &w;
  p.m = m;
  p.lda = w.k + lda_pad;
  p.a.assign(std::size_t(m * p.lda), uint16_t(0xFFFF));  // NaN in the padding
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < w.k; ++c)
      p.a[r * p.lda + c] = to_bits(act, data == Data::kExact ? float(int(rng() % 7) - 3) : normal(rng));
  p.bias.resize(std::size_t(w.n));
  for (auto& b : p.bias)
    b = to_bits(act, data == Data::kExact ? float(int(rng() % 65) - 32) / 4.0f : 0.5f * normal(rng));
  return p;
}

struct RepackShape {
  int64_t n, k;
  int group;
};

/// Host buffers of the GEMM layout, pre-filled with a poison byte.
struct HostGemmBuffers {
  std::vector<uint8_t> codes, scales, zeros;  // zeros always allocated (checked untouched when unused)
  std::vector<uint8_t> offsets;               // likewise (b.offsets, or 2 * zero_bytes where b has none)
  HostGemmBuffers(const nibble::GemmWeightBytes& b, std::size_t zero_bytes)
      : codes(b.codes + 16, 0xAB),
        scales(b.scales + 16, 0xAB),
        zeros(zero_bytes + 16, 0xAB),
        offsets((b.offsets > 0 ? b.offsets : 2 * zero_bytes) + 16, 0xAB) {}
};
