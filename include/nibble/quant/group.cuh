// nibble/quant/group.cuh — THE per-group quantization rule, host and device: from a group's reduced
// statistics to its stored scale / zero point, and from one value to its 4-bit code. The CPU path and the GPU
// kernels both call exactly these functions, so they agree bit for bit.
//
// Rules (x: one input value converted exactly to fp32; S: the scale type, float / __half / __nv_bfloat16;
// round(v): v rounded to S and back to fp32; rint: round half to even; all arithmetic IEEE fp32 round to
// nearest, no FMA contraction, no fast-math):
//
//   kS4 (symmetric)   absmax = max|x|;  s = round(absmax / 7)
//                     q = clamp(rint(x / s), -8, 7);  s == 0 (all-zero group, or a scale below S's range)
//                     stores s = 0 and q = 0 for every element.                 dequant: q * s
//   kU4 (asymmetric,  lo = min(min x, 0), hi = max(max x, 0);  s = round((hi - lo) / 15), and s = 1 if that
//        GPTQ style)  is 0;  zero = clamp(rint(-lo / s), 0, 15);  q = clamp(rint(x / s) + zero, 0, 15).
//                                                                               dequant: (q - zero) * s
//   kNf4 / kFp4       absmax = max|x|;  s = round(absmax);  inv = 1.0f / s;  q = encode_nf4 / encode_fp4(x * inv)
//   (bitsandbytes)    exactly bitsandbytes' kQuantizeBlockwise (1/absmax first, then one multiply). With S =
//                     float, s == absmax and this IS bitsandbytes; with a 16-bit S the codes are chosen for
//                     the rounded scale, so dequantization with the stored scale is what was intended.
//                     dequant: codebook[q] * s
//   kAffineU4         lo = min x, hi = max x (the true extremes: 0 need not be in range; statistics start
//   (min/max affine,  from GroupStats::start(kAffineU4));  s = round((hi - lo) / 15);  m = round(lo) (the
//    GGUF Q4_1 style) offset, same type S);  q = clamp(rint((x - m) / s), 0, 15).
//                     Degenerate group: s == 0 (hi == lo, a constant group, or a range whose s rounds to 0
//                     in S) stores s = 0, m = round(lo) and q = 0: every element dequantizes to m exactly.
//                     An empty / all-NaN group has lo = hi = 0 (s = 0, m = 0).    dequant: q * s + m
//                     (fp32 product, then fp32 sum: two roundings, never an FMA). Error per element of a
//                     finite group: <= s / 2 plus the roundings of s and m to S and the fp32 arithmetic.
//
// The statistics use fmaxf / fminf, which skip NaN. Special inputs (no crash, no UB, same on CPU and GPU):
//   * NaN:  excluded from the group's statistics; encoded as 0 (kS4), as `zero` (kU4: value 0), as code 0
//           for kNf4 (-1.0 * s, bitsandbytes' behaviour: NaN compares false), code 0 (+0) for kFp4 and
//           code 0 (value m) for kAffineU4.
//   * ±Inf: the group's scale becomes +Inf (or the format's NaN path); its finite values encode to 0 / zero
//           and its dequantized values are NaN or Inf. A scale that overflows a 16-bit S does the same.
//   * An all-zero kNf4/kFp4 group has absmax 0, inv = +Inf, x * inv = NaN: code 0 (bitsandbytes' result),
//     dequantized to -0 (nf4) or 0 (fp4), i.e. exactly 0.
//
// QuantArithmetic::kBitsandbytes (QuantizeOptions::bnb_compatible; kNf4 / kFp4 with fp32 scales only) is
// instead the arithmetic bitsandbytes' CUDA kernel kQuantizeBlockwise actually runs: it is built with
// --use_fast_math, so every fp32 operation flushes subnormal inputs and results to a zero of the same sign
// (ftz) and its `1.0f / absmax` is `rcp.approx.ftz.f32`, an approximate reciprocal (NVIDIA specifies only
// its error bound, at most 1 ulp):
//   x'     = ftz(x)                                    (x converted exactly to fp32 first, as bnb's cast)
//   absmax = max |x'|;  s = absmax (fp32)
//   inv    = rcp.approx.ftz(s)                         (device);  ftz(1.0f / s), IEEE, on the host
//   q      = encode_nf4 / encode_fp4(ftz(x' * inv))    (one round-to-nearest multiply)
// It differs from kIeee where 1.0f / s is not the correctly rounded reciprocal (x * inv can then land on the
// other side of a threshold: the "ties" of fp16 / bf16 inputs, whose x / s are short fractions) and where
// ftz matters (fp32 / bf16 subnormal inputs; kFp4 of a product below 2^-126 keeps the sign bit in kIeee, is
// +0, code 0, in bitsandbytes). On the host the reciprocal is IEEE: no host code reproduces the GPU's
// rcp.approx bit for bit, so quantize_cpu with bnb_compatible equals the GPU only where rcp.approx(s) is the
// correctly rounded 1/s (e.g. every power of two), and the GPU path is the one that equals bitsandbytes.
#pragma once

