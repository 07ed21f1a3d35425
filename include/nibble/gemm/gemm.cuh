// nibble/gemm/gemm.cuh — host API of the int4 GEMM, in the CUTLASS / CUB manner:
//
//   nibble::gemm::Arguments args{...};
//   NIBBLE_RETURN_IF_ERROR(nibble::gemm::can_implement(args));             // CPU only, names what is wrong
//   std::size_t bytes = 0;
//   NIBBLE_RETURN_IF_ERROR(nibble::gemm::get_workspace_size(args, &bytes)); // 0 unless split-K is used
//   // allocate once (the largest size of all your GEMMs), zero once (cudaMemset); run() leaves its
//   // counter region zero again, so the same workspace serves every later GEMM on that stream
//   NIBBLE_RETURN_IF_ERROR(nibble::gemm::run<__half, nibble::Format::kS4>(args, workspace, bytes, stream));
//
// run<T, F> compiles only the kernels of activation type T and format F; the untyped run(args, ...) compiles
// all of them and dispatches on args.act_type / args.w.format. run() never allocates, memsets, synchronizes
// or reads device memory on the host, so it can be captured in a CUDA graph; device properties come from a
// per-device cache (device.cuh). Results are deterministic (split-K partials are summed in a fixed order,
// no atomics on floats).
//
// The pieces (see README "Design"): tile_registry.cuh (the tiles and the heuristic), scheduler.cuh (CTA ->
// tile / split / k-range, split-K workspace and reduction, split cost model), producer.cuh (cp.async
// stages), shared_storage.cuh, mainloop_sm80.cuh / mainloop_transposed.cuh (the kernel families),
// epilogue.cuh, dispatch.cuh (plan -> launch), warp_mma.cuh (the public warp-level building block).
#pragma once

#include "../device.cuh"
#include "../layout/gemm_layout.cuh"
#include "../status.cuh"
#include "dispatch.cuh"
#include "scheduler.cuh"
#include "tile_registry.cuh"

