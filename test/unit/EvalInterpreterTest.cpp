//===- EvalInterpreterTest.cpp - the evaluator's own semantics ------------===//
//
// Scalars, control flow, grids and every error path of the evaluator, on
// small kernels written in the DSL.
//
//===----------------------------------------------------------------------===//

#include "EvalTestUtil.h"

#include "kvarn/Support/Error.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace kvarn;
using namespace kvarn::test;
using eval::KernelArg;

namespace {
BuiltKernel build(llvm::StringRef source) {
  dsl::Specialization spec;
  spec.preset = "kvarn_k4v2_g64";
  spec.headDim = 64;
  BuiltKernel k = buildFromSource(source, "t.kvt", "t", spec);
  EXPECT_TRUE(bool(k)) << k.diagnostics;
  return k;
}

std::string runError(BuiltKernel &k, llvm::ArrayRef<KernelArg> args) {
  kvarn::Expected<eval::RunStats> stats = k.run(args);
  if (stats) {
    ADD_FAILURE() << "expected the run to fail";
    return "";
  }
  std::string message;
  (void)consumeError(stats.takeError(), message);
  return message;
}
} // namespace

TEST(Evaluator, IntegerArithmeticWrapsAndRoundsTowardZero) {
  BuiltKernel k = build(R"(
kernel t(out: ptr<i32>, big: ptr<i64>, a: i32, b: i32, n: i32) grid(n) {
  out[0] = a + b;            // wraps at 32 bits
  out[1] = -7 / b;           // truncation
  out[2] = -7 % b;
  out[3] = cdiv(a - 2147483640, b);
  out[4] = min(a, b) - max(a, b);
  out[5] = i32(i64(a) * 3);  // wraps when truncated
  out[6] = i32(-2.75 * f32(b));
  big[0] = i64(a) * 3;
  out[7] = i32(a > b && b > 0) + i32(!(a == b));
}
)");
  ASSERT_TRUE(bool(k));
  std::vector<int32_t> out(8, 0);
  std::vector<int64_t> big(1, 0);
  int32_t a = 2147483647, b = 2;
  kvarn::Expected<eval::RunStats> stats = k.run(
      {KernelArg::buffer(out), KernelArg::buffer(big), KernelArg::integer(a),
       KernelArg::integer(b), KernelArg::integer(1)});
  ASSERT_TRUE(bool(stats)) << kvarn::toString(stats.takeError());
  EXPECT_EQ(out[0], int32_t(uint32_t(a) + uint32_t(b)));
  EXPECT_EQ(out[1], -3);
  EXPECT_EQ(out[2], -1);
  EXPECT_EQ(out[3], 4); // cdiv(7, 2)
  EXPECT_EQ(out[4], 2 - a);
  EXPECT_EQ(out[5], int32_t(uint32_t(int64_t(a) * 3)));
  EXPECT_EQ(out[6], -5); // -5.5 truncated
  EXPECT_EQ(big[0], int64_t(a) * 3);
  EXPECT_EQ(out[7], 2);
}

TEST(Evaluator, F32ArithmeticIsFloatArithmetic) {
  BuiltKernel k = build(R"(
kernel t(out: ptr<f32>, x: f32, n: i32) grid(n) {
  out[0] = x * 3.0 + 0.1;
  out[1] = max(x, -INF) / 0.0;
}
)");
  ASSERT_TRUE(bool(k));
  std::vector<float> out(2, 0.0f);
  float x = 1.0f / 3.0f;
  ASSERT_FALSE(!k.run({KernelArg::buffer(out), KernelArg::f32(x), KernelArg::integer(1)}));
  EXPECT_EQ(out[0], x * 3.0f + 0.1f); // in float, not double
  EXPECT_TRUE(std::isinf(out[1]));
}

TEST(Evaluator, GridProgramsAndLoops) {
  BuiltKernel k = build(R"(
kernel t(out: ptr<i32>, nx: i32, ny: i32) grid(nx, ny, 2) {
  let x = program_id(0);
  let y = program_id(1);
  let z = program_id(2);
  let sum = 0;
  for i in 0..x + 1 {
    if i % 2 == 0 { sum = sum + i; } else { sum = sum - 1; }
  }
  out[(z * num_programs(1) + y) * num_programs(0) + x] = sum * 100 + z;
}
)");
  ASSERT_TRUE(bool(k));
  std::vector<int32_t> out(3 * 2 * 2, -1);
  kvarn::Expected<eval::RunStats> stats = k.run(
      {KernelArg::buffer(out), KernelArg::integer(3), KernelArg::integer(2)});
  ASSERT_TRUE(bool(stats)) << kvarn::toString(stats.takeError());
  EXPECT_EQ(stats->programs, 12);
  for (int z = 0; z < 2; ++z)
    for (int y = 0; y < 2; ++y)
      for (int x = 0; x < 3; ++x) {
        int sum = 0;
        for (int i = 0; i <= x; ++i)
          sum += i % 2 == 0 ? i : -1;
        EXPECT_EQ(out[(z * 2 + y) * 3 + x], sum * 100 + z);
      }
  // An empty grid runs nothing.
  stats = k.run({KernelArg::buffer(out), KernelArg::integer(0), KernelArg::integer(2)});
  ASSERT_TRUE(bool(stats));
  EXPECT_EQ(stats->programs, 0);
}

