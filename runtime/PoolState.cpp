//===- PoolState.cpp - bookkeeping of the managed paged KV pool ----------===//
//
// Every public operation has two halves: a validation half that only reads
// and may fail, and a mutation half that cannot fail (capacities are reserved
// up front, so it does not allocate either, except a new request's table).
//
//===----------------------------------------------------------------------===//

#include "kvarn/Runtime/PoolState.h"
#include "kvarn/Support/Error.h"

#include <algorithm>
#include <map>
#include <sstream>
#include <unordered_set>
#include <vector>

#include <unistd.h>

using namespace kvarn;
using namespace kvarn::pool;

static int32_t ceilDiv(int64_t a, int64_t b) { return int32_t((a + b - 1) / b); }

kvarn::Error PoolGeometry::check() const {
  auto positive = [](const char *name, int64_t v) -> kvarn::Error {
    if (v <= 0)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "pool: {0} must be positive, got {1}", name, v);
    return kvarn::Error::success();
  };
  if (kvarn::Error e = positive("block size", blockSize))
    return e;
  if (kvarn::Error e = positive("num_blocks", numBlocks))
    return e;
  if (kvarn::Error e = positive("pool slots", numPoolSlots))
    return e;
  if (kvarn::Error e = positive("max_requests", maxRequests))
    return e;
  if (kvarn::Error e = positive("max blocks per request", maxBlocksPerRequest))
    return e;
  // Slot mappings are block * G + offset in an i32.
  if (int64_t(numBlocks) * blockSize > INT32_MAX)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "pool: {0} blocks of {1} tokens overflow a 32-bit slot "
                     "mapping",
                     numBlocks, blockSize);
  if (int64_t(maxBlocksPerRequest) * blockSize > INT32_MAX)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "pool: {0} blocks per request overflow a 32-bit length",
                     maxBlocksPerRequest);
  // A slot holds one block from its allocation to its flush, so slots past
  // the block count are never used (and each costs host and device memory).
  if (numPoolSlots > numBlocks)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "pool: {0} pool slots for {1} blocks; a slot holds one "
                     "block until it is flushed, so at most {1} slots can be "
                     "used",
                     numPoolSlots, numBlocks);
  return kvarn::Error::success();
}

int64_t PoolGeometry::hostBytes() const {
  // Per block: free list, refs, toSlot, sinkHolders (i32), readyMark (u8),
  // two `ready` entries (i32); per slot: the free list. Below 2^31 * 29.
  return int64_t(numBlocks) * (4 * 4 + 1 + 2 * 4) + int64_t(numPoolSlots) * 4;
}

kvarn::Error PoolGeometry::check(uint64_t hostMemory) const {
  if (kvarn::Error e = check())
    return e;
  if (uint64_t(hostBytes()) > hostMemory)
    return makeError(KVARN_ERROR_OUT_OF_MEMORY,
                     "pool: the bookkeeping of {0} blocks and {1} pool slots "
                     "needs {2} bytes of host memory, more than the {3} this "
                     "machine has",
                     numBlocks, numPoolSlots, hostBytes(), hostMemory);
  return kvarn::Error::success();
}

uint64_t PoolGeometry::physicalMemory() {
  long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || size <= 0)
    return UINT64_MAX; // unknown: the allocation itself reports
  return uint64_t(pages) * uint64_t(size);
}

PoolState::PoolState(const PoolGeometry &geometry) : geom(geometry) {
  // Free lists as stacks whose top is the lowest id: allocation order is
  // 0, 1, 2, ... on a fresh pool, which keeps tests and dumps readable.
  freeBlocks.reserve(geom.numBlocks);
  for (int32_t b = geom.numBlocks - 1; b >= 0; --b)
    freeBlocks.push_back(b);
  freeSlots.reserve(geom.numPoolSlots);
  for (int32_t s = geom.numPoolSlots - 1; s >= 0; --s)
    freeSlots.push_back(s);
  refs.assign(geom.numBlocks, 0);
  toSlot.assign(geom.numBlocks, -1);
  sinkHolders.assign(geom.numBlocks, 0);
  readyMark.assign(geom.numBlocks, 0);
  // A block is pushed at most once per allocation or release of a sink hold;
  // 2x covers every stale entry between two takeFlushWork calls in practice,
  // and push_back beyond it only reallocates.
  ready.reserve(2 * size_t(geom.numBlocks));
  // Only an addRequest inserts (and may rehash, before it changes anything),
  // so this is a hint: requests that hold blocks are at most numBlocks.
  requests.reserve(std::min(geom.maxRequests, geom.numBlocks));
}

