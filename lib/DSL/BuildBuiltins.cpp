//===- BuildBuiltins.cpp - the builtins that become kvt ops ---------------===//
//
// One builder per builtin, each a thin mapping of DSL arguments onto the kvt
// op: shapes and bit widths must be compile-time constants, offsets and
// strides become i64. Type and shape rules are the ops' own: their
// inferReturnTypes and verifiers report the errors, at the call's location.
//
//===----------------------------------------------------------------------===//

#include "KvtBuilder.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

#include "llvm/ADT/StringSwitch.h"

using namespace mlir;
using namespace kvarn;
using namespace kvarn::dsl;

namespace {

/// Argument access for one builtin call, with messages that name the
/// builtin and the argument.
class CallArgs {
public:
  CallArgs(KvtBuilder &kb, const ast::CallExpr &call) : kb(kb), call(call) {}

  llvm::SMLoc loc() const { return call.getLoc(); }
  const ast::Expr &expr(unsigned i) const { return *call.getArgs()[i]; }

  LogicalResult arity(std::initializer_list<const char *> names) {
    size_t n = names.size();
    if (call.getArgs().size() == n)
      return success();
    std::string signature = call.getCallee().str() + "(";
    for (const char *name : names)
      signature += std::string(signature.back() == '(' ? "" : ", ") + name;
    return kb.error(loc(), "'" + call.getCallee() + "' takes " +
                               llvm::Twine(n) +
                               (n == 1 ? " argument" : " arguments") + ", got " +
                               llvm::Twine(call.getArgs().size()) + ": " +
                               signature + ")");
  }

  std::string what(unsigned i, llvm::StringRef role) const {
    return "argument " + std::to_string(i + 1) + " of '" +
           call.getCallee().str() + "' (" + role.str() + ")";
  }

  FailureOr<Value> tile(unsigned i, llvm::StringRef role) {
    FailureOr<Operand> v = kb.buildSingle(expr(i));
    if (failed(v))
      return failure();
    if (!v->isValue() || !isa<kvt::TileType>(v->getType()))
      return kb.error(expr(i).getLoc(),
                      what(i, role) + " must be a tile, not " + kb.describe(*v));
    return v->value;
  }

  FailureOr<Value> pointer(unsigned i, llvm::StringRef role) {
    FailureOr<Operand> v = kb.buildSingle(expr(i));
    if (failed(v))
      return failure();
    if (!v->isValue() || !isa<kvt::PointerType>(v->getType()))
      return kb.error(expr(i).getLoc(), what(i, role) +
                                            " must be a pointer, not " +
                                            kb.describe(*v));
    return v->value;
  }

  FailureOr<Value> index64(unsigned i, llvm::StringRef role) {
    FailureOr<Operand> v = kb.buildSingle(expr(i));
    if (failed(v))
      return failure();
    return kb.toIndex64(*v, what(i, role));
  }

  /// A scalar of exactly `type` (constants are materialized as `type`).
  FailureOr<Value> scalar(unsigned i, llvm::StringRef role, Type type) {
    FailureOr<Operand> v = kb.buildSingle(expr(i));
    if (failed(v))
      return failure();
    if (v->isValue() && v->getType() != type)
      return kb.error(expr(i).getLoc(), what(i, role) + " must be " +
                                            kb.describe(type) + ", not " +
                                            kb.describe(*v));
    return kb.materialize(*v, type);
  }

  FailureOr<int64_t> constant(unsigned i, llvm::StringRef role) {
    FailureOr<Operand> v = kb.buildSingle(expr(i));
    if (failed(v))
      return failure();
    if (v->kind != Operand::Kind::Int)
      return kb.error(expr(i).getLoc(), what(i, role) +
                                            " must be a compile-time integer, "
                                            "not " + kb.describe(*v));
    return v->intValue;
  }

