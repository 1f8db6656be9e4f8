//===- RegisterRows.cpp - load -> rotate -> store chains in registers -----===//
//
// append loads a K row and a V row, rotates each and stores it: nothing else
// reads the tiles. Such chains need no shared memory: each row stays in the
// registers of L lanes of one warp (lane l holding channels l*E .. l*E+E-1,
// E = N / L; L = 32, or fewer where packed programs share a warp),
// loaded and stored with vector accesses, converted as vectors and rotated
// with the in-register butterflies of kvgpu.fwht (the same operations, so
// the same bits). Chains go round-robin over a program's warps. Every other
// tile, and any tile a chain shares with another op, keeps the general
// shared-memory lowering.
//
//===----------------------------------------------------------------------===//

#include "TileLowering.h"

#include "kvarn/Reference/Rotation.h"

#include "llvm/ADT/SetVector.h"

#include <cmath>

using namespace mlir;
using namespace kvarn;
using namespace kvarn::kvt;

namespace {

constexpr int64_t kWarpSize = 32;
constexpr int64_t kMaxPerLane = 16; // head_dim 512

/// N for a [N] or [1, N] tile of f16, bf16 or f32 with N = 32 x E, E <= 16.
std::optional<int64_t> rowLength(Type type) {
  auto tile = dyn_cast<TileType>(type);
  if (!tile)
    return std::nullopt;
  Type elt = tile.getElementType();
  if (!(elt.isF16() || elt.isBF16() || elt.isF32()))
    return std::nullopt;
  int64_t n = tile.getShape().back();
  if (tile.getRank() > 2 || (tile.getRank() == 2 && tile.getDim(0) != 1))
    return std::nullopt;
  if (n % kWarpSize || n / kWarpSize > kMaxPerLane)
    return std::nullopt;
  return n;
}

bool isSylvester(int64_t n) {
  kvarn::Expected<Rotation> rotation = Rotation::get(int(n));
  if (!rotation) {
    kvarn::consumeError(rotation.takeError());
    return false;
  }
  return rotation->kind() == Rotation::Kind::Sylvester;
}

/// Could `v` be a register row, as far as its own op says?
bool candidate(Value v) {
  auto n = rowLength(v.getType());
  Operation *def = v.getDefiningOp();
  if (!n || !def)
    return false;
  if (isa<LoadTileOp>(def))
    return true;
  if (isa<ConvertOp>(def))
    return rowLength(def->getOperand(0).getType()).has_value();
  if (isa<RotateOp>(def))
    return isSylvester(*n);
  return false;
}

VectorType fragmentType(TileType type, int64_t lanes) {
  return VectorType::get({type.getShape().back() / lanes},
                         type.getElementType());
}

/// `vec` converted elementwise to `to` (f16 <-> bf16 through f32), rounding
/// to nearest even as the scalar conversions do.
Value convertFragment(OpBuilder &b, Location loc, Value vec, Type to) {
  auto type = cast<VectorType>(vec.getType());
  Type from = type.getElementType();
  if (from == to)
    return vec;
  if (from.getIntOrFloatBitWidth() == to.getIntOrFloatBitWidth())
    return convertFragment(b, loc, convertFragment(b, loc, vec, b.getF32Type()),
                           to);
  VectorType result = type.clone(to);
  if (from.getIntOrFloatBitWidth() < to.getIntOrFloatBitWidth())
    return arith::ExtFOp::create(b, loc, result, vec);
  return arith::TruncFOp::create(b, loc, result, vec);
}

/// element index * size, in bytes (i64).
Value bytes(TileLowering &s, Location loc, Value index, Type elt) {
  return arith::MulIOp::create(
      s.b, loc, s.i64(loc, index),
      s.i64Constant(loc, elt.getIntOrFloatBitWidth() / 8));
}

} // namespace

