// tests/common/check.hpp — error macros and small helpers every test TU above format/ / thread/ shares.
//   CUDA_CHECK(expr)       a failed CUDA call inside a helper throws (gtest reports the exception)
//   NIBBLE_CHECK(expr)     a nibble call that does not return kSuccess throws
//   EXPECT_STATUS(s, expr) expect a Status, print both names on failure
//   quick_mode()           NIBBLE_QUICK=1 (set under compute-sanitizer): tests shrink their shape lists
//   dtype_name, group_name names in traces; to_bits / from_bits / t_round: fp16 / bf16 on the host
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <nibble/format/format.cuh>
#include <nibble/status.cuh>
#include <stdexcept>
#include <string>

#include "common/names.hpp"

using nibble::DType;
using nibble::Format;
using nibble::Status;
using std::int64_t;
using std::uint16_t;
using std::uint32_t;
using std::uint8_t;

inline constexpr int kPC = nibble::kPerChannel;
inline constexpr Format kAllFormats[] = {kS4, kU4, kNf4, kFp4};
/// Every format of the GEMM layout and the mma.sync / transposed GEMM (kAllFormats and affine u4).
inline constexpr Format kGemmFormats[] = {kS4, kU4, kNf4, kFp4, kAU4};
inline constexpr int kAllGroups[] = {32, 64, 128, 256, kPC};

// A failed CUDA call or library call inside a helper aborts the test case (gtest reports the exception).
#define CUDA_CHECK(expr)                                                                                    \
  do {                                                                                                      \
    const cudaError_t err_ = (expr);                                                                        \
    if (err_ != cudaSuccess)                                                                                \
      throw std::runtime_error(std::string(#expr) + " failed: " + cudaGetErrorName(err_) + " (" +           \
                               cudaGetErrorString(err_) + ") at " __FILE__ ":" + std::to_string(__LINE__)); \
  } while (0)

#define NIBBLE_CHECK(expr)                                                                      \
  do {                                                                                          \
    const ::nibble::Status st_ = (expr);                                                        \
    if (st_ != ::nibble::Status::kSuccess)                                                      \
      throw std::runtime_error(std::string(#expr) + " returned \"" + ::nibble::to_string(st_) + \
                               "\" at " __FILE__ ":" + std::to_string(__LINE__));               \
  } while (0)

#define EXPECT_STATUS(expected, expr)                                                                                \
  do {                                                                                                               \
    const ::nibble::Status got_ = (expr);                                                                            \
    EXPECT_EQ(int(expected), int(got_)) << #expr << " returned \"" << ::nibble::to_string(got_) << "\", expected \"" \
                                        << ::nibble::to_string(expected) << '"';                                     \
  } while (0)

inline bool quick_mode() {
  const char* v = std::getenv("NIBBLE_QUICK");
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

inline const char* dtype_name(DType t) { return t == kF32 ? "f32" : (t == kF16 ? "f16" : "bf16"); }
inline std::string group_name(int g) { return g == kPC ? "pc" : "g" + std::to_string(g); }
inline int64_t src_groups(int group, int64_t k) { return group == kPC ? 1 : k / group; }

inline uint16_t to_bits(DType t, float x) {
  if (t == kF16) return __half_raw(__float2half_rn(x)).x;
  return __nv_bfloat16_raw(__float2bfloat16_rn(x)).x;
}
inline float from_bits(DType t, uint16_t b) {
  if (t == kF16) {
    __half_raw r;
    r.x = b;
    return __half2float(__half(r));
  }
  __nv_bfloat16_raw r;
  r.x = b;
  return __bfloat162float(__nv_bfloat16(r));
}
inline float t_round(DType t, float x) { return t == kF32 ? x : from_bits(t, to_bits(t, x)); }
