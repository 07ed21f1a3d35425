// examples/files/gguf.hpp — a bounds-checked reader of the GGUF (v2 / v3) header, from an in-memory span.
//
// The format (ggml docs/gguf.md "File Structure"; ggml/src/gguf.cpp gguf_init_from_file_impl; gguf-py
// gguf/constants.py GGUFValueType, GGMLQuantizationType, GGML_QUANT_SIZES; gguf/gguf_writer.py), all
// little-endian:
//
//   u32 magic "GGUF" (bytes 47 47 55 46)   u32 version (2 or 3: v1 had 32-bit counts; v3 only added big-endian
//   files, whose version then reads 0x03000000 here and is refused)   u64 tensor_count   u64 kv_count
//   kv_count x  { string key; u32 value_type; value }
//   tensor_count x { string name; u32 n_dims; u64 ne[n_dims] (fastest first); u32 ggml_type; u64 offset }
//   padding to `alignment` (general.alignment, a u32 power of two, default 32); then the data section, each
//   tensor at data_start + offset (offset a multiple of the alignment)
//   string = u64 length + bytes (no terminator); value = one of GgufType below; ARRAY = u32 element type +
//   u64 count + count values of that type (arrays of arrays allowed).
//
// What is checked, every failure a Result naming the field and its file offset: each read stays inside the
// buffer; counts are bounded by the bytes left before anything is reserved (a count of 2^64 - 1 fails at
// once, it does not allocate); magic, version, value types, bools 0 / 1, keys 1..65535 bytes and unique,
// arrays nested at most kGgufMaxArrayDepth; general.alignment a non-zero power-of-two UINT32; tensor names
// 1..64 bytes (GGML_MAX_NAME) and unique, 1..4 dims, each >= 0, a known ggml type, ne[0] a multiple of the
// type's block, element count and byte size without overflow, offset aligned, data inside the file, no two
// tensors' data overlapping. Arithmetic on offsets is overflow-checked (bytes.hpp).
#pragma once

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "bytes.hpp"

namespace nibble_files {

/// GGUF metadata value types (gguf-py constants.py GGUFValueType).
enum class GgufType : std::uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
inline constexpr std::uint32_t kGgufTypeCount = 13;

inline const char* to_string(GgufType t) {
  static const char* const kNames[kGgufTypeCount] = {"UINT8",  "INT8",    "UINT16", "INT16",  "UINT32",
                                                     "INT32",  "FLOAT32", "BOOL",   "STRING", "ARRAY",
                                                     "UINT64", "INT64",   "FLOAT64"};
  return std::uint32_t(t) < kGgufTypeCount ? kNames[std::uint32_t(t)] : "?";
}
/// Bytes of a scalar value of type t (0 for STRING and ARRAY).
inline std::uint32_t gguf_scalar_bytes(GgufType t) {
  static const std::uint32_t kBytes[kGgufTypeCount] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
  return std::uint32_t(t) < kGgufTypeCount ? kBytes[std::uint32_t(t)] : 0;
}

/// A metadata value. Scalars: `bits` holds the raw little-endian bits (use as_u64 / as_i64 / as_f64).
/// STRING: `str`. ARRAY: `elem_type`, `count`, and either `raw` (scalar elements, count * size bytes in the
/// caller's span) or `items` (STRING / ARRAY elements).
struct GgufValue {
  GgufType type = GgufType::kU8;
  std::uint64_t bits = 0;
  std::string str;
  GgufType elem_type = GgufType::kU8;
  std::uint64_t count = 0;
  const std::uint8_t* raw = nullptr;
  std::vector<GgufValue> items;

