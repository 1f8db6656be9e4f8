//===- MmaOpsToNVVM.cpp - mma, load_matrix and operand conversions ------===//
//
// The tensor-core operands in registers that packed_matmul's and
// attend_record's lowerings build their products from: one m16n8k16 bf16
// or f16 mma.sync, a pair of low-bit codes turned into its bf16 A operand with
// the 0x4300 magic number, an f32 pair split into the bf16 hi and lo operands
// of two products, and ldmatrix (four 8x8 matrices of 16-bit elements,
// transposed or not, into the lanes' operand registers).
//
//===----------------------------------------------------------------------===//

#include "Common.h"

#include <array>

using namespace mlir;
using namespace kvarn::kvgpu;

namespace {

/// nvvm.mma.sync m16n8k16, row x col, `type` x `type` + f32, on the
/// registers of `a`, `b` (i32 pairs; f16 operands as vector<2xf16>) and
/// `acc`: the four sums.
Value emitMma(PatternRewriter &rw, Location loc, NVVM::MMATypes type, Value a,
              Value b, Value acc, Type resultType) {
  auto elements = [&](Value v, int64_t n) {
    SmallVector<Value> out;
    for (int64_t i = 0; i < n; ++i) {
      Value x = vector::ExtractOp::create(rw, loc, v, i);
      if (type == NVVM::MMATypes::f16 && x.getType().isInteger(32))
        x = LLVM::BitcastOp::create(rw, loc,
                                    VectorType::get({2}, rw.getF16Type()), x);
      out.push_back(x);
    }
    return out;
  };
  Type f32 = rw.getF32Type();
  auto accType =
      LLVM::LLVMStructType::getLiteral(rw.getContext(), {f32, f32, f32, f32});
  Value mma = NVVM::MmaOp::create(
      rw, loc, accType, elements(a, 4), elements(b, 2), elements(acc, 4),
      ArrayRef<int64_t>{16, 8, 16}, std::nullopt, std::nullopt,
      std::array<NVVM::MMATypes, 2>{type, type},
      std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row,
                                     NVVM::MMALayout::col});
  SmallVector<Value> sums;
  for (int64_t e = 0; e < 4; ++e)
    sums.push_back(LLVM::ExtractValueOp::create(rw, loc, mma, e));
  return vector::FromElementsOp::create(rw, loc, resultType, sums);
}

/// kvgpu.mma_bf16 and kvgpu.mma_f16: one m16n8k16 mma.sync each.
template <typename MmaOp, NVVM::MMATypes kType>
struct MmaLowering : OpRewritePattern<MmaOp> {
  using OpRewritePattern<MmaOp>::OpRewritePattern;
  LogicalResult matchAndRewrite(MmaOp op, PatternRewriter &rw) const override {
    rw.replaceOp(op, emitMma(rw, op.getLoc(), kType, op.getA(), op.getB(),
                             op.getAcc(), op.getType()));
    return success();
  }
};

/// (a & b) | c as one `lop3.b32` (inline PTX: LLVM has no lop3, and ptxas
/// left the AND and the OR of the code conversion two instructions).
Value andOr(OpBuilder &b, Location loc, Value a, int64_t mask, int64_t bias) {
  // The truth table of (a & b) | c: 0xF0 & 0xCC | 0xAA.
  return LLVM::InlineAsmOp::create(b, loc, b.getI32Type(),
                                   ValueRange{a, i32Constant(b, loc, mask),
                                              i32Constant(b, loc, bias)},
                                   "lop3.b32 $0, $1, $2, $3, 0xEA;", "=r,r,n,n",
                                   /*has_side_effects=*/false,
                                   /*is_align_stack=*/false,
                                   LLVM::tailcallkind::TailCallKind::None,
                                   LLVM::AsmDialectAttr(), ArrayAttr())
      .getResult(0);
}

/// kvgpu.biased_code_pair: a shift, then the mask and 128.0's mantissa
/// (0x4300) in one lop3.
struct BiasedCodePairLowering : OpRewritePattern<BiasedCodePairOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(BiasedCodePairOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    int64_t shift = op.getShift(), mask = (int64_t(1) << op.getBits()) - 1;
    Value v = op.getPair();
    if (shift)
      v = arith::ShRUIOp::create(rw, loc, v, i32Constant(rw, loc, shift));
    rw.replaceOp(op, andOr(rw, loc, v, mask | mask << 16, 0x43004300));
    return success();
  }
};

/// kvgpu.split_bf16x2: hi by one cvt.rn.bf16x2.f32 (its first operand the
/// high half: one instruction where LLVM's fptrunc of a pair makes two
/// conversions and a prmt), hi widened back by a shift and a mask
/// (widenBf16x2), the rests, lo by another cvt.
struct SplitBf16x2Lowering : OpRewritePattern<SplitBf16x2Op> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(SplitBf16x2Op op,
                                PatternRewriter &rw) const override {
    static_assert(kMmaSplitParts == 2, "the op's results are hi and lo");
    Location loc = op.getLoc();
    auto bf16x2 = VectorType::get({2}, rw.getBF16Type());
    auto convert = [&](Value x0, Value x1) {
      return LLVM::CallIntrinsicOp::create(
                 rw, loc, bf16x2, rw.getStringAttr("llvm.nvvm.ff2bf16x2.rn"),
                 ValueRange{x1, x0})
          .getResult(0);
    };
    Value hi = convert(op.getX0(), op.getX1());
    Value hiWord = LLVM::BitcastOp::create(rw, loc, rw.getI32Type(), hi);
    std::array<Value, 2> wide = widenBf16x2(rw, loc, hiWord);
    std::array<Value, 2> rest;
    for (int64_t i = 0; i < 2; ++i)
      rest[i] =
          arith::SubFOp::create(rw, loc, i ? op.getX1() : op.getX0(), wide[i]);
    Value lo = convert(rest[0], rest[1]);
    rw.replaceOp(
        op, {hiWord, LLVM::BitcastOp::create(rw, loc, rw.getI32Type(), lo)});
    return success();
  }
};

/// kvgpu.load_matrix: nvvm.ldmatrix x4 of b16 (the column layout is the
/// .trans form).
struct LoadMatrixLowering : OpRewritePattern<LoadMatrixOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(LoadMatrixOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    Type i32 = rw.getI32Type();
    auto resultType =
        LLVM::LLVMStructType::getLiteral(rw.getContext(), {i32, i32, i32, i32});
    Value rows = NVVM::LdMatrixOp::create(
        rw, loc, resultType,
        sharedAddress(rw, loc, op.getRows(), {op.getIndex()}), 4,
        op.getTranspose() ? NVVM::MMALayout::col : NVVM::MMALayout::row,
        NVVM::LdStMatrixShapeAttr::get(rw.getContext(), 8, 8),
        NVVM::LdStMatrixEltType::B16);
    SmallVector<Value> regs;
    for (int64_t m = 0; m < 4; ++m)
      regs.push_back(LLVM::ExtractValueOp::create(rw, loc, rows, m));
    rw.replaceOpWithNewOp<vector::FromElementsOp>(op, op.getType(), regs);
    return success();
  }
};

} // namespace

void kvarn::kvgpu::populateKVGPUMmaToNVVMPatterns(RewritePatternSet &patterns) {
  patterns.add<MmaLowering<MmaBf16Op, NVVM::MMATypes::bf16>,
               MmaLowering<MmaF16Op, NVVM::MMATypes::f16>,
               BiasedCodePairLowering, SplitBf16x2Lowering, LoadMatrixLowering>(
      patterns.getContext());
}
