//===- EvalGoldenTest.cpp - the library's flush and decode on golden cases ===//
//
// The DSL kernels, run by the CPU evaluator, against the CPU reference on
// every golden case: flush records byte-identical to encodeRecord; decode
// within 1e-9 relative L2 of decodeAttention (with the kernel's f32 softmax
// scale).
//
//===----------------------------------------------------------------------===//

#include "EvalTestUtil.h"

#include "kvarn/Golden/Compare.h"
#include "kvarn/Golden/GoldenCase.h"
#include "kvarn/Golden/ReferenceOnCase.h"
#include "kvarn/Reference/Attention.h"
#include "kvarn/Reference/Quantizer.h"
#include "kvarn/Reference/Rotation.h"
#include "kvarn/Support/Half.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"

#include <gtest/gtest.h>

using namespace kvarn;
using namespace kvarn::test;
using eval::KernelArg;

namespace {

std::vector<std::string> goldenCases(llvm::StringRef prefix) {
  std::vector<std::string> names;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(KVARN_GOLDEN_DIR, ec), end;
       it != end && !ec; it.increment(ec)) {
    llvm::StringRef name = llvm::sys::path::filename(it->path());
    if (name.starts_with(prefix))
      names.push_back(name.str());
  }
  std::sort(names.begin(), names.end());
  return names;
}

GoldenCase loadCase(const std::string &name) {
  kvarn::Expected<GoldenCase> c =
      GoldenCase::load(std::string(KVARN_GOLDEN_DIR) + "/" + name);
  if (!c) {
    ADD_FAILURE() << kvarn::toString(c.takeError());
    std::abort();
  }
  return std::move(*c);
}

template <typename T>
std::vector<T> tensorData(const GoldenCase &c, const char *name,
                          const char *dtype) {
  kvarn::Expected<Tensor> t = c.tensor(name, dtype);
  if (!t) {
    ADD_FAILURE() << kvarn::toString(t.takeError());
    return {};
  }
  const T *p = t->as<T>();
  return std::vector<T>(p, p + t->numElements());
}

class FlushGolden : public ::testing::TestWithParam<std::string> {};
class DecodeGolden : public ::testing::TestWithParam<std::string> {};

} // namespace

// The case's 16 tiles, seen as 8 blocks x 2 KV heads of a pool, flushed into
// records of shuffled block ids over a poisoned cache.
TEST_P(FlushGolden, RecordsAreByteIdenticalToTheReference) {
  GoldenCase c = loadCase(GetParam());
  const RecordLayout &l = c.recordLayout();
  const int d = l.headDim, g = l.group, hk = 2;
  std::vector<uint16_t> kRot = tensorData<uint16_t>(c, "k_rot", "float16");
  std::vector<uint16_t> vRot = tensorData<uint16_t>(c, "v_rot", "float16");
  const int tiles = int(kRot.size() / (size_t(g) * d));
  ASSERT_EQ(tiles % hk, 0);
  const int blocks = tiles / hk;

  // pool [blocks, G, Hk, D]: tile i = (block i / Hk, head i % Hk).
  std::vector<uint16_t> poolK(kRot.size()), poolV(vRot.size());
  for (int i = 0; i < tiles; ++i)
    for (int t = 0; t < g; ++t)
      for (int ch = 0; ch < d; ++ch) {
        size_t from = (size_t(i) * g + t) * d + ch;
        size_t to = ((size_t(i / hk) * g + t) * hk + i % hk) * d + ch;
        poolK[to] = kRot[from];
        poolV[to] = vRot[from];
      }
  // Pool slot s is flushed into block (blocks - 1 - s) * 2 of a cache twice
  // as large, so slot and block ids differ and half the cache is untouched.
  std::vector<int32_t> tileSlots(blocks), tileBlocks(blocks);
  for (int s = 0; s < blocks; ++s) {
    tileSlots[s] = s;
    tileBlocks[s] = (blocks - 1 - s) * 2;
  }
  std::vector<uint8_t> cache(size_t(2 * blocks) * hk * l.recordBytes, 0xA5);

  BuiltKernel flush = buildLibrary("flush", c.presetName(), d);
  ASSERT_TRUE(bool(flush));
  kvarn::Expected<eval::RunStats> stats =
      flush.run({KernelArg::buffer(poolK), KernelArg::buffer(poolV),
                 KernelArg::buffer(tileSlots), KernelArg::buffer(tileBlocks),
                 KernelArg::buffer(cache), KernelArg::integer(blocks),
                 KernelArg::integer(hk)});
  ASSERT_TRUE(bool(stats)) << kvarn::toString(stats.takeError());
  EXPECT_EQ(stats->programs, blocks * hk);

  kvarn::Expected<std::vector<uint8_t>> expected = referenceFlush(c);
  ASSERT_TRUE(bool(expected)) << kvarn::toString(expected.takeError());
  for (int i = 0; i < tiles; ++i) {
    int block = tileBlocks[i / hk], head = i % hk;
    const uint8_t *got = &cache[(size_t(block) * hk + head) * l.recordBytes];
    const uint8_t *want = &(*expected)[size_t(i) * l.recordBytes];
    ASSERT_EQ(0, std::memcmp(got, want, l.recordBytes))
        << "tile " << i << ": first differing byte at "
        << (std::mismatch(got, got + l.recordBytes, want).first - got);
  }
  for (int b = 1; b < 2 * blocks; b += 2) // odd blocks are never written
    for (size_t i = 0; i < size_t(hk) * l.recordBytes; ++i)
      ASSERT_EQ(cache[size_t(b) * hk * l.recordBytes + i], 0xA5);
}

