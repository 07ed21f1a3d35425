// tests/import/test_files.cu — the example file readers (examples/files/: safetensors.hpp, gguf.hpp,
// layers.hpp) on the committed fixtures of fixtures/make_files.py and on hand-made malformed buffers.
// Oracles: the fixtures' tensor listings as the safetensors / gguf Python packages wrote them; every
// imported layer against the weights of the project's reader (<file>.oracle.safetensors); GGUF Q4_0, Q4_1 and
// Q4_K against gguf-py's numpy dequantizer (gguf_q4.oracle.gguf, gguf_affine.oracle.gguf), bit for bit. Every
// malformed input must be refused with the right message, never crash (these run under the fuzz targets' ASan
// too).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "../../examples/files/gguf.hpp"
#include "../../examples/files/gguf_import.hpp"
#include "../../examples/files/layers.hpp"
#include "../../examples/files/safetensors.hpp"

using namespace nibble_files;

namespace {

std::vector<std::uint8_t> load(const std::string& name) {
  std::vector<std::uint8_t> b;
  std::string err;
  EXPECT_TRUE(read_file(std::string(NIBBLE_IMPORT_FIXTURE_DIR) + "/" + name, &b, &err)) << err;
  return b;
}

std::string text_of(const std::string& name) {
  const std::vector<std::uint8_t> b = load(name);
  return std::string(b.begin(), b.end());
}

/// Asserts a failed parse whose message contains `needle`.
void expect_error(const Result& r, const std::string& needle) {
  EXPECT_FALSE(r.ok) << "accepted; expected an error containing \"" << needle << "\"";
  EXPECT_NE(r.error.find(needle), std::string::npos) << "message: " << r.error;
}

// ---- safetensors: the fixtures ------------------------------------------------------------------------

TEST(Files_safetensors, FixtureListing) {
  const std::vector<std::uint8_t> b = load("st_ct.safetensors");
  SafetensorsFile f;
  const Result r = parse_safetensors(b.data(), b.size(), &f);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(f.header_bytes, 1632u);  // as safetensors 0.8.0 wrote it (space-padded to a multiple of 8)
  EXPECT_EQ(f.data_start, 1640u);
  ASSERT_EQ(f.tensors.size(), 10u);
  const StTensor* t = f.find("model.layers.0.mlp.up_proj.weight_packed");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, StDType::kI32);
  EXPECT_EQ(t->shape, (std::vector<std::int64_t>{16, 8}));
  EXPECT_EQ(t->begin, 48u);
  EXPECT_EQ(t->end, 560u);
  EXPECT_EQ(t->data, b.data() + 1640 + 48);
  t = f.find("model.layers.0.self_attn.v_proj.weight_scale");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->dtype, StDType::kF16);
  EXPECT_EQ(t->shape, (std::vector<std::int64_t>{8, 1}));
  EXPECT_EQ(t->begin, 1472u);
  EXPECT_EQ(t->end, 1488u);
  t = f.find("model.layers.0.mlp.up_proj.weight_shape");
  ASSERT_NE(t, nullptr);
  std::int64_t shape[2];
  std::memcpy(shape, t->data, 16);
  EXPECT_EQ(shape[0], 16);
  EXPECT_EQ(shape[1], 64);
  EXPECT_EQ(f.find("nope"), nullptr);
  ASSERT_EQ(f.metadata.count("quantization_config"), 1u);
  QuantConfig cfg;
  ASSERT_TRUE(metadata_config(f, &cfg).ok);
  EXPECT_EQ(cfg.quant_method, "compressed-tensors");
  EXPECT_EQ(cfg.ct_num_bits, (std::vector<int>{4, 4, 4}));
}

struct FileCase {
  const char* file;
  const char* config;  // side config file, or null: __metadata__ / the data
  int layers;
  int other;  // tensors that are not part of a 4-bit linear
};

class Files_safetensors_import : public ::testing::TestWithParam<FileCase> {};

