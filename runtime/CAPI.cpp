//===- CAPI.cpp - the kvarn C API -----------------------------------------===//
//
// Every entry point validates its arguments, turns internal kvarn::Errors into
// a status and a thread-local message, and never lets an error escape.
//
//===----------------------------------------------------------------------===//

#include "Kernels.h"
#include "ManagedPool.h"
#include "kvarn/Codegen/LaunchPolicy.h"
#include "kvarn/Layout/MlaRecordLayout.h"
#include "kvarn/Layout/RecordLayout.h"
#include "kvarn/Runtime/Capacity.h"
#include "kvarn/Runtime/CudaDriver.h"
#include "kvarn/Runtime/DecodeSplit.h"
#include "kvarn/Runtime/KernelCache.h"
#include "kvarn/Support/Error.h"
#include "kvarn/Version.h"
#include "kvarn/kvarn.h"

#include "kvarn/Support/Strings.h"

#include <cstring>
#include <new>
#include <string>

using namespace kvarn;
using namespace kvarn::runtime;

// What the opaque handles of kvarn.h are.
struct kvarn_context {
  std::shared_ptr<ContextState> state;
};
struct kvarn_kernels {
  std::unique_ptr<KernelSet> set;
};
struct kvarn_pool {
  std::unique_ptr<ManagedPool> pool;
};
struct kvarn_step {
  kvarn_pool *owner;
  std::unique_ptr<Step> step;
};

static thread_local std::string lastError;

static kvarn_status_t fail(kvarn::Error err) {
  return kvarn::consumeError(std::move(err), lastError);
}

static kvarn_status_t succeed() {
  lastError.clear();
  return KVARN_OK;
}

/// Runs `body` (returning kvarn::Error) so that nothing escapes: an error
/// becomes its status and message, an exception OUT_OF_MEMORY or INTERNAL.
template <typename Body> static kvarn_status_t guarded(Body &&body) {
  try {
    if (kvarn::Error e = body())
      return fail(std::move(e));
    return succeed();
  } catch (const std::bad_alloc &) {
    lastError = "out of host memory";
    return KVARN_ERROR_OUT_OF_MEMORY;
  } catch (const std::exception &e) {
    lastError = std::string("internal error: ") + e.what();
    return KVARN_ERROR_INTERNAL;
  } catch (...) {
    lastError = "internal error: an unknown exception";
    return KVARN_ERROR_INTERNAL;
  }
}

static kvarn::Error nullArgument(const char *fn, const char *what) {
  return makeError(KVARN_ERROR_INVALID_ARGUMENT, "{0}: {1} must not be null",
                   fn, what);
}

