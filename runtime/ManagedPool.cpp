//===- ManagedPool.cpp - the pool behind kvarn_pool_t ---------------------===//
//
// Each operation validates, then does its device work, then commits the
// bookkeeping, so a failure at any point leaves the pool as it was (the one
// exception: a failed upload after a step's append, which is undone by
// rolling the appended tokens back, restoring the same state).
//
//===----------------------------------------------------------------------===//

#include "ManagedPool.h"

#include "kvarn/Support/Error.h"

using namespace kvarn;
using namespace kvarn::runtime;
using namespace kvarn::pool;
using namespace kvarn::cuda;

llvm::Expected<std::unique_ptr<ManagedPool>>
ManagedPool::create(std::shared_ptr<ContextState> context,
                    const kvarn_pool_config_t &c) {
  const char *presetName = c.preset ? c.preset : defaultPreset().name;
  llvm::Expected<const Preset *> preset = lookupPreset(presetName);
  if (!preset)
    return preset.takeError();
  llvm::Expected<RecordLayout> layout = RecordLayout::get(**preset, c.head_dim);
  if (!layout)
    return layout.takeError();
  if (c.block_size != 0 && c.block_size != (*preset)->group)
    return makeError(KVARN_ERROR_UNSUPPORTED_SHAPE,
                     "pool: block_size {0} differs from preset {1}'s tile of "
                     "{2} tokens; a block is one tile",
                     c.block_size, presetName, (*preset)->group);
  if (c.num_layers <= 0 || c.num_kv_heads <= 0 || c.num_q_heads <= 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "pool: num_layers ({0}), num_kv_heads ({1}) and "
                     "num_q_heads ({2}) must be positive",
                     c.num_layers, c.num_kv_heads, c.num_q_heads);
  if (c.num_q_heads % c.num_kv_heads != 0)
    return makeError(KVARN_ERROR_UNSUPPORTED_SHAPE,
                     "pool: num_q_heads {0} is not a multiple of num_kv_heads "
                     "{1}",
                     c.num_q_heads, c.num_kv_heads);
  dsl::Specialization spec{presetName, c.head_dim,
                           c.num_q_heads / c.num_kv_heads};
  if (llvm::Error e = spec.check())
    return std::move(e);
  PoolGeometry g;
  g.blockSize = (*preset)->group;
  g.numBlocks = c.num_blocks;
  g.numPoolSlots = c.pool_slots;
  g.maxRequests = c.max_requests;
  g.maxBlocksPerRequest = c.max_blocks_per_request;
  // Every size is checked before anything is allocated.
  if (llvm::Error e = g.check())
    return std::move(e);
  ModelShape model{c.num_layers, c.num_kv_heads, c.head_dim};
  llvm::Expected<PoolBytes> bytes =
      poolBytes(*layout, model, g.numBlocks, g.numPoolSlots);
  if (!bytes)
    return withContext(bytes.takeError(), "pool");
  // The flush kernel takes every layer's slots and blocks as one i32 index
  // (tile_slots, tile_blocks).
  if (int64_t(c.num_layers) * g.numBlocks > INT32_MAX ||
      int64_t(c.num_layers) * g.numPoolSlots > INT32_MAX)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "pool: {0} layers x {1} blocks (or {2} pool slots) "
                     "overflow the flush kernel's 32-bit block and slot "
                     "indices",
                     c.num_layers, g.numBlocks, g.numPoolSlots);
  llvm::Expected<PoolState> state = PoolState::create(g);
  if (!state)
    return state.takeError();

  std::unique_ptr<ManagedPool> p(new ManagedPool(std::move(*state)));
  p->model = model;
  p->layout = *layout;
  p->numQHeads = c.num_q_heads;
  p->sizes = *bytes;
  if (!context)
    return std::move(p);

  if (llvm::Error e = context->checkAlive("pool"))
    return std::move(e);
  p->ctx = context;
  llvm::Expected<std::unique_ptr<KernelSet>> ks = KernelSet::create(context, spec);
  if (!ks)
    return ks.takeError();
  p->kernels = std::move(*ks);
  PoolBytes b = p->bytes();
  auto allocate = [&](DeviceBuffer &buffer, int64_t bytes) -> llvm::Error {
    llvm::Expected<DeviceBuffer> d =
        DeviceBuffer::allocate(context->context, size_t(bytes));
    if (!d)
      return d.takeError();
    buffer = std::move(*d);
    return llvm::Error::success();
  };
  if (llvm::Error e = allocate(p->cache, b.cacheBytes))
    return std::move(e);
  if (llvm::Error e = allocate(p->poolK, b.poolBytes / 2))
    return std::move(e);
  if (llvm::Error e = allocate(p->poolV, b.poolBytes / 2))
    return std::move(e);
  if (llvm::Error e = allocate(p->blockToSlot, int64_t(g.numBlocks) * 4))
    return std::move(e);
  // At most every slot's block, in every layer: slots then blocks.
  if (llvm::Error e = allocate(p->flushTiles, 2 * int64_t(c.num_layers) *
                                                  g.numPoolSlots * 4))
    return std::move(e);
  // The kernels a serving step uses, so no step compiles.
  for (KernelKind k : {KernelKind::Append, KernelKind::Flush,
                       KernelKind::Decode, KernelKind::Verify})
    if (llvm::Expected<const LoadedKernel *> loaded = p->kernels->get(k);
        !loaded)
      return loaded.takeError();
  return std::move(p);
}


