// tests/gemm/c_hash.cu — prints a hash of C for a fixed set of GEMM cases (fixed seeds), one line per case,
// so that two commits can be compared bit for bit on the same GPU: build this file against each commit's
// include/ and diff the outputs (benchmarks/NOTES.md, "bit-identical C"). Compiles against the API before
// and after the gemm/ reshape (get_workspace_size's two forms). Exit status 1 on any failed run.
//
//   gemm_c_hash > hashes.txt        (without a GPU it says so and exits 0)
//   gemm_c_hash --host-time         the CPU time of one run() call (M = 1, K = N = 4096, s4 g128, fp16;
//                                   batches of 200 calls, the stream synchronized between batches)
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <nibble/gemm/gemm.cuh>
#include <random>
#include <vector>

#if __has_include(<nibble/gemm/tile_registry.cuh>)
#define NIBBLE_HASH_NEW_API 1
#include <nibble/gemm/extern_instances.cuh>  // kernels: nibble_gemm_kernels
#endif

namespace {

using nibble::DType;
using nibble::Format;

std::uint64_t fnv1a(const void* data, std::size_t n, std::uint64_t h = 1469598103934665603ull) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (std::size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

std::uint16_t bits_of(DType t, float x) {
  if (t == DType::kF16) {
    const __half h = __float2half(x);
    return *reinterpret_cast<const std::uint16_t*>(&h);
  }
  const __nv_bfloat16 b = __float2bfloat16(x);
  return *reinterpret_cast<const std::uint16_t*>(&b);
}

struct Case {
  Format f;
  DType act;
  DType out;
  int group;
  std::int64_t m, n, k;
  nibble::gemm::Mainloop mainloop;
};

const char* fname(Format f) { return nibble::to_string(f); }

bool run_case(const Case& c, std::uint64_t seed, std::uint64_t* hash, double* host_ns = nullptr) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(c.f, c.n, c.k, c.group, c.act);
  std::vector<std::uint8_t> codes(b.codes), zeros(b.zeros);
  for (auto& v : codes) v = std::uint8_t(rng());
  for (auto& v : zeros) v = std::uint8_t(rng() % 16);
  std::vector<std::uint16_t> scales(b.scales / 2), a(std::size_t(c.m * c.k));
  for (auto& v : scales) v = bits_of(c.act, 0.005f + 0.01f * std::fabs(normal(rng)));
  for (auto& v : a) v = bits_of(c.act, normal(rng));
  const std::size_t c_bytes = std::size_t(c.m * c.n) * (c.out == DType::kF32 ? 4 : 2);
  void *d_codes, *d_scales, *d_zeros = nullptr, *d_a, *d_c;
  if (cudaMalloc(&d_codes, b.codes) || cudaMalloc(&d_scales, b.scales) || cudaMalloc(&d_a, a.size() * 2) ||
      cudaMalloc(&d_c, c_bytes))
    return false;
  if (b.zeros && cudaMalloc(&d_zeros, b.zeros)) return false;
  cudaMemcpy(d_codes, codes.data(), b.codes, cudaMemcpyHostToDevice);
  cudaMemcpy(d_scales, scales.data(), b.scales, cudaMemcpyHostToDevice);
  if (b.zeros) cudaMemcpy(d_zeros, zeros.data(), b.zeros, cudaMemcpyHostToDevice);
  cudaMemcpy(d_a, a.data(), a.size() * 2, cudaMemcpyHostToDevice);
  cudaMemset(d_c, 0xFF, c_bytes);
  nibble::gemm::Arguments args;
  args.m = c.m;
  args.act_type = c.act;
  args.a = d_a;
  args.lda = c.k;
  args.w.format = c.f;
  args.w.group_size = c.group;
  args.w.n = c.n;
  args.w.k = c.k;
  args.w.scale_type = c.act;
  args.w.codes = static_cast<const std::uint8_t*>(d_codes);
  args.w.scales = d_scales;
  args.w.zeros = static_cast<const std::uint8_t*>(d_zeros);
  args.c = d_c;
  args.ldc = c.n;
  args.out_type = c.out;
  args.mainloop = c.mainloop;
  std::size_t ws_bytes = 0;
#if defined(NIBBLE_HASH_NEW_API)
  if (nibble::gemm::get_workspace_size(args, &ws_bytes) != nibble::Status::kSuccess) return false;
#else
  ws_bytes = nibble::gemm::get_workspace_size(args);
#endif
  void* ws = nullptr;
  if (ws_bytes) {
    if (cudaMalloc(&ws, ws_bytes)) return false;
    cudaMemset(ws, 0, ws_bytes);
  }
  nibble::Status s = nibble::gemm::run(args, ws, ws_bytes, nullptr);
  if (host_ns != nullptr && s == nibble::Status::kSuccess) {
    // median over 15 batches of 200 calls of the wall time per call; the stream drains between batches
    std::vector<double> per_call;
    for (int batch = 0; batch < 16; ++batch) {
      cudaDeviceSynchronize();
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 200 && s == nibble::Status::kSuccess; ++i) s = nibble::gemm::run(args, ws, ws_bytes, nullptr);
      const auto t1 = std::chrono::steady_clock::now();
      if (batch > 0) per_call.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / 200);
    }
    std::sort(per_call.begin(), per_call.end());
    *host_ns = per_call[per_call.size() / 2];
    // the host side without the launch: get_workspace_size runs the same checks and the plan
    const auto t0 = std::chrono::steady_clock::now();
    std::size_t b = 0;
    for (int i = 0; i < 20000; ++i) {
#if defined(NIBBLE_HASH_NEW_API)
      (void)nibble::gemm::get_workspace_size(args, &b);
#else
      b += nibble::gemm::get_workspace_size(args);
#endif
    }
    const auto t1 = std::chrono::steady_clock::now();
    std::printf("  get_workspace_size (checks + plan, no launch): %.0f ns per call (%zu)\n",
                std::chrono::duration<double, std::nano>(t1 - t0).count() / 20000, b % 2);
  }
  std::vector<unsigned char> out(c_bytes);
  const bool ok = s == nibble::Status::kSuccess && cudaDeviceSynchronize() == cudaSuccess &&
                  cudaMemcpy(out.data(), d_c, c_bytes, cudaMemcpyDeviceToHost) == cudaSuccess;
  *hash = fnv1a(out.data(), out.size());
  for (void* p : {d_codes, d_scales, d_zeros, d_a, d_c, ws})
    if (p) cudaFree(p);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    std::printf("no CUDA device: gemm_c_hash needs a GPU; nothing to do\n");
    return 0;
  }
  using nibble::gemm::Mainloop;
  if (argc > 1 && std::strcmp(argv[1], "--host-time") == 0) {
    for (std::int64_t m : {std::int64_t(1), std::int64_t(4096)}) {
      std::uint64_t h = 0;
      double ns = 0;
      const Case c{Format::kS4, DType::kF16, DType::kF16, 128, m, 4096, 4096, Mainloop::kAuto};
      if (!run_case(c, 99, &h, &ns)) return 1;
      std::printf("host time of one gemm::run call, M=%lld K=N=4096 s4 g128 f16: %.0f ns\n", (long long)m, ns);
    }
    return 0;
  }
  const Mainloop mainloops[] = {Mainloop::kAuto, Mainloop::kMmaSync, Mainloop::kTransposedMma};
  const std::int64_t ms[] = {1, 7, 16, 17, 64, 65, 130, 300, 1024};
  struct Shape {
    std::int64_t n, k;
  };
  const Shape shapes[] = {{300, 1152}, {4096, 4096}, {1000, 2048}};
  int failures = 0, cases = 0;
  std::uint64_t seed = 1;
  for (Format f : {Format::kS4, Format::kU4, Format::kNf4, Format::kFp4})
    for (DType act : {DType::kF16, DType::kBF16})
      for (const Shape& sh : shapes)
        for (std::int64_t m : ms)
          for (Mainloop ml : mainloops) {
            const int group = f == Format::kNf4 || f == Format::kFp4 ? 64 : 128;
            const DType out = (m % 2) ? DType::kF32 : act;
            const Case c{f, act, out, group, m, sh.n, sh.k, ml};
            std::uint64_t h = 0;
            const bool ok = run_case(c, seed++, &h);
            ++cases;
            if (!ok) ++failures;
            std::printf("%s %s %s g%d M%lld N%lld K%lld ml%d %016llx%s\n", fname(f),
                        act == DType::kF16 ? "f16" : "bf16", out == DType::kF32 ? "f32" : "act", group, (long long)m,
                        (long long)sh.n, (long long)sh.k, int(ml), (unsigned long long)h, ok ? "" : " FAILED");
          }
  std::printf("# %d cases, %d failed\n", cases, failures);
  return failures ? 1 : 0;
}
