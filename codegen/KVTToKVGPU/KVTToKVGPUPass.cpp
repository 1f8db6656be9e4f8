//===- KVTToKVGPUPass.cpp ---- the convert-kvt-to-kvgpu pass --------------===//
//
// Moves every kvt kernel into `gpu.module @kvarn_kernels` as a gpu.func with
// Triton's parameter convention, and lowers its body op by op: kvt ops
// through the per-family lowering table, scf/arith ops by cloning.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Codegen/LaunchPolicy.h"
#include "TileLowering.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"

namespace kvarn {
#define GEN_PASS_DEF_CONVERTKVTTOKVGPU
#include "kvarn/Conversion/Passes.h.inc"
} // namespace kvarn

using namespace mlir;
using namespace kvarn;
using namespace kvarn::kvt;

namespace {

/// Pre-order positions of ops and the last position each tile value is
/// needed at (a use inside a nested region keeps it alive to the end of the
/// enclosing op in the value's own block).
struct Liveness {
  llvm::DenseMap<Operation *, int64_t> position, end;
  llvm::DenseMap<Value, int64_t> lastUse;

  explicit Liveness(func::FuncOp func) {
    int64_t next = 0;
    func.walk<WalkOrder::PreOrder>([&](Operation *op) {
      position[op] = next++;
    });
    func.walk<WalkOrder::PostOrder>([&](Operation *op) {
      int64_t e = position[op];
      for (Region &r : op->getRegions())
        for (Operation &inner : r.getOps())
          e = std::max(e, end[&inner]);
      end[op] = e;
    });
    auto record = [&](Value v, Block *home) {
      int64_t last = v.getDefiningOp() ? position[v.getDefiningOp()] : 0;
      for (Operation *user : v.getUsers()) {
        Operation *a = home->findAncestorOpInBlock(*user);
        if (a)
          last = std::max(last, end[a]);
      }
      lastUse[v] = last;
    };
    func.walk([&](Operation *op) {
      for (Value r : op->getResults())
        if (isa<TileType>(r.getType()))
          record(r, op->getBlock());
    });
  }
};

/// Grid axis 0's extent (`kvt.grid[0]`: a constant or the name of an
/// integer parameter; kvt-select-launch packs programs only where it has
/// one) as i32 in the lowered kernel whose arguments are `args`.
Value gridXValue(func::FuncOp func, OpBuilder &b, ValueRange args) {
  std::optional<GridX> x = findGridX(func);
  assert(x && "kvt-select-launch packs only kernels with a grid x");
  Location loc = func.getLoc();
  if (x->constant)
    return arith::ConstantIntOp::create(b, loc, *x->constant, 32);
  Value arg = args[x->param];
  return arg.getType().isInteger(32)
             ? arg
             : arith::TruncIOp::create(b, loc, b.getI32Type(), arg).getResult();
}

class KernelLowering {
public:
  KernelLowering(func::FuncOp func, TileLowering &state,
                 const llvm::DenseMap<OperationName, OpLowering> &table)
      : liveness(func), state(state), table(table) {
    state.lastUseOf = [this](Value v) { return liveness.lastUse.lookup(v); };
  }

  LogicalResult lowerBlock(Block &old) {
    for (Operation &op : old) {
      assert(!isa<scf::YieldOp>(op) && "yields are lowered with their op");
      if (failed(lowerOp(&op)))
        return failure();
      releaseDeadBuffers(liveness.end[&op]);
    }
    return success();
  }

  Liveness liveness;

private:
  TileLowering &state;
  const llvm::DenseMap<OperationName, OpLowering> &table;

  static bool touchesTiles(Operation *op) {
    auto isTile = [](Type t) { return isa<TileType>(t); };
    return llvm::any_of(op->getOperandTypes(), isTile) ||
           llvm::any_of(op->getResultTypes(), isTile);
  }

  void releaseDeadBuffers(int64_t now) {
    SmallVector<int> dead;
    for (auto [id, last] : state.bufferLastUse)
      if (last <= now)
        dead.push_back(id);
    for (int id : dead) {
      state.bufferLastUse.erase(id);
      state.planner.release(id);
    }
  }

  /// Records the views `op` created and extends their buffers' lifetimes.
  void noteResults(Operation *op) {
    for (Value r : op->getResults()) {
      auto it = state.tiles.find(r);
      if (it == state.tiles.end())
        continue;
      for (int id : it->second.buffers()) {
        int64_t &last = state.bufferLastUse[id];
        last = std::max(last, liveness.lastUse.lookup(r));
      }
    }
  }

