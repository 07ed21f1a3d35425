// nibble/quant/double_quant.cuh — second-level ("double") quantization of the fp32 scales, as bitsandbytes'
// quantize_4bit(compress_statistics=True) does it:
//
//   offset      = mean of all S = N*G fp32 scales (one float)
//   v_i         = scale_i - offset                                         (fp32 subtraction)
//   absmax2_b   = max |v_i| over block b = i / 256 (the last block may be partial)
//   dq.codes_i  = dynamic_quantize(map, v_i * (1.0f / absmax2_b))          (bitsandbytes' dQuantize<0>)
//   scale_i'    = map[dq.codes_i] * absmax2_b + offset                     (fp32 multiply, then fp32 add)
//
// map = dynamic_map(): bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8).
//
// The mean. bitsandbytes uses torch's absmax.mean(), whose summation order is torch's. Here the order is
// fixed so that the CPU path and the GPU kernels agree bit for bit, and the sum is taken in fp64:
//   partial_b = pairwise tree over the 256 slots of block b (slot t += slot t + stride, stride 128 .. 1;
//               slots past S hold 0.0), in double;
//   total     = over 1024 threads, thread t sums partial_t, partial_{t+1024}, ... in order starting
//               from 0.0; then the same pairwise tree over the 1024 thread sums (stride 512 .. 1);
//   offset    = float(total / double(S)).
// (fp64 makes the result within an ulp of the exact mean; torch's fp32 mean may differ from it by a few
// ulps, which moves every dequantized scale by about that much: both are "the mean".)
//
// QuantizeOptions (packed_matrix.cuh) changes two things:
//   * dq_offset_override: offset = that value; the sum is not taken.
//   * bnb_compatible (QuantArithmetic::kBitsandbytes): the second level runs as bitsandbytes'
//     quantize_blockwise(absmax - offset, blocksize=256) does, i.e. kQuantizeBlockwise<float, 256, 2, 0,
//     General8bit> built with --use_fast_math:  v_i = scale_i - offset (torch's IEEE subtraction), then
//     v_i' = ftz(v_i), absmax2_b = max |v_i'|, inv = rcp.approx.ftz(absmax2_b) (device; IEEE on the host),
//     codes_i = dynamic_quantize(map, ftz(v_i' * inv)). Without an override the offset is
//       offset = float(total) * (1.0f / float(S))        (fp32 multiply; 1.0f / float(S) IEEE)
//     which is torch's last step of a CUDA fp32 mean (MeanOps: acc * factor, factor = 1.0f / numel computed
//     on the host). torch's fp32 SUM is not reproduced: its order (Reduce.cuh: vectorized loads, per-thread
//     accumulators, warp shuffles, then a cross-block pass whose split depends on the GPU's SM count and the
//     torch version) is not a fixed function of the data. float(total) is the correctly rounded sum (but
//     for fp64 rounding at an exact fp32 midpoint), so the offset equals torch's whenever torch's fp32 sum is
//     correctly rounded, and is otherwise off by the ulps of torch's own rounding error; pass torch's value
//     as dq_offset_override to remove that last difference.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cub/block/block_reduce.cuh>

#include "../status.cuh"
#include "group.cuh"
#include "packed_matrix.cuh"

