//===- EvalMlaTest.cpp - the MLA kernels run by the CPU evaluator ---------===//
//
// lib/kernels/mla_*.kvt (docs/kvarn.md, "MLA records") against the CPU
// reference (Reference/Mla.h): on fresh random latents (seed printed,
// KVARN_TEST_SEED replays) mla_append's pool rows, mla_flush's records byte
// for byte, mla_decode and mla_decode_split + mla_combine; and on the golden
// cases the public reference's own MLA code made, its flush's records and
// exact attention over its cache.
//
//===----------------------------------------------------------------------===//

#include "EvalTestUtil.h"
#include "MlaCase.h"
#include "TestUtil.h"

#include "kvarn/DSL/Specialization.h"
#include "kvarn/Golden/Compare.h"
#include "kvarn/Reference/Mla.h"
#include "kvarn/Support/Half.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

using namespace kvarn;
using namespace kvarn::test;
using eval::KernelArg;

namespace {

constexpr uint16_t kPoison = 0x7e00; // an fp16 NaN

dsl::Specialization mlaSpec(int rank, int ropeDim, int heads) {
  dsl::Specialization spec;
  spec.preset = allMlaPresets().front().name;
  spec.headDim = rank;
  spec.ropeDim = ropeDim;
  spec.gqa = heads;
  return spec;
}

/// x rotated exactly (fp64), rounded to f32 and then to fp16, as the
/// evaluator runs mla_append's f16(rotate(f32(x))).
void exactRotateHalf(const Rotation &rot, const uint16_t *x, uint16_t *y) {
  int n = rot.order();
  std::vector<double> in(n), out(n);
  for (int i = 0; i < n; ++i)
    in[i] = halfToFloat(x[i]);
  rot.rotate(in.data(), out.data());
  for (int i = 0; i < n; ++i)
    y[i] = floatToHalf(float(out[i]));
}

/// A paged MLA cache being filled: blocks of `lens`' requests in shuffled
/// ids, every block first in its own pool slot.
struct MlaPagedCache {
  MlaRecordLayout l;
  int batch = 0, heads = 0, maxBlocks = 0, numBlocks = 0, poolSlots = 0;
  std::vector<int32_t> lens, table, blockToSlot;
  std::vector<uint16_t> poolLatent, poolPe;
  std::vector<uint8_t> cache;