llvm::Error ManagedPool::checkDevice(llvm::StringRef what) const {
  if (!ctx)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: the pool was created without a context "
                     "(bookkeeping only)",
                     what);
  return ctx->checkAlive(what);
}

llvm::Error ManagedPool::syncBlockToSlot() {
  if (!ctx || !blockToSlotDirty)
    return llvm::Error::success();
  llvm::ArrayRef<int32_t> host = state.blockToSlot();
  // Pageable memory: the driver stages it before returning, so the host
  // array may change right after. TODO: a pinned ring buffer would keep the
  // driver from ever waiting on the stream here.
  if (llvm::Error e = blockToSlot.uploadAsync(host.data(), host.size() * 4,
                                              ctx->stream))
    return e;
  blockToSlotDirty = false;
  return llvm::Error::success();
}

llvm::Expected<int32_t> ManagedPool::flush() {
  if (openSteps)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "flush: {0} step(s) of the pool are open; commit them "
                     "first (their tables name pool slots a flush frees)",
                     openSteps);
  if (ctx)
    if (llvm::Error e = ctx->checkAlive("flush"))
      return std::move(e);
  std::vector<FlushTile> work = state.flushWork();
  if (!work.empty() && ctx) {
    const PoolGeometry &g = state.geometry();
    int32_t layers = model.numLayers;
    size_t tiles = size_t(layers) * work.size();
    std::vector<int32_t> lists(2 * tiles);
    for (int32_t l = 0; l < layers; ++l)
      for (size_t i = 0; i < work.size(); ++i) {
        lists[l * work.size() + i] = l * g.numPoolSlots + work[i].slot;
        lists[tiles + l * work.size() + i] = l * g.numBlocks + work[i].block;
      }
    if (llvm::Error e = flushTiles.uploadAsync(lists.data(), lists.size() * 4,
                                               ctx->stream))
      return std::move(e);
    CUdeviceptr base = flushTiles.address();
    if (llvm::Error e = launchFlush(*kernels, ctx->stream, poolK.address(),
                                    poolV.address(), base,
                                    base + tiles * 4, cache.address(),
                                    int32_t(tiles), model.numKvHeads))
      return std::move(e);
  }
  state.takeFlushWork();
  if (!work.empty())
    blockToSlotDirty = true;
  return int32_t(work.size());
}

//===----------------------------------------------------------------------===//
// Step
//===----------------------------------------------------------------------===//

llvm::Error Step::checkOpen(const char *op) const {
  if (!open)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: the step is not open (kvarn_step_begin first)", op);
  return llvm::Error::success();
}

llvm::Error Step::checkLayer(const char *op, int32_t layer) const {
  if (llvm::Error e = checkOpen(op))
    return e;
  if (llvm::Error e = pool.checkDevice(op))
    return e;
  if (layer < 0 || layer >= pool.model.numLayers)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: layer {1} is not in [0, {2})", op, layer,
                     pool.model.numLayers);
  return llvm::Error::success();
}

llvm::Error Step::begin(llvm::ArrayRef<RequestId> newIds,
                        llvm::ArrayRef<int32_t> newCounts) {
  if (open)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "step_begin: the step is already open (commit it first)");
  for (RequestId id : newIds)
    if (pool.inOpenStep.count(id))
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "step_begin: request {0} is in another open step", id);
  if (pool.ctx)
    if (llvm::Error e = pool.ctx->checkAlive("step_begin"))
      return e;
  // Sizes first: the device buffer is grown before anything changes.
  int64_t tokens = 0;
  int32_t newMax = 0;
  for (int32_t c : newCounts) {
    tokens += std::max(c, 0);
    newMax = std::max(newMax, c);
  }
  size_t n = newIds.size();
  size_t bound = size_t(tokens) +
                 n * size_t(pool.state.geometry().maxBlocksPerRequest) + 3 * n;
  if (pool.ctx && device.size() < bound * 4) {
    // Rare: the old buffer may still be read by launches in flight.
    if (device.size())
      if (llvm::Error e = pool.ctx->synchronize())
        return withContext(std::move(e), "growing a step's tables");
    llvm::Expected<DeviceBuffer> d =
        DeviceBuffer::allocate(pool.ctx->context, std::max(bound * 4, size_t(4096)));
    if (!d)
      return d.takeError();
    device = std::move(*d);
  }

  std::vector<int32_t> mapping;
  int32_t freeBefore = pool.state.freeBlockCount();
  if (llvm::Error e = pool.state.append(newIds, newCounts, &mapping))
    return e;
  // From here a failure rolls the append back.
  auto rollback = [&](llvm::Error e) {
    std::vector<int32_t> zeros(n, 0);
    llvm::cantFail(pool.state.commit(newIds, zeros));
    return e;
  };
  int32_t w = llvm::cantFail(pool.state.maxBlocksOf(newIds));
  host.resize(mapping.size() + n * size_t(w) + 3 * n);
  std::copy(mapping.begin(), mapping.end(), host.begin());
  blockTableAt = mapping.size();
  seqLensAt = blockTableAt + n * size_t(w);
  contextLensAt = seqLensAt + n;
  queryLensAt = contextLensAt + n;
  llvm::cantFail(pool.state.fillBlockTable(newIds, w, host.data() + blockTableAt,
                                           host.data() + seqLensAt));
  for (size_t i = 0; i < n; ++i) {
    host[contextLensAt + i] = host[seqLensAt + i] - newCounts[i];
    host[queryLensAt + i] = newCounts[i];
  }
  if (pool.ctx) {
    if (pool.state.freeBlockCount() != freeBefore)
      pool.blockToSlotDirty = true;
    if (llvm::Error e = pool.syncBlockToSlot())
      return rollback(std::move(e));
    if (!host.empty())
      if (llvm::Error e = device.uploadAsync(host.data(), host.size() * 4,
                                             pool.ctx->stream))
        return rollback(std::move(e));
  }
  ids.assign(newIds.begin(), newIds.end());
  counts.assign(newCounts.begin(), newCounts.end());
  slotMapping = std::move(mapping);
  maxCount = newMax;
  width = w;
  open = true;
  pool.inOpenStep.insert(ids.begin(), ids.end());
  ++pool.openSteps;
  return llvm::Error::success();
}

