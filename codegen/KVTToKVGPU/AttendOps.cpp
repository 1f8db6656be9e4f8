//===- AttendOps.cpp - attend, attend_finish, merge -----------------------===//
//
// Online softmax over one block, its finish, and the split-K merge, as
// shared-memory reductions over the CTA (kvgpu.reduce picks a thread or a
// warp per score and per output channel). exp and log are the
// hardware approximations; everything accumulates in fp32.
//
//===----------------------------------------------------------------------===//

#include "TileLowering.h"
#include "kvarn/Codegen/PairwiseTree.h"

#include <algorithm>
#include <array>
#include <limits>
#include <optional>

using namespace mlir;
using namespace kvarn;
using namespace kvarn::kvt;
using kvgpu::ReduceKind;

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

Value cst(OpBuilder &b, Location loc, float v) {
  return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
}

Value idx(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIndexOp::create(b, loc, v);
}

/// (i / n, i mod n)
std::pair<Value, Value> split(OpBuilder &b, Location loc, Value i, int64_t n) {
  Value nv = idx(b, loc, n);
  return {arith::DivUIOp::create(b, loc, i, nv),
          arith::RemUIOp::create(b, loc, i, nv)};
}

/// i * n + j: the row-major index of (i, j) in a flattened [*, n] scratch.
Value flatIndex(OpBuilder &b, Location loc, Value i, Value j, int64_t n) {
  return arith::AddIOp::create(
      b, loc, arith::MulIOp::create(b, loc, i, idx(b, loc, n)), j);
}

Value isNegInf(OpBuilder &b, Location loc, Value x) {
  return arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, x,
                               cst(b, loc, kNegInf));
}

/// A dequantized tile, (code * scale[r] + zero[r]) * other[c], or its
/// transpose (`transposed`): the views of kvt.dequantize's operands. When the
/// codes are a kvt.unpack of a staged buffer (a record's field), `packedView`
/// is that tile and packed() its buffer of `bits`-bit codes: [R, C * bits / 8],
/// or with `packedTransposed` (the codes a transpose of the unpacked bytes:
/// MLA's token-major latent, quantized per channel) [C, R * bits / 8].
struct AffineDequant {
  TileView codes, scale, zero, other;
  TileView packedView; // no buffer when the codes are not a staged unpack
  int64_t bits = 0;
  bool transposed = false, packedTransposed = false;

  Value packed() const { return packedView.buffer; }
};

/// `tile` as a dequantize op's result (behind a transpose when `transposed`).
std::optional<AffineDequant> matchDequant(TileLowering &s, Value tile,
                                          bool transposed) {
  std::optional<DequantChain> chain = matchDequantChain(tile, transposed);
  if (!chain)
    return std::nullopt;
  DequantizeOp dq = chain->dequantize;
  AffineDequant result{s.view(dq.getCodes()), s.view(dq.getScale()),
                       s.view(dq.getZero()), s.view(dq.getOtherScale())};
  result.transposed = transposed;
  UnpackOp unpack = chain->unpack;
  if (!unpack)
    if (auto t = dq.getCodes().getDefiningOp<TransposeOp>())
      if ((unpack = t.getInput().getDefiningOp<UnpackOp>()))
        result.packedTransposed = true;
  if (unpack) {
    const TileView &packed = s.view(unpack.getPacked());
    if (packed.type.getRank() == 2 && packed.isStoredAs(s.b.getI8Type())) {
      result.packedView = packed;
      result.bits = unpack.getBits();
    }
  }
  return result;
}

/// `dq`'s packed codes as kvgpu.packed_matmul's [K, N] operand, K being
/// the dequantized tile's rows (`kIsRow`) or its columns.
struct PackedOperand {
  kvgpu::PackedMatmulLayout layout;
  /// The bytes hold the codes [N, K] (packed_matmul's `transposed`).
  bool transposed;
};

/// The layout of kvgpu.packed_matmul for `dq`'s codes as the [K, N] operand,
/// or nothing (then attention reduces through kvgpu.reduce).
std::optional<PackedOperand>
packedOperand(TileLowering &s, const std::optional<AffineDequant> &dq,
              int64_t h, int64_t k, int64_t n, bool kIsRow) {
  if (!dq || !dq->packed())
    return std::nullopt;
  // The bytes' rows are the tile's rows unless packedTransposed; they are
  // the operand's K rows unless the operand is transposed.
  bool transposed = dq->packedTransposed == kIsRow;
  int64_t rows = transposed ? n : k, columns = transposed ? k : n;
  auto type = cast<MemRefType>(dq->packed().getType());
  if (type.getDimSize(0) != rows ||
      type.getDimSize(1) * 8 != columns * dq->bits)
    return std::nullopt;
  std::optional<kvgpu::PackedMatmulLayout> layout =
      kvgpu::getPackedMatmulLayout(h, k, n, dq->bits,
                                   s.numWarps * kvgpu::kWarpSize, transposed);
  if (!layout)
    return std::nullopt;
  return PackedOperand{*layout, transposed};
}

/// out[h, n] = sum_k a[k, h] code[k, n] in registers (kvgpu.packed_matmul),
/// its cross-warp partials in `partials`; with `headMajorA`, `a` is [H, K]
/// and a[h, k] is taken times aScale[k] (f16 or f32 [K]) as the op reads it.
void emitPackedMatmul(TileLowering &s, Location loc, Value a,
                      const AffineDequant &dq, const PackedOperand &operand,
                      Value out, Value partials, Value aScale = Value(),
                      bool headMajorA = false) {
  UnitAttr none;
  kvgpu::PackedMatmulOp::create(s.b, loc, a, dq.packed(), out, partials, aScale,
                                s.b.getI32IntegerAttr(int32_t(dq.bits)),
                                operand.transposed ? s.b.getUnitAttr() : none,
                                headMajorA ? s.b.getUnitAttr() : none);
  s.barrier(loc);
}

/// `v`'s buffer when it already holds the tile as f16 or f32 elements in
/// row-major order (reads only widen it), else null.
Value plainScaleBuffer(const TileView &v) {
  if (!v.readsInOrder(/*unitDims=*/true) ||
      !llvm::all_of(v.conversions, [](Type t) { return t.isF32(); }))
    return Value();
  auto type = cast<MemRefType>(v.buffer.getType());
  if ((type.getElementType().isF16() || type.getElementType().isF32()) &&
      type.getNumElements() == v.type.getNumElements())
    return v.buffer;
  return Value();
}

/// plainScaleBuffer, or a materialized f32 copy of the tile.
Value scaleBuffer(TileLowering &s, Location loc, const TileView &v) {
  if (Value plain = plainScaleBuffer(v))
    return plain;
  return s.materialize(loc, v, s.b.getF32Type()).buffer;
}

