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
//
// The statistics use fmaxf / fminf, which skip NaN. Special inputs (no crash, no UB, same on CPU and GPU):
//   * NaN:  excluded from the group's statistics; encoded as 0 (kS4), as `zero` (kU4: value 0), as code 0
//           for kNf4 (-1.0 * s, bitsandbytes' behaviour: NaN compares false) and code 0 (+0) for kFp4.
//   * ±Inf: the group's scale becomes +Inf (or the format's NaN path); its finite values encode to 0 / zero
//           and its dequantized values are NaN or Inf. A scale that overflows a 16-bit S does the same.
//   * An all-zero kNf4/kFp4 group has absmax 0, inv = +Inf, x * inv = NaN: code 0 (bitsandbytes' result),
//     dequantized to -0 (nf4) or 0 (fp4), i.e. exactly 0.
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
  float scale = 0.0f;  ///< the scale as stored (rounded to the scale type), as fp32
  float inv = 0.0f;    ///< kNf4 / kFp4: 1.0f / scale (bitsandbytes multiplies by the reciprocal)
  int zero = 0;        ///< kU4: zero point 0..15 (0 for other formats)

  /// The quantizer of a group with statistics `st`, scales stored as `scale_type`.
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
      default:  // kNf4, kFp4
        g.scale = round_to(scale_type, st.absmax);
        g.inv = detail::div_rn(1.0f, g.scale);
        break;
    }
    return g;
  }

  /// The 4-bit value of `x`: a signed int in [-8, 7] for kS4, an unsigned code in [0, 15] otherwise
  /// (pack it with pack_x2, which keeps the low 4 bits).
  NIBBLE_HOST_DEVICE int encode(float x) const {
    switch (format) {
      case Format::kS4:
        return scale == 0.0f ? 0 : detail::round_clamp(detail::div_rn(x, scale), 0.0f, -8, 7, 0);
      case Format::kU4:
        return detail::round_clamp(detail::div_rn(x, scale), float(zero), 0, 15, zero);
      case Format::kNf4:
        return int(encode_nf4(detail::mul_rn(x, inv)));
      default:
        return int(encode_fp4(detail::mul_rn(x, inv)));
    }
  }
};

/// Dequantized fp32 value of 4-bit pattern `nib` (low 4 bits) in `format`, with fp32 scale `s`, zero point
/// `zero` (kU4) and `book` = the 16-entry codebook of kNf4 / kFp4 (codebook(format).v on the host, a copy
/// in shared memory on the device; unused for kS4 / kU4). One multiply: exactly the value the quantizer
/// intended for that code.
NIBBLE_HOST_DEVICE float dequantize_value(Format format, std::uint32_t nib, float s, int zero, const float* book) {
  switch (format) {
    case Format::kS4:
      return detail::mul_rn(float(from_nibble<Format::kS4>(nib)), s);
    case Format::kU4:
      return detail::mul_rn(float(int(nib & 0xFu) - zero), s);
    default:
      return detail::mul_rn(book[nib & 0xFu], s);
  }
}

}  // namespace nibble
