// nibble/layout/repack.cuh — the bridge from quant/ to the GEMM layout: the repack that builds a GemmWeights
// (layout/gemm_layout.cuh) from the quantizers' plain [N, K] layout, on the GPU or the CPU (same per-word
// routine, so identical bytes). The one header of layout/ that includes quant/.
#pragma once

#include "../device.cuh"
#include "../quant/double_quant.cuh"
#include "../quant/packed_matrix.cuh"
#include "../status.cuh"
#include "gemm_layout.cuh"

static_assert(nibble::layout::kDqBlock == nibble::kDoubleQuantBlock,
              "the layout's second-level blocks are the quantizer's");

namespace nibble {

/// The plain layout the quantizers write (see quant/): codes [N, ld_codes] bytes with element k of a row in
/// byte k / 2 (low nibble for even k), scales [N, K / g] of scale_type, u4 zeros [N, K / g] uint8, affine u4
/// offsets [N, K / g] of scale_type.
struct PlainWeights {
  Format format = Format::kS4;
  int group_size = 128;
  std::int64_t n = 0, k = 0;
  const std::uint8_t* codes = nullptr;
  std::int64_t ld_codes = 0;  ///< bytes per row, >= K / 2
  const void* scales = nullptr;
  DType scale_type = DType::kF32;
  const std::uint8_t* zeros = nullptr;
  const void* offsets = nullptr;  ///< affine u4 only, of scale_type
  /// Double-quantized scales (quant/double_quant.cuh); when set, `scales` is not read.
  const std::uint8_t* dq_codes = nullptr;
  const float* dq_absmax2 = nullptr;
  const float* dq_offset = nullptr;
};

/// The read-only plain view of a quantizer output.
inline PlainWeights plain_view(const PackedMatrix& m) {
  PlainWeights p;
  p.format = m.format;
  p.group_size = m.group_size;
  p.n = m.n;
  p.k = m.k;
  p.codes = m.codes;
  p.ld_codes = m.ld_codes;
  p.scales = m.scales;
  p.scale_type = m.scale_type;
  p.zeros = has_zero_point(m.format) ? m.zeros : nullptr;
  p.offsets = has_offset(m.format) ? m.offsets : nullptr;
  if (m.dq.enabled) {
    p.dq_codes = m.dq.codes;
    p.dq_absmax2 = m.dq.absmax2;
    p.dq_offset = m.dq.offset;
  }
  return p;
}

namespace layout {

/// Word `c` of the GEMM layout (word_coord: atom, lane, k-step), gathered from the plain codes (0 in padding).
NIBBLE_HOST_DEVICE std::uint32_t repack_word(const PlainWeights& src, const GemmShape& s, const WordCoord& c) {
  const std::int64_t n0 = c.nb * kAtomN, k0 = c.kb * kAtomK;
  const int lane = c.lane, j = c.j;
  const NibbleOrder order = gemm_nibble_order(src.format);
  std::uint32_t w = 0;
  for (int i = 0; i < 8; ++i) {
    const AtomCoord at = atom_coord(lane, j, i);
    const std::int64_t n = n0 + at.n, k = k0 + at.k;
    std::uint32_t nib = 0;
    if (n < s.n && k < s.k) nib = (src.codes[n * src.ld_codes + k / 2] >> (4 * (k % 2))) & 0xFu;
    w |= nib << (4 * nibble_position(order, i));
  }
  return w;
}

/// Scale (as float), zero point and affine offset (as float) of GEMM-layout entry `idx` = group * n_pad + n
/// (0 in padding). Double-quantized scales are expanded here with `map` (quant/double_quant.cuh: dq_scale).
NIBBLE_HOST_DEVICE float repack_scale(const PlainWeights& src, const GemmShape& s, const float* map, std::int64_t idx,
                                      std::uint8_t* zero, float* offset) {
  const std::int64_t group = idx / s.n_pad, n = idx % s.n_pad;
  const std::int64_t src_groups = src.group_size == kPerChannel ? 1 : s.k / src.group_size;
  *zero = 0;
  *offset = 0.0f;
  if (n >= s.n || group >= src_groups) return 0.0f;
  const std::int64_t at = n * src_groups + group;
  if (src.zeros != nullptr) *zero = src.zeros[at];
  if (has_offset(src.format) && src.offsets != nullptr) *offset = load_scale(src.offsets, src.scale_type, at);
  if (src.dq_codes != nullptr)
    return dq_scale(map, src.dq_codes[at], src.dq_absmax2[at / kDoubleQuantBlock], *src.dq_offset);
  return load_scale(src.scales, src.scale_type, at);
}

template <int kHeaderOnly = 0>  // a template, so that every translation unit may define it (no ODR clash)
__global__ void repack_codes_kernel(PlainWeights src, GemmShape s, std::uint32_t* dst, std::int64_t words) {
  for (std::int64_t w = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; w < words;
       w += std::int64_t(gridDim.x) * blockDim.x) {
    dst[w] = repack_word(src, s, word_coord(s, w));
  }
}

template <class T>
__global__ void repack_scales_kernel(PlainWeights src, GemmShape s, const __grid_constant__ DynamicMap map, T* scales,
                                     std::uint8_t* zeros, T* offsets) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < s.scale_count();
       i += std::int64_t(gridDim.x) * blockDim.x) {
    std::uint8_t z;
    float m;
    scales[i] = from_float<T>(repack_scale(src, s, map.v, i, &z, &m));
    if (zeros != nullptr) zeros[i] = z;
    if (offsets != nullptr) offsets[i] = from_float<T>(m);
  }
}

