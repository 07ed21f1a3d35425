// tests/layout/test_layout.cu — layout/: the GEMM weight layout contract of gemm_layout.cuh (the lane
// table, a bijection onto the atoms' nibbles, shapes and buffer sizes) and the repack from the plain
// layout on the host and on the GPU (bit-identical). CPU tests always run; GemmRepack.DeviceMatchesHost-
// BitForBit needs a GPU. (Moved from tests/test_gemm.cu.)
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
#include <nibble/format/format.cuh>
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

namespace layout = nibble::layout;

// ================================== CPU: layout contract ==================================================

TEST(GemmLayout, AtomCoordFollowsTheMmaFragmentTableAndCodeLocationInvertsIt) {
  // The table of gemm_layout.cuh written out: value i of word j of lane l sits at n = g + 8 (i >= 4),
  // k = 16 j + 2 t + 8 (i in {2, 3, 6, 7}) + i % 2; nibble i (sequential) or {0,4,1,5,2,6,3,7}[i]
  // (interleaved: even values low half-word, odd values high half-word).
  const int kInterleavedNibble[8] = {0, 4, 1, 5, 2, 6, 3, 7};
  for (Format f : kGemmFormats) {
    const bool interleaved = f == kS4 || f == kU4 || f == kAU4;
    EXPECT_EQ(layout::gemm_nibble_order(f),
              interleaved ? nibble::NibbleOrder::kInterleaved : nibble::NibbleOrder::kSequential);
    const layout::GemmShape s = layout::make_gemm_shape(48, 192, 64);  // 3 x 3 atoms
    std::vector<int> seen(std::size_t(s.code_bytes() * 2), 0);
    int errors = 0;
    for (int an = 0; an < 3; ++an)
      for (int ak = 0; ak < 3; ++ak)
        for (int lane = 0; lane < 32; ++lane)
          for (int j = 0; j < 4; ++j)
            for (int i = 0; i < 8; ++i) {
              const int g = lane / 4, t = lane % 4;
              const int n = g + (i >= 4 ? 8 : 0);
              const int k = 16 * j + 2 * t + ((i % 4) >= 2 ? 8 : 0) + i % 2;
              const layout::AtomCoord c = layout::atom_coord(lane, j, i);
              if (c.n != n || c.k != k) ++errors;
              const int nib = interleaved ? kInterleavedNibble[i] : i;
              const layout::CodeLocation loc = layout::code_location(s, f, an * 16 + n, ak * 64 + k);
              const int64_t want = (an * s.k_atoms() + ak) * 512 + lane * 16 + 4 * j + nib / 2;
              if (loc.byte != want || loc.shift != 4 * (nib % 2)) ++errors;
              if (loc.byte >= 0 && loc.byte < s.code_bytes()) ++seen[std::size_t(loc.byte * 2 + loc.shift / 4)];
            }
    EXPECT_EQ(errors, 0) << nibble::to_string(f) << ": atom_coord / code_location disagree with the table";
    EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), std::ptrdiff_t(seen.size()))
        << nibble::to_string(f) << ": code_location is not a bijection onto the nibbles of the atoms";
  }
}

TEST(GemmLayout, ShapesScaleIndexAndBufferSizes) {
  struct Case {
    int64_t n, k;
    int group;
    int64_t n_pad, k_pad, layout_group, groups;
  };
  const Case cases[] = {
      {4304, 4096, 128, 4304, 4096, 128, 32}, {100, 200, kPC, 112, 256, 256, 1},   {17, 224, 32, 32, 256, 32, 8},
      {2880, 4304, kPC, 2880, 4352, 4352, 1}, {256, 7392, 32, 256, 7424, 32, 232}, {1, 8, kPC, 16, 64, 64, 1},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("N" + std::to_string(c.n) + "_K" + std::to_string(c.k) + "_" + group_name(c.group));
    const layout::GemmShape s = layout::make_gemm_shape(c.n, c.k, c.group);
    EXPECT_EQ(s.n_pad, c.n_pad);
    EXPECT_EQ(s.k_pad, c.k_pad);
    EXPECT_EQ(s.group, c.layout_group);
    EXPECT_EQ(s.groups, c.groups);
    EXPECT_EQ(s.k_atoms(), c.k_pad / 64);
    EXPECT_EQ(s.code_bytes(), c.n_pad * c.k_pad / 2);
    EXPECT_EQ(s.scale_count(), c.groups * c.n_pad);
    EXPECT_EQ(layout::scale_index(s, 5 % c.n, c.k - 1), (c.group == kPC ? 0 : (c.k - 1) / c.group) * c.n_pad + 5 % c.n);
    for (DType act : {kF16, kBF16})
      for (Format f : kGemmFormats) {
        const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(f, c.n, c.k, c.group, act);
        EXPECT_EQ(b.codes, std::size_t(c.n_pad * c.k_pad / 2));
        EXPECT_EQ(b.scales, std::size_t(c.groups * c.n_pad * 2));
        EXPECT_EQ(b.zeros, f == kU4 ? std::size_t(c.groups * c.n_pad) : 0u);
        EXPECT_EQ(b.offsets, f == kAU4 ? std::size_t(c.groups * c.n_pad * 2) : 0u);  // affine u4: T like the scales
      }
  }
}

