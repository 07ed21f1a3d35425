// examples/tensor_parallel/tensor_parallel.cu — tensor-parallel 4-bit linears over NCCL (one thread per GPU,
// ncclCommInitAll), with nibble's shard helpers (nibble/layout/shard.cuh):
//
//   MLP block        gate, up  column-parallel (rows of W split)  ->  h = silu(gate) * up (fp16, local)
//                    down      row-parallel (K split)             ->  fp32 partial C, ncclAllReduce (sum)
//   attention proj.  qkv       column-parallel by heads (each rank: its q, k and v rows, fused)
//                    o         row-parallel on the rank's q heads ->  fp32 partial C, ncclAllReduce
//                    (attention itself is left out: o reads the rank's q columns of the qkv output)
//
// Llama-3-8B shapes (hidden 4096, intermediate 14336, 32 q / 8 kv heads of 128), s4 with groups of 128, fp16
// activations. Weights are quantized once on GPU 0 (plain layout); each rank gets its shards with
// copy_plain_shard (GPU 0 -> its GPU) and repacks them there, or on GPU 0 builds them straight from the whole
// with repack_shard.
//
// Checks, before any timing (each must pass, else exit 1):
//   1. on GPU 0 alone, the blocks split into 2 and 4 shards run one after another (partials summed in rank
//      order) against the unsharded blocks, and gemm::run on GEMM-layout views (gemm_column_shard of a
//      per-channel weight writing C + n0; gemm_row_shard of a 16-row weight reading A + k0) against the whole;
//   2. the NCCL run on `world` GPUs against the unsharded blocks on GPU 0.
// The fp32 outputs must agree within 1e-5 (relative Frobenius norm; blocks with a row-parallel GEMM within
// row_parallel_tolerance(K), 2.7e-5 for the MLP: see there). The checked runs pin the K order of every
// GEMM (Mainloop::kMmaSync, split_k = 1): column-parallel outputs are then bit-identical to the whole's
// columns, so the fp16 intermediates (h, the q columns) are too, and only the row-parallel sums differ (fp32
// reassociation). With the default kAuto choice shards and the whole may take different kernels or K splits, a
// few fp16 roundings of h flip, and the output differs by ~1e-4: that error is printed, not checked.
// NCCL sums in an order fixed by its algorithm and topology (the same every run); with 2 ranks a + b == b + a.
//
// Timing: CUDA events on each rank's stream, µs per block (the GEMMs, the elementwise kernel and the
// all-reduce), slowest rank, at M = 1, 16, 256, 2048; then the 1-GPU unsharded blocks and the all-reduce alone
// (algorithm and bus bandwidth, as nccl-tests define them).
//
//   ./tensor_parallel [world]      world: number of GPUs (default: all visible)
//
// NCCL_NVLS_ENABLE=0 is set before NCCL initializes (NVLink SHARP / multicast off: the shared GPU machines
// this runs on must not create multicast objects). Without a CUDA device it prints "no CUDA device", exits 0.
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nibble/nibble.cuh>
#include <thread>
#include <vector>

