// benchmarks/bench_import.cu — GPU import time of one large checkpoint weight (include/nibble/import/).
//
// Shape: W [N = 28672, K = 8192] (a 70B-class MLP up / gate projection; issue 10 asks for <= 1 ms per import
// on the H200). Cases: GPTQ sym g128 fp16 (v1), the same with act-order (a random permutation), AutoAWQ GEMM
// g128 fp16, compressed-tensors pack-quantized sym g128 bf16, bitsandbytes nf4 blocksize 64 (fp32 absmax),
// GGUF Q4_0 and Q4_K, HQQ g64 fp16 (kAffineU4, fp32 scale and offset). Inputs are random (a hash of the index, never
// zeros; GPTQ sym's qzeros are the constant word the format requires). The codes alone are 117 MB in and 117 MB out,
// far past any L2, so no buffer rotation is needed.
//
// Time per call from CUDA events recorded on the import's stream around the one kernel (UseManualTime).
// Counters: GB/s = (bytes read + bytes written) / time, where read = every input tensor the import reads
// (qweight / weight / blocks, zeros, scales, perm) and written = every output buffer it fills.
// Each case checks once, before timing, that the import accepted the data (error word 0).
// Run: ./bench_import [--benchmark_filter=...] [--benchmark_out=FILE]; prints the device first. Without a
// GPU it prints that it skips and exits 0.
#include <benchmark/benchmark.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <iterator>
#include <memory>
#include <nibble/import/import.cuh>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "event_timer.hpp"

namespace {

using namespace nibble;

constexpr std::int64_t kN = 28672;
constexpr std::int64_t kK = 8192;
constexpr int kGroup = 128;

/// An integer hash of (index, seed): the random words every input is made of.
__host__ __device__ std::uint32_t hash_word(std::uint64_t i, std::uint32_t seed) {
  std::uint32_t h = std::uint32_t(i) * 2654435761u ^ std::uint32_t(i >> 32) ^ seed * 0x9E3779B9u;
  h ^= h >> 15;
  h *= 2246822519u;
  h ^= h >> 13;
  h *= 3266489917u;
  return h ^ (h >> 16);
}

/// What a fill writes: raw words, finite positive fp16 / bf16 scales around 2^-6, or fp32 ones in [2^-8, 2^8).
enum class Fill { kWords, kF16Scales, kBF16Scales, kF32Scales };

__global__ void fill_kernel(void* dst, std::int64_t count, Fill fill, std::uint32_t seed) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < count;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    const std::uint32_t h = hash_word(std::uint64_t(i), seed);
    switch (fill) {
      case Fill::kWords:
        static_cast<std::uint32_t*>(dst)[i] = h;
        break;
      case Fill::kF16Scales:
        static_cast<std::uint16_t*>(dst)[i] = std::uint16_t(0x2000 + h % 0x1C00);
        break;
      case Fill::kBF16Scales:
        static_cast<std::uint16_t*>(dst)[i] = std::uint16_t(0x3C00 + h % 0x0380);
        break;
      case Fill::kF32Scales:
        static_cast<float*>(dst)[i] = exp2f(float(h % 4096) / 256.0f - 8.0f);
        break;
    }
  }
}

/// Device memory that lives for the whole run (freed at exit by the driver).
struct DeviceArray {
  void* p = nullptr;
  std::size_t bytes = 0;
};

/// A device array of `count` elements of `elem` bytes, filled per `fill` (count elements of the fill's type).
DeviceArray make_array(std::int64_t count, int elem, Fill fill, std::uint32_t seed) {
  DeviceArray a;
  a.bytes = std::size_t(count) * std::size_t(elem);
  if (cudaMalloc(&a.p, a.bytes) != cudaSuccess) {
    a.p = nullptr;
    return a;
  }
  fill_kernel<<<4096, 256>>>(a.p, count, fill, seed);
  return a;
}

/// A device array holding `words` copies of `value`.
DeviceArray constant_words(std::int64_t words, std::uint32_t value) {
  DeviceArray a;
  a.bytes = std::size_t(words) * 4;
  std::vector<std::uint32_t> host(std::size_t(words), value);
  if (cudaMalloc(&a.p, a.bytes) != cudaSuccess ||
      cudaMemcpy(a.p, host.data(), a.bytes, cudaMemcpyHostToDevice) != cudaSuccess)
    a.p = nullptr;
  return a;
}

