// tests/gemm/test_gemm_run.cu — gemm::run against the float64 host reference: the GPU oracles. The only
// TU of test_gemm_run that calls gemm::run (every GEMM kernel compiles here, once).
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
// (tests/common/reference.hpp, tests/common/gemm_run.hpp: the reference and the run harness.)
//
// The oracle sweeps are parameterised: one case per (activation type, format, group, M, N, K, mainloop),
// named after it, e.g. Gemm_BitExact.Oracle/f16_s4_g128_M17_N300_K1152_wgmma; rerun one with
//   ./test_gemm_run --gtest_filter='Gemm_BitExact.Oracle/f16_s4_g128_M17_N300_K1152_wgmma'
// NIBBLE_QUICK=1 (set under compute-sanitizer) runs only the small N100 cases of the sweeps (the others
// report SKIPPED) and shrinks the shape lists of the other tests. NIBBLE_SEED replays inputs. wgmma cases
// exist where the build has sm_90a device code (NIBBLE_SM90A) and report SKIPPED on other devices.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <nibble/detail/ptx.cuh>
#include <nibble/gemm/extern_instances.cuh>  // kernels: nibble_gemm_kernels
#include <nibble/gemm/gemm.cuh>
#include <random>
#include <string>
#include <vector>

#include "common/check.hpp"
#include "common/device_buffer.hpp"
#include "common/gemm_api.hpp"
#include "common/gemm_run.hpp"
#include "common/gpu.hpp"
#include "common/host_weights.hpp"
#include "common/names.hpp"
#include "common/random.hpp"
#include "common/reference.hpp"

