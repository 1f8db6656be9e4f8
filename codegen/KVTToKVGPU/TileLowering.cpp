//===- TileLowering.cpp - views, the shared-memory planner, helpers -------===//

#include "TileLowering.h"

#include "kvarn/Codegen/LaunchPolicy.h"
#include "kvarn/Codegen/TileArithmeticEmitters.h"

#include "mlir/Interfaces/LoopLikeInterface.h"

using namespace mlir;
using namespace kvarn;
using namespace kvarn::kvt;

//===----------------------------------------------------------------------===//
// SharedMemoryPlanner
//===----------------------------------------------------------------------===//

// Aligned for copy_in / copy_out's vector accesses.
static constexpr int64_t kBufferAlignment = kvgpu::kVectorBytes;

std::pair<int, int64_t> SharedMemoryPlanner::allocate(int64_t bytes) {
  bytes = llvm::alignTo(bytes, kBufferAlignment);
  int64_t offset = 0;
  size_t at = 0;
  for (; at < live.size(); ++at) { // first gap that fits
    if (live[at].offset - offset >= bytes)
      break;
    offset = live[at].offset + live[at].bytes;
  }
  int id = nextId++;
  live.insert(live.begin() + at, Block{id, offset, bytes});
  peak = std::max(peak, offset + bytes);
  return {id, offset};
}

void SharedMemoryPlanner::release(int id) {
  llvm::erase_if(live, [&](const Block &b) { return b.id == id; });
}

//===----------------------------------------------------------------------===//
// TileLowering
//===----------------------------------------------------------------------===//

Value TileLowering::allocateScratch(Location loc, ArrayRef<int64_t> shape,
                                    Type elt, int &id) {
  MemRefType type = kvgpu::getSharedMemRefType(shape, elt);
  int64_t bytes = type.getNumElements() * (elt.getIntOrFloatBitWidth() / 8);
  auto [bufferId, offset] = planner.allocate(bytes);
  id = bufferId;
  return kvgpu::SharedBufferOp::create(b, loc, type,
                                       b.getI64IntegerAttr(offset));
}

TileView TileLowering::allocate(Location loc, TileType type) {
  TileView v;
  v.type = type;
  v.buffer = allocateScratch(loc, type.getShape(), type.getElementType(),
                             v.bufferId);
  for (int i = 0; i < int(type.getRank()); ++i)
    v.bufferDims.push_back(i);
  return v;
}

static Value convertScalar(OpBuilder &b, Location loc, Value v, Type to) {
  Type from = v.getType();
  if (from == to)
    return v;
  if (isa<FloatType>(from) && isa<FloatType>(to)) {
    unsigned fw = from.getIntOrFloatBitWidth(), tw = to.getIntOrFloatBitWidth();
    if (fw == tw) // f16 <-> bf16 goes through f32
      return convertScalar(b, loc, convertScalar(b, loc, v, b.getF32Type()),
                           to);
    if (fw < tw)
      return arith::ExtFOp::create(b, loc, to, v);
    return arith::TruncFOp::create(b, loc, to, v); // round to nearest even
  }
  if (from.isInteger(8) && isa<FloatType>(to)) // codes are unsigned
    return arith::UIToFPOp::create(b, loc, to, v);
  if (from.isInteger(32) && isa<FloatType>(to))
    return arith::SIToFPOp::create(b, loc, to, v);
  llvm_unreachable("conversion rejected by the kvt.convert verifier");
}

Value TileLowering::read(OpBuilder &at, Location loc, const TileView &v,
                         ValueRange idx) const {
  Value x;
  if (v.compute) {
    x = v.compute(at, loc, idx);
  } else if (v.splat) {
    x = v.splat;
  } else {
    SmallVector<Value> bufIdx;
    for (int d : v.bufferDims)
      bufIdx.push_back(d >= 0 ? idx[d] : arith::ConstantIndexOp::create(at, loc, 0));
    x = memref::LoadOp::create(at, loc, v.buffer, bufIdx);
  }
  for (Type t : v.conversions)
    x = convertScalar(at, loc, x, t);
  return x;
}

