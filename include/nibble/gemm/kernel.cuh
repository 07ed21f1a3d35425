// nibble/gemm/kernel.cuh — the lazy-dequantizing tensor-core GEMM kernel (mma.sync, sm_80+):
//   C[M, N] = A[M, K] * dequant(W)^T (+ bias), A/C row-major with leading dimensions, W in the GEMM layout.
//
// One CTA computes a tile_m x tile_n block of C over a contiguous range of k-tiles (its split of K).
// Mainloop: a `stages`-deep cp.async ring of {A tile, weight atoms, scales, zeros} (tile_io.cuh); every
// warp reads its weight atoms with one 32-bit shared load per lane and k-step, dequantizes them in
// registers right before mma.m16n8k16 (never writing a dequantized tile anywhere) and accumulates in fp32.
// Split-K is deterministic (tile_io.cuh: split_k_reduce).
#pragma once

#include "tile_io.cuh"

namespace nibble::gemm {

/// kSmemTable: nf4 / fp4 decode through the shared-memory codebook table (else the register table).
template <class T, Format F, class Tile, bool kSmemTable = false>
__global__ void __launch_bounds__(Tile::kConfig.threads()) gemm_kernel(const KernelParams<T> p) {
  constexpr TileConfig C = Tile::kConfig;
  constexpr int BM = C.tile_m(), BN = C.tile_n(), S = C.stages;
  constexpr int kThreads = C.threads();
  static_assert(!C.transposed, "transposed configurations run gemm_wg_kernel");
  using StageT = Stage<T, Tile>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __shared__ int s_is_last;
  unsigned char* smem = smem_raw + kernel_smem_prefix(F, kSmemTable, C);  // the stage ring, after the table

  const CtaWork w = cta_work(p, BM, BN);
  const int tile = w.tile, split = w.split, m0 = w.m0, n0 = w.n0, kt_begin = w.kt_begin, kt_end = w.kt_end;

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp % C.warps_m, wn = warp / C.warps_m;
  auto stage = [&](int s) { return StageT{smem + s * C.stage_bytes()}; };
  const StageLoader<T, F, Tile> loader(p, m0, n0, tid);

  float acc[C.warp_m16][C.warp_n16][2][4] = {};

  // Mainloop: a ring of S stages, S - 1 k-tiles loaded ahead. The first loads are issued before the
  // codebook table is built, so that they are in flight meanwhile.
#pragma unroll
  for (int s = 0; s < S - 1; ++s) loader.load(p, stage(s), kt_begin + s, kt_end, tid);

  const KernelDequantContext<F, T, kSmemTable, Tile> ctx =
      make_kernel_dequant_context<F, T, kSmemTable, Tile>(smem_raw, tid);

  // The decode tile (one m16 tile per warp) loads the scales once per 32-deep half atom (groups are >= 32
  // long and aligned, so a half atom never spans two) instead of every k-step: nf4 decode 8% faster on
  // the H100 (benchmarks/NOTES.md). The 64-row tiles reload them: their loads are amortized over four m16
  // tiles, and holding them made ptxas spill there.
  constexpr bool kDecodeShape = C.warp_m16 == 1;
  auto compute_stage = [&](const StageT& st) {
#pragma unroll
    for (int kb = 0; kb < C.atoms_k; ++kb) {
      ColumnPairQuant<T> q[C.warp_n16];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int kl = kb * layout::kAtomK + j * 16;
        std::uint32_t a[C.warp_m16][4];
#pragma unroll
        for (int m = 0; m < C.warp_m16; ++m) {
          const int row = (wm * C.warp_m16 + m) * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
          detail::ldmatrix_x4(a[m], st.a() + StageT::a_offset(row, kl / 8 + lane / 16));
        }
#pragma unroll
        for (int nb = 0; nb < C.warp_n16; ++nb) {
          if (!kDecodeShape || j % 2 == 0)
            q[nb] = stage_quant<T, F>(p, st, (wn * C.warp_n16 + nb) * layout::kAtomN + lane / 4, kl);
          // One 32-bit word per lane per k-step (a warp reads 128 contiguous bytes: conflict free); loading
          // the lane's 16-byte slice once per atom measured the same and keeps 4x the registers live.
          const std::uint32_t word =
              load_atom_word(st.b() + ((wn * C.warp_n16 + nb) * C.atoms_k + kb) * layout::kAtomBytes, lane, j);
          std::uint32_t b[4];
          dequant_fragments<T, F>(word, q[nb], ctx, b);
#pragma unroll
          for (int m = 0; m < C.warp_m16; ++m) mma_atom_step<T>(acc[m][nb], a[m], b);
        }
      }
    }
  };

  for (int kt = kt_begin; kt < kt_end; ++kt) {
    const int i = kt - kt_begin;
    detail::cp_async_wait<S - 2>();
    __syncthreads();  // stage i is visible to all; every warp is done with stage i - 1
    loader.load(p, stage((i + S - 1) % S), kt + S - 1, kt_end, tid);
    compute_stage(stage(i % S));
  }
  detail::cp_async_wait<0>();

  // Epilogue. Register r of the flat accumulator holds a value of C row row_of(r); rows >= M never move
  // through the split-K workspace (at M = 1 that is 1/16 of the decode tile's partial-sum traffic).
  constexpr int kRegs = C.warp_m16 * C.warp_n16 * 2 * 4;
  auto row_of = [&](int r) {
    const int m = r / (C.warp_n16 * 8), i = r % 4;
    return m0 + (wm * C.warp_m16 + m) * 16 + lane / 4 + 8 * (i / 2);
  };
  if (p.splits > 1 &&
      !split_k_reduce<kRegs, kThreads>(p, tile, split, BM * BN, &acc[0][0][0][0],
                                       [&](int r) { return row_of(r) < p.m; }, &s_is_last))
    return;

#pragma unroll
  for (int m = 0; m < C.warp_m16; ++m)
#pragma unroll
    for (int nb = 0; nb < C.warp_n16; ++nb)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int row = m0 + (wm * C.warp_m16 + m) * 16 + lane / 4 + 8 * half;
          const int col = n0 + (wn * C.warp_n16 + nb) * layout::kAtomN + h * 8 + (lane % 4) * 2;
          if (row < p.m) store_c_pair(p, row, col, acc[m][nb][h][2 * half], acc[m][nb][h][2 * half + 1]);
        }
}

}  // namespace nibble::gemm
