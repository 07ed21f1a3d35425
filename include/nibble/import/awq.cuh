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
#pragma once

#include "common.cuh"

namespace nibble {

/// Nibble i of an AWQ word holds column 8c + kAwqOrder[i] of its group of eight.
inline constexpr int kAwqOrder[8] = {0, 2, 4, 6, 1, 3, 5, 7};

/// The quant_config fields the import depends on.
struct AwqConfig {
  int bits = 4;            ///< w_bit; only 4
  int group_size = 128;    ///< q_group_size: 32, 64, 128, 256, or -1 / K for one group per row
  bool zero_point = true;  ///< only true (the GEMM version's asymmetric quantization)
};

/// One AWQ linear layer (host memory).
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

/// CPU path: imports t (host) into `out` (host buffers carved with awq_import_params' parameters).
inline Status import_awq_host(const AwqConfig& cfg, const AwqTensors& t, const PackedMatrix& out) {
  QuantParams p;
  NIBBLE_RETURN_IF_ERROR(awq_import_params(cfg, t, &p));
  if (t.qweight == nullptr || t.qzeros == nullptr || t.scales == nullptr) return Status::kErrorNullPointer;
  if (!detail::is_aligned(t.qweight, 4) || !detail::is_aligned(t.qzeros, 4) ||
      !detail::is_aligned(t.scales, std::size_t(size_of(t.scale_type))))
    return Status::kErrorMisalignedPointer;
  NIBBLE_RETURN_IF_ERROR(detail::check_import_output(out, t.n, t.k, p));
  const std::int64_t n = t.n, k = t.k, words = n / 8;
  const std::int64_t groups = k / effective_group(p.group_size, k);
  for (std::int64_t kk = 0; kk < k; kk += 2)
    for (std::int64_t c = 0; c < words; ++c) {
      const std::uint32_t w0 = detail::word_at(t.qweight, kk * words + c);
      const std::uint32_t w1 = detail::word_at(t.qweight, (kk + 1) * words + c);
      for (int i = 0; i < 8; ++i) {
        const std::int64_t col = 8 * c + kAwqOrder[i];
        out.codes[col * out.ld_codes + kk / 2] =
            std::uint8_t(detail::nibble_of(w0, i) | (detail::nibble_of(w1, i) << 4));
      }
    }
  for (std::int64_t j = 0; j < groups; ++j)
    for (std::int64_t c = 0; c < words; ++c) {
      const std::uint32_t zw = detail::word_at(t.qzeros, j * words + c);
      for (int i = 0; i < 8; ++i) {
        const std::int64_t col = 8 * c + kAwqOrder[i];
        out.zeros[col * groups + j] = std::uint8_t(detail::nibble_of(zw, i));
        detail::copy_scale_bits(t.scales, j * n + col, out.scales, col * groups + j, t.scale_type);
      }
    }
  return Status::kSuccess;
}

}  // namespace nibble
