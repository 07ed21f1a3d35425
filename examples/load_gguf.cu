// examples/load_gguf.cu — reads a GGUF file (v2 / v3), imports every Q4_0, Q4_1 and Q4_K matrix with nibble's
// GGUF importers (nibble::import_gguf_q4_0_host / _q4_1_host / _q4_k_host) and checks each one: the import
// against an independent dequantization written here from ggml's definition (must be exact), and nibble::gemm
// on the GPU against a float64 CPU product A * dequant(W)^T (Q4_0 as s4, Q4_1 and Q4_K as affine u4; without a
// GPU the GEMM check says it is skipped).
//
//   load_gguf MODEL.gguf [--m ROWS]
//
//   MODEL.gguf   any GGUF v2 / v3 file (one shard of a split model works too). Q4_0 / Q4_1 / Q4_K 2-D tensors
//                are checked; every other tensor is listed as skipped with its ggml type name.
//   --m ROWS     rows of the random activations of the GEMM check (default 5).
//
// Exit status: 0 every checked tensor passed; 1 one failed; 2 usage error or a malformed / unreadable file
// (the reason is printed); 3 no Q4_0 / Q4_1 / Q4_K matrix found. Without a usable GPU (cudaGetDeviceCount fails or
// finds none, or the device is older than sm_80) it prints a line with "no CUDA device" (or the device's shortcoming),
// runs the import checks and the GEMM's CPU-side checks (repack_host + gemm::can_implement) only, says the GEMM was
// skipped, and its exit status reflects those.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "files/check.cuh"
#include "files/gguf.hpp"
#include "files/gguf_import.hpp"
#include "files/layers.hpp"  // ImportedLinear: host storage for the imported weight

using namespace nibble_files;

namespace {

/// fp16 bits to float (exact).
float half_bits_to_float(std::uint16_t h) { return float(half_bits_to_double(h)); }

/// ggml's Q4_0 and Q4_1 (ggml-common.h block_q4_0 / block_q4_1, ggml-quants.c dequantize_row_q4_0 / _q4_1):
/// blocks of 32 along the row: fp16 d (Q4_1: then fp16 m), then qs[16] with element j in the low nibble of qs[j]
/// and element j + 16 in its high nibble; Q4_0: x = (nibble - 8) * d (exact), Q4_1: x = nibble * d + m, in float
/// (ggml's arithmetic: the float product, then the float sum; this file is built without FMA contraction on the
/// host).
std::vector<double> ref_block32(const GgufTensor& t, bool q4_1) {
  const int block_bytes = q4_1 ? 20 : 18;
  const std::int64_t k = t.ne[0], n = t.ne[1], blocks = k / 32;
  std::vector<double> w(std::size_t(n * k));
  for (std::int64_t r = 0; r < n; ++r)
    for (std::int64_t b = 0; b < blocks; ++b) {
      const std::uint8_t* blk = t.data + (r * blocks + b) * block_bytes;
      const float d = half_bits_to_float(std::uint16_t(blk[0] | (blk[1] << 8)));
      const float m = q4_1 ? half_bits_to_float(std::uint16_t(blk[2] | (blk[3] << 8))) : 0.0f;
      const std::uint8_t* qs = blk + (q4_1 ? 4 : 2);
      auto value = [&](int nib) { return q4_1 ? d * float(nib) + m : float(nib - 8) * d; };
      for (int j = 0; j < 16; ++j) {
        w[std::size_t(r * k + b * 32 + j)] = value(qs[j] & 0xF);
        w[std::size_t(r * k + b * 32 + j + 16)] = value(qs[j] >> 4);
      }
    }
  return w;
}

/// ggml's Q4_K (block_q4_K, get_scale_min_k4, dequantize_row_q4_K): super-blocks of 256, 144 bytes: fp16 d,
/// fp16 dmin, 12 bytes of 6-bit sub-block scales and mins, 128 bytes of codes (4 runs of 32 bytes: sub-block
/// 2c in the low nibbles, 2c + 1 in the high ones); x = (d * sc) * nibble - dmin * mn in float.
std::vector<double> ref_q4_k(const GgufTensor& t) {
  const std::int64_t k = t.ne[0], n = t.ne[1], blocks = k / 256;
  std::vector<double> w(std::size_t(n * k));
  for (std::int64_t r = 0; r < n; ++r)
    for (std::int64_t b = 0; b < blocks; ++b) {
      const std::uint8_t* blk = t.data + (r * blocks + b) * 144;
      const float d = half_bits_to_float(std::uint16_t(blk[0] | (blk[1] << 8)));
      const float dmin = half_bits_to_float(std::uint16_t(blk[2] | (blk[3] << 8)));
      const std::uint8_t* q = blk + 4;  // the 12 scale bytes
      for (int sub = 0; sub < 8; ++sub) {
        // sub-blocks 0-3: the low 6 bits of bytes sub and sub + 4; 4-7: a nibble of byte sub + 4 plus the top 2
        // bits of bytes sub - 4 (scale) and sub (min)
        const int sc = sub < 4 ? q[sub] & 63 : (q[sub + 4] & 15) | ((q[sub - 4] >> 6) << 4);
        const int mn = sub < 4 ? q[sub + 4] & 63 : (q[sub + 4] >> 4) | ((q[sub] >> 6) << 4);
        const float scale = d * float(sc), min = dmin * float(mn);
        for (int l = 0; l < 32; ++l) {
          const int code = (blk[16 + 32 * (sub / 2) + l] >> (4 * (sub % 2))) & 0xF;
          const float prod = scale * float(code);
          w[std::size_t(r * k + b * 256 + sub * 32 + l)] = prod - min;
        }
      }
    }
  return w;
}

std::string dims(const GgufTensor& t) {
  std::string s = "[";
  for (std::size_t i = 0; i < t.ne.size(); ++i) s += (i ? ", " : "") + std::to_string(t.ne[i]);
  return s + "]";
}

}  // namespace

