//===- Parser.cpp - recursive-descent parser of .kvt files ----------------===//

#include "kvarn/DSL/Parser.h"
#include "kvarn/DSL/Lexer.h"
#include "kvarn/DSL/Specialization.h"

#include "llvm/ADT/StringSwitch.h"

using namespace kvarn::dsl;
using namespace kvarn::dsl::ast;

llvm::StringRef ast::spell(BinaryOp op) {
  switch (op) {
  case BinaryOp::Add: return "+";
  case BinaryOp::Sub: return "-";
  case BinaryOp::Mul: return "*";
  case BinaryOp::Div: return "/";
  case BinaryOp::Rem: return "%";
  case BinaryOp::Eq: return "==";
  case BinaryOp::Ne: return "!=";
  case BinaryOp::Lt: return "<";
  case BinaryOp::Le: return "<=";
  case BinaryOp::Gt: return ">";
  case BinaryOp::Ge: return ">=";
  case BinaryOp::And: return "&&";
  case BinaryOp::Or: return "||";
  }
  return "?";
}

llvm::StringRef ast::spell(ScalarKind kind) {
  switch (kind) {
  case ScalarKind::I8: return "i8";
  case ScalarKind::I32: return "i32";
  case ScalarKind::I64: return "i64";
  case ScalarKind::F16: return "f16";
  case ScalarKind::BF16: return "bf16";
  case ScalarKind::F32: return "f32";
  case ScalarKind::Act: return kActivationTypeName;
  }
  return "?";
}

namespace {

class Parser {
public:
  Parser(llvm::StringRef buffer, ErrorReporter report)
      : lexer(buffer), report(report) {
    advance();
  }

  std::unique_ptr<Module> parseModule();

private:
  // Token handling. Every failure path reports once and returns false/null;
  // `failed` keeps later code from reporting a second, derived error.
  void advance() { tok = lexer.next(); }
  bool at(TokenKind kind) const { return tok.kind == kind; }
  bool consumeIf(TokenKind kind) {
    if (!at(kind))
      return false;
    advance();
    return true;
  }
  bool fail(llvm::SMLoc loc, const llvm::Twine &message) {
    if (!failed)
      report(loc, message);
    failed = true;
    return false;
  }
  /// Reports the current token: lexer errors as they are, others as
  /// "expected X, found Y".
  bool failExpected(const llvm::Twine &what) {
    if (at(TokenKind::Error))
      return fail(tok.loc, tok.text);
    if (at(TokenKind::Eof))
      return fail(tok.loc, "expected " + what + ", found end of file");
    return fail(tok.loc, "expected " + what + ", found '" + tok.text + "'");
  }
  bool expect(TokenKind kind, const llvm::Twine &context = "") {
    if (consumeIf(kind))
      return true;
    return failExpected(context.isTriviallyEmpty()
                            ? llvm::Twine(spell(kind))
                            : spell(kind) + " " + context);
  }
  bool parseName(Name &name, const llvm::Twine &what) {
    if (!at(TokenKind::Identifier))
      return failExpected(what);
    name = {tok.text.str(), tok.loc};
    advance();
    return true;
  }

  /// Bounds the recursion of blocks and expressions.
  struct DepthGuard {
    Parser &p;
    bool ok;
    DepthGuard(Parser &p, llvm::SMLoc loc) : p(p), ok(++p.depth <= kMaxNestingDepth) {
      if (!ok)
        p.fail(loc, "nesting is deeper than " + llvm::Twine(kMaxNestingDepth) +
                        " levels");
    }
    ~DepthGuard() { --p.depth; }
  };
  /// Trees built by operator chains grow without recursion; their height is
  /// checked here.
  bool checkHeight(int height, llvm::SMLoc loc) {
    if (height <= kMaxNestingDepth)
      return true;
    return fail(loc, "expression is nested deeper than " +
                         llvm::Twine(kMaxNestingDepth) + " levels");
  }

  // Top level.
  bool parseImport(Module &m);
  bool parseConstDecl(Module &m);
  bool parseFunction(Module &m);
  bool parseKernel(Module &m);
  bool parseType(TypeSpec &type);
  bool parseGridDim(GridDim &dim);

  // Statements.
  bool parseBlock(Block &block);
  StmtPtr parseStmt();
  StmtPtr parseLet();
  StmtPtr parseIf();
  StmtPtr parseFor();
  StmtPtr parseReturn();
  StmtPtr parseNamesAssignment();
  StmtPtr parseExprStmt();

