//===- BuildStatements.cpp - statements and structured control flow -------===//
//
// Variables are SSA names: an assignment rebinds the name. `if` becomes an
// scf.if and `for` an scf.for that carry the outer variables their bodies
// assign (found by a scan of the body before it is built), the way Triton's
// code generator turns Python control flow into scf.
//
//===----------------------------------------------------------------------===//

#include "KvtBuilder.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

#include "llvm/ADT/StringSet.h"

using namespace mlir;
using namespace kvarn;
using namespace kvarn::dsl;

LogicalResult KvtBuilder::buildBlock(const ast::Block &block) {
  pushScope();
  for (const ast::StmtPtr &stmt : block.stmts)
    if (failed(buildStmt(*stmt))) {
      popScope();
      return failure();
    }
  popScope();
  return success();
}

LogicalResult KvtBuilder::buildStmt(const ast::Stmt &stmt) {
  switch (stmt.getKind()) {
  case ast::Stmt::Kind::Let:
    return buildLet(llvm::cast<ast::LetStmt>(stmt));
  case ast::Stmt::Kind::Assign:
    return buildAssign(llvm::cast<ast::AssignStmt>(stmt));
  case ast::Stmt::Kind::Store:
    return buildStore(llvm::cast<ast::StoreStmt>(stmt));
  case ast::Stmt::Kind::If:
    return buildIf(llvm::cast<ast::IfStmt>(stmt));
  case ast::Stmt::Kind::For:
    return buildFor(llvm::cast<ast::ForStmt>(stmt));
  case ast::Stmt::Kind::Const:
    return buildConst(llvm::cast<ast::ConstStmt>(stmt));
  case ast::Stmt::Kind::Expr:
    return buildExprStmt(llvm::cast<ast::ExprStmt>(stmt));
  case ast::Stmt::Kind::Return:
    // inlineFunction handles the one allowed return itself.
    if (activeFunctions.empty())
      return error(stmt.getLoc(), "'return' is only allowed at the end of a "
                                  "fn; a kernel ends at its closing brace");
    return error(stmt.getLoc(),
                 "'return' must be the last statement of a fn body");
  }
  return failure();
}

/// The values of a multi-result call, or the one value of any other
/// expression, checked against the number of names they bind.
static FailureOr<SmallVector<Operand>>
destructure(KvtBuilder &kb, const Operand &value,
            ArrayRef<ast::Name> names, llvm::SMLoc at) {
  SmallVector<Operand> parts;
  if (value.kind == Operand::Kind::Tuple)
    parts.assign(value.elements.begin(), value.elements.end());
  else if (value.kind != Operand::Kind::None)
    parts.push_back(value);
  if (parts.size() != names.size()) {
    if (value.kind == Operand::Kind::None)
      return kb.error(at, "this call returns no value");
    return kb.error(at, (parts.size() == 1
                             ? llvm::Twine("one value")
                             : llvm::Twine(parts.size()) + " values") +
                            " cannot be bound to " + llvm::Twine(names.size()) +
                            (names.size() == 1 ? " name" : " names"));
  }
  return parts;
}

LogicalResult KvtBuilder::buildLet(const ast::LetStmt &stmt) {
  SmallVector<Operand> values;
  if (const ast::Expr *init = stmt.getInit()) {
    FailureOr<Operand> value = buildExpr(*init);
    if (failed(value))
      return failure();
    FailureOr<SmallVector<Operand>> parts =
        destructure(*this, *value, stmt.getNames(), init->getLoc());
    if (failed(parts))
      return failure();
    values = std::move(*parts);
  }
  for (auto [i, name] : llvm::enumerate(stmt.getNames())) {
    FailureOr<Variable *> var = declare(name, Variable::Role::Mutable);
    if (failed(var))
      return failure();
    if (values.empty())
      continue; // `let x;`: assigned later
    // A variable holds an SSA value: constants take their default type.
    FailureOr<Value> v = materializeDefault(values[i]);
    if (failed(v))
      return failure();
    (*var)->operand = Operand::ofValue(*v, name.loc);
    (*var)->type = v->getType();
  }
  return success();
}

