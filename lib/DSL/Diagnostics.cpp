//===- Diagnostics.cpp - one-line diagnostics for tools -------------------===//

#include "kvarn/DSL/Diagnostics.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Location.h"

#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;

std::string kvarn::dsl::formatLocation(Location loc) {
  return llvm::TypeSwitch<Location, std::string>(loc)
      .Case([](FileLineColLoc l) -> std::string {
        return (l.getFilename().getValue() + ":" + llvm::Twine(l.getLine()) +
                ":" + llvm::Twine(l.getColumn()))
            .str();
      })
      .Case([](CallSiteLoc l) -> std::string {
        return formatLocation(l.getCallee()) + " (inlined at " +
               formatLocation(l.getCaller()) + ")";
      })
      .Case([](NameLoc l) -> std::string { return formatLocation(l.getChildLoc()); })
      .Case([](FusedLoc l) -> std::string {
        return l.getLocations().empty() ? std::string("<unknown>")
                                        : formatLocation(l.getLocations()[0]);
      })
      .Default([](Location) { return std::string("<unknown>"); });
}

static llvm::StringRef severityName(DiagnosticSeverity s) {
  switch (s) {
  case DiagnosticSeverity::Error: return "error";
  case DiagnosticSeverity::Warning: return "warning";
  case DiagnosticSeverity::Note: return "note";
  case DiagnosticSeverity::Remark: return "remark";
  }
  return "error";
}

std::string kvarn::dsl::formatDiagnostic(const Diagnostic &diag) {
  std::string line = formatLocation(diag.getLocation()) + ": " +
                     severityName(diag.getSeverity()).str() + ": " + diag.str();
  for (const Diagnostic &note : diag.getNotes())
    line += "; note: " + formatLocation(note.getLocation()) + ": " + note.str();
  // One line, whatever the message holds.
  for (char &c : line)
    if (c == '\n')
      c = ' ';
  return line;
}

kvarn::dsl::OneLineDiagnosticHandler::OneLineDiagnosticHandler(
    MLIRContext *context, llvm::raw_ostream &os)
    : ScopedDiagnosticHandler(context) {
  setHandler([&os](Diagnostic &diag) {
    os << formatDiagnostic(diag) << "\n";
    return success();
  });
}

kvarn::dsl::ErrorCollector::ErrorCollector(MLIRContext *context)
    : ScopedDiagnosticHandler(context) {
  setHandler([this](Diagnostic &diag) {
    if (diag.getSeverity() == DiagnosticSeverity::Error)
      errors += (errors.empty() ? "" : "\n") + formatDiagnostic(diag);
    return success();
  });
}
