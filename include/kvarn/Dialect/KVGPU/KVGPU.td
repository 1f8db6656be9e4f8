//===- KVGPU.td - the kvgpu dialect -------------------------*- tablegen -*-===//
//
// The work of a kvt tile op distributed over one CTA: shared-memory tile
// buffers, cooperative copies between global and shared memory, thread- and
// warp-distributed loops and reductions, Walsh-Hadamard butterflies and
// low-bit packing. Everything here is executed by all threads of the CTA
// together; an op that writes shared memory is followed by kvgpu.barrier
// before anything reads it.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_DIALECT_KVGPU_TD
#define KVARN_DIALECT_KVGPU_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"
include "mlir/IR/BuiltinAttributeInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"
include "mlir/IR/CommonAttrConstraints.td"
include "mlir/Interfaces/InferTypeOpInterface.td"

def KVGPU_Dialect : Dialect {
  let name = "kvgpu";
  let cppNamespace = "::kvarn::kvgpu";
  let summary = "KVarN tile work distributed over a CTA";
  let description = [{
    `kvgpu` sits between the tile-level `kvt` dialect and upstream
    `gpu`/`nvvm`/`llvm`. Tiles live in shared memory (`kvgpu.shared_buffer`,
    views into the kernel's dynamic shared memory at offsets planned by
    `convert-kvt-to-kvgpu`). Global memory is addressed through
    `!llvm.ptr<1>` kernel arguments with byte offsets and byte strides.
    Ops are collective: every thread of the CTA executes them; each
    distributes its elements over the threads (`foreach`), over warps with
    shuffle reductions (`reduce`, `warp_reduce`), or over butterflies
    (`fwht`). Register rows (`fragment_*`) live in one warp's registers
    instead; a kernel made only of them may run several programs a CTA
    (`kvgpu.programs_per_cta`), each on its own warps or its own part of
    one. `convert-kvgpu-to-nvvm`
    lowers them to `gpu`, `scf`, `arith`, `memref` and `llvm` ops.
  }];
  let useDefaultAttributePrinterParser = 1;
  // A kernel's launch attributes (kvgpu.num_warps, kvgpu.programs_per_cta,
  // ...) are checked where they are set, by hand-written IR too.
  let hasOperationAttrVerify = 1;
  // The parsers build !llvm.ptr<1> and #gpu.address_space types for operands
  // whose type the assembly leaves implicit: those dialects must be loaded
  // before the first kvgpu op is parsed, not when an !llvm type appears.
  let dependentDialects = ["::mlir::LLVM::LLVMDialect",
                           "::mlir::gpu::GPUDialect"];
}

class KVGPU_Op<string mnemonic, list<Trait> traits = []>
    : Op<KVGPU_Dialect, mnemonic, traits>;

def KVGPU_SharedMemRef : Type<
    And<[IsMemRefTypePred,
         CPred<"::kvarn::kvgpu::isSharedMemRef($_self)">]>,
    "statically shaped memref in workgroup (shared) memory",
    "::mlir::MemRefType">;

def KVGPU_GlobalPtr : Type<
    CPred<"::kvarn::kvgpu::isGlobalPointer($_self)">, "!llvm.ptr<1>",
    "::mlir::LLVM::LLVMPointerType">,
  BuildableType<"::mlir::LLVM::LLVMPointerType::get($_builder.getContext(), 1)">;

def KVGPU_ReduceKind : I32EnumAttr<"ReduceKind", "a reduction", [
    I32EnumAttrCase<"Add", 0, "add">,
    I32EnumAttrCase<"Max", 1, "max">,
    I32EnumAttrCase<"Min", 2, "min">]> {
  let cppNamespace = "::kvarn::kvgpu";
  let genSpecializedAttr = 0;
}
def KVGPU_ReduceKindAttr : EnumAttr<KVGPU_Dialect, KVGPU_ReduceKind, "reduce_kind"> {
  let assemblyFormat = "`<` $value `>`";
}

//===----------------------------------------------------------------------===//
// Shared memory and synchronization
//===----------------------------------------------------------------------===//

