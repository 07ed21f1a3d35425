// nibble/gemm/policy.cuh — tile configurations (plain constexpr data carried by tag types) and the
// heuristic that picks one from M.
#pragma once

#include "../layout/gemm_layout.cuh"
#include "warp_mma.cuh"

namespace nibble::gemm {

/// One CTA tile configuration. The CTA computes a (tile_m x tile_n) block of C from k-tiles of tile_k:
/// warps_m x warps_n warps, each owning warp_m16 m16-tiles and warp_n16 weight atoms (16 columns each);
/// every k-tile is atoms_k weight atoms (64 k each) deep and `stages` k-tiles are in flight (cp.async).
///
/// `transposed` configurations run the warpgroup kernel (kernel_wg.cuh), which computes C^T = W * A^T so
/// that the dequantized weight is the register operand of the MMA: warps_m = warp_n16 = 1, warps_n a
/// multiple of 4 (whole warpgroups, each warp 16 weight rows), warp_m16 * 16 = tile_m tokens, the N of
/// one wgmma (64, 128 or 256), and one weight atom (64 k) per k-tile.
///
/// `table_copies`: copies of the nf4 / fp4 shared-memory codebook table (16 or 32; warp_mma.cuh), which
/// nf4 / fp4 kernels of this configuration keep in front of their stage ring.
struct TileConfig {
  int warp_m16;
  int warp_n16;
  int warps_m;
  int warps_n;
  int atoms_k;
  int stages;
  bool transposed = false;
  int table_copies = kSmemCodebookCopies;

