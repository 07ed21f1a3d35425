// nibble/status.cuh — the error type every host entry point returns, and the macros that propagate it.
#pragma once

#include "config.cuh"

namespace nibble {

/// Result of every host entry point that can fail (the size helpers without failure modes return sizes). nibble never
/// throws, aborts or prints: it returns one of these.
enum class Status : int {
  kSuccess = 0,
  kErrorNullPointer,        ///< a required pointer is null
  kErrorMisalignedPointer,  ///< a pointer is not aligned as the operation requires
  kErrorInvalidShape,       ///< a dimension is zero, negative, odd where it must be even, or unsupported
  kErrorGroupSize,          ///< the group size is unsupported, or K is not a multiple of it
  kErrorLeadingDimension,   ///< a leading dimension is smaller than the row it must hold
  kErrorSizeOverflow,       ///< a size or offset does not fit the 64-bit (or kernel 32-bit) index range
  kErrorUnsupportedFormat,  ///< the format / type combination is not supported by this operation
  kErrorUnsupportedDevice,  ///< no usable GPU (none, or older than sm_80), or the GPU / build cannot run what was asked
  kErrorWorkspaceTooSmall,  ///< the caller's workspace / staging buffer is smaller than required
  kErrorInvalidArgument,    ///< any other argument outside its documented range
  kErrorCuda,               ///< a CUDA runtime call or kernel launch failed
};

/// A readable, constant description of `s`.
NIBBLE_HOST_DEVICE constexpr const char* to_string(Status s) {
  switch (s) {
    case Status::kSuccess:
      return "success";
    case Status::kErrorNullPointer:
      return "a required pointer is null";
    case Status::kErrorMisalignedPointer:
      return "a pointer is not aligned as required";
    case Status::kErrorInvalidShape:
      return "invalid or unsupported matrix shape";
    case Status::kErrorGroupSize:
      return "unsupported group size, or K is not a multiple of the group size";
    case Status::kErrorLeadingDimension:
      return "a leading dimension is smaller than its row";
    case Status::kErrorSizeOverflow:
      return "a size or offset overflows the supported index range";
    case Status::kErrorUnsupportedFormat:
      return "format or element type not supported by this operation";
    case Status::kErrorUnsupportedDevice:
      return "no CUDA device, a device older than sm_80, or the device / build cannot run this request (no tile fits "
             "its "
             "shared-memory limit, or wgmma was forced without sm_90a device code on an sm_90 GPU)";
    case Status::kErrorWorkspaceTooSmall:
      return "workspace or staging buffer too small";
    case Status::kErrorInvalidArgument:
      return "invalid argument";
    case Status::kErrorCuda:
      return "a CUDA runtime call or kernel launch failed";
  }
  return "unknown nibble::Status";
}

/// Maps a CUDA runtime result to a Status (any error → kErrorCuda).
inline Status from_cuda(cudaError_t e) { return e == cudaSuccess ? Status::kSuccess : Status::kErrorCuda; }

}  // namespace nibble

/// Returns from the enclosing function if `expr` (a Status) is not kSuccess.
#define NIBBLE_RETURN_IF_ERROR(expr)                                         \
  do {                                                                       \
    ::nibble::Status nibble_status_ = (expr);                                \
    if (nibble_status_ != ::nibble::Status::kSuccess) return nibble_status_; \
  } while (0)

/// Returns Status::kErrorCuda from the enclosing function if the CUDA call `expr` fails.
#define NIBBLE_CUDA_TRY(expr)                                       \
  do {                                                              \
    if ((expr) != cudaSuccess) return ::nibble::Status::kErrorCuda; \
  } while (0)

/// After a kernel launch: returns Status::kErrorCuda if the launch failed.
#define NIBBLE_CHECK_LAUNCH() NIBBLE_CUDA_TRY(cudaGetLastError())
