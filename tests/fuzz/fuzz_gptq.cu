// tests/fuzz/fuzz_gptq.cu — libFuzzer target for import_gptq_host / gptq_resolve_format_host /
// act_order_permutation / permute_columns_host: fuzzed metadata, shapes, pointers, zero words and g_idx.
// On success the codes are checked against a direct re-reading of qweight (a differential oracle).
#include "fuzz_common.hpp"

using namespace nibble;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Reader r{data, size};
  GptqConfig cfg;
  static const int kBits[] = {4, 4, 4, 8, 3};
  cfg.bits = r.pick(kBits);
  cfg.group_size = fuzz::group(r);
  cfg.sym = r.u8() & 1;
  cfg.checkpoint_format = GptqCheckpointFormat(r.u8() % 4);  // 3 is out of range
  GptqTensors t;
  t.k = fuzz::small_dim(r);
  t.n = fuzz::small_dim(r);
  t.scale_type = DType(r.u8() % 4);  // 3 is out of range
  const std::uint8_t flags = r.u8();
  const std::int64_t g = fuzz::expected_group(cfg.group_size, t.k);
  const std::int64_t groups = g > 0 ? t.k / g : 1;
  const std::size_t kq = std::size_t(t.k > 0 && t.n > 0 ? (t.k / 8) * t.n : 0);
  const std::size_t kz = std::size_t(t.n > 0 ? groups * (t.n / 8) : 0);
  const std::size_t ks = std::size_t(t.n > 0 ? groups * t.n : 0) * (t.scale_type == DType::kF32 ? 4 : 2);
  fuzz::Buffer qweight(kq * 4, (flags & 1) ? 2 : 0), qzeros(kz * 4), scales(ks);
  r.fill(qzeros.data, kz * 4);
  // Often make the zero words valid for the label, so the import itself runs.
  if (flags & 2)
    for (std::size_t i = 0; i < kz; ++i) {
      const std::uint32_t w = cfg.sym ? (cfg.checkpoint_format == GptqCheckpointFormat::kV2 ? 0x88888888u : 0x77777777u)
                                      : (0x66666666u & (0x01234567u * std::uint32_t(i + 1)));
      std::memcpy(qzeros.data + 4 * i, &w, 4);
    }
  r.fill(qweight.data, kq * 4);
  r.fill(scales.data, ks);
  std::vector<std::int32_t> g_idx = fuzz::g_idx(r, t.k, g);
  t.qweight = (flags & 4) ? nullptr : reinterpret_cast<const std::int32_t*>(qweight.data);
  t.qzeros = reinterpret_cast<const std::int32_t*>(qzeros.data);
  t.scales = scales.data;
  t.g_idx = (flags & 8) && !g_idx.empty() ? g_idx.data() : nullptr;

  QuantParams p;
  if (gptq_import_params(cfg, t, &p) != Status::kSuccess) {
    GptqCheckpointFormat f;
    (void)gptq_resolve_format_host(cfg, t, &f);  // must refuse without reading, too
    return 0;
  }
  if (flags & 16) p.scale_type = DType((int(p.scale_type) + 1) % 3);  // a mismatched output view
  fuzz::Output out(t.n, t.k, p);
  if (!out.ok) return 0;
  std::vector<std::int32_t> perm(std::size_t(t.k), -1);
  const Status s = import_gptq_host(cfg, t, out.m, (flags & 32) ? nullptr : perm.data());
  if (s != Status::kSuccess) return 0;
  if (flags & 16) std::abort();  // a mismatched view must be refused
  fuzz::touch(out.m);
  bool identity = true;
  if (act_order_permutation(t.g_idx, t.k, effective_group(p.group_size, t.k), nullptr, &identity) != Status::kSuccess)
    std::abort();
  if (flags & 32) {
    if (!identity) std::abort();  // act-order without a perm buffer must be refused
    for (std::int64_t c = 0; c < t.k; ++c) perm[std::size_t(c)] = std::int32_t(c);
  }
  const std::uint32_t x = cfg.sym ? 8u : 0u;
  for (std::int64_t c = 0; c < t.n; ++c)
    for (std::int64_t q = 0; q < t.k; ++q) {
      const std::int64_t src = perm[std::size_t(q)];
      if (src < 0 || src >= t.k) std::abort();
      const std::uint32_t w = std::uint32_t(t.qweight[(src / 8) * t.n + c]);
      const std::uint32_t want = ((w >> (4 * (src % 8))) & 0xFu) ^ x;
      const std::uint32_t got = (out.m.codes[c * out.m.ld_codes + q / 2] >> (4 * (q % 2))) & 0xFu;
      if (want != got) std::abort();
    }
  // The permutation applies to activations.
  std::vector<__half> a(std::size_t(2 * t.k)), b(std::size_t(2 * t.k));
  if (permute_columns_host(a.data(), t.k, b.data(), t.k, 2, t.k, perm.data()) != Status::kSuccess) std::abort();
  return 0;
}
