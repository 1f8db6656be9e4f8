//===- TileOps.cpp - kvt ops: memory, layout, KVarN primitives ------------===//
//
// The primitives call the CPU reference: Rotation for kvt.rotate, sinkhorn
// (its scales) for kvt.normalize, quantizeTileWithScales,
// dequantizeTile, packCodes/unpackCodes, attendBlock, finishAttention and
// mergePartials. Record fields use the layout of the kernel's kvt.spec
// through kvt::getFieldOffset / getFieldType.
//
//===----------------------------------------------------------------------===//

#include "Interpreter.h"

#include "kvarn/Dialect/KVT/KVT.h"
#include "kvarn/Reference/OnlineSoftmax.h"
#include "kvarn/Reference/Quantizer.h"
#include "kvarn/Support/Fp8.h"
#include "kvarn/Support/Half.h"
#include "kvarn/Support/SplitPlan.h"

#include "llvm/ADT/TypeSwitch.h"

#include <cmath>
#include <cstring>

using namespace mlir;
using namespace kvarn;
using namespace kvarn::eval;

static std::shared_ptr<Tile> newTile(Type type) {
  auto tileType = cast<kvt::TileType>(type);
  auto t = std::make_shared<Tile>();
  t->shape.assign(tileType.getShape().begin(), tileType.getShape().end());
  t->elementType = tileType.getElementType();
  t->data.assign(size_t(tileType.getNumElements()), 0.0);
  return t;
}

/// Calls `fn(linearIndex, memoryOffset)` for each element of a strided tile.
template <typename Fn>
static void forEachStrided(llvm::ArrayRef<int64_t> shape, int64_t offset,
                           llvm::ArrayRef<int64_t> strides, Fn fn) {
  llvm::SmallVector<int64_t, 3> idx(shape.size(), 0);
  int64_t total = 1;
  for (int64_t d : shape)
    total *= d;
  for (int64_t linear = 0; linear < total; ++linear) {
    int64_t at = offset;
    for (size_t d = 0; d < shape.size(); ++d)
      at += idx[d] * strides[d];
    fn(linear, at);
    for (size_t d = shape.size(); d-- > 0;) {
      if (++idx[d] < shape[d])
        break;
      idx[d] = 0;
    }
  }
}

/// The range of memory offsets a strided tile touches (strides may be
/// negative or zero).
static std::pair<int64_t, int64_t> stridedExtent(llvm::ArrayRef<int64_t> shape,
                                                 int64_t offset,
                                                 llvm::ArrayRef<int64_t> strides) {
  int64_t lo = offset, hi = offset;
  for (size_t d = 0; d < shape.size(); ++d) {
    int64_t span = (shape[d] - 1) * strides[d];
    (span < 0 ? lo : hi) += span;
  }
  return {lo, hi};
}

static Matrix toMatrix(const Tile &t) {
  Matrix m(int(t.dim(0)), int(t.dim(1)));
  for (size_t i = 0; i < t.data.size(); ++i)
    m.data[i] = float(t.data[i]);
  return m;
}

static std::vector<float> toFloats(const Tile &t) {
  return std::vector<float>(t.data.begin(), t.data.end());
}

static std::vector<uint16_t> toHalfBits(const Tile &t) {
  std::vector<uint16_t> bits(t.data.size());
  for (size_t i = 0; i < bits.size(); ++i)
    bits[i] = floatToHalf(float(t.data[i]));
  return bits;
}

