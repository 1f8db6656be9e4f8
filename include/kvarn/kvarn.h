/*===- kvarn.h - the kvarn C API ----------------------------------*- C -*-===*
 *
 * The only interface libkvarn.so exports. Every function returns a
 * kvarn_status_t; on failure kvarn_last_error() returns a message naming what
 * was wrong (thread-local, valid until the thread's next kvarn call).
 *
 *===----------------------------------------------------------------------===*/
#ifndef KVARN_KVARN_H
#define KVARN_KVARN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define KVARN_API __declspec(dllexport)
#else
#define KVARN_API __attribute__((visibility("default")))
#endif

typedef enum kvarn_status {
  KVARN_OK = 0,
  KVARN_ERROR_INVALID_ARGUMENT = 1, /* a null pointer, a size out of range */
  KVARN_ERROR_UNKNOWN_PRESET = 2,   /* a preset name kvarn does not know */
  KVARN_ERROR_UNSUPPORTED_SHAPE =
      3,                        /* head_dim, group or GQA ratio unsupported */
  KVARN_ERROR_IO = 4,           /* a file could not be read or written */
  KVARN_ERROR_CORRUPT_DATA = 5, /* a malformed case, cache file or record */
  KVARN_ERROR_NO_DRIVER = 6,    /* libcuda.so.1 could not be loaded */
  KVARN_ERROR_NO_DEVICE = 7,    /* the driver loaded but found no GPU */
  KVARN_ERROR_CUDA = 8,         /* a CUDA driver call failed */
  KVARN_ERROR_COMPILE = 9,      /* the DSL or the compiler rejected a kernel */
  KVARN_ERROR_OUT_OF_MEMORY = 10,
  KVARN_ERROR_POOL_EXHAUSTED = 11, /* no free block or pool slot */
  KVARN_ERROR_UNKNOWN_REQUEST = 12,
  KVARN_ERROR_UNSUPPORTED_TARGET =
      13, /* a chip / PTX version pair kvarn cannot emit */
  KVARN_ERROR_INTERNAL = 14,
  KVARN_ERROR_KERNEL_NOT_CACHED =
      15 /* the runtime core (libkvarn_runtime.so) has
            no compiler and the kernel cache lacks the
            kernel: warm it with kvarn-jit cache warm */
} kvarn_status_t;

/* The library version, "MAJOR.MINOR.PATCH". */
KVARN_API const char *kvarn_version(void);

/* A fixed, human-readable name for a status code ("KVARN_ERROR_IO", ...). */
KVARN_API const char *kvarn_status_string(kvarn_status_t status);

/* The message of the calling thread's last failed call, or "" if none. */
KVARN_API const char *kvarn_last_error(void);

/* Number of presets and their names, in the order of docs/kvarn.md,
 * "Presets". */
KVARN_API size_t kvarn_preset_count(void);
KVARN_API const char *kvarn_preset_name(size_t index);

/* The cache geometry of a (preset, head_dim) pair, so a stack can size its
 * own allocations. Offsets are those of docs/kvarn.md, "Record layout". */
/* The byte layout of one (block, KV head) record (docs/kvarn.md, "Record
 * layout"). In the `_e4m3` presets the four scale fields (k_scale,
 * k_token_scale, v_channel_scale, v_scale) hold one e4m3 byte per element,
 * and their shared exponents (int8, in that order) are the 4 bytes before
 * unaligned_bytes (docs/kvarn.md, "Scale formats"); zero points are fp16
 * in every preset. */
typedef struct kvarn_record_layout {
  int32_t head_dim;
  int32_t group;            /* tokens per tile = block size */
  int32_t key_bits;
  int32_t value_bits;
  int32_t sinkhorn_iters;
  int64_t k_codes_offset;
  int64_t k_scale_offset;   /* absorbed scale, per channel */
  int64_t k_zero_offset;    /* absorbed zero, per channel */
  int64_t k_token_scale_offset;
  int64_t v_codes_offset;
  int64_t v_channel_scale_offset;
  int64_t v_scale_offset;   /* absorbed scale, per token */
  int64_t v_zero_offset;    /* absorbed zero, per token */
  int64_t unaligned_bytes;
  int64_t record_bytes;     /* aligned size: one (block, KV head) record */
} kvarn_record_layout_t;

KVARN_API kvarn_status_t kvarn_record_layout(const char *preset, int32_t head_dim,
                                             kvarn_record_layout_t *out);

/* MLA layers (docs/kvarn.md, "MLA records"): the presets and the byte layout
 * of one block's record of the compressed KV latent (kv_lora_rank channels,
 * quantized) with its decoupled rope keys (rope_dim channels, fp16). The
 * layout only: no kernel, pool or context runs MLA yet. */
KVARN_API size_t kvarn_mla_preset_count(void);
KVARN_API const char *kvarn_mla_preset_name(size_t index);