  /// `[d0, d1, ...]` of positive compile-time integers.
  FailureOr<SmallVector<int64_t>> shape(unsigned i) {
    const auto *list = dyn_cast<ast::ListExpr>(&expr(i));
    if (!list)
      return kb.error(expr(i).getLoc(),
                      what(i, "shape") + " must be a list like [G, D]");
    SmallVector<int64_t> dims;
    for (const ast::ExprPtr &e : list->getElements()) {
      FailureOr<Operand> v = kb.buildSingle(*e);
      if (failed(v))
        return failure();
      if (v->kind != Operand::Kind::Int)
        return kb.error(e->getLoc(), "a shape dimension must be a "
                                     "compile-time integer, not " +
                                         kb.describe(*v));
      if (v->intValue <= 0)
        return kb.error(e->getLoc(), "a shape dimension must be positive, "
                                     "got " + llvm::Twine(v->intValue));
      dims.push_back(v->intValue);
    }
    if (dims.empty() || dims.size() > 3)
      return kb.error(list->getLoc(), "a tile has 1 to 3 dimensions, not " +
                                          llvm::Twine(dims.size()));
    return dims;
  }

  /// `[s0, s1, ...]` of integers (strides in elements), as i64.
  FailureOr<SmallVector<Value>> strides(unsigned i) {
    const auto *list = dyn_cast<ast::ListExpr>(&expr(i));
    if (!list)
      return kb.error(expr(i).getLoc(),
                      what(i, "strides") + " must be a list like [row, 1]");
    SmallVector<Value> values;
    for (const ast::ExprPtr &e : list->getElements()) {
      FailureOr<Operand> v = kb.buildSingle(*e);
      if (failed(v))
        return failure();
      FailureOr<Value> s = kb.toIndex64(*v, "a stride");
      if (failed(s))
        return failure();
      values.push_back(*s);
    }
    return values;
  }