kvarn::Error Interpreter::executeTileOp(Operation *op, bool &handled) {
  if (!isa<kvt::KVTDialect>(op->getDialect()))
    return kvarn::Error::success();
  handled = true;
  auto tileOf = [&](Value v) -> const Tile & { return *get(v).tile; };
  auto setTile = [&](Value v, std::shared_ptr<Tile> t) {
    set(v, RtValue::ofTile(std::move(t)));
  };
  auto ok = [] { return kvarn::Error::success(); };

  // Record fields: the byte offset and shape of `field` in this kernel's
  // record layout.
  auto fieldAccess = [&](kvt::RecordField field, int64_t recordOffset,
                         const RtValue &cache, Type &type,
                         int64_t &byteOffset) -> kvarn::Error {
    if (!recordFormat)
      return errorAt(op, "the kernel has no kvt.spec, so no record layout");
    if (!kvt::hasField(*recordFormat, field))
      return errorAt(op, "the kernel's records have no field " +
                             kvt::stringifyRecordField(field));
    type = kvt::getStoredFieldType(op->getContext(), *recordFormat, field);
    byteOffset = recordOffset + kvt::getFieldOffset(*recordFormat, field);
    auto tile = cast<kvt::TileType>(type);
    int64_t bytes = tile.getNumElements() * elementBytes(tile.getElementType());
    if (kvarn::Error err = checkAccess(op, cache, byteOffset, bytes))
      return err;
    // An e4m3 field's shared exponent, at the record's end.
    if (kvt::isE4M3Field(*recordFormat, field))
      return checkAccess(op, cache,
                         recordOffset +
                             recordFormat->dense->scaleExponentOffset(
                                 *kvt::getScaleField(field)),
                         1);
    return kvarn::Error::success();
  };
  auto exponentAt = [&](kvt::RecordField field, int64_t recordOffset) {
    return recordOffset +
           recordFormat->dense->scaleExponentOffset(*kvt::getScaleField(field));
  };

  return llvm::TypeSwitch<Operation *, kvarn::Error>(op)
      //===--- Program and memory ---------------------------------------===//
      .Case([&](kvt::ProgramIdOp p) {
        set(p.getResult(), RtValue::ofInt(programId[p.getAxis()]));
        return ok();
      })
      .Case([&](kvt::NumProgramsOp p) {
        set(p.getResult(), RtValue::ofInt(numPrograms[p.getAxis()]));
        return ok();
      })
      .Case([&](kvt::LoadOp l) -> kvarn::Error {
        const RtValue &ptr = get(l.getPtr());
        int64_t index = get(l.getIndex()).i;
        if (kvarn::Error err = checkAccess(op, ptr, index))
          return err;
        const Buffer &b = buffer(ptr.buffer);
        if (b.elementType.isInteger()) {
          // Exactly, i64 included; a scalar i8 is signed, as arith reads it.
          int64_t v = 0;
          std::memcpy(&v, b.data + index * elementBytes(b.elementType),
                      elementBytes(b.elementType));
          set(l.getResult(),
              RtValue::ofInt(wrapInt(v, b.elementType.getIntOrFloatBitWidth())));
        } else {
          set(l.getResult(),
              RtValue::ofFloat(readElement(b.data, b.elementType, index)));
        }
        return ok();
      })
      .Case([&](kvt::SplitPlanOp p) -> kvarn::Error {
        const RtValue &lens = get(p.getSeqLens());
        int64_t batch = get(p.getBatch()).i;
        if (batch > 0)
          if (kvarn::Error err = checkAccess(op, lens, 0, batch))
            return err;
        const Buffer &b = buffer(lens.buffer);
        int32_t window = int32_t(get(p.getWindow()).i);
        int32_t blockTokens = int32_t(p.getBlockTokens());
        SplitPlan plan = splitPlan(
            int32_t(std::max<int64_t>(batch, 0)),
            [&](int32_t r) {
              int32_t len;
              std::memcpy(&len, b.data + size_t(r) * 4, 4);
              return splitPlanBlocks(len, window, blockTokens);
            },
            int32_t(get(p.getProgram()).i), int32_t(get(p.getSlots()).i),
            int32_t(p.getMaxChunks()));
        set(p.getChunkBlocks(), RtValue::ofInt(plan.chunkBlocks));
        set(p.getRequest(), RtValue::ofInt(plan.request));
        set(p.getChunk(), RtValue::ofInt(plan.chunk));
        return ok();
      })
      .Case([&](kvt::StoreOp s) -> kvarn::Error {
        const RtValue &ptr = get(s.getPtr());
        int64_t index = get(s.getIndex()).i;
        if (kvarn::Error err = checkAccess(op, ptr, index))
          return err;
        const Buffer &b = buffer(ptr.buffer);
        const RtValue &v = get(s.getValue());
        if (b.elementType.isInteger())
          std::memcpy(b.data + index * elementBytes(b.elementType), &v.i,
                      elementBytes(b.elementType)); // little-endian host
        else
          writeElement(b.data, b.elementType, index, v.f);
        return ok();
      })
      .Case([&](kvt::LoadTileOp l) -> kvarn::Error {
        const RtValue &ptr = get(l.getPtr());
        auto tile = newTile(l.getResult().getType());
        llvm::SmallVector<int64_t, 3> strides;
        for (Value s : l.getStrides())
          strides.push_back(get(s).i);
        int64_t offset = get(l.getOffset()).i;
        auto [lo, hi] = stridedExtent(tile->shape, offset, strides);
        if (kvarn::Error err = checkAccess(op, ptr, lo, hi - lo + 1))
          return err;
        const Buffer &b = buffer(ptr.buffer);
        forEachStrided(tile->shape, offset, strides, [&](int64_t i, int64_t at) {
          tile->data[i] = readElement(b.data, b.elementType, at);
        });
        setTile(l.getResult(), tile);
        return ok();
      })
      .Case<kvt::LaunchDependentsOp, kvt::GridDependencyWaitOp>(
          // The programs run one after another here: nothing to order.
          [&](Operation *) -> kvarn::Error { return ok(); })
      .Case([&](kvt::PrefetchOp p) -> kvarn::Error {
        // A hint on the GPU; here only its range is checked, as a load's.
        const RtValue &ptr = get(p.getPtr());
        int64_t elementSize = elementBytes(
            cast<kvt::PointerType>(p.getPtr().getType()).getPointeeType());
        int64_t count = (p.getBytes() + elementSize - 1) / elementSize;
        int64_t offset = get(p.getOffset()).i;
        if (!p.getStride())
          return checkAccess(op, ptr, offset, count);
        auto [lo, hi] = stridedExtent({*p.getRows(), count}, offset,
                                      {get(p.getStride()).i, 1});
        return checkAccess(op, ptr, lo, hi - lo + 1);
      })
      .Case([&](kvt::StoreTileOp s) -> kvarn::Error {
        const RtValue &ptr = get(s.getPtr());
        const Tile &tile = tileOf(s.getValue());
        llvm::SmallVector<int64_t, 3> strides;
        for (Value v : s.getStrides())
          strides.push_back(get(v).i);
        int64_t offset = get(s.getOffset()).i;
        auto [lo, hi] = stridedExtent(tile.shape, offset, strides);
        if (kvarn::Error err = checkAccess(op, ptr, lo, hi - lo + 1))
          return err;
        const Buffer &b = buffer(ptr.buffer);
        forEachStrided(tile.shape, offset, strides, [&](int64_t i, int64_t at) {
          writeElement(b.data, b.elementType, at, tile.data[i]);
        });
        return ok();
      })
      .Case([&](kvt::LoadFieldOp l) -> kvarn::Error {
        Type type;
        int64_t at = 0;
        const RtValue &cache = get(l.getCache());
        if (kvarn::Error err = fieldAccess(l.getField(), get(l.getOffset()).i,
                                           cache, type, at))
          return err;
        auto tile = newTile(l.getResult().getType());
        const Buffer &b = buffer(cache.buffer);
        if (kvt::isE4M3Field(*recordFormat, l.getField())) {
          int exponent =
              int8_t(b.data[exponentAt(l.getField(), get(l.getOffset()).i)]);
          for (size_t i = 0; i < tile->data.size(); ++i)
            tile->data[i] = decodeScale(b.data[at + i], exponent);
        } else {
          Type element = tile->elementType;
          for (size_t i = 0; i < tile->data.size(); ++i)
            tile->data[i] = readElement(b.data + at, element, int64_t(i));
        }
        setTile(l.getResult(), tile);
        return ok();
      })
      .Case([&](kvt::StoreFieldOp s) -> kvarn::Error {
        Type type;
        int64_t at = 0;
        const RtValue &cache = get(s.getCache());
        if (kvarn::Error err = fieldAccess(s.getField(), get(s.getOffset()).i,
                                           cache, type, at))
          return err;
        const Tile &tile = tileOf(s.getValue());
        const Buffer &b = buffer(cache.buffer);
        if (kvt::isE4M3Field(*recordFormat, s.getField())) {
          // Fp8.h's canonical encoding of values quantize rounded.
          float max = 0;
          for (double x : tile.data)
            max = std::max(max, float(x));
          int exponent = scaleFieldExponent(max);
          for (size_t i = 0; i < tile.data.size(); ++i)
            b.data[at + i] =
                encodeScale(float(tile.data[i]), exponent, /*roundUp=*/false);
          b.data[exponentAt(s.getField(), get(s.getOffset()).i)] =
              uint8_t(int8_t(exponent));
          return ok();
        }
        for (size_t i = 0; i < tile.data.size(); ++i)
          writeElement(b.data + at, tile.elementType, int64_t(i), tile.data[i]);
        return ok();
      })
      //===--- Elementwise and layout -----------------------------------===//
      .Case([&](kvt::SplatOp s) {
        auto tile = newTile(s.getResult().getType());
        const RtValue &v = get(s.getValue());
        double x = tile->elementType.isInteger() ? double(v.i) : v.f;
        std::fill(tile->data.begin(), tile->data.end(),
                  roundToType(x, tile->elementType));
        setTile(s.getResult(), tile);
        return ok();
      })
      .Case([&](kvt::ConvertOp c) {
        auto tile = newTile(c.getResult().getType());
        const Tile &in = tileOf(c.getInput());
        for (size_t i = 0; i < in.data.size(); ++i)
          tile->data[i] = roundToType(in.data[i], tile->elementType);
        setTile(c.getResult(), tile);
        return ok();
      })
      .Case([&](kvt::TransposeOp t) {
        auto tile = newTile(t.getResult().getType());
        const Tile &in = tileOf(t.getInput());
        int64_t rows = in.dim(0), cols = in.dim(1);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c)
            tile->data[c * rows + r] = in.data[r * cols + c];
        setTile(t.getResult(), tile);
        return ok();
      })
      //===--- KVarN primitives -----------------------------------------===//
      .Case([&](kvt::RotateOp r) -> kvarn::Error {
        const Tile &in = tileOf(r.getInput());
        int64_t d = in.shape.back();
        kvarn::Expected<const Rotation *> rot = rotation(int(d));
        if (!rot)
          return errorAt(op, kvarn::toString(rot.takeError()));
        auto tile = newTile(r.getResult().getType());
        for (size_t row = 0; row < in.data.size() / size_t(d); ++row) {
          const double *x = &in.data[row * d];
          double *y = &tile->data[row * d];
          if (r.getInverse())
            (*rot)->unrotate(x, y);
          else
            (*rot)->rotate(x, y);
        }
        setTile(r.getResult(), tile);
        return ok();
      })
      .Case([&](kvt::NormalizeOp n) {
        const Tile &in = tileOf(n.getInput());
        SinkhornResult s = sinkhorn(toMatrix(in), int(n.getIters()));
        auto col = newTile(n.getColScale().getType());
        auto row = newTile(n.getRowScale().getType());
        col->data.assign(s.colScale.begin(), s.colScale.end());
        row->data.assign(s.rowScale.begin(), s.rowScale.end());
        setTile(n.getColScale(), col);
        setTile(n.getRowScale(), row);
        return ok();
      })
      .Case([&](kvt::QuantizeOp q) {
        QuantizedTile result = quantizeTileWithScales(
            toMatrix(tileOf(q.getInput())), int(q.getBits()),
            toFloats(tileOf(q.getColScale())),
            toFloats(tileOf(q.getRowScale())),
            q.getE4m3Scales() ? ScaleFormat::E4M3 : ScaleFormat::F16);
        auto codes = newTile(q.getCodes().getType());
        auto scale = newTile(q.getScale().getType());
        auto zero = newTile(q.getZero().getType());
        auto other = newTile(q.getOtherScale().getType());
        codes->data.assign(result.codes.begin(), result.codes.end());
        for (size_t i = 0; i < result.absorbedScale.size(); ++i) {
          scale->data[i] = result.scaleAt(int(i));
          zero->data[i] = result.zeroAt(int(i));
        }
        for (size_t i = 0; i < result.otherScale.size(); ++i)
          other->data[i] = result.otherAt(int(i));
        setTile(q.getCodes(), codes);
        setTile(q.getScale(), scale);
        setTile(q.getZero(), zero);
        setTile(q.getOtherScale(), other);
        return ok();
      })
      .Case([&](kvt::DequantizeOp d) {
        const Tile &codes = tileOf(d.getCodes());
        QuantizedTile q;
        q.rows = int(codes.dim(0));
        q.cols = int(codes.dim(1));
        q.codes.assign(codes.data.begin(), codes.data.end());
        q.absorbedZero = toHalfBits(tileOf(d.getZero()));
        auto tile = newTile(d.getResult().getType());
        if (tileOf(d.getScale()).elementType.isF32()) {
          // Decoded e4m3 scales: dequantizeTile's fp32 arithmetic on them.
          const Tile &scale = tileOf(d.getScale()),
                     &other = tileOf(d.getOtherScale());
          for (int r = 0; r < q.rows; ++r)
            for (int c = 0; c < q.cols; ++c)
              tile->data[size_t(r) * q.cols + c] =
                  (float(q.codes[size_t(r) * q.cols + c]) *
                       float(scale.data[r]) +
                   halfToFloat(q.absorbedZero[r])) *
                  float(other.data[c]);
        } else {
          q.absorbedScale = toHalfBits(tileOf(d.getScale()));
          q.otherScale = toHalfBits(tileOf(d.getOtherScale()));
          tile->data = dequantizeTile(q);
        }
        setTile(d.getResult(), tile);
        return ok();
      })
      .Case<kvt::PackOp, kvt::UnpackOp>([&](Operation *) {
        bool isPack = isa<kvt::PackOp>(op);
        const Tile &in = tileOf(op->getOperand(0));
        int bits = int(op->getAttrOfType<IntegerAttr>("bits").getInt());
        auto tile = newTile(op->getResult(0).getType());
        int64_t rows = in.dim(0), inCols = in.dim(1), outCols = tile->dim(1);
        std::vector<uint8_t> from(inCols), to(outCols);
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < inCols; ++c)
            from[c] = uint8_t(in.data[r * inCols + c]);
          if (isPack)
            packCodes(from, bits, to);
          else
            unpackCodes(from, bits, to);
          for (int64_t c = 0; c < outCols; ++c)
            tile->data[r * outCols + c] = to[c];
        }
        setTile(op->getResult(0), tile);
        return ok();
      })
      //===--- Attention -------------------------------------------------===//
      .Case([&](kvt::AttendOp a) {
        const Tile &q = tileOf(a.getQ());
        const Tile &validTile = tileOf(a.getValid());
        int rows = int(q.dim(0)), dim = int(q.dim(1));
        auto m = std::make_shared<Tile>(tileOf(a.getM()));
        auto l = std::make_shared<Tile>(tileOf(a.getL()));
        auto acc = std::make_shared<Tile>(tileOf(a.getAcc()));
        std::vector<int32_t> valid(validTile.data.begin(), validTile.data.end());
        std::vector<int32_t> from;
        if (a.getFrom()) {
          const Tile &fromTile = tileOf(a.getFrom());
          from.assign(fromTile.data.begin(), fromTile.data.end());
        }
        RopeScores rope;
        if (a.getQRope()) {
          rope.q = tileOf(a.getQRope()).data;
          rope.k = tileOf(a.getKRope()).data;
          rope.dim = int(a.getQRope().getType().getDim(1));
        }
        attendBlock(rows, dim, q.data, tileOf(a.getK()).data,
                    tileOf(a.getV()).data, valid, double(get(a.getScale()).f),
                    m->data, l->data, acc->data, from, rope);
        setTile(a.getNewM(), m);
        setTile(a.getNewL(), l);
        setTile(a.getNewAcc(), acc);
        return ok();
      })
      .Case([&](kvt::AttendFinishOp f) {
        const Tile &acc = tileOf(f.getAcc());
        auto out = newTile(f.getOut().getType());
        auto lse = newTile(f.getLse().getType());
        finishAttention(int(acc.dim(0)), int(acc.dim(1)), tileOf(f.getM()).data,
                        tileOf(f.getL()).data, acc.data, out->data, lse->data);
        setTile(f.getOut(), out);
        setTile(f.getLse(), lse);
        return ok();
      })
      .Case([&](kvt::MergeOp m) {
        const Tile &parts = tileOf(m.getParts());
        auto out = newTile(m.getResult().getType());
        mergePartials(int(parts.dim(0)), int(parts.dim(1)), int(parts.dim(2)),
                      parts.data, tileOf(m.getLses()).data,
                      int(get(m.getCount()).i), out->data);
        setTile(m.getResult(), out);
        return ok();
      })
      .Default([&](Operation *) -> kvarn::Error {
        return errorAt(op, "the kvt evaluator does not support this op");
      });
}
