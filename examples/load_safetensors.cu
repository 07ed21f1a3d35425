// examples/load_safetensors.cu — reads a .safetensors checkpoint, imports every 4-bit linear layer it holds
// with nibble's importers and checks each one twice: the import against an independent float64 dequantization
// written here from each project's own definition (must be exact), and nibble::gemm on the GPU against a
// float64 CPU product A * dequant(W)^T.
//
//   load_safetensors MODEL.safetensors [--config CONFIG.json] [--m ROWS]
//
//   MODEL.safetensors  GPTQ (qweight / qzeros / scales / g_idx), AutoAWQ GEMM (qweight / qzeros / scales),
//                      compressed-tensors pack-quantized (weight_packed / weight_scale / weight_shape
//                      [/ weight_zero_point / weight_g_idx]) or bitsandbytes 4-bit (weight / weight.absmax /
//                      weight.quant_map / weight.quant_state.bitsandbytes__nf4|fp4 [/ weight.nested_*]);
//                      one file (a shard of a sharded checkpoint works: each layer lies in one shard).
//   --config FILE      the quantization config: the model's config.json (its "quantization_config" is used),
//                      GPTQ's quantize_config.json or AutoAWQ's quant_config.json. Without it the JSON in the
//                      file's __metadata__["quantization_config"] is used if present, else what the tensors
//                      say (group size from the scales' shape, GPTQ sym and v1 / v2 from the qzeros words).
//                      Asymmetric GPTQ needs it: its data cannot tell v1 ("gptq") from v2 ("gptq_v2").
//   --m ROWS           rows of the random activations of the GEMM check (default 5).
//
// Output: one block per layer (import description, the import check, the GEMM check with its max relative
// error max|C - C_ref| / max|C_ref| and the tolerance), the tensors that are not part of a 4-bit linear,
// and a summary. Exit status: 0 every layer passed; 1 a layer failed (or could not be imported); 2 usage
// error or a malformed / unreadable file (the reason is printed); 3 no 4-bit linear found.
// Without a usable GPU (cudaGetDeviceCount fails or finds none, or the device is older than sm_80) it prints
// a line with "no CUDA device" (or the device's shortcoming), runs the import checks and the GEMM's CPU-side
// checks (repack_host + gemm::can_implement) only, says the GEMM was skipped, and its exit status reflects
// those. A weight the GEMM refuses (K not a multiple of 8: compressed-tensors allows any even K) is reported
// as "GEMM: not run" and does not fail the layer.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "files/check.cuh"
#include "files/layers.hpp"

using namespace nibble_files;

namespace {

/// A scale element of a raw F16 / BF16 / F32 tensor, as double.
double scale_at(const StTensor* t, std::int64_t i) {
  if (t->dtype == StDType::kF16) return half_bits_to_double(raw_at<std::uint16_t>(t->data, i));
  if (t->dtype == StDType::kBF16) return bf16_bits_to_double(raw_at<std::uint16_t>(t->data, i));
  return raw_at<float>(t->data, i);
}
std::uint32_t nibble_at(std::uint32_t word, std::int64_t i) { return (word >> (4 * i)) & 0xFu; }

// ---- the reference dequantizations: each project's definition, from the raw tensors ----------------------
// (Shapes were checked by import_linear before these run.)

/// GPTQ (AutoGPTQ qlinear_cuda_old.py forward; GPTQModel): W[n, k] = scales[g, n] * (q - z), g = g_idx[k],
/// q = nibble k % 8 of qweight[k / 8, n], z = nibble n % 8 of qzeros[g, n / 8], plus 1 in v1.
std::vector<double> ref_gptq(const Linear& l, const ImportedLinear& imp) {
  const StTensor *qw = l.get("qweight"), *qz = l.get("qzeros"), *sc = l.get("scales"), *gi = l.get("g_idx");
  const std::int64_t n = imp.n, k = imp.k;
  std::vector<double> w(std::size_t(n * k));
  for (std::int64_t c = 0; c < k; ++c) {
    const std::int64_t g = gi ? raw_at<std::int32_t>(gi->data, c) : c / imp.group;
    for (std::int64_t r = 0; r < n; ++r) {
      const double q = nibble_at(raw_at<std::uint32_t>(qw->data, (c / 8) * n + r), c % 8);
      const double z = nibble_at(raw_at<std::uint32_t>(qz->data, g * (n / 8) + r / 8), r % 8) + (imp.gptq_v1 ? 1 : 0);
      w[std::size_t(r * k + c)] = scale_at(sc, g * n + r) * (q - z);
    }
  }
  return w;
}

/// AutoAWQ (packing_utils.py dequantize_gemm): nibble i of word (k, c) is column 8c + [0,2,4,6,1,3,5,7][i];
/// W[n, k] = (q - z) * scales[k / group, n].
std::vector<double> ref_awq(const Linear& l, const ImportedLinear& imp) {
  static const int kOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};
  const StTensor *qw = l.get("qweight"), *qz = l.get("qzeros"), *sc = l.get("scales");
  const std::int64_t n = imp.n, k = imp.k, words = n / 8;
  std::vector<double> w(std::size_t(n * k));
  for (std::int64_t c = 0; c < k; ++c)
    for (std::int64_t word = 0; word < words; ++word)
      for (int i = 0; i < 8; ++i) {
        const std::int64_t r = 8 * word + kOrder[i], g = c / imp.group;
        const double q = nibble_at(raw_at<std::uint32_t>(qw->data, c * words + word), i);
        const double z = nibble_at(raw_at<std::uint32_t>(qz->data, g * words + word), i);
        w[std::size_t(r * k + c)] = (q - z) * scale_at(sc, g * n + r);
      }
  return w;
}