/// The f32 buffers of an attend op's queries and incoming state (m, l,
/// acc), materialized where their views are not plain f32 buffers.
std::array<Value, 4> stateBuffers(TileLowering &s, AttendOp op) {
  Location loc = op.getLoc();
  Type f32 = s.b.getF32Type();
  std::array<Value, 4> buffers;
  for (auto [i, tile] : llvm::enumerate(
           std::array<Value, 4>{op.getQ(), op.getM(), op.getL(), op.getAcc()}))
    buffers[i] = s.materialize(loc, s.view(tile), f32).buffer;
  return buffers;
}

/// The views an attend op's new state (m, l, acc) is written to, given the
/// buffers its incoming state was materialized in: the new state over the
/// old where nothing reads the old one afterwards (a loop's carried state:
/// the loop's yield then copies nothing), fresh buffers otherwise.
std::array<TileView, 3> newStateViews(TileLowering &s, AttendOp op, Value m,
                                      Value l, Value acc) {
  auto stateBuffer = [&](Value oldTile, Value buffer, Value newTile) {
    const TileView &old = s.view(oldTile);
    if (buffer && old.buffer == buffer && s.canOverwrite(oldTile, op))
      return old;
    return s.allocate(op.getLoc(), cast<TileType>(newTile.getType()));
  };
  return {stateBuffer(op.getM(), m, op.getNewM()),
          stateBuffer(op.getL(), l, op.getNewL()),
          stateBuffer(op.getAcc(), acc, op.getNewAcc())};
}

/// `v`'s buffer when it is a plain row-major f32 buffer of the tile (an
/// element's index in the buffer is its index in the tile), else null.
Value plainF32Buffer(const TileView &v) {
  if (!v.isStoredAs(Float32Type::get(v.type.getContext())) ||
      cast<MemRefType>(v.buffer.getType()).getNumElements() !=
          v.type.getNumElements())
    return Value();
  return v.buffer;
}

/// plainF32Buffer(v) as a 1-D shared buffer (the same bytes), as
/// kvgpu.packed_matmul takes its `a`; null where v is not such a buffer.
Value flatF32Buffer(TileLowering &s, Location loc, const TileView &v) {
  Value plain = plainF32Buffer(v);
  auto staged = plain ? plain.getDefiningOp<kvgpu::SharedBufferOp>() : nullptr;
  if (!staged)
    return Value();
  if (cast<MemRefType>(plain.getType()).getRank() == 1)
    return plain;
  return kvgpu::SharedBufferOp::create(
      s.b, loc,
      kvgpu::getSharedMemRefType({v.type.getNumElements()}, s.b.getF32Type()),
      staged.getOffsetAttr());
}

/// An f32 [floats] buffer over the staged rows `rows` (a shared buffer of
/// op's K rope operand) when nothing reads those rows, or any other tile of
/// their buffer, after `op`: MLA's record field, dead once the rope term is
/// done. Null otherwise.
Value overDeadRows(TileLowering &s, AttendOp op, Value rows, int64_t floats) {
  auto staged = rows.getDefiningOp<kvgpu::SharedBufferOp>();
  const TileView &view = s.view(op.getKRope());
  auto type = cast<MemRefType>(rows.getType());
  if (!staged || view.bufferId < 0 ||
      type.getNumElements() * 2 < floats * 4 || // f16 rows
      !s.bufferDeadAfter(view.bufferId, op))
    return Value();
  return kvgpu::SharedBufferOp::create(
      s.b, op.getLoc(), kvgpu::getSharedMemRefType({floats}, s.b.getF32Type()),
      staged.getOffsetAttr());
}

/// The incoming state's buffers and the new state's views of a register
/// lowering (attend_record, attend_rows). `perWarp`: the new state is held
/// per warp (findWarpStates); a whole incoming state is then spread over
/// the new state's copies first and updated there.
struct RegisterState {
  Value q, m, l, acc;
  std::array<TileView, 3> out;
};
RegisterState registerState(TileLowering &s, AttendOp op, bool perWarp) {
  if (!perWarp) {
    auto [q, m, l, acc] = stateBuffers(s, op);
    return {q, m, l, acc, newStateViews(s, op, m, l, acc)};
  }
  Location loc = op.getLoc();
  RegisterState r;
  r.q = s.materialize(loc, s.view(op.getQ()), s.b.getF32Type()).buffer;
  std::array<Value, 3> olds = {op.getM(), op.getL(), op.getAcc()};
  std::array<Value, 3> news = {op.getNewM(), op.getNewL(), op.getNewAcc()};
  for (int i = 0; i < 3; ++i) {
    const TileView &old = s.view(olds[i]);
    StateRole role = s.warpStates.lookup(news[i]);
    bool inPlace =
        old.warpState != StateRole::None && s.canOverwrite(olds[i], op);
    r.out[i] = inPlace ? old
                       : allocateWarpState(
                             s, loc, cast<TileType>(news[i].getType()), role);
    // A fresh state starts as the incoming one (spread over the rows when
    // whole), and the op updates it in place: a warp that attends no token
    // (attend_rows' warps past its layout's) leaves its row as it was, so
    // every row is written.
    if (!inPlace)
      s.copyInto(loc, old, r.out[i]);
  }
  r.m = r.out[0].buffer;
  r.l = r.out[1].buffer;
  r.acc = r.out[2].buffer;
  return r;
}

/// After an attend op's kvgpu step: one barrier, then its results are the
/// new state's views.
void publishNewState(TileLowering &s, AttendOp op, const TileView &newM,
                     const TileView &newL, const TileView &newAcc) {
  s.barrier(op.getLoc());
  s.tiles[op.getNewM()] = newM;
  s.tiles[op.getNewL()] = newL;
  s.tiles[op.getNewAcc()] = newAcc;
}

/// The kvgpu.copy_in that staged the record whose fields `fields` (shared
/// buffers) are, when only barriers and views lie between it and the
/// builder's insertion point (nothing has read the record yet), and nothing
/// reads the record after `op` (`recordView`: one of the fields' tile
/// views): the copy may then store the fields' rows swizzled for `op`
/// alone. Null otherwise.
kvgpu::CopyInOp recordCopyToSwizzle(TileLowering &s, AttendOp op,
                                    ArrayRef<Value> fields,
                                    const TileView &recordView) {
  if (!s.swizzleRecords)
    return nullptr;
  SmallVector<kvgpu::SharedBufferOp> views;
  for (Value field : fields) {
    auto at = field.getDefiningOp<kvgpu::SharedBufferOp>();
    if (!at || at.getSlot())
      return nullptr;
    views.push_back(at);
  }
  if (recordView.bufferId < 0 || !s.bufferDeadAfter(recordView.bufferId, op))
    return nullptr;
  Block *block = s.b.getInsertionBlock();
  for (auto it = s.b.getInsertionPoint(); it != block->begin();) {
    Operation *prev = &*--it;
    if (isa<kvgpu::SharedBufferOp, kvgpu::BarrierOp>(prev))
      continue;
    auto copy = dyn_cast<kvgpu::CopyInOp>(prev);
    auto dst =
        copy ? copy.getDst().getDefiningOp<kvgpu::SharedBufferOp>() : nullptr;
    if (!dst || dst.getSlot() || copy.getSwizzledRows() ||
        dst.getType().getRank() != 1 ||
        !dst.getType().getElementType().isInteger(8))
      return nullptr;
    int64_t first = dst.getOffset(),
            end = first + dst.getType().getNumElements();
    auto inside = [&](kvgpu::SharedBufferOp view) {
      auto type = view.getType();
      int64_t bytes = type.getNumElements() * type.getElementTypeBitWidth() / 8;
      return view.getOffset() >= first && view.getOffset() + bytes <= end;
    };
    return llvm::all_of(views, inside) ? copy : nullptr;
  }
  return nullptr;
}