// ================================== CPU: repack ============================================================

/// The repack tests' shapes (N % 16 != 0, K % 64 != 0, every group kind) and their trace label.
const RepackShape kRepackShapes[] = {{16, 64, 32},  {17, 96, 32},   {100, 200, kPC},
                                     {33, 448, 64}, {40, 512, 256}, {300, 1024, 128}};
std::string repack_label(const char* what, Format f, DType act, DType plain_scale, const RepackShape& sh) {
  return std::string(what) + " " + nibble::to_string(f) + " act=" + dtype_name(act) + " plain scales " +
         dtype_name(plain_scale) + " N" + std::to_string(sh.n) + "_K" + std::to_string(sh.k) + "_" +
         group_name(sh.group);
}

TEST(GemmRepack, HostFollowsTheLayoutContract) {
  auto rng = nibble_test_rng();
  for (DType act : {kF16, kBF16})
    for (Format f : kGemmFormats)
      for (DType plain_scale : {kF32, act})
        for (const RepackShape& sh : kRepackShapes) {
          SCOPED_TRACE(repack_label("repack_host", f, act, plain_scale, sh));
          const HostWeights w = make_weights(rng, f, sh.group, sh.n, sh.k, plain_scale, Data::kRandom, 3);
          const layout::GemmShape s = layout::make_gemm_shape(sh.n, sh.k, sh.group);
          const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(f, sh.n, sh.k, sh.group, act);
          // 16-byte aligned views into vectors: std::vector<uint8_t> storage comes from operator new
          // (aligned to __STDCPP_DEFAULT_NEW_ALIGNMENT__ = 16 on x86-64 Linux).
          HostGemmBuffers out(b, std::size_t(s.scale_count()));
          GemmWeights view;
          ASSERT_EQ(reinterpret_cast<std::uintptr_t>(out.codes.data()) % 16, 0u);
          EXPECT_STATUS(
              Status::kSuccess,
              nibble::repack_host(w.view(w.codes.data(), w.scales.data(), w.zeros.data(), w.offsets.data()), act,
                                  out.codes.data(), out.scales.data(), out.zeros.data(), out.offsets.data(), &view));
          EXPECT_EQ(view.format, f);
          EXPECT_EQ(view.group_size, sh.group);
          EXPECT_EQ(view.n, sh.n);
          EXPECT_EQ(view.k, sh.k);
          EXPECT_EQ(view.scale_type, act);
          EXPECT_EQ(static_cast<const void*>(view.codes), out.codes.data());
          EXPECT_EQ(view.scales, static_cast<const void*>(out.scales.data()));
          EXPECT_EQ(static_cast<const void*>(view.zeros), f == kU4 ? out.zeros.data() : nullptr);
          EXPECT_EQ(view.offsets, f == kAU4 ? static_cast<const void*>(out.offsets.data()) : nullptr);
          int bad_codes = 0, bad_scales = 0, bad_zeros = 0, bad_offsets = 0;
          for (int64_t n = 0; n < s.n_pad; ++n)
            for (int64_t k = 0; k < s.k_pad; ++k) {
              const layout::CodeLocation loc = layout::code_location(s, f, n, k);
              const int got = (out.codes[std::size_t(loc.byte)] >> loc.shift) & 0xF;
              const int want = n < sh.n && k < sh.k ? w.code(n, k) : 0;
              bad_codes += got != want;
            }
          for (int64_t g = 0; g < s.groups; ++g)
            for (int64_t n = 0; n < s.n_pad; ++n) {
              const bool real = n < sh.n && g < w.groups();
              uint16_t got;
              std::memcpy(&got, out.scales.data() + 2 * (g * s.n_pad + n), 2);
              const uint16_t want = real ? to_bits(act, w.scale(n, g)) : uint16_t(0);
              bad_scales += got != want;
              if (f == kU4) bad_zeros += out.zeros[std::size_t(g * s.n_pad + n)] != (real ? w.zero(n, g) : 0);
              if (f == kAU4) {  // at scale_index of every weight of the group, rounded to T like the scales
                uint16_t m;
                std::memcpy(&m, out.offsets.data() + 2 * layout::scale_index(s, n, g * s.group), 2);
                bad_offsets += m != (real ? to_bits(act, w.offset(n, g)) : uint16_t(0));
              }
            }
          if (f != kU4)
            bad_zeros += int(std::count_if(out.zeros.begin(), out.zeros.end(), [](uint8_t z) { return z != 0xAB; }));
          if (f != kAU4)
            bad_offsets +=
                int(std::count_if(out.offsets.begin(), out.offsets.end(), [](uint8_t z) { return z != 0xAB; }));
          else
            for (std::size_t i = out.offsets.size() - 16; i < out.offsets.size(); ++i)
              bad_offsets += out.offsets[i] != 0xAB;
          for (const auto* v : {&out.codes, &out.scales})  // the 16 bytes past each buffer are untouched
            for (std::size_t i = v->size() - 16; i < v->size(); ++i) bad_codes += (*v)[i] != 0xAB;
          EXPECT_EQ(bad_codes, 0) << "codes differ from the plain codes at code_location (0 in padding)";
          EXPECT_EQ(bad_scales, 0) << "scales differ from the plain scales rounded to T (0 in padding)";
          EXPECT_EQ(bad_zeros, 0) << "zero points differ from the plain ones (0 in padding / untouched)";
          EXPECT_EQ(bad_offsets, 0)
              << "affine offsets differ from the plain ones rounded to T (0 in padding / untouched)";
        }
}