#define KVARN_REQUIRE(fn, arg)                                                 \
  if (!(arg))                                                                  \
    return nullArgument(fn, #arg);

static kvarn::Expected<RecordLayout> layoutFor(const char *preset,
                                               int32_t headDim) {
  kvarn::Expected<const Preset *> p =
      lookupPreset(preset ? preset : defaultPreset().name);
  if (!p)
    return p.takeError();
  return RecordLayout::get(**p, headDim);
}

static kvarn::Expected<MlaRecordLayout>
mlaLayoutFor(const char *preset, int32_t kvLoraRank, int32_t ropeDim) {
  kvarn::Expected<const MlaPreset *> p = lookupMlaPreset(preset);
  if (!p)
    return p.takeError();
  return MlaRecordLayout::get(**p, kvLoraRank, ropeDim);
}

static kvarn_capacity_t toC(const pool::Capacity &c) {
  return {c.numBlocks,       c.numPoolSlots,  c.tokens,
          c.usedBytes,       c.recordBytesPerToken, c.bytesPerToken,
          c.fp16Tokens,      c.ratioVsFp16};
}

/// Runs `body(ManagedPool &)` with the pool's mutex held.
template <typename Body>
static kvarn_status_t withPool(const char *fn, kvarn_pool_t *pool,
                               Body &&body) {
  return guarded([&]() -> kvarn::Error {
    KVARN_REQUIRE(fn, pool);
    std::lock_guard<std::mutex> lock(pool->pool->mutex);
    return body(*pool->pool);
  });
}

template <typename Body>
static kvarn_status_t withStep(const char *fn, kvarn_step_t *step,
                               Body &&body) {
  return guarded([&]() -> kvarn::Error {
    KVARN_REQUIRE(fn, step);
    std::lock_guard<std::mutex> lock(step->owner->pool->mutex);
    return body(*step->step);
  });
}

extern "C" {

const char *kvarn_version(void) { return KVARN_VERSION_STRING; }

const char *kvarn_status_string(kvarn_status_t status) {
  switch (status) {
#define KVARN_STATUS_CASE(name)                                                \
  case name:                                                                   \
    return #name;
    KVARN_STATUS_CASE(KVARN_OK)
    KVARN_STATUS_CASE(KVARN_ERROR_INVALID_ARGUMENT)
    KVARN_STATUS_CASE(KVARN_ERROR_UNKNOWN_PRESET)
    KVARN_STATUS_CASE(KVARN_ERROR_UNSUPPORTED_SHAPE)
    KVARN_STATUS_CASE(KVARN_ERROR_IO)
    KVARN_STATUS_CASE(KVARN_ERROR_CORRUPT_DATA)
    KVARN_STATUS_CASE(KVARN_ERROR_NO_DRIVER)
    KVARN_STATUS_CASE(KVARN_ERROR_NO_DEVICE)
    KVARN_STATUS_CASE(KVARN_ERROR_CUDA)
    KVARN_STATUS_CASE(KVARN_ERROR_COMPILE)
    KVARN_STATUS_CASE(KVARN_ERROR_OUT_OF_MEMORY)
    KVARN_STATUS_CASE(KVARN_ERROR_POOL_EXHAUSTED)
    KVARN_STATUS_CASE(KVARN_ERROR_UNKNOWN_REQUEST)
    KVARN_STATUS_CASE(KVARN_ERROR_UNSUPPORTED_TARGET)
    KVARN_STATUS_CASE(KVARN_ERROR_INTERNAL)
    KVARN_STATUS_CASE(KVARN_ERROR_KERNEL_NOT_CACHED)
#undef KVARN_STATUS_CASE
  }
  return "KVARN_ERROR_UNKNOWN_STATUS";
}

const char *kvarn_last_error(void) { return lastError.c_str(); }

size_t kvarn_preset_count(void) { return allPresets().size(); }

const char *kvarn_preset_name(size_t index) {
  if (index >= allPresets().size())
    return nullptr;
  return allPresets()[index].name;
}

kvarn_status_t kvarn_record_layout(const char *preset, int32_t headDim,
                                   kvarn_record_layout_t *out) {
  if (!preset || !out)
    return fail(makeError(KVARN_ERROR_INVALID_ARGUMENT,
                          "kvarn_record_layout: preset and out must not be "
                          "null"));
  kvarn::Expected<const Preset *> p = lookupPreset(preset);
  if (!p)
    return fail(p.takeError());
  kvarn::Expected<RecordLayout> l = RecordLayout::get(**p, headDim);
  if (!l)
    return fail(l.takeError());
  *out = {l->headDim,       l->group,          l->keyBits,
          l->valueBits,     l->sinkhornIters,  l->kCodes,
          l->kScale,        l->kZero,          l->kTokenScale,
          l->vCodes,        l->vChannelScale,  l->vScale,
          l->vZero,         l->unalignedBytes, l->recordBytes};
  return succeed();
}

size_t kvarn_mla_preset_count(void) { return allMlaPresets().size(); }

const char *kvarn_mla_preset_name(size_t index) {
  Span<const MlaPreset> presets = allMlaPresets();
  return index < presets.size() ? presets[index].name : nullptr;
}

kvarn_status_t kvarn_mla_record_layout(const char *preset, int32_t kv_lora_rank,
                                       int32_t rope_dim,
                                       kvarn_mla_record_layout_t *out) {
  return guarded([&]() -> kvarn::Error {
    KVARN_REQUIRE("kvarn_mla_record_layout", preset);
    KVARN_REQUIRE("kvarn_mla_record_layout", out);
    kvarn::Expected<MlaRecordLayout> l =
        mlaLayoutFor(preset, kv_lora_rank, rope_dim);
    if (!l)
      return l.takeError();
    *out = {l->kvLoraRank,    l->ropeDim, l->group,      l->bits,
            l->sinkhornIters, l->codes,   l->scale,      l->zero,
            l->tokenScale,    l->rope,    l->recordBytes};
    return kvarn::Error::success();
  });
}

int kvarn_can_compile(void) { return linkedCompiler() != nullptr; }

kvarn_status_t kvarn_cuda_available(int *device_count) {
  kvarn::Expected<const cuda::Driver &> driver = cuda::Driver::get();
  if (!driver) {
    if (device_count)
      *device_count = 0;
    return fail(driver.takeError());
  }
  if (device_count)
    *device_count = driver->deviceCount();
  return succeed();
}

//===----------------------------------------------------------------------===//
// Sizes
//===----------------------------------------------------------------------===//

kvarn_status_t kvarn_cache_shape(const char *preset, int32_t head_dim,
                                 int32_t num_kv_heads, int64_t num_blocks,
                                 int64_t pool_slots, kvarn_cache_shape_t *out) {
  return guarded([&]() -> kvarn::Error {
    KVARN_REQUIRE("kvarn_cache_shape", out);
    kvarn::Expected<RecordLayout> l = layoutFor(preset, head_dim);
    if (!l)
      return l.takeError();
    if (num_kv_heads <= 0 || num_blocks < 0 || pool_slots < 0)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "kvarn_cache_shape: num_kv_heads ({0}) must be "
                       "positive, num_blocks ({1}) and pool_slots ({2}) not "
                       "negative",
                       num_kv_heads, num_blocks, pool_slots);
    kvarn::Expected<pool::PoolBytes> b = pool::poolBytes(
        *l, {1, num_kv_heads, head_dim}, num_blocks, pool_slots);
    if (!b)
      return withContext(b.takeError(), "kvarn_cache_shape");
    *out = {num_blocks, num_kv_heads, l->recordBytes, l->group,
            head_dim,   pool_slots,   b->cacheBytes,  b->poolBytes / 2};
    return kvarn::Error::success();
  });
}

kvarn_status_t kvarn_decode_split_scratch_bytes(int32_t batch,
                                                int32_t num_kv_heads,
                                                int32_t gqa, int32_t head_dim,
                                                int64_t *part_out_bytes,
                                                int64_t *part_lse_bytes) {
  return guarded([&]() -> kvarn::Error {
    KVARN_REQUIRE("kvarn_decode_split_scratch_bytes", part_out_bytes);
    KVARN_REQUIRE("kvarn_decode_split_scratch_bytes", part_lse_bytes);
    kvarn::Expected<DecodeSplitPartialBytes> bytes =
        decodeSplitPartialBytes(batch, num_kv_heads, gqa, head_dim);
    if (!bytes)
      return withContext(bytes.takeError(), "kvarn_decode_split_scratch_bytes");
    *part_out_bytes = bytes->partOut;
    *part_lse_bytes = bytes->partLse;
    return kvarn::Error::success();
  });
}

kvarn_status_t kvarn_capacity_plan(const char *preset, int32_t head_dim,
                                   int32_t num_layers, int32_t num_kv_heads,
                                   int64_t budget_bytes,
                                   int64_t concurrent_requests,
                                   int64_t pool_slots, kvarn_capacity_t *out) {
  return guarded([&]() -> kvarn::Error {
    KVARN_REQUIRE("kvarn_capacity_plan", out);
    kvarn::Expected<RecordLayout> l = layoutFor(preset, head_dim);
    if (!l)
      return l.takeError();
    kvarn::Expected<pool::Capacity> c =
        pool::planCapacity(*l, {num_layers, num_kv_heads, head_dim},
                           budget_bytes, concurrent_requests, pool_slots);
    if (!c)
      return c.takeError();
    *out = toC(*c);
    return kvarn::Error::success();
  });
}

kvarn_status_t kvarn_mla_capacity_plan(const char *preset, int32_t kv_lora_rank,
                                       int32_t rope_dim, int32_t num_layers,
                                       int64_t budget_bytes,
                                       int64_t concurrent_requests,
                                       int64_t pool_slots,
                                       kvarn_capacity_t *out) {
  return guarded([&]() -> kvarn::Error {
    KVARN_REQUIRE("kvarn_mla_capacity_plan", preset);
    KVARN_REQUIRE("kvarn_mla_capacity_plan", out);
    kvarn::Expected<MlaRecordLayout> l =
        mlaLayoutFor(preset, kv_lora_rank, rope_dim);
    if (!l)
      return l.takeError();
    kvarn::Expected<pool::Capacity> c = pool::planMlaCapacity(
        *l, num_layers, budget_bytes, concurrent_requests, pool_slots);
    if (!c)
      return c.takeError();
    *out = toC(*c);
    return kvarn::Error::success();
  });
}

//===----------------------------------------------------------------------===//
// Contexts and kernels
//===----------------------------------------------------------------------===//

kvarn_status_t kvarn_context_create(int device, kvarn_stream_t stream,
                                    kvarn_context_t **out) {
  return guarded([&]() -> kvarn::Error {
    KVARN_REQUIRE("kvarn_context_create", out);
    kvarn::Expected<cuda::Context> ctx = cuda::Context::create(device);
    if (!ctx)
      return ctx.takeError();
    auto state = std::make_shared<ContextState>(std::move(*ctx),
                                                static_cast<CUstream>(stream));
    *out = new kvarn_context{std::move(state)};
    return kvarn::Error::success();
  });
}

kvarn_status_t kvarn_context_destroy(kvarn_context_t *context) {
  return guarded([&]() -> kvarn::Error {
    if (context) {
      context->state->alive = false;
      delete context;
    }
    return kvarn::Error::success();
  });
}

kvarn_status_t kvarn_context_synchronize(kvarn_context_t *context) {
  return guarded([&]() -> kvarn::Error {
    KVARN_REQUIRE("kvarn_context_synchronize", context);
    return context->state->synchronize();
  });
}

kvarn_status_t kvarn_kernels_create(kvarn_context_t *context,
                                    const char *preset, int32_t head_dim,
                                    int32_t gqa, kvarn_kernels_t **out) {
  return kvarn_kernels_create_dtype(context, preset, head_dim, gqa, nullptr,
                                    out);
}

kvarn_status_t kvarn_kernels_create_dtype(kvarn_context_t *context,
                                          const char *preset, int32_t head_dim,
                                          int32_t gqa, const char *dtype,
                                          kvarn_kernels_t **out) {
  return guarded([&]() -> kvarn::Error {
    // The dtype first: a bad one is reported with or without a GPU.
    kvarn::Expected<DType> activation = parseDType(dtype ? dtype : "f16");
    if (!activation)
      return activation.takeError();
    KVARN_REQUIRE("kvarn_kernels_create", context);
    KVARN_REQUIRE("kvarn_kernels_create", out);
    dsl::Specialization spec{preset ? preset : defaultPreset().name, head_dim,
                             gqa, *activation};
    kvarn::Expected<std::unique_ptr<KernelSet>> set =
        KernelSet::create(context->state, spec);
    if (!set)
      return set.takeError();
    *out = new kvarn_kernels{std::move(*set)};
    return kvarn::Error::success();
  });
}

kvarn_status_t kvarn_mla_kernels_create(kvarn_context_t *context,
                                        const char *preset,
                                        int32_t kv_lora_rank, int32_t rope_dim,
                                        int32_t num_heads, const char *dtype,
                                        kvarn_kernels_t **out) {
  return guarded([&]() -> kvarn::Error {
    const char *fn = "kvarn_mla_kernels_create";
    kvarn::Expected<DType> activation = parseDType(dtype ? dtype : "f16");
    if (!activation)
      return activation.takeError();
    dsl::Specialization spec{preset ? preset : allMlaPresets().front().name,
                             kv_lora_rank, num_heads, *activation, rope_dim};
    if (!spec.isMla())
      return makeError(KVARN_ERROR_UNKNOWN_PRESET,
                       "{0}: '{1}' is not an MLA preset (MLA presets: {2})", fn,
                       spec.preset, allMlaPresets().front().name);
    // The shape before the context, so it is checked without a GPU.
    if (kvarn::Error err = spec.check())
      return withContext(std::move(err), fn);
    KVARN_REQUIRE(fn, context);
    KVARN_REQUIRE(fn, out);
    kvarn::Expected<std::unique_ptr<KernelSet>> set =
        KernelSet::create(context->state, spec);
    if (!set)
      return set.takeError();
    *out = new kvarn_kernels{std::move(*set)};
    return kvarn::Error::success();
  });
}

kvarn_status_t kvarn_kernels_destroy(kvarn_kernels_t *kernels) {
  return guarded([&]() -> kvarn::Error {
    delete kernels;
    return kvarn::Error::success();
  });
}

kvarn_status_t kvarn_kernels_load(kvarn_kernels_t *kernels, const char *names) {
  return guarded([&]() -> kvarn::Error {
    KVARN_REQUIRE("kvarn_kernels_load", kernels);
    std::vector<KernelKind> kinds;
    if (!names) {
      for (size_t i = 0; i < kNumKernelKinds; ++i)
        if (kernelFamily(KernelKind(i)) ==
            dsl::kernelFamily(kernels->set->spec()))
          kinds.push_back(KernelKind(i));
    } else {
      for (std::string_view p : split(names, ',', /*keepEmpty=*/false)) {
        kvarn::Expected<KernelKind> k = parseKernelName(trim(p));
        if (!k)
          return k.takeError();
        kinds.push_back(*k);
      }
    }
    for (KernelKind k : kinds)
      if (kvarn::Expected<const cuda::LoadedKernel *> l = kernels->set->get(k);
          !l)
        return l.takeError();
    return kvarn::Error::success();
  });
}

#define KVARN_KERNELS(fn)                                                      \
  KVARN_REQUIRE(fn, kernels);                                                  \
  KernelSet &ks = *kernels->set;                                               \
  CUstream s = static_cast<CUstream>(stream);

kvarn_status_t kvarn_append(kvarn_kernels_t *kernels, kvarn_stream_t stream,
                            kvarn_devptr_t k, kvarn_devptr_t v,
                            kvarn_devptr_t slot_mapping,
                            kvarn_devptr_t block_to_slot, kvarn_devptr_t pool_k,
                            kvarn_devptr_t pool_v, int32_t num_tokens,
                            int32_t num_kv_heads) {
  return guarded([&]() -> kvarn::Error {
    KVARN_KERNELS("kvarn_append");
    return launchAppend(ks, s, k, v, slot_mapping, block_to_slot, pool_k,
                        pool_v, num_tokens, num_kv_heads);
  });
}

kvarn_status_t kvarn_flush(kvarn_kernels_t *kernels, kvarn_stream_t stream,
                           kvarn_devptr_t pool_k, kvarn_devptr_t pool_v,
                           kvarn_devptr_t tile_slots,
                           kvarn_devptr_t tile_blocks, kvarn_devptr_t cache,
                           int32_t num_tiles, int32_t num_kv_heads) {
  return guarded([&]() -> kvarn::Error {
    KVARN_KERNELS("kvarn_flush");
    return launchFlush(ks, s, pool_k, pool_v, tile_slots, tile_blocks, cache,
                       num_tiles, num_kv_heads);
  });
}

kvarn_status_t kvarn_decode(kvarn_kernels_t *kernels, kvarn_stream_t stream,
                            kvarn_devptr_t q, kvarn_devptr_t block_table,
                            kvarn_devptr_t seq_lens,
                            kvarn_devptr_t block_to_slot, kvarn_devptr_t cache,
                            kvarn_devptr_t pool_k, kvarn_devptr_t pool_v,
                            kvarn_devptr_t out, float softmax_scale,
                            int32_t batch, int32_t max_blocks,
                            int32_t num_kv_heads) {
  return guarded([&]() -> kvarn::Error {
    KVARN_KERNELS("kvarn_decode");
    return launchDecode(ks, s, q, block_table, seq_lens, block_to_slot, cache,
                        pool_k, pool_v, out, softmax_scale, /*window=*/0, batch,
                        max_blocks, num_kv_heads);
  });
}

kvarn_status_t kvarn_decode_split(
    kvarn_kernels_t *kernels, kvarn_stream_t stream, kvarn_devptr_t q,
    kvarn_devptr_t block_table, kvarn_devptr_t seq_lens,
    kvarn_devptr_t block_to_slot, kvarn_devptr_t cache, kvarn_devptr_t pool_k,
    kvarn_devptr_t pool_v, kvarn_devptr_t part_out, kvarn_devptr_t part_lse,
    kvarn_devptr_t out, float softmax_scale, int32_t batch, int32_t max_blocks,
    int32_t num_kv_heads, int32_t num_splits) {
  return guarded([&]() -> kvarn::Error {
    KVARN_KERNELS("kvarn_decode_split");
    return launchDecodeSplit(ks, s, q, block_table, seq_lens, block_to_slot,
                             cache, pool_k, pool_v, part_out, part_lse, out,
                             softmax_scale, /*window=*/0, batch, max_blocks,
                             num_kv_heads, num_splits);
  });
}

kvarn_status_t kvarn_decode_split_count(kvarn_kernels_t *kernels,
                                        int32_t batch_capacity,
                                        int32_t max_blocks,
                                        int32_t num_kv_heads,
                                        int32_t *num_splits) {
  return guarded([&]() -> kvarn::Error {
    const char *fn = "kvarn_decode_split_count";
    KVARN_REQUIRE(fn, num_splits);
    // The extents before the kernels, so they are checked without a GPU.
    if (batch_capacity <= 0 || max_blocks <= 0 || num_kv_heads <= 0)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "{0}: batch_capacity ({1}), max_blocks ({2}) and "
                       "num_kv_heads ({3}) must be positive",
                       fn, batch_capacity, max_blocks, num_kv_heads);
    KVARN_REQUIRE(fn, kernels);
    kvarn::Expected<int> count = decodeSplitCountFor(
        *kernels->set, int64_t(batch_capacity) * num_kv_heads, max_blocks);
    if (!count)
      return withContext(count.takeError(), fn);
    *num_splits = *count;
    return kvarn::Error::success();
  });
}

