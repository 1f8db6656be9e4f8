//===- DSLTest.cpp - lexer, parser and kvt builder of the .kvt language ---===//

#include "EvalTestUtil.h"

#include "kvarn/DSL/Lexer.h"
#include "kvarn/DSL/Parser.h"
#include "kvarn/Dialect/KVT/KVT.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

#include <gtest/gtest.h>

using namespace kvarn;
using namespace kvarn::dsl;
using namespace kvarn::test;

//===----------------------------------------------------------------------===//
// Lexer
//===----------------------------------------------------------------------===//

/// The tokens of `text`; an Error token's text (owned by the lexer) is
/// copied to `errorMessage`.
static std::vector<Token> lexAll(llvm::StringRef text,
                                 std::string *errorMessage = nullptr) {
  Lexer lexer(text);
  std::vector<Token> tokens;
  for (int guard = 0; guard < 1000; ++guard) {
    tokens.push_back(lexer.next());
    if (tokens.back().is(TokenKind::Error) && errorMessage)
      *errorMessage = tokens.back().text.str();
    if (tokens.back().is(TokenKind::Eof) || tokens.back().is(TokenKind::Error))
      break;
  }
  return tokens;
}

TEST(Lexer, TokensAndLocations) {
  llvm::StringRef text = "let x = 0x1F + 2.5e-1; // comment\nfor i in 0..n {}";
  std::vector<Token> t = lexAll(text);
  std::vector<TokenKind> kinds;
  for (const Token &tok : t)
    kinds.push_back(tok.kind);
  EXPECT_EQ(kinds, (std::vector<TokenKind>{
                       TokenKind::KwLet, TokenKind::Identifier,
                       TokenKind::Assign, TokenKind::Integer, TokenKind::Plus,
                       TokenKind::Float, TokenKind::Semicolon, TokenKind::KwFor,
                       TokenKind::Identifier, TokenKind::KwIn,
                       TokenKind::Integer, TokenKind::DotDot,
                       TokenKind::Identifier, TokenKind::LBrace,
                       TokenKind::RBrace, TokenKind::Eof}));
  EXPECT_EQ(t[3].intValue, 31);
  EXPECT_DOUBLE_EQ(t[5].floatValue, 0.25);
  EXPECT_EQ(t[7].loc.getPointer() - text.data(), 34); // 'for' after the newline
}

TEST(Lexer, BadInputIsAnErrorTokenNeverACrash) {
  struct Case { const char *text, *message; };
  for (Case c : {Case{"@", "unexpected character '@'"},
                 Case{"1e", "exponent needs digits"},
                 Case{"0x", "hexadecimal literal needs digits"},
                 Case{"99999999999999999999", "does not fit in 64 bits"},
                 Case{"0x8000000000000000", "does not fit in 64 bits"},
                 // Past f32's range: rejected like 1e309, not read as inf.
                 Case{"1e39", "float literal does not fit in f32"},
                 Case{"3.4028236e38", "float literal does not fit in f32"},
                 Case{"1e309", "float literal does not fit in f32"},
                 Case{"\xff", "unexpected byte 0xff"},
                 Case{"a & b", "did you mean '&&'"},
                 Case{"a.b", "unexpected '.'"},
                 Case{"12abc", "unexpected character in a number"}}) {
    std::string message;
    std::vector<Token> t = lexAll(c.text, &message);
    ASSERT_TRUE(t.back().is(TokenKind::Error)) << c.text;
    EXPECT_NE(message.find(c.message), std::string::npos)
        << c.text << ": " << message;
  }
  // f32's largest value itself is a literal.
  std::vector<Token> largest = lexAll("3.4028234e38");
  EXPECT_TRUE(largest[0].is(TokenKind::Float));
  // An embedded NUL is a bad byte, not the end of the input.
  std::string withNul("let\0x", 5);
  std::vector<Token> t = lexAll(withNul);
  EXPECT_TRUE(t.back().is(TokenKind::Error));
}

//===----------------------------------------------------------------------===//
// Parser
//===----------------------------------------------------------------------===//

