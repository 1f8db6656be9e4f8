//===- KVTileDialect.cpp - the kvt dialect --------------------------------===//

#include "kvarn/Dialect/KVTile/KVTile.h"

#include "mlir/IR/DialectImplementation.h"

#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace kvarn::kvt;

#include "kvarn/Dialect/KVTile/KVTileDialect.cpp.inc"
#include "kvarn/Dialect/KVTile/KVTileEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "kvarn/Dialect/KVTile/KVTileAttrs.cpp.inc"

void KVTileDialect::initialize() {
  registerTypes();
  registerAttributes();
  addOperations<
#define GET_OP_LIST
#include "kvarn/Dialect/KVTile/KVTileOps.cpp.inc"
      >();
}

void KVTileDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "kvarn/Dialect/KVTile/KVTileAttrs.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// SpecAttr
//===----------------------------------------------------------------------===//

LogicalResult SpecAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                               StringRef preset, int64_t headDim, int64_t gqa) {
  llvm::Expected<const kvarn::Preset *> p = kvarn::lookupPreset(preset);
  if (!p)
    return emitError() << llvm::toString(p.takeError());
  if (llvm::Error err = kvarn::checkHeadDim(int(headDim)))
    return emitError() << llvm::toString(std::move(err));
  if (gqa < 1 || gqa > 64)
    return emitError() << "gqa ratio " << gqa << " is outside [1, 64]";
  return success();
}

kvarn::RecordLayout SpecAttr::getLayout() const {
  // Verified on construction: both lookups succeed.
  const kvarn::Preset *preset = llvm::cantFail(kvarn::lookupPreset(getPreset()));
  return llvm::cantFail(kvarn::RecordLayout::get(*preset, int(getHeadDim())));
}

SpecAttr kvarn::kvt::getEnclosingSpec(Operation *op) {
  for (Operation *parent = op; parent; parent = parent->getParentOp())
    if (auto spec = parent->getAttrOfType<SpecAttr>(
            KVTileDialect::getSpecAttrName()))
      return spec;
  return {};
}
