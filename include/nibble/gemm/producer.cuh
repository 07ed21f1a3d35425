// nibble/gemm/producer.cuh — the producer side of the GEMM mainloops: the cp.async copies of one k-tile of
// activations (gA -> sA), weight atoms (gW -> sW), scales (gS -> sS), u4 zero points (gZ -> sZ) and affine u4
// offsets (gO -> sO) into a pipeline stage (shared_storage.cuh), and the read of a lane's scale pair back out
// of a stage.
#pragma once

#include "params.cuh"
#include "shared_storage.cuh"
#include "warp_mma.cuh"

namespace nibble::gemm::detail {

/// Group rows of scales one k-tile of configuration Tile touches: tile_k / group when groups are shorter
/// than a k-tile, else 1 (tile_k and the power-of-two group sizes divide each other; per-channel has one).
template <class Tile, class T>
NIBBLE_DEVICE int groups_per_tile(const KernelParams<T>& p) {
  constexpr TileConfig C = Tile::kConfig;
  return (!p.per_channel && (C.tile_k() >> p.group_log2) > 1) ? (C.tile_k() >> p.group_log2) : 1;
}

/// Issues the cp.async copies of one k-tile into a stage as one commit group (zero-filled where the k-tile
/// is past the CTA's split or out of range). Everything that does not change from k-tile to k-tile (row
/// pointers, bounds, shared-memory offsets) is computed once per CTA here, so the mainloop's copy issue stays
/// a few integer instructions per 16-byte chunk.
template <class T, Format F, class Tile>
struct StageLoader {
  static constexpr TileConfig C = Tile::kConfig;
  using Stage = StageStorage<T, Tile, has_offset(F)>;
  static constexpr int BM = C.tile_m(), BN = C.tile_n(), BK = C.tile_k(), kThreads = C.threads();
  static constexpr int kChunksK = BK / 8;                    // 16-byte chunks per A row
  static constexpr int kAChunks = BM * kChunksK / kThreads;  // A chunks per thread per k-tile
  static constexpr int kARowStep = kThreads / kChunksK;      // rows between a thread's A chunks
  static constexpr int kWarps = C.warps();
  static constexpr int kWChunks = C.b_stage_bytes() / 16 / kThreads;  // weight chunks per thread
  static constexpr int kWAtomStep = kWarps / C.atoms_k;               // atom columns between a thread's chunks
  static_assert(kThreads % kChunksK == 0 && (BM * kChunksK) % kThreads == 0 && kARowStep % 8 == 0,
                "each thread copies whole A chunks at a fixed swizzle phase");
  static_assert(C.b_stage_bytes() % (16 * kThreads) == 0 && kWarps % C.atoms_k == 0,
                "each thread copies whole weight chunks of a fixed k-atom");
  static_assert(kWChunks * kThreads * 16 == int(sizeof(Stage::w)), "the weight chunks fill sW");

  const T* gA;              // A at (m0 + row0, chunk * 8) (chunk j: + j * kARowStep rows)
  int a_rows_left;          // M - (m0 + row0): chunk j is in range while j * kARowStep < a_rows_left
  int a_k0;                 // chunk * 8
  int sA_offset;            // element offset of chunk 0 in sA
  const unsigned char* gW;  // the first atom's lane slice at k-tile 0 (chunk j: + j * kWAtomStep columns)
  int w_cols_left;          // atom columns from this thread's first to the weight's last
  int w_kb;                 // this thread's atom within the k-tile
  int gpt;                  // groups_per_tile
  int n0;                   // the tile's first weight row

  NIBBLE_DEVICE StageLoader(const KernelParams<T>& p, int m0, int n0, int tid) {
    const int row0 = tid / kChunksK, chunk = tid % kChunksK;
    gA = p.a + std::int64_t(m0 + row0) * p.lda + chunk * 8;
    a_rows_left = p.m - (m0 + row0);
    a_k0 = chunk * 8;
    sA_offset = Stage::a_offset(row0, chunk);
    const int warp = tid / 32, lane = tid % 32;
    const int nb0 = warp / C.atoms_k;
    w_kb = warp % C.atoms_k;
    gW = p.codes + layout::atom_offset(p.shape, std::int64_t(n0) / layout::kAtomN + nb0, w_kb) +
         layout::lane_slice_offset(lane);
    w_cols_left = int(p.shape.n_pad / layout::kAtomN - (n0 / layout::kAtomN + nb0));
    gpt = groups_per_tile<Tile>(p);
    this->n0 = n0;
  }

