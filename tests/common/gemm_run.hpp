// tests/common/gemm_run.hpp — the harness around gemm::run. Including it instantiates every GEMM kernel
// the TU's architectures build: only tests/gemm/test_gemm_run.cu and tests/gemm/test_gemm_sm80.cu include
// it (CI compiles on 2 cores).
//
// run_and_check(problem, weights, acts, samples, opts) poisons C (0xFF bytes: NaN in f32 / f16 / bf16),
// runs once eagerly and once captured in a CUDA graph (bit-identical), checks that C outside its view is
// still poison, that the split-K workspace is all-zero afterwards and C against the reference: exact
// equality for exact problems, else the relative Frobenius bound 1e-3 (fp16) / 8e-3 (bf16).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <nibble/gemm/gemm.cuh>
#include <sstream>
#include <string>
#include <vector>

#include "common/device_buffer.hpp"
#include "common/gemm_api.hpp"
#include "common/host_weights.hpp"
#include "common/reference.hpp"

// ---- device problem and the run harness ----------------------------------------------------------------

struct DeviceWeights {
  DevBuf codes, scales, zeros, offsets;
  DevBuf dq_codes, dq_stats;  // repack_dq's compact scales (upload_and_repack_dq)
  GemmWeights view;
};

/// Uploads the plain weight and repacks it on the GPU for activations of type act.
inline DeviceWeights upload_and_repack(const HostWeights& w, DType act) {
  DevBuf pc = to_device(w.codes), ps = to_device(w.scales), pz = to_device(w.zeros), po = to_device(w.offsets);
  const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(w.format, w.n, w.k, w.group, act);
  DeviceWeights d;
  d.codes = DevBuf(b.codes);
  d.scales = DevBuf(b.scales);
  d.zeros = DevBuf(b.zeros);
  d.offsets = DevBuf(b.offsets);
  NIBBLE_CHECK(nibble::repack(w.view(pc.get(), ps.get(), pz.get(), po.get()), act, d.codes.get(), d.scales.get(),
                              d.zeros.get(), d.offsets.get(), &d.view, nullptr));
  CUDA_CHECK(cudaDeviceSynchronize());
  return d;
}

/// Uploads the plain weight `w` with the double-quantized scales `dq` and repacks it on the GPU with its scales
/// kept compact (repack_dq).
inline DeviceWeights upload_and_repack_dq(const HostWeights& w, const HostDq& dq, DType act) {
  DevBuf pc = to_device(w.codes), dc = to_device(dq.codes), da = to_device(dq.absmax2);
  DevBuf off = to_device(std::vector<float>{dq.offset});
  const nibble::GemmWeightBytes b = nibble::gemm_weight_bytes(w.format, w.n, w.k, w.group, act, true);
  DeviceWeights d;
  d.codes = DevBuf(b.codes);
  d.dq_codes = DevBuf(b.dq_codes);
  d.dq_stats = DevBuf(b.dq_stats);
  NIBBLE_CHECK(nibble::repack_dq(dq.view(w, pc.get(), dc.get(), da.as<float>(), off.as<float>()), act, d.codes.get(),
                                 d.dq_codes.get(), d.dq_stats.get(), &d.view, nullptr));
  CUDA_CHECK(cudaDeviceSynchronize());
  return d;
}

struct DeviceActs {
  DevBuf a, bias;
};
inline DeviceActs upload_acts(const HostProblem& p) {
  DeviceActs d;
  d.a = to_device(p.a);
  d.bias = to_device(p.bias);
  CUDA_CHECK(cudaDeviceSynchronize());
  return d;
}

/// Every mainloop that can run M rows of format f here: decode sizes (M <= 16) run one tile family whatever
/// is asked, so only once; above, mma.sync, the transposed tiles with mma.sync, and wgmma where this build
/// and device have it (Gemm_Wgmma.* says when it is not). kStream only where the stream kernel serves f
/// (stream_serves: every format today).
inline std::vector<gemm::Mainloop> mainloops_for(int64_t m, Format f = kS4) {
  // kAuto: the stream kernel on small weights (stream_preferred); kMmaSync: the mma.sync decode tile up to
  // M = 16; kStream forced up to M = 32
  const bool stream = gemm::stream_serves(f);
  if (m <= 16)
    return stream
               ? std::vector<gemm::Mainloop>{gemm::Mainloop::kAuto, gemm::Mainloop::kMmaSync, gemm::Mainloop::kStream}
               : std::vector<gemm::Mainloop>{gemm::Mainloop::kAuto, gemm::Mainloop::kMmaSync};
  std::vector<gemm::Mainloop> v{gemm::Mainloop::kMmaSync, gemm::Mainloop::kTransposedMma};
  if (m <= gemm::kStreamMaxM && stream) v.push_back(gemm::Mainloop::kStream);
  if (gemm::wgmma_available()) v.push_back(gemm::Mainloop::kWgmma);
  return v;
}

