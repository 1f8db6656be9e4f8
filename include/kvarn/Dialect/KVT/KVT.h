//===- KVT.h ---- the kvt dialect -------------------------------*- C++ -*-===//
//
// The tile-level dialect the .kvt DSL parses into: types, attributes, ops.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_DIALECT_KVT_KVT_H
#define KVARN_DIALECT_KVT_KVT_H

#include "kvarn/Layout/MlaRecordLayout.h"
#include "kvarn/Layout/RecordLayout.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include <optional>

namespace kvarn::kvt {

/// The records a kernel reads and writes, as its kvt.spec says: a dense
/// preset's K/V record (RecordLayout) or an MLA preset's latent record
/// (MlaRecordLayout); exactly one is set. The field functions below are the
/// one place that maps a kvt.field to its bytes.
struct RecordFormat {
  std::optional<RecordLayout> dense;
  std::optional<MlaRecordLayout> mla;

  int64_t recordBytes() const {
    return dense ? dense->recordBytes : mla->recordBytes;
  }
};

} // namespace kvarn::kvt

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

/// Whether records of `format` have `field` (the k_/v_ fields are dense
/// records', the latent_ fields and rope MLA records').
bool hasField(const RecordFormat &format, RecordField field);

/// The tile kvt.load_field gives and kvt.store_field takes for `field` in
/// records of `format` (which must have it): the stored type, except that
/// e4m3 scales are f32.
TileType getFieldType(mlir::MLIRContext *context, const RecordFormat &format,
                      RecordField field);

/// The shape and element type `field` has in the record's bytes (e4m3
/// scales: i8).
TileType getStoredFieldType(mlir::MLIRContext *context,
                            const RecordFormat &format, RecordField field);

/// The scale field `field` is (its shared exponent's place in an E4M3
/// record: RecordLayout::scaleExponentOffset), or nothing for other fields.
std::optional<ScaleField> getScaleField(RecordField field);

/// Whether `field` is stored as e4m3 bytes with a shared exponent.
bool isE4M3Field(const RecordFormat &format, RecordField field);

/// Byte offset of `field` within a record of `format`.
int64_t getFieldOffset(const RecordFormat &format, RecordField field);

} // namespace kvarn::kvt

#endif // KVARN_DIALECT_KVT_KVT_H
