//===- TileOpsToNVVM.cpp - sinkhorn and quantize_tile in registers --------===//
//
// kvgpu.sinkhorn and kvgpu.quantize_tile read their tile from shared memory
// once into registers (getRegisterTileGrid: each thread a fixed block) and
// keep it there. A reduction over buffer dimension 1 stays inside a warp
// (the t1 threads of a grid row are consecutive lanes): shuffles. One over
// dimension 0 shuffles across the lanes of a warp that share t1, then goes
// through `scratch` across warps: lanes < t1 write their warp's partials,
// one barrier, and every thread combines the warps' partials in the same
// order (so all threads hold bit-identical results). Cross-warp reductions
// alternate between the scratch's two regions, so a region is written again
// only after the barrier of the reduction in between.
//
//===----------------------------------------------------------------------===//

#include "Common.h"

#include "kvarn/Codegen/TileArithmeticEmitters.h"
#include "kvarn/Reference/TileArithmetic.h"

#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <limits>

using namespace mlir;
using namespace kvarn::kvgpu;

namespace {

/// One CTA's register tile: thread coordinates and reduction helpers.
struct RegisterTile {
  OpBuilder &b;
  Location loc;
  RegisterTileGrid g;
  int64_t B[2], T[2], n[2], warps;
  Value tid, tc[2], warp, lane;
  Value scratch;
  int64_t regionFloats;
  int64_t ownBase; // the threads' private slots: slot s of thread t at
                   // ownBase + s * threads + t (consecutive threads, banks)
  // The region of partials the last one-stage reduction (reduceAll) used, or
  // -1 when the last reduction had two stages. A one-stage reduction's
  // readers may still be reading after its barrier, so the next reduction
  // writes the other region; a two-stage one's readers are done by its
  // second barrier, so any region is free after it.
  int lastOneStageRegion = -1;

  RegisterTile(OpBuilder &b, Location loc, RegisterTileGrid g, int64_t b0,
               int64_t b1, int64_t threads, Value scratch)
      : b(b), loc(loc), g(g), scratch(scratch) {
    B[0] = b0, B[1] = b1, T[0] = g.t0, T[1] = g.t1, n[0] = g.n0, n[1] = g.n1;
    warps = threads / kWarpSize;
    regionFloats = warps * (2 * b1 + 4);
    ownBase = (2 * warps + 1) * (2 * b1 + 4);
    tid = threadIndex(b, loc);
    warp = arith::DivUIOp::create(b, loc, tid, idx(kWarpSize));
    lane = arith::RemUIOp::create(b, loc, tid, idx(kWarpSize));
    // tc1 = the lane within its t1 consecutive lanes; tc0 = warp + warps *
    // (lane / t1): the warp in tc0's low bits, so a tree sum over dimension 0
    // (TileArithmetic.h: highest index bits first) runs the lane shuffles
    // before the cross-warp stage.
    tc[1] = arith::RemUIOp::create(b, loc, lane, idx(g.t1));
    tc[0] = arith::AddIOp::create(
        b, loc, warp,
        arith::MulIOp::create(b, loc, idx(warps),
                              arith::DivUIOp::create(b, loc, lane, idx(g.t1))));
  }

  Value idx(int64_t v) { return indexConstant(b, loc, v); }
  /// Buffer index along dimension d of this thread's k-th element.
  Value coord(int d, int64_t k) {
    return arith::AddIOp::create(b, loc, tc[d], idx(k * T[d]));
  }
  /// The thread's elements, x[i * n1 + j], as f32.
  SmallVector<Value> load(Value buffer) {
    SmallVector<Value> x;
    SmallVector<Value> c0, c1;
    for (int64_t i = 0; i < n[0]; ++i)
      c0.push_back(coord(0, i));
    for (int64_t j = 0; j < n[1]; ++j)
      c1.push_back(coord(1, j));
    for (int64_t i = 0; i < n[0]; ++i)
      for (int64_t j = 0; j < n[1]; ++j) {
        Value v = memref::LoadOp::create(b, loc, buffer, ValueRange{c0[i], c1[j]});
        if (!v.getType().isF32())
          v = arith::ExtFOp::create(b, loc, b.getF32Type(), v);
        x.push_back(v);
      }
    return x;
  }
  /// The per-index vector of dimension d read from a 1-D buffer.
  SmallVector<Value> loadVector(int d, Value buffer) {
    SmallVector<Value> v;
    for (int64_t k = 0; k < n[d]; ++k)
      v.push_back(memref::LoadOp::create(b, loc, buffer, ValueRange{coord(d, k)}));
    return v;
  }
  /// Writes the per-index vector of dimension d into a 1-D buffer (threads
  /// whose coordinate along the other dimension is 0).
  void storeVector(int d, ArrayRef<Value> v, Value buffer) {
    Value first = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                        tc[1 - d], idx(0));
    inside(first, [&] {
      for (int64_t k = 0; k < n[d]; ++k)
        memref::StoreOp::create(b, loc, v[k], buffer, ValueRange{coord(d, k)});
    });
  }

