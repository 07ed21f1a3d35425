// nibble/gemm/tile_io.cuh — the parts both GEMM kernels share: kernel parameters, the shared-memory
// stage layout and its cp.async loads, the deterministic split-K reduction and the store of C.
#pragma once

#include "policy.cuh"
#include "warp_mma.cuh"

namespace nibble::gemm {

/// Everything the kernels read; built and validated by the host API (gemm.cuh).
template <class T>
struct KernelParams {
  int m, n, k;
  const T* a;
  std::int64_t lda;
  const std::uint8_t* codes;   // GEMM layout (layout/gemm_layout.cuh)
  const T* scales;             // [groups][n_pad]
  const std::uint8_t* zeros;   // [groups][n_pad], u4 only
  layout::GemmShape shape;
  int group_log2;              // log2(group) for grouped formats
  bool per_channel;
  const T* bias;               // [N] or null
  void* c;
  std::int64_t ldc;
  bool out_f32;                // C is float instead of T
  bool pair_stores;            // C rows allow 2-element vector stores (ldc even, pointer aligned)
  int tiles_m, tiles_n, splits, k_tiles, k_tiles_per_split;
  float* partials;             // split-K workspace: [tiles][splits][tile_m * tile_n] (fragment order)
  unsigned* counters;          // [tiles], zero before and after every run
};

/// One pipeline stage in shared memory: A [tile_m x tile_k] (T), the weight atoms, scales and zeros.
///
/// A is stored as tile_k / 64 sub-tiles of [tile_m rows][64 k] (128-byte rows), 16-byte chunk c of row r
/// at chunk c ^ (r % 8): conflict-free for ldmatrix, and exactly the 128-byte-swizzled K-major layout a
/// wgmma descriptor describes (when the sub-tile is 1024-byte aligned).
template <class T, class Tile>
struct Stage {
  static constexpr TileConfig C = Tile::kConfig;
  unsigned char* base;
  NIBBLE_DEVICE T* a() const { return reinterpret_cast<T*>(base); }
  NIBBLE_DEVICE unsigned char* b() const { return base + C.a_stage_bytes(); }
  NIBBLE_DEVICE T* s() const { return reinterpret_cast<T*>(base + C.a_stage_bytes() + C.b_stage_bytes()); }
  NIBBLE_DEVICE unsigned char* z() const {
    return base + C.a_stage_bytes() + C.b_stage_bytes() + C.s_stage_bytes();
  }
  /// Element offset of 8-element chunk `chunk` (0 .. tile_k / 8 - 1) of A row `row`.
  NIBBLE_DEVICE static int a_offset(int row, int chunk) {
    return (chunk / 8) * (C.tile_m() * 64) + row * 64 + ((chunk % 8) ^ (row % 8)) * 8;
  }
};

/// The decoding context a library kernel of configuration Tile uses for format F: the shared-memory
/// codebook table (Tile::kConfig.table_copies copies) for nf4 / fp4 when kSmemTable (kernel_smem_prefix
/// bytes at the start of dynamic shared memory), else the register one.
template <Format F, class T, bool kSmemTable, class Tile>
using KernelDequantContext =
    std::conditional_t<is_codebook(F) && kSmemTable, SmemCodebookContext<F, T, Tile::kConfig.table_copies>,
                       DequantContext<F, T>>;

/// Bytes at the start of a GEMM kernel's dynamic shared memory before its stage ring (the codebook table).
NIBBLE_HOST_DEVICE constexpr int kernel_smem_prefix(Format f, bool smem_table, const TileConfig& c) {
  return is_codebook(f) && smem_table ? c.table_bytes() : 0;
}

/// Builds the kernel's decoding context; with the shared-memory table also fills it at `prefix` (every
/// thread of the CTA calls this; the mainloop's first barrier comes before the first read).
template <Format F, class T, bool kSmemTable, class Tile>
NIBBLE_DEVICE KernelDequantContext<F, T, kSmemTable, Tile> make_kernel_dequant_context(unsigned char* prefix,
                                                                                       int tid) {
  constexpr TileConfig C = Tile::kConfig;
  if constexpr (is_codebook(F) && kSmemTable) {
    fill_smem_codebook<F, T, C.table_copies>(prefix, tid, C.threads());
    return SmemCodebookContext<F, T, C.table_copies>::make(prefix, tid % 32);
  } else {
    (void)prefix, (void)tid;
    return DequantContext<F, T>::make();
  }
}

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

/// Group rows of scales one k-tile of configuration C touches: tile_k / group when groups are shorter than
/// a k-tile, else 1 (tile_k and the power-of-two group sizes divide each other; per-channel has one).
template <class Tile, class T>
NIBBLE_DEVICE int groups_per_tile(const KernelParams<T>& p) {
  constexpr TileConfig C = Tile::kConfig;
  return (!p.per_channel && (C.tile_k() >> p.group_log2) > 1) ? (C.tile_k() >> p.group_log2) : 1;
}

/// Issues the cp.async copies of one k-tile into a stage as one commit group (zero-filled where the k-tile
/// is past the CTA's split or out of range). Everything that does not change from k-tile to k-tile (row pointers, bounds,
/// shared-memory offsets) is computed once per CTA here, so the mainloop's copy issue stays a few integer
/// instructions per 16-byte chunk.
template <class T, Format F, class Tile>
struct StageLoader {
  static constexpr TileConfig C = Tile::kConfig;
  static constexpr int BM = C.tile_m(), BN = C.tile_n(), BK = C.tile_k(), kThreads = C.threads();
  static constexpr int kChunksK = BK / 8;                      // 16-byte chunks per A row
  static constexpr int kAChunks = BM * kChunksK / kThreads;    // A chunks per thread per k-tile
  static constexpr int kARowStep = kThreads / kChunksK;        // rows between a thread's A chunks
  static constexpr int kWarps = C.warps();
  static constexpr int kBChunks = C.b_stage_bytes() / 16 / kThreads;  // weight chunks per thread
  static constexpr int kBAtomStep = kWarps / C.atoms_k;        // atom columns between a thread's chunks
  static_assert(kThreads % kChunksK == 0 && (BM * kChunksK) % kThreads == 0 && kARowStep % 8 == 0,
                "each thread copies whole A chunks at a fixed swizzle phase");
  static_assert(C.b_stage_bytes() % (16 * kThreads) == 0 && kWarps % C.atoms_k == 0,
                "each thread copies whole weight chunks of a fixed k-atom");