llvm::Error Step::writeKV(int32_t layer, CUdeviceptr k, CUdeviceptr v) {
  if (llvm::Error e = checkLayer("step_write_kv", layer))
    return e;
  int64_t stride = pool.bytes().poolBytes / 2 / pool.model.numLayers;
  return launchAppend(*pool.kernels, pool.ctx->stream, k, v, at(0),
                      pool.blockToSlot.address(),
                      pool.poolK.address() + layer * stride,
                      pool.poolV.address() + layer * stride,
                      int32_t(slotMapping.size()), pool.model.numKvHeads);
}

llvm::Error Step::decode(int32_t layer, CUdeviceptr q, CUdeviceptr out,
                         float scale) {
  if (llvm::Error e = checkLayer("step_decode", layer))
    return e;
  for (size_t i = 0; i < ids.size(); ++i)
    if (counts[i] != 1)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "step_decode: request {0} has {1} tokens in this step; "
                       "decode takes one per request (kvarn_step_verify takes "
                       "several)",
                       ids[i], counts[i]);
  PoolBytes b = pool.bytes();
  int64_t cacheStride = b.cacheBytes / pool.model.numLayers;
  int64_t poolStride = b.poolBytes / 2 / pool.model.numLayers;
  return launchDecode(
      *pool.kernels, pool.ctx->stream, q, at(blockTableAt), at(seqLensAt),
      pool.blockToSlot.address(), pool.cache.address() + layer * cacheStride,
      pool.poolK.address() + layer * poolStride,
      pool.poolV.address() + layer * poolStride, out, scale,
      /*window=*/0, int32_t(ids.size()), width, pool.model.numKvHeads);
}

llvm::Error Step::verify(int32_t layer, CUdeviceptr q, CUdeviceptr out,
                         float scale) {
  if (llvm::Error e = checkLayer("step_verify", layer))
    return e;
  PoolBytes b = pool.bytes();
  int64_t cacheStride = b.cacheBytes / pool.model.numLayers;
  int64_t poolStride = b.poolBytes / 2 / pool.model.numLayers;
  return launchVerify(*pool.kernels, pool.ctx->stream, q, at(blockTableAt),
                      at(contextLensAt), at(queryLensAt),
                      pool.blockToSlot.address(),
                      pool.cache.address() + layer * cacheStride,
                      pool.poolK.address() + layer * poolStride,
                      pool.poolV.address() + layer * poolStride, out, scale,
                      /*window=*/0, int32_t(ids.size()), maxCount, width,
                      pool.model.numKvHeads);
}

llvm::Error Step::commit(const int32_t *accepted) {
  if (llvm::Error e = checkOpen("step_commit"))
    return e;
  llvm::ArrayRef<int32_t> a =
      accepted ? llvm::ArrayRef<int32_t>(accepted, ids.size())
               : llvm::ArrayRef<int32_t>(counts);
  // Past the tokens this step appended is an error even where the request
  // has older uncommitted ones (it cannot: steps commit everything).
  for (size_t i = 0; i < ids.size(); ++i)
    if (a[i] < 0 || a[i] > counts[i])
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "step_commit: request {0} appended {1} tokens in this "
                       "step, cannot accept {2}",
                       ids[i], counts[i], a[i]);
  if (llvm::Error e = pool.state.commit(ids, a))
    return e;
  for (RequestId id : ids)
    pool.inOpenStep.erase(id);
  --pool.openSteps;
  open = false;
  return llvm::Error::success();
}
