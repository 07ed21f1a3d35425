// nibble/gemm/tile_registry.cuh — THE list of GEMM tile configurations. Each tile is a tag type carrying its
// name, its configuration (named fields, built with TileConfig's with_* setters), the kernel family
// (mainloop) that runs it, its fewer-stage fallback and the formats it serves. TileList names every tag
// once; TileKind, tile_config(), tile_name(), fit_tile(), the dispatch (gemm/dispatch.cuh), the tests' and
// the benchmark's lists are all derived from it. The heuristic that picks a tile from M is at the end.
//
// Adding a tile: one tag below + its entry in TileList. Adding a kernel family: see gemm/dispatch.cuh.
#pragma once

#include "../detail/type_list.cuh"
#include "../layout/gemm_layout.cuh"
#include "warp_mma.cuh"

namespace nibble::gemm {

/// One CTA tile configuration. The CTA computes a (tile_m x tile_n) block of C from k-tiles of tile_k:
/// warps_m x warps_n warps, each owning warp_m16 m16-tiles and warp_n16 weight atoms (16 columns each);
/// every k-tile is atoms_k weight atoms (64 k each) deep and `stages` k-tiles are in flight (cp.async).
///
/// `transposed` configurations run the transposed kernel (mainloop_transposed.cuh), which computes
/// C^T = W * A^T so that the dequantized weight is the register operand of the MMA: warps_m = warp_n16 = 1,
/// warps_n a multiple of 4 (whole warpgroups, each warp 16 weight rows), warp_m16 * 16 = tile_m tokens,
/// the N of one wgmma (64, 128 or 256), and one weight atom (64 k) per k-tile.
///
/// `stream` configurations run the warp-streamed decode kernel (mainloop_stream.cuh): warps_n warps, each
/// streaming weight atoms straight from global memory into registers (`stages` atoms in flight per warp),
/// against warp_m16 tiles of 8 tokens (tile_m() = 8 * warp_m16) held in shared memory for the CTA's K slice.
///
/// `table_copies`: copies of the nf4 / fp4 shared-memory codebook table (16 or 32; warp_mma.cuh), which
/// nf4 / fp4 kernels of this configuration keep in front of their stage ring.
struct TileConfig {
  int warp_m16 = 1;
  int warp_n16 = 1;
  int warps_m = 1;
  int warps_n = 1;
  int atoms_k = 1;
  int stages = 2;
  bool transposed = false;
  bool warp_specialized = false;
  bool stream = false;
  int table_copies = kSmemCodebookCopies;
  // ---- named construction: TileConfig{}.with_warps(1, 8).with_warp_tile(1, 2)... -------------------
  /// warps_m x warps_n warps per CTA.
  constexpr TileConfig with_warps(int m, int n) const {
    TileConfig c = *this;
    c.warps_m = m, c.warps_n = n;
    return c;
  }
  /// Each warp owns m16 m16-tiles of tokens and n16 weight atoms (16 weight rows each).
  constexpr TileConfig with_warp_tile(int m16, int n16) const {
    TileConfig c = *this;
    c.warp_m16 = m16, c.warp_n16 = n16;
    return c;
  }
  /// k-tiles of `atoms` weight atoms (64 k each).
  constexpr TileConfig with_atoms_k(int atoms) const {
    TileConfig c = *this;
    c.atoms_k = atoms;
    return c;
  }
  /// Pipeline depth (k-tiles in shared memory).
  constexpr TileConfig with_stages(int s) const {
    TileConfig c = *this;
    c.stages = s;
    return c;
  }
  /// Runs the transposed kernel (C^T = W A^T).
  constexpr TileConfig with_transposed() const {
    TileConfig c = *this;
    c.transposed = true;
    return c;
  }
  /// Runs the warp-specialized transposed kernel (mainloop_ws.cuh, sm_90a): a producer warpgroup (TMA and
  /// bulk copies into an mbarrier ring) beside the warps_n consumer warps.
  constexpr TileConfig with_warp_specialized() const {
    TileConfig c = *this;
    c.transposed = true, c.warp_specialized = true;
    return c;
  }
  /// Runs the warp-streamed decode kernel with `token_tiles` tiles of 8 tokens and a copy ring of `stages`
  /// stages of `chunk` weight atoms per warp.
  constexpr TileConfig with_stream(int token_tiles, int stages_, int chunk) const {
    TileConfig c = *this;
    c.stream = true, c.warp_m16 = token_tiles, c.stages = stages_, c.atoms_k = chunk;
    return c;
  }
  /// Copies of the nf4 / fp4 shared-memory table.
  constexpr TileConfig with_table_copies(int copies) const {
    TileConfig c = *this;
    c.table_copies = copies;
    return c;
  }