  /// The k-tile kt (all of it) as one commit group: sA, sW, sS, sZ, sO.
  NIBBLE_DEVICE void load(const KernelParams<T>& p, Stage& st, int kt, int kt_end, int tid) const {
    load_activations(p, st, kt, kt_end, tid);
    load_weights(p, st, kt, kt_end, tid);
    nibble::detail::cp_async_commit();
  }

  /// sA of k-tile kt (no commit).
  NIBBLE_DEVICE void load_activations(const KernelParams<T>& p, Stage& st, int kt, int kt_end, int tid) const {
    const bool valid = kt < kt_end;
    // sA: rows row0 + j * kARowStep; the swizzle phase (row % 8) is the same for all of them.
    const bool a_k_ok = valid && kt * BK + a_k0 < p.k;
    const T* gA_kt = gA + std::int64_t(kt) * BK;
    const std::int64_t a_row_step = std::int64_t(kARowStep) * p.lda;  // from the kernel parameters: no
                                                                      // register held across the mainloop for it
#pragma unroll
    for (int j = 0; j < kAChunks; ++j) {
      const bool pred = a_k_ok && j * kARowStep < a_rows_left;
      nibble::detail::cp_async_16(st.a + sA_offset + j * kARowStep * 64, pred ? gA_kt + j * a_row_step : p.a, pred);
    }
  }

  /// sW, sS, sZ and sO of k-tile kt (no commit): what never depends on the previous kernel in the stream.
  NIBBLE_DEVICE void load_weights(const KernelParams<T>& p, Stage& st, int kt, int kt_end, int tid) const {
    const bool valid = kt < kt_end;
    // sW: chunk j of this thread is lane slice `lane` of atom (nb0 + j * kWAtomStep, kt * atoms_k + w_kb);
    // the chunks of a CTA fill sW in order, so chunk (tid + j * kThreads) lands at that index.
    // Weights are read exactly once and would deserve an L2 evict-first hint (cp.async ... L2::cache_hint),
    // but ptxas 13.0 miscompiles that form inside this loop on sm_90 (the cache-policy descriptor lands in
    // uniform registers nothing writes: illegal instruction; seen with a separate createpolicy and with
    // one inside the same asm). Plain cp.async until a fixed ptxas is the minimum we support.
    const bool w_k_ok = valid && std::int64_t(kt) * C.atoms_k + w_kb < p.shape.k_atoms();
    const unsigned char* gW_kt = gW + layout::atom_offset(p.shape, 0, std::int64_t(kt) * C.atoms_k);
    const std::int64_t w_atom_step = layout::atom_offset(p.shape, kWAtomStep, 0);
    std::uint8_t* sW = &st.w[0][0][0];
#pragma unroll
    for (int j = 0; j < kWChunks; ++j) {
      const bool pred = w_k_ok && j * kWAtomStep < w_cols_left;
      nibble::detail::cp_async_16(sW + (tid + j * kThreads) * 16, pred ? gW_kt + j * w_atom_step : p.codes, pred);
    }
    // sS (and sZ, sO): gpt rows of BN values. (Compact double-quantized scales are decoded into sS by
    // DqScaleLoader instead.)
    const std::int64_t g_first = p.per_channel ? 0 : (std::int64_t(kt) * BK) >> p.group_log2;
    const int scale_chunks = !is_codebook(F) || p.dq_codes == nullptr ? gpt * (BN / 8) : 0;
    for (int c = tid; c < scale_chunks; c += kThreads) {
      const int gi = c / (BN / 8), ch = c % (BN / 8);
      const std::int64_t gg = g_first + gi, gn = n0 + ch * 8;
      const bool pred = valid && gg < p.shape.groups && gn < p.shape.n_pad;
      nibble::detail::cp_async_16(&st.s[gi][ch * 8],
                                  pred ? p.scales + layout::scale_row_offset(p.shape, gg) + gn : p.scales, pred);
      if constexpr (has_offset(F))  // the offsets' rows have the scales' shape: the same chunk of sO
        nibble::detail::cp_async_16(&st.o[gi][ch * 8],
                                    pred ? p.offsets + layout::scale_row_offset(p.shape, gg) + gn : p.offsets, pred);
    }
    if constexpr (F == Format::kU4) {
      for (int c = tid; c < gpt * (BN / 16); c += kThreads) {
        const int gi = c / (BN / 16), ch = c % (BN / 16);
        const std::int64_t gg = g_first + gi, gn = n0 + ch * 16;
        const bool pred = valid && gg < p.shape.groups && gn < p.shape.n_pad;
        nibble::detail::cp_async_16(&st.z[gi][ch * 16],
                                    pred ? p.zeros + layout::scale_row_offset(p.shape, gg) + gn : p.zeros, pred);
      }
    }
  }

