// nibble/import/awq.cuh — AutoAWQ "GEMM" checkpoints (version gemm, zero_point true) into nibble's kU4.
//
// What the checkpoint holds (AutoAWQ awq/modules/linear/gemm.py, WQLinear_GEMM.from_linear), for
// K = in_features, N = out_features, G = K / group_size:
//
//   tensor   dtype / shape      meaning
//   -------  -----------------  ----------------------------------------------------------------------------
//   qweight  int32 [K, N/8]     word (k, c), nibble i (lowest first) = code of weight (n = 8c + kAwqOrder[i], k)
//   qzeros   int32 [G, N/8]     word (j, c), nibble i = zero point of group j, column 8c + kAwqOrder[i]
//   scales   fp16 [G, N]        scale of group j, column n
//
//   weight (n, k) = (q - z) * scales[k / g, n]     (AutoAWQ awq/utils/packing_utils.py, dequantize_gemm)
//
// kAwqOrder = [0, 2, 4, 6, 1, 3, 5, 7] is the order from_linear packs the eight columns in (its
// `order_map`; GPTQModel calls the same tuple AWQ_ORDER). The zero is stored as is (no GPTQ v1 "-1").
// Every nibble value is a valid code and zero, so no data is refused. Exact: (q - z) * s is exact in fp32.
// Not supported (kErrorUnsupportedFormat): zero_point false (no qzeros), and the GEMV / Marlin variants,
// whose packing differs.
//
// Paths: import_awq_host (host buffers) and import_awq (device buffers, one kernel on the caller's stream).
// Both run the same decoding (awq_codes_chunk, awq_group) and the same checks (check_awq_import); the
// kernel gives the CPU path's bytes. Codes are a transpose (qweight is K-major, nibble's codes N-major):
// one work item reads 32 rows of one word column (coalesced along N) and writes 16 bytes into each of its
// eight code rows (one vector store each), so neither side needs shared memory.
#pragma once

#include "common.cuh"

namespace nibble {

/// Nibble i of an AWQ word holds column 8c + kAwqOrder[i] of its group of eight.
inline constexpr int kAwqOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};

namespace detail {
/// The nibble of an AWQ word that holds column 8c + j: kAwqOrder's inverse, {0, 4, 1, 5, 2, 6, 3, 7}
/// (order[i] = 2 * (i % 4) + i / 4, so i = j / 2 + 4 * (j % 2)); arithmetic so device code needs no table.
NIBBLE_HOST_DEVICE constexpr int awq_nibble_of_column(int j) { return (j >> 1) | ((j & 1) << 2); }
constexpr bool awq_order_inverted() {
  for (int i = 0; i < 8; ++i)
    if (awq_nibble_of_column(kAwqOrder[i]) != i) return false;
  return true;
}
static_assert(awq_order_inverted(), "awq_nibble_of_column inverts kAwqOrder");
}  // namespace detail

/// The quant_config fields the import depends on.
struct AwqConfig {
  int bits = 4;            ///< w_bit; only 4
  int group_size = 128;    ///< q_group_size: 32, 64, 128, 256, or -1 / K for one group per row
  bool zero_point = true;  ///< only true (the GEMM version's asymmetric quantization)
};

/// One AWQ linear layer (host memory on the CPU path, device memory on the GPU path).
struct AwqTensors {
  std::int64_t k = 0;                     ///< in_features, even
  std::int64_t n = 0;                     ///< out_features, a multiple of 8
  const std::int32_t* qweight = nullptr;  ///< [k, n/8]
  const std::int32_t* qzeros = nullptr;   ///< [G, n/8]
  const void* scales = nullptr;           ///< [G, n] of scale_type
  DType scale_type = DType::kF16;
};

