// nibble/status.cuh — the error type every host entry point returns, and the macros that propagate it.
#pragma once

#include "config.cuh"

namespace nibble {

/// Result of every host entry point. nibble never throws, aborts or prints: it returns one of these.
enum class Status : int {
  kSuccess = 0,
  kErrorNullPointer,         ///< a required pointer is null
  kErrorMisalignedPointer,   ///< a pointer is not aligned as the operation requires
  kErrorInvalidShape,        ///< a dimension is zero, negative, odd where it must be even, or unsupported
  kErrorGroupSize,           ///< the group size is unsupported, or K is not a multiple of it
  kErrorLeadingDimension,    ///< a leading dimension is smaller than the row it must hold
  kErrorSizeOverflow,        ///< a size or offset does not fit the 64-bit (or kernel 32-bit) index range
  kErrorUnsupportedFormat,   ///< the format / type combination is not supported by this operation
  kErrorUnsupportedDevice,   ///< the current GPU is older than sm_80, or no GPU is present
  kErrorWorkspaceTooSmall,   ///< the caller's workspace / staging buffer is smaller than required
  kErrorInvalidArgument,     ///< any other argument outside its documented range
  kErrorCuda,                ///< a CUDA runtime call or kernel launch failed
};

/// A readable, constant description of `s`.
NIBBLE_HOST_DEVICE constexpr const char* to_string(Status s) {
  switch (s) {
    case Status::kSuccess: return "success";
    case Status::kErrorNullPointer: return "a required pointer is null";
    case Status::kErrorMisalignedPointer: return "a pointer is not aligned as required";
    case Status::kErrorInvalidShape: return "invalid or unsupported matrix shape";
    case Status::kErrorGroupSize: return "unsupported group size, or K is not a multiple of the group size";
    case Status::kErrorLeadingDimension: return "a leading dimension is smaller than its row";
    case Status::kErrorSizeOverflow: return "a size or offset overflows the supported index range";
    case Status::kErrorUnsupportedFormat: return "format or element type not supported by this operation";
    case Status::kErrorUnsupportedDevice: return "no CUDA device, or the device is older than sm_80";
    case Status::kErrorWorkspaceTooSmall: return "workspace or staging buffer too small";
    case Status::kErrorInvalidArgument: return "invalid argument";
    case Status::kErrorCuda: return "a CUDA runtime call or kernel launch failed";
  }
  return "unknown nibble::Status";
}

/// Maps a CUDA runtime result to a Status (any error → kErrorCuda).
inline Status from_cuda(cudaError_t e) { return e == cudaSuccess ? Status::kSuccess : Status::kErrorCuda; }

namespace detail {
/// Attribute `attr` of the current device, or `fallback` when there is no device or a query fails (the
/// runtime error is consumed: it must not surface in the caller's next cudaGetLastError).
inline int current_device_attribute(cudaDeviceAttr attr, int fallback) {
  int dev = 0, value = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&value, attr, dev) != cudaSuccess) {
    (void)cudaGetLastError();
    return fallback;
  }
  return value;
}

/// Compute capability of the current device as major * 10 + minor; 0 without a device.
inline int current_compute_capability() {
  return current_device_attribute(cudaDevAttrComputeCapabilityMajor, 0) * 10 +
         current_device_attribute(cudaDevAttrComputeCapabilityMinor, 0);
}
}  // namespace detail

/// Checks that a CUDA device of compute capability ≥ 8.0 is current; any runtime error means "no GPU".
inline Status check_device() {
  return detail::current_compute_capability() >= kMinComputeCapability ? Status::kSuccess
                                                                        : Status::kErrorUnsupportedDevice;
}

}  // namespace nibble

/// Returns from the enclosing function if `expr` (a Status) is not kSuccess.
#define NIBBLE_RETURN_IF_ERROR(expr)                                        \
  do {                                                                      \
    ::nibble::Status nibble_status_ = (expr);                               \
    if (nibble_status_ != ::nibble::Status::kSuccess) return nibble_status_; \
  } while (0)

/// Returns Status::kErrorCuda from the enclosing function if the CUDA call `expr` fails.
#define NIBBLE_CUDA_TRY(expr)                                               \
  do {                                                                      \
    if ((expr) != cudaSuccess) return ::nibble::Status::kErrorCuda;         \
  } while (0)

/// After a kernel launch: returns Status::kErrorCuda if the launch failed.
#define NIBBLE_CHECK_LAUNCH() NIBBLE_CUDA_TRY(cudaGetLastError())