typedef struct kvarn_mla_record_layout {
  int32_t kv_lora_rank;
  int32_t rope_dim;
  int32_t group; /* tokens per block */
  int32_t bits;  /* of a latent code */
  int32_t sinkhorn_iters;
  int64_t codes_offset; /* u8 [group][kv_lora_rank * bits / 8], token-major,
                           low bits first (4 bits: low nibble = even channel) */
  int64_t scale_offset; /* fp16 [kv_lora_rank], per channel */
  int64_t zero_offset;  /* fp16 [kv_lora_rank], per channel */
  int64_t token_scale_offset; /* fp16 [group] */
  int64_t rope_offset;        /* fp16 [group][rope_dim] */
  int64_t record_bytes;       /* one block's record (no padding) */
} kvarn_mla_record_layout_t;

/* kv_lora_rank: a power of two in [64, 512]; rope_dim: a multiple of 8 in
 * [0, 256]; else KVARN_ERROR_UNSUPPORTED_SHAPE. An unknown preset is
 * KVARN_ERROR_UNKNOWN_PRESET. */
KVARN_API kvarn_status_t
kvarn_mla_record_layout(const char *preset, int32_t kv_lora_rank,
                        int32_t rope_dim, kvarn_mla_record_layout_t *out);

/* Whether this library compiles the kernels its cache lacks: 1 for
 * libkvarn.so; 0 for the runtime core libkvarn_runtime.so, which serves
 * kernels compiled ahead of time (kvarn-jit cache warm) and reports any
 * other as KVARN_ERROR_KERNEL_NOT_CACHED (docs/runtime.md, "Installing"). */
KVARN_API int kvarn_can_compile(void);

/* Whether kernels can run here. KVARN_OK with the number of GPUs in
 * *device_count (which may be NULL); else KVARN_ERROR_NO_DRIVER (libcuda.so.1
 * missing, the toolkit's stub, or too old), KVARN_ERROR_NO_DEVICE (a driver
 * but no GPU) or KVARN_ERROR_CUDA, with kvarn_last_error() saying why. The
 * driver is loaded on the first call (set KVARN_LIBCUDA to load another
 * file); later calls return the same answer. */
KVARN_API kvarn_status_t kvarn_cuda_available(int *device_count);

/*===----------------------------------------------------------------------===*
 * Sizes: what a stack that owns its memory allocates. A byte count that
 * does not fit in int64_t is KVARN_ERROR_INVALID_ARGUMENT (out unchanged),
 * never KVARN_OK with a wrapped value.
 *===----------------------------------------------------------------------===*/

/* The shapes of a paged cache and its fp16 pool for one layer:
 *   cache  [num_blocks, num_kv_heads, record_bytes]          u8
 *   pool_k [pool_slots, block_size, num_kv_heads, head_dim]  fp16 (pool_v alike)
 */
typedef struct kvarn_cache_shape {
  int64_t num_blocks;
  int64_t num_kv_heads;
  int64_t record_bytes;
  int64_t block_size;       /* the preset's tile: tokens per block */
  int64_t head_dim;
  int64_t pool_slots;
  int64_t cache_bytes;      /* one layer's cache */
  int64_t pool_bytes;       /* one layer's pool_k (pool_v is the same size) */
} kvarn_cache_shape_t;

KVARN_API kvarn_status_t kvarn_cache_shape(const char *preset, int32_t head_dim,
                                           int32_t num_kv_heads,
                                           int64_t num_blocks,
                                           int64_t pool_slots,
                                           kvarn_cache_shape_t *out);

/* Bytes of decode_split's scratch (f32 part_out and part_lse), sized for
 * its fixed maximum split count whatever num_splits is. */
KVARN_API kvarn_status_t kvarn_decode_split_scratch_bytes(
    int32_t batch, int32_t num_kv_heads, int32_t gqa, int32_t head_dim,
    int64_t *part_out_bytes, int64_t *part_lse_bytes);

/* What a memory budget holds, counting the records of every block and the
 * fp16 pool (the sinks and partial tails live there). */
typedef struct kvarn_capacity {
  int64_t num_blocks;
  int64_t pool_slots;
  int64_t tokens;                 /* num_blocks * block_size */
  int64_t used_bytes;             /* of the budget: records + pool */
  double record_bytes_per_token;  /* per token and KV head: record / block */
  double bytes_per_token;         /* per token, KV head and layer, all in */
  int64_t fp16_tokens;            /* the same budget as an fp16 K/V cache */
  double ratio_vs_fp16;           /* tokens / fp16_tokens */
} kvarn_capacity_t;

/* pool_slots < 0: two per concurrent request and one per eight more. */
KVARN_API kvarn_status_t kvarn_capacity_plan(
    const char *preset, int32_t head_dim, int32_t num_layers,
    int32_t num_kv_heads, int64_t budget_bytes, int64_t concurrent_requests,
    int64_t pool_slots, kvarn_capacity_t *out);

