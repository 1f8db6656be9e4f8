//===- RegisterKvarnDialects.h - one registration for every tool -*- C++ -*-===//
//
// Every tool (kvarn-opt, kvarn-jit) and the JIT inside libkvarn register the
// same dialects, interfaces, translations and passes through these two
// functions, the way Triton's RegisterTritonDialects.h is shared.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_REGISTERKVARNDIALECTS_H
#define KVARN_REGISTERKVARNDIALECTS_H

namespace mlir {
class DialectRegistry;
} // namespace mlir

namespace kvarn {

/// kvt, kvgpu and the upstream dialects, ConvertToLLVM interfaces, LLVM IR
/// translations and the NVVM target the pipeline needs.
void registerKvarnDialects(mlir::DialectRegistry &registry);

/// kvarn's passes and pipelines plus the upstream ones kvarn-opt exposes.
void registerKvarnPasses();

} // namespace kvarn

#endif // KVARN_REGISTERKVARNDIALECTS_H
