// nibble/quant/quantize.cuh — host API of the quantizer: quantize / dequantize on the GPU (asynchronous,
// caller's stream) and on the CPU (the reference path, same per-group rule, bit-identical results).
//
//   PackedMatrix m;                                   // view of device buffers, e.g. from carve_packed_matrix
//   std::size_t ws = 0;
//   get_quantize_workspace_size(m, &ws);              // 0 unless m.dq.enabled
//   quantize(d_w, ld, m, d_workspace, ws, stream);    // W [N, K] fp32 / fp16 / bf16, device
//   dequantize(m, d_out, ld_out, stream);
//
//   QuantizeOptions opt;                              // packed_matrix.cuh: HOW the codes are computed
//   opt.bnb_compatible = true;                        // bitsandbytes' CUDA quantize_4bit, bit for bit
//   quantize(d_w, ld, m, opt, d_workspace, ws, stream);
//
// Contract of every entry point: validation runs first, on the CPU, with no CUDA call (so it is testable
// without a GPU), in this order: Status::kErrorUnsupportedFormat (bad enum, double quant with 16-bit
// scales), kErrorGroupSize, kErrorInvalidShape (n, k <= 0, odd k), kErrorGroupSize (k % group), then
// kErrorLeadingDimension, kErrorNullPointer, kErrorMisalignedPointer (a pointer not aligned to its element
// type), kErrorSizeOverflow, then the QuantizeOptions (kErrorUnsupportedFormat: bnb_compatible with a format
// other than kNf4 / kFp4 or with 16-bit scales; kErrorInvalidArgument: dq_offset_override without double
// quant, or not finite), then kErrorWorkspaceTooSmall. GPU entry points then check_device()
// (kErrorUnsupportedDevice). No allocation, memset or synchronization; every launch checked (kErrorCuda).
// The GPU entry points are graph-capturable.
//
// Per-channel weights (group_size = kPerChannel) need only an even K here, and layout/repack.cuh repacks them
// for any even K too, but gemm::run() rejects K % 8 != 0 with kErrorInvalidShape (it reads the activations A
// in 16-byte chunks of 8 elements). Check gemm::can_implement() before quantizing weights meant for the GEMM.
//
// Quantizing a matrix that lives in host memory is quant/streaming.cuh (quantize_streaming); this header does
// not include it (nibble.cuh includes both).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "../device.cuh"
#include "../status.cuh"
#include "double_quant.cuh"
#include "group.cuh"
#include "kernels.cuh"
#include "packed_matrix.cuh"

namespace nibble {

/// Bytes of device workspace quantize() needs for `m` (the double-quant mean's partial sums; 0 without
/// double quantization). Validates m's parameters and shape.
inline Status get_quantize_workspace_size(const PackedMatrix& m, std::size_t* bytes) {
  if (bytes == nullptr) return Status::kErrorNullPointer;
  NIBBLE_RETURN_IF_ERROR(detail::validate_params(m.n, m.k, m.params()));
  *bytes = m.dq.enabled ? double_quant_workspace_bytes(m.num_scales()) : 0;
  return Status::kSuccess;
}

namespace detail {
/// The checks shared by quantize and dequantize: a packed matrix and a dense [m.n, m.k] matrix of T.
template <class T>
Status validate_packed_and_dense(const PackedMatrix& m, const T* dense, std::int64_t ld) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>,
                "dense element type must be float, __half or __nv_bfloat16");
  NIBBLE_RETURN_IF_ERROR(validate_params(m.n, m.k, m.params()));
  if (ld < m.k) return Status::kErrorLeadingDimension;
  NIBBLE_RETURN_IF_ERROR(validate_packed(m));
  return validate_dense(dense, m.n, m.k, ld, sizeof(T));
}
}  // namespace detail

namespace detail {
/// The checks of a QuantizeOptions against the matrix it quantizes (m's parameters already valid).
inline Status validate_options(const PackedMatrix& m, const QuantizeOptions& options) {
  // bitsandbytes quantizes only nf4 / fp4, and keeps its absmax in fp32 (a 16-bit scale would change the
  // reciprocal the codes are computed with).
  if (options.bnb_compatible && (!is_codebook(m.format) || m.scale_type != DType::kF32))
    return Status::kErrorUnsupportedFormat;
  if (options.dq_offset_override.has_value()) {
    if (!m.dq.enabled) return Status::kErrorInvalidArgument;  // an offset with nothing to offset
    if (!std::isfinite(*options.dq_offset_override)) return Status::kErrorInvalidArgument;
  }
  return Status::kSuccess;
}
}  // namespace detail

