// examples/torch/csrc/nibble_ops.cu — nibble behind PyTorch: the ops nibble::quantize, nibble::repack and
// nibble::gemm, registered with TORCH_LIBRARY. Every op takes and returns tensors; the CUDA kernels run on
// PyTorch's current stream, the GEMM's split-K workspace comes from PyTorch's caching allocator, and a bad
// nibble::Status becomes a Python RuntimeError naming it (TORCH_CHECK + nibble::to_string). Nothing here
// synchronizes, so the CUDA ops can be captured in a CUDA graph; their fake (meta) versions, for torch.compile,
// are registered in Python (nibble_torch/ops.py).
//
//   codes, scales, zeros, offsets = torch.ops.nibble.quantize(w, "s4", 128, torch.float16)   # plain layout
//   gc, gs, gz, go = torch.ops.nibble.repack(codes, scales, zeros, offsets, "s4", 128, torch.float16)
//   y = torch.ops.nibble.gemm(x, gc, gs, gz, go, bias, "s4", 128, n, k, None)                 # x [..., K] -> [..., N]
//
// quantize and repack also run on CPU tensors (nibble's CPU paths quantize_cpu / repack_host: the same bytes);
// the GEMM runs on CUDA tensors only. A buffer a format does not have (u4's zero points, affine u4's offsets) is an
// empty uint8 tensor. The GEMM kernels themselves are compiled in the ten generated instance files (build.py):
// this file includes extern_instances.cuh and compiles none.
//
// The checkpoint importers (include/nibble/import/) return the plain layout quantize returns, so their output
// feeds repack and gemm unchanged; on CPU tensors they run the *_host paths, on CUDA tensors the GPU paths (the
// same bytes) on the current stream:
//
//   op                          checkpoint tensors -> nibble format              extra outputs
//   import_gptq                 qweight, qzeros, scales, g_idx -> s4 / u4        perm, flags
//   import_awq                  qweight, qzeros, scales -> u4                    -
//   import_compressed_tensors   weight_packed, weight_scale, weight_zero_point,
//                               weight_g_idx -> s4 / u4                          perm, flags
//   import_bnb                  weight, absmax, quant_map, nested_* -> nf4 / fp4 (fp32 scales)
//   import_gguf                 the tensor's bytes, "Q4_0" / "Q4_1" / "Q4_K" -> s4 / affine_u4, group 32
//   import_hqq                  W_q, scale, zero -> affine_u4 (fp32 scales and offsets)
//   permute_columns             x [..., K], perm -> x[..., perm] (the act-order activations)
//
//   codes, scales, zeros, offsets, perm, flags = torch.ops.nibble.import_gptq(qw, qz, s, g_idx, 4, 128, True, "gptq")
//   y = torch.ops.nibble.gemm(torch.ops.nibble.permute_columns(x, perm), *repack(...), ...)   # W x = W' x[perm]
//
// perm (int32 [K] when a g_idx is given, else [0]) is the act-order permutation; flags (int32 [1]) is the GPU
// importer's error word: the GPU paths check the data on the device and return the word rather than synchronize
// (non-zero: the weight is wrong; nibble_torch's wrappers raise), the CPU paths raise on bad data before writing
// (flags is then always 0). Details above import_gptq_impl below.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <nibble/gemm/extern_instances.cuh>
#include <nibble/gemm/gemm.cuh>
#include <nibble/import/import.cuh>
#include <nibble/layout/repack.cuh>
#include <nibble/quant/quantize.cuh>
#include <optional>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>

