// tests/gemm/test_gemm_plan.cu — the GEMM host API on the CPU: can_implement's documented Status for every
// rejected argument, the launch plan's invariants for explicit device limits (never the GPU this runs on),
// the shared-memory fitting, and the same Status for the same bad weight from every entry point
// (quantize, repack, gemm). Never instantiates gemm::run. (Moved from tests/test_gemm.cu, plus the
// entry-point consistency cases.)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nibble/detail/tma.cuh>
#include <nibble/format/format.cuh>
#include <nibble/gemm/gemm.cuh>
#include <nibble/gemm/tile_registry.cuh>
#include <nibble/layout/gemm_layout.cuh>
#include <nibble/layout/repack.cuh>
#include <nibble/quant/quantize.cuh>
#include <nibble/status.cuh>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/check.hpp"
#include "common/gemm_api.hpp"
#include "common/gpu.hpp"
#include "common/host_weights.hpp"
#include "common/names.hpp"
#include "common/random.hpp"

namespace {

// ================================== CPU: can_implement and the plan =======================================

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
  EXPECT_STATUS(Status::kSuccess, mutated(u4, [](A& a) {
                  a.w.format = kS4;
                  a.w.zeros = nullptr;
                }));
  // group size
  EXPECT_STATUS(Status::kErrorGroupSize, mutated(u4, [](A& a) { a.w.k = a.lda = 4160; }));  // 4160 % 128
  EXPECT_STATUS(Status::kErrorGroupSize, mutated(u4, [](A& a) { a.w.k = a.lda = 2880; }));  // 2880 % 128
  EXPECT_STATUS(Status::kErrorGroupSize, mutated(u4, [](A& a) { a.w.group_size = 16; }));
  EXPECT_STATUS(Status::kErrorGroupSize, mutated(u4, [](A& a) { a.w.group_size = 512; }));
  EXPECT_STATUS(Status::kErrorGroupSize, mutated(u4, [](A& a) { a.w.group_size = -1; }));
  EXPECT_STATUS(Status::kSuccess, mutated(u4, [](A& a) {
                  a.w.group_size = kPC;
                  a.w.k = a.lda = 4304;
                }));
  // shapes
  EXPECT_STATUS(Status::kErrorInvalidShape, mutated(u4, [](A& a) {
                  a.w.group_size = kPC;
                  a.w.k = a.lda = 4100;
                }));
  EXPECT_STATUS(Status::kErrorInvalidShape, mutated(u4, [](A& a) {
                  a.w.group_size = kPC;
                  a.w.k = a.lda = 4;
                }));
  EXPECT_STATUS(Status::kErrorInvalidShape, mutated(u4, [](A& a) { a.m = 0; }));
  EXPECT_STATUS(Status::kErrorInvalidShape, mutated(u4, [](A& a) { a.m = -3; }));
  EXPECT_STATUS(Status::kErrorInvalidShape, mutated(u4, [](A& a) { a.w.n = 0; }));
  EXPECT_STATUS(Status::kErrorInvalidShape, mutated(u4, [](A& a) { a.w.k = 0; }));
  // leading dimensions
  EXPECT_STATUS(Status::kErrorLeadingDimension, mutated(u4, [](A& a) { a.lda = a.w.k - 8; }));
  EXPECT_STATUS(Status::kErrorLeadingDimension, mutated(u4, [](A& a) { a.ldc = a.w.n - 1; }));
  EXPECT_STATUS(Status::kSuccess, mutated(u4, [](A& a) {
                  a.lda = a.w.k + 8;
                  a.ldc = a.w.n + 3;
                }));
  // alignment
  EXPECT_STATUS(Status::kErrorMisalignedPointer, mutated(u4, [&](A& a) { a.a = off(a.a, 2); }));  // a + 1 element
  EXPECT_STATUS(Status::kErrorMisalignedPointer, mutated(u4, [&](A& a) { a.a = off(a.a, 8); }));
  EXPECT_STATUS(Status::kErrorMisalignedPointer, mutated(u4, [](A& a) { a.lda = a.w.k + 4; }));
  EXPECT_STATUS(Status::kErrorMisalignedPointer,
                mutated(u4, [&](A& a) { a.w.codes = static_cast<const uint8_t*>(off(a.w.codes, 8)); }));
  EXPECT_STATUS(Status::kErrorMisalignedPointer, mutated(u4, [&](A& a) { a.w.scales = off(a.w.scales, 2); }));
  EXPECT_STATUS(Status::kErrorMisalignedPointer,
                mutated(u4, [&](A& a) { a.w.zeros = static_cast<const uint8_t*>(off(a.w.zeros, 1)); }));
  EXPECT_STATUS(Status::kErrorMisalignedPointer, mutated(u4, [&](A& a) { a.c = off(a.c, 1); }));
  EXPECT_STATUS(Status::kSuccess, mutated(u4, [&](A& a) { a.c = off(a.c, 2); }));  // one T element
  EXPECT_STATUS(Status::kErrorMisalignedPointer, mutated(u4, [&](A& a) {
                  a.out_type = kF32;
                  a.c = off(a.c, 2);
                }));
  EXPECT_STATUS(Status::kSuccess, mutated(u4, [&](A& a) {
                  a.out_type = kF32;
                  a.c = off(a.c, 4);
                }));
  EXPECT_STATUS(Status::kErrorMisalignedPointer, mutated(u4, [&](A& a) { a.bias = off(a.bias, 1); }));
  // types and formats
  EXPECT_STATUS(Status::kErrorUnsupportedFormat, mutated(u4, [](A& a) {
                  a.act_type = kF32;
                  a.w.scale_type = kF32;
                  a.out_type = kF32;
                }));
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
  EXPECT_STATUS(Status::kErrorSizeOverflow, mutated(u4, [](A& a) {
                  a.m = int64_t(1) << 30;
                  a.ldc = int64_t(1) << 33;
                }));
  EXPECT_STATUS(Status::kErrorSizeOverflow, mutated(u4, [](A& a) {
                  a.m = int64_t(1) << 30;
                  a.lda = int64_t(1) << 33;
                }));
  // other arguments
  EXPECT_STATUS(Status::kErrorInvalidArgument, mutated(u4, [](A& a) { a.split_k = -1; }));
  EXPECT_STATUS(Status::kErrorInvalidArgument, mutated(u4, [](A& a) { a.mainloop = gemm::Mainloop(7); }));
  EXPECT_STATUS(Status::kErrorInvalidArgument, mutated(u4, [](A& a) { a.codebook_table = gemm::CodebookTable(3); }));
  EXPECT_STATUS(Status::kErrorInvalidArgument, mutated(u4, [](A& a) { a.sm_count = -1; }));
  EXPECT_STATUS(Status::kErrorInvalidArgument, mutated(u4, [](A& a) { a.max_smem_per_block = -1; }));
  // get_workspace_size reports the argument's problem (before any device query), leaving bytes alone
  gemm::Arguments bad = u4;
  bad.a = nullptr;
  bad.split_k = 4;
  std::size_t bytes = 12345;
  EXPECT_STATUS(Status::kErrorNullPointer, gemm::get_workspace_size(bad, &bytes));
  EXPECT_EQ(bytes, 12345u);
  EXPECT_STATUS(Status::kErrorNullPointer, gemm::get_workspace_size(u4, nullptr));
}

