//===- SelectLaunch.cpp - the kvt-select-launch pass ----------------------===//
//
// Before convert-kvt-to-kvgpu lowers a kernel: how it is launched. Warps per
// CTA, CTAs per SM its registers and shared memory are budgeted for, and
// whether a CTA packs several programs, from what the kernel does (it
// attends, normalizes, or is all register rows) and kvarn/Codegen/
// LaunchPolicy.h's measured constants, written as the kernel's `kvt.launch`
// so that the choice can be read, tested and overridden in the IR (IREE's
// LLVMGPU keeps its launch configuration the same way). The chip's shared
// memory bounds what convert-kvt-to-kvgpu stages; it may settle on fewer
// CTAs per SM than planned and says so in its kvgpu attributes.
//
//===----------------------------------------------------------------------===//

#include "TileLowering.h"
#include "kvarn/Codegen/LaunchPolicy.h"
#include "kvarn/Conversion/Passes.h"
#include "kvarn/Dialect/KVT/KVT.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinAttributes.h"

#include <algorithm>

namespace kvarn {
#define GEN_PASS_DEF_SELECTLAUNCH
#include "kvarn/Conversion/Passes.h.inc"
} // namespace kvarn

using namespace mlir;
using namespace kvarn;
using namespace kvarn::kvt;

std::optional<LaunchChoice> kvarn::kvt::readLaunchChoice(Operation *kernel) {
  auto dict = kernel->getAttrOfType<DictionaryAttr>(kLaunchAttrName);
  if (!dict)
    return std::nullopt;
  auto integer = [&](llvm::StringRef key) -> std::optional<int64_t> {
    if (auto a = dict.getAs<IntegerAttr>(key))
      return a.getInt();
    return std::nullopt;
  };
  std::optional<int64_t> warps = integer("num_warps"),
                         ctas = integer("ctas_per_sm");
  if (!warps || !ctas || *warps < 1 || *warps > kMaxWarpsPerCta || *ctas < 1 ||
      *ctas > kMaxCtasPerSM)
    return std::nullopt;
  LaunchChoice c;
  c.numWarps = *warps;
  c.ctasPerSM = *ctas;
  c.programsPerCta = integer("programs_per_cta").value_or(0);
  if (c.programsPerCta < 0 ||
      (c.programsPerCta && !threadsPerProgram(c.numWarps, c.programsPerCta)))
    return std::nullopt;
  c.keepsStaging = bool(dict.get("keeps_staging"));
  c.warpStates = bool(dict.get("warp_states"));
  return c;
}

std::optional<GridX> kvarn::kvt::findGridX(Operation *kernel) {
  auto func = dyn_cast<func::FuncOp>(kernel);
  auto grid = kernel->getAttrOfType<ArrayAttr>("kvt.grid");
  if (!func || !grid || grid.empty())
    return std::nullopt;
  if (auto c = dyn_cast<IntegerAttr>(grid[0]))
    return GridX{c.getInt(), 0};
  for (unsigned i = 0; i < func.getNumArguments(); ++i)
    if (func.getArgAttr(i, "kvt.name") == grid[0] &&
        (func.getArgumentTypes()[i].isInteger(32) ||
         func.getArgumentTypes()[i].isInteger(64)))
      return GridX{std::nullopt, i};
  return std::nullopt;
}

