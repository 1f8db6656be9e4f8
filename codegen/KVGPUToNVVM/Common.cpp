//===- Common.cpp - helpers shared by the kvgpu lowerings -----------------===//

#include "Common.h"

#include "mlir/IR/IRMapping.h"

using namespace mlir;


Value kvarn::kvgpu::threadIndex(OpBuilder &b, Location loc) {
  return gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
}

Value kvarn::kvgpu::indexConstant(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIndexOp::create(b, loc, v);
}

Value kvarn::kvgpu::i32Constant(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIntOp::create(b, loc, v, 32);
}

Value kvarn::kvgpu::i64Constant(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIntOp::create(b, loc, v, 64);
}

Value kvarn::kvgpu::f32Constant(OpBuilder &b, Location loc, float v) {
  return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(v));
}

Value kvarn::kvgpu::combineReduction(OpBuilder &b, Location loc,
                                     ReduceKind kind, Value x, Value y) {
  switch (kind) {
  case ReduceKind::Add:
    return arith::AddFOp::create(b, loc, x, y);
  case ReduceKind::Max:
    return arith::MaximumFOp::create(b, loc, x, y);
  case ReduceKind::Min:
    return arith::MinimumFOp::create(b, loc, x, y);
  }
  llvm_unreachable("unknown reduction");
}

void kvarn::kvgpu::buildStridedLoop(
    OpBuilder &b, Location loc, Value start, int64_t total, int64_t step,
    function_ref<void(OpBuilder &, Value)> body) {
  Value upper = indexConstant(b, loc, total);
  Value stepV = indexConstant(b, loc, step);
  scf::ForOp::create(b, loc, start, upper, stepV, ValueRange(),
                     [&](OpBuilder &nb, Location, Value iv, ValueRange) {
                       body(nb, iv);
                       scf::YieldOp::create(nb, loc);
                     });
}

void kvarn::kvgpu::buildThreadStridedLoop(
    OpBuilder &b, Location loc, Value tid, int64_t total, int64_t threads,
    function_ref<void(OpBuilder &, Value)> body) {
  // Straight-line code lets ptxas overlap the iterations' loads; a loop of
  // one or two trips would keep each iteration's latency in sequence.
  constexpr int64_t kMaxUnrolled = 4;
  if (total % threads || total / threads > kMaxUnrolled) {
    buildStridedLoop(b, loc, tid, total, threads, body);
    return;
  }
  for (int64_t i = 0; i < total / threads; ++i)
    body(b, i ? arith::AddIOp::create(b, loc, tid,
                                      indexConstant(b, loc, i * threads))
                    .getResult()
              : tid);
}

SmallVector<Value> kvarn::kvgpu::delinearize(OpBuilder &b, Location loc,
                                             Value p, ArrayRef<int64_t> shape) {
  SmallVector<Value> idx(shape.size());
  Value rest = p;
  for (int i = int(shape.size()) - 1; i >= 0; --i) {
    if (i == 0) {
      idx[i] = rest;
      break;
    }
    Value d = indexConstant(b, loc, shape[i]);
    idx[i] = arith::RemUIOp::create(b, loc, rest, d);
    rest = arith::DivUIOp::create(b, loc, rest, d);
  }
  return idx;
}

SmallVector<Value> kvarn::kvgpu::inlineBody(OpBuilder &b, Region &region,
                                            ValueRange args) {
  IRMapping map;
  Block &block = region.front();
  map.map(block.getArguments(), args);
  for (Operation &op : block.without_terminator())
    b.clone(op, map);
  SmallVector<Value> results;
  for (Value v : block.getTerminator()->getOperands())
    results.push_back(map.lookupOrDefault(v));
  return results;
}