/// Affine u4 needs the repack overload with an offsets buffer: the one without it, a plain weight without
/// offsets or a misaligned offsets buffer are refused like u4's zeros.
TEST(GemmRepack, AffineNeedsItsOffsets) {
  auto rng = nibble_test_rng();
  const HostWeights w = make_weights(rng, kAU4, 32, 32, 256, kF16, Data::kRandom);
  const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(kAU4, 32, 256, 32, kF16);
  HostGemmBuffers out(b, 0);
  GemmWeights view;
  const PlainWeights good = w.view(w.codes.data(), w.scales.data(), nullptr, w.offsets.data());
  EXPECT_STATUS(Status::kSuccess, nibble::repack_host(good, kF16, out.codes.data(), out.scales.data(), nullptr,
                                                      out.offsets.data(), &view));
  EXPECT_STATUS(Status::kErrorNullPointer,
                nibble::repack_host(good, kF16, out.codes.data(), out.scales.data(), nullptr, &view));
  EXPECT_STATUS(Status::kErrorNullPointer,
                nibble::repack_host(good, kF16, out.codes.data(), out.scales.data(), nullptr, nullptr, &view));
  PlainWeights p = good;
  p.offsets = nullptr;
  EXPECT_STATUS(Status::kErrorNullPointer,
                nibble::repack_host(p, kF16, out.codes.data(), out.scales.data(), nullptr, out.offsets.data(), &view));
  EXPECT_STATUS(Status::kErrorMisalignedPointer, nibble::repack_host(good, kF16, out.codes.data(), out.scales.data(),
                                                                     nullptr, out.offsets.data() + 2, &view));
  // the other formats ignore an offsets buffer
  const HostWeights s4 = make_weights(rng, kS4, 32, 32, 256, kF16, Data::kRandom);
  EXPECT_STATUS(Status::kSuccess,
                nibble::repack_host(s4.view(s4.codes.data(), s4.scales.data(), nullptr), kF16, out.codes.data(),
                                    out.scales.data(), nullptr, out.offsets.data(), &view));
  EXPECT_EQ(view.offsets, nullptr);
}