bool TileView::readsInOrder(bool unitDims) const {
  if (!isPlainBuffer())
    return false;
  int next = 0;
  for (int d : bufferDims) {
    if (d < 0 && unitDims)
      continue;
    if (d != next++)
      return false;
  }
  return next == type.getRank();
}

bool TileView::isStoredAs(Type elt) const {
  return readsInOrder() && conversions.empty() &&
         cast<MemRefType>(buffer.getType()).getElementType() == elt;
}

/// Whether materialize may return `v` itself: the tile as stored, and with
/// `asRank2` a rank-1 tile as a [1, n] buffer.
static bool isMaterialized(const TileView &v, Type elt, bool asRank2) {
  if (!asRank2 || v.type.getRank() != 1)
    return v.isStoredAs(elt);
  return v.isPlainBuffer() && v.conversions.empty() &&
         cast<MemRefType>(v.buffer.getType()).getElementType() == elt &&
         llvm::ArrayRef<int>(v.bufferDims) == llvm::ArrayRef<int>{-1, 0};
}

TileView TileLowering::materialize(Location loc, const TileView &v, Type elt,
                                   bool asRank2) {
  if (isMaterialized(v, elt, asRank2))
    return v;
  ArrayRef<int64_t> shape = v.type.getShape();
  SmallVector<int64_t> bufShape;
  TileView out;
  out.type = v.type.cloneWith(elt);
  if (asRank2 && shape.size() == 1) {
    bufShape = {1, shape[0]};
    out.bufferDims = {-1, 0};
  } else {
    bufShape.assign(shape.begin(), shape.end());
    for (int i = 0; i < int(shape.size()); ++i)
      out.bufferDims.push_back(i);
  }
  out.buffer = allocateScratch(loc, bufShape, elt, out.bufferId);
  copyInto(loc, v, out);
  return out;
}

/// Whether no use of `v` can run after `at`, where `v` is a value of a block
/// enclosing `at` (or of `at`'s own block).
static bool noUseAfter(Value v, Operation *at) {
  Block *home = v.getParentBlock();
  // A loop between `at` and v's block runs `at` again with the same v (and
  // every use of v inside it after this one): only a value rebound each
  // iteration (the loop's own iter_arg, whose block is the loop's body) can
  // be overwritten. A v of no enclosing block: nothing is known.
  for (Block *b = at->getBlock(); b != home;) {
    Operation *parent = b->getParentOp();
    if (!parent || !parent->getBlock() || isa<LoopLikeOpInterface>(parent) ||
        isa<scf::WhileOp>(parent))
      return false;
    b = parent->getBlock();
  }
  for (Operation *user : v.getUsers()) {
    if (user == at)
      continue;
    // From `at` outwards to v's block: the first block that holds the user
    // (or an op around it) says where it runs relative to `at`.
    for (Operation *a = at;; a = a->getBlock()->getParentOp()) {
      Block *block = a->getBlock();
      if (Operation *u = block->findAncestorOpInBlock(*user)) {
        // In another region of `a` (the other branch of an if), or before.
        if ((u == a && !isa<scf::IfOp>(a)) ||
            (u != a && !u->isBeforeInBlock(a)))
          return false;
        break;
      }
      if (block == home)
        return false; // not found: assume it runs later
    }
  }
  return true;
}

/// Whether `user` lies in another branch of an scf.if around `at` than
/// `at`, with no loop between that scf.if and the block of `v`: once `v`
/// is defined, `user` and `at` do not both run.
static bool inOtherBranch(Value v, Operation *user, Operation *at) {
  Block *home = v.getParentBlock();
  for (Operation *p = at->getParentOp(); p && p->getBlock();
       p = p->getParentOp()) {
    if (p->getBlock() == home && !isa<scf::IfOp>(p))
      return false;
    if (auto branch = dyn_cast<scf::IfOp>(p)) {
      if (branch->isAncestor(user)) {
        Region *atRegion = at->getParentRegion(),
               *userRegion = user->getParentRegion();
        while (atRegion->getParentOp() != branch)
          atRegion = atRegion->getParentOp()->getParentRegion();
        while (userRegion->getParentOp() != branch)
          userRegion = userRegion->getParentOp()->getParentRegion();
        if (atRegion == userRegion)
          return false;
        // No loop from the scf.if out to v's block.
        for (Operation *q = branch; q->getBlock() != home; q = q->getParentOp())
          if (!q->getParentOp() || isa<LoopLikeOpInterface>(q->getParentOp()))
            return false;
        return true;
      }
      if (p->getBlock() == home)
        return false;
    }
  }
  return false;
}

