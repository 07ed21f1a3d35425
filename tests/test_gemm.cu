// tests/test_gemm.cu — the int4 GEMM end to end: layout contract, repack (CPU and GPU), the warp-level
// building block, and gemm::run against a float64 host reference.
//
// Oracles (STYLE.md section 8):
//   bit-exact    A = small integers in [-3, 3], scales = powers of two, s4 / u4 codes: every product is
//                exact in T and every fp32 partial sum exact (|sum| < 2^21 in units of 2^-2), so C must
//                equal the float64 reference exactly (fp32 out), or its rounding to T (T out), for every
//                split-K value and in a CUDA graph.
//   statistical  A ~ N(0, 1), scales ~ |N(0, 1)| * 0.1 + 0.01, random codes, all formats: relative
//                Frobenius error <= 1e-3 (fp16) / 8e-3 (bf16) against float64 of A * dequant(W)^T, where
//                dequant uses the pieces the kernel uses (code value in T, scale in T) but no rounding of
//                their product.
//   edge shapes  M from 1 to 1024, N / K of real models, leading dimensions larger than the rows, C at an
//                odd element offset, bias on / off, fp32 and T outputs, forced split-K.
// The reference never reads the GEMM layout: it dequantizes the plain [N, K] codes, so the layout, the
// repack and the kernel are checked end to end. For large problems it is computed on a sample of rows and
// columns (always the first / last ones and those at tile edges); the rest of C must be finite.
//
// Every GPU case poisons C (0xFF bytes: NaN in f32 / f16 / bf16) and the lda padding of A (NaN) first,
// checks that C outside its view is still poison, runs once eagerly and once captured in a CUDA graph
// (bit-identical), and checks that the split-K workspace is all-zero afterwards.
//
// NIBBLE_QUICK=1 (set under compute-sanitizer) shrinks every shape list. NIBBLE_SEED replays inputs.
// CPU tests (GemmLayout, GemmRepack.Host*, GemmRepack.Rejects*, GemmCanImplement, GemmPlan) always run;
// GPU tests call NIBBLE_REQUIRE_GPU() and are skipped visibly without a device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <nibble/format/codebook.cuh>
#include <nibble/format/format.cuh>
#include <nibble/gemm/gemm.cuh>
#include <nibble/gemm/policy.cuh>
#include <nibble/gemm/warp_mma.cuh>
#include <nibble/layout/gemm_layout.cuh>
#include <nibble/layout/repack.cuh>
#include <nibble/status.cuh>
#include <nibble/thread/pack.cuh>

#include "common/gpu.hpp"
#include "common/names.hpp"
#include "common/random.hpp"

