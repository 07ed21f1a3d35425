// tests/fuzz/fuzz_safetensors.cu — libFuzzer target for the example safetensors reader and the layer import
// behind it (examples/files/safetensors.hpp, layers.hpp): the input is a whole .safetensors file. On a
// successful parse every 4-bit linear it holds is imported with the config its __metadata__ carries (and
// once more with none), and each import is dequantized (nibble's own reader touches every output byte).
// Seeds: the fixtures of tests/import/fixtures/make_files.py (run.sh copies them).
#include "../../examples/files/layers.hpp"
#include "fuzz_common.hpp"

using namespace nibble_files;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // Exactly `size` bytes on the heap, so that ASan bounds every read by the input.
  fuzz::Buffer file(size);
  if (size) std::memcpy(file.data, data, size);
  SafetensorsFile f;
  if (!parse_safetensors(file.data, size, &f).ok) return 0;
  std::vector<Linear> linears;
  std::vector<const StTensor*> other;
  find_linears(f, &linears, &other);
  QuantConfig from_metadata, none;
  if (!metadata_config(f, &from_metadata).ok) from_metadata = QuantConfig{};
  for (const Linear& l : linears)
    for (const QuantConfig* cfg : {&from_metadata, &none}) {
      ImportedLinear imp;
      if (!import_linear(l, *cfg, &imp).ok) continue;
      if (imp.raw.size() > (std::size_t(1) << 24)) std::abort();  // bounded by the file, never by a count
      fuzz::touch(imp.m);
    }
  return 0;
}
