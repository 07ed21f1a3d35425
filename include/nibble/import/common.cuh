// nibble/import/common.cuh — what every checkpoint importer shares: the checkpoint's group size mapped onto
// nibble's, the act-order permutation (a stable sort of a per-column group index), the check that the
// caller's output view has exactly the parameters the importer will write, and little-endian word access.
//
// Importers read raw host (or, for the GPU paths, device) buffers laid out as the checkpoint stores them,
// plus the format's metadata as a plain struct; they never open a file. Each returns a Status and writes
// nothing it has not validated first (a refusal may leave `out` partly written only where noted).
#pragma once

#include <cstring>
#include <vector>

#include "../quant/group.cuh"
#include "../quant/packed_matrix.cuh"
#include "../thread/pack.cuh"

namespace nibble {

/// The checkpoint spelling of "one group per row" used by GPTQ, AWQ and llm-compressor configs.
inline constexpr int kCheckpointPerChannel = -1;

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
inline std::uint32_t word_at(const std::int32_t* p, std::int64_t i) { return static_cast<std::uint32_t>(p[i]); }

/// Nibble `i` (0..7) of a word, lowest first.
NIBBLE_HOST_DEVICE constexpr std::uint32_t nibble_of(std::uint32_t w, int i) { return (w >> (4 * i)) & 0xFu; }

/// Raw bits of scale element `i` of a `t`-typed array copied to element `j` of another (bit-exact: no
/// float conversion, so NaN payloads and -0 survive).
inline void copy_scale_bits(const void* src, std::int64_t i, void* dst, std::int64_t j, DType t) {
  const std::size_t b = std::size_t(size_of(t));
  std::memcpy(static_cast<std::uint8_t*>(dst) + j * std::int64_t(b),
              static_cast<const std::uint8_t*>(src) + i * std::int64_t(b), b);
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