  Value shuffleXor(Value v, int64_t offset) {
    return gpu::ShuffleOp::create(b, loc, v, i32Constant(b, loc, offset),
                                  i32Constant(b, loc, kWarpSize), gpu::ShuffleMode::XOR)
        .getShuffleResult();
  }

  /// `vals[k]` are this thread's partials per index of dimension 1 - d;
  /// returns the reduction over dimension d (every thread holding an index
  /// gets its total). Several vectors reduce together (one barrier).
  SmallVector<SmallVector<Value>>
  reduceOver(int d, ArrayRef<ReduceKind> kinds,
             SmallVector<SmallVector<Value>> vals) {
    // Sums follow TileArithmetic.h's tree: index bits from the highest down
    // (lanes, then warps, whose bits are tc0's lowest), min and max alike.
    if (d == 1) { // the t1 lanes of a grid row
      for (int64_t off = T[1] / 2; off >= 1; off /= 2)
        for (auto [kind, vec] : llvm::zip(kinds, vals))
          for (Value &v : vec)
            v = combineReduction(b, loc, kind, v, shuffleXor(v, off));
      return vals;
    }
    for (int64_t off = kWarpSize / 2; off >= T[1]; off /= 2)
      for (size_t s = 0; s < vals.size(); ++s)
        for (Value &v : vals[s])
          v = combineReduction(b, loc, kinds[s], v, shuffleXor(v, off));
    if (warps == 1)
      return vals;
    // Two stages through scratch. Warp w's partials go to
    // P[w][q] = base + w * (2 B1 + 4) + q, slot q = tc1 * S n1 + s n1 + k
    // (S vectors); after a barrier thread q sums slot q over the warps, in
    // warp order, into Q[q] (past both regions); after a second barrier each
    // thread reads its S n1 totals, which lie together (16-byte loads). Every
    // total is summed once, so all threads hold bit-identical values.
    int64_t stride = 2 * B[1] + 4;
    int64_t perThread = int64_t(vals.size()) * n[1];
    int64_t slots = perThread * T[1];
    Value base = idx((lastOneStageRegion == 1 ? 0 : 1) * regionFloats);
    lastOneStageRegion = -1;
    Value totals = idx(2 * regionFloats);
    Value mine = arith::MulIOp::create(b, loc, tc[1], idx(perThread));
    SmallVector<Value> flat;
    for (auto &vec : vals)
      llvm::append_range(flat, vec);
    Value writer = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult,
                                         lane, idx(T[1]));
    inside(writer, [&] {
      Value row = arith::AddIOp::create(
          b, loc, base, arith::MulIOp::create(b, loc, warp, idx(stride)));
      storeRun(flat, arith::AddIOp::create(b, loc, row, mine));
    });
    gpu::BarrierOp::create(b, loc);
    int64_t threads = warps * kWarpSize;
    for (int64_t first = 0; first < slots; first += threads) {
      Value q = arith::AddIOp::create(b, loc, tid, idx(first));
      Value owner = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, q,
                                          idx(slots));
      // The slot's kind: slots of vector s are s n1 .. s n1 + n1 - 1 within
      // each tc1 group.
      auto sum = [&](ReduceKind kind) {
        SmallVector<Value> part;
        for (int64_t w = 0; w < warps; ++w) {
          Value at = arith::AddIOp::create(
              b, loc, base, arith::AddIOp::create(b, loc, q, idx(w * stride)));
          part.push_back(memref::LoadOp::create(b, loc, scratch, ValueRange{at}));
        }
        for (int64_t h = warps / 2; h >= 1; h /= 2) // warp bits, highest first
          for (int64_t w = 0; w < h; ++w)
            part[w] = combineReduction(b, loc, kind, part[w], part[w + h]);
        Value acc = part[0];
        memref::StoreOp::create(b, loc, acc, scratch,
                                ValueRange{arith::AddIOp::create(b, loc, totals, q)});
      };
      inside(owner, [&] {
        if (llvm::all_equal(kinds)) {
          sum(kinds[0]);
          return;
        }
        // Mixed kinds (min with max): the vector index decides.
        Value s = arith::DivUIOp::create(
            b, loc, arith::RemUIOp::create(b, loc, q, idx(perThread)), idx(n[1]));
        for (size_t k = 0; k < kinds.size(); ++k)
          inside(arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, s, idx(k)),
                 [&] { sum(kinds[k]); });
      });
    }
    gpu::BarrierOp::create(b, loc);
    SmallVector<Value> acc =
        loadRun(arith::AddIOp::create(b, loc, totals, mine), perThread);
    for (size_t s = 0; s < vals.size(); ++s)
      for (int64_t k = 0; k < n[1]; ++k)
        vals[s][k] = acc[s * n[1] + k];
    return vals;
  }

  /// Keeps `vals` in this thread's private slots `first`, `first + 1`, ...
  /// of scratch (state that would not fit the registers), and reads them
  /// back. No other thread touches them, so no barrier orders them.
  void stash(ArrayRef<Value> vals, int64_t first) {
    for (auto [i, v] : llvm::enumerate(vals))
      memref::StoreOp::create(b, loc, v, scratch, ValueRange{ownSlot(first + i)});
  }
  SmallVector<Value> unstash(int64_t first, int64_t count) {
    SmallVector<Value> out;
    for (int64_t i = 0; i < count; ++i)
      out.push_back(memref::LoadOp::create(b, loc, scratch, ValueRange{ownSlot(first + i)}));
    return out;
  }
  Value ownSlot(int64_t slot) {
    return arith::AddIOp::create(b, loc, tid,
                                 idx(ownBase + slot * warps * kWarpSize));
  }

  /// Emits `body` under `scf.if cond` at the builder's position.
  void inside(Value cond, llvm::function_ref<void()> body) {
    scf::IfOp::create(b, loc, cond, [&](OpBuilder &tb, Location) {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPoint(tb.getInsertionBlock(), tb.getInsertionPoint());
      body();
      scf::YieldOp::create(b, loc);
    });
  }

  /// `count` consecutive scratch floats from `at`: 16-byte vector loads when
  /// `at` and `count` are multiples of 4 (the callers' layouts keep them so).
  SmallVector<Value> loadRun(Value at, int64_t count) {
    SmallVector<Value> out;
    if (count % 4 != 0) {
      for (int64_t i = 0; i < count; ++i)
        out.push_back(memref::LoadOp::create(
            b, loc, scratch, ValueRange{arith::AddIOp::create(b, loc, at, idx(i))}));
      return out;
    }
    auto v4 = VectorType::get({4}, b.getF32Type());
    for (int64_t i = 0; i < count; i += 4) {
      Value vec = vector::LoadOp::create(
          b, loc, v4, scratch, ValueRange{arith::AddIOp::create(b, loc, at, idx(i))},
          /*nontemporal=*/false, llvm::MaybeAlign(16));
      for (int64_t e = 0; e < 4; ++e)
        out.push_back(vector::ExtractOp::create(b, loc, vec, e));
    }
    return out;
  }
  void storeRun(ArrayRef<Value> vals, Value at) {
    int64_t count = vals.size();
    if (count % 4 != 0) {
      for (int64_t i = 0; i < count; ++i)
        memref::StoreOp::create(
            b, loc, vals[i], scratch,
            ValueRange{arith::AddIOp::create(b, loc, at, idx(i))});
      return;
    }
    auto v4 = VectorType::get({4}, b.getF32Type());
    for (int64_t i = 0; i < count; i += 4) {
      Value vec = vector::FromElementsOp::create(b, loc, v4, vals.slice(i, 4));
      vector::StoreOp::create(b, loc, vec, scratch,
                              ValueRange{arith::AddIOp::create(b, loc, at, idx(i))},
                              /*nontemporal=*/false, llvm::MaybeAlign(16));
    }
  }

  /// Reduces one scalar per thread (each of `kinds`) over the whole CTA.
  SmallVector<Value> reduceAll(ArrayRef<ReduceKind> kinds,
                               SmallVector<Value> vals) {
    for (int64_t off = 1; off < kWarpSize; off *= 2)
      for (size_t s = 0; s < vals.size(); ++s)
        vals[s] = combineReduction(b, loc, kinds[s], vals[s], shuffleXor(vals[s], off));
    if (warps == 1)
      return vals;
    int64_t stride = 2 * B[1] + 4;
    int region = lastOneStageRegion == 0 ? 1 : 0;
    lastOneStageRegion = region;
    Value base = idx(region * regionFloats);
    Value rowBase = arith::AddIOp::create(
        b, loc, base, arith::MulIOp::create(b, loc, warp, idx(stride)));
    Value writer = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                         lane, idx(0));
    inside(writer, [&] { storeRun(vals, rowBase); });
    gpu::BarrierOp::create(b, loc);
    SmallVector<Value> acc;
    for (int64_t w = 0; w < warps; ++w) {
      SmallVector<Value> part =
          loadRun(arith::AddIOp::create(b, loc, base, idx(w * stride)), vals.size());
      if (w == 0)
        acc = part;
      else
        for (size_t s = 0; s < vals.size(); ++s)
          acc[s] = combineReduction(b, loc, kinds[s], acc[s], part[s]);
    }
    return acc;
  }

  /// x[i, j] as element (k along dimension keep, m along the other).
  Value at(ArrayRef<Value> x, int keep, int64_t k, int64_t m) {
    return keep == 0 ? x[k * n[1] + m] : x[m * n[1] + k];
  }
};

