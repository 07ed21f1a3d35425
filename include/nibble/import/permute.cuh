// nibble/import/permute.cuh — applies an importer's act-order permutation to activations:
//   out[r, p] = in[r, perm[p]]   for an [M, K] row-major matrix (fp16 or bf16).
// An act-order import stores weight column perm[p] of the checkpoint as its column p, so
// W x = W_import (x permuted): permute the activations once per call, before the GEMM.
#pragma once

#include <algorithm>
#include <vector>

#include "common.cuh"

namespace nibble {

namespace detail {

template <class T>
inline Status check_permute_args(const T* in, std::int64_t ld_in, const T* out, std::int64_t ld_out, std::int64_t m,
                                 std::int64_t k, const std::int32_t* perm) {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>, "activations are fp16 or bf16");
  if (m <= 0 || k <= 0) return Status::kErrorInvalidShape;
  if (perm == nullptr) return Status::kErrorNullPointer;
  if (!is_aligned(perm, 4)) return Status::kErrorMisalignedPointer;
  NIBBLE_RETURN_IF_ERROR(validate_dense(in, m, k, ld_in, sizeof(T)));
  NIBBLE_RETURN_IF_ERROR(validate_dense(out, m, k, ld_out, sizeof(T)));
  // A gather cannot run in place; refuse any overlap of the two row ranges' spans.
  const auto* a = reinterpret_cast<const std::uint8_t*>(in);
  const auto* b = reinterpret_cast<const std::uint8_t*>(out);
  const std::size_t span_in = std::size_t(((m - 1) * ld_in + k) * std::int64_t(sizeof(T)));
  const std::size_t span_out = std::size_t(((m - 1) * ld_out + k) * std::int64_t(sizeof(T)));
  if (a < b + span_out && b < a + span_in) return Status::kErrorInvalidArgument;
  return Status::kSuccess;
}

inline constexpr int kPermuteThreads = 256;

/// Block (bx, by): columns 256*bx.. of rows by, by + gridDim.y, ...; writes coalesced, reads gathered
/// within one row (the row stays in L1/L2). An entry outside [0, K) writes 0 instead of reading.
template <class T>
__global__ void __launch_bounds__(kPermuteThreads)
    permute_columns_kernel(const T* __restrict__ gIn, std::int64_t ld_in, T* __restrict__ gOut, std::int64_t ld_out,
                           std::int64_t m, std::int64_t k, const std::int32_t* __restrict__ gPerm) {
  const std::int64_t p = std::int64_t(blockIdx.x) * kPermuteThreads + threadIdx.x;
  if (p >= k) return;
  const std::int64_t src = gPerm[p];
  const bool ok = src >= 0 && src < k;
  for (std::int64_t r = blockIdx.y; r < m; r += gridDim.y)
    gOut[r * ld_out + p] = ok ? gIn[r * ld_in + src] : from_float<T>(0.0f);
}

}  // namespace detail

/// CPU path: out[r, p] = in[r, perm[p]] (host buffers). perm must be a permutation of 0..k-1
/// (kErrorInvalidArgument otherwise); in and out must not overlap (kErrorInvalidArgument).
template <class T>
Status permute_columns_host(const T* in, std::int64_t ld_in, T* out, std::int64_t ld_out, std::int64_t m,
                            std::int64_t k, const std::int32_t* perm) {
  NIBBLE_RETURN_IF_ERROR(detail::check_permute_args(in, ld_in, out, ld_out, m, k, perm));
  std::vector<bool> seen(std::size_t(k), false);
  for (std::int64_t p = 0; p < k; ++p) {
    if (perm[p] < 0 || perm[p] >= k || seen[std::size_t(perm[p])]) return Status::kErrorInvalidArgument;
    seen[std::size_t(perm[p])] = true;
  }
  for (std::int64_t r = 0; r < m; ++r)
    for (std::int64_t p = 0; p < k; ++p) out[r * ld_out + p] = in[r * ld_in + perm[p]];
  return Status::kSuccess;
}

/// GPU path of permute_columns_host (device buffers, the caller's stream, no allocation or sync). The
/// permutation is not validated on the device (it would need a host read): an entry outside [0, K)
/// writes 0; a repeated entry duplicates a column. Use the perm an importer produced.
template <class T>
Status permute_columns(const T* in, std::int64_t ld_in, T* out, std::int64_t ld_out, std::int64_t m, std::int64_t k,
                       const std::int32_t* perm, cudaStream_t stream) {
  NIBBLE_RETURN_IF_ERROR(detail::check_permute_args(in, ld_in, out, ld_out, m, k, perm));
  const std::int64_t blocks_k = (k + detail::kPermuteThreads - 1) / detail::kPermuteThreads;
  if (blocks_k > std::int64_t(std::numeric_limits<int>::max())) return Status::kErrorSizeOverflow;
  NIBBLE_RETURN_IF_ERROR(check_device());
  const dim3 grid{unsigned(blocks_k), unsigned(std::min<std::int64_t>(m, 65535)), 1u};
  detail::permute_columns_kernel<T><<<grid, detail::kPermuteThreads, 0, stream>>>(in, ld_in, out, ld_out, m, k, perm);
  NIBBLE_CHECK_LAUNCH();
  return Status::kSuccess;
}

}  // namespace nibble
