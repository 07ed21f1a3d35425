// benchmarks/tune_tiles.cu — developer tool, not built by default (-DNIBBLE_BUILD_TUNING=ON): times several
// gemm::TileConfig candidates on the same problems (random codes, rotated weight copies > 256 MiB, CUDA
// graph of R launches / R), to choose the tiles in include/nibble/gemm/tile_registry.cuh. Prints one line per
// (config, shape). The numbers in tile_registry.cuh's comments came from this program on the H100.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nibble/gemm/gemm.cuh>
#include <random>
#include <string>
#include <vector>
using namespace nibble;
#define CK(x)                                                       \
  do {                                                              \
    cudaError_t e = (x);                                            \
    if (e != cudaSuccess) {                                         \
      printf("CUDA %s line %d\n", cudaGetErrorString(e), __LINE__); \
      exit(1);                                                      \
    }                                                               \
  } while (0)

// A candidate tile configuration: {warp_m16, warp_n16, warps_m, warps_n, atoms_k, stages}.
template <int... V>
struct Cfg {
  static constexpr gemm::TileConfig kConfig{V...};
  using Kernel = gemm::detail::MmaSyncKernel;
};
using TD1 = Cfg<1, 2, 1, 8, 2, 4>;  // the shipped decode tile
using TD4 = Cfg<1, 1, 1, 8, 4, 4>;
using TD5 = Cfg<1, 4, 1, 4, 2, 4>;
using TS1 = Cfg<4, 2, 1, 4, 2, 4>;  // the shipped small tile
using TS2 = Cfg<4, 1, 1, 8, 2, 4>;
using TS3 = Cfg<2, 2, 1, 8, 2, 4>;
using TL1 = Cfg<4, 2, 2, 4, 2, 3>;  // the shipped large tile
using TL2 = Cfg<4, 4, 2, 4, 1, 4>;
using TL3 = Cfg<4, 2, 2, 4, 2, 4>;
// Transposed (warpgroup) candidates: {tokens / 16, weight warps (4 per warpgroup), stages}.
template <int kTok16, int kWarps, int kStages>
struct WgCfg {
  static constexpr gemm::TileConfig kConfig{kTok16, 1, 1, kWarps, 1, kStages, true};
  using Kernel = gemm::detail::TransposedKernel;
};
using W1 = WgCfg<8, 8, 4>;  // the shipped large transposed tile: 128 tokens x 128 weights
using W2 = WgCfg<8, 8, 6>;
using W3 = WgCfg<16, 8, 4>;  // 256 tokens x 128 weights
using W4 = WgCfg<8, 16, 4>;  // 128 tokens x 256 weights
using W5 = WgCfg<4, 8, 4>;   // the shipped small transposed tile: 64 tokens
using W6 = WgCfg<4, 16, 4>;  // 64 tokens x 256 weights
using W7 = WgCfg<16, 8, 3>;
using W4s5 = WgCfg<8, 16, 5>;
using W4s6 = WgCfg<8, 16, 6>;
using W5s6 = WgCfg<4, 8, 6>;
using W5s8 = WgCfg<4, 8, 8>;
using W5s10 = WgCfg<4, 8, 10>;
using W8s8 = WgCfg<4, 4, 8>;  // 64 tokens x 64 weights

__global__ void fill(unsigned* p, size_t n, unsigned seed) {
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    unsigned x = (unsigned)i * 2654435761u ^ seed;
    x ^= x >> 13;
    x *= 0x5bd1e995;
    x ^= x >> 15;
    p[i] = x;
  }
}
__global__ void fill_half(__half* p, size_t n, float s) {
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    unsigned x = (unsigned)i * 2654435761u;
    x ^= x >> 13;
    x *= 0x5bd1e995;
    x ^= x >> 15;
    p[i] = __float2half(s * ((x % 2001) / 1000.0f - 1.0f) + (s > 0.5f ? 0.0f : 0.01f));
  }
}