namespace {

using Tensor = at::Tensor;
using Tensors4 = std::tuple<Tensor, Tensor, Tensor, Tensor>;

void check_status(const char* op, nibble::Status s) {
  TORCH_CHECK(s == nibble::Status::kSuccess, "nibble::", op, ": ", nibble::to_string(s), " (Status ", int(s), ")");
}
#define NIBBLE_TORCH_CHECK(op, expr) check_status(op, (expr))

// Runs an op on the device of `on`: host() on a CPU tensor; on a CUDA tensor device(stream) with that device
// current and the current stream. Either returns a nibble::Status, raised with the op's name where it fails.
template <class Host, class Device>
void run_here(const Tensor& on, const char* op, Host host, Device device) {
  if (!on.is_cuda()) return check_status(op, host());
  const c10::cuda::CUDAGuard guard(on.device());
  check_status(op, device(at::cuda::getCurrentCUDAStream().stream()));
}

nibble::Format parse_format(const std::string& name) {
  for (nibble::Format f : {nibble::Format::kS4, nibble::Format::kU4, nibble::Format::kNf4, nibble::Format::kFp4,
                           nibble::Format::kAffineU4}) {
    if (name == nibble::to_string(f)) return f;
  }
  TORCH_CHECK(false, "nibble: unknown format '", name, "' (s4, u4, nf4, fp4 or affine_u4)");
}

nibble::DType to_dtype(at::ScalarType t, const char* what) {
  switch (t) {
    case at::kFloat:
      return nibble::DType::kF32;
    case at::kHalf:
      return nibble::DType::kF16;
    case at::kBFloat16:
      return nibble::DType::kBF16;
    default:
      TORCH_CHECK(false, "nibble: ", what, " must be float32, float16 or bfloat16, got ", t);
  }
}

// A tensor of `shape` and `type` for a buffer of `count` bytes (an empty uint8 tensor where the format has none).
Tensor buffer(std::size_t count, at::ScalarType type, const at::TensorOptions& like, at::IntArrayRef shape) {
  if (count == 0) return at::empty({0}, like.dtype(at::kByte));
  return at::empty(shape, like.dtype(type));
}

void check_same_device(const Tensor& ref, const Tensor& t, const char* what) {
  TORCH_CHECK(t.device() == ref.device(), "nibble: ", what, " is on ", t.device(), ", expected ", ref.device());
}

at::ScalarType to_scalar(nibble::DType t) {
  switch (t) {
    case nibble::DType::kF32:
      return at::kFloat;
    case nibble::DType::kF16:
      return at::kHalf;
    default:
      return at::kBFloat16;
  }
}

// The plain layout's tensors for an [n, k] weight with parameters p (packed_bytes(n, k, p) checked by the caller)
// and the PackedMatrix view of them: what quantize and every importer write. Double quantization (bitsandbytes): the
// importer also writes the double-quantized form (codes, absmax2, offset) into temporaries that are dropped; `scales`
// receives the effective fp32 scales (bnb_item), which dequantize to exactly the same weights.
struct PlainOut {
  Tensor codes, scales, zeros, offsets, dq_codes, dq_floats;
  nibble::PackedMatrix m;
};

PlainOut plain_out(int64_t n, int64_t k, const nibble::QuantParams& p, const at::TensorOptions& opts) {
  const int64_t groups = k / nibble::effective_group(p.group_size, k);
  const at::ScalarType st = to_scalar(p.scale_type);
  const auto u8 = opts.dtype(at::kByte);
  PlainOut o;
  o.codes = at::empty({n, k / 2}, u8);
  o.scales = at::empty({n, groups}, opts.dtype(st));
  o.zeros = nibble::has_zero_point(p.format) ? at::empty({n, groups}, u8) : at::empty({0}, u8);
  o.offsets = nibble::has_offset(p.format) ? at::empty({n, groups}, opts.dtype(st)) : at::empty({0}, u8);
  nibble::PackedMatrix& m = o.m;
  m.format = p.format;
  m.group_size = p.group_size;
  m.n = n;
  m.k = k;
  m.codes = o.codes.data_ptr<uint8_t>();
  m.ld_codes = k / 2;
  m.scales = o.scales.data_ptr();
  m.scale_type = p.scale_type;
  m.zeros = o.zeros.numel() ? o.zeros.data_ptr<uint8_t>() : nullptr;
  m.offsets = o.offsets.numel() ? o.offsets.data_ptr() : nullptr;
  if (p.double_quant) {
    const int64_t blocks = (n * groups + nibble::kDoubleQuantBlock - 1) / nibble::kDoubleQuantBlock;
    o.dq_codes = at::empty({n * groups}, u8);
    o.dq_floats = at::empty({blocks + 1}, opts.dtype(at::kFloat));  // absmax2 [blocks], then the offset
    m.dq.codes = o.dq_codes.data_ptr<uint8_t>();
    m.dq.absmax2 = o.dq_floats.data_ptr<float>();
    m.dq.offset = m.dq.absmax2 + blocks;
    m.dq.enabled = true;
  }
  return o;
}

Tensors4 plain4(const PlainOut& o) { return {o.codes, o.scales, o.zeros, o.offsets}; }

// ---- quantize --------------------------------------------------------------------------------------------------
// weight [N, K] (fp32 / fp16 / bf16) -> the plain layout: codes uint8 [N, K / 2] (even k in the low nibble),
// scales [N, K / g] of scale_dtype, zeros uint8 [N, K / g] (u4) and offsets [N, K / g] of scale_dtype (affine u4).
Tensors4 quantize_impl(const Tensor& weight_in, const std::string& format, int64_t group_size,
                       std::optional<at::ScalarType> scale_dtype) {
  TORCH_CHECK(weight_in.dim() == 2, "nibble::quantize: weight must be [N, K], got ", weight_in.sizes());
  const Tensor weight = weight_in.contiguous();
  const int64_t n = weight.size(0), k = weight.size(1);
  nibble::QuantParams qp;
  qp.format = parse_format(format);
  qp.group_size = int(group_size);
  qp.scale_type = to_dtype(scale_dtype.value_or(weight.scalar_type()), "scale_dtype");
  qp.double_quant = false;
  NIBBLE_TORCH_CHECK("quantize", nibble::packed_bytes(n, k, qp).status);  // (the shape / group checks)
  const PlainOut o = plain_out(n, k, qp, weight.options());
  const nibble::PackedMatrix& m = o.m;
  auto run = [&](auto* x) {
    // (no workspace without double quantization: get_quantize_workspace_size is 0)
    run_here(
        weight, "quantize", [&] { return nibble::quantize_cpu(x, k, m); },
        [&](cudaStream_t stream) { return nibble::quantize(x, k, m, nullptr, 0, stream); });
  };
  switch (weight.scalar_type()) {
    case at::kFloat:
      run(weight.data_ptr<float>());
      break;
    case at::kHalf:
      run(reinterpret_cast<const __half*>(weight.data_ptr<at::Half>()));
      break;
    case at::kBFloat16:
      run(reinterpret_cast<const __nv_bfloat16*>(weight.data_ptr<at::BFloat16>()));
      break;
    default:
      TORCH_CHECK(false, "nibble::quantize: weight must be float32, float16 or bfloat16, got ", weight.scalar_type());
  }
  return plain4(o);
}

// ---- repack ----------------------------------------------------------------------------------------------------
// The plain layout -> the GEMM layout for activations of act_dtype: codes uint8 [n_pad * k_pad / 2], scales
// [groups, n_pad] of act_dtype, zeros uint8 [groups, n_pad] (u4), offsets [groups, n_pad] of act_dtype (affine u4).
Tensors4 repack_impl(const Tensor& codes_in, const Tensor& scales_in, const Tensor& zeros_in, const Tensor& offsets_in,
                     const std::string& format, int64_t group_size, at::ScalarType act_dtype) {
  TORCH_CHECK(codes_in.dim() == 2 && codes_in.scalar_type() == at::kByte,
              "nibble::repack: codes must be uint8 [N, K/2]");
  TORCH_CHECK(scales_in.dim() == 2 && scales_in.size(0) == codes_in.size(0), "nibble::repack: scales must be [N, G]");
  check_same_device(codes_in, scales_in, "scales");
  const Tensor codes = codes_in.contiguous(), scales = scales_in.contiguous();
  const nibble::Format f = parse_format(format);
  nibble::PlainWeights src;
  src.format = f;
  src.group_size = int(group_size);
  src.n = codes.size(0);
  src.k = codes.size(1) * 2;
  src.codes = codes.data_ptr<uint8_t>();
  src.ld_codes = codes.size(1);
  src.scales = scales.data_ptr();
  src.scale_type = to_dtype(scales.scalar_type(), "scales");
  Tensor zeros, offsets;
  if (nibble::has_zero_point(f)) {
    TORCH_CHECK(zeros_in.scalar_type() == at::kByte && zeros_in.sizes() == scales.sizes(),
                "nibble::repack: u4 needs uint8 zero points of the scales' shape");
    check_same_device(codes, zeros_in, "zeros");
    zeros = zeros_in.contiguous();
    src.zeros = zeros.data_ptr<uint8_t>();
  }
  if (nibble::has_offset(f)) {
    TORCH_CHECK(offsets_in.scalar_type() == scales.scalar_type() && offsets_in.sizes() == scales.sizes(),
                "nibble::repack: affine_u4 needs offsets of the scales' type and shape");
    check_same_device(codes, offsets_in, "offsets");
    offsets = offsets_in.contiguous();
    src.offsets = offsets.data_ptr();
  }
  const nibble::DType act = to_dtype(act_dtype, "act_dtype");
  TORCH_CHECK(act != nibble::DType::kF32, "nibble::repack: act_dtype must be float16 or bfloat16");
  const nibble::GemmWeightBytes gb = nibble::gemm_weight_bytes(f, src.n, src.k, src.group_size, act);
  std::size_t unused = 0;
  NIBBLE_TORCH_CHECK("repack", nibble::get_repack_workspace_size(src, act, &unused));  // the shape checks
  const nibble::layout::GemmShape s = nibble::layout::make_gemm_shape(src.n, src.k, src.group_size);
  const auto opts = codes.options();
  Tensor g_codes = at::empty({int64_t(gb.codes)}, opts.dtype(at::kByte));
  Tensor g_scales = at::empty({s.groups, s.n_pad}, opts.dtype(act_dtype));
  Tensor g_zeros = buffer(gb.zeros, at::kByte, opts, {s.groups, s.n_pad});
  Tensor g_offsets = buffer(gb.offsets, act_dtype, opts, {s.groups, s.n_pad});
  void* z = gb.zeros ? g_zeros.data_ptr() : nullptr;
  void* o = gb.offsets ? g_offsets.data_ptr() : nullptr;
  nibble::GemmWeights w;
  run_here(
      codes, "repack", [&] { return nibble::repack_host(src, act, g_codes.data_ptr(), g_scales.data_ptr(), z, o, &w); },
      [&](cudaStream_t st) { return nibble::repack(src, act, g_codes.data_ptr(), g_scales.data_ptr(), z, o, &w, st); });
  return {g_codes, g_scales, g_zeros, g_offsets};
}

// ---- gemm ------------------------------------------------------------------------------------------------------
// a [..., K] (fp16 / bf16, CUDA) times the GEMM-layout weight [N, K] (repacked for a's dtype) -> [..., N] of
// out_dtype (a's dtype, or float32), + bias [N] of a's dtype if given.
Tensor gemm_impl(const Tensor& a_in, const Tensor& codes, const Tensor& scales, const Tensor& zeros,
                 const Tensor& offsets, const std::optional<Tensor>& bias_in, const std::string& format,
                 int64_t group_size, int64_t n, int64_t k, std::optional<at::ScalarType> out_dtype) {
  TORCH_CHECK(a_in.is_cuda(), "nibble::gemm: a must be a CUDA tensor");
  TORCH_CHECK(a_in.dim() >= 1 && a_in.size(-1) == k, "nibble::gemm: a must be [..., K] with K = ", k, ", got ",
              a_in.sizes());
  for (const Tensor* t : {&codes, &scales}) check_same_device(a_in, *t, "a weight tensor");
  const c10::cuda::CUDAGuard guard(a_in.device());
  const nibble::Format f = parse_format(format);
  const nibble::DType act = to_dtype(a_in.scalar_type(), "a");
  const at::ScalarType out_type = out_dtype.value_or(a_in.scalar_type());
  std::vector<int64_t> out_shape(a_in.sizes().begin(), a_in.sizes().end());
  out_shape.back() = n;
  Tensor c = at::empty(out_shape, a_in.options().dtype(out_type));
  const int64_t m = k > 0 ? a_in.numel() / k : 0;
  if (m == 0) return c;
  // nibble reads A in 16-byte chunks: a contiguous copy (freshly allocated, so aligned) where it is not.
  Tensor a = a_in.reshape({m, k});
  if (!a.is_contiguous() || reinterpret_cast<std::uintptr_t>(a.data_ptr()) % 16 != 0)
    a = a.clone(at::MemoryFormat::Contiguous);
  Tensor bias;
  if (bias_in.has_value() && bias_in->defined()) {
    check_same_device(a_in, *bias_in, "bias");
    TORCH_CHECK(bias_in->scalar_type() == a.scalar_type() && bias_in->numel() == n,
                "nibble::gemm: bias must be [N] of a's dtype");
    bias = bias_in->contiguous();
  }
  TORCH_CHECK(codes.scalar_type() == at::kByte, "nibble::gemm: codes must be uint8 (nibble::repack's output)");
  TORCH_CHECK(scales.scalar_type() == a.scalar_type(), "nibble::gemm: the weight was repacked for ",
              scales.scalar_type(), ", a is ", a.scalar_type());

  nibble::gemm::Arguments args;
  args.m = m;
  args.act_type = act;
  args.a = a.data_ptr();
  args.lda = k;
  args.w.format = f;
  args.w.group_size = int(group_size);
  args.w.n = n;
  args.w.k = k;
  args.w.scale_type = act;
  args.w.codes = codes.data_ptr<uint8_t>();
  args.w.scales = scales.data_ptr();
  if (nibble::has_zero_point(f)) {
    check_same_device(a_in, zeros, "zeros");
    TORCH_CHECK(zeros.numel() == scales.numel(), "nibble::gemm: u4 needs its zero points");
    args.w.zeros = zeros.data_ptr<uint8_t>();
  }
  if (nibble::has_offset(f)) {
    check_same_device(a_in, offsets, "offsets");
    TORCH_CHECK(offsets.numel() == scales.numel() && offsets.scalar_type() == a.scalar_type(),
                "nibble::gemm: affine_u4 needs its offsets");
    args.w.offsets = offsets.data_ptr();
  }
  // The buffers must be as large as the layout of [n, k] says (the kernels trust the view).
  const nibble::GemmWeightBytes gb = nibble::gemm_weight_bytes(f, n, k, int(group_size), act);
  TORCH_CHECK(std::size_t(codes.numel()) >= gb.codes && std::size_t(scales.nbytes()) >= gb.scales,
              "nibble::gemm: the weight tensors are smaller than the GEMM layout of [N, K] = [", n, ", ", k, "]");
  args.bias = bias.defined() ? bias.data_ptr() : nullptr;
  args.c = c.data_ptr();
  args.ldc = n;
  args.out_type = to_dtype(out_type, "out_dtype");

  NIBBLE_TORCH_CHECK("gemm", nibble::gemm::can_implement(args));
  std::size_t ws_bytes = 0;
  NIBBLE_TORCH_CHECK("gemm", nibble::gemm::get_workspace_size(args, &ws_bytes));
  // Split-K scratch from the caching allocator, on this stream; run() needs its counter region zero on entry
  // (and leaves it zero), the partial sums need no initialisation.
  Tensor ws;
  if (ws_bytes > 0) {
    ws = at::empty({int64_t(ws_bytes)}, a.options().dtype(at::kByte));
    ws.narrow(0, 0, int64_t(std::min(ws_bytes, nibble::gemm::kCounterBytes))).zero_();
  }
  NIBBLE_TORCH_CHECK("gemm", nibble::gemm::run(args, ws_bytes ? ws.data_ptr() : nullptr, ws_bytes,
                                               at::cuda::getCurrentCUDAStream().stream()));
  return c;
}

// ---- checkpoint importers (include/nibble/import/) ---------------------------------------------------------------
// Each import op takes one linear layer's checkpoint tensors and metadata and returns nibble's plain layout exactly
// as quantize returns it (codes uint8 [N, K/2], scales [N, G], zeros uint8 [N, G] (u4), offsets [N, G]
// (affine_u4); an empty uint8 tensor for a buffer the format lacks), so the result feeds repack and gemm
// unchanged. GPTQ and compressed-tensors also return the act-order permutation perm (int32 [K] when a g_idx is
// given, the identity where it is k / g; int32 [0] without one: W x = W_import x[perm], permute_columns) and the
// GPU importer's error word flags (int32 [1]). CPU tensors run the *_host path, CUDA tensors the GPU path on the
// current stream.
//
// Bad data. The CPU paths check all of the data before writing and raise (named here where nibble's Status alone
// would only say "invalid argument"). The GPU paths of GPTQ and compressed-tensors check it on the device and OR
// ImportErrorFlag bits (1 bad qzeros word, 2 permutation entry outside [0, K), 4 int8 zero point outside [-8, 7])
// into flags, which they return instead of synchronizing: the op's weight is wrong when flags != 0 after the
// stream has run it. nibble_torch's wrappers (importers.py, Linear4bit.from_*) read flags and raise by default.
// (AWQ, bitsandbytes, GGUF and HQQ accept every bit pattern: no error word.) Host reads that nibble's API needs
// and that therefore synchronize on the GPU path: a g_idx on the GPU (the permutation is built on the host:
// pass g_idx as a CPU tensor to avoid it), GPTQ checkpoint_format "detect" (reads qzeros), bitsandbytes' maps
// on the GPU (checked against nibble's tables on the host: pass them as CPU tensors to avoid it).

using Tensors6 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// A checkpoint's int64 group size as the int nibble's configs take (a value past int: 0, which every importer
// refuses with kErrorGroupSize).
int group_arg(int64_t g) { return g >= -1 && g <= (int64_t(1) << 30) ? int(g) : 0; }

void expect_tensor(const Tensor& t, const char* op, const char* name, at::ScalarType type, int64_t dim,
                   const char* shape) {
  TORCH_CHECK(t.scalar_type() == type && t.dim() == dim, op, ": ", name, " must be ", type, " ", shape, ", got ",
              t.scalar_type(), " ", t.sizes());
}

void expect_sizes(const Tensor& t, const char* op, const char* name, std::initializer_list<int64_t> sizes) {
  TORCH_CHECK(t.sizes() == at::IntArrayRef(sizes), op, ": ", name, " must be ", at::IntArrayRef(sizes),
              " for this layer, got ", t.sizes());
}

// weight_shape / shape metadata: [N, K].
std::pair<int64_t, int64_t> shape2(at::IntArrayRef shape, const char* op, const char* name) {
  TORCH_CHECK(shape.size() == 2, op, ": ", name, " must be [N, K] (out_features, in_features), got ", shape);
  return {shape[0], shape[1]};
}

uint32_t* flags_ptr(const Tensor& flags) { return reinterpret_cast<uint32_t*>(flags.data_ptr<int32_t>()); }

// A g_idx (GPTQ g_idx, compressed-tensors weight_g_idx) as a contiguous host int32 [k] tensor. A CUDA g_idx is
// copied to the host (a synchronization: act_order_permutation runs on the host).
Tensor host_g_idx(const Tensor& g_idx, int64_t k, const char* op, const char* name) {
  TORCH_CHECK(
      g_idx.dim() == 1 && g_idx.size(0) == k && (g_idx.scalar_type() == at::kInt || g_idx.scalar_type() == at::kLong),
      op, ": ", name, " must be int32 (or int64) [K] = [", k, "], got ", g_idx.scalar_type(), " ", g_idx.sizes());
  return g_idx.to(at::kCPU, at::kInt).contiguous();
}

// The act-order permutation of a host g_idx (act_order_permutation, common.cuh) into a new int32 [k] tensor on
// `device` (a CPU tensor, or a pinned host tensor copied without blocking: the caching host allocator keeps it
// until the copy has run). *identity: whether it is 0..k-1. An invalid g_idx raises, naming the rule.
Tensor act_order_perm(const Tensor& g_idx_host, int64_t k, int64_t group, const at::Device& device, bool* identity,
                      const char* op, const char* name) {
  const bool cuda = device.is_cuda();
  Tensor perm = at::empty({k}, at::TensorOptions().dtype(at::kInt).pinned_memory(cuda));
  const nibble::Status s =
      nibble::act_order_permutation(g_idx_host.data_ptr<int32_t>(), k, group, perm.data_ptr<int32_t>(), identity);
  TORCH_CHECK(s != nibble::Status::kErrorInvalidArgument, op, ": ", name,
              " is not an act-order group index: every group 0 .. K/g - 1 must hold exactly g = ", group, " columns (",
              nibble::to_string(s), ")");
  NIBBLE_TORCH_CHECK("act_order_permutation", s);
  return cuda ? perm.to(device, /*non_blocking=*/true) : perm;
}

nibble::GptqCheckpointFormat parse_gptq_format(const std::string& f) {
  if (f == "gptq" || f == "v1") return nibble::GptqCheckpointFormat::kV1;
  if (f == "gptq_v2" || f == "v2") return nibble::GptqCheckpointFormat::kV2;
  if (f == "detect") return nibble::GptqCheckpointFormat::kDetect;
  TORCH_CHECK(false, "nibble::import_gptq: checkpoint_format '", f, "': 'gptq' (v1), 'gptq_v2' or 'detect'");
}

// Resolves cfg.checkpoint_format from host qzeros (gptq_resolve_format_host: reads every word) and raises, naming
// the first word that does not fit, where it refuses them. `t` holds the host qzeros; qweight / scales are only
// checked for null and alignment there.
nibble::GptqCheckpointFormat gptq_resolve(const nibble::GptqConfig& cfg, const nibble::GptqTensors& t, int64_t groups) {
  nibble::GptqCheckpointFormat f{};
  const nibble::Status s = nibble::gptq_resolve_format_host(cfg, t, &f);
  if (s == nibble::Status::kErrorInvalidArgument) {
    const bool v1 = cfg.checkpoint_format != nibble::GptqCheckpointFormat::kV2 &&
                    !(cfg.checkpoint_format == nibble::GptqCheckpointFormat::kDetect &&
                      uint32_t(t.qzeros[0]) == nibble::detail::kGptqSymWordV2);
    const int64_t words = groups * (t.n / 8);
    for (int64_t i = 0; i < words; ++i) {
      const uint32_t w = uint32_t(t.qzeros[i]);
      if (nibble::detail::gptq_zero_word_ok(w, cfg.sym, v1)) continue;
      std::ostringstream msg;
      msg << "nibble::import_gptq: qzeros word (group " << i / (t.n / 8) << ", columns " << 8 * (i % (t.n / 8)) << ".."
          << 8 * (i % (t.n / 8)) + 7 << ") = 0x" << std::hex << w << std::dec
          << " does not fit sym=" << (cfg.sym ? "True" : "False") << " "
          << (v1 ? "v1 (checkpoint_format 'gptq')" : "v2 ('gptq_v2')") << ": "
          << (cfg.sym ? (v1 ? "v1 stores every symmetric zero 8 as 7 (0x77777777)"
                            : "v2 stores every symmetric zero as 8 (0x88888888)")
                      : "a v1 zero nibble 0xF is refused: no v1 writer stores it (z - 1 <= 14); an old writer's z = 0 "
                        "overflow left it, and the word's other zeros are lost (corrupt v1 asymmetric qzeros)");
      TORCH_CHECK(false, msg.str());
    }
  }
  NIBBLE_TORCH_CHECK("import_gptq", s);
  return f;
}

// ---- import_gptq -----------------------------------------------------------------------------------------------
// qweight int32 [K/8, N], qzeros int32 [G, N/8], scales [G, N] (fp16 / bf16 / fp32), g_idx int32 [K] or None ->
// s4 (sym) or u4 (asym) plain layout, group as the checkpoint's (-1 or K: per-channel), perm, flags.
Tensors6 import_gptq_impl(const Tensor& qweight_in, const Tensor& qzeros_in, const Tensor& scales_in,
                          const std::optional<Tensor>& g_idx, int64_t bits, int64_t group_size, bool sym,
                          const std::string& checkpoint_format) {
  const char* op = "nibble::import_gptq";
  TORCH_CHECK(bits == 4, op, ": bits=", bits, " is not supported: nibble imports 4-bit GPTQ only");
  expect_tensor(qweight_in, op, "qweight", at::kInt, 2, "[K/8, N]");
  expect_tensor(qzeros_in, op, "qzeros", at::kInt, 2, "[G, N/8]");
  TORCH_CHECK(scales_in.dim() == 2, op, ": scales must be [G, N], got ", scales_in.sizes());
  check_same_device(qweight_in, qzeros_in, "qzeros");
  check_same_device(qweight_in, scales_in, "scales");
  nibble::GptqConfig cfg;
  cfg.bits = 4;
  cfg.group_size = group_arg(group_size);
  cfg.sym = sym;
  cfg.checkpoint_format = parse_gptq_format(checkpoint_format);
  TORCH_CHECK(sym || cfg.checkpoint_format != nibble::GptqCheckpointFormat::kDetect, op,
              ": checkpoint_format 'detect' needs sym=True: asymmetric v1 and v2 qzeros cannot be told apart");
  nibble::GptqTensors t;
  t.k = qweight_in.size(0) * 8;
  t.n = qweight_in.size(1);
  t.scale_type = to_dtype(scales_in.scalar_type(), "scales");
  nibble::QuantParams p;
  NIBBLE_TORCH_CHECK("import_gptq", nibble::gptq_import_params(cfg, t, &p));
  const int64_t n = t.n, k = t.k, g = nibble::effective_group(p.group_size, k), groups = k / g;
  expect_sizes(qzeros_in, op, "qzeros", {groups, n / 8});
  expect_sizes(scales_in, op, "scales", {groups, n});
  const Tensor qweight = qweight_in.contiguous(), qzeros = qzeros_in.contiguous(), scales = scales_in.contiguous();
  t.qweight = qweight.data_ptr<int32_t>();
  t.qzeros = qzeros.data_ptr<int32_t>();
  t.scales = scales.data_ptr();
  Tensor gi;
  bool identity = true;
  Tensor perm = at::empty({0}, qweight.options().dtype(at::kInt));
  if (g_idx.has_value() && g_idx->defined()) {
    gi = host_g_idx(*g_idx, k, op, "g_idx");
    perm = act_order_perm(gi, k, g, qweight.device(), &identity, op, "g_idx");
  }
  PlainOut o = plain_out(n, k, p, qweight.options());
  Tensor flags = at::zeros({1}, qweight.options().dtype(at::kInt));  // zeroed on the current stream
  run_here(
      qweight, "import_gptq",
      [&] {
        t.g_idx = gi.defined() ? gi.data_ptr<int32_t>() : nullptr;
        gptq_resolve(cfg, t, groups);  // the data, named where it is refused (import_gptq_host checks it again)
        return nibble::import_gptq_host(cfg, t, o.m, perm.numel() ? perm.data_ptr<int32_t>() : nullptr);
      },
      [&](cudaStream_t st) {
        if (cfg.checkpoint_format == nibble::GptqCheckpointFormat::kDetect) {
          const Tensor qz_host = qzeros.cpu();  // synchronizes: the version is read from the words
          nibble::GptqTensors th = t;
          th.qzeros = qz_host.data_ptr<int32_t>();
          cfg.checkpoint_format = gptq_resolve(cfg, th, groups);
        }
        return nibble::import_gptq(cfg, t, identity ? nullptr : perm.data_ptr<int32_t>(), o.m, flags_ptr(flags), st);
      });
  return {o.codes, o.scales, o.zeros, o.offsets, perm, flags};
}

// ---- import_awq ------------------------------------------------------------------------------------------------
// AutoAWQ GEMM: qweight int32 [K, N/8], qzeros int32 [G, N/8], scales [G, N] -> u4 plain layout.
Tensors4 import_awq_impl(const Tensor& qweight_in, const Tensor& qzeros_in, const Tensor& scales_in, int64_t bits,
                         int64_t group_size, bool zero_point) {
  const char* op = "nibble::import_awq";
  TORCH_CHECK(bits == 4, op, ": bits (w_bit)=", bits, " is not supported: nibble imports 4-bit AWQ only");
  TORCH_CHECK(zero_point, op, ": zero_point=False is not supported (only the GEMM version's asymmetric weights)");
  expect_tensor(qweight_in, op, "qweight", at::kInt, 2, "[K, N/8]");
  expect_tensor(qzeros_in, op, "qzeros", at::kInt, 2, "[G, N/8]");
  TORCH_CHECK(scales_in.dim() == 2, op, ": scales must be [G, N], got ", scales_in.sizes());
  check_same_device(qweight_in, qzeros_in, "qzeros");
  check_same_device(qweight_in, scales_in, "scales");
  nibble::AwqConfig cfg;
  cfg.group_size = group_arg(group_size);
  nibble::AwqTensors t;
  t.k = qweight_in.size(0);
  t.n = qweight_in.size(1) * 8;
  t.scale_type = to_dtype(scales_in.scalar_type(), "scales");
  nibble::QuantParams p;
  NIBBLE_TORCH_CHECK("import_awq", nibble::awq_import_params(cfg, t, &p));
  const int64_t groups = t.k / nibble::effective_group(p.group_size, t.k);
  expect_sizes(qzeros_in, op, "qzeros", {groups, t.n / 8});
  expect_sizes(scales_in, op, "scales", {groups, t.n});
  const Tensor qweight = qweight_in.contiguous(), qzeros = qzeros_in.contiguous(), scales = scales_in.contiguous();
  t.qweight = qweight.data_ptr<int32_t>();
  t.qzeros = qzeros.data_ptr<int32_t>();
  t.scales = scales.data_ptr();
  PlainOut o = plain_out(t.n, t.k, p, qweight.options());
  run_here(
      qweight, "import_awq", [&] { return nibble::import_awq_host(cfg, t, o.m); },
      [&](cudaStream_t st) { return nibble::import_awq(cfg, t, o.m, st); });
  return plain4(o);
}

// ---- import_compressed_tensors ---------------------------------------------------------------------------------
// pack-quantized: weight_packed int32 [N, ceil(K/8)], weight_scale [N, G] ([1] for strategy "tensor"),
// weight_zero_point (asymmetric) int32 [ceil(N/8), G] packed or int8 [N, G], weight_g_idx int32 [K] or None ->
// s4 (symmetric) or u4 plain layout, perm, flags.
nibble::CtStrategy parse_ct_strategy(const std::string& s) {
  if (s == "group") return nibble::CtStrategy::kGroup;
  if (s == "channel") return nibble::CtStrategy::kChannel;
  if (s == "tensor") return nibble::CtStrategy::kTensor;
  TORCH_CHECK(false, "nibble::import_compressed_tensors: strategy '", s, "': 'group', 'channel' or 'tensor'");
}

Tensors6 import_ct_impl(const Tensor& packed_in, const Tensor& scale_in, at::IntArrayRef weight_shape,
                        const std::optional<Tensor>& zp_opt, const std::optional<Tensor>& g_idx, int64_t num_bits,
                        const std::string& strategy, int64_t group_size, bool symmetric) {
  const char* op = "nibble::import_compressed_tensors";
  TORCH_CHECK(num_bits == 4, op, ": num_bits=", num_bits, " is not supported: nibble imports 4-bit weights only");
  const auto [n, k] = shape2(weight_shape, op, "weight_shape");
  expect_tensor(packed_in, op, "weight_packed", at::kInt, 2, "[N, ceil(K/8)]");
  check_same_device(packed_in, scale_in, "weight_scale");
  const bool has_zp = zp_opt.has_value() && zp_opt->defined();
  TORCH_CHECK(!(symmetric && has_zp), op,
              ": symmetric=True takes no weight_zero_point (pack_quantized stores none for symmetric weights)");
  TORCH_CHECK(symmetric || has_zp, op, ": symmetric=False needs weight_zero_point");
  nibble::CtConfig cfg;
  cfg.strategy = parse_ct_strategy(strategy);
  cfg.group_size = group_arg(group_size);
  cfg.symmetric = symmetric;
  if (has_zp) {
    check_same_device(packed_in, *zp_opt, "weight_zero_point");
    TORCH_CHECK(zp_opt->scalar_type() == at::kInt || zp_opt->scalar_type() == at::kChar, op,
                ": weight_zero_point must be int32 (packed) or int8 (unpacked), got ", zp_opt->scalar_type());
    cfg.zero_point = zp_opt->scalar_type() == at::kInt ? nibble::CtZeroPoint::kPackedInt32 : nibble::CtZeroPoint::kInt8;
  }
  nibble::CtTensors t;
  t.n = n;
  t.k = k;
  t.scale_type = to_dtype(scale_in.scalar_type(), "weight_scale");
  nibble::QuantParams p;
  NIBBLE_TORCH_CHECK("import_compressed_tensors", nibble::compressed_tensors_import_params(cfg, t, &p));
  const int64_t g = nibble::effective_group(p.group_size, k), groups = k / g;
  expect_sizes(packed_in, op, "weight_packed", {n, (k + 7) / 8});
  if (cfg.strategy == nibble::CtStrategy::kTensor) {
    TORCH_CHECK(scale_in.numel() == 1, op, ": strategy 'tensor' takes one weight_scale, got ", scale_in.sizes());
  } else {
    expect_sizes(scale_in, op, "weight_scale", {n, groups});
  }
  Tensor zp;
  if (has_zp) {
    if (cfg.zero_point == nibble::CtZeroPoint::kPackedInt32)
      expect_sizes(*zp_opt, op, "weight_zero_point (int32, packed along N)", {(n + 7) / 8, groups});
    else
      expect_sizes(*zp_opt, op, "weight_zero_point (int8)", {n, groups});
    zp = zp_opt->contiguous();
    t.weight_zero_point = zp.data_ptr();
  }
  const Tensor packed = packed_in.contiguous(), scale = scale_in.contiguous();
  t.weight_packed = packed.data_ptr<int32_t>();
  t.weight_scale = scale.data_ptr();
  Tensor gi;
  bool identity = true;
  Tensor perm = at::empty({0}, packed.options().dtype(at::kInt));
  if (g_idx.has_value() && g_idx->defined()) {
    gi = host_g_idx(*g_idx, k, op, "weight_g_idx");
    perm = act_order_perm(gi, k, g, packed.device(), &identity, op, "weight_g_idx");
  }
  PlainOut o = plain_out(n, k, p, packed.options());
  Tensor flags = at::zeros({1}, packed.options().dtype(at::kInt));
  run_here(
      packed, "import_compressed_tensors",
      [&] {
        if (cfg.zero_point ==
            nibble::CtZeroPoint::kInt8) {  // named here; import_compressed_tensors_host refuses it too
          const Tensor flat = zp.flatten(), bad = ((flat < -8) | (flat > 7)).nonzero();
          if (bad.size(0) > 0) {
            const int64_t i = bad[0][0].item<int64_t>();
            TORCH_CHECK(false, op, ": weight_zero_point (int8) holds ", flat[i].item<int>(), " at (row ", i / groups,
                        ", group ", i % groups, "): outside [-8, 7], not a 4-bit zero point");
          }
        }
        t.weight_g_idx = gi.defined() ? gi.data_ptr<int32_t>() : nullptr;
        return nibble::import_compressed_tensors_host(cfg, t, o.m, perm.numel() ? perm.data_ptr<int32_t>() : nullptr);
      },
      [&](cudaStream_t st) {
        return nibble::import_compressed_tensors(cfg, t, identity ? nullptr : perm.data_ptr<int32_t>(), o.m,
                                                 flags_ptr(flags), st);
      });
  return {o.codes, o.scales, o.zeros, o.offsets, perm, flags};
}

// ---- import_bnb ------------------------------------------------------------------------------------------------
// bitsandbytes Params4bit: weight uint8 [N*K/2] (any shape of that many bytes: the checkpoint's [N*K/2, 1]), absmax
// fp32 [nb] (uint8 [nb] with double quant), quant_map fp32 [16], nested_absmax fp32 [ceil(nb / nested_blocksize)]
// and nested_quant_map fp32 [256] (double quant: given iff nested), nb = N*K / blocksize -> nf4 / fp4 plain layout
// with fp32 scales (double quant: the effective absmax, bitsandbytes' own fp32 arithmetic).
Tensor host_map(const Tensor& t, int64_t count, const char* op, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.numel() == count, op, ": ", name, " must be float32 [", count,
              "], got ", t.scalar_type(), " ", t.sizes());
  return t.to(at::kCPU).contiguous();  // a copy (a synchronization) only for a CUDA map
}

