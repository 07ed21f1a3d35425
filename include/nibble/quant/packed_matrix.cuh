// nibble/quant/packed_matrix.cuh — the PLAIN packed-weight layout the quantizer writes and the GEMM's repack
// reads: a non-owning view (PackedMatrix), the parameters that shape it (QuantParams), the byte size of each
// of its buffers (packed_bytes) and the checks every entry point runs on it.
//
// Weights W are [N, K] row-major (N = out_features, K = in_features), K even. For a group size g (or the
// whole row, kPerChannel) and G = K / g groups per row:
//
//   buffer      type / shape                      element (n, k) / group (n, j)
//   ----------  --------------------------------  ---------------------------------------------------------
//   codes       uint8 [N, ld_codes], ld >= K/2    byte n*ld_codes + k/2; even k in the LOW nibble (pack_x2)
//   scales      ScaleT [N, G] row-major, dense     n*G + j; ScaleT = float, __half or __nv_bfloat16 (runtime)
//   zeros       uint8 [N, G] (kU4 only)            n*G + j; one zero point 0..15 per byte
//   offsets     ScaleT [N, G] (kAffineU4 only)     n*G + j; the group's float offset, same type as the scales
//   dq.codes    uint8 [N*G]       (double quant)   i = n*G + j: 8-bit code of (fp32 scale_i - offset)
//   dq.absmax2  float [ceil(N*G / 256)]            i / 256: absmax of (scale - offset) over its 256-block
//   dq.offset   float [1]                          mean of all N*G fp32 scales
//
// The dequantized weight is  value(code) * scale  (kS4), (code - zero) * scale (kU4), codebook[code] * scale
// (kNf4, kFp4), code * scale + offset (kAffineU4: two fp32 roundings, product then sum, no FMA), in fp32,
// rounded to the output type. With double quantization the scale used there is
//   scale_i = dynamic_map[dq.codes[i]] * dq.absmax2[i / 256] + *dq.offset    (two fp32 roundings, no FMA)
// and `scales` is only the quantizer's fp32 scratch for the exact first-level scales (see double_quant.cuh).
// kAffineU4 has no double quantization (kErrorUnsupportedFormat); repack puts it in the GEMM layout like u4 (offsets
// in the scales' layout), and every GEMM kernel takes it.
// Its offsets use the scale type: fp16 holds GGUF Q4_1's (d, m) exactly, fp32 Q4_K's expanded (d * sc,
// -dmin * m) (import/gguf.cuh). The other formats' buffers, sizes and carving are unchanged (offsets 0 bytes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>

#include "../device.cuh"
#include "../format/format.cuh"
#include "../status.cuh"

