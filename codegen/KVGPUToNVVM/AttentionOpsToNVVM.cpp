//===- AttentionOpsToNVVM.cpp - packed_matmul, attend_record, attend_rows -===//
//
// kvgpu.packed_matmul: attention's dot products over a record's packed codes
// (stored k-major, or transposed: MLA's token-major latent; or f16 rows:
// MLA's rope keys) with the operands in registers, on tensor cores (bf16
// mma.sync, f16 for f16 rows) or with fma. getPackedMatmulLayout (KVGPU.h)
// decides the strategy and which thread holds which codes; this file emits
// it.
//
// kvgpu.attend_record: a whole online-softmax step over a record block, each
// warp attending its own tokens on tensor cores with its softmax in
// registers (getRecordAttendLayout in KVGPU.h); kvgpu.attend_rows: the same
// over fp16 rows (getRowsAttendLayout). The other operand is split in two
// parts: bf16 for packed_matmul and attend_record's weighted values
// (kvgpu.split_bf16x2, kvgpu.mma_bf16, codes by kvgpu.biased_code_pair), f16
// for attend_record's scores (codes as f16 subnormals) and attend_rows
// (kvgpu.mma_f16). MmaOpsToNVVM.cpp lowers those ops.
//
//===----------------------------------------------------------------------===//

#include "Common.h"

#include "kvarn/Codegen/TileArithmeticEmitters.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <cmath>
#include <limits>

using namespace mlir;
using namespace kvarn::kvgpu;

namespace {

/// x + v on indices; x itself for v = 0 (no instruction).
Value addIndex(OpBuilder &b, Location loc, Value x, int64_t v) {
  return v ? arith::AddIOp::create(b, loc, x, indexConstant(b, loc, v))
                 .getResult()
           : x;
}

/// x * v on indices.
Value mulIndex(OpBuilder &b, Location loc, Value x, int64_t v) {
  return arith::MulIOp::create(b, loc, x, indexConstant(b, loc, v));
}

/// The bytes of shared `buffer` as a 1-D memref of `element` (an integer or
/// float type of at least 8 bits), or failure when `buffer` is not a
/// shared_buffer (or its lowering) aligned to the new element.
FailureOr<Value> sharedView(OpBuilder &rw, Location loc, Value buffer,
                            Type element) {
  auto type = cast<MemRefType>(buffer.getType());
  int64_t bytes =
      type.getNumElements() * type.getElementType().getIntOrFloatBitWidth() / 8;
  int64_t elementBytes = element.getIntOrFloatBitWidth() / 8;
  auto view =
      MemRefType::get({bytes / elementBytes}, element,
                      MemRefLayoutAttrInterface(), type.getMemorySpace());
  if (auto shared = buffer.getDefiningOp<SharedBufferOp>()) {
    if (shared.getOffset() % elementBytes)
      return failure();
    return SharedBufferOp::create(rw, loc, view, shared.getOffset(),
                                  shared.getSlot(), shared.getSlotBytesAttr())
        .getResult();
  }
  if (auto lowered = buffer.getDefiningOp<memref::ViewOp>()) // shared_buffer's
    return memref::ViewOp::create(rw, loc, view, lowered.getSource(),
                                  lowered.getByteShift(), ValueRange())
        .getResult();
  return failure();
}

/// `codes` (a shared buffer of bytes) read as `pieceBits`-bit integers.
FailureOr<Value> piecesView(OpBuilder &rw, Location loc, Value codes,
                            int64_t pieceBits) {
  return sharedView(rw, loc, codes, rw.getIntegerType(pieceBits));
}

/// The code of `bits` bits at bit `shift` of `piece` (i32) as f32: OR-ed
/// into the mantissa of 2^23 and 2^23 subtracted, exact for codes < 2^23,
/// without an integer conversion (ptxas fuses the shift, AND and OR).
Value widenCode(OpBuilder &b, Location loc, Value piece, int64_t shift,
                int64_t bits) {
  Value v = shift ? arith::ShRUIOp::create(b, loc, piece,
                                           i32Constant(b, loc, shift))
                        .getResult()
                  : piece;
  v = arith::AndIOp::create(b, loc, v, i32Constant(b, loc, (1 << bits) - 1));
  v = arith::OrIOp::create(b, loc, v, i32Constant(b, loc, 0x4B000000));
  v = arith::BitcastOp::create(b, loc, b.getF32Type(), v);
  return arith::SubFOp::create(b, loc, v, f32Constant(b, loc, 8388608.0f));
}

/// A kvgpu.biased_code_pair's bf16 pair (128 + low code, 128 + high code)
/// less 128 in each half by one fma.rn.bf16x2 (exact): the codes as bf16,
/// for packed_matmul, whose `a` has both signs (the scores' q . kscale).
Value unbiasCodePair(OpBuilder &b, Location loc, Value biasedPair) {
  auto bf16x2 = VectorType::get({2}, b.getBF16Type());
  Value pair = LLVM::BitcastOp::create(b, loc, bf16x2, biasedPair);
  Value one = LLVM::ConstantOp::create(
      b, loc, bf16x2, DenseElementsAttr::get(bf16x2, b.getFloatAttr(b.getBF16Type(), 1.0)));
  Value minus128 = LLVM::ConstantOp::create(
      b, loc, bf16x2,
      DenseElementsAttr::get(bf16x2, b.getFloatAttr(b.getBF16Type(), -128.0)));
  pair = LLVM::FMAOp::create(b, loc, pair, one, minus128);
  return LLVM::BitcastOp::create(b, loc, b.getI32Type(), pair);
}

/// (x0, x1) as kMmaSplitParts bf16x2 registers, largest part first, each
/// the rounded rest of the ones before it (hi + lo: 16 of fp32's 24 bits,
/// within 2^-17 of each value; PackedMatmulMmaTiling says why that is
/// enough).
std::array<Value, kMmaSplitParts> splitToBf16x2(OpBuilder &b, Location loc,
                                                Value x0, Value x1) {
  auto split = SplitBf16x2Op::create(b, loc, x0, x1);
  return {split.getHi(), split.getLo()};
}

/// (x0, x1) as the f16 pairs hi = (x0, x1) rounded to f16 and lo = the
/// rests rounded, each one i32 register (x0 in the low half): 22 of fp32's
/// 24 bits, for attend_rows' products and attend_record's scores (values
/// within f16's range: |q * kscale| < 65504; below 2^-14 the parts lose
/// precision, ~3e-8 absolute a term).
std::array<Value, kMmaSplitParts> splitToF16x2(OpBuilder &b, Location loc,
                                               Value x0, Value x1) {
  auto f32x2 = VectorType::get({2}, b.getF32Type());
  auto f16x2 = VectorType::get({2}, b.getF16Type());
  Value x = vector::FromElementsOp::create(b, loc, f32x2, ValueRange{x0, x1});
  Value hi = arith::TruncFOp::create(b, loc, f16x2, x);
  Value rest = arith::SubFOp::create(b, loc, x,
                                     arith::ExtFOp::create(b, loc, f32x2, hi));
  Value lo = arith::TruncFOp::create(b, loc, f16x2, rest);
  static_assert(kMmaSplitParts == 2, "hi and lo");
  return {LLVM::BitcastOp::create(b, loc, b.getI32Type(), hi),
          LLVM::BitcastOp::create(b, loc, b.getI32Type(), lo)};
}

/// A lane's B fragment in the split-fragment scratch (fragment f: words
/// 4f .. 4f + 3, one 16-byte access): the two registers (b0, b1 of the
/// m16n8k16 layout) of each part.
struct SplitFragment {
  std::array<std::array<Value, 2>, kMmaSplitParts> parts;
};
static_assert(2 * kMmaSplitParts == 4, "a fragment is one 16-byte access");

/// How an f32 pair becomes the kMmaSplitParts registers of an mma operand
/// (splitToBf16x2, splitToF16x2).
using SplitPairFn = std::array<Value, kMmaSplitParts> (*)(OpBuilder &, Location,
                                                          Value, Value);

/// Splits b0 = (x0, x1) and b1 = (x8, x9) into their parts by `split` and
/// writes them as fragment `f` of `scratch` (f32 words), part by part.
void storeSplitFragment(OpBuilder &b, Location loc, Value scratch, Value f,
                        Value x0, Value x1, Value x8, Value x9,
                        SplitPairFn split) {
  Type f32 = b.getF32Type();
  std::array<Value, kMmaSplitParts> r0 = split(b, loc, x0, x1),
                                    r1 = split(b, loc, x8, x9);
  SmallVector<Value> words;
  for (int p = 0; p < kMmaSplitParts; ++p)
    for (Value w : {r0[p], r1[p]})
      words.push_back(arith::BitcastOp::create(b, loc, f32, w));
  Value at = arith::MulIOp::create(b, loc, f, indexConstant(b, loc, 4));
  vector::StoreOp::create(
      b, loc,
      vector::FromElementsOp::create(b, loc, VectorType::get({4}, f32), words),
      scratch, ValueRange{at}, /*nontemporal=*/false, llvm::MaybeAlign(16));
}

/// Fragment `f` of `scratch` as storeSplitFragment wrote it.
SplitFragment loadSplitFragment(OpBuilder &b, Location loc, Value scratch,
                                Value f) {
  Value at = arith::MulIOp::create(b, loc, f, indexConstant(b, loc, 4));
  Value vec = vector::LoadOp::create(
      b, loc, VectorType::get({4}, b.getF32Type()), scratch, ValueRange{at},
      /*nontemporal=*/false, llvm::MaybeAlign(16));
  SplitFragment fragment;
  for (int p = 0; p < kMmaSplitParts; ++p)
    for (int r = 0; r < 2; ++r)
      fragment.parts[p][r] = arith::BitcastOp::create(
          b, loc, b.getI32Type(),
          vector::ExtractOp::create(b, loc, vec, 2 * p + r));
  return fragment;
}

/// One kvgpu.mma_bf16 or kvgpu.mma_f16 (MmaOp): acc += a (4 registers) x
/// b (2 registers), the registers as scalars.
template <typename MmaOp>
void mma(OpBuilder &b, Location loc, ArrayRef<Value> a, ArrayRef<Value> bRegs,
         MutableArrayRef<Value> acc) {
  Type i32 = b.getI32Type(), f32 = b.getF32Type();
  Value sum = MmaOp::create(
      b, loc,
      vector::FromElementsOp::create(b, loc, VectorType::get({4}, i32), a),
      vector::FromElementsOp::create(b, loc, VectorType::get({2}, i32), bRegs),
      vector::FromElementsOp::create(b, loc, VectorType::get({4}, f32), acc));
  for (int64_t e = 0; e < 4; ++e)
    acc[e] = vector::ExtractOp::create(b, loc, sum, e);
}
constexpr auto mmaBf16 = mma<MmaBf16Op>;
constexpr auto mmaF16 = mma<MmaF16Op>;

std::optional<int64_t> staticByteOffset(Value buffer);

/// One prmt: byte i of the result is byte (selector nibble i) of the eight
/// bytes of `low` (0-3) and `high` (4-7).
Value permuteBytes(OpBuilder &b, Location loc, Value low, Value high,
                   int64_t selector) {
  return LLVM::CallIntrinsicOp::create(
             b, loc, b.getI32Type(), b.getStringAttr("llvm.nvvm.prmt"),
             ValueRange{low, high, i32Constant(b, loc, selector)})
      .getResult(0);
}

SmallVector<Value> interleaveHalves(OpBuilder &b, Location loc,
                                    ArrayRef<Value> low, ArrayRef<Value> high,
                                    int64_t pieceBits);

/// Transposed codes' group kk (4 codes of `bits` bits from bit 4 kk bits of
/// `piece`, its words) as the two biased bf16 pairs of slots (2t, 2t + 1)
/// and (2t + 8, 2t + 9): codes (0, 2) and (1, 3) (the slot order the split
/// of `a` follows: PackedMatmulMmaTiling in KVGPU.h). One register holds codes
/// 0 and 1 in its low half and 2 and 3 in its high half, each half's first code
/// at bit 0 and its second at `bits`: at 4 bits the group's two bytes spread by
/// one prmt, at 2 bits its byte zero-extended by one prmt and copied 12 bits up
/// (codes 2 and 3 sit 4 bits up in the byte); then one kvgpu.biased_code_pair a
/// pair.
std::array<Value, 2> transposedCodePairs(OpBuilder &b, Location loc,
                                         ArrayRef<Value> piece, int64_t kk,
                                         int64_t bits) {
  // Selector nibbles 4 take the zero word's bytes.
  auto prmt = [&](Value word, int64_t selector) {
    return permuteBytes(b, loc, word, i32Constant(b, loc, 0), selector);
  };
  int64_t bit = 4 * kk * bits;
  Value word = piece[bit / 32];
  int64_t byte = bit % 32 / 8;
  Value spread;
  if (bits == 4) {
    // Bytes `byte` and `byte + 1` to bytes 0 and 2.
    spread = prmt(word, byte | 4 << 4 | (byte + 1) << 8 | 4 << 12);
  } else {
    assert(bits == 2 && "transposed codes are 2 or 4 bits (or f16 rows)");
    Value zeroExtended = prmt(word, byte | 4 << 4 | 4 << 8 | 4 << 12);
    spread = arith::OrIOp::create(
        b, loc, zeroExtended,
        arith::ShLIOp::create(b, loc, zeroExtended, i32Constant(b, loc, 12)));
  }
  return {BiasedCodePairOp::create(b, loc, spread, 0, bits),
          BiasedCodePairOp::create(b, loc, spread, bits, bits)};
}

/// Transposed codes (PackedMatmulMmaTiling in KVGPU.h): the first of the
/// four rows lane t holds of k tile kt, 16 P (kt / P) + 4 P t + 4 (kt mod
/// P) for P = pieceTiles.
Value transposedRow(OpBuilder &b, Location loc, const PackedMatmulMmaTiling &T,
                    Value kt, Value t) {
  auto c = [&](int64_t v) { return indexConstant(b, loc, v); };
  int64_t P = T.pieceTiles;
  Value group = arith::MulIOp::create(
      b, loc, arith::DivUIOp::create(b, loc, kt, c(P)), c(16 * P));
  Value inGroup = arith::MulIOp::create(
      b, loc, arith::RemUIOp::create(b, loc, kt, c(P)), c(4));
  return arith::AddIOp::create(
      b, loc,
      arith::AddIOp::create(b, loc, group,
                            arith::MulIOp::create(b, loc, t, c(4 * P))),
      inGroup);
}

/// Word `at + w` of `wordView` (codes as words of 8 to 32 bits) as an i32.
Value loadCodeWord(OpBuilder &b, Location loc, Value wordView, Value at,
                   int64_t w) {
  Value word = memref::LoadOp::create(
      b, loc, wordView,
      ValueRange{arith::AddIOp::create(b, loc, at, indexConstant(b, loc, w))});
  if (!word.getType().isInteger(32))
    word = arith::ExtUIOp::create(b, loc, b.getI32Type(), word);
  return word;
}

/// Transposed codes: lane (g, t)'s piece (T.runBits: 4 codes of each of
/// T.pieceTiles k tiles from kt0) of each column of its run, columns
/// `column` on, as i32 words (`wordView`: the codes as words of that
/// width; `codesOffset`: the codes' byte offset in shared memory, if known).
/// A piece of 8 or 16 bytes is one vector load where the rows and the
/// buffer keep that alignment.
SmallVector<SmallVector<Value, 4>>
loadColumnPieces(OpBuilder &b, Location loc, const PackedMatmulMmaTiling &T,
                 Value wordView, std::optional<int64_t> codesOffset,
                 Value column, Value kt0, Value t, int64_t bits) {
  auto c = [&](int64_t v) { return indexConstant(b, loc, v); };
  Type i32 = b.getI32Type();
  int64_t wordBits = std::clamp<int64_t>(T.runBits, 8, 32);
  int64_t words = std::max<int64_t>(1, T.runBits / 32);
  int64_t k = T.kTiles * 16;
  int64_t wordsPerRow = k * bits / wordBits;
  int64_t pieceBytes = T.runBits / 8;
  bool vectorPieces = (pieceBytes == 8 || pieceBytes == 16) && codesOffset &&
                      *codesOffset % pieceBytes == 0 &&
                      (k * bits / 8) % pieceBytes == 0;
  Value firstWord = arith::DivUIOp::create(
      b, loc,
      arith::MulIOp::create(b, loc, transposedRow(b, loc, T, kt0, t), c(bits)),
      c(wordBits));
  SmallVector<SmallVector<Value, 4>> pieces;
  for (int64_t j = 0; j < 2 * T.columnTiles; ++j) {
    Value row = arith::AddIOp::create(b, loc, column, c(j));
    Value at = arith::AddIOp::create(
        b, loc, arith::MulIOp::create(b, loc, row, c(wordsPerRow)), firstWord);
    SmallVector<Value, 4> piece;
    if (vectorPieces) {
      Value v = vector::LoadOp::create(
          b, loc, VectorType::get({words}, i32), wordView, ValueRange{at},
          /*nontemporal=*/false, llvm::MaybeAlign(pieceBytes));
      for (int64_t w = 0; w < words; ++w)
        piece.push_back(vector::ExtractOp::create(b, loc, v, w));
    }
    for (int64_t w = 0; !vectorPieces && w < words; ++w)
      piece.push_back(loadCodeWord(b, loc, wordView, at, w));
    pieces.push_back(piece);
  }
  return pieces;
}

/// packed_matmul's scale of `a`'s row k (scaled_by), widened to f32; null
/// when it has none.
Value aRowScale(OpBuilder &b, Location loc, PackedMatmulOp op, Value row) {
  Value scale = op.getAScale();
  if (!scale)
    return Value();
  Value x = memref::LoadOp::create(b, loc, scale, row);
  if (!x.getType().isF32())
    x = arith::ExtFOp::create(b, loc, b.getF32Type(), x);
  return x;
}

/// packed_matmul's a[k = row, head] (k-major, or head_major: [H, K]) times
/// `rowScale` (aRowScale, or null).
Value loadA(OpBuilder &b, Location loc, PackedMatmulOp op, Value row,
            Value head, int64_t h, Value rowScale) {
  auto c = [&](int64_t v) { return indexConstant(b, loc, v); };
  int64_t k = op.getNumRows();
  Value at = op.getHeadMajor()
                 ? arith::AddIOp::create(
                       b, loc, arith::MulIOp::create(b, loc, head, c(k)), row)
                 : arith::AddIOp::create(
                       b, loc, arith::MulIOp::create(b, loc, row, c(h)), head);
  Value x = memref::LoadOp::create(b, loc, op.getA(), ValueRange{at});
  return rowScale ? arith::MulFOp::create(b, loc, x, rowScale).getResult() : x;
}

/// The tensor-core strategy (PackedMatmulMmaTiling in KVGPU.h).
LogicalResult lowerOnTensorCores(PackedMatmulOp op, PatternRewriter &rw,
                                 const PackedMatmulMmaTiling &T, int64_t h,
                                 int64_t n, int64_t bits) {
  Location loc = op.getLoc();
  auto c = [&](int64_t v) { return indexConstant(rw, loc, v); };
  int64_t runCodes = 2 * T.columnTiles;
  // A run shorter than a byte is read as its byte and shifted. Transposed,
  // a lane reads one piece (runBits: 4 codes of each of T.pieceTiles k
  // tiles) of each column at a time.
  int64_t wordBits = std::clamp<int64_t>(T.runBits, 8, 32);
  int64_t words = std::max<int64_t>(1, T.runBits / 32);
  FailureOr<Value> wordView = piecesView(rw, loc, op.getCodes(), wordBits);
  if (failed(wordView))
    return rw.notifyMatchFailure(op, "codes are not an aligned shared buffer");
  int64_t wordsPerRow = n * bits / wordBits; // not transposed
  // f16 rows, not codes (bits 16): the values are the A registers as they
  // are, `a` is split in f16 parts, f16 MMAs.
  bool f16Rows = bits == 16;

  Value tid = threadIndex(rw, loc);
  Value warp = arith::DivUIOp::create(rw, loc, tid, c(kWarpSize));
  Value lane = arith::RemUIOp::create(rw, loc, tid, c(kWarpSize));
  Value g = arith::DivUIOp::create(rw, loc, lane, c(4));
  Value t = arith::RemUIOp::create(rw, loc, lane, c(4));
  Value column = arith::AddIOp::create(
      rw, loc, arith::MulIOp::create(rw, loc, warp, c(16 * T.columnTiles)),
      arith::MulIOp::create(rw, loc, g, c(runCodes)));
  // Not transposed: the word of each row where the lane's run starts, and
  // the run's shift within its byte when shorter than one.
  Value wordInRow, subShift;
  if (!T.transposed) {
    Value firstBit = arith::MulIOp::create(rw, loc, column, c(bits));
    wordInRow = arith::DivUIOp::create(rw, loc, firstBit, c(wordBits));
    if (T.runBits < 8)
      subShift = arith::IndexCastOp::create(
          rw, loc, rw.getI32Type(),
          arith::RemUIOp::create(rw, loc, firstBit, c(8)));
  }
  // The B fragments of k tiles [first, first + getMmaSplitRoundTiles), split
  // once per CTA into `scratch` (KVGPU.h): fragment f = ((k tile - first) *
  // headTiles + head tile) * 32 + lane holds, for each part,
  // the lane's two registers: slots 2t, 2t + 1 (rows t, t + 4) and 2t + 8,
  // 2t + 9 (rows t + 8, t + 12) of head 8j + g. Heads past H are zero.
  Value scratch = op.getScratch();
  int64_t roundTiles = getMmaSplitRoundTiles(T);
  auto splitRound = [&](int64_t first) {
    buildStridedLoop(
        rw, loc, tid, getMmaSplitScratchWords(T) / 4, getNumThreads(op),
        [&](OpBuilder &b, Value f) {
          Value fl = arith::RemUIOp::create(b, loc, f, c(kWarpSize));
          Value tile = arith::DivUIOp::create(b, loc, f, c(kWarpSize));
          Value j = arith::RemUIOp::create(b, loc, tile, c(T.headTiles));
          Value kt = arith::AddIOp::create(
              b, loc, arith::DivUIOp::create(b, loc, tile, c(T.headTiles)),
              c(first));
          Value head = arith::AddIOp::create(
              b, loc, arith::MulIOp::create(b, loc, j, c(8)),
              arith::DivUIOp::create(b, loc, fl, c(4)));
          Value valid = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult,
                                              head, c(h));
          Value clamped = arith::MinUIOp::create(b, loc, head, c(h - 1));
          // Slots 2t, 2t + 1, 2t + 8, 2t + 9 (lane t = fl mod 4): rows t,
          // t + 4, t + 8, t + 12, or transposed (P = pieceTiles) rows
          // 16 P (kt / P) + 4 P t + 4 (kt mod P) + 0 .. 3.
          Value ft = arith::RemUIOp::create(b, loc, fl, c(4));
          Value rowBase =
              T.transposed
                  ? transposedRow(b, loc, T, kt, ft)
                  : arith::AddIOp::create(
                        b, loc, arith::MulIOp::create(b, loc, kt, c(16)), ft)
                        .getResult();
          auto aValue = [&](int64_t offset) -> Value {
            Value row = arith::AddIOp::create(b, loc, rowBase, c(offset));
            Value x =
                loadA(b, loc, op, row, clamped, h, aRowScale(b, loc, op, row));
            return arith::SelectOp::create(b, loc, valid, x,
                                           f32Constant(b, loc, 0.0f));
          };
          // The rows of slots 2t, 2t + 1, 2t + 8, 2t + 9 from rowBase:
          // transposed codes pair a group's codes 0 and 2, then 1 and 3
          // (transposedCodePairs); f16 rows are pairs as stored.
          std::array<int64_t, 4> rows = {0, 4, 8, 12};
          if (T.transposed)
            rows = f16Rows ? std::array<int64_t, 4>{0, 1, 2, 3}
                           : std::array<int64_t, 4>{0, 2, 1, 3};
          // In slot order (arguments have no evaluation order).
          Value x0 = aValue(rows[0]), x1 = aValue(rows[1]),
                x8 = aValue(rows[2]), x9 = aValue(rows[3]);
          storeSplitFragment(b, loc, scratch, f, x0, x1, x8, x9,
                             f16Rows ? splitToF16x2 : splitToBf16x2);
        });
    gpu::BarrierOp::create(rw, loc);
  };