TEST(GemmRepack, RejectsInvalidArguments) {
  auto rng = nibble_test_rng();
  const HostWeights w = make_weights(rng, kU4, 64, 32, 256, kF16, Data::kRandom);
  const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(kU4, 32, 256, 64, kF16);
  HostGemmBuffers out(b, b.zeros);
  GemmWeights view;
  const PlainWeights good = w.view(w.codes.data(), w.scales.data(), w.zeros.data());
  auto repack = [&](const PlainWeights& src, DType act = kF16, void* codes = nullptr, void* scales = nullptr,
                    void* zeros = nullptr, GemmWeights* v = nullptr, bool defaults = true) {
    if (defaults) {
      codes = out.codes.data();
      scales = out.scales.data();
      zeros = out.zeros.data();
      v = &view;
    }
    return nibble::repack_host(src, act, codes, scales, zeros, v);
  };
  EXPECT_STATUS(Status::kSuccess, repack(good));
  EXPECT_STATUS(Status::kErrorUnsupportedFormat, repack(good, kF32));
  PlainWeights p = good;
  p.n = 0;
  EXPECT_STATUS(Status::kErrorInvalidShape, repack(p));
  p = good;
  p.k = 255;
  EXPECT_STATUS(Status::kErrorInvalidShape, repack(p));
  p = good;
  p.group_size = 16;
  EXPECT_STATUS(Status::kErrorGroupSize, repack(p));
  p = good;
  p.k = 224;  // 224 % 64 != 0
  EXPECT_STATUS(Status::kErrorGroupSize, repack(p));
  p = good;
  p.ld_codes = 127;
  EXPECT_STATUS(Status::kErrorLeadingDimension, repack(p));
  p = good;
  p.codes = nullptr;
  EXPECT_STATUS(Status::kErrorNullPointer, repack(p));
  p = good;
  p.scales = nullptr;
  EXPECT_STATUS(Status::kErrorNullPointer, repack(p));
  p = good;
  p.zeros = nullptr;
  EXPECT_STATUS(Status::kErrorNullPointer, repack(p));
  EXPECT_STATUS(Status::kErrorNullPointer,
                repack(good, kF16, out.codes.data(), out.scales.data(), nullptr, &view, false));
  EXPECT_STATUS(Status::kErrorNullPointer,
                repack(good, kF16, out.codes.data(), out.scales.data(), out.zeros.data(), nullptr, false));
  EXPECT_STATUS(Status::kErrorMisalignedPointer,
                repack(good, kF16, out.codes.data() + 4, out.scales.data(), out.zeros.data(), &view, false));
  EXPECT_STATUS(Status::kErrorMisalignedPointer,
                repack(good, kF16, out.codes.data(), out.scales.data() + 2, out.zeros.data(), &view, false));
  EXPECT_STATUS(Status::kErrorMisalignedPointer,
                repack(good, kF16, out.codes.data(), out.scales.data(), out.zeros.data() + 1, &view, false));
}

// ================================== GPU: repack =============================================================

