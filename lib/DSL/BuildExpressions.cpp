//===- BuildExpressions.cpp - names, constants, arithmetic, casts, fns ----===//
//
// Scalar arithmetic becomes arith ops. Constants are folded while building
// and take the type of their use (`x + 1` with x: i64 adds an i64 1); an i32
// meeting an i64 is sign-extended. Tiles have no arithmetic in the language:
// everything on a tile is a builtin (BuildBuiltins.cpp).
//
//===----------------------------------------------------------------------===//

#include "KvtBuilder.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

#include "llvm/ADT/APFloat.h"
#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/StringSwitch.h"

#include <charconv>
#include <cmath>

using namespace mlir;
using namespace kvarn;
using namespace kvarn::dsl;

//===----------------------------------------------------------------------===//
// Describing operands in messages
//===----------------------------------------------------------------------===//

std::string KvtBuilder::describe(Type type) {
  if (auto tile = dyn_cast<kvt::TileType>(type)) {
    std::string s = "tile<";
    for (int64_t d : tile.getShape())
      s += std::to_string(d) + "x";
    return s + describe(tile.getElementType()) + ">";
  }
  if (auto ptr = dyn_cast<kvt::PointerType>(type))
    return "ptr<" + describe(ptr.getPointeeType()) + ">";
  if (type.isInteger(1))
    return "a condition (i1)";
  std::string s;
  llvm::raw_string_ostream os(s);
  os << type;
  return s;
}

std::string KvtBuilder::describe(const Operand &operand) {
  switch (operand.kind) {
  case Operand::Kind::None: return "no value";
  case Operand::Kind::Int: return "the integer constant " + std::to_string(operand.intValue);
  case Operand::Kind::Float: return "a float constant";
  case Operand::Kind::Bool: return "a compile-time condition";
  case Operand::Kind::Value: return describe(operand.getType());
  case Operand::Kind::Tuple:
    return std::to_string(operand.elements.size()) + " values";
  }
  return "?";
}

//===----------------------------------------------------------------------===//
// Materializing constants
//===----------------------------------------------------------------------===//

static bool isIntegerScalar(Type t) {
  return t.isInteger(8) || t.isInteger(32) || t.isInteger(64);
}
static bool isIndexInteger(Type t) { return t.isInteger(32) || t.isInteger(64); }
static bool isFloatScalar(Type t) { return t.isF16() || t.isBF16() || t.isF32(); }

/// The shortest text that reads back as `v` (1e+30, 0.1, inf, nan).
static std::string formatFloat(double v) {
  if (std::isnan(v))
    return "nan"; // INF - INF is -nan on x86, a sign nobody asked for
  char text[32];
  auto [end, ec] = std::to_chars(text, text + sizeof text, v);
  return ec == std::errc() ? std::string(text, end) : std::string("?");
}

/// Whether a finite `v` becomes infinite in the float type `t`: a constant
/// must not silently turn into inf (+-inf and NaN themselves stay).
static bool overflowsFloat(double v, Type t) {
  if (!std::isfinite(v))
    return false;
  llvm::APFloat f(v);
  bool lost = false;
  f.convert(cast<FloatType>(t).getFloatSemantics(),
            llvm::APFloat::rmNearestTiesToEven, &lost);
  return f.isInfinity();
}

static bool fitsIn(int64_t v, Type t) {
  if (t.isInteger(8))
    return v >= -128 && v <= 255; // bytes are written either way
  if (t.isInteger(32))
    return v >= INT32_MIN && v <= INT32_MAX;
  return t.isInteger(64);
}

FailureOr<Value> KvtBuilder::materialize(const Operand &operand, Type type) {
  Location at = loc(operand.loc);
  switch (operand.kind) {
  case Operand::Kind::Value:
    return operand.value;
  case Operand::Kind::Int:
    if (isIntegerScalar(type)) {
      if (!fitsIn(operand.intValue, type))
        return error(operand.loc, "the constant " +
                                      llvm::Twine(operand.intValue) +
                                      " does not fit in " + describe(type));
      return Value(arith::ConstantOp::create(
          builder, at, builder.getIntegerAttr(type, operand.intValue)));
    }
    if (isFloatScalar(type)) {
      if (overflowsFloat(double(operand.intValue), type))
        return error(operand.loc, "the constant " +
                                      llvm::Twine(operand.intValue) +
                                      " does not fit in " + describe(type));
      return Value(arith::ConstantOp::create(
          builder, at, builder.getFloatAttr(type, double(operand.intValue))));
    }
    break;
  case Operand::Kind::Float:
    if (isFloatScalar(type)) {
      if (overflowsFloat(operand.floatValue, type))
        return error(operand.loc, "the constant " +
                                      formatFloat(operand.floatValue) +
                                      " does not fit in " + describe(type));
      return Value(arith::ConstantOp::create(
          builder, at, builder.getFloatAttr(type, operand.floatValue)));
    }
    if (isIntegerScalar(type))
      return error(operand.loc, "a float constant cannot be used as " +
                                    describe(type) + "; convert it with " +
                                    describe(type) + "(...)");
    break;
  case Operand::Kind::Bool:
    if (type.isInteger(1))
      return Value(arith::ConstantOp::create(
          builder, at, builder.getBoolAttr(operand.boolValue)));
    break;
  case Operand::Kind::None:
  case Operand::Kind::Tuple:
    break;
  }
  return error(operand.loc,
               "expected " + describe(type) + ", got " + describe(operand));
}

