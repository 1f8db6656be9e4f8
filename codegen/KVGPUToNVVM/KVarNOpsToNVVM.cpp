//===- KVarNOpsToNVVM.cpp - fwht, dense_mix, pack_bits, unpack_bits -------===//
//
// These expand into kvgpu.foreach loops and barriers, which the loop
// patterns lower in the same greedy rewrite.
//
//===----------------------------------------------------------------------===//

#include "Common.h"

#include "llvm/ADT/Hashing.h"

using namespace mlir;
using namespace kvarn::kvgpu;

namespace {

/// Emits `foreach shape (...) { body }` at the rewriter's position.
void emitForeach(PatternRewriter &rw, Location loc, ArrayRef<int64_t> shape,
                 function_ref<void(OpBuilder &, ValueRange)> body) {
  auto loop = ForeachOp::create(rw, loc, shape);
  Block &block = loop.getBody().front();
  OpBuilder b = OpBuilder::atBlockTerminator(&block);
  body(b, block.getArguments());
}

/// Stage h of the butterflies pairs channel i with i + h inside each chunk;
/// the last stage also applies the scale.
///
/// In registers: each chunk goes to a group of L lanes (L = len / 4 up to a
/// warp), lane l holding its E = len / L contiguous channels l*E .. l*E+E-1.
/// Stages h < E pair registers of one lane; stages h >= E pair lane l with
/// lane l ^ (h / E) (`shfl.sync.bfly`): the lower lane keeps x + y, the upper
/// x - y, the same operations as through shared memory. One load and one
/// store per element, no barrier between stages. Every lane runs the same
/// number of rounds so the shuffles stay converged; lanes past the last
/// chunk load and store nothing.
struct FWHTLowering : OpRewritePattern<FWHTOp> {
  using OpRewritePattern::OpRewritePattern;

  static void lowerInRegisters(PatternRewriter &rw, FWHTOp op, int64_t rows,
                               int64_t len, int64_t count, int64_t start,
                               float scale) {
    Location loc = op.getLoc();
    Value buf = op.getBuffer();
    int64_t lanes = std::min<int64_t>(kWarpSize, std::max<int64_t>(1, len / 4));
    int64_t per = len / lanes;
    int64_t threads = getNumThreads(op), groups = threads / lanes;
    int64_t total = rows * count, rounds = (total + groups - 1) / groups;
    Value tid = threadIndex(rw, loc);
    Value lane = arith::RemUIOp::create(rw, loc, tid, indexConstant(rw, loc, lanes));
    Value group = arith::DivUIOp::create(rw, loc, tid, indexConstant(rw, loc, lanes));
    Value laneI32 = arith::IndexCastOp::create(rw, loc, rw.getI32Type(), lane);
    Type f32 = rw.getF32Type();
    buildStridedLoop(rw, loc, indexConstant(rw, loc, 0), rounds, 1,
                     [&](OpBuilder &b, Value round) {
      Value chunk = arith::AddIOp::create(
          b, loc, arith::MulIOp::create(b, loc, round, indexConstant(b, loc, groups)),
          group);
      Value valid = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult,
                                          chunk, indexConstant(b, loc, total));
      Value row = arith::DivUIOp::create(b, loc, chunk, indexConstant(b, loc, count));
      Value first = arith::AddIOp::create(
          b, loc,
          arith::AddIOp::create(
              b, loc,
              arith::MulIOp::create(
                  b, loc,
                  arith::RemUIOp::create(b, loc, chunk, indexConstant(b, loc, count)),
                  indexConstant(b, loc, len)),
              arith::MulIOp::create(b, loc, lane, indexConstant(b, loc, per))),
          indexConstant(b, loc, start));
      auto channel = [&](OpBuilder &nb, int64_t e) -> Value {
        return arith::AddIOp::create(nb, loc, first, indexConstant(nb, loc, e));
      };
      SmallVector<Type> types(per, f32);
      auto loaded = scf::IfOp::create(b, loc, types, valid,
                                      /*withElseRegion=*/true);
      {
        Block *then = &loaded.getThenRegion().front();
        if (!then->empty())
          then->back().erase();
        OpBuilder tb = OpBuilder::atBlockEnd(then);
        SmallVector<Value> v;
        for (int64_t e = 0; e < per; ++e)
          v.push_back(memref::LoadOp::create(tb, loc, buf,
                                             ValueRange{row, channel(tb, e)}));
        scf::YieldOp::create(tb, loc, v);
        Block *other = &loaded.getElseRegion().front();
        if (!other->empty())
          other->back().erase();
        OpBuilder eb = OpBuilder::atBlockEnd(other);
        SmallVector<Value> zeros(per, f32Constant(eb, loc, 0.0f));
        scf::YieldOp::create(eb, loc, zeros);
      }
      SmallVector<Value> v(loaded.getResults());
      emitRegisterButterflies(b, loc, v, laneI32, lanes, scale);
      scf::IfOp::create(b, loc, valid, [&](OpBuilder &tb, Location) {
        for (int64_t e = 0; e < per; ++e)
          memref::StoreOp::create(tb, loc, v[e], buf, ValueRange{row, channel(tb, e)});
        scf::YieldOp::create(tb, loc);
      });
    });
  }

