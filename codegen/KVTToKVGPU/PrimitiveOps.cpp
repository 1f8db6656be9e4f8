//===- PrimitiveOps.cpp - rotate, normalize, quantize, (un)pack -----------===//
//
// The KVarN primitives of docs/kvarn.md ("Rotation" to "Record layout"),
// distributed over a CTA on shared-memory tiles. The arithmetic follows the
// CPU reference (lib/Reference) step for step, in TileArithmetic.h's
// contract (no exp or log).
//
//===----------------------------------------------------------------------===//

#include "TileLowering.h"

#include "kvarn/Codegen/E4M3Emitters.h"
#include "kvarn/Codegen/TileArithmeticEmitters.h"
#include "kvarn/Reference/Rotation.h"
#include "kvarn/Reference/TileArithmetic.h"

#include <array>
#include <cmath>

using namespace mlir;
using namespace kvarn;
using namespace kvarn::kvt;
using kvgpu::ReduceKind;

Value kvarn::kvt::widenToF32(OpBuilder &b, Location loc, Value v) {
  Type f32 = b.getF32Type();
  if (v.getType().isF32())
    return v;
  if (v.getType().isInteger(8)) // codes are unsigned
    return arith::UIToFPOp::create(b, loc, f32, v);
  return arith::ExtFOp::create(b, loc, f32, v);
}

