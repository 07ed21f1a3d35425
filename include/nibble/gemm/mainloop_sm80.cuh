// nibble/gemm/mainloop_sm80.cuh — the mma.sync kernel family (sm_80+): C[M, N] = A[M, K] * dequant(W)^T
// (+ bias), A / C row-major with leading dimensions, W in the GEMM layout.
//
// One CTA computes a tile_m x tile_n block of C over a contiguous range of k-tiles (its split of K; the
// tile scheduler, scheduler.cuh). Mainloop: a `stages`-deep cp.async ring of {sA, sW, sS, sZ (, sO)}
// (shared_storage.cuh, filled by producer.cuh); every warp reads its weight atoms with one 32-bit shared
// load per lane and k-step, dequantizes them in registers right before mma.m16n8k16 (never writing a
// dequantized tile anywhere) and accumulates in fp32 (rC). Split-K is deterministic (scheduler.cuh).
#pragma once

#include "epilogue.cuh"
#include "producer.cuh"
#include "scheduler.cuh"

namespace nibble::gemm::detail {

NIBBLE_ARCH_NAMESPACE_BEGIN

/// kSmemTable: nf4 / fp4 decode through the shared-memory codebook table (else the register table).
template <class T, Format F, class Tile, bool kSmemTable = false>
__global__ void __launch_bounds__(Tile::kConfig.threads()) gemm_kernel(const KernelParams<T> p) {
  constexpr TileConfig C = Tile::kConfig;
  constexpr int BM = C.tile_m(), BN = C.tile_n(), S = C.stages;
  constexpr int kThreads = C.threads();
  static_assert(!C.transposed, "transposed configurations run gemm_transposed_kernel");
  using Stage = StageStorage<T, Tile, has_offset(F)>;
  using Storage = MmaSharedStorage<T, Tile, is_codebook(F) && kSmemTable, has_offset(F)>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __shared__ int s_is_last;
  Storage& smem = *reinterpret_cast<Storage*>(smem_raw);

  const CtaWork work = cta_work(p, BM, BN);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp % C.warps_m, wn = warp / C.warps_m;
  const StageLoader<T, F, Tile> loader(p, work.m0, work.n0, tid);

  float rC[C.warp_m16][C.warp_n16][2][4] = {};  // rC: (m16 tiles, atoms, n8 halves, 4) fp32

  // Mainloop: a ring of S stages, S - 1 k-tiles loaded ahead. The first loads are issued before the
  // codebook table is built, so that they are in flight meanwhile.
  loader.template prologue<S - 1>(p, smem.stages, work.kt_begin, work.kt_end, tid);
  const DqScaleLoader<T, F, Tile> dq(p, work.n0, tid, smem.stages);  // compact double-quantized scales (nf4 / fp4)
  typename DqScaleLoader<T, F, Tile>::Fetched dq_next = dq.template prologue<S - 1>(p, work.kt_begin, work.kt_end);

  const KernelDequantContext<F, T, kSmemTable, Tile> ctx =
      make_kernel_dequant_context<F, T, kSmemTable, Tile>(smem.table(), tid);

  // The decode tile (one m16 tile per warp) loads the scales once per 32-deep half atom (groups are >= 32
  // long and aligned, so a half atom never spans two) instead of every k-step: nf4 decode 8% faster on
  // the H100 (benchmarks/NOTES.md). The 64-row tiles reload them: their loads are amortized over four m16
  // tiles, and holding them made ptxas spill there.
  constexpr bool kDecodeShape = C.warp_m16 == 1;
  auto compute_stage = [&](const Stage& st) {
#pragma unroll
    for (int kb = 0; kb < C.atoms_k; ++kb) {
      ColumnPairQuant<T> q[C.warp_n16];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int kl = kb * layout::kAtomK + j * 16;
        std::uint32_t rA[C.warp_m16][4];  // rA: (m16 tiles, 4) A fragments of this k-step
#pragma unroll
        for (int m = 0; m < C.warp_m16; ++m) {
          const int row = (wm * C.warp_m16 + m) * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
          nibble::detail::ldmatrix_x4(rA[m], st.a + Stage::a_offset(row, kl / 8 + lane / 16));
        }
#pragma unroll
        for (int nb = 0; nb < C.warp_n16; ++nb) {
          if (!kDecodeShape || j % 2 == 0)
            q[nb] = stage_quant<T, F>(p, st, (wn * C.warp_n16 + nb) * layout::kAtomN + lane / 4, kl);
          // One 32-bit word per lane per k-step (a warp reads 128 contiguous bytes: conflict free); loading
          // the lane's 16-byte slice once per atom measured the same and keeps 4x the registers live.
          const std::uint32_t word = load_atom_word(st.atom(wn * C.warp_n16 + nb, kb), lane, j);
          std::uint32_t rW[4];  // rW: the two dequantized B fragments of this atom k-step
          dequant_fragments<T, F>(word, q[nb], ctx, rW);
#pragma unroll
          for (int m = 0; m < C.warp_m16; ++m) mma_atom_step<T>(rC[m][nb], rA[m], rW);
        }
      }
    }
  };