/// The act-order permutation of a random g_idx (K / 128 groups of 128 columns, shuffled), on the device.
DeviceArray random_perm() {
  std::vector<std::int32_t> g_idx(static_cast<std::size_t>(kK)), perm(static_cast<std::size_t>(kK));
  for (std::int64_t c = 0; c < kK; ++c) g_idx[std::size_t(c)] = std::int32_t(c / kGroup);
  std::mt19937_64 rng(20261203);
  std::shuffle(g_idx.begin(), g_idx.end(), rng);
  DeviceArray a;
  if (act_order_permutation(g_idx.data(), kK, kGroup, perm.data(), nullptr) != Status::kSuccess) return a;
  a.bytes = perm.size() * 4;
  if (cudaMalloc(&a.p, a.bytes) != cudaSuccess ||
      cudaMemcpy(a.p, perm.data(), a.bytes, cudaMemcpyHostToDevice) != cudaSuccess)
    a.p = nullptr;
  return a;
}

/// The output of one case: its buffer, the view carved from it, and the bytes the import writes.
struct Output {
  void* buf = nullptr;
  PackedMatrix m;
  std::size_t written = 0;
  bool ok = false;
};

Output make_output(const QuantParams& p) {
  Output o;
  const PackedBytes b = packed_bytes(kN, kK, p);
  if (b.status != Status::kSuccess || cudaMalloc(&o.buf, b.total) != cudaSuccess) return o;
  o.ok = carve_packed_matrix(kN, kK, p, o.buf, b.total, &o.m) == Status::kSuccess;
  o.written = b.codes + b.scales + b.zeros + b.offsets + b.dq_codes + b.dq_absmax2 + b.dq_offset;
  return o;
}

/// One benchmark case: the import (on the given stream), the bytes it reads, its output and error word.
struct Case {
  std::function<Status(cudaStream_t)> run;
  std::size_t read = 0;
  Output out;
  std::uint32_t* flags = nullptr;  // device; stays 0 for valid data
};

/// Times `c.run` with CUDA events on a non-blocking stream, once per iteration, after one checked call.
void time_case(benchmark::State& state, const Case& c) {
  cudaStream_t stream;
  if (!c.out.ok || cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) != cudaSuccess) {
    state.SkipWithError("setup failed (allocation)");
    return;
  }
  std::uint32_t flags = 0;
  Status s = c.run(stream);
  if (s == Status::kSuccess && cudaStreamSynchronize(stream) != cudaSuccess) s = Status::kErrorCuda;
  if (s == Status::kSuccess && c.flags != nullptr) cudaMemcpy(&flags, c.flags, 4, cudaMemcpyDeviceToHost);
  if (s != Status::kSuccess || flags != 0) {
    state.SkipWithError(s != Status::kSuccess ? to_string(s) : "the import flagged the data");
  } else {
    const double seconds = time_with_events(state, stream, [&] { return c.run(stream); });
    const double bytes = double(c.read + c.out.written);
    if (seconds > 0) state.counters["GB/s"] = bytes * double(state.iterations()) / seconds / 1e9;
    state.counters["MB/call"] = bytes / 1e6;
  }
  cudaStreamDestroy(stream);
}

std::uint32_t* zeroed_flags() {
  std::uint32_t* f = nullptr;
  if (cudaMalloc(&f, 4) != cudaSuccess || cudaMemset(f, 0, 4) != cudaSuccess) return nullptr;
  return f;
}

std::size_t sum_bytes(std::initializer_list<DeviceArray> arrays) {
  std::size_t total = 0;
  for (const DeviceArray& a : arrays) total += a.bytes;
  return total;
}

/// A case from its parameters (`params`: their Status), its device inputs (an empty one was not allocated:
/// the case reports "setup failed") and `make_run(out, flags)`, which returns the import on a stream.
template <class MakeRun>
Case make_case(Status params, const QuantParams& p, std::initializer_list<DeviceArray> inputs, bool with_flags,
               MakeRun make_run) {
  Case c;
  for (const DeviceArray& a : inputs)
    if (a.bytes > 0 && a.p == nullptr) return c;
  if (params != Status::kSuccess) return c;
  c.out = make_output(p);
  c.read = sum_bytes(inputs);
  if (with_flags) c.flags = zeroed_flags();
  c.run = make_run(c.out.m, c.flags);
  // The fills ran on the legacy stream, which the timing's non-blocking stream does not wait for.
  if (cudaDeviceSynchronize() != cudaSuccess) c.out.ok = false;
  return c;
}

/// GPTQ's and AWQ's tensors (the same fields: int32 qweight and qzeros, fp16 scales) for the benchmark shape.
template <class Tensors>
Tensors word_tensors(const DeviceArray& qweight, const DeviceArray& qzeros, const DeviceArray& scales) {
  Tensors t;
  t.k = kK;
  t.n = kN;
  t.qweight = static_cast<const std::int32_t*>(qweight.p);
  t.qzeros = static_cast<const std::int32_t*>(qzeros.p);
  t.scales = scales.p;
  return t;
}

