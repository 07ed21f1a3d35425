// tests/layout/test_shard.cu — layout/shard.cuh: tensor-parallel shards of the plain and the GEMM layout.
// CPU: every legal split of small random matrices (quantized with quantize_cpu, seed printed) dequantizes to
// the same rows / columns of the unsharded matrix's dequantized weights; every illegal split is refused with
// its Status; column shards concatenated give the whole, row shards' partial products (float64) sum to the
// whole product; sharding plans. GPU (skipped visibly without one): repack_shard and copy_plain_shard on the
// device give the host bytes. gemm::run on shards is checked by examples/tensor_parallel (a TU that calls it
// compiles GEMM kernels, which this test binary keeps out).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <nibble/format/codebook.cuh>
#include <nibble/layout/shard.cuh>
#include <nibble/quant/quantize.cuh>
#include <random>
#include <string>
#include <vector>

#include "common/check.hpp"
#include "common/device_buffer.hpp"
#include "common/gpu.hpp"
#include "common/random.hpp"

namespace {

using nibble::GemmWeights;
using nibble::PackedMatrix;
using nibble::QuantParams;
using nibble::ShardRange;

// ---- helpers ------------------------------------------------------------------------------------------------

/// A plain packed matrix carved from one 256-byte aligned host buffer.
struct HostPacked {
  std::vector<uint8_t> storage;
  std::size_t offset = 0, total = 0;
  PackedMatrix m;

