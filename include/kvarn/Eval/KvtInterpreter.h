//===- KvtInterpreter.h - run kvt kernels on the CPU ------------*- C++ -*-===//
//
// Runs a kvt kernel (a func.func with kvt.kernel, as the DSL builds it) on
// the CPU, program by program over its kvt.grid, against host buffers. Each
// kvt op is evaluated by calling the CPU reference (lib/Reference), never by
// a second implementation of the math, so the DSL kernels can be tested
// without a GPU: the library's flush gives encodeRecord's bytes and its
// decode gives decodeAttention's output.
//
// Numbers:
//   * f32 tile elements are held in double, so that a chain of reference
//     steps (rotation, attention) keeps fp64 precision as the reference does;
//     ops whose reference is defined in fp32 (normalize, quantize,
//     dequantize) round exactly where the reference does. Stores to f32
//     memory and converts to f16/bf16 round.
//   * f16/bf16/i8/i32 tiles hold exactly their type's values; i8 tile
//     elements are bytes 0..255 (codes and packed codes).
//   * scalars follow arith: integers wrap at their width, f32 arithmetic is
//     done in float.
//
// Supported ops: func.return, scf.for/if/yield, the arith ops the builder and
// the canonicalizer produce, and every kvt op. Every memory access is
// bounds-checked against its buffer; violations and unsupported ops are
// errors naming the op's location, never crashes.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_EVAL_KVTINTERPRETER_H
#define KVARN_EVAL_KVTINTERPRETER_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <cstddef>
#include <cstdint>
#include <vector>

namespace mlir::func {
class FuncOp;
} // namespace mlir::func

namespace kvarn::eval {

/// One kernel argument, in signature order: a host buffer for each
/// !kvt.ptr parameter, a number for each scalar parameter.
class KernelArg {
public:
  enum class Kind { Buffer, Int, Float };

  static KernelArg buffer(void *data, size_t bytes) {
    KernelArg a(Kind::Buffer);
    a.data = data;
    a.bytes = bytes;
    return a;
  }
  template <typename T> static KernelArg buffer(std::vector<T> &v) {
    return buffer(v.data(), v.size() * sizeof(T));
  }
  static KernelArg integer(int64_t v) {
    KernelArg a(Kind::Int);
    a.intValue = v;
    return a;
  }
  static KernelArg f32(float v) {
    KernelArg a(Kind::Float);
    a.floatValue = v;
    return a;
  }

  Kind kind;
  void *data = nullptr;
  size_t bytes = 0;
  int64_t intValue = 0;
  float floatValue = 0;

private:
  explicit KernelArg(Kind kind) : kind(kind) {}
};

struct RunStats {
  int64_t programs = 0;   // programs run (the grid's size)
  int64_t operations = 0; // ops executed, all programs together
};

/// Runs every program of `kernel`'s grid, in row-major order of
/// (program_id(0), program_id(1), program_id(2)) with axis 0 fastest.
kvarn::Expected<RunStats> runKernel(mlir::func::FuncOp kernel,
                                    llvm::ArrayRef<KernelArg> args);

} // namespace kvarn::eval

#endif // KVARN_EVAL_KVTINTERPRETER_H
