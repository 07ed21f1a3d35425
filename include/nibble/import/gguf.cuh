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
// In the GEMM layout (repack with an offsets buffer) kAffineU4's scales and offsets are of the activation type: Q4_1's
// fp16 d and m stay exact with fp16 activations (bf16 rounds them to 8 significant bits, relative error <= 2^-8);
// Q4_K's d * sc and dmin * mn (up to 17 significant bits) round to fp16 (relative <= 2^-11, and out of range where |d *
// sc| > 65504 or below fp16's subnormals) or bf16 (<= 2^-8).
//
// Paths: import_gguf_q4_{0,1,k}_host (host buffers) and import_gguf_q4_{0,1,k} (device buffers, one kernel on the
// caller's stream, one (super-)block per work item). Both run the same checks and the same per-block decoding
// (gguf_block32, gguf_q4_k_superblock), so the kernel writes the CPU path's bytes (Q4_K: but for the encoding of
// a NaN that d * sc or dmin * mn computes from an Inf / NaN d or dmin, canonical on the GPU).
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

/// The GGUF 4-bit types nibble imports, and what each becomes.
enum class GgufQ4 : std::uint8_t { kQ4_0, kQ4_1, kQ4_K };
struct GgufTypeInfo {
  int block;        ///< elements per block along K
  int block_bytes;  ///< bytes per block
  Format format;    ///< nibble's format (group 32)
  DType scale_type;
};
constexpr GgufTypeInfo gguf_type_info(GgufQ4 t) {
  switch (t) {
    case GgufQ4::kQ4_0:
      return {kGgufQ4_0Block, kGgufQ4_0BlockBytes, Format::kS4, DType::kF16};
    case GgufQ4::kQ4_1:
      return {kGgufQ4_1Block, kGgufQ4_1BlockBytes, Format::kAffineU4, DType::kF16};
    default:
      return {kGgufQ4_KBlock, kGgufQ4_KBlockBytes, Format::kAffineU4, DType::kF32};
  }
}

/// The checks both paths of a kType importer run before writing (parameters for the shape, data pointer and
/// size, output view).
template <GgufQ4 kType>
Status check_gguf(const void* data, std::size_t bytes, std::int64_t n, std::int64_t k, const PackedMatrix& out) {
  constexpr GgufTypeInfo kInfo = gguf_type_info(kType);
  QuantParams p;
  NIBBLE_RETURN_IF_ERROR(gguf_import_params(n, k, kInfo.block, kInfo.format, kInfo.scale_type, &p));
  return check_gguf_import(data, bytes, n, k, kInfo.block, kInfo.block_bytes, p, out);
}

/// Little-endian fp16 bits at `p`.
NIBBLE_HOST_DEVICE std::uint16_t gguf_half_bits(const std::uint8_t* p) { return std::uint16_t(p[0] | (p[1] << 8)); }

/// The 32 codes of a Q4_0 / Q4_1 block (qs[16]: element e < 16 in the low nibble of qs[e], element e >= 16
/// in the high nibble of qs[e - 16]) into 16 bytes of nibble's codes (even element in the low nibble),
/// each code XOR `flip` (8 turns Q4_0's biased code into the s4 nibble, 0 keeps it).
NIBBLE_HOST_DEVICE void gguf_block32_codes(const std::uint8_t* qs, std::uint32_t flip, std::uint8_t* dst) {
  std::uint32_t w[4] = {0, 0, 0, 0};
#pragma unroll
  for (int e = 0; e < 32; ++e) {
    const std::uint32_t code = e < 16 ? (qs[e] & 0xFu) : (qs[e - 16] >> 4);
    w[e / 8] |= (code ^ flip) << (4 * (e % 8));
  }
  store_code_bytes(dst, w, 16);
}

/// Block b of row r of a Q4_0 / Q4_1 tensor (checked arguments): `block_bytes` bytes, d (fp16 bits into
/// out.scales), with `has_m` m (fp16 bits into out.offsets), then qs[16] (codes XOR `flip`).
NIBBLE_HOST_DEVICE void gguf_block32(const std::uint8_t* src, std::int64_t r, std::int64_t b, int block_bytes,
                                     bool has_m, std::uint32_t flip, const PackedMatrix& out) {
  const std::int64_t blocks = out.k / 32, g = r * blocks + b;
  const std::uint8_t* blk = src + g * block_bytes;
  static_cast<std::uint16_t*>(out.scales)[g] = gguf_half_bits(blk);                  // d, bits as they are
  if (has_m) static_cast<std::uint16_t*>(out.offsets)[g] = gguf_half_bits(blk + 2);  // m
  gguf_block32_codes(blk + (has_m ? 4 : 2), flip, out.codes + r * out.ld_codes + b * 16);
}

