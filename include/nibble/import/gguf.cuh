// nibble/import/gguf.cuh — GGUF / ggml 4-bit tensors into nibble's plain layout:
//   Q4_0 -> kS4,       group 32, fp16 scales                        (bit-exact)
//   Q4_1 -> kAffineU4, group 32, fp16 scales and offsets             (bit-exact)
//   Q4_K -> kAffineU4, group 32, fp32 scales and offsets (expanded)  (bit-exact in this plain layout)
//
// What the file holds (ggml/src/ggml-common.h: block_q4_0 / block_q4_1 / block_q4_K; ggml/src/ggml-quants.c:
// dequantize_row_q4_0 / _q4_1 / _q4_K and get_scale_min_k4; gguf-py gguf/quants.py: Q4_0 / Q4_1 / Q4_K
// dequantize_blocks, Q4_K.get_scale_min), for a 2-D tensor with ne = [K, N] (K fastest), blocks along K, rows
// back to back, every fp16 little-endian:
//
//   Q4_0, 32 elements, 18 bytes:  d (fp16, may be negative), qs[16]
//                                 weight = (nibble - 8) * d
//   Q4_1, 32 elements, 20 bytes:  d (fp16), m (fp16), qs[16]
//                                 weight = nibble * d + m
//     qs of both: byte j holds element j in its LOW nibble and element j + 16 in its HIGH nibble.
//   Q4_K, 256 elements (8 sub-blocks of 32), 144 bytes:  d (fp16), dmin (fp16), scales[12], qs[128]
//     scales: sub-block j's 6-bit scale sc[j] and 6-bit min mn[j]:
//        j < 4:  sc = scales[j] & 63,                                mn = scales[j + 4] & 63
//        j >= 4: sc = (scales[j + 4] & 15) | (scales[j - 4] >> 6) << 4,  mn = (scales[j + 4] >> 4) | (scales[j] >> 6)
//        << 4
//     qs: 4 chunks of 32 bytes; chunk c holds sub-block 2c in the LOW nibbles (element l in byte 32c + l) and
//         sub-block 2c + 1 in the HIGH nibbles.
//                                 weight = (d * sc) * nibble - (dmin * mn)
//
// nibble: Q4_0's s4 nibble of (u - 8) is u XOR 8, its scale d as is. Q4_1's scale is d and its offset m, both
// copied bit for bit (fp16). Q4_K is expanded to one scale d * sc and one offset -(dmin * mn) per 32 elements,
// in fp32: d has 11 significant bits and sc, mn 6, so both products are exact in fp32 and so is the negation.
// Dequantized with nibble's rule for kAffineU4 (quant/group.cuh: fp32 product q * s, then fp32 sum + offset),
// every weight equals what gguf-py's numpy dequantizer computes in float32 (it rounds d * q, then the sum or
// difference) bit for bit, NaN / Inf included (an Inf or NaN d, m, dmin is copied or multiplied as it is;
// no data is refused). (ggml's C dequantize_row_q4_K computes the same two roundings unless its compiler
// contracts them into an FMA.)
//
// The GEMM layout does not take kAffineU4 yet (repack returns kErrorUnsupportedFormat). When it does, its
// scales and offsets are of the activation type: Q4_1's fp16 d and m stay exact with fp16 activations (bf16
// rounds them to 8 significant bits, relative error <= 2^-9); Q4_K's d * sc and dmin * mn (up to 17
// significant bits) round to fp16 (relative <= 2^-11, and out of range where |d * sc| > 65504 or below fp16's
// subnormals) or bf16 (<= 2^-9).
//
// Refused with a Status: N or K <= 0 (kErrorInvalidShape), K not a multiple of the block (kErrorGroupSize:
// 32, or 256 for Q4_K), a size that overflows (kErrorSizeOverflow), a null pointer (kErrorNullPointer), fewer
// bytes than the shape needs (kErrorWorkspaceTooSmall), an output view with other parameters
// (kErrorInvalidArgument; carve it with the *_import_params below).
#pragma once

#include "common.cuh"

