//===- ArithOps.cpp - arith ops on scalars --------------------------------===//
//
// Integers wrap at their width; signed and unsigned ops read the bits as
// arith defines. Float arithmetic happens in the operands' type (float for
// f32; f16 and bf16 are rounded after each op). Division by zero and
// out-of-range float-to-int conversions are errors rather than undefined
// behaviour.
//
//===----------------------------------------------------------------------===//

#include "Interpreter.h"

#include "mlir/Dialect/Arith/IR/Arith.h"

#include "llvm/ADT/TypeSwitch.h"

#include <cmath>

using namespace mlir;
using namespace kvarn;
using namespace kvarn::eval;

static unsigned widthOf(Type t) {
  return t.isIndex() ? 64 : t.getIntOrFloatBitWidth();
}

static uint64_t zext(int64_t v, unsigned width) {
  return width >= 64 ? uint64_t(v) : uint64_t(v) & ((uint64_t(1) << width) - 1);
}

/// A float result of type `t`, rounded as the type requires.
static double roundFloat(double v, Type t) {
  if (t.isF32())
    return double(float(v));
  return roundToType(v, t);
}

kvarn::Error Interpreter::executeArith(Operation *op, bool &handled) {
  if (op->getDialect() == nullptr ||
      op->getDialect()->getNamespace() != arith::ArithDialect::getDialectNamespace())
    return kvarn::Error::success();
  handled = true;
  auto intOf = [&](unsigned i) { return get(op->getOperand(i)).i; };
  auto floatOf = [&](unsigned i) { return get(op->getOperand(i)).f; };
  Type resultType = op->getNumResults() ? op->getResult(0).getType() : Type();
  auto setInt = [&](int64_t v) {
    set(op->getResult(0), RtValue::ofInt(wrapInt(v, widthOf(resultType))));
    return kvarn::Error::success();
  };
  auto setFloat = [&](double v) {
    set(op->getResult(0), RtValue::ofFloat(roundFloat(v, resultType)));
    return kvarn::Error::success();
  };
  // Integer ops compute on uint64 so that overflow wraps instead of being UB.
  auto u = [](int64_t v) { return uint64_t(v); };
  unsigned width = op->getNumOperands() ? widthOf(op->getOperand(0).getType()) : 0;

  return llvm::TypeSwitch<Operation *, kvarn::Error>(op)
      .Case([&](arith::ConstantOp c) -> kvarn::Error {
        Attribute value = c.getValue();
        if (auto i = dyn_cast<IntegerAttr>(value))
          return setInt(i.getType().isInteger(1) ? int64_t(i.getValue().getZExtValue())
                                                 : i.getValue().getSExtValue());
        if (auto f = dyn_cast<FloatAttr>(value))
          return setFloat(f.getValueAsDouble());
        return errorAt(op, "only scalar constants are supported");
      })
      .Case([&](arith::AddIOp) {
        return setInt(int64_t(u(intOf(0)) + u(intOf(1))));
      })
      .Case([&](arith::SubIOp) {
        return setInt(int64_t(u(intOf(0)) - u(intOf(1))));
      })
      .Case([&](arith::MulIOp) {
        return setInt(int64_t(u(intOf(0)) * u(intOf(1))));
      })
      .Case<arith::DivSIOp, arith::RemSIOp, arith::CeilDivSIOp,
            arith::FloorDivSIOp>([&](Operation *) -> kvarn::Error {
        int64_t a = intOf(0), b = intOf(1);
        if (b == 0)
          return errorAt(op, "division by zero");
        if (b == -1 && a == wrapInt(int64_t(uint64_t(1) << (width - 1)), width))
          return errorAt(op, "signed division overflows");
        int64_t q = a / b, r = a % b;
        if (isa<arith::RemSIOp>(op))
          return setInt(r);
        if (isa<arith::CeilDivSIOp>(op) && r != 0 && ((r > 0) == (b > 0)))
          ++q;
        if (isa<arith::FloorDivSIOp>(op) && r != 0 && ((r < 0) != (b < 0)))
          --q;
        return setInt(q);
      })
      .Case<arith::DivUIOp, arith::RemUIOp, arith::CeilDivUIOp>(
          [&](Operation *) -> kvarn::Error {
            uint64_t a = zext(intOf(0), width), b = zext(intOf(1), width);
            if (b == 0)
              return errorAt(op, "division by zero");
            if (isa<arith::RemUIOp>(op))
              return setInt(int64_t(a % b));
            if (isa<arith::CeilDivUIOp>(op))
              return setInt(int64_t(a / b + (a % b != 0)));
            return setInt(int64_t(a / b));
          })
      .Case(
          [&](arith::MinSIOp) { return setInt(std::min(intOf(0), intOf(1))); })
      .Case(
          [&](arith::MaxSIOp) { return setInt(std::max(intOf(0), intOf(1))); })
      .Case([&](arith::MinUIOp) {
        return setInt(zext(intOf(0), width) < zext(intOf(1), width) ? intOf(0) : intOf(1));
      })
      .Case([&](arith::MaxUIOp) {
        return setInt(zext(intOf(0), width) > zext(intOf(1), width) ? intOf(0) : intOf(1));
      })
      .Case([&](arith::AndIOp) { return setInt(intOf(0) & intOf(1)); })
      .Case([&](arith::OrIOp) { return setInt(intOf(0) | intOf(1)); })
      .Case([&](arith::XOrIOp) { return setInt(intOf(0) ^ intOf(1)); })
      .Case<arith::ShLIOp, arith::ShRSIOp, arith::ShRUIOp>(
          [&](Operation *) -> kvarn::Error {
            uint64_t s = zext(intOf(1), width);
            if (s >= width)
              return errorAt(op, "shift amount is not below the bit width");
            if (isa<arith::ShLIOp>(op))
              return setInt(int64_t(u(intOf(0)) << s));
            if (isa<arith::ShRSIOp>(op))
              return setInt(intOf(0) >> s);
            return setInt(int64_t(zext(intOf(0), width) >> s));
          })
      .Case([&](arith::CmpIOp c) -> kvarn::Error {
        int64_t a = intOf(0), b = intOf(1);
        uint64_t ua = zext(a, width), ub = zext(b, width);
        bool r = false;
        switch (c.getPredicate()) {
        case arith::CmpIPredicate::eq:
          r = a == b;
          break;
        case arith::CmpIPredicate::ne:
          r = a != b;
          break;
        case arith::CmpIPredicate::slt:
          r = a < b;
          break;
        case arith::CmpIPredicate::sle:
          r = a <= b;
          break;
        case arith::CmpIPredicate::sgt:
          r = a > b;
          break;
        case arith::CmpIPredicate::sge:
          r = a >= b;
          break;
        case arith::CmpIPredicate::ult:
          r = ua < ub;
          break;
        case arith::CmpIPredicate::ule:
          r = ua <= ub;
          break;
        case arith::CmpIPredicate::ugt:
          r = ua > ub;
          break;
        case arith::CmpIPredicate::uge:
          r = ua >= ub;
          break;
        }
        return setInt(r);
      })
      .Case([&](arith::CmpFOp c) -> kvarn::Error {
        double a = floatOf(0), b = floatOf(1);
        bool unordered = std::isnan(a) || std::isnan(b);
        bool r = false;
        using P = arith::CmpFPredicate;
        switch (c.getPredicate()) {
        case P::AlwaysFalse:
          r = false;
          break;
        case P::OEQ:
          r = !unordered && a == b;
          break;
        case P::OGT:
          r = !unordered && a > b;
          break;
        case P::OGE:
          r = !unordered && a >= b;
          break;
        case P::OLT:
          r = !unordered && a < b;
          break;
        case P::OLE:
          r = !unordered && a <= b;
          break;
        case P::ONE:
          r = !unordered && a != b;
          break;
        case P::ORD:
          r = !unordered;
          break;
        case P::UEQ:
          r = unordered || a == b;
          break;
        case P::UGT:
          r = unordered || a > b;
          break;
        case P::UGE:
          r = unordered || a >= b;
          break;
        case P::ULT:
          r = unordered || a < b;
          break;
        case P::ULE:
          r = unordered || a <= b;
          break;
        case P::UNE:
          r = unordered || a != b;
          break;
        case P::UNO:
          r = unordered;
          break;
        case P::AlwaysTrue:
          r = true;
          break;
        }
        return setInt(r);
      })
      .Case([&](arith::SelectOp s) -> kvarn::Error {
        if (!s.getCondition().getType().isInteger(1))
          return errorAt(op, "only scalar conditions are supported");
        set(op->getResult(0), get(op->getOperand(intOf(0) ? 1 : 2)));
        return kvarn::Error::success();
      })
      .Case<arith::ExtSIOp, arith::TruncIOp, arith::IndexCastOp>(
          [&](Operation *) { return setInt(intOf(0)); })
      .Case<arith::ExtUIOp, arith::IndexCastUIOp>(
          [&](Operation *) { return setInt(int64_t(zext(intOf(0), width))); })
      .Case([&](arith::SIToFPOp) { return setFloat(double(float(intOf(0)))); })
      .Case([&](arith::UIToFPOp) {
        return setFloat(double(float(zext(intOf(0), width))));
      })
      .Case<arith::FPToSIOp, arith::FPToUIOp>([&](Operation *) -> kvarn::Error {
        double v = std::trunc(floatOf(0));
        unsigned w = widthOf(resultType);
        double lo = isa<arith::FPToUIOp>(op) ? 0.0 : -std::ldexp(1.0, w - 1);
        double hi = isa<arith::FPToUIOp>(op) ? std::ldexp(1.0, w) : std::ldexp(1.0, w - 1);
        if (!(v >= lo && v < hi))
          return errorAt(op, "the value does not fit the integer type");
        return setInt(isa<arith::FPToUIOp>(op) ? int64_t(uint64_t(v)) : int64_t(v));
      })
      .Case<arith::ExtFOp, arith::TruncFOp>(
          [&](Operation *) { return setFloat(floatOf(0)); })
      .Case([&](arith::AddFOp) {
        return setFloat(float(floatOf(0)) + float(floatOf(1)));
      })
      .Case([&](arith::SubFOp) {
        return setFloat(float(floatOf(0)) - float(floatOf(1)));
      })
      .Case([&](arith::MulFOp) {
        return setFloat(float(floatOf(0)) * float(floatOf(1)));
      })
      .Case([&](arith::DivFOp) {
        return setFloat(float(floatOf(0)) / float(floatOf(1)));
      })
      .Case([&](arith::RemFOp) {
        return setFloat(std::fmod(float(floatOf(0)), float(floatOf(1))));
      })
      .Case([&](arith::NegFOp) { return setFloat(-floatOf(0)); })
      .Case<arith::MaximumFOp, arith::MinimumFOp>([&](Operation *) {
        double a = floatOf(0), b = floatOf(1);
        if (std::isnan(a) || std::isnan(b))
          return setFloat(NAN);
        return setFloat(isa<arith::MaximumFOp>(op) ? std::max(a, b) : std::min(a, b));
      })
      .Case<arith::MaxNumFOp, arith::MinNumFOp>([&](Operation *) {
        double a = floatOf(0), b = floatOf(1);
        return setFloat(isa<arith::MaxNumFOp>(op) ? std::fmax(a, b) : std::fmin(a, b));
      })
      .Default([&](Operation *) -> kvarn::Error {
        return errorAt(op, "the kvt evaluator does not support this arith op");
      });
}
