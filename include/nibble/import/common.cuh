// nibble/import/common.cuh — what every checkpoint importer shares: the checkpoint's group size mapped onto
// nibble's, the act-order permutation (a stable sort of a per-column group index), the check that the
// caller's output view has exactly the parameters the importer will write, little-endian word access, the
// code-byte loads / stores the CPU loops and the kernels share, the GPU paths' launch shape and error word.
//
// Importers read raw host (or, for the GPU paths, device) buffers laid out as the checkpoint stores them,
// plus the format's metadata as a plain struct; they never open a file. Each returns a Status and writes
// nothing it has not validated first (a refusal may leave `out` partly written only where noted).
//
// The CPU and GPU paths of AWQ, compressed-tensors, bitsandbytes and GGUF share their format's checker
// (check_*_import) and a NIBBLE_HOST_DEVICE work-item function (*_item): work item i writes its own bytes of
// `out` and reads only the checkpoint, so the CPU path runs items 0, 1, ... in order and the kernel one per
// thread (grid stride), to the same bytes. (GPTQ's kernel transposes tiles through shared memory, gptq.cuh.)
#pragma once

#include <cstring>
#include <vector>

#include "../quant/group.cuh"
#include "../quant/packed_matrix.cuh"
#include "../thread/pack.cuh"