/* What a memory budget holds for num_layers MLA layers of `preset`: each
 * layer one latent "KV head", its blocks' records and fp16 tail slots
 * [pool_slots, block, kv_lora_rank + rope_dim] (no sink block; pool_slots
 * < 0: one per concurrent request and one per eight more), against the same
 * latent and rope keys in 16 bits (fp16_tokens, ratio_vs_fp16). Per-token
 * figures count one layer's latent (record_bytes_per_token) or everything
 * (bytes_per_token, per layer): the plan of kvarn_mla_pool_create's pool. */
KVARN_API kvarn_status_t kvarn_mla_capacity_plan(
    const char *preset, int32_t kv_lora_rank, int32_t rope_dim,
    int32_t num_layers, int64_t budget_bytes, int64_t concurrent_requests,
    int64_t pool_slots, kvarn_capacity_t *out);

/*===----------------------------------------------------------------------===*
 * Contexts and kernels: launches on buffers the caller owns.
 *
 * Device pointers are CUdeviceptr values (a PyTorch tensor's data_ptr()),
 * streams CUstream values (NULL: the context's stream). Launches enqueue and
 * return: they never synchronize the host and may be captured in a CUDA
 * graph once the kernels are loaded (kvarn_kernels_load). kvarn works in the
 * device's primary context, the one the CUDA runtime and PyTorch use.
 *===----------------------------------------------------------------------===*/

typedef uint64_t kvarn_devptr_t;
typedef void *kvarn_stream_t;
typedef struct kvarn_context kvarn_context_t;
typedef struct kvarn_kernels kvarn_kernels_t;

/* A context on GPU `device` whose launches default to `stream` (NULL: the
 * legacy default stream). */
KVARN_API kvarn_status_t kvarn_context_create(int device, kvarn_stream_t stream,
                                              kvarn_context_t **out);
/* Destroys the handle; pools and kernels made from it stay valid objects but
 * every device call on them fails ("context destroyed") until they are
 * destroyed too. NULL is a no-op. */
KVARN_API kvarn_status_t kvarn_context_destroy(kvarn_context_t *context);
/* Waits for the context's stream. */
KVARN_API kvarn_status_t kvarn_context_synchronize(kvarn_context_t *context);

/* The kernels of one (preset, head_dim, GQA ratio), compiled for the
 * context's GPU on first use, for fp16 activations. */
KVARN_API kvarn_status_t kvarn_kernels_create(kvarn_context_t *context,
                                              const char *preset,
                                              int32_t head_dim, int32_t gqa,
                                              kvarn_kernels_t **out);
/* The same for activations of `dtype`: "f16" (NULL) or "bf16". q, append's
 * k and v, and the outputs of decode, decode_split, verify and materialize
 * are then of that type; the fp16 pool, the records and decode_split's fp32
 * scratch are not. Another dtype is KVARN_ERROR_INVALID_ARGUMENT. */
KVARN_API kvarn_status_t kvarn_kernels_create_dtype(kvarn_context_t *context,
                                                    const char *preset,
                                                    int32_t head_dim,
                                                    int32_t gqa,
                                                    const char *dtype,
                                                    kvarn_kernels_t **out);
KVARN_API kvarn_status_t kvarn_kernels_destroy(kvarn_kernels_t *kernels);
/* Compiles and loads now the kernels named in the comma-separated `names`
 * ("append,flush,decode"; NULL: all), so no launch compiles. */
KVARN_API kvarn_status_t kvarn_kernels_load(kvarn_kernels_t *kernels,
                                            const char *names);

/* The kernel ABIs of docs/dsl.md, in the same parameter order. */
KVARN_API kvarn_status_t kvarn_append(kvarn_kernels_t *kernels,
                                      kvarn_stream_t stream, kvarn_devptr_t k,
                                      kvarn_devptr_t v,
                                      kvarn_devptr_t slot_mapping,
                                      kvarn_devptr_t block_to_slot,
                                      kvarn_devptr_t pool_k,
                                      kvarn_devptr_t pool_v, int32_t num_tokens,
                                      int32_t num_kv_heads);
KVARN_API kvarn_status_t kvarn_flush(kvarn_kernels_t *kernels,
                                     kvarn_stream_t stream,
                                     kvarn_devptr_t pool_k,
                                     kvarn_devptr_t pool_v,
                                     kvarn_devptr_t tile_slots,
                                     kvarn_devptr_t tile_blocks,
                                     kvarn_devptr_t cache, int32_t num_tiles,
                                     int32_t num_kv_heads);
KVARN_API kvarn_status_t kvarn_decode(
    kvarn_kernels_t *kernels, kvarn_stream_t stream, kvarn_devptr_t q,
    kvarn_devptr_t block_table, kvarn_devptr_t seq_lens,
    kvarn_devptr_t block_to_slot, kvarn_devptr_t cache, kvarn_devptr_t pool_k,
    kvarn_devptr_t pool_v, kvarn_devptr_t out, float softmax_scale,
    int32_t batch, int32_t max_blocks, int32_t num_kv_heads);
/* decode_split then combine (flash-decoding), scratch from
 * kvarn_decode_split_scratch_bytes. */
