//===- AST.h - syntax tree of the .kvt kernel language ----------*- C++ -*-===//
//
// What the parser produces and the kvt builder consumes. Nodes own their
// children; every node keeps the source location it came from.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_DSL_AST_H
#define KVARN_DSL_AST_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Casting.h"
#include "llvm/Support/SMLoc.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kvarn::dsl::ast {

/// An identifier and where it was written.
struct Name {
  std::string text;
  llvm::SMLoc loc;
};

//===----------------------------------------------------------------------===//
// Expressions
//===----------------------------------------------------------------------===//

class Expr {
public:
  enum class Kind { Integer, Float, Name, Call, Index, Unary, Binary, List };
  virtual ~Expr() = default;
  Kind getKind() const { return kind; }
  llvm::SMLoc getLoc() const { return loc; }
  /// Height of the tree below and including this node (bounded by the parser).
  int getDepth() const { return depth; }

protected:
  Expr(Kind kind, llvm::SMLoc loc, int depth)
      : kind(kind), loc(loc), depth(depth) {}

private:
  Kind kind;
  llvm::SMLoc loc;
  int depth;
};
using ExprPtr = std::unique_ptr<Expr>;

class IntegerExpr : public Expr {
public:
  IntegerExpr(llvm::SMLoc loc, int64_t value)
      : Expr(Kind::Integer, loc, 1), value(value) {}
  int64_t getValue() const { return value; }
  static bool classof(const Expr *e) { return e->getKind() == Kind::Integer; }

private:
  int64_t value;
};

class FloatExpr : public Expr {
public:
  FloatExpr(llvm::SMLoc loc, double value)
      : Expr(Kind::Float, loc, 1), value(value) {}
  double getValue() const { return value; }
  static bool classof(const Expr *e) { return e->getKind() == Kind::Float; }

private:
  double value;
};

class NameExpr : public Expr {
public:
  NameExpr(llvm::SMLoc loc, std::string name)
      : Expr(Kind::Name, loc, 1), name(std::move(name)) {}
  llvm::StringRef getName() const { return name; }
  static bool classof(const Expr *e) { return e->getKind() == Kind::Name; }

private:
  std::string name;
};

/// `callee(args...)`: a builtin, a type conversion or an inlined `fn`.
class CallExpr : public Expr {
public:
  CallExpr(llvm::SMLoc loc, std::string callee, std::vector<ExprPtr> args,
           int depth)
      : Expr(Kind::Call, loc, depth), callee(std::move(callee)),
        args(std::move(args)) {}
  llvm::StringRef getCallee() const { return callee; }
  const std::vector<ExprPtr> &getArgs() const { return args; }
  static bool classof(const Expr *e) { return e->getKind() == Kind::Call; }

private:
  std::string callee;
  std::vector<ExprPtr> args;
};

/// `pointer[index]`: one element loaded from global memory.
class IndexExpr : public Expr {
public:
  IndexExpr(llvm::SMLoc loc, ExprPtr base, ExprPtr index, int depth)
      : Expr(Kind::Index, loc, depth), base(std::move(base)),
        index(std::move(index)) {}
  const Expr &getBase() const { return *base; }
  const Expr &getIndex() const { return *index; }
  static bool classof(const Expr *e) { return e->getKind() == Kind::Index; }

private:
  ExprPtr base, index;
};

enum class UnaryOp { Neg, Not };

class UnaryExpr : public Expr {
public:
  UnaryExpr(llvm::SMLoc loc, UnaryOp op, ExprPtr operand, int depth)
      : Expr(Kind::Unary, loc, depth), op(op), operand(std::move(operand)) {}
  UnaryOp getOp() const { return op; }
  const Expr &getOperand() const { return *operand; }
  static bool classof(const Expr *e) { return e->getKind() == Kind::Unary; }

private:
  UnaryOp op;
  ExprPtr operand;
};

enum class BinaryOp { Add, Sub, Mul, Div, Rem, Eq, Ne, Lt, Le, Gt, Ge, And, Or };