  /// A plain buffer for each tile-typed value in `types`, to hold the
  /// results of an scf.if or the loop-carried tiles of an scf.for; they live
  /// at least to the end of `owner`.
  /// A fresh buffer for tile `v`: held per warp where it is such a state.
  TileView allocateTile(Location loc, Value v, TileType tile) {
    StateRole role = state.warpStates.lookup(v);
    return role == StateRole::None ? state.allocate(loc, tile)
                                   : allocateWarpState(state, loc, tile, role);
  }

  /// Yields: scalars as operands, tiles by copying into `carried` (through a
  /// temporary when the value reads the very buffer it overwrites).
  void yieldInto(scf::YieldOp yield, ArrayRef<TileView> carried) {
    Location loc = yield.getLoc();
    SmallVector<Value> scalars;
    size_t next = 0;
    for (Value v : yield.getOperands()) {
      if (!isa<TileType>(v.getType())) {
        scalars.push_back(state.lookup(v));
        continue;
      }
      const TileView &dst = carried[next++];
      TileView src = state.view(v);
      if (src.isPlainBuffer() && src.buffer == dst.buffer &&
          src.bufferDims == dst.bufferDims && src.conversions.empty())
        continue; // yields the carried buffer unchanged
      if (llvm::is_contained(src.buffers(), dst.bufferId)) {
        TileView tmp = state.materialize(loc, src, dst.type.getElementType());
        state.copyInto(loc, tmp, dst);
        state.planner.release(tmp.bufferId);
      } else {
        state.copyInto(loc, src, dst);
      }
    }
    scf::YieldOp::create(state.b, loc, scalars);
  }

  /// Where the yields of the loops and ifs being lowered copy their tiles:
  /// a loop's carried buffers, an if's result buffers.
  llvm::DenseMap<Operation *, SmallVector<TileView>> yieldTargets;

  /// The if's result buffers. A tile result whose one use is the enclosing
  /// loop's or if's yield is written straight into that yield's target (the
  /// branch has read the old state by then), saving a buffer and a copy:
  /// decode's `if pool {..} else if windowed {..} else {..}` updates the
  /// loop's state in place through both ifs.
  SmallVector<TileView> allocateIfResults(scf::IfOp op) {
    SmallVector<TileView> views;
    for (Value r : op.getResults()) {
      auto tile = dyn_cast<TileType>(r.getType());
      if (!tile)
        continue;
      if (r.hasOneUse()) {
        Operation *user = *r.getUsers().begin();
        auto it = yieldTargets.find(user);
        if (it != yieldTargets.end() && user->getBlock() == op->getBlock()) {
          unsigned pos = r.getUses().begin()->getOperandNumber(), t = 0;
          for (unsigned i = 0; i < pos; ++i)
            t += isa<TileType>(user->getOperand(i).getType());
          views.push_back(it->second[t]);
          continue;
        }
      }
      views.push_back(allocateTile(op->getLoc(), r, tile));
      state.bufferLastUse[views.back().bufferId] = liveness.end[op];
    }
    return views;
  }

  void mapCarried(ValueRange oldValues, ValueRange newScalars,
                  ArrayRef<TileView> carried) {
    size_t s = 0, t = 0;
    for (Value v : oldValues) {
      if (isa<TileType>(v.getType())) {
        state.tiles[v] = carried[t++];
        for (int id : carried[t - 1].buffers()) {
          int64_t &last = state.bufferLastUse[id];
          last = std::max(last, liveness.lastUse.lookup(v));
        }
      } else {
        state.scalars.map(v, newScalars[s++]);
      }
    }
  }

  LogicalResult lowerOp(Operation *op) {
    OpBuilder &b = state.b;
    if (isRegisterRowOp(state, op))
      return lowerRegisterRowOp(state, op);
    auto lowering = table.find(op->getName());
    if (lowering != table.end()) {
      if (failed(lowering->second(state, op)))
        return failure();
      noteResults(op);
      return success();
    }
    if (isa<KVTDialect>(op->getDialect()))
      return op->emitOpError("has no GPU lowering yet");
    if (isa<func::ReturnOp>(op)) {
      if (!state.gridX) // else it follows the guard around the body
        gpu::ReturnOp::create(b, op->getLoc());
      return success();
    }
    if (auto ifOp = dyn_cast<scf::IfOp>(op))
      return lowerIf(ifOp);
    if (auto forOp = dyn_cast<scf::ForOp>(op))
      return lowerFor(forOp);
    if (isa<scf::YieldOp>(op))
      return success(); // emitted by lowerIf / lowerFor
    if (touchesTiles(op))
      return op->emitOpError("on tiles has no GPU lowering");
    if (op->getNumRegions())
      return op->emitOpError("with regions is not supported in kvt kernels");
    b.clone(*op, state.scalars);
    return success();
  }

