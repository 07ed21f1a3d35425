// tests/quant/bnb_crosscheck.cu — a MANUAL cross-check, not built by CMake and not part of CTest: nibble's
// QuantizeOptions::bnb_compatible against the real bitsandbytes CUDA kernels, loaded from the sm_90 cubin of a
// released bitsandbytes wheel through the driver API (no torch, no bitsandbytes Python needed). It compares,
// code for code, the 4-bit codes and absmax of kQuantizeBlockwise / kQuantizeBlockwiseSmall (nf4, fp4; fp32,
// fp16, bf16 inputs; blocksizes 32, 64, 128, 256, 1024 = nibble's kPerChannel with K = 1024) and the second
// level of double quantization (bitsandbytes' 8-bit kQuantizeBlockwise<float, 256> on absmax - offset, with
// nibble's offset), on N(0, 1) data plus threshold ties and fp32 subnormals. Exit status 1 on any difference.
//
// Run on a machine with an sm_90 GPU (H100 / H200; the cubin must match the GPU):
//   pip download bitsandbytes==0.50.2 --no-deps --only-binary=:all: \
//       --platform manylinux_2_24_x86_64 --python-version 3.11 -d /tmp/bnb
//   cd /tmp/bnb && unzip -o -q bitsandbytes-0.50.2-*.whl bitsandbytes/libbitsandbytes_cuda130.so
//   cuobjdump -xelf libbitsandbytes_cuda130.5.sm_90.cubin bitsandbytes/libbitsandbytes_cuda130.so
//   nvcc -std=c++17 -O2 -arch=sm_90a --expt-relaxed-constexpr -I include tests/quant/bnb_crosscheck.cu \
//       -o /tmp/bnb_crosscheck -lcuda && /tmp/bnb_crosscheck /tmp/bnb/libbitsandbytes_cuda130.5.sm_90.cubin
// Kernel names and launch shapes are bitsandbytes 0.50.2's (csrc/ops.cu quantizeBlockwise: blocksize /
// NUM_PER_TH threads, NUM_PER_TH = 4 from blocksize 1024 up; blocksize 32: kQuantizeBlockwiseSmall, 32
// threads per two blocks). Result on an H200 when it was written: 0 differences in every case with bnb_compatible.
#include <cuda.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <nibble/quant/quantize.cuh>
#include <random>
#include <string>
#include <vector>
using namespace nibble;

#define CK(x)                                          \
  do {                                                 \
    CUresult r_ = (x);                                 \
    if (r_ != CUDA_SUCCESS) {                          \
      const char* s;                                   \
      cuGetErrorString(r_, &s);                        \
      std::printf("CU error %s at %d\n", s, __LINE__); \
      std::exit(2);                                    \
    }                                                  \
  } while (0)
#define RK(x)                                                                 \
  do {                                                                        \
    cudaError_t r_ = (x);                                                     \
    if (r_ != cudaSuccess) {                                                  \
      std::printf("CUDA error %s at %d\n", cudaGetErrorString(r_), __LINE__); \
      std::exit(2);                                                           \
    }                                                                         \
  } while (0)

CUmodule g_mod;
const float kNf4T[15] = {-0.8480964004993439f,  -0.6106329262256622f,  -0.4599952697753906f,   -0.33967943489551544f,
                         -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
                         0.1202552504837513f,   0.2035212516784668f,   0.2920137718319893f,    0.3893125355243683f,
                         0.5016634166240692f,   0.6427869200706482f,   0.8614784181118011f};
const float kFp4T[7] = {0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f, 0.4166667f, 0.583333f, 0.8333333f};

template <class T>
const char* tname();
template <>
const char* tname<float>() {
  return "f";
}
template <>
const char* tname<__half>() {
  return "6__half";
}
template <>
const char* tname<__nv_bfloat16>() {
  return "13__nv_bfloat16";
}

