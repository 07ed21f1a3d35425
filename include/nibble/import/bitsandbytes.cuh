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
// swapped into nibble's order (even element low). quant_map must equal nibble's codebook bit for bit, except
// that +0.0 and -0.0 match (bitsandbytes' FP4 list, get_4bit_type, writes code 8 as the integer -0, i.e. +0.0,
// where nibble's codebook holds -0.0f: both decode to a zero weight), else kErrorUnsupportedFormat.
// Double quant maps onto PackedMatrix.dq exactly (codes, absmax2 = nested_absmax, offset = nested_offset)
// when nested_blocksize is 256 and nested_quant_map is nibble's dynamic_map() (the same rule); otherwise it is
// expanded: scales = the fp32 absmax computed as above (bitsandbytes' own arithmetic, so the same floats),
// dq disabled. bnb_import_params says which.
// Refused: K not a multiple of blocksize, blocksize not 32..256 unless equal to K (kErrorGroupSize); under double
// quant a NaN or infinite nested_offset (kErrorInvalidArgument).
//
// Paths: import_bnb_host (host buffers) and import_bnb (device buffers, one kernel on the caller's stream).
// Both run the same checks (check_bnb_import) and the same decoding (bnb_codes_chunk, bnb_scale). The two
// tables (quant_map, nested_quant_map) stay in host memory on both paths: they are checked against nibble's
// tables on the host, and the GPU path passes the one map its kernel reads by value (256 floats).
#pragma once

#include <cmath>
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

/// The tensors: host memory on the CPU path; on the GPU path weight, absmax and nested_absmax are device
/// memory, the two maps host memory (read by the host before the launch).
struct BnbTensors {
  const std::uint8_t* weight = nullptr;     ///< [n*k/2]
  const void* absmax = nullptr;             ///< fp32 [nb], or uint8 [nb] when nested
  const float* quant_map = nullptr;         ///< [16], host
  const float* nested_absmax = nullptr;     ///< [ceil(nb / nested_blocksize)] when nested
  const float* nested_quant_map = nullptr;  ///< [256] when nested, host
};

