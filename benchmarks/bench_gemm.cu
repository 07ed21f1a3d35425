// benchmarks/bench_gemm.cu — nibble's 4-bit GEMM against cuBLAS fp16 / bf16 on the same shapes.
//
//   bench_gemm --benchmark_out=gemm.json --benchmark_out_format=json
//   bench_gemm --benchmark_filter='K8192_N28672/M1/'         # one shape, decode, every library and type
//   bench_gemm --benchmark_filter='^nibble/bf16/nf4b64/'       # one type and format
//   bench_gemm --benchmark_list_tests                          # the names (works without a GPU)
//
// Names: nibble/<act>/<format>/K<K>_N<N>/M<M> and cublas/<act>/K<K>_N<N>/M<M>, where <act> is f16 or bf16
// and <format> s4g128 (signed int4, group 128) or nf4b64 (NF4, blocksize 64). Google Benchmark appends
// /iterations:<n>/manual_time to each name. Both compute C[M, N] = A[M, K] * W[N, K]^T with A and C of
// the activation type; cuBLAS reads a dense W of that type (cublasGemmEx, fp32 compute, default algorithm).
//
// How a case is timed (STYLE.md section 9, .library/device/METHOD.md):
//   * Weights rotate: the case holds R copies of its weight (repacked codes + scales for nibble, the dense
//     [N, K] matrix for cuBLAS), R the fewest (>= 2) whose total exceeds 256 MiB, five times the H100's
//     50 MB L2, so every launch reads its weight from DRAM. A and C are one buffer each (for small M they
//     stay in L2, for both libraries alike).
//   * One CUDA graph holds R launches, launch i reading copy i. Before timing: one plain (uncaptured) run
//     with C poisoned to NaN, after which every C[M, N] element must be finite (catches a kernel that
//     writes nothing or garbage), then warm-up graph launches: at least one, and at least 20 ms of GPU
//     time (clocks settle after the change of load from the previous case).
//   * Each benchmark iteration is one graph launch between two CUDA events; its per-launch time (graph
//     time / R) goes to SetIterationTime, so Google Benchmark's time column is the mean per launch. The
//     iteration count is fixed per case (->Iterations), chosen from an H100 cost model so that each case
//     takes about 0.25 s of GPU time; no adaptive search, so a full run takes a predictable ~1-2 minutes.
//   * Counters, all from the MEDIAN per-launch time of the case's iterations:
//       us                 microseconds per launch
//       GB/s               bytes that must move / time: nibble packed codes + scales + A + C,
//                          cuBLAS dense W + A + C (each read or written once)
//       TFLOP/s            2 M N K / time
//       speedup_vs_cublas  (nibble only) cuBLAS median us / nibble median us on the same shape, M and
//                          type; > 1 means nibble is faster. cuBLAS is measured once per (shape, M, type):
//                          by its own benchmark entry when that ran first (the default order), else inside
//                          the nibble case, the same way, and cached.
//       cublas_us          (nibble only) that cuBLAS time
//       cv_pct             standard deviation / mean of the case's per-launch times, in percent
//       copies             R
//       splits, tile       (nibble only) the plan run() used: K splits and tile family (0 / 6 decode
//                          int / nf4-fp4, 1 small, 2 large, 3 / 5 / 4 transposed small / mid / large,
//                          7 / 8 small / large with fewer stages: gemm::TileKind),
//                          from nibble::gemm::make_plan
//   * NIBBLE_MAINLOOP=auto|mma|mma_t|wgmma (environment) forces the kernel family (default auto).
//   * Inputs are random, never zeros: A ~ N(0, 1); nibble codes are random bytes, scales uniform in
//     [0.005, 0.015] (no quantizer is needed to time the GEMM); the cuBLAS weight ~ N(0, 0.05).
//   * GPU clocks are measured as found: this program does not lock or change them.
//
// Without a usable CUDA device the program prints "no CUDA device (...)" and exits 0 (1 when
// NIBBLE_EXPECT_GPU=1, as .ci/gpu-check sets). With one, any benchmark that fails is reported by Google
// Benchmark as an error with the CUDA / cuBLAS / nibble message, and the program exits 1 at the end.

