//===- KVTOps.cpp ---- kvt operations: verifiers, type inference, folds ---===//

#include "kvarn/Dialect/KVT/KVT.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"

#include <limits>

using namespace mlir;
using namespace kvarn;
using namespace kvarn::kvt;

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

static LogicalResult inferError(std::optional<Location> loc,
                                const llvm::Twine &message) {
  return emitOptionalError(loc, message);
}

/// `value` must be a tile of rank `rank` with element type `elt` (null: any).
static FailureOr<TileType> expectTile(std::optional<Location> loc, Value value,
                                      llvm::StringRef what, int64_t rank,
                                      Type elt) {
  auto tile = dyn_cast<TileType>(value.getType());
  if (!tile) {
    (void)inferError(loc, llvm::Twine(what) + " must be a !kvt.tile");
    return failure();
  }
  if (tile.getRank() != rank) {
    (void)inferError(loc, llvm::Twine(what) + " must have rank " +
                              llvm::Twine(rank) + ", got " +
                              llvm::Twine(tile.getRank()));
    return failure();
  }
  if (elt && tile.getElementType() != elt) {
    std::string got, want;
    llvm::raw_string_ostream(got) << tile.getElementType();
    llvm::raw_string_ostream(want) << elt;
    (void)inferError(loc, llvm::Twine(what) + " must have " + want +
                              " elements, got " + got);
    return failure();
  }
  return tile;
}

static LogicalResult checkBits(std::optional<Location> loc, int64_t bits) {
  if (bits != 2 && bits != 4 && bits != 8)
    return inferError(loc, "bits must be 2, 4 or 8, got " + llvm::Twine(bits));
  return success();
}

/// The pointer's pointee must be the tile's element type and there must be
/// one stride per tile dimension.
static LogicalResult verifyStridedAccess(Operation *op, PointerType ptr,
                                         TileType tile, size_t numStrides) {
  if (ptr.getPointeeType() != tile.getElementType())
    return op->emitOpError("pointer to ")
           << ptr.getPointeeType() << " cannot access a tile of "
           << tile.getElementType();
  if (numStrides != size_t(tile.getRank()))
    return op->emitOpError("needs one stride per tile dimension: ")
           << tile.getRank() << " dimensions, " << numStrides << " strides";
  return success();
}

//===----------------------------------------------------------------------===//
// Record fields
//===----------------------------------------------------------------------===//

std::optional<ScaleField> kvarn::kvt::getScaleField(RecordField field) {
  switch (field) {
  case RecordField::KScale:
    return ScaleField::KScale;
  case RecordField::KTokenScale:
    return ScaleField::KTokenScale;
  case RecordField::VChannelScale:
    return ScaleField::VChannelScale;
  case RecordField::VScale:
    return ScaleField::VScale;
  default:
    return std::nullopt;
  }
}

static bool isMlaField(RecordField field) {
  switch (field) {
  case RecordField::LatentCodes:
  case RecordField::LatentScale:
  case RecordField::LatentZero:
  case RecordField::LatentTokenScale:
  case RecordField::Rope:
    return true;
  default:
    return false;
  }
}

bool kvarn::kvt::hasField(const RecordFormat &format, RecordField field) {
  if (isMlaField(field))
    return format.mla && (field != RecordField::Rope || format.mla->ropeDim);
  return format.dense.has_value();
}

bool kvarn::kvt::isE4M3Field(const RecordFormat &format, RecordField field) {
  return format.dense && format.dense->scaleFormat == ScaleFormat::E4M3 &&
         getScaleField(field).has_value();
}

static TileType getStoredMlaFieldType(MLIRContext *ctx,
                                      const MlaRecordLayout &l,
                                      RecordField field) {
  Type f16 = Float16Type::get(ctx), i8 = IntegerType::get(ctx, 8);
  const int64_t r = l.kvLoraRank, g = l.group;
  switch (field) {
  case RecordField::LatentCodes:
    return TileType::get({g, l.tokenCodeBytes()}, i8);
  case RecordField::LatentScale:
  case RecordField::LatentZero:
    return TileType::get({r}, f16);
  case RecordField::LatentTokenScale:
    return TileType::get({g}, f16);
  case RecordField::Rope:
    return TileType::get({g, l.ropeDim}, f16);
  default:
    llvm_unreachable("not a field of MLA records");
  }
}