FailureOr<Value> KvtBuilder::materializeDefault(const Operand &operand) {
  switch (operand.kind) {
  case Operand::Kind::Value:
    return operand.value;
  case Operand::Kind::Int:
    return materialize(operand, fitsIn(operand.intValue, builder.getI32Type())
                                    ? builder.getI32Type()
                                    : builder.getI64Type());
  case Operand::Kind::Float:
    return materialize(operand, builder.getF32Type());
  case Operand::Kind::Bool:
    return materialize(operand, builder.getI1Type());
  case Operand::Kind::None:
    return error(operand.loc, "this expression has no value");
  case Operand::Kind::Tuple:
    return error(operand.loc,
                 "several values where one is expected; bind them with "
                 "'let a, b = ...'");
  }
  return failure();
}

FailureOr<Value> KvtBuilder::toIndex64(const Operand &operand,
                                       const llvm::Twine &what) {
  Type i64 = builder.getI64Type();
  if (operand.kind == Operand::Kind::Int)
    return materialize(operand, i64);
  if (operand.isValue() && isIndexInteger(operand.getType())) {
    if (operand.getType().isInteger(64))
      return operand.value;
    return Value(arith::ExtSIOp::create(builder, loc(operand.loc), i64,
                                        operand.value));
  }
  return error(operand.loc,
               what + " must be an i32 or i64 integer, not " + describe(operand));
}

FailureOr<std::pair<Value, Value>>
KvtBuilder::unifyScalars(const Operand &lhs, const Operand &rhs,
                         llvm::StringRef opName, llvm::SMLoc at) {
  for (const Operand *o : {&lhs, &rhs}) {
    if (o->isConstant())
      continue;
    if (!o->isValue())
      return error(o->loc, "'" + opName + "' needs a value, got " + describe(*o));
    if (isa<kvt::TileType>(o->getType()))
      return error(o->loc, "'" + opName + "' works on scalars, not " +
                               describe(o->getType()) +
                               "; tiles have builtins instead of operators");
    if (isa<kvt::PointerType>(o->getType()))
      return error(o->loc, "'" + opName + "' does not apply to pointers; "
                           "offsets are separate integer arguments");
  }
  FailureOr<Value> l = lhs.isConstant() && rhs.isValue()
                           ? materialize(lhs, rhs.getType())
                           : materializeDefault(lhs);
  if (failed(l))
    return failure();
  FailureOr<Value> r = rhs.isConstant() ? materialize(rhs, l->getType())
                                        : materializeDefault(rhs);
  if (failed(r))
    return failure();
  Type lt = l->getType(), rt = r->getType();
  if (lt == rt)
    return std::make_pair(*l, *r);
  if (isIndexInteger(lt) && isIndexInteger(rt)) {
    Type i64 = builder.getI64Type();
    Location where = loc(at);
    if (lt.isInteger(32))
      l = Value(arith::ExtSIOp::create(builder, where, i64, *l));
    else
      r = Value(arith::ExtSIOp::create(builder, where, i64, *r));
    return std::make_pair(*l, *r);
  }
  return error(at, "'" + opName + "' cannot combine " + describe(lt) +
                       " and " + describe(rt) +
                       "; convert one of them, e.g. with f32(...) or i64(...)");
}

//===----------------------------------------------------------------------===//
// Expressions
//===----------------------------------------------------------------------===//

