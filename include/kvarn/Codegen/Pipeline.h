//===- Pipeline.h - from kvt to PTX -----------------------------*- C++ -*-===//
//
// The compiler's one entry point: a kvt module in, PTX (and the LLVM IR it
// came from, and the IR after every stage on request) out. MLIR types appear
// only as forward declarations so the runtime can include this.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_CODEGEN_PIPELINE_H
#define KVARN_CODEGEN_PIPELINE_H

#include "kvarn/Codegen/LaunchPolicy.h"
#include "kvarn/Support/Error.h"
#include <string_view>

#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace mlir {
class ModuleOp;
class OpPassManager;
} // namespace mlir

namespace kvarn {

/// A chip and the PTX ISA version to emit for it.
struct Target {
  std::string chip{kDefaultChip}; // sm_80, sm_86, sm_89, sm_90, sm_90a, ...
  int ptxVersion = 0;         // e.g. 80 for PTX ISA 8.0; 0: the chip's default
  std::string features() const { return "+ptx" + std::to_string(ptxVersion); }
};

/// Checks the chip and fills in / checks the PTX version, so LLVM never sees
/// a pair it would abort on. The highest PTX version LLVM 22 emits is 9.0.
kvarn::Error validateTarget(Target &target);

/// The chips kvarn emits code for.
std::vector<std::string> supportedChips();

struct CompileOptions {
  Target target;
  int numWarps = 0; // 0: chosen per kernel (4 for attention, else by tile size)
  /// CTAs per SM that registers (.minnctapersm) and shared memory are
  /// budgeted for; 0: chosen per kernel (LaunchPolicy.h for attention, else 1).
  int minCtasPerSM = 0;
  /// Attention states held per warp and merged once (kvt-select-launch's
  /// warp-states; docs/codegen.md). Off by default: 4-14% slower on the
  /// H100 (docs/benchmarks.md).
  bool warpStates = false;
  /// Copy the next record into shared memory while this one is attended
  /// (kvgpu-pipeline-copies; docs/codegen.md). Off by default: on the H100
  /// 2-4.5% faster on split decode over long contexts, 5-15% slower where
  /// plain decode fills the GPU in one wave at 4 CTAs an SM and not at 3
  /// (docs/benchmarks.md).
  bool pipelineCopies = false;
  /// Called with (stage name, IR text) after each stage: "kvt", "kvgpu",
  /// "nvvm", "llir", "ptx".
  std::function<void(std::string_view, std::string_view)> onStage;
  bool printIRAfterAll = false; // upstream -mlir-print-ir-after-all, to stderr
  bool timing = false;          // pass timing report, to stderr
  /// When set, a failing pass pipeline writes an MLIR reproducer here: the
  /// IR before the pipeline and the pipeline (`kvarn-opt --run-reproducer`).
  std::string crashReproducer;
};

/// A kernel's calling convention, as its `.kvt` signature and `grid(...)`
/// state it: what a launcher needs to build the argument list and the grid
/// (Triton's convention: these parameters in order, then the global and
/// profile scratch pointers, passed null).
struct KernelAbi {
  /// How a parameter is passed: the one reading of `Param::type` that the
  /// compiler's check, the cache reader, the launch check and the C
  /// launchers share.
  enum class Passed { Pointer, I32, I64, F32 };
  struct Param {
    std::string name;
    /// "i32", "i64", "f32", or a pointer: "*" and the pointee ("*f16",
    /// "*bf16", "*f32", "*i8", "*i32").
    std::string type;
    bool isPointer() const { return type.size() > 1 && type[0] == '*'; }
    /// How it is passed, or nothing for a type the ABI does not have.
    std::optional<Passed> passed() const {
      if (isPointer())
        return Passed::Pointer;
      if (type == "i32")
        return Passed::I32;
      if (type == "i64")
        return Passed::I64;
      if (type == "f32")
        return Passed::F32;
      return std::nullopt;
    }
    bool isInteger() const {
      return passed() == Passed::I32 || passed() == Passed::I64;
    }
    /// Its entry in the PTX-derived Triton `signature` (pointers are all
    /// "*i8" there, f32 "fp32"); empty for a type the ABI does not have.
    std::string ptxSignature() const {
      switch (passed().value_or(Passed::Pointer)) {
      case Passed::Pointer:
        return isPointer() ? "*i8" : "";
      case Passed::I32:
        return "i32";
      case Passed::I64:
        return "i64";
      case Passed::F32:
        return "fp32";
      }
      return "";
    }
  };
  std::vector<Param> params;
  /// The grid along x, y, z: the index in `params` of the integer parameter
  /// that gives the extent, or -1 - the constant extent (so -2 is 1).
  std::vector<int> grid;
  /// The extent `grid[axis]` names, as C source over the parameter names
  /// (a name or a constant).
  std::string gridExpression(size_t axis) const;
};

struct CompiledKernel {
  std::string name;
  KernelAbi abi;
  int numWarps = 0;
  /// Grid points along x one CTA runs: launch ceil(grid.x / P) CTAs there.
  int programsPerCta = 1;
  /// CTAs per SM its registers (.minnctapersm) and shared memory were
  /// budgeted for: what the runtime plans waves with (decode splits).
  int ctasPerSM = 1;
  int64_t sharedBytes = 0; // dynamic shared memory to launch with
  int numArgs = 0;         // parameters including the two scratch pointers
  /// Launched as a programmatic dependent of the kernel before it: it waits
  /// for that kernel (griddepcontrol.wait) before reading its results.
  bool launchPdl = false;
};

struct CompiledModule {
  std::string llvmIR;
  std::string ptx;
  std::vector<CompiledKernel> kernels;
};

/// The pass pipeline from kvt to the NVVM/LLVM dialects.
void buildKvtToNVVMPipeline(mlir::OpPassManager &pm, const CompileOptions &opts);

/// Lowers `module` (kvt kernels) in place and serializes it to PTX.
kvarn::Expected<CompiledModule> compileToPTX(mlir::ModuleOp module,
                                             const CompileOptions &opts);

} // namespace kvarn

#endif // KVARN_CODEGEN_PIPELINE_H