void kvarn::kvgpu::emitRegisterButterflies(OpBuilder &b, Location loc,
                                           MutableArrayRef<Value> v, Value lane,
                                           int64_t lanes, float scale,
                                           Value memberMask) {
  int64_t per = int64_t(v.size()), len = lanes * per;
  auto i32 = [&](int64_t c) -> Value {
    return arith::ConstantIntOp::create(b, loc, c, 32);
  };
  Value s = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(scale));
  Value width = i32(kWarpSize);
  for (int64_t h = 1; h < len; h *= 2) {
    bool last = 2 * h == len && scale != 1.0f;
    auto finish = [&](Value x) -> Value {
      return last ? arith::MulFOp::create(b, loc, x, s).getResult() : x;
    };
    if (h < per) {
      for (int64_t e = 0; e < per; ++e) {
        if (e & h)
          continue;
        Value x = v[e], y = v[e + h];
        v[e] = finish(arith::AddFOp::create(b, loc, x, y));
        v[e + h] = finish(arith::SubFOp::create(b, loc, x, y));
      }
      continue;
    }
    // The lower lane keeps mine + other, the upper other - mine: both are
    // one fma(sign, mine, other) with sign = +-1 per lane (exact product,
    // one rounding: the same bits as the add or the subtraction), against
    // an add, a subtraction and a select per value.
    int64_t mask = h / per;
    Value upper = arith::CmpIOp::create(
        b, loc, arith::CmpIPredicate::ne,
        arith::AndIOp::create(b, loc, lane, i32(mask)), i32(0));
    Value sign = arith::SelectOp::create(
        b, loc, upper, arith::ConstantOp::create(b, loc, b.getF32FloatAttr(-1)),
        arith::ConstantOp::create(b, loc, b.getF32FloatAttr(1)));
    // gpu.shuffle takes no member mask (it names the warp's low `width`
    // lanes): a part of a warp shuffles through nvvm.shfl.sync itself.
    for (int64_t e = 0; e < per; ++e) {
      Value mine = v[e];
      Value other =
          memberMask ? NVVM::ShflOp::create(b, loc, mine.getType(), memberMask,
                                            mine, i32(mask), i32(kWarpSize - 1),
                                            NVVM::ShflKind::bfly, UnitAttr())
                           .getResult()
                     : gpu::ShuffleOp::create(b, loc, mine, i32(mask), width,
                                              gpu::ShuffleMode::XOR)
                           .getShuffleResult();
      v[e] = finish(LLVM::FMAOp::create(b, loc, sign, mine, other));
    }
  }
}

Value kvarn::kvgpu::rowSwizzle(OpBuilder &b, Location loc, Value row) {
  // (row & 2) | (((row >> 2) ^ row) & 1) << 2, as kvgpu::rowSwizzle.
  Value bit1 = arith::AndIOp::create(b, loc, row, indexConstant(b, loc, 2));
  Value bit = arith::AndIOp::create(
      b, loc,
      arith::XOrIOp::create(
          b, loc, arith::ShRUIOp::create(b, loc, row, indexConstant(b, loc, 2)),
          row),
      indexConstant(b, loc, 1));
  return arith::OrIOp::create(
      b, loc, bit1,
      arith::ShLIOp::create(b, loc, bit, indexConstant(b, loc, 2)));
}

Value kvarn::kvgpu::swizzledByte(OpBuilder &b, Location loc, Value at,
                                 int64_t rowBytes) {
  auto c = [&](int64_t v) { return indexConstant(b, loc, v); };
  Value swizzle;
  if (rowBytes % 128 == 0) {
    swizzle =
        rowSwizzle(b, loc, arith::DivUIOp::create(b, loc, at, c(rowBytes)));
  } else {
    // lineSwizzle(line): 3 (line & 1) ^ ((line >> 1) & 1).
    Value line = arith::ShRUIOp::create(b, loc, at, c(7));
    swizzle = arith::XOrIOp::create(
        b, loc,
        arith::MulIOp::create(b, loc, arith::AndIOp::create(b, loc, line, c(1)),
                              c(3)),
        arith::AndIOp::create(
            b, loc, arith::ShRUIOp::create(b, loc, line, c(1)), c(1)));
  }
  // The chunk's bits (bits 4..6 of the byte) XOR the swizzle.
  return arith::XOrIOp::create(b, loc, at,
                               arith::ShLIOp::create(b, loc, swizzle, c(4)));
}

Value kvarn::kvgpu::sharedAddress(OpBuilder &b, Location loc, Value shared,
                                  ArrayRef<Value> idx) {
  auto type = cast<MemRefType>(shared.getType());
  auto toI64 = [&](Value index) -> Value {
    return arith::IndexCastOp::create(b, loc, b.getI64Type(), index);
  };
  Value linear = indexConstant(b, loc, 0);
  for (auto [i, size] : llvm::zip(idx, type.getShape()))
    linear = arith::AddIOp::create(
        b, loc,
        arith::MulIOp::create(b, loc, linear, indexConstant(b, loc, size)), i);
  Value base = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, shared);
  auto ptr = LLVM::LLVMPointerType::get(b.getContext(), /*addressSpace=*/3);
  Value basePtr = LLVM::IntToPtrOp::create(b, loc, ptr, toI64(base));
  int64_t elemBytes = type.getElementType().getIntOrFloatBitWidth() / 8;
  Value bytes = arith::MulIOp::create(b, loc, toI64(linear),
                                      i64Constant(b, loc, elemBytes));
  return LLVM::GEPOp::create(b, loc, ptr, b.getI8Type(), basePtr,
                             ValueRange{bytes});
}

std::array<Value, 2> kvarn::kvgpu::widenBf16x2(OpBuilder &b, Location loc,
                                               Value pair) {
  Type f32 = b.getF32Type();
  Value low = arith::ShLIOp::create(b, loc, pair, i32Constant(b, loc, 16));
  Value high =
      arith::AndIOp::create(b, loc, pair, i32Constant(b, loc, 0xFFFF0000));
  return {arith::BitcastOp::create(b, loc, f32, low),
          arith::BitcastOp::create(b, loc, f32, high)};
}