TileType kvarn::kvt::getStoredFieldType(MLIRContext *ctx,
                                        const RecordFormat &format,
                                        RecordField field) {
  assert(hasField(format, field) && "a field the record does not have");
  if (format.mla)
    return getStoredMlaFieldType(ctx, *format.mla, field);
  const RecordLayout &l = *format.dense;
  Type f16 = Float16Type::get(ctx), i8 = IntegerType::get(ctx, 8);
  Type scale = l.scaleFormat == ScaleFormat::E4M3 ? i8 : f16;
  const int64_t d = l.headDim, g = l.group;
  switch (field) {
  case RecordField::KCodes:
    return TileType::get({d, l.kRowBytes()}, i8);
  case RecordField::VCodes:
    return TileType::get({g, l.vRowBytes()}, i8);
  case RecordField::KZero:
    return TileType::get({d}, f16);
  case RecordField::VZero:
    return TileType::get({g}, f16);
  case RecordField::KScale:
  case RecordField::VChannelScale:
    return TileType::get({d}, scale);
  case RecordField::KTokenScale:
  case RecordField::VScale:
    return TileType::get({g}, scale);
  default:
    llvm_unreachable("not a field of dense records");
  }
}

TileType kvarn::kvt::getFieldType(MLIRContext *ctx, const RecordFormat &format,
                                  RecordField field) {
  TileType stored = getStoredFieldType(ctx, format, field);
  if (isE4M3Field(format, field))
    return TileType::get(stored.getShape(), Float32Type::get(ctx));
  return stored;
}

int64_t kvarn::kvt::getFieldOffset(const RecordFormat &format,
                                   RecordField field) {
  assert(hasField(format, field) && "a field the record does not have");
  if (format.mla) {
    const MlaRecordLayout &l = *format.mla;
    switch (field) {
    case RecordField::LatentCodes:
      return l.codes;
    case RecordField::LatentScale:
      return l.scale;
    case RecordField::LatentZero:
      return l.zero;
    case RecordField::LatentTokenScale:
      return l.tokenScale;
    case RecordField::Rope:
      return l.rope;
    default:
      llvm_unreachable("not a field of MLA records");
    }
  }
  const RecordLayout &l = *format.dense;
  switch (field) {
  case RecordField::KCodes:
    return l.kCodes;
  case RecordField::KScale:
    return l.kScale;
  case RecordField::KZero:
    return l.kZero;
  case RecordField::KTokenScale:
    return l.kTokenScale;
  case RecordField::VCodes:
    return l.vCodes;
  case RecordField::VChannelScale:
    return l.vChannelScale;
  case RecordField::VScale:
    return l.vScale;
  case RecordField::VZero:
    return l.vZero;
  default:
    llvm_unreachable("not a field of dense records");
  }
}

static LogicalResult verifyFieldAccess(Operation *op, PointerType cache,
                                       TileType tile, RecordField field) {
  if (!cache.getPointeeType().isInteger(8))
    return op->emitOpError("record cache must be a !kvt.ptr<i8>, got a "
                           "pointer to ")
           << cache.getPointeeType();
  SpecAttr spec = getEnclosingSpec(op);
  if (!spec)
    return op->emitOpError("needs an enclosing kernel with a 'kvt.spec' "
                           "attribute to know the record layout");
  RecordFormat format = spec.getRecordFormat();
  if (!hasField(format, field))
    return op->emitOpError("records of ")
           << spec.getPreset() << " have no field "
           << stringifyRecordField(field)
           << (spec.isMla() ? " (MLA records: latent_codes, latent_scale, "
                              "latent_zero, latent_token_scale, rope)"
                            : " (the latent_ fields and rope are MLA "
                              "records')");
  TileType expected = getFieldType(op->getContext(), format, field);
  if (expected != tile)
    return op->emitOpError("field ")
           << stringifyRecordField(field) << " of " << spec.getPreset()
           << " at head_dim " << spec.getHeadDim() << " is " << expected
           << ", not " << tile;
  return success();
}

//===----------------------------------------------------------------------===//
// Memory ops
//===----------------------------------------------------------------------===//

LogicalResult LoadTileOp::verify() {
  return verifyStridedAccess(*this, getPtr().getType(), getResult().getType(),
                             getStrides().size());
}

LogicalResult StoreTileOp::verify() {
  return verifyStridedAccess(*this, getPtr().getType(), getValue().getType(),
                             getStrides().size());
}

