// tests/test_smoke.cu — the build, the test harness and (where there is one) the GPU work at all.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <vector>

#include "common/gpu.hpp"
#include "common/random.hpp"

// The umbrella header is written alongside this file; until it exists the smoke test still builds.
#if __has_include(<nibble/nibble.cuh>)
#include <nibble/nibble.cuh>
#endif

namespace {

__global__ void iota_kernel(int* out, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = i;
}

}  // namespace

TEST(Smoke, HostRandomIsReproducible) {
  auto rng_a = nibble_test_rng(7);
  auto rng_b = nibble_test_rng(7);
  const std::vector<float> a = nibble_test_normal(rng_a, 64);
  const std::vector<float> b = nibble_test_normal(rng_b, 64);
  EXPECT_EQ(a, b);
  auto rng_c = nibble_test_rng(8);
  EXPECT_NE(a, nibble_test_normal(rng_c, 64));
#ifdef NIBBLE_VERSION_STRING
  EXPECT_STRNE(NIBBLE_VERSION_STRING, "");
#endif
}

TEST(Smoke, DeviceKernelRuns) {
  NIBBLE_REQUIRE_GPU();
  constexpr int kCount = 1000;
  int* d_out = nullptr;
  ASSERT_EQ(cudaMalloc(&d_out, kCount * sizeof(int)), cudaSuccess);
  ASSERT_EQ(cudaMemset(d_out, 0xff, kCount * sizeof(int)), cudaSuccess);  // poison: -1 everywhere
  iota_kernel<<<(kCount + 255) / 256, 256>>>(d_out, kCount);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  std::vector<int> h_out(kCount, -1);
  EXPECT_EQ(cudaMemcpy(h_out.data(), d_out, kCount * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(cudaFree(d_out), cudaSuccess);
  for (int i = 0; i < kCount; ++i) ASSERT_EQ(h_out[i], i) << "at " << i;
}
