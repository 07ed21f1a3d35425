// benchmarks/bench_gemm.cu — nibble's 4-bit GEMM against cuBLASLt fp16 / bf16 on the same shapes, whole
// decoder layers, a dense M grid, and the host cost of one run() call.
//
//   bench_gemm --benchmark_out=gemm.json --benchmark_out_format=json  # everything (a few minutes)
//   bench_gemm --benchmark_filter='^(nibble|cublas)/.*/K8192_N28672/M1/'  # one shape, decode, every lib / type
//   bench_gemm --benchmark_filter='^nibble/bf16/nf4b64/'       # one type and format
//   bench_gemm --benchmark_filter='^(nibble|cublas)/'          # the per-shape cases only (the classic run)
//   bench_gemm --benchmark_filter='^chain/llama3-70b/'         # one model's layer chains
//   bench_gemm --benchmark_filter='^mgrid/'                    # the M grid alone (well under 2 min on an H200)
//   bench_gemm --benchmark_filter='^host/'                     # the CPU cost of run()
//   bench_gemm --benchmark_list_tests                          # the names (works without a GPU)
// Anchor filters with '^': a bare shape such as 'K8192_N28672/M1/' also matches the mgrid/ and host/ names.
//
// Names (Google Benchmark appends /iterations:<n>/manual_time to each), <act> = f16 or bf16:
//   cublas/<act>/K<K>_N<N>/M<M>             cuBLASLt (cublasLtMatmul, see below) on a dense W of type <act>
//   nibble/<act>/<format>/K<K>_N<N>/M<M>    nibble; <format> s4g128 (signed int4, group 128) or nf4b64
//                                           (NF4, blocksize 64); shapes K x N 4096x4096, 4096x14336,
//                                           14336x4096, 8192x28672, 28672x8192; M 1, 4, 16, 64, 256, 1024, 4096
//   nibble/f16/<format>/K<K>_N<N>/M<M>      the u4 / affine u4 comparison: <format> u4g32, affine_u4g32, u4g128,
//                                           affine_u4g128 (zero point 8; offsets uniform in [-0.12, -0.04], about
//                                           -8 scales, as GGUF Q4_1); K x N 4096x14336 and 28672x8192; M 1, 16,
//                                           1024 (kAuto: the same kernel family for both, the stream kernel
//                                           at M = 1)
//   nibble/f16/nf4b64dq/K<K>_N<N>/M<M>     nf4 b64 with compact double-quantized scales (repack_dq: 8-bit codes,
//                                           absmax2 per 256, offset; 4.127 bits per weight), every shape, M 1, 4,
//                                           16, 64, 256, 1024: against nf4b64 (16-bit scales) in the same run
//   chain/<model>/<lib>/<act>/M<M>          (lib: cublas, nibble_s4g128, nibble_s4g128_pdl = with
//                                           Arguments::programmatic_launch) one decoder layer's GEMMs in order (qkv, o,
//                                           gate_up, down) in ONE graph: <model> llama3-8b (K x N 4096x6144, 4096x4096,
//                                           4096x28672, 14336x4096) or llama3-70b (8192x10240, 8192x8192, 8192x57344,
//                                           28672x8192); <lib> cublas or nibble_s4g128; M 1, 4, 16. The
//                                           output of one GEMM does not feed the next (every GEMM reads the
//                                           same A and writes the same C); what counts is weight traffic and
//                                           the launch sequence
//   mgrid/f16/s4g128/K<K>_N<N>/M<M>         nibble only, K x N 4096x4096 and 8192x28672, every M from 1 to 80,
//                                           then 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640,
//                                           768, 1024, 1536, 2048, 3072, 4096: where the tile / split-K
//                                           heuristic switches (few iterations per case)
//   host/run/K4096_N4096/M<M>               CPU wall time of one nibble::gemm::run() call (f16, s4g128), no
//                                           graph, M 1 (decode) and 4096 (prefill)
// All compute C[M, N] = A[M, K] * W[N, K]^T with A and C of the activation type. cuBLASLt: fp32 compute
// (CUBLAS_COMPUTE_32F), a 32 MiB workspace and the first (best) algorithm of cublasLtMatmulAlgoGetHeuristic,
// as PyTorch runs it; the names keep the prefix cublas/.
//
// How a GPU case is timed (STYLE.md section 9, .library/device/METHOD.md):
//   * Weights rotate: the case holds R copies of its weight (repacked codes + scales for nibble, the dense
//     [N, K] matrix for cuBLAS; for chain/ cases R whole-layer weight sets), R the fewest (>= 2) whose total
//     exceeds 256 MiB, four times the H200's 60 MB L2 (five times the H100's 50 MB), so every launch reads
//     its weight from DRAM. A and C are one buffer each (for small M they stay in L2, for both libraries).
//   * One CUDA graph holds R launches (chain/: R layers of 4 launches), launch i reading copy i. Before
//     timing: one plain (uncaptured) run of each GEMM with C poisoned to NaN, after which every C[M, N]
//     element must be finite (catches a kernel that writes nothing or garbage), then warm-up graph launches:
//     at least one, and at least 20 ms of GPU time (clocks settle after the change of load).
//   * Each benchmark iteration is one graph launch between two CUDA events; its per-launch time (graph
//     time / R: per layer for chain/) goes to SetIterationTime, so Google Benchmark's time column is the
//     mean per launch. The iteration count is fixed per case (->Iterations), chosen from an H100 cost model
//     so that each case takes about 0.25 s of GPU time (mgrid/: 0.05 s, at least 3 iterations); no adaptive
//     search, so a run takes a predictable time.
//   * Counters, all from the MEDIAN per-launch time of the case's iterations:
//       us                 microseconds per launch (chain/: per layer, all four GEMMs)
//       GB/s               bytes that must move / time: nibble packed codes + scales + A + C,
//                          cuBLAS dense W + A + C (each read or written once; chain/: summed over the layer)
//       TFLOP/s            2 M N K / time (chain/: summed over the layer)
//       speedup_vs_cublas  (nibble/, chain/.../nibble_s4g128) cuBLAS median / nibble median on the same
//                          shape (or layer), M and type; > 1 means nibble is faster. cuBLAS is measured once
//                          per (shape or model, M, type): by its own entry when that ran first (the default
//                          order), else inside the nibble case, the same way, and cached.
//       cublas_us          (with speedup_vs_cublas) that cuBLAS time
//       cv_pct             standard deviation / mean of the case's per-launch times, in percent
//       copies             R
//       splits             (nibble/, mgrid/) the plan run() uses: K splits, from gemm::make_plan
//     and the label "tile=<name>": the plan's tile by its registry name (gemm::tile_name: decode,
//     decode_codebook, decode_compact, small, small_compact, large, large_compact, wg_small, wg_mid, wg_large,
//     stream_m8, stream_m8_l, stream_m16, stream_m32, decode32, decode48)
//   * host/ cases: no graph; each iteration times 200 back-to-back run() calls into one stream with the
//     host's steady clock (the time column is per call), then synchronizes the stream outside the timed
//     region so that the launch queue never fills. Counters: host_ns (median ns per call), cv_pct,
//     calls_per_sync.
//   * NIBBLE_MAINLOOP=auto|mma|mma_t|wgmma|stream (environment) forces the kernel family (default auto; mma
//     runs the mma.sync decode tile at M <= 16 where auto runs the stream kernel).
//   * Inputs are random, never zeros: A ~ N(0, 1); nibble codes are random bytes, scales uniform in
//     [0.005, 0.015] (no quantizer is needed to time the GEMM); the cuBLAS weight ~ N(0, 0.05).
//   * GPU clocks are measured as found: this program does not lock or change them.
//
// Without a usable CUDA device the program prints "no CUDA device (...)" and exits 0 (1 when
// NIBBLE_EXPECT_GPU=1, as .ci/gpu-check sets); --benchmark_list_tests still lists every name. With one, any
// benchmark that fails is reported by Google Benchmark as an error with the CUDA / cuBLASLt / nibble
// message, and the program exits 1 at the end.

#include <benchmark/benchmark.h>
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <nibble/gemm/extern_instances.cuh>  // kernels: nibble_gemm_kernels
#include <nibble/gemm/gemm.cuh>
#include <nibble/layout/repack.cuh>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#ifndef NIBBLE_GIT_COMMIT
#define NIBBLE_GIT_COMMIT unknown
#endif
#define NIBBLE_BENCH_STR2(x) #x
#define NIBBLE_BENCH_STR(x) NIBBLE_BENCH_STR2(x)