  FailureOr<kvt::RecordField> field(unsigned i) {
    const auto *name = dyn_cast<ast::NameExpr>(&expr(i));
    std::optional<kvt::RecordField> f;
    if (name)
      f = kvt::symbolizeRecordField(name->getName());
    if (f)
      return *f;
    std::string known;
    for (uint32_t v = 0; auto field = kvt::symbolizeRecordField(v); ++v)
      known += (known.empty() ? "" : ", ") + kvt::stringifyRecordField(*field).str();
    return kb.error(expr(i).getLoc(),
                    what(i, "field") + " must be a record field name: " + known);
  }

private:
  KvtBuilder &kb;
  const ast::CallExpr &call;
};

Operand single(Value v, llvm::SMLoc at) { return Operand::ofValue(v, at); }

Operand several(ValueRange values, llvm::SMLoc at) {
  Operand o;
  o.kind = Operand::Kind::Tuple;
  o.loc = at;
  for (Value v : values)
    o.elements.push_back(Operand::ofValue(v, at));
  return o;
}

Operand none() { return Operand(); }

using BuiltinFn = FailureOr<Operand> (*)(KvtBuilder &, CallArgs &);

//===----------------------------------------------------------------------===//
// Program and memory
//===----------------------------------------------------------------------===//

template <typename OpTy>
FailureOr<Operand> buildAxisQuery(KvtBuilder &kb, CallArgs &args) {
  if (failed(args.arity({"axis"})))
    return failure();
  FailureOr<int64_t> axis = args.constant(0, "axis");
  if (failed(axis))
    return failure();
  if (*axis < 0 || *axis >= int64_t(kb.gridRank))
    return kb.error(args.expr(0).getLoc(),
                    "axis " + llvm::Twine(*axis) + " is outside the kernel's " +
                        llvm::Twine(kb.gridRank) + "-dimensional grid");
  FailureOr<OpTy> op = kb.createVerified<OpTy>(args.loc(), uint32_t(*axis));
  if (failed(op))
    return failure();
  return single(*op, args.loc());
}

FailureOr<Operand> buildLoadTile(KvtBuilder &kb, CallArgs &args) {
  if (failed(args.arity({"ptr", "offset", "shape", "strides"})))
    return failure();
  FailureOr<Value> ptr = args.pointer(0, "pointer");
  if (failed(ptr))
    return failure();
  FailureOr<Value> offset = args.index64(1, "offset");
  if (failed(offset))
    return failure();
  FailureOr<SmallVector<int64_t>> shape = args.shape(2);
  if (failed(shape))
    return failure();
  FailureOr<SmallVector<Value>> strides = args.strides(3);
  if (failed(strides))
    return failure();
  Type element = cast<kvt::PointerType>(ptr->getType()).getPointeeType();
  auto type = kvt::TileType::getChecked(
      [&] { return kb.emitError(args.loc()); }, kb.ctx(), ArrayRef<int64_t>(*shape), element);
  if (!type)
    return failure();
  FailureOr<kvt::LoadTileOp> op =
      kb.createVerified<kvt::LoadTileOp>(args.loc(), type, *ptr, *offset, *strides);
  if (failed(op))
    return failure();
  return single(*op, args.loc());
}

FailureOr<Operand> buildStoreTile(KvtBuilder &kb, CallArgs &args) {
  if (failed(args.arity({"ptr", "offset", "strides", "value"})))
    return failure();
  FailureOr<Value> ptr = args.pointer(0, "pointer");
  if (failed(ptr))
    return failure();
  FailureOr<Value> offset = args.index64(1, "offset");
  if (failed(offset))
    return failure();
  FailureOr<SmallVector<Value>> strides = args.strides(2);
  if (failed(strides))
    return failure();
  FailureOr<Value> value = args.tile(3, "value");
  if (failed(value))
    return failure();
  if (failed(kb.createVerified<kvt::StoreTileOp>(args.loc(), *value, *ptr,
                                                 *offset, *strides)))
    return failure();
  return none();
}

/// prefetch(ptr, offset, bytes), and with `Rows` prefetch_rows(ptr, offset,
/// bytes, rows, stride): `rows` ranges of `bytes`, `stride` elements apart.
template <bool Rows>
FailureOr<Operand> buildPrefetch(KvtBuilder &kb, CallArgs &args) {
  if (failed(Rows ? args.arity({"ptr", "offset", "bytes", "rows", "stride"})
                  : args.arity({"ptr", "offset", "bytes"})))
    return failure();
  FailureOr<Value> ptr = args.pointer(0, "pointer");
  if (failed(ptr))
    return failure();
  FailureOr<Value> offset = args.index64(1, "offset");
  if (failed(offset))
    return failure();
  FailureOr<int64_t> bytes = args.constant(2, "byte count");
  if (failed(bytes))
    return failure();
  IntegerAttr rows;
  Value stride;
  if (Rows) {
    FailureOr<int64_t> count = args.constant(3, "row count");
    if (failed(count))
      return failure();
    FailureOr<Value> apart = args.index64(4, "stride");
    if (failed(apart))
      return failure();
    rows = kb.b().getI64IntegerAttr(*count);
    stride = *apart;
  }
  if (failed(kb.createVerified<kvt::PrefetchOp>(
          args.loc(), *ptr, *offset, kb.b().getI64IntegerAttr(*bytes), rows,
          stride)))
    return failure();
  return none();
}

/// A builtin of no arguments and no result, one op.
template <typename OpT>
FailureOr<Operand> buildNullary(KvtBuilder &kb, CallArgs &args) {
  if (failed(args.arity({})))
    return failure();
  if (failed(kb.createVerified<OpT>(args.loc())))
    return failure();
  return none();
}

FailureOr<Operand> buildLoadField(KvtBuilder &kb, CallArgs &args) {
  if (failed(args.arity({"cache", "offset", "field"})))
    return failure();
  FailureOr<Value> cache = args.pointer(0, "record cache");
  if (failed(cache))
    return failure();
  FailureOr<Value> offset = args.index64(1, "byte offset of the record");
  if (failed(offset))
    return failure();
  FailureOr<kvt::RecordField> field = args.field(2);
  if (failed(field))
    return failure();
  if (!kvt::hasField(kb.recordFormat(), *field))
    return kb.error(args.expr(2).getLoc(),
                    "records of " + kb.specialization().preset +
                        " have no field " + kvt::stringifyRecordField(*field));
  kvt::TileType type = kvt::getFieldType(kb.ctx(), kb.recordFormat(), *field);
  FailureOr<kvt::LoadFieldOp> op = kb.createVerified<kvt::LoadFieldOp>(
      args.loc(), type, *cache, *offset,
      kvt::RecordFieldAttr::get(kb.ctx(), *field));
  if (failed(op))
    return failure();
  return single(*op, args.loc());
}

FailureOr<Operand> buildStoreField(KvtBuilder &kb, CallArgs &args) {
  if (failed(args.arity({"cache", "offset", "field", "value"})))
    return failure();
  FailureOr<Value> cache = args.pointer(0, "record cache");
  if (failed(cache))
    return failure();
  FailureOr<Value> offset = args.index64(1, "byte offset of the record");
  if (failed(offset))
    return failure();
  FailureOr<kvt::RecordField> field = args.field(2);
  if (failed(field))
    return failure();
  FailureOr<Value> value = args.tile(3, "value");
  if (failed(value))
    return failure();
  if (failed(kb.createVerified<kvt::StoreFieldOp>(
          args.loc(), *value, *cache, *offset,
          kvt::RecordFieldAttr::get(kb.ctx(), *field))))
    return failure();
  return none();
}

//===----------------------------------------------------------------------===//
// Elementwise and layout
//===----------------------------------------------------------------------===//

FailureOr<Operand> buildSplat(KvtBuilder &kb, CallArgs &args) {
  if (failed(args.arity({"value", "shape"})))
    return failure();
  FailureOr<Operand> v = kb.buildSingle(args.expr(0));
  if (failed(v))
    return failure();
  FailureOr<Value> scalar = kb.materializeDefault(*v);
  if (failed(scalar))
    return failure();
  if (isa<kvt::TileType, kvt::PointerType>(scalar->getType()))
    return kb.error(args.expr(0).getLoc(), "'splat' needs a scalar value, not " +
                                               kb.describe(scalar->getType()));
  FailureOr<SmallVector<int64_t>> shape = args.shape(1);
  if (failed(shape))
    return failure();
  auto type = kvt::TileType::getChecked(
      [&] { return kb.emitError(args.loc()); }, kb.ctx(), ArrayRef<int64_t>(*shape),
      scalar->getType());
  if (!type)
    return failure();
  FailureOr<kvt::SplatOp> op = kb.createVerified<kvt::SplatOp>(args.loc(), type, *scalar);
  if (failed(op))
    return failure();
  return single(*op, args.loc());
}

FailureOr<Operand> buildTranspose(KvtBuilder &kb, CallArgs &args) {
  if (failed(args.arity({"tile"})))
    return failure();
  FailureOr<Value> in = args.tile(0, "tile");
  if (failed(in))
    return failure();
  FailureOr<kvt::TransposeOp> op =
      kb.createInferred<kvt::TransposeOp>(args.loc(), 1, *in);
  if (failed(op))
    return failure();
  return single(*op, args.loc());
}

template <bool Inverse>
FailureOr<Operand> buildRotate(KvtBuilder &kb, CallArgs &args) {
  if (failed(args.arity({"tile"})))
    return failure();
  FailureOr<Value> in = args.tile(0, "tile");
  if (failed(in))
    return failure();
  FailureOr<kvt::RotateOp> op = kb.createVerified<kvt::RotateOp>(
      args.loc(), in->getType(), *in, Inverse);
  if (failed(op))
    return failure();
  return single(*op, args.loc());
}

//===----------------------------------------------------------------------===//
// KVarN primitives
//===----------------------------------------------------------------------===//

FailureOr<Operand> buildNormalize(KvtBuilder &kb, CallArgs &args) {
  if (failed(args.arity({"tile", "iters"})))
    return failure();
  FailureOr<Value> in = args.tile(0, "tile");
  if (failed(in))
    return failure();
  FailureOr<int64_t> iters = args.constant(1, "iterations");
  if (failed(iters))
    return failure();
  if (*iters < 0 || *iters > 64)
    return kb.error(args.expr(1).getLoc(),
                    "Sinkhorn iterations must be in [0, 64], got " +
                        llvm::Twine(*iters));
  FailureOr<kvt::NormalizeOp> op = kb.createInferred<kvt::NormalizeOp>(
      args.loc(), 2, *in, uint32_t(*iters));
  if (failed(op))
    return failure();
  return several(op->getResults(), args.loc());
}

static FailureOr<uint32_t> bitsArg(KvtBuilder &kb, CallArgs &args, unsigned i) {
  FailureOr<int64_t> bits = args.constant(i, "bits");
  if (failed(bits))
    return failure();
  if (*bits < 1 || *bits > 8)
    return kb.error(args.expr(i).getLoc(),
                    "bits must be 2, 4 or 8, got " + llvm::Twine(*bits));
  return uint32_t(*bits);
}

FailureOr<Operand> buildQuantize(KvtBuilder &kb, CallArgs &args) {
  if (failed(args.arity({"tile", "col_scale", "row_scale", "bits"})))
    return failure();
  FailureOr<Value> in = args.tile(0, "tile");
  if (failed(in))
    return failure();
  FailureOr<Value> colScale = args.tile(1, "column scales");
  if (failed(colScale))
    return failure();
  FailureOr<Value> rowScale = args.tile(2, "row scales");
  if (failed(rowScale))
    return failure();
  FailureOr<uint32_t> bits = bitsArg(kb, args, 3);
  if (failed(bits))
    return failure();
  // The record's scale format decides the rounding (the scales' types
  // follow, and store_field checks them against the field).
  const kvt::RecordFormat &format = kb.recordFormat();
  bool e4m3 = format.dense && format.dense->scaleFormat == ScaleFormat::E4M3;
  FailureOr<kvt::QuantizeOp> op = kb.createInferred<kvt::QuantizeOp>(
      args.loc(), 4, *in, *colScale, *rowScale, *bits, e4m3);
  if (failed(op))
    return failure();
  return several(op->getResults(), args.loc());
}

FailureOr<Operand> buildDequantize(KvtBuilder &kb, CallArgs &args) {
  if (failed(args.arity({"codes", "scale", "zero", "other_scale"})))
    return failure();
  SmallVector<Value> in;
  const char *roles[] = {"codes", "row scales", "row zeros", "column scales"};
  for (unsigned i = 0; i < 4; ++i) {
    FailureOr<Value> v = args.tile(i, roles[i]);
    if (failed(v))
      return failure();
    in.push_back(*v);
  }
  FailureOr<kvt::DequantizeOp> op = kb.createInferred<kvt::DequantizeOp>(
      args.loc(), 1, in[0], in[1], in[2], in[3]);
  if (failed(op))
    return failure();
  return single(*op, args.loc());
}

template <typename OpTy>
FailureOr<Operand> buildPacking(KvtBuilder &kb, CallArgs &args) {
  if (failed(args.arity({"codes", "bits"})))
    return failure();
  FailureOr<Value> in = args.tile(0, "codes");
  if (failed(in))
    return failure();
  FailureOr<uint32_t> bits = bitsArg(kb, args, 1);
  if (failed(bits))
    return failure();
  FailureOr<OpTy> op = kb.createInferred<OpTy>(args.loc(), 1, *in, *bits);
  if (failed(op))
    return failure();
  return single(*op, args.loc());
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

/// The forms of kvt.attend the DSL spells.
enum class AttendForm {
  Plain,  // attend(q, k, v, m, l, acc, valid, scale)
  Ranged, // attend_range(q, k, v, m, l, acc, from, valid, scale): a
          // window's lower edge
  Rope,   // attend_rope(q, k, v, q_rope, k_rope, m, l, acc, valid, scale):
          // MLA's second score term
};

template <AttendForm Form>
FailureOr<Operand> buildAttend(KvtBuilder &kb, CallArgs &args) {
  LogicalResult arity =
      Form == AttendForm::Ranged ? args.arity({"q", "k", "v", "m", "l", "acc",
                                               "from", "valid", "scale"})
      : Form == AttendForm::Rope
          ? args.arity({"q", "k", "v", "q_rope", "k_rope", "m", "l", "acc",
                        "valid", "scale"})
          : args.arity({"q", "k", "v", "m", "l", "acc", "valid", "scale"});
  if (failed(arity))
    return failure();
  SmallVector<const char *> roles = {"queries", "keys", "values"};
  if (Form == AttendForm::Rope)
    roles.append({"rope queries", "rope keys"});
  roles.append({"running max", "running sum", "accumulator"});
  if (Form == AttendForm::Ranged)
    roles.push_back("first key per row");
  roles.push_back("valid keys per row");
  SmallVector<Value> tiles;
  for (unsigned i = 0; i < roles.size(); ++i) {
    FailureOr<Value> v = args.tile(i, roles[i]);
    if (failed(v))
      return failure();
    tiles.push_back(*v);
  }
  FailureOr<Value> scale =
      args.scalar(roles.size(), "softmax scale", kb.b().getF32Type());
  if (failed(scale))
    return failure();
  Value q = tiles[0], k = tiles[1], v = tiles[2], qRope, kRope;
  unsigned state = 3;
  if (Form == AttendForm::Rope) {
    qRope = tiles[3];
    kRope = tiles[4];
    state = 5;
  }
  Value m = tiles[state], l = tiles[state + 1], acc = tiles[state + 2];
  Value valid = tiles.back();
  Value from = Form == AttendForm::Ranged ? tiles[state + 3] : Value();
  FailureOr<kvt::AttendOp> op = kb.createVerified<kvt::AttendOp>(
      args.loc(), m.getType(), l.getType(), acc.getType(), q, k, v, m, l, acc,
      valid, from, qRope, kRope, *scale);
  if (failed(op))
    return failure();
  return several(op->getResults(), args.loc());
}

FailureOr<Operand> buildAttendFinish(KvtBuilder &kb, CallArgs &args) {
  if (failed(args.arity({"m", "l", "acc"})))
    return failure();
  SmallVector<Value> tiles;
  const char *roles[] = {"running max", "running sum", "accumulator"};
  for (unsigned i = 0; i < 3; ++i) {
    FailureOr<Value> v = args.tile(i, roles[i]);
    if (failed(v))
      return failure();
    tiles.push_back(*v);
  }
  FailureOr<kvt::AttendFinishOp> op = kb.createVerified<kvt::AttendFinishOp>(
      args.loc(), tiles[2].getType(), tiles[1].getType(), tiles[0], tiles[1],
      tiles[2]);
  if (failed(op))
    return failure();
  return several(op->getResults(), args.loc());
}

FailureOr<Operand> buildMerge(KvtBuilder &kb, CallArgs &args) {
  if (failed(args.arity({"parts", "lses", "count"})))
    return failure();
  FailureOr<Value> parts = args.tile(0, "partial outputs");
  if (failed(parts))
    return failure();
  FailureOr<Value> lses = args.tile(1, "log-sum-exps");
  if (failed(lses))
    return failure();
  FailureOr<Value> count = args.scalar(2, "count", kb.b().getI32Type());
  if (failed(count))
    return failure();
  FailureOr<kvt::MergeOp> op =
      kb.createInferred<kvt::MergeOp>(args.loc(), 1, *parts, *lses, *count);
  if (failed(op))
    return failure();
  return single(*op, args.loc());
}

FailureOr<Operand> buildSplitPlan(KvtBuilder &kb, CallArgs &args) {
  if (failed(args.arity({"seq_lens", "batch", "window", "program", "slots",
                         "block_tokens", "max_chunks"})))
    return failure();
  FailureOr<Value> lens = args.pointer(0, "context lengths");
  if (failed(lens))
    return failure();
  Type i32 = kb.b().getI32Type();
  SmallVector<Value> scalars;
  const StringRef roles[] = {"batch", "window", "program", "slots"};
  for (auto [i, what] : llvm::enumerate(roles)) {
    FailureOr<Value> v = args.scalar(unsigned(i) + 1, what, i32);
    if (failed(v))
      return failure();
    scalars.push_back(*v);
  }
  // Their range is the op's rule (SplitPlanOp::verify).
  SmallVector<int64_t, 2> sizes;
  for (unsigned i : {5u, 6u}) {
    FailureOr<int64_t> c =
        args.constant(i, i == 5 ? "block_tokens" : "max_chunks");
    if (failed(c))
      return failure();
    sizes.push_back(*c);
  }
  FailureOr<kvt::SplitPlanOp> op = kb.createVerified<kvt::SplitPlanOp>(
      args.loc(), TypeRange{i32, i32, i32}, *lens, scalars[0], scalars[1],
      scalars[2], scalars[3], sizes[0], sizes[1]);
  if (failed(op))
    return failure();
  return several(op->getResults(), args.loc());
}

struct Builtin {
  llvm::StringLiteral name;
  BuiltinFn build;
  bool pure; // no effect besides its result
};

const Builtin kBuiltins[] = {
    {"program_id", buildAxisQuery<kvt::ProgramIdOp>, true},
    {"num_programs", buildAxisQuery<kvt::NumProgramsOp>, true},
    {"load_tile", buildLoadTile, true},
    {"store_tile", buildStoreTile, false},
    {"prefetch", buildPrefetch<false>, false},
    {"prefetch_rows", buildPrefetch<true>, false},
    {"launch_dependents", buildNullary<kvt::LaunchDependentsOp>, false},
    {"grid_dependency_wait", buildNullary<kvt::GridDependencyWaitOp>, false},
    {"load_field", buildLoadField, true},
    {"store_field", buildStoreField, false},
    {"splat", buildSplat, true},
    {"transpose", buildTranspose, true},
    {"rotate", buildRotate<false>, true},
    {"unrotate", buildRotate<true>, true},
    {"normalize", buildNormalize, true},
    {"quantize", buildQuantize, true},
    {"dequantize", buildDequantize, true},
    {"pack", buildPacking<kvt::PackOp>, true},
    {"unpack", buildPacking<kvt::UnpackOp>, true},
    {"attend", buildAttend<AttendForm::Plain>, true},
    {"attend_range", buildAttend<AttendForm::Ranged>, true},
    {"attend_rope", buildAttend<AttendForm::Rope>, true},
    {"attend_finish", buildAttendFinish, true},
    {"merge", buildMerge, true},
    {"split_plan", buildSplitPlan, true},
};

const Builtin *findBuiltin(llvm::StringRef name) {
  for (const Builtin &b : kBuiltins)
    if (b.name == name)
      return &b;
  return nullptr;
}

} // namespace

bool KvtBuilder::isBuiltinName(llvm::StringRef name) {
  return findBuiltin(name) ||
         llvm::is_contained({"min", "max", "cdiv"}, name);
}

bool KvtBuilder::isPureBuiltin(llvm::StringRef name) {
  const Builtin *b = findBuiltin(name);
  return (b && b->pure) ||
         llvm::is_contained({"min", "max", "cdiv", "i8", "i32", "i64", "f16",
                             "bf16", "f32", kActivationTypeName.data()},
                            name);
}

std::optional<FailureOr<Operand>>
KvtBuilder::buildBuiltin(const ast::CallExpr &call) {
  const Builtin *b = findBuiltin(call.getCallee());
  if (!b)
    return std::nullopt;
  CallArgs args(*this, call);
  return b->build(*this, args);
}
