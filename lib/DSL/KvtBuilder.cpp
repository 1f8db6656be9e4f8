//===- KvtBuilder.cpp - modules, imports, constants, kernels, scopes ------===//

#include "KvtBuilder.h"

#include "kvarn/DSL/KernelLibrary.h"
#include "kvarn/DSL/Parser.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

#include "llvm/ADT/StringSwitch.h"

#include <cmath>

using namespace mlir;
using namespace kvarn;
using namespace kvarn::dsl;

KvtBuilder::KvtBuilder(llvm::SourceMgr &sourceMgr, const Specialization &spec,
                       MLIRContext *context, const BuildOptions &options)
    : sourceMgr(sourceMgr), spec(spec), context(context), options(options),
      builder(context) {
  if (!this->options.resolveImport)
    this->options.resolveImport =
        [](llvm::StringRef name) -> std::optional<ModuleSource> {
      const LibraryFile *file = findLibraryFile(name);
      if (!file || file->isKernel)
        return std::nullopt;
      return ModuleSource{std::string(file->fileName), file->text};
    };
}

//===----------------------------------------------------------------------===//
// Locations and diagnostics
//===----------------------------------------------------------------------===//

Location KvtBuilder::loc(llvm::SMLoc at) {
  Location result = UnknownLoc::get(context);
  if (unsigned id = sourceMgr.FindBufferContainingLoc(at)) {
    auto [line, col] = sourceMgr.getLineAndColumn(at, id);
    llvm::StringRef file = sourceMgr.getMemoryBuffer(id)->getBufferIdentifier();
    result = FileLineColLoc::get(context, file, line, col);
  }
  // Inlined fn bodies carry the call site they were inlined at.
  if (!callSites.empty())
    result = CallSiteLoc::get(result, callSites.back());
  return result;
}

InFlightDiagnostic KvtBuilder::emitError(llvm::SMLoc at) {
  return mlir::emitError(loc(at));
}

LogicalResult KvtBuilder::error(llvm::SMLoc at, const llvm::Twine &message) {
  return emitError(at) << message;
}

//===----------------------------------------------------------------------===//
// Scopes and names
//===----------------------------------------------------------------------===//

static bool isTypeName(llvm::StringRef name) {
  return name == llvm::StringRef(kActivationTypeName) ||
         llvm::StringSwitch<bool>(name)
             .Cases({"i1", "i8", "i32", "i64", "f16", "bf16", "f32", "ptr"},
                    true)
             .Default(false);
}

bool KvtBuilder::isReserved(llvm::StringRef name) const {
  return globalConstants.count(name) || functions.count(name) ||
         isBuiltinName(name) || isTypeName(name);
}

Variable *KvtBuilder::lookupVariable(llvm::StringRef name) {
  for (size_t i = scopes.size(); i > frameBase; --i) {
    auto it = scopes[i - 1]->find(name);
    if (it != scopes[i - 1]->end())
      return &it->second;
  }
  return nullptr;
}

FailureOr<Variable *> KvtBuilder::declare(const ast::Name &name,
                                          Variable::Role role) {
  if (globalConstants.count(name.text))
    return error(name.loc, "'" + name.text +
                               "' is a constant and cannot be redefined");
  if (isBuiltinName(name.text) || functions.count(name.text) ||
      isTypeName(name.text))
    return error(name.loc, "'" + name.text +
                               "' is the name of a function or type");
  auto [it, inserted] = scopes.back()->try_emplace(name.text);
  if (!inserted) {
    InFlightDiagnostic diag = emitError(name.loc)
                              << "'" << name.text
                              << "' is already defined in this scope";
    diag.attachNote(loc(it->second.declLoc)) << "first defined here";
    return failure();
  }
  it->second.role = role;
  it->second.declLoc = name.loc;
  return &it->second;
}

const ast::Function *KvtBuilder::lookupFunction(llvm::StringRef name) const {
  auto it = functions.find(name);
  return it == functions.end() ? nullptr : it->second;
}

const Operand *KvtBuilder::lookupGlobalConstant(llvm::StringRef name) const {
  auto it = globalConstants.find(name);
  return it == globalConstants.end() ? nullptr : &it->second;
}

//===----------------------------------------------------------------------===//
// Modules
//===----------------------------------------------------------------------===//

/// Parses buffer `id`, reporting a syntax error as an MLIR diagnostic.
static std::unique_ptr<ast::Module> parseBuffer(KvtBuilder &kb,
                                                llvm::SourceMgr &sm,
                                                unsigned id) {
  return parseModule(sm.getMemoryBuffer(id)->getBuffer(),
                     [&](llvm::SMLoc at, const llvm::Twine &message) {
                       (void)kb.error(at, message);
                     });
}

