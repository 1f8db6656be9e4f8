//===- Rotation.cpp - the orthonormal Hadamard rotation of a head ---------===//

#include "kvarn/Reference/Rotation.h"
#include "kvarn/Layout/Preset.h"
#include "kvarn/Support/Half.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MathExtras.h"

#include <cmath>

using namespace kvarn;

/// The largest dense factor the Kronecker construction uses. Larger orders
/// (368, 464) fall back to block-diagonal: a dense 368x368 product per token
/// would cost more than the rest of a flush.
static constexpr int kMaxDenseOrder = 128;

static bool isPrime(int x) {
  if (x < 2)
    return false;
  for (int d = 2; d * d <= x; ++d)
    if (x % d == 0)
      return false;
  return true;
}

/// Quadratic character of a modulo prime p: 0, 1 or -1.
static int legendre(int a, int p) {
  a = ((a % p) + p) % p;
  if (a == 0)
    return 0;
  long long r = 1, base = a;
  for (int e = (p - 1) / 2; e; e >>= 1, base = base * base % p)
    if (e & 1)
      r = r * base % p;
  return r == 1 ? 1 : -1;
}

/// The (p+1) x (p+1) core [[0, 1^T], [sign*1, Q]] with Q the Jacobsthal
/// matrix of p.
static std::vector<int> paleyCore(int p, int sign) {
  int q = p + 1;
  std::vector<int> c(q * q, 0);
  for (int j = 1; j < q; ++j) {
    c[j] = 1;
    c[j * q] = sign;
  }
  for (int i = 0; i < p; ++i)
    for (int j = 0; j < p; ++j)
      c[(i + 1) * q + (j + 1)] = legendre(j - i, p);
  return c;
}

std::vector<int8_t> kvarn::paleyHadamard(int m) {
  // Paley I: p = m - 1 prime, p = 3 mod 4; H = I + [[0, 1^T], [-1, Q]].
  int p = m - 1;
  if (isPrime(p) && p % 4 == 3) {
    std::vector<int> c = paleyCore(p, -1);
    std::vector<int8_t> h(m * m);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < m; ++j)
        h[i * m + j] = int8_t(c[i * m + j] + (i == j ? 1 : 0));
    return h;
  }
  // Paley II: q = m/2 - 1 prime, q = 1 mod 4; replace the symmetric core's
  // 0 by [[1, -1], [-1, -1]] and +-1 by +-[[1, 1], [1, -1]].
  if (m % 2 == 0) {
    int q = m / 2 - 1;
    if (isPrime(q) && q % 4 == 1) {
      int c1 = q + 1;
      std::vector<int> c = paleyCore(q, 1);
      std::vector<int8_t> h(m * m);
      for (int i = 0; i < c1; ++i)
        for (int j = 0; j < c1; ++j) {
          int v = c[i * c1 + j];
          int block[2][2] = {{1, -1}, {-1, -1}};
          if (v != 0)
            block[0][0] = block[0][1] = block[1][0] = v, block[1][1] = -v;
          for (int a = 0; a < 2; ++a)
            for (int b = 0; b < 2; ++b)
              h[(2 * i + a) * m + (2 * j + b)] = int8_t(block[a][b]);
        }
      return h;
    }
  }
  return {};
}

kvarn::Expected<Rotation> Rotation::get(int order) {
  if (kvarn::Error err = checkHeadDim(order))
    return std::move(err);
  Rotation r;
  r.n = order;
  if (llvm::isPowerOf2_32(order)) {
    r.k = Kind::Sylvester;
    return r;
  }
  int pow2 = order & -order; // the largest power of two dividing the order
  for (int m = order / pow2; m <= kMaxDenseOrder && m <= order; m *= 2) {
    std::vector<int8_t> a = paleyHadamard(m);
    if (a.empty())
      continue;
    r.k = Kind::Kronecker;
    r.m = m;
    r.dense = std::move(a);
    return r;
  }
  r.k = Kind::BlockDiagonal;
  for (int bit = 1 << 30; bit; bit >>= 1)
    if (order & bit)
      r.blocks.push_back(bit);
  return r;
}

std::string Rotation::describe() const {
  switch (k) {
  case Kind::Sylvester:
    return llvm::formatv("sylvester({0})", n).str();
  case Kind::Kronecker: {
    bool paleyOne = isPrime(m - 1) && (m - 1) % 4 == 3; // as paleyHadamard
    return llvm::formatv("paley{0}({1}) x sylvester({2})", paleyOne ? 1 : 2,
                         m, n / m)
        .str();
  }
  case Kind::BlockDiagonal: {
    std::string s = "block-diagonal(";
    for (size_t i = 0; i < blocks.size(); ++i)
      s += (i ? "+" : "") + std::to_string(blocks[i]);
    return s + ")";
  }
  }
  return "";
}