#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <nibble/gemm/gemm.cuh>
#include <nibble/layout/repack.cuh>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
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
};
constexpr WeightFormat kFormats[] = {{Format::kS4, 128, "s4g128"}, {Format::kNf4, 64, "nf4b64"}};
constexpr DType kActTypes[] = {DType::kF16, DType::kBF16};

const char* type_name(DType t) { return t == DType::kF16 ? "f16" : "bf16"; }

/// Weights rotate through copies whose total exceeds this (the H100's L2 is 50 MB).
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

#define CUDA_OK(expr)                                                                              \
  do {                                                                                             \
    const cudaError_t err_ = (expr);                                                               \
    if (err_ != cudaSuccess)                                                                       \
      fail(#expr, std::string(cudaGetErrorName(err_)) + " " + cudaGetErrorString(err_), __FILE__, \
           __LINE__);                                                                              \
  } while (0)

#define CUBLAS_OK(expr)                                                                 \
  do {                                                                                  \
    const cublasStatus_t st_ = (expr);                                                  \
    if (st_ != CUBLAS_STATUS_SUCCESS)                                                   \
      fail(#expr, std::string(cublasGetStatusName(st_)) + " " + cublasGetStatusString(st_), \
           __FILE__, __LINE__);                                                         \
  } while (0)