/// The operator as written: "+", "&&", ...
llvm::StringRef spell(BinaryOp op);

class BinaryExpr : public Expr {
public:
  BinaryExpr(llvm::SMLoc loc, BinaryOp op, ExprPtr lhs, ExprPtr rhs, int depth)
      : Expr(Kind::Binary, loc, depth), op(op), lhs(std::move(lhs)),
        rhs(std::move(rhs)) {}
  BinaryOp getOp() const { return op; }
  const Expr &getLhs() const { return *lhs; }
  const Expr &getRhs() const { return *rhs; }
  static bool classof(const Expr *e) { return e->getKind() == Kind::Binary; }

private:
  BinaryOp op;
  ExprPtr lhs, rhs;
};

/// `[a, b, c]`: shapes and strides, only as arguments of tile builtins.
class ListExpr : public Expr {
public:
  ListExpr(llvm::SMLoc loc, std::vector<ExprPtr> elements, int depth)
      : Expr(Kind::List, loc, depth), elements(std::move(elements)) {}
  const std::vector<ExprPtr> &getElements() const { return elements; }
  static bool classof(const Expr *e) { return e->getKind() == Kind::List; }

private:
  std::vector<ExprPtr> elements;
};

//===----------------------------------------------------------------------===//
// Statements
//===----------------------------------------------------------------------===//

class Stmt;
using StmtPtr = std::unique_ptr<Stmt>;

struct Block {
  llvm::SMLoc loc; // the '{'
  std::vector<StmtPtr> stmts;
};

class Stmt {
public:
  enum class Kind { Let, Assign, Store, If, For, Expr, Const, Return };
  virtual ~Stmt() = default;
  Kind getKind() const { return kind; }
  llvm::SMLoc getLoc() const { return loc; }

protected:
  Stmt(Kind kind, llvm::SMLoc loc) : kind(kind), loc(loc) {}

private:
  Kind kind;
  llvm::SMLoc loc;
};

/// `let a = e;`, `let a, b = e;` (a call with several results) or `let a, b;`
/// (declared, assigned later).
class LetStmt : public Stmt {
public:
  LetStmt(llvm::SMLoc loc, std::vector<Name> names, ExprPtr init)
      : Stmt(Kind::Let, loc), names(std::move(names)), init(std::move(init)) {}
  const std::vector<Name> &getNames() const { return names; }
  const Expr *getInit() const { return init.get(); }
  static bool classof(const Stmt *s) { return s->getKind() == Kind::Let; }

private:
  std::vector<Name> names;
  ExprPtr init;
};

/// `a = e;` or `a, b = e;`.
class AssignStmt : public Stmt {
public:
  AssignStmt(llvm::SMLoc loc, std::vector<Name> names, ExprPtr value)
      : Stmt(Kind::Assign, loc), names(std::move(names)),
        value(std::move(value)) {}
  const std::vector<Name> &getNames() const { return names; }
  const Expr &getValue() const { return *value; }
  static bool classof(const Stmt *s) { return s->getKind() == Kind::Assign; }

private:
  std::vector<Name> names;
  ExprPtr value;
};

/// `pointer[index] = value;`
class StoreStmt : public Stmt {
public:
  StoreStmt(llvm::SMLoc loc, ExprPtr target, ExprPtr value)
      : Stmt(Kind::Store, loc), target(std::move(target)),
        value(std::move(value)) {}
  const IndexExpr &getTarget() const {
    return *llvm::cast<IndexExpr>(target.get());
  }
  const Expr &getValue() const { return *value; }
  static bool classof(const Stmt *s) { return s->getKind() == Kind::Store; }

private:
  ExprPtr target, value;
};

/// `if c { ... } else { ... }`; `else if` nests another IfStmt as the only
/// statement of the else block.
class IfStmt : public Stmt {
public:
  IfStmt(llvm::SMLoc loc, ExprPtr cond, Block thenBlock,
         std::optional<Block> elseBlock)
      : Stmt(Kind::If, loc), cond(std::move(cond)),
        thenBlock(std::move(thenBlock)), elseBlock(std::move(elseBlock)) {}
  const Expr &getCond() const { return *cond; }
  const Block &getThen() const { return thenBlock; }
  const Block *getElse() const { return elseBlock ? &*elseBlock : nullptr; }
  static bool classof(const Stmt *s) { return s->getKind() == Kind::If; }

private:
  ExprPtr cond;
  Block thenBlock;
  std::optional<Block> elseBlock;
};