/// Swizzles `copy`'s rows of the record fields `fields` (shared buffers
/// inside its destination, each of `rows` rows of `rowBytes` bytes).
void swizzleRecordRows(kvgpu::CopyInOp copy, ArrayRef<Value> fields,
                       ArrayRef<std::pair<int64_t, int64_t>> shapes) {
  int64_t base =
      copy.getDst().getDefiningOp<kvgpu::SharedBufferOp>().getOffset();
  SmallVector<int64_t> regions;
  for (auto [field, shape] : llvm::zip(fields, shapes)) {
    int64_t at =
        field.getDefiningOp<kvgpu::SharedBufferOp>().getOffset() - base;
    auto [rows, rowBytes] = shape;
    regions.append({at, at + rows * rowBytes, rowBytes});
  }
  copy.setSwizzledRows(regions);
}

/// The step as one kvgpu.attend_record when K and V are both a record's
/// staged codes, `valid` is uniform, there is no `from` and the shape has a
/// register layout (RecordAttendLayout); false otherwise, having emitted
/// nothing.
bool lowerAttendOnRecord(TileLowering &s, AttendOp op,
                         const std::optional<AffineDequant> &kq,
                         const std::optional<AffineDequant> &vq, bool perWarp) {
  TileType qType = op.getQ().getType();
  int64_t H = qType.getDim(0), D = qType.getDim(1);
  int64_t G = op.getK().getType().getDim(0);
  const TileView &valid = s.view(op.getValid());
  if (!kq || !kq->packed() || kq->packedTransposed || !vq || !vq->packed() ||
      vq->packedTransposed || vq->transposed || !valid.splat || op.getFrom() ||
      op.getQRope())
    return false;
  auto kType = cast<MemRefType>(kq->packed().getType()),
       vType = cast<MemRefType>(vq->packed().getType());
  if (kType.getDimSize(0) != D || kType.getDimSize(1) * 8 != G * kq->bits ||
      vType.getDimSize(0) != G || vType.getDimSize(1) * 8 != D * vq->bits)
    return false;
  std::optional<kvgpu::RecordAttendLayout> layout =
      kvgpu::getRecordAttendLayout(H, D, G, kq->bits, vq->bits,
                                   s.numWarps * kvgpu::kWarpSize, perWarp);
  if (!layout)
    return false;
  Location loc = op.getLoc();
  Type f32 = s.b.getF32Type();
  auto [q, m, l, acc, newState] = registerState(s, op, perWarp);
  SmallVector<Value> scales;
  for (const TileView *v :
       {&kq->scale, &kq->zero, &kq->other, &vq->scale, &vq->zero, &vq->other})
    scales.push_back(scaleBuffer(s, loc, *v));
  Value count = valid.splat;
  if (!count.getType().isInteger(32))
    count = arith::IndexCastOp::create(s.b, loc, s.b.getI32Type(), count);
  // The keys' rows stored swizzled by the record's copy where nothing else
  // reads them and the lowering reads them by ldmatrix (16-bit pieces: its
  // eight rows at one chunk then hit distinct banks, not four rows one
  // bank; the values' word loads meet two-way conflicts that a swizzle
  // would trade for three more registers a lane). Only with 4 warps and
  // 2-bit values: the copy's second loop costs registers, and where the
  // kernel had none to spare the spills cost more than the conflicts
  // (H100, 8 x 32K: kvarn_k4v2_g128 129.0 us against 133.6, head_dim 256
  // 301.6 against 330.2; kvarn_k4v4_g128 203.8 against 151.0, 152 bytes
  // spilled; kvarn_k4v2_g64, 2 warps, 150.0 against 142.2).
  UnitAttr swizzled;
  int64_t kRowBytes = G * kq->bits / 8;
  if (layout->keyMatrices && layout->warps == 4 && vq->bits == 2 &&
      kvgpu::isSwizzledRowBytes(kRowBytes))
    if (kvgpu::CopyInOp copy =
            recordCopyToSwizzle(s, op, {kq->packed()}, kq->packedView)) {
      swizzleRecordRows(copy, {kq->packed()}, {{D, kRowBytes}});
      swizzled = s.b.getUnitAttr();
    }
  ScratchBuffers scratch(s);
  Value buffer = scratch.get(loc, {layout->scratchFloats}, f32);
  auto [newM, newL, newAcc] = newState;
  kvgpu::AttendRecordOp::create(
      s.b, loc, q, kq->packed(), scales[0], scales[1], scales[2], vq->packed(),
      scales[3], scales[4], scales[5], m, l, acc, count,
      s.lookup(op.getScale()), newM.buffer, newL.buffer, newAcc.buffer, buffer,
      s.b.getI32IntegerAttr(int32_t(kq->bits)),
      s.b.getI32IntegerAttr(int32_t(vq->bits)),
      perWarp ? s.b.getUnitAttr() : UnitAttr(), swizzled);
  publishNewState(s, op, newM, newL, newAcc);
  return true;
}

/// `v`'s staged f16 buffer when the tile is one read as f32 ([T, D] rows in
/// order: a pool block's chunk), or nothing.
Value stagedF16Rows(const TileView &v) {
  if (v.type.getRank() != 2 || !v.readsInOrder() || v.conversions.size() != 1 ||
      !v.conversions[0].isF32())
    return Value();
  auto type = cast<MemRefType>(v.buffer.getType());
  if (!type.getElementType().isF16() ||
      type.getNumElements() != v.type.getNumElements())
    return Value();
  return v.buffer;
}

