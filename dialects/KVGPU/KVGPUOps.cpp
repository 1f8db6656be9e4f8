//===- KVGPUOps.cpp - kvgpu operations ------------------------------------===//

#include "kvarn/Dialect/KVGPU/KVGPU.h"

#include "mlir/IR/Builders.h"

#include "llvm/Support/MathExtras.h"

#include <cmath>

using namespace mlir;
using namespace kvarn::kvgpu;

LogicalResult SharedBufferOp::verify() {
  auto type = getBuffer().getType();
  int64_t bytes = type.getElementTypeBitWidth() / 8;
  if (bytes == 0 || getOffset() % bytes)
    return emitOpError("offset ") << getOffset()
                                  << " is not aligned to the element size";
  return success();
}

static LogicalResult verifyCopy(Operation *op, MemRefType buffer,
                                size_t numStrides) {
  if (size_t(buffer.getRank()) != numStrides)
    return op->emitOpError("needs one byte stride per buffer dimension: ")
           << buffer.getRank() << " dimensions, " << numStrides << " strides";
  return success();
}

LogicalResult CopyInOp::verify() {
  return verifyCopy(*this, getDst().getType(), getByteStrides().size());
}

LogicalResult CopyOutOp::verify() {
  return verifyCopy(*this, getSrc().getType(), getByteStrides().size());
}

//===----------------------------------------------------------------------===//
// ForeachOp and ReduceOp: `[shape] (%i, %j) <region>`
//===----------------------------------------------------------------------===//

void ForeachOp::build(OpBuilder &builder, OperationState &state,
                      ArrayRef<int64_t> shape) {
  state.addAttribute(getShapeAttrName(state.name),
                     builder.getDenseI64ArrayAttr(shape));
  Region *body = state.addRegion();
  Block *block = new Block();
  for (size_t i = 0; i < shape.size(); ++i)
    block->addArgument(builder.getIndexType(), state.location);
  body->push_back(block);
  OpBuilder::InsertionGuard guard(builder);
  builder.setInsertionPointToEnd(block);
  YieldOp::create(builder, state.location, ValueRange());
}

static ParseResult parseSpace(OpAsmParser &parser, DenseI64ArrayAttr &shape,
                              SmallVectorImpl<OpAsmParser::Argument> &args) {
  SmallVector<int64_t> dims;
  if (parser.parseLSquare() ||
      parser.parseCommaSeparatedList([&]() -> ParseResult {
        int64_t d;
        if (parser.parseInteger(d))
          return failure();
        dims.push_back(d);
        return success();
      }) ||
      parser.parseRSquare() ||
      parser.parseArgumentList(args, OpAsmParser::Delimiter::Paren))
    return failure();
  for (auto &arg : args)
    arg.type = parser.getBuilder().getIndexType();
  shape = parser.getBuilder().getDenseI64ArrayAttr(dims);
  return success();
}

static void printSpace(OpAsmPrinter &p, ArrayRef<int64_t> shape, Block &body) {
  p << " [";
  llvm::interleaveComma(shape, p);
  p << "] (";
  llvm::interleaveComma(body.getArguments(), p,
                        [&](BlockArgument arg) { p.printOperand(arg); });
  p << ")";
}

static LogicalResult verifySpace(Operation *op, ArrayRef<int64_t> shape,
                                 Region &body) {
  if (shape.empty() || shape.size() > 3)
    return op->emitOpError("index space must have 1 to 3 dimensions");
  for (int64_t d : shape)
    if (d <= 0)
      return op->emitOpError("index space dimensions must be positive");
  if (body.getNumArguments() != shape.size())
    return op->emitOpError("body needs one index argument per dimension");
  for (BlockArgument arg : body.getArguments())
    if (!arg.getType().isIndex())
      return op->emitOpError("body arguments must be of index type");
  return success();
}

ParseResult ForeachOp::parse(OpAsmParser &parser, OperationState &result) {
  DenseI64ArrayAttr shape;
  SmallVector<OpAsmParser::Argument> args;
  if (parseSpace(parser, shape, args))
    return failure();
  result.addAttribute(getShapeAttrName(result.name), shape);
  Region *body = result.addRegion();
  if (parser.parseRegion(*body, args) ||
      parser.parseOptionalAttrDict(result.attributes))
    return failure();
  ForeachOp::ensureTerminator(*body, parser.getBuilder(), result.location);
  return success();
}

void ForeachOp::print(OpAsmPrinter &p) {
  printSpace(p, getShape(), getBody().front());
  p << " ";
  p.printRegion(getBody(), /*printEntryBlockArgs=*/false,
                /*printBlockTerminators=*/false);
  p.printOptionalAttrDict((*this)->getAttrs(), {getShapeAttrName()});
}

LogicalResult ForeachOp::verify() {
  if (failed(verifySpace(*this, getShape(), getBody())))
    return failure();
  if (getBody().front().getTerminator()->getNumOperands() != 0)
    return emitOpError("body yields no values");
  return success();
}