template <class Tile>
double time_tile(const char* name, int m, int n, int k, Format f) {
  constexpr gemm::TileConfig c = Tile::kConfig;
  int sms;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  GemmWeightBytes b = gemm_weight_bytes(f, n, k, 128, DType::kF16);
  size_t per = b.codes + b.scales;
  int copies = std::max<int>(2, int((300u << 20) / per) + 1);
  std::vector<GemmWeights> ws(copies);
  std::vector<void*> bufs;
  for (int i = 0; i < copies; ++i) {
    void *cd, *sc;
    CK(cudaMalloc(&cd, b.codes));
    CK(cudaMalloc(&sc, b.scales));
    bufs.push_back(cd);
    bufs.push_back(sc);
    fill<<<1024, 256>>>((unsigned*)cd, b.codes / 4, i * 77 + 1);
    fill_half<<<1024, 256>>>((__half*)sc, b.scales / 2, 0.01f);
    GemmWeights w;
    w.format = f;
    w.group_size = 128;
    w.n = n;
    w.k = k;
    w.scale_type = DType::kF16;
    w.codes = (const uint8_t*)cd;
    w.scales = sc;
    ws[i] = w;
  }
  __half *a, *cc;
  CK(cudaMalloc(&a, (size_t)m * k * 2));
  CK(cudaMalloc(&cc, (size_t)m * n * 2));
  fill_half<<<1024, 256>>>(a, (size_t)m * k, 1.0f);
  gemm::Arguments args;
  args.m = m;
  args.act_type = DType::kF16;
  args.a = a;
  args.lda = k;
  args.w = ws[0];
  args.c = cc;
  args.ldc = n;
  args.out_type = DType::kF16;
  gemm::DeviceLimits lim = gemm::kH200Limits;
  lim.sm_count = sms;
  if (const char* sp = std::getenv("NIBBLE_SPLIT")) args.split_k = std::atoi(sp);  // forced split-K
  gemm::Plan plan;
  if constexpr (c.stream) {  // the stream kernel's plan, as gemm::make_plan makes it (1 CTA per SM)
    if (!gemm::make_stream_plan_for(args, c, lim, &plan)) {
      printf("%s: no stream plan\n", name);
      return 0;
    }
  } else {
    plan = gemm::make_plan_for(args, c, lim);
  }
  void* wsp = nullptr;
  if (plan.workspace_bytes) {
    CK(cudaMalloc(&wsp, plan.workspace_bytes));
    CK(cudaMemset(wsp, 0, plan.workspace_bytes));
  }
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  constexpr bool wg = c.transposed;  // transposed tiles: the wgmma body where compiled (sm_90a)
  auto launch = [&](int i) {
    args.w = ws[i % copies];
    const auto kp = gemm::detail::make_kernel_params<__half>(args, plan, wsp);
    Status s = Status::kErrorInvalidArgument;
    if (f == Format::kS4) s = gemm::detail::launch_tile<__half, Format::kS4, Tile, wg, false>(kp, plan, st, 0);
    // (nf4 stream kernels need chunks of >= 4 atoms: the dq scale rows spread over the lanes)
    if constexpr (!Tile::kConfig.stream || Tile::kConfig.atoms_k >= 4)
      if (f == Format::kNf4) s = gemm::detail::launch_tile<__half, Format::kNf4, Tile, wg, true>(kp, plan, st, 0);
    if (s != Status::kSuccess) {
      printf("launch fail %s\n", to_string(s));
      exit(1);
    }
  };
  for (int i = 0; i < copies; ++i) launch(i);
  CK(cudaStreamSynchronize(st));
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < copies; ++i) launch(i);
  CK(cudaStreamEndCapture(st, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  CK(cudaGraphLaunch(ge, st));
  CK(cudaStreamSynchronize(st));
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<float> t;
  for (int r = 0; r < 9; ++r) {
    cudaEventRecord(e0, st);
    CK(cudaGraphLaunch(ge, st));
    cudaEventRecord(e1, st);
    CK(cudaEventSynchronize(e1));
    float ms;
    cudaEventElapsedTime(&ms, e0, e1);
    t.push_back(ms / copies);
  }
  std::sort(t.begin(), t.end());
  double us = t[4] * 1000;
  double bytes = per + (double)m * k * 2 + (double)m * n * 2;
  printf(
      "%-4s %-4s M=%5d N=%5d K=%5d tile %3dx%3dx%3d st%d thr%3d smem%6d splits %2d grid %6d : %9.1f us  %7.0f GB/s "
      "%6.0f TFLOP/s\n",
      name, f == Format::kS4 ? "s4" : "nf4", m, n, k, c.tile_m(), c.tile_n(), c.tile_k(), c.stages, c.threads(),
      c.smem_bytes(), plan.splits, plan.tiles_m * plan.tiles_n * plan.splits, us, bytes / us / 1e3,
      2.0 * m * n * k / us / 1e6);
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  cudaStreamDestroy(st);
  for (void* p : bufs) cudaFree(p);
  cudaFree(a);
  cudaFree(cc);
  if (wsp) cudaFree(wsp);
  return us;
}
__global__ void empty_kernel(int* p) {
  if (p != nullptr && threadIdx.x == 1023) *p = 0;
}
/// The per-launch time of a graph of 64 empty launches (256 x 256): the floor of any kernel in a graph.
void time_empty() {
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < 64; ++i) empty_kernel<<<256, 256, 0, st>>>(nullptr);
  CK(cudaStreamEndCapture(st, &g));
  CK(cudaGraphInstantiate(&ge, g, 0));
  for (int i = 0; i < 3; ++i) CK(cudaGraphLaunch(ge, st));
  CK(cudaStreamSynchronize(st));
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  std::vector<float> t;
  for (int r = 0; r < 9; ++r) {
    cudaEventRecord(e0, st);
    CK(cudaGraphLaunch(ge, st));
    cudaEventRecord(e1, st);
    CK(cudaEventSynchronize(e1));
    float ms;
    cudaEventElapsedTime(&ms, e0, e1);
    t.push_back(ms / 64);
  }
  std::sort(t.begin(), t.end());
  printf("empty kernel 256x256 in a graph: %.2f us per launch\n", t[4] * 1000);
  // host time of a plain <<<>>> launch (no graph), batches of 200, synchronized between batches
  std::vector<double> h;
  for (int b = 0; b < 16; ++b) {
    CK(cudaStreamSynchronize(st));
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 200; ++i) empty_kernel<<<256, 256, 0, st>>>(nullptr);
    const auto t1 = std::chrono::steady_clock::now();
    h.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / 200);
  }
  std::sort(h.begin(), h.end());
  int dev = 0;
  const auto t2 = std::chrono::steady_clock::now();
  for (int i = 0; i < 20000; ++i) CK(cudaGetDevice(&dev));
  const auto t3 = std::chrono::steady_clock::now();
  printf("host time of an empty <<<256, 256>>> launch: %.0f ns; cudaGetDevice: %.0f ns\n", h[8],
         std::chrono::duration<double, std::nano>(t3 - t2).count() / 20000);
}
// Decode-class candidates for 16 < M <= 64 (one CTA row of tokens, 256 or 128 weight columns).
using DM2 = Cfg<2, 2, 1, 8, 2, 4>;   // 32 tokens x 256
using DM4 = Cfg<4, 2, 1, 8, 2, 3>;   // 64 tokens x 256, 3 stages (105 KiB: 2 CTAs / SM)
using DM4n = Cfg<4, 1, 1, 8, 2, 4>;  // 64 tokens x 128, 4 stages (102 KiB)
using DN1 = Cfg<1, 1, 1, 8, 2, 4>;   // decode, 128 columns (54 KiB: 4 CTAs / SM)
// Warp-specialized candidates (mainloop_ws.cuh): a transposed tile's shape with a producer warpgroup, S stages.
template <class Base, int kStages>
struct WsCfg {
  static constexpr gemm::TileConfig kConfig = Base::kConfig.with_warp_specialized().with_stages(kStages);
  using Kernel = gemm::detail::WarpSpecializedKernel;
};
// ... with the k-tile boundary's barrier wait, slice load and release off the wgmma wait-to-issue path.
template <class Base, int kStages>
struct WsHoistCfg : WsCfg<Base, kStages> {
  static constexpr bool kWsHoist = true;
};
// Stream-kernel candidates: {token tiles of 8, atoms in flight per warp, warps per CTA}.
template <int kTT, int kStages, int kChunk, int kWarps>
struct StreamCfg {
  static constexpr gemm::TileConfig kConfig =
      gemm::TileConfig{}.with_warps(1, kWarps).with_stream(kTT, kStages, kChunk).with_table_copies(32);
  using Kernel = gemm::detail::StreamKernel;
};
int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "prof_stream") {  // one case for Nsight Compute
    time_tile<StreamCfg<1, 4, 2, 16>>("S1s4c2", 1, 28672, 8192, Format::kS4);
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "stream") {  // the stream kernel's copy ring: stages x chunk, warps
    for (auto [k, n] :
         {std::pair{4096, 4096}, std::pair{14336, 4096}, std::pair{8192, 28672}, std::pair{28672, 8192}}) {
      time_tile<StreamCfg<1, 4, 2, 16>>("S1s4c2w16", 1, n, k, Format::kS4);
      time_tile<StreamCfg<1, 3, 4, 16>>("S1s3c4w16", 1, n, k, Format::kS4);
      time_tile<StreamCfg<1, 2, 4, 16>>("S1s2c4w16", 1, n, k, Format::kS4);
      time_tile<StreamCfg<1, 6, 2, 16>>("S1s6c2w16", 1, n, k, Format::kS4);
      time_tile<StreamCfg<1, 8, 1, 16>>("S1s8c1w16", 1, n, k, Format::kS4);
      time_tile<StreamCfg<1, 4, 4, 8>>("S1s4c4w8", 1, n, k, Format::kS4);
      time_tile<StreamCfg<2, 4, 2, 16>>("S2s4c2w16", 16, n, k, Format::kS4);
      time_tile<StreamCfg<2, 3, 4, 16>>("S2s3c4w16", 16, n, k, Format::kS4);
      time_tile<TD1>("D1", 1, n, k, Format::kS4);
    }
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "ws") {  // issue 11: the warp-specialized tile against wg_large
    for (auto [k, n] : {std::pair{8192, 28672}, std::pair{28672, 8192}, std::pair{4096, 14336}, std::pair{14336, 4096},
                        std::pair{4096, 4096}}) {
      for (int m : {256, 1024, 4096}) {
        time_tile<gemm::TileWgLarge>("WgL", m, n, k, Format::kS4);
        time_tile<WsCfg<gemm::TileWgLarge, 5>>("WsL5", m, n, k, Format::kS4);
        time_tile<WsCfg<gemm::TileWgLarge, 4>>("WsL4", m, n, k, Format::kS4);
        if (m == 256) time_tile<WsCfg<gemm::TileWgMid, 8>>("WsM8", m, n, k, Format::kS4);
      }
      time_tile<gemm::TileWgLarge>("WgL", 1024, n, k, Format::kNf4);
      time_tile<WsCfg<gemm::TileWgLarge, 5>>("WsL5", 1024, n, k, Format::kNf4);
    }
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "ws2") {  // where ws_large (256 tokens) beats wg_mid (128)
    for (auto [k, n] : {std::pair{8192, 28672}, std::pair{28672, 8192}, std::pair{4096, 14336}, std::pair{14336, 4096},
                        std::pair{4096, 4096}}) {
      for (int m : {129, 192, 256}) {
        time_tile<gemm::TileWgMid>("WgM", m, n, k, Format::kS4);
        time_tile<WsCfg<gemm::TileWgLarge, 5>>("WsL5", m, n, k, Format::kS4);
      }
    }
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "prof_ws") {  // one case for Nsight Compute
    time_tile<gemm::TileWsLarge>("WsL5", 4096, 28672, 8192, Format::kS4);
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "ws3") {  // ws_large (session 11's loop) vs the hoisted k-tile boundary
    for (auto [k, n] : {std::pair{8192, 28672}, std::pair{28672, 8192}, std::pair{4096, 14336}}) {
      for (int m : {1024, 4096}) {
        time_tile<gemm::TileWsLarge>("WsL5", m, n, k, Format::kS4);
        time_tile<WsHoistCfg<gemm::TileWgLarge, 5>>("WsH", m, n, k, Format::kS4);
        time_tile<gemm::TileWsLarge>("WsL5", m, n, k, Format::kS4);
        time_tile<WsHoistCfg<gemm::TileWgLarge, 5>>("WsH", m, n, k, Format::kS4);
      }
    }
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "h200") {  // issue 9 exploration on the H200
    time_empty();
    for (auto [k, n] : {std::pair{4096, 4096}, std::pair{8192, 28672}}) {
      for (int m : {1, 16}) {
        time_tile<TD1>("D1", m, n, k, Format::kS4);
        time_tile<DN1>("DN1", m, n, k, Format::kS4);
      }
      for (int m : {17, 32}) {
        time_tile<DM2>("DM2", m, n, k, Format::kS4);
        time_tile<W5s6>("W5s6", m, n, k, Format::kS4);
      }
      for (int m : {33, 48, 64}) {
        time_tile<DM4>("DM4", m, n, k, Format::kS4);
        time_tile<DM4n>("DM4n", m, n, k, Format::kS4);
        time_tile<TS1>("S1", m, n, k, Format::kS4);
        time_tile<W5s6>("W5s6", m, n, k, Format::kS4);
      }
    }
    return 0;
  }