/// The step as one kvgpu.attend_rows when K and V are fp16 rows staged in
/// shared memory, `valid` and `from` (if any) are uniform and the shape
/// has a register layout (RowsAttendLayout); false otherwise, having
/// emitted nothing.
bool lowerAttendOnRows(TileLowering &s, AttendOp op, bool perWarp) {
  TileType qType = op.getQ().getType();
  int64_t H = qType.getDim(0), D = qType.getDim(1);
  int64_t T = op.getK().getType().getDim(0);
  const TileView &valid = s.view(op.getValid());
  const TileView *from = op.getFrom() ? &s.view(op.getFrom()) : nullptr;
  Value keys = stagedF16Rows(s.view(op.getK())),
        values = stagedF16Rows(s.view(op.getV()));
  if (!keys || !values || !valid.splat || (from && !from->splat) ||
      op.getQRope())
    return false;
  std::optional<kvgpu::RowsAttendLayout> layout = kvgpu::getRowsAttendLayout(
      H, D, T, s.numWarps * kvgpu::kWarpSize, perWarp);
  if (!layout)
    return false;
  Location loc = op.getLoc();
  Type f32 = s.b.getF32Type();
  auto [q, m, l, acc, newState] = registerState(s, op, perWarp);
  auto asI32 = [&](Value x) -> Value {
    if (x.getType().isInteger(32))
      return x;
    return arith::IndexCastOp::create(s.b, loc, s.b.getI32Type(), x);
  };
  Value first = from
                    ? asI32(from->splat)
                    : arith::ConstantIntOp::create(s.b, loc, 0, 32).getResult();
  Value count = asI32(valid.splat);
  ScratchBuffers scratch(s);
  Value buffer = scratch.get(loc, {layout->scratchFloats}, f32);
  auto [newM, newL, newAcc] = newState;
  kvgpu::AttendRowsOp::create(s.b, loc, q, keys, values, m, l, acc, first,
                              count, s.lookup(op.getScale()), newM.buffer,
                              newL.buffer, newAcc.buffer, buffer,
                              perWarp ? s.b.getUnitAttr() : UnitAttr());
  publishNewState(s, op, newM, newL, newAcc);
  return true;
}

/// The step as one kvgpu.attend_latent when K and V are one MLA record's
/// latent (the same dequantized tile: token-major codes staged in shared
/// memory, quantized per channel), the rope keys are fp16 rows staged with
/// it, `valid` is uniform, there is no `from` and the shape has a register
/// layout (LatentAttendLayout); false otherwise, having emitted nothing.
bool lowerAttendOnLatent(TileLowering &s, AttendOp op,
                         const std::optional<AffineDequant> &kq) {
  if (!op.getQRope() || op.getFrom() || op.getK() != op.getV() || !kq ||
      !kq->packed() || !kq->packedTransposed)
    return false;
  TileType qType = op.getQ().getType();
  int64_t H = qType.getDim(0), R = qType.getDim(1);
  int64_t E = op.getQRope().getType().getDim(1);
  int64_t G = op.getK().getType().getDim(0);
  const TileView &valid = s.view(op.getValid());
  Value rope = stagedF16Rows(s.view(op.getKRope()));
  auto codes = cast<MemRefType>(kq->packed().getType());
  if (!valid.splat || !rope || codes.getDimSize(0) != G ||
      codes.getDimSize(1) * 8 != R * kq->bits)
    return false;
  std::optional<kvgpu::LatentAttendLayout> layout =
      kvgpu::getLatentAttendLayout(H, R, E, G, kq->bits,
                                   s.numWarps * kvgpu::kWarpSize);
  if (!layout)
    return false;
  Location loc = op.getLoc();
  Type f32 = s.b.getF32Type();
  auto [q, m, l, acc] = stateBuffers(s, op);
  // q_rope as the op reads it (the staged activations, widened as read),
  // else an f32 copy, freed after the step.
  const TileView &qRopeView = s.view(op.getQRope());
  TileView qRope = qRopeView;
  if (Value plain = plainScaleBuffer(qRopeView))
    qRope.buffer = plain;
  else
    qRope = s.materialize(loc, qRopeView, f32);
  auto [newM, newL, newAcc] = newStateViews(s, op, m, l, acc);
  Value scale = scaleBuffer(s, loc, kq->scale),
        zero = scaleBuffer(s, loc, kq->zero),
        tokenScale = scaleBuffer(s, loc, kq->other);
  Value count = valid.splat;
  if (!count.getType().isInteger(32))
    count = arith::IndexCastOp::create(s.b, loc, s.b.getI32Type(), count);
  // The codes' and rope keys' rows stored swizzled by the record's copy
  // where nothing else reads them (their reads then hit distinct banks).
  UnitAttr swizzled;
  int64_t codeRowBytes = R * kq->bits / 8, ropeRowBytes = E * 2;
  if (codeRowBytes % 128 == 0 && ropeRowBytes % 128 == 0)
    if (kvgpu::CopyInOp copy = recordCopyToSwizzle(s, op, {kq->packed(), rope},
                                                   s.view(op.getKRope()))) {
      swizzleRecordRows(copy, {kq->packed(), rope},
                        {{G, codeRowBytes}, {G, ropeRowBytes}});
      swizzled = s.b.getUnitAttr();
    }
  ScratchBuffers scratch(s);
  Value buffer = scratch.get(loc, {layout->scratchFloats}, f32);
  kvgpu::AttendLatentOp::create(
      s.b, loc, q, qRope.buffer, kq->packed(), scale, zero, tokenScale, rope, m,
      l, acc, count, s.lookup(op.getScale()), newM.buffer, newL.buffer,
      newAcc.buffer, buffer, s.b.getI32IntegerAttr(int32_t(kq->bits)),
      swizzled);
  if (qRope.buffer != qRopeView.buffer)
    s.planner.release(qRope.bufferId);
  publishNewState(s, op, newM, newL, newAcc);
  return true;
}

/// Online softmax over one block (with MLA's rope term, when given, added
/// to every score). When K or V is read from a record
/// (dequantized codes), the scales are folded out of the dot products
/// (docs/design.md, "Speed"):
///   q . k[t] = kouter[t] (sum_d (q[d] kscale[d]) code[d, t]
///                         + sum_d q[d] kzero[d])
///   sum_t p[t] v[t, d] = vouter[d] (sum_t (p[t] vscale[t]) code[t, d]
///                                   + sum_t p[t] vzero[t])
/// or, V quantized per channel (the transpose of a dequantized [D, G]:
/// MLA's latent),
///   sum_t p[t] v[t, d] = vscale[d] sum_t (p[t] vouter[t]) code[d, t]
///                        + vzero[d] sum_t p[t] vouter[t]
/// so the inner loops multiply raw codes, and the per-channel and per-token
/// terms are computed once per block.
LogicalResult lowerWholeAttend(TileLowering &s, AttendOp op,
                               const std::optional<AffineDequant> &kq,
                               const std::optional<AffineDequant> &vq);

