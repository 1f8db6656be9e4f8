//===- MemoryOps.cpp - program ids, loads, stores, views ------------------===//

#include "TileLowering.h"
#include "kvarn/Codegen/E4M3Emitters.h"

#include "mlir/Dialect/LLVMIR/NVVMDialect.h"

using namespace mlir;
using namespace kvarn;
using namespace kvarn::kvt;

namespace {

int64_t elementBytes(Type t) { return t.getIntOrFloatBitWidth() / 8; }

gpu::Dimension dimension(uint32_t axis) {
  return axis == 0 ? gpu::Dimension::x
                   : axis == 1 ? gpu::Dimension::y : gpu::Dimension::z;
}

LogicalResult lowerProgramId(TileLowering &s, Operation *raw) {
  auto op = cast<ProgramIdOp>(raw);
  s.scalars.map(op.getResult(), s.programId(op.getLoc(), op.getAxis()));
  return success();
}

LogicalResult lowerNumPrograms(TileLowering &s, Operation *raw) {
  auto op = cast<NumProgramsOp>(raw);
  if (op.getAxis() == 0 && s.programsPerCta > 1) { // the grid, not the CTAs
    s.scalars.map(op.getResult(), s.gridX);
    return success();
  }
  Value n = gpu::GridDimOp::create(s.b, op.getLoc(), dimension(op.getAxis()));
  s.scalars.map(op.getResult(), arith::IndexCastOp::create(
                                    s.b, op.getLoc(), s.b.getI32Type(), n));
  return success();
}

/// index * sizeof(element), in bytes.
Value byteOffset(TileLowering &s, Location loc, Value elementIndex,
                 Type element) {
  return arith::MulIOp::create(s.b, loc, s.i64(loc, elementIndex),
                               s.i64Constant(loc, elementBytes(element)));
}

LogicalResult lowerLoad(TileLowering &s, Operation *raw) {
  auto op = cast<LoadOp>(raw);
  Location loc = op.getLoc();
  Value offset = byteOffset(s, loc, s.lookup(op.getIndex()), op.getType());
  s.scalars.map(op.getResult(),
                kvgpu::GlobalLoadOp::create(s.b, loc, op.getType(),
                                            s.lookup(op.getPtr()), offset));
  return success();
}

LogicalResult lowerStore(TileLowering &s, Operation *raw) {
  auto op = cast<StoreOp>(raw);
  Location loc = op.getLoc();
  Type elt = op.getValue().getType();
  Value offset = byteOffset(s, loc, s.lookup(op.getIndex()), elt);
  kvgpu::GlobalStoreOp::create(s.b, loc, s.lookup(op.getValue()),
                               s.lookup(op.getPtr()), offset);
  return success();
}

LogicalResult lowerPrefetch(TileLowering &s, Operation *raw) {
  auto op = cast<PrefetchOp>(raw);
  Location loc = op.getLoc();
  Type elt = cast<PointerType>(op.getPtr().getType()).getPointeeType();
  Value stride = op.getStride()
                     ? byteOffset(s, loc, s.lookup(op.getStride()), elt)
                     : Value();
  kvgpu::PrefetchOp::create(s.b, loc, s.lookup(op.getPtr()),
                            byteOffset(s, loc, s.lookup(op.getOffset()), elt),
                            op.getBytesAttr(), op.getRowsAttr(), stride);
  return success();
}

/// kvt.launch_dependents and kvt.grid_dependency_wait: griddepcontrol
/// where the chip has it (sm_90 on), nothing before. A wait makes the
/// kernel a programmatic dependent (TileLowering::waitsOnGrid).
LogicalResult lowerGridDependency(TileLowering &s, Operation *raw) {
  if (!s.gridDependencyControl)
    return success();
  bool wait = isa<GridDependencyWaitOp>(raw);
  NVVM::GriddepcontrolOp::create(
      s.b, raw->getLoc(),
      wait ? NVVM::GridDepActionKind::wait
           : NVVM::GridDepActionKind::launch_dependents);
  s.waitsOnGrid = s.waitsOnGrid || wait;
  return success();
}

SmallVector<Value> byteStrides(TileLowering &s, Location loc,
                               ValueRange strides, Type elt) {
  SmallVector<Value> out;
  for (Value st : strides)
    out.push_back(byteOffset(s, loc, st, elt));
  return out;
}

LogicalResult lowerLoadTile(TileLowering &s, Operation *raw) {
  auto op = cast<LoadTileOp>(raw);
  Location loc = op.getLoc();
  TileType type = op.getResult().getType();
  Type elt = type.getElementType();
  Value ptr = s.lookup(op.getPtr());
  Value offset = byteOffset(s, loc, s.lookup(op.getOffset()), elt);
  SmallVector<Value> strides =
      byteStrides(s, loc, llvm::map_to_vector(op.getStrides(), [&](Value v) {
                    return s.lookup(v);
                  }), elt);
  // Staged: one cooperative, vectorized copy into shared memory. Too large
  // for the kernel's budget, or only merged (kvt.merge reads each partial
  // and log-sum-exp once, and only those of the splits it counts, all in
  // flight together: staging would copy every split's room, 64 rows where
  // a request used 8, and add a round trip and a barrier before them): read
  // from global memory where it is used.
  bool onlyMerged = !op.getResult().use_empty() &&
                    llvm::all_of(op.getResult().getUses(), [](OpOperand &use) {
                      return isa<MergeOp>(use.getOwner());
                    });
  if (onlyMerged ||
      type.getNumElements() * elementBytes(elt) > s.maxStagedTileBytes) {
    TileView v;
    v.type = type;
    v.compute = [ptr, offset, strides, elt](OpBuilder &b, Location l,
                                             ValueRange idx) -> Value {
      Value at = offset;
      for (auto [i, stride] : llvm::zip(idx, strides))
        at = arith::AddIOp::create(
            b, l, at,
            arith::MulIOp::create(
                b, l, arith::IndexCastOp::create(b, l, b.getI64Type(), i),
                stride));
      Value addr = LLVM::GEPOp::create(b, l, ptr.getType(), b.getI8Type(),
                                       ptr, ValueRange{at});
      return LLVM::LoadOp::create(b, l, elt, addr);
    };
    s.tiles[op.getResult()] = v;
    return success();
  }
  TileView v = s.allocate(loc, type);
  kvgpu::CopyInOp::create(s.b, loc, ptr, offset, strides, v.buffer);
  s.barrier(loc);
  s.tiles[op.getResult()] = v;
  return success();
}

/// Stores `v` at `offset` with `strides` (bytes): a plain buffer by one
/// vectorized cooperative copy; a lazy view element by element, computed
/// where it is stored, with no shared buffer in between.
void storeView(TileLowering &s, Location loc, const TileView &v, Type elt,
               Value ptr, Value offset, ArrayRef<Value> strides) {
  TileView plain = v;
  if (v.isStoredAs(elt) || v.splat) {
    plain = s.materialize(loc, v, elt); // a splat: small, write it once
    kvgpu::CopyOutOp::create(s.b, loc, plain.buffer, ptr, offset, strides);
    s.barrier(loc);
    if (plain.buffer != v.buffer)
      s.planner.release(plain.bufferId);
    return;
  }
  s.foreach(loc, v.type.getShape(), [&](OpBuilder &b, ValueRange idx) {
    Value x = s.read(b, loc, v, idx); // reads convert to the tile's type
    Value at = offset;
    for (auto [i, stride] : llvm::zip(idx, strides))
      at = arith::AddIOp::create(
          b, loc, at,
          arith::MulIOp::create(
              b, loc, arith::IndexCastOp::create(b, loc, b.getI64Type(), i),
              stride));
    Value addr = LLVM::GEPOp::create(b, loc, ptr.getType(), b.getI8Type(), ptr,
                                     ValueRange{at});
    LLVM::StoreOp::create(b, loc, x, addr);
  });
}

LogicalResult lowerStoreTile(TileLowering &s, Operation *raw) {
  auto op = cast<StoreTileOp>(raw);
  Location loc = op.getLoc();
  Type elt = op.getValue().getType().getElementType();
  storeView(s, loc, s.view(op.getValue()), elt, s.lookup(op.getPtr()),
            byteOffset(s, loc, s.lookup(op.getOffset()), elt),
            byteStrides(s, loc, llvm::map_to_vector(op.getStrides(), [&](Value v) {
                          return s.lookup(v);
                        }), elt));
  return success();
}

/// Byte strides of a row-major field: [rowBytes, elementBytes] or [elementBytes].
SmallVector<Value> fieldStrides(TileLowering &s, Location loc, TileType t) {
  int64_t eb = elementBytes(t.getElementType());
  if (t.getRank() == 2)
    return {s.i64Constant(loc, t.getDim(1) * eb), s.i64Constant(loc, eb)};
  return {s.i64Constant(loc, eb)};
}

Value fieldByteOffset(TileLowering &s, Location loc, Value recordOffset,
                      RecordField field) {
  int64_t at = getFieldOffset(s.spec.getRecordFormat(), field);
  return arith::AddIOp::create(s.b, loc, s.i64(loc, recordOffset),
                               s.i64Constant(loc, at));
}

int64_t tileBytes(TileType t) {
  return t.getNumElements() * elementBytes(t.getElementType());
}

/// A field of a record staged whole: when the load_field ops of one record
/// (same cache and offset, one block) read most of its bytes, the first of
/// them copies the record's bytes in one cooperative copy (16-byte
/// cp.async, one barrier), and each field is a view at its offset. Against
/// a copy per field, that is one loop instead of eight, each with its
/// alignment test and address arithmetic: a fifth of decode's instructions
/// per block.
std::optional<TileView> stagedRecordField(TileLowering &s, LoadFieldOp op) {
  const RecordFormat format = s.spec.getRecordFormat();
  std::pair<Value, Value> key{op.getCache(), op.getOffset()};
  auto it = s.stagedRecords.find(key);
  if (it == s.stagedRecords.end() || it->second.block != op->getBlock()) {
    SmallVector<LoadFieldOp> fields;
    for (Operation *user : op.getOffset().getUsers())
      if (auto f = dyn_cast<LoadFieldOp>(user))
        if (f.getCache() == op.getCache() && f->getBlock() == op->getBlock())
          fields.push_back(f);
    llvm::SmallDenseSet<int64_t> seen;
    int64_t covered = 0, end = 0;
    for (LoadFieldOp f : fields) {
      int64_t at = getFieldOffset(format, f.getField());
      if (at % kvgpu::kVectorBytes)
        return std::nullopt; // a view there would not be 16-byte aligned
      int64_t fieldBytes =
          tileBytes(getStoredFieldType(s.b.getContext(), format, f.getField()));
      end = std::max(end, at + fieldBytes);
      if (seen.insert(at).second)
        covered += fieldBytes;
    }
    // E4M3 fields: their shared exponents (after the last field) too.
    if (llvm::any_of(fields, [&](LoadFieldOp f) {
          return isE4M3Field(format, f.getField());
        }))
      end = std::max(end, format.dense->scaleExponents + kScaleFieldCount);
    int64_t bytes = llvm::alignTo(end, kvgpu::kVectorBytes);
    if (format.recordBytes() % kvgpu::kVectorBytes ||
        bytes > format.recordBytes() || 4 * covered < 3 * bytes)
      return std::nullopt;
    Location loc = op.getLoc();
    auto [id, offset] = s.planner.allocate(bytes);
    Value record = kvgpu::SharedBufferOp::create(
        s.b, loc, kvgpu::getSharedMemRefType({bytes}, s.b.getI8Type()),
        s.b.getI64IntegerAttr(offset));
    kvgpu::CopyInOp::create(s.b, loc, s.lookup(op.getCache()),
                            s.i64(loc, s.lookup(op.getOffset())),
                            ValueRange{s.i64Constant(loc, 1)}, record);
    s.barrier(loc);
    int64_t last = 0;
    for (LoadFieldOp f : fields)
      last = std::max(last, s.lastUseOf(f.getResult()));
    int64_t &bufferLast = s.bufferLastUse[id];
    bufferLast = std::max(bufferLast, last);
    it = s.stagedRecords
             .insert_or_assign(
                 key, TileLowering::StagedRecord{id, offset, op->getBlock()})
             .first;
  }
  TileType type = getStoredFieldType(s.b.getContext(), format, op.getField());
  TileView v;
  v.type = type;
  v.bufferId = it->second.bufferId;
  v.buffer = kvgpu::SharedBufferOp::create(
      s.b, op.getLoc(),
      kvgpu::getSharedMemRefType(type.getShape(), type.getElementType()),
      s.b.getI64IntegerAttr(it->second.offset +
                            getFieldOffset(format, op.getField())));
  for (int i = 0; i < int(type.getRank()); ++i)
    v.bufferDims.push_back(i);
  return v;
}

/// Byte offset of scale field `field`'s shared exponent in the record at
/// `recordOffset`.
Value scaleExponentOffset(TileLowering &s, Location loc, Value recordOffset,
                          RecordField field) {
  const RecordLayout layout = *s.spec.getRecordFormat().dense;
  return arith::AddIOp::create(
      s.b, loc, s.i64(loc, recordOffset),
      s.i64Constant(loc, layout.scaleExponentOffset(*getScaleField(field))));
}

/// The f32 view of an e4m3 field whose bytes `bytes` holds: each element
/// decoded and scaled by 2^ the field's exponent. With the record staged
/// at shared byte `stagedRecord`, every read takes the exponent from there
/// (a shared load: nothing stays live from here to the reads, which would
/// cost the attention's registers); else every thread loads it once from
/// global memory here.
TileView decodedE4M3Field(TileLowering &s, LoadFieldOp op,
                          const TileView &bytes,
                          std::optional<int64_t> stagedRecord) {
  Location loc = op.getLoc();
  const RecordLayout layout = *s.spec.getRecordFormat().dense;
  ScaleField field = *getScaleField(op.getField());
  Value globalExponent;
  if (!stagedRecord)
    globalExponent = kvgpu::GlobalLoadOp::create(
        s.b, loc, s.b.getI8Type(), s.lookup(op.getCache()),
        scaleExponentOffset(s, loc, s.lookup(op.getOffset()), op.getField()));
  TileView v;
  v.type = op.getResult().getType();
  v.deps = bytes.buffers();
  Value buffer = bytes.buffer;
  std::optional<int64_t> exponentAt;
  if (stagedRecord)
    exponentAt = *stagedRecord + layout.scaleExponentOffset(field);
  v.compute = [=](OpBuilder &b, Location l, ValueRange i) -> Value {
    Value exponent = globalExponent;
    if (exponentAt) {
      Value byte = kvgpu::SharedBufferOp::create(
          b, l, kvgpu::getSharedMemRefType({1}, b.getI8Type()),
          b.getI64IntegerAttr(*exponentAt));
      exponent = memref::LoadOp::create(
          b, l, byte, ValueRange{arith::ConstantIndexOp::create(b, l, 0)});
    }
    Value scale = codegen::emitPow2(
        b, l, arith::ExtSIOp::create(b, l, b.getI32Type(), exponent));
    Value code = memref::LoadOp::create(b, l, buffer, i);
    return arith::MulFOp::create(b, l, codegen::emitDecodeE4M3(b, l, code),
                                 scale);
  };
  return v;
}

LogicalResult lowerLoadField(TileLowering &s, Operation *raw) {
  auto op = cast<LoadFieldOp>(raw);
  bool e4m3 = isE4M3Field(s.spec.getRecordFormat(), op.getField());
  if (std::optional<TileView> staged = stagedRecordField(s, op)) {
    int64_t record =
        s.stagedRecords.find({op.getCache(), op.getOffset()})->second.offset;
    s.tiles[op.getResult()] =
        e4m3 ? decodedE4M3Field(s, op, *staged, record) : *staged;
    return success();
  }
  Location loc = op.getLoc();
  TileType type = getStoredFieldType(s.b.getContext(), s.spec.getRecordFormat(),
                                     op.getField());
  TileView v = s.allocate(loc, type);
  kvgpu::CopyInOp::create(
      s.b, loc, s.lookup(op.getCache()),
      fieldByteOffset(s, loc, s.lookup(op.getOffset()), op.getField()),
      fieldStrides(s, loc, type), v.buffer);
  s.barrier(loc);
  s.tiles[op.getResult()] = e4m3 ? decodedE4M3Field(s, op, v, std::nullopt) : v;
  return success();
}

/// store_field of an e4m3 field: the exponent of the values' maximum
/// (scaleFieldExponent), each value / 2^exponent as its e4m3 byte (exact:
/// the values are ones quantize rounded to e4m3 under an exponent at least
/// this one), then the bytes and the exponent written.
void storeE4M3Field(TileLowering &s, StoreFieldOp op) {
  Location loc = op.getLoc();
  MLIRContext *ctx = s.b.getContext();
  TileView values = s.view(op.getValue());
  int64_t n = op.getValue().getType().getNumElements();
  ScratchBuffers scratch(s);
  Value max = scratch.get(loc, {1}, s.b.getF32Type());
  s.reduce(loc, kvgpu::ReduceKind::Max, 1, n, max,
           [&](OpBuilder &b, Value, Value i) {
             return s.read(b, loc, values, {i});
           });
  Value exponent = codegen::emitScaleExponent(
      s.b, loc, load(s.b, loc, max, {s.index(s.b, loc, 0)}));
  Value inverse = codegen::emitPow2(
      s.b, loc,
      arith::SubIOp::create(s.b, loc, codegen::emitI32(s.b, loc, 0), exponent));
  TileType stored =
      getStoredFieldType(ctx, s.spec.getRecordFormat(), op.getField());
  TileView bytes = s.allocate(loc, stored);
  s.foreach (loc, {n}, [&](OpBuilder &b, ValueRange i) {
    Value x = arith::MulFOp::create(b, loc, s.read(b, loc, values, i), inverse);
    store(b, loc, codegen::emitE4M3Byte(b, loc, x), bytes.buffer, i);
  });
  storeView(s, loc, bytes, stored.getElementType(), s.lookup(op.getCache()),
            fieldByteOffset(s, loc, s.lookup(op.getOffset()), op.getField()),
            fieldStrides(s, loc, stored));
  s.planner.release(bytes.bufferId);
  TileView e;
  e.type = TileType::get({1}, s.b.getI8Type());
  e.splat = arith::TruncIOp::create(s.b, loc, s.b.getI8Type(), exponent);
  storeView(
      s, loc, e, s.b.getI8Type(), s.lookup(op.getCache()),
      scaleExponentOffset(s, loc, s.lookup(op.getOffset()), op.getField()),
      {s.i64Constant(loc, 1)});
}

LogicalResult lowerStoreField(TileLowering &s, Operation *raw) {
  auto op = cast<StoreFieldOp>(raw);
  if (isE4M3Field(s.spec.getRecordFormat(), op.getField())) {
    storeE4M3Field(s, op);
    return success();
  }
  Location loc = op.getLoc();
  TileType type = op.getValue().getType();
  storeView(s, loc, s.view(op.getValue()), type.getElementType(),
            s.lookup(op.getCache()),
            fieldByteOffset(s, loc, s.lookup(op.getOffset()), op.getField()),
            fieldStrides(s, loc, type));
  return success();
}

LogicalResult lowerSplat(TileLowering &s, Operation *raw) {
  auto op = cast<SplatOp>(raw);
  TileView v;
  v.type = op.getResult().getType();
  v.splat = s.lookup(op.getValue());
  s.tiles[op.getResult()] = v;
  return success();
}

/// A view: reads convert on the fly.
LogicalResult lowerConvert(TileLowering &s, Operation *raw) {
  auto op = cast<ConvertOp>(raw);
  TileView v = s.view(op.getInput());
  v.type = op.getResult().getType();
  v.conversions.push_back(v.type.getElementType());
  s.tiles[op.getResult()] = v;
  return success();
}

/// A view: reads swap their indices.
LogicalResult lowerTranspose(TileLowering &s, Operation *raw) {
  auto op = cast<TransposeOp>(raw);
  TileView v = s.view(op.getInput());
  v.type = op.getResult().getType();
  if (v.compute) {
    ElementFn inner = v.compute;
    v.compute = [inner](OpBuilder &b, Location l, ValueRange idx) {
      return inner(b, l, {idx[1], idx[0]});
    };
  } else {
    for (int &d : v.bufferDims)
      if (d >= 0)
        d = 1 - d;
  }
  s.tiles[op.getResult()] = v;
  return success();
}

} // namespace