#if defined(NIBBLE_TUNE_H100_MODES)  // the H100 sessions' sweeps; some 512-thread candidates no longer fit ptxas
  if (argc > 1 && std::string(argv[1]) == "prof") {  // one case for Nsight Compute
    time_tile<W1>("W1", 4096, 28672, 8192, Format::kS4);
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "wg4") {  // M = 128 / 256: which transposed tile
    for (auto [k, n] : {std::pair{4096, 4096}, std::pair{4096, 14336}, std::pair{8192, 28672}}) {
      for (int m : {128, 256}) {
        time_tile<W3>("W3", m, n, k, Format::kS4);
        time_tile<W5s6>("W5s6", m, n, k, Format::kS4);
        time_tile<W1>("W1", m, n, k, Format::kS4);
      }
      time_tile<TD1>("D1", 16, n, k, Format::kS4);
      time_tile<TD1>("D1", 16, n, k, Format::kNf4);
    }
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "wg3") {  // the shipped candidates after a mainloop change
    for (auto [k, n] : {std::pair{8192, 28672}, std::pair{28672, 8192}}) {
      time_tile<TD1>("D1", 1, n, k, Format::kS4);
      time_tile<TD1>("D1", 16, n, k, Format::kS4);
      time_tile<TD1>("D1", 16, n, k, Format::kNf4);
      time_tile<TS1>("S1", 64, n, k, Format::kS4);
      time_tile<W5>("W5", 64, n, k, Format::kS4);
      time_tile<W5s6>("W5s6", 64, n, k, Format::kS4);
      time_tile<W5>("W5", 64, n, k, Format::kNf4);
      time_tile<TL1>("L1", 1024, n, k, Format::kS4);
      time_tile<W1>("W1", 1024, n, k, Format::kS4);
      time_tile<W4>("W4", 1024, n, k, Format::kS4);
      time_tile<W4>("W4", 4096, n, k, Format::kS4);
      time_tile<W4>("W4", 1024, n, k, Format::kNf4);
      time_tile<W3>("W3", 1024, n, k, Format::kS4);
    }
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "wg2") {  // stages and decode-size transposed candidates
    for (auto [k, n] : {std::pair{8192, 28672}, std::pair{28672, 8192}}) {
      for (int m : {1, 16}) {
        time_tile<TD1>("D1", m, n, k, Format::kS4);
        time_tile<TD4>("D4", m, n, k, Format::kS4);
        time_tile<TD5>("D5", m, n, k, Format::kS4);
      }
      time_tile<TD1>("D1", 16, n, k, Format::kNf4);
      time_tile<TS1>("S1", 64, n, k, Format::kS4);
      time_tile<W5s6>("W5s6", 64, n, k, Format::kS4);
      time_tile<W5s8>("W5s8", 64, n, k, Format::kS4);
      time_tile<W5s10>("W5s10", 64, n, k, Format::kS4);
      time_tile<W8s8>("W8s8", 64, n, k, Format::kS4);
      time_tile<W5s8>("W5s8", 64, n, k, Format::kNf4);
      time_tile<W5s8>("W5s8", 32, n, k, Format::kS4);
      for (int m : {256, 1024, 4096}) {
        time_tile<W4>("W4", m, n, k, Format::kS4);
        time_tile<W4s5>("W4s5", m, n, k, Format::kS4);
        time_tile<W4s6>("W4s6", m, n, k, Format::kS4);
      }
      time_tile<W4s6>("W4s6", 1024, n, k, Format::kNf4);
    }
    return 0;
  }
  if (argc > 1 && std::string(argv[1]) == "wg") {  // the transposed candidates
    for (auto [k, n] : {std::pair{8192, 28672}, std::pair{28672, 8192}}) {
      for (int m : {64}) {
        time_tile<W5>("W5", m, n, k, Format::kS4);
        time_tile<W6>("W6", m, n, k, Format::kS4);
        time_tile<TS1>("S1", m, n, k, Format::kS4);
        time_tile<W5>("W5", m, n, k, Format::kNf4);
      }
      for (int m : {256, 1024, 4096}) {
        time_tile<W1>("W1", m, n, k, Format::kS4);
        time_tile<W2>("W2", m, n, k, Format::kS4);
        time_tile<W3>("W3", m, n, k, Format::kS4);
        time_tile<W4>("W4", m, n, k, Format::kS4);
        time_tile<W7>("W7", m, n, k, Format::kS4);
      }
    }
    return 0;
  }
  for (auto [k, n] : {std::pair{8192, 28672}, std::pair{28672, 8192}}) {
    for (int m : {1, 16}) {
      time_tile<TD1>("D1", m, n, k, Format::kS4);
      time_tile<TD4>("D4", m, n, k, Format::kS4);
      time_tile<TD5>("D5", m, n, k, Format::kS4);
      time_tile<TD1>("D1", m, n, k, Format::kNf4);
    }
    time_tile<TS1>("S1", 64, n, k, Format::kS4);
    time_tile<TS2>("S2", 64, n, k, Format::kS4);
    time_tile<TS3>("S3", 32, n, k, Format::kS4);
    time_tile<TS3>("S3", 64, n, k, Format::kS4);
    time_tile<TD1>("D1", 32, n, k, Format::kS4);
    time_tile<TL1>("L1", 256, n, k, Format::kS4);
    time_tile<TS2>("S2", 256, n, k, Format::kS4);
    for (int m : {4096}) {
      time_tile<TL1>("L1", m, n, k, Format::kS4);
      time_tile<TL2>("L2", m, n, k, Format::kS4);
      time_tile<TL3>("L3", m, n, k, Format::kS4);
    }
  }
#else
  (void)argc, (void)argv;
  printf("usage: tune_tiles h200   (the H100 sweeps: build with -DNIBBLE_TUNE_H100_MODES)\n");
#endif
}