  // Expressions, by precedence from loosest.
  ExprPtr parseExpr();
  ExprPtr parseBinary(int level);
  ExprPtr parseUnary();
  ExprPtr parsePostfix();
  ExprPtr parsePrimary();
  bool parseExprList(TokenKind close, std::vector<ExprPtr> &out, int &height);

  Lexer lexer;
  ErrorReporter report;
  Token tok;
  int depth = 0;
  bool failed = false;
};

} // namespace

//===----------------------------------------------------------------------===//
// Top level
//===----------------------------------------------------------------------===//

std::unique_ptr<Module> Parser::parseModule() {
  auto module = std::make_unique<Module>();
  while (!at(TokenKind::Eof)) {
    bool ok;
    switch (tok.kind) {
    case TokenKind::KwImport: ok = parseImport(*module); break;
    case TokenKind::KwConst: ok = parseConstDecl(*module); break;
    case TokenKind::KwFn: ok = parseFunction(*module); break;
    case TokenKind::KwKernel: ok = parseKernel(*module); break;
    default:
      ok = failExpected("'kernel', 'fn', 'const' or 'import'");
      break;
    }
    if (!ok || failed)
      return nullptr;
  }
  return module;
}

bool Parser::parseImport(Module &m) {
  advance(); // import
  Name name;
  if (!parseName(name, "a library module name after 'import'"))
    return false;
  m.imports.push_back(std::move(name));
  return expect(TokenKind::Semicolon, "after the import");
}

bool Parser::parseConstDecl(Module &m) {
  advance(); // const
  ConstDecl decl;
  if (!parseName(decl.name, "a constant name") ||
      !expect(TokenKind::Assign, "after the constant name"))
    return false;
  decl.value = parseExpr();
  if (!decl.value || !expect(TokenKind::Semicolon, "after the constant"))
    return false;
  m.constants.push_back(std::move(decl));
  return true;
}

bool Parser::parseFunction(Module &m) {
  advance(); // fn
  Function fn;
  if (!parseName(fn.name, "a function name") ||
      !expect(TokenKind::LParen, "after the function name"))
    return false;
  if (!at(TokenKind::RParen)) {
    do {
      if (at(TokenKind::RParen)) // a trailing comma
        break;
      Name param;
      if (!parseName(param, "a parameter name"))
        return false;
      fn.params.push_back(std::move(param));
    } while (consumeIf(TokenKind::Comma));
  }
  if (!expect(TokenKind::RParen, "after the parameters") ||
      !parseBlock(fn.body))
    return false;
  m.functions.push_back(std::move(fn));
  return true;
}

bool Parser::parseType(TypeSpec &type) {
  type.loc = tok.loc;
  if (!at(TokenKind::Identifier))
    return failExpected("a type (i32, i64, f32 or ptr<...>)");
  llvm::StringRef word = tok.text;
  auto scalar = [](llvm::StringRef w) -> std::optional<ScalarKind> {
    if (w == llvm::StringRef(kActivationTypeName))
      return ScalarKind::Act;
    return llvm::StringSwitch<std::optional<ScalarKind>>(w)
        .Case("i8", ScalarKind::I8)
        .Case("i32", ScalarKind::I32)
        .Case("i64", ScalarKind::I64)
        .Case("f16", ScalarKind::F16)
        .Case("bf16", ScalarKind::BF16)
        .Case("f32", ScalarKind::F32)
        .Default(std::nullopt);
  };
  if (word == "ptr") {
    advance();
    if (!expect(TokenKind::Less, "after 'ptr'"))
      return false;
    std::optional<ScalarKind> elt;
    if (at(TokenKind::Identifier))
      elt = scalar(tok.text);
    if (!elt)
      return failExpected("a pointee type (i8, i32, i64, f16, bf16, f32 or "
                          "ACT)");
    advance();
    type.isPointer = true;
    type.element = *elt;
    return expect(TokenKind::Greater, "after the pointee type");
  }
  std::optional<ScalarKind> kind = scalar(word);
  if (!kind || (*kind != ScalarKind::I32 && *kind != ScalarKind::I64 &&
                *kind != ScalarKind::F32))
    return fail(tok.loc, "'" + word +
                             "' is not a parameter type; use i32, i64, f32 "
                             "or ptr<T>");
  advance();
  type.isPointer = false;
  type.element = *kind;
  return true;
}

bool Parser::parseGridDim(GridDim &dim) {
  dim.loc = tok.loc;
  if (at(TokenKind::Integer)) {
    dim.constant = tok.intValue;
    advance();
    return true;
  }
  Name name;
  if (!parseName(name, "a parameter name or an integer in the grid"))
    return false;
  dim.param = std::move(name);
  return true;
}

