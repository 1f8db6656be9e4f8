//===- TileLowering.h - state of the kvt -> kvgpu lowering ------*- C++ -*-===//
//
// A kvt tile becomes a *view* of a shared-memory buffer: widening or
// narrowing conversions and transposes only change how the buffer is read,
// so they cost no shared memory and no copy. Ops that compute new tiles get a
// fresh buffer from the planner, which reuses the bytes of buffers no longer
// live. Every op family has its lowering function in its own file.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_CODEGEN_KVTTOKVGPU_TILELOWERING_H
#define KVARN_CODEGEN_KVTTOKVGPU_TILELOWERING_H

#include "kvarn/Conversion/Passes.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"

#include "llvm/ADT/DenseMap.h"

#include <array>
#include <functional>
#include <optional>

namespace kvarn::kvt {

/// Computes one element of a lazy tile from its logical indices.
using ElementFn = std::function<mlir::Value(mlir::OpBuilder &, mlir::Location,
                                            mlir::ValueRange)>;

/// How a tile value is read. One of four kinds:
///  * a shared-memory buffer (`buffer`), possibly transposed or padded with
///    leading unit dimensions (`bufferDims`);
///  * a uniform scalar (`splat`);
///  * a lazy element function (`compute`): unpacked codes, dequantized
///    values or a tile too large to stage, read straight from global memory;
///  * a register row (`fragment`, RegisterRows.cpp): a row of N = 32 x E
///    elements held by warp `warp` as a vector<E x T> per lane; only the ops
///    of a register chain read it.
/// Reads then convert through `conversions`.
/// Which tile of an attention state (m, l, acc) a tile held per warp is.
enum class StateRole { None, Max, Sum, Acc };

struct TileView {
  TileType type;            // the logical tile
  mlir::Value buffer;       // memref in shared memory
  int bufferId = -1;        // the planner's id of `buffer`
  /// bufferDims[k]: the logical dimension indexing buffer dimension k, or -1
  /// for a buffer dimension always indexed by 0.
  llvm::SmallVector<int, 4> bufferDims;
  mlir::Value splat;
  ElementFn compute;
  /// Buffers a lazy view reads (kept alive as long as the view is).
  llvm::SmallVector<int> deps;
  /// Element types a read converts through, after the stored type.
  llvm::SmallVector<mlir::Type> conversions;
  mlir::Value fragment; // vector<E x T>
  int64_t warp = 0;
  /// An attention state held per warp (WarpStates.cpp): `buffer` is [W,
  /// type's shape], a copy per warp of the program, and the tile is their
  /// merge; only attend, attend_finish and copies into other such tiles
  /// read it.
  StateRole warpState = StateRole::None;

  bool isPlainBuffer() const { return buffer && !compute; }
  /// Whether the view reads `buffer` in the tile's own row-major order: a
  /// plain buffer whose dimensions are the tile's, in order; with
  /// `unitDims`, buffer dimensions always indexed by 0 (bufferDims -1) may
  /// come between them. Reads may still convert (`conversions`).
  bool readsInOrder(bool unitDims = false) const;
  /// Whether the view is the tile as stored in a buffer of `elt`:
  /// readsInOrder() with no conversion (materialize returns it as is).
  bool isStoredAs(mlir::Type elt) const;
  /// Every buffer this view needs.
  llvm::SmallVector<int> buffers() const {
    llvm::SmallVector<int> all(deps);
    if (bufferId >= 0)
      all.push_back(bufferId);
    return all;
  }
};

/// Plans byte offsets in dynamic shared memory with first-fit reuse.
class SharedMemoryPlanner {
public:
  /// A new buffer id and its offset.
  std::pair<int, int64_t> allocate(int64_t bytes);
  void release(int id);
  int64_t peakBytes() const { return peak; }

private:
  struct Block {
    int id;
    int64_t offset, bytes;
  };
  llvm::SmallVector<Block> live; // sorted by offset
  int nextId = 0;
  int64_t peak = 0;
};

class TileLowering {
public:
  TileLowering(mlir::OpBuilder &builder, SpecAttr spec, int64_t numWarps,
               int64_t maxStagedTileBytes)
      : b(builder), spec(spec), numWarps(numWarps),
        maxStagedTileBytes(maxStagedTileBytes) {}

