// examples/files/layers.hpp — from a parsed .safetensors file to nibble PackedMatrix weights: finds every
// 4-bit linear layer a checkpoint holds (GPTQ, AWQ, compressed-tensors pack-quantized, bitsandbytes 4-bit),
// checks each tensor's dtype and shape against what its format documents, and imports it with nibble's host
// importers (include/nibble/import/). Host code (include from a .cu file: nibble's headers need nvcc).
//
// Why the checks live here: nibble's importers take raw pointers plus shapes and read exactly the bytes the
// shapes imply, so every tensor's element count must be proven equal to that before a pointer is handed over.
//
// How a layer is recognised (tensor names as the writers save them; the metadata as their configs spell it):
//   <p>.qweight + <p>.qzeros + <p>.scales [+ <p>.g_idx]   GPTQ when qweight is [K/8, N] (second dim = the
//                                                          scales'), AWQ when it is [K, N/8]
//   <p>.weight_packed + <p>.weight_scale + <p>.weight_shape [+ weight_zero_point, weight_g_idx]
//                                                          compressed-tensors pack-quantized
//   <p>.weight + <p>.weight.absmax + <p>.weight.quant_map + <p>.weight.quant_state.bitsandbytes__{nf4,fp4}
//     [+ weight.nested_absmax, weight.nested_quant_map]   bitsandbytes (transformers' Params4bit)
// The config (QuantConfig) comes from a quantization_config JSON: an HF config.json (its
// "quantization_config" object), a GPTQ quantize_config.json or AWQ quant_config.json, or the same JSON in
// the file's __metadata__["quantization_config"]. Without one, what the tensors tell is used: group size from
// the scale shapes, GPTQ sym / version from the qzeros words (asymmetric GPTQ then cannot be told v1 from v2
// and is refused with a message asking for the config).
#pragma once

#include <map>
#include <memory>
#include <nibble/import/import.cuh>
#include <nibble/quant/quantize.cuh>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "safetensors.hpp"

namespace nibble_files {

/// The quantization_config fields the importers depend on (absent fields: "unknown", decided from the data).
struct QuantConfig {
  bool present = false;
  std::string quant_method;  ///< "gptq", "awq", "compressed-tensors", "bitsandbytes", or ""
  int bits = 0;              ///< 0: unknown
  bool has_group_size = false;
  int group_size = 0;  ///< -1: per channel
  bool has_sym = false;
  bool sym = true;
  std::string checkpoint_format;  ///< GPTQ: "gptq" (v1), "gptq_v2"; "" unknown
  bool zero_point = true;         ///< AWQ
  std::vector<int> ct_num_bits;   ///< compressed-tensors: num_bits of every config group's weights
};

/// Parses a quantization config JSON (see the header comment for the accepted shapes).
inline Result parse_quant_config(const std::string& text, QuantConfig* out) {
  *out = QuantConfig{};
  if (detail::json_depth(text.data(), text.size(), kMaxJsonDepth) > kMaxJsonDepth)
    return Result::failure("config nests JSON too deep");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    return Result::failure(message("config is not valid JSON: %.300s", e.what()));
  }
  if (!j.is_object()) return Result::failure("config is not a JSON object");
  if (auto q = j.find("quantization_config"); q != j.end()) {
    if (!q->is_object()) return Result::failure("quantization_config is not an object");
    nlohmann::json inner = *q;
    j = std::move(inner);
  }
  out->present = true;
  auto str = [&](const char* key, std::string* v) {
    auto it = j.find(key);
    if (it != j.end() && it->is_string()) *v = it->get<std::string>();
  };
  auto integer = [&](const char* key, int* v) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number_integer()) return false;
    const std::int64_t x = it->get<std::int64_t>();
    if (x < -1 || x > (1 << 20)) return false;
    *v = int(x);
    return true;
  };
  auto boolean = [&](const char* key, bool* v) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_boolean()) return false;
    *v = it->get<bool>();
    return true;
  };
  str("quant_method", &out->quant_method);
  if (!integer("bits", &out->bits)) integer("w_bit", &out->bits);  // AutoAWQ's quant_config.json says w_bit
  out->has_group_size = integer("group_size", &out->group_size) || integer("q_group_size", &out->group_size);
  out->has_sym = boolean("sym", &out->sym);
  str("checkpoint_format", &out->checkpoint_format);
  boolean("zero_point", &out->zero_point);
  if (auto g = j.find("config_groups"); g != j.end() && g->is_object())
    for (auto it = g->begin(); it != g->end(); ++it) {
      if (!it.value().is_object()) continue;
      auto w = it.value().find("weights");
      if (w == it.value().end() || !w->is_object()) continue;
      auto nb = w->find("num_bits");
      out->ct_num_bits.push_back(nb != w->end() && nb->is_number_integer() ? int(nb->get<std::int64_t>()) : 0);
    }
  return Result::success();
}

