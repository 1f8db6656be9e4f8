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

int runRefFlush(const ParsedOptions &opts) {
  kvarn::Expected<GoldenCase> c = loadCaseOption(opts);
  if (!c)
    return failure(c.takeError());
  if (kvarn::Error err = c->checkLayout())
    return failure(std::move(err));
  kvarn::Expected<std::vector<uint8_t>> records = referenceFlush(*c);
  if (!records)
    return failure(records.takeError());
  if (kvarn::Error err =
          writeBinaryFile(opts.get("out"), records->data(), records->size()))
    return failure(std::move(err));
  const RecordLayout &l = c->recordLayout();
  int64_t tiles = int64_t(records->size()) / l.recordBytes;
  llvm::outs() << llvm::formatv("ref flush: {0} tiles of {1} head_dim {2}, "
                                "{3} B per record -> {4}",
                                tiles, c->presetName(), l.headDim,
                                l.recordBytes, opts.get("out"));
  if (kvarn::Error err = describeRecordsAgainstCase(*c, *records))
    return failure(std::move(err));
  llvm::outs() << "\n";
  return kExitOk;
}

/// K rotated then V rotated, [tiles, G, D] fp16 each, from a flush case's
/// raw tokens: what `append` writes into the pool.
int runRefAppend(const ParsedOptions &opts) {
  kvarn::Expected<GoldenCase> c = loadCaseOption(opts);
  if (!c)
    return failure(c.takeError());
  kvarn::Expected<std::vector<uint16_t>> rotated = referenceAppend(*c);
  if (!rotated)
    return failure(rotated.takeError());
  if (kvarn::Error err = writeBinaryFile(opts.get("out"), rotated->data(),
                                         rotated->size() * 2))
    return failure(std::move(err));
  llvm::outs() << llvm::formatv("ref append: {0} tokens of head_dim {1} "
                                "rotated -> {2}",
                                rotated->size() / 2 / c->headDim(),
                                c->headDim(), opts.get("out"));
  if (kvarn::Error err = describeRotationAgainstCase(*c, *rotated))
    return failure(std::move(err));
  llvm::outs() << "\n";
  return kExitOk;
}

int runRefDecode(const ParsedOptions &opts) {
  kvarn::Expected<GoldenCase> c = loadCaseOption(opts);
  if (!c)
    return failure(c.takeError());
  if (kvarn::Error err = c->checkLayout())
    return failure(std::move(err));
  DecodeShape shape;
  kvarn::Expected<std::vector<float>> out = referenceDecode(*c, &shape);
  if (!out)
    return failure(out.takeError());
  if (kvarn::Error err = writeBinaryFile(opts.get("out"), out->data(),
                                         out->size() * sizeof(float)))
    return failure(std::move(err));
  llvm::outs() << llvm::formatv("ref decode: batch {0}, {1} query heads, "
                                "head_dim {2}, {3} -> {4}",
                                shape.batch, shape.numQHeads, shape.headDim,
                                c->presetName(), opts.get("out"));
  if (kvarn::Error err = describeAttentionAgainstCase(*c, *out))
    return failure(std::move(err));
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
      {"ref append", "ref append --case DIR --out FILE",
       "rotate a flush case's k_raw/v_raw tokens with the CPU reference; "
       "writes K then V, [tiles, G, D] fp16 each (the case's k_rot, v_rot)",
       caseOptions, runRefAppend},
      {"ref decode", "ref decode --case DIR --out FILE",
       "attend over a decode case's paged cache with the CPU reference; "
       "writes fp32 [B, Hq, D]",
       caseOptions, runRefDecode},
  };
}