/// Entry `i` of the compact double-quantized buffers (gemm_layout.cuh): dq_codes[i] for i < scale_count
/// (`code`, 0 in padding) and dq_stats[i] for i < kDqStatsHeader + dq_blocks (`stat`); `has_code` /
/// `has_stat` say which of the two i indexes.
NIBBLE_HOST_DEVICE void repack_dq_entry(const PlainWeights& src, const GemmShape& s, const float* map, std::int64_t i,
                                        bool* has_code, std::uint8_t* code, bool* has_stat, float* stat) {
  const std::int64_t plain_groups = dq_plain_groups(s, src.group_size);
  *has_code = i < s.scale_count();
  *code = 0;
  if (*has_code) {
    const std::int64_t group = i / s.n_pad, n = i % s.n_pad;
    if (n < s.n && group < plain_groups) *code = src.dq_codes[n * plain_groups + group];
  }
  *has_stat = i < kDqStatsHeader + dq_blocks(s, src.group_size);
  *stat = 0.0f;
  if (*has_stat) {
    if (i < 256)
      *stat = map[i];
    else if (i == kDqOffsetIndex)
      *stat = *src.dq_offset;
    else if (i >= kDqStatsHeader)
      *stat = src.dq_absmax2[i - kDqStatsHeader];
  }
}

template <int kHeaderOnly = 0>
__global__ void repack_dq_kernel(PlainWeights src, GemmShape s, const __grid_constant__ DynamicMap map,
                                 std::uint8_t* dq_codes, float* dq_stats, std::int64_t entries) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < entries;
       i += std::int64_t(gridDim.x) * blockDim.x) {
    bool has_code, has_stat;
    std::uint8_t code;
    float stat;
    repack_dq_entry(src, s, map.v, i, &has_code, &code, &has_stat, &stat);
    if (has_code) dq_codes[i] = code;
    if (has_stat) dq_stats[i] = stat;
  }
}

}  // namespace layout