enum class LinearKind { kGptq, kAwq, kCompressedTensors, kBitsandbytes };
inline const char* to_string(LinearKind k) {
  switch (k) {
    case LinearKind::kGptq:
      return "gptq";
    case LinearKind::kAwq:
      return "awq";
    case LinearKind::kCompressedTensors:
      return "compressed-tensors";
    case LinearKind::kBitsandbytes:
      return "bitsandbytes";
  }
  return "?";
}

/// The tensors of one recognised linear layer, by role ("qweight", "weight_scale", "absmax", ...).
struct Linear {
  std::string prefix;  ///< e.g. model.layers.0.mlp.down_proj
  LinearKind kind = LinearKind::kGptq;
  std::map<std::string, const StTensor*> t;
  const StTensor* get(const std::string& role) const {
    auto it = t.find(role);
    return it == t.end() ? nullptr : it->second;
  }
};

/// Every linear of the file (sorted by prefix) and the tensors no linear claimed.
inline void find_linears(const SafetensorsFile& f, std::vector<Linear>* linears, std::vector<const StTensor*>* other) {
  linears->clear();
  other->clear();
  std::map<std::string, bool> claimed;
  auto ends_with = [](const std::string& s, const std::string& suf) {
    return s.size() > suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
  };
  auto claim = [&](Linear& l, const std::string& role, const std::string& name) {
    if (const StTensor* t = f.find(name)) {
      l.t[role] = t;
      claimed[name] = true;
    }
  };
  for (const StTensor& t : f.tensors) {
    Linear l;
    if (ends_with(t.name, ".qweight")) {
      l.prefix = t.name.substr(0, t.name.size() - 8);
      l.kind = LinearKind::kGptq;  // or AWQ: decided by import_linear from the shapes / config
      for (const char* r : {"qweight", "qzeros", "scales", "g_idx"}) claim(l, r, l.prefix + "." + r);
    } else if (ends_with(t.name, ".weight_packed")) {
      l.prefix = t.name.substr(0, t.name.size() - 14);
      l.kind = LinearKind::kCompressedTensors;
      for (const char* r : {"weight_packed", "weight_scale", "weight_shape", "weight_zero_point", "weight_g_idx"})
        claim(l, r, l.prefix + "." + r);
    } else if (ends_with(t.name, ".weight.quant_state.bitsandbytes__nf4") ||
               ends_with(t.name, ".weight.quant_state.bitsandbytes__fp4")) {
      l.prefix = t.name.substr(0, t.name.size() - 37);
      l.kind = LinearKind::kBitsandbytes;
      claim(l, "quant_state", t.name);
      claim(l, "weight", l.prefix + ".weight");
      for (const char* r : {"absmax", "quant_map", "nested_absmax", "nested_quant_map"})
        claim(l, r, l.prefix + ".weight." + r);
    } else {
      continue;
    }
    linears->push_back(std::move(l));
  }
  for (const StTensor& t : f.tensors)
    if (!claimed.count(t.name)) other->push_back(&t);
  std::sort(linears->begin(), linears->end(), [](const Linear& a, const Linear& b) { return a.prefix < b.prefix; });
}

/// A tensor's bytes copied into 8-byte aligned storage (safetensors promises no alignment; the importers
/// need their element alignment).
struct Aligned {
  std::vector<std::uint64_t> words;
  explicit Aligned(const StTensor* t) {
    if (t == nullptr) return;
    words.assign((t->bytes + 7) / 8 + 1, 0);
    if (t->bytes) std::memcpy(words.data(), t->data, t->bytes);
  }
  const void* ptr() const { return words.empty() ? nullptr : words.data(); }
};