#include <cmath>
#include <cstdint>

#include "../config.cuh"
#include "../format/codebook.cuh"
#include "../thread/pack.cuh"

namespace nibble {

// ---- IEEE fp32 primitives, identical on host and device ------------------------------------------------
// Device: the _rn intrinsics are never contracted into an FMA and are correctly rounded even under
// -prec-div=false. Host: plain operators (x86-64 SSE is IEEE; nothing here has a multiply feeding an add
// except dq_scale below, which forces the rounding of its product).
namespace detail {
NIBBLE_HOST_DEVICE float div_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
NIBBLE_HOST_DEVICE float mul_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
NIBBLE_HOST_DEVICE float add_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
NIBBLE_HOST_DEVICE float sub_rn(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}
/// `v`, or a zero of v's sign if v is subnormal: what an ftz fp32 operation does to its inputs and results.
NIBBLE_HOST_DEVICE float flush_subnormal(float v) {
  constexpr float kMinNormal = 1.17549435082228750797e-38f;  // 2^-126, FLT_MIN
  return fabsf(v) < kMinNormal ? copysignf(0.0f, v) : v;     // NaN compares false: kept
}
/// bitsandbytes' `1.0f / s` under --use_fast_math. Device: rcp.approx.ftz.f32 itself. Host: the correctly
/// rounded reciprocal, flushed (see the file comment: the GPU's approximation is not reproducible here).
NIBBLE_HOST_DEVICE float rcp_approx_ftz(float s) {
#if defined(__CUDA_ARCH__)
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(s));
  return r;
#else
  return flush_subnormal(1.0f / flush_subnormal(s));
#endif
}
/// a * b, round to nearest, subnormal inputs and result flushed (mul.rn.ftz.f32: what fast-math's `*` is).
NIBBLE_HOST_DEVICE float mul_rn_ftz(float a, float b) {
#if defined(__CUDA_ARCH__)
  float r;
  asm("mul.rn.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
#else
  return flush_subnormal(flush_subnormal(a) * flush_subnormal(b));
#endif
}
/// Round half to even (the default rounding mode on the host).
NIBBLE_HOST_DEVICE float rint_even(float v) {
#if defined(__CUDA_ARCH__)
  return rintf(v);
#else
  return std::nearbyint(v);
#endif
}
/// rint(v) + add, clamped to [lo, hi], as an int; `if_nan` when v is NaN. Clamps in float, so huge or
/// infinite v never reach an out-of-range float->int conversion.
NIBBLE_HOST_DEVICE int round_clamp(float v, float add, int lo, int hi, int if_nan) {
  if (v != v) return if_nan;
  float r = add_rn(rint_even(v), add);
  r = r < float(lo) ? float(lo) : r;
  r = r > float(hi) ? float(hi) : r;
  return int(r);
}
}  // namespace detail

/// The fp32 arithmetic of the codebook formats (see the file comment). kS4 / kU4 always use kIeee.
enum class QuantArithmetic : std::uint8_t {
  kIeee = 0,          ///< IEEE fp32, correctly rounded 1 / s: nibble's rule, identical on CPU and GPU
  kBitsandbytes = 1,  ///< bitsandbytes' fast-math kernel: ftz, rcp.approx.ftz.f32 (QuantizeOptions::bnb_compatible)
};

/// An input value as the quantizer with arithmetic A sees it: `x` itself, or flushed if subnormal.
template <QuantArithmetic A>
NIBBLE_HOST_DEVICE float quant_input(float x) {
  if constexpr (A == QuantArithmetic::kBitsandbytes) {
    return detail::flush_subnormal(x);
  } else {
    return x;
  }
}

/// fp32 `v` rounded to the scale type `t` and converted back (exact); `v` for kF32.
NIBBLE_HOST_DEVICE float round_to(DType t, float v) {
  switch (t) {
    case DType::kF16:
      return to_float(from_float<__half>(v));
    case DType::kBF16:
      return to_float(from_float<__nv_bfloat16>(v));
    default:
      return v;
  }
}

/// Stores fp32 `v` (already representable) as element `i` of a `t`-typed array.
NIBBLE_HOST_DEVICE void store_scale(void* scales, DType t, std::int64_t i, float v) {
  switch (t) {
    case DType::kF16:
      static_cast<__half*>(scales)[i] = from_float<__half>(v);
      break;
    case DType::kBF16:
      static_cast<__nv_bfloat16*>(scales)[i] = from_float<__nv_bfloat16>(v);
      break;
    default:
      static_cast<float*>(scales)[i] = v;
      break;
  }
}

/// Element `i` of a `t`-typed scale array, as fp32 (exact).
NIBBLE_HOST_DEVICE float load_scale(const void* scales, DType t, std::int64_t i) {
  switch (t) {
    case DType::kF16:
      return to_float(static_cast<const __half*>(scales)[i]);
    case DType::kBF16:
      return to_float(static_cast<const __nv_bfloat16*>(scales)[i]);
    default:
      return static_cast<const float*>(scales)[i];
  }
}

/// A group's reduced statistics. Start from GroupStats{} and fold each value in with add(); combine partial
/// statistics with merge(). Both are NaN-skipping and order-independent (max/min are exact), so any
/// reduction tree gives the same result.
struct GroupStats {
  float absmax = 0.0f;  ///< max |x| (0 for an empty or all-NaN group)
  float min = 0.0f;     ///< min(x, 0): starts at 0 because kU4 includes 0 in its range anyway
  float max = 0.0f;     ///< max(x, 0)