template <class T>
T nudge(T t, int steps) {
  using B = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint16_t>;
  B b;
  std::memcpy(&b, &t, sizeof b);
  const B sign = B(B(1) << (8 * sizeof(B) - 1));
  const B mag = B(b & B(~sign));
  if (mag == 0) return t;
  b = B((b & sign) | B(mag + B(steps)));
  std::memcpy(&t, &b, sizeof b);
  return t;
}

template <class T>
std::vector<T> make_input(bool nf4, int64_t n, int64_t k, int64_t g, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::uniform_int_distribution<int> pick(0, 1 << 30);
  std::vector<T> x(size_t(n * k));
  for (auto& v : x) v = from_float<T>(normal(rng));
  const float kA[] = {1.0f, 3.0f, 12.0f, 6.0f, 10.0f, 7.0f, 0.75f, 2.5f, 0.1f, 5.5f, 0.3f, 1.5f, 2.0f, 0.5f};
  const float* th = nf4 ? kNf4T : kFp4T;
  const int tc = nf4 ? 15 : 7;
  const bool wide = !std::is_same_v<T, __half>;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < k / g; ++j) {
      T* grp = x.data() + r * k + j * g;
      if (wide && r == n - 1) {
        for (int64_t e = 0; e < g; ++e) {
          float v = std::ldexp(float(1 + pick(rng) % 127), -133);
          grp[e] = from_float<T>(pick(rng) % 2 ? v : -v);
        }
        continue;
      }
      if (wide && r == n - 2) {
        grp[0] = from_float<T>(std::ldexp(1.f, 100));
        for (int64_t e = 1; e < g; ++e) grp[e] = from_float<T>(-std::ldexp(float(1 + pick(rng) % 127), -40));
        grp[1] = from_float<T>(-std::ldexp(1.f, -130));
        continue;
      }
      int kind = int((r * (k / g) + j) % 4);
      if (kind == 0) continue;
      float a = kind == 3 ? std::fabs(normal(rng)) * 4.f + 0.05f : kA[pick(rng) % 14];
      a = to_float(from_float<T>(a));
      grp[0] = from_float<T>(pick(rng) % 2 ? a : -a);
      for (int64_t e = 1; e < g; ++e) {
        float t = th[pick(rng) % tc];
        if (!nf4 && pick(rng) % 2) t = -t;
        grp[e] = nudge(from_float<T>(float(double(t) * double(a))), pick(rng) % 3 - 1);
      }
      if (wide && kind == 3) grp[g - 1] = from_float<T>(-std::ldexp(1.f, -128));
    }
  return x;
}

// bnb 4-bit on device data: out packed (first element HIGH nibble), absmax.
template <class T>
void bnb_quantize(const T* d_x, int64_t total, int bs, bool nf4, float* d_code, unsigned char* d_out, float* d_absmax) {
  const int dt = nf4 ? 2 : 1;
  std::string name;
  unsigned grid, block;
  if (bs == 32) {
    name = "_Z23kQuantizeBlockwiseSmallI" + std::string(tname<T>()) + "Li32ELi" + std::to_string(dt) + "EEvPfPT_S" +
           (sizeof(T) == 4 ? "0" : "1") + "_PhS" + (sizeof(T) == 4 ? "0" : "1") + "_ii";
    grid = unsigned((total + 63) / 64);
    block = 32;
  } else {
    const int per = bs >= 1024 ? 4 : 2;
    name = "_Z18kQuantizeBlockwiseI" + std::string(tname<T>()) + "Li" + std::to_string(bs) + "ELi" +
           std::to_string(per) + "ELi0ELi" + std::to_string(dt) + "EEvPfPT_S" + (sizeof(T) == 4 ? "0" : "1") + "_PhS" +
           (sizeof(T) == 4 ? "0" : "1") + "_ii";
    grid = unsigned(total / bs);
    block = unsigned(bs / per);
  }
  CUfunction f;
  CK(cuModuleGetFunction(&f, g_mod, name.c_str()));
  float* rnd = nullptr;
  int ro = 0;
  int nn = int(total);
  void* args[] = {&d_code, (void*)&d_x, &d_absmax, &d_out, &rnd, &ro, &nn};
  CK(cuLaunchKernel(f, grid, 1, 1, block, 1, 1, 0, 0, args, nullptr));
  RK(cudaDeviceSynchronize());
}

