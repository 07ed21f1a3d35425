// tests/import/test_import.cu — the checkpoint importers (include/nibble/import/): hand-written 8x8 cases
// whose weights are written out literally, fixtures packed by fixtures/make_fixtures.py (HQQ:
// fixtures/make_hqq_fixture.py) the way each project's writer does (the expected weights are that project's reader's),
// act-order, every refusal, and the GPU paths (GPTQ, AWQ, compressed-tensors, bitsandbytes, GGUF, HQQ imports,
// permute_columns) against the CPU ones, bit for bit, with their refusals (the same Status as the CPU entries) and
// data-error flags.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <nibble/gemm/gemm.cuh>  // can_implement only (CPU): no gemm::run, so no GEMM kernel is compiled here
#include <nibble/import/import.cuh>
#include <nibble/layout/repack.cuh>
#include <nibble/quant/quantize.cuh>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/device_buffer.hpp"
#include "common/gpu.hpp"
#include "common/random.hpp"

using namespace nibble;

namespace {

// ---- buffers and helpers ------------------------------------------------------------------------------

/// Host PackedMatrix over a 256-byte aligned buffer, poisoned with 0xA5 so unwritten bytes show.
struct HostPacked {
  std::vector<std::uint8_t> raw;
  PackedMatrix m;
  Status status = Status::kSuccess;
  HostPacked(std::int64_t n, std::int64_t k, const QuantParams& p) {
    const PackedBytes b = packed_bytes(n, k, p);
    status = b.status;
    if (status != Status::kSuccess) return;
    raw.assign(b.total + kPackedAlignment, 0xA5);
    auto* base = reinterpret_cast<std::uint8_t*>(
        round_up(std::int64_t(reinterpret_cast<std::uintptr_t>(raw.data())), kPackedAlignment));
    status = carve_packed_matrix(n, k, p, base, b.total, &m);
  }
};

/// Dequantized weights of a host PackedMatrix, in fp32 (nibble's own CPU dequantization).
std::vector<float> dequant(const PackedMatrix& m) {
  std::vector<float> w(std::size_t(m.n * m.k), -12345.0f);
  EXPECT_EQ(dequantize_cpu<float>(m, w.data(), m.k), Status::kSuccess);
  return w;
}

/// Asserts w[n, p] == expected[n, perm[p]] in float64 (perm null: identity), for every element.
void expect_weights(const std::vector<float>& w, const float* expected, std::int64_t n, std::int64_t k,
                    const std::int32_t* perm = nullptr) {
  int bad = 0;
  for (std::int64_t r = 0; r < n; ++r)
    for (std::int64_t p = 0; p < k; ++p) {
      const double got = w[std::size_t(r * k + p)];
      const double want = expected[r * k + (perm ? perm[p] : p)];
      if (got != want && ++bad <= 5)
        ADD_FAILURE() << "weight (" << r << ", " << p << "): got " << got << ", want " << want;
    }
  EXPECT_EQ(bad, 0);
}

std::uint16_t f16_bits(float f) {
  const __half h = __float2half_rn(f);
  std::uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}

// ---- fixtures -----------------------------------------------------------------------------------------

/// One fixture file of make_fixtures.py: named arrays of int32 / uint8 / uint16 / float32.
struct Fixture {
  struct Array {
    std::uint32_t kind = 0;
    std::vector<std::uint8_t> bytes;  // 4-byte aligned storage via vector<uint32_t> below
    std::vector<std::uint32_t> storage;
    std::uint64_t count = 0;
  };
  std::map<std::string, Array> arrays;
  bool ok = false;

  explicit Fixture(const std::string& name) {
    const std::string path = std::string(NIBBLE_IMPORT_FIXTURE_DIR) + "/" + name + ".bin";
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) return;
    for (;;) {
      std::uint32_t len = 0;
      if (std::fread(&len, 4, 1, f) != 1) break;
      std::string key(len, '\0');
      Array a;
      if (std::fread(&key[0], 1, len, f) != len || std::fread(&a.kind, 4, 1, f) != 1 ||
          std::fread(&a.count, 8, 1, f) != 1)
        break;
      const std::size_t elem = a.kind == 1 ? 1 : a.kind == 2 ? 2 : 4;
      a.storage.assign((a.count * elem + 3) / 4 + 1, 0);
      if (std::fread(a.storage.data(), elem, a.count, f) != a.count) break;
      arrays[key] = std::move(a);
    }
    std::fclose(f);
    ok = !arrays.empty();
  }
  const void* get(const std::string& key) const {
    auto it = arrays.find(key);
    return it == arrays.end() ? nullptr : it->second.storage.data();
  }
  std::uint64_t count(const std::string& key) const {
    auto it = arrays.find(key);
    return it == arrays.end() ? 0 : it->second.count;
  }
  int meta(const std::string& key) const {
    const void* p = get("meta_" + key);
    return p ? *static_cast<const std::int32_t*>(p) : -1;
  }
  const std::int32_t* i32(const std::string& key) const { return static_cast<const std::int32_t*>(get(key)); }
  const float* f32(const std::string& key) const { return static_cast<const float*>(get(key)); }
};

#define LOAD_FIXTURE(var, name)                                                         \
  Fixture var(name);                                                                    \
  ASSERT_TRUE(var.ok) << "missing fixture " << NIBBLE_IMPORT_FIXTURE_DIR << "/" << name \
                      << ".bin (tests/import/fixtures/make_fixtures.py makes it)"

/// The permutation std::stable_sort gives for g_idx: an oracle independent of act_order_permutation.
std::vector<std::int32_t> stable_sort_perm(const std::int32_t* g_idx, std::int64_t k) {
  std::vector<std::int32_t> p(static_cast<std::size_t>(k));
  std::iota(p.begin(), p.end(), 0);
  std::stable_sort(p.begin(), p.end(), [&](int a, int b) { return g_idx[a] < g_idx[b]; });
  return p;
}

// ---- hand-written 8x8 cases ---------------------------------------------------------------------------

// GPTQ v1 sym, K = N = 8, one group (group_size -1). Column n of qweight is one word (k = nibble index).
TEST(Import_gptq_hand, V1Sym8x8) {
  const std::int32_t qweight[8] = {0x76543210,       int(0xFEDCBA98u), 0x00000000,       int(0x88888888u),
                                   int(0xF0F0F0F0u), 0x01234567,       int(0x89ABCDEFu), 0x7F7F7F7F};
  const std::int32_t qzeros[1] = {0x77777777};
  std::uint16_t scales[8];
  const float s[8] = {1.0f, 0.5f, -2.0f, 3.0f, 0.25f, 1.0f, 1.0f, 0.125f};
  for (int i = 0; i < 8; ++i) scales[i] = f16_bits(s[i]);
  const float expected[8][8] = {
      {-8, -7, -6, -5, -4, -3, -2, -1},                              // q = 0..7, z = 8
      {0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5},                              // q = 8..15, s = 0.5
      {16, 16, 16, 16, 16, 16, 16, 16},                              // q = 0, s = -2
      {0, 0, 0, 0, 0, 0, 0, 0},                                      // q = 8
      {-2, 1.75, -2, 1.75, -2, 1.75, -2, 1.75},                      // q = 0, 15 alternating, s = 0.25
      {-1, -2, -3, -4, -5, -6, -7, -8},                              // q = 7..0
      {7, 6, 5, 4, 3, 2, 1, 0},                                      // q = 15..8
      {0.875, -0.125, 0.875, -0.125, 0.875, -0.125, 0.875, -0.125},  // q = 15, 7; s = 1/8
  };
  GptqConfig cfg;
  cfg.group_size = kCheckpointPerChannel;
  GptqTensors t;
  t.k = 8;
  t.n = 8;
  t.qweight = qweight;
  t.qzeros = qzeros;
  t.scales = scales;
  QuantParams p;
  ASSERT_EQ(gptq_import_params(cfg, t, &p), Status::kSuccess);
  EXPECT_EQ(p.format, Format::kS4);
  EXPECT_EQ(p.group_size, kPerChannel);
  HostPacked out(8, 8, p);
  ASSERT_EQ(out.status, Status::kSuccess);
  ASSERT_EQ(import_gptq_host(cfg, t, out.m, nullptr), Status::kSuccess);
  expect_weights(dequant(out.m), &expected[0][0], 8, 8);
  // The first row's codes literally: s4 of -8..-1 is 0x8..0xF, even k in the low nibble.
  EXPECT_EQ(out.m.codes[0], 0x98);
  EXPECT_EQ(out.m.codes[3], 0xFE);
  // kDetect reads the same words and decides v1; the v2 label contradicts them.
  cfg.checkpoint_format = GptqCheckpointFormat::kDetect;
  GptqCheckpointFormat f{};
  ASSERT_EQ(gptq_resolve_format_host(cfg, t, &f), Status::kSuccess);
  EXPECT_EQ(f, GptqCheckpointFormat::kV1);
  cfg.checkpoint_format = GptqCheckpointFormat::kV2;
  EXPECT_EQ(import_gptq_host(cfg, t, out.m, nullptr), Status::kErrorInvalidArgument);
}

// GPTQ asym: v1 stores z - 1, v2 stores z. Column n's zero is nibble n of the single qzeros word.
TEST(Import_gptq_hand, Asym8x8V1AndV2) {
  std::int32_t qweight[8];
  for (int i = 0; i < 8; ++i) qweight[i] = 0x76543210;  // q = k
  std::uint16_t scales[8];
  for (int i = 0; i < 8; ++i) scales[i] = f16_bits(1.0f);
  // Zeros z = 1, 2, ..., 8 for columns 0..7.
  const float expected[8][8] = {{-1, 0, 1, 2, 3, 4, 5, 6},       {-2, -1, 0, 1, 2, 3, 4, 5},
                                {-3, -2, -1, 0, 1, 2, 3, 4},     {-4, -3, -2, -1, 0, 1, 2, 3},
                                {-5, -4, -3, -2, -1, 0, 1, 2},   {-6, -5, -4, -3, -2, -1, 0, 1},
                                {-7, -6, -5, -4, -3, -2, -1, 0}, {-8, -7, -6, -5, -4, -3, -2, -1}};
  for (const bool v1 : {true, false}) {
    const std::int32_t qzeros[1] = {v1 ? 0x76543210 : int(0x87654321u)};
    GptqConfig cfg;
    cfg.group_size = kCheckpointPerChannel;
    cfg.sym = false;
    cfg.checkpoint_format = v1 ? GptqCheckpointFormat::kV1 : GptqCheckpointFormat::kV2;
    GptqTensors t;
    t.k = 8;
    t.n = 8;
    t.qweight = qweight;
    t.qzeros = qzeros;
    t.scales = scales;
    QuantParams p;
    ASSERT_EQ(gptq_import_params(cfg, t, &p), Status::kSuccess);
    EXPECT_EQ(p.format, Format::kU4);
    HostPacked out(8, 8, p);
    ASSERT_EQ(import_gptq_host(cfg, t, out.m, nullptr), Status::kSuccess) << v1;
    expect_weights(dequant(out.m), &expected[0][0], 8, 8);
    EXPECT_EQ(out.m.zeros[0], 1);
    EXPECT_EQ(out.m.zeros[7], 8);
  }
}

// AWQ: one word per row k; nibble i is column kAwqOrder[i]. Word 0x76543210 puts value i in column
// order[i]: columns 0..7 get 0, 4, 1, 5, 2, 6, 3, 7.
TEST(Import_awq_hand, Order8x8) {
  std::int32_t qweight[8];
  for (int i = 0; i < 8; ++i) qweight[i] = 0x76543210;
  const std::int32_t qzeros[1] = {0x11111111};  // z = 1 everywhere
  std::uint16_t scales[8];
  for (int i = 0; i < 8; ++i) scales[i] = f16_bits(i == 3 ? -0.5f : 1.0f);
  const float col_value[8] = {-1, 3, 0, -2, 1, 5, 2, 6};  // (q - 1) * s; column 3: (5 - 1) * -0.5
  float expected[8][8];
  for (int n = 0; n < 8; ++n)
    for (int k = 0; k < 8; ++k) expected[n][k] = col_value[n];
  AwqConfig cfg;
  cfg.group_size = kCheckpointPerChannel;
  AwqTensors t;
  t.k = 8;
  t.n = 8;
  t.qweight = qweight;
  t.qzeros = qzeros;
  t.scales = scales;
  QuantParams p;
  ASSERT_EQ(awq_import_params(cfg, t, &p), Status::kSuccess);
  HostPacked out(8, 8, p);
  ASSERT_EQ(import_awq_host(cfg, t, out.m), Status::kSuccess);
  expect_weights(dequant(out.m), &expected[0][0], 8, 8);
}

// compressed-tensors, symmetric, channel strategy: row n of weight_packed is one word (K = 8), q = u - 8.
TEST(Import_ct_hand, SymChannel8x8) {
  const std::int32_t packed[8] = {0x76543210,       int(0xFEDCBA98u), int(0x88888888u), 0x00000000,
                                  int(0xF0F0F0F0u), 0x01234567,       int(0x89ABCDEFu), 0x7F7F7F7F};
  std::uint16_t scales[8];
  for (int i = 0; i < 8; ++i) scales[i] = 0x3F80;  // bf16 1.0
  const float expected[8][8] = {{-8, -7, -6, -5, -4, -3, -2, -1}, {0, 1, 2, 3, 4, 5, 6, 7},
                                {0, 0, 0, 0, 0, 0, 0, 0},         {-8, -8, -8, -8, -8, -8, -8, -8},
                                {-8, 7, -8, 7, -8, 7, -8, 7},     {-1, -2, -3, -4, -5, -6, -7, -8},
                                {7, 6, 5, 4, 3, 2, 1, 0},         {7, -1, 7, -1, 7, -1, 7, -1}};
  CtConfig cfg;
  cfg.strategy = CtStrategy::kChannel;
  CtTensors t;
  t.n = 8;
  t.k = 8;
  t.weight_packed = packed;
  t.weight_scale = scales;
  QuantParams p;
  ASSERT_EQ(compressed_tensors_import_params(cfg, t, &p), Status::kSuccess);
  EXPECT_EQ(p.format, Format::kS4);
  HostPacked out(8, 8, p);
  ASSERT_EQ(import_compressed_tensors_host(cfg, t, out.m, nullptr), Status::kSuccess);
  expect_weights(dequant(out.m), &expected[0][0], 8, 8);
}

// bitsandbytes NF4, one row of 8 (blocksize 8 == K: per-channel), absmax 2. Byte 0x0F: element 0 is
// code 0 (high nibble) = -1, element 1 is code 15 = +1.
TEST(Import_bnb_hand, Nf4Row) {
  const std::uint8_t weight[4] = {0x0F, 0x7F, 0xF7, 0x80};
  const float absmax[1] = {2.0f};
  const float expected[8] = {-2.0f, 2.0f, 0.0f, 2.0f, 2.0f, 0.0f, 2.0f * 0.07958029955625534f, -2.0f};
  BnbQuantState st;
  st.blocksize = 8;
  st.n = 1;
  st.k = 8;
  BnbTensors t;
  t.weight = weight;
  t.absmax = absmax;
  static const Codebook16 kNf4Book = nf4_codebook();  // (a named object: .v of a temporary would dangle)
  t.quant_map = kNf4Book.v;
  QuantParams p;
  ASSERT_EQ(bnb_import_params(st, t, &p), Status::kSuccess);
  HostPacked out(1, 8, p);
  ASSERT_EQ(import_bnb_host(st, t, out.m), Status::kSuccess);
  expect_weights(dequant(out.m), expected, 1, 8);
  EXPECT_EQ(out.m.codes[0], 0xF0);  // swapped into nibble's order
}