namespace {

#define CHECK_CUDA(x)                                                                      \
  do {                                                                                     \
    cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) {                                                               \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)
#define CHECK_NIBBLE(x)                                                                      \
  do {                                                                                       \
    nibble::Status s_ = (x);                                                                 \
    if (s_ != nibble::Status::kSuccess) {                                                    \
      std::printf("nibble error: %s at %s:%d\n", nibble::to_string(s_), __FILE__, __LINE__); \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)
#define CHECK_NCCL(x)                                                                      \
  do {                                                                                     \
    ncclResult_t r_ = (x);                                                                 \
    if (r_ != ncclSuccess) {                                                               \
      std::printf("NCCL error %s at %s:%d\n", ncclGetErrorString(r_), __FILE__, __LINE__); \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)

using nibble::DType;
using nibble::Format;
using nibble::GemmWeights;
using nibble::PackedMatrix;
using nibble::ShardRange;

constexpr std::int64_t kHidden = 4096, kInter = 14336, kQ = 4096, kKv = 1024;  // q: 32 x 128, k / v: 8 x 128
constexpr std::int64_t kMaxM = 2048;
constexpr std::int64_t kMs[] = {1, 16, 256, 2048};
constexpr double kTolerance = 1e-5;
/// Relative tolerance of a block whose row-parallel GEMM sums K terms in fp32, shards against the whole. The
/// checked runs give both sides the same fp16 operands (see the header), so they differ only in where the fp32
/// sums are rounded. Along K the kMmaSync mainloop adds one m16n8k16 product per 16 columns into its fp32
/// accumulator: K / 16 roundings on the whole's chain, K / (16 * shards) on each shard's plus the sum of the
/// partials. The tensor cores' fp32 accumulation truncates (Fasi et al., "Numerical behavior of NVIDIA tensor
/// cores", PeerJ CS 2021), so these errors do not cancel like round-to-nearest ones (~ u * sqrt(K / 16)); each
/// step leaves up to u = 2^-24 of the accumulator, on average u / 2 toward zero, and the accumulator stays
/// below the final |C| on average, so the two sums differ by about (K / 16) * u / 2 relative to C:
/// 2^-24 * K / 32 = 2.7e-5 for down (K = 14336), 7.6e-6 for o (K = 4096). Observed on an H200 at e80ff64:
/// down 1.0e-5 (2 shards) .. 1.37e-5 (4 shards), o 3e-6 — linear in K (ratio 3.4 for 3.5x the K), as this
/// model says, not sqrt(K). Never below the 1e-5 of the other checks.
constexpr double row_parallel_tolerance(std::int64_t k) {
  const double bound = double(k) / 32.0 / 16777216.0;
  return bound > kTolerance ? bound : kTolerance;
}
constexpr double kMlpTolerance = row_parallel_tolerance(kInter);  // down: K = intermediate
constexpr double kAttnTolerance = row_parallel_tolerance(kQ);     // o: K = q columns
const nibble::QuantParams kParams{Format::kS4, 128, DType::kF16, false};

// ---- device helpers ----------------------------------------------------------------------------------------

__device__ float hash_uniform(std::uint64_t seed, std::int64_t i) {  // [-1, 1), splitmix64 of (seed, i)
  std::uint64_t z = seed + 0x9E3779B97F4A7C15ull * std::uint64_t(i + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return float(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}
__global__ void fill_f32(float* x, std::int64_t count, std::uint64_t seed, float scale) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < count; i += gridDim.x * blockDim.x)
    x[i] = hash_uniform(seed, i) * scale;
}
__global__ void fill_f16(__half* x, std::int64_t count, std::uint64_t seed) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < count; i += gridDim.x * blockDim.x)
    x[i] = __float2half_rn(hash_uniform(seed, i));
}
/// h = silu(gate) * up, elementwise, fp32 arithmetic, rounded once to fp16.
__global__ void silu_mul(const __half* gate, const __half* up, __half* h, std::int64_t count) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < count; i += gridDim.x * blockDim.x) {
    const float g = __half2float(gate[i]);
    h[i] = __float2half_rn(g / (1.0f + expf(-g)) * __half2float(up[i]));
  }
}
__global__ void add_f32(float* acc, const float* x, std::int64_t count) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < count; i += gridDim.x * blockDim.x)
    acc[i] += x[i];
}
unsigned grid(std::int64_t count) { return unsigned(std::min<std::int64_t>((count + 255) / 256, 4096)); }

template <class T>
T* dalloc(std::int64_t count) {
  void* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, std::size_t(std::max<std::int64_t>(count, 1)) * sizeof(T)));
  return static_cast<T*>(p);
}

/// A plain packed matrix in one device buffer of the current device.
struct Plain {
  void* buffer = nullptr;
  PackedMatrix m;
};
Plain make_plain(std::int64_t n, std::int64_t k) {
  const nibble::PackedBytes b = nibble::packed_bytes(n, k, kParams);
  CHECK_NIBBLE(b.status);
  Plain p;
  p.buffer = dalloc<std::uint8_t>(std::int64_t(b.total));
  CHECK_NIBBLE(nibble::carve_packed_matrix(n, k, kParams, p.buffer, b.total, &p.m));
  return p;
}
/// W [n, k] uniform in [-0.05, 0.05), quantized on the current device.
Plain quantize_random(std::int64_t n, std::int64_t k, std::uint64_t seed, float* scratch, cudaStream_t s) {
  Plain p = make_plain(n, k);
  fill_f32<<<grid(n * k), 256, 0, s>>>(scratch, n * k, seed, 0.05f);
  CHECK_CUDA(cudaGetLastError());
  CHECK_NIBBLE(nibble::quantize(scratch, k, p.m, nullptr, 0, s));
  return p;
}