namespace detail {
/// The shape checks of repack, in the order every entry point uses (quantize, repack, GEMM): format / type,
/// group size supported, shape (>= 1, K even), K a multiple of the group.
inline Status validate_repack_shape(const PlainWeights& src, DType act) {
  if (!is_valid(src.format) || !has_gemm_layout(src.format) || (act != DType::kF16 && act != DType::kBF16))
    return Status::kErrorUnsupportedFormat;
  if (!is_supported_group_size(src.group_size)) return Status::kErrorGroupSize;
  if (src.n < 1 || src.k < 2 || src.k % 2 != 0) return Status::kErrorInvalidShape;
  if (src.group_size != kPerChannel && src.k % src.group_size != 0) return Status::kErrorGroupSize;
  return Status::kSuccess;
}
inline Status validate_repack(const PlainWeights& src, DType act, const void* codes, const void* scales,
                              const void* zeros, const void* offsets) {
  NIBBLE_RETURN_IF_ERROR(validate_repack_shape(src, act));
  if (src.ld_codes < src.k / 2) return Status::kErrorLeadingDimension;
  if (src.codes == nullptr || codes == nullptr || scales == nullptr) return Status::kErrorNullPointer;
  if (src.dq_codes == nullptr ? src.scales == nullptr : (src.dq_absmax2 == nullptr || src.dq_offset == nullptr))
    return Status::kErrorNullPointer;
  if (has_zero_point(src.format) && (src.zeros == nullptr || zeros == nullptr)) return Status::kErrorNullPointer;
  // (affine u4 through an entry point without an offsets buffer lands here too)
  if (has_offset(src.format) && (src.offsets == nullptr || offsets == nullptr)) return Status::kErrorNullPointer;
  if (!is_aligned(codes, 16) || !is_aligned(scales, 16) || !is_aligned(zeros, 16) || !is_aligned(offsets, 16))
    return Status::kErrorMisalignedPointer;
  if (src.n > (std::int64_t(1) << 40) / src.ld_codes) return Status::kErrorSizeOverflow;
  return Status::kSuccess;
}

/// repack_dq's checks: repack's shape checks, a double-quantized nf4 / fp4 source, the buffers.
inline Status validate_repack_dq(const PlainWeights& src, DType act, const void* codes, const void* dq_codes,
                                 const void* dq_stats) {
  NIBBLE_RETURN_IF_ERROR(validate_repack_shape(src, act));
  if (!is_codebook(src.format)) return Status::kErrorUnsupportedFormat;
  if (src.ld_codes < src.k / 2) return Status::kErrorLeadingDimension;
  if (src.codes == nullptr || codes == nullptr || dq_codes == nullptr || dq_stats == nullptr)
    return Status::kErrorNullPointer;
  if (src.dq_codes == nullptr || src.dq_absmax2 == nullptr || src.dq_offset == nullptr)
    return Status::kErrorNullPointer;  // (a source without double quantization: use repack)
  if (!is_aligned(codes, 16) || !is_aligned(dq_codes, 16) || !is_aligned(dq_stats, 16))
    return Status::kErrorMisalignedPointer;
  if (src.n > (std::int64_t(1) << 40) / src.ld_codes) return Status::kErrorSizeOverflow;
  return Status::kSuccess;
}

/// Entries repack_dq walks: the larger of the dq codes and dq_stats (layout::repack_dq_entry).
inline std::int64_t repack_dq_entries(const layout::GemmShape& s, int group_size) {
  return std::max<std::int64_t>(s.scale_count(), layout::kDqStatsHeader + layout::dq_blocks(s, group_size));
}

inline GemmWeights make_view(const PlainWeights& src, DType act, const void* codes, const void* scales,
                             const void* zeros, const void* offsets) {
  GemmWeights w;
  w.format = src.format;
  w.group_size = src.group_size;
  w.n = src.n;
  w.k = src.k;
  w.scale_type = act;
  w.codes = static_cast<const std::uint8_t*>(codes);
  w.scales = scales;
  w.zeros = has_zero_point(src.format) ? static_cast<const std::uint8_t*>(zeros) : nullptr;
  w.offsets = has_offset(src.format) ? offsets : nullptr;
  return w;
}
/// The view repack_dq writes: codes and the compact dq buffers, no scales.
inline GemmWeights make_dq_view(const PlainWeights& src, DType act, const void* codes, const void* dq_codes,
                                const void* dq_stats) {
  GemmWeights w = make_view(src, act, codes, nullptr, nullptr, nullptr);
  w.dq_codes = static_cast<const std::uint8_t*>(dq_codes);
  w.dq_stats = static_cast<const float*>(dq_stats);
  return w;
}
}  // namespace detail

