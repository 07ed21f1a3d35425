// examples/files/check.cuh — what load_safetensors.cu and load_gguf.cu share: the import check (nibble's
// dequantization of an imported weight against an independent float64 reference of the checkpoint's own
// definition, exact), and the GEMM check (nibble::gemm on the GPU against a float64 CPU reference of
// A * dequant(W)^T). Include from exactly one .cu file per program (after nibble's GEMM headers).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nibble/gemm/extern_instances.cuh>
#include <nibble/gemm/gemm.cuh>
#include <nibble/layout/repack.cuh>
#include <nibble/quant/quantize.cuh>
#include <string>
#include <vector>

namespace nibble_files {

/// fp16 bits to double, decoded by hand (IEEE binary16: 1 sign, 5 exponent, 10 mantissa bits).
inline double half_bits_to_double(std::uint16_t h) {
  const int sign = h >> 15, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
  double v;
  if (exp == 0)
    v = std::ldexp(double(man), -24);  // subnormal: man * 2^-14 / 1024
  else if (exp == 31)
    v = man ? NAN : INFINITY;
  else
    v = std::ldexp(double(man | 0x400), exp - 25);  // (1024 + man) * 2^(exp - 15) / 1024
  return sign ? -v : v;
}
/// bf16 bits to double: the high half of an fp32.
inline double bf16_bits_to_double(std::uint16_t b) {
  const std::uint32_t w = std::uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &w, 4);
  return f;
}

/// Little-endian element i of a raw tensor (no alignment assumed).
template <class T>
T raw_at(const std::uint8_t* p, std::int64_t i) {
  T v;
  std::memcpy(&v, p + i * std::int64_t(sizeof(T)), sizeof(T));
  return v;
}

/// Activations A [m, k] with values j / 8, |j| <= 16: exact in fp16 and bf16, so the reference uses the very
/// numbers the GPU reads. Deterministic (a 64-bit LCG from `seed`).
inline std::vector<float> make_activations(std::int64_t m, std::int64_t k, std::uint64_t seed) {
  std::vector<float> a(std::size_t(m * k));
  std::uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  for (float& x : a) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    x = float(int((s >> 33) % 33) - 16) / 8.0f;
  }
  return a;
}

/// The import check: nibble's dequantize_cpu of `m` (column p = checkpoint column perm[p]) against `ref`
/// [n, k] in checkpoint order. Returns the number of weights that differ; *max_abs their largest difference.
inline std::int64_t compare_dequant(const nibble::PackedMatrix& m, const std::vector<std::int32_t>& perm,
                                    const std::vector<double>& ref, double* max_abs, std::string* error) {
  std::vector<float> w(std::size_t(m.n * m.k));
  const nibble::Status s = nibble::dequantize_cpu<float>(m, w.data(), m.k);
  if (s != nibble::Status::kSuccess) {
    *error = std::string("dequantize_cpu: ") + nibble::to_string(s);
    return -1;
  }
  std::int64_t bad = 0;
  *max_abs = 0;
  for (std::int64_t r = 0; r < m.n; ++r)
    for (std::int64_t p = 0; p < m.k; ++p) {
      const std::int64_t src = perm.empty() ? p : perm[std::size_t(p)];
      const double got = w[std::size_t(r * m.k + p)], want = ref[std::size_t(r * m.k + src)];
      if (!(got == want) && !(std::isnan(got) && std::isnan(want))) {
        ++bad;
        *max_abs = std::max(*max_abs, std::fabs(got - want));
      }
    }
  return bad;
}

/// C = A * W^T in float64, A [m, k], W [n, k] (checkpoint order).
inline std::vector<double> reference_gemm(const std::vector<float>& a, const std::vector<double>& w, std::int64_t m,
                                          std::int64_t n, std::int64_t k) {
  std::vector<double> c(std::size_t(m * n), 0.0);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (std::int64_t q = 0; q < k; ++q) s += double(a[std::size_t(i * k + q)]) * w[std::size_t(j * k + q)];
      c[std::size_t(i * n + j)] = s;
    }
  return c;
}