ParseResult ReduceOp::parse(OpAsmParser &parser, OperationState &result) {
  ReduceKindAttr kind;
  DenseI64ArrayAttr shape;
  SmallVector<OpAsmParser::Argument> args;
  OpAsmParser::UnresolvedOperand out;
  Type outType;
  if (parser.parseCustomAttributeWithFallback(kind) ||
      parseSpace(parser, shape, args) || parser.parseKeyword("into") ||
      parser.parseOperand(out) || parser.parseColonType(outType) ||
      parser.resolveOperand(out, outType, result.operands))
    return failure();
  result.addAttribute(getKindAttrName(result.name), kind);
  result.addAttribute(getShapeAttrName(result.name), shape);
  Region *body = result.addRegion();
  if (parser.parseRegion(*body, args) ||
      parser.parseOptionalAttrDict(result.attributes))
    return failure();
  return success();
}

void ReduceOp::print(OpAsmPrinter &p) {
  p << " ";
  p.printStrippedAttrOrType(getKindAttr());
  printSpace(p, getShape(), getBody().front());
  p << " into " << getOut() << " : " << getOut().getType() << " ";
  p.printRegion(getBody(), /*printEntryBlockArgs=*/false,
                /*printBlockTerminators=*/true);
  p.printOptionalAttrDict((*this)->getAttrs(),
                          {getShapeAttrName(), getKindAttrName()});
}

LogicalResult ReduceOp::verify() {
  if (failed(verifySpace(*this, getShape(), getBody())))
    return failure();
  if (getShape().size() != 2)
    return emitOpError("reduces a 2-D index space over its last dimension");
  MemRefType out = getOut().getType();
  if (out.getRank() != 1 || out.getDimSize(0) != getShape()[0] ||
      !out.getElementType().isF32())
    return emitOpError("result buffer must be memref<")
           << getShape()[0] << "xf32> in shared memory";
  Operation *yield = getBody().front().getTerminator();
  if (yield->getNumOperands() != 1 || !yield->getOperand(0).getType().isF32())
    return emitOpError("body must yield one f32");
  return success();
}

//===----------------------------------------------------------------------===//
// KVarN building blocks
//===----------------------------------------------------------------------===//

LogicalResult FWHTOp::verify() {
  MemRefType t = getBuffer().getType();
  if (!t.getElementType().isF32() || t.getRank() != 2)
    return emitOpError("transforms a rank-2 f32 buffer");
  int64_t len = getLength();
  if (!llvm::isPowerOf2_64(len))
    return emitOpError("chunk length ") << len << " is not a power of two";
  if (getStart() + getCount() * len > t.getDimSize(1))
    return emitOpError("chunks end at channel ")
           << getStart() + getCount() * len << ", past the row's "
           << t.getDimSize(1);
  return success();
}

LogicalResult DenseMixOp::verify() {
  MemRefType in = getInput().getType(), out = getOutput().getType();
  if (in != out || in.getRank() != 2 || !in.getElementType().isF32())
    return emitOpError("mixes between two rank-2 f32 buffers of one type");
  int64_t m2 = int64_t(getMatrix().size());
  int64_t m = int64_t(std::llround(std::sqrt(double(m2))));
  if (m * m != m2 || m < 2 || in.getDimSize(1) % m)
    return emitOpError("matrix must be m x m with m dividing ")
           << in.getDimSize(1) << ", got " << m2 << " entries";
  for (int8_t v : getMatrix())
    if (v != 1 && v != -1)
      return emitOpError("matrix entries must be +1 or -1");
  return success();
}

static LogicalResult verifyPacking(Operation *op, MemRefType codes,
                                   MemRefType packed, int bits) {
  if (!codes.getElementType().isInteger(8) ||
      !packed.getElementType().isInteger(8) || codes.getRank() != 2 ||
      packed.getRank() != 2)
    return op->emitOpError("codes and packed bytes are rank-2 i8 buffers");
  if (8 % bits)
    return op->emitOpError("bits must divide 8");
  if (codes.getDimSize(0) != packed.getDimSize(0) ||
      codes.getDimSize(1) != packed.getDimSize(1) * (8 / bits))
    return op->emitOpError("a row of ")
           << codes.getDimSize(1) << " codes packs into "
           << codes.getDimSize(1) * bits / 8 << " bytes, not "
           << packed.getDimSize(1);
  return success();
}

LogicalResult PackBitsOp::verify() {
  return verifyPacking(*this, getCodes().getType(), getPacked().getType(),
                       getBits());
}

LogicalResult UnpackBitsOp::verify() {
  return verifyPacking(*this, getCodes().getType(), getPacked().getType(),
                       getBits());
}

#define GET_OP_CLASSES
#include "kvarn/Dialect/KVGPU/KVGPUOps.cpp.inc"
