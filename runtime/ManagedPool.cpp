//===- ManagedPool.cpp - the pool behind kvarn_pool_t ---------------------===//
//
// Each operation validates, then does its device work, then commits the
// bookkeeping, so a failure at any point leaves the pool as it was (the one
// exception: a failed upload after a step's append, which is undone by
// rolling the appended tokens back, restoring the same state).
//
//===----------------------------------------------------------------------===//

#include "ManagedPool.h"

#include "kvarn/Codegen/LaunchPolicy.h"
#include "kvarn/Runtime/DecodeSplit.h"
#include "kvarn/Support/Error.h"

using namespace kvarn;
using namespace kvarn::runtime;
using namespace kvarn::pool;
using namespace kvarn::cuda;

static const char *kindName(int32_t kind) {
  switch (kind) {
  case KVARN_LAYER_KVARN:
    return "kvarn";
  case KVARN_LAYER_FP16:
    return "fp16";
  case KVARN_LAYER_ABSENT:
    return "absent";
  }
  return "unknown";
}

kvarn::Expected<std::unique_ptr<ManagedPool>>
ManagedPool::create(std::shared_ptr<ContextState> context,
                    const kvarn_pool_config_t &c,
                    Span<const kvarn_layer_config_t> layerConfigs) {
  const char *presetName = c.preset ? c.preset : defaultPreset().name;
  if (isMlaPresetName(presetName))
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "pool: {0} is an MLA preset: an MLA pool comes from "
                     "kvarn_mla_pool_create (its plan from "
                     "kvarn_mla_capacity_plan)",
                     presetName);
  kvarn::Expected<const Preset *> preset = lookupPreset(presetName);
  if (!preset)
    return preset.takeError();
  presetName = (*preset)->name; // static storage
  kvarn::Expected<RecordLayout> layout =
      RecordLayout::get(**preset, c.head_dim);
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
  int32_t gqa = c.num_q_heads / c.num_kv_heads;
  dsl::Specialization spec{presetName, c.head_dim, gqa};
  if (kvarn::Error e = spec.check())
    return std::move(e);
  PoolGeometry g;
  g.blockSize = (*preset)->group;
  g.numBlocks = c.num_blocks;
  g.numPoolSlots = c.pool_slots;
  g.maxRequests = c.max_requests;
  g.maxBlocksPerRequest = c.max_blocks_per_request;
  // Every size is checked before anything is allocated.
  if (kvarn::Error e = g.check())
    return std::move(e);
  if (layerConfigs.empty()) {
    // Every layer alike: the sizes are checked before a per-layer table is
    // (num_layers may be anything here, unlike with a caller's table).
    kvarn::Expected<PoolBytes> bytes =
        poolBytes(*layout, {c.num_layers, c.num_kv_heads, c.head_dim},
                  g.numBlocks, g.numPoolSlots);
    if (!bytes)
      return withContext(bytes.takeError(), "pool");
    if (int64_t(c.num_layers) * c.num_blocks > INT32_MAX ||
        int64_t(c.num_layers) * c.pool_slots > INT32_MAX)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "pool: {0} layers x {1} blocks (or {2} pool slots) "
                       "overflow the flush kernel's 32-bit block and slot "
                       "indices",
                       c.num_layers, c.num_blocks, c.pool_slots);
  }
  // The layers: every one checked before anything is sized.
  std::vector<LayerSpec> specs(c.num_layers);
  if (!layerConfigs.empty() && int64_t(layerConfigs.size()) != c.num_layers)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "pool: {0} layer configs for num_layers = {1}",
                     layerConfigs.size(), c.num_layers);
  for (int32_t l = 0; l < c.num_layers; ++l) {
    LayerSpec &ls = specs[l];
    ls.layout = *layout;
    ls.preset = presetName;
    if (layerConfigs.empty())
      continue;
    const kvarn_layer_config_t &lc = layerConfigs[l];
    if (lc.kind != KVARN_LAYER_KVARN && lc.kind != KVARN_LAYER_FP16 &&
        lc.kind != KVARN_LAYER_ABSENT)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "pool: layer {0}: kind {1} is not KVARN_LAYER_KVARN "
                       "(0), KVARN_LAYER_FP16 (1) or KVARN_LAYER_ABSENT (2)",
                       l, lc.kind);
    if (lc.window < 0)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "pool: layer {0}: window {1} is negative (0: no "
                       "sliding window)",
                       l, lc.window);
    ls.kind = LayerKind(lc.kind);
    ls.window = lc.window;
    if (lc.kind != KVARN_LAYER_KVARN) {
      if (lc.preset)
        return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                         "pool: layer {0} is {1} but names preset '{2}'; "
                         "only kvarn layers have a preset",
                         l, kindName(lc.kind), lc.preset);
      if (lc.kind == KVARN_LAYER_ABSENT && lc.window)
        return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                         "pool: layer {0} is absent (no KV) but has a "
                         "window of {1} tokens",
                         l, lc.window);
      ls.preset = nullptr;
      continue;
    }
    if (!lc.preset)
      continue;
    kvarn::Expected<const Preset *> lp = lookupPreset(lc.preset);
    if (!lp)
      return withContext(lp.takeError(), "pool: layer " + std::to_string(l));
    if ((*lp)->group != (*preset)->group)
      return makeError(KVARN_ERROR_UNSUPPORTED_SHAPE,
                       "pool: layer {0}'s preset {1} has tiles of {2} "
                       "tokens, the pool's blocks ({3}) have {4}; the layers "
                       "of a pool share its block size",
                       l, (*lp)->name, (*lp)->group, presetName,
                       (*preset)->group);
    dsl::Specialization ls2{(*lp)->name, c.head_dim, gqa};
    if (kvarn::Error e = ls2.check())
      return withContext(std::move(e), "pool: layer " + std::to_string(l));
    kvarn::Expected<RecordLayout> ll = RecordLayout::get(**lp, c.head_dim);
    if (!ll)
      return withContext(ll.takeError(), "pool: layer " + std::to_string(l));
    ls.layout = *ll;
    ls.preset = (*lp)->name;
  }
  ModelShape model{c.num_layers, c.num_kv_heads, c.head_dim};
  kvarn::Expected<MixedBytes> mixed =
      mixedBytes(specs, c.num_kv_heads, c.head_dim, g.blockSize, g.numBlocks,
                 g.numPoolSlots);
  if (!mixed)
    return withContext(mixed.takeError(), "pool");
  // The flush kernel takes pool rows and blocks of a preset's cache as i32
  // indices (tile_slots, tile_blocks); the kernels index rows in i32 too.
  int64_t mostInGroup = 0;
  for (const LayerBytes &lb : mixed->layers)
    mostInGroup = std::max<int64_t>(mostInGroup, lb.indexInGroup + 1);
  if (mostInGroup * g.numBlocks > INT32_MAX || mixed->poolRows > INT32_MAX)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "pool: {0} layers x {1} blocks (or {2} pool rows of "
                     "every layer) overflow the flush kernel's 32-bit block "
                     "and slot indices",
                     c.num_layers, g.numBlocks, mixed->poolRows);
  kvarn::Expected<PoolState> state = PoolState::create(g);
  if (!state)
    return state.takeError();

  std::unique_ptr<ManagedPool> p(new ManagedPool(std::move(*state)));
  p->model = model;
  p->layout = *layout;
  p->numQHeads = c.num_q_heads;
  p->specs = std::move(specs);
  p->mixed = std::move(*mixed);
  if (!context)
    return std::move(p);

  if (kvarn::Error e = context->checkAlive("pool"))
    return std::move(e);
  p->ctx = context;
  const MixedBytes &b = p->mixed;
  for (const char *name : b.groupPreset) {
    kvarn::Expected<std::unique_ptr<KernelSet>> ks =
        KernelSet::create(context, {name, c.head_dim, gqa});
    if (!ks)
      return ks.takeError();
    p->groupKernels.push_back(std::move(*ks));
  }
  if (b.fp16BytesPerBlock) {
    kvarn::Expected<std::unique_ptr<KernelSet>> ks =
        KernelSet::create(context, spec);
    if (!ks)
      return ks.takeError();
    p->fp16Kernels = std::move(*ks);
  }
  auto allocate = [&](DeviceBuffer &buffer, int64_t bytes) -> kvarn::Error {
    kvarn::Expected<DeviceBuffer> d =
        DeviceBuffer::allocate(context->context, size_t(bytes));
    if (!d)
      return d.takeError();
    buffer = std::move(*d);
    return kvarn::Error::success();
  };
  p->caches.resize(b.groupCacheBytes.size());
  for (size_t i = 0; i < b.groupCacheBytes.size(); ++i)
    if (kvarn::Error e = allocate(p->caches[i], b.groupCacheBytes[i]))
      return std::move(e);
  if (kvarn::Error e = allocate(p->poolK, b.poolBytes / 2))
    return std::move(e);
  if (kvarn::Error e = allocate(p->poolV, b.poolBytes / 2))
    return std::move(e);
  if (kvarn::Error e = allocate(p->blockToSlot, int64_t(g.numBlocks) * 4))
    return std::move(e);
  if (b.fp16BytesPerBlock) {
    if (kvarn::Error e = allocate(p->identity, int64_t(g.numBlocks) * 4))
      return std::move(e);
    std::vector<int32_t> ids(g.numBlocks);
    for (int32_t i = 0; i < g.numBlocks; ++i)
      ids[i] = i;
    if (kvarn::Error e = p->identity.uploadAsync(ids.data(), ids.size() * 4,
                                                 context->stream))
      return std::move(e);
    // `ids` is pageable memory: the driver staged it before returning.
  }
  // At most every slot's block, in every kvarn layer: rows then blocks.
  int64_t kvarnLayers = 0;
  for (const LayerBytes &lb : b.layers)
    kvarnLayers += lb.kind == LayerKind::Kvarn;
  if (kvarnLayers)
    if (kvarn::Error e =
            allocate(p->flushTiles, 2 * kvarnLayers * g.numPoolSlots * 4))
      return std::move(e);
  // The kernels a serving step uses, so no step compiles.
  auto load = [](KernelSet &ks,
                 std::initializer_list<KernelKind> kinds) -> kvarn::Error {
    for (KernelKind k : kinds)
      if (kvarn::Expected<const LoadedKernel *> loaded = ks.get(k); !loaded)
        return loaded.takeError();
    return kvarn::Error::success();
  };
  for (auto &ks : p->groupKernels)
    if (kvarn::Error e = load(*ks, {KernelKind::Append, KernelKind::Flush,
                                    KernelKind::Decode, KernelKind::DecodeSplit,
                                    KernelKind::Combine, KernelKind::Verify}))
      return std::move(e);
  if (p->fp16Kernels)
    if (kvarn::Error e =
            load(*p->fp16Kernels, {KernelKind::Append, KernelKind::Decode,
                                   KernelKind::DecodeSplit, KernelKind::Combine,
                                   KernelKind::Verify}))
      return std::move(e);
  return std::move(p);
}

