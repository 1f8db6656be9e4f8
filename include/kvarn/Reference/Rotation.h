//===- Rotation.h - the orthonormal Hadamard rotation of a head -*- C++ -*-===//
//
// docs/kvarn.md, "Rotation", extended to every supported head_dim ("Rotations
// for every head_dim"):
//
//   * D a power of two:   H = S_D / sqrt(D), S the Sylvester matrix
//                         (S_1 = [1], S_2n = [[S_n, S_n], [S_n, -S_n]]);
//                         H is symmetric and its own inverse.
//   * D = m * 2^k, with a Paley Hadamard matrix A of order m <= 128:
//                         H = (A kron S_{2^k}) / sqrt(D). Channel d = a*2^k + s.
//                         A is Paley I (m = p + 1, p prime, p = 3 mod 4) when
//                         one exists, else Paley II (m = 2(q + 1), q prime,
//                         q = 1 mod 4). H is orthonormal but not symmetric:
//                         un-rotation uses H^T.
//   * otherwise:          block-diagonal Sylvester over the binary
//                         decomposition of D, largest block first, each block
//                         normalized by its own size (368 = 256+64+32+16).
//
// Rotating a row vector: x_rot = x * H. Un-rotating: x = x_rot * H^T.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_REFERENCE_ROTATION_H
#define KVARN_REFERENCE_ROTATION_H

#include "kvarn/Support/DType.h"

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace kvarn {

class Rotation {
public:
  enum class Kind { Sylvester, Kronecker, BlockDiagonal };

  /// The rotation for a supported head_dim (a multiple of 16 in [64, 512]).
  static kvarn::Expected<Rotation> get(int order);

  int order() const { return n; }
  Kind kind() const { return k; }
  /// Order of the dense ±1 factor A (1 for Sylvester and block-diagonal).
  int denseOrder() const { return m; }
  /// Order of the Sylvester factor (D / denseOrder()); for block-diagonal the
  /// blocks are blockSizes().
  int sylvesterOrder() const { return n / m; }
  llvm::ArrayRef<int> blockSizes() const { return blocks; }
  /// Row-major m x m ±1 entries of A.
  llvm::ArrayRef<int8_t> denseFactor() const { return dense; }
  /// A short description, e.g. "paley1(12) x sylvester(8)".
  std::string describe() const;

  /// H[i][j], normalized.
  double entry(int i, int j) const;

  /// y = x * H, exact in double.
  void rotate(const double *x, double *y) const;
  /// y = x * H^T, the inverse rotation.
  void unrotate(const double *x, double *y) const;

  /// y = x * H (or x * H^T with `inverse`) with the kernels' fp32
  /// arithmetic, bit for bit: the butterflies stage by stage (h = 1, 2, ...;
  /// x + y and x - y, each rounded), the Kronecker chunks mixed by summing
  /// +-t_a in order a = 0 .. m-1 from 0, and the normalization as one
  /// multiply by fp32(1/sqrt(size)) after the last stage (or the mix). A
  /// value stored from it (append's fp16 pool rows) is then the same bits on
  /// every path; the double transform differs from it by an fp16 ulp on a
  /// few values in 10^4, enough to flip a flush code at a rounding boundary.
  void rotateF32(const float *x, float *y, bool inverse = false) const;

  /// fp16 (or bf16: `xType`) in, fp16 out: rotateF32 rounded once to fp16,
  /// what append writes for a model's new K and V.
  void rotateHalf(const uint16_t *x, uint16_t *y,
                  DType xType = DType::F16) const;

private:
  Rotation() = default;
  void apply(const double *x, double *y, bool transpose) const;

  Kind k = Kind::Sylvester;
  int n = 0;
  int m = 1;
  std::vector<int8_t> dense;
  std::vector<int> blocks;
};

/// The ±1 Hadamard matrix of order m from Paley's constructions, row-major,
/// or an empty vector if neither construction gives order m.
std::vector<int8_t> paleyHadamard(int m);

} // namespace kvarn

#endif // KVARN_REFERENCE_ROTATION_H
