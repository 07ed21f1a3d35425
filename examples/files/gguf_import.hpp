// examples/files/gguf_import.hpp — which nibble importer (include/nibble/import/gguf.cuh) takes a GGUF tensor of
// a given ggml type: Q4_0 -> kS4 g32 fp16, Q4_1 -> kAffineU4 g32 fp16, Q4_K -> kAffineU4 g32 fp32. One table,
// used by load_gguf.cu, the tests (tests/import/test_files.cu) and the fuzz target (tests/fuzz/fuzz_gguf_file.cu).
#pragma once

#include <cstddef>
#include <cstdint>
#include <nibble/import/gguf.cuh>

#include "gguf.hpp"

namespace nibble_files {

/// A GGUF 4-bit type nibble imports: the type's name, what it becomes, its params and host importer.
struct GgufImporter {
  std::uint32_t type;
  const char* name;         ///< ggml's name of the type
  const char* description;  ///< the nibble format it is imported into
  nibble::Status (*params)(std::int64_t n, std::int64_t k, nibble::QuantParams* out);
  nibble::Status (*import_host)(const void* data, std::size_t bytes, std::int64_t n, std::int64_t k,
                                const nibble::PackedMatrix& out);
};

inline constexpr GgufImporter kGgufImporters[] = {
    {kGgmlQ4_0, "Q4_0", "nibble s4, group 32, F16 scales", nibble::gguf_q4_0_import_params,
     nibble::import_gguf_q4_0_host},
    {kGgmlQ4_1, "Q4_1", "nibble affine u4, group 32, F16 scales and offsets", nibble::gguf_q4_1_import_params,
     nibble::import_gguf_q4_1_host},
    {kGgmlQ4_K, "Q4_K", "nibble affine u4, group 32, F32 scales and offsets (expanded)",
     nibble::gguf_q4_k_import_params, nibble::import_gguf_q4_k_host},
};

/// The importer of ggml type `type`, or nullptr when nibble has none.
inline const GgufImporter* gguf_importer(std::uint32_t type) {
  for (const GgufImporter& i : kGgufImporters)
    if (i.type == type) return &i;
  return nullptr;
}

}  // namespace nibble_files
