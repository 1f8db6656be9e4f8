//===- LoopOpsToNVVM.cpp - foreach, reduce and warp_reduce ----------------===//

#include "Common.h"
#include "kvarn/Codegen/PairwiseTree.h"

#include <limits>

using namespace mlir;
using namespace kvarn::kvgpu;

namespace {

Value identity(OpBuilder &b, Location loc, ReduceKind kind) {
  float v = kind == ReduceKind::Add   ? 0.0f
            : kind == ReduceKind::Max ? -std::numeric_limits<float>::infinity()
                                      : std::numeric_limits<float>::infinity();
  return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
}

/// Point p of the space runs on thread p mod threads.
struct ForeachLowering : OpRewritePattern<ForeachOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(ForeachOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    ArrayRef<int64_t> shape = op.getShape();
    int64_t total = 1;
    for (int64_t d : shape)
      total *= d;
    buildStridedLoop(rw, loc, threadIndex(rw, loc), total, getNumThreads(op),
                     [&](OpBuilder &b, Value p) {
                       inlineBody(b, op.getBody(), delinearize(b, loc, p, shape));
                     });
    rw.eraseOp(op);
    return success();
  }
};

/// Whether `v` (inside the body of `op`) is computed from block argument
/// `arg`.
bool dependsOn(Value v, BlockArgument arg, Region &body) {
  if (v == arg)
    return true;
  Operation *def = v.getDefiningOp();
  if (!def || !body.isAncestor(def->getParentRegion()))
    return false;
  return llvm::any_of(def->getOperands(), [&](Value operand) {
    return dependsOn(operand, arg, body);
  });
}

/// Whether some shared-memory read of the body has its innermost index
/// computed from the row and not from the column: then consecutive rows are
/// adjacent (or equal) in memory, and lanes must take consecutive rows (a
/// warp striding along the columns of such a buffer hits one bank 32 times).
bool readsAlongRows(ReduceOp op) {
  Region &body = op.getBody();
  BlockArgument row = body.getArgument(0), col = body.getArgument(1);
  bool found = false;
  body.walk([&](memref::LoadOp load) {
    if (load.getIndices().size() < 2) // a per-row scalar is no layout
      return;
    Value inner = load.getIndices().back();
    if (dependsOn(inner, row, body) && !dependsOn(inner, col, body))
      found = true;
  });
  return found;
}

/// Most rows one thread reduces side by side.
constexpr int64_t kMaxRowsPerThread = 8;
/// Partial results of a thread: it sums columns c, c + P, ... of a row into
/// P accumulators combined at the end, which keeps fp32 sums closer to a
/// tree reduction's accuracy than one running sum over hundreds of columns
/// (and gives the loop independent chains). P = 4 for one row, fewer when a
/// thread reduces several rows at once.
constexpr int64_t kPartialsPerRow = 4;

/// Reduces `rows` (all this thread's) over every column in one loop, with
/// kPartialsPerRow accumulators per row when the columns divide evenly,
/// and stores each row's result.
void reduceRowsInOneLoop(OpBuilder &b, Location loc, ReduceOp op,
                         ArrayRef<Value> rows) {
  int64_t cols = op.getShape()[1];
  ReduceKind kind = op.getKind();
  // At most kPartialsPerRow accumulators in all (registers: the decode
  // family must not spill at 4 CTAs per SM).
  int64_t partials = std::max<int64_t>(1, kPartialsPerRow / int64_t(rows.size()));
  while (partials > 1 && (cols % partials != 0 || cols < 2 * partials))
    partials /= 2;
  SmallVector<Value> inits(rows.size() * partials, identity(b, loc, kind));
  auto loop = scf::ForOp::create(
      b, loc, indexConstant(b, loc, 0), indexConstant(b, loc, cols),
      indexConstant(b, loc, partials), inits,
      [&](OpBuilder &nb, Location, Value col, ValueRange acc) {
        SmallVector<Value> next;
        for (size_t r = 0; r < rows.size(); ++r)
          for (int64_t p = 0; p < partials; ++p) {
            Value c = p == 0 ? col
                             : arith::AddIOp::create(nb, loc, col,
                                                     indexConstant(nb, loc, p));
            Value v = inlineBody(nb, op.getBody(), {rows[r], c}).front();
            next.push_back(combineReduction(nb, loc, kind, acc[r * partials + p], v));
          }
        scf::YieldOp::create(nb, loc, next);
      });
  for (size_t r = 0; r < rows.size(); ++r) {
    SmallVector<Value> results(loop.getResults());
    Value row = kvarn::codegen::pairwiseTree(
        ArrayRef<Value>(results).slice(r * partials, partials),
        [&](Value x, Value y) { return combineReduction(b, loc, kind, x, y); });
    memref::StoreOp::create(b, loc, row, op.getOut(), ValueRange{rows[r]});
  }
}

/// Thread-per-row reduction. When every thread has the same number k of
/// rows (k <= kMaxRowsPerThread), it reduces its rows r, r + T, ... in one
/// loop over the columns, so reads the rows share (a code byte and its
/// decoding, for all query heads of one token) are loaded once.
void lowerRowPerThread(PatternRewriter &rw, ReduceOp op) {
  Location loc = op.getLoc();
  int64_t rows = op.getShape()[0];
  int64_t threads = getNumThreads(op);
  int64_t perThread = rows % threads == 0 ? rows / threads : 0;
  if (perThread < 2 || perThread > kMaxRowsPerThread) {
    buildStridedLoop(rw, loc, threadIndex(rw, loc), rows, threads,
                     [&](OpBuilder &b, Value row) {
                       reduceRowsInOneLoop(b, loc, op, {row});
                     });
    return;
  }
  Value tid = threadIndex(rw, loc);
  SmallVector<Value> myRows;
  for (int64_t k = 0; k < perThread; ++k)
    myRows.push_back(arith::AddIOp::create(rw, loc, tid,
                                           indexConstant(rw, loc, k * threads)));
  reduceRowsInOneLoop(rw, loc, op, myRows);
}