  int64_t accCount = T.columnTiles * T.headTiles * 4;
  auto accIndex = [&](int64_t i, int64_t j) {
    return (i * T.headTiles + j) * 4;
  };
  SmallVector<Value> sums(accCount, f32Constant(rw, loc, 0.0f));
  // Rounds of roundTiles k tiles: split, barrier, MMAs; a barrier before
  // the next round's split overwrites the fragments.
  for (int64_t first = 0; first < T.kTiles; first += roundTiles) {
    if (first > 0)
      gpu::BarrierOp::create(rw, loc);
    splitRound(first);
    // One iteration a piece's k tiles (one a tile but transposed).
    int64_t step = T.transposed ? T.pieceTiles : 1;
    auto loop = scf::ForOp::create(
        rw, loc, c(first), c(first + roundTiles), c(step), sums,
        [&](OpBuilder &b, Location, Value kt0, ValueRange accIn) {
          SmallVector<Value> acc(accIn);
          SmallVector<SmallVector<Value, 4>> columnPieces;
          if (T.transposed)
            columnPieces = loadColumnPieces(b, loc, T, *wordView,
                                            staticByteOffset(op.getCodes()),
                                            column, kt0, t, bits);
          for (int64_t kk = 0; kk < step; ++kk) {
            Value kt =
                kk ? arith::AddIOp::create(b, loc, kt0, c(kk)).getResult()
                   : kt0;
            Value rowBase = arith::AddIOp::create(
                b, loc, arith::MulIOp::create(b, loc, kt, c(16)), t);
            // The run of row rowBase + offset as `words` i32 values.
            auto loadRun = [&](int64_t offset) {
              Value row = arith::AddIOp::create(b, loc, rowBase, c(offset));
              Value at = arith::AddIOp::create(
                  b, loc, arith::MulIOp::create(b, loc, row, c(wordsPerRow)),
                  wordInRow);
              SmallVector<Value> run;
              for (int64_t w = 0; w < words; ++w) {
                Value word = loadCodeWord(b, loc, *wordView, at, w);
                if (subShift)
                  word = arith::ShRUIOp::create(b, loc, word, subShift);
                run.push_back(word);
              }
              return run;
            };
            // Slots 2t, 2t + 1, 2t + 8, 2t + 9 read rows t, t + 4, t + 8, t +
            // 12, the two rows of a register's pair interleaved by halves
            // (one prmt per 16 bits of a run); transposed: codes 4 kk .. 4 kk
            // + 3 of the pieces above (transposedCodePairs).
            SmallVector<Value> low, high;
            if (!T.transposed) {
              low = interleaveHalves(b, loc, loadRun(0), loadRun(4), T.runBits);
              high =
                  interleaveHalves(b, loc, loadRun(8), loadRun(12), T.runBits);
            }
            // b: each head tile's fragment, one 16-byte load.
            SmallVector<std::array<Value, kMmaSplitParts>> b0, b1;
            for (int64_t j = 0; j < T.headTiles; ++j) {
              Value f = arith::AddIOp::create(
                  b, loc,
                  arith::MulIOp::create(
                      b, loc,
                      arith::AddIOp::create(
                          b, loc,
                          arith::MulIOp::create(
                              b, loc,
                              arith::SubIOp::create(b, loc, kt, c(first)),
                              c(T.headTiles)),
                          c(j)),
                      c(kWarpSize)),
                  lane);
              SplitFragment fragment = loadSplitFragment(b, loc, scratch, f);
              b0.push_back({fragment.parts[0][0], fragment.parts[1][0]});
              b1.push_back({fragment.parts[0][1], fragment.parts[1][1]});
            }
            // Every column tile's a registers first, then the MMAs part by
            // part across the tiles: consecutive MMAs accumulate into different
            // sums, so they do not wait for one another.
            SmallVector<std::array<Value, 4>> aRegs;
            for (int64_t i = 0; i < T.columnTiles; ++i) {
              if (!T.transposed) {
                // Code j of both rows of a chunk: column j of the run.
                auto pair = [&](ArrayRef<Value> chunks, int64_t j) {
                  return unbiasCodePair(
                      b, loc,
                      BiasedCodePairOp::create(b, loc, chunks[j * bits / 16],
                                               j * bits % 16, bits));
                };
                aRegs.push_back({pair(low, 2 * i), pair(low, 2 * i + 1),
                                 pair(high, 2 * i), pair(high, 2 * i + 1)});
                continue;
              }
              // Columns 2i (m-row g) and 2i + 1 (m-row g + 8); f16 rows are
              // the slots' pairs already, one word each.
              if (f16Rows) {
                auto words = [&](int64_t column, int64_t half) {
                  return columnPieces[column][2 * kk + half];
                };
                aRegs.push_back({words(2 * i, 0), words(2 * i + 1, 0),
                                 words(2 * i, 1), words(2 * i + 1, 1)});
                continue;
              }
              std::array<Value, 2> even = transposedCodePairs(
                                       b, loc, columnPieces[2 * i], kk, bits),
                                   odd = transposedCodePairs(
                                       b, loc, columnPieces[2 * i + 1], kk,
                                       bits);
              aRegs.push_back({unbiasCodePair(b, loc, even[0]),
                               unbiasCodePair(b, loc, odd[0]),
                               unbiasCodePair(b, loc, even[1]),
                               unbiasCodePair(b, loc, odd[1])});
            }
            // Smallest part first.
            for (int p = kMmaSplitParts - 1; p >= 0; --p)
              for (int64_t i = 0; i < T.columnTiles; ++i)
                for (int64_t j = 0; j < T.headTiles; ++j) {
                  int64_t base = accIndex(i, j);
                  auto mmaOp = f16Rows ? mmaF16 : mmaBf16;
                  mmaOp(b, loc, aRegs[i], {b0[j][p], b1[j][p]},
                        MutableArrayRef<Value>(acc).slice(base, 4));
                }
          }
          scf::YieldOp::create(b, loc, acc);
        });
    sums = loop.getResults();
  }

  // Accumulator (i, j): c0, c1 at column 2i of the run, heads 8j + 2t and
  // 8j + 2t + 1; c2, c3 at column 2i + 1.
  for (int64_t j = 0; j < T.headTiles; ++j)
    for (int64_t e = 0; e < 2; ++e) {
      Value head = arith::AddIOp::create(
          rw, loc, arith::MulIOp::create(rw, loc, t, c(2)), c(8 * j + e));
      auto store = [&](OpBuilder &b) {
        Value rowStart = arith::AddIOp::create(
            b, loc, arith::MulIOp::create(b, loc, head, c(n)), column);
        for (int64_t i = 0; i < T.columnTiles; ++i)
          for (int64_t half = 0; half < 2; ++half)
            memref::StoreOp::create(b, loc, sums[accIndex(i, j) + 2 * half + e],
                                    op.getOut(),
                                    ValueRange{arith::AddIOp::create(
                                        b, loc, rowStart, c(2 * i + half))});
      };
      if (h % 8 == 0) {
        store(rw);
        continue;
      }
      Value valid =
          arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::ult, head, c(h));
      scf::IfOp::create(rw, loc, valid, [&](OpBuilder &b, Location) {
        store(b);
        scf::YieldOp::create(b, loc);
      });
    }
  rw.eraseOp(op);
  return success();
}

struct PackedMatmulLowering : OpRewritePattern<PackedMatmulOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(PackedMatmulOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    auto codesType = op.getCodes().getType();
    int64_t bits = op.getBits(), k = op.getNumRows(),
            rowBytes = codesType.getDimSize(1), n = op.getNumColumns(),
            h = op.getA().getType().getNumElements() / k;
    int64_t threads = getNumThreads(op);
    std::optional<PackedMatmulLayout> layout =
        getPackedMatmulLayout(h, k, n, bits, threads, op.getTransposed());
    if (!layout)
      return rw.notifyMatchFailure(op, "no layout (the verifier checks it)");
    const PackedMatmulLayout &L = *layout;
    if (L.mma)
      return lowerOnTensorCores(op, rw, *L.mma, h, n, bits);
    FailureOr<Value> pieces = piecesView(rw, loc, op.getCodes(), L.pieceBits);
    if (failed(pieces))
      return rw.notifyMatchFailure(op, "codes are not an aligned shared buffer");
    int64_t piecesPerRow = rowBytes * 8 / L.pieceBits;
    int64_t sums = h * L.codes;

    // This thread's column group g and split s (KVGPU.h).
    auto c = [&](int64_t v) { return indexConstant(rw, loc, v); };
    Value tid = threadIndex(rw, loc);
    Value warp = arith::DivUIOp::create(rw, loc, tid, c(kWarpSize));
    Value lane = arith::RemUIOp::create(rw, loc, tid, c(kWarpSize));
    Value laneSplit = arith::DivUIOp::create(rw, loc, lane, c(L.laneGroups));
    Value g = arith::AddIOp::create(
        rw, loc,
        arith::MulIOp::create(
            rw, loc, arith::RemUIOp::create(rw, loc, warp, c(L.warpGroups)),
            c(L.laneGroups)),
        arith::RemUIOp::create(rw, loc, lane, c(L.laneGroups)));
    Value warpSplit = arith::DivUIOp::create(rw, loc, warp, c(L.warpGroups));
    Value split = arith::AddIOp::create(
        rw, loc, arith::MulIOp::create(rw, loc, warpSplit, c(L.laneSplits)),
        laneSplit);

    // Rows k = i * splits + split, one a loop iteration: unrolling by two
    // spilled at 128 registers (sm_80, 4 CTAs per SM).
    SmallVector<Value> zeros(sums, f32Constant(rw, loc, 0.0f));
    auto loop = scf::ForOp::create(
        rw, loc, c(0), c(L.rowsPerThread), c(1), zeros,
        [&](OpBuilder &b, Location, Value i, ValueRange accIn) {
          SmallVector<Value> acc(accIn);
          {
            Value row = arith::AddIOp::create(
                b, loc, arith::MulIOp::create(b, loc, i, c(L.splits)), split);
            Value at = arith::AddIOp::create(
                b, loc, arith::MulIOp::create(b, loc, row, c(piecesPerRow)), g);
            Value piece = memref::LoadOp::create(b, loc, *pieces, at);
            if (L.pieceBits < 32)
              piece = arith::ExtUIOp::create(b, loc, b.getI32Type(), piece);
            SmallVector<Value> a;
            Value rowScale = aRowScale(b, loc, op, row);
            for (int64_t r = 0; r < h; ++r)
              a.push_back(loadA(b, loc, op, row, c(r), h, rowScale));
            for (int64_t j = 0; j < L.codes; ++j) {
              Value code = widenCode(b, loc, piece, j * bits, bits);
              for (int64_t r = 0; r < h; ++r) {
                Value &sum = acc[r * L.codes + j];
                sum = LLVM::FMAOp::create(b, loc, a[r], code, sum);
              }
            }
          }
          scf::YieldOp::create(b, loc, acc);
        });
    SmallVector<Value> acc(loop.getResults());

    // The lanes of a group: xor shuffles leave every one the group's sums.
    Value width = i32Constant(rw, loc, kWarpSize);
    for (int64_t mask = L.laneGroups; mask < kWarpSize; mask *= 2)
      for (Value &sum : acc) {
        Value other = gpu::ShuffleOp::create(rw, loc, sum,
                                             i32Constant(rw, loc, mask), width,
                                             gpu::ShuffleMode::XOR)
                          .getShuffleResult();
        sum = arith::AddFOp::create(rw, loc, sum, other);
      }

    // Lane split x of a group writes the sums x, x + laneSplits, ...: the
    // first warp split to `out`, the others to their partials in `scratch`,
    // which are then added to `out` in split order.
    bool partials = L.warpSplits > 1;
    Value first = arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::eq,
                                        warpSplit, c(0));
    Value column = arith::MulIOp::create(rw, loc, g, c(L.codes));
    for (int64_t x = 0; x < sums; ++x) {
      int64_t r = x / L.codes, j = x % L.codes;
      Value mine = arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::eq,
                                         laneSplit, c(x % L.laneSplits));
      scf::IfOp::create(rw, loc, mine, [&](OpBuilder &b, Location) {
        Value at = arith::AddIOp::create(b, loc, c(r * n + j), column);
        if (!partials) {
          memref::StoreOp::create(b, loc, acc[x], op.getOut(), at);
        } else {
          scf::IfOp::create(
              b, loc, first,
              [&](OpBuilder &tb, Location) {
                memref::StoreOp::create(tb, loc, acc[x], op.getOut(), at);
                scf::YieldOp::create(tb, loc);
              },
              [&](OpBuilder &eb, Location) {
                // Warp split w >= 1 writes partials region w - 1.
                Value base = arith::MulIOp::create(
                    eb, loc, arith::SubIOp::create(eb, loc, warpSplit, c(1)),
                    c(h * n));
                memref::StoreOp::create(
                    eb, loc, acc[x], op.getScratch(),
                    ValueRange{arith::AddIOp::create(eb, loc, base, at)});
                scf::YieldOp::create(eb, loc);
              });
        }
        scf::YieldOp::create(b, loc);
      });
    }
    if (partials) {
      gpu::BarrierOp::create(rw, loc);
      buildStridedLoop(rw, loc, tid, h * n, threads,
                       [&](OpBuilder &b, Value o) {
        Value sum = memref::LoadOp::create(b, loc, op.getOut(), o);
        for (int64_t w = 1; w < L.warpSplits; ++w)
          sum = arith::AddFOp::create(
              b, loc, sum,
              memref::LoadOp::create(
                  b, loc, op.getScratch(),
                  ValueRange{arith::AddIOp::create(b, loc, o,
                                                   c((w - 1) * h * n))}));
        memref::StoreOp::create(b, loc, sum, op.getOut(), o);
      });
    }
    rw.eraseOp(op);
    return success();
  }
};