/// An imported layer: nibble's plain PackedMatrix over host storage it owns, plus the act-order permutation
/// (column p of the import is column perm[p] of the checkpoint; empty when there is none).
struct ImportedLinear {
  std::string prefix;
  LinearKind kind = LinearKind::kGptq;
  std::string description;  ///< e.g. "gptq v1 sym, group 32, F16 scales"
  std::int64_t n = 0, k = 0;
  std::int64_t group = 0;  ///< the checkpoint's group length along K (K for one group per row; bnb: blocksize)
  bool gptq_v1 = false;    ///< GPTQ: the resolved format stores zero - 1
  nibble::PackedMatrix m;
  std::vector<std::int32_t> perm;
  std::vector<std::uint8_t> raw;  // the buffers of m

  ImportedLinear() = default;
  ImportedLinear(const ImportedLinear&) = delete;
  ImportedLinear& operator=(const ImportedLinear&) = delete;
  ImportedLinear(ImportedLinear&&) = default;  // moving a vector keeps its buffer: m stays valid
  ImportedLinear& operator=(ImportedLinear&&) = default;

  /// Clears perm when the importer's act-order permutation is 0, 1, ..., k-1 (no activation permutation
  /// needed); returns whether it was.
  bool drop_identity_perm() {
    for (std::size_t i = 0; i < perm.size(); ++i)
      if (perm[i] != std::int32_t(i)) return false;
    perm.clear();
    return true;
  }
  /// Carves m for (n, k, p) in `raw`.
  nibble::Status carve(std::int64_t rows, std::int64_t cols, const nibble::QuantParams& p) {
    n = rows;
    k = cols;
    const nibble::PackedBytes b = nibble::packed_bytes(rows, cols, p);
    if (b.status != nibble::Status::kSuccess) return b.status;
    raw.assign(b.total + nibble::kPackedAlignment, 0xA5);
    const auto addr = reinterpret_cast<std::uintptr_t>(raw.data());
    auto* base = raw.data() + (nibble::kPackedAlignment - addr % nibble::kPackedAlignment) % nibble::kPackedAlignment;
    return nibble::carve_packed_matrix(rows, cols, p, base, b.total, &m);
  }
};

