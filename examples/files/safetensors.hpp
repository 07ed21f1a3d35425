// examples/files/safetensors.hpp — a bounds-checked reader of the safetensors format, from an in-memory span.
//
// The format (huggingface/safetensors: README.md "Format"; safetensors/src/tensor.rs: Dtype,
// SafeTensors::read_metadata, Metadata::validate):
//
//   bytes 0-7     N, u64 little-endian: the size of the header
//   bytes 8..     N bytes of UTF-8 JSON, an object (it must start with '{'; writers pad it with spaces):
//                   "<tensor name>": {"dtype": "F16", "shape": [2, 3], "data_offsets": [BEGIN, END]}, ...
//                   "__metadata__": {"<key>": "<string value>", ...}        (optional, strings only)
//   bytes 8+N..   the byte buffer; [BEGIN, END) are relative to its start, little-endian, row-major.
//
// What is checked, every failure a Result naming the tensor and the numbers: the 8-byte length is there,
// N > 0 and within the file and within the format's 100 MB header limit (tensor.rs MAX_HEADER_SIZE), the
// header starts with '{', nests at most kMaxJsonDepth deep, is valid JSON (parsed by nlohmann-json), is an
// object without duplicate keys; every tensor has a known whole-byte dtype, a shape of non-negative
// integers whose element count and byte size do not overflow, data_offsets [BEGIN <= END] with END - BEGIN
// equal to that byte size; __metadata__ is an object of strings. As Metadata::validate requires, the
// tensors sorted by offset tile the byte buffer exactly: no overlap, no hole, nothing after the last one
// (README: "The byte buffer needs to be entirely indexed, and cannot contain holes").
// Not supported (refused with a message): the sub-byte dtypes F4, F6_E2M3, F6_E3M2.
//
// Allocation: the JSON DOM and the tensor list, both bounded by the header's length, which is bounded by the
// input. Tensor data is not copied: StTensor::data points into the caller's span (no alignment promised).
#pragma once

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "bytes.hpp"

namespace nibble_files {

/// safetensors dtypes with a whole number of bytes per element (tensor.rs enum Dtype, as spelled in JSON).
enum class StDType : std::uint8_t {
  kBool,
  kU8,
  kI8,
  kF8_E5M2,
  kF8_E4M3,
  kF8_E8M0,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kC64,
  kF64,
  kI64,
  kU64,
};

struct StDTypeInfo {
  const char* name;
  StDType type;
  int bytes;
};
inline constexpr StDTypeInfo kStDTypes[] = {
    {"BOOL", StDType::kBool, 1},       {"U8", StDType::kU8, 1},           {"I8", StDType::kI8, 1},
    {"F8_E5M2", StDType::kF8_E5M2, 1}, {"F8_E4M3", StDType::kF8_E4M3, 1}, {"F8_E8M0", StDType::kF8_E8M0, 1},
    {"I16", StDType::kI16, 2},         {"U16", StDType::kU16, 2},         {"F16", StDType::kF16, 2},
    {"BF16", StDType::kBF16, 2},       {"I32", StDType::kI32, 4},         {"U32", StDType::kU32, 4},
    {"F32", StDType::kF32, 4},         {"C64", StDType::kC64, 8},         {"F64", StDType::kF64, 8},
    {"I64", StDType::kI64, 8},         {"U64", StDType::kU64, 8},
};

inline const char* to_string(StDType t) {
  for (const StDTypeInfo& i : kStDTypes)
    if (i.type == t) return i.name;
  return "?";
}
inline int size_of(StDType t) {
  for (const StDTypeInfo& i : kStDTypes)
    if (i.type == t) return i.bytes;
  return 0;
}

/// One tensor of the file.
struct StTensor {
  std::string name;
  StDType dtype = StDType::kU8;
  std::vector<std::int64_t> shape;
  std::int64_t numel = 1;
  std::uint64_t begin = 0, end = 0;    ///< data_offsets, relative to the byte buffer
  const std::uint8_t* data = nullptr;  ///< into the caller's span; end - begin bytes, any alignment
  std::size_t bytes = 0;
};

/// A parsed file: tensors sorted by name, __metadata__ kept as is.
struct SafetensorsFile {
  std::uint64_t header_bytes = 0;  ///< N
  std::uint64_t data_start = 0;    ///< 8 + N: file offset of the byte buffer
  std::vector<StTensor> tensors;
  std::map<std::string, std::string> metadata;