namespace {
struct ParseResult {
  std::unique_ptr<ast::Module> module;
  std::string message;
  size_t offset = 0;
};
ParseResult parse(llvm::StringRef text) {
  ParseResult r;
  int errors = 0;
  r.module = parseModule(text, [&](llvm::SMLoc loc, const llvm::Twine &m) {
    ++errors;
    r.message = m.str();
    r.offset = loc.getPointer() - text.data();
  });
  EXPECT_EQ(errors, r.module ? 0 : 1) << "exactly one error per failed parse";
  return r;
}
} // namespace

TEST(Parser, KernelStructure) {
  ParseResult r = parse(R"(
import paged;
const N = 4;
fn twice(x) { return x + x; }
kernel k(p: ptr<f16>, n: i32, s: f32) grid(n, 2) {
  let a, b;
  let c = p[0];
  if n > 0 { a = 1; } else if n < 0 { a = 2; } else { a = 3; }
  for i in 0..n { p[i] = c; }
  store_tile(p, 0, [1], load_tile(p, 0, [N], [1]));
}
)");
  ASSERT_TRUE(r.module) << r.message;
  const ast::Module &m = *r.module;
  ASSERT_EQ(m.imports.size(), 1u);
  EXPECT_EQ(m.imports[0].text, "paged");
  ASSERT_EQ(m.constants.size(), 1u);
  ASSERT_EQ(m.functions.size(), 1u);
  EXPECT_EQ(m.functions[0].params.size(), 1u);
  ASSERT_EQ(m.kernels.size(), 1u);
  const ast::Kernel &k = m.kernels[0];
  EXPECT_EQ(k.params.size(), 3u);
  EXPECT_TRUE(k.params[0].type.isPointer);
  ASSERT_EQ(k.grid.size(), 2u);
  EXPECT_TRUE(k.grid[0].param.has_value());
  EXPECT_EQ(k.grid[1].constant, 2);
  ASSERT_EQ(k.body.stmts.size(), 5u);
  EXPECT_TRUE(llvm::isa<ast::LetStmt>(k.body.stmts[0].get()));
  const auto *ifStmt = llvm::dyn_cast<ast::IfStmt>(k.body.stmts[2].get());
  ASSERT_TRUE(ifStmt);
  ASSERT_TRUE(ifStmt->getElse());
  EXPECT_TRUE(llvm::isa<ast::IfStmt>(ifStmt->getElse()->stmts[0].get()));
  const auto *forStmt = llvm::dyn_cast<ast::ForStmt>(k.body.stmts[3].get());
  ASSERT_TRUE(forStmt);
  EXPECT_TRUE(llvm::isa<ast::StoreStmt>(forStmt->getBody().stmts[0].get()));
}

TEST(Parser, Precedence) {
  ParseResult r = parse("const X = 1 + 2 * 3 - -4 % 5 < 6 && !(7 == 8) || 9 >= 10;");
  ASSERT_TRUE(r.module) << r.message;
  const auto *top = llvm::dyn_cast<ast::BinaryExpr>(r.module->constants[0].value.get());
  ASSERT_TRUE(top);
  EXPECT_EQ(top->getOp(), ast::BinaryOp::Or);
  const auto *lhs = llvm::dyn_cast<ast::BinaryExpr>(&top->getLhs());
  ASSERT_TRUE(lhs);
  EXPECT_EQ(lhs->getOp(), ast::BinaryOp::And);
  const auto *cmp = llvm::dyn_cast<ast::BinaryExpr>(&lhs->getLhs());
  ASSERT_TRUE(cmp);
  EXPECT_EQ(cmp->getOp(), ast::BinaryOp::Lt);
  const auto *sub = llvm::dyn_cast<ast::BinaryExpr>(&cmp->getLhs());
  ASSERT_TRUE(sub);
  EXPECT_EQ(sub->getOp(), ast::BinaryOp::Sub); // (1 + 2*3) - ((-4) % 5)
}