/// 16-bit halves of two pieces of codes (each `pieceBits` bits, as i32
/// words): half h of chunk i holds bits [16 i, 16 i + 16) of piece h, so
/// that the code at one offset of both pieces is one bf16 pair. Each chunk
/// is one prmt (LLVM left the mask, shift and OR two instructions).
SmallVector<Value> interleaveHalves(OpBuilder &b, Location loc,
                                    ArrayRef<Value> low, ArrayRef<Value> high,
                                    int64_t pieceBits) {
  SmallVector<Value> chunks;
  for (int64_t i = 0; i < std::max<int64_t>(1, pieceBits / 16); ++i) {
    // Bytes 0, 1 (even chunks) or 2, 3 (odd) of the low piece, then the
    // same bytes of the high one.
    int64_t selector = i % 2 ? 0x7632 : 0x5410;
    chunks.push_back(permuteBytes(b, loc, low[i / 2], high[i / 2], selector));
  }
  return chunks;
}

/// Where code `j` of `bits` bits lies as a subnormalCodePair: `shift`, the
/// right shift of its chunk (0 or 8: one shift serves the codes of a
/// chunk's high byte), and `at`, its bit in the shifted halves.
struct SubnormalCode {
  int64_t shift, at;
};
SubnormalCode subnormalCode(int64_t j, int64_t bits) {
  int64_t p = j * bits % 16;
  assert(p % 8 + bits <= 10 && "a subnormal f16 holds 10 mantissa bits");
  return {p - p % 8, p % 8};
}

/// What the f16 product of subnormalCodePair's code `j` is to be multiplied
/// by to be the product over the code: 2^(24 - at).
float subnormalCodeFactor(int64_t j, int64_t bits) {
  return std::ldexp(1.0f, 24 - subnormalCode(j, bits).at);
}

/// Code `j` of both halves of `chunk` (interleaveHalves) as the f16 pair
/// code * 2^(at - 24): the code masked in place in the mantissa of a
/// subnormal f16 (exponent 0), one AND, plus one shift for the chunk's high
/// byte, shared by its codes. Exact, and without the bias of 1024.0's
/// mantissa, that would take one f16 subtraction a pair; the consumer
/// scales the product (subnormalCodeFactor: 2^24 for the codes of a 16-bit
/// chunk's low nibble, 2^20 for the next). The tensor cores multiply f16
/// subnormals exactly.
Value subnormalCodePair(OpBuilder &b, Location loc, Value chunk, int64_t j,
                        int64_t bits) {
  SubnormalCode code = subnormalCode(j, bits);
  Value v = chunk;
  if (code.shift)
    v = arith::ShRUIOp::create(b, loc, v, i32Constant(b, loc, code.shift));
  int64_t mask = ((int64_t(1) << bits) - 1) << code.at;
  return arith::AndIOp::create(b, loc, v,
                               i32Constant(b, loc, mask | mask << 16));
}

/// Code `j` of both pieces behind `chunks` (interleaveHalves) as one f16
/// subnormal pair (subnormalCodePair).
Value codeOfHalves(OpBuilder &b, Location loc, ArrayRef<Value> chunks,
                   int64_t j, int64_t bits) {
  return subnormalCodePair(b, loc, chunks[j * bits / 16], j, bits);
}

/// The A fragments of `tiles` m16n8k16 tiles from the interleaved chunks
/// (interleaveHalves) of rows r, r + 1 (`low`: the fragment's low k pair)
/// and r + 8, r + 9 (`high`): f16 subnormal code pairs, fragment i from
/// codes 2i, 2i + 1 of both halves, so that the products of row g of tile i
/// are over code 2i and carry 1 / subnormalCodeFactor(2i), row g + 8's
/// 1 / subnormalCodeFactor(2i + 1). Both of attend_record's products and
/// attend_latent's take their codes this way: exact, with no bias to take
/// off the sums (whose accumulation keeps about fp32's 24 bits of the
/// largest addend: a bias ~100x the product, as bf16 128 + code was,
/// costs that much precision), and one shift for a 16-bit chunk's codes
/// past its low byte.
SmallVector<std::array<Value, 4>>
fragmentsOfChunks(OpBuilder &b, Location loc, ArrayRef<Value> low,
                  ArrayRef<Value> high, int64_t tiles, int64_t bits) {
  SmallVector<std::array<Value, 4>> fragments;
  for (int64_t i = 0; i < tiles; ++i)
    fragments.push_back({codeOfHalves(b, loc, low, 2 * i, bits),
                         codeOfHalves(b, loc, low, 2 * i + 1, bits),
                         codeOfHalves(b, loc, high, 2 * i, bits),
                         codeOfHalves(b, loc, high, 2 * i + 1, bits)});
  return fragments;
}

/// fragmentsOfChunks of the pieces of rows r, r + 1, r + 8, r + 9,
/// `piece(i)` loading row r + i's.
SmallVector<std::array<Value, 4>>
codeFragments(OpBuilder &b, Location loc,
              llvm::function_ref<SmallVector<Value>(int64_t)> piece,
              int64_t pieceBits, int64_t tiles, int64_t bits) {
  SmallVector<Value> row0 = piece(0), row1 = piece(1);
  SmallVector<Value> low = interleaveHalves(b, loc, row0, row1, pieceBits);
  SmallVector<Value> row8 = piece(8), row9 = piece(9);
  SmallVector<Value> high = interleaveHalves(b, loc, row8, row9, pieceBits);
  return fragmentsOfChunks(b, loc, low, high, tiles, bits);
}

/// The byte offset of shared `buffer` in the kernel's shared memory where
/// it is a constant, for the alignment it has: a ring slot's offset, whose
/// slots are multiples of 128 bytes apart, stands for every slot (callers
/// ask for alignments up to 16).
std::optional<int64_t> staticByteOffset(Value buffer) {
  if (auto shared = buffer.getDefiningOp<SharedBufferOp>())
    return shared.getOffset();
  if (auto view = buffer.getDefiningOp<memref::ViewOp>()) {
    Value shift = view.getByteShift();
    if (std::optional<int64_t> constant = getConstantIntValue(shift))
      return *constant;
    // A ring slot's lowering: offset + slot * N (in either order).
    if (auto add = shift.getDefiningOp<arith::AddIOp>())
      for (auto [constant, scaled] : {std::pair(add.getLhs(), add.getRhs()),
                                      std::pair(add.getRhs(), add.getLhs())})
        if (auto mul = scaled.getDefiningOp<arith::MulIOp>())
          if (std::optional<int64_t> slotBytes =
                  getConstantIntValue(mul.getRhs());
              slotBytes && *slotBytes % 128 == 0)
            if (std::optional<int64_t> offset = getConstantIntValue(constant))
              return offset;
  }
  return std::nullopt;
}

/// Where a field stored through kvgpu.copy_in's `swizzled_rows` (rows of
/// `rowBytes`, the field's first byte at 0) keeps its unit `at` (units of
/// `unitBytes`, within one 16-byte chunk): the unit's index. A reader
/// swizzles a lane's base once and steps from it by whole
/// swizzlePeriodBytes, which keep the swizzle.
Value swizzledIndex(OpBuilder &b, Location loc, Value at, int64_t unitBytes,
                    int64_t rowBytes) {
  Value byte = mulIndex(b, loc, at, unitBytes);
  return arith::DivUIOp::create(b, loc, swizzledByte(b, loc, byte, rowBytes),
                                indexConstant(b, loc, unitBytes));
}

/// max, or 0 where it is -inf (no token seen): the operand of expBelow,
/// computed once per row, so that the exps of -inf scores are 0 without a
/// test each (-inf - -inf would be NaN).
Value finiteMax(OpBuilder &b, Location loc, Value max) {
  Value none = arith::CmpFOp::create(
      b, loc, arith::CmpFPredicate::OEQ, max,
      f32Constant(b, loc, -std::numeric_limits<float>::infinity()));
  return arith::SelectOp::create(b, loc, none, f32Constant(b, loc, 0.0f), max);
}

/// exp(x - max), 0 for x = -inf; `max` is finiteMax's. The difference is
/// taken before the scaling by log2(e): exact where x = max, so that a
/// state's own rescaling is exactly 1. (x log2(e) - max log2(e) as one fma
/// would carry the rounding of max log2(e) into l, and from there into a
/// split's log-sum-exp: 2e-4 apart from single decode with a sink token's
/// score near 1e4.)
Value expBelow(OpBuilder &b, Location loc, Value x, Value max) {
  return kvarn::codegen::emitFastExp(b, loc,
                                     arith::SubFOp::create(b, loc, x, max));
}

/// The scores of each m tile: the parts' sums (partScores[part][tile][e])
/// added smallest first.
SmallVector<SmallVector<Value>>
sumParts(OpBuilder &b, Location loc,
         ArrayRef<SmallVector<SmallVector<Value>>> partScores) {
  SmallVector<SmallVector<Value>> sums = partScores.back();
  for (int p = int(partScores.size()) - 2; p >= 0; --p)
    for (size_t i = 0; i < sums.size(); ++i)
      for (int64_t e = 0; e < 4; ++e)
        sums[i][e] =
            arith::AddFOp::create(b, loc, sums[i][e], partScores[p][i][e]);
  return sums;
}

/// The weighted values' B registers of k tile `kt` from the warp's
/// probabilities `region` of the scratch (word (part * partRows + head) *
/// `rowWords` + i holds the pair of tokens 2i, 2i + 1): [half][part], half
/// 0 tokens 16 kt + 2t, + 1 and half 1 the same + 8, of head firstHead + g.
SmallVector<std::array<Value, kMmaSplitParts>>
loadProbabilityFragments(OpBuilder &b, Location loc, Value scratch,
                         Value region, Value lg, Value lt, int64_t rowWords,
                         int64_t kt, int64_t firstHead, int64_t partRows) {
  auto c = [&](int64_t v) { return indexConstant(b, loc, v); };
  SmallVector<std::array<Value, kMmaSplitParts>> parts(2);
  for (int64_t half = 0; half < 2; ++half)
    for (int p = 0; p < kMmaSplitParts; ++p) {
      int64_t row = firstHead + partRows * p;
      Value head =
          row ? arith::AddIOp::create(b, loc, lg, c(row)).getResult() : lg;
      Value word = arith::AddIOp::create(b, loc, lt, c(8 * kt + 4 * half));
      Value at = arith::AddIOp::create(
          b, loc, region,
          arith::AddIOp::create(
              b, loc, arith::MulIOp::create(b, loc, head, c(rowWords)), word));
      parts[half][p] = arith::BitcastOp::create(
          b, loc, b.getI32Type(), memref::LoadOp::create(b, loc, scratch, at));
    }
  return parts;
}

/// Step 1 of attend_record and attend_rows: the scores' B fragments of
/// x[head, channel] (`value(b, head * D, channel)`) split into f16 parts
/// (splitToF16x2: both ops' scores are f16 products) in `scratch`: fragment f =
/// k tile * 32 + lane holds every part of the lane's two registers, slots 2t,
/// 2t + 1 and 2t + 8, 2t + 9 of head g. Only the 4 H lanes of a k tile that
/// hold a head compute theirs; the others' fragments (heads past H) are zeros.
/// With `packedParts` (RecordAttendLayout::packedScoreParts, H <= 4) a
/// fragment is one part's two registers (words 2f, 2f + 1): lane (g, t)'s
/// is the hi part of head g for g < 4, the lo part of head g - 4 otherwise.
/// No barrier.
void emitQueryFragments(OpBuilder &rw, Location loc, Value tid, int64_t threads,
                        int64_t h, int64_t d, Value scratch,
                        function_ref<Value(OpBuilder &, Value, Value)> value,
                        bool packedParts = false) {
  auto c = [&](int64_t v) { return indexConstant(rw, loc, v); };
  int64_t kTiles = d / 16;
  auto f32x4 = VectorType::get({4}, rw.getF32Type());
  Type f32 = rw.getF32Type();
  auto f32x2 = VectorType::get({2}, f32);
  // With packed parts, a fragment's hi and lo registers go to fragments f
  // and f + 16 (columns h and h + 4), one 8-byte word pair each.
  auto storePart = [&](OpBuilder &b, Value f, Value w0, Value w1) {
    vector::StoreOp::create(
        b, loc,
        vector::FromElementsOp::create(
            b, loc, f32x2,
            ValueRange{arith::BitcastOp::create(b, loc, f32, w0),
                       arith::BitcastOp::create(b, loc, f32, w1)}),
        scratch, ValueRange{mulIndex(b, loc, f, 2)},
        /*nontemporal=*/false, llvm::MaybeAlign(8));
  };
  // Fragment f = 32 kt + fl of head fl / 4: channels 16 kt + 2 (fl % 4)
  // (+ 1, + 8, + 9).
  buildThreadStridedLoop(
      rw, loc, tid, kTiles * 4 * h, threads, [&](OpBuilder &b, Value e) {
        Value fl = arith::RemUIOp::create(b, loc, e, c(4 * h));
        Value kt = arith::DivUIOp::create(b, loc, e, c(4 * h));
        Value head = arith::DivUIOp::create(b, loc, fl, c(4));
        Value first = arith::AddIOp::create(
            b, loc, mulIndex(b, loc, kt, 16),
            mulIndex(b, loc, arith::RemUIOp::create(b, loc, fl, c(4)), 2));
        Value row = mulIndex(b, loc, head, d);
        auto aValue = [&](int64_t slot) -> Value {
          return value(b, row, addIndex(b, loc, first, slot));
        };
        // In slot order (arguments have no evaluation order).
        Value x0 = aValue(0), x1 = aValue(1), x8 = aValue(8), x9 = aValue(9);
        Value f =
            arith::AddIOp::create(b, loc, mulIndex(b, loc, kt, kWarpSize), fl);
        if (!packedParts) {
          storeSplitFragment(b, loc, scratch, f, x0, x1, x8, x9, splitToF16x2);
          return;
        }
        std::array<Value, kMmaSplitParts> r0 = splitToF16x2(b, loc, x0, x1),
                                          r1 = splitToF16x2(b, loc, x8, x9);
        storePart(b, f, r0[0], r1[0]);
        storePart(b, addIndex(b, loc, f, 16), r0[1], r1[1]);
      });
  if (packedParts) {
    // Columns of no head: [H, 4) and [H + 4, 8).
    if (h < 4)
      buildThreadStridedLoop(
          rw, loc, tid, kTiles * 8 * (4 - h), threads,
          [&](OpBuilder &b, Value e) {
            int64_t perTile = 8 * (4 - h);
            Value fl = arith::RemUIOp::create(b, loc, e, c(perTile));
            Value kt = arith::DivUIOp::create(b, loc, e, c(perTile));
            // fl / 4 counts the empty columns of a part: column h + that,
            // in the lo part's half from 4 - h on.
            Value column = arith::DivUIOp::create(b, loc, fl, c(4));
            Value lo = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::uge,
                                             column, c(4 - h));
            column = arith::AddIOp::create(
                b, loc, addIndex(b, loc, column, h),
                arith::SelectOp::create(b, loc, lo, c(h), c(0)));
            Value lane =
                arith::AddIOp::create(b, loc, mulIndex(b, loc, column, 4),
                                      arith::RemUIOp::create(b, loc, fl, c(4)));
            Value f = arith::AddIOp::create(
                b, loc, mulIndex(b, loc, kt, kWarpSize), lane);
            Value zero = i32Constant(b, loc, 0);
            storePart(b, f, zero, zero);
          });
    return;
  }
  if (h < 8)
    buildThreadStridedLoop(
        rw, loc, tid, kTiles * 4 * (8 - h), threads,
        [&](OpBuilder &b, Value e) {
          Value fl = addIndex(
              b, loc, arith::RemUIOp::create(b, loc, e, c(4 * (8 - h))), 4 * h);
          Value kt = arith::DivUIOp::create(b, loc, e, c(4 * (8 - h)));
          Value f = arith::AddIOp::create(b, loc,
                                          mulIndex(b, loc, kt, kWarpSize), fl);
          Value zero = f32Constant(b, loc, 0.0f);
          vector::StoreOp::create(
              b, loc,
              vector::FromElementsOp::create(b, loc, f32x4,
                                             SmallVector<Value>(4, zero)),
              scratch, ValueRange{mulIndex(b, loc, f, 4)},
              /*nontemporal=*/false, llvm::MaybeAlign(16));
        });
}

/// Element `i` of the shared `buffer` (f16 or f32) as f32.
Value loadWidened(OpBuilder &b, Location loc, Value buffer, Value i) {
  Value x = memref::LoadOp::create(b, loc, buffer, i);
  return x.getType().isF32()
             ? x
             : arith::ExtFOp::create(b, loc, b.getF32Type(), x).getResult();
}

/// x of lane ^ mask (a warp-wide xor shuffle).
Value shuffleXorInWarp(OpBuilder &b, Location loc, Value x, int64_t mask) {
  return gpu::ShuffleOp::create(b, loc, x, i32Constant(b, loc, mask),
                                i32Constant(b, loc, kWarpSize),
                                gpu::ShuffleMode::XOR)
      .getShuffleResult();
}

