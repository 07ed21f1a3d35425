// tests/fuzz/fuzz_bitsandbytes.cu — libFuzzer target for import_bnb_host (plain and double-quantized).
#include "fuzz_common.hpp"

using namespace nibble;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Reader r{data, size};
  BnbQuantState st;
  st.quant_type = BnbQuantType(r.u8() % 3);  // 2 is out of range
  static const std::int64_t kBlocks[] = {0, -64, 16, 32, 64, 128, 256, 512, 4096, 60};
  st.blocksize = r.pick(kBlocks);
  st.n = fuzz::small_dim(r);
  st.k = fuzz::small_dim(r);
  st.nested = r.u8() & 1;
  static const std::int64_t kNested[] = {256, 256, 128, 0};
  st.nested_blocksize = r.pick(kNested);
  std::uint32_t off_bits = r.u32();
  std::memcpy(&st.nested_offset, &off_bits, 4);
  const std::uint8_t flags = r.u8();
  const std::int64_t elems = st.n > 0 && st.k > 0 ? st.n * st.k : 0;
  const std::int64_t nb = st.blocksize > 0 ? (elems + st.blocksize - 1) / st.blocksize : 0;
  const std::int64_t nb2 = st.nested_blocksize > 0 ? (nb + st.nested_blocksize - 1) / st.nested_blocksize : 0;
  fuzz::Buffer weight(std::size_t(elems / 2)), absmax(std::size_t(nb) * (st.nested ? 1 : 4)),
      nested_absmax(std::size_t(nb2) * 4), qmap(64), nmap(1024, (flags & 1) ? 2 : 0);
  r.fill(weight.data, std::size_t(elems / 2));
  r.fill(absmax.data, std::size_t(nb) * (st.nested ? 1 : 4));
  r.fill(nested_absmax.data, std::size_t(nb2) * 4);
  const Codebook16 book = codebook(st.quant_type == BnbQuantType::kFp4 ? Format::kFp4 : Format::kNf4);
  if (flags & 2)
    r.fill(qmap.data, 64);
  else
    std::memcpy(qmap.data, book.v, 64);
  if (flags & 4)
    r.fill(nmap.data, 1024);
  else
    std::memcpy(nmap.data, dynamic_map().v, 1024);
  BnbTensors t;
  t.weight = weight.data;
  t.absmax = (flags & 8) ? nullptr : absmax.data;
  t.quant_map = reinterpret_cast<const float*>(qmap.data);
  t.nested_absmax = reinterpret_cast<const float*>(nested_absmax.data);
  t.nested_quant_map = reinterpret_cast<const float*>(nmap.data);
  QuantParams p;
  if (bnb_import_params(st, t, &p) != Status::kSuccess) return 0;
  fuzz::Output out(st.n, st.k, p);
  if (!out.ok) return 0;
  if (import_bnb_host(st, t, out.m) != Status::kSuccess) return 0;
  fuzz::touch(out.m);
  return 0;
}