  MlaPagedCache(const MlaRecordLayout &layout, std::vector<int32_t> lengths,
                int numHeads, std::mt19937_64 &rng)
      : l(layout), heads(numHeads), lens(std::move(lengths)) {
    batch = int(lens.size());
    const int g = l.group;
    for (int32_t len : lens)
      maxBlocks = std::max(maxBlocks, (len + g - 1) / g);
    for (int32_t len : lens)
      poolSlots += (std::max(len, 0) + g - 1) / g;
    numBlocks = poolSlots + 2; // two blocks no request owns
    std::vector<int32_t> ids(numBlocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    table.assign(size_t(batch) * maxBlocks, 0);
    blockToSlot.assign(numBlocks, -1);
    int next = 0;
    for (int b = 0; b < batch; ++b)
      for (int i = 0; i < (std::max(lens[b], 0) + g - 1) / g; ++i) {
        table[size_t(b) * maxBlocks + i] = ids[next];
        blockToSlot[ids[next]] = poolSlots - 1 - next; // slots reversed
        ++next;
      }
    poolLatent.assign(size_t(poolSlots) * g * l.kvLoraRank, kPoison);
    poolPe.assign(size_t(poolSlots) * g * l.ropeDim, kPoison);
    cache.assign(size_t(numBlocks) * l.recordBytes, 0xA5);
  }

  MlaPagedCacheView view() const {
    MlaPagedCacheView v{
        &l,        numBlocks,         cache.data(), blockToSlot.data(),
        poolSlots, poolLatent.data(), poolPe.data()};
    return v;
  }

  /// The reference's attention for fp16 queries [batch, heads, R + E]
  /// over the first `seqLens[b]` tokens of each request (default: lens).
  std::vector<float>
  reference(const std::vector<uint16_t> &q, float scale,
            const std::vector<int32_t> *seqLens = nullptr) const {
    std::vector<float> qf(q.size());
    for (size_t i = 0; i < q.size(); ++i)
      qf[i] = halfToFloat(q[i]);
    MlaDecodeBatchView bv;
    bv.batch = batch;
    bv.numHeads = heads;
    bv.q = qf.data();
    bv.blockTable = table.data();
    bv.maxBlocks = maxBlocks;
    bv.seqLens = seqLens ? seqLens->data() : lens.data();
    bv.softmaxScale = scale;
    std::vector<float> out(size_t(batch) * heads * l.kvLoraRank);
    kvarn::Error err = mlaDecodeAttention(
        view(), bv, *Rotation::get(l.kvLoraRank), out.data());
    EXPECT_FALSE(bool(err)) << kvarn::toString(std::move(err));
    return out;
  }

  std::vector<KernelArg> decodeArgs(std::vector<uint16_t> &q) {
    return {KernelArg::buffer(q),     KernelArg::buffer(table),
            KernelArg::buffer(lens),  KernelArg::buffer(blockToSlot),
            KernelArg::buffer(cache), KernelArg::buffer(poolLatent),
            KernelArg::buffer(poolPe)};
  }
};

/// Each fp16 output within one ulp of the reference plus the f32 partials'
/// rounding, which is relative to the row (un-rotation mixes its channels);
/// rows of empty requests untouched.
void expectOutputs(const MlaPagedCache &c, const std::vector<uint16_t> &out,
                   const std::vector<float> &want, bool exactRounding) {
  const int r = c.l.kvLoraRank;
  for (int b = 0; b < c.batch; ++b)
    for (int h = 0; h < c.heads; ++h) {
      size_t row = (size_t(b) * c.heads + h) * r;
      double rowMax = 0;
      for (int i = 0; i < r; ++i)
        rowMax = std::max(rowMax, std::fabs(double(want[row + i])));
      for (int i = 0; i < r; ++i) {
        uint16_t got = out[row + i];
        if (c.lens[b] <= 0) {
          ASSERT_EQ(got, kPoison) << "request " << b << " has no tokens";
          continue;
        }
        if (exactRounding) {
          ASSERT_EQ(got, floatToHalf(want[row + i]))
              << "request " << b << " head " << h << " channel " << i;
          continue;
        }
        double x = halfToFloat(got), y = want[row + i];
        ASSERT_LE(std::fabs(x - y),
                  std::ldexp(std::fabs(y), -10) + 1e-6 * rowMax)
            << "request " << b << " head " << h << " channel " << i;
      }
    }
}

struct RandomShape {
  int rank, ropeDim, heads;
  std::vector<int32_t> lens;
  friend void PrintTo(const RandomShape &s, std::ostream *os) {
    *os << "R " << s.rank << ", rope " << s.ropeDim << ", " << s.heads
        << " heads";
  }
};

class MlaKernels : public ::testing::TestWithParam<RandomShape> {};

} // namespace

// append -> flush -> decode and split decode on one random cache: pool rows
// as the rotation gives them, records byte-identical to encodeMlaRecord,
// decode's fp16 output the reference's rounded (some blocks read from
// records, the partial ones from the pool), split decode within a rounding
// step of it.
TEST_P(MlaKernels, AppendFlushDecodeMatchTheReference) {
  const RandomShape &shape = GetParam();
  std::mt19937_64 rng(freshSeed() ^ uint64_t(shape.rank * 131 + shape.heads));
  dsl::Specialization spec = mlaSpec(shape.rank, shape.ropeDim, shape.heads);
  MlaRecordLayout l =
      *MlaRecordLayout::get(allMlaPresets().front(), shape.rank, shape.ropeDim);
  MlaPagedCache c(l, shape.lens, shape.heads, rng);
  const int g = l.group, r = l.kvLoraRank, e = l.ropeDim;

  // New tokens of every request, in order, with a padding token between.
  std::vector<int32_t> slotMapping;
  for (int b = 0; b < c.batch; ++b) {
    for (int t = 0; t < c.lens[b]; ++t)
      slotMapping.push_back(c.table[size_t(b) * c.maxBlocks + t / g] * g +
                            t % g);
    slotMapping.push_back(-1);
  }
  const int tokens = int(slotMapping.size());
  std::vector<uint16_t> latent = heavyTailedTokens(rng, tokens, r, false);
  std::vector<uint16_t> pe = heavyTailedTokens(rng, tokens, e, false);
  BuiltKernel append = buildLibrary("mla_append", spec);
  ASSERT_TRUE(bool(append));
  kvarn::Expected<eval::RunStats> stats = append.run(
      {KernelArg::buffer(latent), KernelArg::buffer(pe),
       KernelArg::buffer(slotMapping), KernelArg::buffer(c.blockToSlot),
       KernelArg::buffer(c.poolLatent), KernelArg::buffer(c.poolPe),
       KernelArg::integer(tokens)});
  ASSERT_TRUE(bool(stats)) << kvarn::toString(stats.takeError());
  Rotation rot = *Rotation::get(r);
  std::vector<uint16_t> wantLatent(c.poolLatent.size(), kPoison),
      wantPe(c.poolPe.size(), kPoison);
  for (int t = 0; t < tokens; ++t) {
    if (slotMapping[t] < 0)
      continue;
    size_t row =
        size_t(c.blockToSlot[slotMapping[t] / g]) * g + slotMapping[t] % g;
    exactRotateHalf(rot, &latent[size_t(t) * r], &wantLatent[row * r]);
    std::copy_n(&pe[size_t(t) * e], e, &wantPe[row * e]);
  }
  ASSERT_EQ(c.poolLatent, wantLatent);
  ASSERT_EQ(c.poolPe, wantPe);

  // Flush every full block; the others stay in the pool.
  std::vector<int32_t> tileSlots, tileBlocks;
  for (int b = 0; b < c.batch; ++b)
    for (int i = 0; i < c.lens[b] / g; ++i) {
      int32_t block = c.table[size_t(b) * c.maxBlocks + i];
      tileBlocks.push_back(block);
      tileSlots.push_back(c.blockToSlot[block]);
    }
  ASSERT_FALSE(tileSlots.empty());
  BuiltKernel flush = buildLibrary("mla_flush", spec);
  ASSERT_TRUE(bool(flush));
  stats = flush.run({KernelArg::buffer(c.poolLatent),
                     KernelArg::buffer(c.poolPe), KernelArg::buffer(tileSlots),
                     KernelArg::buffer(tileBlocks), KernelArg::buffer(c.cache),
                     KernelArg::integer(int64_t(tileSlots.size()))});
  ASSERT_TRUE(bool(stats)) << kvarn::toString(stats.takeError());
  std::vector<uint8_t> want(l.recordBytes);
  for (size_t i = 0; i < tileSlots.size(); ++i) {
    encodeMlaRecord(l, &c.poolLatent[size_t(tileSlots[i]) * g * r],
                    &c.poolPe[size_t(tileSlots[i]) * g * e], want.data());
    const uint8_t *got = &c.cache[size_t(tileBlocks[i]) * l.recordBytes];
    ASSERT_EQ(0, std::memcmp(got, want.data(), l.recordBytes))
        << "block " << tileBlocks[i] << ": first differing byte at "
        << (std::mismatch(got, got + l.recordBytes, want.data()).first - got);
    c.blockToSlot[tileBlocks[i]] = -1; // from now on read from its record
  }
  for (int32_t block = 0; block < c.numBlocks; ++block)
    if (!llvm::is_contained(tileBlocks, block))
      for (int64_t i = 0; i < l.recordBytes; ++i)
        ASSERT_EQ(c.cache[size_t(block) * l.recordBytes + i], 0xA5)
            << "block " << block << " was not flushed";

  // Decode.
  std::normal_distribution<float> normal;
  std::vector<uint16_t> q(size_t(c.batch) * c.heads * (r + e));
  for (uint16_t &x : q)
    x = floatToHalf(normal(rng));
  const float scale = float(1.0 / std::sqrt(192.0));
  std::vector<float> reference = c.reference(q, scale);
  BuiltKernel decode = buildLibrary("mla_decode", spec);
  ASSERT_TRUE(bool(decode));
  std::vector<uint16_t> out(reference.size(), kPoison);
  std::vector<KernelArg> args = c.decodeArgs(q);
  args.insert(args.end(),
              {KernelArg::buffer(out), KernelArg::f32(scale),
               KernelArg::integer(c.batch), KernelArg::integer(c.maxBlocks)});
  stats = decode.run(args);
  ASSERT_TRUE(bool(stats)) << kvarn::toString(stats.takeError());
  expectOutputs(c, out, reference, /*exactRounding=*/true);

  BuiltKernel split = buildLibrary("mla_decode_split", spec);
  BuiltKernel combine = buildLibrary("mla_combine", spec);
  ASSERT_TRUE(split && combine);
  const int maxSplits = dsl::kMaxDecodeSplits;
  for (int splits : {1, 2, 5, maxSplits + 3}) {
    std::vector<float> partOut(size_t(c.batch) * maxSplits * c.heads * r, NAN);
    std::vector<float> partLse(size_t(c.batch) * maxSplits * c.heads, NAN);
    args = c.decodeArgs(q);
    args.insert(args.end(),
                {KernelArg::buffer(partOut), KernelArg::buffer(partLse),
                 KernelArg::f32(scale), KernelArg::integer(c.batch),
                 KernelArg::integer(c.maxBlocks), KernelArg::integer(splits)});
    stats = split.run(args);
    ASSERT_TRUE(bool(stats)) << kvarn::toString(stats.takeError());
    std::vector<uint16_t> merged(reference.size(), kPoison);
    stats =
        combine.run({KernelArg::buffer(partOut), KernelArg::buffer(partLse),
                     KernelArg::buffer(c.lens), KernelArg::buffer(merged),
                     KernelArg::integer(c.batch), KernelArg::integer(splits)});
    ASSERT_TRUE(bool(stats)) << kvarn::toString(stats.takeError());
    SCOPED_TRACE(testing::Message() << splits << " splits");
    expectOutputs(c, merged, reference, /*exactRounding=*/false);
  }

  // Verify: each request's last (up to) 3 tokens as drafts, token j
  // attending to the first context + j + 1 tokens.
  const int maxQuery = 3;
  std::vector<int32_t> contextLens(c.batch), queryLens(c.batch);
  for (int b = 0; b < c.batch; ++b) {
    queryLens[b] = std::min(c.lens[b], maxQuery);
    contextLens[b] = c.lens[b] - queryLens[b];
  }
  const size_t row = size_t(c.heads) * (r + e), outRow = size_t(c.heads) * r;
  std::vector<uint16_t> qv(size_t(c.batch) * maxQuery * row);
  for (uint16_t &x : qv)
    x = floatToHalf(normal(rng));
  std::vector<uint16_t> verified(size_t(c.batch) * maxQuery * outRow, kPoison);
  BuiltKernel verify = buildLibrary("mla_verify", spec);
  ASSERT_TRUE(bool(verify));
  stats =
      verify.run({KernelArg::buffer(qv), KernelArg::buffer(c.table),
                  KernelArg::buffer(contextLens), KernelArg::buffer(queryLens),
                  KernelArg::buffer(c.blockToSlot), KernelArg::buffer(c.cache),
                  KernelArg::buffer(c.poolLatent), KernelArg::buffer(c.poolPe),
                  KernelArg::buffer(verified), KernelArg::f32(scale),
                  KernelArg::integer(c.batch), KernelArg::integer(maxQuery),
                  KernelArg::integer(c.maxBlocks)});
  ASSERT_TRUE(bool(stats)) << kvarn::toString(stats.takeError());
  for (int j = 0; j < maxQuery; ++j) {
    // Token j of every request as a decode batch of its own.
    std::vector<uint16_t> qj(size_t(c.batch) * row);
    std::vector<int32_t> lensJ(c.batch);
    for (int b = 0; b < c.batch; ++b) {
      std::copy_n(&qv[(size_t(b) * maxQuery + j) * row], row, &qj[b * row]);
      lensJ[b] = j < queryLens[b] ? contextLens[b] + j + 1 : 0;
    }
    std::vector<float> want = c.reference(qj, scale, &lensJ);
    for (int b = 0; b < c.batch; ++b)
      for (size_t i = 0; i < outRow; ++i) {
        uint16_t got = verified[(size_t(b) * maxQuery + j) * outRow + i];
        ASSERT_EQ(got, lensJ[b] ? floatToHalf(want[b * outRow + i]) : kPoison)
            << "request " << b << " token " << j << " element " << i;
      }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Eval, MlaKernels,
    ::testing::Values(
        // DeepSeek-V2-Lite's shape: two programs of 8 heads per request.
        RandomShape{512, 64, 16, {2 * 128 + 5, 0, 128 + 1}},
        // A smaller latent, 6 heads in one program, a one-token request.
        RandomShape{256, 32, 6, {1, 3 * 128}}),
    [](const auto &info) {
      return "r" + std::to_string(info.param.rank) + "_e" +
             std::to_string(info.param.ropeDim) + "_h" +
             std::to_string(info.param.heads);
    });

// The public reference's flush, run on the same pool rows: our kernel's
// records are encodeMlaRecord's byte for byte, and meet the dense path's
// bars against the reference's (codes >= 99% equal, one step at most).
TEST(MlaGoldenKernels, FlushRecordsAreTheReferenceEncoders) {
  MlaCase c = MlaCase::load("flush_mla_k4_g128_r512_e64_a");
  const MlaRecordLayout &l = c.layout;
  ASSERT_GT(l.recordBytes, 0);
  const int tiles = int(c.integer("tiles"));
  const int g = l.group, r = l.kvLoraRank, e = l.ropeDim;
  auto lat = c.tensor<uint16_t>("lat_rot", "float16");
  auto rope = c.tensor<uint16_t>("rope", "float16");
  auto peer = c.tensor<uint8_t>("records_peer", "uint8");
  std::vector<int32_t> slots(tiles), blocks(tiles);
  for (int t = 0; t < tiles; ++t) {
    slots[t] = t;
    blocks[t] = tiles - 1 - t;
  }
  std::vector<uint8_t> cache(size_t(tiles) * l.recordBytes, 0xA5);
  BuiltKernel flush = buildLibrary("mla_flush", mlaSpec(r, e, 16));
  ASSERT_TRUE(bool(flush));
  kvarn::Expected<eval::RunStats> stats =
      flush.run({KernelArg::buffer(lat), KernelArg::buffer(rope),
                 KernelArg::buffer(slots), KernelArg::buffer(blocks),
                 KernelArg::buffer(cache), KernelArg::integer(tiles)});
  ASSERT_TRUE(bool(stats)) << kvarn::toString(stats.takeError());
  std::vector<uint8_t> want(l.recordBytes);
  int64_t codes = 0, equal = 0;
  int maxStep = 0;
  for (int t = 0; t < tiles; ++t) {
    const uint8_t *got = &cache[size_t(blocks[t]) * l.recordBytes];
    encodeMlaRecord(l, &lat[size_t(t) * g * r], &rope[size_t(t) * g * e],
                    want.data());
    ASSERT_EQ(0, std::memcmp(got, want.data(), l.recordBytes)) << "tile " << t;
    QuantizedTile ours = decodeMlaRecord(l, got);
    QuantizedTile theirs = decodeMlaRecord(l, &peer[size_t(t) * l.recordBytes]);
    for (size_t i = 0; i < ours.codes.size(); ++i) {
      ++codes;
      equal += ours.codes[i] == theirs.codes[i];
      maxStep =
          std::max(maxStep, std::abs(int(ours.codes[i]) - theirs.codes[i]));
    }
  }
  EXPECT_GE(double(equal) / codes, 0.99);
  EXPECT_LE(maxStep, 1);
}

class MlaGoldenDecode : public ::testing::TestWithParam<const char *> {};

// The case's cache (records and pool blocks) as the public reference wrote
// it. With f32 queries and output (the kernel's only change: q's and out's
// types) the kernel is the CPU reference to 1e-9 and exact fp64 attention to
// the 4e-4; the library kernel (fp16 q and out) is the reference on
// fp16 queries, rounded.
TEST_P(MlaGoldenDecode, KernelsMatchExactAttention) {
  MlaDecodeInputs d = MlaDecodeInputs::load(GetParam());
  ASSERT_GT(d.layout().recordBytes, 0);
  const int r = d.layout().kvLoraRank, e = d.layout().ropeDim;
  dsl::Specialization spec = mlaSpec(r, e, d.heads);
  auto run = [&](BuiltKernel &k, auto &queries, auto &out) {
    return k.run({KernelArg::buffer(queries), KernelArg::buffer(d.table),
                  KernelArg::buffer(d.seqLens),
                  KernelArg::buffer(d.blockToSlot), KernelArg::buffer(d.cache),
                  KernelArg::buffer(d.poolLatent),
                  KernelArg::buffer(d.poolRope), KernelArg::buffer(out),
                  KernelArg::f32(d.softmaxScale), KernelArg::integer(d.batch),
                  KernelArg::integer(d.maxBlocks)});
  };

  // f32 in and out.
  std::string source(dsl::findLibraryFile("mla_decode")->text);
  for (auto [from, to] :
       {std::pair<std::string, std::string>{"q: ptr<ACT>", "q: ptr<f32>"},
        {"out: ptr<ACT>", "out: ptr<f32>"},
        {"ACT(unrotate(o))", "unrotate(o)"}}) {
    size_t at = source.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    source.replace(at, from.size(), to);
  }
  BuiltKernel f32Decode =
      buildFromSource(source, "mla_decode_f32.kvt", "mla_decode", spec);
  ASSERT_TRUE(bool(f32Decode)) << f32Decode.diagnostics;
  std::vector<float> out(d.exact.size(), NAN);
  kvarn::Expected<eval::RunStats> stats = run(f32Decode, d.q, out);
  ASSERT_TRUE(bool(stats)) << kvarn::toString(stats.takeError());
  std::vector<float> want = d.reference(d.q);
  double vsReference = relativeL2(out.data(), want.data(), out.size());
  double vsExact = relativeL2(out.data(), d.exact.data(), out.size());
  std::printf("[ figures  ] %s: kernel vs CPU reference %.2e, vs exact %.2e\n",
              GetParam(), vsReference, vsExact);
  EXPECT_LE(vsReference, 1e-9);
  EXPECT_LE(vsExact, 4e-4);

  // The library kernel: fp16 queries and output.
  std::vector<uint16_t> qHalf(d.q.size());
  std::vector<float> qRounded(d.q.size());
  for (size_t i = 0; i < d.q.size(); ++i) {
    qHalf[i] = floatToHalf(d.q[i]);
    qRounded[i] = halfToFloat(qHalf[i]);
  }
  BuiltKernel decode = buildLibrary("mla_decode", spec);
  ASSERT_TRUE(bool(decode));
  std::vector<uint16_t> outHalf(d.exact.size(), kPoison);
  stats = run(decode, qHalf, outHalf);
  ASSERT_TRUE(bool(stats)) << kvarn::toString(stats.takeError());
  want = d.reference(qRounded);
  size_t differing = 0;
  for (size_t i = 0; i < outHalf.size(); ++i)
    differing += outHalf[i] != floatToHalf(want[i]);
  EXPECT_EQ(differing, 0u) << "of " << outHalf.size() << " fp16 outputs";
}

INSTANTIATE_TEST_SUITE_P(
    Eval, MlaGoldenDecode,
    ::testing::Values("decode_mla_k4_g128_r512_e64_h16_a",
                      "decode_mla_k4_g128_r512_e64_h128_a"));