kvarn::Expected<PoolState> PoolState::create(const PoolGeometry &geometry) {
  if (kvarn::Error e = geometry.check(PoolGeometry::physicalMemory()))
    return std::move(e);
  return PoolState(geometry);
}

kvarn::Expected<const PoolState::Request *>
PoolState::find(RequestId id, const char *op) const {
  auto it = requests.find(id);
  if (it == requests.end())
    return makeError(KVARN_ERROR_UNKNOWN_REQUEST, "{0}: no request {1}", op,
                     id);
  return &it->second;
}

kvarn::Expected<PoolState::Request *> PoolState::findLive(RequestId id,
                                                          const char *op) {
  auto it = requests.find(id);
  if (it == requests.end())
    return makeError(KVARN_ERROR_UNKNOWN_REQUEST, "{0}: no request {1}", op,
                     id);
  if (it->second.phase != RequestPhase::Live)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: request {1} is finished", op, id);
  return &it->second;
}

kvarn::Error PoolState::checkBatch(Span<const RequestId> ids, size_t n,
                                   const char *what, const char *op) const {
  if (ids.size() != n)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: {1} request ids but {2} {3}", op, ids.size(), n,
                     what);
  std::unordered_set<RequestId> seen;
  seen.reserve(ids.size());
  for (RequestId id : ids) {
    auto it = requests.find(id);
    if (it == requests.end())
      return makeError(KVARN_ERROR_UNKNOWN_REQUEST, "{0}: no request {1}", op,
                       id);
    if (it->second.phase != RequestPhase::Live)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "{0}: request {1} is finished", op, id);
    if (!seen.insert(id).second)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "{0}: request {1} appears twice", op, id);
  }
  return kvarn::Error::success();
}

kvarn::Error PoolState::addRequest(RequestId id) {
  if (requests.count(id))
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "add_request: request {0} already exists", id);
  if (int32_t(requests.size()) >= geom.maxRequests)
    return makeError(KVARN_ERROR_POOL_EXHAUSTED,
                     "add_request: the pool already holds max_requests = {0} "
                     "requests",
                     geom.maxRequests);
  Request r;
  // A request holds distinct blocks, so never more than numBlocks.
  r.blocks.reserve(std::min(geom.maxBlocksPerRequest,
                            geom.numBlocks)); // may throw: nothing changed yet
  requests.emplace(id, std::move(r));
  return kvarn::Error::success();
}

int32_t PoolState::allocateBlock() {
  int32_t block = freeBlocks.back();
  freeBlocks.pop_back();
  int32_t slot = freeSlots.back();
  freeSlots.pop_back();
  refs[block] = 1;
  toSlot[block] = slot;
  return block;
}

void PoolState::releaseBlock(int32_t block) {
  if (--refs[block] > 0)
    return;
  if (toSlot[block] >= 0)
    freeSlots.push_back(toSlot[block]);
  toSlot[block] = -1;
  readyMark[block] = 0; // its entry in `ready` goes stale
  freeBlocks.push_back(block);
}

void PoolState::markReadyIfFlushable(int32_t block) {
  if (readyMark[block] || refs[block] == 0 || toSlot[block] < 0 ||
      sinkHolders[block] > 0)
    return;
  readyMark[block] = 1;
  ready.push_back(block);
}

void PoolState::dropSinkHold(Request &r) {
  if (!geom.keepSinks || r.phase != RequestPhase::Live || r.blocks.empty())
    return;
  --sinkHolders[r.blocks[0]];
}

void PoolState::truncateBlocks(Request &r, size_t keep) {
  while (r.blocks.size() > keep) {
    releaseBlock(r.blocks.back());
    r.blocks.pop_back();
  }
}