namespace {

using nibble::DType;
using nibble::Format;
using nibble::GemmWeights;
using nibble::PlainWeights;
using nibble::Status;
using std::int64_t;
using std::uint16_t;
using std::uint32_t;
using std::uint8_t;
namespace gemm = nibble::gemm;
namespace layout = nibble::layout;

constexpr int kPC = nibble::kPerChannel;
constexpr Format kAllFormats[] = {kS4, kU4, kNf4, kFp4};
constexpr int kAllGroups[] = {32, 64, 128, 256, kPC};

// ---- errors -----------------------------------------------------------------------------------------

// A failed CUDA call or library call inside a helper aborts the test case (gtest reports the exception).
#define CUDA_CHECK(expr)                                                                                   \
  do {                                                                                                     \
    const cudaError_t err_ = (expr);                                                                       \
    if (err_ != cudaSuccess)                                                                               \
      throw std::runtime_error(std::string(#expr) + " failed: " + cudaGetErrorName(err_) + " (" +           \
                               cudaGetErrorString(err_) + ") at " __FILE__ ":" + std::to_string(__LINE__)); \
  } while (0)

#define NIBBLE_CHECK(expr)                                                                              \
  do {                                                                                                  \
    const ::nibble::Status st_ = (expr);                                                                \
    if (st_ != ::nibble::Status::kSuccess)                                                              \
      throw std::runtime_error(std::string(#expr) + " returned \"" + ::nibble::to_string(st_) + "\" at " \
                               __FILE__ ":" + std::to_string(__LINE__));                                \
  } while (0)

#define EXPECT_STATUS(expected, expr)                                                                \
  do {                                                                                               \
    const ::nibble::Status got_ = (expr);                                                            \
    EXPECT_EQ(int(expected), int(got_)) << #expr << " returned \"" << ::nibble::to_string(got_)      \
                                        << "\", expected \"" << ::nibble::to_string(expected) << '"'; \
  } while (0)

// ---- small helpers ----------------------------------------------------------------------------------

bool quick_mode() {
  const char* v = std::getenv("NIBBLE_QUICK");
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

const char* dtype_name(DType t) { return t == kF32 ? "f32" : (t == kF16 ? "f16" : "bf16"); }
std::string group_name(int g) { return g == kPC ? "pc" : "g" + std::to_string(g); }
int64_t src_groups(int group, int64_t k) { return group == kPC ? 1 : k / group; }

uint16_t to_bits(DType t, float x) {
  if (t == kF16) return __half_raw(__float2half_rn(x)).x;
  return __nv_bfloat16_raw(__float2bfloat16_rn(x)).x;
}
float from_bits(DType t, uint16_t b) {
  if (t == kF16) {
    __half_raw r;
    r.x = b;
    return __half2float(__half(r));
  }
  __nv_bfloat16_raw r;
  r.x = b;
  return __bfloat162float(__nv_bfloat16(r));
}
float t_round(DType t, float x) { return t == kF32 ? x : from_bits(t, to_bits(t, x)); }

/// The value of code `nib` of format f as the kernel holds it in T, before the zero point and the scale.
double code_value(Format f, DType act, int nib) {
  switch (f) {
    case Format::kS4: return nib >= 8 ? nib - 16 : nib;
    case Format::kU4: return nib;
    default: return t_round(act, nibble::codebook(f)[unsigned(nib)]);
  }
}

int device_sm_count() {
  int dev = 0, sms = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  return sms;
}

/// Distinct sorted indices in [0, count): all of them when want >= count, else `must` (clamped) plus random.
std::vector<int64_t> pick_indices(std::mt19937_64& rng, int64_t count, int64_t want,
                                  const std::vector<int64_t>& must) {
  std::vector<int64_t> out;
  if (want >= count) {
    for (int64_t i = 0; i < count; ++i) out.push_back(i);
    return out;
  }
  std::set<int64_t> s;
  for (int64_t i : must)
    if (i >= 0 && i < count) s.insert(i);
  while (int64_t(s.size()) < want) s.insert(int64_t(rng() % std::uint64_t(count)));
  return std::vector<int64_t>(s.begin(), s.end());
}

// ---- device RAII --------------------------------------------------------------------------------------

class DevBuf {
 public:
  DevBuf() = default;
  explicit DevBuf(std::size_t bytes) : bytes_(bytes) {
    if (bytes > 0) CUDA_CHECK(cudaMalloc(&ptr_, bytes));
  }
  ~DevBuf() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DevBuf(DevBuf&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DevBuf& operator=(DevBuf&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;

  void* get() const { return ptr_; }
  template <class U>
  U* as() const { return static_cast<U*>(ptr_); }
  std::size_t size() const { return bytes_; }
  void upload(const void* src, std::size_t bytes) {
    if (bytes > 0) CUDA_CHECK(cudaMemcpy(ptr_, src, bytes, cudaMemcpyHostToDevice));
  }
  template <class U>
  std::vector<U> download(std::size_t offset_bytes = 0, std::size_t bytes = std::size_t(-1)) const {
    if (bytes == std::size_t(-1)) bytes = bytes_ - offset_bytes;
    std::vector<U> out(bytes / sizeof(U));
    if (bytes > 0)
      CUDA_CHECK(cudaMemcpy(out.data(), static_cast<const char*>(ptr_) + offset_bytes, bytes,
                            cudaMemcpyDeviceToHost));
    return out;
  }

 private:
  void* ptr_ = nullptr;
  std::size_t bytes_ = 0;
};

template <class V>
DevBuf to_device(const V& v) {
  DevBuf d(v.size() * sizeof(typename V::value_type));
  d.upload(v.data(), d.size());
  return d;
}

struct Stream {
  cudaStream_t s = nullptr;
  Stream() { CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking)); }
  ~Stream() {
    if (s != nullptr) cudaStreamDestroy(s);
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
};

struct GraphExec {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  ~GraphExec() {
    if (exec != nullptr) cudaGraphExecDestroy(exec);
    if (graph != nullptr) cudaGraphDestroy(graph);
  }
};

/// Captures `body(stream)` (which returns a Status) into a graph on `stream` and instantiates it. The
/// capture is always ended, also when body fails, so the stream stays usable.
template <class Body>
void capture(cudaStream_t stream, GraphExec& g, Body&& body) {
  CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
  const Status st = body(stream);
  const cudaError_t end = cudaStreamEndCapture(stream, &g.graph);
  NIBBLE_CHECK(st);
  CUDA_CHECK(end);
  CUDA_CHECK(cudaGraphInstantiate(&g.exec, g.graph, 0));
}

// ---- host weights, activations, reference --------------------------------------------------------------

enum class Data { kExact, kRandom };

/// A plain-layout weight ([N, K] codes, [N, K / g] scales and zeros) in host memory.
struct HostWeights {
  Format format = kS4;
  int group = 128;
  int64_t n = 0, k = 0;
  DType scale_type = kF16;
  int64_t ld_codes = 0;
  std::vector<uint8_t> codes;   // n * ld_codes, padding bytes 0xFF
  std::vector<uint8_t> scales;  // n * groups of scale_type
  std::vector<uint8_t> zeros;   // n * groups, u4 only

  int64_t groups() const { return src_groups(group, k); }
  int64_t group_of(int64_t kk) const { return group == kPC ? 0 : kk / group; }
  int code(int64_t nn, int64_t kk) const { return (codes[nn * ld_codes + kk / 2] >> (4 * (kk % 2))) & 0xF; }
  float scale(int64_t nn, int64_t g) const {
    const int64_t i = nn * groups() + g;
    if (scale_type == kF32) {
      float f;
      std::memcpy(&f, scales.data() + 4 * i, 4);
      return f;
    }
    uint16_t b;
    std::memcpy(&b, scales.data() + 2 * i, 2);
    return from_bits(scale_type, b);
  }
  int zero(int64_t nn, int64_t g) const { return zeros.empty() ? 0 : zeros[nn * groups() + g]; }
  PlainWeights view(const void* c, const void* s, const void* z) const {
    PlainWeights p;
    p.format = format;
    p.group_size = group;
    p.n = n;
    p.k = k;
    p.codes = static_cast<const uint8_t*>(c);
    p.ld_codes = ld_codes;
    p.scales = s;
    p.scale_type = scale_type;
    p.zeros = static_cast<const uint8_t*>(z);
    return p;
  }
};

/// Random codes (uniform nibbles), scales (powers of two 2^-2..2^1 for Data::kExact, |N(0,1)| * 0.1 + 0.01
/// otherwise, rounded to scale_type) and u4 zero points (uniform 0..15). Codes rows are `ld_pad` bytes
/// longer than K / 2, the padding poisoned with 0xFF.
HostWeights make_weights(std::mt19937_64& rng, Format f, int group, int64_t n, int64_t k, DType scale_type,
                         Data data, int64_t ld_pad = 0) {
  HostWeights w;
  w.format = f;
  w.group = group;
  w.n = n;
  w.k = k;
  w.scale_type = scale_type;
  w.ld_codes = k / 2 + ld_pad;
  w.codes.assign(std::size_t(n * w.ld_codes), 0xFF);
  for (int64_t r = 0; r < n; ++r) {
    std::uint64_t bits = 0;
    for (int64_t b = 0; b < k / 2; ++b) {
      if (b % 8 == 0) bits = rng();
      w.codes[r * w.ld_codes + b] = uint8_t(bits >> (8 * (b % 8)));
    }
  }
  const int64_t count = n * w.groups();
  w.scales.assign(std::size_t(count * nibble::size_of(scale_type)), 0);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t i = 0; i < count; ++i) {
    const float s = data == Data::kExact ? std::ldexp(1.0f, int(rng() % 4) - 2)
                                         : std::fabs(normal(rng)) * 0.1f + 0.01f;
    if (scale_type == kF32) {
      std::memcpy(w.scales.data() + 4 * i, &s, 4);
    } else {
      const uint16_t b = to_bits(scale_type, s);
      std::memcpy(w.scales.data() + 2 * i, &b, 2);
    }
  }
  if (nibble::has_zero_point(f)) {
    w.zeros.resize(std::size_t(count));
    for (auto& z : w.zeros) z = uint8_t(rng() % 16);
  }
  return w;
}

/// One GEMM problem on the host: activations (bits of act), bias, and a weight owned by the caller.
struct HostProblem {
  DType act = kF16;
  Data data = Data::kExact;
  const HostWeights* w = nullptr;
  int64_t m = 0, lda = 0;
  std::vector<uint16_t> a;     // m * lda; columns past K are NaN
  std::vector<uint16_t> bias;  // n

  int64_t n() const { return w->n; }
  int64_t k() const { return w->k; }
  bool exact() const { return data == Data::kExact && (w->format == kS4 || w->format == kU4); }
  std::string name() const {
    return std::string("Gemm_") + dtype_name(act) + "_" + nibble::to_string(w->format) + "_" +
           group_name(w->group) + ".M" + std::to_string(m) + "_N" + std::to_string(n()) + "_K" +
           std::to_string(k());
  }
};

HostProblem make_problem(std::mt19937_64& rng, DType act, const HostWeights& w, int64_t m, Data data,
                         int64_t lda_pad = 0) {
  HostProblem p;
  p.act = act;
  p.data = data;
  p.w = &w;
  p.m = m;
  p.lda = w.k + lda_pad;
  p.a.assign(std::size_t(m * p.lda), uint16_t(0xFFFF));  // NaN in the padding
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < w.k; ++c)
      p.a[r * p.lda + c] =
          to_bits(act, data == Data::kExact ? float(int(rng() % 7) - 3) : normal(rng));
  p.bias.resize(std::size_t(w.n));
  for (auto& b : p.bias)
    b = to_bits(act, data == Data::kExact ? float(int(rng() % 65) - 32) / 4.0f : 0.5f * normal(rng));
  return p;
}

/// The float64 reference on sampled rows x columns, without bias.
struct Samples {
  std::vector<int64_t> rows, cols;
  std::vector<double> ref;  // [rows.size()][cols.size()]
};

Samples reference(const HostProblem& p, std::mt19937_64& rng) {
  const double budget = quick_mode() ? 4e6 : 3e7;  // multiply-adds per reference
  const int64_t m = p.m, n = p.n(), k = p.k();
  Samples s;
  const int64_t want_rows = double(m) * n * k <= budget ? m : 24;
  s.rows = pick_indices(rng, m, want_rows, {0, 1, 7, 8, 15, 16, 63, 64, 127, 128, m / 2, m - 2, m - 1});
  const double row_work = double(s.rows.size()) * k;
  const int64_t want_cols = row_work * n <= budget ? n : std::max<int64_t>(64, int64_t(budget / row_work));
  std::vector<int64_t> must;
  for (int64_t c = 0; c < 16; ++c) must.push_back(c);
  for (int64_t c = n - 48; c < n; ++c) must.push_back(c);
  for (int64_t c = 127; c < n; c += 128 * 7) {
    must.push_back(c);
    must.push_back(c + 1);
  }
  s.cols = pick_indices(rng, n, want_cols, must);

  const HostWeights& w = *p.w;
  double value[16];
  for (int i = 0; i < 16; ++i) value[i] = code_value(w.format, p.act, i);
  std::vector<double> arows(s.rows.size() * std::size_t(k));
  for (std::size_t ri = 0; ri < s.rows.size(); ++ri)
    for (int64_t c = 0; c < k; ++c) arows[ri * k + c] = from_bits(p.act, p.a[s.rows[ri] * p.lda + c]);
  std::vector<double> wrow(std::size_t(k + 4), 0.0);
  s.ref.assign(s.rows.size() * s.cols.size(), 0.0);
  for (std::size_t ci = 0; ci < s.cols.size(); ++ci) {
    const int64_t nn = s.cols[ci];
    for (int64_t g = 0; g < w.groups(); ++g) {
      const double scale = t_round(p.act, w.scale(nn, g));  // the repack rounds scales to T
      const double zero = w.zero(nn, g);
      const int64_t k0 = g * (w.group == kPC ? k : w.group), k1 = w.group == kPC ? k : k0 + w.group;
      for (int64_t kk = k0; kk < k1; ++kk) wrow[kk] = (value[w.code(nn, kk)] - zero) * scale;
    }
    for (std::size_t ri = 0; ri < s.rows.size(); ++ri) {
      const double* a = &arows[ri * k];
      double acc[4] = {0.0, 0.0, 0.0, 0.0};
      int64_t kk = 0;
      for (; kk + 4 <= k; kk += 4)
        for (int u = 0; u < 4; ++u) acc[u] += a[kk + u] * wrow[kk + u];
      for (; kk < k; ++kk) acc[0] += a[kk] * wrow[kk];
      s.ref[ri * s.cols.size() + ci] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
  }
  return s;
}

// ---- device problem and the run harness ----------------------------------------------------------------

struct DeviceWeights {
  DevBuf codes, scales, zeros;
  GemmWeights view;
};

/// Uploads the plain weight and repacks it on the GPU for activations of type act.
DeviceWeights upload_and_repack(const HostWeights& w, DType act) {
  DevBuf pc = to_device(w.codes), ps = to_device(w.scales), pz = to_device(w.zeros);
  const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(w.format, w.n, w.k, w.group, act);
  DeviceWeights d;
  d.codes = DevBuf(b.codes);
  d.scales = DevBuf(b.scales);
  d.zeros = DevBuf(b.zeros);
  NIBBLE_CHECK(nibble::repack(w.view(pc.get(), ps.get(), pz.get()), act, d.codes.get(), d.scales.get(),
                              d.zeros.get(), &d.view, nullptr));
  CUDA_CHECK(cudaDeviceSynchronize());
  return d;
}

struct DeviceActs {
  DevBuf a, bias;
};
DeviceActs upload_acts(const HostProblem& p) {
  DeviceActs d;
  d.a = to_device(p.a);
  d.bias = to_device(p.bias);
  CUDA_CHECK(cudaDeviceSynchronize());
  return d;
}

const char* mainloop_name(gemm::Mainloop m) {
  switch (m) {
    case gemm::Mainloop::kAuto: return "auto";
    case gemm::Mainloop::kMmaSync: return "mma";
    case gemm::Mainloop::kTransposedMma: return "mma_t";
    case gemm::Mainloop::kWgmma: return "wgmma";
  }
  return "?";
}

/// Every mainloop that can run M rows here: decode sizes (M <= 16) run one tile family whatever is asked,
/// so only once; above, mma.sync, the transposed tiles with mma.sync, and wgmma where this build and
/// device have it (Gemm_Wgmma.* says when it is not).
std::vector<gemm::Mainloop> mainloops_for(int64_t m) {
  if (m <= 16) return {gemm::Mainloop::kAuto};
  std::vector<gemm::Mainloop> v{gemm::Mainloop::kMmaSync, gemm::Mainloop::kTransposedMma};
  if (gemm::wgmma_available()) v.push_back(gemm::Mainloop::kWgmma);
  return v;
}

/// The plan run() uses for args on this device.
gemm::Plan plan_of(const gemm::Arguments& args) {
  return gemm::make_plan(args, device_sm_count(), gemm::resolve_mainloop(args.mainloop));
}

struct RunOpts {
  DType out = kF32;
  bool bias = false;
  int split_k = 0;       // 0: heuristic
  int64_t ldc_pad = 0;   // ldc = N + ldc_pad
  int64_t c_offset = 0;  // elements from the start of the C buffer to C[0, 0]
  gemm::Mainloop mainloop = gemm::Mainloop::kAuto;
  gemm::CodebookTable codebook_table = gemm::CodebookTable::kAuto;
  int max_smem = 0;  // Arguments::max_smem_per_block
  std::string name() const {
    return std::string("mainloop=") + mainloop_name(mainloop) +
           (max_smem > 0 ? " max_smem=" + std::to_string(max_smem) : std::string()) +
           (codebook_table == gemm::CodebookTable::kAuto ? ""
            : codebook_table == gemm::CodebookTable::kSharedMemory ? " table=smem" : " table=regs") + " out=" + dtype_name(out) + " bias=" + (bias ? "1" : "0") +
           " split_k=" + std::to_string(split_k) + " ldc_pad=" + std::to_string(ldc_pad) +
           " c_offset=" + std::to_string(c_offset);
  }
};

struct RunResult {
  std::vector<uint8_t> c;  // the whole C buffer, poison included
  int64_t ldc = 0, offset = 0, total = 0;
  int elem = 4;
  gemm::Plan plan;
};

gemm::Arguments make_args(const HostProblem& p, const DeviceWeights& dw, const DeviceActs& da,
                          const RunOpts& o, void* c) {
  gemm::Arguments args;
  args.m = p.m;
  args.act_type = p.act;
  args.a = da.a.get();
  args.lda = p.lda;
  args.w = dw.view;
  args.bias = o.bias ? da.bias.get() : nullptr;
  args.c = c;
  args.ldc = p.n() + o.ldc_pad;
  args.out_type = o.out;
  args.split_k = o.split_k;
  args.mainloop = o.mainloop;
  args.codebook_table = o.codebook_table;
  args.max_smem_per_block = o.max_smem;
  return args;
}

/// The counter region at the start of a split-K workspace must be all zero again after every run.
void expect_workspace_clean(const DevBuf& ws, const gemm::Plan& plan, const char* when) {
  if (plan.workspace_bytes == 0) return;
  const std::vector<unsigned> counters = ws.download<unsigned>(0, gemm::kCounterBytes);
  std::size_t nonzero = 0;
  for (unsigned c : counters) nonzero += c != 0u;
  EXPECT_EQ(nonzero, 0u) << "split-K tile counters not reset to zero " << when;
}

/// Runs the GEMM eagerly, then again captured in a CUDA graph; both into freshly poisoned C; the two C
/// buffers must be identical bit for bit. Returns the eager C buffer.
RunResult run_gemm(const HostProblem& p, const DeviceWeights& dw, const DeviceActs& da, const RunOpts& o) {
  RunResult r;
  r.elem = nibble::size_of(o.out);
  r.ldc = p.n() + o.ldc_pad;
  r.offset = o.c_offset;
  r.total = r.offset + (p.m - 1) * r.ldc + p.n() + 40;  // 40 poison elements after the last row
  const std::size_t bytes = std::size_t(r.total) * r.elem;
  DevBuf c(bytes);
  const gemm::Arguments args = make_args(p, dw, da, o, c.as<char>() + r.offset * r.elem);
  NIBBLE_CHECK(gemm::can_implement(args));
  const std::size_t ws_bytes = gemm::get_workspace_size(args);
  r.plan = plan_of(args);
  EXPECT_EQ(ws_bytes, r.plan.workspace_bytes) << "get_workspace_size disagrees with make_plan";
  DevBuf ws(ws_bytes);
  if (ws_bytes > 0) CUDA_CHECK(cudaMemset(ws.get(), 0, ws_bytes));  // zeroed once, at allocation
  CUDA_CHECK(cudaDeviceSynchronize());
  Stream stream;

  CUDA_CHECK(cudaMemsetAsync(c.get(), 0xFF, bytes, stream.s));
  NIBBLE_CHECK(gemm::run(args, ws.get(), ws_bytes, stream.s));
  CUDA_CHECK(cudaStreamSynchronize(stream.s));
  CUDA_CHECK(cudaGetLastError());
  r.c = c.download<uint8_t>();
  expect_workspace_clean(ws, r.plan, "after the eager run");

  CUDA_CHECK(cudaMemsetAsync(c.get(), 0xFF, bytes, stream.s));
  CUDA_CHECK(cudaStreamSynchronize(stream.s));
  GraphExec g;
  capture(stream.s, g, [&](cudaStream_t s) { return gemm::run(args, ws.get(), ws_bytes, s); });
  CUDA_CHECK(cudaGraphLaunch(g.exec, stream.s));
  CUDA_CHECK(cudaStreamSynchronize(stream.s));
  const std::vector<uint8_t> replay = c.download<uint8_t>();
  const auto diff = std::mismatch(r.c.begin(), r.c.end(), replay.begin());
  EXPECT_TRUE(diff.first == r.c.end()) << "the CUDA-graph run differs from the eager run at byte "
                                       << (diff.first - r.c.begin()) << " (split-K determinism)";
  expect_workspace_clean(ws, r.plan, "after the graph run");
  return r;
}

float c_value(const RunResult& r, DType out, int64_t index) {
  if (r.elem == 4) {
    float f;
    std::memcpy(&f, r.c.data() + 4 * index, 4);
    return f;
  }
  uint16_t b;
  std::memcpy(&b, r.c.data() + 2 * index, 2);
  return from_bits(out, b);
}

/// C against the reference: poison untouched outside the view, every element of the view finite, and on
/// the sampled entries either exact equality (exact problems) or the relative Frobenius error bound.
void check_c(const HostProblem& p, const Samples& s, const RunOpts& o, const RunResult& r) {
  const int64_t n = p.n();
  int64_t bad_poison = 0, bad_finite = 0, first_poison = -1, first_finite = -1;
  for (int64_t i = 0; i < r.total; ++i) {
    const int64_t rel = i - r.offset;
    const bool inside = rel >= 0 && rel / r.ldc < p.m && rel % r.ldc < n;
    if (inside) {
      if (!std::isfinite(c_value(r, o.out, i)) && bad_finite++ == 0) first_finite = rel;
    } else {
      bool poison = true;
      for (int b = 0; b < r.elem; ++b) poison = poison && r.c[std::size_t(i * r.elem + b)] == 0xFF;
      if (!poison && bad_poison++ == 0) first_poison = i;
    }
  }
  EXPECT_EQ(bad_poison, 0) << "elements outside the C view were written; first at buffer element "
                           << first_poison;
  EXPECT_EQ(bad_finite, 0) << "C elements are NaN / Inf (or still poison); first at row "
                           << (first_finite < 0 ? -1 : first_finite / r.ldc) << " col "
                           << (first_finite < 0 ? -1 : first_finite % r.ldc);

  double err2 = 0.0, ref2 = 0.0, worst = 0.0;
  int64_t mismatches = 0;
  std::string first;
  for (std::size_t ri = 0; ri < s.rows.size(); ++ri)
    for (std::size_t ci = 0; ci < s.cols.size(); ++ci) {
      const int64_t row = s.rows[ri], col = s.cols[ci];
      double ref = s.ref[ri * s.cols.size() + ci];
      if (o.bias) ref += from_bits(p.act, p.bias[std::size_t(col)]);
      const float got = c_value(r, o.out, r.offset + row * r.ldc + col);
      if (p.exact()) {
        const float want = o.out == kF32 ? float(ref) : t_round(o.out, float(ref));
        if (!(got == want) && mismatches++ < 1) {
          std::ostringstream os;
          os << "C[" << row << ", " << col << "] = " << got << ", reference " << want;
          first = os.str();
        }
      } else {
        const double d = double(got) - ref;
        err2 += d * d;
        ref2 += ref * ref;
        worst = std::max(worst, std::fabs(d));
      }
    }
  if (p.exact()) {
    EXPECT_EQ(mismatches, 0) << "bit-exact oracle: " << mismatches << " of " << s.ref.size()
                             << " sampled entries differ; first: " << first;
  } else {
    const double tol = p.act == kF16 ? 1e-3 : 8e-3;
    const double rel = ref2 > 0.0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
    EXPECT_LE(rel, tol) << "relative Frobenius error over " << s.ref.size()
                        << " sampled entries; largest |error| " << worst;
    EXPECT_TRUE(std::isfinite(rel)) << "NaN in C";
  }
}

/// Runs and checks one configuration; returns the result for further comparisons.
RunResult run_and_check(const HostProblem& p, const DeviceWeights& dw, const DeviceActs& da, const Samples& s,
                        const RunOpts& o) {
  SCOPED_TRACE(p.name() + " " + o.name());
  RunResult r = run_gemm(p, dw, da, o);
  check_c(p, s, o, r);
  return r;
}

/// For f16 and bf16, each format in `formats` that keep(act, f) accepts (random N x K weights, group 64)
/// and M = 1, 40, 130, 300 (the decode tile and the 64- / 128- / 256-token families): body(problem,
/// weights, activations, reference samples, mainloop) for every mainloop that M runs with.
template <class Keep, class Body>
void for_each_tile_family_case(std::mt19937_64& rng, int64_t n, int64_t k, std::initializer_list<Format> formats,
                               Keep keep, Body body) {
  for (DType act : {kF16, kBF16})
    for (Format f : formats) {
      if (!keep(act, f)) continue;
      const HostWeights w = make_weights(rng, f, 64, n, k, act, Data::kRandom);
      const DeviceWeights dw = upload_and_repack(w, act);
      for (int64_t m : {1, 40, 130, 300}) {
        const HostProblem p = make_problem(rng, act, w, m, Data::kRandom);
        const DeviceActs da = upload_acts(p);
        const Samples s = reference(p, rng);
        for (gemm::Mainloop ml : mainloops_for(m)) body(p, dw, da, s, ml);
      }
    }
}

/// The K each group size is tested with (K % 64 != 0 for g32 and per-channel: padded atoms).
int64_t k_for_group(int group) {
  if (quick_mode()) return group == 32 ? 224 : group == 64 ? 320 : group == 128 ? 384 : group == 256 ? 512 : 200;
  return group == 32 ? 992 : group == 64 ? 1088 : group == 128 ? 1152 : group == 256 ? 1280 : 1000;
}

// ================================== CPU: layout contract ==================================================

TEST(GemmLayout, AtomCoordFollowsTheMmaFragmentTableAndCodeLocationInvertsIt) {
  // The table of gemm_layout.cuh written out: value i of word j of lane l sits at n = g + 8 (i >= 4),
  // k = 16 j + 2 t + 8 (i in {2, 3, 6, 7}) + i % 2; nibble i (sequential) or {0,4,1,5,2,6,3,7}[i]
  // (interleaved: even values low half-word, odd values high half-word).
  const int kInterleavedNibble[8] = {0, 4, 1, 5, 2, 6, 3, 7};
  for (Format f : kAllFormats) {
    const bool interleaved = f == kS4 || f == kU4;
    EXPECT_EQ(layout::gemm_nibble_order(f),
              interleaved ? nibble::NibbleOrder::kInterleaved : nibble::NibbleOrder::kSequential);
    const layout::GemmShape s = layout::make_gemm_shape(48, 192, 64);  // 3 x 3 atoms
    std::vector<int> seen(std::size_t(s.code_bytes() * 2), 0);
    int errors = 0;
    for (int an = 0; an < 3; ++an)
      for (int ak = 0; ak < 3; ++ak)
        for (int lane = 0; lane < 32; ++lane)
          for (int j = 0; j < 4; ++j)
            for (int i = 0; i < 8; ++i) {
              const int g = lane / 4, t = lane % 4;
              const int n = g + (i >= 4 ? 8 : 0);
              const int k = 16 * j + 2 * t + ((i % 4) >= 2 ? 8 : 0) + i % 2;
              const layout::AtomCoord c = layout::atom_coord(lane, j, i);
              if (c.n != n || c.k != k) ++errors;
              const int nib = interleaved ? kInterleavedNibble[i] : i;
              const layout::CodeLocation loc = layout::code_location(s, f, an * 16 + n, ak * 64 + k);
              const int64_t want = (an * s.k_atoms() + ak) * 512 + lane * 16 + 4 * j + nib / 2;
              if (loc.byte != want || loc.shift != 4 * (nib % 2)) ++errors;
              if (loc.byte >= 0 && loc.byte < s.code_bytes()) ++seen[std::size_t(loc.byte * 2 + loc.shift / 4)];
            }
    EXPECT_EQ(errors, 0) << nibble::to_string(f) << ": atom_coord / code_location disagree with the table";
    EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), std::ptrdiff_t(seen.size()))
        << nibble::to_string(f) << ": code_location is not a bijection onto the nibbles of the atoms";
  }
}

TEST(GemmLayout, ShapesScaleIndexAndBufferSizes) {
  struct Case {
    int64_t n, k;
    int group;
    int64_t n_pad, k_pad, layout_group, groups;
  };
  const Case cases[] = {
      {4304, 4096, 128, 4304, 4096, 128, 32}, {100, 200, kPC, 112, 256, 256, 1},
      {17, 224, 32, 32, 256, 32, 8},          {2880, 4304, kPC, 2880, 4352, 4352, 1},
      {256, 7392, 32, 256, 7424, 32, 232},    {1, 8, kPC, 16, 64, 64, 1},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("N" + std::to_string(c.n) + "_K" + std::to_string(c.k) + "_" + group_name(c.group));
    const layout::GemmShape s = layout::make_gemm_shape(c.n, c.k, c.group);
    EXPECT_EQ(s.n_pad, c.n_pad);
    EXPECT_EQ(s.k_pad, c.k_pad);
    EXPECT_EQ(s.group, c.layout_group);
    EXPECT_EQ(s.groups, c.groups);
    EXPECT_EQ(s.k_atoms(), c.k_pad / 64);
    EXPECT_EQ(s.code_bytes(), c.n_pad * c.k_pad / 2);
    EXPECT_EQ(s.scale_count(), c.groups * c.n_pad);
    EXPECT_EQ(layout::scale_index(s, 5 % c.n, c.k - 1), (c.group == kPC ? 0 : (c.k - 1) / c.group) * c.n_pad + 5 % c.n);
    for (DType act : {kF16, kBF16})
      for (Format f : kAllFormats) {
        const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(f, c.n, c.k, c.group, act);
        EXPECT_EQ(b.codes, std::size_t(c.n_pad * c.k_pad / 2));
        EXPECT_EQ(b.scales, std::size_t(c.groups * c.n_pad * 2));
        EXPECT_EQ(b.zeros, f == kU4 ? std::size_t(c.groups * c.n_pad) : 0u);
      }
  }
}

// ================================== CPU: repack ============================================================

struct RepackShape {
  int64_t n, k;
  int group;
};

/// The repack tests' shapes (N % 16 != 0, K % 64 != 0, every group kind) and their trace label.
const RepackShape kRepackShapes[] = {{16, 64, 32},   {17, 96, 32},   {100, 200, kPC},
                                     {33, 448, 64},  {40, 512, 256}, {300, 1024, 128}};
std::string repack_label(const char* what, Format f, DType act, DType plain_scale, const RepackShape& sh) {
  return std::string(what) + " " + nibble::to_string(f) + " act=" + dtype_name(act) + " plain scales " +
         dtype_name(plain_scale) + " N" + std::to_string(sh.n) + "_K" + std::to_string(sh.k) + "_" +
         group_name(sh.group);
}

/// Host buffers of the GEMM layout, pre-filled with a poison byte.
struct HostGemmBuffers {
  std::vector<uint8_t> codes, scales, zeros;  // zeros always allocated (checked untouched when unused)
  HostGemmBuffers(const nibble::GemmWeightBytes& b, std::size_t zero_bytes)
      : codes(b.codes + 16, 0xAB), scales(b.scales + 16, 0xAB), zeros(zero_bytes + 16, 0xAB) {}
};

TEST(GemmRepack, HostFollowsTheLayoutContract) {
  auto rng = nibble_test_rng();
  for (DType act : {kF16, kBF16})
    for (Format f : kAllFormats)
      for (DType plain_scale : {kF32, act})
        for (const RepackShape& sh : kRepackShapes) {
          SCOPED_TRACE(repack_label("repack_host", f, act, plain_scale, sh));
          const HostWeights w = make_weights(rng, f, sh.group, sh.n, sh.k, plain_scale, Data::kRandom, 3);
          const layout::GemmShape s = layout::make_gemm_shape(sh.n, sh.k, sh.group);
          const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(f, sh.n, sh.k, sh.group, act);
          // 16-byte aligned views into vectors: std::vector<uint8_t> storage comes from operator new
          // (aligned to __STDCPP_DEFAULT_NEW_ALIGNMENT__ = 16 on x86-64 Linux).
          HostGemmBuffers out(b, std::size_t(s.scale_count()));
          GemmWeights view;
          ASSERT_EQ(reinterpret_cast<std::uintptr_t>(out.codes.data()) % 16, 0u);
          EXPECT_STATUS(Status::kSuccess,
                        nibble::repack_host(w.view(w.codes.data(), w.scales.data(), w.zeros.data()), act,
                                            out.codes.data(), out.scales.data(), out.zeros.data(), &view));
          EXPECT_EQ(view.format, f);
          EXPECT_EQ(view.group_size, sh.group);
          EXPECT_EQ(view.n, sh.n);
          EXPECT_EQ(view.k, sh.k);
          EXPECT_EQ(view.scale_type, act);
          EXPECT_EQ(static_cast<const void*>(view.codes), out.codes.data());
          EXPECT_EQ(view.scales, static_cast<const void*>(out.scales.data()));
          EXPECT_EQ(static_cast<const void*>(view.zeros), f == kU4 ? out.zeros.data() : nullptr);
          int bad_codes = 0, bad_scales = 0, bad_zeros = 0;
          for (int64_t n = 0; n < s.n_pad; ++n)
            for (int64_t k = 0; k < s.k_pad; ++k) {
              const layout::CodeLocation loc = layout::code_location(s, f, n, k);
              const int got = (out.codes[std::size_t(loc.byte)] >> loc.shift) & 0xF;
              const int want = n < sh.n && k < sh.k ? w.code(n, k) : 0;
              bad_codes += got != want;
            }
          for (int64_t g = 0; g < s.groups; ++g)
            for (int64_t n = 0; n < s.n_pad; ++n) {
              const bool real = n < sh.n && g < w.groups();
              uint16_t got;
              std::memcpy(&got, out.scales.data() + 2 * (g * s.n_pad + n), 2);
              const uint16_t want = real ? to_bits(act, w.scale(n, g)) : uint16_t(0);
              bad_scales += got != want;
              if (f == kU4) bad_zeros += out.zeros[std::size_t(g * s.n_pad + n)] != (real ? w.zero(n, g) : 0);
            }
          if (f != kU4)
            bad_zeros += int(std::count_if(out.zeros.begin(), out.zeros.end(), [](uint8_t z) { return z != 0xAB; }));
          for (const auto* v : {&out.codes, &out.scales})  // the 16 bytes past each buffer are untouched
            for (std::size_t i = v->size() - 16; i < v->size(); ++i) bad_codes += (*v)[i] != 0xAB;
          EXPECT_EQ(bad_codes, 0) << "codes differ from the plain codes at code_location (0 in padding)";
          EXPECT_EQ(bad_scales, 0) << "scales differ from the plain scales rounded to T (0 in padding)";
          EXPECT_EQ(bad_zeros, 0) << "zero points differ from the plain ones (0 in padding / untouched)";
        }
}

TEST(GemmRepack, RejectsInvalidArguments) {
  auto rng = nibble_test_rng();
  const HostWeights w = make_weights(rng, kU4, 64, 32, 256, kF16, Data::kRandom);
  const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(kU4, 32, 256, 64, kF16);
  HostGemmBuffers out(b, b.zeros);
  GemmWeights view;
  const PlainWeights good = w.view(w.codes.data(), w.scales.data(), w.zeros.data());
  auto repack = [&](const PlainWeights& src, DType act = kF16, void* codes = nullptr, void* scales = nullptr,
                    void* zeros = nullptr, GemmWeights* v = nullptr, bool defaults = true) {
    if (defaults) {
      codes = out.codes.data();
      scales = out.scales.data();
      zeros = out.zeros.data();
      v = &view;
    }
    return nibble::repack_host(src, act, codes, scales, zeros, v);
  };
  EXPECT_STATUS(Status::kSuccess, repack(good));
  EXPECT_STATUS(Status::kErrorUnsupportedFormat, repack(good, kF32));
  PlainWeights p = good;
  p.n = 0;
  EXPECT_STATUS(Status::kErrorInvalidShape, repack(p));
  p = good;
  p.k = 255;
  EXPECT_STATUS(Status::kErrorInvalidShape, repack(p));
  p = good;
  p.group_size = 16;
  EXPECT_STATUS(Status::kErrorGroupSize, repack(p));
  p = good;
  p.k = 224;  // 224 % 64 != 0
  EXPECT_STATUS(Status::kErrorGroupSize, repack(p));
  p = good;
  p.ld_codes = 127;
  EXPECT_STATUS(Status::kErrorLeadingDimension, repack(p));
  p = good;
  p.codes = nullptr;
  EXPECT_STATUS(Status::kErrorNullPointer, repack(p));
  p = good;
  p.scales = nullptr;
  EXPECT_STATUS(Status::kErrorNullPointer, repack(p));
  p = good;
  p.zeros = nullptr;
  EXPECT_STATUS(Status::kErrorNullPointer, repack(p));
  EXPECT_STATUS(Status::kErrorNullPointer,
                repack(good, kF16, out.codes.data(), out.scales.data(), nullptr, &view, false));
  EXPECT_STATUS(Status::kErrorNullPointer,
                repack(good, kF16, out.codes.data(), out.scales.data(), out.zeros.data(), nullptr, false));
  EXPECT_STATUS(Status::kErrorMisalignedPointer,
                repack(good, kF16, out.codes.data() + 4, out.scales.data(), out.zeros.data(), &view, false));
  EXPECT_STATUS(Status::kErrorMisalignedPointer,
                repack(good, kF16, out.codes.data(), out.scales.data() + 2, out.zeros.data(), &view, false));
  EXPECT_STATUS(Status::kErrorMisalignedPointer,
                repack(good, kF16, out.codes.data(), out.scales.data(), out.zeros.data() + 1, &view, false));
}

// ================================== CPU: can_implement and the plan =======================================

/// Valid arguments with fake (never dereferenced) 256-byte aligned pointers: can_implement is CPU only.
gemm::Arguments fake_args(Format f, int group, int64_t m, int64_t n, int64_t k, DType act = kF16,
                          DType out = kF16) {
  auto fake = [](std::uintptr_t x) { return reinterpret_cast<void*>(x << 8); };
  gemm::Arguments a;
  a.m = m;
  a.act_type = act;
  a.a = fake(0x1000);
  a.lda = k;
  a.w.format = f;
  a.w.group_size = group;
  a.w.n = n;
  a.w.k = k;
  a.w.scale_type = act;
  a.w.codes = static_cast<const uint8_t*>(fake(0x2000));
  a.w.scales = fake(0x3000);
  a.w.zeros = f == kU4 ? static_cast<const uint8_t*>(fake(0x4000)) : nullptr;
  a.bias = fake(0x5000);
  a.c = fake(0x6000);
  a.ldc = n;
  a.out_type = out;
  return a;
}

template <class Mutate>
Status mutated(const gemm::Arguments& base, Mutate&& mutate) {
  gemm::Arguments a = base;
  mutate(a);
  return gemm::can_implement(a);
}

TEST(GemmCanImplement, RejectsWithTheDocumentedStatus) {
  const gemm::Arguments u4 = fake_args(kU4, 128, 17, 4096, 4096);
  auto off = [](const void* p, std::ptrdiff_t bytes) {
    return static_cast<void*>(static_cast<char*>(const_cast<void*>(p)) + bytes);
  };
  ASSERT_EQ(int(gemm::can_implement(u4)), int(Status::kSuccess));
  using A = gemm::Arguments;
  // null pointers
  EXPECT_STATUS(Status::kErrorNullPointer, mutated(u4, [](A& a) { a.a = nullptr; }));
  EXPECT_STATUS(Status::kErrorNullPointer, mutated(u4, [](A& a) { a.c = nullptr; }));
  EXPECT_STATUS(Status::kErrorNullPointer, mutated(u4, [](A& a) { a.w.codes = nullptr; }));
  EXPECT_STATUS(Status::kErrorNullPointer, mutated(u4, [](A& a) { a.w.scales = nullptr; }));
  EXPECT_STATUS(Status::kErrorNullPointer, mutated(u4, [](A& a) { a.w.zeros = nullptr; }));
  EXPECT_STATUS(Status::kSuccess, mutated(u4, [](A& a) { a.bias = nullptr; }));  // bias is optional
  EXPECT_STATUS(Status::kSuccess, mutated(u4, [](A& a) { a.w.format = kS4; a.w.zeros = nullptr; }));
  // group size
  EXPECT_STATUS(Status::kErrorGroupSize, mutated(u4, [](A& a) { a.w.k = a.lda = 4160; }));  // 4160 % 128
  EXPECT_STATUS(Status::kErrorGroupSize, mutated(u4, [](A& a) { a.w.k = a.lda = 2880; }));  // 2880 % 128
  EXPECT_STATUS(Status::kErrorGroupSize, mutated(u4, [](A& a) { a.w.group_size = 16; }));
  EXPECT_STATUS(Status::kErrorGroupSize, mutated(u4, [](A& a) { a.w.group_size = 512; }));
  EXPECT_STATUS(Status::kErrorGroupSize, mutated(u4, [](A& a) { a.w.group_size = -1; }));
  EXPECT_STATUS(Status::kSuccess, mutated(u4, [](A& a) { a.w.group_size = kPC; a.w.k = a.lda = 4304; }));
  // shapes
  EXPECT_STATUS(Status::kErrorInvalidShape, mutated(u4, [](A& a) { a.w.group_size = kPC; a.w.k = a.lda = 4100; }));
  EXPECT_STATUS(Status::kErrorInvalidShape, mutated(u4, [](A& a) { a.w.group_size = kPC; a.w.k = a.lda = 4; }));
  EXPECT_STATUS(Status::kErrorInvalidShape, mutated(u4, [](A& a) { a.m = 0; }));
  EXPECT_STATUS(Status::kErrorInvalidShape, mutated(u4, [](A& a) { a.m = -3; }));
  EXPECT_STATUS(Status::kErrorInvalidShape, mutated(u4, [](A& a) { a.w.n = 0; }));
  EXPECT_STATUS(Status::kErrorInvalidShape, mutated(u4, [](A& a) { a.w.k = 0; }));
  // leading dimensions
  EXPECT_STATUS(Status::kErrorLeadingDimension, mutated(u4, [](A& a) { a.lda = a.w.k - 8; }));
  EXPECT_STATUS(Status::kErrorLeadingDimension, mutated(u4, [](A& a) { a.ldc = a.w.n - 1; }));
  EXPECT_STATUS(Status::kSuccess, mutated(u4, [](A& a) { a.lda = a.w.k + 8; a.ldc = a.w.n + 3; }));
  // alignment
  EXPECT_STATUS(Status::kErrorMisalignedPointer, mutated(u4, [&](A& a) { a.a = off(a.a, 2); }));  // a + 1 element
  EXPECT_STATUS(Status::kErrorMisalignedPointer, mutated(u4, [&](A& a) { a.a = off(a.a, 8); }));
  EXPECT_STATUS(Status::kErrorMisalignedPointer, mutated(u4, [](A& a) { a.lda = a.w.k + 4; }));
  EXPECT_STATUS(Status::kErrorMisalignedPointer, mutated(u4, [&](A& a) { a.w.codes = static_cast<const uint8_t*>(off(a.w.codes, 8)); }));
  EXPECT_STATUS(Status::kErrorMisalignedPointer, mutated(u4, [&](A& a) { a.w.scales = off(a.w.scales, 2); }));
  EXPECT_STATUS(Status::kErrorMisalignedPointer, mutated(u4, [&](A& a) { a.w.zeros = static_cast<const uint8_t*>(off(a.w.zeros, 1)); }));
  EXPECT_STATUS(Status::kErrorMisalignedPointer, mutated(u4, [&](A& a) { a.c = off(a.c, 1); }));
  EXPECT_STATUS(Status::kSuccess, mutated(u4, [&](A& a) { a.c = off(a.c, 2); }));  // one T element
  EXPECT_STATUS(Status::kErrorMisalignedPointer, mutated(u4, [&](A& a) { a.out_type = kF32; a.c = off(a.c, 2); }));
  EXPECT_STATUS(Status::kSuccess, mutated(u4, [&](A& a) { a.out_type = kF32; a.c = off(a.c, 4); }));
  EXPECT_STATUS(Status::kErrorMisalignedPointer, mutated(u4, [&](A& a) { a.bias = off(a.bias, 1); }));
  // types and formats
  EXPECT_STATUS(Status::kErrorUnsupportedFormat, mutated(u4, [](A& a) { a.act_type = kF32; a.w.scale_type = kF32; a.out_type = kF32; }));
  EXPECT_STATUS(Status::kErrorUnsupportedFormat, mutated(u4, [](A& a) { a.w.scale_type = kBF16; }));
  EXPECT_STATUS(Status::kErrorUnsupportedFormat, mutated(u4, [](A& a) { a.w.scale_type = kF32; }));
  EXPECT_STATUS(Status::kErrorUnsupportedFormat, mutated(u4, [](A& a) { a.out_type = kBF16; }));
  EXPECT_STATUS(Status::kErrorUnsupportedFormat, mutated(u4, [](A& a) { a.w.format = Format(7); }));
  EXPECT_STATUS(Status::kSuccess, mutated(u4, [](A& a) { a.act_type = a.w.scale_type = a.out_type = kBF16; }));
  // sizes
  EXPECT_STATUS(Status::kErrorSizeOverflow, mutated(u4, [](A& a) { a.m = (int64_t(1) << 30) + 1; }));
  EXPECT_STATUS(Status::kErrorSizeOverflow, mutated(u4, [](A& a) { a.m = int64_t(1) << 40; }));
  EXPECT_STATUS(Status::kErrorSizeOverflow, mutated(u4, [](A& a) { a.w.n = a.ldc = (int64_t(1) << 30) + 16; }));
  EXPECT_STATUS(Status::kErrorSizeOverflow, mutated(u4, [](A& a) { a.w.k = a.lda = int64_t(1) << 31; }));
  EXPECT_STATUS(Status::kErrorSizeOverflow, mutated(u4, [](A& a) { a.m = int64_t(1) << 30; a.ldc = int64_t(1) << 33; }));
  EXPECT_STATUS(Status::kErrorSizeOverflow, mutated(u4, [](A& a) { a.m = int64_t(1) << 30; a.lda = int64_t(1) << 33; }));
  // other arguments
  EXPECT_STATUS(Status::kErrorInvalidArgument, mutated(u4, [](A& a) { a.split_k = -1; }));
  EXPECT_STATUS(Status::kErrorInvalidArgument, mutated(u4, [](A& a) { a.mainloop = gemm::Mainloop(7); }));
  EXPECT_STATUS(Status::kErrorInvalidArgument,
                mutated(u4, [](A& a) { a.codebook_table = gemm::CodebookTable(3); }));
  EXPECT_STATUS(Status::kErrorInvalidArgument, mutated(u4, [](A& a) { a.sm_count = -1; }));
  EXPECT_STATUS(Status::kErrorInvalidArgument, mutated(u4, [](A& a) { a.max_smem_per_block = -1; }));
  // get_workspace_size of rejected arguments is 0
  gemm::Arguments bad = u4;
  bad.a = nullptr;
  bad.split_k = 4;
  EXPECT_EQ(gemm::get_workspace_size(bad), 0u);
}

TEST(GemmCanImplement, AcceptsEveryFormatGroupTypeAndOutput) {
  for (DType act : {kF16, kBF16})
    for (DType out : {act, kF32})
      for (Format f : kAllFormats)
        for (int g : kAllGroups)
          for (int64_t m : {1, 17, 1024}) {
            const int64_t k = g == kPC ? 4304 : 4096;
            SCOPED_TRACE(std::string(dtype_name(act)) + "->" + dtype_name(out) + " " + nibble::to_string(f) +
                         " " + group_name(g) + " M" + std::to_string(m));
            EXPECT_STATUS(Status::kSuccess, gemm::can_implement(fake_args(f, g, m, 2880, k, act, out)));
          }
}

TEST(GemmPlan, InvariantsOverManyShapesDevicesAndSplits) {
  const int64_t ms[] = {1, 2, 7, 8, 15, 16, 17, 31, 63, 64, 65, 127, 128, 129, 257, 1024, 4096, 65536};
  const RepackShape nks[] = {{16, 64, 32},     {2880, 2880, 64},   {4304, 4096, 128}, {7392, 4096, 256},
                             {11008, 4096, 128}, {4096, 14336, 128}, {4096, 11008, 256}, {256, 7392, 32},
                             {2880, 4304, kPC}, {1, 8, kPC},        {100, 200, kPC}};
  int failures = 0;
  auto fail = [&](const std::string& what) {
    if (++failures <= 10) ADD_FAILURE() << what;
  };
  for (int64_t m : ms)
    for (const RepackShape& nk : nks)
      for (int sms : {1, 78, 108, 132})
        for (int split : {0, 1, 2, 3, 7, 64, 100000})
          for (gemm::Mainloop ml : {gemm::Mainloop::kMmaSync, gemm::Mainloop::kTransposedMma}) {
          gemm::Arguments args = fake_args(kS4, nk.group, m, nk.n, nk.k);
          args.split_k = split;
          args.sm_count = sms;
          args.mainloop = ml;
          std::ostringstream name;
          name << "M" << m << "_N" << nk.n << "_K" << nk.k << " sm_count=" << sms << " split_k=" << split
               << " mainloop=" << mainloop_name(ml) << ": ";
          if (gemm::can_implement(args) != Status::kSuccess) {
            fail(name.str() + "rejected");
            continue;
          }
          const gemm::Plan p = gemm::make_plan(args, sms, ml);
          const bool t = ml == gemm::Mainloop::kTransposedMma;
          const gemm::TileKind kind =
              m <= 16 ? gemm::TileKind::kDecode
                      : (m <= 64    ? (t ? gemm::TileKind::kWgSmall : gemm::TileKind::kSmall)
                         : !t       ? gemm::TileKind::kLarge
                         : m <= 256 ? gemm::TileKind::kWgMid
                                    : gemm::TileKind::kWgLarge);
          const gemm::TileConfig c = gemm::tile_config(kind);
          const layout::GemmShape s = layout::make_gemm_shape(nk.n, nk.k, nk.group);
          const int64_t tiles = int64_t(p.tiles_m) * p.tiles_n;
          if (p.kind != kind) fail(name.str() + "tile kind");
          if (p.tiles_m != (m + c.tile_m() - 1) / c.tile_m()) fail(name.str() + "tiles_m");
          if (p.tiles_n != (s.n_pad + c.tile_n() - 1) / c.tile_n()) fail(name.str() + "tiles_n");
          if (p.k_tiles != (s.k_pad + c.tile_k() - 1) / c.tile_k()) fail(name.str() + "k_tiles");
          if (p.splits < 1 || p.splits > p.k_tiles) fail(name.str() + "splits out of [1, k_tiles]");
          if (int64_t(p.splits) * p.k_tiles_per_split < p.k_tiles) fail(name.str() + "splits do not cover K");
          if (int64_t(p.splits - 1) * p.k_tiles_per_split >= p.k_tiles) fail(name.str() + "an empty split");
          if (split > 0 && p.splits > split) fail(name.str() + "more splits than forced");
          if (split == 1 && p.splits != 1) fail(name.str() + "split_k = 1 must not split");
          if (split > 0 && split <= p.k_tiles && p.splits < 2 && split >= 2 && tiles <= gemm::kMaxSplitTiles)
            fail(name.str() + "forced split ignored");
          if (tiles > gemm::kMaxSplitTiles && p.splits != 1) fail(name.str() + "split beyond the counter region");
          if (split == 0 && p.splits > 1 && p.k_tiles_per_split < 2) fail(name.str() + "heuristic split < 2 k-tiles");
          if (split == 0 && tiles >= int64_t(sms) * 16 && p.splits != 1) fail(name.str() + "heuristic split a full wave");
          if (tiles * p.splits <= 0) fail(name.str() + "empty grid");
          // documented layout: the fixed counter region, then one fp32 tile of partials per (tile, split)
          const std::size_t ws = p.splits == 1 ? 0
                                               : gemm::kCounterBytes +
                                                     std::size_t(tiles) * p.splits * c.tile_m() * c.tile_n() * 4;
          if (p.workspace_bytes != ws) fail(name.str() + "workspace_bytes");
          if (gemm::get_workspace_size(args) != p.workspace_bytes) fail(name.str() + "get_workspace_size");
        }
  EXPECT_EQ(failures, 0);
}

TEST(GemmPlan, DecodeShapeSplitsKAndLargeShapeDoesNot) {
  gemm::Arguments decode = fake_args(kS4, 128, 1, 4096, 14336);
  decode.sm_count = 132;
  const gemm::Plan p = gemm::make_plan(decode, 132);
  EXPECT_EQ(int(p.kind), int(gemm::TileKind::kDecode));
  EXPECT_GT(p.splits, 1);
  EXPECT_GT(p.workspace_bytes, 0u);
  EXPECT_EQ(gemm::get_workspace_size(decode), p.workspace_bytes);
  std::printf("[nibble] plan M1_N4096_K14336 on 132 SMs: %d x %d tiles, %d k-tiles, %d splits of %d, %zu B\n",
              p.tiles_m, p.tiles_n, p.k_tiles, p.splits, p.k_tiles_per_split, p.workspace_bytes);
  gemm::Arguments large = fake_args(kS4, 128, 4096, 4096, 4096);
  large.sm_count = 132;
  const gemm::Plan q = gemm::make_plan(large, 132);
  EXPECT_EQ(int(q.kind), int(gemm::TileKind::kLarge));
  EXPECT_EQ(q.splits, 1);
  EXPECT_EQ(q.workspace_bytes, 0u);
  EXPECT_EQ(gemm::get_workspace_size(large), 0u);
}

// With a shared-memory limit (a 99 KiB GPU, or Arguments::max_smem_per_block) every M gets a tile that
// fits it, of the same family where one exists; without one, the plan is the heuristic's.
TEST(GemmPlan, CompactTilesWhereSharedMemoryIsShort) {
  constexpr int k99KiB = 99 * 1024;
  for (Format f : {kS4, kU4, kNf4, kFp4})
    for (int64_t m : {1, 16, 17, 64, 65, 256, 257, 4096})
      for (gemm::Mainloop ml : {gemm::Mainloop::kMmaSync, gemm::Mainloop::kTransposedMma}) {
        gemm::Arguments args = fake_args(f, 128, m, 4096, 4096);
        const gemm::TileKind wide = gemm::make_plan(args, 132, ml).kind;
        EXPECT_EQ(int(wide), int(gemm::choose_tile(m, ml, f)));
        for (int limit : {k99KiB, 227 * 1024}) {
          args.max_smem_per_block = limit;
          const gemm::Plan a = gemm::make_plan(args, 132, ml);
          args.max_smem_per_block = 0;
          const gemm::Plan b = gemm::make_plan(args, 132, ml, limit);  // the device's limit: the same plan
          const std::string name = std::string(to_string(f)) + " M=" + std::to_string(m) + " " +
                                   mainloop_name(ml) + " limit=" + std::to_string(limit);
          EXPECT_EQ(int(a.kind), int(b.kind)) << name;
          EXPECT_EQ(a.splits, b.splits) << name;
          const gemm::TileConfig c = gemm::tile_config(a.kind);
          EXPECT_LE(c.smem_bytes(), limit) << name;
          if (gemm::tile_config(wide).smem_bytes() <= limit) EXPECT_EQ(int(a.kind), int(wide)) << name;
          EXPECT_EQ(c.transposed, gemm::tile_config(wide).transposed) << name << ": same kernel family";
          if (!c.transposed) EXPECT_EQ(c.tile_m(), gemm::tile_config(wide).tile_m()) << name;
        }
      }
}

// nf4 / fp4 decode runs the tile with room for the 32-copy codebook table; its plan (split-K included)
// does not depend on which table was asked for, so both tables give bit-identical C.
TEST(GemmPlan, CodebookDecodeTileAndTableIndependentPlan) {
  const gemm::TileConfig d = gemm::tile_config(gemm::TileKind::kDecode);
  const gemm::TileConfig dc = gemm::tile_config(gemm::TileKind::kDecodeCodebook);
  EXPECT_EQ(dc.tile_m(), d.tile_m());
  EXPECT_EQ(dc.tile_n(), d.tile_n());
  EXPECT_EQ(dc.tile_k(), d.tile_k());
  EXPECT_EQ(dc.table_copies, 32);
  EXPECT_EQ(dc.table_bytes(), 32 * 1024);
  // two CTAs of it (table included) per SM of an H100 (227 KiB, 1 KiB reserved per CTA)
  EXPECT_LE(2 * (dc.smem_bytes() + dc.table_bytes() + 1024), 227 * 1024);
  for (Format f : {kS4, kU4, kNf4, kFp4})
    for (int64_t m : {1, 16, 17}) {
      gemm::Arguments args = fake_args(f, 64, m, 4096, 14336);
      args.sm_count = 132;
      const gemm::Plan p = gemm::make_plan(args, 132);
      const gemm::TileKind want = m > 16 ? gemm::TileKind::kSmall
                                         : (is_codebook(f) ? gemm::TileKind::kDecodeCodebook : gemm::TileKind::kDecode);
      EXPECT_EQ(int(p.kind), int(want)) << to_string(f) << " M=" << m;
      for (gemm::CodebookTable t : {gemm::CodebookTable::kSharedMemory, gemm::CodebookTable::kRegisters}) {
        args.codebook_table = t;
        const gemm::Plan q = gemm::make_plan(args, 132);
        EXPECT_EQ(int(q.kind), int(p.kind));
        EXPECT_EQ(q.splits, p.splits);
        EXPECT_EQ(q.k_tiles_per_split, p.k_tiles_per_split);
      }
    }
}

// can_implement promises "every int32 tile index in range"; run() launches dim3(unsigned(grid)) with
// grid = tiles_m * tiles_n * splits, so an accepted shape must have grid <= 2^31 - 1 (gridDim.x limit).
TEST(GemmPlan, EveryAcceptedShapeHasALaunchableGrid) {
  struct Case {
    int64_t m, n, k;
    int split_k;
  };
  const Case cases[] = {
      {int64_t(1) << 30, int64_t(1) << 30, 64, 0},        // 2^23 x 2^23 tiles: unsigned(grid) wraps to 0
      {int64_t(1) << 17, int64_t(1) << 13, int64_t(1) << 21, 1 << 15},  // 2^16 tiles x 2^15 splits = 2^31
  };
  for (const Case& c : cases) {
    gemm::Arguments args = fake_args(kS4, 64, c.m, c.n, c.k);
    args.split_k = c.split_k;
    args.sm_count = 132;
    const Status st = gemm::can_implement(args);
    if (st != Status::kSuccess) {
      EXPECT_STATUS(Status::kErrorSizeOverflow, st);
      continue;
    }
    const gemm::Plan p = gemm::make_plan(args, 132);
    const int64_t grid = int64_t(p.tiles_m) * p.tiles_n * p.splits;
    EXPECT_LE(grid, int64_t(std::numeric_limits<int>::max()))
        << "can_implement accepts M" << c.m << "_N" << c.n << "_K" << c.k << " split_k=" << c.split_k
        << " but its grid of " << grid << " CTAs cannot be launched (run() passes unsigned(grid))";
  }
}

// ================================== GPU: repack =============================================================

TEST(GemmRepack, DeviceMatchesHostBitForBit) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  std::vector<RepackShape> shapes(std::begin(kRepackShapes), std::end(kRepackShapes));
  if (!quick_mode()) shapes.push_back({2880, 4304, kPC});
  for (DType act : {kF16, kBF16})
    for (Format f : kAllFormats)
      for (DType plain_scale : {kF32, act})
        for (const RepackShape& sh : shapes) {
          SCOPED_TRACE(repack_label("repack", f, act, plain_scale, sh));
          const HostWeights w = make_weights(rng, f, sh.group, sh.n, sh.k, plain_scale, Data::kRandom, 5);
          const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(f, sh.n, sh.k, sh.group, act);
          HostGemmBuffers host(b, b.zeros);
          GemmWeights hv;
          NIBBLE_CHECK(nibble::repack_host(w.view(w.codes.data(), w.scales.data(), w.zeros.data()), act,
                                           host.codes.data(), host.scales.data(), host.zeros.data(), &hv));
          DevBuf pc = to_device(w.codes), ps = to_device(w.scales), pz = to_device(w.zeros);
          DevBuf dc(b.codes), ds(b.scales), dz(b.zeros);
          CUDA_CHECK(cudaMemset(dc.get(), 0xCD, b.codes));
          CUDA_CHECK(cudaMemset(ds.get(), 0xCD, b.scales));
          if (b.zeros > 0) CUDA_CHECK(cudaMemset(dz.get(), 0xCD, b.zeros));
          CUDA_CHECK(cudaDeviceSynchronize());
          Stream stream;
          GemmWeights dv;
          NIBBLE_CHECK(nibble::repack(w.view(pc.get(), ps.get(), pz.get()), act, dc.get(), ds.get(), dz.get(),
                                      &dv, stream.s));
          CUDA_CHECK(cudaStreamSynchronize(stream.s));
          CUDA_CHECK(cudaGetLastError());
          const std::vector<uint8_t> codes = dc.download<uint8_t>(), scales = ds.download<uint8_t>(),
                                     zeros = dz.download<uint8_t>();
          EXPECT_TRUE(std::equal(codes.begin(), codes.end(), host.codes.begin())) << "codes differ";
          EXPECT_TRUE(std::equal(scales.begin(), scales.end(), host.scales.begin())) << "scales differ";
          EXPECT_TRUE(std::equal(zeros.begin(), zeros.end(), host.zeros.begin())) << "zero points differ";
          EXPECT_EQ(dv.format, hv.format);
          EXPECT_EQ(dv.group_size, hv.group_size);
          EXPECT_EQ(dv.n, hv.n);
          EXPECT_EQ(dv.k, hv.k);
          EXPECT_EQ(dv.scale_type, act);
          EXPECT_EQ(static_cast<const void*>(dv.codes), dc.get());
          EXPECT_EQ(dv.scales, static_cast<const void*>(ds.get()));
          EXPECT_EQ(static_cast<const void*>(dv.zeros), f == kU4 ? dz.get() : nullptr);
        }
}

// ================================== GPU: the warp-level building block ======================================

// One warp, one 16 x 64 atom, group 32 (the scale row changes between k-steps 1 and 2): the usage of
// gemm/warp_mma.cuh. Writes the dequantized fragments, C = A * W^T (16 x 16) and whether the 16-byte
// lane load and the 32-bit word load agree.
template <class T, Format F>
__global__ void one_atom_kernel(const uint8_t* atom, const T* scales, const uint8_t* zeros, const T* a,
                                float* c, uint32_t* frags, int* word_mismatch) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const layout::GemmShape s = layout::make_gemm_shape(16, 64, 32);
  const auto ctx = gemm::DequantContext<F, T>::make();
  const uint4 slice = gemm::load_atom_lane(atom, lane);
  auto pair = [&](int row, int k) { return *reinterpret_cast<const uint32_t*>(a + row * 64 + k); };
  float acc[2][4] = {};
  for (int j = 0; j < 4; ++j) {
    const uint32_t word = gemm::load_atom_word(atom, lane, j);
    if (word != gemm::atom_word(slice, j)) atomicAdd(word_mismatch, 1);
    gemm::ColumnPairQuant<T> q{scales[layout::scale_index(s, g, 16 * j)],
                               scales[layout::scale_index(s, g + 8, 16 * j)]};
    if (zeros != nullptr) {
      q.zero_lo = zeros[layout::scale_index(s, g, 16 * j)];
      q.zero_hi = zeros[layout::scale_index(s, g + 8, 16 * j)];
    }
    uint32_t b[4];
    gemm::dequant_fragments<T, F>(word, q, ctx, b);
    for (int p = 0; p < 4; ++p) frags[(lane * 4 + j) * 4 + p] = b[p];
    const uint32_t af[4] = {pair(g, 16 * j + 2 * t), pair(g + 8, 16 * j + 2 * t), pair(g, 16 * j + 2 * t + 8),
                            pair(g + 8, 16 * j + 2 * t + 8)};
    gemm::mma_atom_step<T>(acc, af, b);
  }
  for (int h = 0; h < 2; ++h)
    for (int r = 0; r < 4; ++r) c[(g + 8 * (r / 2)) * 16 + 8 * h + 2 * t + r % 2] = acc[h][r];
}