TEST(GemmCanImplement, AcceptsEveryFormatGroupTypeAndOutput) {
  for (DType act : {kF16, kBF16})
    for (DType out : {act, kF32})
      for (Format f : kGemmFormats)
        for (int g : kAllGroups)
          for (int64_t m : {1, 17, 1024}) {
            const int64_t k = g == kPC ? 4304 : 4096;
            SCOPED_TRACE(std::string(dtype_name(act)) + "->" + dtype_name(out) + " " + nibble::to_string(f) + " " +
                         group_name(g) + " M" + std::to_string(m));
            EXPECT_STATUS(Status::kSuccess, gemm::can_implement(fake_args(f, g, m, 2880, k, act, out)));
          }
}

/// The device limits a plan depends on, given explicitly so that a CPU test never reads the GPU it runs
/// on (which made this test fail on a 99 KiB GPU): opt-in shared memory per block (0: no limit, what
/// get_workspace_size uses without a GPU) and shared memory per SM.
struct DeviceLimits {
  const char* name;
  int smem_optin;   // bytes one CTA may opt in to
  int smem_per_sm;  // bytes per SM, all resident CTAs together
};
const DeviceLimits kDeviceLimits[] = {
    {"NoLimit", 0, 0},
    {"H100_H200", 232448, 228 * 1024},  // sm_90: 227 KiB opt-in, 228 KiB per SM
    {"Smem99KiB", 101376, 100 * 1024},  // sm_86 / sm_89 / sm_120: 99 KiB opt-in, 100 KiB per SM
};

/// gtest prints the case by name, not as bytes.
void PrintTo(const DeviceLimits& c, std::ostream* os) { *os << c.name; }

class GemmPlanOnDevice : public ::testing::TestWithParam<DeviceLimits> {};

TEST_P(GemmPlanOnDevice, InvariantsOverManyShapesDevicesAndSplits) {
  const DeviceLimits dev = GetParam();
  const int64_t ms[] = {1, 2, 7, 8, 15, 16, 17, 31, 63, 64, 65, 127, 128, 129, 257, 1024, 4096, 65536};
  const RepackShape nks[] = {{16, 64, 32},       {2880, 2880, 64},   {4304, 4096, 128},  {7392, 4096, 256},
                             {11008, 4096, 128}, {4096, 14336, 128}, {4096, 11008, 256}, {256, 7392, 32},
                             {2880, 4304, kPC},  {1, 8, kPC},        {100, 200, kPC}};
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
            args.max_workspace_bytes = std::size_t(1) << 50;  // the cap: GemmPlan.WorkspaceNeverExceedsTheCap
            std::ostringstream name;
            name << dev.name << " M" << m << "_N" << nk.n << "_K" << nk.k << " sm_count=" << sms << " split_k=" << split
                 << " mainloop=" << mainloop_name(ml) << ": ";
            if (gemm::can_implement(args) != Status::kSuccess) {
              fail(name.str() + "rejected");
              continue;
            }
            const gemm::Plan p = plan_for(args, sms, ml, dev.smem_optin, dev.smem_per_sm);
            const gemm::TileKind wide = heuristic_tile(m, ml, kS4, gemm::stream_atoms_per_sm(nk.n, nk.k, sms), nk.n);
            const gemm::TileConfig c = gemm::tile_config(p.kind), cw = gemm::tile_config(wide);
            const layout::GemmShape s = layout::make_gemm_shape(nk.n, nk.k, nk.group);
            const int64_t tiles = int64_t(p.tiles_m) * p.tiles_n;
            // the heuristic's tile where it fits the device, else a smaller one of the same kernel family
            if (dev.smem_optin == 0 || cw.smem_bytes() <= dev.smem_optin) {
              if (p.kind != wide) fail(name.str() + "tile kind");
            } else {
              if (c.smem_bytes() > dev.smem_optin)
                fail(name.str() + "tile needs more shared memory than the device has");
              if (c.transposed != cw.transposed) fail(name.str() + "compact tile of another kernel family");
            }
            if (dev.smem_per_sm > 0 && c.smem_bytes() + 1024 > dev.smem_per_sm)
              fail(name.str() + "not one CTA (1 KiB reserved) fits an SM");
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
            if (split == 0 && tiles >= int64_t(sms) * 16 && p.splits != 1)
              fail(name.str() + "heuristic split a full wave");
            if (tiles * p.splits <= 0) fail(name.str() + "empty grid");
            // documented layout: the fixed counter region, then one fp32 tile of partials per (tile, split)
            const std::size_t ws =
                p.splits == 1 ? 0 : gemm::kCounterBytes + std::size_t(tiles) * p.splits * c.tile_m() * c.tile_n() * 4;
            if (p.workspace_bytes != ws) fail(name.str() + "workspace_bytes");
            // the caller's limit (Arguments::max_smem_per_block) and the device's give the same plan
            gemm::Arguments capped = args;
            capped.max_smem_per_block = dev.smem_optin;
            const gemm::Plan q = plan_for(capped, sms, ml, 0, dev.smem_per_sm);
            if (q.kind != p.kind || q.splits != p.splits || q.workspace_bytes != p.workspace_bytes)
              fail(name.str() + "max_smem_per_block and the device limit plan differently");
          }
  EXPECT_EQ(failures, 0);
}

INSTANTIATE_TEST_SUITE_P(, GemmPlanOnDevice, ::testing::ValuesIn(kDeviceLimits),
                         [](const ::testing::TestParamInfo<DeviceLimits>& info) {
                           return std::string(info.param.name);
                         });

