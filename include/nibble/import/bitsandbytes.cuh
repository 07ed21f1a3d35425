// nibble/import/bitsandbytes.cuh — bitsandbytes 4-bit weights (Params4bit as transformers saves them in
// safetensors) into nibble's kNf4 / kFp4, double quantization included.
//
// What the checkpoint holds (bitsandbytes/functional.py: quantize_4bit, dequantize_4bit, QuantState.as_dict
// / from_dict; csrc/kernels.cu: kQuantizeBlockwise packs the FIRST value of a pair in the HIGH nibble), for
// a weight of shape [N, K] flattened row-major, blocks of `blocksize` consecutive flat elements:
//
//   tensor                            dtype / shape        meaning
//   --------------------------------  -------------------  ---------------------------------------------------
//   weight                            uint8 [N*K/2, 1]     byte b: element 2b in bits 4-7, element 2b+1 in bits 0-3
//   absmax                            fp32 [nb]            nb = ceil(N*K / blocksize); or, double-quantized:
//                                     uint8 [nb]           8-bit codes of (absmax - nested_offset)
//   nested_absmax, nested_quant_map   fp32 [ceil(nb/256)], fp32 [256]   (double quant; nested_blocksize 256)
//   quant_map                         fp32 [16]            the NF4 / FP4 table
//   quant_state.bitsandbytes__nf4/fp4 JSON: quant_type, blocksize, shape, dtype, nested_blocksize,
//                                     nested_offset (fp32), nested_dtype
//
//   absmax_i  = nested_quant_map[code_i] * nested_absmax[i / 256] + nested_offset   (two fp32 roundings)
//   weight_e  = quant_map[nibble_e] * absmax_{e / blocksize}
//
// Mapping. Blocks are nibble's groups when K is a multiple of blocksize (block i is group i % (K/bs) of row
// i / (K/bs): the same flat index i), so absmax copies 1:1; blocksize == K is per-channel. The nibbles are
// swapped into nibble's order (even element low). quant_map must equal nibble's codebook bit for bit (it
// does for every bitsandbytes release: both come from the same table), else kErrorUnsupportedFormat.
// Double quant maps onto PackedMatrix.dq exactly (codes, absmax2 = nested_absmax, offset = nested_offset)
// when nested_blocksize is 256 and nested_quant_map is bit for bit nibble's dynamic_map(); otherwise it is
// expanded: scales = the fp32 absmax computed as above (bitsandbytes' own arithmetic, so the same floats),
// dq disabled. bnb_import_params says which.
// Refused: K not a multiple of blocksize, blocksize not 32..256 unless equal to K (kErrorGroupSize).
#pragma once

#include <cstring>

#include "../format/codebook.cuh"
#include "../quant/double_quant.cuh"
#include "common.cuh"

