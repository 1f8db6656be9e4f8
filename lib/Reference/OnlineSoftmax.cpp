//===- OnlineSoftmax.cpp - block-wise attention in fp64 -------------------===//

#include "kvarn/Reference/OnlineSoftmax.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <vector>

using namespace kvarn;

void kvarn::attendBlock(int rows, int dim, llvm::ArrayRef<double> q,
                        llvm::ArrayRef<double> k, llvm::ArrayRef<double> v,
                        llvm::ArrayRef<int32_t> valid, double scale,
                        llvm::MutableArrayRef<double> m,
                        llvm::MutableArrayRef<double> l,
                        llvm::MutableArrayRef<double> acc,
                        llvm::ArrayRef<int32_t> from, RopeScores rope) {
  const int keys = int(k.size() / size_t(dim));
  assert(q.size() == size_t(rows) * dim && v.size() == k.size() &&
         valid.size() == size_t(rows) && m.size() == size_t(rows) &&
         l.size() == size_t(rows) && acc.size() == size_t(rows) * dim &&
         (from.empty() || from.size() == size_t(rows)) &&
         rope.q.size() == size_t(rows) * rope.dim &&
         rope.k.size() == size_t(keys) * rope.dim &&
         "shapes of an attention block step");
  std::vector<double> scores(keys);
  for (int h = 0; h < rows; ++h) {
    const int seen = std::min<int32_t>(valid[h], keys);
    const int start = from.empty() ? 0 : std::max<int32_t>(from[h], 0);
    if (seen <= start)
      continue;
    const double *qh = &q[size_t(h) * dim];
    double blockMax = -INFINITY;
    for (int t = start; t < seen; ++t) {
      double dot = 0;
      for (int c = 0; c < dim; ++c)
        dot += qh[c] * k[size_t(t) * dim + c];
      for (int c = 0; c < rope.dim; ++c)
        dot +=
            rope.q[size_t(h) * rope.dim + c] * rope.k[size_t(t) * rope.dim + c];
      scores[t] = dot * scale;
      blockMax = std::max(blockMax, scores[t]);
    }
    const double newMax = std::max(m[h], blockMax);
    // exp(-inf) is 0: an empty state contributes nothing.
    const double rescale = std::exp(m[h] - newMax);
    double *acch = &acc[size_t(h) * dim];
    double sum = l[h] * rescale;
    for (int c = 0; c < dim; ++c)
      acch[c] *= rescale;
    for (int t = start; t < seen; ++t) {
      double p = std::exp(scores[t] - newMax);
      sum += p;
      for (int c = 0; c < dim; ++c)
        acch[c] += p * v[size_t(t) * dim + c];
    }
    m[h] = newMax;
    l[h] = sum;
  }
}

void kvarn::finishAttention(int rows, int dim, llvm::ArrayRef<double> m,
                            llvm::ArrayRef<double> l,
                            llvm::ArrayRef<double> acc,
                            llvm::MutableArrayRef<double> out,
                            llvm::MutableArrayRef<double> lse) {
  assert(m.size() == size_t(rows) && l.size() == size_t(rows) &&
         acc.size() == size_t(rows) * dim && out.size() == acc.size() &&
         lse.size() == size_t(rows) && "shapes of an attention finish");
  for (int h = 0; h < rows; ++h) {
    const bool empty = !(l[h] > 0);
    for (int c = 0; c < dim; ++c)
      out[size_t(h) * dim + c] = empty ? 0.0 : acc[size_t(h) * dim + c] / l[h];
    lse[h] = empty ? -INFINITY : m[h] + std::log(l[h]);
  }
}

void kvarn::mergePartials(int splits, int rows, int dim,
                          llvm::ArrayRef<double> parts,
                          llvm::ArrayRef<double> lses, int count,
                          llvm::MutableArrayRef<double> out) {
  assert(parts.size() == size_t(splits) * rows * dim &&
         lses.size() == size_t(splits) * rows &&
         out.size() == size_t(rows) * dim && "shapes of a split merge");
  count = std::clamp(count, 0, splits);
  for (int h = 0; h < rows; ++h) {
    double maxLse = -INFINITY;
    for (int s = 0; s < count; ++s)
      maxLse = std::max(maxLse, lses[size_t(s) * rows + h]);
    double *o = &out[size_t(h) * dim];
    std::fill(o, o + dim, 0.0);
    if (maxLse == -INFINITY)
      continue;
    double total = 0;
    for (int s = 0; s < count; ++s) {
      double lse = lses[size_t(s) * rows + h];
      if (lse == -INFINITY)
        continue;
      double w = std::exp(lse - maxLse);
      total += w;
      const double *p = &parts[(size_t(s) * rows + h) * dim];
      for (int c = 0; c < dim; ++c)
        o[c] += w * p[c];
    }
    for (int c = 0; c < dim; ++c)
      o[c] /= total;
  }
}
