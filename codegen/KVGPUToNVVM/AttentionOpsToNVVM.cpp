//===- AttentionOpsToNVVM.cpp - packed_matmul -----------------------------===//
//
// kvgpu.packed_matmul: attention's dot products over a record's packed codes
// with the operands in registers, on tensor cores (bf16 mma.sync) or with
// fma. getPackedMatmulLayout (KVGPU.h) decides the strategy and which thread
// holds which codes; this file emits it.
//
//===----------------------------------------------------------------------===//

#include "Common.h"

#include <algorithm>
#include <array>

using namespace mlir;
using namespace kvarn::kvgpu;

namespace {

/// `codes` (a shared buffer of bytes) read as `pieceBits`-bit integers: a
/// view of the same shared bytes with that element type.
FailureOr<Value> piecesView(PatternRewriter &rw, Location loc, Value codes,
                            int64_t pieceBits) {
  auto type = cast<MemRefType>(codes.getType());
  int64_t pieceBytes = pieceBits / 8;
  auto view = MemRefType::get({type.getNumElements() / pieceBytes},
                              rw.getIntegerType(pieceBits),
                              MemRefLayoutAttrInterface(),
                              type.getMemorySpace());
  if (auto buffer = codes.getDefiningOp<SharedBufferOp>()) {
    if (buffer.getOffset() % pieceBytes)
      return failure();
    return SharedBufferOp::create(rw, loc, view, buffer.getOffset())
        .getResult();
  }
  if (auto lowered = codes.getDefiningOp<memref::ViewOp>()) // shared_buffer's
    return memref::ViewOp::create(rw, loc, view, lowered.getSource(),
                                  lowered.getByteShift(), ValueRange())
        .getResult();
  return failure();
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

/// Two codes as the bf16 pair (low, high) of an mma operand register (i32):
/// each OR-ed into the mantissa of 128.0 (0x4300: ulp 1 there, exact for
/// codes < 128), then 128 subtracted by one fma.rn.bf16x2 (exact).
Value codePairToBf16x2(OpBuilder &b, Location loc, Value low, Value high,
                       int64_t bits) {
  Value mask = i32Constant(b, loc, (1 << bits) - 1);
  Value lo = arith::AndIOp::create(b, loc, low, mask);
  Value hi = arith::ShLIOp::create(
      b, loc, arith::AndIOp::create(b, loc, high, mask), i32Constant(b, loc, 16));
  Value v = arith::OrIOp::create(
      b, loc, arith::OrIOp::create(b, loc, lo, hi),
      i32Constant(b, loc, 0x43004300));
  auto bf16x2 = VectorType::get({2}, b.getBF16Type());
  Value pair = LLVM::BitcastOp::create(b, loc, bf16x2, v);
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
  auto f32x2 = VectorType::get({2}, b.getF32Type());
  auto bf16x2 = VectorType::get({2}, b.getBF16Type());
  Value rest = vector::FromElementsOp::create(b, loc, f32x2, ValueRange{x0, x1});
  std::array<Value, kMmaSplitParts> parts;
  for (int p = 0; p < kMmaSplitParts; ++p) {
    Value part = LLVM::FPTruncOp::create(b, loc, bf16x2, rest);
    parts[p] = LLVM::BitcastOp::create(b, loc, b.getI32Type(), part);
    if (p + 1 < kMmaSplitParts)
      rest = LLVM::FSubOp::create(b, loc, rest,
                                  LLVM::FPExtOp::create(b, loc, f32x2, part));
  }
  return parts;
}

/// The tensor-core strategy (PackedMatmulMmaTiling in KVGPU.h).
LogicalResult lowerOnTensorCores(PackedMatmulOp op, PatternRewriter &rw,
                                 const PackedMatmulMmaTiling &T, int64_t h,
                                 int64_t n, int64_t bits) {
  Location loc = op.getLoc();
  auto c = [&](int64_t v) { return indexConstant(rw, loc, v); };
  int64_t runCodes = 2 * T.columnTiles;
  // A run shorter than a byte is read as its byte and shifted.
  int64_t wordBits = std::clamp<int64_t>(T.runBits, 8, 32);
  int64_t words = std::max<int64_t>(1, T.runBits / 32);
  FailureOr<Value> wordView = piecesView(rw, loc, op.getCodes(), wordBits);
  if (failed(wordView))
    return rw.notifyMatchFailure(op, "codes are not an aligned shared buffer");
  int64_t wordsPerRow = n * bits / wordBits;

  Value tid = threadIndex(rw, loc);
  Value warp = arith::DivUIOp::create(rw, loc, tid, c(kWarpSize));
  Value lane = arith::RemUIOp::create(rw, loc, tid, c(kWarpSize));
  Value g = arith::DivUIOp::create(rw, loc, lane, c(4));
  Value t = arith::RemUIOp::create(rw, loc, lane, c(4));
  Value column = arith::AddIOp::create(
      rw, loc, arith::MulIOp::create(rw, loc, warp, c(16 * T.columnTiles)),
      arith::MulIOp::create(rw, loc, g, c(runCodes)));
  Value firstBit = arith::MulIOp::create(rw, loc, column, c(bits));
  Value wordInRow = arith::DivUIOp::create(rw, loc, firstBit, c(wordBits));
  Value subShift = T.runBits < 8
                       ? arith::IndexCastOp::create(
                             rw, loc, rw.getI32Type(),
                             arith::RemUIOp::create(rw, loc, firstBit, c(8)))
                             .getResult()
                       : Value();
  // The B fragments of k tiles [first, first + getMmaSplitRoundTiles), split
  // once per CTA into `scratch` (KVGPU.h): fragment f = ((k tile - first) *
  // headTiles + head tile) * 32 + lane holds, for each part,
  // the lane's two registers: slots 2t, 2t + 1 (rows t, t + 4) and 2t + 8,
  // 2t + 9 (rows t + 8, t + 12) of head 8j + g. Heads past H are zero.
  static_assert(2 * kMmaSplitParts == 4, "a fragment is one 16-byte load");
  Type f32 = rw.getF32Type(), i32 = rw.getI32Type();
  auto f32x4 = VectorType::get({4}, f32);
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
          Value rowBase = arith::AddIOp::create(
              b, loc, arith::MulIOp::create(b, loc, kt, c(16)),
              arith::RemUIOp::create(b, loc, fl, c(4)));
          auto aValue = [&](int64_t offset) -> Value {
            Value row = arith::AddIOp::create(b, loc, rowBase, c(offset));
            Value at = arith::AddIOp::create(
                b, loc, arith::MulIOp::create(b, loc, row, c(h)), clamped);
            Value x = memref::LoadOp::create(b, loc, op.getA(), at);
            return arith::SelectOp::create(b, loc, valid, x,
                                           f32Constant(b, loc, 0.0f));
          };
          std::array<Value, kMmaSplitParts> r0 = splitToBf16x2(
                                                b, loc, aValue(0), aValue(4)),
                                            r1 = splitToBf16x2(
                                                b, loc, aValue(8), aValue(12));
          SmallVector<Value> words;
          for (int p = 0; p < kMmaSplitParts; ++p)
            for (Value w : {r0[p], r1[p]})
              words.push_back(arith::BitcastOp::create(b, loc, f32, w));
          vector::StoreOp::create(
              b, loc, vector::FromElementsOp::create(b, loc, f32x4, words),
              scratch, ValueRange{arith::MulIOp::create(b, loc, f, c(4))},
              /*nontemporal=*/false, llvm::MaybeAlign(16));
        });
    gpu::BarrierOp::create(rw, loc);
  };

  int64_t accCount = T.columnTiles * T.headTiles * 4;
  auto accIndex = [&](int64_t i, int64_t j) {
    return (i * T.headTiles + j) * 4;
  };
  auto accType =
      LLVM::LLVMStructType::getLiteral(rw.getContext(), {f32, f32, f32, f32});
  SmallVector<Value> sums(accCount, f32Constant(rw, loc, 0.0f));
  // Rounds of roundTiles k tiles: split, barrier, MMAs; a barrier before
  // the next round's split overwrites the fragments.
  for (int64_t first = 0; first < T.kTiles; first += roundTiles) {
    if (first > 0)
      gpu::BarrierOp::create(rw, loc);
    splitRound(first);
    auto loop = scf::ForOp::create(
        rw, loc, c(first), c(first + roundTiles), c(1), sums,
        [&](OpBuilder &b, Location, Value kt, ValueRange accIn) {
          SmallVector<Value> acc(accIn);
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
              Value word = memref::LoadOp::create(
                  b, loc, *wordView,
                  ValueRange{arith::AddIOp::create(b, loc, at, c(w))});
              if (wordBits < 32)
                word = arith::ExtUIOp::create(b, loc, i32, word);
              if (subShift)
                word = arith::ShRUIOp::create(b, loc, word, subShift);
              run.push_back(word);
            }
            return run;
          };
          auto codeAt = [&](ArrayRef<Value> run, int64_t j) -> Value {
            int64_t bit = j * bits;
            Value word = run[bit / 32];
            return bit % 32 ? arith::ShRUIOp::create(
                                  b, loc, word, i32Constant(b, loc, bit % 32))
                                  .getResult()
                            : word;
          };
          // Slots 2t, 2t + 1, 2t + 8, 2t + 9 read rows t, t + 4, t + 8, t + 12.
          SmallVector<Value> r0 = loadRun(0), r1 = loadRun(4), r8 = loadRun(8),
                             r9 = loadRun(12);
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
                            b, loc, arith::SubIOp::create(b, loc, kt, c(first)),
                            c(T.headTiles)),
                        c(j)),
                    c(kWarpSize)),
                lane);
            Value vec = vector::LoadOp::create(
                b, loc, f32x4, scratch,
                ValueRange{arith::MulIOp::create(b, loc, f, c(4))},
                /*nontemporal=*/false, llvm::MaybeAlign(16));
            auto word = [&](int64_t e) -> Value {
              return arith::BitcastOp::create(
                  b, loc, i32, vector::ExtractOp::create(b, loc, vec, e));
            };
            b0.push_back({word(0), word(2)});
            b1.push_back({word(1), word(3)});
          }
          // Every column tile's a registers first, then the MMAs part by
          // part across the tiles: consecutive MMAs accumulate into different
          // sums, so they do not wait for one another.
          SmallVector<std::array<Value, 4>> aRegs;
          for (int64_t i = 0; i < T.columnTiles; ++i) {
            auto pair = [&](ArrayRef<Value> low, ArrayRef<Value> high,
                            int64_t j) {
              return codePairToBf16x2(b, loc, codeAt(low, j), codeAt(high, j),
                                      bits);
            };
            aRegs.push_back({pair(r0, r1, 2 * i), pair(r0, r1, 2 * i + 1),
                             pair(r8, r9, 2 * i), pair(r8, r9, 2 * i + 1)});
          }
          // Smallest part first.
          for (int p = kMmaSplitParts - 1; p >= 0; --p)
            for (int64_t i = 0; i < T.columnTiles; ++i)
              for (int64_t j = 0; j < T.headTiles; ++j) {
                int64_t base = accIndex(i, j);
                Value mma = NVVM::MmaOp::create(
                    b, loc, accType, aRegs[i], ValueRange{b0[j][p], b1[j][p]},
                    ValueRange(acc).slice(base, 4),
                    ArrayRef<int64_t>{16, 8, 16}, std::nullopt, std::nullopt,
                    std::array<NVVM::MMATypes, 2>{NVVM::MMATypes::bf16,
                                                  NVVM::MMATypes::bf16},
                    std::array<NVVM::MMALayout, 2>{NVVM::MMALayout::row,
                                                   NVVM::MMALayout::col});
                for (int64_t e = 0; e < 4; ++e)
                  acc[base + e] = LLVM::ExtractValueOp::create(b, loc, mma, e);
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
    int64_t bits = op.getBits(), k = codesType.getDimSize(0),
            rowBytes = codesType.getDimSize(1), n = rowBytes * 8 / bits,
            h = op.getA().getType().getNumElements() / k;
    int64_t threads = getNumThreads(op);
    std::optional<PackedMatmulLayout> layout =
        getPackedMatmulLayout(h, k, n, bits, threads);
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
            Value aRow = arith::MulIOp::create(b, loc, row, c(h));
            for (int64_t r = 0; r < h; ++r)
              a.push_back(memref::LoadOp::create(
                  b, loc, op.getA(),
                  ValueRange{arith::AddIOp::create(b, loc, aRow, c(r))}));
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

} // namespace

void kvarn::kvgpu::populateKVGPUAttentionToNVVMPatterns(
    RewritePatternSet &patterns) {
  patterns.add<PackedMatmulLowering>(patterns.getContext());
}