/// The current device's properties, through the library's per-device cache (the device run() uses).
inline nibble::DeviceInfo device_info() {
  nibble::DeviceInfo info;
  NIBBLE_CHECK(nibble::current_device_info(&info));
  return info;
}

/// The plan run() uses for args on this device: its SM count and its opt-in shared-memory limit (a
/// 99 KiB GPU gets the compact tiles; get_workspace_size and run() use that limit too).
inline gemm::Plan plan_of(const gemm::Arguments& args) {
  const nibble::DeviceInfo info = device_info();
  return plan_for(args, args.sm_count > 0 ? args.sm_count : info.sm_count,
                  gemm::resolve_mainloop(args.mainloop, args.m, args.w.n, args.w.k, info, args.w.format),
                  info.max_smem_per_block);
}

struct RunOpts {
  DType out = kF32;
  bool bias = false;
  int split_k = 0;       // 0: heuristic
  int64_t ldc_pad = 0;   // ldc = N + ldc_pad
  int64_t c_offset = 0;  // elements from the start of the C buffer to C[0, 0]
  gemm::Mainloop mainloop = gemm::Mainloop::kAuto;
  gemm::CodebookTable codebook_table = gemm::CodebookTable::kAuto;
  int max_smem = 0;  // Arguments::max_smem_per_block
  int sm_count = 0;  // Arguments::sm_count (0: the device's)
  std::string name() const {
    return std::string("mainloop=") + mainloop_name(mainloop) +
           (sm_count > 0 ? " sm_count=" + std::to_string(sm_count) : std::string()) +
           (max_smem > 0 ? " max_smem=" + std::to_string(max_smem) : std::string()) +
           (codebook_table == gemm::CodebookTable::kAuto           ? ""
            : codebook_table == gemm::CodebookTable::kSharedMemory ? " table=smem"
                                                                   : " table=regs") +
           " out=" + dtype_name(out) + " bias=" + (bias ? "1" : "0") + " split_k=" + std::to_string(split_k) +
           " ldc_pad=" + std::to_string(ldc_pad) + " c_offset=" + std::to_string(c_offset);
  }
};

struct RunResult {
  std::vector<uint8_t> c;  // the whole C buffer, poison included
  int64_t ldc = 0, offset = 0, total = 0;
  int elem = 4;
  gemm::Plan plan;
};

inline gemm::Arguments make_args(const HostProblem& p, const DeviceWeights& dw, const DeviceActs& da, const RunOpts& o,
                                 void* c) {
  gemm::Arguments args;
  args.m = p.m;
  args.act_type = p.act;
  args.a = da.a.get();
  args.lda = p.lda;
  args.w = dw.view;
  args.bias = o.bias ? da.bias.get() : nullptr;
  args.c = c;
  args.ldc = p.n() + o.ldc_pad;
  args.out_type = o.out;
  args.split_k = o.split_k;
  args.mainloop = o.mainloop;
  args.codebook_table = o.codebook_table;
  args.max_smem_per_block = o.max_smem;
  args.sm_count = o.sm_count;
  return args;
}

/// The counter region at the start of a split-K workspace must be all zero again after every run.
inline void expect_workspace_clean(const DevBuf& ws, const gemm::Plan& plan, const char* when) {
  if (plan.workspace_bytes == 0) return;
  const std::vector<unsigned> counters = ws.download<unsigned>(0, gemm::kCounterBytes);
  std::size_t nonzero = 0;
  for (unsigned c : counters) nonzero += c != 0u;
  EXPECT_EQ(nonzero, 0u) << "split-K tile counters not reset to zero " << when;
}