TEST(Parser, ErrorsAreReportedOnceWithTheirLocation) {
  struct Case { const char *text; const char *message; size_t offset; };
  for (Case c : {
           Case{"kernel k() grid(1) { let x = 1 }", "expected ';' after the value, found '}'", 31},
           Case{"kernel k() grid(1) {", "this block is never closed", 19},
           Case{"kernel k() { }", "every kernel declares its launch grid", 11},
           Case{"kernel k(a) grid(1) {}", "expected ':' after the parameter name", 10},
           Case{"kernel k(a: f16) grid(1) {}", "'f16' is not a parameter type", 12},
           Case{"kernel k(a: ACT) grid(1) {}", "'ACT' is not a parameter type", 12},
           Case{"kernel k(a: ptr<x>) grid(1) {}", "expected a pointee type", 16},
           Case{"kernel k() grid(1) { if 1 < 2 < 3 {} }", "comparisons do not chain", 30},
           Case{"kernel k() grid(1) { kernel j() grid(1) {} }", "only allowed at the top level", 21},
           Case{"kernel k() grid(1) { 1 + 2 = 3; }", "only a variable or an element", 21},
           Case{"kernel k() grid(1) { let = 3; }", "expected a variable name after 'let'", 25},
           Case{"x = 1;", "expected 'kernel', 'fn', 'const' or 'import'", 0},
           Case{"kernel k() grid(1) { for i in 0 { } }", "expected '..' in the range", 32},
           Case{"kernel k() grid(1) { f(1,, 2); }", "expected an expression, found ','", 25},
           Case{"kernel k() grid(1) { let x = @; }", "unexpected character '@'", 29},
       }) {
    ParseResult r = parse(c.text);
    EXPECT_FALSE(r.module) << c.text;
    EXPECT_NE(r.message.find(c.message), std::string::npos)
        << c.text << "\n  got: " << r.message;
    EXPECT_EQ(r.offset, c.offset) << c.text << "\n  got: " << r.message;
  }
}

TEST(Parser, NestingIsBounded) {
  // Deep parentheses, unary chains, blocks and long operator chains are
  // errors, not stack overflows (in the parser, the builder or ~Expr).
  for (std::string text :
       {"const X = " + std::string(100000, '(') + "1" + std::string(100000, ')') + ";",
        "const X = " + std::string(100000, '-') + "1;",
        "const X = 1" + [] {
          std::string s;
          for (int i = 0; i < 100000; ++i)
            s += "+1";
          return s;
        }() + ";",
        "kernel k() grid(1) {" + [] {
          std::string s;
          for (int i = 0; i < 100000; ++i)
            s += "for i in 0..1 {";
          return s;
        }(),
        "kernel k() grid(1) {" + [] {
          std::string s;
          for (int i = 0; i < 100000; ++i)
            s += "if 1 < 2 {} else ";
          return s;
        }() + "{} }",
        "kernel k() grid(1) { let x = a" + [] {
          std::string s;
          for (int i = 0; i < 100000; ++i)
            s += "[0]";
          return s;
        }() + "; }"}) {
    ParseResult r = parse(text);
    EXPECT_FALSE(r.module);
    EXPECT_NE(r.message.find("deeper than"), std::string::npos) << r.message;
  }
}

//===----------------------------------------------------------------------===//
// Builder
//===----------------------------------------------------------------------===//

namespace {
Specialization spec(const char *preset = "kvarn_k4v2_g128", int d = 128,
                    int gqa = 1) {
  Specialization s;
  s.preset = preset;
  s.headDim = d;
  s.gqa = gqa;
  return s;
}
} // namespace

TEST(Builder, EveryLibraryKernelBuildsForEveryPresetAndShape) {
  for (const LibraryFile &file : libraryFiles()) {
    if (!file.isKernel || file.family != KernelFamily::Dense)
      continue;
    for (const Preset &preset : allPresets())
      for (int d : {64, 80, 96, 128, 256, 368, 512})
        for (int gqa : {1, 6})
          for (DType dtype : {DType::F16, DType::BF16}) {
            Specialization s = spec(preset.name, d, gqa);
            s.dtype = dtype;
            BuiltKernel k =
                buildFromSource(file.text, file.fileName, file.name, s);
            ASSERT_TRUE(bool(k)) << std::string(file.name) << " "
                                 << s.describe() << ": " << k.diagnostics;
          }
  }
}

