//===- AttentionOpsToNVVM.cpp - packed_matmul -----------------------------===//
//
// kvgpu.packed_matmul: attention's dot products over a record's packed codes
// with the operands in registers. getPackedMatmulLayout (KVGPU.h) decides
// which thread holds which piece of which codes row; this file emits it.
//
//===----------------------------------------------------------------------===//

#include "Common.h"

using namespace mlir;
using namespace kvarn::kvgpu;

namespace {

/// `codes` (a shared buffer of bytes) read as `pieceBits`-bit integers: a
/// view of the same shared bytes with that element type.
FailureOr<Value> piecesView(PatternRewriter &rw, Location loc, Value codes,
                            int64_t pieceBits) {
  auto type = cast<MemRefType>(codes.getType());
  int64_t pieceBytes = pieceBits / 8;
  auto view = MemRefType::get({type.getNumElements() / pieceBytes},
                              rw.getIntegerType(pieceBits),
                              MemRefLayoutAttrInterface(),
                              type.getMemorySpace());
  if (auto buffer = codes.getDefiningOp<SharedBufferOp>()) {
    if (buffer.getOffset() % pieceBytes)
      return failure();
    return SharedBufferOp::create(rw, loc, view, buffer.getOffset())
        .getResult();
  }
  if (auto lowered = codes.getDefiningOp<memref::ViewOp>()) // shared_buffer's
    return memref::ViewOp::create(rw, loc, view, lowered.getSource(),
                                  lowered.getByteShift(), ValueRange())
        .getResult();
  return failure();
}

/// The code of `bits` bits at bit `shift` of `piece` (i32) as f32: OR-ed
/// into the mantissa of 2^23 and 2^23 subtracted, exact for codes < 2^23,
/// without an integer conversion (ptxas fuses the shift, AND and OR).
Value widenCode(OpBuilder &b, Location loc, Value piece, int64_t shift,
                int64_t bits) {
  Value v = shift ? arith::ShRUIOp::create(b, loc, piece,
                                           i32Constant(b, loc, shift))
                        .getResult()
                  : piece;
  v = arith::AndIOp::create(b, loc, v, i32Constant(b, loc, (1 << bits) - 1));
  v = arith::OrIOp::create(b, loc, v, i32Constant(b, loc, 0x4B000000));
  v = arith::BitcastOp::create(b, loc, b.getF32Type(), v);
  return arith::SubFOp::create(b, loc, v, f32Constant(b, loc, 8388608.0f));
}

struct PackedMatmulLowering : OpRewritePattern<PackedMatmulOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(PackedMatmulOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    auto codesType = op.getCodes().getType();
    int64_t bits = op.getBits(), k = codesType.getDimSize(0),
            rowBytes = codesType.getDimSize(1), n = rowBytes * 8 / bits,
            h = op.getA().getType().getNumElements() / k;
    int64_t threads = getNumThreads(op);
    std::optional<PackedMatmulLayout> layout =
        getPackedMatmulLayout(h, k, n, bits, threads);
    if (!layout)
      return rw.notifyMatchFailure(op, "no layout (the verifier checks it)");
    const PackedMatmulLayout &L = *layout;
    FailureOr<Value> pieces = piecesView(rw, loc, op.getCodes(), L.pieceBits);
    if (failed(pieces))
      return rw.notifyMatchFailure(op, "codes are not an aligned shared buffer");
    int64_t piecesPerRow = rowBytes * 8 / L.pieceBits;
    int64_t sums = h * L.codes;

    // This thread's column group g and split s (KVGPU.h).
    auto c = [&](int64_t v) { return indexConstant(rw, loc, v); };
    Value tid = threadIndex(rw, loc);
    Value warp = arith::DivUIOp::create(rw, loc, tid, c(kWarpSize));
    Value lane = arith::RemUIOp::create(rw, loc, tid, c(kWarpSize));
    Value laneSplit = arith::DivUIOp::create(rw, loc, lane, c(L.laneGroups));
    Value g = arith::AddIOp::create(
        rw, loc,
        arith::MulIOp::create(
            rw, loc, arith::RemUIOp::create(rw, loc, warp, c(L.warpGroups)),
            c(L.laneGroups)),
        arith::RemUIOp::create(rw, loc, lane, c(L.laneGroups)));
    Value warpSplit = arith::DivUIOp::create(rw, loc, warp, c(L.warpGroups));
    Value split = arith::AddIOp::create(
        rw, loc, arith::MulIOp::create(rw, loc, warpSplit, c(L.laneSplits)),
        laneSplit);

    // Rows k = i * splits + split, one a loop iteration: unrolling by two
    // spilled at 128 registers (sm_80, 4 CTAs per SM).
    SmallVector<Value> zeros(sums, f32Constant(rw, loc, 0.0f));
    auto loop = scf::ForOp::create(
        rw, loc, c(0), c(L.rowsPerThread), c(1), zeros,
        [&](OpBuilder &b, Location, Value i, ValueRange accIn) {
          SmallVector<Value> acc(accIn);
          {
            Value row = arith::AddIOp::create(
                b, loc, arith::MulIOp::create(b, loc, i, c(L.splits)), split);
            Value at = arith::AddIOp::create(
                b, loc, arith::MulIOp::create(b, loc, row, c(piecesPerRow)), g);
            Value piece = memref::LoadOp::create(b, loc, *pieces, at);
            if (L.pieceBits < 32)
              piece = arith::ExtUIOp::create(b, loc, b.getI32Type(), piece);
            SmallVector<Value> a;
            Value aRow = arith::MulIOp::create(b, loc, row, c(h));
            for (int64_t r = 0; r < h; ++r)
              a.push_back(memref::LoadOp::create(
                  b, loc, op.getA(),
                  ValueRange{arith::AddIOp::create(b, loc, aRow, c(r))}));
            for (int64_t j = 0; j < L.codes; ++j) {
              Value code = widenCode(b, loc, piece, j * bits, bits);
              for (int64_t r = 0; r < h; ++r) {
                Value &sum = acc[r * L.codes + j];
                sum = LLVM::FMAOp::create(b, loc, a[r], code, sum);
              }
            }
          }
          scf::YieldOp::create(b, loc, acc);
        });
    SmallVector<Value> acc(loop.getResults());

    // The lanes of a group: xor shuffles leave every one the group's sums.
    Value width = i32Constant(rw, loc, kWarpSize);
    for (int64_t mask = L.laneGroups; mask < kWarpSize; mask *= 2)
      for (Value &sum : acc) {
        Value other = gpu::ShuffleOp::create(rw, loc, sum,
                                             i32Constant(rw, loc, mask), width,
                                             gpu::ShuffleMode::XOR)
                          .getShuffleResult();
        sum = arith::AddFOp::create(rw, loc, sum, other);
      }

    // Lane split x of a group writes the sums x, x + laneSplits, ...: the
    // first warp split to `out`, the others to their partials in `scratch`,
    // which are then added to `out` in split order.
    bool partials = L.warpSplits > 1;
    Value first = arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::eq,
                                        warpSplit, c(0));
    Value base = partials ? arith::MulIOp::create(
                                rw, loc,
                                arith::SubIOp::create(rw, loc,
                                                      arith::MaxUIOp::create(
                                                          rw, loc, warpSplit, c(1)),
                                                      c(1)),
                                c(h * n))
                                .getResult()
                          : c(0);
    Value column = arith::MulIOp::create(rw, loc, g, c(L.codes));
    for (int64_t x = 0; x < sums; ++x) {
      int64_t r = x / L.codes, j = x % L.codes;
      Value mine = arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::eq,
                                         laneSplit, c(x % L.laneSplits));
      scf::IfOp::create(rw, loc, mine, [&](OpBuilder &b, Location) {
        Value at = arith::AddIOp::create(b, loc, c(r * n + j), column);
        if (!partials) {
          memref::StoreOp::create(b, loc, acc[x], op.getOut(), at);
        } else {
          scf::IfOp::create(
              b, loc, first,
              [&](OpBuilder &tb, Location) {
                memref::StoreOp::create(tb, loc, acc[x], op.getOut(), at);
                scf::YieldOp::create(tb, loc);
              },
              [&](OpBuilder &eb, Location) {
                memref::StoreOp::create(
                    eb, loc, acc[x], op.getScratch(),
                    ValueRange{arith::AddIOp::create(eb, loc, base, at)});
                scf::YieldOp::create(eb, loc);
              });
        }
        scf::YieldOp::create(b, loc);
      });
    }
    if (partials) {
      gpu::BarrierOp::create(rw, loc);
      buildStridedLoop(rw, loc, tid, h * n, threads,
                       [&](OpBuilder &b, Value o) {
        Value sum = memref::LoadOp::create(b, loc, op.getOut(), o);
        for (int64_t w = 1; w < L.warpSplits; ++w)
          sum = arith::AddFOp::create(
              b, loc, sum,
              memref::LoadOp::create(
                  b, loc, op.getScratch(),
                  ValueRange{arith::AddIOp::create(b, loc, o,
                                                   c((w - 1) * h * n))}));
        memref::StoreOp::create(b, loc, sum, op.getOut(), o);
      });
    }
    rw.eraseOp(op);
    return success();
  }
};

} // namespace

void kvarn::kvgpu::populateKVGPUAttentionToNVVMPatterns(
    RewritePatternSet &patterns) {
  patterns.add<PackedMatmulLowering>(patterns.getContext());
}