  /// The statistics of an empty group for `format`: GroupStats{} (min, max include 0), except kAffineU4,
  /// which needs the true extremes: min = +Inf, max = -Inf (min > max then means "no finite-or-Inf value").
  NIBBLE_HOST_DEVICE static GroupStats start(Format format) {
    GroupStats st;
    if (has_offset(format)) {
      st.min = INFINITY;
      st.max = -INFINITY;
    }
    return st;
  }

  NIBBLE_HOST_DEVICE void add(float x) {
    absmax = fmaxf(absmax, fabsf(x));
    min = fminf(min, x);
    max = fmaxf(max, x);
  }
  NIBBLE_HOST_DEVICE void merge(const GroupStats& o) {
    absmax = fmaxf(absmax, o.absmax);
    min = fminf(min, o.min);
    max = fmaxf(max, o.max);
  }
};

/// The quantizer of one group: its stored scale and zero point, and the encoder of its values.
struct GroupQuantizer {
  Format format = Format::kS4;
  float scale = 0.0f;   ///< the scale as stored (rounded to the scale type), as fp32
  float inv = 0.0f;     ///< kNf4 / kFp4: 1.0f / scale (bitsandbytes multiplies by the reciprocal)
  int zero = 0;         ///< kU4: zero point 0..15 (0 for other formats)
  float offset = 0.0f;  ///< kAffineU4: the offset as stored (rounded to the scale type), as fp32