  mlir::OpBuilder &b;
  SpecAttr spec;
  int64_t numWarps;
  /// Loaded tiles up to this size are staged in shared memory; larger ones
  /// are read from global memory where they are used.
  int64_t maxStagedTileBytes;
  mlir::IRMapping scalars;                      // old scalar -> new value
  llvm::DenseMap<mlir::Value, TileView> tiles;  // old tile -> its view
  SharedMemoryPlanner planner;
  /// Buffers still referenced by a live tile, with the position of the last
  /// op that reads them.
  llvm::DenseMap<int, int64_t> bufferLastUse;
  /// The tiles held as register rows, with the warp (of its program's
  /// warps) holding each, and the lanes of a warp a row takes (its
  /// program's: 32, or fewer where programs share a warp).
  llvm::DenseMap<mlir::Value, int64_t> registerRows;
  int64_t registerRowLanes = 32;
  /// Programs (points of the kernel's grid along axis 0) per CTA: with P > 1
  /// each group of numWarps * 32 / P threads (whole warps or part of one)
  /// runs one program, program_id(0) is blockIdx.x * P + group, and `gridX`
  /// (i32) is the grid's extent along axis 0 (the launch has
  /// ceil(gridX / P) CTAs there).
  int64_t programsPerCta = 1;
  mlir::Value gridX;
  /// The position of the last op that needs tile `oldTile` (the kernel's
  /// liveness, set by the pass).
  std::function<int64_t(mlir::Value)> lastUseOf;
  /// Records staged whole (MemoryOps.cpp, lowerLoadField), by the old
  /// (cache, byte offset) values of their load_field ops: the buffer, and
  /// the block of those ops (where the copy is known to have run).
  struct StagedRecord {
    int bufferId;
    int64_t offset;
    mlir::Block *block;
  };
  llvm::DenseMap<std::pair<mlir::Value, mlir::Value>, StagedRecord>
      stagedRecords;
  /// The chip has griddepcontrol (LaunchPolicy.h's ChipInfo); a lowered
  /// kvt.grid_dependency_wait sets waitsOnGrid (the kernel is then launched
  /// as a programmatic dependent: kvgpu.launch_pdl).
  bool gridDependencyControl = false;
  bool waitsOnGrid = false;
  /// Record copies may store fields swizzled for their one reader
  /// (convert-kvt-to-kvgpu's swizzle-records).
  bool swizzleRecords = true;
  /// The attention states held per warp (findWarpStates), with their roles;
  /// empty unless the launch choice holds states per warp.
  llvm::DenseMap<mlir::Value, StateRole> warpStates;

  mlir::Value lookup(mlir::Value old) const { return scalars.lookup(old); }
  const TileView &view(mlir::Value oldTile) const {
    return tiles.find(oldTile)->second;
  }

  /// A fresh shared buffer of `shape` x `elt`, identity view of `type`.
  TileView allocate(mlir::Location loc, TileType type);
  mlir::Value allocateScratch(mlir::Location loc,
                              llvm::ArrayRef<int64_t> shape, mlir::Type elt,
                              int &id);

  /// The element at logical `idx` of `v`, converted to the tile's element type.
  mlir::Value read(mlir::OpBuilder &at, mlir::Location loc, const TileView &v,
                   mlir::ValueRange idx) const;
  /// A buffer holding `v` exactly as a row-major tile of `elt` (no copy when
  /// `v` already is one). `asRank2` gives rank-1 tiles a [1, n] buffer.
  TileView materialize(mlir::Location loc, const TileView &v, mlir::Type elt,
                       bool asRank2 = false);
  /// Whether the op `at` may write its result over the buffer of `oldTile`:
  /// a plain buffer read by no tile after `at` (no later use of `oldTile`
  /// or of another view of the buffer in program order, none in a later
  /// iteration of a loop around `at`; a use in the other branch of an
  /// scf.if never runs after it).
  bool canOverwrite(mlir::Value oldTile, mlir::Operation *at) const;
  /// Whether no tile that reads buffer `id` (its own or as a lazy view's
  /// dependency) is used after the op `at`: canOverwrite's rule, for a
  /// buffer whose tiles are views (a staged record's fields).
  bool bufferDeadAfter(int id, mlir::Operation *at) const;
  /// Writes every element of `v` into the plain buffer view `dst`.
  void copyInto(mlir::Location loc, const TileView &v, const TileView &dst);

