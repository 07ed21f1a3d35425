// nibble/gemm/epilogue.cuh — the end of every GEMM kernel: fp32 accumulators (+ bias) converted to the output
// type and stored to gC, either straight from the fragments (mma.sync kernel) or from the transposed
// kernel's fp32 staging tile in shared memory (row-major pair stores).
#pragma once

#include "../thread/convert.cuh"
#include "params.cuh"

namespace nibble::gemm::detail {

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
    float* gC = static_cast<float*>(p.c) + off;
    if (both && p.pair_stores) {
      *reinterpret_cast<float2*>(gC) = make_float2(v0, v1);
    } else {
      gC[0] = v0;
      if (both) gC[1] = v1;
    }
  } else {
    T* gC = static_cast<T*>(p.c) + off;
    if (both && p.pair_stores) {
      *reinterpret_cast<vec2_t<T>*>(gC) = vec2_t<T>{from_float<T>(v0), from_float<T>(v1)};
    } else {
      gC[0] = from_float<T>(v0);
      if (both) gC[1] = from_float<T>(v1);
    }
  }
}

/// Stores C[row, col] = v + bias[col] (where col < N), converted to the output type; row < M is the caller's check.
template <class T>
NIBBLE_DEVICE void store_c_one(const KernelParams<T>& p, int row, int col, float v) {
  if (col >= p.n) return;
  if (p.bias != nullptr) v += to_float(p.bias[col]);
  const std::int64_t off = std::int64_t(row) * p.ldc + col;
  if (p.out_f32)
    static_cast<float*>(p.c)[off] = v;
  else
    static_cast<T*>(p.c)[off] = from_float<T>(v);
}

/// Writes a staged fp32 tile sC [tile_m tokens][pitch] (weight rows along a token's row) to C rows m0 ..,
/// columns n0 .., with pair stores; all kThreads threads of the CTA call it after a barrier.
template <int kTileM, int kTileN, int kPitch, int kThreads, class T>
NIBBLE_DEVICE void store_staged_tile(const KernelParams<T>& p, const float (*sC)[kPitch], int m0, int n0, int tid) {
  for (int idx = tid; idx < kTileM * (kTileN / 2); idx += kThreads) {
    const int tok = idx / (kTileN / 2), col = 2 * (idx % (kTileN / 2));
    if (m0 + tok < p.m) store_c_pair(p, m0 + tok, n0 + col, sC[tok][col], sC[tok][col + 1]);
  }
}

/// The token (tile-local) of accumulator r of a transposed kernel's lane (t = lane % 4): rC[4i + r'] is weight row
/// 16 warp + g + 8 (r' / 2), token 8i + 2t + r' % 2.
NIBBLE_HOST_DEVICE constexpr int transposed_token(int r, int t) { return 8 * (r / 4) + 2 * t + r % 2; }

/// The transposed kernels' last step: the kThreads threads that hold accumulators (warp w: weight rows 16w ..) stage
/// rC transposed in sC (which may alias the stage ring: `sync` first brings them together, done with it) and write
/// the tile row-major with store_staged_tile.
template <int kTileM, int kTileN, int kPitch, int kThreads, class T, class Sync>
NIBBLE_DEVICE void store_transposed_tile(const KernelParams<T>& p, float (*sC)[kPitch], const float (&rC)[kTileM / 2],
                                         int m0, int n0, int tid, Sync sync) {
  const int lane = tid % 32, warp = tid / 32, g = lane / 4, t = lane % 4;
  sync();
#pragma unroll
  for (int r = 0; r < kTileM / 2; ++r)
    sC[transposed_token(r, t)][warp * layout::kAtomN + g + 8 * ((r % 4) / 2)] = rC[r];
  sync();
  store_staged_tile<kTileM, kTileN, kPitch, kThreads>(p, sC, m0, n0, tid);
}

}  // namespace nibble::gemm::detail