  LogicalResult matchAndRewrite(FWHTOp op, PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    Value buf = op.getBuffer();
    auto type = cast<MemRefType>(buf.getType());
    int64_t rows = type.getDimSize(0);
    int64_t len = op.getLength(), count = op.getCount(), start = op.getStart();
    float scale = op.getScale().convertToFloat();
    if (len == 1) { // chunks of one channel: only the scale applies
      emitForeach(rw, loc, {rows, count}, [&](OpBuilder &b, ValueRange idx) {
        Value c = arith::AddIOp::create(b, loc, idx[1],
                                        indexConstant(b, loc, start));
        Value x = memref::LoadOp::create(b, loc, buf, ValueRange{idx[0], c});
        x = arith::MulFOp::create(b, loc, x, f32Constant(b, loc, scale));
        memref::StoreOp::create(b, loc, x, buf, ValueRange{idx[0], c});
      });
      rw.eraseOp(op);
      return success();
    }
    if (len / std::min<int64_t>(kWarpSize, std::max<int64_t>(1, len / 4)) <= 32) {
      lowerInRegisters(rw, op, rows, len, count, start, scale);
      rw.eraseOp(op);
      return success();
    }
    for (int64_t h = 1; h < len; h *= 2) {
      bool last = 2 * h == len;
      emitForeach(rw, loc, {rows, count * len / 2},
                  [&](OpBuilder &b, ValueRange idx) {
        Value r = idx[0], k = idx[1];
        Value half = indexConstant(b, loc, len / 2);
        Value chunk = arith::DivUIOp::create(b, loc, k, half);
        Value j = arith::RemUIOp::create(b, loc, k, half);
        Value hV = indexConstant(b, loc, h);
        Value group = arith::DivUIOp::create(b, loc, j, hV);
        Value within = arith::RemUIOp::create(b, loc, j, hV);
        // i = start + chunk*len + group*2h + within
        Value i = arith::AddIOp::create(
            b, loc,
            arith::AddIOp::create(
                b, loc,
                arith::MulIOp::create(b, loc, chunk, indexConstant(b, loc, len)),
                arith::MulIOp::create(b, loc, group,
                                      indexConstant(b, loc, 2 * h))),
            arith::AddIOp::create(b, loc, within,
                                  indexConstant(b, loc, start)));
        Value i2 = arith::AddIOp::create(b, loc, i, hV);
        Value x = memref::LoadOp::create(b, loc, buf, ValueRange{r, i});
        Value y = memref::LoadOp::create(b, loc, buf, ValueRange{r, i2});
        Value sum = arith::AddFOp::create(b, loc, x, y);
        Value diff = arith::SubFOp::create(b, loc, x, y);
        if (last && scale != 1.0f) {
          Value s = f32Constant(b, loc, scale);
          sum = arith::MulFOp::create(b, loc, sum, s);
          diff = arith::MulFOp::create(b, loc, diff, s);
        }
        memref::StoreOp::create(b, loc, sum, buf, ValueRange{r, i});
        memref::StoreOp::create(b, loc, diff, buf, ValueRange{r, i2});
      });
      if (!last)
        BarrierOp::create(rw, loc);
    }
    rw.eraseOp(op);
    return success();
  }
};