FailureOr<Operand> KvtBuilder::buildExpr(const ast::Expr &expr) {
  switch (expr.getKind()) {
  case ast::Expr::Kind::Integer:
    return Operand::ofInt(cast<ast::IntegerExpr>(expr).getValue(), expr.getLoc());
  case ast::Expr::Kind::Float:
    return Operand::ofFloat(cast<ast::FloatExpr>(expr).getValue(), expr.getLoc());
  case ast::Expr::Kind::Name:
    return buildName(cast<ast::NameExpr>(expr));
  case ast::Expr::Kind::Call:
    return buildCall(cast<ast::CallExpr>(expr));
  case ast::Expr::Kind::Index:
    return buildLoad(cast<ast::IndexExpr>(expr));
  case ast::Expr::Kind::Unary:
    return buildUnary(cast<ast::UnaryExpr>(expr));
  case ast::Expr::Kind::Binary: {
    const auto &binary = cast<ast::BinaryExpr>(expr);
    if (binary.getOp() == ast::BinaryOp::And ||
        binary.getOp() == ast::BinaryOp::Or)
      return buildLogical(binary);
    return buildBinary(binary);
  }
  case ast::Expr::Kind::List:
    return error(expr.getLoc(), "a list '[...]' is only allowed as the shape "
                                "or strides of a tile builtin");
  }
  return failure();
}

FailureOr<Operand> KvtBuilder::buildSingle(const ast::Expr &expr) {
  FailureOr<Operand> value = buildExpr(expr);
  if (failed(value))
    return failure();
  if (value->kind == Operand::Kind::Tuple) {
    llvm::StringRef callee = "this call";
    if (const auto *call = dyn_cast<ast::CallExpr>(&expr))
      callee = call->getCallee();
    return error(expr.getLoc(), "'" + callee + "' returns " +
                                    llvm::Twine(value->elements.size()) +
                                    " values; bind them with 'let a, b = ...'");
  }
  if (value->kind == Operand::Kind::None)
    return error(expr.getLoc(), "this call returns no value");
  value->loc = expr.getLoc();
  return value;
}

FailureOr<Operand> KvtBuilder::buildName(const ast::NameExpr &expr) {
  llvm::StringRef name = expr.getName();
  if (Variable *var = lookupVariable(name)) {
    if (var->operand.kind == Operand::Kind::None) {
      InFlightDiagnostic diag = emitError(expr.getLoc())
                                << "'" << name
                                << "' is used before it has a value on "
                                   "every path";
      diag.attachNote(loc(var->declLoc)) << "declared here";
      return failure();
    }
    Operand result = var->operand;
    result.loc = expr.getLoc();
    return result;
  }
  if (const Operand *c = lookupGlobalConstant(name)) {
    Operand result = *c;
    result.loc = expr.getLoc();
    return result;
  }
  if (lookupFunction(name) || isBuiltinName(name))
    return error(expr.getLoc(), "'" + name + "' is a function; call it as " +
                                    name + "(...)");
  return error(expr.getLoc(), "unknown name '" + name + "'");
}

FailureOr<Operand> KvtBuilder::buildUnary(const ast::UnaryExpr &expr) {
  FailureOr<Operand> operand = buildSingle(expr.getOperand());
  if (failed(operand))
    return failure();
  llvm::SMLoc at = expr.getLoc();
  Location where = loc(at);
  if (expr.getOp() == ast::UnaryOp::Not) {
    if (operand->kind == Operand::Kind::Bool)
      return Operand::ofBool(!operand->boolValue, at);
    if (operand->isValue() && operand->getType().isInteger(1)) {
      Value one = arith::ConstantOp::create(builder, where, builder.getBoolAttr(true));
      return Operand::ofValue(
          arith::XOrIOp::create(builder, where, operand->value, one), at);
    }
    return error(at, "'!' needs a condition, not " + describe(*operand));
  }
  switch (operand->kind) {
  case Operand::Kind::Int:
    if (operand->intValue == INT64_MIN)
      return error(at, "the negated constant does not fit in 64 bits");
    return Operand::ofInt(-operand->intValue, at);
  case Operand::Kind::Float:
    return Operand::ofFloat(-operand->floatValue, at);
  case Operand::Kind::Value: {
    Type t = operand->getType();
    if (isIndexInteger(t)) {
      Value zero = arith::ConstantOp::create(builder, where, builder.getIntegerAttr(t, 0));
      return Operand::ofValue(
          arith::SubIOp::create(builder, where, zero, operand->value), at);
    }
    if (t.isF32())
      return Operand::ofValue(arith::NegFOp::create(builder, where, operand->value), at);
    break;
  }
  default:
    break;
  }
  return error(at, "'-' needs an i32, i64 or f32 value, not " + describe(*operand));
}