  const T* a_src;             // A at (m0 + row0, chunk * 8) (chunk j: + j * kARowStep rows)
  int a_rows_left;            // M - (m0 + row0): chunk j is in range while j * kARowStep < a_rows_left
  int a_k0;                   // chunk * 8
  int a_dst;                  // byte offset of chunk 0 in the stage
  const unsigned char* b_src; // the first atom's lane slice at k-tile 0 (chunk j: + j * kBAtomStep columns)
  int b_cols_left;            // atom columns from this thread's first to the weight's last
  int b_kb;                   // this thread's atom within the k-tile
  int gpt;                    // groups_per_tile
  int n0;                     // the tile's first weight row

  NIBBLE_DEVICE StageLoader(const KernelParams<T>& p, int m0, int n0, int tid) {
    const int row0 = tid / kChunksK, chunk = tid % kChunksK;
    a_src = p.a + std::int64_t(m0 + row0) * p.lda + chunk * 8;
    a_rows_left = p.m - (m0 + row0);
    a_k0 = chunk * 8;
    a_dst = Stage<T, Tile>::a_offset(row0, chunk) * int(sizeof(T));
    const int warp = tid / 32, lane = tid % 32;
    const int nb0 = warp / C.atoms_k;
    b_kb = warp % C.atoms_k;
    const std::int64_t k_atoms = p.shape.k_atoms();
    b_src = p.codes + ((std::int64_t(n0) / layout::kAtomN + nb0) * k_atoms + b_kb) * layout::kAtomBytes + lane * 16;
    b_cols_left = int(p.shape.n_pad / layout::kAtomN - (n0 / layout::kAtomN + nb0));
    gpt = groups_per_tile<Tile>(p);
    this->n0 = n0;
  }