bool Parser::parseKernel(Module &m) {
  advance(); // kernel
  Kernel k;
  if (!parseName(k.name, "a kernel name") ||
      !expect(TokenKind::LParen, "after the kernel name"))
    return false;
  if (!at(TokenKind::RParen)) {
    do {
      if (at(TokenKind::RParen))
        break;
      Param p;
      if (!parseName(p.name, "a parameter name") ||
          !expect(TokenKind::Colon, "after the parameter name") ||
          !parseType(p.type))
        return false;
      k.params.push_back(std::move(p));
    } while (consumeIf(TokenKind::Comma));
  }
  if (!expect(TokenKind::RParen, "after the parameters"))
    return false;
  if (!at(TokenKind::KwGrid))
    return failExpected("'grid(...)': every kernel declares its launch grid");
  advance();
  if (!expect(TokenKind::LParen, "after 'grid'"))
    return false;
  do {
    GridDim dim;
    if (!parseGridDim(dim))
      return false;
    k.grid.push_back(std::move(dim));
  } while (consumeIf(TokenKind::Comma));
  if (!expect(TokenKind::RParen, "after the grid") || !parseBlock(k.body))
    return false;
  m.kernels.push_back(std::move(k));
  return true;
}

//===----------------------------------------------------------------------===//
// Statements
//===----------------------------------------------------------------------===//

bool Parser::parseBlock(Block &block) {
  DepthGuard guard(*this, tok.loc);
  if (!guard.ok)
    return false;
  block.loc = tok.loc;
  if (!expect(TokenKind::LBrace))
    return false;
  while (!at(TokenKind::RBrace)) {
    if (at(TokenKind::Eof))
      return fail(block.loc, "this block is never closed: expected '}' "
                             "before the end of the file");
    StmtPtr stmt = parseStmt();
    if (!stmt)
      return false;
    block.stmts.push_back(std::move(stmt));
  }
  advance(); // }
  return true;
}

StmtPtr Parser::parseStmt() {
  switch (tok.kind) {
  case TokenKind::KwLet: return parseLet();
  case TokenKind::KwIf: return parseIf();
  case TokenKind::KwFor: return parseFor();
  case TokenKind::KwReturn: return parseReturn();
  case TokenKind::KwConst: {
    llvm::SMLoc loc = tok.loc;
    Module scratch;
    if (!parseConstDecl(scratch))
      return nullptr;
    ConstDecl &d = scratch.constants.front();
    return std::make_unique<ConstStmt>(loc, std::move(d.name),
                                       std::move(d.value));
  }
  case TokenKind::KwKernel:
  case TokenKind::KwFn:
  case TokenKind::KwImport:
    fail(tok.loc, "'" + tok.text + "' is only allowed at the top level");
    return nullptr;
  case TokenKind::Identifier: {
    // `a = e;` and `a, b = e;` start with a name followed by '=' or ','.
    Lexer peek = lexer;
    Token second = peek.next();
    if (second.is(TokenKind::Assign) || second.is(TokenKind::Comma))
      return parseNamesAssignment();
    return parseExprStmt();
  }
  default:
    return parseExprStmt();
  }
}

StmtPtr Parser::parseLet() {
  llvm::SMLoc loc = tok.loc;
  advance(); // let
  std::vector<Name> names;
  do {
    Name name;
    if (!parseName(name, "a variable name after 'let'"))
      return nullptr;
    names.push_back(std::move(name));
  } while (consumeIf(TokenKind::Comma));
  ExprPtr init;
  if (consumeIf(TokenKind::Assign)) {
    init = parseExpr();
    if (!init)
      return nullptr;
  }
  if (!expect(TokenKind::Semicolon, init ? "after the value" : "or '='"))
    return nullptr;
  return std::make_unique<LetStmt>(loc, std::move(names), std::move(init));
}

StmtPtr Parser::parseNamesAssignment() {
  llvm::SMLoc loc = tok.loc;
  std::vector<Name> names;
  do {
    Name name;
    if (!parseName(name, "a variable name"))
      return nullptr;
    names.push_back(std::move(name));
  } while (consumeIf(TokenKind::Comma));
  if (!expect(TokenKind::Assign, "after the assigned names"))
    return nullptr;
  ExprPtr value = parseExpr();
  if (!value || !expect(TokenKind::Semicolon, "after the assignment"))
    return nullptr;
  return std::make_unique<AssignStmt>(loc, std::move(names), std::move(value));
}

