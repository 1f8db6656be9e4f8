//===- RefCommands.cpp - kvarn-jit ref flush|decode -----------------------===//
//
//   kvarn-jit ref flush  --case DIR --out FILE   CPU reference records
//   kvarn-jit ref decode --case DIR --out FILE   CPU reference attention
//
//===----------------------------------------------------------------------===//

#include "Commands.h"

#include "kvarn/Golden/Compare.h"
#include "kvarn/Golden/GoldenCase.h"
#include "kvarn/Golden/ReferenceOnCase.h"
#include "kvarn/Support/Error.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

using namespace kvarn;
using namespace kvarn::jit;

namespace {

llvm::Expected<GoldenCase> loadCaseOption(const ParsedOptions &opts) {
  std::string dir = opts.get("case");
  return GoldenCase::load(dir);
}

int runRefFlush(const ParsedOptions &opts) {
  llvm::Expected<GoldenCase> c = loadCaseOption(opts);
  if (!c)
    return failure(c.takeError());
  if (llvm::Error err = c->checkLayout())
    return failure(std::move(err));
  llvm::Expected<std::vector<uint8_t>> records = referenceFlush(*c);
  if (!records)
    return failure(records.takeError());
  if (llvm::Error err = writeBinaryFile(opts.get("out"), records->data(),
                                        records->size()))
    return failure(std::move(err));
  const RecordLayout &l = c->recordLayout();
  int64_t tiles = int64_t(records->size()) / l.recordBytes;
  llvm::outs() << llvm::formatv("ref flush: {0} tiles of {1} head_dim {2}, "
                                "{3} B per record -> {4}",
                                tiles, c->presetName(), l.headDim,
                                l.recordBytes, opts.get("out"));
  // Where the case carries the public reference's records, say how close.
  llvm::Expected<Tensor> expected = c->tensor("records_ref", "uint8", 2);
  if (expected) {
    if (int64_t(expected->bytes.size()) != int64_t(records->size()))
      return failure(makeError(KVARN_ERROR_CORRUPT_DATA,
                               "records_ref holds {0} bytes, expected {1}",
                               expected->bytes.size(), records->size()));
    RecordComparison cmp = compareRecords(l, records->data(),
                                          expected->bytes.data(), tiles);
    llvm::outs() << llvm::formatv(
        "; vs records_ref: codes equal {0:P3}, max code step {1}, worst tile "
        "dequantized rel L2 K {2:e2} V {3:e2}, bytes equal {4:P3}",
        cmp.codeAgreement(), cmp.maxCodeStep, cmp.maxKRelL2, cmp.maxVRelL2,
        cmp.byteAgreement());
  } else {
    llvm::consumeError(expected.takeError());
  }
  llvm::outs() << "\n";
  return kExitOk;
}

int runRefDecode(const ParsedOptions &opts) {
  llvm::Expected<GoldenCase> c = loadCaseOption(opts);
  if (!c)
    return failure(c.takeError());
  if (llvm::Error err = c->checkLayout())
    return failure(std::move(err));
  DecodeShape shape;
  llvm::Expected<std::vector<float>> out = referenceDecode(*c, &shape);
  if (!out)
    return failure(out.takeError());
  if (llvm::Error err = writeBinaryFile(opts.get("out"), out->data(),
                                        out->size() * sizeof(float)))
    return failure(std::move(err));
  llvm::outs() << llvm::formatv("ref decode: batch {0}, {1} query heads, "
                                "head_dim {2}, {3} -> {4}",
                                shape.batch, shape.numQHeads, shape.headDim,
                                c->presetName(), opts.get("out"));
  for (const char *name : {"out_exact", "out_unquantized"}) {
    llvm::Expected<Tensor> t = c->tensor(name, "float32");
    if (!t) {
      llvm::consumeError(t.takeError());
      continue;
    }
    if (t->bytes.size() != out->size() * sizeof(float))
      return failure(makeError(KVARN_ERROR_CORRUPT_DATA,
                               "{0} has {1} bytes, expected {2}", name,
                               t->bytes.size(), out->size() * sizeof(float)));
    llvm::outs() << llvm::formatv("; rel L2 vs {0} {1:e2}", name,
                                  relativeL2(out->data(), t->as<float>(),
                                             out->size()));
  }
  llvm::outs() << "\n";
  return kExitOk;
}

} // namespace

std::vector<Command> kvarn::jit::refCommands() {
  std::vector<OptionSpec> caseOptions = {
      {"case", "DIR", "a golden-format case directory (case.json + binaries)",
       /*required=*/true},
      {"out", "FILE", "the output file (raw little-endian bytes)",
       /*required=*/true}};
  return {
      {"ref flush", "ref flush --case DIR --out FILE",
       "quantize a flush case's k_rot/v_rot tiles with the CPU reference; "
       "writes records [tiles, record_bytes]",
       caseOptions, runRefFlush},
      {"ref decode", "ref decode --case DIR --out FILE",
       "attend over a decode case's paged cache with the CPU reference; "
       "writes fp32 [B, Hq, D]",
       caseOptions, runRefDecode},
  };
}
