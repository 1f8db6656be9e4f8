//===- TileArithmeticEmitters.h - TileArithmetic.h's operations as IR -*- C++
//-*-===//
//
// The operations of kvarn/Reference/TileArithmetic.h that every lowering of
// kvt.normalize (Sinkhorn) and kvt.quantize emits the same way: the
// register-tile lowerings (kvgpu.sinkhorn, kvgpu.quantize_tile;
// KVGPUToNVVM/TileOpsToNVVM.cpp) and the shared-memory ones
// (KVTToKVGPU/PrimitiveOps.cpp) build each step from these, so the GPU
// computes the CPU reference's bits whichever strategy a tile gets.
//
// The root and the reciprocal are the fast paths of PTX's sqrt.rn.f32 and
// rcp.rn.f32 (one MUFU approximation, then one or two fma corrections; the
// same instructions ptxas emits), which are correctly rounded for normal
// inputs away from the exponent range's ends. The callers' inputs stay there
// by construction (variances clamped to [kVarianceMin, kVarianceMax], scales
// to [kScaleMin, kScaleMax]), so the special-case branch ptxas wraps around
// each sqrt.rn/rcp.rn (a call, and a convergence barrier that keeps the
// scheduler from overlapping them) is not needed: the results equal the CPU's
// sqrtf and 1.0f / x.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_CODEGEN_TILEARITHMETICEMITTERS_H
#define KVARN_CODEGEN_TILEARITHMETICEMITTERS_H

#include "kvarn/Reference/TileArithmetic.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"

