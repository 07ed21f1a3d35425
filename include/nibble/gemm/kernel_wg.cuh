// nibble/gemm/kernel_wg.cuh — the transposed ("warpgroup") GEMM kernel: C^T[N, M] = dequant(W) * A^T, so
// that the dequantized weight is the MMA operand that lives in registers and the activations are the one
// read from shared memory.
//
// Why: on Hopper, wgmma takes its A operand from registers and its B operand from shared memory. With W as
// A, each lane dequantizes exactly the weights of its own fragment (the GEMM layout's lane words are the
// mma.m16n8k16 fragments, whose A and B forms hold the same weights in a different register order), the
// dequantized weights never touch shared memory, and one wgmma.m64nTk16 reuses them for T tokens while
// the tensor cores run asynchronously to the next k-tile's dequantization.
//
// CTA: tile_n / 64 warpgroups; warp w owns weight rows 16w .. 16w + 15 of the tile (one atom column),
// every warp covers all tile_m tokens. Per k-tile (64 deep): each lane loads its 16-byte atom slice,
// dequantizes the four k-steps into A fragments, then the warpgroup issues four wgmmas against the
// stage's A^T tile (K-major, 128-byte swizzle: tile_io.cuh's Stage layout) and moves on; the wgmmas of a
// k-tile are waited for one k-tile later. The stage ring keeps S - 2 k-tiles loading ahead, so a stage is
// overwritten only after every warp has waited for the wgmmas that read it.
//
// Without sm_90a device code (sm_80, plain sm_90) or with kUseWgmma = false the same tiles run with
// mma.sync: per k-step, ldmatrix of the token fragments and tile_m / 8 mma.m16n8k16 whose accumulators
// have exactly the wgmma layout. Output: the fp32 tile is staged transposed in shared memory and written
// row-major with pair stores; split-K is the shared deterministic reduction (tile_io.cuh).
#pragma once

#include "../detail/wgmma.cuh"
#include "tile_io.cuh"

namespace nibble::gemm {

template <class T, Format F, class Tile, bool kUseWgmma>
__global__ void __launch_bounds__(Tile::kConfig.threads()) gemm_wg_kernel(const KernelParams<T> p) {
  constexpr TileConfig C = Tile::kConfig;
  static_assert(C.transposed && C.valid(), "gemm_wg_kernel runs transposed tile configurations");
  constexpr int BT = C.tile_m(), BW = C.tile_n(), S = C.stages;  // tokens, weight rows
  constexpr int kThreads = C.threads();
  constexpr int kKSteps = C.atoms_k * 4;  // k16 steps per k-tile
  constexpr int kAcc = BT / 2;            // fp32 accumulators per thread: (16 x BT) / 32 lanes
  constexpr bool kWgmma = kUseWgmma && detail::kWgmmaCompiled;
  using StageT = Stage<T, Tile>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __shared__ int s_is_last;
  // The 128-byte swizzle repeats every 1024 bytes: align the ring (smem_bytes() holds 1024 bytes extra).
  unsigned char* smem = smem_raw + ((1024 - detail::smem_addr(smem_raw) % 1024) % 1024);

  const int tile = blockIdx.x / p.splits;
  const int split = blockIdx.x % p.splits;
  const int m0 = (tile % p.tiles_m) * BT;  // tokens fastest: CTAs sharing a weight tile run together
  const int n0 = (tile / p.tiles_m) * BW;
  const int kt_begin = split * p.k_tiles_per_split;
  const int kt_end = min(p.k_tiles, kt_begin + p.k_tiles_per_split);

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int g = lane / 4, t = lane % 4;
  auto stage = [&](int s) { return StageT{smem + s * C.stage_bytes()}; };

  float acc[kAcc];
#pragma unroll
  for (int r = 0; r < kAcc; ++r) acc[r] = 0.0f;

  const DequantContext<F, T> ctx = DequantContext<F, T>::make();

  // The warp's weight rows of one k-tile, dequantized into wgmma / mma A fragments: for each k-step the
  // lane's word gives B fragments {(g, 2t), (g, 2t + 8), (g + 8, 2t), (g + 8, 2t + 8)}; as an A fragment
  // the order is rows g, g + 8 first.
  auto dequant_tile = [&](const StageT& st, std::uint32_t (&a)[kKSteps][4]) {
#pragma unroll
    for (int kb = 0; kb < C.atoms_k; ++kb) {
      const uint4 slice = load_atom_lane(st.b() + (warp * C.atoms_k + kb) * layout::kAtomBytes, lane);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int kl = kb * layout::kAtomK + j * 16;
        const ColumnPairQuant<T> q = stage_quant<T, F>(p, st, warp * layout::kAtomN + g, kl);
        std::uint32_t b[4];
        dequant_fragments<T, F>(atom_word(slice, j), q, ctx, b);
        std::uint32_t(&f)[4] = a[kb * 4 + j];
        f[0] = b[0];
        f[1] = b[2];
        f[2] = b[1];
        f[3] = b[3];
      }
    }
  };

