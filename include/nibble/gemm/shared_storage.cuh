// nibble/gemm/shared_storage.cuh — the GEMM kernels' shared memory, declared as structs (CUB's TempStorage,
// CUTLASS's SharedStorage) instead of byte offsets: one pipeline stage, the stage ring, the nf4 / fp4
// codebook table in front of it, and (transposed kernel) the fp32 output staging tile that reuses the ring.
// Sizes equal TileConfig's byte counts (static_asserts below), which the host side uses for the launch and
// the occupancy model.
#pragma once

#include "tile_registry.cuh"
#include "warp_mma.cuh"

namespace nibble::gemm::detail {

/// One pipeline stage: sA, sW, sS, sZ of one k-tile (StageStorage<T, Tile, true>: and sO, the affine u4
/// offsets).
///
/// sA is stored as tile_k / 64 sub-tiles of [tile_m rows][64 k] (128-byte rows), 16-byte chunk c of row r at
/// chunk c ^ (r % 8): conflict-free for ldmatrix, and exactly the 128-byte-swizzled K-major layout a wgmma
/// descriptor describes (when the sub-tile is 1024-byte aligned: transposed stages are).
template <class T, class Tile>
struct alignas(Tile::kConfig.transposed ? 1024 : 16) StageCore {
  static constexpr TileConfig C = Tile::kConfig;
  T a[C.tile_m() * C.tile_k()];  // sA: (tile_k / 64, tile_m, 64) T, swizzled
  alignas(16) std::uint8_t w[C.tile_n() / layout::kAtomN][C.atoms_k][layout::kAtomBytes];  // sW: atoms
  alignas(16) T s[C.max_groups_per_tile()][C.tile_n()];             // sS: (groups, tile_n) scales
  alignas(16) std::uint8_t z[C.max_groups_per_tile()][C.tile_n()];  // sZ: (groups, tile_n) zero points (u4)

