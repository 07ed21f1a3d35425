// tests/fuzz/fuzz_gguf_file.cu — libFuzzer target for the example GGUF reader (examples/files/gguf.hpp): the
// input is a whole .gguf file. On a successful parse every Q4_0 / Q4_1 / Q4_K matrix it lists is imported with
// its importer (examples/files/gguf_import.hpp) from the span the parser returned (ne = [K, N]) and dequantized.
// Seeds: tests/import/fixtures/gguf_*.gguf (run.sh copies them).
#include "../../examples/files/gguf.hpp"
#include "../../examples/files/gguf_import.hpp"
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
    const GgufImporter* importer = gguf_importer(t.type);
    if (importer == nullptr || t.ne.size() != 2) continue;
    nibble::QuantParams p;
    if (importer->params(t.ne[1], t.ne[0], &p) != nibble::Status::kSuccess) continue;
    fuzz::Output out(t.ne[1], t.ne[0], p);
    if (!out.ok) continue;
    if (importer->import_host(t.data, t.bytes, t.ne[1], t.ne[0], out.m) != nibble::Status::kSuccess)
      std::abort();  // the parser checked the size: the import must accept it
    fuzz::touch(out.m);
  }
  return 0;
}
