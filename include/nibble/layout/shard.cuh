// nibble/layout/shard.cuh — tensor-parallel shards of a 4-bit weight W [N, K] (N = out_features, K =
// in_features), for column- and row-parallel linears (the Megatron-LM split):
//
//   column shard  rows [n0, n1) of W, a slice of the output features:   C[:, n0:n1] = A * W[n0:n1, :]^T
//   row shard     columns [k0, k1) of W, a slice of K:                  C = sum over shards of A[:, k0:k1] * W[:,
//   k0:k1]^T
//
// A ShardRange names both at once (rows [n0, n1) x columns [k0, k1)); the column / row helpers fill in the
// other axis with its whole range.
//
// Legal boundaries (anything else is refused with a Status, never cut):
//   K   a multiple of the group size (kErrorGroupSize), so no group is split; per-channel weights (one group
//       per row) may be cut at any even k (kErrorInvalidShape if odd), every shard keeping its rows' scales.
//   N   any row in the plain layout; a multiple of 16 (layout::kAtomN) in the GEMM layout (kErrorInvalidShape),
//       which also wants K boundaries on 64 (layout::kAtomK) there. The last boundary may be N or K itself.
//   nf4 / fp4 / s4 / u4 alike: the codebooks are compile-time tables (nothing to slice); u4 zero points are
//   sliced with the scales. Double quantization (plain layout only): scale i = n * G + j belongs to block
//   i / 256 (kDoubleQuantBlock), so a shard keeps its blocks only where its scales are whole blocks of the
//   source's flattened order: with every group of its rows (G' = G) its first scale n0 * G must start a block;
//   with one row, n0 * G + j0 must; otherwise G, j0 and j1 must all be multiples of 256 (kErrorGroupSize).
//
// What a view (no copy) can express. Both layouts carry one pitch (the plain codes' ld_codes) and derive every
// other stride from the shape, so:
//
//   layout                 view of rows [n0, n1) x columns [k0, k1) exists when      else use
//   ---------------------  ----------------------------------------------------  -----------------------------
//   plain (PackedMatrix)   the shard has every group of its rows (all column      copy_plain_shard(_host):
//                          shards; per-channel row shards), or one row: scales    2-D copies into a carved
//                          [N, G] are dense, with no pitch of their own          shard of its own
//   GEMM (GemmWeights)     (all of K or one 16-row atom row: atoms are n-block    repack_shard(_host): the
//                          major with a k_atoms stride) and (all of N or one      shard's GEMM layout straight
//                          scale row, i.e. per-channel: scales are [groups]       from the whole plain matrix
//                          [n_pad] with an n_pad stride)
//
// So a K shard of the GEMM layout is in general NOT a strided view: gemm::run would need GemmWeights to carry
// an atom-row pitch (atoms between n-blocks, today k_atoms) for row shards and a scale-row pitch (today n_pad)
// for column shards. The cheapest correct alternative is repack_shard: one pass over the shard's part of the
// whole plain matrix into the shard's own GEMM buffers (which tensor parallelism needs anyway: each GPU holds
// its shard only). It accepts any rows and any K cut on a group boundary, expands double-quantized scales as
// repack() does, and gives the same bytes as repacking a plain copy of the shard.
//
// Views returned here point into the source's buffers: gemm::run accepts the GEMM views as they are (codes,
// scales and zeros stay 16-byte aligned on atom boundaries). For a row-parallel GEMM pass A + k0 with the
// whole lda (k0 % 8 == 0 whenever k0 is a multiple of a group); a column-parallel GEMM may write C + n0 with
// the whole ldc.
//
// No function here allocates or synchronizes; the device ones run on the caller's stream.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "../status.cuh"
#include "gemm_layout.cuh"
#include "repack.cuh"

namespace nibble {

/// Rows [n0, n1) (output features) by columns [k0, k1) (K) of a weight W [N, K]. Half-open.
struct ShardRange {
  std::int64_t n0 = 0, n1 = 0;
  std::int64_t k0 = 0, k1 = 0;