namespace detail {
// Two tables, entry by entry: the same bits, or both a zero of either sign (the weights they decode to are the
// same, and so is every product and sum the GEMM forms from them).
inline bool same_table(const float* a, const float* b, int count) {
  for (int i = 0; i < count; ++i) {
    std::uint32_t x = 0, y = 0;
    std::memcpy(&x, a + i, sizeof x);
    std::memcpy(&y, b + i, sizeof y);
    if (x != y && ((x | y) & 0x7fffffffu) != 0u) return false;
  }
  return true;
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
  if (!detail::same_table(t.quant_map, codebook(p.format).v, 16)) return Status::kErrorUnsupportedFormat;
  if (st.nested) {
    // (a NaN or infinite offset would make every scale of the weight NaN / infinite: a silent wrong weight)
    if (st.nested_blocksize <= 0 || !std::isfinite(st.nested_offset)) return Status::kErrorInvalidArgument;
    if (t.nested_quant_map == nullptr || t.nested_absmax == nullptr) return Status::kErrorNullPointer;
    if (!detail::is_aligned(t.nested_quant_map, 4) || !detail::is_aligned(t.nested_absmax, 4))
      return Status::kErrorMisalignedPointer;
    p.double_quant =
        st.nested_blocksize == kDoubleQuantBlock && detail::same_table(t.nested_quant_map, dynamic_map().v, 256);
  }
  NIBBLE_RETURN_IF_ERROR(packed_bytes(st.n, st.k, p).status);
  *out = p;
  return Status::kSuccess;
}

namespace detail {

/// The checks both paths run before writing: bnb_import_params (metadata, shapes, the maps), pointers, the
/// output view. Fills *p.
inline Status check_bnb_import(const BnbQuantState& st, const BnbTensors& t, const PackedMatrix& out, QuantParams* p) {
  NIBBLE_RETURN_IF_ERROR(bnb_import_params(st, t, p));
  if (t.weight == nullptr || t.absmax == nullptr) return Status::kErrorNullPointer;
  if (!st.nested && !is_aligned(t.absmax, 4)) return Status::kErrorMisalignedPointer;
  return check_import_output(out, st.n, st.k, *p);
}

/// bitsandbytes stores element 2b in the HIGH nibble of byte b, nibble in the low one: swap the two
/// nibbles of every byte of w.
NIBBLE_HOST_DEVICE constexpr std::uint32_t bnb_swap_nibbles(std::uint32_t w) {
  return ((w >> 4) & 0x0F0F0F0Fu) | ((w << 4) & 0xF0F0F0F0u);
}
static_assert(bnb_swap_nibbles(0x12345678u) == 0x21436587u, "nibbles swapped within each byte");

/// 16 code bytes (bytes 16q .. 16q + 15 of the row, fewer at its end) of row r.
NIBBLE_HOST_DEVICE void bnb_codes_chunk(const BnbQuantState& st, const BnbTensors& t, std::int64_t r, std::int64_t q,
                                        const PackedMatrix& out) {
  const std::int64_t row_bytes = st.k / 2, left = row_bytes - 16 * q;
  const int bytes = int(left < 16 ? left : 16);
  std::uint32_t w[4];
  load_code_bytes(t.weight + r * row_bytes + 16 * q, bytes, w);
#pragma unroll
  for (int v = 0; v < 4; ++v) w[v] = bnb_swap_nibbles(w[v]);
  store_code_bytes(out.codes + r * out.ld_codes + 16 * q, w, bytes);
}

/// The map of the nested (second-level) codes that the kernel reads, by value: dynamic_map() when the
/// scales stay double-quantized, the checkpoint's nested_quant_map when they are expanded.
struct BnbNestedMap {
  float v[256];
};

/// fp32 scale i of a nested checkpoint, bitsandbytes' arithmetic (dq_scale: product, then sum): the
/// effective scale (double quant kept) or the expanded one. `map` as in BnbNestedMap.
NIBBLE_HOST_DEVICE float bnb_scale(const BnbQuantState& st, const BnbTensors& t, const float* map, bool double_quant,
                                   std::int64_t i) {
  const std::uint8_t code = static_cast<const std::uint8_t*>(t.absmax)[i];
  const std::int64_t block = double_quant ? kDoubleQuantBlock : st.nested_blocksize;
  return dq_scale(map, code, t.nested_absmax[i / block], st.nested_offset);
}

/// The work items of an import: one per 16 code bytes of a row (consecutive items: consecutive bytes of a
/// row), then one per scale (with double quant kept: also its code), then, double quant kept, one per
/// absmax2 entry and one for the offset. The CPU path runs them in order, the kernel one per thread.
/// `map` as in BnbNestedMap (unused when not nested).
NIBBLE_HOST_DEVICE std::int64_t bnb_items(const BnbQuantState& st, const PackedMatrix& out) {
  const std::int64_t scales = out.num_scales();
  const std::int64_t dq = out.dq.enabled ? (scales + kDoubleQuantBlock - 1) / kDoubleQuantBlock + 1 : 0;
  return st.n * ((st.k / 2 + 15) / 16) + scales + dq;
}
NIBBLE_HOST_DEVICE void bnb_item(const BnbQuantState& st, const BnbTensors& t, const float* map,
                                 const PackedMatrix& out, std::int64_t i) {
  const std::int64_t chunks = (st.k / 2 + 15) / 16, code_items = st.n * chunks, scales = out.num_scales();
  if (i < code_items) {
    bnb_codes_chunk(st, t, i / chunks, i % chunks, out);
  } else if (i < code_items + scales) {
    const std::int64_t s = i - code_items;
    auto* scale = static_cast<float*>(out.scales);
    if (!st.nested) {
      scale[s] = static_cast<const float*>(t.absmax)[s];
    } else {
      if (out.dq.enabled) out.dq.codes[s] = static_cast<const std::uint8_t*>(t.absmax)[s];
      // With double quant kept, `scales` is the quantizer's fp32 scratch, read by nobody; it gets the
      // effective scales anyway so that a caller who prints it sees the real values.
      scale[s] = bnb_scale(st, t, map, out.dq.enabled, s);
    }
  } else if (i < bnb_items(st, out) - 1) {
    const std::int64_t b = i - code_items - scales;
    out.dq.absmax2[b] = t.nested_absmax[b];
  } else {
    *out.dq.offset = st.nested_offset;
  }
}

template <int kThreads>  // a template: defined in a header without breaking the one-definition rule
__global__ void __launch_bounds__(kThreads)
    import_bnb_kernel(BnbQuantState st, BnbTensors t, BnbNestedMap map, PackedMatrix out) {
  __shared__ float sMap[256];  // the nested map, indexed by data: shared rather than the parameter space
  if (st.nested)
    for (int e = int(threadIdx.x); e < 256; e += int(blockDim.x)) sMap[e] = map.v[e];
  __syncthreads();
  const std::int64_t items = bnb_items(st, out);
  for (std::int64_t i = import_item(); i < items; i += import_stride()) bnb_item(st, t, sMap, out, i);
}

}  // namespace detail

/// CPU path: imports t into `out` (host buffers carved with bnb_import_params' parameters).
inline Status import_bnb_host(const BnbQuantState& st, const BnbTensors& t, const PackedMatrix& out) {
  QuantParams p;
  NIBBLE_RETURN_IF_ERROR(detail::check_bnb_import(st, t, out, &p));
  const float* map = !st.nested ? nullptr : p.double_quant ? dynamic_map().v : t.nested_quant_map;
  const std::int64_t items = detail::bnb_items(st, out);  // scales: nb, as K % blocksize == 0
  for (std::int64_t i = 0; i < items; ++i) detail::bnb_item(st, t, map, out, i);
  return Status::kSuccess;
}

/// GPU path: imports t (weight, absmax, nested_absmax in device memory; quant_map and nested_quant_map in
/// HOST memory, see BnbTensors) into `out` (device buffers carved with bnb_import_params' parameters) with
/// one kernel on `stream`: no allocation, no synchronization, no device-to-host read, so it can be captured
/// in a CUDA graph (the maps are read when the call is made, and the one the kernel needs travels with the
/// launch). Bit-identical to import_bnb_host (but for the encoding of a NaN that dq_scale computes: the GPU's
/// is canonical, the host's may keep an input's payload); refuses exactly what it refuses, with the same
/// Status (every byte is valid data, so there is no error word). ~2 bytes moved per weight plus the scales.
inline Status import_bnb(const BnbQuantState& st, const BnbTensors& t, const PackedMatrix& out, cudaStream_t stream) {
  QuantParams p;
  NIBBLE_RETURN_IF_ERROR(detail::check_bnb_import(st, t, out, &p));
  NIBBLE_RETURN_IF_ERROR(check_device());
  detail::BnbNestedMap map{};
  if (st.nested) std::memcpy(map.v, p.double_quant ? dynamic_map().v : t.nested_quant_map, sizeof map.v);
  const std::int64_t items = detail::bnb_items(st, out);
  detail::import_bnb_kernel<detail::kImportThreads>
      <<<detail::import_blocks(items), detail::kImportThreads, 0, stream>>>(st, t, map, out);
  NIBBLE_CHECK_LAUNCH();
  return Status::kSuccess;
}

}  // namespace nibble