/// Folds `lhs op rhs` of two compile-time constants.
static FailureOr<Operand> foldConstants(KvtBuilder &kb, ast::BinaryOp op,
                                        const Operand &lhs, const Operand &rhs,
                                        llvm::SMLoc at) {
  using ast::BinaryOp;
  bool isCompare = op == BinaryOp::Eq || op == BinaryOp::Ne ||
                   op == BinaryOp::Lt || op == BinaryOp::Le ||
                   op == BinaryOp::Gt || op == BinaryOp::Ge;
  if (lhs.kind == Operand::Kind::Bool || rhs.kind == Operand::Kind::Bool) {
    if (lhs.kind != rhs.kind || (op != BinaryOp::Eq && op != BinaryOp::Ne))
      return kb.error(at, "'" + ast::spell(op) +
                              "' does not apply to compile-time conditions");
    return Operand::ofBool((lhs.boolValue == rhs.boolValue) == (op == BinaryOp::Eq), at);
  }
  auto compare = [&](auto a, auto b) {
    switch (op) {
    case BinaryOp::Eq: return a == b;
    case BinaryOp::Ne: return a != b;
    case BinaryOp::Lt: return a < b;
    case BinaryOp::Le: return a <= b;
    case BinaryOp::Gt: return a > b;
    default: return a >= b;
    }
  };
  if (lhs.kind == Operand::Kind::Int && rhs.kind == Operand::Kind::Int) {
    int64_t a = lhs.intValue, b = rhs.intValue, r = 0;
    if (isCompare)
      return Operand::ofBool(compare(a, b), at);
    bool overflow = false;
    switch (op) {
    case BinaryOp::Add: overflow = __builtin_add_overflow(a, b, &r); break;
    case BinaryOp::Sub: overflow = __builtin_sub_overflow(a, b, &r); break;
    case BinaryOp::Mul: overflow = __builtin_mul_overflow(a, b, &r); break;
    case BinaryOp::Div:
    case BinaryOp::Rem:
      if (b == 0)
        return kb.error(at, "division by zero in a constant expression");
      if (a == INT64_MIN && b == -1)
        overflow = true;
      else
        r = op == BinaryOp::Div ? a / b : a % b;
      break;
    default: break;
    }
    if (overflow)
      return kb.error(at, "the constant expression overflows 64 bits");
    return Operand::ofInt(r, at);
  }
  double a = lhs.kind == Operand::Kind::Int ? double(lhs.intValue) : lhs.floatValue;
  double b = rhs.kind == Operand::Kind::Int ? double(rhs.intValue) : rhs.floatValue;
  if (isCompare)
    return Operand::ofBool(compare(a, b), at);
  switch (op) {
  case BinaryOp::Add: return Operand::ofFloat(a + b, at);
  case BinaryOp::Sub: return Operand::ofFloat(a - b, at);
  case BinaryOp::Mul: return Operand::ofFloat(a * b, at);
  case BinaryOp::Div: return Operand::ofFloat(a / b, at);
  case BinaryOp::Rem: return Operand::ofFloat(std::fmod(a, b), at);
  default: break;
  }
  return kb.error(at, "'" + ast::spell(op) + "' does not apply to numbers");
}

FailureOr<Operand> KvtBuilder::buildBinary(const ast::BinaryExpr &expr) {
  FailureOr<Operand> lhs = buildSingle(expr.getLhs());
  if (failed(lhs))
    return failure();
  FailureOr<Operand> rhs = buildSingle(expr.getRhs());
  if (failed(rhs))
    return failure();
  return buildArithmetic(expr.getOp(), *lhs, *rhs, expr.getLoc());
}