/// Parameters of the PackedMatrix import_awq_host writes: kU4, the checkpoint's group and scale type.
inline Status awq_import_params(const AwqConfig& cfg, const AwqTensors& t, QuantParams* out) {
  if (out == nullptr) return Status::kErrorNullPointer;
  if (cfg.bits != 4 || !cfg.zero_point || !detail::is_valid(t.scale_type)) return Status::kErrorUnsupportedFormat;
  if (t.k <= 0 || t.n <= 0 || t.k % 2 != 0 || t.n % 8 != 0) return Status::kErrorInvalidShape;
  QuantParams p;
  p.format = Format::kU4;
  p.scale_type = t.scale_type;
  NIBBLE_RETURN_IF_ERROR(detail::import_group_size(cfg.group_size, t.k, &p.group_size));
  NIBBLE_RETURN_IF_ERROR(packed_bytes(t.n, t.k, p).status);
  *out = p;
  return Status::kSuccess;
}

namespace detail {

/// The checks both paths run before writing: metadata and shapes (awq_import_params), pointers, the
/// output view. Fills *p.
inline Status check_awq_import(const AwqConfig& cfg, const AwqTensors& t, const PackedMatrix& out, QuantParams* p) {
  NIBBLE_RETURN_IF_ERROR(awq_import_params(cfg, t, p));
  if (t.qweight == nullptr || t.qzeros == nullptr || t.scales == nullptr) return Status::kErrorNullPointer;
  if (!is_aligned(t.qweight, 4) || !is_aligned(t.qzeros, 4) ||
      !is_aligned(t.scales, std::size_t(size_of(t.scale_type))))
    return Status::kErrorMisalignedPointer;
  return check_import_output(out, t.n, t.k, *p);
}

/// Transposes an 8 x 8 block of nibbles: w[i] is qweight word (k0 + i, c); out[j] receives the codes of
/// column 8c + j at k0 .. k0 + 7 in nibble's order (k0 + e in nibble e, so even k in the low nibble).
NIBBLE_HOST_DEVICE void awq_transpose8(const std::uint32_t (&w)[8], std::uint32_t (&out)[8]) {
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    std::uint32_t v = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) v |= nibble_of(w[i], awq_nibble_of_column(j)) << (4 * i);
    out[j] = v;
  }
}

/// K rows of one codes work item: 4 transposed blocks, 16 code bytes (one vector store) per column. 64 rows
/// (whole 32-byte sectors) took 255 registers and spilled on sm_90a; 32 rows take 80 (sm_90a, CUDA 13.0).
inline constexpr int kAwqChunkK = 32;

/// Codes of word column c (columns 8c .. 8c + 7) for rows k0 .. k0 + kAwqChunkK - 1 (fewer at the end of K).
NIBBLE_HOST_DEVICE void awq_codes_chunk(const AwqTensors& t, std::int64_t c, std::int64_t k0, const PackedMatrix& out) {
  const std::int64_t words = t.n / 8;
  const std::int32_t* gColumn = t.qweight + k0 * words + c;  // qweight word (k0, c); row kk: + (kk - k0) * words
  std::uint32_t rCodes[8][kAwqChunkK / 8] = {};              // rCodes: (column j, block b) words of code bytes
  // Block b's words enter at the end and move down each step (constant indices: registers, not local memory,
  // with the loop kept rolled; unrolled, the 32 loads in flight took 155 registers).
#pragma unroll 1
  for (int b = 0; b < kAwqChunkK / 8; ++b) {
    std::uint32_t w[8], col[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      w[i] = k0 + 8 * b + i < t.k ? word_at(gColumn, 0) : 0u;  // past K: not stored
      gColumn += words;
    }
    awq_transpose8(w, col);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
#pragma unroll
      for (int e = 0; e + 1 < kAwqChunkK / 8; ++e) rCodes[j][e] = rCodes[j][e + 1];
      rCodes[j][kAwqChunkK / 8 - 1] = col[j];
    }
  }
  const std::int64_t left = (t.k - k0) / 2;
  const int bytes = int(left < kAwqChunkK / 2 ? left : kAwqChunkK / 2);
#pragma unroll
  for (int j = 0; j < 8; ++j) store_code_bytes(out.codes + (8 * c + j) * out.ld_codes + k0 / 2, rCodes[j], bytes);
}

