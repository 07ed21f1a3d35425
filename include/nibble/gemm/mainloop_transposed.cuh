// nibble/gemm/mainloop_transposed.cuh — the transposed ("warpgroup") kernel family: C^T[N, M] = dequant(W) *
// A^T, so that the dequantized weight is the MMA operand that lives in registers (rW) and the activations
// are the one read from shared memory (sA).
//
// Why: on Hopper, wgmma takes its A operand from registers and its B operand from shared memory. With W as
// the wgmma A, each lane dequantizes exactly the weights of its own fragment (the GEMM layout's lane words
// are the mma.m16n8k16 fragments, whose A and B forms hold the same weights in a different register order),
// the dequantized weights never touch shared memory, and one wgmma.m64nTk16 reuses them for T tokens while
// the tensor cores run asynchronously to the next k-step's dequantization.
//
// CTA: tile_n / 64 warpgroups; warp w owns weight rows 16w .. 16w + 15 of the tile (one atom column),
// every warp covers all tile_m tokens. Per k-tile (64 deep): each lane loads its 16-byte atom slice; per
// k-step it dequantizes one word into an rW fragment and the warpgroup issues one wgmma against the
// stage's sA tile (K-major, 128-byte swizzle: shared_storage.cuh). Each wgmma may still run while the next
// k-step is dequantized; two fragment register sets alternate, and the wait that follows each issue holds
// the older set as an operand, so no set is rewritten while a wgmma reads it. The stage ring keeps S - 2
// k-tiles loading ahead, so a stage is refilled only after every wgmma that read it is done.
//
// Without sm_90a device code (sm_80, plain sm_90) or with kUseWgmma = false the same tiles run with
// mma.sync: per k-step, ldmatrix of the token fragments and tile_m / 8 mma.m16n8k16 whose accumulators
// have exactly the wgmma layout. Output: the fp32 tile is staged transposed in shared memory and written
// row-major with pair stores (epilogue.cuh); split-K is the shared deterministic reduction (scheduler.cuh).
#pragma once

#include "../detail/wgmma.cuh"
#include "epilogue.cuh"
#include "producer.cuh"
#include "scheduler.cuh"

