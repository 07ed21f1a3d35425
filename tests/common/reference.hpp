// tests/common/reference.hpp — the float64 host GEMM reference C = A * dequant(W)^T (no bias) on sampled
// rows x columns: all of them when the problem is small, else the first / last ones, those at tile
// edges and random ones (the budget shrinks in quick mode). It dequantizes the plain [N, K] codes and
// never reads the GEMM layout, so layout, repack and kernel are checked end to end.
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <set>
#include <vector>

#include "common/host_weights.hpp"

/// Distinct sorted indices in [0, count): all of them when want >= count, else `must` (clamped) plus random.
inline std::vector<int64_t> pick_indices(std::mt19937_64& rng, int64_t count, int64_t want,
                                         const std::vector<int64_t>& must) {
  std::vector<int64_t> out;
  if (want >= count) {
    for (int64_t i = 0; i < count; ++i) out.push_back(i);
    return out;
  }
  std::set<int64_t> s;
  for (int64_t i : must)
    if (i >= 0 && i < count) s.insert(i);
  while (int64_t(s.size()) < want) s.insert(int64_t(rng() % std::uint64_t(count)));
  return std::vector<int64_t>(s.begin(), s.end());
}

/// The float64 reference on sampled rows x columns, without bias.
struct Samples {
  std::vector<int64_t> rows, cols;
  std::vector<double> ref;  // [rows.size()][cols.size()]
};

inline Samples reference(const HostProblem& p, std::mt19937_64& rng) {
  const double budget = quick_mode() ? 4e6 : 3e7;  // multiply-adds per reference
  const int64_t m = p.m, n = p.n(), k = p.k();
  Samples s;
  const int64_t want_rows = double(m) * n * k <= budget ? m : 24;
  s.rows = pick_indices(rng, m, want_rows, {0, 1, 7, 8, 15, 16, 63, 64, 127, 128, m / 2, m - 2, m - 1});
  const double row_work = double(s.rows.size()) * k;
  const int64_t want_cols = row_work * n <= budget ? n : std::max<int64_t>(64, int64_t(budget / row_work));
  std::vector<int64_t> must;
  for (int64_t c = 0; c < 16; ++c) must.push_back(c);
  for (int64_t c = n - 48; c < n; ++c) must.push_back(c);
  for (int64_t c = 127; c < n; c += 128 * 7) {
    must.push_back(c);
    must.push_back(c + 1);
  }
  s.cols = pick_indices(rng, n, want_cols, must);

  const HostWeights& w = *p.w;
  double value[16];
  for (int i = 0; i < 16; ++i) value[i] = code_value(w.format, p.act, i);
  std::vector<double> arows(s.rows.size() * std::size_t(k));
  for (std::size_t ri = 0; ri < s.rows.size(); ++ri)
    for (int64_t c = 0; c < k; ++c) arows[ri * k + c] = from_bits(p.act, p.a[s.rows[ri] * p.lda + c]);
  std::vector<double> wrow(std::size_t(k + 4), 0.0);
  s.ref.assign(s.rows.size() * s.cols.size(), 0.0);
  for (std::size_t ci = 0; ci < s.cols.size(); ++ci) {
    const int64_t nn = s.cols[ci];
    for (int64_t g = 0; g < w.groups(); ++g) {
      const double scale = t_round(p.act, w.scale(nn, g));  // the repack rounds scales to T
      const double zero = w.zero(nn, g);
      const int64_t k0 = g * (w.group == kPC ? k : w.group), k1 = w.group == kPC ? k : k0 + w.group;
      if (nibble::has_offset(w.format)) {
        // affine u4: the repack rounds m to T too, and the kernel's fma rounds q * s + m to T once
        const double offset = t_round(p.act, w.offset(nn, g));
        for (int64_t kk = k0; kk < k1; ++kk) wrow[kk] = t_round(p.act, float(value[w.code(nn, kk)] * scale + offset));
      } else {
        for (int64_t kk = k0; kk < k1; ++kk) wrow[kk] = (value[w.code(nn, kk)] - zero) * scale;
      }
    }
    for (std::size_t ri = 0; ri < s.rows.size(); ++ri) {
      const double* a = &arows[ri * k];
      double acc[4] = {0.0, 0.0, 0.0, 0.0};
      int64_t kk = 0;
      for (; kk + 4 <= k; kk += 4)
        for (int u = 0; u < 4; ++u) acc[u] += a[kk + u] * wrow[kk + u];
      for (; kk < k; ++kk) acc[0] += a[kk] * wrow[kk];
      s.ref[ri * s.cols.size() + ci] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
  }
  return s;
}