template <class T>
void launch_one_atom(Format f, const uint8_t* atom, const void* scales, const uint8_t* zeros, const void* a,
                     float* c, uint32_t* frags, int* mismatch) {
  const T* s = static_cast<const T*>(scales);
  const T* x = static_cast<const T*>(a);
  switch (f) {
    case Format::kS4: one_atom_kernel<T, Format::kS4><<<1, 32>>>(atom, s, zeros, x, c, frags, mismatch); break;
    case Format::kU4: one_atom_kernel<T, Format::kU4><<<1, 32>>>(atom, s, zeros, x, c, frags, mismatch); break;
    case Format::kNf4: one_atom_kernel<T, Format::kNf4><<<1, 32>>>(atom, s, zeros, x, c, frags, mismatch); break;
    case Format::kFp4: one_atom_kernel<T, Format::kFp4><<<1, 32>>>(atom, s, zeros, x, c, frags, mismatch); break;
  }
  CUDA_CHECK(cudaGetLastError());
}

void check_one_atom(DType act) {
  auto rng = nibble_test_rng();
  for (Format f : kAllFormats)
    for (Data data : {Data::kExact, Data::kRandom}) {
      SCOPED_TRACE(std::string("GemmWarpMma_") + dtype_name(act) + "_" + nibble::to_string(f) + "_g32 " +
                   (data == Data::kExact ? "small integers, power-of-two scales" : "random normal"));
      const HostWeights w = make_weights(rng, f, 32, 16, 64, act, data);
      const HostProblem p = make_problem(rng, act, w, 16, data);
      const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(f, 16, 64, 32, act);
      HostGemmBuffers host(b, b.zeros);
      GemmWeights view;
      NIBBLE_CHECK(nibble::repack_host(w.view(w.codes.data(), w.scales.data(), w.zeros.data()), act,
                                       host.codes.data(), host.scales.data(), host.zeros.data(), &view));
      host.codes.resize(b.codes);
      host.scales.resize(b.scales);
      host.zeros.resize(b.zeros);
      DevBuf atom = to_device(host.codes), scales = to_device(host.scales), zeros = to_device(host.zeros);
      DevBuf a = to_device(p.a), c(16 * 16 * 4), frags(32 * 4 * 4 * 4), mismatch(sizeof(int));
      CUDA_CHECK(cudaMemset(c.get(), 0xFF, c.size()));
      CUDA_CHECK(cudaMemset(frags.get(), 0xFF, frags.size()));
      CUDA_CHECK(cudaMemset(mismatch.get(), 0, sizeof(int)));
      const uint8_t* z = f == kU4 ? zeros.as<uint8_t>() : nullptr;
      if (act == kF16)
        launch_one_atom<__half>(f, atom.as<uint8_t>(), scales.get(), z, a.get(), c.as<float>(),
                                frags.as<uint32_t>(), mismatch.as<int>());
      else
        launch_one_atom<__nv_bfloat16>(f, atom.as<uint8_t>(), scales.get(), z, a.get(), c.as<float>(),
                                       frags.as<uint32_t>(), mismatch.as<int>());
      CUDA_CHECK(cudaDeviceSynchronize());
      EXPECT_EQ(mismatch.download<int>()[0], 0) << "load_atom_lane / atom_word disagree with load_atom_word";

      // Dequantized fragments: value 2p + h of word j of lane l is weight atom_coord(l, j, 2p + h); the
      // kernel's one rounding of (code value in T) * (scale in T) to T, bit for bit.
      const std::vector<uint32_t> fr = frags.download<uint32_t>();
      std::vector<double> wt(16 * 64, 0.0);  // the dequantized weights the mma saw
      int bad = 0;
      std::string first;
      for (int lane = 0; lane < 32; ++lane)
        for (int j = 0; j < 4; ++j)
          for (int i = 0; i < 8; ++i) {
            const layout::AtomCoord at = layout::atom_coord(lane, j, i);
            const int64_t g = w.group_of(at.k);
            const double v = code_value(f, act, w.code(at.n, at.k)) - w.zero(at.n, g);
            const uint16_t want = to_bits(act, float(v * t_round(act, w.scale(at.n, g))));
            const uint16_t got = uint16_t(fr[std::size_t((lane * 4 + j) * 4 + i / 2)] >> (16 * (i % 2)));
            wt[std::size_t(at.n * 64 + at.k)] = from_bits(act, got);
            if (got != want && bad++ == 0) {
              char buf[96];
              std::snprintf(buf, sizeof(buf), "n%d k%d: got 0x%04x, want 0x%04x", at.n, at.k, got, want);
              first = buf;
            }
          }
      EXPECT_EQ(bad, 0) << "dequant_fragments differs from (code value * scale) rounded to T; first " << first;

      // C = A * W^T against float64 from the same fragments: exact for the exact data of s4 / u4, else
      // within fp32 accumulation error.
      const std::vector<float> c_got = c.download<float>();
      int bad_c = 0;
      for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 16; ++n) {
          double ref = 0.0, mag = 0.0;
          for (int k = 0; k < 64; ++k) {
            const double t = double(from_bits(act, p.a[std::size_t(m * 64 + k)])) * wt[std::size_t(n * 64 + k)];
            ref += t;
            mag += std::fabs(t);
          }
          const float got = c_got[std::size_t(m * 16 + n)];
          const bool ok = p.exact() ? got == float(ref) : std::fabs(got - ref) <= 1e-4 * mag + 1e-30;
          if (!ok && bad_c++ < 3)
            ADD_FAILURE() << "C[" << m << ", " << n << "] = " << got << ", reference " << ref;
        }
      EXPECT_EQ(bad_c, 0) << "mma_atom_step result";
    }
}