TEST(GemmRepack, DeviceMatchesHostBitForBit) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  std::vector<RepackShape> shapes(std::begin(kRepackShapes), std::end(kRepackShapes));
  if (!quick_mode()) shapes.push_back({2880, 4304, kPC});
  for (DType act : {kF16, kBF16})
    for (Format f : kGemmFormats)
      for (DType plain_scale : {kF32, act})
        for (const RepackShape& sh : shapes) {
          SCOPED_TRACE(repack_label("repack", f, act, plain_scale, sh));
          const HostWeights w = make_weights(rng, f, sh.group, sh.n, sh.k, plain_scale, Data::kRandom, 5);
          const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(f, sh.n, sh.k, sh.group, act);
          HostGemmBuffers host(b, b.zeros);
          GemmWeights hv;
          NIBBLE_CHECK(nibble::repack_host(w.view(w.codes.data(), w.scales.data(), w.zeros.data(), w.offsets.data()),
                                           act, host.codes.data(), host.scales.data(), host.zeros.data(),
                                           host.offsets.data(), &hv));
          DevBuf pc = to_device(w.codes), ps = to_device(w.scales), pz = to_device(w.zeros), po = to_device(w.offsets);
          DevBuf dc(b.codes), ds(b.scales), dz(b.zeros), dof(b.offsets);
          CUDA_CHECK(cudaMemset(dc.get(), 0xCD, b.codes));
          CUDA_CHECK(cudaMemset(ds.get(), 0xCD, b.scales));
          if (b.zeros > 0) CUDA_CHECK(cudaMemset(dz.get(), 0xCD, b.zeros));
          if (b.offsets > 0) CUDA_CHECK(cudaMemset(dof.get(), 0xCD, b.offsets));
          CUDA_CHECK(cudaDeviceSynchronize());
          Stream stream;
          GemmWeights dv;
          NIBBLE_CHECK(nibble::repack(w.view(pc.get(), ps.get(), pz.get(), po.get()), act, dc.get(), ds.get(), dz.get(),
                                      dof.get(), &dv, stream.s));
          CUDA_CHECK(cudaStreamSynchronize(stream.s));
          CUDA_CHECK(cudaGetLastError());
          const std::vector<uint8_t> codes = dc.download<uint8_t>(), scales = ds.download<uint8_t>(),
                                     zeros = dz.download<uint8_t>(), offsets = dof.download<uint8_t>();
          EXPECT_TRUE(std::equal(codes.begin(), codes.end(), host.codes.begin())) << "codes differ";
          EXPECT_TRUE(std::equal(scales.begin(), scales.end(), host.scales.begin())) << "scales differ";
          EXPECT_TRUE(std::equal(zeros.begin(), zeros.end(), host.zeros.begin())) << "zero points differ";
          EXPECT_TRUE(std::equal(offsets.begin(), offsets.end(), host.offsets.begin())) << "affine offsets differ";
          EXPECT_EQ(dv.format, hv.format);
          EXPECT_EQ(dv.group_size, hv.group_size);
          EXPECT_EQ(dv.n, hv.n);
          EXPECT_EQ(dv.k, hv.k);
          EXPECT_EQ(dv.scale_type, act);
          EXPECT_EQ(static_cast<const void*>(dv.codes), dc.get());
          EXPECT_EQ(dv.scales, static_cast<const void*>(ds.get()));
          EXPECT_EQ(static_cast<const void*>(dv.zeros), f == kU4 ? dz.get() : nullptr);
          EXPECT_EQ(dv.offsets, f == kAU4 ? dof.get() : nullptr);
        }
}

// ================================== compact double-quantized scales (repack_dq) ==============================

/// Shapes of the repack_dq tests: g64 with padded rows, g32 with a padding group, per-channel, 300 groups per row
/// (second-level blocks starting inside rows).
constexpr RepackShape kDqShapes[] = {{392, 1088, 64}, {136, 992, 32}, {200, 1000, kPC}, {48, 19200, 64}};