// GGUF Q4_0, one block: d = 1 (fp16 0x3C00), qs[j] = j | (15 - j) << 4: element j = j - 8 (j < 16),
// element j + 16 = 7 - j.
TEST(Import_gguf_hand, OneBlock) {
  std::uint8_t block[18] = {0x00, 0x3C};
  for (int j = 0; j < 16; ++j) block[2 + j] = std::uint8_t(j | ((15 - j) << 4));
  const float expected[32] = {-8, -7, -6, -5, -4, -3, -2, -1, 0,  1,  2,  3,  4,  5,  6,  7,
                              7,  6,  5,  4,  3,  2,  1,  0,  -1, -2, -3, -4, -5, -6, -7, -8};
  QuantParams p;
  ASSERT_EQ(gguf_q4_0_import_params(1, 32, &p), Status::kSuccess);
  HostPacked out(1, 32, p);
  ASSERT_EQ(import_gguf_q4_0_host(block, sizeof block, 1, 32, out.m), Status::kSuccess);
  expect_weights(dequant(out.m), expected, 1, 32);
  EXPECT_EQ(import_gguf_q4_0_host(block, sizeof block - 1, 1, 32, out.m), Status::kErrorWorkspaceTooSmall);
}

// GGUF Q4_1, one block: d = 0.5 (fp16 0x3800), m = -1 (0xBC00), qs[j] = j | (15 - j) << 4: element j = j / 2 - 1
// (j < 16), element j + 16 = (15 - j) / 2 - 1.
TEST(Import_gguf_hand, Q4_1OneBlock) {
  std::uint8_t block[20] = {0x00, 0x38, 0x00, 0xBC};
  for (int j = 0; j < 16; ++j) block[4 + j] = std::uint8_t(j | ((15 - j) << 4));
  const float expected[32] = {-1,  -0.5, 0,   0.5, 1,   1.5, 2,   2.5, 3,   3.5, 4,   4.5, 5,   5.5, 6,    6.5,
                              6.5, 6,    5.5, 5,   4.5, 4,   3.5, 3,   2.5, 2,   1.5, 1,   0.5, 0,   -0.5, -1};
  QuantParams p;
  ASSERT_EQ(gguf_q4_1_import_params(1, 32, &p), Status::kSuccess);
  EXPECT_EQ(p.format, Format::kAffineU4);
  EXPECT_EQ(p.scale_type, DType::kF16);
  HostPacked out(1, 32, p);
  ASSERT_EQ(import_gguf_q4_1_host(block, sizeof block, 1, 32, out.m), Status::kSuccess);
  expect_weights(dequant(out.m), expected, 1, 32);
  EXPECT_EQ(static_cast<const std::uint16_t*>(out.m.scales)[0], 0x3800);  // d and m copied bit for bit
  EXPECT_EQ(static_cast<const std::uint16_t*>(out.m.offsets)[0], 0xBC00);
  EXPECT_EQ(out.m.codes[0], 0x10);  // elements 0 and 1: codes 0, 1 (no XOR: unsigned codes as stored)
  EXPECT_EQ(import_gguf_q4_1_host(block, sizeof block - 1, 1, 32, out.m), Status::kErrorWorkspaceTooSmall);
}

// GGUF Q4_K, one super-block of 256 by hand: d = 0.5 (fp16 0x3800), dmin = 0.25 (0x3400); the 8 sub-blocks'
// 6-bit scales sc = {1, 2, 3, 63, 16, 33, 5, 48} and mins mn = {0, 1, 2, 4, 8, 20, 63, 0}, packed as
//   bytes 0-3: sc[0..3] | high 2 bits of sc[4..7] << 6 = 0x41 0x82 0x03 0xFF
//   bytes 4-7: mn[0..3] | high 2 bits of mn[4..7] << 6 = 0x00 0x41 0xC2 0x04
//   bytes 8-11: low 4 bits of sc[4..7] | low 4 bits of mn[4..7] << 4 = 0x80 0x41 0xF5 0x00
// (sub-blocks 4..7 use the high bits); qs[32c + l] = (l % 16) | (15 - l % 16) << 4, so sub-block 2c has codes
// l % 16 and sub-block 2c + 1 codes 15 - l % 16. weight = 0.5 * sc * q - 0.25 * mn. Element l + 16 of a
// sub-block equals element l; the first 16 of each sub-block are written out below (the same values gguf-py
// 0.19.0's quants.dequantize gives for this block).
TEST(Import_gguf_hand, Q4_KOneSuperBlock) {
  std::uint8_t block[144] = {0x00, 0x38, 0x00, 0x34, 0x41, 0x82, 0x03, 0xFF,
                             0x00, 0x41, 0xC2, 0x04, 0x80, 0x41, 0xF5, 0x00};
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) block[16 + 32 * c + l] = std::uint8_t((l % 16) | ((15 - l % 16) << 4));
  const float first16[8][16] = {
      {0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 5.5, 6, 6.5, 7, 7.5},
      {14.75, 13.75, 12.75, 11.75, 10.75, 9.75, 8.75, 7.75, 6.75, 5.75, 4.75, 3.75, 2.75, 1.75, 0.75, -0.25},
      {-0.5, 1, 2.5, 4, 5.5, 7, 8.5, 10, 11.5, 13, 14.5, 16, 17.5, 19, 20.5, 22},
      {471.5, 440, 408.5, 377, 345.5, 314, 282.5, 251, 219.5, 188, 156.5, 125, 93.5, 62, 30.5, -1},
      {-2, 6, 14, 22, 30, 38, 46, 54, 62, 70, 78, 86, 94, 102, 110, 118},
      {242.5, 226, 209.5, 193, 176.5, 160, 143.5, 127, 110.5, 94, 77.5, 61, 44.5, 28, 11.5, -5},
      {-15.75, -13.25, -10.75, -8.25, -5.75, -3.25, -0.75, 1.75, 4.25, 6.75, 9.25, 11.75, 14.25, 16.75, 19.25, 21.75},
      {360, 336, 312, 288, 264, 240, 216, 192, 168, 144, 120, 96, 72, 48, 24, 0},
  };
  float expected[256];
  for (int j = 0; j < 8; ++j)
    for (int l = 0; l < 32; ++l) expected[32 * j + l] = first16[j][l % 16];
  QuantParams p;
  ASSERT_EQ(gguf_q4_k_import_params(1, 256, &p), Status::kSuccess);
  EXPECT_EQ(p.format, Format::kAffineU4);
  EXPECT_EQ(p.group_size, 32);
  EXPECT_EQ(p.scale_type, DType::kF32);
  HostPacked out(1, 256, p);
  ASSERT_EQ(import_gguf_q4_k_host(block, sizeof block, 1, 256, out.m), Status::kSuccess);
  expect_weights(dequant(out.m), expected, 1, 256);
  // The expanded per-32 scale d * sc and offset -(dmin * mn).
  const float* sc = static_cast<const float*>(out.m.scales);
  const float* off = static_cast<const float*>(out.m.offsets);
  const float want_sc[8] = {0.5, 1, 1.5, 31.5, 8, 16.5, 2.5, 24};
  const float want_off[8] = {-0.0f, -0.25, -0.5, -1, -2, -5, -15.75, -0.0f};
  for (int j = 0; j < 8; ++j) {
    EXPECT_EQ(sc[j], want_sc[j]) << j;
    EXPECT_EQ(off[j], want_off[j]) << j;
  }
  EXPECT_EQ(import_gguf_q4_k_host(block, sizeof block - 1, 1, 256, out.m), Status::kErrorWorkspaceTooSmall);
}

/// Every refusal of the Q4_1 / Q4_K importers, with its Status.
TEST(Import_gguf_hand, AffineRefusals) {
  std::vector<std::uint8_t> data(4096, 0);  // more than any shape below needs
  QuantParams p;
  EXPECT_EQ(gguf_q4_1_import_params(4, 48, &p), Status::kErrorGroupSize);   // K % 32
  EXPECT_EQ(gguf_q4_k_import_params(2, 128, &p), Status::kErrorGroupSize);  // K % 256
  EXPECT_EQ(gguf_q4_k_import_params(2, 288, &p), Status::kErrorGroupSize);
  EXPECT_EQ(gguf_q4_k_import_params(0, 256, &p), Status::kErrorInvalidShape);
  EXPECT_EQ(gguf_q4_k_import_params(2, -256, &p), Status::kErrorInvalidShape);
  EXPECT_EQ(gguf_q4_1_import_params(-1, 32, &p), Status::kErrorInvalidShape);
  EXPECT_EQ(gguf_q4_k_import_params(std::int64_t(1) << 60, 256, &p), Status::kErrorSizeOverflow);
  EXPECT_EQ(gguf_q4_k_import_params(2, 256, nullptr), Status::kErrorNullPointer);
  EXPECT_EQ(gguf_q4_k_bytes(2, 512), std::size_t(4 * 144));
  EXPECT_EQ(gguf_q4_1_bytes(2, 64), std::size_t(4 * 20));
  EXPECT_EQ(gguf_q4_k_bytes(2, 100), 0u);
  EXPECT_EQ(gguf_q4_1_bytes(std::int64_t(1) << 62, 1 << 20), 0u);
  ASSERT_EQ(gguf_q4_k_import_params(2, 512, &p), Status::kSuccess);
  HostPacked k4(2, 512, p);
  EXPECT_EQ(import_gguf_q4_k_host(nullptr, data.size(), 2, 512, k4.m), Status::kErrorNullPointer);
  EXPECT_EQ(import_gguf_q4_k_host(data.data(), 4 * 144 - 1, 2, 512, k4.m), Status::kErrorWorkspaceTooSmall);
  EXPECT_EQ(import_gguf_q4_k_host(data.data(), data.size(), 2, 256, k4.m), Status::kErrorInvalidArgument);  // shape
  PackedMatrix no_offsets = k4.m;
  no_offsets.offsets = nullptr;
  EXPECT_EQ(import_gguf_q4_k_host(data.data(), data.size(), 2, 512, no_offsets), Status::kErrorNullPointer);
  // An output carved for Q4_1 (fp16) is not a Q4_K view (fp32), and a Q4_0 view is not a Q4_1 one.
  ASSERT_EQ(gguf_q4_1_import_params(2, 512, &p), Status::kSuccess);
  HostPacked q1(2, 512, p);
  EXPECT_EQ(import_gguf_q4_k_host(data.data(), data.size(), 2, 512, q1.m), Status::kErrorInvalidArgument);
  ASSERT_EQ(gguf_q4_0_import_params(2, 512, &p), Status::kSuccess);
  HostPacked q0(2, 512, p);
  EXPECT_EQ(import_gguf_q4_1_host(data.data(), data.size(), 2, 512, q0.m), Status::kErrorInvalidArgument);
  EXPECT_EQ(import_gguf_q4_0_host(data.data(), data.size(), 2, 512, q1.m), Status::kErrorInvalidArgument);
}

/// A Q4_K import (kAffineU4 g32, fp32 scales and offsets) goes through every GEMM-layout entry point on the CPU:
/// repack_host with an offsets buffer (the overload without one says kErrorNullPointer), the shape query,
/// gemm_weight_bytes (offsets of the scales' size), gemm::can_implement (null / misaligned offsets refused like
/// u4's zeros; a forced kStream accepted: the stream kernel takes affine u4) and get_workspace_size
/// (the arguments' own error first, then, without a GPU, kErrorUnsupportedDevice).
TEST(Import_gguf_hand, GemmTakesAffineU4) {
  QuantParams p;
  ASSERT_EQ(gguf_q4_k_import_params(16, 256, &p), Status::kSuccess);
  HostPacked w(16, 256, p);
  alignas(16) static std::uint8_t codes[4096], scales[4096], zeros[4096], offsets[4096], a[4096], c[4096];
  GemmWeights gw;
  EXPECT_EQ(repack_host(plain_view(w.m), DType::kF16, codes, scales, zeros, &gw), Status::kErrorNullPointer);
  EXPECT_EQ(repack_host(plain_view(w.m), DType::kF16, codes, scales, nullptr, offsets, &gw), Status::kSuccess);
  EXPECT_EQ(gw.offsets, static_cast<const void*>(offsets));
  EXPECT_EQ(gw.zeros, nullptr);
  std::size_t ws = 1;
  EXPECT_EQ(get_repack_workspace_size(plain_view(w.m), DType::kF16, &ws), Status::kSuccess);
  EXPECT_EQ(ws, 0u);
  const GemmWeightBytes gb = gemm_weight_bytes(Format::kAffineU4, 16, 256, 32, DType::kF16);
  EXPECT_EQ(gb.codes, 16u * 256 / 2);
  EXPECT_EQ(gb.scales, 16u * 8 * 2);
  EXPECT_EQ(gb.zeros, 0u);
  EXPECT_EQ(gb.offsets, gb.scales);

  gemm::Arguments args;
  args.m = 4;
  args.act_type = DType::kF16;
  args.a = a;
  args.lda = 256;
  args.c = c;
  args.ldc = 16;
  args.out_type = DType::kF32;
  args.sm_count = 132;  // no device query
  args.w = gw;
  EXPECT_EQ(gemm::can_implement(args), Status::kSuccess);
  std::size_t bytes = 0;
  const Status st = gemm::get_workspace_size(args, &bytes);
  EXPECT_TRUE(st == Status::kSuccess || st == Status::kErrorUnsupportedDevice) << to_string(st);
  args.mainloop = gemm::Mainloop::kStream;  // the stream kernel takes affine u4 too
  EXPECT_EQ(gemm::can_implement(args), Status::kSuccess);
  const Status ss = gemm::get_workspace_size(args, &bytes);
  EXPECT_TRUE(ss == Status::kSuccess || ss == Status::kErrorUnsupportedDevice) << to_string(ss);
  args.mainloop = gemm::Mainloop::kAuto;
  args.w.offsets = offsets + 2;
  EXPECT_EQ(gemm::can_implement(args), Status::kErrorMisalignedPointer);
  args.w.offsets = nullptr;
  EXPECT_EQ(gemm::can_implement(args), Status::kErrorNullPointer);
}

// ---- fixtures: each project's writer, each project's reader -------------------------------------------

GptqTensors gptq_tensors(const Fixture& fx) {
  GptqTensors t;
  t.k = fx.meta("k");
  t.n = fx.meta("n");
  t.qweight = fx.i32("qweight");
  t.qzeros = fx.i32("qzeros");
  t.scales = fx.get("scales");
  t.scale_type = DType::kF16;
  return t;
}