/// Every linear of each fixture imports and dequantizes (nibble's dequantize_cpu) to exactly the weights
/// the project's reader computes (the oracle file), act-order permutation applied.
TEST_P(Files_safetensors_import, EqualsOracle) {
  const FileCase c = GetParam();
  const std::vector<std::uint8_t> b = load(std::string(c.file) + ".safetensors");
  const std::vector<std::uint8_t> ob = load(std::string(c.file) + ".oracle.safetensors");
  SafetensorsFile f, oracle;
  ASSERT_TRUE(parse_safetensors(b.data(), b.size(), &f).ok);
  ASSERT_TRUE(parse_safetensors(ob.data(), ob.size(), &oracle).ok);
  QuantConfig cfg;
  const Result rc = c.config ? parse_quant_config(text_of(c.config), &cfg) : metadata_config(f, &cfg);
  ASSERT_TRUE(rc.ok) << rc.error;
  std::vector<Linear> linears;
  std::vector<const StTensor*> other;
  find_linears(f, &linears, &other);
  EXPECT_EQ(int(linears.size()), c.layers);
  EXPECT_EQ(int(other.size()), c.other);
  for (const Linear& l : linears) {
    ImportedLinear imp;
    const Result r = import_linear(l, cfg, &imp);
    ASSERT_TRUE(r.ok) << r.error;
    const StTensor* want = oracle.find(l.prefix);
    ASSERT_NE(want, nullptr) << l.prefix;
    ASSERT_EQ(want->shape, (std::vector<std::int64_t>{imp.n, imp.k})) << l.prefix;
    std::vector<float> w(std::size_t(imp.n * imp.k));
    ASSERT_EQ(nibble::dequantize_cpu<float>(imp.m, w.data(), imp.k), nibble::Status::kSuccess);
    int bad = 0;
    for (std::int64_t r = 0; r < imp.n; ++r)
      for (std::int64_t p = 0; p < imp.k; ++p) {
        const std::int64_t src = imp.perm.empty() ? p : imp.perm[std::size_t(p)];
        float e;
        std::memcpy(&e, want->data + 4 * (r * imp.k + src), 4);
        if (w[std::size_t(r * imp.k + p)] != e && ++bad <= 3)
          ADD_FAILURE() << l.prefix << " (" << r << ", " << p << "): " << w[std::size_t(r * imp.k + p)] << " vs " << e;
      }
    EXPECT_EQ(bad, 0) << l.prefix << ": " << imp.description;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Files_safetensors_import,
                         ::testing::Values(FileCase{"st_gptq_sym", nullptr, 2, 0},
                                           FileCase{"st_gptq_asym", "st_gptq_asym.quantize_config.json", 1, 1},
                                           FileCase{"st_awq", nullptr, 1, 0}, FileCase{"st_awq_g64", nullptr, 1, 0},
                                           FileCase{"st_ct", nullptr, 3, 0}, FileCase{"st_bnb", nullptr, 2, 0}),
                         [](const ::testing::TestParamInfo<FileCase>& i) { return std::string(i.param.file); });

TEST(Files_safetensors, DescriptionsSayWhatWasFound) {
  const std::vector<std::uint8_t> b = load("st_bnb.safetensors");
  SafetensorsFile f;
  ASSERT_TRUE(parse_safetensors(b.data(), b.size(), &f).ok);
  std::vector<Linear> linears;
  std::vector<const StTensor*> other;
  find_linears(f, &linears, &other);
  ASSERT_EQ(linears.size(), 2u);
  ImportedLinear a, c;
  ASSERT_TRUE(import_linear(linears[0], QuantConfig{}, &a).ok);
  ASSERT_TRUE(import_linear(linears[1], QuantConfig{}, &c).ok);
  EXPECT_EQ(a.description, "bitsandbytes nf4, blocksize 64, double quant kept");
  EXPECT_TRUE(a.m.dq.enabled);
  EXPECT_EQ(c.description, "bitsandbytes fp4, blocksize 32");
}

/// Asymmetric GPTQ cannot be told v1 from v2 by its data: without the side config it is refused with a
/// message that says what to pass.
TEST(Files_safetensors, GptqAsymNeedsConfig) {
  const std::vector<std::uint8_t> b = load("st_gptq_asym.safetensors");
  SafetensorsFile f;
  ASSERT_TRUE(parse_safetensors(b.data(), b.size(), &f).ok);
  std::vector<Linear> linears;
  std::vector<const StTensor*> other;
  find_linears(f, &linears, &other);
  ASSERT_EQ(linears.size(), 1u);
  ImportedLinear imp;
  expect_error(import_linear(linears[0], QuantConfig{}, &imp), "--config");
  QuantConfig g64;
  ASSERT_TRUE(parse_quant_config(R"({"quantization_config": {"bits": 4, "group_size": 64, "sym": false,
                                     "checkpoint_format": "gptq_v2"}})",
                                 &g64)
                  .ok);
  expect_error(import_linear(linears[0], g64, &imp), "config group_size 64");
  QuantConfig b8;
  ASSERT_TRUE(parse_quant_config(R"({"bits": 8})", &b8).ok);
  expect_error(import_linear(linears[0], b8, &imp), "config bits 8");
  QuantConfig bad;
  expect_error(parse_quant_config("{\"bits\": ", &bad), "not valid JSON");
  expect_error(parse_quant_config("[1]", &bad), "not a JSON object");
}

