//===- KvtBuilder.h - AST to kvt IR, internal -------------------*- C++ -*-===//
//
// The builder behind buildKernels, split over files by concept:
//   KvtBuilder.cpp        modules, imports, constants, kernels, scopes
//   BuildStatements.cpp   let/assign/store, if -> scf.if, for -> scf.for
//   BuildExpressions.cpp  names, constants, scalar arithmetic, casts, fn calls
//   BuildBuiltins.cpp     the builtins that become kvt ops
//
// Expressions evaluate to Operands: compile-time constants (untyped, like
// Triton's constexprs: they take the type their use needs), SSA values, or the
// several results of a call. Variables are SSA names rebound on assignment;
// scf.if and scf.for carry the variables their bodies assign.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_LIB_DSL_KVTBUILDER_H
#define KVARN_LIB_DSL_KVTBUILDER_H

#include "kvarn/DSL/AST.h"
#include "kvarn/DSL/KernelBuilder.h"
#include "kvarn/Dialect/KVT/KVT.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Support/LLVM.h"

#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/SourceMgr.h"

namespace kvarn::dsl {

/// The value of an expression.
struct Operand {
  enum class Kind { None, Int, Float, Bool, Value, Tuple };
  Kind kind = Kind::None;
  int64_t intValue = 0;
  double floatValue = 0;
  bool boolValue = false;
  mlir::Value value;
  std::vector<Operand> elements; // Tuple: the results of a call
  llvm::SMLoc loc;

  static Operand ofInt(int64_t v, llvm::SMLoc loc) {
    Operand o;
    o.kind = Kind::Int;
    o.intValue = v;
    o.loc = loc;
    return o;
  }
  static Operand ofFloat(double v, llvm::SMLoc loc) {
    Operand o;
    o.kind = Kind::Float;
    o.floatValue = v;
    o.loc = loc;
    return o;
  }
  static Operand ofBool(bool v, llvm::SMLoc loc) {
    Operand o;
    o.kind = Kind::Bool;
    o.boolValue = v;
    o.loc = loc;
    return o;
  }
  static Operand ofValue(mlir::Value v, llvm::SMLoc loc) {
    Operand o;
    o.kind = Kind::Value;
    o.value = v;
    o.loc = loc;
    return o;
  }
  bool isConstant() const {
    return kind == Kind::Int || kind == Kind::Float || kind == Kind::Bool;
  }
  bool isValue() const { return kind == Kind::Value; }
  mlir::Type getType() const { return value ? value.getType() : mlir::Type(); }
};

/// A name bound in a scope.
struct Variable {
  enum class Role {
    Mutable,   // `let`: may be reassigned; its type is fixed once assigned
    Parameter, // kernel or fn parameter
    LoopVar,   // a `for` induction variable
    Constant,  // `const`
  };
  Role role = Role::Mutable;
  Operand operand; // Kind::None while a `let x;` has no value yet
  mlir::Type type; // for Mutable, once known
  llvm::SMLoc declLoc;
};

class KvtBuilder {
public:
  KvtBuilder(llvm::SourceMgr &sourceMgr, const Specialization &spec,
             mlir::MLIRContext *context, const BuildOptions &options);

  mlir::OwningOpRef<mlir::ModuleOp> build();

  //===--------------------------------------------------------------------===//
  // Shared by every part of the builder.
  //===--------------------------------------------------------------------===//

  /// The MLIR location of a source position, inside the call sites of the
  /// fns being inlined.
  mlir::Location loc(llvm::SMLoc at);
  /// Emits an error at `at` and returns failure.
  mlir::InFlightDiagnostic emitError(llvm::SMLoc at);
  mlir::LogicalResult error(llvm::SMLoc at, const llvm::Twine &message);

  mlir::MLIRContext *ctx() { return context; }
  mlir::OpBuilder &b() { return builder; }
  /// The records the kernels being built read and write.
  const kvt::RecordFormat &recordFormat() const { return format; }
  const Specialization &specialization() const { return spec; }

  /// Runs `op`'s verifier (not its regions); on failure the diagnostic is
  /// already at the op's location.
  mlir::LogicalResult verifyOp(mlir::Operation *op) {
    return mlir::verify(op, /*verifyRecursively=*/false);
  }

