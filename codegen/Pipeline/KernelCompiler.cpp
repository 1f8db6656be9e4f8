//===- KernelCompiler.cpp - a DSL kernel to PTX ---------------------------===//

#include "kvarn/Codegen/KernelCompiler.h"
#include "kvarn/Codegen/LaunchPolicy.h"
#include "kvarn/DSL/Diagnostics.h"
#include "kvarn/DSL/KernelBuilder.h"
#include "kvarn/RegisterKvarnDialects.h"
#include "kvarn/Support/Error.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"

#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"

using namespace mlir;
using namespace kvarn;

dsl::Specialization kvarn::specializationFor(dsl::Specialization spec,
                                             const CompileOptions &options) {
  if (spec.isMla())
    return spec; // MLA's pool chunks do not depend on the options
  kvarn::Expected<const Preset *> preset = lookupPreset(spec.preset);
  if (!preset) {
    kvarn::consumeError(preset.takeError()); // check() reports it
    return spec;
  }
  kvarn::Expected<RecordLayout> layout =
      RecordLayout::get(**preset, spec.headDim);
  if (!layout) {
    kvarn::consumeError(layout.takeError());
    return spec;
  }
  const ChipInfo *chip = findChip(options.target.chip);
  if (!chip)
    chip = findChip(kDefaultChip);
  spec.poolRowsBytes = attentionPoolRowsBytes(
      layout->group, layout->headDim, options.minCtasPerSM, chip->sharedPerSM,
      options.pipelineCopies);
  return spec;
}

kvarn::Expected<CompiledModule>
kvarn::compileKernel(const KernelRequest &request,
                     const CompileOptions &options) {
  if (kvarn::Error err = request.spec.check())
    return std::move(err);
  DialectRegistry registry;
  registerKvarnDialects(registry);
  // Compilations run on several threads, each with its own context.
  MLIRContext context(registry, MLIRContext::Threading::DISABLED);
  context.loadAllAvailableDialects();
  context.printOpOnDiagnostic(false); // the location says where

  dsl::ErrorCollector diagnostics(&context);

  OwningOpRef<ModuleOp> module;
  llvm::SourceMgr sourceMgr;
  dsl::Specialization spec = specializationFor(request.spec, options);
  if (request.source.empty()) {
    module = dsl::buildLibraryKernel(request.kernel, spec, &context);
  } else {
    sourceMgr.AddNewSourceBuffer(
        llvm::MemoryBuffer::getMemBufferCopy(request.source, request.sourceName),
        llvm::SMLoc());
    module = dsl::buildKernels(sourceMgr, spec, &context);
    if (module) { // keep only the requested kernel
      bool found = false;
      for (auto func : llvm::make_early_inc_range(module->getOps<func::FuncOp>())) {
        if (func.getName() == request.kernel)
          found = true;
        else
          func.erase();
      }
      if (!found)
        return makeError(KVARN_ERROR_COMPILE, "{0} defines no kernel '{1}'",
                         request.sourceName, request.kernel);
    }
  }
  if (!module)
    return makeError(KVARN_ERROR_COMPILE, "{0}",
                     diagnostics.text().empty() ? "the DSL front end failed"
                                                : diagnostics.text());
  kvarn::Expected<CompiledModule> compiled = compileToPTX(*module, options);
  if (!compiled)
    return compiled.takeError();
  return compiled;
}