// get_workspace_size is the plan of the device run() would use: its SM count (here forced) and its opt-in
// shared-memory limit, which the library's device cache reports (none without a GPU). This one case
// depends on the machine on purpose; the invariants above never do.
TEST(GemmPlan, GetWorkspaceSizeIsThePlanOfTheCurrentDevice) {
  nibble::DeviceInfo info;
  if (nibble::current_device_info(&info) != Status::kSuccess) {
    // without a device, valid arguments get what run() would return
    std::size_t bytes = 0;
    EXPECT_STATUS(Status::kErrorUnsupportedDevice,
                  gemm::get_workspace_size(fake_args(kS4, 128, 1, 4096, 4096), &bytes));
  }
  NIBBLE_REQUIRE_GPU();
  const int device_smem = info.max_smem_per_block;
  std::printf("[nibble] device opt-in shared memory per block: %d bytes (0: no GPU)\n", device_smem);
  int checked_split = 0;
  for (int64_t m : {1, 17, 64, 130, 300, 4096})
    for (const RepackShape& nk :
         {RepackShape{4096, 14336, 128}, RepackShape{2880, 4304, kPC}, RepackShape{256, 7392, 32}})
      for (int split : {0, 1, 3, 64})
        for (gemm::Mainloop ml : {gemm::Mainloop::kMmaSync, gemm::Mainloop::kTransposedMma}) {
          gemm::Arguments args = fake_args(kS4, nk.group, m, nk.n, nk.k);
          args.split_k = split;
          args.sm_count = 132;
          args.mainloop = ml;
          const gemm::Plan p = plan_for(args, 132, ml, device_smem, info.smem_per_sm);
          checked_split += p.splits > 1;
          EXPECT_EQ(workspace_size(args), p.workspace_bytes)
              << "M" << m << "_N" << nk.n << "_K" << nk.k << " split_k=" << split << " " << mainloop_name(ml);
        }
  EXPECT_GT(checked_split, 0) << "test setup: no case used split-K";
}

TEST(GemmPlan, DecodeShapeSplitsKAndLargeShapeDoesNot) {
  gemm::Arguments decode = fake_args(kS4, 128, 1, 4096, 14336);
  decode.sm_count = 132;
  const gemm::Plan p = plan_for(decode, 132);
  EXPECT_EQ(int(p.kind), int(gemm::tile_kind<gemm::TileDecode>));
  EXPECT_GT(p.splits, 1);
  EXPECT_GT(p.workspace_bytes, 0u);
  std::printf("[nibble] plan M1_N4096_K14336 on 132 SMs: %d x %d tiles, %d k-tiles, %d splits of %d, %zu B\n",
              p.tiles_m, p.tiles_n, p.k_tiles, p.splits, p.k_tiles_per_split, p.workspace_bytes);
  gemm::Arguments large = fake_args(kS4, 128, 4096, 4096, 4096);
  large.sm_count = 132;
  const gemm::Plan q = plan_for(large, 132);
  EXPECT_EQ(int(q.kind), int(gemm::tile_kind<gemm::TileLarge>));
  EXPECT_EQ(q.splits, 1);
  EXPECT_EQ(q.workspace_bytes, 0u);
}

// With a shared-memory limit (a 99 KiB GPU, or Arguments::max_smem_per_block) every M gets a tile that
// fits it, of the same family where one exists; without one, the plan is the heuristic's.
TEST(GemmPlan, CompactTilesWhereSharedMemoryIsShort) {
  constexpr int k99KiB = 99 * 1024;
  for (Format f : kGemmFormats)
    for (int64_t m : {1, 16, 17, 32, 33, 48, 49, 64, 65, 256, 257, 4096})
      for (gemm::Mainloop ml : {gemm::Mainloop::kMmaSync, gemm::Mainloop::kTransposedMma, gemm::Mainloop::kWgmma}) {
        gemm::Arguments args = fake_args(f, 128, m, 4096, 4096);
        const gemm::TileKind wide = plan_for(args, 132, ml).kind;
        const int64_t atoms = gemm::stream_atoms_per_sm(4096, 4096, 132);
        EXPECT_EQ(int(wide), int(gemm::choose_tile(m, ml, f, atoms)));
        EXPECT_EQ(int(wide), int(heuristic_tile(m, ml, f, atoms)))
            << to_string(f) << " M=" << m << " " << mainloop_name(ml);
        for (int limit : {k99KiB, 227 * 1024}) {
          args.max_smem_per_block = limit;
          const gemm::Plan a = plan_for(args, 132, ml);
          args.max_smem_per_block = 0;
          const gemm::Plan b = plan_for(args, 132, ml, limit);  // the device's limit: the same plan
          const std::string name = std::string(to_string(f)) + " M=" + std::to_string(m) + " " + mainloop_name(ml) +
                                   " limit=" + std::to_string(limit);
          EXPECT_EQ(int(a.kind), int(b.kind)) << name;
          EXPECT_EQ(a.splits, b.splits) << name;
          const gemm::TileConfig c = gemm::tile_config(a.kind);
          EXPECT_LE(c.smem_bytes(f), limit) << name;
          if (gemm::tile_config(wide).smem_bytes(f) <= limit) EXPECT_EQ(int(a.kind), int(wide)) << name;
          EXPECT_EQ(c.transposed, gemm::tile_config(wide).transposed) << name << ": same kernel family";
          if (!c.transposed) EXPECT_EQ(c.tile_m(), gemm::tile_config(wide).tile_m()) << name;
        }
      }
}

