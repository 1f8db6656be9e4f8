//===- KVTDialect.cpp ---- the kvt dialect --------------------------------===//

#include "kvarn/Dialect/KVT/KVT.h"

#include "mlir/IR/DialectImplementation.h"

#include "llvm/ADT/TypeSwitch.h"

#include <algorithm>
#include <cstdint>

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
                               StringRef preset, int64_t headDim, int64_t gqa,
                               int64_t ropeDim) {
  // Out-of-range values clamp to ones the checks refuse (not modulo 2^32).
  auto i32 = [](int64_t v) {
    return int(std::clamp<int64_t>(v, INT32_MIN, INT32_MAX));
  };
  if (kvarn::isMlaPresetName(preset)) {
    const kvarn::MlaPreset *p = kvarn::cantFail(kvarn::lookupMlaPreset(preset));
    if (kvarn::Error err = kvarn::checkMlaKernelShape(*p, i32(headDim),
                                                      i32(ropeDim), i32(gqa)))
      return emitError() << kvarn::toString(std::move(err));
    return success();
  }
  kvarn::Expected<const kvarn::Preset *> p = kvarn::lookupPreset(preset);
  if (!p)
    return emitError() << kvarn::toString(p.takeError());
  if (kvarn::Error err = kvarn::checkHeadDim(i32(headDim)))
    return emitError() << kvarn::toString(std::move(err));
  if (gqa < 1 || gqa > 64)
    return emitError() << "gqa ratio " << gqa << " is outside [1, 64]";
  if (ropeDim != 0)
    return emitError() << "rope_dim is for MLA presets; " << preset
                       << " is not one";
  return success();
}

bool SpecAttr::isMla() const { return kvarn::isMlaPresetName(getPreset()); }

RecordFormat SpecAttr::getRecordFormat() const {
  // Verified on construction: the lookups succeed.
  RecordFormat format;
  if (isMla()) {
    const kvarn::MlaPreset *preset =
        kvarn::cantFail(kvarn::lookupMlaPreset(getPreset()));
    format.mla = kvarn::cantFail(kvarn::MlaRecordLayout::get(
        *preset, int(getHeadDim()), int(getRopeDim())));
  } else {
    const kvarn::Preset *preset =
        kvarn::cantFail(kvarn::lookupPreset(getPreset()));
    format.dense =
        kvarn::cantFail(kvarn::RecordLayout::get(*preset, int(getHeadDim())));
  }
  return format;
}

SpecAttr kvarn::kvt::getEnclosingSpec(Operation *op) {
  for (Operation *parent = op; parent; parent = parent->getParentOp())
    if (auto spec = parent->getAttrOfType<SpecAttr>(
            KVTDialect::getSpecAttrName()))
      return spec;
  return {};
}