Tensors4 import_bnb_impl(const Tensor& weight_in, const Tensor& absmax_in, const Tensor& quant_map_in,
                         at::IntArrayRef shape, const std::string& quant_type, int64_t blocksize,
                         const std::optional<Tensor>& nested_absmax_in, const std::optional<Tensor>& nested_map_in,
                         int64_t nested_blocksize, double nested_offset) {
  const char* op = "nibble::import_bnb";
  nibble::BnbQuantState st;
  TORCH_CHECK(quant_type == "nf4" || quant_type == "fp4", op, ": quant_type '", quant_type, "': 'nf4' or 'fp4'");
  st.quant_type = quant_type == "nf4" ? nibble::BnbQuantType::kNf4 : nibble::BnbQuantType::kFp4;
  std::tie(st.n, st.k) = shape2(shape, op, "shape");
  st.blocksize = blocksize;
  const bool has_na = nested_absmax_in.has_value() && nested_absmax_in->defined();
  const bool has_nm = nested_map_in.has_value() && nested_map_in->defined();
  TORCH_CHECK(has_na == has_nm, op, ": double quantization needs both nested_absmax and nested_quant_map");
  st.nested = has_na;
  st.nested_blocksize = nested_blocksize;
  st.nested_offset = float(nested_offset);
  TORCH_CHECK(!st.nested || std::isfinite(nested_offset), op, ": nested_offset ", nested_offset,
              " is not finite (every scale of the weight would be)");
  TORCH_CHECK(!st.nested || double(st.nested_offset) == nested_offset, op, ": nested_offset ", nested_offset,
              " is not a float32 value (pass quant_state.offset.item())");
  TORCH_CHECK(weight_in.scalar_type() == at::kByte, op, ": weight must be uint8 (two codes per byte), got ",
              weight_in.scalar_type());
  const Tensor quant_map = host_map(quant_map_in, 16, op, "quant_map");  // (+0.0 and -0.0 match: the header)
  Tensor nested_map;
  if (st.nested) nested_map = host_map(*nested_map_in, 256, op, "nested_quant_map");
  nibble::BnbTensors t;
  t.quant_map = quant_map.data_ptr<float>();
  t.nested_quant_map = st.nested ? nested_map.data_ptr<float>() : nullptr;
  // bnb_import_params checks nested_absmax's pointer too (non-null, aligned): set before it, its size checked after.
  Tensor nested_absmax;
  if (st.nested) {
    TORCH_CHECK(nested_absmax_in->scalar_type() == at::kFloat, op, ": nested_absmax must be float32, got ",
                nested_absmax_in->scalar_type());
    check_same_device(weight_in, *nested_absmax_in, "nested_absmax");
    nested_absmax = nested_absmax_in->contiguous();
    t.nested_absmax = nested_absmax.data_ptr<float>();
  }
  nibble::QuantParams p;
  const nibble::Status ps = nibble::bnb_import_params(st, t, &p);
  // (quant_type is checked above, so kErrorUnsupportedFormat here is the table.)
  TORCH_CHECK(ps != nibble::Status::kErrorUnsupportedFormat, op, ": quant_map is not bitsandbytes' ", quant_type,
              " table bit for bit (", nibble::to_string(ps), ")");
  NIBBLE_TORCH_CHECK("import_bnb", ps);
  const int64_t nb = st.n * (st.k / st.blocksize);  // blocksize divides K (or is K): checked by the params
  TORCH_CHECK(weight_in.numel() == st.n * st.k / 2, op, ": weight must hold N*K/2 = ", st.n * st.k / 2, " bytes, got ",
              weight_in.sizes());
  TORCH_CHECK(absmax_in.scalar_type() == (st.nested ? at::kByte : at::kFloat) && absmax_in.numel() == nb, op,
              ": absmax must be ", st.nested ? "uint8" : "float32", " [", nb, "] (", st.nested ? "" : "no ",
              "double quantization), got ", absmax_in.scalar_type(), " ", absmax_in.sizes());
  check_same_device(weight_in, absmax_in, "absmax");
  const Tensor weight = weight_in.contiguous(), absmax = absmax_in.contiguous();
  if (st.nested) {  // nested_blocksize > 0: checked by the params
    const int64_t nb2 = (nb + nested_blocksize - 1) / nested_blocksize;
    TORCH_CHECK(nested_absmax.numel() == nb2, op, ": nested_absmax must be float32 [", nb2, "], got ",
                nested_absmax.sizes());
  }
  t.weight = weight.data_ptr<uint8_t>();
  t.absmax = absmax.data_ptr();
  PlainOut o = plain_out(st.n, st.k, p, weight.options());
  run_here(
      weight, "import_bnb", [&] { return nibble::import_bnb_host(st, t, o.m); },
      [&](cudaStream_t stream) { return nibble::import_bnb(st, t, o.m, stream); });
  return plain4(o);
}

