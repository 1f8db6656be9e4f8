//===- KVGPUDialect.cpp - the kvgpu dialect -------------------------------===//

#include "kvarn/Codegen/LaunchPolicy.h"
#include "kvarn/Dialect/KVGPU/KVGPU.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/LLVMIR/LLVMTypes.h"
#include "mlir/IR/DialectImplementation.h"

#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace kvarn::kvgpu;

#include "kvarn/Dialect/KVGPU/KVGPUDialect.cpp.inc"
#include "kvarn/Dialect/KVGPU/KVGPUEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "kvarn/Dialect/KVGPU/KVGPUAttrs.cpp.inc"

/// The kernel attributes (KVGPU.h): warps 1 to 32, programs a CTA that
/// divide its threads (threadsPerProgram) beside the warps they divide,
/// non-negative shared bytes, a unit launch_pdl.
LogicalResult KVGPUDialect::verifyOperationAttribute(Operation *op,
                                                     NamedAttribute attr) {
  StringRef name = attr.getName().getValue();
  auto integer = [&]() -> FailureOr<int64_t> {
    auto value = dyn_cast<IntegerAttr>(attr.getValue());
    if (!value)
      return op->emitError() << "'" << name << "' must be an integer";
    return value.getInt();
  };
  if (name == kNumWarpsAttrName) {
    FailureOr<int64_t> warps = integer();
    if (failed(warps))
      return failure();
    if (*warps < 1 || *warps > kvarn::kMaxWarpsPerCta)
      return op->emitError() << "'" << name << "' must be 1 to "
                             << kvarn::kMaxWarpsPerCta << ", got " << *warps;
    return success();
  }
  if (name == kProgramsPerCtaAttrName) {
    FailureOr<int64_t> programs = integer();
    if (failed(programs))
      return failure();
    auto warps = op->getAttrOfType<IntegerAttr>(kNumWarpsAttrName);
    if (!warps)
      return op->emitError() << "'" << name << "' needs '" << kNumWarpsAttrName
                             << "' beside it";
    if (!kvarn::threadsPerProgram(warps.getInt(), *programs))
      return op->emitError()
             << "'" << name << "' " << *programs << " does not divide "
             << warps.getInt()
             << " warps into whole warps or equal parts of one (at least "
             << kvarn::kMinLanesPerProgram << " lanes)";
    return success();
  }
  if (name == kSharedBytesAttrName) {
    FailureOr<int64_t> bytes = integer();
    if (failed(bytes))
      return failure();
    if (*bytes < 0)
      return op->emitError() << "'" << name << "' must not be negative";
    return success();
  }
  if (name == kLaunchPdlAttrName) {
    if (!isa<UnitAttr>(attr.getValue()))
      return op->emitError() << "'" << name << "' must be a unit attribute";
    return success();
  }
  return op->emitError() << "unknown kvgpu attribute '" << name << "'";
}

void KVGPUDialect::initialize() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "kvarn/Dialect/KVGPU/KVGPUAttrs.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "kvarn/Dialect/KVGPU/KVGPUOps.cpp.inc"
      >();
}

bool kvarn::kvgpu::isSharedMemRef(Type type) {
  auto memref = dyn_cast<MemRefType>(type);
  if (!memref || !memref.hasStaticShape() || !memref.getLayout().isIdentity())
    return false;
  return gpu::GPUDialect::hasWorkgroupMemoryAddressSpace(memref);
}

bool kvarn::kvgpu::isGlobalPointer(Type type) {
  auto ptr = dyn_cast<LLVM::LLVMPointerType>(type);
  return ptr && ptr.getAddressSpace() == 1;
}

MemRefType kvarn::kvgpu::getSharedMemRefType(ArrayRef<int64_t> shape,
                                             Type elementType) {
  MLIRContext *ctx = elementType.getContext();
  return MemRefType::get(shape, elementType, MemRefLayoutAttrInterface(),
                         gpu::AddressSpaceAttr::get(
                             ctx, gpu::GPUDialect::getWorkgroupAddressSpace()));
}