KVARN_API kvarn_status_t kvarn_decode_split(
    kvarn_kernels_t *kernels, kvarn_stream_t stream, kvarn_devptr_t q,
    kvarn_devptr_t block_table, kvarn_devptr_t seq_lens,
    kvarn_devptr_t block_to_slot, kvarn_devptr_t cache, kvarn_devptr_t pool_k,
    kvarn_devptr_t pool_v, kvarn_devptr_t part_out, kvarn_devptr_t part_lse,
    kvarn_devptr_t out, float softmax_scale, int32_t batch,
    int32_t max_blocks, int32_t num_kv_heads, int32_t num_splits);
/* The num_splits for a deployment of up to batch_capacity requests of up to
 * max_blocks blocks each (the block table's width: context capacity /
 * block_size) and num_kv_heads, on the context's GPU: of 1 to 16, the count
 * whose waves of decode_split CTAs (the GPU's SMs x the CTAs per SM
 * decode_split was compiled for) stream the fewest blocks, counting a
 * block's worth per wave and for combine (docs/runtime.md); 1 means: call
 * kvarn_decode. It never depends on the current sequence lengths, so one
 * count serves every step and keeps captured CUDA graphs valid. Compiles
 * and loads decode_split if it is not loaded yet. Extents that are not
 * positive, or whose pairs (batch_capacity x num_kv_heads) pass INT32_MAX,
 * are KVARN_ERROR_INVALID_ARGUMENT, *num_splits unchanged. */
KVARN_API kvarn_status_t kvarn_decode_split_count(kvarn_kernels_t *kernels,
                                                  int32_t batch_capacity,
                                                  int32_t max_blocks,
                                                  int32_t num_kv_heads,
                                                  int32_t *num_splits);
/* MLA kernels (docs/kvarn.md "MLA records", docs/dsl.md "MLA kernels"):
 * the kernels of one MLA preset ("kvarn_mla_k4_g128"; NULL: it) for a
 * latent of kv_lora_rank channels (a power of two, 64 to 512) beside a rope
 * key of rope_dim (a multiple of 8, 8 to 256), attended by num_heads query
 * heads (1 to 128), activations of `dtype` ("f16", NULL, or "bf16"). One
 * latent "KV head" per layer:
 *   cache       [num_blocks, record_bytes]               u8
 *   pool_latent [pool_slots, block_size, kv_lora_rank]   fp16, rotated
 *   pool_pe     [pool_slots, block_size, rope_dim]       fp16
 * The dense calls refuse these kernels, and these calls dense ones. */
KVARN_API kvarn_status_t kvarn_mla_kernels_create(
    kvarn_context_t *context, const char *preset, int32_t kv_lora_rank,
    int32_t rope_dim, int32_t num_heads, const char *dtype,
    kvarn_kernels_t **out);
/* latent [num_tokens, kv_lora_rank] and k_pe [num_tokens, rope_dim] in the
 * activation dtype, written (the latent rotated) to the pool slots of
 * slot_mapping's blocks that block_to_slot maps; negative slots are padding. */
KVARN_API kvarn_status_t kvarn_mla_append(
    kvarn_kernels_t *kernels, kvarn_stream_t stream, kvarn_devptr_t latent,
    kvarn_devptr_t k_pe, kvarn_devptr_t slot_mapping,
    kvarn_devptr_t block_to_slot, kvarn_devptr_t pool_latent,
    kvarn_devptr_t pool_pe, int32_t num_tokens);
/* Pool slot tile_slots[t] quantized into the record of block
 * tile_blocks[t], for t < num_tiles. */
KVARN_API kvarn_status_t kvarn_mla_flush(
    kvarn_kernels_t *kernels, kvarn_stream_t stream, kvarn_devptr_t pool_latent,
    kvarn_devptr_t pool_pe, kvarn_devptr_t tile_slots,
    kvarn_devptr_t tile_blocks, kvarn_devptr_t cache, int32_t num_tiles);
/* q [batch, num_heads, kv_lora_rank + rope_dim]: the absorbed query (the
 * latent part un-rotated, then the rope part); out [batch, num_heads,
 * kv_lora_rank]: attention over the latent, un-rotated. */
KVARN_API kvarn_status_t kvarn_mla_decode(
    kvarn_kernels_t *kernels, kvarn_stream_t stream, kvarn_devptr_t q,
    kvarn_devptr_t block_table, kvarn_devptr_t seq_lens,
    kvarn_devptr_t block_to_slot, kvarn_devptr_t cache,
    kvarn_devptr_t pool_latent, kvarn_devptr_t pool_pe, kvarn_devptr_t out,
    float softmax_scale, int32_t batch, int32_t max_blocks);
/* mla_decode_split then mla_combine, scratch from
 * kvarn_mla_decode_split_scratch_bytes. */
