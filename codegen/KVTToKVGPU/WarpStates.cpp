//===- WarpStates.cpp - attention states held per warp --------------------===//
//
// kvt.attend's state (m, l, acc) carried across a loop of blocks is, in the
// register lowerings (kvgpu.attend_record, kvgpu.attend_rows), the merge of
// the warps' partial states: each warp attends its own tokens of a block.
// Held per warp, the state is one copy of each tile per warp and each warp
// folds its tokens into its own copy with no barrier and no merge; the
// copies are merged once, where the state is finished (kvt.attend_finish).
// findWarpStates says which tiles are held so, and the helpers here allocate,
// fill and merge them.
//
//===----------------------------------------------------------------------===//

#include "TileLowering.h"

#include "kvarn/Dialect/KVGPU/KVGPU.h"

#include "llvm/ADT/EquivalenceClasses.h"

#include <limits>

using namespace mlir;
using namespace kvarn;
using namespace kvarn::kvt;

namespace {

/// Where the state's tiles may go without being merged first: the state
/// operands of kvt.attend and kvt.attend_finish (each in its own role), and
/// yields or loop inits into a tile that is held per warp too.
bool isStateUse(OpOperand &use, StateRole role) {
  Operation *user = use.getOwner();
  auto roleOf = [&](Value m, Value l, Value acc) {
    Value v = use.get();
    return v == m     ? StateRole::Max
           : v == l   ? StateRole::Sum
           : v == acc ? StateRole::Acc
                      : StateRole::None;
  };
  if (auto attend = dyn_cast<AttendOp>(user))
    return roleOf(attend.getM(), attend.getL(), attend.getAcc()) == role;
  if (auto finish = dyn_cast<AttendFinishOp>(user))
    return roleOf(finish.getM(), finish.getL(), finish.getAcc()) == role;
  return isa<scf::YieldOp, scf::ForOp>(user);
}

/// Whether `op` has a register lowering's layout (attend_record over a
/// record's codes, attend_rows over fp16 rows) at `threads`: only then is
/// its state worth holding per warp. (Whether the lowering takes it also
/// depends on the views; an attend that does not is lowered on the merged
/// state.)
bool hasRegisterLayout(AttendOp op, int64_t threads) {
  if (op.getQRope())
    return false;
  int64_t h = op.getQ().getType().getDim(0), d = op.getQ().getType().getDim(1);
  int64_t t = op.getK().getType().getDim(0);
  // K and V unpacked from a record's codes (K transposed), as
  // lowerAttendOnRecord matches them.
  std::optional<DequantChain> k = matchDequantChain(op.getK(), true),
                              v = matchDequantChain(op.getV(), false);
  if (k && k->unpack && v && v->unpack)
    return kvgpu::getRecordAttendLayout(h, d, t, k->unpack.getBits(),
                                        v->unpack.getBits(), threads,
                                        /*warpStates=*/true)
        .has_value();
  return kvgpu::getRowsAttendLayout(h, d, t, threads, /*warpStates=*/true)
      .has_value();
}

} // namespace

llvm::DenseMap<Value, StateRole> kvarn::kvt::findWarpStates(Operation *kernel,
                                                            int64_t threads) {
  llvm::DenseMap<Value, StateRole> role;
  llvm::EquivalenceClasses<Value> groups;
  SmallVector<Value> work;
  auto add = [&](Value v, StateRole r, Value linkedTo) {
    auto [it, inserted] = role.try_emplace(v, r);
    if (linkedTo)
      groups.unionSets(v, linkedTo);
    else
      groups.insert(v);
    if (inserted)
      work.push_back(v);
    else if (it->second != r)
      it->second = StateRole::None; // one tile in two roles: not a state
  };
  // Seeds: the states attention produces in the register lowerings' reach.
  kernel->walk([&](AttendOp op) {
    if (!hasRegisterLayout(op, threads))
      return;
    add(op.getNewM(), StateRole::Max, Value());
    add(op.getNewL(), StateRole::Sum, op.getNewM());
    add(op.getNewAcc(), StateRole::Acc, op.getNewM());
  });
  // Along yields and loop inits, to the tiles of the scf.if and scf.for
  // results and loop-carried arguments they become.
  while (!work.empty()) {
    Value v = work.pop_back_val();
    StateRole r = role.lookup(v);
    for (OpOperand &use : v.getUses()) {
      Operation *user = use.getOwner();
      unsigned n = use.getOperandNumber();
      if (auto yield = dyn_cast<scf::YieldOp>(user)) {
        Operation *parent = yield->getParentOp();
        if (auto loop = dyn_cast<scf::ForOp>(parent)) {
          add(loop.getResult(n), r, v);
          add(loop.getRegionIterArgs()[n], r, v);
        } else if (isa<scf::IfOp>(parent)) {
          add(parent->getResult(n), r, v);
        }
      } else if (auto loop = dyn_cast<scf::ForOp>(user)) {
        if (n >= loop.getNumControlOperands()) {
          unsigned i = n - loop.getNumControlOperands();
          add(loop.getResult(i), r, v);
          add(loop.getRegionIterArgs()[i], r, v);
        }
      } else if (auto attend = dyn_cast<AttendOp>(user)) {
        // The state it reads and the state it writes are one state.
        if (v == attend.getM() || v == attend.getL() || v == attend.getAcc())
          groups.unionSets(v, attend.getNewM());
      }
    }
  }
  // A group is held per warp only if every use of every tile in it is a
  // state use in that tile's role, and every attention op or finish reading
  // one of its tiles reads all three from it.
  llvm::DenseSet<Value> badLeaders;
  for (auto [v, r] : role) {
    Value leader = groups.getLeaderValue(v);
    bool ok = r != StateRole::None;
    for (OpOperand &use : v.getUses()) {
      if (!ok)
        break;
      ok = isStateUse(use, r);
      Operation *user = use.getOwner();
      auto inGroup = [&](Value x) {
        return role.count(x) && groups.getLeaderValue(x) == leader;
      };
      if (auto attend = dyn_cast<AttendOp>(user))
        ok = ok && inGroup(attend.getM()) && inGroup(attend.getL()) &&
             inGroup(attend.getAcc());
      if (auto finish = dyn_cast<AttendFinishOp>(user))
        ok = ok && inGroup(finish.getM()) && inGroup(finish.getL()) &&
             inGroup(finish.getAcc());
      if (auto yield = dyn_cast<scf::YieldOp>(user))
        ok = ok && isa<scf::ForOp, scf::IfOp>(yield->getParentOp());
    }
    if (!ok)
      badLeaders.insert(leader);
  }
  llvm::DenseMap<Value, StateRole> held;
  for (auto [v, r] : role)
    if (!badLeaders.contains(groups.getLeaderValue(v)))
      held[v] = r;
  return held;
}