/// The GEMM's CPU-side checks for this weight, without a GPU: repack_host into the GEMM layout (host buffers)
/// and gemm::can_implement for `rows` rows of activations (fp32 output). kSuccess, or the first refusal
/// (e.g. kErrorInvalidShape for K % 8 != 0, which the GEMM does not multiply).
inline nibble::Status gemm_precheck(const nibble::PackedMatrix& m, std::int64_t rows) {
  const nibble::DType act = m.scale_type == nibble::DType::kBF16 ? nibble::DType::kBF16 : nibble::DType::kF16;
  const nibble::GemmWeightBytes gb = nibble::gemm_weight_bytes(m.format, m.n, m.k, m.group_size, act);
  auto aligned16 = [](std::vector<std::uint64_t>& v, std::size_t bytes) {
    v.assign(bytes / 8 + 4, 0);
    const auto addr = reinterpret_cast<std::uintptr_t>(v.data());
    return reinterpret_cast<void*>(addr + (16 - addr % 16) % 16);
  };
  std::vector<std::uint64_t> codes, scales, zeros, offsets, a, c;
  nibble::GemmWeights gw;
  NIBBLE_RETURN_IF_ERROR(nibble::repack_host(nibble::plain_view(m), act, aligned16(codes, gb.codes),
                                             aligned16(scales, gb.scales), aligned16(zeros, gb.zeros),
                                             aligned16(offsets, gb.offsets), &gw));
  nibble::gemm::Arguments args;
  args.m = rows;
  args.act_type = act;
  args.lda = (m.k + 7) / 8 * 8;
  args.a = aligned16(a, 16);  // only alignment and non-null are checked
  args.w = gw;
  args.ldc = (m.n + 7) / 8 * 8;
  args.c = aligned16(c, 16);
  args.out_type = nibble::DType::kF32;
  args.sm_count = 132;  // no device query
  return nibble::gemm::can_implement(args);
}

/// Whether a GPU the GEMM can use is present; otherwise *why says what is missing (it contains
/// "no CUDA device" when there is none at all).
inline bool usable_gpu(std::string* why) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  cudaGetLastError();
  if (e != cudaSuccess || count == 0) {
    *why = std::string("no CUDA device (") + (e != cudaSuccess ? cudaGetErrorString(e) : "0 devices") + ")";
    return false;
  }
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) {
    cudaGetLastError();
    *why = "no CUDA device (cudaGetDeviceProperties failed)";
    return false;
  }
  if (prop.major < 8) {
    *why = std::string("CUDA device ") + prop.name + " is older than sm_80, which nibble's GEMM needs";
    return false;
  }
  *why = prop.name;
  return true;
}

/// Device buffers freed on every path.
struct DeviceBuffers {
  std::vector<void*> p;
  ~DeviceBuffers() {
    for (void* q : p) cudaFree(q);
  }
  void* alloc(std::size_t bytes, cudaError_t* e) {
    void* q = nullptr;
    *e = cudaMalloc(&q, std::max<std::size_t>(bytes, 16));
    if (*e == cudaSuccess) p.push_back(q);
    return q;
  }
};