// ---- import_gguf -----------------------------------------------------------------------------------------------
// data uint8: the tensor's bytes (ne = [K, N], blocks along K); type "Q4_0" -> s4 g32 fp16, "Q4_1" -> affine_u4
// g32 fp16, "Q4_K" -> affine_u4 g32 fp32 (scale d * sc, offset -(dmin * mn), exact).
Tensors4 import_gguf_impl(const Tensor& data_in, const std::string& type, int64_t n, int64_t k) {
  const char* op = "nibble::import_gguf";
  TORCH_CHECK(data_in.scalar_type() == at::kByte, op, ": data must be uint8 (the tensor's bytes), got ",
              data_in.scalar_type());
  nibble::QuantParams p;
  nibble::Status (*host)(const void*, std::size_t, std::int64_t, std::int64_t, const nibble::PackedMatrix&) = nullptr;
  nibble::Status (*dev)(const void*, std::size_t, std::int64_t, std::int64_t, const nibble::PackedMatrix&,
                        cudaStream_t) = nullptr;
  std::size_t need = 0;
  if (type == "Q4_0" || type == "q4_0") {
    NIBBLE_TORCH_CHECK("import_gguf", nibble::gguf_q4_0_import_params(n, k, &p));
    need = nibble::gguf_q4_0_bytes(n, k);
    host = nibble::import_gguf_q4_0_host;
    dev = nibble::import_gguf_q4_0;
  } else if (type == "Q4_1" || type == "q4_1") {
    NIBBLE_TORCH_CHECK("import_gguf", nibble::gguf_q4_1_import_params(n, k, &p));
    need = nibble::gguf_q4_1_bytes(n, k);
    host = nibble::import_gguf_q4_1_host;
    dev = nibble::import_gguf_q4_1;
  } else if (type == "Q4_K" || type == "q4_K" || type == "q4_k") {
    NIBBLE_TORCH_CHECK("import_gguf", nibble::gguf_q4_k_import_params(n, k, &p));
    need = nibble::gguf_q4_k_bytes(n, k);
    host = nibble::import_gguf_q4_k_host;
    dev = nibble::import_gguf_q4_k;
  } else {
    TORCH_CHECK(false, op, ": type '", type, "': 'Q4_0', 'Q4_1' or 'Q4_K'");
  }
  TORCH_CHECK(need > 0 && std::size_t(data_in.numel()) == need, op, ": a ", type, " tensor of [N, K] = [", n, ", ", k,
              "] is ", need, " bytes, data has ", data_in.numel());
  const Tensor data = data_in.contiguous();
  PlainOut o = plain_out(n, k, p, data.options());
  run_here(
      data, "import_gguf", [&] { return host(data.data_ptr(), need, n, k, o.m); },
      [&](cudaStream_t st) { return dev(data.data_ptr(), need, n, k, o.m, st); });
  return plain4(o);
}