/// The max or sum of v over the lanes that differ from this one in the
/// bits from `firstMask` up (xor shuffles firstMask, 2 firstMask, ..., 16):
/// every lane of a row gets the row's.
Value reduceOverLanes(OpBuilder &b, Location loc, Value v, int64_t firstMask,
                      bool isMax) {
  for (int64_t mask = firstMask; mask < kWarpSize; mask *= 2) {
    Value other = shuffleXorInWarp(b, loc, v, mask);
    v = isMax ? arith::MaximumFOp::create(b, loc, v, other).getResult()
              : arith::AddFOp::create(b, loc, v, other).getResult();
  }
  return v;
}

/// n consecutive elements of `view` (the flat view of the shared buffer
/// `buffer`) from `first` (a multiple of n), widened to f32: one vector load
/// where the buffer keeps that alignment (every record field and state
/// buffer today), else one by one.
SmallVector<Value> loadWidenedRun(OpBuilder &b, Location loc, Value view,
                                  Value buffer, Value first, int64_t n) {
  Type type = cast<MemRefType>(view.getType()).getElementType();
  int64_t bytes = n * type.getIntOrFloatBitWidth() / 8;
  std::optional<int64_t> at = staticByteOffset(buffer);
  SmallVector<Value> out;
  if (at && *at % bytes == 0) {
    Value vec = vector::LoadOp::create(
        b, loc, VectorType::get({n}, type), view, ValueRange{first},
        /*nontemporal=*/false, llvm::MaybeAlign(bytes));
    for (int64_t k = 0; k < n; ++k)
      out.push_back(vector::ExtractOp::create(b, loc, vec, k));
  } else {
    for (int64_t k = 0; k < n; ++k)
      out.push_back(memref::LoadOp::create(
          b, loc, view, ValueRange{addIndex(b, loc, first, k)}));
  }
  for (Value &x : out)
    if (!type.isF32())
      x = arith::ExtFOp::create(b, loc, b.getF32Type(), x);
  return out;
}

/// Step 1's sum_c q[h, c] zero[c] (q [H, D] f32, zero [D] f16 or f32) of
/// attend_record and attend_latent: one warp a head, its lane 0 writing it
/// to scratch[offset + h]. D is a multiple of 32 (both layouts'), so every
/// lane's channels exist. No barrier.
void emitZeroDots(OpBuilder &rw, Location loc, Value warp, Value lane,
                  int64_t warps, int64_t h, int64_t d, Value q, Value zero,
                  Value scratch, int64_t offset) {
  auto c = [&](int64_t v) { return indexConstant(rw, loc, v); };
  for (int64_t first = 0; first < h; first += warps) {
    Value head = addIndex(rw, loc, warp, first);
    Value mine =
        arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::ult, head, c(h));
    scf::IfOp::create(rw, loc, mine, [&](OpBuilder &b, Location) {
      Value sum;
      for (int64_t ch = 0; ch < d; ch += kWarpSize) {
        Value at = addIndex(b, loc, lane, ch);
        Value qv =
            memref::LoadOp::create(b, loc, q,
                                   ValueRange{arith::AddIOp::create(
                                       b, loc, mulIndex(b, loc, head, d), at)});
        Value z = memref::LoadOp::create(b, loc, zero, ValueRange{at});
        if (!z.getType().isF32())
          z = arith::ExtFOp::create(b, loc, b.getF32Type(), z);
        Value x = arith::MulFOp::create(b, loc, qv, z);
        sum = ch ? arith::AddFOp::create(b, loc, sum, x).getResult() : x;
      }
      sum = WarpReduceOp::create(b, loc, ReduceKind::Add, sum);
      Value lane0 =
          arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, lane, c(0));
      scf::IfOp::create(b, loc, lane0, [&](OpBuilder &tb, Location) {
        memref::StoreOp::create(tb, loc, sum, scratch,
                                ValueRange{addIndex(tb, loc, head, offset)});
        scf::YieldOp::create(tb, loc);
      });
      scf::YieldOp::create(b, loc);
    });
  }
}

/// Where the warps of attend_record and attend_rows leave their partial
/// states in the scratch (RecordAttendLayout, RowsAttendLayout).
struct WarpPartials {
  int64_t warps, partialOffset, partialFloats, statsOffset, incomingOffset;
  int64_t headFloats; // a head's row in a partial (partialHeadFloats)
};

/// How attend_record's merged sums become values: `scale(b, channel)`
/// (vchannel) scales the weighted sums, each times `codeFactors[channel %
/// 4]` (subnormalCodeFactor), plus their p . vzero terms.
struct ChannelScaling {
  function_ref<Value(OpBuilder &, Value)> scale;
  std::array<float, 4> codeFactors;
};

/// The last steps of attend_record and attend_rows: the incoming max and
/// sum go to the scratch (so that the new state may be written over the
/// old one), one barrier, then the warps' partials (weighted [H, D] per
/// warp, and its max, sum and p . vzero term of 8 heads) meet the incoming
/// state, four channels a thread. Without `scaling` (attend_rows) the
/// weighted sums are the values' and there are no p . vzero terms.
void emitMergeWarpPartials(OpBuilder &rw, Location loc, Value tid,
                           int64_t threads, int64_t h, int64_t d,
                           const WarpPartials &P, Value scratch, Value mIn,
                           Value lIn, Value accIn, Value mOut, Value lOut,
                           Value accOut,
                           std::optional<ChannelScaling> scaling) {
  auto c = [&](int64_t v) { return indexConstant(rw, loc, v); };
  auto f32x4 = VectorType::get({4}, rw.getF32Type());
  Value stateReader =
      arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::ult, tid, c(h));
  scf::IfOp::create(rw, loc, stateReader, [&](OpBuilder &b, Location) {
    Value at = addIndex(b, loc, tid, P.incomingOffset);
    memref::StoreOp::create(
        b, loc, memref::LoadOp::create(b, loc, mIn, ValueRange{tid}), scratch,
        ValueRange{at});
    memref::StoreOp::create(
        b, loc, memref::LoadOp::create(b, loc, lIn, ValueRange{tid}), scratch,
        ValueRange{addIndex(b, loc, at, 8)});
    scf::YieldOp::create(b, loc);
  });
  gpu::BarrierOp::create(rw, loc);

  buildThreadStridedLoop(
      rw, loc, tid, h * d / 4, threads, [&](OpBuilder &b, Value i) {
        Value head = arith::DivUIOp::create(b, loc, i, c(d / 4));
        Value first =
            mulIndex(b, loc, arith::RemUIOp::create(b, loc, i, c(d / 4)), 4);
        Value incoming = addIndex(b, loc, head, P.incomingOffset);
        Value old = memref::LoadOp::create(b, loc, scratch, incoming);
        SmallVector<Value> maxes, sums, zeroTerms;
        Value mx = old;
        for (int64_t w = 0; w < P.warps; ++w) {
          Value at = addIndex(b, loc, head,
                              P.statsOffset + kRecordAttendStatsFloats * w);
          maxes.push_back(memref::LoadOp::create(b, loc, scratch, at));
          sums.push_back(
              memref::LoadOp::create(b, loc, scratch, addIndex(b, loc, at, 8)));
          if (scaling)
            zeroTerms.push_back(memref::LoadOp::create(
                b, loc, scratch, addIndex(b, loc, at, 16)));
          mx = arith::MaximumFOp::create(b, loc, mx, maxes.back());
        }
        Value finiteMx = finiteMax(b, loc, mx);
        Value alpha = expBelow(b, loc, old, finiteMx);
        Value hd =
            arith::AddIOp::create(b, loc, mulIndex(b, loc, head, d), first);
        Value accVec =
            vector::LoadOp::create(b, loc, f32x4, accIn, ValueRange{hd},
                                   /*nontemporal=*/false, llvm::MaybeAlign(16));
        Value l = arith::MulFOp::create(
            b, loc, alpha,
            memref::LoadOp::create(b, loc, scratch,
                                   addIndex(b, loc, incoming, 8)));
        SmallVector<Value> betas;
        Value zeroTerm;
        for (int64_t w = 0; w < P.warps; ++w) {
          betas.push_back(expBelow(b, loc, maxes[w], finiteMx));
          if (scaling)
            zeroTerm = w ? LLVM::FMAOp::create(b, loc, betas[w], zeroTerms[w],
                                               zeroTerm)
                               .getResult()
                         : arith::MulFOp::create(b, loc, betas[w], zeroTerms[w])
                               .getResult();
        }
        SmallVector<Value> sum(4);
        Value partialAt = arith::AddIOp::create(
            b, loc, mulIndex(b, loc, head, P.headFloats), first);
        for (int64_t w = 0; w < P.warps; ++w) {
          Value beta = betas[w];
          l = LLVM::FMAOp::create(b, loc, beta, sums[w], l);
          Value part = vector::LoadOp::create(
              b, loc, f32x4, scratch,
              ValueRange{addIndex(b, loc, partialAt,
                                  P.partialOffset + w * P.partialFloats)},
              /*nontemporal=*/false, llvm::MaybeAlign(16));
          for (int64_t e = 0; e < 4; ++e) {
            Value x = vector::ExtractOp::create(b, loc, part, e);
            sum[e] =
                w ? LLVM::FMAOp::create(b, loc, beta, x, sum[e]).getResult()
                  : arith::MulFOp::create(b, loc, beta, x).getResult();
          }
        }
        SmallVector<Value> out;
        for (int64_t e = 0; e < 4; ++e) {
          Value value = sum[e];
          if (scaling)
            value = arith::MulFOp::create(
                b, loc,
                LLVM::FMAOp::create(
                    b, loc, sum[e],
                    f32Constant(b, loc, scaling->codeFactors[e]), zeroTerm),
                scaling->scale(b, addIndex(b, loc, first, e)));
          out.push_back(LLVM::FMAOp::create(
              b, loc, alpha, vector::ExtractOp::create(b, loc, accVec, e),
              value));
        }
        vector::StoreOp::create(
            b, loc, vector::FromElementsOp::create(b, loc, f32x4, out), accOut,
            ValueRange{hd}, /*nontemporal=*/false, llvm::MaybeAlign(16));
        Value writer = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq,
                                             first, c(0));
        scf::IfOp::create(b, loc, writer, [&](OpBuilder &tb, Location) {
          memref::StoreOp::create(tb, loc, mx, mOut, ValueRange{head});
          memref::StoreOp::create(tb, loc, l, lOut, ValueRange{head});
          scf::YieldOp::create(tb, loc);
        });
      });
}

/// A lane's weighted sums of one head, for emitWarpStateUpdate: runs of
/// consecutive channels, `values` from channel `first` on (runs of four or
/// more are read and written four at a time: `first` a multiple of 4).
struct ChannelRun {
  Value first;
  SmallVector<Value> values;
};

/// The statistics of one head over the warp's tokens of a block.
struct BlockStats {
  Value max, sum;
  Value zeroTerm; // p . vzero (attend_record), or null
};

/// With warp_states: reads the warp's row `warp * h + head` of the incoming
/// max and sum, before any lane of the warp writes (the caller syncs the
/// warp between this and emitWarpStateUpdate). `head` is clamped into
/// range: lanes of heads past H read a row they leave alone.
std::pair<Value, Value> loadWarpStateRow(OpBuilder &b, Location loc, Value warp,
                                         Value head, int64_t h, Value mIn,
                                         Value lIn) {
  Value row = arith::AddIOp::create(
      b, loc, mulIndex(b, loc, warp, h),
      arith::MinUIOp::create(b, loc, head, indexConstant(b, loc, h - 1)));
  return {memref::LoadOp::create(b, loc, mIn, ValueRange{row}),
          memref::LoadOp::create(b, loc, lIn, ValueRange{row})};
}

/// With warp_states: the block's partial of head `head` (this lane's
/// channels in `runs`, the warp's statistics in `stats`) folded into the
/// warp's own row of the state, the incoming max and sum `old` as
/// loadWarpStateRow read them: acc = alpha acc + beta (weighted + p . vzero)
/// vchannel, l = alpha l + beta sum, m = max(m, block max). The lane
/// `writer` writes m and l. `channelScales(b, first, n)`, where given,
/// reads vchannel of n channels from `first` on.
void foldIntoWarpRow(
    OpBuilder &b, Location loc, Value warp, Value head, int64_t h, int64_t d,
    std::pair<Value, Value> old, const BlockStats &stats,
    ArrayRef<ChannelRun> runs,
    function_ref<SmallVector<Value>(OpBuilder &, Value, int64_t)> channelScales,
    Value accIn, Value mOut, Value lOut, Value accOut, Value writer) {
  auto [mOld, lOld] = old;
  Value mx = arith::MaximumFOp::create(b, loc, mOld, stats.max);
  Value finiteMx = finiteMax(b, loc, mx);
  Value alpha = expBelow(b, loc, mOld, finiteMx);
  Value beta = expBelow(b, loc, stats.max, finiteMx);
  Value betaZero =
      stats.zeroTerm
          ? arith::MulFOp::create(b, loc, beta, stats.zeroTerm).getResult()
          : Value();
  Value row = arith::AddIOp::create(b, loc, mulIndex(b, loc, warp, h), head);
  Value rowAt = mulIndex(b, loc, row, d);
  auto f32x4 = VectorType::get({4}, b.getF32Type());
  for (const ChannelRun &run : runs) {
    int64_t n = run.values.size();
    int64_t step = n % 4 == 0 ? 4 : 1;
    for (int64_t k = 0; k < n; k += step) {
      Value first = addIndex(b, loc, run.first, k);
      Value at = arith::AddIOp::create(b, loc, rowAt, first);
      SmallVector<Value> olds;
      if (step == 4) {
        Value vec =
            vector::LoadOp::create(b, loc, f32x4, accIn, ValueRange{at},
                                   /*nontemporal=*/false, llvm::MaybeAlign(16));
        for (int64_t e = 0; e < 4; ++e)
          olds.push_back(vector::ExtractOp::create(b, loc, vec, e));
      } else {
        olds.push_back(memref::LoadOp::create(b, loc, accIn, ValueRange{at}));
      }
      SmallVector<Value> scales;
      if (channelScales)
        scales = channelScales(b, first, step);
      // beta (weighted + zero term) as one fma, times vchannel, plus alpha
      // acc: three instructions a channel.
      SmallVector<Value> out;
      for (int64_t e = 0; e < step; ++e) {
        Value v =
            betaZero
                ? LLVM::FMAOp::create(b, loc, run.values[k + e], beta, betaZero)
                      .getResult()
                : arith::MulFOp::create(b, loc, run.values[k + e], beta)
                      .getResult();
        if (channelScales)
          v = arith::MulFOp::create(b, loc, v, scales[e]);
        out.push_back(LLVM::FMAOp::create(b, loc, alpha, olds[e], v));
      }
      if (step == 4)
        vector::StoreOp::create(
            b, loc, vector::FromElementsOp::create(b, loc, f32x4, out), accOut,
            ValueRange{at}, /*nontemporal=*/false, llvm::MaybeAlign(16));
      else
        memref::StoreOp::create(b, loc, out[0], accOut, ValueRange{at});
    }
  }
  scf::IfOp::create(b, loc, writer, [&](OpBuilder &tb, Location) {
    memref::StoreOp::create(tb, loc, mx, mOut, ValueRange{row});
    memref::StoreOp::create(
        tb, loc,
        LLVM::FMAOp::create(tb, loc, beta, stats.sum,
                            arith::MulFOp::create(tb, loc, alpha, lOld)),
        lOut, ValueRange{row});
    scf::YieldOp::create(tb, loc);
  });
}

/// Step 5 of attend_record and attend_rows with warp_states: lane (g, t)
/// holds the block's weighted sums of heads 2t and 2t + 1 (`runs(b, e)`,
/// the warp's statistics `stats(e)`); all lanes read their heads' incoming
/// max and sum, the warp syncs, and each lane of a head (< H) folds its
/// channels into the warp's row, lane g = 0 writing m and l.
void emitWarpStateUpdate(
    OpBuilder &rw, Location loc, Value warp, Value lg, Value lt, int64_t h,
    int64_t d, function_ref<BlockStats(int64_t)> stats,
    function_ref<SmallVector<ChannelRun>(OpBuilder &, int64_t)> runs,
    function_ref<SmallVector<Value>(OpBuilder &, Value, int64_t)> channelScales,
    Value mIn, Value lIn, Value accIn, Value mOut, Value lOut, Value accOut) {
  auto c = [&](int64_t v) { return indexConstant(rw, loc, v); };
  std::array<Value, 2> heads;
  std::array<std::pair<Value, Value>, 2> old;
  for (int64_t e = 0; e < 2; ++e) {
    heads[e] = addIndex(rw, loc, mulIndex(rw, loc, lt, 2), e);
    old[e] = loadWarpStateRow(rw, loc, warp, heads[e], h, mIn, lIn);
  }
  NVVM::SyncWarpOp::create(rw, loc, i32Constant(rw, loc, -1));
  Value g0 = arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::eq, lg, c(0));
  for (int64_t e = 0; e < 2; ++e) {
    Value mine = arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::ult,
                                       heads[e], c(h));
    scf::IfOp::create(rw, loc, mine, [&](OpBuilder &b, Location) {
      foldIntoWarpRow(b, loc, warp, heads[e], h, d, old[e], stats(e),
                      runs(b, e), channelScales, accIn, mOut, lOut, accOut, g0);
      scf::YieldOp::create(b, loc);
    });
  }
}

