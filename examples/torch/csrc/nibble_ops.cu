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
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <nibble/gemm/extern_instances.cuh>
#include <nibble/gemm/gemm.cuh>
#include <nibble/layout/repack.cuh>
#include <nibble/quant/quantize.cuh>
#include <optional>
#include <string>
#include <tuple>

namespace {

using Tensor = at::Tensor;
using Tensors4 = std::tuple<Tensor, Tensor, Tensor, Tensor>;

#define NIBBLE_TORCH_CHECK(op, expr)                                                                        \
  do {                                                                                                      \
    const ::nibble::Status s_ = (expr);                                                                     \
    TORCH_CHECK(s_ == ::nibble::Status::kSuccess, "nibble::" op ": ", ::nibble::to_string(s_), " (Status ", \
                static_cast<int>(s_), ")");                                                                 \
  } while (0)

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
  const at::ScalarType st =
      scale_dtype.value_or(weight.scalar_type() == at::kFloat ? at::kFloat : weight.scalar_type());
  qp.scale_type = to_dtype(st, "scale_dtype");
  qp.double_quant = false;
  const nibble::PackedBytes pb = nibble::packed_bytes(n, k, qp);
  NIBBLE_TORCH_CHECK("quantize", pb.status);
  const int64_t groups = int64_t(pb.scales / std::size_t(nibble::size_of(qp.scale_type))) / n;
  const auto opts = weight.options();
  Tensor codes = at::empty({n, k / 2}, opts.dtype(at::kByte));
  Tensor scales = at::empty({n, groups}, opts.dtype(st));
  Tensor zeros = buffer(pb.zeros, at::kByte, opts, {n, groups});
  Tensor offsets = buffer(pb.offsets, st, opts, {n, groups});

  nibble::PackedMatrix m;
  m.format = qp.format;
  m.group_size = qp.group_size;
  m.n = n;
  m.k = k;
  m.codes = codes.data_ptr<uint8_t>();
  m.ld_codes = k / 2;
  m.scales = scales.data_ptr();
  m.scale_type = qp.scale_type;
  m.zeros = pb.zeros ? zeros.data_ptr<uint8_t>() : nullptr;
  m.offsets = pb.offsets ? offsets.data_ptr() : nullptr;

  const bool cuda = weight.is_cuda();
  std::optional<c10::cuda::CUDAGuard> guard;
  if (cuda) guard.emplace(weight.device());
  auto run = [&](auto* x) {
    if (cuda) {
      // No workspace without double quantization (get_quantize_workspace_size: 0).
      NIBBLE_TORCH_CHECK("quantize", nibble::quantize(x, k, m, nullptr, 0, at::cuda::getCurrentCUDAStream().stream()));
    } else {
      NIBBLE_TORCH_CHECK("quantize", nibble::quantize_cpu(x, k, m));
    }
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
  return {codes, scales, zeros, offsets};
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
  if (codes.is_cuda()) {
    const c10::cuda::CUDAGuard guard(codes.device());
    NIBBLE_TORCH_CHECK("repack", nibble::repack(src, act, g_codes.data_ptr(), g_scales.data_ptr(), z, o, &w,
                                                at::cuda::getCurrentCUDAStream().stream()));
  } else {
    NIBBLE_TORCH_CHECK("repack", nibble::repack_host(src, act, g_codes.data_ptr(), g_scales.data_ptr(), z, o, &w));
  }
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
}

TORCH_LIBRARY_IMPL(nibble, CUDA, m) {
  m.impl("quantize", &quantize_impl);
  m.impl("repack", &repack_impl);
  m.impl("gemm", &gemm_impl);
}

TORCH_LIBRARY_IMPL(nibble, CPU, m) {
  m.impl("quantize", &quantize_impl);
  m.impl("repack", &repack_impl);
}
