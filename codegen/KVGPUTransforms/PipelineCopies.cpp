//===- PipelineCopies.cpp - the next record's copy during this one --------===//
//
// decode's block loop copies a record into shared memory (`copy_in`, one
// barrier), attends it, and only then copies the next: each step waits a
// memory latency before its first instruction (a CTA alone on an SM streamed
// a block in 2.1-2.3 us, H100). When the record a step copies is known one
// step ahead (the DSL looks block ids up ahead), this pass copies it one step
// ahead, into a ring of two slots appended to the kernel's shared memory:
//
//   copy record(step 0) -> slot 0                     (before the loop)
//   for k:
//     copy record(step k + 1) -> slot (k + 1) % 2     (or an empty group)
//     ... barrier in_flight 1 ...  (record k has landed; k + 1 may not have)
//     attend slot k % 2
//     barrier                      (slot k % 2 is free for step k + 2)
//
// A loop qualifies when its copies of one byte range (every copy_in in its
// body, outside nested loops, of the same global pointer, 1-D bytes, and
// offsets computed alike, stored alike: the same swizzled_rows) each come
// right before a barrier, the offset is
// pure arithmetic on the loop's iteration arguments, its index and values
// from outside (so that step k + 1's is step k's yielded values put in), each
// copy's block ends with a barrier after the buffers read from it, and the
// kernel with the ring still fits all but one of its CTAs an SM. The copied
// range is every record the loop may read: a block's record bytes exist
// whether the block is read from them or not (paged.kvt), so the copy is
// issued on every step, where the original was under the loop's branches;
// the loop's own prefetch of those bytes is then redundant and removed.
//
// Barriers of the loop that no other copy can precede within a step wait for
// all but the newest group of copies (`in_flight 1`); each step closes exactly
// one group (the copy, or `kvgpu.commit_copies`), so that group is always
// the next record's.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Codegen/LaunchPolicy.h"
#include "kvarn/Conversion/Passes.h"

#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/Support/MathExtras.h"

namespace kvarn {
#define GEN_PASS_DEF_PIPELINECOPIES
#include "kvarn/Conversion/Passes.h.inc"
} // namespace kvarn

using namespace mlir;
using namespace kvarn::kvgpu;

namespace {

constexpr int64_t kSlotAlignment = 128;

/// Whether `a` and `b` are computed alike: the same value, or results of
/// pure ops of the same kind and attributes on operands computed alike.
bool computedAlike(Value a, Value b, int depth = 0) {
  if (a == b)
    return true;
  Operation *x = a.getDefiningOp(), *y = b.getDefiningOp();
  if (!x || !y || depth > 64 || x->getName() != y->getName() ||
      x->getAttrDictionary() != y->getAttrDictionary() ||
      x->getNumOperands() != y->getNumOperands() || x->getNumRegions() ||
      !isPure(x) ||
      cast<OpResult>(a).getResultNumber() !=
          cast<OpResult>(b).getResultNumber())
    return false;
  for (auto [u, v] : llvm::zip(x->getOperands(), y->getOperands()))
    if (!computedAlike(u, v, depth + 1))
      return false;
  return true;
}

/// Whether `v` is pure arithmetic, inside `loop`'s body, on the loop's
/// index and iteration arguments and on values from outside the loop.
bool isStepFunction(Value v, scf::ForOp loop, int depth = 0) {
  if (!loop->isAncestor(v.getParentRegion()->getParentOp()))
    return true;
  if (auto arg = dyn_cast<BlockArgument>(v))
    return arg.getOwner() == loop.getBody();
  Operation *op = v.getDefiningOp();
  if (depth > 64 || !isPure(op) || op->getNumRegions())
    return false;
  return llvm::all_of(op->getOperands(), [&](Value operand) {
    return isStepFunction(operand, loop, depth + 1);
  });
}

/// `v` (a step function of `loop`) cloned at `b` with the loop's block
/// arguments replaced as `map` says.
Value cloneStepFunction(OpBuilder &b, Value v, scf::ForOp loop,
                        IRMapping &map) {
  if (Value mapped = map.lookupOrNull(v))
    return mapped;
  if (!loop->isAncestor(v.getParentRegion()->getParentOp()))
    return v;
  Operation *op = v.getDefiningOp();
  for (Value operand : op->getOperands())
    cloneStepFunction(b, operand, loop, map);
  Operation *copy = b.clone(*op, map);
  return copy->getResult(cast<OpResult>(v).getResultNumber());
}

/// The block arguments of `loop`'s body that `v` (a step function) reads.
void collectLeaves(Value v, scf::ForOp loop, llvm::SetVector<Value> &leaves) {
  if (!loop->isAncestor(v.getParentRegion()->getParentOp()))
    return;
  if (isa<BlockArgument>(v)) {
    leaves.insert(v);
    return;
  }
  for (Value operand : v.getDefiningOp()->getOperands())
    collectLeaves(operand, loop, leaves);
}

/// The op of `block` that is or contains `op`.
Operation *ancestorIn(Block *block, Operation *op) {
  return block->findAncestorOpInBlock(*op);
}

/// Whether a copy_in other than the pipelined one (`issue`'s) may run
/// before `barrier` within a step of `loop`: one before it in a block between
/// the two, or anywhere in a loop nested between them (an earlier
/// iteration's).
bool otherCopyMayPrecede(BarrierOp barrier, scf::ForOp loop, Operation *issue) {
  auto copies = [&](Operation *op) {
    if (op == issue)
      return false;
    bool found = false;
    op->walk([&](CopyInOp) { found = true; });
    return found;
  };
  for (Operation *at = barrier; at != loop.getOperation();
       at = at->getParentOp()) {
    if (at != barrier.getOperation() && isa<scf::ForOp>(at) && copies(at))
      return true;
    for (Operation *before = at->getPrevNode(); before;
         before = before->getPrevNode())
      if (copies(before))
        return true;
  }
  return false;
}

struct Ring {
  scf::ForOp loop;
  SmallVector<CopyInOp> copies; // one byte range, in the loop's branches
  /// Each copy's read range (readRange), in the order of `copies`.
  SmallVector<std::pair<Operation *, Operation *>> readRanges;
  int64_t bufferOffset = 0, bytes = 0;
  /// The op of the body after which the next step's offset is known: the
  /// latest definition of a yielded value it reads (null: the body's start).
  Operation *issueAfter = nullptr;