/// TileArithmetic.h's productTreeSum of one thread's a[j] * b[j] (its
/// elements j = 0, 1, ... along the reduced dimension, at least two: the
/// fused first level is in-thread; a missing power-of-two tail is skipped).
/// No `b`: the plain tree sum of `a`.
Value productTreeSum(OpBuilder &b, Location loc, ArrayRef<Value> a,
                     ArrayRef<Value> f) {
  int64_t n = int64_t(a.size()), p = 1;
  while (p < n)
    p *= 2;
  auto product = [&](int64_t k) -> Value {
    return f.empty() ? a[k] : arith::MulFOp::create(b, loc, a[k], f[k]).getResult();
  };
  SmallVector<Value> v(p / 2);
  int64_t h = p / 2;
  for (int64_t k = 0; k < h; ++k) {
    if (k + h >= n)
      v[k] = product(k);
    else if (f.empty())
      v[k] = arith::AddFOp::create(b, loc, a[k], a[k + h]);
    else
      v[k] = LLVM::FMAOp::create(b, loc, a[k], f[k], product(k + h));
  }
  int64_t live = std::min(n, h);
  for (h /= 2; h >= 1; h /= 2) {
    for (int64_t k = 0; k < h && k + h < live; ++k)
      v[k] = arith::AddFOp::create(b, loc, v[k], v[k + h]);
    live = std::min(live, h);
  }
  return v[0];
}