/// Bytes of device workspace repack() needs for `src` and `act`: none (0), after the shape checks of
/// repack (the same Status for the same bad shape as every entry point). The output buffers' sizes are
/// gemm_weight_bytes().
inline Status get_repack_workspace_size(const PlainWeights& src, DType act, std::size_t* bytes) {
  if (bytes == nullptr) return Status::kErrorNullPointer;
  NIBBLE_RETURN_IF_ERROR(detail::validate_repack_shape(src, act));
  *bytes = 0;
  return Status::kSuccess;
}

/// Repacks `src` (device memory) into the GEMM layout for activations of type `act` (kF16 / kBF16):
/// `codes`, `scales`, `zeros` (u4 only), `offsets` (affine u4 only) are device buffers of gemm_weight_bytes();
/// `out` receives the view. Scales and offsets are rounded to `act`. Two kernels on `stream`; no allocation,
/// no sync.
template <int kInstantiateOnUse = 0>  // kernels compiled only where repack is called
Status repack(const PlainWeights& src, DType act, void* codes, void* scales, void* zeros, void* offsets,
              GemmWeights* out, cudaStream_t stream) {
  NIBBLE_RETURN_IF_ERROR(detail::validate_repack(src, act, codes, scales, zeros, offsets));
  if (out == nullptr) return Status::kErrorNullPointer;
  NIBBLE_RETURN_IF_ERROR(check_device());
  const layout::GemmShape s = layout::make_gemm_shape(src.n, src.k, src.group_size);
  const std::int64_t words = s.code_bytes() / 4;
  constexpr int kThreads = 256;
  auto blocks = [](std::int64_t work) { return unsigned(std::min<std::int64_t>((work + 255) / 256, 65536)); };
  std::uint8_t* z = has_zero_point(src.format) ? static_cast<std::uint8_t*>(zeros) : nullptr;
  void* o = has_offset(src.format) ? offsets : nullptr;
  layout::repack_codes_kernel<>
      <<<blocks(words), kThreads, 0, stream>>>(src, s, static_cast<std::uint32_t*>(codes), words);
  NIBBLE_CHECK_LAUNCH();
  if (act == DType::kF16) {
    layout::repack_scales_kernel<__half><<<blocks(s.scale_count()), kThreads, 0, stream>>>(
        src, s, dynamic_map(), static_cast<__half*>(scales), z, static_cast<__half*>(o));
  } else {
    layout::repack_scales_kernel<__nv_bfloat16><<<blocks(s.scale_count()), kThreads, 0, stream>>>(
        src, s, dynamic_map(), static_cast<__nv_bfloat16*>(scales), z, static_cast<__nv_bfloat16*>(o));
  }
  NIBBLE_CHECK_LAUNCH();
  *out = detail::make_view(src, act, codes, scales, zeros, offsets);
  return Status::kSuccess;
}
/// repack() for the formats without offsets (affine u4 needs the overload above: kErrorNullPointer here).
template <int kInstantiateOnUse = 0>
Status repack(const PlainWeights& src, DType act, void* codes, void* scales, void* zeros, GemmWeights* out,
              cudaStream_t stream) {
  return repack<kInstantiateOnUse>(src, act, codes, scales, zeros, nullptr, out, stream);
}

/// Repacks a double-quantized nf4 / fp4 `src` (device memory; PackedMatrix.dq, e.g. from quantize with
/// double_quant or import_bnb) into the GEMM layout with its scales kept compact (gemm_weight_bytes(...,
/// true): `codes`, `dq_codes`, `dq_stats`): the 8-bit codes, absmax2 and the offset as they are, no 16-bit
/// scales. The GEMM decodes them to the scales repack() would have written, bit for bit (so its C is
/// repack()'s C, bit for bit). Two kernels on `stream`; no allocation, no sync.
template <int kInstantiateOnUse = 0>
Status repack_dq(const PlainWeights& src, DType act, void* codes, void* dq_codes, void* dq_stats, GemmWeights* out,
                 cudaStream_t stream) {
  NIBBLE_RETURN_IF_ERROR(detail::validate_repack_dq(src, act, codes, dq_codes, dq_stats));
  if (out == nullptr) return Status::kErrorNullPointer;
  NIBBLE_RETURN_IF_ERROR(check_device());
  const layout::GemmShape s = layout::make_gemm_shape(src.n, src.k, src.group_size);
  const std::int64_t words = s.code_bytes() / 4;
  const std::int64_t entries = detail::repack_dq_entries(s, src.group_size);
  constexpr int kThreads = 256;
  auto blocks = [](std::int64_t work) { return unsigned(std::min<std::int64_t>((work + 255) / 256, 65536)); };
  layout::repack_codes_kernel<>
      <<<blocks(words), kThreads, 0, stream>>>(src, s, static_cast<std::uint32_t*>(codes), words);
  NIBBLE_CHECK_LAUNCH();
  layout::repack_dq_kernel<><<<blocks(entries), kThreads, 0, stream>>>(
      src, s, dynamic_map(), static_cast<std::uint8_t*>(dq_codes), static_cast<float*>(dq_stats), entries);
  NIBBLE_CHECK_LAUNCH();
  *out = detail::make_dq_view(src, act, codes, dq_codes, dq_stats);
  return Status::kSuccess;
}

