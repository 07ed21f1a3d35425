// nibble/import/gptq.cuh — GPTQ checkpoints (AutoGPTQ, GPTQModel; checkpoint_format "gptq" = v1 or
// "gptq_v2") into nibble's plain PackedMatrix, bit-exactly. CPU path and one GPU kernel.
//
// What the checkpoint holds (AutoGPTQ auto_gptq/nn_modules/qlinear/qlinear_cuda_old.py, QuantLinear.pack;
// GPTQModel gptqmodel/nn_modules/qlinear/__init__.py, PackableQuantLinear.pack), for K = in_features,
// N = out_features, G groups of g columns (group_size -1: one group):
//
//   tensor   dtype / shape        meaning
//   -------  -------------------  --------------------------------------------------------------------------
//   qweight  int32 [K/8, N]       word (r, n), nibble i (lowest first) = code q of weight (n, k = 8r + i)
//   qzeros   int32 [G, N/8]       word (j, c), nibble i = stored zero of group j, column n = 8c + i
//   scales   fp16/bf16 [G, N]     scale of group j, column n
//   g_idx    int32 [K]            group of column k (k / g unless desc_act, "act-order")
//
//   weight (n, k) = scales[g_idx[k], n] * (q - z),   z = stored + 1 (v1), z = stored (v2)
// (v1: AutoGPTQ's pack does `zeros -= 1` before packing, its forward `zeros + 1`; GPTQModel's
//  convert_gptq_v1_to_v2_format_module adds 0x11111111 to every qzeros word.)
//
// nibble format. sym=True quantizes with z = 8 for every group (GPTQ quant.py, Quantizer.find_params:
// zero = (maxq + 1) / 2), so q - 8 is a signed int4: kS4 with the nibble q XOR 8 (two's complement of q - 8,
// see thread/pack.cuh). sym=False: kU4 with zero point z. Scales are copied bit for bit in their own type.
// The products (q - z) * s are exact in fp32, so nibble's dequantization gives the checkpoint's weights.
//
// Deciding v1 / v2 by the data as well as the label. With sym=True every qzeros word is 0x77777777 in v1 and
// 0x88888888 in v2: the importer requires the words to agree with the label (GptqCheckpointFormat::kV1 /
// kV2), or picks the format from them (kDetect); anything else is refused (kErrorInvalidArgument). With
// sym=False the data cannot tell the versions apart, so kDetect is refused; a v1 zero nibble of 0xF is
// refused too: no correct v1 writer stores it (z <= 15 is stored as z - 1 <= 14); it is what an old writer
// produced for z = 0, whose `zeros - 1 = -1`, converted to uint32 0xFFFFFFFF and OR-ed into the word, also
// set every higher nibble of that word to 0xF — the zeros it held are lost.
//
// Act-order (g_idx != k / g): the import is the checkpoint with its K columns permuted by
// perm = stable sort of the columns by g_idx (act_order_permutation, common.cuh), so that groups become
// contiguous: column p of the import is column perm[p] of the checkpoint, and W x = W_import x[perm]. The
// caller must permute its activations' columns the same way (permute_columns, permute.cuh).
#pragma once

#include <algorithm>

#include "common.cuh"