namespace {

using kvarn::codegen::emitClamp;
namespace cg = kvarn::codegen;

//===----------------------------------------------------------------------===//
// rotate
//===----------------------------------------------------------------------===//

void emitFWHT(TileLowering &s, Location loc, Value buffer, int64_t count,
              int64_t length, int64_t start, float scale) {
  kvgpu::FWHTOp::create(s.b, loc, buffer, s.b.getI64IntegerAttr(count),
                        s.b.getI64IntegerAttr(length),
                        s.b.getI64IntegerAttr(start), s.b.getF32FloatAttr(scale));
}

LogicalResult lowerRotate(TileLowering &s, Operation *raw) {
  auto op = cast<RotateOp>(raw);
  Location loc = op.getLoc();
  TileType type = op.getResult().getType();
  if (type.getRank() > 2)
    return op.emitOpError("GPU rotation handles rank-1 and rank-2 tiles");
  int64_t d = type.getShape().back();
  int64_t rows = type.getRank() == 2 ? type.getDim(0) : 1;
  kvarn::Expected<Rotation> rotation = Rotation::get(int(d));
  if (!rotation)
    return op.emitOpError(kvarn::toString(rotation.takeError()));

  // The transform is in place, so it always works on a copy.
  TileView in = s.view(op.getInput());
  TileView copy = in;
  copy.conversions.push_back(s.b.getF32Type()); // defeats the no-copy path
  TileView buf = s.materialize(loc, copy, s.b.getF32Type(), /*asRank2=*/true);
  float norm = float(1.0 / std::sqrt(double(d)));

  switch (rotation->kind()) {
  case Rotation::Kind::Sylvester:
    emitFWHT(s, loc, buf.buffer, 1, d, 0, norm);
    s.barrier(loc);
    break;
  case Rotation::Kind::BlockDiagonal: {
    int64_t start = 0;
    for (int block : rotation->blockSizes()) { // disjoint channels
      emitFWHT(s, loc, buf.buffer, 1, block, start,
               float(1.0 / std::sqrt(double(block))));
      start += block;
    }
    s.barrier(loc);
    break;
  }
  case Rotation::Kind::Kronecker: {
    int64_t m = rotation->denseOrder(), chunk = d / m;
    emitFWHT(s, loc, buf.buffer, m, chunk, 0, 1.0f);
    s.barrier(loc);
    int id;
    Value out = s.allocateScratch(loc, {rows, d}, s.b.getF32Type(), id);
    kvgpu::DenseMixOp::create(
        s.b, loc, buf.buffer, out,
        s.b.getDenseI8ArrayAttr(rotation->denseFactor()),
        op.getInverse() ? s.b.getUnitAttr() : UnitAttr(),
        s.b.getF32FloatAttr(norm));
    s.barrier(loc);
    s.planner.release(buf.bufferId);
    buf.buffer = out;
    buf.bufferId = id;
    break;
  }
  }
  buf.type = type;
  s.tiles[op.getResult()] = buf;
  return success();
}

//===----------------------------------------------------------------------===//
// normalize
//===----------------------------------------------------------------------===//

/// Floats of the partial sums of productTreeSums: `rows` x Q, Q a power of two.
constexpr int64_t kTreeSumFloats = 4096;

/// The factors of one product of a productTreeSum (TileArithmetic.h).
using Product = std::pair<Value, Value>;
using ProductFn = function_ref<Product(OpBuilder &, Value, Value)>;

/// out[r] = TileArithmetic.h's productTreeSum of the products
/// product(r, 0 .. cols - 1): each thread of a foreach sums one (r, q) as
/// the tree's top levels over k = q + m Q (the fused first level among
/// them: at least two terms), then the remaining levels halve Q in shared
/// memory, a barrier each. Q divides cols, so the top levels skip the same m
/// for every q.
void productTreeSums(TileLowering &s, Location loc, int64_t rows, int64_t cols,
                     Value out, Value partial, ProductFn product) {
  int64_t p = 1;
  while (p < cols)
    p *= 2;
  int64_t q = std::max<int64_t>(1, p / 2);
  while (q > 1 && (cols % q || rows * q > kTreeSumFloats))
    q /= 2;
  s.foreach(loc, {rows, q}, [&](OpBuilder &b, ValueRange i) {
    SmallVector<Product> terms;
    for (int64_t m = 0; m * q < cols; ++m)
      terms.push_back(product(
          b, i[0], arith::AddIOp::create(b, loc, i[1], s.index(b, loc, m * q))));
    int64_t n = int64_t(terms.size()), top = 1;
    while (top < n)
      top *= 2;
    auto round = [&](const Product &t) -> Value {
      return arith::MulFOp::create(b, loc, t.first, t.second);
    };
    int64_t h = top / 2;
    SmallVector<Value> v;
    for (int64_t k = 0; k < std::max<int64_t>(h, 1); ++k)
      v.push_back(k + h < n && h > 0
                      ? LLVM::FMAOp::create(b, loc, terms[k].first, terms[k].second,
                                            round(terms[k + h])).getResult()
                      : round(terms[k]));
    int64_t live = std::min(n, std::max<int64_t>(h, 1));
    for (h /= 2; h >= 1; h /= 2) {
      for (int64_t k = 0; k < h && k + h < live; ++k)
        v[k] = arith::AddFOp::create(b, loc, v[k], v[k + h]);
      live = std::min(live, h);
    }
    Value at = arith::AddIOp::create(
        b, loc, arith::MulIOp::create(b, loc, i[0], s.index(b, loc, q)), i[1]);
    store(b, loc, v[0], partial, at);
  });
  for (int64_t h = q / 2; h >= 1; h /= 2)
    s.foreach(loc, {rows, h}, [&](OpBuilder &b, ValueRange i) {
      Value at = arith::AddIOp::create(
          b, loc, arith::MulIOp::create(b, loc, i[0], s.index(b, loc, q)), i[1]);
      Value other = arith::AddIOp::create(b, loc, at, s.index(b, loc, h));
      store(b, loc,
            arith::AddFOp::create(b, loc, load(b, loc, partial, at),
                                  load(b, loc, partial, other)),
            partial, at);
    });
  s.foreach(loc, {rows}, [&](OpBuilder &b, ValueRange i) {
    store(b, loc,
          load(b, loc, partial,
               arith::MulIOp::create(b, loc, i[0], s.index(b, loc, q)).getResult()),
          out, i);
  });
}

/// Unbiased standard deviations of x(row, col) * scale(col) over cols, one
/// per row, times factor(row) when given: TileArithmetic.h's
/// standardDeviation, as kvarn::sinkhorn computes it.
void rowStds(TileLowering &s, Location loc, int64_t rows, int64_t cols,
             Value out, Value means, Value partial,
             function_ref<Value(OpBuilder &, Value, Value)> x,
             function_ref<Value(OpBuilder &, Value)> scale,
             function_ref<Value(OpBuilder &, Value)> factor) {
  namespace tmath = kvarn::tilemath;
  productTreeSums(s, loc, rows, cols, means, partial,
                  [&](OpBuilder &b, Value r, Value c) -> Product {
                    return {x(b, r, c), scale(b, c)};
                  });
  s.foreach(loc, {rows}, [&](OpBuilder &b, ValueRange i) {
    Value inv = s.f32Constant(b, loc, tmath::reciprocalCount(cols));
    store(b, loc, arith::MulFOp::create(b, loc, load(b, loc, means, i), inv),
          means, i);
  });
  productTreeSums(s, loc, rows, cols, out, partial,
                  [&](OpBuilder &b, Value r, Value c) -> Product {
                    Value negMean = arith::NegFOp::create(b, loc, load(b, loc, means, r));
                    Value d = LLVM::FMAOp::create(b, loc, x(b, r, c), scale(b, c), negMean);
                    return {d, d};
                  });
  s.foreach(loc, {rows}, [&](OpBuilder &b, ValueRange idx) {
    Value inv = s.f32Constant(b, loc, tmath::reciprocalCount(cols - 1));
    Value variance = arith::MulFOp::create(b, loc, load(b, loc, out, idx), inv);
    Value std = kvarn::codegen::emitVarianceRoot(b, loc, variance);
    if (factor)
      std = arith::MulFOp::create(b, loc, factor(b, idx[0]), std);
    store(b, loc, std, out, idx);
  });
}

/// The shared buffer and orientation of `m` when kvgpu.sinkhorn and
/// kvgpu.quantize_tile can hold it in registers: an f16, bf16 or f32 buffer read
/// as f32, straight or transposed, that the CTA's grid divides.
/// Elements per thread up to which ptxas keeps each op's tile, state and
/// temporaries in 255 registers without spilling (flush at head_dim 256, 8
/// warps: 128 per thread fit kvgpu.sinkhorn, not kvgpu.quantize_tile).
constexpr int64_t kMaxSinkhornElements = 128;
constexpr int64_t kMaxQuantizeElements = 96;
struct RegisterTileInput {
  Value buffer;
  bool transpose;
};
std::optional<RegisterTileInput> registerTileInput(TileLowering &s,
                                                   const TileView &m,
                                                   int64_t maxElements) {
  if (!m.isPlainBuffer())
    return std::nullopt;
  auto type = cast<MemRefType>(m.buffer.getType());
  Type elt = type.getElementType();
  if (type.getRank() != 2 || !(elt.isF16() || elt.isBF16() || elt.isF32()))
    return std::nullopt;
  if (!llvm::all_of(m.conversions, [](Type t) { return t.isF32(); }) ||
      !(elt.isF32() || !m.conversions.empty()))
    return std::nullopt;
  bool transpose;
  if (ArrayRef<int>(m.bufferDims) == ArrayRef<int>{0, 1})
    transpose = false;
  else if (ArrayRef<int>(m.bufferDims) == ArrayRef<int>{1, 0})
    transpose = true;
  else
    return std::nullopt;
  auto grid = kvgpu::getRegisterTileGrid(type.getDimSize(0), type.getDimSize(1),
                                         s.numWarps * kvgpu::kWarpSize);
  if (!grid || grid->n0 * grid->n1 > maxElements)
    return std::nullopt;
  return RegisterTileInput{m.buffer, transpose};
}

Value registerTileScratch(TileLowering &s, Location loc, Value buffer,
                          ScratchBuffers &scratch) {
  auto type = cast<MemRefType>(buffer.getType());
  int64_t floats =
      kvgpu::getRegisterTileScratchFloats(type.getDimSize(0), type.getDimSize(1),
                                          s.numWarps * kvgpu::kWarpSize);
  return scratch.get(loc, {floats}, s.b.getF32Type());
}

LogicalResult lowerNormalize(TileLowering &s, Operation *raw) {
  auto op = cast<NormalizeOp>(raw);
  Location loc = op.getLoc();
  TileType type = op.getInput().getType();
  int64_t R = type.getDim(0), C = type.getDim(1);
  Type f32 = s.b.getF32Type();
  TileView m = s.view(op.getInput());
  if (auto in = registerTileInput(s, m, kMaxSinkhornElements)) {
    // The tile stays in registers across all iterations.
    TileView sCol = s.allocate(loc, TileType::get({C}, f32));
    TileView sRow = s.allocate(loc, TileType::get({R}, f32));
    {
      ScratchBuffers scratch(s);
      Value buf = registerTileScratch(s, loc, in->buffer, scratch);
      kvgpu::SinkhornOp::create(s.b, loc, in->buffer, sCol.buffer, sRow.buffer,
                                buf, in->transpose, op.getIters());
    }
    s.barrier(loc);
    s.tiles[op.getColScale()] = sCol;
    s.tiles[op.getRowScale()] = sRow;
    return success();
  }
  // The tile in shared memory: kvarn::sinkhorn step for step, in its
  // arithmetic (TileArithmetic.h), so these bits are the register path's
  // and the reference's.
  namespace tmath = kvarn::tilemath;
  ScratchBuffers scratch(s);
  Value sc = scratch.get(loc, {C}, f32), sr = scratch.get(loc, {R}, f32);
  Value ic = scratch.get(loc, {C}, f32), ir = scratch.get(loc, {R}, f32);
  Value bestCol = scratch.get(loc, {C}, f32), bestRow = scratch.get(loc, {R}, f32);
  Value colStd = scratch.get(loc, {C}, f32), rowStd = scratch.get(loc, {R}, f32);
  Value colMean = scratch.get(loc, {C}, f32), rowMean = scratch.get(loc, {R}, f32);
  Value partial = scratch.get(loc, {kTreeSumFloats}, f32);
  Value stat[4] = {scratch.get(loc, {1}, f32), scratch.get(loc, {1}, f32),
                   scratch.get(loc, {1}, f32), scratch.get(loc, {1}, f32)};
  Value bestImbalance = scratch.get(loc, {1}, f32);

  auto x = [&](OpBuilder &b, Value r, Value c) { return s.read(b, loc, m, {r, c}); };
  // Column stds (1/c) std_r(M * (1/r)); row stds std_c(M * (1/c)), times
  // 1/r unless `bare` (the row step's base).
  auto computeColStd = [&] {
    rowStds(
        s, loc, C, R, colStd, colMean, partial,
        [&](OpBuilder &b, Value c, Value r) { return x(b, r, c); },
        [&](OpBuilder &b, Value r) { return load(b, loc, ir, r); },
        [&](OpBuilder &b, Value c) { return load(b, loc, ic, c); });
  };
  auto computeRowStd = [&](bool bare) {
    auto factor = [&](OpBuilder &b, Value r) { return load(b, loc, ir, r); };
    rowStds(
        s, loc, R, C, rowStd, rowMean, partial, x,
        [&](OpBuilder &b, Value c) { return load(b, loc, ic, c); },
        bare ? function_ref<Value(OpBuilder &, Value)>() : factor);
  };
  // max(colstd)/max(min(colstd), 1e-8) + the same over rows; every thread
  // computes it from the four reduced values.
  auto imbalance = [&]() -> Value {
    auto extreme = [&](Value out, Value vec, int64_t n, ReduceKind kind) {
      s.reduce(loc, kind, 1, n, out, [&](OpBuilder &b, Value, Value i) {
        return load(b, loc, vec, i);
      });
    };
    extreme(stat[0], colStd, C, ReduceKind::Max);
    extreme(stat[1], colStd, C, ReduceKind::Min);
    extreme(stat[2], rowStd, R, ReduceKind::Max);
    extreme(stat[3], rowStd, R, ReduceKind::Min);
    Value zero = s.index(s.b, loc, 0);
    Value colMax = load(s.b, loc, stat[0], zero);
    Value colMin = load(s.b, loc, stat[1], zero);
    Value rowMax = load(s.b, loc, stat[2], zero);
    Value rowMin = load(s.b, loc, stat[3], zero);
    return cg::emitImbalance(s.b, loc, colMax, colMin, rowMax, rowMin);
  };
  auto step = [&](OpBuilder &b, Value scales, Value inverses, Value std,
                  Value i) {
    Value v = cg::emitSinkhornStep(b, loc, load(b, loc, scales, i), std);
    store(b, loc, v, scales, i);
    store(b, loc, cg::emitReciprocal(b, loc, v), inverses, i);
  };

  // The untouched tile is the first candidate (scales 1).
  for (auto [n, vecs] : {std::pair{C, std::array{sc, ic, bestCol}},
                         std::pair{R, std::array{sr, ir, bestRow}}})
    s.foreach(loc, {n}, [&, vecs = vecs](OpBuilder &b, ValueRange i) {
      for (Value v : vecs)
        store(b, loc, s.f32Constant(b, loc, 1.0f), v, i);
    });
  computeColStd();
  computeRowStd(false);
  Value initial = imbalance();
  s.foreach(loc, {1}, [&](OpBuilder &b, ValueRange i) {
    store(b, loc, initial, bestImbalance, i);
  });

  auto loop = scf::ForOp::create(s.b, loc, s.index(s.b, loc, 0),
                                 s.index(s.b, loc, op.getIters()),
                                 s.index(s.b, loc, 1));
  {
    OpBuilder::InsertionGuard guard(s.b);
    s.b.setInsertionPoint(loop.getBody()->getTerminator());
    // colStd holds the column stds of the current scaling: column step.
    s.foreach(loc, {C}, [&](OpBuilder &b, ValueRange i) {
      step(b, sc, ic, load(b, loc, colStd, i), i[0]);
    });
    computeRowStd(/*bare=*/true);
    s.foreach(loc, {R}, [&](OpBuilder &b, ValueRange i) {
      Value base = load(b, loc, rowStd, i);
      step(b, sr, ir, arith::MulFOp::create(b, loc, load(b, loc, ir, i), base), i[0]);
      store(b, loc, arith::MulFOp::create(b, loc, load(b, loc, ir, i), base), rowStd, i);
    });
    computeColStd();
    Value imb = imbalance();
    Value zero = s.index(s.b, loc, 0);
    Value better = arith::CmpFOp::create(s.b, loc, arith::CmpFPredicate::OLE,
                                         imb, load(s.b, loc, bestImbalance, zero));
    s.barrier(loc); // every thread has read the best before it changes
    scf::IfOp::create(s.b, loc, better, [&](OpBuilder &b, Location) {
      OpBuilder::InsertionGuard inner(s.b);
      s.b.setInsertionPoint(b.getInsertionBlock(), b.getInsertionPoint());
      // ties: the newer iterate wins
      s.foreach(loc, {C}, [&](OpBuilder &fb, ValueRange i) {
        store(fb, loc, load(fb, loc, sc, i), bestCol, i);
      });
      s.foreach(loc, {R}, [&](OpBuilder &fb, ValueRange i) {
        store(fb, loc, load(fb, loc, sr, i), bestRow, i);
      });
      s.foreach(loc, {1}, [&](OpBuilder &fb, ValueRange i) {
        store(fb, loc, imb, bestImbalance, i);
      });
      scf::YieldOp::create(s.b, loc);
    });
  }

  TileView sCol = s.allocate(loc, TileType::get({C}, f32));
  TileView sRow = s.allocate(loc, TileType::get({R}, f32));
  s.foreach(loc, {C}, [&](OpBuilder &b, ValueRange i) {
    store(b, loc, load(b, loc, bestCol, i), sCol.buffer, i);
  });
  s.foreach(loc, {R}, [&](OpBuilder &b, ValueRange i) {
    store(b, loc, load(b, loc, bestRow, i), sRow.buffer, i);
  });
  s.tiles[op.getColScale()] = sCol;
  s.tiles[op.getRowScale()] = sRow;
  return success();
}

//===----------------------------------------------------------------------===//
// quantize, dequantize
//===----------------------------------------------------------------------===//

/// kvt.quantize's four results are these views.
void setQuantizeResults(TileLowering &s, QuantizeOp op, const TileView &codes,
                        const TileView &scale, const TileView &zero,
                        const TileView &other) {
  s.tiles[op.getCodes()] = codes;
  s.tiles[op.getScale()] = scale;
  s.tiles[op.getZero()] = zero;
  s.tiles[op.getOtherScale()] = other;
}

/// kvt.quantize with e4m3_scales, in shared memory:
/// kvarn::quantizeTileWithScales's ScaleFormat::E4M3 operations, in order.
LogicalResult lowerQuantizeE4M3(TileLowering &s, QuantizeOp op) {
  Location loc = op.getLoc();
  TileType type = op.getInput().getType();
  int64_t R = type.getDim(0), C = type.getDim(1);
  Type f32 = s.b.getF32Type(), f16 = s.b.getF16Type();
  float qmax = float((1 << op.getBits()) - 1);
  TileView m = s.view(op.getInput()), sCol = s.view(op.getColScale());
  ScratchBuffers scratch(s);
  Value max = scratch.get(loc, {1}, f32);
  Value zeroIndex = s.index(s.b, loc, 0);
  // v rounded to the e4m3 grid of exponent e (at least its smallest step).
  auto rounded = [&](OpBuilder &b, Value v, Value e) -> Value {
    Value x = arith::MulFOp::create(
        b, loc, v,
        cg::emitPow2(b, loc,
                     arith::SubIOp::create(b, loc, cg::emitI32(b, loc, 0), e)));
    x = arith::MaximumFOp::create(b, loc, cg::emitRoundToE4M3(b, loc, x),
                                  s.f32Constant(b, loc, kE4M3MinSubnormal));
    return arith::MulFOp::create(b, loc, x, cg::emitPow2(b, loc, e));
  };

  // The column scales as stored, and their reciprocals.
  s.reduce(loc, ReduceKind::Max, 1, C, max, [&](OpBuilder &b, Value, Value c) {
    return s.read(b, loc, sCol, {c});
  });
  TileView other = s.allocate(loc, TileType::get({C}, f32));
  Value ic = scratch.get(loc, {C}, f32);
  s.foreach (loc, {C}, [&](OpBuilder &b, ValueRange i) {
    Value e = cg::emitScaleExponent(b, loc, load(b, loc, max, {zeroIndex}));
    Value v = rounded(b, s.read(b, loc, sCol, i), e);
    store(b, loc, v, other.buffer, i);
    store(b, loc, cg::emitReciprocal(b, loc, v), ic, i);
  });
  auto y = [&](OpBuilder &b, Value r, Value c) -> Value {
    return arith::MulFOp::create(b, loc, s.read(b, loc, m, {r, c}),
                                 load(b, loc, ic, {c}));
  };
  // Each row's minimum and step; the steps' maximum.
  Value lo = scratch.get(loc, {R}, f32), hi = scratch.get(loc, {R}, f32);
  Value step = scratch.get(loc, {R}, f32);
  s.reduce(loc, ReduceKind::Min, R, C, lo, y);
  s.reduce(loc, ReduceKind::Max, R, C, hi, y);
  s.foreach (loc, {R}, [&](OpBuilder &b, ValueRange i) {
    store(b, loc,
          cg::emitQuantizeStep(b, loc, load(b, loc, lo, i), load(b, loc, hi, i),
                               qmax),
          step, i);
  });
  s.reduce(loc, ReduceKind::Max, 1, R, max, [&](OpBuilder &b, Value, Value r) {
    return load(b, loc, step, {r});
  });
  // The rounded step, and the zero point of its grid centred on the range.
  TileView scale = s.allocate(loc, TileType::get({R}, f32));
  TileView zero = s.allocate(loc, TileType::get({R}, f16));
  s.foreach (loc, {R}, [&](OpBuilder &b, ValueRange i) {
    Value e = cg::emitScaleExponent(b, loc, load(b, loc, max, {zeroIndex}));
    Value st = load(b, loc, step, i);
    Value a = rounded(b, st, e);
    Value shift = arith::MulFOp::create(
        b, loc,
        arith::MulFOp::create(b, loc, s.f32Constant(b, loc, 0.5f),
                              arith::SubFOp::create(b, loc, st, a)),
        s.f32Constant(b, loc, qmax));
    store(b, loc, a, scale.buffer, i);
    store(b, loc,
          arith::TruncFOp::create(
              b, loc, f16,
              arith::AddFOp::create(b, loc, load(b, loc, lo, i), shift)),
          zero.buffer, i);
  });
  TileView codes = s.allocate(loc, TileType::get({R, C}, s.b.getI8Type()));
  s.foreach (loc, {R, C}, [&](OpBuilder &b, ValueRange i) {
    Value z =
        arith::ExtFOp::create(b, loc, f32, load(b, loc, zero.buffer, {i[0]}));
    Value inverse =
        cg::emitReciprocal(b, loc, load(b, loc, scale.buffer, {i[0]}));
    store(b, loc,
          cg::emitQuantizedCode(b, loc, y(b, i[0], i[1]), z, inverse, qmax),
          codes.buffer, i);
  });
  setQuantizeResults(s, op, codes, scale, zero, other);
  return success();
}

LogicalResult lowerQuantize(TileLowering &s, Operation *raw) {
  auto op = cast<QuantizeOp>(raw);
  if (op.getE4m3Scales())
    return lowerQuantizeE4M3(s, op);
  Location loc = op.getLoc();
  TileType type = op.getInput().getType();
  int64_t R = type.getDim(0), C = type.getDim(1);
  Type f32 = s.b.getF32Type(), f16 = s.b.getF16Type();
  float qmax = float((1 << op.getBits()) - 1);
  TileView m = s.view(op.getInput()), sCol = s.view(op.getColScale()),
           sRow = s.view(op.getRowScale());
  auto in = registerTileInput(s, m, kMaxQuantizeElements);
  if (in && sCol.isPlainBuffer() && sRow.isPlainBuffer() &&
      sCol.conversions.empty() && sRow.conversions.empty() &&
      cast<MemRefType>(sCol.buffer.getType()).getElementType().isF32() &&
      cast<MemRefType>(sRow.buffer.getType()).getElementType().isF32() &&
      cast<MemRefType>(sCol.buffer.getType()).getRank() == 1 &&
      cast<MemRefType>(sRow.buffer.getType()).getRank() == 1) {
    TileView codes = s.allocate(loc, TileType::get({R, C}, s.b.getI8Type()));
    TileView scale = s.allocate(loc, TileType::get({R}, f16));
    TileView zero = s.allocate(loc, TileType::get({R}, f16));
    TileView other = s.allocate(loc, TileType::get({C}, f16));
    {
      ScratchBuffers scratch(s);
      Value buf = registerTileScratch(s, loc, in->buffer, scratch);
      kvgpu::QuantizeTileOp::create(
          s.b, loc, in->buffer, sCol.buffer, sRow.buffer, codes.buffer,
          scale.buffer, zero.buffer, other.buffer, buf, in->transpose,
          op.getBits());
    }
    s.barrier(loc);
    setQuantizeResults(s, op, codes, scale, zero, other);
    return success();
  }
  ScratchBuffers scratch(s);
  Value lo = scratch.get(loc, {R}, f32), hi = scratch.get(loc, {R}, f32);
  Value step = scratch.get(loc, {R}, f32);

  // balanced = M * (1/s_col)[None, :] * (1/s_row)[:, None], the reciprocals
  // correctly rounded: kvarn::quantizeTileWithScales's operations.
  auto balanced = [&](OpBuilder &b, Value r, Value c) -> Value {
    Value x = arith::MulFOp::create(
        b, loc, s.read(b, loc, m, {r, c}),
        cg::emitReciprocal(b, loc, s.read(b, loc, sCol, {c})));
    return arith::MulFOp::create(
        b, loc, x, cg::emitReciprocal(b, loc, s.read(b, loc, sRow, {r})));
  };
  s.reduce(loc, ReduceKind::Min, R, C, lo, balanced);
  s.reduce(loc, ReduceKind::Max, R, C, hi, balanced);
  s.foreach (loc, {R}, [&](OpBuilder &b, ValueRange i) {
    store(b, loc,
          cg::emitQuantizeStep(b, loc, load(b, loc, lo, i), load(b, loc, hi, i),
                               qmax),
          step, i);
  });

  TileView codes = s.allocate(loc, TileType::get({R, C}, s.b.getI8Type()));
  s.foreach (loc, {R, C}, [&](OpBuilder &b, ValueRange i) {
    Value x = balanced(b, i[0], i[1]);
    Value lowest = load(b, loc, lo, i[0]);
    Value inverse = cg::emitReciprocal(b, loc, load(b, loc, step, i[0]));
    store(b, loc, cg::emitQuantizedCode(b, loc, x, lowest, inverse, qmax),
          codes.buffer, i);
  });
  TileView scale = s.allocate(loc, TileType::get({R}, f16));
  TileView zero = s.allocate(loc, TileType::get({R}, f16));
  TileView other = s.allocate(loc, TileType::get({C}, f16));
  s.foreach(loc, {R}, [&](OpBuilder &b, ValueRange i) {
    Value sr = s.read(b, loc, sRow, i);
    Value a = arith::MulFOp::create(b, loc, sr, load(b, loc, step, i));
    Value z = arith::MulFOp::create(b, loc, sr, load(b, loc, lo, i));
    store(b, loc, arith::TruncFOp::create(b, loc, f16, a), scale.buffer, i);
    store(b, loc, arith::TruncFOp::create(b, loc, f16, z), zero.buffer, i);
  });
  s.foreach(loc, {C}, [&](OpBuilder &b, ValueRange i) {
    store(b, loc, arith::TruncFOp::create(b, loc, f16, s.read(b, loc, sCol, i)),
          other.buffer, i);
  });
  setQuantizeResults(s, op, codes, scale, zero, other);
  return success();
}

/// A lazy view: (code * scale[r] + zero[r]) * other[c] in fp32, computed
/// where it is read, so a dequantized tile never occupies memory.
LogicalResult lowerDequantize(TileLowering &s, Operation *raw) {
  auto op = cast<DequantizeOp>(raw);
  TileView codes = s.view(op.getCodes()), scale = s.view(op.getScale()),
           zero = s.view(op.getZero()), other = s.view(op.getOtherScale());
  TileView out;
  out.type = op.getResult().getType();
  for (const TileView *in : {&codes, &scale, &zero, &other})
    out.deps.append(in->buffers());
  TileLowering *state = &s;
  out.compute = [=](OpBuilder &b, Location loc, ValueRange i) -> Value {
    auto asF32 = [&](Value v) { return widenToF32(b, loc, v); };
    Value x = arith::MulFOp::create(b, loc, asF32(state->read(b, loc, codes, i)),
                                    asF32(state->read(b, loc, scale, {i[0]})));
    x = arith::AddFOp::create(b, loc, x,
                              asF32(state->read(b, loc, zero, {i[0]})));
    return arith::MulFOp::create(b, loc, x,
                                 asF32(state->read(b, loc, other, {i[1]})));
  };
  s.tiles[op.getResult()] = out;
  return success();
}

//===----------------------------------------------------------------------===//
// pack, unpack
//===----------------------------------------------------------------------===//

/// Codes in row-major order go through kvgpu.pack_bits. A view that is not
/// (a transposed tile: MLA stores its per-channel codes token-major) is
/// packed byte by byte through the view instead of being copied first,
/// which for a 512 x 128 latent tile would take another 64 KB of shared
/// memory.
LogicalResult lowerPack(TileLowering &s, Operation *raw) {
  auto op = cast<PackOp>(raw);
  Location loc = op.getLoc();
  const TileView &in = s.view(op.getCodes());
  bool rowMajor = in.readsInOrder() && in.conversions.empty();
  if (!rowMajor && op.getCodes().getType().getRank() == 2) {
    TileType outType = op.getResult().getType();
    int64_t bits = op.getBits(), perByte = 8 / bits;
    TileView out = s.allocate(loc, outType);
    s.foreach (loc, outType.getShape(), [&](OpBuilder &b, ValueRange i) {
      Value byte = arith::ConstantIntOp::create(b, loc, 0, 32);
      for (int64_t k = 0; k < perByte; ++k) {
        Value column = arith::AddIOp::create(
            b, loc,
            arith::MulIOp::create(
                b, loc, i[1], arith::ConstantIndexOp::create(b, loc, perByte)),
            arith::ConstantIndexOp::create(b, loc, k));
        Value code = arith::AndIOp::create(
            b, loc,
            arith::ExtUIOp::create(b, loc, b.getI32Type(),
                                   s.read(b, loc, in, {i[0], column})),
            arith::ConstantIntOp::create(b, loc, (1 << bits) - 1, 32));
        byte = arith::OrIOp::create(
            b, loc, byte,
            arith::ShLIOp::create(
                b, loc, code,
                arith::ConstantIntOp::create(b, loc, k * bits, 32)));
      }
      store(b, loc, arith::TruncIOp::create(b, loc, b.getI8Type(), byte),
            out.buffer, i);
    });
    s.tiles[op.getResult()] = out;
    return success();
  }
  TileView codes = s.materialize(loc, in, s.b.getI8Type());
  TileView out = s.allocate(loc, op.getResult().getType());
  kvgpu::PackBitsOp::create(s.b, loc, codes.buffer, out.buffer, op.getBits());
  s.barrier(loc);
  if (codes.buffer != in.buffer)
    s.planner.release(codes.bufferId);
  s.tiles[op.getResult()] = out;
  return success();
}

/// A lazy view over the packed bytes: code c of row r is
/// (packed[r][c / P] >> ((c mod P) * bits)) & (2^bits - 1).
LogicalResult lowerUnpack(TileLowering &s, Operation *raw) {
  auto op = cast<UnpackOp>(raw);
  Location loc = op.getLoc();
  TileView packed = s.materialize(loc, s.view(op.getPacked()), s.b.getI8Type());
  int64_t bits = op.getBits(), perByte = 8 / bits;
  TileView out;
  out.type = op.getResult().getType();
  out.deps = packed.buffers();
  Value buffer = packed.buffer;
  out.compute = [=](OpBuilder &b, Location l, ValueRange i) -> Value {
    Value per = arith::ConstantIndexOp::create(b, l, perByte);
    Value byte = memref::LoadOp::create(
        b, l, buffer, ValueRange{i[0], arith::DivUIOp::create(b, l, i[1], per)});
    Value shift = arith::MulIOp::create(
        b, l,
        arith::IndexCastOp::create(b, l, b.getI32Type(),
                                   arith::RemUIOp::create(b, l, i[1], per)),
        arith::ConstantIntOp::create(b, l, bits, 32));
    Value code = arith::AndIOp::create(
        b, l,
        arith::ShRUIOp::create(
            b, l, arith::ExtUIOp::create(b, l, b.getI32Type(), byte), shift),
        arith::ConstantIntOp::create(b, l, (1 << bits) - 1, 32));
    return arith::TruncIOp::create(b, l, b.getI8Type(), code);
  };
  s.tiles[op.getResult()] = out;
  return success();
}

} // namespace

void kvarn::kvt::registerPrimitiveOpLowerings(
    llvm::DenseMap<OperationName, OpLowering> &table, MLIRContext *ctx) {
  table[OperationName(RotateOp::getOperationName(), ctx)] = lowerRotate;
  table[OperationName(NormalizeOp::getOperationName(), ctx)] = lowerNormalize;
  table[OperationName(QuantizeOp::getOperationName(), ctx)] = lowerQuantize;
  table[OperationName(DequantizeOp::getOperationName(), ctx)] = lowerDequantize;
  table[OperationName(PackOp::getOperationName(), ctx)] = lowerPack;
  table[OperationName(UnpackOp::getOperationName(), ctx)] = lowerUnpack;
}
