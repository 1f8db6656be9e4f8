//===- Pipeline.cpp - from kvt to PTX -------------------------------------===//

#include "kvarn/Codegen/Pipeline.h"
#include "kvarn/Conversion/Passes.h"
#include "kvarn/DSL/Diagnostics.h"
#include "kvarn/RegisterKvarnDialects.h"
#include "kvarn/Support/Error.h"

#include "mlir/Conversion/Passes.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"

#include "mlir/Target/LLVMIR/Export.h"

#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/raw_ostream.h"

using namespace mlir;
using namespace kvarn;

/// kvgpu (in the gpu.module) down to the NVVM and LLVM dialects.
static void addKVGPUToNVVMPasses(OpPassManager &pm) {
  OpPassManager &gpuPm = pm.nest<gpu::GPUModuleOp>();
  gpuPm.addPass(createConvertKVGPUToNVVM());
  gpuPm.addPass(createCanonicalizerPass());
  gpuPm.addPass(createCSEPass());
  gpuPm.addPass(createLowerSCFInReverse()); // convert-scf-to-cf, linear
  ConvertGpuOpsToNVVMOpsOptions nvvmOptions;
  nvvmOptions.indexBitwidth = 32; // tile indices are small; saves registers
  gpuPm.addPass(createConvertGpuOpsToNVVMOps(nvvmOptions));
  gpuPm.addPass(createExternDynamicSharedMemory());
  gpuPm.addPass(createCanonicalizerPass());
  gpuPm.addPass(createCSEPass());
  pm.addPass(createReconcileUnrealizedCastsPass());
}

/// kvt kernels to kvgpu in a gpu.module.
static void addKvtToKVGPUPasses(OpPassManager &pm, const CompileOptions &opts) {
  SelectLaunchOptions launchOptions;
  launchOptions.numWarps = opts.numWarps;
  launchOptions.minCtasPerSM = opts.minCtasPerSM;
  launchOptions.warpStates = opts.warpStates;
  ConvertKVTToKVGPUOptions tileOptions;
  tileOptions.chip = opts.target.chip;
  // The ring copy of -pipeline-copies stands for every record copy of the
  // loop (the window's, unswizzled, among them).
  tileOptions.swizzleRecords = !opts.pipelineCopies;
  pm.addNestedPass<func::FuncOp>(createSinkTileUsersIntoBranches());
  pm.addPass(createSelectLaunch(launchOptions));
  pm.addPass(createConvertKVTToKVGPU(tileOptions));
  pm.addPass(createCanonicalizerPass());
  pm.nest<gpu::GPUModuleOp>().addPass(createEliminateBarriers());
  if (opts.pipelineCopies) {
    PipelineCopiesOptions pipelineOptions;
    pipelineOptions.chip = opts.target.chip;
    pm.nest<gpu::GPUModuleOp>().addPass(createPipelineCopies(pipelineOptions));
  }
}

void kvarn::buildKvtToNVVMPipeline(OpPassManager &pm,
                                   const CompileOptions &opts) {
  addKvtToKVGPUPasses(pm, opts);
  addKVGPUToNVVMPasses(pm);
}