  const StTensor* find(const std::string& name) const {
    auto it = std::lower_bound(tensors.begin(), tensors.end(), name,
                               [](const StTensor& t, const std::string& n) { return t.name < n; });
    return it != tensors.end() && it->name == name ? &*it : nullptr;
  }
};

/// tensor.rs MAX_HEADER_SIZE.
inline constexpr std::uint64_t kSafetensorsMaxHeader = 100'000'000;
/// Deepest JSON nesting accepted (a valid header needs 3: root, tensor, shape).
inline constexpr int kMaxJsonDepth = 64;

namespace detail {

/// Deepest [ / { nesting of a JSON text, strings skipped (stops counting past `limit`).
inline int json_depth(const char* s, std::size_t n, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (std::size_t i = 0; i < n; ++i) {
    const char c = s[i];
    if (in_string) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > deepest && (deepest = depth) > limit) return deepest;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

/// A JSON number that is a non-negative integer fitting int64 (nlohmann stores those as unsigned or
/// integer; a float, even 2.0, is not a valid offset or dimension).
inline bool json_index(const nlohmann::json& v, std::uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<std::uint64_t>();
  } else if (v.is_number_integer()) {
    const std::int64_t i = v.get<std::int64_t>();
    if (i < 0) return false;
    *out = std::uint64_t(i);
  } else {
    return false;
  }
  return *out <= std::uint64_t(std::numeric_limits<std::int64_t>::max());
}

inline Result parse_tensor(const std::string& name, const nlohmann::json& v, StTensor* t) {
  const char* nm = name.c_str();
  if (!v.is_object()) return Result::failure(message("tensor \"%.200s\": entry is not a JSON object", nm));
  auto dt = v.find("dtype"), sh = v.find("shape"), off = v.find("data_offsets");
  if (dt == v.end() || sh == v.end() || off == v.end())
    return Result::failure(message("tensor \"%.200s\": needs dtype, shape and data_offsets", nm));
  if (!dt->is_string()) return Result::failure(message("tensor \"%.200s\": dtype is not a string", nm));
  const std::string& dts = dt->get_ref<const std::string&>();
  bool known = false;
  for (const StDTypeInfo& i : kStDTypes)
    if (dts == i.name) {
      t->dtype = i.type;
      known = true;
    }
  if (!known) {
    if (dts == "F4" || dts == "F6_E2M3" || dts == "F6_E3M2")
      return Result::failure(message("tensor \"%.200s\": sub-byte dtype %.20s is not supported", nm, dts.c_str()));
    return Result::failure(message("tensor \"%.200s\": unknown dtype \"%.40s\"", nm, dts.c_str()));
  }
  if (!sh->is_array()) return Result::failure(message("tensor \"%.200s\": shape is not an array", nm));
  std::uint64_t numel = 1;
  for (const nlohmann::json& d : *sh) {
    std::uint64_t dim = 0;
    if (!json_index(d, &dim))
      return Result::failure(message("tensor \"%.200s\": a shape entry is not a non-negative integer", nm));
    if (!mul_u64(numel, dim, &numel) || numel > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
      return Result::failure(message("tensor \"%.200s\": element count overflows", nm));
    t->shape.push_back(std::int64_t(dim));
  }
  std::uint64_t bytes = 0;
  if (!mul_u64(numel, std::uint64_t(size_of(t->dtype)), &bytes))
    return Result::failure(message("tensor \"%.200s\": byte size overflows", nm));
  if (!off->is_array() || off->size() != 2)
    return Result::failure(message("tensor \"%.200s\": data_offsets is not [BEGIN, END]", nm));
  if (!json_index((*off)[0], &t->begin) || !json_index((*off)[1], &t->end))
    return Result::failure(message("tensor \"%.200s\": data_offsets are not non-negative integers", nm));
  if (t->begin > t->end)
    return Result::failure(message("tensor \"%.200s\": data_offsets [%llu, %llu] are reversed", nm,
                                   (unsigned long long)t->begin, (unsigned long long)t->end));
  if (t->end - t->begin != bytes)
    return Result::failure(message("tensor \"%.200s\": data_offsets span %llu bytes, dtype %s x shape needs %llu", nm,
                                   (unsigned long long)(t->end - t->begin), to_string(t->dtype),
                                   (unsigned long long)bytes));
  t->numel = std::int64_t(numel);
  t->name = name;
  return Result::success();
}

}  // namespace detail

/// Parses a safetensors file held in [data, data + size) into *out (replaced). On failure *out is
/// unspecified and the Result says why.
inline Result parse_safetensors(const std::uint8_t* data, std::size_t size, SafetensorsFile* out) {
  *out = SafetensorsFile{};
  Cursor cur(data, size);
  std::uint64_t n = 0;
  if (data == nullptr || !cur.read(&n))
    return Result::failure(message("file is %zu bytes: shorter than the 8-byte header length", size));
  if (n == 0) return Result::failure("header length is 0");
  if (n > cur.left())
    return Result::failure(message("header length %llu runs past the end of the file (%zu bytes after the length)",
                                   (unsigned long long)n, cur.left()));
  if (n > kSafetensorsMaxHeader)
    return Result::failure(message("header length %llu exceeds the format's limit of %llu bytes", (unsigned long long)n,
                                   (unsigned long long)kSafetensorsMaxHeader));
  const char* json_begin = reinterpret_cast<const char*>(cur.here());
  const std::size_t json_len = std::size_t(n);
  if (json_begin[0] != '{') return Result::failure("header does not start with '{'");
  if (detail::json_depth(json_begin, json_len, kMaxJsonDepth) > kMaxJsonDepth)
    return Result::failure(message("header nests JSON deeper than %d levels", kMaxJsonDepth));

  // The callback sees each key of the root object (depth 1): nlohmann's object keeps the last of duplicate
  // keys silently, a safetensors header must not have any.
  std::set<std::string> keys;
  std::string duplicate;
  auto cb = [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
    if (ev == nlohmann::json::parse_event_t::key && depth == 1 && parsed.is_string() && duplicate.empty() &&
        !keys.insert(parsed.get_ref<const std::string&>()).second)
      duplicate = parsed.get_ref<const std::string&>();
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(json_begin, json_begin + json_len, cb);
  } catch (const std::exception& e) {  // nlohmann's parse_error (position + reason), or bad_alloc
    return Result::failure(message("header is not valid JSON: %.300s", e.what()));
  }
  if (!header.is_object()) return Result::failure("header is not a JSON object");
  if (!duplicate.empty()) return Result::failure(message("header has the key \"%.200s\" twice", duplicate.c_str()));

  out->header_bytes = n;
  out->data_start = 8 + n;
  const std::uint64_t buffer = cur.left() - json_len;  // size of the byte buffer
  const std::uint8_t* base = cur.here() + json_len;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) return Result::failure("__metadata__ is not a JSON object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string())
          return Result::failure(message("__metadata__ value \"%.200s\" is not a string", m.key().c_str()));
        out->metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    StTensor t;
    Result r = detail::parse_tensor(it.key(), it.value(), &t);
    if (!r.ok) return r;
    if (t.end > buffer)
      return Result::failure(message("tensor \"%.200s\": data_offsets end %llu is past the byte buffer (%llu bytes)",
                                     t.name.c_str(), (unsigned long long)t.end, (unsigned long long)buffer));
    t.data = base + t.begin;
    t.bytes = std::size_t(t.end - t.begin);
    out->tensors.push_back(std::move(t));
  }
  // Metadata::validate: sorted by offsets, each tensor starts where the previous ended, the last ends at
  // the end of the buffer.
  std::vector<const StTensor*> by_offset;
  for (const StTensor& t : out->tensors) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](const StTensor* a, const StTensor* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  std::uint64_t at = 0;
  for (const StTensor* t : by_offset) {
    if (t->begin < at)
      return Result::failure(
          message("tensor \"%.200s\": data [%llu, %llu) overlaps the tensor before it (ends at %llu)", t->name.c_str(),
                  (unsigned long long)t->begin, (unsigned long long)t->end, (unsigned long long)at));
    if (t->begin > at)
      return Result::failure(message("byte buffer has a hole [%llu, %llu) before tensor \"%.200s\"",
                                     (unsigned long long)at, (unsigned long long)t->begin, t->name.c_str()));
    at = t->end;
  }
  if (at != buffer)
    return Result::failure(message("byte buffer holds %llu bytes, the tensors cover %llu", (unsigned long long)buffer,
                                   (unsigned long long)at));
  std::sort(out->tensors.begin(), out->tensors.end(),
            [](const StTensor& a, const StTensor& b) { return a.name < b.name; });
  return Result::success();
}

}  // namespace nibble_files
