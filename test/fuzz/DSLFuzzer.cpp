//===- DSLFuzzer.cpp - libFuzzer target for the .kvt front end ------------===//
//
// Each input is a .kvt file: lexed, parsed and built for one
// specialization. Any input may fail with diagnostics; none may crash, hang
// or leak. When an input builds, its IR must verify and print in a form
// that parses back (what kvarn-opt will read). Build with
// -DKVARN_BUILD_FUZZERS=ON and clang; docs/dsl.md has the run recipe. CI
// runs it for a fixed budget through StandaloneFuzzMain.cpp (dsl-fuzz).
//
//===----------------------------------------------------------------------===//

#include "kvarn/DSL/KernelBuilder.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"

#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdio>
#include <cstdlib>

// LLVM's BumpPtrAllocator poisons its slabs when compiled with ASan. Our
// instrumented objects and the uninstrumented LLVM/MLIR archives share its
// inline functions, so a slab poisoned by one and handed out by the other
// looks like a use-after-poison. Manual poisoning is off; ASan still checks
// every heap, stack and global access of the instrumented code.
extern "C" const char *__asan_default_options() {
  return "allow_user_poisoning=0";
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mlir::MLIRContext context;
  kvarn::dsl::loadKvtDialects(&context);
  context.printOpOnDiagnostic(false);
  // Diagnostics are the expected outcome; swallow them.
  mlir::ScopedDiagnosticHandler quiet(&context, [](mlir::Diagnostic &) {
    return mlir::success();
  });

  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(
          llvm::StringRef(reinterpret_cast<const char *>(data), size),
          "fuzz.kvt"),
      llvm::SMLoc());
  kvarn::dsl::Specialization spec;
  spec.preset = size % 2 ? "kvarn_k4v2_g64" : "kvarn_k4v2_g128";
  spec.headDim = size % 3 ? 64 : 96;
  spec.gqa = 1 + int(size % 4);
  if (size % 5 == 0) { // an MLA specialization: R, E, HEADS, latent fields
    spec.preset = "kvarn_mla_k4_g128";
    spec.headDim = 128;
    spec.ropeDim = 32;
  }
  mlir::OwningOpRef<mlir::ModuleOp> module =
      kvarn::dsl::buildKernels(sourceMgr, spec, &context);
  if (!module)
    return 0;

  // What the front end accepts, the rest of the compiler must be able to
  // read back.
  if (mlir::failed(mlir::verify(*module))) {
    std::fprintf(stderr, "built IR does not verify\n");
    std::abort();
  }
  std::string text;
  llvm::raw_string_ostream os(text);
  module->print(os);
  mlir::OwningOpRef<mlir::ModuleOp> reparsed =
      mlir::parseSourceString<mlir::ModuleOp>(text, &context);
  if (!reparsed) {
    std::fprintf(stderr, "printed IR does not parse back:\n%s\n", text.c_str());
    std::abort();
  }
  return 0;
}
