//===- KVGPU.h - the kvgpu dialect ------------------------------*- C++ -*-===//
//
// KVarN tile work distributed over a CTA (see dialects/KVGPU/KVGPU.td).
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_DIALECT_KVGPU_KVGPU_H
#define KVARN_DIALECT_KVGPU_KVGPU_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Dialect/LLVMIR/LLVMTypes.h"

namespace kvarn::kvgpu {
/// A statically shaped, identity-layout memref in the workgroup address space.
bool isSharedMemRef(mlir::Type type);
/// `!llvm.ptr<1>`.
bool isGlobalPointer(mlir::Type type);
/// The memref type of a shared-memory tile buffer.
mlir::MemRefType getSharedMemRefType(llvm::ArrayRef<int64_t> shape,
                                     mlir::Type elementType);
/// Attribute names on kernels.
inline constexpr llvm::StringLiteral kSharedBytesAttrName = "kvgpu.shared_bytes";
inline constexpr llvm::StringLiteral kNumWarpsAttrName = "kvgpu.num_warps";
} // namespace kvarn::kvgpu

#include "kvarn/Dialect/KVGPU/KVGPUDialect.h.inc"
#include "kvarn/Dialect/KVGPU/KVGPUEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "kvarn/Dialect/KVGPU/KVGPUAttrs.h.inc"

#define GET_OP_CLASSES
#include "kvarn/Dialect/KVGPU/KVGPUOps.h.inc"

#endif // KVARN_DIALECT_KVGPU_KVGPU_H