namespace {

// ================================== GPU: gemm::run oracles ===================================================

/// One case of the oracle sweeps. The full sweep: all groups x formats, M in {1, 17, 130} (decode, the 64-
/// and 128-token transposed / the mma.sync small and large tiles), N = 300 (a partial atom and a partial
/// tile), out fp32 (with bias) and T (without). The quick sweep (N = 100, M in {1, 17, 70}, smaller K):
/// one output type and bias choice per case. The 256-token tile: EdgeShapes and LeadingDimensions (M > 256).
struct OracleCase {
  DType act;
  Format format;
  int group;
  Data data;
  int64_t m, n, k;
  gemm::Mainloop mainloop;
  bool quick;  // part of the NIBBLE_QUICK=1 sweep
  int index;   // position in its quick sweep: picks the output type and bias
};

std::string oracle_name(const ::testing::TestParamInfo<OracleCase>& info) {
  const OracleCase& c = info.param;
  return std::string(dtype_name(c.act)) + "_" + nibble::to_string(c.format) + "_" + group_name(c.group) + "_M" +
         std::to_string(c.m) + "_N" + std::to_string(c.n) + "_K" + std::to_string(c.k) + "_" +
         mainloop_name(c.mainloop);
}

/// Every mainloop M runs with in this build for format f. Independent of the device, so that the case list (and
/// CTest's names) is the same everywhere; run_oracle skips wgmma where the device has none.
std::vector<gemm::Mainloop> built_mainloops(int64_t m, Format f) {
  // auto: the stream kernel on small weights (stream_preferred; never for affine u4); mma: the mma.sync
  // decode tile up to M = 16
  if (m <= 16) return {gemm::Mainloop::kAuto, gemm::Mainloop::kMmaSync};
  std::vector<gemm::Mainloop> v{gemm::Mainloop::kMmaSync, gemm::Mainloop::kTransposedMma};
  if (m <= gemm::kStreamMaxM && gemm::stream_serves(f)) v.push_back(gemm::Mainloop::kStream);
#if defined(NIBBLE_SM90A)
  v.push_back(gemm::Mainloop::kWgmma);
#endif
  return v;
}

std::vector<OracleCase> oracle_cases(std::initializer_list<Format> formats, Data data) {
  std::vector<OracleCase> out;
  for (DType act : {kF16, kBF16})
    for (bool quick : {false, true}) {
      const int64_t n = quick ? 100 : 300;
      const std::vector<int64_t> ms = quick ? std::vector<int64_t>{1, 17, 70} : std::vector<int64_t>{1, 17, 130};
      int index = 0;
      for (Format f : formats)
        for (int g : kAllGroups)
          for (int64_t m : ms)
            for (gemm::Mainloop ml : built_mainloops(m, f))
              out.push_back({act, f, g, data, m, n, k_for_group(g, quick), ml, quick, ++index});
    }
  return out;
}

void run_oracle(const OracleCase& c) {
  if (quick_mode() && !c.quick) GTEST_SKIP() << "SKIPPED: NIBBLE_QUICK=1 runs only the N100 cases of the sweep";
  if (c.mainloop == gemm::Mainloop::kWgmma && !gemm::wgmma_available())
    GTEST_SKIP() << "SKIPPED: no wgmma on this device (Gemm_Wgmma.* says why)";
  auto rng = nibble_test_rng();
  const HostWeights w = make_weights(rng, c.format, c.group, c.n, c.k, c.act, c.data);
  const DeviceWeights dw = upload_and_repack(w, c.act);
  const HostProblem p = make_problem(rng, c.act, w, c.m, c.data);
  const DeviceActs da = upload_acts(p);
  const Samples s = reference(p, rng);
  // affine u4 never runs the stream kernel (kAuto takes the decode / mma.sync / transposed tiles for it)
  auto check_tile = [&](const RunResult& r) {
    if (!gemm::stream_serves(c.format)) EXPECT_FALSE(gemm::tile_config(r.plan.kind).stream) << oracle_name({c, 0});
  };
  if (c.quick) {  // one output type per case
    RunOpts o;
    o.out = c.index % 2 ? c.act : kF32;
    o.bias = c.index % 3 == 0;
    o.mainloop = c.mainloop;
    check_tile(run_and_check(p, dw, da, s, o));
    return;
  }
  for (DType out : {kF32, c.act}) {
    RunOpts o;
    o.out = out;
    o.bias = out == kF32;
    o.mainloop = c.mainloop;
    check_tile(run_and_check(p, dw, da, s, o));
  }
}

void PrintTo(const OracleCase& c, std::ostream* os) { *os << oracle_name({c, 0}); }

class Gemm_BitExact : public ::testing::TestWithParam<OracleCase> {};
class Gemm_Statistical : public ::testing::TestWithParam<OracleCase> {};

TEST_P(Gemm_BitExact, Oracle) {
  NIBBLE_REQUIRE_GPU();
  run_oracle(GetParam());
}

TEST_P(Gemm_Statistical, Oracle) {
  NIBBLE_REQUIRE_GPU();
  run_oracle(GetParam());
}

// Affine u4 (kAU4) in both: exact with m = -c * s (c in 0..15) and power-of-two s, statistical with
// m = (-8 + N(0,1) / 2) * s (GGUF Q4_1-like offsets, large against the scale: a kernel that dropped them fails).
INSTANTIATE_TEST_SUITE_P(, Gemm_BitExact, ::testing::ValuesIn(oracle_cases({kS4, kU4, kAU4}, Data::kExact)),
                         oracle_name);
INSTANTIATE_TEST_SUITE_P(, Gemm_Statistical,
                         ::testing::ValuesIn(oracle_cases({kS4, kU4, kNf4, kFp4, kAU4}, Data::kRandom)), oracle_name);

// ================================== GPU: edge shapes =========================================================

TEST(Gemm_EdgeShapes, EveryMWithOneWeight) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  const bool quick = quick_mode();
  const int64_t n = quick ? 272 : 2880, k = quick ? 576 : 2880;
  // (tile edges: decode 16, decode32 32, decode48 48, the 64-, 128- and 256-token tiles)
  const std::vector<int64_t> ms =
      quick ? std::vector<int64_t>{1, 2, 7, 8, 15, 16, 17, 31, 33, 48, 49, 64, 65, 127, 128, 129}
            : std::vector<int64_t>{1, 2, 7, 8, 15, 16, 17, 31, 32, 33, 48, 49, 64, 127, 128, 257, 1024};
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
      quick_mode() ? std::vector<Config>{{144, 736, 32, kNf4, kBF16},
                                         {80, 264, kPC, kS4, kF16},
                                         {200, 512, 256, kU4, kBF16},
                                         {112, 4160, 32, kAU4, kF16}}
                   : std::vector<Config>{{2880, 2880, 64, kS4, kF16},    {4304, 4096, 128, kU4, kBF16},
                                         {7392, 4096, 256, kNf4, kF16},  {11008, 4096, 128, kFp4, kBF16},
                                         {4096, 14336, 128, kS4, kBF16}, {4096, 11008, 256, kU4, kF16},
                                         {256, 7392, 32, kNf4, kBF16},   {2880, 4304, kPC, kS4, kF16},
                                         {4096, 4096, 32, kAU4, kF16},   {4304, 2880, 64, kAU4, kBF16}};
  const int64_t ms[] = {1, 17, 257};
  for (const Config& cfg : configs) {
    // affine u4 on random data: its statistical oracle (GGUF-like offsets) at model shapes
    const Data data = cfg.f == kS4 || cfg.f == kU4 ? Data::kExact : Data::kRandom;
    const HostWeights w = make_weights(rng, cfg.f, cfg.group, cfg.n, cfg.k, cfg.act, data);
    const DeviceWeights dw = upload_and_repack(w, cfg.act);
    for (int64_t m : ms) {
      const HostProblem p = make_problem(rng, cfg.act, w, m, data);
      const DeviceActs da = upload_acts(p);
      const Samples s = reference(p, rng);
      for (gemm::Mainloop ml : mainloops_for(m, cfg.f)) {
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
                            {kBF16, kFp4, 32, quick ? 224 : 992, Data::kRandom},
                            {kF16, kAU4, 64, quick ? 320 : 1088, Data::kExact}};
  const int64_t n = quick ? 100 : 300;
  struct View {
    int64_t lda_pad, ldc_pad, c_offset;
    bool bias, out_f32;
  };
  const View views[] = {{8, 5, 0, true, true},      // odd ldc: no pair stores
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
        for (gemm::Mainloop ml : mainloops_for(m, cfg.f)) {
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

// ================================== GPU: the warp-streamed decode kernel =====================================

/// The stream kernel's partition on shapes that reach every branch of it: a weight of one atom (15 of 16
/// warps without work), columns split between warps, warps spanning whole columns (few SMs: one CTA holds
/// every column), several K slices (forced split-K, or a shared-memory limit that shrinks the slice),
/// padded atoms (K % 64 != 0, N % 16 != 0), 32-long groups (two scale rows per atom), per-channel, u4
/// zeros, both codebook tables, M at every token-tile edge. Exact data: C must equal the float64 reference
/// and be bit-identical across the partitions (every order of exact sums gives the same C).
TEST(Gemm_Stream, PartitionsAgainstTheOracleAndEachOther) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  const bool quick = quick_mode();
  struct Config {
    int64_t n, k;
    int group;
    Format f;
    DType act;
    Data data;
  };
  const std::vector<Config> configs = {
      {16, 64, 32, kS4, kF16, Data::kExact},
      {48, 640, 64, kU4, kBF16, Data::kExact},
      {300, 1152, 128, kS4, kF16, Data::kExact},
      {100, 200, kPC, kNf4, kF16, Data::kRandom},
      {72, 992, 32, kU4, kF16, Data::kExact},
      {136, 1024, 64, kFp4, kBF16, Data::kRandom},
      {64, 4096, 128, kNf4, kF16, Data::kRandom},  // a K slice above 48 atoms with the register table
      // 1024 atoms: on one SM (part 2) M <= 8 runs stream_m8_l (chunks of 8), bit-identical to stream_m8
      {512, 2048, 128, kS4, kF16, Data::kExact},
      {256, 4096, 32, kU4, kBF16, Data::kExact},
      {72, 992, 32, kAU4, kF16, Data::kExact},  // affine u4: offsets in the stage, g32 (two rows per atom)
      {512, 2048, 128, kAU4, kBF16, Data::kExact}};
  const std::vector<int64_t> ms =
      quick ? std::vector<int64_t>{1, 9, 32} : std::vector<int64_t>{1, 3, 8, 9, 16, 17, 24, 32};
  struct Part {
    int split_k, sm_count, max_smem;
    gemm::CodebookTable table;
  };
  const Part parts[] = {{0, 0, 0, gemm::CodebookTable::kAuto},      {1, 1, 0, gemm::CodebookTable::kAuto},
                        {3, 2, 0, gemm::CodebookTable::kRegisters}, {5, 0, 0, gemm::CodebookTable::kSharedMemory},
                        {0, 0, 0, gemm::CodebookTable::kRegisters}, {0, 7, 101376, gemm::CodebookTable::kAuto}};
  for (const Config& cfg : configs) {
    const HostWeights w = make_weights(rng, cfg.f, cfg.group, cfg.n, cfg.k, cfg.act, cfg.data);
    const DeviceWeights dw = upload_and_repack(w, cfg.act);
    for (int64_t m : ms) {
      const HostProblem p = make_problem(rng, cfg.act, w, m, cfg.data, m % 2 ? 8 : 0);
      const DeviceActs da = upload_acts(p);
      const Samples s = reference(p, rng);
      std::vector<uint8_t> first;
      for (const Part& part : parts) {
        RunOpts o;
        o.out = kF32;
        o.bias = m % 3 != 0;
        o.mainloop = gemm::Mainloop::kStream;
        o.split_k = part.split_k;
        o.sm_count = part.sm_count;
        o.max_smem = part.max_smem;
        o.codebook_table = is_codebook(cfg.f) ? part.table : gemm::CodebookTable::kAuto;
        const RunResult r = run_and_check(p, dw, da, s, o);
        SCOPED_TRACE(p.name() + " " + o.name());
        int sms = part.sm_count;
        if (sms == 0) ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
        // the stream tile run() picks (stream_m8_l on long runs: few SMs), or its Fewer tile where that fits
        const gemm::TileKind sk =
            gemm::choose_tile(m, gemm::Mainloop::kStream, cfg.f, gemm::stream_atoms_per_sm(cfg.n, cfg.k, sms));
        auto fits_in = [&](const gemm::TileConfig& sc) {
          return part.max_smem == 0 || sc.stream_fixed_bytes() + (is_codebook(cfg.f) ? sc.codebook_bytes() : 0) +
                                               sc.stream_act_atom_bytes(m) <=
                                           part.max_smem;
        };
        const bool fits = fits_in(gemm::tile_config(sk)) || fits_in(gemm::tile_config(gemm::tile_fewer(sk)));
        if (fits)
          EXPECT_TRUE(gemm::tile_config(r.plan.kind).stream)
              << "not the stream kernel: " << gemm::tile_name(r.plan.kind);
        if (first.empty()) {
          first = r.c;
        } else if (p.exact()) {
          EXPECT_TRUE(r.c == first) << "C differs from the first partition's";
        }
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
                                {3, 128, 1024, 64, kNf4, kF16, Data::kRandom},
                                {17, 160, 1024, 32, kAU4, kF16, Data::kExact}}
          : std::vector<Config>{
                {1, 4096, 14336, 128, kS4, kF16, Data::kExact}, {17, 2880, 2880, 64, kU4, kBF16, Data::kExact},
                {257, 256, 7392, 32, kS4, kBF16, Data::kExact}, {5, 4304, 4096, kPC, kU4, kF16, Data::kExact},
                {3, 1024, 4096, 64, kNf4, kF16, Data::kRandom}, {40, 512, 4096, 128, kFp4, kBF16, Data::kRandom},
                {1, 2880, 4096, 32, kAU4, kBF16, Data::kExact}, {130, 512, 4096, 128, kAU4, kF16, Data::kExact}};
  for (const Config& cfg : configs) {
    const HostWeights w = make_weights(rng, cfg.f, cfg.group, cfg.n, cfg.k, cfg.act, cfg.data);
    const DeviceWeights dw = upload_and_repack(w, cfg.act);
    const HostProblem p = make_problem(rng, cfg.act, w, cfg.m, cfg.data);
    const DeviceActs da = upload_acts(p);
    const Samples s = reference(p, rng);
    for (gemm::Mainloop ml : mainloops_for(cfg.m, cfg.f))
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
    const std::size_t ws_bytes = workspace_size(args);
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
  const std::size_t b1 = workspace_size(a1), b2 = workspace_size(a2);
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
  const HostProblem small = make_problem(rng, kF16, w, 1, Data::kExact);  // decode tile: small partials
  const HostProblem big = make_problem(rng, kF16, w, 64, Data::kExact);   // 64-row tile: 4x the partials
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
  const std::size_t need = workspace_size(args);
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
  // A larger workspace than needed is fine, and split_k = 1 on the mma.sync tiles needs none (a stream plan
  // raises it where one K slice of A does not fit its shared memory).
  EXPECT_STATUS(Status::kSuccess, gemm::run(args, ws.get(), need + 16, nullptr));
  gemm::Arguments one = args;
  one.split_k = 1;
  one.mainloop = gemm::Mainloop::kMmaSync;
  EXPECT_EQ(workspace_size(one), 0u);
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
      rng, quick ? 144 : 300, quick ? 256 : 640, {kS4, kU4, kNf4, kFp4, kAU4},
      [&](DType act, Format f) { return !(quick && act == kBF16 && f != kNf4); },
      [&](const HostProblem& p, const DeviceWeights& dw, const DeviceActs& da, const Samples& s, gemm::Mainloop ml) {
        RunOpts o;
        o.out = kF32;
        o.mainloop = ml;
        o.max_smem = k99KiB;
        const RunResult r = run_and_check(p, dw, da, s, o);
        const gemm::TileConfig c = gemm::tile_config(r.plan.kind);
        if (c.stream)  // launched with the plan's bytes (its K slice), table included
          EXPECT_LE(r.plan.smem_bytes + gemm::kStreamStaticBytes, k99KiB) << p.name() << " " << o.name();
        else
          EXPECT_LE(c.smem_bytes(p.w->format), k99KiB) << p.name() << " " << o.name();
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

// ================================== GPU: affine u4 =========================================================

// What run() refuses for affine u4, before any launch (C stays poison): null or misaligned offsets; the
// device repack overload without an offsets buffer. A forced kStream runs the stream kernel up to kStreamMaxM
// (what kAuto runs above) and passes the oracle. Two runs of the same affine GEMM are bit-identical (split-K
// forced, so the reduction order is exercised too).
TEST(Gemm_Affine, RefusalsAndDeterminism) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  const HostWeights w = make_weights(rng, kAU4, 32, 96, 1024, kF16, Data::kRandom);
  const DeviceWeights dw = upload_and_repack(w, kF16);
  {
    DevBuf pc = to_device(w.codes), ps = to_device(w.scales), po = to_device(w.offsets);
    const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(kAU4, w.n, w.k, w.group, kF16);
    DevBuf c(b.codes), sc(b.scales);
    GemmWeights v;
    EXPECT_STATUS(Status::kErrorNullPointer, nibble::repack(w.view(pc.get(), ps.get(), nullptr, po.get()), kF16,
                                                            c.get(), sc.get(), nullptr, &v, nullptr));
  }
  for (int64_t m : {1, 17, 32, 33}) {
    const HostProblem p = make_problem(rng, kF16, w, m, Data::kRandom);
    const DeviceActs da = upload_acts(p);
    const std::size_t bytes = std::size_t(m * p.n()) * 4;
    DevBuf c(bytes);
    CUDA_CHECK(cudaMemset(c.get(), 0xFF, bytes));
    RunOpts o;
    o.mainloop = gemm::Mainloop::kStream;
    gemm::Arguments args = make_args(p, dw, da, o, c.get());
    SCOPED_TRACE(p.name());
    EXPECT_STATUS(Status::kSuccess, gemm::can_implement(args));
    const RunResult streamed = run_and_check(p, dw, da, reference(p, rng), o);
    EXPECT_EQ(gemm::tile_config(streamed.plan.kind).stream, m <= gemm::kStreamMaxM)
        << gemm::tile_name(streamed.plan.kind);
    args.mainloop = gemm::Mainloop::kAuto;
    gemm::Arguments bad = args;
    bad.w.offsets = nullptr;
    EXPECT_STATUS(Status::kErrorNullPointer, gemm::run(bad, nullptr, 0, nullptr));
    bad.w.offsets = static_cast<const char*>(args.w.offsets) + 2;
    EXPECT_STATUS(Status::kErrorMisalignedPointer, gemm::run(bad, nullptr, 0, nullptr));
    CUDA_CHECK(cudaDeviceSynchronize());
    {
      const std::vector<uint8_t> poison = c.download<uint8_t>();
      EXPECT_EQ(std::count(poison.begin(), poison.end(), uint8_t(0xFF)), std::ptrdiff_t(bytes))
          << "a refused run wrote C";
    }
    // determinism: split-K 3, twice
    args.split_k = 3;
    const std::size_t ws_bytes = workspace_size(args);
    DevBuf ws(ws_bytes);
    if (ws_bytes > 0) CUDA_CHECK(cudaMemset(ws.get(), 0, ws_bytes));
    std::vector<uint8_t> first;
    for (int rep = 0; rep < 2; ++rep) {
      CUDA_CHECK(cudaMemset(c.get(), 0xFF, bytes));
      NIBBLE_CHECK(gemm::run(args, ws.get(), ws_bytes, nullptr));
      CUDA_CHECK(cudaDeviceSynchronize());
      const std::vector<uint8_t> got = c.download<uint8_t>();
      if (rep == 0)
        first = got;
      else
        EXPECT_TRUE(got == first) << "two runs of the same affine GEMM differ";
    }
  }
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
      [&](const HostProblem& p, const DeviceWeights& dw, const DeviceActs& da, const Samples& s, gemm::Mainloop ml) {
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

// ================================== GPU: compact double-quantized scales =====================================

// repack_dq keeps a double-quantized nf4 / fp4 weight's 8-bit scale codes, absmax2 and offset, and every
// kernel decodes them to the scales repack() writes from the same source: C from the compact layout is
// repack()'s C bit for bit, for every tile family (and both tables), group size and M; both pass the
// statistical oracle of the expanded weight. K = 19200 at g = 64 gives 300 groups per row: second-level
// blocks that start inside rows (the plain order's 256-blocks of N x groups).
TEST(Gemm_DoubleQuant, CompactScalesGiveTheExpandedScalesC) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  struct Shape {
    int group;
    int64_t n, k;
  };
  const bool quick = quick_mode();
  const std::vector<Shape> shapes =
      quick ? std::vector<Shape>{{64, 392, 1088}}  // (the sanitizers: one shape, M = 1 / 17 / 130)
            : std::vector<Shape>{{64, 392, 1088}, {32, 136, 992}, {kPC, 200, 1000}, {128, 264, 1152}, {64, 48, 19200}};
  // One weight, double-quantized: expanded to 16-bit scales (repack) and compact (repack_dq).
  struct DqPair {
    HostWeights expanded;
    DeviceWeights full, compact;
  };
  auto make_pair = [&](DType act, Format f, const Shape& sh) {
    const HostWeights w = make_weights(rng, f, sh.group, sh.n, sh.k, kF32, Data::kRandom);
    const HostDq dq = make_dq(w);
    DqPair d{expand_dq(w, dq), {}, {}};
    d.full = upload_and_repack(d.expanded, act);
    d.compact = upload_and_repack_dq(w, dq, act);
    return d;
  };
  int compared = 0;
  // C of both for problem p under `o` (both pass the oracle; same plan, same bits); the compact run's plan.
  auto compare = [&](const HostProblem& p, const DeviceActs& da, const Samples& smp, const DqPair& d,
                     const RunOpts& o) {
    SCOPED_TRACE(p.name() + " " + o.name());
    const RunResult full = run_and_check(p, d.full, da, smp, o);
    const RunResult compact = run_and_check(p, d.compact, da, smp, o);
    // the same plan, but where the expanded weight runs ws_large (16-bit scales only): then wg_large, the same
    // 256 x 128 tile, k-step order and splits on the cp.async pipeline
    if (full.plan.kind == gemm::tile_kind<gemm::TileWsLarge>) {
      EXPECT_EQ(int(compact.plan.kind), int(gemm::tile_kind<gemm::TileWgLarge>));
      EXPECT_EQ(full.plan.splits, compact.plan.splits);
    } else {
      EXPECT_EQ(int(full.plan.kind), int(compact.plan.kind));
    }
    EXPECT_TRUE(full.c == compact.c) << "compact dq scales give another C than the expanded ones";
    ++compared;
    return compact.plan;
  };
  for (DType act : {kF16, kBF16})
    for (Format f : {kNf4, kFp4})
      for (const Shape& sh : shapes) {
        const DqPair d = make_pair(act, f, sh);
        ASSERT_TRUE(d.compact.view.dq_compact() && d.compact.view.scales == nullptr);
        const std::vector<int64_t> ms = quick         ? std::vector<int64_t>{1, 17, 130}
                                        : sh.k > 4096 ? std::vector<int64_t>{1, 24, 130}
                                                      : std::vector<int64_t>{1, 5, 16, 17, 24, 56, 130, 300};
        for (int64_t m : ms) {
          const HostProblem p = make_problem(rng, act, d.expanded, m, Data::kRandom);
          const DeviceActs da = upload_acts(p);
          const Samples smp = reference(p, rng);
          for (gemm::Mainloop ml : mainloops_for(m, f))
            for (gemm::CodebookTable table : {gemm::CodebookTable::kSharedMemory, gemm::CodebookTable::kRegisters}) {
              RunOpts o;
              o.mainloop = ml;
              o.codebook_table = table;
              o.out = m % 2 == 0 ? kF32 : act;
              compare(p, da, smp, d, o);
            }
        }
      }
  // The plans the shapes above do not reach: stream_m8_l (>= kStreamLongRun atoms per SM: sm_count 1; with
  // g = 32 each lane decodes 8 rows, one 16-byte store), stream_m16 (kStream forced at M = 16), forced K splits,
  // and the 99 KiB tiles (the "compact" mma.sync tiles, whose stages' sZ rows the map fills exactly).
  struct Variant {
    int64_t m;
    gemm::Mainloop ml;
    int sm_count, split_k, max_smem;
  };
  const std::vector<Variant> variants = quick ? std::vector<Variant>{{1, gemm::Mainloop::kAuto, 1, 0, 0}}
                                              : std::vector<Variant>{{1, gemm::Mainloop::kAuto, 1, 0, 0},
                                                                     {5, gemm::Mainloop::kAuto, 1, 0, 0},
                                                                     {16, gemm::Mainloop::kStream, 0, 0, 0},
                                                                     {1, gemm::Mainloop::kAuto, 0, 3, 0},
                                                                     {24, gemm::Mainloop::kMmaSync, 0, 0, 99 * 1024},
                                                                     {16, gemm::Mainloop::kMmaSync, 0, 2, 0},
                                                                     {130, gemm::Mainloop::kAuto, 0, 0, 99 * 1024}};
  const Shape long_shapes[] = {{32, 256, 4096}, {64, 272, 4160}};  // 1024 and 1105 atoms
  int long_runs = 0;
  for (DType act : {kF16, kBF16})
    for (Format f : {kNf4, kFp4})
      for (const Shape& sh : long_shapes) {
        if (quick && (act != kF16 || f != kNf4)) continue;
        const DqPair d = make_pair(act, f, sh);
        for (const Variant& v : variants) {
          const HostProblem p = make_problem(rng, act, d.expanded, v.m, Data::kRandom);
          const DeviceActs da = upload_acts(p);
          const Samples smp = reference(p, rng);
          RunOpts o;
          o.mainloop = v.ml;
          o.sm_count = v.sm_count;
          o.split_k = v.split_k;
          o.max_smem = v.max_smem;
          o.out = act;
          const gemm::Plan plan = compare(p, da, smp, d, o);
          if (v.sm_count == 1 && v.m == 1)
            EXPECT_STREQ(gemm::tile_name(plan.kind), "stream_m8_l") << "the long-run stream tile";
          long_runs += gemm::tile_name(plan.kind) == std::string("stream_m8_l");
        }
      }
  EXPECT_GT(long_runs, 0);
  std::printf("[nibble] compact vs expanded dq scales: %d GEMMs compared (%d on stream_m8_l)\n", compared, long_runs);
}

// The compact layout's refusals: a format other than nf4 / fp4, no dq_stats, scales and dq codes both set,
// misaligned dq buffers; the compact buffers are 4.127 bits per weight at g = 64 on 8192 x 28672.
TEST(Gemm_DoubleQuant, RefusalsAndSize) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  const HostWeights w = make_weights(rng, kNf4, 64, 64, 512, kF32, Data::kRandom);
  const HostDq dq = make_dq(w);
  const DeviceWeights dc = upload_and_repack_dq(w, dq, kF16);
  const HostProblem p = make_problem(rng, kF16, expand_dq(w, dq), 4, Data::kRandom);
  const DeviceActs da = upload_acts(p);
  DevBuf c(std::size_t(4 * 64) * 2);
  RunOpts o;
  o.out = kF16;
  gemm::Arguments args = make_args(p, dc, da, o, c.get());
  EXPECT_STATUS(Status::kSuccess, gemm::can_implement(args));
  gemm::Arguments bad = args;
  bad.w.dq_stats = nullptr;
  EXPECT_STATUS(Status::kErrorNullPointer, gemm::can_implement(bad));
  bad = args;
  bad.w.scales = dc.codes.get();
  EXPECT_STATUS(Status::kErrorInvalidArgument, gemm::can_implement(bad));
  bad = args;
  bad.w.dq_codes = dc.dq_codes.as<uint8_t>() + 4;
  EXPECT_STATUS(Status::kErrorMisalignedPointer, gemm::can_implement(bad));
  bad = args;
  bad.w.dq_stats = dc.dq_stats.as<float>() + 1;
  EXPECT_STATUS(Status::kErrorMisalignedPointer, gemm::can_implement(bad));
  bad = args;
  bad.w.format = kS4;
  EXPECT_STATUS(Status::kErrorUnsupportedFormat, gemm::can_implement(bad));
  EXPECT_STATUS(Status::kErrorUnsupportedFormat, gemm::run(bad, nullptr, 0, nullptr));
  // 2^31 scales or more: the kernels' 32-bit code / plain-order indices would wrap (nothing is read: refused
  // before any launch; 2^31 / 2^21 rows = 1024 groups of 64 along K)
  bad = args;
  bad.w.n = int64_t(1) << 21;
  bad.w.k = 1024 * 64;
  bad.m = 1;
  bad.ldc = bad.w.n;
  bad.lda = bad.w.k;
  EXPECT_STATUS(Status::kErrorSizeOverflow, gemm::can_implement(bad));
  bad.w.k = 1023 * 64;
  bad.lda = bad.w.k;
  EXPECT_NE(gemm::can_implement(bad), Status::kErrorSizeOverflow);
  const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(kNf4, 28672, 8192, 64, kF16, true);
  const nibble::GemmWeightBytes full = nibble::gemm_weight_bytes(kNf4, 28672, 8192, 64, kF16);
  const double bits = 8.0 * double(b.total()) / (28672.0 * 8192.0),
               full_bits = 8.0 * double(full.total()) / (28672.0 * 8192.0);
  std::printf("[nibble] nf4 g64 8192 x 28672: %.4f bits per weight compact, %.4f with 16-bit scales\n", bits,
              full_bits);
  EXPECT_NEAR(bits, 4.0 + 8.0 / 64 + 32.0 / (64 * 256), 1e-4);
  EXPECT_NEAR(full_bits, 4.25, 1e-9);
  EXPECT_EQ(nibble::gemm_weight_bytes(kS4, 64, 512, 64, kF16, true).total(), 0u);
}

// What the kernels were compiled with matches what the host believes: wgmma_available() is true exactly
// where the device code of this binary issues wgmma (detail::kWgmmaCompiled in the device pass).
TEST(Gemm_Wgmma, HostAndDeviceCodeAgree) {
  NIBBLE_REQUIRE_GPU();
  const bool compiled = device_code_has_wgmma();
  EXPECT_EQ(compiled, gemm::wgmma_available());
}

// Arguments::programmatic_launch: two dependent GEMMs (C1 = A W1^T, then C2 = C1 W2^T, so the second reads
// what the first writes) in one stream and in one graph, for the decode, small and large tiles and split-K:
// bit-identical to the same chain launched without it. A kernel that read its activations before
// griddepcontrol.wait would read C1 before it is written (poisoned with NaN here).
TEST(Gemm_ProgrammaticLaunch, DependentChainIsBitIdenticalToPlainLaunches) {
  NIBBLE_REQUIRE_GPU();
  std::mt19937_64 rng = nibble_test_rng();
  const int64_t k1 = 1024, n1 = 512, n2 = 768;  // GEMM 1: [M, 1024] x [512, 1024]^T; GEMM 2: [M, 512] x [768, 512]^T
  const HostWeights w1 = make_weights(rng, kS4, 128, n1, k1, kF16, Data::kRandom);
  // GEMM 2's nf4 weight is double-quantized, once expanded to 16-bit scales and once compact (repack_dq: its
  // codes and absmax2 are loaded before griddepcontrol.wait under a dependent launch): all 8 runs give one C.
  const HostWeights w2q = make_weights(rng, kNf4, 64, n2, n1, kF16, Data::kRandom);
  const HostDq dq2 = make_dq(w2q);
  const HostWeights w2 = expand_dq(w2q, dq2);
  const DeviceWeights d1 = upload_and_repack(w1, kF16), d2 = upload_and_repack(w2, kF16),
                      d2c = upload_and_repack_dq(w2q, dq2, kF16);
  for (int64_t m : {int64_t(1), int64_t(16), int64_t(40), int64_t(300)}) {
    SCOPED_TRACE("M" + std::to_string(m));
    const std::vector<float> af = nibble_test_normal(rng, std::size_t(m * k1));
    std::vector<__half> ah(af.size());
    for (std::size_t i = 0; i < af.size(); ++i) ah[i] = __float2half(af[i]);
    const DevBuf a = to_device(ah);
    DevBuf c1(std::size_t(m * n1) * 2), c2(std::size_t(m * n2) * 2);
    auto args_for = [&](const void* in, int64_t k, const GemmWeights& w, void* out, int64_t n, bool pdl) {
      gemm::Arguments g;
      g.m = m;
      g.a = in;
      g.lda = k;
      g.w = w;
      g.c = out;
      g.ldc = n;
      g.programmatic_launch = pdl;
      return g;
    };
    std::vector<std::vector<uint16_t>> results;
    for (const DeviceWeights* second : {&d2, &d2c})
      for (bool pdl : {false, true})
        for (bool graph : {false, true}) {
          const gemm::Arguments g1 = args_for(a.get(), k1, d1.view, c1.get(), n1, pdl);
          const gemm::Arguments g2 = args_for(c1.get(), n1, second->view, c2.get(), n2, pdl);
          const std::size_t ws_bytes = std::max(workspace_size(g1), workspace_size(g2));
          DevBuf ws(std::max<std::size_t>(ws_bytes, 16));
          CUDA_CHECK(cudaMemset(ws.get(), 0, ws.size()));
          CUDA_CHECK(cudaMemset(c1.get(), 0xFF, c1.size()));  // NaN until GEMM 1 writes it
          CUDA_CHECK(cudaMemset(c2.get(), 0xFF, c2.size()));
          Stream stream;
          auto body = [&](cudaStream_t s) -> Status {
            NIBBLE_RETURN_IF_ERROR(gemm::run(g1, ws.get(), ws.size(), s));
            return gemm::run(g2, ws.get(), ws.size(), s);
          };
          if (graph) {
            GraphExec exec;
            capture(stream.s, exec, body);
            CUDA_CHECK(cudaGraphLaunch(exec.exec, stream.s));
          } else {
            ASSERT_EQ(body(stream.s), Status::kSuccess);
          }
          CUDA_CHECK(cudaStreamSynchronize(stream.s));
          results.push_back(c2.download<uint16_t>());
        }
    bool finite = true;
    for (uint16_t bits : results[0]) finite = finite && (bits & 0x7C00) != 0x7C00;
    EXPECT_TRUE(finite) << "plain launches left NaN / Inf in C2";
    for (std::size_t r = 1; r < results.size(); ++r)
      EXPECT_TRUE(results[r] == results[0])
          << "variant " << r << " (compact dq = " << (r >= 4) << ", pdl = " << ((r / 2) % 2) << ", graph = " << (r % 2)
          << ") differs from plain launches with expanded scales";
  }
}
