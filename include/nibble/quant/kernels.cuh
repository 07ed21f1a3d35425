// nibble/quant/kernels.cuh — the quantize and dequantize kernels (plain layout, packed_matrix.cuh).
//
// Work split (every kernel: 2D grid-stride, rows on y, columns on x, 64-bit offsets, no 64-bit division):
//   quantize_grouped_kernel<T, G>   g in {32, 64, 128, 256}: one logical warp of L lanes per group, each
//                                   lane E = G / L consecutive values (G = 32: E = 2, L = 16; otherwise
//                                   L = 32, E = 2, 4, 8). Statistics reduced with cub::WarpReduce, then every
//                                   lane applies GroupQuantizer to its E values and stores E/2 code bytes.
//   quantize_row_kernel<T>          one group per row of any even length (kPerChannel): one block per row,
//                                   cub::BlockReduce for the statistics, a second pass over the row to encode.
//   dequantize_kernel<T>            one thread per code byte (two output values).
// Loads are vectorized (up to 16 bytes per instruction) when the host-side check says the input pointer and
// row pitch allow it; otherwise scalar. Stores of code bytes likewise (1, 2 or 4 bytes per lane).
#pragma once

#include <cstring>
#include <cub/block/block_reduce.cuh>
#include <cub/warp/warp_reduce.cuh>

#include "../detail/ptx.cuh"
#include "double_quant.cuh"
#include "group.cuh"
#include "packed_matrix.cuh"