namespace {
std::string printOp(Operation *op) {
  std::string s;
  llvm::raw_string_ostream os(s);
  op->print(os);
  return s;
}

kvarn::Error runPasses(ModuleOp module,
                       function_ref<void(OpPassManager &)> populate,
                       const CompileOptions &opts, dsl::ErrorCollector &diags,
                       llvm::StringRef stage) {
  PassManager runner(module.getContext());
  populate(runner);
  if (opts.printIRAfterAll) {
    module.getContext()->disableMultithreading();
    runner.enableIRPrinting();
  }
  if (opts.timing)
    runner.enableTiming();
  if (!opts.crashReproducer.empty())
    runner.enableCrashReproducerGeneration(opts.crashReproducer);
  if (failed(runner.run(module)))
    return makeError(KVARN_ERROR_COMPILE, "compiling to {0} failed: {1}", stage,
                     diags.text().empty() ? "(no diagnostic)" : diags.text());
  if (opts.onStage)
    opts.onStage(stage, printOp(module));
  return kvarn::Error::success();
}
std::string debugString(Attribute a) {
  std::string text;
  llvm::raw_string_ostream os(text);
  a.print(os);
  return text;
}

/// The ABI of a kvt kernel: its parameters (names from `kvt.name`) and its
/// `kvt.grid`.
kvarn::Expected<KernelAbi> kernelAbi(func::FuncOp func) {
  auto scalarName = [](Type t) -> std::string {
    if (t.isInteger(32))
      return "i32";
    if (t.isInteger(64))
      return "i64";
    if (t.isInteger(8))
      return "i8";
    if (t.isF32())
      return "f32";
    if (t.isF16())
      return "f16";
    if (t.isBF16())
      return "bf16";
    return "";
  };
  KernelAbi abi;
  for (unsigned i = 0; i < func.getNumArguments(); ++i) {
    KernelAbi::Param p;
    if (auto name = func.getArgAttrOfType<StringAttr>(i, "kvt.name"))
      p.name = name.str();
    else
      p.name = "arg" + std::to_string(i);
    Type t = func.getArgumentTypes()[i];
    if (auto ptr = dyn_cast<kvt::PointerType>(t))
      p.type = "*" + scalarName(ptr.getPointeeType());
    else
      p.type = scalarName(t);
    if (!p.passed())
      return makeError(KVARN_ERROR_COMPILE,
                       "kernel '{0}': parameter '{1}' has no ABI type",
                       func.getName(), p.name);
    abi.params.push_back(std::move(p));
  }
  auto grid = func->getAttrOfType<ArrayAttr>("kvt.grid");
  for (Attribute extent : grid ? grid.getValue() : ArrayRef<Attribute>()) {
    if (auto c = dyn_cast<IntegerAttr>(extent)) {
      abi.grid.push_back(-1 - int(c.getInt()));
      continue;
    }
    auto name = dyn_cast<StringAttr>(extent);
    auto at = llvm::find_if(abi.params, [&](const KernelAbi::Param &p) {
      return name && p.name == name.strref();
    });
    if (at == abi.params.end() || !at->isInteger())
      return makeError(KVARN_ERROR_COMPILE,
                       "kernel '{0}': grid extent {1} is not an integer "
                       "parameter",
                       func.getName(), debugString(extent));
    abi.grid.push_back(int(at - abi.params.begin()));
  }
  while (abi.grid.size() < 3)
    abi.grid.push_back(-2); // 1
  return abi;
}
} // namespace

