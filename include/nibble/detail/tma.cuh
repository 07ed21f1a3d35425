// nibble/detail/tma.cuh — TMA tensor maps (sm_90+): a host-side builder for the tiles of a 2-D row-major
// tensor, and the device-side tile copy and descriptor prefetch, one PTX instruction each (as ptx.cuh).
//
// Groundwork of issue 11 (the Hopper prefill mainloop loads its activation tiles this way); no GEMM kernel uses
// these yet. The builder checks the driver's documented rules for cuTensorMapEncodeTiled (cuda.h) on the host
// and answers a nibble::Status for each, so that a bad shape never reaches the driver; it reaches the driver
// through the runtime's entry-point query (no libcuda link, no driver needed to compile or to be refused).
#pragma once

#include <cuda.h>          // CUtensorMap and its enums (types only)
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled_v12000
#include <cuda_runtime.h>

#include <cstdint>

#include "../config.cuh"
#include "../status.cuh"

namespace nibble::detail {

/// The tiles of a 2-D row-major tensor: `rows` x `cols` elements of type `dtype` at `base`, rows
/// `row_stride_bytes` apart; one copy moves a box of `box_rows` x `box_cols` elements, laid out in shared
/// memory with `swizzle` (CU_TENSOR_MAP_SWIZZLE_128B: the 16-byte chunk c of box row r at chunk c ^ (r % 8), the
/// K-major layout a wgmma descriptor with 128-byte swizzle describes). Elements outside the tensor read as 0.
struct Tma2d {
  const void* base = nullptr;
  CUtensorMapDataType dtype = CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  std::int64_t rows = 0, cols = 0;
  std::int64_t row_stride_bytes = 0;
  int box_rows = 0, box_cols = 0;
  CUtensorMapSwizzle swizzle = CU_TENSOR_MAP_SWIZZLE_128B;
};

/// Bytes per element of the data types Tma2d takes (0: not one of them).
inline int tma_element_bytes(CUtensorMapDataType t) {
  switch (t) {
    case CU_TENSOR_MAP_DATA_TYPE_UINT8:
      return 1;
    case CU_TENSOR_MAP_DATA_TYPE_UINT16:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT16:
    case CU_TENSOR_MAP_DATA_TYPE_BFLOAT16:
      return 2;
    case CU_TENSOR_MAP_DATA_TYPE_UINT32:
    case CU_TENSOR_MAP_DATA_TYPE_INT32:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT32:
      return 4;
    default:
      return 0;
  }
}

/// Bytes of one swizzle span (the most a box row may hold under that swizzle; 0: no swizzle, no limit; -1: not
/// a swizzle Tma2d takes).
inline int tma_swizzle_bytes(CUtensorMapSwizzle s) {
  switch (s) {
    case CU_TENSOR_MAP_SWIZZLE_NONE:
      return 0;
    case CU_TENSOR_MAP_SWIZZLE_32B:
      return 32;
    case CU_TENSOR_MAP_SWIZZLE_64B:
      return 64;
    case CU_TENSOR_MAP_SWIZZLE_128B:
      return 128;
    default:
      return -1;
  }
}

/// The rules cuTensorMapEncodeTiled states (cuda.h) for a rank-2 tile map without interleave, on the host:
/// base non-null and 16-byte aligned; 1 <= rows, cols <= 2^32; the row stride a multiple of 16 below 2^40 that
/// holds a row; 1 <= box dims <= 256, a box row a multiple of 16 bytes and within the swizzle span.
inline Status check_tma_2d(const Tma2d& d) {
  const int eb = tma_element_bytes(d.dtype), span = tma_swizzle_bytes(d.swizzle);
  if (eb == 0 || span < 0) return Status::kErrorUnsupportedFormat;
  if (d.base == nullptr) return Status::kErrorNullPointer;
  if (!is_aligned(d.base, 16)) return Status::kErrorMisalignedPointer;
  constexpr std::int64_t kMaxDim = std::int64_t(1) << 32, kMaxStride = std::int64_t(1) << 40;
  if (d.rows < 1 || d.cols < 1 || d.rows > kMaxDim || d.cols > kMaxDim) return Status::kErrorInvalidShape;
  if (d.row_stride_bytes % 16 != 0 || d.row_stride_bytes >= kMaxStride) return Status::kErrorLeadingDimension;
  if (d.cols > d.row_stride_bytes / eb) return Status::kErrorLeadingDimension;  // (rows may not overlap)
  if (d.box_rows < 1 || d.box_cols < 1 || d.box_rows > 256 || d.box_cols > 256) return Status::kErrorInvalidShape;
  const int box_row_bytes = d.box_cols * eb;
  if (box_row_bytes % 16 != 0 || (span > 0 && box_row_bytes > span)) return Status::kErrorInvalidShape;
  return Status::kSuccess;
}

/// A driver function through the runtime (nibble links no libcuda): null where the runtime finds none.
inline void* driver_entry_point(const char* name, unsigned version) {
  void* p = nullptr;
  cudaDriverEntryPointQueryResult q{};
  if (cudaGetDriverEntryPointByVersion(name, &p, version, cudaEnableDefault, &q) != cudaSuccess ||
      q != cudaDriverEntryPointSuccess) {
    (void)cudaGetLastError();  // (leave no sticky error behind)
    p = nullptr;
  }
  return p;
}

/// The driver's cuTensorMapEncodeTiled, looked up once (null where the runtime finds no driver).
inline PFN_cuTensorMapEncodeTiled_v12000 tma_encode_entry_point() {
  static const auto fn =
      reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(driver_entry_point("cuTensorMapEncodeTiled", 12000));
  return fn;
}

/// The driver's cuCtxGetCurrent, looked up once (null where the runtime finds no driver).
inline PFN_cuCtxGetCurrent_v4000 ctx_get_current_entry_point() {
  static const auto fn = reinterpret_cast<PFN_cuCtxGetCurrent_v4000>(driver_entry_point("cuCtxGetCurrent", 4000));
  return fn;
}

/// Encodes `d` into `*map` (64-byte aligned: a kernel parameter declared `const __grid_constant__ CUtensorMap`,
/// or global memory). check_tma_2d's answer where it refuses; kErrorUnsupportedDevice without a driver that has
/// the entry point; kErrorInvalidArgument where the driver refuses what the checks let through.
inline Status make_tma_2d(const Tma2d& d, CUtensorMap* map) {
  if (map == nullptr) return Status::kErrorNullPointer;
  if (!is_aligned(map, 64)) return Status::kErrorMisalignedPointer;
  NIBBLE_RETURN_IF_ERROR(check_tma_2d(d));
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tma_encode_entry_point();
  if (encode == nullptr) return Status::kErrorUnsupportedDevice;
  const cuuint64_t dims[2] = {cuuint64_t(d.cols), cuuint64_t(d.rows)};  // innermost first
  const cuuint64_t strides[1] = {cuuint64_t(d.row_stride_bytes)};
  const cuuint32_t box[2] = {cuuint32_t(d.box_cols), cuuint32_t(d.box_rows)};
  const cuuint32_t element_strides[2] = {1, 1};
  auto encode_once = [&] {
    return encode(map, d.dtype, 2, const_cast<void*>(d.base), dims, strides, box, element_strides,
                  CU_TENSOR_MAP_INTERLEAVE_NONE, d.swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_128B,
                  CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  };
  // The encode needs a current context: without one it refused a valid map (H200, CUDA 13.0 driver, in a process
  // whose first CUDA work this was; a cudaGetDeviceCount before did not help, a cudaMalloc did). So where the
  // calling thread has none, the current device's primary context is made current first (cudaSetDevice, CUDA
  // 12+); a thread that has one (the runtime's, or a driver API caller's own) keeps it. Asked, not tried: a
  // refused encode would be an API error under compute-sanitizer, and a map the driver refuses stays refused.
  CUcontext current = nullptr;
  const PFN_cuCtxGetCurrent_v4000 get_current = ctx_get_current_entry_point();
  if (get_current == nullptr || get_current(&current) != CUDA_SUCCESS || current == nullptr) {
    int device = 0;
    if (cudaGetDevice(&device) != cudaSuccess || cudaSetDevice(device) != cudaSuccess) {
      (void)cudaGetLastError();
      return Status::kErrorUnsupportedDevice;
    }
  }
  return encode_once() == CUDA_SUCCESS ? Status::kSuccess : Status::kErrorInvalidArgument;
}

/// Tile copy global -> shared (sm_90+; nothing elsewhere): the box whose first element is (row r0, column c0)
/// of the tensor `map` describes, to shared address `smem` (128-byte aligned; 1024 with 128-byte swizzle),
/// completing as transactions on the mbarrier at `bar` (which expects the box's bytes). Elements outside the
/// tensor are written as 0 and still count.
NIBBLE_DEVICE void tma_load_2d(std::uint32_t smem, const CUtensorMap* map, int c0, int r0, std::uint32_t bar) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];" ::
          "r"(smem),
      "l"(map), "r"(c0), "r"(r0), "r"(bar)
      : "memory");
#else
  (void)smem, (void)map, (void)c0, (void)r0, (void)bar;
#endif
}

/// Prefetches the tensor map `map` (a kernel parameter or global memory) into the descriptor cache (sm_90+).
NIBBLE_DEVICE void tma_prefetch_descriptor(const CUtensorMap* map) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  asm volatile("prefetch.tensormap [%0];" ::"l"(map) : "memory");
#else
  (void)map;
#endif
}

}  // namespace nibble::detail