  HostPacked() = default;
  HostPacked(int64_t n, int64_t k, const QuantParams& p) {
    const nibble::PackedBytes b = nibble::packed_bytes(n, k, p);
    NIBBLE_CHECK(b.status);
    total = b.total;
    storage.assign(total + nibble::kPackedAlignment, 0xAB);
    offset = nibble::kPackedAlignment - reinterpret_cast<std::uintptr_t>(storage.data()) % nibble::kPackedAlignment;
    NIBBLE_CHECK(nibble::carve_packed_matrix(n, k, p, storage.data() + offset, total, &m));
  }
  HostPacked(const HostPacked&) = delete;
  HostPacked& operator=(const HostPacked&) = delete;
};

/// Random N(0, 1) weights (a few rows scaled, so that groups and dq blocks differ) quantized on the CPU.
void quantize_random(std::mt19937_64& rng, HostPacked& hp) {
  const PackedMatrix& m = hp.m;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(std::size_t(m.n * m.k));
  for (int64_t r = 0; r < m.n; ++r)
    for (int64_t c = 0; c < m.k; ++c) w[std::size_t(r * m.k + c)] = normal(rng) * (1.0f + float((r * 7 + c / 32) % 5));
  NIBBLE_CHECK(nibble::quantize_cpu(w.data(), m.k, m));
}

std::vector<float> dequant(const PackedMatrix& m) {
  std::vector<float> out(std::size_t(m.n * m.k));
  NIBBLE_CHECK(nibble::dequantize_cpu(m, out.data(), m.k));
  return out;
}

/// Weight (n, k) of a GEMM-layout view, dequantized on the host from its bytes (code_location, scale_index).
float gemm_value(const GemmWeights& w, int64_t n, int64_t k) {
  const nibble::layout::GemmShape s = w.shape();
  const nibble::layout::CodeLocation loc = nibble::layout::code_location(s, w.format, n, k);
  const int nib = (w.codes[loc.byte] >> loc.shift) & 0xF;
  const int64_t si = nibble::layout::scale_index(s, n, k);
  uint16_t bits;
  std::memcpy(&bits, static_cast<const uint8_t*>(w.scales) + 2 * si, 2);
  const float scale = from_bits(w.scale_type, bits);
  float v = 0;
  switch (w.format) {
    case kS4:
      v = float(nib >= 8 ? nib - 16 : nib);
      break;
    case kU4:
      v = float(nib - int(w.zeros[si]));
      break;
    case kAU4: {  // q * s + m, the offset at scale_index like the scale
      std::memcpy(&bits, static_cast<const uint8_t*>(w.offsets) + 2 * si, 2);
      return float(nib) * scale + from_bits(w.scale_type, bits);
    }
    default:
      v = nibble::codebook(w.format)[unsigned(nib)];
  }
  return v * scale;
}

/// The GEMM layout of a plain matrix in host vectors (16-byte aligned: operator new's alignment).
struct HostGemm {
  std::vector<uint8_t> codes, scales, zeros, offsets;
  GemmWeights w;
};
void alloc_gemm(HostGemm& g, Format f, int64_t n, int64_t k, int group, DType act) {
  const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(f, n, k, group, act);
  g.codes.assign(b.codes, 0xCD);
  g.scales.assign(b.scales, 0xCD);
  g.zeros.assign(std::max<std::size_t>(b.zeros, 16), 0xCD);
  g.offsets.assign(std::max<std::size_t>(b.offsets, 16), 0xCD);
}

struct Config {
  Format format;
  int group;
  DType scale_type;
  bool dq;
  QuantParams params() const { return {format, group, scale_type, dq}; }
  std::string name() const {
    return std::string(nibble::to_string(format)) + "_" + group_name(group) + "_" + dtype_name(scale_type) +
           (dq ? "_dq" : "");
  }
};
std::vector<Config> all_configs() {
  std::vector<Config> v;
  for (Format f : kAllFormats)
    for (int g : kAllGroups) {
      v.push_back({f, g, kF16, false});
      if (g == 32 || g == kPC) v.push_back({f, g, kBF16, false});
      if (g == 32 || g == 64 || g == kPC) v.push_back({f, g, kF32, true});
    }
  return v;
}

/// all_configs() plus the formats of the plain layout only (affine u4: its offsets are sharded like the scales).
std::vector<Config> plain_configs() {
  std::vector<Config> v = all_configs();
  for (int g : kAllGroups) {
    v.push_back({Format::kAffineU4, g, kF16, false});
    if (g == 32 || g == kPC) v.push_back({Format::kAffineU4, g, kF32, false});
  }
  return v;
}

int64_t groups_per_row(int group, int64_t k) { return group == kPC ? 1 : k / group; }

/// The documented double-quant rule, restated: the shard's scales, in its own row-major order, must be whole
/// 256-blocks of the source's order. G' = G: contiguous from n0 * G; one row: from n0 * G + j0; else G, j0,
/// G' all multiples of 256.
bool dq_rule(int group, int64_t k, const ShardRange& r) {
  const int64_t G = groups_per_row(group, k);
  const int64_t j0 = group == kPC ? 0 : r.k0 / group, gs = group == kPC ? 1 : r.k() / group;
  if (gs == G) return (r.n0 * G) % 256 == 0;
  if (r.n() == 1) return (r.n0 * G + j0) % 256 == 0;
  return G % 256 == 0 && j0 % 256 == 0 && gs % 256 == 0;
}

/// K boundaries a shard may use: group multiples (per-channel: every 2nd, thinned to keep the test short).
std::vector<int64_t> k_cuts(int group, int64_t k, int64_t step_pc) {
  std::vector<int64_t> v;
  const int64_t step = group == kPC ? step_pc : group;
  for (int64_t c = 0; c <= k; c += step) v.push_back(c);
  if (v.back() != k) v.push_back(k);
  return v;
}

/// Rows [r.n0, r.n1) x columns [r.k0, r.k1) of a dense row-major [*, k] matrix equal `part` bit for bit.
int64_t count_mismatches(const std::vector<float>& whole, int64_t k, const ShardRange& r,
                         const std::vector<float>& part) {
  int64_t bad = 0;
  for (int64_t n = 0; n < r.n(); ++n)
    for (int64_t c = 0; c < r.k(); ++c) {
      const float a = whole[std::size_t((r.n0 + n) * k + r.k0 + c)], b = part[std::size_t(n * r.k() + c)];
      bad += std::memcmp(&a, &b, 4) != 0;
    }
  return bad;
}

std::string range_name(const ShardRange& r) {
  return "n[" + std::to_string(r.n0) + "," + std::to_string(r.n1) + ") k[" + std::to_string(r.k0) + "," +
         std::to_string(r.k1) + ")";
}

// ================================== CPU: plain layout =========================================================

TEST(ShardPlain, EveryColumnShardIsAViewOfTheWholeRows) {
  auto rng = nibble_test_rng();
  const int64_t N = 24, K = 512;
  for (const Config& c : plain_configs()) {
    SCOPED_TRACE(c.name());
    HostPacked hp(N, K, c.params());
    quantize_random(rng, hp);
    const std::vector<float> whole = dequant(hp.m);
    int tested = 0;
    for (int64_t n0 = 0; n0 < N; ++n0)
      for (int64_t n1 = n0 + 1; n1 <= N; ++n1) {
        const ShardRange r = nibble::column_shard_range(n0, n1, K);
        SCOPED_TRACE(range_name(r));
        PackedMatrix v;
        const bool legal = !c.dq || dq_rule(c.group, K, r);
        const Status st = nibble::plain_column_shard(hp.m, n0, n1, &v);
        ASSERT_EQ(int(st), int(legal ? Status::kSuccess : Status::kErrorGroupSize)) << nibble::to_string(st);
        if (!legal) continue;
        ++tested;
        EXPECT_EQ(v.n, n1 - n0);
        EXPECT_EQ(v.k, K);
        EXPECT_EQ(v.ld_codes, hp.m.ld_codes);
        EXPECT_GE(v.codes, hp.m.codes);  // a view: into the source's buffer
        EXPECT_LT(v.codes, hp.m.codes + N * hp.m.ld_codes);
        EXPECT_EQ(count_mismatches(whole, K, r, dequant(v)), 0);
      }
    EXPECT_GT(tested, 0);
  }
}

TEST(ShardPlain, RowShardsAreViewsOnlyWithOneScalePerRowAndCopiesOtherwise) {
  auto rng = nibble_test_rng();
  for (int64_t N : {int64_t(5), int64_t(1)}) {
    const int64_t K = 1024;
    for (const Config& c : plain_configs()) {
      SCOPED_TRACE(c.name() + " N" + std::to_string(N));
      HostPacked hp(N, K, c.params());
      quantize_random(rng, hp);
      const std::vector<float> whole = dequant(hp.m);
      const std::vector<int64_t> cuts = k_cuts(c.group, K, 128);
      for (std::size_t a = 0; a < cuts.size(); ++a)
        for (std::size_t b = a + 1; b < cuts.size(); ++b) {
          const ShardRange r = nibble::row_shard_range(N, cuts[a], cuts[b]);
          SCOPED_TRACE(range_name(r));
          const bool dq_ok = !c.dq || dq_rule(c.group, K, r);
          const bool expressible = c.group == kPC || N == 1 || r.k() == K;
          PackedMatrix v;
          const Status st = nibble::plain_row_shard(hp.m, r.k0, r.k1, &v);
          const Status want =
              !expressible ? Status::kErrorUnsupportedFormat : (dq_ok ? Status::kSuccess : Status::kErrorGroupSize);
          ASSERT_EQ(int(st), int(want)) << nibble::to_string(st);
          if (st == Status::kSuccess) EXPECT_EQ(count_mismatches(whole, K, r, dequant(v)), 0) << "row view";
          HostPacked dst(N, r.k(), c.params());
          const Status cst = nibble::copy_plain_shard_host(hp.m, r, dst.m);
          ASSERT_EQ(int(cst), int(dq_ok ? Status::kSuccess : Status::kErrorGroupSize)) << nibble::to_string(cst);
          if (cst == Status::kSuccess) EXPECT_EQ(count_mismatches(whole, K, r, dequant(dst.m)), 0) << "row copy";
        }
    }
  }
}

TEST(ShardPlain, DoubleQuantRowShardsKeepWholeBlocks) {
  // G = 512 groups per row (K = 16384, g32): K cuts at 256-group multiples (k = 8192) keep every 256-block
  // whole; any other group boundary splits one; one row only needs its first scale to start a block.
  auto rng = nibble_test_rng();
  const int64_t K = 16384;
  for (Format f : {kNf4, kS4, kU4})
    for (int64_t N : {int64_t(3), int64_t(1)}) {
      SCOPED_TRACE(std::string(nibble::to_string(f)) + " N" + std::to_string(N));
      const QuantParams p{f, 32, kF32, true};
      HostPacked hp(N, K, p);
      quantize_random(rng, hp);
      const std::vector<float> whole = dequant(hp.m);
      int legal = 0, illegal = 0;
      for (int64_t k0 : {int64_t(0), int64_t(4096), int64_t(8192), int64_t(12288)})
        for (int64_t k1 : {int64_t(4096), int64_t(8192), int64_t(12288), K}) {
          if (k1 <= k0) continue;
          const ShardRange r = nibble::row_shard_range(N, k0, k1);
          SCOPED_TRACE(range_name(r));
          const bool ok = dq_rule(32, K, r);
          HostPacked dst(N, r.k(), p);
          const Status st = nibble::copy_plain_shard_host(hp.m, r, dst.m);
          ASSERT_EQ(int(st), int(ok ? Status::kSuccess : Status::kErrorGroupSize)) << nibble::to_string(st);
          (ok ? legal : illegal) += 1;
          if (ok) EXPECT_EQ(count_mismatches(whole, K, r, dequant(dst.m)), 0);
        }
      EXPECT_GT(legal, 0);
      if (N > 1) EXPECT_GT(illegal, 0);
      // 2-D shards: rows 1..2 x the second half (G % 256 == 0, j0 = 256): legal for a copy, not a view
      if (N == 3) {
        const ShardRange r{1, 3, 8192, K};
        HostPacked dst(2, r.k(), p);
        NIBBLE_CHECK(nibble::copy_plain_shard_host(hp.m, r, dst.m));
        EXPECT_EQ(count_mismatches(whole, K, r, dequant(dst.m)), 0);
        PackedMatrix v;
        EXPECT_STATUS(Status::kErrorUnsupportedFormat, nibble::plain_shard(hp.m, r, &v));
      }
    }
}

TEST(ShardPlain, ColumnShardsConcatenateToTheWhole) {
  auto rng = nibble_test_rng();
  const int64_t N = 96, K = 256;
  for (const Config& c : plain_configs())
    for (int world : {1, 2, 3, 4, 6}) {
      SCOPED_TRACE(c.name() + " world " + std::to_string(world));
      nibble::ShardPlan plan;
      plan.axis = nibble::ShardAxis::kColumn;
      plan.world_size = world;
      plan.n = N;
      plan.k = K;
      plan.params = c.params();
      plan.target = nibble::ShardTarget::kPlain;
      const bool legal = !c.dq || world == 1 || (N / world * groups_per_row(c.group, K)) % 256 == 0;
      ASSERT_EQ(int(nibble::can_implement_shard_plan(plan)), int(legal ? Status::kSuccess : Status::kErrorGroupSize));
      if (!legal) continue;
      HostPacked hp(N, K, c.params());
      quantize_random(rng, hp);
      const std::vector<float> whole = dequant(hp.m);
      std::vector<float> cat;
      for (int rank = 0; rank < world; ++rank) {
        ShardRange r;
        NIBBLE_CHECK(nibble::shard_range(plan, rank, &r));
        PackedMatrix v;
        NIBBLE_CHECK(nibble::plain_shard(hp.m, r, &v));
        const std::vector<float> part = dequant(v);
        cat.insert(cat.end(), part.begin(), part.end());
      }
      ASSERT_EQ(cat.size(), whole.size());
      EXPECT_EQ(std::memcmp(cat.data(), whole.data(), 4 * whole.size()), 0);
    }
}

// ================================== CPU: GEMM layout ==========================================================

/// The whole GEMM layout of hp (act type `act`), and a plain copy helper.
void repack_whole(const HostPacked& hp, DType act, HostGemm& g) {
  alloc_gemm(g, hp.m.format, hp.m.n, hp.m.k, hp.m.group_size, act);
  NIBBLE_CHECK(nibble::repack_host(nibble::plain_view(hp.m), act, g.codes.data(), g.scales.data(), g.zeros.data(),
                                   g.offsets.data(), &g.w));
}

int64_t count_gemm_mismatches(const GemmWeights& whole, const ShardRange& r, const GemmWeights& part) {
  int64_t bad = 0;
  for (int64_t n = 0; n < r.n(); ++n)
    for (int64_t k = 0; k < r.k(); ++k) {
      const float a = gemm_value(whole, r.n0 + n, r.k0 + k), b = gemm_value(part, n, k);
      bad += std::memcmp(&a, &b, 4) != 0;
    }
  return bad;
}

TEST(ShardGemm, ViewsWhereTheLayoutCanExpressThemElseRefused) {
  auto rng = nibble_test_rng();
  for (int64_t N : {int64_t(40), int64_t(16), int64_t(9)}) {
    const int64_t K = 512;
    for (const Config& c : plain_configs())  // affine u4 included: its GEMM-layout offsets are viewed like the scales
      for (DType act : {kF16, kBF16}) {
        if (act == kBF16 && c.group != 32) continue;
        SCOPED_TRACE(c.name() + " act " + dtype_name(act) + " N" + std::to_string(N));
        HostPacked hp(N, K, c.params());
        quantize_random(rng, hp);
        HostGemm g;
        repack_whole(hp, act, g);
        std::vector<int64_t> ncuts;
        for (int64_t n = 0; n < N; n += 16) ncuts.push_back(n);
        ncuts.push_back(N);
        const std::vector<int64_t> kcuts = k_cuts(c.group, K, 64);
        for (std::size_t na = 0; na < ncuts.size(); ++na)
          for (std::size_t nb = na + 1; nb < ncuts.size(); ++nb)
            for (std::size_t ka = 0; ka < kcuts.size(); ++ka)
              for (std::size_t kb = ka + 1; kb < kcuts.size(); ++kb) {
                const ShardRange r{ncuts[na], ncuts[nb], kcuts[ka], kcuts[kb]};
                SCOPED_TRACE(range_name(r));
                const bool atoms = r.k0 % 64 == 0 && (r.k1 % 64 == 0 || r.k1 == K);
                const bool all_k = r.k() == K, one_atom_row = r.n() <= 16;
                const bool all_n = r.n() == N;
                const int64_t part_groups = nibble::layout::make_gemm_shape(r.n(), r.k(), c.group).groups;
                const bool expressible = (all_k || one_atom_row) && (all_n || part_groups == 1);
                GemmWeights v;
                const Status st = nibble::gemm_shard(g.w, r, &v);
                const Status want = !atoms ? Status::kErrorInvalidShape
                                           : (expressible ? Status::kSuccess : Status::kErrorUnsupportedFormat);
                ASSERT_EQ(int(st), int(want)) << nibble::to_string(st);
                if (st != Status::kSuccess) continue;
                EXPECT_EQ(v.n, r.n());
                EXPECT_EQ(v.k, r.k());
                // what gemm::run checks of a weight: 16-byte aligned codes, scales, zeros
                EXPECT_EQ(reinterpret_cast<std::uintptr_t>(v.codes) % 16, 0u);
                EXPECT_EQ(reinterpret_cast<std::uintptr_t>(v.scales) % 16, 0u);
                if (v.zeros != nullptr) EXPECT_EQ(reinterpret_cast<std::uintptr_t>(v.zeros) % 16, 0u);
                if (v.offsets != nullptr) EXPECT_EQ(reinterpret_cast<std::uintptr_t>(v.offsets) % 16, 0u);
                EXPECT_EQ(v.offsets == nullptr, c.format != kAU4);
                EXPECT_EQ(count_gemm_mismatches(g.w, r, v), 0);
              }
      }
  }
}

TEST(ShardGemm, RepackShardEqualsTheWholeAndRepackOfAPlainCopy) {
  auto rng = nibble_test_rng();
  const int64_t N = 40, K = 512;
  const int64_t ncuts[] = {0, 1, 7, 16, 17, 32, 39, 40};
  for (const Config& c : plain_configs()) {  // affine u4 included (offsets repacked like the scales)
    if (c.scale_type == kBF16) continue;
    const DType act = c.group == 64 ? kBF16 : kF16;
    SCOPED_TRACE(c.name() + " act " + dtype_name(act));
    HostPacked hp(N, K, c.params());
    quantize_random(rng, hp);
    HostGemm g;
    repack_whole(hp, act, g);
    std::vector<int64_t> kcuts;  // a few group boundaries of every kind (mid-atom for g32)
    for (int64_t cut : {0, 32, 64, 128, 192, 256, 320, 448, 512})
      if (c.group == kPC || cut % c.group == 0) kcuts.push_back(cut);
    for (std::size_t na = 0; na < std::size(ncuts); ++na)
      for (std::size_t nb = na + 1; nb < std::size(ncuts); ++nb)
        for (std::size_t ka = 0; ka < kcuts.size(); ++ka)
          for (std::size_t kb = ka + 1; kb < kcuts.size(); ++kb) {
            const ShardRange r{ncuts[na], ncuts[nb], kcuts[ka], kcuts[kb]};
            SCOPED_TRACE(range_name(r));
            HostGemm s;
            alloc_gemm(s, c.format, r.n(), r.k(), c.group, act);
            NIBBLE_CHECK(nibble::repack_shard_host(nibble::plain_view(hp.m), r, act, s.codes.data(), s.scales.data(),
                                                   s.zeros.data(), s.offsets.data(), &s.w));
            ASSERT_EQ(s.w.n, r.n());
            ASSERT_EQ(s.w.k, r.k());
            EXPECT_EQ(count_gemm_mismatches(g.w, r, s.w), 0);
            if (c.dq && !dq_rule(c.group, K, r)) continue;
            // the same bytes as repack_host of a plain copy of the shard
            HostPacked copy(r.n(), r.k(), c.params());
            NIBBLE_CHECK(nibble::copy_plain_shard_host(hp.m, r, copy.m));
            HostGemm t;
            alloc_gemm(t, c.format, r.n(), r.k(), c.group, act);
            NIBBLE_CHECK(nibble::repack_host(nibble::plain_view(copy.m), act, t.codes.data(), t.scales.data(),
                                             t.zeros.data(), t.offsets.data(), &t.w));
            EXPECT_TRUE(s.codes == t.codes) << "codes differ";
            EXPECT_TRUE(s.scales == t.scales) << "scales differ";
            EXPECT_TRUE(s.zeros == t.zeros) << "zero points differ";
            EXPECT_TRUE(s.offsets == t.offsets) << "affine offsets differ";
          }
  }
}

TEST(ShardGemm, ColumnShardsConcatenateAndRowShardPartialProductsSumToTheWhole) {
  auto rng = nibble_test_rng();
  const int64_t N = 64, K = 768, M = 3;
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> a(std::size_t(M * K));
  for (double& x : a) x = normal(rng);
  for (const Config& c : all_configs()) {
    if (c.scale_type == kBF16) continue;
    HostPacked hp(N, K, c.params());
    quantize_random(rng, hp);
    HostGemm g;
    repack_whole(hp, kF16, g);
    std::vector<double> whole_c(std::size_t(M * N), 0.0);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k)
          whole_c[std::size_t(m * N + n)] += a[std::size_t(m * K + k)] * gemm_value(g.w, n, k);
    for (nibble::ShardAxis axis : {nibble::ShardAxis::kColumn, nibble::ShardAxis::kRow})
      for (int world : {1, 2, 3, 4}) {
        nibble::ShardPlan plan;
        plan.axis = axis;
        plan.world_size = world;
        plan.n = N;
        plan.k = K;
        plan.params = c.params();
        const bool column = axis == nibble::ShardAxis::kColumn;
        SCOPED_TRACE(c.name() + (column ? " column" : " row") + " world " + std::to_string(world));
        const int64_t part = (column ? N : K) / world;
        const bool legal = column ? part % 16 == 0 : (part % 64 == 0 && (c.group == kPC || part % c.group == 0));
        const Status st = nibble::can_implement_shard_plan(plan);
        ASSERT_EQ(int(st), int(legal ? Status::kSuccess
                                     : (column || c.group == kPC || part % c.group == 0 ? Status::kErrorInvalidShape
                                                                                        : Status::kErrorGroupSize)))
            << nibble::to_string(st);
        if (!legal) continue;
        std::vector<double> sum(std::size_t(M * N), 0.0);  // row: partial sums in rank order
        std::vector<float> cat;                            // column: dequantized rows of every rank
        for (int rank = 0; rank < world; ++rank) {
          ShardRange r;
          NIBBLE_CHECK(nibble::shard_range(plan, rank, &r));
          HostGemm s;
          alloc_gemm(s, c.format, r.n(), r.k(), c.group, kF16);
          NIBBLE_CHECK(nibble::repack_shard_host(nibble::plain_view(hp.m), r, kF16, s.codes.data(), s.scales.data(),
                                                 s.zeros.data(), &s.w));
          if (column) {
            for (int64_t n = 0; n < r.n(); ++n)
              for (int64_t k = 0; k < K; ++k) cat.push_back(gemm_value(s.w, n, k));
          } else {
            for (int64_t m = 0; m < M; ++m)
              for (int64_t n = 0; n < N; ++n) {
                double p = 0;
                for (int64_t k = 0; k < r.k(); ++k) p += a[std::size_t(m * K + r.k0 + k)] * gemm_value(s.w, n, k);
                sum[std::size_t(m * N + n)] += p;
              }
          }
        }
        if (column) {
          int64_t bad = 0;
          for (int64_t n = 0; n < N; ++n)
            for (int64_t k = 0; k < K; ++k) {
              const float w = gemm_value(g.w, n, k);
              bad += std::memcmp(&w, &cat[std::size_t(n * K + k)], 4) != 0;
            }
          EXPECT_EQ(bad, 0) << "concatenated column shards differ from the whole";
        } else {
          double num = 0, den = 0;
          for (std::size_t i = 0; i < sum.size(); ++i) {
            num += (sum[i] - whole_c[i]) * (sum[i] - whole_c[i]);
            den += whole_c[i] * whole_c[i];
          }
          EXPECT_LE(std::sqrt(num / den), 1e-13) << "summed row-shard products differ from the whole product";
        }
      }
  }
}