int main(int argc, char** argv) {
  std::string path;
  std::int64_t rows = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--m" && i + 1 < argc) {
      rows = std::atoll(argv[++i]);
    } else if (path.empty() && a.rfind("--", 0) != 0) {
      path = a;
    } else {
      path.clear();
      break;
    }
  }
  if (path.empty() || rows < 1 || rows > 4096) {
    std::printf("usage: %s MODEL.gguf [--m ROWS (1..4096)]\n", argv[0]);
    return 2;
  }
  std::printf("nibble %s load_gguf: %s\n", NIBBLE_VERSION_STRING, path.c_str());
  std::vector<std::uint8_t> bytes;
  std::string err;
  if (!read_file(path, &bytes, &err)) {
    std::printf("error: %s\n", err.c_str());
    return 2;
  }
  GgufFile file;
  const Result r = parse_gguf(bytes.data(), bytes.size(), &file);
  if (!r.ok) {
    std::printf("error: %s is not a valid GGUF file: %s\n", path.c_str(), r.error.c_str());
    return 2;
  }
  std::printf("GGUF v%u, %zu metadata keys, %zu tensors, alignment %llu, data at byte %llu\n", file.version,
              file.kv.size(), file.tensors.size(), (unsigned long long)file.alignment,
              (unsigned long long)file.data_start);
  if (const GgufKv* arch = file.find_kv("general.architecture"))
    if (arch->value.type == GgufType::kString) std::printf("architecture: %s\n", arch->value.str.c_str());

  std::string gpu_why;
  const bool gpu = usable_gpu(&gpu_why);
  std::printf(gpu ? "GPU: %s\n" : "%s: the GEMM check is skipped, the import checks run on the CPU\n", gpu_why.c_str());

  int passed = 0, failed = 0, skipped = 0;
  for (std::size_t ti = 0; ti < file.tensors.size(); ++ti) {
    const GgufTensor& t = file.tensors[ti];
    const GgmlTypeInfo* info = ggml_type_info(t.type);  // known: the parser refuses unknown types
    const GgufImporter* importer = gguf_importer(t.type);
    if (importer == nullptr || t.ne.size() != 2) {
      std::printf("\n%s  %s %s  skipped: %s\n", t.name.c_str(), info->name, dims(t).c_str(),
                  importer != nullptr ? "not a matrix" : info->name);
      ++skipped;
      continue;
    }
    const std::int64_t k = t.ne[0], n = t.ne[1];
    std::printf("\n%s  %s [N %lld, K %lld]  -> %s\n", t.name.c_str(), importer->name, (long long)n, (long long)k,
                importer->description);
    nibble::QuantParams p;
    ImportedLinear imp;
    nibble::Status s = importer->params(n, k, &p);
    if (s == nibble::Status::kSuccess) s = imp.carve(n, k, p);
    if (s == nibble::Status::kSuccess) s = importer->import_host(t.data, t.bytes, n, k, imp.m);
    if (s != nibble::Status::kSuccess) {
      std::printf("  FAIL import: %s\n", nibble::to_string(s));
      ++failed;
      continue;
    }
    const std::vector<double> ref = t.type == kGgmlQ4_K ? ref_q4_k(t) : ref_block32(t, t.type == kGgmlQ4_1);
    const bool ok = check_layer(imp.m, imp.perm, n, k, ref, rows, gpu, 20261202 + ti);
    (ok ? passed : failed)++;
  }
  std::printf("\n%d Q4_0 / Q4_1 / Q4_K tensors passed, %d failed, %d tensors skipped%s\n", passed, failed, skipped,
              gpu ? "" : " (import checks only: the GEMM check was skipped without a GPU)");
  if (failed) return 1;
  if (passed == 0) {
    std::printf("no Q4_0 / Q4_1 / Q4_K matrix found\n");
    return 3;
  }
  return 0;
}
