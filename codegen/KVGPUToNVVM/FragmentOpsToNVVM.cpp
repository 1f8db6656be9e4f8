//===- FragmentOpsToNVVM.cpp - fragment_load, _fwht, _store ---------------===//
//
// A fragment is one row of N = L x E elements held by the L lanes of one
// program in a warp (L = 32, or fewer where programs share a warp:
// getLanesPerProgram), its lane l holding channels l*E .. l*E+E-1 as a
// vector<E x T>. Loads and stores move each lane's channels with vector
// accesses of up to 16 bytes when the row is contiguous and aligned
// (checked at run time, uniformly over the program), element by element
// otherwise. The element accesses of that fallback are volatile:
// LLVM would otherwise see that both paths read the same bytes when the
// stride is a constant, vectorize the elements into one under-aligned
// vector and merge the two paths into it (2-byte loads on every path), and
// sink the merged loads into the branches that use them, past the loads
// the kernel meant them to overlap. The transform is the in-register
// butterflies of
// kvgpu.fwht; where programs share a warp, their shuffles name only their
// own lanes (the programs branch apart on their own data). When a program
// has several warps, each op runs in its warp only.
//
//===----------------------------------------------------------------------===//

#include "Common.h"

using namespace mlir;
using namespace kvarn::kvgpu;

namespace {

constexpr int64_t kMaxAccessBytes = 16; // ld.global.v4.b32 / st.global.v4.b32

/// Runs `body` in warp `warp` of each program only (directly when a
/// program has one warp); the other warps get zeros for its results.
SmallVector<Value>
inWarp(PatternRewriter &rw, Operation *op, int64_t warp, TypeRange types,
       function_ref<SmallVector<Value>(OpBuilder &)> body) {
  Location loc = op->getLoc();
  int64_t warps = getWarpsPerProgram(op);
  if (warps <= 1)
    return body(rw);
  Value mine = arith::CmpIOp::create(
      rw, loc, arith::CmpIPredicate::eq,
      arith::RemUIOp::create(
          rw, loc,
          arith::DivUIOp::create(rw, loc, threadIndex(rw, loc),
                                 indexConstant(rw, loc, kWarpSize)),
          indexConstant(rw, loc, warps)),
      indexConstant(rw, loc, warp));
  auto guard = scf::IfOp::create(rw, loc, types, mine,
                                 /*withElseRegion=*/!types.empty());
  {
    Block *then = &guard.getThenRegion().front();
    if (!then->empty())
      then->back().erase();
    OpBuilder tb = OpBuilder::atBlockEnd(then);
    scf::YieldOp::create(tb, loc, body(tb));
  }
  if (!types.empty()) {
    Block *other = &guard.getElseRegion().front();
    if (!other->empty())
      other->back().erase();
    OpBuilder eb = OpBuilder::atBlockEnd(other);
    SmallVector<Value> zeros;
    for (Type t : types)
      zeros.push_back(arith::ConstantOp::create(
          eb, loc, cast<TypedAttr>(eb.getZeroAttr(t))));
    scf::YieldOp::create(eb, loc, zeros);
  }
  return SmallVector<Value>(guard.getResults());
}

/// The calling thread's lane among the `lanes` of its program.
Value laneIndex(OpBuilder &b, Location loc, int64_t lanes) {
  return arith::RemUIOp::create(b, loc, threadIndex(b, loc),
                                indexConstant(b, loc, lanes));
}

/// How a lane's E channels are accessed: `chunk` elements (a power of two
/// dividing E, at most 16 bytes) per vector access.
struct Access {
  Type elt;
  int64_t perLane, elemBytes, chunk;
};
Access accessOf(VectorType type) {
  Access a;
  a.elt = type.getElementType();
  a.perLane = type.getNumElements();
  a.elemBytes = a.elt.getIntOrFloatBitWidth() / 8;
  a.chunk = 1;
  while (a.perLane % (2 * a.chunk) == 0 &&
         2 * a.chunk * a.elemBytes <= kMaxAccessBytes)
    a.chunk *= 2;
  return a;
}

/// base + byteOffset + channel * stride, as a global pointer.
Value channelAddress(OpBuilder &b, Location loc, Value base, Value byteOffset,
                     Value channel, Value stride) {
  Value at = arith::AddIOp::create(
      b, loc, byteOffset,
      arith::MulIOp::create(
          b, loc, arith::IndexCastOp::create(b, loc, b.getI64Type(), channel),
          stride));
  return LLVM::GEPOp::create(b, loc, base.getType(), b.getI8Type(), base,
                             ValueRange{at});
}

/// Whether the row is contiguous and each lane's chunks are aligned.
Value contiguousAndAligned(OpBuilder &b, Location loc, Value base,
                           Value byteOffset, Value stride, const Access &a) {
  Value addr = arith::AddIOp::create(
      b, loc, LLVM::PtrToIntOp::create(b, loc, b.getI64Type(), base),
      byteOffset);
  Value aligned = arith::CmpIOp::create(
      b, loc, arith::CmpIPredicate::eq,
      arith::AndIOp::create(b, loc, addr,
                            i64Constant(b, loc, a.chunk * a.elemBytes - 1)),
      i64Constant(b, loc, 0));
  Value contiguous =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, stride,
                            i64Constant(b, loc, a.elemBytes));
  return arith::AndIOp::create(b, loc, aligned, contiguous);
}