FailureOr<Operand> KvtBuilder::buildArithmetic(ast::BinaryOp op, Operand lhs,
                                               Operand rhs, llvm::SMLoc at) {
  using ast::BinaryOp;
  if (lhs.isConstant() && rhs.isConstant())
    return foldConstants(*this, op, lhs, rhs, at);
  FailureOr<std::pair<Value, Value>> operands =
      unifyScalars(lhs, rhs, ast::spell(op), at);
  if (failed(operands))
    return failure();
  auto [l, r] = *operands;
  Type t = l.getType();
  Location where = loc(at);
  auto result = [&](Value v) { return Operand::ofValue(v, at); };

  if (isIndexInteger(t)) {
    switch (op) {
    case BinaryOp::Add: return result(arith::AddIOp::create(builder, where, l, r));
    case BinaryOp::Sub: return result(arith::SubIOp::create(builder, where, l, r));
    case BinaryOp::Mul: return result(arith::MulIOp::create(builder, where, l, r));
    case BinaryOp::Div: return result(arith::DivSIOp::create(builder, where, l, r));
    case BinaryOp::Rem: return result(arith::RemSIOp::create(builder, where, l, r));
    case BinaryOp::Eq: return result(arith::CmpIOp::create(builder, where, arith::CmpIPredicate::eq, l, r));
    case BinaryOp::Ne: return result(arith::CmpIOp::create(builder, where, arith::CmpIPredicate::ne, l, r));
    case BinaryOp::Lt: return result(arith::CmpIOp::create(builder, where, arith::CmpIPredicate::slt, l, r));
    case BinaryOp::Le: return result(arith::CmpIOp::create(builder, where, arith::CmpIPredicate::sle, l, r));
    case BinaryOp::Gt: return result(arith::CmpIOp::create(builder, where, arith::CmpIPredicate::sgt, l, r));
    case BinaryOp::Ge: return result(arith::CmpIOp::create(builder, where, arith::CmpIPredicate::sge, l, r));
    default: break;
    }
  } else if (t.isF32()) {
    switch (op) {
    case BinaryOp::Add: return result(arith::AddFOp::create(builder, where, l, r));
    case BinaryOp::Sub: return result(arith::SubFOp::create(builder, where, l, r));
    case BinaryOp::Mul: return result(arith::MulFOp::create(builder, where, l, r));
    case BinaryOp::Div: return result(arith::DivFOp::create(builder, where, l, r));
    case BinaryOp::Rem: return result(arith::RemFOp::create(builder, where, l, r));
    case BinaryOp::Eq: return result(arith::CmpFOp::create(builder, where, arith::CmpFPredicate::OEQ, l, r));
    case BinaryOp::Ne: return result(arith::CmpFOp::create(builder, where, arith::CmpFPredicate::UNE, l, r));
    case BinaryOp::Lt: return result(arith::CmpFOp::create(builder, where, arith::CmpFPredicate::OLT, l, r));
    case BinaryOp::Le: return result(arith::CmpFOp::create(builder, where, arith::CmpFPredicate::OLE, l, r));
    case BinaryOp::Gt: return result(arith::CmpFOp::create(builder, where, arith::CmpFPredicate::OGT, l, r));
    case BinaryOp::Ge: return result(arith::CmpFOp::create(builder, where, arith::CmpFPredicate::OGE, l, r));
    default: break;
    }
  } else if (t.isInteger(1)) {
    if (op == BinaryOp::Eq || op == BinaryOp::Ne)
      return result(arith::CmpIOp::create(
          builder, where,
          op == BinaryOp::Eq ? arith::CmpIPredicate::eq : arith::CmpIPredicate::ne,
          l, r));
    return error(at, "'" + ast::spell(op) + "' does not apply to conditions");
  }
  return error(at, "'" + ast::spell(op) + "' does not apply to " + describe(t) +
                       "; convert with i32(...) or f32(...) first");
}

/// Whether evaluating `expr` reads memory (and must not run when a guarding
/// condition is false).
static bool readsMemory(const KvtBuilder &kb, const ast::Expr &expr) {
  switch (expr.getKind()) {
  case ast::Expr::Kind::Index:
    return true;
  case ast::Expr::Kind::Call: {
    const auto &call = cast<ast::CallExpr>(expr);
    llvm::StringRef callee = call.getCallee();
    if (callee == "load_tile" || callee == "load_field" ||
        kb.lookupFunction(callee))
      return true;
    for (const ast::ExprPtr &arg : call.getArgs())
      if (readsMemory(kb, *arg))
        return true;
    return false;
  }
  case ast::Expr::Kind::Unary:
    return readsMemory(kb, cast<ast::UnaryExpr>(expr).getOperand());
  case ast::Expr::Kind::Binary: {
    const auto &binary = cast<ast::BinaryExpr>(expr);
    return readsMemory(kb, binary.getLhs()) || readsMemory(kb, binary.getRhs());
  }
  case ast::Expr::Kind::List:
    for (const ast::ExprPtr &e : cast<ast::ListExpr>(expr).getElements())
      if (readsMemory(kb, *e))
        return true;
    return false;
  default:
    return false;
  }
}