LogicalResult KvtBuilder::assignVariable(const ast::Name &name,
                                         Operand value) {
  Variable *var = lookupVariable(name.text);
  if (!var) {
    if (lookupGlobalConstant(name.text))
      return error(name.loc, "cannot assign to constant '" + name.text + "'");
    return error(name.loc, "unknown variable '" + name.text +
                               "'; declare it with 'let' first");
  }
  switch (var->role) {
  case Variable::Role::Parameter:
    return error(name.loc, "cannot assign to parameter '" + name.text +
                               "'; copy it into a 'let' variable");
  case Variable::Role::LoopVar:
    return error(name.loc,
                 "cannot assign to loop variable '" + name.text + "'");
  case Variable::Role::Constant:
    return error(name.loc, "cannot assign to constant '" + name.text + "'");
  case Variable::Role::Mutable:
    break;
  }
  FailureOr<Value> v = var->type ? materialize(value, var->type)
                                 : materializeDefault(value);
  if (failed(v))
    return failure();
  if (isa<kvt::PointerType>(v->getType()))
    return error(name.loc, "pointer variables cannot be reassigned");
  if (var->type && v->getType() != var->type)
    return error(value.loc, "'" + name.text + "' is " + describe(var->type) +
                                "; cannot assign " + describe(v->getType()));
  var->operand = Operand::ofValue(*v, name.loc);
  var->type = v->getType();
  return success();
}

LogicalResult KvtBuilder::buildAssign(const ast::AssignStmt &stmt) {
  FailureOr<Operand> value = buildExpr(stmt.getValue());
  if (failed(value))
    return failure();
  FailureOr<SmallVector<Operand>> parts = destructure(
      *this, *value, stmt.getNames(), stmt.getValue().getLoc());
  if (failed(parts))
    return failure();
  for (auto [name, part] : llvm::zip(stmt.getNames(), *parts))
    if (failed(assignVariable(name, part)))
      return failure();
  return success();
}

LogicalResult KvtBuilder::buildStore(const ast::StoreStmt &stmt) {
  const ast::IndexExpr &target = stmt.getTarget();
  FailureOr<Operand> base = buildSingle(target.getBase());
  if (failed(base))
    return failure();
  auto ptrType = dyn_cast_or_null<kvt::PointerType>(base->getType());
  if (!ptrType)
    return error(target.getBase().getLoc(),
                 "only a pointer can be indexed, not " + describe(*base));
  FailureOr<Operand> index = buildSingle(target.getIndex());
  if (failed(index))
    return failure();
  FailureOr<Value> idx = materializeDefault(*index);
  if (failed(idx))
    return failure();
  if (!idx->getType().isInteger(32) && !idx->getType().isInteger(64))
    return error(target.getIndex().getLoc(),
                 "an index must be i32 or i64, not " + describe(idx->getType()));
  FailureOr<Operand> value = buildSingle(stmt.getValue());
  if (failed(value))
    return failure();
  FailureOr<Value> v = materialize(*value, ptrType.getPointeeType());
  if (failed(v))
    return failure();
  if (v->getType() != ptrType.getPointeeType())
    return error(stmt.getValue().getLoc(),
                 "cannot store " + describe(v->getType()) + " through " +
                     describe(ptrType) + "; convert it with " +
                     describe(ptrType.getPointeeType()) + "(...)");
  return failure(failed(
      createVerified<kvt::StoreOp>(stmt.getLoc(), *v, base->value, *idx)));
}

LogicalResult KvtBuilder::buildConst(const ast::ConstStmt &stmt) {
  FailureOr<Operand> value = buildSingle(stmt.getValue());
  if (failed(value))
    return failure();
  if (!value->isConstant() || value->kind == Operand::Kind::Bool)
    return error(stmt.getValue().getLoc(),
                 "the value of constant '" + stmt.getName().text +
                     "' must be a compile-time number");
  FailureOr<Variable *> var = declare(stmt.getName(), Variable::Role::Constant);
  if (failed(var))
    return failure();
  (*var)->operand = *value;
  return success();
}

LogicalResult KvtBuilder::buildExprStmt(const ast::ExprStmt &stmt) {
  const auto *call = dyn_cast<ast::CallExpr>(&stmt.getExpr());
  if (!call)
    return error(stmt.getLoc(), "this expression has no effect; bind its "
                                "value with 'let'");
  if (isPureBuiltin(call->getCallee()))
    return error(stmt.getLoc(), "the result of '" + call->getCallee() +
                                    "' is unused; bind it with 'let'");
  return failure(failed(buildExpr(*call)));
}

//===----------------------------------------------------------------------===//
// Control flow
//===----------------------------------------------------------------------===//

