//===- Passes.h - kvarn's conversion passes ---------------------*- C++ -*-===//
#ifndef KVARN_CONVERSION_PASSES_H
#define KVARN_CONVERSION_PASSES_H

#include "kvarn/Dialect/KVGPU/KVGPU.h"
#include "kvarn/Dialect/KVT/KVT.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/NVVMDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

namespace kvarn {

#define GEN_PASS_DECL
#include "kvarn/Conversion/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "kvarn/Conversion/Passes.h.inc"

} // namespace kvarn

#endif // KVARN_CONVERSION_PASSES_H
