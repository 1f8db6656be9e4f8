//===- EliminateBarriers.cpp - drop barriers that order nothing -----------===//
//
// The tile lowering ends every collective op with a barrier. Many order
// nothing: two copies into different buffers, or a reduction into a scratch
// buffer next to a loop over unrelated tiles. Each costs a CTA-wide wait, and
// between copies it serializes their global-memory latencies. A barrier is
// removed when the accesses since the previous kept barrier and those up to
// the next barrier touch disjoint shared-memory bytes (or only read the same
// ones) and do not write global memory the other side reads.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Conversion/Passes.h"

#include "mlir/Interfaces/SideEffectInterfaces.h"

#include <optional>

namespace kvarn {
#define GEN_PASS_DEF_ELIMINATEBARRIERS
#include "kvarn/Conversion/Passes.h.inc"
} // namespace kvarn

using namespace mlir;
using namespace kvarn::kvgpu;

namespace {

/// One memory access: a byte range of shared memory, or global memory.
struct Access {
  bool global = false;
  int64_t begin = 0, end = 0; // shared bytes [begin, end)
  bool write = false;
};

/// The accesses of a run of ops between barriers; `known` is false when one
/// of them could not be analysed (the run then conflicts with everything).
struct Accesses {
  bool known = true;
  llvm::SmallVector<Access> list;