  NIBBLE_HOST_DEVICE constexpr std::int64_t n() const { return n1 - n0; }
  NIBBLE_HOST_DEVICE constexpr std::int64_t k() const { return k1 - k0; }
};

/// Rows [n0, n1) of an [N, K] weight, every column (a column-parallel shard).
constexpr ShardRange column_shard_range(std::int64_t n0, std::int64_t n1, std::int64_t k) { return {n0, n1, 0, k}; }
/// Columns [k0, k1) of an [N, K] weight, every row (a row-parallel shard).
constexpr ShardRange row_shard_range(std::int64_t n, std::int64_t k0, std::int64_t k1) { return {0, n, k0, k1}; }

/// Which axis a tensor-parallel linear splits.
enum class ShardAxis : int {
  kColumn = 0,  ///< split N (out_features): each rank computes its columns of C
  kRow = 1,     ///< split K (in_features): each rank computes a partial C, summed by an all-reduce
};

/// Where the shards of a plan will live.
enum class ShardTarget : int {
  kGemm = 0,   ///< GEMM layout (repack_shard or a GEMM view) multiplied by gemm::run: atom boundaries, K % 8
  kPlain = 1,  ///< plain layout (views or copy_plain_shard, e.g. per-rank checkpoints): double-quant blocks kept
};

/// An even split of an [n, k] weight quantized with `params` over `world_size` ranks.
struct ShardPlan {
  ShardAxis axis = ShardAxis::kColumn;
  int world_size = 1;
  std::int64_t n = 0, k = 0;
  QuantParams params{};
  ShardTarget target = ShardTarget::kGemm;
};

namespace detail {

/// The boundary rules of the header comment for an [n, k] weight with `group_size`; `gemm_atoms` adds the GEMM
/// layout's 16 x 64 atom boundaries. Order: range, K on groups, atoms.
inline Status check_shard_boundaries(std::int64_t n, std::int64_t k, int group_size, const ShardRange& r,
                                     bool gemm_atoms) {
  if (r.n0 < 0 || r.n0 >= r.n1 || r.n1 > n || r.k0 < 0 || r.k0 >= r.k1 || r.k1 > k) return Status::kErrorInvalidShape;
  if (group_size == kPerChannel) {
    if (r.k0 % 2 != 0 || r.k1 % 2 != 0) return Status::kErrorInvalidShape;  // codes are bytes of two
  } else if (r.k0 % group_size != 0 || r.k1 % group_size != 0) {
    return Status::kErrorGroupSize;
  }
  if (gemm_atoms) {
    if (r.n0 % layout::kAtomN != 0 || (r.n1 % layout::kAtomN != 0 && r.n1 != n)) return Status::kErrorInvalidShape;
    if (r.k0 % layout::kAtomK != 0 || (r.k1 % layout::kAtomK != 0 && r.k1 != k)) return Status::kErrorInvalidShape;
  }
  return Status::kSuccess;
}

/// Scale columns of a shard in the plain layout: the source's groups per row G, the shard's first group j0
/// and its groups per row (per-channel: G = 1, j0 = 0, one group).
struct ShardGroups {
  std::int64_t groups;  ///< G of the source
  std::int64_t j0;      ///< first group of the shard
  std::int64_t count;   ///< G' of the shard
};
NIBBLE_HOST_DEVICE constexpr ShardGroups shard_groups(int group_size, std::int64_t k, const ShardRange& r) {
  if (group_size == kPerChannel) return {1, 0, 1};
  return {k / group_size, r.k0 / group_size, r.k() / group_size};
}

/// How a shard's double-quant blocks sit in the source's absmax2: `rows` runs of `blocks` blocks, the first
/// at block `first`, one run every `pitch` blocks. False where the shard's blocks are not whole source blocks.
struct DqBlocks {
  std::int64_t first, blocks, rows, pitch;
};
inline bool dq_shard_blocks(std::int64_t n0, std::int64_t rows, const ShardGroups& g, DqBlocks* out) {
  constexpr std::int64_t b = kDoubleQuantBlock;
  if (g.count == g.groups) {  // the shard's scales are one contiguous run of the source's
    const std::int64_t start = n0 * g.groups;
    *out = {start / b, (rows * g.groups + b - 1) / b, 1, 0};
    return start % b == 0;
  }
  if (rows == 1) {
    const std::int64_t start = n0 * g.groups + g.j0;
    *out = {start / b, (g.count + b - 1) / b, 1, 0};
    return start % b == 0;
  }
  *out = {(n0 * g.groups + g.j0) / b, g.count / b, rows, g.groups / b};
  return g.groups % b == 0 && g.j0 % b == 0 && g.count % b == 0;
}

/// Checks of a GemmWeights view (what repack() writes): format, group, shape, pointers.
inline Status validate_gemm_weights(const GemmWeights& w) {
  if (!is_valid(w.format) || !has_gemm_layout(w.format) ||
      (w.scale_type != DType::kF16 && w.scale_type != DType::kBF16))
    return Status::kErrorUnsupportedFormat;
  if (!is_supported_group_size(w.group_size)) return Status::kErrorGroupSize;
  if (w.n < 1 || w.k < 2 || w.k % 2 != 0) return Status::kErrorInvalidShape;
  if (w.group_size != kPerChannel && w.k % w.group_size != 0) return Status::kErrorGroupSize;
  if (w.codes == nullptr || w.scales == nullptr || (has_zero_point(w.format) && w.zeros == nullptr) ||
      (has_offset(w.format) && w.offsets == nullptr))
    return Status::kErrorNullPointer;
  return Status::kSuccess;
}

/// The plain view `r` of `m` without checks (the caller has checked that it is expressible).
inline PackedMatrix plain_shard_unchecked(const PackedMatrix& m, const ShardRange& r) {
  const ShardGroups g = shard_groups(m.group_size, m.k, r);
  const std::int64_t first = r.n0 * g.groups + g.j0;  // the shard's first scale
  PackedMatrix s = m;
  s.n = r.n();
  s.k = r.k();
  s.codes = m.codes + r.n0 * m.ld_codes + r.k0 / 2;
  s.scales = static_cast<std::uint8_t*>(m.scales) + first * size_of(m.scale_type);
  if (has_zero_point(m.format)) s.zeros = m.zeros + first;
  if (has_offset(m.format)) s.offsets = static_cast<std::uint8_t*>(m.offsets) + first * size_of(m.scale_type);
  if (m.dq.enabled) {
    s.dq.codes = m.dq.codes + first;
    s.dq.absmax2 = m.dq.absmax2 + first / kDoubleQuantBlock;
  }
  return s;
}

}  // namespace detail

// ---- plain layout -----------------------------------------------------------------------------------------

/// View of rows [r.n0, r.n1) x columns [r.k0, r.k1) of the plain matrix `m`, into m's buffers. Where the plain
/// layout cannot express it (a K cut of a grouped matrix with more than one row: kErrorUnsupportedFormat) use
/// copy_plain_shard. Double quantization: the shard's scales must start a 256-block (kErrorGroupSize).
inline Status plain_shard(const PackedMatrix& m, const ShardRange& r, PackedMatrix* out) {
  NIBBLE_RETURN_IF_ERROR(detail::validate_packed(m));
  if (out == nullptr) return Status::kErrorNullPointer;
  NIBBLE_RETURN_IF_ERROR(detail::check_shard_boundaries(m.n, m.k, m.group_size, r, false));
  const detail::ShardGroups g = detail::shard_groups(m.group_size, m.k, r);
  if (g.count != g.groups && r.n() != 1) return Status::kErrorUnsupportedFormat;  // scales have no row pitch
  detail::DqBlocks b;
  if (m.dq.enabled && !detail::dq_shard_blocks(r.n0, r.n(), g, &b)) return Status::kErrorGroupSize;
  *out = detail::plain_shard_unchecked(m, r);
  return Status::kSuccess;
}
/// View of rows [n0, n1) of `m` (a column-parallel shard): always expressible (double quant: n0 * G % 256 == 0).
inline Status plain_column_shard(const PackedMatrix& m, std::int64_t n0, std::int64_t n1, PackedMatrix* out) {
  return plain_shard(m, column_shard_range(n0, n1, m.k), out);
}
/// View of columns [k0, k1) of `m` (a row-parallel shard): expressible for per-channel weights or one row only
/// (kErrorUnsupportedFormat otherwise: use copy_plain_shard or repack_shard).
inline Status plain_row_shard(const PackedMatrix& m, std::int64_t k0, std::int64_t k1, PackedMatrix* out) {
  return plain_shard(m, row_shard_range(m.n, k0, k1), out);
}

namespace detail {
/// The checks of copy_plain_shard: source, range, double-quant blocks, destination of the shard's shape and
/// parameters (kErrorInvalidShape / kErrorInvalidArgument otherwise).
inline Status check_copy_plain_shard(const PackedMatrix& src, const ShardRange& r, const PackedMatrix& dst) {
  NIBBLE_RETURN_IF_ERROR(validate_packed(src));
  NIBBLE_RETURN_IF_ERROR(check_shard_boundaries(src.n, src.k, src.group_size, r, false));
  DqBlocks b;
  if (src.dq.enabled && !dq_shard_blocks(r.n0, r.n(), shard_groups(src.group_size, src.k, r), &b))
    return Status::kErrorGroupSize;
  NIBBLE_RETURN_IF_ERROR(validate_packed(dst));
  if (dst.n != r.n() || dst.k != r.k()) return Status::kErrorInvalidShape;
  if (dst.format != src.format || dst.group_size != src.group_size || dst.scale_type != src.scale_type ||
      dst.dq.enabled != src.dq.enabled)
    return Status::kErrorInvalidArgument;
  return Status::kSuccess;
}

/// Every 2-D copy of copy_plain_shard, through `copy(dst, dpitch, src, spitch, width_bytes, rows)` (a Status).
template <class Copy2D>
Status copy_plain_shard_with(const PackedMatrix& src, const ShardRange& r, const PackedMatrix& dst, Copy2D&& copy) {
  NIBBLE_RETURN_IF_ERROR(check_copy_plain_shard(src, r, dst));
  const ShardGroups g = shard_groups(src.group_size, src.k, r);
  const std::int64_t first = r.n0 * g.groups + g.j0;
  const std::int64_t rows = r.n();
  NIBBLE_RETURN_IF_ERROR(
      copy(dst.codes, dst.ld_codes, src.codes + r.n0 * src.ld_codes + r.k0 / 2, src.ld_codes, r.k() / 2, rows));
  if (!src.dq.enabled) {  // with double quant `scales` is the quantizer's scratch, read by nobody
    const std::int64_t es = size_of(src.scale_type);
    NIBBLE_RETURN_IF_ERROR(copy(dst.scales, g.count * es, static_cast<const std::uint8_t*>(src.scales) + first * es,
                                g.groups * es, g.count * es, rows));
  }
  if (has_zero_point(src.format))
    NIBBLE_RETURN_IF_ERROR(copy(dst.zeros, g.count, src.zeros + first, g.groups, g.count, rows));
  if (has_offset(src.format)) {
    const std::int64_t es = size_of(src.scale_type);
    NIBBLE_RETURN_IF_ERROR(copy(dst.offsets, g.count * es, static_cast<const std::uint8_t*>(src.offsets) + first * es,
                                g.groups * es, g.count * es, rows));
  }
  if (src.dq.enabled) {
    NIBBLE_RETURN_IF_ERROR(copy(dst.dq.codes, g.count, src.dq.codes + first, g.groups, g.count, rows));
    DqBlocks b;
    dq_shard_blocks(r.n0, rows, g, &b);
    const std::int64_t fb = std::int64_t(sizeof(float));
    NIBBLE_RETURN_IF_ERROR(copy(dst.dq.absmax2, b.blocks * fb, src.dq.absmax2 + b.first,
                                (b.rows > 1 ? b.pitch : b.blocks) * fb, b.blocks * fb, b.rows));
    NIBBLE_RETURN_IF_ERROR(copy(dst.dq.offset, fb, src.dq.offset, fb, fb, 1));
  }
  return Status::kSuccess;
}
}  // namespace detail

/// Copies rows [r.n0, r.n1) x columns [r.k0, r.k1) of the plain matrix `src` into `dst`, a plain matrix of
/// shape [r.n(), r.k()] with src's parameters (carve it with packed_bytes + carve_packed_matrix). Buffers may
/// be on any device or the host (cudaMemcpy2DAsync with cudaMemcpyDefault on `stream`; across devices that
/// needs unified addressing, as every 64-bit CUDA platform has). Legal ranges: see the header comment. With
/// double quantization dst's fp32 scale scratch is not written (nothing reads it); its offset is copied.
inline Status copy_plain_shard(const PackedMatrix& src, const ShardRange& r, const PackedMatrix& dst,
                               cudaStream_t stream) {
  return detail::copy_plain_shard_with(
      src, r, dst,
      [stream](void* d, std::int64_t dpitch, const void* s, std::int64_t spitch, std::int64_t width,
               std::int64_t rows) {
        return from_cuda(cudaMemcpy2DAsync(d, std::size_t(dpitch), s, std::size_t(spitch), std::size_t(width),
                                           std::size_t(rows), cudaMemcpyDefault, stream));
      });
}
/// CPU version of copy_plain_shard: every buffer in host memory.
inline Status copy_plain_shard_host(const PackedMatrix& src, const ShardRange& r, const PackedMatrix& dst) {
  return detail::copy_plain_shard_with(
      src, r, dst,
      [](void* d, std::int64_t dpitch, const void* s, std::int64_t spitch, std::int64_t width, std::int64_t rows) {
        for (std::int64_t i = 0; i < rows; ++i)
          std::memcpy(static_cast<std::uint8_t*>(d) + i * dpitch, static_cast<const std::uint8_t*>(s) + i * spitch,
                      std::size_t(width));
        return Status::kSuccess;
      });
}

// ---- GEMM layout --------------------------------------------------------------------------------------------

/// View of rows [r.n0, r.n1) x columns [r.k0, r.k1) of the GEMM-layout weight `w`, into w's buffers, for
/// gemm::run. Boundaries on 16 x 64 atoms and groups (kErrorInvalidShape / kErrorGroupSize); expressible
/// only with all of K or one atom row, and all of N or one scale row (kErrorUnsupportedFormat otherwise: use
/// repack_shard).
inline Status gemm_shard(const GemmWeights& w, const ShardRange& r, GemmWeights* out) {
  NIBBLE_RETURN_IF_ERROR(detail::validate_gemm_weights(w));
  if (out == nullptr) return Status::kErrorNullPointer;
  NIBBLE_RETURN_IF_ERROR(detail::check_shard_boundaries(w.n, w.k, w.group_size, r, true));
  const layout::GemmShape whole = w.shape();
  const layout::GemmShape part = layout::make_gemm_shape(r.n(), r.k(), w.group_size);
  const bool codes_ok = part.k_atoms() == whole.k_atoms() || part.n_pad == layout::kAtomN;
  const bool scales_ok = part.n_pad == whole.n_pad || part.groups == 1;
  if (!codes_ok || !scales_ok) return Status::kErrorUnsupportedFormat;
  const std::int64_t g0 = w.group_size == kPerChannel ? 0 : r.k0 / w.group_size;  // first scale row
  const std::int64_t first = layout::scale_row_offset(whole, g0) + r.n0;
  GemmWeights s = w;
  s.n = r.n();
  s.k = r.k();
  s.codes = w.codes + layout::atom_offset(whole, r.n0 / layout::kAtomN, r.k0 / layout::kAtomK);
  s.scales = static_cast<const std::uint8_t*>(w.scales) + first * size_of(w.scale_type);
  if (w.zeros != nullptr) s.zeros = w.zeros + first;
  if (w.offsets != nullptr) s.offsets = static_cast<const std::uint8_t*>(w.offsets) + first * size_of(w.scale_type);
  *out = s;
  return Status::kSuccess;
}
/// View of rows [n0, n1) of `w` (column-parallel): expressible with one scale row (per-channel) or all rows.
inline Status gemm_column_shard(const GemmWeights& w, std::int64_t n0, std::int64_t n1, GemmWeights* out) {
  return gemm_shard(w, column_shard_range(n0, n1, w.k), out);
}
/// View of columns [k0, k1) of `w` (row-parallel): expressible for N <= 16 (one atom row) or all of K.
inline Status gemm_row_shard(const GemmWeights& w, std::int64_t k0, std::int64_t k1, GemmWeights* out) {
  return gemm_shard(w, row_shard_range(w.n, k0, k1), out);
}

namespace layout {

/// Scale (as float), zero point and affine offset of entry `idx` = group * n_pad + n of the GEMM layout `s` of
/// shard `r` of the whole plain matrix `whole` (0 in padding); double-quantized scales expanded with `map`.
NIBBLE_HOST_DEVICE float shard_scale(const PlainWeights& whole, const ShardRange& r, const GemmShape& s,
                                     const float* map, std::int64_t idx, std::uint8_t* zero, float* offset) {
  const std::int64_t group = idx / s.n_pad, n = idx % s.n_pad;
  const nibble::detail::ShardGroups g = nibble::detail::shard_groups(whole.group_size, whole.k, r);
  *zero = 0;
  *offset = 0.0f;
  if (n >= s.n || group >= g.count) return 0.0f;
  const std::int64_t at = (r.n0 + n) * g.groups + g.j0 + group;
  if (whole.zeros != nullptr) *zero = whole.zeros[at];
  if (has_offset(whole.format) && whole.offsets != nullptr) *offset = load_scale(whole.offsets, whole.scale_type, at);
  if (whole.dq_codes != nullptr)
    return dq_scale(map, whole.dq_codes[at], whole.dq_absmax2[at / kDoubleQuantBlock], *whole.dq_offset);
  return load_scale(whole.scales, whole.scale_type, at);
}

template <class T>
__global__ void repack_shard_scales_kernel(PlainWeights whole, ShardRange r, GemmShape s,
                                           const __grid_constant__ DynamicMap map, T* scales, std::uint8_t* zeros,
                                           T* offsets) {
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < s.scale_count();
       i += std::int64_t(gridDim.x) * blockDim.x) {
    std::uint8_t z;
    float m;
    scales[i] = from_float<T>(shard_scale(whole, r, s, map.v, i, &z, &m));
    if (zeros != nullptr) zeros[i] = z;
    if (offsets != nullptr) offsets[i] = from_float<T>(m);
  }
}

}  // namespace layout

