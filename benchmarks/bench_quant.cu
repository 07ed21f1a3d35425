// benchmarks/bench_quant.cu — quantize / dequantize throughput of the plain layout (include/nibble/quant/).
//
// Shape: W [N = 28672, K = 8192] fp16 (a 70B-class MLP projection, 448 MiB): far past any L2, so no buffer
// rotation is needed. Time per call from CUDA events (UseManualTime). Counter GB/s = bytes moved / time:
//   quantize:   fp16 input + packed output (codes, scales, zeros, double-quant state)
//   dequantize: packed input + fp16 output
// Run: ./bench_quant [--benchmark_filter=...]; prints the device first. Without a GPU every case reports
// "no CUDA device".
//
// Measured (NVIDIA H200, sm_90, 132 SMs; the H100 machine was not available for this run), built with
//   nvcc -std=c++17 --expt-relaxed-constexpr -gencode arch=compute_90,code=sm_90 -Iinclude
//        benchmarks/bench_quant.cu -lbenchmark -o bench_quant && ./bench_quant --benchmark_min_time=0.3
//   config      quantize            dequantize
//   s4_g128     445 us  1328 GB/s   184 us  3209 GB/s
//   u4_g128     468 us  1268 GB/s   195 us  3047 GB/s
//   nf4_b64     599 us  1005 GB/s   180 us  3341 GB/s
//   fp4_b64     503 us  1197 GB/s   180 us  3340 GB/s
//   nf4_b64_dq  666 us   931 GB/s   191 us  3090 GB/s
// Dequantize runs at about 70 % of the H200's HBM bandwidth. Quantize looks instruction-bound (not profiled
// yet): an IEEE division per value (s4/u4; the rule is x / s, not x * (1/s)) or 15 threshold compares
// (nf4/fp4, format/codebook.cuh) plus a per-group reduction; issuing two steps' loads before encoding
// (more bytes in flight) was tried and was slower (59 registers halve the occupancy).
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <nibble/quant/quantize.cuh>
#include <string>

#include "event_timer.hpp"

namespace {

using namespace nibble;

constexpr std::int64_t kN = 28672;
constexpr std::int64_t kK = 8192;

/// Deterministic pseudo-normal fill (sum of 4 uniforms from an integer hash, variance-corrected): the
/// quantizer's speed does not depend on the exact distribution, only that values are varied.
__global__ void fill_kernel(__half* x, std::int64_t count) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < count;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    std::uint32_t h = std::uint32_t(i) * 2654435761u ^ std::uint32_t(i >> 32);
    float s = 0.0f;
    for (int j = 0; j < 4; ++j) {
      h ^= h >> 15;
      h *= 2246822519u;
      h ^= h >> 13;
      s += float(h & 0xFFFFFFu) / 16777216.0f;
    }
    x[i] = __float2half_rn((s - 2.0f) * 1.7320508f);
  }
}

struct Input {
  __half* x = nullptr;
  __half* out = nullptr;
  bool ok = false;
};

/// The fp16 input and a dequantization output, allocated once for the whole run.
Input& input() {
  static Input in = [] {
    Input r;
    const std::size_t bytes = std::size_t(kN * kK) * sizeof(__half);
    if (cudaMalloc(&r.x, bytes) != cudaSuccess || cudaMalloc(&r.out, bytes) != cudaSuccess) return r;
    fill_kernel<<<4096, 256>>>(r.x, kN * kK);
    r.ok = cudaDeviceSynchronize() == cudaSuccess;
    return r;
  }();
  return in;
}

struct Packed {
  void* buf = nullptr;
  void* ws = nullptr;
  std::size_t ws_bytes = 0;
  PackedMatrix m;
  PackedBytes bytes;
  ~Packed() {
    cudaFree(buf);
    cudaFree(ws);
  }
};

bool make_packed(const QuantParams& p, Packed& pk) {
  pk.bytes = packed_bytes(kN, kK, p);
  if (pk.bytes.status != Status::kSuccess || cudaMalloc(&pk.buf, pk.bytes.total) != cudaSuccess) return false;
  if (carve_packed_matrix(kN, kK, p, pk.buf, pk.bytes.total, &pk.m) != Status::kSuccess) return false;
  if (get_quantize_workspace_size(pk.m, &pk.ws_bytes) != Status::kSuccess) return false;
  return pk.ws_bytes == 0 || cudaMalloc(&pk.ws, pk.ws_bytes) == cudaSuccess;
}