  void append(const Accesses &other) {
    known = known && other.known;
    for (const Access &a : other.list)
      add(a);
  }
  void add(const Access &a) {
    for (const Access &b : list)
      if (a.global == b.global && a.begin == b.begin && a.end == b.end &&
          a.write == b.write)
        return;
    list.push_back(a);
  }
  bool conflictsWith(const Accesses &other) const {
    if (!known || !other.known)
      return true;
    for (const Access &a : list)
      for (const Access &b : other.list) {
        if (!a.write && !b.write)
          continue;
        if (a.global || b.global) {
          if (a.global && b.global)
            return true;
          continue;
        }
        if (a.begin < b.end && b.begin < a.end)
          return true;
      }
    return false;
  }
};

/// Where `value` points: a shared buffer's bytes, global memory, or unknown.
std::optional<Access> locate(Value value) {
  if (auto buffer = value.getDefiningOp<SharedBufferOp>()) {
    // A ring slot stands for every slot it may name.
    int64_t offset = static_cast<int64_t>(buffer.getOffset());
    return Access{false, offset, offset + buffer.getSpannedBytes()};
  }
  if (auto ptr = dyn_cast<LLVM::LLVMPointerType>(value.getType()))
    if (ptr.getAddressSpace() == 1)
      return Access{true};
  return std::nullopt;
}

bool isBarrier(Operation *op) { return isa<BarrierOp, gpu::BarrierOp>(op); }

/// NVVM math intrinsics (ex2, lg2, sqrt, cvt) touch no memory.
bool isPureIntrinsic(Operation *op) {
  auto call = dyn_cast<LLVM::CallIntrinsicOp>(op);
  return call && call.getIntrin().starts_with("llvm.nvvm.") &&
         llvm::none_of(call->getOperandTypes(), [](Type t) {
           return isa<LLVM::LLVMPointerType>(t);
         });
}

/// Adds the accesses of `op` and everything nested in it to `out`.
void collect(Operation *op, Accesses &out) {
  if (!out.known)
    return;
  if (isBarrier(op)) { // a nested barrier: the run is not one phase
    out.known = false;
    return;
  }
  // A prefetch is a hint that changes no value; its ODS declares unknown
  // effects only so that it is not erased as dead.
  if (isPureIntrinsic(op) || isa<PrefetchOp>(op))
    return;
  if (op->getNumRegions() > 0 &&
      (isa<ForeachOp, ReduceOp, scf::ForOp, scf::IfOp, scf::WhileOp>(op))) {
    for (Region &region : op->getRegions())
      for (Operation &nested : region.getOps())
        collect(&nested, out);
    if (auto reduce = dyn_cast<ReduceOp>(op)) {
      std::optional<Access> at = locate(reduce.getOut());
      if (!at) {
        out.known = false;
        return;
      }
      at->write = true;
      out.add(*at);
    }
    return;
  }
  auto effects = dyn_cast<MemoryEffectOpInterface>(op);
  if (!effects) {
    if (!op->hasTrait<OpTrait::IsTerminator>())
      out.known = false;
    return;
  }
  llvm::SmallVector<MemoryEffects::EffectInstance> list;
  effects.getEffects(list);
  for (const MemoryEffects::EffectInstance &effect : list) {
    if (isa<MemoryEffects::Allocate, MemoryEffects::Free>(effect.getEffect()))
      continue;
    std::optional<Access> at;
    if (Value v = effect.getValue())
      at = locate(v);
    if (!at) {
      out.known = false;
      return;
    }
    at->write = isa<MemoryEffects::Write>(effect.getEffect());
    out.add(*at);
  }
}

bool containsBarrier(Operation *op) {
  return op->walk([](Operation *nested) {
           return isBarrier(nested) ? WalkResult::interrupt()
                                    : WalkResult::advance();
         }).wasInterrupted();
}

/// A forward pass over the kernel: the state is what was accessed since the
/// last barrier every thread passed.
struct BarrierEliminator {
  Accesses block(Block &block, Accesses since, bool mutate);
  Accesses transfer(Operation *op, const Accesses &since, bool mutate);
  uint64_t removed = 0;
};

Accesses BarrierEliminator::transfer(Operation *op, const Accesses &since,
                                     bool mutate) {
  if (!containsBarrier(op)) {
    Accesses out = since;
    collect(op, out);
    return out;
  }
  if (auto branch = dyn_cast<scf::IfOp>(op)) {
    Accesses out = block(branch.getThenRegion().front(), since, mutate);
    if (branch.getElseRegion().empty())
      out.append(since);
    else
      out.append(block(branch.getElseRegion().front(), since, mutate));
    return out;
  }
  if (auto loop = dyn_cast<scf::ForOp>(op)) {
    // Iterations after the first enter with what the body left behind.
    Accesses entry = since;
    for (int round = 0;; ++round) {
      Accesses next = since;
      next.append(block(*loop.getBody(), entry, /*mutate=*/false));
      if (next.list.size() == entry.list.size() && next.known == entry.known)
        break;
      if (round == 4) {
        entry.known = false;
        break;
      }
      entry = next;
    }
    Accesses exit = since;
    exit.append(block(*loop.getBody(), entry, mutate));
    return exit;
  }
  Accesses unknown;
  unknown.known = false;
  return unknown;
}

Accesses BarrierEliminator::block(Block &block, Accesses since, bool mutate) {
  for (Operation *op = &block.front(); op;) {
    Operation *nextOp = op->getNextNode();
    if (!isBarrier(op)) {
      since = transfer(op, since, mutate);
      op = nextOp;
      continue;
    }
    // The run up to the next barrier of this block; the block's closing
    // barrier stays (what follows the block is not analysed here).
    Operation *nextBarrier = nextOp;
    while (nextBarrier && !isBarrier(nextBarrier))
      nextBarrier = nextBarrier->getNextNode();
    if (nextBarrier) {
      Accesses run;
      for (Operation *r = nextOp; r != nextBarrier; r = r->getNextNode())
        collect(r, run);
      if (!since.conflictsWith(run)) {
        if (mutate) {
          op->erase();
          ++removed;
        }
        op = nextOp;
        continue;
      }
    }
    since = Accesses();
    op = nextOp;
  }
  return since;
}

struct EliminateBarriersPass
    : kvarn::impl::EliminateBarriersBase<EliminateBarriersPass> {
  void runOnOperation() override {
    getOperation().walk([&](gpu::GPUFuncOp kernel) {
      if (kernel.getBody().empty())
        return;
      BarrierEliminator eliminator;
      eliminator.block(kernel.getBody().front(), Accesses(), /*mutate=*/true);
      numRemoved += eliminator.removed;
    });
  }
};

} // namespace