// The MLA kernels, for every latent rank and a few rope dims and head
// counts (one program's heads dividing them or not), in both dtypes.
TEST(Builder, EveryMlaKernelBuildsForEveryRankAndShape) {
  for (const LibraryFile &file : libraryFiles()) {
    if (!file.isKernel || file.family != KernelFamily::Mla)
      continue;
    for (const MlaPreset &preset : allMlaPresets())
      for (int rank : {64, 128, 256, 512})
        for (auto [rope, heads] :
             {std::pair{64, 16}, {32, 128}, {8, 1}, {256, 7}})
          for (DType dtype : {DType::F16, DType::BF16}) {
            Specialization s = spec(preset.name, rank, heads);
            s.ropeDim = rope;
            s.dtype = dtype;
            BuiltKernel k =
                buildFromSource(file.text, file.fileName, file.name, s);
            ASSERT_TRUE(bool(k)) << std::string(file.name) << " "
                                 << s.describe() << ": " << k.diagnostics;
          }
  }
}

// A kernel of one family asked for the other's preset is refused by name,
// with the kernels that preset has; so is a name the library lacks.
TEST(Builder, LibraryKernelsBelongToTheirFamily) {
  Specialization mla = spec("kvarn_mla_k4_g128", 512, 16);
  mla.ropeDim = 64;
  ASSERT_FALSE(bool(mla.check()));
  kvarn::Expected<const LibraryFile *> f = findLibraryKernel("decode", mla);
  ASSERT_FALSE(bool(f));
  EXPECT_EQ(kvarn::toString(f.takeError()),
            "kernel 'decode' is built for dense presets, and kvarn_mla_k4_g128 "
            "is an MLA preset (its kernels: mla_append, mla_flush, mla_decode, "
            "mla_decode_split, mla_combine, mla_verify)");
  f = findLibraryKernel("mla_flush", spec("kvarn_k4v2_g128", 128));
  ASSERT_FALSE(bool(f));
  EXPECT_NE(kvarn::toString(f.takeError()).find("built for MLA presets"),
            std::string::npos);
  f = findLibraryKernel("mla_paged", mla);
  ASSERT_FALSE(bool(f));
  EXPECT_NE(kvarn::toString(f.takeError()).find("unknown kernel 'mla_paged'"),
            std::string::npos);
  f = findLibraryKernel("mla_decode", mla);
  ASSERT_TRUE(bool(f)) << kvarn::toString(f.takeError());
  EXPECT_EQ((*f)->name, "mla_decode");
  EXPECT_EQ(libraryKernelNames(KernelFamily::Dense).size(), 7u);

  // A dense kernel built for an MLA preset stops at its first dense
  // constant; the record fields of the other family are refused by name.
  const char *denseField = R"(
kernel k(c: ptr<i8>, o: ptr<f16>, n: i32) grid(n) {
  store_tile(o, 0, [1], load_field(c, 0, latent_scale));
}
)";
  BuiltKernel k =
      buildFromSource(denseField, "k.kvt", "k", spec("kvarn_k4v2_g128", 128));
  EXPECT_FALSE(bool(k));
  EXPECT_NE(k.diagnostics.find("records of kvarn_k4v2_g128 have no field "
                               "latent_scale"),
            std::string::npos)
      << k.diagnostics;
}

TEST(Builder, KernelAttributes) {
  BuiltKernel k = buildLibrary("decode_split", "kvarn_k4v4_g64", 96, 4);
  ASSERT_TRUE(bool(k));
  auto specAttr = k.func->getAttrOfType<kvt::SpecAttr>("kvt.spec");
  ASSERT_TRUE(specAttr);
  EXPECT_EQ(specAttr.getPreset(), "kvarn_k4v4_g64");
  EXPECT_EQ(specAttr.getHeadDim(), 96);
  EXPECT_EQ(specAttr.getGqa(), 4);
  EXPECT_TRUE(k.func->hasAttr("kvt.kernel"));
  auto grid = k.func->getAttrOfType<mlir::ArrayAttr>("kvt.grid");
  ASSERT_TRUE(grid);
  std::vector<std::string> dims;
  for (mlir::Attribute a : grid)
    dims.push_back(mlir::cast<mlir::StringAttr>(a).str());
  EXPECT_EQ(dims, (std::vector<std::string>{"batch", "num_kv_heads", "num_splits"}));
  EXPECT_EQ(k.func.getArgAttrOfType<mlir::StringAttr>(0, "kvt.name").str(), "q");
  EXPECT_EQ(k.func.getNumArguments(), 15u);
}

