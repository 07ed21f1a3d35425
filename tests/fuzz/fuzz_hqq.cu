// tests/fuzz/fuzz_hqq.cu — libFuzzer target for import_hqq_host: fuzzed config (nbits, group, axis, the
// unsupported flags), shape, stored tensor shapes (mostly the consistent ones, sometimes off by one or axis 0's),
// dtypes, pointers (null, misaligned) and data. The buffers are exactly as large as the stored shapes the call
// describes, so ASan catches any read past them. Invariants besides ASan / UBSan: a mismatched output view is
// refused; a consistent call (params accepted, stored shapes right, pointers valid) imports; and every code,
// scale and offset of an import equals a plain re-derivation from hqq's packing (pack_4bit_u8: group row r in
// the high nibbles of W_q row r, row r + rows / 2 in the low ones).
#include <cmath>

#include "fuzz_common.hpp"

using namespace nibble;

namespace {

float meta_value(const std::uint8_t* p, std::int64_t i, DType t) {
  if (t == DType::kF32) {
    float v;
    std::memcpy(&v, p + 4 * i, 4);
    return v;
  }
  std::uint16_t b;
  std::memcpy(&b, p + 2 * i, 2);
  if (t == DType::kBF16) {
    const std::uint32_t w = std::uint32_t(b) << 16;
    float v;
    std::memcpy(&v, &w, 4);
    return v;
  }
  return __half2float(__half(__half_raw{b}));
}

bool same_float(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  return std::memcmp(&a, &b, 4) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Reader r{data, size};
  HqqConfig cfg;
  static const int kBits[] = {4, 4, 4, 4, 2, 3, 8};
  static const int kAxes[] = {1, 1, 1, 1, 0, 2};
  cfg.nbits = r.pick(kBits);
  cfg.axis = r.pick(kAxes);
  cfg.group_size = fuzz::group(r);
  const std::uint8_t cfg_flags = r.u8();
  cfg.channel_wise = (cfg_flags & 0x0F) != 1;
  cfg.bitpacked = (cfg_flags & 0x0F) != 2;
  cfg.quant_scale = (cfg_flags & 0x0F) == 3;
  cfg.quant_zero = (cfg_flags & 0x0F) == 4;
  HqqTensors t;
  t.n = fuzz::small_dim(r);
  t.k = fuzz::small_dim(r);
  t.scale_type = DType(r.u8() % 4);
  t.zero_type = r.u8() % 4 == 0 ? DType(r.u8() % 4) : t.scale_type;
  const std::uint8_t flags = r.u8();
  // The stored shapes a consistent checkpoint has (when the group is valid), then maybe a wrong one.
  const std::int64_t g = fuzz::expected_group(cfg.group_size, t.k);
  const std::int64_t rows = g > 0 && t.n > 0 ? t.n * (t.k / g) : 0;
  t.w_q_rows = rows / 2;
  t.w_q_row_bytes = g;
  t.scale_count = t.zero_count = rows;
  switch (flags & 7) {
    case 1:
      t.w_q_rows += 1;
      break;
    case 2:
      t.w_q_row_bytes -= 2;
      break;
    case 3:
      t.scale_count -= 1;
      break;
    case 4:
      t.zero_count += 1;
      break;
    case 5:  // axis 0's shape, [g / 2, N*K / g] (the same as axis 1's where N*K / g == g)
      t.w_q_rows = g / 2;
      t.w_q_row_bytes = rows;
      break;
    default:
      break;
  }
  const auto nonneg = [](std::int64_t v) { return std::size_t(v > 0 ? v : 0); };
  const std::size_t wq_bytes = nonneg(t.w_q_rows) * nonneg(t.w_q_row_bytes);
  const std::size_t s_bytes = nonneg(t.scale_count) * std::size_t(t.scale_type == DType::kF32 ? 4 : 2);
  const std::size_t z_bytes = nonneg(t.zero_count) * std::size_t(t.zero_type == DType::kF32 ? 4 : 2);
  if (wq_bytes > (std::size_t(1) << 20)) return 0;
  fuzz::Buffer w_q(wq_bytes, (flags & 8) ? 3 : 0), scale(s_bytes, (flags & 16) ? 1 : 0), zero(z_bytes);
  r.fill(w_q.data, wq_bytes);
  r.fill(scale.data, s_bytes);
  r.fill(zero.data, z_bytes);
  t.w_q = (flags & 32) && (flags & 64) ? nullptr : w_q.data;
  t.scale = scale.data;
  t.zero = zero.data;
  QuantParams p;
  if (hqq_import_params(cfg, t, &p) != Status::kSuccess) return 0;
  const bool wrong_view = (flags & 128) != 0;
  if (wrong_view) p.group_size = p.group_size == 32 ? 64 : 32;
  fuzz::Output out(t.n, t.k, p);
  if (!out.ok) return 0;
  const Status s = import_hqq_host(cfg, t, out.m);
  const bool consistent =
      t.w_q_rows == rows / 2 && t.w_q_row_bytes == g && t.scale_count == rows && t.zero_count == rows;
  const bool pointers_ok = t.w_q != nullptr && (flags & 16) == 0;
  if (s != Status::kSuccess) {
    if (consistent && pointers_ok && !wrong_view) std::abort();  // a consistent call must import
    return 0;
  }
  if (wrong_view || !consistent || !pointers_ok) std::abort();  // must have been refused
  // Differential check against hqq's packing, element by element.
  const std::int64_t groups = t.k / g, half = rows / 2;
  for (std::int64_t row = 0; row < rows; ++row) {
    const std::int64_t n = row / groups, j = row % groups;
    const std::uint8_t* src = w_q.data + (row < half ? row : row - half) * g;
    for (std::int64_t e = 0; e < g; ++e) {
      const unsigned want = row < half ? src[e] >> 4 : src[e] & 0xFu;
      const std::int64_t col = j * g + e;
      const unsigned got = (out.m.codes[n * out.m.ld_codes + col / 2] >> (4 * (col % 2))) & 0xFu;
      if (got != want) std::abort();
    }
    const float sv = meta_value(scale.data, row, t.scale_type), zv = meta_value(zero.data, row, t.zero_type);
    if (!same_float(static_cast<const float*>(out.m.scales)[row], sv)) std::abort();
    if (!same_float(static_cast<const float*>(out.m.offsets)[row], -(zv * sv))) std::abort();
  }
  fuzz::touch(out.m);
  return 0;
}
