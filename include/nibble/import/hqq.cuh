// nibble/import/hqq.cuh — HQQ (mobiusml/hqq, Half-Quadratic Quantization) 4-bit linear layers into nibble's
// kAffineU4 (w = q * scale + offset), group along K, fp32 scales and offsets.
//
// What an HQQLinear holds (hqq 0.2.8, hqq/core/quantize.py: Quantizer.quantize, Quantizer.dequantize,
// HQQLinear.state_dict; hqq/core/bitpack.py: BitPack.pack_4bit_u8 / unpack_4bit_u8), for W [N, K] =
// meta["shape"] (N = out_features, K = in_features), axis = 1, group g (G = K / g groups per row, N * G groups):
//
//   tensor / meta   dtype / shape             meaning
//   --------------  ------------------------  -----------------------------------------------------------------
//   W_q             uint8 [N*G/2, g]          row r, byte c: HIGH nibble = code of group r, element c; LOW nibble
//                                             = code of group r + N*G/2, element c
//   scale, zero     compute dtype [N*G, 1]    group R = n * G + j (row n, columns j*g .. j*g + g - 1)
//   nbits 4, group_size g, axis 1, packing "4bit_u8", shape [N, K], view_as_float, compute_dtype, ...
//
//   weight (n, k) = (q - zero[R]) * scale[R],  R = n * G + k / g        (Quantizer.dequantize)
//
// Where that comes from: Quantizer.quantize views W (row-major) as [N*G, g] for axis = 1 (so the group rows are
// the flat groups R, K % g == 0 keeping them inside one row of W), takes the min / max along axis 1 (one scale
// and zero per group row), and packs the [N*G, g] codes with pack_4bit_u8, which ORs the FIRST half of the rows
// shifted left by 4 with the SECOND half: row r of W_q pairs group rows r and r + N*G/2 (the top and bottom
// halves of the weight, not neighbours). unpack_4bit_u8 undoes it (high nibbles first). The zero point is a
// float (the proximal optimizer, hqq/core/optimize.py, moves it off the integers) and the scale is stored
// already inverted (dequantize multiplies). HQQLinear.cuda (Quantizer.to_inplace) casts scale and zero to the
// compute dtype before they are saved, so checkpoints hold fp16 or bf16 (fp32 where compute_dtype is float32).
// With `view_as_float` W_q's bytes are relabelled as the compute dtype ([N*G/2, g / 2] of fp16): same bytes.
// group_size None (HQQLinear.initialize turns it into in_features) is one group per row: kCheckpointPerChannel.
//
// nibble: codes as stored (unsigned 0..15), scale = the stored scale widened to fp32 (exact), offset =
// -(zero * scale) in fp32 (one rounding). Dequantized with nibble's kAffineU4 rule (quant/group.cuh
// dequantize_value: fp32 q * s, then fp32 + offset), every weight is:
//   fp16 scale and zero: EXACTLY (q - zero) * scale rounded once to fp32 — q * s (4 x 11 significant bits) and
//     zero * s (11 x 11 = 22 bits, within fp32's normal range) are exact fp32 products, so only the sum rounds.
//   bf16: the same (4 x 8 and 8 x 8 bits) wherever zero * s and 15 * s stay inside fp32's normal range (bf16
//     has fp32's exponent range, so products past 2^128 overflow and ones below 2^-126 may lose bits).
//   fp32: not exact: q * s and zero * s round too (three roundings; error <= (|q s| + |zero s| + |w|) * 2^-24).
// HQQ's own Quantizer.dequantize runs in the compute dtype: eager PyTorch rounds (q - zero) to fp16 / bf16, then
// the product (two roundings of the compute dtype; torch.compile may keep the intermediate in fp32). nibble's
// weight is the exact value both approximate. Rounded to the compute dtype it equals HQQ's eager result wherever
// q - zero is exact in that dtype (an integer zero, as round_zero leaves it before the optimizer, or a zero
// close enough to q), and elsewhere it can differ by one unit in the last place of the compute dtype: the extra
// rounding of q - zero (relative <= 2^-11 fp16, 2^-8 bf16) moves the product by at most about one ulp before
// the final rounding. On the fixtures of tests/import/fixtures/make_hqq_fixture.py (optimizer-like zeros) 5 of
// 8,288 weights differ, each by 1 ulp. Like GGUF Q4_K, the GEMM layout then rounds scale and offset to the
// activation type (repack): an fp16 offset keeps 11 of zero * s's up to 22 significant bits (relative error
// <= 2^-11), bf16 8 (<= 2^-8), and the GEMM's q * s + m runs in the activation type.
//
// Paths: import_hqq_host (host buffers) and import_hqq (device buffers, one kernel on the caller's stream). Both
// run check_hqq_import and the same work item (hqq_item: 32 bytes of one W_q row, i.e. 32 codes of its two group
// rows, plus, for the row's first chunk, their scales and offsets), so the kernel writes the CPU path's bytes.
// A NaN scale or offset is stored as the canonical NaN 0x7FFFFFFF on both paths (the GPU's, whatever the input's
// payload), so the two are bit-identical for every input. No data is refused: every nibble is a valid code and
// every float a scale or zero, Inf and NaN included (copied / multiplied as they are), so there is no error word.
//
// Refused with a Status (the same on both paths, before anything is written): nbits other than 4, axis 0,
// channel_wise false, packing other than "4bit_u8" (bitpack False), quantized scale / zero (quant_scale,
// quant_zero: meta-data quantization, deprecated in hqq) or an invalid scale / zero dtype
// (kErrorUnsupportedFormat); axis other than 0 / 1 (kErrorInvalidArgument); N or K <= 0 or K odd, an odd number
// of groups N * G (pack_4bit_u8 cannot pair the rows), or stored tensor shapes that disagree with meta["shape"]
// and the group (W_q rows != N*G/2 or row bytes != g, scale / zero elements != N*G) (kErrorInvalidShape); a group
// nibble lacks (32, 64, 128, 256 or the whole row) or K not a multiple of it (kErrorGroupSize); sizes past int64
// (kErrorSizeOverflow); a null pointer (kErrorNullPointer); scale / zero not aligned to their element size
// (kErrorMisalignedPointer); an output view other than hqq_import_params' (kErrorInvalidArgument).
// axis 0 is refused because it does not group along K: Quantizer.quantize views W as [g, N*K/g] and reduces
// along axis 0, so group j holds the flat elements j, j + N*K/g, j + 2 N*K/g, ... — where g divides N, g elements of
// ONE column k in rows spaced N/g apart — which nibble's [N, K] layout (groups of consecutive k in one row) cannot
// hold. (HQQ's ATen backend uses axis 0; its torchao / bitblas / gemlite backends, hqq/backends/*.py, require axis 1,
// hqq_base_quant_config's default.)
#pragma once

