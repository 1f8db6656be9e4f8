//===- RotationTest.cpp - the Hadamard rotation of every head_dim ---------===//

#include "TestUtil.h"

#include "kvarn/Layout/Preset.h"
#include "kvarn/Reference/Rotation.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace kvarn;

static Rotation rotationFor(int d) {
  kvarn::Expected<Rotation> r = Rotation::get(d);
  EXPECT_TRUE(bool(r)) << d;
  return std::move(*r);
}

class EveryHeadDim : public ::testing::TestWithParam<int> {};

// Rows of H are e_i * H; they must be orthonormal, and the rotate() used by
// every test must agree with entry().
TEST_P(EveryHeadDim, OrthonormalAndConsistent) {
  const int d = GetParam();
  Rotation r = rotationFor(d);
  std::vector<double> rows(size_t(d) * d), e(d, 0.0);
  for (int i = 0; i < d; ++i) {
    e[i] = 1.0;
    r.rotate(e.data(), rows.data() + size_t(i) * d);
    e[i] = 0.0;
    for (int j = 0; j < d; ++j)
      ASSERT_NEAR(rows[size_t(i) * d + j], r.entry(i, j), 1e-12);
  }
  for (int i = 0; i < d; ++i)
    for (int j = i; j < d; ++j) {
      double dot = 0;
      for (int k = 0; k < d; ++k)
        dot += rows[size_t(i) * d + k] * rows[size_t(j) * d + k];
      ASSERT_NEAR(dot, i == j ? 1.0 : 0.0, 1e-12) << r.describe();
    }
}

TEST_P(EveryHeadDim, UnrotateInvertsRotate) {
  const int d = GetParam();
  Rotation r = rotationFor(d);
  std::mt19937_64 rng(test::freshSeed());
  std::normal_distribution<double> n;
  std::vector<double> x(d), y(d), z(d);
  for (double &v : x)
    v = n(rng);
  r.rotate(x.data(), y.data());
  r.unrotate(y.data(), z.data());
  for (int i = 0; i < d; ++i)
    ASSERT_NEAR(z[i], x[i], 1e-12);
}

// The kernels' fp32 transform is the exact one within fp32 rounding (a few
// ulps of the row's norm after log2(D) stages), both directions, and an
// fp32 operation differs from fp64 only by rounding: it is not a second
// transform. Its exact bits are held to the GPU's by the GPU append test.
TEST_P(EveryHeadDim, RotateF32IsTheTransformInFp32) {
  const int d = GetParam();
  Rotation r = rotationFor(d);
  std::mt19937_64 rng(test::freshSeed());
  std::normal_distribution<float> n;
  std::vector<float> x(d), y(d), z(d);
  std::vector<double> xd(d), yd(d), zd(d);
  for (int i = 0; i < d; ++i)
    xd[i] = x[i] = n(rng);
  for (bool inverse : {false, true}) {
    r.rotateF32(x.data(), y.data(), inverse);
    if (inverse)
      r.unrotate(xd.data(), yd.data());
    else
      r.rotate(xd.data(), yd.data());
    double err = 0, norm = 0;
    for (int i = 0; i < d; ++i) {
      err += (y[i] - yd[i]) * (y[i] - yd[i]);
      norm += yd[i] * yd[i];
    }
    EXPECT_LT(std::sqrt(err / norm), 16 * std::ldexp(1.0, -24))
        << "head_dim " << d << (inverse ? " inverse" : "");
  }
  // And back: inverse after forward is the identity within fp32 rounding.
  r.rotateF32(x.data(), y.data());
  r.rotateF32(y.data(), z.data(), /*inverse=*/true);
  for (int i = 0; i < d; ++i)
    ASSERT_NEAR(z[i], x[i], 1e-5f * (1 + std::fabs(x[i]))) << i;
}