/// Runs the GEMM eagerly, then again captured in a CUDA graph; both into freshly poisoned C; the two C
/// buffers must be identical bit for bit. Returns the eager C buffer.
inline RunResult run_gemm(const HostProblem& p, const DeviceWeights& dw, const DeviceActs& da, const RunOpts& o) {
  RunResult r;
  r.elem = nibble::size_of(o.out);
  r.ldc = p.n() + o.ldc_pad;
  r.offset = o.c_offset;
  r.total = r.offset + (p.m - 1) * r.ldc + p.n() + 40;  // 40 poison elements after the last row
  const std::size_t bytes = std::size_t(r.total) * r.elem;
  DevBuf c(bytes);
  const gemm::Arguments args = make_args(p, dw, da, o, c.as<char>() + r.offset * r.elem);
  NIBBLE_CHECK(gemm::can_implement(args));
  const std::size_t ws_bytes = workspace_size(args);
  r.plan = plan_of(args);
  EXPECT_EQ(ws_bytes, r.plan.workspace_bytes) << "get_workspace_size disagrees with make_plan";
  DevBuf ws(ws_bytes);
  if (ws_bytes > 0) CUDA_CHECK(cudaMemset(ws.get(), 0, ws_bytes));  // zeroed once, at allocation
  CUDA_CHECK(cudaDeviceSynchronize());
  Stream stream;

  CUDA_CHECK(cudaMemsetAsync(c.get(), 0xFF, bytes, stream.s));
  NIBBLE_CHECK(gemm::run(args, ws.get(), ws_bytes, stream.s));
  CUDA_CHECK(cudaStreamSynchronize(stream.s));
  CUDA_CHECK(cudaGetLastError());
  r.c = c.download<uint8_t>();
  expect_workspace_clean(ws, r.plan, "after the eager run");

  CUDA_CHECK(cudaMemsetAsync(c.get(), 0xFF, bytes, stream.s));
  CUDA_CHECK(cudaStreamSynchronize(stream.s));
  GraphExec g;
  capture(stream.s, g, [&](cudaStream_t s) { return gemm::run(args, ws.get(), ws_bytes, s); });
  CUDA_CHECK(cudaGraphLaunch(g.exec, stream.s));
  CUDA_CHECK(cudaStreamSynchronize(stream.s));
  const std::vector<uint8_t> replay = c.download<uint8_t>();
  const auto diff = std::mismatch(r.c.begin(), r.c.end(), replay.begin());
  EXPECT_TRUE(diff.first == r.c.end()) << "the CUDA-graph run differs from the eager run at byte "
                                       << (diff.first - r.c.begin()) << " (split-K determinism)";
  expect_workspace_clean(ws, r.plan, "after the graph run");
  return r;
}

inline float c_value(const RunResult& r, DType out, int64_t index) {
  if (r.elem == 4) {
    float f;
    std::memcpy(&f, r.c.data() + 4 * index, 4);
    return f;
  }
  uint16_t b;
  std::memcpy(&b, r.c.data() + 2 * index, 2);
  return from_bits(out, b);
}

/// C against the reference: poison untouched outside the view, every element of the view finite, and on
/// the sampled entries either exact equality (exact problems) or the relative Frobenius error bound.
inline void check_c(const HostProblem& p, const Samples& s, const RunOpts& o, const RunResult& r) {
  const int64_t n = p.n();
  int64_t bad_poison = 0, bad_finite = 0, first_poison = -1, first_finite = -1;
  for (int64_t i = 0; i < r.total; ++i) {
    const int64_t rel = i - r.offset;
    const bool inside = rel >= 0 && rel / r.ldc < p.m && rel % r.ldc < n;
    if (inside) {
      if (!std::isfinite(c_value(r, o.out, i)) && bad_finite++ == 0) first_finite = rel;
    } else {
      bool poison = true;
      for (int b = 0; b < r.elem; ++b) poison = poison && r.c[std::size_t(i * r.elem + b)] == 0xFF;
      if (!poison && bad_poison++ == 0) first_poison = i;
    }
  }
  EXPECT_EQ(bad_poison, 0) << "elements outside the C view were written; first at buffer element " << first_poison;
  EXPECT_EQ(bad_finite, 0) << "C elements are NaN / Inf (or still poison); first at row "
                           << (first_finite < 0 ? -1 : first_finite / r.ldc) << " col "
                           << (first_finite < 0 ? -1 : first_finite % r.ldc);

  double err2 = 0.0, ref2 = 0.0, worst = 0.0;
  int64_t mismatches = 0;
  std::string first;
  for (std::size_t ri = 0; ri < s.rows.size(); ++ri)
    for (std::size_t ci = 0; ci < s.cols.size(); ++ci) {
      const int64_t row = s.rows[ri], col = s.cols[ci];
      double ref = s.ref[ri * s.cols.size() + ci];
      if (o.bias) ref += from_bits(p.act, p.bias[std::size_t(col)]);
      const float got = c_value(r, o.out, r.offset + row * r.ldc + col);
      if (p.exact()) {
        const float want = o.out == kF32 ? float(ref) : t_round(o.out, float(ref));
        if (!(got == want) && mismatches++ < 1) {
          std::ostringstream os;
          os << "C[" << row << ", " << col << "] = " << got << ", reference " << want;
          first = os.str();
        }
      } else {
        const double d = double(got) - ref;
        err2 += d * d;
        ref2 += ref * ref;
        worst = std::max(worst, std::fabs(d));
      }
    }
  if (p.exact()) {
    EXPECT_EQ(mismatches, 0) << "bit-exact oracle: " << mismatches << " of " << s.ref.size()
                             << " sampled entries differ; first: " << first;
  } else {
    const double tol = p.act == kF16 ? 1e-3 : 8e-3;
    const double rel = ref2 > 0.0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
    EXPECT_LE(rel, tol) << "relative Frobenius error over " << s.ref.size() << " sampled entries; largest |error| "
                        << worst;
    EXPECT_TRUE(std::isfinite(rel)) << "NaN in C";
  }
}

