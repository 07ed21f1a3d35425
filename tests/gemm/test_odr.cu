// tests/gemm/test_odr.cu — two translation units of one program, built for "80" and for "90a"
// (odr_sm80.cu, odr_sm90a.cu), each with its own nibble GEMM: the architecture-dependent code lives in
// differently named inline namespaces (config.cuh: NIBBLE_ARCH_NAMESPACE), so the linker keeps both and
// each unit runs its own kernels (the sm_80 unit never the wgmma body, the sm_90a unit on an sm_90 GPU
// always). Without the namespaces one definition of run() / wgmma_available() would silently win.
#include <gtest/gtest.h>

#include "common/gpu.hpp"
#include "odr_probe.hpp"

TEST(GemmOdr, TwoArchitectureUnitsKeepTheirOwnDefinitions) {
  const OdrProbe a = probe_sm80(false), b = probe_sm90a(false);
  EXPECT_FALSE(a.built_for_sm90a);
  EXPECT_TRUE(b.built_for_sm90a);
  EXPECT_NE(a.wgmma_available_fn, b.wgmma_available_fn) << "one wgmma_available() for both units";
  EXPECT_NE(a.run_fn, b.run_fn) << "one run<__half, kS4>() for both units";
}

TEST(GemmOdr, EachUnitRunsItsOwnKernelsOnTheGpu) {
  NIBBLE_REQUIRE_GPU();
  const OdrProbe a = probe_sm80(true), b = probe_sm90a(true);
  ASSERT_EQ(a.status, 0) << "sm_80 unit's run()";
  ASSERT_EQ(b.status, 0) << "sm_90a unit's run()";
  EXPECT_FALSE(a.wgmma_available) << "the sm_80 unit has no wgmma code";
  EXPECT_EQ(a.mainloop, 1) << "the sm_80 unit resolves kAuto to kMmaSync";
  int major = 0, minor = 0, dev = 0;
  ASSERT_EQ(cudaGetDevice(&dev), cudaSuccess);
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
  if (major == 9 && minor == 0) {
    EXPECT_TRUE(b.wgmma_available) << "the sm_90a unit on an sm_90 GPU";
    EXPECT_EQ(b.mainloop, 3) << "the sm_90a unit resolves kAuto to kWgmma";
  }
  // fp16 output: |error| <= a few fp16 ulps of the magnitude sum (the product of fp16 weights is exact).
  EXPECT_GE(a.max_rel_err, 0.0);
  EXPECT_LT(a.max_rel_err, 2e-3);
  EXPECT_GE(b.max_rel_err, 0.0);
  EXPECT_LT(b.max_rel_err, 2e-3);
}
