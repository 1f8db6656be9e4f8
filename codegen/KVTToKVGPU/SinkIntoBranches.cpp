//===- SinkIntoBranches.cpp - the kvt-sink-into-branches pass -------------===//
//
// Before convert-kvt-to-kvgpu plans shared memory: the users of a
// tile-valued scf.if's results go into its branches.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Conversion/Passes.h"
#include "kvarn/Dialect/KVT/KVT.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "llvm/ADT/SetVector.h"

namespace kvarn {
#define GEN_PASS_DEF_SINKTILEUSERSINTOBRANCHES
#include "kvarn/Conversion/Passes.h.inc"
} // namespace kvarn

using namespace mlir;
using namespace kvarn;
using namespace kvarn::kvt;

namespace {

/// A tile-valued scf.if (decode's "read the block from the pool or from its
/// record") is followed by the ops that use its tiles (attend, or
/// materialize's stores). Those ops are cloned into each branch instead, so
/// the branches yield only what escapes (attend's small state) and the large
/// tiles stay lazy views that never need a shared buffer of their own. Pure
/// ops in between that do not depend on the if move above it.
LogicalResult sinkTileUsersIntoBranches(scf::IfOp op) {
  Block *block = op->getBlock();
  // The ops after the if that depend on its tile results.
  // A terminator stays where it is: what it uses escapes the slice.
  llvm::SetVector<Operation *> slice;
  auto add = [&](Value v) {
    for (Operation *user : v.getUsers())
      if (!user->hasTrait<OpTrait::IsTerminator>())
        slice.insert(user);
  };
  for (Value r : op.getResults())
    if (isa<TileType>(r.getType()))
      add(r);
  for (size_t i = 0; i < slice.size(); ++i) {
    Operation *user = slice[i];
    if (user->getBlock() != block || user->getNumRegions())
      return failure();
    for (Value r : user->getResults())
      add(r);
  }
  if (slice.empty())
    return failure();
  Operation *last = slice.front();
  for (Operation *user : slice)
    if (last->isBeforeInBlock(user))
      last = user;
  // Everything else between the if and the last user moves above the if: it
  // must be pure, or only read memory while nothing here writes it.
  auto writes = [](Operation *o) {
    bool found = false;
    o->walk([&](Operation *inner) {
      auto effects = dyn_cast<MemoryEffectOpInterface>(inner);
      if (effects ? effects.hasEffect<MemoryEffects::Write>()
                  : !inner->hasTrait<OpTrait::HasRecursiveMemoryEffects>() &&
                        !isPure(inner) && !isa<scf::YieldOp>(inner))
        found = true;
    });
    return found;
  };
  auto onlyReads = [](Operation *o) {
    auto effects = dyn_cast<MemoryEffectOpInterface>(o);
    return effects && effects.onlyHasEffect<MemoryEffects::Read>();
  };
  bool memoryQuiet = !writes(op);
  SmallVector<Operation *> hoist;
  for (Operation *it = op->getNextNode(); it != last; it = it->getNextNode()) {
    if (slice.contains(it))
      continue;
    if (it->getNumRegions() ||
        !(isPure(it) || (memoryQuiet && onlyReads(it))))
      return failure();
    for (Value v : it->getOperands())
      if (Operation *def = v.getDefiningOp())
        if (def == op.getOperation() || slice.contains(def))
          return failure();
    hoist.push_back(it);
  }
  for (Operation *h : hoist)
    h->moveBefore(op);

  // What the slice computes that is used after it.
  SmallVector<Value> escaping;
  for (Operation *user : slice)
    for (Value r : user->getResults())
      if (llvm::any_of(r.getUsers(),
                       [&](Operation *u) { return !slice.contains(u); }))
        escaping.push_back(r);
  SmallVector<Operation *> ordered(slice.begin(), slice.end());
  llvm::sort(ordered, [](Operation *a, Operation *b) {
    return a->isBeforeInBlock(b);
  });

  SmallVector<Type> types;
  SmallVector<unsigned> kept; // the if's results that stay results
  for (auto [i, r] : llvm::enumerate(op.getResults()))
    if (!isa<TileType>(r.getType()) ||
        llvm::any_of(r.getUsers(),
                     [&](Operation *u) { return !slice.contains(u); })) {
      types.push_back(r.getType());
      kept.push_back(i);
    }
  for (Value v : escaping)
    types.push_back(v.getType());
  OpBuilder b(op);
  auto newIf = scf::IfOp::create(b, op.getLoc(), types, op.getCondition(),
                                 /*withElseRegion=*/true);
  for (auto [oldRegion, newRegion] :
       {std::pair{&op.getThenRegion(), &newIf.getThenRegion()},
        std::pair{&op.getElseRegion(), &newIf.getElseRegion()}}) {
    newRegion->takeBody(*oldRegion);
    auto yield = cast<scf::YieldOp>(newRegion->front().getTerminator());
    IRMapping map;
    map.map(op.getResults(), yield.getOperands());
    OpBuilder inner(yield);
    for (Operation *user : ordered)
      inner.clone(*user, map);
    SmallVector<Value> values;
    for (unsigned i : kept)
      values.push_back(yield.getOperand(i));
    for (Value v : escaping)
      values.push_back(map.lookup(v));
    scf::YieldOp::create(inner, yield.getLoc(), values);
    yield.erase();
  }
  for (auto [k, i] : llvm::enumerate(kept))
    op.getResult(i).replaceAllUsesWith(newIf.getResult(k));
  for (auto [k, v] : llvm::enumerate(escaping))
    v.replaceAllUsesWith(newIf.getResult(kept.size() + k));
  for (Operation *user : llvm::reverse(ordered))
    user->erase();
  op.erase();
  return success();
}

struct SinkTileUsersIntoBranchesPass
    : kvarn::impl::SinkTileUsersIntoBranchesBase<
          SinkTileUsersIntoBranchesPass> {
  void runOnOperation() override {
    func::FuncOp func = getOperation();
    if (!func->hasAttr(KVTDialect::getKernelAttrName()))
      return;
    SmallVector<scf::IfOp> candidates;
    func.walk([&](scf::IfOp op) {
      if (!op.getElseRegion().empty() &&
          llvm::any_of(op.getResultTypes(),
                       [](Type t) { return isa<TileType>(t); }))
        candidates.push_back(op);
    });
    for (scf::IfOp op : candidates)
      (void)sinkTileUsersIntoBranches(op); // otherwise the results materialize
  }
};

} // namespace
