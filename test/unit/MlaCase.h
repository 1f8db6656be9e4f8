//===- MlaCase.h - an MLA golden case (test/data/golden/mla) ----*- C++ -*-===//
//
// case.json and its raw little-endian tensors, as test/gpu/peer/mla_golden.py
// writes them; shared by the reference's and the kernels' golden tests.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_TEST_MLACASE_H
#define KVARN_TEST_MLACASE_H

#include "kvarn/Layout/MlaRecordLayout.h"
#include "kvarn/Reference/Mla.h"

#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace kvarn::test {

inline std::string mlaCaseDir(const std::string &name) {
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
      ADD_FAILURE() << kvarn::toString(preset.takeError());
      return c;
    }
    auto l = MlaRecordLayout::get(**preset, int(c.integer("kv_lora_rank")),
                                  int(c.integer("rope_dim")));
    if (!l) {
      ADD_FAILURE() << kvarn::toString(l.takeError());
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

/// A decode case's tensors (the public reference's cache: records and pool
/// blocks), and the CPU reference's views of them.
struct MlaDecodeInputs {
  MlaCase c;
  std::vector<float> q, exact, peer;
  std::vector<int32_t> table, seqLens, blockToSlot;
  std::vector<uint8_t> cache;
  std::vector<uint16_t> poolLatent, poolRope;
  int batch = 0, heads = 0, maxBlocks = 0;
  float softmaxScale = 0;

  static MlaDecodeInputs load(const std::string &name) {
    MlaDecodeInputs d;
    d.c = MlaCase::load(name);
    d.q = d.c.tensor<float>("q", "float32");
    d.table = d.c.tensor<int32_t>("block_table", "int32");
    d.seqLens = d.c.tensor<int32_t>("seq_lens", "int32");
    d.blockToSlot = d.c.tensor<int32_t>("block_to_slot", "int32");
    d.cache = d.c.tensor<uint8_t>("kv_cache", "uint8");
    d.poolLatent = d.c.tensor<uint16_t>("pool_lat", "float16");
    d.poolRope = d.c.tensor<uint16_t>("pool_rope", "float16");
    d.exact = d.c.tensor<float>("out_exact", "float32");
    d.peer = d.c.tensor<float>("out_peer", "float32");
    d.batch = int(d.c.integer("batch"));
    d.heads = int(d.c.integer("num_heads"));
    d.maxBlocks = int(d.c.integer("max_blocks"));
    d.softmaxScale = float(d.c.number("softmax_scale"));
    return d;
  }
  const MlaRecordLayout &layout() const { return c.layout; }

  MlaPagedCacheView view() const {
    MlaPagedCacheView v;
    v.layout = &c.layout;
    v.numBlocks = c.integer("num_blocks");
    v.records = cache.data();
    v.blockToSlot = blockToSlot.data();
    v.poolSlots = c.integer("pool_slots");
    v.poolLatent = poolLatent.data();
    v.poolRope = poolRope.data();
    return v;
  }

  /// The CPU reference's output for queries `queries` (this case's or the
  /// same rounded), fp32 [batch, heads, R].
  std::vector<float> reference(const std::vector<float> &queries) const {
    MlaDecodeBatchView bv;
    bv.batch = batch;
    bv.numHeads = heads;
    bv.q = queries.data();
    bv.blockTable = table.data();
    bv.maxBlocks = maxBlocks;
    bv.seqLens = seqLens.data();
    bv.softmaxScale = softmaxScale;
    std::vector<float> out(size_t(batch) * heads * c.layout.kvLoraRank);
    kvarn::Expected<Rotation> rotation = Rotation::get(c.layout.kvLoraRank);
    if (!rotation) {
      ADD_FAILURE() << kvarn::toString(rotation.takeError());
      return out;
    }
    kvarn::Error err = mlaDecodeAttention(view(), bv, *rotation, out.data());
    EXPECT_FALSE(bool(err)) << kvarn::toString(std::move(err));
    return out;
  }
};

} // namespace kvarn::test

#endif // KVARN_TEST_MLACASE_H
