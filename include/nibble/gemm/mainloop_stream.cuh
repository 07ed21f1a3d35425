// nibble/gemm/mainloop_stream.cuh — the warp-streamed decode kernel family (sm_80+, M <= 32): C^T = W A^T with
// the dequantized weight as the A operand of mma.m16n8k16 and 1, 2 or 4 tiles of 8 tokens as B, so a token
// tile is 8 rows, not 16.
//
// Grid (scheduler.cuh: make_stream_plan): one CTA per SM, each a range of weight columns (16-row atoms) x a
// K slice. The CTA copies its slice of A (tokens < M, 128-byte swizzled rows) into shared memory once, then
// its work, (columns) x (atoms of the slice) in column-major order, is cut into one contiguous run of atoms
// per warp (at atom granularity, so every warp of every CTA has the same number of atoms to within one).
// A warp streams its run straight from global memory into registers, `stages` atoms (4 KiB per warp at 8)
// in flight: no shared-memory weight stage, no barrier in the mainloop, one 16-byte load per lane per atom.
// Per k-step it decodes its word into an A fragment (the word's eight values are exactly an A fragment's
// positions, in another register order), multiplies it into fresh fp32 partial sums per half atom (a group
// never spans a half atom) and applies the scales to those in fp32: one FFMA per accumulator per half atom
// instead of one multiply per weight, and the product is not rounded to T.
//
// Column segments: a run covers at most a partial column at each end and whole columns between. Whole
// columns go straight to the output (or the split workspace); partial ones go to two shared-memory slots
// per warp, and after one barrier the warp that holds a column's last atom sums its column's slots in warp
// order. With several K slices, every CTA writes fp32 partials and the last one to arrive at the range's
// counter sums the slices in slice order (scheduler.cuh's split-K scheme): deterministic, no float atomics.
#pragma once

#include "../detail/wgmma.cuh"  // fence_proxy_async_shared
#include "epilogue.cuh"
#include "scheduler.cuh"
#include "shared_storage.cuh"

