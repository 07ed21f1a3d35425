// nibble/gemm/kernel.cuh — the lazy-dequantizing tensor-core GEMM kernel:
//   C[M, N] = A[M, K] * dequant(W)^T (+ bias), A/C row-major with leading dimensions, W in the GEMM layout.
//
// One CTA computes a tile_m x tile_n block of C over a contiguous range of k-tiles (its split of K).
// Mainloop: a `stages`-deep cp.async ring of {A tile, weight atoms, scales, zeros}; every warp reads its
// weight atoms with one 16-byte shared load per lane, dequantizes them in registers right before
// mma.m16n8k16 (never writing a dequantized tile anywhere) and accumulates in fp32.
// Split-K is deterministic: every split stores its fp32 partial tile in the workspace, and the CTA that
// arrives last at the tile's counter sums the partials in split order 0, 1, ... (the same order whichever
// CTA is last), writes C and resets the counter to zero, so the workspace is left reusable.
#pragma once

#include "policy.cuh"
#include "warp_mma.cuh"

namespace nibble::gemm {

/// Everything the kernel reads; built and validated by the host API (gemm.cuh).
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

template <class T, Format F, class Tile>
__global__ void __launch_bounds__(Tile::kConfig.threads()) gemm_kernel(const KernelParams<T> p) {
  constexpr TileConfig C = Tile::kConfig;
  constexpr int BM = C.tile_m(), BN = C.tile_n(), BK = C.tile_k(), S = C.stages;
  constexpr int kThreads = C.threads();
  constexpr int kChunksK = BK / 8;  // 16-byte chunks per A row
  static_assert(kChunksK >= 8, "the A swizzle needs at least 8 chunks per row");
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int s_is_last;

  const int tile = blockIdx.x / p.splits;
  const int split = blockIdx.x % p.splits;
  const int m0 = (tile % p.tiles_m) * BM;  // m fastest: CTAs sharing a weight tile run together (L2 reuse)
  const int n0 = (tile / p.tiles_m) * BN;
  const int kt_begin = split * p.k_tiles_per_split;
  const int kt_end = min(p.k_tiles, kt_begin + p.k_tiles_per_split);

  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp % C.warps_m, wn = warp / C.warps_m;
  const std::int64_t n_atoms = p.shape.n_pad / layout::kAtomN;
  const std::int64_t k_atoms = p.shape.k_atoms();
  // Group rows inside one k-tile: tile_k / group when groups are shorter than a k-tile, else 1 (tile_k and
  // the power-of-two group sizes divide each other; per-channel has a single row).
  const bool multi_group = !p.per_channel && (BK >> p.group_log2) > 1;
  const int groups_per_tile = multi_group ? (BK >> p.group_log2) : 1;

  auto load_stage = [&](int s, int kt) {
    unsigned char* base = smem + s * C.stage_bytes();
    const bool valid = kt < kt_end;
    // A: BM rows x kChunksK chunks, chunk c of row r stored at c ^ (r % 8) (conflict-free ldmatrix).
    T* sA = reinterpret_cast<T*>(base);
#pragma unroll
    for (int c = tid; c < BM * kChunksK; c += kThreads) {
      const int r = c / kChunksK, ch = c % kChunksK;
      const int gk = kt * BK + ch * 8;
      const bool pred = valid && (m0 + r) < p.m && gk < p.k;
      const T* src = pred ? p.a + std::int64_t(m0 + r) * p.lda + gk : p.a;
      detail::cp_async_16(sA + (r * kChunksK + (ch ^ (r % 8))) * 8, src, pred);
    }
    // Weights: for each of the tile's atom columns, atoms_k consecutive atoms (contiguous in global).
    unsigned char* sB = base + C.a_stage_bytes();
#pragma unroll
    for (int c = tid; c < C.b_stage_bytes() / 16; c += kThreads) {
      const int nb = c / (C.atoms_k * 32), kb = (c / 32) % C.atoms_k;
      const std::int64_t gnb = n0 / layout::kAtomN + nb, gkb = std::int64_t(kt) * C.atoms_k + kb;
      const bool pred = valid && gnb < n_atoms && gkb < k_atoms;
      const unsigned char* src =
          pred ? p.codes + (gnb * k_atoms + gkb) * layout::kAtomBytes + (c % 32) * 16 : p.codes;
      // Weights are read exactly once and would deserve an L2 evict-first hint (cp.async ... L2::cache_hint),
      // but ptxas 13.0 miscompiles that form inside this loop on sm_90 (the cache-policy descriptor lands in
      // uniform registers nothing writes: illegal instruction; seen with a separate createpolicy and with
      // one inside the same asm). Plain cp.async until a fixed ptxas is the minimum we support.
      detail::cp_async_16(sB + c * 16, src, pred);
    }
    // Scales (and zeros): groups_per_tile rows of BN values.
    const std::int64_t g_first = p.per_channel ? 0 : (std::int64_t(kt) * BK) >> p.group_log2;
    T* sS = reinterpret_cast<T*>(base + C.a_stage_bytes() + C.b_stage_bytes());
    for (int c = tid; c < groups_per_tile * (BN / 8); c += kThreads) {
      const int gi = c / (BN / 8), ch = c % (BN / 8);
      const std::int64_t gg = g_first + gi, gn = n0 + ch * 8;
      const bool pred = valid && gg < p.shape.groups && gn < p.shape.n_pad;
      detail::cp_async_16(sS + gi * BN + ch * 8, pred ? p.scales + gg * p.shape.n_pad + gn : p.scales, pred);
    }
    if constexpr (F == Format::kU4) {
      unsigned char* sZ = base + C.a_stage_bytes() + C.b_stage_bytes() + C.s_stage_bytes();
      for (int c = tid; c < groups_per_tile * (BN / 16); c += kThreads) {
        const int gi = c / (BN / 16), ch = c % (BN / 16);
        const std::int64_t gg = g_first + gi, gn = n0 + ch * 16;
        const bool pred = valid && gg < p.shape.groups && gn < p.shape.n_pad;
        detail::cp_async_16(sZ + gi * BN + ch * 16, pred ? p.zeros + gg * p.shape.n_pad + gn : p.zeros, pred);
      }
    }
  };

  float acc[C.warp_m16][C.warp_n16][2][4];
#pragma unroll
  for (int m = 0; m < C.warp_m16; ++m)
#pragma unroll
    for (int nb = 0; nb < C.warp_n16; ++nb)
#pragma unroll
      for (int h = 0; h < 2; ++h)
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[m][nb][h][r] = 0.0f;

  const DequantContext<F, T> ctx = DequantContext<F, T>::make();

  auto compute_stage = [&](int s) {
    const unsigned char* base = smem + s * C.stage_bytes();
    const T* sA = reinterpret_cast<const T*>(base);
    const unsigned char* sB = base + C.a_stage_bytes();
    const T* sS = reinterpret_cast<const T*>(base + C.a_stage_bytes() + C.b_stage_bytes());
    const unsigned char* sZ = base + C.a_stage_bytes() + C.b_stage_bytes() + C.s_stage_bytes();
#pragma unroll
    for (int kb = 0; kb < C.atoms_k; ++kb) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int kl = kb * layout::kAtomK + j * 16;
        const int gi = multi_group ? (kl >> p.group_log2) : 0;
        std::uint32_t a[C.warp_m16][4];
#pragma unroll
        for (int m = 0; m < C.warp_m16; ++m) {
          const int row = (wm * C.warp_m16 + m) * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
          const int chunk = kl / 8 + lane / 16;
          detail::ldmatrix_x4(a[m], sA + (row * kChunksK + (chunk ^ (row % 8))) * 8);
        }
#pragma unroll
        for (int nb = 0; nb < C.warp_n16; ++nb) {
          const int nl = (wn * C.warp_n16 + nb) * layout::kAtomN + lane / 4;
          ColumnPairQuant<T> q{sS[gi * BN + nl], sS[gi * BN + nl + 8]};
          if constexpr (F == Format::kU4) {
            q.zero_lo = sZ[gi * BN + nl];
            q.zero_hi = sZ[gi * BN + nl + 8];
          }
          std::uint32_t b[4];
          // One 32-bit word per lane per k-step (a warp reads 128 contiguous bytes: conflict free); loading
          // the lane's whole 16-byte slice at once would keep 4x the registers live across the k-steps.
          const std::uint32_t word = load_atom_word(
              sB + ((wn * C.warp_n16 + nb) * C.atoms_k + kb) * layout::kAtomBytes, lane, j);
          dequant_fragments<T, F>(word, q, ctx, b);
#pragma unroll
          for (int m = 0; m < C.warp_m16; ++m) mma_atom_step<T>(acc[m][nb], a[m], b);
        }
      }
    }
  };

  // Mainloop: a ring of S stages, S - 1 k-tiles loaded ahead.