namespace nibble {

/// bitsandbytes' signed 8-bit dynamic map: 256 sorted fp32 values in [-0.99297, 1].
struct DynamicMap {
  float v[256];
};

/// Builds bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
///   for i in 0..6:  b = torch.linspace(0.1, 1, 2^i + 1)   (fp32)
///                   means = (b[:-1] + b[1:]) / 2.0        (fp32)
///                   append  10^(i-6) * means  and  -(10^(i-6) * means)   (fp32 products)
///   append 0 and 1.0; sort.   -> 127 positive, 127 negative, 0, 1.0 = 256 entries.
/// torch.linspace(start, end, steps) in fp32 is `start + step*idx` for idx < steps/2 and
/// `end - step*(steps-1-idx)` after, with step = (end - start) / (steps - 1); torch's CPU build evaluates
/// both with a fused multiply-add (its AVX2 kernels are compiled with FMA contraction), so they are
/// computed with std::fma here. That choice reproduces the map that bitsandbytes ships at every entry
/// (checked against a published dump of it in tests/test_quant.cu); without FMA 21 of the 254 non-trivial
/// entries differ by one ulp.
inline DynamicMap make_dynamic_map() {
  float data[256];
  int n = 0;
  for (int i = 0; i < 7; ++i) {
    const int steps = (1 << i) + 1;
    const float start = static_cast<float>(0.1), end = 1.0f;
    const float step = (end - start) / static_cast<float>(steps - 1);
    float b[65];
    for (int idx = 0; idx < steps; ++idx) {
      b[idx] = idx < steps / 2 ? std::fma(step, static_cast<float>(idx), start)
                               : std::fma(-step, static_cast<float>(steps - 1 - idx), end);
    }
    // Python's 10 ** (i - 6) is a double; torch converts it to fp32 before the fp32 multiply.
    const float p10 = static_cast<float>(std::pow(10.0, double(i - 6)));
    for (int j = 0; j + 1 < steps; ++j) {
      const float mean = (b[j] + b[j + 1]) / 2.0f;
      const float v = p10 * mean;
      data[n++] = v;
      data[n++] = -v;
    }
  }
  data[n++] = 0.0f;
  data[n++] = 1.0f;
  std::sort(data, data + n);
  DynamicMap m{};
  for (int i = 0; i < 256; ++i) m.v[i] = data[i];
  return m;
}

/// The dynamic map, built once per process (thread-safe static initialization).
inline const DynamicMap& dynamic_map() {
  static const DynamicMap map = make_dynamic_map();
  return map;
}

/// The 8-bit code of `x` (normalized to [-1, 1]) in a sorted 256-entry `map`: bitsandbytes' dQuantize<0>.
/// A 7-step binary search from pivot 127 (`x > map[pivot]` goes up) ends on `pivot` with the last values
/// seen below (`lower`, index lower_pivot) and above (`upper`, index upper_pivot); then the nearer of
/// pivot and its neighbour on x's side wins, the midpoint computed as (a + b) * 0.5f and compared strictly,
/// so an exact midpoint stays on `pivot`. NaN compares false everywhere and gives code 0.
NIBBLE_HOST_DEVICE int dynamic_quantize(const float* map, float x) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  float val = map[pivot];
  for (int i = 64; i > 0; i >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += i;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= i;
    }
    val = map[pivot];
  }
  if (upper_pivot == 255) upper = map[upper_pivot];
  if (lower_pivot == 0) lower = map[lower_pivot];
  if (x > val) {
    const float midpoint = detail::mul_rn(detail::add_rn(upper, val), 0.5f);
    return x > midpoint ? upper_pivot : pivot;
  }
  const float midpoint = detail::mul_rn(detail::add_rn(lower, val), 0.5f);
  return x < midpoint ? lower_pivot : pivot;
}

/// Dequantized scale: map[code] * absmax2 + offset, two separately rounded fp32 operations.
NIBBLE_HOST_DEVICE float dq_scale(const float* map, std::uint8_t code, float absmax2, float offset) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(__fmul_rn(map[code], absmax2), offset);
#else
  volatile float product = map[code] * absmax2;  // volatile: no host FMA contraction
  return product + offset;
#endif
}

/// bitsandbytes' offset from an (fp64) sum of `count` scales: torch's MeanOps, `sum * (1.0f / count)` in fp32.
NIBBLE_HOST_DEVICE float torch_mean_from_sum(double sum, std::int64_t count) {
  const float factor = detail::div_rn(1.0f, static_cast<float>(count));  // torch: float(outputs) / numel
  return detail::mul_rn(static_cast<float>(sum), factor);
}