// ACT is the specialization's dtype in pointer types and conversions, so
// one source serves fp16 and bf16 models.
TEST(Builder, ActIsTheActivationDtype) {
  const char *source = R"(
kernel k(x: ptr<ACT>, y: ptr<ACT>, n: i32) grid(n) {
  let t = f32(load_tile(x, 0, [1, D], [D, 1]));
  store_tile(y, 0, [D, 1], ACT(t));
  y[D] = ACT(f32(n));
}
)";
  for (DType dtype : {DType::F16, DType::BF16}) {
    Specialization s = spec("kvarn_k4v2_g128", 64);
    s.dtype = dtype;
    BuiltKernel k = buildFromSource(source, "k.kvt", "k", s);
    ASSERT_TRUE(bool(k)) << k.diagnostics;
    mlir::MLIRContext *ctx = k.context.get();
    mlir::Type act = dtype == DType::F16 ? mlir::Type(mlir::Float16Type::get(ctx))
                                         : mlir::Type(mlir::BFloat16Type::get(ctx));
    EXPECT_EQ(k.func.getArgumentTypes()[0], kvt::PointerType::get(ctx, act));
    EXPECT_EQ(k.func.getArgumentTypes()[1], kvt::PointerType::get(ctx, act));
    int converts = 0, scalarTruncs = 0;
    k.func.walk([&](kvt::ConvertOp c) {
      converts += c.getResult().getType() == kvt::TileType::get({1, 64}, act);
    });
    k.func.walk([&](mlir::arith::TruncFOp t) {
      scalarTruncs += t.getType() == act;
    });
    EXPECT_EQ(converts, 1) << std::string(spell(dtype));
    EXPECT_EQ(scalarTruncs, 1) << std::string(spell(dtype));
  }
  // Without a dtype the specialization is f16: existing kernels keep their
  // fp16 ABI.
  EXPECT_EQ(Specialization().dtype, DType::F16);
}

TEST(Builder, ConstantsFoldAndPickBranches) {
  // A constant-condition if builds only its taken branch; shapes may be
  // constant expressions.
  BuiltKernel k = buildFromSource(R"(
const HALF = D / 2;
kernel k(p: ptr<f32>, n: i32) grid(n, 3) {
  if G == 64 { p[0] = 1.0; } else { p[1] = 2.0; }
  store_tile(p, 0, [1], splat(0.5, [HALF]));
}
)", "k.kvt", "k", spec("kvarn_k4v2_g128", 96));
  ASSERT_TRUE(bool(k)) << k.diagnostics;
  int stores = 0, ifs = 0;
  k.func.walk([&](mlir::Operation *op) {
    stores += llvm::isa<kvt::StoreOp>(op);
    ifs += llvm::isa<mlir::scf::IfOp>(op);
  });
  EXPECT_EQ(stores, 1);
  EXPECT_EQ(ifs, 0);
  auto grid = k.func->getAttrOfType<mlir::ArrayAttr>("kvt.grid");
  EXPECT_EQ(mlir::cast<mlir::IntegerAttr>(grid[1]).getInt(), 3);
  bool found = false;
  k.func.walk([&](kvt::SplatOp s) {
    found = s.getResult().getType() ==
            kvt::TileType::get({48}, mlir::Float32Type::get(k.context.get()));
  });
  EXPECT_TRUE(found);
}

