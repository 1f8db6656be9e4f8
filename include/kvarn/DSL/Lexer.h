//===- Lexer.h - tokens of the .kvt kernel language -------------*- C++ -*-===//
//
// Splits a .kvt buffer into tokens. Never fails: bad input becomes an Error
// token whose text says what was wrong, and the lexer always reaches Eof.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_DSL_LEXER_H
#define KVARN_DSL_LEXER_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/SMLoc.h"

#include <cstdint>
#include <string>

namespace kvarn::dsl {

enum class TokenKind {
  Eof,
  Error,
  Identifier,
  Integer,
  Float,
  // Keywords.
  KwConst,
  KwElse,
  KwFn,
  KwFor,
  KwGrid,
  KwIf,
  KwImport,
  KwIn,
  KwKernel,
  KwLet,
  KwReturn,
  // Punctuation and operators.
  LParen,
  RParen,
  LBrace,
  RBrace,
  LBracket,
  RBracket,
  Comma,
  Semicolon,
  Colon,
  DotDot,
  Assign,
  Plus,
  Minus,
  Star,
  Slash,
  Percent,
  Bang,
  AmpAmp,
  PipePipe,
  EqEq,
  NotEq,
  Less,
  LessEq,
  Greater,
  GreaterEq,
};

/// A readable name for diagnostics: "identifier", "'('", "'kernel'".
llvm::StringRef spell(TokenKind kind);

struct Token {
  TokenKind kind = TokenKind::Eof;
  llvm::SMLoc loc;
  llvm::StringRef text; // the source text; for Error, the message
  int64_t intValue = 0;
  double floatValue = 0;
  bool is(TokenKind k) const { return kind == k; }
};

class Lexer {
public:
  explicit Lexer(llvm::StringRef buffer)
      : start(buffer.begin()), cur(buffer.begin()), end(buffer.end()) {}

  Token next();

private:
  Token make(TokenKind kind, const char *from) const;
  Token error(const char *at, const char *message);
  Token lexNumber(const char *from);
  Token lexIdentifier(const char *from);
  void skipSpaceAndComments();

  const char *start;
  const char *cur;
  const char *end;
  std::string errorMessage; // backing store of the last Error token's text
};

} // namespace kvarn::dsl

#endif // KVARN_DSL_LEXER_H
