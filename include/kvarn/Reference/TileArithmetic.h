//===- TileArithmetic.h - the arithmetic every tile quantizer shares -*- C++ -*-===//
//
// kvt.normalize (Sinkhorn) and kvt.quantize take discrete decisions: which
// iterate is the best, which code a value rounds to. Any two computations of
// the same real number that differ by an ulp disagree on those decisions
// whenever the number lies within that ulp of the decision boundary (a
// rounding tie, two iterates' imbalances), and no rule applied afterwards
// can make them agree. So the CPU reference, the CPU evaluator and every GPU
// lowering compute the *same bits*, by following this contract:
//
//  - Only IEEE-754 correctly rounded binary32 operations, each rounded on its
//    own: add, sub, mul, div, sqrt, fma (fused where this contract says,
//    nowhere else: the CPU side builds with -ffp-contract=off and calls
//    std::fma, the GPU lowering emits each operation explicitly), min/max.
//    No exp/log/approximate results: the scales live in the linear domain.
//  - Every sum over a row or column is the stride-halving tree of treeSum:
//    index k is added to k + h for h = P/2, P/4, ..., 1 (P the power of two
//    at or above n, absent indices skipped). A grid of T threads (a power of
//    two, at least two elements each) with elements k = t + j T realizes it
//    exactly: the in-thread tree over j first, then the threads from their
//    highest index bit down. Sums of products (productTreeSum) fuse the
//    first level: fma(a_k, b_k, a_{k+h} * b_{k+h}).
//  - Standard deviations of y_k = x_k * s_k are two-pass: mean =
//    productTreeSum(x, s) * (1/n); d_k = fma(x_k, s_k, -mean); variance =
//    productTreeSum(d, d) * (1/(n-1)), clamped to [kVarianceMin,
//    kVarianceMax]; sqrt. The std of a scaled row is factored:
//    std_j(x_ij / c_j / r_i) = (1/r_i) * std_j(x_ij * (1/c_j)).
//  - Ties keep docs/kvarn.md's rules: the newer iterate wins an equal
//    imbalance, codes round half to even.
//
// The result is within rounding of the spec's log-domain Sinkhorn (same
// algorithm, other rounding), and identical wherever it is computed.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_REFERENCE_TILEARITHMETIC_H
#define KVARN_REFERENCE_TILEARITHMETIC_H

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace kvarn::tilemath {

// The constants of docs/kvarn.md, "Variance normalization" (the std clamp
// and the imbalance floor), and its cumulative log-scale clamp [-0.3, 10] as
// scale bounds: fp32(exp(-0.3f)) and fp32(exp(10.0f)).
constexpr float kStdMin = 1e-3f;
constexpr float kStdMax = 1e3f;
constexpr float kScaleMin = 0x1.7b4c86p-1f;
constexpr float kScaleMax = 0x1.5829dcp+14f;
constexpr float kImbalanceFloor = 1e-8f;
constexpr float kRangeFloor = 1e-10f;
// The variance bounds: every root is of a normal number far from overflow,
// where the GPU's branch-free correctly rounded root is exact (no special
// cases). Stds this small or large decide nothing: they are clamped to
// [kStdMin, kStdMax] in a step and below kImbalanceFloor in an imbalance.
constexpr float kVarianceMin = 0x1p-100f;
constexpr float kVarianceMax = 0x1p100f;

/// The stride-halving tree sum of at(0) .. at(n - 1), the first level's
/// pairs (k, k + h) added by `first(k, k + h)` and lone leaves taken as
/// `leaf(k)`.
template <typename Leaf, typename First>
float treeSumWith(int n, Leaf leaf, First first) {
  if (n == 0)
    return 0.0f;
  int p = 1;
  while (p < n)
    p *= 2;
  std::vector<float> v(n);
  int h = p / 2, live = n;
  if (h == 0)
    return leaf(0);
  for (int k = 0; k < h; ++k)
    v[k] = k + h < n ? first(k, k + h) : leaf(k);
  live = std::min(live, h);
  for (h /= 2; h >= 1; h /= 2) {
    for (int k = 0; k < h && k + h < live; ++k)
      v[k] = v[k] + v[k + h];
    live = std::min(live, h);
  }
  return v[0];
}

/// The stride-halving tree sum of at(0) .. at(n - 1).
template <typename At> float treeSum(int n, At at) {
  return treeSumWith(n, at, [&](int k, int l) { return at(k) + at(l); });
}

/// The tree sum of a(k) * b(k), its first level fused.
template <typename A, typename B> float productTreeSum(int n, A a, B b) {
  return treeSumWith(
      n, [&](int k) { return a(k) * b(k); },
      [&](int k, int l) { return std::fma(a(k), b(k), a(l) * b(l)); });
}

/// The fp32 constant 1/n the means and variances multiply by.
inline float reciprocalCount(int n) { return 1.0f / float(n); }

/// Unbiased standard deviation of x(k) * s(k), k < n, two-pass.
template <typename X, typename S> float standardDeviation(int n, X x, S s) {
  float mean = productTreeSum(n, x, s) * reciprocalCount(n);
  auto d = [&](int k) { return std::fma(x(k), s(k), -mean); };
  float variance = productTreeSum(n, d, d) * reciprocalCount(n - 1);
  return std::sqrt(std::min(std::max(variance, kVarianceMin), kVarianceMax));
}

/// One Sinkhorn step of a scale: s * clamp(std), clamped to the scale bounds.
inline float stepScale(float scale, float std) {
  float factor = std::min(std::max(std, kStdMin), kStdMax);
  return std::min(std::max(scale * factor, kScaleMin), kScaleMax);
}

/// max(stds) / max(min(stds), floor): one half of the imbalance.
inline float spread(float hi, float lo) {
  return hi / std::max(lo, kImbalanceFloor);
}

} // namespace kvarn::tilemath

#endif // KVARN_REFERENCE_TILEARITHMETIC_H