/// The ±1 matrix lives in a constant global of the gpu.module.
LLVM::GlobalOp getOrCreateMatrixGlobal(PatternRewriter &rw, Operation *op,
                                       ArrayRef<int8_t> matrix) {
  auto module = op->getParentOfType<gpu::GPUModuleOp>();
  std::string name =
      ("__kvgpu_mix_" + llvm::Twine(matrix.size()) + "_" +
       llvm::Twine(llvm::hash_value(llvm::ArrayRef<int8_t>(matrix))))
          .str();
  if (auto existing = module.lookupSymbol<LLVM::GlobalOp>(name))
    return existing;
  OpBuilder::InsertionGuard guard(rw);
  rw.setInsertionPointToStart(module.getBody());
  auto type = LLVM::LLVMArrayType::get(rw.getI8Type(), matrix.size());
  auto value = DenseElementsAttr::get(
      RankedTensorType::get({int64_t(matrix.size())}, rw.getI8Type()), matrix);
  return LLVM::GlobalOp::create(rw, op->getLoc(), type, /*isConstant=*/true,
                                LLVM::Linkage::Internal, name, value,
                                /*alignment=*/16, /*addrSpace=*/1);
}

struct DenseMixLowering : OpRewritePattern<DenseMixOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(DenseMixOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    auto type = cast<MemRefType>(op.getInput().getType());
    int64_t rows = type.getDimSize(0), d = type.getDimSize(1);
    ArrayRef<int8_t> matrix = op.getMatrix();
    int64_t m = 1;
    while (m * m < int64_t(matrix.size()))
      ++m;
    int64_t s = d / m;
    LLVM::GlobalOp global = getOrCreateMatrixGlobal(rw, op, matrix);
    bool transpose = op.getTranspose();
    float scale = op.getScale().convertToFloat();
    emitForeach(rw, loc, {rows, m, s}, [&](OpBuilder &b, ValueRange idx) {
      Value r = idx[0], col = idx[1], i = idx[2];
      Value base = LLVM::AddressOfOp::create(b, loc, global);
      Value sV = indexConstant(b, loc, s), mV = indexConstant(b, loc, m);
      auto loop = scf::ForOp::create(
          b, loc, indexConstant(b, loc, 0), mV, indexConstant(b, loc, 1),
          ValueRange{f32Constant(b, loc, 0.0f)},
          [&](OpBuilder &nb, Location, Value a, ValueRange acc) {
            // A[a][col] (or A[col][a] with transpose) as a +-1 sign.
            Value entry = transpose
                              ? arith::AddIOp::create(
                                    nb, loc, arith::MulIOp::create(nb, loc, col, mV), a)
                              : arith::AddIOp::create(
                                    nb, loc, arith::MulIOp::create(nb, loc, a, mV), col);
            Value addr = LLVM::GEPOp::create(
                nb, loc, base.getType(), nb.getI8Type(), base,
                ValueRange{arith::IndexCastOp::create(nb, loc, nb.getI64Type(),
                                                      entry)});
            Value sign = LLVM::LoadOp::create(nb, loc, nb.getI8Type(), addr);
            Value positive = arith::CmpIOp::create(
                nb, loc, arith::CmpIPredicate::sgt, sign,
                arith::ConstantIntOp::create(nb, loc, 0, 8));
            Value channel = arith::AddIOp::create(
                nb, loc, arith::MulIOp::create(nb, loc, a, sV), i);
            Value x = memref::LoadOp::create(nb, loc, op.getInput(),
                                             ValueRange{r, channel});
            Value next = arith::SelectOp::create(
                nb, loc, positive, arith::AddFOp::create(nb, loc, acc[0], x),
                arith::SubFOp::create(nb, loc, acc[0], x));
            scf::YieldOp::create(nb, loc, next);
          });
      Value out = arith::MulFOp::create(b, loc, loop.getResult(0),
                                        f32Constant(b, loc, scale));
      Value channel = arith::AddIOp::create(
          b, loc, arith::MulIOp::create(b, loc, col, sV), i);
      memref::StoreOp::create(b, loc, out, op.getOutput(),
                              ValueRange{r, channel});
    });
    rw.eraseOp(op);
    return success();
  }
};