namespace {

using nibble::DType;
using nibble::Format;

// ---- the cases -----------------------------------------------------------------------------------

struct Shape {
  std::int64_t k, n;
};
constexpr Shape kShapes[] = {{4096, 4096}, {4096, 14336}, {14336, 4096}, {8192, 28672}, {28672, 8192}};
constexpr std::int64_t kMs[] = {1, 4, 16, 64, 256, 1024, 4096};
constexpr std::int64_t kMaxM = 4096;

struct WeightFormat {
  Format format;
  int group;
  const char* name;
  bool dq_compact = false;  ///< nf4 / fp4: double-quantized scales kept compact (repack_dq)
};
constexpr WeightFormat kFormats[] = {{Format::kS4, 128, "s4g128"}, {Format::kNf4, 64, "nf4b64"}};
/// u4 against affine u4 at the same group sizes (same codes and scales; affine fmas its offset where u4 subtracts its
/// zero point), fp16 only, on two shapes and three M: a small sweep beside the grid.
constexpr WeightFormat kCompareFormats[] = {{Format::kU4, 32, "u4g32"},
                                            {Format::kAffineU4, 32, "affine_u4g32"},
                                            {Format::kU4, 128, "u4g128"},
                                            {Format::kAffineU4, 128, "affine_u4g128"}};
constexpr Shape kCompareShapes[] = {{4096, 14336}, {28672, 8192}};
/// nf4 b64 with its double-quantized scales kept compact (8-bit codes + absmax2 per 256 + offset, decoded in the
/// GEMM: 4.127 bits per weight) against nf4b64's 16-bit scales in the grid: fp16, every shape, M up to 1024.
constexpr WeightFormat kDqFormat = {Format::kNf4, 64, "nf4b64dq", true};
constexpr std::int64_t kDqMs[] = {1, 4, 16, 64, 256, 1024};
constexpr std::int64_t kCompareMs[] = {1, 16, 1024};
constexpr DType kActTypes[] = {DType::kF16, DType::kBF16};

const char* type_name(DType t) { return t == DType::kF16 ? "f16" : "bf16"; }

/// Weights rotate through copies whose total exceeds this (the H100's L2 is 50 MB, the H200's 60 MB).
constexpr std::size_t kRotateBytes = std::size_t(256) << 20;

/// The fewest copies (at least 2) of `bytes_per_copy` whose total exceeds kRotateBytes.
int rotation_copies(std::size_t bytes_per_copy) {
  const std::size_t r = kRotateBytes / bytes_per_copy + 1;
  return int(std::max<std::size_t>(r, 2));
}

// ---- errors: thrown inside a benchmark, turned into state.SkipWithError --------------------------

[[noreturn]] void fail(const char* what, const std::string& detail, const char* file, int line) {
  throw std::runtime_error(std::string(what) + ": " + detail + " (" + file + ":" + std::to_string(line) + ")");
}

#define CUDA_OK(expr)                                                                                        \
  do {                                                                                                       \
    const cudaError_t err_ = (expr);                                                                         \
    if (err_ != cudaSuccess)                                                                                 \
      fail(#expr, std::string(cudaGetErrorName(err_)) + " " + cudaGetErrorString(err_), __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_OK(expr)                                                                                              \
  do {                                                                                                               \
    const cublasStatus_t st_ = (expr);                                                                               \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                                                \
      fail(#expr, std::string(cublasLtGetStatusName(st_)) + " " + cublasLtGetStatusString(st_), __FILE__, __LINE__); \
  } while (0)

#define NIBBLE_OK(expr)                                                                                        \
  do {                                                                                                         \
    const ::nibble::Status st_ = (expr);                                                                       \
    if (st_ != ::nibble::Status::kSuccess) {                                                                   \
      const cudaError_t last_ = cudaGetLastError();                                                            \
      std::string detail_ = ::nibble::to_string(st_);                                                          \
      if (last_ != cudaSuccess) detail_ += std::string(" (last CUDA error: ") + cudaGetErrorName(last_) + ")"; \
      fail(#expr, detail_, __FILE__, __LINE__);                                                                \
    }                                                                                                          \
  } while (0)

// ---- device memory and random fills --------------------------------------------------------------

/// One cudaMalloc'd buffer (256-byte aligned), freed on destruction.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes) : bytes_(bytes) {
    if (bytes > 0) CUDA_OK(cudaMalloc(&ptr_, bytes));
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { reset(); }

  void reset() {
    if (ptr_ != nullptr) (void)cudaFree(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  void* get() const { return ptr_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  std::size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

__host__ __device__ inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// Uniform in (0, 1] from the top 24 bits.
__device__ inline float unit_float(std::uint64_t bits) { return float((bits >> 40) + 1) * (1.0f / 16777216.0f); }

__global__ void fill_bytes_kernel(std::uint8_t* p, std::size_t n, std::uint64_t seed) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x)
    p[i] = std::uint8_t(splitmix64(seed ^ splitmix64(i)) >> 56);
}

template <class T>
__global__ void fill_uniform_kernel(T* p, std::size_t n, std::uint64_t seed, float lo, float hi) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x)
    p[i] = nibble::from_float<T>(lo + (hi - lo) * unit_float(splitmix64(seed ^ splitmix64(i))));
}

/// Box-Muller: N(0, stddev).
template <class T>
__global__ void fill_normal_kernel(T* p, std::size_t n, std::uint64_t seed, float stddev) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x) {
    const std::uint64_t h = splitmix64(seed ^ splitmix64(i));
    const float u1 = unit_float(h), u2 = unit_float(splitmix64(h));
    p[i] = nibble::from_float<T>(stddev * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2));
  }
}

/// absmax2 of the compact double-quantized benchmark weights: uniform in [0.002, 0.004].
__global__ void fill_absmax2_kernel(float* p, std::size_t n, std::uint64_t seed) {
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x)
    p[i] = 0.002f + 0.002f * unit_float(splitmix64(seed ^ splitmix64(i)));
}

template <class T>
__global__ void count_nonfinite_kernel(const T* p, std::size_t n, unsigned long long* count) {
  unsigned long long local = 0;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x)
    local += isfinite(nibble::to_float(p[i])) ? 0 : 1;
  if (local != 0) atomicAdd(count, local);
}

/// cuBLASLt's workspace: 32 MiB, NVIDIA's advice for Hopper and what PyTorch gives cuBLASLt there.
constexpr std::size_t kLtWorkspaceBytes = std::size_t(32) << 20;

constexpr int kFillThreads = 256;
unsigned fill_blocks(std::size_t n) {
  return unsigned(std::min<std::size_t>((n + kFillThreads - 1) / kFillThreads, 4096));
}

/// Calls f(T{}) with T the element type of `t` (f16 or bf16).
template <class F>
void with_type(DType t, F&& f) {
  if (t == DType::kF16)
    f(__half{});
  else
    f(__nv_bfloat16{});
}

void fill_bytes(void* p, std::size_t n, std::uint64_t seed, cudaStream_t s) {
  fill_bytes_kernel<<<fill_blocks(n), kFillThreads, 0, s>>>(static_cast<std::uint8_t*>(p), n, seed);
  CUDA_OK(cudaGetLastError());
}
void fill_uniform(DType t, void* p, std::size_t n, std::uint64_t seed, float lo, float hi, cudaStream_t s) {
  with_type(t, [&](auto tag) {
    using T = decltype(tag);
    fill_uniform_kernel<T><<<fill_blocks(n), kFillThreads, 0, s>>>(static_cast<T*>(p), n, seed, lo, hi);
  });
  CUDA_OK(cudaGetLastError());
}
void fill_normal(DType t, void* p, std::size_t n, std::uint64_t seed, float stddev, cudaStream_t s) {
  with_type(t, [&](auto tag) {
    using T = decltype(tag);
    fill_normal_kernel<T><<<fill_blocks(n), kFillThreads, 0, s>>>(static_cast<T*>(p), n, seed, stddev);
  });
  CUDA_OK(cudaGetLastError());
}

// ---- the process-wide context: stream, events, cuBLAS, workspaces --------------------------------

struct Context {
  cudaStream_t stream = nullptr;
  cudaEvent_t start = nullptr, stop = nullptr;
  cublasLtHandle_t lt = nullptr;
  DeviceBuffer lt_workspace;      // cuBLASLt's workspace, kLtWorkspaceBytes
  DeviceBuffer nibble_workspace;  // grows; zeroed before each case (run() leaves it zero)
  DeviceBuffer counter;           // one unsigned long long for count_nonfinite_kernel
  int sm_count = 0;

  Context() {
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    CUDA_OK(cudaEventCreate(&start));
    CUDA_OK(cudaEventCreate(&stop));
    int dev = 0;
    CUDA_OK(cudaGetDevice(&dev));
    CUDA_OK(cudaDeviceGetAttribute(&sm_count, cudaDevAttrMultiProcessorCount, dev));
    CUBLAS_OK(cublasLtCreate(&lt));
    lt_workspace = DeviceBuffer(kLtWorkspaceBytes);
    counter = DeviceBuffer(sizeof(unsigned long long));
  }
  ~Context() {
    if (lt != nullptr) (void)cublasLtDestroy(lt);
    if (start != nullptr) (void)cudaEventDestroy(start);
    if (stop != nullptr) (void)cudaEventDestroy(stop);
    if (stream != nullptr) (void)cudaStreamDestroy(stream);
  }
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  /// A zeroed nibble workspace of at least `bytes` (null when 0).
  void* zeroed_workspace(std::size_t bytes) {
    if (bytes == 0) return nullptr;
    if (nibble_workspace.bytes() < bytes) {
      nibble_workspace.reset();
      nibble_workspace = DeviceBuffer(bytes);
    }
    CUDA_OK(cudaMemsetAsync(nibble_workspace.get(), 0, bytes, stream));
    return nibble_workspace.get();
  }

