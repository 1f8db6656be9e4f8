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

// The bank properties KVGPU.h gives as the swizzles' reason, on the
// constexprs the IR matches: rows 2k and 2k + 1 differ in the chunk's bit 2
// and rows 0, 2, 4, 6 in bits 1 and 2; lines 2k and 2k + 1 differ in both
// low bits and lines 4k .. 4k + 3 have four different low two bits; both
// repeat by whole periods (8 rows, 4 lines), which swizzlePeriodBytes
// states.
TEST(Swizzle, SwizzlesKeepTheirBankProperties) {
  using kvarn::kvgpu::lineSwizzle;
  using kvarn::kvgpu::rowSwizzle;
  for (int64_t k = 0; k < 8; ++k)
    EXPECT_EQ((rowSwizzle(2 * k) ^ rowSwizzle(2 * k + 1)) & 4, 4) << "k " << k;
  unsigned evenRows = 0;
  for (int64_t k = 0; k < 4; ++k)
    evenRows |= 1u << ((rowSwizzle(2 * k) >> 1) & 3);
  EXPECT_EQ(evenRows, 0xfu);
  for (int64_t row = 0; row < 16; ++row)
    EXPECT_EQ(rowSwizzle(row), rowSwizzle(row + 8)) << "row " << row;
  EXPECT_EQ(kvarn::kvgpu::swizzlePeriodBytes(256), 8 * 256);

  for (int64_t k = 0; k < 4; ++k)
    EXPECT_EQ((lineSwizzle(2 * k) ^ lineSwizzle(2 * k + 1)) & 3, 3)
        << "k " << k;
  unsigned lines = 0;
  for (int64_t line = 0; line < 4; ++line)
    lines |= 1u << (lineSwizzle(line) & 3);
  EXPECT_EQ(lines, 0xfu);
  for (int64_t line = 0; line < 8; ++line)
    EXPECT_EQ(lineSwizzle(line), lineSwizzle(line + 4)) << "line " << line;
  EXPECT_EQ(kvarn::kvgpu::swizzlePeriodBytes(64), 4 * 128);
}

} // namespace