namespace nibble {

/// Scales are double-quantized in blocks of this many consecutive (flattened, row-major) scales.
inline constexpr int kDoubleQuantBlock = 256;

/// Every sub-buffer carved by carve_packed_matrix starts at a multiple of this many bytes.
inline constexpr std::size_t kPackedAlignment = 256;

/// What to quantize to. Defaults: bitsandbytes' NF4 with blocksize 64, fp32 absmax.
struct QuantParams {
  Format format = Format::kNf4;
  int group_size = 64;  ///< 32, 64, 128, 256 or kPerChannel (one group per row)
  DType scale_type = DType::kF32;
  bool double_quant = false;  ///< compress the scales (requires scale_type == kF32)
};

/// How quantize() computes the codes; the layout (and so dequantize, repack, the GEMM) is the same either
/// way. The defaults are nibble's own rule (quant/group.cuh, quant/double_quant.cuh).
struct QuantizeOptions {
  /// Reproduce bitsandbytes' CUDA quantize_4bit (and, with double quant, its compress_statistics) bit for
  /// bit on the GPU: fast-math fp32 (ftz, rcp.approx.ftz.f32 for 1 / absmax) in both levels, and torch's
  /// last step of the mean (sum * (1.0f / count)). kNf4 / kFp4 with fp32 scales only (kErrorUnsupportedFormat
  /// otherwise). What stays different from bitsandbytes: the byte packing (nibble's plain layout puts the even
  /// element in the LOW nibble, bitsandbytes in the high one) and, unless dq_offset_override is given, the
  /// order of the fp32 sum behind the mean (see double_quant.cuh).
  bool bnb_compatible = false;
  /// Double quant only (kErrorInvalidArgument without it, or if not finite): use this value as the offset
  /// (the mean of the scales) instead of computing it. Pass bitsandbytes' `quant_state.offset` (torch's fp32
  /// `absmax.mean()`, whose summation order depends on the torch version and the GPU) to get its second-level
  /// codes exactly.
  std::optional<float> dq_offset_override;
};

/// Double-quantized scales (bitsandbytes' compress_statistics=True). All device pointers on the GPU path.
struct DoubleQuantScales {
  std::uint8_t* codes = nullptr;  ///< [N*G] 8-bit codes into dynamic_map()
  float* absmax2 = nullptr;       ///< [ceil(N*G / 256)]
  float* offset = nullptr;        ///< [1], the mean of the fp32 scales
  bool enabled = false;
};

/// Non-owning view of one packed [N, K] weight matrix in the plain layout above.
struct PackedMatrix {
  Format format = Format::kNf4;
  int group_size = 64;
  std::int64_t n = 0;  ///< rows (out_features)
  std::int64_t k = 0;  ///< columns (in_features), even
  std::uint8_t* codes = nullptr;
  std::int64_t ld_codes = 0;  ///< bytes between rows of codes, >= k / 2
  void* scales = nullptr;     ///< [N, G] of scale_type; with dq.enabled: fp32 scratch, read by nobody
  DType scale_type = DType::kF32;
  std::uint8_t* zeros = nullptr;  ///< [N, G], kU4 only (ignored otherwise)
  void* offsets = nullptr;        ///< [N, G] of scale_type, kAffineU4 only (ignored otherwise)
  DoubleQuantScales dq{};