/// The layout rule of gemm_layout.cuh written out: dq_codes[group * n_pad + n] is the plain code of (n, group)
/// (0 in padding), dq_stats is the map, the offset, 3 zeros and absmax2 as they are; decoding entry (group, n)
/// with block (n * groups + group) / 256 gives exactly the scale repack_host writes from the same source.
TEST(GemmRepackDq, CompactLayoutDecodesToRepacksScales) {
  auto rng = nibble_test_rng();
  std::vector<RepackShape> shapes(std::begin(kDqShapes), std::end(kDqShapes));
  shapes.push_back({17, 512, 256});
  for (DType act : {kF16, kBF16})
    for (Format f : {kNf4, kFp4})
      for (const RepackShape& sh : shapes) {
        SCOPED_TRACE(repack_label("repack_dq", f, act, kF32, sh));
        const HostWeights w = make_weights(rng, f, sh.group, sh.n, sh.k, kF32, Data::kRandom, 3);
        const HostDq dq = make_dq(w);
        const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(f, sh.n, sh.k, sh.group, act, true);
        const nibble::GemmWeightBytes fb = nibble::gemm_weight_bytes(f, sh.n, sh.k, sh.group, act);
        ASSERT_EQ(b.scales, 0u);
        ASSERT_EQ(b.codes, fb.codes);
        std::vector<uint8_t> codes(b.codes + 16, 0xAB), dq_codes(b.dq_codes + 16, 0xAB);
        std::vector<float> stats(b.dq_stats / 4 + 4, -1.0f);
        GemmWeights v;
        NIBBLE_CHECK(nibble::repack_dq_host(dq.view(w, w.codes.data(), dq.codes.data(), dq.absmax2.data(), &dq.offset),
                                            act, codes.data(), dq_codes.data(), stats.data(), &v));
        EXPECT_TRUE(v.dq_compact() && v.scales == nullptr && v.zeros == nullptr && v.offsets == nullptr);
        EXPECT_EQ(static_cast<const void*>(v.dq_codes), dq_codes.data());
        EXPECT_EQ(static_cast<const void*>(v.dq_stats), stats.data());
        // repack_host of the same source with its scales expanded (PlainWeights' dq fields)
        HostGemmBuffers full(fb, 0);
        GemmWeights fv;
        NIBBLE_CHECK(nibble::repack_host(dq.view(w, w.codes.data(), dq.codes.data(), dq.absmax2.data(), &dq.offset),
                                         act, full.codes.data(), full.scales.data(), nullptr, &fv));
        EXPECT_TRUE(std::equal(codes.begin(), codes.begin() + b.codes, full.codes.begin())) << "codes differ";
        EXPECT_EQ(codes[b.codes], 0xAB) << "wrote past the codes";
        const layout::GemmShape s = layout::make_gemm_shape(sh.n, sh.k, sh.group);
        const int64_t groups = sh.group == kPC ? 1 : sh.k / sh.group;
        const nibble::DynamicMap& map = nibble::dynamic_map();
        for (int i = 0; i < 256; ++i) ASSERT_EQ(stats[i], map.v[i]);
        EXPECT_EQ(stats[256], dq.offset);
        EXPECT_TRUE(stats[257] == 0.0f && stats[258] == 0.0f && stats[259] == 0.0f);
        const int64_t blocks = (sh.n * groups + 255) / 256;
        ASSERT_EQ(b.dq_stats, std::size_t(260 + blocks) * 4);
        for (int64_t i = 0; i < blocks; ++i) ASSERT_EQ(stats[260 + i], dq.absmax2[i]);
        EXPECT_EQ(stats[260 + blocks], -1.0f) << "wrote past dq_stats";
        int64_t mismatches = 0;
        for (int64_t g = 0; g < s.groups; ++g)
          for (int64_t n = 0; n < s.n_pad; ++n) {
            const int64_t i = g * s.n_pad + n;
            const bool real = n < sh.n && g < groups;
            ASSERT_EQ(dq_codes[i], real ? dq.codes[n * groups + g] : 0) << "entry " << i;
            // map[code] * absmax2 + offset with dq_scale's two roundings (volatile: no FMA contraction)
            volatile float prod = real ? stats[dq_codes[i]] * stats[260 + (n * groups + g) / 256] : 0.0f;
            const float ref = real ? prod + stats[256] : 0.0f;
            uint16_t got;
            std::memcpy(&got, full.scales.data() + 2 * i, 2);
            if (got != to_bits(act, ref)) ++mismatches;
          }
        EXPECT_EQ(mismatches, 0) << "decoded compact scales differ from repack's";
      }
}