/// GEMM-layout buffers of the current device.
struct Gemm {
  std::uint8_t *codes = nullptr, *scales = nullptr;
  GemmWeights w;
};
Gemm alloc_gemm(std::int64_t n, std::int64_t k) {
  const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(kParams.format, n, k, kParams.group_size, DType::kF16);
  Gemm g;
  g.codes = dalloc<std::uint8_t>(std::int64_t(b.codes));
  g.scales = dalloc<std::uint8_t>(std::int64_t(b.scales));
  return g;
}
Gemm repack_whole(const PackedMatrix& m, cudaStream_t s) {
  Gemm g = alloc_gemm(m.n, m.k);
  CHECK_NIBBLE(nibble::repack(nibble::plain_view(m), DType::kF16, g.codes, g.scales, nullptr, &g.w, s));
  return g;
}
/// Shard `r` of the plain matrix `whole` (GPU 0) in the GEMM layout on the current device `dev`: straight with
/// repack_shard on GPU 0, else copy_plain_shard to this GPU and repack there.
Gemm build_shard(const PackedMatrix& whole, const ShardRange& r, int dev, cudaStream_t s) {
  Gemm g = alloc_gemm(r.n(), r.k());
  if (dev == 0) {
    CHECK_NIBBLE(nibble::repack_shard(nibble::plain_view(whole), r, DType::kF16, g.codes, g.scales, nullptr, &g.w, s));
    return g;
  }
  Plain local = make_plain(r.n(), r.k());
  CHECK_NIBBLE(nibble::copy_plain_shard(whole, r, local.m, s));
  CHECK_NIBBLE(nibble::repack(nibble::plain_view(local.m), DType::kF16, g.codes, g.scales, nullptr, &g.w, s));
  CHECK_CUDA(cudaStreamSynchronize(s));
  CHECK_CUDA(cudaFree(local.buffer));
  return g;
}

// ---- the blocks ----------------------------------------------------------------------------------------------

/// One rank's weights, activations and outputs (the unsharded blocks: world 1, no communicator).
struct Rank {
  int dev = 0, rank = 0, world = 1;
  cudaStream_t stream = nullptr;
  ncclComm_t comm = nullptr;
  Gemm gate, up, down, qkv, o;
  std::int64_t inter = 0, qkv_n = 0, q_n = 0;  // local intermediate, fused qkv rows, q rows
  __half *x = nullptr, *g_out = nullptr, *u_out = nullptr, *h = nullptr, *qkv_out = nullptr;
  float *y_mlp = nullptr, *y_attn = nullptr;
  void* workspace = nullptr;
  bool deterministic = false;  // kMmaSync, split_k = 1 (see the header)
};

void gemm(Rank& r, const GemmWeights& w, const __half* a, std::int64_t lda, std::int64_t m, void* c, std::int64_t ldc,
          DType out) {
  nibble::gemm::Arguments args;
  args.m = m;
  args.act_type = DType::kF16;
  args.a = a;
  args.lda = lda;
  args.w = w;
  args.c = c;
  args.ldc = ldc;
  args.out_type = out;
  if (r.deterministic) {
    args.mainloop = nibble::gemm::Mainloop::kMmaSync;
    args.split_k = 1;
  }
  CHECK_NIBBLE(
      (nibble::gemm::run<__half, Format::kS4>(args, r.workspace, nibble::gemm::kDefaultMaxWorkspaceBytes, r.stream)));
}
void all_reduce(Rank& r, float* y, std::int64_t count) {
  if (r.comm != nullptr) CHECK_NCCL(ncclAllReduce(y, y, std::size_t(count), ncclFloat, ncclSum, r.comm, r.stream));
}
void mlp_block(Rank& r, std::int64_t m) {
  gemm(r, r.gate.w, r.x, kHidden, m, r.g_out, r.inter, DType::kF16);
  gemm(r, r.up.w, r.x, kHidden, m, r.u_out, r.inter, DType::kF16);
  silu_mul<<<grid(m * r.inter), 256, 0, r.stream>>>(r.g_out, r.u_out, r.h, m * r.inter);
  CHECK_CUDA(cudaGetLastError());
  gemm(r, r.down.w, r.h, r.inter, m, r.y_mlp, kHidden, DType::kF32);
  all_reduce(r, r.y_mlp, m * kHidden);
}
void attn_block(Rank& r, std::int64_t m) {
  gemm(r, r.qkv.w, r.x, kHidden, m, r.qkv_out, r.qkv_n, DType::kF16);
  gemm(r, r.o.w, r.qkv_out, r.qkv_n, m, r.y_attn, kHidden, DType::kF32);  // the q columns, lda = qkv rows
  all_reduce(r, r.y_attn, m * kHidden);
}