TEST(GemmWarpMma, OneAtomF16AllFormats) {
  NIBBLE_REQUIRE_GPU();
  check_one_atom(kF16);
}

TEST(GemmWarpMma, OneAtomBF16AllFormats) {
  NIBBLE_REQUIRE_GPU();
  check_one_atom(kBF16);
}

// The shared-memory codebook table (what the library kernels use for nf4 / fp4) against the register
// table (the public building block): every word in `words` decodes to the same bits through both, with
// 16 and 32 interleaved copies of the table.
template <class T, Format F, int kCopies>
__global__ void smem_codebook_kernel(const uint32_t* words, int n, uint32_t* out_smem, uint32_t* out_regs) {
  __shared__ __align__(16) unsigned char table[gemm::smem_codebook_bytes(kCopies)];
  gemm::fill_smem_codebook<F, T, kCopies>(table, threadIdx.x, blockDim.x);
  __syncthreads();
  const auto smem_ctx = gemm::SmemCodebookContext<F, T, kCopies>::make(table, threadIdx.x % 32);
  const auto reg_ctx = gemm::DequantContext<F, T>::make();
  const gemm::ColumnPairQuant<T> q{};
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    uint32_t a[4], b[4];
    gemm::decode_fragments<T, F>(words[i], q, smem_ctx, a);
    gemm::decode_fragments<T, F>(words[i], q, reg_ctx, b);
    for (int p = 0; p < 4; ++p) {
      out_smem[i * 4 + p] = a[p];
      out_regs[i * 4 + p] = b[p];
    }
  }
}