// ================================== CPU: refusals and plans ===================================================

TEST(ShardRefusals, EveryIllegalSplitGetsItsStatus) {
  auto rng = nibble_test_rng();
  const QuantParams p{kU4, 64, kF16, false};
  HostPacked hp(40, 512, p);
  quantize_random(rng, hp);
  PackedMatrix v;
  // ranges: empty, reversed, out of bounds, negative
  for (const ShardRange& r : {ShardRange{0, 0, 0, 512}, ShardRange{5, 3, 0, 512}, ShardRange{0, 41, 0, 512},
                              ShardRange{-1, 4, 0, 512}, ShardRange{0, 40, 0, 576}, ShardRange{0, 40, 128, 128}})
    EXPECT_STATUS(Status::kErrorInvalidShape, nibble::plain_shard(hp.m, r, &v));
  EXPECT_STATUS(Status::kErrorGroupSize, nibble::plain_row_shard(hp.m, 32, 512, &v));         // mid-group
  EXPECT_STATUS(Status::kErrorGroupSize, nibble::plain_row_shard(hp.m, 0, 100, &v));          // mid-group
  EXPECT_STATUS(Status::kErrorUnsupportedFormat, nibble::plain_row_shard(hp.m, 0, 256, &v));  // no scale pitch
  EXPECT_STATUS(Status::kErrorNullPointer, nibble::plain_column_shard(hp.m, 0, 8, nullptr));
  PackedMatrix bad = hp.m;
  bad.scales = nullptr;
  EXPECT_STATUS(Status::kErrorNullPointer, nibble::plain_column_shard(bad, 0, 8, &v));
  bad = hp.m;
  bad.group_size = 48;
  EXPECT_STATUS(Status::kErrorGroupSize, nibble::plain_column_shard(bad, 0, 8, &v));

  // per-channel: any even K cut, odd ones refused
  HostPacked pc(4, 200, QuantParams{kS4, kPC, kF16, false});
  quantize_random(rng, pc);
  EXPECT_STATUS(Status::kSuccess, nibble::plain_row_shard(pc.m, 2, 198, &v));
  EXPECT_STATUS(Status::kErrorInvalidShape, nibble::plain_row_shard(pc.m, 3, 198, &v));

  // copies: destination shape and parameters must match the shard
  HostPacked dst(40, 256, p);
  EXPECT_STATUS(Status::kSuccess, nibble::copy_plain_shard_host(hp.m, nibble::row_shard_range(40, 256, 512), dst.m));
  EXPECT_STATUS(Status::kErrorInvalidShape,
                nibble::copy_plain_shard_host(hp.m, nibble::row_shard_range(40, 0, 128), dst.m));
  EXPECT_STATUS(Status::kErrorGroupSize,
                nibble::copy_plain_shard_host(hp.m, nibble::row_shard_range(40, 32, 288), dst.m));
  HostPacked other(40, 256, QuantParams{kS4, 64, kF16, false});
  EXPECT_STATUS(Status::kErrorInvalidArgument,
                nibble::copy_plain_shard_host(hp.m, nibble::row_shard_range(40, 256, 512), other.m));
  // double quant: a column shard whose scales do not start a 256-block
  HostPacked dq(40, 512, QuantParams{kNf4, 64, kF32, true});  // G = 8: n0 must be a multiple of 32
  quantize_random(rng, dq);
  EXPECT_STATUS(Status::kSuccess, nibble::plain_column_shard(dq.m, 32, 40, &v));
  EXPECT_STATUS(Status::kErrorGroupSize, nibble::plain_column_shard(dq.m, 16, 40, &v));

  // GEMM layout
  HostGemm g;
  repack_whole(hp, kF16, g);
  GemmWeights w;
  EXPECT_STATUS(Status::kErrorInvalidShape, nibble::gemm_column_shard(g.w, 8, 40, &w));  // not an atom row
  EXPECT_STATUS(Status::kErrorInvalidShape, nibble::gemm_column_shard(g.w, 0, 24, &w));
  EXPECT_STATUS(Status::kErrorUnsupportedFormat, nibble::gemm_column_shard(g.w, 16, 40, &w));  // 8 scale rows
  EXPECT_STATUS(Status::kErrorGroupSize, nibble::gemm_row_shard(g.w, 32, 512, &w));
  EXPECT_STATUS(Status::kErrorUnsupportedFormat, nibble::gemm_row_shard(g.w, 0, 256, &w));  // 3 atom rows
  EXPECT_STATUS(Status::kErrorNullPointer, nibble::gemm_row_shard(g.w, 0, 512, nullptr));
  GemmWeights gb = g.w;
  gb.zeros = nullptr;
  EXPECT_STATUS(Status::kErrorNullPointer, nibble::gemm_column_shard(gb, 0, 16, &w));
  gb = g.w;
  gb.scale_type = kF32;
  EXPECT_STATUS(Status::kErrorUnsupportedFormat, nibble::gemm_column_shard(gb, 0, 16, &w));
  HostGemm gpc;
  repack_whole(pc, kF16, gpc);  // per-channel, N = 4 (one atom row), K = 200
  EXPECT_STATUS(Status::kSuccess, nibble::gemm_row_shard(gpc.w, 64, 200, &w));
  EXPECT_STATUS(Status::kErrorInvalidShape, nibble::gemm_row_shard(gpc.w, 2, 200, &w));  // not an atom

  // repack_shard: the checks of repack, then the range
  HostGemm s;
  alloc_gemm(s, kU4, 40, 256, 64, kF16);
  const nibble::PlainWeights pw = nibble::plain_view(hp.m);
  const ShardRange r = nibble::row_shard_range(40, 256, 512);
  EXPECT_STATUS(Status::kSuccess,
                nibble::repack_shard_host(pw, r, kF16, s.codes.data(), s.scales.data(), s.zeros.data(), &s.w));
  EXPECT_STATUS(Status::kErrorUnsupportedFormat,
                nibble::repack_shard_host(pw, r, kF32, s.codes.data(), s.scales.data(), s.zeros.data(), &s.w));
  EXPECT_STATUS(Status::kErrorNullPointer,
                nibble::repack_shard_host(pw, r, kF16, s.codes.data(), s.scales.data(), nullptr, &s.w));
  EXPECT_STATUS(Status::kErrorNullPointer,
                nibble::repack_shard_host(pw, r, kF16, s.codes.data(), s.scales.data(), s.zeros.data(), nullptr));
  EXPECT_STATUS(Status::kErrorMisalignedPointer,
                nibble::repack_shard_host(pw, r, kF16, s.codes.data() + 4, s.scales.data(), s.zeros.data(), &s.w));
  EXPECT_STATUS(Status::kErrorGroupSize,
                nibble::repack_shard_host(pw, nibble::row_shard_range(40, 100, 512), kF16, s.codes.data(),
                                          s.scales.data(), s.zeros.data(), &s.w));
  EXPECT_STATUS(Status::kErrorInvalidShape,
                nibble::repack_shard_host(pw, ShardRange{0, 41, 0, 512}, kF16, s.codes.data(), s.scales.data(),
                                          s.zeros.data(), &s.w));
}

