//===- PairwiseTree.h - a reduction of values as a balanced tree -*- C++
//-*-===//
//
// Reductions of values a thread holds (a merge's loaded terms, a loop's
// partial sums): neighbours meet pairwise, level by level, so the result
// waits on log2(n) operations instead of a chain of n - 1, and the terms'
// rounding does not grow with their count.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_CODEGEN_PAIRWISETREE_H
#define KVARN_CODEGEN_PAIRWISETREE_H

#include "mlir/IR/Value.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/SmallVector.h"

#include <cassert>

namespace kvarn::codegen {

/// combine(...) of `terms` (at least one), terms 2i and 2i + 1 meeting at
/// each level; an odd level's last term moves up as it is.
inline mlir::Value pairwiseTree(
    llvm::ArrayRef<mlir::Value> terms,
    llvm::function_ref<mlir::Value(mlir::Value, mlir::Value)> combine) {
  assert(!terms.empty() && "pairwiseTree of no terms");
  llvm::SmallVector<mlir::Value> level(terms);
  while (level.size() > 1) {
    llvm::SmallVector<mlir::Value> up;
    for (size_t i = 0; i + 1 < level.size(); i += 2)
      up.push_back(combine(level[i], level[i + 1]));
    if (level.size() % 2)
      up.push_back(level.back());
    level = std::move(up);
  }
  return level.front();
}

} // namespace kvarn::codegen

#endif // KVARN_CODEGEN_PAIRWISETREE_H