  /// Creates `OpTy` with the result types its own inferReturnTypes gives, so
  /// a type error is a diagnostic at `at` rather than the generated
  /// builder's fatal error. `numResults` placeholders satisfy the explicit
  /// type builder's arity check.
  template <typename OpTy, typename... Args>
  mlir::FailureOr<OpTy> createInferred(llvm::SMLoc at, unsigned numResults,
                                       Args &&...args) {
    mlir::OperationState state(loc(at), OpTy::getOperationName());
    llvm::SmallVector<mlir::Type> placeholders(numResults,
                                               builder.getNoneType());
    OpTy::build(builder, state, mlir::TypeRange(placeholders),
                std::forward<Args>(args)...);
    llvm::SmallVector<mlir::Type> types;
    if (mlir::failed(OpTy::inferReturnTypes(
            context, state.location, state.operands,
            state.attributes.getDictionary(context), state.getRawProperties(),
            state.regions, types)))
      return mlir::failure();
    state.types.assign(types.begin(), types.end());
    auto op = llvm::cast<OpTy>(builder.create(state));
    if (mlir::failed(verifyOp(op)))
      return mlir::failure();
    return op;
  }

  /// Creates `OpTy` through its generated create() and verifies it.
  template <typename OpTy, typename... Args>
  mlir::FailureOr<OpTy> createVerified(llvm::SMLoc at, Args &&...args) {
    auto op = OpTy::create(builder, loc(at), std::forward<Args>(args)...);
    if (mlir::failed(verifyOp(op)))
      return mlir::failure();
    return op;
  }

  //===--------------------------------------------------------------------===//
  // Scopes (KvtBuilder.cpp)
  //===--------------------------------------------------------------------===//

  void pushScope() {
    scopes.push_back(std::make_unique<llvm::StringMap<Variable>>());
  }
  void popScope() { scopes.pop_back(); }
  /// The variable `name` visible here (inside the current fn frame), or null.
  Variable *lookupVariable(llvm::StringRef name);
  /// Declares `name` in the innermost scope; errors on reserved names and
  /// redefinitions in the same scope.
  mlir::FailureOr<Variable *> declare(const ast::Name &name, Variable::Role role);
  /// Names no variable may take: constants, builtins, functions, types.
  bool isReserved(llvm::StringRef name) const;
  const ast::Function *lookupFunction(llvm::StringRef name) const;
  const Operand *lookupGlobalConstant(llvm::StringRef name) const;

  //===--------------------------------------------------------------------===//
  // Statements (BuildStatements.cpp)
  //===--------------------------------------------------------------------===//

  /// Builds a block's statements in a new scope.
  mlir::LogicalResult buildBlock(const ast::Block &block);
  mlir::LogicalResult buildStmt(const ast::Stmt &stmt);
  mlir::LogicalResult buildLet(const ast::LetStmt &stmt);
  mlir::LogicalResult buildAssign(const ast::AssignStmt &stmt);
  mlir::LogicalResult buildStore(const ast::StoreStmt &stmt);
  mlir::LogicalResult buildIf(const ast::IfStmt &stmt);
  mlir::LogicalResult buildFor(const ast::ForStmt &stmt);
  mlir::LogicalResult buildConst(const ast::ConstStmt &stmt);
  mlir::LogicalResult buildExprStmt(const ast::ExprStmt &stmt);
  /// Binds `value` to the existing mutable variable `name`.
  mlir::LogicalResult assignVariable(const ast::Name &name, Operand value);
  /// The mutable variables declared outside `blocks` that they assign.
  llvm::SmallVector<Variable *>
  carriedVariables(llvm::ArrayRef<const ast::Block *> blocks);

  //===--------------------------------------------------------------------===//
  // Expressions (BuildExpressions.cpp)
  //===--------------------------------------------------------------------===//

  mlir::FailureOr<Operand> buildExpr(const ast::Expr &expr);
  /// buildExpr, then rejects the results of multi-result calls.
  mlir::FailureOr<Operand> buildSingle(const ast::Expr &expr);
  mlir::FailureOr<Operand> buildName(const ast::NameExpr &expr);
  mlir::FailureOr<Operand> buildUnary(const ast::UnaryExpr &expr);
  mlir::FailureOr<Operand> buildBinary(const ast::BinaryExpr &expr);
  mlir::FailureOr<Operand> buildLogical(const ast::BinaryExpr &expr);
  mlir::FailureOr<Operand> buildArithmetic(ast::BinaryOp op, Operand lhs,
                                           Operand rhs, llvm::SMLoc at);
  mlir::FailureOr<Operand> buildLoad(const ast::IndexExpr &expr);
  mlir::FailureOr<Operand> buildCall(const ast::CallExpr &expr);
  mlir::FailureOr<Operand> inlineFunction(const ast::Function &fn,
                                          const ast::CallExpr &call);
  mlir::FailureOr<Operand> buildCast(mlir::Type target,
                                     const ast::CallExpr &call);
  mlir::FailureOr<Operand> buildMinMax(const ast::CallExpr &call, bool isMax);
  mlir::FailureOr<Operand> buildCeilDiv(const ast::CallExpr &call);