namespace nibble::gemm {

/// Where nf4 / fp4 kernels keep their codebook while decoding.
enum class CodebookTable : int {
  kAuto = 0,          ///< kSharedMemory where the device has room for it, else kRegisters
  kSharedMemory = 1,  ///< a 16 or 32 KiB byte -> pair table per CTA (faster decode)
  kRegisters = 2,     ///< the 16-entry table in 8 registers per thread (no shared memory)
};

/// C[M, N] = A[M, K] * dequant(W)^T (+ bias[N]).
struct Arguments {
  std::int64_t m = 0;            ///< rows of A and C (tokens); any M >= 1
  DType act_type = DType::kF16;  ///< type of A, bias and the weight scales: kF16 or kBF16
  const void* a = nullptr;       ///< A [M, lda] row-major; 16-byte aligned, lda a multiple of 8
  std::int64_t lda = 0;          ///< >= K
  GemmWeights w;                 ///< the weight, repacked for act_type (layout/repack.cuh)
  const void* bias = nullptr;    ///< optional bias [N] of act_type
  void* c = nullptr;             ///< C [M, ldc] row-major
  std::int64_t ldc = 0;          ///< >= N
  DType out_type = DType::kF16;  ///< act_type, or kF32 for fp32 output
  int split_k = 0;               ///< 0: chosen by the heuristic; > 0: forced number of K splits (the stream kernel's
                                 ///< at least: it raises it where one K slice of A would not fit its shared memory)
  int sm_count = 0;              ///< 0: taken from the current device
  Mainloop mainloop = Mainloop::kAuto;                  ///< kernel family; kAuto picks the fastest available
  CodebookTable codebook_table = CodebookTable::kAuto;  ///< nf4 / fp4 decode table
  /// 0: the device's opt-in limit of shared memory per block. > 0: run() uses only tiles (and nf4 / fp4
  /// tables) within this many bytes per CTA, e.g. to leave room for other kernels or to run what a GPU with
  /// 99 KiB per block (101376) runs; kErrorUnsupportedDevice if no tile for M fits.
  int max_smem_per_block = 0;
  /// Cap on the split-K workspace run() may ask for (get_workspace_size never exceeds it): the planner
  /// uses fewer K splits where the partial sums would need more (one split: no workspace at all).
  std::size_t max_workspace_bytes = kDefaultMaxWorkspaceBytes;
  /// Opt-in programmatic dependent launch (sm_90+; ignored elsewhere): run() launches with
  /// cudaLaunchAttributeProgrammaticStreamSerialization, and the kernel fetches its weights (codes, scales,
  /// zeros, offsets) before it waits for the previous kernel in the stream, reading A, bias, C and the workspace
  /// only after that. The weights must therefore not be written by the kernel just before on the stream.
  bool programmatic_launch = false;
};

/// The limits of `info` as the planner sees them.
inline DeviceLimits device_limits(const DeviceInfo& info) {
  return DeviceLimits{info.sm_count, info.max_smem_per_block, info.smem_per_sm, info.max_threads_per_sm};
}

/// make_plan_for with the arguments' M, weight shape and split_k, on a device with limits `d` (where
/// args.sm_count > 0 replaces d.sm_count).
inline Plan make_plan_for(const Arguments& args, const TileConfig& c, const DeviceLimits& d) {
  const int sms = args.sm_count > 0 ? args.sm_count : d.sm_count;
  // nf4 / fp4 count their shared-memory codebook table whichever table runs, so that both give the same
  // plan and bit-identical C
  return make_plan_for(args.m, args.w.shape(), args.split_k, c, sms,
                       detail::ctas_per_sm(c, is_codebook(args.w.format), d, args.w.format), args.max_workspace_bytes);
}

/// The plan of stream configuration c (mainloop_stream.cuh) for the arguments on a device with limits `d`:
/// the activation slice gets what the shared-memory limit leaves after the kernel's static bytes, the
/// partial-sum slots, the copy rings and (nf4 / fp4, whichever table runs, so that both give the same plan)
/// the codebook table. False where that leaves no room or the workspace cap rules the plan out.
inline bool make_stream_plan_for(const Arguments& args, const TileConfig& c, const DeviceLimits& d, Plan* out) {
  const int limit = detail::smem_limit(args.max_smem_per_block, d.max_smem_per_block);
  const int fixed = c.stream_fixed_bytes(args.w.format) + (is_codebook(args.w.format) ? c.codebook_bytes() : 0);
  int act = TileConfig::kStreamActBytes;
  if (limit > 0 && limit - kStreamStaticBytes - fixed < act) act = limit - kStreamStaticBytes - fixed;
  return make_stream_plan(args.w.shape(), args.m, args.split_k, c, args.sm_count > 0 ? args.sm_count : d.sm_count, act,
                          fixed, args.max_workspace_bytes, out);
}

/// The launch plan run() uses on a device with limits `d` for a resolved (non-auto) mainloop: the
/// heuristic's tile for M, replaced by a smaller one (fit_tile) where it needs more shared memory than
/// args.max_smem_per_block or d.max_smem_per_block (each ignored when 0) allow, then make_plan_for.
inline Plan make_plan(const Arguments& args, const DeviceLimits& d, Mainloop mainloop = Mainloop::kMmaSync) {
  const int sms = args.sm_count > 0 ? args.sm_count : d.sm_count;
  TileKind kind = choose_tile(args.m, mainloop, args.w.format, stream_atoms_per_sm(args.w.n, args.w.k, sms), args.w.n);
  const int limit = detail::smem_limit(args.max_smem_per_block, d.max_smem_per_block);
  if (tile_config(kind).stream) {
    for (int i = 0; i < kTileCount; ++i) {  // the stream tile, else its Fewer chain, else the mma.sync tile
      Plan p;
      if (make_stream_plan_for(args, tile_config(kind), d, &p)) {
        // stream_m8_l's larger ring leaves less room for A: where that costs a K split that stream_m8 does
        // without, stream_m8 is faster for s4 / u4 (H200, session 8, s4 g128, 8192 x 28672 M = 4: 40.4 vs 42.5
        // us; where both split, stream_m8_l stays ahead: 28672 x 8192 M = 4 39.8 vs 43.8). Not for nf4 / fp4
        // (28672 x 8192 M = 1: stream_m8 51.8 us with one slice, stream_m8_l 47.0 with four), nor affine u4,
        // whose larger ring splits K in stream_m8_l where u4's does not (28672 x 8192 M = 1: affine on stream_m8
        // 53.7 us, u4 on stream_m8_l 44.6).
        Plan q;
        if (kind == tile_kind<TileStream8L> && (args.w.format == Format::kS4 || args.w.format == Format::kU4) &&
            p.splits > 1 && make_stream_plan_for(args, tile_config(tile_kind<TileStream8>), d, &q) && q.splits == 1) {
          q.kind = tile_kind<TileStream8>;
          return q;
        }
        p.kind = kind;
        return p;
      }
      if (tile_fewer(kind) == kind) break;
      kind = tile_fewer(kind);
    }
    kind = choose_tile(args.m, Mainloop::kMmaSync, args.w.format);
  }
  // The warp-specialized tile reads 16-bit scales only and has no smaller variant: wg_large (its 256 x 128 tile on
  // the cp.async pipeline, at every M ws_large serves) where the scales are compact (repack_dq) or its shared
  // memory does not fit.
  // (A forced shared-memory codebook table counts: prepare() refuses a tile whose table does not fit.)
  if (kind == tile_kind<TileWsLarge>) {
    const TileConfig ws = tile_config(kind);
    const bool forced_table = is_codebook(args.w.format) && args.codebook_table == CodebookTable::kSharedMemory;
    const int need = ws.smem_bytes(args.w.format) + (forced_table ? ws.table_bytes() : 0);
    if (args.w.dq_compact() || (limit > 0 && need > limit)) kind = tile_kind<TileWgLarge>;
  }
  if (limit > 0) kind = fit_tile(kind, limit, args.w.format);
  Plan p = make_plan_for(args, tile_config(kind), d);
  p.kind = kind;
  return p;
}
/// make_plan on an H100 / H200-like device (kH200Limits) of `sm_count` SMs whose opt-in limit per block is
/// `device_smem` (0: no limit).
inline Plan make_plan(const Arguments& args, int sm_count, Mainloop mainloop = Mainloop::kMmaSync,
                      int device_smem = 0) {
  DeviceLimits d = kH200Limits;
  d.sm_count = sm_count;
  d.max_smem_per_block = device_smem;
  return make_plan(args, d, mainloop);
}

namespace detail {
inline int log2_exact(std::int64_t x) {
  int l = 0;
  while ((std::int64_t(1) << l) < x) ++l;
  return l;
}

/// Every check of can_implement but the grid size, in the order every nibble entry point uses for the
/// weight's shape (quantize, repack, GEMM): format / type, group size supported, shape (>= 1, K even), K a
/// multiple of the group; then what only the GEMM needs (K % 8, pointers, leading dimensions, ...).
inline Status check_arguments(const Arguments& args) {
  const GemmWeights& w = args.w;
  if (args.act_type != DType::kF16 && args.act_type != DType::kBF16) return Status::kErrorUnsupportedFormat;
  if (args.out_type != args.act_type && args.out_type != DType::kF32) return Status::kErrorUnsupportedFormat;
  if (w.scale_type != args.act_type) return Status::kErrorUnsupportedFormat;  // repack for this act type
  if (!has_gemm_layout(w.format)) return Status::kErrorUnsupportedFormat;
  if (!is_supported_group_size(w.group_size)) return Status::kErrorGroupSize;
  if (args.m < 1 || w.n < 1 || w.k < 1 || w.k % 2 != 0) return Status::kErrorInvalidShape;
  if (w.group_size != kPerChannel && w.k % w.group_size != 0) return Status::kErrorGroupSize;
  constexpr std::int64_t kMaxDim = std::int64_t(1) << 30;  // keeps every int32 tile index in range
  if (args.m > kMaxDim || w.n > kMaxDim || w.k > kMaxDim) return Status::kErrorSizeOverflow;
  // A is read in 16-byte chunks of 8 elements (per-channel weights with K % 8 != 0 quantize, not multiply)
  if (w.k % 8 != 0) return Status::kErrorInvalidShape;
  // compact double-quantized scales (repack_dq): nf4 / fp4 only, dq_stats with them, no 16-bit scales
  if (w.dq_compact() && !is_codebook(w.format)) return Status::kErrorUnsupportedFormat;
  if (args.a == nullptr || args.c == nullptr || w.codes == nullptr ||
      (w.dq_compact() ? w.dq_stats == nullptr : w.scales == nullptr))
    return Status::kErrorNullPointer;
  if (w.dq_compact() && w.scales != nullptr) return Status::kErrorInvalidArgument;  // one of the two, not both
  // (the kernels index the dq codes and the plain scale order in 32 bits: below 2^31 scales)
  if (w.dq_compact() && w.shape().scale_count() >= (std::int64_t(1) << 31)) return Status::kErrorSizeOverflow;
  if (w.format == Format::kU4 && w.zeros == nullptr) return Status::kErrorNullPointer;
  if (has_offset(w.format) && w.offsets == nullptr) return Status::kErrorNullPointer;
  if (args.lda < w.k || args.ldc < w.n) return Status::kErrorLeadingDimension;
  if (!nibble::detail::is_aligned(args.a, 16) || args.lda % 8 != 0) return Status::kErrorMisalignedPointer;
  if (!nibble::detail::is_aligned(w.codes, 16) || !nibble::detail::is_aligned(w.scales, 16) ||
      !nibble::detail::is_aligned(w.dq_codes, 16) || !nibble::detail::is_aligned(w.dq_stats, 16) ||
      (w.zeros != nullptr && !nibble::detail::is_aligned(w.zeros, 16)) ||
      (has_offset(w.format) && !nibble::detail::is_aligned(w.offsets, 16)))
    return Status::kErrorMisalignedPointer;
  if (!nibble::detail::is_aligned(args.c, size_of(args.out_type)) ||
      (args.bias != nullptr && !nibble::detail::is_aligned(args.bias, 2)))
    return Status::kErrorMisalignedPointer;
  if (args.split_k < 0 || args.sm_count < 0 || args.max_smem_per_block < 0) return Status::kErrorInvalidArgument;
  if (args.mainloop != Mainloop::kAuto && args.mainloop != Mainloop::kMmaSync &&
      args.mainloop != Mainloop::kTransposedMma && args.mainloop != Mainloop::kWgmma &&
      args.mainloop != Mainloop::kStream)
    return Status::kErrorInvalidArgument;
  // A forced kStream for a format the stream tiles do not serve (stream_serves; every format today) is refused
  // (above kStreamMaxM kStream runs what kAuto runs, which is fine).
  if (args.mainloop == Mainloop::kStream && args.m <= kStreamMaxM && !stream_serves(w.format))
    return Status::kErrorUnsupportedFormat;
  if (args.codebook_table != CodebookTable::kAuto && args.codebook_table != CodebookTable::kSharedMemory &&
      args.codebook_table != CodebookTable::kRegisters)
    return Status::kErrorInvalidArgument;
  // overflow of M * ldc and M * lda offsets in 64-bit arithmetic
  if (args.ldc > (std::int64_t(1) << 62) / args.m || args.lda > (std::int64_t(1) << 62) / args.m)
    return Status::kErrorSizeOverflow;
  return Status::kSuccess;
}

template <class T>
KernelParams<T> make_kernel_params(const Arguments& args, const Plan& plan, void* workspace) {
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
  p.offsets = static_cast<const T*>(w.offsets);
  p.shape = w.shape();
  p.dq_codes = w.dq_codes;
  p.dq_stats = w.dq_stats;
  p.dq_groups = layout::dq_plain_groups(p.shape, w.group_size);
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
  return p;
}
}  // namespace detail

/// Checks every argument on the CPU (no CUDA call). Returns the first problem found.
inline Status can_implement(const Arguments& args) {
  NIBBLE_RETURN_IF_ERROR(detail::check_arguments(args));
  // the grid of one launch fits (checked with the requested SM count or 1; run() checks the device's)
  // (every mainloop's tiles are at least as large as kMmaSync's, so checking that one covers them all)
  if (!launchable(make_plan(args, args.sm_count > 0 ? args.sm_count : 1))) return Status::kErrorSizeOverflow;
  return Status::kSuccess;
}

NIBBLE_ARCH_NAMESPACE_BEGIN

/// True when this translation unit was built with device code for sm_90a (NIBBLE_SM90A, which the CMake
/// package defines when the target's CUDA_ARCHITECTURES list 90a) and `info` is an sm_90 device. Host code
/// cannot see which device code a binary holds, so the macro carries it; if it is set wrongly the
/// transposed kernel runs its mma.sync body: slower, never wrong.
inline bool wgmma_available(const DeviceInfo& info) { return kBuiltForSm90a && info.compute_capability == 90; }
/// wgmma_available for the current device (false without one).
inline bool wgmma_available() {
  DeviceInfo info;
  return current_device_info(&info) == Status::kSuccess && wgmma_available(info);
}

/// The mainloop run() uses for `requested` (kAuto resolved against this build and the device).
inline Mainloop resolve_mainloop(Mainloop requested, const DeviceInfo& info) {
  if (requested != Mainloop::kAuto) return requested;
  return wgmma_available(info) ? Mainloop::kWgmma : Mainloop::kMmaSync;
}
inline Mainloop resolve_mainloop(Mainloop requested) {
  DeviceInfo info;
  if (current_device_info(&info) != Status::kSuccess) info = DeviceInfo{};
  return resolve_mainloop(requested, info);
}
/// The mainloop run() uses for `requested` and an M x N x K GEMM: kAuto is the warp-streamed decode kernel
/// where it serves the format (stream_serves) and stream_preferred(m, n, k, format), else
/// (and kStream above kStreamMaxM) what resolve_mainloop(kAuto) gives.
inline Mainloop resolve_mainloop(Mainloop requested, std::int64_t m, std::int64_t n, std::int64_t k,
                                 const DeviceInfo& info, Format format = Format::kS4) {
  if (requested == Mainloop::kAuto && stream_serves(format) && stream_preferred(m, n, k, format))
    return Mainloop::kStream;
  if (requested == Mainloop::kStream && m > kStreamMaxM) return resolve_mainloop(Mainloop::kAuto, info);
  return resolve_mainloop(requested, info);
}

NIBBLE_ARCH_NAMESPACE_END

namespace detail {
NIBBLE_ARCH_NAMESPACE_BEGIN
/// What run() checks and decides before a launch: the arguments, the device, the plan, the table and the
/// workspace. `info` is the current device's.
struct Launch {
  Plan plan;
  bool wgmma = false, table = false;
};
inline Status prepare(const Arguments& args, const DeviceInfo& info, Launch* out) {
  NIBBLE_RETURN_IF_ERROR(check_arguments(args));
  NIBBLE_RETURN_IF_ERROR(check_device(info));
  const Mainloop mainloop = resolve_mainloop(args.mainloop, args.m, args.w.n, args.w.k, info, args.w.format);
  // Shared memory: the device's opt-in limit, or the caller's smaller one.
  const int smem_optin = smem_limit(args.max_smem_per_block, info.max_smem_per_block);
  const Plan plan = make_plan(args, device_limits(info), mainloop);
  const TileConfig tile = tile_config(plan.kind);
  if (mainloop == Mainloop::kWgmma && tile.transposed && !wgmma_available(info)) return Status::kErrorUnsupportedDevice;
  if (!launchable(plan)) return Status::kErrorSizeOverflow;
  // The tile must fit; the nf4 / fp4 table goes where it also fits (kAuto). A stream plan's shared memory
  // (plan.smem_bytes) already holds the table's room (and the dq map's, which stays).
  const int tile_smem = tile.stream ? plan.smem_bytes - (is_codebook(args.w.format) ? tile.table_bytes() : 0)
                                    : tile.smem_bytes(args.w.format);
  if (tile_smem > smem_optin) return Status::kErrorUnsupportedDevice;
  bool table = false;
  if (is_codebook(args.w.format)) {
    const bool fits = tile_smem + tile.table_bytes() <= smem_optin;
    if (args.codebook_table == CodebookTable::kSharedMemory && !fits) return Status::kErrorUnsupportedDevice;
    table =
        args.codebook_table == CodebookTable::kSharedMemory || (args.codebook_table == CodebookTable::kAuto && fits);
  }
  out->plan = plan;
  out->wgmma = mainloop == Mainloop::kWgmma;
  out->table = table;
  return Status::kSuccess;
}
/// prepare() on the current device (its properties in *info); without one, the arguments' own error comes
/// first, then kErrorUnsupportedDevice.
inline Status prepare_current(const Arguments& args, DeviceInfo* info, Launch* out) {
  if (current_device_info(info) != Status::kSuccess) {
    NIBBLE_RETURN_IF_ERROR(check_arguments(args));
    return Status::kErrorUnsupportedDevice;
  }
  return prepare(args, *info, out);
}
inline Status check_workspace(const Plan& plan, void* workspace, std::size_t workspace_bytes) {
  if (plan.workspace_bytes > 0 && (workspace == nullptr || workspace_bytes < plan.workspace_bytes))
    return Status::kErrorWorkspaceTooSmall;
  if (plan.workspace_bytes > 0 && !nibble::detail::is_aligned(workspace, 16)) return Status::kErrorMisalignedPointer;
  return Status::kSuccess;
}
NIBBLE_ARCH_NAMESPACE_END
}  // namespace detail

NIBBLE_ARCH_NAMESPACE_BEGIN

/// Bytes of workspace run() needs for `args` on the current device (0 when no split-K is used), in *bytes.
/// Returns what run() would return for these arguments before its launch (kErrorUnsupportedDevice without
/// a usable GPU, the argument's error otherwise).
inline Status get_workspace_size(const Arguments& args, std::size_t* bytes) {
  if (bytes == nullptr) return Status::kErrorNullPointer;
  DeviceInfo info;
  detail::Launch l;
  NIBBLE_RETURN_IF_ERROR(detail::prepare_current(args, &info, &l));
  *bytes = l.plan.workspace_bytes;
  return Status::kSuccess;
}

/// Launches the GEMM on `stream`, compiling only the kernels of activation type T (__half or
/// __nv_bfloat16) and format F; args.act_type and args.w.format must be those (else
/// kErrorUnsupportedFormat). `workspace` must hold get_workspace_size bytes whose first kCounterBytes were
/// zeroed once before first use: run() leaves that counter region zero again, so one workspace (sized for
/// the largest GEMM) serves GEMMs of every shape, one stream at a time. It may be null when the size is 0.
template <class T, Format F>
Status run(const Arguments& args, void* workspace, std::size_t workspace_bytes, cudaStream_t stream) {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>, "T: __half or __nv_bfloat16");
  if (args.act_type != dtype_of_v<T> || args.w.format != F) {
    NIBBLE_RETURN_IF_ERROR(detail::check_arguments(args));  // the same Status as the untyped run, if bad
    return Status::kErrorUnsupportedFormat;
  }
  DeviceInfo info;
  detail::Launch l;
  NIBBLE_RETURN_IF_ERROR(detail::prepare_current(args, &info, &l));
  NIBBLE_RETURN_IF_ERROR(detail::check_workspace(l.plan, workspace, workspace_bytes));
  detail::KernelParams<T> kp = detail::make_kernel_params<T>(args, l.plan, workspace);
  kp.dependent_launch = args.programmatic_launch && info.compute_capability >= 90;  // griddepcontrol: sm_90+
  return detail::dispatch<T, F>(kp, l.plan, l.wgmma, l.table, stream, info.device);
}