TEST(ShardPlan, CanImplementNamesWhatIsWrong) {
  using nibble::ShardAxis;
  using nibble::ShardTarget;
  struct Case {
    ShardAxis axis;
    int world;
    int64_t n, k;
    QuantParams p;
    ShardTarget target;
    Status want;
  };
  const QuantParams s4g128{kS4, 128, kF16, false}, nf4dq{kNf4, 64, kF32, true}, pc{kS4, kPC, kF16, false};
  const Case cases[] = {
      // Llama-style shapes
      {ShardAxis::kColumn, 2, 14336, 4096, s4g128, ShardTarget::kGemm, Status::kSuccess},
      {ShardAxis::kRow, 2, 4096, 14336, s4g128, ShardTarget::kGemm, Status::kSuccess},
      {ShardAxis::kRow, 32, 4096, 14336, s4g128, ShardTarget::kGemm, Status::kErrorGroupSize},      // 448 % 128
      {ShardAxis::kRow, 8, 4096, 14336, s4g128, ShardTarget::kGemm, Status::kSuccess},              // 1792
      {ShardAxis::kRow, 7, 4096, 14336, s4g128, ShardTarget::kGemm, Status::kSuccess},              // 2048
      {ShardAxis::kColumn, 3, 4096, 4096, s4g128, ShardTarget::kGemm, Status::kErrorInvalidShape},  // 4096 % 3
      {ShardAxis::kColumn, 2, 48, 4096, s4g128, ShardTarget::kGemm, Status::kErrorInvalidShape},    // 24 rows
      {ShardAxis::kColumn, 2, 48, 4096, s4g128, ShardTarget::kPlain, Status::kSuccess},             // any rows
      {ShardAxis::kRow, 2, 64, 192, QuantParams{kS4, 32, kF16, false}, ShardTarget::kGemm,
       Status::kErrorInvalidShape},  // 96: groups, not atoms
      {ShardAxis::kRow, 2, 64, 192, QuantParams{kS4, 32, kF16, false}, ShardTarget::kPlain, Status::kSuccess},
      {ShardAxis::kRow, 2, 64, 200, pc, ShardTarget::kGemm, Status::kErrorInvalidShape},  // 100: not an atom
      {ShardAxis::kRow, 2, 64, 256, pc, ShardTarget::kGemm, Status::kSuccess},
      {ShardAxis::kRow, 2, 64, 196, pc, ShardTarget::kPlain, Status::kSuccess},            // 98: even
      {ShardAxis::kRow, 4, 64, 200, pc, ShardTarget::kPlain, Status::kSuccess},            // 50: even
      {ShardAxis::kRow, 2, 64, 202, pc, ShardTarget::kPlain, Status::kErrorInvalidShape},  // 101: odd
      // double quant: G = 64 per row at K = 4096
      {ShardAxis::kColumn, 2, 8, 4096, nf4dq, ShardTarget::kPlain, Status::kSuccess},           // 4 rows x 64 = 256
      {ShardAxis::kColumn, 4, 8, 4096, nf4dq, ShardTarget::kPlain, Status::kErrorGroupSize},    // 128 scales
      {ShardAxis::kColumn, 4, 8, 4096, nf4dq, ShardTarget::kGemm, Status::kErrorInvalidShape},  // 2 rows
      {ShardAxis::kRow, 2, 4096, 4096, nf4dq, ShardTarget::kPlain, Status::kErrorGroupSize},    // 32 groups
      {ShardAxis::kRow, 2, 4096, 4096, nf4dq, ShardTarget::kGemm, Status::kSuccess},            // repack expands dq
      {ShardAxis::kRow, 2, 4096, 65536, nf4dq, ShardTarget::kPlain, Status::kSuccess},          // 512 groups per shard
      // arguments
      {ShardAxis::kColumn, 0, 4096, 4096, s4g128, ShardTarget::kGemm, Status::kErrorInvalidArgument},
      {ShardAxis(7), 2, 4096, 4096, s4g128, ShardTarget::kGemm, Status::kErrorInvalidArgument},
      {ShardAxis::kColumn, 2, 4096, 4096, s4g128, ShardTarget(9), Status::kErrorInvalidArgument},
      {ShardAxis::kColumn, 2, 4096, 4000, s4g128, ShardTarget::kGemm, Status::kErrorGroupSize},  // K % 128
      {ShardAxis::kColumn, 2, 0, 4096, s4g128, ShardTarget::kGemm, Status::kErrorInvalidShape},
      {ShardAxis::kColumn, 2, 4096, 4096, QuantParams{kS4, 48, kF16, false}, ShardTarget::kGemm,
       Status::kErrorGroupSize},
  };
  int i = 0;
  for (const Case& c : cases) {
    nibble::ShardPlan plan;
    plan.axis = c.axis;
    plan.world_size = c.world;
    plan.n = c.n;
    plan.k = c.k;
    plan.params = c.p;
    plan.target = c.target;
    SCOPED_TRACE("case " + std::to_string(i++));
    EXPECT_STATUS(c.want, nibble::can_implement_shard_plan(plan));
    ShardRange r;
    if (c.want == Status::kSuccess) {
      EXPECT_STATUS(Status::kSuccess, nibble::shard_range(plan, c.world - 1, &r));
      EXPECT_EQ(c.axis == ShardAxis::kColumn ? r.n1 : r.k1, c.axis == ShardAxis::kColumn ? c.n : c.k);
      EXPECT_STATUS(Status::kErrorInvalidArgument, nibble::shard_range(plan, c.world, &r));
      EXPECT_STATUS(Status::kErrorInvalidArgument, nibble::shard_range(plan, -1, &r));
      EXPECT_STATUS(Status::kErrorNullPointer, nibble::shard_range(plan, 0, nullptr));
    } else {
      EXPECT_STATUS(c.want, nibble::shard_range(plan, 0, &r));
    }
  }
}

