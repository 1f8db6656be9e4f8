//===- Quantizer.h - CPU reference of the KVarN tile quantizer --*- C++ -*-===//
//
// docs/kvarn.md ("Variance normalization", "Quantization", "Record layout"),
// written for clarity and exactness: Sinkhorn-like variance normalization
// with best-iterate tracking (fp32, as the reference), asymmetric
// round-to-nearest per row, low-bit packing, and the record that holds one
// (block, KV head) tile. This is the oracle every kernel is tested
// against.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_REFERENCE_QUANTIZER_H
#define KVARN_REFERENCE_QUANTIZER_H

#include "kvarn/Layout/RecordLayout.h"

#include "llvm/ADT/ArrayRef.h"

#include <cstdint>
#include <vector>

namespace kvarn {

/// A row-major fp32 matrix.
struct Matrix {
  int rows = 0;
  int cols = 0;
  std::vector<float> data;
  Matrix() = default;
  Matrix(int rows, int cols) : rows(rows), cols(cols), data(size_t(rows) * cols) {}
  float &at(int r, int c) { return data[size_t(r) * cols + c]; }
  float at(int r, int c) const { return data[size_t(r) * cols + c]; }
};

/// max(colstd)/max(min(colstd), 1e-8) + the same over rowstd, with unbiased
/// standard deviations (colstd: one per column, over the rows), of M, or of
/// M / colScale[None, :] / rowScale[:, None] (TileArithmetic.h's arithmetic).
float imbalance(const Matrix &m);
float imbalance(const Matrix &m, llvm::ArrayRef<float> colScale,
                llvm::ArrayRef<float> rowScale);

struct SinkhornResult {
  std::vector<float> colScale; // best iterate, length cols
  std::vector<float> rowScale; // best iterate, length rows
  float initialImbalance = 0;
  float bestImbalance = 0;
  int bestIteration = 0; // 0 = the untouched tile
};

/// Section 4: `iters` column-then-row steps, the best iterate (ties: the
/// newer) kept, in TileArithmetic.h's arithmetic: the scales kept in the
/// linear domain (exp of the spec's log scales), within rounding of the
/// spec and identical to every GPU lowering's.
SinkhornResult sinkhorn(const Matrix &m, int iters);

/// Section 5 on one tile M[R, C]: codes (unpacked, row-major [R, C]), the
/// absorbed row scale and zero and the column scale as stored: fp16 bits,
/// or with ScaleFormat::E4M3 the scales as e4m3 bytes times 2^ their
/// field's exponent (the zero stays fp16).
struct QuantizedTile {
  int rows = 0;
  int cols = 0;
  int bits = 0;
  ScaleFormat scaleFormat = ScaleFormat::F16;
  std::vector<uint8_t> codes;
  std::vector<uint16_t> absorbedScale; // per row
  std::vector<uint16_t> absorbedZero;  // per row, fp16
  std::vector<uint16_t> otherScale;    // per column
  int scaleExponent = 0;               // E4M3: absorbedScale's
  int otherExponent = 0;               // E4M3: otherScale's

  /// The stored values, widened to fp32.
  float scaleAt(int r) const;
  float zeroAt(int r) const;
  float otherAt(int c) const;
};

QuantizedTile quantizeTile(const Matrix &m, int bits, const SinkhornResult &s,
                           ScaleFormat format = ScaleFormat::F16);

/// quantizeTile with the column and row scales given directly (length C and
/// R): quantizeTile(m, bits, s) is this with s's scales.
///
/// ScaleFormat::E4M3 (docs/kvarn.md, "Scale formats") quantizes against the
/// stored values: the column scale is rounded to its e4m3 field first and
/// the row divided by the rounded value; the row's step (its range / qmax)
/// is rounded to the nearest e4m3 value, the grid of that step centred on
/// the row's range (its zero point, fp16, moved by half the difference),
/// and the codes computed with the stored step and zero, so that rounding
/// a scale changes only the step. (The row's Sinkhorn scale cancels out of
/// the absorbed scale and zero; only the column scale matters.)
QuantizedTile quantizeTileWithScales(const Matrix &m, int bits,
                                     llvm::ArrayRef<float> colScale,
                                     llvm::ArrayRef<float> rowScale,
                                     ScaleFormat format = ScaleFormat::F16);

/// Normalize then quantize, the whole of sections 4 and 5.
QuantizedTile normalizeAndQuantize(const Matrix &m, int bits, int iters,
                                   SinkhornResult *sinkhornOut = nullptr,
                                   ScaleFormat format = ScaleFormat::F16);

/// x[r][c] = (code * absorbedScale[r] + absorbedZero[r]) * otherScale[c],
/// evaluated in fp32 in that order, as the public reference (and the GPU
/// kernels) do; with it, fp64 attention over the cache reproduces the
/// reference's `out_exact` bit for bit. Returned widened to double.
std::vector<double> dequantizeTile(const QuantizedTile &q);

/// Packs codes of `bits` bits low bits first: code i goes to byte
/// i / (8 / bits) at shift (i mod (8 / bits)) * bits.
void packCodes(llvm::ArrayRef<uint8_t> codes, int bits,
               llvm::MutableArrayRef<uint8_t> out);
void unpackCodes(llvm::ArrayRef<uint8_t> packed, int bits,
                 llvm::MutableArrayRef<uint8_t> out);

/// Section 6. `kRot` and `vRot` are one tile's rotated tokens, fp16 bits
/// [G][D]. K is quantized as [D, G] (per channel), V as [G, D] (per token).
/// Writes layout.recordBytes bytes, padding zeroed.
void encodeRecord(const RecordLayout &layout, const uint16_t *kRot,
                  const uint16_t *vRot, uint8_t *record);

/// The two quantized tiles held by a record: K as [D, G], V as [G, D].
struct DecodedRecord {
  QuantizedTile k;
  QuantizedTile v;
};
DecodedRecord decodeRecord(const RecordLayout &layout, const uint8_t *record);

/// Dequantized rotated K and V of a record, both [G][D] row-major, in double.
void dequantizeRecord(const RecordLayout &layout, const uint8_t *record,
                      double *kRot, double *vRot);

} // namespace kvarn

#endif // KVARN_REFERENCE_QUANTIZER_H
