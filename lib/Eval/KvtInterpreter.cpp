//===- KvtInterpreter.cpp - arguments, grid, blocks, control flow ---------===//

#include "Interpreter.h"

#include "kvarn/Dialect/KVT/KVT.h"
#include "kvarn/Support/Error.h"
#include "kvarn/Support/Half.h"

#include "mlir/Dialect/SCF/IR/SCF.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <cstring>

using namespace mlir;
using namespace kvarn;
using namespace kvarn::eval;

//===----------------------------------------------------------------------===//
// Elements in memory
//===----------------------------------------------------------------------===//

unsigned eval::elementBytes(Type type) {
  if (type.isF16() || type.isBF16())
    return 2;
  if (type.isIntOrFloat())
    return std::max(1u, type.getIntOrFloatBitWidth() / 8);
  return 0;
}

double eval::readElement(const uint8_t *data, Type type, int64_t index) {
  const uint8_t *at = data + index * elementBytes(type);
  if (type.isF16() || type.isBF16()) {
    uint16_t bits;
    std::memcpy(&bits, at, 2);
    return type.isF16() ? halfToFloat(bits) : bfloat16ToFloat(bits);
  }
  if (type.isF32()) {
    float f;
    std::memcpy(&f, at, 4);
    return f;
  }
  if (type.isInteger(8))
    return *at; // bytes
  if (type.isInteger(32)) {
    int32_t v;
    std::memcpy(&v, at, 4);
    return v;
  }
  int64_t v;
  std::memcpy(&v, at, 8);
  return double(v);
}

void eval::writeElement(uint8_t *data, Type type, int64_t index,
                        double value) {
  uint8_t *at = data + index * elementBytes(type);
  if (type.isF16() || type.isBF16()) {
    uint16_t bits = type.isF16() ? floatToHalf(float(value))
                                 : floatToBFloat16(float(value));
    std::memcpy(at, &bits, 2);
  } else if (type.isF32()) {
    float f = float(value);
    std::memcpy(at, &f, 4);
  } else if (type.isInteger(8)) {
    *at = uint8_t(int64_t(value));
  } else if (type.isInteger(32)) {
    int32_t v = int32_t(int64_t(value));
    std::memcpy(at, &v, 4);
  } else {
    int64_t v = int64_t(value);
    std::memcpy(at, &v, 8);
  }
}

double eval::roundToType(double value, Type type) {
  if (type.isF16())
    return halfToFloat(floatToHalf(float(value)));
  if (type.isBF16())
    return bfloat16ToFloat(floatToBFloat16(float(value)));
  if (type.isInteger(8))
    return double(uint8_t(int64_t(value)));
  if (type.isInteger(32))
    return double(int32_t(int64_t(value)));
  return value; // f32 held in double
}

int64_t eval::wrapInt(int64_t value, unsigned width) {
  if (width >= 64)
    return value;
  if (width == 1)
    return value & 1;
  uint64_t mask = (uint64_t(1) << width) - 1;
  uint64_t v = uint64_t(value) & mask;
  uint64_t sign = uint64_t(1) << (width - 1);
  return int64_t((v ^ sign) - sign);
}

//===----------------------------------------------------------------------===//
// The interpreter
//===----------------------------------------------------------------------===//

Interpreter::Interpreter(func::FuncOp kernel, llvm::ArrayRef<KernelArg> args)
    : kernel(kernel), args(args) {}

kvarn::Error Interpreter::errorAt(Operation *op, const llvm::Twine &message) {
  std::string where;
  llvm::raw_string_ostream os(where);
  op->getLoc().print(os);
  return makeError(KVARN_ERROR_INVALID_ARGUMENT, "{0}: {1}: {2}", where,
                   op->getName().getStringRef(), message.str());
}

kvarn::Expected<const Rotation *> Interpreter::rotation(int order) {
  auto it = rotations.find(order);
  if (it != rotations.end())
    return it->second.get();
  kvarn::Expected<Rotation> r = Rotation::get(order);
  if (!r)
    return r.takeError();
  auto &slot = rotations[order];
  slot = std::make_unique<Rotation>(std::move(*r));
  return slot.get();
}

