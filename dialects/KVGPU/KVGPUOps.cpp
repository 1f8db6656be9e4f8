//===- KVGPUOps.cpp - kvgpu operations ------------------------------------===//

#include "kvarn/Codegen/LaunchPolicy.h"
#include "kvarn/Dialect/KVGPU/KVGPU.h"

#include "mlir/IR/Builders.h"

#include "llvm/Support/MathExtras.h"

#include <algorithm>
#include <cmath>

using namespace mlir;
using namespace kvarn::kvgpu;

LogicalResult SharedBufferOp::verify() {
  auto type = getBuffer().getType();
  int64_t bytes = type.getElementTypeBitWidth() / 8;
  if (bytes == 0 || getOffset() % bytes)
    return emitOpError("offset ") << getOffset()
                                  << " is not aligned to the element size";
  if (bool(getSlot()) != getSlotBytes().has_value())
    return emitOpError("takes a slot and its bytes together");
  if (getSlotBytes() && *getSlotBytes() % 128)
    return emitOpError("slot bytes ")
           << *getSlotBytes() << " are not a multiple of 128";
  if (getSlotBytes() && type.getNumElements() * bytes > *getSlotBytes())
    return emitOpError("buffer does not fit its slot");
  return success();
}

int64_t SharedBufferOp::getSpannedBytes() {
  auto type = getBuffer().getType();
  int64_t bytes =
      type.getNumElements() * ((type.getElementTypeBitWidth() + 7) / 8);
  if (std::optional<uint64_t> slotBytes = getSlotBytes())
    return (kRingSlots - 1) * int64_t(*slotBytes) + bytes;
  return bytes;
}

LogicalResult PrefetchOp::verify() {
  if (getRows().has_value() != bool(getByteStride()))
    return emitOpError("takes rows and a byte stride together");
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
  if (failed(verifyCopy(*this, getDst().getType(), getByteStrides().size())))
    return failure();
  if (std::optional<ArrayRef<int64_t>> regions = getSwizzledRows()) {
    MemRefType dst = getDst().getType();
    if (dst.getRank() != 1 || !dst.getElementType().isInteger(8))
      return emitOpError("swizzled_rows needs a 1-D i8 destination");
    if (regions->size() % 3)
      return emitOpError("swizzled_rows holds (first, end, row bytes) triples");
    for (size_t i = 0; i < regions->size(); i += 3) {
      int64_t first = (*regions)[i], end = (*regions)[i + 1],
              row = (*regions)[i + 2];
      if (i && first < (*regions)[i - 2])
        return emitOpError("swizzled regions must be in order, apart: [")
               << first << ", " << end << ") starts before the end of the one "
               << "before it, " << (*regions)[i - 2];
      if (first < 0 || end > dst.getNumElements() || first % 16 ||
          !isSwizzledRowBytes(row) || end <= first || (end - first) % row)
        return emitOpError("swizzled region [")
               << first << ", " << end << ") of " << row
               << "-byte rows: whole rows of 32, 64 or a multiple of 128 bytes "
                  "from a 16-byte boundary inside the buffer";
    }
  }
  return success();
}

LogicalResult CopyOutOp::verify() {
  return verifyCopy(*this, getSrc().getType(), getByteStrides().size());
}

//===----------------------------------------------------------------------===//
// Register fragments
//===----------------------------------------------------------------------===//

/// Threads of one program of the kernel enclosing `op` (4 warps outside a
/// kernel).
static int64_t getThreadsPerProgram(Operation *op) {
  for (Operation *p = op; p; p = p->getParentOp())
    if (auto warps = p->getAttrOfType<IntegerAttr>(kNumWarpsAttrName)) {
      auto programs = p->getAttrOfType<IntegerAttr>(kProgramsPerCtaAttrName);
      int threads = kvarn::threadsPerProgram(warps.getInt(),
                                             programs ? programs.getInt() : 1);
      return threads ? threads : warps.getInt() * kWarpSize;
    }
  return 4 * kWarpSize;
}

int64_t kvarn::kvgpu::getWarpsPerProgram(Operation *op) {
  return std::max<int64_t>(getThreadsPerProgram(op) / kWarpSize, 1);
}

int64_t kvarn::kvgpu::getLanesPerProgram(Operation *op) {
  return std::min<int64_t>(getThreadsPerProgram(op), kWarpSize);
}

