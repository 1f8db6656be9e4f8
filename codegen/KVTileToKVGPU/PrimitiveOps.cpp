//===- PrimitiveOps.cpp - rotate, normalize, quantize, (un)pack -----------===//
//
// The KVarN primitives of KVARN_SPEC.md sections 3-6, distributed over a CTA
// on shared-memory tiles. The arithmetic follows the CPU reference
// (lib/Reference) step for step; exp and log are the hardware approximations.
//
//===----------------------------------------------------------------------===//

#include "TileLowering.h"

#include "kvarn/Reference/Quantizer.h"
#include "kvarn/Reference/Rotation.h"

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

Value clampF(OpBuilder &b, Location loc, Value x, float lo, float hi) {
  Value l = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(lo));
  Value h = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(hi));
  return arith::MinimumFOp::create(b, loc, arith::MaximumFOp::create(b, loc, x, l), h);
}

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
  llvm::Expected<Rotation> rotation = Rotation::get(int(d));
  if (!rotation)
    return op.emitOpError(llvm::toString(rotation.takeError()));

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

/// Unbiased standard deviations of `value(row, col)` over cols, one per row,
/// two-pass: sums into `out`, then squared deviations.
void rowStds(TileLowering &s, Location loc, int64_t rows, int64_t cols,
             Value out, Value means,
             function_ref<Value(OpBuilder &, Value, Value)> value) {
  s.reduce(loc, ReduceKind::Add, rows, cols, means, value);
  s.reduce(loc, ReduceKind::Add, rows, cols, out,
           [&](OpBuilder &b, Value r, Value c) {
             Value n = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(float(cols)));
             Value mean = arith::DivFOp::create(b, loc, load(b, loc, means, r), n);
             Value dev = arith::SubFOp::create(b, loc, value(b, r, c), mean);
             return arith::MulFOp::create(b, loc, dev, dev).getResult();
           });
  s.foreach(loc, {rows}, [&](OpBuilder &b, ValueRange idx) {
    Value n1 = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(float(cols - 1)));
    Value var = arith::DivFOp::create(b, loc, load(b, loc, out, idx), n1);
    store(b, loc, emitSqrt(b, loc, var), out, idx);
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
                                         s.numWarps * 32);
  if (!grid || grid->n0 * grid->n1 > maxElements)
    return std::nullopt;
  return RegisterTileInput{m.buffer, transpose};
}