/// Runs and checks one configuration; returns the result for further comparisons.
inline RunResult run_and_check(const HostProblem& p, const DeviceWeights& dw, const DeviceActs& da, const Samples& s,
                               const RunOpts& o) {
  SCOPED_TRACE(p.name() + " " + o.name());
  RunResult r = run_gemm(p, dw, da, o);
  check_c(p, s, o, r);
  return r;
}

/// For f16 and bf16, each format in `formats` that keep(act, f) accepts (random N x K weights, group 64)
/// and M = 1, 24, 56, 130, 300 (the decode tile, decode32, the 64- / 128- / 256-token families): body(problem,
/// weights, activations, reference samples, mainloop) for every mainloop that M runs with.
template <class Keep, class Body>
inline void for_each_tile_family_case(std::mt19937_64& rng, int64_t n, int64_t k, std::initializer_list<Format> formats,
                                      Keep keep, Body body) {
  for (DType act : {kF16, kBF16})
    for (Format f : formats) {
      if (!keep(act, f)) continue;
      const HostWeights w = make_weights(rng, f, 64, n, k, act, Data::kRandom);
      const DeviceWeights dw = upload_and_repack(w, act);
      for (int64_t m : {1, 24, 56, 130, 300}) {
        const HostProblem p = make_problem(rng, act, w, m, Data::kRandom);
        const DeviceActs da = upload_acts(p);
        const Samples s = reference(p, rng);
        for (gemm::Mainloop ml : mainloops_for(m, f)) body(p, dw, da, s, ml);
      }
    }
}

/// The K each group size is tested with (K % 64 != 0 for g32 and per-channel: padded atoms).
inline int64_t k_for_group(int group, bool quick = quick_mode()) {
  if (quick) return group == 32 ? 224 : group == 64 ? 320 : group == 128 ? 384 : group == 256 ? 512 : 200;
  return group == 32 ? 992 : group == 64 ? 1088 : group == 128 ? 1152 : group == 256 ? 1280 : 1000;
}

/// 1 when this binary's device code for the current device issues wgmma (detail::kWgmmaCompiled in the
/// device pass). A template so that every test binary compiles its own copy for its own architectures.
template <int kUnused = 0>
__global__ void wgmma_compiled_probe(int* out) {
  *out = nibble::detail::kWgmmaCompiled ? 1 : 0;
}
/// Whether the device code that runs here has wgmma; prints it beside what the host believes.
inline bool device_code_has_wgmma() {
  DevBuf flag(sizeof(int));
  wgmma_compiled_probe<><<<1, 1>>>(flag.as<int>());
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cudaDeviceSynchronize());
  const bool compiled = flag.download<int>()[0] == 1;
  nibble::DeviceInfo info;
  NIBBLE_CHECK(nibble::current_device_info(&info));
  std::printf("[nibble] device sm_%d, wgmma in this binary's device code: %s, wgmma_available(): %s\n",
              info.compute_capability, compiled ? "yes" : "no", gemm::wgmma_available() ? "yes" : "no");
  return compiled;
}