  /// Number of non-finite elements among the `n` of type `t` at `p` (synchronizes).
  unsigned long long count_nonfinite(DType t, const void* p, std::size_t n) {
    CUDA_OK(cudaMemsetAsync(counter.get(), 0, sizeof(unsigned long long), stream));
    with_type(t, [&](auto tag) {
      using T = decltype(tag);
      count_nonfinite_kernel<T>
          <<<fill_blocks(n), kFillThreads, 0, stream>>>(static_cast<const T*>(p), n, counter.as<unsigned long long>());
    });
    CUDA_OK(cudaGetLastError());
    unsigned long long count = 0;
    CUDA_OK(cudaMemcpyAsync(&count, counter.get(), sizeof count, cudaMemcpyDeviceToHost, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    return count;
  }
};

std::unique_ptr<Context> g_context;
int g_failures = 0;

Context& context() {
  if (!g_context) throw std::runtime_error("no CUDA device");
  return *g_context;
}

// ---- per-shape buffers, one slot each: a case of another shape / type frees the previous ones ------

/// A [kMaxM, K] ~ N(0, 1) and C [kMaxM, N], of the activation type.
struct Activations {
  std::tuple<std::int64_t, std::int64_t, DType> key;
  DeviceBuffer a, c;
};

/// R copies of the dense [N, K] weight, for cuBLAS.
struct DenseWeights {
  std::tuple<std::int64_t, std::int64_t, DType> key;
  std::vector<DeviceBuffer> copies;
};

/// R copies of the repacked 4-bit weight.
struct NibbleWeights {
  std::tuple<std::int64_t, std::int64_t, DType, Format, int, bool> key;
  std::vector<DeviceBuffer> codes, scales, zeros, offsets;  // zeros: u4, offsets: affine u4
  std::vector<DeviceBuffer> dq_codes, dq_stats;             // compact double-quantized scales
  std::vector<nibble::GemmWeights> views;
  std::size_t bytes_per_copy = 0;  // codes + scales (+ zeros, offsets)
};

std::unique_ptr<Activations> g_act;
std::unique_ptr<DenseWeights> g_dense;
std::unique_ptr<NibbleWeights> g_nibble;

void release_buffers() {
  g_act.reset();
  g_dense.reset();
  g_nibble.reset();
}

Activations& activations(std::int64_t k, std::int64_t n, DType t) {
  const auto key = std::make_tuple(k, n, t);
  if (g_act && g_act->key == key) return *g_act;
  g_act.reset();
  Context& ctx = context();
  auto act = std::make_unique<Activations>();
  act->key = key;
  act->a = DeviceBuffer(std::size_t(kMaxM * k) * 2);
  act->c = DeviceBuffer(std::size_t(kMaxM * n) * 2);
  fill_normal(t, act->a.get(), std::size_t(kMaxM * k), 0xA000 + std::uint64_t(k * 131 + n), 1.0f, ctx.stream);
  CUDA_OK(cudaStreamSynchronize(ctx.stream));
  g_act = std::move(act);
  return *g_act;
}

/// `copies` copies of a dense [n, k] weight ~ N(0, 0.05) of type t (seeds from `seed`).
std::unique_ptr<DenseWeights> make_dense_weights(std::int64_t k, std::int64_t n, DType t, int copies,
                                                 std::uint64_t seed) {
  Context& ctx = context();
  auto w = std::make_unique<DenseWeights>();
  w->key = std::make_tuple(k, n, t);
  const std::size_t elems = std::size_t(n * k);
  for (int i = 0; i < copies; ++i) {
    w->copies.emplace_back(elems * 2);
    fill_normal(t, w->copies.back().get(), elems, seed + std::uint64_t(i), 0.05f, ctx.stream);
  }
  CUDA_OK(cudaStreamSynchronize(ctx.stream));
  return w;
}

DenseWeights& dense_weights(std::int64_t k, std::int64_t n, DType t) {
  const auto key = std::make_tuple(k, n, t);
  if (g_dense && g_dense->key == key) return *g_dense;
  g_dense.reset();
  g_dense = make_dense_weights(k, n, t, rotation_copies(std::size_t(n * k) * 2), 0xD000);
  return *g_dense;
}

/// Bytes of one repacked copy of an [n, k] weight of format f for activation type t (codes + scales + zeros +
/// offsets).
std::size_t nibble_copy_bytes(std::int64_t k, std::int64_t n, DType t, const WeightFormat& f) {
  return nibble::gemm_weight_bytes(f.format, n, k, f.group, t, f.dq_compact).total();
}

/// `copies` repacked copies of a random [n, k] weight of format f (seeds from `seed`).
std::unique_ptr<NibbleWeights> make_nibble_weights(std::int64_t k, std::int64_t n, DType t, const WeightFormat& f,
                                                   int copies, std::uint64_t seed0) {
  Context& ctx = context();
  auto w = std::make_unique<NibbleWeights>();
  w->key = std::make_tuple(k, n, t, f.format, f.group, f.dq_compact);
  const nibble::GemmWeightBytes bytes = nibble::gemm_weight_bytes(f.format, n, k, f.group, t, f.dq_compact);
  w->bytes_per_copy = bytes.total();

  // The plain [N, K] weight the quantizers would write: random codes, random positive scales of the
  // activation type (u4: zero points 8; affine u4: offsets about -8 scales). Refilled for each copy,
  // repacked, then freed.
  const std::size_t plain_code_bytes = std::size_t(n * (k / 2));
  const std::size_t plain_scales = std::size_t(n * (k / f.group));
  DeviceBuffer plain_codes(plain_code_bytes), plain_scale_buf(plain_scales * 2);
  DeviceBuffer plain_zeros(bytes.zeros > 0 ? plain_scales : 0), plain_offsets(bytes.offsets > 0 ? plain_scales * 2 : 0);
  nibble::PlainWeights src;
  src.format = f.format;
  src.group_size = f.group;
  src.n = n;
  src.k = k;
  src.codes = plain_codes.as<std::uint8_t>();
  src.ld_codes = k / 2;
  src.scales = plain_scale_buf.get();
  src.scale_type = t;
  src.zeros = plain_zeros.as<std::uint8_t>();
  src.offsets = plain_offsets.get();
  if (bytes.zeros > 0) CUDA_OK(cudaMemsetAsync(plain_zeros.get(), 8, plain_scales, ctx.stream));
  // Compact double quantization: random 8-bit codes, absmax2 uniform in [0.002, 0.004] and the offset 0.01,
  // so that the scales map[code] * absmax2 + offset lie in [0.006, 0.014] (as the others' [0.005, 0.015]).
  const std::size_t dq_blocks = (plain_scales + 255) / 256;
  DeviceBuffer plain_dq_codes(f.dq_compact ? plain_scales : 0), plain_absmax2(f.dq_compact ? dq_blocks * 4 : 0),
      plain_dq_offset(f.dq_compact ? 4 : 0);
  if (f.dq_compact) {
    static const float kOffset = 0.01f;
    CUDA_OK(cudaMemcpyAsync(plain_dq_offset.get(), &kOffset, 4, cudaMemcpyHostToDevice, ctx.stream));
    src.dq_codes = plain_dq_codes.as<std::uint8_t>();
    src.dq_absmax2 = plain_absmax2.as<float>();
    src.dq_offset = plain_dq_offset.as<float>();
  }
  for (int i = 0; i < copies; ++i) {
    const std::uint64_t seed = seed0 + std::uint64_t(i) * 7919 + std::uint64_t(f.format) * 31;
    fill_bytes(plain_codes.get(), plain_code_bytes, seed, ctx.stream);
    fill_uniform(t, plain_scale_buf.get(), plain_scales, seed + 1, 0.005f, 0.015f, ctx.stream);
    if (bytes.offsets > 0) fill_uniform(t, plain_offsets.get(), plain_scales, seed + 2, -0.12f, -0.04f, ctx.stream);
    w->codes.emplace_back(bytes.codes);
    w->scales.emplace_back(bytes.scales);
    w->zeros.emplace_back(bytes.zeros);
    w->offsets.emplace_back(bytes.offsets);
    w->dq_codes.emplace_back(bytes.dq_codes);
    w->dq_stats.emplace_back(bytes.dq_stats);
    nibble::GemmWeights view;
    if (f.dq_compact) {
      fill_bytes(plain_dq_codes.get(), plain_scales, seed + 3, ctx.stream);
      fill_absmax2_kernel<<<fill_blocks(dq_blocks), kFillThreads, 0, ctx.stream>>>(plain_absmax2.as<float>(), dq_blocks,
                                                                                   seed + 4);
      CUDA_OK(cudaGetLastError());
      NIBBLE_OK(nibble::repack_dq(src, t, w->codes.back().get(), w->dq_codes.back().get(), w->dq_stats.back().get(),
                                  &view, ctx.stream));
    } else {
      NIBBLE_OK(nibble::repack(src, t, w->codes.back().get(), w->scales.back().get(), w->zeros.back().get(),
                               w->offsets.back().get(), &view, ctx.stream));
    }
    w->views.push_back(view);
  }
  CUDA_OK(cudaStreamSynchronize(ctx.stream));  // before the plain buffers are freed
  return w;
}

NibbleWeights& nibble_weights(std::int64_t k, std::int64_t n, DType t, const WeightFormat& f) {
  const auto key = std::make_tuple(k, n, t, f.format, f.group, f.dq_compact);
  if (g_nibble && g_nibble->key == key) return *g_nibble;
  g_nibble.reset();
  g_nibble = make_nibble_weights(k, n, t, f, rotation_copies(nibble_copy_bytes(k, n, t, f)), 0xC000);
  return *g_nibble;
}

// ---- graphs and timing ---------------------------------------------------------------------------

/// A CUDA graph of `launches` calls of body(i, stream), captured on the context's stream.
class Graph {
 public:
  template <class Body>
  Graph(cudaStream_t stream, int launches, Body&& body) {
    CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      for (int i = 0; i < launches; ++i) body(i, stream);
    } catch (...) {
      cudaGraph_t broken = nullptr;
      (void)cudaStreamEndCapture(stream, &broken);
      if (broken != nullptr) (void)cudaGraphDestroy(broken);
      (void)cudaGetLastError();
      throw;
    }
    CUDA_OK(cudaStreamEndCapture(stream, &graph_));
    CUDA_OK(cudaGraphInstantiate(&exec_, graph_, 0));
  }
  ~Graph() {
    if (exec_ != nullptr) (void)cudaGraphExecDestroy(exec_);
    if (graph_ != nullptr) (void)cudaGraphDestroy(graph_);
  }
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  void launch(cudaStream_t stream) { CUDA_OK(cudaGraphLaunch(exec_, stream)); }

  /// Milliseconds of one graph launch, between two events on `ctx.stream` (synchronizes).
  double time_ms(Context& ctx) {
    CUDA_OK(cudaEventRecord(ctx.start, ctx.stream));
    launch(ctx.stream);
    CUDA_OK(cudaEventRecord(ctx.stop, ctx.stream));
    CUDA_OK(cudaEventSynchronize(ctx.stop));
    float ms = 0.0f;
    CUDA_OK(cudaEventElapsedTime(&ms, ctx.start, ctx.stop));
    return double(ms);
  }

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

/// Launches `g` until at least kWarmupSeconds of GPU time have passed, and at least once: the first
/// launch's costs (graph upload, lazy module loading) and the clock ramp after a change of load stay out
/// of the samples.
constexpr double kWarmupSeconds = 0.02;
void warm_up(Graph& g, Context& ctx) {
  double total = 0.0;
  for (int n = 0; n < 1000 && (n == 0 || total < kWarmupSeconds); ++n) total += g.time_ms(ctx) * 1e-3;
}

struct Stats {
  double median = 0, mean = 0, cv = 0;  // seconds; cv = stddev / mean
};
Stats stats_of(std::vector<double> v) {
  Stats s;
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  const std::size_t h = v.size() / 2;
  s.median = v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / double(v.size());
  double var = 0;
  for (double x : v) var += (x - s.mean) * (x - s.mean);
  s.cv = v.size() > 1 && s.mean > 0 ? std::sqrt(var / double(v.size() - 1)) / s.mean : 0.0;
  return s;
}

/// Times `iterations` graph launches outside Google Benchmark's loop: per-launch seconds of each.
std::vector<double> sample_graph(Graph& g, int copies, int iterations, Context& ctx) {
  std::vector<double> t;
  t.reserve(std::size_t(iterations));
  for (int i = 0; i < iterations; ++i) t.push_back(g.time_ms(ctx) * 1e-3 / copies);
  return t;
}

// ---- the fixed iteration counts: an H100 cost model, not a measurement ----------------------------

constexpr double kModelBandwidth = 2.8e12;    // bytes/s that a good kernel reaches on H100 HBM3
constexpr double kModelNibbleFlops = 200e12;  // mma.sync + in-register dequantization (seen on H200)
constexpr double kModelCublasFlops = 600e12;  // cuBLAS fp16 / bf16 on large shapes
constexpr double kModelLaunch = 4e-6;         // per launch inside a graph, small-kernel floor
constexpr double kTargetSeconds = 0.25;       // GPU time per case
constexpr int kMinIterations = 5, kMaxIterations = 2000;

double flops_of(std::int64_t m, const Shape& s) { return 2.0 * double(m) * double(s.n) * double(s.k); }
double act_bytes(std::int64_t m, const Shape& s) { return 2.0 * double(m) * double(s.k + s.n); }  // A + C
double dense_bytes(const Shape& s) { return 2.0 * double(s.n) * double(s.k); }
double nibble_bytes_per_copy(const Shape& s, DType t, const WeightFormat& f) {
  return double(nibble_copy_bytes(s.k, s.n, t, f));
}

int model_iterations(double bytes, double flops, double flop_rate, int copies) {
  const double per_launch = std::max(bytes / kModelBandwidth, flops / flop_rate) + kModelLaunch;
  const double n = std::ceil(kTargetSeconds / (per_launch * copies));
  return int(std::min<double>(std::max<double>(n, kMinIterations), kMaxIterations));
}
int cublas_iterations(std::int64_t m, const Shape& s) {
  return model_iterations(dense_bytes(s) + act_bytes(m, s), flops_of(m, s), kModelCublasFlops,
                          rotation_copies(std::size_t(dense_bytes(s))));
}
int nibble_iterations(std::int64_t m, const Shape& s, DType t, const WeightFormat& f) {
  const double w = nibble_bytes_per_copy(s, t, f);
  return model_iterations(w + act_bytes(m, s), flops_of(m, s), kModelNibbleFlops, rotation_copies(std::size_t(w)));
}

// ---- cuBLAS --------------------------------------------------------------------------------------

/// One cuBLASLt matmul C[M, N] = A[M, K] * W[N, K]^T of activation type t, fp32 compute (CUBLAS_COMPUTE_32F),
/// with the algorithm PyTorch would run: the first (best) result of cublasLtMatmulAlgoGetHeuristic with a
/// kLtWorkspaceBytes workspace. Row-major C is column-major C^T, so in cuBLASLt's terms C^T (N x M) =
/// op(W) * A^T: W is the column-major K x N matrix (ld K) with op = T, A the column-major K x M matrix (ld K)
/// with op = N, C the column-major N x M matrix (ld N). Descriptors and algorithm are chosen once, here, on
/// the host; run() only enqueues, so it can be captured in a graph.
class LtMatmul {
 public:
  LtMatmul(Context& ctx, DType t, std::int64_t m, const Shape& s) : ctx_(ctx) {
    try {
      create(t, m, s);
    } catch (...) {
      destroy();
      throw;
    }
  }
  ~LtMatmul() { destroy(); }
  LtMatmul(const LtMatmul&) = delete;
  LtMatmul& operator=(const LtMatmul&) = delete;

  void run(const void* w, const void* a, void* c, cudaStream_t stream) const {
    const float alpha = 1.0f, beta = 0.0f;
    CUBLAS_OK(cublasLtMatmul(ctx_.lt, op_, &alpha, w, w_layout_, a, a_layout_, &beta, c, c_layout_, c, c_layout_,
                             &algo_, ctx_.lt_workspace.get(), ctx_.lt_workspace.bytes(), stream));
  }

 private:
  void create(DType t, std::int64_t m, const Shape& s) {
    const cudaDataType_t dt = t == DType::kF16 ? CUDA_R_16F : CUDA_R_16BF;
    CUBLAS_OK(cublasLtMatmulDescCreate(&op_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t trans_w = CUBLAS_OP_T, trans_a = CUBLAS_OP_N;
    CUBLAS_OK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSA, &trans_w, sizeof trans_w));
    CUBLAS_OK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSB, &trans_a, sizeof trans_a));
    CUBLAS_OK(cublasLtMatrixLayoutCreate(&w_layout_, dt, std::uint64_t(s.k), std::uint64_t(s.n), s.k));
    CUBLAS_OK(cublasLtMatrixLayoutCreate(&a_layout_, dt, std::uint64_t(s.k), std::uint64_t(m), s.k));
    CUBLAS_OK(cublasLtMatrixLayoutCreate(&c_layout_, dt, std::uint64_t(s.n), std::uint64_t(m), s.n));
    CUBLAS_OK(cublasLtMatmulPreferenceCreate(&pref_));
    const std::uint64_t ws = ctx_.lt_workspace.bytes();
    CUBLAS_OK(cublasLtMatmulPreferenceSetAttribute(pref_, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    // The buffers are cudaMalloc'd (256-byte aligned), cuBLASLt's default assumption: no alignment preference.
    cublasLtMatmulHeuristicResult_t best{};
    int found = 0;
    CUBLAS_OK(cublasLtMatmulAlgoGetHeuristic(ctx_.lt, op_, w_layout_, a_layout_, c_layout_, c_layout_, pref_, 1, &best,
                                             &found));
    if (found < 1)
      throw std::runtime_error("cublasLtMatmulAlgoGetHeuristic found no algorithm for K" + std::to_string(s.k) + " N" +
                               std::to_string(s.n) + " M" + std::to_string(m));
    algo_ = best.algo;
  }
  void destroy() {
    if (pref_ != nullptr) (void)cublasLtMatmulPreferenceDestroy(pref_);
    if (c_layout_ != nullptr) (void)cublasLtMatrixLayoutDestroy(c_layout_);
    if (a_layout_ != nullptr) (void)cublasLtMatrixLayoutDestroy(a_layout_);
    if (w_layout_ != nullptr) (void)cublasLtMatrixLayoutDestroy(w_layout_);
    if (op_ != nullptr) (void)cublasLtMatmulDescDestroy(op_);
    pref_ = nullptr;
    c_layout_ = a_layout_ = w_layout_ = nullptr;
    op_ = nullptr;
  }

  Context& ctx_;
  cublasLtMatmulDesc_t op_ = nullptr;
  cublasLtMatrixLayout_t w_layout_ = nullptr, a_layout_ = nullptr, c_layout_ = nullptr;
  cublasLtMatmulPreference_t pref_ = nullptr;
  cublasLtMatmulAlgo_t algo_{};
};

using CublasKey = std::tuple<std::int64_t, std::int64_t, std::int64_t, DType>;  // K, N, M, type
std::map<CublasKey, double>& cublas_cache() {                                   // median seconds per launch
  static std::map<CublasKey, double> cache;
  return cache;
}

/// Checks that C[M, N] was written (poisoned with NaN before `run_once`) and finite.
template <class RunOnce>
void check_output(Context& ctx, DType t, void* c, std::size_t elems, const char* who, RunOnce&& run_once) {
  CUDA_OK(cudaMemsetAsync(c, 0xFF, elems * 2, ctx.stream));  // 0xFFFF is NaN in fp16 and bf16
  run_once();
  const cudaError_t err = cudaStreamSynchronize(ctx.stream);
  if (err != cudaSuccess)
    throw std::runtime_error(std::string(who) + " failed on the device (first, uncaptured run): " +
                             cudaGetErrorName(err) + " " + cudaGetErrorString(err));
  const unsigned long long bad = ctx.count_nonfinite(t, c, elems);
  if (bad != 0)
    throw std::runtime_error(std::string(who) + " left " + std::to_string(bad) + " of " + std::to_string(elems) +
                             " outputs non-finite (unwritten, or overflow)");
}

/// Everything a cuBLAS case needs, set up and warmed: the graph of R rotating launches.
struct CublasCase {
  int copies = 0;
  std::unique_ptr<LtMatmul> matmul;
  std::unique_ptr<Graph> graph;
};
CublasCase prepare_cublas(Context& ctx, DType t, std::int64_t m, const Shape& s) {
  Activations& act = activations(s.k, s.n, t);
  DenseWeights& w = dense_weights(s.k, s.n, t);
  CublasCase cc;
  cc.copies = int(w.copies.size());
  cc.matmul = std::make_unique<LtMatmul>(ctx, t, m, s);
  check_output(ctx, t, act.c.get(), std::size_t(m * s.n), "cublasLtMatmul",
               [&] { cc.matmul->run(w.copies[0].get(), act.a.get(), act.c.get(), ctx.stream); });
  cc.graph = std::make_unique<Graph>(ctx.stream, cc.copies, [&](int i, cudaStream_t stream) {
    cc.matmul->run(w.copies[std::size_t(i)].get(), act.a.get(), act.c.get(), stream);
  });
  warm_up(*cc.graph, ctx);
  return cc;
}

/// cuBLAS median seconds per launch for (shape, M, type): cached, else measured now like its own entry.
double cublas_seconds(Context& ctx, DType t, std::int64_t m, const Shape& s) {
  const CublasKey key{s.k, s.n, m, t};
  auto it = cublas_cache().find(key);
  if (it != cublas_cache().end()) return it->second;
  CublasCase cc = prepare_cublas(ctx, t, m, s);
  const Stats st = stats_of(sample_graph(*cc.graph, cc.copies, cublas_iterations(m, s), ctx));
  CUDA_OK(cudaGetLastError());
  cublas_cache()[key] = st.median;
  return st.median;
}

// ---- the benchmarks ------------------------------------------------------------------------------

void set_rate_counters(benchmark::State& state, const Stats& st, double bytes, double flops, int copies) {
  state.counters["us"] = st.median * 1e6;
  state.counters["GB/s"] = bytes / st.median * 1e-9;
  state.counters["TFLOP/s"] = flops / st.median * 1e-12;
  state.counters["cv_pct"] = st.cv * 100.0;
  state.counters["copies"] = copies;
}

/// Set once a failure left the CUDA context unusable (a sticky error such as an illegal address or
/// instruction in a kernel): every later case is skipped with this message instead of failing on its own.
std::string g_context_lost;

void report_failure(benchmark::State& state, const std::string& name, const std::exception& e) {
  ++g_failures;
  state.SkipWithError(e.what());
  // A sticky error is returned again by every later call, even after cudaGetLastError() cleared it.
  (void)cudaDeviceSynchronize();
  (void)cudaGetLastError();
  const cudaError_t again = cudaDeviceSynchronize();
  if (again != cudaSuccess && g_context_lost.empty())
    g_context_lost =
        std::string("not run: the CUDA context was lost in ") + name + " (" + cudaGetErrorName(again) + ")";
}

/// Skips the case when an earlier one lost the CUDA context; true when it did.
bool skip_if_context_lost(benchmark::State& state) {
  if (g_context_lost.empty()) return false;
  ++g_failures;
  state.SkipWithError(g_context_lost.c_str());
  return true;
}

/// Times the case's graph once per benchmark iteration: per-launch seconds to SetIterationTime, and the
/// statistics of all of them.
Stats time_graph_in_loop(benchmark::State& state, Graph& graph, int launches_per_graph, Context& ctx) {
  std::vector<double> samples;
  samples.reserve(std::size_t(state.max_iterations));
  for (auto _ : state) {
    const double per_launch = graph.time_ms(ctx) * 1e-3 / launches_per_graph;
    state.SetIterationTime(per_launch);
    samples.push_back(per_launch);
  }
  CUDA_OK(cudaGetLastError());
  return stats_of(samples);
}

void bm_cublas(benchmark::State& state, const std::string& name, Shape s, std::int64_t m, DType t) {
  if (skip_if_context_lost(state)) return;
  try {
    Context& ctx = context();
    CublasCase cc = prepare_cublas(ctx, t, m, s);
    const Stats st = time_graph_in_loop(state, *cc.graph, cc.copies, ctx);
    cublas_cache()[CublasKey{s.k, s.n, m, t}] = st.median;
    set_rate_counters(state, st, dense_bytes(s) + act_bytes(m, s), flops_of(m, s), cc.copies);
  } catch (const std::exception& e) {
    report_failure(state, name, e);
  }
}

/// NIBBLE_MAINLOOP=auto|mma|mma_t|wgmma forces gemm::Arguments::mainloop (default auto), to compare
/// the kernel families on one machine.
nibble::gemm::Mainloop mainloop_from_env() {
  const char* v = std::getenv("NIBBLE_MAINLOOP");
  const std::string s = v ? v : "auto";
  if (s == "mma") return nibble::gemm::Mainloop::kMmaSync;
  if (s == "mma_t") return nibble::gemm::Mainloop::kTransposedMma;
  if (s == "wgmma") return nibble::gemm::Mainloop::kWgmma;
  if (s == "stream") return nibble::gemm::Mainloop::kStream;
  if (s != "auto") throw std::runtime_error("bench_gemm: NIBBLE_MAINLOOP must be auto, mma, mma_t, wgmma or stream");
  return nibble::gemm::Mainloop::kAuto;
}

/// gemm::Arguments for C[m, N] = A[m, K] * W^T with A and C of type t (ld K and N), the weight `w`.
nibble::gemm::Arguments nibble_args(DType t, std::int64_t m, const nibble::GemmWeights& w, const void* a, void* c) {
  nibble::gemm::Arguments args;
  args.m = m;
  args.act_type = t;
  args.a = a;
  args.lda = w.k;
  args.w = w;
  args.c = c;
  args.ldc = w.n;
  args.out_type = t;
  args.mainloop = mainloop_from_env();
  NIBBLE_OK(nibble::gemm::can_implement(args));
  return args;
}

/// The plan run() makes for `args` on this device: its mainloop, SM count and shared-memory limit.
nibble::gemm::Plan run_plan(const nibble::gemm::Arguments& args, const Context& ctx) {
  (void)ctx;
  nibble::DeviceInfo info;
  NIBBLE_OK(nibble::current_device_info(&info));
  return nibble::gemm::make_plan(
      args, nibble::gemm::device_limits(info),
      nibble::gemm::resolve_mainloop(args.mainloop, args.m, args.w.n, args.w.k, info, args.w.format));
}

/// get_workspace_size of `args` (a failure is reported like any nibble error).
std::size_t workspace_of(const nibble::gemm::Arguments& args) {
  std::size_t bytes = 0;
  NIBBLE_OK(nibble::gemm::get_workspace_size(args, &bytes));
  return bytes;
}

/// Everything a nibble case needs, set up and warmed: arguments, plan and the graph of R rotating launches.
struct NibbleCase {
  nibble::gemm::Arguments args;
  nibble::gemm::Plan plan;
  int copies = 0;
  double bytes_per_copy = 0;  // codes + scales
  std::unique_ptr<Graph> graph;
};
NibbleCase prepare_nibble(Context& ctx, DType t, std::int64_t m, const Shape& s, const WeightFormat& f) {
  Activations& act = activations(s.k, s.n, t);
  NibbleWeights& w = nibble_weights(s.k, s.n, t, f);
  NibbleCase nc;
  nc.copies = int(w.views.size());
  nc.bytes_per_copy = double(w.bytes_per_copy);
  nc.args = nibble_args(t, m, w.views[0], act.a.get(), act.c.get());
  nc.plan = run_plan(nc.args, ctx);
  const std::size_t ws_bytes = workspace_of(nc.args);
  void* ws = ctx.zeroed_workspace(ws_bytes);
  const nibble::gemm::Arguments& args = nc.args;
  check_output(ctx, t, act.c.get(), std::size_t(m * s.n), "nibble::gemm::run",
               [&] { NIBBLE_OK(nibble::gemm::run(args, ws, ws_bytes, ctx.stream)); });
  nc.graph = std::make_unique<Graph>(ctx.stream, nc.copies, [&](int i, cudaStream_t stream) {
    nibble::gemm::Arguments ai = args;
    ai.w = w.views[std::size_t(i)];
    NIBBLE_OK(nibble::gemm::run(ai, ws, ws_bytes, stream));
  });
  warm_up(*nc.graph, ctx);
  return nc;
}

void set_plan_counters(benchmark::State& state, const nibble::gemm::Plan& plan) {
  state.counters["splits"] = plan.splits;
  state.SetLabel(std::string("tile=") + nibble::gemm::tile_name(plan.kind));
}

void bm_nibble(benchmark::State& state, const std::string& name, Shape s, std::int64_t m, DType t, WeightFormat f) {
  if (skip_if_context_lost(state)) return;
  try {
    Context& ctx = context();
    const double cublas_s = cublas_seconds(ctx, t, m, s);  // before the nibble buffers: shares no timing
    NibbleCase nc = prepare_nibble(ctx, t, m, s, f);
    const Stats st = time_graph_in_loop(state, *nc.graph, nc.copies, ctx);
    set_rate_counters(state, st, nc.bytes_per_copy + act_bytes(m, s), flops_of(m, s), nc.copies);
    state.counters["speedup_vs_cublas"] = cublas_s / st.median;
    state.counters["cublas_us"] = cublas_s * 1e6;
    set_plan_counters(state, nc.plan);
  } catch (const std::exception& e) {
    report_failure(state, name, e);
  }
}

// ---- mgrid: a dense M grid of one format (where the tile / split-K heuristic switches) --------------

constexpr Shape kMgridShapes[] = {{4096, 4096}, {8192, 28672}};
constexpr WeightFormat kMgridFormat = {Format::kS4, 128, "s4g128"};
constexpr DType kMgridType = DType::kF16;
/// Every M from 1 to 80, then these: 98 Ms per shape.
constexpr std::int64_t kMgridLargeMs[] = {96,  112, 128, 160, 192,  224,  256,  320,  384,
                                          448, 512, 640, 768, 1024, 1536, 2048, 3072, 4096};
constexpr std::int64_t kMgridDenseUpTo = 80;

std::vector<std::int64_t> mgrid_ms() {
  std::vector<std::int64_t> ms;
  for (std::int64_t m = 1; m <= kMgridDenseUpTo; ++m) ms.push_back(m);
  ms.insert(ms.end(), std::begin(kMgridLargeMs), std::end(kMgridLargeMs));
  return ms;
}

/// 196 cases: 0.05 s of timed GPU time each by the cost model (>= 3 iterations), plus the warm-up's 20 ms
/// and the setup, keep the whole grid near 20 s on an H100 (less on an H200), far under 2 minutes.
constexpr double kMgridTargetSeconds = 0.05;
constexpr int kMgridMinIterations = 3;
int mgrid_iterations(std::int64_t m, const Shape& s) {
  const double w = nibble_bytes_per_copy(s, kMgridType, kMgridFormat);
  const int copies = rotation_copies(std::size_t(w));
  const double per_launch =
      std::max((w + act_bytes(m, s)) / kModelBandwidth, flops_of(m, s) / kModelNibbleFlops) + kModelLaunch;
  const double n = std::ceil(kMgridTargetSeconds / (per_launch * copies));
  return int(std::min<double>(std::max<double>(n, kMgridMinIterations), kMaxIterations));
}

void bm_mgrid(benchmark::State& state, const std::string& name, Shape s, std::int64_t m) {
  if (skip_if_context_lost(state)) return;
  try {
    Context& ctx = context();
    NibbleCase nc = prepare_nibble(ctx, kMgridType, m, s, kMgridFormat);
    const Stats st = time_graph_in_loop(state, *nc.graph, nc.copies, ctx);
    set_rate_counters(state, st, nc.bytes_per_copy + act_bytes(m, s), flops_of(m, s), nc.copies);
    set_plan_counters(state, nc.plan);
  } catch (const std::exception& e) {
    report_failure(state, name, e);
  }
}

// ---- chain: the GEMMs of one decoder layer, in order, in one graph --------------------------------

/// One decoder layer's GEMMs (K x N), in execution order: fused qkv, attention output, fused gate + up,
/// down. Llama-3 uses grouped-query attention (8 KV heads of 128): qkv N = hidden + 2 * 8 * 128.
struct LayerGemm {
  const char* role;
  Shape s;
};
struct Model {
  const char* name;
  std::array<LayerGemm, 4> gemms;
};
constexpr Model kModels[] = {
    {"llama3-8b", {{{"qkv", {4096, 6144}}, {"o", {4096, 4096}}, {"gate_up", {4096, 28672}}, {"down", {14336, 4096}}}}},
    {"llama3-70b",
     {{{"qkv", {8192, 10240}}, {"o", {8192, 8192}}, {"gate_up", {8192, 57344}}, {"down", {28672, 8192}}}}},
};
constexpr std::int64_t kChainMs[] = {1, 4, 16};
constexpr std::int64_t kChainMaxM = 16;
constexpr WeightFormat kChainFormat = {Format::kS4, 128, "s4g128"};

/// Bytes of one layer's weights: repacked (nibble) or dense of type t (cuBLAS).
double layer_weight_bytes(const Model& model, DType t, bool nibble) {
  double bytes = 0;
  for (const LayerGemm& g : model.gemms)
    bytes += nibble ? nibble_bytes_per_copy(g.s, t, kChainFormat) : dense_bytes(g.s);
  return bytes;
}
double layer_act_bytes(const Model& model, std::int64_t m) {
  double bytes = 0;
  for (const LayerGemm& g : model.gemms) bytes += act_bytes(m, g.s);
  return bytes;
}
double layer_flops(const Model& model, std::int64_t m) {
  double flops = 0;
  for (const LayerGemm& g : model.gemms) flops += flops_of(m, g.s);
  return flops;
}
int chain_iterations(const Model& model, std::int64_t m, DType t, bool nibble) {
  const double w = layer_weight_bytes(model, t, nibble);
  return model_iterations(w + layer_act_bytes(model, m), layer_flops(model, m),
                          nibble ? kModelNibbleFlops : kModelCublasFlops, rotation_copies(std::size_t(w)));
}

/// R whole-layer weight sets (R the fewest >= 2 past kRotateBytes, so every GEMM reads DRAM), for one
/// library and type, and one A [16, max K] / C [16, max N] that every GEMM of the layer uses (the output of
/// one GEMM does not feed the next: the shapes differ; the order and the weights' traffic are what count).
struct ChainBuffers {
  std::tuple<int, bool, DType> key;  // model index, nibble?, type
  int copies = 0;
  std::vector<std::unique_ptr<NibbleWeights>> nibble;  // per GEMM, R copies each
  std::vector<std::unique_ptr<DenseWeights>> dense;    // per GEMM, R copies each
  DeviceBuffer a, c;
};
std::unique_ptr<ChainBuffers> g_chain;

ChainBuffers& chain_buffers(int model_index, bool nibble, DType t) {
  const auto key = std::make_tuple(model_index, nibble, t);
  if (g_chain && g_chain->key == key) return *g_chain;
  g_chain.reset();
  release_buffers();  // the per-shape slots: a 70B layer set is 1.7 GB dense
  Context& ctx = context();
  const Model& model = kModels[model_index];
  auto b = std::make_unique<ChainBuffers>();
  b->key = key;
  b->copies = rotation_copies(std::size_t(layer_weight_bytes(model, t, nibble)));
  std::int64_t max_k = 0, max_n = 0;
  std::uint64_t seed = 0xE000 + std::uint64_t(model_index) * 0x100;
  for (const LayerGemm& g : model.gemms) {
    max_k = std::max(max_k, g.s.k);
    max_n = std::max(max_n, g.s.n);
    if (nibble)
      b->nibble.push_back(make_nibble_weights(g.s.k, g.s.n, t, kChainFormat, b->copies, seed));
    else
      b->dense.push_back(make_dense_weights(g.s.k, g.s.n, t, b->copies, seed));
    seed += 0x10;
  }
  b->a = DeviceBuffer(std::size_t(kChainMaxM * max_k) * 2);
  b->c = DeviceBuffer(std::size_t(kChainMaxM * max_n) * 2);
  fill_normal(t, b->a.get(), std::size_t(kChainMaxM * max_k), 0xA100 + std::uint64_t(model_index), 1.0f, ctx.stream);
  CUDA_OK(cudaStreamSynchronize(ctx.stream));
  g_chain = std::move(b);
  return *g_chain;
}

/// The graph of one library's chain: R layers, each the model's GEMMs in order on weight set i.
struct ChainCase {
  int copies = 0;
  std::vector<std::unique_ptr<LtMatmul>> matmuls;  // cuBLAS: one per GEMM
  std::vector<nibble::gemm::Arguments> args;       // nibble: one per GEMM
  std::vector<nibble::gemm::Plan> plans;
  std::unique_ptr<Graph> graph;
};

ChainCase prepare_chain(Context& ctx, int model_index, bool nibble, DType t, std::int64_t m, bool pdl = false) {
  const Model& model = kModels[model_index];
  ChainBuffers& b = chain_buffers(model_index, nibble, t);
  ChainCase cc;
  cc.copies = b.copies;
  std::size_t ws_bytes = 0;
  for (std::size_t g = 0; g < model.gemms.size(); ++g) {
    const Shape& s = model.gemms[g].s;
    if (nibble) {
      cc.args.push_back(nibble_args(t, m, b.nibble[g]->views[0], b.a.get(), b.c.get()));
      cc.args.back().programmatic_launch = pdl;  // Arguments::programmatic_launch (opt-in)
      cc.plans.push_back(run_plan(cc.args.back(), ctx));
      ws_bytes = std::max(ws_bytes, workspace_of(cc.args.back()));
    } else {
      cc.matmuls.push_back(std::make_unique<LtMatmul>(ctx, t, m, s));
    }
  }
  // One zeroed workspace, sized for the largest GEMM, serves them all: run() leaves its counters zero.
  void* ws = ctx.zeroed_workspace(ws_bytes);
  auto launch = [&](std::size_t g, int copy, cudaStream_t stream) {
    if (nibble) {
      nibble::gemm::Arguments ai = cc.args[g];
      ai.w = b.nibble[g]->views[std::size_t(copy)];
      NIBBLE_OK(nibble::gemm::run(ai, ws, ws_bytes, stream));
    } else {
      cc.matmuls[g]->run(b.dense[g]->copies[std::size_t(copy)].get(), b.a.get(), b.c.get(), stream);
    }
  };
  for (std::size_t g = 0; g < model.gemms.size(); ++g) {
    const std::string who = std::string(nibble ? "nibble::gemm::run " : "cublasLtMatmul ") + model.gemms[g].role;
    check_output(ctx, t, b.c.get(), std::size_t(m * model.gemms[g].s.n), who.c_str(),
                 [&] { launch(g, 0, ctx.stream); });
  }
  cc.graph = std::make_unique<Graph>(ctx.stream, cc.copies, [&](int copy, cudaStream_t stream) {
    for (std::size_t g = 0; g < model.gemms.size(); ++g) launch(g, copy, stream);
  });
  warm_up(*cc.graph, ctx);
  return cc;
}

using ChainKey = std::tuple<int, std::int64_t, DType>;  // model index, M, type
std::map<ChainKey, double>& cublas_chain_cache() {      // median seconds per layer
  static std::map<ChainKey, double> cache;
  return cache;
}

/// cuBLAS median seconds per layer for (model, M, type): cached, else measured now like its own entry.
double cublas_chain_seconds(Context& ctx, int model_index, DType t, std::int64_t m) {
  const ChainKey key{model_index, m, t};
  auto it = cublas_chain_cache().find(key);
  if (it != cublas_chain_cache().end()) return it->second;
  ChainCase cc = prepare_chain(ctx, model_index, false, t, m);
  const Stats st =
      stats_of(sample_graph(*cc.graph, cc.copies, chain_iterations(kModels[model_index], m, t, false), ctx));
  CUDA_OK(cudaGetLastError());
  cublas_chain_cache()[key] = st.median;
  return st.median;
}

void bm_chain(benchmark::State& state, const std::string& name, int model_index, bool nibble, DType t, std::int64_t m,
              bool pdl = false) {
  if (skip_if_context_lost(state)) return;
  try {
    Context& ctx = context();
    const Model& model = kModels[model_index];
    const double cublas_s = nibble ? cublas_chain_seconds(ctx, model_index, t, m) : 0.0;
    ChainCase cc = prepare_chain(ctx, model_index, nibble, t, m, pdl);
    const Stats st = time_graph_in_loop(state, *cc.graph, cc.copies, ctx);
    if (!nibble) cublas_chain_cache()[ChainKey{model_index, m, t}] = st.median;
    set_rate_counters(state, st, layer_weight_bytes(model, t, nibble) + layer_act_bytes(model, m),
                      layer_flops(model, m), cc.copies);
    if (nibble) {
      state.counters["speedup_vs_cublas"] = cublas_s / st.median;
      state.counters["cublas_us"] = cublas_s * 1e6;
    }
  } catch (const std::exception& e) {
    report_failure(state, name, e);
  }
}

// ---- host: the CPU cost of one run() call ---------------------------------------------------------

constexpr Shape kHostShape = {4096, 4096};
constexpr std::int64_t kHostMs[] = {1, 4096};  // decode, prefill
constexpr WeightFormat kHostFormat = {Format::kS4, 128, "s4g128"};
/// Calls per timed batch; the stream is synchronized between batches, outside the timed region, so the
/// launch queue never fills (a full queue would make run() wait for the GPU and time the kernels instead).
constexpr int kHostCallsPerBatch = 200;
/// Batches: the decode GEMM's kernel takes a few microseconds, the prefill one ~0.3 ms, so prefill gets
/// fewer batches (its GPU time, 200 x 0.3 ms per batch, is the wait between batches).
int host_iterations(std::int64_t m) { return m == 1 ? 100 : 10; }

void bm_host_run(benchmark::State& state, const std::string& name, Shape s, std::int64_t m) {
  if (skip_if_context_lost(state)) return;
  try {
    Context& ctx = context();
    const DType t = DType::kF16;
    Activations& act = activations(s.k, s.n, t);
    NibbleWeights& w = nibble_weights(s.k, s.n, t, kHostFormat);
    const nibble::gemm::Arguments args = nibble_args(t, m, w.views[0], act.a.get(), act.c.get());
    const std::size_t ws_bytes = workspace_of(args);
    void* ws = ctx.zeroed_workspace(ws_bytes);
    check_output(ctx, t, act.c.get(), std::size_t(m * s.n), "nibble::gemm::run",
                 [&] { NIBBLE_OK(nibble::gemm::run(args, ws, ws_bytes, ctx.stream)); });
    // Warm-up batch: the device cache and the module's kernels are loaded before the first timed call.
    for (int i = 0; i < kHostCallsPerBatch; ++i) NIBBLE_OK(nibble::gemm::run(args, ws, ws_bytes, ctx.stream));
    CUDA_OK(cudaStreamSynchronize(ctx.stream));

    std::vector<double> samples;
    samples.reserve(std::size_t(state.max_iterations));
    for (auto _ : state) {
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < kHostCallsPerBatch; ++i) NIBBLE_OK(nibble::gemm::run(args, ws, ws_bytes, ctx.stream));
      const auto t1 = std::chrono::steady_clock::now();
      const double per_call = std::chrono::duration<double>(t1 - t0).count() / kHostCallsPerBatch;
      state.SetIterationTime(per_call);
      samples.push_back(per_call);
      CUDA_OK(cudaStreamSynchronize(ctx.stream));  // outside the timed region
    }
    CUDA_OK(cudaGetLastError());
    const Stats st = stats_of(samples);
    state.counters["host_ns"] = st.median * 1e9;
    state.counters["cv_pct"] = st.cv * 100.0;
    state.counters["calls_per_sync"] = kHostCallsPerBatch;
  } catch (const std::exception& e) {
    report_failure(state, name, e);
  }
}

// ---- registration --------------------------------------------------------------------------------

std::string shape_name(const Shape& s, std::int64_t m) {
  return "K" + std::to_string(s.k) + "_N" + std::to_string(s.n) + "/M" + std::to_string(m);
}

/// Order: per shape, per type: the cuBLAS entries first (they fill the cache the nibble entries read),
/// then each format; then the chains (cuBLAS before nibble, likewise), the M grid, the host cost.
/// Consecutive cases share their buffers.
int register_all() {
  int count = 0;
  auto add = [&count](const std::string& name, int iterations, auto&& body) {
    benchmark::RegisterBenchmark(name.c_str(), [name, body](benchmark::State& st) { body(st, name); })
        ->UseManualTime()
        ->Iterations(iterations)
        ->Unit(benchmark::kMicrosecond);
    ++count;
  };
  for (const Shape& s : kShapes) {
    for (DType t : kActTypes) {
      for (std::int64_t m : kMs) {
        add(std::string("cublas/") + type_name(t) + "/" + shape_name(s, m), cublas_iterations(m, s),
            [s, m, t](benchmark::State& st, const std::string& name) { bm_cublas(st, name, s, m, t); });
      }
      for (const WeightFormat& f : kFormats) {
        for (std::int64_t m : kMs) {
          add(std::string("nibble/") + type_name(t) + "/" + f.name + "/" + shape_name(s, m),
              nibble_iterations(m, s, t, f),
              [s, m, t, f](benchmark::State& st, const std::string& name) { bm_nibble(st, name, s, m, t, f); });
        }
      }
    }
  }
  for (const Shape& s : kCompareShapes) {  // (after the grid: its cuBLAS entries for these shapes ran already)
    for (const WeightFormat& f : kCompareFormats) {
      for (std::int64_t m : kCompareMs) {
        add(std::string("nibble/") + type_name(DType::kF16) + "/" + f.name + "/" + shape_name(s, m),
            nibble_iterations(m, s, DType::kF16, f),
            [s, m, f](benchmark::State& st, const std::string& name) { bm_nibble(st, name, s, m, DType::kF16, f); });
      }
    }
  }
  for (const Shape& s : kShapes) {  // (after the grid: its cuBLAS and nf4b64 entries ran already)
    for (std::int64_t m : kDqMs) {
      add(std::string("nibble/") + type_name(DType::kF16) + "/" + kDqFormat.name + "/" + shape_name(s, m),
          nibble_iterations(m, s, DType::kF16, kDqFormat),
          [s, m](benchmark::State& st, const std::string& name) { bm_nibble(st, name, s, m, DType::kF16, kDqFormat); });
    }
  }
  for (int mi = 0; mi < int(std::size(kModels)); ++mi) {
    for (DType t : kActTypes) {
      for (int variant = 0; variant < 3; ++variant) {  // cuBLAS, nibble, nibble with programmatic launch
        const bool nibble = variant > 0, pdl = variant == 2;
        const std::string lib =
            nibble ? std::string("nibble_") + kChainFormat.name + (pdl ? "_pdl" : "") : std::string("cublas");
        for (std::int64_t m : kChainMs) {
          add(std::string("chain/") + kModels[mi].name + "/" + lib + "/" + type_name(t) + "/M" + std::to_string(m),
              chain_iterations(kModels[mi], m, t, nibble),
              [mi, nibble, pdl, t, m](benchmark::State& st, const std::string& name) {
                bm_chain(st, name, mi, nibble, t, m, pdl);
              });
        }
      }
    }
  }
  for (const Shape& s : kMgridShapes) {
    for (std::int64_t m : mgrid_ms()) {
      add(std::string("mgrid/") + type_name(kMgridType) + "/" + kMgridFormat.name + "/" + shape_name(s, m),
          mgrid_iterations(m, s), [s, m](benchmark::State& st, const std::string& name) { bm_mgrid(st, name, s, m); });
    }
  }
  for (std::int64_t m : kHostMs) {
    add("host/run/" + shape_name(kHostShape, m), host_iterations(m),
        [m](benchmark::State& st, const std::string& name) { bm_host_run(st, name, kHostShape, m); });
  }
  return count;
}

// ---- device description --------------------------------------------------------------------------

/// "" when a CUDA device of compute capability >= 8.0 is usable, else why not.
std::string gpu_problem() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  (void)cudaGetLastError();
  if (err != cudaSuccess) return std::string("cudaGetDeviceCount: ") + cudaGetErrorName(err);
  if (count == 0) return "cudaGetDeviceCount returned 0 devices";
  if (nibble::check_device() != nibble::Status::kSuccess) return "the device is older than sm_80";
  return "";
}