/// kvt.attend: on a register lowering where one applies, with the state
/// whole or held per warp (findWarpStates); otherwise by lowerWholeAttend
/// on whole states, a state held per warp merged before it and spread
/// after it.
LogicalResult lowerAttend(TileLowering &s, Operation *raw) {
  auto op = cast<AttendOp>(raw);
  Location loc = op.getLoc();
  std::array<Value, 3> olds = {op.getM(), op.getL(), op.getAcc()};
  std::array<Value, 3> news = {op.getNewM(), op.getNewL(), op.getNewAcc()};
  bool perWarp = s.warpStates.lookup(op.getNewM()) != StateRole::None;
  bool heldIn = s.view(op.getM()).warpState != StateRole::None;
  std::optional<AffineDequant> kq =
      matchDequant(s, op.getK(), /*transposed=*/true);
  // V is a dequantized tile, or (MLA's latent, quantized per channel) the
  // transpose of one.
  std::optional<AffineDequant> vq =
      matchDequant(s, op.getV(), /*transposed=*/false);
  if (!vq)
    vq = matchDequant(s, op.getV(), /*transposed=*/true);
  if ((perWarp || !heldIn) && (lowerAttendOnRecord(s, op, kq, vq, perWarp) ||
                               lowerAttendOnRows(s, op, perWarp)))
    return success();
  if (!perWarp && !heldIn && lowerAttendOnLatent(s, op, kq))
    return success();
  std::array<TileView, 3> saved = {s.view(olds[0]), s.view(olds[1]),
                                   s.view(olds[2])};
  SmallVector<int> temps;
  if (heldIn) {
    std::array<TileView, 3> merged =
        mergeWarpStates(s, loc, saved[0], saved[1], saved[2]);
    for (int i = 0; i < 3; ++i) {
      s.tiles[olds[i]] = merged[i];
      temps.push_back(merged[i].bufferId);
    }
  }
  if (failed(lowerWholeAttend(s, op, kq, vq)))
    return failure();
  for (int i = 0; heldIn && i < 3; ++i)
    s.tiles[olds[i]] = saved[i];
  if (perWarp) {
    for (int i = 0; i < 3; ++i) {
      TileView whole = s.view(news[i]);
      TileView held =
          allocateWarpState(s, loc, cast<TileType>(news[i].getType()),
                            s.warpStates.lookup(news[i]));
      s.copyInto(loc, whole, held);
      s.tiles[news[i]] = held;
      // The whole result's own buffers (not an operand's it was written
      // over: that operand's tile still holds it).
      for (int id : whole.buffers())
        if (!llvm::is_contained(temps, id) &&
            llvm::none_of(saved, [&](const TileView &v) {
              return llvm::is_contained(v.buffers(), id);
            }))
          temps.push_back(id);
    }
  }
  // The merged copies and whole results no tile holds any more.
  for (int id : temps) {
    bool used = false;
    for (Value v : news)
      used = used || llvm::is_contained(s.view(v).buffers(), id);
    if (!used)
      s.planner.release(id);
  }
  return success();
}

