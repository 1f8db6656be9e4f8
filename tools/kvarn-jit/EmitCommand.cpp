//===- EmitCommand.cpp - build kernels for a shape and emit them ----------===//
//
// kvarn-jit's top-level mode: build the kernels for one preset and shape.
// By default they go through the kernel cache (or into --out DIR laid out
// the same way); with --emit, one stage of each is printed or written: the
// specialized kvt IR (kvarn-opt parses it), the kvgpu or NVVM-dialect IR,
// LLVM IR, PTX, or a cubin assembled by ptxas.
//
//===----------------------------------------------------------------------===//

#include "CLauncher.h"
#include "Commands.h"

#include "kvarn/Codegen/KernelCompiler.h"
#include "kvarn/Codegen/LaunchPolicy.h"
#include "kvarn/Codegen/Pipeline.h"
#include "kvarn/Runtime/KernelCache.h"
#include "kvarn/Runtime/PtxAssembler.h"

#include "kvarn/DSL/Diagnostics.h"
#include "kvarn/DSL/KernelBuilder.h"
#include "kvarn/DSL/KernelLibrary.h"
#include "kvarn/Layout/Preset.h"
#include "kvarn/Layout/RecordLayout.h"
#include "kvarn/Support/FileIO.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/raw_ostream.h"

using namespace kvarn;
using namespace kvarn::jit;