  /// L2 prefetch of this thread's weight chunks of k-tile kt (no shared memory, no registers held).
  NIBBLE_DEVICE void prefetch_weights(const KernelParams<T>& p, int kt) const {
    const bool w_k_ok = std::int64_t(kt) * C.atoms_k + w_kb < p.shape.k_atoms();
    const unsigned char* gW_kt = gW + layout::atom_offset(p.shape, 0, std::int64_t(kt) * C.atoms_k);
    const std::int64_t w_atom_step = layout::atom_offset(p.shape, kWAtomStep, 0);
#pragma unroll
    for (int j = 0; j < kWChunks; ++j)
      if (w_k_ok && j * kWAtomStep < w_cols_left) nibble::detail::prefetch_l2(gW_kt + j * w_atom_step);
  }

  /// The pipeline's prologue: k-tiles kt_begin .. kt_begin + kCount - 1 into stages 0 .. kCount - 1, one
  /// commit group each. With a dependent launch (sm_90+) the weights of those k-tiles are first prefetched
  /// into L2, then the kernel waits for the previous one in the stream (griddepcontrol.wait), then the
  /// stages load as usual: the weight fetch overlaps the previous kernel's tail, and nothing this kernel
  /// reads that another kernel may write (A) is read before the wait.
  template <int kCount>
  NIBBLE_DEVICE void prologue(const KernelParams<T>& p, Stage* stages, int kt_begin, int kt_end, int tid) const {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
    if (p.dependent_launch) {
      for (int s = 0; s < kCount; ++s)
        if (kt_begin + s < kt_end) prefetch_weights(p, kt_begin + s);
      nibble::detail::griddepcontrol_wait();
    }
#endif
#pragma unroll
    for (int s = 0; s < kCount; ++s) load(p, stages[s], kt_begin + s, kt_end, tid);
  }
};

/// Compact double-quantized scales (nf4 / fp4 weights from repack_dq, p.dq_codes set; layout/gemm_layout.cuh):
/// the threads decode a k-tile's scales into the stage's sS themselves, and the mainloop reads sS as usual.
/// Thread tid owns 4 consecutive weight rows of one scale row of the k-tile (chunk tid of gpt * BN / 4). To keep
/// the loads' latency off the mainloop, fetch() loads the 8-bit codes and the four absmax2 of a k-tile into
/// registers one k-tile before store() decodes them, T(map[code] * absmax2 + offset) (fp32 multiply, fp32 add,
/// one rounding: what repack() writes), and stores them into sS: the mainloop calls store() for the stage it
/// has just asked the copies of and fetch() for the k-tile after it, after its compute of the current stage.
/// The map (dq_stats[0 .. 255]) lives in shared memory, in the stages' sZ rows, which only u4 uses: the
/// constructor puts it there (kMapPieces pieces of z_stage_bytes, piece j in stage j), so that store() waits for
/// no global load (the decode still costs 4-11% at M = 16 / 64 against 16-bit scales:
/// NOTES.md, session 10). For every other
/// format (and without p.dq_codes) the members do nothing.
template <class T, Format F, class Tile>
struct DqScaleLoader {
  static constexpr TileConfig C = Tile::kConfig;
  using Stage = StageStorage<T, Tile, has_offset(F)>;
  static constexpr int BN = C.tile_n(), BK = C.tile_k(), kThreads = C.threads();
  static_assert(C.max_groups_per_tile() * BN / 4 <= kThreads, "one chunk of 4 scales per thread at most");
  static constexpr int kZBytes = C.z_stage_bytes();  // one stage's sZ rows
  static constexpr int kMapPieces = (TileConfig::kDqMapBytes + kZBytes - 1) / kZBytes;
  static_assert(kZBytes % 16 == 0 && (kZBytes & (kZBytes - 1)) == 0 && kMapPieces <= C.stages,
                "the dq map fits the stages' sZ rows");
  /// What fetch() loads for store().
  struct Fetched {
    std::uint32_t codes = 0;  // four 8-bit codes, row nl + r in byte r
    float absmax[4] = {};
    unsigned valid = 0;  // bit r: row nl + r is a weight row and the group a group of the weight
  };
  bool active = false;  // the thread owns a chunk (p.dq_codes set, chunk < gpt * BN / 4)
  int gi = 0, nl = 0;   // its scale row within the k-tile and its first tile-local weight row
  int n0 = 0;
  float offset = 0.0f;
  Stage* stages = nullptr;  // the ring (the map in its sZ rows)