LogicalResult KvtBuilder::importModule(const ast::Name &name) {
  if (!importedModules.insert(name.text).second)
    return success(); // imported once, whoever asked first
  std::optional<ModuleSource> source = options.resolveImport(name.text);
  if (!source) {
    std::string known;
    for (const LibraryFile &f : libraryFiles())
      if (!f.isKernel)
        known += (known.empty() ? "" : ", ") + std::string(f.name);
    return error(name.loc, "unknown module '" + name.text +
                               "' (library modules: " + known + ")");
  }
  unsigned id = sourceMgr.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBuffer(source->text, source->bufferName,
                                       /*RequiresNullTerminator=*/false),
      llvm::SMLoc());
  std::unique_ptr<ast::Module> parsed = parseBuffer(*this, sourceMgr, id);
  if (!parsed)
    return failure();
  parsedModules.push_back(std::move(parsed));
  return loadModule(*parsedModules.back(), /*isMain=*/false);
}

LogicalResult KvtBuilder::defineConstant(const ast::Name &name,
                                         const ast::Expr &value) {
  if (isReserved(name.text))
    return error(name.loc, "'" + name.text + "' is already defined");
  // A constant expression folds; one that does not (a cast, a builtin call)
  // builds ops before it is rejected. They go into a scratch block that is
  // freed here, since there is no kernel to hold them.
  Block scratch;
  OpBuilder::InsertionGuard guard(builder);
  builder.setInsertionPointToEnd(&scratch);
  FailureOr<Operand> v = buildSingle(value);
  if (failed(v))
    return failure();
  if (!v->isConstant() || v->kind == Operand::Kind::Bool)
    return error(value.getLoc(), "the value of constant '" + name.text +
                                     "' must be a compile-time number");
  globalConstants[name.text] = *v;
  return success();
}