  /// The quantizer of a group with statistics `st`, scales stored as `scale_type`. With A = kBitsandbytes
  /// (kNf4 / kFp4 and fp32 scales only: the host API refuses the rest) `st` holds quant_input<A> values.
  template <QuantArithmetic A = QuantArithmetic::kIeee>
  NIBBLE_HOST_DEVICE static GroupQuantizer make(Format format, DType scale_type, const GroupStats& st) {
    GroupQuantizer g;
    g.format = format;
    switch (format) {
      case Format::kS4:
        g.scale = round_to(scale_type, detail::div_rn(st.absmax, 7.0f));
        break;
      case Format::kU4: {
        const float s = round_to(scale_type, detail::div_rn(st.max - st.min, 15.0f));
        g.scale = s == 0.0f ? 1.0f : s;
        g.zero = detail::round_clamp(detail::div_rn(-st.min, g.scale), 0.0f, 0, 15, 0);
        break;
      }
      case Format::kAffineU4: {
        const bool empty = !(st.min <= st.max);  // started at (+Inf, -Inf) and saw no value but NaN
        const float lo = empty ? 0.0f : st.min, hi = empty ? 0.0f : st.max;
        g.scale = round_to(scale_type, detail::div_rn(detail::sub_rn(hi, lo), 15.0f));
        g.offset = round_to(scale_type, lo);
        break;
      }
      default:  // kNf4, kFp4
        g.scale = round_to(scale_type, st.absmax);
        if constexpr (A == QuantArithmetic::kBitsandbytes) {
          g.inv = detail::rcp_approx_ftz(g.scale);
        } else {
          g.inv = detail::div_rn(1.0f, g.scale);
        }
        break;
    }
    return g;
  }

  /// The 4-bit value of `x`: a signed int in [-8, 7] for kS4, an unsigned code in [0, 15] otherwise
  /// (pack it with pack_x2, which keeps the low 4 bits). A: the arithmetic make() was called with.
  template <QuantArithmetic A = QuantArithmetic::kIeee>
  NIBBLE_HOST_DEVICE int encode(float x) const {
    if constexpr (A == QuantArithmetic::kBitsandbytes) {
      const float xn = detail::mul_rn_ftz(x, inv);  // ftz: flushes x and the product
      return int(format == Format::kNf4 ? encode_nf4(xn) : encode_fp4(xn));
    } else {
      switch (format) {
        case Format::kS4:
          return scale == 0.0f ? 0 : detail::round_clamp(detail::div_rn(x, scale), 0.0f, -8, 7, 0);
        case Format::kU4:
          return detail::round_clamp(detail::div_rn(x, scale), float(zero), 0, 15, zero);
        case Format::kAffineU4:
          return scale == 0.0f ? 0
                               : detail::round_clamp(detail::div_rn(detail::sub_rn(x, offset), scale), 0.0f, 0, 15, 0);
        case Format::kNf4:
          return int(encode_nf4(detail::mul_rn(x, inv)));
        default:
          return int(encode_fp4(detail::mul_rn(x, inv)));
      }
    }
  }
};

/// Dequantized fp32 value of 4-bit pattern `nib` (low 4 bits) in `format`, with fp32 scale `s`, zero point
/// `zero` (kU4), `book` = the 16-entry codebook of kNf4 / kFp4 (codebook(format).v on the host, a copy
/// in shared memory on the device; unused for kS4 / kU4 / kAffineU4) and `offset` (kAffineU4). One multiply
/// (kAffineU4: one multiply, then one add): exactly the value the quantizer intended for that code.
NIBBLE_HOST_DEVICE float dequantize_value(Format format, std::uint32_t nib, float s, int zero, const float* book,
                                          float offset = 0.0f) {
  switch (format) {
    case Format::kS4:
      return detail::mul_rn(float(from_nibble<Format::kS4>(nib)), s);
    case Format::kU4:
      return detail::mul_rn(float(int(nib & 0xFu) - zero), s);
    case Format::kAffineU4:
      return detail::add_rn(detail::mul_rn(float(nib & 0xFu), s), offset);
    default:
      return detail::mul_rn(book[nib & 0xFu], s);
  }
}

}  // namespace nibble
