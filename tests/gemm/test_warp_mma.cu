// tests/gemm/test_warp_mma.cu — the warp-level building block of gemm/warp_mma.cuh on one 16 x 64 atom
// (dequantized fragments bit for bit, the mma result, the two atom loads) and the shared-memory codebook
// table against the register table. GPU only; never calls gemm::run. (Moved from tests/test_gemm.cu.)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nibble/detail/ptx.cuh>
#include <nibble/detail/tma.cuh>
#include <nibble/format/codebook.cuh>
#include <nibble/format/format.cuh>
#include <nibble/gemm/warp_mma.cuh>
#include <nibble/layout/gemm_layout.cuh>
#include <nibble/layout/repack.cuh>
#include <nibble/status.cuh>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/check.hpp"
#include "common/device_buffer.hpp"
#include "common/gpu.hpp"
#include "common/host_weights.hpp"
#include "common/names.hpp"
#include "common/random.hpp"

namespace {

namespace gemm = nibble::gemm;
namespace layout = nibble::layout;

// ================================== GPU: the warp-level building block ======================================

// One warp, one 16 x 64 atom, group 32 (the scale row changes between k-steps 1 and 2): the usage of
// gemm/warp_mma.cuh. Writes the dequantized fragments, C = A * W^T (16 x 16) and whether the 16-byte
// lane load and the 32-bit word load agree.
template <class T, Format F>
__global__ void one_atom_kernel(const uint8_t* atom, const T* scales, const uint8_t* zeros, const T* offsets,
                                const T* a, float* c, uint32_t* frags, int* word_mismatch) {
  const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const layout::GemmShape s = layout::make_gemm_shape(16, 64, 32);
  const auto ctx = gemm::DequantContext<F, T>::make();
  const uint4 slice = gemm::load_atom_lane(atom, lane);
  auto pair = [&](int row, int k) { return *reinterpret_cast<const uint32_t*>(a + row * 64 + k); };
  float acc[2][4] = {};
  for (int j = 0; j < 4; ++j) {
    const uint32_t word = gemm::load_atom_word(atom, lane, j);
    if (word != gemm::atom_word(slice, j)) atomicAdd(word_mismatch, 1);
    gemm::ColumnPairQuant<T> q{scales[layout::scale_index(s, g, 16 * j)],
                               scales[layout::scale_index(s, g + 8, 16 * j)]};
    if (zeros != nullptr) {
      q.zero_lo = zeros[layout::scale_index(s, g, 16 * j)];
      q.zero_hi = zeros[layout::scale_index(s, g + 8, 16 * j)];
    }
    if (offsets != nullptr) {  // affine u4
      q.offset_lo = offsets[layout::scale_index(s, g, 16 * j)];
      q.offset_hi = offsets[layout::scale_index(s, g + 8, 16 * j)];
    }
    uint32_t b[4];
    gemm::dequant_fragments<T, F>(word, q, ctx, b);
    for (int p = 0; p < 4; ++p) frags[(lane * 4 + j) * 4 + p] = b[p];
    const uint32_t af[4] = {pair(g, 16 * j + 2 * t), pair(g + 8, 16 * j + 2 * t), pair(g, 16 * j + 2 * t + 8),
                            pair(g + 8, 16 * j + 2 * t + 8)};
    gemm::mma_atom_step<T>(acc, af, b);
  }
  for (int h = 0; h < 2; ++h)
    for (int r = 0; r < 4; ++r) c[(g + 8 * (r / 2)) * 16 + 8 * h + 2 * t + r % 2] = acc[h][r];
}

template <class T>
void launch_one_atom(Format f, const uint8_t* atom, const void* scales, const uint8_t* zeros, const void* offsets,
                     const void* a, float* c, uint32_t* frags, int* mismatch) {
  const T* s = static_cast<const T*>(scales);
  const T* o = static_cast<const T*>(offsets);
  const T* x = static_cast<const T*>(a);
  switch (f) {
    case Format::kS4:
      one_atom_kernel<T, Format::kS4><<<1, 32>>>(atom, s, zeros, o, x, c, frags, mismatch);
      break;
    case Format::kU4:
      one_atom_kernel<T, Format::kU4><<<1, 32>>>(atom, s, zeros, o, x, c, frags, mismatch);
      break;
    case Format::kNf4:
      one_atom_kernel<T, Format::kNf4><<<1, 32>>>(atom, s, zeros, o, x, c, frags, mismatch);
      break;
    case Format::kFp4:
      one_atom_kernel<T, Format::kFp4><<<1, 32>>>(atom, s, zeros, o, x, c, frags, mismatch);
      break;
    case Format::kAffineU4:
      one_atom_kernel<T, Format::kAffineU4><<<1, 32>>>(atom, s, zeros, o, x, c, frags, mismatch);
      break;
  }
  CUDA_CHECK(cudaGetLastError());
}

void check_one_atom(DType act) {
  auto rng = nibble_test_rng();
  for (Format f : kGemmFormats)
    for (Data data : {Data::kExact, Data::kRandom}) {
      SCOPED_TRACE(std::string("GemmWarpMma_") + dtype_name(act) + "_" + nibble::to_string(f) + "_g32 " +
                   (data == Data::kExact ? "small integers, power-of-two scales" : "random normal"));
      const HostWeights w = make_weights(rng, f, 32, 16, 64, act, data);
      const HostProblem p = make_problem(rng, act, w, 16, data);
      const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(f, 16, 64, 32, act);
      HostGemmBuffers host(b, b.zeros);
      GemmWeights view;
      NIBBLE_CHECK(nibble::repack_host(w.view(w.codes.data(), w.scales.data(), w.zeros.data(), w.offsets.data()), act,
                                       host.codes.data(), host.scales.data(), host.zeros.data(), host.offsets.data(),
                                       &view));
      host.codes.resize(b.codes);
      host.scales.resize(b.scales);
      host.zeros.resize(b.zeros);
      host.offsets.resize(b.offsets);
      DevBuf atom = to_device(host.codes), scales = to_device(host.scales), zeros = to_device(host.zeros),
             offsets = to_device(host.offsets);
      DevBuf a = to_device(p.a), c(16 * 16 * 4), frags(32 * 4 * 4 * 4), mismatch(sizeof(int));
      CUDA_CHECK(cudaMemset(c.get(), 0xFF, c.size()));
      CUDA_CHECK(cudaMemset(frags.get(), 0xFF, frags.size()));
      CUDA_CHECK(cudaMemset(mismatch.get(), 0, sizeof(int)));
      const uint8_t* z = f == kU4 ? zeros.as<uint8_t>() : nullptr;
      const void* o = f == kAU4 ? offsets.get() : nullptr;
      if (act == kF16)
        launch_one_atom<__half>(f, atom.as<uint8_t>(), scales.get(), z, o, a.get(), c.as<float>(), frags.as<uint32_t>(),
                                mismatch.as<int>());
      else
        launch_one_atom<__nv_bfloat16>(f, atom.as<uint8_t>(), scales.get(), z, o, a.get(), c.as<float>(),
                                       frags.as<uint32_t>(), mismatch.as<int>());
      CUDA_CHECK(cudaDeviceSynchronize());
      EXPECT_EQ(mismatch.download<int>()[0], 0) << "load_atom_lane / atom_word disagree with load_atom_word";

      // Dequantized fragments: value 2p + h of word j of lane l is weight atom_coord(l, j, 2p + h); the
      // kernel's one rounding of (code value in T) * (scale in T) to T, bit for bit.
      const std::vector<uint32_t> fr = frags.download<uint32_t>();
      std::vector<double> wt(16 * 64, 0.0);  // the dequantized weights the mma saw
      int bad = 0;
      std::string first;
      for (int lane = 0; lane < 32; ++lane)
        for (int j = 0; j < 4; ++j)
          for (int i = 0; i < 8; ++i) {
            const layout::AtomCoord at = layout::atom_coord(lane, j, i);
            const int64_t g = w.group_of(at.k);
            const double v = code_value(f, act, w.code(at.n, at.k)) - w.zero(at.n, g);
            // affine u4: one rounding of q * s + m (fma), s and m in T
            // (other formats: the product alone, so that fp4's -0 code stays -0, as the kernel's multiply keeps it)
            const double prod = v * t_round(act, w.scale(at.n, g));
            const double r = f == kAU4 ? prod + t_round(act, w.offset(at.n, g)) : prod;
            const uint16_t want = to_bits(act, float(r));
            const uint16_t got = uint16_t(fr[std::size_t((lane * 4 + j) * 4 + i / 2)] >> (16 * (i % 2)));
            wt[std::size_t(at.n * 64 + at.k)] = from_bits(act, got);
            if (got != want && bad++ == 0) {
              char buf[96];
              std::snprintf(buf, sizeof(buf), "n%d k%d: got 0x%04x, want 0x%04x", at.n, at.k, got, want);
              first = buf;
            }
          }
      EXPECT_EQ(bad, 0) << "dequant_fragments differs from (code value * scale [+ offset]) rounded to T; first "
                        << first;

      // C = A * W^T against float64 from the same fragments: exact for the exact data of s4 / u4, else
      // within fp32 accumulation error.
      const std::vector<float> c_got = c.download<float>();
      int bad_c = 0;
      for (int m = 0; m < 16; ++m)
        for (int n = 0; n < 16; ++n) {
          double ref = 0.0, mag = 0.0;
          for (int k = 0; k < 64; ++k) {
            const double t = double(from_bits(act, p.a[std::size_t(m * 64 + k)])) * wt[std::size_t(n * 64 + k)];
            ref += t;
            mag += std::fabs(t);
          }
          const float got = c_got[std::size_t(m * 16 + n)];
          const bool ok = p.exact() ? got == float(ref) : std::fabs(got - ref) <= 1e-4 * mag + 1e-30;
          if (!ok && bad_c++ < 3) ADD_FAILURE() << "C[" << m << ", " << n << "] = " << got << ", reference " << ref;
        }
      EXPECT_EQ(bad_c, 0) << "mma_atom_step result";
    }
}

TEST(GemmWarpMma, OneAtomF16AllFormats) {
  NIBBLE_REQUIRE_GPU();
  check_one_atom(kF16);
}

TEST(GemmWarpMma, OneAtomBF16AllFormats) {
  NIBBLE_REQUIRE_GPU();
  check_one_atom(kBF16);
}

// The shared-memory codebook table (what the library kernels use for nf4 / fp4) against the register
// table (the public building block): every word in `words` decodes to the same bits through both, with
// 16 and 32 interleaved copies of the table.
template <class T, Format F, int kCopies>
__global__ void smem_codebook_kernel(const uint32_t* words, int n, uint32_t* out_smem, uint32_t* out_regs) {
  __shared__ __align__(16) unsigned char table[gemm::smem_codebook_bytes(kCopies)];
  gemm::fill_smem_codebook<F, T, kCopies>(table, threadIdx.x, blockDim.x);
  __syncthreads();
  const auto smem_ctx = gemm::SmemCodebookContext<F, T, kCopies>::make(table, threadIdx.x % 32);
  const auto reg_ctx = gemm::DequantContext<F, T>::make();
  const gemm::ColumnPairQuant<T> q{};
  for (int i = threadIdx.x; i < n; i += blockDim.x) {
    uint32_t a[4], b[4];
    gemm::decode_fragments<T, F>(words[i], q, smem_ctx, a);
    gemm::decode_fragments<T, F>(words[i], q, reg_ctx, b);
    for (int p = 0; p < 4; ++p) {
      out_smem[i * 4 + p] = a[p];
      out_regs[i * 4 + p] = b[p];
    }
  }
}

template <class T, Format F, int kCopies>
void check_smem_codebook() {
  // Every byte value in every byte position (words b * 0x01010101), then random words.
  std::vector<uint32_t> words;
  for (uint32_t b = 0; b < 256; ++b) words.push_back(b * 0x01010101u);
  auto rng = nibble_test_rng();
  for (int i = 0; i < 4096; ++i) words.push_back(uint32_t(rng()));
  const int n = int(words.size());
  DevBuf dw(words.size() * 4), ds(words.size() * 16), dr(words.size() * 16);
  CUDA_CHECK(cudaMemcpy(dw.get(), words.data(), words.size() * 4, cudaMemcpyHostToDevice));
  smem_codebook_kernel<T, F, kCopies><<<1, 256>>>(dw.as<uint32_t>(), n, ds.as<uint32_t>(), dr.as<uint32_t>());
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cudaDeviceSynchronize());
  const std::vector<uint32_t> got = ds.download<uint32_t>(), want = dr.download<uint32_t>();
  int64_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i] && bad++ < 3)
      ADD_FAILURE() << kCopies << " copies, word " << std::hex << words[i / 4] << " pair " << (i % 4) << ": table "
                    << got[i] << ", registers " << want[i];
  EXPECT_EQ(bad, 0);
}