  /// Whether `view` is a view of the copied bytes.
  bool covers(SharedBufferOp view) const {
    int64_t at = int64_t(view.getOffset());
    return !view.getSlot() && at >= bufferOffset &&
           at + view.getSpannedBytes() <= bufferOffset + bytes;
  }
};

/// Whether `copy` stages bytes the ring could hold: a 1-D byte buffer of
/// its own, from a pointer and with a stride from outside `loop`, at an
/// offset that is a step function of it.
bool isRecordCopy(CopyInOp copy, scf::ForOp loop) {
  auto buffer = copy.getDst().getDefiningOp<SharedBufferOp>();
  MemRefType type = copy.getDst().getType();
  auto outside = [&](Value v) {
    return !loop->isAncestor(v.getParentRegion()->getParentOp());
  };
  return buffer && !buffer.getSlot() && type.getRank() == 1 &&
         type.getElementType().isInteger(8) && outside(copy.getSrc()) &&
         copy.getByteStrides().size() == 1 &&
         outside(copy.getByteStrides()[0]) &&
         isStepFunction(copy.getByteOffset(), loop);
}

/// The ops of `copy`'s block after it up to the block's last barrier, if
/// the block ends with one and `copy` is followed by one: the range where
/// the copy's bytes are read (the slot is then free for step k + 2).
std::optional<std::pair<Operation *, Operation *>> readRange(CopyInOp copy) {
  Block *block = copy->getBlock();
  Operation *last = block->getTerminator()->getPrevNode();
  if (!last || !isa<BarrierOp>(last) ||
      !isa_and_nonnull<BarrierOp>(copy->getNextNode()))
    return std::nullopt;
  return std::make_pair(copy->getNextNode(), last);
}

/// The copies of `loop` that can be pipelined, if any (the file comment):
/// the first record copy of its body (outside nested loops) and those of
/// the same bytes computed alike (in other branches).
std::optional<Ring> findRing(scf::ForOp loop) {
  SmallVector<CopyInOp> copies;
  loop.getBody()->walk([&](CopyInOp copy) {
    if (copy->getParentOfType<scf::ForOp>() == loop && isRecordCopy(copy, loop))
      copies.push_back(copy);
  });
  if (copies.empty())
    return std::nullopt;
  CopyInOp first = copies.front();
  MemRefType type = first.getDst().getType();
  Ring ring{loop, {}, {}, 0, type.getNumElements()};
  ring.bufferOffset =
      int64_t(first.getDst().getDefiningOp<SharedBufferOp>().getOffset());
  for (CopyInOp copy : copies) {
    if (copy.getDst().getType() != type || copy.getSrc() != first.getSrc() ||
        int64_t(copy.getDst().getDefiningOp<SharedBufferOp>().getOffset()) !=
            ring.bufferOffset ||
        !computedAlike(copy.getByteStrides()[0], first.getByteStrides()[0]) ||
        !computedAlike(copy.getByteOffset(), first.getByteOffset()))
      continue;
    // One ring copy stands for them all: the bytes must land alike.
    if (copy.getSwizzledRowsAttr() != first.getSwizzledRowsAttr())
      return std::nullopt;
    auto range = readRange(copy);
    if (!range)
      return std::nullopt;
    // A view of the copied bytes used in the range is used nowhere else.
    Block *block = copy->getBlock();
    bool escapes = false;
    auto inRange = [&](Operation *user) {
      Operation *at = ancestorIn(block, user);
      return at && at != copy && copy->isBeforeInBlock(at) &&
             !range->second->isBeforeInBlock(at);
    };
    for (Operation *op = range->first; op != range->second;
         op = op->getNextNode())
      op->walk([&](Operation *user) {
        for (Value operand : user->getOperands())
          if (auto view = operand.getDefiningOp<SharedBufferOp>();
              view && ring.covers(view))
            for (Operation *other : view->getUsers())
              escapes |= other != copy && !inRange(other);
      });
    if (escapes)
      return std::nullopt;
    ring.copies.push_back(copy);
    ring.readRanges.push_back(*range);
  }
  // The next step's copy goes where the yielded values its offset reads
  // are defined: every copy must come after that.
  Block *body = loop.getBody();
  llvm::SetVector<Value> leaves;
  collectLeaves(first.getByteOffset(), loop, leaves);
  auto yield = cast<scf::YieldOp>(body->getTerminator());
  for (auto [arg, yielded] :
       llvm::zip(loop.getRegionIterArgs(), yield.getOperands()))
    if (Operation *def = yielded.getDefiningOp();
        leaves.contains(arg) && def && def->getBlock() == body &&
        (!ring.issueAfter || ring.issueAfter->isBeforeInBlock(def)))
      ring.issueAfter = def;
  for (CopyInOp copy : ring.copies)
    if (ring.issueAfter &&
        !ring.issueAfter->isBeforeInBlock(ancestorIn(body, copy)))
      return std::nullopt;
  return ring;
}

struct PipelineCopiesPass
    : kvarn::impl::PipelineCopiesBase<PipelineCopiesPass> {
  using PipelineCopiesBase::PipelineCopiesBase;

  void runOnOperation() override {
    const kvarn::ChipInfo *target = kvarn::findChip(chip);
    if (!target)
      target = kvarn::findChip(kvarn::kDefaultChip);
    getOperation().walk([&](gpu::GPUFuncOp kernel) {
      auto shared = kernel->getAttrOfType<IntegerAttr>(kSharedBytesAttrName);
      auto ctas = kernel->getAttrOfType<IntegerAttr>(
          NVVM::NVVMDialect::getMinctasmAttrName());
      if (!shared || !ctas)
        return;
      SmallVector<scf::ForOp> loops;
      kernel.walk([&](scf::ForOp loop) { loops.push_back(loop); });
      for (scf::ForOp loop : loops) {
        std::optional<Ring> ring = findRing(loop);
        if (!ring)
          continue;
        int64_t slotBytes = llvm::alignTo(ring->bytes, kSlotAlignment);
        int64_t base = llvm::alignTo(shared.getInt(), kSlotAlignment);
        int64_t total = base + SharedBufferOp::kRingSlots * slotBytes;
        int64_t fits =
            target->sharedPerSM / (total + kvarn::kReservedSharedBytesPerCta);
        int64_t planned = ctas.getInt();
        // One CTA an SM may go for the ring (its copies in flight stand
        // for the CTA's); two would halve what the SM keeps in flight.
        if (total > target->sharedPerCta ||
            fits < std::max<int64_t>(1, planned - 1))
          continue;
        pipeline(*ring, base, slotBytes);
        OpBuilder b(kernel);
        kernel->setAttr(kSharedBytesAttrName, b.getI64IntegerAttr(total));
        kernel->setAttr(NVVM::NVVMDialect::getMinctasmAttrName(),
                        b.getI32IntegerAttr(int(std::min(fits, planned))));
        ++numPipelined;
        return; // one ring a kernel
      }
    });
  }

  void pipeline(Ring &ring, int64_t base, int64_t slotBytes) {
    scf::ForOp loop = ring.loop;
    Location loc = loop.getLoc();
    CopyInOp first = ring.copies.front();
    Block *body = loop.getBody();
    auto yield = cast<scf::YieldOp>(body->getTerminator());

    // Before the loop: the first step's record into slot 0.
    OpBuilder b(loop);
    {
      IRMapping map;
      map.map(loop.getInductionVar(), loop.getLowerBound());
      for (auto [arg, init] :
           llvm::zip(loop.getRegionIterArgs(), loop.getInitArgs()))
        map.map(arg, init);
      Value any =
          arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt,
                                loop.getLowerBound(), loop.getUpperBound());
      auto guard = scf::IfOp::create(b, loc, any);
      b.setInsertionPointToStart(guard.thenBlock());
      Value offset = cloneStepFunction(b, first.getByteOffset(), loop, map);
      Value slot0 =
          SharedBufferOp::create(b, loc, first.getDst().getType(), base);
      CopyInOp::create(b, loc, first.getSrc(), offset, first.getByteStrides(),
                       slot0, first.getSwizzledRowsAttr());
    }

    // The step's slot, (iv - lb) / step % 2, and the next record's copy
    // where the values it is computed from are known.
    IRMapping next;
    Value iv = loop.getInductionVar();
    b.setInsertionPointToStart(body);
    Value ivPlusStep = arith::AddIOp::create(b, loc, iv, loop.getStep());
    next.map(iv, ivPlusStep);
    for (auto [arg, yielded] :
         llvm::zip(loop.getRegionIterArgs(), yield.getOperands()))
      next.map(arg, yielded);
    // After the yielded values the next offset is computed from.
    b.setInsertionPointAfter(ring.issueAfter ? ring.issueAfter
                                             : ivPlusStep.getDefiningOp());
    Value steps = arith::DivSIOp::create(
        b, loc, arith::SubIOp::create(b, loc, iv, loop.getLowerBound()),
        loop.getStep());
    Value one =
        arith::ConstantOp::create(b, loc, b.getIntegerAttr(iv.getType(), 1));
    Value parity = arith::AndIOp::create(b, loc, steps, one);
    auto toIndex = [&](Value v) -> Value {
      if (v.getType().isIndex())
        return v;
      return arith::IndexCastOp::create(b, loc, b.getIndexType(), v);
    };
    Value slot = toIndex(parity);
    Value nextSlot = toIndex(arith::XOrIOp::create(b, loc, parity, one));
    Value more = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt,
                                       ivPlusStep, loop.getUpperBound());
    auto issue = scf::IfOp::create(b, loc, more, /*withElseRegion=*/true);
    Value nextOffset;
    {
      OpBuilder t = OpBuilder::atBlockBegin(issue.thenBlock());
      nextOffset = cloneStepFunction(t, first.getByteOffset(), loop, next);
      Value view =
          SharedBufferOp::create(t, loc, first.getDst().getType(), base,
                                 nextSlot, t.getI64IntegerAttr(slotBytes));
      CopyInOp::create(t, loc, first.getSrc(), nextOffset,
                       first.getByteStrides(), view,
                       first.getSwizzledRowsAttr());
      OpBuilder e = OpBuilder::atBlockBegin(issue.elseBlock());
      CommitCopiesOp::create(e, loc);
    }
    // The loop's prefetch of the same bytes is the copy now.
    SmallVector<PrefetchOp> prefetches;
    body->walk([&](PrefetchOp p) {
      if (p.getSrc() == first.getSrc() && !p.getRows() &&
          int64_t(p.getBytes()) == ring.bytes &&
          computedAlike(p.getByteOffset(), nextOffset))
        prefetches.push_back(p);
    });
    for (PrefetchOp p : prefetches)
      p.erase();