kvarn::Error PoolState::append(Span<const RequestId> ids,
                               Span<const int32_t> counts,
                               std::vector<int32_t> *slotMapping) {
  if (kvarn::Error e = checkBatch(ids, counts.size(), "counts", "append"))
    return e;
  int64_t needBlocks = 0, newTokens = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const Request &r = requests.find(ids[i])->second;
    if (counts[i] < 0)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "append: request {0}: negative token count {1}", ids[i],
                       counts[i]);
    int64_t length = int64_t(r.length) + counts[i];
    if (length > int64_t(geom.maxBlocksPerRequest) * geom.blockSize)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "append: request {0} would hold {1} tokens, more than "
                       "the {2} of max_blocks_per_request = {3}",
                       ids[i], length,
                       int64_t(geom.maxBlocksPerRequest) * geom.blockSize,
                       geom.maxBlocksPerRequest);
    needBlocks += ceilDiv(length, geom.blockSize) - int64_t(r.blocks.size());
    newTokens += counts[i];
  }
  if (needBlocks > int64_t(freeBlocks.size()))
    return makeError(KVARN_ERROR_POOL_EXHAUSTED,
                     "append: needs {0} new blocks, {1} free", needBlocks,
                     freeBlocks.size());
  if (needBlocks > int64_t(freeSlots.size()))
    return makeError(KVARN_ERROR_POOL_EXHAUSTED,
                     "append: needs {0} new pool slots, {1} free (flush to "
                     "free the slots of full blocks)",
                     needBlocks, freeSlots.size());
  if (slotMapping)
    slotMapping->reserve(slotMapping->size() + newTokens); // may throw

  // Nothing below fails.
  for (size_t i = 0; i < ids.size(); ++i) {
    Request &r = requests.find(ids[i])->second;
    int32_t from = r.length, to = r.length + counts[i];
    bool hadSink = !r.blocks.empty();
    while (int64_t(r.blocks.size()) * geom.blockSize < to)
      r.blocks.push_back(allocateBlock());
    if (geom.keepSinks && !hadSink && !r.blocks.empty())
      ++sinkHolders[r.blocks[0]];
    if (slotMapping)
      for (int32_t p = from; p < to; ++p)
        slotMapping->push_back(r.blocks[p / geom.blockSize] * geom.blockSize +
                               p % geom.blockSize);
    r.length = to;
  }
  return kvarn::Error::success();
}

kvarn::Error PoolState::commit(Span<const RequestId> ids,
                               Span<const int32_t> accepted) {
  if (kvarn::Error e =
          checkBatch(ids, accepted.size(), "accepted counts", "commit"))
    return e;
  for (size_t i = 0; i < ids.size(); ++i) {
    const Request &r = requests.find(ids[i])->second;
    int32_t pending = r.length - r.committed;
    if (accepted[i] < 0 || accepted[i] > pending)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "commit: request {0} has {1} uncommitted tokens, cannot "
                       "accept {2}",
                       ids[i], pending, accepted[i]);
  }
  for (size_t i = 0; i < ids.size(); ++i) {
    Request &r = requests.find(ids[i])->second;
    int32_t oldFull = r.committed / geom.blockSize;
    r.committed += accepted[i];
    r.length = r.committed;
    // Rejected tokens: blocks past the committed ones held only them. A
    // request's first block is only released with the request's last token.
    size_t keep = size_t(ceilDiv(r.length, geom.blockSize));
    if (keep == 0)
      dropSinkHold(r);
    truncateBlocks(r, keep);
    int32_t newFull = r.committed / geom.blockSize;
    for (int32_t b = oldFull; b < newFull; ++b)
      markReadyIfFlushable(r.blocks[b]); // the sink stays: sinkHolders > 0
  }
  return kvarn::Error::success();
}

std::vector<FlushTile> PoolState::takeFlushWork() {
  std::vector<FlushTile> tiles;
  tiles.reserve(ready.size());
  for (int32_t block : ready) {
    if (!readyMark[block])
      continue; // stale: released, taken or re-marked later in the list
    readyMark[block] = 0;
    int32_t slot = toSlot[block];
    tiles.push_back({block, slot});
    toSlot[block] = -1;
    freeSlots.push_back(slot);
  }
  ready.clear();
  return tiles;
}

std::vector<FlushTile> PoolState::flushWork() const {
  std::vector<FlushTile> tiles;
  std::vector<uint8_t> seen(readyMark.size(), 0);
  for (int32_t block : ready) {
    if (!readyMark[block] || seen[block])
      continue;
    seen[block] = 1;
    tiles.push_back({block, toSlot[block]});
  }
  return tiles;
}

int32_t PoolState::pendingFlushCount() const {
  int32_t n = 0;
  for (uint8_t m : readyMark)
    n += m;
  return n;
}

kvarn::Error PoolState::finish(RequestId id) {
  kvarn::Expected<Request *> found = findLive(id, "finish");
  if (!found)
    return found.takeError();
  Request &r = **found;
  int32_t full = r.committed / geom.blockSize;
  dropSinkHold(r);
  truncateBlocks(r, size_t(full));
  r.phase = RequestPhase::Finished;
  r.length = r.committed = full * geom.blockSize;
  // The sink was the only full block that waited; others are marked already.
  if (!r.blocks.empty())
    markReadyIfFlushable(r.blocks[0]);
  return kvarn::Error::success();
}