TEST(GemmWarpMma, SharedMemoryCodebookMatchesRegisterTable) {
  NIBBLE_REQUIRE_GPU();
  check_smem_codebook<__half, kNf4, 16>();
  check_smem_codebook<__half, kFp4, 16>();
  check_smem_codebook<__nv_bfloat16, kNf4, 16>();
  check_smem_codebook<__nv_bfloat16, kFp4, 16>();
  check_smem_codebook<__half, kNf4, 32>();
  check_smem_codebook<__half, kFp4, 32>();
  check_smem_codebook<__nv_bfloat16, kNf4, 32>();
  check_smem_codebook<__nv_bfloat16, kFp4, 32>();
}

// ================================== GPU: one TMA tile copy (detail/tma.cuh) ==================================

// Box of 8 rows x 64 fp16 (128-byte rows, 128-byte swizzle) at (row r0, column c0), copied by one thread's
// tma_load_2d onto an mbarrier, then written out as it lies in shared memory.
constexpr int kTmaBoxRows = 8, kTmaBoxCols = 64;
__global__ void tma_box_kernel(const __grid_constant__ CUtensorMap map, int c0, int r0, std::uint16_t* out) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
  __shared__ alignas(1024) std::uint16_t tile[kTmaBoxRows * kTmaBoxCols];
  __shared__ alignas(8) std::uint64_t bar;
  const std::uint32_t b = nibble::detail::smem_addr(&bar);
  if (threadIdx.x == 0) {
    nibble::detail::tma_prefetch_descriptor(&map);
    nibble::detail::mbarrier_init(b, 1);
    nibble::detail::fence_mbarrier_init();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    nibble::detail::mbarrier_arrive_expect_tx(b, sizeof(tile));
    nibble::detail::tma_load_2d(nibble::detail::smem_addr(tile), &map, c0, r0, b);
  }
  nibble::detail::mbarrier_wait_parity(b, 0);
  for (int i = threadIdx.x; i < kTmaBoxRows * kTmaBoxCols; i += blockDim.x) out[i] = tile[i];