/// Super-block b of row r of a Q4_K tensor (checked arguments): per sub-block of 32, scale = d * sc and
/// offset = -(dmin * mn) in fp32 (exact), codes as they are.
NIBBLE_HOST_DEVICE void gguf_q4_k_superblock(const std::uint8_t* src, std::int64_t r, std::int64_t b,
                                             const PackedMatrix& out) {
  constexpr int kSubBlocks = kGgufQ4_KBlock / kGgufQ4_KSubBlock;  // 8
  const std::int64_t blocks = out.k / kGgufQ4_KBlock, groups = out.k / kGgufQ4_KSubBlock;
  const std::uint8_t* blk = src + (r * blocks + b) * kGgufQ4_KBlockBytes;
  const float d = to_float(__half(__half_raw{gguf_half_bits(blk)}));
  const float dmin = to_float(__half(__half_raw{gguf_half_bits(blk + 2)}));
  const std::uint8_t* sb = blk + 4;   // scales[12]
  const std::uint8_t* qs = blk + 16;  // qs[128]
  for (int j = 0; j < kSubBlocks; ++j) {
    int sc = 0, mn = 0;
    gguf_q4_k_scale_min(sb, j, &sc, &mn);
    const std::int64_t g = r * groups + b * kSubBlocks + j;
    static_cast<float*>(out.scales)[g] = mul_rn(d, float(sc));
    static_cast<float*>(out.offsets)[g] = -mul_rn(dmin, float(mn));
    const std::uint8_t* chunk = qs + 32 * (j / 2);
    const int shift = 4 * (j % 2);
    std::uint32_t w[4] = {0, 0, 0, 0};
#pragma unroll
    for (int l = 0; l < kGgufQ4_KSubBlock; ++l) w[l / 8] |= ((chunk[l] >> shift) & 0xFu) << (4 * (l % 8));
    store_code_bytes(out.codes + r * out.ld_codes + (b * kGgufQ4_KBlock + j * kGgufQ4_KSubBlock) / 2, w, 16);
  }
}

/// Work item i (block i % blocks of row i / blocks) of a kType import: the CPU path runs the items in order,
/// the kernel one per thread (consecutive items: consecutive blocks of a row, coalesced reads).
template <GgufQ4 kType>
NIBBLE_HOST_DEVICE void gguf_item(const std::uint8_t* src, std::int64_t blocks, const PackedMatrix& out,
                                  std::int64_t i) {
  if constexpr (kType == GgufQ4::kQ4_0) {
    gguf_block32(src, i / blocks, i % blocks, kGgufQ4_0BlockBytes, false, 8u, out);
  } else if constexpr (kType == GgufQ4::kQ4_1) {
    gguf_block32(src, i / blocks, i % blocks, kGgufQ4_1BlockBytes, true, 0u, out);
  } else {
    gguf_q4_k_superblock(src, i / blocks, i % blocks, out);
  }
}

/// The CPU entries: the checks, then every work item in order.
template <GgufQ4 kType>
Status import_gguf_host(const void* data, std::size_t bytes, std::int64_t n, std::int64_t k, const PackedMatrix& out) {
  NIBBLE_RETURN_IF_ERROR(check_gguf<kType>(data, bytes, n, k, out));
  const std::int64_t blocks = k / gguf_type_info(kType).block;
  for (std::int64_t i = 0; i < n * blocks; ++i)
    gguf_item<kType>(static_cast<const std::uint8_t*>(data), blocks, out, i);
  return Status::kSuccess;
}

}  // namespace detail

// ---- Q4_0 -------------------------------------------------------------------------------------------------

/// Parameters of the PackedMatrix import_gguf_q4_0_host writes: kS4, group 32, fp16 scales.
inline Status gguf_q4_0_import_params(std::int64_t n, std::int64_t k, QuantParams* out) {
  constexpr detail::GgufTypeInfo kInfo = detail::gguf_type_info(detail::GgufQ4::kQ4_0);
  return detail::gguf_import_params(n, k, kInfo.block, kInfo.format, kInfo.scale_type, out);
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
  return detail::import_gguf_host<detail::GgufQ4::kQ4_0>(data, bytes, n, k, out);
}