// ---- import_hqq ------------------------------------------------------------------------------------------------
// HQQLinear (axis 1, packing 4bit_u8): W_q [N*G/2, g] of uint8 (or of the compute dtype with view_as_float: the
// same bytes), scale and zero N*G elements of fp16 / bf16 / fp32, shape [N, K] -> affine_u4 plain layout with fp32
// scales and offsets -(zero * scale).
Tensors4 import_hqq_impl(const Tensor& w_q_in, const Tensor& scale_in, const Tensor& zero_in, at::IntArrayRef shape,
                         int64_t group_size, int64_t nbits, int64_t axis) {
  const char* op = "nibble::import_hqq";
  TORCH_CHECK(nbits == 4, op, ": nbits=", nbits, " is not supported: nibble imports 4-bit HQQ only");
  TORCH_CHECK(axis == 1, op, ": axis=", axis, " is not supported (axis 0 groups along N; only axis 1)");
  TORCH_CHECK(w_q_in.dim() == 2, op, ": W_q must be [N*G/2, group], got ", w_q_in.sizes());
  check_same_device(w_q_in, scale_in, "scale");
  check_same_device(w_q_in, zero_in, "zero");
  nibble::HqqConfig cfg;
  cfg.group_size = group_arg(group_size);
  cfg.axis = 1;
  nibble::HqqTensors t;
  std::tie(t.n, t.k) = shape2(shape, op, "shape");
  t.w_q_rows = w_q_in.size(0);
  t.w_q_row_bytes = w_q_in.size(1) * int64_t(w_q_in.element_size());
  t.scale_count = scale_in.numel();
  t.zero_count = zero_in.numel();
  t.scale_type = to_dtype(scale_in.scalar_type(), "scale");
  t.zero_type = to_dtype(zero_in.scalar_type(), "zero");
  nibble::QuantParams p;
  NIBBLE_TORCH_CHECK("import_hqq", nibble::hqq_import_params(cfg, t, &p));
  const int64_t g = nibble::effective_group(p.group_size, t.k), rows = t.n * (t.k / g);
  TORCH_CHECK(t.w_q_rows == rows / 2 && t.w_q_row_bytes == g && t.scale_count == rows && t.zero_count == rows, op,
              ": for [N, K] = [", t.n, ", ", t.k, "] and group ", g, ": W_q must be ", rows / 2, " rows of ", g,
              " bytes and scale / zero ", rows, " elements; got W_q ", w_q_in.sizes(), " of ", w_q_in.scalar_type(),
              ", scale ", scale_in.sizes(), ", zero ", zero_in.sizes());
  const Tensor w_q = w_q_in.contiguous(), scale = scale_in.contiguous(), zero = zero_in.contiguous();
  t.w_q = static_cast<const uint8_t*>(w_q.data_ptr());
  t.scale = scale.data_ptr();
  t.zero = zero.data_ptr();
  PlainOut o = plain_out(t.n, t.k, p, w_q.options());
  run_here(
      w_q, "import_hqq", [&] { return nibble::import_hqq_host(cfg, t, o.m); },
      [&](cudaStream_t st) { return nibble::import_hqq(cfg, t, o.m, st); });
  return plain4(o);
}