namespace {

int listPresets() {
  for (const Preset &p : allPresets())
    llvm::outs() << llvm::formatv("{0,-16} key bits {1}, value bits {2}, "
                                  "group {3}, Sinkhorn iterations {4}{5}\n",
                                  p.name, p.keyBits, p.valueBits, p.group,
                                  p.sinkhornIters,
                                  &p == &defaultPreset() ? " (default)" : "");
  for (const MlaPreset &p : allMlaPresets())
    llvm::outs() << llvm::formatv("{0,-16} MLA: latent bits {1}, group {2}, "
                                  "Sinkhorn iterations {3}; --head-dim is "
                                  "kv_lora_rank, with --rope-dim\n",
                                  p.name, p.bits, p.group, p.sinkhornIters);
  return kExitOk;
}

int listKernels() {
  for (const dsl::LibraryFile &f : dsl::libraryFiles())
    if (f.isKernel)
      llvm::outs() << f.name << "\n";
  return kExitOk;
}

/// Builds `fileName`'s `text` into `out`, keeping the kernels in `wanted`
/// (all when empty). Diagnostics go to stderr, one line each.
bool buildSource(llvm::StringRef fileName, std::unique_ptr<llvm::MemoryBuffer> text,
                 const dsl::Specialization &spec,
                 const std::vector<std::string> &wanted, mlir::ModuleOp out,
                 std::vector<std::string> &built) {
  mlir::MLIRContext *context = out.getContext();
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(std::move(text), llvm::SMLoc());
  mlir::OwningOpRef<mlir::ModuleOp> module =
      dsl::buildKernels(sourceMgr, spec, context);
  if (!module)
    return false;
  std::vector<std::string> defined;
  for (auto func : llvm::make_early_inc_range(module->getOps<mlir::func::FuncOp>())) {
    defined.push_back(func.getName().str());
    if (!wanted.empty() && !llvm::is_contained(wanted, func.getName()))
      continue;
    built.push_back(func.getName().str());
    func->moveBefore(out.getBody(), out.getBody()->end());
  }
  for (const std::string &name : wanted)
    if (!llvm::is_contained(defined, name) && !llvm::is_contained(built, name)) {
      failure("kernel '" + name + "' is not defined in " + fileName +
              " (it defines: " + llvm::join(defined, ", ") + ")");
      return false;
    }
  return true;
}

int writeFile(llvm::StringRef path, llvm::function_ref<void(llvm::raw_ostream &)> write) {
  std::error_code ec;
  llvm::ToolOutputFile file(path, ec, llvm::sys::fs::OF_Text);
  if (ec)
    return failure("cannot write '" + path + "': " + ec.message());
  write(file.os());
  file.os().flush();
  if (file.os().has_error())
    return failure("cannot write '" + path + "'");
  file.keep();
  return kExitOk;
}

/// Writes `text` to `dir/name` or, without --out, prints it.
int emitText(const ParsedOptions &opts, llvm::StringRef name,
             llvm::StringRef text) {
  if (!opts.has("out")) {
    llvm::outs() << text;
    if (!text.ends_with("\n"))
      llvm::outs() << "\n";
    return kExitOk;
  }
  std::string dir = opts.get("out");
  if (std::error_code ec = llvm::sys::fs::create_directories(dir))
    return failure("cannot create '" + dir + "': " + ec.message());
  llvm::SmallString<256> path(dir);
  llvm::sys::path::append(path, name);
  return writeFile(path, [&](llvm::raw_ostream &os) { os << text; });
}

std::string printModule(mlir::Operation *op) {
  std::string s;
  llvm::raw_string_ostream os(s);
  op->print(os);
  os << "\n";
  return s;
}

int emitKvt(const ParsedOptions &opts, const dsl::Specialization &spec,
            mlir::MLIRContext &context, mlir::ModuleOp out) {
  if (!opts.has("out"))
    return emitText(opts, "", printModule(out));
  for (auto func : out.getOps<mlir::func::FuncOp>()) {
    mlir::OwningOpRef<mlir::ModuleOp> one =
        mlir::ModuleOp::create(mlir::UnknownLoc::get(&context));
    one->getBody()->push_back(func.clone());
    std::string name = (func.getName() + ".kvt.mlir").str();
    if (int rc = emitText(opts, name, printModule(*one)))
      return rc;
    llvm::outs() << llvm::formatv("{0}: {1} -> {2}/{3}\n", func.getName(),
                                  spec.describe(), opts.get("out"), name);
  }
  return kExitOk;
}

/// Compiles each kernel of `out` on its own and emits `stage`.
int emitCompiled(const ParsedOptions &opts, const dsl::Specialization &spec,
                 const Target &target, llvm::StringRef stage,
                 mlir::ModuleOp out, const KernelSources &sources) {
  static const llvm::StringMap<std::string> kExtension = {
      {"kvgpu", "kvgpu.mlir"}, {"mlir", "nvvm.mlir"}, {"llvm", "llir"},
      {"ptx", "ptx"},          {"cubin", "cubin"}};
  for (auto func : out.getOps<mlir::func::FuncOp>()) {
    mlir::OwningOpRef<mlir::ModuleOp> one =
        mlir::ModuleOp::create(mlir::UnknownLoc::get(out.getContext()));
    one->getBody()->push_back(func.clone());
    std::string name = func.getName().str();
    std::string text;
    std::string resources;
    CompileOptions options;
    options.target = target;
    // --emit names -> the pipeline's stage names (CompileOptions::onStage).
    llvm::StringRef wantedStage = stage == "mlir"         ? "nvvm"
                                  : stage == "llvm"       ? "llir"
                                  : stage == "c-launcher" ? "ptx"
                                                          : stage;
    applyReportingOptions(opts, name, options);
    StageDumper dumper(opts, name);
    if (auto it = sources.find(name); it != sources.end())
      dumper.source(it->second.text);
    options.onStage = [&](llvm::StringRef s, llvm::StringRef ir) {
      dumper.stage(s, ir);
      if (s == wantedStage || (wantedStage == "cubin" && s == "ptx"))
        text = ir.str();
    };
    kvarn::Expected<CompiledModule> compiled = compileToPTX(*one, options);
    if (!compiled)
      return compileFailure(name, options, compiled.takeError());
    if (stage == "c-launcher") {
      // The cubin where ptxas is at hand, else the PTX (the driver JITs it).
      const CompiledKernel &k = compiled->kernels.front();
      bool isCubin = false;
      std::string image = compiled->ptx;
      if (kvarn::Expected<std::string> found = cuda::findPtxas()) {
        cuda::PtxasOptions ptxas;
        ptxas.arch = target.chip;
        ptxas.ptxasPath = *found;
        kvarn::Expected<cuda::CubinImage> cubin =
            cuda::assembleWithPtxas(compiled->ptx, ptxas);
        if (!cubin)
          return failure(cubin.takeError());
        image = std::move(cubin->bytes);
        isCubin = true;
      } else {
        kvarn::consumeError(found.takeError());
      }
      kvarn::Expected<CLauncher> launcher = makeCLauncher(
          k, image, isCubin, spec.describe() + ", " + target.chip);
      if (!launcher)
        return failure(launcher.takeError());
      for (auto [file, text] : {std::pair{name + ".h", &launcher->header},
                                std::pair{name + ".c", &launcher->source}})
        if (int rc = emitText(opts, file, *text))
          return rc;
      if (opts.has("out"))
        llvm::outs() << llvm::formatv(
            "{0}: {1} {2} -> {3}/{0}.h, {0}.c ({4} embedded)\n", name,
            spec.describe(), target.chip, opts.get("out"),
            isCubin ? "cubin" : "PTX");
      continue;
    }
    if (stage == "cubin") {
      cuda::PtxasOptions ptxas;
      ptxas.arch = target.chip;
      kvarn::Expected<cuda::CubinImage> cubin =
          cuda::assembleWithPtxas(compiled->ptx, ptxas);
      if (!cubin)
        return failure(cubin.takeError());
      text = std::move(cubin->bytes);
      dumper.sass(text);
      for (const cuda::KernelResources &r : cubin->kernels)
        resources = llvm::formatv(", {0} registers, {1} bytes stack, {2} "
                                  "bytes spilled",
                                  r.registers, r.stackFrameBytes,
                                  r.spillStoreBytes + r.spillLoadBytes)
                        .str();
    }
    std::string file = name + "." + kExtension.lookup(stage);
    if (int rc = emitText(opts, file, text))
      return rc;
    if (!dumper.problem().empty())
      return failure(dumper.problem());
    if (opts.has("out")) {
      const CompiledKernel &k = compiled->kernels.front();
      llvm::outs() << llvm::formatv(
          "{0}: {1} {2} -> {3}/{4} ({5} warps, {6} bytes "
          "of shared memory{7})\n",
          name, spec.describe(), target.chip,
          opts.get("out"), file, k.numWarps, k.sharedBytes, resources);
    }
  }
  return kExitOk;
}

int runEmit(const ParsedOptions &opts) {
  if (opts.has("list-presets"))
    return listPresets();
  if (opts.has("list-kernels"))
    return listKernels();

  dsl::Specialization spec;
  spec.preset = opts.get("preset", defaultPreset().name);
  std::optional<int64_t> headDim = opts.getInt("head-dim", 128);
  std::optional<int64_t> gqa = opts.getInt("gqa", 1);
  std::optional<int64_t> ropeDim = opts.getInt("rope-dim", 0);
  std::optional<int64_t> threads = opts.getInt("threads", 0);
  std::optional<int64_t> warps = opts.getInt("num-warps", 0);
  std::optional<int64_t> minCtas = opts.getInt("min-ctas-per-sm", 0);
  if (!headDim || !gqa || !ropeDim || !threads || !warps || !minCtas)
    return kExitUsage;
  if (*warps < 0 || *warps > kMaxWarpsPerCta)
    return usageError(llvm::formatv("--num-warps takes 1 to {0} (0: the "
                                    "compiler's choice), not {1}",
                                    kMaxWarpsPerCta, *warps)
                          .str());
  if (*minCtas < 0 || *minCtas > kMaxCtasPerSM)
    return usageError(llvm::formatv("--min-ctas-per-sm takes 1 to {0} (0: the "
                                    "compiler's choice, 1)",
                                    kMaxCtasPerSM)
                          .str());
  if (*headDim < INT32_MIN || *headDim > INT32_MAX || *gqa < INT32_MIN ||
      *gqa > INT32_MAX || *ropeDim < INT32_MIN || *ropeDim > INT32_MAX)
    return usageError("--head-dim, --gqa and --rope-dim take 32-bit integers");
  if (*threads < 0 || *threads > 1024)
    return usageError("--threads takes 0 (one per core) to 1024");
  spec.headDim = int(*headDim);
  spec.gqa = int(*gqa);
  spec.ropeDim = int(*ropeDim);
  kvarn::Expected<DType> dtype = parseDType(opts.get("dtype", "f16"));
  if (!dtype)
    return usageError(kvarn::toString(dtype.takeError()));
  spec.dtype = *dtype;
  if (kvarn::Error err = spec.check())
    return failure(std::move(err));

  // No --emit: every kernel through the kernel cache (or into --out).
  std::string emit = opts.get("emit", "");
  static const char *const kStages[] = {"kvt", "kvgpu", "mlir",      "llvm",
                                        "ptx", "cubin", "c-launcher"};
  if (!emit.empty() && !llvm::is_contained(kStages, emit))
    return usageError("unknown --emit stage '" + emit +
                      "' (stages: kvt, kvgpu, mlir, llvm, ptx, cubin, "
                      "c-launcher)");
  Target target;
  target.chip = opts.has("arch") ? opts.get("arch") : localArch();
  if (kvarn::Error err = validateTarget(target))
    return failure(std::move(err));
  // Built here too (--emit kvt, user sources): as compileKernel builds it.
  CompileOptions pipeline;
  pipeline.target = target;
  pipeline.pipelineCopies = opts.has("pipeline-copies");
  pipeline.minCtasPerSM = int(*minCtas);
  spec = specializationFor(spec, pipeline);
  if (opts.has("dump-ir"))
    if (std::error_code ec =
            llvm::sys::fs::create_directories(opts.get("dump-ir")))
      return failure("cannot create '" + opts.get("dump-ir") +
                     "': " + ec.message());

  std::vector<std::string> wanted;
  if (opts.has("kernels")) {
    std::string list = opts.get("kernels");
    llvm::SmallVector<llvm::StringRef> names;
    llvm::StringRef(list).split(names, ',', -1, false);
    for (llvm::StringRef n : names)
      wanted.push_back(n.trim().str());
    if (wanted.empty())
      return usageError("--kernels needs kernel names");
  }

  mlir::MLIRContext context;
  context.printOpOnDiagnostic(false); // the message and location say enough
  dsl::loadKvtDialects(&context);
  dsl::OneLineDiagnosticHandler diagnostics(&context, llvm::errs());
  mlir::OwningOpRef<mlir::ModuleOp> out =
      mlir::ModuleOp::create(mlir::UnknownLoc::get(&context));
  std::vector<std::string> built;
  KernelSources sources; // kernel -> (DSL text, file name, a user's file?)

  if (opts.has("source")) {
    std::string path = opts.get("source");
    // A regular file of bounded size: not a FIFO, /dev/zero or the like;
    // /proc files read whole.
    kvarn::Expected<std::string> text =
        readRegularFile(path, ReadOptions{limits::kSourceFileBytes});
    if (!text)
      return failure(text.takeError());
    if (!buildSource(path, llvm::MemoryBuffer::getMemBufferCopy(*text, path),
                     spec, wanted, *out, built))
      return kExitFailure;
    if (built.empty())
      return failure(path + " defines no kernels");
    for (const std::string &name : built)
      sources[name] = {*text, path, true};
  } else {
    std::vector<std::string> names = wanted;
    if (names.empty())
      names = dsl::libraryKernelNames(dsl::kernelFamily(spec));
    for (const std::string &name : names) {
      kvarn::Expected<const dsl::LibraryFile *> found =
          dsl::findLibraryKernel(name, spec);
      if (!found)
        return usageError(kvarn::toString(found.takeError()));
      const dsl::LibraryFile *file = *found;
      sources[name] = {std::string(file->text), std::string(file->fileName),
                       false};
      if (emit.empty()) { // the cache builds it
        built.push_back(name);
        continue;
      }
      if (!buildSource(file->fileName,
                       llvm::MemoryBuffer::getMemBuffer(file->text, file->fileName,
                                                        false),
                       spec, {name}, *out, built))
        return kExitFailure;
    }
  }

  if (emit.empty())
    return buildThroughCache(opts, spec, target, built, sources,
                             unsigned(*threads));
  if (emit == "kvt")
    return emitKvt(opts, spec, context, *out);
  return emitCompiled(opts, spec, target, emit, *out, sources);
}
} // namespace