namespace nibble::gemm::detail {

NIBBLE_ARCH_NAMESPACE_BEGIN

/// One weight atom as a lane of the streaming warp holds it: its 16-byte slice, the scales of its rows g
/// and g + 8 for the atom's two halves (s0, s1: raw T bits, row g in the low half; equal unless groups are
/// 32 long), for u4 the zero points (bytes: half 0 row g, row g + 8, half 1 row g, row g + 8) and for affine
/// u4 the offsets (o0, o1: like s0, s1).
struct StreamAtom {
  uint4 w;
  std::uint32_t s0, s1, z, o0, o1;
};

template <class T>
NIBBLE_DEVICE float scale_bits_to_float(std::uint32_t bits) {
  if constexpr (std::is_same_v<T, __half>)
    return __half2float(__ushort_as_half(static_cast<unsigned short>(bits)));
  else
    return __uint_as_float(bits << 16);
}
/// The T whose bits are the low 16 bits of `bits`.
template <class T>
NIBBLE_DEVICE T bits_to_value(std::uint32_t bits) {
  if constexpr (std::is_same_v<T, __half>)
    return __ushort_as_half(static_cast<unsigned short>(bits));
  else
    return __ushort_as_bfloat16(static_cast<unsigned short>(bits));
}

/// kG32: groups of 32 (two scale rows per atom); every other group size (and per-channel) has one. kDq: compact
/// double-quantized scales (nf4 / fp4 with p.dq_codes).
template <class T, Format F, class Tile, bool kSmemTable, bool kG32, bool kDq = false>
__global__ void __launch_bounds__(Tile::kConfig.threads(), 1) gemm_stream_kernel(const KernelParams<T> p) {
  constexpr TileConfig C = Tile::kConfig;
  static_assert(C.stream, "stream configurations only");
  constexpr int TT = C.warp_m16;  // token tiles of 8
  constexpr int W = C.warps(), kThreads = C.threads();
  constexpr int kTok = C.tile_m();                       // token rows of the slice
  constexpr int kFrag = TT * 4 * 32;                     // floats of one warp's accumulators (fragment order)
  constexpr int kChunk = C.atoms_k, kStages = C.stages;  // the copy ring: kStages stages of kChunk atoms
  constexpr int kStageBytes = C.stream_stage_bytes(F);
  constexpr int kPer = kG32 ? 2 : 1;                      // scale rows per atom
  constexpr int kScaleOff = kChunk * layout::kAtomBytes;  // stage: scales after the atoms
  constexpr int kZeroOff = kScaleOff + kChunk * 2 * 32;   // then u4 zeros, or affine u4 offsets (like scales)
  constexpr bool kU4 = F == Format::kU4, kAffine = has_offset(F);
  static_assert(!kDq || is_codebook(F), "compact double-quantized scales: nf4 / fp4");
  static_assert(kZeroOff + kChunk * 2 * (kAffine ? 32 : 16) <= kStageBytes, "stage layout");
  // Atoms of a fast-path chunk unrolled together: all of them where the registers allow (ptxas spills the
  // nf4 / fp4 table kernels and the 16-token s4 one otherwise).
  // (The 16-token dq kernel for groups of 32 spills even so: it decodes one atom at a time.)
  constexpr int kFastUnroll = (kDq && kG32 && TT > 1) ? 1 : (is_codebook(F) || TT > 1) ? 2 : kChunk;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __shared__ int s_is_last;
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  __shared__ __align__(8) std::uint64_t bars[W][kStages];
#endif
  constexpr int kPrefix = kernel_smem_prefix(F, kSmemTable, C);  // the codebook table, if any
  float* red = reinterpret_cast<float*>(smem_raw + kPrefix);     // [W][2][kFrag]
  T* act = reinterpret_cast<T*>(smem_raw + kPrefix + C.stream_fixed_bytes(F));

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, g = lane / 4, t = lane % 4;
  unsigned char* ring = smem_raw + kPrefix + C.stream_red_bytes() + warp * kStages * kStageBytes;
  const int range = int(blockIdx.x) / p.splits, split = int(blockIdx.x) % p.splits;
  const int nc = int(p.shape.n_pad / layout::kAtomN), ka = p.k_tiles;
  const int c0 = int(std::int64_t(range) * nc / p.tiles_n), c1 = int(std::int64_t(range + 1) * nc / p.tiles_n);
  const int a0 = int(std::int64_t(split) * ka / p.splits), a1 = int(std::int64_t(split + 1) * ka / p.splits);
  const int kas = a1 - a0;            // atoms of the K slice
  const int units = (c1 - c0) * kas;  // atoms of the CTA (< 2^30: make_stream_plan)
  const int u0 = int(std::int64_t(warp) * units / W), u1 = int(std::int64_t(warp + 1) * units / W);
  const int chunks = (u1 - u0 + kChunk - 1) / kChunk;
  const std::int64_t n_pad = p.shape.n_pad;

  // ---- the weight stream: the warp's run, kChunk atoms per stage of its own ring. The atoms: sm_90 one bulk
  // copy per column run (lane 0), completing on the stage's mbarrier; sm_80 one cp.async per lane and atom.
  // Their scales (and u4 zeros): 16-byte cp.async slots spread over the lanes, one instruction per chunk
  // (per-atom 32-byte bulk copies were the TMA unit's bottleneck: NOTES.md, session 6); on sm_90 every
  // lane then arrives on the mbarrier when its copies land (cp.async.mbarrier.arrive.noinc). ----
  // The warp's first atom (column, atom of K); both cursors below start there.
  const int first_col = c0 + (units > 0 ? u0 / kas : 0), first_kb = a0 + (units > 0 ? u0 % kas : 0);
  // Moves a cursor whose atom index kb ran past the slice into the following columns.
  auto wrap = [&](int& kb, int& col) {
    while (kb >= a1) kb -= kas, ++col;  // (at most kChunk / kas times)
  };
  // The copy cursor (every lane): the next chunk's first atom.
  int l_col = first_col, l_kb = first_kb;
  auto scale_offset = [&](int col, int kb) {
    const std::int64_t gi = p.per_channel ? 0 : (std::int64_t(kb) * layout::kAtomK) >> p.group_log2;
    return gi * n_pad + std::int64_t(col) * layout::kAtomN;
  };
  // Slots of a chunk: scales first (atom i, scale row h, 16-byte half), then u4 zeros (atom i, row h) or
  // affine u4 offsets (laid out like the scales).
  constexpr int kScaleSlots = kChunk * kPer * 2;
  constexpr int kSlots = kScaleSlots + (kU4 ? kChunk * kPer : 0) + (kAffine ? kScaleSlots : 0);
  // Copies one slot (scale half, zero row or offset half) of atom i of the chunk whose first atom is (col, kb);
  // kb + i may run past the slice (the chunk then continues in the next column).
  // (Compact double-quantized scales, kDq: no slots; the lanes load the 8-bit codes themselves, dq_fetch below.)
  auto copy_slot = [&](unsigned char* st, int s, int i, int col, int kb, bool may_wrap) {
    const bool second = s >= kScaleSlots;  // a zero or an offset slot
    const int s2 = second ? s - kScaleSlots : s;
    const int h = second && kU4 ? s2 % kPer : (s2 / 2) % kPer;
    kb += i;
    if (may_wrap) wrap(kb, col);
    const std::int64_t so = scale_offset(col, kb) + h * n_pad;
    if (!second)
      nibble::detail::cp_async_16(st + kScaleOff + (i * kPer + h) * 32 + (s % 2) * 16, p.scales + so + (s % 2) * 8,
                                  true);
    else if constexpr (kU4)
      nibble::detail::cp_async_16(st + kZeroOff + (i * kPer + h) * 16, p.zeros + so, true);
    else
      nibble::detail::cp_async_16(st + kZeroOff + (i * kPer + h) * 32 + (s2 % 2) * 16, p.offsets + so + (s2 % 2) * 8,
                                  true);
  };
  auto slot_atom = [&](int s) {
    return s < kScaleSlots ? s / (2 * kPer) : (kU4 ? (s - kScaleSlots) / kPer : (s - kScaleSlots) / (2 * kPer));
  };
  // Copies chunk c into its stage (the cursor is at the chunk's first atom; chunks are copied in order):
  // its scale / zero slots and (sm_90) their mbarrier arrivals, and its atoms; advance() then moves the
  // cursor on. A full chunk inside one column (the common case) is one bulk copy and one slot per lane.
  auto copy_chunk = [&](int c, bool slots, bool atoms) {
    const int n = min(kChunk, u1 - (u0 + c * kChunk));
    const bool simple = n == kChunk && l_kb + kChunk <= a1;
    unsigned char* st = ring + (c % kStages) * kStageBytes;
    if (slots && !kDq) {
#pragma unroll
      for (int r = 0; r < (kSlots + 31) / 32; ++r) {
        const int s = lane + 32 * r;
        if (s < kSlots) {
          if (simple)
            copy_slot(st, s, slot_atom(s), l_col, l_kb, false);
          else if (slot_atom(s) < n)
            copy_slot(st, s, slot_atom(s), l_col, l_kb, true);
        }
      }
    }
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
    const std::uint32_t bar = nibble::detail::smem_addr(&bars[warp][c % kStages]);
    if (slots) nibble::detail::cp_async_mbarrier_arrive_noinc(bar);
    if (atoms && lane == 0) {
      const std::uint32_t sst = nibble::detail::smem_addr(st);
      nibble::detail::mbarrier_arrive_expect_tx(bar, std::uint32_t(n * layout::kAtomBytes));
      if (simple) {
        nibble::detail::cp_async_bulk_g2s(sst, p.codes + layout::atom_offset(p.shape, l_col, l_kb),
                                          std::uint32_t(kChunk * layout::kAtomBytes), bar);
      } else {
        int kb = l_kb, col = l_col;
        for (int i = 0; i < n;) {
          const int run = min(n - i, a1 - kb);  // atoms left in this column: one contiguous copy
          nibble::detail::cp_async_bulk_g2s(sst + i * layout::kAtomBytes,
                                            p.codes + layout::atom_offset(p.shape, col, kb),
                                            std::uint32_t(run * layout::kAtomBytes), bar);
          i += run, kb = a0, ++col;
        }
      }
    }
#else
    if (!atoms) {
    } else if (simple) {
      const unsigned char* src = p.codes + layout::atom_offset(p.shape, l_col, l_kb) + lane * 16;
#pragma unroll
      for (int i = 0; i < kChunk; ++i)
        nibble::detail::cp_async_16(st + i * layout::kAtomBytes + lane * 16, src + i * layout::kAtomBytes, true);
    } else {
      int kb = l_kb, col = l_col;
      for (int i = 0; i < n; ++i) {
        nibble::detail::cp_async_16(st + i * layout::kAtomBytes + lane * 16,
                                    p.codes + layout::atom_offset(p.shape, col, kb) + lane * 16, true);
        if (++kb == a1) kb = a0, ++col;
      }
    }
    if (atoms) nibble::detail::cp_async_commit();
#endif
  };
  auto advance = [&](int c) {
    l_kb += min(kChunk, u1 - (u0 + c * kChunk));
    wrap(l_kb, l_col);
  };

  // ---- compact double-quantized scales (kDq: nf4 / fp4 from repack_dq). Lane l decodes kDqRows consecutive
  // weight rows r0 .. r0 + kDqRows - 1 of scale row h of atom i of a chunk, (i, h) = pair l / kDqLanes: its
  // 8-bit codes are kDqRows contiguous bytes of p.dq_codes, one load. dq_fetch(c) loads chunk c's codes and
  // absmax2 into registers a chunk ahead; dq_store writes T(map[code] * absmax2 + offset) (repack()'s scales,
  // bit for bit) into the stage's scale slots after the previous chunk's atoms have been multiplied, with the
  // map from shared memory: every load's latency hides behind a chunk of work. (The first version loaded the
  // codes through the copy ring and the map and absmax2 from L1 after the chunk had landed: +18-25% at M = 1;
  // moving the code loads a chunk ahead alone changed nothing: NOTES.md, session 10.) ----
  constexpr int kDqPairs = kChunk * kPer;                       // (atom, scale row) pairs of a chunk
  constexpr int kDqLanes = kDqPairs <= 32 ? 32 / kDqPairs : 1;  // lanes per pair (1: no dq kernel this wide)
  constexpr int kDqRows = 16 / kDqLanes;                        // weight rows per lane
  static_assert(!kDq || (32 % kDqPairs == 0 && kDqLanes <= 16 && kDqRows <= 16),
                "dq: a chunk's scale rows spread over the lanes");
  static_assert(layout::kDqBlock == 256, "dq_block is a shift by 8");
  struct DqFetched {
    std::uint32_t codes[(kDqRows + 3) / 4];  // row r0 + j in byte j % 4 of word j / 4
    float absmax[kDqRows];                   // row r0 + j's absmax2
    float offset;                            // the offset (0 for a group past the weight's)
  };
  // The map (dq_stats[0 .. 255]) in shared memory after the table (load_act copies it, with A).
  float* const dq_map = reinterpret_cast<float*>(smem_raw + (kSmemTable ? C.table_bytes() : 0));
  const int dq_i = (lane / kDqLanes) / kPer, dq_h = (lane / kDqLanes) % kPer, dq_r0 = (lane % kDqLanes) * kDqRows;
  int d_col = first_col, d_kb = first_kb;  // the dq cursor: the first atom of the next chunk dq_fetch loads
  const float dq_off = kDq ? __ldg(p.dq_stats + layout::kDqOffsetIndex) : 0.0f;
  // (32-bit indices: check_arguments keeps a dq weight below 2^31 scales)
  const int dq_npad = int(n_pad), dq_groups = int(p.dq_groups);
  const float* const dq_absmax = p.dq_stats + layout::kDqStatsHeader;
  auto dq_fetch = [&](int c) {
    DqFetched f{};
    if constexpr (kDq) {
      if (c >= chunks) return f;
      const int left = u1 - (u0 + c * kChunk);
      int kb = d_kb + dq_i, col = d_col;
      wrap(kb, col);
      if (dq_i < left) {
        const int grp = (p.per_channel ? 0 : (kb * layout::kAtomK) >> p.group_log2) + dq_h;
        const int n = col * layout::kAtomN + dq_r0;
        const unsigned char* src = p.dq_codes + unsigned(grp * dq_npad + n);  // scale_offset(col, kb) + h n_pad + r0
        if constexpr (kDqRows == 1) {
          f.codes[0] = __ldg(src);
        } else if constexpr (kDqRows == 2) {
          f.codes[0] = __ldg(reinterpret_cast<const unsigned short*>(src));
        } else if constexpr (kDqRows == 4) {
          f.codes[0] = __ldg(reinterpret_cast<const unsigned*>(src));
        } else if constexpr (kDqRows == 8) {
          const uint2 w = __ldg(reinterpret_cast<const uint2*>(src));
          f.codes[0] = w.x, f.codes[1] = w.y;
        } else {
          static_assert(kDqRows == 16, "dq rows per lane");
          const uint4 w = __ldg(reinterpret_cast<const uint4*>(src));
          f.codes[0] = w.x, f.codes[1] = w.y, f.codes[2] = w.z, f.codes[3] = w.w;
        }
        // Rows past N keep absmax2 0 (their C is never stored); a group past the weight's decodes to 0.
        if (grp < dq_groups) {
          f.offset = dq_off;
          const int at = n * dq_groups + grp;  // plain index of (row r0, the group): dq_block = at / 256
#pragma unroll
          for (int j = 0; j < kDqRows; ++j)
            if (j < p.n - n) f.absmax[j] = __ldg(dq_absmax + unsigned(at + j * dq_groups) / 256u);
        }
      }
      d_kb += min(kChunk, left);
      wrap(d_kb, d_col);
    } else {
      (void)c;
    }
    return f;
  };
  auto dq_store = [&](unsigned char* st, const DqFetched& f) {
    if constexpr (kDq) {
      float v[kDqRows];
#pragma unroll
      for (int j = 0; j < kDqRows; ++j)
        v[j] = __fadd_rn(__fmul_rn(dq_map[(f.codes[j / 4] >> (8 * (j % 4))) & 0xFFu], f.absmax[j]), f.offset);
      unsigned char* dst = st + kScaleOff + (dq_i * kPer + dq_h) * 32 + dq_r0 * 2;
      if constexpr (kDqRows == 1) {
        *reinterpret_cast<T*>(dst) = from_float<T>(v[0]);
      } else {
        std::uint32_t w[kDqRows / 2];  // (one rounding per value, two per conversion instruction)
#pragma unroll
        for (int j = 0; j < kDqRows / 2; ++j) w[j] = nibble::pack_rn<T>(v[2 * j], v[2 * j + 1]);
        if constexpr (kDqRows == 2) {
          *reinterpret_cast<std::uint32_t*>(dst) = w[0];
        } else if constexpr (kDqRows == 4) {
          *reinterpret_cast<uint2*>(dst) = make_uint2(w[0], w[1]);
        } else {
#pragma unroll
          for (int j = 0; j < kDqRows / 8; ++j)  // (8 values of T per 16-byte store)
            reinterpret_cast<uint4*>(dst)[j] = make_uint4(w[4 * j], w[4 * j + 1], w[4 * j + 2], w[4 * j + 3]);
        }
      }
    } else {
      (void)st, (void)f;
    }
  };
  // ---- A's K slice -> shared memory: rows < M only (a 1-token-tile kernel stores just those and points
  // the ldmatrix rows >= M at row M - 1: they feed C columns of tokens >= M, never stored), 16-byte chunk
  // c of row r at chunk (c & ~7) | ((c ^ r) & 7): conflict-free ldmatrix ----
  const int pitch = kas * layout::kAtomK;  // elements per token row
  const int act_rows = p.m < kTok ? p.m : kTok;
  auto load_act = [&] {
    if constexpr (kDq) {  // the dq map rides with A
      if (tid < TileConfig::kDqMapBytes / 16) nibble::detail::cp_async_16(dq_map + 4 * tid, p.dq_stats + 4 * tid, true);
    }
    const int chunks16 = kas * (layout::kAtomK / 8);
    const int k_base = a0 * layout::kAtomK;
    for (int idx = tid; idx < act_rows * chunks16; idx += kThreads) {
      const int row = idx / chunks16, ch = idx % chunks16, k = k_base + ch * 8;
      const bool ok = k < p.k;
      const int phys = (ch & ~7) | ((ch ^ row) & 7);
      nibble::detail::cp_async_16(act + row * pitch + phys * 8, ok ? p.a + std::int64_t(row) * p.lda + k : p.a, ok);
    }
    nibble::detail::cp_async_commit();
  };
  // Without a dependent launch A is requested before the first stages' weights, so that its few bytes do not
  // queue behind them (the wait for A below was 3-5 us of a 6-45 us kernel when A came last: NOTES.md,
  // session 7). On sm_90 the stages' small scale slots (with their mbarrier arrivals, which track every
  // earlier cp.async of the lane) go first, then A, then the weights' bulk copies.
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  if (lane == 0)
    for (int s = 0; s < kStages; ++s)
      nibble::detail::mbarrier_init(nibble::detail::smem_addr(&bars[warp][s]), 33);  // 32 lanes' + expect_tx
  nibble::detail::fence_mbarrier_init();
  __syncwarp();
  const int first_stages = min(kStages, chunks);
  if (!p.dependent_launch) {
    for (int c = 0; c < first_stages; ++c) copy_chunk(c, true, false), advance(c);
    load_act();
    l_col = first_col, l_kb = first_kb;
    for (int c = 0; c < first_stages; ++c) copy_chunk(c, false, true), advance(c);
  } else {
    for (int c = 0; c < first_stages; ++c) copy_chunk(c, true, true), advance(c);
  }
#else
  if (!p.dependent_launch) load_act();
  // The weights never depend on the previous kernel: the first stages are requested before the wait.
  for (int c = 0; c < kStages; ++c) {
    if (c < chunks)
      copy_chunk(c, true, true), advance(c);
    else
      nibble::detail::cp_async_commit();  // one group per stage, so that wait_group counts stages
  }
#endif
  // (dq: the codes are weights, never written by the previous kernel: their loads may go before the wait)
  const DqFetched dq_first = dq_fetch(0);
  DqFetched dq_next = dq_fetch(1);
  if (p.dependent_launch) {
    nibble::detail::griddepcontrol_wait();
    load_act();
  }
  const KernelDequantContext<F, T, kSmemTable, Tile> ctx =
      make_kernel_dequant_context<F, T, kSmemTable, Tile>(smem_raw, tid);
  // Wait for A (on sm_90 with the first stages' scale slots, committed with it; without a dependent launch
  // on sm_80 the kStages stage groups came after it and may stay in flight).
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  nibble::detail::cp_async_wait<0>();
#else
  if (p.dependent_launch)
    nibble::detail::cp_async_wait<0>();
  else
    nibble::detail::cp_async_wait<kStages>();
#endif
  __syncthreads();
  dq_store(ring, dq_first);  // chunk 0's scales (stage 0), with the map that came with A
  if constexpr (kDq) __syncwarp();

  // ldmatrix.x4 of k-steps (j, j + 1), j even: lane l addresses row l % 8 of matrix l / 8 = chunk 2j + l / 8.
  // (One token tile: rows >= M read row M - 1, which is all the slice holds.)
  const int lrow = TT == 1 && lane % 8 >= act_rows ? act_rows - 1 : lane % 8;
  const std::uint32_t act_lane = nibble::detail::smem_addr(act) + std::uint32_t(lrow * pitch * 2);
  const std::uint32_t xo[2] = {std::uint32_t((((lane / 8)) ^ lrow) * 16),
                               std::uint32_t((((4 + lane / 8)) ^ lrow) * 16)};

  // Output of one finished column (fragment order v[tt][i]: weight row g + 8 (i / 2), token 8 tt + 2 t + i % 2).
  auto token_of = [&](int tt, int i) { return tt * 8 + 2 * t + (i % 2); };
  auto store_out = [&](int col, const float(&v)[TT][4]) {
#pragma unroll
    for (int tt = 0; tt < TT; ++tt)
#pragma unroll
      for (int i = 0; i < 4; ++i)
        if (token_of(tt, i) < p.m) store_c_one(p, token_of(tt, i), col * layout::kAtomN + g + 8 * (i / 2), v[tt][i]);
  };
  auto finish = [&](int col, const float(&v)[TT][4]) {
    if (p.splits == 1) {
      store_out(col, v);
    } else {
      float* ws = p.partials + (std::int64_t(split) * nc + col) * kFrag;
#pragma unroll
      for (int tt = 0; tt < TT; ++tt)
#pragma unroll
        for (int i = 0; i < 4; ++i)
          if (token_of(tt, i) < p.m) __stcg(ws + (tt * 4 + i) * 32 + lane, v[tt][i]);
    }
  };

  // ---- mainloop ----
  float acc[TT][4] = {};
  int c_col = first_col, c_kb = first_kb;                                             // the atom multiplied
  std::uint32_t c_addr = act_lane + std::uint32_t((c_kb - a0) * layout::kAtomK * 2);  // its A slice (this lane)
  bool from_start = c_kb == a0, first = true;

  // Multiplies one atom (its A slice at addr) into acc.
  auto consume = [&](const StreamAtom& at, std::uint32_t addr) {
    std::uint32_t bf[TT][4];
    float part[TT][4];
    auto apply = [&](std::uint32_t s) {
      const float lo = scale_bits_to_float<T>(s & 0xFFFFu), hi = scale_bits_to_float<T>(s >> 16);
#pragma unroll
      for (int tt = 0; tt < TT; ++tt) {
        acc[tt][0] = fmaf(lo, part[tt][0], acc[tt][0]);
        acc[tt][1] = fmaf(lo, part[tt][1], acc[tt][1]);
        acc[tt][2] = fmaf(hi, part[tt][2], acc[tt][2]);
        acc[tt][3] = fmaf(hi, part[tt][3], acc[tt][3]);
      }
    };
    ColumnPairQuant<T> q[2] = {};
    if constexpr (kU4) {
      q[0].zero_lo = int(at.z & 0xFFu), q[0].zero_hi = int((at.z >> 8) & 0xFFu);
      q[1].zero_lo = int((at.z >> 16) & 0xFFu), q[1].zero_hi = int(at.z >> 24);
    }
    if constexpr (kAffine) {
      // Affine u4: w = q s + m in T (dequant_fragments: one __hfma2 per pair), multiplied straight into acc
      // (the offset cannot be applied after the sum the way the scale is); no fp32 scaling step.
      q[0] = {bits_to_value<T>(at.s0), bits_to_value<T>(at.s0 >> 16), 0, 0,
              bits_to_value<T>(at.o0), bits_to_value<T>(at.o0 >> 16)};
      q[1] = {bits_to_value<T>(at.s1), bits_to_value<T>(at.s1 >> 16), 0, 0,
              bits_to_value<T>(at.o1), bits_to_value<T>(at.o1 >> 16)};
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (j % 2 == 0) {
#pragma unroll
        for (int tt = 0; tt < TT; ++tt)
          nibble::detail::ldmatrix_x4(bf[tt], addr + std::uint32_t(tt * 8 * pitch * 2) + xo[j / 2]);
      }
      std::uint32_t o[4];
      if constexpr (kAffine)
        dequant_fragments<T, F>(atom_word(at.w, j), q[j / 2], ctx, o);
      else
        decode_fragments<T, F>(atom_word(at.w, j), q[j / 2], ctx, o);
      const std::uint32_t a[4] = {o[0], o[2], o[1], o[3]};  // B-fragment order -> A-fragment order
#pragma unroll
      for (int tt = 0; tt < TT; ++tt) {
        const std::uint32_t b[2] = {bf[tt][2 * (j % 2)], bf[tt][2 * (j % 2) + 1]};
        if (kAffine)
          nibble::detail::mma_m16n8k16<T>(acc[tt], a, b);
        else if (j == 0 || (kG32 && j == 2))
          nibble::detail::mma_m16n8k16_zero_c<T>(part[tt], a, b);
        else
          nibble::detail::mma_m16n8k16<T>(part[tt], a, b);
      }
      if (!kAffine && kG32 && j == 1) apply(at.s0);
    }
    if (!kAffine) apply(at.s1);
  };
  // Atom i of stage st, as this lane holds it.
  auto load_atom = [&](const unsigned char* st, int i) {
    StreamAtom at;
    at.w = *reinterpret_cast<const uint4*>(st + i * layout::kAtomBytes + lane * 16);
    const unsigned short* ss = reinterpret_cast<const unsigned short*>(st + kScaleOff + i * kPer * 32);
    at.s0 = std::uint32_t(ss[g]) | (std::uint32_t(ss[g + 8]) << 16);
    at.s1 = kG32 ? (std::uint32_t(ss[16 + g]) | (std::uint32_t(ss[16 + g + 8]) << 16)) : at.s0;
    at.z = at.o0 = at.o1 = 0;
    if constexpr (kAffine) {
      const unsigned short* oo = reinterpret_cast<const unsigned short*>(st + kZeroOff + i * kPer * 32);
      at.o0 = std::uint32_t(oo[g]) | (std::uint32_t(oo[g + 8]) << 16);
      at.o1 = kG32 ? (std::uint32_t(oo[16 + g]) | (std::uint32_t(oo[16 + g + 8]) << 16)) : at.o0;
    }
    if constexpr (kU4) {
      const std::uint8_t* zz = st + kZeroOff + i * kPer * 16;
      const std::uint32_t z0 = std::uint32_t(zz[g]) | (std::uint32_t(zz[g + 8]) << 8);
      const std::uint32_t z1 = kG32 ? (std::uint32_t(zz[16 + g]) | (std::uint32_t(zz[16 + g + 8]) << 8)) : z0;
      at.z = z0 | (z1 << 16);
    }
    return at;
  };
  // The end of a column segment (the column's last atom, or the run's): the whole column goes out, a part
  // of one to the warp's slot.
  auto segment_end = [&](bool col_end) {
    if (from_start && col_end) {
      finish(c_col, acc);  // the whole column: this warp's alone
    } else {
      float* slot = red + (warp * 2 + (first ? 0 : 1)) * kFrag;
#pragma unroll
      for (int tt = 0; tt < TT; ++tt)
#pragma unroll
        for (int i2 = 0; i2 < 4; ++i2) slot[(tt * 4 + i2) * 32 + lane] = acc[tt][i2];
    }
#pragma unroll
    for (int tt = 0; tt < TT; ++tt) acc[tt][0] = acc[tt][1] = acc[tt][2] = acc[tt][3] = 0.0f;
    first = false;
    from_start = true;
  };

  for (int c = 0; c < chunks; ++c) {
    const unsigned char* st = ring + (c % kStages) * kStageBytes;
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
    nibble::detail::mbarrier_wait_parity(nibble::detail::smem_addr(&bars[warp][c % kStages]),
                                         std::uint32_t((c / kStages) & 1));
#else
    nibble::detail::cp_async_wait<kStages - 1>();
    __syncwarp();  // the scale rows were copied by other lanes
#endif
    const int n = min(kChunk, u1 - (u0 + c * kChunk));
    if (n == kChunk && c_kb + kChunk <= a1) {
      // The common case: a full chunk inside one column, no per-atom segment checks (so the compiler may
      // interleave the atoms); a segment can end only at its last atom.
#pragma unroll kFastUnroll
      for (int i = 0; i < kChunk; ++i) consume(load_atom(st, i), c_addr + std::uint32_t(i * layout::kAtomK * 2));
      c_kb += kChunk;
      c_addr += kChunk * layout::kAtomK * 2;
      const bool col_end = c_kb == a1;
      if (col_end || c == chunks - 1) segment_end(col_end);
      if (col_end) c_kb = a0, ++c_col, c_addr = act_lane;
    } else {
#pragma unroll
      for (int i = 0; i < kChunk; ++i) {
        if (i < n) {
          consume(load_atom(st, i), c_addr);
          const bool col_end = c_kb == a1 - 1;
          if (col_end || u0 + c * kChunk + i == u1 - 1) segment_end(col_end);
          c_addr += layout::kAtomK * 2;
          if (++c_kb == a1) {
            c_kb = a0;
            ++c_col;
            c_addr = act_lane;
          }
        }
      }
    }
    if constexpr (kDq) {
      // The next chunk's scales (their stage was last read by chunk c + 1 - kStages; the __syncwarp below
      // orders these stores before every lane's reads of chunk c + 1), then the codes of the one after it.
      if (c + 1 < chunks) dq_store(ring + ((c + 1) % kStages) * kStageBytes, dq_next);
      dq_next = dq_fetch(c + 2);
    }
    if (c + kStages < chunks) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
      // This lane's generic-proxy reads of the stage are ordered before the bulk copy (async proxy) that
      // refills it: each reading lane fences, then the warp synchronizes, then lane 0 issues the copy.
      nibble::detail::fence_proxy_async_shared();
#endif
      __syncwarp();  // every lane has read the stage
      copy_chunk(c + kStages, true, true);
      advance(c + kStages);
    } else {
#if !(defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900))
      nibble::detail::cp_async_commit();
#endif
      if constexpr (kDq) __syncwarp();  // the scale slots dq_store wrote
    }
  }
  // Dependent launch: the next kernel may start fetching its weights now.
  nibble::detail::griddepcontrol_launch_dependents();

