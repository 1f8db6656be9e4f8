//===- Common.h - helpers shared by the kvgpu lowerings ---------*- C++ -*-===//
#ifndef KVARN_CODEGEN_KVGPUTONVVM_COMMON_H
#define KVARN_CODEGEN_KVGPUTONVVM_COMMON_H

#include "kvarn/Conversion/Passes.h"

#include "mlir/IR/PatternMatch.h"

#include <array>
#include <functional>

namespace kvarn::kvgpu {

/// The linear thread index as `index`.
mlir::Value threadIndex(mlir::OpBuilder &b, mlir::Location loc);

mlir::Value indexConstant(mlir::OpBuilder &b, mlir::Location loc, int64_t v);
mlir::Value i32Constant(mlir::OpBuilder &b, mlir::Location loc, int64_t v);
mlir::Value i64Constant(mlir::OpBuilder &b, mlir::Location loc, int64_t v);
mlir::Value f32Constant(mlir::OpBuilder &b, mlir::Location loc, float v);

/// The address of element `idx` of the shared buffer `shared` as a
/// shared-space pointer.
mlir::Value sharedAddress(mlir::OpBuilder &b, mlir::Location loc,
                          mlir::Value shared, llvm::ArrayRef<mlir::Value> idx);

/// Byte `at` (index) of a region of `rowBytes`-byte rows swizzled as
/// kvgpu.copy_in's `swizzled_rows` (kvgpu::rowSwizzle, or kvgpu::lineSwizzle
/// for rows of 32 or 64 bytes), the region's first byte at 0: where it is
/// stored, relative to the same start. test/unit/SwizzleTest.cpp folds it
/// and rowSwizzle below against KVGPU.h's constexprs.
mlir::Value swizzledByte(mlir::OpBuilder &b, mlir::Location loc, mlir::Value at,
                         int64_t rowBytes);

/// kvgpu::rowSwizzle(row) on an index value.
mlir::Value rowSwizzle(mlir::OpBuilder &b, mlir::Location loc, mlir::Value row);

/// The two halves of a bf16 pair (i32, the first value in the low half) as
/// f32, by integer ops on the word: a shift and a mask, where LLVM's fpext
/// of the pair splits it into two registers and joins it again (prmts).
std::array<mlir::Value, 2> widenBf16x2(mlir::OpBuilder &b, mlir::Location loc,
                                       mlir::Value pair);

/// x (+, max, min) y: one step of a reduction of `kind`.
mlir::Value combineReduction(mlir::OpBuilder &b, mlir::Location loc,
                             ReduceKind kind, mlir::Value x, mlir::Value y);

/// for (p = start; p < total; p += step) body(p), with index values.
void buildStridedLoop(mlir::OpBuilder &b, mlir::Location loc, mlir::Value start,
                      int64_t total, int64_t step,
                      llvm::function_ref<void(mlir::OpBuilder &, mlir::Value)> body);

/// buildStridedLoop from thread `tid` (< threads) with step `threads`:
/// unrolled when every thread runs the same few iterations.
void buildThreadStridedLoop(
    mlir::OpBuilder &b, mlir::Location loc, mlir::Value tid, int64_t total,
    int64_t threads,
    llvm::function_ref<void(mlir::OpBuilder &, mlir::Value)> body);

/// Row-major indices of linear index `p` in `shape`.
llvm::SmallVector<mlir::Value> delinearize(mlir::OpBuilder &b,
                                          mlir::Location loc, mlir::Value p,
                                          llvm::ArrayRef<int64_t> shape);

/// Clones the single block of `region` at the builder's insertion point with
/// its arguments replaced by `args`; returns the terminator's operands mapped.
llvm::SmallVector<mlir::Value> inlineBody(mlir::OpBuilder &b,
                                          mlir::Region &region,
                                          mlir::ValueRange args);

/// The Sylvester butterflies of a chunk of `lanes x v.size()` channels held
/// by `lanes` consecutive lanes (a divisor of 32), lane l holding channels
/// l*E .. l*E+E-1 in `v` (E = v.size(), a power of two), in place: stages
/// h < E pair registers of one lane, the others lane l with l ^ (h / E)
/// (`shfl.sync.bfly`, the lower lane keeping x + y, the upper x - y); the
/// last stage multiplies by `scale` (unless 1). `lane` is the lane index as
/// i32. Every lane of the warp must run it (the shuffles are converged),
/// unless `memberMask` (i32) names the lanes that do (`lanes` of them,
/// aligned): then only those must.
void emitRegisterButterflies(mlir::OpBuilder &b, mlir::Location loc,
                             llvm::MutableArrayRef<mlir::Value> v,
                             mlir::Value lane, int64_t lanes, float scale,
                             mlir::Value memberMask = {});

/// kvgpu.copy_in is asynchronous (cp.async): its writes land by the next
/// kvgpu.barrier, which this makes wait for the thread's copies first
/// (cp.async.wait_group 0 before each barrier of a function that copies
/// in). Runs before the patterns, while the barriers are still kvgpu ops.
void waitForCopiesAtBarriers(mlir::Operation *root);

/// Pattern sets, one per op family.
void populateKVGPUMemoryToNVVMPatterns(mlir::RewritePatternSet &patterns);
void populateKVGPULoopToNVVMPatterns(mlir::RewritePatternSet &patterns);
void populateKVGPUKVarNToNVVMPatterns(mlir::RewritePatternSet &patterns);
void populateKVGPUAttentionToNVVMPatterns(mlir::RewritePatternSet &patterns);
void populateKVGPUTileToNVVMPatterns(mlir::RewritePatternSet &patterns);
void populateKVGPUFragmentToNVVMPatterns(mlir::RewritePatternSet &patterns);
void populateKVGPUMmaToNVVMPatterns(mlir::RewritePatternSet &patterns);

} // namespace kvarn::kvgpu

#endif // KVARN_CODEGEN_KVGPUTONVVM_COMMON_H