Command kvarn::jit::emitCommand() {
  return {"",
          "[--kernels a,b] [--preset P] [--head-dim N] [--gqa N] "
          "[--rope-dim N] [--dtype f16|bf16] [--arch SM] "
          "[--emit STAGE] [--source FILE] [--out DIR] [--json] [--dump-ir DIR] "
          "[--print-ir-after-all] [--timing]",
          "build kernels for one preset and shape: into the kernel cache "
          "($KVARN_CACHE_DIR, default ~/.cache/kvarn) or --out DIR, or, with "
          "--emit, one stage of each",
          {{"kernels", "LIST", "comma-separated kernels (default: all)"},
           {"preset", "NAME", "KVarN preset (default kvarn_k4v2_g128)"},
           {"head-dim", "N",
            "head_dim, a multiple of 16 in [64, 512] "
            "(default 128)"},
           {"gqa", "N",
            "query heads per KV head (default 1); MLA: the query heads "
            "of the one latent, up to 128"},
           {"rope-dim", "N",
            "MLA presets: the rope key's width beside the latent "
            "(a multiple of 8 to 256; --head-dim is kv_lora_rank)"},
           {"dtype", "TYPE",
            "activation dtype of q, new K/V and outputs: f16 "
            "or bf16 (default f16; the pool stays fp16)"},
           {"arch", "SM",
            "target GPU: sm_80, sm_86, sm_89, sm_90, sm_90a, ... "
            "(default: the local GPU's, else sm_90)"},
           {"emit", "STAGE",
            "print (or with --out write) one stage instead: "
            "kvt, kvgpu, mlir (the NVVM dialect), llvm, ptx, "
            "cubin (needs ptxas), c-launcher (<kernel>.h and "
            ".c: the kernel embedded, a C launcher needing "
            "only the CUDA driver, as Triton's AOT compiler "
            "writes them)"},
           {"source", "FILE", "a .kvt file instead of the built-in library"},
           {"out", "DIR",
            "the cache directory to fill (default: the kernel "
            "cache); with --emit, write <kernel>.<stage> files "
            "here instead of printing"},
           {"json", nullptr, "describe what was built as JSON on stdout"},
           {"threads", "N", "compile on N threads (default: one per core)"},
           {"num-warps", "N", "warps per CTA (default: from the largest tile)"},
           {"min-ctas-per-sm", "N",
            "CTAs per SM ptxas budgets registers for "
            "(.minnctapersm; default 1)"},
           {"warp-states", nullptr,
            "hold attention states per warp, merged once "
            "(not yet the default)"},
           {"pipeline-copies", nullptr,
            "copy the next record into shared memory while one is "
            "attended (off by default: docs/benchmarks.md)"},
           {"dump-ir", "DIR",
            "write the IR after every stage to "
            "DIR/<kernel>/NN-<stage>.<ext> (compiles even "
            "on a cache hit)"},
           {"print-ir-after-all", nullptr,
            "print the IR after every pass to "
            "stderr (one thread; compiles even "
            "on a cache hit)"},
           {"timing", nullptr,
            "report pass timing on stderr (one thread; "
            "compiles even on a cache hit)"},
           {"list-presets", nullptr, "list the presets"},
           {"list-kernels", nullptr, "list the library's kernels"}},
          runEmit};
}