void run_gptq_fixture(const std::string& name, bool act_order) {
  LOAD_FIXTURE(fx, name);
  GptqConfig cfg;
  cfg.group_size = fx.meta("group");
  cfg.sym = fx.meta("sym") == 1;
  cfg.checkpoint_format = fx.meta("version") == 1 ? GptqCheckpointFormat::kV1 : GptqCheckpointFormat::kV2;
  GptqTensors t = gptq_tensors(fx);
  t.g_idx = fx.i32("g_idx");
  QuantParams p;
  ASSERT_EQ(gptq_import_params(cfg, t, &p), Status::kSuccess);
  HostPacked out(t.n, t.k, p);
  std::vector<std::int32_t> perm(std::size_t(t.k), -1);
  ASSERT_EQ(import_gptq_host(cfg, t, out.m, perm.data()), Status::kSuccess);
  const auto oracle = stable_sort_perm(t.g_idx, t.k);
  EXPECT_EQ(perm, oracle);
  bool identity = false;
  ASSERT_EQ(act_order_permutation(t.g_idx, t.k, effective_group(p.group_size, t.k), nullptr, &identity),
            Status::kSuccess);
  EXPECT_EQ(identity, !act_order);
  if (act_order) EXPECT_EQ(import_gptq_host(cfg, t, out.m, nullptr), Status::kErrorNullPointer);
  expect_weights(dequant(out.m), fx.f32("expected"), t.n, t.k, perm.data());
}

TEST(Import_gptq_fixture, V1SymG32) { run_gptq_fixture("gptq_v1_sym_g32", false); }
TEST(Import_gptq_fixture, V2SymG32) { run_gptq_fixture("gptq_v2_sym_g32", false); }
TEST(Import_gptq_fixture, V1AsymG32) { run_gptq_fixture("gptq_v1_asym_g32", false); }
TEST(Import_gptq_fixture, V2AsymG64) { run_gptq_fixture("gptq_v2_asym_g64", false); }
TEST(Import_gptq_fixture, V1SymActOrderG32) { run_gptq_fixture("gptq_v1_sym_actorder_g32", true); }
TEST(Import_gptq_fixture, V2AsymActOrderG32) { run_gptq_fixture("gptq_v2_asym_actorder_g32", true); }

TEST(Import_gptq_fixture, DetectFromData) {
  for (const char* name : {"gptq_v1_sym_g32", "gptq_v2_sym_g32"}) {
    LOAD_FIXTURE(fx, name);
    GptqConfig cfg;
    cfg.group_size = fx.meta("group");
    cfg.checkpoint_format = GptqCheckpointFormat::kDetect;
    GptqCheckpointFormat f{};
    ASSERT_EQ(gptq_resolve_format_host(cfg, gptq_tensors(fx), &f), Status::kSuccess);
    EXPECT_EQ(int(f), fx.meta("version"));
  }
}

void run_awq_fixture(const std::string& name) {
  LOAD_FIXTURE(fx, name);
  AwqConfig cfg;
  cfg.group_size = fx.meta("group");
  AwqTensors t;
  t.k = fx.meta("k");
  t.n = fx.meta("n");
  t.qweight = fx.i32("qweight");
  t.qzeros = fx.i32("qzeros");
  t.scales = fx.get("scales");
  QuantParams p;
  ASSERT_EQ(awq_import_params(cfg, t, &p), Status::kSuccess);
  HostPacked out(t.n, t.k, p);
  ASSERT_EQ(import_awq_host(cfg, t, out.m), Status::kSuccess);
  expect_weights(dequant(out.m), fx.f32("expected"), t.n, t.k);
}
TEST(Import_awq_fixture, G32) { run_awq_fixture("awq_g32"); }
TEST(Import_awq_fixture, G64) { run_awq_fixture("awq_g64"); }

void run_ct_fixture(const std::string& name) {
  LOAD_FIXTURE(fx, name);
  CtConfig cfg;
  cfg.strategy = CtStrategy(fx.meta("strategy"));
  cfg.group_size = fx.meta("group");
  cfg.symmetric = fx.meta("sym") == 1;
  cfg.zero_point = cfg.symmetric ? CtZeroPoint::kNone : CtZeroPoint::kPackedInt32;
  CtTensors t;
  t.n = fx.meta("n");
  t.k = fx.meta("k");
  t.weight_packed = fx.i32("weight_packed");
  t.weight_scale = fx.get("weight_scale");
  t.scale_type = DType::kBF16;
  t.weight_zero_point = fx.get("weight_zero_point");
  QuantParams p;
  ASSERT_EQ(compressed_tensors_import_params(cfg, t, &p), Status::kSuccess);
  HostPacked out(t.n, t.k, p);
  ASSERT_EQ(import_compressed_tensors_host(cfg, t, out.m, nullptr), Status::kSuccess);
  expect_weights(dequant(out.m), fx.f32("expected"), t.n, t.k);
}
TEST(Import_ct_fixture, SymGroup32) { run_ct_fixture("ct_sym_group32"); }
TEST(Import_ct_fixture, AsymGroup32PackedZeroPoint) { run_ct_fixture("ct_asym_group32"); }
TEST(Import_ct_fixture, SymChannelK60Padded) { run_ct_fixture("ct_sym_channel_k60"); }
TEST(Import_ct_fixture, SymTensor) { run_ct_fixture("ct_sym_tensor"); }

void run_bnb_fixture(const std::string& name, bool expect_dq) {
  LOAD_FIXTURE(fx, name);
  BnbQuantState st;
  st.quant_type = fx.meta("fp4") == 1 ? BnbQuantType::kFp4 : BnbQuantType::kNf4;
  st.blocksize = fx.meta("blocksize");
  st.n = fx.meta("n");
  st.k = fx.meta("k");
  st.nested = fx.meta("nested") == 1;
  BnbTensors t;
  t.weight = static_cast<const std::uint8_t*>(fx.get("weight"));
  t.quant_map = fx.f32("quant_map");
  if (st.nested) {
    t.absmax = fx.get("absmax_u8");
    t.nested_absmax = fx.f32("nested_absmax");
    t.nested_quant_map = fx.f32("nested_quant_map");
    st.nested_offset = fx.f32("nested_offset")[0];
  } else {
    t.absmax = fx.get("absmax");
  }
  QuantParams p;
  ASSERT_EQ(bnb_import_params(st, t, &p), Status::kSuccess);
  EXPECT_EQ(p.double_quant, expect_dq);
  HostPacked out(st.n, st.k, p);
  ASSERT_EQ(import_bnb_host(st, t, out.m), Status::kSuccess);
  expect_weights(dequant(out.m), fx.f32("expected"), st.n, st.k);
}
TEST(Import_bnb_fixture, Nf4B64) { run_bnb_fixture("bnb_nf4_b64", false); }
TEST(Import_bnb_fixture, Fp4B32) { run_bnb_fixture("bnb_fp4_b32", false); }
TEST(Import_bnb_fixture, Nf4B32DoubleQuantMapsOntoDq) { run_bnb_fixture("bnb_nf4_b32_nested", true); }
TEST(Import_bnb_fixture, Fp4B64CustomNestedMapExpands) { run_bnb_fixture("bnb_fp4_b64_nested_custom_map", false); }

TEST(Import_gguf_fixture, Q4_0FromGgufPy) {
  LOAD_FIXTURE(fx, "gguf_q4_0");
  const std::int64_t n = fx.meta("n"), k = fx.meta("k");
  QuantParams p;
  ASSERT_EQ(gguf_q4_0_import_params(n, k, &p), Status::kSuccess);
  HostPacked out(n, k, p);
  ASSERT_EQ(import_gguf_q4_0_host(fx.get("data"), fx.count("data"), n, k, out.m), Status::kSuccess);
  expect_weights(dequant(out.m), fx.f32("expected"), n, k);
}

// ---- refusals -----------------------------------------------------------------------------------------

struct GptqSmall {  // a valid 8x64 asym v1 checkpoint, g32, to break one thing at a time
  std::vector<std::int32_t> qweight = std::vector<std::int32_t>(8 * 8, 0x12345678);
  std::vector<std::int32_t> qzeros = std::vector<std::int32_t>(2, 0x01234567);
  std::vector<std::uint16_t> scales = std::vector<std::uint16_t>(2 * 8, 0x3C00);
  GptqConfig cfg;
  GptqTensors t;
  GptqSmall() {
    cfg.group_size = 32;
    cfg.sym = false;
    t.k = 64;
    t.n = 8;
    t.qweight = qweight.data();
    t.qzeros = qzeros.data();
    t.scales = scales.data();
  }
  Status run() {
    QuantParams p;
    NIBBLE_RETURN_IF_ERROR(gptq_import_params(cfg, t, &p));
    HostPacked out(t.n, t.k, p);
    std::vector<std::int32_t> perm(static_cast<std::size_t>(t.k));
    return import_gptq_host(cfg, t, out.m, perm.data());
  }
};

TEST(Import_gptq_refuse, V1ZeroUnderflowPattern) {
  GptqSmall g;
  ASSERT_EQ(g.run(), Status::kSuccess);
  // What AutoGPTQ's pack wrote for z = 0 in column 3: (0 - 1) as uint32 OR-ed at nibble 3 -> 0xFFFFF...
  g.qzeros[1] = int(0xFFFFF567u);
  EXPECT_EQ(g.run(), Status::kErrorInvalidArgument);
  g.qzeros[1] = int(0xF1234567u);  // any 0xF nibble: z = 16 is not a u4 zero point
  EXPECT_EQ(g.run(), Status::kErrorInvalidArgument);
  g.cfg.checkpoint_format = GptqCheckpointFormat::kV2;  // in v2 0xF is z = 15: fine
  EXPECT_EQ(g.run(), Status::kSuccess);
}

TEST(Import_gptq_refuse, LabelsAndMetadata) {
  GptqSmall g;
  g.cfg.checkpoint_format = GptqCheckpointFormat::kDetect;  // asym: the data cannot tell
  EXPECT_EQ(g.run(), Status::kErrorInvalidArgument);
  g = GptqSmall();
  g.cfg.sym = true;  // sym label, but the words are not 0x77777777
  EXPECT_EQ(g.run(), Status::kErrorInvalidArgument);
  g = GptqSmall();
  g.cfg.bits = 8;
  EXPECT_EQ(g.run(), Status::kErrorUnsupportedFormat);
  g = GptqSmall();
  g.cfg.group_size = 48;
  EXPECT_EQ(g.run(), Status::kErrorGroupSize);
  g = GptqSmall();
  g.cfg.group_size = 512;  // not a nibble group size, and not K
  EXPECT_EQ(g.run(), Status::kErrorGroupSize);
  g = GptqSmall();
  g.t.n = 12;
  EXPECT_EQ(g.run(), Status::kErrorInvalidShape);
  g = GptqSmall();
  g.t.k = 60;
  EXPECT_EQ(g.run(), Status::kErrorInvalidShape);
  g = GptqSmall();
  g.t.qzeros = nullptr;
  EXPECT_EQ(g.run(), Status::kErrorNullPointer);
  g = GptqSmall();
  g.t.qweight = reinterpret_cast<const std::int32_t*>(reinterpret_cast<const char*>(g.qweight.data()) + 2);
  EXPECT_EQ(g.run(), Status::kErrorMisalignedPointer);
  g = GptqSmall();
  g.t.scale_type = DType(7);
  EXPECT_EQ(g.run(), Status::kErrorUnsupportedFormat);
}

TEST(Import_gptq_refuse, BadGIdx) {
  GptqSmall g;
  std::vector<std::int32_t> g_idx(64);
  for (int c = 0; c < 64; ++c) g_idx[std::size_t(c)] = c / 32;
  g.t.g_idx = g_idx.data();
  EXPECT_EQ(g.run(), Status::kSuccess);
  g_idx[0] = 1;  // group 1 now has 33 columns
  EXPECT_EQ(g.run(), Status::kErrorInvalidArgument);
  g_idx[0] = 2;  // no group 2
  EXPECT_EQ(g.run(), Status::kErrorInvalidArgument);
  g_idx[0] = -1;
  EXPECT_EQ(g.run(), Status::kErrorInvalidArgument);
}

TEST(Import_gptq_refuse, OutputViewMustMatch) {
  GptqSmall g;
  QuantParams p;
  ASSERT_EQ(gptq_import_params(g.cfg, g.t, &p), Status::kSuccess);
  QuantParams wrong = p;
  wrong.scale_type = DType::kBF16;
  HostPacked out(g.t.n, g.t.k, wrong);
  EXPECT_EQ(import_gptq_host(g.cfg, g.t, out.m, nullptr), Status::kErrorInvalidArgument);
  wrong = p;
  wrong.group_size = 64;
  HostPacked out2(g.t.n, g.t.k, wrong);
  EXPECT_EQ(import_gptq_host(g.cfg, g.t, out2.m, nullptr), Status::kErrorInvalidArgument);
  HostPacked out3(g.t.n, g.t.k, p);
  PackedMatrix m = out3.m;
  m.codes = nullptr;
  EXPECT_EQ(import_gptq_host(g.cfg, g.t, m, nullptr), Status::kErrorNullPointer);
}

TEST(Import_refuse, OtherFormats) {
  // AWQ without zero points, or N not a multiple of 8.
  AwqConfig acfg;
  AwqTensors at;
  at.k = 64;
  at.n = 8;
  QuantParams p;
  acfg.zero_point = false;
  EXPECT_EQ(awq_import_params(acfg, at, &p), Status::kErrorUnsupportedFormat);
  acfg.zero_point = true;
  at.n = 4;
  EXPECT_EQ(awq_import_params(acfg, at, &p), Status::kErrorInvalidShape);
  // compressed-tensors: inconsistent symmetric / zero point, unpacked zero point out of range.
  CtConfig ccfg;
  ccfg.zero_point = CtZeroPoint::kInt8;
  CtTensors ct;
  ct.n = 8;
  ct.k = 64;
  ccfg.group_size = 32;
  EXPECT_EQ(compressed_tensors_import_params(ccfg, ct, &p), Status::kErrorInvalidArgument);
  ccfg.symmetric = false;
  std::vector<std::int32_t> packed(8 * 8, 0);
  std::vector<std::uint16_t> scales(16, 0x3F80);
  std::vector<std::int8_t> zp(16, 3);
  ct.weight_packed = packed.data();
  ct.weight_scale = scales.data();
  ct.weight_zero_point = zp.data();
  ASSERT_EQ(compressed_tensors_import_params(ccfg, ct, &p), Status::kSuccess);
  HostPacked out(8, 64, p);
  ASSERT_EQ(import_compressed_tensors_host(ccfg, ct, out.m, nullptr), Status::kSuccess);
  EXPECT_EQ(out.m.zeros[0], 11);  // zp 3 + 8
  zp[5] = 8;
  EXPECT_EQ(import_compressed_tensors_host(ccfg, ct, out.m, nullptr), Status::kErrorInvalidArgument);
  // bitsandbytes: a quant_map that is not nibble's table; K not a multiple of the blocksize.
  BnbQuantState st;
  st.n = 4;
  st.k = 96;
  st.blocksize = 64;
  BnbTensors bt;
  static const Codebook16 kNf4Book = nf4_codebook();  // (a named object: .v of a temporary would dangle)
  bt.quant_map = kNf4Book.v;
  EXPECT_EQ(bnb_import_params(st, bt, &p), Status::kErrorGroupSize);
  st.k = 128;
  ASSERT_EQ(bnb_import_params(st, bt, &p), Status::kSuccess);
  float other[16];
  std::memcpy(other, nf4_codebook().v, sizeof other);
  other[3] = std::nextafter(other[3], 0.0f);
  bt.quant_map = other;
  EXPECT_EQ(bnb_import_params(st, bt, &p), Status::kErrorUnsupportedFormat);
  static const Codebook16 kFp4Book = fp4_codebook();
  bt.quant_map = kFp4Book.v;  // the FP4 table under quant_type nf4
  EXPECT_EQ(bnb_import_params(st, bt, &p), Status::kErrorUnsupportedFormat);
  // bitsandbytes' own FP4 table (get_4bit_type("fp4"), written out: its "-0" is the integer 0, so code 8 is
  // +0.0 where nibble's codebook has -0.0f) is accepted; a zero where the table has none is not.
  const float bnb_fp4[16] = {0.0f,  0.0625f / 12,  8.0f / 12,  1.0f,  4.0f / 12,  6.0f / 12,  2.0f / 12,  3.0f / 12,
                             +0.0f, -0.0625f / 12, -8.0f / 12, -1.0f, -4.0f / 12, -6.0f / 12, -2.0f / 12, -3.0f / 12};
  st.quant_type = BnbQuantType::kFp4;
  bt.quant_map = bnb_fp4;
  EXPECT_EQ(bnb_import_params(st, bt, &p), Status::kSuccess);
  EXPECT_EQ(p.format, Format::kFp4);
  float fp4_zeroed[16];
  std::memcpy(fp4_zeroed, bnb_fp4, sizeof fp4_zeroed);
  fp4_zeroed[9] = -0.0f;  // -0.0625 / 12 in the table
  bt.quant_map = fp4_zeroed;
  EXPECT_EQ(bnb_import_params(st, bt, &p), Status::kErrorUnsupportedFormat);
  st.quant_type = BnbQuantType::kNf4;
  // Double quant: a NaN or infinite nested_offset would make every scale NaN / infinite: refused.
  {
    BnbQuantState dq = st;
    BnbTensors dt;
    dt.quant_map = kNf4Book.v;
    const float nested_absmax[1] = {1.0f};
    dt.nested_quant_map = dynamic_map().v;  // (a reference to a static)
    dt.nested_absmax = nested_absmax;
    dq.nested = true;
    dq.nested_offset = 0.25f;
    ASSERT_EQ(bnb_import_params(dq, dt, &p), Status::kSuccess);
    EXPECT_TRUE(p.double_quant);
    for (float bad : {std::nanf(""), INFINITY, -INFINITY}) {
      dq.nested_offset = bad;
      EXPECT_EQ(bnb_import_params(dq, dt, &p), Status::kErrorInvalidArgument) << bad;
    }
  }
  // GGUF: K not a multiple of 32, null data.
  EXPECT_EQ(gguf_q4_0_import_params(4, 48, &p), Status::kErrorGroupSize);
  ASSERT_EQ(gguf_q4_0_import_params(4, 64, &p), Status::kSuccess);
  HostPacked g(4, 64, p);
  EXPECT_EQ(import_gguf_q4_0_host(nullptr, 1000, 4, 64, g.m), Status::kErrorNullPointer);
}