  static SmallVector<Type> scalarTypes(TypeRange types) {
    SmallVector<Type> out;
    for (Type t : types)
      if (!isa<TileType>(t))
        out.push_back(t);
    return out;
  }

  /// Lowers the ops of `old` but its terminator, then the terminator as a
  /// yield into `carried`.
  LogicalResult lowerRegionBody(Block &old, ArrayRef<TileView> carried) {
    for (Operation &op : old.without_terminator()) {
      if (failed(lowerOp(&op)))
        return failure();
      releaseDeadBuffers(liveness.end[&op]);
    }
    yieldInto(cast<scf::YieldOp>(old.getTerminator()), carried);
    return success();
  }

  LogicalResult lowerIf(scf::IfOp op) {
    OpBuilder &b = state.b;
    SmallVector<TileView> carried = allocateIfResults(op);
    yieldTargets[op.thenYield()] = carried;
    if (!op.getElseRegion().empty())
      yieldTargets[op.elseYield()] = carried;
    auto newIf = scf::IfOp::create(b, op.getLoc(), scalarTypes(op.getResultTypes()),
                                   state.lookup(op.getCondition()),
                                   /*withElseRegion=*/!op.getElseRegion().empty());
    for (auto [oldRegion, newRegion] :
         {std::pair{&op.getThenRegion(), &newIf.getThenRegion()},
          std::pair{&op.getElseRegion(), &newIf.getElseRegion()}}) {
      if (oldRegion->empty())
        continue;
      Block &newBlock = newRegion->front();
      if (!newBlock.empty())
        newBlock.back().erase(); // the implicit yield; ours comes from `old`
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToEnd(&newBlock);
      if (failed(lowerRegionBody(oldRegion->front(), carried)))
        return failure();
    }
    mapCarried(op.getResults(), newIf.getResults(), carried);
    return success();
  }

  LogicalResult lowerFor(scf::ForOp op) {
    OpBuilder &b = state.b;
    Location loc = op.getLoc();
    // A state held per warp is carried in its init's copies where nothing
    // reads the init afterwards (no copy, no second 8 KB at D 128, GQA 4).
    SmallVector<TileView> carried;
    SmallVector<bool> reused;
    for (auto [init, result] : llvm::zip(op.getInitArgs(), op.getResults())) {
      auto tile = dyn_cast<TileType>(result.getType());
      if (!tile)
        continue;
      const TileView &in = state.view(init);
      StateRole role = state.warpStates.lookup(result);
      // (Not where another init shares its buffer: two carried tiles.)
      auto sharesBuffer = [&](Value other) {
        return isa<TileType>(other.getType()) &&
               llvm::is_contained(state.view(other).buffers(), in.bufferId);
      };
      reused.push_back(role != StateRole::None && in.warpState == role &&
                       llvm::count_if(op.getInitArgs(), sharesBuffer) == 1 &&
                       state.canOverwrite(init, op));
      carried.push_back(reused.back() ? in : allocateTile(loc, result, tile));
      int64_t &last = state.bufferLastUse[carried.back().bufferId];
      last = std::max(last, liveness.end[op]);
    }
    yieldTargets[op.getBody()->getTerminator()] = carried;
    SmallVector<Value> inits;
    size_t t = 0;
    for (Value v : op.getInitArgs()) {
      if (isa<TileType>(v.getType())) {
        if (!reused[t])
          state.copyInto(loc, state.view(v), carried[t]);
        ++t;
      } else {
        inits.push_back(state.lookup(v));
      }
    }
    auto newFor = scf::ForOp::create(
        b, loc, state.lookup(op.getLowerBound()),
        state.lookup(op.getUpperBound()), state.lookup(op.getStep()), inits);
    Block &newBody = *newFor.getBody();
    state.scalars.map(op.getInductionVar(), newFor.getInductionVar());
    mapCarried(op.getRegionIterArgs(), newFor.getRegionIterArgs(), carried);
    if (!newBody.empty())
      newBody.back().erase();
    {
      OpBuilder::InsertionGuard guard(b);
      b.setInsertionPointToEnd(&newBody);
      if (failed(lowerRegionBody(*op.getBody(), carried)))
        return failure();
    }
    mapCarried(op.getResults(), newFor.getResults(), carried);
    return success();
  }
};

struct ConvertKVTToKVGPUPass
    : kvarn::impl::ConvertKVTToKVGPUBase<ConvertKVTToKVGPUPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    MLIRContext *ctx = &getContext();
    llvm::DenseMap<OperationName, OpLowering> table;
    registerMemoryOpLowerings(table, ctx);
    registerPrimitiveOpLowerings(table, ctx);
    registerAttendOpLowerings(table, ctx);
    registerSplitPlanLowering(table, ctx);