Case gptq_case(bool act_order) {
  const std::int64_t groups = kK / kGroup;
  const DeviceArray qweight = make_array(kK / 8 * kN, 4, Fill::kWords, 1);
  const DeviceArray qzeros = constant_words(groups * kN / 8, 0x77777777u);  // sym v1: z = 8 stored as 7
  const DeviceArray scales = make_array(groups * kN, 2, Fill::kF16Scales, 2);
  const DeviceArray perm = act_order ? random_perm() : DeviceArray{};
  GptqConfig cfg;
  cfg.group_size = kGroup;
  const auto t = word_tensors<GptqTensors>(qweight, qzeros, scales);
  QuantParams p;
  const Status ps = gptq_import_params(cfg, t, &p);
  const auto* dperm = static_cast<const std::int32_t*>(perm.p);
  return make_case(ps, p, {qweight, qzeros, scales, perm}, true, [=](PackedMatrix m, std::uint32_t* flags) {
    return [=](cudaStream_t s) { return import_gptq(cfg, t, dperm, m, flags, s); };
  });
}

Case awq_case() {
  const std::int64_t groups = kK / kGroup;
  const DeviceArray qweight = make_array(kK * kN / 8, 4, Fill::kWords, 3);
  const DeviceArray qzeros = make_array(groups * kN / 8, 4, Fill::kWords, 4);
  const DeviceArray scales = make_array(groups * kN, 2, Fill::kF16Scales, 5);
  AwqConfig cfg;
  cfg.group_size = kGroup;
  const auto t = word_tensors<AwqTensors>(qweight, qzeros, scales);
  QuantParams p;
  const Status ps = awq_import_params(cfg, t, &p);
  return make_case(ps, p, {qweight, qzeros, scales}, false, [=](PackedMatrix m, std::uint32_t*) {
    return [=](cudaStream_t s) { return import_awq(cfg, t, m, s); };
  });
}

Case ct_case() {
  const std::int64_t groups = kK / kGroup;
  const DeviceArray packed = make_array(kN * kK / 8, 4, Fill::kWords, 6);
  const DeviceArray scales = make_array(kN * groups, 2, Fill::kBF16Scales, 7);
  CtConfig cfg;
  cfg.group_size = kGroup;
  CtTensors t;
  t.n = kN;
  t.k = kK;
  t.weight_packed = static_cast<const std::int32_t*>(packed.p);
  t.weight_scale = scales.p;
  t.scale_type = DType::kBF16;
  QuantParams p;
  const Status ps = compressed_tensors_import_params(cfg, t, &p);
  return make_case(ps, p, {packed, scales}, true, [=](PackedMatrix m, std::uint32_t* flags) {
    return [=](cudaStream_t s) { return import_compressed_tensors(cfg, t, nullptr, m, flags, s); };
  });
}

Case bnb_case() {
  static const Codebook16 kNf4Book = nf4_codebook();  // host table: the GPU path checks it on the host
  const DeviceArray weight = make_array(kN * kK / 8, 4, Fill::kWords, 8);
  const DeviceArray absmax = make_array(kN * kK / 64, 4, Fill::kF32Scales, 9);
  BnbQuantState st;
  st.blocksize = 64;
  st.n = kN;
  st.k = kK;
  BnbTensors t;
  t.weight = static_cast<const std::uint8_t*>(weight.p);
  t.absmax = absmax.p;
  t.quant_map = kNf4Book.v;
  QuantParams p;
  const Status ps = bnb_import_params(st, t, &p);
  return make_case(ps, p, {weight, absmax}, false, [=](PackedMatrix m, std::uint32_t*) {
    return [=](cudaStream_t s) { return import_bnb(st, t, m, s); };
  });
}

/// GGUF blocks of random bytes; d / dmin (the first one or two fp16 of a block) are made finite.
__global__ void finite_halves_kernel(std::uint8_t* blocks, std::int64_t count, int block_bytes, int halves) {
  for (std::int64_t b = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; b < count;
       b += std::int64_t(gridDim.x) * blockDim.x)
    for (int h = 0; h < halves; ++h) blocks[b * block_bytes + 2 * h + 1] &= 0x3F;  // exponent < 31
}