kvarn_status_t kvarn_mla_append(kvarn_kernels_t *kernels, kvarn_stream_t stream,
                                kvarn_devptr_t latent, kvarn_devptr_t k_pe,
                                kvarn_devptr_t slot_mapping,
                                kvarn_devptr_t block_to_slot,
                                kvarn_devptr_t pool_latent,
                                kvarn_devptr_t pool_pe, int32_t num_tokens) {
  return guarded([&]() -> kvarn::Error {
    KVARN_KERNELS("kvarn_mla_append");
    return launchMlaAppend(ks, s, latent, k_pe, slot_mapping, block_to_slot,
                           pool_latent, pool_pe, num_tokens);
  });
}

kvarn_status_t kvarn_mla_flush(kvarn_kernels_t *kernels, kvarn_stream_t stream,
                               kvarn_devptr_t pool_latent,
                               kvarn_devptr_t pool_pe,
                               kvarn_devptr_t tile_slots,
                               kvarn_devptr_t tile_blocks, kvarn_devptr_t cache,
                               int32_t num_tiles) {
  return guarded([&]() -> kvarn::Error {
    KVARN_KERNELS("kvarn_mla_flush");
    return launchMlaFlush(ks, s, pool_latent, pool_pe, tile_slots, tile_blocks,
                          cache, num_tiles);
  });
}