namespace nibble {

/// bitsandbytes' quant_type.
enum class BnbQuantType : std::uint8_t { kNf4 = 0, kFp4 = 1 };

/// The quant_state JSON fields the import depends on.
struct BnbQuantState {
  BnbQuantType quant_type = BnbQuantType::kNf4;
  std::int64_t blocksize = 64;
  std::int64_t n = 0;   ///< shape[0]
  std::int64_t k = 0;   ///< shape[1], even
  bool nested = false;  ///< double quantization (compress_statistics)
  std::int64_t nested_blocksize = 256;
  float nested_offset = 0.0f;
};

/// The tensors (host memory).
struct BnbTensors {
  const std::uint8_t* weight = nullptr;     ///< [n*k/2]
  const void* absmax = nullptr;             ///< fp32 [nb], or uint8 [nb] when nested
  const float* quant_map = nullptr;         ///< [16]
  const float* nested_absmax = nullptr;     ///< [ceil(nb / nested_blocksize)] when nested
  const float* nested_quant_map = nullptr;  ///< [256] when nested
};

namespace detail {
inline bool same_bits(const float* a, const float* b, int count) {
  return std::memcmp(a, b, std::size_t(count) * sizeof(float)) == 0;
}
}  // namespace detail

/// Parameters of the PackedMatrix import_bnb_host writes (kNf4 / kFp4, fp32 scales, dq when exactly
/// representable). Reads nested_quant_map when nested (host). Checks metadata, shapes and quant_map.
inline Status bnb_import_params(const BnbQuantState& st, const BnbTensors& t, QuantParams* out) {
  if (out == nullptr) return Status::kErrorNullPointer;
  if (static_cast<unsigned>(st.quant_type) > 1u) return Status::kErrorUnsupportedFormat;
  if (st.n <= 0 || st.k <= 0 || st.k % 2 != 0) return Status::kErrorInvalidShape;
  if (st.blocksize <= 0) return Status::kErrorGroupSize;
  QuantParams p;
  p.format = st.quant_type == BnbQuantType::kNf4 ? Format::kNf4 : Format::kFp4;
  p.scale_type = DType::kF32;
  NIBBLE_RETURN_IF_ERROR(detail::import_group_size(st.blocksize, st.k, &p.group_size));
  NIBBLE_RETURN_IF_ERROR(packed_bytes(st.n, st.k, p).status);
  if (t.quant_map == nullptr) return Status::kErrorNullPointer;
  if (!detail::is_aligned(t.quant_map, 4)) return Status::kErrorMisalignedPointer;
  if (!detail::same_bits(t.quant_map, codebook(p.format).v, 16)) return Status::kErrorUnsupportedFormat;
  if (st.nested) {
    if (st.nested_blocksize <= 0) return Status::kErrorInvalidArgument;
    if (t.nested_quant_map == nullptr || t.nested_absmax == nullptr) return Status::kErrorNullPointer;
    if (!detail::is_aligned(t.nested_quant_map, 4) || !detail::is_aligned(t.nested_absmax, 4))
      return Status::kErrorMisalignedPointer;
    p.double_quant =
        st.nested_blocksize == kDoubleQuantBlock && detail::same_bits(t.nested_quant_map, dynamic_map().v, 256);
  }
  NIBBLE_RETURN_IF_ERROR(packed_bytes(st.n, st.k, p).status);
  *out = p;
  return Status::kSuccess;
}

/// CPU path: imports t into `out` (host buffers carved with bnb_import_params' parameters).
inline Status import_bnb_host(const BnbQuantState& st, const BnbTensors& t, const PackedMatrix& out) {
  QuantParams p;
  NIBBLE_RETURN_IF_ERROR(bnb_import_params(st, t, &p));
  if (t.weight == nullptr || t.absmax == nullptr) return Status::kErrorNullPointer;
  if (!st.nested && !detail::is_aligned(t.absmax, 4)) return Status::kErrorMisalignedPointer;
  NIBBLE_RETURN_IF_ERROR(detail::check_import_output(out, st.n, st.k, p));
  const std::int64_t n = st.n, k = st.k, scales = out.num_scales();  // == nb: K % blocksize == 0
  for (std::int64_t r = 0; r < n; ++r)
    for (std::int64_t b = 0; b < k / 2; ++b) {
      const std::uint8_t v = t.weight[r * (k / 2) + b];
      out.codes[r * out.ld_codes + b] = std::uint8_t((v >> 4) | (v << 4));  // high nibble = even element
    }
  if (!st.nested) {
    std::memcpy(out.scales, t.absmax, std::size_t(scales) * sizeof(float));
    return Status::kSuccess;
  }
  const auto* codes = static_cast<const std::uint8_t*>(t.absmax);
  if (p.double_quant) {
    std::memcpy(out.dq.codes, codes, std::size_t(scales));
    const std::int64_t blocks2 = (scales + kDoubleQuantBlock - 1) / kDoubleQuantBlock;
    std::memcpy(out.dq.absmax2, t.nested_absmax, std::size_t(blocks2) * sizeof(float));
    *out.dq.offset = st.nested_offset;
    // `scales` is the quantizer's fp32 scratch, read by nobody; fill it with the effective scales anyway
    // so that a caller who prints it sees the real values.
    for (std::int64_t i = 0; i < scales; ++i)
      static_cast<float*>(out.scales)[i] =
          dq_scale(dynamic_map().v, codes[i], t.nested_absmax[i / kDoubleQuantBlock], st.nested_offset);
    return Status::kSuccess;
  }
  for (std::int64_t i = 0; i < scales; ++i)
    static_cast<float*>(out.scales)[i] =
        dq_scale(t.nested_quant_map, codes[i], t.nested_absmax[i / st.nested_blocksize], st.nested_offset);
  return Status::kSuccess;
}

}  // namespace nibble
