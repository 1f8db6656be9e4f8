//===- SplitPlan.cpp - kvt.split_plan: a split decode's chunk, per warp ---===//
//
// kvarn::splitPlan (include/kvarn/Support/SplitPlan.h) on the GPU. Every
// warp of the program computes it, the same integers in each, so nothing
// goes through shared memory and no barrier hands it on: a lane holds the
// block counts of kLoadsInFlight requests of a group of 128 (lane + 32 u);
// the batch's sum, maximum, minimum and active requests are redux.sync
// (one instruction each, sm_80 on). Where every request has the same
// number of blocks the plan is closed form from there; otherwise the
// program's chunk is found 32 requests a step by a binary search whose
// probes are redux sums, so every value stays warp-uniform. The first
// group's counts are loaded once and kept in registers for every pass: a
// batch of up to 128 requests costs one memory round trip. (A first
// version in one warp with shuffles and a shared-memory broadcast made
// ptxas spill 188 bytes in decode_split where it spilled 24; with redux in
// every warp, 40. Reloading the lengths in each pass cost about 2 us a
// CTA: 4 x 3000 15% slower, H100.)
//
//===----------------------------------------------------------------------===//

#include "TileLowering.h"

#include <limits>

#include "kvarn/Dialect/KVGPU/KVGPU.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

using namespace mlir;
using namespace kvarn;
using namespace kvarn::kvt;

namespace {

/// Lengths a lane of the first pass loads at once.
constexpr int64_t kLoadsInFlight = 4;

struct PlanBuilder {
  OpBuilder &b;
  Location loc;