// LLVM's backend is superlinear in a kernel's size (10,000 one-line stores
// took 38 s): past kMaxKernelOps operations a kernel is an error that says
// so, and up to it one builds.
TEST(Builder, KernelSizeIsBounded) {
  auto stores = [](int n) {
    std::string source = "kernel k(p: ptr<f32>, n: i32) grid(n) {\n";
    for (int i = 0; i < n; ++i)
      source += "  p[" + std::to_string(i) + "] = 1.0;\n";
    return source + "}\n";
  };
  BuiltKernel small = buildFromSource(stores(1000), "k.kvt", "k", spec());
  EXPECT_TRUE(bool(small)) << small.diagnostics; // 3,002 operations
  BuiltKernel large = buildFromSource(stores(10000), "k.kvt", "k", spec());
  EXPECT_FALSE(bool(large));
  EXPECT_NE(large.diagnostics.find("k.kvt:1:8: error: kernel 'k' has 30002 "
                                   "operations after fn inlining, more than "
                                   "4096"),
            std::string::npos)
      << large.diagnostics;
}

TEST(Builder, FloatToIntFoldsTruncateWithinRange) {
  // The values each constant store writes, in order.
  BuiltKernel k = buildFromSource(R"(
kernel k(p: ptr<i64>, q: ptr<i32>, n: i32) grid(n) {
  p[0] = i64(-2.9);
  p[1] = i64(-9223372036854775808.0);
  p[2] = i64(9.2e18);
  p[3] = cdiv(-9223372036854775807 - 1, 1);
  p[4] = cdiv(-7, 2);
  q[0] = i32(2147483647.9);
  q[1] = i32(-2147483648.5);
}
)", "k.kvt", "k", spec());
  ASSERT_TRUE(bool(k)) << k.diagnostics;
  std::vector<int64_t> stored;
  k.func.walk([&](kvt::StoreOp s) {
    auto c = s.getValue().getDefiningOp<mlir::arith::ConstantIntOp>();
    stored.push_back(c ? c.value() : -1);
  });
  EXPECT_EQ(stored, (std::vector<int64_t>{-2, INT64_MIN, 9200000000000000000,
                                          INT64_MIN, -3, INT32_MAX, INT32_MIN}));
}