template <class T, Format F, int kCopies>
void check_smem_codebook() {
  // Every byte value in every byte position (words b * 0x01010101), then random words.
  std::vector<uint32_t> words;
  for (uint32_t b = 0; b < 256; ++b) words.push_back(b * 0x01010101u);
  auto rng = nibble_test_rng();
  for (int i = 0; i < 4096; ++i) words.push_back(uint32_t(rng()));
  const int n = int(words.size());
  DevBuf dw(words.size() * 4), ds(words.size() * 16), dr(words.size() * 16);
  CUDA_CHECK(cudaMemcpy(dw.get(), words.data(), words.size() * 4, cudaMemcpyHostToDevice));
  smem_codebook_kernel<T, F, kCopies><<<1, 256>>>(dw.as<uint32_t>(), n, ds.as<uint32_t>(), dr.as<uint32_t>());
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<uint32_t> got = ds.download<uint32_t>(), want = dr.download<uint32_t>();
  int64_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i] && bad++ < 3)
      ADD_FAILURE() << kCopies << " copies, word " << std::hex << words[i / 4] << " pair " << (i % 4) << ": table " << got[i]
                    << ", registers " << want[i];
  EXPECT_EQ(bad, 0);
}

TEST(GemmWarpMma, SharedMemoryCodebookMatchesRegisterTable) {
  NIBBLE_REQUIRE_GPU();
  check_smem_codebook<__half, kNf4, 16>();
  check_smem_codebook<__half, kFp4, 16>();
  check_smem_codebook<__nv_bfloat16, kNf4, 16>();
  check_smem_codebook<__nv_bfloat16, kFp4, 16>();
  check_smem_codebook<__half, kNf4, 32>();
  check_smem_codebook<__half, kFp4, 32>();
  check_smem_codebook<__nv_bfloat16, kNf4, 32>();
  check_smem_codebook<__nv_bfloat16, kFp4, 32>();
}

