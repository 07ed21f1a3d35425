// nibble/device.cuh — what the host API needs to know about a GPU, asked once per device and cached (in the
// manner of CUB's PerDeviceAttributeCache): compute capability, SM count, shared memory and threads per SM,
// the opt-in shared-memory limit of one block, the L2 size.
//
//   nibble::DeviceInfo info;
//   if (nibble::current_device_info(&info) == nibble::Status::kSuccess) { ... info.sm_count ... }
//
// The first query of a device makes a handful of cudaDeviceGetAttribute calls; every later one is a
// cudaGetDevice call and an atomic load. Thread safe; a failed query is not cached (a later one retries).
#pragma once

#include <atomic>

#include "status.cuh"

namespace nibble {

/// The properties of one device that nibble's host code uses.
struct DeviceInfo {
  int device = -1;             ///< the CUDA device ordinal
  int compute_capability = 0;  ///< major * 10 + minor
  int sm_count = 0;            ///< streaming multiprocessors
  int max_smem_per_block = 0;  ///< bytes of dynamic shared memory one block may opt in to
  int smem_per_sm = 0;         ///< bytes of shared memory per SM (all resident blocks together)
  int max_threads_per_sm = 0;  ///< resident threads per SM
  int l2_bytes = 0;            ///< L2 cache size
};

namespace detail {

/// Devices the cache holds; a higher ordinal is queried every time (never cached, still correct).
inline constexpr int kMaxCachedDevices = 64;

/// Queries `device` directly (no cache). Consumes the runtime error of a failed query, so that it cannot
/// surface in the caller's next cudaGetLastError().
inline Status query_device_info(int device, DeviceInfo* out) {
  DeviceInfo d;
  d.device = device;
  int major = 0, minor = 0;
  const cudaError_t e[] = {
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device),
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device),
      cudaDeviceGetAttribute(&d.sm_count, cudaDevAttrMultiProcessorCount, device),
      cudaDeviceGetAttribute(&d.max_smem_per_block, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
      cudaDeviceGetAttribute(&d.smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device),
      cudaDeviceGetAttribute(&d.max_threads_per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, device),
      cudaDeviceGetAttribute(&d.l2_bytes, cudaDevAttrL2CacheSize, device),
  };
  for (cudaError_t err : e) {
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      return Status::kErrorUnsupportedDevice;
    }
  }
  d.compute_capability = major * 10 + minor;
  *out = d;
  return Status::kSuccess;
}

/// One slot per device ordinal: state 0 empty, 1 being filled, 2 valid.
struct DeviceInfoSlot {
  std::atomic<int> state{0};
  DeviceInfo info;
};
inline DeviceInfoSlot* device_info_slots() {
  static DeviceInfoSlot slots[kMaxCachedDevices];
  return slots;
}

}  // namespace detail

/// The cached properties of `device`; kErrorUnsupportedDevice when it cannot be queried (no driver, no
/// such device). Does not check the compute capability (see check_device).
inline Status device_info(int device, DeviceInfo* out) {
  if (out == nullptr) return Status::kErrorNullPointer;
  if (device < 0) return Status::kErrorUnsupportedDevice;
  if (device >= detail::kMaxCachedDevices) return detail::query_device_info(device, out);
  detail::DeviceInfoSlot& slot = detail::device_info_slots()[device];
  if (slot.state.load(std::memory_order_acquire) == 2) {
    *out = slot.info;
    return Status::kSuccess;
  }
  DeviceInfo d;
  NIBBLE_RETURN_IF_ERROR(detail::query_device_info(device, &d));
  int expected = 0;
  if (slot.state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
    slot.info = d;
    slot.state.store(2, std::memory_order_release);
  }
  *out = d;
  return Status::kSuccess;
}

/// The cached properties of the current device (cudaGetDevice); kErrorUnsupportedDevice without one.
inline Status current_device_info(DeviceInfo* out) {
  if (out == nullptr) return Status::kErrorNullPointer;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    (void)cudaGetLastError();
    return Status::kErrorUnsupportedDevice;
  }
  return device_info(device, out);
}

/// kSuccess when `info` is a device nibble's kernels run on (compute capability >= 8.0).
inline Status check_device(const DeviceInfo& info) {
  return info.compute_capability >= kMinComputeCapability ? Status::kSuccess : Status::kErrorUnsupportedDevice;
}

/// Checks that a CUDA device of compute capability >= 8.0 is current; any runtime error means "no GPU".
inline Status check_device() {
  DeviceInfo info;
  NIBBLE_RETURN_IF_ERROR(current_device_info(&info));
  return check_device(info);
}

}  // namespace nibble