def KVGPU_SharedBufferOp : KVGPU_Op<"shared_buffer", [Pure]> {
  let summary = "a tile buffer at a byte offset of the dynamic shared memory";
  let description = [{
    ```mlir
    %k = kvgpu.shared_buffer 0 : memref<128x128xf16, #gpu.address_space<workgroup>>
    %r = kvgpu.shared_buffer 52736 slot %s of 13824 : memref<13824xi8, #gpu.address_space<workgroup>>
    ```
    The offset is planned by the tile lowering; buffers whose lifetimes do
    not overlap share bytes. With `slot %s of N`, the buffer is slot %s
    (0 or 1) of a ring of two N-byte slots from `offset` (offset + %s * N:
    kvgpu-pipeline-copies' staged records); N is a multiple of 128, so the
    buffer keeps the alignment of `offset`. The enclosing kernel's
    `kvgpu.shared_bytes` attribute covers every buffer.
  }];
  let arguments = (ins ConfinedAttr<I64Attr, [IntNonNegative]>:$offset,
                       Optional<Index>:$slot,
                       OptionalAttr<ConfinedAttr<I64Attr, [IntPositive]>>:$slotBytes);
  let results = (outs KVGPU_SharedMemRef:$buffer);
  let assemblyFormat = [{
    $offset (`slot` $slot^ `of` $slotBytes)? attr-dict `:` type($buffer)
  }];
  let builders = [
    OpBuilder<(ins "::mlir::Type":$type, "int64_t":$offset), [{
      build($_builder, $_state, type, offset, ::mlir::Value(), nullptr);
    }]>,
    OpBuilder<(ins "::mlir::Type":$type, "::mlir::IntegerAttr":$offset), [{
      build($_builder, $_state, type, offset, ::mlir::Value(), nullptr);
    }]>
  ];
  let extraClassDeclaration = [{
    /// Slots of a ring buffer (`slot %s of N`).
    static constexpr int64_t kRingSlots = 2;
    /// The bytes every slot this op can name spans, from `offset`.
    int64_t getSpannedBytes();
  }];
  let hasVerifier = 1;
}

def KVGPU_BarrierOp : KVGPU_Op<"barrier"> {
  let summary = "wait for every thread of the CTA (bar.sync 0)";
  let description = [{
    First waits for the thread's asynchronous copies into shared memory
    (`copy_in`), all of them, or all but the newest `in_flight` groups of
    them (`cp.async.wait_group`): kvgpu-pipeline-copies keeps the next
    record's copy in flight across the barriers that do not need it.
  }];
  let arguments = (ins OptionalAttr<ConfinedAttr<I64Attr, [IntPositive]>>:$inFlight);
  let assemblyFormat = "(`in_flight` $inFlight^)? attr-dict";
  let builders = [
    OpBuilder<(ins), [{ build($_builder, $_state, ::mlir::IntegerAttr()); }]>
  ];
}

def KVGPU_CommitCopiesOp : KVGPU_Op<"commit_copies"> {
  let summary = "close an empty group of asynchronous copies";
  let description = [{
    `cp.async.commit_group` with no copy of its own: where a pipelined
    copy is not issued (the loop's last step), the step still closes one
    group, so that `barrier in_flight 1` always leaves exactly the step's
    own group in flight. Every `copy_in` closes its own group.
  }];
  let assemblyFormat = "attr-dict";
}

//===----------------------------------------------------------------------===//
// Global memory
//===----------------------------------------------------------------------===//

def KVGPU_GlobalLoadOp : KVGPU_Op<"global_load"> {
  let summary = "every thread of a program loads the same scalar from global memory";
  let arguments = (ins Arg<KVGPU_GlobalPtr, "", [MemRead]>:$ptr, I64:$byteOffset);
  let results = (outs AnyTypeOf<[F16, BF16, F32, I8, I32, I64]>:$result);
  let assemblyFormat = "$ptr `[` $byteOffset `]` attr-dict `:` type($result)";
}

def KVGPU_GlobalStoreOp : KVGPU_Op<"global_store"> {
  let summary = "thread 0 stores a scalar to global memory";
  let arguments = (ins AnyTypeOf<[F16, BF16, F32, I8, I32, I64]>:$value,
                       Arg<KVGPU_GlobalPtr, "", [MemWrite]>:$ptr, I64:$byteOffset);
  let assemblyFormat = "$value `,` $ptr `[` $byteOffset `]` attr-dict `:` type($value)";
}

def KVGPU_PrefetchOp : KVGPU_Op<"prefetch"> {
  let summary = "the CTA's threads bring bytes of global memory into L2";
  let description = [{
    Each thread prefetches some of the 128-byte lines that `bytes` bytes
    from `src + byteOffset` touch (`prefetch.global.L2`, thread t the lines
    t, t + threads, ...); with `rows` and `byteStride`, the lines of `rows`
    such ranges `byteStride` bytes apart, numbered row by row. A hint: it
    changes no value, and is declared with unknown memory effects so that
    it is not erased as dead.
  }];
  let arguments = (ins KVGPU_GlobalPtr:$src, I64:$byteOffset,
                       ConfinedAttr<I64Attr, [IntPositive]>:$bytes,
                       OptionalAttr<ConfinedAttr<I64Attr, [IntPositive]>>:$rows,
                       Optional<I64>:$byteStride);
  let assemblyFormat = "$src `[` $byteOffset `]` `bytes` $bytes (`rows` $rows^ `stride` $byteStride)? attr-dict";
  let hasVerifier = 1;
}

def KVGPU_CopyInOp : KVGPU_Op<"copy_in"> {
  let summary = "cooperative strided copy from global to shared memory";
  let description = [{
    `dst[i, j] = *(T *)(src + byteOffset + i * byteStrides[0] + j * byteStrides[1])`.
    When the innermost byte stride is the element size (a constant), each
    thread moves `vector` contiguous elements per access (16-byte loads for
    f16 x 8).

    `swizzled_rows`, triples (first byte, end byte, row bytes) of a 1-D i8
    `dst`: in each such region the 16-byte chunk c of row r is stored at
    chunk c ^ s(r) of its row (`kvgpu::rowSwizzle`, KVGPU.h: reads of one
    chunk column by rows r .. r + 7 then hit distinct banks); rows of 32 or
    64 bytes, several to a 128-byte line, swizzle their line's chunks by
    the line (`kvgpu::lineSwizzle`). Only a consumer that reads the region
    through the same map may read it.
  }];
  let arguments = (ins Arg<KVGPU_GlobalPtr, "", [MemRead]>:$src, I64:$byteOffset,
                       Variadic<I64>:$byteStrides,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$dst,
                       OptionalAttr<DenseI64ArrayAttr>:$swizzled_rows);
  let assemblyFormat = [{
    $src `[` $byteOffset `]` `strides` `(` $byteStrides `)` `to` $dst attr-dict `:` type($dst)
  }];
  let builders = [
    OpBuilder<(ins "::mlir::Value":$src, "::mlir::Value":$byteOffset,
                   "::mlir::ValueRange":$byteStrides,
                   "::mlir::Value":$dst), [{
      build($_builder, $_state, src, byteOffset, byteStrides, dst,
            ::mlir::DenseI64ArrayAttr());
    }]>
  ];
  let hasVerifier = 1;
}

def KVGPU_CopyOutOp : KVGPU_Op<"copy_out"> {
  let summary = "cooperative strided copy from shared to global memory";
  let arguments = (ins Arg<KVGPU_SharedMemRef, "", [MemRead]>:$src,
                       Arg<KVGPU_GlobalPtr, "", [MemWrite]>:$dst, I64:$byteOffset,
                       Variadic<I64>:$byteStrides);
  let assemblyFormat = [{
    $src `to` $dst `[` $byteOffset `]` `strides` `(` $byteStrides `)` attr-dict `:` type($src)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Register fragments: one row held by one warp
//===----------------------------------------------------------------------===//

def KVGPU_Fragment : VectorOfRankAndType<[1], [F16, BF16, F32]>;

def KVGPU_FragmentLoadOp : KVGPU_Op<"fragment_load"> {
  let summary = "load a row from global memory into one warp's registers";
  let description = [{
    The row of `N = L x E` elements at `src + byteOffset + c * byteStride`
    (c < N), E the result's vector length, L the lanes of a warp the
    program holds: lane `l` of warp `warp` of the program (a kernel with
    `kvgpu.programs_per_cta` P runs P programs a CTA of W =
    `kvgpu.num_warps` warps, 32 W / P threads each: W / P warps of 32
    lanes, or where P > W, L = 32 W / P lanes of one warp, warp 0; else
    the CTA is one program) gets channels `l*E .. l*E+E-1`, in order.
    The program's other warps do nothing and hold zeros. When `byteStride`
    is the element size and the row's address is aligned, each lane reads
    its channels with vector loads of up to 16 bytes (decided at run time,
    uniformly over the program); element loads otherwise.

    ```mlir
    %k = kvgpu.fragment_load %src[%off] stride %c2 warp 0 : vector<4xf16>
    ```
  }];
  let arguments = (ins Arg<KVGPU_GlobalPtr, "", [MemRead]>:$src, I64:$byteOffset,
                       I64:$byteStride,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$warp);
  let results = (outs KVGPU_Fragment:$result);
  let assemblyFormat = [{
    $src `[` $byteOffset `]` `stride` $byteStride `warp` $warp attr-dict `:` type($result)
  }];
  let hasVerifier = 1;
}

def KVGPU_FragmentFWHTOp : KVGPU_Op<"fragment_fwht", [NoMemoryEffect,
    AllTypesMatch<["input", "result"]>]> {
  let summary = "unnormalized Walsh-Hadamard transform of a warp's row";
  let description = [{
    The Sylvester butterflies `(a, b) -> (a + b, a - b)` for strides 1, 2,
    ..., N/2 over the whole row held as a fragment (`kvgpu.fragment_load`'s
    layout, N = L x E), then a multiplication by `scale` in the last stage:
    the same operations, in the same order, as `kvgpu.fwht`. Strides below E
    pair registers of one lane, the others lanes (`shfl.sync.bfly`, whose
    member mask names only the program's L lanes where it holds part of a
    warp: programs sharing a warp branch apart). Only warp `warp` of the
    program computes; its other warps get zeros.

    ```mlir
    %r = kvgpu.fragment_fwht %x scale 0.0883883461 warp 0 : vector<4xf32>
    ```
  }];
  let arguments = (ins VectorOfRankAndType<[1], [F32]>:$input, F32Attr:$scale,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$warp);
  let results = (outs VectorOfRankAndType<[1], [F32]>:$result);
  let assemblyFormat = "$input `scale` $scale `warp` $warp attr-dict `:` type($input)";
  let hasVerifier = 1;
}

def KVGPU_FragmentStoreOp : KVGPU_Op<"fragment_store"> {
  let summary = "store a warp's row from registers to global memory";
  let description = [{
    The inverse of `kvgpu.fragment_load`: lane `l` of warp `warp` of the
    program writes its E channels `l*E ..` at `dst + byteOffset + c *
    byteStride`, with vector stores when the stride is the element size and
    the address is aligned.

    ```mlir
    kvgpu.fragment_store %h, %dst[%off] stride %c2 warp 0 : vector<4xf16>
    ```
  }];
  let arguments = (ins KVGPU_Fragment:$value,
                       Arg<KVGPU_GlobalPtr, "", [MemWrite]>:$dst, I64:$byteOffset,
                       I64:$byteStride,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$warp);
  let assemblyFormat = [{
    $value `,` $dst `[` $byteOffset `]` `stride` $byteStride `warp` $warp attr-dict `:` type($value)
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Distributed loops
//===----------------------------------------------------------------------===//

def KVGPU_YieldOp : KVGPU_Op<"yield", [Pure, Terminator,
    ParentOneOf<["ForeachOp", "ReduceOp"]>]> {
  let summary = "terminates the body of foreach (no values) or reduce (one)";
  let arguments = (ins Variadic<AnyType>:$values);
  let builders = [OpBuilder<(ins), [{ build($_builder, $_state, ::mlir::ValueRange()); }]>];
  let assemblyFormat = "($values^ `:` type($values))? attr-dict";
}

def KVGPU_ForeachOp : KVGPU_Op<"foreach", [
    SingleBlockImplicitTerminator<"YieldOp">]> {
  let summary = "run the body once per point of a static index space, over all threads";
  let description = [{
    Point `p` (row-major linear index) of `shape` runs on thread
    `p mod threads`, so consecutive threads take consecutive points. The body
    receives one `index` per dimension and may read and write shared memory
    and registers; it must not assume any order between points.

    ```mlir
    kvgpu.foreach [128, 64] (%r, %c) {
      ...
    }
    ```
  }];
  let arguments = (ins DenseI64ArrayAttr:$shape);
  let regions = (region SizedRegion<1>:$body);
  let hasCustomAssemblyFormat = 1;
  let hasVerifier = 1;
  let skipDefaultBuilders = 1;
  let builders = [
    OpBuilder<(ins "llvm::ArrayRef<int64_t>":$shape)>
  ];
}

def KVGPU_ReduceOp : KVGPU_Op<"reduce", [
    SingleBlockImplicitTerminator<"YieldOp">]> {
  let summary = "reduce a computed f32 over the last dimension, one result per row";
  let description = [{
    `out[r] = kind_{c < C} body(r, c)` for a `[R, C]` index space. A row is
    reduced by one warp (its lanes stride over `c` and combine with a
    shuffle tree, `kvgpu.warp_reduce`; lane 0 writes the result) or, when
    the body reads a shared buffer along rows (its innermost index computed
    from `r`, not `c`), by one thread, which may take several rows at once.
    To reduce over rows instead, the body reads its operands transposed.

    ```mlir
    kvgpu.reduce <add> [128, 64] (%r, %c) into %sums : memref<128xf32, 3> {
      %x = memref.load %tile[%r, %c] : memref<128x64xf32, 3>
      kvgpu.yield %x : f32
    }
    ```
  }];
  let arguments = (ins KVGPU_ReduceKindAttr:$kind, DenseI64ArrayAttr:$shape,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$out);
  let regions = (region SizedRegion<1>:$body);
  let hasCustomAssemblyFormat = 1;
  let hasVerifier = 1;
}

def KVGPU_WarpReduceOp : KVGPU_Op<"warp_reduce", [Pure, SameOperandsAndResultType]> {
  let summary = "combine one f32 per lane over the warp (butterfly shuffles)";
  let description = [{
    Every lane gets the reduction of all 32 lanes' values
    (`shfl.sync.bfly` with offsets 16, 8, 4, 2, 1).
  }];
  let arguments = (ins KVGPU_ReduceKindAttr:$kind, F32:$value);
  let results = (outs F32:$result);
  let assemblyFormat = "$kind $value attr-dict `:` type($value)";
}

//===----------------------------------------------------------------------===//
// KVarN building blocks
//===----------------------------------------------------------------------===//

def KVGPU_FWHTOp : KVGPU_Op<"fwht"> {
  let summary = "in-place unnormalized Walsh-Hadamard transform of row chunks";
  let description = [{
    For every row of the `[R, D]` f32 buffer and each of the `count`
    contiguous chunks of `length` channels starting at channel `start`
    (`length` a power of two), applies the Sylvester butterflies
    `(a, b) -> (a + b, a - b)` for strides 1, 2, ..., length/2, with a
    barrier between stages, and multiplies the chunk by `scale`.
    A Sylvester rotation of order D is one chunk of D scaled by 1/sqrt(D);
    a Kronecker rotation starts with D/s chunks of s; a block-diagonal one is
    one op per block.

    ```mlir
    kvgpu.fwht %buf chunks 1 x 128 at 0 scale 0.0883883461 : memref<1x128xf32, 3>
    ```
  }];
  let arguments = (ins Arg<KVGPU_SharedMemRef, "", [MemRead, MemWrite]>:$buffer,
                       ConfinedAttr<I64Attr, [IntPositive]>:$count,
                       ConfinedAttr<I64Attr, [IntPositive]>:$length,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$start,
                       F32Attr:$scale);
  let assemblyFormat = [{
    $buffer `chunks` $count `x` $length `at` $start `scale` $scale attr-dict `:` type($buffer)
  }];
  let hasVerifier = 1;
}

def KVGPU_DenseMixOp : KVGPU_Op<"dense_mix"> {
  let summary = "mix the m chunks of every row with a ±1 matrix";
  let description = [{
    For `[R, D]` buffers with D = m * s and a ±1 matrix A of order m:
    `out[r, b*s + i] = scale * sum_a A[a, b] * in[r, a*s + i]` (with
    `transpose`, `A[b, a]`). Together with `kvgpu.fwht` of length s this is
    the Kronecker rotation (A kron S_s) / sqrt(D).
  }];
  let arguments = (ins Arg<KVGPU_SharedMemRef, "", [MemRead]>:$input,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$output,
                       DenseI8ArrayAttr:$matrix, UnitAttr:$transpose, F32Attr:$scale);
  let assemblyFormat = [{
    $input `to` $output (`transpose` $transpose^)? `scale` $scale `matrix` $matrix attr-dict
    `:` type($input) `,` type($output)
  }];
  let hasVerifier = 1;
}

def KVGPU_PackBitsOp : KVGPU_Op<"pack_bits"> {
  let summary = "pack every row's codes, low bits first";
  let arguments = (ins Arg<KVGPU_SharedMemRef, "", [MemRead]>:$codes,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$packed,
                       ConfinedAttr<I32Attr, [IntMinValue<1>, IntMaxValue<8>]>:$bits);
  let assemblyFormat = "$codes `to` $packed `bits` $bits attr-dict `:` type($codes) `,` type($packed)";
  let hasVerifier = 1;
}

def KVGPU_UnpackBitsOp : KVGPU_Op<"unpack_bits"> {
  let summary = "unpack every row's codes (the inverse of pack_bits)";
  let arguments = (ins Arg<KVGPU_SharedMemRef, "", [MemRead]>:$packed,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$codes,
                       ConfinedAttr<I32Attr, [IntMinValue<1>, IntMaxValue<8>]>:$bits);
  let assemblyFormat = "$packed `to` $codes `bits` $bits attr-dict `:` type($packed) `,` type($codes)";
  let hasVerifier = 1;
}

def KVGPU_PackedMatmulOp : KVGPU_Op<"packed_matmul"> {
  let summary = "out[h, n] = sum_k a[k, h] * code[k, n] over packed codes, in registers";
  let description = [{
    ```mlir
    kvgpu.packed_matmul %a, %codes bits 4 into %out scratch %partials
        : memref<512xf32, #gpu.address_space<workgroup>>,
          memref<128x64xi8, #gpu.address_space<workgroup>>,
          memref<512xf32, #gpu.address_space<workgroup>>,
          memref<2048xf32, #gpu.address_space<workgroup>>
    ```
    The dot products of attention over quantized K and V (`kvt.attend` on
    dequantized codes, the scales folded out): `a` is [K, H] row-major
    (k-major, so one thread's H values of row k are adjacent), `codes` is
    [K, N * bits / 8] bytes with code (k, n) in bits `(n * bits) mod 8`
    upwards of byte `n * bits / 8` (`pack_bits`' order), `out` is [H, N]
    row-major. With `transposed` the codes are [N, K * bits / 8], code (k,
    n) at bit `(k * bits) mod 8` of byte `k * bits / 8` of row n: MLA's
    token-major latent as the scores' operand (tensor cores only, 2- or
    4-bit codes). `codes` may also be f16 values, transposed rows [N, K]
    with `bits 16` (MLA's rope keys): they are the MMA's operand as they
    are, f16 `mma.sync` with `a` split in two f16 parts (22 bits; |a| <
    65504).

    `getPackedMatmulLayout` picks one of two strategies. On tensor cores
    (when K is whole tiles of 16 rows and the columns split into 16 x 2^i
    a warp, codes below 128): bf16 `mma.sync` m16n8k16 with the code
    columns as M and the heads as N, each warp owning its columns; the
    codes become bf16 through the 0x4300 magic number and `a` is split in
    two bf16 parts (hi + lo, 16 bits), two MMAs into the same fp32 sums;
    the CTA splits `a` into the lanes' B fragments in `scratch` once
    (rounds of 8 k tiles) and waits at one barrier; the k loop has none.
    Otherwise with fma: each thread holds one
    piece (32, 16 or 8 bits) of a codes row and the H x (piece / bits) sums
    of its columns over a slice of the rows (the piece, the threads per
    column group and the split of K); it reads one piece and H values of
    `a` per row, widens the codes with the 2^23 magic number (no integer
    conversion) and accumulates with fma. The slices' sums meet through warp
    shuffles and, when warps split K, through `scratch` (at least
    `PackedMatmulLayout::scratchFloats` floats) behind an internal barrier.
    Like every op here, its writes to `out` need a kvgpu.barrier before
    other threads read them.

    With `head_major`, `a` is [H, K] row-major instead (the queries as the
    tile holds them); with `scaled_by %s` (f16 or f32 [K]), row k of `a`
    is multiplied by s[k] as it is read (in f32, as a product stored
    beforehand would be): attention's `q . kscale` without a [K, H] copy
    of it in shared memory.
  }];
  let arguments = (ins Arg<KVGPU_SharedMemRef, "", [MemRead]>:$a,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$codes,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$out,
                       Arg<KVGPU_SharedMemRef, "", [MemRead, MemWrite]>:$scratch,
                       Arg<Optional<KVGPU_SharedMemRef>, "", [MemRead]>:$aScale,
                       ConfinedAttr<I32Attr, [IntMinValue<1>, IntMaxValue<16>]>:$bits,
                       UnitAttr:$transposed,
                       UnitAttr:$headMajor);
  let assemblyFormat = [{
    $a (`head_major` $headMajor^)? (`scaled_by` $aScale^)? `,` $codes
    `bits` $bits (`transposed` $transposed^)? `into` $out
    `scratch` $scratch attr-dict `:`
    type($a) (`scaled_by` type($aScale)^)? `,` type($codes) `,` type($out)
    `,` type($scratch)
  }];
  let extraClassDeclaration = [{
    /// K (the rows summed over) and N (the code columns) of `codes`.
    int64_t getNumRows();
    int64_t getNumColumns();
  }];
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Tensor-core operands in registers (the building blocks of packed_matmul's
// and attend_record's lowerings)
//===----------------------------------------------------------------------===//

def KVGPU_MmaBf16Op : KVGPU_Op<"mma_bf16", [Pure,
    AllTypesMatch<["acc", "result"]>]> {
  let summary = "one warp's m16n8k16 bf16 tensor-core product into f32";
  let description = [{
    `acc + a x b` over one warp's register fragments, in `mma.sync`'s
    m16n8k16 layout (row-major A, column-major B): `a` is the lane's four A
    registers, each a bf16 pair (a0: row g, k 2t and 2t + 1; a1: row g + 8;
    a2, a3: the same rows at k + 8), `b` its two B registers (k 2t, 2t + 1
    and 2t + 8, 2t + 9 of column g), `acc` and the result its four
    accumulators (rows g and g + 8, columns 2t and 2t + 1), lane = 4 g + t.

    ```mlir
    %d = kvgpu.mma_bf16 %a, %b, %acc : vector<4xi32>, vector<2xi32>, vector<4xf32>
    ```
  }];
  let arguments = (ins VectorOfLengthAndType<[4], [I32]>:$a,
                       VectorOfLengthAndType<[2], [I32]>:$b,
                       VectorOfLengthAndType<[4], [F32]>:$acc);
  let results = (outs VectorOfLengthAndType<[4], [F32]>:$result);
  let assemblyFormat = "$a `,` $b `,` $acc attr-dict `:` type($a) `,` type($b) `,` type($acc)";
}

def KVGPU_MmaF16Op : KVGPU_Op<"mma_f16", [Pure,
    AllTypesMatch<["acc", "result"]>]> {
  let summary = "one warp's m16n8k16 f16 tensor-core product into f32";
  let description = [{
    kvgpu.mma_bf16's product and register layout with f16 operands (each
    register an f16 pair, the first element in the low half): for operands
    that are f16 already, as the pool's K and V rows, which bf16 would round.

    ```mlir
    %d = kvgpu.mma_f16 %a, %b, %acc : vector<4xi32>, vector<2xi32>, vector<4xf32>
    ```
  }];
  let arguments = (ins VectorOfLengthAndType<[4], [I32]>:$a,
                       VectorOfLengthAndType<[2], [I32]>:$b,
                       VectorOfLengthAndType<[4], [F32]>:$acc);
  let results = (outs VectorOfLengthAndType<[4], [F32]>:$result);
  let assemblyFormat = "$a `,` $b `,` $acc attr-dict `:` type($a) `,` type($b) `,` type($acc)";
}

def KVGPU_SplitBf16x2Op : KVGPU_Op<"split_bf16x2", [Pure]> {
  let summary = "two f32 values as a bf16 pair plus the pair of their rounded rests";
  let description = [{
    `hi` = (x0, x1) rounded to bf16 (round to nearest even), `lo` = the rests
    x - hi rounded to bf16, each a bf16 pair in one i32 register (x0 in the
    low half), ready as mma operands: `hi + lo` carries 16 of fp32's 24
    bits, within 2^-17 of each value (kMmaSplitParts = 2 MMAs, one per part;
    PackedMatmulMmaTiling in KVGPU.h says why that is enough). Each pair is
    one `cvt.rn.bf16x2.f32`.

    ```mlir
    %hi, %lo = kvgpu.split_bf16x2 %x0, %x1
    ```
  }];
  let arguments = (ins F32:$x0, F32:$x1);
  let results = (outs I32:$hi, I32:$lo);
  let assemblyFormat = "$x0 `,` $x1 attr-dict";
}

def KVGPU_BiasedCodePairOp : KVGPU_Op<"biased_code_pair", [Pure]> {
  let summary = "two low-bit codes as the bf16 pair 128 + code, for an mma operand";
  let description = [{
    The `bits`-bit codes at bit `shift` of each 16-bit half of `pair` (i32),
    each OR-ed into the mantissa of 128.0 (bf16 0x4300, whose ulp is 1): the
    bf16 pair (128 + low code, 128 + high code), exact for codes below 128.
    One shift and one `lop3` (mask and bias at once). The consumer takes 128
    x the other operand's sum back off the product (attend_record), or
    128 off each half of the pair (packed_matmul, whose other operand has
    both signs).

    ```mlir
    %r = kvgpu.biased_code_pair %pair shift 4 bits 4 : i32
    ```
  }];
  let arguments = (ins I32:$pair,
                       ConfinedAttr<I32Attr, [IntNonNegative, IntMaxValue<15>]>:$shift,
                       ConfinedAttr<I32Attr, [IntMinValue<1>, IntMaxValue<7>]>:$bits);
  let results = (outs I32:$result);
  let assemblyFormat = "$pair `shift` $shift `bits` $bits attr-dict `:` type($pair)";
  let hasVerifier = 1;
}

def KVGPU_LoadMatrixOp : KVGPU_Op<"load_matrix"> {
  let summary = "one warp's ldmatrix: four 8x8 matrices of 16-bit elements from shared memory";
  let description = [{
    Lane i gives the start of row i % 8 of matrix i / 8: element `index` of
    `rows` (a 1-D shared buffer of 16-bit elements), the first of 8
    consecutive elements, 16-byte aligned. Register m of the result holds
    two elements of matrix m for the lane (lane = 4 g + t), the first in
    the low half: row g, columns 2t and 2t + 1; with `transpose`, rows 2t
    and 2t + 1 of column g (the layout of an mma operand whose k runs along
    the stored rows). One `ldmatrix.sync.aligned.m8n8.x4[.trans].shared.b16`
    against 8 scalar loads and 4 register merges.

    ```mlir
    %r = kvgpu.load_matrix %rows[%i] transpose
        : memref<4096xi16, #gpu.address_space<workgroup>> -> vector<4xi32>
    ```
  }];
  let arguments = (ins Arg<KVGPU_SharedMemRef, "", [MemRead]>:$rows, Index:$index,
                       UnitAttr:$transpose);
  let results = (outs VectorOfLengthAndType<[4], [I32]>:$result);
  let assemblyFormat = "$rows `[` $index `]` (`transpose` $transpose^)? attr-dict `:` type($rows) `->` type($result)";
  let hasVerifier = 1;
}

def KVGPU_AttendRecordOp : KVGPU_Op<"attend_record"> {
  let summary = "one online-softmax step over a record's packed K and V codes, in registers";
  let description = [{
    ```mlir
    kvgpu.attend_record q %q
        keys %kc bits 4 scales %ks, %kz, %kt
        values %vc bits 2 scales %vs, %vz, %vch
        state %m, %l, %acc valid %n softmax_scale %s
        into %m2, %l2, %acc2 scratch %scratch : ...
    ```
    `kvt.attend` over one block whose K and V are a record's dequantized
    codes, the scales folded out of the dot products as for packed_matmul:
    K[t, d] = (code_k[d, t] kscale[d] + kzero[d]) ktoken[t] from the
    [D, G * kbits / 8] byte field `k_codes`, V[t, d] = (code_v[t, d]
    vscale[t] + vzero[t]) vchannel[d] from [G, D * vbits / 8] `v_codes`
    (pack_bits' order). With the incoming state (`m`, `l` [H], `acc` [H, D],
    f32) and the rotated queries `q` [H, D] f32, it writes the state after
    the block's first `valid` tokens to `new_m`, `new_l`, `new_acc`, which
    may be the incoming state's own buffers (an update in place: the
    incoming `m` and `l` are read before the barrier that precedes any
    write, and each `acc` element is read and written by one thread).

    `getRecordAttendLayout` (KVGPU.h) says who does what: each warp attends
    its own tokens with two f16 `mma.sync` products (the codes masked in
    place as f16 subnormals) and a softmax held in registers (warp
    shuffles for the row max and sums), and the warps' partial states meet
    the incoming one at one barrier. The scratch holds
    the split B fragments of `q * kscale`, the probabilities on their way
    from one product to the other, and the partials. Like every op here,
    its writes need a kvgpu.barrier before other threads read them.

    With `warp_states`, the state is held per warp: `m`, `l` are [W, H] and
    `acc` [W, H, D] for the CTA's W warps, the state they stand for is the
    merge of the W (kvt.attend_finish's), and each warp folds its tokens
    into its own row with no barrier and no merge; the new state may be
    the incoming one's buffers, or others.

    With `swizzled`, the rows of `k_codes` were stored as kvgpu.copy_in's
    `swizzled_rows` stores them (`kvgpu::lineSwizzle` for 32- and 64-byte
    rows, else `kvgpu::rowSwizzle`), so that the keys' ldmatrix reads hit
    distinct banks.
  }];
  let arguments = (ins Arg<KVGPU_SharedMemRef, "", [MemRead]>:$q,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$k_codes,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$k_scale,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$k_zero,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$k_token_scale,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$v_codes,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$v_scale,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$v_zero,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$v_channel_scale,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$m,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$l,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$acc,
                       I32:$valid, F32:$softmax_scale,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$new_m,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$new_l,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$new_acc,
                       Arg<KVGPU_SharedMemRef, "", [MemRead, MemWrite]>:$scratch,
                       ConfinedAttr<I32Attr, [IntMinValue<1>, IntMaxValue<8>]>:$k_bits,
                       ConfinedAttr<I32Attr, [IntMinValue<1>, IntMaxValue<8>]>:$v_bits,
                       UnitAttr:$warp_states, UnitAttr:$swizzled);
  let assemblyFormat = [{
    `q` $q
    `keys` $k_codes `bits` $k_bits `scales` $k_scale `,` $k_zero `,` $k_token_scale
    `values` $v_codes `bits` $v_bits `scales` $v_scale `,` $v_zero `,` $v_channel_scale
    (`swizzled` $swizzled^)?
    `state` $m `,` $l `,` $acc `valid` $valid `softmax_scale` $softmax_scale
    `into` $new_m `,` $new_l `,` $new_acc `scratch` $scratch
    (`warp_states` $warp_states^)? attr-dict `:`
    type($q) `,` type($k_codes) `,` type($k_scale) `,` type($k_zero) `,`
    type($k_token_scale) `,` type($v_codes) `,` type($v_scale) `,`
    type($v_zero) `,` type($v_channel_scale) `,` type($m) `,` type($l) `,`
    type($acc) `,` type($new_m) `,` type($new_l) `,` type($new_acc) `,`
    type($scratch)
  }];
  let hasVerifier = 1;
}

def KVGPU_AttendRowsOp : KVGPU_Op<"attend_rows"> {
  let summary = "one online-softmax step over fp16 K and V rows, in registers";
  let description = [{
    ```mlir
    kvgpu.attend_rows q %q keys %k values %v state %m, %l, %acc
        from %from valid %n softmax_scale %s
        into %m2, %l2, %acc2 scratch %scratch : ...
    ```
    `kvt.attend` over T tokens whose K and V are fp16 rows staged in shared
    memory (`keys`, `values`: T x D f16, row-major; the pool's blocks), for
    tokens `from` <= t < `valid` of every query head. The state, queries and
    in-place update are those of kvgpu.attend_record.

    `getRowsAttendLayout` (KVGPU.h) says who does what: each of the first
    T / 16 warps (at most all) attends 16 or more tokens with two f16
    `mma.sync` products (q and the probabilities split in f16 hi + lo parts;
    K and V exact) fed by `ldmatrix`, its softmax in registers, and the
    warps' partials meet the incoming state at one barrier as in
    attend_record. The scratch holds q's split B fragments, the
    probabilities between the products, and the partials. `warp_states`:
    as attend_record's (warps without tokens keep their rows).
  }];
  let arguments = (ins Arg<KVGPU_SharedMemRef, "", [MemRead]>:$q,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$keys,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$values,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$m,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$l,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$acc,
                       I32:$from, I32:$valid, F32:$softmax_scale,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$new_m,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$new_l,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$new_acc,
                       Arg<KVGPU_SharedMemRef, "", [MemRead, MemWrite]>:$scratch,
                       UnitAttr:$warp_states);
  let assemblyFormat = [{
    `q` $q `keys` $keys `values` $values
    `state` $m `,` $l `,` $acc `from` $from `valid` $valid
    `softmax_scale` $softmax_scale
    `into` $new_m `,` $new_l `,` $new_acc `scratch` $scratch
    (`warp_states` $warp_states^)? attr-dict `:`
    type($q) `,` type($keys) `,` type($values) `,` type($m) `,` type($l) `,`
    type($acc) `,` type($new_m) `,` type($new_l) `,` type($new_acc) `,`
    type($scratch)
  }];
  let hasVerifier = 1;
}

def KVGPU_AttendLatentOp : KVGPU_Op<"attend_latent"> {
  let summary = "one online-softmax step over an MLA record's latent, in registers";
  let description = [{
    ```mlir
    kvgpu.attend_latent q %q, %q_rope
        latent %codes bits 4 scales %scale, %zero, %token_scale rope %rope
        state %m, %l, %acc valid %n softmax_scale %s
        into %m2, %l2, %acc2 scratch %scratch : ...
    ```
    `kvt.attend` over one MLA record block, whose latent is both K and V:
    latent[t, c] = (code[t, c] scale[c] + zero[c]) token_scale[t] from the
    token-major [G, R * bits / 8] byte field `codes` (low nibble = even
    channel), and score[h, t] = q[h] . latent[t] + q_rope[h] . rope[t] with
    the fp16 rope keys `rope` [G, E]. With `swizzled`, both `codes` and
    `rope` rows were stored through `kvgpu::rowSwizzle` (kvgpu.copy_in's
    `swizzled_rows`). With the incoming state (`m`, `l` [H],
    `acc` [H, R], f32), the rotated queries `q` [H, R] and `q_rope` [H, E]
    (f32; `q_rope` may be f16), it writes the state after the block's first
    `valid` tokens to `new_m`, `new_l`, `new_acc`, which may be the incoming
    state's own buffers (as kvgpu.attend_record's).

    `getLatentAttendLayout` (KVGPU.h) says who does what: each warp takes
    the scores of its own tokens (f16 `mma.sync`, the codes masked in place
    as f16 subnormals, q * scale split in two f16 parts), the warps meet
    once for the block's max, and each warp then takes the weighted sums of
    its own channels over all tokens (f16 `mma.sync`, the codes as the
    scores' subnormals, the probabilities times the token scale in two f16
    parts),
    updating its part of the state in place: no merge of partial states.
    The scratch holds the split B fragments of `q * scale` and `q_rope`,
    the warps' maxima and sums, and the probabilities between the products.
    Like every op here, its writes need a kvgpu.barrier before other threads
    read them.
  }];
  let arguments = (ins Arg<KVGPU_SharedMemRef, "", [MemRead]>:$q,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$q_rope,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$codes,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$scale,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$zero,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$token_scale,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$rope,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$m,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$l,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$acc,
                       I32:$valid, F32:$softmax_scale,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$new_m,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$new_l,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$new_acc,
                       Arg<KVGPU_SharedMemRef, "", [MemRead, MemWrite]>:$scratch,
                       ConfinedAttr<I32Attr, [IntMinValue<1>, IntMaxValue<8>]>:$bits,
                       UnitAttr:$swizzled);
  let assemblyFormat = [{
    `q` $q `,` $q_rope
    `latent` $codes `bits` $bits `scales` $scale `,` $zero `,` $token_scale
    `rope` $rope (`swizzled` $swizzled^)?
    `state` $m `,` $l `,` $acc `valid` $valid `softmax_scale` $softmax_scale
    `into` $new_m `,` $new_l `,` $new_acc `scratch` $scratch attr-dict `:`
    type($q) `,` type($q_rope) `,` type($codes) `,` type($scale) `,`
    type($zero) `,` type($token_scale) `,` type($rope) `,` type($m) `,`
    type($l) `,` type($acc) `,` type($new_m) `,` type($new_l) `,`
    type($new_acc) `,` type($scratch)
  }];
  let hasVerifier = 1;
}

def KVGPU_SinkhornOp : KVGPU_Op<"sinkhorn"> {
  let summary = "Sinkhorn normalization of a tile held in registers";
  let description = [{
    docs/kvarn.md, "Variance normalization", on the logical `[R, C]` tile
    read from `input` (`input[r, c]`, or `input[c, r]` with `transpose`), in
    the arithmetic of include/kvarn/Reference/TileArithmetic.h: alternating
    column and row steps of the linear-domain scales for `iters` iterations,
    keeping the iterate of least imbalance; writes the best iterate's
    `col_scale[c]` and `row_scale[r]`.

    The tile is read from shared memory once and held in registers across
    all iterations: the CTA's threads form a grid over the buffer, each
    thread holds a fixed block of elements, and the standard deviations are
    reduced with shuffles inside a warp and through `scratch` across warps
    (`getRegisterTileScratchFloats` floats: regions of per-warp partials, a
    row of totals, and each thread's private slots for its scales).
    `getRegisterTileGrid` says whether a tile fits the registers.
  }];
  let arguments = (ins Arg<KVGPU_SharedMemRef, "", [MemRead]>:$input,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$col_scale,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$row_scale,
                       Arg<KVGPU_SharedMemRef, "", [MemRead, MemWrite]>:$scratch,
                       UnitAttr:$transpose,
                       ConfinedAttr<I64Attr, [IntNonNegative]>:$iters);
  let assemblyFormat = [{
    $input (`transpose` $transpose^)? `iters` $iters `into` $col_scale `,` $row_scale
    `scratch` $scratch attr-dict `:` type($input) `,` type($col_scale) `,`
    type($row_scale) `,` type($scratch)
  }];
  let hasVerifier = 1;
}

def KVGPU_QuantizeTileOp : KVGPU_Op<"quantize_tile"> {
  let summary = "asymmetric per-row quantization of a tile held in registers";
  let description = [{
    docs/kvarn.md, "Quantization", on the logical `[R, C]` tile read from
    `input` (transposed with `transpose`):
    `balanced = M * (1 / col_scale[c]) * (1 / row_scale[r])` (correctly
    rounded reciprocals), per row `lo`, `hi`,
    `step = max((hi - lo) / qmax, floor)`,
    `codes[r, c] = clamp(rni((balanced - lo) * (1 / step)), 0, qmax)`,
    `scale[r] = f16(row_scale[r] * step)`, `zero[r] = f16(row_scale[r] * lo)`,
    `other[c] = f16(col_scale[c])`. The same thread grid as
    `kvgpu.sinkhorn`; min and max are reduced together.
  }];
  let arguments = (ins Arg<KVGPU_SharedMemRef, "", [MemRead]>:$input,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$col_scale,
                       Arg<KVGPU_SharedMemRef, "", [MemRead]>:$row_scale,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$codes,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$scale,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$zero,
                       Arg<KVGPU_SharedMemRef, "", [MemWrite]>:$other,
                       Arg<KVGPU_SharedMemRef, "", [MemRead, MemWrite]>:$scratch,
                       UnitAttr:$transpose,
                       ConfinedAttr<I32Attr, [IntMinValue<1>, IntMaxValue<8>]>:$bits);
  let assemblyFormat = [{
    $input (`transpose` $transpose^)? `scales` $col_scale `,` $row_scale `bits` $bits
    `into` $codes `,` $scale `,` $zero `,` $other `scratch` $scratch attr-dict
    `:` type($input) `,` type($col_scale) `,` type($row_scale) `,` type($codes)
    `,` type($scale) `,` type($zero) `,` type($other) `,` type($scratch)
  }];
  let hasVerifier = 1;
}

#endif // KVARN_DIALECT_KVGPU_TD
