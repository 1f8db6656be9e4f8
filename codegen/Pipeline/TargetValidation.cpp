//===- TargetValidation.cpp - chip / PTX version pairs --------------------===//
//
// LLVM's NVPTX backend aborts the process on a chip / PTX ISA pair it cannot
// emit; every target is checked here first.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Codegen/LaunchPolicy.h"
#include "kvarn/Codegen/Pipeline.h"
#include "kvarn/Support/Error.h"

#include "kvarn/Support/Strings.h"

using namespace kvarn;

namespace {
constexpr int kMaxPtx = 90;     // LLVM 22 emits up to PTX ISA 9.0
constexpr int kDefaultPtx = 78; // CUDA 11.8 drivers and newer load it
} // namespace

std::vector<std::string> kvarn::supportedChips() {
  std::vector<std::string> chips;
  for (const ChipInfo &c : kChips)
    chips.push_back(std::string(c.chip));
  return chips;
}

kvarn::Error kvarn::validateTarget(Target &target) {
  const ChipInfo *info = findChip(target.chip);
  if (!info)
    return makeError(KVARN_ERROR_UNSUPPORTED_TARGET,
                     "unsupported GPU architecture '{0}' (supported: {1})",
                     target.chip, join(supportedChips(), ", "));
  if (target.ptxVersion == 0)
    target.ptxVersion = std::max(info->minPtx, kDefaultPtx);
  if (target.ptxVersion < info->minPtx || target.ptxVersion > kMaxPtx)
    return makeError(KVARN_ERROR_UNSUPPORTED_TARGET,
                     "PTX ISA {0}.{1} cannot target {2}: it needs {3}.{4} to "
                     "{5}.{6}",
                     target.ptxVersion / 10, target.ptxVersion % 10,
                     target.chip, info->minPtx / 10, info->minPtx % 10,
                     kMaxPtx / 10, kMaxPtx % 10);
  return kvarn::Error::success();
}
