// nibble/quant/streaming.cuh — quantize a weight matrix that lives in HOST memory (pinned or pageable)
// through a small device staging buffer, so that peak device memory is the packed output + the staging
// buffer, never the full-precision matrix.
//
// Pipeline (whole rows per chunk; the staging buffer is split into two halves, A and B):
//
//   copy stream:    H2D chunk0->A   H2D chunk1->B   [wait q0] H2D chunk2->A   [wait q1] H2D chunk3->B ...
//   caller stream:       [wait] quantize A    [wait] quantize B       [wait] quantize A  ...  [double quant]
//
// The copy of chunk i+1 overlaps the quantization of chunk i; events order each half's reuse. The copy
// stream and the six events are created and destroyed here (no device memory is allocated). Double
// quantization needs the mean of ALL scales, so its second level runs once, after the last chunk, using the
// staging buffer as its workspace.
//
// Synchronization (why this entry point, unlike the others, blocks): before returning it waits for the copy
// stream, i.e. for every read of the host matrix, so the caller may free or overwrite host memory as soon as
// it returns (with pinned memory the copies are truly asynchronous; without the wait that would race). The
// quantization kernels may still be running on `stream` when it returns. With PAGEABLE host memory
// cudaMemcpy*Async is synchronous with respect to the host (the driver stages it through its own pinned
// buffer), so the host thread blocks in each copy call; the GPU still overlaps the copy of chunk i+1 with
// the already-enqueued quantization of chunk i, but pinned memory is faster.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "../device.cuh"
#include "../status.cuh"
#include "double_quant.cuh"
#include "kernels.cuh"
#include "packed_matrix.cuh"
#include "quantize.cuh"  // can_implement_quantize

