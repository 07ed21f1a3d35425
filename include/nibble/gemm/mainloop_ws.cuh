// nibble/gemm/mainloop_ws.cuh — the warp-specialized transposed kernel (sm_90a only): C^T[N, M] = dequant(W) * A^T
// like mainloop_transposed.cuh (the dequantized weight is wgmma's register operand, the activations its shared-
// memory operand), with the copies taken off the computing warps.
//
// CTA: warps_n consumer warps (two warpgroups; warp w owns weight rows 16w .. 16w + 15 of the tile) and one
// producer warpgroup behind them (threads consumer_threads() ..; one warp of it issues, the others leave). The
// producer fills a ring of S stages: per 64-deep k-tile one TMA tile copy of A (tile_m tokens x 64, 128-byte
// swizzle, rows past M and columns past K zero-filled: the layout sA's wgmma descriptor reads), one bulk copy per
// weight atom (512 bytes) and per group row of scales / u4 zeros / affine offsets of the tile's columns, all
// completing on the stage's `full` mbarrier. The consumers wait on `full`, dequantize each k-step's word into an
// A fragment while the previous k-step's wgmma runs (two fragment sets, as in the transposed kernel), and release
// the stage on its `empty` mbarrier (one arrival per consumer thread) once the wait after the next stage's first
// wgmma has retired every wgmma that read it. No __syncthreads in the mainloop; the epilogue (split-K reduction,
// staging of the fp32 tile in the ring, row-major stores) runs on the consumers with a named barrier.
//
// The A tensor map is a member of the kernel parameters, passed as __grid_constant__ (launch_tile encodes it per
// launch on the host: nothing is allocated, and a CUDA graph captures the parameters with the map in them).
#pragma once

#include "../detail/tma.cuh"
#include "../detail/wgmma.cuh"
#include "epilogue.cuh"
#include "producer.cuh"
#include "scheduler.cuh"