namespace nibble {

/// The checkpoint spelling of "one group per row" used by GPTQ, AWQ and llm-compressor configs.
inline constexpr int kCheckpointPerChannel = -1;

/// Bits a GPU importer ORs into the caller's error word when the data (not the metadata) is invalid: the
/// CPU paths refuse the same data with a Status (kErrorInvalidArgument) before writing anything.
enum ImportErrorFlag : std::uint32_t {
  kImportBadZeroWord = 1u,     ///< GPTQ: a qzeros word disagrees with sym / the checkpoint format (gptq.cuh)
  kImportBadPermutation = 2u,  ///< GPTQ, compressed-tensors: a permutation entry is outside [0, K)
  kImportBadZeroPoint = 4u,    ///< compressed-tensors: an unpacked int8 zero point outside [-8, 7]
};

namespace detail {

/// nibble's group size for a checkpoint group of `g` columns along K (kCheckpointPerChannel or g == k mean
/// the whole row). kErrorGroupSize when nibble has no such group or K is not a multiple of it.
inline Status import_group_size(std::int64_t g, std::int64_t k, int* out) {
  if (k <= 0) return Status::kErrorInvalidShape;
  if (g == kCheckpointPerChannel || g == k) {
    // A literal 32..256 group equal to K is kept as that group: same scales, same meaning.
    *out = (g == k && g <= 256 && is_supported_group_size(int(g))) ? int(g) : kPerChannel;
    return Status::kSuccess;
  }
  if (g <= 0 || g > 256 || !is_supported_group_size(int(g))) return Status::kErrorGroupSize;
  if (k % g != 0) return Status::kErrorGroupSize;
  *out = int(g);
  return Status::kSuccess;
}

/// `out` must be a valid view (validate_packed) of exactly an [n, k] matrix with parameters `p`: the
/// importer writes every buffer `p` implies and relies on their sizes. Mismatch: kErrorInvalidArgument.
inline Status check_import_output(const PackedMatrix& out, std::int64_t n, std::int64_t k, const QuantParams& p) {
  NIBBLE_RETURN_IF_ERROR(validate_packed(out));
  if (out.n != n || out.k != k || out.format != p.format || out.group_size != p.group_size ||
      out.scale_type != p.scale_type || out.dq.enabled != p.double_quant)
    return Status::kErrorInvalidArgument;
  return Status::kSuccess;
}

/// Little-endian 32-bit word `i` of a buffer of int32 (the checkpoints' qweight / qzeros tensors).
NIBBLE_HOST_DEVICE std::uint32_t word_at(const std::int32_t* p, std::int64_t i) {
  return static_cast<std::uint32_t>(p[i]);
}

/// Nibble `i` (0..7) of a word, lowest first.
NIBBLE_HOST_DEVICE constexpr std::uint32_t nibble_of(std::uint32_t w, int i) { return (w >> (4 * i)) & 0xFu; }

/// Raw bits of scale element `i` of a `t`-typed array copied to element `j` of another (bit-exact: no
/// float conversion, so NaN payloads and -0 survive). Both arrays aligned to their element size.
NIBBLE_HOST_DEVICE void copy_scale_bits(const void* src, std::int64_t i, void* dst, std::int64_t j, DType t) {
#if defined(__CUDA_ARCH__)
  if (size_of(t) == 4)
    static_cast<std::uint32_t*>(dst)[j] = static_cast<const std::uint32_t*>(src)[i];
  else
    static_cast<std::uint16_t*>(dst)[j] = static_cast<const std::uint16_t*>(src)[i];
#else
  const std::size_t b = std::size_t(size_of(t));  // memcpy: the host arrays may be of any 2- / 4-byte type
  std::memcpy(static_cast<std::uint8_t*>(dst) + j * std::int64_t(b),
              static_cast<const std::uint8_t*>(src) + i * std::int64_t(b), b);
#endif
}

// ---- code bytes, shared by the CPU loops and the GPU kernels ---------------------------------------------
// The importers decode the checkpoint into words of nibble's code bytes (byte b of a word is code byte
// 4i + b: little-endian, as everywhere in nibble) and store them with store_code_bytes, so the CPU path
// and the kernel run the same decoding function on the same words.

/// Loads `bytes` (0..16) code bytes at `src` into w[0..3] (bytes past `bytes` read as 0). The kernels take
/// one 16-byte load when all 16 are wanted and `src` is 16-byte aligned.
NIBBLE_HOST_DEVICE void load_code_bytes(const std::uint8_t* src, int bytes, std::uint32_t (&w)[4]) {
#if defined(__CUDA_ARCH__)
  if (bytes == 16 && reinterpret_cast<std::uintptr_t>(src) % 16 == 0) {
    const uint4 v = *reinterpret_cast<const uint4*>(src);
    w[0] = v.x;
    w[1] = v.y;
    w[2] = v.z;
    w[3] = v.w;
    return;
  }
#endif
  // Unrolled with constant indices, so that w stays in registers in the kernels.
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    w[i] = 0;
#pragma unroll
    for (int b = 0; b < 4; ++b)
      if (4 * i + b < bytes) w[i] |= std::uint32_t(src[4 * i + b]) << (8 * b);
  }
}

/// Stores the first `bytes` (0..4 * kWords) code bytes of w at `dst`. The kernels store 16 bytes at a
/// time when all are wanted and `dst` is 16-byte aligned, single bytes otherwise.
template <int kWords>
NIBBLE_HOST_DEVICE void store_code_bytes(std::uint8_t* dst, const std::uint32_t (&w)[kWords], int bytes) {
  static_assert(kWords % 4 == 0, "whole 16-byte vectors");
#if defined(__CUDA_ARCH__)
  if (bytes == 4 * kWords && reinterpret_cast<std::uintptr_t>(dst) % 16 == 0) {
#pragma unroll
    for (int v = 0; v < kWords / 4; ++v)
      reinterpret_cast<uint4*>(dst)[v] = make_uint4(w[4 * v], w[4 * v + 1], w[4 * v + 2], w[4 * v + 3]);
    return;
  }
#endif
#pragma unroll
  for (int i = 0; i < kWords; ++i)
#pragma unroll
    for (int b = 0; b < 4; ++b)
      if (4 * i + b < bytes) dst[4 * i + b] = std::uint8_t(w[i] >> (8 * b));
}

// ---- the GPU paths' launch ------------------------------------------------------------------------------

/// Threads per block of the importers' one-dimensional kernels (one work item per thread).
inline constexpr int kImportThreads = 256;
/// At most this many blocks; a kernel with more items loops (grid stride). 2^16 blocks of 256 threads keep
/// every SM of any current GPU full, and 8192 x 28672 imports need fewer.
inline constexpr std::int64_t kImportMaxBlocks = std::int64_t(1) << 16;

/// Blocks for `items` work items (items > 0).
inline unsigned import_blocks(std::int64_t items) {
  const std::int64_t blocks = (items + kImportThreads - 1) / kImportThreads;
  return unsigned(blocks < kImportMaxBlocks ? blocks : kImportMaxBlocks);
}

/// The i-th work item of this thread's grid-stride loop starts at import_item() and steps import_stride().
NIBBLE_DEVICE std::int64_t import_item() { return std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x; }
NIBBLE_DEVICE std::int64_t import_stride() { return std::int64_t(gridDim.x) * blockDim.x; }

/// The checks of a GPU entry's error word and (optional) device permutation: kErrorNullPointer without a
/// word, kErrorMisalignedPointer unless both are 4-byte aligned.
inline Status check_import_flags(const std::uint32_t* error_flags, const std::int32_t* perm) {
  if (error_flags == nullptr) return Status::kErrorNullPointer;
  if (!is_aligned(error_flags, 4) || !is_aligned(perm, 4)) return Status::kErrorMisalignedPointer;
  return Status::kSuccess;
}

/// Column `src` of a device permutation's entry, checked: an entry outside [0, k) sets
/// kImportBadPermutation in *flags and reads column 0 instead (never out of bounds).
NIBBLE_HOST_DEVICE std::int64_t checked_perm_entry(const std::int32_t* perm, std::int64_t p, std::int64_t k,
                                                   std::uint32_t* flags) {
  const std::int64_t src = perm[p];
  if (src >= 0 && src < k) return src;
  *flags |= kImportBadPermutation;
  return 0;
}

}  // namespace detail