namespace nibble {

inline constexpr int kGgufQ4_0Block = 32;        ///< QK4_0
inline constexpr int kGgufQ4_0BlockBytes = 18;   ///< sizeof(block_q4_0) = 2 + 32 / 2
inline constexpr int kGgufQ4_1Block = 32;        ///< QK4_1
inline constexpr int kGgufQ4_1BlockBytes = 20;   ///< sizeof(block_q4_1) = 2 + 2 + 32 / 2
inline constexpr int kGgufQ4_KBlock = 256;       ///< QK_K: elements of a Q4_K super-block
inline constexpr int kGgufQ4_KSubBlock = 32;     ///< elements per 6-bit scale / min of Q4_K
inline constexpr int kGgufQ4_KBlockBytes = 144;  ///< sizeof(block_q4_K) = 2 + 2 + 12 + 256 / 2

namespace detail {

/// Parameters of an import into `format`, group 32, scales (and offsets) of `scale_type`, for an [n, k]
/// tensor of `block`-element blocks along K.
inline Status gguf_import_params(std::int64_t n, std::int64_t k, int block, Format format, DType scale_type,
                                 QuantParams* out) {
  if (out == nullptr) return Status::kErrorNullPointer;
  if (n <= 0 || k <= 0) return Status::kErrorInvalidShape;
  if (k % block != 0) return Status::kErrorGroupSize;
  QuantParams p;
  p.format = format;
  p.group_size = 32;
  p.scale_type = scale_type;
  NIBBLE_RETURN_IF_ERROR(packed_bytes(n, k, p).status);
  *out = p;
  return Status::kSuccess;
}

/// Bytes of an [n, k] tensor of `block`-element blocks of `block_bytes` bytes (0 if k is not a multiple of
/// the block or the size overflows; the shape is checked by the caller).
inline std::size_t gguf_tensor_bytes(std::int64_t n, std::int64_t k, int block, int block_bytes) {
  std::int64_t blocks = 0, bytes = 0;
  if (n <= 0 || k <= 0 || k % block != 0 || !checked_mul(n, k / block, &blocks) ||
      !checked_mul(blocks, block_bytes, &bytes))
    return 0;
  return std::size_t(bytes);
}

/// The checks every GGUF importer runs before it writes: params for the shape, the data pointer and size,
/// the output view.
inline Status check_gguf_import(const void* data, std::size_t bytes, std::int64_t n, std::int64_t k, int block,
                                int block_bytes, const QuantParams& p, const PackedMatrix& out) {
  if (data == nullptr) return Status::kErrorNullPointer;
  const std::size_t need = gguf_tensor_bytes(n, k, block, block_bytes);
  if (need == 0) return Status::kErrorSizeOverflow;
  if (bytes < need) return Status::kErrorWorkspaceTooSmall;
  return check_import_output(out, n, k, p);
}

/// Little-endian fp16 bits at `p`.
inline std::uint16_t gguf_half_bits(const std::uint8_t* p) { return std::uint16_t(p[0] | (p[1] << 8)); }

/// The 32 codes of a Q4_0 / Q4_1 block (qs[16]: element e < 16 in the low nibble of qs[e], element e >= 16
/// in the high nibble of qs[e - 16]) into 16 bytes of nibble's codes (even element in the low nibble),
/// each code XOR `flip` (8 turns Q4_0's biased code into the s4 nibble, 0 keeps it).
inline void gguf_block32_codes(const std::uint8_t* qs, std::uint32_t flip, std::uint8_t* dst) {
  auto element = [&](int x) -> std::uint32_t { return x < 16 ? (qs[x] & 0xFu) : (qs[x - 16] >> 4); };
  for (int e = 0; e < 32; e += 2) dst[e / 2] = std::uint8_t((element(e) ^ flip) | ((element(e + 1) ^ flip) << 4));
}

/// The body of the Q4_0 / Q4_1 importers (checked arguments): blocks of 32 of `block_bytes` bytes, each d (fp16
/// bits into out.scales), with `has_m` m (fp16 bits into out.offsets), then qs[16] (codes XOR `flip`).
inline void import_gguf_block32(const std::uint8_t* src, std::int64_t n, std::int64_t k, int block_bytes, bool has_m,
                                std::uint32_t flip, const PackedMatrix& out) {
  const std::int64_t blocks = k / 32;
  auto* scales = static_cast<std::uint16_t*>(out.scales);
  auto* offsets = static_cast<std::uint16_t*>(out.offsets);
  for (std::int64_t r = 0; r < n; ++r)
    for (std::int64_t b = 0; b < blocks; ++b) {
      const std::uint8_t* blk = src + (r * blocks + b) * block_bytes;
      scales[r * blocks + b] = gguf_half_bits(blk);                  // d, bits as they are
      if (has_m) offsets[r * blocks + b] = gguf_half_bits(blk + 2);  // m
      gguf_block32_codes(blk + (has_m ? 4 : 2), flip, out.codes + r * out.ld_codes + b * 16);
    }
}

}  // namespace detail

// ---- Q4_0 -------------------------------------------------------------------------------------------------

/// Parameters of the PackedMatrix import_gguf_q4_0_host writes: kS4, group 32, fp16 scales.
inline Status gguf_q4_0_import_params(std::int64_t n, std::int64_t k, QuantParams* out) {
  return detail::gguf_import_params(n, k, kGgufQ4_0Block, Format::kS4, DType::kF16, out);
}

/// Bytes of a Q4_0 tensor of N rows of K elements (0 if the shape is invalid or overflows).
inline std::size_t gguf_q4_0_bytes(std::int64_t n, std::int64_t k) {
  QuantParams p;
  if (gguf_q4_0_import_params(n, k, &p) != Status::kSuccess) return 0;
  return detail::gguf_tensor_bytes(n, k, kGgufQ4_0Block, kGgufQ4_0BlockBytes);
}

/// CPU path: imports the Q4_0 tensor `data` (host, `bytes` bytes, no alignment needed) of shape [N, K]
/// into `out` (host buffers carved with gguf_q4_0_import_params). kErrorWorkspaceTooSmall if `bytes` is
/// less than gguf_q4_0_bytes(n, k).
inline Status import_gguf_q4_0_host(const void* data, std::size_t bytes, std::int64_t n, std::int64_t k,
                                    const PackedMatrix& out) {
  QuantParams p;
  NIBBLE_RETURN_IF_ERROR(gguf_q4_0_import_params(n, k, &p));
  NIBBLE_RETURN_IF_ERROR(detail::check_gguf_import(data, bytes, n, k, kGgufQ4_0Block, kGgufQ4_0BlockBytes, p, out));
  detail::import_gguf_block32(static_cast<const std::uint8_t*>(data), n, k, kGgufQ4_0BlockBytes, false, 8u, out);
  return Status::kSuccess;
}

// ---- Q4_1 -------------------------------------------------------------------------------------------------

/// Parameters of the PackedMatrix import_gguf_q4_1_host writes: kAffineU4, group 32, fp16 scales and offsets.
inline Status gguf_q4_1_import_params(std::int64_t n, std::int64_t k, QuantParams* out) {
  return detail::gguf_import_params(n, k, kGgufQ4_1Block, Format::kAffineU4, DType::kF16, out);
}

/// Bytes of a Q4_1 tensor of N rows of K elements (0 if the shape is invalid or overflows).
inline std::size_t gguf_q4_1_bytes(std::int64_t n, std::int64_t k) {
  QuantParams p;
  if (gguf_q4_1_import_params(n, k, &p) != Status::kSuccess) return 0;
  return detail::gguf_tensor_bytes(n, k, kGgufQ4_1Block, kGgufQ4_1BlockBytes);
}

/// CPU path: imports the Q4_1 tensor `data` (host, `bytes` bytes, no alignment needed) of shape [N, K] into
/// `out` (host buffers carved with gguf_q4_1_import_params): codes as they are, scale = d, offset = m.
inline Status import_gguf_q4_1_host(const void* data, std::size_t bytes, std::int64_t n, std::int64_t k,
                                    const PackedMatrix& out) {
  QuantParams p;
  NIBBLE_RETURN_IF_ERROR(gguf_q4_1_import_params(n, k, &p));
  NIBBLE_RETURN_IF_ERROR(detail::check_gguf_import(data, bytes, n, k, kGgufQ4_1Block, kGgufQ4_1BlockBytes, p, out));
  detail::import_gguf_block32(static_cast<const std::uint8_t*>(data), n, k, kGgufQ4_1BlockBytes, true, 0u, out);
  return Status::kSuccess;
}

// ---- Q4_K -------------------------------------------------------------------------------------------------

/// The 6-bit scale and min of sub-block j (0..7) of a Q4_K super-block's 12 scale bytes (see the file comment).
NIBBLE_HOST_DEVICE constexpr void gguf_q4_k_scale_min(const std::uint8_t* scales, int j, int* sc, int* mn) {
  if (j < 4) {
    *sc = scales[j] & 63;
    *mn = scales[j + 4] & 63;
  } else {
    *sc = (scales[j + 4] & 15) | ((scales[j - 4] >> 6) << 4);
    *mn = (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4);
  }
}

/// Parameters of the PackedMatrix import_gguf_q4_k_host writes: kAffineU4, group 32, fp32 scales and offsets.
/// K must be a multiple of 256 (kErrorGroupSize).
inline Status gguf_q4_k_import_params(std::int64_t n, std::int64_t k, QuantParams* out) {
  return detail::gguf_import_params(n, k, kGgufQ4_KBlock, Format::kAffineU4, DType::kF32, out);
}

/// Bytes of a Q4_K tensor of N rows of K elements (0 if the shape is invalid or overflows).
inline std::size_t gguf_q4_k_bytes(std::int64_t n, std::int64_t k) {
  QuantParams p;
  if (gguf_q4_k_import_params(n, k, &p) != Status::kSuccess) return 0;
  return detail::gguf_tensor_bytes(n, k, kGgufQ4_KBlock, kGgufQ4_KBlockBytes);
}

/// CPU path: imports the Q4_K tensor `data` (host, `bytes` bytes, no alignment needed) of shape [N, K] into
/// `out` (host buffers carved with gguf_q4_k_import_params): per 32 elements scale = d * sc and offset =
/// -(dmin * mn) in fp32 (exact), codes as they are.
inline Status import_gguf_q4_k_host(const void* data, std::size_t bytes, std::int64_t n, std::int64_t k,
                                    const PackedMatrix& out) {
  QuantParams p;
  NIBBLE_RETURN_IF_ERROR(gguf_q4_k_import_params(n, k, &p));
  NIBBLE_RETURN_IF_ERROR(detail::check_gguf_import(data, bytes, n, k, kGgufQ4_KBlock, kGgufQ4_KBlockBytes, p, out));
  constexpr int kSubBlocks = kGgufQ4_KBlock / kGgufQ4_KSubBlock;  // 8
  const auto* src = static_cast<const std::uint8_t*>(data);
  const std::int64_t blocks = k / kGgufQ4_KBlock, groups = k / kGgufQ4_KSubBlock;
  auto* scales = static_cast<float*>(out.scales);
  auto* offsets = static_cast<float*>(out.offsets);
  for (std::int64_t r = 0; r < n; ++r)
    for (std::int64_t b = 0; b < blocks; ++b) {
      const std::uint8_t* blk = src + (r * blocks + b) * kGgufQ4_KBlockBytes;
      const float d = to_float(__half(__half_raw{detail::gguf_half_bits(blk)}));
      const float dmin = to_float(__half(__half_raw{detail::gguf_half_bits(blk + 2)}));
      const std::uint8_t* sb = blk + 4;   // scales[12]
      const std::uint8_t* qs = blk + 16;  // qs[128]
      for (int j = 0; j < kSubBlocks; ++j) {
        int sc = 0, mn = 0;
        gguf_q4_k_scale_min(sb, j, &sc, &mn);
        const std::int64_t g = r * groups + b * kSubBlocks + j;
        scales[g] = detail::mul_rn(d, float(sc));
        offsets[g] = -detail::mul_rn(dmin, float(mn));
        const std::uint8_t* chunk = qs + 32 * (j / 2);
        const int shift = 4 * (j % 2);
        std::uint8_t* dst = out.codes + r * out.ld_codes + (b * kGgufQ4_KBlock + j * kGgufQ4_KSubBlock) / 2;
        for (int l = 0; l < kGgufQ4_KSubBlock; l += 2)
          dst[l / 2] = std::uint8_t(((chunk[l] >> shift) & 0xFu) | (((chunk[l + 1] >> shift) & 0xFu) << 4));
      }
    }
  return Status::kSuccess;
}

}  // namespace nibble
