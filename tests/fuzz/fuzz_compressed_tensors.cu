// tests/fuzz/fuzz_compressed_tensors.cu — libFuzzer target for import_compressed_tensors_host.
#include "fuzz_common.hpp"

using namespace nibble;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Reader r{data, size};
  CtConfig cfg;
  static const int kBits[] = {4, 4, 8};
  cfg.num_bits = r.pick(kBits);
  cfg.strategy = CtStrategy(r.u8() % 4);  // 3 is out of range
  cfg.group_size = fuzz::group(r);
  cfg.symmetric = r.u8() & 1;
  cfg.zero_point = CtZeroPoint(r.u8() % 4);
  CtTensors t;
  t.n = fuzz::small_dim(r);
  t.k = fuzz::small_dim(r);
  t.scale_type = DType(r.u8() % 4);
  const std::uint8_t flags = r.u8();
  const std::int64_t g =
      cfg.strategy == CtStrategy::kGroup ? fuzz::expected_group(cfg.group_size, t.k) : fuzz::expected_group(-1, t.k);
  const std::int64_t groups = g > 0 ? t.k / g : 1;
  const std::size_t words = std::size_t(t.n > 0 && t.k > 0 ? t.n * ((t.k + 7) / 8) : 0);
  const std::size_t elem = t.scale_type == DType::kF32 ? 4 : 2;
  const std::size_t ks = (cfg.strategy == CtStrategy::kTensor ? 1 : std::size_t(t.n > 0 ? t.n * groups : 0)) * elem;
  const std::size_t kz = cfg.zero_point == CtZeroPoint::kPackedInt32
                             ? std::size_t(t.n > 0 ? (t.n + 7) / 8 * groups : 0) * 4
                             : std::size_t(t.n > 0 ? t.n * groups : 0);
  fuzz::Buffer packed(words * 4, (flags & 1) ? 3 : 0), scale(ks), zp(kz);
  r.fill(packed.data, words * 4);
  r.fill(scale.data, ks);
  r.fill(zp.data, kz);
  if (flags & 2)  // valid int8 zero points, so the import runs
    for (std::size_t i = 0; i < kz; ++i) zp.data[i] = std::uint8_t(std::int8_t(zp.data[i] % 8));
  const std::int64_t ge = fuzz::expected_group(cfg.strategy == CtStrategy::kGroup ? cfg.group_size : -1, t.k);
  std::vector<std::int32_t> g_idx = fuzz::g_idx(r, t.k, ge);
  t.weight_packed = reinterpret_cast<const std::int32_t*>(packed.data);
  t.weight_scale = scale.data;
  t.weight_zero_point = (flags & 4) ? nullptr : zp.data;
  t.weight_g_idx = (flags & 8) && !g_idx.empty() ? g_idx.data() : nullptr;
  QuantParams p;
  if (compressed_tensors_import_params(cfg, t, &p) != Status::kSuccess) return 0;
  fuzz::Output out(t.n, t.k, p);
  if (!out.ok) return 0;
  std::vector<std::int32_t> perm(std::size_t(t.k));
  if (import_compressed_tensors_host(cfg, t, out.m, (flags & 16) ? nullptr : perm.data()) != Status::kSuccess) return 0;
  fuzz::touch(out.m);
  return 0;
}