// The warp-specialized tile (wgmma only, above 256 rows) reads 16-bit scales only: a compact double-quantized
// weight takes wg_large instead, the expanded one of the same shape ws_large; it fits an H200 block with the nf4
// table, has one producer warpgroup beside its 8 consumer warps, and no other mainloop ever plans it.
TEST(GemmPlan, WarpSpecializedTileOnlyUnderWgmmaAndNotForCompactScales) {
  for (int64_t m : {257, 1024, 4096}) {
    gemm::Arguments args = fake_args(kNf4, 64, m, 8192, 28672);
    EXPECT_EQ(int(plan_for(args, 132, gemm::Mainloop::kWgmma).kind), int(gemm::tile_kind<gemm::TileWsLarge>)) << m;
    for (gemm::Mainloop ml : {gemm::Mainloop::kMmaSync, gemm::Mainloop::kTransposedMma})
      EXPECT_NE(int(plan_for(args, 132, ml).kind), int(gemm::tile_kind<gemm::TileWsLarge>)) << m;
    args.w.dq_codes = static_cast<const uint8_t*>(args.w.scales);  // (fake pointers: never dereferenced)
    args.w.dq_stats = reinterpret_cast<const float*>(args.w.codes);
    args.w.scales = nullptr;
    EXPECT_EQ(int(plan_for(args, 132, gemm::Mainloop::kWgmma).kind), int(gemm::tile_kind<gemm::TileWgLarge>)) << m;
  }
  constexpr gemm::TileConfig c = gemm::TileWsLarge::kConfig;
  EXPECT_EQ(c.threads(), c.consumer_threads() + 128);
  EXPECT_EQ(c.consumer_threads(), 256);
  EXPECT_LE(gemm::detail::kernel_smem_bytes(kNf4, true, c), 232448);
  EXPECT_LE(c.smem_bytes(kAU4), 232448);
  // 128 < M <= 256: ws_large on weights of N >= 8192 outputs, wg_mid on narrower ones and at M <= 128
  for (int64_t m : {129, 200, 256}) {
    EXPECT_EQ(int(plan_for(fake_args(kS4, 128, m, 8192, 28672), 132, gemm::Mainloop::kWgmma).kind),
              int(gemm::tile_kind<gemm::TileWsLarge>))
        << m;
    EXPECT_EQ(int(plan_for(fake_args(kS4, 128, m, 28672, 8192), 132, gemm::Mainloop::kWgmma).kind),
              int(gemm::tile_kind<gemm::TileWsLarge>))
        << m;
    EXPECT_EQ(int(plan_for(fake_args(kS4, 128, m, 4096, 14336), 132, gemm::Mainloop::kWgmma).kind),
              int(gemm::tile_kind<gemm::TileWgMid>))
        << m;
    EXPECT_EQ(int(plan_for(fake_args(kS4, 128, m, 8192, 28672), 132, gemm::Mainloop::kTransposedMma).kind),
              int(gemm::tile_kind<gemm::TileWgMid>))
        << m;
  }
  EXPECT_EQ(int(plan_for(fake_args(kS4, 128, 128, 28672, 8192), 132, gemm::Mainloop::kWgmma).kind),
            int(gemm::tile_kind<gemm::TileWgMid>));
  // A limit between ws_large's bytes and ws_large + the nf4 table: with the table forced, wg_large (whose table
  // fits); with kAuto, ws_large (run() then decodes through the register table).
  const int ws_bytes = c.smem_bytes(kNf4), limit = ws_bytes + c.table_bytes() / 2;
  gemm::Arguments forced = fake_args(kNf4, 64, 1024, 8192, 28672);
  forced.max_smem_per_block = limit;
  EXPECT_EQ(int(plan_for(forced, 132, gemm::Mainloop::kWgmma).kind), int(gemm::tile_kind<gemm::TileWsLarge>));
  forced.codebook_table = gemm::CodebookTable::kSharedMemory;
  const gemm::Plan fallback = plan_for(forced, 132, gemm::Mainloop::kWgmma);
  EXPECT_EQ(int(fallback.kind), int(gemm::tile_kind<gemm::TileWgLarge>));
  EXPECT_LE(gemm::detail::kernel_smem_bytes(kNf4, true, gemm::tile_config(fallback.kind)), limit);
}

// Affine u4 (w = q * s + m): every kernel family takes it, the stream kernel where kAuto picks it for u4
// (stream_preferred); its stages carry the offsets (sO, the shape of sS; the stream ring 32 bytes per atom
// half instead of u4's 16 of zeros), so every host-side size of an affine kernel (launch bytes, occupancy,
// the fit to a limit, the stream plan's fixed bytes) is the format-aware one, larger than every other
// format's, which stay exactly as tuned.
TEST(GemmPlan, AffineU4StreamsLikeU4AndCountsItsOffsets) {
  for (Format f : kGemmFormats) EXPECT_TRUE(gemm::stream_serves(f)) << to_string(f);
  nibble::DeviceInfo h200;
  h200.compute_capability = 90;
  h200.sm_count = 132;
  h200.max_smem_per_block = 232448;
  h200.smem_per_sm = 233472;
  h200.max_threads_per_sm = 2048;
  for (int64_t m : {1, 4, 8, 16, 17, 32, 33, 300})
    for (auto nk : {std::pair<int64_t, int64_t>{4096, 4096}, {28672, 8192}}) {
      const std::string name = "M=" + std::to_string(m) + " N=" + std::to_string(nk.first);
      const gemm::Mainloop ml = gemm::resolve_mainloop(gemm::Mainloop::kAuto, m, nk.first, nk.second, h200, kAU4);
      EXPECT_EQ(int(ml), int(gemm::resolve_mainloop(gemm::Mainloop::kAuto, m, nk.first, nk.second, h200, kU4))) << name;
      EXPECT_EQ(ml == gemm::Mainloop::kStream, gemm::stream_preferred(m, nk.first, nk.second, kAU4)) << name;
      const gemm::Arguments args = fake_args(kAU4, 32, m, nk.first, nk.second);
      const gemm::Plan p = plan_for(args, 132, ml, h200.max_smem_per_block);
      EXPECT_TRUE(gemm::tile_serves(p.kind, kAU4)) << name;
      if (!gemm::tile_config(p.kind).stream)
        EXPECT_EQ(int(p.kind), int(gemm::choose_tile(m, ml, kAU4, gemm::stream_atoms_per_sm(nk.first, nk.second, 132))))
            << name;
      // a forced kStream is accepted at every M (above kStreamMaxM it runs what kAuto runs)
      gemm::Arguments forced = args;
      forced.mainloop = gemm::Mainloop::kStream;
      EXPECT_STATUS(Status::kSuccess, gemm::can_implement(forced));
      if (m <= gemm::kStreamMaxM) {
        const gemm::Plan ps = plan_for(forced, 132, gemm::Mainloop::kStream, h200.max_smem_per_block);
        const gemm::TileConfig sc = gemm::tile_config(ps.kind);
        EXPECT_TRUE(sc.stream) << name;
        // the launch holds the affine ring (larger than u4's) and the slice
        EXPECT_EQ(ps.smem_bytes, sc.stream_fixed_bytes(kAU4) + ps.k_tiles_per_split * sc.stream_act_atom_bytes(m))
            << name;
      }
    }
  const gemm::DeviceLimits d = gemm::device_limits(h200);
  for (int i = 0; i < gemm::kTileCount; ++i) {
    const gemm::TileKind kind = gemm::TileKind(i);
    const gemm::TileConfig c = gemm::tile_config(kind);
    if (c.stream) {
      EXPECT_TRUE(gemm::tile_serves(kind, kAU4)) << gemm::tile_name(kind);
      for (Format f : kAllFormats) EXPECT_EQ(c.stream_fixed_bytes(f), c.stream_fixed_bytes()) << gemm::tile_name(kind);
      EXPECT_EQ(c.stream_stage_bytes(kAU4) - c.stream_stage_bytes(kU4) >= c.atoms_k * 32, true)
          << gemm::tile_name(kind);
      EXPECT_GT(c.stream_fixed_bytes(kAU4), c.stream_fixed_bytes(kU4)) << gemm::tile_name(kind);
      EXPECT_EQ(c.smem_bytes(kAU4) - c.smem_bytes(kU4), c.stream_ring_bytes(kAU4) - c.stream_ring_bytes(kU4))
          << gemm::tile_name(kind);
      continue;
    }
    for (Format f : kAllFormats) {
      EXPECT_EQ(c.smem_bytes(f), c.smem_bytes()) << gemm::tile_name(kind) << " " << to_string(f);
      EXPECT_EQ(c.stage_bytes(f), c.stage_bytes()) << gemm::tile_name(kind) << " " << to_string(f);
    }
    EXPECT_EQ(gemm::tile_serves(kind, kAU4), gemm::tile_serves(kind, kU4)) << gemm::tile_name(kind);
    if (!gemm::tile_serves(kind, kAU4)) continue;
    EXPECT_GE(c.stage_bytes(kAU4), c.stage_bytes() + c.s_stage_bytes()) << gemm::tile_name(kind);
    EXPECT_GT(c.smem_bytes(kAU4), c.smem_bytes()) << gemm::tile_name(kind);
    EXPECT_EQ(gemm::detail::kernel_smem_bytes(kAU4, false, c), c.smem_bytes(kAU4)) << gemm::tile_name(kind);
    EXPECT_EQ(gemm::detail::kernel_smem_bytes(kU4, false, c), c.smem_bytes()) << gemm::tile_name(kind);
    EXPECT_LE(gemm::detail::ctas_per_sm(c, false, d, kAU4), gemm::detail::ctas_per_sm(c, false, d, kU4))
        << gemm::tile_name(kind);
    EXPECT_EQ(gemm::detail::ctas_per_sm(c, false, d, kAU4),
              std::max(1, std::min(d.smem_per_sm / (c.smem_bytes(kAU4) + 1024), d.max_threads_per_sm / c.threads())))
        << gemm::tile_name(kind);
    // the fit to a limit between the two sizes: affine falls back along Fewer, u4 does not
    const int limit = c.smem_bytes();
    const gemm::TileKind fit = gemm::fit_tile(kind, limit, kAU4);
    EXPECT_EQ(int(gemm::fit_tile(kind, limit, kU4)), int(kind)) << gemm::tile_name(kind);
    if (gemm::tile_fewer(kind) != kind)
      EXPECT_LE(gemm::tile_config(fit).smem_bytes(kAU4), limit) << gemm::tile_name(kind);
  }
}

