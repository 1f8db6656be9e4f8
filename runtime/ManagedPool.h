//===- ManagedPool.h - the pool behind kvarn_pool_t -------------*- C++ -*-===//
//
// Internal to the runtime. PoolState (the bookkeeping) plus, when there is a
// context, the device memory of every layer and the launches, all behind one
// mutex. Steps are the unit of work of a serving loop (kvarn.h).
//
// Device layout (pool::mixedBytes): one record cache per preset of its
// kvarn layers, [layers of the preset, blocks, Hk, record]; pool_k and
// pool_v, one allocation each, the rows of every layer with KV in layer
// order: [slots, G, Hk, D] fp16 for a kvarn layer, [blocks, G, Hk, D] for an
// fp16 layer; block_to_slot [blocks] i32 (the same slot in every kvarn
// layer's pool) and, when there are fp16 layers, the identity [blocks] that
// their kernels take (so every block of theirs is read from its rows). One
// flush launch per preset covers its layers: tile t names pool row
// (the layer's first row) + slot and block (index in the preset's cache) *
// blocks + b. A pool of one preset and no other kind has today's layout.
// An MLA pool (createMla) is one preset's layers with the latents in pool_k
// and the rope keys in pool_v, rows of their own widths.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_RUNTIME_MANAGEDPOOL_H
#define KVARN_RUNTIME_MANAGEDPOOL_H

#include "Kernels.h"

#include "kvarn/Runtime/Capacity.h"
#include "kvarn/Runtime/Memory.h"
#include "kvarn/Runtime/PoolState.h"
#include "kvarn/kvarn.h"

#include <memory>
#include <mutex>
#include <unordered_set>

namespace kvarn::runtime {

class Step;

class ManagedPool {
public:
  /// `context` null: bookkeeping only.
  /// `layers` empty: every layer kvarn with the pool's preset.
  static kvarn::Expected<std::unique_ptr<ManagedPool>>
  create(std::shared_ptr<ContextState> context,
         const kvarn_pool_config_t &config,
         Span<const kvarn_layer_config_t> layers = {});
  /// An MLA pool (kvarn_mla_pool_create): every layer one latent "KV head"
  /// of `config.preset` (an MLA preset; NULL: the default), kv_lora_rank
  /// `config.head_dim`, `ropeDim`, `config.num_q_heads` query heads;
  /// num_kv_heads must be 1. No sinks: every full block is flushed.
  static kvarn::Expected<std::unique_ptr<ManagedPool>>
  createMla(std::shared_ptr<ContextState> context,
            const kvarn_pool_config_t &config, int32_t ropeDim);

  std::mutex mutex; // guards everything below and every Step of this pool

  pool::PoolState state;
  pool::ModelShape model;
  RecordLayout layout; // of the pool's preset (dense pools)
  /// MLA pools: the latent record. poolK then holds the rotated latents
  /// [layers x slots, G, kv_lora_rank] and poolV the rope keys [layers x
  /// slots, G, rope_dim] (pool::mlaPoolBytes).
  std::optional<MlaRecordLayout> mla;
  std::vector<pool::LayerSpec> specs;
  pool::MixedBytes mixed;
  /// One preset, every layer kvarn: kvarn_pool_buffers' strides hold.
  bool uniform() const;
  int32_t numQHeads = 0;
  int32_t openSteps = 0;
  int32_t liveSteps = 0; // created, not destroyed
  std::unordered_set<pool::RequestId> inOpenStep;

  bool hasDevice() const { return ctx != nullptr; }
  kvarn::Error checkDevice(std::string_view what) const;

  /// Flushes every ready block (one launch over all layers) and frees their
  /// slots; without a device only the bookkeeping.
  kvarn::Expected<int32_t> flush();
  /// Uploads block_to_slot if it changed since the last upload.
  kvarn::Error syncBlockToSlot();
  /// The device memory of a layer's kernels; an error for an absent layer
  /// or one out of range.
  struct LayerMemory {
    KernelSet *kernels;
    CUdeviceptr cache, poolK, poolV, blockToSlot;
    int32_t window; // tokens; 0: no sliding window
  };
  kvarn::Expected<LayerMemory> layerMemory(const char *op, int32_t layer);
  /// The layer's range and kind (not absent), before any device check.
  kvarn::Error checkLayer(const char *op, int32_t layer) const;

  std::shared_ptr<ContextState> ctx;
  /// Per preset group of mixed.groupPreset; fp16 layers use fp16Kernels.
  std::vector<std::unique_ptr<KernelSet>> groupKernels;
  std::unique_ptr<KernelSet> fp16Kernels;
  std::vector<cuda::DeviceBuffer> caches; // per preset group
  cuda::DeviceBuffer poolK, poolV, blockToSlot, identity, flushTiles;
  bool blockToSlotDirty = true;

  /// How many splits a step's decode of `layer` over `batch` requests uses
  /// (1: plain decode): decodeSplitCount for batch x Hk pairs over the
  /// pool's context capacity (max_blocks_per_request, or the blocks a
  /// sliding window spans), this GPU's SMs and decode_split's CTAs per SM.
  /// It changes with the batch only, never with the sequence lengths.
  kvarn::Expected<int> decodeSplits(const LayerMemory &layer, int64_t batch);
  /// decode_split's partials (part_out, part_lse) for `batch` requests, one
  /// pair of buffers shared by every layer and step (their launches share
  /// the pool's stream), grown when a larger batch needs them.
  kvarn::Expected<std::pair<CUdeviceptr, CUdeviceptr>>
  splitPartials(int64_t batch);
  cuda::DeviceBuffer partOut, partLse;

private:
  ManagedPool(pool::PoolState s) : state(std::move(s)) {}
};

/// One serving step over some requests of a pool.
class Step {
public:
  explicit Step(ManagedPool &pool) : pool(pool) {}

  kvarn::Error begin(Span<const pool::RequestId> ids,
                     Span<const int32_t> counts);
  kvarn::Error writeKV(int32_t layer, CUdeviceptr k, CUdeviceptr v);
  kvarn::Error decode(int32_t layer, CUdeviceptr q, CUdeviceptr out,
                      float scale);
  kvarn::Error verify(int32_t layer, CUdeviceptr q, CUdeviceptr out,
                      float scale);
  kvarn::Error commit(const int32_t *accepted);

  ManagedPool &pool;
  bool open = false;
  std::vector<pool::RequestId> ids;
  std::vector<int32_t> counts;
  std::vector<int32_t> slotMapping;
  int32_t maxCount = 0, width = 0;

private:
  kvarn::Error checkOpen(const char *op) const;
  kvarn::Expected<ManagedPool::LayerMemory> checkLayer(const char *op,
                                                       int32_t layer) const;

  // Device tables of the open step, one buffer, one upload:
  // slot_mapping | block_table | seq_lens | context_lens | query_lens.
  std::vector<int32_t> host;
  cuda::DeviceBuffer device;
  size_t blockTableAt = 0, seqLensAt = 0, contextLensAt = 0, queryLensAt = 0;
  CUdeviceptr at(size_t index) const {
    return device.address() + index * sizeof(int32_t);
  }
};

} // namespace kvarn::runtime

#endif // KVARN_RUNTIME_MANAGEDPOOL_H