Value registerTileScratch(TileLowering &s, Location loc, Value buffer,
                          ScratchBuffers &scratch) {
  auto type = cast<MemRefType>(buffer.getType());
  int64_t floats =
      kvgpu::getRegisterTileScratchFloats(type.getDimSize(0), type.getDimSize(1),
                                          s.numWarps * 32);
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
  ScratchBuffers scratch(s);
  Value logCol = scratch.get(loc, {C}, f32), logRow = scratch.get(loc, {R}, f32);
  Value invCol = scratch.get(loc, {C}, f32), invRow = scratch.get(loc, {R}, f32);
  Value bestCol = scratch.get(loc, {C}, f32), bestRow = scratch.get(loc, {R}, f32);
  Value colStd = scratch.get(loc, {C}, f32), rowStd = scratch.get(loc, {R}, f32);
  Value colSum = scratch.get(loc, {C}, f32), rowSum = scratch.get(loc, {R}, f32);
  Value stat[4] = {scratch.get(loc, {1}, f32), scratch.get(loc, {1}, f32),
                   scratch.get(loc, {1}, f32), scratch.get(loc, {1}, f32)};
  Value bestImbalance = scratch.get(loc, {1}, f32);

  // cur = M / exp(log_c)[None, :] / exp(log_r)[:, None], as products with
  // the reciprocals (one correctly rounded division per scale, not two per
  // element and pass: within an ulp of the reference's quotients).
  auto cur = [&](OpBuilder &b, Value r, Value c) -> Value {
    Value x = s.read(b, loc, m, {r, c});
    x = arith::MulFOp::create(b, loc, x, load(b, loc, invCol, c));
    return arith::MulFOp::create(b, loc, x, load(b, loc, invRow, r));
  };
  auto computeColStd = [&] {
    rowStds(s, loc, C, R, colStd, colSum,
            [&](OpBuilder &b, Value c, Value r) { return cur(b, r, c); });
  };
  auto computeRowStd = [&] { rowStds(s, loc, R, C, rowStd, rowSum, cur); };
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
    Value floor = s.f32Constant(s.b, loc, kImbalanceFloor);
    auto ratio = [&](Value hi, Value lo) {
      return arith::DivFOp::create(
          s.b, loc, load(s.b, loc, hi, zero),
          arith::MaximumFOp::create(s.b, loc, load(s.b, loc, lo, zero), floor));
    };
    return arith::AddFOp::create(s.b, loc, ratio(stat[0], stat[1]),
                                 ratio(stat[2], stat[3]));
  };

  // The untouched tile is the first candidate.
  s.foreach(loc, {C}, [&](OpBuilder &b, ValueRange i) {
    store(b, loc, s.f32Constant(b, loc, 0.0f), logCol, i);
    store(b, loc, s.f32Constant(b, loc, 1.0f), invCol, i);
    store(b, loc, s.f32Constant(b, loc, 0.0f), bestCol, i);
  });
  s.foreach(loc, {R}, [&](OpBuilder &b, ValueRange i) {
    store(b, loc, s.f32Constant(b, loc, 0.0f), logRow, i);
    store(b, loc, s.f32Constant(b, loc, 1.0f), invRow, i);
    store(b, loc, s.f32Constant(b, loc, 0.0f), bestRow, i);
  });
  computeColStd();
  computeRowStd();
  Value initial = imbalance();
  s.foreach(loc, {1}, [&](OpBuilder &b, ValueRange i) {
    store(b, loc, initial, bestImbalance, i);
  });

  auto step = [&](OpBuilder &b, Value logs, Value invs, Value stds, Value i) {
    Value std = clampF(b, loc, load(b, loc, stds, i), kStdMin, kStdMax);
    Value l = arith::AddFOp::create(b, loc, load(b, loc, logs, i),
                                    emitLog(b, loc, std));
    l = clampF(b, loc, l, kLogScaleMin, kLogScaleMax);
    store(b, loc, l, logs, i);
    store(b, loc,
          arith::DivFOp::create(b, loc, s.f32Constant(b, loc, 1.0f),
                                emitExp(b, loc, l)),
          invs, i);
  };

  auto loop = scf::ForOp::create(s.b, loc, s.index(s.b, loc, 0),
                                 s.index(s.b, loc, op.getIters()),
                                 s.index(s.b, loc, 1));
  {
    OpBuilder::InsertionGuard guard(s.b);
    s.b.setInsertionPoint(loop.getBody()->getTerminator());
    // colStd holds the column stds of the current scaling: column step.
    s.foreach(loc, {C}, [&](OpBuilder &b, ValueRange i) {
      step(b, logCol, invCol, colStd, i[0]);
    });
    computeRowStd();
    s.foreach(loc, {R}, [&](OpBuilder &b, ValueRange i) {
      step(b, logRow, invRow, rowStd, i[0]);
    });
    computeColStd();
    computeRowStd();
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
        store(fb, loc, load(fb, loc, logCol, i), bestCol, i);
      });
      s.foreach(loc, {R}, [&](OpBuilder &fb, ValueRange i) {
        store(fb, loc, load(fb, loc, logRow, i), bestRow, i);
      });
      s.foreach(loc, {1}, [&](OpBuilder &fb, ValueRange i) {
        store(fb, loc, imb, bestImbalance, i);
      });
      scf::YieldOp::create(s.b, loc);
    });
  }

  // s_col = exp(best log_c), s_row = exp(best log_r).
  TileView sCol = s.allocate(loc, TileType::get({C}, f32));
  TileView sRow = s.allocate(loc, TileType::get({R}, f32));
  s.foreach(loc, {C}, [&](OpBuilder &b, ValueRange i) {
    store(b, loc, emitExp(b, loc, load(b, loc, bestCol, i)), sCol.buffer, i);
  });
  s.foreach(loc, {R}, [&](OpBuilder &b, ValueRange i) {
    store(b, loc, emitExp(b, loc, load(b, loc, bestRow, i)), sRow.buffer, i);
  });
  s.tiles[op.getColScale()] = sCol;
  s.tiles[op.getRowScale()] = sRow;
  return success();
}