namespace nibble {

/// Smallest staging buffer quantize_streaming accepts for rows of k elements of T: two halves of at least
/// one row each (each half rounded down to 256 bytes), and room for the double-quant workspace.
template <class T>
std::size_t min_streaming_staging_bytes(const PackedMatrix& m) {
  const std::size_t row = round_up(std::int64_t(m.k) * std::int64_t(sizeof(T)), 256);
  const std::size_t dq = m.dq.enabled ? double_quant_workspace_bytes(m.num_scales()) : 0;
  return std::max(2 * row, dq);
}

namespace detail {
/// Owns the copy stream and events of one quantize_streaming call; destroys them on every return path.
struct StreamingResources {
  cudaStream_t copy = nullptr;
  cudaEvent_t start = nullptr;
  cudaEvent_t copied[2] = {nullptr, nullptr};
  cudaEvent_t consumed[2] = {nullptr, nullptr};
  Status create() {
    NIBBLE_CUDA_TRY(cudaStreamCreateWithFlags(&copy, cudaStreamNonBlocking));
    for (cudaEvent_t* e : {&start, &copied[0], &copied[1], &consumed[0], &consumed[1]})
      NIBBLE_CUDA_TRY(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
    return Status::kSuccess;
  }
  ~StreamingResources() {
    if (copy != nullptr) (void)cudaStreamSynchronize(copy);  // never leave host reads pending
    for (cudaEvent_t e : {start, copied[0], copied[1], consumed[0], consumed[1]})
      if (e != nullptr) (void)cudaEventDestroy(e);
    if (copy != nullptr) (void)cudaStreamDestroy(copy);
  }
};
}  // namespace detail

/// Quantizes W = host_x [m.n, m.k] (HOST memory, pinned or pageable, row pitch ld elements) into the
/// device buffers of m, staging whole-row chunks through `staging` (device, 256-byte aligned,
/// `staging_bytes` >= min_streaming_staging_bytes<T>(m)). Output identical to quantize() on the same data.
/// Blocks until all host reads are done (see the file comment); kErrorWorkspaceTooSmall if one row does not
/// fit half the staging buffer. `options` as for quantize() (quant/packed_matrix.cuh: QuantizeOptions).
template <class T>
Status quantize_streaming(const T* host_x, std::int64_t ld, const PackedMatrix& m, const QuantizeOptions& options,
                          void* staging, std::size_t staging_bytes, cudaStream_t stream) {
  NIBBLE_RETURN_IF_ERROR(can_implement_quantize(host_x, ld, m, options));
  if (staging == nullptr) return Status::kErrorNullPointer;
  if (!detail::is_aligned(staging, kPackedAlignment)) return Status::kErrorMisalignedPointer;
  const std::size_t row_bytes = std::size_t(m.k) * sizeof(T);
  const std::size_t half = staging_bytes / 2 / kPackedAlignment * kPackedAlignment;
  const std::int64_t rows_per_chunk = std::int64_t(half / row_bytes);
  if (rows_per_chunk == 0) return Status::kErrorWorkspaceTooSmall;
  if (m.dq.enabled && double_quant_workspace_bytes(m.num_scales()) > staging_bytes)
    return Status::kErrorWorkspaceTooSmall;
  NIBBLE_RETURN_IF_ERROR(check_device());

  detail::StreamingResources res;
  NIBBLE_RETURN_IF_ERROR(res.create());
  NIBBLE_CUDA_TRY(cudaEventRecord(res.start, stream));  // staging may still be in use by earlier work
  NIBBLE_CUDA_TRY(cudaStreamWaitEvent(res.copy, res.start, 0));
  T* sHalf[2] = {static_cast<T*>(staging),
                 reinterpret_cast<T*>(static_cast<std::uint8_t*>(staging) + half)};  // gStaging halves
  const std::int64_t groups = m.groups_per_row();
  const std::size_t scale_bytes = std::size_t(size_of(m.scale_type));
  std::int64_t chunk = 0;
  for (std::int64_t r0 = 0; r0 < m.n; r0 += rows_per_chunk, ++chunk) {
    const int buf = int(chunk % 2);
    const std::int64_t rows = std::min(rows_per_chunk, m.n - r0);
    if (chunk >= 2) NIBBLE_CUDA_TRY(cudaStreamWaitEvent(res.copy, res.consumed[buf], 0));
    NIBBLE_CUDA_TRY(cudaMemcpy2DAsync(sHalf[buf], row_bytes, host_x + r0 * ld, std::size_t(ld) * sizeof(T), row_bytes,
                                      std::size_t(rows), cudaMemcpyHostToDevice, res.copy));
    NIBBLE_CUDA_TRY(cudaEventRecord(res.copied[buf], res.copy));
    NIBBLE_CUDA_TRY(cudaStreamWaitEvent(stream, res.copied[buf], 0));
    // The rows [r0, r0 + rows) of m, first level only (double quantization runs once, below).
    PackedMatrix part = m;
    part.n = rows;
    part.codes = m.codes + r0 * m.ld_codes;
    part.scales = static_cast<std::uint8_t*>(m.scales) + std::size_t(r0 * groups) * scale_bytes;
    if (m.zeros != nullptr) part.zeros = m.zeros + r0 * groups;
    if (has_offset(m.format))
      part.offsets = static_cast<std::uint8_t*>(m.offsets) + std::size_t(r0 * groups) * scale_bytes;
    part.dq = DoubleQuantScales{};
    NIBBLE_RETURN_IF_ERROR(detail::launch_quantize<T>(sHalf[buf], m.k, part, options.bnb_compatible, stream));
    NIBBLE_CUDA_TRY(cudaEventRecord(res.consumed[buf], stream));
  }
  if (m.dq.enabled) {
    // Every chunk's kernel precedes this on `stream`, so the staging buffer is free to hold the workspace.
    NIBBLE_RETURN_IF_ERROR(detail::launch_double_quantize(static_cast<const float*>(m.scales), m.num_scales(), m.dq,
                                                          staging, options, stream));
  }
  NIBBLE_CUDA_TRY(cudaStreamSynchronize(res.copy));
  return Status::kSuccess;
}

/// quantize_streaming() with the default QuantizeOptions (nibble's own rule).
template <class T>
Status quantize_streaming(const T* host_x, std::int64_t ld, const PackedMatrix& m, void* staging,
                          std::size_t staging_bytes, cudaStream_t stream) {
  return quantize_streaming(host_x, ld, m, QuantizeOptions{}, staging, staging_bytes, stream);
}

}  // namespace nibble
