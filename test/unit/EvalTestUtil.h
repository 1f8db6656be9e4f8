//===- EvalTestUtil.h - build kvt kernels for evaluator tests ---*- C++ -*-===//
#ifndef KVARN_TEST_EVALTESTUTIL_H
#define KVARN_TEST_EVALTESTUTIL_H

#include "kvarn/DSL/Diagnostics.h"
#include "kvarn/DSL/KernelBuilder.h"
#include "kvarn/DSL/KernelLibrary.h"
#include "kvarn/Eval/KvtInterpreter.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"

#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace kvarn::test {

/// A kernel built for one specialization, with the context that owns it.
struct BuiltKernel {
  std::unique_ptr<mlir::MLIRContext> context;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  mlir::func::FuncOp func;
  std::string diagnostics; // one line per diagnostic, if the build failed

  explicit operator bool() const { return bool(func); }

  kvarn::Expected<eval::RunStats> run(llvm::ArrayRef<eval::KernelArg> args) {
    return eval::runKernel(func, args);
  }
};

/// Builds `kernel` from `source` (a .kvt text named `fileName`).
inline BuiltKernel buildFromSource(llvm::StringRef source,
                                   llvm::StringRef fileName,
                                   llvm::StringRef kernel,
                                   const dsl::Specialization &spec) {
  BuiltKernel k;
  k.context = std::make_unique<mlir::MLIRContext>();
  k.context->printOpOnDiagnostic(false);
  dsl::loadKvtDialects(k.context.get());
  llvm::raw_string_ostream os(k.diagnostics);
  dsl::OneLineDiagnosticHandler handler(k.context.get(), os);
  llvm::SourceMgr sm;
  sm.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(source, fileName),
                        llvm::SMLoc());
  k.module = dsl::buildKernels(sm, spec, k.context.get());
  if (k.module)
    k.func = k.module->lookupSymbol<mlir::func::FuncOp>(kernel);
  return k;
}

/// Builds library kernel `name` for `spec`; fails the test when that does
/// not work.
inline BuiltKernel buildLibrary(llvm::StringRef name,
                                const dsl::Specialization &spec) {
  const dsl::LibraryFile *file = dsl::findLibraryFile(name);
  EXPECT_NE(file, nullptr) << name.str();
  if (!file)
    return BuiltKernel();
  BuiltKernel k = buildFromSource(file->text, file->fileName, name, spec);
  EXPECT_TRUE(bool(k)) << name.str() << ": " << k.diagnostics;
  return k;
}

/// Builds library kernel `name` for (preset, head_dim, gqa, dtype).
inline BuiltKernel buildLibrary(llvm::StringRef name, llvm::StringRef preset,
                                int headDim, int gqa = 1,
                                DType dtype = DType::F16) {
  dsl::Specialization spec;
  spec.preset = preset.str();
  spec.headDim = headDim;
  spec.gqa = gqa;
  spec.dtype = dtype;
  return buildLibrary(name, spec);
}

} // namespace kvarn::test

#endif // KVARN_TEST_EVALTESTUTIL_H