// ---- Q4_1 -------------------------------------------------------------------------------------------------

/// Parameters of the PackedMatrix import_gguf_q4_1_host writes: kAffineU4, group 32, fp16 scales and offsets.
inline Status gguf_q4_1_import_params(std::int64_t n, std::int64_t k, QuantParams* out) {
  constexpr detail::GgufTypeInfo kInfo = detail::gguf_type_info(detail::GgufQ4::kQ4_1);
  return detail::gguf_import_params(n, k, kInfo.block, kInfo.format, kInfo.scale_type, out);
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
  return detail::import_gguf_host<detail::GgufQ4::kQ4_1>(data, bytes, n, k, out);
}

// ---- Q4_K -------------------------------------------------------------------------------------------------

/// Parameters of the PackedMatrix import_gguf_q4_k_host writes: kAffineU4, group 32, fp32 scales and offsets.
/// K must be a multiple of 256 (kErrorGroupSize).
inline Status gguf_q4_k_import_params(std::int64_t n, std::int64_t k, QuantParams* out) {
  constexpr detail::GgufTypeInfo kInfo = detail::gguf_type_info(detail::GgufQ4::kQ4_K);
  return detail::gguf_import_params(n, k, kInfo.block, kInfo.format, kInfo.scale_type, out);
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
  return detail::import_gguf_host<detail::GgufQ4::kQ4_K>(data, bytes, n, k, out);
}

// ---- GPU paths --------------------------------------------------------------------------------------------

namespace detail {

template <GgufQ4 kType>
__global__ void __launch_bounds__(kImportThreads)
    import_gguf_kernel(const std::uint8_t* __restrict__ gSrc, std::int64_t blocks, PackedMatrix out) {
  const std::int64_t items = out.n * blocks;
  for (std::int64_t i = import_item(); i < items; i += import_stride()) gguf_item<kType>(gSrc, blocks, out, i);
}

/// The GPU entries: the CPU path's checks, then kType's kernel for an [n, k] tensor.
template <GgufQ4 kType>
Status import_gguf_device(const void* data, std::size_t bytes, std::int64_t n, std::int64_t k, const PackedMatrix& out,
                          cudaStream_t stream) {
  NIBBLE_RETURN_IF_ERROR(check_gguf<kType>(data, bytes, n, k, out));
  NIBBLE_RETURN_IF_ERROR(check_device());
  const std::int64_t blocks = k / gguf_type_info(kType).block;
  import_gguf_kernel<kType>
      <<<import_blocks(n * blocks), kImportThreads, 0, stream>>>(static_cast<const std::uint8_t*>(data), blocks, out);
  NIBBLE_CHECK_LAUNCH();
  return Status::kSuccess;
}

}  // namespace detail

/// GPU path of import_gguf_q4_0_host: `data` (device, `bytes` bytes, no alignment needed) into `out` (device
/// buffers carved with gguf_q4_0_import_params), one kernel on `stream`: no allocation, no synchronization,
/// graph-capturable. Same checks and Status as the CPU path (no data is refused: no error word), same bytes.
inline Status import_gguf_q4_0(const void* data, std::size_t bytes, std::int64_t n, std::int64_t k,
                               const PackedMatrix& out, cudaStream_t stream) {
  return detail::import_gguf_device<detail::GgufQ4::kQ4_0>(data, bytes, n, k, out, stream);
}

/// GPU path of import_gguf_q4_1_host (as import_gguf_q4_0; out carved with gguf_q4_1_import_params).
inline Status import_gguf_q4_1(const void* data, std::size_t bytes, std::int64_t n, std::int64_t k,
                               const PackedMatrix& out, cudaStream_t stream) {
  return detail::import_gguf_device<detail::GgufQ4::kQ4_1>(data, bytes, n, k, out, stream);
}

/// GPU path of import_gguf_q4_k_host (as import_gguf_q4_0; out carved with gguf_q4_k_import_params).
inline Status import_gguf_q4_k(const void* data, std::size_t bytes, std::int64_t n, std::int64_t k,
                               const PackedMatrix& out, cudaStream_t stream) {
  return detail::import_gguf_device<detail::GgufQ4::kQ4_K>(data, bytes, n, k, out, stream);
}

}  // namespace nibble