StmtPtr Parser::parseExprStmt() {
  llvm::SMLoc loc = tok.loc;
  ExprPtr expr = parseExpr();
  if (!expr)
    return nullptr;
  if (consumeIf(TokenKind::Assign)) {
    if (!llvm::isa<IndexExpr>(expr.get())) {
      fail(loc, "only a variable or an element 'pointer[index]' can be "
                "assigned to");
      return nullptr;
    }
    ExprPtr value = parseExpr();
    if (!value || !expect(TokenKind::Semicolon, "after the store"))
      return nullptr;
    return std::make_unique<StoreStmt>(loc, std::move(expr), std::move(value));
  }
  if (!expect(TokenKind::Semicolon, "after the expression"))
    return nullptr;
  return std::make_unique<ExprStmt>(loc, std::move(expr));
}

StmtPtr Parser::parseIf() {
  DepthGuard guard(*this, tok.loc);
  if (!guard.ok)
    return nullptr;
  llvm::SMLoc loc = tok.loc;
  advance(); // if
  ExprPtr cond = parseExpr();
  if (!cond)
    return nullptr;
  Block thenBlock;
  if (!at(TokenKind::LBrace)) {
    failExpected("'{' after the condition");
    return nullptr;
  }
  if (!parseBlock(thenBlock))
    return nullptr;
  std::optional<Block> elseBlock;
  if (consumeIf(TokenKind::KwElse)) {
    elseBlock.emplace();
    if (at(TokenKind::KwIf)) {
      elseBlock->loc = tok.loc;
      StmtPtr nested = parseIf();
      if (!nested)
        return nullptr;
      elseBlock->stmts.push_back(std::move(nested));
    } else if (!parseBlock(*elseBlock)) {
      return nullptr;
    }
  }
  return std::make_unique<IfStmt>(loc, std::move(cond), std::move(thenBlock),
                                  std::move(elseBlock));
}

StmtPtr Parser::parseFor() {
  llvm::SMLoc loc = tok.loc;
  advance(); // for
  Name var;
  if (!parseName(var, "a loop variable after 'for'") ||
      !expect(TokenKind::KwIn, "after the loop variable"))
    return nullptr;
  ExprPtr lower = parseExpr();
  if (!lower || !expect(TokenKind::DotDot, "in the range 'lower..upper'"))
    return nullptr;
  ExprPtr upper = parseExpr();
  if (!upper)
    return nullptr;
  Block body;
  if (!parseBlock(body))
    return nullptr;
  return std::make_unique<ForStmt>(loc, std::move(var), std::move(lower),
                                   std::move(upper), std::move(body));
}

StmtPtr Parser::parseReturn() {
  llvm::SMLoc loc = tok.loc;
  advance(); // return
  std::vector<ExprPtr> values;
  if (!at(TokenKind::Semicolon)) {
    do {
      ExprPtr value = parseExpr();
      if (!value)
        return nullptr;
      values.push_back(std::move(value));
    } while (consumeIf(TokenKind::Comma));
  }
  if (!expect(TokenKind::Semicolon, "after the returned values"))
    return nullptr;
  return std::make_unique<ReturnStmt>(loc, std::move(values));
}

//===----------------------------------------------------------------------===//
// Expressions
//===----------------------------------------------------------------------===//

ExprPtr Parser::parseExpr() { return parseBinary(0); }

namespace {
/// Binary operators by precedence level, loosest first. Comparisons do not
/// chain (`a < b < c` is an error).
struct OpInfo {
  TokenKind token;
  BinaryOp op;
};
const std::vector<std::vector<OpInfo>> &binaryLevels() {
  static const std::vector<std::vector<OpInfo>> levels = {
      {{TokenKind::PipePipe, BinaryOp::Or}},
      {{TokenKind::AmpAmp, BinaryOp::And}},
      {{TokenKind::EqEq, BinaryOp::Eq},
       {TokenKind::NotEq, BinaryOp::Ne},
       {TokenKind::Less, BinaryOp::Lt},
       {TokenKind::LessEq, BinaryOp::Le},
       {TokenKind::Greater, BinaryOp::Gt},
       {TokenKind::GreaterEq, BinaryOp::Ge}},
      {{TokenKind::Plus, BinaryOp::Add}, {TokenKind::Minus, BinaryOp::Sub}},
      {{TokenKind::Star, BinaryOp::Mul},
       {TokenKind::Slash, BinaryOp::Div},
       {TokenKind::Percent, BinaryOp::Rem}},
  };
  return levels;
}
constexpr int kComparisonLevel = 2;
} // namespace