// ---- safetensors: malformed buffers ---------------------------------------------------------------------

/// A safetensors file from a header text and `data_bytes` bytes of buffer.
/// (0x5A bytes after `data`; `length` != 0 overrides the header length field).
std::vector<std::uint8_t> st_file(const std::string& header, std::size_t data_bytes, std::uint64_t length = 0,
                                  const std::string& data = "") {
  std::vector<std::uint8_t> b(8 + header.size() + std::max(data_bytes, data.size()), 0x5A);
  const std::uint64_t n = length ? length : header.size();
  for (int i = 0; i < 8; ++i) b[std::size_t(i)] = std::uint8_t(n >> (8 * i));
  std::copy(header.begin(), header.end(), b.begin() + 8);
  std::copy(data.begin(), data.end(), b.begin() + 8 + std::ptrdiff_t(header.size()));
  return b;
}
Result st_parse(const std::vector<std::uint8_t>& b) {
  SafetensorsFile f;
  return parse_safetensors(b.data(), b.size(), &f);
}

TEST(Files_safetensors, MalformedRefused) {
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  ASSERT_TRUE(st_parse(st_file(ok, 8)).ok);
  expect_error(st_parse({1, 2, 3}), "shorter than the 8-byte header length");
  expect_error(st_parse(st_file(ok, 8, 1000)), "runs past the end of the file");
  expect_error(st_parse(st_file(ok, 8, std::uint64_t(-1))), "runs past the end of the file");
  expect_error(st_parse(st_file("", 0)), "header length is 0");
  expect_error(st_parse(st_file(" {}", 0)), "does not start with '{'");
  expect_error(st_parse(st_file("{\"a\":", 0)), "not valid JSON");
  expect_error(st_parse(st_file("{\"a\":1} x", 0)), "not valid JSON");
  expect_error(st_parse(st_file(std::string(100, '{'), 0)), "deeper than");
  // offsets out of range, reversed, overlapping, leaving a hole or bytes after the last tensor
  expect_error(st_parse(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4)),
               "past the byte buffer");
  expect_error(st_parse(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8)), "reversed");
  expect_error(st_parse(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                                    "b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                12)),
               "overlaps");
  expect_error(st_parse(st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8)), "hole");
  expect_error(st_parse(st_file(ok, 12)), "the tensors cover 8");
  expect_error(st_parse(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,9]}})", 9)),
               "span 9 bytes, dtype F32 x shape needs 8");
  // dtype, shape, offsets of the wrong kind
  expect_error(st_parse(st_file(R"({"a":{"dtype":"F31","shape":[2],"data_offsets":[0,8]}})", 8)), "unknown dtype");
  expect_error(st_parse(st_file(R"({"a":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}})", 1)), "sub-byte");
  expect_error(st_parse(st_file(R"({"a":{"dtype":7,"shape":[2],"data_offsets":[0,8]}})", 8)), "not a string");
  expect_error(st_parse(st_file(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8)), "shape entry");
  expect_error(st_parse(st_file(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8)), "shape entry");
  expect_error(st_parse(st_file(R"({"a":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8)), "not an array");
  expect_error(st_parse(st_file(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8)),
               "overflows");
  expect_error(st_parse(st_file(R"({"a":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}})", 8)),
               "byte size overflows");
  expect_error(st_parse(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}})", 8)), "[BEGIN, END]");
  expect_error(st_parse(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,-8]}})", 8)), "non-negative");
  expect_error(st_parse(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]}})", 8)),
               "non-negative");
  expect_error(st_parse(st_file(R"({"a":{"dtype":"F32","shape":[2]}})", 8)), "needs dtype, shape and data_offsets");
  expect_error(st_parse(st_file(R"({"a":[1]})", 0)), "not a JSON object");
  expect_error(st_parse(st_file(R"([1])", 0)), "does not start with '{'");
  // duplicate keys (nlohmann would keep the last silently), metadata of the wrong kind
  expect_error(st_parse(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                                    "a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
                                8)),
               "twice");
  expect_error(st_parse(st_file(R"({"__metadata__":{"k":1}})", 0)), "is not a string");
  expect_error(st_parse(st_file(R"({"__metadata__":[]})", 0)), "__metadata__ is not a JSON object");
  // empty files / empty tensors are fine
  EXPECT_TRUE(st_parse(st_file("{}", 0)).ok);
  EXPECT_TRUE(st_parse(st_file(R"({"z":{"dtype":"U8","shape":[0,3],"data_offsets":[0,0]}})", 0)).ok);
}