    // In each copy's read range, views of the copied bytes become views of
    // the step's slot (one new view per old one, where the copy was).
    for (auto [copy, range] : llvm::zip(ring.copies, ring.readRanges)) {
      llvm::MapVector<Value, Value> rebased;
      OpBuilder v(copy);
      for (Operation *op = range.first; op != range.second;
           op = op->getNextNode())
        op->walk([&](Operation *user) {
          for (OpOperand &use : user->getOpOperands()) {
            auto view = use.get().getDefiningOp<SharedBufferOp>();
            if (!view || !ring.covers(view))
              continue;
            int64_t at = int64_t(view.getOffset());
            Value &slotView = rebased[view.getBuffer()];
            if (!slotView)
              slotView = SharedBufferOp::create(
                  v, view.getLoc(), view.getBuffer().getType(),
                  base + (at - ring.bufferOffset), slot,
                  v.getI64IntegerAttr(slotBytes));
            use.set(slotView);
          }
        });
      Value dst = copy.getDst();
      copy.erase();
      for (Value old : llvm::make_first_range(rebased))
        if (old != dst && old.use_empty())
          old.getDefiningOp()->erase();
      if (dst.use_empty())
        dst.getDefiningOp()->erase();
    }
    // Barriers no other copy precedes within a step leave the next record's
    // copy in flight.
    body->walk([&](BarrierOp barrier) {
      if (!otherCopyMayPrecede(barrier, loop, issue))
        barrier.setInFlight(1);
    });
  }
};

} // namespace