/// Unbiased standard deviations of y = x * scale[other index] over dimension
/// 1 - keep, one per index of dimension `keep`, in TileArithmetic.h's
/// arithmetic (standardDeviation): two product tree sums, the fp32
/// reciprocal counts, the clamped root.
SmallVector<Value> stdKeep(RegisterTile &t, ArrayRef<Value> x, int keep,
                           ArrayRef<Value> scale) {
  OpBuilder &b = t.b;
  Location loc = t.loc;
  int other = 1 - keep;
  auto row = [&](int64_t k) {
    SmallVector<Value> xs;
    for (int64_t m = 0; m < t.n[other]; ++m)
      xs.push_back(t.at(x, keep, k, m));
    return xs;
  };
  SmallVector<Value> sums;
  for (int64_t k = 0; k < t.n[keep]; ++k)
    sums.push_back(productTreeSum(b, loc, row(k), scale));
  sums = t.reduceOver(other, {ReduceKind::Add}, {sums})[0];
  Value invCount = f32Constant(b, loc, kvarn::tilemath::reciprocalCount(t.B[other]));
  SmallVector<Value> devs;
  for (int64_t k = 0; k < t.n[keep]; ++k) {
    Value negMean = arith::NegFOp::create(
        b, loc, arith::MulFOp::create(b, loc, sums[k], invCount));
    SmallVector<Value> d;
    for (auto [m, v] : llvm::enumerate(row(k)))
      d.push_back(scale.empty()
                      ? arith::AddFOp::create(b, loc, v, negMean).getResult()
                      : LLVM::FMAOp::create(b, loc, v, scale[m], negMean).getResult());
    devs.push_back(productTreeSum(b, loc, d, d));
  }
  devs = t.reduceOver(other, {ReduceKind::Add}, {devs})[0];
  Value invN1 = f32Constant(b, loc, kvarn::tilemath::reciprocalCount(t.B[other] - 1));
  for (Value &v : devs)
    v = kvarn::codegen::emitVarianceRoot(b, loc, arith::MulFOp::create(b, loc, v, invN1));
  return devs;
}