FailureOr<Operand> KvtBuilder::buildLogical(const ast::BinaryExpr &expr) {
  bool isAnd = expr.getOp() == ast::BinaryOp::And;
  llvm::SMLoc at = expr.getLoc();
  auto asCondition = [&](const Operand &o) -> FailureOr<Value> {
    if (o.kind == Operand::Kind::Bool)
      return materialize(o, builder.getI1Type());
    if (o.isValue() && o.getType().isInteger(1))
      return o.value;
    return error(o.loc, "'" + ast::spell(expr.getOp()) +
                            "' needs conditions, not " + describe(o));
  };
  FailureOr<Operand> lhs = buildSingle(expr.getLhs());
  if (failed(lhs))
    return failure();
  // A compile-time left side decides without building the right side.
  if (lhs->kind == Operand::Kind::Bool) {
    if (lhs->boolValue != isAnd)
      return Operand::ofBool(lhs->boolValue, at);
    FailureOr<Operand> rhs = buildSingle(expr.getRhs());
    if (failed(rhs))
      return failure();
    if (rhs->kind == Operand::Kind::Bool)
      return *rhs;
    FailureOr<Value> r = asCondition(*rhs);
    if (failed(r))
      return failure();
    return Operand::ofValue(*r, at);
  }
  FailureOr<Value> l = asCondition(*lhs);
  if (failed(l))
    return failure();
  Location where = loc(at);
  if (!readsMemory(*this, expr.getRhs())) {
    FailureOr<Operand> rhs = buildSingle(expr.getRhs());
    if (failed(rhs))
      return failure();
    FailureOr<Value> r = asCondition(*rhs);
    if (failed(r))
      return failure();
    if (isAnd)
      return Operand::ofValue(arith::AndIOp::create(builder, where, *l, *r), at);
    return Operand::ofValue(arith::OrIOp::create(builder, where, *l, *r), at);
  }
  // The right side loads: evaluate it only when it decides the result, so
  // `i < n && p[i] > 0` never reads p[n].
  auto ifOp = scf::IfOp::create(builder, where, builder.getI1Type(), *l,
                                /*withElseRegion=*/true);
  OpBuilder::InsertionGuard guard(builder);
  Block &evaluate = isAnd ? ifOp.getThenRegion().front()
                          : ifOp.getElseRegion().front();
  Block &decided = isAnd ? ifOp.getElseRegion().front()
                         : ifOp.getThenRegion().front();
  builder.setInsertionPointToEnd(&decided);
  Value known = arith::ConstantOp::create(builder, where, builder.getBoolAttr(!isAnd));
  scf::YieldOp::create(builder, where, known);
  builder.setInsertionPointToEnd(&evaluate);
  FailureOr<Operand> rhs = buildSingle(expr.getRhs());
  if (failed(rhs))
    return failure();
  FailureOr<Value> r = asCondition(*rhs);
  if (failed(r))
    return failure();
  scf::YieldOp::create(builder, where, *r);
  return Operand::ofValue(ifOp.getResult(0), at);
}

FailureOr<Operand> KvtBuilder::buildLoad(const ast::IndexExpr &expr) {
  FailureOr<Operand> base = buildSingle(expr.getBase());
  if (failed(base))
    return failure();
  if (!base->isValue() || !isa<kvt::PointerType>(base->getType()))
    return error(expr.getBase().getLoc(),
                 "only a pointer can be indexed, not " + describe(*base));
  FailureOr<Operand> index = buildSingle(expr.getIndex());
  if (failed(index))
    return failure();
  FailureOr<Value> idx = materializeDefault(*index);
  if (failed(idx))
    return failure();
  if (!isIndexInteger(idx->getType()))
    return error(expr.getIndex().getLoc(),
                 "an index must be i32 or i64, not " + describe(idx->getType()));
  FailureOr<kvt::LoadOp> load =
      createVerified<kvt::LoadOp>(expr.getLoc(), base->value, *idx);
  if (failed(load))
    return failure();
  return Operand::ofValue(*load, expr.getLoc());
}

//===----------------------------------------------------------------------===//
// Calls: casts, min/max/cdiv, fns; the kvt builtins are in BuildBuiltins.cpp
//===----------------------------------------------------------------------===//

Type KvtBuilder::activationType() {
  switch (spec.dtype) {
  case DType::F16: return builder.getF16Type();
  case DType::BF16: return builder.getBF16Type();
  }
  llvm_unreachable("unknown dtype");
}

Type KvtBuilder::conversionTarget(llvm::StringRef name) {
  if (name == llvm::StringRef(kActivationTypeName))
    return activationType();
  return llvm::StringSwitch<Type>(name)
      .Case("i8", builder.getI8Type())
      .Case("i32", builder.getI32Type())
      .Case("i64", builder.getI64Type())
      .Case("f16", builder.getF16Type())
      .Case("bf16", builder.getBF16Type())
      .Case("f32", builder.getF32Type())
      .Default(Type());
}

FailureOr<Operand> KvtBuilder::buildCall(const ast::CallExpr &call) {
  llvm::StringRef callee = call.getCallee();
  if (Type target = conversionTarget(callee))
    return buildCast(target, call);
  if (callee == "min" || callee == "max")
    return buildMinMax(call, callee == "max");
  if (callee == "cdiv")
    return buildCeilDiv(call);
  if (const ast::Function *fn = lookupFunction(callee))
    return inlineFunction(*fn, call);
  if (std::optional<FailureOr<Operand>> result = buildBuiltin(call))
    return *result;
  if (lookupVariable(callee) || lookupGlobalConstant(callee))
    return error(call.getLoc(), "'" + callee + "' is not a function");
  return error(call.getLoc(), "unknown function '" + callee + "'");
}

static LogicalResult checkArity(KvtBuilder &kb, const ast::CallExpr &call,
                                size_t count) {
  if (call.getArgs().size() == count)
    return success();
  return kb.error(call.getLoc(), "'" + call.getCallee() + "' takes " +
                                     llvm::Twine(count) +
                                     (count == 1 ? " argument" : " arguments") +
                                     ", got " +
                                     llvm::Twine(call.getArgs().size()));
}

