// nibble/gemm/gemm.cuh — host API of the int4 GEMM, in the CUTLASS / CUB manner:
//
//   nibble::gemm::Arguments args{...};
//   NIBBLE_RETURN_IF_ERROR(nibble::gemm::can_implement(args));          // CPU only, names what is wrong
//   std::size_t bytes = nibble::gemm::get_workspace_size(args);          // 0 unless split-K is used
//   // allocate once (the largest size of all your GEMMs), zero once (cudaMemset); run() leaves its
//   // counter region zero again, so the same workspace serves every later GEMM on that stream
//   NIBBLE_RETURN_IF_ERROR(nibble::gemm::run(args, workspace, bytes, stream));
//
// run() never allocates, memsets, synchronizes or reads device memory on the host, so it can be captured
// in a CUDA graph. Results are deterministic (split-K partials are summed in a fixed order, no atomics on
// floats).
#pragma once

#include "../layout/repack.cuh"
#include "../device.cuh"
#include "../status.cuh"
#include "kernel.cuh"
#include "kernel_wg.cuh"

namespace nibble::gemm {

/// Where nf4 / fp4 kernels keep their codebook while decoding.
enum class CodebookTable : int {
  kAuto = 0,          ///< kSharedMemory where the device has room for it, else kRegisters
  kSharedMemory = 1,  ///< a 16 or 32 KiB byte -> pair table per CTA (faster decode)
  kRegisters = 2,     ///< the 16-entry table in 8 registers per thread (no shared memory)
};

/// C[M, N] = A[M, K] * dequant(W)^T (+ bias[N]).
struct Arguments {
  std::int64_t m = 0;              ///< rows of A and C (tokens); any M >= 1
  DType act_type = DType::kF16;    ///< type of A, bias and the weight scales: kF16 or kBF16
  const void* a = nullptr;         ///< A [M, lda] row-major; 16-byte aligned, lda a multiple of 8
  std::int64_t lda = 0;            ///< >= K
  GemmWeights w;                   ///< the weight, repacked for act_type (layout/repack.cuh)
  const void* bias = nullptr;      ///< optional bias [N] of act_type
  void* c = nullptr;               ///< C [M, ldc] row-major
  std::int64_t ldc = 0;            ///< >= N
  DType out_type = DType::kF16;    ///< act_type, or kF32 for fp32 output
  int split_k = 0;                 ///< 0: chosen by the heuristic; > 0: forced number of K splits
  int sm_count = 0;                ///< 0: taken from the current device
  Mainloop mainloop = Mainloop::kAuto;  ///< kernel family; kAuto picks the fastest available
  CodebookTable codebook_table = CodebookTable::kAuto;  ///< nf4 / fp4 decode table
  /// 0: the device's opt-in limit of shared memory per block. > 0: run() uses only tiles (and nf4 / fp4
  /// tables) within this many bytes per CTA, e.g. to leave room for other kernels or to run what a GPU with
  /// 99 KiB per block (101376) runs; kErrorUnsupportedDevice if no tile for M fits.
  int max_smem_per_block = 0;
};

/// What run() will launch: tile family, grid and split-K workspace.
struct Plan {
  TileKind kind = TileKind::kDecode;
  int tiles_m = 0, tiles_n = 0, k_tiles = 0, splits = 1, k_tiles_per_split = 0;
  std::size_t workspace_bytes = 0;
};

/// Split-K workspace layout: a fixed region of tile counters first (so that GEMMs of any shape can share one
/// workspace: no plan ever writes partial sums over another plan's counters), then the fp32 partials.
inline constexpr int kMaxSplitTiles = 16384;
inline constexpr std::size_t kCounterBytes = std::size_t(kMaxSplitTiles) * sizeof(unsigned);

namespace detail {
inline int log2_exact(std::int64_t x) {
  int l = 0;
  while ((std::int64_t(1) << l) < x) ++l;
  return l;
}
/// The smaller positive one of two shared-memory limits (0 where both are 0: no limit).
inline int smem_limit(int a, int b) {
  if (a <= 0) return b > 0 ? b : 0;
  return b > 0 && b < a ? b : a;
}
/// CTAs of one tile family that fit on one SM (by shared memory, with the nf4 / fp4 codebook table where
/// `table` is true, and threads).
inline int ctas_per_sm(const TileConfig& c, bool table) {
  constexpr int kSmemPerSm = 227 * 1024, kThreadsPerSm = 2048;
  const int by_smem = kSmemPerSm / (c.smem_bytes() + (table ? c.table_bytes() : 0) + 1024);
  const int by_threads = kThreadsPerSm / c.threads();
  return by_smem < by_threads ? by_smem : by_threads;
}
}  // namespace detail

/// The launch plan for `args` with tile configuration `c` on a GPU with `sm_count` multiprocessors
/// (pure function, CPU only).
inline Plan make_plan_for(const Arguments& args, const TileConfig& c, int sm_count) {
  Plan p;
  const layout::GemmShape s = args.w.shape();
  p.tiles_m = int((args.m + c.tile_m() - 1) / c.tile_m());
  p.tiles_n = int((s.n_pad + c.tile_n() - 1) / c.tile_n());
  p.k_tiles = int((s.k_pad + c.tile_k() - 1) / c.tile_k());
  const std::int64_t tiles = std::int64_t(p.tiles_m) * p.tiles_n;
  int splits = args.split_k;
  if (splits == 0) {
    // Every CTA of one GEMM does the same work, so they run in waves of `slots` (CTAs resident at once).
    // Model the time of s splits as waves(s) x bytes one CTA moves: ceil(k_tiles / s) k-tiles of weights
    // and A rows (+1 for the pipeline's fill), plus (s > 1) its fp32 partial tile written and read back
    // (rows < M only). Pick the best
    // s in [1, k_tiles / 2] (each split keeps >= 2 k-tiles), only when the tiles alone fill fewer than 4
    // waves. Example, M=1, K=8192, N=28672, 132 SMs: 112 tiles, 264 slots; 3 splits = 2 waves, the second
    // 27% full; 7 splits = 3 nearly full waves, about a third less time.
    // (nf4 / fp4 count their shared-memory codebook table whichever table runs, so that both give the same
    // plan and bit-identical C)
    const std::int64_t slots =
        std::int64_t(sm_count > 0 ? sm_count : 1) * detail::ctas_per_sm(c, is_codebook(args.w.format));
    const int max_splits = p.k_tiles / 2 > 1 ? p.k_tiles / 2 : 1;
    const double rows = double(std::min<std::int64_t>(args.m, c.tile_m()));
    const double k_tile_bytes = c.tile_n() * c.tile_k() / 2.0 + rows * c.tile_k() * 2.0;
    const double partial_bytes = 2.0 * rows * c.tile_n() * sizeof(float);
    splits = 1;
    if (tiles < 4 * slots) {
      double best = 1e300;
      for (int s = 1; s <= max_splits && s <= 64; ++s) {
        const double waves = double((tiles * s + slots - 1) / slots);
        // + 1 k-tile: the pipeline's fill and drain, paid once per CTA
        const double cta_bytes = double((p.k_tiles + s - 1) / s + 1) * k_tile_bytes + (s > 1 ? partial_bytes : 0.0);
        if (waves * cta_bytes < best * (1.0 - 1e-9)) {
          best = waves * cta_bytes;
          splits = s;
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
  if (p.splits > 1) {
    const std::size_t partial = std::size_t(tiles) * p.splits * c.tile_m() * c.tile_n() * sizeof(float);
    p.workspace_bytes = kCounterBytes + partial;
  }
  return p;
}

/// The launch plan run() uses for a resolved (non-auto) mainloop: the heuristic's tile family for M, then
/// make_plan_for. The tile is replaced by a smaller one (fit_tile) where it needs more shared memory
/// than args.max_smem_per_block or `device_smem` (each ignored when 0) allow.
inline Plan make_plan(const Arguments& args, int sm_count, Mainloop mainloop = Mainloop::kMmaSync,
                      int device_smem = 0) {
  TileKind kind = choose_tile(args.m, mainloop, args.w.format);
  const int limit = detail::smem_limit(args.max_smem_per_block, device_smem);
  if (limit > 0) kind = fit_tile(kind, limit);
  Plan p = make_plan_for(args, tile_config(kind), sm_count);
  p.kind = kind;
  return p;
}

/// True when the plan's grid fits a 1-D launch (and the kernel's int tile indices).
inline bool launchable(const Plan& p) {
  return std::int64_t(p.tiles_m) * p.tiles_n * p.splits <= std::int64_t(0x7FFFFFFF);
}

/// Checks every argument on the CPU (no CUDA call). Returns the first problem found.
inline Status can_implement(const Arguments& args) {
  const GemmWeights& w = args.w;
  if (args.act_type != DType::kF16 && args.act_type != DType::kBF16) return Status::kErrorUnsupportedFormat;
  if (args.out_type != args.act_type && args.out_type != DType::kF32) return Status::kErrorUnsupportedFormat;
  if (w.scale_type != args.act_type) return Status::kErrorUnsupportedFormat;  // repack for this act type
  if (w.format != Format::kS4 && w.format != Format::kU4 && w.format != Format::kNf4 &&
      w.format != Format::kFp4)
    return Status::kErrorUnsupportedFormat;
  if (args.m < 1 || w.n < 1 || w.k < 1) return Status::kErrorInvalidShape;
  constexpr std::int64_t kMaxDim = std::int64_t(1) << 30;  // keeps every int32 tile index in range
  if (args.m > kMaxDim || w.n > kMaxDim || w.k > kMaxDim) return Status::kErrorSizeOverflow;
  if (w.k % 8 != 0) return Status::kErrorInvalidShape;  // A is read in 16-byte chunks of 8 elements
  if (!is_supported_group_size(w.group_size)) return Status::kErrorGroupSize;
  if (w.group_size != kPerChannel && w.k % w.group_size != 0) return Status::kErrorGroupSize;
  if (args.a == nullptr || args.c == nullptr || w.codes == nullptr || w.scales == nullptr)
    return Status::kErrorNullPointer;
  if (w.format == Format::kU4 && w.zeros == nullptr) return Status::kErrorNullPointer;
  if (args.lda < w.k || args.ldc < w.n) return Status::kErrorLeadingDimension;
  if (!nibble::detail::is_aligned(args.a, 16) || args.lda % 8 != 0) return Status::kErrorMisalignedPointer;
  if (!nibble::detail::is_aligned(w.codes, 16) || !nibble::detail::is_aligned(w.scales, 16) ||
      (w.zeros != nullptr && !nibble::detail::is_aligned(w.zeros, 16)))
    return Status::kErrorMisalignedPointer;
  if (!nibble::detail::is_aligned(args.c, size_of(args.out_type)) ||
      (args.bias != nullptr && !nibble::detail::is_aligned(args.bias, 2)))
    return Status::kErrorMisalignedPointer;
  if (args.split_k < 0 || args.sm_count < 0 || args.max_smem_per_block < 0) return Status::kErrorInvalidArgument;
  if (args.mainloop != Mainloop::kAuto && args.mainloop != Mainloop::kMmaSync &&
      args.mainloop != Mainloop::kTransposedMma && args.mainloop != Mainloop::kWgmma)
    return Status::kErrorInvalidArgument;
  if (args.codebook_table != CodebookTable::kAuto && args.codebook_table != CodebookTable::kSharedMemory &&
      args.codebook_table != CodebookTable::kRegisters)
    return Status::kErrorInvalidArgument;
  // overflow of M * ldc and M * lda offsets in 64-bit arithmetic
  if (args.ldc > (std::int64_t(1) << 62) / args.m || args.lda > (std::int64_t(1) << 62) / args.m)
    return Status::kErrorSizeOverflow;
  // the grid of one launch fits (checked with the requested SM count or 1; run() checks the device's)
  // (every mainloop's tiles are at least as large as kMmaSync's, so checking that one covers them all)
  if (!launchable(make_plan(args, args.sm_count > 0 ? args.sm_count : 1))) return Status::kErrorSizeOverflow;
  return Status::kSuccess;
}

/// True when this translation unit was built with device code for sm_90a (NIBBLE_SM90A, which the CMake
/// package defines when the target's CUDA_ARCHITECTURES list 90a) and the current device is sm_90.
/// Host code cannot see which device code a binary holds, so the macro carries it; if it is set wrongly
/// the warpgroup kernel runs its mma.sync body: slower, never wrong.
inline bool wgmma_available() {
#if defined(NIBBLE_SM90A)
  DeviceInfo info;
  return current_device_info(&info) == Status::kSuccess && info.compute_capability == 90;
#else
  return false;
#endif
}

/// The mainloop run() uses for `requested` (kAuto resolved against this build and the current device).
inline Mainloop resolve_mainloop(Mainloop requested) {
  if (requested != Mainloop::kAuto) return requested;
  return wgmma_available() ? Mainloop::kWgmma : Mainloop::kMmaSync;
}

namespace detail {
inline int current_sm_count(int requested) {
  if (requested > 0) return requested;
  DeviceInfo info;
  return current_device_info(&info) == Status::kSuccess ? info.sm_count : 0;
}

/// The largest dynamic shared memory one CTA may opt in to on the current device (0 if unknown).
inline int max_smem_optin() {
  DeviceInfo info;
  return current_device_info(&info) == Status::kSuccess ? info.max_smem_per_block : 0;
}

template <class T, Format F, class Tile, bool kUseWgmma = false>
Status launch(const Arguments& args, const Plan& plan, void* workspace, cudaStream_t stream,
              bool smem_table = true) {
  constexpr TileConfig c = Tile::kConfig;
  const GemmWeights& w = args.w;
  KernelParams<T> p{};
  p.m = int(args.m);
  p.n = int(w.n);
  p.k = int(w.k);
  p.a = static_cast<const T*>(args.a);
  p.lda = args.lda;
  p.codes = w.codes;
  p.scales = static_cast<const T*>(w.scales);
  p.zeros = w.zeros;
  p.shape = w.shape();
  p.per_channel = w.group_size == kPerChannel;
  p.group_log2 = p.per_channel ? 0 : log2_exact(w.group_size);
  p.bias = static_cast<const T*>(args.bias);
  p.c = args.c;
  p.ldc = args.ldc;
  p.out_f32 = args.out_type == DType::kF32;
  p.pair_stores = args.ldc % 2 == 0 && nibble::detail::is_aligned(args.c, 2 * std::size_t(size_of(args.out_type)));
  p.tiles_m = plan.tiles_m;
  p.tiles_n = plan.tiles_n;
  p.splits = plan.splits;
  p.k_tiles = plan.k_tiles;
  p.k_tiles_per_split = plan.k_tiles_per_split;
  if (plan.splits > 1) {
    p.counters = static_cast<unsigned*>(workspace);
    p.partials = reinterpret_cast<float*>(static_cast<char*>(workspace) + kCounterBytes);
  }
  // nf4 / fp4 kernels exist with both codebook tables; the others need none.
  auto kernel_for = [](auto table) {
    constexpr bool kTable = decltype(table)::value;
    if constexpr (Tile::kConfig.transposed) return gemm_wg_kernel<T, F, Tile, kUseWgmma, kTable>;
    else return gemm_kernel<T, F, Tile, kTable>;
  };
  const bool table = is_codebook(F) && smem_table;
  void (*kernel)(KernelParams<T>) = kernel_for(std::false_type{});
  if constexpr (is_codebook(F)) {
    if (table) kernel = kernel_for(std::true_type{});
  }
  const int smem = c.smem_bytes() + kernel_smem_prefix(F, table, c);
  NIBBLE_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const std::int64_t grid = std::int64_t(plan.tiles_m) * plan.tiles_n * plan.splits;
  kernel<<<dim3(unsigned(grid)), dim3(c.threads()), smem, stream>>>(p);
  NIBBLE_CHECK_LAUNCH();
  return Status::kSuccess;
}

template <class T, Format F>
Status dispatch_tile(const Arguments& args, const Plan& plan, bool wgmma, bool table, void* workspace,
                     cudaStream_t stream) {
  // go(Tile{}) launches the kernel of tile type Tile; transposed tiles with the wgmma body where asked.
  auto go = [&](auto tile) -> Status {
    using Tile = decltype(tile);
    if constexpr (Tile::kConfig.transposed) {
      if (wgmma) return launch<T, F, Tile, true>(args, plan, workspace, stream, table);
    }
    return launch<T, F, Tile>(args, plan, workspace, stream, table);
  };
  switch (plan.kind) {
    // choose_tile picks kDecode for s4 / u4 and kDecodeCodebook for nf4 / fp4: only those kernels exist
    case TileKind::kDecode:
      if constexpr (!is_codebook(F)) return go(TileDecode{});
      return Status::kErrorInvalidArgument;
    case TileKind::kDecodeCodebook:
      if constexpr (is_codebook(F)) return go(TileDecodeCodebook{});
      return Status::kErrorInvalidArgument;
    case TileKind::kSmall: return go(TileSmall{});
    case TileKind::kLarge: return go(TileLarge{});
    case TileKind::kSmallCompact: return go(TileSmallCompact{});
    case TileKind::kLargeCompact: return go(TileLargeCompact{});
    case TileKind::kWgSmall: return go(TileWgSmall{});
    case TileKind::kWgMid: return go(TileWgMid{});
    case TileKind::kWgLarge: return go(TileWgLarge{});
  }
  return Status::kErrorInvalidArgument;
}

template <class T>
Status dispatch_format(const Arguments& args, const Plan& plan, bool wgmma, bool table, void* workspace,
                       cudaStream_t stream) {
  switch (args.w.format) {
    case Format::kS4: return dispatch_tile<T, Format::kS4>(args, plan, wgmma, table, workspace, stream);
    case Format::kU4: return dispatch_tile<T, Format::kU4>(args, plan, wgmma, table, workspace, stream);
    case Format::kNf4: return dispatch_tile<T, Format::kNf4>(args, plan, wgmma, table, workspace, stream);
    case Format::kFp4: return dispatch_tile<T, Format::kFp4>(args, plan, wgmma, table, workspace, stream);
  }
  return Status::kErrorUnsupportedFormat;
}
}  // namespace detail

/// Bytes of workspace run() needs for `args` on the current device (0 when no split-K is used).
inline std::size_t get_workspace_size(const Arguments& args) {
  if (can_implement(args) != Status::kSuccess) return 0;
  return make_plan(args, detail::current_sm_count(args.sm_count), resolve_mainloop(args.mainloop),
                   detail::max_smem_optin())
      .workspace_bytes;
}

/// Launches the GEMM on `stream`. `workspace` must hold get_workspace_size(args) bytes whose first
/// kCounterBytes were zeroed once before first use: run() leaves that counter region zero again, so one
/// workspace (sized for the largest GEMM) serves GEMMs of every shape, one stream at a time. It may be null
/// when the size is 0.
/// (A template only so that its 132 kernel instantiations are compiled in the translation units that call
/// it, not in every one that includes nibble.cuh.)
template <int kInstantiateOnUse = 0>
Status run(const Arguments& args, void* workspace, std::size_t workspace_bytes, cudaStream_t stream) {
  NIBBLE_RETURN_IF_ERROR(can_implement(args));
  NIBBLE_RETURN_IF_ERROR(check_device());
  const Mainloop mainloop = resolve_mainloop(args.mainloop);
  // Shared memory: the device's opt-in limit, or the caller's smaller one.
  const int smem_optin = detail::smem_limit(args.max_smem_per_block, detail::max_smem_optin());
  const Plan plan = make_plan(args, detail::current_sm_count(args.sm_count), mainloop, smem_optin);
  const TileConfig tile = tile_config(plan.kind);
  if (mainloop == Mainloop::kWgmma && tile.transposed && !wgmma_available()) return Status::kErrorUnsupportedDevice;
  if (!launchable(plan)) return Status::kErrorSizeOverflow;
  if (plan.workspace_bytes > 0 && (workspace == nullptr || workspace_bytes < plan.workspace_bytes))
    return Status::kErrorWorkspaceTooSmall;
  if (plan.workspace_bytes > 0 && !nibble::detail::is_aligned(workspace, 16)) return Status::kErrorMisalignedPointer;
  // The tile must fit; the nf4 / fp4 table goes where it also fits (kAuto).
  if (tile.smem_bytes() > smem_optin) return Status::kErrorUnsupportedDevice;
  bool table = false;
  if (is_codebook(args.w.format)) {
    const bool fits = tile.smem_bytes() + tile.table_bytes() <= smem_optin;
    if (args.codebook_table == CodebookTable::kSharedMemory && !fits) return Status::kErrorUnsupportedDevice;
    table = args.codebook_table == CodebookTable::kSharedMemory ||
            (args.codebook_table == CodebookTable::kAuto && fits);
  }
  const bool wgmma = mainloop == Mainloop::kWgmma;
  if (args.act_type == DType::kF16)
    return detail::dispatch_format<__half>(args, plan, wgmma, table, workspace, stream);
  return detail::dispatch_format<__nv_bfloat16>(args, plan, wgmma, table, workspace, stream);
}

}  // namespace nibble::gemm
