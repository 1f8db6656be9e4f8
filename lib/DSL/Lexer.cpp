//===- Lexer.cpp - tokens of the .kvt kernel language ---------------------===//

#include "kvarn/DSL/Lexer.h"

#include "llvm/ADT/APFloat.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/FormatVariadic.h"

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>

using namespace kvarn::dsl;

llvm::StringRef kvarn::dsl::spell(TokenKind kind) {
  switch (kind) {
  case TokenKind::Eof: return "end of file";
  case TokenKind::Error: return "invalid token";
  case TokenKind::Identifier: return "identifier";
  case TokenKind::Integer: return "integer";
  case TokenKind::Float: return "number";
  case TokenKind::KwConst: return "'const'";
  case TokenKind::KwElse: return "'else'";
  case TokenKind::KwFn: return "'fn'";
  case TokenKind::KwFor: return "'for'";
  case TokenKind::KwGrid: return "'grid'";
  case TokenKind::KwIf: return "'if'";
  case TokenKind::KwImport: return "'import'";
  case TokenKind::KwIn: return "'in'";
  case TokenKind::KwKernel: return "'kernel'";
  case TokenKind::KwLet: return "'let'";
  case TokenKind::KwReturn: return "'return'";
  case TokenKind::LParen: return "'('";
  case TokenKind::RParen: return "')'";
  case TokenKind::LBrace: return "'{'";
  case TokenKind::RBrace: return "'}'";
  case TokenKind::LBracket: return "'['";
  case TokenKind::RBracket: return "']'";
  case TokenKind::Comma: return "','";
  case TokenKind::Semicolon: return "';'";
  case TokenKind::Colon: return "':'";
  case TokenKind::DotDot: return "'..'";
  case TokenKind::Assign: return "'='";
  case TokenKind::Plus: return "'+'";
  case TokenKind::Minus: return "'-'";
  case TokenKind::Star: return "'*'";
  case TokenKind::Slash: return "'/'";
  case TokenKind::Percent: return "'%'";
  case TokenKind::Bang: return "'!'";
  case TokenKind::AmpAmp: return "'&&'";
  case TokenKind::PipePipe: return "'||'";
  case TokenKind::EqEq: return "'=='";
  case TokenKind::NotEq: return "'!='";
  case TokenKind::Less: return "'<'";
  case TokenKind::LessEq: return "'<='";
  case TokenKind::Greater: return "'>'";
  case TokenKind::GreaterEq: return "'>='";
  }
  return "token";
}

static bool isIdentStart(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
static bool isDigit(char c) { return c >= '0' && c <= '9'; }
static bool isIdentChar(char c) { return isIdentStart(c) || isDigit(c); }

Token Lexer::make(TokenKind kind, const char *from) const {
  Token t;
  t.kind = kind;
  t.loc = llvm::SMLoc::getFromPointer(from);
  t.text = llvm::StringRef(from, cur - from);
  return t;
}

Token Lexer::error(const char *at, const char *message) {
  errorMessage = message;
  Token t;
  t.kind = TokenKind::Error;
  t.loc = llvm::SMLoc::getFromPointer(at);
  t.text = errorMessage;
  return t;
}

void Lexer::skipSpaceAndComments() {
  while (cur < end) {
    char c = *cur;
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      ++cur;
    } else if (c == '/' && cur + 1 < end && cur[1] == '/') {
      while (cur < end && *cur != '\n')
        ++cur;
    } else {
      return;
    }
  }
}

Token Lexer::lexIdentifier(const char *from) {
  while (cur < end && isIdentChar(*cur))
    ++cur;
  llvm::StringRef word(from, cur - from);
  TokenKind kind = llvm::StringSwitch<TokenKind>(word)
                       .Case("const", TokenKind::KwConst)
                       .Case("else", TokenKind::KwElse)
                       .Case("fn", TokenKind::KwFn)
                       .Case("for", TokenKind::KwFor)
                       .Case("grid", TokenKind::KwGrid)
                       .Case("if", TokenKind::KwIf)
                       .Case("import", TokenKind::KwImport)
                       .Case("in", TokenKind::KwIn)
                       .Case("kernel", TokenKind::KwKernel)
                       .Case("let", TokenKind::KwLet)
                       .Case("return", TokenKind::KwReturn)
                       .Default(TokenKind::Identifier);
  return make(kind, from);
}