INSTANTIATE_TEST_SUITE_P(Eval, FlushGolden,
                         ::testing::ValuesIn(goldenCases("flush_")),
                         [](const auto &info) { return info.param; });

namespace {
/// A decode case's inputs, and the reference with the kernel's f32 scale.
struct DecodeInputs {
  std::vector<uint16_t> q, poolK, poolV;
  std::vector<int32_t> table, lens, toSlot;
  std::vector<uint8_t> cache;
  int batch = 0, hq = 0, hk = 0, maxBlocks = 0, d = 0;
  float scale = 0;
  std::vector<float> reference; // fp32 [B, Hq, D]

  explicit DecodeInputs(const GoldenCase &c) {
    const RecordLayout &l = c.recordLayout();
    q = tensorData<uint16_t>(c, "q", "float16");
    poolK = tensorData<uint16_t>(c, "pool_k", "float16");
    poolV = tensorData<uint16_t>(c, "pool_v", "float16");
    table = tensorData<int32_t>(c, "block_table", "int32");
    lens = tensorData<int32_t>(c, "seq_lens", "int32");
    toSlot = tensorData<int32_t>(c, "block_to_slot", "int32");
    cache = tensorData<uint8_t>(c, "kv_cache", "uint8");
    d = l.headDim;
    batch = int(lens.size());
    hq = int(q.size() / (size_t(batch) * d));
    hk = int(cache.size() / (toSlot.size() * l.recordBytes));
    maxBlocks = int(table.size() / size_t(batch));
    scale = float(*c.getNumber("softmax_scale"));

    PagedCacheView view;
    view.layout = &l;
    view.numKvHeads = hk;
    view.numBlocks = int64_t(toSlot.size());
    view.records = cache.data();
    view.blockToSlot = toSlot.data();
    view.poolSlots = int64_t(poolK.size() / (size_t(l.group) * hk * d));
    view.poolK = poolK.data();
    view.poolV = poolV.data();
    DecodeBatchView bv;
    bv.batch = batch;
    bv.numQHeads = hq;
    bv.q = q.data();
    bv.blockTable = table.data();
    bv.maxBlocks = maxBlocks;
    bv.seqLens = lens.data();
    bv.softmaxScale = scale; // what the kernel gets: an f32
    reference.assign(size_t(batch) * hq * d, 0.0f);
    kvarn::Error err =
        decodeAttention(view, bv, *Rotation::get(d), reference.data());
    EXPECT_FALSE(bool(err)) << kvarn::toString(std::move(err));
  }