/// s = clamp(s * clamp(std)): tilemath::stepScale.
void stepScales(OpBuilder &b, Location loc, MutableArrayRef<Value> scales,
                ArrayRef<Value> stds) {
  for (size_t k = 0; k < scales.size(); ++k)
    scales[k] = kvarn::codegen::emitSinkhornStep(b, loc, scales[k], stds[k]);
}

/// 1 / s of Sinkhorn's scales (in [kScaleMin, kScaleMax]), correctly rounded.
SmallVector<Value> reciprocals(OpBuilder &b, Location loc, ArrayRef<Value> s) {
  SmallVector<Value> out;
  for (Value v : s)
    out.push_back(kvarn::codegen::emitScaleReciprocal(b, loc, v));
  return out;
}

SmallVector<Value> scaled(OpBuilder &b, Location loc, ArrayRef<Value> s,
                          ArrayRef<Value> stds) {
  SmallVector<Value> out;
  for (auto [a, c] : llvm::zip(s, stds))
    out.push_back(arith::MulFOp::create(b, loc, a, c));
  return out;
}

/// max(col)/max(min(col), floor) + max(row)/max(min(row), floor).
/// A thread's largest and smallest of `v`.
std::pair<Value, Value> extremes(OpBuilder &b, Location loc, ArrayRef<Value> v) {
  Value hi = v[0], lo = v[0];
  for (Value x : v.drop_front()) {
    hi = combineReduction(b, loc, ReduceKind::Max, hi, x);
    lo = combineReduction(b, loc, ReduceKind::Min, lo, x);
  }
  return {hi, lo};
}

/// max(col)/max(min(col), floor) + max(row)/max(min(row), floor), from each
/// thread's extremes of its column and row stds.
Value imbalance(RegisterTile &t, std::pair<Value, Value> col,
                std::pair<Value, Value> row) {
  OpBuilder &b = t.b;
  Location loc = t.loc;
  SmallVector<Value> r = t.reduceAll(
      {ReduceKind::Max, ReduceKind::Min, ReduceKind::Max, ReduceKind::Min},
      {col.first, col.second, row.first, row.second});
  return kvarn::codegen::emitImbalance(b, loc, r[0], r[1], r[2], r[3]);
}

/// The CTA's register tile over the input buffer of a kvgpu.sinkhorn or
/// kvgpu.quantize_tile, or nothing (and an error on the op) when it does not
/// fit.
template <typename OpT>
std::optional<RegisterTile> registerTileOf(OpT op, PatternRewriter &rw) {
  MemRefType in = op.getInput().getType();
  int64_t threads = getNumThreads(op);
  auto grid = getRegisterTileGrid(in.getDimSize(0), in.getDimSize(1), threads);
  if (!grid) {
    op.emitOpError("tile does not fit the registers of ") << threads << " threads";
    return std::nullopt;
  }
  return RegisterTile(rw, op.getLoc(), *grid, in.getDimSize(0), in.getDimSize(1),
                      threads, op.getScratch());
}

