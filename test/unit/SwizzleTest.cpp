//===- SwizzleTest.cpp - the lowering's swizzle IR against KVGPU.h --------===//
//
// kvgpu::rowSwizzle and kvgpu::lineSwizzle (KVGPU.h) state where
// kvgpu.copy_in's `swizzled_rows` puts a row's 16-byte chunks; the lowering
// builds the same formulas as IR (KVGPUToNVVM/Common.cpp: swizzledByte,
// rowSwizzle), which every swizzled store and load goes through. This
// folds that IR on constant bytes and checks it against the constexprs, so
// the two cannot drift apart.
//
//===----------------------------------------------------------------------===//

#include "Common.h"

#include "kvarn/Dialect/KVGPU/KVGPU.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"

#include <gtest/gtest.h>

#include <functional>
#include <optional>

using namespace mlir;

namespace {

/// `v` evaluated by its ops' own folders, every leaf an arith constant
/// (nullopt where an op does not fold to a constant).
std::optional<int64_t> evaluate(Value v) {
  Operation *op = v.getDefiningOp();
  if (!op)
    return std::nullopt;
  SmallVector<Attribute> operands;
  for (Value operand : op->getOperands()) {
    std::optional<int64_t> x = evaluate(operand);
    if (!x)
      return std::nullopt;
    operands.push_back(IntegerAttr::get(operand.getType(), *x));
  }
  SmallVector<OpFoldResult> results;
  if (failed(op->fold(operands, results)) || results.size() != 1)
    return std::nullopt;
  // A folder may answer with one of the op's operands (x & -1 is x).
  if (auto value = dyn_cast<Value>(results[0]))
    return evaluate(value);
  if (auto attr = dyn_cast_if_present<IntegerAttr>(
          dyn_cast<Attribute>(results[0])))
    return attr.getInt();
  return std::nullopt;
}

/// What `build` makes of the constant index `at`, folded.
std::optional<int64_t>
foldIndex(int64_t at,
          const std::function<Value(OpBuilder &, Location, Value)> &build) {
  MLIRContext context;
  context.loadDialect<arith::ArithDialect>();
  OpBuilder b(&context);
  Location loc = b.getUnknownLoc();
  OwningOpRef<ModuleOp> module = ModuleOp::create(loc);
  b.setInsertionPointToStart(module->getBody());
  return evaluate(build(b, loc, kvarn::kvgpu::indexConstant(b, loc, at)));
}

TEST(Swizzle, RowSwizzleIrIsKvgpuRowSwizzle) {
  for (int64_t row = 0; row < 64; ++row)
    EXPECT_EQ(foldIndex(row, [](OpBuilder &b, Location loc, Value v) {
                return kvarn::kvgpu::rowSwizzle(b, loc, v);
              }),
              kvarn::kvgpu::rowSwizzle(row))
        << "row " << row;
}

TEST(Swizzle, SwizzledByteIsTheChunkXorTheRowsSwizzle) {
  for (int64_t rowBytes : {32, 64, 128, 256, 512}) {
    ASSERT_TRUE(kvarn::kvgpu::isSwizzledRowBytes(rowBytes));
    // Two periods of every row width, at each byte of a chunk's edges.
    int64_t end = 2 * kvarn::kvgpu::swizzlePeriodBytes(rowBytes);
    for (int64_t at = 0; at < end; at += (at % 16 == 0 ? 15 : 1)) {
      int64_t swizzle = rowBytes % 128 == 0
                            ? kvarn::kvgpu::rowSwizzle(at / rowBytes)
                            : kvarn::kvgpu::lineSwizzle(at / 128);
      EXPECT_EQ(foldIndex(at,
                          [rowBytes](OpBuilder &b, Location loc, Value v) {
                            return kvarn::kvgpu::swizzledByte(b, loc, v,
                                                              rowBytes);
                          }),
                at ^ (swizzle << 4))
          << "row bytes " << rowBytes << ", byte " << at;
    }
  }
}

// The property the swizzle exists for, on the constexprs the IR matches:
// within a period every row's chunks are a permutation (no two chunks of
// one row land together) and a period's bytes move alike by whole periods.
TEST(Swizzle, SwizzlePermutesEachRowsChunks) {
  for (int64_t row = 0; row < 16; ++row) {
    unsigned seen = 0;
    for (int64_t chunk = 0; chunk < 8; ++chunk)
      seen |= 1u << (chunk ^ kvarn::kvgpu::rowSwizzle(row));
    EXPECT_EQ(seen, 0xffu) << "row " << row;
    EXPECT_EQ(kvarn::kvgpu::rowSwizzle(row), kvarn::kvgpu::rowSwizzle(row + 8));
  }
  for (int64_t line = 0; line < 8; ++line) {
    unsigned seen = 0;
    for (int64_t chunk = 0; chunk < 8; ++chunk)
      seen |= 1u << (chunk ^ kvarn::kvgpu::lineSwizzle(line));
    EXPECT_EQ(seen, 0xffu) << "line " << line;
    EXPECT_EQ(kvarn::kvgpu::lineSwizzle(line),
              kvarn::kvgpu::lineSwizzle(line + 4));
  }
}

} // namespace