  // ---- columns split between warps: the warp holding a column's last atom sums its slots in warp order ----
  __syncthreads();
  if (u0 < u1 && u0 % kas != 0 && u1 >= (u0 / kas + 1) * kas) {
    const int cf = u0 / kas;  // this warp's first column began in an earlier warp and ends here
    const int wf = int(((std::int64_t(cf) * kas + 1) * W - 1) / units);  // the warp of its first atom
    float v[TT][4] = {};
    for (int w2 = wf; w2 <= warp; ++w2) {
      const int b2 = int(std::int64_t(w2) * units / W), e2 = int(std::int64_t(w2 + 1) * units / W);
      if (b2 == e2) continue;  // a warp without atoms wrote no slot
      const float* slot = red + (w2 * 2 + (b2 / kas == cf ? 0 : 1)) * kFrag;
#pragma unroll
      for (int tt = 0; tt < TT; ++tt)
#pragma unroll
        for (int i = 0; i < 4; ++i) v[tt][i] += slot[(tt * 4 + i) * 32 + lane];
    }
    finish(c0 + cf, v);
  }
  if (p.splits == 1) return;

  // ---- K slices: the last CTA of the range sums every slice's partials in slice order ----
  __threadfence();
  __syncthreads();
  if (tid == 0) s_is_last = atomicAdd(&p.counters[range], 1u) == unsigned(p.splits - 1);
  __syncthreads();
  if (!s_is_last) return;
  __threadfence();
  for (int col = c0 + warp; col < c1; col += W) {
    float v[TT][4] = {};
    for (int sp = 0; sp < p.splits; ++sp) {
      const float* ws = p.partials + (std::int64_t(sp) * nc + col) * kFrag;
#pragma unroll
      for (int tt = 0; tt < TT; ++tt)
#pragma unroll
        for (int i = 0; i < 4; ++i)
          if (token_of(tt, i) < p.m) v[tt][i] += __ldcg(ws + (tt * 4 + i) * 32 + lane);
    }
    store_out(col, v);
  }
  if (tid == 0) p.counters[range] = 0u;  // leave the workspace as we found it
}

/// What runs a tile of the StreamKernel family (tile_registry.cuh).
template <>
struct FamilyKernel<StreamKernel> {
  static constexpr bool kHasWgmmaBody = false;
  static constexpr int kVariants = 4;  // bit 0: groups of 32 (two scale rows per atom); bit 1: compact dq scales
  template <class T, Format F, class Tile, bool kUseWgmma, bool kSmemTable>
  static auto kernel(const KernelParams<T>& p, int* variant) {
    const bool g32 = !p.per_channel && p.group_log2 == 5;
    *variant = g32 ? 1 : 0;
    if constexpr (is_codebook(F)) {
      if (p.dq_codes != nullptr) {
        *variant += 2;
        return g32 ? &gemm_stream_kernel<T, F, Tile, kSmemTable, true, true>
                   : &gemm_stream_kernel<T, F, Tile, kSmemTable, false, true>;
      }
    }
    return g32 ? &gemm_stream_kernel<T, F, Tile, kSmemTable, true> : &gemm_stream_kernel<T, F, Tile, kSmemTable, false>;
  }
};

NIBBLE_ARCH_NAMESPACE_END

}  // namespace nibble::gemm::detail
