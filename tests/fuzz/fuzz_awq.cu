// tests/fuzz/fuzz_awq.cu — libFuzzer target for import_awq_host: fuzzed config, shapes, pointers, data.
#include "fuzz_common.hpp"

using namespace nibble;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Reader r{data, size};
  AwqConfig cfg;
  static const int kBits[] = {4, 4, 8};
  cfg.bits = r.pick(kBits);
  cfg.group_size = fuzz::group(r);
  cfg.zero_point = (r.u8() % 8) != 0;
  AwqTensors t;
  t.k = fuzz::small_dim(r);
  t.n = fuzz::small_dim(r);
  t.scale_type = DType(r.u8() % 4);
  const std::uint8_t flags = r.u8();
  const std::int64_t g = fuzz::expected_group(cfg.group_size, t.k);
  const std::int64_t groups = g > 0 ? t.k / g : 1;
  const std::size_t kq = std::size_t(t.k > 0 && t.n > 0 ? t.k * (t.n / 8) : 0);
  const std::size_t kz = std::size_t(t.n > 0 ? groups * (t.n / 8) : 0);
  const std::size_t ks = std::size_t(t.n > 0 ? groups * t.n : 0) * (t.scale_type == DType::kF32 ? 4 : 2);
  fuzz::Buffer qweight(kq * 4), qzeros(kz * 4, (flags & 1) ? 1 : 0), scales(ks);
  r.fill(qweight.data, kq * 4);
  r.fill(qzeros.data, kz * 4);
  r.fill(scales.data, ks);
  t.qweight = reinterpret_cast<const std::int32_t*>(qweight.data);
  t.qzeros = (flags & 2) ? nullptr : reinterpret_cast<const std::int32_t*>(qzeros.data);
  t.scales = scales.data;
  QuantParams p;
  if (awq_import_params(cfg, t, &p) != Status::kSuccess) return 0;
  if (flags & 4) p.group_size = p.group_size == 32 ? 64 : 32;
  fuzz::Output out(t.n, t.k, p);
  if (!out.ok) return 0;
  if (import_awq_host(cfg, t, out.m) != Status::kSuccess) return 0;
  if (flags & 4) std::abort();  // a mismatched view must be refused
  fuzz::touch(out.m);
  return 0;
}
