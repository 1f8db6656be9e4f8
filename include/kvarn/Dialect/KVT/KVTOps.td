//===- KVTOps.td --- kvt operations ------------------------*- tablegen -*-===//
#ifndef KVARN_DIALECT_KVT_OPS_TD
#define KVARN_DIALECT_KVT_OPS_TD

include "KVTDialect.td"
include "KVTTypes.td"
include "KVTAttrs.td"
include "mlir/Interfaces/InferTypeOpInterface.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

// `TileType::get(shape-of-$_self's leading dim, f32)`: the per-row vectors
// (softmax max and sum) that go with a [H, D] tile.
class RowVectorOf<string from, string to, string elt>
    : TypesMatchWith<to # " is a per-row vector of " # from, from, to,
        "::kvarn::kvt::TileType::get({::llvm::cast<::kvarn::kvt::TileType>($_self).getDim(0)}, " # elt # ")">;

// `TileType::get({dim 1 of $_self}, elt)`: the per-column vector of a tile.
class ColVectorOf<string from, string to, string elt>
    : TypesMatchWith<to # " is a per-column vector of " # from, from, to,
        "::kvarn::kvt::TileType::get({::llvm::cast<::kvarn::kvt::TileType>($_self).getDim(1)}, " # elt # ")">;

defvar F16Of = "::mlir::Float16Type::get($_self.getContext())";
defvar F32Of = "::mlir::Float32Type::get($_self.getContext())";
defvar I32Of = "::mlir::IntegerType::get($_self.getContext(), 32)";

//===----------------------------------------------------------------------===//
// Program and memory
//===----------------------------------------------------------------------===//

def KVT_ProgramIdOp : KVT_Op<"program_id", [Pure]> {
  let summary = "index of this program along a grid axis";
  let arguments = (ins ConfinedAttr<I32Attr, [IntNonNegative, IntMaxValue<2>]>:$axis);
  let results = (outs I32:$result);
  let assemblyFormat = "$axis attr-dict";
}

def KVT_NumProgramsOp : KVT_Op<"num_programs", [Pure]> {
  let summary = "number of programs along a grid axis";
  let arguments = (ins ConfinedAttr<I32Attr, [IntNonNegative, IntMaxValue<2>]>:$axis);
  let results = (outs I32:$result);
  let assemblyFormat = "$axis attr-dict";
}

def KVT_LoadOp : KVT_Op<"load", [
    TypesMatchWith<"result is the pointee", "ptr", "result",
                   "::llvm::cast<::kvarn::kvt::PointerType>($_self).getPointeeType()">]> {
  let summary = "load one scalar from global memory";
  let description = [{
    `%x = kvt.load %p[%i] : !kvt.ptr<i32>, i32` reads element `%i` of `%p`.
  }];
  let arguments = (ins Arg<KVT_PointerType, "", [MemRead]>:$ptr,
                       AnyTypeOf<[I32, I64]>:$index);
  let results = (outs AnyTypeOf<[F16, BF16, F32, I8, I32, I64]>:$result);
  let assemblyFormat = "$ptr `[` $index `]` attr-dict `:` qualified(type($ptr)) `,` type($index)";
}

def KVT_StoreOp : KVT_Op<"store", [
    TypesMatchWith<"value is the pointee", "ptr", "value",
                   "::llvm::cast<::kvarn::kvt::PointerType>($_self).getPointeeType()">]> {
  let summary = "store one scalar to global memory";
  let arguments = (ins AnyTypeOf<[F16, BF16, F32, I8, I32, I64]>:$value,
                       Arg<KVT_PointerType, "", [MemWrite]>:$ptr,
                       AnyTypeOf<[I32, I64]>:$index);
  let assemblyFormat = "$value `,` $ptr `[` $index `]` attr-dict `:` qualified(type($ptr)) `,` type($index)";
}

def KVT_LoadTileOp : KVT_Op<"load_tile"> {
  let summary = "load a strided tile from global memory";
  let description = [{
    Element `(i, j)` of the result is `ptr[offset + i * strides[0] + j * strides[1]]`
    (one stride per dimension, in elements).

    ```mlir
    %k = kvt.load_tile %pool[%base] strides(%row, %c1) : !kvt.ptr<f16> -> !kvt.tile<128x128xf16>
    ```
  }];
  let arguments = (ins Arg<KVT_PointerType, "", [MemRead]>:$ptr, I64:$offset,
                       Variadic<I64>:$strides);
  let results = (outs KVT_TileType:$result);
  let assemblyFormat = [{
    $ptr `[` $offset `]` `strides` `(` $strides `)` attr-dict `:`
    qualified(type($ptr)) `->` qualified(type($result))
  }];
  let hasVerifier = 1;
}