/// Bytes of device workspace quantize() needs for double quantization of `num_scales` scales (0 if none):
/// one double per 256-block for the partial sums of the mean.
inline std::size_t double_quant_workspace_bytes(std::int64_t num_scales) {
  return std::size_t((num_scales + kDoubleQuantBlock - 1) / kDoubleQuantBlock) * sizeof(double);
}

namespace detail {

inline constexpr int kOffsetThreads = 1024;  ///< threads of the final mean reduction (fixed: part of the order)

/// In-place pairwise tree over `n` (a power of two) doubles: v[t] += v[t + s] for s = n/2 .. 1.
inline void tree_sum_host(double* v, int n) {
  for (int s = n / 2; s > 0; s >>= 1)
    for (int t = 0; t < s; ++t) v[t] = v[t] + v[t + s];
}

/// The second level's value of scale `s`: s - offset (IEEE, as torch subtracts), flushed for kBitsandbytes.
template <QuantArithmetic A>
NIBBLE_HOST_DEVICE float dq_centered(float s, float offset) {
  return quant_input<A>(sub_rn(s, offset));
}
/// The second level's reciprocal of a block's absmax2.
template <QuantArithmetic A>
NIBBLE_HOST_DEVICE float dq_inverse(float absmax2) {
  if constexpr (A == QuantArithmetic::kBitsandbytes) {
    return rcp_approx_ftz(absmax2);
  } else {
    return div_rn(1.0f, absmax2);
  }
}
/// The second level's normalized value v * inv.
template <QuantArithmetic A>
NIBBLE_HOST_DEVICE float dq_normalize(float v, float inv) {
  if constexpr (A == QuantArithmetic::kBitsandbytes) {
    return mul_rn_ftz(v, inv);
  } else {
    return mul_rn(v, inv);
  }
}

/// The mean of the scales in the fixed order of the file comment (fp64), as nibble (kIeee: float(total / S))
/// or bitsandbytes (torch_mean_from_sum) takes its last step.
inline float dq_mean_cpu(const float* scales, std::int64_t num_scales, QuantArithmetic a) {
  const std::int64_t blocks = (num_scales + kDoubleQuantBlock - 1) / kDoubleQuantBlock;
  double slots[kOffsetThreads];
  for (int t = 0; t < kOffsetThreads; ++t) slots[t] = 0.0;
  double block[kDoubleQuantBlock];
  for (std::int64_t b = 0; b < blocks; ++b) {
    for (int t = 0; t < kDoubleQuantBlock; ++t) {
      const std::int64_t i = b * kDoubleQuantBlock + t;
      block[t] = i < num_scales ? double(scales[i]) : 0.0;
    }
    tree_sum_host(block, kDoubleQuantBlock);
    slots[b % kOffsetThreads] = slots[b % kOffsetThreads] + block[0];
  }
  tree_sum_host(slots, kOffsetThreads);
  if (a == QuantArithmetic::kBitsandbytes) return torch_mean_from_sum(slots[0], num_scales);
  return float(slots[0] / double(num_scales));
}

/// CPU path of the second level with arithmetic A and a given offset (same order as the kernels below).
template <QuantArithmetic A>
void dq_quantize_cpu(const float* scales, std::int64_t num_scales, float offset, std::uint8_t* codes, float* absmax2) {
  const std::int64_t blocks = (num_scales + kDoubleQuantBlock - 1) / kDoubleQuantBlock;
  const float* map = dynamic_map().v;
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::int64_t end = std::min<std::int64_t>(num_scales, (b + 1) * kDoubleQuantBlock);
    float amax = 0.0f;
    for (std::int64_t i = b * kDoubleQuantBlock; i < end; ++i)
      amax = fmaxf(amax, fabsf(dq_centered<A>(scales[i], offset)));
    absmax2[b] = amax;
    const float inv = dq_inverse<A>(amax);
    for (std::int64_t i = b * kDoubleQuantBlock; i < end; ++i)
      codes[i] = std::uint8_t(dynamic_quantize(map, dq_normalize<A>(dq_centered<A>(scales[i], offset), inv)));
  }
}