namespace detail {

inline bool is_2d(const StTensor* t, std::int64_t r, std::int64_t c) {
  return t != nullptr && t->shape.size() == 2 && t->shape[0] == r && t->shape[1] == c;
}
inline bool is_1d(const StTensor* t, std::int64_t n) {
  return t != nullptr && t->shape.size() == 1 && t->shape[0] == n;
}
inline bool scale_dtype(const StTensor* t, nibble::DType* out) {
  if (t == nullptr) return false;
  if (t->dtype == StDType::kF16)
    *out = nibble::DType::kF16;
  else if (t->dtype == StDType::kBF16)
    *out = nibble::DType::kBF16;
  else if (t->dtype == StDType::kF32)
    *out = nibble::DType::kF32;
  else
    return false;
  return true;
}
inline std::string shape_str(const StTensor* t) {
  if (t == nullptr) return "missing";
  std::string s = std::string(to_string(t->dtype)) + " [";
  for (std::size_t i = 0; i < t->shape.size(); ++i) s += (i ? ", " : "") + std::to_string(t->shape[i]);
  return s + "]";
}
inline Result bad(const Linear& l, const std::string& what) {
  return Result::failure(l.prefix + " (" + to_string(l.kind) + "): " + what);
}
inline Result nibble_error(const Linear& l, const char* step, nibble::Status s) {
  return bad(l, std::string(step) + " refused: " + nibble::to_string(s));
}
inline const char* dtype_name(nibble::DType t) {
  return t == nibble::DType::kF16 ? "F16" : t == nibble::DType::kBF16 ? "BF16" : "F32";
}
/// The checkpoint group size for K columns and G groups (or the config's), checked against each other.
inline Result group_of(const Linear& l, const QuantConfig& cfg, std::int64_t k, std::int64_t groups, int* out) {
  if (groups <= 0 || k % groups != 0)
    return bad(l, "K = " + std::to_string(k) + " is not a multiple of the " + std::to_string(groups) + " groups");
  const std::int64_t g = k / groups;
  if (cfg.has_group_size) {
    const std::int64_t want = cfg.group_size == -1 ? k : cfg.group_size;
    if (want != g)
      return bad(l, "config group_size " + std::to_string(cfg.group_size) + " but the scales hold groups of " +
                        std::to_string(g));
  }
  *out = groups == 1 ? nibble::kCheckpointPerChannel : int(g);
  return Result::success();
}

inline Result import_gptq(const Linear& l, const QuantConfig& cfg, ImportedLinear* out) {
  const StTensor *qw = l.get("qweight"), *qz = l.get("qzeros"), *sc = l.get("scales"), *gi = l.get("g_idx");
  if (qw == nullptr || qz == nullptr || sc == nullptr) return bad(l, "needs qweight, qzeros and scales");
  nibble::DType st{};
  if (qw->dtype != StDType::kI32 || qw->shape.size() != 2 || qz->dtype != StDType::kI32 || !scale_dtype(sc, &st) ||
      sc->shape.size() != 2)
    return bad(l, "qweight " + shape_str(qw) + ", qzeros " + shape_str(qz) + ", scales " + shape_str(sc) +
                      ": expected I32 [K/8, N], I32 [G, N/8], F16/BF16/F32 [G, N]");
  if (qw->shape[0] > (std::int64_t(1) << 40)) return bad(l, "qweight " + shape_str(qw) + " is too large");
  const std::int64_t n = qw->shape[1], groups = sc->shape[0];
  const std::int64_t k = qw->shape[0] * 8;
  if (gi != nullptr) {
    if (gi->dtype != StDType::kI32 || gi->shape.size() != 1)
      return bad(l, "g_idx " + shape_str(gi) + ": expected I32 [K]");
    if (gi->shape[0] != k) {
      // qweight holds 32 / bits codes per word: K / (rows) says the bits.
      return bad(l, "g_idx has " + std::to_string(gi->shape[0]) + " columns but a 4-bit qweight of " +
                        std::to_string(qw->shape[0]) + " rows holds " + std::to_string(k) + " (bits != 4?)");
    }
  }
  if (!is_2d(sc, groups, n) || !is_2d(qz, groups, n / 8) || n % 8 != 0)
    return bad(l, "scales " + shape_str(sc) + " / qzeros " + shape_str(qz) + " do not fit qweight " + shape_str(qw));
  if (st == nibble::DType::kF32) return bad(l, "F32 GPTQ scales are not supported by the importer");
  nibble::GptqConfig c;
  c.bits = 4;
  Result r = group_of(l, cfg, k, groups, &c.group_size);
  if (!r.ok) return r;
  Aligned aqw(qw), aqz(qz), asc(sc), agi(gi);
  nibble::GptqTensors t;
  t.k = k;
  t.n = n;
  t.qweight = static_cast<const std::int32_t*>(aqw.ptr());
  t.qzeros = static_cast<const std::int32_t*>(aqz.ptr());
  t.scales = asc.ptr();
  t.scale_type = st;
  t.g_idx = static_cast<const std::int32_t*>(agi.ptr());
  if (cfg.has_sym) {
    c.sym = cfg.sym;
  } else {  // sym when every zero word is the v1 or the v2 constant
    const auto* z = static_cast<const std::uint32_t*>(aqz.ptr());
    const std::int64_t words = qz->numel;
    bool all7 = words > 0, all8 = words > 0;
    for (std::int64_t i = 0; i < words; ++i) {
      all7 = all7 && z[i] == 0x77777777u;
      all8 = all8 && z[i] == 0x88888888u;
    }
    c.sym = all7 || all8;
  }
  if (cfg.checkpoint_format == "gptq")
    c.checkpoint_format = nibble::GptqCheckpointFormat::kV1;
  else if (cfg.checkpoint_format == "gptq_v2")
    c.checkpoint_format = nibble::GptqCheckpointFormat::kV2;
  else if (!cfg.checkpoint_format.empty())
    return bad(l, "unknown checkpoint_format \"" + cfg.checkpoint_format + "\"");
  else if (cfg.present)  // AutoGPTQ's quantize_config.json predates the field: its format is v1
    c.checkpoint_format = nibble::GptqCheckpointFormat::kV1;
  else if (c.sym)
    c.checkpoint_format = nibble::GptqCheckpointFormat::kDetect;
  else
    return bad(l,
               "asymmetric GPTQ: v1 and v2 cannot be told apart from the data; pass the quantize_config.json "
               "(checkpoint_format) with --config");
  nibble::GptqCheckpointFormat resolved{};
  nibble::Status s = nibble::gptq_resolve_format_host(c, t, &resolved);
  if (s != nibble::Status::kSuccess)
    return nibble_error(l, "gptq_resolve_format_host (qzeros words vs sym / format)", s);
  nibble::QuantParams p;
  if ((s = nibble::gptq_import_params(c, t, &p)) != nibble::Status::kSuccess)
    return nibble_error(l, "gptq_import_params", s);
  if ((s = out->carve(n, k, p)) != nibble::Status::kSuccess) return nibble_error(l, "packed_bytes", s);
  out->perm.assign(std::size_t(k), 0);
  if ((s = nibble::import_gptq_host(c, t, out->m, out->perm.data())) != nibble::Status::kSuccess)
    return nibble_error(l, "import_gptq_host", s);
  const bool identity = out->drop_identity_perm();
  out->group = k / groups;
  out->gptq_v1 = resolved == nibble::GptqCheckpointFormat::kV1;
  out->description = std::string("gptq ") + (resolved == nibble::GptqCheckpointFormat::kV1 ? "v1" : "v2") +
                     (c.sym ? " sym" : " asym") + ", group " + std::to_string(c.group_size) + ", " + dtype_name(st) +
                     " scales" + (identity ? "" : ", act-order");
  return Result::success();
}

inline Result import_awq(const Linear& l, const QuantConfig& cfg, ImportedLinear* out) {
  const StTensor *qw = l.get("qweight"), *qz = l.get("qzeros"), *sc = l.get("scales");
  if (l.get("g_idx") != nullptr) return bad(l, "AWQ has no g_idx");
  nibble::DType st{};
  if (qw == nullptr || qz == nullptr || !scale_dtype(sc, &st) || qw->dtype != StDType::kI32 ||
      qz->dtype != StDType::kI32 || qw->shape.size() != 2 || sc->shape.size() != 2)
    return bad(l, "qweight " + shape_str(qw) + ", qzeros " + shape_str(qz) + ", scales " + shape_str(sc) +
                      ": expected I32 [K, N/8], I32 [G, N/8], F16 [G, N]");
  const std::int64_t k = qw->shape[0], n = sc->shape[1], groups = sc->shape[0];
  if (n % 8 != 0 || qw->shape[1] != n / 8 || !is_2d(qz, groups, n / 8))
    return bad(l, "qweight " + shape_str(qw) + " / qzeros " + shape_str(qz) + " do not fit scales " + shape_str(sc));
  if (st == nibble::DType::kF32) return bad(l, "F32 AWQ scales are not supported by the importer");
  nibble::AwqConfig c;
  c.zero_point = cfg.zero_point;
  Result r = group_of(l, cfg, k, groups, &c.group_size);
  if (!r.ok) return r;
  Aligned aqw(qw), aqz(qz), asc(sc);
  nibble::AwqTensors t;
  t.k = k;
  t.n = n;
  t.qweight = static_cast<const std::int32_t*>(aqw.ptr());
  t.qzeros = static_cast<const std::int32_t*>(aqz.ptr());
  t.scales = asc.ptr();
  t.scale_type = st;
  nibble::QuantParams p;
  nibble::Status s = nibble::awq_import_params(c, t, &p);
  if (s != nibble::Status::kSuccess) return nibble_error(l, "awq_import_params", s);
  if ((s = out->carve(n, k, p)) != nibble::Status::kSuccess) return nibble_error(l, "packed_bytes", s);
  if ((s = nibble::import_awq_host(c, t, out->m)) != nibble::Status::kSuccess)
    return nibble_error(l, "import_awq_host", s);
  out->group = k / groups;
  out->description = "awq gemm, group " + std::to_string(c.group_size) + ", " + dtype_name(st) + " scales";
  return Result::success();
}

inline Result import_ct(const Linear& l, const QuantConfig& cfg, ImportedLinear* out) {
  const StTensor *wp = l.get("weight_packed"), *ws = l.get("weight_scale"), *wsh = l.get("weight_shape"),
                 *zp = l.get("weight_zero_point"), *gi = l.get("weight_g_idx");
  for (int b : cfg.ct_num_bits)
    if (b != 4) return bad(l, "config has a scheme of num_bits " + std::to_string(b) + " (only 4 is imported)");
  if (wp == nullptr || ws == nullptr || wsh == nullptr)
    return bad(l, "needs weight_packed, weight_scale, weight_shape");
  if ((wsh->dtype != StDType::kI64 && wsh->dtype != StDType::kI32) || !is_1d(wsh, 2))
    return bad(l, "weight_shape " + shape_str(wsh) + ": expected I64 [2]");
  Aligned ash(wsh);
  std::int64_t n = 0, k = 0;
  if (wsh->dtype == StDType::kI64) {
    n = static_cast<const std::int64_t*>(ash.ptr())[0];
    k = static_cast<const std::int64_t*>(ash.ptr())[1];
  } else {
    n = static_cast<const std::int32_t*>(ash.ptr())[0];
    k = static_cast<const std::int32_t*>(ash.ptr())[1];
  }
  if (n <= 0 || k <= 0 || n > (std::int64_t(1) << 40) || k > (std::int64_t(1) << 40))
    return bad(l, "weight_shape [" + std::to_string(n) + ", " + std::to_string(k) + "] is not a valid shape");
  nibble::DType st{};
  if (wp->dtype != StDType::kI32 || !is_2d(wp, n, (k + 7) / 8))
    return bad(l, "weight_packed " + shape_str(wp) + ": expected I32 [N, ceil(K/8)] for 4 bits");
  if (!scale_dtype(ws, &st)) return bad(l, "weight_scale " + shape_str(ws) + ": expected F32/F16/BF16");
  nibble::CtConfig c;
  std::int64_t groups = 0;
  if (ws->numel == 1 && n > 1) {
    c.strategy = nibble::CtStrategy::kTensor;
    groups = 1;
  } else if (ws->shape.size() == 2 && ws->shape[0] == n) {
    groups = ws->shape[1];
    c.strategy = groups == 1 ? nibble::CtStrategy::kChannel : nibble::CtStrategy::kGroup;
  } else if (is_1d(ws, n)) {
    groups = 1;
    c.strategy = nibble::CtStrategy::kChannel;
  } else {
    return bad(l, "weight_scale " + shape_str(ws) + " is not [N, G], [N] or [1]");
  }
  if (groups <= 0 || k % groups != 0) return bad(l, "K is not a multiple of the scale groups");
  c.group_size = int(std::min<std::int64_t>(k / groups, 1 << 30));
  c.symmetric = zp == nullptr;
  if (zp != nullptr) {
    if (zp->dtype == StDType::kI32 && is_2d(zp, (n + 7) / 8, groups))
      c.zero_point = nibble::CtZeroPoint::kPackedInt32;
    else if (zp->dtype == StDType::kI8 && is_2d(zp, n, groups))
      c.zero_point = nibble::CtZeroPoint::kInt8;
    else
      return bad(l, "weight_zero_point " + shape_str(zp) + ": expected I32 [ceil(N/8), G] or I8 [N, G]");
  }
  if (gi != nullptr && (gi->dtype != StDType::kI32 || !is_1d(gi, k)))
    return bad(l, "weight_g_idx " + shape_str(gi) + ": expected I32 [K]");
  Aligned awp(wp), aws(ws), azp(zp), agi(gi);
  nibble::CtTensors t;
  t.n = n;
  t.k = k;
  t.weight_packed = static_cast<const std::int32_t*>(awp.ptr());
  t.weight_scale = aws.ptr();
  t.scale_type = st;
  t.weight_zero_point = azp.ptr();
  t.weight_g_idx = static_cast<const std::int32_t*>(agi.ptr());
  nibble::QuantParams p;
  nibble::Status s = nibble::compressed_tensors_import_params(c, t, &p);
  if (s != nibble::Status::kSuccess) return nibble_error(l, "compressed_tensors_import_params", s);
  if ((s = out->carve(n, k, p)) != nibble::Status::kSuccess) return nibble_error(l, "packed_bytes", s);
  out->perm.assign(std::size_t(k), 0);
  if ((s = nibble::import_compressed_tensors_host(c, t, out->m, out->perm.data())) != nibble::Status::kSuccess)
    return nibble_error(l, "import_compressed_tensors_host", s);
  const bool identity = out->drop_identity_perm();
  out->group = k / groups;
  static const char* const kStrategy[] = {"group", "channel", "tensor"};
  out->description = std::string("compressed-tensors ") + (c.symmetric ? "sym" : "asym") + ", " +
                     kStrategy[int(c.strategy)] +
                     (c.strategy == nibble::CtStrategy::kGroup ? " " + std::to_string(c.group_size) : "") + ", " +
                     dtype_name(st) + " scales" + (identity ? "" : ", act-order");
  return Result::success();
}

/// bitsandbytes' quant_state JSON (QuantState.as_dict packed: quant_type, blocksize, dtype, shape, and
/// nested_blocksize, nested_offset, nested_dtype when double-quantized).
inline Result parse_bnb_state(const Linear& l, const StTensor* qs, nibble::BnbQuantState* st, bool* fp4) {
  if (qs->dtype != StDType::kU8 || qs->shape.size() != 1)
    return bad(l, "quant_state " + shape_str(qs) + ": expected U8 [bytes]");
  const std::string text(reinterpret_cast<const char*>(qs->data), qs->bytes);
  if (detail::json_depth(text.data(), text.size(), kMaxJsonDepth) > kMaxJsonDepth)
    return bad(l, "quant_state nests too deep");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception& e) {
    return bad(l, std::string("quant_state is not valid JSON: ") + e.what());
  }
  auto qt = j.is_object() ? j.find("quant_type") : j.end();
  auto bs = j.is_object() ? j.find("blocksize") : j.end();
  auto sh = j.is_object() ? j.find("shape") : j.end();
  if (qt == j.end() || bs == j.end() || sh == j.end() || !qt->is_string() || !bs->is_number_integer() ||
      !sh->is_array() || sh->size() != 2 || !(*sh)[0].is_number_integer() || !(*sh)[1].is_number_integer())
    return bad(l, "quant_state lacks quant_type / blocksize / a 2-D shape");
  const std::string type = qt->get<std::string>();
  if (type != "nf4" && type != "fp4") return bad(l, "quant_type \"" + type + "\" is not nf4 / fp4");
  *fp4 = type == "fp4";
  if (qs->name.compare(qs->name.size() - 3, 3, type) != 0)
    return bad(l, "quant_state tensor name and quant_type differ");
  st->quant_type = *fp4 ? nibble::BnbQuantType::kFp4 : nibble::BnbQuantType::kNf4;
  st->blocksize = bs->get<std::int64_t>();
  st->n = (*sh)[0].get<std::int64_t>();
  st->k = (*sh)[1].get<std::int64_t>();
  if (st->n <= 0 || st->k <= 0 || st->n > (std::int64_t(1) << 40) || st->k > (std::int64_t(1) << 40) ||
      st->blocksize <= 0 || st->blocksize > (std::int64_t(1) << 40))
    return bad(l, "quant_state shape / blocksize out of range");
  if (st->n > (std::int64_t(1) << 62) / st->k) return bad(l, "quant_state shape: N * K overflows");
  if (auto nb = j.find("nested_blocksize"); nb != j.end()) {
    if (!nb->is_number_integer()) return bad(l, "nested_blocksize is not an integer");
    st->nested_blocksize = nb->get<std::int64_t>();
    if (st->nested_blocksize <= 0 || st->nested_blocksize > (std::int64_t(1) << 40))
      return bad(l, "nested_blocksize out of range");
  }
  if (auto no = j.find("nested_offset"); no != j.end()) {
    if (!no->is_number()) return bad(l, "nested_offset is not a number");
    st->nested_offset = float(no->get<double>());  // the JSON holds the fp32 value's shortest repr
  }
  return Result::success();
}

