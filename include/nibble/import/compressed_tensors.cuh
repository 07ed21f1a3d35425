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
//
// Paths: import_compressed_tensors_host (host buffers) and import_compressed_tensors (device buffers, one
// kernel on the caller's stream). Both run the same checks (check_ct_import) and the same decoding
// (ct_codes_chunk, ct_group): codes are row-major on both sides, so a work item is 16 code bytes of one row
// (a straight copy with the s4 XOR, or the act-order gather within the row), and one (row, group) pair.
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

/// One compressed linear layer (host memory on the CPU path, device memory on the GPU path).
struct CtTensors {
  std::int64_t n = 0;                           ///< weight_shape[0] (out_features)
  std::int64_t k = 0;                           ///< weight_shape[1] (in_features), even
  const std::int32_t* weight_packed = nullptr;  ///< [n, ceil(k/8)]
  const void* weight_scale = nullptr;           ///< [n, G], or [1] for kTensor
  DType scale_type = DType::kBF16;
  const void* weight_zero_point = nullptr;     ///< see CtZeroPoint; null when symmetric
  const std::int32_t* weight_g_idx = nullptr;  ///< [k] or null; HOST memory, CPU path only (GPU: pass perm)
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

namespace detail {

/// The checks both paths run before writing: metadata and shapes, pointers, the output view. Fills *p.
/// (The CPU path then checks the data: int8 zero points and g_idx.)
inline Status check_ct_import(const CtConfig& cfg, const CtTensors& t, const PackedMatrix& out, QuantParams* p) {
  NIBBLE_RETURN_IF_ERROR(compressed_tensors_import_params(cfg, t, p));
  if (t.weight_packed == nullptr || t.weight_scale == nullptr || (!cfg.symmetric && t.weight_zero_point == nullptr))
    return Status::kErrorNullPointer;
  if (!is_aligned(t.weight_packed, 4) || !is_aligned(t.weight_scale, std::size_t(size_of(t.scale_type))) ||
      (cfg.zero_point == CtZeroPoint::kPackedInt32 && !is_aligned(t.weight_zero_point, 4)) ||
      !is_aligned(t.weight_g_idx, 4))
    return Status::kErrorMisalignedPointer;
  return check_import_output(out, t.n, t.k, *p);
}

/// 16 code bytes (columns 32q .. 32q + 31, fewer at the end of K) of row r: nibble e of output word w is
/// the stored nibble of column perm[8w + e] (8w + e without perm) XOR 8 when symmetric (u XOR 8 is the s4
/// nibble of u - 8). A permutation entry outside [0, K) sets kImportBadPermutation in *flags.
NIBBLE_HOST_DEVICE void ct_codes_chunk(const CtConfig& cfg, const CtTensors& t, const std::int32_t* perm,
                                       std::int64_t r, std::int64_t q, const PackedMatrix& out, std::uint32_t* flags) {
  const std::int64_t words = (t.k + 7) / 8;  // per row of weight_packed
  const std::int32_t* row = t.weight_packed + r * words;
  const std::uint32_t flip = cfg.symmetric ? 0x88888888u : 0u;
  std::uint32_t w[4] = {0, 0, 0, 0};
  if (perm == nullptr) {  // the row's bytes as they are (nibbles past K: padding, never stored)
    const std::int64_t left = 4 * words - 16 * q;
    load_code_bytes(reinterpret_cast<const std::uint8_t*>(row) + 16 * q, int(left < 16 ? left : 16), w);
  } else {
#pragma unroll
    for (int e = 0; e < 32; ++e) {
      const std::int64_t p = 32 * q + e;
      if (p < t.k) {
        const std::int64_t src = checked_perm_entry(perm, p, t.k, flags);
        w[e / 8] |= nibble_of(word_at(row, src / 8), int(src % 8)) << (4 * (e % 8));
      }
    }
  }
#pragma unroll
  for (int v = 0; v < 4; ++v) w[v] ^= flip;
  const std::int64_t left = t.k / 2 - 16 * q;
  store_code_bytes(out.codes + r * out.ld_codes + 16 * q, w, int(left < 16 ? left : 16));
}

/// Scale and zero point of row r, group j. An int8 zero point outside [-8, 7] sets kImportBadZeroPoint.
NIBBLE_HOST_DEVICE void ct_group(const CtConfig& cfg, const CtTensors& t, std::int64_t r, std::int64_t j,
                                 const PackedMatrix& out, std::uint32_t* flags) {
  const std::int64_t groups = out.groups_per_row(), si = r * groups + j;
  copy_scale_bits(t.weight_scale, cfg.strategy == CtStrategy::kTensor ? 0 : si, out.scales, si, t.scale_type);
  if (cfg.zero_point == CtZeroPoint::kPackedInt32) {
    const auto* zw = static_cast<const std::int32_t*>(t.weight_zero_point);
    out.zeros[si] = std::uint8_t(nibble_of(word_at(zw, (r / 8) * groups + j), int(r % 8)));
  } else if (cfg.zero_point == CtZeroPoint::kInt8) {
    const int zp = static_cast<const std::int8_t*>(t.weight_zero_point)[si];
    if (zp < -8 || zp > 7) *flags |= kImportBadZeroPoint;
    out.zeros[si] = std::uint8_t((zp + 8) & 0xF);
  }
}

/// The work items of an import: one per 16 code bytes of a row (consecutive items: consecutive bytes of a
/// row), then one per (row, group), the group fastest. The CPU path runs them in order, the kernel one per
/// thread.
NIBBLE_HOST_DEVICE std::int64_t ct_code_items(const CtTensors& t) { return t.n * ((t.k / 2 + 15) / 16); }
NIBBLE_HOST_DEVICE std::int64_t ct_items(const CtTensors& t, const PackedMatrix& out) {
  return ct_code_items(t) + t.n * out.groups_per_row();
}
NIBBLE_HOST_DEVICE void ct_item(const CtConfig& cfg, const CtTensors& t, const std::int32_t* perm,
                                const PackedMatrix& out, std::int64_t i, std::uint32_t* flags) {
  const std::int64_t chunks = (t.k / 2 + 15) / 16, code_items = ct_code_items(t);
  if (i < code_items) {
    ct_codes_chunk(cfg, t, perm, i / chunks, i % chunks, out, flags);
  } else {
    const std::int64_t g = i - code_items, groups = out.groups_per_row();
    ct_group(cfg, t, g / groups, g % groups, out, flags);
  }
}

/// The flags are OR-ed into *gFlags once per thread, only when set.
template <int kThreads>  // a template: defined in a header without breaking the one-definition rule
__global__ void __launch_bounds__(kThreads)
    import_ct_kernel(CtConfig cfg, CtTensors t, const std::int32_t* __restrict__ gPerm, PackedMatrix out,
                     std::uint32_t* __restrict__ gFlags) {
  const std::int64_t items = ct_items(t, out);
  std::uint32_t flags = 0;
  for (std::int64_t i = import_item(); i < items; i += import_stride()) ct_item(cfg, t, gPerm, out, i, &flags);
  if (flags != 0) atomicOr(gFlags, flags);
}

}  // namespace detail

/// CPU path: imports t into `out` (host buffers carved with compressed_tensors_import_params). With an
/// act-order weight_g_idx, `perm` (host int32 [K]) receives the permutation (see gptq.cuh; required then).
inline Status import_compressed_tensors_host(const CtConfig& cfg, const CtTensors& t, const PackedMatrix& out,
                                             std::int32_t* perm) {
  QuantParams p;
  NIBBLE_RETURN_IF_ERROR(detail::check_ct_import(cfg, t, out, &p));
  const std::int64_t n = t.n, k = t.k, groups = out.groups_per_row(), g = effective_group(p.group_size, k);
  if (cfg.zero_point == CtZeroPoint::kInt8) {  // checked before anything is written
    const auto* zp = static_cast<const std::int8_t*>(t.weight_zero_point);
    for (std::int64_t i = 0; i < n * groups; ++i)
      if (zp[i] < -8 || zp[i] > 7) return Status::kErrorInvalidArgument;
  }
  bool identity = true;
  NIBBLE_RETURN_IF_ERROR(act_order_permutation(t.weight_g_idx, k, g, nullptr, &identity));
  if (!identity && perm == nullptr) return Status::kErrorNullPointer;
  if (perm != nullptr) NIBBLE_RETURN_IF_ERROR(act_order_permutation(t.weight_g_idx, k, g, perm, nullptr));
  std::uint32_t flags = 0;  // stays 0: the data was checked above
  const std::int64_t items = detail::ct_items(t, out);
  for (std::int64_t i = 0; i < items; ++i) detail::ct_item(cfg, t, identity ? nullptr : perm, out, i, &flags);
  return Status::kSuccess;
}

/// GPU path: imports t (device buffers; t.weight_g_idx must be null) into `out` (device buffers carved with
/// compressed_tensors_import_params) with one kernel on `stream`: no allocation, no synchronization, no host
/// read, so it can be captured in a CUDA graph. Bit-identical to import_compressed_tensors_host on valid
/// data. `perm` (device int32 [K]) is null without act-order, or the permutation act_order_permutation makes
/// from weight_g_idx on the host (as for import_gptq). Refusals: those of the CPU path, with the same Status,
/// plus kErrorInvalidArgument for a non-null weight_g_idx and kErrorNullPointer / kErrorMisalignedPointer
/// for error_flags and perm. The data is checked on the device: the kernel ORs kImportBadPermutation and
/// kImportBadZeroPoint into *error_flags (device, 4-byte aligned, zeroed by the caller; never cleared), and
/// the output is unspecified when it is non-zero after the stream completes. ~2 bytes moved per weight.
inline Status import_compressed_tensors(const CtConfig& cfg, const CtTensors& t, const std::int32_t* perm,
                                        const PackedMatrix& out, std::uint32_t* error_flags, cudaStream_t stream) {
  QuantParams p;
  NIBBLE_RETURN_IF_ERROR(detail::check_ct_import(cfg, t, out, &p));
  if (t.weight_g_idx != nullptr) return Status::kErrorInvalidArgument;  // host-only field: pass perm instead
  NIBBLE_RETURN_IF_ERROR(detail::check_import_flags(error_flags, perm));
  NIBBLE_RETURN_IF_ERROR(check_device());
  const std::int64_t items = detail::ct_items(t, out);
  detail::import_ct_kernel<detail::kImportThreads>
      <<<detail::import_blocks(items), detail::kImportThreads, 0, stream>>>(cfg, t, perm, out, error_flags);
  NIBBLE_CHECK_LAUNCH();
  return Status::kSuccess;
}

}  // namespace nibble