static int sylvesterSign(int i, int j) {
  return (llvm::popcount(unsigned(i & j)) & 1) ? -1 : 1;
}

double Rotation::entry(int i, int j) const {
  switch (k) {
  case Kind::Sylvester:
    return sylvesterSign(i, j) / std::sqrt(double(n));
  case Kind::Kronecker: {
    int s = n / m;
    return dense[(i / s) * m + (j / s)] * sylvesterSign(i % s, j % s) /
           std::sqrt(double(n));
  }
  case Kind::BlockDiagonal: {
    int start = 0;
    for (int b : blocks) {
      if (i >= start && i < start + b)
        return (j >= start && j < start + b)
                   ? sylvesterSign(i - start, j - start) / std::sqrt(double(b))
                   : 0.0;
      start += b;
    }
    return 0.0;
  }
  }
  return 0.0;
}

/// In-place unnormalized Walsh-Hadamard transform of x[0, len).
static void fwht(double *x, int len) {
  for (int h = 1; h < len; h *= 2)
    for (int i = 0; i < len; i += 2 * h)
      for (int j = i; j < i + h; ++j) {
        double a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
}

void Rotation::apply(const double *x, double *y, bool transpose) const {
  std::vector<double> t(x, x + n);
  if (k == Kind::BlockDiagonal) {
    int start = 0;
    for (int b : blocks) {
      fwht(t.data() + start, b);
      for (int i = start; i < start + b; ++i)
        y[i] = t[i] / std::sqrt(double(b));
      start += b;
    }
    return;
  }
  int s = n / m;
  for (int a = 0; a < m; ++a)
    fwht(t.data() + a * s, s);
  // Mix the m chunks: y[b] = sum_a A[a][b] t[a] (x*H), or A[b][a] (x*H^T).
  for (int b = 0; b < m; ++b)
    for (int i = 0; i < s; ++i) {
      double acc = 0;
      for (int a = 0; a < m; ++a) {
        int sign = k == Kind::Sylvester ? 1
                   : transpose          ? dense[b * m + a]
                                        : dense[a * m + b];
        acc += sign * t[a * s + i];
      }
      y[b * s + i] = acc / std::sqrt(double(n));
    }
}

void Rotation::rotate(const double *x, double *y) const { apply(x, y, false); }

void Rotation::unrotate(const double *x, double *y) const {
  apply(x, y, true);
}

/// The unnormalized transform in fp32 with the normalization folded into
/// the last stage, as the kernels' butterflies (kvgpu.fwht) do it.
static void fwhtF32(float *x, int len, float scale) {
  for (int h = 1; h < len; h *= 2) {
    bool last = 2 * h == len;
    for (int i = 0; i < len; i += 2 * h)
      for (int j = i; j < i + h; ++j) {
        float a = x[j], b = x[j + h];
        float sum = a + b, diff = a - b;
        x[j] = last ? sum * scale : sum;
        x[j + h] = last ? diff * scale : diff;
      }
  }
  if (len == 1)
    x[0] = x[0] * scale;
}

void Rotation::rotateF32(const float *x, float *y, bool inverse) const {
  std::vector<float> t(x, x + n);
  if (k == Kind::Sylvester) {
    fwhtF32(t.data(), n, float(1.0 / std::sqrt(double(n))));
    std::copy(t.begin(), t.end(), y);
    return;
  }
  if (k == Kind::BlockDiagonal) {
    int start = 0;
    for (int b : blocks) {
      fwhtF32(t.data() + start, b, float(1.0 / std::sqrt(double(b))));
      start += b;
    }
    std::copy(t.begin(), t.end(), y);
    return;
  }
  // Kronecker: unnormalized chunks, then kvgpu.dense_mix.
  int s = n / m;
  for (int a = 0; a < m; ++a)
    fwhtF32(t.data() + a * s, s, 1.0f);
  float norm = float(1.0 / std::sqrt(double(n)));
  for (int b = 0; b < m; ++b)
    for (int i = 0; i < s; ++i) {
      float acc = 0.0f;
      for (int a = 0; a < m; ++a) {
        float v = t[a * s + i];
        acc = (inverse ? dense[b * m + a] : dense[a * m + b]) > 0 ? acc + v
                                                                  : acc - v;
      }
      y[b * s + i] = acc * norm;
    }
}

void Rotation::rotateHalf(const uint16_t *x, uint16_t *y, DType xType) const {
  std::vector<float> in(n), out(n);
  for (int i = 0; i < n; ++i)
    in[i] = dtypeToFloat(x[i], xType);
  rotateF32(in.data(), out.data());
  for (int i = 0; i < n; ++i)
    y[i] = floatToHalf(out[i]);
}