kvarn::Error Interpreter::checkAccess(Operation *op, const RtValue &ptr,
                                      int64_t index, int64_t count) {
  const Buffer &b = buffers[ptr.buffer];
  int64_t elements = int64_t(b.bytes / elementBytes(b.elementType));
  if (index < 0 || count < 0 || index > elements - count)
    return errorAt(op, llvm::formatv("access to elements [{0}, {1}) of '{2}' "
                                     "is outside its {3} elements",
                                     index, index + count, b.name, elements)
                           .str());
  return kvarn::Error::success();
}

kvarn::Error Interpreter::bindArguments() {
  if (!kernel->hasAttr(kvt::KVTDialect::getKernelAttrName()))
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "'{0}' is not a kvt kernel (no kvt.kernel attribute)",
                     kernel.getName());
  if (kvt::SpecAttr spec = kvt::getEnclosingSpec(kernel)) {
    recordFormat = spec.getRecordFormat();
  }
  Block &entry = kernel.getBody().front();
  if (args.size() != entry.getNumArguments())
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "kernel '{0}' takes {1} arguments, got {2}",
                     kernel.getName(), entry.getNumArguments(), args.size());
  for (auto [i, arg] : llvm::enumerate(entry.getArguments())) {
    const KernelArg &given = args[i];
    std::string name = std::to_string(i);
    if (auto n = kernel.getArgAttrOfType<StringAttr>(i, "kvt.name"))
      name = n.str();
    Type type = arg.getType();
    if (auto ptr = dyn_cast<kvt::PointerType>(type)) {
      if (given.kind != KernelArg::Kind::Buffer || (!given.data && given.bytes))
        return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                         "argument {0} ('{1}') of '{2}' must be a buffer", i,
                         name, kernel.getName());
      RtValue v;
      v.kind = RtValue::Kind::Pointer;
      v.buffer = unsigned(buffers.size());
      buffers.push_back({static_cast<uint8_t *>(given.data), given.bytes,
                         ptr.getPointeeType(), name});
      set(arg, v);
    } else if (type.isInteger(32) || type.isInteger(64)) {
      if (given.kind != KernelArg::Kind::Int ||
          wrapInt(given.intValue, type.getIntOrFloatBitWidth()) != given.intValue)
        return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                         "argument {0} ('{1}') of '{2}' must be an integer "
                         "that fits in {3} bits",
                         i, name, kernel.getName(), type.getIntOrFloatBitWidth());
      set(arg, RtValue::ofInt(given.intValue));
    } else if (type.isF32()) {
      if (given.kind != KernelArg::Kind::Float)
        return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                         "argument {0} ('{1}') of '{2}' must be an f32", i,
                         name, kernel.getName());
      set(arg, RtValue::ofFloat(given.floatValue));
    } else {
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "argument {0} of '{1}' has an unsupported type", i,
                       kernel.getName());
    }
  }
  // The grid: constants, or scalar arguments named by kvt.grid.
  auto grid = kernel->getAttrOfType<ArrayAttr>("kvt.grid");
  if (!grid || grid.empty() || grid.size() > 3)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "kernel '{0}' has no valid kvt.grid attribute",
                     kernel.getName());
  for (auto [axis, dim] : llvm::enumerate(grid)) {
    int64_t n = -1;
    if (auto c = dyn_cast<IntegerAttr>(dim)) {
      n = c.getInt();
    } else if (auto name = dyn_cast<StringAttr>(dim)) {
      for (unsigned i = 0; i < entry.getNumArguments(); ++i)
        if (kernel.getArgAttrOfType<StringAttr>(i, "kvt.name") == name &&
            entry.getArgument(i).getType().isInteger())
          n = get(entry.getArgument(i)).i;
      if (n < 0)
        return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                         "grid dimension {0} of '{1}' ('{2}') is {3}: it must "
                         "name an integer argument that is not negative",
                         axis, kernel.getName(), name.getValue(), n);
    }
    if (n < 0)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "grid dimension {0} of '{1}' is invalid", axis,
                       kernel.getName());
    numPrograms[axis] = n;
  }
  return kvarn::Error::success();
}

