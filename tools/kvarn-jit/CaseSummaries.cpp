//===- CaseSummaries.cpp - outputs against a golden case ------------------===//
//
// The one-line figures `ref` and `run` print after writing their output.
//
//===----------------------------------------------------------------------===//

#include "Commands.h"

#include "kvarn/Golden/Compare.h"
#include "kvarn/Reference/Rotation.h"
#include "kvarn/Support/Error.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdlib>

using namespace kvarn;

kvarn::Expected<GoldenCase> jit::loadCaseOption(const ParsedOptions &opts) {
  return GoldenCase::load(opts.get("case"));
}

kvarn::Expected<std::vector<uint16_t>>
jit::referenceAppend(const GoldenCase &c) {
  if (c.kind() != "flush")
    return makeError(KVARN_ERROR_CORRUPT_DATA,
                     "{0}: is a '{1}' case; append runs on a flush case's "
                     "k_raw/v_raw",
                     c.dir(), c.kind());
  kvarn::Expected<Tensor> k = c.tensor("k_raw", "float16", 3);
  if (!k)
    return k.takeError();
  kvarn::Expected<Tensor> v = c.tensor("v_raw", "float16", 3);
  if (!v)
    return v.takeError();
  const int d = c.headDim();
  if (k->shape != v->shape || k->shape[2] != d)
    return makeError(KVARN_ERROR_CORRUPT_DATA,
                     "{0}: k_raw/v_raw must both be [tiles, G, {1}]", c.dir(),
                     d);
  kvarn::Expected<Rotation> rot = Rotation::get(d);
  if (!rot)
    return rot.takeError();
  size_t n = size_t(k->numElements());
  std::vector<uint16_t> out(2 * n);
  for (size_t row = 0; row < n / d; ++row) {
    rot->rotateHalf(k->as<uint16_t>() + row * d, &out[row * d]);
    rot->rotateHalf(v->as<uint16_t>() + row * d, &out[n + row * d]);
  }
  return out;
}

kvarn::Error jit::describeRecordsAgainstCase(const GoldenCase &c,
                                             llvm::ArrayRef<uint8_t> records) {
  kvarn::Expected<Tensor> expected = c.tensor("records_ref", "uint8", 2);
  if (!expected) {
    kvarn::consumeError(expected.takeError());
    return kvarn::Error::success();
  }
  const RecordLayout &l = c.recordLayout();
  if (expected->bytes.size() != records.size())
    return makeError(KVARN_ERROR_CORRUPT_DATA,
                     "records_ref holds {0} bytes, expected {1}",
                     expected->bytes.size(), records.size());
  RecordComparison cmp =
      compareRecords(l, records.data(), expected->bytes.data(),
                     int64_t(records.size()) / l.recordBytes);
  llvm::outs() << llvm::formatv(
      "; vs records_ref: codes equal {0:P3}, max code step {1}, worst tile "
      "dequantized rel L2 K {2:e2} V {3:e2}, bytes equal {4:P3}",
      cmp.codeAgreement(), cmp.maxCodeStep, cmp.maxKRelL2, cmp.maxVRelL2,
      cmp.byteAgreement());
  return kvarn::Error::success();
}

kvarn::Error jit::describeAttentionAgainstCase(const GoldenCase &c,
                                               llvm::ArrayRef<float> out) {
  for (const char *name : {"out_exact", "out_unquantized"}) {
    kvarn::Expected<Tensor> t = c.tensor(name, "float32");
    if (!t) {
      kvarn::consumeError(t.takeError());
      continue;
    }
    if (t->bytes.size() != out.size() * sizeof(float))
      return makeError(KVARN_ERROR_CORRUPT_DATA,
                       "{0} has {1} bytes, expected {2}", name, t->bytes.size(),
                       out.size() * sizeof(float));
    llvm::outs() << llvm::formatv("; rel L2 vs {0} {1:e2}", name,
                                  relativeL2(out.data(), t->as<float>(),
                                             out.size()));
  }
  return kvarn::Error::success();
}

kvarn::Error
jit::describeRotationAgainstCase(const GoldenCase &c,
                                 llvm::ArrayRef<uint16_t> rotated) {
  kvarn::Expected<Tensor> k = c.tensor("k_rot", "float16", 3);
  kvarn::Expected<Tensor> v = c.tensor("v_rot", "float16", 3);
  if (!k || !v) {
    kvarn::consumeError(k.takeError());
    kvarn::consumeError(v.takeError());
    return kvarn::Error::success();
  }
  size_t n = size_t(k->numElements());
  if (rotated.size() != 2 * n)
    return makeError(KVARN_ERROR_CORRUPT_DATA,
                     "k_rot/v_rot hold {0} values, expected {1}", 2 * n,
                     rotated.size());
  int64_t differing = 0;
  int maxUlps = 0;
  for (size_t i = 0; i < 2 * n; ++i) {
    uint16_t want = i < n ? k->as<uint16_t>()[i] : v->as<uint16_t>()[i - n];
    int ulps = std::abs(int(rotated[i]) - int(want));
    differing += ulps != 0;
    maxUlps = std::max(maxUlps, ulps);
  }
  llvm::outs() << llvm::formatv("; vs k_rot/v_rot (the reference's fp16 "
                                "GEMM): {0} of {1} values differ, at most {2} "
                                "ulps",
                                differing, 2 * n, maxUlps);
  return kvarn::Error::success();
}
