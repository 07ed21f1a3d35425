// benchmarks/read_probe.cu — developer tool (-DNIBBLE_BUILD_TUNING=ON, sm_90a): read bandwidth of the stream kernel's
// access pattern (each warp a contiguous run of 512-byte atoms), LDG.128 vs 1-D bulk copies (benchmarks/NOTES.md,
// session 5).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>
#define CK(x)                                                       \
  do {                                                              \
    cudaError_t e = (x);                                            \
    if (e != cudaSuccess) {                                         \
      printf("CUDA %s line %d\n", cudaGetErrorString(e), __LINE__); \
      exit(1);                                                      \
    }                                                               \
  } while (0)
__device__ uint4 ldna(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}
template <int D>
__global__ void __launch_bounds__(512, 1) rd_ldg(const unsigned char* base, long atoms, unsigned* out) {
  const int lane = threadIdx.x % 32, warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32,
            W = gridDim.x * blockDim.x / 32;
  long a0 = atoms * warp / W, a1 = atoms * (warp + 1) / W;
  const unsigned char* p = base + a0 * 512 + lane * 16;
  uint4 ring[D];
  unsigned acc = 0;
  for (int d = 0; d < D; ++d)
    if (a0 + d < a1) ring[d] = ldna(p + d * 512);
  for (long a = a0; a < a1; a += D) {
#pragma unroll
    for (int d = 0; d < D; ++d)
      if (a + d < a1) {
        acc ^= ring[d].x + ring[d].y * 3 + ring[d].z * 5 + ring[d].w;
        if (a + d + D < a1) ring[d] = ldna(p + (a + d + D - a0) * 512);
      }
  }
  if (acc == 0x12345678u) out[0] = acc;
}
__device__ unsigned smem_u32(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
template <int S, int CHUNK>
__global__ void __launch_bounds__(512, 1) rd_bulk(const unsigned char* base, long atoms, unsigned* out) {
  extern __shared__ __align__(128) unsigned char sm[];
  __shared__ __align__(8) unsigned long long bar[16][S];
  const int lane = threadIdx.x % 32, wl = threadIdx.x / 32, warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32,
            W = gridDim.x * blockDim.x / 32;
  long a0 = atoms * warp / W, a1 = atoms * (warp + 1) / W;
  unsigned char* ring = sm + wl * S * CHUNK * 512;
  if (lane == 0)
    for (int s = 0; s < S; ++s) asm volatile("mbarrier.init.shared.b64 [%0], 1;" ::"r"(smem_u32(&bar[wl][s])));
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  __syncwarp();
  const long chunks = (a1 - a0 + CHUNK - 1) / CHUNK;
  auto issue = [&](long c) {
    const int s = c % S;
    long first = a0 + c * CHUNK;
    int n = (int)min((long)CHUNK, a1 - first);
    unsigned b = smem_u32(&bar[wl][s]);
    asm volatile("mbarrier.arrive.expect_tx.shared.b64 _, [%0], %1;" ::"r"(b), "r"(n * 512) : "memory");
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                     smem_u32(ring + s * CHUNK * 512)),
                 "l"(base + first * 512), "r"(n * 512), "r"(b)
                 : "memory");
  };
  if (lane == 0)
    for (long c = 0; c < S && c < chunks; ++c) issue(c);
  unsigned acc = 0;
  for (long c = 0; c < chunks; ++c) {
    const int s = c % S;
    const unsigned par = (c / S) & 1;
    unsigned b = smem_u32(&bar[wl][s]);
    asm volatile("{ .reg .pred p; W: mbarrier.try_wait.parity.shared.b64 p, [%0], %1; @!p bra W; }" ::"r"(b), "r"(par)
                 : "memory");
    int n = (int)min((long)CHUNK, a1 - (a0 + c * CHUNK));
    for (int i = 0; i < n; ++i) {
      uint4 v = *reinterpret_cast<const uint4*>(ring + s * CHUNK * 512 + i * 512 + lane * 16);
      acc ^= v.x + v.y * 3 + v.z * 5 + v.w;
    }
    __syncwarp();
    if (lane == 0 && c + S < chunks) {
      asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
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
  {
    auto k = rd_bulk<4, 2>;
    int sm = 16 * 4 * 2 * 512;
    CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, sm));
    time("bulk S4 x 1KiB w16", [&](const unsigned char* p) { k<<<sms, 512, sm>>>(p, atoms, out); });
  }
  {
    auto k = rd_bulk<4, 4>;
    int sm = 16 * 4 * 4 * 512;
    CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, sm));
    time("bulk S4 x 2KiB w16", [&](const unsigned char* p) { k<<<sms, 512, sm>>>(p, atoms, out); });
  }
  {
    auto k = rd_bulk<3, 8>;
    int sm = 16 * 3 * 8 * 512;
    CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, sm));
    time("bulk S3 x 4KiB w16", [&](const unsigned char* p) { k<<<sms, 512, sm>>>(p, atoms, out); });
  }
  {
    auto k = rd_bulk<2, 4>;
    int sm = 16 * 2 * 4 * 512;
    CK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, sm));
    time("bulk S2 x 2KiB w16", [&](const unsigned char* p) { k<<<sms, 512, sm>>>(p, atoms, out); });
  }
  CK(cudaGetLastError());
  return 0;
}