/// Decimal or 0x-hex integers; decimal numbers with a fraction and/or an
/// exponent. `1..n` is an integer followed by '..'.
Token Lexer::lexNumber(const char *from) {
  if (*from == '0' && cur < end && (*cur == 'x' || *cur == 'X')) {
    ++cur;
    const char *digits = cur;
    uint64_t value = 0;
    while (cur < end && isxdigit(static_cast<unsigned char>(*cur))) {
      unsigned digit = isDigit(*cur) ? *cur - '0' : (*cur | 0x20) - 'a' + 10;
      if (value > (uint64_t(INT64_MAX) - digit) / 16)
        return error(from, "integer literal does not fit in 64 bits");
      value = value * 16 + digit;
      ++cur;
    }
    if (cur == digits)
      return error(from, "hexadecimal literal needs digits after '0x'");
    if (cur < end && isIdentChar(*cur))
      return error(cur, "unexpected character in a number");
    Token t = make(TokenKind::Integer, from);
    t.intValue = int64_t(value);
    return t;
  }
  while (cur < end && isDigit(*cur))
    ++cur;
  bool isFloat = false;
  if (cur + 1 < end && *cur == '.' && isDigit(cur[1])) {
    isFloat = true;
    ++cur;
    while (cur < end && isDigit(*cur))
      ++cur;
  }
  if (cur < end && (*cur == 'e' || *cur == 'E')) {
    const char *exp = cur + 1;
    if (exp < end && (*exp == '+' || *exp == '-'))
      ++exp;
    if (exp >= end || !isDigit(*exp))
      return error(cur, "exponent needs digits");
    isFloat = true;
    cur = exp;
    while (cur < end && isDigit(*cur))
      ++cur;
  }
  if (cur < end && isIdentChar(*cur))
    return error(cur, "unexpected character in a number");
  Token t = make(isFloat ? TokenKind::Float : TokenKind::Integer, from);
  std::string text = t.text.str();
  errno = 0;
  if (isFloat) {
    t.floatValue = std::strtod(text.c_str(), nullptr);
    // f32 is the widest float type, so a literal past its range would only
    // become infinity where it is used.
    llvm::APFloat single(t.floatValue);
    bool lost = false;
    single.convert(llvm::APFloat::IEEEsingle(),
                   llvm::APFloat::rmNearestTiesToEven, &lost);
    if ((errno == ERANGE && std::abs(t.floatValue) > 1.0) || single.isInfinity())
      return error(from, "float literal does not fit in f32 (largest "
                         "3.4028235e38)");
  } else {
    unsigned long long v = std::strtoull(text.c_str(), nullptr, 10);
    if (errno == ERANGE || v > uint64_t(INT64_MAX))
      return error(from, "integer literal does not fit in 64 bits");
    t.intValue = int64_t(v);
  }
  return t;
}

Token Lexer::next() {
  skipSpaceAndComments();
  const char *from = cur;
  if (cur >= end)
    return make(TokenKind::Eof, from);
  char c = *cur++;
  if (isIdentStart(c))
    return lexIdentifier(from);
  if (isDigit(c))
    return lexNumber(from);
  auto two = [&](char second, TokenKind pair, TokenKind single) {
    if (cur < end && *cur == second) {
      ++cur;
      return make(pair, from);
    }
    return make(single, from);
  };
  switch (c) {
  case '(': return make(TokenKind::LParen, from);
  case ')': return make(TokenKind::RParen, from);
  case '{': return make(TokenKind::LBrace, from);
  case '}': return make(TokenKind::RBrace, from);
  case '[': return make(TokenKind::LBracket, from);
  case ']': return make(TokenKind::RBracket, from);
  case ',': return make(TokenKind::Comma, from);
  case ';': return make(TokenKind::Semicolon, from);
  case ':': return make(TokenKind::Colon, from);
  case '+': return make(TokenKind::Plus, from);
  case '-': return make(TokenKind::Minus, from);
  case '*': return make(TokenKind::Star, from);
  case '/': return make(TokenKind::Slash, from);
  case '%': return make(TokenKind::Percent, from);
  case '=': return two('=', TokenKind::EqEq, TokenKind::Assign);
  case '!': return two('=', TokenKind::NotEq, TokenKind::Bang);
  case '<': return two('=', TokenKind::LessEq, TokenKind::Less);
  case '>': return two('=', TokenKind::GreaterEq, TokenKind::Greater);
  case '.':
    if (cur < end && *cur == '.') {
      ++cur;
      return make(TokenKind::DotDot, from);
    }
    return error(from, "unexpected '.'; ranges are written 'a..b'");
  case '&':
    if (cur < end && *cur == '&') {
      ++cur;
      return make(TokenKind::AmpAmp, from);
    }
    return error(from, "unexpected '&'; did you mean '&&'?");
  case '|':
    if (cur < end && *cur == '|') {
      ++cur;
      return make(TokenKind::PipePipe, from);
    }
    return error(from, "unexpected '|'; did you mean '||'?");
  default:
    break;
  }
  unsigned char u = static_cast<unsigned char>(c);
  if (u >= 0x20 && u < 0x7f) {
    errorMessage = llvm::formatv("unexpected character '{0}'", c).str();
  } else {
    char hex[8];
    std::snprintf(hex, sizeof hex, "%02x", unsigned(u));
    errorMessage = std::string("unexpected byte 0x") + hex;
  }
  Token t;
  t.kind = TokenKind::Error;
  t.loc = llvm::SMLoc::getFromPointer(from);
  t.text = errorMessage;
  return t;
}