kvarn::Error PoolState::preempt(RequestId id) {
  kvarn::Expected<Request *> found = findLive(id, "preempt");
  if (!found)
    return found.takeError();
  Request &r = **found;
  int32_t sink = r.blocks.empty() ? -1 : r.blocks[0];
  dropSinkHold(r);
  truncateBlocks(r, 0);
  r.length = r.committed = 0;
  if (sink >= 0)
    markReadyIfFlushable(sink); // shared with a finished request, say
  return kvarn::Error::success();
}

kvarn::Error PoolState::free(RequestId id) {
  auto it = requests.find(id);
  if (it == requests.end())
    return makeError(KVARN_ERROR_UNKNOWN_REQUEST, "free: no request {0}", id);
  Request &r = it->second;
  int32_t sink = r.blocks.empty() ? -1 : r.blocks[0];
  dropSinkHold(r);
  truncateBlocks(r, 0);
  requests.erase(it);
  if (sink >= 0)
    markReadyIfFlushable(sink);
  return kvarn::Error::success();
}

kvarn::Error PoolState::sharePrefix(RequestId dstId, RequestId srcId,
                                    int32_t tokens) {
  kvarn::Expected<Request *> dst = findLive(dstId, "share_prefix");
  if (!dst)
    return dst.takeError();
  kvarn::Expected<const Request *> src = find(srcId, "share_prefix");
  if (!src)
    return src.takeError();
  if (dstId == srcId)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "share_prefix: request {0} cannot share with itself",
                     dstId);
  if ((*dst)->length != 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "share_prefix: request {0} already holds {1} tokens; "
                     "share a prefix into an empty request",
                     dstId, (*dst)->length);
  int32_t shareable =
      (*src)->committed / geom.blockSize * geom.blockSize;
  if (tokens <= 0 || tokens % geom.blockSize != 0 || tokens > shareable)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "share_prefix: {0} tokens is not a positive multiple of "
                     "the block size {1} within the {2} full committed tokens "
                     "of request {3}",
                     tokens, geom.blockSize, shareable, srcId);
  if (tokens / geom.blockSize > geom.maxBlocksPerRequest)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "share_prefix: {0} tokens exceed max_blocks_per_request",
                     tokens);
  Request &d = **dst;
  const Request &s = **src;
  int32_t n = tokens / geom.blockSize;
  d.blocks.assign(s.blocks.begin(), s.blocks.begin() + n);
  for (int32_t b : d.blocks)
    ++refs[b];
  int32_t sink = d.blocks[0];
  if (geom.keepSinks && sinkHolders[sink]++ == 0 && readyMark[sink])
    readyMark[sink] = 0; // a sink again: stays in fp16 (stale list entry)
  d.length = d.committed = tokens;
  return kvarn::Error::success();
}

kvarn::Expected<RequestInfo> PoolState::request(RequestId id) const {
  kvarn::Expected<const Request *> r = find(id, "request");
  if (!r)
    return r.takeError();
  return RequestInfo{(*r)->phase, (*r)->length, (*r)->committed,
                     (*r)->blocks};
}

kvarn::Expected<int32_t>
PoolState::maxBlocksOf(Span<const RequestId> ids) const {
  int32_t width = 0;
  for (RequestId id : ids) {
    kvarn::Expected<const Request *> r = find(id, "block_table");
    if (!r)
      return r.takeError();
    width = std::max(width, int32_t((*r)->blocks.size()));
  }
  return width;
}

kvarn::Error PoolState::fillBlockTable(Span<const RequestId> ids, int32_t width,
                                       int32_t *blockTable,
                                       int32_t *seqLens) const {
  std::vector<const Request *> rs;
  rs.reserve(ids.size());
  for (RequestId id : ids) {
    kvarn::Expected<const Request *> r = find(id, "block_table");
    if (!r)
      return r.takeError();
    if (int32_t((*r)->blocks.size()) > width)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "block_table: request {0} holds {1} blocks, more than "
                       "the table width {2}",
                       id, (*r)->blocks.size(), width);
    rs.push_back(*r);
  }
  for (size_t i = 0; i < rs.size(); ++i) {
    int32_t *row = blockTable + i * size_t(width);
    size_t n = rs[i]->blocks.size();
    std::copy(rs[i]->blocks.begin(), rs[i]->blocks.end(), row);
    std::fill(row + n, row + width, 0);
    if (seqLens)
      seqLens[i] = rs[i]->length;
  }
  return kvarn::Error::success();
}