TEST(ShardCopy, CarvedCopyAtAnotherAddressGivesTheSameShards) {
  // What the GPU case does with its device whole matrix, on the CPU: the bytes of hp copied to another 256-byte
  // aligned buffer and carved there give the same buffer offsets as hp.m (carving depends only on the
  // shape, not on the base address), and repack_shard_host / copy_plain_shard_host from that carve give the
  // bytes they give from hp.m; every 2-D copy of copy_plain_shard is legal for cudaMemcpy2D (width <= pitches).
  auto rng = nibble_test_rng();
  const int64_t N = 72, K = 1024;
  for (const Config& c : all_configs()) {
    SCOPED_TRACE(c.name());
    HostPacked hp(N, K, c.params());
    quantize_random(rng, hp);
    std::vector<uint8_t> other(hp.total + 3 * nibble::kPackedAlignment);
    uint8_t* base = other.data() + nibble::kPackedAlignment -
                    reinterpret_cast<std::uintptr_t>(other.data()) % nibble::kPackedAlignment +
                    nibble::kPackedAlignment;  // 256-aligned, a different address modulo 512
    std::memcpy(base, hp.storage.data() + hp.offset, hp.total);
    PackedMatrix dm;
    NIBBLE_CHECK(nibble::carve_packed_matrix(N, K, c.params(), base, hp.total, &dm));
    const uint8_t* hb = hp.storage.data() + hp.offset;
    auto off = [](const void* p, const uint8_t* b) { return p == nullptr ? -1 : static_cast<const uint8_t*>(p) - b; };
    EXPECT_EQ(off(dm.codes, base), off(hp.m.codes, hb));
    EXPECT_EQ(off(dm.scales, base), off(hp.m.scales, hb));
    EXPECT_EQ(off(dm.zeros, base), off(hp.m.zeros, hb));
    EXPECT_EQ(off(dm.dq.codes, base), off(hp.m.dq.codes, hb));
    EXPECT_EQ(off(dm.dq.absmax2, base), off(hp.m.dq.absmax2, hb));
    EXPECT_EQ(off(dm.dq.offset, base), off(hp.m.dq.offset, hb));
    EXPECT_EQ(dm.ld_codes, hp.m.ld_codes);
    EXPECT_EQ(dm.ld_codes, K / 2);
    const int64_t kc = c.group == kPC ? 512 : std::min<int64_t>(4 * c.group, 512);
    for (const ShardRange& r : {ShardRange{0, N, kc, K}, ShardRange{16, 48, 0, kc}, ShardRange{1, 70, kc, K},
                                nibble::column_shard_range(32, 72, K)}) {
      SCOPED_TRACE(range_name(r));
      for (DType act : {kF16, kBF16}) {
        HostGemm a, b;
        alloc_gemm(a, c.format, r.n(), r.k(), c.group, act);
        alloc_gemm(b, c.format, r.n(), r.k(), c.group, act);
        NIBBLE_CHECK(nibble::repack_shard_host(nibble::plain_view(hp.m), r, act, a.codes.data(), a.scales.data(),
                                               a.zeros.data(), &a.w));
        NIBBLE_CHECK(nibble::repack_shard_host(nibble::plain_view(dm), r, act, b.codes.data(), b.scales.data(),
                                               b.zeros.data(), &b.w));
        EXPECT_TRUE(a.codes == b.codes) << "codes differ";
        EXPECT_TRUE(a.scales == b.scales) << "scales differ";
        EXPECT_TRUE(a.zeros == b.zeros) << "zero points differ";
      }
      if (c.dq && !dq_rule(c.group, K, r)) continue;
      HostPacked x(r.n(), r.k(), c.params()), y(r.n(), r.k(), c.params());
      NIBBLE_CHECK(nibble::copy_plain_shard_host(hp.m, r, x.m));
      NIBBLE_CHECK(nibble::detail::copy_plain_shard_with(
          dm, r, y.m, [](void* d, int64_t dpitch, const void* s, int64_t spitch, int64_t width, int64_t rows) {
            EXPECT_GT(width, 0);
            EXPECT_GE(rows, 1);
            EXPECT_LE(width, dpitch);
            EXPECT_LE(width, spitch);
            for (int64_t i = 0; i < rows; ++i)
              std::memcpy(static_cast<uint8_t*>(d) + i * dpitch, static_cast<const uint8_t*>(s) + i * spitch,
                          std::size_t(width));
            return Status::kSuccess;
          }));
      EXPECT_EQ(std::memcmp(x.storage.data() + x.offset, y.storage.data() + y.offset, x.total), 0);
    }
  }
}

