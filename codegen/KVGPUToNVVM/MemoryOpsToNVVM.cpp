//===- MemoryOpsToNVVM.cpp - shared buffers, barriers, global copies ------===//

#include "Common.h"

using namespace mlir;
using namespace kvarn::kvgpu;

namespace {

Value toI64(OpBuilder &b, Location loc, Value index) {
  return arith::IndexCastOp::create(b, loc, b.getI64Type(), index);
}

/// base + byteOffset + sum(idx[k] * byteStrides[k]), as a global pointer.
Value elementAddress(OpBuilder &b, Location loc, Value base, Value byteOffset,
                     ValueRange byteStrides, ArrayRef<Value> idx) {
  Value offset = byteOffset;
  for (auto [i, stride] : llvm::zip(idx, byteStrides))
    offset = arith::AddIOp::create(
        b, loc, offset,
        arith::MulIOp::create(b, loc, toI64(b, loc, i), stride));
  return LLVM::GEPOp::create(b, loc, base.getType(), b.getI8Type(), base,
                             ValueRange{offset});
}

/// x + v on indices.
Value addIndexConstant(OpBuilder &b, Location loc, Value x, int64_t v) {
  return arith::AddIOp::create(b, loc, x, indexConstant(b, loc, v));
}

/// Whether the copy can move `vectorElems` contiguous elements per access:
/// the innermost stride equals the element size and every other stride and
/// the start address are 16-byte aligned. Decided at run time (uniformly).
Value vectorizable(OpBuilder &b, Location loc, Value base, Value byteOffset,
                   ValueRange byteStrides, int64_t elemBytes) {
  Value align = i64Constant(b, loc, kVectorBytes - 1);
  Value zero = i64Constant(b, loc, 0);
  Value addr = arith::AddIOp::create(
      b, loc, LLVM::PtrToIntOp::create(b, loc, b.getI64Type(), base),
      byteOffset);
  Value ok = arith::CmpIOp::create(
      b, loc, arith::CmpIPredicate::eq,
      arith::AndIOp::create(b, loc, addr, align), zero);
  for (auto [k, stride] : llvm::enumerate(byteStrides)) {
    Value cond =
        k + 1 == byteStrides.size()
            ? arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, stride,
                                    i64Constant(b, loc, elemBytes))
            : arith::CmpIOp::create(
                  b, loc, arith::CmpIPredicate::eq,
                  arith::AndIOp::create(b, loc, stride, align), zero);
    ok = arith::AndIOp::create(b, loc, ok, cond);
  }
  return ok;
}

