// nibble/gemm/scheduler.cuh — the tile scheduler: which output tile, K split and k-tile range each CTA
// computes (device side), the split-K workspace layout and the deterministic reduction of partial sums, and
// the cost model that picks the number of splits (host side, from the device's real limits).
#pragma once

#include <algorithm>

#include "params.cuh"
#include "tile_registry.cuh"

namespace nibble::gemm {

/// Split-K workspace layout: a fixed region of tile counters first (so that GEMMs of any shape can share one
/// workspace: no plan ever writes partial sums over another plan's counters), then the fp32 partials
/// [tiles][splits][tile_m * tile_n].
inline constexpr int kMaxSplitTiles = 16384;
inline constexpr std::size_t kCounterBytes = std::size_t(kMaxSplitTiles) * sizeof(unsigned);

/// The device limits the plan depends on (DeviceInfo's numbers; explicit so that plans are testable on the
/// CPU for any GPU).
struct DeviceLimits {
  int sm_count = 132;
  int max_smem_per_block = 232448;  ///< opt-in dynamic shared memory of one block (H100 / H200: 227 KiB)
  int smem_per_sm = 233472;         ///< shared memory of one SM (H100 / H200: 228 KiB)
  int max_threads_per_sm = 2048;
};
/// The limits of an H100 / H200 (132 SMs) and of a GPU with 99 KiB per block (sm_86 / 89 / 120; 100 KiB per
/// SM, 1536 threads), as examples and for tests.
inline constexpr DeviceLimits kH200Limits{132, 232448, 233472, 2048};
inline constexpr DeviceLimits k99KiBLimits{128, 101376, 102400, 1536};

/// What run() launches: the tile, the grid and the split-K workspace.
///
/// Stream tiles (mainloop_stream.cuh) read the fields as: tiles_n column ranges (of 16-row weight atoms)
/// times `splits` K slices, one CTA each (tiles_m = 1); k_tiles = the weight's K atoms, k_tiles_per_split =
/// the most atoms of one slice; smem_bytes = the dynamic shared memory of the launch (red + table + slice).
struct Plan {
  TileKind kind = tile_kind<TileDecode>;
  int tiles_m = 0, tiles_n = 0, k_tiles = 0, splits = 1, k_tiles_per_split = 0;
  std::size_t workspace_bytes = 0;
  int smem_bytes = 0;  ///< dynamic shared memory of the launch; 0: the configuration's (kernel_smem_bytes)
};

namespace detail {

/// The part of the GEMM one CTA computes: the output tile at (m0, n0) over the k-tiles [kt_begin, kt_end)
/// of its split. CTAs are numbered split fastest, then m: CTAs sharing a weight tile run together (L2).
struct CtaWork {
  int tile, split, m0, n0, kt_begin, kt_end;
};
template <class T>
NIBBLE_DEVICE CtaWork cta_work(const KernelParams<T>& p, int tile_m, int tile_n) {
  CtaWork w;
  w.tile = blockIdx.x / p.splits;
  w.split = blockIdx.x % p.splits;
  w.m0 = (w.tile % p.tiles_m) * tile_m;
  w.n0 = (w.tile / p.tiles_m) * tile_n;
  w.kt_begin = w.split * p.k_tiles_per_split;
  w.kt_end = min(p.k_tiles, w.kt_begin + p.k_tiles_per_split);
  return w;
}

/// Deterministic split-K: every split stores its registers (rC[0 .. kRegs), valid where row_ok(r)) in the
/// workspace; the CTA arriving last at the tile's counter sums all splits in the fixed order 0, 1, ... into
/// rC (the same result whichever CTA is last), resets the counter and returns true. The others return false
/// and must exit. Call with every thread of the CTA (threads 0 .. kThreads - 1, which `sync` brings together: the
/// whole CTA by default); `flag` is a __shared__ int. (Loading several splits per round was measured slower on
/// the H200: benchmarks/NOTES.md, session 4.)
struct CtaBarrier {
  NIBBLE_DEVICE void operator()() const { __syncthreads(); }
};
template <int kRegs, int kThreads, class T, class RowOk, class Sync = CtaBarrier>
NIBBLE_DEVICE bool split_k_reduce(const KernelParams<T>& p, int tile, int split, int tile_elems, float* rC,
                                  RowOk row_ok, int* flag, Sync sync = {}) {
  const int tid = threadIdx.x;
  float* mine = p.partials + (std::int64_t(tile) * p.splits + split) * tile_elems;
#pragma unroll
  for (int r = 0; r < kRegs; ++r)
    if (row_ok(r)) __stcg(mine + r * kThreads + tid, rC[r]);
  __threadfence();
  sync();
  if (tid == 0) *flag = atomicAdd(&p.counters[tile], 1u) == unsigned(p.splits - 1);
  sync();
  if (!*flag) return false;
  __threadfence();
  // Sum in fixed split order 0, 1, ... (own partial re-read too), in place: no second register tile.
  const float* tile_partials = p.partials + std::int64_t(tile) * p.splits * tile_elems;
  for (int sp = 0; sp < p.splits; ++sp) {
    const float* part = tile_partials + std::int64_t(sp) * tile_elems;
#pragma unroll
    for (int r = 0; r < kRegs; ++r) {
      if (!row_ok(r)) continue;
      const float v = __ldcg(part + r * kThreads + tid);
      rC[r] = sp == 0 ? v : rC[r] + v;
    }
  }
  if (tid == 0) p.counters[tile] = 0u;  // leave the workspace as we found it
  return true;
}

/// CTAs of configuration c for format f that fit on one SM of `d` (by shared memory, with the nf4 / fp4 codebook
/// table where `table` is true, plus the 1 KiB the runtime reserves per block, and by threads).
inline int ctas_per_sm(const TileConfig& c, bool table, const DeviceLimits& d, Format f = Format::kS4) {
  const int by_smem = d.smem_per_sm / (c.smem_bytes(f) + (table ? c.table_bytes() : 0) + 1024);
  const int by_threads = d.max_threads_per_sm / c.threads();
  return std::max(1, std::min(by_smem, by_threads));
}

/// The smaller positive one of two shared-memory limits (0 where both are 0: no limit).
inline int smem_limit(int a, int b) {
  if (a <= 0) return b > 0 ? b : 0;
  return b > 0 && b < a ? b : a;
}

}  // namespace detail

/// The grid and split-K of a GEMM of M rows against weights of shape `s` with tile configuration c: forced
/// `split_k` (> 0) or the cost model's choice (0), on a device of `sm_count` SMs with `ctas_per_sm` CTAs of
/// c resident per SM.
/// Workspace bytes of `splits` splits over `tiles` output tiles of configuration c (0 for one split).
inline std::size_t split_workspace_bytes(std::int64_t tiles, int splits, const TileConfig& c) {
  if (splits <= 1) return 0;
  return kCounterBytes + std::size_t(tiles) * std::size_t(splits) * c.tile_m() * c.tile_n() * sizeof(float);
}

/// The default cap on split-K workspace (Arguments::max_workspace_bytes).
inline constexpr std::size_t kDefaultMaxWorkspaceBytes = std::size_t(32) << 20;

inline Plan make_plan_for(std::int64_t m, const layout::GemmShape& s, int split_k, const TileConfig& c, int sm_count,
                          int ctas_per_sm, std::size_t max_workspace_bytes = kDefaultMaxWorkspaceBytes) {
  Plan p;
  p.tiles_m = int((m + c.tile_m() - 1) / c.tile_m());
  p.tiles_n = int((s.n_pad + c.tile_n() - 1) / c.tile_n());
  p.k_tiles = int((s.k_pad + c.tile_k() - 1) / c.tile_k());
  const std::int64_t tiles = std::int64_t(p.tiles_m) * p.tiles_n;
  int splits = split_k;
  if (splits == 0) {
    // Every CTA of one GEMM does the same work, so they run in waves of `slots` (CTAs resident at once).
    // Model the time of s splits as waves(s) x bytes one CTA moves: ceil(k_tiles / s) k-tiles of weights
    // and A rows (+1 for the pipeline's fill), plus (s > 1) its fp32 partial tile written and read back
    // (rows < M only). Pick the best s in [1, k_tiles / 2] (each split keeps >= 2 k-tiles), only when the
    // tiles alone fill fewer than 4 waves. Example, M=1, K=8192, N=28672, 132 SMs: 112 tiles, 264 slots;
    // 3 splits = 2 waves, the second 27% full; 7 splits = 3 nearly full waves, about a third less time.
    const std::int64_t slots = std::int64_t(sm_count > 0 ? sm_count : 1) * std::max(1, ctas_per_sm);
    const int max_splits = p.k_tiles / 2 > 1 ? p.k_tiles / 2 : 1;
    const double rows = double(std::min<std::int64_t>(m, c.tile_m()));
    const double k_tile_bytes = c.tile_n() * c.tile_k() / 2.0 + rows * c.tile_k() * 2.0;
    const double partial_bytes = 2.0 * rows * c.tile_n() * sizeof(float);
    splits = 1;
    if (tiles < 4 * slots) {
      double best = 1e300;
      for (int sp = 1; sp <= max_splits && sp <= 64; ++sp) {
        const double waves = double((tiles * sp + slots - 1) / slots);
        // + 1 k-tile: the pipeline's fill and drain, paid once per CTA
        const double cta_bytes = double((p.k_tiles + sp - 1) / sp + 1) * k_tile_bytes + (sp > 1 ? partial_bytes : 0.0);
        if (waves * cta_bytes < best * (1.0 - 1e-9)) {
          best = waves * cta_bytes;
          splits = sp;
        }
      }
    }
  }
  if (splits > p.k_tiles) splits = p.k_tiles;
  if (splits < 1) splits = 1;
  p.k_tiles_per_split = (p.k_tiles + splits - 1) / splits;
  p.splits = (p.k_tiles + p.k_tiles_per_split - 1) / p.k_tiles_per_split;  // no empty split
  if (p.splits > 1 && tiles > kMaxSplitTiles) {  // too many tiles for the counter region: no split-K
    p.k_tiles_per_split = p.k_tiles;
    p.splits = 1;
  }
  // The workspace cap (forced splits too): the most splits whose partials fit, one split if none do.
  while (p.splits > 1 && split_workspace_bytes(tiles, p.splits, c) > max_workspace_bytes) {
    const int fewer = p.splits - 1;
    p.k_tiles_per_split = (p.k_tiles + fewer - 1) / fewer;
    p.splits = (p.k_tiles + p.k_tiles_per_split - 1) / p.k_tiles_per_split;
    if (p.splits > fewer) p.splits = fewer;  // (never: ceil division cannot give more)
  }
  p.workspace_bytes = split_workspace_bytes(tiles, p.splits, c);
  return p;
}

/// Split workspace of a stream plan: the counters, then fp32 partials [splits][n_pad / 16][tile_m * 16].
inline std::size_t stream_workspace_bytes(const layout::GemmShape& s, int splits, const TileConfig& c) {
  if (splits <= 1) return 0;
  return kCounterBytes +
         std::size_t(splits) * std::size_t(s.n_pad / layout::kAtomN) * c.tile_m() * layout::kAtomN * sizeof(float);
}

/// The plan of a stream tile (mainloop_stream.cuh): one CTA per SM, `splits` K slices x tiles_n ranges of
/// weight columns. Every CTA's work is (columns of its range) x (atoms of its slice), spread evenly over its
/// warps at atom granularity, so the grid is balanced when the ranges and slices are: pick the split s >=
/// the fewest whose slice (M tokens: stream_act_atom_bytes(m) per atom) fits `act_bytes` of shared memory, and the
/// ranges R = SMs / s, minimizing the largest CTA's atoms plus (s > 1) the last CTA's read of every slice's partials
/// for its columns, among the splits whose workspace fits the cap. Forced split_k is raised to that fewest. Returns
/// false (no plan) where the workspace cap or the int indices of the kernel rule the stream tile out; the caller then
/// takes another tile.
inline bool make_stream_plan(const layout::GemmShape& s, std::int64_t m, int split_k, const TileConfig& c, int sm_count,
                             int act_bytes, int red_and_table_bytes, std::size_t max_workspace_bytes, Plan* out) {
  const std::int64_t nc = s.n_pad / layout::kAtomN, ka = s.k_atoms();
  const int cap_atoms = act_bytes / c.stream_act_atom_bytes(m);
  if (cap_atoms < 1 || nc < 1 || ka < 1) return false;
  const std::int64_t min_splits = (ka + cap_atoms - 1) / cap_atoms;
  const int sms = sm_count > 0 ? sm_count : 1;
  auto ranges_for = [&](std::int64_t sp) { return std::max<std::int64_t>(1, std::min<std::int64_t>(nc, sms / sp)); };
  std::int64_t splits = std::max<std::int64_t>(split_k, min_splits);
  if (split_k == 0) {
    double best = 1e300;
    const std::int64_t last = std::min<std::int64_t>(ka, std::max<std::int64_t>(min_splits, sms));
    for (std::int64_t sp = min_splits; sp <= last; ++sp) {
      if (sp > min_splits && stream_workspace_bytes(s, int(sp), c) > max_workspace_bytes) break;  // (grows with sp)
      const std::int64_t r = ranges_for(sp);
      const double cols = double((nc + r - 1) / r), atoms = double((ka + sp - 1) / sp);
      // a partial of one column and split is tile_m x 16 floats: c.tile_m() / 8 atoms' worth of bytes
      const double cost = cols * atoms + (sp > 1 ? 16.0 + cols * double(sp) * c.tile_m() / 8.0 : 0.0);
      if (cost < best * (1.0 - 1e-9)) best = cost, splits = sp;
    }
  }
  splits = std::min(splits, ka);
  const std::int64_t ranges = ranges_for(splits);
  const std::int64_t slice = (ka + splits - 1) / splits;
  if (slice > cap_atoms || ranges > kMaxSplitTiles) return false;
  if (((nc + ranges - 1) / ranges) * slice >= (std::int64_t(1) << 30)) return false;  // int atom indices
  if (ranges * splits > 0x7FFFFFFF) return false;
  const std::size_t ws = stream_workspace_bytes(s, int(splits), c);
  if (ws > max_workspace_bytes) return false;
  Plan p;
  p.tiles_m = 1;
  p.tiles_n = int(ranges);
  p.splits = int(splits);
  p.k_tiles = int(ka);
  p.k_tiles_per_split = int(slice);
  p.workspace_bytes = ws;
  p.smem_bytes = red_and_table_bytes + int(slice) * c.stream_act_atom_bytes(m);
  *out = p;
  return true;
}

/// True when the plan's grid fits a 1-D launch (and the kernel's int tile indices).
inline bool launchable(const Plan& p) {
  return std::int64_t(p.tiles_m) * p.tiles_n * p.splits <= std::int64_t(0x7FFFFFFF);
}

}  // namespace nibble::gemm