struct SinkhornLowering : OpRewritePattern<SinkhornOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(SinkhornOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    std::optional<RegisterTile> tile = registerTileOf(op, rw);
    if (!tile)
      return failure();
    RegisterTile &t = *tile;
    // Logical columns run along buffer dimension dc, rows along dr.
    int dc = op.getTranspose() ? 0 : 1, dr = 1 - dc;
    SmallVector<Value> x = t.load(op.getInput());
    Value one = f32Constant(rw, loc, 1.0f);
    int64_t nc = t.n[dc], nr = t.n[dr];
    SmallVector<Value> sc(nc, one), sr(nr, one);
    // The untouched tile is the first candidate (scales 1).
    SmallVector<Value> colStd = stdKeep(t, x, dc, {});
    SmallVector<Value> rowStd = stdKeep(t, x, dr, {});
    Value best = imbalance(t, extremes(rw, loc, colStd), extremes(rw, loc, rowStd));
    // The best iterate's scales wait in the outputs, written and read back
    // by the same threads (storeVector's), so no barrier orders them.
    t.storeVector(dc, sc, op.getColScale());
    t.storeVector(dr, sr, op.getRowScale());
    // Each iteration's column step needs the column stds the previous one
    // ended with; it is taken at the end of that iteration. The scales live
    // in the threads' private scratch slots (columns at 0, rows at nc) and
    // their reciprocals are recomputed where needed: only the tile stays in
    // registers across the stds, which is what lets flush keep 64 elements
    // per thread in 128 registers. Same order and operations as
    // kvarn::sinkhorn (TileArithmetic.h), so the bits are the reference's.
    stepScales(rw, loc, sc, colStd);
    t.stash(sc, 0);
    t.stash(sr, nc);

    int startRegion = t.lastOneStageRegion;
    auto loop = scf::ForOp::create(rw, loc, t.idx(0), t.idx(op.getIters()),
                                   t.idx(1), ValueRange{best});
    {
      OpBuilder::InsertionGuard guard(rw);
      rw.setInsertionPointToStart(loop.getBody());
      Value bestImb = loop.getRegionIterArgs()[0];
      // Row stds of M / c (then / r: a row's std scales with its factor),
      // the row step, then the column stds of the new iterate.
      SmallVector<Value> rowBase =
          stdKeep(t, x, dr, reciprocals(rw, loc, t.unstash(0, nc)));
      SmallVector<Value> rs = t.unstash(nc, nr);
      stepScales(rw, loc, rs, scaled(rw, loc, reciprocals(rw, loc, rs), rowBase));
      t.stash(rs, nc);
      SmallVector<Value> ir = reciprocals(rw, loc, rs);
      std::pair<Value, Value> rowExt = extremes(rw, loc, scaled(rw, loc, ir, rowBase));
      SmallVector<Value> colNew = stdKeep(t, x, dc, ir);
      SmallVector<Value> cs = t.unstash(0, nc);
      colNew = scaled(rw, loc, reciprocals(rw, loc, cs), colNew);
      Value imb = imbalance(t, extremes(rw, loc, colNew), rowExt);
      Value better = arith::CmpFOp::create(rw, loc, arith::CmpFPredicate::OLE,
                                           imb, bestImb);
      t.inside(better, [&] { // ties: the newer iterate wins
        t.storeVector(dc, cs, op.getColScale());
        t.storeVector(dr, t.unstash(nc, nr), op.getRowScale());
      });
      bestImb = arith::SelectOp::create(rw, loc, better, imb, bestImb);
      stepScales(rw, loc, cs, colNew); // the next iteration's column step
      t.stash(cs, 0);
      if (t.lastOneStageRegion != startRegion) // the next iteration's first write
        gpu::BarrierOp::create(rw, loc);
      t.lastOneStageRegion = startRegion;
      scf::YieldOp::create(rw, loc, ValueRange{bestImb});
    }
    rw.eraseOp(op);
    return success();
  }
};