// ---- permute_columns -------------------------------------------------------------------------------------------
// out[..., p] = x[..., perm[p]] for x [..., K] fp16 / bf16 and perm int32 [K] (an act-order import's perm). The
// CPU path checks that perm is a permutation (permute_columns_host); the GPU path does not (an entry outside
// [0, K) writes 0: use the perm an import returned).
Tensor permute_columns_impl(const Tensor& x_in, const Tensor& perm_in) {
  const char* op = "nibble::permute_columns";
  TORCH_CHECK(x_in.dim() >= 1, op, ": x must be [..., K]");
  const int64_t k = x_in.size(-1);
  TORCH_CHECK(x_in.scalar_type() == at::kHalf || x_in.scalar_type() == at::kBFloat16, op,
              ": x must be float16 or bfloat16, got ", x_in.scalar_type());
  expect_tensor(perm_in, op, "perm", at::kInt, 1, "[K]");
  TORCH_CHECK(perm_in.size(0) == k, op, ": perm must be [K] = [", k, "], got ", perm_in.sizes());
  check_same_device(x_in, perm_in, "perm");
  Tensor out = at::empty(x_in.sizes(), x_in.options());
  const int64_t m = k > 0 ? x_in.numel() / k : 0;
  if (m == 0) return out;
  const Tensor x = x_in.contiguous(), perm = perm_in.contiguous();
  const int32_t* pp = perm.data_ptr<int32_t>();
  auto run = [&](auto* in, auto* dst) {
    run_here(
        x, "permute_columns", [&] { return nibble::permute_columns_host(in, k, dst, k, m, k, pp); },
        [&](cudaStream_t st) { return nibble::permute_columns(in, k, dst, k, m, k, pp, st); });
  };
  if (x.scalar_type() == at::kHalf)
    run(reinterpret_cast<const __half*>(x.data_ptr<at::Half>()), reinterpret_cast<__half*>(out.data_ptr<at::Half>()));
  else
    run(reinterpret_cast<const __nv_bfloat16*>(x.data_ptr<at::BFloat16>()),
        reinterpret_cast<__nv_bfloat16*>(out.data_ptr<at::BFloat16>()));
  return out;
}

}  // namespace