/// `for i in lo..hi { ... }`: i from lo up to hi - 1, step 1.
class ForStmt : public Stmt {
public:
  ForStmt(llvm::SMLoc loc, Name var, ExprPtr lower, ExprPtr upper, Block body)
      : Stmt(Kind::For, loc), var(std::move(var)), lower(std::move(lower)),
        upper(std::move(upper)), body(std::move(body)) {}
  const Name &getVar() const { return var; }
  const Expr &getLower() const { return *lower; }
  const Expr &getUpper() const { return *upper; }
  const Block &getBody() const { return body; }
  static bool classof(const Stmt *s) { return s->getKind() == Kind::For; }

private:
  Name var;
  ExprPtr lower, upper;
  Block body;
};

/// A call evaluated for its effect: `store_tile(...);`.
class ExprStmt : public Stmt {
public:
  ExprStmt(llvm::SMLoc loc, ExprPtr expr)
      : Stmt(Kind::Expr, loc), expr(std::move(expr)) {}
  const Expr &getExpr() const { return *expr; }
  static bool classof(const Stmt *s) { return s->getKind() == Kind::Expr; }

private:
  ExprPtr expr;
};

/// `const N = e;`: a compile-time integer or float.
class ConstStmt : public Stmt {
public:
  ConstStmt(llvm::SMLoc loc, Name name, ExprPtr value)
      : Stmt(Kind::Const, loc), name(std::move(name)), value(std::move(value)) {}
  const Name &getName() const { return name; }
  const Expr &getValue() const { return *value; }
  static bool classof(const Stmt *s) { return s->getKind() == Kind::Const; }

private:
  Name name;
  ExprPtr value;
};

/// `return a, b;`: the results of a `fn` (its last statement).
class ReturnStmt : public Stmt {
public:
  ReturnStmt(llvm::SMLoc loc, std::vector<ExprPtr> values)
      : Stmt(Kind::Return, loc), values(std::move(values)) {}
  const std::vector<ExprPtr> &getValues() const { return values; }
  static bool classof(const Stmt *s) { return s->getKind() == Kind::Return; }

private:
  std::vector<ExprPtr> values;
};

//===----------------------------------------------------------------------===//
// Top level
//===----------------------------------------------------------------------===//

/// Element types a kernel parameter or pointer can name. Act is `ACT`, the
/// specialization's activation dtype (f16 or bf16), bound by the builder.
enum class ScalarKind { I8, I32, I64, F16, BF16, F32, Act };
llvm::StringRef spell(ScalarKind kind);

/// `i32`, `f32`, or `ptr<f16>`.
struct TypeSpec {
  bool isPointer = false;
  ScalarKind element = ScalarKind::I32;
  llvm::SMLoc loc;
};

struct Param {
  Name name;
  TypeSpec type;
};

/// One launch-grid dimension: a scalar parameter's name or a constant.
struct GridDim {
  std::optional<Name> param;
  int64_t constant = 0;
  llvm::SMLoc loc;
};

struct Kernel {
  Name name;
  std::vector<Param> params;
  std::vector<GridDim> grid;
  Block body;
};

/// `fn name(a, b) { ... return x, y; }`: untyped parameters, inlined at every
/// call (like a Triton jit helper).
struct Function {
  Name name;
  std::vector<Name> params;
  Block body;
};

struct ConstDecl {
  Name name;
  ExprPtr value;
};

/// One parsed .kvt file.
struct Module {
  std::vector<Name> imports;
  std::vector<ConstDecl> constants;
  std::vector<Function> functions;
  std::vector<Kernel> kernels;
};

} // namespace kvarn::dsl::ast

#endif // KVARN_DSL_AST_H