std::size_t packed_payload(const PackedBytes& b) {
  return b.codes + (b.dq_codes ? 0 : b.scales) + b.zeros + b.dq_codes + b.dq_absmax2 + b.dq_offset;
}

/// Times `op` (one launch sequence on stream 0) with CUDA events, once per benchmark iteration.
template <class Op>
void time_loop(benchmark::State& state, std::size_t bytes_per_call, Op op) {
  const double seconds = time_with_events(state, nullptr, op);
  if (seconds > 0) state.counters["GB/s"] = double(bytes_per_call) * double(state.iterations()) / seconds / 1e9;
  state.counters["MB/call"] = double(bytes_per_call) / 1e6;
}

void BM_quantize(benchmark::State& state, QuantParams p) {
  if (check_device() != Status::kSuccess || !input().ok) {
    state.SkipWithError("no CUDA device");
    return;
  }
  Packed pk;
  if (!make_packed(p, pk)) {
    state.SkipWithError("allocation failed");
    return;
  }
  // With double quantization the fp32 scales are scratch written and read again: counted as traffic too.
  const std::size_t bytes =
      std::size_t(kN * kK) * sizeof(__half) + packed_payload(pk.bytes) + (p.double_quant ? 2 * pk.bytes.scales : 0);
  time_loop(state, bytes, [&] { return quantize(input().x, kK, pk.m, pk.ws, pk.ws_bytes, nullptr); });
}

void BM_dequantize(benchmark::State& state, QuantParams p) {
  if (check_device() != Status::kSuccess || !input().ok) {
    state.SkipWithError("no CUDA device");
    return;
  }
  Packed pk;
  if (!make_packed(p, pk) || quantize(input().x, kK, pk.m, pk.ws, pk.ws_bytes, nullptr) != Status::kSuccess) {
    state.SkipWithError("setup failed");
    return;
  }
  const std::size_t bytes = packed_payload(pk.bytes) + std::size_t(kN * kK) * sizeof(__half);
  time_loop(state, bytes, [&] { return dequantize(pk.m, input().out, kK, nullptr); });
}

/// The measured configurations (issue #2): integer formats with fp16 scales, bitsandbytes' formats as
/// bitsandbytes stores them (fp32 absmax), and NF4 with double-quantized absmax.
struct Config {
  const char* name;
  QuantParams params;
};
const Config kConfigs[] = {
    {"s4_g128", {Format::kS4, 128, DType::kF16, false}},   {"u4_g128", {Format::kU4, 128, DType::kF16, false}},
    {"nf4_b64", {Format::kNf4, 64, DType::kF32, false}},   {"fp4_b64", {Format::kFp4, 64, DType::kF32, false}},
    {"nf4_b64_dq", {Format::kNf4, 64, DType::kF32, true}},
};

}  // namespace

int main(int argc, char** argv) {
  int dev = 0;
  cudaDeviceProp prop{};
  if (cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&prop, dev) == cudaSuccess) {
    int mem_clock_khz = 0;
    cudaDeviceGetAttribute(&mem_clock_khz, cudaDevAttrMemoryClockRate, dev);
    std::printf("device: %s (sm_%d%d, %d SMs, memory clock %d MHz); W [N=%lld, K=%lld] fp16 input\n", prop.name,
                prop.major, prop.minor, prop.multiProcessorCount, mem_clock_khz / 1000, static_cast<long long>(kN),
                static_cast<long long>(kK));
  } else {
    (void)cudaGetLastError();
    std::printf("device: none (every case will report \"no CUDA device\")\n");
  }
  for (const Config& c : kConfigs) {
    benchmark::RegisterBenchmark((std::string("quantize/") + c.name).c_str(), BM_quantize, c.params)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark((std::string("dequantize/") + c.name).c_str(), BM_dequantize, c.params)
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
