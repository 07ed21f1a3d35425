// nibble/import/compressed_tensors.cuh — llm-compressor / compressed-tensors "pack-quantized" 4-bit
// weights into nibble's kS4 (symmetric) or kU4 (asymmetric).
//
// What the checkpoint holds (compressed-tensors src/compressed_tensors/compressors/quantized_compressors/
// pack_quantized.py: PackedQuantizationCompressor.compress_weight, pack_to_int32, compression_param_info),
// for weight_shape = [N, K], G = K / group_size (strategy "group"), 1 ("channel") or a single scale
// ("tensor"):
//
//   tensor             dtype / shape           meaning
//   -----------------  ----------------------  -------------------------------------------------------------
//   weight_packed      int32 [N, ceil(K/8)]    word (n, c), nibble i (lowest first) = q + 8 of weight (n, 8c+i),
//                                              q = the int8 value in [-8, 7]; columns past K are padding
//   weight_scale       fp32/fp16/bf16 [N, G]   ([1] for "tensor")
//   weight_zero_point  int32 [ceil(N/8), G]    asymmetric only: nibble i of word (r, j) = zp + 8 of row 8r+i
//                      (pack_to_int32(packed_dim=0)); older writers stored it unpacked: int8 [N, G] = zp
//   weight_g_idx       int32 [K]               optional act-order group index (as GPTQ's g_idx)
//
//   weight (n, k) = (q - zp) * scale                                     (quantization/lifecycle/forward.py)
// nibble: symmetric (zp = 0): q is an s4 value and its stored nibble u = q + 8, so the s4 nibble is u XOR 8
// (kS4). Asymmetric: (q - zp) = (u - (zp + 8)), so kU4 with code u and zero zp + 8 in [0, 15]. Both exact.
// An unpacked int8 zero point outside [-8, 7] cannot be stored by the writer: kErrorInvalidArgument.
#pragma once

#include "common.cuh"