// nf4 / fp4 decode runs the tile with room for the 32-copy codebook table; its plan (split-K included)
// does not depend on which table was asked for, so both tables give bit-identical C.
TEST(GemmPlan, CodebookDecodeTileAndTableIndependentPlan) {
  const gemm::TileConfig d = gemm::tile_config(gemm::tile_kind<gemm::TileDecode>);
  const gemm::TileConfig dc = gemm::tile_config(gemm::tile_kind<gemm::TileDecodeCodebook>);
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
      const gemm::Plan p = plan_for(args, 132);
      const gemm::TileKind want =
          m > 16 ? gemm::tile_kind<gemm::TileDecode32>
                 : (is_codebook(f) ? gemm::tile_kind<gemm::TileDecodeCodebook> : gemm::tile_kind<gemm::TileDecode>);
      EXPECT_EQ(int(p.kind), int(want)) << to_string(f) << " M=" << m;
      for (gemm::CodebookTable t : {gemm::CodebookTable::kSharedMemory, gemm::CodebookTable::kRegisters}) {
        args.codebook_table = t;
        const gemm::Plan q = plan_for(args, 132);
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
      {int64_t(1) << 30, int64_t(1) << 30, 64, 0},                      // 2^23 x 2^23 tiles: unsigned(grid) wraps to 0
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
    const gemm::Plan p = plan_for(args, 132);
    const int64_t grid = int64_t(p.tiles_m) * p.tiles_n * p.splits;
    EXPECT_LE(grid, int64_t(std::numeric_limits<int>::max()))
        << "can_implement accepts M" << c.m << "_N" << c.n << "_K" << c.k << " split_k=" << c.split_k
        << " but its grid of " << grid << " CTAs cannot be launched (run() passes unsigned(grid))";
  }
}
// ================================== CPU: one bad weight, one Status ========================================

// The same weight shape and group given to every entry point that validates it: the quantizer
// (get_quantize_workspace_size, quantize_cpu), the repack (repack_host) and the GEMM (can_implement) must
// name the same problem. Documented exception: the GEMM reads A in 16-byte chunks, so it also needs
// K % 8 == 0; a per-channel weight with K % 8 != 0 quantizes and repacks but the GEMM refuses it with
// kErrorInvalidShape (`gemm` below).
struct EntryPointCase {
  const char* name;
  Format format;
  int64_t n, k;
  int group;
  Status all;   // what quantize and repack return (and the GEMM, unless `gemm` says otherwise)
  Status gemm;  // what can_implement returns
};
const EntryPointCase kEntryPointCases[] = {
    {"Valid_K4096_g128", kS4, 64, 4096, 128, Status::kSuccess, Status::kSuccess},
    {"Valid_K1000_pc", kU4, 64, 1000, kPC, Status::kSuccess, Status::kSuccess},
    {"K4100_g128", kS4, 64, 4100, 128, Status::kErrorGroupSize, Status::kErrorGroupSize},
    {"K2880_g128", kNf4, 64, 2880, 128, Status::kErrorGroupSize, Status::kErrorGroupSize},
    {"K224_g64", kU4, 64, 224, 64, Status::kErrorGroupSize, Status::kErrorGroupSize},
    {"K4096_g48", kS4, 64, 4096, 48, Status::kErrorGroupSize, Status::kErrorGroupSize},
    {"K4096_g16", kFp4, 64, 4096, 16, Status::kErrorGroupSize, Status::kErrorGroupSize},
    {"K4096_g512", kS4, 64, 4096, 512, Status::kErrorGroupSize, Status::kErrorGroupSize},
    {"Kodd255_pc", kS4, 64, 255, kPC, Status::kErrorInvalidShape, Status::kErrorInvalidShape},
    {"Kodd4097_g128", kU4, 64, 4097, 128, Status::kErrorInvalidShape, Status::kErrorInvalidShape},
    {"K0_g128", kS4, 64, 0, 128, Status::kErrorInvalidShape, Status::kErrorInvalidShape},
    {"Kneg_g128", kS4, 64, -256, 128, Status::kErrorInvalidShape, Status::kErrorInvalidShape},
    {"N0_g128", kS4, 0, 4096, 128, Status::kErrorInvalidShape, Status::kErrorInvalidShape},
    {"Nneg_pc", kNf4, -1, 4096, kPC, Status::kErrorInvalidShape, Status::kErrorInvalidShape},
    {"UnknownFormat", Format(7), 64, 4096, 128, Status::kErrorUnsupportedFormat, Status::kErrorUnsupportedFormat},
    // documented: K % 8 != 0 is the GEMM's own limit
    {"K4100_pc_GemmNeedsKMultipleOf8", kS4, 64, 4100, kPC, Status::kSuccess, Status::kErrorInvalidShape},
    {"K4_pc_GemmNeedsKMultipleOf8", kU4, 64, 4, kPC, Status::kSuccess, Status::kErrorInvalidShape},
};

