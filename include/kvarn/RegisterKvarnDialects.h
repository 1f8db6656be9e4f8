//===- RegisterKvarnDialects.h - one registration for every tool -*- C++ -*-===//
//
// Every tool (kvarn-opt, kvarn-jit) and the JIT inside libkvarn register the
// same dialects, interfaces and passes through this header, the way Triton's
// RegisterTritonDialects.h does.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_REGISTERKVARNDIALECTS_H
#define KVARN_REGISTERKVARNDIALECTS_H

#include "kvarn/Dialect/KVTile/KVTile.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Transforms/Passes.h"

namespace kvarn {

inline void registerKvarnDialects(mlir::DialectRegistry &registry) {
  registry.insert<kvt::KVTileDialect, mlir::arith::ArithDialect,
                  mlir::func::FuncDialect, mlir::scf::SCFDialect>();
}

inline void registerKvarnPasses() {
  mlir::registerCanonicalizerPass();
  mlir::registerCSEPass();
  mlir::registerSymbolDCEPass();
}

} // namespace kvarn

#endif // KVARN_REGISTERKVARNDIALECTS_H
