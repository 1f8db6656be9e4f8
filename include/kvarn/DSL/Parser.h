//===- Parser.h - recursive-descent parser of .kvt files --------*- C++ -*-===//
//
// The grammar is in docs/dsl.md. The parser stops at the first error, which
// it reports with its location; it never crashes, and nesting (blocks,
// parentheses, operator chains) is bounded so that no input exhausts the
// stack of the parser, the builder or the tree's destructor.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_DSL_PARSER_H
#define KVARN_DSL_PARSER_H

#include "kvarn/DSL/AST.h"

#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/Twine.h"

namespace kvarn::dsl {

/// Receives the one error of a failed parse.
using ErrorReporter =
    llvm::function_ref<void(llvm::SMLoc, const llvm::Twine &)>;

/// The deepest nesting of blocks and expressions the parser accepts.
constexpr int kMaxNestingDepth = 100;

/// Parses one .kvt buffer; null after reporting an error.
std::unique_ptr<ast::Module> parseModule(llvm::StringRef buffer,
                                         ErrorReporter report);

} // namespace kvarn::dsl

#endif // KVARN_DSL_PARSER_H
