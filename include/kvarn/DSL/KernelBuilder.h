//===- KernelBuilder.h - .kvt source to kvt IR ------------------*- C++ -*-===//
//
// The front end's entry point: parse a .kvt file (and the library modules it
// imports), specialize it, and build each kernel as a `func.func` carrying
// `kvt.kernel`, `kvt.spec` and `kvt.grid`, with `kvt.name` on each argument.
// Every error is an MLIR diagnostic at the file:line:col it is about.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_DSL_KERNELBUILDER_H
#define KVARN_DSL_KERNELBUILDER_H

#include "kvarn/DSL/Specialization.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include <functional>
#include <optional>

namespace llvm {
class SourceMgr;
} // namespace llvm

namespace kvarn::dsl {

/// The source of a module named by `import`.
struct ModuleSource {
  std::string bufferName; // shown in locations, e.g. "paged.kvt"
  llvm::StringRef text;   // must outlive the build
};

/// Finds the module `import name;` refers to, or nullopt.
using ImportResolver =
    std::function<std::optional<ModuleSource>(llvm::StringRef name)>;

struct BuildOptions {
  /// Defaults to the kernel library compiled into the binary.
  ImportResolver resolveImport;
};

/// Names of the attributes the builder puts on kernels and their arguments.
constexpr llvm::StringLiteral kGridAttrName = "kvt.grid";
constexpr llvm::StringLiteral kArgNameAttrName = "kvt.name";

/// Builds every kernel of the main buffer of `sourceMgr` for `spec`. Returns
/// null after emitting diagnostics through `context` (attach a
/// SourceMgrDiagnosticHandler to see them with source lines). Imported
/// modules are added to `sourceMgr`.
mlir::OwningOpRef<mlir::ModuleOp>
buildKernels(llvm::SourceMgr &sourceMgr, const Specialization &spec,
             mlir::MLIRContext *context, const BuildOptions &options = {});

/// Builds the library kernel `name` (lib/kernels/<name>.kvt, embedded) for
/// `spec`; null after emitting diagnostics (including for an unknown name).
mlir::OwningOpRef<mlir::ModuleOp>
buildLibraryKernel(llvm::StringRef name, const Specialization &spec,
                   mlir::MLIRContext *context);

/// Loads the dialects kvt IR uses (kvt, func, arith, scf) into `context`.
void loadKvtDialects(mlir::MLIRContext *context);

} // namespace kvarn::dsl

#endif // KVARN_DSL_KERNELBUILDER_H