    SmallVector<func::FuncOp> kernels;
    for (auto func : module.getOps<func::FuncOp>())
      if (func->hasAttr(KVTDialect::getKernelAttrName()))
        kernels.push_back(func);
    if (kernels.empty())
      return;

    OpBuilder b(ctx);
    b.setInsertionPointToEnd(module.getBody());
    module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                    UnitAttr::get(ctx));
    auto gpuModule = module.lookupSymbol<gpu::GPUModuleOp>("kvarn_kernels");
    if (!gpuModule)
      gpuModule = gpu::GPUModuleOp::create(b, module.getLoc(), "kvarn_kernels");

    for (func::FuncOp func : kernels) {
      if (failed(convertKernel(func, gpuModule, table)))
        return signalPassFailure();
      func.erase();
    }
  }

  LogicalResult
  convertKernel(func::FuncOp func, gpu::GPUModuleOp gpuModule,
                const llvm::DenseMap<OperationName, OpLowering> &table) {
    MLIRContext *ctx = &getContext();
    auto spec = func->getAttrOfType<SpecAttr>(KVTDialect::getSpecAttrName());
    if (!spec)
      return func.emitOpError("kernel lacks a 'kvt.spec' attribute");
    if (func.getNumResults())
      return func.emitOpError("a kernel returns nothing");

    // Triton's convention: pointers and scalars in order, then the global
    // and profile scratch pointers.
    auto globalPtr = LLVM::LLVMPointerType::get(ctx, 1);
    SmallVector<Type> argTypes;
    for (Type t : func.getArgumentTypes()) {
      if (isa<PointerType>(t))
        argTypes.push_back(globalPtr);
      else if (t.isInteger(32) || t.isInteger(64) || t.isF32())
        argTypes.push_back(t);
      else
        return func.emitOpError("kernel argument of type ")
               << t << " is not a pointer, i32, i64 or f32";
    }
    argTypes.push_back(globalPtr);
    argTypes.push_back(globalPtr);

    // The launch shape kvt-select-launch chose (SelectLaunch.cpp).
    std::optional<LaunchChoice> launch = readLaunchChoice(func);
    if (!launch)
      return func.emitOpError("has no valid '")
             << kLaunchAttrName << "' (run kvt-select-launch first)";
    RegisterRowChains chains = findRegisterRowChains(func);
    llvm::DenseMap<Value, StateRole> warpStates;
    if (launch->warpStates)
      warpStates = findWarpStates(func, launch->numWarps * kvgpu::kWarpSize);
    bool pack = launch->programsPerCta > 0;
    int64_t warps = launch->numWarps;
    int64_t programs = pack ? launch->programsPerCta : 1,
            programThreads = threadsPerProgram(warps, programs),
            warpsPerProgram =
                std::max<int64_t>(programThreads / kvgpu::kWarpSize, 1);
    int64_t ctasPerSM = launch->ctasPerSM;
    // The target chip's shared memory (kChips, LaunchPolicy.h); the default
    // chip's for one outside the table (validateTarget rejects those first).
    const ChipInfo *target = findChip(chip);
    if (!target)
      target = findChip(kDefaultChip);
    const int64_t maxSharedBytes = target->sharedPerCta,
                  sharedBytesPerSM = target->sharedPerSM;
    const int64_t reservedSharedBytes = kReservedSharedBytesPerCta;
    int64_t sharedBudget =
        std::min(maxSharedBytes, sharedBytesPerSM / ctasPerSM - reservedSharedBytes);

    // Stage loaded tiles in shared memory when they fit: try the largest
    // staging limit first and give up staging, step by step, until the
    // kernel's shared memory lets `ctasPerSM` CTAs share an SM (or, with
    // nothing staged, fits one CTA).
    int64_t shared = 0;
    bool waitsOnGrid = false;
    gpu::GPUFuncOp gpuFunc;
    for (int64_t limit : kStagingLimits) {
      OpBuilder b(ctx);
      b.setInsertionPointToEnd(gpuModule.getBody());
      gpuFunc = gpu::GPUFuncOp::create(b, func.getLoc(), func.getName(),
                                       b.getFunctionType(argTypes, {}));
      Block &entry = gpuFunc.getBody().front();
      b.setInsertionPointToStart(&entry);
      TileLowering state(b, spec, warps, limit);
      state.gridDependencyControl = target->gridDependencyControl;
      state.swizzleRecords = swizzleRecords;
      for (auto [v, chain] : chains.chainOf)
        state.registerRows[v] = chain % warpsPerProgram;
      state.registerRowLanes =
          std::min<int64_t>(programThreads, kvgpu::kWarpSize);
      for (auto [oldArg, newArg] :
           llvm::zip(func.getArguments(), entry.getArguments()))
        state.scalars.map(oldArg, newArg);
      if (launch->warpStates && !pack)
        state.warpStates = warpStates;
      if (pack) {
        // The last CTA's programs past the grid do nothing.
        state.programsPerCta = programs;
        state.gridX = gridXValue(func, b, entry.getArguments());
        Value inGrid = arith::CmpIOp::create(
            b, func.getLoc(), arith::CmpIPredicate::slt,
            state.programId(func.getLoc(), 0), state.gridX);
        auto guard = scf::IfOp::create(b, func.getLoc(), inGrid);
        b.setInsertionPoint(guard.thenBlock()->getTerminator());
      }
      KernelLowering lowering(func, state, table);
      if (failed(lowering.lowerBlock(func.getBody().front()))) {
        gpuFunc.erase();
        return failure();
      }
      if (pack) {
        b.setInsertionPointToEnd(&entry);
        gpu::ReturnOp::create(b, func.getLoc());
      }
      shared = state.planner.peakBytes();
      waitsOnGrid = state.waitsOnGrid;
      if (shared <= sharedBudget || (limit == 0 && shared <= maxSharedBytes))
        break;
      // A normalizing kernel keeps its tiles staged (kvgpu.sinkhorn reads
      // them from shared memory) and gives up CTAs per SM instead.
      if (launch->keepsStaging && shared <= maxSharedBytes) {
        ctasPerSM = 1;
        break;
      }
      if (limit != 0)
        gpuFunc.erase();
    }
    // Where the staged tiles outgrew the budget, fewer CTAs share an SM than
    // planned: say so (.minnctapersm and the metadata's ctas_per_sm, which
    // decode's split count plans its waves with), rather than the plan.
    if (shared > sharedBudget)
      ctasPerSM = std::clamp<int64_t>(
          sharedBytesPerSM / (shared + reservedSharedBytes), 1, ctasPerSM);
    OpBuilder b(gpuFunc);
    gpuFunc->setAttr(gpu::GPUDialect::getKernelFuncAttrName(), b.getUnitAttr());
    if (shared > maxSharedBytes)
      return func.emitOpError("needs ")
             << shared << " bytes of shared memory; a CTA has at most "
             << maxSharedBytes;
    gpuFunc->setAttr(kvgpu::kNumWarpsAttrName, b.getI64IntegerAttr(warps));
    if (pack && programs > 1) {
      if (shared)
        return func.emitOpError("packs programs but needs shared memory");
      gpuFunc->setAttr(kvgpu::kProgramsPerCtaAttrName,
                       b.getI64IntegerAttr(programs));
    }
    gpuFunc->setAttr(kvgpu::kSharedBytesAttrName, b.getI64IntegerAttr(shared));
    if (waitsOnGrid)
      gpuFunc->setAttr(kvgpu::kLaunchPdlAttrName, b.getUnitAttr());
    gpuFunc.setKnownBlockSizeAttr(
        b.getDenseI32ArrayAttr({int32_t(warps * kvgpu::kWarpSize), 1, 1}));
    // `.minnctapersm` (default 1): with only `.maxntid`, ptxas budgets
    // registers for as many CTAs as threads allow and spills (flush at sm_80:
    // 48 registers, 64 bytes). Hinting the CTAs shared memory allows spilled
    // in 118 of 504 kernels (docs/benchmarks.md); 1 spills in none.
    gpuFunc->setAttr(NVVM::NVVMDialect::getMinctasmAttrName(),
                     b.getI32IntegerAttr(int(ctasPerSM)));
    for (llvm::StringRef name : {"kvt.spec", "kvt.grid"})
      if (Attribute a = func->getAttr(name))
        gpuFunc->setAttr(name, a);
    return success();
  }
};

} // namespace