// ================================== GPU: gemm::run oracles ===================================================

/// All groups x the given formats, M in {1, 17, 130} (decode, the 64- and 128-token transposed / the
/// mma.sync small and large tiles; quick mode 70 instead of 130), N = 300 (a partial atom and a partial
/// tile), out fp32 and T, bias on / off. The 256-token tile: EdgeShapes and LeadingDimensions (M > 256).
void oracle_sweep(DType act, std::initializer_list<Format> formats, Data data) {
  auto rng = nibble_test_rng();
  const bool quick = quick_mode();
  const int64_t n = quick ? 100 : 300;
  const std::vector<int64_t> ms = quick ? std::vector<int64_t>{1, 17, 70} : std::vector<int64_t>{1, 17, 130};
  int index = 0;
  for (Format f : formats)
    for (int g : kAllGroups) {
      const HostWeights w = make_weights(rng, f, g, n, k_for_group(g), act, data);
      const DeviceWeights dw = upload_and_repack(w, act);
      for (int64_t m : ms) {
        const HostProblem p = make_problem(rng, act, w, m, data);
        const DeviceActs da = upload_acts(p);
        const Samples s = reference(p, rng);
        for (gemm::Mainloop ml : mainloops_for(m)) {
          ++index;
          if (quick) {  // one output type per case
            RunOpts o;
            o.out = index % 2 ? act : kF32;
            o.bias = index % 3 == 0;
            o.mainloop = ml;
            run_and_check(p, dw, da, s, o);
            continue;
          }
          for (DType out : {kF32, act}) {
            RunOpts o;
            o.out = out;
            o.bias = out == kF32;
            o.mainloop = ml;
            run_and_check(p, dw, da, s, o);
          }
        }
      }
    }
}

