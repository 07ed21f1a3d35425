// tests/gemm/odr_probe.hpp — what each of two translation units built for different architectures ("80"
// and "90a") reports about the nibble it compiled (tests/gemm/test_odr.cu links both into one program).
// The probe body is in an anonymous namespace, so that it, too, may differ between the two units.
#pragma once

#include <cstdint>

struct OdrProbe {
  const void* wgmma_available_fn = nullptr;  // &gemm::wgmma_available() as this unit sees it
  const void* run_fn = nullptr;              // &gemm::run<__half, kS4>
  bool built_for_sm90a = false;              // nibble::kBuiltForSm90a
  bool wgmma_available = false;              // gemm::wgmma_available() on the current device
  int mainloop = -1;                         // resolve_mainloop(kAuto), as int
  int status = -1;                           // gemm::run's Status for the probe GEMM (-1: not run)
  double max_rel_err = -1.0;                 // its error against a float64 host reference
};

/// The two units' probes; `gpu`: also run the probe GEMM (M = 40, N = 256, K = 512, s4 g128, fp16).
OdrProbe probe_sm80(bool gpu);
OdrProbe probe_sm90a(bool gpu);

#if defined(NIBBLE_ODR_PROBE_NAME)
#include <cmath>
#include <nibble/gemm/gemm.cuh>
#include <random>
#include <vector>

namespace {

OdrProbe probe_this_unit(bool gpu) {
  namespace gemm = nibble::gemm;
  OdrProbe p;
  p.wgmma_available_fn = reinterpret_cast<const void*>(static_cast<bool (*)()>(&gemm::wgmma_available));
  p.run_fn = reinterpret_cast<const void*>(&gemm::run<__half, nibble::Format::kS4>);
  p.built_for_sm90a = nibble::kBuiltForSm90a;
  if (!gpu) return p;
  p.wgmma_available = gemm::wgmma_available();
  p.mainloop = int(gemm::resolve_mainloop(gemm::Mainloop::kAuto));
  const int m = 40, n = 256, k = 512, group = 128;
  std::mt19937_64 rng(2024);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(nibble::Format::kS4, n, k, group, nibble::DType::kF16);
  const nibble::layout::GemmShape s = nibble::layout::make_gemm_shape(n, k, group);
  std::vector<std::uint8_t> codes(b.codes);
  for (auto& v : codes) v = std::uint8_t(rng());
  std::vector<__half> scales(b.scales / 2), a(std::size_t(m) * k), c(std::size_t(m) * n);
  for (auto& v : scales) v = __float2half(0.01f + 0.01f * std::fabs(normal(rng)));
  for (auto& v : a) v = __float2half(normal(rng));
  void *dc, *ds, *da, *dout;
  if (cudaMalloc(&dc, b.codes) || cudaMalloc(&ds, b.scales) || cudaMalloc(&da, a.size() * 2) ||
      cudaMalloc(&dout, c.size() * 2))
    return p;
  cudaMemcpy(dc, codes.data(), b.codes, cudaMemcpyHostToDevice);
  cudaMemcpy(ds, scales.data(), b.scales, cudaMemcpyHostToDevice);
  cudaMemcpy(da, a.data(), a.size() * 2, cudaMemcpyHostToDevice);
  cudaMemset(dout, 0xFF, c.size() * 2);
  gemm::Arguments args;
  args.m = m;
  args.a = da;
  args.lda = k;
  args.w.format = nibble::Format::kS4;
  args.w.group_size = group;
  args.w.n = n;
  args.w.k = k;
  args.w.codes = static_cast<const std::uint8_t*>(dc);
  args.w.scales = ds;
  args.c = dout;
  args.ldc = n;
  args.split_k = 1;
  p.status = int(gemm::run<__half, nibble::Format::kS4>(args, nullptr, 0, nullptr));
  if (p.status == 0 && cudaDeviceSynchronize() == cudaSuccess &&
      cudaMemcpy(c.data(), dout, c.size() * 2, cudaMemcpyDeviceToHost) == cudaSuccess) {
    double worst = 0;
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        double ref = 0, mag = 0;
        for (int kk = 0; kk < k; ++kk) {
          const nibble::layout::CodeLocation loc = nibble::layout::code_location(s, nibble::Format::kS4, j, kk);
          const int code = (codes[std::size_t(loc.byte)] >> loc.shift) & 0xF;
          const double w = double(code >= 8 ? code - 16 : code) *
                           double(__half2float(scales[std::size_t(nibble::layout::scale_index(s, j, kk))]));
          ref += double(__half2float(a[std::size_t(i) * k + kk])) * w;
          mag += std::fabs(double(__half2float(a[std::size_t(i) * k + kk])) * w);
        }
        const double err = std::fabs(double(__half2float(c[std::size_t(i) * n + j])) - ref) / (mag + 1e-30);
        worst = err > worst ? err : worst;
      }
    p.max_rel_err = worst;
  }
  for (void* ptr : {dc, ds, da, dout}) cudaFree(ptr);
  return p;
}

}  // namespace

OdrProbe NIBBLE_ODR_PROBE_NAME(bool gpu) { return probe_this_unit(gpu); }
#endif
