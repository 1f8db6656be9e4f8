//===- Interpreter.h - the kvt evaluator, internal --------------*- C++ -*-===//
//
// Split by concept:
//   KvtInterpreter.cpp  arguments, grid, blocks, scf and func control flow
//   ArithOps.cpp        arith ops on scalars
//   TileOps.cpp         kvt ops: memory, layout, and the KVarN primitives
//                       (each a call of the CPU reference)
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_LIB_EVAL_INTERPRETER_H
#define KVARN_LIB_EVAL_INTERPRETER_H

#include "kvarn/Dialect/KVT/KVT.h"
#include "kvarn/Eval/KvtInterpreter.h"
#include "kvarn/Reference/Rotation.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Operation.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallVector.h"

#include <map>
#include <memory>
#include <optional>
#include <string>

namespace kvarn::eval {

/// A tile's elements, row-major (see KvtInterpreter.h for how each element
/// type is held).
struct Tile {
  llvm::SmallVector<int64_t, 3> shape;
  mlir::Type elementType;
  std::vector<double> data;

  int64_t dim(unsigned i) const { return shape[i]; }
  int64_t rank() const { return int64_t(shape.size()); }
};
using TilePtr = std::shared_ptr<const Tile>;

/// The value of an SSA value while a program runs.
struct RtValue {
  enum class Kind { Int, Float, Tile, Pointer };
  Kind kind = Kind::Int;
  int64_t i = 0; // integers, sign-extended from their width (i1: 0 or 1)
  double f = 0;  // floats, holding exactly a value of their type
  TilePtr tile;
  unsigned buffer = 0; // Pointer: index into the kernel's buffers

  static RtValue ofInt(int64_t v) {
    RtValue r;
    r.kind = Kind::Int;
    r.i = v;
    return r;
  }
  static RtValue ofFloat(double v) {
    RtValue r;
    r.kind = Kind::Float;
    r.f = v;
    return r;
  }
  static RtValue ofTile(TilePtr t) {
    RtValue r;
    r.kind = Kind::Tile;
    r.tile = std::move(t);
    return r;
  }
};

/// A host buffer bound to a pointer argument.
struct Buffer {
  uint8_t *data = nullptr;
  size_t bytes = 0;
  mlir::Type elementType;
  std::string name; // the argument's kvt.name, for messages
};

/// Size in bytes of one element of `type` in memory (f16 2, i32 4, ...).
unsigned elementBytes(mlir::Type type);
/// Reads / writes element `index` of a buffer of `type` (little-endian).
double readElement(const uint8_t *data, mlir::Type type, int64_t index);
void writeElement(uint8_t *data, mlir::Type type, int64_t index, double value);
/// `value` rounded to what an element of `type` can hold (f16, bf16, f32,
/// integers wrapped to their width; f32 held in double is left as is).
double roundToType(double value, mlir::Type type);
/// Sign-extends the low `width` bits (i1: 0 or 1).
int64_t wrapInt(int64_t value, unsigned width);

class Interpreter {
public:
  Interpreter(mlir::func::FuncOp kernel, llvm::ArrayRef<KernelArg> args);

  kvarn::Expected<RunStats> run();

  // Shared by the op files.
  kvarn::Error errorAt(mlir::Operation *op, const llvm::Twine &message);
  RtValue &get(mlir::Value v) { return values[v]; }
  void set(mlir::Value v, RtValue r) { values[v] = std::move(r); }
  const Buffer &buffer(unsigned i) const { return buffers[i]; }
  kvarn::Expected<const Rotation *> rotation(int order);
  /// Bounds-checked element access: `index` of the buffer behind `ptr`.
  kvarn::Error checkAccess(mlir::Operation *op, const RtValue &ptr,
                           int64_t index, int64_t count = 1);
  int64_t programId[3] = {0, 0, 0};
  int64_t numPrograms[3] = {1, 1, 1};

  kvarn::Error executeArith(mlir::Operation *op, bool &handled);
  kvarn::Error executeTileOp(mlir::Operation *op, bool &handled);

private:
  kvarn::Error bindArguments();
  kvarn::Error runBlock(mlir::Block &block, llvm::ArrayRef<RtValue> blockArgs,
                        llvm::SmallVectorImpl<RtValue> &yielded);
  kvarn::Error execute(mlir::Operation *op);

  mlir::func::FuncOp kernel;
  llvm::ArrayRef<KernelArg> args;
  std::vector<Buffer> buffers;
  /// The records of the kernel's kvt.spec (none without one).
  std::optional<kvt::RecordFormat> recordFormat;
  std::map<int, std::unique_ptr<Rotation>> rotations;
  llvm::DenseMap<mlir::Value, RtValue> values;
  int64_t operations = 0;
};

} // namespace kvarn::eval

#endif // KVARN_LIB_EVAL_INTERPRETER_H
