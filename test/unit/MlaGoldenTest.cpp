//===- MlaGoldenTest.cpp - the MLA CPU reference against the public one ---===//
//
// docs/kvarn.md, "MLA records": the golden cases under test/data/golden/mla,
// made on the GPU machine by the public reference's own MLA flush and decode
// (test/gpu/peer/mla_golden.py). The same bars as the dense path: flush codes
// >= 99% equal, one step at most, dequantized tiles within 5e-3; decode
// within 4e-4 relative L2 of exact fp64 attention over the cache.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Golden/Compare.h"
#include "kvarn/Layout/MlaRecordLayout.h"
#include "kvarn/Reference/Mla.h"
#include "kvarn/Support/Error.h"

#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>

using namespace kvarn;

namespace {

std::string mlaCaseDir(const std::string &name) {
  const char *dir = std::getenv("KVARN_GOLDEN_DIR");
  return std::string(dir && *dir ? dir : KVARN_GOLDEN_DIR) + "/mla/" + name;
}

/// One MLA golden case: case.json and its tensors (raw little-endian).
struct MlaCase {
  std::string dir;
  llvm::json::Object root;
  MlaRecordLayout layout;

  static MlaCase load(const std::string &name) {
    MlaCase c;
    c.dir = mlaCaseDir(name);
    auto buf = llvm::MemoryBuffer::getFile(c.dir + "/case.json");
    if (!buf) {
      ADD_FAILURE() << "cannot read " << c.dir << "/case.json";
      return c;
    }
    llvm::Expected<llvm::json::Value> v =
        llvm::json::parse((*buf)->getBuffer());
    if (!v || !v->getAsObject()) {
      ADD_FAILURE() << c.dir << "/case.json is not a JSON object";
      if (!v)
        llvm::consumeError(v.takeError());
      return c;
    }
    c.root = std::move(*v->getAsObject());
    auto preset = lookupMlaPreset(c.str("preset"));
    if (!preset) {
      ADD_FAILURE() << llvm::toString(preset.takeError());
      return c;
    }
    auto l = MlaRecordLayout::get(**preset, int(c.integer("kv_lora_rank")),
                                  int(c.integer("rope_dim")));
    if (!l) {
      ADD_FAILURE() << llvm::toString(l.takeError());
      return c;
    }
    c.layout = *l;
    EXPECT_EQ(c.integer("record_bytes"), c.layout.recordBytes);
    EXPECT_EQ(c.integer("group"), c.layout.group);
    EXPECT_EQ(c.integer("bits"), c.layout.bits);
    EXPECT_EQ(c.integer("sinkhorn_iters"), c.layout.sinkhornIters);
    return c;
  }

  std::string str(llvm::StringRef key) const {
    auto s = root.getString(key);
    EXPECT_TRUE(s.has_value()) << key.str();
    return s ? s->str() : "";
  }
  int64_t integer(llvm::StringRef key) const {
    auto i = root.getInteger(key);
    EXPECT_TRUE(i.has_value()) << key.str();
    return i.value_or(0);
  }
  double number(llvm::StringRef key) const {
    auto n = root.getNumber(key);
    EXPECT_TRUE(n.has_value()) << key.str();
    return n.value_or(0);
  }

  /// The tensor's bytes as T, checked against case.json's dtype and shape.
  template <typename T>
  std::vector<T> tensor(llvm::StringRef name, llvm::StringRef dtype) const {
    const llvm::json::Object *tensors = root.getObject("tensors");
    const llvm::json::Object *t = tensors ? tensors->getObject(name) : nullptr;
    if (!t) {
      ADD_FAILURE() << "case " << dir << " has no tensor " << name.str();
      return {};
    }
    EXPECT_EQ(t->getString("dtype").value_or(""), dtype) << name.str();
    int64_t n = 1;
    if (const llvm::json::Array *shape = t->getArray("shape"))
      for (const llvm::json::Value &d : *shape)
        n *= d.getAsInteger().value_or(0);
    auto buf = llvm::MemoryBuffer::getFile(dir + "/" + name.str() + ".bin");
    if (!buf || (*buf)->getBufferSize() != size_t(n) * sizeof(T)) {
      ADD_FAILURE() << "tensor " << name.str() << " of " << dir
                    << ": missing or not " << n << " elements";
      return {};
    }
    std::vector<T> out(n);
    std::memcpy(out.data(), (*buf)->getBufferStart(), n * sizeof(T));
    return out;
  }
};

double relL2(const std::vector<float> &a, const std::vector<float> &b) {
  return relativeL2(a.data(), b.data(), std::min(a.size(), b.size()));
}

} // namespace