TORCH_LIBRARY(nibble, m) {
  m.set_python_module("nibble_torch.ops");  // where the fake (meta) implementations live
  m.def(
      "quantize(Tensor weight, str format, int group_size, ScalarType? scale_dtype=None) -> "
      "(Tensor codes, Tensor scales, Tensor zeros, Tensor offsets)");
  m.def(
      "repack(Tensor codes, Tensor scales, Tensor zeros, Tensor offsets, str format, int group_size, "
      "ScalarType act_dtype) -> (Tensor codes, Tensor scales, Tensor zeros, Tensor offsets)");
  m.def(
      "gemm(Tensor a, Tensor codes, Tensor scales, Tensor zeros, Tensor offsets, Tensor? bias, str format, "
      "int group_size, int n, int k, ScalarType? out_dtype=None) -> Tensor");
  // The checkpoint importers (include/nibble/import/): the plain layout, as quantize returns it.
  m.def(
      "import_gptq(Tensor qweight, Tensor qzeros, Tensor scales, Tensor? g_idx=None, int bits=4, "
      "int group_size=128, bool sym=True, str checkpoint_format=\"gptq\") -> "
      "(Tensor codes, Tensor scales, Tensor zeros, Tensor offsets, Tensor perm, Tensor flags)");
  m.def(
      "import_awq(Tensor qweight, Tensor qzeros, Tensor scales, int bits=4, int group_size=128, "
      "bool zero_point=True) -> (Tensor codes, Tensor scales, Tensor zeros, Tensor offsets)");
  m.def(
      "import_compressed_tensors(Tensor weight_packed, Tensor weight_scale, int[] weight_shape, "
      "Tensor? weight_zero_point=None, Tensor? weight_g_idx=None, int num_bits=4, str strategy=\"group\", "
      "int group_size=128, bool symmetric=True) -> "
      "(Tensor codes, Tensor scales, Tensor zeros, Tensor offsets, Tensor perm, Tensor flags)");
  m.def(
      "import_bnb(Tensor weight, Tensor absmax, Tensor quant_map, int[] shape, str quant_type=\"nf4\", "
      "int blocksize=64, Tensor? nested_absmax=None, Tensor? nested_quant_map=None, int nested_blocksize=256, "
      "float nested_offset=0.0) -> (Tensor codes, Tensor scales, Tensor zeros, Tensor offsets)");
  m.def(
      "import_gguf(Tensor data, str type, int n, int k) -> "
      "(Tensor codes, Tensor scales, Tensor zeros, Tensor offsets)");
  m.def(
      "import_hqq(Tensor W_q, Tensor scale, Tensor zero, int[] shape, int group_size=64, int nbits=4, "
      "int axis=1) -> (Tensor codes, Tensor scales, Tensor zeros, Tensor offsets)");
  m.def("permute_columns(Tensor x, Tensor perm) -> Tensor");
}