kvarn::Expected<std::unique_ptr<ManagedPool>>
ManagedPool::createMla(std::shared_ptr<ContextState> context,
                       const kvarn_pool_config_t &c, int32_t ropeDim) {
  const char *name = c.preset ? c.preset : allMlaPresets().front().name;
  if (!isMlaPresetName(name))
    return makeError(KVARN_ERROR_UNKNOWN_PRESET,
                     "MLA pool: '{0}' is not an MLA preset (MLA presets: {1})",
                     name, allMlaPresets().front().name);
  const MlaPreset &preset = *kvarn::cantFail(lookupMlaPreset(name));
  name = preset.name; // static storage
  if (c.num_layers <= 0 || c.num_q_heads <= 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "MLA pool: num_layers ({0}) and num_q_heads ({1}) must "
                     "be positive",
                     c.num_layers, c.num_q_heads);
  if (c.num_kv_heads != 1)
    return makeError(KVARN_ERROR_UNSUPPORTED_SHAPE,
                     "MLA pool: num_kv_heads is {0}; an MLA layer caches one "
                     "latent, its one KV head",
                     c.num_kv_heads);
  if (c.block_size != 0 && c.block_size != preset.group)
    return makeError(KVARN_ERROR_UNSUPPORTED_SHAPE,
                     "MLA pool: block_size {0} differs from preset {1}'s "
                     "{2}-token blocks",
                     c.block_size, name, preset.group);
  dsl::Specialization spec{name, c.head_dim, c.num_q_heads, DType::F16,
                           ropeDim};
  if (kvarn::Error e = spec.check())
    return withContext(std::move(e), "MLA pool");
  MlaRecordLayout layout =
      kvarn::cantFail(MlaRecordLayout::get(preset, c.head_dim, ropeDim));
  PoolGeometry g;
  g.blockSize = preset.group;
  g.numBlocks = c.num_blocks;
  g.numPoolSlots = c.pool_slots;
  g.maxRequests = c.max_requests;
  g.maxBlocksPerRequest = c.max_blocks_per_request;
  g.keepSinks = false;
  if (kvarn::Error e = g.check())
    return std::move(e);
  // The flush kernel takes pool rows and cache blocks as i32 indices.
  if (int64_t(c.num_layers) * c.num_blocks > INT32_MAX ||
      int64_t(c.num_layers) * c.pool_slots > INT32_MAX)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "MLA pool: {0} layers x {1} blocks (or {2} pool slots) "
                     "overflow the flush kernel's 32-bit block and slot "
                     "indices",
                     c.num_layers, c.num_blocks, c.pool_slots);
  kvarn::Expected<MixedBytes> bytes =
      mlaPoolBytes(layout, name, c.num_layers, g.numBlocks, g.numPoolSlots);
  if (!bytes)
    return bytes.takeError();
  kvarn::Expected<PoolState> state = PoolState::create(g);
  if (!state)
    return state.takeError();

  std::unique_ptr<ManagedPool> p(new ManagedPool(std::move(*state)));
  p->model = {c.num_layers, 1, c.head_dim};
  p->mla = layout;
  p->numQHeads = c.num_q_heads;
  p->specs.resize(c.num_layers);
  for (LayerSpec &ls : p->specs)
    ls.preset = name;
  p->mixed = std::move(*bytes);
  if (!context)
    return std::move(p);

  if (kvarn::Error e = context->checkAlive("MLA pool"))
    return std::move(e);
  p->ctx = context;
  kvarn::Expected<std::unique_ptr<KernelSet>> ks =
      KernelSet::create(context, spec);
  if (!ks)
    return ks.takeError();
  p->groupKernels.push_back(std::move(*ks));
  auto allocate = [&](DeviceBuffer &buffer, int64_t n) -> kvarn::Error {
    kvarn::Expected<DeviceBuffer> d =
        DeviceBuffer::allocate(context->context, size_t(n));
    if (!d)
      return d.takeError();
    buffer = std::move(*d);
    return kvarn::Error::success();
  };
  const int64_t rows = p->mixed.poolRows, g16 = int64_t(g.blockSize) * 2;
  p->caches.resize(1);
  for (auto [buffer, n] :
       {std::pair{&p->caches[0], p->mixed.groupCacheBytes[0]},
        std::pair{&p->poolK, rows * g16 * layout.kvLoraRank},
        std::pair{&p->poolV, rows * g16 * layout.ropeDim},
        std::pair{&p->blockToSlot, int64_t(g.numBlocks) * 4},
        std::pair{&p->flushTiles, 2 * rows * 4}})
    if (kvarn::Error e = allocate(*buffer, std::max<int64_t>(n, 4)))
      return std::move(e);
  // The kernels a serving step uses, so no step compiles.
  for (KernelKind k : {KernelKind::MlaAppend, KernelKind::MlaFlush,
                       KernelKind::MlaDecode, KernelKind::MlaDecodeSplit,
                       KernelKind::MlaCombine, KernelKind::MlaVerify})
    if (kvarn::Expected<const LoadedKernel *> loaded =
            p->groupKernels[0]->get(k);
        !loaded)
      return loaded.takeError();
  return std::move(p);
}