/// CPU-only check of a quantize call: would quantize(x, ld, m, options, ...) accept these arguments?
template <class T>
Status can_implement_quantize(const T* x, std::int64_t ld, const PackedMatrix& m, const QuantizeOptions& options) {
  NIBBLE_RETURN_IF_ERROR(detail::validate_packed_and_dense(m, x, ld));
  return detail::validate_options(m, options);
}

/// CPU-only check of a quantize call with the default options: would quantize(x, ld, m, ...) accept it?
template <class T>
Status can_implement_quantize(const T* x, std::int64_t ld, const PackedMatrix& m) {
  return can_implement_quantize(x, ld, m, QuantizeOptions{});
}

/// CPU-only check of a dequantize call into out [m.n, m.k] of T with row pitch ld_out.
template <class T>
Status can_implement_dequantize(const PackedMatrix& m, const T* out, std::int64_t ld_out) {
  return detail::validate_packed_and_dense(m, out, ld_out);
}

namespace detail {
inline Status check_workspace(const PackedMatrix& m, const void* workspace, std::size_t workspace_bytes) {
  std::size_t need = 0;
  NIBBLE_RETURN_IF_ERROR(get_quantize_workspace_size(m, &need));
  if (need == 0) return Status::kSuccess;
  if (workspace == nullptr) return Status::kErrorNullPointer;
  if (!is_aligned(workspace, alignof(double))) return Status::kErrorMisalignedPointer;
  if (workspace_bytes < need) return Status::kErrorWorkspaceTooSmall;
  return Status::kSuccess;
}
}  // namespace detail

/// Quantizes W = x [m.n, m.k] (device, row pitch ld elements) into the device buffers of m, on `stream`, as
/// `options` says. With m.dq.enabled, `workspace` (device, 8-byte aligned) holds
/// get_quantize_workspace_size(m) bytes (also with a dq_offset_override, which leaves it unused).
/// Asynchronous and deterministic. With the default options the result is bit-identical to quantize_cpu on
/// the same input; with bnb_compatible it is bitsandbytes' (see QuantizeOptions and quant/group.cuh).
template <class T>
Status quantize(const T* x, std::int64_t ld, const PackedMatrix& m, const QuantizeOptions& options, void* workspace,
                std::size_t workspace_bytes, cudaStream_t stream) {
  NIBBLE_RETURN_IF_ERROR(can_implement_quantize(x, ld, m, options));
  NIBBLE_RETURN_IF_ERROR(detail::check_workspace(m, workspace, workspace_bytes));
  NIBBLE_RETURN_IF_ERROR(check_device());
  NIBBLE_RETURN_IF_ERROR(detail::launch_quantize(x, ld, m, options.bnb_compatible, stream));
  if (m.dq.enabled) {
    NIBBLE_RETURN_IF_ERROR(detail::launch_double_quantize(static_cast<const float*>(m.scales), m.num_scales(), m.dq,
                                                          workspace, options, stream));
  }
  return Status::kSuccess;
}

/// quantize() with the default QuantizeOptions (nibble's own rule).
template <class T>
Status quantize(const T* x, std::int64_t ld, const PackedMatrix& m, void* workspace, std::size_t workspace_bytes,
                cudaStream_t stream) {
  return quantize(x, ld, m, QuantizeOptions{}, workspace, workspace_bytes, stream);
}

namespace detail {
/// The body of quantize_cpu for arithmetic A (first level only).
template <QuantArithmetic A, class T>
void quantize_groups_cpu(const T* x, std::int64_t ld, const PackedMatrix& m) {
  const std::int64_t g = effective_group(m.group_size, m.k);
  const std::int64_t groups = m.groups_per_row();
  for (std::int64_t r = 0; r < m.n; ++r) {
    const T* row = x + r * ld;
    for (std::int64_t j = 0; j < groups; ++j) {
      GroupStats st = GroupStats::start(m.format);
      for (std::int64_t e = 0; e < g; ++e) st.add(quant_input<A>(to_float(row[j * g + e])));
      const GroupQuantizer q = GroupQuantizer::make<A>(m.format, m.scale_type, st);
      const std::int64_t si = r * groups + j;
      store_group_params(m, si, q);
      for (std::int64_t e = 0; e < g; e += 2) {
        const std::int64_t kk = j * g + e;
        m.codes[r * m.ld_codes + kk / 2] = pack_x2<Format::kU4>(q.encode<A>(quant_input<A>(to_float(row[kk]))),
                                                                q.encode<A>(quant_input<A>(to_float(row[kk + 1]))));
      }
    }
  }
}
}  // namespace detail