LogicalResult LoadFieldOp::verify() {
  return verifyFieldAccess(*this, getCache().getType(), getResult().getType(),
                           getField());
}

LogicalResult StoreFieldOp::verify() {
  return verifyFieldAccess(*this, getCache().getType(), getValue().getType(),
                           getField());
}

LogicalResult PrefetchOp::verify() {
  if (getRows().has_value() != bool(getStride()))
    return emitOpError("takes rows and stride together");
  return success();
}

//===----------------------------------------------------------------------===//
// SplitPlanOp
//===----------------------------------------------------------------------===//

LogicalResult SplitPlanOp::verify() {
  if (!getSeqLens().getType().getPointeeType().isInteger(32))
    return emitOpError("reads the context lengths as i32, not ")
           << getSeqLens().getType().getPointeeType();
  // Both are i32 on the GPU (the plan's arithmetic).
  for (auto [name, value] : {std::pair{"block_tokens", getBlockTokens()},
                             std::pair{"max_chunks", getMaxChunks()}})
    if (value < 1 || value > std::numeric_limits<int32_t>::max())
      return emitOpError(name) << " must be in [1, 2^31), got " << value;
  return success();
}

//===----------------------------------------------------------------------===//
// ConvertOp
//===----------------------------------------------------------------------===//

static bool isFloat(Type t) { return t.isF16() || t.isBF16() || t.isF32(); }

LogicalResult ConvertOp::verify() {
  TileType in = getInput().getType(), out = getResult().getType();
  if (in.getShape() != out.getShape())
    return emitOpError("cannot change the shape: ") << in << " to " << out;
  Type a = in.getElementType(), b = out.getElementType();
  bool ok = (isFloat(a) && isFloat(b)) ||
            ((a.isInteger(8) || a.isInteger(32)) && isFloat(b));
  if (!ok)
    return emitOpError("unsupported conversion from ") << a << " to " << b;
  return success();
}

/// Widening f16/bf16 to f32 and narrowing back is exact, so the pair folds.
OpFoldResult ConvertOp::fold(FoldAdaptor) {
  if (getInput().getType() == getResult().getType())
    return getInput();
  if (auto inner = getInput().getDefiningOp<ConvertOp>()) {
    Type original = inner.getInput().getType().getElementType();
    Type middle = getInput().getType().getElementType();
    if (inner.getInput().getType() == getResult().getType() &&
        isFloat(original) && middle.isF32())
      return inner.getInput();
  }
  return {};
}

//===----------------------------------------------------------------------===//
// TransposeOp
//===----------------------------------------------------------------------===//

LogicalResult TransposeOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &types) {
  FailureOr<TileType> in = expectTile(loc, adaptor.getInput(), "input", 2, {});
  if (failed(in))
    return failure();
  types.push_back(TileType::get({in->getDim(1), in->getDim(0)},
                                in->getElementType()));
  return success();
}

OpFoldResult TransposeOp::fold(FoldAdaptor) {
  if (auto inner = getInput().getDefiningOp<TransposeOp>())
    return inner.getInput();
  return {};
}

//===----------------------------------------------------------------------===//
// RotateOp
//===----------------------------------------------------------------------===//

LogicalResult RotateOp::verify() {
  TileType t = getInput().getType();
  if (!t.getElementType().isF32())
    return emitOpError("rotates f32 tiles; convert ")
           << t.getElementType() << " first";
  int64_t d = t.getShape().back();
  if (kvarn::Error err = checkHeadDim(int(d)))
    return emitOpError("no rotation of order ")
           << d << ": " << kvarn::toString(std::move(err));
  return success();
}

//===----------------------------------------------------------------------===//
// NormalizeOp, QuantizeOp, DequantizeOp
//===----------------------------------------------------------------------===//

LogicalResult NormalizeOp::inferReturnTypes(MLIRContext *ctx,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &types) {
  Type f32 = Float32Type::get(ctx);
  FailureOr<TileType> in = expectTile(loc, adaptor.getInput(), "input", 2, f32);
  if (failed(in))
    return failure();
  if (in->getDim(0) < 2 || in->getDim(1) < 2)
    return inferError(loc, "normalize needs at least 2 rows and 2 columns "
                           "(unbiased standard deviations)");
  types.push_back(TileType::get({in->getDim(1)}, f32));
  types.push_back(TileType::get({in->getDim(0)}, f32));
  return success();
}

