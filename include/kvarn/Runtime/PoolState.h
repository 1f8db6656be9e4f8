//===- PoolState.h - bookkeeping of the managed paged KV pool ---*- C++ -*-===//
//
// The host side of the managed pool (docs/kvarn.md, "The cache at run time"):
// which blocks and fp16 pool slots are free, which request holds which blocks,
// how many of its tokens are committed, which blocks became full and committed
// and wait to be flushed. Plain C++: no CUDA, no MLIR, so it is tested in CI
// and the C API wraps it with the device buffers and launches.
//
// Model. A block is one paged-cache block (G tokens, every layer and KV head:
// its records sit at `cache[layer][block]`). A block lives in an fp16 pool
// slot from its allocation until it is flushed (quantized into its records);
// `blockToSlot()[block]` is that slot or -1. A block is flushed once it is
// full, all its tokens are committed, and it is not the first block (the
// sink) of a live request. Blocks are reference counted: a request that
// shares another's prefix holds the same full blocks.
//
// Every operation validates all its arguments before changing anything: a
// failing call returns an error (a kvarn status and a message) and leaves the
// state exactly as it was. Not thread-safe: the C API serializes calls on a
// pool with a mutex.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_RUNTIME_POOLSTATE_H
#define KVARN_RUNTIME_POOLSTATE_H