  NIBBLE_HOST_DEVICE QuantParams params() const { return {format, group_size, scale_type, dq.enabled}; }
  /// Groups per row: K / effective group.
  NIBBLE_HOST_DEVICE std::int64_t groups_per_row() const { return k / effective_group(group_size, k); }
  /// Number of scales (and zero points, and dq codes): N * groups_per_row().
  NIBBLE_HOST_DEVICE std::int64_t num_scales() const { return n * groups_per_row(); }
};

/// Byte size of each buffer of a packed matrix (0 for a buffer the format does not use).
struct PackedBytes {
  Status status = Status::kSuccess;  ///< not kSuccess: the sizes are 0 and the inputs are invalid
  std::size_t codes = 0;
  std::size_t scales = 0;  ///< with double quant: the fp32 scratch (N*G*4), needed while quantizing
  std::size_t zeros = 0;
  std::size_t offsets = 0;  ///< kAffineU4: N*G of the scale type
  std::size_t dq_codes = 0;
  std::size_t dq_absmax2 = 0;
  std::size_t dq_offset = 0;
  /// Sum of all buffers, each rounded up to kPackedAlignment (what carve_packed_matrix needs).
  std::size_t total = 0;
};

namespace detail {

/// a * b into *out; false if it overflows int64 or either operand is negative.
inline bool checked_mul(std::int64_t a, std::int64_t b, std::int64_t* out) {
  if (a < 0 || b < 0) return false;
  if (a != 0 && b > std::numeric_limits<std::int64_t>::max() / a) return false;
  *out = a * b;
  return true;
}
/// a + b into *out; false on overflow (operands non-negative).
inline bool checked_add(std::int64_t a, std::int64_t b, std::int64_t* out) {
  if (a < 0 || b < 0 || a > std::numeric_limits<std::int64_t>::max() - b) return false;
  *out = a + b;
  return true;
}

/// Any Format value (the plain layout holds every format; has_gemm_layout() says which the GEMM takes).
inline bool is_valid(Format f) { return static_cast<unsigned>(f) <= static_cast<unsigned>(Format::kAffineU4); }
inline bool is_valid(DType t) { return static_cast<unsigned>(t) <= static_cast<unsigned>(DType::kBF16); }

/// Shape and parameter checks shared by every entry point (CPU only, no CUDA call). Order: format,
/// group size, shape, divisibility, double-quant support.
inline Status validate_params(std::int64_t n, std::int64_t k, const QuantParams& p) {
  if (!is_valid(p.format) || !is_valid(p.scale_type)) return Status::kErrorUnsupportedFormat;
  if (!is_supported_group_size(p.group_size)) return Status::kErrorGroupSize;
  if (n <= 0 || k <= 0 || k % 2 != 0) return Status::kErrorInvalidShape;
  if (k % effective_group(p.group_size, k) != 0) return Status::kErrorGroupSize;
  if (p.double_quant && (p.scale_type != DType::kF32 || has_offset(p.format))) return Status::kErrorUnsupportedFormat;
  return Status::kSuccess;
}

}  // namespace detail

/// Byte size of each buffer for an [n, k] matrix quantized with `p`; `ld_codes` 0 means k / 2.
/// All arithmetic is 64-bit and overflow-checked (status kErrorSizeOverflow).
inline PackedBytes packed_bytes(std::int64_t n, std::int64_t k, const QuantParams& p, std::int64_t ld_codes = 0) {
  PackedBytes b;
  b.status = detail::validate_params(n, k, p);
  if (b.status != Status::kSuccess) return b;
  if (ld_codes == 0) ld_codes = k / 2;
  if (ld_codes < k / 2) {
    b.status = Status::kErrorLeadingDimension;
    return b;
  }
  const std::int64_t groups = k / effective_group(p.group_size, k);
  std::int64_t codes = 0, scales = 0, scale_bytes = 0;
  if (!detail::checked_mul(n, ld_codes, &codes) || !detail::checked_mul(n, groups, &scales) ||
      !detail::checked_mul(scales, size_of(p.scale_type), &scale_bytes)) {
    b.status = Status::kErrorSizeOverflow;
    return b;
  }
  const std::int64_t zeros = has_zero_point(p.format) ? scales : 0;
  const std::int64_t offsets = has_offset(p.format) ? scale_bytes : 0;
  const std::int64_t dq_codes = p.double_quant ? scales : 0;
  const std::int64_t dq_absmax2 =
      p.double_quant ? (scales + kDoubleQuantBlock - 1) / kDoubleQuantBlock * std::int64_t(sizeof(float)) : 0;
  const std::int64_t dq_offset = p.double_quant ? std::int64_t(sizeof(float)) : 0;
  std::int64_t total = 0;
  for (std::int64_t part : {codes, scale_bytes, zeros, offsets, dq_codes, dq_absmax2, dq_offset}) {
    const std::int64_t a = std::int64_t(kPackedAlignment);
    if (part > std::numeric_limits<std::int64_t>::max() - a || !detail::checked_add(total, round_up(part, a), &total)) {
      b.status = Status::kErrorSizeOverflow;
      return b;
    }
  }
  b.codes = std::size_t(codes);
  b.scales = std::size_t(scale_bytes);
  b.zeros = std::size_t(zeros);
  b.offsets = std::size_t(offsets);
  b.dq_codes = std::size_t(dq_codes);
  b.dq_absmax2 = std::size_t(dq_absmax2);
  b.dq_offset = std::size_t(dq_offset);
  b.total = std::size_t(total);
  return b;
}

/// Fills `*out` with a view of an [n, k] matrix whose buffers are carved, in the order codes, scales,
/// zeros, offsets, dq codes, dq absmax2, dq offset (a buffer the format does not use takes no room), from one
/// caller-owned buffer of `buffer_bytes` bytes (host or device; nothing is dereferenced). Needs packed_bytes(n, k, p,
/// ld_codes).total bytes, 256-byte aligned.
inline Status carve_packed_matrix(std::int64_t n, std::int64_t k, const QuantParams& p, void* buffer,
                                  std::size_t buffer_bytes, PackedMatrix* out, std::int64_t ld_codes = 0) {
  if (out == nullptr || buffer == nullptr) return Status::kErrorNullPointer;
  const PackedBytes b = packed_bytes(n, k, p, ld_codes);
  NIBBLE_RETURN_IF_ERROR(b.status);
  if (!detail::is_aligned(buffer, kPackedAlignment)) return Status::kErrorMisalignedPointer;
  if (buffer_bytes < b.total) return Status::kErrorWorkspaceTooSmall;
  auto* base = static_cast<std::uint8_t*>(buffer);
  std::size_t at = 0;
  auto take = [&](std::size_t bytes) -> std::uint8_t* {
    if (bytes == 0) return nullptr;
    std::uint8_t* q = base + at;
    at += std::size_t(round_up(std::int64_t(bytes), std::int64_t(kPackedAlignment)));
    return q;
  };
  PackedMatrix m;
  m.format = p.format;
  m.group_size = p.group_size;
  m.n = n;
  m.k = k;
  m.ld_codes = ld_codes == 0 ? k / 2 : ld_codes;
  m.scale_type = p.scale_type;
  m.codes = take(b.codes);
  m.scales = take(b.scales);
  m.zeros = take(b.zeros);
  m.offsets = take(b.offsets);
  m.dq.codes = take(b.dq_codes);
  m.dq.absmax2 = reinterpret_cast<float*>(take(b.dq_absmax2));
  m.dq.offset = reinterpret_cast<float*>(take(b.dq_offset));
  m.dq.enabled = p.double_quant;
  *out = m;
  return Status::kSuccess;
}

namespace detail {

/// Checks a PackedMatrix view: parameters, shape, ld_codes, the pointers the format needs and their natural
/// alignment, and that N * ld_codes and N * G fit in int64 (kernels index with 64-bit offsets).
inline Status validate_packed(const PackedMatrix& m) {
  NIBBLE_RETURN_IF_ERROR(validate_params(m.n, m.k, m.params()));
  if (m.ld_codes < m.k / 2) return Status::kErrorLeadingDimension;
  if (m.codes == nullptr || m.scales == nullptr) return Status::kErrorNullPointer;
  if (has_zero_point(m.format) && m.zeros == nullptr) return Status::kErrorNullPointer;
  if (has_offset(m.format) && m.offsets == nullptr) return Status::kErrorNullPointer;
  if (m.dq.enabled && (m.dq.codes == nullptr || m.dq.absmax2 == nullptr || m.dq.offset == nullptr))
    return Status::kErrorNullPointer;
  if (!is_aligned(m.scales, std::size_t(size_of(m.scale_type)))) return Status::kErrorMisalignedPointer;
  if (has_offset(m.format) && !is_aligned(m.offsets, std::size_t(size_of(m.scale_type))))
    return Status::kErrorMisalignedPointer;
  if (m.dq.enabled && (!is_aligned(m.dq.absmax2, alignof(float)) || !is_aligned(m.dq.offset, alignof(float))))
    return Status::kErrorMisalignedPointer;
  return packed_bytes(m.n, m.k, m.params(), m.ld_codes).status;
}

/// Checks a dense [n, k] input or output of element size `elem_bytes` with leading dimension `ld`.
inline Status validate_dense(const void* p, std::int64_t n, std::int64_t k, std::int64_t ld, std::size_t elem_bytes) {
  if (p == nullptr) return Status::kErrorNullPointer;
  if (ld < k) return Status::kErrorLeadingDimension;
  if (!is_aligned(p, elem_bytes)) return Status::kErrorMisalignedPointer;
  std::int64_t elems = 0, bytes = 0;
  if (!checked_mul(n, ld, &elems) || !checked_mul(elems, std::int64_t(elem_bytes), &bytes))
    return Status::kErrorSizeOverflow;
  return Status::kSuccess;
}

}  // namespace detail
}  // namespace nibble
