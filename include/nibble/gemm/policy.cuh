// nibble/gemm/policy.cuh — tile configurations (plain constexpr data carried by tag types) and the
// heuristic that picks one from M.
#pragma once

#include "../layout/gemm_layout.cuh"

namespace nibble::gemm {

/// One CTA tile configuration. The CTA computes a (tile_m x tile_n) block of C from k-tiles of tile_k:
/// warps_m x warps_n warps, each owning warp_m16 m16-tiles and warp_n16 weight atoms (16 columns each);
/// every k-tile is atoms_k weight atoms (64 k each) deep and `stages` k-tiles are in flight (cp.async).
struct TileConfig {
  int warp_m16;
  int warp_n16;
  int warps_m;
  int warps_n;
  int atoms_k;
  int stages;

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
  NIBBLE_HOST_DEVICE constexpr int stage_bytes() const {
    return a_stage_bytes() + b_stage_bytes() + s_stage_bytes() + z_stage_bytes();
  }
  NIBBLE_HOST_DEVICE constexpr int smem_bytes() const { return stages * stage_bytes(); }
};

// Decode (M <= 16): one m16 tile; 8 warps x 2 atoms = 256 columns; 128-deep k-tiles so each stage moves
// 16 KiB of weights, and 4 stages keep ~48 KiB of weight loads in flight per CTA (the H100 needs ~25 KiB
// per SM in flight to approach its DRAM bandwidth). Chosen over 128-column / 256-deep variants by
// scratch timing on the H100 (82 vs 86-100 us at M=1, K=8192, N=28672). Applying the scales to fp32
// per-group partial sums after the mma instead was 7% slower (88 us): see benchmarks/NOTES.md.
struct TileDecode {
  static constexpr TileConfig kConfig{1, 2, 1, 8, 2, 4};
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

enum class TileKind : int { kDecode = 0, kSmall = 1, kLarge = 2 };

/// The heuristic: the tile family for M rows of activations.
inline constexpr TileKind choose_tile(std::int64_t m) {
  return m <= 16 ? TileKind::kDecode : (m <= 64 ? TileKind::kSmall : TileKind::kLarge);
}

inline constexpr TileConfig tile_config(TileKind kind) {
  return kind == TileKind::kDecode ? TileDecode::kConfig
                                   : (kind == TileKind::kSmall ? TileSmall::kConfig : TileLarge::kConfig);
}

}  // namespace nibble::gemm