bool ManagedPool::uniform() const {
  if (mixed.groupPreset.size() != 1)
    return false;
  for (const LayerBytes &l : mixed.layers)
    if (l.kind != LayerKind::Kvarn)
      return false;
  return true;
}

kvarn::Error ManagedPool::checkLayer(const char *op, int32_t layer) const {
  if (layer < 0 || layer >= model.numLayers)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: layer {1} is not in [0, {2})", op, layer,
                     model.numLayers);
  if (mixed.layers[layer].kind == LayerKind::Absent)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: layer {1} is absent (configured without a KV "
                     "cache: a Mamba or linear-attention layer)",
                     op, layer);
  return kvarn::Error::success();
}

kvarn::Expected<ManagedPool::LayerMemory>
ManagedPool::layerMemory(const char *op, int32_t layer) {
  if (kvarn::Error e = checkLayer(op, layer))
    return std::move(e);
  if (kvarn::Error e = checkDevice(op))
    return std::move(e);
  const LayerBytes &l = mixed.layers[layer];
  LayerMemory m;
  m.window = l.window;
  m.poolK = poolK.address() + l.poolOffset;
  m.poolV = poolV.address() + l.poolOffset;
  if (mla) // rows of their own widths: latents in poolK, rope keys in poolV
    m.poolV =
        poolV.address() + l.poolRows * int64_t(mla->group) * mla->ropeDim * 2;
  if (l.kind == LayerKind::Kvarn) {
    m.kernels = groupKernels[l.group].get();
    m.cache = caches[l.group].address() + l.cacheOffset;
    m.blockToSlot = blockToSlot.address();
  } else {
    // Every block of an fp16 layer is in its rows (the identity table), so
    // its kernels never read a record: the cache argument only has to be a
    // valid pointer.
    m.kernels = fp16Kernels.get();
    m.cache = m.poolK;
    m.blockToSlot = identity.address();
  }
  return m;
}