  Value i32(int64_t v) { return arith::ConstantIntOp::create(b, loc, v, 32); }
  Value add(Value x, Value y) { return arith::AddIOp::create(b, loc, x, y); }
  Value sub(Value x, Value y) { return arith::SubIOp::create(b, loc, x, y); }
  Value max(Value x, Value y) { return arith::MaxSIOp::create(b, loc, x, y); }
  Value cmp(arith::CmpIPredicate p, Value x, Value y) {
    return arith::CmpIOp::create(b, loc, p, x, y);
  }
  Value select(Value c, Value x, Value y) {
    return arith::SelectOp::create(b, loc, c, x, y);
  }
  /// x / y for x >= 0, y > 0: unsigned, cheaper than signed division
  /// (no signs to fix; a shift where y is a power of two).
  Value div(Value x, Value y) { return arith::DivUIOp::create(b, loc, x, y); }
  /// ceil(x / y) for x >= 0, y > 0.
  Value cdiv(Value x, Value y) { return div(sub(add(x, y), i32(1)), y); }
  /// The sum (or maximum, minimum) of x over the warp, in every lane: one
  /// redux.sync (sm_80 on).
  Value warpReduce(Value x, NVVM::ReduxKind kind = NVVM::ReduxKind::ADD) {
    return NVVM::ReduxOp::create(b, loc, x.getType(), x, kind, i32(-1));
  }
};

LogicalResult lowerSplitPlan(TileLowering &s, Operation *raw) {
  auto op = cast<SplitPlanOp>(raw);
  Location loc = op.getLoc();
  if (s.programsPerCta != 1)
    return op.emitOpError("needs a CTA of its own a program (the plan is "
                          "computed by the CTA's first warp)");
  OpBuilder &b = s.b;
  Type i32Type = b.getI32Type();
  Value lens = s.lookup(op.getSeqLens()), batch = s.lookup(op.getBatch()),
        window = s.lookup(op.getWindow()), program = s.lookup(op.getProgram()),
        slots = s.lookup(op.getSlots());
  const int64_t blockTokens = op.getBlockTokens();
  const int64_t maxChunks = op.getMaxChunks();

  {
    PlanBuilder p{b, loc};
    Value lane = arith::IndexCastOp::create(
        b, loc, i32Type,
        gpu::LaneIdOp::create(b, loc, /*upper_bound=*/nullptr));
    Value zero = p.i32(0), one = p.i32(1);
    Value lastRequest = p.max(p.sub(batch, one), zero);

    // splitPlanBlocks of request r (0 past the batch: the load reads the
    // last request, clamped, and is dropped).
    auto blocksOf = [&](OpBuilder &at, Value r) {
      PlanBuilder q{at, loc};
      Value inBatch = q.cmp(arith::CmpIPredicate::slt, r, batch);
      Value at64 = arith::ExtSIOp::create(
          at, loc, at.getI64Type(),
          arith::MinSIOp::create(at, loc, r, lastRequest));
      Value bytes = arith::MulIOp::create(
          at, loc, at64, arith::ConstantIntOp::create(at, loc, 4, 64));
      Value len = kvgpu::GlobalLoadOp::create(at, loc, i32Type, lens, bytes);
      Value g = q.i32(blockTokens);
      Value lo = q.select(q.cmp(arith::CmpIPredicate::sgt, window, zero),
                          q.max(q.sub(len, window), zero), zero);
      // (len <= 0 makes n anything; it is dropped below.)
      Value n = q.sub(q.cdiv(len, g), q.div(lo, g));
      Value counted = arith::AndIOp::create(
          at, loc, inBatch, q.cmp(arith::CmpIPredicate::sgt, len, zero));
      return q.select(counted, n, zero);
    };
    // A group is kGroup requests, kLoadsInFlight a lane (lane + 32 u).
    // The first group's block counts are loaded once and kept in
    // registers for the three passes (a batch of up to kGroup requests
    // costs one memory round trip); later groups are loaded again in each
    // pass.
    const int64_t kGroup = kvgpu::kWarpSize * kLoadsInFlight;
    auto loadGroup = [&](OpBuilder &at, Value base) {
      PlanBuilder q{at, loc};
      SmallVector<Value> n;
      for (int64_t u = 0; u < kLoadsInFlight; ++u)
        n.push_back(blocksOf(
            at, q.add(base, q.add(lane, q.i32(u * kvgpu::kWarpSize)))));
      return n;
    };
    // `body` over every group: the first from `first`, the rest loaded.
    auto forGroups = [&](ArrayRef<Value> first, ValueRange inits,
                         function_ref<SmallVector<Value>(
                             OpBuilder &, Value, ArrayRef<Value>, ValueRange)>
                             body) {
      SmallVector<Value> acc = body(b, zero, first, inits);
      return scf::ForOp::create(
                 b, loc, p.i32(kGroup), batch, p.i32(kGroup), acc,
                 [&](OpBuilder &lb, Location, Value base, ValueRange carried) {
                   scf::YieldOp::create(
                       lb, loc, body(lb, base, loadGroup(lb, base), carried));
                 })
          .getResults();
    };
    SmallVector<Value> firstGroup = loadGroup(b, zero);

    // Pass 1: N (blocks in all), M (the most of one request), R (requests
    // with any), and the fewest of one request.
    Value noRequest = p.i32(std::numeric_limits<int32_t>::max());
    ValueRange counts = forGroups(
        firstGroup, {zero, zero, zero, noRequest},
        [&](OpBuilder &lb, Value base, ArrayRef<Value> n, ValueRange acc) {
          PlanBuilder q{lb, loc};
          SmallVector<Value> next(acc.begin(), acc.end());
          for (auto [u, v] : llvm::enumerate(n)) {
            next[0] = q.add(next[0], v);
            next[1] = q.max(next[1], v);
            next[2] = q.add(next[2],
                            arith::ExtUIOp::create(
                                lb, loc, i32Type,
                                q.cmp(arith::CmpIPredicate::sgt, v, q.i32(0))));
            Value r = q.add(base, q.add(lane, q.i32(u * kvgpu::kWarpSize)));
            next[3] = arith::MinSIOp::create(
                lb, loc, next[3],
                q.select(q.cmp(arith::CmpIPredicate::slt, r, batch), v,
                         noRequest));
          }
          return next;
        });
    Value total = p.warpReduce(counts[0]);
    Value most = p.warpReduce(counts[1], NVVM::ReduxKind::MAX);
    Value active = p.warpReduce(counts[2]);
    Value fewest = p.warpReduce(counts[3], NVVM::ReduxKind::MIN);

    // C: ceil(N / slots), unless its chunks outnumber the slots; at least
    // ceil(M / maxChunks) and 1.
    Value floorC = p.max(p.cdiv(most, p.i32(maxChunks)), one);
    Value safeSlots = p.max(slots, one);
    Value first = p.max(p.cdiv(total, safeSlots), floorC);
    // Where C = first makes more chunks than slots: C = ceil(N / (slots -
    // R)), or M where no slot is spare; at least floorC.
    auto fallbackChunk = [&] {
      Value spare = p.sub(slots, active);
      return p.max(p.select(p.cmp(arith::CmpIPredicate::sgt, spare, zero),
                            p.cdiv(total, p.max(spare, one)), most),
                   floorC);
    };

    // Equal lengths (every request n > 0 blocks), the common case: the
    // plan in closed form, K = ceil(n / C) chunks a request, program p
    // chunk p mod K of request p / K. It is the general rule's result
    // (chunks counted request by request), without its passes over the
    // batch: those cost decode_split ~270 instructions a warp, 4% at
    // 8 x 32K and 32 splits (H100).
    Value uniform = arith::AndIOp::create(
        b, loc, p.cmp(arith::CmpIPredicate::eq, fewest, most),
        p.cmp(arith::CmpIPredicate::sgt, most, zero));
    auto plan = scf::IfOp::create(b, loc, TypeRange{i32Type, i32Type, i32Type},
                                  uniform, /*withElseRegion=*/true);
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(plan.thenBlock());
      Value perFirst = p.cdiv(most, first);
      Value over = p.cmp(arith::CmpIPredicate::sgt,
                         arith::MulIOp::create(b, loc, batch, perFirst), slots);
      // (Divisions cost ~15 instructions: the fallback's only where taken.)
      auto overflow = scf::IfOp::create(b, loc, TypeRange{i32Type, i32Type},
                                        over, /*withElseRegion=*/true);
      {
        OpBuilder::InsertionGuard inner(b);
        b.setInsertionPointToStart(overflow.thenBlock());
        Value fallback = fallbackChunk();
        scf::YieldOp::create(b, loc,
                             ValueRange{fallback, p.cdiv(most, fallback)});
        b.setInsertionPointToStart(overflow.elseBlock());
        scf::YieldOp::create(b, loc, ValueRange{first, perFirst});
      }
      Value chunkBlocks = overflow.getResult(0);
      Value perRequest = overflow.getResult(1);
      Value request = p.div(program, perRequest);
      Value taken = arith::AndIOp::create(
          b, loc, p.cmp(arith::CmpIPredicate::sge, program, zero),
          p.cmp(arith::CmpIPredicate::slt, request, batch));
      Value chunk =
          p.sub(program, arith::MulIOp::create(b, loc, request, perRequest));
      scf::YieldOp::create(b, loc,
                           ValueRange{chunkBlocks,
                                      p.select(taken, request, p.i32(-1)),
                                      p.select(taken, chunk, zero)});
    }
    {
      // Any lengths: count the chunks at C = first, fall back where they
      // outnumber the slots, then find the program's.
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToStart(plan.elseBlock());
      Value chunksAtFirst =
          p.warpReduce(forGroups(firstGroup, {zero},
                                 [&](OpBuilder &lb, Value, ArrayRef<Value> n,
                                     ValueRange acc) {
                                   PlanBuilder q{lb, loc};
                                   Value k = acc[0];
                                   for (Value v : n)
                                     k = q.add(k, q.cdiv(v, first));
                                   return SmallVector<Value>{k};
                                 })[0],
                       NVVM::ReduxKind::ADD);
      Value chunkBlocks =
          p.select(p.cmp(arith::CmpIPredicate::sgt, chunksAtFirst, slots),
                   fallbackChunk(), first);

      // Pass 3: the chunks numbered request by request, 32 requests a step
      // (steps past the batch skipped). Within a step, the chunk's lane m is
      // the largest with (chunks of the lanes below m) <= (program - chunks
      // before the step), found by a binary search of redux sums: every
      // value stays warp-uniform.
      auto step = [&](OpBuilder &at, Value base, Value n, ValueRange acc) {
        PlanBuilder q{at, loc};
        Value k = q.cdiv(n, chunkBlocks);
        // Chunks of the lanes below `m`.
        auto below = [&](Value m) {
          return q.warpReduce(
              q.select(q.cmp(arith::CmpIPredicate::slt, lane, m), k, q.i32(0)),
              NVVM::ReduxKind::ADD);
        };
        Value want = q.sub(program, acc[0]);
        Value m = q.i32(0);
        for (int64_t d = kvgpu::kWarpSize / 2; d >= 1; d /= 2) {
          Value next = q.add(m, q.i32(d));
          m = q.select(q.cmp(arith::CmpIPredicate::sle, below(next), want),
                       next, m);
        }
        Value stepChunks = q.warpReduce(k, NVVM::ReduxKind::ADD);
        Value hit = arith::AndIOp::create(
            at, loc, q.cmp(arith::CmpIPredicate::sge, want, q.i32(0)),
            q.cmp(arith::CmpIPredicate::slt, want, stepChunks));
        return SmallVector<Value>{q.add(acc[0], stepChunks),
                                  q.select(hit, q.add(base, m), acc[1]),
                                  q.select(hit, q.sub(want, below(m)), acc[2])};
      };
      Value none = p.i32(-1);
      ValueRange found = forGroups(
          firstGroup, {zero, none, zero},
          [&](OpBuilder &lb, Value base, ArrayRef<Value> n, ValueRange acc) {
            SmallVector<Value> carried(acc.begin(), acc.end());
            PlanBuilder q{lb, loc};
            for (int64_t u = 0; u < kLoadsInFlight; ++u) {
              Value at = q.add(base, q.i32(u * kvgpu::kWarpSize));
              auto inBatch = scf::IfOp::create(
                  lb, loc, TypeRange(ValueRange(carried)),
                  q.cmp(arith::CmpIPredicate::slt, at, batch), true);
              OpBuilder tb = inBatch.getThenBodyBuilder();
              scf::YieldOp::create(tb, loc, step(tb, at, n[u], carried));
              OpBuilder eb = inBatch.getElseBodyBuilder();
              scf::YieldOp::create(eb, loc, carried);
              carried.assign(inBatch.getResults().begin(),
                             inBatch.getResults().end());
            }
            return carried;
          });
      scf::YieldOp::create(b, loc, ValueRange{chunkBlocks, found[1], found[2]});
    }
    s.scalars.map(op.getChunkBlocks(), plan.getResult(0));
    s.scalars.map(op.getRequest(), plan.getResult(1));
    s.scalars.map(op.getChunk(), plan.getResult(2));
  }
  return success();
}

} // namespace

void kvarn::kvt::registerSplitPlanLowering(
    llvm::DenseMap<OperationName, OpLowering> &table, MLIRContext *ctx) {
  table[OperationName(SplitPlanOp::getOperationName(), ctx)] = lowerSplitPlan;
}
