//===- KVGPUToNVVMPass.cpp - the convert-kvgpu-to-nvvm pass ---------------===//

#include "Common.h"

#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace kvarn {
#define GEN_PASS_DEF_CONVERTKVGPUTONVVM
#include "kvarn/Conversion/Passes.h.inc"
} // namespace kvarn

using namespace mlir;

namespace {
struct ConvertKVGPUToNVVMPass
    : kvarn::impl::ConvertKVGPUToNVVMBase<ConvertKVGPUToNVVMPass> {
  void runOnOperation() override {
    kvarn::kvgpu::waitForCopiesAtBarriers(getOperation());
    RewritePatternSet patterns(&getContext());
    kvarn::kvgpu::populateKVGPUMemoryToNVVMPatterns(patterns);
    kvarn::kvgpu::populateKVGPULoopToNVVMPatterns(patterns);
    kvarn::kvgpu::populateKVGPUKVarNToNVVMPatterns(patterns);
    kvarn::kvgpu::populateKVGPUAttentionToNVVMPatterns(patterns);
    kvarn::kvgpu::populateKVGPUTileToNVVMPatterns(patterns);
    kvarn::kvgpu::populateKVGPUFragmentToNVVMPatterns(patterns);
    kvarn::kvgpu::populateKVGPUMmaToNVVMPatterns(patterns);
    GreedyRewriteConfig config;
    config.setRegionSimplificationLevel(GreedySimplifyRegionLevel::Disabled);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns),
                                     config)))
      return signalPassFailure();
    // Anything left is an op the patterns could not lower.
    WalkResult leftover = getOperation().walk([](Operation *op) {
      if (isa<kvarn::kvgpu::KVGPUDialect>(op->getDialect())) {
        op->emitOpError("was not lowered by convert-kvgpu-to-nvvm");
        return WalkResult::interrupt();
      }
      return WalkResult::advance();
    });
    if (leftover.wasInterrupted())
      signalPassFailure();
  }
};
} // namespace