KVARN_API kvarn_status_t kvarn_mla_decode_split(
    kvarn_kernels_t *kernels, kvarn_stream_t stream, kvarn_devptr_t q,
    kvarn_devptr_t block_table, kvarn_devptr_t seq_lens,
    kvarn_devptr_t block_to_slot, kvarn_devptr_t cache,
    kvarn_devptr_t pool_latent, kvarn_devptr_t pool_pe, kvarn_devptr_t part_out,
    kvarn_devptr_t part_lse, kvarn_devptr_t out, float softmax_scale,
    int32_t batch, int32_t max_blocks, int32_t num_splits);
/* Speculative decoding: q [batch, max_query_tokens, num_heads,
 * kv_lora_rank + rope_dim], out [batch, max_query_tokens, num_heads,
 * kv_lora_rank]; token j of request b attends to the first
 * context_lens[b] + j + 1 tokens (drafts appended first); tokens j >=
 * query_lens[b] are not written. */
KVARN_API kvarn_status_t kvarn_mla_verify(
    kvarn_kernels_t *kernels, kvarn_stream_t stream, kvarn_devptr_t q,
    kvarn_devptr_t block_table, kvarn_devptr_t context_lens,
    kvarn_devptr_t query_lens, kvarn_devptr_t block_to_slot,
    kvarn_devptr_t cache, kvarn_devptr_t pool_latent, kvarn_devptr_t pool_pe,
    kvarn_devptr_t out, float softmax_scale, int32_t batch,
    int32_t max_query_tokens, int32_t max_blocks);
KVARN_API kvarn_status_t kvarn_mla_decode_split_scratch_bytes(
    int32_t batch, int32_t num_heads, int32_t kv_lora_rank,
    int64_t *part_out_bytes, int64_t *part_lse_bytes);
/* As kvarn_decode_split_count, for MLA kernels. */
KVARN_API kvarn_status_t kvarn_mla_decode_split_count(kvarn_kernels_t *kernels,
                                                      int32_t batch_capacity,
                                                      int32_t max_blocks,
                                                      int32_t *num_splits);
KVARN_API kvarn_status_t kvarn_verify(
    kvarn_kernels_t *kernels, kvarn_stream_t stream, kvarn_devptr_t q,
    kvarn_devptr_t block_table, kvarn_devptr_t context_lens,
    kvarn_devptr_t query_lens, kvarn_devptr_t block_to_slot,
    kvarn_devptr_t cache, kvarn_devptr_t pool_k, kvarn_devptr_t pool_v,
    kvarn_devptr_t out, float softmax_scale, int32_t batch,
    int32_t max_query_tokens, int32_t max_blocks, int32_t num_kv_heads);
/* kvarn_decode, kvarn_decode_split and kvarn_verify with a sliding window of
 * `window` tokens (0: none, as the calls without it): the query at position
 * p (seq_lens[b] - 1; for verify token j, context_lens[b] + j) attends the
 * tokens t with p - window < t <= p, and blocks wholly before the window are
 * not read. One compiled kernel serves every window. A negative window is
 * KVARN_ERROR_INVALID_ARGUMENT, checked before anything else. For a
 * windowed layer's kvarn_decode_split_count, pass as max_blocks the blocks
 * the window spans, min(max_blocks, (window + block_size - 2) / block_size
 * + 1). */
KVARN_API kvarn_status_t kvarn_decode_window(
    kvarn_kernels_t *kernels, kvarn_stream_t stream, kvarn_devptr_t q,
    kvarn_devptr_t block_table, kvarn_devptr_t seq_lens,
    kvarn_devptr_t block_to_slot, kvarn_devptr_t cache, kvarn_devptr_t pool_k,
    kvarn_devptr_t pool_v, kvarn_devptr_t out, float softmax_scale,
    int32_t window, int32_t batch, int32_t max_blocks, int32_t num_kv_heads);
KVARN_API kvarn_status_t kvarn_decode_split_window(
    kvarn_kernels_t *kernels, kvarn_stream_t stream, kvarn_devptr_t q,
    kvarn_devptr_t block_table, kvarn_devptr_t seq_lens,
    kvarn_devptr_t block_to_slot, kvarn_devptr_t cache, kvarn_devptr_t pool_k,
    kvarn_devptr_t pool_v, kvarn_devptr_t part_out, kvarn_devptr_t part_lse,
    kvarn_devptr_t out, float softmax_scale, int32_t window, int32_t batch,
    int32_t max_blocks, int32_t num_kv_heads, int32_t num_splits);
KVARN_API kvarn_status_t kvarn_verify_window(
    kvarn_kernels_t *kernels, kvarn_stream_t stream, kvarn_devptr_t q,
    kvarn_devptr_t block_table, kvarn_devptr_t context_lens,
    kvarn_devptr_t query_lens, kvarn_devptr_t block_to_slot,
    kvarn_devptr_t cache, kvarn_devptr_t pool_k, kvarn_devptr_t pool_v,
    kvarn_devptr_t out, float softmax_scale, int32_t window, int32_t batch,
    int32_t max_query_tokens, int32_t max_blocks, int32_t num_kv_heads);