LogicalResult QuantizeOp::inferReturnTypes(MLIRContext *ctx,
                                           std::optional<Location> loc,
                                           Adaptor adaptor,
                                           SmallVectorImpl<Type> &types) {
  Type f32 = Float32Type::get(ctx), f16 = Float16Type::get(ctx);
  FailureOr<TileType> in = expectTile(loc, adaptor.getInput(), "input", 2, f32);
  if (failed(in))
    return failure();
  int64_t rows = in->getDim(0), cols = in->getDim(1);
  if (TileType::get({cols}, f32) != adaptor.getColScale().getType())
    return inferError(loc, "column scales must be !kvt.tile<" +
                               llvm::Twine(cols) + "xf32>");
  if (TileType::get({rows}, f32) != adaptor.getRowScale().getType())
    return inferError(loc, "row scales must be !kvt.tile<" +
                               llvm::Twine(rows) + "xf32>");
  if (failed(checkBits(loc, adaptor.getBits())))
    return failure();
  Type scale = adaptor.getE4m3Scales() ? f32 : f16;
  types.push_back(TileType::get({rows, cols}, IntegerType::get(ctx, 8)));
  types.push_back(TileType::get({rows}, scale));
  types.push_back(TileType::get({rows}, f16));
  types.push_back(TileType::get({cols}, scale));
  return success();
}

/// kvt.dequantize's scale types: [R] and [C] of f16, or of the element type
/// after a trailing `scales` keyword.
static ParseResult parseScaleElementType(OpAsmParser &parser, Type codes,
                                         Type &scale, Type &other) {
  auto tile = dyn_cast<TileType>(codes);
  if (!tile || tile.getRank() != 2)
    return parser.emitError(parser.getCurrentLocation(),
                            "codes must be a rank-2 tile");
  Type elt = Float16Type::get(parser.getContext());
  if (succeeded(parser.parseOptionalKeyword("scales")) &&
      failed(parser.parseType(elt)))
    return failure();
  scale = TileType::get({tile.getDim(0)}, elt);
  other = TileType::get({tile.getDim(1)}, elt);
  return success();
}

static void printScaleElementType(OpAsmPrinter &printer, Operation *, Type,
                                  Type scale, Type) {
  Type elt = cast<TileType>(scale).getElementType();
  if (!elt.isF16())
    printer << " scales " << elt;
}

LogicalResult DequantizeOp::inferReturnTypes(MLIRContext *ctx,
                                             std::optional<Location> loc,
                                             Adaptor adaptor,
                                             SmallVectorImpl<Type> &types) {
  Type f16 = Float16Type::get(ctx), f32 = Float32Type::get(ctx);
  FailureOr<TileType> codes = expectTile(loc, adaptor.getCodes(), "codes", 2,
                                         IntegerType::get(ctx, 8));
  if (failed(codes))
    return failure();
  int64_t rows = codes->getDim(0), cols = codes->getDim(1);
  // Scales: f16, or f32 (decoded e4m3); the zero is always f16.
  auto isScaleVector = [&](Type t, int64_t n) {
    return t == TileType::get({n}, f16) || t == TileType::get({n}, f32);
  };
  if (!isScaleVector(adaptor.getScale().getType(), rows) ||
      adaptor.getZero().getType() != TileType::get({rows}, f16))
    return inferError(loc, "scale must be !kvt.tile<" + llvm::Twine(rows) +
                               "xf16> or xf32, zero !kvt.tile<" +
                               llvm::Twine(rows) + "xf16>");
  if (!isScaleVector(adaptor.getOtherScale().getType(), cols) ||
      cast<TileType>(adaptor.getOtherScale().getType()).getElementType() !=
          cast<TileType>(adaptor.getScale().getType()).getElementType())
    return inferError(loc, "column scales must be !kvt.tile<" +
                               llvm::Twine(cols) +
                               "x...> of the scale's element type");
  types.push_back(TileType::get({rows, cols}, Float32Type::get(ctx)));
  return success();
}

//===----------------------------------------------------------------------===//
// PackOp, UnpackOp
//===----------------------------------------------------------------------===//