/// The first channel of the calling lane: lane * E.
Value firstChannel(OpBuilder &b, Location loc, Operation *op, const Access &a) {
  return arith::MulIOp::create(b, loc,
                               laneIndex(b, loc, getLanesPerProgram(op)),
                               indexConstant(b, loc, a.perLane));
}

Value channel(OpBuilder &b, Location loc, Value first, int64_t e) {
  return arith::AddIOp::create(b, loc, first, indexConstant(b, loc, e));
}

/// Element e of `vec` (an LLVM-compatible vector).
Value element(OpBuilder &b, Location loc, Value vec, int64_t e) {
  return LLVM::ExtractElementOp::create(b, loc, vec, i64Constant(b, loc, e));
}

Value insert(OpBuilder &b, Location loc, Value vec, Value x, int64_t e) {
  return LLVM::InsertElementOp::create(b, loc, vec, x, i64Constant(b, loc, e));
}

struct FragmentLoadLowering : OpRewritePattern<FragmentLoadOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(FragmentLoadOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    VectorType type = op.getResult().getType();
    Access a = accessOf(type);
    Value src = op.getSrc(), offset = op.getByteOffset(),
          stride = op.getByteStride();
    auto elements = [&](OpBuilder &b, bool isVolatile) -> Value {
      Value first = firstChannel(b, loc, op, a);
      Value vec = LLVM::PoisonOp::create(b, loc, type);
      for (int64_t e = 0; e < a.perLane; ++e) {
        Value addr = channelAddress(b, loc, src, offset,
                                    channel(b, loc, first, e), stride);
        Value x = LLVM::LoadOp::create(b, loc, a.elt, addr, /*alignment=*/0,
                                       isVolatile);
        vec = insert(b, loc, vec, x, e);
      }
      return vec;
    };
    auto vectors = [&](OpBuilder &b) -> Value {
      Value first = firstChannel(b, loc, op, a);
      Value eb = i64Constant(b, loc, a.elemBytes);
      auto chunkType = VectorType::get({a.chunk}, a.elt);
      Value vec = LLVM::PoisonOp::create(b, loc, type);
      for (int64_t c = 0; c < a.perLane; c += a.chunk) {
        Value addr = channelAddress(b, loc, src, offset,
                                    channel(b, loc, first, c), eb);
        Value part = LLVM::LoadOp::create(b, loc, chunkType, addr,
                                          a.chunk * a.elemBytes);
        if (a.chunk == a.perLane)
          return part;
        for (int64_t k = 0; k < a.chunk; ++k)
          vec = insert(b, loc, vec, element(b, loc, part, k), c + k);
      }
      return vec;
    };
    auto body = [&](OpBuilder &b) -> SmallVector<Value> {
      if (a.chunk == 1)
        return {elements(b, /*isVolatile=*/false)};
      Value ok = contiguousAndAligned(b, loc, src, offset, stride, a);
      auto pick = scf::IfOp::create(
          b, loc, ok,
          [&](OpBuilder &tb, Location) {
            scf::YieldOp::create(tb, loc, vectors(tb));
          },
          [&](OpBuilder &eb, Location) {
            scf::YieldOp::create(eb, loc,
                                 elements(eb, /*isVolatile=*/true));
          });
      return {pick.getResult(0)};
    };
    rw.replaceOp(op, inWarp(rw, op, op.getWarp(), type, body));
    return success();
  }
};