kvarn_status_t
kvarn_mla_decode(kvarn_kernels_t *kernels, kvarn_stream_t stream,
                 kvarn_devptr_t q, kvarn_devptr_t block_table,
                 kvarn_devptr_t seq_lens, kvarn_devptr_t block_to_slot,
                 kvarn_devptr_t cache, kvarn_devptr_t pool_latent,
                 kvarn_devptr_t pool_pe, kvarn_devptr_t out,
                 float softmax_scale, int32_t batch, int32_t max_blocks) {
  return guarded([&]() -> kvarn::Error {
    KVARN_KERNELS("kvarn_mla_decode");
    return launchMlaDecode(ks, s, q, block_table, seq_lens, block_to_slot,
                           cache, pool_latent, pool_pe, out, softmax_scale,
                           batch, max_blocks);
  });
}

kvarn_status_t kvarn_mla_decode_split(
    kvarn_kernels_t *kernels, kvarn_stream_t stream, kvarn_devptr_t q,
    kvarn_devptr_t block_table, kvarn_devptr_t seq_lens,
    kvarn_devptr_t block_to_slot, kvarn_devptr_t cache,
    kvarn_devptr_t pool_latent, kvarn_devptr_t pool_pe, kvarn_devptr_t part_out,
    kvarn_devptr_t part_lse, kvarn_devptr_t out, float softmax_scale,
    int32_t batch, int32_t max_blocks, int32_t num_splits) {
  return guarded([&]() -> kvarn::Error {
    KVARN_KERNELS("kvarn_mla_decode_split");
    return launchMlaDecodeSplit(ks, s, q, block_table, seq_lens, block_to_slot,
                                cache, pool_latent, pool_pe, part_out, part_lse,
                                out, softmax_scale, batch, max_blocks,
                                num_splits);
  });
}

kvarn_status_t
kvarn_mla_verify(kvarn_kernels_t *kernels, kvarn_stream_t stream,
                 kvarn_devptr_t q, kvarn_devptr_t block_table,
                 kvarn_devptr_t context_lens, kvarn_devptr_t query_lens,
                 kvarn_devptr_t block_to_slot, kvarn_devptr_t cache,
                 kvarn_devptr_t pool_latent, kvarn_devptr_t pool_pe,
                 kvarn_devptr_t out, float softmax_scale, int32_t batch,
                 int32_t max_query_tokens, int32_t max_blocks) {
  return guarded([&]() -> kvarn::Error {
    KVARN_KERNELS("kvarn_mla_verify");
    return launchMlaVerify(ks, s, q, block_table, context_lens, query_lens,
                           block_to_slot, cache, pool_latent, pool_pe, out,
                           softmax_scale, batch, max_query_tokens, max_blocks);
  });
}

kvarn_status_t kvarn_mla_decode_split_scratch_bytes(int32_t batch,
                                                    int32_t num_heads,
                                                    int32_t kv_lora_rank,
                                                    int64_t *part_out_bytes,
                                                    int64_t *part_lse_bytes) {
  return guarded([&]() -> kvarn::Error {
    const char *fn = "kvarn_mla_decode_split_scratch_bytes";
    KVARN_REQUIRE(fn, part_out_bytes);
    KVARN_REQUIRE(fn, part_lse_bytes);
    // One latent "KV head" whose query heads write a partial each.
    kvarn::Expected<DecodeSplitPartialBytes> bytes =
        decodeSplitPartialBytes(batch, 1, num_heads, kv_lora_rank);
    if (!bytes)
      return withContext(bytes.takeError(), fn);
    *part_out_bytes = bytes->partOut;
    *part_lse_bytes = bytes->partLse;
    return kvarn::Error::success();
  });
}