namespace nibble::detail {

inline constexpr int kQuantThreads = 256;  ///< threads per block of every quantize / dequantize kernel

/// Lanes per group and values per lane of the grouped kernel for group size G.
template <int G>
struct GroupedShape {
  static_assert(G == 32 || G == 64 || G == 128 || G == 256, "grouped kernel: G in {32, 64, 128, 256}");
  static constexpr int kElems = G == 32 ? 2 : G / 32;  ///< consecutive values per lane (even: whole bytes)
  static constexpr int kLanes = G / kElems;            ///< lanes per group: 16 or 32
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

/// Encodes E values with `q` and stores their E/2 code bytes at `dst` (one store if `vec`: dst aligned to E/2).
template <int E>
NIBBLE_DEVICE void store_codes(std::uint8_t* dst, bool vec, const GroupQuantizer& q, const float (&v)[E]) {
  std::uint8_t b[E / 2];
#pragma unroll
  for (int j = 0; j < E / 2; ++j) b[j] = pack_x2<Format::kU4>(q.encode(v[2 * j]), q.encode(v[2 * j + 1]));
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

/// Writes group (row, j)'s scale and zero point (the first lane / thread of the group calls it).
NIBBLE_DEVICE void store_group_params(const PackedMatrix& m, std::int64_t si, const GroupQuantizer& q) {
  store_scale(m.scales, m.scale_type, si, q.scale);
  if (m.format == Format::kU4) m.zeros[si] = std::uint8_t(q.zero);
}

/// Quantizes x [n, k] (row pitch ld) into m, groups of G along k. See the file comment for the split.
template <class T, int G>
__global__ void __launch_bounds__(kQuantThreads)
    quantize_grouped_kernel(const T* __restrict__ x, std::int64_t ld, PackedMatrix m, bool vec_load,
                            bool vec_store) {
  constexpr int E = GroupedShape<G>::kElems;
  constexpr int L = GroupedShape<G>::kLanes;
  constexpr int kSubWarps = kQuantThreads / L;
  using WarpReduce = cub::WarpReduce<GroupStats, L>;
  __shared__ typename WarpReduce::TempStorage sReduce[kSubWarps];
  __shared__ GroupStats sStats[kSubWarps];  // sStats: (sub-warps,) the broadcast of each group's statistics

  const int sub = int(threadIdx.x) / L;
  const int lane = int(threadIdx.x) % L;
  // Lanes of this logical warp, for __syncwarp (L = 16: two groups share a hardware warp and may diverge).
  const unsigned mask = L == 32 ? 0xFFFFFFFFu : (0xFFFFu << (16 * (sub % 2)));
  const std::int64_t groups = m.k / G;
  for (std::int64_t r = blockIdx.y; r < m.n; r += gridDim.y) {
    const T* gRow = x + r * ld;
    std::uint8_t* gCodes = m.codes + r * m.ld_codes;
    for (std::int64_t j = std::int64_t(blockIdx.x) * kSubWarps + sub; j < groups;
         j += std::int64_t(gridDim.x) * kSubWarps) {
      const std::int64_t k0 = j * G + lane * E;
      float v[E];  // rV: this lane's E values, fp32
      load_values<T, E>(gRow + k0, vec_load, v);
      GroupStats st;
#pragma unroll
      for (int e = 0; e < E; ++e) st.add(v[e]);
      st = WarpReduce(sReduce[sub]).Reduce(st, MergeStats{});
      if (lane == 0) sStats[sub] = st;
      __syncwarp(mask);
      const GroupQuantizer q = GroupQuantizer::make(m.format, m.scale_type, sStats[sub]);
      __syncwarp(mask);  // sStats[sub] / sReduce[sub] are rewritten by this logical warp's next group
      store_codes<E>(gCodes + k0 / 2, vec_store, q, v);
      if (lane == 0) store_group_params(m, r * groups + j, q);
    }
  }
}

/// Quantizes x [n, k] into m with one group per row (kPerChannel, any even k): one block per row.
template <class T>
__global__ void __launch_bounds__(kQuantThreads)
    quantize_row_kernel(const T* __restrict__ x, std::int64_t ld, PackedMatrix m) {
  using BlockReduce = cub::BlockReduce<GroupStats, kQuantThreads>;
  __shared__ typename BlockReduce::TempStorage sReduce;
  __shared__ GroupStats sStats;
  const std::int64_t pairs = m.k / 2;
  for (std::int64_t r = blockIdx.x; r < m.n; r += gridDim.x) {
    const T* gRow = x + r * ld;
    GroupStats st;
    for (std::int64_t p = threadIdx.x; p < pairs; p += kQuantThreads) {
      st.add(to_float(gRow[2 * p]));
      st.add(to_float(gRow[2 * p + 1]));
    }
    st = BlockReduce(sReduce).Reduce(st, MergeStats{});
    if (threadIdx.x == 0) sStats = st;
    __syncthreads();
    const GroupQuantizer q = GroupQuantizer::make(m.format, m.scale_type, sStats);
    if (threadIdx.x == 0) store_group_params(m, r, q);
    std::uint8_t* gCodes = m.codes + r * m.ld_codes;
    for (std::int64_t p = threadIdx.x; p < pairs; p += kQuantThreads) {
      gCodes[p] = pack_x2<Format::kU4>(q.encode(to_float(gRow[2 * p])), q.encode(to_float(gRow[2 * p + 1])));
    }
    __syncthreads();  // sStats / sReduce are reused for the next row
  }
}

/// out [n, k] (row pitch ld_out) = dequantized m. `group_shift` = log2(group) (unused for kPerChannel).
template <class T>
__global__ void __launch_bounds__(kQuantThreads)
    dequantize_kernel(PackedMatrix m, T* __restrict__ out, std::int64_t ld_out, int group_shift,
                      DynamicMap map) {
  __shared__ float sBook[16];   // sBook: the format's codebook (kNf4 / kFp4)
  __shared__ float sMap[256];   // sMap: the dynamic map (double quant)
  static_assert(kQuantThreads == 256, "one thread per dynamic-map entry");
  if (threadIdx.x == 0) {
    const Codebook16 book = codebook(m.format);  // constant indices below: registers, not local memory
#pragma unroll
    for (int i = 0; i < 16; ++i) sBook[i] = book.v[i];
  }
  sMap[threadIdx.x] = map.v[threadIdx.x];
  __syncthreads();
  const std::int64_t pairs = m.k / 2;
  const std::int64_t groups = m.groups_per_row();
  const bool per_channel = m.group_size == kPerChannel;
  const float offset = m.dq.enabled ? *m.dq.offset : 0.0f;
  for (std::int64_t r = blockIdx.y; r < m.n; r += gridDim.y) {
    for (std::int64_t p = std::int64_t(blockIdx.x) * kQuantThreads + threadIdx.x; p < pairs;
         p += std::int64_t(gridDim.x) * kQuantThreads) {
      const std::uint8_t byte = m.codes[r * m.ld_codes + p];
      const std::int64_t si = r * groups + (per_channel ? 0 : ((2 * p) >> group_shift));
      const float s = m.dq.enabled ? dq_scale(sMap, m.dq.codes[si], m.dq.absmax2[si / kDoubleQuantBlock], offset)
                                   : load_scale(m.scales, m.scale_type, si);
      const int zero = m.format == Format::kU4 ? int(m.zeros[si]) : 0;
      T* gOut = out + r * ld_out + 2 * p;
      gOut[0] = from_float<T>(dequantize_value(m.format, byte, s, zero, sBook));
      gOut[1] = from_float<T>(dequantize_value(m.format, byte >> 4, s, zero, sBook));
    }
  }
}

/// Grid for a (rows, columns-of-work) 2D grid-stride kernel: y covers rows, x covers `col_blocks`.
inline dim3 grid_2d(std::int64_t rows, std::int64_t col_blocks) {
  constexpr std::int64_t kMaxX = 1 << 16, kMaxY = 65535;
  return dim3(unsigned(std::max<std::int64_t>(1, std::min(col_blocks, kMaxX))),
              unsigned(std::min(rows, kMaxY)), 1);
}

/// Launches the quantize kernel for x [m.n, m.k] (device) into m (device buffers) on `stream`.
template <class T>
Status launch_quantize(const T* x, std::int64_t ld, const PackedMatrix& m, cudaStream_t stream) {
  const std::int64_t g = effective_group(m.group_size, m.k);
  auto grouped = [&](auto group_tag) -> Status {
    constexpr int G = decltype(group_tag)::value;
    constexpr int E = GroupedShape<G>::kElems;
    constexpr int kSubWarps = kQuantThreads / GroupedShape<G>::kLanes;
    const std::size_t load_align = std::min<std::size_t>(E * sizeof(T), 16);
    const bool vec_load = is_aligned(x, load_align) && (std::size_t(ld) * sizeof(T)) % load_align == 0;
    const bool vec_store = is_aligned(m.codes, E / 2) && m.ld_codes % (E / 2) == 0;
    const std::int64_t groups = m.k / G;
    quantize_grouped_kernel<T, G><<<grid_2d(m.n, (groups + kSubWarps - 1) / kSubWarps), kQuantThreads, 0,
                                    stream>>>(x, ld, m, vec_load, vec_store);
    NIBBLE_CHECK_LAUNCH();
    return Status::kSuccess;
  };
  switch (g) {
    case 32: return grouped(std::integral_constant<int, 32>{});
    case 64: return grouped(std::integral_constant<int, 64>{});
    case 128: return grouped(std::integral_constant<int, 128>{});
    case 256: return grouped(std::integral_constant<int, 256>{});
    default: {
      const unsigned grid = unsigned(std::min<std::int64_t>(m.n, std::int64_t(1) << 20));
      quantize_row_kernel<T><<<grid, kQuantThreads, 0, stream>>>(x, ld, m);
      NIBBLE_CHECK_LAUNCH();
      return Status::kSuccess;
    }
  }
}

/// Launches the dequantize kernel: out [m.n, m.k] (row pitch ld_out, device) from m on `stream`.
template <class T>
Status launch_dequantize(const PackedMatrix& m, T* out, std::int64_t ld_out, cudaStream_t stream) {
  int shift = 0;
  if (m.group_size != kPerChannel)
    while ((1 << shift) < m.group_size) ++shift;
  const std::int64_t pairs = m.k / 2;
  dequantize_kernel<T><<<grid_2d(m.n, (pairs + kQuantThreads - 1) / kQuantThreads), kQuantThreads, 0,
                         stream>>>(m, out, ld_out, shift, dynamic_map());
  NIBBLE_CHECK_LAUNCH();
  return Status::kSuccess;
}

}  // namespace nibble::detail