  for (int kt = work.kt_begin; kt < work.kt_end; ++kt) {
    const int i = kt - work.kt_begin;
    nibble::detail::cp_async_wait<S - 2>();
    __syncthreads();  // stage i is visible to all; every warp is done with stage i - 1
    loader.load(p, smem.stages[(i + S - 1) % S], kt + S - 1, work.kt_end, tid);
    compute_stage(smem.stages[i % S]);
    if (dq.active) {  // (stage i + S - 1 is read after the next barrier)
      dq.store(p, smem.stages[(i + S - 1) % S], dq_next);
      dq_next = dq.fetch(p, kt + S, work.kt_end);
    }
  }
  nibble::detail::cp_async_wait<0>();
  // Dependent launch: the next kernel may start fetching its weights now (it waits for our completion
  // before it reads anything we write).
  nibble::detail::griddepcontrol_launch_dependents();

  // Epilogue. Register r of the flat accumulator holds a value of C row row_of(r); rows >= M never move
  // through the split-K workspace (at M = 1 that is 1/16 of the decode tile's partial-sum traffic).
  constexpr int kRegs = C.warp_m16 * C.warp_n16 * 2 * 4;
  auto row_of = [&](int r) {
    const int m = r / (C.warp_n16 * 8), i = r % 4;
    return work.m0 + (wm * C.warp_m16 + m) * 16 + lane / 4 + 8 * (i / 2);
  };
  if (p.splits > 1 &&
      !split_k_reduce<kRegs, kThreads>(
          p, work.tile, work.split, BM * BN, &rC[0][0][0][0], [&](int r) { return row_of(r) < p.m; }, &s_is_last))
    return;

#pragma unroll
  for (int m = 0; m < C.warp_m16; ++m)
#pragma unroll
    for (int nb = 0; nb < C.warp_n16; ++nb)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int row = work.m0 + (wm * C.warp_m16 + m) * 16 + lane / 4 + 8 * half;
          const int col = work.n0 + (wn * C.warp_n16 + nb) * layout::kAtomN + h * 8 + (lane % 4) * 2;
          if (row < p.m) store_c_pair(p, row, col, rC[m][nb][h][2 * half], rC[m][nb][h][2 * half + 1]);
        }
}

/// What runs a tile of the MmaSyncKernel family (tile_registry.cuh).
template <>
struct FamilyKernel<MmaSyncKernel> {
  static constexpr bool kHasWgmmaBody = false;
  static constexpr int kVariants = 1;
  template <class T, Format F, class Tile, bool kUseWgmma, bool kSmemTable>
  static auto kernel(const KernelParams<T>&, int* variant) {
    *variant = 0;
    return &gemm_kernel<T, F, Tile, kSmemTable>;
  }
};

NIBBLE_ARCH_NAMESPACE_END

}  // namespace nibble::gemm::detail