namespace detail {
/// The checks of repack_shard; on success *codes_view is the shard's codes as a plain view (repack_word reads
/// only codes and ld_codes) and *s the shard's GEMM shape.
inline Status prepare_repack_shard(const PlainWeights& whole, const ShardRange& r, DType act, const void* codes,
                                   const void* scales, const void* zeros, const void* offsets, const GemmWeights* out,
                                   PlainWeights* codes_view, layout::GemmShape* s) {
  NIBBLE_RETURN_IF_ERROR(validate_repack(whole, act, codes, scales, zeros, offsets));
  if (out == nullptr) return Status::kErrorNullPointer;
  NIBBLE_RETURN_IF_ERROR(check_shard_boundaries(whole.n, whole.k, whole.group_size, r, false));
  PlainWeights v = whole;
  v.n = r.n();
  v.k = r.k();
  v.codes = whole.codes + r.n0 * whole.ld_codes + r.k0 / 2;
  *codes_view = v;
  *s = layout::make_gemm_shape(r.n(), r.k(), whole.group_size);
  return Status::kSuccess;
}
}  // namespace detail

/// Writes the GEMM layout (for activations of type `act`) of rows [r.n0, r.n1) x columns [r.k0, r.k1) of the
/// whole plain matrix `whole` into `codes`, `scales`, `zeros` (u4 only), `offsets` (affine u4 only), buffers of
/// gemm_weight_bytes(format, r.n(), r.k(), group, act); `out` receives the view. Any rows; K cut on group
/// boundaries (per-channel: any even k). The same bytes as repack() of a plain copy of the shard
/// (double-quantized scales expanded). `whole` must be readable by the current device (its memory, a peer's
/// with access enabled, or mapped host memory). Two kernels on `stream`; no allocation, no sync.
template <int kInstantiateOnUse = 0>  // kernels compiled only where repack_shard is called
Status repack_shard(const PlainWeights& whole, const ShardRange& r, DType act, void* codes, void* scales, void* zeros,
                    void* offsets, GemmWeights* out, cudaStream_t stream) {
  PlainWeights v;
  layout::GemmShape s;
  NIBBLE_RETURN_IF_ERROR(detail::prepare_repack_shard(whole, r, act, codes, scales, zeros, offsets, out, &v, &s));
  NIBBLE_RETURN_IF_ERROR(check_device());
  const std::int64_t words = s.code_bytes() / 4;
  constexpr int kThreads = 256;
  auto blocks = [](std::int64_t work) { return unsigned(std::min<std::int64_t>((work + 255) / 256, 65536)); };
  std::uint8_t* z = has_zero_point(whole.format) ? static_cast<std::uint8_t*>(zeros) : nullptr;
  void* o = has_offset(whole.format) ? offsets : nullptr;
  layout::repack_codes_kernel<>
      <<<blocks(words), kThreads, 0, stream>>>(v, s, static_cast<std::uint32_t*>(codes), words);
  NIBBLE_CHECK_LAUNCH();
  if (act == DType::kF16) {
    layout::repack_shard_scales_kernel<__half><<<blocks(s.scale_count()), kThreads, 0, stream>>>(
        whole, r, s, dynamic_map(), static_cast<__half*>(scales), z, static_cast<__half*>(o));
  } else {
    layout::repack_shard_scales_kernel<__nv_bfloat16><<<blocks(s.scale_count()), kThreads, 0, stream>>>(
        whole, r, s, dynamic_map(), static_cast<__nv_bfloat16*>(scales), z, static_cast<__nv_bfloat16*>(o));
  }
  NIBBLE_CHECK_LAUNCH();
  *out = detail::make_view(v, act, codes, scales, zeros, offsets);
  return Status::kSuccess;
}
/// repack_shard() for the formats without offsets (affine u4 needs the overload above: kErrorNullPointer here).
template <int kInstantiateOnUse = 0>
Status repack_shard(const PlainWeights& whole, const ShardRange& r, DType act, void* codes, void* scales, void* zeros,
                    GemmWeights* out, cudaStream_t stream) {
  return repack_shard<kInstantiateOnUse>(whole, r, act, codes, scales, zeros, nullptr, out, stream);
}