/// kvgpu.attend_record (RecordAttendLayout in KVGPU.h).
struct AttendRecordLowering : OpRewritePattern<AttendRecordOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(AttendRecordOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    int64_t threads = getNumThreads(op);
    int64_t h = op.getM().getType().getNumElements() /
                (op.getWarpStates() ? threads / kWarpSize : 1);
    int64_t d = op.getQ().getType().getNumElements() / h;
    int64_t kBits = op.getKBits(), vBits = op.getVBits();
    int64_t g = op.getKCodes().getType().getDimSize(1) * 8 / kBits;
    std::optional<RecordAttendLayout> layout = getRecordAttendLayout(
        h, d, g, kBits, vBits, threads, op.getWarpStates());
    if (!layout)
      return rw.notifyMatchFailure(op, "no layout (the verifier checks it)");
    const RecordAttendLayout &L = *layout;
    Type f32 = rw.getF32Type(), i32 = rw.getI32Type();
    auto c = [&](int64_t v) { return indexConstant(rw, loc, v); };

    // Flat views of every buffer; the codes as the lanes' pieces.
    auto flat = [&](Value buffer) -> FailureOr<Value> {
      return sharedView(rw, loc, buffer,
                        cast<MemRefType>(buffer.getType()).getElementType());
    };
    SmallVector<Value> views;
    for (Value v :
         {op.getQ(), op.getKScale(), op.getKZero(), op.getKTokenScale(),
          op.getVScale(), op.getVZero(), op.getVChannelScale(), op.getM(),
          op.getL(), op.getAcc(), op.getNewM(), op.getNewL(), op.getNewAcc(),
          op.getScratch()}) {
      FailureOr<Value> view = flat(v);
      if (failed(view))
        return rw.notifyMatchFailure(op, "an operand is not a shared buffer");
      views.push_back(*view);
    }
    Value q = views[0], kScale = views[1], kZero = views[2], kToken = views[3],
          vScale = views[4], vZero = views[5], vChannel = views[6],
          mIn = views[7], lIn = views[8], accIn = views[9], mOut = views[10],
          lOut = views[11], accOut = views[12], scratch = views[13];
    int64_t vWordBits = std::min<int64_t>(L.vPieceBits, 32);
    int64_t kWordBits = std::min<int64_t>(L.kPieceBits, 32);
    FailureOr<Value> kPieces = piecesView(rw, loc, op.getKCodes(), kWordBits);
    FailureOr<Value> vPieces = piecesView(rw, loc, op.getVCodes(), vWordBits);
    if (failed(kPieces) || failed(vPieces))
      return rw.notifyMatchFailure(op,
                                   "codes are not an aligned shared buffer");

    auto scaleAt = [&](OpBuilder &b, Value buffer, Value i) {
      return loadWidened(b, loc, buffer, i);
    };
    Value negInf =
        f32Constant(rw, loc, -std::numeric_limits<float>::infinity());
    auto shuffleXor = [&](Value x, int64_t mask) {
      return shuffleXorInWarp(rw, loc, x, mask);
    };

    Value tid = threadIndex(rw, loc);
    Value warp = arith::DivUIOp::create(rw, loc, tid, c(kWarpSize));
    Value lane = arith::RemUIOp::create(rw, loc, tid, c(kWarpSize));
    Value lg = arith::DivUIOp::create(rw, loc, lane, c(4));
    Value lt = arith::RemUIOp::create(rw, loc, lane, c(4));
    int64_t kTiles = d / 16;

    // 1. The CTA splits q * kscale into the scores' B fragments and sums
    // q . kzero per head (one warp a head).
    auto f32x4 = VectorType::get({4}, f32);
    emitQueryFragments(
        rw, loc, tid, threads, h, d, scratch,
        [&](OpBuilder &b, Value row, Value ch) -> Value {
          return arith::MulFOp::create(
              b, loc,
              memref::LoadOp::create(
                  b, loc, q,
                  ValueRange{arith::AddIOp::create(b, loc, row, ch)}),
              scaleAt(b, kScale, ch));
        },
        L.packedScoreParts);
    emitZeroDots(rw, loc, warp, lane, L.warps, h, d, q, kZero, scratch,
                 L.kZeroDotOffset);
    gpu::BarrierOp::create(rw, loc);

    // 2. Scores of the warp's tokens: lane (g, t) holds tokens
    // tokenBase + j, j < perLane, m tile j / 2, row g + 8 (j % 2).
    int64_t tokens = L.tokensPerWarp, mTiles = tokens / 16,
            perLane = tokens / 8;
    Value warpToken = mulIndex(rw, loc, warp, tokens);
    Value tokenBase = arith::AddIOp::create(rw, loc, warpToken,
                                            mulIndex(rw, loc, lg, perLane));
    // kPieces' elements: pieces up to 32 bits, words of wider ones.
    int64_t kRowPieces = g * kBits / kWordBits,
            kWords = std::max<int64_t>(1, L.kPieceBits / 32);
    Value kPieceInRow = arith::DivUIOp::create(
        rw, loc, mulIndex(rw, loc, tokenBase, kBits), c(kWordBits));
    // With `swizzled` (the rows stored as swizzled_rows: swizzledByte) a lane
    // swizzles the index of its piece of k tile 0 once a row and steps by
    // whole k tiles (16 rows: whole swizzle periods).
    bool swizzled = op.getSwizzled();
    int64_t kRowBytes = g * kBits / 8;
    assert(!swizzled || (16 * kRowBytes) % swizzlePeriodBytes(kRowBytes) == 0);
    // kPieces' index of the lane's piece of channel 16 kt + 2t + row.
    auto kPieceAt = [&](int64_t kt, int64_t row) -> Value {
      Value ch = addIndex(rw, loc, mulIndex(rw, loc, lt, 2), row);
      Value at = arith::AddIOp::create(
          rw, loc, mulIndex(rw, loc, ch, kRowPieces), kPieceInRow);
      if (swizzled)
        at = swizzledIndex(rw, loc, at, kWordBits / 8, kRowBytes);
      return addIndex(rw, loc, at, kt * 16 * kRowPieces);
    };
    auto kPiece = [&](Value at) -> SmallVector<Value> {
      if (kWords > 1) {
        Value v = vector::LoadOp::create(
            rw, loc, VectorType::get({kWords}, i32), *kPieces, ValueRange{at},
            /*nontemporal=*/false, llvm::MaybeAlign(4 * kWords));
        SmallVector<Value> words;
        for (int64_t w = 0; w < kWords; ++w)
          words.push_back(vector::ExtractOp::create(rw, loc, v, w));
        return words;
      }
      Value piece = memref::LoadOp::create(rw, loc, *kPieces, at);
      if (kWordBits < 32)
        piece = arith::ExtUIOp::create(rw, loc, i32, piece);
      return {piece};
    };
    // With 16-bit pieces, the warp's pieces of a channel are one 16-byte
    // row of 8 pieces (piece g: lane g's tokens), so one transposed
    // load_matrix brings the interleaved chunks of two k tiles: matrix m
    // holds channels 16 (kt + m / 2) + 8 (m % 2) + 0..7, and lane (g, t)
    // gets piece g of channels 2t and 2t + 1 of each, as interleaveHalves
    // would have joined them. The rows must be 16-byte aligned.
    std::optional<int64_t> kCodesAt = staticByteOffset(op.getKCodes());
    bool kMatrices = L.keyMatrices && kCodesAt && *kCodesAt % 16 == 0;
    Value kMatrixRow;
    if (kMatrices) {
      Value m = arith::DivUIOp::create(rw, loc, lane, c(8));
      Value channel = arith::AddIOp::create(
          rw, loc,
          mulIndex(rw, loc, arith::DivUIOp::create(rw, loc, m, c(2)), 16),
          arith::AddIOp::create(
              rw, loc,
              mulIndex(rw, loc, arith::RemUIOp::create(rw, loc, m, c(2)), 8),
              arith::RemUIOp::create(rw, loc, lane, c(8))));
      kMatrixRow =
          arith::AddIOp::create(rw, loc, mulIndex(rw, loc, channel, kRowPieces),
                                mulIndex(rw, loc, warp, 8));
      if (swizzled)
        kMatrixRow = swizzledIndex(rw, loc, kMatrixRow, 2, kRowBytes);
    }
    SmallVector<Value> kChunks;
    // One sum per m tile and part: chains of kTiles dependent MMAs, not
    // kMmaSplitParts * kTiles (an MMA's latency is ~30 cycles).
    SmallVector<SmallVector<SmallVector<Value>>> partScores(
        kMmaSplitParts,
        SmallVector<SmallVector<Value>>(
            mTiles, SmallVector<Value>(4, f32Constant(rw, loc, 0.0f))));
    for (int64_t kt = 0; kt < kTiles; ++kt) {
      Value f = addIndex(rw, loc, lane, kt * kWarpSize);
      SplitFragment fragment;
      std::array<Value, 2> packedFragment;
      if (L.packedScoreParts) {
        Value words =
            vector::LoadOp::create(rw, loc, VectorType::get({2}, f32), scratch,
                                   ValueRange{mulIndex(rw, loc, f, 2)},
                                   /*nontemporal=*/false, llvm::MaybeAlign(8));
        for (int64_t r = 0; r < 2; ++r)
          packedFragment[r] = arith::BitcastOp::create(
              rw, loc, i32, vector::ExtractOp::create(rw, loc, words, r));
      } else {
        fragment = loadSplitFragment(rw, loc, scratch, f);
      }
      SmallVector<std::array<Value, 4>> aRegs;
      if (kMatrices) {
        if (kt % 2 == 0) {
          Value regs = LoadMatrixOp::create(
              rw, loc, VectorType::get({4}, i32), *kPieces,
              addIndex(rw, loc, kMatrixRow, kt * 16 * kRowPieces),
              /*transpose=*/true);
          kChunks.clear();
          for (int64_t r = 0; r < 4; ++r)
            kChunks.push_back(vector::ExtractOp::create(rw, loc, regs, r));
        }
        aRegs = fragmentsOfChunks(rw, loc, kChunks[2 * (kt % 2)],
                                  kChunks[2 * (kt % 2) + 1], mTiles, kBits);
      } else {
        aRegs = codeFragments(
            rw, loc, [&](int64_t row) { return kPiece(kPieceAt(kt, row)); },
            L.kPieceBits, mTiles, kBits);
      }
      if (L.packedScoreParts) {
        for (int64_t i = 0; i < mTiles; ++i)
          mmaF16(rw, loc, aRegs[i], packedFragment, partScores[0][i]);
        continue;
      }
      // Smallest part first; consecutive MMAs into different sums.
      for (int p = kMmaSplitParts - 1; p >= 0; --p)
        for (int64_t i = 0; i < mTiles; ++i)
          mmaF16(rw, loc, aRegs[i], fragment.parts[p], partScores[p][i]);
    }
    // Lane (g, t) holds tokens j < perLane (accumulator 2 (j % 2) + e of m
    // tile j / 2: head 2t + e) and takes the softmax of `ownTokens` of them
    // from `ownFirst` on. With packed parts (RecordAttendLayout), lanes t
    // and t ^ 2 hold the hi and lo parts of heads 2 (t % 2) + e: each lane
    // sends its partner the half of its tokens the partner takes and adds
    // the partner's half of its own (hi + lo, as sumParts adds them).
    int64_t ownTokens = L.packedScoreParts ? perLane / 2 : perLane;
    Value upperHalf =
        arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::uge, lt, c(2));
    Value ownFirst =
        L.packedScoreParts
            ? arith::SelectOp::create(rw, loc, upperHalf, c(ownTokens), c(0))
                  .getResult()
            : c(0);
    // own[jj][e]: the score of own token jj and head e before scaling.
    SmallVector<std::array<Value, 2>> own(ownTokens);
    if (L.packedScoreParts) {
      auto accOf = [&](int64_t j, int64_t e) {
        return partScores[0][j / 2][2 * (j % 2) + e];
      };
      for (int64_t jj = 0; jj < ownTokens; ++jj)
        for (int64_t e = 0; e < 2; ++e) {
          Value low = accOf(jj, e), high = accOf(ownTokens + jj, e);
          Value send = arith::SelectOp::create(rw, loc, upperHalf, low, high);
          Value keep = arith::SelectOp::create(rw, loc, upperHalf, high, low);
          own[jj][e] =
              arith::AddFOp::create(rw, loc, keep, shuffleXor(send, 2));
        }
    } else {
      SmallVector<SmallVector<Value>> scores = sumParts(rw, loc, partScores);
      for (int64_t j = 0; j < perLane; ++j)
        for (int64_t e = 0; e < 2; ++e)
          own[j][e] = scores[j / 2][2 * (j % 2) + e];
    }

    // 3. The warp's softmax: accumulator e of m tile i is token j = 2 i +
    // e / 2, head 2t + e % 2. Per head: the max over the warp's tokens, the
    // probabilities, their sum and their sum against vzero.
    Value valid =
        arith::IndexCastOp::create(rw, loc, rw.getIndexType(), op.getValid());
    Value softmaxScale = op.getSoftmaxScale();
    // heads[e]: the weighted values' head of accumulator e (2t + e);
    // softmaxHeads[e]: the head of own[.][e].
    SmallVector<Value> heads, softmaxHeads, kZeroDot;
    for (int64_t e = 0; e < 2; ++e) {
      heads.push_back(addIndex(rw, loc, mulIndex(rw, loc, lt, 2), e));
      softmaxHeads.push_back(
          L.packedScoreParts
              ? addIndex(rw, loc,
                         mulIndex(rw, loc,
                                  arith::RemUIOp::create(rw, loc, lt, c(2)), 2),
                         e)
              : heads[e]);
      kZeroDot.push_back(memref::LoadOp::create(
          rw, loc, scratch,
          ValueRange{addIndex(
              rw, loc,
              arith::MinUIOp::create(rw, loc, softmaxHeads[e], c(h - 1)),
              L.kZeroDotOffset)}));
    }
    SmallVector<Value> x(ownTokens * 2), tokenOf(ownTokens);
    Value ownBase = arith::AddIOp::create(rw, loc, tokenBase, ownFirst);
    for (int64_t j = 0; j < ownTokens; ++j)
      tokenOf[j] = addIndex(rw, loc, ownBase, j);
    for (int64_t j = 0; j < ownTokens; ++j) {
      Value kTok = scaleAt(rw, kToken, tokenOf[j]);
      Value live = arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::slt,
                                         tokenOf[j], valid);
      // The factor of the lane's token ownFirst + j (subnormalCodeFactor).
      float first = subnormalCodeFactor(j, kBits);
      float second = subnormalCodeFactor(ownTokens + j, kBits);
      Value factor = f32Constant(rw, loc, first);
      if (L.packedScoreParts && first != second)
        factor = arith::SelectOp::create(rw, loc, upperHalf,
                                         f32Constant(rw, loc, second), factor);
      for (int64_t e = 0; e < 2; ++e) {
        // The product over the code, scaled back, plus q . kzero: one fma.
        Value dot =
            LLVM::FMAOp::create(rw, loc, own[j][e], factor, kZeroDot[e]);
        Value s = arith::MulFOp::create(
            rw, loc, arith::MulFOp::create(rw, loc, dot, kTok), softmaxScale);
        Value in = arith::AndIOp::create(
            rw, loc, live,
            arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::ult,
                                  softmaxHeads[e], c(h)));
        x[2 * j + e] = arith::SelectOp::create(rw, loc, in, s, negInf);
      }
    }
    // The lanes of one head: one t (lanes t + 4k), or with packed parts t
    // and t ^ 2 (lanes t % 2 + 2k).
    auto warpReduce = [&](Value v, bool isMax) {
      return reduceOverLanes(rw, loc, v, L.packedScoreParts ? 2 : 4, isMax);
    };
    SmallVector<Value> rowMax(2), rowSum(2), zeroSum(2);
    for (int64_t e = 0; e < 2; ++e) {
      Value mx = x[e];
      for (int64_t j = 1; j < ownTokens; ++j)
        mx = arith::MaximumFOp::create(rw, loc, mx, x[2 * j + e]);
      rowMax[e] = warpReduce(mx, /*isMax=*/true);
    }
    // p * vscale, split into f16 parts (|p * vscale| <= vscale: within
    // f16's range where the record stores it as f16; an e4m3 field's
    // element past 65504 would overflow, as the scores ask |q * kscale| <
    // 65504), goes to the warp's region as the B fragments' registers: word
    // (part * 8 + head) * rowWords + i holds tokens 2i, 2i + 1 (rows padded by
    // 4 words: the lanes of one read hit 32 banks). Every head row is written
    // (zeros past H), but for rows 4-7 with packed parts, whose lanes take
    // zeros in step 4.
    int64_t rowWords = tokens / 2 + 4;
    Value region = addIndex(rw, loc, mulIndex(rw, loc, warp, L.partialFloats),
                            L.partialOffset);
    int64_t ownWords = ownTokens / 2;
    auto wordVec = VectorType::get({ownWords}, f32);
    for (int64_t e = 0; e < 2; ++e) {
      // The sums start from the first token's terms (not 0 + term: one
      // instruction each less).
      Value sum, zsum;
      SmallVector<Value> scaled;
      Value max = finiteMax(rw, loc, rowMax[e]);
      for (int64_t j = 0; j < ownTokens; ++j) {
        Value p = expBelow(rw, loc, x[2 * j + e], max);
        Value vz = scaleAt(rw, vZero, tokenOf[j]);
        sum = j ? arith::AddFOp::create(rw, loc, sum, p).getResult() : p;
        zsum = j ? LLVM::FMAOp::create(rw, loc, p, vz, zsum).getResult()
                 : arith::MulFOp::create(rw, loc, p, vz).getResult();
        scaled.push_back(
            arith::MulFOp::create(rw, loc, p, scaleAt(rw, vScale, tokenOf[j])));
      }
      SmallVector<SmallVector<Value>> words(kMmaSplitParts);
      for (int64_t j = 0; j < ownTokens; j += 2) {
        std::array<Value, kMmaSplitParts> parts =
            splitToF16x2(rw, loc, scaled[j], scaled[j + 1]);
        for (int p = 0; p < kMmaSplitParts; ++p)
          words[p].push_back(arith::BitcastOp::create(rw, loc, f32, parts[p]));
      }
      rowSum[e] = warpReduce(sum, /*isMax=*/false);
      zeroSum[e] = warpReduce(zsum, /*isMax=*/false);
      for (int p = 0; p < kMmaSplitParts; ++p) {
        // The own tokens' pairs: words (ownBase - warpToken) / 2 on.
        Value at = arith::AddIOp::create(
            rw, loc, region,
            arith::AddIOp::create(
                rw, loc,
                mulIndex(rw, loc, addIndex(rw, loc, softmaxHeads[e], 8 * p),
                         rowWords),
                arith::DivUIOp::create(
                    rw, loc, arith::SubIOp::create(rw, loc, ownBase, warpToken),
                    c(2))));
        Value row =
            ownWords == 1
                ? words[p][0]
                : vector::FromElementsOp::create(rw, loc, wordVec, words[p])
                      .getResult();
        if (ownWords == 1)
          memref::StoreOp::create(rw, loc, row, scratch, ValueRange{at});
        else
          vector::StoreOp::create(rw, loc, row, scratch, ValueRange{at},
                                  /*nontemporal=*/false,
                                  llvm::MaybeAlign(4 * ownWords));
      }
    }
    Value fullMask = i32Constant(rw, loc, -1);
    NVVM::SyncWarpOp::create(rw, loc, fullMask);

    // 4. weighted[d, h] = sum_t code_v[t, d] p[h, t] vscale[t] over the
    // warp's tokens: lane (g, t) holds channels g * D / 8 + j (m tile j / 2,
    // row g + 8 (j % 2)); k slot s of k tile i is the warp's token 16 i + s.
    // The codes are f16 subnormals as the scores' (subnormalCodePair, no
    // bias, no shift for most of them): channel j's sums are the products
    // over its codes divided by subnormalCodeFactor(j), which step 5 takes
    // back where it scales the channel.
    Value lgIsHead =
        arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::ult, lg, c(h));
    int64_t vTiles = d / 16, vWords = std::max<int64_t>(1, L.vPieceBits / 32);
    int64_t vRowWords = d * vBits / vWordBits;
    Value vWordInRow = mulIndex(rw, loc, lg, vWords);
    // The lane's piece of the warp's token 16 kt + 2t + row.
    Value laneToken =
        arith::AddIOp::create(rw, loc, warpToken, mulIndex(rw, loc, lt, 2));
    auto vPiece = [&](int64_t kt, int64_t row) -> SmallVector<Value> {
      Value token = addIndex(rw, loc, laneToken, 16 * kt + row);
      Value at = arith::AddIOp::create(
          rw, loc, mulIndex(rw, loc, token, vRowWords), vWordInRow);
      SmallVector<Value> piece;
      if (vWords > 1) {
        auto vec = VectorType::get({vWords}, i32);
        Value v = vector::LoadOp::create(rw, loc, vec, *vPieces, ValueRange{at},
                                         /*nontemporal=*/false,
                                         llvm::MaybeAlign(4 * vWords));
        for (int64_t w = 0; w < vWords; ++w)
          piece.push_back(vector::ExtractOp::create(rw, loc, v, w));
        return piece;
      }
      Value word = memref::LoadOp::create(rw, loc, *vPieces, at);
      if (vWordBits < 32)
        word = arith::ExtUIOp::create(rw, loc, i32, word);
      piece.push_back(word);
      return piece;
    };
    SmallVector<SmallVector<Value>> weighted(
        vTiles, SmallVector<Value>(4, f32Constant(rw, loc, 0.0f)));
    for (int64_t kt = 0; kt < tokens / 16; ++kt) {
      // B: p[h = g, tokens 16 kt + 2t, + 1] and [.. + 8, + 9], each part
      // one word of the region.
      SmallVector<std::array<Value, kMmaSplitParts>> bParts =
          loadProbabilityFragments(rw, loc, scratch, region, lg, lt, rowWords,
                                   kt, /*firstHead=*/0, /*partRows=*/8);
      if (L.packedScoreParts)
        for (std::array<Value, kMmaSplitParts> &half : bParts)
          for (Value &part : half)
            part = arith::SelectOp::create(rw, loc, lgIsHead, part,
                                           i32Constant(rw, loc, 0));
      SmallVector<std::array<Value, 4>> aRegs = codeFragments(
          rw, loc, [&](int64_t row) { return vPiece(kt, row); }, L.vPieceBits,
          vTiles, vBits);
      for (int p = kMmaSplitParts - 1; p >= 0; --p)
        for (int64_t i = 0; i < vTiles; ++i)
          mmaF16(rw, loc, aRegs[i], {bParts[0][p], bParts[1][p]}, weighted[i]);
    }

    // 5. The warp's partial state: weighted per head (channels g * D / 8 +
    // j: accumulator e of m tile i is channel 2 i + e / 2, head 2t + e % 2)
    // over the probabilities (read above: the warp syncs first), and the
    // max, sum and p . vzero term (lanes g = 0; the merge adds the term once
    // per output, not each warp once per channel). With warp_states the
    // warp folds it into its own row of the state instead, and is done.
    int64_t perLaneChannels = d / 8;
    if (op.getWarpStates()) {
      auto channelScales = [&](OpBuilder &b, Value first, int64_t n) {
        return loadWidenedRun(b, loc, vChannel, op.getVChannelScale(), first,
                              n);
      };
      emitWarpStateUpdate(
          rw, loc, warp, lg, lt, h, d,
          [&](int64_t e) -> BlockStats {
            return {rowMax[e], rowSum[e], zeroSum[e]};
          },
          [&](OpBuilder &b, int64_t e) {
            ChannelRun run{mulIndex(b, loc, lg, perLaneChannels), {}};
            for (int64_t j = 0; j < perLaneChannels; ++j)
              run.values.push_back(arith::MulFOp::create(
                  b, loc, weighted[j / 2][2 * (j % 2) + e],
                  f32Constant(b, loc, subnormalCodeFactor(j, vBits))));
            return SmallVector<ChannelRun>{run};
          },
          channelScales, mIn, lIn, accIn, mOut, lOut, accOut);
      rw.eraseOp(op);
      return success();
    }
    NVVM::SyncWarpOp::create(rw, loc, fullMask);
    for (int64_t e = 0; e < 2; ++e) {
      Value mine = arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::ult,
                                         heads[e], c(h));
      scf::IfOp::create(rw, loc, mine, [&](OpBuilder &b, Location) {
        Value at = arith::AddIOp::create(
            b, loc, region,
            arith::AddIOp::create(
                b, loc, mulIndex(b, loc, heads[e], L.partialHeadFloats),
                mulIndex(b, loc, lg, perLaneChannels)));
        for (int64_t j0 = 0; j0 < perLaneChannels; j0 += 4) {
          SmallVector<Value> four;
          for (int64_t j = j0; j < j0 + 4; ++j)
            four.push_back(weighted[j / 2][2 * (j % 2) + e]);
          vector::StoreOp::create(
              b, loc, vector::FromElementsOp::create(b, loc, f32x4, four),
              scratch, ValueRange{addIndex(b, loc, at, j0)},
              /*nontemporal=*/false, llvm::MaybeAlign(16));
        }
        Value g0 =
            arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, lg, c(0));
        scf::IfOp::create(b, loc, g0, [&](OpBuilder &tb, Location) {
          Value stats = addIndex(
              tb, loc, mulIndex(tb, loc, warp, kRecordAttendStatsFloats),
              L.statsOffset);
          Value at = arith::AddIOp::create(tb, loc, stats, heads[e]);
          memref::StoreOp::create(tb, loc, rowMax[e], scratch, ValueRange{at});
          memref::StoreOp::create(tb, loc, rowSum[e], scratch,
                                  ValueRange{addIndex(tb, loc, at, 8)});
          memref::StoreOp::create(tb, loc, zeroSum[e], scratch,
                                  ValueRange{addIndex(tb, loc, at, 16)});
          scf::YieldOp::create(tb, loc);
        });
        scf::YieldOp::create(b, loc);
      });
    }
    // 6. The partials meet the incoming state. A thread's four channels
    // start at a multiple of 4, as do the lanes' runs (D / 8 codes of `vBits`
    // bits: whole bytes), so the code factor of channel first + e is code
    // e's.
    assert(perLaneChannels % 4 == 0 && perLaneChannels * vBits % 8 == 0);
    std::array<float, 4> codeFactors;
    for (int64_t e = 0; e < 4; ++e)
      codeFactors[e] = subnormalCodeFactor(e, vBits);
    emitMergeWarpPartials(rw, loc, tid, threads, h, d,
                          {L.warps, L.partialOffset, L.partialFloats,
                           L.statsOffset, L.incomingOffset,
                           L.partialHeadFloats},
                          scratch, mIn, lIn, accIn, mOut, lOut, accOut,
                          ChannelScaling{[&](OpBuilder &b, Value channel) {
                                           return scaleAt(b, vChannel, channel);
                                         },
                                         codeFactors});
    rw.eraseOp(op);
    return success();
  }
};