def KVT_StoreTileOp : KVT_Op<"store_tile"> {
  let summary = "store a tile to global memory with strides";
  let arguments = (ins KVT_TileType:$value,
                       Arg<KVT_PointerType, "", [MemWrite]>:$ptr, I64:$offset,
                       Variadic<I64>:$strides);
  let assemblyFormat = [{
    $value `,` $ptr `[` $offset `]` `strides` `(` $strides `)` attr-dict `:`
    qualified(type($value)) `,` qualified(type($ptr))
  }];
  let hasVerifier = 1;
}

def KVT_PrefetchOp : KVT_Op<"prefetch"> {
  let summary = "hint: bring bytes of global memory into the L2 cache";
  let description = [{
    Asks for the `bytes` bytes from element `offset` of `ptr` to be brought
    into the L2 cache, so that a later load of them waits less; it changes
    no value. With `rows` and `stride`, `rows` such ranges, the next
    starting `stride` elements after the last (one head's rows of a pool
    block, every KV head's rows between them). Every range must lie inside
    the buffer, as a load's would. Declared with unknown memory effects so
    that it is never erased as dead (an op that only reads and has no
    result would be).

    ```mlir
    kvt.prefetch %cache[%next_record] bytes 13824 : !kvt.ptr<i8>
    kvt.prefetch %pool_k[%first_row] bytes 256 rows 128 stride %token_stride : !kvt.ptr<f16>
    ```
  }];
  let arguments = (ins KVT_PointerType:$ptr, I64:$offset,
                       ConfinedAttr<I64Attr, [IntPositive]>:$bytes,
                       OptionalAttr<ConfinedAttr<I64Attr, [IntPositive]>>:$rows,
                       Optional<I64>:$stride);
  let assemblyFormat = "$ptr `[` $offset `]` `bytes` $bytes (`rows` $rows^ `stride` $stride)? attr-dict `:` qualified(type($ptr))";
  let hasVerifier = 1;
}

def KVT_LaunchDependentsOp : KVT_Op<"launch_dependents"> {
  let summary = "let the kernel launched next on the stream start early";
  let description = [{
    Tells the GPU that the next kernel on the stream, where it was launched
    as a programmatic dependent (its metadata's `launch_pdl`: it waits with
    `kvt.grid_dependency_wait` before reading what this kernel writes), may
    be scheduled once every program of this kernel has passed this point,
    rather than when this kernel ends. It changes no value and orders
    nothing: the dependent still sees this kernel's writes only after its
    wait. A no-op on chips before sm_90.

    ```mlir
    kvt.launch_dependents
    ```
  }];
  let assemblyFormat = "attr-dict";
}

def KVT_GridDependencyWaitOp : KVT_Op<"grid_dependency_wait"> {
  let summary = "wait for the kernels this one depends on to finish";
  let description = [{
    Blocks until the kernels launched before this one on the stream have
    finished and their memory writes are visible. A kernel that holds one
    is launched as a programmatic dependent (its metadata's `launch_pdl`),
    so that it may start while the kernel before it still runs: only what
    follows the wait may read that kernel's results. Launched otherwise, or
    on chips before sm_90, it waits for nothing (the stream has already).

    ```mlir
    kvt.grid_dependency_wait
    ```
  }];
  let assemblyFormat = "attr-dict";
}

def KVT_SplitPlanOp : KVT_Op<"split_plan"> {
  let summary = "the chunk of a batch's blocks one program of a split decode attends";
  let description = [{
    Reads the `batch` context lengths of `seq_lens` and cuts every request's
    blocks (of `block_tokens` tokens, from the one holding its sliding
    window's first token, `window` <= 0: none) into chunks of one size C
    chosen from the whole batch, at most `max_chunks` a request, numbered
    request by request; program `program` of the `slots` programs takes
    chunk `program`. Returns C (`chunk_blocks`), the chunk's `request` (-1
    where the program takes none) and its index `chunk` within the request
    (blocks [chunk C, min((chunk + 1) C, n)) of its n). The rule, and its
    CPU definition, is `kvarn::splitPlan` (include/kvarn/Support/SplitPlan.h):
    with equal lengths it is the split of each request into slots / batch
    parts; with one long request among short ones, the long one gets more
    programs. The results are the same in every thread of a program.
    `block_tokens` and `max_chunks` are in [1, 2^31) (the plan is i32
    arithmetic on the GPU).

    ```mlir
    %c, %req, %k = kvt.split_plan %seq_lens[%batch] window %window program %p of %slots block_tokens 128 max_chunks 64 : !kvt.ptr<i32>
    ```
  }];
  let arguments = (ins Arg<KVT_PointerType, "", [MemRead]>:$seq_lens, I32:$batch,
                       I32:$window, I32:$program, I32:$slots,
                       I64Attr:$block_tokens, I64Attr:$max_chunks);
  let results = (outs I32:$chunk_blocks, I32:$request, I32:$chunk);
  let assemblyFormat = [{
    $seq_lens `[` $batch `]` `window` $window `program` $program `of` $slots
    `block_tokens` $block_tokens `max_chunks` $max_chunks attr-dict `:`
    qualified(type($seq_lens))
  }];
  let hasVerifier = 1;
}

def KVT_LoadFieldOp : KVT_Op<"load_field"> {
  let summary = "load one field of a KVarN record";
  let description = [{
    Reads field `field` of the record that starts at byte `offset` of
    `cache`, with the shape the enclosing kernel's `kvt.spec` gives it:
    `k_codes` is `[D, G*kbits/8] i8`, `k_scale`/`k_zero`/`v_channel_scale`
    `[D] f16`, `k_token_scale`/`v_scale`/`v_zero` `[G] f16`, `v_codes`
    `[G, D*vbits/8] i8`. In a preset with e4m3 scales the four scale
    fields read as f32, decoded (e4m3 byte times 2^ the field's shared
    exponent, docs/kvarn.md "Scale formats"); store_field takes them as f32
    and encodes them (the values must be ones that quantize with
    `e4m3_scales` produces).
  }];
  let arguments = (ins Arg<KVT_PointerType, "", [MemRead]>:$cache, I64:$offset,
                       KVT_RecordFieldAttr:$field);
  let results = (outs KVT_TileType:$result);
  let assemblyFormat = "$cache `[` $offset `]` $field attr-dict `:` qualified(type($cache)) `->` qualified(type($result))";
  let hasVerifier = 1;
}

def KVT_StoreFieldOp : KVT_Op<"store_field"> {
  let summary = "store one field of a KVarN record";
  let arguments = (ins KVT_TileType:$value,
                       Arg<KVT_PointerType, "", [MemWrite]>:$cache, I64:$offset,
                       KVT_RecordFieldAttr:$field);
  let assemblyFormat = "$value `,` $cache `[` $offset `]` $field attr-dict `:` qualified(type($value)) `,` qualified(type($cache))";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Elementwise and layout
//===----------------------------------------------------------------------===//

def KVT_SplatOp : KVT_Op<"splat", [Pure,
    TypesMatchWith<"value is the element type", "result", "value",
                   "::llvm::cast<::kvarn::kvt::TileType>($_self).getElementType()">]> {
  let summary = "a tile with every element equal to a scalar";
  let arguments = (ins AnyTypeOf<[F16, BF16, F32, I8, I32]>:$value);
  let results = (outs KVT_TileType:$result);
  let assemblyFormat = "$value attr-dict `:` qualified(type($result))";
}

def KVT_ConvertOp : KVT_Op<"convert", [Pure]> {
  let summary = "convert a tile's elements (round to nearest even when narrowing)";
  let arguments = (ins KVT_TileType:$input);
  let results = (outs KVT_TileType:$result);
  let assemblyFormat = "$input attr-dict `:` qualified(type($input)) `->` qualified(type($result))";
  let hasVerifier = 1;
  let hasFolder = 1;
}

def KVT_TransposeOp : KVT_Op<"transpose", [Pure,
    InferTypeOpAdaptor]> {
  let summary = "swap the two dimensions of a rank-2 tile";
  let arguments = (ins KVT_TileType:$input);
  let results = (outs KVT_TileType:$result);
  let assemblyFormat = "$input attr-dict `:` qualified(type($input))";
  let hasFolder = 1;
}

//===----------------------------------------------------------------------===//
// KVarN primitives
//===----------------------------------------------------------------------===//

def KVT_RotateOp : KVT_Op<"rotate", [Pure, SameOperandsAndResultType]> {
  let summary = "Hadamard rotation of every row (docs/kvarn.md#rotation)";
  let description = [{
    Multiplies every row (the last dimension, of length D) by the orthonormal
    Hadamard matrix H of order D, or by H^T with `inverse`. H is kvarn's
    rotation for that head_dim (Sylvester for powers of two).
  }];
  let arguments = (ins KVT_TileType:$input, UnitAttr:$inverse);
  let results = (outs KVT_TileType:$result);
  let assemblyFormat = "$input (`inverse` $inverse^)? attr-dict `:` qualified(type($input))";
  let hasVerifier = 1;
}

def KVT_NormalizeOp : KVT_Op<"normalize", [Pure,
    InferTypeOpAdaptor]> {
  let summary = "Sinkhorn-like variance normalization with the best iterate kept";
  let description = [{
    docs/kvarn.md, "Variance normalization", on a tile M[R, C] (rows are
    quantization groups):
    returns the column scales `s_col` [C] and row scales `s_row` [R] of the
    best of `iters` column-then-row iterations (the untouched tile included).
  }];
  let arguments = (ins KVT_TileType:$input,
                       ConfinedAttr<I32Attr, [IntNonNegative, IntMaxValue<64>]>:$iters);
  let results = (outs KVT_TileType:$colScale, KVT_TileType:$rowScale);
  let assemblyFormat = "$input `iters` `=` $iters attr-dict `:` qualified(type($input))";
}

def KVT_QuantizeOp : KVT_Op<"quantize", [Pure,
    ColVectorOf<"input", "colScale", F32Of>, RowVectorOf<"input", "rowScale", F32Of>,
    InferTypeOpAdaptor]> {
  let summary = "asymmetric round-to-nearest per row (docs/kvarn.md#quantization)";
  let description = [{
    Quantizes `input / s_col[None, :] / s_row[:, None]` per row to `bits`
    bits. Results: the codes [R, C] (i8, unpacked), the absorbed row scale
    and zero [R] f16, and the column scale [C] f16.

    With `e4m3_scales` (presets with e4m3 scales) the codes are computed
    against the stored values: the column scale rounded to its e4m3 field,
    the step rounded to e4m3 and its grid centred on the row's range
    (kvarn::quantizeTileWithScales); the absorbed scale and the column
    scale are then f32 tiles of those exact values.
  }];
  let arguments = (ins KVT_TileType:$input, KVT_TileType:$colScale,
                       KVT_TileType:$rowScale,
                       ConfinedAttr<I32Attr, [IntMinValue<1>, IntMaxValue<8>]>:$bits,
                       UnitAttr:$e4m3_scales);
  let results = (outs KVT_TileType:$codes, KVT_TileType:$scale,
                      KVT_TileType:$zero, KVT_TileType:$otherScale);
  let assemblyFormat = [{
    $input `,` $colScale `,` $rowScale `bits` `=` $bits (`e4m3_scales` $e4m3_scales^)?
    attr-dict `:` qualified(type($input))
  }];
}

def KVT_DequantizeOp : KVT_Op<"dequantize", [Pure,
    RowVectorOf<"codes", "zero", F16Of>, InferTypeOpAdaptor]> {
  let summary = "(code * scale[r] + zero[r]) * other[c], in fp32";
  let description = [{
    `scale` [R] and `other_scale` [C] are f16, or f32 (the decoded scales of
    a preset with e4m3 scales, printed as a trailing `scales f32`); `zero`
    is f16.
  }];
  let arguments = (ins KVT_TileType:$codes, KVT_TileType:$scale,
                       KVT_TileType:$zero, KVT_TileType:$otherScale);
  let results = (outs KVT_TileType:$result);
  let assemblyFormat = [{
    $codes `,` $scale `,` $zero `,` $otherScale attr-dict `:` qualified(type($codes))
    custom<ScaleElementType>(ref(type($codes)), type($scale), type($otherScale))
  }];
}

def KVT_PackOp : KVT_Op<"pack", [Pure,
    InferTypeOpAdaptor]> {
  let summary = "pack each row's codes, low bits first";
  let description = [{
    Code `c` of a row goes to byte `c / (8 / bits)` at bit shift
    `(c mod (8 / bits)) * bits` (docs/kvarn.md, "Record layout").
  }];
  let arguments = (ins KVT_TileType:$codes,
                       ConfinedAttr<I32Attr, [IntMinValue<1>, IntMaxValue<8>]>:$bits);
  let results = (outs KVT_TileType:$result);
  let assemblyFormat = "$codes `bits` `=` $bits attr-dict `:` qualified(type($codes))";
  let hasFolder = 1;
}

def KVT_UnpackOp : KVT_Op<"unpack", [Pure,
    InferTypeOpAdaptor]> {
  let summary = "unpack each row's codes (the inverse of kvt.pack)";
  let arguments = (ins KVT_TileType:$packed,
                       ConfinedAttr<I32Attr, [IntMinValue<1>, IntMaxValue<8>]>:$bits);
  let results = (outs KVT_TileType:$result);
  let assemblyFormat = "$packed `bits` `=` $bits attr-dict `:` qualified(type($packed))";
  let hasFolder = 1;
}

//===----------------------------------------------------------------------===//
// Attention
//===----------------------------------------------------------------------===//

def KVT_AttendOp : KVT_Op<"attend", [Pure, AttrSizedOperandSegments,
    AllTypesMatch<["k", "v"]>, AllTypesMatch<["q", "acc", "newAcc"]>,
    RowVectorOf<"q", "m", F32Of>, RowVectorOf<"q", "l", F32Of>,
    RowVectorOf<"q", "newM", F32Of>, RowVectorOf<"q", "newL", F32Of>,
    RowVectorOf<"q", "valid", I32Of>,
    OptionalTypesMatchWith<"from is a per-row vector of q", "q", "from",
        "::kvarn::kvt::TileType::get({::llvm::cast<::kvarn::kvt::TileType>($_self).getDim(0)}, "
        "::mlir::IntegerType::get($_self.getContext(), 32))">]> {
  let summary = "one online-softmax step over a block of keys and values";
  let description = [{
    For every query row h of `q` [H, D] (rotated, f32) and the first
    `valid[h]` rows of `k`, `v` [G, D]: scores `scale * q[h] . k[t]`, then the
    running max `m`, sum `l` and accumulator `acc` are updated as in
    flash-attention. With `from` (an i32 per-row vector, like `valid`), row
    h sees only rows from[h] <= t < valid[h] (a sliding window's lower
    edge). Rows that see no key are unchanged.

    With `rope(q_rope, k_rope)` (MLA, docs/kvarn.md "MLA records") every
    score gains a second dot product over other channels, which the values
    do not have: `scale * (q[h] . k[t] + q_rope[h] . k_rope[t])`, q_rope
    [H, E] and k_rope [G, E] f32.
  }];
  let arguments = (ins KVT_TileType:$q, KVT_TileType:$k, KVT_TileType:$v,
                       KVT_TileType:$m, KVT_TileType:$l, KVT_TileType:$acc,
                       KVT_TileType:$valid,
                       Optional<KVT_TileType>:$from,
                       Optional<KVT_TileType>:$qRope,
                       Optional<KVT_TileType>:$kRope, F32:$scale);
  let results = (outs KVT_TileType:$newM, KVT_TileType:$newL,
                      KVT_TileType:$newAcc);
  let assemblyFormat = [{
    $q `,` $k `,` $v `state` `(` $m `,` $l `,` $acc `)` `valid` $valid
    (`from` $from^)? (`rope` `(` $qRope^ `,` $kRope `)`)? `scale` $scale
    attr-dict `:` qualified(type($q)) `,` qualified(type($k))
    (`,` qualified(type($qRope))^ `,` qualified(type($kRope)))?
  }];
  let hasVerifier = 1;
}

def KVT_AttendFinishOp : KVT_Op<"attend_finish", [Pure,
    AllTypesMatch<["acc", "out"]>, RowVectorOf<"acc", "m", F32Of>,
    RowVectorOf<"acc", "l", F32Of>, RowVectorOf<"acc", "lse", F32Of>]> {
  let summary = "the attention output acc / l and its log-sum-exp m + log(l)";
  let description = [{
    Rows that saw no key (l = 0) give a zero output and an lse of -inf.
  }];
  let arguments = (ins KVT_TileType:$m, KVT_TileType:$l, KVT_TileType:$acc);
  let results = (outs KVT_TileType:$out, KVT_TileType:$lse);
  let assemblyFormat = "$m `,` $l `,` $acc attr-dict `:` qualified(type($acc))";
}

def KVT_MergeOp : KVT_Op<"merge", [Pure,
    InferTypeOpAdaptor]> {
  let summary = "combine split-K partial outputs by their log-sum-exp weights";
  let description = [{
    `parts` [S, H, D] and `lses` [S, H] hold S partial attention outputs;
    the first `count` are combined: out[h] = sum_s w[s, h] parts[s, h] with
    w = softmax over s of lses[s, h]. Splits with lse = -inf weigh nothing.
  }];
  let arguments = (ins KVT_TileType:$parts, KVT_TileType:$lses, I32:$count);
  let results = (outs KVT_TileType:$result);
  let assemblyFormat = "$parts `,` $lses `count` $count attr-dict `:` qualified(type($parts)) `,` qualified(type($lses))";
}

#endif // KVARN_DIALECT_KVT_OPS_TD
