//===- AttendOps.cpp - attend, attend_finish, merge -----------------------===//
//
// The decode family's ops. Their distributed form (online softmax over
// blocks held in registers, split-K merge) is not written yet: kernels that
// use them fail to compile with a clear diagnostic rather than silently.
//
//===----------------------------------------------------------------------===//

#include "TileLowering.h"

using namespace mlir;
using namespace kvarn::kvt;

namespace {
LogicalResult notYet(TileLowering &, Operation *op) {
  return op->emitOpError("has no GPU lowering yet: the decode-family kernels "
                         "(attend, attend_finish, merge) are not generated "
                         "for the GPU in this version");
}
} // namespace

void kvarn::kvt::registerAttendOpLowerings(
    llvm::DenseMap<OperationName, OpLowering> &table, MLIRContext *ctx) {
  for (llvm::StringRef name :
       {AttendOp::getOperationName(), AttendFinishOp::getOperationName(),
        MergeOp::getOperationName()})
    table[OperationName(name, ctx)] = notYet;
}
