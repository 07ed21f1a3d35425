// nibble/quant/kernels.cuh — the quantize and dequantize kernels (plain layout, packed_matrix.cuh).
//
// Work split (every kernel: 2D grid-stride, rows on y, columns on x, 64-bit offsets, no 64-bit division;
// the grid is sized to fill the GPU about 8 blocks deep per SM and each thread loops over the rest):
//   quantize_grouped_kernel<T, G>   g in {32, 64, 128, 256}: each lane takes 8 consecutive values (one 16-byte
//                                   load for fp16/bf16, two for fp32), so a warp covers 256 values of a row per
//                                   step and a group is a logical warp of L = G / 8 lanes (4, 8, 16 or 32).
//                                   Statistics reduced with cub::WarpReduce over the logical warp and broadcast
//                                   with a shuffle; every lane applies GroupQuantizer to its 8 values and stores
//                                   4 code bytes. A lane past the end of the row sits the step out; since
//                                   K % G == 0, whole logical warps do, never part of one.
//   quantize_row_kernel<T>          one group per row of any even length (kPerChannel): one block per row,
//                                   cub::BlockReduce for the statistics, a second pass over the row to encode.
//   dequantize_kernel<T>            8 values per thread (4 code bytes in, 16 or 32 bytes out) where the
//                                   pitches and pointers allow it, else 2 values (one code byte) per thread.
// Vector loads / stores are chosen on the host from the pointers' and pitches' alignment; otherwise the
// kernels fall back to scalar accesses (same results). The quantize kernels take the arithmetic
// (QuantArithmetic, group.cuh) as a template parameter, so the default kIeee code is unchanged by the
// bitsandbytes-compatible variant.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <cub/block/block_reduce.cuh>
#include <cub/warp/warp_reduce.cuh>
#include <type_traits>

#include "../detail/ptx.cuh"
#include "../device.cuh"
#include "../status.cuh"
#include "double_quant.cuh"
#include "group.cuh"
#include "packed_matrix.cuh"