  /// An SSA value for `operand`, constants materialized as `type`.
  mlir::FailureOr<mlir::Value> materialize(const Operand &operand,
                                           mlir::Type type);
  /// Constants as i32 (i64 when too large), f32 or i1.
  mlir::FailureOr<mlir::Value> materializeDefault(const Operand &operand);
  /// An integer value as i64 (sign-extended), for offsets and strides.
  mlir::FailureOr<mlir::Value> toIndex64(const Operand &operand,
                                         const llvm::Twine &what);
  /// Brings two scalar operands to one type (i32 meets i64 as i64).
  mlir::FailureOr<std::pair<mlir::Value, mlir::Value>>
  unifyScalars(const Operand &lhs, const Operand &rhs, llvm::StringRef opName,
               llvm::SMLoc at);
  /// The element type `ACT` names: the specialization's activation dtype.
  mlir::Type activationType();
  /// The type a conversion `name(x)` converts to (`f16`, `ACT`, ...), or
  /// null when `name` is not a type.
  mlir::Type conversionTarget(llvm::StringRef name);

  /// A readable type: "i32", "tile<128x64xf32>", "ptr<f16>".
  std::string describe(mlir::Type type);
  std::string describe(const Operand &operand);

  //===--------------------------------------------------------------------===//
  // Builtins (BuildBuiltins.cpp)
  //===--------------------------------------------------------------------===//

  /// Builds a call of builtin `name`, or returns std::nullopt when `name` is
  /// not a builtin.
  std::optional<mlir::FailureOr<Operand>>
  buildBuiltin(const ast::CallExpr &call);
  static bool isBuiltinName(llvm::StringRef name);
  /// Builtins whose only effect is their result (an unused call is a bug).
  static bool isPureBuiltin(llvm::StringRef name);

private:
  mlir::LogicalResult loadModule(const ast::Module &module, bool isMain);
  mlir::LogicalResult importModule(const ast::Name &name);
  mlir::LogicalResult defineConstant(const ast::Name &name,
                                     const ast::Expr &value);
  mlir::LogicalResult buildKernel(const ast::Kernel &kernel);
  mlir::Type convertType(const ast::TypeSpec &type);

  llvm::SourceMgr &sourceMgr;
  Specialization spec;
  mlir::MLIRContext *context;
  BuildOptions options;
  kvt::RecordFormat format;
  mlir::OpBuilder builder;
  mlir::ModuleOp module;

  /// Parsed files: the main one and every imported module, kept alive for
  /// the AST pointers below.
  std::vector<std::unique_ptr<ast::Module>> parsedModules;
  llvm::StringSet<> importedModules;

  llvm::StringMap<Operand> globalConstants;
  llvm::StringMap<const ast::Function *> functions;

  /// Innermost last. Heap-allocated so that Variable pointers held across
  /// pushes (the variables scf ops carry) stay valid.
  std::vector<std::unique_ptr<llvm::StringMap<Variable>>> scopes;

public:
  /// The innermost kernel's grid rank (program_id's axis bound).
  unsigned gridRank = 0;
  /// First scope of the fn being inlined: outer scopes are not visible.
  size_t frameBase = 0;
  /// Call-site locations of the fns being inlined, outermost first.
  llvm::SmallVector<mlir::Location> callSites;
  /// fn calls inlined into the kernel being built.
  unsigned inlinedCalls = 0;
  /// The fns being inlined (recursion is an error).
  llvm::SmallVector<const ast::Function *> activeFunctions;
  /// The fn body whose last statement is the `return` being allowed.
  const ast::Stmt *allowedReturn = nullptr;
};

constexpr unsigned kMaxInlineDepth = 16;
/// fn calls inlined into one kernel: bounds the IR a small file can ask for
/// (fns calling fns several times grow exponentially).
constexpr unsigned kMaxInlinedCalls = 4096;
/// Operations of one built kernel (the library's largest has about 130):
/// LLVM's NVPTX backend takes time quadratic in the size of a basic block
/// (10,000 straight-line stores: 38 s), so a kernel past this is an error
/// rather than a compile that seems to hang.
constexpr unsigned kMaxKernelOps = 4096;

} // namespace kvarn::dsl

#endif // KVARN_LIB_DSL_KVTBUILDER_H
