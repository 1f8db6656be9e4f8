//===- Passes.td  kvarn's conversion passes ----------------*- tablegen -*-===//
#ifndef KVARN_CONVERSION_PASSES_TD
#define KVARN_CONVERSION_PASSES_TD

include "mlir/Pass/PassBase.td"

def ConvertKVTToKVGPU : Pass<"convert-kvt-to-kvgpu", "mlir::ModuleOp"> {
  let summary = "Distribute kvt kernels over a CTA as kvgpu ops in a gpu.module";
  let description = [{
    Every `func.func` marked `kvt.kernel` becomes a `gpu.func` kernel in the
    `gpu.module @kvarn_kernels`. Its `!kvt.ptr` arguments become `!llvm.ptr<1>`
    and two trailing `!llvm.ptr<1>` arguments (global and profile scratch,
    Triton's convention) are appended. Tiles are placed in dynamic shared
    memory (`kvgpu.shared_buffer`) by a liveness-based planner; widening
    conversions and transposes are views, not copies. Each kernel is lowered
    by the launch shape in its `kvt.launch` (kvt-select-launch writes it);
    it gets `kvgpu.num_warps`, `kvgpu.shared_bytes` and the CTAs per SM it
    settled on (`nvvm.minctasm`: fewer than planned where staged tiles
    outgrew the chip's shared memory). `kvt.launch_dependents` and
    `kvt.grid_dependency_wait` become `nvvm.griddepcontrol` on chips that
    have it (sm_90 on) and nothing before; a kernel that waits gets
    `kvgpu.launch_pdl`.
  }];
  let dependentDialects = [
    "::kvarn::kvgpu::KVGPUDialect", "::mlir::gpu::GPUDialect",
    "::mlir::LLVM::LLVMDialect", "::mlir::NVVM::NVVMDialect",
    "::mlir::memref::MemRefDialect",
    "::mlir::scf::SCFDialect", "::mlir::arith::ArithDialect",
    "::mlir::math::MathDialect"
  ];
  let options = [
    Option<"chip", "chip", "std::string", /*default=*/"\"sm_90\"",
           "Target chip (sm_80, sm_86, sm_89, sm_90, ...): its shared memory "
           "bounds staging and CTAs per SM">,
    Option<"swizzleRecords", "swizzle-records", "bool", /*default=*/"true",
           "Store a record's fields swizzled (copy_in's swizzled_rows) where "
           "the one op that reads them reads them so; off for "
           "-pipeline-copies, whose ring copy stands for every copy of the "
           "loop, swizzled or not">
  ];
}

def SelectLaunch : Pass<"kvt-select-launch", "mlir::ModuleOp"> {
  let summary = "Choose each kvt kernel's launch shape, as its kvt.launch";
  let description = [{
    Writes `kvt.launch = {num_warps, ctas_per_sm[, programs_per_cta]
    [, keeps_staging][, warp_states]}` on every `kvt.kernel` function, from what it does
    and kvarn/Codegen/LaunchPolicy.h: kernels that attend get
    `attentionNumWarps(G, head_dim)` warps (2 at G = 64 up to head_dim 128, else
    4) and `attentionCtasPerSM(G, head_dim)`;
    kernels that normalize their tiles `normalizeLaunch` (and keep their
    tiles staged at fewer CTAs per SM where the chip's shared memory is
    short); kernels that are all register rows get `kPackedWarpsPerCta`
    warps and pack programs of `packedRowLanes` lanes each (two a warp at
    head_dim 128); others a warp per register-row chain (up
    to 4) or warps by their largest tile, one CTA per SM. With
    `warp-states`, kernels that attend (one program a CTA) hold their
    attention state per warp (`warp_states`: WarpStates.cpp).
    `convert-kvt-to-kvgpu` lowers by it.
  }];
  let options = [
    Option<"numWarps", "num-warps", "int", /*default=*/"0",
           "Warps per CTA; 0: the policy's">,
    Option<"minCtasPerSM", "min-ctas-per-sm", "int", /*default=*/"0",
           "CTAs per SM that registers (.minnctapersm) and shared memory are "
           "budgeted for; 0: the policy's">,
    Option<"warpStates", "warp-states", "bool", /*default=*/"false",
           "Hold kernels' attention states per warp, merged once at the "
           "finish (not yet the default: not yet measured on a GPU)">
  ];
}

def SinkTileUsersIntoBranches : Pass<"kvt-sink-into-branches", "mlir::func::FuncOp"> {
  let summary = "Clone the users of a tile-valued scf.if into its branches";
  let description = [{
    In a `kvt.kernel`, an `scf.if` yielding tiles (decode's "read the block
    from the pool or from its record") is followed by the ops that use them
    (attend, materialize's stores). Those ops are cloned into each branch,
    so the branches yield only what escapes (attend's small state) and the
    large tiles stay lazy views in `convert-kvt-to-kvgpu`, never a shared
    buffer of their own. Pure ops in between that do not depend on the if
    move above it; an if whose users cannot move is left as it is.
  }];
  let dependentDialects = ["::mlir::scf::SCFDialect"];
}

def EliminateBarriers : Pass<"kvgpu-eliminate-barriers", "mlir::gpu::GPUModuleOp"> {
  let summary = "Remove kvgpu barriers that order no shared-memory access";
  let description = [{
    The tile lowering ends every collective op with `kvgpu.barrier`. A
    barrier is removed when the accesses since the previous barrier every
    thread passed and the accesses up to the next barrier of the same block
    touch disjoint shared-memory bytes (or only read common ones) and do not
    both touch global memory with a write. Shared buffers are located by
    their `kvgpu.shared_buffer` offsets; the state flows through `scf.if`
    and `scf.for` (to a fixed point). A block's closing barrier is kept, and
    anything that cannot be analysed keeps its barriers. Consecutive
    `copy_in`s then have their global loads in flight together.
  }];
  let statistics = [
    Statistic<"numRemoved", "barriers-removed", "Barriers removed">
  ];
}

def PipelineCopies : Pass<"kvgpu-pipeline-copies", "mlir::gpu::GPUModuleOp"> {
  let summary = "Copy a loop's next record into shared memory during this one";
  let description = [{
    A loop whose steps each copy one record into shared memory (`copy_in`
    of bytes, then a barrier) at an offset known one step ahead gets the
    copy before the loop for its first step and, in each step, the next
    step's copy, into a ring of two slots appended to the kernel's shared
    memory (`kvgpu.shared_buffer ... slot %s of N`); the loop's barriers
    that no other copy precedes leave that copy in flight (`in_flight 1`),
    and the loop's prefetch of the same bytes goes. A kernel is changed
    only where the ring still fits all but one of its CTAs an SM on the
    chip (`kvgpu.shared_bytes` and `nvvm.minctasm` updated).
    PipelineCopies.cpp says when a loop qualifies.
  }];
  let dependentDialects = [
    "::mlir::arith::ArithDialect", "::mlir::scf::SCFDialect"
  ];
  let options = [
    Option<"chip", "chip", "std::string", /*default=*/"\"sm_90\"",
           "Target chip: its shared memory an SM bounds the ring">
  ];
  let statistics = [
    Statistic<"numPipelined", "loops-pipelined", "Loops whose copies were pipelined">
  ];
}

def ConvertKVGPUToNVVM : Pass<"convert-kvgpu-to-nvvm", "mlir::gpu::GPUModuleOp"> {
  let summary = "Lower kvgpu collective ops to gpu, scf, arith, memref and llvm";
  let description = [{
    Expands each collective kvgpu op into thread- or warp-strided loops
    (`gpu.thread_id`, `gpu.shuffle`, `gpu.barrier`), shared-memory accesses
    through `memref` views of `gpu.dynamic_shared_memory`, and global
    accesses through `llvm.getelementptr`/`llvm.load`/`llvm.store` with
    16-byte vector accesses where alignment allows. The upstream
    `convert-gpu-to-nvvm` finishes the job.
  }];
  let dependentDialects = [
    "::mlir::gpu::GPUDialect", "::mlir::LLVM::LLVMDialect",
    "::mlir::memref::MemRefDialect", "::mlir::scf::SCFDialect",
    "::mlir::arith::ArithDialect", "::mlir::vector::VectorDialect",
    "::mlir::NVVM::NVVMDialect"
  ];
}

def LowerSCFInReverse : Pass<"kvarn-lower-scf-in-reverse", "mlir::gpu::GPUModuleOp"> {
  let summary = "convert-scf-to-cf's patterns, applied from the last op to the first";
  let description = [{
    The upstream `convert-scf-to-cf` lowers the first op first; each lowering
    splits its block and moves every later op of the block, so a kernel of n
    guarded stores took O(n^2) time and memory. Applying the same patterns
    from the last op to the first moves each op a bounded number of times,
    so the time is linear in the kernel's size. The result is the same CFG.
  }];
  let dependentDialects = ["::mlir::cf::ControlFlowDialect"];
}

def ExternDynamicSharedMemory
    : Pass<"kvarn-extern-dynamic-shared-memory", "mlir::gpu::GPUModuleOp"> {
  let summary = "Give the dynamic shared memory symbol external linkage";
  let description = [{
    `convert-gpu-to-nvvm` declares dynamic shared memory as an internal
    zero-length array in address space 3. LLVM's NVPTX printer demotes such
    an internal global used by one kernel to a 1-byte *static* `.shared`
    variable, which breaks every access past its first byte. With external
    linkage it prints `.extern .shared .align 16 .b8 name[];`, the dynamic
    shared memory the launch provides.
  }];
  let dependentDialects = ["::mlir::LLVM::LLVMDialect"];
}

#endif // KVARN_CONVERSION_PASSES_TD
