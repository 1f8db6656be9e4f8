//===- KVTDialect.cpp ---- the kvt dialect --------------------------------===//

#include "kvarn/Dialect/KVT/KVT.h"

#include "mlir/IR/DialectImplementation.h"

#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace kvarn::kvt;

#include "kvarn/Dialect/KVT/KVTDialect.cpp.inc"
#include "kvarn/Dialect/KVT/KVTEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "kvarn/Dialect/KVT/KVTAttrs.cpp.inc"

void KVTDialect::initialize() {
  registerTypes();
  registerAttributes();
  addOperations<
#define GET_OP_LIST
#include "kvarn/Dialect/KVT/KVTOps.cpp.inc"
      >();
}

void KVTDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "kvarn/Dialect/KVT/KVTAttrs.cpp.inc"
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
            KVTDialect::getSpecAttrName()))
      return spec;
  return {};
}