  NIBBLE_HOST_DEVICE constexpr int warps() const { return warps_m * warps_n; }
  NIBBLE_HOST_DEVICE constexpr int threads() const { return 32 * warps(); }
  NIBBLE_HOST_DEVICE constexpr int tile_m() const { return 16 * warp_m16 * warps_m; }
  NIBBLE_HOST_DEVICE constexpr int tile_n() const { return layout::kAtomN * warp_n16 * warps_n; }
  NIBBLE_HOST_DEVICE constexpr int tile_k() const { return layout::kAtomK * atoms_k; }
  /// Scale rows one k-tile can touch (groups are >= 32 long and tile_k is a multiple of 64).
  NIBBLE_HOST_DEVICE constexpr int max_groups_per_tile() const { return tile_k() / 32; }
  NIBBLE_HOST_DEVICE constexpr int a_stage_bytes() const { return tile_m() * tile_k() * 2; }
  NIBBLE_HOST_DEVICE constexpr int b_stage_bytes() const { return tile_n() * tile_k() / 2; }
  NIBBLE_HOST_DEVICE constexpr int s_stage_bytes() const { return max_groups_per_tile() * tile_n() * 2; }
  NIBBLE_HOST_DEVICE constexpr int z_stage_bytes() const { return max_groups_per_tile() * tile_n(); }
  /// Bytes of one pipeline stage; transposed configurations keep every stage's A tile 1024-byte aligned
  /// (the 128-byte swizzle pattern of wgmma operands repeats every 1024 bytes).
  NIBBLE_HOST_DEVICE constexpr int stage_bytes() const {
    const int raw = a_stage_bytes() + b_stage_bytes() + s_stage_bytes() + z_stage_bytes();
    return transposed ? int(round_up(raw, 1024)) : raw;
  }
  /// Row pitch (floats) of the transposed kernel's fp32 output staging tile [tile_m][tile_n + 4].
  NIBBLE_HOST_DEVICE constexpr int c_stage_pitch() const { return tile_n() + 4; }
  /// Dynamic shared memory of one CTA. Transposed: the larger of the stage ring and the output staging
  /// tile (which reuses the ring after the mainloop), plus 1024 bytes to align the ring at run time.
  NIBBLE_HOST_DEVICE constexpr int smem_bytes() const {
    if (!transposed) return stages * stage_bytes();
    const int ring = stages * stage_bytes(), staging = tile_m() * c_stage_pitch() * 4;
    return (ring > staging ? ring : staging) + 1024;
  }
  /// Bytes of the shared-memory codebook table of nf4 / fp4 kernels (on top of smem_bytes()).
  NIBBLE_HOST_DEVICE constexpr int table_bytes() const { return smem_codebook_bytes(table_copies); }
  /// The shape rules of the configuration's kernel.
  NIBBLE_HOST_DEVICE constexpr bool valid() const {
    if (table_copies != 16 && table_copies != 32) return false;
    if (!transposed) return warps() >= 1 && atoms_k >= 1 && stages >= 2;
    const int t = tile_m();  // the N of one wgmma: the sizes detail/wgmma.cuh provides
    return warps_m == 1 && warp_n16 == 1 && warps_n % 4 == 0 && (t == 64 || t == 128 || t == 256) &&
           atoms_k == 1 && stages >= 3;
  }
};

// Decode (M <= 16): one m16 tile; 8 warps x 2 atoms = 256 columns; 128-deep k-tiles so each stage moves
// 16 KiB of weights, and 4 stages keep ~48 KiB of weight loads in flight per CTA (the H100 needs ~25 KiB
// per SM in flight to approach its DRAM bandwidth). Chosen over 128-column / 256-deep variants by
// scratch timing on the H100 (82 vs 86-100 us at M=1, K=8192, N=28672). Applying the scales to fp32
// per-group partial sums after the mma instead was 7% slower (88 us): see benchmarks/NOTES.md.
struct TileDecode {
  static constexpr TileConfig kConfig{1, 2, 1, 8, 2, 4};
};
// Decode for nf4 / fp4: the same CTA tile with one stage fewer, so that a conflict-free table (32 copies,
// 32 KiB) still leaves room for two CTAs per SM (3 x 23 + 32 = 101 KiB). On the H100 at M = 1 / 16, nf4
// b64 (benchmarks/NOTES.md): 63.6 / 62.9 us at K=8192 N=28672 and 60.9 / 59.7 at K=28672 N=8192, vs
// 72.2 / 70.7 and 68.0 / 66.7 us with 4 stages and 16 copies; s4 stays faster with 4 stages (no table).
struct TileDecodeCodebook {
  static constexpr TileConfig kConfig{1, 2, 1, 8, 2, 3, false, 32};
};
// Small batches (16 < M <= 64): four m16 tiles share each dequantized fragment.
struct TileSmall {
  static constexpr TileConfig kConfig{4, 2, 1, 4, 2, 4};
};
// Large batches (M > 64): 128 x 128 CTA tile, 2 x 4 warps of 64 x 32, so each dequantized fragment feeds
// four m16 tiles and each A fragment four n8 tiles; 128-deep k-tiles, 3 stages (232 vs 205 TFLOP/s for
// 64-deep, 4 stages at M=1024..4096 on the H100). A 64 x 64 warp tile was faster still (262) but spilled.
struct TileLarge {
  static constexpr TileConfig kConfig{4, 2, 2, 4, 2, 3};
};

// The same two tiles with fewer stages, for GPUs that allow 99 KiB of shared memory per block (sm_86,
// sm_89, sm_120) or a caller's Arguments::max_smem_per_block: 76.5 KiB and 83 KiB (+ 16 KiB of nf4 / fp4
// table: 92.5 and 99 KiB).
struct TileSmallCompact {
  static constexpr TileConfig kConfig{4, 2, 1, 4, 2, 3};
};
struct TileLargeCompact {
  static constexpr TileConfig kConfig{4, 2, 2, 4, 2, 2};
};

// Transposed (warpgroup) tiles, 64-deep k-tiles. On sm_90a each warpgroup issues wgmma.m64n{tile_m}k16
// with its 64 dequantized weight rows in registers: one dequantized weight feeds tile_m tokens, and the
// tensor cores run asynchronously while the next k-tile is dequantized. Chosen with benchmarks/tune_tiles
// on the H100 (K=8192 N=28672 / K=28672 N=8192, s4 g128, after the StageLoader change):
//   small, M=64: 64 tokens x 128 weights, 6 stages: 110 / 102 us (4 stages 123 / 119; mma.sync 118 / 108)
//   mid, 64 < M <= 256: 128 tokens x 128 weights: M=128 126 us at K=8192 N=28672 (256-token tile 232,
//   64-token 205); M=256 on K=N=4096 34 us (256-token tile 77: 32 CTAs for 132 SMs)
//   large, M=1024: 256 tokens x 128 weights (2 warpgroups, 256 threads, 128 fp32 accumulators per
//   thread): 495 / 520 TFLOP/s (128 x 128: 331 / 342; the mma.sync 128 x 128 tile: 295). 128 tokens x
//   256 weights (4 warpgroups, 512 threads) measured 515 / 541 but its mma.sync body (the fallback without
//   sm_90a code) spills at 512 threads' 128-register limit: see benchmarks/NOTES.md.
struct TileWgSmall {
  static constexpr TileConfig kConfig{4, 1, 1, 8, 1, 6, true};  // 64 tokens x 128 weights
};
struct TileWgMid {
  static constexpr TileConfig kConfig{8, 1, 1, 8, 1, 4, true};  // 128 tokens x 128 weights
};
struct TileWgLarge {
  static constexpr TileConfig kConfig{16, 1, 1, 8, 1, 4, true};  // 256 tokens x 128 weights
};
static_assert(TileDecode::kConfig.valid() && TileDecodeCodebook::kConfig.valid() && TileSmall::kConfig.valid() &&
                  TileLarge::kConfig.valid() && TileSmallCompact::kConfig.valid() &&
                  TileLargeCompact::kConfig.valid() &&
                  TileWgSmall::kConfig.valid() && TileWgMid::kConfig.valid() && TileWgLarge::kConfig.valid(),
              "tile configurations follow their kernels' shape rules");

enum class TileKind : int {
  kDecode = 0,
  kSmall = 1,
  kLarge = 2,
  kWgSmall = 3,
  kWgLarge = 4,
  kWgMid = 5,
  kDecodeCodebook = 6,
  kSmallCompact = 7,
  kLargeCompact = 8,
};

/// The kernel family (mainloop) a GEMM runs with.
enum class Mainloop : int {
  kAuto = 0,          ///< kWgmma where available (see wgmma_available), else kMmaSync
  kMmaSync = 1,       ///< C = A * W^T with mma.sync (sm_80+)
  kTransposedMma = 2, ///< C^T = W * A^T, the warpgroup kernel's tiles with mma.sync (sm_80+)
  kWgmma = 3,         ///< C^T = W * A^T with wgmma (needs sm_90a device code on an sm_90 GPU; M <= 16
                      ///< runs the decode tile whatever is asked)
};

/// The heuristic: the tile family for M rows of activations, a (resolved, non-auto) mainloop and the
/// weight format. kWgmma / kTransposedMma use the transposed tiles above M = 16 (decode stays on the
/// mma.sync tile, which is memory-bound and faster there); nf4 / fp4 decode uses the tile with room for
/// the conflict-free codebook table.
inline constexpr TileKind choose_tile(std::int64_t m, Mainloop mainloop = Mainloop::kMmaSync,
                                      Format format = Format::kS4) {
  if (m <= 16) return is_codebook(format) ? TileKind::kDecodeCodebook : TileKind::kDecode;
  if (mainloop == Mainloop::kWgmma || mainloop == Mainloop::kTransposedMma)
    return m <= 64 ? TileKind::kWgSmall : (m <= 256 ? TileKind::kWgMid : TileKind::kWgLarge);
  return m <= 64 ? TileKind::kSmall : TileKind::kLarge;
}

inline constexpr TileConfig tile_config(TileKind kind) {
  switch (kind) {
    case TileKind::kDecode: return TileDecode::kConfig;
    case TileKind::kDecodeCodebook: return TileDecodeCodebook::kConfig;
    case TileKind::kSmallCompact: return TileSmallCompact::kConfig;
    case TileKind::kLargeCompact: return TileLargeCompact::kConfig;
    case TileKind::kSmall: return TileSmall::kConfig;
    case TileKind::kLarge: return TileLarge::kConfig;
    case TileKind::kWgSmall: return TileWgSmall::kConfig;
    case TileKind::kWgMid: return TileWgMid::kConfig;
    case TileKind::kWgLarge: return TileWgLarge::kConfig;
  }
  return TileDecode::kConfig;
}

/// The tile that replaces `kind` where its shared memory (without a codebook table) exceeds `smem_limit`
/// bytes per CTA: the compact tiles for the mma.sync ones, the 128-token transposed tile for the
/// 256-token one; `kind` itself where it fits or nothing smaller exists (run() then reports
/// kErrorUnsupportedDevice). Every tile but TileLarge / TileWgLarge fits 99 KiB.
inline constexpr TileKind fit_tile(TileKind kind, int smem_limit) {
  if (tile_config(kind).smem_bytes() <= smem_limit) return kind;
  switch (kind) {
    case TileKind::kSmall: return TileKind::kSmallCompact;
    case TileKind::kLarge: return TileKind::kLargeCompact;
    case TileKind::kWgLarge: return TileKind::kWgMid;
    default: return kind;
  }
}

}  // namespace nibble::gemm