kvarn_status_t kvarn_mla_decode_split_count(kvarn_kernels_t *kernels,
                                            int32_t batch_capacity,
                                            int32_t max_blocks,
                                            int32_t *num_splits) {
  return guarded([&]() -> kvarn::Error {
    const char *fn = "kvarn_mla_decode_split_count";
    KVARN_REQUIRE(fn, num_splits);
    if (batch_capacity <= 0 || max_blocks <= 0)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "{0}: batch_capacity ({1}) and max_blocks ({2}) must "
                       "be positive",
                       fn, batch_capacity, max_blocks);
    KVARN_REQUIRE(fn, kernels);
    const dsl::Specialization &spec = kernels->set->spec();
    if (!spec.isMla())
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "{0}: these kernels are {1}'s, a dense preset (use "
                       "kvarn_decode_split_count)",
                       fn, spec.preset);
    // A request's decode programs: its query heads in groups (HEAD_GROUP).
    int64_t programs = spec.gqa / mlaHeadsPerProgram(spec.gqa);
    kvarn::Expected<int> count = decodeSplitCountFor(
        *kernels->set, int64_t(batch_capacity) * programs, max_blocks);
    if (!count)
      return withContext(count.takeError(), fn);
    *num_splits = *count;
    return kvarn::Error::success();
  });
}

kvarn_status_t kvarn_verify(kvarn_kernels_t *kernels, kvarn_stream_t stream,
                            kvarn_devptr_t q, kvarn_devptr_t block_table,
                            kvarn_devptr_t context_lens,
                            kvarn_devptr_t query_lens,
                            kvarn_devptr_t block_to_slot, kvarn_devptr_t cache,
                            kvarn_devptr_t pool_k, kvarn_devptr_t pool_v,
                            kvarn_devptr_t out, float softmax_scale,
                            int32_t batch, int32_t max_query_tokens,
                            int32_t max_blocks, int32_t num_kv_heads) {
  return guarded([&]() -> kvarn::Error {
    KVARN_KERNELS("kvarn_verify");
    return launchVerify(ks, s, q, block_table, context_lens, query_lens,
                        block_to_slot, cache, pool_k, pool_v, out,
                        softmax_scale, /*window=*/0, batch, max_query_tokens,
                        max_blocks, num_kv_heads);
  });
}

/// A negative window is an argument error before the kernels are looked at,
/// so it is one without a GPU too.
#define KVARN_WINDOW(fn)                                                       \
  if (window < 0)                                                              \
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,                             \
                     "{0}: window is {1} tokens; it must be >= 0 (0: no "      \
                     "sliding window)",                                        \
                     fn, window);

kvarn_status_t kvarn_decode_window(
    kvarn_kernels_t *kernels, kvarn_stream_t stream, kvarn_devptr_t q,
    kvarn_devptr_t block_table, kvarn_devptr_t seq_lens,
    kvarn_devptr_t block_to_slot, kvarn_devptr_t cache, kvarn_devptr_t pool_k,
    kvarn_devptr_t pool_v, kvarn_devptr_t out, float softmax_scale,
    int32_t window, int32_t batch, int32_t max_blocks, int32_t num_kv_heads) {
  return guarded([&]() -> kvarn::Error {
    KVARN_WINDOW("kvarn_decode_window");
    KVARN_KERNELS("kvarn_decode_window");
    return launchDecode(ks, s, q, block_table, seq_lens, block_to_slot, cache,
                        pool_k, pool_v, out, softmax_scale, window, batch,
                        max_blocks, num_kv_heads);
  });
}

kvarn_status_t kvarn_decode_split_window(
    kvarn_kernels_t *kernels, kvarn_stream_t stream, kvarn_devptr_t q,
    kvarn_devptr_t block_table, kvarn_devptr_t seq_lens,
    kvarn_devptr_t block_to_slot, kvarn_devptr_t cache, kvarn_devptr_t pool_k,
    kvarn_devptr_t pool_v, kvarn_devptr_t part_out, kvarn_devptr_t part_lse,
    kvarn_devptr_t out, float softmax_scale, int32_t window, int32_t batch,
    int32_t max_blocks, int32_t num_kv_heads, int32_t num_splits) {
  return guarded([&]() -> kvarn::Error {
    KVARN_WINDOW("kvarn_decode_split_window");
    KVARN_KERNELS("kvarn_decode_split_window");
    return launchDecodeSplit(ks, s, q, block_table, seq_lens, block_to_slot,
                             cache, pool_k, pool_v, part_out, part_lse, out,
                             softmax_scale, window, batch, max_blocks,
                             num_kv_heads, num_splits);
  });
}

kvarn_status_t kvarn_verify_window(
    kvarn_kernels_t *kernels, kvarn_stream_t stream, kvarn_devptr_t q,
    kvarn_devptr_t block_table, kvarn_devptr_t context_lens,
    kvarn_devptr_t query_lens, kvarn_devptr_t block_to_slot,
    kvarn_devptr_t cache, kvarn_devptr_t pool_k, kvarn_devptr_t pool_v,
    kvarn_devptr_t out, float softmax_scale, int32_t window, int32_t batch,
    int32_t max_query_tokens, int32_t max_blocks, int32_t num_kv_heads) {
  return guarded([&]() -> kvarn::Error {
    KVARN_WINDOW("kvarn_verify_window");
    KVARN_KERNELS("kvarn_verify_window");
    return launchVerify(ks, s, q, block_table, context_lens, query_lens,
                        block_to_slot, cache, pool_k, pool_v, out,
                        softmax_scale, window, batch, max_query_tokens,
                        max_blocks, num_kv_heads);
  });
}

kvarn_status_t kvarn_materialize(
    kvarn_kernels_t *kernels, kvarn_stream_t stream,
    kvarn_devptr_t block_table, kvarn_devptr_t seq_lens,
    kvarn_devptr_t block_to_slot, kvarn_devptr_t cache, kvarn_devptr_t pool_k,
    kvarn_devptr_t pool_v, kvarn_devptr_t out_start, kvarn_devptr_t out_k,
    kvarn_devptr_t out_v, int32_t batch, int32_t max_blocks,
    int32_t num_kv_heads) {
  return guarded([&]() -> kvarn::Error {
    KVARN_KERNELS("kvarn_materialize");
    return launchMaterialize(ks, s, block_table, seq_lens, block_to_slot,
                             cache, pool_k, pool_v, out_start, out_k, out_v,
                             batch, max_blocks, num_kv_heads);
  });
}

//===----------------------------------------------------------------------===//
// The managed pool
//===----------------------------------------------------------------------===//

} // extern "C"

/// Whether the `size - known` bytes past `known` at `p` are all zero: a
/// caller built against a newer kvarn.h may pass a larger struct, whose
/// fields this library does not know and so must not silently ignore.
static bool tailIsZero(const void *p, size_t known, size_t size) {
  const unsigned char *b = static_cast<const unsigned char *>(p);
  for (size_t i = known; i < size; ++i)
    if (b[i])
      return false;
  return true;
}