/// Emits the copy between global memory and the shared buffer `shared`, in
/// both the vector and the scalar form, chosen at run time.
template <bool ToShared>
void emitCopy(PatternRewriter &rw, Operation *op, Value global,
              Value byteOffset, ValueRange byteStrides, Value shared) {
  Location loc = op->getLoc();
  auto type = cast<MemRefType>(shared.getType());
  Type elt = type.getElementType();
  int64_t elemBytes = elt.getIntOrFloatBitWidth() / 8;
  ArrayRef<int64_t> shape = type.getShape();
  int64_t total = type.getNumElements();
  int64_t threads = getNumThreads(op);
  int64_t vecElems = kVectorBytes / elemBytes;
  bool canVectorize = shape.back() % vecElems == 0 && vecElems > 1;
  // copy_in's swizzled_rows (a 1-D byte buffer: the index is the byte):
  // where each byte of a swizzled region is stored.
  std::optional<ArrayRef<int64_t>> regions;
  if (auto copyIn = dyn_cast<CopyInOp>(op))
    regions = copyIn.getSwizzledRows();
  auto sharedIndex = [&](OpBuilder &b, SmallVector<Value> idx) {
    if (!regions)
      return idx;
    Value at = idx[0];
    Value stored = at;
    for (size_t i = 0; i < regions->size(); i += 3) {
      int64_t first = (*regions)[i], end = (*regions)[i + 1];
      Value in = arith::AndIOp::create(
          b, loc,
          arith::CmpIOp::create(b, loc, arith::CmpIPredicate::uge, at,
                                indexConstant(b, loc, first)),
          arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, at,
                                indexConstant(b, loc, end)));
      Value moved = addIndexConstant(
          b, loc,
          swizzledByte(b, loc, addIndexConstant(b, loc, at, -first),
                       (*regions)[i + 2]),
          first);
      stored = arith::SelectOp::create(b, loc, in, moved, stored);
    }
    idx[0] = stored;
    return idx;
  };

  auto scalarCopy = [&](OpBuilder &b) {
    buildStridedLoop(b, loc, threadIndex(b, loc), total, threads,
                     [&](OpBuilder &nb, Value p) {
                       SmallVector<Value> idx = delinearize(nb, loc, p, shape);
                       Value addr = elementAddress(nb, loc, global, byteOffset,
                                                   byteStrides, idx);
                       if (ToShared) {
                         Value v = LLVM::LoadOp::create(nb, loc, elt, addr);
                         memref::StoreOp::create(nb, loc, v, shared,
                                                 sharedIndex(nb, idx));
                       } else {
                         Value v = memref::LoadOp::create(nb, loc, shared, idx);
                         LLVM::StoreOp::create(nb, loc, v, addr);
                       }
                     });
  };
  if (!canVectorize) {
    scalarCopy(rw);
    rw.eraseOp(op);
    return;
  }

  // A 1-D copy_in with swizzled regions: one strided loop over each
  // region and each span between them, a region's chunks stored at `rel +
  // (swizzled(low) - low)` for `low` their place in a swizzle period: the
  // period's bits alone decide the move, so that a loop's stores step from
  // one base (a select among the regions a chunk, with the swizzle of each
  // whole index, held more registers across decode's block loop, which
  // spilled 44 bytes at head_dim 128).
  auto swizzledVectorCopy = [&](OpBuilder &b) {
    // (first, end, row bytes) in order; row bytes 0: not swizzled.
    SmallVector<std::array<int64_t, 3>> spans;
    int64_t at = 0;
    for (size_t i = 0; i < regions->size(); i += 3) {
      int64_t first = (*regions)[i], end = (*regions)[i + 1];
      if (first > at)
        spans.push_back({at, first, 0});
      spans.push_back({first, end, (*regions)[i + 2]});
      at = end;
    }
    if (at < total)
      spans.push_back({at, total, 0});
    for (auto [first, end, rowBytes] : spans)
      buildStridedLoop(
          b, loc, threadIndex(b, loc), (end - first) / kVectorBytes, threads,
          [&](OpBuilder &nb, Value p) {
            Value rel = arith::MulIOp::create(
                nb, loc, p, indexConstant(nb, loc, kVectorBytes));
            Value src = elementAddress(nb, loc, global, byteOffset, byteStrides,
                                       {addIndexConstant(nb, loc, rel, first)});
            Value dst = rel;
            if (rowBytes) {
              Value low = arith::RemUIOp::create(
                  nb, loc, rel,
                  indexConstant(nb, loc, swizzlePeriodBytes(rowBytes)));
              dst = arith::AddIOp::create(
                  nb, loc, rel,
                  arith::SubIOp::create(
                      nb, loc, swizzledByte(nb, loc, low, rowBytes), low));
            }
            NVVM::CpAsyncOp::create(
                nb, loc,
                sharedAddress(nb, loc, shared,
                              {addIndexConstant(nb, loc, dst, first)}),
                src, kVectorBytes, NVVM::LoadCacheModifierKind::CG,
                /*cpSize=*/Value());
          });
  };
  auto vectorCopy = [&](OpBuilder &b) {
    if (ToShared && regions)
      return swizzledVectorCopy(b);
    SmallVector<int64_t> vecShape(shape);
    vecShape.back() /= vecElems;
    auto vecType = VectorType::get({vecElems}, elt);
    buildStridedLoop(
        b, loc, threadIndex(b, loc), total / vecElems, threads,
        [&](OpBuilder &nb, Value p) {
          SmallVector<Value> idx = delinearize(nb, loc, p, vecShape);
          idx.back() = arith::MulIOp::create(nb, loc, idx.back(),
                                             indexConstant(nb, loc, vecElems));
          Value addr = elementAddress(nb, loc, global, byteOffset,
                                      byteStrides, idx);
          SmallVector<Value> at(idx);
          if (ToShared) {
            // 16 bytes global -> shared without a register in between
            // (cp.async.cg: L2 only); the thread goes on at once, and the
            // next kvgpu.barrier waits for its copies (waitForCopiesAtBarriers).
            NVVM::CpAsyncOp::create(
                nb, loc, sharedAddress(nb, loc, shared, sharedIndex(nb, idx)),
                addr, kVectorBytes, NVVM::LoadCacheModifierKind::CG,
                /*cpSize=*/Value());
          } else {
            Value vec = LLVM::PoisonOp::create(nb, loc, vecType);
            for (int64_t k = 0; k < vecElems; ++k) {
              at.back() = arith::AddIOp::create(nb, loc, idx.back(),
                                                indexConstant(nb, loc, k));
              Value e = memref::LoadOp::create(nb, loc, shared, at);
              vec = LLVM::InsertElementOp::create(nb, loc, vec, e,
                                                  i64Constant(nb, loc, k));
            }
            LLVM::StoreOp::create(nb, loc, vec, addr, kVectorBytes);
          }
        });
  };
  Value ok = vectorizable(rw, loc, global, byteOffset, byteStrides, elemBytes);
  scf::IfOp::create(
      rw, loc, ok,
      [&](OpBuilder &b, Location) {
        vectorCopy(b);
        if (ToShared)
          NVVM::CpAsyncCommitGroupOp::create(b, loc);
        scf::YieldOp::create(b, loc);
      },
      [&](OpBuilder &b, Location) {
        scalarCopy(b);
        // An empty group: every copy_in closes exactly one, which
        // barriers with `in_flight` count on.
        if (ToShared)
          NVVM::CpAsyncCommitGroupOp::create(b, loc);
        scf::YieldOp::create(b, loc);
      });
  rw.eraseOp(op);
}