//===----------------------------------------------------------------------===//
// quantize, dequantize
//===----------------------------------------------------------------------===//

LogicalResult lowerQuantize(TileLowering &s, Operation *raw) {
  auto op = cast<QuantizeOp>(raw);
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
    s.tiles[op.getCodes()] = codes;
    s.tiles[op.getScale()] = scale;
    s.tiles[op.getZero()] = zero;
    s.tiles[op.getOtherScale()] = other;
    return success();
  }
  ScratchBuffers scratch(s);
  Value lo = scratch.get(loc, {R}, f32), hi = scratch.get(loc, {R}, f32);
  Value step = scratch.get(loc, {R}, f32);

  // balanced = M / s_col[None, :] / s_row[:, None]
  auto balanced = [&](OpBuilder &b, Value r, Value c) -> Value {
    Value x = arith::DivFOp::create(b, loc, s.read(b, loc, m, {r, c}),
                                    s.read(b, loc, sCol, {c}));
    return arith::DivFOp::create(b, loc, x, s.read(b, loc, sRow, {r}));
  };
  s.reduce(loc, ReduceKind::Min, R, C, lo, balanced);
  s.reduce(loc, ReduceKind::Max, R, C, hi, balanced);
  s.foreach(loc, {R}, [&](OpBuilder &b, ValueRange i) {
    Value range = arith::SubFOp::create(b, loc, load(b, loc, hi, i), load(b, loc, lo, i));
    Value a = arith::DivFOp::create(b, loc, range, s.f32Constant(b, loc, qmax));
    store(b, loc,
          arith::MaximumFOp::create(b, loc, a, s.f32Constant(b, loc, kRangeFloor)),
          step, i);
  });

  TileView codes = s.allocate(loc, TileType::get({R, C}, s.b.getI8Type()));
  s.foreach(loc, {R, C}, [&](OpBuilder &b, ValueRange i) {
    Value x = arith::SubFOp::create(b, loc, balanced(b, i[0], i[1]),
                                    load(b, loc, lo, i[0]));
    x = arith::DivFOp::create(b, loc, x, load(b, loc, step, i[0]));
    // cvt.rni.s32.f32 rounds half to even, as the reference's nearbyint.
    Value q = emitRoundToInt(b, loc, x);
    q = arith::MaxSIOp::create(b, loc, q, arith::ConstantIntOp::create(b, loc, 0, 32));
    q = arith::MinSIOp::create(b, loc, q,
                               arith::ConstantIntOp::create(b, loc, int64_t(qmax), 32));
    store(b, loc, arith::TruncIOp::create(b, loc, b.getI8Type(), q),
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
  s.tiles[op.getCodes()] = codes;
  s.tiles[op.getScale()] = scale;
  s.tiles[op.getZero()] = zero;
  s.tiles[op.getOtherScale()] = other;
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

LogicalResult lowerPack(TileLowering &s, Operation *raw) {
  auto op = cast<PackOp>(raw);
  Location loc = op.getLoc();
  TileView codes = s.materialize(loc, s.view(op.getCodes()), s.b.getI8Type());
  TileView out = s.allocate(loc, op.getResult().getType());
  kvgpu::PackBitsOp::create(s.b, loc, codes.buffer, out.buffer, op.getBits());
  s.barrier(loc);
  if (codes.buffer != s.view(op.getCodes()).buffer)
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