/// The layer configs of `options` (NULL: none), copied at the caller's
/// struct sizes.
static kvarn::Expected<std::vector<kvarn_layer_config_t>>
readOptions(const char *fn, const kvarn_pool_config_t &config,
            const kvarn_pool_options_t *options) {
  std::vector<kvarn_layer_config_t> layers;
  if (!options)
    return layers;
  // struct_size and layer_config_size are read first: every version has them.
  if (options->struct_size < sizeof(kvarn_pool_options_t))
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: options->struct_size {1} is smaller than "
                     "kvarn_pool_options_t ({2} bytes); set it to "
                     "sizeof(kvarn_pool_options_t)",
                     fn, options->struct_size, sizeof(kvarn_pool_options_t));
  if (!tailIsZero(options, sizeof(kvarn_pool_options_t), options->struct_size))
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: options set fields past the {1} bytes this kvarn "
                     "({2}) knows",
                     fn, sizeof(kvarn_pool_options_t), KVARN_VERSION_STRING);
  if (!options->layers)
    return layers;
  size_t stride = options->layer_config_size;
  if (stride < sizeof(kvarn_layer_config_t))
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: options->layer_config_size {1} is smaller than "
                     "kvarn_layer_config_t ({2} bytes); set it to "
                     "sizeof(kvarn_layer_config_t)",
                     fn, stride, sizeof(kvarn_layer_config_t));
  if (config.num_layers <= 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: num_layers ({1}) must be positive", fn,
                     config.num_layers);
  const char *base = reinterpret_cast<const char *>(options->layers);
  for (int32_t l = 0; l < config.num_layers; ++l) {
    const char *at = base + size_t(l) * stride;
    if (!tailIsZero(at, sizeof(kvarn_layer_config_t), stride))
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "{0}: layer {1} sets fields past the {2} bytes this "
                       "kvarn ({3}) knows",
                       fn, l, sizeof(kvarn_layer_config_t),
                       KVARN_VERSION_STRING);
    kvarn_layer_config_t c;
    std::memcpy(&c, at, sizeof c);
    layers.push_back(c);
  }
  return layers;
}

static kvarn_layer_info_t layerInfo(const ManagedPool &p,
                                    const pool::LayerBytes &b,
                                    const pool::LayerSpec &s,
                                    int64_t numBlocks) {
  kvarn_layer_info_t i{};
  i.struct_size = sizeof(kvarn_layer_info_t);
  i.kind = int32_t(b.kind);
  i.window = b.window;
  i.preset = b.kind == pool::LayerKind::Kvarn ? s.preset : nullptr;
  i.record_bytes = b.recordBytes;
  i.cache_bytes = b.cacheBytes;
  i.pool_bytes = b.poolBytes;
  i.fp16_bytes = b.kind == pool::LayerKind::Absent ? 0
                 : p.mla // the latent and rope keys in 16 bits
                     ? numBlocks * p.mla->group *
                           (int64_t(p.mla->kvLoraRank) + p.mla->ropeDim) * 2
                     : numBlocks * p.layout.group * p.model.numKvHeads *
                           p.model.headDim * 4;
  return i;
}

/// Writes `info` to `out`, a kvarn_layer_info_t of `size` bytes as the
/// caller was compiled (at least this library's): fields this library does
/// not know are zeroed.
static void writeLayerInfo(void *out, kvarn_layer_info_t info, size_t size) {
  info.struct_size = uint32_t(size);
  std::memcpy(out, &info, sizeof info);
  std::memset(static_cast<char *>(out) + sizeof info, 0, size - sizeof info);
}

static kvarn::Error checkInfoSize(const char *fn, const char *what,
                                  uint32_t size) {
  if (size < sizeof(kvarn_layer_info_t))
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: {1}struct_size {2} is smaller than "
                     "kvarn_layer_info_t ({3} bytes); set it to "
                     "sizeof(kvarn_layer_info_t)",
                     fn, what, size, sizeof(kvarn_layer_info_t));
  return kvarn::Error::success();
}

extern "C" {

kvarn_status_t kvarn_pool_create(kvarn_context_t *context,
                                 const kvarn_pool_config_t *config,
                                 kvarn_pool_t **out) {
  return kvarn_pool_create_ex(context, config, nullptr, out);
}

kvarn_status_t kvarn_pool_create_ex(kvarn_context_t *context,
                                    const kvarn_pool_config_t *config,
                                    const kvarn_pool_options_t *options,
                                    kvarn_pool_t **out) {
  return guarded([&]() -> kvarn::Error {
    KVARN_REQUIRE("kvarn_pool_create", config);
    KVARN_REQUIRE("kvarn_pool_create", out);
    kvarn::Expected<std::vector<kvarn_layer_config_t>> layers =
        readOptions("kvarn_pool_create", *config, options);
    if (!layers)
      return layers.takeError();
    kvarn::Expected<std::unique_ptr<ManagedPool>> p = ManagedPool::create(
        context ? context->state : nullptr, *config, *layers);
    if (!p)
      return p.takeError();
    *out = new kvarn_pool{std::move(*p)};
    return kvarn::Error::success();
  });
}

kvarn_status_t kvarn_mla_pool_create(kvarn_context_t *context,
                                     const kvarn_pool_config_t *config,
                                     int32_t rope_dim, kvarn_pool_t **out) {
  return guarded([&]() -> kvarn::Error {
    KVARN_REQUIRE("kvarn_mla_pool_create", config);
    KVARN_REQUIRE("kvarn_mla_pool_create", out);
    kvarn::Expected<std::unique_ptr<ManagedPool>> p = ManagedPool::createMla(
        context ? context->state : nullptr, *config, rope_dim);
    if (!p)
      return p.takeError();
    *out = new kvarn_pool{std::move(*p)};
    return kvarn::Error::success();
  });
}

kvarn_status_t kvarn_capacity_plan_ex(
    const kvarn_pool_config_t *config, const kvarn_pool_options_t *options,
    int64_t budget_bytes, int64_t concurrent_requests, int64_t pool_slots,
    kvarn_capacity_t *out, kvarn_layer_info_t *layers, int32_t capacity) {
  return guarded([&]() -> kvarn::Error {
    const char *fn = "kvarn_capacity_plan_ex";
    KVARN_REQUIRE(fn, config);
    KVARN_REQUIRE(fn, out);
    if (capacity > 0 && !layers)
      return nullArgument(fn, "layers");
    if (capacity > 0)
      if (kvarn::Error e =
              checkInfoSize(fn, "layers[0].", layers[0].struct_size))
        return e;
    kvarn::Expected<std::vector<kvarn_layer_config_t>> lc =
        readOptions(fn, *config, options);
    if (!lc)
      return lc.takeError();
    // The layers checked as kvarn_pool_create checks them, on a pool of one
    // block (bookkeeping only) whose sizes the budget then replaces.
    kvarn_pool_config_t one = *config;
    one.num_blocks = one.pool_slots = one.max_requests =
        one.max_blocks_per_request = 1;
    kvarn::Expected<std::unique_ptr<ManagedPool>> p =
        ManagedPool::create(nullptr, one, *lc);
    if (!p)
      return withContext(p.takeError(), fn);
    const ManagedPool &mp = **p;
    kvarn::Expected<pool::Capacity> c = pool::planCapacity(
        mp.specs, mp.model.numKvHeads, mp.model.headDim, mp.layout.group,
        budget_bytes, concurrent_requests, pool_slots);
    if (!c)
      return c.takeError();
    pool::MixedBytes b = kvarn::cantFail(
        pool::mixedBytes(mp.specs, mp.model.numKvHeads, mp.model.headDim,
                         mp.layout.group, c->numBlocks, c->numPoolSlots));
    int32_t n = std::min(std::max(capacity, 0), mp.model.numLayers);
    size_t stride = n ? layers[0].struct_size : 0;
    for (int32_t l = 0; l < n; ++l)
      writeLayerInfo(reinterpret_cast<char *>(layers) + size_t(l) * stride,
                     layerInfo(mp, b.layers[l], mp.specs[l], c->numBlocks),
                     stride);
    *out = toC(*c);
    return kvarn::Error::success();
  });
}

kvarn_status_t kvarn_pool_layer_info(kvarn_pool_t *pool, int32_t layer,
                                     kvarn_layer_info_t *out) {
  return withPool(
      "kvarn_pool_layer_info", pool, [&](ManagedPool &p) -> kvarn::Error {
        const char *fn = "kvarn_pool_layer_info";
        KVARN_REQUIRE(fn, out);
        if (kvarn::Error e = checkInfoSize(fn, "out->", out->struct_size))
          return e;
        if (layer < 0 || layer >= p.model.numLayers)
          return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                           "{0}: layer {1} is not in [0, {2})", fn, layer,
                           p.model.numLayers);
        kvarn_layer_info_t i =
            layerInfo(p, p.mixed.layers[layer], p.specs[layer],
                      p.state.geometry().numBlocks);
        if (p.hasDevice() &&
            p.mixed.layers[layer].kind != pool::LayerKind::Absent) {
          kvarn::Expected<ManagedPool::LayerMemory> m =
              p.layerMemory(fn, layer);
          if (!m)
            return m.takeError();
          i.pool_k = m->poolK;
          i.pool_v = m->poolV;
          i.block_to_slot = m->blockToSlot;
          if (p.mixed.layers[layer].kind == pool::LayerKind::Kvarn)
            i.cache = m->cache;
        }
        writeLayerInfo(out, i, out->struct_size);
        return kvarn::Error::success();
      });
}