struct SharedBufferLowering : OpRewritePattern<SharedBufferOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(SharedBufferOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    auto base = MemRefType::get({ShapedType::kDynamic}, rw.getI8Type(),
                                MemRefLayoutAttrInterface(),
                                op.getBuffer().getType().getMemorySpace());
    Value smem = gpu::DynamicSharedMemoryOp::create(rw, loc, base);
    Value offset = indexConstant(rw, loc, op.getOffset());
    if (Value slot = op.getSlot()) // a ring's slot: offset + slot * N
      offset = arith::AddIOp::create(
          rw, loc, offset,
          arith::MulIOp::create(rw, loc, slot,
                                indexConstant(rw, loc, *op.getSlotBytes())));
    rw.replaceOpWithNewOp<memref::ViewOp>(op, op.getBuffer().getType(), smem,
                                          offset, ValueRange());
    return success();
  }
};

/// An op with no operands or results that becomes one `Target` op.
template <typename Source, typename Target>
struct OneOpLowering : OpRewritePattern<Source> {
  using OpRewritePattern<Source>::OpRewritePattern;
  LogicalResult matchAndRewrite(Source op, PatternRewriter &rw) const override {
    rw.replaceOpWithNewOp<Target>(op);
    return success();
  }
};
// A barrier's wait for copies in flight is added before it, by
// waitForCopiesAtBarriers.
using BarrierLowering = OneOpLowering<BarrierOp, gpu::BarrierOp>;
using CommitCopiesLowering =
    OneOpLowering<CommitCopiesOp, NVVM::CpAsyncCommitGroupOp>;

struct GlobalLoadLowering : OpRewritePattern<GlobalLoadOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(GlobalLoadOp op,
                                PatternRewriter &rw) const override {
    Value addr = LLVM::GEPOp::create(rw, op.getLoc(), op.getPtr().getType(),
                                     rw.getI8Type(), op.getPtr(),
                                     ValueRange{op.getByteOffset()});
    rw.replaceOpWithNewOp<LLVM::LoadOp>(op, op.getType(), addr);
    return success();
  }
};