/// compressed-tensors (pack_quantized.py, forward.py dequantize): value = nibble k % 8 of
/// weight_packed[n, k / 8] - 8; zero point: nibble n % 8 of weight_zero_point[n / 8, g] - 8 (packed) or the
/// int8 itself; W = (value - zp) * scale[n, g] (one scale for "tensor"); g = g_idx[k] or k / group.
std::vector<double> ref_ct(const Linear& l, const ImportedLinear& imp) {
  const StTensor *wp = l.get("weight_packed"), *ws = l.get("weight_scale"), *zp = l.get("weight_zero_point"),
                 *gi = l.get("weight_g_idx");
  const std::int64_t n = imp.n, k = imp.k, words = (k + 7) / 8, groups = k / imp.group;
  std::vector<double> w(std::size_t(n * k));
  for (std::int64_t r = 0; r < n; ++r)
    for (std::int64_t c = 0; c < k; ++c) {
      const std::int64_t g = gi ? raw_at<std::int32_t>(gi->data, c) : c / imp.group;
      const double v = double(nibble_at(raw_at<std::uint32_t>(wp->data, r * words + c / 8), c % 8)) - 8;
      double z = 0;
      if (zp != nullptr && zp->dtype == StDType::kI32)
        z = double(nibble_at(raw_at<std::uint32_t>(zp->data, (r / 8) * groups + g), r % 8)) - 8;
      else if (zp != nullptr)
        z = raw_at<std::int8_t>(zp->data, r * groups + g);
      const double s = scale_at(ws, ws->numel == 1 ? 0 : r * groups + g);
      w[std::size_t(r * k + c)] = (v - z) * s;
    }
  return w;
}

/// bitsandbytes (functional.py dequantize_4bit, dequantize_blockwise; kernels.cu: the first element of a
/// byte in its HIGH nibble): flat e = n * K + k; W = float(quant_map[nibble] * absmax[e / blocksize]), with
/// absmax_b = float(float(nested_quant_map[code_b] * nested_absmax[b / nested_blocksize]) + nested_offset)
/// under double quantization (all in fp32, as bitsandbytes computes it).
std::vector<double> ref_bnb(const Linear& l, const ImportedLinear& imp, const nibble::BnbQuantState& st) {
  const StTensor *wt = l.get("weight"), *am = l.get("absmax"), *qm = l.get("quant_map"), *na = l.get("nested_absmax"),
                 *nm = l.get("nested_quant_map");
  const std::int64_t total = imp.n * imp.k;
  std::vector<double> w(static_cast<std::size_t>(total));
  for (std::int64_t e = 0; e < total; ++e) {
    const std::uint8_t byte = wt->data[e / 2];
    const int code = (e % 2 == 0) ? byte >> 4 : byte & 0xF;
    const std::int64_t b = e / st.blocksize;
    float absmax;
    if (na != nullptr) {
      const volatile float prod =
          raw_at<float>(nm->data, am->data[b]) * raw_at<float>(na->data, b / st.nested_blocksize);
      absmax = prod + st.nested_offset;
    } else {
      absmax = raw_at<float>(am->data, b);
    }
    const volatile float v = raw_at<float>(qm->data, code) * absmax;
    w[std::size_t(e)] = v;
  }
  return w;
}

std::string read_text(const std::string& path, bool* ok) {
  std::vector<std::uint8_t> b;
  std::string err;
  *ok = read_file(path, &b, &err);
  if (!*ok) std::printf("error: %s\n", err.c_str());
  return std::string(b.begin(), b.end());
}

}  // namespace

