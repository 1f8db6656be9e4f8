//===- E4M3Emitters.h - kvarn/Support/Fp8.h's operations as IR --*- C++ -*-===//
//
// The e4m3 scale fields (docs/kvarn.md, "Scale formats") in integer and
// fp32 operations that every chip has (sm_80 has no e4m3 conversion
// instruction), computing Fp8.h's values bit for bit. Scales are positive,
// finite, and at most 448 once divided by their field's 2^exponent.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_CODEGEN_E4M3EMITTERS_H
#define KVARN_CODEGEN_E4M3EMITTERS_H

#include "kvarn/Codegen/TileArithmeticEmitters.h"
#include "kvarn/Support/Fp8.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

namespace kvarn::codegen {

inline mlir::Value emitI32(mlir::OpBuilder &b, mlir::Location loc, int32_t v) {
  return mlir::arith::ConstantIntOp::create(b, loc, v, 32);
}

/// 2^e as f32 for an i32 e in [-126, 127] (built from its exponent bits).
inline mlir::Value emitPow2(mlir::OpBuilder &b, mlir::Location loc,
                            mlir::Value e) {
  using namespace mlir;
  Value bits = arith::ShLIOp::create(
      b, loc, arith::AddIOp::create(b, loc, e, emitI32(b, loc, 127)),
      emitI32(b, loc, 23));
  return arith::BitcastOp::create(b, loc, b.getF32Type(), bits);
}

/// scaleFieldExponent(max) as i32: with max = m 2^E (m in [1, 2)), E - 8
/// when m <= 1.75 (448 = 1.75 2^8), else E - 7; 0 for max <= 0; clamped to
/// [-kScaleExponentLimit, kScaleExponentLimit].
inline mlir::Value emitScaleExponent(mlir::OpBuilder &b, mlir::Location loc,
                                     mlir::Value max) {
  using namespace mlir;
  Value bits = arith::BitcastOp::create(b, loc, b.getI32Type(), max);
  Value biased = arith::ShRUIOp::create(b, loc, bits, emitI32(b, loc, 23));
  Value mantissa =
      arith::AndIOp::create(b, loc, bits, emitI32(b, loc, 0x7fffff));
  Value above = arith::ExtUIOp::create(
      b, loc, b.getI32Type(),
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ugt, mantissa,
                            emitI32(b, loc, 0x600000)));
  Value e = arith::AddIOp::create(
      b, loc, arith::SubIOp::create(b, loc, biased, emitI32(b, loc, 127 + 8)),
      above);
  e = arith::MaxSIOp::create(b, loc, e, emitI32(b, loc, -kScaleExponentLimit));
  e = arith::MinSIOp::create(b, loc, e, emitI32(b, loc, kScaleExponentLimit));
  Value positive = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT, max,
                                         emitF32(b, loc, 0.0f));
  return arith::SelectOp::create(b, loc, positive, e, emitI32(b, loc, 0));
}

/// The e4m3 value nearest x in [0, 448] (ties to an even mantissa), as
/// f32: below 2^-6 a multiple of 2^-9 (cvt.rni of x 2^9, times 2^-9), else x's
/// fp32 mantissa rounded to 3 bits.
inline mlir::Value emitRoundToE4M3(mlir::OpBuilder &b, mlir::Location loc,
                                   mlir::Value x) {
  using namespace mlir;
  Type f32 = b.getF32Type(), i32 = b.getI32Type();
  Value sub = arith::MulFOp::create(
      b, loc,
      arith::SIToFPOp::create(
          b, loc, f32,
          emitRoundToInt(
              b, loc,
              arith::MulFOp::create(b, loc, x, emitF32(b, loc, 0x1p9f)))),
      emitF32(b, loc, 0x1p-9f));
  Value bits = arith::BitcastOp::create(b, loc, i32, x);
  Value odd = arith::AndIOp::create(
      b, loc, arith::ShRUIOp::create(b, loc, bits, emitI32(b, loc, 20)),
      emitI32(b, loc, 1));
  Value rounded = arith::AndIOp::create(
      b, loc,
      arith::AddIOp::create(
          b, loc, arith::AddIOp::create(b, loc, bits, emitI32(b, loc, 0x7ffff)),
          odd),
      emitI32(b, loc, int32_t(0xfff00000u)));
  Value normal = arith::BitcastOp::create(b, loc, f32, rounded);
  Value isSub = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLT, x,
                                      emitF32(b, loc, kE4M3MinNormal));
  return arith::SelectOp::create(b, loc, isSub, sub, normal);
}

/// The e4m3 byte (i8) of an f32 x that is an e4m3 value in [0, 448].
inline mlir::Value emitE4M3Byte(mlir::OpBuilder &b, mlir::Location loc,
                                mlir::Value x) {
  using namespace mlir;
  Type i32 = b.getI32Type();
  Value sub = arith::FPToSIOp::create(
      b, loc, i32, arith::MulFOp::create(b, loc, x, emitF32(b, loc, 0x1p9f)));
  Value normal = arith::SubIOp::create(
      b, loc,
      arith::ShRUIOp::create(b, loc, arith::BitcastOp::create(b, loc, i32, x),
                             emitI32(b, loc, 20)),
      emitI32(b, loc, 120 << 3));
  Value isSub = arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLT, x,
                                      emitF32(b, loc, kE4M3MinNormal));
  return arith::TruncIOp::create(
      b, loc, b.getI8Type(),
      arith::SelectOp::create(b, loc, isSub, sub, normal));
}

/// decodeE4M3 of an i8 byte (0x7f and the sign bit never occur), as f32.
inline mlir::Value emitDecodeE4M3(mlir::OpBuilder &b, mlir::Location loc,
                                  mlir::Value byte) {
  using namespace mlir;
  Type f32 = b.getF32Type(), i32 = b.getI32Type();
  Value x = arith::AndIOp::create(
      b, loc, arith::ExtUIOp::create(b, loc, i32, byte), emitI32(b, loc, 0x7f));
  Value sub = arith::MulFOp::create(
      b, loc,
      arith::SIToFPOp::create(
          b, loc, f32, arith::AndIOp::create(b, loc, x, emitI32(b, loc, 7))),
      emitF32(b, loc, 0x1p-9f));
  Value normal = arith::BitcastOp::create(
      b, loc, f32,
      arith::AddIOp::create(
          b, loc, arith::ShLIOp::create(b, loc, x, emitI32(b, loc, 20)),
          emitI32(b, loc, 120 << 23)));
  Value isSub = arith::CmpIOp::create(
      b, loc, arith::CmpIPredicate::eq,
      arith::AndIOp::create(b, loc, x, emitI32(b, loc, 0x78)),
      emitI32(b, loc, 0));
  return arith::SelectOp::create(b, loc, isSub, sub, normal);
}

} // namespace kvarn::codegen

#endif // KVARN_CODEGEN_E4M3EMITTERS_H
