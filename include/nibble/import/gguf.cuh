// nibble/import/gguf.cuh — GGUF / ggml Q4_0 tensors into nibble's kS4 with groups of 32 and fp16 scales.
//
// What the file holds (ggml/src/ggml-common.h: block_q4_0; ggml/src/ggml-quants.c: quantize_row_q4_0_ref,
// dequantize_row_q4_0; gguf-py gguf/quants.py: Q4_0.quantize_blocks / dequantize_blocks), for a 2-D tensor
// with ne = [K, N] (K fastest), 32-element blocks along K, 18 bytes each, rows back to back:
//
//   bytes 0-1   d, fp16 little-endian (may be negative: ggml takes d = max / -8 of the signed extreme)
//   bytes 2-17  qs[16]: byte j holds element j in its LOW nibble and element j + 16 in its HIGH nibble
//
//   weight = (nibble - 8) * d
// nibble: the s4 nibble of (u - 8) is u XOR 8, the scale is d as is (kF16, group 32). Exact. No data
// is refused (every nibble and every fp16 d, NaN included, is copied as it is).
#pragma once

#include "common.cuh"

namespace nibble {

inline constexpr int kGgufQ4_0Block = 32;       ///< QK4_0
inline constexpr int kGgufQ4_0BlockBytes = 18;  ///< sizeof(block_q4_0) = 2 + 32 / 2

/// Parameters of the PackedMatrix import_gguf_q4_0_host writes: kS4, group 32, fp16 scales.
inline Status gguf_q4_0_import_params(std::int64_t n, std::int64_t k, QuantParams* out) {
  if (out == nullptr) return Status::kErrorNullPointer;
  if (n <= 0 || k <= 0) return Status::kErrorInvalidShape;
  if (k % kGgufQ4_0Block != 0) return Status::kErrorGroupSize;
  QuantParams p;
  p.format = Format::kS4;
  p.group_size = kGgufQ4_0Block;
  p.scale_type = DType::kF16;
  NIBBLE_RETURN_IF_ERROR(packed_bytes(n, k, p).status);
  *out = p;
  return Status::kSuccess;
}

/// Bytes of a Q4_0 tensor of N rows of K elements (0 if the shape is invalid or overflows).
inline std::size_t gguf_q4_0_bytes(std::int64_t n, std::int64_t k) {
  QuantParams p;
  std::int64_t blocks = 0, bytes = 0;
  if (gguf_q4_0_import_params(n, k, &p) != Status::kSuccess || !detail::checked_mul(n, k / kGgufQ4_0Block, &blocks) ||
      !detail::checked_mul(blocks, kGgufQ4_0BlockBytes, &bytes))
    return 0;
  return std::size_t(bytes);
}

/// CPU path: imports the Q4_0 tensor `data` (host, `bytes` bytes, no alignment needed) of shape [N, K]
/// into `out` (host buffers carved with gguf_q4_0_import_params). kErrorWorkspaceTooSmall if `bytes` is
/// less than gguf_q4_0_bytes(n, k).
inline Status import_gguf_q4_0_host(const void* data, std::size_t bytes, std::int64_t n, std::int64_t k,
                                    const PackedMatrix& out) {
  QuantParams p;
  NIBBLE_RETURN_IF_ERROR(gguf_q4_0_import_params(n, k, &p));
  if (data == nullptr) return Status::kErrorNullPointer;
  const std::size_t need = gguf_q4_0_bytes(n, k);
  if (need == 0) return Status::kErrorSizeOverflow;
  if (bytes < need) return Status::kErrorWorkspaceTooSmall;
  NIBBLE_RETURN_IF_ERROR(detail::check_import_output(out, n, k, p));
  const auto* src = static_cast<const std::uint8_t*>(data);
  const std::int64_t blocks = k / kGgufQ4_0Block;
  auto* scales = static_cast<std::uint16_t*>(out.scales);
  for (std::int64_t r = 0; r < n; ++r)
    for (std::int64_t b = 0; b < blocks; ++b) {
      const std::uint8_t* blk = src + (r * blocks + b) * kGgufQ4_0BlockBytes;
      scales[r * blocks + b] = std::uint16_t(blk[0] | (blk[1] << 8));  // fp16 bits, little-endian
      const std::uint8_t* qs = blk + 2;
      std::uint8_t* dst = out.codes + r * out.ld_codes + b * (kGgufQ4_0Block / 2);
      for (int e = 0; e < kGgufQ4_0Block; e += 2) {
        // element e < 16 is the low nibble of qs[e], element e >= 16 the high nibble of qs[e - 16]
        auto element = [&](int x) -> std::uint32_t { return x < 16 ? (qs[x] & 0xFu) : (qs[x - 16] >> 4); };
        dst[e / 2] = std::uint8_t(((element(e) ^ 8u)) | ((element(e + 1) ^ 8u) << 4));
      }
    }
  return Status::kSuccess;
}

}  // namespace nibble