/// CPU path of the whole double quantization (same order and arithmetic as the kernels below; with
/// bnb_compatible the reciprocal is IEEE here, see group.cuh).
inline void double_quantize_cpu(const float* scales, std::int64_t num_scales, std::uint8_t* codes, float* absmax2,
                                float* offset_out, const QuantizeOptions& options) {
  const QuantArithmetic a = options.bnb_compatible ? QuantArithmetic::kBitsandbytes : QuantArithmetic::kIeee;
  const float offset =
      options.dq_offset_override.has_value() ? *options.dq_offset_override : dq_mean_cpu(scales, num_scales, a);
  *offset_out = offset;
  if (a == QuantArithmetic::kBitsandbytes) {
    dq_quantize_cpu<QuantArithmetic::kBitsandbytes>(scales, num_scales, offset, codes, absmax2);
  } else {
    dq_quantize_cpu<QuantArithmetic::kIeee>(scales, num_scales, offset, codes, absmax2);
  }
}

/// fmaxf as a reduction operator: NaN-skipping and order-independent (cub::Max is neither for NaN).
struct MaxOp {
  NIBBLE_DEVICE float operator()(float a, float b) const { return fmaxf(a, b); }
};

/// Pass 1: partial[b] = pairwise tree sum (fp64) of the 256 scales of block b. One block per 256-block.
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    dq_partial_sums_kernel(const float* __restrict__ scales, std::int64_t num_scales, double* __restrict__ partial) {
  static_assert(kThreads == kDoubleQuantBlock, "one thread per scale of a 256-block");
  __shared__ double sSum[kThreads];  // sSum: (256,) double
  const std::int64_t blocks = (num_scales + kThreads - 1) / kThreads;
  for (std::int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    const std::int64_t i = b * kThreads + threadIdx.x;
    sSum[threadIdx.x] = i < num_scales ? double(scales[i]) : 0.0;
    __syncthreads();
    for (int s = kThreads / 2; s > 0; s >>= 1) {
      if (int(threadIdx.x) < s) sSum[threadIdx.x] = __dadd_rn(sSum[threadIdx.x], sSum[threadIdx.x + s]);
      __syncthreads();
    }
    if (threadIdx.x == 0) partial[b] = sSum[0];
    __syncthreads();
  }
}

/// Pass 2 (one block of kOffsetThreads): offset = float(sum of partials / S), in the fixed order above
/// (`torch_last_step`: torch_mean_from_sum instead).
template <int kThreads>
__global__ void __launch_bounds__(kThreads)
    dq_offset_kernel(const double* __restrict__ partial, std::int64_t blocks, std::int64_t num_scales,
                     bool torch_last_step, float* __restrict__ offset) {
  __shared__ double sSum[kThreads];  // sSum: (1024,) double
  double acc = 0.0;
  for (std::int64_t b = threadIdx.x; b < blocks; b += kThreads) acc = __dadd_rn(acc, partial[b]);
  sSum[threadIdx.x] = acc;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (int(threadIdx.x) < s) sSum[threadIdx.x] = __dadd_rn(sSum[threadIdx.x], sSum[threadIdx.x + s]);
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    *offset =
        torch_last_step ? torch_mean_from_sum(sSum[0], num_scales) : float(__ddiv_rn(sSum[0], double(num_scales)));
  }
}

/// Passes 1 and 2 replaced by the caller's offset (QuantizeOptions::dq_offset_override): one thread stores it.
/// (A template only so that a header may define it without an ODR issue.)
template <class F>
__global__ void dq_store_offset_kernel(F value, F* __restrict__ offset) {
  *offset = value;
}