/// Names assigned in `block` that are not declared inside it before.
static void collectAssignedNames(const ast::Block &block,
                                 std::vector<llvm::StringSet<>> &declared,
                                 llvm::SetVector<llvm::StringRef> &assigned) {
  auto isDeclaredInside = [&](llvm::StringRef name) {
    for (const llvm::StringSet<> &scope : declared)
      if (scope.contains(name))
        return true;
    return false;
  };
  declared.emplace_back();
  for (const ast::StmtPtr &stmt : block.stmts) {
    if (const auto *let = dyn_cast<ast::LetStmt>(stmt.get())) {
      for (const ast::Name &n : let->getNames())
        declared.back().insert(n.text);
    } else if (const auto *c = dyn_cast<ast::ConstStmt>(stmt.get())) {
      declared.back().insert(c->getName().text);
    } else if (const auto *assign = dyn_cast<ast::AssignStmt>(stmt.get())) {
      for (const ast::Name &n : assign->getNames())
        if (!isDeclaredInside(n.text))
          assigned.insert(n.text);
    } else if (const auto *ifStmt = dyn_cast<ast::IfStmt>(stmt.get())) {
      collectAssignedNames(ifStmt->getThen(), declared, assigned);
      if (const ast::Block *elseBlock = ifStmt->getElse())
        collectAssignedNames(*elseBlock, declared, assigned);
    } else if (const auto *forStmt = dyn_cast<ast::ForStmt>(stmt.get())) {
      declared.emplace_back();
      declared.back().insert(forStmt->getVar().text);
      collectAssignedNames(forStmt->getBody(), declared, assigned);
      declared.pop_back();
    }
  }
  declared.pop_back();
}

SmallVector<Variable *>
KvtBuilder::carriedVariables(ArrayRef<const ast::Block *> blocks) {
  llvm::SetVector<llvm::StringRef> names;
  std::vector<llvm::StringSet<>> declared;
  for (const ast::Block *block : blocks)
    collectAssignedNames(*block, declared, names);
  SmallVector<Variable *> vars;
  for (llvm::StringRef name : names)
    if (Variable *var = lookupVariable(name))
      if (var->role == Variable::Role::Mutable && !llvm::is_contained(vars, var))
        vars.push_back(var);
  return vars;
}

/// The blocks of an scf op get their terminator from us, not the builder.
static void eraseTerminator(Block &block) {
  if (!block.empty() && block.back().hasTrait<OpTrait::IsTerminator>())
    block.back().erase();
}

LogicalResult KvtBuilder::buildIf(const ast::IfStmt &stmt) {
  FailureOr<Operand> cond = buildSingle(stmt.getCond());
  if (failed(cond))
    return failure();
  // A compile-time condition picks its branch while building, like a
  // Triton constexpr if.
  if (cond->kind == Operand::Kind::Bool) {
    if (cond->boolValue)
      return buildBlock(stmt.getThen());
    return stmt.getElse() ? buildBlock(*stmt.getElse()) : success();
  }
  if (!cond->isValue() || !cond->getType().isInteger(1))
    return error(stmt.getCond().getLoc(),
                 "a condition must be a comparison or a combination of them, "
                 "not " + describe(*cond));

  SmallVector<const ast::Block *> blocks = {&stmt.getThen()};
  if (stmt.getElse())
    blocks.push_back(stmt.getElse());
  SmallVector<Variable *> carried = carriedVariables(blocks);
  SmallVector<Variable> before;
  for (Variable *var : carried)
    before.push_back(*var);
  auto restore = [&] {
    for (auto [var, saved] : llvm::zip(carried, before))
      *var = saved;
  };

  // Build both branches into a result-less scf.if, then move them into one
  // whose results are the carried variables assigned on both paths (their
  // types are only known once the branches are built).
  Location ifLoc = loc(stmt.getLoc());
  auto draft = scf::IfOp::create(builder, ifLoc, TypeRange(), cond->value,
                                 /*addThenBlock=*/true, /*addElseBlock=*/true);
  OpBuilder::InsertionGuard guard(builder);
  auto buildBranch = [&](Block &block, const ast::Block *body,
                         SmallVector<Variable> &after) {
    eraseTerminator(block);
    builder.setInsertionPointToEnd(&block);
    if (body && failed(buildBlock(*body)))
      return failure();
    for (Variable *var : carried)
      after.push_back(*var);
    restore();
    return success();
  };
  SmallVector<Variable> afterThen, afterElse;
  if (failed(buildBranch(draft.getThenRegion().front(), &stmt.getThen(),
                         afterThen)) ||
      failed(buildBranch(draft.getElseRegion().front(), stmt.getElse(),
                         afterElse)))
    return failure();

  SmallVector<Value> thenYield, elseYield;
  SmallVector<Type> resultTypes;
  SmallVector<Variable *> results;
  for (auto [i, var] : llvm::enumerate(carried)) {
    Value t = afterThen[i].operand.value, e = afterElse[i].operand.value;
    if (!t || !e)
      continue; // a `let x;` assigned on one path only stays unassigned
    if (t.getType() != e.getType())
      return error(stmt.getLoc(),
                   "a variable is " + describe(t.getType()) +
                       " after one branch and " + describe(e.getType()) +
                       " after the other");
    thenYield.push_back(t);
    elseYield.push_back(e);
    resultTypes.push_back(t.getType());
    results.push_back(var);
  }

  builder.setInsertionPoint(draft);
  auto ifOp = scf::IfOp::create(builder, ifLoc, resultTypes, cond->value,
                                /*addThenBlock=*/false, /*addElseBlock=*/false);
  ifOp.getThenRegion().takeBody(draft.getThenRegion());
  ifOp.getElseRegion().takeBody(draft.getElseRegion());
  draft.erase();
  builder.setInsertionPointToEnd(&ifOp.getThenRegion().front());
  scf::YieldOp::create(builder, ifLoc, thenYield);
  builder.setInsertionPointToEnd(&ifOp.getElseRegion().front());
  scf::YieldOp::create(builder, ifLoc, elseYield);
  if (ifOp.getElseRegion().front().getOperations().size() == 1 &&
      elseYield.empty())
    ifOp.getElseRegion().front().erase(); // no else and nothing to yield

  for (auto [var, result] : llvm::zip(results, ifOp.getResults())) {
    var->operand = Operand::ofValue(result, var->operand.loc);
    var->type = result.getType();
  }
  return success();
}