/// Thread t prefetches lines t, t + threads, ... of the range into L2 (of
/// the rows' ranges, line k of row r numbered r * linesPerRow + k).
struct PrefetchLowering : OpRewritePattern<PrefetchOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(PrefetchOp op,
                                PatternRewriter &rw) const override {
    constexpr int64_t kLineBytes = 128;
    Location loc = op.getLoc();
    int64_t linesPerRow = (op.getBytes() + kLineBytes - 1) / kLineBytes;
    int64_t rows = op.getRows().value_or(1);
    buildStridedLoop(
        rw, loc, threadIndex(rw, loc), rows * linesPerRow, getNumThreads(op),
        [&](OpBuilder &b, Value index) {
          Value line =
              arith::IndexCastOp::create(b, loc, b.getI64Type(), index);
          Value at = op.getByteOffset();
          if (rows > 1) {
            Value perRow = i64Constant(b, loc, linesPerRow);
            at = arith::AddIOp::create(
                b, loc, at,
                arith::MulIOp::create(
                    b, loc, arith::DivUIOp::create(b, loc, line, perRow),
                    op.getByteStride()));
            line = arith::RemUIOp::create(b, loc, line, perRow);
          }
          at = arith::AddIOp::create(
              b, loc, at,
              arith::MulIOp::create(b, loc, line,
                                    i64Constant(b, loc, kLineBytes)));
          Value addr =
              LLVM::GEPOp::create(b, loc, op.getSrc().getType(), b.getI8Type(),
                                  op.getSrc(), ValueRange{at});
          // Inline PTX, one instruction: upstream's nvvm.prefetch becomes an
          // intrinsic NVPTX selects only from PTX 8.0, and kvarn emits 7.8
          // for sm_90 (the instruction itself is as old as sm_20).
          Value bits = LLVM::PtrToIntOp::create(b, loc, b.getI64Type(), addr);
          LLVM::InlineAsmOp::create(
              b, loc, TypeRange{}, ValueRange{bits}, "prefetch.global.L2 [$0];",
              "l", /*has_side_effects=*/true, /*is_align_stack=*/false,
              LLVM::tailcallkind::TailCallKind::None, LLVM::AsmDialectAttr(),
              ArrayAttr());
        });
    rw.eraseOp(op);
    return success();
  }
};

/// Thread 0 stores; the value is uniform, so one store suffices.
struct GlobalStoreLowering : OpRewritePattern<GlobalStoreOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(GlobalStoreOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    Value first = arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::eq,
                                        threadIndex(rw, loc),
                                        indexConstant(rw, loc, 0));
    scf::IfOp::create(rw, loc, first, [&](OpBuilder &b, Location) {
      Value addr = LLVM::GEPOp::create(b, loc, op.getPtr().getType(),
                                       b.getI8Type(), op.getPtr(),
                                       ValueRange{op.getByteOffset()});
      LLVM::StoreOp::create(b, loc, op.getValue(), addr);
      scf::YieldOp::create(b, loc);
    });
    rw.eraseOp(op);
    return success();
  }
};

struct CopyInLowering : OpRewritePattern<CopyInOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(CopyInOp op,
                                PatternRewriter &rw) const override {
    emitCopy</*ToShared=*/true>(rw, op, op.getSrc(), op.getByteOffset(),
                                op.getByteStrides(), op.getDst());
    return success();
  }
};

struct CopyOutLowering : OpRewritePattern<CopyOutOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(CopyOutOp op,
                                PatternRewriter &rw) const override {
    emitCopy</*ToShared=*/false>(rw, op, op.getDst(), op.getByteOffset(),
                                 op.getByteStrides(), op.getSrc());
    return success();
  }
};

} // namespace

void kvarn::kvgpu::waitForCopiesAtBarriers(Operation *root) {
  root->walk([](gpu::GPUFuncOp func) {
    bool copies = false;
    func.walk([&](CopyInOp) { copies = true; });
    if (!copies)
      return;
    func.walk([](BarrierOp barrier) {
      OpBuilder b(barrier);
      NVVM::CpAsyncWaitGroupOp::create(b, barrier.getLoc(),
                                       barrier.getInFlight().value_or(0));
    });
  });
}

void kvarn::kvgpu::populateKVGPUMemoryToNVVMPatterns(
    RewritePatternSet &patterns) {
  patterns.add<SharedBufferLowering, BarrierLowering, CommitCopiesLowering,
               GlobalLoadLowering, GlobalStoreLowering, PrefetchLowering,
               CopyInLowering, CopyOutLowering>(patterns.getContext());
}
