// tests/gemm/test_gemm_sm80.cu — a GEMM binary built for sm_80 only (no sm_90a device code, so
// NIBBLE_SM90A is undefined): forcing the wgmma mainloop must be refused with kErrorUnsupportedDevice on
// every device, also on an sm_90 one where test_gemm_run (built with sm_90a) runs the wgmma oracles
// instead. Kept small: the kernels compile once, for sm_80.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <nibble/detail/ptx.cuh>
#include <nibble/gemm/gemm.cuh>

#include "common/check.hpp"
#include "common/device_buffer.hpp"
#include "common/gemm_run.hpp"
#include "common/gpu.hpp"
#include "common/host_weights.hpp"
#include "common/random.hpp"

#if defined(NIBBLE_SM90A)
#error "test_gemm_sm80 must be built without sm_90a device code (CUDA_ARCHITECTURES 80)"
#endif

namespace {

TEST(Gemm_Sm80Build, ForcedWgmmaIsRejected) {
  NIBBLE_REQUIRE_GPU();
  ASSERT_FALSE(gemm::wgmma_available()) << "no sm_90a device code in this binary";
  auto rng = nibble_test_rng();
  const HostWeights w = make_weights(rng, kS4, 128, 64, 256, kF16, Data::kExact);
  const DeviceWeights dw = upload_and_repack(w, kF16);
  // M = 64: a transposed tile (up to M = 48 kWgmma runs the mma.sync decode tiles, which need no wgmma)
  const HostProblem p = make_problem(rng, kF16, w, 64, Data::kExact);
  const DeviceActs da = upload_acts(p);
  DevBuf c(std::size_t(p.m * p.n()) * 4);
  RunOpts o;
  o.mainloop = gemm::Mainloop::kWgmma;
  const gemm::Arguments args = make_args(p, dw, da, o, c.get());
  EXPECT_STATUS(Status::kErrorUnsupportedDevice, gemm::run(args, nullptr, 0, nullptr));
}

// No wgmma anywhere in this binary: the host knows it (wgmma_available() false) and the device code agrees.
TEST(Gemm_Sm80Build, NoWgmmaInHostOrDeviceCode) {
  NIBBLE_REQUIRE_GPU();
  const bool compiled = device_code_has_wgmma();
  EXPECT_FALSE(compiled);
  EXPECT_FALSE(gemm::wgmma_available());
}

}  // namespace