/// The GEMM check on the GPU: copies the imported plain weight `m` (host) to the device, repacks it for fp16
/// activations (bf16 where the checkpoint's scales are bf16), runs nibble::gemm::run with fp32 output on the
/// activations permuted by `perm`, and compares with `c_ref` (float64, from the checkpoint-order A).
/// *max_rel = max |C - C_ref| / max |C_ref|. False with *error on any CUDA / nibble failure.
inline bool gpu_gemm_check(const nibble::PackedMatrix& m, const std::vector<std::int32_t>& perm,
                           const std::vector<float>& a, std::int64_t rows, const std::vector<double>& c_ref,
                           double* max_rel, std::string* error) {
  const std::int64_t n = m.n, k = m.k, lda = (k + 7) / 8 * 8, ldc = (n + 7) / 8 * 8;
  const nibble::DType act = m.scale_type == nibble::DType::kBF16 ? nibble::DType::kBF16 : nibble::DType::kF16;
  DeviceBuffers dev;
  cudaError_t ce = cudaSuccess;
  auto cuda_failed = [&](const char* what) {
    *error = std::string(what) + ": " + cudaGetErrorString(ce);
    return false;
  };
  auto nibble_failed = [&](const char* what, nibble::Status s) {
    *error = std::string(what) + ": " + nibble::to_string(s);
    return false;
  };
  // 1. The plain weight on the device, carved exactly as on the host (codes is the first buffer).
  const nibble::PackedBytes pb = nibble::packed_bytes(n, k, m.params());
  if (pb.status != nibble::Status::kSuccess) return nibble_failed("packed_bytes", pb.status);
  void* plain = dev.alloc(pb.total, &ce);
  if (ce != cudaSuccess) return cuda_failed("cudaMalloc");
  if ((ce = cudaMemcpy(plain, m.codes, pb.total, cudaMemcpyHostToDevice)) != cudaSuccess)
    return cuda_failed("cudaMemcpy");
  nibble::PackedMatrix dm;
  nibble::Status s = nibble::carve_packed_matrix(n, k, m.params(), plain, pb.total, &dm);
  if (s != nibble::Status::kSuccess) return nibble_failed("carve_packed_matrix", s);
  // 2. Repack into the GEMM layout.
  const nibble::GemmWeightBytes gb = nibble::gemm_weight_bytes(m.format, n, k, m.group_size, act);
  void* codes = dev.alloc(gb.codes, &ce);
  void* scales = ce == cudaSuccess ? dev.alloc(gb.scales, &ce) : nullptr;
  void* zeros = ce == cudaSuccess && gb.zeros ? dev.alloc(gb.zeros, &ce) : nullptr;
  void* offsets = ce == cudaSuccess && gb.offsets ? dev.alloc(gb.offsets, &ce) : nullptr;  // affine u4
  if (ce != cudaSuccess) return cuda_failed("cudaMalloc");
  nibble::GemmWeights gw;
  if ((s = nibble::repack(nibble::plain_view(dm), act, codes, scales, zeros, offsets, &gw, 0)) !=
      nibble::Status::kSuccess)
    return nibble_failed("repack", s);
  // 3. Activations in the import's column order, in the activation type (exact: see make_activations).
  std::vector<std::uint16_t> a_bits(std::size_t(rows * lda), 0);
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t p = 0; p < k; ++p) {
      const float v = a[std::size_t(i * k + (perm.empty() ? p : perm[std::size_t(p)]))];
      std::uint16_t b;
      if (act == nibble::DType::kF16) {
        const __half h = __float2half_rn(v);
        std::memcpy(&b, &h, 2);
      } else {
        const __nv_bfloat16 h = __float2bfloat16_rn(v);
        std::memcpy(&b, &h, 2);
      }
      a_bits[std::size_t(i * lda + p)] = b;
    }
  void* a_dev = dev.alloc(a_bits.size() * 2, &ce);
  void* c_dev = ce == cudaSuccess ? dev.alloc(std::size_t(rows * ldc) * sizeof(float), &ce) : nullptr;
  if (ce != cudaSuccess) return cuda_failed("cudaMalloc");
  if ((ce = cudaMemcpy(a_dev, a_bits.data(), a_bits.size() * 2, cudaMemcpyHostToDevice)) != cudaSuccess)
    return cuda_failed("cudaMemcpy");
  if ((ce = cudaMemset(c_dev, 0xFF, std::size_t(rows * ldc) * sizeof(float))) != cudaSuccess)  // poison: NaN
    return cuda_failed("cudaMemset");
  // 4. The GEMM.
  nibble::gemm::Arguments args;
  args.m = rows;
  args.act_type = act;
  args.a = a_dev;
  args.lda = lda;
  args.w = gw;
  args.c = c_dev;
  args.ldc = ldc;
  args.out_type = nibble::DType::kF32;
  if ((s = nibble::gemm::can_implement(args)) != nibble::Status::kSuccess) return nibble_failed("can_implement", s);
  std::size_t ws_bytes = 0;
  if ((s = nibble::gemm::get_workspace_size(args, &ws_bytes)) != nibble::Status::kSuccess)
    return nibble_failed("get_workspace_size", s);
  void* ws = nullptr;
  if (ws_bytes) {
    ws = dev.alloc(ws_bytes, &ce);
    if (ce != cudaSuccess) return cuda_failed("cudaMalloc");
    if ((ce = cudaMemset(ws, 0, ws_bytes)) != cudaSuccess) return cuda_failed("cudaMemset");
  }
  if ((s = nibble::gemm::run(args, ws, ws_bytes, 0)) != nibble::Status::kSuccess) return nibble_failed("gemm::run", s);
  std::vector<float> c(std::size_t(rows * ldc));
  if ((ce = cudaMemcpy(c.data(), c_dev, c.size() * sizeof(float), cudaMemcpyDeviceToHost)) != cudaSuccess)
    return cuda_failed("cudaMemcpy (after the GEMM)");
  double num = 0, den = 0;
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      const double got = c[std::size_t(i * ldc + j)], want = c_ref[std::size_t(i * n + j)];
      num = std::isnan(got) ? INFINITY : std::max(num, std::fabs(got - want));  // NaN: the poison survived
      den = std::max(den, std::fabs(want));
    }
  *max_rel = den > 0 ? num / den : num;
  return true;
}