kvarn::Error ManagedPool::checkDevice(std::string_view what) const {
  if (!ctx)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: the pool was created without a context "
                     "(bookkeeping only)",
                     what);
  return ctx->checkAlive(what);
}

kvarn::Error ManagedPool::syncBlockToSlot() {
  if (!ctx || !blockToSlotDirty)
    return kvarn::Error::success();
  Span<const int32_t> host = state.blockToSlot();
  // Pageable memory: the driver stages it before returning, so the host
  // array may change right after. TODO: a pinned ring buffer would keep the
  // driver from ever waiting on the stream here.
  if (kvarn::Error e =
          blockToSlot.uploadAsync(host.data(), host.size() * 4, ctx->stream))
    return e;
  blockToSlotDirty = false;
  return kvarn::Error::success();
}

kvarn::Expected<int32_t> ManagedPool::flush() {
  if (openSteps)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "flush: {0} step(s) of the pool are open; commit them "
                     "first (their tables name pool slots a flush frees)",
                     openSteps);
  if (ctx)
    if (kvarn::Error e = ctx->checkAlive("flush"))
      return std::move(e);
  std::vector<FlushTile> work = state.flushWork();
  if (!work.empty() && ctx) {
    std::vector<int32_t> blocks, slots;
    for (const FlushTile &t : work) {
      blocks.push_back(t.block);
      slots.push_back(t.slot);
    }
    // Only kvarn layers: an fp16 layer's rows are its blocks, never flushed.
    std::vector<FlushLaunch> launches =
        flushLaunches(mixed, blocks, slots, state.geometry().numBlocks);
    size_t at = 0;
    for (const FlushLaunch &f : launches) {
      size_t tiles = f.poolRows.size();
      // The launches share one tile buffer, each its own part.
      std::vector<int32_t> lists(f.poolRows);
      lists.insert(lists.end(), f.cacheBlocks.begin(), f.cacheBlocks.end());
      if (kvarn::Error e = flushTiles.uploadAsync(
              lists.data(), lists.size() * 4, ctx->stream, at * 4))
        return std::move(e);
      CUdeviceptr base = flushTiles.address() + at * 4;
      kvarn::Error e =
          mla ? launchMlaFlush(*groupKernels[f.group], ctx->stream,
                               poolK.address(), poolV.address(), base,
                               base + tiles * 4, caches[f.group].address(),
                               int32_t(tiles))
              : launchFlush(*groupKernels[f.group], ctx->stream,
                            poolK.address(), poolV.address(), base,
                            base + tiles * 4, caches[f.group].address(),
                            int32_t(tiles), model.numKvHeads);
      if (e)
        return std::move(e);
      at += 2 * tiles;
    }
  }
  state.takeFlushWork();
  if (!work.empty())
    blockToSlotDirty = true;
  return int32_t(work.size());
}