RegisterRowChains kvarn::kvt::findRegisterRowChains(Operation *kernel) {
  llvm::SetVector<Value> rows;
  bool allTiles = true;
  kernel->walk<WalkOrder::PreOrder>([&](Operation *op) {
    for (Region &region : op->getRegions())
      for (Block &block : region)
        for (BlockArgument arg : block.getArguments())
          if (isa<TileType>(arg.getType()))
            allTiles = false;
    for (Value r : op->getResults())
      if (isa<TileType>(r.getType())) {
        if (candidate(r))
          rows.insert(r);
        else
          allTiles = false;
      }
  });
  // Drop rows with a use outside the chains, or whose input is not a row,
  // until nothing changes.
  for (bool changed = true; changed;) {
    changed = false;
    for (Value v : SmallVector<Value>(rows.begin(), rows.end())) {
      Operation *def = v.getDefiningOp();
      bool keep = !isa<ConvertOp, RotateOp>(def) ||
                  rows.contains(def->getOperand(0));
      for (OpOperand &use : v.getUses()) {
        Operation *user = use.getOwner();
        if (isa<StoreTileOp>(user) && use.getOperandNumber() == 0)
          continue;
        if (isa<ConvertOp, RotateOp>(user) && rows.contains(user->getResult(0)))
          continue;
        keep = false;
      }
      if (!keep) {
        rows.remove(v);
        allTiles = false;
        changed = true;
      }
    }
  }
  // Each row has one input: a chain is the tree of its load.
  RegisterRowChains chains;
  for (Value v : rows) { // in program order
    Operation *def = v.getDefiningOp();
    chains.chainOf[v] = isa<LoadTileOp>(def)
                            ? chains.numChains++
                            : chains.chainOf.lookup(def->getOperand(0));
  }
  chains.coversAllTiles = allTiles && !rows.empty();
  for (Value v : rows) {
    int64_t n = *rowLength(v.getType());
    chains.shortestRow =
        chains.shortestRow ? std::min(chains.shortestRow, n) : n;
    chains.longestRow = std::max(chains.longestRow, n);
  }
  return chains;
}

bool kvarn::kvt::isRegisterRowOp(const TileLowering &s, Operation *op) {
  if (isa<StoreTileOp>(op))
    return s.registerRows.contains(op->getOperand(0));
  if (isa<LoadTileOp, ConvertOp, RotateOp>(op))
    return s.registerRows.contains(op->getResult(0));
  return false;
}

LogicalResult kvarn::kvt::lowerRegisterRowOp(TileLowering &s, Operation *op) {
  Location loc = op->getLoc();
  auto warpAttr = [&](int64_t warp) { return s.b.getI64IntegerAttr(warp); };
  if (auto load = dyn_cast<LoadTileOp>(op)) {
    TileView v;
    v.type = load.getResult().getType();
    v.warp = s.registerRows.lookup(load.getResult());
    Type elt = v.type.getElementType();
    v.fragment = kvgpu::FragmentLoadOp::create(
        s.b, loc, fragmentType(v.type, s.registerRowLanes),
        s.lookup(load.getPtr()), bytes(s, loc, s.lookup(load.getOffset()), elt),
        bytes(s, loc, s.lookup(load.getStrides().back()), elt),
        warpAttr(v.warp));
    s.tiles[load.getResult()] = v;
    return success();
  }
  if (auto convert = dyn_cast<ConvertOp>(op)) {
    TileView v = s.view(convert.getInput());
    v.type = convert.getResult().getType();
    v.fragment =
        convertFragment(s.b, loc, v.fragment, v.type.getElementType());
    s.tiles[convert.getResult()] = v;
    return success();
  }
  if (auto rotate = dyn_cast<RotateOp>(op)) {
    // Sylvester: H is symmetric, so the inverse is the same transform.
    TileView v = s.view(rotate.getInput());
    int64_t n = v.type.getShape().back();
    float norm = float(1.0 / std::sqrt(double(n)));
    v.fragment = kvgpu::FragmentFWHTOp::create(
        s.b, loc, v.fragment.getType(), v.fragment, s.b.getF32FloatAttr(norm),
        warpAttr(v.warp));
    s.tiles[rotate.getResult()] = v;
    return success();
  }
  auto store = cast<StoreTileOp>(op);
  const TileView &v = s.view(store.getValue());
  Type elt = v.type.getElementType();
  kvgpu::FragmentStoreOp::create(
      s.b, loc, v.fragment, s.lookup(store.getPtr()),
      bytes(s, loc, s.lookup(store.getOffset()), elt),
      bytes(s, loc, s.lookup(store.getStrides().back()), elt),
      warpAttr(v.warp));
  return success();
}