/// CPU path of quantize(): x and every buffer of m are host memory. Same rules, same bits as the GPU with the
/// default options. With bnb_compatible the host computes 1 / absmax correctly rounded, since it cannot
/// reproduce the GPU's rcp.approx.ftz.f32 (quant/group.cuh): the codes equal the GPU's, and bitsandbytes',
/// wherever that reciprocal is correctly rounded (every power-of-two absmax, for one), and can differ by one
/// code where x / absmax lies within about an ulp of a threshold otherwise.
template <class T>
Status quantize_cpu(const T* x, std::int64_t ld, const PackedMatrix& m, const QuantizeOptions& options) {
  NIBBLE_RETURN_IF_ERROR(can_implement_quantize(x, ld, m, options));
  if (options.bnb_compatible) {
    detail::quantize_groups_cpu<QuantArithmetic::kBitsandbytes>(x, ld, m);
  } else {
    detail::quantize_groups_cpu<QuantArithmetic::kIeee>(x, ld, m);
  }
  if (m.dq.enabled) {
    detail::double_quantize_cpu(static_cast<const float*>(m.scales), m.num_scales(), m.dq.codes, m.dq.absmax2,
                                m.dq.offset, options);
  }
  return Status::kSuccess;
}

/// quantize_cpu() with the default QuantizeOptions: bit-identical to quantize() on the same input.
template <class T>
Status quantize_cpu(const T* x, std::int64_t ld, const PackedMatrix& m) {
  return quantize_cpu(x, ld, m, QuantizeOptions{});
}

/// The fp32 scale of group `si` of m as dequantization uses it (host memory): the stored scale, or the
/// double-quantized one.
inline float effective_scale_cpu(const PackedMatrix& m, std::int64_t si) {
  if (m.dq.enabled)
    return dq_scale(dynamic_map().v, m.dq.codes[si], m.dq.absmax2[si / kDoubleQuantBlock], *m.dq.offset);
  return load_scale(m.scales, m.scale_type, si);
}

/// Dequantizes m (device buffers) into out [m.n, m.k] (device, row pitch ld_out) on `stream`.
template <class T>
Status dequantize(const PackedMatrix& m, T* out, std::int64_t ld_out, cudaStream_t stream) {
  NIBBLE_RETURN_IF_ERROR(can_implement_dequantize(m, out, ld_out));
  NIBBLE_RETURN_IF_ERROR(check_device());
  return detail::launch_dequantize(m, out, ld_out, stream);
}

/// CPU path of dequantize(): host buffers, bit-identical results.
template <class T>
Status dequantize_cpu(const PackedMatrix& m, T* out, std::int64_t ld_out) {
  NIBBLE_RETURN_IF_ERROR(can_implement_dequantize(m, out, ld_out));
  const std::int64_t g = effective_group(m.group_size, m.k);
  const std::int64_t groups = m.groups_per_row();
  const Codebook16 book = codebook(m.format);
  for (std::int64_t r = 0; r < m.n; ++r) {
    for (std::int64_t j = 0; j < groups; ++j) {
      const std::int64_t si = r * groups + j;
      const float s = effective_scale_cpu(m, si);
      const int zero = m.format == Format::kU4 ? int(m.zeros[si]) : 0;
      const float off = detail::group_offset(m, si);
      for (std::int64_t e = 0; e < g; e += 2) {
        const std::int64_t kk = j * g + e;
        const std::uint8_t byte = m.codes[r * m.ld_codes + kk / 2];
        out[r * ld_out + kk] = from_float<T>(dequantize_value(m.format, byte, s, zero, book.v, off));
        out[r * ld_out + kk + 1] = from_float<T>(dequantize_value(m.format, byte >> 4u, s, zero, book.v, off));
      }
    }
  }
  return Status::kSuccess;
}

}  // namespace nibble