  template <typename Out>
  kvarn::Expected<eval::RunStats> run(BuiltKernel &k, std::vector<Out> &out) {
    return k.run({KernelArg::buffer(q), KernelArg::buffer(table),
                  KernelArg::buffer(lens), KernelArg::buffer(toSlot),
                  KernelArg::buffer(cache), KernelArg::buffer(poolK),
                  KernelArg::buffer(poolV), KernelArg::buffer(out),
                  KernelArg::f32(scale), KernelArg::integer(0),
                  KernelArg::integer(batch), KernelArg::integer(maxBlocks),
                  KernelArg::integer(hk)});
  }
};
} // namespace

// The library's decode writes fp16: it must equal the reference rounded to
// fp16 (the evaluator and the reference agree to ~1e-15 before rounding).
TEST_P(DecodeGolden, LibraryDecodeMatchesTheReference) {
  GoldenCase c = loadCase(GetParam());
  DecodeInputs in(c);
  BuiltKernel decode = buildLibrary("decode", c.presetName(), in.d, in.hq / in.hk);
  ASSERT_TRUE(bool(decode));
  std::vector<uint16_t> out(in.reference.size(), 0x7e00); // NaN poison
  kvarn::Expected<eval::RunStats> stats = in.run(decode, out);
  ASSERT_TRUE(bool(stats)) << kvarn::toString(stats.takeError());

  std::vector<double> got(out.size()), want(out.size()), exact(out.size());
  size_t differing = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    got[i] = halfToFloat(out[i]);
    want[i] = halfToFloat(floatToHalf(in.reference[i]));
    differing += out[i] != floatToHalf(in.reference[i]);
  }
  EXPECT_LE(relativeL2(got.data(), want.data(), got.size()), 1e-9)
      << differing << " of " << out.size() << " fp16 outputs differ";
  // For the record: against the public reference's fp64 attention.
  std::vector<float> outExact = tensorData<float>(c, "out_exact", "float32");
  for (size_t i = 0; i < out.size(); ++i)
    exact[i] = outExact[i];
  EXPECT_LT(relativeL2(got.data(), exact.data(), got.size()), 1e-3);
}

// The same kernel with an f32 output (the only change: out's type and the
// final conversion) keeps the evaluator's precision: 1e-9 of the reference.
TEST_P(DecodeGolden, DecodeWithF32OutputIsWithin1e9) {
  GoldenCase c = loadCase(GetParam());
  DecodeInputs in(c);
  std::string source(dsl::findLibraryFile("decode")->text);
  auto replace = [&](llvm::StringRef from, llvm::StringRef to) {
    size_t at = source.find(from.str());
    ASSERT_NE(at, std::string::npos) << from.str();
    source.replace(at, from.size(), to.str());
  };
  replace("out: ptr<ACT>", "out: ptr<f32>");
  replace("ACT(unrotate(o))", "unrotate(o)");
  dsl::Specialization spec;
  spec.preset = c.presetName();
  spec.headDim = in.d;
  spec.gqa = in.hq / in.hk;
  BuiltKernel decode = buildFromSource(source, "decode_f32.kvt", "decode", spec);
  ASSERT_TRUE(bool(decode)) << decode.diagnostics;
  std::vector<float> out(in.reference.size(), NAN);
  kvarn::Expected<eval::RunStats> stats = in.run(decode, out);
  ASSERT_TRUE(bool(stats)) << kvarn::toString(stats.takeError());
  EXPECT_LE(relativeL2(out.data(), in.reference.data(), out.size()), 1e-9);
}

INSTANTIATE_TEST_SUITE_P(Eval, DecodeGolden,
                         ::testing::ValuesIn(goldenCases("decode_")),
                         [](const auto &info) { return info.param; });