std::string commit_string() {
  std::string c = NIBBLE_BENCH_STR(NIBBLE_GIT_COMMIT);
  // Accept -DNIBBLE_GIT_COMMIT=abc and -DNIBBLE_GIT_COMMIT="abc" (CMake passes the quoted form).
  while (!c.empty() && (c.front() == '"' || c.front() == '\\')) c.erase(c.begin());
  while (!c.empty() && (c.back() == '"' || c.back() == '\\')) c.pop_back();
  return c.empty() ? "unknown" : c;
}

void add_device_context(Context& ctx) {
  int dev = 0;
  CUDA_OK(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  CUDA_OK(cudaGetDeviceProperties(&prop, dev));
  auto attr = [dev](cudaDeviceAttr a) {
    int v = 0;
    CUDA_OK(cudaDeviceGetAttribute(&v, a, dev));
    return v;
  };
  const int sm_khz = attr(cudaDevAttrClockRate), mem_khz = attr(cudaDevAttrMemoryClockRate);
  const int bus_bits = attr(cudaDevAttrGlobalMemoryBusWidth), l2 = attr(cudaDevAttrL2CacheSize);
  const double peak_gbs = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0) * 1e-9;  // double data rate
  int runtime = 0, driver = 0;
  CUDA_OK(cudaRuntimeGetVersion(&runtime));
  CUDA_OK(cudaDriverGetVersion(&driver));
  const std::size_t cublas_lt_version = cublasLtGetVersion();
  char buf[256];
  benchmark::AddCustomContext("device", prop.name);
  std::snprintf(buf, sizeof buf, "sm_%d%d", prop.major, prop.minor);
  benchmark::AddCustomContext("compute_capability", buf);
  benchmark::AddCustomContext("sm_count", std::to_string(ctx.sm_count));
  std::snprintf(buf, sizeof buf, "%d MHz peak (not locked by this program; measured as found)", sm_khz / 1000);
  benchmark::AddCustomContext("sm_clock", buf);
  std::snprintf(buf, sizeof buf, "%d MHz, %d-bit bus: %.0f GB/s peak DRAM", mem_khz / 1000, bus_bits, peak_gbs);
  benchmark::AddCustomContext("memory_clock", buf);
  std::snprintf(buf, sizeof buf, "%.1f MiB", l2 / 1048576.0);
  benchmark::AddCustomContext("l2_cache", buf);
  std::snprintf(buf, sizeof buf, "runtime %d, driver %d, cuBLASLt %zu", runtime, driver, cublas_lt_version);
  benchmark::AddCustomContext("cuda", buf);
  benchmark::AddCustomContext("nibble_commit", commit_string());
  benchmark::AddCustomContext("nibble_version", NIBBLE_VERSION_STRING);
  std::snprintf(buf, sizeof buf,
                "per launch: CUDA graph of R launches rotating R weight copies (> %zu MiB in all), "
                "timed with events, / R; counters from the median",
                kRotateBytes >> 20);
  benchmark::AddCustomContext("timing", buf);
}