namespace nibble {

/// GPTQ's checkpoint_format in quantize_config.json.
enum class GptqCheckpointFormat : std::uint8_t {
  kDetect = 0,  ///< decide from the qzeros words (sym checkpoints only)
  kV1 = 1,      ///< "gptq": stored zero = z - 1 (AutoGPTQ, and GPTQModel's default on save)
  kV2 = 2,      ///< "gptq_v2": stored zero = z
};

/// The quantize_config.json fields the import depends on.
struct GptqConfig {
  int bits = 4;          ///< only 4 is supported
  int group_size = 128;  ///< 32, 64, 128, 256, or -1 (kCheckpointPerChannel) / K for one group per row
  bool sym = true;
  GptqCheckpointFormat checkpoint_format = GptqCheckpointFormat::kV1;
};

/// The tensors of one GPTQ linear layer (host memory on the CPU path, device memory on the GPU path).
struct GptqTensors {
  std::int64_t k = 0;                     ///< in_features, a multiple of 8
  std::int64_t n = 0;                     ///< out_features, a multiple of 8
  const std::int32_t* qweight = nullptr;  ///< [k/8, n]
  const std::int32_t* qzeros = nullptr;   ///< [G, n/8]
  const void* scales = nullptr;           ///< [G, n] of scale_type
  DType scale_type = DType::kF16;
  const std::int32_t* g_idx = nullptr;  ///< [k], HOST memory, CPU path only; null = k / group
};

/// The parameters of the PackedMatrix that import_gptq* writes (carve it with carve_packed_matrix).
/// Checks the metadata and shapes only (no data is read): kErrorUnsupportedFormat (bits != 4, scale
/// type), kErrorGroupSize, kErrorInvalidShape (K or N not a positive multiple of 8), kErrorSizeOverflow.
inline Status gptq_import_params(const GptqConfig& cfg, const GptqTensors& t, QuantParams* out) {
  if (out == nullptr) return Status::kErrorNullPointer;
  if (cfg.bits != 4 || !detail::is_valid(t.scale_type)) return Status::kErrorUnsupportedFormat;
  if (static_cast<unsigned>(cfg.checkpoint_format) > 2u) return Status::kErrorInvalidArgument;
  if (t.k <= 0 || t.n <= 0 || t.k % 8 != 0 || t.n % 8 != 0) return Status::kErrorInvalidShape;
  QuantParams p;
  p.format = cfg.sym ? Format::kS4 : Format::kU4;
  p.scale_type = t.scale_type;
  NIBBLE_RETURN_IF_ERROR(detail::import_group_size(cfg.group_size, t.k, &p.group_size));
  NIBBLE_RETURN_IF_ERROR(packed_bytes(t.n, t.k, p).status);
  *out = p;
  return Status::kSuccess;
}

namespace detail {

inline constexpr std::uint32_t kGptqSymWordV1 = 0x77777777u;  ///< z = 8 stored as 7, eight times
inline constexpr std::uint32_t kGptqSymWordV2 = 0x88888888u;  ///< z = 8 stored as 8
/// XOR that turns a sym code q (z = 8) into the s4 nibble of q - 8, for eight nibbles at once.
inline constexpr std::uint32_t kS4FromBiased8 = 0x88888888u;
/// True when q XOR 8 is the s4 nibble of q - 8 for every code q: the identity the sym import relies on.
constexpr bool xor8_is_minus8() {
  for (std::uint32_t q = 0; q < 16; ++q)
    if (from_nibble<Format::kS4>(q ^ 8u) != int(q) - 8) return false;
  return true;
}
static_assert(xor8_is_minus8(), "sym GPTQ / llm-compressor / GGUF codes: q XOR 8 is q - 8 in s4");

/// Pointer, alignment and size checks of the three (four) tensors; shapes already checked.
inline Status check_gptq_buffers(const GptqTensors& t) {
  if (t.qweight == nullptr || t.qzeros == nullptr || t.scales == nullptr) return Status::kErrorNullPointer;
  if (!is_aligned(t.qweight, 4) || !is_aligned(t.qzeros, 4) ||
      !is_aligned(t.scales, std::size_t(size_of(t.scale_type))) || (t.g_idx != nullptr && !is_aligned(t.g_idx, 4)))
    return Status::kErrorMisalignedPointer;
  return Status::kSuccess;
}

/// Does one qzeros word fit the (resolved) format? sym: the constant word; v1 asym: no 0xF nibble.
NIBBLE_HOST_DEVICE constexpr bool gptq_zero_word_ok(std::uint32_t w, bool sym, bool v1) {
  if (sym) return w == (v1 ? kGptqSymWordV1 : kGptqSymWordV2);
  if (!v1) return true;
  // A nibble is 0xF iff (w & 0x11..)&(w>>1 ...) all four bits set: test each of the eight at once.
  const std::uint32_t all4 = w & (w >> 1) & (w >> 2) & (w >> 3) & 0x11111111u;
  return all4 == 0u;
}
static_assert(!gptq_zero_word_ok(0xFFFFFFF3u, false, true) && gptq_zero_word_ok(0xEEEEEEEEu, false, true) &&
                  !gptq_zero_word_ok(0x0000F000u, false, true),
              "v1 asym: any 0xF nibble is refused");

}  // namespace detail

/// The checkpoint format the data says, checked against cfg (host memory: reads all of t.qzeros, G*N/8
/// words). kV1 / kV2 on success; kErrorInvalidArgument when the words contradict cfg (see the header).
inline Status gptq_resolve_format_host(const GptqConfig& cfg, const GptqTensors& t, GptqCheckpointFormat* resolved) {
  QuantParams p;
  NIBBLE_RETURN_IF_ERROR(gptq_import_params(cfg, t, &p));
  if (resolved == nullptr) return Status::kErrorNullPointer;
  NIBBLE_RETURN_IF_ERROR(detail::check_gptq_buffers(t));
  const std::int64_t groups = t.k / effective_group(p.group_size, t.k);
  const std::int64_t words = groups * (t.n / 8);
  GptqCheckpointFormat f = cfg.checkpoint_format;
  if (cfg.sym && f == GptqCheckpointFormat::kDetect)
    f = detail::word_at(t.qzeros, 0) == detail::kGptqSymWordV2 ? GptqCheckpointFormat::kV2 : GptqCheckpointFormat::kV1;
  if (f == GptqCheckpointFormat::kDetect) return Status::kErrorInvalidArgument;  // asym: data can't tell
  const bool v1 = f == GptqCheckpointFormat::kV1;
  for (std::int64_t i = 0; i < words; ++i)
    if (!detail::gptq_zero_word_ok(detail::word_at(t.qzeros, i), cfg.sym, v1)) return Status::kErrorInvalidArgument;
  *resolved = f;
  return Status::kSuccess;
}

/// CPU path: imports t (host) into `out` (host buffers, carved with gptq_import_params' parameters).
/// With act-order g_idx, `perm` (host int32 [K]) receives the column permutation (required then:
/// kErrorNullPointer); otherwise it may be null, or receives the identity. Validates everything, the
/// qzeros words included, before writing anything.
inline Status import_gptq_host(const GptqConfig& cfg, const GptqTensors& t, const PackedMatrix& out,
                               std::int32_t* perm) {
  GptqCheckpointFormat f{};
  NIBBLE_RETURN_IF_ERROR(gptq_resolve_format_host(cfg, t, &f));
  QuantParams p;
  NIBBLE_RETURN_IF_ERROR(gptq_import_params(cfg, t, &p));
  NIBBLE_RETURN_IF_ERROR(detail::check_import_output(out, t.n, t.k, p));
  const std::int64_t g = effective_group(p.group_size, t.k);
  bool identity = true;
  NIBBLE_RETURN_IF_ERROR(act_order_permutation(t.g_idx, t.k, g, nullptr, &identity));
  if (!identity && perm == nullptr) return Status::kErrorNullPointer;
  if (perm != nullptr) NIBBLE_RETURN_IF_ERROR(act_order_permutation(t.g_idx, t.k, g, perm, nullptr));

  const std::int64_t n = t.n, k = t.k, groups = k / g;
  const std::uint32_t xor_mask = cfg.sym ? detail::kS4FromBiased8 : 0u;
  if (identity) {
    // Output word r of row n is qweight word (r, n) itself: both hold columns 8r..8r+7 lowest nibble
    // first, and nibble's bytes put the even column in the low nibble. Tiles of 16 columns keep the
    // strided reads of qweight within a cache line.
    for (std::int64_t n0 = 0; n0 < n; n0 += 16)
      for (std::int64_t r = 0; r < k / 8; ++r)
        for (std::int64_t c = n0; c < std::min(n, n0 + 16); ++c) {
          const std::uint32_t w = detail::word_at(t.qweight, r * n + c) ^ xor_mask;
          std::uint8_t* dst = out.codes + c * out.ld_codes + r * 4;
          for (int b = 0; b < 4; ++b) dst[b] = std::uint8_t(w >> (8 * b));
        }
  } else {
    for (std::int64_t c = 0; c < n; ++c)
      for (std::int64_t q = 0; q < k; q += 2) {
        std::uint32_t nib[2];
        for (int e = 0; e < 2; ++e) {
          const std::int64_t src = perm[q + e];
          nib[e] = detail::nibble_of(detail::word_at(t.qweight, (src / 8) * n + c), int(src % 8)) ^ (xor_mask & 0xFu);
        }
        out.codes[c * out.ld_codes + q / 2] = std::uint8_t(nib[0] | (nib[1] << 4));
      }
  }
  const bool v1 = f == GptqCheckpointFormat::kV1;
  for (std::int64_t j = 0; j < groups; ++j)
    for (std::int64_t c = 0; c < n; ++c) {
      detail::copy_scale_bits(t.scales, j * n + c, out.scales, c * groups + j, t.scale_type);
      if (!cfg.sym) {
        const std::uint32_t z = detail::nibble_of(detail::word_at(t.qzeros, j * (n / 8) + c / 8), int(c % 8));
        out.zeros[c * groups + j] = std::uint8_t(v1 ? z + 1 : z);  // v1: z <= 14 checked above
      }
    }
  return Status::kSuccess;
}

namespace detail {

inline constexpr int kGptqTile = 32;     ///< tile: 32 qweight rows (256 columns of K) x 32 columns of N
inline constexpr int kGptqTileRows = 8;  ///< threads (32, 8): each moves 4 words per phase
inline constexpr int kGptqTileK = kGptqTile * 8;

/// One pass over the data. Block (bx, by) transposes the 32x32-word tile of qweight rows 32*by.. and
/// columns 32*bx.. through shared memory (coalesced reads along N, coalesced writes along K), applying
/// the s4 XOR or the act-order gather, and copies the scales / zeros of the groups starting in its K range.
template <bool kWordStores>
__global__ void __launch_bounds__(kGptqTile* kGptqTileRows)
    import_gptq_kernel(const std::uint32_t* __restrict__ gQweight,  // [K/8, N]
                       const std::uint32_t* __restrict__ gQzeros,   // [G, N/8]
                       const std::uint8_t* __restrict__ gScales,    // [G, N] x scale_bytes
                       const std::int32_t* __restrict__ gPerm,      // [K] or null
                       std::int64_t k, std::int64_t n, std::int64_t group, int scale_bytes, bool sym, bool v1,
                       std::uint8_t* __restrict__ gCodes, std::int64_t ld_codes, std::uint8_t* __restrict__ gOutScales,
                       std::uint8_t* __restrict__ gOutZeros, std::uint32_t* __restrict__ gFlags) {
  __shared__ std::uint32_t sTile[kGptqTile]
                                [kGptqTile + 1];  // sTile: (32 words of K, 32 columns of N), +1: no bank conflicts
  const std::int64_t rows = k / 8;
  const std::int64_t n0 = std::int64_t(blockIdx.x) * kGptqTile;
  const std::int64_t r0 = std::int64_t(blockIdx.y) * kGptqTile;
  const int tx = int(threadIdx.x), ty = int(threadIdx.y);
  const std::uint32_t xor_mask = sym ? kS4FromBiased8 : 0u;
  std::uint32_t flags = 0;
  for (int ry = ty; ry < kGptqTile; ry += kGptqTileRows) {
    const std::int64_t r = r0 + ry, c = n0 + tx;
    if (r >= rows || c >= n) continue;
    std::uint32_t w;
    if (gPerm == nullptr) {
      w = gQweight[r * n + c];
    } else {
      // Consecutive threads read consecutive columns of the same source row: still coalesced.
      w = 0;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const std::int64_t src = checked_perm_entry(gPerm, r * 8 + i, k, &flags);
        w |= nibble_of(gQweight[(src >> 3) * n + c], int(src & 7)) << (4 * i);
      }
    }
    sTile[ry][tx] = w ^ xor_mask;
  }
  __syncthreads();
  for (int cy = ty; cy < kGptqTile; cy += kGptqTileRows) {
    const std::int64_t c = n0 + cy, r = r0 + tx;
    if (r >= rows || c >= n) continue;
    const std::uint32_t w = sTile[tx][cy];
    std::uint8_t* dst = gCodes + c * ld_codes + r * 4;
    if constexpr (kWordStores) {
      *reinterpret_cast<std::uint32_t*>(dst) = w;
    } else {
#pragma unroll
      for (int b = 0; b < 4; ++b) dst[b] = std::uint8_t(w >> (8 * b));
    }
  }
  // Scales and zeros: the groups j with j*group in [256*by, 256*(by+1)), one (group, column) per thread.
  const std::int64_t groups = k / group;
  const std::int64_t k_begin = std::int64_t(blockIdx.y) * kGptqTileK;
  const std::int64_t j = (k_begin + group - 1) / group + ty;
  const std::int64_t c = n0 + tx;
  if (j < groups && j * group < k_begin + kGptqTileK && c < n) {
    for (int b = 0; b < scale_bytes; ++b)
      gOutScales[(c * groups + j) * scale_bytes + b] = gScales[(j * n + c) * scale_bytes + b];
    const std::uint32_t zw = gQzeros[j * (n / 8) + c / 8];
    if (!gptq_zero_word_ok(zw, sym, v1)) flags |= kImportBadZeroWord;
    if (!sym) {
      const std::uint32_t z = nibble_of(zw, int(c % 8));
      gOutZeros[c * groups + j] = std::uint8_t(v1 ? (z + 1) & 0xFu : z);
    }
  }
  if (flags != 0) atomicOr(gFlags, flags);
}

}  // namespace detail