#define NIBBLE_OK(expr)                                                                            \
  do {                                                                                             \
    const ::nibble::Status st_ = (expr);                                                           \
    if (st_ != ::nibble::Status::kSuccess) {                                                       \
      const cudaError_t last_ = cudaGetLastError();                                                \
      std::string detail_ = ::nibble::to_string(st_);                                              \
      if (last_ != cudaSuccess) detail_ += std::string(" (last CUDA error: ") + cudaGetErrorName(last_) + ")"; \
      fail(#expr, detail_, __FILE__, __LINE__);                                                    \
    }                                                                                              \
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
  T* as() const { return static_cast<T*>(ptr_); }
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

template <class T>
__global__ void count_nonfinite_kernel(const T* p, std::size_t n, unsigned long long* count) {
  unsigned long long local = 0;
  for (std::size_t i = blockIdx.x * std::size_t(blockDim.x) + threadIdx.x; i < n;
       i += std::size_t(gridDim.x) * blockDim.x)
    local += isfinite(nibble::to_float(p[i])) ? 0 : 1;
  if (local != 0) atomicAdd(count, local);
}

constexpr int kFillThreads = 256;
unsigned fill_blocks(std::size_t n) {
  return unsigned(std::min<std::size_t>((n + kFillThreads - 1) / kFillThreads, 4096));
}

/// Calls f(T{}) with T the element type of `t` (f16 or bf16).
template <class F>
void with_type(DType t, F&& f) {
  if (t == DType::kF16) f(__half{});
  else f(__nv_bfloat16{});
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
  cublasHandle_t cublas = nullptr;
  DeviceBuffer cublas_workspace;
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
    CUBLAS_OK(cublasCreate(&cublas));
    // cublasSetStream resets the workspace to cuBLAS's own pool, so the stream comes first. A workspace
    // of our own keeps cuBLAS from allocating inside a graph capture (32 MiB: NVIDIA's advice for Hopper).
    CUBLAS_OK(cublasSetStream(cublas, stream));
    cublas_workspace = DeviceBuffer(std::size_t(32) << 20);
    CUBLAS_OK(cublasSetWorkspace(cublas, cublas_workspace.get(), cublas_workspace.bytes()));
    counter = DeviceBuffer(sizeof(unsigned long long));
  }
  ~Context() {
    if (cublas != nullptr) (void)cublasDestroy(cublas);
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
      count_nonfinite_kernel<T><<<fill_blocks(n), kFillThreads, 0, stream>>>(
          static_cast<const T*>(p), n, counter.as<unsigned long long>());
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
  std::tuple<std::int64_t, std::int64_t, DType, Format, int> key;
  std::vector<DeviceBuffer> codes, scales;
  std::vector<nibble::GemmWeights> views;
  std::size_t bytes_per_copy = 0;  // codes + scales
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

DenseWeights& dense_weights(std::int64_t k, std::int64_t n, DType t) {
  const auto key = std::make_tuple(k, n, t);
  if (g_dense && g_dense->key == key) return *g_dense;
  g_dense.reset();
  Context& ctx = context();
  auto w = std::make_unique<DenseWeights>();
  w->key = key;
  const std::size_t elems = std::size_t(n * k);
  const int copies = rotation_copies(elems * 2);
  for (int i = 0; i < copies; ++i) {
    w->copies.emplace_back(elems * 2);
    fill_normal(t, w->copies.back().get(), elems, 0xD000 + std::uint64_t(i), 0.05f, ctx.stream);
  }
  CUDA_OK(cudaStreamSynchronize(ctx.stream));
  g_dense = std::move(w);
  return *g_dense;
}

NibbleWeights& nibble_weights(std::int64_t k, std::int64_t n, DType t, const WeightFormat& f) {
  const auto key = std::make_tuple(k, n, t, f.format, f.group);
  if (g_nibble && g_nibble->key == key) return *g_nibble;
  g_nibble.reset();
  Context& ctx = context();
  auto w = std::make_unique<NibbleWeights>();
  w->key = key;
  const nibble::GemmWeightBytes bytes = nibble::gemm_weight_bytes(f.format, n, k, f.group, t);
  if (bytes.zeros != 0) throw std::runtime_error("bench_gemm: zero points are not set up for this format");
  w->bytes_per_copy = bytes.codes + bytes.scales;
  const int copies = rotation_copies(w->bytes_per_copy);

  // The plain [N, K] weight the quantizers would write: random codes, random positive scales of the
  // activation type. Refilled for each copy, repacked, then freed.
  const std::size_t plain_code_bytes = std::size_t(n * (k / 2));
  const std::size_t plain_scales = std::size_t(n * (k / f.group));
  DeviceBuffer plain_codes(plain_code_bytes), plain_scale_buf(plain_scales * 2);
  nibble::PlainWeights src;
  src.format = f.format;
  src.group_size = f.group;
  src.n = n;
  src.k = k;
  src.codes = plain_codes.as<std::uint8_t>();
  src.ld_codes = k / 2;
  src.scales = plain_scale_buf.get();
  src.scale_type = t;
  for (int i = 0; i < copies; ++i) {
    const std::uint64_t seed = 0xC000 + std::uint64_t(i) * 7919 + std::uint64_t(f.format) * 31;
    fill_bytes(plain_codes.get(), plain_code_bytes, seed, ctx.stream);
    fill_uniform(t, plain_scale_buf.get(), plain_scales, seed + 1, 0.005f, 0.015f, ctx.stream);
    w->codes.emplace_back(bytes.codes);
    w->scales.emplace_back(bytes.scales);
    nibble::GemmWeights view;
    NIBBLE_OK(nibble::repack(src, t, w->codes.back().get(), w->scales.back().get(), nullptr, &view, ctx.stream));
    w->views.push_back(view);
  }
  CUDA_OK(cudaStreamSynchronize(ctx.stream));  // before the plain buffers are freed
  g_nibble = std::move(w);
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

constexpr double kModelBandwidth = 2.8e12;      // bytes/s that a good kernel reaches on H100 HBM3
constexpr double kModelNibbleFlops = 200e12;    // mma.sync + in-register dequantization (seen on H200)
constexpr double kModelCublasFlops = 600e12;    // cuBLAS fp16 / bf16 on large shapes
constexpr double kModelLaunch = 4e-6;           // per launch inside a graph, small-kernel floor
constexpr double kTargetSeconds = 0.25;         // GPU time per case
constexpr int kMinIterations = 5, kMaxIterations = 2000;

double flops_of(std::int64_t m, const Shape& s) { return 2.0 * double(m) * double(s.n) * double(s.k); }
double act_bytes(std::int64_t m, const Shape& s) { return 2.0 * double(m) * double(s.k + s.n); }  // A + C
double dense_bytes(const Shape& s) { return 2.0 * double(s.n) * double(s.k); }
double nibble_bytes_per_copy(const Shape& s, DType t, const WeightFormat& f) {
  const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(f.format, s.n, s.k, f.group, t);
  return double(b.codes + b.scales + b.zeros);
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
  return model_iterations(w + act_bytes(m, s), flops_of(m, s), kModelNibbleFlops,
                          rotation_copies(std::size_t(w)));
}

// ---- cuBLAS --------------------------------------------------------------------------------------

/// C[M, N] = A[M, K] * W[N, K]^T, row-major: in cuBLAS's column-major terms C^T = W * A^T, i.e. an
/// (N x M) result from op(W) = T on the K x N column-major view of W and op(A) = N on A's K x M view.
void cublas_gemm(Context& ctx, DType t, std::int64_t m, const Shape& s, const void* w, const void* a, void* c) {
  const cudaDataType_t dt = t == DType::kF16 ? CUDA_R_16F : CUDA_R_16BF;
  const float alpha = 1.0f, beta = 0.0f;
  CUBLAS_OK(cublasGemmEx(ctx.cublas, CUBLAS_OP_T, CUBLAS_OP_N, int(s.n), int(m), int(s.k), &alpha, w, dt,
                         int(s.k), a, dt, int(s.k), &beta, c, dt, int(s.n), CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT));
}

using CublasKey = std::tuple<std::int64_t, std::int64_t, std::int64_t, DType>;  // K, N, M, type
std::map<CublasKey, double>& cublas_cache() {  // median seconds per launch
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
  std::unique_ptr<Graph> graph;
};
CublasCase prepare_cublas(Context& ctx, DType t, std::int64_t m, const Shape& s) {
  Activations& act = activations(s.k, s.n, t);
  DenseWeights& w = dense_weights(s.k, s.n, t);
  CublasCase cc;
  cc.copies = int(w.copies.size());
  check_output(ctx, t, act.c.get(), std::size_t(m * s.n), "cublasGemmEx",
               [&] { cublas_gemm(ctx, t, m, s, w.copies[0].get(), act.a.get(), act.c.get()); });
  cc.graph = std::make_unique<Graph>(ctx.stream, cc.copies, [&](int i, cudaStream_t) {
    cublas_gemm(ctx, t, m, s, w.copies[std::size_t(i)].get(), act.a.get(), act.c.get());
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
    g_context_lost = std::string("not run: the CUDA context was lost in ") + name + " (" +
                     cudaGetErrorName(again) + ")";
}

/// Skips the case when an earlier one lost the CUDA context; true when it did.
bool skip_if_context_lost(benchmark::State& state) {
  if (g_context_lost.empty()) return false;
  ++g_failures;
  state.SkipWithError(g_context_lost.c_str());
  return true;
}

void bm_cublas(benchmark::State& state, const std::string& name, Shape s, std::int64_t m, DType t) {
  if (skip_if_context_lost(state)) return;
  try {
    Context& ctx = context();
    CublasCase cc = prepare_cublas(ctx, t, m, s);
    std::vector<double> samples;
    samples.reserve(std::size_t(state.max_iterations));
    for (auto _ : state) {
      const double per_launch = cc.graph->time_ms(ctx) * 1e-3 / cc.copies;
      state.SetIterationTime(per_launch);
      samples.push_back(per_launch);
    }
    CUDA_OK(cudaGetLastError());
    const Stats st = stats_of(samples);
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
  if (s != "auto") throw std::runtime_error("bench_gemm: NIBBLE_MAINLOOP must be auto, mma, mma_t or wgmma");
  return nibble::gemm::Mainloop::kAuto;
}

void bm_nibble(benchmark::State& state, const std::string& name, Shape s, std::int64_t m, DType t,
               WeightFormat f) {
  if (skip_if_context_lost(state)) return;
  try {
    Context& ctx = context();
    const double cublas_s = cublas_seconds(ctx, t, m, s);  // before the nibble buffers: shares no timing

    Activations& act = activations(s.k, s.n, t);
    NibbleWeights& w = nibble_weights(s.k, s.n, t, f);
    const int copies = int(w.views.size());

    nibble::gemm::Arguments args;
    args.m = m;
    args.act_type = t;
    args.a = act.a.get();
    args.lda = s.k;
    args.w = w.views[0];
    args.c = act.c.get();
    args.ldc = s.n;
    args.out_type = t;
    args.mainloop = mainloop_from_env();
    NIBBLE_OK(nibble::gemm::can_implement(args));
    const std::size_t ws_bytes = nibble::gemm::get_workspace_size(args);
    void* ws = ctx.zeroed_workspace(ws_bytes);
    const nibble::gemm::Plan plan =
        nibble::gemm::make_plan(args, ctx.sm_count, nibble::gemm::resolve_mainloop(args.mainloop));

    check_output(ctx, t, act.c.get(), std::size_t(m * s.n), "nibble::gemm::run",
                 [&] { NIBBLE_OK(nibble::gemm::run(args, ws, ws_bytes, ctx.stream)); });
    Graph graph(ctx.stream, copies, [&](int i, cudaStream_t stream) {
      nibble::gemm::Arguments ai = args;
      ai.w = w.views[std::size_t(i)];
      NIBBLE_OK(nibble::gemm::run(ai, ws, ws_bytes, stream));
    });
    warm_up(graph, ctx);

    std::vector<double> samples;
    samples.reserve(std::size_t(state.max_iterations));
    for (auto _ : state) {
      const double per_launch = graph.time_ms(ctx) * 1e-3 / copies;
      state.SetIterationTime(per_launch);
      samples.push_back(per_launch);
    }
    CUDA_OK(cudaGetLastError());
    const Stats st = stats_of(samples);
    set_rate_counters(state, st, double(w.bytes_per_copy) + act_bytes(m, s), flops_of(m, s), copies);
    state.counters["speedup_vs_cublas"] = cublas_s / st.median;
    state.counters["cublas_us"] = cublas_s * 1e6;
    state.counters["splits"] = plan.splits;
    state.counters["tile"] = int(plan.kind);
  } catch (const std::exception& e) {
    report_failure(state, name, e);
  }
}

std::string shape_name(const Shape& s, std::int64_t m) {
  return "K" + std::to_string(s.k) + "_N" + std::to_string(s.n) + "/M" + std::to_string(m);
}

/// Order: per shape, per type: the cuBLAS entries first (they fill the cache the nibble entries read),
/// then each format. Consecutive cases share their buffers.
int register_all() {
  int count = 0;
  for (const Shape& s : kShapes) {
    for (DType t : kActTypes) {
      for (std::int64_t m : kMs) {
        const std::string name = std::string("cublas/") + type_name(t) + "/" + shape_name(s, m);
        benchmark::RegisterBenchmark(name.c_str(),
                                     [name, s, m, t](benchmark::State& st) { bm_cublas(st, name, s, m, t); })
            ->UseManualTime()
            ->Iterations(cublas_iterations(m, s))
            ->Unit(benchmark::kMicrosecond);
        ++count;
      }
      for (const WeightFormat& f : kFormats) {
        for (std::int64_t m : kMs) {
          const std::string name =
              std::string("nibble/") + type_name(t) + "/" + f.name + "/" + shape_name(s, m);
          benchmark::RegisterBenchmark(name.c_str(),
                                       [name, s, m, t, f](benchmark::State& st) { bm_nibble(st, name, s, m, t, f); })
              ->UseManualTime()
              ->Iterations(nibble_iterations(m, s, t, f))
              ->Unit(benchmark::kMicrosecond);
          ++count;
        }
      }
    }
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
  int runtime = 0, driver = 0, cublas_version = 0;
  CUDA_OK(cudaRuntimeGetVersion(&runtime));
  CUDA_OK(cudaDriverGetVersion(&driver));
  CUBLAS_OK(cublasGetVersion(ctx.cublas, &cublas_version));
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
  std::snprintf(buf, sizeof buf, "runtime %d, driver %d, cuBLAS %d", runtime, driver, cublas_version);
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
  g_context.reset();
  benchmark::Shutdown();
  if (g_failures > 0) {
    std::fprintf(stderr, "bench_gemm: %d benchmark(s) failed (ERROR OCCURRED above)\n", g_failures);
    return 1;
  }
  return 0;
}