FailureOr<Operand> KvtBuilder::buildCast(Type target,
                                         const ast::CallExpr &call) {
  if (failed(checkArity(*this, call, 1)))
    return failure();
  FailureOr<Operand> in = buildSingle(*call.getArgs()[0]);
  if (failed(in))
    return failure();
  llvm::SMLoc at = call.getLoc();
  Location where = loc(at);
  if (in->kind == Operand::Kind::Bool)
    in = Operand::ofInt(in->boolValue ? 1 : 0, in->loc);
  if (in->kind == Operand::Kind::Float && isIntegerScalar(target)) {
    // Truncates toward zero, like arith.fptosi; checked before the C++ cast,
    // which is undefined for NaN, infinities and values out of int64 range.
    double t = std::trunc(in->floatValue);
    if (!(t >= -0x1p63 && t < 0x1p63) || !fitsIn(int64_t(t), target))
      return error(in->loc, "the constant " + formatFloat(in->floatValue) +
                                " does not fit in " + describe(target));
    in = Operand::ofInt(int64_t(t), in->loc);
  }
  if (in->isConstant()) {
    FailureOr<Value> v = materialize(*in, target);
    if (failed(v))
      return failure();
    return Operand::ofValue(*v, at);
  }
  Type source = in->getType();
  Value v = in->value;
  if (auto tile = dyn_cast<kvt::TileType>(source)) {
    auto result = kvt::TileType::getChecked(
        [&] { return emitError(at); }, ctx(), tile.getShape(), target);
    if (!result)
      return failure();
    FailureOr<kvt::ConvertOp> convert =
        createVerified<kvt::ConvertOp>(at, result, v);
    if (failed(convert))
      return failure();
    return Operand::ofValue(*convert, at);
  }
  if (isa<kvt::PointerType>(source))
    return error(at, "a pointer cannot be converted");
  if (source == target)
    return Operand::ofValue(v, at);
  if (source.isInteger(1)) {
    if (isIntegerScalar(target))
      return Operand::ofValue(arith::ExtUIOp::create(builder, where, target, v), at);
    return Operand::ofValue(arith::UIToFPOp::create(builder, where, target, v), at);
  }
  unsigned sw = source.getIntOrFloatBitWidth(), tw = target.getIntOrFloatBitWidth();
  if (isIntegerScalar(source) && isIntegerScalar(target)) {
    if (sw < tw)
      return Operand::ofValue(arith::ExtSIOp::create(builder, where, target, v), at);
    return Operand::ofValue(arith::TruncIOp::create(builder, where, target, v), at);
  }
  if (isIntegerScalar(source))
    return Operand::ofValue(arith::SIToFPOp::create(builder, where, target, v), at);
  if (isIntegerScalar(target))
    return Operand::ofValue(arith::FPToSIOp::create(builder, where, target, v), at);
  // float to float: f16 <-> bf16 has no order, so go through f32.
  if (sw == tw) {
    Value wide = arith::ExtFOp::create(builder, where, builder.getF32Type(), v);
    return Operand::ofValue(arith::TruncFOp::create(builder, where, target, wide), at);
  }
  if (sw < tw)
    return Operand::ofValue(arith::ExtFOp::create(builder, where, target, v), at);
  return Operand::ofValue(arith::TruncFOp::create(builder, where, target, v), at);
}

FailureOr<Operand> KvtBuilder::buildMinMax(const ast::CallExpr &call,
                                           bool isMax) {
  if (failed(checkArity(*this, call, 2)))
    return failure();
  FailureOr<Operand> a = buildSingle(*call.getArgs()[0]);
  if (failed(a))
    return failure();
  FailureOr<Operand> b = buildSingle(*call.getArgs()[1]);
  if (failed(b))
    return failure();
  llvm::SMLoc at = call.getLoc();
  if (a->isConstant() && b->isConstant()) {
    FailureOr<Operand> less =
        foldConstants(*this, ast::BinaryOp::Lt, *a, *b, at);
    if (failed(less))
      return failure();
    return (less->boolValue != isMax) ? *a : *b;
  }
  FailureOr<std::pair<Value, Value>> operands =
      unifyScalars(*a, *b, call.getCallee(), at);
  if (failed(operands))
    return failure();
  auto [l, r] = *operands;
  Location where = loc(at);
  if (isIndexInteger(l.getType()))
    return Operand::ofValue(
        isMax ? Value(arith::MaxSIOp::create(builder, where, l, r))
              : Value(arith::MinSIOp::create(builder, where, l, r)),
        at);
  if (l.getType().isF32())
    return Operand::ofValue(
        isMax ? Value(arith::MaximumFOp::create(builder, where, l, r))
              : Value(arith::MinimumFOp::create(builder, where, l, r)),
        at);
  return error(at, "'" + call.getCallee() + "' needs i32, i64 or f32 values, not " +
                       describe(l.getType()));
}