KVARN_API kvarn_status_t kvarn_materialize(
    kvarn_kernels_t *kernels, kvarn_stream_t stream,
    kvarn_devptr_t block_table, kvarn_devptr_t seq_lens,
    kvarn_devptr_t block_to_slot, kvarn_devptr_t cache, kvarn_devptr_t pool_k,
    kvarn_devptr_t pool_v, kvarn_devptr_t out_start, kvarn_devptr_t out_k,
    kvarn_devptr_t out_v, int32_t batch, int32_t max_blocks,
    int32_t num_kv_heads);

/*===----------------------------------------------------------------------===*
 * The managed pool: kvarn owns the record cache and the fp16 pool of every
 * layer and does the bookkeeping of docs/kvarn.md, "The cache at run time".
 *
 * A serving step over some requests:
 *   kvarn_step_begin(step, n, ids, counts)    tokens appended (all or nothing)
 *   for each layer:
 *     kvarn_step_write_kv(step, layer, k, v)  K/V of the step's tokens
 *     kvarn_step_decode / kvarn_step_verify   attention over the cache
 *   kvarn_step_commit(step, accepted)         rejected drafts rolled back
 *   kvarn_pool_flush(pool)                    one launch: every full block
 *
 * Thread safety: every call on a pool (and on its steps) takes the pool's
 * mutex, so several threads may drive different requests of one pool, each
 * with its own step object; one step object is used by one thread at a time.
 * All device work of a pool goes to its context's stream in call order.
 * kvarn_pool_flush needs every step of the pool committed.
 *
 * A pool created with a NULL context does the bookkeeping only (no device
 * memory; write_kv, decode, verify and flush's launch fail), for planning
 * and tests.
 *===----------------------------------------------------------------------===*/

typedef struct kvarn_pool kvarn_pool_t;
typedef struct kvarn_step kvarn_step_t;

typedef struct kvarn_pool_config {
  const char *preset;            /* NULL: kvarn_k4v2_g128 */
  int32_t num_layers;
  int32_t num_kv_heads;
  int32_t num_q_heads;           /* a multiple of num_kv_heads (GQA) */
  int32_t head_dim;
  int32_t block_size;            /* 0: the preset's tile; else must equal it */
  int32_t num_blocks;
  int32_t pool_slots;            /* <= num_blocks: a slot holds one block */
  int32_t max_requests;
  int32_t max_blocks_per_request;/* the longest context / block_size */
} kvarn_pool_config_t;

/* Per-layer kinds (issue 17). A layer is
 *   KVARN_LAYER_KVARN   quantized as today, with its own preset among those
 *                       of the pool's block size and head_dim;
 *   KVARN_LAYER_FP16    kept unquantized: fp16 rows for every block of the
 *                       layer, never flushed (sliding-window layers by
 *                       default, layers a deployment wants exact);
 *   KVARN_LAYER_ABSENT  no KV cache (Mamba, linear attention): nothing is
 *                       allocated and every step call on it is
 *                       KVARN_ERROR_INVALID_ARGUMENT.
 * Blocks, pool slots and request tables are shared by every layer; a flush
 * writes the records of kvarn layers only. `window` is the layer's sliding
 * window in tokens (0: none), kept with the layer and reported by
 * kvarn_pool_layer_info; memory of blocks that left a window is not
 * released (block ids are shared by all layers, docs/runtime.md). */
typedef enum kvarn_layer_kind {
  KVARN_LAYER_KVARN = 0,
  KVARN_LAYER_FP16 = 1,
  KVARN_LAYER_ABSENT = 2
} kvarn_layer_kind_t;

typedef struct kvarn_layer_config {
  int32_t kind;       /* kvarn_layer_kind_t */
  int32_t window;     /* tokens, >= 0; 0: no sliding window */
  const char *preset; /* kvarn layers; NULL: the pool's preset */
} kvarn_layer_config_t;

/* What kvarn_pool_create_ex adds to kvarn_pool_config_t. Growable: callers
 * set struct_size = sizeof(kvarn_pool_options_t) and layer_config_size =
 * sizeof(kvarn_layer_config_t) as they were compiled. Later versions
 * append fields; sizes smaller than this header's are errors, larger ones
 * are accepted when every byte past the fields this library knows is zero
 * (a setting it cannot honour is an error, never ignored). */
typedef struct kvarn_pool_options {
  uint32_t struct_size;
  uint32_t layer_config_size;
  const kvarn_layer_config_t *layers; /* num_layers entries; NULL: all kvarn */
} kvarn_pool_options_t;

/* kvarn_pool_create with per-layer kinds, presets and windows (options may
 * be NULL: the same as kvarn_pool_create). */
KVARN_API kvarn_status_t kvarn_pool_create_ex(
    kvarn_context_t *context, const kvarn_pool_config_t *config,
    const kvarn_pool_options_t *options, kvarn_pool_t **out);