bool asks_for_list(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--benchmark_list_tests" || a == "--benchmark_list_tests=true" || a == "--benchmark_list_tests=1")
      return true;
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  const bool list_only = asks_for_list(argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const int registered = register_all();

  const std::string problem = gpu_problem();
  if (!problem.empty()) {
    benchmark::AddCustomContext("nibble_commit", commit_string());
    std::printf("bench_gemm: no CUDA device (%s): all %d benchmarks skipped\n", problem.c_str(), registered);
    std::fflush(stdout);
    if (list_only) benchmark::RunSpecifiedBenchmarks();
    const char* expect = std::getenv("NIBBLE_EXPECT_GPU");
    return expect != nullptr && std::strcmp(expect, "1") == 0 ? 1 : 0;
  }

  try {
    g_context = std::make_unique<Context>();
    add_device_context(*g_context);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gemm: setup failed: %s\n", e.what());
    return 1;
  }
  benchmark::RunSpecifiedBenchmarks();
  release_buffers();
  g_chain.reset();
  g_context.reset();
  benchmark::Shutdown();
  if (g_failures > 0) {
    std::fprintf(stderr, "bench_gemm: %d benchmark(s) failed (ERROR OCCURRED above)\n", g_failures);
    return 1;
  }
  return 0;
}