inline Result import_bnb(const Linear& l, ImportedLinear* out) {
  const StTensor *qs = l.get("quant_state"), *w = l.get("weight"), *am = l.get("absmax"), *qm = l.get("quant_map"),
                 *na = l.get("nested_absmax"), *nm = l.get("nested_quant_map");
  nibble::BnbQuantState st;
  bool fp4 = false;
  Result r = parse_bnb_state(l, qs, &st, &fp4);
  if (!r.ok) return r;
  if (st.k % 2 != 0) return bad(l, "K is odd");
  const std::int64_t elems = st.n * st.k, nb = (elems + st.blocksize - 1) / st.blocksize;
  st.nested = na != nullptr || nm != nullptr;
  if (w == nullptr || w->dtype != StDType::kU8 || w->numel != elems / 2)
    return bad(l, "weight " + shape_str(w) + ": expected U8 with N*K/2 = " + std::to_string(elems / 2) + " elements");
  if (qm == nullptr || qm->dtype != StDType::kF32 || qm->numel != 16)
    return bad(l, "quant_map " + shape_str(qm) + ": expected F32 [16]");
  if (am == nullptr || am->numel != nb || am->dtype != (st.nested ? StDType::kU8 : StDType::kF32))
    return bad(
        l, "absmax " + shape_str(am) + ": expected " + (st.nested ? "U8" : "F32") + " [" + std::to_string(nb) + "]");
  if (st.nested) {
    const std::int64_t nb2 = (nb + st.nested_blocksize - 1) / st.nested_blocksize;
    if (na == nullptr || na->dtype != StDType::kF32 || na->numel != nb2)
      return bad(l, "nested_absmax " + shape_str(na) + ": expected F32 [" + std::to_string(nb2) + "]");
    if (nm == nullptr || nm->dtype != StDType::kF32 || nm->numel != 256)
      return bad(l, "nested_quant_map " + shape_str(nm) + ": expected F32 [256]");
  }
  Aligned aw(w), aam(am), aqm(qm), ana(na), anm(nm);
  nibble::BnbTensors t;
  t.weight = static_cast<const std::uint8_t*>(aw.ptr());
  t.absmax = aam.ptr();
  t.quant_map = static_cast<const float*>(aqm.ptr());
  t.nested_absmax = static_cast<const float*>(ana.ptr());
  t.nested_quant_map = static_cast<const float*>(anm.ptr());
  nibble::QuantParams p;
  nibble::Status s = nibble::bnb_import_params(st, t, &p);
  if (s != nibble::Status::kSuccess) return nibble_error(l, "bnb_import_params", s);
  if ((s = out->carve(st.n, st.k, p)) != nibble::Status::kSuccess) return nibble_error(l, "packed_bytes", s);
  if ((s = nibble::import_bnb_host(st, t, out->m)) != nibble::Status::kSuccess)
    return nibble_error(l, "import_bnb_host", s);
  out->group = st.blocksize;
  out->description = std::string("bitsandbytes ") + (fp4 ? "fp4" : "nf4") + ", blocksize " +
                     std::to_string(st.blocksize) +
                     (st.nested ? (p.double_quant ? ", double quant kept" : ", double quant expanded to F32") : "");
  return Result::success();
}

}  // namespace detail