#include "kvarn/Support/Error.h"
#include "kvarn/Support/Span.h"

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace kvarn::pool {

using RequestId = int64_t;

struct PoolGeometry {
  int32_t blockSize = 128;         // G: tokens per block = the preset's tile
  int32_t numBlocks = 0;           // blocks of the record cache
  int32_t numPoolSlots = 0;        // fp16 pool slots (each holds one block)
  int32_t maxRequests = 0;         // requests known at once (live or finished)
  int32_t maxBlocksPerRequest = 0; // the block table's width: max context / G
  /// Whether a live request's first block (its attention sink) stays in
  /// the fp16 pool until the request ends (docs/kvarn.md, "The cache at run
  /// time"). MLA pools keep none: every full block is flushed.
  bool keepSinks = true;

  /// The sizes: positive, within 32-bit slot mappings, slots <= blocks.
  kvarn::Error check() const;
  /// check(), and the bookkeeping's host memory (hostBytes) within
  /// `hostMemory`: KVARN_ERROR_OUT_OF_MEMORY before anything is allocated.
  kvarn::Error check(uint64_t hostMemory) const;
  int64_t hostBytes() const;
  /// This machine's RAM in bytes (UINT64_MAX when unknown).
  static uint64_t physicalMemory();
};

/// A (block, pool slot) pair to flush: the block's records are written from
/// the slot's fp16 rows (every layer, every KV head).
struct FlushTile {
  int32_t block;
  int32_t slot;
  bool operator==(const FlushTile &o) const {
    return block == o.block && slot == o.slot;
  }
};

enum class RequestPhase : uint8_t {
  Live,     // appends, commits, decode
  Finished, // keeps its full blocks (flushed) as a prefix others may share
};

/// What a request holds, as the tests and the C API read it.
struct RequestInfo {
  RequestPhase phase = RequestPhase::Live;
  int32_t length = 0;    // tokens in the cache, committed or not
  int32_t committed = 0; // tokens that may reach a record
  Span<const int32_t> blocks;
};

class PoolState {
public:
  static kvarn::Expected<PoolState> create(const PoolGeometry &geometry);

  const PoolGeometry &geometry() const { return geom; }

  /// A new live, empty request. Fails if `id` exists or maxRequests are known.
  kvarn::Error addRequest(RequestId id);

  /// Appends `counts[i]` tokens to request `ids[i]` (prompt chunks, one
  /// decode token, or several speculative tokens), uncommitted. Allocates the
  /// blocks and pool slots they need, all or nothing. Appends the slot of
  /// each new token (block * G + offset, vLLM's slot mapping) to
  /// `slotMapping`, request by request. The ids must be live and distinct.
  kvarn::Error append(Span<const RequestId> ids, Span<const int32_t> counts,
                      std::vector<int32_t> *slotMapping = nullptr);

  /// Commits the first `accepted[i]` uncommitted tokens of request `ids[i]`
  /// and rolls back the rest: the length becomes the committed count, and
  /// blocks (and their slots) that no longer hold a token are freed, so a
  /// rejected token never reaches a record. Blocks that became full and
  /// committed join the flush work (except a live request's sink).
  kvarn::Error commit(Span<const RequestId> ids, Span<const int32_t> accepted);

  /// The blocks to flush now, in the order they became ready. They leave the
  /// pool: their slots are free for the next append (stream order makes the
  /// flush read them before a later append writes them).
  std::vector<FlushTile> takeFlushWork();
  /// What takeFlushWork() would return, without taking it (to launch the
  /// flush before the bookkeeping commits to it).
  std::vector<FlushTile> flushWork() const;
  /// How many blocks takeFlushWork() would return.
  int32_t pendingFlushCount() const;

  /// The request stops being live: uncommitted tokens and the partial last
  /// block are dropped, full blocks are kept (and flushed, the sink too) so
  /// another request can share them until free().
  kvarn::Error finish(RequestId id);
  /// Drops everything a live request holds (nothing is flushed); it stays
  /// live and empty, to be prefilled again (preemption by recomputation).
  kvarn::Error preempt(RequestId id);
  /// Forgets a request (live or finished) and releases its blocks.
  kvarn::Error free(RequestId id);
  /// Gives the empty live request `dst` the first `tokens` tokens (a multiple
  /// of G, all full and committed blocks) of `src` (live or finished), by
  /// reference: no copy, no new slot.
  kvarn::Error sharePrefix(RequestId dst, RequestId src, int32_t tokens);

  // Queries.
  bool hasRequest(RequestId id) const { return requests.count(id) != 0; }
  kvarn::Expected<RequestInfo> request(RequestId id) const;
  int32_t numRequests() const { return int32_t(requests.size()); }
  int32_t freeBlockCount() const { return int32_t(freeBlocks.size()); }
  int32_t freeSlotCount() const { return int32_t(freeSlots.size()); }
  int32_t refCount(int32_t block) const { return refs[block]; }
  /// [numBlocks]: the pool slot of each block, -1 where it is not in the pool.
  Span<const int32_t> blockToSlot() const { return toSlot; }

  /// For the kernels of one step over `ids` (their order is the batch's):
  /// `blockTable` [ids.size(), width] (the first blocks of each request,
  /// padded with 0), `seqLens` [ids.size()] (lengths). Fails if a request
  /// has more than `width` blocks.
  kvarn::Error fillBlockTable(Span<const RequestId> ids, int32_t width,
                              int32_t *blockTable, int32_t *seqLens) const;
  /// The most blocks any of `ids` holds (the narrowest table width).
  kvarn::Expected<int32_t> maxBlocksOf(Span<const RequestId> ids) const;

  /// A canonical description of the whole state (free lists sorted, requests
  /// by id), so tests can check that a failing call changed nothing.
  std::string describe() const;
  /// Checks the invariants (reference counts match the block tables, every
  /// block and slot is either free or held exactly once, ...); an error names
  /// the first one broken.
  kvarn::Error verify() const;

private:
  struct Request {
    RequestPhase phase = RequestPhase::Live;
    int32_t length = 0;
    int32_t committed = 0;
    std::vector<int32_t> blocks;
  };

  explicit PoolState(const PoolGeometry &geometry);
  kvarn::Expected<const Request *> find(RequestId id, const char *op) const;
  kvarn::Expected<Request *> findLive(RequestId id, const char *op);
  kvarn::Error checkBatch(Span<const RequestId> ids, size_t n, const char *what,
                          const char *op) const;

  int32_t allocateBlock();
  /// Drops one reference; at zero the block and its slot are free again.
  void releaseBlock(int32_t block);
  /// Releases `r.blocks[keep..]`, dropping the sink hold first if block 0
  /// goes and `r` is live.
  void truncateBlocks(Request &r, size_t keep);
  void markReadyIfFlushable(int32_t block);
  void dropSinkHold(Request &r);

  PoolGeometry geom;
  std::unordered_map<RequestId, Request> requests;
  std::vector<int32_t> freeBlocks, freeSlots; // stacks
  std::vector<int32_t> refs;        // per block
  std::vector<int32_t> toSlot;      // per block: pool slot or -1
  std::vector<int32_t> sinkHolders; // per block: live requests whose sink it is
  std::vector<uint8_t> readyMark;   // per block: in `ready`
  std::vector<int32_t> ready;       // blocks to flush (may hold stale entries)
};

} // namespace kvarn::pool

#endif // KVARN_RUNTIME_POOLSTATE_H