/// kvgpu.attend_latent (LatentAttendLayout in KVGPU.h): MLA's record step.
/// The scores as attend_record's (f16 products on codes masked in place as
/// subnormals, q * scale split in f16 parts), but with the codes
/// token-major, so that a code pair is two channels of one token; the
/// weighted sums with the warps over channels, not tokens, so that each
/// warp's share of the state is updated in place and no partial state is
/// merged.
struct AttendLatentLowering : OpRewritePattern<AttendLatentOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(AttendLatentOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    int64_t threads = getNumThreads(op);
    int64_t h = op.getM().getType().getNumElements();
    int64_t r = op.getQ().getType().getNumElements() / h;
    int64_t e = op.getQRope().getType().getNumElements() / h;
    int64_t g = op.getCodes().getType().getDimSize(0);
    int64_t bits = op.getBits();
    std::optional<LatentAttendLayout> layout =
        getLatentAttendLayout(h, r, e, g, bits, threads);
    if (!layout)
      return rw.notifyMatchFailure(op, "no layout (the verifier checks it)");
    const LatentAttendLayout &L = *layout;
    Type f32 = rw.getF32Type(), i32 = rw.getI32Type();
    auto c = [&](int64_t v) { return indexConstant(rw, loc, v); };

    SmallVector<Value> views;
    for (Value v :
         {op.getQ(), op.getQRope(), op.getScale(), op.getZero(),
          op.getTokenScale(), op.getM(), op.getL(), op.getAcc(), op.getNewM(),
          op.getNewL(), op.getNewAcc(), op.getScratch()}) {
      FailureOr<Value> view = sharedView(
          rw, loc, v, cast<MemRefType>(v.getType()).getElementType());
      if (failed(view))
        return rw.notifyMatchFailure(op, "an operand is not a shared buffer");
      views.push_back(*view);
    }
    Value q = views[0], qRope = views[1], scale = views[2], zero = views[3],
          tokenScale = views[4], mIn = views[5], lIn = views[6],
          accIn = views[7], mOut = views[8], lOut = views[9],
          accOut = views[10], scratch = views[11];
    // The codes as i32 words (8 channels of a token), the rope keys as
    // words (two channels).
    FailureOr<Value> words = piecesView(rw, loc, op.getCodes(), 32);
    FailureOr<Value> ropeWords = sharedView(rw, loc, op.getRope(), i32);
    if (failed(words) || failed(ropeWords))
      return rw.notifyMatchFailure(op, "codes or rope keys are not aligned");
    auto aligned16 = [](Value buffer) {
      std::optional<int64_t> at = staticByteOffset(buffer);
      return at && *at % 16 == 0;
    };

    auto scaleAt = [&](OpBuilder &b, Value buffer, Value i) {
      return loadWidened(b, loc, buffer, i);
    };
    Value negInf =
        f32Constant(rw, loc, -std::numeric_limits<float>::infinity());
    auto shuffleXor = [&](Value x, int64_t mask) {
      return shuffleXorInWarp(rw, loc, x, mask);
    };
    auto select = [&](Value cond, Value a, Value b) -> Value {
      return arith::SelectOp::create(rw, loc, cond, a, b);
    };

    // `head`'s column in its head tile, and fragment index f of the tile
    // (the index itself with one tile).
    auto headSlot = [&](OpBuilder &b, Value head) -> Value {
      if (L.headTiles > 1)
        return arith::RemUIOp::create(b, loc, head, c(kLatentHeadsPerTile));
      return head;
    };
    auto inHeadTile = [&](OpBuilder &b, Value head, Value f) -> Value {
      if (L.headTiles == 1)
        return f;
      return arith::AddIOp::create(
          b, loc, f,
          mulIndex(b, loc,
                   arith::DivUIOp::create(b, loc, head, c(kLatentHeadsPerTile)),
                   L.fragmentsPerHeadTile));
    };

    Value tid = threadIndex(rw, loc);
    Value warp = arith::DivUIOp::create(rw, loc, tid, c(kWarpSize));
    Value lane = arith::RemUIOp::create(rw, loc, tid, c(kWarpSize));
    Value lg = arith::DivUIOp::create(rw, loc, lane, c(4));
    Value lt = arith::RemUIOp::create(rw, loc, lane, c(4));
    int64_t kTiles = r / 16, ropeTiles = e / 16;
    int64_t codeRowWords = r * bits / 32, ropeRowWords = e / 2;

    // 1. The CTA splits q * scale and q_rope into the scores' B fragments
    // (f16 parts; head tile n's from n fragmentsPerHeadTile) and sums q .
    // zero per head (one warp a head). Fragments of heads past H are zeros.
    //
    // q * scale: one thread a head's word column j (channels 8 j .. 8 j + 7,
    // two 16-byte loads of q, one of the scales; consecutive lanes,
    // consecutive columns) makes the two fragments of k tiles 2 u and 2 u +
    // 1 (u = 4 (j / 16) + j % 4) of lane t = (j / 4) % 4: class c holds
    // channels 8 j + c + 0, 4 (b0) and + 2, 6 (b1). Fragment (kt, lane) is
    // stored at kt * 32 + (lane ^ queryFragmentSwizzle(kt)), so that a
    // quarter warp's stores (four u, two t) hit distinct banks; a lane reads
    // its own k tile's fragments, 32 lanes over 512 bytes, either way.
    buildThreadStridedLoop(
        rw, loc, tid, L.headSlots() * (r / 8), threads,
        [&](OpBuilder &b, Value item) {
          Value head = arith::DivUIOp::create(b, loc, item, c(r / 8));
          Value j = arith::RemUIOp::create(b, loc, item, c(r / 8));
          Value live = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult,
                                             head, c(h));
          Value row = arith::MinUIOp::create(b, loc, head, c(h - 1));
          Value first = mulIndex(b, loc, j, 8);
          Value rowAt =
              arith::AddIOp::create(b, loc, mulIndex(b, loc, row, r), first);
          SmallVector<Value> qs =
              loadWidenedRun(b, loc, q, op.getQ(), rowAt, 4);
          qs.append(loadWidenedRun(b, loc, q, op.getQ(),
                                   addIndex(b, loc, rowAt, 4), 4));
          SmallVector<Value> scales =
              loadWidenedRun(b, loc, scale, op.getScale(), first, 8);
          SmallVector<Value> x;
          for (int64_t k = 0; k < 8; ++k)
            x.push_back(arith::SelectOp::create(
                b, loc, live, arith::MulFOp::create(b, loc, qs[k], scales[k]),
                f32Constant(b, loc, 0.0f)));
          Value u = arith::AddIOp::create(
              b, loc,
              mulIndex(b, loc, arith::DivUIOp::create(b, loc, j, c(16)), 4),
              arith::RemUIOp::create(b, loc, j, c(4)));
          Value fragmentLane = arith::AddIOp::create(
              b, loc, mulIndex(b, loc, headSlot(b, head), 4),
              arith::RemUIOp::create(
                  b, loc, arith::DivUIOp::create(b, loc, j, c(4)), c(4)));
          Value swizzled = arith::XOrIOp::create(
              b, loc, fragmentLane,
              mulIndex(b, loc, arith::RemUIOp::create(b, loc, j, c(4)), 2));
          for (int64_t cls = 0; cls < 2; ++cls) {
            Value kt = addIndex(b, loc, mulIndex(b, loc, u, 2), cls);
            Value f = inHeadTile(
                b, head,
                arith::AddIOp::create(b, loc, mulIndex(b, loc, kt, kWarpSize),
                                      swizzled));
            storeSplitFragment(b, loc, scratch, f, x[cls], x[4 + cls],
                               x[2 + cls], x[6 + cls], splitToF16x2);
          }
        });
    // q_rope: k tiles in pairs (32 channels, a lane's 16-byte run of a rope
    // row): slots 2t, 2t + 1 of k tile 2 p + x are channels 32 p + 8 t + 4 x
    // + 0, 1, and slots 2t + 8, 2t + 9 the next two. Thread e takes lane t =
    // e % 4, k tile (e / 4) % tiles and head e / (4 tiles).
    buildThreadStridedLoop(
        rw, loc, tid, L.headSlots() * ropeTiles * 4, threads,
        [&](OpBuilder &b, Value item) {
          Value ft = arith::RemUIOp::create(b, loc, item, c(4));
          Value kt = arith::RemUIOp::create(
              b, loc, arith::DivUIOp::create(b, loc, item, c(4)), c(ropeTiles));
          Value head = arith::DivUIOp::create(b, loc, item, c(4 * ropeTiles));
          Value live = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult,
                                             head, c(h));
          Value row = arith::MinUIOp::create(b, loc, head, c(h - 1));
          Value channel = arith::AddIOp::create(
              b, loc,
              arith::AddIOp::create(
                  b, loc,
                  mulIndex(b, loc, arith::DivUIOp::create(b, loc, kt, c(2)),
                           32),
                  mulIndex(b, loc, arith::RemUIOp::create(b, loc, kt, c(2)),
                           4)),
              mulIndex(b, loc, ft, 8));
          SmallVector<Value> x = loadWidenedRun(
              b, loc, qRope, op.getQRope(),
              arith::AddIOp::create(b, loc, mulIndex(b, loc, row, e), channel),
              4);
          for (Value &v : x)
            v = arith::SelectOp::create(b, loc, live, v,
                                        f32Constant(b, loc, 0.0f));
          Value f = inHeadTile(
              b, head,
              arith::AddIOp::create(
                  b, loc, mulIndex(b, loc, kt, kWarpSize),
                  arith::AddIOp::create(
                      b, loc, mulIndex(b, loc, headSlot(b, head), 4), ft)));
          storeSplitFragment(b, loc, scratch,
                             addIndex(b, loc, f, kTiles * kWarpSize), x[0],
                             x[1], x[2], x[3], splitToF16x2);
        });
    emitZeroDots(rw, loc, warp, lane, L.warps, h, r, q, zero, scratch,
                 L.zeroDotOffset);
    gpu::BarrierOp::create(rw, loc);

    // 2. Scores of the warp's tokens: m tile i, rows g and g + 8 are tokens
    // warpToken + 16 i + g (+ 8); accumulator a is row g + 8 (a / 2), head
    // 2t + a % 2.
    int64_t tokens = L.tokensPerWarp, mTiles = tokens / 16;
    Value warpToken = mulIndex(rw, loc, warp, tokens);
    SmallVector<std::array<Value, 2>> rowTokens(mTiles);
    for (int64_t i = 0; i < mTiles; ++i) {
      rowTokens[i][0] = arith::AddIOp::create(
          rw, loc, addIndex(rw, loc, warpToken, 16 * i), lg);
      rowTokens[i][1] = addIndex(rw, loc, rowTokens[i][0], 8);
    }
    bool vectorRuns = aligned16(op.getCodes());
    // With `swizzled`, chunk c of a row (16 bytes: 4 words) is stored at c ^
    // rowSwizzle(row): the lane's rows here are g (mod 8).
    Value laneSwizzle = op.getSwizzled() ? rowSwizzle(rw, loc, lg) : Value();
    auto runAt = [&](Value token, int64_t rowWords, int64_t run) -> Value {
      Value chunk = addIndex(rw, loc, lt, 4 * run);
      if (laneSwizzle)
        chunk = arith::XOrIOp::create(rw, loc, chunk, laneSwizzle);
      return arith::AddIOp::create(rw, loc, mulIndex(rw, loc, token, rowWords),
                                   mulIndex(rw, loc, chunk, 4));
    };
    auto codeRun = [&](Value token, int64_t run) -> SmallVector<Value> {
      Value at = runAt(token, codeRowWords, run);
      SmallVector<Value> out;
      if (vectorRuns) {
        Value v = vector::LoadOp::create(
            rw, loc, VectorType::get({4}, i32), *words, ValueRange{at},
            /*nontemporal=*/false, llvm::MaybeAlign(16));
        for (int64_t k = 0; k < 4; ++k)
          out.push_back(vector::ExtractOp::create(rw, loc, v, k));
      } else {
        for (int64_t k = 0; k < 4; ++k)
          out.push_back(memref::LoadOp::create(
              rw, loc, *words, ValueRange{addIndex(rw, loc, at, k)}));
      }
      return out;
    };
    auto zeros = [&] {
      return SmallVector<Value>(4, f32Constant(rw, loc, 0.0f));
    };
    // sums[n][i][class][part], ropeSums[n][i][part] of head tile n: chains
    // of dependent MMAs.
    int64_t headTiles = L.headTiles;
    using PartSums = SmallVector<SmallVector<Value>>;
    SmallVector<SmallVector<SmallVector<PartSums>>> sums(
        headTiles,
        SmallVector<SmallVector<PartSums>>(
            mTiles, SmallVector<PartSums>(2, PartSums(kMmaSplitParts))));
    SmallVector<SmallVector<PartSums>> ropeSums(
        headTiles, SmallVector<PartSums>(mTiles, PartSums(kMmaSplitParts)));
    for (int64_t n = 0; n < headTiles; ++n)
      for (int64_t i = 0; i < mTiles; ++i)
        for (int p = 0; p < kMmaSplitParts; ++p) {
          sums[n][i][0][p] = zeros();
          sums[n][i][1][p] = zeros();
          ropeSums[n][i][p] = zeros();
        }
    // The lane's q * scale fragments of k tiles 2 u, 2 u + 1 are at lane ^
    // 2 (u % 4) (step 1).
    SmallVector<Value> swizzledLanes;
    for (int64_t k = 0; k < 4; ++k)
      swizzledLanes.push_back(
          arith::XOrIOp::create(rw, loc, lane, c(2 * k)).getResult());
    for (int64_t run = 0; run < r / 128; ++run) {
      SmallVector<std::array<SmallVector<Value>, 2>> runs(mTiles);
      for (int64_t i = 0; i < mTiles; ++i)
        for (int64_t half = 0; half < 2; ++half)
          runs[i][half] = codeRun(rowTokens[i][half], run);
      for (int64_t k = 0; k < 4; ++k)
        for (int64_t cls = 0; cls < 2; ++cls) {
          int64_t kt = 2 * (4 * run + k) + cls;
          SmallVector<SplitFragment> fragments;
          for (int64_t n = 0; n < headTiles; ++n)
            fragments.push_back(loadSplitFragment(
                rw, loc, scratch,
                addIndex(rw, loc, swizzledLanes[k],
                         kt * kWarpSize + n * L.fragmentsPerHeadTile)));
          for (int64_t i = 0; i < mTiles; ++i) {
            Value w0 = runs[i][0][k], w8 = runs[i][1][k];
            std::array<Value, 4> a = {
                subnormalCodePair(rw, loc, w0, cls, bits),
                subnormalCodePair(rw, loc, w8, cls, bits),
                subnormalCodePair(rw, loc, w0, cls + 2, bits),
                subnormalCodePair(rw, loc, w8, cls + 2, bits)};
            for (int64_t n = 0; n < headTiles; ++n)
              for (int p = kMmaSplitParts - 1; p >= 0; --p)
                mmaF16(rw, loc, a, fragments[n].parts[p], sums[n][i][cls][p]);
          }
        }
    }
    // The rope keys: a lane's 16-byte run of each of its rows a pair of k
    // tiles (step 1's order), one load where the rows keep the alignment.
    bool ropeVectors = aligned16(op.getRope());
    for (int64_t pair = 0; pair < ropeTiles / 2; ++pair) {
      SmallVector<std::array<SmallVector<Value>, 2>> ropeRuns(mTiles);
      for (int64_t i = 0; i < mTiles; ++i)
        for (int64_t half = 0; half < 2; ++half) {
          Value at = runAt(rowTokens[i][half], ropeRowWords, pair);
          if (ropeVectors) {
            Value v = vector::LoadOp::create(
                rw, loc, VectorType::get({4}, i32), *ropeWords, ValueRange{at},
                /*nontemporal=*/false, llvm::MaybeAlign(16));
            for (int64_t k = 0; k < 4; ++k)
              ropeRuns[i][half].push_back(
                  vector::ExtractOp::create(rw, loc, v, k));
          } else {
            for (int64_t k = 0; k < 4; ++k)
              ropeRuns[i][half].push_back(memref::LoadOp::create(
                  rw, loc, *ropeWords, ValueRange{addIndex(rw, loc, at, k)}));
          }
        }
      for (int64_t x = 0; x < 2; ++x) {
        int64_t kt = 2 * pair + x;
        SmallVector<SplitFragment> fragments;
        for (int64_t n = 0; n < headTiles; ++n)
          fragments.push_back(
              loadSplitFragment(rw, loc, scratch,
                                addIndex(rw, loc, lane,
                                         (kTiles + kt) * kWarpSize +
                                             n * L.fragmentsPerHeadTile)));
        for (int64_t i = 0; i < mTiles; ++i) {
          std::array<Value, 4> a = {
              ropeRuns[i][0][2 * x], ropeRuns[i][1][2 * x],
              ropeRuns[i][0][2 * x + 1], ropeRuns[i][1][2 * x + 1]};
          for (int64_t n = 0; n < headTiles; ++n)
            for (int p = kMmaSplitParts - 1; p >= 0; --p)
              mmaF16(rw, loc, a, fragments[n].parts[p], ropeSums[n][i][p]);
        }
      }
    }
    // The scaled scores, -inf past `valid` and for heads past H. A lane's
    // heads: hx = 2 n + x is head 8 n + 2t + x (head tile n).
    Value valid =
        arith::IndexCastOp::create(rw, loc, rw.getIndexType(), op.getValid());
    Value softmaxScale = op.getSoftmaxScale();
    int64_t laneHeads = 2 * headTiles;
    SmallVector<Value> heads, headRows, zeroDot, mOld, headLive;
    for (int64_t hx = 0; hx < laneHeads; ++hx) {
      heads.push_back(addIndex(rw, loc, mulIndex(rw, loc, lt, 2),
                               kLatentHeadsPerTile * (hx / 2) + hx % 2));
      headRows.push_back(arith::MinUIOp::create(rw, loc, heads[hx], c(h - 1)));
      headLive.push_back(arith::CmpIOp::create(
          rw, loc, arith::CmpIPredicate::ult, heads[hx], c(h)));
      zeroDot.push_back(memref::LoadOp::create(
          rw, loc, scratch,
          ValueRange{addIndex(rw, loc, headRows[hx], L.zeroDotOffset)}));
      mOld.push_back(
          memref::LoadOp::create(rw, loc, mIn, ValueRange{headRows[hx]}));
    }
    float lowFactor = subnormalCodeFactor(0, bits),
          highFactor = subnormalCodeFactor(1, bits);
    // scores[i][half][hx], tokenScales[i][half]
    SmallVector<std::array<SmallVector<Value>, 2>> scores(mTiles);
    SmallVector<std::array<Value, 2>> tokenScales(mTiles);
    SmallVector<Value> rowMax(laneHeads);
    for (int64_t i = 0; i < mTiles; ++i)
      for (int64_t half = 0; half < 2; ++half) {
        Value token = rowTokens[i][half];
        tokenScales[i][half] = scaleAt(rw, tokenScale, token);
        Value live = arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::slt,
                                           token, valid);
        for (int64_t hx = 0; hx < laneHeads; ++hx) {
          int64_t n = hx / 2, a = 2 * half + hx % 2;
          auto total = [&](ArrayRef<SmallVector<Value>> parts) -> Value {
            Value s = parts[kMmaSplitParts - 1][a];
            for (int p = kMmaSplitParts - 2; p >= 0; --p)
              s = arith::AddFOp::create(rw, loc, s, parts[p][a]);
            return s;
          };
          Value low = total(sums[n][i][0]), high = total(sums[n][i][1]);
          // The products over the codes scaled back (subnormalCodeFactor),
          // plus q . zero.
          Value dot = LLVM::FMAOp::create(
              rw, loc, low, f32Constant(rw, loc, lowFactor),
              LLVM::FMAOp::create(rw, loc, high,
                                  f32Constant(rw, loc, highFactor),
                                  zeroDot[hx]));
          Value s = LLVM::FMAOp::create(rw, loc, dot, tokenScales[i][half],
                                        total(ropeSums[n][i]));
          s = arith::MulFOp::create(rw, loc, s, softmaxScale);
          s = select(arith::AndIOp::create(rw, loc, live, headLive[hx]), s,
                     negInf);
          scores[i][half].push_back(s);
          rowMax[hx] = rowMax[hx]
                           ? arith::MaximumFOp::create(rw, loc, rowMax[hx], s)
                                 .getResult()
                           : s;
        }
      }
    Value lg0 =
        arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::eq, lg, c(0));
    // The warp's `value` of `head` into the per-head region at `offset`
    // (one float a warp), by the lanes where `writes`.
    auto storeWarpValue = [&](Value writes, Value value, int64_t offset,
                              Value head) {
      Value at = addIndex(rw, loc,
                          arith::AddIOp::create(
                              rw, loc, mulIndex(rw, loc, head, L.warps), warp),
                          offset);
      scf::IfOp::create(rw, loc, writes, [&](OpBuilder &b, Location) {
        memref::StoreOp::create(b, loc, value, scratch, ValueRange{at});
        scf::YieldOp::create(b, loc);
      });
    };
    for (int64_t hx = 0; hx < laneHeads; ++hx) {
      rowMax[hx] = reduceOverLanes(rw, loc, rowMax[hx], 4, /*isMax=*/true);
      storeWarpValue(lg0, rowMax[hx], L.warpMaxOffset, heads[hx]);
    }
    gpu::BarrierOp::create(rw, loc);

    // 3. The block's max per head, the probabilities, their sums, and p *
    // token_scale as the weighted sums' B operand.
    // The warps' values of `head` at `offset` (one float a warp) combined.
    auto warpTotal = [&](OpBuilder &b, int64_t offset, Value head,
                         bool isMax) -> Value {
      Value first = addIndex(b, loc, mulIndex(b, loc, head, L.warps), offset);
      Value total;
      for (int64_t w = 0; w < L.warps; ++w) {
        Value v = memref::LoadOp::create(
            b, loc, scratch, ValueRange{addIndex(b, loc, first, w)});
        total = !total ? v
                : isMax
                    ? arith::MaximumFOp::create(b, loc, total, v).getResult()
                    : arith::AddFOp::create(b, loc, total, v).getResult();
      }
      return total;
    };
    SmallVector<Value> mNew(laneHeads), alpha(laneHeads), finite(laneHeads),
        probSum(laneHeads);
    for (int64_t hx = 0; hx < laneHeads; ++hx) {
      mNew[hx] = arith::MaximumFOp::create(
          rw, loc, mOld[hx], warpTotal(rw, L.warpMaxOffset, heads[hx], true));
      finite[hx] = finiteMax(rw, loc, mNew[hx]);
      alpha[hx] = expBelow(rw, loc, mOld[hx], finite[hx]);
    }
    Value gOdd =
        arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::ne,
                              arith::RemUIOp::create(rw, loc, lg, c(2)), c(0));
    // The pair a lane writes of head tile n: tokens (g & ~1) and its
    // partner's of head 8 n + 2t (even g) or 8 n + 2t + 1 (odd g).
    SmallVector<Value> pairHeads = {
        arith::AddIOp::create(rw, loc, mulIndex(rw, loc, lt, 2),
                              arith::RemUIOp::create(rw, loc, lg, c(2)))};
    for (int64_t n = 1; n < headTiles; ++n)
      pairHeads.push_back(
          addIndex(rw, loc, pairHeads[0], kLatentHeadsPerTile * n));
    Value pairToken =
        mulIndex(rw, loc, arith::DivUIOp::create(rw, loc, lg, c(2)), 2);
    SmallVector<Value> weightSum(headTiles);
    for (int64_t i = 0; i < mTiles; ++i)
      for (int64_t half = 0; half < 2; ++half) {
        Value pairIndex = arith::DivUIOp::create(
            rw, loc,
            arith::AddIOp::create(
                rw, loc, addIndex(rw, loc, warpToken, 16 * i + 8 * half),
                pairToken),
            c(2));
        for (int64_t n = 0; n < headTiles; ++n) {
          std::array<Value, 2> weighted;
          for (int64_t x = 0; x < 2; ++x) {
            int64_t hx = 2 * n + x;
            Value p = expBelow(rw, loc, scores[i][half][hx], finite[hx]);
            probSum[hx] =
                probSum[hx]
                    ? arith::AddFOp::create(rw, loc, probSum[hx], p).getResult()
                    : p;
            weighted[x] =
                arith::MulFOp::create(rw, loc, p, tokenScales[i][half]);
          }
          // Even g sends its head 2t + 1, odd g its head 2t.
          Value received =
              shuffleXor(select(gOdd, weighted[0], weighted[1]), 4);
          Value lowToken = select(gOdd, received, weighted[0]);
          Value highToken = select(gOdd, weighted[1], received);
          std::array<Value, kMmaSplitParts> parts =
              splitToF16x2(rw, loc, lowToken, highToken);
          for (Value v : {lowToken, highToken})
            weightSum[n] = weightSum[n]
                               ? arith::AddFOp::create(rw, loc, weightSum[n], v)
                                     .getResult()
                               : v;
          for (int p = 0; p < kMmaSplitParts; ++p) {
            Value at = arith::AddIOp::create(
                rw, loc,
                mulIndex(rw, loc,
                         addIndex(rw, loc, pairHeads[n], L.headSlots() * p),
                         L.probabilityRowWords),
                pairIndex);
            memref::StoreOp::create(
                rw, loc, arith::BitcastOp::create(rw, loc, f32, parts[p]),
                scratch,
                ValueRange{addIndex(rw, loc, at, L.probabilityOffset)});
          }
        }
      }
    // Per head: the sum of p over all g, the sum of p * token_scale (the
    // zero points' weight) over the g of one parity (each pair is held by
    // a lane of either parity).
    Value lgBelow2 =
        arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::ult, lg, c(2));
    for (int64_t n = 0; n < headTiles; ++n) {
      weightSum[n] = reduceOverLanes(rw, loc, weightSum[n], 8, /*isMax=*/false);
      storeWarpValue(lgBelow2, weightSum[n], L.warpWeightOffset, pairHeads[n]);
    }
    for (int64_t hx = 0; hx < laneHeads; ++hx) {
      probSum[hx] = reduceOverLanes(rw, loc, probSum[hx], 4, /*isMax=*/false);
      storeWarpValue(lg0, probSum[hx], L.warpSumOffset, heads[hx]);
    }
    gpu::BarrierOp::create(rw, loc);

    // 4. The warp's channels: weighted[c, h] = sum_t code[t, c] p'[h, t]
    // over all tokens (k slot s of k tile kt is token 16 kt + s), the codes
    // as f16 subnormals (subnormalCodePair, as the scores'), each code
    // fragment multiplied by every head tile's probabilities; then its
    // channels of the state, in place.
    SmallVector<Value> weightTotal(laneHeads);
    for (int64_t hx = 0; hx < laneHeads; ++hx)
      weightTotal[hx] = warpTotal(rw, L.warpWeightOffset, heads[hx], false);
    int64_t groups = L.channelsPerWarp / 64;
    Value region = c(L.probabilityOffset);
    for (int64_t group = 0; group < groups; ++group) {
      // Word j of each token row: channels 8 j .. 8 j + 7.
      Value j = arith::AddIOp::create(
          rw, loc,
          mulIndex(rw, loc, addIndex(rw, loc, warp, L.warps * group), 8), lg);
      // Where word j of the rows 2t + x (mod 8) is stored: j ^ (swizzle << 2).
      std::array<Value, 2> wordOf = {j, j};
      if (op.getSwizzled())
        for (int64_t x = 0; x < 2; ++x)
          wordOf[x] = arith::XOrIOp::create(
              rw, loc, j,
              mulIndex(
                  rw, loc,
                  rowSwizzle(rw, loc,
                             addIndex(rw, loc, mulIndex(rw, loc, lt, 2), x)),
                  4));
      // weighted[n][i]: head tile n, m tile i; both parts' products go into
      // the same sums (the dense weighted values' way: there are
      // 4 x headTiles chains of MMAs, and the sums' registers are half).
      SmallVector<PartSums> weighted(headTiles, PartSums(4));
      for (auto &tile : weighted)
        for (auto &mTile : tile)
          mTile = zeros();
      for (int64_t kt = 0; kt < g / 16; ++kt) {
        SmallVector<SmallVector<std::array<Value, kMmaSplitParts>>> bParts;
        for (int64_t n = 0; n < headTiles; ++n)
          bParts.push_back(loadProbabilityFragments(
              rw, loc, scratch, region, lg, lt, L.probabilityRowWords, kt,
              kLatentHeadsPerTile * n, L.headSlots()));
        Value slotToken = addIndex(rw, loc, mulIndex(rw, loc, lt, 2), 16 * kt);
        SmallVector<std::array<Value, 4>> aRegs = codeFragments(
            rw, loc,
            [&](int64_t row) -> SmallVector<Value> {
              Value at = arith::AddIOp::create(
                  rw, loc,
                  mulIndex(rw, loc, addIndex(rw, loc, slotToken, row),
                           codeRowWords),
                  wordOf[row % 2]);
              return {memref::LoadOp::create(rw, loc, *words, ValueRange{at})};
            },
            32, 4, bits);
        for (int64_t n = 0; n < headTiles; ++n)
          for (int p = kMmaSplitParts - 1; p >= 0; --p)
            for (int64_t i = 0; i < 4; ++i)
              mmaF16(rw, loc, aRegs[i], {bParts[n][0][p], bParts[n][1][p]},
                     weighted[n][i]);
      }
      // acc' = alpha acc + scale[c] F W + zero[c] S, S = sum_t p', F the
      // code factor of the word's code k (subnormalCodeFactor): channel 8 j
      // + k is m tile k / 2, row g + 8 (k % 2).
      Value firstChannel = mulIndex(rw, loc, j, 8);
      // The channels' scales, once for the lane's heads.
      SmallVector<Value> scales =
          loadWidenedRun(rw, loc, scale, op.getScale(), firstChannel, 8);
      for (int64_t k = 0; k < 8; ++k)
        scales[k] = arith::MulFOp::create(
            rw, loc, scales[k],
            f32Constant(rw, loc, subnormalCodeFactor(k, bits)));
      SmallVector<Value> zeroes =
          loadWidenedRun(rw, loc, zero, op.getZero(), firstChannel, 8);
      for (int64_t hx = 0; hx < laneHeads; ++hx) {
        int64_t n = hx / 2, x = hx % 2;
        scf::IfOp::create(rw, loc, headLive[hx], [&](OpBuilder &b, Location) {
          Value rowAt = arith::AddIOp::create(
              b, loc, mulIndex(b, loc, heads[hx], r), firstChannel);
          for (int64_t k0 = 0; k0 < 8; k0 += 4) {
            Value at = addIndex(b, loc, rowAt, k0);
            SmallVector<Value> old =
                loadWidenedRun(b, loc, accIn, op.getAcc(), at, 4);
            SmallVector<Value> out;
            for (int64_t k = k0; k < k0 + 4; ++k) {
              int64_t a = 2 * (k % 2) + x;
              Value w = weighted[n][k / 2][a];
              Value v = LLVM::FMAOp::create(
                  b, loc, scales[k], w,
                  arith::MulFOp::create(b, loc, weightTotal[hx], zeroes[k]));
              out.push_back(
                  LLVM::FMAOp::create(b, loc, alpha[hx], old[k - k0], v));
            }
            std::optional<int64_t> outAt = staticByteOffset(op.getNewAcc());
            if (outAt && *outAt % 16 == 0)
              vector::StoreOp::create(
                  b, loc,
                  vector::FromElementsOp::create(
                      b, loc, VectorType::get({4}, f32), out),
                  accOut, ValueRange{at}, /*nontemporal=*/false,
                  llvm::MaybeAlign(16));
            else
              for (int64_t k = 0; k < 4; ++k)
                memref::StoreOp::create(b, loc, out[k], accOut,
                                        ValueRange{addIndex(b, loc, at, k)});
          }
          scf::YieldOp::create(b, loc);
        });
      }
    }
    // The new max and sum: warp 0's lanes g = 0, a head each (the incoming
    // ones were read before the last barrier, or by the writer itself).
    Value writer = arith::AndIOp::create(
        rw, loc, lg0,
        arith::CmpIOp::create(rw, loc, arith::CmpIPredicate::eq, warp, c(0)));
    for (int64_t hx = 0; hx < laneHeads; ++hx) {
      Value mine = arith::AndIOp::create(rw, loc, writer, headLive[hx]);
      scf::IfOp::create(rw, loc, mine, [&](OpBuilder &b, Location) {
        Value l = memref::LoadOp::create(b, loc, lIn, ValueRange{heads[hx]});
        Value sum = warpTotal(b, L.warpSumOffset, heads[hx], false);
        memref::StoreOp::create(b, loc, mNew[hx], mOut, ValueRange{heads[hx]});
        memref::StoreOp::create(b, loc,
                                LLVM::FMAOp::create(b, loc, alpha[hx], l, sum),
                                lOut, ValueRange{heads[hx]});
        scf::YieldOp::create(b, loc);
      });
    }
    rw.eraseOp(op);
    return success();
  }
};