// One function per import op serves both keys: it takes the CPU or the GPU path by the device of the layer's main
// tensor (qweight, weight_packed, weight, data, W_q, x), so metadata tensors that may stay on the host (g_idx, the
// bitsandbytes maps) can do so while the weights are on the GPU (the dispatcher then picks the CUDA key).
#define NIBBLE_TORCH_IMPORT_IMPLS(m)                    \
  m.impl("import_gptq", &import_gptq_impl);             \
  m.impl("import_awq", &import_awq_impl);               \
  m.impl("import_compressed_tensors", &import_ct_impl); \
  m.impl("import_bnb", &import_bnb_impl);               \
  m.impl("import_gguf", &import_gguf_impl);             \
  m.impl("import_hqq", &import_hqq_impl);               \
  m.impl("permute_columns", &permute_columns_impl)

TORCH_LIBRARY_IMPL(nibble, CUDA, m) {
  m.impl("quantize", &quantize_impl);
  m.impl("repack", &repack_impl);
  m.impl("gemm", &gemm_impl);
  NIBBLE_TORCH_IMPORT_IMPLS(m);
}

TORCH_LIBRARY_IMPL(nibble, CPU, m) {
  m.impl("quantize", &quantize_impl);
  m.impl("repack", &repack_impl);
  NIBBLE_TORCH_IMPORT_IMPLS(m);
}