namespace nibble::detail {

inline constexpr int kQuantThreads = 256;  ///< threads per block of every quantize / dequantize kernel

/// Lanes per group and values per lane of the grouped kernel for group size G.
template <int G>
struct GroupedShape {
  static_assert(G == 32 || G == 64 || G == 128 || G == 256, "grouped kernel: G in {32, 64, 128, 256}");
  static constexpr int kElems = 8;           ///< consecutive values per lane: 4 code bytes
  static constexpr int kLanes = G / kElems;  ///< lanes per group (a cub logical warp): 4, 8, 16 or 32
  static constexpr int kTile = 32 * kElems;  ///< values of a row one warp covers per step
};

/// Merges two GroupStats (the cub reduction operator).
struct MergeStats {
  NIBBLE_DEVICE GroupStats operator()(const GroupStats& a, const GroupStats& b) const {
    GroupStats r = a;
    r.merge(b);
    return r;
  }
};

/// Loads E consecutive T at `p` and converts them to fp32 (exact). `vec`: p is aligned to
/// min(E * sizeof(T), 16) bytes, so it can be read with one or two vector loads.
template <class T, int E>
NIBBLE_DEVICE void load_values(const T* p, bool vec, float (&v)[E]) {
  constexpr int kBytes = E * int(sizeof(T));
  T t[E];
  if (vec) {
    if constexpr (kBytes >= 16) {
#pragma unroll
      for (int c = 0; c < kBytes / 16; ++c) {
        const uint4 w = ld_global_nc_v4(reinterpret_cast<const char*>(p) + 16 * c);
        memcpy(reinterpret_cast<char*>(t) + 16 * c, &w, 16);
      }
    } else if constexpr (kBytes == 8) {
      const uint2 w = __ldg(reinterpret_cast<const uint2*>(p));
      memcpy(t, &w, 8);
    } else {
      static_assert(kBytes == 4, "2 values of a 16-bit type");
      const unsigned w = __ldg(reinterpret_cast<const unsigned*>(p));
      memcpy(t, &w, 4);
    }
  } else {
#pragma unroll
    for (int j = 0; j < E; ++j) t[j] = p[j];
  }
#pragma unroll
  for (int j = 0; j < E; ++j) v[j] = to_float(t[j]);
}

/// Encodes E values with `q` (arithmetic A) and stores their E/2 code bytes at `dst` (one store if `vec`: dst
/// aligned to E/2).
template <int E, QuantArithmetic A>
NIBBLE_DEVICE void store_codes(std::uint8_t* dst, bool vec, const GroupQuantizer& q, const float (&v)[E]) {
  std::uint8_t b[E / 2];
#pragma unroll
  for (int j = 0; j < E / 2; ++j) b[j] = pack_x2<Format::kU4>(q.encode<A>(v[2 * j]), q.encode<A>(v[2 * j + 1]));
  // pack_x2 keeps the low 4 bits of each value whatever the format (s4's two's complement included).
  if constexpr (E == 2) {
    *dst = b[0];
  } else {
    if (vec) {
      if constexpr (E == 4) {
        std::uint16_t w;
        memcpy(&w, b, 2);
        *reinterpret_cast<std::uint16_t*>(dst) = w;
      } else {
        std::uint32_t w;
        memcpy(&w, b, 4);
        *reinterpret_cast<std::uint32_t*>(dst) = w;
      }
    } else {
#pragma unroll
      for (int j = 0; j < E / 2; ++j) dst[j] = b[j];
    }
  }
}

/// The fp32 offset of group `si` of m (host or device memory): the stored offset for kAffineU4, else 0.
NIBBLE_HOST_DEVICE float group_offset(const PackedMatrix& m, std::int64_t si) {
  return has_offset(m.format) ? load_scale(m.offsets, m.scale_type, si) : 0.0f;
}

/// Writes group (row, j)'s scale, zero point (kU4) and offset (kAffineU4): the first lane / thread of the
/// group calls it on the GPU, quantize_cpu on the host.
NIBBLE_HOST_DEVICE void store_group_params(const PackedMatrix& m, std::int64_t si, const GroupQuantizer& q) {
  store_scale(m.scales, m.scale_type, si, q.scale);
  if (m.format == Format::kU4) m.zeros[si] = std::uint8_t(q.zero);
  if (has_offset(m.format)) store_scale(m.offsets, m.scale_type, si, q.offset);
}

/// Quantizes x [n, k] (row pitch ld) into m, groups of G along k, arithmetic A. See the file comment for the
/// split.
template <class T, int G, QuantArithmetic A>
__global__ void __launch_bounds__(kQuantThreads)
    quantize_grouped_kernel(const T* __restrict__ x, std::int64_t ld, PackedMatrix m, bool vec_load, bool vec_store) {
  constexpr int E = GroupedShape<G>::kElems;
  constexpr int L = GroupedShape<G>::kLanes;
  constexpr int kTile = GroupedShape<G>::kTile;
  constexpr int kWarps = kQuantThreads / 32;
  using WarpReduce = cub::WarpReduce<GroupStats, L>;
  __shared__ typename WarpReduce::TempStorage sReduce[kQuantThreads / L];

  const int warp = int(threadIdx.x) / 32;
  const int lane = int(threadIdx.x) % 32;
  const int group_lane = lane % L;
  // This lane's logical warp (the lanes of its group), for the broadcast shuffle.
  const unsigned mask = L == 32 ? 0xFFFFFFFFu : (((1u << L) - 1u) << (lane - group_lane));
  const std::int64_t groups = m.k / G;
  const std::int64_t tiles = (m.k + kTile - 1) / kTile;
  for (std::int64_t r = blockIdx.y; r < m.n; r += gridDim.y) {
    const T* gRow = x + r * ld;
    std::uint8_t* gCodes = m.codes + r * m.ld_codes;
    for (std::int64_t t = std::int64_t(blockIdx.x) * kWarps + warp; t < tiles; t += std::int64_t(gridDim.x) * kWarps) {
      const std::int64_t k0 = t * kTile + lane * E;
      if (k0 >= m.k) continue;  // whole groups only (K % G == 0), so no logical warp is split
      float v[E];               // rV: this lane's 8 values, fp32
      load_values<T, E>(gRow + k0, vec_load, v);
#pragma unroll
      for (int e = 0; e < E; ++e) v[e] = quant_input<A>(v[e]);
      GroupStats st = GroupStats::start(m.format);
#pragma unroll
      for (int e = 0; e < E; ++e) st.add(v[e]);
      st = WarpReduce(sReduce[threadIdx.x / L]).Reduce(st, MergeStats{});  // valid in the group's lane 0
      st = cub::ShuffleIndex<L>(st, 0, mask);
      const GroupQuantizer q = GroupQuantizer::make<A>(m.format, m.scale_type, st);
      store_codes<E, A>(gCodes + k0 / 2, vec_store, q, v);
      if (group_lane == 0) store_group_params(m, r * groups + k0 / G, q);
    }
  }
}

/// Quantizes x [n, k] into m with one group per row (kPerChannel, any even k), arithmetic A: one block per row.
template <class T, QuantArithmetic A>
__global__ void __launch_bounds__(kQuantThreads)
    quantize_row_kernel(const T* __restrict__ x, std::int64_t ld, PackedMatrix m) {
  using BlockReduce = cub::BlockReduce<GroupStats, kQuantThreads>;
  __shared__ typename BlockReduce::TempStorage sReduce;
  __shared__ GroupStats sStats;
  const std::int64_t pairs = m.k / 2;
  for (std::int64_t r = blockIdx.x; r < m.n; r += gridDim.x) {
    const T* gRow = x + r * ld;
    GroupStats st = GroupStats::start(m.format);
    for (std::int64_t p = threadIdx.x; p < pairs; p += kQuantThreads) {
      st.add(quant_input<A>(to_float(gRow[2 * p])));
      st.add(quant_input<A>(to_float(gRow[2 * p + 1])));
    }
    st = BlockReduce(sReduce).Reduce(st, MergeStats{});
    if (threadIdx.x == 0) sStats = st;
    __syncthreads();
    const GroupQuantizer q = GroupQuantizer::make<A>(m.format, m.scale_type, sStats);
    if (threadIdx.x == 0) store_group_params(m, r, q);
    std::uint8_t* gCodes = m.codes + r * m.ld_codes;
    for (std::int64_t p = threadIdx.x; p < pairs; p += kQuantThreads) {
      gCodes[p] = pack_x2<Format::kU4>(q.encode<A>(quant_input<A>(to_float(gRow[2 * p]))),
                                       q.encode<A>(quant_input<A>(to_float(gRow[2 * p + 1]))));
    }
    __syncthreads();  // sStats / sReduce are reused for the next row
  }
}

/// Stores 8 fp32 values as T at `dst` with 16-byte stores (dst 16-byte aligned).
template <class T>
NIBBLE_DEVICE void store8_vec(T* dst, const float (&v)[8]) {
  T t[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) t[j] = from_float<T>(v[j]);
#pragma unroll
  for (int c = 0; c < int(sizeof(t)) / 16; ++c) {
    uint4 w;
    memcpy(&w, reinterpret_cast<const char*>(t) + 16 * c, 16);
    reinterpret_cast<uint4*>(dst)[c] = w;
  }
}

/// out [n, k] (row pitch ld_out) = dequantized m. `group_shift` = log2(group) (unused for kPerChannel).
/// kVec: 8 values per thread (k % 8 == 0, codes / ld_codes 4-byte aligned, out / ld_out 16-byte aligned).
template <class T, bool kVec>
__global__ void __launch_bounds__(kQuantThreads)
    dequantize_kernel(PackedMatrix m, T* __restrict__ out, std::int64_t ld_out, int group_shift, DynamicMap map) {
  constexpr int kValues = kVec ? 8 : 2;  // values per thread per step
  __shared__ float sBook[16];            // sBook: the format's codebook (kNf4 / kFp4)
  __shared__ float sMap[256];            // sMap: the dynamic map (double quant)
  static_assert(kQuantThreads == 256, "one thread per dynamic-map entry");
  if (threadIdx.x == 0) {
    const Codebook16 book = codebook(m.format);  // constant indices below: registers, not local memory
#pragma unroll
    for (int i = 0; i < 16; ++i) sBook[i] = book.v[i];
  }
  sMap[threadIdx.x] = map.v[threadIdx.x];
  __syncthreads();
  const std::int64_t chunks = m.k / kValues;
  const std::int64_t groups = m.groups_per_row();
  const bool per_channel = m.group_size == kPerChannel;
  const float offset = m.dq.enabled ? *m.dq.offset : 0.0f;
  for (std::int64_t r = blockIdx.y; r < m.n; r += gridDim.y) {
    for (std::int64_t c = std::int64_t(blockIdx.x) * kQuantThreads + threadIdx.x; c < chunks;
         c += std::int64_t(gridDim.x) * kQuantThreads) {
      const std::int64_t k0 = c * kValues;  // the kValues values share one group (groups are >= 32, 8 | k0)
      const std::int64_t si = r * groups + (per_channel ? 0 : (k0 >> group_shift));
      const float s = m.dq.enabled ? dq_scale(sMap, m.dq.codes[si], m.dq.absmax2[si / kDoubleQuantBlock], offset)
                                   : load_scale(m.scales, m.scale_type, si);
      const int zero = m.format == Format::kU4 ? int(m.zeros[si]) : 0;
      const float off = group_offset(m, si);
      const std::uint8_t* gCodes = m.codes + r * m.ld_codes + k0 / 2;
      T* gOut = out + r * ld_out + k0;
      if constexpr (kVec) {
        const std::uint32_t w = *reinterpret_cast<const std::uint32_t*>(gCodes);  // 8 codes, sequential
        float v[8];
#pragma unroll
        for (int j = 0; j < 8; ++j) v[j] = dequantize_value(m.format, w >> (4 * j), s, zero, sBook, off);
        store8_vec<T>(gOut, v);
      } else {
        const std::uint8_t byte = *gCodes;
        gOut[0] = from_float<T>(dequantize_value(m.format, byte, s, zero, sBook, off));
        gOut[1] = from_float<T>(dequantize_value(m.format, byte >> 4, s, zero, sBook, off));
      }
    }
  }
}

/// Grid of a 2D grid-stride kernel over `rows` x `col_blocks` blocks of work: x covers a row's blocks, y
/// as many rows as it takes to put about 8 blocks of kQuantThreads on every SM; threads loop over the rest.
inline dim3 grid_2d(std::int64_t rows, std::int64_t col_blocks) {
  const int sms = [] {
    DeviceInfo info;
    return current_device_info(&info) == Status::kSuccess ? info.sm_count : 132;
  }();
  const std::int64_t target = std::int64_t(sms) * 8;
  const std::int64_t x = std::max<std::int64_t>(1, std::min(col_blocks, target));
  const std::int64_t y = std::max<std::int64_t>(1, std::min({rows, (target + x - 1) / x, std::int64_t(65535)}));
  return dim3(unsigned(x), unsigned(y), 1);
}

/// Launches the quantize kernel for x [m.n, m.k] (device) into m (device buffers), arithmetic A, on `stream`.
template <class T, QuantArithmetic A>
Status launch_quantize_with(const T* x, std::int64_t ld, const PackedMatrix& m, cudaStream_t stream) {
  const std::int64_t g = effective_group(m.group_size, m.k);
  auto grouped = [&](auto group_tag) -> Status {
    constexpr int G = decltype(group_tag)::value;
    constexpr int kTile = GroupedShape<G>::kTile;
    const bool vec_load = is_aligned(x, 16) && (std::size_t(ld) * sizeof(T)) % 16 == 0;
    const bool vec_store = is_aligned(m.codes, 4) && m.ld_codes % 4 == 0;
    const std::int64_t tiles = (m.k + kTile - 1) / kTile;
    constexpr int kWarps = kQuantThreads / 32;
    quantize_grouped_kernel<T, G, A>
        <<<grid_2d(m.n, (tiles + kWarps - 1) / kWarps), kQuantThreads, 0, stream>>>(x, ld, m, vec_load, vec_store);
    NIBBLE_CHECK_LAUNCH();
    return Status::kSuccess;
  };
  switch (g) {
    case 32:
      return grouped(std::integral_constant<int, 32>{});
    case 64:
      return grouped(std::integral_constant<int, 64>{});
    case 128:
      return grouped(std::integral_constant<int, 128>{});
    case 256:
      return grouped(std::integral_constant<int, 256>{});
    default: {
      const unsigned grid = unsigned(std::min<std::int64_t>(m.n, std::int64_t(1) << 20));
      quantize_row_kernel<T, A><<<grid, kQuantThreads, 0, stream>>>(x, ld, m);
      NIBBLE_CHECK_LAUNCH();
      return Status::kSuccess;
    }
  }
}

/// Launches the quantize kernel for x [m.n, m.k] (device) into m (device buffers) on `stream`:
/// bitsandbytes' arithmetic if `bnb_compatible`, nibble's otherwise.
template <class T>
Status launch_quantize(const T* x, std::int64_t ld, const PackedMatrix& m, bool bnb_compatible, cudaStream_t stream) {
  return bnb_compatible ? launch_quantize_with<T, QuantArithmetic::kBitsandbytes>(x, ld, m, stream)
                        : launch_quantize_with<T, QuantArithmetic::kIeee>(x, ld, m, stream);
}

/// Launches the dequantize kernel: out [m.n, m.k] (row pitch ld_out, device) from m on `stream`.
template <class T>
Status launch_dequantize(const PackedMatrix& m, T* out, std::int64_t ld_out, cudaStream_t stream) {
  int shift = 0;
  if (m.group_size != kPerChannel)
    while ((1 << shift) < m.group_size) ++shift;
  const bool vec = m.k % 8 == 0 && is_aligned(m.codes, 4) && m.ld_codes % 4 == 0 && is_aligned(out, 16) &&
                   (std::size_t(ld_out) * sizeof(T)) % 16 == 0;
  if (vec) {
    const std::int64_t chunks = m.k / 8;
    dequantize_kernel<T, true>
        <<<grid_2d(m.n, (chunks + kQuantThreads - 1) / kQuantThreads), kQuantThreads, 0, stream>>>(
            m, out, ld_out, shift, dynamic_map());
  } else {
    const std::int64_t chunks = m.k / 2;
    dequantize_kernel<T, false>
        <<<grid_2d(m.n, (chunks + kQuantThreads - 1) / kQuantThreads), kQuantThreads, 0, stream>>>(
            m, out, ld_out, shift, dynamic_map());
  }
  NIBBLE_CHECK_LAUNCH();
  return Status::kSuccess;
}

}  // namespace nibble::detail