  bool is_unsigned() const {
    return type == GgufType::kU8 || type == GgufType::kU16 || type == GgufType::kU32 || type == GgufType::kU64;
  }
  bool is_signed() const {
    return type == GgufType::kI8 || type == GgufType::kI16 || type == GgufType::kI32 || type == GgufType::kI64;
  }
  std::uint64_t as_u64() const { return bits; }
  std::int64_t as_i64() const {  // sign-extended from the stored width
    const std::uint32_t b = gguf_scalar_bytes(type);
    if (b == 0 || b == 8) return std::int64_t(bits);
    const std::uint64_t sign = std::uint64_t(1) << (8 * b - 1);
    return std::int64_t((bits ^ sign) - sign);
  }
  double as_f64() const {
    if (type == GgufType::kF32) {
      float f;
      const auto w = std::uint32_t(bits);
      std::memcpy(&f, &w, 4);
      return f;
    }
    double d;
    std::memcpy(&d, &bits, 8);
    return d;
  }
};

struct GgufKv {
  std::string key;
  GgufValue value;
};

/// ggml tensor types: name, block size (elements), block bytes (gguf-py constants.py GGML_QUANT_SIZES,
/// gguf 0.19.0; ggml/src/ggml.c type_traits). Ids not listed (4, 5, 31-33, 36-38: removed types) are unknown.
struct GgmlTypeInfo {
  std::uint32_t id;
  const char* name;
  std::uint32_t block;
  std::uint32_t block_bytes;
};
inline constexpr GgmlTypeInfo kGgmlTypes[] = {
    {0, "F32", 1, 4},         {1, "F16", 1, 2},         {2, "Q4_0", 32, 18},      {3, "Q4_1", 32, 20},
    {6, "Q5_0", 32, 22},      {7, "Q5_1", 32, 24},      {8, "Q8_0", 32, 34},      {9, "Q8_1", 32, 40},
    {10, "Q2_K", 256, 84},    {11, "Q3_K", 256, 110},   {12, "Q4_K", 256, 144},   {13, "Q5_K", 256, 176},
    {14, "Q6_K", 256, 210},   {15, "Q8_K", 256, 292},   {16, "IQ2_XXS", 256, 66}, {17, "IQ2_XS", 256, 74},
    {18, "IQ3_XXS", 256, 98}, {19, "IQ1_S", 256, 50},   {20, "IQ4_NL", 32, 18},   {21, "IQ3_S", 256, 110},
    {22, "IQ2_S", 256, 82},   {23, "IQ4_XS", 256, 136}, {24, "I8", 1, 1},         {25, "I16", 1, 2},
    {26, "I32", 1, 4},        {27, "I64", 1, 8},        {28, "F64", 1, 8},        {29, "IQ1_M", 256, 56},
    {30, "BF16", 1, 2},       {34, "TQ1_0", 256, 54},   {35, "TQ2_0", 256, 66},   {39, "MXFP4", 32, 17},
    {40, "NVFP4", 64, 36},    {41, "Q1_0", 128, 18},
};
inline constexpr std::uint32_t kGgmlQ4_0 = 2, kGgmlQ4_1 = 3, kGgmlQ4_K = 12;

inline const GgmlTypeInfo* ggml_type_info(std::uint32_t id) {
  for (const GgmlTypeInfo& t : kGgmlTypes)
    if (t.id == id) return &t;
  return nullptr;
}

struct GgufTensor {
  std::string name;
  std::uint32_t type = 0;        ///< ggml type id (ggml_type_info for its name and block)
  std::vector<std::int64_t> ne;  ///< dims, fastest first: a matrix [rows N, cols K] has ne = {K, N}
  std::uint64_t offset = 0;      ///< relative to the data section
  const std::uint8_t* data = nullptr;
  std::size_t bytes = 0;
  std::int64_t numel = 0;
};

struct GgufFile {
  std::uint32_t version = 0;
  std::uint64_t alignment = 32;
  std::uint64_t data_start = 0;     ///< file offset of the data section
  std::vector<GgufKv> kv;           ///< in file order
  std::vector<GgufTensor> tensors;  ///< in file order