kvarn_status_t kvarn_pool_destroy(kvarn_pool_t *pool) {
  return guarded([&]() -> kvarn::Error {
    if (!pool)
      return kvarn::Error::success();
    {
      std::lock_guard<std::mutex> lock(pool->pool->mutex);
      if (pool->pool->liveSteps)
        return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                         "kvarn_pool_destroy: {0} step(s) of the pool still "
                         "exist; destroy them first",
                         pool->pool->liveSteps);
    }
    delete pool;
    return kvarn::Error::success();
  });
}

kvarn_status_t kvarn_pool_add_request(kvarn_pool_t *pool, int64_t request) {
  return withPool("kvarn_pool_add_request", pool, [&](ManagedPool &p) {
    return p.state.addRequest(request);
  });
}

/// Finish, preempt and free change a request's blocks, which an open step's
/// tables name.
static kvarn::Error checkNotInStep(ManagedPool &p, int64_t request,
                                   const char *fn) {
  if (p.inOpenStep.count(request))
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: request {1} is in an open step; commit it first",
                     fn, request);
  return kvarn::Error::success();
}

kvarn_status_t kvarn_pool_finish(kvarn_pool_t *pool, int64_t request) {
  return withPool("kvarn_pool_finish", pool, [&](ManagedPool &p) {
    if (kvarn::Error e = checkNotInStep(p, request, "kvarn_pool_finish"))
      return e;
    return p.state.finish(request);
  });
}

kvarn_status_t kvarn_pool_preempt(kvarn_pool_t *pool, int64_t request) {
  return withPool("kvarn_pool_preempt", pool, [&](ManagedPool &p) {
    if (kvarn::Error e = checkNotInStep(p, request, "kvarn_pool_preempt"))
      return e;
    return p.state.preempt(request);
  });
}

kvarn_status_t kvarn_pool_free(kvarn_pool_t *pool, int64_t request) {
  return withPool("kvarn_pool_free", pool, [&](ManagedPool &p) {
    if (kvarn::Error e = checkNotInStep(p, request, "kvarn_pool_free"))
      return e;
    return p.state.free(request);
  });
}

kvarn_status_t kvarn_pool_share_prefix(kvarn_pool_t *pool, int64_t dst,
                                       int64_t src, int32_t tokens) {
  return withPool("kvarn_pool_share_prefix", pool, [&](ManagedPool &p) {
    if (kvarn::Error e = checkNotInStep(p, dst, "kvarn_pool_share_prefix"))
      return e;
    return p.state.sharePrefix(dst, src, tokens);
  });
}

kvarn_status_t kvarn_pool_flush(kvarn_pool_t *pool, int32_t *num_blocks) {
  return withPool("kvarn_pool_flush", pool,
                  [&](ManagedPool &p) -> kvarn::Error {
                    kvarn::Expected<int32_t> n = p.flush();
                    if (!n)
                      return n.takeError();
                    if (num_blocks)
                      *num_blocks = *n;
                    return kvarn::Error::success();
                  });
}

kvarn_status_t kvarn_pool_request_info(kvarn_pool_t *pool, int64_t request,
                                       kvarn_request_info_t *out) {
  return withPool("kvarn_pool_request_info", pool,
                  [&](ManagedPool &p) -> kvarn::Error {
                    KVARN_REQUIRE("kvarn_pool_request_info", out);
                    kvarn::Expected<pool::RequestInfo> r =
                        p.state.request(request);
                    if (!r)
                      return r.takeError();
                    *out = {r->phase == pool::RequestPhase::Live, r->length,
                            r->committed, int32_t(r->blocks.size())};
                    return kvarn::Error::success();
                  });
}

kvarn_status_t kvarn_pool_request_blocks(kvarn_pool_t *pool, int64_t request,
                                         int32_t *blocks, int32_t capacity,
                                         int32_t *count) {
  return withPool(
      "kvarn_pool_request_blocks", pool, [&](ManagedPool &p) -> kvarn::Error {
        KVARN_REQUIRE("kvarn_pool_request_blocks", count);
        if (capacity > 0 && !blocks)
          return nullArgument("kvarn_pool_request_blocks", "blocks");
        kvarn::Expected<pool::RequestInfo> r = p.state.request(request);
        if (!r)
          return r.takeError();
        size_t n = std::min(r->blocks.size(), size_t(std::max(capacity, 0)));
        std::copy_n(r->blocks.begin(), n, blocks);
        *count = int32_t(r->blocks.size());
        return kvarn::Error::success();
      });
}