// A single outlier channel is spread over every channel (Sylvester,
// Kronecker) or over its whole block (block-diagonal), at equal magnitude.
TEST_P(EveryHeadDim, SpreadsAnOutlierChannel) {
  const int d = GetParam();
  Rotation r = rotationFor(d);
  std::mt19937_64 rng(test::freshSeed());
  int channel = std::uniform_int_distribution<int>(0, d - 1)(rng);
  std::vector<double> x(d, 0.0), y(d);
  x[channel] = 100.0;
  r.rotate(x.data(), y.data());
  int spreadOver = d;
  if (r.kind() == Rotation::Kind::BlockDiagonal) {
    int start = 0;
    for (int b : r.blockSizes()) {
      if (channel >= start && channel < start + b)
        spreadOver = b;
      start += b;
    }
  }
  int nonzero = 0;
  for (double v : y)
    if (std::fabs(v) > 1e-9) {
      ++nonzero;
      EXPECT_NEAR(std::fabs(v), 100.0 / std::sqrt(double(spreadOver)), 1e-9);
    }
  EXPECT_EQ(nonzero, spreadOver) << r.describe();
  if (r.kind() != Rotation::Kind::BlockDiagonal)
    EXPECT_LE(*std::max_element(y.begin(), y.end()), 100.0 / 8 + 1e-9);
}

static std::vector<int> supportedHeadDims() {
  std::vector<int> dims;
  for (int d = kMinHeadDim; d <= kMaxHeadDim; d += kHeadDimMultiple)
    dims.push_back(d);
  return dims;
}

INSTANTIATE_TEST_SUITE_P(Rotation, EveryHeadDim,
                         ::testing::ValuesIn(supportedHeadDims()));

// The spec's recursion, built literally, for the power-of-two orders.
TEST(Rotation, SylvesterMatchesTheSpecRecursion) {
  std::vector<std::vector<int>> h = {{1}};
  while (h.size() < 512) {
    size_t n = h.size();
    std::vector<std::vector<int>> next(2 * n, std::vector<int>(2 * n));
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < n; ++j) {
        next[i][j] = next[i][j + n] = next[i + n][j] = h[i][j];
        next[i + n][j + n] = -h[i][j];
      }
    h = std::move(next);
    if (h.size() < 64)
      continue;
    Rotation r = rotationFor(int(h.size()));
    EXPECT_EQ(r.kind(), Rotation::Kind::Sylvester);
    for (size_t i = 0; i < h.size(); ++i)
      for (size_t j = 0; j < h.size(); ++j)
        ASSERT_EQ(r.entry(int(i), int(j)) * std::sqrt(double(h.size())),
                  h[i][j]);
  }
}

TEST(Rotation, ConstructionsPerHeadDim) {
  EXPECT_EQ(rotationFor(96).describe(), "paley1(12) x sylvester(8)");
  EXPECT_EQ(rotationFor(80).describe(), "paley1(20) x sylvester(4)");
  EXPECT_EQ(rotationFor(112).describe(), "paley2(28) x sylvester(4)");
  EXPECT_EQ(rotationFor(368).describe(), "block-diagonal(256+64+32+16)");
  EXPECT_EQ(rotationFor(128).describe(), "sylvester(128)");
  for (int d : {48, 100, 520}) {
    kvarn::Expected<Rotation> r = Rotation::get(d);
    EXPECT_FALSE(bool(r)) << d;
    if (!r)
      kvarn::consumeError(r.takeError());
  }
}

TEST(Rotation, PaleyMatricesAreHadamard) {
  for (int m : {4, 8, 12, 20, 24, 28, 36, 44, 60, 68, 76, 84, 104, 108, 124}) {
    std::vector<int8_t> a = paleyHadamard(m);
    ASSERT_EQ(a.size(), size_t(m) * m) << m;
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < m; ++j) {
        int dot = 0;
        for (int k = 0; k < m; ++k)
          dot += a[i * m + k] * a[j * m + k];
        ASSERT_EQ(dot, i == j ? m : 0) << "order " << m;
      }
  }
  EXPECT_TRUE(paleyHadamard(16).empty()); // 15 is not prime, 7 = 3 mod 4
}