LogicalResult lowerWholeAttend(TileLowering &s, AttendOp op,
                               const std::optional<AffineDequant> &kq,
                               const std::optional<AffineDequant> &vq) {
  Location loc = op.getLoc();
  TileType qType = op.getQ().getType();
  int64_t H = qType.getDim(0), D = qType.getDim(1);
  int64_t G = op.getK().getType().getDim(0);
  TileView q = s.view(op.getQ()), k = s.view(op.getK()), v = s.view(op.getV()),
           m = s.view(op.getM()), l = s.view(op.getL()),
           acc = s.view(op.getAcc()), valid = s.view(op.getValid());
  Value scale = s.lookup(op.getScale());
  Type f32 = s.b.getF32Type();
  // Scratch is allocated where it is first needed, and what dies inside the
  // step (q . scale, the rope term) is released there: MLA's step then fits
  // two CTAs an SM (a block's record is 51 KB, the heads' q, acc and
  // products 16 KB each).
  ScratchBuffers scratch(s);
  Value scores = scratch.get(loc, {H * G}, f32), blockMax = scratch.get(loc, {H}, f32);
  Value probSum = scratch.get(loc, {H}, f32),
        alpha = scratch.get(loc, {H}, f32);
  // p[h, t] is written over the score it is computed from.
  Value probs = scores;

  // Dot products over a record's packed codes run in registers
  // (kvgpu.packed_matmul, its a operand k-major); others, and the pool's
  // fp16 blocks, through kvgpu.reduce.
  std::optional<PackedOperand> kPacked =
      packedOperand(s, kq, H, D, G, /*kIsRow=*/true);
  // V per channel: the tokens (K) are the dequantized tile's columns.
  bool vPerChannel = vq && vq->transposed;
  std::optional<PackedOperand> vPacked =
      packedOperand(s, vq, H, G, D, /*kIsRow=*/!vPerChannel);
  // MLA's rope keys, fp16 rows [G, E] staged in shared memory, as
  // packed_matmul's transposed f16 operand.
  Value ropeRows;
  std::optional<kvgpu::PackedMatmulLayout> ropePacked;
  if (op.getQRope()) {
    int64_t E = op.getQRope().getType().getDim(1);
    ropeRows = stagedF16Rows(s.view(op.getKRope()));
    if (ropeRows)
      ropePacked = kvgpu::getPackedMatmulLayout(
          H, E, G, 16, s.numWarps * kvgpu::kWarpSize, /*transposed=*/true);
  }
  // One partials buffer for all: the products run one after another.
  int64_t partialFloats = 1;
  for (const auto &operand : {kPacked, vPacked})
    if (operand)
      partialFloats = std::max(partialFloats, operand->layout.scratchFloats);
  if (ropePacked)
    partialFloats = std::max(partialFloats, ropePacked->scratchFloats);
  Value partials = kPacked || vPacked || ropePacked
                       ? scratch.get(loc, {partialFloats}, f32)
                       : Value();
  Value kScaledQ, kZeroDot; // q[h, d] * kscale[d]; sum_d q[h, d] * kzero[d]
  std::optional<ScratchBuffers> kScaledQScratch; // until the scores are done
  // MLA's scores (token-major codes: packed_matmul's transposed operand)
  // read q as it is, scaled by kscale in the op, where both are plain
  // buffers: no q . kscale copy ([H, D] f32, 16 KB at 8 heads) and no pass
  // writing it (measured: docs/benchmarks.md). Dense records' sliding-window
  // steps keep the copy: there ptxas spilled more in some shapes without
  // it (sm_90 D 192 decode: 196 bytes, from 116), not measured.
  Value qBuffer, kScale;
  if (kPacked && kPacked->transposed && (kScale = plainScaleBuffer(kq->scale)))
    qBuffer = flatF32Buffer(s, loc, q);
  if (kq && !qBuffer) // allocated first, as before qBuffer (dense kernels)
    kScaledQ = kScaledQScratch.emplace(s).get(loc, {H * D}, f32);
  if (kq) {
    kZeroDot = scratch.get(loc, {H}, f32);
    if (kScaledQ) {
      s.foreach(loc, {H, D}, [&](OpBuilder &b, ValueRange i) {
        Value x = arith::MulFOp::create(
            b, loc, s.read(b, loc, q, i),
            widenToF32(b, loc, s.read(b, loc, kq->scale, {i[1]})));
        store(b, loc, x, kScaledQ,
              {kPacked ? flatIndex(b, loc, i[1], i[0], H)
                       : flatIndex(b, loc, i[0], i[1], D)});
      });
    }
    s.reduce(loc, ReduceKind::Add, H, D, kZeroDot,
             [&](OpBuilder &b, Value h, Value d) {
               return arith::MulFOp::create(
                          b, loc, s.read(b, loc, q, {h, d}),
                          widenToF32(b, loc, s.read(b, loc, kq->zero, {d})))
                   .getResult();
             });
  }
  // scores[h, t] = q[h] . k[t] (on raw codes when K is quantized)
  if (qBuffer)
    emitPackedMatmul(s, loc, qBuffer, *kq, *kPacked, scores, partials, kScale,
                     /*headMajorA=*/true);
  else if (kPacked)
    emitPackedMatmul(s, loc, kScaledQ, *kq, *kPacked, scores, partials);
  else
    s.reduce(loc, ReduceKind::Add, H * G, D, scores,
           [&](OpBuilder &b, Value r, Value d) {
             auto [h, t] = split(b, loc, r, G);
             if (kq)
               return arith::MulFOp::create(
                          b, loc, load(b, loc, kScaledQ, {flatIndex(b, loc, h, d, D)}),
                          widenToF32(b, loc, s.read(b, loc, kq->codes, {d, t})))
                   .getResult();
             return arith::MulFOp::create(b, loc, s.read(b, loc, q, {h, d}),
                                          s.read(b, loc, k, {t, d}))
                 .getResult();
           });
  kScaledQScratch.reset();
  // ropeScores[h, t] = q_rope[h] . k_rope[t] (MLA's second term), read until
  // the probabilities are computed.
  Value ropeScores;
  std::optional<ScratchBuffers> ropeScratch;
  if (op.getQRope()) {
    int64_t E = op.getQRope().getType().getDim(1);
    TileView qRope = s.view(op.getQRope()), kRope = s.view(op.getKRope());
    ropeScores = ropeScratch.emplace(s).get(loc, {H * G}, f32);
    if (ropePacked) {
      // a = q_rope k-major [E, H] (q_rope is a view converting the
      // activations, not a plain f32 buffer head_major could read); out
      // [H, G] as ropeScores.
      ScratchBuffers aScratch(s);
      Value a = aScratch.get(loc, {E * H}, f32);
      s.foreach(loc, {H, E}, [&](OpBuilder &b, ValueRange i) {
        store(b, loc, s.read(b, loc, qRope, i), a,
              {flatIndex(b, loc, i[1], i[0], H)});
      });
      kvgpu::PackedMatmulOp::create(s.b, loc, a, ropeRows, ropeScores, partials,
                                    /*aScale=*/Value(),
                                    s.b.getI32IntegerAttr(16),
                                    s.b.getUnitAttr(), UnitAttr());
      s.barrier(loc);
    } else {
      s.reduce(loc, ReduceKind::Add, H * G, E, ropeScores,
               [&](OpBuilder &b, Value r, Value e) {
                 auto [h, t] = split(b, loc, r, G);
                 return arith::MulFOp::create(b, loc,
                                              s.read(b, loc, qRope, {h, e}),
                                              s.read(b, loc, kRope, {t, e}))
                     .getResult();
               });
    }
  }
  std::optional<TileView> from;
  if (op.getFrom())
    from = s.view(op.getFrom());
  // The scaled score of (h, t), or -inf for tokens past valid[h] (or before
  // from[h]).
  auto scaled = [&](OpBuilder &b, Value h, Value t) -> Value {
    Value hg = flatIndex(b, loc, h, t, G);
    Value dot = load(b, loc, scores, hg);
    if (kq)
      dot = arith::MulFOp::create(
          b, loc, arith::AddFOp::create(b, loc, dot, load(b, loc, kZeroDot, {h})),
          widenToF32(b, loc, s.read(b, loc, kq->other, {t})));
    if (ropeScores)
      dot = arith::AddFOp::create(b, loc, dot, load(b, loc, ropeScores, hg));
    Value x = arith::MulFOp::create(b, loc, dot, scale);
    Value limit = arith::IndexCastOp::create(b, loc, b.getIndexType(),
                                             s.read(b, loc, valid, {h}));
    Value in = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, t, limit);
    if (from) {
      Value first = arith::IndexCastOp::create(b, loc, b.getIndexType(),
                                               s.read(b, loc, *from, {h}));
      in = arith::AndIOp::create(
          b, loc, in,
          arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge, t, first));
    }
    return arith::SelectOp::create(b, loc, in, x, cst(b, loc, kNegInf));
  };
  s.reduce(loc, ReduceKind::Max, H, G, blockMax, scaled);

  // Each element of the new state is computed from the same element of the
  // old one, by the same thread: written over it where nothing reads the
  // old state afterwards.
  auto [newM, newL, newAcc] = newStateViews(
      s, op, plainF32Buffer(m), plainF32Buffer(l), plainF32Buffer(acc));
  s.foreach(loc, {H}, [&](OpBuilder &b, ValueRange i) {
    Value old = s.read(b, loc, m, i);
    Value mx = arith::MaximumFOp::create(b, loc, old, load(b, loc, blockMax, i));
    store(b, loc, mx, newM.buffer, i);
    // exp(m - m') rescales the old state; nothing to rescale from -inf.
    Value a = arith::SelectOp::create(
        b, loc, isNegInf(b, loc, old), cst(b, loc, 0.0f),
        emitExp(b, loc, arith::SubFOp::create(b, loc, old, mx)));
    store(b, loc, a, alpha, i);
  });
  // p[h, t] * vscale[t] (per channel: p[h, t] * vouter[t]), the weighted
  // values' a: for MLA's latent (V per channel) scaled by their
  // packed_matmul as it reads p where the scale is a plain buffer (p is:
  // [H, G] f32), else written here (as for the scores' q . kscale).
  const TileView *vTokenScale =
      vq ? (vPerChannel ? &vq->other : &vq->scale) : nullptr;
  Value vScale =
      vPacked && vPerChannel ? plainScaleBuffer(*vTokenScale) : Value();
  Value vScaledProbs = vq && !vScale ? scratch.get(loc, {H * G}, f32) : Value();
  s.foreach(loc, {H, G}, [&](OpBuilder &b, ValueRange i) {
    Value mx = load(b, loc, newM.buffer, {i[0]});
    Value x = scaled(b, i[0], i[1]);
    Value p = arith::SelectOp::create(
        b, loc,
        arith::OrIOp::create(b, loc, isNegInf(b, loc, x), isNegInf(b, loc, mx)),
        cst(b, loc, 0.0f), emitExp(b, loc, arith::SubFOp::create(b, loc, x, mx)));
    Value hg = flatIndex(b, loc, i[0], i[1], G);
    store(b, loc, p, probs, {hg});
    if (vScaledProbs)
      store(b, loc,
            arith::MulFOp::create(
                b, loc, p,
                widenToF32(b, loc, s.read(b, loc, *vTokenScale, {i[1]}))),
            vScaledProbs, {vPacked ? flatIndex(b, loc, i[1], i[0], H) : hg});
  });
  ropeScratch.reset();
  auto prob = [&](OpBuilder &b, Value h, Value t) -> Value {
    Value hg = flatIndex(b, loc, h, t, G);
    return load(b, loc, probs, {hg});
  };
  s.reduce(loc, ReduceKind::Add, H, G, probSum, prob);
  // sum_t p[h, t] * vzero[t] (per channel: sum_t p[h, t] * vouter[t])
  Value vZeroDot;
  if (vq) {
    vZeroDot = scratch.get(loc, {H}, f32);
    s.reduce(loc, ReduceKind::Add, H, G, vZeroDot,
             [&](OpBuilder &b, Value h, Value t) {
               return arith::MulFOp::create(
                          b, loc, prob(b, h, t),
                          widenToF32(b, loc,
                                     s.read(b, loc,
                                            vPerChannel ? vq->other : vq->zero,
                                            {t})))
                   .getResult();
             });
  }
  // weighted[h, d] = sum_t p[h, t] v[t, d] (on raw codes when V is quantized)
  Value weighted = ropeRows ? overDeadRows(s, op, ropeRows, H * D) : Value();
  if (!weighted)
    weighted = scratch.get(loc, {H * D}, f32);
  if (vPacked)
    emitPackedMatmul(s, loc, vScale ? probs : vScaledProbs, *vq, *vPacked,
                     weighted, partials, vScale, /*headMajorA=*/bool(vScale));
  else
    s.reduce(loc, ReduceKind::Add, H * D, G, weighted,
           [&](OpBuilder &b, Value r, Value t) {
             auto [h, d] = split(b, loc, r, D);
             if (vq) {
               SmallVector<Value, 2> at = {t, d};
               if (vPerChannel)
                 std::swap(at[0], at[1]);
               return arith::MulFOp::create(
                          b, loc,
                          load(b, loc, vScaledProbs,
                               {flatIndex(b, loc, h, t, G)}),
                          widenToF32(b, loc, s.read(b, loc, vq->codes, at)))
                   .getResult();
             }
             // A masked token (probability 0) contributes nothing, even
             // where its row holds NaN (a pool block's rows past its tail
             // are whatever the slot held): 0 * NaN would be NaN.
             Value p = prob(b, h, t);
             Value term =
                 arith::MulFOp::create(b, loc, p, s.read(b, loc, v, {t, d}));
             Value masked = arith::CmpFOp::create(
                 b, loc, arith::CmpFPredicate::OEQ, p, cst(b, loc, 0.0f));
             return arith::SelectOp::create(b, loc, masked, cst(b, loc, 0.0f),
                                            term)
                 .getResult();
           });
  s.foreach(loc, {H}, [&](OpBuilder &b, ValueRange i) {
    Value x = arith::MulFOp::create(b, loc, load(b, loc, alpha, i),
                                    s.read(b, loc, l, i));
    store(b, loc, arith::AddFOp::create(b, loc, x, load(b, loc, probSum, i)),
          newL.buffer, i);
  });
  s.foreach(loc, {H, D}, [&](OpBuilder &b, ValueRange i) {
    Value x = arith::MulFOp::create(b, loc, load(b, loc, alpha, {i[0]}),
                                    s.read(b, loc, acc, i));
    Value hd = flatIndex(b, loc, i[0], i[1], D);
    Value w = load(b, loc, weighted, {hd});
    Value zeroDot = vq ? load(b, loc, vZeroDot, {i[0]}) : Value();
    auto channel = [&](const TileView &v) {
      return widenToF32(b, loc, s.read(b, loc, v, {i[1]}));
    };
    if (vPerChannel)
      w = arith::AddFOp::create(
          b, loc, arith::MulFOp::create(b, loc, w, channel(vq->scale)),
          arith::MulFOp::create(b, loc, zeroDot, channel(vq->zero)));
    else if (vq)
      w = arith::MulFOp::create(b, loc,
                                arith::AddFOp::create(b, loc, w, zeroDot),
                                channel(vq->other));
    store(b, loc, arith::AddFOp::create(b, loc, x, w), newAcc.buffer, i);
  });
  s.tiles[op.getNewM()] = newM;
  s.tiles[op.getNewL()] = newL;
  s.tiles[op.getNewAcc()] = newAcc;
  return success();
}