namespace nibble::gemm::detail {

NIBBLE_ARCH_NAMESPACE_BEGIN

/// The consumers' named barrier (id 1; 0 is __syncthreads).
template <int kThreads>
struct ConsumerBarrier {
  NIBBLE_DEVICE void operator()() const { nibble::detail::named_barrier_sync(1, kThreads); }
};

/// Whether a warp-specialized tile's consumers take the k-tile boundary's work off the path from a wgmma's wait to
/// the next issue (Tile::kWsHoist; absent: false; an experiment, timed by tune_tiles ws3, not in a shipped tile): the
/// next stage's full-barrier wait and atom-slice load move to before the wait of k-step 3, the release of the previous
/// stage to before the wait of k-step 1 (every wgmma that read it retired at k-step 0's wait).
template <class Tile, class = void>
struct WsHoist : std::false_type {};
template <class Tile>
struct WsHoist<Tile, std::void_t<decltype(Tile::kWsHoist)>> : std::bool_constant<Tile::kWsHoist> {};

/// Encodes p.a_map for configuration Tile: A as rows M x columns K (row pitch lda), boxes of tile_m x 64.
template <class T, class Tile>
Status make_act_map(KernelParams<T>* p) {
  nibble::detail::Tma2d d;
  d.base = p->a;
  d.dtype = std::is_same_v<T, __half> ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  d.rows = p->m, d.cols = p->k, d.row_stride_bytes = p->lda * std::int64_t(sizeof(T));
  d.box_rows = Tile::kConfig.tile_m(), d.box_cols = 64;
  d.swizzle = CU_TENSOR_MAP_SWIZZLE_128B;
  return nibble::detail::make_tma_2d(d, &p->a_map);
}

template <class T, Format F, class Tile, bool kUseWgmma, bool kSmemTable = false>
__global__ void __launch_bounds__(Tile::kConfig.threads(), 1)
    gemm_ws_kernel(const __grid_constant__ KernelParams<T> p) {
  constexpr TileConfig C = Tile::kConfig;
  static_assert(C.warp_specialized && C.valid() && C.atoms_k == 1, "gemm_ws_kernel runs warp-specialized tiles");
  constexpr int BT = C.tile_m(), BW = C.tile_n(), S = C.stages;
  constexpr int kConsumers = C.consumer_threads();
  constexpr int kConsumerWarps = kConsumers / 32;
  constexpr int kAcc = BT / 2;
  constexpr int kABytes = BT * 64 * int(sizeof(T));
  using Stage = StageStorage<T, Tile, has_offset(F)>;
  using Storage = TransposedSharedStorage<T, Tile, is_codebook(F) && kSmemTable, has_offset(F)>;
  if constexpr (kUseWgmma && nibble::detail::kWgmmaCompiled) {
    extern __shared__ __align__(128) unsigned char smem_raw[];
    __shared__ alignas(8) std::uint64_t full_bar[S];
    __shared__ alignas(8) std::uint64_t empty_bar[S];
    __shared__ int s_is_last;
    Storage& smem =
        *reinterpret_cast<Storage*>(smem_raw + ((1024 - nibble::detail::smem_addr(smem_raw) % 1024) % 1024));
    const CtaWork work = cta_work(p, BT, BW);
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    if (tid == 0) {
      for (int s = 0; s < S; ++s) {
        nibble::detail::mbarrier_init(nibble::detail::smem_addr(&full_bar[s]), 1);
        nibble::detail::mbarrier_init(nibble::detail::smem_addr(&empty_bar[s]), kConsumers);
      }
      nibble::detail::fence_mbarrier_init();
    }
    const KernelDequantContext<F, T, kSmemTable, Tile> ctx =
        make_kernel_dequant_context<F, T, kSmemTable, Tile>(smem.table(), tid);
    __syncthreads();  // the barriers and the codebook table

    if (warp >= kConsumerWarps) {  // ---- producer warpgroup ----
      nibble::detail::setmaxnreg_dec<40>();
      if (warp != kConsumerWarps) return;
      if (lane == 0) nibble::detail::tma_prefetch_descriptor(&p.a_map);
      // Per k-tile: lane 0 the A tile; lanes 0 .. 7 one atom each (the tile's atom columns inside n_pad); lanes
      // 8 .. 15 the scale rows, 16 .. 23 the u4 zero rows, 24 .. 31 the affine offset rows (gpt <= 2 of each).
      const int cols = int(p.shape.n_pad - work.n0 < BW ? p.shape.n_pad - work.n0 : BW);  // (a multiple of 16)
      const int gpt = groups_per_tile<Tile>(p);
      const int atom_cols = cols / layout::kAtomN;
      std::uint32_t bytes = kABytes + atom_cols * layout::kAtomBytes + gpt * cols * int(sizeof(T));
      if constexpr (F == Format::kU4) bytes += gpt * cols;
      if constexpr (has_offset(F)) bytes += gpt * cols * int(sizeof(T));
      const int nb0 = work.n0 / layout::kAtomN;
      if (p.dependent_launch) {
        // The weights never depend on the previous kernel: the first S k-tiles' atoms go to L2 before the wait
        // (lane l: 128-byte line l % 4 of atom column l / 4, and of column l / 4 + 4), A only after it.
        const int kt_last = work.kt_end < work.kt_begin + S ? work.kt_end : work.kt_begin + S;
        for (int kt = work.kt_begin; kt < kt_last; ++kt)
          for (int nb = lane / 4; nb < atom_cols; nb += 8)
            nibble::detail::prefetch_l2(p.codes + layout::atom_offset(p.shape, nb0 + nb, kt) + (lane % 4) * 128);
        nibble::detail::griddepcontrol_wait();  // (A is the previous kernel's output)
      }
      for (int kt = work.kt_begin; kt < work.kt_end; ++kt) {
        const int i = kt - work.kt_begin, s = i % S;
        const std::uint32_t full = nibble::detail::smem_addr(&full_bar[s]);
        if (i >= S) nibble::detail::mbarrier_wait_parity(nibble::detail::smem_addr(&empty_bar[s]), ((i / S) - 1) & 1);
        Stage& st = smem.ring.stages[s];
        if (lane == 0) {
          nibble::detail::mbarrier_arrive_expect_tx(full, bytes);
          nibble::detail::tma_load_2d(nibble::detail::smem_addr(st.a), &p.a_map, kt * 64, work.m0, full);
        }
        __syncwarp();
        if (lane < atom_cols)
          nibble::detail::cp_async_bulk_g2s(nibble::detail::smem_addr(st.w[lane][0]),
                                            p.codes + layout::atom_offset(p.shape, nb0 + lane, kt), layout::kAtomBytes,
                                            full);
        const int row = lane % 8, kind = lane / 8;  // kind 1: scales, 2: zeros, 3: offsets
        if (kind > 0 && row < gpt) {
          const std::int64_t gg = (p.per_channel ? 0 : (std::int64_t(kt) * 64) >> p.group_log2) + row;
          const std::int64_t off = layout::scale_row_offset(p.shape, gg) + work.n0;
          if (kind == 1)
            nibble::detail::cp_async_bulk_g2s(nibble::detail::smem_addr(&st.s[row][0]), p.scales + off,
                                              cols * int(sizeof(T)), full);
          if constexpr (F == Format::kU4)
            if (kind == 2)
              nibble::detail::cp_async_bulk_g2s(nibble::detail::smem_addr(&st.z[row][0]), p.zeros + off, cols, full);
          if constexpr (has_offset(F))
            if (kind == 3)
              nibble::detail::cp_async_bulk_g2s(nibble::detail::smem_addr(&st.o[row][0]), p.offsets + off,
                                                cols * int(sizeof(T)), full);
        }
      }
      return;
    }

    // ---- consumer warpgroups ----
    nibble::detail::setmaxnreg_inc<232>();
    const int g = lane / 4, t = lane % 4;
    float rC[kAcc] = {};
    std::uint32_t rW[2][4] = {{0u, 0u, 0u, 0u}, {0u, 0u, 0u, 0u}};
    constexpr bool kHoist = WsHoist<Tile>::value;
    // (each thread orders its generic-proxy reads of a stage before the producer's async-proxy refill and arrives
    // itself; with one arrival per warp after __syncwarp, racecheck reported the lanes' atom / scale reads against
    // the bulk copies)
    auto release = [&](int stage) {
      nibble::detail::fence_proxy_async_shared();
      nibble::detail::mbarrier_arrive(nibble::detail::smem_addr(&empty_bar[stage]));
    };
    auto wait_slice = [&](int i) {  // stage i % S's data landed: the lane's atom slice of it
      nibble::detail::mbarrier_wait_parity(nibble::detail::smem_addr(&full_bar[i % S]), (i / S) & 1);
      return load_atom_lane(smem.ring.stages[i % S].atom(warp, 0), lane);
    };
    uint4 next = {};
    if constexpr (kHoist)
      if (work.kt_begin < work.kt_end) next = wait_slice(0);
    for (int kt = work.kt_begin; kt < work.kt_end; ++kt) {
      const int i = kt - work.kt_begin, s = i % S;
      const uint4 slice = kHoist ? next : wait_slice(i);
      const Stage& st = smem.ring.stages[s];
      const std::uint64_t desc0 = nibble::detail::make_smem_desc_sw128(st.a);
#pragma unroll
      for (int ks = 0; ks < 4; ++ks) {
        std::uint32_t(&a)[4] = rW[ks % 2];
        dequant_a_fragment<T, F, Tile>(p, st, warp * layout::kAtomN + g, ks, slice, ctx, a);
        nibble::detail::wgmma_fence();
        nibble::detail::wgmma_rs<BT, T>(rC, a, desc0 + std::uint64_t(ks * 32 / 16));
        nibble::detail::wgmma_commit();
        if constexpr (kHoist) {                        // while k-steps ks - 1 and ks run
          if (ks == 1 && i > 0) release((i - 1) % S);  // (its last wgmma retired at k-step 0's wait)
          if (ks == 3 && kt + 1 < work.kt_end) next = wait_slice(i + 1);
        }
        nibble::detail::wgmma_wait_holding<1>(rW[(ks + 1) % 2]);
        if constexpr (!kHoist)
          if (ks == 0 && i > 0) release((i - 1) % S);  // every wgmma of the previous stage has retired
      }
    }
    nibble::detail::wgmma_wait_holding<0>(rW[0]);
    nibble::detail::wgmma_wait_holding<0>(rW[1]);
    nibble::detail::griddepcontrol_launch_dependents();
    if (p.dependent_launch)
      nibble::detail::griddepcontrol_wait();  // (bias, the workspace, C: after the previous kernel)

    // Epilogue, consumers only (after the barrier every consumer is done with the ring, and every copy into it
    // has landed: the staging tile reuses it).
    const ConsumerBarrier<kConsumers> sync;
    if (p.splits > 1 && !split_k_reduce<kAcc, kConsumers>(
                            p, work.tile, work.split, BT * BW, rC,
                            [&](int r) { return work.m0 + transposed_token(r, t) < p.m; }, &s_is_last, sync))
      return;
    store_transposed_tile<BT, BW, C.c_stage_pitch(), kConsumers>(p, smem.ring.staged_c, rC, work.m0, work.n0, tid,
                                                                 sync);
  } else {
    // Launched only where the binary holds sm_90a device code (dispatch, prepare). Should a build claim that
    // wrongly (NIBBLE_SM90A without the 90a cubin), fail loudly rather than leave C unwritten.
    (void)p;
    __trap();
  }
}

/// What runs a tile of the WarpSpecializedKernel family (tile_registry.cuh).
template <>
struct FamilyKernel<WarpSpecializedKernel> {
  static constexpr bool kHasWgmmaBody = true;
  static constexpr int kVariants = 1;
  template <class T, Format F, class Tile, bool kUseWgmma, bool kSmemTable>
  static auto kernel(const KernelParams<T>&, int* variant) {
    *variant = 0;
    return &gemm_ws_kernel<T, F, Tile, kUseWgmma, kSmemTable>;
  }
};

NIBBLE_ARCH_NAMESPACE_END

}  // namespace nibble::gemm::detail