LogicalResult KvtBuilder::loadModule(const ast::Module &m, bool isMain) {
  // Imports first, so their constants and fns are visible below.
  for (const ast::Name &import : m.imports)
    if (failed(importModule(import)))
      return failure();
  if (!isMain && !m.kernels.empty())
    return error(m.kernels.front().name.loc,
                 "an imported module holds fns and constants, not kernels");
  for (const ast::Function &fn : m.functions) {
    if (isReserved(fn.name.text))
      return error(fn.name.loc, "'" + fn.name.text + "' is already defined");
    functions[fn.name.text] = &fn;
  }
  for (const ast::ConstDecl &c : m.constants)
    if (failed(defineConstant(c.name, *c.value)))
      return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// Kernels
//===----------------------------------------------------------------------===//

Type KvtBuilder::convertType(const ast::TypeSpec &type) {
  Type element;
  switch (type.element) {
  case ast::ScalarKind::I8: element = builder.getI8Type(); break;
  case ast::ScalarKind::I32: element = builder.getI32Type(); break;
  case ast::ScalarKind::I64: element = builder.getI64Type(); break;
  case ast::ScalarKind::F16: element = builder.getF16Type(); break;
  case ast::ScalarKind::BF16: element = builder.getBF16Type(); break;
  case ast::ScalarKind::F32: element = builder.getF32Type(); break;
  case ast::ScalarKind::Act: element = activationType(); break;
  }
  if (type.isPointer)
    return kvt::PointerType::get(context, element);
  return element;
}

LogicalResult KvtBuilder::buildKernel(const ast::Kernel &kernel) {
  if (module.lookupSymbol(kernel.name.text))
    return error(kernel.name.loc,
                 "kernel '" + kernel.name.text + "' is defined twice");
  if (isReserved(kernel.name.text))
    return error(kernel.name.loc, "'" + kernel.name.text +
                                      "' is already defined as a function or "
                                      "constant");
  SmallVector<Type> argTypes;
  for (const ast::Param &p : kernel.params)
    argTypes.push_back(convertType(p.type));

  builder.setInsertionPointToEnd(module.getBody());
  auto func = func::FuncOp::create(builder, loc(kernel.name.loc),
                                   kernel.name.text,
                                   builder.getFunctionType(argTypes, {}));
  func->setAttr(kvt::KVTDialect::getKernelAttrName(), builder.getUnitAttr());
  func->setAttr(kvt::KVTDialect::getSpecAttrName(),
                kvt::SpecAttr::get(context, spec.preset, int64_t(spec.headDim),
                                   int64_t(spec.gqa), int64_t(spec.ropeDim)));

  // The grid: each dimension a constant (an integer or a specialization
  // constant such as GQA) or the name of an integer parameter.
  if (kernel.grid.size() > 3)
    return error(kernel.grid[3].loc, "a grid has at most 3 dimensions");
  SmallVector<Attribute> grid;
  for (const ast::GridDim &dim : kernel.grid) {
    std::optional<int64_t> constant;
    if (!dim.param)
      constant = dim.constant;
    auto param = kernel.params.end();
    if (dim.param) {
      param = llvm::find_if(kernel.params, [&](const ast::Param &p) {
        return p.name.text == dim.param->text;
      });
      auto global = globalConstants.find(dim.param->text);
      if (param == kernel.params.end() && global != globalConstants.end() &&
          global->second.kind == Operand::Kind::Int)
        constant = global->second.intValue;
    }
    if (constant) {
      if (*constant < 1 || *constant > INT32_MAX)
        return error(dim.loc, "a constant grid dimension must be in [1, 2^31)");
      grid.push_back(builder.getI64IntegerAttr(*constant));
      continue;
    }
    if (param == kernel.params.end())
      return error(dim.loc, "grid dimension '" + dim.param->text +
                                "' is neither a parameter of the kernel nor "
                                "a constant");
    if (param->type.isPointer || param->type.element == ast::ScalarKind::F32)
      return error(dim.loc, "grid dimension '" + dim.param->text +
                                "' must be an i32 or i64 parameter");
    grid.push_back(builder.getStringAttr(dim.param->text));
  }
  func->setAttr(kGridAttrName, builder.getArrayAttr(grid));
  gridRank = unsigned(grid.size());
  inlinedCalls = 0;

  Block *entry = func.addEntryBlock();
  pushScope();
  for (auto [i, p] : llvm::enumerate(kernel.params)) {
    func.setArgAttr(i, kArgNameAttrName, builder.getStringAttr(p.name.text));
    entry->getArgument(i).setLoc(loc(p.name.loc));
    FailureOr<Variable *> var = declare(p.name, Variable::Role::Parameter);
    if (failed(var))
      return failure();
    (*var)->operand = Operand::ofValue(entry->getArgument(i), p.name.loc);
    (*var)->type = argTypes[i];
  }
  builder.setInsertionPointToEnd(entry);
  LogicalResult body = buildBlock(kernel.body);
  popScope();
  if (failed(body))
    return failure();
  builder.setInsertionPointToEnd(entry);
  func::ReturnOp::create(builder, loc(kernel.name.loc));
  unsigned ops = 0;
  func.walk([&](Operation *) { ++ops; });
  if (ops > kMaxKernelOps)
    return error(kernel.name.loc,
                 "kernel '" + kernel.name.text + "' has " + llvm::Twine(ops) +
                     " operations after fn inlining, more than " +
                     llvm::Twine(kMaxKernelOps) +
                     "; the backend's compile time grows faster than "
                     "linearly with a kernel's size: use a 'for' loop or "
                     "split the kernel");
  return success();
}

OwningOpRef<ModuleOp> KvtBuilder::build() {
  auto specAttr = kvt::SpecAttr::getChecked(
      [&] { return mlir::emitError(UnknownLoc::get(context)); }, context,
      llvm::StringRef(spec.preset), int64_t(spec.headDim), int64_t(spec.gqa),
      int64_t(spec.ropeDim));
  if (!specAttr)
    return nullptr;
  format = specAttr.getRecordFormat();

  Operand inf = Operand::ofFloat(INFINITY, llvm::SMLoc());
  globalConstants["INF"] = inf;
  for (const SpecConstant &c : specConstants(spec))
    globalConstants[c.name] = Operand::ofInt(c.value, llvm::SMLoc());

  unsigned mainId = sourceMgr.getMainFileID();
  OwningOpRef<ModuleOp> result = ModuleOp::create(
      FileLineColLoc::get(
          context, sourceMgr.getMemoryBuffer(mainId)->getBufferIdentifier(), 1,
          1));
  module = *result;
  std::unique_ptr<ast::Module> parsed = parseBuffer(*this, sourceMgr, mainId);
  if (!parsed)
    return nullptr;
  parsedModules.push_back(std::move(parsed));
  const ast::Module &main = *parsedModules.back();
  if (failed(loadModule(main, /*isMain=*/true)))
    return nullptr;
  for (const ast::Kernel &kernel : main.kernels)
    if (failed(buildKernel(kernel)))
      return nullptr;
  if (failed(mlir::verify(module)))
    return nullptr;
  return result;
}

void kvarn::dsl::loadKvtDialects(MLIRContext *context) {
  // What the front end builds. Tools register everything else (kvgpu, the
  // lowerings' dialects) through RegisterKvarnDialects.h, which lives with
  // the code generator; the front end must not depend on it.
  context->loadDialect<kvt::KVTDialect, func::FuncDialect,
                       arith::ArithDialect, scf::SCFDialect>();
}

OwningOpRef<ModuleOp> kvarn::dsl::buildKernels(llvm::SourceMgr &sourceMgr,
                                               const Specialization &spec,
                                               MLIRContext *context,
                                               const BuildOptions &options) {
  loadKvtDialects(context);
  KvtBuilder builder(sourceMgr, spec, context, options);
  return builder.build();
}

OwningOpRef<ModuleOp> kvarn::dsl::buildLibraryKernel(llvm::StringRef name,
                                                     const Specialization &spec,
                                                     MLIRContext *context) {
  const LibraryFile *file = findLibraryFile(name);
  if (!file || !file->isKernel) {
    mlir::emitError(UnknownLoc::get(context))
        << "no library kernel named '" << name << "'";
    return nullptr;
  }
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBuffer(file->text, file->fileName,
                                       /*RequiresNullTerminator=*/false),
      llvm::SMLoc());
  return buildKernels(sourceMgr, spec, context);
}