TEST(MlaGolden, FlushAgreesWithThePublicReference) {
  MlaCase c = MlaCase::load("flush_mla_k4_g128_r512_e64_a");
  const MlaRecordLayout &l = c.layout;
  ASSERT_GT(l.recordBytes, 0);
  const int64_t tiles = c.integer("tiles");
  const int g = l.group, r = l.kvLoraRank, e = l.ropeDim;
  auto lat = c.tensor<uint16_t>("lat_rot", "float16");
  auto rope = c.tensor<uint16_t>("rope", "float16");
  auto peer = c.tensor<uint8_t>("records_peer", "uint8");
  ASSERT_EQ(int64_t(lat.size()), tiles * g * r);
  ASSERT_EQ(int64_t(peer.size()), tiles * l.recordBytes);
  int64_t codes = 0, equal = 0, bytesEqual = 0;
  int maxStep = 0;
  double worstTile = 0;
  std::vector<uint8_t> ours(l.recordBytes);
  std::vector<double> a(size_t(g) * r), b(size_t(g) * r), ra(size_t(g) * e),
      rb(size_t(g) * e);
  for (int64_t t = 0; t < tiles; ++t) {
    const uint8_t *theirs = peer.data() + t * l.recordBytes;
    encodeMlaRecord(l, lat.data() + t * g * r, rope.data() + t * g * e,
                    ours.data());
    QuantizedTile qa = decodeMlaRecord(l, ours.data());
    QuantizedTile qb = decodeMlaRecord(l, theirs);
    for (size_t i = 0; i < qa.codes.size(); ++i) {
      ++codes;
      equal += qa.codes[i] == qb.codes[i];
      maxStep = std::max(maxStep, std::abs(int(qa.codes[i]) - qb.codes[i]));
    }
    for (int64_t i = 0; i < l.recordBytes; ++i)
      bytesEqual += ours[i] == theirs[i];
    dequantizeMlaRecord(l, ours.data(), a.data(), ra.data());
    dequantizeMlaRecord(l, theirs, b.data(), rb.data());
    worstTile = std::max(worstTile, relativeL2(a.data(), b.data(), a.size()));
    ASSERT_EQ(0, std::memcmp(ours.data() + l.rope, theirs + l.rope,
                             size_t(g) * e * 2))
        << "tile " << t << ": the rope keys are stored as given";
  }
  std::printf("[ figures  ] MLA flush vs the reference: codes %.5f%%, bytes "
              "%.5f%%, step %d, worst tile %.2e\n",
              100.0 * equal / codes,
              100.0 * bytesEqual / (tiles * l.recordBytes), maxStep, worstTile);
  EXPECT_GE(double(equal) / codes, 0.99);
  EXPECT_LE(maxStep, 1);
  EXPECT_LE(worstTile, 5e-3);
}

class MlaDecodeCase : public ::testing::TestWithParam<const char *> {};

TEST_P(MlaDecodeCase, MatchesExactAttentionOverTheCache) {
  MlaCase c = MlaCase::load(GetParam());
  const MlaRecordLayout &l = c.layout;
  ASSERT_GT(l.recordBytes, 0);
  auto q = c.tensor<float>("q", "float32");
  auto table = c.tensor<int32_t>("block_table", "int32");
  auto seqLens = c.tensor<int32_t>("seq_lens", "int32");
  auto blockToSlot = c.tensor<int32_t>("block_to_slot", "int32");
  auto cache = c.tensor<uint8_t>("kv_cache", "uint8");
  auto poolLat = c.tensor<uint16_t>("pool_lat", "float16");
  auto poolRope = c.tensor<uint16_t>("pool_rope", "float16");
  auto exact = c.tensor<float>("out_exact", "float32");
  auto peer = c.tensor<float>("out_peer", "float32");

  MlaPagedCacheView view;
  view.layout = &l;
  view.numBlocks = c.integer("num_blocks");
  view.records = cache.data();
  view.blockToSlot = blockToSlot.data();
  view.poolSlots = c.integer("pool_slots");
  view.poolLatent = poolLat.data();
  view.poolRope = poolRope.data();
  MlaDecodeBatchView batch;
  batch.batch = int(c.integer("batch"));
  batch.numHeads = int(c.integer("num_heads"));
  batch.q = q.data();
  batch.blockTable = table.data();
  batch.maxBlocks = int(c.integer("max_blocks"));
  batch.seqLens = seqLens.data();
  batch.softmaxScale = float(c.number("softmax_scale"));
  Rotation rotation = cantFail(Rotation::get(l.kvLoraRank));
  std::vector<float> out(exact.size());
  ASSERT_EQ(out.size(), size_t(batch.batch) * batch.numHeads * l.kvLoraRank);
  llvm::Error err = mlaDecodeAttention(view, batch, rotation, out.data());
  ASSERT_FALSE(bool(err)) << llvm::toString(std::move(err));
  double vsExact = relL2(out, exact), peerVsExact = relL2(peer, exact);
  std::printf("[ figures  ] %s: ours vs exact %.2e; the reference's kernels "
              "vs exact %.2e\n",
              GetParam(), vsExact, peerVsExact);
  EXPECT_LE(vsExact, 4e-4);
}

INSTANTIATE_TEST_SUITE_P(
    Golden, MlaDecodeCase,
    ::testing::Values("decode_mla_k4_g128_r512_e64_h16_a",
                      "decode_mla_k4_g128_r512_e64_h128_a"));