namespace {

/// Warps for a kernel with nothing more specific to go by: its largest tile.
int64_t warpsForLargestTile(func::FuncOp func) {
  int64_t largest = 0;
  func.walk([&](Operation *op) {
    for (Type t : op->getResultTypes())
      if (auto tile = dyn_cast<TileType>(t))
        largest = std::max(largest, tile.getNumElements());
  });
  return largest >= 8192 ? 8 : largest >= 1024 ? 4 : 1;
}

LaunchChoice chooseLaunch(func::FuncOp func, int64_t numWarps,
                          int64_t minCtasPerSM, bool warpStates) {
  // Kernels that attend: LaunchPolicy.h says why.
  bool attends = false;
  // Of the attended K tiles [G, D]: the largest (a record block's, not the
  // pool's chunks of fp16 rows).
  int64_t group = 0, headDim = 0;
  func.walk([&](AttendOp op) {
    attends = true;
    group = std::max(group, op.getK().getType().getDim(0));
    headDim = std::max(headDim, op.getK().getType().getDim(1));
  });
  // A kernel whose tiles are all register rows (append) needs neither
  // shared memory nor barriers, so its programs need not have CTAs of
  // their own: each program, all its chains, runs in the lanes its rows
  // take (a warp or part of one: packedRowLanes) and a CTA packs several
  // (LaunchPolicy.h), unless it stores scalars (thread 0 of a CTA does).
  // Otherwise each chain gets its own warp, up to 4.
  RegisterRowChains chains = findRegisterRowChains(func);
  bool storesScalars = false;
  func.walk([&](StoreOp) { storesScalars = true; });
  bool pack = !attends && chains.coversAllTiles && !storesScalars &&
              findGridX(func).has_value();
  // Kernels that normalize: by their largest normalized tile.
  int64_t normalized = 0;
  func.walk([&](NormalizeOp op) {
    normalized = std::max(normalized, op.getInput().getType().getNumElements());
  });
  NormalizeLaunch normalizeShape = normalizeLaunch(long(normalized));
  // Kernels that merge split partials: by the merged elements.
  int64_t merged = 0;
  func.walk([&](MergeOp op) {
    merged = std::max(merged, op.getResult().getType().getNumElements());
  });
  SpecAttr spec = getEnclosingSpec(func);
  bool mla = spec && spec.isMla();
  int64_t defaultWarps =
      attends && mla ? kMlaAttentionNumWarps
      : attends      ? attentionNumWarps(int(group), int(headDim))
      : pack         ? kPackedWarpsPerCta
      : normalized && normalizeShape.warps ? normalizeShape.warps
      : merged                             ? mergeWarps(merged)
      : chains.coversAllTiles ? std::min<int64_t>(chains.numChains, 4)
                              : warpsForLargestTile(func);
  int64_t defaultCtas =
      attends && mla
          ? mlaAttentionCtasPerSM(mlaHeadsPerProgram(int(spec.getGqa())))
      : attends    ? attentionCtasPerSM(int(group), int(headDim))
      : normalized ? normalizeShape.ctasPerSM
                   : 1;
  LaunchChoice c;
  c.numWarps = numWarps > 0 ? numWarps : defaultWarps;
  c.ctasPerSM = minCtasPerSM > 0 ? minCtasPerSM : defaultCtas;
  c.programsPerCta =
      pack ? c.numWarps * (kvgpu::kWarpSize / packedRowLanes(chains.shortestRow,
                                                             chains.longestRow))
           : 0;
  // kvgpu.sinkhorn reads a normalizing kernel's tiles from shared memory:
  // it keeps them staged and gives up CTAs per SM (unless they were asked).
  c.keepsStaging = normalized && defaultCtas > 1 && minCtasPerSM <= 0;
  c.warpStates = warpStates && attends && !pack;
  return c;
}

struct SelectLaunchPass : kvarn::impl::SelectLaunchBase<SelectLaunchPass> {
  using SelectLaunchBase::SelectLaunchBase;

  void runOnOperation() override {
    for (auto func : getOperation().getOps<func::FuncOp>()) {
      if (!func->hasAttr(KVTDialect::getKernelAttrName()))
        continue;
      LaunchChoice c = chooseLaunch(func, numWarps, minCtasPerSM, warpStates);
      Builder b(func);
      SmallVector<NamedAttribute> entries = {
          b.getNamedAttr("num_warps", b.getI64IntegerAttr(c.numWarps)),
          b.getNamedAttr("ctas_per_sm", b.getI64IntegerAttr(c.ctasPerSM))};
      if (c.programsPerCta)
        entries.push_back(b.getNamedAttr(
            "programs_per_cta", b.getI64IntegerAttr(c.programsPerCta)));
      if (c.keepsStaging)
        entries.push_back(b.getNamedAttr("keeps_staging", b.getUnitAttr()));
      if (c.warpStates)
        entries.push_back(b.getNamedAttr("warp_states", b.getUnitAttr()));
      func->setAttr(kLaunchAttrName, b.getDictionaryAttr(entries));
    }
  }
};

} // namespace