Case gguf_case(bool q4_k) {
  const std::size_t bytes = q4_k ? gguf_q4_k_bytes(kN, kK) : gguf_q4_0_bytes(kN, kK);
  const DeviceArray data = make_array(std::int64_t(bytes / 4), 4, Fill::kWords, q4_k ? 10 : 11);
  const int block_bytes = q4_k ? kGgufQ4_KBlockBytes : kGgufQ4_0BlockBytes;
  QuantParams p;
  const Status ps = q4_k ? gguf_q4_k_import_params(kN, kK, &p) : gguf_q4_0_import_params(kN, kK, &p);
  if (data.p != nullptr)
    finite_halves_kernel<<<4096, 256>>>(static_cast<std::uint8_t*>(data.p), std::int64_t(bytes) / block_bytes,
                                        block_bytes, q4_k ? 2 : 1);
  const void* src = data.p;
  return make_case(ps, p, {data}, false, [=](PackedMatrix m, std::uint32_t*) -> std::function<Status(cudaStream_t)> {
    if (q4_k) return [=](cudaStream_t s) { return import_gguf_q4_k(src, bytes, kN, kK, m, s); };
    return [=](cudaStream_t s) { return import_gguf_q4_0(src, bytes, kN, kK, m, s); };
  });
}

/// HQQ's default layer: group 64, fp16 scale and zero (random finite fp16 values), W_q [N*K/128, 64] random bytes.
Case hqq_case() {
  constexpr int kHqqGroup = 64;
  const std::int64_t rows = kN * (kK / kHqqGroup);
  const DeviceArray w_q = make_array(kN * kK / 8, 4, Fill::kWords, 12);
  const DeviceArray scale = make_array(rows, 2, Fill::kF16Scales, 13);
  const DeviceArray zero = make_array(rows, 2, Fill::kF16Scales, 14);
  HqqConfig cfg;
  cfg.group_size = kHqqGroup;
  HqqTensors t;
  t.n = kN;
  t.k = kK;
  t.w_q = static_cast<const std::uint8_t*>(w_q.p);
  t.w_q_rows = rows / 2;
  t.w_q_row_bytes = kHqqGroup;
  t.scale = scale.p;
  t.zero = zero.p;
  t.scale_count = t.zero_count = rows;
  QuantParams p;
  const Status ps = hqq_import_params(cfg, t, &p);
  return make_case(ps, p, {w_q, scale, zero}, false, [=](PackedMatrix m, std::uint32_t*) {
    return [=](cudaStream_t s) { return import_hqq(cfg, t, m, s); };
  });
}

/// The cases, each built on its first run (0.3-0.5 GB of inputs and outputs, kept for the run: Google
/// Benchmark calls a case's function more than once).
struct Registered {
  const char* name;
  std::function<Case()> make;
};
const Registered kCases[] = {
    {"gptq/s4_g128_f16", [] { return gptq_case(false); }},
    {"gptq/s4_g128_f16_act_order", [] { return gptq_case(true); }},
    {"awq/u4_g128_f16", awq_case},
    {"compressed_tensors/s4_g128_bf16", ct_case},
    {"bnb/nf4_b64", bnb_case},
    {"gguf/q4_0", [] { return gguf_case(false); }},
    {"gguf/q4_k", [] { return gguf_case(true); }},
    {"hqq/affine_g64_f16", hqq_case},
};

}  // namespace

int main(int argc, char** argv) {
  if (check_device() != Status::kSuccess) {
    (void)cudaGetLastError();
    std::printf("bench_import: no usable CUDA device; skipping every case\n");
    return 0;
  }
  int dev = 0;
  cudaDeviceProp prop{};
  cudaGetDevice(&dev);
  cudaGetDeviceProperties(&prop, dev);
  int mem_clock_khz = 0;
  cudaDeviceGetAttribute(&mem_clock_khz, cudaDevAttrMemoryClockRate, dev);
  std::printf("device: %s (sm_%d%d, %d SMs, memory clock %d MHz); W [N=%lld, K=%lld]; commit %s\n", prop.name,
              prop.major, prop.minor, prop.multiProcessorCount, mem_clock_khz / 1000, static_cast<long long>(kN),
              static_cast<long long>(kK), NIBBLE_GIT_COMMIT);
  static std::vector<std::unique_ptr<Case>> built(std::size(kCases));
  for (std::size_t i = 0; i < std::size(kCases); ++i) {
    benchmark::RegisterBenchmark((std::string("import/") + kCases[i].name).c_str(),
                                 [i](benchmark::State& state) {
                                   if (!built[i]) built[i] = std::make_unique<Case>(kCases[i].make());
                                   time_case(state, *built[i]);
                                 })
        ->UseManualTime()
        ->Unit(benchmark::kMicrosecond);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