std::string PoolState::describe() const {
  std::ostringstream os;
  auto list = [&](const char *name, std::vector<int32_t> v) {
    std::sort(v.begin(), v.end());
    os << name << ":";
    for (int32_t x : v)
      os << ' ' << x;
    os << '\n';
  };
  list("free blocks", freeBlocks);
  list("free slots", freeSlots);
  std::vector<int32_t> marked;
  for (int32_t b = 0; b < geom.numBlocks; ++b)
    if (readyMark[b])
      marked.push_back(b);
  list("to flush", marked);
  os << "blocks (block:refs/slot/sinks):";
  for (int32_t b = 0; b < geom.numBlocks; ++b)
    if (refs[b] || toSlot[b] >= 0 || sinkHolders[b])
      os << ' ' << b << ':' << refs[b] << '/' << toSlot[b] << '/'
         << sinkHolders[b];
  os << '\n';
  std::map<RequestId, const Request *> sorted;
  for (const auto &[id, r] : requests)
    sorted.emplace(id, &r);
  for (const auto &[id, r] : sorted) {
    os << "request " << id
       << (r->phase == RequestPhase::Live ? " live" : " finished")
       << " length " << r->length << " committed " << r->committed
       << " blocks";
    for (int32_t b : r->blocks)
      os << ' ' << b;
    os << '\n';
  }
  return os.str();
}

kvarn::Error PoolState::verify() const {
  auto broken = [](const std::string &what) {
    return makeError(KVARN_ERROR_INTERNAL, "pool invariant: {0}", what);
  };
  std::vector<int32_t> countedRefs(geom.numBlocks, 0),
      countedSinks(geom.numBlocks, 0);
  std::vector<uint8_t> fullCommitted(geom.numBlocks, 0);
  for (const auto &[id, r] : requests) {
    if (r.committed > r.length || r.committed < 0)
      return broken("request " + std::to_string(id) +
                    " commits past its length");
    if (int32_t(r.blocks.size()) != ceilDiv(r.length, geom.blockSize))
      return broken("request " + std::to_string(id) +
                    " holds a block count that does not match its length");
    if (r.phase == RequestPhase::Finished &&
        (r.length != r.committed || r.length % geom.blockSize))
      return broken("finished request " + std::to_string(id) +
                    " holds a partial block");
    for (size_t i = 0; i < r.blocks.size(); ++i) {
      ++countedRefs[r.blocks[i]];
      if (int64_t(i + 1) * geom.blockSize <= r.committed)
        fullCommitted[r.blocks[i]] = 1;
    }
    if (geom.keepSinks && r.phase == RequestPhase::Live && !r.blocks.empty())
      ++countedSinks[r.blocks[0]];
  }
  std::vector<int32_t> slotOwner(geom.numPoolSlots, -1);
  std::vector<uint8_t> blockFree(geom.numBlocks, 0);
  for (int32_t b : freeBlocks) {
    if (blockFree[b]++)
      return broken("block " + std::to_string(b) + " is free twice");
  }
  for (int32_t s : freeSlots) {
    if (slotOwner[s] != -1)
      return broken("slot " + std::to_string(s) + " is free twice");
    slotOwner[s] = geom.numBlocks; // "free"
  }
  for (int32_t b = 0; b < geom.numBlocks; ++b) {
    if (refs[b] != countedRefs[b])
      return broken("block " + std::to_string(b) + " has " +
                    std::to_string(refs[b]) + " references but " +
                    std::to_string(countedRefs[b]) + " holders");
    if (bool(blockFree[b]) != (refs[b] == 0))
      return broken("block " + std::to_string(b) +
                    " is free and held, or neither");
    if (sinkHolders[b] != countedSinks[b])
      return broken("block " + std::to_string(b) + " sink count is wrong");
    if (toSlot[b] >= 0) {
      if (refs[b] == 0)
        return broken("free block " + std::to_string(b) + " keeps a slot");
      if (slotOwner[toSlot[b]] != -1)
        return broken("slot " + std::to_string(toSlot[b]) +
                      " is free or held twice");
      slotOwner[toSlot[b]] = b;
    }
    bool flushable = refs[b] > 0 && toSlot[b] >= 0 && sinkHolders[b] == 0 &&
                     fullCommitted[b];
    if (bool(readyMark[b]) != flushable)
      return broken("block " + std::to_string(b) +
                    (flushable ? " should be flushed but is not queued"
                               : " is queued but not flushable"));
  }
  for (int32_t s = 0; s < geom.numPoolSlots; ++s)
    if (slotOwner[s] == -1)
      return broken("slot " + std::to_string(s) + " is neither free nor held");
  return kvarn::Error::success();
}