/// GPU path: imports t (device buffers; t.g_idx must be null) into `out` (device buffers carved with
/// gptq_import_params' parameters) on `stream`, with one kernel: no allocation, no synchronization, no
/// host read, so it can be captured in a CUDA graph. Bit-identical to import_gptq_host on valid data.
/// `perm` (device int32 [K]) is null for no act-order, or the permutation act_order_permutation made from
/// the checkpoint's g_idx on the host. cfg.checkpoint_format must be kV1 or kV2 (resolve kDetect with
/// gptq_resolve_format_host on a host copy of qzeros). The data is checked on the device: the kernel ORs
/// ImportErrorFlag bits into *error_flags (device, 4-byte aligned, zeroed by the caller; never cleared),
/// and the output is unspecified when it is non-zero after the stream completes. ~2 bytes moved per
/// weight (read and write of the codes), one pass.
inline Status import_gptq(const GptqConfig& cfg, const GptqTensors& t, const std::int32_t* perm,
                          const PackedMatrix& out, std::uint32_t* error_flags, cudaStream_t stream) {
  QuantParams p;
  NIBBLE_RETURN_IF_ERROR(gptq_import_params(cfg, t, &p));
  if (cfg.checkpoint_format == GptqCheckpointFormat::kDetect) return Status::kErrorInvalidArgument;
  if (t.g_idx != nullptr) return Status::kErrorInvalidArgument;  // host-only field: pass perm instead
  NIBBLE_RETURN_IF_ERROR(detail::check_gptq_buffers(t));
  NIBBLE_RETURN_IF_ERROR(detail::check_import_flags(error_flags, perm));
  NIBBLE_RETURN_IF_ERROR(detail::check_import_output(out, t.n, t.k, p));
  const std::int64_t tiles_n = (t.n + detail::kGptqTile - 1) / detail::kGptqTile;
  const std::int64_t tiles_k = (t.k / 8 + detail::kGptqTile - 1) / detail::kGptqTile;
  if (tiles_n > std::int64_t(std::numeric_limits<int>::max()) || tiles_k > 65535) return Status::kErrorSizeOverflow;
  NIBBLE_RETURN_IF_ERROR(check_device());
  const dim3 grid{unsigned(tiles_n), unsigned(tiles_k), 1u};
  const dim3 block{unsigned(detail::kGptqTile), unsigned(detail::kGptqTileRows), 1u};
  const bool word_stores = detail::is_aligned(out.codes, 4) && out.ld_codes % 4 == 0;
  const auto* qweight = reinterpret_cast<const std::uint32_t*>(t.qweight);
  const auto* qzeros = reinterpret_cast<const std::uint32_t*>(t.qzeros);
  const auto* scales = static_cast<const std::uint8_t*>(t.scales);
  const std::int64_t g = effective_group(p.group_size, t.k);
  const bool v1 = cfg.checkpoint_format == GptqCheckpointFormat::kV1;
  auto* out_scales = static_cast<std::uint8_t*>(out.scales);
  if (word_stores)
    detail::import_gptq_kernel<true><<<grid, block, 0, stream>>>(qweight, qzeros, scales, perm, t.k, t.n, g,
                                                                 size_of(t.scale_type), cfg.sym, v1, out.codes,
                                                                 out.ld_codes, out_scales, out.zeros, error_flags);
  else
    detail::import_gptq_kernel<false><<<grid, block, 0, stream>>>(qweight, qzeros, scales, perm, t.k, t.n, g,
                                                                  size_of(t.scale_type), cfg.sym, v1, out.codes,
                                                                  out.ld_codes, out_scales, out.zeros, error_flags);
  NIBBLE_CHECK_LAUNCH();
  return Status::kSuccess;
}

}  // namespace nibble