struct FragmentStoreLowering : OpRewritePattern<FragmentStoreOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(FragmentStoreOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    VectorType type = op.getValue().getType();
    Access a = accessOf(type);
    Value value = op.getValue(), dst = op.getDst(), offset = op.getByteOffset(),
          stride = op.getByteStride();
    auto elements = [&](OpBuilder &b, bool isVolatile) {
      Value first = firstChannel(b, loc, op, a);
      for (int64_t e = 0; e < a.perLane; ++e) {
        Value addr = channelAddress(b, loc, dst, offset,
                                    channel(b, loc, first, e), stride);
        LLVM::StoreOp::create(b, loc, element(b, loc, value, e), addr,
                              /*alignment=*/0, isVolatile);
      }
    };
    auto vectors = [&](OpBuilder &b) {
      Value first = firstChannel(b, loc, op, a);
      Value eb = i64Constant(b, loc, a.elemBytes);
      auto chunkType = VectorType::get({a.chunk}, a.elt);
      for (int64_t c = 0; c < a.perLane; c += a.chunk) {
        Value part = value;
        if (a.chunk != a.perLane) {
          part = LLVM::PoisonOp::create(b, loc, chunkType);
          for (int64_t k = 0; k < a.chunk; ++k)
            part = insert(b, loc, part, element(b, loc, value, c + k), k);
        }
        Value addr = channelAddress(b, loc, dst, offset,
                                    channel(b, loc, first, c), eb);
        LLVM::StoreOp::create(b, loc, part, addr, a.chunk * a.elemBytes);
      }
    };
    inWarp(rw, op, op.getWarp(), {}, [&](OpBuilder &b) -> SmallVector<Value> {
      if (a.chunk == 1) {
        elements(b, /*isVolatile=*/false);
        return {};
      }
      Value ok = contiguousAndAligned(b, loc, dst, offset, stride, a);
      scf::IfOp::create(
          b, loc, ok,
          [&](OpBuilder &tb, Location) {
            vectors(tb);
            scf::YieldOp::create(tb, loc);
          },
          [&](OpBuilder &eb, Location) {
            elements(eb, /*isVolatile=*/true);
            scf::YieldOp::create(eb, loc);
          });
      return {};
    });
    rw.eraseOp(op);
    return success();
  }
};

struct FragmentFWHTLowering : OpRewritePattern<FragmentFWHTOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(FragmentFWHTOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    VectorType type = op.getInput().getType();
    float scale = op.getScale().convertToFloat();
    auto body = [&](OpBuilder &b) -> SmallVector<Value> {
      SmallVector<Value> v;
      for (int64_t e = 0; e < type.getNumElements(); ++e)
        v.push_back(element(b, loc, op.getInput(), e));
      int64_t lanes = getLanesPerProgram(op);
      Value lane = arith::IndexCastOp::create(b, loc, b.getI32Type(),
                                              laneIndex(b, loc, lanes));
      // A program of part of a warp: the shuffles name its lanes only,
      // ((1 << L) - 1) << (thread & (32 - L)), L a power of two.
      Value memberMask;
      if (lanes < kWarpSize) {
        Value thread = arith::IndexCastOp::create(b, loc, b.getI32Type(),
                                                  threadIndex(b, loc));
        memberMask = arith::ShLIOp::create(
            b, loc, i32Constant(b, loc, int32_t((1ull << lanes) - 1)),
            arith::AndIOp::create(b, loc, thread,
                                  i32Constant(b, loc, kWarpSize - lanes)));
      }
      emitRegisterButterflies(b, loc, v, lane, lanes, scale, memberMask);
      Value out = LLVM::PoisonOp::create(b, loc, type);
      for (auto [e, x] : llvm::enumerate(v))
        out = insert(b, loc, out, x, int64_t(e));
      return {out};
    };
    rw.replaceOp(op, inWarp(rw, op, op.getWarp(), type, body));
    return success();
  }
};

} // namespace

void kvarn::kvgpu::populateKVGPUFragmentToNVVMPatterns(
    RewritePatternSet &patterns) {
  patterns.add<FragmentLoadLowering, FragmentStoreLowering,
               FragmentFWHTLowering>(patterns.getContext());
}