/// Every truncation of a real fixture is refused cleanly, never read past.
TEST(Files_safetensors, EveryTruncationRefused) {
  const std::vector<std::uint8_t> b = load("st_gptq_sym.safetensors");
  for (std::size_t len = 0; len < b.size(); ++len) {
    std::vector<std::uint8_t> cut(b.begin(), b.begin() + std::ptrdiff_t(len));  // exact size: ASan bounds it
    SafetensorsFile f;
    EXPECT_FALSE(parse_safetensors(cut.data(), cut.size(), &f).ok) << len;
  }
}

/// Tensors with the right names but the wrong shapes or dtypes are refused before any importer runs.
TEST(Files_safetensors, LayerShapeChecks) {
  auto import_one = [](const std::string& header, std::size_t bytes, const std::string& data = "") {
    const std::vector<std::uint8_t> b = st_file(header, bytes, 0, data);
    SafetensorsFile f;
    Result r = parse_safetensors(b.data(), b.size(), &f);
    if (!r.ok) return r;
    std::vector<Linear> linears;
    std::vector<const StTensor*> other;
    find_linears(f, &linears, &other);
    if (linears.size() != 1) return Result::failure("no linear");
    ImportedLinear imp;
    return import_linear(linears[0], QuantConfig{}, &imp);
  };
  // GPTQ, K = 64, N = 8, group 32: qweight [8, 8], qzeros [2, 1], scales [2, 8]
  expect_error(import_one(R"({"l.qweight":{"dtype":"I32","shape":[8,8],"data_offsets":[0,256]},
                              "l.qzeros":{"dtype":"I32","shape":[2,1],"data_offsets":[256,264]},
                              "l.scales":{"dtype":"F16","shape":[3,8],"data_offsets":[264,312]}})",
                          312),
               "do not fit");
  expect_error(import_one(R"({"l.qweight":{"dtype":"F32","shape":[8,8],"data_offsets":[0,256]},
                              "l.qzeros":{"dtype":"I32","shape":[2,1],"data_offsets":[256,264]},
                              "l.scales":{"dtype":"F16","shape":[2,8],"data_offsets":[264,296]}})",
                          296),
               "expected I32 [K/8, N]");
  expect_error(import_one(R"({"l.qweight":{"dtype":"I32","shape":[8,8],"data_offsets":[0,256]},
                              "l.scales":{"dtype":"F16","shape":[2,8],"data_offsets":[256,288]}})",
                          288),
               "needs qweight, qzeros and scales");
  // bitsandbytes: absmax one element short (the quant_state JSON first in the buffer)
  const std::string state = R"({"quant_type": "nf4", "blocksize": 64, "shape": [2, 64]})";
  const std::string n = std::to_string(state.size());
  expect_error(import_one(R"({"l.weight":{"dtype":"U8","shape":[64,1],"data_offsets":[0,64]},
                              "l.weight.absmax":{"dtype":"F32","shape":[1],"data_offsets":[64,68]},
                              "l.weight.quant_map":{"dtype":"F32","shape":[16],"data_offsets":[68,132]},
                              "l.weight.quant_state.bitsandbytes__nf4":{"dtype":"U8","shape":[)" +
                              n + R"(],"data_offsets":[132,)" + std::to_string(132 + state.size()) + "]}}",
                          132 + state.size(), std::string(132, '\0') + state),
               "absmax F32 [1]: expected F32 [2]");
  // compressed-tensors: weight_shape holds garbage (0x5A bytes)
  expect_error(import_one(R"({"l.weight_packed":{"dtype":"I32","shape":[8,16],"data_offsets":[0,512]},
                              "l.weight_scale":{"dtype":"F16","shape":[8,1],"data_offsets":[512,528]},
                              "l.weight_shape":{"dtype":"I64","shape":[2],"data_offsets":[528,544]}})",
                          544),
               "weight_shape [");
}

