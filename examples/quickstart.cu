// examples/quickstart.cu — nibble's main job in one file: quantize a realistic layer to 4 bits, multiply
// activations by it with the lazy-dequantizing GEMM, and report memory saved, error and speed.
//
//   cmake --preset default && cmake --build --preset default --target quickstart
//   ./build/default/examples/quickstart
//
// Without a CUDA device it says so and runs the CPU reference path on a small matrix instead.
#include <cublas_v2.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <nibble/nibble.cuh>
#include <random>
#include <vector>

namespace {

#define CHECK_CUDA(x)                                                                      \
  do {                                                                                     \
    cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) {                                                               \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)
#define CHECK_NIBBLE(x)                                                                      \
  do {                                                                                       \
    nibble::Status s_ = (x);                                                                 \
    if (s_ != nibble::Status::kSuccess) {                                                    \
      std::printf("nibble error: %s at %s:%d\n", nibble::to_string(s_), __FILE__, __LINE__); \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)
#define CHECK_CUBLAS(x)                                           \
  do {                                                            \
    if ((x) != CUBLAS_STATUS_SUCCESS) {                           \
      std::printf("cuBLAS error at %s:%d\n", __FILE__, __LINE__); \
      std::exit(1);                                               \
    }                                                             \
  } while (0)

constexpr unsigned kSeed = 20261121;

std::vector<float> randn(std::size_t count, std::mt19937_64& rng, float stddev) {
  std::normal_distribution<float> d(0.0f, stddev);
  std::vector<float> v(count);
  for (float& x : v) x = d(rng);
  return v;
}

double rel_frobenius(const std::vector<float>& x, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    num += (x[i] - ref[i]) * (x[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / den);
}

// ---- Without a GPU: the CPU reference path -------------------------------------------------------------
int run_cpu() {
  const std::int64_t m = 4, n = 256, k = 512;
  std::mt19937_64 rng(kSeed);
  std::printf("seed %u; CPU reference path on A[%lld x %lld] * W[%lld x %lld]^T\n", kSeed, (long long)m, (long long)k,
              (long long)n, (long long)k);
  const std::vector<float> w = randn(n * k, rng, 0.02f), a = randn(m * k, rng, 1.0f);
  std::vector<double> exact(m * n, 0.0);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t q = 0; q < k; ++q) exact[i * n + j] += double(a[i * k + q]) * w[j * k + q];

  for (nibble::QuantParams p : {nibble::QuantParams{nibble::Format::kNf4, 64, nibble::DType::kF32, false},
                                nibble::QuantParams{nibble::Format::kS4, 128, nibble::DType::kF16, false}}) {
    const nibble::PackedBytes bytes = nibble::packed_bytes(n, k, p);
    CHECK_NIBBLE(bytes.status);
    std::vector<unsigned char> storage(bytes.total + nibble::kPackedAlignment);
    void* base = storage.data() + (nibble::kPackedAlignment -
                                   reinterpret_cast<std::uintptr_t>(storage.data()) % nibble::kPackedAlignment);
    nibble::PackedMatrix pm;
    CHECK_NIBBLE(nibble::carve_packed_matrix(n, k, p, base, bytes.total, &pm));
    CHECK_NIBBLE(nibble::quantize_cpu(w.data(), k, pm));
    std::vector<float> dq(n * k);
    CHECK_NIBBLE(nibble::dequantize_cpu(pm, dq.data(), k));
    std::vector<float> c(m * n, 0.0f);
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) {
        double s = 0;
        for (std::int64_t q = 0; q < k; ++q) s += double(a[i * k + q]) * dq[j * k + q];
        c[i * n + j] = float(s);
      }
    const double packed = double(bytes.codes + bytes.scales + bytes.zeros);
    std::printf("  %-4s group %3d: %.3f bits/weight (%.1fx smaller than fp16), relative error vs exact %.4f\n",
                nibble::to_string(p.format), p.group_size, 8.0 * packed / double(n * k), 2.0 * n * k / packed,
                rel_frobenius(c, exact));
  }
  std::printf("no CUDA device: the GPU GEMM was not run.\n");
  return 0;
}

// ---- With a GPU ----------------------------------------------------------------------------------------
struct Timer {
  cudaEvent_t start, stop;
  Timer() {
    CHECK_CUDA(cudaEventCreate(&start));
    CHECK_CUDA(cudaEventCreate(&stop));
  }
  ~Timer() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
};

// Median time in microseconds of `launch(i)` over `reps` runs, rotating i through `copies` buffers.
template <class F>
double time_us(F&& launch, int copies, cudaStream_t stream) {
  Timer t;
  for (int i = 0; i < copies; ++i) launch(i);  // warm up
  std::vector<float> ms;
  for (int rep = 0; rep < 20; ++rep) {
    CHECK_CUDA(cudaEventRecord(t.start, stream));
    for (int i = 0; i < copies; ++i) launch(i);
    CHECK_CUDA(cudaEventRecord(t.stop, stream));
    CHECK_CUDA(cudaEventSynchronize(t.stop));
    float v = 0;
    CHECK_CUDA(cudaEventElapsedTime(&v, t.start, t.stop));
    ms.push_back(v / copies);
  }
  std::sort(ms.begin(), ms.end());
  return 1000.0 * ms[ms.size() / 2];
}

int run_gpu(const cudaDeviceProp& prop) {
  // One MLP up-projection of an 8B-class model: W [N = 14336, K = 4096].
  const std::int64_t n = 14336, k = 4096;
  std::mt19937_64 rng(kSeed);
  std::printf("seed %u; device %s (%d SMs); layer W[%lld x %lld] fp16\n", kSeed, prop.name, prop.multiProcessorCount,
              (long long)n, (long long)k);
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  cublasHandle_t blas;
  CHECK_CUBLAS(cublasCreate(&blas));
  CHECK_CUBLAS(cublasSetStream(blas, stream));

  const std::vector<float> w_host = randn(n * k, rng, 0.02f);
  std::vector<__half> w_half(w_host.size());
  for (std::size_t i = 0; i < w_host.size(); ++i) w_half[i] = __float2half_rn(w_host[i]);
  // Rotate through enough weight copies (> 256 MiB in all) that neither side is timed out of the 50 MB L2.
  const std::size_t dense_bytes = w_half.size() * sizeof(__half);
  const int dense_copies = int(std::max<std::size_t>(2, (256u << 20) / dense_bytes + 1));
  std::vector<__half*> w_dev(dense_copies);
  for (auto& p : w_dev) {
    CHECK_CUDA(cudaMalloc(&p, dense_bytes));
    CHECK_CUDA(cudaMemcpy(p, w_half.data(), dense_bytes, cudaMemcpyHostToDevice));
  }

  const std::int64_t m_max = 16;
  const std::vector<float> a_host = randn(m_max * k, rng, 1.0f);
  std::vector<__half> a_half(a_host.size());
  for (std::size_t i = 0; i < a_host.size(); ++i) a_half[i] = __float2half_rn(a_host[i]);
  __half* a_dev;
  float *c_ref, *c_nib;
  __half* c_half;
  CHECK_CUDA(cudaMalloc(&a_dev, a_half.size() * sizeof(__half)));
  CHECK_CUDA(cudaMemcpy(a_dev, a_half.data(), a_half.size() * sizeof(__half), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMalloc(&c_ref, m_max * n * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&c_nib, m_max * n * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&c_half, m_max * n * sizeof(__half)));

  // fp16 reference product C = A W^T (fp32 accumulate), column-major view: C^T[N, M] = W[N,K] A^T.
  auto cublas_gemm = [&](const __half* w, void* c, cudaDataType ct, std::int64_t m) {
    const float one = 1.0f, zero = 0.0f;
    CHECK_CUBLAS(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(n), int(m), int(k), &one, w, CUDA_R_16F, int(k),
                              a_dev, CUDA_R_16F, int(k), &zero, c, ct, int(n), CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT));
  };
  cublas_gemm(w_dev[0], c_ref, CUDA_R_32F, m_max);
  std::vector<float> ref_f(m_max * n);
  CHECK_CUDA(cudaMemcpy(ref_f.data(), c_ref, ref_f.size() * sizeof(float), cudaMemcpyDeviceToHost));
  const std::vector<double> ref(ref_f.begin(), ref_f.end());

  for (nibble::QuantParams p : {nibble::QuantParams{nibble::Format::kNf4, 64, nibble::DType::kF32, false},
                                nibble::QuantParams{nibble::Format::kS4, 128, nibble::DType::kF16, false}}) {
    // 1. Quantize on the GPU into the plain packed layout.
    const nibble::PackedBytes pb = nibble::packed_bytes(n, k, p);
    CHECK_NIBBLE(pb.status);
    void* plain_buf;
    CHECK_CUDA(cudaMalloc(&plain_buf, pb.total));
    nibble::PackedMatrix pm;
    CHECK_NIBBLE(nibble::carve_packed_matrix(n, k, p, plain_buf, pb.total, &pm));
    CHECK_NIBBLE(nibble::quantize(w_dev[0], k, pm, nullptr, 0, stream));

    // 2. Repack into the GEMM layout for fp16 activations (copies rotated like the dense weights).
    const nibble::GemmWeightBytes gb = nibble::gemm_weight_bytes(p.format, n, k, p.group_size, nibble::DType::kF16);
    const std::size_t packed_bytes = gb.codes + gb.scales + gb.zeros;
    const int copies = int(std::max<std::size_t>(2, (256u << 20) / packed_bytes + 1));
    std::vector<nibble::GemmWeights> gw(copies);
    std::vector<void*> bufs;
    for (int i = 0; i < copies; ++i) {
      void *codes, *scales, *zeros = nullptr;
      CHECK_CUDA(cudaMalloc(&codes, gb.codes));
      CHECK_CUDA(cudaMalloc(&scales, gb.scales));
      if (gb.zeros) CHECK_CUDA(cudaMalloc(&zeros, gb.zeros));
      bufs.insert(bufs.end(), {codes, scales, zeros});
      CHECK_NIBBLE(nibble::repack(nibble::plain_view(pm), nibble::DType::kF16, codes, scales, zeros, &gw[i], stream));
    }
    CHECK_CUDA(cudaFree(plain_buf));  // (after the repacks complete: cudaFree synchronizes)

    // 3. GEMM: C[M, N] = A[M, K] dequant(W)^T, fp32 output for the error check.
    nibble::gemm::Arguments args;
    args.act_type = nibble::DType::kF16;
    args.a = a_dev;
    args.lda = k;
    args.w = gw[0];
    args.c = c_nib;
    args.ldc = n;
    args.out_type = nibble::DType::kF32;
    args.m = m_max;
    // The typed entry point compiles only the kernels of fp16 activations x these two formats (the untyped
    // nibble::gemm::run(args, ...) compiles all of them).
    auto run_gemm = [&](const nibble::gemm::Arguments& a, void* w, std::size_t bytes) {
      return a.w.format == nibble::Format::kS4 ? nibble::gemm::run<__half, nibble::Format::kS4>(a, w, bytes, stream)
                                               : nibble::gemm::run<__half, nibble::Format::kNf4>(a, w, bytes, stream);
    };
    std::size_t ws_bytes = 0;
    CHECK_NIBBLE(nibble::gemm::get_workspace_size(args, &ws_bytes));
    void* ws = nullptr;
    if (ws_bytes) {
      CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
      CHECK_CUDA(cudaMemset(ws, 0, ws_bytes));  // once; run() leaves it zero
    }
    CHECK_NIBBLE(run_gemm(args, ws, ws_bytes));
    std::vector<float> c(m_max * n);
    CHECK_CUDA(cudaMemcpy(c.data(), c_nib, c.size() * sizeof(float), cudaMemcpyDeviceToHost));

    std::printf("\n%s, group %d (%s scales):\n", nibble::to_string(p.format), p.group_size,
                p.scale_type == nibble::DType::kF32 ? "fp32" : "fp16");
    std::printf("  memory: %.1f MiB vs %.1f MiB fp16 (%.2f bits/weight, %.2fx smaller)\n", packed_bytes / 1048576.0,
                dense_bytes / 1048576.0, 8.0 * packed_bytes / double(n * k), double(dense_bytes) / packed_bytes);
    std::printf("  error vs the fp16 product (quantization error): relative Frobenius %.4f\n", rel_frobenius(c, ref));

    // 4. Speed vs cuBLAS fp16, fp16 output, at decode-like batch sizes.
    args.out_type = nibble::DType::kF16;
    args.c = c_half;
    for (std::int64_t m : {std::int64_t(1), std::int64_t(16)}) {
      args.m = m;
      std::size_t need = 0;
      CHECK_NIBBLE(nibble::gemm::get_workspace_size(args, &need));
      if (need > ws_bytes) {
        if (ws) CHECK_CUDA(cudaFree(ws));
        CHECK_CUDA(cudaMalloc(&ws, need));
        CHECK_CUDA(cudaMemset(ws, 0, need));
        ws_bytes = need;
      }
      const double us_nib = time_us(
          [&](int i) {
            args.w = gw[i];
            CHECK_NIBBLE(run_gemm(args, ws, ws_bytes));
          },
          copies, stream);
      const double us_blas =
          time_us([&](int i) { cublas_gemm(w_dev[i], c_half, CUDA_R_16F, m); }, dense_copies, stream);
      std::printf("  M = %2lld: nibble %7.1f us, cuBLAS fp16 %7.1f us -> %.2fx\n", (long long)m, us_nib, us_blas,
                  us_blas / us_nib);
    }
    if (ws) CHECK_CUDA(cudaFree(ws));
    for (void* b : bufs)
      if (b) CHECK_CUDA(cudaFree(b));
  }
  for (auto p : w_dev) CHECK_CUDA(cudaFree(p));
  CHECK_CUDA(cudaFree(a_dev));
  CHECK_CUDA(cudaFree(c_ref));
  CHECK_CUDA(cudaFree(c_nib));
  CHECK_CUDA(cudaFree(c_half));
  cublasDestroy(blas);
  CHECK_CUDA(cudaStreamDestroy(stream));
  return 0;
}

}  // namespace

int main() {
  std::printf("nibble %s quickstart\n", NIBBLE_VERSION_STRING);
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  cudaGetLastError();
  if (err != cudaSuccess || count == 0) {
    std::printf("no CUDA device (%s): running the CPU reference path\n",
                err != cudaSuccess ? cudaGetErrorString(err) : "0 devices");
    return run_cpu();
  }
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  if (prop.major < 8) {
    std::printf("device %s is sm_%d%d; nibble's GEMM needs sm_80 or newer: running the CPU reference path\n", prop.name,
                prop.major, prop.minor);
    return run_cpu();
  }
  return run_gpu(prop);
}
