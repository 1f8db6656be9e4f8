//===- KVGPUDialect.cpp - the kvgpu dialect -------------------------------===//

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