kvarn_status_t kvarn_pool_stats(kvarn_pool_t *pool, kvarn_pool_stats_t *out) {
  return withPool("kvarn_pool_stats", pool,
                  [&](ManagedPool &p) -> kvarn::Error {
                    KVARN_REQUIRE("kvarn_pool_stats", out);
                    *out = {p.state.numRequests(), p.state.freeBlockCount(),
                            p.state.freeSlotCount(),
                            p.state.pendingFlushCount(), p.openSteps};
                    return kvarn::Error::success();
                  });
}

kvarn_status_t kvarn_pool_capacity(kvarn_pool_t *pool, kvarn_capacity_t *out) {
  return withPool("kvarn_pool_capacity", pool,
                  [&](ManagedPool &p) -> kvarn::Error {
                    KVARN_REQUIRE("kvarn_pool_capacity", out);
                    const pool::PoolGeometry &g = p.state.geometry();
                    *out = toC(
                        p.mla ? pool::mlaCapacityOf(*p.mla, p.mixed,
                                                    g.numBlocks, g.numPoolSlots)
                              : pool::capacityOf(p.mixed, p.model.numKvHeads,
                                                 p.model.headDim, g.blockSize,
                                                 g.numBlocks, g.numPoolSlots));
                    return kvarn::Error::success();
                  });
}

kvarn_status_t kvarn_pool_buffers(kvarn_pool_t *pool,
                                  kvarn_pool_buffers_t *out) {
  return withPool("kvarn_pool_buffers", pool,
                  [&](ManagedPool &p) -> kvarn::Error {
                    KVARN_REQUIRE("kvarn_pool_buffers", out);
                    if (p.mla)
                      return makeError(
                          KVARN_ERROR_INVALID_ARGUMENT,
                          "kvarn_pool_buffers: an MLA pool's pool_k "
                          "(latents) and pool_v (rope keys) have rows of "
                          "different widths, so no common stride; use "
                          "kvarn_pool_layer_info");
                    if (!p.uniform())
                      return makeError(
                          KVARN_ERROR_INVALID_ARGUMENT,
                          "kvarn_pool_buffers: the pool's layers differ in "
                          "kind or preset, so they have no common stride; "
                          "use kvarn_pool_layer_info");
                    const pool::LayerBytes &l0 = p.mixed.layers[0];
                    *out = {p.caches.empty() ? 0 : p.caches[0].address(),
                            p.poolK.address(),
                            p.poolV.address(),
                            p.blockToSlot.address(),
                            l0.cacheBytes,
                            l0.poolBytes / 2};
                    return kvarn::Error::success();
                  });
}

kvarn_status_t kvarn_pool_block_to_slot(kvarn_pool_t *pool, int32_t *out,
                                        int32_t capacity) {
  return withPool("kvarn_pool_block_to_slot", pool,
                  [&](ManagedPool &p) -> kvarn::Error {
                    KVARN_REQUIRE("kvarn_pool_block_to_slot", out);
                    Span<const int32_t> b = p.state.blockToSlot();
                    if (capacity < int32_t(b.size()))
                      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                                       "kvarn_pool_block_to_slot: capacity "
                                       "{0} < num_blocks {1}",
                                       capacity, b.size());
                    std::copy(b.begin(), b.end(), out);
                    return kvarn::Error::success();
                  });
}

kvarn_status_t kvarn_step_create(kvarn_pool_t *pool, kvarn_step_t **out) {
  return withPool("kvarn_step_create", pool,
                  [&](ManagedPool &p) -> kvarn::Error {
                    KVARN_REQUIRE("kvarn_step_create", out);
                    auto step = std::make_unique<Step>(p);
                    *out = new kvarn_step{pool, std::move(step)};
                    ++p.liveSteps;
                    return kvarn::Error::success();
                  });
}

kvarn_status_t kvarn_step_destroy(kvarn_step_t *step) {
  return guarded([&]() -> kvarn::Error {
    if (!step)
      return kvarn::Error::success();
    {
      std::lock_guard<std::mutex> lock(step->owner->pool->mutex);
      if (step->step->open)
        return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                         "kvarn_step_destroy: the step is open; commit it "
                         "first");
      --step->owner->pool->liveSteps;
    }
    delete step;
    return kvarn::Error::success();
  });
}

kvarn_status_t kvarn_step_begin(kvarn_step_t *step, int32_t n,
                                const int64_t *ids, const int32_t *counts) {
  return withStep("kvarn_step_begin", step, [&](Step &s) -> kvarn::Error {
    if (n < 0)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "kvarn_step_begin: n is negative ({0})", n);
    if (n > 0) {
      KVARN_REQUIRE("kvarn_step_begin", ids);
      KVARN_REQUIRE("kvarn_step_begin", counts);
    }
    return s.begin(Span<const int64_t>(ids, size_t(n)),
                   Span<const int32_t>(counts, size_t(n)));
  });
}

kvarn_status_t kvarn_step_write_kv(kvarn_step_t *step, int32_t layer,
                                   kvarn_devptr_t k, kvarn_devptr_t v) {
  return withStep("kvarn_step_write_kv", step,
                  [&](Step &s) { return s.writeKV(layer, k, v); });
}

kvarn_status_t kvarn_step_decode(kvarn_step_t *step, int32_t layer,
                                 kvarn_devptr_t q, kvarn_devptr_t out,
                                 float softmax_scale) {
  return withStep("kvarn_step_decode", step, [&](Step &s) {
    return s.decode(layer, q, out, softmax_scale);
  });
}

kvarn_status_t kvarn_step_verify(kvarn_step_t *step, int32_t layer,
                                 kvarn_devptr_t q, kvarn_devptr_t out,
                                 float softmax_scale) {
  return withStep("kvarn_step_verify", step, [&](Step &s) {
    return s.verify(layer, q, out, softmax_scale);
  });
}

kvarn_status_t kvarn_step_slot_mapping(kvarn_step_t *step, int32_t *out,
                                       int32_t capacity, int32_t *num_tokens) {
  return withStep("kvarn_step_slot_mapping", step,
                  [&](Step &s) -> kvarn::Error {
                    KVARN_REQUIRE("kvarn_step_slot_mapping", num_tokens);
                    if (!s.open)
                      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                                       "kvarn_step_slot_mapping: the step is "
                                       "not open");
                    if (capacity > 0 && !out)
                      return nullArgument("kvarn_step_slot_mapping", "out");
                    size_t n = std::min(s.slotMapping.size(),
                                        size_t(std::max(capacity, 0)));
                    std::copy_n(s.slotMapping.begin(), n, out);
                    *num_tokens = int32_t(s.slotMapping.size());
                    return kvarn::Error::success();
                  });
}

kvarn_status_t kvarn_step_commit(kvarn_step_t *step, const int32_t *accepted) {
  return withStep("kvarn_step_commit", step,
                  [&](Step &s) { return s.commit(accepted); });
}

} // extern "C"