TEST(Gemm_f16, BitExactS4U4AllGroups) {
  NIBBLE_REQUIRE_GPU();
  oracle_sweep(kF16, {kS4, kU4}, Data::kExact);
}

TEST(Gemm_bf16, BitExactS4U4AllGroups) {
  NIBBLE_REQUIRE_GPU();
  oracle_sweep(kBF16, {kS4, kU4}, Data::kExact);
}

TEST(Gemm_f16, StatisticalAllFormatsAllGroups) {
  NIBBLE_REQUIRE_GPU();
  oracle_sweep(kF16, {kS4, kU4, kNf4, kFp4}, Data::kRandom);
}

TEST(Gemm_bf16, StatisticalAllFormatsAllGroups) {
  NIBBLE_REQUIRE_GPU();
  oracle_sweep(kBF16, {kS4, kU4, kNf4, kFp4}, Data::kRandom);
}

// ================================== GPU: edge shapes =========================================================

TEST(Gemm_EdgeShapes, EveryMWithOneWeight) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  const bool quick = quick_mode();
  const int64_t n = quick ? 272 : 2880, k = quick ? 576 : 2880;
  const std::vector<int64_t> ms = quick ? std::vector<int64_t>{1, 2, 7, 8, 15, 16, 17, 31, 64, 65, 127, 128, 129}
                                        : std::vector<int64_t>{1, 2, 7, 8, 15, 16, 17, 31, 64, 127, 128, 257, 1024};
  struct Config {
    DType act;
    Format f;
    int group;
    Data data;
  };
  const Config configs[] = {{kF16, kS4, 64, Data::kExact}, {kBF16, kNf4, 32, Data::kRandom}};
  for (const Config& cfg : configs) {
    const HostWeights w = make_weights(rng, cfg.f, cfg.group, n, k, cfg.act, cfg.data);
    const DeviceWeights dw = upload_and_repack(w, cfg.act);
    for (std::size_t i = 0; i < ms.size(); ++i) {
      const HostProblem p = make_problem(rng, cfg.act, w, ms[i], cfg.data);
      const DeviceActs da = upload_acts(p);
      const Samples s = reference(p, rng);
      for (gemm::Mainloop ml : mainloops_for(ms[i])) {
        RunOpts o;
        o.out = i % 2 ? cfg.act : kF32;
        o.bias = i % 3 != 1;
        o.mainloop = ml;
        run_and_check(p, dw, da, s, o);
      }
    }
  }
}

TEST(Gemm_EdgeShapes, ModelShapesAtM1M17M257) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  struct Config {
    int64_t n, k;
    int group;
    Format f;
    DType act;
  };
  const std::vector<Config> configs =
      quick_mode() ? std::vector<Config>{{144, 736, 32, kNf4, kBF16}, {80, 264, kPC, kS4, kF16},
                                         {200, 512, 256, kU4, kBF16}}
                   : std::vector<Config>{{2880, 2880, 64, kS4, kF16},    {4304, 4096, 128, kU4, kBF16},
                                         {7392, 4096, 256, kNf4, kF16},  {11008, 4096, 128, kFp4, kBF16},
                                         {4096, 14336, 128, kS4, kBF16}, {4096, 11008, 256, kU4, kF16},
                                         {256, 7392, 32, kNf4, kBF16},   {2880, 4304, kPC, kS4, kF16}};
  const int64_t ms[] = {1, 17, 257};
  for (const Config& cfg : configs) {
    const Data data = cfg.f == kS4 || cfg.f == kU4 ? Data::kExact : Data::kRandom;
    const HostWeights w = make_weights(rng, cfg.f, cfg.group, cfg.n, cfg.k, cfg.act, data);
    const DeviceWeights dw = upload_and_repack(w, cfg.act);
    for (int64_t m : ms) {
      const HostProblem p = make_problem(rng, cfg.act, w, m, data);
      const DeviceActs da = upload_acts(p);
      const Samples s = reference(p, rng);
      for (gemm::Mainloop ml : mainloops_for(m)) {
        RunOpts o;
        o.out = m == 17 ? kF32 : cfg.act;
        o.bias = m != 1;
        o.mainloop = ml;
        run_and_check(p, dw, da, s, o);
      }
    }
  }
}

TEST(Gemm_EdgeShapes, LeadingDimensionsOffsetsAndPoisonOutsideTheView) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  const bool quick = quick_mode();
  struct Config {
    DType act;
    Format f;
    int group;
    int64_t k;
    Data data;
  };
  const Config configs[] = {{kF16, kS4, 128, quick ? 384 : 1024, Data::kExact},
                            {kBF16, kU4, 64, quick ? 320 : 1088, Data::kExact},
                            {kF16, kNf4, kPC, quick ? 200 : 1000, Data::kRandom},
                            {kBF16, kFp4, 32, quick ? 224 : 992, Data::kRandom}};
  const int64_t n = quick ? 100 : 300;
  struct View {
    int64_t lda_pad, ldc_pad, c_offset;
    bool bias, out_f32;
  };
  const View views[] = {{8, 5, 0, true, true},    // odd ldc: no pair stores
                        {24, 12, 1, false, false},  // C at an odd element: no pair stores
                        {8, 0, 3, true, false},
                        {0, 1, 1, true, true}};
  for (const Config& cfg : configs) {
    const HostWeights w = make_weights(rng, cfg.f, cfg.group, n, cfg.k, cfg.act, cfg.data);
    const DeviceWeights dw = upload_and_repack(w, cfg.act);
    for (int64_t m : {1, 17, 130, 300})
      for (const View& v : views) {
        const HostProblem p = make_problem(rng, cfg.act, w, m, cfg.data, v.lda_pad);
        const DeviceActs da = upload_acts(p);
        const Samples s = reference(p, rng);
        for (gemm::Mainloop ml : mainloops_for(m)) {
          RunOpts o;
          o.out = v.out_f32 ? kF32 : cfg.act;
          o.bias = v.bias;
          o.ldc_pad = v.ldc_pad;
          o.c_offset = v.c_offset;
          o.mainloop = ml;
          SCOPED_TRACE("lda=" + std::to_string(p.lda));
          run_and_check(p, dw, da, s, o);
        }
      }
  }
}

// ================================== GPU: split-K, determinism, graphs, workspace =============================

TEST(Gemm_SplitK, ForcedSplitsAndHeuristicGiveIdenticalC) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  struct Config {
    int64_t m, n, k;
    int group;
    Format f;
    DType act;
    Data data;
  };
  const std::vector<Config> configs =
      quick_mode()
          ? std::vector<Config>{{1, 256, 2048, 128, kS4, kF16, Data::kExact},
                                {17, 160, 1024, 64, kU4, kBF16, Data::kExact},
                                {130, 96, 992, 32, kS4, kBF16, Data::kExact},
                                {3, 128, 1024, 64, kNf4, kF16, Data::kRandom}}
          : std::vector<Config>{{1, 4096, 14336, 128, kS4, kF16, Data::kExact},
                                {17, 2880, 2880, 64, kU4, kBF16, Data::kExact},
                                {257, 256, 7392, 32, kS4, kBF16, Data::kExact},
                                {5, 4304, 4096, kPC, kU4, kF16, Data::kExact},
                                {3, 1024, 4096, 64, kNf4, kF16, Data::kRandom},
                                {40, 512, 4096, 128, kFp4, kBF16, Data::kRandom}};
  for (const Config& cfg : configs) {
    const HostWeights w = make_weights(rng, cfg.f, cfg.group, cfg.n, cfg.k, cfg.act, cfg.data);
    const DeviceWeights dw = upload_and_repack(w, cfg.act);
    const HostProblem p = make_problem(rng, cfg.act, w, cfg.m, cfg.data);
    const DeviceActs da = upload_acts(p);
    const Samples s = reference(p, rng);
    for (gemm::Mainloop ml : mainloops_for(cfg.m))
    for (DType out : {kF32, cfg.act}) {
      std::vector<uint8_t> first;
      for (int split : {1, 2, 3, 7, 0}) {
        RunOpts o;
        o.out = out;
        o.bias = true;
        o.split_k = split;
        o.mainloop = ml;
        const RunResult r = run_and_check(p, dw, da, s, o);
        SCOPED_TRACE(p.name() + " " + o.name());
        if (split > 1 && r.plan.k_tiles >= split) {
          EXPECT_GE(r.plan.splits, 2) << "forced split_k ignored";
          EXPECT_GT(r.plan.workspace_bytes, 0u);
        }
        if (split == 0 && out == kF32)
          std::printf("[nibble] %s: heuristic %d split(s) of %d k-tiles\n", p.name().c_str(), r.plan.splits,
                      r.plan.k_tiles_per_split);
        if (split == 1) {
          first = r.c;
        } else if (p.exact()) {  // exact sums: every split order gives the same C
          EXPECT_TRUE(r.c == first) << "C with split_k=" << split << " differs from split_k=1";
        }
      }
    }
  }
}

TEST(Gemm_SplitK, RepeatedRunsOnRandomDataAreBitIdentical) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  const bool quick = quick_mode();
  const HostWeights w = make_weights(rng, kFp4, 64, quick ? 128 : 2048, quick ? 1024 : 8192, kBF16, Data::kRandom);
  const DeviceWeights dw = upload_and_repack(w, kBF16);
  for (int64_t m : {1, 33}) {
    const HostProblem p = make_problem(rng, kBF16, w, m, Data::kRandom);
    const DeviceActs da = upload_acts(p);
    RunOpts o;
    o.split_k = 5;
    SCOPED_TRACE(p.name() + " " + o.name());
    DevBuf c(std::size_t(m * p.n() * 4));
    const gemm::Arguments args = make_args(p, dw, da, o, c.get());
    const std::size_t ws_bytes = gemm::get_workspace_size(args);
    ASSERT_GT(ws_bytes, 0u);
    DevBuf ws(ws_bytes);
    CUDA_CHECK(cudaMemset(ws.get(), 0, ws_bytes));
    CUDA_CHECK(cudaDeviceSynchronize());
    Stream stream;
    std::vector<float> first;
    for (int rep = 0; rep < 4; ++rep) {
      CUDA_CHECK(cudaMemsetAsync(c.get(), 0xFF, c.size(), stream.s));
      NIBBLE_CHECK(gemm::run(args, ws.get(), ws_bytes, stream.s));
      CUDA_CHECK(cudaStreamSynchronize(stream.s));
      const std::vector<float> got = c.download<float>();
      if (rep == 0) first = got;
      EXPECT_EQ(std::memcmp(got.data(), first.data(), c.size()), 0) << "run " << rep << " differs from run 0";
    }
    expect_workspace_clean(ws, plan_of(args), "after four runs");
  }
}

TEST(Gemm_Graph, OneGraphWithSeveralSplitKRunsReplaysIdentically) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  const bool quick = quick_mode();
  const HostWeights w = make_weights(rng, kS4, 128, quick ? 256 : 4096, quick ? 2048 : 4096, kF16, Data::kExact);
  const DeviceWeights dw = upload_and_repack(w, kF16);
  const HostProblem p1 = make_problem(rng, kF16, w, 1, Data::kExact);
  const HostProblem p2 = make_problem(rng, kF16, w, 37, Data::kExact);
  const DeviceActs d1 = upload_acts(p1), d2 = upload_acts(p2);
  RunOpts o;
  o.split_k = 3;
  o.bias = true;
  DevBuf c1(std::size_t(p1.m * p1.n() * 4)), c2(std::size_t(p2.m * p2.n() * 4));
  const gemm::Arguments a1 = make_args(p1, dw, d1, o, c1.get()), a2 = make_args(p2, dw, d2, o, c2.get());
  // Each GEMM its own workspace; the first one runs twice per graph launch on the same workspace.
  const std::size_t b1 = gemm::get_workspace_size(a1), b2 = gemm::get_workspace_size(a2);
  ASSERT_GT(b1, 0u);
  ASSERT_GT(b2, 0u);
  DevBuf ws1(b1), ws2(b2);
  CUDA_CHECK(cudaMemset(ws1.get(), 0, b1));
  CUDA_CHECK(cudaMemset(ws2.get(), 0, b2));
  CUDA_CHECK(cudaDeviceSynchronize());
  Stream stream;
  NIBBLE_CHECK(gemm::run(a1, ws1.get(), b1, stream.s));
  NIBBLE_CHECK(gemm::run(a2, ws2.get(), b2, stream.s));
  CUDA_CHECK(cudaStreamSynchronize(stream.s));
  const std::vector<uint8_t> e1 = c1.download<uint8_t>(), e2 = c2.download<uint8_t>();
  GraphExec g;
  capture(stream.s, g, [&](cudaStream_t s) {
    NIBBLE_RETURN_IF_ERROR(gemm::run(a1, ws1.get(), b1, s));
    NIBBLE_RETURN_IF_ERROR(gemm::run(a2, ws2.get(), b2, s));
    return gemm::run(a1, ws1.get(), b1, s);
  });
  for (int rep = 0; rep < 3; ++rep) {
    CUDA_CHECK(cudaMemsetAsync(c1.get(), 0xFF, c1.size(), stream.s));
    CUDA_CHECK(cudaMemsetAsync(c2.get(), 0xFF, c2.size(), stream.s));
    CUDA_CHECK(cudaGraphLaunch(g.exec, stream.s));
    CUDA_CHECK(cudaStreamSynchronize(stream.s));
    EXPECT_TRUE(c1.download<uint8_t>() == e1) << "graph replay " << rep << ": first GEMM differs";
    EXPECT_TRUE(c2.download<uint8_t>() == e2) << "graph replay " << rep << ": second GEMM differs";
  }
  expect_workspace_clean(ws1, plan_of(a1), "after graph replays");
  expect_workspace_clean(ws2, plan_of(a2), "after graph replays");
  // And both outputs are right.
  const Samples s1 = reference(p1, rng), s2 = reference(p2, rng);
  RunResult r1, r2;
  r1.c = e1;
  r1.ldc = p1.n();
  r1.total = p1.m * p1.n();
  r2.c = e2;
  r2.ldc = p2.n();
  r2.total = p2.m * p2.n();
  check_c(p1, s1, o, r1);
  check_c(p2, s2, o, r2);
}

