//===- KernelCompiler.h - a DSL kernel to PTX -------------------*- C++ -*-===//
//
// The JIT's front door: a kernel of the library (or of a user's .kvt file),
// specialized for a preset and shape, through kvt and kvgpu to PTX.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_CODEGEN_KERNELCOMPILER_H
#define KVARN_CODEGEN_KERNELCOMPILER_H

#include "kvarn/Codegen/Pipeline.h"
#include "kvarn/DSL/Specialization.h"

namespace kvarn {

struct KernelRequest {
  std::string kernel;           // e.g. "flush"
  dsl::Specialization spec;
  std::string source;           // a user's .kvt text; empty: the library
  std::string sourceName;       // shown in diagnostics for `source`
};

/// The specialization the DSL builds a kernel from under `options`: a dense
/// preset's pool chunks (Specialization::poolRowsBytes) sized for the
/// options' CTAs an SM and chip, small with pipelineCopies so that the
/// records' ring fits (attentionPoolRowsBytes). A spec that fails check()
/// comes back as it was, for compileKernel to report.
dsl::Specialization specializationFor(dsl::Specialization spec,
                                      const CompileOptions &options);

/// Builds the kvt module of `request` and compiles it to PTX. DSL and
/// compiler errors come back as KVARN_ERROR_COMPILE with file:line:col.
kvarn::Expected<CompiledModule> compileKernel(const KernelRequest &request,
                                              const CompileOptions &options);

} // namespace kvarn

#endif // KVARN_CODEGEN_KERNELCOMPILER_H