/// Checks the tensors of `l` and imports them into *out. GPTQ vs AWQ is decided here (config quant_method,
/// else the qweight shape).
inline Result import_linear(const Linear& l, const QuantConfig& cfg, ImportedLinear* out) {
  *out = ImportedLinear{};
  out->prefix = l.prefix;
  out->kind = l.kind;
  if (cfg.bits != 0 && cfg.bits != 4)
    return detail::bad(l, "config bits " + std::to_string(cfg.bits) + " (only 4 is imported)");
  Linear lk = l;
  if (l.kind == LinearKind::kGptq || l.kind == LinearKind::kAwq) {
    const StTensor *qw = l.get("qweight"), *sc = l.get("scales");
    if (cfg.quant_method == "awq")
      lk.kind = LinearKind::kAwq;
    else if (cfg.quant_method == "gptq")
      lk.kind = LinearKind::kGptq;
    else if (qw != nullptr && sc != nullptr && qw->shape.size() == 2 && sc->shape.size() == 2 &&
             qw->shape[1] != sc->shape[1])
      lk.kind = LinearKind::kAwq;  // AWQ packs along N: qweight [K, N/8] against scales [G, N]
    out->kind = lk.kind;
  }
  switch (lk.kind) {
    case LinearKind::kGptq:
      return detail::import_gptq(lk, cfg, out);
    case LinearKind::kAwq:
      return detail::import_awq(lk, cfg, out);
    case LinearKind::kCompressedTensors:
      return detail::import_ct(lk, cfg, out);
    case LinearKind::kBitsandbytes:
      return detail::import_bnb(lk, out);
  }
  return detail::bad(l, "unknown kind");
}

/// The config a file carries in __metadata__["quantization_config"], if any (present = false otherwise).
inline Result metadata_config(const SafetensorsFile& f, QuantConfig* out) {
  *out = QuantConfig{};
  auto it = f.metadata.find("quantization_config");
  if (it == f.metadata.end()) return Result::success();
  return parse_quant_config(it->second, out);
}

}  // namespace nibble_files