FailureOr<Operand> KvtBuilder::buildCeilDiv(const ast::CallExpr &call) {
  if (failed(checkArity(*this, call, 2)))
    return failure();
  FailureOr<Operand> a = buildSingle(*call.getArgs()[0]);
  if (failed(a))
    return failure();
  FailureOr<Operand> b = buildSingle(*call.getArgs()[1]);
  if (failed(b))
    return failure();
  llvm::SMLoc at = call.getLoc();
  for (const Operand *o : {&*a, &*b})
    if (o->kind == Operand::Kind::Float ||
        (o->isValue() && !isIndexInteger(o->getType())))
      return error(o->loc, "'cdiv' needs integers, not " + describe(*o));
  if (a->kind == Operand::Kind::Int && b->kind == Operand::Kind::Int) {
    if (b->intValue == 0)
      return error(at, "division by zero in a constant expression");
    if (a->intValue == INT64_MIN && b->intValue == -1) // traps (SIGFPE)
      return error(at, "the constant expression overflows 64 bits");
    int64_t q = a->intValue / b->intValue;
    bool roundUp = (a->intValue % b->intValue != 0) &&
                   ((a->intValue < 0) == (b->intValue < 0));
    return Operand::ofInt(q + (roundUp ? 1 : 0), at);
  }
  FailureOr<std::pair<Value, Value>> operands = unifyScalars(*a, *b, "cdiv", at);
  if (failed(operands))
    return failure();
  return Operand::ofValue(arith::CeilDivSIOp::create(builder, loc(at),
                                                     operands->first,
                                                     operands->second),
                          at);
}

FailureOr<Operand> KvtBuilder::inlineFunction(const ast::Function &fn,
                                              const ast::CallExpr &call) {
  llvm::SMLoc at = call.getLoc();
  if (call.getArgs().size() != fn.params.size()) {
    InFlightDiagnostic diag =
        emitError(at) << "'" << fn.name.text << "' takes " << fn.params.size()
                      << (fn.params.size() == 1 ? " argument" : " arguments")
                      << ", got " << call.getArgs().size();
    diag.attachNote(loc(fn.name.loc)) << "'" << fn.name.text << "' is defined here";
    return failure();
  }
  if (llvm::is_contained(activeFunctions, &fn))
    return error(at, "'" + fn.name.text +
                         "' calls itself; fns are inlined, so recursion is "
                         "not supported");
  if (activeFunctions.size() >= kMaxInlineDepth)
    return error(at, "fn calls are nested deeper than " +
                         llvm::Twine(kMaxInlineDepth) + " levels");
  if (++inlinedCalls > kMaxInlinedCalls)
    return error(at, "the kernel inlines more than " +
                         llvm::Twine(kMaxInlinedCalls) + " fn calls");
  SmallVector<Operand> args;
  for (const ast::ExprPtr &arg : call.getArgs()) {
    FailureOr<Operand> v = buildSingle(*arg);
    if (failed(v))
      return failure();
    args.push_back(*v);
  }

  // A fresh frame: the caller's variables are not visible in the body.
  size_t savedFrameBase = frameBase;
  frameBase = scopes.size();
  callSites.push_back(loc(at));
  activeFunctions.push_back(&fn);
  pushScope();
  llvm::scope_exit leave([&] {
    popScope();
    activeFunctions.pop_back();
    callSites.pop_back();
    frameBase = savedFrameBase;
  });

  for (auto [param, arg] : llvm::zip(fn.params, args)) {
    FailureOr<Variable *> var = declare(param, Variable::Role::Parameter);
    if (failed(var))
      return failure();
    (*var)->operand = arg;
    (*var)->type = arg.getType();
  }
  const auto &stmts = fn.body.stmts;
  const ast::ReturnStmt *ret =
      stmts.empty() ? nullptr : dyn_cast<ast::ReturnStmt>(stmts.back().get());
  for (size_t i = 0, e = stmts.size() - (ret ? 1 : 0); i < e; ++i)
    if (failed(buildStmt(*stmts[i])))
      return failure();
  if (!ret)
    return Operand(); // no value
  if (ret->getValues().size() == 1)
    return buildExpr(*ret->getValues()[0]); // may forward several results
  Operand tuple;
  tuple.kind = Operand::Kind::Tuple;
  tuple.loc = at;
  for (const ast::ExprPtr &value : ret->getValues()) {
    FailureOr<Operand> v = buildSingle(*value);
    if (failed(v))
      return failure();
    tuple.elements.push_back(*v);
  }
  return tuple;
}