TEST(GemmRepackDq, RejectsInvalidArguments) {
  auto rng = nibble_test_rng();
  const HostWeights w = make_weights(rng, kNf4, 64, 32, 256, kF32, Data::kRandom);
  const HostDq dq = make_dq(w);
  const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(kNf4, 32, 256, 64, kF16, true);
  std::vector<uint8_t> codes(b.codes + 16), dq_codes(b.dq_codes + 16);
  std::vector<float> stats(b.dq_stats / 4 + 4);
  GemmWeights v;
  const PlainWeights good = dq.view(w, w.codes.data(), dq.codes.data(), dq.absmax2.data(), &dq.offset);
  EXPECT_STATUS(Status::kSuccess, nibble::repack_dq_host(good, kF16, codes.data(), dq_codes.data(), stats.data(), &v));
  PlainWeights p = good;
  p.dq_codes = nullptr;  // no double quantization: repack() is the entry point
  EXPECT_STATUS(Status::kErrorNullPointer,
                nibble::repack_dq_host(p, kF16, codes.data(), dq_codes.data(), stats.data(), &v));
  p = good;
  p.format = kS4;
  EXPECT_STATUS(Status::kErrorUnsupportedFormat,
                nibble::repack_dq_host(p, kF16, codes.data(), dq_codes.data(), stats.data(), &v));
  EXPECT_STATUS(Status::kErrorUnsupportedFormat,
                nibble::repack_dq_host(good, kF32, codes.data(), dq_codes.data(), stats.data(), &v));
  EXPECT_STATUS(Status::kErrorNullPointer, nibble::repack_dq_host(good, kF16, codes.data(), nullptr, stats.data(), &v));
  EXPECT_STATUS(Status::kErrorNullPointer,
                nibble::repack_dq_host(good, kF16, codes.data(), dq_codes.data(), nullptr, &v));
  EXPECT_STATUS(Status::kErrorNullPointer,
                nibble::repack_dq_host(good, kF16, codes.data(), dq_codes.data(), stats.data(), nullptr));
  EXPECT_STATUS(Status::kErrorMisalignedPointer,
                nibble::repack_dq_host(good, kF16, codes.data(), dq_codes.data() + 1, stats.data(), &v));
  EXPECT_STATUS(Status::kErrorMisalignedPointer,
                nibble::repack_dq_host(good, kF16, codes.data(), dq_codes.data(), stats.data() + 1, &v));
  p = good;
  p.group_size = 48;
  EXPECT_STATUS(Status::kErrorGroupSize,
                nibble::repack_dq_host(p, kF16, codes.data(), dq_codes.data(), stats.data(), &v));
}

/// repack_dq on the GPU writes repack_dq_host's bytes.
TEST(GemmRepackDq, DeviceMatchesHostBitForBit) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  for (DType act : {kF16, kBF16})
    for (Format f : {kNf4, kFp4})
      for (const RepackShape& sh : kDqShapes) {
        SCOPED_TRACE(repack_label("repack_dq", f, act, kF32, sh));
        const HostWeights w = make_weights(rng, f, sh.group, sh.n, sh.k, kF32, Data::kRandom, 5);
        const HostDq dq = make_dq(w);
        const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(f, sh.n, sh.k, sh.group, act, true);
        std::vector<uint8_t> codes(b.codes), dq_codes(b.dq_codes);
        std::vector<float> stats(b.dq_stats / 4);
        GemmWeights hv;
        NIBBLE_CHECK(nibble::repack_dq_host(dq.view(w, w.codes.data(), dq.codes.data(), dq.absmax2.data(), &dq.offset),
                                            act, codes.data(), dq_codes.data(), stats.data(), &hv));
        DevBuf pc = to_device(w.codes), pdc = to_device(dq.codes), pa = to_device(dq.absmax2),
               po = to_device(std::vector<float>{dq.offset});
        DevBuf dc(b.codes), ddc(b.dq_codes), ds(b.dq_stats);
        CUDA_CHECK(cudaMemset(dc.get(), 0xCD, b.codes));
        CUDA_CHECK(cudaMemset(ddc.get(), 0xCD, b.dq_codes));
        CUDA_CHECK(cudaMemset(ds.get(), 0xCD, b.dq_stats));
        Stream stream;
        GemmWeights dv;
        NIBBLE_CHECK(nibble::repack_dq(dq.view(w, pc.get(), pdc.get(), pa.as<float>(), po.as<float>()), act, dc.get(),
                                       ddc.get(), ds.get(), &dv, stream.s));
        CUDA_CHECK(cudaStreamSynchronize(stream.s));
        EXPECT_TRUE(dc.download<uint8_t>() == codes) << "codes differ";
        EXPECT_TRUE(ddc.download<uint8_t>() == dq_codes) << "dq codes differ";
        EXPECT_TRUE(ds.download<float>() == stats) << "dq stats differ";
        EXPECT_EQ(static_cast<const void*>(dv.dq_codes), ddc.get());
        EXPECT_EQ(static_cast<const void*>(dv.dq_stats), ds.get());
      }
}

}  // namespace