// ---- GGUF: the fixture ----------------------------------------------------------------------------------

TEST(Files_gguf, FixtureListingAndValues) {
  const std::vector<std::uint8_t> b = load("gguf_q4.gguf");
  GgufFile f;
  const Result r = parse_gguf(b.data(), b.size(), &f);
  ASSERT_TRUE(r.ok) << r.error;
  EXPECT_EQ(f.version, 3u);
  EXPECT_EQ(f.alignment, 64u);
  EXPECT_EQ(f.data_start, 896u);  // gguf-py's GGUFReader: data_offset 896
  ASSERT_EQ(f.tensors.size(), 5u);
  const char* names[] = {"blk.0.attn_q.weight", "blk.0.ffn_up.weight", "token_embd.weight", "blk.0.attn_k.weight",
                         "output_norm.weight"};
  const std::uint32_t types[] = {kGgmlQ4_0, kGgmlQ4_1, 1, kGgmlQ4_0, 0};
  const std::uint64_t offsets[] = {0, 1152, 1472, 1984, 2304};
  const std::size_t bytes[] = {1152, 320, 512, 288, 128};
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(f.tensors[std::size_t(i)].name, names[i]);
    EXPECT_EQ(f.tensors[std::size_t(i)].type, types[i]);
    EXPECT_EQ(f.tensors[std::size_t(i)].offset, offsets[i]);
    EXPECT_EQ(f.tensors[std::size_t(i)].bytes, bytes[i]);
  }
  EXPECT_EQ(f.tensors[0].ne, (std::vector<std::int64_t>{128, 16}));
  EXPECT_EQ(f.tensors[4].ne, (std::vector<std::int64_t>{32}));
  auto kv = [&](const char* key) {
    const GgufKv* p = f.find_kv(key);
    EXPECT_NE(p, nullptr) << key;
    static const GgufValue none;
    return p ? p->value : none;
  };
  EXPECT_EQ(kv("general.architecture").str, "llama");
  EXPECT_EQ(kv("test.u8").as_u64(), 200u);
  EXPECT_EQ(kv("test.i8").as_i64(), -100);
  EXPECT_EQ(kv("test.u16").as_u64(), 60000u);
  EXPECT_EQ(kv("test.i16").as_i64(), -30000);
  EXPECT_EQ(kv("test.u32").as_u64(), 4000000000u);
  EXPECT_EQ(kv("test.i32").as_i64(), -2000000000);
  EXPECT_EQ(kv("test.f32").as_f64(), 0.25);
  EXPECT_EQ(kv("test.bool").as_u64(), 1u);
  EXPECT_EQ(kv("test.string").str, "nibble");
  EXPECT_EQ(kv("test.u64").as_u64(), (std::uint64_t(1) << 63) + 5);
  EXPECT_EQ(kv("test.i64").as_i64(), -(std::int64_t(1) << 62));
  EXPECT_EQ(kv("test.f64").as_f64(), -1.5);
  const GgufValue a = kv("test.array_i32");
  EXPECT_EQ(a.elem_type, GgufType::kI32);
  ASSERT_EQ(a.count, 3u);
  std::int32_t second;
  std::memcpy(&second, a.raw + 4, 4);
  EXPECT_EQ(second, -2);
  const GgufValue s = kv("test.array_str");
  ASSERT_EQ(s.items.size(), 3u);
  EXPECT_EQ(s.items[1].str, "bc");
  EXPECT_EQ(s.items[2].str, "");
  const GgufValue nested = kv("test.array_nested");
  EXPECT_EQ(nested.elem_type, GgufType::kArray);
  ASSERT_EQ(nested.items.size(), 2u);
  EXPECT_EQ(nested.items[0].count, 2u);
  EXPECT_EQ(nested.items[1].count, 1u);
}