  const GgufKv* find_kv(const std::string& key) const {
    for (const GgufKv& k : kv)
      if (k.key == key) return &k;
    return nullptr;
  }
  const GgufTensor* find_tensor(const std::string& name) const {
    for (const GgufTensor& t : tensors)
      if (t.name == name) return &t;
    return nullptr;
  }
};

inline constexpr std::uint32_t kGgufMagic = 0x46554747u;  ///< "GGUF" read as a little-endian u32
inline constexpr std::uint64_t kGgufDefaultAlignment = 32;
inline constexpr int kGgufMaxArrayDepth = 8;
inline constexpr std::uint64_t kGgufMaxKeyBytes = 65535;  ///< docs/gguf.md: keys at most 2^16 - 1 bytes
inline constexpr std::uint64_t kGgufMaxNameBytes = 64;    ///< GGML_MAX_NAME

namespace detail {

class GgufParser {
 public:
  GgufParser(const std::uint8_t* data, std::size_t size) : cur_(data, size) {}
  Cursor cur_;

  Result fail(const char* what) const { return Result::failure(message("offset %zu: %s", cur_.pos(), what)); }
  Result truncated(const char* what) const {
    return Result::failure(message("offset %zu: file ends inside %s (%zu bytes left)", cur_.pos(), what, cur_.left()));
  }

  Result string(std::string* out, std::uint64_t max_len, const char* what) {
    std::uint64_t len = 0;
    if (!cur_.read(&len)) return truncated(what);
    if (len > cur_.left())
      return Result::failure(message("offset %zu: %s length %llu runs past the end of the file (%zu bytes left)",
                                     cur_.pos() - 8, what, (unsigned long long)len, cur_.left()));
    if (len > max_len)
      return Result::failure(message("offset %zu: %s length %llu exceeds %llu", cur_.pos() - 8, what,
                                     (unsigned long long)len, (unsigned long long)max_len));
    out->assign(reinterpret_cast<const char*>(cur_.here()), std::size_t(len));
    cur_.skip(len);
    return Result::success();
  }