/// Most rows a warp reduces side by side: their loads are in flight
/// together (decode's fp16 pool blocks read K and V from global memory
/// inside the reduction; one row at a time, every row waited a full memory
/// latency: ~100 us for one block).
constexpr int64_t kMaxRowsPerWarp = 4;
/// Most (row, column) terms of a group a lane computes in straight-line code.
constexpr int64_t kMaxColumnsUnrolled = 16;

/// One thread per row when the body reads along rows; else lanes along the
/// row (one warp per row, shuffle-combined, lane 0 writes). A warp takes R
/// adjacent rows at once (R the largest power of two up to
/// kMaxRowsPerWarp that divides the rows evenly over the warps), each row
/// combined in the same order as alone; a lane's few columns are unrolled.
struct ReduceLowering : OpRewritePattern<ReduceOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(ReduceOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    int64_t rows = op.getShape()[0], cols = op.getShape()[1];
    if (readsAlongRows(op)) {
      lowerRowPerThread(rw, op);
      rw.eraseOp(op);
      return success();
    }
    int64_t warps = getNumThreads(op) / kWarpSize;
    int64_t together = kMaxRowsPerWarp;
    while (together > 1 && rows % (warps * together))
      together /= 2;
    Value tid = threadIndex(rw, loc);
    Value warp = arith::DivUIOp::create(rw, loc, tid,
                                        indexConstant(rw, loc, kWarpSize));
    Value lane = arith::RemUIOp::create(rw, loc, tid,
                                        indexConstant(rw, loc, kWarpSize));
    ReduceKind kind = op.getKind();
    Value firstGroup =
        arith::MulIOp::create(rw, loc, warp, indexConstant(rw, loc, together));
    buildStridedLoop(rw, loc, firstGroup, rows, warps * together,
                     [&](OpBuilder &b, Value group) {
      SmallVector<Value> groupRows;
      for (int64_t r = 0; r < together; ++r)
        groupRows.push_back(
            r ? arith::AddIOp::create(b, loc, group, indexConstant(b, loc, r))
                    .getResult()
              : group);
      SmallVector<Value> acc(together, identity(b, loc, kind));
      auto addColumn = [&](OpBuilder &nb, Value col, SmallVector<Value> &sums) {
        for (int64_t r = 0; r < together; ++r) {
          Value v = inlineBody(nb, op.getBody(), {groupRows[r], col}).front();
          sums[r] = combineReduction(nb, loc, kind, sums[r], v);
        }
      };
      int64_t steps = cols / kWarpSize;
      if (cols % kWarpSize == 0 && steps * together <= kMaxColumnsUnrolled) {
        // Straight-line columns: every load of the group is in flight at
        // once (a loop from `lane` has no constant trip count to unroll).
        for (int64_t j = 0; j < steps; ++j)
          addColumn(b,
                    arith::AddIOp::create(b, loc, lane,
                                          indexConstant(b, loc, j * kWarpSize)),
                    acc);
      } else {
        auto inner = scf::ForOp::create(
            b, loc, lane, indexConstant(b, loc, cols),
            indexConstant(b, loc, kWarpSize), acc,
            [&](OpBuilder &nb, Location, Value col, ValueRange in) {
              SmallVector<Value> next(in);
              addColumn(nb, col, next);
              scf::YieldOp::create(nb, loc, next);
            });
        acc.assign(inner.getResults().begin(), inner.getResults().end());
      }
      SmallVector<Value> totals;
      for (int64_t r = 0; r < together; ++r)
        totals.push_back(WarpReduceOp::create(
            b, loc, ReduceKindAttr::get(b.getContext(), kind), acc[r]));
      Value first = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                          lane, indexConstant(b, loc, 0));
      scf::IfOp::create(b, loc, first, [&](OpBuilder &tb, Location) {
        for (int64_t r = 0; r < together; ++r)
          memref::StoreOp::create(tb, loc, totals[r], op.getOut(),
                                  ValueRange{groupRows[r]});
        scf::YieldOp::create(tb, loc);
      });
    });
    rw.eraseOp(op);
    return success();
  }
};

struct WarpReduceLowering : OpRewritePattern<WarpReduceOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(WarpReduceOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    Value acc = op.getValue();
    Value width = arith::ConstantIntOp::create(rw, loc, kWarpSize, 32);
    for (int64_t offset = kWarpSize / 2; offset >= 1; offset /= 2) {
      Value off = arith::ConstantIntOp::create(rw, loc, offset, 32);
      Value other = gpu::ShuffleOp::create(rw, loc, acc, off, width,
                                           gpu::ShuffleMode::XOR)
                        .getShuffleResult();
      acc = combineReduction(rw, loc, op.getKind(), acc, other);
    }
    rw.replaceOp(op, acc);
    return success();
  }
};

} // namespace

void kvarn::kvgpu::populateKVGPULoopToNVVMPatterns(RewritePatternSet &patterns) {
  patterns.add<ForeachLowering, ReduceLowering, WarpReduceLowering>(
      patterns.getContext());
}