// gemm.cuh: one workspace of the largest size, zeroed once, serves every GEMM of a model (the usual
// one-buffer-for-all-layers pattern). Run a GEMM with large split-K partials, then a smaller GEMM on the same
// workspace: its result must not change and the counter region must be zero afterwards.
TEST(Gemm_Workspace, OneZeroedWorkspaceServesGemmsOfDifferentShapes) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  const bool quick = quick_mode();
  const HostWeights w = make_weights(rng, kS4, 128, quick ? 512 : 4096, quick ? 2048 : 4096, kF16, Data::kExact);
  const DeviceWeights dw = upload_and_repack(w, kF16);
  const HostProblem small = make_problem(rng, kF16, w, 1, Data::kExact);   // decode tile: small partials
  const HostProblem big = make_problem(rng, kF16, w, 64, Data::kExact);    // 64-row tile: 4x the partials
  const DeviceActs ds = upload_acts(small), db = upload_acts(big);
  RunOpts o;
  o.split_k = 3;
  DevBuf cs(std::size_t(small.m * small.n() * 4)), cb(std::size_t(big.m * big.n() * 4));
  const gemm::Arguments as = make_args(small, dw, ds, o, cs.get()), ab = make_args(big, dw, db, o, cb.get());
  const gemm::Plan ps = plan_of(as), pb = plan_of(ab);
  ASSERT_GT(ps.splits, 1);
  ASSERT_GT(pb.splits, 1);
  ASSERT_GT(pb.workspace_bytes, ps.workspace_bytes) << "test setup: the big GEMM needs more workspace";
  const std::size_t bytes = std::max(ps.workspace_bytes, pb.workspace_bytes);
  DevBuf ws(bytes);
  CUDA_CHECK(cudaMemset(ws.get(), 0, bytes));
  CUDA_CHECK(cudaMemset(cs.get(), 0xFF, cs.size()));
  CUDA_CHECK(cudaDeviceSynchronize());
  NIBBLE_CHECK(gemm::run(ab, ws.get(), bytes, nullptr));
  NIBBLE_CHECK(gemm::run(as, ws.get(), bytes, nullptr));
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaGetLastError());
  const Samples ss = reference(small, rng), sb = reference(big, rng);
  RunResult rs, rb;
  rs.c = cs.download<uint8_t>();
  rs.ldc = small.n();
  rs.total = small.n();
  rb.c = cb.download<uint8_t>();
  rb.ldc = big.n();
  rb.total = big.m * big.n();
  {
    SCOPED_TRACE(big.name() + " split_k=3, first on the shared workspace");
    check_c(big, sb, o, rb);
  }
  {
    SCOPED_TRACE(small.name() + " split_k=3, second on the shared workspace");
    check_c(small, ss, o, rs);
    expect_workspace_clean(ws, ps, "after the second GEMM");
  }
}

TEST(Gemm_Workspace, TooSmallNullOrMisalignedWorkspaceIsRejectedBeforeAnyLaunch) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  const bool quick = quick_mode();
  const HostWeights w = make_weights(rng, kU4, 128, quick ? 256 : 4096, quick ? 4096 : 14336, kF16, Data::kExact);
  const DeviceWeights dw = upload_and_repack(w, kF16);
  const HostProblem p = make_problem(rng, kF16, w, 1, Data::kExact);
  const DeviceActs da = upload_acts(p);
  RunOpts o;
  o.split_k = 4;
  DevBuf c(std::size_t(p.n() * 4));
  CUDA_CHECK(cudaMemset(c.get(), 0xFF, c.size()));
  const gemm::Arguments args = make_args(p, dw, da, o, c.get());
  const std::size_t need = gemm::get_workspace_size(args);
  ASSERT_GT(need, 0u);
  DevBuf ws(need + 16);
  CUDA_CHECK(cudaMemset(ws.get(), 0, need + 16));
  CUDA_CHECK(cudaDeviceSynchronize());
  EXPECT_STATUS(Status::kErrorWorkspaceTooSmall, gemm::run(args, nullptr, 0, nullptr));
  EXPECT_STATUS(Status::kErrorWorkspaceTooSmall, gemm::run(args, nullptr, need, nullptr));
  EXPECT_STATUS(Status::kErrorWorkspaceTooSmall, gemm::run(args, ws.get(), need - 1, nullptr));
  EXPECT_STATUS(Status::kErrorMisalignedPointer, gemm::run(args, ws.as<char>() + 4, need, nullptr));
  gemm::Arguments bad = args;
  bad.a = nullptr;
  EXPECT_STATUS(Status::kErrorNullPointer, gemm::run(bad, ws.get(), need, nullptr));  // can_implement first
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<uint32_t> untouched = c.download<uint32_t>();
  EXPECT_TRUE(std::all_of(untouched.begin(), untouched.end(), [](uint32_t x) { return x == 0xFFFFFFFFu; }))
      << "a rejected run() wrote C";
  // A larger workspace than needed is fine, and split_k = 1 needs none.
  EXPECT_STATUS(Status::kSuccess, gemm::run(args, ws.get(), need + 16, nullptr));
  gemm::Arguments one = args;
  one.split_k = 1;
  EXPECT_EQ(gemm::get_workspace_size(one), 0u);
  EXPECT_STATUS(Status::kSuccess, gemm::run(one, nullptr, 0, nullptr));
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(cudaGetLastError());
  expect_workspace_clean(ws, plan_of(args), "after a run with a larger workspace");
  const Samples s = reference(p, rng);
  RunResult r;
  r.c = c.download<uint8_t>();
  r.ldc = p.n();
  r.total = p.n();
  check_c(p, s, o, r);
}

}  // namespace

// ================================== GPU: which mainloops run here ===========================================

TEST(Gemm_Wgmma, AvailableWhereBuiltForSm90aOnSm90) {
  NIBBLE_REQUIRE_GPU();
  int dev = 0, major = 0, minor = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
#if defined(NIBBLE_SM90A)
  if (major != 9 || minor != 0) GTEST_SKIP() << "SKIPPED: wgmma needs an sm_90 device; this is sm_" << major << minor;
  EXPECT_TRUE(gemm::wgmma_available());
  EXPECT_EQ(int(gemm::resolve_mainloop(gemm::Mainloop::kAuto)), int(gemm::Mainloop::kWgmma));
#else
  EXPECT_FALSE(gemm::wgmma_available());
  GTEST_SKIP() << "SKIPPED: built without sm_90a device code (NIBBLE_SM90A undefined): the wgmma cases do not run";
#endif
}

TEST(Gemm_Wgmma, ForcedWhereUnavailableIsRejected) {
  NIBBLE_REQUIRE_GPU();
  if (gemm::wgmma_available()) GTEST_SKIP() << "SKIPPED: wgmma is available here (its oracles run instead)";
  auto rng = nibble_test_rng();
  const HostWeights w = make_weights(rng, kS4, 128, 64, 256, kF16, Data::kExact);
  const DeviceWeights dw = upload_and_repack(w, kF16);
  const HostProblem p = make_problem(rng, kF16, w, 32, Data::kExact);
  const DeviceActs da = upload_acts(p);
  DevBuf c(std::size_t(p.m * p.n()) * 4);
  RunOpts o;
  o.mainloop = gemm::Mainloop::kWgmma;
  const gemm::Arguments args = make_args(p, dw, da, o, c.get());
  EXPECT_STATUS(Status::kErrorUnsupportedDevice, gemm::run(args, nullptr, 0, nullptr));
}

// ================================== GPU: shared-memory limit =================================================

// What a GPU with 99 KiB of shared memory per block runs (sm_86 / sm_89 / sm_120), forced on this one with
// Arguments::max_smem_per_block: the compact tiles pass the oracle for every format; a limit no tile fits
// is refused before any launch.
TEST(Gemm_SharedMemoryLimit, NinetyNineKiBTilesPassTheOracle) {
  NIBBLE_REQUIRE_GPU();
  constexpr int k99KiB = 99 * 1024;
  auto rng = nibble_test_rng();
  const bool quick = quick_mode();
  for_each_tile_family_case(
      rng, quick ? 144 : 300, quick ? 256 : 640, {kS4, kU4, kNf4, kFp4},
      [&](DType act, Format f) { return !(quick && act == kBF16 && f != kNf4); },
      [&](const HostProblem& p, const DeviceWeights& dw, const DeviceActs& da, const Samples& s,
          gemm::Mainloop ml) {
        RunOpts o;
        o.out = kF32;
        o.mainloop = ml;
        o.max_smem = k99KiB;
        const RunResult r = run_and_check(p, dw, da, s, o);
        const gemm::TileConfig c = gemm::tile_config(r.plan.kind);
        EXPECT_LE(c.smem_bytes(), k99KiB) << p.name() << " " << o.name();
      });
  const HostWeights w = make_weights(rng, kS4, 128, 64, 256, kF16, Data::kExact);
  const DeviceWeights dw = upload_and_repack(w, kF16);
  const HostProblem p = make_problem(rng, kF16, w, 300, Data::kExact);
  const DeviceActs da = upload_acts(p);
  DevBuf c(std::size_t(p.m * p.n()) * 4);
  RunOpts o;
  o.max_smem = 48 * 1024;  // below every tile for M = 300
  const gemm::Arguments args = make_args(p, dw, da, o, c.get());
  EXPECT_STATUS(Status::kErrorUnsupportedDevice, gemm::run(args, nullptr, 0, nullptr));
}

// ================================== GPU: nf4 / fp4 codebook tables ==========================================

// The shared-memory and the register codebook table decode to the same values, so the two kernels of
// every tile family give bit-identical C; both also pass the statistical oracle.
TEST(Gemm_Codebook, SharedMemoryAndRegisterTablesGiveIdenticalC) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  const bool quick = quick_mode();
  for_each_tile_family_case(
      rng, quick ? 144 : 400, quick ? 256 : 1024, {kNf4, kFp4}, [](DType, Format) { return true; },
      [&](const HostProblem& p, const DeviceWeights& dw, const DeviceActs& da, const Samples& s,
          gemm::Mainloop ml) {
        RunOpts o;
        o.out = kF32;
        o.mainloop = ml;
        o.codebook_table = gemm::CodebookTable::kSharedMemory;
        const RunResult shared = run_and_check(p, dw, da, s, o);
        o.codebook_table = gemm::CodebookTable::kRegisters;
        const RunResult regs = run_and_check(p, dw, da, s, o);
        EXPECT_TRUE(shared.c == regs.c) << p.name() << " " << o.name()
                                        << ": shared-memory and register tables give different C";
      });
}

// What the kernels were compiled with matches what the host believes: wgmma_available() is true exactly
// where the device code of this binary issues wgmma (detail::kWgmmaCompiled in the device pass).
__global__ void wgmma_compiled_probe(int* out) { *out = nibble::detail::kWgmmaCompiled ? 1 : 0; }

TEST(Gemm_Wgmma, HostAndDeviceCodeAgree) {
  NIBBLE_REQUIRE_GPU();
  DevBuf flag(sizeof(int));
  wgmma_compiled_probe<<<1, 1>>>(flag.as<int>());
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cudaDeviceSynchronize());
  const bool compiled = flag.download<int>()[0] == 1;
  int dev = 0, major = 0, minor = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  std::printf("[nibble] device sm_%d%d, wgmma in this binary's device code: %s, wgmma_available(): %s\n", major,
              minor, compiled ? "yes" : "no", gemm::wgmma_available() ? "yes" : "no");
  EXPECT_EQ(compiled, gemm::wgmma_available());
}
