//===- Common.cpp - helpers shared by the kvgpu lowerings -----------------===//

#include "Common.h"

#include "mlir/IR/IRMapping.h"

using namespace mlir;

int64_t kvarn::kvgpu::getNumThreads(Operation *op) {
  for (Operation *p = op; p; p = p->getParentOp())
    if (auto warps = p->getAttrOfType<IntegerAttr>(kNumWarpsAttrName))
      return warps.getInt() * kWarpSize;
  return 4 * kWarpSize;
}

Value kvarn::kvgpu::threadIndex(OpBuilder &b, Location loc) {
  return gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x);
}

Value kvarn::kvgpu::indexConstant(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIndexOp::create(b, loc, v);
}

void kvarn::kvgpu::buildStridedLoop(
    OpBuilder &b, Location loc, Value start, int64_t total, int64_t step,
    function_ref<void(OpBuilder &, Value)> body) {
  Value upper = indexConstant(b, loc, total);
  Value stepV = indexConstant(b, loc, step);
  scf::ForOp::create(b, loc, start, upper, stepV, ValueRange(),
                     [&](OpBuilder &nb, Location, Value iv, ValueRange) {
                       body(nb, iv);
                       scf::YieldOp::create(nb, loc);
                     });
}

SmallVector<Value> kvarn::kvgpu::delinearize(OpBuilder &b, Location loc,
                                             Value p, ArrayRef<int64_t> shape) {
  SmallVector<Value> idx(shape.size());
  Value rest = p;
  for (int i = int(shape.size()) - 1; i >= 0; --i) {
    if (i == 0) {
      idx[i] = rest;
      break;
    }
    Value d = indexConstant(b, loc, shape[i]);
    idx[i] = arith::RemUIOp::create(b, loc, rest, d);
    rest = arith::DivUIOp::create(b, loc, rest, d);
  }
  return idx;
}

SmallVector<Value> kvarn::kvgpu::inlineBody(OpBuilder &b, Region &region,
                                            ValueRange args) {
  IRMapping map;
  Block &block = region.front();
  map.map(block.getArguments(), args);
  for (Operation &op : block.without_terminator())
    b.clone(op, map);
  SmallVector<Value> results;
  for (Value v : block.getTerminator()->getOperands())
    results.push_back(map.lookupOrDefault(v));
  return results;
}
