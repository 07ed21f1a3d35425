// tests/fuzz/fuzz_gguf.cu — libFuzzer target for import_gguf_q4_0_host: shapes and raw block bytes
// (the tensor is the rest of the input, so its length is fuzzed too).
#include "fuzz_common.hpp"

using namespace nibble;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Reader r{data, size};
  const std::int64_t n = fuzz::small_dim(r), k = fuzz::small_dim(r);
  // Exactly the remaining bytes, copied so that ASan bounds the importer's reads by them.
  fuzz::Buffer blob(r.n);
  std::memcpy(blob.data, r.p, r.n);
  QuantParams p;
  if (gguf_q4_0_import_params(n, k, &p) != Status::kSuccess) return 0;
  fuzz::Output out(n, k, p);
  if (!out.ok) return 0;
  if (import_gguf_q4_0_host(blob.data, r.n, n, k, out.m) != Status::kSuccess) return 0;
  fuzz::touch(out.m);
  return 0;
}