  /// Also puts the map into the stages' sZ rows (visible after the mainloop's first barrier).
  NIBBLE_DEVICE DqScaleLoader(const KernelParams<T>& p, int n0, int tid, Stage* stages) : stages(stages) {
    if constexpr (is_codebook(F)) {
      if (p.dq_codes != nullptr && tid < TileConfig::kDqMapBytes / 16) {
        const int b = 16 * tid;
        *reinterpret_cast<uint4*>(&stages[b / kZBytes].z[0][0] + b % kZBytes) =
            __ldg(reinterpret_cast<const uint4*>(p.dq_stats) + tid);
      }
      const int gpt = groups_per_tile<Tile>(p);
      active = p.dq_codes != nullptr && tid < gpt * (BN / 4);
      gi = tid / (BN / 4);
      nl = 4 * (tid % (BN / 4));
      this->n0 = n0;
      if (active) offset = __ldg(p.dq_stats + layout::kDqOffsetIndex);
    } else {
      (void)p, (void)n0, (void)tid;
    }
  }

  /// The codes and absmax2 of k-tile kt's chunk (nothing past kt_end).
  NIBBLE_DEVICE Fetched fetch(const KernelParams<T>& p, int kt, int kt_end) const {
    Fetched f;
    if constexpr (is_codebook(F)) {
      const std::int64_t gg = (p.per_channel ? 0 : (std::int64_t(kt) * BK) >> p.group_log2) + gi;
      const int n = n0 + nl;
      if (!active || kt >= kt_end || gg >= p.dq_groups || n >= p.shape.n_pad) return f;
      f.codes = __ldg(reinterpret_cast<const unsigned*>(p.dq_codes + layout::scale_row_offset(p.shape, gg) + n));
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        if (n + r < p.n) {
          f.valid |= 1u << r;
          f.absmax[r] = __ldg(p.dq_stats + layout::kDqStatsHeader + layout::dq_block(n + r, gg, p.dq_groups));
        }
      }
    } else {
      (void)p, (void)kt, (void)kt_end;
    }
    return f;
  }

  /// Map entry e from shared memory (byte 4 e: piece 4 e / kZBytes, in that stage's sZ rows).
  NIBBLE_DEVICE float map_entry(std::uint32_t e) const {
    const std::uint32_t b = 4 * e;
    return *reinterpret_cast<const float*>(reinterpret_cast<const unsigned char*>(&stages[b / kZBytes].z[0][0]) +
                                           b % kZBytes);
  }