/// CPU version of repack_shard(): `whole` and the outputs in host memory; identical bytes.
inline Status repack_shard_host(const PlainWeights& whole, const ShardRange& r, DType act, void* codes, void* scales,
                                void* zeros, void* offsets, GemmWeights* out) {
  PlainWeights v;
  layout::GemmShape s;
  NIBBLE_RETURN_IF_ERROR(detail::prepare_repack_shard(whole, r, act, codes, scales, zeros, offsets, out, &v, &s));
  auto* dst = static_cast<std::uint32_t*>(codes);
  for (std::int64_t w = 0; w < s.code_bytes() / 4; ++w) dst[w] = layout::repack_word(v, s, layout::word_coord(s, w));
  auto* z = has_zero_point(whole.format) ? static_cast<std::uint8_t*>(zeros) : nullptr;
  const bool with_offsets = has_offset(whole.format);
  for (std::int64_t i = 0; i < s.scale_count(); ++i) {  // store_scale rounds to act (from_float, as the kernel)
    std::uint8_t zz;
    float m;
    store_scale(scales, act, i, layout::shard_scale(whole, r, s, dynamic_map().v, i, &zz, &m));
    if (z != nullptr) z[i] = zz;
    if (with_offsets) store_scale(offsets, act, i, m);
  }
  *out = detail::make_view(v, act, codes, scales, zeros, offsets);
  return Status::kSuccess;
}
/// repack_shard_host() for the formats without offsets (affine u4: kErrorNullPointer).
inline Status repack_shard_host(const PlainWeights& whole, const ShardRange& r, DType act, void* codes, void* scales,
                                void* zeros, GemmWeights* out) {
  return repack_shard_host(whole, r, act, codes, scales, zeros, nullptr, out);
}