TEST(Evaluator, AndDoesNotLoadWhenItsLeftSideIsFalse) {
  BuiltKernel k = build(R"(
kernel t(p: ptr<i32>, n: i32) grid(n) {
  let i = program_id(0);
  if i < 4 && p[i] > 0 { p[i] = 0; }
}
)");
  ASSERT_TRUE(bool(k));
  std::vector<int32_t> p = {1, -1, 2, 3};
  kvarn::Expected<eval::RunStats> stats =
      k.run({KernelArg::buffer(p), KernelArg::integer(6)}); // 6 > 4 elements
  ASSERT_TRUE(bool(stats)) << kvarn::toString(stats.takeError());
  EXPECT_EQ(p, (std::vector<int32_t>{0, -1, 0, 0}));
}

TEST(Evaluator, ErrorsNameTheOpAndTheBuffer) {
  BuiltKernel k = build(R"(
kernel t(data: ptr<f16>, n: i32, d: i32) grid(n) {
  let tile = load_tile(data, i64(program_id(0)) * 8, [2, 8], [8, 1]);
  data[n / d] = 1.0;
}
)");
  ASSERT_TRUE(bool(k));
  std::vector<uint16_t> data(16);
  std::string m = runError(k, {KernelArg::buffer(data), KernelArg::integer(2),
                               KernelArg::integer(1)});
  EXPECT_NE(m.find("t.kvt\":3:14"), std::string::npos) << m;
  EXPECT_NE(m.find("kvt.load_tile"), std::string::npos) << m;
  EXPECT_NE(m.find("access to elements [8, 24) of 'data' is outside its 16 elements"),
            std::string::npos) << m;
  m = runError(k, {KernelArg::buffer(data), KernelArg::integer(1), KernelArg::integer(0)});
  EXPECT_NE(m.find("division by zero"), std::string::npos) << m;
  m = runError(k, {KernelArg::buffer(data), KernelArg::integer(1)});
  EXPECT_NE(m.find("takes 3 arguments, got 2"), std::string::npos) << m;
  m = runError(k, {KernelArg::integer(1), KernelArg::integer(1), KernelArg::integer(1)});
  EXPECT_NE(m.find("('data') of 't' must be a buffer"), std::string::npos) << m;
  m = runError(k, {KernelArg::buffer(data), KernelArg::integer(int64_t(1) << 40),
                   KernelArg::integer(1)});
  EXPECT_NE(m.find("must be an integer that fits in 32 bits"), std::string::npos) << m;
  m = runError(k, {KernelArg::buffer(data), KernelArg::integer(-1), KernelArg::integer(1)});
  EXPECT_NE(m.find("grid dimension 0 of 't' ('n') is -1"), std::string::npos) << m;
}

// A prefetch changes nothing, but its ranges are checked as a load's: a
// row prefetch spans from its first row's start to its last row's end.
TEST(Evaluator, PrefetchRowsAreCheckedAsLoads) {
  BuiltKernel k = build(R"(
kernel t(data: ptr<f16>, n: i32, stride: i32) grid(n) {
  prefetch_rows(data, i64(program_id(0)), 8, 4, i64(stride));
}
)");
  ASSERT_TRUE(bool(k));
  // 4 rows of 4 elements (8 bytes), 8 apart: elements [0, 28).
  std::vector<uint16_t> data(28, 7);
  kvarn::Expected<eval::RunStats> ok = k.run(
      {KernelArg::buffer(data), KernelArg::integer(1), KernelArg::integer(8)});
  ASSERT_TRUE(bool(ok)) << kvarn::toString(ok.takeError());
  EXPECT_EQ(data, std::vector<uint16_t>(28, 7));
  std::string m = runError(k, {KernelArg::buffer(data), KernelArg::integer(2),
                               KernelArg::integer(8)});
  EXPECT_NE(m.find("kvt.prefetch"), std::string::npos) << m;
  EXPECT_NE(m.find("access to elements [1, 29) of 'data' is outside its 28 "
                   "elements"),
            std::string::npos)
      << m;
  m = runError(k, {KernelArg::buffer(data), KernelArg::integer(1),
                   KernelArg::integer(9)});
  EXPECT_NE(m.find("access to elements [0, 31) of 'data'"), std::string::npos)
      << m;
}

TEST(Evaluator, TileConversionsRoundAndBytesStayBytes) {
  BuiltKernel k = build(R"(
kernel t(src: ptr<f32>, half: ptr<f16>, bytes: ptr<i8>, back: ptr<f32>, n: i32) grid(n) {
  store_tile(half, 0, [1], f16(load_tile(src, 0, [4], [1])));
  let b = load_tile(bytes, 0, [2, 2], [2, 1]);
  store_tile(back, 0, [2, 1], f32(transpose(b)));
  store_tile(bytes, 0, [1], splat(i8(200), [4]));
}
)");
  ASSERT_TRUE(bool(k));
  std::vector<float> in = {1.0f + 1.0f / 4096, 65519.0f, 70000.0f, -0.0f};
  std::vector<uint16_t> half(4);
  std::vector<uint8_t> bytes = {1, 2, 250, 4};
  std::vector<float> back(4);
  ASSERT_FALSE(!k.run({KernelArg::buffer(in), KernelArg::buffer(half),
                       KernelArg::buffer(bytes), KernelArg::buffer(back),
                       KernelArg::integer(1)}));
  EXPECT_EQ(half[0], 0x3c00); // rounds to even
  EXPECT_EQ(half[1], 0x7bff);
  EXPECT_EQ(half[2], 0x7c00); // overflows to inf
  EXPECT_EQ(half[3], 0x8000);
  EXPECT_EQ(back, (std::vector<float>{1, 250, 2, 4})); // bytes, transposed
  EXPECT_EQ(bytes, (std::vector<uint8_t>{200, 200, 200, 200}));
}