  Result value(GgufType type, int depth, GgufValue* v) {
    v->type = type;
    if (std::uint32_t(type) >= kGgufTypeCount) return fail("unknown value type");
    if (type == GgufType::kString) return string(&v->str, std::numeric_limits<std::uint64_t>::max(), "string");
    if (type != GgufType::kArray) {
      const std::uint32_t b = gguf_scalar_bytes(type);
      if (cur_.left() < b) return truncated(to_string(type));
      for (std::uint32_t i = 0; i < b; ++i) v->bits |= std::uint64_t(cur_.here()[i]) << (8 * i);
      if (type == GgufType::kBool && v->bits > 1) return fail("BOOL value is neither 0 nor 1");
      cur_.skip(b);
      return Result::success();
    }
    if (depth >= kGgufMaxArrayDepth) return fail("arrays nested too deep");
    std::uint32_t et = 0;
    if (!cur_.read(&et) || !cur_.read(&v->count)) return truncated("array header");
    if (et >= kGgufTypeCount)
      return Result::failure(message("offset %zu: unknown array element type %u", cur_.pos() - 12, et));
    v->elem_type = GgufType(et);
    // The least bytes one element takes: its size, or a string's / an array's length fields.
    const std::uint64_t min_bytes = v->elem_type == GgufType::kString  ? 8
                                    : v->elem_type == GgufType::kArray ? 12
                                                                       : gguf_scalar_bytes(v->elem_type);
    if (v->count > cur_.left() / min_bytes)
      return Result::failure(message("offset %zu: array of %llu %s elements cannot fit in the %zu bytes left",
                                     cur_.pos() - 8, (unsigned long long)v->count, to_string(v->elem_type),
                                     cur_.left()));
    if (v->elem_type != GgufType::kString && v->elem_type != GgufType::kArray) {
      v->raw = cur_.here();
      cur_.skip(v->count * min_bytes);  // fits: checked just above
      if (v->elem_type == GgufType::kBool)
        for (std::uint64_t i = 0; i < v->count; ++i)
          if (v->raw[i] > 1) return fail("BOOL array element is neither 0 nor 1");
      return Result::success();
    }
    // Elements are appended as they parse (each consumed >= min_bytes), never reserved from the count.
    for (std::uint64_t i = 0; i < v->count; ++i) {
      v->items.emplace_back();
      GgufValue& item = v->items.back();
      if (v->elem_type == GgufType::kString) {
        item.type = GgufType::kString;
        Result r = string(&item.str, std::numeric_limits<std::uint64_t>::max(), "array string");
        if (!r.ok) return r;
      } else {
        Result r = value(GgufType::kArray, depth + 1, &item);
        if (!r.ok) return r;
      }
    }
    return Result::success();
  }
};

}  // namespace detail

/// Parses a GGUF file held in [data, data + size) into *out (replaced); tensor data is not copied
/// (GgufTensor::data points into the span). On failure *out is unspecified and the Result says why.
inline Result parse_gguf(const std::uint8_t* data, std::size_t size, GgufFile* out) {
  *out = GgufFile{};
  if (data == nullptr) return Result::failure("no data");
  detail::GgufParser p(data, size);
  Cursor& cur = p.cur_;
  std::uint32_t magic = 0;
  if (!cur.read(&magic)) return p.truncated("the magic");
  if (magic != kGgufMagic) return Result::failure(message("bad magic 0x%08x (not a GGUF file)", magic));
  if (!cur.read(&out->version)) return p.truncated("the version");
  if (out->version == 1) return Result::failure("GGUF version 1 is not supported (32-bit counts; v2 and v3 are)");
  if (out->version != 2 && out->version != 3)
    return Result::failure(
        message("unsupported GGUF version %u (v2 and v3 are read; a big-endian file reads as "
                "0x03000000)",
                out->version));
  std::uint64_t tensor_count = 0, kv_count = 0;
  if (!cur.read(&tensor_count) || !cur.read(&kv_count)) return p.truncated("the counts");
  // One KV takes >= 13 bytes (key length, type, 1-byte value), one tensor info >= 32 (name length, n_dims,
  // one dim, type, offset): a count the rest of the file cannot hold is refused before anything is stored.
  if (kv_count > cur.left() / 13)
    return Result::failure(
        message("kv count %llu cannot fit in the %zu bytes left", (unsigned long long)kv_count, cur.left()));
  std::set<std::string> seen;  // duplicate keys, then duplicate tensor names (log n per item: no quadratic scan)
  for (std::uint64_t i = 0; i < kv_count; ++i) {
    GgufKv kv;
    Result r = p.string(&kv.key, kGgufMaxKeyBytes, "key");
    if (!r.ok) return r;
    if (kv.key.empty()) return p.fail("empty key");
    std::uint32_t type = 0;
    if (!cur.read(&type)) return p.truncated("a value type");
    if (type >= kGgufTypeCount)
      return Result::failure(
          message("offset %zu: key \"%.100s\" has unknown value type %u", cur.pos() - 4, kv.key.c_str(), type));
    r = p.value(GgufType(type), 0, &kv.value);
    if (!r.ok) return Result::failure(r.error + " (value of \"" + kv.key.substr(0, 100) + "\")");
    if (!seen.insert(kv.key).second) return Result::failure(message("key \"%.100s\" appears twice", kv.key.c_str()));
    out->kv.push_back(std::move(kv));
  }
  if (const GgufKv* a = out->find_kv("general.alignment")) {
    if (a->value.type != GgufType::kU32)
      return Result::failure(message("general.alignment is %s, must be UINT32", to_string(a->value.type)));
    const std::uint64_t v = a->value.as_u64();
    if (v == 0 || (v & (v - 1)) != 0)
      return Result::failure(message("general.alignment %llu is not a non-zero power of two", (unsigned long long)v));
    out->alignment = v;
  }

  seen.clear();
  if (tensor_count > cur.left() / 32)
    return Result::failure(
        message("tensor count %llu cannot fit in the %zu bytes left", (unsigned long long)tensor_count, cur.left()));
  for (std::uint64_t i = 0; i < tensor_count; ++i) {
    GgufTensor t;
    Result r = p.string(&t.name, kGgufMaxNameBytes, "tensor name");
    if (!r.ok) return r;
    if (t.name.empty()) return p.fail("empty tensor name");
    const char* nm = t.name.c_str();
    std::uint32_t n_dims = 0;
    if (!cur.read(&n_dims)) return p.truncated("n_dims");
    if (n_dims < 1 || n_dims > 4) return Result::failure(message("tensor \"%s\": n_dims %u is not 1..4", nm, n_dims));
    std::uint64_t numel = 1;
    for (std::uint32_t d = 0; d < n_dims; ++d) {
      std::uint64_t ne = 0;
      if (!cur.read(&ne)) return p.truncated("tensor dims");
      if (ne > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
        return Result::failure(message("tensor \"%s\": dim %u is negative", nm, d));
      if (!mul_u64(numel, ne, &numel) || numel > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
        return Result::failure(message("tensor \"%s\": element count overflows", nm));
      t.ne.push_back(std::int64_t(ne));
    }
    if (!cur.read(&t.type) || !cur.read(&t.offset)) return p.truncated("tensor type / offset");
    const GgmlTypeInfo* info = ggml_type_info(t.type);
    if (info == nullptr) return Result::failure(message("tensor \"%s\": unknown ggml type %u", nm, t.type));
    if (std::uint64_t(t.ne[0]) % info->block != 0)
      return Result::failure(message("tensor \"%s\": ne[0] = %lld is not a multiple of the %s block (%u)", nm,
                                     (long long)t.ne[0], info->name, info->block));
    std::uint64_t bytes = 0;
    if (!mul_u64(numel / info->block, info->block_bytes, &bytes))
      return Result::failure(message("tensor \"%s\": byte size overflows", nm));
    if (t.offset % out->alignment != 0)
      return Result::failure(message("tensor \"%s\": offset %llu is not a multiple of the alignment %llu", nm,
                                     (unsigned long long)t.offset, (unsigned long long)out->alignment));
    t.numel = std::int64_t(numel);
    t.bytes = std::size_t(bytes);  // checked against the file below, so it fits size_t then
    if (bytes > std::uint64_t(std::numeric_limits<std::size_t>::max()))
      return Result::failure(message("tensor \"%s\": byte size overflows", nm));
    if (!seen.insert(t.name).second) return Result::failure(message("tensor name \"%s\" appears twice", nm));
    out->tensors.push_back(std::move(t));
  }
  std::uint64_t start = 0;
  if (!align_up_u64(cur.pos(), out->alignment, &start)) return Result::failure("data section offset overflows");
  out->data_start = start;
  if (out->tensors.empty()) return Result::success();
  if (start > size)
    return Result::failure(
        message("data section starts at %llu, past the end of the file (%zu bytes)", (unsigned long long)start, size));
  const std::uint64_t data_bytes = size - start;
  for (GgufTensor& t : out->tensors) {
    std::uint64_t end = 0;
    if (!add_u64(t.offset, t.bytes, &end) || end > data_bytes)
      return Result::failure(message("tensor \"%s\": data [%llu, +%zu) runs past the data section (%llu bytes)",
                                     t.name.c_str(), (unsigned long long)t.offset, t.bytes,
                                     (unsigned long long)data_bytes));
    t.data = data + start + t.offset;
  }
  std::vector<const GgufTensor*> by_offset;
  for (const GgufTensor& t : out->tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensor* a, const GgufTensor* b) { return a->offset < b->offset; });
  for (std::size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->offset < by_offset[i - 1]->offset + by_offset[i - 1]->bytes)
      return Result::failure(message("tensor \"%s\": data overlaps tensor \"%s\"", by_offset[i]->name.c_str(),
                                     by_offset[i - 1]->name.c_str()));
  return Result::success();
}

}  // namespace nibble_files