#pragma unroll
  for (int s = 0; s < S - 1; ++s) {
    load_stage(s, kt_begin + s);
    detail::cp_async_commit();
  }
  for (int kt = kt_begin; kt < kt_end; ++kt) {
    const int i = kt - kt_begin;
    detail::cp_async_wait<S - 2>();
    __syncthreads();  // stage i is visible to all; every warp is done with stage i - 1
    load_stage((i + S - 1) % S, kt + S - 1);
    detail::cp_async_commit();
    compute_stage(i % S);
  }
  detail::cp_async_wait<0>();

  // Epilogue.
  constexpr int kRegs = C.warp_m16 * C.warp_n16 * 2 * 4;
  float* flat = &acc[0][0][0][0];
  // Register r of the flat accumulator holds a value of C row row_of(r); rows >= M never move through the
  // split-K workspace (at M = 1 that is 1/16 of the decode tile's partial-sum traffic).
  auto row_of = [&](int r) {
    const int m = r / (C.warp_n16 * 8), i = r % 4;
    return m0 + (wm * C.warp_m16 + m) * 16 + lane / 4 + 8 * (i / 2);
  };
  if (p.splits > 1) {
    float* mine = p.partials + (std::int64_t(tile) * p.splits + split) * (BM * BN);
#pragma unroll
    for (int r = 0; r < kRegs; ++r)
      if (row_of(r) < p.m) __stcg(mine + r * kThreads + tid, flat[r]);
    __threadfence();
    __syncthreads();
    if (tid == 0) s_is_last = atomicAdd(&p.counters[tile], 1u) == unsigned(p.splits - 1);
    __syncthreads();
    if (!s_is_last) return;
    __threadfence();
    // Sum in fixed split order 0, 1, ... (own partial re-read too), in place: no second register tile.
    for (int s = 0; s < p.splits; ++s) {
      const float* part = p.partials + (std::int64_t(tile) * p.splits + s) * (BM * BN);
#pragma unroll
      for (int r = 0; r < kRegs; ++r) {
        if (row_of(r) >= p.m) continue;
        const float v = __ldcg(part + r * kThreads + tid);
        flat[r] = s == 0 ? v : flat[r] + v;
      }
    }
    if (tid == 0) p.counters[tile] = 0u;  // leave the workspace as we found it
  }

#pragma unroll
  for (int m = 0; m < C.warp_m16; ++m) {
#pragma unroll
    for (int nb = 0; nb < C.warp_n16; ++nb) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int col = n0 + (wn * C.warp_n16 + nb) * layout::kAtomN + h * 8 + (lane % 4) * 2;
        float b0 = 0.0f, b1 = 0.0f;
        if (p.bias != nullptr) {
          if (col < p.n) b0 = to_float(p.bias[col]);
          if (col + 1 < p.n) b1 = to_float(p.bias[col + 1]);
        }
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int row = m0 + (wm * C.warp_m16 + m) * 16 + lane / 4 + 8 * half;
          if (row >= p.m || col >= p.n) continue;
          const float v0 = acc[m][nb][h][2 * half] + b0, v1 = acc[m][nb][h][2 * half + 1] + b1;
          const std::int64_t off = std::int64_t(row) * p.ldc + col;
          const bool both = col + 1 < p.n;
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
      }
    }
  }
}

}  // namespace nibble::gemm