  NIBBLE_DEVICE void load(const KernelParams<T>& p, const Stage<T, Tile>& st, int kt, int kt_end, int tid) const {
    const bool valid = kt < kt_end;
    // A: rows row0 + j * kARowStep; the swizzle phase (row % 8) is the same for all of them.
    const bool a_k_ok = valid && kt * BK + a_k0 < p.k;
    const T* a_kt = a_src + std::int64_t(kt) * BK;
    const std::int64_t a_row_step = std::int64_t(kARowStep) * p.lda;  // from the kernel parameters: no
    // register held across the mainloop for it
#pragma unroll
    for (int j = 0; j < kAChunks; ++j) {
      const bool pred = a_k_ok && j * kARowStep < a_rows_left;
      detail::cp_async_16(reinterpret_cast<unsigned char*>(st.a()) + a_dst + j * kARowStep * 64 * int(sizeof(T)),
                          pred ? a_kt + j * a_row_step : p.a, pred);
    }
    // Weights: chunk j of this thread is lane slice `lane` of atom (nb0 + j * kBAtomStep, kt * atoms_k + b_kb).
    // Weights are read exactly once and would deserve an L2 evict-first hint (cp.async ... L2::cache_hint),
    // but ptxas 13.0 miscompiles that form inside this loop on sm_90 (the cache-policy descriptor lands in
    // uniform registers nothing writes: illegal instruction; seen with a separate createpolicy and with
    // one inside the same asm). Plain cp.async until a fixed ptxas is the minimum we support.
    const bool b_k_ok = valid && std::int64_t(kt) * C.atoms_k + b_kb < p.shape.k_atoms();
    const unsigned char* b_kt = b_src + std::int64_t(kt) * C.atoms_k * layout::kAtomBytes;
    const std::int64_t b_atom_step = std::int64_t(kBAtomStep) * p.shape.k_atoms() * layout::kAtomBytes;
#pragma unroll
    for (int j = 0; j < kBChunks; ++j) {
      const bool pred = b_k_ok && j * kBAtomStep < b_cols_left;
      detail::cp_async_16(st.b() + (tid + j * kThreads) * 16, pred ? b_kt + j * b_atom_step : p.codes, pred);
    }
    // Scales (and zeros): gpt rows of BN values.
    const std::int64_t g_first = p.per_channel ? 0 : (std::int64_t(kt) * BK) >> p.group_log2;
    for (int c = tid; c < gpt * (BN / 8); c += kThreads) {
      const int gi = c / (BN / 8), ch = c % (BN / 8);
      const std::int64_t gg = g_first + gi, gn = n0 + ch * 8;
      const bool pred = valid && gg < p.shape.groups && gn < p.shape.n_pad;
      detail::cp_async_16(st.s() + gi * BN + ch * 8, pred ? p.scales + gg * p.shape.n_pad + gn : p.scales, pred);
    }
    if constexpr (F == Format::kU4) {
      for (int c = tid; c < gpt * (BN / 16); c += kThreads) {
        const int gi = c / (BN / 16), ch = c % (BN / 16);
        const std::int64_t gg = g_first + gi, gn = n0 + ch * 16;
        const bool pred = valid && gg < p.shape.groups && gn < p.shape.n_pad;
        detail::cp_async_16(st.z() + gi * BN + ch * 16, pred ? p.zeros + gg * p.shape.n_pad + gn : p.zeros, pred);
      }
    }
    detail::cp_async_commit();
  }
};

/// The scale (and zero) pair of the lane's weight rows `nl` and `nl + 8` (tile-local) for the k-step at
/// tile-local k `kl` of a stage.
template <class T, Format F, class Tile>
NIBBLE_DEVICE ColumnPairQuant<T> stage_quant(const KernelParams<T>& p, const Stage<T, Tile>& st, int nl, int kl) {
  constexpr TileConfig C = Tile::kConfig;
  const int gi = groups_per_tile<Tile>(p) > 1 ? (kl >> p.group_log2) : 0;
  const T* s = st.s() + gi * C.tile_n();
  ColumnPairQuant<T> q{s[nl], s[nl + 8]};
  if constexpr (F == Format::kU4) {
    const unsigned char* z = st.z() + gi * C.tile_n();
    q.zero_lo = z[nl];
    q.zero_hi = z[nl + 8];
  }
  return q;
}

/// Deterministic split-K: every split stores its registers (flat[0 .. kRegs), valid where row_ok(r)) in
/// the workspace; the CTA arriving last at the tile's counter sums all splits in the fixed order 0, 1, ...
/// into flat (the same result whichever CTA is last), resets the counter and returns true. The others
/// return false and must exit. Call with every thread of the CTA; `flag` is a __shared__ int.
template <int kRegs, int kThreads, class T, class RowOk>
NIBBLE_DEVICE bool split_k_reduce(const KernelParams<T>& p, int tile, int split, int tile_elems, float* flat,
                                  RowOk row_ok, int* flag) {
  const int tid = threadIdx.x;
  float* mine = p.partials + (std::int64_t(tile) * p.splits + split) * tile_elems;
#pragma unroll
  for (int r = 0; r < kRegs; ++r)
    if (row_ok(r)) __stcg(mine + r * kThreads + tid, flat[r]);
  __threadfence();
  __syncthreads();
  if (tid == 0) *flag = atomicAdd(&p.counters[tile], 1u) == unsigned(p.splits - 1);
  __syncthreads();
  if (!*flag) return false;
  __threadfence();
  // Sum in fixed split order 0, 1, ... (own partial re-read too), in place: no second register tile.
  for (int s = 0; s < p.splits; ++s) {
    const float* part = p.partials + (std::int64_t(tile) * p.splits + s) * tile_elems;
#pragma unroll
    for (int r = 0; r < kRegs; ++r) {
      if (!row_ok(r)) continue;
      const float v = __ldcg(part + r * kThreads + tid);
      flat[r] = s == 0 ? v : flat[r] + v;
    }
  }
  if (tid == 0) p.counters[tile] = 0u;  // leave the workspace as we found it
  return true;
}

/// Stores C[row, col] = v0 + bias[col] and C[row, col + 1] = v1 + bias[col + 1] (each where col < N),
/// converted to the output type; row < M is the caller's check.
template <class T>
NIBBLE_DEVICE void store_c_pair(const KernelParams<T>& p, int row, int col, float v0, float v1) {
  if (col >= p.n) return;
  const bool both = col + 1 < p.n;
  if (p.bias != nullptr) {
    v0 += to_float(p.bias[col]);
    if (both) v1 += to_float(p.bias[col + 1]);
  }
  const std::int64_t off = std::int64_t(row) * p.ldc + col;
  if (p.out_f32) {
    float* c = static_cast<float*>(p.c) + off;
    if (both && p.pair_stores) {
      *reinterpret_cast<float2*>(c) = make_float2(v0, v1);
    } else {
      c[0] = v0;
      if (both) c[1] = v1;
    }
  } else {
    T* c = static_cast<T*>(p.c) + off;
    if (both && p.pair_stores) {
      *reinterpret_cast<vec2_t<T>*>(c) = vec2_t<T>{from_float<T>(v0), from_float<T>(v1)};
    } else {
      c[0] = from_float<T>(v0);
      if (both) c[1] = from_float<T>(v1);
    }
  }
}

}  // namespace nibble::gemm
