//===- OnlineSoftmax.h - block-wise attention in fp64 -----------*- C++ -*-===//
//
// The three steps of flash-style attention that the kvt ops name (kvt.attend,
// kvt.attend_finish, kvt.merge), in fp64. Fed the same blocks, they give what
// decodeAttention gives (it normalizes in one pass; these rescale a running
// state), to within fp64 rounding.
//
// State of H query rows of width D: running max m[H], running sum l[H] and
// accumulator acc[H][D]. An empty state is m = -inf, l = 0, acc = 0.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_REFERENCE_ONLINESOFTMAX_H
#define KVARN_REFERENCE_ONLINESOFTMAX_H

#include "llvm/ADT/ArrayRef.h"

#include <cstdint>

namespace kvarn {

/// MLA's second score term (kvt.attend's rope operands): q [H][dim] and
/// k [G][dim], channels the values do not have. Empty: no such term.
struct RopeScores {
  llvm::ArrayRef<double> q, k;
  int dim = 0;
};

/// One block step. q is [H][D], k and v are [G][D] (G = k.size() / D); query
/// row h sees keys from[h] <= t < min(valid[h], G) (from empty: from 0) and
/// is left unchanged when it sees none. Scores are scale * (q[h] . k[t]),
/// plus scale * (rope.q[h] . rope.k[t]) with a rope term.
void attendBlock(int rows, int dim, llvm::ArrayRef<double> q,
                 llvm::ArrayRef<double> k, llvm::ArrayRef<double> v,
                 llvm::ArrayRef<int32_t> valid, double scale,
                 llvm::MutableArrayRef<double> m,
                 llvm::MutableArrayRef<double> l,
                 llvm::MutableArrayRef<double> acc,
                 llvm::ArrayRef<int32_t> from = {}, RopeScores rope = {});

/// out[h] = acc[h] / l[h] and lse[h] = m[h] + log(l[h]); rows that saw no key
/// (l = 0) give out = 0 and lse = -inf.
void finishAttention(int rows, int dim, llvm::ArrayRef<double> m,
                     llvm::ArrayRef<double> l, llvm::ArrayRef<double> acc,
                     llvm::MutableArrayRef<double> out,
                     llvm::MutableArrayRef<double> lse);

/// Split-K combine: parts [S][H][D] and lses [S][H] hold S partial outputs of
/// finishAttention over disjoint key ranges; the first `count` are combined
/// with weights softmax_s(lses[s][h]). Splits with lse = -inf weigh nothing;
/// a row with no weight at all is 0. Splits at or past `count` are not read.
void mergePartials(int splits, int rows, int dim, llvm::ArrayRef<double> parts,
                   llvm::ArrayRef<double> lses, int count,
                   llvm::MutableArrayRef<double> out);

} // namespace kvarn

#endif // KVARN_REFERENCE_ONLINESOFTMAX_H