/// gtest prints the case by name, not as bytes.
void PrintTo(const EntryPointCase& c, std::ostream* os) { *os << c.name; }

class SameStatusEverywhere : public ::testing::TestWithParam<EntryPointCase> {};

TEST_P(SameStatusEverywhere, QuantizeRepackAndGemm) {
  const EntryPointCase c = GetParam();
  // Real, aligned host buffers large enough for every shape above (a valid case is really quantized and
  // repacked); invalid ones must be refused before any of them is touched.
  const int64_t n = std::max<int64_t>(c.n, 1), k = std::max<int64_t>(c.k, 2);
  std::vector<float> x(std::size_t(n * k), 0.25f);
  const std::size_t bytes = std::size_t(n * k) + 4096;
  std::vector<uint8_t> codes(bytes, 0), scales(bytes * 4, 0), zeros(bytes, 0);
  std::vector<uint8_t> gcodes(bytes + 64 * 64, 0), gscales(bytes * 2 + 64 * 64, 0), gzeros(bytes + 64 * 64, 0);

  nibble::PackedMatrix m;
  m.format = c.format;
  m.group_size = c.group;
  m.n = c.n;
  m.k = c.k;
  m.codes = codes.data();
  m.ld_codes = c.k > 0 ? c.k / 2 : 0;
  m.scales = scales.data();
  m.scale_type = kF32;
  m.zeros = zeros.data();
  std::size_t ws = 0;
  EXPECT_STATUS(c.all, nibble::get_quantize_workspace_size(m, &ws));
  EXPECT_STATUS(c.all, nibble::quantize_cpu(x.data(), k, m));

  PlainWeights w;
  w.format = c.format;
  w.group_size = c.group;
  w.n = c.n;
  w.k = c.k;
  w.codes = codes.data();
  w.ld_codes = m.ld_codes;
  w.scales = scales.data();
  w.scale_type = kF32;
  w.zeros = zeros.data();
  GemmWeights view;
  EXPECT_STATUS(c.all, nibble::repack_host(w, kF16, gcodes.data(), gscales.data(), gzeros.data(), &view));

  gemm::Arguments args = fake_args(c.format, c.group, 17, c.n, c.k);
  if (c.format != kU4) args.w.zeros = nullptr;
  EXPECT_STATUS(c.gemm, gemm::can_implement(args));
  std::size_t gemm_bytes = 0;
  if (c.gemm != Status::kSuccess) EXPECT_STATUS(c.gemm, gemm::get_workspace_size(args, &gemm_bytes));
}

