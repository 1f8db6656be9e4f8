//===- Capacity.h - what a memory budget holds, quantized vs fp16 -*- C++ -*-===//
//
// The sizes of the managed pool's device memory and how many tokens a budget
// holds, counting everything the pool keeps: the records of every block (the
// sink's and the tail's included, which live in fp16 until flushed but keep
// their record space), and the fp16 pool slots. Plain arithmetic over the one
// record layout (lib/Layout); no CUDA.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_RUNTIME_CAPACITY_H
#define KVARN_RUNTIME_CAPACITY_H

#include "kvarn/Layout/MlaRecordLayout.h"
#include "kvarn/Layout/RecordLayout.h"

#include "kvarn/Support/Error.h"
#include "kvarn/Support/Span.h"

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <vector>

namespace kvarn::pool {

/// The model side of a pool.
struct ModelShape {
  int32_t numLayers = 0;
  int32_t numKvHeads = 0;
  int32_t headDim = 0;
};

/// Device bytes of a pool, per layer and in total.
struct PoolBytes {
  int64_t recordBytes = 0;      // one (block, KV head) record
  int64_t cacheBytesPerBlock = 0; // one block, every layer and KV head
  int64_t poolBytesPerSlot = 0; // K and V fp16 rows of one slot, every layer
  int64_t cacheBytes = 0;       // [layers, blocks, Hk, record]
  int64_t poolBytes = 0;        // 2 x [layers, slots, G, Hk, D] fp16
  int64_t totalBytes() const { return cacheBytes + poolBytes; }
};

/// KVARN_ERROR_INVALID_ARGUMENT when a count is negative or a byte count
/// does not fit in int64: callers size allocations from these, so a wrapped
/// value must never come back.
kvarn::Expected<PoolBytes> poolBytes(const RecordLayout &layout,
                                     const ModelShape &model, int64_t numBlocks,
                                     int64_t numPoolSlots);

/// The product of `factors`, or nullopt when it overflows int64.
std::optional<int64_t> checkedProduct(std::initializer_list<int64_t> factors);

struct Capacity {
  int64_t numBlocks = 0;
  int64_t numPoolSlots = 0;
  int64_t tokens = 0;               // numBlocks * G
  int64_t usedBytes = 0;            // of the budget
  double recordBytesPerToken = 0;   // per token and KV head: record / G
  double bytesPerToken = 0;         // per token, KV head and layer, all in
  int64_t fp16Tokens = 0;           // the same budget as an fp16 K/V cache
  double ratioVsFp16 = 0;           // tokens / fp16Tokens
};

/// The most blocks a budget of `budgetBytes` holds with `numPoolSlots` fp16
/// slots, and what that is worth against an fp16 cache of the same bytes.
/// `numPoolSlots` < 0 asks for the default for `concurrentRequests`:
/// defaultPoolSlots().
kvarn::Expected<Capacity> planCapacity(const RecordLayout &layout,
                                       const ModelShape &model,
                                       int64_t budgetBytes,
                                       int64_t concurrentRequests,
                                       int64_t numPoolSlots = -1);

/// `perRequest` slots per request (2 on the dense path: its sink and its
/// partial tail; 1 on MLA's, which has no sink) plus one per eight requests
/// for blocks that fill during a step and wait for its flush; nullopt when
/// that overflows int64.
std::optional<int64_t> defaultPoolSlots(int64_t concurrentRequests,
                                        int64_t perRequest = 2);

/// The capacity of a budget for `numLayers` MLA layers (docs/kvarn.md, "MLA
/// records"): each layer one latent "KV head", its blocks' records
/// [blocks, record] and fp16 tail slots [slots, G, kv_lora_rank +
/// rope_dim] (the latent rotated, the rope keys as is); no sink block, so
/// the default is one slot per request (its partial tail) plus one per
/// eight for blocks that fill during a step and wait for its flush. The
/// fp16 comparison is the same latent and rope keys in 16 bits: the plan of
/// an MLA pool (kvarn_mla_pool_create).
kvarn::Expected<Capacity> planMlaCapacity(const MlaRecordLayout &layout,
                                          int32_t numLayers,
                                          int64_t budgetBytes,
                                          int64_t concurrentRequests,
                                          int64_t numPoolSlots = -1);

/// What a layer of a mixed pool keeps (kvarn.h, kvarn_layer_kind_t).
enum class LayerKind : int32_t { Kvarn = 0, Fp16 = 1, Absent = 2 };

/// One layer of a pool: its kind, the record layout of its preset (kvarn
/// layers only) and its sliding window in tokens (0: none).
struct LayerSpec {
  LayerKind kind = LayerKind::Kvarn;
  RecordLayout layout;          // kvarn layers
  const char *preset = nullptr; // kvarn layers: the preset's name
  int32_t window = 0;
};

/// Where one layer of a mixed pool lives and what it costs. Kvarn layers of
/// one preset share a record cache [layers of the group, blocks, Hk,
/// record] (`group`, `indexInGroup`); every layer with KV has fp16 rows in
/// pool_k and pool_v: [slots, G, Hk, D] for a kvarn layer (its sinks and
/// tails, freed by flush), [blocks, G, Hk, D] for an fp16 layer (every
/// block, never flushed). Absent layers own nothing.
struct LayerBytes {
  LayerKind kind = LayerKind::Kvarn;
  int32_t window = 0;
  int32_t group = -1;             // kvarn: index of its preset's record cache
  int32_t indexInGroup = -1;      // kvarn: its layer index in that cache
  int64_t recordBytes = 0;        // kvarn: one (block, KV head) record
  int64_t cacheBytesPerBlock = 0; // kvarn: Hk records
  int64_t poolBytesPerSlot = 0;   // kvarn: K and V rows of one slot
  int64_t poolBytesPerBlock = 0;  // fp16: K and V rows of one block
  int64_t cacheOffset = 0;        // bytes into its group's record cache
  int64_t cacheBytes = 0;
  int64_t poolOffset = 0; // bytes into pool_k (and into pool_v)
  int64_t poolBytes = 0;  // K and V together
  int64_t poolRows = 0;   // rows of [G, Hk, D] before poolOffset
  int64_t totalBytes() const { return cacheBytes + poolBytes; }
};

/// The byte layout of a pool of `layers` (all of one head_dim and block
/// size): per layer and the allocations' sizes. KVARN_ERROR_INVALID_ARGUMENT
/// when a count is negative or a size does not fit in int64.
struct MixedBytes {
  std::vector<LayerBytes> layers;
  std::vector<int64_t> groupCacheBytes; // one record cache per preset
  std::vector<const char *> groupPreset;
  int64_t poolBytes = 0;          // pool_k + pool_v
  int64_t poolRows = 0;           // rows of [G, Hk, D] in pool_k
  int64_t cacheBytesPerBlock = 0; // every kvarn layer
  int64_t fp16BytesPerBlock = 0;  // every fp16 layer
  int64_t poolBytesPerSlot = 0;   // every kvarn layer
  int32_t kvLayers = 0;           // layers that are not absent
  int64_t totalBytes() const;
};
kvarn::Expected<MixedBytes> mixedBytes(Span<const LayerSpec> layers,
                                       int32_t numKvHeads, int32_t headDim,
                                       int32_t blockSize, int64_t numBlocks,
                                       int64_t numPoolSlots);

/// The byte layout of an MLA pool (every layer one latent "KV head" of
/// `layout`, no other kind): per layer a record cache [blocks, record] and
/// fp16 rows in two allocations, the rotated latents [layers x slots, G,
/// kv_lora_rank] (pool_k) and the rope keys [layers x slots, G, rope_dim]
/// (pool_v), layer l's from row l x slots (LayerBytes::poolRows; poolOffset
/// is the bytes into pool_k). One record cache, group 0, so flushLaunches
/// serves it. KVARN_ERROR_INVALID_ARGUMENT when a size does not fit in int64.
kvarn::Expected<MixedBytes> mlaPoolBytes(const MlaRecordLayout &layout,
                                         const char *preset, int32_t numLayers,
                                         int64_t numBlocks,
                                         int64_t numPoolSlots);
/// capacityOf for an MLA pool: the fp16 comparison is the latent and rope
/// keys in 16 bits, (kv_lora_rank + rope_dim) x 2 bytes a token and layer.
Capacity mlaCapacityOf(const MlaRecordLayout &layout, const MixedBytes &b,
                       int64_t numBlocks, int64_t numPoolSlots);

/// planCapacity for a mixed pool: the fp16 comparison counts the layers
/// that have KV (an absent layer costs nothing either way).
kvarn::Expected<Capacity> planCapacity(Span<const LayerSpec> layers,
                                       int32_t numKvHeads, int32_t headDim,
                                       int32_t blockSize, int64_t budgetBytes,
                                       int64_t concurrentRequests,
                                       int64_t numPoolSlots = -1);
/// The capacity figures of a pool of `numBlocks` blocks and the given bytes.
Capacity capacityOf(const MixedBytes &b, int32_t numKvHeads, int32_t headDim,
                    int32_t blockSize, int64_t numBlocks, int64_t numPoolSlots);

/// One flush launch: the tiles of one preset's record cache, as the flush
/// kernel takes them (pool rows of pool_k/pool_v, blocks of the group's
/// cache [layers of the group x blocks]).
struct FlushLaunch {
  int32_t group = 0;
  std::vector<int32_t> poolRows;
  std::vector<int32_t> cacheBlocks;
};
/// The launches that flush `work` (blocks and their slots): one per preset
/// group, covering only kvarn layers.
std::vector<FlushLaunch> flushLaunches(const MixedBytes &b,
                                       Span<const int32_t> blocks,
                                       Span<const int32_t> slots,
                                       int64_t numBlocks);

} // namespace kvarn::pool

#endif // KVARN_RUNTIME_CAPACITY_H