/// Whether no loop lies between `op` and `home` (a block around it): `op`
/// runs once each time `home` does.
static bool noLoopBetween(Operation *op, Block *home) {
  for (Operation *p = op; p->getBlock() != home; p = p->getParentOp()) {
    Operation *parent = p->getParentOp();
    if (!parent || isa<LoopLikeOpInterface>(parent))
      return false;
  }
  return true;
}

bool TileLowering::canOverwrite(Value oldTile, Operation *at) const {
  auto it = tiles.find(oldTile);
  if (it == tiles.end() || !it->second.isPlainBuffer() ||
      !it->second.conversions.empty())
    return false;
  int id = it->second.bufferId;
  return id >= 0 && bufferDeadAfter(id, at);
}

bool TileLowering::bufferDeadAfter(int id, Operation *at) const {
  for (const auto &[value, view] : tiles) {
    if (!llvm::is_contained(view.buffers(), id))
      continue;
    // A tile of a region that does not enclose `at` (another branch, whose
    // new attention state was written in place over the same buffer) is
    // used only while that region runs, which it is not at `at`; where it
    // runs again it defines the tile again first.
    Value v = value;
    if (!v.getParentRegion()->isAncestor(at->getParentRegion()))
      continue;
    // A state held per warp shares its buffer with the tiles of the loops
    // that carry it in place (lowerFor): one whose uses are all `at` and
    // the inits of loops around `at` (read once, before the loop, where
    // they became its carried tile) is dead at `at`, where each such use
    // runs once after the tile is defined (no loop between it and the
    // tile's block, which would read the tile again).
    if (view.warpState != StateRole::None) {
      Block *home = v.getParentBlock();
      bool dead = llvm::all_of(v.getUses(), [&](OpOperand &use) {
        Operation *user = use.getOwner();
        if (inOtherBranch(v, user, at))
          return true;
        auto loop = dyn_cast<scf::ForOp>(user);
        bool readOnce = user == at || (loop && loop->isProperAncestor(at) &&
                                       use.getOperandNumber() >=
                                           loop.getNumControlOperands());
        return readOnce && noLoopBetween(user, home);
      });
      if (dead)
        continue;
    }
    if (!noUseAfter(value, at))
      return false;
  }
  return true;
}

void TileLowering::copyInto(Location loc, const TileView &v,
                            const TileView &dst) {
  if (dst.warpState != StateRole::None) {
    if (v.warpState != StateRole::None)
      return copyInto(loc, warpStateRows(v), warpStateRows(dst));
    // A whole state into copies per warp: the first warp's copy is the
    // state, the others' hold no token.
    foreach (loc, warpStateRows(dst).type.getShape(),
             [&](OpBuilder &at, ValueRange idx) {
               Value first =
                   arith::CmpIOp::create(at, loc, arith::CmpIPredicate::eq,
                                         idx[0], index(at, loc, 0));
               Value x = arith::SelectOp::create(
                   at, loc, first, read(at, loc, v, idx.drop_front()),
                   warpStateIdentity(at, loc, dst.warpState));
               memref::StoreOp::create(at, loc, x, dst.buffer, idx);
             })
      ;
    return;
  }
  assert(v.warpState == StateRole::None &&
         "a state held per warp is merged before it is read whole");
  Type elt = cast<MemRefType>(dst.buffer.getType()).getElementType();
  foreach(loc, v.type.getShape(), [&](OpBuilder &at, ValueRange idx) {
    Value x = convertScalar(at, loc, read(at, loc, v, idx), elt);
    SmallVector<Value> bufIdx;
    for (int d : dst.bufferDims)
      bufIdx.push_back(d >= 0 ? idx[d] : index(at, loc, 0));
    memref::StoreOp::create(at, loc, x, dst.buffer, bufIdx);
  });
}