/* One layer of a pool: kind, window, preset, bytes and device memory.
 *   cache        [num_blocks, num_kv_heads, record_bytes] u8 (kvarn only)
 *   pool_k/v     [rows, block_size, num_kv_heads, head_dim] fp16: rows are
 *                the pool slots of a kvarn layer, the blocks of an fp16 one
 *   block_to_slot the table its kernels take: the pool's for a kvarn layer,
 *                the identity [num_blocks] for an fp16 one
 * Device pointers are 0 without a context or for an absent layer. */
typedef struct kvarn_layer_info {
  uint32_t struct_size; /* in: sizeof(kvarn_layer_info_t) as compiled (at
                         * least this header's); fields past what the
                         * library knows come back zero */
  int32_t kind;
  int32_t window;
  const char *preset;   /* kvarn layers; else NULL */
  int64_t record_bytes; /* one (block, KV head) record; 0 unless kvarn */
  int64_t cache_bytes;  /* the layer's records */
  int64_t pool_bytes;   /* the layer's fp16 rows, K and V together */
  int64_t fp16_bytes;   /* the same blocks as an fp16 K/V cache */
  kvarn_devptr_t cache;
  kvarn_devptr_t pool_k;
  kvarn_devptr_t pool_v;
  kvarn_devptr_t block_to_slot;
} kvarn_layer_info_t;
KVARN_API kvarn_status_t kvarn_pool_layer_info(kvarn_pool_t *pool,
                                               int32_t layer,
                                               kvarn_layer_info_t *out);

/* kvarn_capacity_plan for a pool of `config`'s shape and `options`' layers
 * (config's num_blocks and pool_slots are ignored: the budget decides
 * them; pool_slots < 0 as in kvarn_capacity_plan). `layers` (NULL when
 * capacity is 0) receives up to `capacity` layers' bytes at the planned
 * size (device pointers 0); set layers[0].struct_size, the array's element
 * size. fp16 tokens and the ratio count the layers that have KV. */
KVARN_API kvarn_status_t kvarn_capacity_plan_ex(
    const kvarn_pool_config_t *config, const kvarn_pool_options_t *options,
    int64_t budget_bytes, int64_t concurrent_requests, int64_t pool_slots,
    kvarn_capacity_t *out, kvarn_layer_info_t *layers, int32_t capacity);

/* Every size is checked before anything is allocated: num_blocks *
 * block_size, num_layers * num_blocks and num_layers * pool_slots fit in
 * int32_t (slot mappings and the flush kernel's indices), the device bytes
 * in int64_t, and the bookkeeping's host memory in this machine's RAM
 * (KVARN_ERROR_OUT_OF_MEMORY). */
KVARN_API kvarn_status_t kvarn_pool_create(kvarn_context_t *context,
                                           const kvarn_pool_config_t *config,
                                           kvarn_pool_t **out);
/* Fails (pool unchanged) while steps of the pool exist. NULL is a no-op. */
/* An MLA pool (docs/runtime.md, "MLA pools"): every layer one latent "KV
 * head" of config->preset (an MLA preset; NULL: kvarn_mla_k4_g128), with
 * head_dim the kv_lora_rank, `rope_dim`, num_q_heads the query heads and
 * num_kv_heads 1; no per-layer kinds. Steps work as on a dense pool, with
 * kvarn_step_write_kv's k the latents [tokens, kv_lora_rank] and v the
 * rope keys [tokens, rope_dim], kvarn_step_decode's q the absorbed query
 * [n, num_q_heads, kv_lora_rank + rope_dim] and out [n, num_q_heads,
 * kv_lora_rank], kvarn_step_verify's likewise with max_query_tokens rows a
 * request (mla_verify). There is no sink: every full block is flushed.
 * kvarn_pool_buffers is refused (latent and rope rows differ in width):
 * kvarn_pool_layer_info gives each layer's pointers. kvarn_pool_create
 * refuses MLA presets. */
KVARN_API kvarn_status_t kvarn_mla_pool_create(
    kvarn_context_t *context, const kvarn_pool_config_t *config,
    int32_t rope_dim, kvarn_pool_t **out);
KVARN_API kvarn_status_t kvarn_pool_destroy(kvarn_pool_t *pool);

KVARN_API kvarn_status_t kvarn_pool_add_request(kvarn_pool_t *pool,
                                                int64_t request);
/* Stops the request: full committed blocks are kept (and flushed, the sink
 * too) for kvarn_pool_share_prefix until kvarn_pool_free; the partial last
 * block and uncommitted tokens are dropped. */
KVARN_API kvarn_status_t kvarn_pool_finish(kvarn_pool_t *pool, int64_t request);
/* Drops all the request's blocks; it stays, empty, to be prefilled again. */
KVARN_API kvarn_status_t kvarn_pool_preempt(kvarn_pool_t *pool,
                                            int64_t request);
KVARN_API kvarn_status_t kvarn_pool_free(kvarn_pool_t *pool, int64_t request);
/* The empty request `dst` takes the first `tokens` (a multiple of the block
 * size, full and committed) of `src` by reference. */