kvarn::Expected<CompiledModule>
kvarn::compileToPTX(ModuleOp module, const CompileOptions &opts) {
  Target target = opts.target;
  if (kvarn::Error err = validateTarget(target))
    return std::move(err);
  MLIRContext *ctx = module.getContext();
  // The lowering needs every dialect's ConvertToLLVM interface and the
  // translations, whatever the caller's context was created with.
  DialectRegistry registry;
  registerKvarnDialects(registry);
  ctx->appendDialectRegistry(registry);
  ctx->loadAllAvailableDialects();
  dsl::ErrorCollector diags(ctx);
  if (opts.onStage)
    opts.onStage("kvt", printOp(module));
  // The kernels' ABI, from the kvt signatures before they are lowered.
  llvm::StringMap<KernelAbi> abis;
  for (auto func : module.getOps<func::FuncOp>())
    if (func->hasAttr(kvt::KVTDialect::getKernelAttrName())) {
      kvarn::Expected<KernelAbi> abi = kernelAbi(func);
      if (!abi)
        return abi.takeError();
      abis[func.getName()] = std::move(*abi);
    }

  // kvt -> kvgpu, then kvgpu -> NVVM, so each stage can be dumped.
  if (kvarn::Error err = runPasses(
          module, [&](OpPassManager &pm) { addKvtToKVGPUPasses(pm, opts); },
          opts, diags, "kvgpu"))
    return std::move(err);

  CompiledModule result;
  module.walk([&](gpu::GPUFuncOp func) {
    if (!func.isKernel())
      return;
    CompiledKernel k;
    k.name = func.getName().str();
    k.abi = abis.lookup(k.name);
    if (auto w = func->getAttrOfType<IntegerAttr>(kvgpu::kNumWarpsAttrName))
      k.numWarps = int(w.getInt());
    if (auto p =
            func->getAttrOfType<IntegerAttr>(kvgpu::kProgramsPerCtaAttrName))
      k.programsPerCta = int(p.getInt());
    if (auto c = func->getAttrOfType<IntegerAttr>(
            NVVM::NVVMDialect::getMinctasmAttrName()))
      k.ctasPerSM = int(c.getInt());
    if (auto s = func->getAttrOfType<IntegerAttr>(kvgpu::kSharedBytesAttrName))
      k.sharedBytes = s.getInt();
    k.launchPdl = func->hasAttr(kvgpu::kLaunchPdlAttrName);
    k.numArgs = int(func.getNumArguments());
    result.kernels.push_back(k);
  });

  if (kvarn::Error err = runPasses(
          module, [&](OpPassManager &pm) { addKVGPUToNVVMPasses(pm); }, opts,
          diags, "nvvm"))
    return std::move(err);

  // LLVM's NVPTX backend, in process, to PTX.
  auto nvvmTarget = NVVM::NVVMTargetAttr::get(
      ctx, /*optLevel=*/3, "nvptx64-nvidia-cuda", target.chip,
      target.features());
  module.walk([&](gpu::GPUModuleOp gpuModule) {
    gpuModule.setTargetsAttr(ArrayAttr::get(ctx, {nvvmTarget}));
  });
  // kvarn's own attributes were read above; LLVM IR has no use for them.
  module.walk([&](LLVM::LLVMFuncOp func) {
    for (NamedAttribute attr : llvm::to_vector(func->getDiscardableAttrs()))
      if (attr.getName().strref().starts_with("kvt.") ||
          attr.getName().strref().starts_with("kvgpu."))
        func->removeDiscardableAttr(attr.getName());
  });
  // The LLVM IR handed to the NVPTX backend (before its optimizations).
  std::string llvmIR, ptx;
  module.walk([&](gpu::GPUModuleOp gpuModule) {
    llvm::LLVMContext llvmContext;
    std::unique_ptr<llvm::Module> m =
        translateModuleToLLVMIR(gpuModule, llvmContext, "kvarn_kernels");
    if (m) {
      llvm::raw_string_ostream os(llvmIR);
      m->print(os, nullptr);
    }
  });
  auto capturePTX = [&](llvm::StringRef isa) { ptx = isa.str(); };
  gpu::TargetOptions targetOptions(
      /*toolkitPath=*/"", /*librariesToLink=*/{}, /*cmdOptions=*/"",
      /*elfSection=*/"", gpu::CompilationTarget::Assembly,
      /*getSymbolTableCallback=*/{}, /*initialLlvmIRCallback=*/{},
      /*linkedLlvmIRCallback=*/{}, /*optimizedLlvmIRCallback=*/{}, capturePTX);
  if (failed(gpu::transformGpuModulesToBinaries(module, nullptr,
                                                targetOptions)))
    return makeError(KVARN_ERROR_COMPILE,
                     "LLVM NVPTX code generation failed: "
                     "{0}",
                     diags.text().empty() ? "(no diagnostic)" : diags.text());
  if (ptx.empty())
    return makeError(KVARN_ERROR_COMPILE, "LLVM produced no PTX");
  result.llvmIR = std::move(llvmIR);
  result.ptx = std::move(ptx);
  if (opts.onStage) {
    opts.onStage("llir", result.llvmIR);
    opts.onStage("ptx", result.ptx);
  }
  return result;
}