// ================================== GPU: device paths ==========================================================

TEST(ShardDevice, RepackShardAndCopyPlainShardMatchTheHost) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  const int64_t N = 72, K = 1024;
  for (const Config& c : all_configs()) {
    SCOPED_TRACE(c.name());
    HostPacked hp(N, K, c.params());
    quantize_random(rng, hp);
    // `stream` is non-blocking: it does not wait for the legacy default stream, on which the upload below (a
    // pageable H2D copy may return before its DMA lands) and a plain cudaMemset (asynchronous to the host) run.
    // So every fill goes on `stream` (cudaMemsetAsync) and the upload is followed by a device sync; without that
    // the 0xCD / 0xAB fills can race the kernels and copies on `stream` (the likely cause of the H200 failures at
    // e80ff64; the CPU case CarvedCopyAtAnotherAddressGivesTheSameShards rules out the views and offsets).
    DevBuf dwhole(hp.total);
    dwhole.upload(hp.storage.data() + hp.offset, hp.total);
    CUDA_CHECK(cudaDeviceSynchronize());
    PackedMatrix dm;
    NIBBLE_CHECK(nibble::carve_packed_matrix(N, K, c.params(), dwhole.get(), hp.total, &dm));
    Stream stream;
    const int64_t kc = c.group == kPC ? 512 : std::min<int64_t>(4 * c.group, 512);
    for (const ShardRange& r : {ShardRange{0, N, kc, K}, ShardRange{16, 48, 0, kc}, ShardRange{1, 70, kc, K},
                                nibble::column_shard_range(32, 72, K)}) {
      SCOPED_TRACE(range_name(r));
      for (DType act : {kF16, kBF16}) {
        HostGemm h;
        alloc_gemm(h, c.format, r.n(), r.k(), c.group, act);
        NIBBLE_CHECK(nibble::repack_shard_host(nibble::plain_view(hp.m), r, act, h.codes.data(), h.scales.data(),
                                               h.zeros.data(), &h.w));
        DevBuf dc(h.codes.size()), ds(h.scales.size()), dz(h.zeros.size());
        CUDA_CHECK(cudaMemsetAsync(dc.get(), 0xCD, dc.size(), stream.s));
        CUDA_CHECK(cudaMemsetAsync(ds.get(), 0xCD, ds.size(), stream.s));
        CUDA_CHECK(cudaMemsetAsync(dz.get(), 0xCD, dz.size(), stream.s));
        GemmWeights dv;
        NIBBLE_CHECK(nibble::repack_shard(nibble::plain_view(dm), r, act, dc.get(), ds.get(), dz.get(), &dv, stream.s));
        CUDA_CHECK(cudaStreamSynchronize(stream.s));
        EXPECT_TRUE(dc.download<uint8_t>() == h.codes) << "codes differ";
        EXPECT_TRUE(ds.download<uint8_t>() == h.scales) << "scales differ";
        EXPECT_TRUE(dz.download<uint8_t>() == h.zeros) << "zero points differ";
        EXPECT_EQ(dv.n, r.n());
        EXPECT_EQ(dv.k, r.k());
      }
      if (c.dq && !dq_rule(c.group, K, r)) continue;
      HostPacked hcopy(r.n(), r.k(), c.params()), dback(r.n(), r.k(), c.params());
      NIBBLE_CHECK(nibble::copy_plain_shard_host(hp.m, r, hcopy.m));
      DevBuf dcopy(hcopy.total);
      CUDA_CHECK(cudaMemsetAsync(dcopy.get(), 0xAB, hcopy.total, stream.s));
      PackedMatrix dcm;
      NIBBLE_CHECK(nibble::carve_packed_matrix(r.n(), r.k(), c.params(), dcopy.get(), hcopy.total, &dcm));
      NIBBLE_CHECK(nibble::copy_plain_shard(dm, r, dcm, stream.s));
      CUDA_CHECK(cudaStreamSynchronize(stream.s));
      const std::vector<uint8_t> got = dcopy.download<uint8_t>();
      EXPECT_EQ(std::memcmp(got.data(), hcopy.storage.data() + hcopy.offset, hcopy.total), 0)
          << "device copy differs from the host copy";
    }
  }
}

}  // namespace