// ---- permute_columns (CPU) ----------------------------------------------------------------------------

TEST(Import_permute, HostGathersColumns) {
  const std::int32_t perm[4] = {2, 0, 3, 1};
  std::vector<__half> in(2 * 5), out(2 * 4);
  for (int i = 0; i < 10; ++i) in[std::size_t(i)] = __float2half(float(i));
  ASSERT_EQ(permute_columns_host(in.data(), 5, out.data(), 4, 2, 4, perm), Status::kSuccess);
  const float want[8] = {2, 0, 3, 1, 7, 5, 8, 6};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(__half2float(out[std::size_t(i)]), want[i]);
  const std::int32_t dup[4] = {2, 0, 2, 1};
  EXPECT_EQ(permute_columns_host(in.data(), 5, out.data(), 4, 2, 4, dup), Status::kErrorInvalidArgument);
  EXPECT_EQ(permute_columns_host(in.data(), 5, in.data() + 1, 5, 2, 4, perm), Status::kErrorInvalidArgument);
  EXPECT_EQ(permute_columns_host(in.data(), 3, out.data(), 4, 2, 4, perm), Status::kErrorLeadingDimension);
}

// Act-order end to end on the CPU: W x == W_import x[perm] for the act-order fixture.
TEST(Import_permute, ActOrderProductMatches) {
  LOAD_FIXTURE(fx, "gptq_v1_sym_actorder_g32");
  GptqConfig cfg;
  cfg.group_size = fx.meta("group");
  GptqTensors t = gptq_tensors(fx);
  t.g_idx = fx.i32("g_idx");
  QuantParams p;
  ASSERT_EQ(gptq_import_params(cfg, t, &p), Status::kSuccess);
  HostPacked out(t.n, t.k, p);
  std::vector<std::int32_t> perm(static_cast<std::size_t>(t.k));
  ASSERT_EQ(import_gptq_host(cfg, t, out.m, perm.data()), Status::kSuccess);
  std::vector<__half> x(static_cast<std::size_t>(t.k)), xp(static_cast<std::size_t>(t.k));
  for (std::int64_t c = 0; c < t.k; ++c) x[std::size_t(c)] = __float2half(float((c * 7) % 11) - 5.0f);
  ASSERT_EQ(permute_columns_host(x.data(), t.k, xp.data(), t.k, 1, t.k, perm.data()), Status::kSuccess);
  const auto w = dequant(out.m);
  const float* ref = fx.f32("expected");
  for (std::int64_t r = 0; r < t.n; ++r) {
    double a = 0, b = 0;  // exact: small integers times fp16 scales, few terms
    for (std::int64_t c = 0; c < t.k; ++c) {
      a += double(ref[r * t.k + c]) * double(__half2float(x[std::size_t(c)]));
      b += double(w[std::size_t(r * t.k + c)]) * double(__half2float(xp[std::size_t(c)]));
    }
    EXPECT_EQ(a, b) << "row " << r;
  }
}

// ---- GPU ----------------------------------------------------------------------------------------------

template <class T>
struct DeviceBuffer {
  T* p = nullptr;
  explicit DeviceBuffer(std::size_t count) { EXPECT_EQ(cudaMalloc(&p, count * sizeof(T) + 256), cudaSuccess); }
  ~DeviceBuffer() { cudaFree(p); }
};