//===----------------------------------------------------------------------===//
// Step
//===----------------------------------------------------------------------===//

kvarn::Error Step::checkOpen(const char *op) const {
  if (!open)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: the step is not open (kvarn_step_begin first)", op);
  return kvarn::Error::success();
}

kvarn::Expected<ManagedPool::LayerMemory>
Step::checkLayer(const char *op, int32_t layer) const {
  if (kvarn::Error e = checkOpen(op))
    return std::move(e);
  return pool.layerMemory(op, layer);
}

kvarn::Error Step::begin(Span<const RequestId> newIds,
                         Span<const int32_t> newCounts) {
  if (open)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "step_begin: the step is already open (commit it first)");
  for (RequestId id : newIds)
    if (pool.inOpenStep.count(id))
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "step_begin: request {0} is in another open step", id);
  if (pool.ctx)
    if (kvarn::Error e = pool.ctx->checkAlive("step_begin"))
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
      if (kvarn::Error e = pool.ctx->synchronize())
        return withContext(std::move(e), "growing a step's tables");
    kvarn::Expected<DeviceBuffer> d = DeviceBuffer::allocate(
        pool.ctx->context, std::max(bound * 4, size_t(4096)));
    if (!d)
      return d.takeError();
    device = std::move(*d);
  }

  std::vector<int32_t> mapping;
  int32_t freeBefore = pool.state.freeBlockCount();
  if (kvarn::Error e = pool.state.append(newIds, newCounts, &mapping))
    return e;
  // From here a failure rolls the append back.
  auto rollback = [&](kvarn::Error e) {
    std::vector<int32_t> zeros(n, 0);
    kvarn::cantFail(pool.state.commit(newIds, zeros));
    return e;
  };
  int32_t w = kvarn::cantFail(pool.state.maxBlocksOf(newIds));
  host.resize(mapping.size() + n * size_t(w) + 3 * n);
  std::copy(mapping.begin(), mapping.end(), host.begin());
  blockTableAt = mapping.size();
  seqLensAt = blockTableAt + n * size_t(w);
  contextLensAt = seqLensAt + n;
  queryLensAt = contextLensAt + n;
  kvarn::cantFail(pool.state.fillBlockTable(
      newIds, w, host.data() + blockTableAt, host.data() + seqLensAt));
  for (size_t i = 0; i < n; ++i) {
    host[contextLensAt + i] = host[seqLensAt + i] - newCounts[i];
    host[queryLensAt + i] = newCounts[i];
  }
  if (pool.ctx) {
    if (pool.state.freeBlockCount() != freeBefore)
      pool.blockToSlotDirty = true;
    if (kvarn::Error e = pool.syncBlockToSlot())
      return rollback(std::move(e));
    if (!host.empty())
      if (kvarn::Error e = device.uploadAsync(host.data(), host.size() * 4,
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
  return kvarn::Error::success();
}

kvarn::Error Step::writeKV(int32_t layer, CUdeviceptr k, CUdeviceptr v) {
  kvarn::Expected<ManagedPool::LayerMemory> m =
      checkLayer("step_write_kv", layer);
  if (!m)
    return m.takeError();
  if (pool.mla) // k: the latents [tokens, R], v: the rope keys [tokens, E]
    return launchMlaAppend(*m->kernels, pool.ctx->stream, k, v, at(0),
                           m->blockToSlot, m->poolK, m->poolV,
                           int32_t(slotMapping.size()));
  return launchAppend(*m->kernels, pool.ctx->stream, k, v, at(0),
                      m->blockToSlot, m->poolK, m->poolV,
                      int32_t(slotMapping.size()), pool.model.numKvHeads);
}

kvarn::Error Step::decode(int32_t layer, CUdeviceptr q, CUdeviceptr out,
                          float scale) {
  kvarn::Expected<ManagedPool::LayerMemory> m =
      checkLayer("step_decode", layer);
  if (!m)
    return m.takeError();
  for (size_t i = 0; i < ids.size(); ++i)
    if (counts[i] != 1)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "step_decode: request {0} has {1} tokens in this step; "
                       "decode takes one per request (kvarn_step_verify takes "
                       "several)",
                       ids[i], counts[i]);
  // Flash-decoding where plain decode's batch x Hk CTAs would leave SMs
  // idle (a few requests at long contexts).
  kvarn::Expected<int> splits = pool.decodeSplits(*m, int64_t(ids.size()));
  if (!splits)
    return withContext(splits.takeError(), "step_decode");
  if (pool.mla) {
    // q [n, heads, R + E] (the absorbed query), out [n, heads, R].
    if (*splits == 1)
      return launchMlaDecode(*m->kernels, pool.ctx->stream, q, at(blockTableAt),
                             at(seqLensAt), m->blockToSlot, m->cache, m->poolK,
                             m->poolV, out, scale, int32_t(ids.size()), width);
    kvarn::Expected<std::pair<CUdeviceptr, CUdeviceptr>> partials =
        pool.splitPartials(int64_t(ids.size()));
    if (!partials)
      return withContext(partials.takeError(), "step_decode");
    return launchMlaDecodeSplit(
        *m->kernels, pool.ctx->stream, q, at(blockTableAt), at(seqLensAt),
        m->blockToSlot, m->cache, m->poolK, m->poolV, partials->first,
        partials->second, out, scale, int32_t(ids.size()), width, *splits);
  }
  if (*splits > 1) {
    kvarn::Expected<std::pair<CUdeviceptr, CUdeviceptr>> partials =
        pool.splitPartials(int64_t(ids.size()));
    if (!partials)
      return withContext(partials.takeError(), "step_decode");
    return launchDecodeSplit(*m->kernels, pool.ctx->stream, q, at(blockTableAt),
                             at(seqLensAt), m->blockToSlot, m->cache, m->poolK,
                             m->poolV, partials->first, partials->second, out,
                             scale, m->window, int32_t(ids.size()), width,
                             pool.model.numKvHeads, *splits);
  }
  return launchDecode(*m->kernels, pool.ctx->stream, q, at(blockTableAt),
                      at(seqLensAt), m->blockToSlot, m->cache, m->poolK,
                      m->poolV, out, scale, m->window, int32_t(ids.size()),
                      width, pool.model.numKvHeads);
}

kvarn::Expected<int> ManagedPool::decodeSplits(const LayerMemory &layer,
                                               int64_t batch) {
  kvarn::Expected<int64_t> blocks =
      decodeBlocksRead(state.geometry().maxBlocksPerRequest, layer.window,
                       state.geometry().blockSize);
  if (!blocks)
    return blocks.takeError();
  // An MLA request's decode programs: its query heads in groups.
  int64_t perRequest =
      mla ? numQHeads / mlaHeadsPerProgram(numQHeads) : model.numKvHeads;
  return decodeSplitCountFor(*layer.kernels, batch * perRequest, *blocks);
}

kvarn::Expected<std::pair<CUdeviceptr, CUdeviceptr>>
ManagedPool::splitPartials(int64_t batch) {
  kvarn::Expected<DecodeSplitPartialBytes> bytes = decodeSplitPartialBytes(
      batch, model.numKvHeads, numQHeads / model.numKvHeads, model.headDim);
  if (!bytes)
    return bytes.takeError();
  int64_t outBytes = bytes->partOut, lseBytes = bytes->partLse;
  if (partOut.size() < size_t(outBytes)) {
    // Rare (a larger batch than any before): launches in flight may still
    // read the old buffers.
    if (partOut.size())
      if (kvarn::Error e = ctx->synchronize())
        return withContext(std::move(e), "growing decode_split's partials");
    kvarn::Expected<DeviceBuffer> o =
        DeviceBuffer::allocate(ctx->context, size_t(outBytes));
    if (!o)
      return o.takeError();
    kvarn::Expected<DeviceBuffer> l =
        DeviceBuffer::allocate(ctx->context, size_t(lseBytes));
    if (!l)
      return l.takeError();
    partOut = std::move(*o);
    partLse = std::move(*l);
  }
  return std::make_pair(partOut.address(), partLse.address());
}

kvarn::Error Step::verify(int32_t layer, CUdeviceptr q, CUdeviceptr out,
                          float scale) {
  kvarn::Expected<ManagedPool::LayerMemory> m =
      checkLayer("step_verify", layer);
  if (!m)
    return m.takeError();
  if (pool.mla)
    return launchMlaVerify(*m->kernels, pool.ctx->stream, q, at(blockTableAt),
                           at(contextLensAt), at(queryLensAt), m->blockToSlot,
                           m->cache, m->poolK, m->poolV, out, scale,
                           int32_t(ids.size()), maxCount, width);
  return launchVerify(
      *m->kernels, pool.ctx->stream, q, at(blockTableAt), at(contextLensAt),
      at(queryLensAt), m->blockToSlot, m->cache, m->poolK, m->poolV, out, scale,
      m->window, int32_t(ids.size()), maxCount, width, pool.model.numKvHeads);
}

kvarn::Error Step::commit(const int32_t *accepted) {
  if (kvarn::Error e = checkOpen("step_commit"))
    return e;
  Span<const int32_t> a = accepted ? Span<const int32_t>(accepted, ids.size())
                                   : Span<const int32_t>(counts);
  // Past the tokens this step appended is an error even where the request
  // has older uncommitted ones (it cannot: steps commit everything).
  for (size_t i = 0; i < ids.size(); ++i)
    if (a[i] < 0 || a[i] > counts[i])
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "step_commit: request {0} appended {1} tokens in this "
                       "step, cannot accept {2}",
                       ids[i], counts[i], a[i]);
  if (kvarn::Error e = pool.state.commit(ids, a))
    return e;
  for (RequestId id : ids)
    pool.inOpenStep.erase(id);
  --pool.openSteps;
  open = false;
  return kvarn::Error::success();
}