/// Every 4-bit tensor of `file` that nibble imports (examples/files/gguf_import.hpp) equals gguf-py's numpy
/// dequantize (the tensor of the same name in `oracle_file`) bit for bit; returns how many of each type
/// (Q4_0, Q4_1, Q4_K) were checked.
std::vector<int> check_against_gguf_py(const std::string& file, const std::string& oracle_file) {
  std::vector<int> checked(3, 0);
  const std::vector<std::uint8_t> b = load(file), ob = load(oracle_file);
  GgufFile f, oracle;
  EXPECT_TRUE(parse_gguf(b.data(), b.size(), &f).ok);
  EXPECT_TRUE(parse_gguf(ob.data(), ob.size(), &oracle).ok);
  for (const GgufTensor& t : f.tensors) {
    const GgufImporter* imp_fn = gguf_importer(t.type);
    if (imp_fn == nullptr) continue;
    SCOPED_TRACE(t.name + " " + imp_fn->name);
    const std::int64_t k = t.ne[0], n = t.ne[1];
    nibble::QuantParams p;
    EXPECT_EQ(imp_fn->params(n, k, &p), nibble::Status::kSuccess);
    ImportedLinear imp;
    EXPECT_EQ(imp.carve(n, k, p), nibble::Status::kSuccess);
    EXPECT_EQ(imp_fn->import_host(t.data, t.bytes, n, k, imp.m), nibble::Status::kSuccess);
    std::vector<float> w(std::size_t(n * k));
    EXPECT_EQ(nibble::dequantize_cpu<float>(imp.m, w.data(), k), nibble::Status::kSuccess);
    const GgufTensor* want = oracle.find_tensor(t.name);
    if (want == nullptr) {
      ADD_FAILURE() << "no oracle tensor";
      continue;
    }
    EXPECT_EQ(want->type, 0u);
    EXPECT_EQ(want->bytes, w.size() * 4);
    if (want->bytes == w.size() * 4) EXPECT_EQ(std::memcmp(want->data, w.data(), want->bytes), 0);
    ++checked[t.type == kGgmlQ4_0 ? 0 : t.type == kGgmlQ4_1 ? 1 : 2];
  }
  return checked;
}

/// Q4_0 and Q4_1 imported by nibble equal gguf-py's numpy dequantize bit for bit (the second Q4_0 starts
/// after a Q4_1 and an F16 tensor, so the offsets are exercised too).
TEST(Files_gguf, Q4_0AndQ4_1EqualGgufPyDequantize) {
  EXPECT_EQ(check_against_gguf_py("gguf_q4.gguf", "gguf_q4.oracle.gguf"), (std::vector<int>{2, 1, 0}));
}

/// The affine u4 fixture: Q4_1 (gguf-py's quantizer, one constant block), Q4_K (random super-blocks, one with
/// d = dmin = 0, one with every 6-bit scale and min 63) and Q4_0, each equal to gguf-py's dequantize bit for bit.
TEST(Files_gguf, AffineQ4_1AndQ4_KEqualGgufPyDequantize) {
  EXPECT_EQ(check_against_gguf_py("gguf_affine.gguf", "gguf_affine.oracle.gguf"), (std::vector<int>{1, 1, 1}));
  // The Q4_K oracle is not trivial: its weights are not all on one grid, and some are negative.
  const std::vector<std::uint8_t> ob = load("gguf_affine.oracle.gguf");
  GgufFile oracle;
  ASSERT_TRUE(parse_gguf(ob.data(), ob.size(), &oracle).ok);
  const GgufTensor* q4k = oracle.find_tensor("blk.0.ffn_down.weight");
  ASSERT_NE(q4k, nullptr);
  ASSERT_EQ(q4k->ne, (std::vector<std::int64_t>{512, 4}));
  int negative = 0, zero = 0;
  for (std::size_t i = 0; i < 512 * 4; ++i) {
    float v;
    std::memcpy(&v, q4k->data + 4 * i, 4);
    negative += v < 0;
    zero += v == 0;
  }
  EXPECT_GT(negative, 100);
  EXPECT_GE(zero, 256) << "the super-block with d = dmin = 0";
}