/// run() for any activation type and format (dispatches on args.act_type and args.w.format to run<T, F>).
/// (A template only so that its kernel instantiations are compiled in the translation units that call it,
/// not in every one that includes nibble.cuh.)
template <int kInstantiateOnUse = 0>
Status run(const Arguments& args, void* workspace, std::size_t workspace_bytes, cudaStream_t stream) {
  const bool f16 = args.act_type == DType::kF16;
  switch (args.w.format) {
    case Format::kS4:
      return f16 ? run<__half, Format::kS4>(args, workspace, workspace_bytes, stream)
                 : run<__nv_bfloat16, Format::kS4>(args, workspace, workspace_bytes, stream);
    case Format::kU4:
      return f16 ? run<__half, Format::kU4>(args, workspace, workspace_bytes, stream)
                 : run<__nv_bfloat16, Format::kU4>(args, workspace, workspace_bytes, stream);
    case Format::kNf4:
      return f16 ? run<__half, Format::kNf4>(args, workspace, workspace_bytes, stream)
                 : run<__nv_bfloat16, Format::kNf4>(args, workspace, workspace_bytes, stream);
    case Format::kFp4:
      return f16 ? run<__half, Format::kFp4>(args, workspace, workspace_bytes, stream)
                 : run<__nv_bfloat16, Format::kFp4>(args, workspace, workspace_bytes, stream);
    case Format::kAffineU4:
      return f16 ? run<__half, Format::kAffineU4>(args, workspace, workspace_bytes, stream)
                 : run<__nv_bfloat16, Format::kAffineU4>(args, workspace, workspace_bytes, stream);
  }
  NIBBLE_RETURN_IF_ERROR(detail::check_arguments(args));
  return Status::kErrorUnsupportedFormat;
}

NIBBLE_ARCH_NAMESPACE_END

}  // namespace nibble::gemm
