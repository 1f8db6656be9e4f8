//===- SpecializationTest.cpp - what the compile options make of a spec ---===//
//
// specializationFor sizes a dense preset's pool chunks (the DSL's POOL_ROWS)
// from the compile options; the expected rows are docs/codegen.md's figures
// (16 KB of K rows up to 4 CTAs an SM on sm_90, 8 KB at 5 and 6 or with
// the records' ring, 4 KB beyond; 8 KB at 4 on sm_80).
//
//===----------------------------------------------------------------------===//

#include "kvarn/Codegen/KernelCompiler.h"
#include "kvarn/DSL/Specialization.h"

#include <gtest/gtest.h>

#include <cstring>

using namespace kvarn;

namespace {

int64_t poolRows(const dsl::Specialization &spec) {
  for (const dsl::SpecConstant &c : dsl::specConstants(spec))
    if (!std::strcmp(c.name, "POOL_ROWS"))
      return c.value;
  ADD_FAILURE() << "no POOL_ROWS";
  return -1;
}

dsl::Specialization dense(const char *preset, int headDim) {
  dsl::Specialization spec;
  spec.preset = preset;
  spec.headDim = headDim;
  spec.gqa = 4;
  return spec;
}

CompileOptions on(const char *chip, int minCtasPerSM = 0,
                  bool pipelineCopies = false) {
  CompileOptions options;
  options.target.chip = chip;
  options.minCtasPerSM = minCtasPerSM;
  options.pipelineCopies = pipelineCopies;
  return options;
}

} // namespace

TEST(Specialization, PoolChunksFollowTheCompileOptions) {
  dsl::Specialization g128 = dense("kvarn_k4v2_g128", 128);
  // 128 fp16 channels: 256 bytes a row.
  EXPECT_EQ(poolRows(g128), 64); // the default: sm_90, 4 CTAs an SM
  EXPECT_EQ(poolRows(specializationFor(g128, on("sm_90"))), 64);
  EXPECT_EQ(poolRows(specializationFor(g128, on("sm_90", 5))), 32);
  EXPECT_EQ(poolRows(specializationFor(g128, on("sm_90", 8))), 16);
  EXPECT_EQ(poolRows(specializationFor(g128, on("sm_90", 0, true))), 32);
  EXPECT_EQ(poolRows(specializationFor(g128, on("sm_80"))), 32);
  // G = 64 runs 6 CTAs an SM by default: 8 KB, 32 rows; 4 KB at 8.
  dsl::Specialization g64 = dense("kvarn_k4v2_g64", 128);
  EXPECT_EQ(poolRows(specializationFor(g64, on("sm_90"))), 32);
  EXPECT_EQ(poolRows(specializationFor(g64, on("sm_90", 8))), 16);
  // 64 channels: a whole 128-token block fits 16 KB.
  EXPECT_EQ(poolRows(specializationFor(dense("kvarn_k4v2_g128", 64),
                                       on("sm_90"))),
            128);
}

TEST(Specialization, WhatCheckRefusesPassesThroughUnchanged) {
  dsl::Specialization bad = dense("kvarn_k9v9_g128", 128);
  EXPECT_EQ(specializationFor(bad, on("sm_90", 5)).poolRowsBytes, 0);
  EXPECT_TRUE(bool(specializationFor(bad, on("sm_90")).check()));
  dsl::Specialization badDim = dense("kvarn_k4v2_g128", 100);
  EXPECT_EQ(specializationFor(badDim, on("sm_90", 5)).poolRowsBytes, 0);
}