INSTANTIATE_TEST_SUITE_P(, SameStatusEverywhere, ::testing::ValuesIn(kEntryPointCases),
                         [](const ::testing::TestParamInfo<EntryPointCase>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace

// Arguments::max_workspace_bytes: no plan asks for more (forced splits included); where the cap binds the
// planner uses fewer splits, elsewhere the same plan.
TEST(GemmPlan, WorkspaceNeverExceedsTheCap) {
  int bound = 0;
  for (std::size_t cap : {std::size_t(0), std::size_t(1) << 20, std::size_t(32) << 20, std::size_t(1) << 40})
    for (int64_t m : {1, 16, 64, 256, 1024})
      for (auto nk : {std::pair<int64_t, int64_t>{8192, 28672}, {4096, 4096}, {28672, 8192}})
        for (int split : {0, 3, 64})
          for (gemm::Mainloop ml : {gemm::Mainloop::kMmaSync, gemm::Mainloop::kTransposedMma}) {
            gemm::Arguments args = fake_args(kS4, 128, m, nk.first, nk.second);
            args.split_k = split;
            args.max_workspace_bytes = cap;
            const gemm::Plan p = plan_for(args, 132, ml);
            gemm::Arguments free_args = args;
            free_args.max_workspace_bytes = std::size_t(1) << 40;
            const gemm::Plan q = plan_for(free_args, 132, ml);
            SCOPED_TRACE("cap " + std::to_string(cap) + " M" + std::to_string(m) + " N" + std::to_string(nk.first) +
                         " K" + std::to_string(nk.second) + " split " + std::to_string(split) + " " +
                         mainloop_name(ml));
            EXPECT_LE(p.workspace_bytes, cap);
            EXPECT_GE(p.splits, 1);
            EXPECT_LE(p.splits, q.splits);
            EXPECT_EQ(int64_t(p.splits) * p.k_tiles_per_split >= p.k_tiles, true);
            if (q.workspace_bytes <= cap) {
              EXPECT_EQ(p.splits, q.splits) << "the cap changed a plan that fits it";
            } else {
              ++bound;
              EXPECT_LT(p.splits, q.splits);
            }
          }
  EXPECT_GT(bound, 0) << "test setup: the cap never bound";
  gemm::Arguments big = fake_args(kS4, 128, 256, 8192, 28672);
  const gemm::Plan d = plan_for(big, 132, gemm::Mainloop::kTransposedMma);
  EXPECT_LE(d.workspace_bytes, gemm::kDefaultMaxWorkspaceBytes) << "the default cap";
}

// ================================== CPU: the stream kernel's plan =============================================

// M <= 8 on long runs: stream_m8_l (chunks of 8), unless its larger ring costs a K split that stream_m8 does
// without (H200, session 8: 8192 x 28672 M = 4 40.4 us with stream_m8's single slice vs 42.5 with
// stream_m8_l's two); where both split or neither does, stream_m8_l.
TEST(GemmPlan, StreamLongRunTileUnlessItAddsASplit) {
  struct Case {
    int64_t m, n, k;
  };
  for (const Case& c : {Case{1, 28672, 8192}, Case{4, 28672, 8192}, Case{8, 28672, 8192}, Case{1, 8192, 28672},
                        Case{4, 8192, 28672}, Case{8, 8192, 28672}}) {
    gemm::Arguments args = fake_args(kS4, 128, c.m, c.n, c.k);
    args.sm_count = 132;
    const std::string name = "M" + std::to_string(c.m) + "_N" + std::to_string(c.n) + "_K" + std::to_string(c.k);
    ASSERT_GE(gemm::stream_atoms_per_sm(c.n, c.k, 132), gemm::kStreamLongRun) << name;
    const gemm::Plan p = plan_for(args, 132, gemm::Mainloop::kStream, gemm::kH200Limits.max_smem_per_block);
    gemm::Plan l, s;
    ASSERT_TRUE(gemm::make_stream_plan_for(args, gemm::tile_config(gemm::tile_kind<gemm::TileStream8L>),
                                           gemm::kH200Limits, &l));
    ASSERT_TRUE(
        gemm::make_stream_plan_for(args, gemm::tile_config(gemm::tile_kind<gemm::TileStream8>), gemm::kH200Limits, &s));
    const bool short_ring = l.splits > 1 && s.splits == 1;
    EXPECT_EQ(int(p.kind), int(short_ring ? gemm::tile_kind<gemm::TileStream8> : gemm::tile_kind<gemm::TileStream8L>))
        << name << ": stream_m8_l " << l.splits << " splits, stream_m8 " << s.splits;
    EXPECT_EQ(p.splits, short_ring ? s.splits : l.splits) << name;
    std::printf("[nibble] %s: stream_m8_l %d splits, stream_m8 %d -> %s\n", name.c_str(), l.splits, s.splits,
                gemm::tile_name(p.kind));
  }
  // the case that motivated the rule: at M = 4, K = 8192 the long-run ring needs two slices and stream_m8 one
  gemm::Arguments args = fake_args(kS4, 128, 4, 28672, 8192);
  args.sm_count = 132;
  const int h200 = gemm::kH200Limits.max_smem_per_block;
  EXPECT_EQ(int(plan_for(args, 132, gemm::Mainloop::kStream, h200).kind), int(gemm::tile_kind<gemm::TileStream8>));
  args.m = 1;
  EXPECT_EQ(int(plan_for(args, 132, gemm::Mainloop::kStream, h200).kind), int(gemm::tile_kind<gemm::TileStream8L>));
}

// make_stream_plan: every K slice fits the shared memory the plan launches with (within the device limit),
// the grid is at most one CTA per SM where the slices allow, the forced split is honoured (raised only to
// what shared memory needs), the workspace fits its cap, the CTAs' work is balanced on the shapes decode
// runs (the largest CTA within 10% of the mean where every SM gets at least 4 columns), and whatever the
// cap or the limit rules out falls back to the mma.sync tiles.
TEST(GemmPlan, StreamPlansFitBalanceAndFallBack) {
  const std::pair<int64_t, int64_t> nks[] = {{16, 64},      {300, 1152},   {4096, 4096},  {14336, 4096}, {4096, 14336},
                                             {28672, 8192}, {8192, 28672}, {57344, 8192}, {100, 200}};
  int checked = 0;
  for (Format f : {kS4, kNf4})
    for (int64_t m : {1, 8, 9, 16, 17, 32})
      for (const auto& nk : nks)
        for (int sms : {1, 7, 132})
          for (int split : {0, 1, 3, 1000})
            for (int limit : {0, 101376}) {
              gemm::Arguments args = fake_args(f, nk.second % 128 == 0 ? 128 : kPC, m, nk.first, nk.second);
              args.split_k = split;
              args.sm_count = sms;
              args.max_smem_per_block = limit;
              const gemm::Plan p = plan_for(args, sms, gemm::Mainloop::kStream);
              const gemm::TileConfig c = gemm::tile_config(p.kind);
              const std::string name = std::string(to_string(f)) + " M" + std::to_string(m) + " N" +
                                       std::to_string(nk.first) + " K" + std::to_string(nk.second) + " sms " +
                                       std::to_string(sms) + " split " + std::to_string(split) + " limit " +
                                       std::to_string(limit);
              const layout::GemmShape s = layout::make_gemm_shape(nk.first, nk.second, args.w.group_size);
              const int64_t nc = s.n_pad / 16, ka = s.k_atoms();
              if (!c.stream) {  // only where the forced split's partials exceed the workspace cap
                const gemm::TileConfig sc = gemm::tile_config(gemm::choose_tile(
                    m, gemm::Mainloop::kStream, f, gemm::stream_atoms_per_sm(nk.first, nk.second, sms)));
                const int fixed = sc.stream_fixed_bytes() + (is_codebook(f) ? sc.codebook_bytes() : 0);
                const int act = limit > 0 ? std::min(limit - gemm::kStreamStaticBytes - fixed, sc.kStreamActBytes)
                                          : sc.kStreamActBytes;
                if (act < sc.stream_act_atom_bytes(m)) continue;  // no room for one atom of A: the fallback is right
                const int64_t cap_atoms = act / sc.stream_act_atom_bytes(m), fewest = (ka + cap_atoms - 1) / cap_atoms;
                const int64_t forced = std::min<int64_t>(std::max<int64_t>(split, fewest), ka);
                EXPECT_GT(gemm::stream_workspace_bytes(s, int(forced), sc), args.max_workspace_bytes)
                    << name << ": stream plan expected";
                continue;
              }
              EXPECT_EQ(c.tile_m(), m <= 8 ? 8 : (m <= 16 ? 16 : 32)) << name;
              EXPECT_EQ(p.k_tiles, ka) << name;
              EXPECT_GE(p.splits, 1) << name;
              EXPECT_LE(p.splits, ka) << name;
              EXPECT_GE(p.tiles_n, 1) << name;
              EXPECT_LE(p.tiles_n, nc) << name;
              EXPECT_EQ(p.k_tiles_per_split, (ka + p.splits - 1) / p.splits) << name;
              const int table = is_codebook(f) ? c.codebook_bytes() : 0;  // (the table and the dq map)
              EXPECT_EQ(p.smem_bytes, c.stream_fixed_bytes() + table + p.k_tiles_per_split * c.stream_act_atom_bytes(m))
                  << name;
              EXPECT_LE(p.smem_bytes - table, c.smem_bytes()) << name;
              if (limit > 0) EXPECT_LE(p.smem_bytes + gemm::kStreamStaticBytes, limit) << name;
              EXPECT_GE(int64_t(p.k_tiles_per_split) * p.splits, ka) << name << ": slices do not cover K";
              if (split >= 1 && split <= ka) EXPECT_GE(p.splits, split) << name << ": forced split lowered";
              if (split == 1 && p.splits > 1) {  // raised only because one slice does not fit
                const int act =
                    (limit > 0 ? std::min<int>(limit - gemm::kStreamStaticBytes - c.stream_fixed_bytes() - table,
                                               c.kStreamActBytes)
                               : c.kStreamActBytes);
                EXPECT_GT(ka * c.stream_act_atom_bytes(m), act) << name << ": split raised without need";
              }
              if (p.splits <= sms) EXPECT_LE(int64_t(p.tiles_n) * p.splits, sms) << name << ": more than one wave";
              EXPECT_EQ(p.workspace_bytes, p.splits > 1 ? gemm::stream_workspace_bytes(s, p.splits, c) : 0u) << name;
              EXPECT_LE(p.workspace_bytes, args.max_workspace_bytes) << name;
              if (split == 0 && sms == 132 && nc >= 4 * 132 && limit == 0) {
                const double per_sm = double(nc) * double(ka) / double(sms);  // perfect balance
                const double largest = double((nc + p.tiles_n - 1) / p.tiles_n) * double(p.k_tiles_per_split);
                EXPECT_LE(largest, 1.10 * per_sm) << name << ": unbalanced";
              }
              ++checked;
            }
  EXPECT_GT(checked, 1000);
  // A workspace cap that rules out the split the slice needs: the mma.sync decode tile instead (8 tokens:
  // 8 rows x 448 atoms of A do not fit one CTA).
  gemm::Arguments args = fake_args(kS4, 128, 8, 4096, 28672);
  args.max_workspace_bytes = 0;
  const gemm::Plan p = plan_for(args, 132, gemm::Mainloop::kStream);
  EXPECT_FALSE(gemm::tile_config(p.kind).stream) << "K = 28672 needs several slices at M = 8, the cap allows none";
  // One token: the slice holds row 0 alone (128 bytes per atom), so all of K fits one slice and no workspace.
  gemm::Arguments one = fake_args(kS4, 128, 1, 4096, 28672);
  one.max_workspace_bytes = 0;
  const gemm::Plan p1 = plan_for(one, 132, gemm::Mainloop::kStream);
  EXPECT_TRUE(gemm::tile_config(p1.kind).stream) << "M = 1, K = 28672: one slice of 448 atoms x 128 B fits";
  EXPECT_EQ(p1.splits, 1);
  EXPECT_EQ(p1.workspace_bytes, 0u);
  EXPECT_EQ(p.workspace_bytes, 0u);
  // M above kStreamMaxM: never the stream tile.
  EXPECT_FALSE(
      gemm::tile_config(plan_for(fake_args(kS4, 128, 33, 4096, 4096), 132, gemm::Mainloop::kStream).kind).stream);
}

// detail/tma.cuh's host checks: each rule cuTensorMapEncodeTiled states (cuda.h) refused with its Status before
// the driver is asked (so they hold here without one); a valid map encodes where there is a driver.
TEST(Tma, HostChecksRefuseWhatTheDriverWould) {
  namespace nd = nibble::detail;
  using nibble::Status;
  alignas(16) static unsigned char buf[64];
  nd::Tma2d ok;
  ok.base = buf;
  ok.dtype = CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  ok.rows = 37, ok.cols = 200, ok.row_stride_bytes = 416;
  ok.box_rows = 8, ok.box_cols = 64;  // 128-byte box rows: the 128-byte swizzle span
  ok.swizzle = CU_TENSOR_MAP_SWIZZLE_128B;
  EXPECT_EQ(nd::check_tma_2d(ok), Status::kSuccess);
  struct Case {
    const char* what;
    void (*mutate)(nd::Tma2d&);
    Status want;
  };
  const Case cases[] = {
      {"null base", [](nd::Tma2d& d) { d.base = nullptr; }, Status::kErrorNullPointer},
      {"base 2 bytes off", [](nd::Tma2d& d) { d.base = buf + 2; }, Status::kErrorMisalignedPointer},
      {"no rows", [](nd::Tma2d& d) { d.rows = 0; }, Status::kErrorInvalidShape},
      {"2^32 + 1 columns", [](nd::Tma2d& d) { d.cols = (int64_t(1) << 32) + 1, d.row_stride_bytes = int64_t(1) << 35; },
       Status::kErrorInvalidShape},
      {"stride not a multiple of 16", [](nd::Tma2d& d) { d.row_stride_bytes = 408; }, Status::kErrorLeadingDimension},
      {"stride 2^40", [](nd::Tma2d& d) { d.row_stride_bytes = int64_t(1) << 40; }, Status::kErrorLeadingDimension},
      {"rows overlap", [](nd::Tma2d& d) { d.cols = 209; }, Status::kErrorLeadingDimension},
      {"box of no rows", [](nd::Tma2d& d) { d.box_rows = 0; }, Status::kErrorInvalidShape},
      {"box of 257 rows", [](nd::Tma2d& d) { d.box_rows = 257; }, Status::kErrorInvalidShape},
      {"box row past the swizzle span", [](nd::Tma2d& d) { d.box_cols = 72; }, Status::kErrorInvalidShape},
      {"box row of 8 bytes", [](nd::Tma2d& d) { d.box_cols = 4; }, Status::kErrorInvalidShape},
      {"fp64", [](nd::Tma2d& d) { d.dtype = CU_TENSOR_MAP_DATA_TYPE_FLOAT64; }, Status::kErrorUnsupportedFormat},
      {"an atomic swizzle", [](nd::Tma2d& d) { d.swizzle = CU_TENSOR_MAP_SWIZZLE_128B_ATOM_32B; },
       Status::kErrorUnsupportedFormat},
      {"144-byte rows without swizzle", [](nd::Tma2d& d) { d.box_cols = 72, d.swizzle = CU_TENSOR_MAP_SWIZZLE_NONE; },
       Status::kSuccess},
      {"fp32 with the 32-byte swizzle",
       [](nd::Tma2d& d) {
         d.dtype = CU_TENSOR_MAP_DATA_TYPE_FLOAT32, d.cols = 104, d.box_cols = 8;
         d.swizzle = CU_TENSOR_MAP_SWIZZLE_32B;
       },
       Status::kSuccess},
  };
  alignas(64) static CUtensorMap map;
  // A valid map first, before this process has made another CUDA call (run alone, e.g. --gtest_filter=Tma*,
  // this is the process's first): the entry point must initialize the driver itself.
  const Status first = nd::make_tma_2d(ok, &map);
  EXPECT_EQ(first, nibble_test_has_gpu() ? Status::kSuccess : Status::kErrorUnsupportedDevice);
  for (const Case& c : cases) {
    nd::Tma2d d = ok;
    c.mutate(d);
    EXPECT_EQ(nd::check_tma_2d(d), c.want) << c.what;
    if (c.want != Status::kSuccess) EXPECT_EQ(nd::make_tma_2d(d, &map), c.want) << c.what << " (make)";
  }
  EXPECT_EQ(nd::make_tma_2d(ok, nullptr), Status::kErrorNullPointer);
  alignas(64) static unsigned char raw[2 * sizeof(CUtensorMap)];
  EXPECT_EQ(nd::make_tma_2d(ok, reinterpret_cast<CUtensorMap*>(raw + 32)), Status::kErrorMisalignedPointer);
  // The same over device memory (what kernels use): encoded where there is a GPU; without a driver a Status.
  if (nibble_test_has_gpu()) {
    void* dev = nullptr;
    ASSERT_EQ(cudaMalloc(&dev, size_t(ok.rows) * size_t(ok.row_stride_bytes)), cudaSuccess);
    nd::Tma2d on_device = ok;
    on_device.base = dev;
    EXPECT_EQ(nd::make_tma_2d(on_device, &map), Status::kSuccess);
    cudaFree(dev);
  } else {
    EXPECT_EQ(nd::make_tma_2d(ok, &map), Status::kErrorUnsupportedDevice);
  }
}
