//===- kvarn-opt.cpp - mlir-opt with kvarn's dialects and passes ----------===//

#include "kvarn/RegisterKvarnDialects.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  kvarn::registerKvarnDialects(registry);
  kvarn::registerKvarnPasses();
  return mlir::asMainReturnCode(mlir::MlirOptMain(
      argc, argv, "kvarn optimizer driver\n", registry));
}