void kvarn::kvt::registerMemoryOpLowerings(
    llvm::DenseMap<OperationName, OpLowering> &table, MLIRContext *ctx) {
  table[OperationName(ProgramIdOp::getOperationName(), ctx)] = lowerProgramId;
  table[OperationName(NumProgramsOp::getOperationName(), ctx)] = lowerNumPrograms;
  table[OperationName(LoadOp::getOperationName(), ctx)] = lowerLoad;
  table[OperationName(StoreOp::getOperationName(), ctx)] = lowerStore;
  table[OperationName(LoadTileOp::getOperationName(), ctx)] = lowerLoadTile;
  table[OperationName(PrefetchOp::getOperationName(), ctx)] = lowerPrefetch;
  table[OperationName(LaunchDependentsOp::getOperationName(), ctx)] =
      lowerGridDependency;
  table[OperationName(GridDependencyWaitOp::getOperationName(), ctx)] =
      lowerGridDependency;
  table[OperationName(StoreTileOp::getOperationName(), ctx)] = lowerStoreTile;
  table[OperationName(LoadFieldOp::getOperationName(), ctx)] = lowerLoadField;
  table[OperationName(StoreFieldOp::getOperationName(), ctx)] = lowerStoreField;
  table[OperationName(SplatOp::getOperationName(), ctx)] = lowerSplat;
  table[OperationName(ConvertOp::getOperationName(), ctx)] = lowerConvert;
  table[OperationName(TransposeOp::getOperationName(), ctx)] = lowerTranspose;
}