/// GPU import of a random GPTQ checkpoint (n x k, group g, act-order or not) == CPU import, byte for byte
/// (codes, scales, zeros), with the output poisoned first and the error word left at zero.
void gpu_matches_cpu(std::int64_t n, std::int64_t k, int g, bool sym, bool v1, bool act_order, std::int64_t ld_extra) {
  auto rng = nibble_test_rng();
  const std::int64_t groups = k / effective_group(g == kCheckpointPerChannel ? kPerChannel : g, k);
  std::vector<std::int32_t> qweight(static_cast<std::size_t>(k / 8 * n)),
      qzeros(static_cast<std::size_t>(groups * n / 8));
  std::vector<std::uint16_t> scales(static_cast<std::size_t>(groups * n));
  for (auto& w : qweight) w = std::int32_t(rng());
  for (auto& w : qzeros) {
    w = sym ? std::int32_t(v1 ? 0x77777777u : 0x88888888u) : std::int32_t(rng() & (v1 ? 0x66666666u : ~0u));
  }
  for (auto& s : scales) s = std::uint16_t(0x2000 + rng() % 0x1C00);
  std::vector<std::int32_t> g_idx(static_cast<std::size_t>(k));
  const std::int64_t ge = groups == 1 ? k : g;
  for (std::int64_t c = 0; c < k; ++c) g_idx[std::size_t(c)] = std::int32_t(c / ge);
  if (act_order) std::shuffle(g_idx.begin(), g_idx.end(), rng);
  GptqConfig cfg;
  cfg.group_size = g;
  cfg.sym = sym;
  cfg.checkpoint_format = v1 ? GptqCheckpointFormat::kV1 : GptqCheckpointFormat::kV2;
  GptqTensors t;
  t.k = k;
  t.n = n;
  t.qweight = qweight.data();
  t.qzeros = qzeros.data();
  t.scales = scales.data();
  t.g_idx = g_idx.data();
  QuantParams p;
  ASSERT_EQ(gptq_import_params(cfg, t, &p), Status::kSuccess);
  const std::int64_t ld = k / 2 + ld_extra;
  const PackedBytes pb = packed_bytes(n, k, p, ld);
  ASSERT_EQ(pb.status, Status::kSuccess);
  // CPU reference.
  std::vector<std::uint8_t> host_raw(pb.total + 256, 0xA5);
  auto* hbase =
      reinterpret_cast<std::uint8_t*>(round_up(std::int64_t(reinterpret_cast<std::uintptr_t>(host_raw.data())), 256));
  PackedMatrix hm;
  ASSERT_EQ(carve_packed_matrix(n, k, p, hbase, pb.total, &hm, ld), Status::kSuccess);
  std::vector<std::int32_t> perm(static_cast<std::size_t>(k));
  ASSERT_EQ(import_gptq_host(cfg, t, hm, perm.data()), Status::kSuccess);
  // GPU.
  DeviceBuffer<std::int32_t> dq(qweight.size()), dz(qzeros.size()), dperm(perm.size());
  DeviceBuffer<std::uint16_t> ds(scales.size());
  DeviceBuffer<std::uint8_t> dout(pb.total);
  DeviceBuffer<std::uint32_t> dflags(1);
  ASSERT_EQ(cudaMemcpy(dq.p, qweight.data(), qweight.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dz.p, qzeros.data(), qzeros.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(ds.p, scales.data(), scales.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dperm.p, perm.data(), perm.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(dout.p, 0xA5, pb.total), cudaSuccess);
  ASSERT_EQ(cudaMemset(dflags.p, 0, 4), cudaSuccess);
  PackedMatrix dm;
  ASSERT_EQ(carve_packed_matrix(n, k, p, dout.p, pb.total, &dm, ld), Status::kSuccess);
  GptqTensors dt = t;
  dt.qweight = dq.p;
  dt.qzeros = dz.p;
  dt.scales = ds.p;
  dt.g_idx = nullptr;
  cudaStream_t stream;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  ASSERT_EQ(import_gptq(cfg, dt, act_order ? dperm.p : nullptr, dm, dflags.p, stream), Status::kSuccess);
  ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  cudaStreamDestroy(stream);
  std::vector<std::uint8_t> back(pb.total);
  ASSERT_EQ(cudaMemcpy(back.data(), dout.p, pb.total, cudaMemcpyDeviceToHost), cudaSuccess);
  std::uint32_t flags = 1234;
  ASSERT_EQ(cudaMemcpy(&flags, dflags.p, 4, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(flags, 0u);
  // Compare the buffers the format uses (ld padding bytes: neither path writes them).
  for (std::int64_t r = 0; r < n; ++r)
    ASSERT_EQ(std::memcmp(back.data() + r * ld, hbase + r * ld, std::size_t(k / 2)), 0) << "codes row " << r;
  const std::size_t off_s = std::size_t(static_cast<std::uint8_t*>(dm.scales) - dout.p);
  EXPECT_EQ(std::memcmp(back.data() + off_s, hbase + off_s, pb.scales), 0) << "scales";
  if (!sym) {
    const std::size_t off_z = std::size_t(dm.zeros - dout.p);
    EXPECT_EQ(std::memcmp(back.data() + off_z, hbase + off_z, pb.zeros), 0) << "zeros";
  }
}

TEST(Import_gptq_gpu, S4g128_N256_K512) {
  NIBBLE_REQUIRE_GPU();
  gpu_matches_cpu(256, 512, 128, true, true, false, 0);
}
TEST(Import_gptq_gpu, U4g32_V1_N72_K256_ld3) {
  NIBBLE_REQUIRE_GPU();
  gpu_matches_cpu(72, 256, 32, false, true, false, 3);
}
TEST(Import_gptq_gpu, U4g64_V2_ActOrder_N136_K1024) {
  NIBBLE_REQUIRE_GPU();
  gpu_matches_cpu(136, 1024, 64, false, false, true, 0);
}
TEST(Import_gptq_gpu, S4PerChannel_V2_ActOrder_N40_K2048) {
  NIBBLE_REQUIRE_GPU();
  gpu_matches_cpu(40, 2048, -1, true, false, true, 0);
}
TEST(Import_gptq_gpu, S4g256_N1000_K4096) {
  NIBBLE_REQUIRE_GPU();
  gpu_matches_cpu(1000, 4096, 256, true, true, false, 0);
}

TEST(Import_gptq_gpu, FlagsBadZeroWordAndPermutation) {
  NIBBLE_REQUIRE_GPU();
  const std::int64_t n = 32, k = 64;
  std::vector<std::int32_t> qweight(std::size_t(k / 8 * n), 0x01234567), qzeros(std::size_t(2 * n / 8), 0x77777777);
  qzeros[1] = 0x77777787;  // sym v1 word that is not 0x77777777
  std::vector<std::uint16_t> scales(std::size_t(2 * n), 0x3C00);
  std::vector<std::int32_t> perm(static_cast<std::size_t>(k));
  std::iota(perm.begin(), perm.end(), 0);
  perm[5] = int(k);  // out of range
  GptqConfig cfg;
  cfg.group_size = 32;
  GptqTensors t;
  t.k = k;
  t.n = n;
  QuantParams p;
  ASSERT_EQ(gptq_import_params(cfg, t, &p), Status::kSuccess);
  const PackedBytes pb = packed_bytes(n, k, p);
  DeviceBuffer<std::int32_t> dq(qweight.size()), dz(qzeros.size()), dperm(perm.size());
  DeviceBuffer<std::uint16_t> ds(scales.size());
  DeviceBuffer<std::uint8_t> dout(pb.total);
  DeviceBuffer<std::uint32_t> dflags(1);
  cudaMemcpy(dq.p, qweight.data(), qweight.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(dz.p, qzeros.data(), qzeros.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(ds.p, scales.data(), scales.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dperm.p, perm.data(), perm.size() * 4, cudaMemcpyHostToDevice);
  cudaMemset(dflags.p, 0, 4);
  PackedMatrix dm;
  ASSERT_EQ(carve_packed_matrix(n, k, p, dout.p, pb.total, &dm), Status::kSuccess);
  t.qweight = dq.p;
  t.qzeros = dz.p;
  t.scales = ds.p;
  ASSERT_EQ(import_gptq(cfg, t, dperm.p, dm, dflags.p, nullptr), Status::kSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::uint32_t flags = 0;
  cudaMemcpy(&flags, dflags.p, 4, cudaMemcpyDeviceToHost);
  EXPECT_EQ(flags, std::uint32_t(kImportBadZeroWord | kImportBadPermutation));
  // Host-side refusals of the GPU entry.
  cfg.checkpoint_format = GptqCheckpointFormat::kDetect;
  EXPECT_EQ(import_gptq(cfg, t, nullptr, dm, dflags.p, nullptr), Status::kErrorInvalidArgument);
  cfg.checkpoint_format = GptqCheckpointFormat::kV1;
  EXPECT_EQ(import_gptq(cfg, t, nullptr, dm, nullptr, nullptr), Status::kErrorNullPointer);
  t.g_idx = perm.data();
  EXPECT_EQ(import_gptq(cfg, t, nullptr, dm, dflags.p, nullptr), Status::kErrorInvalidArgument);
}

TEST(Import_permute_gpu, MatchesHost_bf16_M33_K1000) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  const std::int64_t m = 33, k = 1000, ld_in = 1003, ld_out = 1000;
  std::vector<__nv_bfloat16> in(static_cast<std::size_t>(m * ld_in)), want(static_cast<std::size_t>(m * ld_out)),
      got(want.size());
  for (auto& v : in) v = __float2bfloat16(float(std::int32_t(rng() % 2001) - 1000) / 64.0f);
  std::vector<std::int32_t> perm(static_cast<std::size_t>(k));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  ASSERT_EQ(permute_columns_host(in.data(), ld_in, want.data(), ld_out, m, k, perm.data()), Status::kSuccess);
  DeviceBuffer<__nv_bfloat16> din(in.size()), dout(want.size());
  DeviceBuffer<std::int32_t> dperm(perm.size());
  cudaMemcpy(din.p, in.data(), in.size() * 2, cudaMemcpyHostToDevice);
  cudaMemcpy(dperm.p, perm.data(), perm.size() * 4, cudaMemcpyHostToDevice);
  cudaMemset(dout.p, 0xA5, want.size() * 2);
  ASSERT_EQ(permute_columns(din.p, ld_in, dout.p, ld_out, m, k, dperm.p, nullptr), Status::kSuccess);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaMemcpy(got.data(), dout.p, got.size() * 2, cudaMemcpyDeviceToHost);
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * 2), 0);
}

// ---- GPU paths of AWQ, compressed-tensors, bitsandbytes, GGUF: the CPU path's bytes ----------------------
// Each case draws a random checkpoint (printed seed), imports it on the CPU and on the GPU into outputs
// poisoned with 0xA5, and compares every buffer the format uses byte for byte. Scales and GGUF d / dmin are
// random finite bit patterns (NaN results of arithmetic may differ in encoding between CPU and GPU).

/// One output view twice: host buffers and device buffers, same parameters and ld_codes, both poisoned.
struct PackedPair {
  std::int64_t n, k, ld;
  PackedBytes pb;
  std::vector<std::uint8_t> host_raw;
  std::uint8_t* hbase = nullptr;
  PackedMatrix hm, dm;
  DevBuf dev;
  PackedPair(std::int64_t n_, std::int64_t k_, const QuantParams& p, std::int64_t ld_extra)
      : n(n_), k(k_), ld(k_ / 2 + ld_extra), pb(packed_bytes(n_, k_, p, k_ / 2 + ld_extra)) {
    EXPECT_EQ(pb.status, Status::kSuccess);
    host_raw.assign(pb.total + 256, 0xA5);
    hbase =
        reinterpret_cast<std::uint8_t*>(round_up(std::int64_t(reinterpret_cast<std::uintptr_t>(host_raw.data())), 256));
    EXPECT_EQ(carve_packed_matrix(n, k, p, hbase, pb.total, &hm, ld), Status::kSuccess);
    dev = DevBuf(pb.total);
    poison(nullptr);
    CUDA_CHECK(cudaDeviceSynchronize());
    EXPECT_EQ(carve_packed_matrix(n, k, p, dev.get(), pb.total, &dm, ld), Status::kSuccess);
  }
  void poison(cudaStream_t s) { CUDA_CHECK(cudaMemsetAsync(dev.get(), 0xA5, pb.total, s)); }
  /// Every buffer the format uses, device == host (ld padding bytes: neither path writes them).
  void expect_same() const {
    const auto back = dev.download<std::uint8_t>();
    int bad_rows = 0;
    for (std::int64_t r = 0; r < n; ++r)
      if (std::memcmp(back.data() + r * ld, hbase + r * ld, std::size_t(k / 2)) != 0 && ++bad_rows <= 3)
        ADD_FAILURE() << "codes row " << r << " differ";
    EXPECT_EQ(bad_rows, 0);
    const auto same = [&](const void* dptr, std::size_t bytes, const char* what) {
      if (bytes == 0) return;
      const std::size_t off = std::size_t(static_cast<const std::uint8_t*>(dptr) - dev.as<std::uint8_t>());
      EXPECT_EQ(std::memcmp(back.data() + off, hbase + off, bytes), 0) << what;
    };
    same(dm.scales, pb.scales, "scales");
    same(dm.zeros, pb.zeros, "zeros");
    same(dm.offsets, pb.offsets, "offsets");
    same(dm.dq.codes, pb.dq_codes, "dq codes");
    same(dm.dq.absmax2, pb.dq_absmax2, "dq absmax2");
    same(dm.dq.offset, pb.dq_offset, "dq offset");
  }
};

std::vector<std::int32_t> random_words(std::mt19937_64& rng, std::int64_t count) {
  std::vector<std::int32_t> v(static_cast<std::size_t>(count));
  for (auto& w : v) w = std::int32_t(std::uint32_t(rng()));
  return v;
}
/// Random fp16 / bf16 bit patterns with the exponent kept off all-ones (finite).
std::vector<std::uint16_t> random_halves(std::mt19937_64& rng, std::int64_t count, DType t) {
  const std::uint16_t exp_mask = t == DType::kF16 ? 0x7C00 : 0x7F80;
  std::vector<std::uint16_t> v(static_cast<std::size_t>(count));
  for (auto& h : v) {
    h = std::uint16_t(rng());
    if ((h & exp_mask) == exp_mask) h = std::uint16_t(h ^ 0x4000);
  }
  return v;
}
/// Random positive floats in [2^-8, 2^8).
std::vector<float> random_floats(std::mt19937_64& rng, std::int64_t count) {
  std::vector<float> v(static_cast<std::size_t>(count));
  std::uniform_real_distribution<float> e(-8.0f, 8.0f);
  for (auto& f : v) f = std::exp2(e(rng));
  return v;
}

/// Runs host(hm) and dev(dm, stream) on a fresh PackedPair and expects the same bytes; a non-null
/// error word must stay 0.
template <class Host, class Dev>
void expect_gpu_matches_host(PackedPair& pp, Host host, Dev dev, std::uint32_t* dflags = nullptr) {
  ASSERT_EQ(host(pp.hm), Status::kSuccess);
  Stream stream;
  ASSERT_EQ(dev(pp.dm, stream.s), Status::kSuccess);
  CUDA_CHECK(cudaStreamSynchronize(stream.s));
  pp.expect_same();
  if (dflags != nullptr) {
    std::uint32_t flags = 1234;
    CUDA_CHECK(cudaMemcpy(&flags, dflags, 4, cudaMemcpyDeviceToHost));
    EXPECT_EQ(flags, 0u);
  }
}

/// A random AWQ checkpoint (host vectors and their device copies).
struct AwqCase {
  AwqConfig cfg;
  std::vector<std::int32_t> qweight, qzeros;
  std::vector<std::uint16_t> scales;
  AwqTensors host, dev;
  DevBuf dq, dz, ds;
  AwqCase(std::mt19937_64& rng, std::int64_t n, std::int64_t k, int g) {
    cfg.group_size = g;
    const std::int64_t groups = k / (g == kCheckpointPerChannel ? k : g);
    qweight = random_words(rng, k * n / 8);
    qzeros = random_words(rng, groups * n / 8);
    scales = random_halves(rng, groups * n, DType::kF16);
    host.k = dev.k = k;
    host.n = dev.n = n;
    host.qweight = qweight.data();
    host.qzeros = qzeros.data();
    host.scales = scales.data();
    dq = to_device(qweight);
    dz = to_device(qzeros);
    ds = to_device(scales);
    dev.qweight = dq.as<std::int32_t>();
    dev.qzeros = dz.as<std::int32_t>();
    dev.scales = ds.get();
  }
  QuantParams params() const {
    QuantParams p;
    EXPECT_EQ(awq_import_params(cfg, host, &p), Status::kSuccess);
    return p;
  }
};

void awq_gpu_case(std::int64_t n, std::int64_t k, int g, std::int64_t ld_extra) {
  auto rng = nibble_test_rng();
  AwqCase c(rng, n, k, g);
  PackedPair pp(n, k, c.params(), ld_extra);
  expect_gpu_matches_host(
      pp, [&](const PackedMatrix& m) { return import_awq_host(c.cfg, c.host, m); },
      [&](const PackedMatrix& m, cudaStream_t s) { return import_awq(c.cfg, c.dev, m, s); });
}

TEST(Import_awq_gpu, U4g128_N256_K512) {
  NIBBLE_REQUIRE_GPU();
  awq_gpu_case(256, 512, 128, 0);
}
TEST(Import_awq_gpu, U4g32_N72_K96_ld3) {  // K % 32 = 0 but rows unaligned: the byte-store path
  NIBBLE_REQUIRE_GPU();
  awq_gpu_case(72, 96, 32, 3);
}
TEST(Import_awq_gpu, U4PerChannel_N40_K10) {  // K % 8 = 2: a partial transposed block
  NIBBLE_REQUIRE_GPU();
  awq_gpu_case(40, 10, kCheckpointPerChannel, 0);
}
TEST(Import_awq_gpu, U4g64_N1000_K4160) {
  NIBBLE_REQUIRE_GPU();
  awq_gpu_case(1000, 4160, 64, 0);
}

/// A random compressed-tensors checkpoint; act_order shuffles a g_idx (host) and uploads its permutation.
struct CtCase {
  CtConfig cfg;
  std::vector<std::int32_t> packed, zp_words, g_idx, perm;
  std::vector<std::int8_t> zp_i8;
  std::vector<std::uint32_t> scales;  // fp32 bits, or two fp16 / bf16 per element (first half used)
  CtTensors host, dev;
  DevBuf dpacked, dscales, dzp, dperm, dflags;
  bool act_order = false;
  CtCase(std::mt19937_64& rng, std::int64_t n, std::int64_t k, CtStrategy strategy, int g, CtZeroPoint zp,
         DType scale_type, bool act_order_)
      : act_order(act_order_) {
    cfg.strategy = strategy;
    cfg.group_size = g;
    cfg.symmetric = zp == CtZeroPoint::kNone;
    cfg.zero_point = zp;
    const std::int64_t ge = strategy == CtStrategy::kGroup ? g : k, groups = k / ge;
    packed = random_words(rng, n * ((k + 7) / 8));
    const std::int64_t n_scales = strategy == CtStrategy::kTensor ? 1 : n * groups;
    scales.assign(std::size_t(n_scales), 0);
    if (scale_type == DType::kF32) {
      const auto f = random_floats(rng, n_scales);
      std::memcpy(scales.data(), f.data(), f.size() * 4);
    } else {
      const auto h = random_halves(rng, n_scales, scale_type);
      std::memcpy(scales.data(), h.data(), h.size() * 2);
    }
    host.n = dev.n = n;
    host.k = dev.k = k;
    host.scale_type = dev.scale_type = scale_type;
    host.weight_packed = packed.data();
    host.weight_scale = scales.data();
    dpacked = to_device(packed);
    dscales = to_device(scales);
    dev.weight_packed = dpacked.as<std::int32_t>();
    dev.weight_scale = dscales.get();
    if (zp == CtZeroPoint::kPackedInt32) {
      zp_words = random_words(rng, (n + 7) / 8 * groups);
      host.weight_zero_point = zp_words.data();
      dzp = to_device(zp_words);
    } else if (zp == CtZeroPoint::kInt8) {
      zp_i8.resize(std::size_t(n * groups));
      for (auto& z : zp_i8) z = std::int8_t(int(rng() % 16) - 8);
      host.weight_zero_point = zp_i8.data();
      dzp = to_device(zp_i8);
    }
    dev.weight_zero_point = dzp.get();
    g_idx.resize(std::size_t(k));
    for (std::int64_t c = 0; c < k; ++c) g_idx[std::size_t(c)] = std::int32_t(c / ge);
    if (act_order) std::shuffle(g_idx.begin(), g_idx.end(), rng);
    host.weight_g_idx = g_idx.data();
    perm.assign(std::size_t(k), -1);
    EXPECT_EQ(act_order_permutation(g_idx.data(), k, ge, perm.data(), nullptr), Status::kSuccess);
    dperm = to_device(perm);
    dflags = DevBuf(4);
    CUDA_CHECK(cudaMemset(dflags.get(), 0, 4));
  }
  QuantParams params() const {
    QuantParams p;
    EXPECT_EQ(compressed_tensors_import_params(cfg, host, &p), Status::kSuccess);
    return p;
  }
  Status run_host(const PackedMatrix& m) { return import_compressed_tensors_host(cfg, host, m, perm.data()); }
  Status run_dev(const PackedMatrix& m, cudaStream_t s) {
    return import_compressed_tensors(cfg, dev, act_order ? dperm.as<std::int32_t>() : nullptr, m,
                                     dflags.as<std::uint32_t>(), s);
  }
};

void ct_gpu_case(std::int64_t n, std::int64_t k, CtStrategy strategy, int g, CtZeroPoint zp, DType scale_type,
                 bool act_order, std::int64_t ld_extra) {
  auto rng = nibble_test_rng();
  CtCase c(rng, n, k, strategy, g, zp, scale_type, act_order);
  PackedPair pp(n, k, c.params(), ld_extra);
  expect_gpu_matches_host(
      pp, [&](const PackedMatrix& m) { return c.run_host(m); },
      [&](const PackedMatrix& m, cudaStream_t s) { return c.run_dev(m, s); }, c.dflags.as<std::uint32_t>());
}

TEST(Import_ct_gpu, S4g128_bf16_N256_K1024) {
  NIBBLE_REQUIRE_GPU();
  ct_gpu_case(256, 1024, CtStrategy::kGroup, 128, CtZeroPoint::kNone, DType::kBF16, false, 0);
}
TEST(Import_ct_gpu, U4g32_PackedZp_f16_ActOrder_N100_K512_ld5) {
  NIBBLE_REQUIRE_GPU();
  ct_gpu_case(100, 512, CtStrategy::kGroup, 32, CtZeroPoint::kPackedInt32, DType::kF16, true, 5);
}
TEST(Import_ct_gpu, U4Channel_Int8Zp_f32_N33_K60) {  // K = 60: padded last word, rows of 30 bytes
  NIBBLE_REQUIRE_GPU();
  ct_gpu_case(33, 60, CtStrategy::kChannel, 0, CtZeroPoint::kInt8, DType::kF32, false, 0);
}
TEST(Import_ct_gpu, S4Tensor_bf16_ActOrderChannel_N64_K200) {
  NIBBLE_REQUIRE_GPU();
  ct_gpu_case(64, 200, CtStrategy::kTensor, 0, CtZeroPoint::kNone, DType::kBF16, true, 0);
}
TEST(Import_ct_gpu, S4g64_f16_ActOrder_N500_K4096) {
  NIBBLE_REQUIRE_GPU();
  ct_gpu_case(500, 4096, CtStrategy::kGroup, 64, CtZeroPoint::kNone, DType::kF16, true, 0);
}

/// Data errors of the compressed-tensors GPU path: a permutation entry outside [0, K) and an int8 zero point
/// outside [-8, 7] set their flags (the CPU path refuses the same data with kErrorInvalidArgument).
TEST(Import_ct_gpu, FlagsBadPermutationAndZeroPoint) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  CtCase c(rng, 16, 64, CtStrategy::kGroup, 32, CtZeroPoint::kInt8, DType::kF16, true);
  PackedPair pp(16, 64, c.params(), 0);
  auto flags_of = [&]() {
    CUDA_CHECK(cudaMemset(c.dflags.get(), 0, 4));
    EXPECT_EQ(c.run_dev(pp.dm, nullptr), Status::kSuccess);
    CUDA_CHECK(cudaDeviceSynchronize());
    std::uint32_t f = 0;
    CUDA_CHECK(cudaMemcpy(&f, c.dflags.get(), 4, cudaMemcpyDeviceToHost));
    return f;
  };
  EXPECT_EQ(flags_of(), 0u);
  std::vector<std::int32_t> bad_perm = c.perm;
  bad_perm[7] = 64;
  c.dperm.upload(bad_perm.data(), bad_perm.size() * 4);
  EXPECT_EQ(flags_of(), std::uint32_t(kImportBadPermutation));
  c.dperm.upload(c.perm.data(), c.perm.size() * 4);
  c.zp_i8[3] = 8;
  c.dzp.upload(c.zp_i8.data(), c.zp_i8.size());
  EXPECT_EQ(flags_of(), std::uint32_t(kImportBadZeroPoint));
  EXPECT_EQ(c.run_host(pp.hm), Status::kErrorInvalidArgument);
  bad_perm[1] = -1;
  c.dperm.upload(bad_perm.data(), bad_perm.size() * 4);
  EXPECT_EQ(flags_of(), std::uint32_t(kImportBadPermutation | kImportBadZeroPoint));
}

/// A random bitsandbytes checkpoint: nf4 / fp4, plain fp32 absmax or nested (dynamic map: kept as dq;
/// `custom_map`: a perturbed map, expanded to fp32).
struct BnbCase {
  BnbQuantState st;
  std::vector<std::uint8_t> weight, absmax_u8;
  std::vector<float> absmax, nested_absmax, nested_map;
  Codebook16 book;
  BnbTensors host, dev;
  DevBuf dweight, dabsmax, dnested;
  BnbCase(std::mt19937_64& rng, BnbQuantType type, std::int64_t n, std::int64_t k, std::int64_t blocksize, bool nested,
          std::int64_t nested_blocksize, bool custom_map)
      : book(type == BnbQuantType::kNf4 ? nf4_codebook() : fp4_codebook()) {
    st.quant_type = type;
    st.blocksize = blocksize;
    st.n = n;
    st.k = k;
    st.nested = nested;
    st.nested_blocksize = nested_blocksize;
    weight.resize(std::size_t(n * k / 2));
    for (auto& b : weight) b = std::uint8_t(rng());
    dweight = to_device(weight);
    host.weight = weight.data();
    dev.weight = dweight.as<std::uint8_t>();
    host.quant_map = dev.quant_map = book.v;
    const std::int64_t nb = n * k / blocksize;
    if (!nested) {
      absmax = random_floats(rng, nb);
      host.absmax = absmax.data();
      dabsmax = to_device(absmax);
    } else {
      absmax_u8.resize(std::size_t(nb));
      for (auto& b : absmax_u8) b = std::uint8_t(rng());
      host.absmax = absmax_u8.data();
      dabsmax = to_device(absmax_u8);
      nested_absmax = random_floats(rng, (nb + nested_blocksize - 1) / nested_blocksize);
      host.nested_absmax = nested_absmax.data();
      dnested = to_device(nested_absmax);
      dev.nested_absmax = dnested.as<float>();
      nested_map.assign(dynamic_map().v, dynamic_map().v + 256);
      if (custom_map) nested_map[17] = std::nextafter(nested_map[17], 0.0f);
      host.nested_quant_map = dev.nested_quant_map = nested_map.data();
      st.nested_offset = std::ldexp(float(rng() % 1000), -7);
    }
    dev.absmax = dabsmax.get();
  }
  QuantParams params() const {
    QuantParams p;
    EXPECT_EQ(bnb_import_params(st, host, &p), Status::kSuccess);
    return p;
  }
};

void bnb_gpu_case(BnbQuantType type, std::int64_t n, std::int64_t k, std::int64_t blocksize, bool nested,
                  std::int64_t nested_blocksize, bool custom_map, bool expect_dq, std::int64_t ld_extra) {
  auto rng = nibble_test_rng();
  BnbCase c(rng, type, n, k, blocksize, nested, nested_blocksize, custom_map);
  const QuantParams p = c.params();
  EXPECT_EQ(p.double_quant, expect_dq);
  PackedPair pp(n, k, p, ld_extra);
  expect_gpu_matches_host(
      pp, [&](const PackedMatrix& m) { return import_bnb_host(c.st, c.host, m); },
      [&](const PackedMatrix& m, cudaStream_t s) { return import_bnb(c.st, c.dev, m, s); });
}

TEST(Import_bnb_gpu, Nf4B64_N256_K1024) {
  NIBBLE_REQUIRE_GPU();
  bnb_gpu_case(BnbQuantType::kNf4, 256, 1024, 64, false, 256, false, false, 0);
}
TEST(Import_bnb_gpu, Fp4B32_N77_K96_ld7) {  // rows of 48 bytes, unaligned output rows
  NIBBLE_REQUIRE_GPU();
  bnb_gpu_case(BnbQuantType::kFp4, 77, 96, 32, false, 256, false, false, 7);
}
TEST(Import_bnb_gpu, Nf4B64_DoubleQuantKept_N300_K1024) {
  NIBBLE_REQUIRE_GPU();
  bnb_gpu_case(BnbQuantType::kNf4, 300, 1024, 64, true, 256, false, true, 0);
}
TEST(Import_bnb_gpu, Nf4PerChannelK40_NestedCustomMapExpanded_N50) {  // rows of 20 bytes; nested block 128
  NIBBLE_REQUIRE_GPU();
  bnb_gpu_case(BnbQuantType::kNf4, 50, 40, 40, true, 128, true, false, 0);
}

/// Random GGUF blocks of one type (d / m / dmin finite fp16), one byte past a 16-byte boundary on the
/// device: the importers need no alignment.
void gguf_gpu_case(detail::GgufQ4 type, std::int64_t n, std::int64_t k, std::int64_t ld_extra) {
  auto rng = nibble_test_rng();
  const detail::GgufTypeInfo info = detail::gguf_type_info(type);
  const std::size_t bytes = std::size_t(n * (k / info.block) * info.block_bytes);
  std::vector<std::uint8_t> data(bytes);
  for (auto& b : data) b = std::uint8_t(rng());
  const int halves = type == detail::GgufQ4::kQ4_0 ? 1 : 2;  // d (and m / dmin) at the start of each block
  for (std::size_t b = 0; b < bytes; b += std::size_t(info.block_bytes))
    for (int h = 0; h < halves; ++h)
      if ((data[b + 2 * h + 1] & 0x7C) == 0x7C) data[b + 2 * h + 1] ^= 0x40;  // exponent off all-ones
  DevBuf ddata(bytes + 1);
  CUDA_CHECK(cudaMemcpy(ddata.as<std::uint8_t>() + 1, data.data(), bytes, cudaMemcpyHostToDevice));
  const void* dsrc = ddata.as<std::uint8_t>() + 1;
  QuantParams p;
  using Host = Status (*)(const void*, std::size_t, std::int64_t, std::int64_t, const PackedMatrix&);
  using Dev = Status (*)(const void*, std::size_t, std::int64_t, std::int64_t, const PackedMatrix&, cudaStream_t);
  Host host = nullptr;
  Dev dev = nullptr;
  if (type == detail::GgufQ4::kQ4_0) {
    ASSERT_EQ(gguf_q4_0_import_params(n, k, &p), Status::kSuccess);
    host = import_gguf_q4_0_host;
    dev = import_gguf_q4_0;
  } else if (type == detail::GgufQ4::kQ4_1) {
    ASSERT_EQ(gguf_q4_1_import_params(n, k, &p), Status::kSuccess);
    host = import_gguf_q4_1_host;
    dev = import_gguf_q4_1;
  } else {
    ASSERT_EQ(gguf_q4_k_import_params(n, k, &p), Status::kSuccess);
    host = import_gguf_q4_k_host;
    dev = import_gguf_q4_k;
  }
  PackedPair pp(n, k, p, ld_extra);
  expect_gpu_matches_host(
      pp, [&](const PackedMatrix& m) { return host(data.data(), bytes, n, k, m); },
      [&](const PackedMatrix& m, cudaStream_t s) { return dev(dsrc, bytes, n, k, m, s); });
}

TEST(Import_gguf_gpu, Q4_0_N96_K4096) {
  NIBBLE_REQUIRE_GPU();
  gguf_gpu_case(detail::GgufQ4::kQ4_0, 96, 4096, 0);
}
TEST(Import_gguf_gpu, Q4_1_N33_K160_ld1) {
  NIBBLE_REQUIRE_GPU();
  gguf_gpu_case(detail::GgufQ4::kQ4_1, 33, 160, 1);
}
TEST(Import_gguf_gpu, Q4_K_N70_K2048) {
  NIBBLE_REQUIRE_GPU();
  gguf_gpu_case(detail::GgufQ4::kQ4_K, 70, 2048, 0);
}

/// The four new GPU imports captured in one CUDA graph on a non-blocking stream, replayed twice with the
/// outputs poisoned again before each replay: each replay gives the CPU path's bytes.
TEST(Import_graph_gpu, CapturedImportsReplay) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  AwqCase awq(rng, 64, 256, 32);
  CtCase ct(rng, 48, 512, CtStrategy::kGroup, 128, CtZeroPoint::kPackedInt32, DType::kBF16, true);
  BnbCase bnb(rng, BnbQuantType::kNf4, 40, 512, 64, true, 256, false);
  const std::int64_t gn = 24, gk = 512;
  std::vector<std::uint8_t> q4k(gguf_q4_k_bytes(gn, gk));
  for (auto& b : q4k) b = std::uint8_t(rng());
  for (std::size_t b = 0; b < q4k.size(); b += kGgufQ4_KBlockBytes) {
    q4k[b + 1] &= 0x3F;  // d and dmin finite
    q4k[b + 3] &= 0x3F;
  }
  DevBuf dq4k = to_device(q4k);
  QuantParams pk;
  ASSERT_EQ(gguf_q4_k_import_params(gn, gk, &pk), Status::kSuccess);
  PackedPair pa(64, 256, awq.params(), 0), pc(48, 512, ct.params(), 0), pb(40, 512, bnb.params(), 0), pg(gn, gk, pk, 0);
  ASSERT_EQ(import_awq_host(awq.cfg, awq.host, pa.hm), Status::kSuccess);
  ASSERT_EQ(ct.run_host(pc.hm), Status::kSuccess);
  ASSERT_EQ(import_bnb_host(bnb.st, bnb.host, pb.hm), Status::kSuccess);
  ASSERT_EQ(import_gguf_q4_k_host(q4k.data(), q4k.size(), gn, gk, pg.hm), Status::kSuccess);
  Stream stream;
  GraphExec graph;
  capture(stream.s, graph, [&](cudaStream_t s) {
    NIBBLE_RETURN_IF_ERROR(import_awq(awq.cfg, awq.dev, pa.dm, s));
    NIBBLE_RETURN_IF_ERROR(ct.run_dev(pc.dm, s));
    NIBBLE_RETURN_IF_ERROR(import_bnb(bnb.st, bnb.dev, pb.dm, s));
    return import_gguf_q4_k(dq4k.get(), q4k.size(), gn, gk, pg.dm, s);
  });
  for (int replay = 0; replay < 2; ++replay) {
    for (PackedPair* pp : {&pa, &pc, &pb, &pg}) pp->poison(stream.s);
    CUDA_CHECK(cudaGraphLaunch(graph.exec, stream.s));
    CUDA_CHECK(cudaStreamSynchronize(stream.s));
    SCOPED_TRACE("replay " + std::to_string(replay));
    for (PackedPair* pp : {&pa, &pc, &pb, &pg}) pp->expect_same();
  }
  std::uint32_t flags = 1234;
  CUDA_CHECK(cudaMemcpy(&flags, ct.dflags.get(), 4, cudaMemcpyDeviceToHost));
  EXPECT_EQ(flags, 0u);
}

// ---- the GPU entries refuse what the CPU entries refuse, with the same Status (CPU: no launch) ----------
// The refusals come before any CUDA call, so these run without a GPU too; pointers are host pointers that
// the refused calls never read. A valid call without a GPU returns kErrorUnsupportedDevice.

/// The CPU entry refuses (a Status other than kSuccess) and the GPU entry returns that same Status.
template <class Host, class Dev>
void expect_same_refusal(const char* what, Host host, Dev dev) {
  SCOPED_TRACE(what);
  const Status h = host();
  ASSERT_NE(h, Status::kSuccess);
  EXPECT_STATUS(h, dev());
}

TEST(Import_gpu_refuse, AwqSameStatusAsHost) {
  auto rng = nibble_test_rng(1);
  std::vector<std::int32_t> words = random_words(rng, 64 * 16);
  std::vector<std::uint16_t> scales(64 * 16, 0x3C00);
  AwqConfig cfg;
  cfg.group_size = 32;
  AwqTensors t;
  t.k = 64;
  t.n = 32;
  t.qweight = words.data();
  t.qzeros = words.data();
  t.scales = scales.data();
  QuantParams p;
  ASSERT_EQ(awq_import_params(cfg, t, &p), Status::kSuccess);
  HostPacked out(32, 64, p);
  const auto expect_same = [&](const AwqConfig& c, const AwqTensors& x, const PackedMatrix& m, const char* what) {
    expect_same_refusal(
        what, [&] { return import_awq_host(c, x, m); }, [&] { return import_awq(c, x, m, nullptr); });
  };
  AwqConfig c = cfg;
  c.bits = 8;
  expect_same(c, t, out.m, "bits");
  c = cfg;
  c.zero_point = false;
  expect_same(c, t, out.m, "zero_point");
  c = cfg;
  c.group_size = 48;
  expect_same(c, t, out.m, "group");
  AwqTensors x = t;
  x.n = 36;
  expect_same(cfg, x, out.m, "n % 8");
  x = t;
  x.scales = nullptr;
  expect_same(cfg, x, out.m, "null scales");
  x = t;
  x.qweight = reinterpret_cast<const std::int32_t*>(reinterpret_cast<const char*>(words.data()) + 2);
  expect_same(cfg, x, out.m, "misaligned");
  x = t;
  x.scale_type = DType::kBF16;  // the view was carved for fp16
  expect_same(cfg, x, out.m, "view");
  if (!nibble_test_has_gpu()) EXPECT_STATUS(Status::kErrorUnsupportedDevice, import_awq(cfg, t, out.m, nullptr));
}

TEST(Import_gpu_refuse, CtSameStatusAsHost) {
  std::vector<std::int32_t> packed(16 * 8, 0x12345678), zw(2 * 2, 0x01234567), g_idx(64);
  for (int c = 0; c < 64; ++c) g_idx[std::size_t(c)] = c / 32;
  std::vector<std::uint16_t> scales(16 * 2, 0x3F80);
  CtConfig cfg;
  cfg.group_size = 32;
  cfg.symmetric = false;
  cfg.zero_point = CtZeroPoint::kPackedInt32;
  CtTensors t;
  t.n = 16;
  t.k = 64;
  t.weight_packed = packed.data();
  t.weight_scale = scales.data();
  t.weight_zero_point = zw.data();
  QuantParams p;
  ASSERT_EQ(compressed_tensors_import_params(cfg, t, &p), Status::kSuccess);
  HostPacked out(16, 64, p);
  std::uint32_t flags = 0;
  std::vector<std::int32_t> perm(64);
  const auto expect_same = [&](const CtConfig& c, const CtTensors& x, const PackedMatrix& m, const char* what) {
    expect_same_refusal(
        what, [&] { return import_compressed_tensors_host(c, x, m, perm.data()); },
        [&] { return import_compressed_tensors(c, x, nullptr, m, &flags, nullptr); });
  };
  CtConfig c = cfg;
  c.num_bits = 8;
  expect_same(c, t, out.m, "bits");
  c = cfg;
  c.symmetric = true;  // with a zero point
  expect_same(c, t, out.m, "symmetric + zero point");
  c = cfg;
  c.strategy = CtStrategy::kTensor;  // asymmetric tensor-wide
  expect_same(c, t, out.m, "asym tensor");
  c = cfg;
  c.group_size = 24;
  expect_same(c, t, out.m, "group");
  CtTensors x = t;
  x.k = 63;
  expect_same(cfg, x, out.m, "odd k");
  x = t;
  x.weight_zero_point = nullptr;
  expect_same(cfg, x, out.m, "null zero point");
  x = t;
  x.weight_scale = reinterpret_cast<const char*>(scales.data()) + 1;
  expect_same(cfg, x, out.m, "misaligned scale");
  x = t;
  x.n = 8;
  expect_same(cfg, x, out.m, "view");
  // GPU-only refusals: a host g_idx (pass perm), no error word, a misaligned error word or perm.
  x = t;
  x.weight_g_idx = g_idx.data();
  EXPECT_STATUS(Status::kErrorInvalidArgument, import_compressed_tensors(cfg, x, nullptr, out.m, &flags, nullptr));
  EXPECT_STATUS(Status::kErrorNullPointer, import_compressed_tensors(cfg, t, nullptr, out.m, nullptr, nullptr));
  EXPECT_STATUS(Status::kErrorMisalignedPointer,
                import_compressed_tensors(
                    cfg, t, reinterpret_cast<const std::int32_t*>(reinterpret_cast<const char*>(perm.data()) + 2),
                    out.m, &flags, nullptr));
  if (!nibble_test_has_gpu())
    EXPECT_STATUS(Status::kErrorUnsupportedDevice, import_compressed_tensors(cfg, t, nullptr, out.m, &flags, nullptr));
}

TEST(Import_gpu_refuse, BnbSameStatusAsHost) {
  std::vector<std::uint8_t> weight(8 * 64, 0x5A);
  std::vector<float> absmax(8, 1.0f);
  static const Codebook16 kNf4Book = nf4_codebook();
  BnbQuantState st;
  st.n = 8;
  st.k = 128;
  st.blocksize = 128;
  BnbTensors t;
  t.weight = weight.data();
  t.absmax = absmax.data();
  t.quant_map = kNf4Book.v;
  QuantParams p;
  ASSERT_EQ(bnb_import_params(st, t, &p), Status::kSuccess);
  HostPacked out(8, 128, p);
  const auto expect_same = [&](const BnbQuantState& s, const BnbTensors& x, const PackedMatrix& m, const char* what) {
    expect_same_refusal(
        what, [&] { return import_bnb_host(s, x, m); }, [&] { return import_bnb(s, x, m, nullptr); });
  };
  BnbQuantState s = st;
  s.blocksize = 96;
  expect_same(s, t, out.m, "blocksize");
  s = st;
  s.quant_type = BnbQuantType::kFp4;  // the NF4 table under fp4
  expect_same(s, t, out.m, "quant_map");
  s = st;
  s.nested = true;  // no nested tensors
  expect_same(s, t, out.m, "nested without tensors");
  BnbTensors x = t;
  x.absmax = reinterpret_cast<const char*>(absmax.data()) + 2;
  expect_same(st, x, out.m, "misaligned absmax");
  x = t;
  x.weight = nullptr;
  expect_same(st, x, out.m, "null weight");
  s = st;
  s.k = 256;
  expect_same(s, t, out.m, "view");
  if (!nibble_test_has_gpu()) EXPECT_STATUS(Status::kErrorUnsupportedDevice, import_bnb(st, t, out.m, nullptr));
}

TEST(Import_gpu_refuse, GgufSameStatusAsHost) {
  std::vector<std::uint8_t> data(8192, 0);
  QuantParams p0, p1, pk;
  ASSERT_EQ(gguf_q4_0_import_params(4, 256, &p0), Status::kSuccess);
  ASSERT_EQ(gguf_q4_1_import_params(4, 256, &p1), Status::kSuccess);
  ASSERT_EQ(gguf_q4_k_import_params(4, 256, &pk), Status::kSuccess);
  HostPacked o0(4, 256, p0), o1(4, 256, p1), ok(4, 256, pk);
  struct Entry {
    const char* name;
    Status (*host)(const void*, std::size_t, std::int64_t, std::int64_t, const PackedMatrix&);
    Status (*dev)(const void*, std::size_t, std::int64_t, std::int64_t, const PackedMatrix&, cudaStream_t);
    const PackedMatrix* right;
    const PackedMatrix* wrong;
  };
  const Entry entries[] = {{"q4_0", import_gguf_q4_0_host, import_gguf_q4_0, &o0.m, &o1.m},
                           {"q4_1", import_gguf_q4_1_host, import_gguf_q4_1, &o1.m, &ok.m},
                           {"q4_k", import_gguf_q4_k_host, import_gguf_q4_k, &ok.m, &o0.m}};
  for (const Entry& e : entries) {
    SCOPED_TRACE(e.name);
    struct Call {
      const void* data;
      std::size_t bytes;
      std::int64_t n, k;
      const PackedMatrix* out;
    };
    const Call calls[] = {{nullptr, data.size(), 4, 256, e.right},     {data.data(), 10, 4, 256, e.right},
                          {data.data(), data.size(), 4, 48, e.right},  {data.data(), data.size(), 0, 256, e.right},
                          {data.data(), data.size(), 4, 256, e.wrong}, {data.data(), data.size(), 2, 256, e.right}};
    for (const Call& c : calls)
      expect_same_refusal(
          "call", [&] { return e.host(c.data, c.bytes, c.n, c.k, *c.out); },
          [&] { return e.dev(c.data, c.bytes, c.n, c.k, *c.out, nullptr); });
    if (!nibble_test_has_gpu())
      EXPECT_STATUS(Status::kErrorUnsupportedDevice, e.dev(data.data(), data.size(), 4, 256, *e.right, nullptr));
  }
}

// ---- HQQ (import/hqq.cuh) -------------------------------------------------------------------------------

std::uint16_t bf16_bits(float f) {
  const __nv_bfloat16 h = __float2bfloat16_rn(f);
  std::uint16_t b;
  std::memcpy(&b, &h, 2);
  return b;
}
std::uint32_t f32_bits(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

/// HqqTensors for an [n, k] weight with group g (kCheckpointPerChannel: k) whose stored shapes agree with it.
HqqTensors hqq_tensors(std::int64_t n, std::int64_t k, int g, const void* w_q, const void* scale, const void* zero,
                       DType scale_type, DType zero_type) {
  const std::int64_t ge = g == kCheckpointPerChannel ? k : g, rows = n * (k / ge);
  HqqTensors t;
  t.n = n;
  t.k = k;
  t.w_q = static_cast<const std::uint8_t*>(w_q);
  t.w_q_rows = rows / 2;
  t.w_q_row_bytes = ge;
  t.scale = scale;
  t.zero = zero;
  t.scale_count = t.zero_count = rows;
  t.scale_type = scale_type;
  t.zero_type = zero_type;
  return t;
}

// 8 x 64, group 64 (8 group rows, W_q [4, 64]): byte c of every W_q row is (c % 16) << 4 | (15 - c % 16), so rows
// 0-3 of W (the high nibbles) have codes c % 16 and rows 4-7 (the low nibbles, pack_4bit_u8's second half) codes
// 15 - c % 16. fp16 scale / zero per row: (1, 0) (0.5, 8) (-0.25, 7.5) (2, 15) (1, 0.5) (0.125, 3) (4, 1.25)
// (0.0625, 0); weight = (q - zero) * scale. Columns c and c + 16 are equal; the first 16 are written out.
TEST(Import_hqq_hand, HalvesAndFloatZeros8x64) {
  std::uint8_t w_q[4][64];
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 64; ++c) w_q[r][c] = std::uint8_t(((c % 16) << 4) | (15 - c % 16));
  const float sz[8][2] = {{1, 0}, {0.5, 8}, {-0.25, 7.5}, {2, 15}, {1, 0.5}, {0.125, 3}, {4, 1.25}, {0.0625, 0}};
  std::uint16_t scale[8], zero[8];
  for (int r = 0; r < 8; ++r) {
    scale[r] = f16_bits(sz[r][0]);
    zero[r] = f16_bits(sz[r][1]);
  }
  const float first16[8][16] = {
      {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
      {-4, -3.5, -3, -2.5, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5},
      {1.875, 1.625, 1.375, 1.125, 0.875, 0.625, 0.375, 0.125, -0.125, -0.375, -0.625, -0.875, -1.125, -1.375, -1.625,
       -1.875},
      {-30, -28, -26, -24, -22, -20, -18, -16, -14, -12, -10, -8, -6, -4, -2, 0},
      {14.5, 13.5, 12.5, 11.5, 10.5, 9.5, 8.5, 7.5, 6.5, 5.5, 4.5, 3.5, 2.5, 1.5, 0.5, -0.5},
      {1.5, 1.375, 1.25, 1.125, 1, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0, -0.125, -0.25, -0.375},
      {55, 51, 47, 43, 39, 35, 31, 27, 23, 19, 15, 11, 7, 3, -1, -5},
      {0.9375, 0.875, 0.8125, 0.75, 0.6875, 0.625, 0.5625, 0.5, 0.4375, 0.375, 0.3125, 0.25, 0.1875, 0.125, 0.0625, 0},
  };
  float expected[8][64];
  for (int n = 0; n < 8; ++n)
    for (int c = 0; c < 64; ++c) expected[n][c] = first16[n][c % 16];
  HqqConfig cfg;
  cfg.group_size = 64;
  const HqqTensors t = hqq_tensors(8, 64, 64, w_q, scale, zero, DType::kF16, DType::kF16);
  QuantParams p;
  ASSERT_EQ(hqq_import_params(cfg, t, &p), Status::kSuccess);
  EXPECT_EQ(p.format, Format::kAffineU4);
  EXPECT_EQ(p.group_size, 64);
  EXPECT_EQ(p.scale_type, DType::kF32);
  HostPacked out(8, 64, p);
  ASSERT_EQ(import_hqq_host(cfg, t, out.m), Status::kSuccess);
  expect_weights(dequant(out.m), &expected[0][0], 8, 64);
  // fp32 scale = the fp16 scale; offset = -(zero * scale).
  const float want_offset[8] = {-0.0f, -4, 1.875, -30, -0.5, -0.375, -5, -0.0f};
  for (int r = 0; r < 8; ++r) {
    EXPECT_EQ(f32_bits(static_cast<const float*>(out.m.scales)[r]), f32_bits(sz[r][0])) << r;
    EXPECT_EQ(f32_bits(static_cast<const float*>(out.m.offsets)[r]), f32_bits(want_offset[r])) << r;
  }
  EXPECT_EQ(out.m.codes[0], 0x10);                   // row 0, elements 0, 1: codes 0, 1 (even element low)
  EXPECT_EQ(out.m.codes[4 * out.m.ld_codes], 0xEF);  // row 4: codes 15, 14
}

// 2 x 64, one group per row (group_size None -> kCheckpointPerChannel; W_q [1, 64], byte c = c): row 0 has codes
// c / 16 (high nibbles), row 1 codes c % 16. fp32 scales, bf16 zeros (the two dtypes are independent): row 0
// scale 3, zero 1.5, so weight = -4.5, -1.5, 1.5, 4.5 in runs of 16; row 1's scale is a signalling NaN (payload
// 1), stored and propagated as the canonical NaN 0x7FFFFFFF.
TEST(Import_hqq_hand, PerChannelF32ScaleBf16ZeroNaN) {
  std::uint8_t w_q[64];
  for (int c = 0; c < 64; ++c) w_q[c] = std::uint8_t(c);
  float scale[2] = {3.0f, 0.0f};
  const std::uint32_t snan = 0x7F800001u;
  std::memcpy(&scale[1], &snan, 4);
  const std::uint16_t zero[2] = {bf16_bits(1.5f), bf16_bits(2.0f)};
  HqqConfig cfg;
  cfg.group_size = kCheckpointPerChannel;
  const HqqTensors t = hqq_tensors(2, 64, kCheckpointPerChannel, w_q, scale, zero, DType::kF32, DType::kBF16);
  QuantParams p;
  ASSERT_EQ(hqq_import_params(cfg, t, &p), Status::kSuccess);
  EXPECT_EQ(p.group_size, kPerChannel);
  HostPacked out(2, 64, p);
  ASSERT_EQ(import_hqq_host(cfg, t, out.m), Status::kSuccess);
  const std::vector<float> w = dequant(out.m);
  const float runs[4] = {-4.5f, -1.5f, 1.5f, 4.5f};
  for (int c = 0; c < 64; ++c) {
    EXPECT_EQ(w[std::size_t(c)], runs[c / 16]) << c;
    EXPECT_TRUE(std::isnan(w[std::size_t(64 + c)])) << c;
  }
  EXPECT_EQ(f32_bits(static_cast<const float*>(out.m.scales)[0]), f32_bits(3.0f));
  EXPECT_EQ(f32_bits(static_cast<const float*>(out.m.offsets)[0]), f32_bits(-4.5f));
  EXPECT_EQ(f32_bits(static_cast<const float*>(out.m.scales)[1]), 0x7FFFFFFFu);
  EXPECT_EQ(f32_bits(static_cast<const float*>(out.m.offsets)[1]), 0x7FFFFFFFu);
  // group_size 64 == K keeps the literal group (same scales, same weights).
  cfg.group_size = 64;
  ASSERT_EQ(hqq_import_params(cfg, t, &p), Status::kSuccess);
  EXPECT_EQ(p.group_size, 64);
}

/// A fixture of make_hqq_fixture.py: nibble's weights equal the exact (q - zero) * scale rounded once to fp32,
/// bit for bit; rounded to the compute dtype they equal HQQ's eager dequantize wherever the zero is an integer
/// and are within one unit in the last place of it elsewhere (hqq.cuh's claim).
void run_hqq_fixture(const std::string& name) {
  LOAD_FIXTURE(fx, name);
  const int g = fx.meta("group");
  const bool bf16 = fx.meta("bf16") == 1;
  const DType type = bf16 ? DType::kBF16 : DType::kF16;
  HqqConfig cfg;
  cfg.group_size = g;
  const std::int64_t n = fx.meta("n"), k = fx.meta("k");
  const HqqTensors t = hqq_tensors(n, k, g, fx.get("w_q"), fx.get("scale"), fx.get("zero"), type, type);
  ASSERT_EQ(fx.count("w_q"), std::uint64_t(t.w_q_rows * t.w_q_row_bytes));
  ASSERT_EQ(fx.count("scale"), std::uint64_t(t.scale_count));
  QuantParams p;
  ASSERT_EQ(hqq_import_params(cfg, t, &p), Status::kSuccess);
  HostPacked out(n, k, p);
  ASSERT_EQ(import_hqq_host(cfg, t, out.m), Status::kSuccess);
  const std::vector<float> w = dequant(out.m);
  const float* expected = fx.f32("expected");
  int bad = 0;
  for (std::int64_t i = 0; i < n * k; ++i)
    if (f32_bits(w[std::size_t(i)]) != f32_bits(expected[i]) && ++bad <= 5)
      ADD_FAILURE() << "weight " << i << ": got " << w[std::size_t(i)] << ", want " << expected[i];
  EXPECT_EQ(bad, 0);
  const auto* hqq = static_cast<const std::uint16_t*>(fx.get("hqq_compute"));
  const std::int32_t* is_int = fx.i32("is_int_zero");
  const std::int64_t ge = g == kCheckpointPerChannel ? k : g;
  const auto ordered = [](std::uint16_t b) { return (b & 0x8000) ? -int(b & 0x7FFF) : int(b); };
  int differ = 0;
  for (std::int64_t i = 0; i < n * k; ++i) {
    const float v = w[std::size_t(i)];
    const std::uint16_t mine = bf16 ? bf16_bits(v) : f16_bits(v);
    const int ulps = std::abs(ordered(mine) - ordered(hqq[i]));
    EXPECT_LE(ulps, 1) << "weight " << i;
    if (is_int[i / ge]) EXPECT_EQ(ulps, 0) << "weight " << i << " (integer zero)";
    differ += ulps != 0;
  }
  std::printf("[hqq] %s: %d of %lld weights differ from HQQ's eager %s dequantize by 1 ulp\n", name.c_str(), differ,
              static_cast<long long>(n * k), bf16 ? "bf16" : "fp16");
}
TEST(Import_hqq_fixture, F16G64) { run_hqq_fixture("hqq_f16_g64"); }
TEST(Import_hqq_fixture, BF16G128) { run_hqq_fixture("hqq_bf16_g128"); }
TEST(Import_hqq_fixture, F16G64N5HalvesSplitARow) { run_hqq_fixture("hqq_f16_g64_n5"); }
TEST(Import_hqq_fixture, F16PerChannelK80) { run_hqq_fixture("hqq_f16_channel_k80"); }

/// One refused HQQ call and the Status it must return.
struct HqqRefusal {
  std::string what;
  HqqConfig cfg;
  HqqTensors t;
  const PackedMatrix* out;
  Status want;
};

/// Every refusal of hqq.cuh from one valid 8 x 64 g32 call (buffers large enough for every variant).
struct HqqRefusals {
  std::vector<std::uint8_t> w_q = std::vector<std::uint8_t>(4096, 0x5A);
  std::vector<std::uint16_t> meta = std::vector<std::uint16_t>(1024, 0x3C00);
  HqqConfig cfg;
  HqqTensors t;
  QuantParams p;
  std::unique_ptr<HostPacked> out, out_g64, out_n16;
  std::vector<HqqRefusal> list;
  HqqRefusals() {
    cfg.group_size = 32;
    t = hqq_tensors(8, 64, 32, w_q.data(), meta.data(), meta.data() + 512, DType::kF16, DType::kF16);
    EXPECT_EQ(hqq_import_params(cfg, t, &p), Status::kSuccess);
    out = std::make_unique<HostPacked>(8, 64, p);
    QuantParams q = p;
    q.group_size = 64;
    out_g64 = std::make_unique<HostPacked>(8, 64, q);
    out_n16 = std::make_unique<HostPacked>(16, 64, p);
    const auto add_cfg = [&](const char* what, auto edit, Status want) {
      HqqConfig c = cfg;
      edit(c);
      list.push_back({what, c, t, &out->m, want});
    };
    const auto add_t = [&](const char* what, auto edit, Status want) {
      HqqTensors x = t;
      edit(x);
      list.push_back({what, cfg, x, &out->m, want});
    };
    add_cfg(
        "nbits 3", [](HqqConfig& c) { c.nbits = 3; }, Status::kErrorUnsupportedFormat);
    add_cfg(
        "nbits 8", [](HqqConfig& c) { c.nbits = 8; }, Status::kErrorUnsupportedFormat);
    add_cfg(
        "axis 0", [](HqqConfig& c) { c.axis = 0; }, Status::kErrorUnsupportedFormat);
    add_cfg(
        "axis 2", [](HqqConfig& c) { c.axis = 2; }, Status::kErrorInvalidArgument);
    add_cfg(
        "axis -1", [](HqqConfig& c) { c.axis = -1; }, Status::kErrorInvalidArgument);
    add_cfg(
        "channel_wise", [](HqqConfig& c) { c.channel_wise = false; }, Status::kErrorUnsupportedFormat);
    add_cfg(
        "packing None", [](HqqConfig& c) { c.bitpacked = false; }, Status::kErrorUnsupportedFormat);
    add_cfg(
        "quant_scale", [](HqqConfig& c) { c.quant_scale = true; }, Status::kErrorUnsupportedFormat);
    add_cfg(
        "quant_zero", [](HqqConfig& c) { c.quant_zero = true; }, Status::kErrorUnsupportedFormat);
    add_cfg(
        "group 16", [](HqqConfig& c) { c.group_size = 16; }, Status::kErrorGroupSize);
    add_cfg(
        "group 48", [](HqqConfig& c) { c.group_size = 48; }, Status::kErrorGroupSize);
    add_cfg(
        "group 0", [](HqqConfig& c) { c.group_size = 0; }, Status::kErrorGroupSize);
    add_cfg(
        "group 512 > K", [](HqqConfig& c) { c.group_size = 512; }, Status::kErrorGroupSize);
    add_t(
        "scale dtype", [](HqqTensors& x) { x.scale_type = DType(7); }, Status::kErrorUnsupportedFormat);
    add_t(
        "zero dtype", [](HqqTensors& x) { x.zero_type = DType(3); }, Status::kErrorUnsupportedFormat);
    add_t(
        "n 0", [](HqqTensors& x) { x.n = 0; }, Status::kErrorInvalidShape);
    add_t(
        "k -64", [](HqqTensors& x) { x.k = -64; }, Status::kErrorInvalidShape);
    add_t(
        "k odd", [](HqqTensors& x) { x.k = 63; }, Status::kErrorInvalidShape);
    add_t(
        "k % group", [](HqqTensors& x) { x.k = 80; }, Status::kErrorGroupSize);
    add_t(
        "odd group rows",  // N = 3, K = 96, g = 32: 9 group rows, which pack_4bit_u8 cannot pair
        [](HqqTensors& x) {
          x.n = 3;
          x.k = 96;
        },
        Status::kErrorInvalidShape);
    add_t(
        "rows overflow", [](HqqTensors& x) { x.n = std::int64_t(1) << 62; }, Status::kErrorSizeOverflow);
    add_t(
        "null W_q", [](HqqTensors& x) { x.w_q = nullptr; }, Status::kErrorNullPointer);
    add_t(
        "null scale", [](HqqTensors& x) { x.scale = nullptr; }, Status::kErrorNullPointer);
    add_t(
        "null zero", [](HqqTensors& x) { x.zero = nullptr; }, Status::kErrorNullPointer);
    add_t(
        "misaligned scale", [](HqqTensors& x) { x.scale = static_cast<const std::uint8_t*>(x.scale) + 1; },
        Status::kErrorMisalignedPointer);
    add_t(
        "misaligned fp32 zero",
        [](HqqTensors& x) {
          x.zero_type = DType::kF32;
          x.zero = static_cast<const std::uint8_t*>(x.zero) + 2;
        },
        Status::kErrorMisalignedPointer);
    // axis-0 data labelled axis 1: W_q [g/2, N*K/g] = [16, 16] instead of [8, 32].
    add_t(
        "W_q shape of axis 0",
        [](HqqTensors& x) {
          x.w_q_rows = 16;
          x.w_q_row_bytes = 16;
        },
        Status::kErrorInvalidShape);
    add_t(
        "W_q rows", [](HqqTensors& x) { x.w_q_rows = 7; }, Status::kErrorInvalidShape);
    add_t(
        "W_q row bytes", [](HqqTensors& x) { x.w_q_row_bytes = 64; }, Status::kErrorInvalidShape);
    add_t(
        "scale count", [](HqqTensors& x) { x.scale_count = 15; }, Status::kErrorInvalidShape);
    add_t(
        "zero count", [](HqqTensors& x) { x.zero_count = 32; }, Status::kErrorInvalidShape);
    list.push_back({"view group", cfg, t, &out_g64->m, Status::kErrorInvalidArgument});
    list.push_back({"view n", cfg, t, &out_n16->m, Status::kErrorInvalidArgument});
    HqqTensors bf = t;
    bf.scale_type = bf.zero_type = DType::kBF16;  // accepted: the output is fp32 whatever the input
    list.push_back({"bf16 into the same view (accepted)", cfg, bf, &out->m, Status::kSuccess});
  }
};

TEST(Import_hqq_refuse, EveryStatus) {
  HqqRefusals r;
  for (const HqqRefusal& e : r.list) {
    SCOPED_TRACE(e.what);
    QuantParams p;
    const Status ps = hqq_import_params(e.cfg, e.t, &p);
    const Status s = import_hqq_host(e.cfg, e.t, *e.out);
    EXPECT_STATUS(e.want, s);
    // hqq_import_params sees metadata and shape only: it agrees with the import or accepts what the
    // later checks (pointers, stored shapes, view) refuse.
    EXPECT_TRUE(ps == s || ps == Status::kSuccess) << to_string(ps);
  }
  EXPECT_STATUS(Status::kErrorNullPointer, hqq_import_params(r.cfg, r.t, nullptr));
}

/// A random HQQ checkpoint (host vectors and their device copies): random W_q bytes; scale and zero random
/// finite values of `type` (fp16 / bf16: random bit patterns off Inf / NaN; fp32: [2^-8, 2^8)), or with
/// `raw_bits` every 16-bit pattern (Inf and NaN with any payload included: the canonical-NaN rule).
struct HqqCase {
  HqqConfig cfg;
  std::vector<std::uint8_t> w_q;
  std::vector<std::uint16_t> scale16, zero16;
  std::vector<float> scale32, zero32;
  HqqTensors host, dev;
  DevBuf dw, ds, dz;
  HqqCase(std::mt19937_64& rng, std::int64_t n, std::int64_t k, int g, DType type, bool raw_bits = false) {
    cfg.group_size = g;
    const std::int64_t ge = g == kCheckpointPerChannel ? k : g, rows = n * (k / ge);
    w_q.resize(std::size_t(rows / 2 * ge));
    for (auto& b : w_q) b = std::uint8_t(rng());
    const void* hs = nullptr;
    const void* hz = nullptr;
    if (type == DType::kF32) {
      scale32 = random_floats(rng, rows);
      zero32 = random_floats(rng, rows);
      hs = scale32.data();
      hz = zero32.data();
      ds = to_device(scale32);
      dz = to_device(zero32);
    } else {
      scale16 = random_halves(rng, rows, type);
      zero16 = random_halves(rng, rows, type);
      if (raw_bits)
        for (std::int64_t i = 0; i < rows; ++i) {
          scale16[std::size_t(i)] = std::uint16_t(rng());
          zero16[std::size_t(i)] =
              std::uint16_t(i % 7 == 0 ? (type == DType::kF16 ? 0x7C01 + i % 0x3FF : 0x7F81 + i % 0x7F) : rng());
        }
      hs = scale16.data();
      hz = zero16.data();
      ds = to_device(scale16);
      dz = to_device(zero16);
    }
    host = hqq_tensors(n, k, g, w_q.data(), hs, hz, type, type);
    dw = DevBuf(w_q.size() + 1);  // W_q at an odd address: the kernel's byte-load path
    CUDA_CHECK(cudaMemcpy(dw.as<std::uint8_t>() + 1, w_q.data(), w_q.size(), cudaMemcpyHostToDevice));
    dev = hqq_tensors(n, k, g, dw.as<std::uint8_t>() + 1, ds.get(), dz.get(), type, type);
  }
  QuantParams params() const {
    QuantParams p;
    EXPECT_EQ(hqq_import_params(cfg, host, &p), Status::kSuccess);
    return p;
  }
};

void hqq_gpu_case(std::int64_t n, std::int64_t k, int g, DType type, std::int64_t ld_extra, bool raw_bits = false) {
  auto rng = nibble_test_rng();
  HqqCase c(rng, n, k, g, type, raw_bits);
  PackedPair pp(n, k, c.params(), ld_extra);
  expect_gpu_matches_host(
      pp, [&](const PackedMatrix& m) { return import_hqq_host(c.cfg, c.host, m); },
      [&](const PackedMatrix& m, cudaStream_t s) { return import_hqq(c.cfg, c.dev, m, s); });
}

TEST(Import_hqq_gpu, F16g64_N256_K1024) {
  NIBBLE_REQUIRE_GPU();
  hqq_gpu_case(256, 1024, 64, DType::kF16, 0);
}
TEST(Import_hqq_gpu, BF16g128_N33_K512_ld3) {  // unaligned output rows: the byte-store path
  NIBBLE_REQUIRE_GPU();
  hqq_gpu_case(33, 512, 128, DType::kBF16, 3);
}
TEST(Import_hqq_gpu, F32g32_N1000_K4096) {
  NIBBLE_REQUIRE_GPU();
  hqq_gpu_case(1000, 4096, 32, DType::kF32, 0);
}
TEST(Import_hqq_gpu, F16g256_N7_K512) {  // 14 group rows: the two halves meet inside row 3
  NIBBLE_REQUIRE_GPU();
  hqq_gpu_case(7, 512, 256, DType::kF16, 0);
}
TEST(Import_hqq_gpu, F16PerChannel_N40_K80_ld1) {  // rows of 80 bytes: chunks of 32, 32, 16
  NIBBLE_REQUIRE_GPU();
  hqq_gpu_case(40, 80, kCheckpointPerChannel, DType::kF16, 1);
}
TEST(Import_hqq_gpu, RawBitsNaNCanonical_F16g32_N64_K256) {
  NIBBLE_REQUIRE_GPU();
  hqq_gpu_case(64, 256, 32, DType::kF16, 0, true);
}
TEST(Import_hqq_gpu, RawBitsNaNCanonical_BF16g64_N48_K384) {
  NIBBLE_REQUIRE_GPU();
  hqq_gpu_case(48, 384, 64, DType::kBF16, 0, true);
}

/// import_hqq captured in a CUDA graph, replayed twice with the output poisoned before each replay.
TEST(Import_hqq_gpu, CapturedImportReplays) {
  NIBBLE_REQUIRE_GPU();
  auto rng = nibble_test_rng();
  HqqCase c(rng, 96, 512, 64, DType::kBF16);
  PackedPair pp(96, 512, c.params(), 0);
  ASSERT_EQ(import_hqq_host(c.cfg, c.host, pp.hm), Status::kSuccess);
  Stream stream;
  GraphExec graph;
  capture(stream.s, graph, [&](cudaStream_t s) { return import_hqq(c.cfg, c.dev, pp.dm, s); });
  for (int replay = 0; replay < 2; ++replay) {
    pp.poison(stream.s);
    CUDA_CHECK(cudaGraphLaunch(graph.exec, stream.s));
    CUDA_CHECK(cudaStreamSynchronize(stream.s));
    SCOPED_TRACE("replay " + std::to_string(replay));
    pp.expect_same();
  }
}

/// The GPU entry refuses every HqqRefusals case with the CPU entry's Status, before any CUDA call (so this runs
/// without a GPU); a valid call without a GPU says kErrorUnsupportedDevice.
TEST(Import_gpu_refuse, HqqSameStatusAsHost) {
  HqqRefusals r;
  for (const HqqRefusal& e : r.list) {
    if (e.want == Status::kSuccess) continue;
    expect_same_refusal(
        e.what.c_str(), [&] { return import_hqq_host(e.cfg, e.t, *e.out); },
        [&] { return import_hqq(e.cfg, e.t, *e.out, nullptr); });
  }
  if (!nibble_test_has_gpu()) EXPECT_STATUS(Status::kErrorUnsupportedDevice, import_hqq(r.cfg, r.t, r.out->m, nullptr));
}

}  // namespace