#else
  (void)map, (void)c0, (void)r0, (void)out;
#endif
}

// A 37 x 200 fp16 tensor with rows 208 elements apart (random bits, none zero); boxes inside it, at its
// right edge and past its last row: every element where the 128-byte swizzle puts it (chunk c of box row r at
// chunk c ^ r % 8), zeros outside the tensor.
TEST(Tma, TileCopyLandsSwizzledWithZerosOutside) {
  NIBBLE_REQUIRE_GPU();
  int dev = 0, major = 0;
  ASSERT_EQ(cudaGetDevice(&dev), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev), cudaSuccess);
  if (major < 9) GTEST_SKIP() << "TMA needs sm_90 or newer; this is sm_" << major << "x";
  const int rows = 37, cols = 200, pitch = 208;
  auto rng = nibble_test_rng();
  std::uniform_int_distribution<int> bits(1, 0x7BFF);  // finite, non-zero fp16 bit patterns
  std::vector<std::uint16_t> host(std::size_t(rows) * pitch);
  for (auto& v : host) v = std::uint16_t(bits(rng));
  DevBuf src(host.size() * 2), out(kTmaBoxRows * kTmaBoxCols * 2);
  src.upload(host.data(), host.size() * 2);
  nibble::detail::Tma2d d;
  d.base = src.get();
  d.dtype = CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  d.rows = rows, d.cols = cols, d.row_stride_bytes = pitch * 2;
  d.box_rows = kTmaBoxRows, d.box_cols = kTmaBoxCols;
  d.swizzle = CU_TENSOR_MAP_SWIZZLE_128B;
  alignas(64) CUtensorMap map;
  ASSERT_EQ(nibble::detail::make_tma_2d(d, &map), nibble::Status::kSuccess);
  const std::pair<int, int> corners[] = {{0, 0}, {64, 8}, {160, 16}, {192, 32}, {136, 33}};  // (c0, r0)
  for (const auto& cr : corners) {
    SCOPED_TRACE("c0 " + std::to_string(cr.first) + " r0 " + std::to_string(cr.second));
    CUDA_CHECK(cudaMemset(out.get(), 0xFF, kTmaBoxRows * kTmaBoxCols * 2));  // poison
    tma_box_kernel<<<1, 128>>>(map, cr.first, cr.second, out.as<std::uint16_t>());
    CUDA_CHECK(cudaGetLastError());
    CUDA_CHECK(cudaDeviceSynchronize());
    const std::vector<std::uint16_t> got = out.download<std::uint16_t>();
    int bad = 0;
    for (int r = 0; r < kTmaBoxRows; ++r)
      for (int j = 0; j < kTmaBoxCols; ++j) {
        const int gr = cr.second + r, gc = cr.first + j;
        const std::uint16_t want = gr < rows && gc < cols ? host[std::size_t(gr) * pitch + gc] : 0;
        const int at = r * kTmaBoxCols + (((j / 8) ^ (r % 8)) * 8) + j % 8;
        if (got[at] != want && bad++ < 5)
          ADD_FAILURE() << "box (" << r << ", " << j << "): " << got[at] << " want " << want;
      }
    EXPECT_EQ(bad, 0);
  }
}

}  // namespace
