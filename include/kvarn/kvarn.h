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
  KVARN_ERROR_INVALID_ARGUMENT = 1,   /* a null pointer, a size out of range */
  KVARN_ERROR_UNKNOWN_PRESET = 2,     /* a preset name kvarn does not know */
  KVARN_ERROR_UNSUPPORTED_SHAPE = 3,  /* head_dim, group or GQA ratio unsupported */
  KVARN_ERROR_IO = 4,                 /* a file could not be read or written */
  KVARN_ERROR_CORRUPT_DATA = 5,       /* a malformed case, cache file or record */
  KVARN_ERROR_NO_DRIVER = 6,          /* libcuda.so.1 could not be loaded */
  KVARN_ERROR_NO_DEVICE = 7,          /* the driver loaded but found no GPU */
  KVARN_ERROR_CUDA = 8,               /* a CUDA driver call failed */
  KVARN_ERROR_COMPILE = 9,            /* the DSL or the compiler rejected a kernel */
  KVARN_ERROR_OUT_OF_MEMORY = 10,
  KVARN_ERROR_POOL_EXHAUSTED = 11,    /* no free block or pool slot */
  KVARN_ERROR_UNKNOWN_REQUEST = 12,
  KVARN_ERROR_UNSUPPORTED_TARGET = 13,/* a chip / PTX version pair kvarn cannot emit */
  KVARN_ERROR_INTERNAL = 14
} kvarn_status_t;

/* The library version, "MAJOR.MINOR.PATCH". */
KVARN_API const char *kvarn_version(void);

/* A fixed, human-readable name for a status code ("KVARN_ERROR_IO", ...). */
KVARN_API const char *kvarn_status_string(kvarn_status_t status);

/* The message of the calling thread's last failed call, or "" if none. */
KVARN_API const char *kvarn_last_error(void);

/* Number of presets and their names, in the order of KVARN_SPEC.md section 1. */
KVARN_API size_t kvarn_preset_count(void);
KVARN_API const char *kvarn_preset_name(size_t index);

/* The cache geometry of a (preset, head_dim) pair, so a stack can size its
 * own allocations. Offsets are those of KVARN_SPEC.md section 6. */
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

/* Whether kernels can run here. KVARN_OK with the number of GPUs in
 * *device_count (which may be NULL); else KVARN_ERROR_NO_DRIVER (libcuda.so.1
 * missing, the toolkit's stub, or too old), KVARN_ERROR_NO_DEVICE (a driver
 * but no GPU) or KVARN_ERROR_CUDA, with kvarn_last_error() saying why. The
 * driver is loaded on the first call (set KVARN_LIBCUDA to load another
 * file); later calls return the same answer. */
KVARN_API kvarn_status_t kvarn_cuda_available(int *device_count);

#ifdef __cplusplus
}
#endif

#endif /* KVARN_KVARN_H */
