//===- ExternDynamicSharedMemory.cpp - keep dynamic smem dynamic ----------===//

#include "kvarn/Conversion/Passes.h"

namespace kvarn {
#define GEN_PASS_DEF_EXTERNDYNAMICSHAREDMEMORY
#include "kvarn/Conversion/Passes.h.inc"
} // namespace kvarn

using namespace mlir;

namespace {
struct ExternDynamicSharedMemoryPass
    : kvarn::impl::ExternDynamicSharedMemoryBase<ExternDynamicSharedMemoryPass> {
  void runOnOperation() override {
    getOperation().walk([](LLVM::GlobalOp global) {
      auto array = dyn_cast<LLVM::LLVMArrayType>(global.getGlobalType());
      if (global.getAddrSpace() == 3 && array && array.getNumElements() == 0)
        global.setLinkage(LLVM::Linkage::External);
    });
  }
};
} // namespace