/// The act-order permutation of a per-column group index `g_idx` [k] (GPTQ's g_idx, llm-compressor's
/// weight_g_idx) for groups of `group` columns (effective length: K for per-channel):
///   perm = stable sort of the columns 0..k-1 by g_idx,   so column p of the import is column perm[p].
/// Every group 0 .. k/group - 1 must hold exactly `group` columns (what GPTQ's desc_act writes); otherwise
/// the sorted columns would not form nibble's contiguous groups and kErrorInvalidArgument is returned.
/// `perm` (host, int32 [k]) may be null when only the check and `*identity` are wanted; `*identity` (may
/// be null) is set to whether perm is 0, 1, ..., k-1 (g_idx[k] == k / group: no activation permutation).
/// A null g_idx means the identity. O(k) time, one std::vector of G counters.
inline Status act_order_permutation(const std::int32_t* g_idx, std::int64_t k, std::int64_t group, std::int32_t* perm,
                                    bool* identity) {
  if (k <= 0 || group <= 0 || k % group != 0) return Status::kErrorInvalidShape;
  if (k > std::int64_t(std::numeric_limits<std::int32_t>::max())) return Status::kErrorSizeOverflow;
  const std::int64_t groups = k / group;
  bool ident = true;
  if (g_idx == nullptr) {
    if (perm != nullptr)
      for (std::int64_t c = 0; c < k; ++c) perm[c] = std::int32_t(c);
    if (identity != nullptr) *identity = true;
    return Status::kSuccess;
  }
  std::vector<std::int64_t> next(std::size_t(groups), 0);  // counting sort: fill level of each group
  for (std::int64_t c = 0; c < k; ++c) {
    const std::int64_t j = g_idx[c];
    if (j < 0 || j >= groups) return Status::kErrorInvalidArgument;
    if (++next[std::size_t(j)] > group) return Status::kErrorInvalidArgument;
    if (j != c / group) ident = false;
  }
  // Every count is <= group and they sum to k = groups * group, so every count is exactly group.
  if (perm != nullptr) {
    for (std::int64_t j = 0; j < groups; ++j) next[std::size_t(j)] = j * group;
    for (std::int64_t c = 0; c < k; ++c) perm[next[std::size_t(g_idx[c])]++] = std::int32_t(c);
  }
  if (identity != nullptr) *identity = ident;
  return Status::kSuccess;
}

}  // namespace nibble