  /// Element offset in `a` of 8-element chunk `chunk` (0 .. tile_k / 8 - 1) of row `row`.
  NIBBLE_HOST_DEVICE static constexpr int a_offset(int row, int chunk) {
    return (chunk / 8) * (C.tile_m() * 64) + row * 64 + ((chunk % 8) ^ (row % 8)) * 8;
  }
  /// The atom (tile-local column nb, k-tile-local row kb) in sW.
  NIBBLE_DEVICE const std::uint8_t* atom(int nb, int kb) const { return w[nb][kb]; }
};
/// kOffsets (affine u4) appends sO after the stage every other format has (whose size and layout stay as
/// tuned): TileConfig::stage_bytes(f) counts it.
template <class T, class Tile, bool kOffsets = false>
struct StageStorage : StageCore<T, Tile> {};
template <class T, class Tile>
struct StageStorage<T, Tile, true> : StageCore<T, Tile> {
  alignas(16) T o[Tile::kConfig.max_groups_per_tile()][Tile::kConfig.tile_n()];  // sO: (groups, tile_n) offsets
};

/// The nf4 / fp4 byte -> pair table (warp_mma.cuh: fill_smem_codebook), kCopies copies.
template <int kCopies>
struct alignas(16) CodebookStorage {  // a multiple of 1024 bytes: the ring after it stays aligned
  std::uint32_t words[smem_codebook_bytes(kCopies) / 4];
};

/// The mma.sync kernel's shared memory: [table] + the stage ring (kOffsets: affine u4's stages).
template <class T, class Tile, bool kTable, bool kOffsets = false>
struct MmaSharedStorage {
  StageStorage<T, Tile, kOffsets> stages[Tile::kConfig.stages];
  NIBBLE_DEVICE const void* table() const { return nullptr; }
};
template <class T, class Tile, bool kOffsets>
struct MmaSharedStorage<T, Tile, true, kOffsets> {
  CodebookStorage<Tile::kConfig.table_copies> codebook;
  StageStorage<T, Tile, kOffsets> stages[Tile::kConfig.stages];
  NIBBLE_DEVICE const void* table() const { return codebook.words; }
};

/// The transposed kernel's shared memory: [table] + the stage ring, which the fp32 output staging tile
/// (tile_m tokens x tile_n + 4 weight rows) reuses after the mainloop.
template <class T, class Tile, bool kOffsets = false>
union TransposedRing {
  StageStorage<T, Tile, kOffsets> stages[Tile::kConfig.stages];
  float staged_c[Tile::kConfig.tile_m()][Tile::kConfig.c_stage_pitch()];  // rC staged: (tokens, weights + 4)
};
template <class T, class Tile, bool kTable, bool kOffsets = false>
struct TransposedSharedStorage {
  TransposedRing<T, Tile, kOffsets> ring;
  NIBBLE_DEVICE const void* table() const { return nullptr; }
};
template <class T, class Tile, bool kOffsets>
struct TransposedSharedStorage<T, Tile, true, kOffsets> {
  CodebookStorage<Tile::kConfig.table_copies> codebook;
  TransposedRing<T, Tile, kOffsets> ring;
  NIBBLE_DEVICE const void* table() const { return codebook.words; }
};

/// The decoding context a library kernel of configuration Tile uses for format F: the shared-memory
/// codebook table (Tile::kConfig.table_copies copies) for nf4 / fp4 when kSmemTable, else the register one.
template <Format F, class T, bool kSmemTable, class Tile>
using KernelDequantContext =
    std::conditional_t<is_codebook(F) && kSmemTable, SmemCodebookContext<F, T, Tile::kConfig.table_copies>,
                       DequantContext<F, T>>;

/// Builds the kernel's decoding context; with the shared-memory table also fills it at `table` (every
/// thread of the CTA calls this; the mainloop's first barrier comes before the first read).
template <Format F, class T, bool kSmemTable, class Tile>
NIBBLE_DEVICE KernelDequantContext<F, T, kSmemTable, Tile> make_kernel_dequant_context(const void* table, int tid) {
  constexpr TileConfig C = Tile::kConfig;
  if constexpr (is_codebook(F) && kSmemTable) {
    fill_smem_codebook<F, T, C.table_copies>(const_cast<void*>(table), tid, C.threads());
    return SmemCodebookContext<F, T, C.table_copies>::make(table, tid % 32);
  } else {
    (void)table, (void)tid;
    return DequantContext<F, T>::make();
  }
}

/// Bytes at the start of a GEMM kernel's dynamic shared memory before its stage ring: the codebook table (if
/// it runs), then (nf4 / fp4 stream kernels) the dq map.
NIBBLE_HOST_DEVICE constexpr int kernel_smem_prefix(Format f, bool smem_table, const TileConfig& c) {
  return is_codebook(f) ? (smem_table ? c.table_bytes() : 0) + (c.stream ? TileConfig::kDqMapBytes : 0) : 0;
}

/// The dynamic shared memory a kernel of configuration c launches with for format f (the table where it has
/// one; affine u4's larger stages).
NIBBLE_HOST_DEVICE constexpr int kernel_smem_bytes(Format f, bool smem_table, const TileConfig& c) {
  return c.smem_bytes(f) + kernel_smem_prefix(f, smem_table, c);
}

/// The stage ring of Tile without (kOffsets false: every format but affine u4) or with the offsets has
/// exactly the sizes TileConfig gives for a format of that kind.
template <class T, class Tile, bool kOffsets>
constexpr bool storage_matches_config_for() {
  constexpr TileConfig C = Tile::kConfig;
  constexpr Format f = kOffsets ? Format::kAffineU4 : Format::kS4;
  using Stage = StageStorage<T, Tile, kOffsets>;
  if (sizeof(Stage) != std::size_t(C.stage_bytes(f))) return false;
  if (C.transposed) {
    // smem_bytes() holds 1024 bytes to align the ring at run time
    return sizeof(TransposedSharedStorage<T, Tile, false, kOffsets>) + 1024 == std::size_t(C.smem_bytes(f)) &&
           sizeof(TransposedSharedStorage<T, Tile, true, kOffsets>) + 1024 ==
               std::size_t(C.smem_bytes(f) + C.table_bytes());
  }
  return sizeof(MmaSharedStorage<T, Tile, false, kOffsets>) == std::size_t(C.smem_bytes(f)) &&
         sizeof(MmaSharedStorage<T, Tile, true, kOffsets>) == std::size_t(C.smem_bytes(f) + C.table_bytes());
}
template <class T, class Tile>
constexpr bool storage_matches_config() {
  constexpr TileConfig C = Tile::kConfig;
  if constexpr (C.stream) {
    return true;  // mainloop_stream.cuh carves its shared memory from the plan's byte counts
  } else {
    return storage_matches_config_for<T, Tile, false>() && storage_matches_config_for<T, Tile, true>();
  }
}
template <class T, class... Tiles>
constexpr bool all_storage_matches(nibble::detail::TypeList<Tiles...>) {
  return (storage_matches_config<T, Tiles>() && ...);
}
static_assert(all_storage_matches<__half>(TileList{}) && all_storage_matches<__nv_bfloat16>(TileList{}),
              "shared-memory structs have exactly the sizes the host side launches with");

}  // namespace nibble::gemm::detail