Value TileLowering::programId(Location loc, unsigned axis) {
  auto dim = axis == 0 ? gpu::Dimension::x
             : axis == 1 ? gpu::Dimension::y
                         : gpu::Dimension::z;
  Value id = gpu::BlockIdOp::create(b, loc, dim);
  if (axis == 0 && programsPerCta > 1) {
    // blockIdx.x * P + the thread's group (whole warps or part of one).
    int64_t groupThreads = kvarn::threadsPerProgram(numWarps, programsPerCta);
    Value group = arith::DivUIOp::create(
        b, loc, gpu::ThreadIdOp::create(b, loc, gpu::Dimension::x),
        index(b, loc, groupThreads));
    Value first =
        arith::MulIOp::create(b, loc, id, index(b, loc, programsPerCta));
    id = arith::AddIOp::create(b, loc, first, group);
  }
  return arith::IndexCastOp::create(b, loc, b.getI32Type(), id);
}

void TileLowering::barrier(Location loc) { kvgpu::BarrierOp::create(b, loc); }

Value TileLowering::i64(Location loc, Value v) {
  if (v.getType().isInteger(64))
    return v;
  return arith::ExtSIOp::create(b, loc, b.getI64Type(), v);
}

Value TileLowering::i64Constant(Location loc, int64_t v) {
  return arith::ConstantIntOp::create(b, loc, v, 64);
}

Value TileLowering::f32Constant(OpBuilder &at, Location loc, float v) {
  return arith::ConstantOp::create(at, loc, at.getF32FloatAttr(v));
}

Value TileLowering::index(OpBuilder &at, Location loc, int64_t v) {
  return arith::ConstantIndexOp::create(at, loc, v);
}

void TileLowering::foreach(Location loc, ArrayRef<int64_t> shape,
                           function_ref<void(OpBuilder &, ValueRange)> body) {
  auto op = kvgpu::ForeachOp::create(b, loc, shape);
  Block &block = op.getBody().front();
  OpBuilder at = OpBuilder::atBlockTerminator(&block);
  body(at, block.getArguments());
  barrier(loc);
}

void TileLowering::reduce(
    Location loc, kvgpu::ReduceKind kind, int64_t rows, int64_t cols, Value out,
    function_ref<Value(OpBuilder &, Value, Value)> body) {
  auto op = kvgpu::ReduceOp::create(
      b, loc, kvgpu::ReduceKindAttr::get(b.getContext(), kind),
      b.getDenseI64ArrayAttr({rows, cols}), out);
  Block *block = new Block();
  block->addArgument(b.getIndexType(), loc);
  block->addArgument(b.getIndexType(), loc);
  op.getBody().push_back(block);
  OpBuilder at = OpBuilder::atBlockEnd(block);
  Value v = body(at, block->getArgument(0), block->getArgument(1));
  kvgpu::YieldOp::create(at, loc, ValueRange{v});
  barrier(loc);
}

/// exp(x) = 2^(x log2 e) with ex2.approx.f32: relative error about 2^-22.
Value kvarn::kvt::emitExp(OpBuilder &b, Location loc, Value x) {
  return kvarn::codegen::emitFastExp(b, loc, x);
}

/// log(x) = log2(x) ln 2 with lg2.approx.f32: absolute error about 2^-22.
Value kvarn::kvt::emitLog(OpBuilder &b, Location loc, Value x) {
  Value y = LLVM::CallIntrinsicOp::create(b, loc, b.getF32Type(),
                                          b.getStringAttr("llvm.nvvm.lg2.approx.f"),
                                          ValueRange{x})
                .getResult(0);
  Value ln2 = arith::ConstantOp::create(b, loc, b.getF32FloatAttr(0.6931471805599453f));
  return arith::MulFOp::create(b, loc, y, ln2);
}