/// out = acc / l and lse = m + log(l); rows that saw nothing: 0 and -inf.
LogicalResult lowerAttendFinish(TileLowering &s, Operation *raw) {
  auto op = cast<AttendFinishOp>(raw);
  Location loc = op.getLoc();
  TileView m = s.view(op.getM()), l = s.view(op.getL()),
           acc = s.view(op.getAcc());
  // A state held per warp: its copies merged once, here.
  ScratchBuffers merged(s);
  if (m.warpState != StateRole::None) {
    std::array<TileView, 3> whole = mergeWarpStates(s, loc, m, l, acc);
    m = whole[0];
    l = whole[1];
    acc = whole[2];
    for (const TileView &v : whole)
      merged.ids.push_back(v.bufferId);
  }
  TileView out = s.allocate(loc, op.getOut().getType());
  TileView lse = s.allocate(loc, op.getLse().getType());
  auto empty = [&](OpBuilder &b, Value sum) {
    return arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLE, sum,
                                 cst(b, loc, 0.0f));
  };
  s.foreach(loc, op.getAcc().getType().getShape(),
            [&](OpBuilder &b, ValueRange i) {
              Value sum = s.read(b, loc, l, {i[0]});
              Value x = arith::DivFOp::create(b, loc, s.read(b, loc, acc, i), sum);
              store(b, loc,
                    arith::SelectOp::create(b, loc, empty(b, sum),
                                            cst(b, loc, 0.0f), x),
                    out.buffer, i);
            });
  s.foreach(loc, op.getM().getType().getShape(), [&](OpBuilder &b, ValueRange i) {
    Value sum = s.read(b, loc, l, i);
    Value x = arith::AddFOp::create(b, loc, s.read(b, loc, m, i),
                                    emitLog(b, loc, sum));
    store(b, loc,
          arith::SelectOp::create(b, loc, empty(b, sum), cst(b, loc, kNegInf), x),
          lse.buffer, i);
  });
  s.tiles[op.getOut()] = out;
  s.tiles[op.getLse()] = lse;
  return success();
}

/// Loads a thread of combine has in flight at once: the log-sum-exps and
/// partials of kMergeLoadsInFlight / channels splits (all of MAX_SPLITS for
/// a dense head, whose thread takes one channel).
constexpr int64_t kMergeLoadsInFlight = 64;