/// The whole weights on GPU 0 (plain and GEMM layout).
struct Model {
  Plain gate, up, down, qkv, o;
};

/// Rank `rank` of `world` on device `dev` (current): its shards of `model`, its buffers, the input x.
void setup_rank(Rank& r, const Model& model, int rank, int world, int dev) {
  r.dev = dev;
  r.rank = rank;
  r.world = world;
  if (r.stream == nullptr) CHECK_CUDA(cudaStreamCreateWithFlags(&r.stream, cudaStreamNonBlocking));
  r.inter = kInter / world;
  r.q_n = kQ / world;
  r.qkv_n = (kQ + 2 * kKv) / world;
  const std::int64_t kv_n = kKv / world;
  if (world == 1) {  // the unsharded blocks: the whole weights, repacked as they are
    r.gate = repack_whole(model.gate.m, r.stream);
    r.up = repack_whole(model.up.m, r.stream);
    r.down = repack_whole(model.down.m, r.stream);
    r.o = repack_whole(model.o.m, r.stream);
  } else {
    r.gate = build_shard(model.gate.m, nibble::column_shard_range(rank * r.inter, (rank + 1) * r.inter, kHidden), dev,
                         r.stream);
    r.up = build_shard(model.up.m, nibble::column_shard_range(rank * r.inter, (rank + 1) * r.inter, kHidden), dev,
                       r.stream);
    r.down = build_shard(model.down.m, nibble::row_shard_range(kHidden, rank * r.inter, (rank + 1) * r.inter), dev,
                         r.stream);
    r.o = build_shard(model.o.m, nibble::row_shard_range(kHidden, rank * r.q_n, (rank + 1) * r.q_n), dev, r.stream);
  }
  // qkv by heads: rows of q, k and v of this rank, fused into one local plain matrix, then repacked
  Plain local = make_plain(r.qkv_n, kHidden);
  const std::int64_t src_rows[3] = {rank * r.q_n, kQ + rank * kv_n, kQ + kKv + rank * kv_n};
  const std::int64_t counts[3] = {r.q_n, kv_n, kv_n};
  std::int64_t at = 0;
  for (int part = 0; part < 3; ++part) {
    PackedMatrix dst;
    CHECK_NIBBLE(nibble::plain_column_shard(local.m, at, at + counts[part], &dst));
    CHECK_NIBBLE(nibble::copy_plain_shard(
        model.qkv.m, nibble::column_shard_range(src_rows[part], src_rows[part] + counts[part], kHidden), dst,
        r.stream));
    at += counts[part];
  }
  r.qkv = repack_whole(local.m, r.stream);
  r.x = dalloc<__half>(kMaxM * kHidden);
  fill_f16<<<grid(kMaxM * kHidden), 256, 0, r.stream>>>(r.x, kMaxM * kHidden, 7);  // the same x on every rank
  CHECK_CUDA(cudaGetLastError());
  r.g_out = dalloc<__half>(kMaxM * r.inter);
  r.u_out = dalloc<__half>(kMaxM * r.inter);
  r.h = dalloc<__half>(kMaxM * r.inter);
  r.qkv_out = dalloc<__half>(kMaxM * r.qkv_n);
  r.y_mlp = dalloc<float>(kMaxM * kHidden);
  r.y_attn = dalloc<float>(kMaxM * kHidden);
  r.workspace = dalloc<std::uint8_t>(std::int64_t(nibble::gemm::kDefaultMaxWorkspaceBytes));
  CHECK_CUDA(cudaMemsetAsync(r.workspace, 0, nibble::gemm::kDefaultMaxWorkspaceBytes, r.stream));
  CHECK_CUDA(cudaStreamSynchronize(r.stream));
  CHECK_CUDA(cudaFree(local.buffer));
}

void free_rank(Rank& r) {
  for (Gemm* g : {&r.gate, &r.up, &r.down, &r.qkv, &r.o}) {
    CHECK_CUDA(cudaFree(g->codes));
    CHECK_CUDA(cudaFree(g->scales));
  }
  for (void* p :
       {static_cast<void*>(r.x), static_cast<void*>(r.g_out), static_cast<void*>(r.u_out), static_cast<void*>(r.h),
        static_cast<void*>(r.qkv_out), static_cast<void*>(r.y_mlp), static_cast<void*>(r.y_attn), r.workspace})
    CHECK_CUDA(cudaFree(p));
  CHECK_CUDA(cudaStreamDestroy(r.stream));
  r = Rank{};
}