/// `warp` must be one of a program's warps (when the kernel says how many).
static LogicalResult verifyFragment(Operation *op, VectorType type,
                                    int64_t warp) {
  if (type.isScalable() || type.getNumElements() < 1 ||
      type.getNumElements() > 32)
    return op->emitOpError("holds 1 to 32 elements per lane, got ")
           << type;
  for (Operation *p = op->getParentOp(); p; p = p->getParentOp())
    if (p->hasAttr(kNumWarpsAttrName)) {
      int64_t warps = getWarpsPerProgram(p);
      if (warp >= warps)
        return op->emitOpError("warp ")
               << warp << " is not one of the program's " << warps;
      break;
    }
  return success();
}

LogicalResult FragmentLoadOp::verify() {
  return verifyFragment(*this, getResult().getType(), getWarp());
}

LogicalResult FragmentStoreOp::verify() {
  return verifyFragment(*this, getValue().getType(), getWarp());
}

LogicalResult FragmentFWHTOp::verify() {
  VectorType type = getInput().getType();
  if (failed(verifyFragment(*this, type, getWarp())))
    return failure();
  if (!llvm::isPowerOf2_64(type.getNumElements()))
    return emitOpError("row of 32 x ")
           << type.getNumElements() << " channels is not a power of two";
  return success();
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

//===----------------------------------------------------------------------===//
// PackedMatmulOp
//===----------------------------------------------------------------------===//

int64_t kvarn::kvgpu::getNumThreads(Operation *op) {
  for (Operation *p = op; p; p = p->getParentOp())
    if (auto warps = p->getAttrOfType<IntegerAttr>(kNumWarpsAttrName))
      return warps.getInt() * kWarpSize;
  return 4 * kWarpSize;
}

std::optional<PackedMatmulLayout>
kvarn::kvgpu::getPackedMatmulLayout(int64_t h, int64_t k, int64_t n,
                                    int64_t bits, int64_t threads,
                                    bool transposed) {
  // A thread's accumulators: 32 spilled within the 128 registers of 4 CTAs
  // per SM (sm_80, decode at head_dim 128).
  constexpr int64_t kMaxSums = 16;
  if (h < 1 || k < 1 || n < 1 || bits < 1 || threads % kWarpSize ||
      (8 % bits && !(transposed && bits == 16)))
    return std::nullopt;
  int64_t warps = threads / kWarpSize;
  // Tensor cores: codes below 128 (the bf16 magic number), whole k tiles,
  // whole column tiles per warp, a run that is one aligned load (a power of
  // two of tiles), at most 32 accumulators a thread.
  // Transposed, a lane's piece of a column is 4 codes: one i8 or i16 (f16
  // rows, bits 16: two words).
  bool bitsFit = transposed ? bits == 2 || bits == 4 || bits == 16
                            : bits == 1 || bits == 2 || bits == 4;
  if (bitsFit && k % 16 == 0 && n % (16 * warps) == 0) {
    int64_t columnTiles = n / (16 * warps), headTiles = (h + 7) / 8;
    if (llvm::isPowerOf2_64(columnTiles) && columnTiles * headTiles * 4 <= 32) {
      PackedMatmulLayout layout;
      PackedMatmulMmaTiling tiling{columnTiles, headTiles, k / 16,
                                   2 * columnTiles * bits, transposed};
      if (transposed) {
        // A piece of at most 16 bytes and a power of two of k tiles, which
        // divides the round: pieces of 8 or 16 bits or whole words.
        int64_t round = getMmaSplitRoundTiles(tiling);
        int64_t p = std::min<int64_t>(round & -round, 128 / (4 * bits));
        tiling.pieceTiles = p;
        tiling.runBits = 4 * p * bits;
      }
      layout.mma = tiling;
      layout.scratchFloats = getMmaSplitScratchWords(tiling);
      return layout;
    }
  }
  if (transposed)
    return std::nullopt;
  for (int64_t pieceBits : {32, 16, 8}) {
    int64_t codes = pieceBits / bits;
    if (h * codes > kMaxSums || (n * bits) % pieceBits)
      continue;
    int64_t groups = n / codes;
    int64_t laneGroups = std::min<int64_t>(groups, kWarpSize);
    if (kWarpSize % laneGroups || groups % laneGroups)
      continue;
    int64_t warpGroups = groups / laneGroups;
    if (warpGroups > warps || warps % warpGroups)
      continue;
    int64_t laneSplits = kWarpSize / laneGroups, warpSplits = warps / warpGroups;
    int64_t splits = laneSplits * warpSplits;
    if (k % splits)
      continue;
    return PackedMatmulLayout{std::nullopt, pieceBits,  codes,
                              groups,       laneGroups, laneSplits,
                              warpGroups,   warpSplits, splits,
                              k / splits,   (warpSplits - 1) * h * n};
  }
  return std::nullopt;
}

/// The scratch from `partialOffset` on: per warp the probabilities (2
/// parts x 8 heads x (tokens / 2 + 4) words) and, unless the state is held
/// per warp, the weighted partial [H, D] over them, the warps' statistics
/// and the incoming max and sum.
template <typename Layout>
static void setWarpPartials(Layout &l, int64_t h, int64_t d, int64_t tokens,
                            bool warpStates) {
  int64_t probabilities = 8 * tokens + 64;
  l.partialHeadFloats = d + 4;
  l.partialFloats = llvm::alignTo(
      warpStates ? probabilities
                 : std::max(h * l.partialHeadFloats, probabilities),
      4);
  l.statsOffset = l.partialOffset + l.warps * l.partialFloats;
  l.incomingOffset =
      l.statsOffset + (warpStates ? 0 : l.warps * kRecordAttendStatsFloats);
  l.scratchFloats = l.incomingOffset + (warpStates ? 0 : 16);
}

std::optional<RecordAttendLayout>
kvarn::kvgpu::getRecordAttendLayout(int64_t h, int64_t d, int64_t g,
                                    int64_t kBits, int64_t vBits,
                                    int64_t threads, bool warpStates) {
  auto codeBits = [](int64_t bits) { return bits == 2 || bits == 4; };
  if (h < 1 || h > 8 || d < 32 || d > 256 || d % 32 || !codeBits(kBits) ||
      !codeBits(vBits) || threads % kWarpSize || threads == 0)
    return std::nullopt;
  int64_t warps = threads / kWarpSize;
  if (g % warps)
    return std::nullopt;
  int64_t tokens = g / warps;
  // A K piece (a lane's tokens of one channel) is at most two words; a V
  // piece at least a byte.
  int64_t kPiece = tokens / 8 * kBits, vPiece = d / 8 * vBits;
  if (tokens % 16 || kPiece > 64 || !llvm::isPowerOf2_64(kPiece) ||
      vPiece < 8 || !llvm::isPowerOf2_64(vPiece))
    return std::nullopt;
  RecordAttendLayout l;
  l.warps = warps;
  l.tokensPerWarp = tokens;
  l.kPieceBits = kPiece;
  // D is a multiple of 32 (whole k-tile pairs) and a channel's codes row
  // (G * kBits / 8 = 16 bytes a warp) a multiple of 16 bytes.
  l.keyMatrices = kPiece == 16;
  l.vPieceBits = vPiece;
  l.packedScoreParts = h * kMmaSplitParts <= 8 && tokens >= 32;
  l.kZeroDotOffset = d / 16 * kWarpSize * 2 * kMmaSplitParts;
  l.partialOffset = l.kZeroDotOffset + 8;
  setWarpPartials(l, h, d, tokens, warpStates);
  return l;
}

std::optional<RowsAttendLayout>
kvarn::kvgpu::getRowsAttendLayout(int64_t h, int64_t d, int64_t t,
                                  int64_t threads, bool warpStates) {
  if (h < 1 || h > 8 || d < 16 || d > 256 || d % 16 || t < 16 || t % 16 ||
      threads % kWarpSize || threads == 0)
    return std::nullopt;
  int64_t warps = std::min(threads / kWarpSize, t / 16);
  int64_t tokens = t / warps;
  // Each warp's tokens are whole 16-token tiles, at most 4 (its scores'
  // registers).
  if (t % warps || tokens % 16 || tokens > 64)
    return std::nullopt;
  RowsAttendLayout l;
  l.warps = warps;
  l.tokensPerWarp = tokens;
  l.partialOffset = d / 16 * kWarpSize * 2 * kMmaSplitParts;
  setWarpPartials(l, h, d, tokens, warpStates);
  return l;
}

std::optional<LatentAttendLayout>
kvarn::kvgpu::getLatentAttendLayout(int64_t h, int64_t r, int64_t e, int64_t g,
                                    int64_t bits, int64_t threads) {
  if (h < 1 || h > kLatentHeadsPerTile * kLatentMaxHeadTiles || bits != 4 ||
      e < 32 || e % 32 || threads == 0 || threads % kWarpSize)
    return std::nullopt;
  int64_t warps = threads / kWarpSize;
  if (r % (64 * warps) || g % (16 * warps))
    return std::nullopt;
  LatentAttendLayout l;
  l.warps = warps;
  l.tokensPerWarp = g / warps;
  l.channelsPerWarp = r / warps;
  l.headTiles = (h + kLatentHeadsPerTile - 1) / kLatentHeadsPerTile;
  // Split B fragments, 4 words a lane and k tile (head tile n's q * scale
  // from n fragmentsPerHeadTile, its q_rope's after), read until the second
  // barrier; then q . zero and the warps' maxima.
  l.fragmentsPerHeadTile = (r / 16 + e / 16) * kWarpSize;
  l.zeroDotOffset = l.headTiles * l.fragmentsPerHeadTile * 2 * kMmaSplitParts;
  l.warpMaxOffset = l.zeroDotOffset + l.headSlots();
  // Written after the second barrier, over the fragments: the
  // probabilities, word (part * headSlots + head) * rowWords + i holding
  // tokens 2i, 2i + 1 (rows padded by 4 words: a B fragment's lanes hit 32
  // banks), then the warps' sums (per head, one float a warp).
  l.probabilityOffset = 0;
  l.probabilityRowWords = g / 2 + 4;
  l.warpSumOffset = kMmaSplitParts * l.headSlots() * l.probabilityRowWords;
  l.warpWeightOffset = l.warpSumOffset + l.headSlots() * warps;
  l.scratchFloats = std::max(l.warpMaxOffset + l.headSlots() * warps,
                             l.warpWeightOffset + l.headSlots() * warps);
  return l;
}

LogicalResult BiasedCodePairOp::verify() {
  if (getShift() + getBits() > 16)
    return emitOpError("codes at bit ")
           << getShift() << " of " << getBits()
           << " bits leave a 16-bit half (shift + bits must be <= 16)";
  return success();
}

LogicalResult LoadMatrixOp::verify() {
  MemRefType rows = getRows().getType();
  if (rows.getRank() != 1 || !rows.getElementType().isIntOrFloat() ||
      rows.getElementType().getIntOrFloatBitWidth() != 16)
    return emitOpError("rows are a 1-D buffer of 16-bit elements");
  return success();
}

/// The checks attend_record and attend_rows share: f32 queries [H, D],
/// state m, l [H] and acc [H, D] (in and out; with warp_states [W, H] and
/// [W, H, D] for the CTA's W warps) and scratch. Returns (H, D).
template <typename AttendOp>
static FailureOr<std::pair<int64_t, int64_t>>
verifyAttendState(AttendOp op, bool warpStates) {
  auto isF32 = [](MemRefType t) { return t.getElementType().isF32(); };
  int64_t copies = warpStates ? getNumThreads(op) / kWarpSize : 1;
  int64_t h = op.getM().getType().getNumElements() / copies;
  if (h * copies != op.getM().getType().getNumElements())
    return op.emitOpError("m has ")
           << op.getM().getType().getNumElements()
           << " elements, not one row per warp of the " << copies;
  MemRefType q = op.getQ().getType();
  for (MemRefType t :
       {q, op.getM().getType(), op.getL().getType(), op.getAcc().getType(),
        op.getNewM().getType(), op.getNewL().getType(),
        op.getNewAcc().getType(), op.getScratch().getType()})
    if (!isF32(t))
      return op.emitOpError("queries, state and scratch must be f32");
  if (h < 1 || q.getNumElements() % h)
    return op.emitOpError("q has ")
           << q.getNumElements() << " elements, not H x D with H = " << h;
  int64_t d = q.getNumElements() / h;
  for (MemRefType t :
       {op.getL().getType(), op.getNewM().getType(), op.getNewL().getType()})
    if (t.getNumElements() != copies * h)
      return op.emitOpError("m, l and their results must have ")
             << (copies > 1 ? "W x H = " : "H = ") << copies * h << " elements";
  for (MemRefType t : {op.getAcc().getType(), op.getNewAcc().getType()})
    if (t.getNumElements() != copies * h * d)
      return op.emitOpError("acc must have ")
             << (copies > 1 ? "W x H x D = " : "H x D = ") << copies * h * d
             << " elements";
  return std::make_pair(h, d);
}

LogicalResult AttendRecordOp::verify() {
  FailureOr<std::pair<int64_t, int64_t>> hd =
      verifyAttendState(*this, getWarpStates());
  if (failed(hd))
    return failure();
  auto [h, d] = *hd;
  MemRefType kCodes = getKCodes().getType(), vCodes = getVCodes().getType();
  int64_t kBits = getKBits(), vBits = getVBits();
  for (MemRefType t : {kCodes, vCodes})
    if (t.getRank() != 2 || !t.getElementType().isInteger(8))
      return emitOpError("codes must be rank-2 i8 buffers");
  if (kCodes.getDimSize(0) != d || (kCodes.getDimSize(1) * 8) % kBits)
    return emitOpError("k_codes must be [D, G * k_bits / 8] with D = ") << d;
  int64_t g = kCodes.getDimSize(1) * 8 / kBits;
  if (vCodes.getDimSize(0) != g || vCodes.getDimSize(1) * 8 != d * vBits)
    return emitOpError("v_codes must be [G, D * v_bits / 8] = [")
           << g << ", " << d * vBits / 8 << "]";
  auto isScale = [](MemRefType t, int64_t n) {
    return t.getNumElements() == n &&
           (t.getElementType().isF16() || t.getElementType().isF32());
  };
  if (!isScale(getKScale().getType(), d) || !isScale(getKZero().getType(), d) ||
      !isScale(getKTokenScale().getType(), g) ||
      !isScale(getVScale().getType(), g) || !isScale(getVZero().getType(), g) ||
      !isScale(getVChannelScale().getType(), d))
    return emitOpError("scales must be f16 or f32 with D (k_scale, k_zero, "
                       "v_channel_scale) or G (k_token_scale, v_scale, "
                       "v_zero) elements");
  int64_t threads = getNumThreads(*this);
  std::optional<RecordAttendLayout> layout =
      getRecordAttendLayout(h, d, g, kBits, vBits, threads, getWarpStates());
  if (!layout)
    return emitOpError("no register layout for H = ")
           << h << ", D = " << d << ", G = " << g << ", " << kBits << "/"
           << vBits << " bits over " << threads << " threads";
  if (getScratch().getType().getNumElements() < layout->scratchFloats)
    return emitOpError("scratch has ")
           << getScratch().getType().getNumElements()
           << " floats; the layout needs " << layout->scratchFloats;
  return success();
}

LogicalResult AttendLatentOp::verify() {
  FailureOr<std::pair<int64_t, int64_t>> hr =
      verifyAttendState(*this, /*warpStates=*/false);
  if (failed(hr))
    return failure();
  auto [h, r] = *hr;
  MemRefType codes = getCodes().getType(), rope = getRope().getType(),
             qRope = getQRope().getType();
  int64_t bits = getBits();
  if (codes.getRank() != 2 || !codes.getElementType().isInteger(8) ||
      codes.getDimSize(1) * 8 != r * bits)
    return emitOpError("codes must be [G, R * bits / 8] i8 with R = ") << r;
  int64_t g = codes.getDimSize(0);
  if (!(qRope.getElementType().isF32() || qRope.getElementType().isF16()) ||
      qRope.getNumElements() % h)
    return emitOpError("q_rope must be f16 or f32 [H, E] with H = ") << h;
  int64_t e = qRope.getNumElements() / h;
  if (!rope.getElementType().isF16() || rope.getNumElements() != g * e)
    return emitOpError("rope must be f16 [G, E] = [") << g << ", " << e << "]";
  auto isScale = [](MemRefType t, int64_t n) {
    return t.getNumElements() == n &&
           (t.getElementType().isF16() || t.getElementType().isF32());
  };
  if (!isScale(getScale().getType(), r) || !isScale(getZero().getType(), r) ||
      !isScale(getTokenScale().getType(), g))
    return emitOpError("scales must be f16 or f32 with R (scale, zero) or G "
                       "(token_scale) elements");
  int64_t threads = getNumThreads(*this);
  std::optional<LatentAttendLayout> layout =
      getLatentAttendLayout(h, r, e, g, bits, threads);
  if (!layout)
    return emitOpError("no register layout for H = ")
           << h << ", R = " << r << ", E = " << e << ", G = " << g << ", "
           << bits << " bits over " << threads << " threads";
  if (getScratch().getType().getNumElements() < layout->scratchFloats)
    return emitOpError("scratch has ")
           << getScratch().getType().getNumElements()
           << " floats; the layout needs " << layout->scratchFloats;
  return success();
}

LogicalResult AttendRowsOp::verify() {
  FailureOr<std::pair<int64_t, int64_t>> hd =
      verifyAttendState(*this, getWarpStates());
  if (failed(hd))
    return failure();
  auto [h, d] = *hd;
  MemRefType keys = getKeys().getType(), values = getValues().getType();
  if (!keys.getElementType().isF16() || !values.getElementType().isF16() ||
      keys.getNumElements() != values.getNumElements() ||
      keys.getNumElements() % d)
    return emitOpError("keys and values must be f16 rows of D = ")
           << d << " elements, as many of each";
  int64_t t = keys.getNumElements() / d;
  int64_t threads = getNumThreads(*this);
  std::optional<RowsAttendLayout> layout =
      getRowsAttendLayout(h, d, t, threads, getWarpStates());
  if (!layout)
    return emitOpError("no register layout for H = ")
           << h << ", D = " << d << ", T = " << t << " over " << threads
           << " threads";
  if (getScratch().getType().getNumElements() < layout->scratchFloats)
    return emitOpError("scratch has ")
           << getScratch().getType().getNumElements()
           << " floats; the layout needs " << layout->scratchFloats;
  return success();
}

/// Codes (or f16 values) in one row of the `codes` buffer.
static int64_t codesPerRow(PackedMatmulOp op) {
  auto codes = op.getCodes().getType();
  return codes.getDimSize(1) * codes.getElementTypeBitWidth() / op.getBits();
}

int64_t PackedMatmulOp::getNumRows() {
  return getTransposed() ? codesPerRow(*this)
                         : getCodes().getType().getDimSize(0);
}

int64_t PackedMatmulOp::getNumColumns() {
  return getTransposed() ? getCodes().getType().getDimSize(0)
                         : codesPerRow(*this);
}

LogicalResult PackedMatmulOp::verify() {
  MemRefType a = getA().getType(), codes = getCodes().getType(),
             out = getOut().getType(), scratch = getScratch().getType();
  for (MemRefType t : {a, out, scratch})
    if (t.getRank() != 1 || !t.getElementType().isF32())
      return emitOpError("a, out and scratch are 1-D f32 buffers");
  int64_t bits = getBits();
  if (codes.getRank() == 2 && codes.getElementType().isF16()) {
    if (bits != 16 || !getTransposed())
      return emitOpError("f16 values are transposed rows [N, K], bits 16");
  } else if (codes.getRank() != 2 || !codes.getElementType().isInteger(8)) {
    return emitOpError("codes are a 2-D i8 buffer ")
           << (getTransposed() ? "[N, K * bits / 8]" : "[K, N * bits / 8]")
           << " or f16 rows [N, K]";
  } else if (8 % bits) {
    return emitOpError("bits must divide 8, not ") << bits;
  }
  int64_t k = getNumRows(), n = getNumColumns();
  if (a.getNumElements() % k)
    return emitOpError("a has ")
           << a.getNumElements() << " elements, not a multiple of K = " << k;
  int64_t h = a.getNumElements() / k;
  if (Value scale = getAScale()) {
    auto t = cast<MemRefType>(scale.getType());
    if (t.getRank() != 1 || t.getNumElements() != k ||
        !(t.getElementType().isF16() || t.getElementType().isF32()))
      return emitOpError("scaled_by takes an f16 or f32 buffer of K = ")
             << k << " elements";
  }
  if (out.getNumElements() != h * n)
    return emitOpError("out has ") << out.getNumElements()
                                   << " elements; [H, N] is " << h * n;
  std::optional<PackedMatmulLayout> layout = getPackedMatmulLayout(
      h, k, n, bits, getNumThreads(*this), getTransposed());
  if (!layout)
    return emitOpError(getTransposed() ? "no transposed packed layout for H = "
                                       : "no packed layout for H = ")
           << h << ", K = " << k << ", N = " << n << " over "
           << getNumThreads(*this) << " threads";
  if (scratch.getNumElements() < layout->scratchFloats)
    return emitOpError("scratch has ")
           << scratch.getNumElements() << " floats; the layout needs "
           << layout->scratchFloats;
  return success();
}

//===----------------------------------------------------------------------===//
// SinkhornOp, QuantizeTileOp: tiles held in registers
//===----------------------------------------------------------------------===//

std::optional<RegisterTileGrid>
kvarn::kvgpu::getRegisterTileGrid(int64_t b0, int64_t b1, int64_t threads) {
  // Of the grids that divide the buffer, the one with the fewest indices
  // per thread (n0 + n1: the per-row and per-column state it holds).
  std::optional<RegisterTileGrid> best;
  for (int64_t t1 : {16, 32, 8, 4, 2, 1}) {
    if (threads % t1 || b1 % t1)
      continue;
    int64_t t0 = threads / t1;
    if (b0 % t0)
      continue;
    RegisterTileGrid g{t0, t1, b0 / t0, b1 / t1};
    // Two elements per thread along each dimension at least: the fused
    // first level of TileArithmetic.h's product tree sums stays in-thread.
    if (g.n0 < 2 || g.n1 < 2 || g.n0 * g.n1 > maxRegisterTileElements(threads))
      continue;
    if (!best || g.n0 + g.n1 < best->n0 + best->n1)
      best = g;
  }
  return best;
}

int64_t kvarn::kvgpu::getRegisterTileScratchFloats(int64_t b0, int64_t b1,
                                                  int64_t threads) {
  auto grid = getRegisterTileGrid(b0, b1, threads);
  int64_t own = grid ? threads * (grid->n0 + grid->n1) : 0;
  return (2 * (threads / kWarpSize) + 1) * (2 * b1 + 4) + own;
}

/// The logical [R, C] extents of a 2-D input buffer read maybe transposed.
static LogicalResult verifyRegisterTile(Operation *op, MemRefType input,
                                        bool transpose, int64_t &rows,
                                        int64_t &cols) {
  if (input.getRank() != 2)
    return op->emitOpError("needs a 2-D input buffer");
  Type elt = input.getElementType();
  if (!elt.isF16() && !elt.isBF16() && !elt.isF32())
    return op->emitOpError("reads f16, bf16 or f32 tiles");
  rows = input.getDimSize(transpose ? 1 : 0);
  cols = input.getDimSize(transpose ? 0 : 1);
  return success();
}

static LogicalResult verifyVector(Operation *op, MemRefType t, int64_t n,
                                  StringRef what) {
  if (t.getRank() != 1 || t.getDimSize(0) != n)
    return op->emitOpError(what) << " must have " << n << " elements";
  return success();
}

LogicalResult SinkhornOp::verify() {
  int64_t rows, cols;
  if (failed(verifyRegisterTile(*this, getInput().getType(), getTranspose(),
                                rows, cols)) ||
      failed(verifyVector(*this, getColScale().getType(), cols, "col_scale")) ||
      failed(verifyVector(*this, getRowScale().getType(), rows, "row_scale")))
    return failure();
  if (!getColScale().getType().getElementType().isF32() ||
      !getRowScale().getType().getElementType().isF32() ||
      !getScratch().getType().getElementType().isF32() ||
      getScratch().getType().getRank() != 1)
    return emitOpError("scales and scratch are f32 vectors");
  return success();
}

LogicalResult QuantizeTileOp::verify() {
  int64_t rows, cols;
  if (failed(verifyRegisterTile(*this, getInput().getType(), getTranspose(),
                                rows, cols)) ||
      failed(verifyVector(*this, getColScale().getType(), cols, "col_scale")) ||
      failed(verifyVector(*this, getRowScale().getType(), rows, "row_scale")) ||
      failed(verifyVector(*this, getScale().getType(), rows, "scale")) ||
      failed(verifyVector(*this, getZero().getType(), rows, "zero")) ||
      failed(verifyVector(*this, getOther().getType(), cols, "other")))
    return failure();
  auto codes = getCodes().getType();
  if (codes.getRank() != 2 || codes.getDimSize(0) != rows ||
      codes.getDimSize(1) != cols || !codes.getElementType().isInteger(8))
    return emitOpError("codes must be an i8 [") << rows << ", " << cols
                                                << "] buffer";
  if (getScratch().getType().getRank() != 1 ||
      !getScratch().getType().getElementType().isF32())
    return emitOpError("scratch is an f32 vector");
  return success();
}

#define GET_OP_CLASSES
#include "kvarn/Dialect/KVGPU/KVGPUOps.cpp.inc"