/// out[h] = sum_s w[s, h] parts[s, h] / sum_s w[s, h], w = exp(lse - max),
/// over the first `count` splits.
///
/// One pass, one thread an output element (consecutive threads consecutive
/// channels: a warp's loads of one split are one contiguous row). A step
/// reads U splits' log-sum-exps and partials from global memory (neither is
/// staged: lowerLoadTile), every load unconditional, the split index
/// clamped to the last counted split and its log-sum-exp made -inf past it
/// (an uncounted split's row was never written and may hold anything, NaN
/// included), so that the step's loads are in flight together: one memory
/// round trip for up to U = kMergeLoadsInFlight / channels splits. Steps
/// meet as online softmax does (the running max, the earlier sums scaled by
/// exp(max - new max)); with one step, as at every dense head, that is
/// exp(lse - max) of the whole set. Before, the log-sum-exps were staged
/// (a round trip and a barrier) and the partials read 16 splits a step:
/// five round trips at 64 splits.
LogicalResult lowerMerge(TileLowering &s, Operation *raw) {
  auto op = cast<MergeOp>(raw);
  Location loc = op.getLoc();
  TileType partsType = op.getParts().getType();
  int64_t S = partsType.getDim(0), H = partsType.getDim(1),
          D = partsType.getDim(2);
  TileView parts = s.view(op.getParts()), lses = s.view(op.getLses());
  Value count = arith::IndexCastOp::create(s.b, loc, s.b.getIndexType(),
                                           s.lookup(op.getCount()));
  Value lastSplit = arith::MaxSIOp::create(
      s.b, loc, arith::SubIOp::create(s.b, loc, count, s.index(s.b, loc, 1)),
      s.index(s.b, loc, 0));
  TileView out = s.allocate(loc, op.getResult().getType());
  // Channels a thread takes (C apart, so that a warp's loads stay rows):
  // every output element in one pass of the CTA's threads, the loads of all
  // of a thread's channels in one step (MLA's combine: R 512 over 256
  // threads), not one loop after the other.
  int64_t perThread = 1;
  while (H * D / perThread > s.numWarps * kvgpu::kWarpSize &&
         D % (2 * perThread) == 0)
    perThread *= 2;
  const int64_t C = D / perThread;
  const int64_t U =
      std::min(S, std::max<int64_t>(1, kMergeLoadsInFlight / perThread));
  s.foreach(loc, {H, C}, [&](OpBuilder &b, ValueRange i) {
    Value h = i[0];
    SmallVector<Value> channels;
    for (int64_t k = 0; k < perThread; ++k)
      channels.push_back(
          k ? arith::AddIOp::create(b, loc, i[1], s.index(b, loc, k * C))
                  .getResult()
            : i[1]);
    Value zero = cst(b, loc, 0.0f), negInf = cst(b, loc, kNegInf);
    // Carried: the running max, the weight sum, a weighted sum a channel.
    SmallVector<Value> inits(perThread + 2, zero);
    inits[0] = negInf;
    auto loop = scf::ForOp::create(
        b, loc, s.index(b, loc, 0), count, s.index(b, loc, U), inits,
        [&](OpBuilder &lb, Location, Value first, ValueRange acc) {
          SmallVector<Value> lse(U), x(U * perThread);
          for (int64_t u = 0; u < U; ++u) {
            Value sIdx =
                arith::AddIOp::create(lb, loc, first, s.index(lb, loc, u));
            Value past = arith::CmpIOp::create(
                lb, loc, arith::CmpIPredicate::uge, sIdx, count);
            Value at = arith::MinUIOp::create(lb, loc, sIdx, lastSplit);
            lse[u] = arith::SelectOp::create(lb, loc, past, negInf,
                                             s.read(lb, loc, lses, {at, h}));
            for (int64_t k = 0; k < perThread; ++k)
              x[u * perThread + k] =
                  s.read(lb, loc, parts, {at, h, channels[k]});
          }
          auto maxOf = [&](Value a, Value c) -> Value {
            return arith::MaximumFOp::create(lb, loc, a, c);
          };
          auto sumOf = [&](Value a, Value c) -> Value {
            return arith::AddFOp::create(lb, loc, a, c);
          };
          Value m = acc[0];
          Value mx = maxOf(m, codegen::pairwiseTree(lse, maxOf));
          // Weights are 0 where there is nothing yet (m, or lse, -inf); an
          // lse that is finite makes mx finite.
          Value scale = arith::SelectOp::create(
              lb, loc, isNegInf(lb, loc, m), zero,
              emitExp(lb, loc, arith::SubFOp::create(lb, loc, m, mx)));
          SmallVector<Value> w(U);
          SmallVector<SmallVector<Value>> terms(perThread);
          for (int64_t u = 0; u < U; ++u) {
            Value none = isNegInf(lb, loc, lse[u]);
            w[u] = arith::SelectOp::create(
                lb, loc, none, zero,
                emitExp(lb, loc, arith::SubFOp::create(lb, loc, lse[u], mx)));
            for (int64_t k = 0; k < perThread; ++k)
              terms[k].push_back(arith::SelectOp::create(
                  lb, loc, none, zero,
                  arith::MulFOp::create(lb, loc, w[u], x[u * perThread + k])));
          }
          auto rescaled = [&](Value old, ArrayRef<Value> add) -> Value {
            return arith::AddFOp::create(
                lb, loc, arith::MulFOp::create(lb, loc, old, scale),
                codegen::pairwiseTree(add, sumOf));
          };
          SmallVector<Value> next{mx, rescaled(acc[1], w)};
          for (int64_t k = 0; k < perThread; ++k)
            next.push_back(rescaled(acc[2 + k], terms[k]));
          scf::YieldOp::create(lb, loc, next);
        });
    Value den = loop.getResult(1);
    Value emptyRow =
        arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OLE, den, zero);
    for (int64_t k = 0; k < perThread; ++k)
      store(b, loc,
            arith::SelectOp::create(
                b, loc, emptyRow, zero,
                arith::DivFOp::create(b, loc, loop.getResult(2 + k), den)),
            out.buffer, {h, channels[k]});
  });
  s.tiles[op.getResult()] = out;
  return success();
}

} // namespace

void kvarn::kvt::registerAttendOpLowerings(
    llvm::DenseMap<OperationName, OpLowering> &table, MLIRContext *ctx) {
  table[OperationName(AttendOp::getOperationName(), ctx)] = lowerAttend;
  table[OperationName(AttendFinishOp::getOperationName(), ctx)] = lowerAttendFinish;
  table[OperationName(MergeOp::getOperationName(), ctx)] = lowerMerge;
}

std::optional<DequantChain> kvarn::kvt::matchDequantChain(Value tile,
                                                          bool transposed) {
  if (transposed) {
    auto t = tile.getDefiningOp<TransposeOp>();
    if (!t)
      return std::nullopt;
    tile = t.getInput();
  }
  auto dq = tile.getDefiningOp<DequantizeOp>();
  if (!dq)
    return std::nullopt;
  return DequantChain{dq, dq.getCodes().getDefiningOp<UnpackOp>()};
}