/// Zero points and scales of group j for word column c (columns 8c .. 8c + 7).
NIBBLE_HOST_DEVICE void awq_group(const AwqTensors& t, std::int64_t j, std::int64_t c, const PackedMatrix& out) {
  const std::int64_t groups = out.groups_per_row();
  const std::uint32_t zw = word_at(t.qzeros, j * (t.n / 8) + c);
#pragma unroll
  for (int e = 0; e < 8; ++e) {
    const std::int64_t col = 8 * c + e;
    out.zeros[col * groups + j] = std::uint8_t(nibble_of(zw, awq_nibble_of_column(e)));
    copy_scale_bits(t.scales, j * t.n + col, out.scales, col * groups + j, t.scale_type);
  }
}

/// The work items of an import: one per (word column, kAwqChunkK rows of K) for the codes, then one per
/// (group, word column) for the zeros and scales. Consecutive items take consecutive word columns (codes:
/// coalesced qweight reads) or consecutive groups (zeros / scales: coalesced writes along each output row).
/// The CPU path runs them in order, the kernel one per thread.
NIBBLE_HOST_DEVICE std::int64_t awq_code_items(const AwqTensors& t) {
  return (t.k + kAwqChunkK - 1) / kAwqChunkK * (t.n / 8);
}
NIBBLE_HOST_DEVICE std::int64_t awq_items(const AwqTensors& t, const PackedMatrix& out) {
  return awq_code_items(t) + out.groups_per_row() * (t.n / 8);
}
NIBBLE_HOST_DEVICE void awq_item(const AwqTensors& t, const PackedMatrix& out, std::int64_t i) {
  const std::int64_t words = t.n / 8, code_items = awq_code_items(t);
  if (i < code_items) {
    awq_codes_chunk(t, i % words, i / words * kAwqChunkK, out);
  } else {
    const std::int64_t g = i - code_items, groups = out.groups_per_row();
    awq_group(t, g % groups, g / groups, out);
  }
}

template <int kThreads>  // a template: defined in a header without breaking the one-definition rule
__global__ void __launch_bounds__(kThreads) import_awq_kernel(AwqTensors t, PackedMatrix out) {
  const std::int64_t items = awq_items(t, out);
  for (std::int64_t i = import_item(); i < items; i += import_stride()) awq_item(t, out, i);
}

}  // namespace detail

/// CPU path: imports t (host) into `out` (host buffers carved with awq_import_params' parameters).
inline Status import_awq_host(const AwqConfig& cfg, const AwqTensors& t, const PackedMatrix& out) {
  QuantParams p;
  NIBBLE_RETURN_IF_ERROR(detail::check_awq_import(cfg, t, out, &p));
  const std::int64_t items = detail::awq_items(t, out);
  for (std::int64_t i = 0; i < items; ++i) detail::awq_item(t, out, i);
  return Status::kSuccess;
}

/// GPU path: imports t (device buffers) into `out` (device buffers carved with awq_import_params'
/// parameters) with one kernel on `stream`: no allocation, no synchronization, no host read, so it can be
/// captured in a CUDA graph. Bit-identical to import_awq_host; refuses exactly what it refuses, with the
/// same Status (every nibble is a valid code and zero point, so there are no data errors and no error
/// word). About 2 bytes moved per weight.
inline Status import_awq(const AwqConfig& cfg, const AwqTensors& t, const PackedMatrix& out, cudaStream_t stream) {
  QuantParams p;
  NIBBLE_RETURN_IF_ERROR(detail::check_awq_import(cfg, t, out, &p));
  NIBBLE_RETURN_IF_ERROR(check_device());
  const std::int64_t items = detail::awq_items(t, out);
  detail::import_awq_kernel<detail::kImportThreads>
      <<<detail::import_blocks(items), detail::kImportThreads, 0, stream>>>(t, out);
  NIBBLE_CHECK_LAUNCH();
  return Status::kSuccess;
}

}  // namespace nibble