TEST(Files_gguf, VersionsAndMagic) {
  std::vector<std::uint8_t> b = load("gguf_q4.gguf");
  GgufFile f;
  b[4] = 2;  // v2 has the same layout
  EXPECT_TRUE(parse_gguf(b.data(), b.size(), &f).ok);
  EXPECT_EQ(f.version, 2u);
  b[4] = 1;
  expect_error(parse_gguf(b.data(), b.size(), &f), "version 1 is not supported");
  b[4] = 4;
  expect_error(parse_gguf(b.data(), b.size(), &f), "unsupported GGUF version 4");
  b[4] = 0;
  b[7] = 3;  // a big-endian v3 file
  expect_error(parse_gguf(b.data(), b.size(), &f), "big-endian");
  b[7] = 0;
  b[4] = 3;
  b[0] = 'g';
  expect_error(parse_gguf(b.data(), b.size(), &f), "bad magic");
  expect_error(parse_gguf(b.data(), 0, &f), "file ends inside the magic");
}

TEST(Files_gguf, EveryTruncationRefused) {
  const std::vector<std::uint8_t> b = load("gguf_q4.gguf");
  for (std::size_t len = 0; len < b.size(); ++len) {
    std::vector<std::uint8_t> cut(b.begin(), b.begin() + std::ptrdiff_t(len));
    GgufFile f;
    EXPECT_FALSE(parse_gguf(cut.data(), cut.size(), &f).ok) << len;
  }
}

// ---- GGUF: malformed buffers ----------------------------------------------------------------------------