TEST(Builder, DiagnosticsNameTheLocation) {
  struct Case { const char *source; const char *expected; };
  for (Case c : {
           Case{"kernel k(n: i32) grid(n) { let x = y; }",
                "k.kvt:1:36: error: unknown name 'y'"},
           Case{"kernel k(n: i32) grid(n) { let x = 1.5; x = n; }",
                "k.kvt:1:45: error: 'x' is f32; cannot assign i32"},
           Case{"kernel k(n: i32) grid(n) { let x = rotate(1, 2); }",
                "k.kvt:1:36: error: 'rotate' takes 1 argument, got 2: "
                "rotate(tile)"},
           Case{"kernel k(n: i32) grid(n) { let x = transpose(splat(1.0, "
                "[D])); }",
                "k.kvt:1:36: error: input must have rank 2, got 1"},
           Case{"kernel k(n: i32) grid(n) { let x = rotate(splat(1.0, [4, "
                "100])); }",
                "k.kvt:1:36: error: 'kvt.rotate' op no rotation of order 100"},
           Case{"kernel k(p: ptr<i8>, n: i32) grid(n) { store_field(p, 0, "
                "k_scale, splat(1.0, [D])); }",
                "error: 'kvt.store_field' op field k_scale of kvarn_k4v2_g128 "
                "at head_dim 128 is '!kvt.tile<128xf16>', not "
                "'!kvt.tile<128xf32>'"},
           Case{"kernel k(p: ptr<i8>, n: i32) grid(n) { let f = load_field(p, "
                "0, k_bogus); }",
                "must be a record field name: k_codes, k_scale"},
           Case{"kernel k(n: i32) grid(n) { let x = program_id(1); }",
                "axis 1 is outside the kernel's 1-dimensional grid"},
           Case{"kernel k(n: i32) grid(n) { let a, b = normalize(splat(1.0, "
                "[4, 4]), 8); let c = a + b; }",
                "'+' works on scalars, not tile<4xf32>"},
           Case{"kernel k(n: i32) grid(n) { let a = normalize(splat(1.0, [4, "
                "4]), 8); }",
                "2 values cannot be bound to 1 name"},
           Case{"kernel k(n: i32) grid(n) { let x; let y = x + 1; }",
                "'x' is used before it has a value on every path"},
           Case{"kernel k(n: i32) grid(n) { let x; if n > 0 { x = 1; } let y = "
                "x; }",
                "'x' is used before it has a value on every path"},
           Case{"kernel k(n: i32) grid(n) { n = 1; }",
                "cannot assign to parameter 'n'"},
           Case{"kernel k(n: i32) grid(n) { for i in 0..n { i = 1; } }",
                "cannot assign to loop variable 'i'"},
           Case{"kernel k(n: i32) grid(n) { let x; for i in 0..n { x = i; } }",
                "a variable assigned in this loop has no value before it"},
           Case{"kernel k(n: i32) grid(n) { let D = 1; }",
                "'D' is a constant and cannot be redefined"},
           Case{"kernel k(n: i32) grid(n) { let ACT = 1; }",
                "'ACT' is the name of a function or type"},
           Case{"kernel k(p: ptr<ACT>, n: i32) grid(n) { p[0] = 1.0 + p[1]; }",
                "'+' does not apply to f16; convert with i32(...) or f32(...) "
                "first"},
           Case{"kernel k(n: i32) grid(n) { let a = 1; let a = 2; }",
                "'a' is already defined in this scope; note: k.kvt:1:32: first "
                "defined here"},
           Case{"fn f(a) { return f(a); } kernel k(n: i32) grid(n) { let x = "
                "f(n); }",
                "'f' calls itself; fns are inlined"},
           Case{"fn f(a, b) { return a; } kernel k(n: i32) grid(n) { let x = "
                "f(n); }",
                "'f' takes 2 arguments, got 1"},
           Case{"fn f(a) { return a; let b = 1; } kernel k(n: i32) grid(n) { "
                "let x = f(n); }",
                "'return' must be the last statement of a fn body"},
           Case{"kernel k(n: i32) grid(n) { return; }",
                "'return' is only allowed at the end of a fn"},
           Case{"kernel k(n: i32) grid(m) { }",
                "grid dimension 'm' is neither a parameter of the kernel nor a "
                "constant"},
           Case{"kernel k(n: f32) grid(n) { }",
                "grid dimension 'n' must be an i32 or i64 parameter"},
           Case{"kernel k(n: i32) grid(n) { let x = 3000000000 + n; }",
                "the constant 3000000000 does not fit in i32"},
           Case{"kernel k(n: i32) grid(n) { const Z = 1 / 0; }",
                "division by zero in a constant expression"},
           // INT64_MIN / -1 traps in C++; cdiv folds it like '/'.
           Case{"kernel k(n: i32) grid(n) { const Z = "
                "cdiv(-9223372036854775807 - 1, -1); }",
                "k.kvt:1:38: error: the constant expression overflows 64 bits"},
           Case{"kernel k(n: i32) grid(n) { const Z = cdiv(1, 0); }",
                "division by zero in a constant expression"},
           // Float to int folds check the range first and quote the float.
           Case{"kernel k(p: ptr<i64>, n: i32) grid(n) { p[0] = i64(1e19); }",
                "the constant 1e+19 does not fit in i64"},
           Case{"kernel k(p: ptr<i64>, n: i32) grid(n) { p[0] = i64(-1e19); }",
                "the constant -1e+19 does not fit in i64"},
           Case{"kernel k(p: ptr<i64>, n: i32) grid(n) { p[0] = "
                "i64(9223372036854775807.0); }",
                "the constant 9223372036854775808 does not fit in i64"},
           Case{"kernel k(p: ptr<i64>, n: i32) grid(n) { p[0] = i64(INF); }",
                "the constant inf does not fit in i64"},
           Case{"kernel k(p: ptr<i64>, n: i32) grid(n) { p[0] = i64(INF - "
                "INF); }",
                "the constant nan does not fit in i64"},
           Case{"kernel k(p: ptr<i32>, n: i32) grid(n) { p[0] = i32(1e30); }",
                "the constant 1e+30 does not fit in i32"},
           Case{"kernel k(p: ptr<i32>, n: i32) grid(n) { p[0] = "
                "i32(2147483648.0); }",
                "the constant 2147483648 does not fit in i32"},
           // A constant expression past a float type's range is not inf.
           Case{"kernel k(p: ptr<f32>, n: i32) grid(n) { p[0] = 1e38 * 10.0; }",
                "the constant 1e+39 does not fit in f32"},
           Case{
               "kernel k(p: ptr<f16>, n: i32) grid(n) { p[0] = f16(70000.0); }",
               "the constant 70000 does not fit in f16"},
           Case{"kernel k(p: ptr<f16>, n: i32) grid(n) { p[0] = f16(70000); }",
                "the constant 70000 does not fit in f16"},
           Case{"kernel k(n: i32) grid(n) { let x = n + 1.5; }",
                "a float constant cannot be used as i32"},
           Case{"kernel k(n: i32) grid(n) { if n { } }",
                "a condition must be a comparison"},
           Case{"kernel k(n: i32) grid(n) { rotate(splat(1.0, [1, D])); }",
                "the result of 'rotate' is unused"},
           Case{"kernel k(n: i32) grid(n) { n + 1; }",
                "this expression has no effect"},
           Case{"kernel k(p: ptr<f16>, n: i32) grid(n) { p[0] = 1.0 + p[1]; }",
                "k.kvt:1:52: error: '+' does not apply to f16; convert with "
                "i32(...) or f32(...) first"},
           Case{"kernel k(p: ptr<f16>, n: i32) grid(n) { let t = load_tile(p, "
                "0, [n], [1]); }",
                "a shape dimension must be a compile-time integer"},
           Case{"import nothing; kernel k(n: i32) grid(n) { }",
                "unknown module 'nothing' (library modules: layout, paged, "
                "mla_paged)"},
           Case{"kernel k(n: i32) grid(n) { let x = frob(1); }",
                "unknown function 'frob'"},
           Case{"kernel k(p: ptr<i8>, n: i32) grid(n) { prefetch(p, 0, n); }",
                "argument 3 of 'prefetch' (byte count) must be a compile-time "
                "integer, not i32"},
           Case{"kernel k(p: ptr<i8>, n: i32) grid(n) { prefetch(p, 0, 0); }",
                "'kvt.prefetch' op attribute 'bytes' failed to satisfy "
                "constraint"},
           Case{"kernel k(p: ptr<f16>, n: i32) grid(n) { prefetch_rows(p, "
                "0, 256, n, 8); }",
                "argument 4 of 'prefetch_rows' (row count) must be a "
                "compile-time integer, not i32"},
           Case{"kernel k(p: ptr<f16>, n: i32) grid(n) { prefetch_rows(p, "
                "0, 256, 4); }",
                "'prefetch_rows' takes 5 arguments, got 4: prefetch_rows(ptr, "
                "offset, bytes, rows, stride)"},
           Case{"import paged; kernel k(p: ptr<f32>, n: i32) grid(n) { let q = "
                "load_queries(p, n, 0.5); }",
                "paged.kvt:47:54 (inlined at k.kvt:1:63): error: a float "
                "constant cannot be used as i32"},
       }) {
    BuiltKernel k = buildFromSource(c.source, "k.kvt", "k", spec());
    EXPECT_FALSE(bool(k)) << c.source;
    EXPECT_NE(k.diagnostics.find(c.expected), std::string::npos)
        << c.source << "\n  got: " << k.diagnostics;
  }
}

TEST(Builder, AnInvalidSpecializationIsADiagnostic) {
  BuiltKernel k = buildFromSource("kernel k(n: i32) grid(n) { }", "k.kvt", "k",
                                  spec("kvarn_k9v9", 128));
  EXPECT_FALSE(bool(k));
  EXPECT_NE(k.diagnostics.find("unknown preset 'kvarn_k9v9'"), std::string::npos);
  k = buildFromSource("kernel k(n: i32) grid(n) { }", "k.kvt", "k",
                      spec("kvarn_k4v2_g128", 72));
  EXPECT_NE(k.diagnostics.find("head_dim 72 is not supported"), std::string::npos);
}
