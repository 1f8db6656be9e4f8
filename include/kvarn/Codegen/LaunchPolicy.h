//===- LaunchPolicy.h - how attention kernels are shaped --------*- C++ -*-===//
//
// The chips kvarn targets (kChips) and the launch shape the code generator
// gives kernels that attend (decode, decode_split, verify), kernels that
// normalize (flush) and kernels of register rows (append). Plain constants:
// no MLIR needed to read them. The runtime reads only threadsPerProgram (to
// check a kernel's metadata): each kernel's metadata carries the CTAs per
// SM it was built for (ctas_per_sm), which decode's split count plans its
// waves with (kvarn/Runtime/DecodeSplit.h).
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_CODEGEN_LAUNCHPOLICY_H
#define KVARN_CODEGEN_LAUNCHPOLICY_H

#include <string_view>

namespace kvarn {

/// The chips kvarn emits code for, one row each: the first PTX ISA version
/// that knows the chip (from the PTX ISA release notes, as LLVM 22's NVPTX
/// backend encodes them; validateTarget checks targets against it) and its
/// shared memory (CUDA's occupancy tables): the most dynamic shared memory
/// one CTA may ask for, and what an SM holds for all its CTAs (each also
/// costs kReservedSharedBytesPerCta of it).
struct ChipInfo {
  std::string_view chip;
  int minPtx;
  long sharedPerCta;
  long sharedPerSM;
  /// griddepcontrol (programmatic dependent launch): sm_90 on.
  bool gridDependencyControl;
};
inline constexpr ChipInfo kChips[] = {
    {"sm_80", 70, 163 * 1024, 164 * 1024, false},
    {"sm_86", 71, 99 * 1024, 100 * 1024, false},
    {"sm_87", 74, 163 * 1024, 164 * 1024, false},
    {"sm_89", 78, 99 * 1024, 100 * 1024, false},
    {"sm_90", 78, 227 * 1024, 228 * 1024, true},
    {"sm_90a", 80, 227 * 1024, 228 * 1024, true},
    {"sm_100", 86, 227 * 1024, 228 * 1024, true},
    {"sm_100a", 86, 227 * 1024, 228 * 1024, true},
    {"sm_120", 87, 99 * 1024, 100 * 1024, true},
    {"sm_120a", 87, 99 * 1024, 100 * 1024, true},
};
constexpr long kReservedSharedBytesPerCta = 1024;

/// The chip kvarn builds for when none is named (Target's default), and
/// whose row stands in for a chip outside kChips (validateTarget rejects
/// those first).
inline constexpr std::string_view kDefaultChip = "sm_90";

/// The row of `chip`, or nullptr.
constexpr const ChipInfo *findChip(std::string_view chip) {
  for (const ChipInfo &c : kChips)
    if (c.chip == chip)
      return &c;
  return nullptr;
}

/// The staging limits convert-kvt-to-kvgpu tries in turn, largest first: a
/// loaded tile of at most the limit's bytes is copied into shared memory
/// once; a larger one is read from global memory where it is used. The
/// first limit under which the kernel's shared memory fits its CTAs per SM
/// wins; 0 stages nothing.
inline constexpr long kStagingLimits[] = {64 << 10, 32 << 10, 16 << 10, 0};
constexpr long kSmallestStagingLimit = 16 << 10;

/// Tokens of an fp16 pool block that attention takes per step (the DSL's
/// POOL_ROWS): the largest power-of-two divisor of the block's G tokens
/// whose fp16 K (or V) rows fit `bytes`, so that they are staged next to a
/// record's fields. A whole pool block is too large to stage; read from
/// global memory inside the reductions, it cost ~75 us (the sink block of
/// 8 x 32K on the H200, docs/benchmarks.md). Up to the smallest staging
/// limit; with kvgpu-pipeline-copies (attentionPoolRowsBytes) the
/// dense decode family's take half of it (kDensePoolRowsBytes), so that
/// with the records' ring a CTA needs ~60 KB (three an SM) at head_dim
/// 128, not 80 (two). 32 rows by default were 2-10% slower on the H100
/// (the pool blocks: sinks and tails; docs/benchmarks.md).
constexpr long kDensePoolRowsBytes = kSmallestStagingLimit / 2;
constexpr int poolRowsPerStep(int group, int width,
                              long bytes = kSmallestStagingLimit) {
  int rows = group;
  while (rows % 2 == 0 && long(rows) * width * 2 > bytes)
    rows /= 2;
  return rows;
}
static_assert(poolRowsPerStep(128, 128) == 64 &&
              poolRowsPerStep(128, 64) == 128 &&
              poolRowsPerStep(128, 160) == 32 &&
              poolRowsPerStep(64, 512) == 16 &&
              poolRowsPerStep(128, 128, kDensePoolRowsBytes) == 32);

/// Query heads one MLA decode program attends for (the DSL's HEAD_GROUP):
/// the largest divisor of `heads` up to 8 for up to 16 heads, up to 16
/// beyond (the most kvgpu.attend_latent takes: kLatentHeadsPerTile x
/// kLatentMaxHeadTiles in KVGPU.h). It puts 8 heads in an MMA column tile;
/// with 16 each code fragment it converts feeds two tiles, so the codes'
/// reads and conversion (most of a block's instructions at 8) serve twice
/// the heads and a record is read by half as many programs, at one CTA an SM
/// (mlaAttentionCtasPerSM). Measured on the H100 (docs/benchmarks.md,
/// kvarn-bench, 16 heads a program against 8): 6-8% faster at 128 heads,
/// 6-9% at 16 heads, 8 x 32K and 64 x 4K, but 1.2x slower at 16 heads and
/// batch 1, where one program a request (at most kMaxDecodeSplits of them)
/// leaves half the SMs idle; so 16 heads keep two programs of 8.
constexpr int mlaHeadsPerProgram(int heads) {
  for (int d = heads > 16 ? 16 : 8; d > 1; --d)
    if (heads % d == 0)
      return d;
  return 1;
}
static_assert(mlaHeadsPerProgram(128) == 16 && mlaHeadsPerProgram(16) == 8 &&
              mlaHeadsPerProgram(6) == 6 && mlaHeadsPerProgram(11) == 1 &&
              mlaHeadsPerProgram(40) == 10 && mlaHeadsPerProgram(17) == 1);

/// CTAs per SM an MLA attention kernel is budgeted for: two for up to 8
/// heads a program (a record block's step fits 111 KB of shared memory at
/// kv_lora_rank 512: the 51 KB record, the heads' q and acc, the split
/// query fragments; one CTA's copy and softmax overlap the other's
/// products, at 128 registers a thread), one for more. Measured on the
/// H100 against the same 8-head kernels budgeted for one CTA
/// (docs/benchmarks.md): 1.13-1.43x faster where the grid fills the SMs
/// twice over, 3-5% slower at the two smallest rows.
constexpr int mlaAttentionCtasPerSM(int headsPerProgram) {
  return headsPerProgram > 8 ? 1 : 2;
}

/// Warps per CTA of an attention kernel: with 128 threads, each thread
/// reduces the scores of several query heads of one token at once.
constexpr int kAttentionNumWarps = 4;

/// Warps per CTA of an attention kernel over blocks of `group` tokens of
/// `headDim` channels: kAttentionNumWarps, but one per 32 tokens at G = 64
/// up to head_dim 128. kvgpu.attend_record's warps each take G / warps of a
/// block's tokens; at 32 a warp's K piece of a channel is 16 bits (one
/// transposed ldmatrix brings two k tiles) and the scores' hi and lo parts
/// share one product (RecordAttendLayout). With 4 warps at G = 64 each took
/// 16 tokens, neither held, and a block's partial states met from twice the
/// warps: on the H200, kvarn_k4v2_g64 at 8 x 32K took 231.7 us with 4 warps
/// (3 CTAs an SM), 157.3 with 2 (6 CTAs an SM; 1 warp: 171.9;
/// docs/benchmarks.md). Past head_dim 128 only 3 CTAs an SM fit
/// (attentionCtasPerSM), where 2 warps would leave 6 warps an SM; not
/// measured, so kept at 4. One warp for all 128 tokens of a G = 128 block
/// was 1.8x slower at 8 x 32K and 7.6x at 4 x 3000 (one warp's chain of a
/// block's steps, at 7 CTAs an SM).
constexpr int attentionNumWarps(int group, int headDim) {
  return group <= 64 && headDim <= 128 ? 2 : kAttentionNumWarps;
}

/// Warps per CTA of an MLA attention kernel: 8. When one CTA ran per SM
/// (before mlaAttentionCtasPerSM gave 2), at 4 warps each scheduler had
/// one warp to issue from in a step whose products
/// (kvgpu.packed_matmul) and softmax wait on their own chains; 8 warps
/// halve each warp's share (the scores' 128 tokens are one column tile a
/// warp, the values' 512 channels four) and give each scheduler two.
/// On the H100 (`kvarn-bench --only mla` against `--num-warps 4`, one
/// call): 1.21-1.30x faster on every row (docs/benchmarks.md).
constexpr int kMlaAttentionNumWarps = 8;

/// CTAs per SM an attention kernel's registers (.minnctapersm) and shared
/// memory are budgeted for: the block loop is latency-bound, so CTAs
/// overlap one another's loads. Measured on the H100 (docs/benchmarks.md):
/// 4 beat 2 and 3 at 32 x 8K and 8 x 32K.
constexpr int kAttentionCtasPerSM = 4;

/// kAttentionCtasPerSM, except: with fewer warps a CTA (G <= 64,
/// attentionNumWarps) 6 CTAs of 2 warps up to head_dim 128 (168 registers;
/// on the H200 kvarn_k4v2_g64's 8 x 32K took 157.3 us at 6, 158.8 at 8,
/// 172.4 at 10, 231.7 with 4 warps at 3; at 8, 128 registers, ptxas spilled
/// 284-384 bytes at kvarn_k4v4_g64 once the pool's chunks were staged);
/// beyond, and when head_dim is 64 or fewer at G = 128, 3: the 64-long
/// reduction loops unroll fully and ptxas spilled (8-40 bytes) within the
/// 128 registers of 4 CTAs per SM of 4 warps; 3 CTAs leave 168.
constexpr int attentionCtasPerSM(int group, int headDim) {
  if (group <= 64)
    return headDim <= 128 ? 6 : 3;
  return headDim <= 64 ? 3 : kAttentionCtasPerSM;
}

/// Shared memory an attention kernel's other buffers (queries, partial
/// states, scratch) take beside a staged pool chunk: 13.5-20 KB at head_dim
/// 128, and they do not shrink with a CTA's share of the SM.
constexpr long kAttentionOtherSharedBytes = 16 << 10;

/// Bytes of a pool chunk's fp16 K (or V) rows (the DSL's POOL_ROWS:
/// poolRowsPerStep) in an attention kernel at `ctasPerSM` CTAs an SM of a
/// chip with `sharedPerSM` bytes (ChipInfo): the largest power of two up to
/// kSmallestStagingLimit whose K and V rows fit a CTA's share beside
/// kAttentionOtherSharedBytes, at least 4 KB. On sm_90: 16 KB up to 4 CTAs,
/// 8 KB at 5 and 6, 4 KB at 7 and 8. At kvarn_k4v2_g64, 2 warps and 8 CTAs
/// an SM (head_dim 128) 16-row chunks are staged (21.7 KB a CTA) and 32-row
/// ones were not: its pool blocks (sinks, tails) then went through the
/// generic reduction instead of kvgpu.attend_rows; at 5 or 6 CTAs, 32 rows
/// fit (32 KB a CTA at G = 64 and 128; G = 64's default is 6); on sm_80 at 4
/// CTAs (40 KB a CTA) 64 rows did not.
constexpr long densePoolRowsBytes(int ctasPerSM, long sharedPerSM) {
  long share = sharedPerSM / (ctasPerSM < 1 ? 1 : ctasPerSM) -
               kReservedSharedBytesPerCta;
  long bytes = kSmallestStagingLimit;
  while (bytes > (4 << 10) && 2 * bytes + kAttentionOtherSharedBytes > share)
    bytes /= 2;
  return bytes;
}
static_assert(densePoolRowsBytes(4, 228 << 10) == 16 << 10 &&
              densePoolRowsBytes(5, 228 << 10) == 8 << 10 &&
              densePoolRowsBytes(6, 228 << 10) == 8 << 10 &&
              densePoolRowsBytes(8, 228 << 10) == 4 << 10 &&
              densePoolRowsBytes(4, 164 << 10) == 8 << 10 &&
              densePoolRowsBytes(3, 228 << 10) == 16 << 10);

/// The pool chunk bytes a dense attention kernel of `group`-token blocks and
/// `headDim` is built with (Specialization::poolRowsBytes, whose
/// poolRowsPerStep is the DSL's POOL_ROWS): densePoolRowsBytes at
/// `ctasPerSM` CTAs an SM (0: attentionCtasPerSM's) on a chip of
/// `sharedPerSM` bytes an SM, at most kDensePoolRowsBytes with
/// kvgpu-pipeline-copies (`pipelineCopies`), so that the records' ring fits.
constexpr long attentionPoolRowsBytes(int group, int headDim, int ctasPerSM,
                                      long sharedPerSM, bool pipelineCopies) {
  long bytes = densePoolRowsBytes(
      ctasPerSM ? ctasPerSM : attentionCtasPerSM(group, headDim), sharedPerSM);
  return pipelineCopies && bytes > kDensePoolRowsBytes ? kDensePoolRowsBytes
                                                       : bytes;
}
static_assert(
    poolRowsPerStep(64, 128, densePoolRowsBytes(8, 228 << 10)) == 16 &&
    poolRowsPerStep(128, 128, densePoolRowsBytes(6, 228 << 10)) == 32 &&
    poolRowsPerStep(128, 128, densePoolRowsBytes(4, 228 << 10)) == 64);

/// Warps and CTAs per SM of a kernel that normalizes (flush), by the
/// elements of its largest normalized tile. kvgpu.sinkhorn keeps the tile in
/// registers and reduces across warps through barriers, so the SM needs
/// several barrier groups or many warps to stay busy: up to 16384 elements
/// (64 per thread), two CTAs of 8 warps (128 registers each); up to 32768,
/// one CTA of 16 warps (128 registers). Measured on the H100 against one
/// CTA of 8 warps (docs/benchmarks.md): flush 2048 pairs D=128 925 -> 726 us,
/// D=256 2778 -> 2006 us, although ptxas spills in both (116 bytes of spill
/// stores per thread at G=128; docs/kernels.md lists each kernel).
/// Larger tiles: warps = 0 (by the largest tile), one CTA.
struct NormalizeLaunch {
  int warps;
  int ctasPerSM;
};
constexpr NormalizeLaunch normalizeLaunch(long tileElements) {
  return tileElements <= 16384   ? NormalizeLaunch{8, 2}
         : tileElements <= 32768 ? NormalizeLaunch{16, 1}
                                 : NormalizeLaunch{0, 1};
}

/// Warps of a kernel that merges split partials (combine: kvt.merge into
/// `outputs` elements): a thread an output element, the warps a power of two
/// up to 8 (MLA's R 512 then takes two channels a thread). The merge keeps a
/// thread's loads of every split in flight at once (up to 128 values, ~208
/// registers), so warps with no element of their own would only halve the CTAs
/// an SM holds (8 warps at head_dim 128 took all of an SM's registers).
constexpr int64_t mergeWarps(int64_t outputs) {
  int64_t warps = 1;
  while (warps < 8 && warps * 32 < outputs)
    warps *= 2;
  return warps;
}
static_assert(mergeWarps(128) == 4 && mergeWarps(512) == 8 &&
              mergeWarps(64) == 2 && mergeWarps(96) == 4);

/// Warps per CTA of a kernel whose tiles are all register rows (append):
/// one program is too short a CTA for the rate CTAs are launched at (append
/// with one program a CTA took 26.5 us whatever it did; 4096 tokens x 8
/// heads, H100, docs/benchmarks.md), so a CTA runs several. Measured there
/// with a warp a program: 4 warps 15.0 us, 8 15.6, 16 16.3, 32 15.9.
constexpr int kPackedWarpsPerCta = 4;

/// Lanes one program of such a kernel takes (packedRowLanes): each lane
/// holds 8 elements of the shortest row (16 bytes of fp16: one vector
/// access, 3 of the rotation's stages in registers) and at most 16 of the
/// longest; the program is a whole warp past 256 elements. At head_dim 128
/// two programs share a warp (16 lanes each): fewer shuffles and
/// instructions a program than with a warp each, and twice the rows in
/// flight a warp. Measured on the H200 (append, 4096 tokens x 8 heads,
/// docs/benchmarks.md): 16 lanes 11.8-11.9 us (67% of the copy), a warp
/// 12.4-12.5, 8 lanes (16 elements a lane) 12.6-12.8.
constexpr int kPackedRowElementsPerLane = 8;
constexpr int kMaxRowElementsPerLane = 16;
constexpr int kMinLanesPerProgram = 4;
constexpr int packedRowLanes(long shortestRow, long longestRow) {
  int lanes = kMinLanesPerProgram;
  while (lanes < 32 && (shortestRow > lanes * long(kPackedRowElementsPerLane) ||
                        longestRow > lanes * long(kMaxRowElementsPerLane)))
    lanes *= 2;
  return lanes;
}
static_assert(packedRowLanes(128, 128) == 16 && packedRowLanes(64, 512) == 32 &&
              packedRowLanes(256, 256) == 32 && packedRowLanes(32, 32) == 4);

/// The most warps a CTA has: CUDA's 1024 threads.
constexpr int kMaxWarpsPerCta = 32;

/// The most CTAs an SM holds at once on any chip of kChips (sm_80, sm_90:
/// 32): the bound of a CTAs-per-SM override (--min-ctas-per-sm).
constexpr int kMaxCtasPerSM = 32;

/// Threads of each of the `programs` programs a CTA of `warps` warps runs
/// (kvgpu.programs_per_cta, the metadata's programs_per_cta): whole warps,
/// or a power-of-two part of one of at least kMinLanesPerProgram lanes; 0
/// where the CTA does not divide so or has not 1 to kMaxWarpsPerCta warps. The
/// code generator, the kvgpu dialect's lowerings and the cache's metadata check
/// share this one rule.
constexpr int threadsPerProgram(long warps, long programs) {
  if (warps < 1 || warps > kMaxWarpsPerCta || programs < 1 ||
      (warps * 32) % programs)
    return 0;
  long threads = warps * 32 / programs;
  bool fits = threads % 32 == 0 ||
              (32 % threads == 0 && threads >= kMinLanesPerProgram);
  return fits ? int(threads) : 0;
}
static_assert(threadsPerProgram(4, 4) == 32 && threadsPerProgram(4, 8) == 16 &&
              threadsPerProgram(4, 2) == 64 && threadsPerProgram(4, 3) == 0 &&
              threadsPerProgram(1, 16) == 0 && threadsPerProgram(2, 6) == 0 &&
              threadsPerProgram(32, 1) == 1024 &&
              threadsPerProgram(33, 1) == 0);

} // namespace kvarn

#endif // KVARN_CODEGEN_LAUNCHPOLICY_H
