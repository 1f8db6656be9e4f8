//===- Diagnostics.h - one-line diagnostics for tools -----------*- C++ -*-===//
//
// Tools print every DSL error as one line, `file:line:col: error: message`,
// with notes appended on the same line; a location inside an inlined fn
// names the call site too.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_DSL_DIAGNOSTICS_H
#define KVARN_DSL_DIAGNOSTICS_H

#include "mlir/IR/Diagnostics.h"

#include <string>

namespace kvarn::dsl {

/// "file:line:col", or "file:line:col (inlined at file:line:col)".
std::string formatLocation(mlir::Location loc);

/// "LOC: error: MESSAGE; note: LOC: NOTE".
std::string formatDiagnostic(const mlir::Diagnostic &diag);

/// While alive, prints each diagnostic of `context` as one line to `os`.
class OneLineDiagnosticHandler : public mlir::ScopedDiagnosticHandler {
public:
  OneLineDiagnosticHandler(mlir::MLIRContext *context, llvm::raw_ostream &os);
};

/// While alive, collects the errors of `context` (warnings and remarks are
/// dropped) as formatDiagnostic lines, one per error, for a compile error's
/// message: the one collector of the front end and the pass pipeline.
class ErrorCollector : public mlir::ScopedDiagnosticHandler {
public:
  explicit ErrorCollector(mlir::MLIRContext *context);
  /// The errors so far, joined by newlines; empty if none.
  const std::string &text() const { return errors; }

private:
  std::string errors;
};

} // namespace kvarn::dsl

#endif // KVARN_DSL_DIAGNOSTICS_H