struct QuantizeTileLowering : OpRewritePattern<QuantizeTileOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(QuantizeTileOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    std::optional<RegisterTile> tile = registerTileOf(op, rw);
    if (!tile)
      return failure();
    RegisterTile &t = *tile;
    int dc = op.getTranspose() ? 0 : 1, dr = 1 - dc;
    float qmax = float((1 << op.getBits()) - 1);
    SmallVector<Value> x = t.load(op.getInput());
    SmallVector<Value> sCol = t.loadVector(dc, op.getColScale());
    SmallVector<Value> sRow = t.loadVector(dr, op.getRowScale());
    // balanced = M / s_col / s_row as products with the correctly rounded
    // reciprocals (tilemath's quantizer). These are divisions, not
    // emitScaleReciprocal: the scales are the kernel's operands, and a DSL
    // kernel may pass its own outside Sinkhorn's [kScaleMin, kScaleMax]
    // (denormal, or past 2^126), where only div.rn is exact. Once per tile.
    auto divideOne = [&](ArrayRef<Value> v) {
      SmallVector<Value> out;
      for (Value a : v)
        out.push_back(kvarn::codegen::emitReciprocal(rw, loc, a));
      return out;
    };
    SmallVector<Value> rCol = divideOne(sCol);
    SmallVector<Value> rRow = divideOne(sRow);
    for (int64_t i = 0; i < t.n[0]; ++i)
      for (int64_t j = 0; j < t.n[1]; ++j) {
        int64_t c = dc == 0 ? i : j, r = dc == 0 ? j : i;
        Value &v = x[i * t.n[1] + j];
        v = arith::MulFOp::create(rw, loc, v, rCol[c]);
        v = arith::MulFOp::create(rw, loc, v, rRow[r]);
      }
    SmallVector<Value> lo, hi;
    for (int64_t k = 0; k < t.n[dr]; ++k) {
      Value mn = t.at(x, dr, k, 0), mx = mn;
      for (int64_t m = 1; m < t.n[dc]; ++m) {
        Value v = t.at(x, dr, k, m);
        mn = arith::MinimumFOp::create(rw, loc, mn, v);
        mx = arith::MaximumFOp::create(rw, loc, mx, v);
      }
      lo.push_back(mn);
      hi.push_back(mx);
    }
    auto red = t.reduceOver(dc, {ReduceKind::Min, ReduceKind::Max}, {lo, hi});
    lo = red[0];
    hi = red[1];
    SmallVector<Value> step;
    for (int64_t k = 0; k < t.n[dr]; ++k)
      step.push_back(
          kvarn::codegen::emitQuantizeStep(rw, loc, lo[k], hi[k], qmax));
    SmallVector<Value> rStep = divideOne(step);
    for (int64_t i = 0; i < t.n[0]; ++i)
      for (int64_t j = 0; j < t.n[1]; ++j) {
        int64_t r = dc == 0 ? j : i;
        Value q = kvarn::codegen::emitQuantizedCode(rw, loc, x[i * t.n[1] + j],
                                                    lo[r], rStep[r], qmax);
        Value b0 = t.coord(0, i), b1 = t.coord(1, j);
        Value row = dc == 0 ? b1 : b0, col = dc == 0 ? b0 : b1;
        memref::StoreOp::create(rw, loc, q, op.getCodes(),
                                ValueRange{row, col});
      }
    Type f16 = rw.getF16Type();
    SmallVector<Value> scale, zero, other;
    for (int64_t k = 0; k < t.n[dr]; ++k) {
      scale.push_back(arith::TruncFOp::create(
          rw, loc, f16, arith::MulFOp::create(rw, loc, sRow[k], step[k])));
      zero.push_back(arith::TruncFOp::create(
          rw, loc, f16, arith::MulFOp::create(rw, loc, sRow[k], lo[k])));
    }
    for (int64_t k = 0; k < t.n[dc]; ++k)
      other.push_back(arith::TruncFOp::create(rw, loc, f16, sCol[k]));
    t.storeVector(dr, scale, op.getScale());
    t.storeVector(dr, zero, op.getZero());
    t.storeVector(dc, other, op.getOther());
    rw.eraseOp(op);
    return success();
  }
};

} // namespace

void kvarn::kvgpu::populateKVGPUTileToNVVMPatterns(RewritePatternSet &patterns) {
  patterns.add<SinkhornLowering, QuantizeTileLowering>(patterns.getContext());
}