/// Tolerance of the GEMM check: the GEMM rounds each dequantized weight and each scale to the activation
/// type (relative 2^-11 for fp16, 2^-8 for bf16) and accumulates in fp32; a layout or permutation mistake
/// gives errors of order 1.
inline double gemm_tolerance(nibble::DType scale_type) { return scale_type == nibble::DType::kBF16 ? 3e-2 : 1e-2; }

/// The two checks both examples run on one imported [n, k] layer, printed: the dequantized import (`m`, act-order
/// `perm`) against `ref` (float64, bit-exact expected), then, where the GEMM takes the weight, one GEMM of `rows`
/// activations (seeded by `seed`) against the float64 product on the GPU (skipped, and said so, without one).
/// Every format, affine u4 (GGUF Q4_1 / Q4_K) included. Returns whether the layer passed.
inline bool check_layer(const nibble::PackedMatrix& m, const std::vector<std::int32_t>& perm, std::int64_t n,
                        std::int64_t k, const std::vector<double>& ref, std::int64_t rows, bool gpu,
                        std::uint64_t seed) {
  std::string err;
  double max_abs = 0;
  const std::int64_t bad = compare_dequant(m, perm, ref, &max_abs, &err);
  bool ok = bad == 0;
  if (bad < 0)
    std::printf("  FAIL import check: %s\n", err.c_str());
  else if (bad > 0)
    std::printf("  FAIL import check: %lld of %lld weights differ from the reference (max |diff| %.3g)\n",
                (long long)bad, (long long)(n * k), max_abs);
  else
    std::printf("  import: bit-exact against the reference dequantization (%lld weights)%s\n", (long long)(n * k),
                perm.empty() ? "" : ", act-order permutation applied");
  const nibble::Status pre = gemm_precheck(m, rows);
  if (pre != nibble::Status::kSuccess) {
    // Not a failure of the import: nibble's GEMM does not take every shape the formats allow.
    std::printf("  GEMM: not run: nibble's GEMM refuses this weight (%s; it needs K %% 8 == 0)\n",
                nibble::to_string(pre));
  } else if (gpu) {
    const std::vector<float> a = make_activations(rows, k, seed);
    const std::vector<double> c_ref = reference_gemm(a, ref, rows, n, k);
    double rel = 0;
    const double tol = gemm_tolerance(m.scale_type);
    if (!gpu_gemm_check(m, perm, a, rows, c_ref, &rel, &err)) {
      std::printf("  FAIL GEMM: %s\n", err.c_str());
      ok = false;
    } else {
      std::printf("  GEMM M = %lld: max relative error %.3e (tolerance %.0e)  %s\n", (long long)rows, rel, tol,
                  rel <= tol ? "PASS" : "FAIL");
      ok = ok && rel <= tol;
    }
  } else {
    std::printf("  GEMM: skipped without a GPU (repack_host + can_implement accept the weight)\n");
  }
  std::printf("  %s\n", ok ? "PASS" : "FAIL");
  return ok;
}

}  // namespace nibble_files
