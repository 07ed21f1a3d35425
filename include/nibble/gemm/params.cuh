// nibble/gemm/params.cuh — the kernel parameters every GEMM mainloop reads, built and validated by the host
// API (gemm.cuh) through the dispatch (dispatch.cuh). Plain data; nothing here depends on the architecture.
#pragma once

#include <cuda.h>  // CUtensorMap (a type only: no driver library is linked)

#include "../layout/gemm_layout.cuh"

namespace nibble::gemm::detail {

template <class T>
struct KernelParams {
  int m, n, k;
  const T* a;  // gA: activations [M, lda], T
  std::int64_t lda;
  const std::uint8_t* codes;  // gW: weight codes in the GEMM layout (layout/gemm_layout.cuh)
  const T* scales;            // gS: [groups][n_pad]
  const std::uint8_t* zeros;  // gZ: [groups][n_pad], u4 only
  const T* offsets;           // gO: [groups][n_pad], affine u4 only
  // compact double-quantized scales (nf4 / fp4; scales is null): layout/gemm_layout.cuh
  const std::uint8_t* dq_codes;  // [groups][n_pad]
  const float* dq_stats;         // map [256], offset, absmax2 from kDqStatsHeader
  std::int64_t dq_groups;        // groups per row of the plain order (dq_plain_groups)
  layout::GemmShape shape;
  int group_log2;  // log2(group) for grouped formats
  bool per_channel;
  const T* bias;  // [N] or null
  void* c;        // gC: [M, ldc], T or float
  std::int64_t ldc;
  bool out_f32;           // C is float instead of T
  bool pair_stores;       // C rows allow 2-element vector stores (ldc even, pointer aligned)
  bool dependent_launch;  // launched with programmatic stream serialization: fetch the first stages' weights,
                          // then griddepcontrol.wait before reading A (gemm.cuh: Arguments::programmatic_launch)
  // the tile scheduler's plan (scheduler.cuh)
  int tiles_m, tiles_n, splits, k_tiles, k_tiles_per_split;
  float* partials;     // split-K workspace: [tiles][splits][tile_m * tile_n] (fragment order)
  unsigned* counters;  // [tiles], zero before and after every run
  // A as a TMA tensor map (warp-specialized tiles only: launch_tile encodes it; the kernel takes the parameters
  // as __grid_constant__ so that the map's address is the parameter's): rows M, columns K, boxes of
  // tile_m x 64 with the 128-byte swizzle
  CUtensorMap a_map;
};

NIBBLE_ARCH_NAMESPACE_BEGIN
/// The kernel that runs a tile of kernel family Family (a tag of tile_registry.cuh); each mainloop header
/// specializes it for its family: `kernel<T, F, Tile, kUseWgmma, kSmemTable>(p, &variant)` (the kernel for the
/// parameters p, and which of the family's kVariants compile-time variants it is), `kVariants` and
/// `kHasWgmmaBody`.
template <class Family>
struct FamilyKernel;
NIBBLE_ARCH_NAMESPACE_END

}  // namespace nibble::gemm::detail
