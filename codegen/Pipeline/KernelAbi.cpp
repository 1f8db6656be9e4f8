//===- KernelAbi.cpp - the kernel ABI's grid rule -------------------------===//
//
// Apart from Pipeline.cpp (which reads the ABI off the kvt signatures) so
// that the runtime core, which only launches by it, links no MLIR.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Codegen/Pipeline.h"

using namespace kvarn;

std::string KernelAbi::gridExpression(size_t axis) const {
  int g = axis < grid.size() ? grid[axis] : -2;
  return g >= 0 ? params[size_t(g)].name : std::to_string(-1 - g);
}
