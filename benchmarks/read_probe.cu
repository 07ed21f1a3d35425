// benchmarks/read_probe.cu — developer tool (-DNIBBLE_BUILD_TUNING=ON, sm_90a): read bandwidth of the stream kernel's
// access pattern (each warp a contiguous run of 512-byte atoms), LDG.128 vs 1-D bulk copies (benchmarks/NOTES.md,
// session 5).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <nibble/detail/ptx.cuh>
#include <nibble/detail/wgmma.cuh>  // fence_proxy_async_shared
#include <vector>
#define CK(x)                                                       \
  do {                                                              \
    cudaError_t e = (x);                                            \
    if (e != cudaSuccess) {                                         \
      printf("CUDA %s line %d\n", cudaGetErrorString(e), __LINE__); \
      exit(1);                                                      \
    }                                                               \
  } while (0)
template <int D>
__global__ void __launch_bounds__(512, 1) rd_ldg(const unsigned char* base, long atoms, unsigned* out) {
  const int lane = threadIdx.x % 32, warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32,
            W = gridDim.x * blockDim.x / 32;
  long a0 = atoms * warp / W, a1 = atoms * (warp + 1) / W;
  const unsigned char* p = base + a0 * 512 + lane * 16;
  uint4 ring[D];
  unsigned acc = 0;
  for (int d = 0; d < D; ++d)
    if (a0 + d < a1) ring[d] = nibble::detail::ld_global_nc_v4(p + d * 512);
  for (long a = a0; a < a1; a += D) {
#pragma unroll
    for (int d = 0; d < D; ++d)
      if (a + d < a1) {
        acc ^= ring[d].x + ring[d].y * 3 + ring[d].z * 5 + ring[d].w;
        if (a + d + D < a1) ring[d] = nibble::detail::ld_global_nc_v4(p + (a + d + D - a0) * 512);
      }
  }
  if (acc == 0x12345678u) out[0] = acc;
}
namespace nd = nibble::detail;
template <int S, int CHUNK>
__global__ void __launch_bounds__(512, 1) rd_bulk(const unsigned char* base, long atoms, unsigned* out) {
  extern __shared__ __align__(128) unsigned char sm[];
  __shared__ __align__(8) unsigned long long bar[16][S];
  const int lane = threadIdx.x % 32, wl = threadIdx.x / 32, warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32,
            W = gridDim.x * blockDim.x / 32;
  long a0 = atoms * warp / W, a1 = atoms * (warp + 1) / W;
  unsigned char* ring = sm + wl * S * CHUNK * 512;
  if (lane == 0)
    for (int s = 0; s < S; ++s) nd::mbarrier_init(nd::smem_addr(&bar[wl][s]), 1);
  nd::fence_mbarrier_init();
  __syncwarp();
  const long chunks = (a1 - a0 + CHUNK - 1) / CHUNK;
  auto issue = [&](long c) {
    const int s = c % S;
    long first = a0 + c * CHUNK;
    int n = (int)min((long)CHUNK, a1 - first);
    const unsigned b = nd::smem_addr(&bar[wl][s]);
    nd::mbarrier_arrive_expect_tx(b, n * 512);
    nd::cp_async_bulk_g2s(nd::smem_addr(ring + s * CHUNK * 512), base + first * 512, n * 512, b);
  };
  if (lane == 0)
    for (long c = 0; c < S && c < chunks; ++c) issue(c);
  unsigned acc = 0;
  for (long c = 0; c < chunks; ++c) {
    const int s = c % S;
    const unsigned par = (c / S) & 1;
    nd::mbarrier_wait_parity(nd::smem_addr(&bar[wl][s]), par);
    int n = (int)min((long)CHUNK, a1 - (a0 + c * CHUNK));
    for (int i = 0; i < n; ++i) {
      uint4 v = *reinterpret_cast<const uint4*>(ring + s * CHUNK * 512 + i * 512 + lane * 16);
      acc ^= v.x + v.y * 3 + v.z * 5 + v.w;
    }
    __syncwarp();
    if (lane == 0 && c + S < chunks) {
      nd::fence_proxy_async_shared();
      issue(c + S);
    }
  }
  if (acc == 0x12345678u) out[0] = acc;
}
int main() {
  const long bytes = 121L << 20, copies = 8, atoms = bytes / 512;
  unsigned char* buf;
  unsigned* out;
  CK(cudaMalloc(&buf, bytes * copies));
  CK(cudaMalloc(&out, 4));
  CK(cudaMemset(buf, 1, bytes * copies));
  int sms;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  auto time = [&](const char* name, auto launch) {
    for (int i = 0; i < 8; ++i) launch(buf + (i % copies) * bytes);
    CK(cudaDeviceSynchronize());
    std::vector<float> t;
    for (int r = 0; r < 5; ++r) {
      cudaEventRecord(e0);
      for (int i = 0; i < 32; ++i) launch(buf + (i % copies) * bytes);
      cudaEventRecord(e1);
      CK(cudaEventSynchronize(e1));
      float ms;
      cudaEventElapsedTime(&ms, e0, e1);
      t.push_back(ms / 32);
    }
    std::sort(t.begin(), t.end());
    printf("%-22s %7.1f us %6.0f GB/s\n", name, t[2] * 1e3, bytes / (t[2] * 1e-3) / 1e9);
  };
  time("ldg D4 w16", [&](const unsigned char* p) { rd_ldg<4><<<sms, 512>>>(p, atoms, out); });
  time("ldg D8 w16", [&](const unsigned char* p) { rd_ldg<8><<<sms, 512>>>(p, atoms, out); });
  time("ldg D16 w16", [&](const unsigned char* p) { rd_ldg<16><<<sms, 512>>>(p, atoms, out); });
  time("ldg D8 w16x2cta", [&](const unsigned char* p) { rd_ldg<8><<<2 * sms, 512>>>(p, atoms, out); });
  // bulk variants: S stages x CHUNK atoms per warp, 16 warps per CTA, one CTA per SM
  auto time_bulk = [&](const char* name, auto kernel, int stages, int chunk) {
    const int smem = 16 * stages * chunk * 512;
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    time(name, [&](const unsigned char* p) { kernel<<<sms, 512, smem>>>(p, atoms, out); });
  };
  time_bulk("bulk S4 x 1KiB w16", rd_bulk<4, 2>, 4, 2);
  time_bulk("bulk S4 x 2KiB w16", rd_bulk<4, 4>, 4, 4);
  time_bulk("bulk S3 x 4KiB w16", rd_bulk<3, 8>, 3, 8);
  time_bulk("bulk S2 x 2KiB w16", rd_bulk<2, 4>, 2, 4);
  CK(cudaGetLastError());
  return 0;
}