/// kvgpu.attend_rows (RowsAttendLayout in KVGPU.h): attend_record's steps
/// on fp16 rows. The warp's tokens are permuted in the scores' product so
/// that each lane ends with pairs of neighbours: MMA row g of m tile i is
/// token 16 i + 2 g, row g + 8 token 16 i + 2 g + 1. Then a lane's two
/// probabilities of one head are one f16 pair of the weighted values' B
/// operand, which keeps the tokens in order.
struct AttendRowsLowering : OpRewritePattern<AttendRowsOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(AttendRowsOp op,
                                PatternRewriter &rw) const override {
    Location loc = op.getLoc();
    int64_t threads = getNumThreads(op);
    int64_t h = op.getM().getType().getNumElements() /
                (op.getWarpStates() ? threads / kWarpSize : 1);
    int64_t d = op.getQ().getType().getNumElements() / h;
    int64_t t = op.getKeys().getType().getNumElements() / d;
    std::optional<RowsAttendLayout> layout =
        getRowsAttendLayout(h, d, t, threads, op.getWarpStates());
    if (!layout)
      return rw.notifyMatchFailure(op, "no layout (the verifier checks it)");
    const RowsAttendLayout &L = *layout;
    Type f32 = rw.getF32Type(), i32 = rw.getI32Type();
    auto c = [&](int64_t v) { return indexConstant(rw, loc, v); };

    SmallVector<Value> views;
    for (Value v : {op.getQ(), op.getKeys(), op.getValues(), op.getM(),
                    op.getL(), op.getAcc(), op.getNewM(), op.getNewL(),
                    op.getNewAcc(), op.getScratch()}) {
      FailureOr<Value> view = sharedView(
          rw, loc, v, cast<MemRefType>(v.getType()).getElementType());
      if (failed(view))
        return rw.notifyMatchFailure(op, "an operand is not a shared buffer");
      views.push_back(*view);
    }
    Value q = views[0], keys = views[1], values = views[2], mIn = views[3],
          lIn = views[4], accIn = views[5], mOut = views[6], lOut = views[7],
          accOut = views[8], scratch = views[9];
    // ldmatrix reads 16-byte rows: the buffers and each row aligned.
    for (Value rows : {op.getKeys(), op.getValues()}) {
      std::optional<int64_t> at = staticByteOffset(rows);
      if (!at || *at % 16 || (d * 2) % 16)
        return rw.notifyMatchFailure(op, "rows are not 16-byte aligned");
    }

    Value negInf =
        f32Constant(rw, loc, -std::numeric_limits<float>::infinity());
    auto warpReduce = [&](OpBuilder &b, Value v, bool isMax) {
      return reduceOverLanes(b, loc, v, 4, isMax);
    };

    Value tid = threadIndex(rw, loc);
    Value warp = arith::DivUIOp::create(rw, loc, tid, c(kWarpSize));
    Value lane = arith::RemUIOp::create(rw, loc, tid, c(kWarpSize));
    Value lg = arith::DivUIOp::create(rw, loc, lane, c(4));
    Value lt = arith::RemUIOp::create(rw, loc, lane, c(4));
    int64_t kTiles = d / 16;

    // 1. The CTA splits q into the scores' B fragments (f16 hi + lo).
    emitQueryFragments(
        rw, loc, tid, threads, h, d, scratch,
        [&](OpBuilder &b, Value row, Value ch) -> Value {
          return memref::LoadOp::create(
              b, loc, q, ValueRange{arith::AddIOp::create(b, loc, row, ch)});
        });
    gpu::BarrierOp::create(rw, loc);

    // Steps 2-5 in the warps that have tokens.
    int64_t tokens = L.tokensPerWarp, mTiles = tokens / 16;
    auto attendWarpTokens = [&](OpBuilder &b) {
      Value warpToken = mulIndex(b, loc, warp, tokens);
      // 2. Scores: lane (g, t) of m tile i holds tokens 16 i + 2 g (e = 0,
      // 1) and + 1 (e = 2, 3), heads 2t + e % 2. ldmatrix matrix m = lane /
      // 8 brings rows 2 (lane % 8) + m % 2, channels 8 (m / 2) on.
      Value lm = arith::DivUIOp::create(b, loc, lane, c(8));
      Value lr = arith::RemUIOp::create(b, loc, lane, c(8));
      Value kRow = arith::AddIOp::create(
          b, loc,
          arith::AddIOp::create(b, loc, warpToken, mulIndex(b, loc, lr, 2)),
          arith::RemUIOp::create(b, loc, lm, c(2)));
      Value kAt = arith::AddIOp::create(
          b, loc, mulIndex(b, loc, kRow, d),
          mulIndex(b, loc, arith::DivUIOp::create(b, loc, lm, c(2)), 8));
      SmallVector<SmallVector<SmallVector<Value>>> partScores(
          kMmaSplitParts,
          SmallVector<SmallVector<Value>>(
              mTiles, SmallVector<Value>(4, f32Constant(b, loc, 0.0f))));
      for (int64_t kt = 0; kt < kTiles; ++kt) {
        SplitFragment fragment = loadSplitFragment(
            b, loc, scratch, addIndex(b, loc, lane, kt * kWarpSize));
        SmallVector<std::array<Value, 4>> aRegs;
        for (int64_t i = 0; i < mTiles; ++i) {
          Value regs = LoadMatrixOp::create(
              b, loc, VectorType::get({4}, i32), keys,
              addIndex(b, loc, kAt, i * 16 * d + kt * 16), /*transpose=*/false);
          std::array<Value, 4> a;
          for (int64_t r = 0; r < 4; ++r)
            a[r] = vector::ExtractOp::create(b, loc, regs, r);
          aRegs.push_back(a);
        }
        for (int p = kMmaSplitParts - 1; p >= 0; --p)
          for (int64_t i = 0; i < mTiles; ++i)
            mmaF16(b, loc, aRegs[i], fragment.parts[p], partScores[p][i]);
      }
      SmallVector<SmallVector<Value>> scores = sumParts(b, loc, partScores);

      // 3. The warp's softmax, per head over the lanes of one t.
      Value from =
          arith::IndexCastOp::create(b, loc, b.getIndexType(), op.getFrom());
      Value valid =
          arith::IndexCastOp::create(b, loc, b.getIndexType(), op.getValid());
      SmallVector<Value> heads;
      for (int64_t e = 0; e < 2; ++e)
        heads.push_back(addIndex(b, loc, mulIndex(b, loc, lt, 2), e));
      // Token j of the lane (j = 2 i + r): 16 i + 2 g + r of the warp's.
      int64_t perLane = 2 * mTiles;
      Value laneToken =
          arith::AddIOp::create(b, loc, warpToken, mulIndex(b, loc, lg, 2));
      SmallVector<Value> x(perLane * 2);
      for (int64_t j = 0; j < perLane; ++j) {
        Value token = addIndex(b, loc, laneToken, 16 * (j / 2) + j % 2);
        Value live = arith::AndIOp::create(
            b, loc,
            arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge, token,
                                  from),
            arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, token,
                                  valid));
        for (int64_t e = 0; e < 2; ++e) {
          Value sc = arith::MulFOp::create(
              b, loc, scores[j / 2][2 * (j % 2) + e], op.getSoftmaxScale());
          Value in = arith::AndIOp::create(
              b, loc, live,
              arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, heads[e],
                                    c(h)));
          x[2 * j + e] = arith::SelectOp::create(b, loc, in, sc, negInf);
        }
      }
      SmallVector<Value> rowMax(2), rowSum(2);
      for (int64_t e = 0; e < 2; ++e) {
        Value mx = x[e];
        for (int64_t j = 1; j < perLane; ++j)
          mx = arith::MaximumFOp::create(b, loc, mx, x[2 * j + e]);
        rowMax[e] = warpReduce(b, mx, /*isMax=*/true);
      }
      // The probabilities, split into f16 parts, go to the warp's region as
      // the B fragments' registers: word (part * 8 + head) * rowWords + i
      // holds tokens 2i, 2i + 1 (rows padded by 4 words). Every head row is
      // written (zeros past H).
      int64_t rowWords = tokens / 2 + 4;
      Value region = addIndex(b, loc, mulIndex(b, loc, warp, L.partialFloats),
                              L.partialOffset);
      for (int64_t e = 0; e < 2; ++e) {
        Value max = finiteMax(b, loc, rowMax[e]);
        Value sum;
        for (int64_t i = 0; i < mTiles; ++i) {
          Value p0 = expBelow(b, loc, x[2 * (2 * i) + e], max);
          Value p1 = expBelow(b, loc, x[2 * (2 * i + 1) + e], max);
          Value pair = arith::AddFOp::create(b, loc, p0, p1);
          sum = i ? arith::AddFOp::create(b, loc, sum, pair).getResult() : pair;
          std::array<Value, kMmaSplitParts> parts =
              splitToF16x2(b, loc, p0, p1);
          for (int p = 0; p < kMmaSplitParts; ++p) {
            Value at = arith::AddIOp::create(
                b, loc, region,
                arith::AddIOp::create(
                    b, loc,
                    mulIndex(b, loc, addIndex(b, loc, heads[e], 8 * p),
                             rowWords),
                    addIndex(b, loc, lg, 8 * i)));
            memref::StoreOp::create(
                b, loc, arith::BitcastOp::create(b, loc, f32, parts[p]),
                scratch, ValueRange{at});
          }
        }
        rowSum[e] = warpReduce(b, sum, /*isMax=*/false);
      }
      Value fullMask = i32Constant(b, loc, -1);
      NVVM::SyncWarpOp::create(b, loc, fullMask);

      // 4. weighted[d, h] = sum_t v[t, d] p[h, t] over the warp's tokens:
      // A is V transposed (ldmatrix.trans: matrix m = lane / 8 brings
      // tokens 8 (m / 2) + lane % 8 of channels 8 (m % 2) on), lane (g, t)
      // ends with channels 16 i + g (e = 0, 1) and + 8 (e = 2, 3), heads
      // 2t + e % 2.
      int64_t vTiles = d / 16;
      Value vRow = arith::AddIOp::create(
          b, loc, warpToken,
          arith::AddIOp::create(
              b, loc, lr,
              mulIndex(b, loc, arith::DivUIOp::create(b, loc, lm, c(2)), 8)));
      Value vAt = arith::AddIOp::create(
          b, loc, mulIndex(b, loc, vRow, d),
          mulIndex(b, loc, arith::RemUIOp::create(b, loc, lm, c(2)), 8));
      SmallVector<SmallVector<Value>> weighted(
          vTiles, SmallVector<Value>(4, f32Constant(b, loc, 0.0f)));
      for (int64_t kt = 0; kt < tokens / 16; ++kt) {
        SmallVector<std::array<Value, kMmaSplitParts>> bParts =
            loadProbabilityFragments(b, loc, scratch, region, lg, lt, rowWords,
                                     kt, /*firstHead=*/0, /*partRows=*/8);
        for (int64_t i = 0; i < vTiles; ++i) {
          Value regs = LoadMatrixOp::create(
              b, loc, VectorType::get({4}, i32), values,
              addIndex(b, loc, vAt, kt * 16 * d + i * 16), /*transpose=*/true);
          std::array<Value, 4> a;
          for (int64_t r = 0; r < 4; ++r)
            a[r] = vector::ExtractOp::create(b, loc, regs, r);
          for (int p = kMmaSplitParts - 1; p >= 0; --p)
            mmaF16(b, loc, a, {bParts[0][p], bParts[1][p]}, weighted[i]);
        }
      }

      // 5. The warp's partial state: weighted per head (after the warp's
      // reads of the probabilities), max and sum (lanes g = 0); with
      // warp_states, folded into the warp's own row of the state.
      if (op.getWarpStates()) {
        emitWarpStateUpdate(
            b, loc, warp, lg, lt, h, d,
            [&](int64_t e) -> BlockStats {
              return {rowMax[e], rowSum[e], Value()};
            },
            [&](OpBuilder &ib, int64_t e) {
              SmallVector<ChannelRun> runs;
              for (int64_t i = 0; i < vTiles; ++i)
                for (int64_t r = 0; r < 2; ++r)
                  runs.push_back({addIndex(ib, loc, lg, 16 * i + 8 * r),
                                  {weighted[i][2 * r + e]}});
              return runs;
            },
            /*channelScales=*/{}, mIn, lIn, accIn, mOut, lOut, accOut);
        return;
      }
      NVVM::SyncWarpOp::create(b, loc, fullMask);
      for (int64_t e = 0; e < 2; ++e) {
        Value mine = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult,
                                           heads[e], c(h));
        scf::IfOp::create(b, loc, mine, [&](OpBuilder &ib, Location) {
          Value at = arith::AddIOp::create(
              ib, loc, region,
              arith::AddIOp::create(
                  ib, loc, mulIndex(ib, loc, heads[e], L.partialHeadFloats),
                  lg));
          for (int64_t i = 0; i < vTiles; ++i)
            for (int64_t r = 0; r < 2; ++r)
              memref::StoreOp::create(
                  ib, loc, weighted[i][2 * r + e], scratch,
                  ValueRange{addIndex(ib, loc, at, 16 * i + 8 * r)});
          Value g0 = arith::CmpIOp::create(ib, loc, arith::CmpIPredicate::eq,
                                           lg, c(0));
          scf::IfOp::create(ib, loc, g0, [&](OpBuilder &tb, Location) {
            Value stats = addIndex(
                tb, loc, mulIndex(tb, loc, warp, kRecordAttendStatsFloats),
                L.statsOffset);
            Value at = arith::AddIOp::create(tb, loc, stats, heads[e]);
            memref::StoreOp::create(tb, loc, rowMax[e], scratch,
                                    ValueRange{at});
            memref::StoreOp::create(tb, loc, rowSum[e], scratch,
                                    ValueRange{addIndex(tb, loc, at, 8)});
            scf::YieldOp::create(tb, loc);
          });
          scf::YieldOp::create(ib, loc);
        });
      }
    };
    if (L.warps * kWarpSize == threads) {
      attendWarpTokens(rw);
    } else {
      Value attending = arith::CmpIOp::create(
          rw, loc, arith::CmpIPredicate::ult, warp, c(L.warps));
      scf::IfOp::create(rw, loc, attending, [&](OpBuilder &b, Location) {
        attendWarpTokens(b);
        scf::YieldOp::create(b, loc);
      });
    }

    // 6. The partials meet the incoming state.
    if (!op.getWarpStates())
      emitMergeWarpPartials(rw, loc, tid, threads, h, d,
                            {L.warps, L.partialOffset, L.partialFloats,
                             L.statsOffset, L.incomingOffset,
                             L.partialHeadFloats},
                            scratch, mIn, lIn, accIn, mOut, lOut, accOut,
                            /*scaling=*/std::nullopt);
    rw.eraseOp(op);
    return success();
  }
};

} // namespace

void kvarn::kvgpu::populateKVGPUAttentionToNVVMPatterns(
    RewritePatternSet &patterns) {
  patterns.add<PackedMatmulLowering, AttendRecordLowering, AttendLatentLowering,
               AttendRowsLowering>(patterns.getContext());
}