ExprPtr Parser::parseBinary(int level) {
  const auto &levels = binaryLevels();
  if (level == int(levels.size()))
    return parseUnary();
  ExprPtr lhs = parseBinary(level + 1);
  if (!lhs)
    return nullptr;
  while (true) {
    const OpInfo *match = nullptr;
    for (const OpInfo &info : levels[level])
      if (at(info.token))
        match = &info;
    if (!match)
      return lhs;
    llvm::SMLoc opLoc = tok.loc;
    advance();
    ExprPtr rhs = parseBinary(level + 1);
    if (!rhs)
      return nullptr;
    int height = 1 + std::max(lhs->getDepth(), rhs->getDepth());
    if (!checkHeight(height, opLoc))
      return nullptr;
    lhs = std::make_unique<BinaryExpr>(opLoc, match->op, std::move(lhs),
                                       std::move(rhs), height);
    if (level == kComparisonLevel) {
      for (const OpInfo &info : levels[level])
        if (at(info.token)) {
          fail(tok.loc, "comparisons do not chain; combine them with '&&'");
          return nullptr;
        }
      return lhs;
    }
  }
}

ExprPtr Parser::parseUnary() {
  DepthGuard guard(*this, tok.loc);
  if (!guard.ok)
    return nullptr;
  if (at(TokenKind::Minus) || at(TokenKind::Bang)) {
    llvm::SMLoc loc = tok.loc;
    UnaryOp op = at(TokenKind::Minus) ? UnaryOp::Neg : UnaryOp::Not;
    advance();
    ExprPtr operand = parseUnary();
    if (!operand)
      return nullptr;
    int height = operand->getDepth() + 1;
    if (!checkHeight(height, loc))
      return nullptr;
    return std::make_unique<UnaryExpr>(loc, op, std::move(operand), height);
  }
  return parsePostfix();
}

ExprPtr Parser::parsePostfix() {
  ExprPtr expr = parsePrimary();
  while (expr && at(TokenKind::LBracket)) {
    llvm::SMLoc loc = tok.loc;
    advance();
    ExprPtr index = parseExpr();
    if (!index || !expect(TokenKind::RBracket, "after the index"))
      return nullptr;
    int height = 1 + std::max(expr->getDepth(), index->getDepth());
    if (!checkHeight(height, loc))
      return nullptr;
    expr = std::make_unique<IndexExpr>(loc, std::move(expr), std::move(index),
                                       height);
  }
  return expr;
}

bool Parser::parseExprList(TokenKind close, std::vector<ExprPtr> &out,
                           int &height) {
  height = 1;
  if (consumeIf(close))
    return true;
  do {
    if (at(close)) // a trailing comma
      break;
    ExprPtr e = parseExpr();
    if (!e)
      return false;
    height = std::max(height, e->getDepth() + 1);
    out.push_back(std::move(e));
  } while (consumeIf(TokenKind::Comma));
  return expect(close, "or ',' in the list");
}

ExprPtr Parser::parsePrimary() {
  llvm::SMLoc loc = tok.loc;
  switch (tok.kind) {
  case TokenKind::Integer: {
    auto e = std::make_unique<IntegerExpr>(loc, tok.intValue);
    advance();
    return e;
  }
  case TokenKind::Float: {
    auto e = std::make_unique<FloatExpr>(loc, tok.floatValue);
    advance();
    return e;
  }
  case TokenKind::Identifier: {
    std::string name = tok.text.str();
    advance();
    if (!consumeIf(TokenKind::LParen))
      return std::make_unique<NameExpr>(loc, std::move(name));
    std::vector<ExprPtr> args;
    int height;
    if (!parseExprList(TokenKind::RParen, args, height) ||
        !checkHeight(height, loc))
      return nullptr;
    return std::make_unique<CallExpr>(loc, std::move(name), std::move(args),
                                      height);
  }
  case TokenKind::LParen: {
    advance();
    ExprPtr inner = parseExpr();
    if (!inner || !expect(TokenKind::RParen, "to close '('"))
      return nullptr;
    return inner;
  }
  case TokenKind::LBracket: {
    advance();
    std::vector<ExprPtr> elements;
    int height;
    if (!parseExprList(TokenKind::RBracket, elements, height) ||
        !checkHeight(height, loc))
      return nullptr;
    return std::make_unique<ListExpr>(loc, std::move(elements), height);
  }
  default:
    failExpected("an expression");
    return nullptr;
  }
}

std::unique_ptr<Module> kvarn::dsl::parseModule(llvm::StringRef buffer,
                                                ErrorReporter report) {
  Parser parser(buffer, report);
  return parser.parseModule();
}
