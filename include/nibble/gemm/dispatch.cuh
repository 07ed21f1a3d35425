// nibble/gemm/dispatch.cuh — from a Plan to a launch: picks the kernel of the plan's tile (tile_registry.cuh)
// for activation type T and format F, sets its shared-memory attribute once per device, launches it.
//
// Adding a kernel family (a new mainloop): write mainloop_<name>.cuh with its __global__ kernel (reading
// KernelParams, using the scheduler / producer / epilogue pieces it needs) and a FamilyKernel<Tag>
// specialization naming it, declare the family tag next to the others in tile_registry.cuh, include the
// header below, and give the registry the tiles that use it. Nothing else changes: the dispatch, plans,
// tests and benchmarks iterate over the registry.
#pragma once

#include <atomic>

#include "../device.cuh"
#include "mainloop_sm80.cuh"
#include "mainloop_stream.cuh"
#include "mainloop_transposed.cuh"
#include "mainloop_ws.cuh"

namespace nibble::gemm::detail {

NIBBLE_ARCH_NAMESPACE_BEGIN

/// Sets `kernel`'s dynamic shared-memory limit to `smem` bytes on `device` unless `done` (one flag per device,
/// owned by the kernel's launcher) says it was set there already: once per device and kernel (the attribute
/// stays set for the lifetime of the context; devices beyond the cache are set every time).
template <class Kernel>
Status set_smem_attribute_once(Kernel kernel, int smem, int device, std::atomic<bool>* done) {
  const bool cached = device >= 0 && device < nibble::detail::kMaxCachedDevices;
  if (cached && done[device].load(std::memory_order_acquire)) return Status::kSuccess;
  NIBBLE_CUDA_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  if (cached) done[device].store(true, std::memory_order_release);
  return Status::kSuccess;
}

/// Launches the kernel of tile Tile for T / F (kUseWgmma: the transposed family's wgmma body; kSmemTable:
/// nf4 / fp4 through the shared-memory table) with the plan's grid on `stream`.
template <class T, Format F, class Tile, bool kUseWgmma, bool kSmemTable>
Status launch_tile(const KernelParams<T>& p, const Plan& plan, cudaStream_t stream, int device) {
  constexpr TileConfig c = Tile::kConfig;
  using Family = FamilyKernel<typename Tile::Kernel>;
  int variant = 0;
  auto* kernel = Family::template kernel<T, F, Tile, kUseWgmma, kSmemTable>(p, &variant);
  // (A stream plan keeps room for the nf4 / fp4 table whichever table runs, so that both give the same plan:
  // its cap counts the table in both variants.)
  constexpr int kMaxSmem = kernel_smem_bytes(F, kSmemTable || (c.stream && is_codebook(F)), c);
  // Stream kernels launch with the plan's shared memory (their K slice), up to kMaxSmem or the device's
  // opt-in limit, whichever is smaller: the attribute is set to that once.
  int attribute = kMaxSmem;
  if constexpr (c.stream) {
    DeviceInfo info;
    if (nibble::device_info(device, &info) == Status::kSuccess &&
        info.max_smem_per_block - kStreamStaticBytes < attribute)
      attribute = info.max_smem_per_block - kStreamStaticBytes;
  }
  const int smem = plan.smem_bytes > 0 ? plan.smem_bytes : kMaxSmem;
  if (smem > attribute) return Status::kErrorUnsupportedDevice;
  // one flag set per kernel (this function is instantiated once per tile, and picks one of its variants)
  static std::atomic<bool> attribute_set[Family::kVariants][nibble::detail::kMaxCachedDevices] = {};
  NIBBLE_RETURN_IF_ERROR(set_smem_attribute_once(kernel, attribute, device, attribute_set[variant]));
  const std::int64_t grid = std::int64_t(plan.tiles_m) * plan.tiles_n * plan.splits;
  // (warp-specialized tiles read A through a tensor map in their parameters: encoded here, on the host)
  KernelParams<T> q = p;
  if constexpr (c.warp_specialized) NIBBLE_RETURN_IF_ERROR((make_act_map<T, Tile>(&q)));
  if (p.dependent_launch) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(unsigned(grid));
    config.blockDim = dim3(c.threads());
    config.dynamicSmemBytes = std::size_t(smem);
    config.stream = stream;
    config.attrs = attr;
    config.numAttrs = 1;
    NIBBLE_CUDA_TRY(cudaLaunchKernelEx(&config, kernel, q));
  } else {
    kernel<<<dim3(unsigned(grid)), dim3(c.threads()), smem, stream>>>(q);
  }
  NIBBLE_CHECK_LAUNCH();
  return Status::kSuccess;
}

/// Launches the plan's tile for T / F: only the tiles that serve F are compiled, the wgmma bodies only in
/// translation units built for sm_90a (elsewhere run() rejects a forced kWgmma before this point), the
/// shared-memory table variants only for nf4 / fp4.
template <class T, Format F>
Status dispatch(const KernelParams<T>& p, const Plan& plan, bool wgmma, bool table, cudaStream_t stream, int device) {
  return visit_tile(plan.kind, Status::kErrorInvalidArgument, [&](auto tile) -> Status {
    using Tile = decltype(tile);
    if constexpr ((Tile::kFormats & format_bit(F)) == 0) {
      return Status::kErrorInvalidArgument;                 // choose_tile never picks it for F
    } else if constexpr (Tile::kConfig.warp_specialized) {  // wgmma only: run() plans it only where it runs
      if constexpr (kBuiltForSm90a) {
        if (wgmma)
          return table ? launch_tile<T, F, Tile, true, is_codebook(F)>(p, plan, stream, device)
                       : launch_tile<T, F, Tile, true, false>(p, plan, stream, device);
      }
      return Status::kErrorUnsupportedDevice;
    } else {
      constexpr bool kWgBody = FamilyKernel<typename Tile::Kernel>::kHasWgmmaBody && kBuiltForSm90a;
      if constexpr (is_codebook(F)) {
        if constexpr (kWgBody) {
          if (wgmma)
            return table ? launch_tile<T, F, Tile, true, true>(p, plan, stream, device)
                         : launch_tile<T, F, Tile, true, false>(p, plan, stream, device);
        }
        return table ? launch_tile<T, F, Tile, false, true>(p, plan, stream, device)
                     : launch_tile<T, F, Tile, false, false>(p, plan, stream, device);
      } else {
        if constexpr (kWgBody) {
          if (wgmma) return launch_tile<T, F, Tile, true, false>(p, plan, stream, device);
        }
        return launch_tile<T, F, Tile, false, false>(p, plan, stream, device);
      }
    }
  });
}

NIBBLE_ARCH_NAMESPACE_END

}  // namespace nibble::gemm::detail