#include "common.cuh"

namespace nibble {

/// The HQQ meta-data / quant_config fields the import depends on.
struct HqqConfig {
  int nbits = 4;             ///< meta["nbits"]; only 4
  int group_size = 64;       ///< meta["group_size"]: 32, 64, 128, 256, K, or kCheckpointPerChannel (None)
  int axis = 1;              ///< meta["axis"]; only 1 (0 groups along N: kErrorUnsupportedFormat)
  bool channel_wise = true;  ///< weight_quant_params["channel_wise"]; only true (false: one scale per tensor)
  bool bitpacked = true;     ///< meta["packing"] == "4bit_u8"; false (packing None: unpacked W_q) is refused
  bool quant_scale = false;  ///< meta["quant_scale"]; only false (8-bit quantized scales are not supported)
  bool quant_zero = false;   ///< meta["quant_zero"]; only false
};

/// One HQQ linear layer (host memory on the CPU path, device memory on the GPU path), with the shapes of the
/// stored tensors so that the importer can check them against meta["shape"] and the group.
struct HqqTensors {
  std::int64_t n = 0;                 ///< meta["shape"][0], out_features
  std::int64_t k = 0;                 ///< meta["shape"][1], in_features (even)
  const std::uint8_t* w_q = nullptr;  ///< W_q's bytes (any alignment; with view_as_float the same bytes)
  std::int64_t w_q_rows = 0;          ///< W_q.shape[0]: N * G / 2
  std::int64_t w_q_row_bytes = 0;     ///< W_q.shape[1] * W_q.element_size(): the group size (K per channel)
  const void* scale = nullptr;        ///< meta["scale"], N * G elements of scale_type
  const void* zero = nullptr;         ///< meta["zero"], N * G elements of zero_type
  std::int64_t scale_count = 0;       ///< meta["scale"].numel()
  std::int64_t zero_count = 0;        ///< meta["zero"].numel()
  DType scale_type = DType::kF16;     ///< the compute dtype: kF16, kBF16 or kF32
  DType zero_type = DType::kF16;
};

namespace detail {

/// The low nibbles of x's four bytes packed into 16 bits (byte b's low nibble -> nibble b).
NIBBLE_HOST_DEVICE constexpr std::uint32_t gather_low_nibbles(std::uint32_t x) {
  x &= 0x0F0F0F0Fu;                  // byte b holds nibble b
  x = (x | (x >> 4)) & 0x00FF00FFu;  // byte 0 = nibbles 0, 1; byte 2 = nibbles 2, 3
  return (x | (x >> 8)) & 0xFFFFu;   // nibbles 0..3
}
static_assert(gather_low_nibbles(0xA3B2C1D0u) == 0x3210u, "low nibbles in byte order");
static_assert(gather_low_nibbles(0xA3B2C1D0u >> 4) == 0xABCDu, "high nibbles, shifted down first");

/// Elements of one W_q row a work item takes: 32 bytes (two 16-byte loads) = 32 codes of each of its two
/// group rows = 16 code bytes of each (one 16-byte store each).
inline constexpr int kHqqChunk = 32;

/// nibble's group for cfg.group_size on a K-column weight, and the number of group rows N * G, checked.
inline Status hqq_groups(const HqqConfig& cfg, std::int64_t n, std::int64_t k, int* group, std::int64_t* rows) {
  NIBBLE_RETURN_IF_ERROR(import_group_size(cfg.group_size, k, group));
  if (!checked_mul(n, k / effective_group(*group, k), rows)) return Status::kErrorSizeOverflow;
  return Status::kSuccess;
}

}  // namespace detail

/// Parameters of the PackedMatrix import_hqq_host writes: kAffineU4, the checkpoint's group, fp32 scales and
/// offsets (whatever the stored dtype: the offset -zero * scale needs fp32 to stay exact).
inline Status hqq_import_params(const HqqConfig& cfg, const HqqTensors& t, QuantParams* out) {
  if (out == nullptr) return Status::kErrorNullPointer;
  if (cfg.axis != 0 && cfg.axis != 1) return Status::kErrorInvalidArgument;
  if (cfg.nbits != 4 || cfg.axis != 1 || !cfg.channel_wise || !cfg.bitpacked || cfg.quant_scale || cfg.quant_zero ||
      !detail::is_valid(t.scale_type) || !detail::is_valid(t.zero_type))
    return Status::kErrorUnsupportedFormat;
  if (t.n <= 0 || t.k <= 0 || t.k % 2 != 0) return Status::kErrorInvalidShape;
  QuantParams p;
  p.format = Format::kAffineU4;
  p.scale_type = DType::kF32;
  std::int64_t rows = 0;
  NIBBLE_RETURN_IF_ERROR(detail::hqq_groups(cfg, t.n, t.k, &p.group_size, &rows));
  if (rows % 2 != 0) return Status::kErrorInvalidShape;  // pack_4bit_u8 pairs row r with row r + rows / 2
  NIBBLE_RETURN_IF_ERROR(packed_bytes(t.n, t.k, p).status);
  *out = p;
  return Status::kSuccess;
}

namespace detail {

/// The checks both paths run before writing: metadata and shape (hqq_import_params), pointers, the stored
/// tensors' shapes, the output view. Fills *p.
inline Status check_hqq_import(const HqqConfig& cfg, const HqqTensors& t, const PackedMatrix& out, QuantParams* p) {
  NIBBLE_RETURN_IF_ERROR(hqq_import_params(cfg, t, p));
  if (t.w_q == nullptr || t.scale == nullptr || t.zero == nullptr) return Status::kErrorNullPointer;
  if (!is_aligned(t.scale, std::size_t(size_of(t.scale_type))) ||
      !is_aligned(t.zero, std::size_t(size_of(t.zero_type))))
    return Status::kErrorMisalignedPointer;
  int group = 0;
  std::int64_t rows = 0;
  NIBBLE_RETURN_IF_ERROR(hqq_groups(cfg, t.n, t.k, &group, &rows));
  if (t.w_q_rows != rows / 2 || t.w_q_row_bytes != effective_group(group, t.k) || t.scale_count != rows ||
      t.zero_count != rows)
    return Status::kErrorInvalidShape;
  return check_import_output(out, t.n, t.k, *p);
}

/// Element i of a scale / zero array of type `type`, as fp32 (exact).
NIBBLE_HOST_DEVICE float hqq_meta_value(const void* src, std::int64_t i, DType type) {
  switch (type) {
    case DType::kF32:
      return static_cast<const float*>(src)[i];
    case DType::kBF16:
      return to_float(static_cast<const __nv_bfloat16*>(src)[i]);
    default:
      return to_float(static_cast<const __half*>(src)[i]);
  }
}

/// Stores v at element i of an fp32 buffer, a NaN as the canonical 0x7FFFFFFF (the GPU's arithmetic NaN), so
/// that the CPU and GPU paths write the same bits whatever NaN payload the input or the product carried.
NIBBLE_HOST_DEVICE void store_canonical(void* dst, std::int64_t i, float v) {
  if (v != v) {
    static_cast<std::uint32_t*>(dst)[i] = 0x7FFFFFFFu;
  } else {
    static_cast<float*>(dst)[i] = v;
  }
}

/// Scale and offset of group row R (flat group index n * G + j = nibble's scale index).
NIBBLE_HOST_DEVICE void hqq_group(const HqqTensors& t, std::int64_t r, const PackedMatrix& out) {
  const float s = hqq_meta_value(t.scale, r, t.scale_type);
  const float z = hqq_meta_value(t.zero, r, t.zero_type);
  store_canonical(out.scales, r, s);
  store_canonical(out.offsets, r, -mul_rn(z, s));  // (q - z) s = q s + (-(z s))
}

/// Work items: one per (W_q row, kHqqChunk bytes of it); consecutive items take consecutive chunks of a row
/// (coalesced 32-byte reads; the writes follow the groups, also consecutive). hqq_items is the count.
NIBBLE_HOST_DEVICE std::int64_t hqq_chunks_per_row(const PackedMatrix& out) {
  return (effective_group(out.group_size, out.k) + kHqqChunk - 1) / kHqqChunk;
}
NIBBLE_HOST_DEVICE std::int64_t hqq_items(const PackedMatrix& out) {
  return out.num_scales() / 2 * hqq_chunks_per_row(out);
}

/// Stores the codes of elements e0 .. e0 + 2 * bytes - 1 of group row R (words: element e0 + e in nibble e % 8
/// of word e / 8) at their place in nibble's codes: row R / G, columns (R % G) * g + e0 ...
NIBBLE_HOST_DEVICE void hqq_store(const PackedMatrix& out, std::int64_t r, std::int64_t e0, const std::uint32_t (&w)[4],
                                  int bytes) {
  const std::int64_t groups = out.groups_per_row(), g = effective_group(out.group_size, out.k);
  const std::int64_t col = (r % groups) * g + e0;  // even: g and e0 are
  store_code_bytes(out.codes + (r / groups) * out.ld_codes + col / 2, w, bytes);
}

/// Work item i: chunk c of W_q row r, i.e. codes c*32 .. c*32 + 31 of group rows r (the high nibbles) and
/// r + rows / 2 (the low nibbles); with c == 0 also the two groups' scales and offsets.
NIBBLE_HOST_DEVICE void hqq_item(const HqqTensors& t, const PackedMatrix& out, std::int64_t i) {
  const std::int64_t g = effective_group(out.group_size, out.k), chunks = hqq_chunks_per_row(out);
  const std::int64_t r = i / chunks, c = i % chunks, e0 = c * kHqqChunk;
  const int bytes = int(g - e0 < kHqqChunk ? g - e0 : kHqqChunk);  // even, as g is
  const std::uint8_t* src = t.w_q + r * g + e0;
  std::uint32_t w[2][4];  // W_q bytes e0 .. e0 + 31 of row r, little-endian words (past `bytes`: 0, not stored)
  load_code_bytes(src, bytes < 16 ? bytes : 16, w[0]);
  load_code_bytes(src + 16, bytes > 16 ? bytes - 16 : 0, w[1]);
  // Codes word v: elements 8v .. 8v + 7, i.e. the nibbles of W_q words 2v and 2v + 1.
  std::uint32_t top[4], bottom[4];
#pragma unroll
  for (int v = 0; v < 4; ++v) {
    const std::uint32_t a = w[v / 2][(2 * v) % 4], b = w[v / 2][(2 * v + 1) % 4];
    top[v] = gather_low_nibbles(a >> 4) | (gather_low_nibbles(b >> 4) << 16);
    bottom[v] = gather_low_nibbles(a) | (gather_low_nibbles(b) << 16);
  }
  const std::int64_t half = out.num_scales() / 2;
  hqq_store(out, r, e0, top, bytes / 2);
  hqq_store(out, r + half, e0, bottom, bytes / 2);
  if (c == 0) {
    hqq_group(t, r, out);
    hqq_group(t, r + half, out);
  }
}

template <int kThreads>  // a template: defined in a header without breaking the one-definition rule
__global__ void __launch_bounds__(kThreads) import_hqq_kernel(HqqTensors t, PackedMatrix out) {
  const std::int64_t items = hqq_items(out);
  for (std::int64_t i = import_item(); i < items; i += import_stride()) hqq_item(t, out, i);
}

}  // namespace detail

/// CPU path: imports t (host) into `out` (host buffers carved with hqq_import_params' parameters).
inline Status import_hqq_host(const HqqConfig& cfg, const HqqTensors& t, const PackedMatrix& out) {
  QuantParams p;
  NIBBLE_RETURN_IF_ERROR(detail::check_hqq_import(cfg, t, out, &p));
  const std::int64_t items = detail::hqq_items(out);
  for (std::int64_t i = 0; i < items; ++i) detail::hqq_item(t, out, i);
  return Status::kSuccess;
}

/// GPU path: imports t (device buffers) into `out` (device buffers carved with hqq_import_params' parameters)
/// with one kernel on `stream`: no allocation, no synchronization, no host read, so it can be captured in a
/// CUDA graph. Bit-identical to import_hqq_host; refuses exactly what it refuses, with the same Status (no data
/// errors, no error word). About 1 byte moved per weight (half read, half written), plus per group the stored
/// scale and zero and the fp32 scale and offset.
inline Status import_hqq(const HqqConfig& cfg, const HqqTensors& t, const PackedMatrix& out, cudaStream_t stream) {
  QuantParams p;
  NIBBLE_RETURN_IF_ERROR(detail::check_hqq_import(cfg, t, out, &p));
  NIBBLE_RETURN_IF_ERROR(check_device());
  const std::int64_t items = detail::hqq_items(out);
  detail::import_hqq_kernel<detail::kImportThreads>
      <<<detail::import_blocks(items), detail::kImportThreads, 0, stream>>>(t, out);
  NIBBLE_CHECK_LAUNCH();
  return Status::kSuccess;
}

}  // namespace nibble