__global__ void sub_kernel(const float* a, float off, float* out, int64_t n) {
  int64_t i = blockIdx.x * 256 + threadIdx.x;
  if (i < n) out[i] = __fsub_rn(a[i], off);
}

int failures = 0;
template <class T>
void run(bool nf4, int bs, float* d_code) {
  const int64_t n = 256, k = 1024, total = n * k;
  const int group = bs == 1024 ? kPerChannel : bs;
  auto x = make_input<T>(nf4, n, k, bs, 1234 + bs + 7 * nf4 + 13 * sizeof(T));
  T* d_x;
  RK(cudaMalloc(&d_x, x.size() * sizeof(T)));
  RK(cudaMemcpy(d_x, x.data(), x.size() * sizeof(T), cudaMemcpyHostToDevice));
  unsigned char* d_out;
  float* d_absmax;
  RK(cudaMalloc(&d_out, total / 2));
  RK(cudaMalloc(&d_absmax, (total / bs) * 4));
  bnb_quantize<T>(d_x, total, bs, nf4, d_code, d_out, d_absmax);
  std::vector<unsigned char> bout(total / 2);
  std::vector<float> babs(total / bs);
  RK(cudaMemcpy(bout.data(), d_out, bout.size(), cudaMemcpyDeviceToHost));
  RK(cudaMemcpy(babs.data(), d_absmax, babs.size() * 4, cudaMemcpyDeviceToHost));
  for (int mode = 0; mode < 2; ++mode) {
    QuantParams p{nf4 ? Format::kNf4 : Format::kFp4, group, DType::kF32, false};
    PackedBytes b = packed_bytes(n, k, p);
    void* d_p;
    RK(cudaMalloc(&d_p, b.total));
    PackedMatrix m;
    carve_packed_matrix(n, k, p, d_p, b.total, &m);
    QuantizeOptions o;
    o.bnb_compatible = mode == 1;
    if (quantize(d_x, k, m, o, nullptr, 0, nullptr) != Status::kSuccess) {
      std::printf("quantize failed\n");
      std::exit(3);
    }
    RK(cudaDeviceSynchronize());
    std::vector<unsigned char> nc(total / 2);
    std::vector<float> ns(total / bs);
    RK(cudaMemcpy(nc.data(), m.codes, nc.size(), cudaMemcpyDeviceToHost));
    RK(cudaMemcpy(ns.data(), m.scales, ns.size() * 4, cudaMemcpyDeviceToHost));
    int64_t dc = 0, ds = 0;
    for (int64_t i = 0; i < total; ++i) {
      unsigned bc = (bout[i / 2] >> (i % 2 ? 0 : 4)) & 15, ncode = (nc[i / 2] >> (i % 2 ? 4 : 0)) & 15;
      dc += bc != ncode;
    }
    for (size_t i = 0; i < ns.size(); ++i) ds += std::memcmp(&ns[i], &babs[i], 4) != 0;
    std::printf("%s %s bs%-4d %-15s: codes differing from real bitsandbytes %lld / %lld, absmax differing %lld / %zu\n",
                nf4 ? "nf4" : "fp4",
                sizeof(T) == 4              ? "f32"
                : std::is_same_v<T, __half> ? "f16"
                                            : "bf16",
                bs, mode ? "bnb_compatible" : "default", (long long)dc, (long long)total, (long long)ds, ns.size());
    if (mode == 1 && (dc || ds)) ++failures;
    cudaFree(d_p);
  }
  cudaFree(d_x);
  cudaFree(d_out);
  cudaFree(d_absmax);
}