namespace nibble::gemm::detail {

NIBBLE_ARCH_NAMESPACE_BEGIN

/// CTAs per SM the register allocation aims at: two for the wgmma body of tiles up to 128 tokens (it fits
/// 128 registers per thread; u4's zero points only up to 64 tokens), one otherwise (the mma.sync body
/// keeps tile_m / 2 accumulators and its ldmatrix operands live: capped at 128 registers it spills).
template <class Tile, Format F, bool kUseWgmma>
inline constexpr int kWgMinBlocks = (kUseWgmma && nibble::detail::kWgmmaCompiled &&
                                     Tile::kConfig.tile_m() <= (F == Format::kU4 ? 64 : 128))
                                        ? 2
                                        : 1;

/// kSmemTable: nf4 / fp4 decode through the shared-memory codebook table (else the register table).
template <class T, Format F, class Tile, bool kUseWgmma, bool kSmemTable = false>
__global__ void __launch_bounds__(Tile::kConfig.threads(), (kWgMinBlocks<Tile, F, kUseWgmma>))
    gemm_transposed_kernel(const KernelParams<T> p) {
  constexpr TileConfig C = Tile::kConfig;
  static_assert(C.transposed && C.valid(), "gemm_transposed_kernel runs transposed tile configurations");
  static_assert(C.atoms_k == 1,
                "one weight atom per warp and k-tile (an even number of k-steps: the two "
                "fragment sets alternate across k-tiles too)");
  constexpr int BT = C.tile_m(), BW = C.tile_n(), S = C.stages;  // tokens, weight rows
  constexpr int kThreads = C.threads();
  constexpr int kKSteps = C.atoms_k * 4;  // k16 steps per k-tile
  constexpr int kAcc = BT / 2;            // fp32 accumulators per thread: (16 x BT) / 32 lanes
  constexpr bool kWgmma = kUseWgmma && nibble::detail::kWgmmaCompiled;
  using Stage = StageStorage<T, Tile, has_offset(F)>;
  using Storage = TransposedSharedStorage<T, Tile, is_codebook(F) && kSmemTable, has_offset(F)>;
  extern __shared__ __align__(128) unsigned char smem_raw[];
  __shared__ int s_is_last;
  // The 128-byte swizzle repeats every 1024 bytes: align the storage (smem_bytes() holds 1024 bytes extra).
  Storage& smem = *reinterpret_cast<Storage*>(smem_raw + ((1024 - nibble::detail::smem_addr(smem_raw) % 1024) % 1024));

  const CtaWork work = cta_work(p, BT, BW);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int g = lane / 4, t = lane % 4;
  const StageLoader<T, F, Tile> loader(p, work.m0, work.n0, tid);

  float rC[kAcc] = {};  // rC: (16 weight rows x BT tokens) / 32 lanes, the wgmma accumulator layout

  // Mainloop: a ring of S stages; S - 2 k-tiles are loading while one is computed and the previous one
  // may still be read by this warp's last in-flight wgmma. The first loads are issued before the codebook
  // table is built, so that they are in flight meanwhile.
  loader.template prologue<S - 2>(p, smem.ring.stages, work.kt_begin, work.kt_end, tid);
  const DqScaleLoader<T, F, Tile> dq(p, work.n0, tid, smem.ring.stages);  // compact double-quantized scales (nf4 / fp4)
  typename DqScaleLoader<T, F, Tile>::Fetched dq_next = dq.template prologue<S - 2>(p, work.kt_begin, work.kt_end);
  const KernelDequantContext<F, T, kSmemTable, Tile> ctx =
      make_kernel_dequant_context<F, T, kSmemTable, Tile>(smem.table(), tid);
  // rW fragments: two register sets used alternately by consecutive k-steps. Each k-step's wgmma is its
  // own group; the wait after issuing k-step s lets at most that group run on and holds the set of
  // k-step s - 1 as its operand, so the set is rewritten only after the wgmma reading it has finished.
  std::uint32_t rW[2][4] = {{0u, 0u, 0u, 0u}, {0u, 0u, 0u, 0u}};
  for (int kt = work.kt_begin; kt < work.kt_end; ++kt) {
    const int i = kt - work.kt_begin;
    nibble::detail::cp_async_wait<S - 3>();
    if constexpr (kWgmma) nibble::detail::fence_proxy_async_shared();  // cp.async data -> wgmma's async proxy
    // Stage i is visible to all. Every warp has finished the wgmmas of k-tile i - 2 (only the last one
    // of k-tile i - 1 may still run), so that stage can be refilled.
    __syncthreads();
    loader.load(p, smem.ring.stages[(i + S - 2) % S], kt + S - 2, work.kt_end, tid);

    const Stage& st = smem.ring.stages[i % S];
    const uint4 slice = load_atom_lane(st.atom(warp, 0), lane);
    const std::uint64_t desc0 = nibble::detail::make_smem_desc_sw128(st.a);
#pragma unroll
    for (int ks = 0; ks < kKSteps; ++ks) {
      std::uint32_t(&a)[4] = rW[ks % 2];
      dequant_a_fragment<T, F, Tile>(p, st, warp * layout::kAtomN + g, ks, slice, ctx, a);
      if constexpr (kWgmma) {
        // 16 elements (32 bytes) per k-step inside the 128-byte swizzled rows; the descriptor's address
        // field counts 16-byte units and cannot carry out (shared memory < 256 KiB)
        nibble::detail::wgmma_fence();
        nibble::detail::wgmma_rs<BT, T>(rC, a, desc0 + std::uint64_t(ks * 32 / 16));
        nibble::detail::wgmma_commit();
        nibble::detail::wgmma_wait_holding<1>(rW[(ks + 1) % 2]);
      } else {
#pragma unroll
        for (int tt = 0; tt < BT / 16; ++tt) {
          // tokens 16tt .. 16tt + 15: rA[0], rA[1] for tokens 16tt + 0..7, rA[2], rA[3] for 16tt + 8..15.
          // Row 16tt + r (r = lane % 8 + 8 (lane / 16)), chunk 2ks + c (c = (lane / 8) % 2): the swizzled
          // chunk is 2ks ^ (c ^ r % 8), so one per-lane value serves every tt and ks.
          std::uint32_t rA[4];
          const int r = (lane % 8) + 8 * (lane / 16), y = ((lane / 8) % 2) ^ (r % 8);
          nibble::detail::ldmatrix_x4(rA, st.a + (tt * 16 + r) * 64 + ((2 * ks) ^ y) * 8);
          const std::uint32_t rA0[2] = {rA[0], rA[1]}, rA1[2] = {rA[2], rA[3]};
          nibble::detail::mma_m16n8k16<T>(*reinterpret_cast<float(*)[4]>(&rC[8 * tt]), a, rA0);
          nibble::detail::mma_m16n8k16<T>(*reinterpret_cast<float(*)[4]>(&rC[8 * tt + 4]), a, rA1);
        }
      }
    }
    if (dq.active) {  // (after the k-steps, so that the map lookups overlap them; read after the next barrier)
      dq.store(p, smem.ring.stages[(i + S - 2) % S], dq_next);
      dq_next = dq.fetch(p, kt + S - 1, work.kt_end);
    }
  }
  if constexpr (kWgmma) {
    nibble::detail::wgmma_wait_holding<0>(rW[0]);
    nibble::detail::wgmma_wait_holding<0>(rW[1]);
  }
  nibble::detail::cp_async_wait<0>();
  nibble::detail::griddepcontrol_launch_dependents();  // (see mainloop_sm80.cuh)

  // Epilogue (epilogue.cuh: transposed_token says which token each accumulator holds).
  if (p.splits > 1 && !split_k_reduce<kAcc, kThreads>(
                          p, work.tile, work.split, BT * BW, rC,
                          [&](int r) { return work.m0 + transposed_token(r, t) < p.m; }, &s_is_last))
    return;
  // (every warp is done with the ring after the barrier: the staging tile reuses it)
  store_transposed_tile<BT, BW, C.c_stage_pitch(), kThreads>(p, smem.ring.staged_c, rC, work.m0, work.n0, tid,
                                                             CtaBarrier{});
}

/// What runs a tile of the TransposedKernel family (tile_registry.cuh).
template <>
struct FamilyKernel<TransposedKernel> {
  static constexpr bool kHasWgmmaBody = true;
  static constexpr int kVariants = 1;
  template <class T, Format F, class Tile, bool kUseWgmma, bool kSmemTable>
  static auto kernel(const KernelParams<T>&, int* variant) {
    *variant = 0;
    return &gemm_transposed_kernel<T, F, Tile, kUseWgmma, kSmemTable>;
  }
};

NIBBLE_ARCH_NAMESPACE_END

}  // namespace nibble::gemm::detail