  /// Decodes `f` into the stage's sS (0 where f is not valid), the map from shared memory (kSmemMap) or, in
  /// the prologue (before the barrier that publishes the shared copy), from global memory.
  template <bool kSmemMap = true>
  NIBBLE_DEVICE void store(const KernelParams<T>& p, Stage& st, const Fetched& f) const {
    if constexpr (is_codebook(F)) {
      if (!active) return;
      float v[4];
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        v[r] = 0.0f;
        if ((f.valid >> r) & 1u) {
          const std::uint32_t code = (f.codes >> (8 * r)) & 0xFFu;
          const float m = kSmemMap ? map_entry(code) : __ldg(p.dq_stats + code);
          v[r] = __fadd_rn(__fmul_rn(m, f.absmax[r]), offset);
        }
      }
      *reinterpret_cast<uint2*>(&st.s[gi][nl]) = make_uint2(pack_rn<T>(v[0], v[1]), pack_rn<T>(v[2], v[3]));
    } else {
      (void)p, (void)st, (void)f;
    }
  }

  /// The pipeline's prologue (after StageLoader::prologue<kCount>): stages 0 .. kCount - 1 decoded (all
  /// fetches first, then all stores: one load latency; the map from global memory: its shared copy is not
  /// published yet), and k-tile kt_begin + kCount fetched for the mainloop.
  template <int kCount>
  NIBBLE_DEVICE Fetched prologue(const KernelParams<T>& p, int kt_begin, int kt_end) const {
    if constexpr (is_codebook(F)) {
      if (active) {
        Fetched f[kCount];
#pragma unroll
        for (int s = 0; s < kCount; ++s) f[s] = fetch(p, kt_begin + s, kt_end);
#pragma unroll
        for (int s = 0; s < kCount; ++s) store<false>(p, stages[s], f[s]);
      }
    }
    return fetch(p, kt_begin + kCount, kt_end);
  }
};

/// The scale (and zero) pair of the lane's weight rows `nl` and `nl + 8` (tile-local) for the k-step at
/// tile-local k `kl` of a stage.
template <class T, Format F, class Tile>
NIBBLE_DEVICE ColumnPairQuant<T> stage_quant(const KernelParams<T>& p, const StageStorage<T, Tile, has_offset(F)>& st,
                                             int nl, int kl) {
  const int gi = groups_per_tile<Tile>(p) > 1 ? (kl >> p.group_log2) : 0;
  ColumnPairQuant<T> q{st.s[gi][nl], st.s[gi][nl + 8]};
  if constexpr (F == Format::kU4) {
    q.zero_lo = st.z[gi][nl];
    q.zero_hi = st.z[gi][nl + 8];
  }
  if constexpr (has_offset(F)) {
    q.offset_lo = st.o[gi][nl];
    q.offset_hi = st.o[gi][nl + 8];
  }
  return q;
}

/// The transposed kernels' wgmma / mma A fragment of k-step `ks` for the lane's weight rows `nl`, `nl + 8`: its word
/// of the atom slice dequantized with the stage's scale pair. The word gives B fragments {(g, 2t), (g, 2t + 8),
/// (g + 8, 2t), (g + 8, 2t + 8)}; as an A fragment the order is rows g, g + 8 first.
template <class T, Format F, class Tile, class Ctx>
NIBBLE_DEVICE void dequant_a_fragment(const KernelParams<T>& p, const StageStorage<T, Tile, has_offset(F)>& st, int nl,
                                      int ks, const uint4& slice, const Ctx& ctx, std::uint32_t (&a)[4]) {
  const ColumnPairQuant<T> q = stage_quant<T, F>(p, st, nl, ks * 16);
  std::uint32_t b[4];
  dequant_fragments<T, F>(atom_word(slice, ks), q, ctx, b);
  a[0] = b[0];
  a[1] = b[2];
  a[2] = b[1];
  a[3] = b[3];
}

}  // namespace nibble::gemm::detail