namespace kvarn::codegen {

inline mlir::Value emitF32(mlir::OpBuilder &b, mlir::Location loc, float v) {
  return mlir::arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
}

/// min(max(x, lo), hi).
inline mlir::Value emitClamp(mlir::OpBuilder &b, mlir::Location loc,
                             mlir::Value x, float lo, float hi) {
  return mlir::arith::MinimumFOp::create(
      b, loc, mlir::arith::MaximumFOp::create(b, loc, x, emitF32(b, loc, lo)),
      emitF32(b, loc, hi));
}

inline mlir::Value emitNvvmF32(mlir::OpBuilder &b, mlir::Location loc,
                               llvm::StringRef name, mlir::Value x) {
  return mlir::LLVM::CallIntrinsicOp::create(b, loc, b.getF32Type(),
                                             b.getStringAttr(name),
                                             mlir::ValueRange{x})
      .getResult(0);
}

/// log2(e): exp(x) = 2^(x log2 e).
constexpr float kLog2E = 1.4426950408889634f;

/// 2^y with ex2.approx.ftz.f32: one MUFU instruction (without ftz, ptxas
/// wraps it in four more to keep results below 2^-126, which the
/// softmax's exp(x - max) never needs: they are 0 beside its sum >= 1).
inline mlir::Value emitFastExp2(mlir::OpBuilder &b, mlir::Location loc,
                                mlir::Value y) {
  return emitNvvmF32(b, loc, "llvm.nvvm.ex2.approx.ftz.f32", y);
}

/// exp(x) as 2^(x log2 e) (emitFastExp2): the exp of attention's softmax in
/// every lowering of it.
inline mlir::Value emitFastExp(mlir::OpBuilder &b, mlir::Location loc,
                               mlir::Value x) {
  mlir::Value y =
      mlir::arith::MulFOp::create(b, loc, x, emitF32(b, loc, kLog2E));
  return emitFastExp2(b, loc, y);
}

/// sqrt(clamp(variance, kVarianceMin, kVarianceMax)), correctly rounded:
/// r ~ 1/sqrt(v); s = v r; s + (v - s s) (r / 2).
inline mlir::Value emitVarianceRoot(mlir::OpBuilder &b, mlir::Location loc,
                                    mlir::Value variance) {
  namespace tmath = kvarn::tilemath;
  using namespace mlir;
  Value v = emitClamp(b, loc, variance, tmath::kVarianceMin, tmath::kVarianceMax);
  Value r = emitNvvmF32(b, loc, "llvm.nvvm.rsqrt.approx.ftz.f", v);
  Value s = arith::MulFOp::create(b, loc, v, r);
  Value half = arith::MulFOp::create(b, loc, r, emitF32(b, loc, 0.5f));
  Value residual = LLVM::FMAOp::create(
      b, loc, arith::NegFOp::create(b, loc, s), s, v);
  return LLVM::FMAOp::create(b, loc, residual, half, s);
}

/// 1 / s for a scale in [kScaleMin, kScaleMax], correctly rounded:
/// r ~ 1/s; r + r (1 - s r).
inline mlir::Value emitScaleReciprocal(mlir::OpBuilder &b, mlir::Location loc,
                                       mlir::Value scale) {
  using namespace mlir;
  Value r = emitNvvmF32(b, loc, "llvm.nvvm.rcp.approx.ftz.f", scale);
  Value e = LLVM::FMAOp::create(b, loc, scale, r, emitF32(b, loc, -1.0f));
  return LLVM::FMAOp::create(b, loc, r, arith::NegFOp::create(b, loc, e), r);
}

/// 1 / x by one correctly rounded division (div.rn.f32): for values that
/// need not lie in Sinkhorn's scale range (a quantizer's operands, which a
/// DSL kernel may pass; its steps), where emitScaleReciprocal would not be
/// exact.
inline mlir::Value emitReciprocal(mlir::OpBuilder &b, mlir::Location loc,
                                  mlir::Value x) {
  return mlir::arith::DivFOp::create(b, loc, emitF32(b, loc, 1.0f), x);
}

/// One Sinkhorn step of a scale: clamp(scale * clamp(std, kStdMin,
/// kStdMax), kScaleMin, kScaleMax).
inline mlir::Value emitSinkhornStep(mlir::OpBuilder &b, mlir::Location loc,
                                    mlir::Value scale, mlir::Value std) {
  namespace tmath = kvarn::tilemath;
  mlir::Value f = emitClamp(b, loc, std, tmath::kStdMin, tmath::kStdMax);
  mlir::Value s = mlir::arith::MulFOp::create(b, loc, scale, f);
  return emitClamp(b, loc, s, tmath::kScaleMin, tmath::kScaleMax);
}

/// Sinkhorn's imbalance from the extremes of the column and row stds:
/// max(col) / max(min(col), floor) + max(row) / max(min(row), floor).
inline mlir::Value emitImbalance(mlir::OpBuilder &b, mlir::Location loc,
                                 mlir::Value colMax, mlir::Value colMin,
                                 mlir::Value rowMax, mlir::Value rowMin) {
  using namespace mlir;
  Value floor = emitF32(b, loc, kvarn::tilemath::kImbalanceFloor);
  auto ratio = [&](Value hi, Value lo) -> Value {
    return arith::DivFOp::create(b, loc, hi,
                                 arith::MaximumFOp::create(b, loc, lo, floor));
  };
  return arith::AddFOp::create(b, loc, ratio(colMax, colMin),
                               ratio(rowMax, rowMin));
}

/// A quantized row's step: max((hi - lo) / qmax, kRangeFloor).
inline mlir::Value emitQuantizeStep(mlir::OpBuilder &b, mlir::Location loc,
                                    mlir::Value lo, mlir::Value hi,
                                    float qmax) {
  using namespace mlir;
  Value range = arith::SubFOp::create(b, loc, hi, lo);
  Value a = arith::DivFOp::create(b, loc, range, emitF32(b, loc, qmax));
  return arith::MaximumFOp::create(
      b, loc, a, emitF32(b, loc, kvarn::tilemath::kRangeFloor));
}

/// x rounded half to even to i32 (cvt.rni.s32.f32, the reference's
/// nearbyint), as an NVVM intrinsic: convert-gpu-to-nvvm would make the
/// generic math op a libdevice call.
inline mlir::Value emitRoundToInt(mlir::OpBuilder &b, mlir::Location loc,
                                  mlir::Value x) {
  return mlir::LLVM::CallIntrinsicOp::create(
             b, loc, b.getI32Type(), b.getStringAttr("llvm.nvvm.f2i.rn"),
             mlir::ValueRange{x})
      .getResult(0);
}

/// The code of `x` in a row of minimum `lo` and step reciprocal
/// `stepReciprocal`: (x - lo) * (1 / step) rounded half to even
/// (cvt.rni.s32.f32, as the reference's nearbyint), clamped to [0, qmax],
/// as i8.
inline mlir::Value emitQuantizedCode(mlir::OpBuilder &b, mlir::Location loc,
                                     mlir::Value x, mlir::Value lo,
                                     mlir::Value stepReciprocal, float qmax) {
  using namespace mlir;
  Value v = arith::SubFOp::create(b, loc, x, lo);
  v = arith::MulFOp::create(b, loc, v, stepReciprocal);
  Value q = emitRoundToInt(b, loc, v);
  q = arith::MaxSIOp::create(b, loc, q,
                             arith::ConstantIntOp::create(b, loc, 0, 32));
  q = arith::MinSIOp::create(
      b, loc, q, arith::ConstantIntOp::create(b, loc, int64_t(qmax), 32));
  return arith::TruncIOp::create(b, loc, b.getI8Type(), q);
}

} // namespace kvarn::codegen

#endif // KVARN_CODEGEN_TILEARITHMETICEMITTERS_H
