//===- TestUtil.h - random inputs shaped like real KV caches ----*- C++ -*-===//
#ifndef KVARN_TEST_TESTUTIL_H
#define KVARN_TEST_TESTUTIL_H

#include "kvarn/Reference/Quantizer.h"
#include "kvarn/Support/Half.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

namespace kvarn::test {

/// A fresh seed per run, printed so a failure can be replayed with
/// KVARN_TEST_SEED.
inline uint64_t freshSeed() {
  static uint64_t seed = [] {
    if (const char *env = std::getenv("KVARN_TEST_SEED"))
      return uint64_t(std::strtoull(env, nullptr, 0));
    return uint64_t(std::random_device{}()) << 32 | std::random_device{}();
  }();
  static bool printed = [] {
    std::fprintf(stderr, "[   seed   ] KVARN_TEST_SEED=%llu\n",
                 (unsigned long long)seed);
    return true;
  }();
  (void)printed;
  return seed;
}

/// Heavy-tailed [tokens][dim] fp16 tokens (Student-t, 3 degrees of freedom),
/// a few outlier channels 20x larger, and a sink token 50x larger at token 0
/// when `sink` is set.
inline std::vector<uint16_t> heavyTailedTokens(std::mt19937_64 &rng,
                                               int tokens, int dim,
                                               bool sink = true) {
  std::student_t_distribution<float> t(3.0f);
  std::uniform_int_distribution<int> channel(0, dim - 1);
  std::vector<float> outlier(dim, 1.0f);
  for (int i = 0; i < 3; ++i)
    outlier[channel(rng)] = 20.0f;
  std::vector<uint16_t> out(size_t(tokens) * dim);
  for (int k = 0; k < tokens; ++k)
    for (int c = 0; c < dim; ++c) {
      float x = t(rng) * outlier[c] * (sink && k == 0 ? 50.0f : 1.0f);
      out[size_t(k) * dim + c] = floatToHalf(std::clamp(x, -6e4f, 6e4f));
    }
  return out;
}

/// One tile of [g][d] fp16 tokens as the quantizer's matrix: [d, g] (rows
/// = channels, as K is quantized) when `channelRows`, else [g, d] (V).
inline Matrix tileFromTokens(const uint16_t *tokens, int g, int d,
                             bool channelRows) {
  Matrix m(channelRows ? d : g, channelRows ? g : d);
  for (int t = 0; t < g; ++t)
    for (int c = 0; c < d; ++c) {
      float x = halfToFloat(tokens[size_t(t) * d + c]);
      if (channelRows)
        m.at(c, t) = x;
      else
        m.at(t, c) = x;
    }
  return m;
}

} // namespace kvarn::test

#endif // KVARN_TEST_TESTUTIL_H