  /// program_id(axis) as i32 (see programsPerCta).
  mlir::Value programId(mlir::Location loc, unsigned axis);
  void barrier(mlir::Location loc);
  mlir::Value i64(mlir::Location loc, mlir::Value v);
  mlir::Value i64Constant(mlir::Location loc, int64_t v);
  mlir::Value f32Constant(mlir::OpBuilder &at, mlir::Location loc, float v);
  mlir::Value index(mlir::OpBuilder &at, mlir::Location loc, int64_t v);

  /// `foreach shape (...) { body }` followed by a barrier.
  void foreach(mlir::Location loc, llvm::ArrayRef<int64_t> shape,
               llvm::function_ref<void(mlir::OpBuilder &, mlir::ValueRange)> body);
  /// `reduce kind [rows, cols] into out { body }` followed by a barrier.
  void reduce(mlir::Location loc, kvgpu::ReduceKind kind, int64_t rows,
              int64_t cols, mlir::Value out,
              llvm::function_ref<mlir::Value(mlir::OpBuilder &, mlir::Value,
                                             mlir::Value)> body);
};

/// One element of a shared buffer, at the builder's point.
inline mlir::Value load(mlir::OpBuilder &b, mlir::Location loc,
                        mlir::Value buffer, mlir::ValueRange idx) {
  return mlir::memref::LoadOp::create(b, loc, buffer, idx);
}
inline void store(mlir::OpBuilder &b, mlir::Location loc, mlir::Value v,
                  mlir::Value buffer, mlir::ValueRange idx) {
  mlir::memref::StoreOp::create(b, loc, v, buffer, idx);
}

/// Scratch buffers of one op's lowering, released when it is done.
struct ScratchBuffers {
  TileLowering &s;
  llvm::SmallVector<int> ids;
  explicit ScratchBuffers(TileLowering &s) : s(s) {}
  ScratchBuffers(const ScratchBuffers &) = delete;
  mlir::Value get(mlir::Location loc, llvm::ArrayRef<int64_t> shape,
                  mlir::Type elt) {
    int id;
    mlir::Value v = s.allocateScratch(loc, shape, elt, id);
    ids.push_back(id);
    return v;
  }
  ~ScratchBuffers() {
    for (int id : ids)
      s.planner.release(id);
  }
};

/// Register rows (RegisterRows.cpp): a chain of load_tile, convert, rotate
/// and store_tile on rows of N = 32 x E elements (a [N] or [1, N] tile, N up
/// to 512; rotations Sylvester) whose every tile is used only by the chain's
/// own ops keeps its rows in registers, one warp per row, with no shared
/// memory: kvgpu.fragment_load, arith conversions of the vectors,
/// kvgpu.fragment_fwht, kvgpu.fragment_store.
struct RegisterRowChains {
  /// Every tile of a chain, with the chain's index (in program order).
  llvm::DenseMap<mlir::Value, int64_t> chainOf;
  int64_t numChains = 0;
  /// Whether every tile of the kernel is in a chain.
  bool coversAllTiles = false;
  /// The elements of the chains' shortest and longest rows.
  int64_t shortestRow = 0, longestRow = 0;
};
RegisterRowChains findRegisterRowChains(mlir::Operation *kernel);
/// Whether `op` is one of a register chain's ops (lowered by
/// lowerRegisterRowOp, not through the table).
bool isRegisterRowOp(const TileLowering &s, mlir::Operation *op);
mlir::LogicalResult lowerRegisterRowOp(TileLowering &s, mlir::Operation *op);

/// The ops a record's dequantized tile comes from: kvt.dequantize of
/// (where it is one) kvt.unpack's codes, behind a kvt.transpose when
/// `transposed` (attention's K); nothing when `tile` is not one.
struct DequantChain {
  DequantizeOp dequantize;
  UnpackOp unpack; // null where the codes are not unpacked bytes
};
std::optional<DequantChain> matchDequantChain(mlir::Value tile,
                                              bool transposed);

/// Attention states held per warp (WarpStates.cpp): the tiles of `kernel`
/// that are an attention state (kvt.attend's results, and the scf.if and
/// scf.for tiles they are yielded into) and that only attention, its finish
/// and such yields read, as whole states (m, l and acc together), with
/// their roles, where some attend of the state has a register layout at
/// `threads`. The register lowerings then fold each warp's tokens into
/// the warp's own copy, and attend_finish merges the copies.
llvm::DenseMap<mlir::Value, StateRole> findWarpStates(mlir::Operation *kernel,
                                                      int64_t threads);
/// A state tile held per warp, in a fresh buffer.
TileView allocateWarpState(TileLowering &s, mlir::Location loc, TileType type,
                           StateRole role);
/// The buffer of a tile held per warp as a plain [W, ...] tile (for copies).
TileView warpStateRows(const TileView &state);
/// The value of a state's tile before any token: -inf for m, 0 otherwise.
mlir::Value warpStateIdentity(mlir::OpBuilder &b, mlir::Location loc,
                              StateRole role);
/// The state the per-warp copies m, l, acc stand for, in fresh buffers.
std::array<TileView, 3> mergeWarpStates(TileLowering &s, mlir::Location loc,
                                        const TileView &m, const TileView &l,
                                        const TileView &acc);

/// A kernel's launch shape, as kvt-select-launch (SelectLaunch.cpp) chose
/// it and wrote it in the kernel's `kvt.launch` dictionary; convert-kvt-to-
/// kvgpu lowers by it and states what it settled on as kvgpu attributes.
struct LaunchChoice {
  int64_t numWarps = 0;
  /// CTAs per SM that registers and shared memory are budgeted for.
  int64_t ctasPerSM = 1;
  /// Programs one CTA runs (numWarps * 32 / programsPerCta threads each:
  /// threadsPerProgram, LaunchPolicy.h), or 0: one program a CTA.
  int64_t programsPerCta = 0;
  /// Where staging outgrows the budget: keep the tiles staged and run one
  /// CTA per SM (kernels that normalize), rather than stage less.
  bool keepsStaging = false;
  /// Attention states held per warp (findWarpStates).
  bool warpStates = false;
};
inline constexpr llvm::StringLiteral kLaunchAttrName = "kvt.launch";
/// Grid axis 0's extent as the kernel states it (`kvt.grid[0]`): a constant,
/// or the integer parameter that names it; nothing when it has neither.
struct GridX {
  std::optional<int64_t> constant;
  unsigned param = 0; // when not constant
};
std::optional<GridX> findGridX(mlir::Operation *kernel);
/// The `kvt.launch` of `kernel`, or nothing where it is absent or malformed.
std::optional<LaunchChoice> readLaunchChoice(mlir::Operation *kernel);

/// Lowers one kvt op; failure after emitting a diagnostic.
using OpLowering = mlir::LogicalResult (*)(TileLowering &, mlir::Operation *);

void registerMemoryOpLowerings(
    llvm::DenseMap<mlir::OperationName, OpLowering> &table,
    mlir::MLIRContext *ctx);
void registerPrimitiveOpLowerings(
    llvm::DenseMap<mlir::OperationName, OpLowering> &table,
    mlir::MLIRContext *ctx);
void registerAttendOpLowerings(
    llvm::DenseMap<mlir::OperationName, OpLowering> &table,
    mlir::MLIRContext *ctx);
void registerSplitPlanLowering(
    llvm::DenseMap<mlir::OperationName, OpLowering> &table,
    mlir::MLIRContext *ctx);

/// `v` (f16, f32 or an unsigned i8 code) as f32.
mlir::Value widenToF32(mlir::OpBuilder &b, mlir::Location loc, mlir::Value v);

/// f32 fast approximations (one PTX instruction each), used where the
/// reference calls expf/logf: no libdevice is needed at run time.
mlir::Value emitExp(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x);
mlir::Value emitLog(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x);

} // namespace kvarn::kvt

#endif // KVARN_CODEGEN_KVTTOKVGPU_TILELOWERING_H