  NIBBLE_HOST_DEVICE constexpr int warps() const { return warps_m * warps_n; }
  /// Threads of a CTA: the warps that compute, plus the producer warpgroup of a warp-specialized tile.
  NIBBLE_HOST_DEVICE constexpr int threads() const { return 32 * warps() + (warp_specialized ? 128 : 0); }
  /// Threads that hold accumulators (all but a warp-specialized tile's producer warpgroup).
  NIBBLE_HOST_DEVICE constexpr int consumer_threads() const { return 32 * warps(); }
  NIBBLE_HOST_DEVICE constexpr int tile_m() const { return (stream ? 8 : 16) * warp_m16 * warps_m; }
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
  /// The stage of format f: affine u4 appends its offsets (the shape of sS) after the stage of the other
  /// formats, whose sizes stay what they were tuned at (shared_storage.cuh: StageStorage<..., true>).
  NIBBLE_HOST_DEVICE constexpr int stage_bytes(Format f) const {
    if (!has_offset(f)) return stage_bytes();
    return stage_bytes() + (transposed ? int(round_up(s_stage_bytes(), 1024)) : s_stage_bytes());
  }
  /// Row pitch (floats) of the transposed kernel's fp32 output staging tile [tile_m][tile_n + 4].
  NIBBLE_HOST_DEVICE constexpr int c_stage_pitch() const { return tile_n() + 4; }
  /// Dynamic shared memory of one CTA. Transposed: the larger of the stage ring and the output staging
  /// tile (which reuses the ring after the mainloop), plus 1024 bytes to align the ring at run time.
  NIBBLE_HOST_DEVICE constexpr int smem_bytes() const { return smem_bytes(Format::kS4); }
  /// smem_bytes() of a kernel for format f: the same for every format but affine u4, whose stages are larger
  /// (stage_bytes(f)). What the host side sizes launches, occupancy and the fit to a limit with.
  NIBBLE_HOST_DEVICE constexpr int smem_bytes(Format f) const {
    if (stream) return stream_red_bytes() + stream_ring_bytes(f) + kStreamActBytes;
    if (!transposed) return stages * stage_bytes(f);
    const int ring = stages * stage_bytes(f), staging = tile_m() * c_stage_pitch() * 4;
    return (ring > staging ? ring : staging) + 1024;
  }
  // ---- stream configurations ----
  /// The most shared memory a stream kernel gives its activation slice (a launch uses what its K slice needs).
  static constexpr int kStreamActBytes = 80 * 1024;
  /// A stream configuration's copy ring per warp: `stages` stages of `atoms_k` weight atoms each, then 32
  /// bytes of scales per atom half (two group rows at most), then 16 bytes of u4 zeros per atom half (format
  /// f = affine u4: 32 bytes of offsets, the shape of the scales); 128-byte aligned.
  NIBBLE_HOST_DEVICE constexpr int stream_stage_bytes(Format f = Format::kS4) const {
    return int(round_up(atoms_k * (layout::kAtomBytes + 2 * 32 + (has_offset(f) ? 2 * 32 : 2 * 16)), 128));
  }
  NIBBLE_HOST_DEVICE constexpr int stream_ring_bytes(Format f = Format::kS4) const {
    return warps() * stages * stream_stage_bytes(f);
  }
  /// Bytes of one K atom (64 k) of the activation slice: tile_m() tokens x 64 x 2 bytes.
  NIBBLE_HOST_DEVICE constexpr int stream_act_atom_bytes() const { return tile_m() * layout::kAtomK * 2; }
  /// The same for M tokens: a one-token-tile kernel stores only rows < M (mainloop_stream.cuh).
  NIBBLE_HOST_DEVICE constexpr int stream_act_atom_bytes(std::int64_t m) const {
    return (warp_m16 == 1 && m >= 1 && m < tile_m() ? int(m) : tile_m()) * layout::kAtomK * 2;
  }
  /// Per-warp fp32 partial sums of two column segments (the warp's first and last), in fragment order.
  NIBBLE_HOST_DEVICE constexpr int stream_red_bytes() const { return warps() * 2 * (warp_m16 * 4 * 32) * 4; }
  /// Shared memory of a stream kernel for format f besides its activation slice (and the codebook table).
  NIBBLE_HOST_DEVICE constexpr int stream_fixed_bytes(Format f = Format::kS4) const {
    return stream_red_bytes() + stream_ring_bytes(f);
  }
  /// Bytes of the shared-memory codebook table of nf4 / fp4 kernels (on top of smem_bytes()).
  NIBBLE_HOST_DEVICE constexpr int table_bytes() const { return smem_codebook_bytes(table_copies); }
  /// The 256 fp32 entries of a compact double-quantized weight's scale map (layout::kDqStatsHeader), which a
  /// stream kernel keeps in shared memory (mainloop_stream.cuh).
  static constexpr int kDqMapBytes = 1024;
  /// Bytes an nf4 / fp4 kernel of this configuration reserves on top of smem_bytes(): the table and, for a
  /// stream configuration, the dq map (reserved whether the dq variant runs or not: one plan for both).
  NIBBLE_HOST_DEVICE constexpr int codebook_bytes() const { return table_bytes() + (stream ? kDqMapBytes : 0); }
  /// The shape rules of the configuration's kernel.
  NIBBLE_HOST_DEVICE constexpr bool valid() const {
    if (table_copies != 16 && table_copies != 32) return false;
    if (stream)
      return !transposed && warps_m == 1 && warp_n16 == 1 && warps_n >= 1 && atoms_k >= 1 && stages >= 2 &&
             (warp_m16 == 1 || warp_m16 == 2 || warp_m16 == 4);
    if (!transposed) return warps() >= 1 && atoms_k >= 1 && stages >= 2;
    const int t = tile_m();  // the N of one wgmma: the sizes detail/wgmma.cuh provides
    if (warp_specialized && (t > 256 || warps_n != 8)) return false;  // (a TMA box has <= 256 rows)
    return warps_m == 1 && warp_n16 == 1 && warps_n % 4 == 0 && (t == 64 || t == 128 || t == 256) && atoms_k == 1 &&
           stages >= 3;
  }
};

/// A set of weight formats, one bit per Format value.
using FormatSet = unsigned;
NIBBLE_HOST_DEVICE constexpr FormatSet format_bit(Format f) { return 1u << unsigned(f); }
inline constexpr FormatSet kIntegerFormats = format_bit(Format::kS4) | format_bit(Format::kU4);
inline constexpr FormatSet kCodebookFormats = format_bit(Format::kNf4) | format_bit(Format::kFp4);
inline constexpr FormatSet kAffineFormats = format_bit(Format::kAffineU4);
/// The four formats without offsets.
inline constexpr FormatSet kAllFormats = kIntegerFormats | kCodebookFormats;
/// Every format the GEMM takes (all five): what the mma.sync, transposed and stream tiles serve.
inline constexpr FormatSet kGemmFormats = kAllFormats | kAffineFormats;

namespace detail {
// The kernel families (mainloops), as tags; each mainloop header maps its tag to its kernel
// (FamilyKernel, params.cuh) and dispatch.cuh includes it.
struct MmaSyncKernel {};          // mainloop_sm80.cuh: C = A W^T, mma.sync
struct TransposedKernel {};       // mainloop_transposed.cuh: C^T = W A^T, wgmma on sm_90a, else mma.sync
struct StreamKernel {};           // mainloop_stream.cuh: C^T = W A^T, weights streamed into registers (M <= 32)
struct WarpSpecializedKernel {};  // mainloop_ws.cuh: C^T = W A^T, TMA producer + wgmma consumers (sm_90a only)
}  // namespace detail

// ---- the tiles ------------------------------------------------------------------------------------------
// Members of a tag: kName, kConfig, Kernel (its family), Fewer (the tile that replaces it where its shared
// memory does not fit: itself when there is none), kFormats (the formats it is compiled for).

struct TileDecodeCompact;
// Decode (M <= 16): one m16 tile; 8 warps x 2 atoms = 256 columns; 128-deep k-tiles so each stage moves
// 16 KiB of weights, and 4 stages keep ~48 KiB of weight loads in flight per CTA (the H100 needs ~25 KiB
// per SM in flight to approach its DRAM bandwidth). Chosen over 128-column / 256-deep variants by
// scratch timing on the H100 (82 vs 86-100 us at M=1, K=8192, N=28672). Applying the scales to fp32
// per-group partial sums after the mma instead was 7% slower (88 us): see benchmarks/NOTES.md.
struct TileDecode {
  static constexpr const char* kName = "decode";
  static constexpr TileConfig kConfig =
      TileConfig{}.with_warps(1, 8).with_warp_tile(1, 2).with_atoms_k(2).with_stages(4);
  using Kernel = detail::MmaSyncKernel;
  using Fewer = TileDecodeCompact;
  static constexpr FormatSet kFormats = kIntegerFormats | kAffineFormats;
};
// The decode tile with one stage fewer, for a 99 KiB limit: affine u4's offsets make the 4-stage tile 100 KiB
// (s4 / u4: 92 KiB, which fits); 3 stages: 75 KiB.
struct TileDecodeCompact {
  static constexpr const char* kName = "decode_compact";
  static constexpr TileConfig kConfig = TileDecode::kConfig.with_stages(3);
  using Kernel = detail::MmaSyncKernel;
  using Fewer = TileDecodeCompact;
  static constexpr FormatSet kFormats = kIntegerFormats | kAffineFormats;
};
// Decode for nf4 / fp4: the same CTA tile with one stage fewer, so that a conflict-free table (32 copies,
// 32 KiB) still leaves room for two CTAs per SM (3 x 23 + 32 = 101 KiB). On the H100 at M = 1 / 16, nf4
// b64 (benchmarks/NOTES.md): 63.6 / 62.9 us at K=8192 N=28672 and 60.9 / 59.7 at K=28672 N=8192, vs
// 72.2 / 70.7 and 68.0 / 66.7 us with 4 stages and 16 copies; s4 stays faster with 4 stages (no table).
struct TileDecodeCodebook {
  static constexpr const char* kName = "decode_codebook";
  static constexpr TileConfig kConfig = TileDecode::kConfig.with_stages(3).with_table_copies(32);
  using Kernel = detail::MmaSyncKernel;
  using Fewer = TileDecodeCodebook;
  static constexpr FormatSet kFormats = kCodebookFormats;
};
// Small batches, 16 < M <= 32: the decode tile's 8 warps x 2 atoms (256 columns) with two m16 tiles and 3
// stages (81 KiB: two CTAs per SM, and within a 99 KiB limit; nf4 / fp4 add a 32-copy table). H200, s4 g128,
// tune_tiles in session 8 (benchmarks/NOTES.md), M = 17 / 32 against wg_small, kAuto's tile there before:
// 8192 x 28672 73.2 / 73.3 us (105.0 / 104.7), 28672 x 8192 69.9 / 68.9 (96.9 / 96.3), 4096 x 14336 25.6 / 26.5
// (32.4 / 32.7), 14336 x 4096 30.2 / 29.9 (33.1 / 34.3), 4096 x 4096 18.6 / 19.3 (17.0 / 18.2); nf4 b64 on
// 8192 x 28672: 89.6 / 89.8 (wg_small 109.9 at M = 32). The 4-stage variant measured the same (73.2 / 73.6).
struct TileDecode32 {
  static constexpr const char* kName = "decode32";
  static constexpr TileConfig kConfig =
      TileConfig{}.with_warps(1, 8).with_warp_tile(2, 2).with_atoms_k(2).with_stages(3).with_table_copies(32);
  using Kernel = detail::MmaSyncKernel;
  using Fewer = TileDecode32;
  static constexpr FormatSet kFormats = kGemmFormats;
};
// Small batches, 32 < M <= 48, integer formats: three m16 tiles x 128 columns (8 warps x 1 atom), 4 stages
// (86 KiB). H200, s4 g128, session 8, M = 33 / 48 against wg_small: 8192 x 28672 98.7 / 97.9 us (104.7 / 104.2),
// 28672 x 8192 91.8 / 91.1 (97.4 / 97.9), 4096 x 14336 30.9 / 31.1 (32.9 / 33.2), 14336 x 4096 32.0 / 31.8
// (34.7 / 35.9), 4096 x 4096 15.9 / 16.5 (18.6 / 20.5); the 256-column, 3-stage variant was slower (102 us).
// nf4 / fp4 (not measured on it) keep the 64-token tiles there; affine u4 runs it like u4.
struct TileDecode48 {
  static constexpr const char* kName = "decode48";
  static constexpr TileConfig kConfig =
      TileConfig{}.with_warps(1, 8).with_warp_tile(3, 1).with_atoms_k(2).with_stages(4);
  using Kernel = detail::MmaSyncKernel;
  using Fewer = TileDecode48;
  static constexpr FormatSet kFormats = kIntegerFormats | kAffineFormats;
};
// The small and large tiles with fewer stages, for GPUs that allow 99 KiB of shared memory per block
// (sm_86, sm_89, sm_120) or a caller's Arguments::max_smem_per_block: 76.5 KiB and 83 KiB (+ 16 KiB of
// nf4 / fp4 table: 92.5 and 99 KiB).
struct TileSmallCompact {
  static constexpr const char* kName = "small_compact";
  static constexpr TileConfig kConfig =
      TileConfig{}.with_warps(1, 4).with_warp_tile(4, 2).with_atoms_k(2).with_stages(3);
  using Kernel = detail::MmaSyncKernel;
  using Fewer = TileSmallCompact;
  static constexpr FormatSet kFormats = kGemmFormats;
};
// Small batches (16 < M <= 64): four m16 tiles share each dequantized fragment. 102 KiB: above a 99 KiB
// limit it becomes TileSmallCompact.
struct TileSmall {
  static constexpr const char* kName = "small";
  static constexpr TileConfig kConfig = TileSmallCompact::kConfig.with_stages(4);
  using Kernel = detail::MmaSyncKernel;
  using Fewer = TileSmallCompact;
  static constexpr FormatSet kFormats = kGemmFormats;
};
struct TileLargeCompact {
  static constexpr const char* kName = "large_compact";
  static constexpr TileConfig kConfig =
      TileConfig{}.with_warps(2, 4).with_warp_tile(4, 2).with_atoms_k(2).with_stages(2);
  using Kernel = detail::MmaSyncKernel;
  using Fewer = TileLargeCompact;
  static constexpr FormatSet kFormats = kGemmFormats;
};
// Large batches (M > 64): 128 x 128 CTA tile, 2 x 4 warps of 64 x 32, so each dequantized fragment feeds
// four m16 tiles and each A fragment four n8 tiles; 128-deep k-tiles, 3 stages (232 vs 205 TFLOP/s for
// 64-deep, 4 stages at M=1024..4096 on the H100). A 64 x 64 warp tile was faster still (262) but spilled.
struct TileLarge {
  static constexpr const char* kName = "large";
  static constexpr TileConfig kConfig = TileLargeCompact::kConfig.with_stages(3);
  using Kernel = detail::MmaSyncKernel;
  using Fewer = TileLargeCompact;
  static constexpr FormatSet kFormats = kGemmFormats;
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
struct TileWgSmall {  // 64 tokens x 128 weights
  static constexpr const char* kName = "wg_small";
  static constexpr TileConfig kConfig =
      TileConfig{}.with_transposed().with_warps(1, 8).with_warp_tile(4, 1).with_atoms_k(1).with_stages(6);
  using Kernel = detail::TransposedKernel;
  using Fewer = TileWgSmall;
  static constexpr FormatSet kFormats = kGemmFormats;
};
struct TileWgMid {  // 128 tokens x 128 weights
  static constexpr const char* kName = "wg_mid";
  static constexpr TileConfig kConfig = TileWgSmall::kConfig.with_warp_tile(8, 1).with_stages(4);
  using Kernel = detail::TransposedKernel;
  using Fewer = TileWgMid;
  static constexpr FormatSet kFormats = kGemmFormats;
};
struct TileWgLarge {  // 256 tokens x 128 weights; above a 99 KiB limit it becomes TileWgMid
  static constexpr const char* kName = "wg_large";
  static constexpr TileConfig kConfig = TileWgSmall::kConfig.with_warp_tile(16, 1).with_stages(4);
  using Kernel = detail::TransposedKernel;
  using Fewer = TileWgMid;
  static constexpr FormatSet kFormats = kGemmFormats;
};
// Warp-specialized transposed tile (sm_90a only; mainloop_ws.cuh): wg_large's 256 tokens x 128 weights (two
// consumer warpgroups of 64 weight rows) fed by a producer warpgroup through a ring of 5 stages (TMA for A,
// bulk copies for the atoms and scales, full / empty mbarriers): 191 KiB, one CTA per SM. It has no mma.sync
// body and no smaller variant: where wgmma or its shared memory is not available, make_plan takes wg_large.
struct TileWsLarge {
  static constexpr const char* kName = "ws_large";
  static constexpr TileConfig kConfig = TileWgLarge::kConfig.with_warp_specialized().with_stages(5);
  using Kernel = detail::WarpSpecializedKernel;
  using Fewer = TileWsLarge;
  static constexpr FormatSet kFormats = kGemmFormats;
};

// Warp-streamed decode (M <= 8 / 16 / 32): one CTA of 16 (M <= 32: 8) warps per SM over a range of weight
// columns and a K slice; each warp streams a contiguous run of weight atoms through its own ring of copy
// stages (2 stages of 4 atoms: 4 KiB in flight per warp) and multiplies them as the A operand of
// mma.m16n8k16 against 1, 2 or 4 tiles of 8 tokens (C^T = W A^T: no token padding to 16). Ring shapes from
// tune_tiles 'stream' on the H200 (s4 g128, M = 1, K=8192 N=28672): 2 x 4 atoms 57.0 us, 3 x 4 56.4,
// 4 x 2 66.4, 8 x 1 85.9; 4096 x 4096: 9.7 / 9.7 / 10.0 / 11.3 us. See mainloop_stream.cuh, NOTES.md.
template <int kTokenTiles, int kStages, int kChunk, int kWarps>
struct TileStreamT {
  static constexpr TileConfig kConfig =
      TileConfig{}.with_warps(1, kWarps).with_stream(kTokenTiles, kStages, kChunk).with_table_copies(32);
  using Kernel = detail::StreamKernel;
  static constexpr FormatSet kFormats = kGemmFormats;
};
struct TileStream8 : TileStreamT<1, 2, 4, 16> {
  static constexpr const char* kName = "stream_m8";
  using Fewer = TileStream8;
};
/// M <= 8 with many atoms per SM (stream_atoms_per_sm >= kStreamLongRun): chunks of 8 atoms halve the per-chunk
/// work (mbarrier wait, copy issue: ~165 instructions); H200, M = 1, s4 g128, same call (session 6): 8192 x 28672
/// 48.3 vs 51.0 us, 28672 x 8192 46.5 vs 52.8; slower where warps have few chunks (4096 x 14336: 18.6 vs 16.5).
/// Its ring leaves less room for A, so K slices are shorter.
struct TileStream8L : TileStreamT<1, 2, 8, 16> {
  static constexpr const char* kName = "stream_m8_l";
  using Fewer = TileStream8;
};
struct TileStream16 : TileStreamT<2, 2, 4, 16> {
  static constexpr const char* kName = "stream_m16";
  using Fewer = TileStream16;
};
struct TileStream32 : TileStreamT<4, 2, 4, 8> {
  static constexpr const char* kName = "stream_m32";
  using Fewer = TileStream32;
};

/// Every tile, once. The index of a tag in this list is its TileKind.
using TileList =
    nibble::detail::TypeList<TileDecode, TileDecodeCodebook, TileSmall, TileSmallCompact, TileLarge, TileLargeCompact,
                             TileWgSmall, TileWgMid, TileWgLarge, TileStream8, TileStream16, TileStream32, TileStream8L,
                             TileDecodeCompact, TileDecode32, TileDecode48, TileWsLarge>;

/// A tile of TileList, by index (what a Plan stores); tile_kind<Tag> names one.
enum class TileKind : int {};
template <class Tile>
inline constexpr TileKind tile_kind = TileKind(nibble::detail::IndexOf<Tile, TileList>::value);
inline constexpr int kTileCount = TileList::kSize;

/// Calls f(Tag{}) for every tile tag, in TileList order.
template <class F>
constexpr void for_each_tile(F&& f) {
  nibble::detail::for_each_type(TileList{}, static_cast<F&&>(f));
}
/// Calls f(Tag{}) for the tag of `kind` and returns its result (`fallback` for a kind outside the list).
template <class R, class F>
constexpr R visit_tile(TileKind kind, R fallback, F&& f) {
  return nibble::detail::visit_type(TileList{}, int(kind), fallback, static_cast<F&&>(f));
}

inline constexpr TileConfig tile_config(TileKind kind) {
  return visit_tile(kind, TileConfig{}, [](auto tile) { return decltype(tile)::kConfig; });
}
/// The tile's name ("decode", "small", ...); "unknown" outside the list.
inline constexpr const char* tile_name(TileKind kind) {
  return visit_tile(kind, "unknown", [](auto tile) { return decltype(tile)::kName; });
}
/// True when the tile is compiled for format f.
inline constexpr bool tile_serves(TileKind kind, Format f) {
  return visit_tile(kind, false, [f](auto tile) { return (decltype(tile)::kFormats & format_bit(f)) != 0; });
}
/// The tile's fewer-stage fallback (itself where it has none).
inline constexpr TileKind tile_fewer(TileKind kind) {
  return visit_tile(kind, kind, [](auto tile) { return tile_kind<typename decltype(tile)::Fewer>; });
}

/// True when every stream tile serves format f (every format today; for one that it did not, kAuto would
/// never pick a stream tile and a forced kStream would be refused).
inline constexpr bool stream_serves(Format f) {
  for (int i = 0; i < kTileCount; ++i)
    if (tile_config(TileKind(i)).stream && !tile_serves(TileKind(i), f)) return false;
  return true;
}

/// The tile that replaces `kind` where its shared memory for format f (without a codebook table) exceeds
/// `smem_limit` bytes per CTA: the first of its Fewer chain that fits; the last of the chain where none
/// does (run() then reports kErrorUnsupportedDevice).
inline constexpr TileKind fit_tile(TileKind kind, int smem_limit, Format f = Format::kS4) {
  for (int i = 0; i < kTileCount && tile_config(kind).smem_bytes(f) > smem_limit; ++i) {
    const TileKind fewer = tile_fewer(kind);
    if (fewer == kind) break;
    kind = fewer;
  }
  return kind;
}

namespace detail {
template <class... Tiles>
constexpr bool registry_is_consistent(nibble::detail::TypeList<Tiles...>) {
  // every configuration follows its kernel's rules; a fallback is the same kernel family, serves the same
  // formats and needs less shared memory
  return ((Tiles::kConfig.valid() && std::is_same_v<typename Tiles::Kernel, typename Tiles::Fewer::Kernel> &&
           (Tiles::Fewer::kFormats & Tiles::kFormats) == Tiles::kFormats &&
           (std::is_same_v<Tiles, typename Tiles::Fewer> ||
            (Tiles::Fewer::kConfig.smem_bytes() < Tiles::kConfig.smem_bytes() &&
             Tiles::Fewer::kConfig.smem_bytes(Format::kAffineU4) < Tiles::kConfig.smem_bytes(Format::kAffineU4))) &&
           Tiles::kConfig.transposed ==
               (std::is_same_v<typename Tiles::Kernel, TransposedKernel> ||
                std::is_same_v<typename Tiles::Kernel, WarpSpecializedKernel>)&&Tiles::kConfig.warp_specialized ==
               std::is_same_v<typename Tiles::Kernel, WarpSpecializedKernel>)&&...);
}
}  // namespace detail
static_assert(detail::registry_is_consistent(TileList{}), "tile registry: configurations and fallbacks");
// Shared memory on a GPU with 99 KiB per block (101376 bytes): the compact tiles fit, the full ones do not.
static_assert(TileSmall::kConfig.smem_bytes() > 101376 && TileSmallCompact::kConfig.smem_bytes() <= 101376 &&
                  TileLarge::kConfig.smem_bytes() > 101376 && TileLargeCompact::kConfig.smem_bytes() <= 101376 &&
                  TileWgLarge::kConfig.smem_bytes() > 101376 && TileWgMid::kConfig.smem_bytes() <= 101376,
              "what fit_tile replaces on a 99 KiB GPU");
static_assert(TileDecodeCompact::kConfig.smem_bytes(Format::kAffineU4) <= 101376 &&
                  TileSmallCompact::kConfig.smem_bytes(Format::kAffineU4) <= 101376 &&
                  TileLargeCompact::kConfig.smem_bytes(Format::kAffineU4) <= 101376 &&
                  TileWgMid::kConfig.smem_bytes(Format::kAffineU4) <= 101376,
              "affine u4's larger stages still fit the compact tiles on a 99 KiB GPU");

// ---- the heuristic ------------------------------------------------------------------------------------

/// The kernel family (mainloop) a GEMM runs with.
enum class Mainloop : int {
  kAuto = 0,           ///< kWgmma where available (see wgmma_available), else kMmaSync
  kMmaSync = 1,        ///< C = A * W^T with mma.sync (sm_80+)
  kTransposedMma = 2,  ///< C^T = W * A^T, the transposed kernel's tiles with mma.sync (sm_80+)
  kWgmma = 3,          ///< C^T = W * A^T with wgmma (needs sm_90a device code on an sm_90 GPU; M <= 48 for s4 /
                       ///< u4 and M <= 32 for nf4 / fp4 on large weights run the mma.sync decode tiles)
  kStream = 4,         ///< the warp-streamed decode kernel (sm_80+), M <= 32 (kAuto's choice where
                       ///< stream_preferred says so); above M = 32 it runs what kAuto runs
};

/// Static shared memory of a stream kernel (its mbarriers and a flag), kept out of its dynamic budget.
inline constexpr int kStreamStaticBytes = 1024;
// Every stream tile with its nf4 / fp4 table (and dq map) and A for at least 16 atoms fits the 227 KiB a block of an
// H100 / H200 may have (the launch gives A what is left, up to kStreamActBytes).
template <class Tile>
constexpr bool stream_tile_fits_227k() {
  constexpr TileConfig c = Tile::kConfig;
  return c.stream_fixed_bytes() + c.codebook_bytes() + 16 * c.stream_act_atom_bytes() + kStreamStaticBytes <= 232448;
}
static_assert(stream_tile_fits_227k<TileStream8>() && stream_tile_fits_227k<TileStream8L>() &&
                  stream_tile_fits_227k<TileStream16>() && stream_tile_fits_227k<TileStream32>(),
              "stream tiles fit 227 KiB");

/// The largest M the warp-streamed decode kernel serves.
inline constexpr std::int64_t kStreamMaxM = 32;

/// Where kAuto runs the stream kernel: where it measured faster than the mma.sync decode tile on the H200
/// (benchmarks/RESULTS.md, sessions 5 and 6): every shape at M <= 8 (session 6, M = 1: 4096 x 4096 9.4 vs
/// 12.8 us, 8192 x 28672 48.3 (stream_m8_l) vs 55.4, 28672 x 8192 46.5 vs 53.0), and small weights at M <= 16
/// (4096 x 4096: 12.2 vs 13.8); on large weights at M = 16 the decode tile wins (63 vs 54 us), above M = 16
/// the 64-token tiles do.
/// nf4 / fp4 likewise at M <= 8 since session 7 (the kernel waits for A alone and needs no K split at M = 1:
/// 28672 x 8192 nf4 47.5 us, 8192 x 28672 43.9, where decode_codebook took about 61 and 64); at M <= 16 on
/// small weights only for the integer formats.
NIBBLE_HOST_DEVICE constexpr bool stream_preferred(std::int64_t m, std::int64_t n, std::int64_t k,
                                                   Format format = Format::kS4) {
  const std::int64_t weights = n * k;
  if (is_codebook(format)) return m <= 8;
  return m <= 8 || (m <= 16 && weights <= (std::int64_t(16) << 20));
}

/// Weight atoms (16 x 64) per SM of an N x K weight on `sms` SMs: how long each warp's run is.
NIBBLE_HOST_DEVICE constexpr std::int64_t stream_atoms_per_sm(std::int64_t n, std::int64_t k, int sms) {
  return ((n + 15) / 16) * ((k + 63) / 64) / (sms > 0 ? sms : 1);
}
/// Up to this many atoms per SM (4096 x 4096 on 132 SMs: 124) a weight counts as small for the tiles of
/// 16 < M <= 32 (choose_tile).
inline constexpr std::int64_t kSmallWeightAtoms = 128;
/// From this many atoms per SM on, M <= 8 runs stream_m8_l (chunks of 8 atoms) instead of stream_m8.
inline constexpr std::int64_t kStreamLongRun = 1024;
/// From M = kWsMinM on, a weight of at least kWsMinN outputs runs ws_large (256 tokens, half of them idle at
/// M = 129) rather than wg_mid under kWgmma: measured faster on the H200 at M = 129 / 192 / 256 where N >= 8192
/// (session 11, tune_tiles ws2, s4 g128: 8192 x 28672 203 / 204 / 210 vs 238 / 244 / 251 us, 28672 x 8192
/// 198 / 187 / 198 vs 214 / 218 / 228, 4096 x 14336 54 / 55 / 56 vs 65 / 65 / 65), equal or slower with
/// N = 4096 (4096 x 4096: 37 / 40 / 43 vs 31 / 32 / 32), whose 32 column tiles leave most SMs to split-K.
inline constexpr std::int64_t kWsMinM = 129;
inline constexpr std::int64_t kWsMinN = 8192;

/// The tile for M rows of activations, a (resolved, non-auto) mainloop and the weight format. M <= 16 runs
/// the decode tile (nf4 / fp4: the one with room for the conflict-free table) under every mma mainloop;
/// up to M = 32 (s4 / u4: 48) kMmaSync and kWgmma run decode32 / decode48, which are memory-bound and faster
/// there than the 64-token tiles (small weights, `atoms_per_sm` <= kSmallWeightAtoms: decode48 from M = 17 for
/// s4 / u4, wg_small for nf4 / fp4 under kWgmma); kTransposedMma runs the transposed tiles above M = 16.
/// `atoms_per_sm` (stream_atoms_per_sm; 0: unknown) picks the stream tile's chunk for M <= 8. Under kWgmma the
/// warp-specialized ws_large runs above M = 256, and from M = kWsMinM on where the weight has `n` >= kWsMinN
/// outputs (0: unknown, taken as fewer).
inline constexpr TileKind choose_tile(std::int64_t m, Mainloop mainloop = Mainloop::kMmaSync,
                                      Format format = Format::kS4, std::int64_t atoms_per_sm = 0, std::int64_t n = 0) {
  if (mainloop == Mainloop::kStream && m <= kStreamMaxM && stream_serves(format)) {
    if (m <= 8) return atoms_per_sm >= kStreamLongRun ? tile_kind<TileStream8L> : tile_kind<TileStream8>;
    return m <= 16 ? tile_kind<TileStream16> : tile_kind<TileStream32>;
  }
  if (m <= 16) return is_codebook(format) ? tile_kind<TileDecodeCodebook> : tile_kind<TileDecode>;
  if (mainloop != Mainloop::kTransposedMma) {  // the mma.sync decode tiles beat the 64-token ones up to here
    // Small weights have few 256-column tiles: there decode48's 128 columns win from M = 17 on (H200,
    // session 8, 4096 x 4096: 15.5-16.3 us at M = 17-48, decode32 18.3-19.0 at M = 17-32), and nf4 / fp4 keep
    // wg_small (19.2 vs 21.9 at M = 32).
    const bool small_weights = atoms_per_sm > 0 && atoms_per_sm <= kSmallWeightAtoms;
    if (m <= 48 && !is_codebook(format) && (small_weights || m > 32)) return tile_kind<TileDecode48>;
    if (m <= 32 && !(small_weights && is_codebook(format) && mainloop == Mainloop::kWgmma))
      return tile_kind<TileDecode32>;
  }
  if (mainloop == Mainloop::kWgmma && (m > 256 || (m >= kWsMinM && n >= kWsMinN)))
    return tile_kind<TileWsLarge>;  // (make_plan: wg_large where it cannot run)
  if (mainloop == Mainloop::kWgmma || mainloop == Mainloop::kTransposedMma)
    return m <= 64 ? tile_kind<TileWgSmall> : (m <= 256 ? tile_kind<TileWgMid> : tile_kind<TileWgLarge>);
  return m <= 64 ? tile_kind<TileSmall> : tile_kind<TileLarge>;
}

}  // namespace nibble::gemm