LogicalResult PackOp::inferReturnTypes(MLIRContext *ctx,
                                       std::optional<Location> loc,
                                       Adaptor adaptor,
                                       SmallVectorImpl<Type> &types) {
  Type i8 = IntegerType::get(ctx, 8);
  FailureOr<TileType> codes = expectTile(loc, adaptor.getCodes(), "codes", 2, i8);
  if (failed(codes) || failed(checkBits(loc, adaptor.getBits())))
    return failure();
  int64_t perByte = 8 / adaptor.getBits();
  if (codes->getDim(1) % perByte)
    return inferError(loc, "a row of " + llvm::Twine(codes->getDim(1)) +
                               " codes does not fill whole bytes at " +
                               llvm::Twine(adaptor.getBits()) + " bits");
  types.push_back(TileType::get({codes->getDim(0), codes->getDim(1) / perByte}, i8));
  return success();
}

OpFoldResult PackOp::fold(FoldAdaptor) {
  if (auto unpack = getCodes().getDefiningOp<UnpackOp>())
    if (unpack.getBits() == getBits())
      return unpack.getPacked();
  return {};
}

LogicalResult UnpackOp::inferReturnTypes(MLIRContext *ctx,
                                         std::optional<Location> loc,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &types) {
  Type i8 = IntegerType::get(ctx, 8);
  FailureOr<TileType> packed =
      expectTile(loc, adaptor.getPacked(), "packed codes", 2, i8);
  if (failed(packed) || failed(checkBits(loc, adaptor.getBits())))
    return failure();
  types.push_back(TileType::get(
      {packed->getDim(0), packed->getDim(1) * (8 / adaptor.getBits())}, i8));
  return success();
}

/// unpack(pack(x)) is x only when every code fits in `bits`, which holds for
/// codes straight out of kvt.quantize with the same width.
OpFoldResult UnpackOp::fold(FoldAdaptor) {
  auto pack = getPacked().getDefiningOp<PackOp>();
  if (!pack || pack.getBits() != getBits())
    return {};
  if (auto quantize = pack.getCodes().getDefiningOp<QuantizeOp>())
    if (quantize.getBits() == getBits())
      return pack.getCodes();
  return {};
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

LogicalResult AttendOp::verify() {
  TileType q = getQ().getType(), k = getK().getType();
  if (q.getRank() != 2 || !q.getElementType().isF32())
    return emitOpError("queries must be a rank-2 f32 tile [H, D], got ") << q;
  if (k.getRank() != 2 || !k.getElementType().isF32())
    return emitOpError("keys must be a rank-2 f32 tile [G, D], got ") << k;
  if (q.getDim(1) != k.getDim(1))
    return emitOpError("queries have ")
           << q.getDim(1) << " channels but keys have " << k.getDim(1);
  if (bool(getQRope()) != bool(getKRope()))
    return emitOpError("needs both rope parts, q_rope and k_rope, or none");
  if (getQRope()) {
    TileType qr = getQRope().getType(), kr = getKRope().getType();
    if (qr.getRank() != 2 || !qr.getElementType().isF32() ||
        qr.getDim(0) != q.getDim(0))
      return emitOpError("q_rope must be an f32 tile [")
             << q.getDim(0) << ", E], got " << qr;
    if (kr.getRank() != 2 || !kr.getElementType().isF32() ||
        kr.getDim(0) != k.getDim(0) || kr.getDim(1) != qr.getDim(1))
      return emitOpError("k_rope must be an f32 tile [")
             << k.getDim(0) << ", " << qr.getDim(1) << "], got " << kr;
  }
  return success();
}

LogicalResult MergeOp::inferReturnTypes(MLIRContext *ctx,
                                        std::optional<Location> loc,
                                        Adaptor adaptor,
                                        SmallVectorImpl<Type> &types) {
  Type f32 = Float32Type::get(ctx);
  FailureOr<TileType> parts = expectTile(loc, adaptor.getParts(), "parts", 3, f32);
  if (failed(parts))
    return failure();
  FailureOr<TileType> lses = expectTile(loc, adaptor.getLses(), "lses", 2, f32);
  if (failed(lses))
    return failure();
  if (lses->getDim(0) != parts->getDim(0) || lses->getDim(1) != parts->getDim(1))
    return inferError(loc, "lses must be [S, H] for parts [S, H, D]");
  types.push_back(TileType::get({parts->getDim(1), parts->getDim(2)}, f32));
  return success();
}

#define GET_OP_CLASSES
#include "kvarn/Dialect/KVT/KVTOps.cpp.inc"