/// Each thread assembles one packed byte from its codes.
struct PackBitsLowering : OpRewritePattern<PackBitsOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(PackBitsOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    auto packed = cast<MemRefType>(op.getPacked().getType());
    int64_t bits = op.getBits(), perByte = 8 / bits;
    emitForeach(rw, loc, packed.getShape(), [&](OpBuilder &b, ValueRange idx) {
      Value byte = i32Constant(b, loc, 0);
      for (int64_t k = 0; k < perByte; ++k) {
        Value c = arith::AddIOp::create(
            b, loc,
            arith::MulIOp::create(b, loc, idx[1], indexConstant(b, loc, perByte)),
            indexConstant(b, loc, k));
        Value code = memref::LoadOp::create(b, loc, op.getCodes(),
                                            ValueRange{idx[0], c});
        Value wide = arith::AndIOp::create(
            b, loc, arith::ExtUIOp::create(b, loc, b.getI32Type(), code),
            i32Constant(b, loc, (1 << bits) - 1));
        byte = arith::OrIOp::create(
            b, loc, byte,
            arith::ShLIOp::create(b, loc, wide, i32Constant(b, loc, k * bits)));
      }
      memref::StoreOp::create(
          b, loc, arith::TruncIOp::create(b, loc, b.getI8Type(), byte),
          op.getPacked(), idx);
    });
    rw.eraseOp(op);
    return success();
  }
};

struct UnpackBitsLowering : OpRewritePattern<UnpackBitsOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(UnpackBitsOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    auto codes = cast<MemRefType>(op.getCodes().getType());
    int64_t bits = op.getBits(), perByte = 8 / bits;
    emitForeach(rw, loc, codes.getShape(), [&](OpBuilder &b, ValueRange idx) {
      Value per = indexConstant(b, loc, perByte);
      Value byteIdx = arith::DivUIOp::create(b, loc, idx[1], per);
      Value slot = arith::RemUIOp::create(b, loc, idx[1], per);
      Value byte = memref::LoadOp::create(b, loc, op.getPacked(),
                                          ValueRange{idx[0], byteIdx});
      Value shift = arith::MulIOp::create(
          b, loc, arith::IndexCastOp::create(b, loc, b.getI32Type(), slot),
          i32Constant(b, loc, bits));
      Value code = arith::AndIOp::create(
          b, loc,
          arith::ShRUIOp::create(
              b, loc, arith::ExtUIOp::create(b, loc, b.getI32Type(), byte),
              shift),
          i32Constant(b, loc, (1 << bits) - 1));
      memref::StoreOp::create(
          b, loc, arith::TruncIOp::create(b, loc, b.getI8Type(), code),
          op.getCodes(), idx);
    });
    rw.eraseOp(op);
    return success();
  }
};

} // namespace

void kvarn::kvgpu::populateKVGPUKVarNToNVVMPatterns(
    RewritePatternSet &patterns) {
  patterns.add<FWHTLowering, DenseMixLowering, PackBitsLowering,
               UnpackBitsLowering>(patterns.getContext());
}