namespace nibble {

/// QuantizationArgs.strategy for the weights.
enum class CtStrategy : std::uint8_t { kGroup = 0, kChannel = 1, kTensor = 2 };
/// How weight_zero_point is stored (asymmetric only).
enum class CtZeroPoint : std::uint8_t {
  kNone = 0,         ///< symmetric
  kPackedInt32 = 1,  ///< int32 [ceil(N/8), G], nibble = zp + 8 (current pack_quantized)
  kInt8 = 2,         ///< int8 [N, G], zp itself (older writers)
};

/// The config.json quantization_config fields of one weight scheme.
struct CtConfig {
  int num_bits = 4;  ///< only 4
  CtStrategy strategy = CtStrategy::kGroup;
  int group_size = 128;  ///< strategy kGroup: 32, 64, 128, 256 (or K)
  bool symmetric = true;
  CtZeroPoint zero_point = CtZeroPoint::kNone;  ///< must be kNone iff symmetric
};

/// One compressed linear layer (host memory).
struct CtTensors {
  std::int64_t n = 0;                           ///< weight_shape[0] (out_features)
  std::int64_t k = 0;                           ///< weight_shape[1] (in_features), even
  const std::int32_t* weight_packed = nullptr;  ///< [n, ceil(k/8)]
  const void* weight_scale = nullptr;           ///< [n, G], or [1] for kTensor
  DType scale_type = DType::kBF16;
  const void* weight_zero_point = nullptr;     ///< see CtZeroPoint; null when symmetric
  const std::int32_t* weight_g_idx = nullptr;  ///< [k] or null
};

/// Parameters of the PackedMatrix import_compressed_tensors_host writes.
inline Status compressed_tensors_import_params(const CtConfig& cfg, const CtTensors& t, QuantParams* out) {
  if (out == nullptr) return Status::kErrorNullPointer;
  if (cfg.num_bits != 4 || !detail::is_valid(t.scale_type)) return Status::kErrorUnsupportedFormat;
  if (static_cast<unsigned>(cfg.strategy) > 2u || static_cast<unsigned>(cfg.zero_point) > 2u)
    return Status::kErrorInvalidArgument;
  if (cfg.symmetric != (cfg.zero_point == CtZeroPoint::kNone)) return Status::kErrorInvalidArgument;
  // A single tensor-wide zero point has no packed layout in pack_quantized: not supported.
  if (!cfg.symmetric && cfg.strategy == CtStrategy::kTensor) return Status::kErrorUnsupportedFormat;
  if (t.n <= 0 || t.k <= 0 || t.k % 2 != 0) return Status::kErrorInvalidShape;
  QuantParams p;
  p.format = cfg.symmetric ? Format::kS4 : Format::kU4;
  p.scale_type = t.scale_type;
  const std::int64_t g = cfg.strategy == CtStrategy::kGroup ? cfg.group_size : kCheckpointPerChannel;
  NIBBLE_RETURN_IF_ERROR(detail::import_group_size(g, t.k, &p.group_size));
  NIBBLE_RETURN_IF_ERROR(packed_bytes(t.n, t.k, p).status);
  *out = p;
  return Status::kSuccess;
}

/// CPU path: imports t into `out` (host buffers carved with compressed_tensors_import_params). With an
/// act-order weight_g_idx, `perm` (host int32 [K]) receives the permutation (see gptq.cuh; required then).
inline Status import_compressed_tensors_host(const CtConfig& cfg, const CtTensors& t, const PackedMatrix& out,
                                             std::int32_t* perm) {
  QuantParams p;
  NIBBLE_RETURN_IF_ERROR(compressed_tensors_import_params(cfg, t, &p));
  if (t.weight_packed == nullptr || t.weight_scale == nullptr || (!cfg.symmetric && t.weight_zero_point == nullptr))
    return Status::kErrorNullPointer;
  if (!detail::is_aligned(t.weight_packed, 4) ||
      !detail::is_aligned(t.weight_scale, std::size_t(size_of(t.scale_type))) ||
      (cfg.zero_point == CtZeroPoint::kPackedInt32 && !detail::is_aligned(t.weight_zero_point, 4)) ||
      (t.weight_g_idx != nullptr && !detail::is_aligned(t.weight_g_idx, 4)))
    return Status::kErrorMisalignedPointer;
  NIBBLE_RETURN_IF_ERROR(detail::check_import_output(out, t.n, t.k, p));
  const std::int64_t n = t.n, k = t.k, words = (k + 7) / 8;
  const std::int64_t g = effective_group(p.group_size, k), groups = k / g;
  if (cfg.zero_point == CtZeroPoint::kInt8) {  // checked before anything is written
    const auto* zp = static_cast<const std::int8_t*>(t.weight_zero_point);
    for (std::int64_t i = 0; i < n * groups; ++i)
      if (zp[i] < -8 || zp[i] > 7) return Status::kErrorInvalidArgument;
  }
  bool identity = true;
  NIBBLE_RETURN_IF_ERROR(act_order_permutation(t.weight_g_idx, k, g, nullptr, &identity));
  if (!identity && perm == nullptr) return Status::kErrorNullPointer;
  if (perm != nullptr) NIBBLE_RETURN_IF_ERROR(act_order_permutation(t.weight_g_idx, k, g, perm, nullptr));
  const std::uint32_t flip = cfg.symmetric ? 0x8u : 0x0u;  // u XOR 8 is the s4 nibble of u - 8
  for (std::int64_t r = 0; r < n; ++r) {
    const std::int32_t* row = t.weight_packed + r * words;
    for (std::int64_t q = 0; q < k; q += 2) {
      std::uint32_t nib[2];
      for (int e = 0; e < 2; ++e) {
        const std::int64_t src = identity ? q + e : perm[q + e];
        nib[e] = detail::nibble_of(detail::word_at(row, src / 8), int(src % 8)) ^ flip;
      }
      out.codes[r * out.ld_codes + q / 2] = std::uint8_t(nib[0] | (nib[1] << 4));
    }
    for (std::int64_t j = 0; j < groups; ++j) {
      const std::int64_t si = r * groups + j;
      detail::copy_scale_bits(t.weight_scale, cfg.strategy == CtStrategy::kTensor ? 0 : si, out.scales, si,
                              t.scale_type);
      if (cfg.zero_point == CtZeroPoint::kPackedInt32) {
        const auto* zw = static_cast<const std::int32_t*>(t.weight_zero_point);
        out.zeros[si] = std::uint8_t(detail::nibble_of(detail::word_at(zw, (r / 8) * groups + j), int(r % 8)));
      } else if (cfg.zero_point == CtZeroPoint::kInt8) {
        out.zeros[si] = std::uint8_t(static_cast<const std::int8_t*>(t.weight_zero_point)[si] + 8);
      }
    }
  }
  return Status::kSuccess;
}

}  // namespace nibble