/// CPU version of repack_dq(): `src` and the outputs in host memory; identical bytes.
inline Status repack_dq_host(const PlainWeights& src, DType act, void* codes, void* dq_codes, void* dq_stats,
                             GemmWeights* out) {
  NIBBLE_RETURN_IF_ERROR(detail::validate_repack_dq(src, act, codes, dq_codes, dq_stats));
  if (out == nullptr) return Status::kErrorNullPointer;
  const layout::GemmShape s = layout::make_gemm_shape(src.n, src.k, src.group_size);
  auto* dst = static_cast<std::uint32_t*>(codes);
  for (std::int64_t w = 0; w < s.code_bytes() / 4; ++w) dst[w] = layout::repack_word(src, s, layout::word_coord(s, w));
  const std::int64_t entries = detail::repack_dq_entries(s, src.group_size);
  for (std::int64_t i = 0; i < entries; ++i) {
    bool has_code, has_stat;
    std::uint8_t code;
    float stat;
    layout::repack_dq_entry(src, s, dynamic_map().v, i, &has_code, &code, &has_stat, &stat);
    if (has_code) static_cast<std::uint8_t*>(dq_codes)[i] = code;
    if (has_stat) static_cast<float*>(dq_stats)[i] = stat;
  }
  *out = detail::make_dq_view(src, act, codes, dq_codes, dq_stats);
  return Status::kSuccess;
}

/// CPU version of repack(): `src` and the outputs in host memory; identical bytes.
inline Status repack_host(const PlainWeights& src, DType act, void* codes, void* scales, void* zeros, void* offsets,
                          GemmWeights* out) {
  NIBBLE_RETURN_IF_ERROR(detail::validate_repack(src, act, codes, scales, zeros, offsets));
  if (out == nullptr) return Status::kErrorNullPointer;
  const layout::GemmShape s = layout::make_gemm_shape(src.n, src.k, src.group_size);
  auto* dst = static_cast<std::uint32_t*>(codes);
  for (std::int64_t w = 0; w < s.code_bytes() / 4; ++w) dst[w] = layout::repack_word(src, s, layout::word_coord(s, w));
  auto* z = has_zero_point(src.format) ? static_cast<std::uint8_t*>(zeros) : nullptr;
  const bool with_offsets = has_offset(src.format);
  for (std::int64_t i = 0; i < s.scale_count(); ++i) {  // store_scale rounds to act (from_float, as the kernel)
    std::uint8_t zz;
    float m;
    store_scale(scales, act, i, layout::repack_scale(src, s, dynamic_map().v, i, &zz, &m));
    if (z != nullptr) z[i] = zz;
    if (with_offsets) store_scale(offsets, act, i, m);
  }
  *out = detail::make_view(src, act, codes, scales, zeros, offsets);
  return Status::kSuccess;
}
/// repack_host() for the formats without offsets (affine u4: kErrorNullPointer).
inline Status repack_host(const PlainWeights& src, DType act, void* codes, void* scales, void* zeros,
                          GemmWeights* out) {
  return repack_host(src, act, codes, scales, zeros, nullptr, out);
}

}  // namespace nibble
