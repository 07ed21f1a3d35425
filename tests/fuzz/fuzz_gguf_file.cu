// tests/fuzz/fuzz_gguf_file.cu — libFuzzer target for the example GGUF reader (examples/files/gguf.hpp): the
// input is a whole .gguf file. On a successful parse every Q4_0 matrix it lists is imported with
// import_gguf_q4_0_host from the span the parser returned (ne = [K, N]) and dequantized.
// Seeds: tests/import/fixtures/gguf_q4*.gguf (run.sh copies them).
#include "../../examples/files/gguf.hpp"
#include "fuzz_common.hpp"

using namespace nibble_files;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  fuzz::Buffer file(size);
  if (size) std::memcpy(file.data, data, size);
  GgufFile f;
  if (!parse_gguf(file.data, size, &f).ok) return 0;
  for (const GgufTensor& t : f.tensors) {
    // Every span the parser hands out must lie inside the input.
    if (t.data < file.data || t.bytes > size || t.data + t.bytes > file.data + size) std::abort();
    if (t.type != kGgmlQ4_0 || t.ne.size() != 2) continue;
    nibble::QuantParams p;
    if (nibble::gguf_q4_0_import_params(t.ne[1], t.ne[0], &p) != nibble::Status::kSuccess) continue;
    fuzz::Output out(t.ne[1], t.ne[0], p);
    if (!out.ok) continue;
    if (nibble::import_gguf_q4_0_host(t.data, t.bytes, t.ne[1], t.ne[0], out.m) != nibble::Status::kSuccess)
      std::abort();  // the parser checked the size: the import must accept it
    fuzz::touch(out.m);
  }
  return 0;
}
