// tests/common/gemm_api.hpp — the few places where tests spell the gemm host API that is still moving
// (get_workspace_size, make_plan, TileKind): adapt these helpers, not the tests, when it changes.
// CPU only: nothing here calls gemm::run or queries a GPU.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nibble/gemm/gemm.cuh>
#include <nibble/gemm/tile_registry.cuh>
#include <string>

#include "common/check.hpp"

namespace gemm = nibble::gemm;
namespace layout = nibble::layout;

inline const char* mainloop_name(gemm::Mainloop m) {
  switch (m) {
    case gemm::Mainloop::kAuto:
      return "auto";
    case gemm::Mainloop::kMmaSync:
      return "mma";
    case gemm::Mainloop::kTransposedMma:
      return "mma_t";
    case gemm::Mainloop::kWgmma:
      return "wgmma";
    case gemm::Mainloop::kStream:
      return "stream";
  }
  return "?";
}

/// gemm::get_workspace_size(args) (on the current device; 0 for rejected arguments).
inline std::size_t workspace_size(const gemm::Arguments& args) {
  std::size_t bytes = 0;
  return gemm::get_workspace_size(args, &bytes) == nibble::Status::kSuccess ? bytes : 0;
}

/// The plan for a device with `sms` multiprocessors, `device_smem` bytes of opt-in shared memory per block
/// (0: no limit) and `smem_per_sm` per SM (0: an H100 / H200's), the device's limits given explicitly (no
/// GPU query).
inline gemm::Plan plan_for(const gemm::Arguments& args, int sms, gemm::Mainloop mainloop = gemm::Mainloop::kMmaSync,
                           int device_smem = 0, int smem_per_sm = 0) {
  gemm::DeviceLimits d = gemm::kH200Limits;
  d.sm_count = sms;
  d.max_smem_per_block = device_smem;
  if (smem_per_sm > 0) d.smem_per_sm = smem_per_sm;
  return gemm::make_plan(args, d, mainloop);
}

/// The tile family the heuristic picks for M rows, a resolved mainloop, format f and a weight of
/// `atoms_per_sm` atoms per SM (0: unknown), without a shared-memory limit: decode up to 16 rows; then, except
/// for the transposed mainloop, decode32 up to 32 rows and (s4 / u4) decode48 up to 48, where small weights
/// (<= gemm::kSmallWeightAtoms per SM) take decode48 from 17 rows (s4 / u4) or, nf4 / fp4 under kWgmma, the
/// 64-row tile; then the 64-row tile, then the large mma.sync tile or the transposed 128- / 256-row tiles (above
/// 256 rows under kWgmma the warp-specialized 256-row tile).
inline gemm::TileKind heuristic_tile(int64_t m, gemm::Mainloop ml, Format f = Format::kS4, int64_t atoms_per_sm = 0,
                                     int64_t n = 0) {
  const bool t = ml == gemm::Mainloop::kTransposedMma || ml == gemm::Mainloop::kWgmma;
  const bool small = atoms_per_sm > 0 && atoms_per_sm <= gemm::kSmallWeightAtoms;
  if (m <= 16) return is_codebook(f) ? gemm::tile_kind<gemm::TileDecodeCodebook> : gemm::tile_kind<gemm::TileDecode>;
  if (ml != gemm::Mainloop::kTransposedMma && m <= 48) {
    if (!is_codebook(f) && (m > 32 || small)) return gemm::tile_kind<gemm::TileDecode48>;
    if (m <= 32 && !(small && is_codebook(f) && ml == gemm::Mainloop::kWgmma))
      return gemm::tile_kind<gemm::TileDecode32>;
  }
  return m <= 64 ? (t ? gemm::tile_kind<gemm::TileWgSmall> : gemm::tile_kind<gemm::TileSmall>)
         : !t    ? gemm::tile_kind<gemm::TileLarge>
         : ml == gemm::Mainloop::kWgmma && (m > 256 || (m > 128 && n >= 8192))
             ? gemm::tile_kind<gemm::TileWsLarge>  // (the warp-specialized tile: wgmma only; from M = 129 on wide
                                                   // weights)
         : m <= 256 ? gemm::tile_kind<gemm::TileWgMid>
                    : gemm::tile_kind<gemm::TileWgLarge>;
}

/// Valid arguments with fake (never dereferenced) 256-byte aligned pointers: can_implement is CPU only.
inline gemm::Arguments fake_args(Format f, int group, int64_t m, int64_t n, int64_t k, DType act = kF16,
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
  a.w.offsets = nibble::has_offset(f) ? fake(0x7000) : nullptr;
  a.bias = fake(0x5000);
  a.c = fake(0x6000);
  a.ldc = n;
  a.out_type = out;
  return a;
}
