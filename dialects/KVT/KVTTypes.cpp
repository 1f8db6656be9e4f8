//===- KVTTypes.cpp ---- kvt types ----------------------------------------===//

#include "kvarn/Dialect/KVT/KVT.h"

#include "mlir/IR/DialectImplementation.h"

#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace kvarn::kvt;

#define GET_TYPEDEF_CLASSES
#include "kvarn/Dialect/KVT/KVTTypes.cpp.inc"

void KVTDialect::registerTypes() {
  addTypes<
#define GET_TYPEDEF_LIST
#include "kvarn/Dialect/KVT/KVTTypes.cpp.inc"
      >();
}

int64_t TileType::getNumElements() const {
  int64_t n = 1;
  for (int64_t d : getShape())
    n *= d;
  return n;
}

/// The largest tile kvarn handles: [S, H, D] with S, H <= 64, D <= 512 is
/// far below; this bound only keeps element counts from overflowing.
static constexpr int64_t kMaxTileElements = int64_t(1) << 24;

LogicalResult TileType::verify(function_ref<InFlightDiagnostic()> emitError,
                               ArrayRef<int64_t> shape, Type elementType) {
  if (shape.empty() || shape.size() > 3)
    return emitError() << "a tile has rank 1 to 3, not " << shape.size();
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d <= 0)
      return emitError() << "tile dimensions must be positive, got " << d;
    n *= d;
    if (n > kMaxTileElements)
      return emitError() << "tile has more than " << kMaxTileElements
                         << " elements";
  }
  if (!elementType.isF16() && !elementType.isBF16() && !elementType.isF32() &&
      !elementType.isInteger(8) && !elementType.isInteger(32))
    return emitError() << "tile element type must be f16, bf16, f32, i8 or "
                          "i32, not "
                       << elementType;
  return success();
}

// !kvt.tile<128x64xf32>
Type TileType::parse(AsmParser &parser) {
  SmallVector<int64_t> shape;
  Type elementType;
  SMLoc loc = parser.getCurrentLocation();
  if (parser.parseLess() ||
      parser.parseDimensionList(shape, /*allowDynamic=*/false,
                                /*withTrailingX=*/true) ||
      parser.parseType(elementType) || parser.parseGreater())
    return {};
  return parser.getChecked<TileType>(loc, parser.getContext(), shape,
                                     elementType);
}

void TileType::print(AsmPrinter &printer) const {
  printer << "<";
  for (int64_t d : getShape())
    printer << d << "x";
  printer << getElementType() << ">";
}