  // Mainloop: a ring of S stages; S - 2 k-tiles are loading while one is computed and one may still be
  // read by this warp's in-flight wgmmas.
#pragma unroll
  for (int s = 0; s < S - 2; ++s) {
    load_stage<T, F>(p, stage(s), m0, n0, kt_begin + s, kt_end, tid);
    detail::cp_async_commit();
  }
  for (int kt = kt_begin; kt < kt_end; ++kt) {
    const int i = kt - kt_begin;
    detail::cp_async_wait<S - 3>();
    if constexpr (kWgmma) detail::fence_proxy_async_shared();  // cp.async data -> wgmma's async proxy
    // Stage i is visible to all. Every warp has waited for its wgmmas of k-tile i - 2 (wait<1> below), so
    // the stage they read can be refilled.
    __syncthreads();
    load_stage<T, F>(p, stage((i + S - 2) % S), m0, n0, kt + S - 2, kt_end, tid);
    detail::cp_async_commit();

    const StageT st = stage(i % S);
    std::uint32_t a[kKSteps][4];
    dequant_tile(st, a);
    if constexpr (kWgmma) {
      detail::wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
        // k-step ks: sub-tile ks / 4, 16 elements (32 bytes) per step inside the 128-byte swizzled rows
        const std::uint64_t desc = detail::make_smem_desc_sw128(st.a() + (ks / 4) * (BT * 64) + (ks % 4) * 16);
        detail::WgmmaRs<BT>::template mma<T>(acc, a[ks], desc);
      }
      detail::wgmma_commit();
      detail::wgmma_wait<1>();
    } else {
#pragma unroll
      for (int ks = 0; ks < kKSteps; ++ks) {
#pragma unroll
        for (int tt = 0; tt < BT / 16; ++tt) {
          // tokens 16tt .. 16tt + 15: b[0], b[1] for tokens 16tt + 0..7, b[2], b[3] for 16tt + 8..15
          std::uint32_t b[4];
          const int row = tt * 16 + (lane % 8) + 8 * (lane / 16);
          detail::ldmatrix_x4(b, st.a() + StageT::a_offset(row, ks * 2 + (lane / 8) % 2));
          const std::uint32_t b0[2] = {b[0], b[1]}, b1[2] = {b[2], b[3]};
          detail::mma_m16n8k16<T>(*reinterpret_cast<float(*)[4]>(&acc[8 * tt]), a[ks], b0);
          detail::mma_m16n8k16<T>(*reinterpret_cast<float(*)[4]>(&acc[8 * tt + 4]), a[ks], b1);
        }
      }
    }
  }
  if constexpr (kWgmma) detail::wgmma_wait<0>();
  detail::cp_async_wait<0>();

  // Epilogue. acc[4i + r] is (weight row 16 warp + g + 8 (r / 2), token 8i + 2t + r % 2) of the tile.
  auto token_of = [&](int r) { return 8 * (r / 4) + 2 * t + r % 2; };
  if (p.splits > 1 &&
      !split_k_reduce<kAcc, kThreads>(p, tile, split, BT * BW, acc,
                                      [&](int r) { return m0 + token_of(r) < p.m; }, &s_is_last))
    return;

  __syncthreads();  // every warp is done with the ring: reuse it as the [BT][BW + 4] fp32 staging tile
  float* staged = reinterpret_cast<float*>(smem);
  constexpr int kPitch = C.c_stage_pitch();
#pragma unroll
  for (int r = 0; r < kAcc; ++r)
    staged[token_of(r) * kPitch + warp * layout::kAtomN + g + 8 * ((r % 4) / 2)] = acc[r];
  __syncthreads();
  for (int idx = tid; idx < BT * (BW / 2); idx += kThreads) {
    const int tok = idx / (BW / 2), col = 2 * (idx % (BW / 2));
    if (m0 + tok < p.m)
      store_c_pair(p, m0 + tok, n0 + col, staged[tok * kPitch + col], staged[tok * kPitch + col + 1]);
  }
}

}  // namespace nibble::gemm