LogicalResult KvtBuilder::buildFor(const ast::ForStmt &stmt) {
  FailureOr<Operand> lower = buildSingle(stmt.getLower());
  if (failed(lower))
    return failure();
  FailureOr<Operand> upper = buildSingle(stmt.getUpper());
  if (failed(upper))
    return failure();
  for (const Operand *bound : {&*lower, &*upper}) {
    bool isInt = bound->kind == Operand::Kind::Int ||
                 (bound->isValue() && (bound->getType().isInteger(32) ||
                                       bound->getType().isInteger(64)));
    if (!isInt)
      return error(bound->loc, "a loop bound must be an i32 or i64 integer, "
                               "not " + describe(*bound));
  }
  FailureOr<std::pair<Value, Value>> bounds =
      unifyScalars(*lower, *upper, "..", stmt.getLoc());
  if (failed(bounds))
    return failure();
  Type ivType = bounds->first.getType();
  Location forLoc = loc(stmt.getLoc());
  Value step = arith::ConstantOp::create(builder, forLoc,
                                         builder.getIntegerAttr(ivType, 1));

  SmallVector<Variable *> carried = carriedVariables({&stmt.getBody()});
  SmallVector<Value> inits;
  for (Variable *var : carried) {
    if (!var->operand.value) {
      InFlightDiagnostic diag = emitError(stmt.getLoc())
                                << "a variable assigned in this loop has no "
                                   "value before it; give it one with 'let'";
      diag.attachNote(loc(var->declLoc)) << "declared here";
      return failure();
    }
    inits.push_back(var->operand.value);
  }

  auto forOp = scf::ForOp::create(builder, forLoc, bounds->first,
                                  bounds->second, step, inits);
  OpBuilder::InsertionGuard guard(builder);
  Block *body = forOp.getBody();
  eraseTerminator(*body);
  builder.setInsertionPointToEnd(body);
  for (auto [var, arg] : llvm::zip(carried, forOp.getRegionIterArgs()))
    var->operand = Operand::ofValue(arg, var->operand.loc);

  pushScope();
  FailureOr<Variable *> iv = declare(stmt.getVar(), Variable::Role::LoopVar);
  LogicalResult built = failure();
  if (succeeded(iv)) {
    (*iv)->operand = Operand::ofValue(forOp.getInductionVar(), stmt.getVar().loc);
    (*iv)->type = ivType;
    built = buildBlock(stmt.getBody());
  }
  popScope();
  if (failed(built))
    return failure();

  SmallVector<Value> yields;
  for (Variable *var : carried)
    yields.push_back(var->operand.value);
  builder.setInsertionPointToEnd(body);
  scf::YieldOp::create(builder, forLoc, yields);
  for (auto [var, result] : llvm::zip(carried, forOp.getResults()))
    var->operand = Operand::ofValue(result, var->operand.loc);
  return success();
}