TileView kvarn::kvt::allocateWarpState(TileLowering &s, Location loc,
                                       TileType type, StateRole role) {
  SmallVector<int64_t> shape{s.numWarps};
  llvm::append_range(shape, type.getShape());
  TileView v;
  v.type = type;
  v.buffer = s.allocateScratch(loc, shape, type.getElementType(), v.bufferId);
  v.warpState = role;
  return v;
}

TileView kvarn::kvt::warpStateRows(const TileView &state) {
  auto buffer = cast<MemRefType>(state.buffer.getType());
  TileView rows;
  rows.type = TileType::get(buffer.getShape(), buffer.getElementType());
  rows.buffer = state.buffer;
  rows.bufferId = state.bufferId;
  for (int i = 0; i < int(buffer.getRank()); ++i)
    rows.bufferDims.push_back(i);
  return rows;
}

Value kvarn::kvt::warpStateIdentity(OpBuilder &b, Location loc,
                                    StateRole role) {
  float x =
      role == StateRole::Max ? -std::numeric_limits<float>::infinity() : 0.0f;
  return arith::ConstantOp::create(b, loc, b.getF32FloatAttr(x));
}

std::array<TileView, 3>
kvarn::kvt::mergeWarpStates(TileLowering &s, Location loc, const TileView &m,
                            const TileView &l, const TileView &acc) {
  int64_t warps = s.numWarps;
  std::array<TileView, 3> merged = {s.allocate(loc, m.type),
                                    s.allocate(loc, l.type),
                                    s.allocate(loc, acc.type)};
  // Per head: the largest of the warps' maxima (0 where all are -inf, so
  // that every exp(m_w - max) is 0 there, as finiteMax in the lowering) and
  // each warp's weight exp(m_w - max).
  auto weights = [&](OpBuilder &b, Value head, Value &max) {
    SmallVector<Value> ms;
    for (int64_t w = 0; w < warps; ++w) {
      ms.push_back(memref::LoadOp::create(
          b, loc, m.buffer, ValueRange{s.index(b, loc, w), head}));
      max = w ? arith::MaximumFOp::create(b, loc, max, ms.back()).getResult()
              : ms.back();
    }
    Value negInf = warpStateIdentity(b, loc, StateRole::Max);
    Value empty =
        arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OEQ, max, negInf);
    Value finite = arith::SelectOp::create(b, loc, empty,
                                           s.f32Constant(b, loc, 0.0f), max);
    SmallVector<Value> out;
    for (Value mw : ms)
      out.push_back(emitExp(b, loc, arith::SubFOp::create(b, loc, mw, finite)));
    return out;
  };
  // sum_w weight[w] x[w], x[w] the element at `at` of warp w's row.
  auto weightedSum = [&](OpBuilder &b, ArrayRef<Value> weight, Value buffer,
                         ValueRange at) {
    Value sum = s.f32Constant(b, loc, 0.0f);
    for (int64_t w = 0; w < warps; ++w) {
      SmallVector<Value> index{s.index(b, loc, w)};
      llvm::append_range(index, at);
      sum = arith::AddFOp::create(
          b, loc, sum,
          arith::MulFOp::create(b, loc, weight[w],
                                memref::LoadOp::create(b, loc, buffer, index)));
    }
    return sum;
  };
  s.foreach (loc, {m.type.getDim(0)}, [&](OpBuilder &b, ValueRange i) {
    Value max;
    SmallVector<Value> weight = weights(b, i[0], max);
    memref::StoreOp::create(b, loc, max, merged[0].buffer, i);
    memref::StoreOp::create(b, loc, weightedSum(b, weight, l.buffer, i),
                            merged[1].buffer, i);
  });
  s.foreach (loc, acc.type.getShape(), [&](OpBuilder &b, ValueRange i) {
    Value max;
    SmallVector<Value> weight = weights(b, i[0], max);
    memref::StoreOp::create(b, loc, weightedSum(b, weight, acc.buffer, i),
                            merged[2].buffer, i);
  });
  return merged;
}
