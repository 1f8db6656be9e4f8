//===- ReferenceOnCase.h - the CPU reference run on golden cases -*- C++ -*-===//
//
// What `kvarn-jit ref flush|decode` and the golden tests run: the CPU
// reference applied to a case's inputs, every shape cross-checked first.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_GOLDEN_REFERENCEONCASE_H
#define KVARN_GOLDEN_REFERENCEONCASE_H

#include "kvarn/Golden/GoldenCase.h"

namespace kvarn {

/// Records [tiles, recordBytes] for a flush case's `k_rot` / `v_rot` tiles.
kvarn::Expected<std::vector<uint8_t>> referenceFlush(const GoldenCase &c);

/// Shape of a decode case's output.
struct DecodeShape {
  int batch = 0;
  int numQHeads = 0;
  int headDim = 0;
};

/// fp32 [B, Hq, D] attention over a decode case's paged cache.
kvarn::Expected<std::vector<float>>
referenceDecode(const GoldenCase &c, DecodeShape *shape = nullptr);

} // namespace kvarn

#endif // KVARN_GOLDEN_REFERENCEONCASE_H
