// examples/custom_kernel.cu — fuse nibble's warp-level "load packed fragment -> dequantize -> mma" step into
// your own kernel. Here: y = silu(x W^T) for a few rows x, one warp per 16 output columns, A fragments read
// straight from global memory. Short and copyable rather than fast: nibble::gemm::run is the fast path.
//
//   ./build/default/examples/custom_kernel      (without a GPU it says so and exits 0)
#include <cmath>
#include <cstdio>
#include <nibble/nibble.cuh>
#include <random>
#include <vector>

using T = __half;
constexpr nibble::Format kFormat = nibble::Format::kS4;

// One warp computes y[0:16, n0:n0+16] for rows m < M (M <= 16). Weights in the GEMM layout
// (nibble/layout/gemm_layout.cuh): one 512-byte atom covers 16 columns x 64 k.
__global__ void silu_gemm_kernel(const T* x, int m_rows, int k, nibble::GemmWeights w, T* y) {
  using namespace nibble;
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int atom_col = blockIdx.x;  // 16 output columns
  const layout::GemmShape s = w.shape();
  const auto* scales = static_cast<const T*>(w.scales);
  const auto ctx = gemm::DequantContext<kFormat, T>::make();

  // A fragment of mma.m16n8k16 for rows g, g+8 and k offsets 2t, 2t+8 (zero for rows past M or k past K).
  auto a_pair = [&](int row, int kk) -> std::uint32_t {
    if (row >= m_rows || kk >= k) return 0u;
    return *reinterpret_cast<const std::uint32_t*>(x + std::int64_t(row) * k + kk);
  };
  float acc[2][4] = {};
  for (std::int64_t kb = 0; kb < s.k_atoms(); ++kb) {
    const std::uint8_t* atom = w.codes + layout::atom_offset(s, atom_col, kb);
    for (int j = 0; j < 4; ++j) {
      const int k0 = int(kb) * layout::kAtomK + 16 * j;
      const std::uint32_t a[4] = {a_pair(g, k0 + 2 * t), a_pair(g + 8, k0 + 2 * t), a_pair(g, k0 + 2 * t + 8),
                                  a_pair(g + 8, k0 + 2 * t + 8)};
      const std::int64_t n = atom_col * layout::kAtomN + g;
      gemm::ColumnPairQuant<T> q{scales[layout::scale_index(s, n, k0)], scales[layout::scale_index(s, n + 8, k0)]};
      std::uint32_t b[4];
      gemm::dequant_fragments<T, kFormat>(gemm::load_atom_word(atom, lane, j), q, ctx, b);  // the building block
      gemm::mma_atom_step<T>(acc, a, b);
    }
  }
  // Fused epilogue: SiLU, then store. acc[h][r]: row g (+8 for r >= 2), column 8h + 2t + r % 2.
  for (int h = 0; h < 2; ++h)
    for (int r = 0; r < 4; ++r) {
      const int row = g + 8 * (r / 2), col = atom_col * 16 + 8 * h + 2 * t + r % 2;
      if (row < m_rows && col < w.n)
        y[std::int64_t(row) * w.n + col] = __float2half(acc[h][r] / (1.0f + __expf(-acc[h][r])));
    }
}

#define CHECK(x)                                                    \
  do {                                                              \
    if (!(x)) {                                                     \
      std::printf("failed: %s at %s:%d\n", #x, __FILE__, __LINE__); \
      return 1;                                                     \
    }                                                               \
  } while (0)

int main() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    std::printf("no CUDA device: custom_kernel needs a GPU (sm_80+); nothing to do\n");
    return 0;
  }
  const int m = 5, n = 256, k = 1024;
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<T> x(m * k), wt(n * k);
  for (auto& v : x) v = __float2half(normal(rng));
  for (auto& v : wt) v = __float2half(0.05f * normal(rng));

  // Quantize (GPU), repack into the GEMM layout, run the custom kernel.
  const nibble::QuantParams p{kFormat, 128, nibble::DType::kF16, false};
  const nibble::PackedBytes pb = nibble::packed_bytes(n, k, p);
  const nibble::GemmWeightBytes gb = nibble::gemm_weight_bytes(kFormat, n, k, 128, nibble::DType::kF16);
  T *dx, *dw, *dy;
  void *plain, *codes, *scales;
  CHECK(cudaMalloc(&dx, x.size() * 2) == cudaSuccess && cudaMalloc(&dw, wt.size() * 2) == cudaSuccess);
  CHECK(cudaMalloc(&dy, m * n * 2) == cudaSuccess && cudaMalloc(&plain, pb.total) == cudaSuccess);
  CHECK(cudaMalloc(&codes, gb.codes) == cudaSuccess && cudaMalloc(&scales, gb.scales) == cudaSuccess);
  CHECK(cudaMemcpy(dx, x.data(), x.size() * 2, cudaMemcpyHostToDevice) == cudaSuccess);
  CHECK(cudaMemcpy(dw, wt.data(), wt.size() * 2, cudaMemcpyHostToDevice) == cudaSuccess);
  nibble::PackedMatrix pm;
  nibble::GemmWeights w;
  CHECK(nibble::carve_packed_matrix(n, k, p, plain, pb.total, &pm) == nibble::Status::kSuccess);
  CHECK(nibble::quantize(dw, k, pm, nullptr, 0, nullptr) == nibble::Status::kSuccess);
  CHECK(nibble::repack(nibble::plain_view(pm), nibble::DType::kF16, codes, scales, nullptr, &w, nullptr) ==
        nibble::Status::kSuccess);
  silu_gemm_kernel<<<n / 16, 32>>>(dx, m, k, w, dy);
  CHECK(cudaGetLastError() == cudaSuccess && cudaDeviceSynchronize() == cudaSuccess);

  // Check against silu(x dequant(W)^T) on the host, from the GPU dequantization of the same codes.
  std::vector<T> y(m * n), dq(n * k);
  CHECK(nibble::dequantize(pm, dw, k, nullptr) == nibble::Status::kSuccess);
  CHECK(cudaMemcpy(dq.data(), dw, dq.size() * 2, cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(cudaMemcpy(y.data(), dy, y.size() * 2, cudaMemcpyDeviceToHost) == cudaSuccess);
  double err = 0, ref_norm = 0;
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0;
      for (int q = 0; q < k; ++q) s += double(__half2float(x[i * k + q])) * __half2float(dq[j * k + q]);
      const double ref = s / (1.0 + std::exp(-s));
      err += std::pow(__half2float(y[i * n + j]) - ref, 2);
      ref_norm += ref * ref;
    }
  const double rel = std::sqrt(err / ref_norm);
  std::printf("custom silu(x W^T) kernel, %s g128, M=%d N=%d K=%d: relative error vs host %.2e (%s)\n",
              nibble::to_string(kFormat), m, n, k, rel, rel < 2e-3 ? "ok" : "TOO LARGE");
  for (void* ptr : {(void*)dx, (void*)dw, (void*)dy, plain, codes, scales}) cudaFree(ptr);
  return rel < 2e-3 ? 0 : 1;
}