// ---- sharding plans -----------------------------------------------------------------------------------------

namespace detail {
/// Rank `rank`'s range of an even split (no checks).
inline ShardRange plan_range(const ShardPlan& p, int rank) {
  if (p.axis == ShardAxis::kColumn) {
    const std::int64_t part = p.n / p.world_size;
    return column_shard_range(rank * part, (rank + 1) * part, p.k);
  }
  const std::int64_t part = p.k / p.world_size;
  return row_shard_range(p.n, rank * part, (rank + 1) * part);
}
}  // namespace detail

/// CPU-only check of a sharding plan: the weight's parameters and shape (as quantize checks them), world size
/// >= 1 and axis / target named (kErrorInvalidArgument), the split axis divisible by the world size
/// (kErrorInvalidShape), then every rank's shard against the boundary rules of its target: kGemm — 16-row /
/// 64-column atoms, groups, and K % 8 == 0 for gemm::run (which reads A in 8-element chunks); kPlain — groups
/// and the double-quant blocks of copy_plain_shard.
inline Status can_implement_shard_plan(const ShardPlan& p) {
  NIBBLE_RETURN_IF_ERROR(detail::validate_params(p.n, p.k, p.params));
  if (p.world_size < 1) return Status::kErrorInvalidArgument;
  if (p.axis != ShardAxis::kColumn && p.axis != ShardAxis::kRow) return Status::kErrorInvalidArgument;
  if (p.target != ShardTarget::kGemm && p.target != ShardTarget::kPlain) return Status::kErrorInvalidArgument;
  if ((p.axis == ShardAxis::kColumn ? p.n : p.k) % p.world_size != 0) return Status::kErrorInvalidShape;
  const bool gemm = p.target == ShardTarget::kGemm;
  for (int rank = 0; rank < p.world_size; ++rank) {
    const ShardRange r = detail::plan_range(p, rank);
    NIBBLE_RETURN_IF_ERROR(detail::check_shard_boundaries(p.n, p.k, p.params.group_size, r, gemm));
    if (gemm && r.k() % 8 != 0) return Status::kErrorInvalidShape;
    detail::DqBlocks b;
    if (!gemm && p.params.double_quant &&
        !detail::dq_shard_blocks(r.n0, r.n(), detail::shard_groups(p.params.group_size, p.k, r), &b))
      return Status::kErrorGroupSize;
  }
  return Status::kSuccess;
}

/// Rank `rank`'s shard of plan `p` (rows for kColumn, K columns for kRow), after can_implement_shard_plan;
/// kErrorInvalidArgument for a rank outside [0, world_size).
inline Status shard_range(const ShardPlan& p, int rank, ShardRange* out) {
  if (out == nullptr) return Status::kErrorNullPointer;
  NIBBLE_RETURN_IF_ERROR(can_implement_shard_plan(p));
  if (rank < 0 || rank >= p.world_size) return Status::kErrorInvalidArgument;
  *out = detail::plan_range(p, rank);
  return Status::kSuccess;
}

}  // namespace nibble