std::vector<float> download(const float* d, std::int64_t count) {
  std::vector<float> h(static_cast<std::size_t>(count));
  CHECK_CUDA(cudaMemcpy(h.data(), d, std::size_t(count) * 4, cudaMemcpyDeviceToHost));
  return h;
}
double rel_error(const std::vector<float>& x, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    num += (double(x[i]) - ref[i]) * (double(x[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}
bool report(const char* what, double err, bool checked, double tolerance = kTolerance) {
  const bool ok = !checked || err <= tolerance;
  std::printf("  %-58s rel. error %.3g%s\n", what, err, checked ? (ok ? "  ok" : "  FAILED") : "  (not checked)");
  return ok;
}

/// Both blocks of `r` at M = m; outputs downloaded.
void run_blocks(Rank& r, std::int64_t m, std::vector<float>* mlp, std::vector<float>* attn) {
  mlp_block(r, m);
  attn_block(r, m);
  CHECK_CUDA(cudaStreamSynchronize(r.stream));
  *mlp = download(r.y_mlp, m * kHidden);
  *attn = download(r.y_attn, m * kHidden);
}

// ---- check 1: shards on one GPU, views -----------------------------------------------------------------------

bool check_on_one_gpu(const Model& model, Rank& whole) {
  bool ok = true;
  std::printf("check 1: shards on GPU 0, one after another (kMmaSync, split_k = 1)\n");
  whole.deterministic = true;
  for (int shards : {2, 4}) {
    std::vector<Rank> parts(static_cast<std::size_t>(shards));
    for (int s = 0; s < shards; ++s) {
      setup_rank(parts[std::size_t(s)], model, s, shards, 0);
      parts[std::size_t(s)].deterministic = true;
    }
    for (std::int64_t m : {std::int64_t(1), std::int64_t(16), std::int64_t(300)}) {
      std::vector<float> ref_mlp, ref_attn, sum_mlp(std::size_t(m * kHidden), 0.0f), sum_attn = sum_mlp;
      run_blocks(whole, m, &ref_mlp, &ref_attn);
      for (Rank& p : parts) {  // partials summed in rank order
        std::vector<float> a, b;
        run_blocks(p, m, &a, &b);
        for (std::size_t i = 0; i < a.size(); ++i) {
          sum_mlp[i] += a[i];
          sum_attn[i] += b[i];
        }
      }
      char label[96];
      std::snprintf(label, sizeof(label), "MLP, %d shards, M = %lld", shards, (long long)m);
      ok &= report(label, rel_error(sum_mlp, ref_mlp), true, kMlpTolerance);
      std::snprintf(label, sizeof(label), "attention projections, %d shards, M = %lld", shards, (long long)m);
      ok &= report(label, rel_error(sum_attn, ref_attn), true, kAttnTolerance);
    }
    for (Rank& p : parts) free_rank(p);
  }
  whole.deterministic = false;

  // gemm::run on views into one GEMM-layout weight
  cudaStream_t s = whole.stream;
  float* scratch = dalloc<float>(kHidden * kHidden);
  const std::int64_t m = 64;
  {  // per-channel weight: column views (one scale row), each writing its columns of the whole C
    const nibble::QuantParams pc{Format::kS4, nibble::kPerChannel, DType::kF16, false};
    const nibble::PackedBytes b = nibble::packed_bytes(kHidden, kHidden, pc);
    void* buf = dalloc<std::uint8_t>(std::int64_t(b.total));
    PackedMatrix pm;
    CHECK_NIBBLE(nibble::carve_packed_matrix(kHidden, kHidden, pc, buf, b.total, &pm));
    fill_f32<<<grid(kHidden * kHidden), 256, 0, s>>>(scratch, kHidden * kHidden, 11, 0.05f);
    CHECK_NIBBLE(nibble::quantize(scratch, kHidden, pm, nullptr, 0, s));
    const nibble::GemmWeightBytes gb =
        nibble::gemm_weight_bytes(Format::kS4, kHidden, kHidden, pc.group_size, DType::kF16);
    std::uint8_t *codes = dalloc<std::uint8_t>(std::int64_t(gb.codes)),
                 *scales = dalloc<std::uint8_t>(std::int64_t(gb.scales));
    GemmWeights w;
    CHECK_NIBBLE(nibble::repack(nibble::plain_view(pm), DType::kF16, codes, scales, nullptr, &w, s));
    float *c_whole = dalloc<float>(m * kHidden), *c_views = dalloc<float>(m * kHidden);
    whole.deterministic = true;
    gemm(whole, w, whole.x, kHidden, m, c_whole, kHidden, DType::kF32);
    for (std::int64_t n0 = 0; n0 < kHidden; n0 += 1024 + 512) {  // 1536-row views, the last one shorter
      GemmWeights v;
      const std::int64_t n1 = std::min(kHidden, n0 + 1536);
      CHECK_NIBBLE(nibble::gemm_column_shard(w, n0, n1, &v));
      gemm(whole, v, whole.x, kHidden, m, c_views + n0, kHidden, DType::kF32);
    }
    CHECK_CUDA(cudaStreamSynchronize(s));
    ok &= report("gemm::run on gemm_column_shard views (per-channel), M = 64",
                 rel_error(download(c_views, m * kHidden), download(c_whole, m * kHidden)), true);
    GemmWeights bad;
    if (nibble::gemm_column_shard(whole.gate.w, 16, 32, &bad) != nibble::Status::kErrorUnsupportedFormat) {
      std::printf("  a grouped weight's column view was not refused  FAILED\n");
      ok = false;
    }
    whole.deterministic = false;
    CHECK_CUDA(cudaFree(buf));
    CHECK_CUDA(cudaFree(codes));
    CHECK_CUDA(cudaFree(scales));
    CHECK_CUDA(cudaFree(c_whole));
    CHECK_CUDA(cudaFree(c_views));
  }
  {  // a 16-row weight: row views (one atom row), partial products summed against the whole
    const std::int64_t n = 16;
    Plain p = make_plain(n, kHidden);
    fill_f32<<<grid(n * kHidden), 256, 0, s>>>(scratch, n * kHidden, 13, 0.05f);
    CHECK_NIBBLE(nibble::quantize(scratch, kHidden, p.m, nullptr, 0, s));
    Gemm g = repack_whole(p.m, s);
    float *c_whole = dalloc<float>(m * n), *c_part = dalloc<float>(m * n), *c_sum = dalloc<float>(m * n);
    CHECK_CUDA(cudaMemsetAsync(c_sum, 0, std::size_t(m * n) * 4, s));
    whole.deterministic = true;
    gemm(whole, g.w, whole.x, kHidden, m, c_whole, n, DType::kF32);
    for (std::int64_t k0 = 0; k0 < kHidden; k0 += 1024) {
      GemmWeights v;
      CHECK_NIBBLE(nibble::gemm_row_shard(g.w, k0, k0 + 1024, &v));
      gemm(whole, v, whole.x + k0, kHidden, m, c_part, n, DType::kF32);
      add_f32<<<grid(m * n), 256, 0, s>>>(c_sum, c_part, m * n);
      CHECK_CUDA(cudaGetLastError());
    }
    CHECK_CUDA(cudaStreamSynchronize(s));
    ok &= report("gemm::run on gemm_row_shard views (N = 16), 4 shards, M = 64",
                 rel_error(download(c_sum, m * n), download(c_whole, m * n)), true);
    whole.deterministic = false;
    CHECK_CUDA(cudaFree(c_whole));
    CHECK_CUDA(cudaFree(c_part));
    CHECK_CUDA(cudaFree(c_sum));
  }
  CHECK_CUDA(cudaFree(scratch));
  return ok;
}

// ---- timing --------------------------------------------------------------------------------------------------

constexpr int kWarmup = 3, kIters = 20;

/// Mean µs of `body(rank)` on every rank's stream (one thread per rank), the slowest rank's.
template <class Body>
double time_ranks(std::vector<Rank>& ranks, Body&& body) {
  std::vector<double> us(ranks.size());
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < ranks.size(); ++i)
    threads.emplace_back([&, i] {
      Rank& r = ranks[i];
      CHECK_CUDA(cudaSetDevice(r.dev));
      cudaEvent_t start, stop;
      CHECK_CUDA(cudaEventCreate(&start));
      CHECK_CUDA(cudaEventCreate(&stop));
      for (int it = 0; it < kWarmup; ++it) body(r);
      CHECK_CUDA(cudaEventRecord(start, r.stream));
      for (int it = 0; it < kIters; ++it) body(r);
      CHECK_CUDA(cudaEventRecord(stop, r.stream));
      CHECK_CUDA(cudaEventSynchronize(stop));
      float ms = 0;
      CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
      us[i] = 1000.0 * ms / kIters;
      CHECK_CUDA(cudaEventDestroy(start));
      CHECK_CUDA(cudaEventDestroy(stop));
    });
  for (auto& t : threads) t.join();
  return *std::max_element(us.begin(), us.end());
}

/// `body(rank)` on every rank at once (one thread per rank, NCCL collectives inside), then synchronized.
template <class Body>
void on_ranks(std::vector<Rank>& ranks, Body&& body) {
  std::vector<std::thread> threads;
  for (Rank& r : ranks)
    threads.emplace_back([&r, &body] {
      CHECK_CUDA(cudaSetDevice(r.dev));
      body(r);
      CHECK_CUDA(cudaStreamSynchronize(r.stream));
    });
  for (auto& t : threads) t.join();
}

}  // namespace

int main(int argc, char** argv) {
  // Before NCCL reads its environment (at ncclCommInitAll): no NVLink SHARP / multicast objects.
  setenv("NCCL_NVLS_ENABLE", "0", 1);
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count == 0) {
    std::printf("no CUDA device (%s): nothing to run\n", e != cudaSuccess ? cudaGetErrorName(e) : "0 devices");
    return 0;
  }
  const int world = argc > 1 ? std::atoi(argv[1]) : count;
  if (world < 1 || world > count) {
    std::printf("world size %s: needs 1..%d (the visible GPUs)\n", argc > 1 ? argv[1] : "?", count);
    return 1;
  }
  // Every weight's split must be legal for the GEMM layout (atoms, groups, K % 8): refuse the world size otherwise.
  struct Split {
    const char* name;
    nibble::ShardAxis axis;
    std::int64_t n, k;
  };
  const Split splits[] = {{"gate/up", nibble::ShardAxis::kColumn, kInter, kHidden},
                          {"down", nibble::ShardAxis::kRow, kHidden, kInter},
                          {"q", nibble::ShardAxis::kColumn, kQ, kHidden},
                          {"k/v", nibble::ShardAxis::kColumn, kKv, kHidden},
                          {"o", nibble::ShardAxis::kRow, kHidden, kQ}};
  for (const Split& sp : splits)
    for (int w : {world, 2, 4}) {
      nibble::ShardPlan plan;
      plan.axis = sp.axis;
      plan.world_size = w;
      plan.n = sp.n;
      plan.k = sp.k;
      plan.params = kParams;
      const nibble::Status st = nibble::can_implement_shard_plan(plan);
      if (st != nibble::Status::kSuccess) {
        std::printf("%s [%lld x %lld] cannot be split over %d ranks: %s\n", sp.name, (long long)sp.n, (long long)sp.k,
                    w, nibble::to_string(st));
        return 1;
      }
    }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  int nccl_version = 0;
  CHECK_NCCL(ncclGetVersion(&nccl_version));
  std::printf("tensor_parallel: %d of %d GPU(s) (%s), NCCL %d, NCCL_NVLS_ENABLE=%s; s4 g128, fp16 activations\n", world,
              count, prop.name, nccl_version, std::getenv("NCCL_NVLS_ENABLE"));
  std::printf(
      "MLP: gate/up [%lld x %lld] column-parallel, down [%lld x %lld] row-parallel; attention: qkv [%lld x "
      "%lld] column-parallel by heads, o [%lld x %lld] row-parallel\n",
      (long long)kInter, (long long)kHidden, (long long)kHidden, (long long)kInter, (long long)(kQ + 2 * kKv),
      (long long)kHidden, (long long)kHidden, (long long)kQ);

  // The whole model on GPU 0.
  CHECK_CUDA(cudaSetDevice(0));
  Rank whole;
  CHECK_CUDA(cudaStreamCreateWithFlags(&whole.stream, cudaStreamNonBlocking));
  float* scratch = dalloc<float>(kInter * kHidden);
  Model model;
  model.gate = quantize_random(kInter, kHidden, 1, scratch, whole.stream);
  model.up = quantize_random(kInter, kHidden, 2, scratch, whole.stream);
  model.down = quantize_random(kHidden, kInter, 3, scratch, whole.stream);
  model.qkv = quantize_random(kQ + 2 * kKv, kHidden, 4, scratch, whole.stream);
  model.o = quantize_random(kHidden, kQ, 5, scratch, whole.stream);
  CHECK_CUDA(cudaStreamSynchronize(whole.stream));
  CHECK_CUDA(cudaFree(scratch));
  setup_rank(whole, model, 0, 1, 0);  // world 1: the whole weights, repacked on GPU 0

  bool ok = check_on_one_gpu(model, whole);

  // The NCCL ranks.
  std::vector<ncclComm_t> comms(static_cast<std::size_t>(world));
  std::vector<int> devs(static_cast<std::size_t>(world));
  for (int i = 0; i < world; ++i) devs[std::size_t(i)] = i;
  CHECK_NCCL(ncclCommInitAll(comms.data(), world, devs.data()));
  std::vector<Rank> ranks(static_cast<std::size_t>(world));
  for (int i = 0; i < world; ++i) {
    CHECK_CUDA(cudaSetDevice(i));
    setup_rank(ranks[std::size_t(i)], model, i, world, i);
    ranks[std::size_t(i)].comm = comms[std::size_t(i)];
  }
  CHECK_CUDA(cudaSetDevice(0));

  std::printf("check 2: %d NCCL rank(s) against the unsharded blocks on GPU 0\n", world);
  for (bool deterministic : {true, false}) {
    for (std::int64_t m : kMs) {
      whole.deterministic = deterministic;
      std::vector<float> ref_mlp, ref_attn, got_mlp, got_attn;
      CHECK_CUDA(cudaSetDevice(0));
      run_blocks(whole, m, &ref_mlp, &ref_attn);
      on_ranks(ranks, [&](Rank& r) {
        r.deterministic = deterministic;
        mlp_block(r, m);
        attn_block(r, m);
      });
      CHECK_CUDA(cudaSetDevice(0));
      got_mlp = download(ranks[0].y_mlp, m * kHidden);
      got_attn = download(ranks[0].y_attn, m * kHidden);
      char label[96];
      const char* mode = deterministic ? "kMmaSync, split_k 1" : "kAuto";
      std::snprintf(label, sizeof(label), "MLP, %s, M = %lld", mode, (long long)m);
      ok &= report(label, rel_error(got_mlp, ref_mlp), deterministic, kMlpTolerance);
      std::snprintf(label, sizeof(label), "attention projections, %s, M = %lld", mode, (long long)m);
      ok &= report(label, rel_error(got_attn, ref_attn), deterministic, kAttnTolerance);
    }
  }
  whole.deterministic = false;
  for (Rank& r : ranks) r.deterministic = false;

  std::printf("\ntiming (kAuto, CUDA events, mean of %d after %d warm-up, slowest rank), us per block\n", kIters,
              kWarmup);
  std::printf("%6s | %12s %12s | %12s %12s | %14s %10s %10s\n", "M", "MLP TP", "attn TP", "MLP 1 GPU", "attn 1 GPU",
              "all-reduce us", "algbw GB/s", "busbw GB/s");
  for (std::int64_t m : kMs) {
    const double mlp = time_ranks(ranks, [m](Rank& r) { mlp_block(r, m); });
    const double attn = time_ranks(ranks, [m](Rank& r) { attn_block(r, m); });
    CHECK_CUDA(cudaSetDevice(0));
    std::vector<Rank> one;  // the unsharded blocks, timed the same way (moved in and out to keep `whole`)
    one.push_back(whole);
    const double mlp1 = time_ranks(one, [m](Rank& r) { mlp_block(r, m); });
    const double attn1 = time_ranks(one, [m](Rank& r) { attn_block(r, m); });
    const double ar = time_ranks(ranks, [m](Rank& r) { all_reduce(r, r.y_mlp, m * kHidden); });
    const double bytes = double(m * kHidden) * 4;
    const double algbw = bytes / (ar * 1e-6) / 1e9;
    std::printf("%6lld | %12.1f %12.1f | %12.1f %12.1f | %14.1f %10.1f %10.1f\n", (long long)m, mlp, attn, mlp1, attn1,
                ar, algbw, algbw * 2.0 * (world - 1) / world);
  }
  if (world == 1) std::printf("(world 1: the all-reduce is a local copy; its bandwidth says nothing about links)\n");

  for (ncclComm_t c : comms) ncclCommDestroy(c);
  std::printf("%s\n", ok ? "all checks passed" : "SOME CHECKS FAILED");
  return ok ? 0 : 1;
}
