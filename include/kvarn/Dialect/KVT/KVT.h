//===- KVT.h ---- the kvt dialect -------------------------------*- C++ -*-===//
//
// The tile-level dialect the .kvt DSL parses into: types, attributes, ops.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_DIALECT_KVT_KVT_H
#define KVARN_DIALECT_KVT_KVT_H

#include "kvarn/Layout/RecordLayout.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "kvarn/Dialect/KVT/KVTDialect.h.inc"
#include "kvarn/Dialect/KVT/KVTEnums.h.inc"

#define GET_TYPEDEF_CLASSES
#include "kvarn/Dialect/KVT/KVTTypes.h.inc"

#define GET_ATTRDEF_CLASSES
#include "kvarn/Dialect/KVT/KVTAttrs.h.inc"

#define GET_OP_CLASSES
#include "kvarn/Dialect/KVT/KVTOps.h.inc"

namespace kvarn::kvt {

/// The `kvt.spec` of the kernel enclosing `op`, or null.
SpecAttr getEnclosingSpec(mlir::Operation *op);

/// The shape and element type of `field` in records of `layout`.
TileType getFieldType(mlir::MLIRContext *context, const RecordLayout &layout,
                      RecordField field);

/// Byte offset of `field` within a record of `layout`.
int64_t getFieldOffset(const RecordLayout &layout, RecordField field);

} // namespace kvarn::kvt

#endif // KVARN_DIALECT_KVT_KVT_H
