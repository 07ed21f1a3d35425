// tests/common/gpu.hpp — is there a usable CUDA device? Skip GPU tests visibly when there is none.
//
//   TEST(Gemm, Small) {
//     NIBBLE_REQUIRE_GPU();   // "[  SKIPPED ] no CUDA device (...)" on a machine without one
//     ...
//   }
//
// CTest marks such a case "Skipped" (SKIP_REGULAR_EXPRESSION in tests/CMakeLists.txt), so a
// CPU-only machine never reports GPU cases as passed. On a machine that must have a GPU
// (.ci/gpu-check sets NIBBLE_EXPECT_GPU=1) a missing device is a failure instead: a driver/runtime
// mismatch must not turn the whole GPU suite into silent skips.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>

/// Why there is no usable device ("" when there is one). Asked once per process.
inline const std::string& nibble_test_gpu_problem() {
  static const std::string problem = [] {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    // A failed runtime call leaves a sticky "last error"; clear it so it cannot leak into the first
    // cudaGetLastError() a test makes after its own launch.
    cudaGetLastError();
    if (err != cudaSuccess) return std::string("cudaGetDeviceCount: ") + cudaGetErrorName(err);
    if (count == 0) return std::string("cudaGetDeviceCount returned 0 devices");
    return std::string();
  }();
  return problem;
}

/// True when at least one CUDA device can be used. Any runtime error (no driver, driver too old for
/// this runtime, no device) counts as "no GPU".
inline bool nibble_test_has_gpu() { return nibble_test_gpu_problem().empty(); }

/// True when NIBBLE_EXPECT_GPU=1: a missing GPU must fail the test, not skip it.
inline bool nibble_test_expect_gpu() {
  const char* value = std::getenv("NIBBLE_EXPECT_GPU");
  return value != nullptr && std::strcmp(value, "1") == 0;
}

/// First statement of every test that needs a GPU: skips the test (or fails it under
/// NIBBLE_EXPECT_GPU=1) when there is no usable CUDA device. Use it in a TEST body or a SetUp().
#define NIBBLE_REQUIRE_GPU()                                                                            \
  do {                                                                                                  \
    if (!nibble_test_has_gpu()) {                                                                       \
      if (nibble_test_expect_gpu()) {                                                                   \
        GTEST_FAIL() << "NIBBLE_EXPECT_GPU=1 but no CUDA device (" << nibble_test_gpu_problem() << ")"; \
      }                                                                                                 \
      GTEST_SKIP() << "no CUDA device (" << nibble_test_gpu_problem() << ")";                           \
    }                                                                                                   \
  } while (0)
