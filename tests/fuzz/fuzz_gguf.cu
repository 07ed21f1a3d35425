// tests/fuzz/fuzz_gguf.cu — libFuzzer target for the GGUF block importers (import_gguf_q4_0_host, _q4_1_host,
// _q4_k_host, picked by the first byte through examples/files/gguf_import.hpp's table): shapes and raw block
// bytes (the tensor is the rest of the input, so its length is fuzzed too). Invariant checked besides ASan /
// UBSan: an import whose shape the params accept and whose data is long enough must succeed.
#include "../../examples/files/gguf_import.hpp"
#include "fuzz_common.hpp"

using namespace nibble;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Reader r{data, size};
  const nibble_files::GgufImporter& importer = r.pick(nibble_files::kGgufImporters);
  const std::int64_t n = fuzz::small_dim(r);
  const std::int64_t k = fuzz::small_dim(r) * (1 + r.u8() % 3);  // up to 960: Q4_K's 512 and 768 too
  // Exactly the remaining bytes, copied so that ASan bounds the importer's reads by them.
  fuzz::Buffer blob(r.n);
  std::memcpy(blob.data, r.p, r.n);
  QuantParams p;
  if (importer.params(n, k, &p) != Status::kSuccess) return 0;
  fuzz::Output out(n, k, p);
  if (!out.ok) return 0;
  const std::size_t need = importer.type == nibble_files::kGgmlQ4_0   ? gguf_q4_0_bytes(n, k)
                           : importer.type == nibble_files::kGgmlQ4_1 ? gguf_q4_1_bytes(n, k)
                                                                      : gguf_q4_k_bytes(n, k);
  const Status s = importer.import_host(blob.data, r.n, n, k, out.m);
  if (s != Status::kSuccess) {
    if (need != 0 && r.n >= need) std::abort();  // a valid shape with enough data must import
    return 0;
  }
  fuzz::touch(out.m);
  return 0;
}