/// Pass 3: per 256-block, absmax2 and the 8-bit codes of (scale - offset), arithmetic A. One block per
/// 256-block.
template <int kThreads, QuantArithmetic A>
__global__ void __launch_bounds__(kThreads)
    dq_quantize_kernel(const float* __restrict__ scales, std::int64_t num_scales, const float* __restrict__ offset_ptr,
                       DynamicMap map, std::uint8_t* __restrict__ codes, float* __restrict__ absmax2) {
  static_assert(kThreads == kDoubleQuantBlock, "one thread per scale of a 256-block");
  using BlockReduce = cub::BlockReduce<float, kThreads>;
  __shared__ typename BlockReduce::TempStorage sReduce;
  __shared__ float sMap[256];  // sMap: the dynamic map (the binary search reads it with divergent indices)
  __shared__ float sAbsmax;
  sMap[threadIdx.x] = map.v[threadIdx.x];
  const float offset = *offset_ptr;
  const std::int64_t blocks = (num_scales + kThreads - 1) / kThreads;
  for (std::int64_t b = blockIdx.x; b < blocks; b += gridDim.x) {
    const std::int64_t i = b * kThreads + threadIdx.x;
    const bool valid = i < num_scales;
    const float v = valid ? dq_centered<A>(scales[i], offset) : 0.0f;
    const float amax = BlockReduce(sReduce).Reduce(valid ? fabsf(v) : 0.0f, MaxOp{});
    if (threadIdx.x == 0) {
      sAbsmax = amax;
      absmax2[b] = amax;
    }
    __syncthreads();  // also publishes sMap on the first iteration
    const float inv = dq_inverse<A>(sAbsmax);
    if (valid) codes[i] = std::uint8_t(dynamic_quantize(sMap, dq_normalize<A>(v, inv)));
    __syncthreads();  // sAbsmax and sReduce are reused by the next block
  }
}

/// Launches the three passes (or, with options.dq_offset_override, the store of the offset and pass 3) on
/// `stream`. `workspace` holds double_quant_workspace_bytes(num_scales) (unused with an override).
inline Status launch_double_quantize(const float* scales, std::int64_t num_scales, const DoubleQuantScales& dq,
                                     void* workspace, const QuantizeOptions& options, cudaStream_t stream) {
  const std::int64_t blocks = (num_scales + kDoubleQuantBlock - 1) / kDoubleQuantBlock;
  const unsigned grid = unsigned(std::min<std::int64_t>(blocks, std::int64_t(1) << 20));
  if (options.dq_offset_override.has_value()) {
    dq_store_offset_kernel<float><<<1, 1, 0, stream>>>(*options.dq_offset_override, dq.offset);
    NIBBLE_CHECK_LAUNCH();
  } else {
    auto* partial = static_cast<double*>(workspace);
    dq_partial_sums_kernel<kDoubleQuantBlock><<<grid, kDoubleQuantBlock, 0, stream>>>(scales, num_scales, partial);
    NIBBLE_CHECK_LAUNCH();
    dq_offset_kernel<kOffsetThreads>
        <<<1, kOffsetThreads, 0, stream>>>(partial, blocks, num_scales, options.bnb_compatible, dq.offset);
    NIBBLE_CHECK_LAUNCH();
  }
  if (options.bnb_compatible) {
    dq_quantize_kernel<kDoubleQuantBlock, QuantArithmetic::kBitsandbytes>
        <<<grid, kDoubleQuantBlock, 0, stream>>>(scales, num_scales, dq.offset, dynamic_map(), dq.codes, dq.absmax2);
  } else {
    dq_quantize_kernel<kDoubleQuantBlock, QuantArithmetic::kIeee>
        <<<grid, kDoubleQuantBlock, 0, stream>>>(scales, num_scales, dq.offset, dynamic_map(), dq.codes, dq.absmax2);
  }
  NIBBLE_CHECK_LAUNCH();
  return Status::kSuccess;
}

}  // namespace detail
}  // namespace nibble