/// Writes GGUF fields little-endian.
struct GgufBuilder {
  std::vector<std::uint8_t> b;
  GgufBuilder& u8(std::uint8_t v) {
    b.push_back(v);
    return *this;
  }
  GgufBuilder& u32(std::uint32_t v) {
    for (int i = 0; i < 4; ++i) b.push_back(std::uint8_t(v >> (8 * i)));
    return *this;
  }
  GgufBuilder& u64(std::uint64_t v) {
    for (int i = 0; i < 8; ++i) b.push_back(std::uint8_t(v >> (8 * i)));
    return *this;
  }
  GgufBuilder& str(const std::string& s) {
    u64(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  GgufBuilder& header(std::uint64_t tensors, std::uint64_t kvs) { return u32(kGgufMagic).u32(3).u64(tensors).u64(kvs); }
  /// One tensor info.
  GgufBuilder& tensor(const std::string& name, std::vector<std::uint64_t> ne, std::uint32_t type, std::uint64_t off) {
    str(name).u32(std::uint32_t(ne.size()));
    for (std::uint64_t d : ne) u64(d);
    return u32(type).u64(off);
  }
  GgufBuilder& pad_to(std::size_t align) {
    while (b.size() % align) b.push_back(0);
    return *this;
  }
  GgufBuilder& zeros(std::size_t n) {
    b.resize(b.size() + n, 0);
    return *this;
  }
  Result parse() const {
    GgufFile f;
    return parse_gguf(b.data(), b.size(), &f);
  }
};

TEST(Files_gguf, MalformedRefused) {
  // A valid baseline: one Q4_0 tensor [N 2, K 32] = 36 bytes at offset 0.
  {
    GgufBuilder g;
    g.header(1, 0).tensor("w", {32, 2}, kGgmlQ4_0, 0).pad_to(32).zeros(36);
    ASSERT_TRUE(g.parse().ok) << g.parse().error;
  }
  expect_error(GgufBuilder{}.header(0, std::uint64_t(-1)).parse(), "kv count");
  expect_error(GgufBuilder{}.header(std::uint64_t(1) << 40, 0).parse(), "tensor count");
  expect_error(GgufBuilder{}.header(0, 1).u64(std::uint64_t(-1)).zeros(8).parse(), "key length");
  expect_error(GgufBuilder{}.header(0, 1).str("").u32(0).u8(0).parse(), "empty key");
  expect_error(GgufBuilder{}.header(0, 1).str(std::string(70000, 'k')).u32(0).u8(0).parse(), "exceeds 65535");
  expect_error(GgufBuilder{}.header(0, 1).str("a").u32(13).u8(0).parse(), "unknown value type 13");
  expect_error(GgufBuilder{}.header(0, 1).str("a").u32(7).u8(2).parse(), "BOOL value is neither 0 nor 1");
  expect_error(GgufBuilder{}.header(0, 1).str("a").u32(8).u64(1000).parse(), "string length 1000 runs past");
  expect_error(GgufBuilder{}.header(0, 1).str("a").u32(9).u32(4).u64(std::uint64_t(-1) / 2).parse(),
               "cannot fit");  // 2^63 UINT32 elements: refused from the count, nothing allocated
  expect_error(GgufBuilder{}.header(0, 1).str("a").u32(9).u32(8).u64(std::uint64_t(1) << 60).parse(), "cannot fit");
  expect_error(GgufBuilder{}.header(0, 1).str("a").u32(9).u32(21).u64(0).parse(), "unknown array element type 21");
  {
    GgufBuilder g;
    g.header(0, 1).str("a").u32(9);
    for (int i = 0; i < 9; ++i) g.u32(9).u64(1);  // arrays of arrays, nine deep
    g.u32(0).u64(1).u8(0);
    expect_error(g.parse(), "nested too deep");
  }
  expect_error(GgufBuilder{}.header(0, 2).str("a").u32(0).u8(1).str("a").u32(0).u8(2).parse(), "appears twice");
  // alignment
  expect_error(GgufBuilder{}.header(0, 1).str("general.alignment").u32(4).u32(0).parse(), "not a non-zero power");
  expect_error(GgufBuilder{}.header(0, 1).str("general.alignment").u32(4).u32(48).parse(), "not a non-zero power");
  expect_error(GgufBuilder{}.header(0, 1).str("general.alignment").u32(10).u64(64).parse(), "must be UINT32");
  {
    GgufBuilder g;
    g.header(1, 1).str("general.alignment").u32(4).u32(64).tensor("w", {32, 2}, kGgmlQ4_0, 32).pad_to(64).zeros(96);
    expect_error(g.parse(), "not a multiple of the alignment 64");
  }
  // tensor infos
  auto one = [](const std::string& name, std::vector<std::uint64_t> ne, std::uint32_t type, std::uint64_t off,
                std::size_t data) {
    GgufBuilder g;
    g.header(1, 0).tensor(name, ne, type, off).pad_to(32).zeros(data);
    return g.parse();
  };
  expect_error(one("w", {32, 2}, kGgmlQ4_0, 0, 35), "runs past the data section");
  expect_error(one("w", {32, 2}, kGgmlQ4_0, std::uint64_t(-32), 36), "runs past the data section");
  expect_error(one("w", {32, 2}, 4, 0, 36), "unknown ggml type 4");
  expect_error(one("w", {32, 2}, 99, 0, 36), "unknown ggml type 99");
  expect_error(one("w", {31, 2}, kGgmlQ4_0, 0, 36), "not a multiple of the Q4_0 block (32)");
  expect_error(one("w", {32, 2, 1, 1, 1}, kGgmlQ4_0, 0, 36), "n_dims 5");
  expect_error(one("w", {}, kGgmlQ4_0, 0, 36), "n_dims 0");
  expect_error(one("w", {std::uint64_t(-1)}, 0, 0, 36), "negative");
  expect_error(one("w", {std::uint64_t(1) << 32, std::uint64_t(1) << 32}, 0, 0, 36), "overflows");
  expect_error(one("w", {std::uint64_t(1) << 62}, 0, 0, 36), "byte size overflows");
  expect_error(one("", {32}, 0, 0, 128), "empty tensor name");
  expect_error(one(std::string(65, 'n'), {32}, 0, 0, 128), "exceeds 64");
  {
    GgufBuilder g;  // two tensors whose data overlap
    g.header(2, 0).tensor("a", {32, 2}, kGgmlQ4_0, 0).tensor("b", {32}, 0, 32).pad_to(32).zeros(256);
    expect_error(g.parse(), "overlaps");
  }
  {
    GgufBuilder g;
    g.header(2, 0).tensor("a", {32}, 0, 0).tensor("a", {32}, 0, 128).pad_to(32).zeros(256);
    expect_error(g.parse(), "appears twice");
  }
  {
    GgufBuilder g;  // the data section would start past the end of the file
    g.header(1, 0).tensor("a", {8}, 0, 0);
    g.b.resize(g.b.size() - 0);
    expect_error(g.parse(), "past the end of the file");
  }
}

}  // namespace