int main(int argc, char** argv) {
  std::string path, config_path;
  std::int64_t rows = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a == "--m" && i + 1 < argc) {
      rows = std::atoll(argv[++i]);
    } else if (path.empty() && a.rfind("--", 0) != 0) {
      path = a;
    } else {
      path.clear();
      break;
    }
  }
  if (path.empty() || rows < 1 || rows > 4096) {
    std::printf("usage: %s MODEL.safetensors [--config CONFIG.json] [--m ROWS (1..4096)]\n", argv[0]);
    return 2;
  }
  std::printf("nibble %s load_safetensors: %s\n", NIBBLE_VERSION_STRING, path.c_str());
  std::vector<std::uint8_t> bytes;
  std::string err;
  if (!read_file(path, &bytes, &err)) {
    std::printf("error: %s\n", err.c_str());
    return 2;
  }
  SafetensorsFile file;
  Result r = parse_safetensors(bytes.data(), bytes.size(), &file);
  if (!r.ok) {
    std::printf("error: %s is not a valid safetensors file: %s\n", path.c_str(), r.error.c_str());
    return 2;
  }
  std::printf("%zu tensors, header %llu bytes, %zu metadata keys\n", file.tensors.size(),
              (unsigned long long)file.header_bytes, file.metadata.size());
  QuantConfig cfg;
  if (!config_path.empty()) {
    bool ok = false;
    const std::string text = read_text(config_path, &ok);
    if (!ok) return 2;
    r = parse_quant_config(text, &cfg);
    if (!r.ok) {
      std::printf("error: %s: %s\n", config_path.c_str(), r.error.c_str());
      return 2;
    }
    std::printf("config: %s\n", config_path.c_str());
  } else {
    r = metadata_config(file, &cfg);
    if (!r.ok) {
      std::printf("error: __metadata__ quantization_config: %s\n", r.error.c_str());
      return 2;
    }
    std::printf("config: %s\n",
                cfg.present ? "__metadata__[\"quantization_config\"]" : "none (inferred from the tensors)");
  }

  std::string gpu_why;
  const bool gpu = usable_gpu(&gpu_why);
  std::printf(gpu ? "GPU: %s\n" : "%s: the GEMM check is skipped, the import checks run on the CPU\n", gpu_why.c_str());

  std::vector<Linear> linears;
  std::vector<const StTensor*> other;
  find_linears(file, &linears, &other);
  int passed = 0, failed = 0;
  for (std::size_t li = 0; li < linears.size(); ++li) {
    const Linear& l = linears[li];
    ImportedLinear imp;
    r = import_linear(l, cfg, &imp);
    if (!r.ok) {
      std::printf("\n%s\n  FAIL import: %s\n", l.prefix.c_str(), r.error.c_str());
      ++failed;
      continue;
    }
    std::printf("\n%s  [N %lld, K %lld]  %s\n", l.prefix.c_str(), (long long)imp.n, (long long)imp.k,
                imp.description.c_str());
    std::vector<double> ref;
    switch (imp.kind) {
      case LinearKind::kGptq:
        ref = ref_gptq(l, imp);
        break;
      case LinearKind::kAwq:
        ref = ref_awq(l, imp);
        break;
      case LinearKind::kCompressedTensors:
        ref = ref_ct(l, imp);
        break;
      case LinearKind::kBitsandbytes: {
        nibble::BnbQuantState st;
        bool fp4 = false;
        if (!detail::parse_bnb_state(l, l.get("quant_state"), &st, &fp4).ok) break;  // import already parsed it
        ref = ref_bnb(l, imp, st);
        break;
      }
    }
    const bool ok = check_layer(imp.m, imp.perm, imp.n, imp.k, ref, rows, gpu, 20261202 + li);
    (ok ? passed : failed)++;
  }

  if (!other.empty()) {
    std::printf("\nnot 4-bit linears (skipped): %zu tensors\n", other.size());
    for (std::size_t i = 0; i < other.size() && i < 10; ++i)
      std::printf("  %s  %s\n", other[i]->name.c_str(), detail::shape_str(other[i]).c_str());
    if (other.size() > 10) std::printf("  ... and %zu more\n", other.size() - 10);
  }
  std::printf("\n%d layers passed, %d failed%s\n", passed, failed,
              gpu ? "" : " (import checks only: the GEMM check was skipped without a GPU)");
  if (failed) return 1;
  if (passed == 0) {
    std::printf("no 4-bit linear found\n");
    return 3;
  }
  return 0;
}
