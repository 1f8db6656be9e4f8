//===- KVGPU.h - the kvgpu dialect ------------------------------*- C++ -*-===//
//
// KVarN tile work distributed over a CTA (see KVGPU.td beside this header).
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_DIALECT_KVGPU_KVGPU_H
#define KVARN_DIALECT_KVGPU_KVGPU_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "mlir/Interfaces/InferTypeOpInterface.h"
#include "mlir/Dialect/LLVMIR/LLVMTypes.h"

#include <optional>

namespace kvarn::kvgpu {
/// Threads of a warp: the one spelling of it for the layouts here and the
/// lowerings that emit them.
constexpr int64_t kWarpSize = 32;
/// Bytes a thread moves per access of copy_in / copy_out (ld.global.v4.b32,
/// 16-byte cp.async); shared buffers are aligned to it.
constexpr int64_t kVectorBytes = 16;
/// A statically shaped, identity-layout memref in the workgroup address space.
bool isSharedMemRef(mlir::Type type);
/// `!llvm.ptr<1>`.
bool isGlobalPointer(mlir::Type type);
/// The memref type of a shared-memory tile buffer.
mlir::MemRefType getSharedMemRefType(llvm::ArrayRef<int64_t> shape,
                                     mlir::Type elementType);
/// Attribute names on kernels.
inline constexpr llvm::StringLiteral kSharedBytesAttrName = "kvgpu.shared_bytes";
inline constexpr llvm::StringLiteral kNumWarpsAttrName = "kvgpu.num_warps";
/// Programs (grid points along axis 0) one CTA runs, num_warps * 32 / P
/// threads each (whole warps or a part of one: threadsPerProgram,
/// LaunchPolicy.h); absent means 1. The launch has ceil(grid.x / P) CTAs
/// along x.
inline constexpr llvm::StringLiteral kProgramsPerCtaAttrName =
    "kvgpu.programs_per_cta";
/// A kernel that waits on the kernel before it (griddepcontrol.wait) and
/// is launched as its programmatic dependent (the metadata's launch_pdl).
inline constexpr llvm::StringLiteral kLaunchPdlAttrName = "kvgpu.launch_pdl";
/// Warps per program of the kernel enclosing `op` (1 where a program is a
/// part of a warp).
int64_t getWarpsPerProgram(mlir::Operation *op);
/// Lanes of each warp one program holds: 32, or fewer where programs share
/// a warp (kernels of register rows, kvgpu.fragment_*).
int64_t getLanesPerProgram(mlir::Operation *op);

/// How kvgpu.sinkhorn and kvgpu.quantize_tile spread a [b0, b1] shared
/// buffer over a CTA's threads: t1 threads (a divisor of 32, consecutive
/// lanes) along dimension 1, t0 = threads / t1 along dimension 0; thread t
/// holds elements (t / t1 + i * t0, t % t1 + j * t1) for i < n0, j < n1.
struct RegisterTileGrid {
  int64_t t0, t1, n0, n1;
};
/// Most elements one thread holds (up to 256 threads have 255 registers
/// each; 512 threads 128).
inline int64_t maxRegisterTileElements(int64_t threads) {
  return threads > 256 ? 64 : 128;
}
/// The grid for a [b0, b1] buffer and `threads` threads, or nothing when the
/// buffer does not divide evenly or would not fit the registers.
std::optional<RegisterTileGrid> getRegisterTileGrid(int64_t b0, int64_t b1,
                                                    int64_t threads);
/// Floats of the scratch buffer these ops need for a [b0, b1] tile: two
/// alternating regions of one row of partials per warp (two reductions of
/// b1 values, or four), one row of cross-warp totals, then each thread's
/// private slots for its n0 + n1 per-index values (state kept out of the
/// registers).
int64_t getRegisterTileScratchFloats(int64_t b0, int64_t b1, int64_t threads);

/// Threads per CTA of the kernel enclosing `op` (its kvgpu.num_warps; 4
/// warps outside a kernel).
int64_t getNumThreads(mlir::Operation *op);

/// The tensor-core strategy of kvgpu.packed_matmul: the product is D[n, h] =
/// sum_k code[k, n] a[k, h] as bf16 `mma.sync` m16n8k16 with fp32
/// accumulators (M: code columns, N: heads padded to 8, K: rows). Warp w
/// takes the 16 x columnTiles columns from w * 16 * columnTiles; lane
/// (g = lane / 4, t = lane % 4) holds the run of 2 x columnTiles adjacent
/// columns from g * 2 * columnTiles (one load of `runBits` bits a row), m-rows
/// g and g + 8 of column tile i being columns 2i and 2i + 1 of its run. Slot
/// 2t + e + 8f of a k tile (e, f in {0, 1}) reads row t + 4e + 8f of it, so
/// the lanes of one load read adjacent rows (fewer bank conflicts). Codes
/// become bf16 through the 0x4300 magic number (exact below 128): the two
/// rows of a register's pair interleaved by halves (one prmt per 16 bits),
/// then one kvgpu.biased_code_pair and one bf16x2 fma (less 128) a pair; `a` is
/// split in kMmaSplitParts bf16 parts, one MMA each, accumulating into the
/// same fp32 sums. Every warp needs all of `a`'s B fragments, so the CTA
/// splits them once, into the scratch buffer in the order a lane reads
/// them (one 16-byte load per k tile and head tile), before one barrier;
/// then every warp owns its columns: no shuffles, no further barrier.
///
/// With the codes stored transposed ([N, K * bits / 8], a column's codes
/// adjacent: MLA's token-major latent as the scores' operand) the columns
/// are split the same way, and the k tiles go in groups of P = pieceTiles:
/// slot 2t + e + 8f of k tile i is row 16 P (i / P) + 4 P t + 4 (i mod P)
/// + 2e + f (f16 rows: + 2f + e, their pairs as stored), so that a
/// register's pair, codes 0 and 2 or 1 and 3 of a group, comes out of one
/// spread of the group's bits (one prmt) by one lop3; a lane's rows of a
/// group are one piece of 4 P codes of
/// each of its columns (`runBits` = 4 P bits: 16 bytes at 4 bits, one
/// vector load where the rows keep that alignment). The rows of a record
/// are a multiple of 128 bytes apart, so the 8 lanes g of one load read
/// the same banks; 16-byte pieces take 8 wavefronts for 512 bytes where
/// 2-byte ones took 8 for 64. P is the largest power of two dividing the
/// round's tiles (getMmaSplitRoundTiles) whose piece fits 16 bytes (so a
/// piece is 8 or 16 bits or whole words); the k loop
/// takes a group an iteration. f16 rows (bits 16, transposed only) are the
/// A registers as they are, with `a` split in f16 parts and f16 MMAs.
struct PackedMatmulMmaTiling {
  int64_t columnTiles, headTiles, kTiles, runBits;
  bool transposed = false;
  int64_t pieceTiles = 1;
};
/// bf16 parts `a` is split in: hi + lo carry 16 bits, each value within
/// 2^-17 of itself, so a dot product's error stays ~1e-5 of its terms'
/// magnitude, far under decode's 4e-4 bound (where the output's own
/// rounding to fp16 already costs ~1.5e-4). A third part (fp32's 24 bits)
/// cost 12 more ALU instructions per register pair in the k loop, which is
/// what bounds decode's block loop (instruction issue, not tensor cores).
constexpr int kMmaSplitParts = 2;
/// K tiles whose B fragments are split at a time: 8 (head_dim 128's K);
/// longer K runs in rounds, so that the scratch stays 4 KiB a head tile
/// (at head_dim 256, 8 KiB took decode past 4 CTAs' shared memory).
constexpr int64_t getMmaSplitRoundTiles(const PackedMatmulMmaTiling &t) {
  return t.kTiles % 8 == 0 ? 8 : t.kTiles;
}
/// 32-bit words of the split B fragments of one round: for each of its k
/// tiles, each head tile and lane, the two registers of each part.
constexpr int64_t getMmaSplitScratchWords(const PackedMatmulMmaTiling &t) {
  return getMmaSplitRoundTiles(t) * t.headTiles * kWarpSize * 2 *
         kMmaSplitParts;
}

/// How kvgpu.packed_matmul spreads out[h, n] = sum_k a[k, h] code[k, n] (H
/// rows, K terms, N columns of `bits`-bit codes) over a CTA: the one
/// computation the tile lowering sizes the scratch with and the NVVM
/// lowering emits. Tensor cores (`mma`, above) when the shape tiles for
/// them; otherwise the fma strategy below.
///
/// fma: a thread holds a piece of `pieceBits` bits of a codes row: the
/// `codes` consecutive columns of its column group g, H x codes sums. The
/// N / codes groups go to `laneGroups` consecutive lanes (lane % laneGroups)
/// of `warpGroups` warps (warp % warpGroups); the lanes and warps sharing a
/// group split K: thread split s = (warp / warpGroups) * laneSplits +
/// lane / laneGroups takes rows k = i * splits + s, i < rowsPerThread
/// (interleaved: the lanes of a warp read adjacent rows, in different
/// banks). Sums meet by xor shuffles across lanes, then across warps: the
/// first warp split writes `out`, the others their partials to
/// `scratchFloats` floats of shared memory ([warpSplits - 1, H, N]), added
/// to `out` in split order.
struct PackedMatmulLayout {
  std::optional<PackedMatmulMmaTiling> mma;
  int64_t pieceBits = 0, codes = 0, groups = 0;
  int64_t laneGroups = 0, laneSplits = 0, warpGroups = 0, warpSplits = 0;
  int64_t splits = 0, rowsPerThread = 0, scratchFloats = 0;
};
/// The layout, or nothing when the shape does not divide over `threads`
/// for either strategy (or the fma one needs more than 16 sums a thread):
/// attention then reduces through kvgpu.reduce. Codes stored transposed
/// (`transposed`) have the tensor-core strategy only, for 2- and 4-bit
/// codes and f16 values (bits 16).
std::optional<PackedMatmulLayout>
getPackedMatmulLayout(int64_t h, int64_t k, int64_t n, int64_t bits,
                      int64_t threads, bool transposed = false);

/// How kvgpu.attend_record spreads one online-softmax step over a record's
/// packed K and V codes (H query heads, head_dim D, G tokens) over a CTA:
/// the one computation the tile lowering sizes the scratch with and the
/// NVVM lowering emits.
///
/// Warp w owns the T = G / warps tokens from w * T and attends them alone,
/// in registers, as two f16 `mma.sync` m16n8k16 products (the heads as N,
/// padded to 8; the codes masked in place as f16 subnormals, `a` split in
/// kMmaSplitParts f16 parts):
///  * scores[t, h] = sum_d code_k[d, t] (q[h, d] kscale[d]): M = the warp's
///    tokens (T / 16 tiles), K = channels (D / 16 tiles, slot s of k tile i
///    = channel 16 i + s). Lane (g, t) holds tokens g * T / 8 + j, j < T /
///    8 (m tile j / 2, row g + 8 (j % 2)): one `kPieceBits`-bit piece of a
///    channel's codes row. The B fragments are split once per CTA into the
///    scratch (as packed_matmul's, all k tiles in one round).
///  * weighted[d, h] = sum_t code_v[t, d] (p[h, t] vscale[t]): M = channels
///    (D / 16 tiles), K = the warp's tokens. Lane (g, t) holds channels
///    g * D / 8 + j, j < D / 8 (m tile j / 2, row g + 8 (j % 2)): one
///    `vPieceBits`-bit piece of a token's codes row. The probabilities go
///    from the scores' accumulators (tokens as rows) to the B fragments
///    (tokens as K) through the warp's own scratch.
/// Each warp's max, sum and weighted values (its partial softmax) meet the
/// incoming state at one barrier; no barrier inside a warp's work.
/// Per warp, RecordAttendLayout's statistics of 8 heads: max, sum, and the
/// p . vzero term, added once per output in the merge.
constexpr int64_t kRecordAttendStatsFloats = 24;

struct RecordAttendLayout {
  int64_t warps, tokensPerWarp, kPieceBits, vPieceBits;
  /// 16-bit K pieces (32 tokens a warp at 4 bits): a warp's pieces of 8
  /// channels are an 8 x 8 matrix of 16-byte rows, read by one transposed
  /// ldmatrix for two k tiles (where the codes' rows start 16-byte aligned).
  bool keyMatrices;
  /// H <= 4 and T >= 32: the scores' hi and lo parts share one product's
  /// 8 columns (hi of head h in column h, lo in column h + 4), so lanes t
  /// and t ^ 2 hold the two parts of the same heads' scores; one shuffle
  /// adds them, and each lane then takes the softmax of half its tokens
  /// (the other half's are its partner's), where with a column per head
  /// the lanes of columns past H computed the softmax of no head. Half the
  /// scores' MMAs and of the softmax's instructions; the same sums.
  bool packedScoreParts;
  /// Scratch offsets in floats: the split B fragments of the scores (D / 16
  /// k tiles x 32 lanes x 4 words), sum_d q[h, d] kzero[d] (8), then per
  /// warp `partialFloats` (the weighted partial [H, D + 4], and before it the
  /// probabilities as f16 pairs [2 parts, 8 heads, T / 2 + 4]) and
  /// kRecordAttendStatsFloats (max, sum and the p . vzero term of 8 heads),
  /// then the incoming max and sum (16), read there so that the new state
  /// may overwrite the old one. With the state held per warp (warp_states)
  /// only the probabilities: each warp folds its partial into its own
  /// state.
  int64_t kZeroDotOffset, partialOffset, partialFloats, statsOffset;
  int64_t incomingOffset;
  int64_t scratchFloats;
  /// A head's row in a warp's partial: D + 4 floats, so that the lanes of
  /// heads 2t and 2t + 2 store into distinct banks.
  int64_t partialHeadFloats;
};
/// The layout, or nothing when the shape does not fit it (H > 8, D not 16 x
/// a multiple of 32 up to 256, codes other than 2 or 4 bits, T not a multiple
/// of 16, or a lane's K piece over two words: T over 128 at 4 bits, as with
/// one warp and G = 256): the attention step then keeps packed_matmul and
/// shared-memory reductions.
std::optional<RecordAttendLayout>
getRecordAttendLayout(int64_t h, int64_t d, int64_t g, int64_t kBits,
                      int64_t vBits, int64_t threads, bool warpStates = false);
/// kvgpu.attend_rows: the first `warps` warps attend `tokensPerWarp` tokens
/// each (16 x a power of two), as attend_record's warps do, from fp16 rows.
/// Scratch offsets in floats: the split B fragments of q (D / 16 k tiles x
/// 32 lanes x 4 words), then per warp `partialFloats` (the weighted partial
/// [H, D], before it the probabilities as f16 pairs [2 parts, 8 heads, T / 2
/// + 4]) and kRecordAttendStatsFloats (max and sum of 8 heads; the third
/// eight unused), then the incoming max and sum (16); with warp_states only
/// the probabilities (as RecordAttendLayout's).
struct RowsAttendLayout {
  int64_t warps, tokensPerWarp;
  int64_t partialOffset, partialFloats, statsOffset, incomingOffset;
  int64_t scratchFloats;
  int64_t partialHeadFloats; // as RecordAttendLayout's
};
/// The layout, or nothing when the shape does not fit it (H > 8, D not a
/// multiple of 16 up to 256, T not a multiple of 16): the attention step
/// then keeps shared-memory reductions.
std::optional<RowsAttendLayout> getRowsAttendLayout(int64_t h, int64_t d,
                                                    int64_t t, int64_t threads,
                                                    bool warpStates = false);
/// The chunk swizzle of kvgpu.copy_in's `swizzled_rows` (the lowering builds
/// it as IR, KVGPUToNVVM/Common.cpp, checked against this by
/// test/unit/SwizzleTest.cpp): the 16-byte chunk
/// c of row r is stored at chunk c ^ rowSwizzle(r) (rows of a multiple of 8
/// chunks). Rows r, r + 1 differ in the chunk's bit 2 (two rows' runs of 4
/// chunks in distinct banks: one quarter warp's 16-byte loads), and rows 2k
/// (and 2k + 1), k < 4, in bits 1 and 2 (four rows' chunk pairs: a warp's
/// word loads).
constexpr int64_t rowSwizzle(int64_t row) {
  return (row & 2) | (((row >> 2) ^ row) & 1) << 2;
}
/// The chunk swizzle of `swizzled_rows` for rows of 32 or 64 bytes, several
/// to a 128-byte line: chunk c (of 8) of line L is stored at chunk c ^
/// lineSwizzle(L). Lines 2k and 2k + 1 differ in bits 0 and 1, lines 4k ..
/// 4k + 3 in their low two bits, so that attend_record's reads hit distinct
/// banks: the values' word loads of 32-byte rows r, r + 2, r + 4, r + 6 (a
/// warp's lanes t), and the keys' ldmatrix of eight consecutive rows at one
/// chunk, 64-byte rows (4 lines) or 32-byte ones (2 lines).
constexpr int64_t lineSwizzle(int64_t line) {
  return (3 * (line & 1)) ^ ((line >> 1) & 1);
}
/// The rows `swizzled_rows` takes: 32 or 64 bytes (lineSwizzle) or a
/// multiple of 128 (rowSwizzle).
constexpr bool isSwizzledRowBytes(int64_t rowBytes) {
  return rowBytes == 32 || rowBytes == 64 ||
         (rowBytes > 0 && rowBytes % 128 == 0);
}
/// Bytes `at` and `at + k * swizzlePeriodBytes(rowBytes)` of a swizzled
/// region move alike (rowSwizzle's 8 rows, lineSwizzle's 4 lines): a reader
/// may swizzle a base once and step by whole periods.
constexpr int64_t swizzlePeriodBytes(int64_t rowBytes) {
  return rowBytes % 128 == 0 ? 8 * rowBytes : 4 * 128;
}

/// Query heads in one of attend_latent's MMA column tiles (N = 8), and the
/// most tiles a program takes (LaunchPolicy.h's mlaHeadsPerProgram stays
/// within their product, 16 heads).
constexpr int64_t kLatentHeadsPerTile = 8;
constexpr int64_t kLatentMaxHeadTiles = 2;

/// How kvgpu.attend_latent spreads one online-softmax step over an MLA
/// record (H <= 16 query heads, latent rank R, rope dim E, G tokens, 4-bit
/// token-major codes) over a CTA of W warps, in three phases between
/// barriers:
///  * scores[t, h] = sum_c code[t, c] (q[h, c] scale[c]) + q_rope[h] .
///    rope[t]: warp w owns the `tokensPerWarp` tokens from w times that
///    (M, in 16-token tiles); K = channels. Lane (g, t) reads 16-byte runs
///    of its rows at byte 16 t + 64 i; word k of run i (channels 8 j ..
///    8 j + 7, j = 16 i + 4 t + k) makes k tiles 2 (4 i + k) + c: class c =
///    0 holds channels 8 j + {0, 4} (slots 2t, 2t + 1) and 8 j + {2, 6}
///    (slots 2t + 8, 2t + 9), class 1 the same + 1, each code masked in
///    place as an f16 subnormal (class 1 at 16 times the weight), each class
///    its own sums. The rope term's k tiles go in pairs: lane t reads the
///    16-byte run t of each 64-byte run of its rope rows (slots 2t, 2t + 1
///    of k tile 2 p + x are channels 32 p + 8 t + 4 x + 0, 1; slots 2t + 8,
///    2t + 9 the next two). The B fragments of q * scale and of q_rope are
///    split into f16 parts once per block into the scratch.
///  * The warps' maxima meet in the scratch; each lane computes the
///    probabilities of its scores, writes p * token_scale as f16 parts
///    (the B operand of the next product, tokens in order) and the warps'
///    sums.
///  * weighted[c, h] = sum_t code[t, c] (p[h, t] token_scale[t]): warp w
///    owns `channelsPerWarp` channels (M), all G tokens (K). Lane (g, t)
///    of channel group n reads word (W n + w) 8 + g of its four token rows
///    a k tile: m tile i of the group holds channels 8 j + 2 i (row g) and
///    8 j + 2 i + 1 (row g + 8), the codes f16 subnormals as the scores'.
///    The warp updates its channels of the state in place: acc' = alpha
///    acc + scale[c] F W + sum_t p' zero[c], F the code's factor.
/// Heads go 8 to an MMA column tile: with 9 to 16 heads (`headTiles` 2)
/// each code fragment feeds both tiles' products, so the codes' reads and
/// conversion are shared by twice the heads; the heads past H (up to
/// headSlots()) compute zeros.
/// Scratch offsets in floats: the fragments (head tile n's from n
/// fragmentsPerHeadTile), q . zero and the warps' maxima, then, over the
/// fragments (dead after the second barrier), the probabilities and the
/// warps' sums.
struct LatentAttendLayout {
  int64_t warps, tokensPerWarp, channelsPerWarp, headTiles;
  int64_t headSlots() const { return kLatentHeadsPerTile * headTiles; }
  int64_t fragmentsPerHeadTile;
  int64_t zeroDotOffset, warpMaxOffset, warpSumOffset, warpWeightOffset,
      probabilityOffset, probabilityRowWords;
  int64_t scratchFloats;
};
/// The layout, or nothing when the shape does not fit it (H > 16, bits other
/// than 4, R not a multiple of 64 W, E not a multiple of 32, G not a
/// multiple of 16 W): the step then keeps packed_matmul and shared-memory
/// reductions.
std::optional<LatentAttendLayout> getLatentAttendLayout(int64_t h, int64_t r,
                                                        int64_t e, int64_t g,
                                                        int64_t bits,
                                                        int64_t threads);
} // namespace kvarn::kvgpu

#include "kvarn/Dialect/KVGPU/KVGPUDialect.h.inc"
#include "kvarn/Dialect/KVGPU/KVGPUEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "kvarn/Dialect/KVGPU/KVGPUAttrs.h.inc"

#define GET_OP_CLASSES
#include "kvarn/Dialect/KVGPU/KVGPUOps.h.inc"

#endif // KVARN_DIALECT_KVGPU_KVGPU_H