KVARN_API kvarn_status_t kvarn_pool_share_prefix(kvarn_pool_t *pool,
                                                 int64_t dst, int64_t src,
                                                 int32_t tokens);
/* Flushes every block that is full, committed and not a live sink: one
 * launch for all layers. *num_blocks (may be NULL): how many. */
KVARN_API kvarn_status_t kvarn_pool_flush(kvarn_pool_t *pool,
                                          int32_t *num_blocks);

typedef struct kvarn_request_info {
  int32_t live;        /* 1 live, 0 finished */
  int32_t length;      /* tokens held, committed or not */
  int32_t committed;
  int32_t num_blocks;
} kvarn_request_info_t;
KVARN_API kvarn_status_t kvarn_pool_request_info(kvarn_pool_t *pool,
                                                 int64_t request,
                                                 kvarn_request_info_t *out);
/* The request's block ids (up to `capacity`); *count: how many it holds. */
KVARN_API kvarn_status_t kvarn_pool_request_blocks(kvarn_pool_t *pool,
                                                   int64_t request,
                                                   int32_t *blocks,
                                                   int32_t capacity,
                                                   int32_t *count);

typedef struct kvarn_pool_stats {
  int32_t num_requests;
  int32_t free_blocks;
  int32_t free_slots;
  int32_t pending_flush;  /* blocks the next kvarn_pool_flush writes */
  int32_t open_steps;
} kvarn_pool_stats_t;
KVARN_API kvarn_status_t kvarn_pool_stats(kvarn_pool_t *pool,
                                          kvarn_pool_stats_t *out);
/* The pool's own capacity (its blocks and slots against fp16 in the same
 * bytes). */
KVARN_API kvarn_status_t kvarn_pool_capacity(kvarn_pool_t *pool,
                                             kvarn_capacity_t *out);

/* The device memory of a pool (0 without a context), for callers that read
 * it (tests, the kernel-level API). Layer l's cache is at
 * cache + l * cache_layer_stride bytes, its pools at pool_k/pool_v +
 * l * pool_layer_stride bytes; block_to_slot [num_blocks] i32. */
typedef struct kvarn_pool_buffers {
  kvarn_devptr_t cache;
  kvarn_devptr_t pool_k;
  kvarn_devptr_t pool_v;
  kvarn_devptr_t block_to_slot;
  int64_t cache_layer_stride;
  int64_t pool_layer_stride;
} kvarn_pool_buffers_t;
KVARN_API kvarn_status_t kvarn_pool_buffers(kvarn_pool_t *pool,
                                            kvarn_pool_buffers_t *out);
/* Copies the host's block_to_slot [num_blocks] (-1: not in the pool). */
KVARN_API kvarn_status_t kvarn_pool_block_to_slot(kvarn_pool_t *pool,
                                                  int32_t *out,
                                                  int32_t capacity);

KVARN_API kvarn_status_t kvarn_step_create(kvarn_pool_t *pool,
                                           kvarn_step_t **out);
/* Fails while the step is open (begun, not committed). NULL is a no-op. */
KVARN_API kvarn_status_t kvarn_step_destroy(kvarn_step_t *step);
/* Appends counts[i] tokens to request ids[i] (uncommitted), all or
 * nothing, and uploads the step's tables. A request is in one open step at
 * most. */
KVARN_API kvarn_status_t kvarn_step_begin(kvarn_step_t *step, int32_t n,
                                          const int64_t *ids,
                                          const int32_t *counts);
/* k, v: fp16 [num_tokens, num_kv_heads, head_dim], un-rotated, the step's
 * tokens request after request. */
KVARN_API kvarn_status_t kvarn_step_write_kv(kvarn_step_t *step, int32_t layer,
                                             kvarn_devptr_t k,
                                             kvarn_devptr_t v);
/* Every count 1: q, out fp16 [n, num_q_heads, head_dim]. */
KVARN_API kvarn_status_t kvarn_step_decode(kvarn_step_t *step, int32_t layer,
                                           kvarn_devptr_t q, kvarn_devptr_t out,
                                           float softmax_scale);
/* Any counts: q, out fp16 [n, max_count, num_q_heads, head_dim]; token j of
 * request i attends to its first length - counts[i] + j + 1 tokens. */
KVARN_API kvarn_status_t kvarn_step_verify(kvarn_step_t *step, int32_t layer,
                                           kvarn_devptr_t q, kvarn_devptr_t out,
                                           float softmax_scale);
/* The open step's token count and its slot mapping (up to `capacity`). */
KVARN_API kvarn_status_t kvarn_step_slot_mapping(kvarn_step_t *step,
                                                 int32_t *out, int32_t capacity,
                                                 int32_t *num_tokens);
/* Commits accepted[i] of request i's tokens (NULL: all) and closes the step;
 * the rest are rolled back. */
KVARN_API kvarn_status_t kvarn_step_commit(kvarn_step_t *step,
                                           const int32_t *accepted);

#ifdef __cplusplus
}
#endif

#endif /* KVARN_KVARN_H */
