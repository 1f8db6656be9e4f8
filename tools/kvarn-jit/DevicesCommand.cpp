//===- DevicesCommand.cpp - kvarn-jit devices -----------------------------===//

#include "Commands.h"

#include "kvarn/Runtime/Context.h"
#include "kvarn/Runtime/PtxAssembler.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

using namespace kvarn;
using namespace kvarn::jit;

/// The driver, its GPUs and the ptxas kvarn would use; fails (exit 1) with
/// the driver loader's message where kernels cannot run.
static int runDevices(const ParsedOptions &) {
  std::string warning;
  kvarn::Expected<std::string> ptxas =
      cuda::findPtxas(cuda::ptxasCandidates(), &warning);
  llvm::outs() << "ptxas: "
               << (ptxas ? *ptxas : "none (" + toString(ptxas.takeError()) + ")")
               << (warning.empty() ? "" : " (" + warning + ")") << "\n";
  kvarn::Expected<const cuda::Driver &> driver = cuda::Driver::get();
  if (!driver)
    return failure(driver.takeError());
  int version = driver->version();
  llvm::outs() << llvm::formatv("CUDA driver {0}.{1} ({2}), {3} GPU(s)\n",
                                version / 1000, version % 1000 / 10,
                                driver->libraryPath(), driver->deviceCount());
  for (int ordinal = 0; ordinal < driver->deviceCount(); ++ordinal) {
    kvarn::Expected<cuda::DeviceInfo> info =
        cuda::queryDevice(*driver, ordinal);
    if (!info)
      return failure(info.takeError());
    llvm::outs() << llvm::formatv(
        "  GPU {0}: {1}, {2}, {3} SMs, {4:f1} GiB, {5} KiB shared per block "
        "(opt-in), {6} MiB L2\n",
        ordinal, info->name, info->arch(), info->multiprocessors,
        double(info->totalMemoryBytes) / (1u << 30),
        info->maxSharedBytesPerBlockOptin / 1024, info->l2CacheBytes >> 20);
  }
  return kExitOk;
}

Command kvarn::jit::devicesCommand() {
  return {"devices", "kvarn-jit devices",
          "report the CUDA driver, the GPUs and ptxas; exit 1 when kernels "
          "cannot run here",
          {}, runDevices};
}