void run_dq(bool nf4, float* d_code) {
  const int64_t n = 300, k = 1024, S = n * (k / 64);
  auto x = make_input<__half>(nf4, n, k, 64, 99 + nf4);
  __half* d_x;
  RK(cudaMalloc(&d_x, x.size() * 2));
  RK(cudaMemcpy(d_x, x.data(), x.size() * 2, cudaMemcpyHostToDevice));
  QuantParams p{nf4 ? Format::kNf4 : Format::kFp4, 64, DType::kF32, true};
  PackedBytes b = packed_bytes(n, k, p);
  void* d_p;
  RK(cudaMalloc(&d_p, b.total));
  PackedMatrix m;
  carve_packed_matrix(n, k, p, d_p, b.total, &m);
  size_t ws;
  get_quantize_workspace_size(m, &ws);
  void* d_ws;
  RK(cudaMalloc(&d_ws, ws));
  QuantizeOptions o;
  o.bnb_compatible = true;
  if (quantize(d_x, k, m, o, d_ws, ws, nullptr) != Status::kSuccess) std::exit(3);
  RK(cudaDeviceSynchronize());
  float off;
  RK(cudaMemcpy(&off, m.dq.offset, 4, cudaMemcpyDeviceToHost));
  float* d_v;
  RK(cudaMalloc(&d_v, S * 4));
  sub_kernel<<<unsigned((S + 255) / 256), 256>>>(static_cast<float*>(m.scales), off, d_v, S);
  const int64_t blocks = (S + 255) / 256;
  unsigned char* d_c2;
  float* d_a2;
  RK(cudaMalloc(&d_c2, S));
  RK(cudaMalloc(&d_a2, blocks * 4));
  CUfunction f;
  CK(cuModuleGetFunction(&f, g_mod, "_Z18kQuantizeBlockwiseIfLi256ELi2ELi0ELi0EEvPfPT_S0_PhS0_ii"));
  float* rnd = nullptr;
  int ro = 0;
  int nn = int(S);
  void* args[] = {&d_code, &d_v, &d_a2, &d_c2, &rnd, &ro, &nn};
  CK(cuLaunchKernel(f, unsigned(blocks), 1, 1, 128, 1, 1, 0, 0, args, nullptr));
  RK(cudaDeviceSynchronize());
  std::vector<unsigned char> bc(S), ncd(S);
  std::vector<float> ba(blocks), na(blocks);
  RK(cudaMemcpy(bc.data(), d_c2, S, cudaMemcpyDeviceToHost));
  RK(cudaMemcpy(ncd.data(), m.dq.codes, S, cudaMemcpyDeviceToHost));
  RK(cudaMemcpy(ba.data(), d_a2, blocks * 4, cudaMemcpyDeviceToHost));
  RK(cudaMemcpy(na.data(), m.dq.absmax2, blocks * 4, cudaMemcpyDeviceToHost));
  int64_t dc = 0, da = 0;
  for (int64_t i = 0; i < S; ++i) dc += bc[i] != ncd[i];
  for (int64_t i = 0; i < blocks; ++i) da += std::memcmp(&ba[i], &na[i], 4) != 0;
  std::printf(
      "dq %s f16 b64 (offset %.9g): second-level codes differing from real bitsandbytes %lld / %lld, absmax2 differing "
      "%lld / %lld\n",
      nf4 ? "nf4" : "fp4", off, (long long)dc, (long long)S, (long long)da, (long long)blocks);
  if (dc || da) ++failures;
}

int main(int argc, char** argv) {
  RK(cudaFree(0));
  CK(cuInit(0));
  std::ifstream in(argv[1], std::ios::binary);
  std::vector<char> img((std::istreambuf_iterator<char>(in)), {});
  CK(cuModuleLoadData(&g_mod, img.data()));
  float* d_code;
  RK(cudaMalloc(&d_code, 1024));
  RK(cudaMemcpy(d_code, dynamic_map().v, 1024, cudaMemcpyHostToDevice));
  for (int nf4 = 0; nf4 < 2; ++nf4)
    for (int bs : {32, 64, 128, 256, 1024}) {
      run<float>(nf4, bs, d_code);
      run<__half>(nf4, bs, d_code);
      run<__nv_bfloat16>(nf4, bs, d_code);
    }
  run_dq(true, d_code);
  run_dq(false, d_code);
  std::printf("FAILURES %d\n", failures);
  return failures ? 1 : 0;
}