kvarn::Error Interpreter::runBlock(Block &block,
                                   llvm::ArrayRef<RtValue> blockArgs,
                                   llvm::SmallVectorImpl<RtValue> &yielded) {
  for (auto [arg, v] : llvm::zip(block.getArguments(), blockArgs))
    set(arg, v);
  for (Operation &op : block) {
    if (isa<scf::YieldOp, func::ReturnOp>(op)) {
      for (Value v : op.getOperands())
        yielded.push_back(get(v));
      return kvarn::Error::success();
    }
    if (kvarn::Error err = execute(&op))
      return err;
  }
  return kvarn::Error::success();
}

kvarn::Error Interpreter::execute(Operation *op) {
  ++operations;
  if (auto forOp = dyn_cast<scf::ForOp>(op)) {
    int64_t lb = get(forOp.getLowerBound()).i, ub = get(forOp.getUpperBound()).i;
    int64_t step = get(forOp.getStep()).i;
    if (step <= 0)
      return errorAt(op, "the step must be positive");
    if (forOp.getUnsignedCmp())
      return errorAt(op, "unsigned loop bounds are not supported");
    llvm::SmallVector<RtValue> carried;
    for (Value init : forOp.getInitArgs())
      carried.push_back(get(init));
    for (int64_t iv = lb; iv < ub; iv += step) {
      llvm::SmallVector<RtValue> blockArgs = {RtValue::ofInt(iv)};
      blockArgs.append(carried.begin(), carried.end());
      llvm::SmallVector<RtValue> next;
      if (kvarn::Error err = runBlock(*forOp.getBody(), blockArgs, next))
        return err;
      carried = std::move(next);
    }
    for (auto [result, v] : llvm::zip(forOp.getResults(), carried))
      set(result, v);
    return kvarn::Error::success();
  }
  if (auto ifOp = dyn_cast<scf::IfOp>(op)) {
    Region &region = get(ifOp.getCondition()).i ? ifOp.getThenRegion()
                                                : ifOp.getElseRegion();
    if (region.empty())
      return kvarn::Error::success();
    llvm::SmallVector<RtValue> results;
    if (kvarn::Error err = runBlock(region.front(), {}, results))
      return err;
    for (auto [result, v] : llvm::zip(ifOp.getResults(), results))
      set(result, v);
    return kvarn::Error::success();
  }
  bool handled = false;
  if (kvarn::Error err = executeArith(op, handled))
    return err;
  if (handled)
    return kvarn::Error::success();
  if (kvarn::Error err = executeTileOp(op, handled))
    return err;
  if (handled)
    return kvarn::Error::success();
  return errorAt(op, "the kvt evaluator does not support this op");
}

kvarn::Expected<RunStats> Interpreter::run() {
  if (kernel.isExternal())
    return makeError(KVARN_ERROR_INVALID_ARGUMENT, "kernel '{0}' has no body",
                     kernel.getName());
  if (kvarn::Error err = bindArguments())
    return std::move(err);
  RunStats stats;
  Block &entry = kernel.getBody().front();
  llvm::SmallVector<RtValue> entryArgs;
  for (BlockArgument arg : entry.getArguments())
    entryArgs.push_back(get(arg));
  for (int64_t z = 0; z < numPrograms[2]; ++z)
    for (int64_t y = 0; y < numPrograms[1]; ++y)
      for (int64_t x = 0; x < numPrograms[0]; ++x) {
        programId[0] = x;
        programId[1] = y;
        programId[2] = z;
        llvm::SmallVector<RtValue> ignored;
        if (kvarn::Error err = runBlock(entry, entryArgs, ignored))
          return std::move(err);
        ++stats.programs;
      }
  stats.operations = operations;
  return stats;
}

kvarn::Expected<RunStats> eval::runKernel(func::FuncOp kernel,
                                          llvm::ArrayRef<KernelArg> args) {
  Interpreter interpreter(kernel, args);
  return interpreter.run();
}
