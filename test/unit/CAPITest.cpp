//===- CAPITest.cpp - the C API of libkvarn.so ----------------------------===//
//
// Links the shared library as a client would, so only exported symbols are
// reachable.
//
//===----------------------------------------------------------------------===//

#include "kvarn/kvarn.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <string>

// The driver is loaded once per process, on first use: point it at a file
// that does not exist before any test runs, so the no-driver path is tested
// on every machine, GPU or not (test/gpu tests the C API with a driver).
static const bool kNoDriverForThisProcess =
    setenv("KVARN_LIBCUDA", "/nonexistent/kvarn-capi-test/libcuda.so.1", 1) == 0;

TEST(CAPI, VersionAndStatusStrings) {
  EXPECT_STREQ(kvarn_version(), "0.1.0");
  EXPECT_STREQ(kvarn_status_string(KVARN_OK), "KVARN_OK");
  EXPECT_STREQ(kvarn_status_string(KVARN_ERROR_POOL_EXHAUSTED),
               "KVARN_ERROR_POOL_EXHAUSTED");
  EXPECT_STREQ(kvarn_status_string(KVARN_ERROR_KERNEL_NOT_CACHED),
               "KVARN_ERROR_KERNEL_NOT_CACHED");
  EXPECT_STREQ(kvarn_status_string(kvarn_status_t(999)),
               "KVARN_ERROR_UNKNOWN_STATUS");
}

TEST(CAPI, PresetsAndLayouts) {
  ASSERT_EQ(kvarn_preset_count(), 8u);
  EXPECT_STREQ(kvarn_preset_name(0), "kvarn_k4v2_g128");
  EXPECT_STREQ(kvarn_preset_name(4), "kvarn_k4v2_g128_e4m3");
  EXPECT_EQ(kvarn_preset_name(8), nullptr);
  kvarn_record_layout_t l;
  ASSERT_EQ(kvarn_record_layout("kvarn_k4v2_g128", 128, &l), KVARN_OK);
  EXPECT_EQ(l.record_bytes, 13824);
  EXPECT_EQ(l.v_codes_offset, 8960);
  EXPECT_EQ(l.group, 128);
  // e4m3 scales: one byte each, four exponent bytes after the last field.
  ASSERT_EQ(kvarn_record_layout("kvarn_k4v2_g128_e4m3", 128, &l), KVARN_OK);
  EXPECT_EQ(l.k_zero_offset - l.k_scale_offset, 128);
  EXPECT_EQ(l.unaligned_bytes, 13824 - 4 * 128 + 4);
  EXPECT_STREQ(kvarn_last_error(), "");
}

TEST(CAPI, MlaPresetsAndLayouts) {
  ASSERT_EQ(kvarn_mla_preset_count(), 1u);
  EXPECT_STREQ(kvarn_mla_preset_name(0), "kvarn_mla_k4_g128");
  EXPECT_EQ(kvarn_mla_preset_name(1), nullptr);
  // docs/kvarn.md, "MLA records": codes token-major, then scale and zero
  // per channel, token scale, rope keys; no padding.
  for (auto [rank, rope] : {std::pair{512, 64}, {256, 32}, {64, 0}}) {
    kvarn_mla_record_layout_t l;
    ASSERT_EQ(kvarn_mla_record_layout("kvarn_mla_k4_g128", rank, rope, &l),
              KVARN_OK)
        << kvarn_last_error();
    const int64_t g = 128, codes = g * rank * 4 / 8;
    EXPECT_EQ(l.kv_lora_rank, rank);
    EXPECT_EQ(l.rope_dim, rope);
    EXPECT_EQ(l.group, g);
    EXPECT_EQ(l.bits, 4);
    EXPECT_EQ(l.sinkhorn_iters, 16);
    EXPECT_EQ(l.codes_offset, 0);
    EXPECT_EQ(l.scale_offset, codes);
    EXPECT_EQ(l.zero_offset, codes + 2 * rank);
    EXPECT_EQ(l.token_scale_offset, codes + 4 * rank);
    EXPECT_EQ(l.rope_offset, codes + 4 * rank + 2 * g);
    EXPECT_EQ(l.record_bytes, codes + 4 * rank + 2 * g + 2 * g * rope);
  }
  kvarn_mla_record_layout_t l;
  ASSERT_EQ(kvarn_mla_record_layout("kvarn_mla_k4_g128", 512, 64, &l),
            KVARN_OK);
  EXPECT_EQ(l.record_bytes, 51456); // the reference's stride for R 512, E 64
  kvarn_mla_record_layout_t untouched = l;
  EXPECT_EQ(kvarn_mla_record_layout("kvarn_k4v2_g128", 512, 64, &l),
            KVARN_ERROR_UNKNOWN_PRESET);
  EXPECT_NE(std::string(kvarn_last_error()).find("kvarn_k4v2_g128"),
            std::string::npos);
  EXPECT_EQ(kvarn_mla_record_layout("kvarn_mla_k4_g128", 384, 64, &l),
            KVARN_ERROR_UNSUPPORTED_SHAPE);
  EXPECT_NE(std::string(kvarn_last_error()).find("384"), std::string::npos);
  EXPECT_EQ(kvarn_mla_record_layout("kvarn_mla_k4_g128", 512, 60, &l),
            KVARN_ERROR_UNSUPPORTED_SHAPE);
  EXPECT_EQ(kvarn_mla_record_layout(nullptr, 512, 64, &l),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(kvarn_mla_record_layout("kvarn_mla_k4_g128", 512, 64, nullptr),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::memcmp(&l, &untouched, sizeof l), 0);
}

// The MLA kernels' shape and arguments are checked before a context is
// needed, so every bad one is reported here without a GPU; the output
// handle stays untouched.
TEST(CAPI, MlaKernelsRefuseBadShapes) {
  kvarn_kernels_t *k = reinterpret_cast<kvarn_kernels_t *>(0x1);
  struct Bad {
    const char *preset;
    int32_t rank, rope, heads;
    const char *dtype;
    kvarn_status_t status;
    const char *says;
  };
  for (const Bad &b : {
           Bad{"kvarn_k4v2_g128", 512, 64, 16, nullptr,
               KVARN_ERROR_UNKNOWN_PRESET, "is not an MLA preset"},
           Bad{"kvarn_mla_k9", 512, 64, 16, nullptr, KVARN_ERROR_UNKNOWN_PRESET,
               "is not an MLA preset"},
           Bad{nullptr, 384, 64, 16, nullptr, KVARN_ERROR_UNSUPPORTED_SHAPE,
               "kv_lora_rank 384"},
           Bad{nullptr, 512, 0, 16, nullptr, KVARN_ERROR_UNSUPPORTED_SHAPE,
               "need the rope key"},
           Bad{nullptr, 512, 60, 16, nullptr, KVARN_ERROR_UNSUPPORTED_SHAPE,
               "rope dim 60"},
           Bad{nullptr, 512, 64, 0, nullptr, KVARN_ERROR_UNSUPPORTED_SHAPE,
               "query heads 0"},
           Bad{nullptr, 512, 64, 129, nullptr, KVARN_ERROR_UNSUPPORTED_SHAPE,
               "query heads 129"},
           Bad{nullptr, 512, 64, 16, "f8", KVARN_ERROR_INVALID_ARGUMENT, "f8"},
       }) {
    EXPECT_EQ(kvarn_mla_kernels_create(nullptr, b.preset, b.rank, b.rope,
                                       b.heads, b.dtype, &k),
              b.status)
        << b.says;
    EXPECT_NE(std::string(kvarn_last_error()).find(b.says), std::string::npos)
        << kvarn_last_error();
    EXPECT_EQ(k, reinterpret_cast<kvarn_kernels_t *>(0x1));
  }
  // A good shape then needs the context.
  EXPECT_EQ(kvarn_mla_kernels_create(nullptr, nullptr, 512, 64, 16, "bf16", &k),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kvarn_last_error()).find("context"), std::string::npos)
      << kvarn_last_error();

  EXPECT_EQ(
      kvarn_mla_decode(nullptr, nullptr, 0, 0, 0, 0, 0, 0, 0, 0, 1.0f, 1, 1),
      KVARN_ERROR_INVALID_ARGUMENT);
  int32_t splits = 7;
  EXPECT_EQ(kvarn_mla_decode_split_count(nullptr, 0, 4, &splits),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(splits, 7);
}

// part_out [batch, MAX_SPLITS, heads, kv_lora_rank] and part_lse [batch,
// MAX_SPLITS, heads], f32, from the kernels' ABI (docs/dsl.md).
TEST(CAPI, MlaDecodeSplitScratch) {
  int64_t out = 0, lse = 0;
  ASSERT_EQ(kvarn_mla_decode_split_scratch_bytes(3, 16, 512, &out, &lse),
            KVARN_OK)
      << kvarn_last_error();
  EXPECT_EQ(lse, 3LL * 64 * 16 * 4);
  EXPECT_EQ(out, 3LL * 64 * 16 * 512 * 4);
  EXPECT_EQ(kvarn_mla_decode_split_scratch_bytes(3, 0, 512, &out, &lse),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(kvarn_mla_decode_split_scratch_bytes(3, 16, 512, nullptr, &lse),
            KVARN_ERROR_INVALID_ARGUMENT);
}

TEST(CAPI, MlaCapacityPlan) {
  // DeepSeek-V2-Lite's latent (R 512, rope 64) over 27 layers, 10 GB, 16
  // requests; the sizes from the format, not from the library.
  const int64_t layers = 27, budget = 10'000'000'000LL, requests = 16;
  const int64_t record = 128 * 512 / 2 + 4 * 512 + 2 * 128 + 2 * 128 * 64;
  const int64_t slot = layers * 128 * (512 + 64) * 2;
  const int64_t slots = requests + 2; // a tail each, one per eight more
  const int64_t blocks = (budget - slots * slot) / (layers * record);
  kvarn_capacity_t c;
  ASSERT_EQ(kvarn_mla_capacity_plan("kvarn_mla_k4_g128", 512, 64, layers,
                                    budget, requests, -1, &c),
            KVARN_OK)
      << kvarn_last_error();
  EXPECT_EQ(c.pool_slots, slots);
  EXPECT_EQ(c.num_blocks, blocks);
  EXPECT_EQ(c.tokens, blocks * 128);
  EXPECT_EQ(c.used_bytes, blocks * layers * record + slots * slot);
  EXPECT_LE(c.used_bytes, budget);
  EXPECT_DOUBLE_EQ(c.record_bytes_per_token, 402.0);
  EXPECT_EQ(c.fp16_tokens, budget / (layers * 1152));
  EXPECT_NEAR(c.ratio_vs_fp16,
              double(blocks * 128) / (budget / (layers * 1152)), 1e-12);
  EXPECT_GT(c.ratio_vs_fp16, 2.8); // 1152 / 402 = 2.87 less the tails
  // An explicit slot count is taken as given.
  ASSERT_EQ(kvarn_mla_capacity_plan("kvarn_mla_k4_g128", 512, 64, layers,
                                    budget, requests, 5, &c),
            KVARN_OK);
  EXPECT_EQ(c.pool_slots, 5);
  EXPECT_EQ(c.num_blocks, (budget - 5 * slot) / (layers * record));

  kvarn_capacity_t untouched = c;
  EXPECT_EQ(kvarn_mla_capacity_plan("kvarn_k4v2_g128", 512, 64, layers, budget,
                                    requests, -1, &c),
            KVARN_ERROR_UNKNOWN_PRESET);
  EXPECT_EQ(kvarn_mla_capacity_plan("kvarn_mla_k4_g128", 500, 64, layers,
                                    budget, requests, -1, &c),
            KVARN_ERROR_UNSUPPORTED_SHAPE);
  EXPECT_EQ(kvarn_mla_capacity_plan("kvarn_mla_k4_g128", 512, 64, 0, budget,
                                    requests, -1, &c),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(kvarn_mla_capacity_plan("kvarn_mla_k4_g128", 512, 64, layers,
                                    1 << 20, requests, -1, &c),
            KVARN_ERROR_OUT_OF_MEMORY);
  EXPECT_NE(std::string(kvarn_last_error()).find("pool slots"),
            std::string::npos)
      << kvarn_last_error();
  EXPECT_EQ(kvarn_mla_capacity_plan("kvarn_mla_k4_g128", 512, 64, layers,
                                    budget, -1, -1, &c),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(kvarn_mla_capacity_plan("kvarn_mla_k4_g128", 512, 64, layers,
                                    budget, requests, -1, nullptr),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::memcmp(&c, &untouched, sizeof c), 0);
}

// KvarnCAPITests links libkvarn.so, KvarnCAPIRuntimeCoreTests the runtime
// core (test/unit/CMakeLists.txt says which through this macro).
TEST(CAPI, CanCompileSaysWhichLibraryThisIs) {
  EXPECT_EQ(kvarn_can_compile(), KVARN_EXPECT_CAN_COMPILE);
}

TEST(CAPI, ErrorsCarryAStatusAndAMessage) {
  kvarn_record_layout_t l;
  std::memset(&l, 0x5a, sizeof l);
  kvarn_record_layout_t untouched = l;
  EXPECT_EQ(kvarn_record_layout("kvarn_k9v9", 128, &l),
            KVARN_ERROR_UNKNOWN_PRESET);
  EXPECT_NE(std::string(kvarn_last_error()).find("kvarn_k9v9"),
            std::string::npos);
  EXPECT_EQ(kvarn_record_layout("kvarn_k4v2_g128", 100, &l),
            KVARN_ERROR_UNSUPPORTED_SHAPE);
  EXPECT_NE(std::string(kvarn_last_error()).find("100"), std::string::npos);
  EXPECT_EQ(kvarn_record_layout(nullptr, 128, &l), KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(kvarn_record_layout("kvarn_k4v2_g128", 128, nullptr),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::memcmp(&l, &untouched, sizeof l), 0); // failures write nothing
}

// A dtype other than f16 and bf16 is refused, GPU or not, and says which
// dtypes there are; nothing is created.
TEST(CAPI, KernelsRejectAnUnknownDtype) {
  kvarn_kernels_t *kernels = nullptr;
  EXPECT_EQ(kvarn_kernels_create_dtype(nullptr, nullptr, 128, 1, "fp8",
                                       &kernels),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_STREQ(kvarn_last_error(), "unknown dtype 'fp8' (dtypes: f16, bf16)");
  EXPECT_EQ(kernels, nullptr);
  // A valid dtype gets as far as the missing context.
  EXPECT_EQ(kvarn_kernels_create_dtype(nullptr, nullptr, 128, 1, "bf16",
                                       &kernels),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(kvarn_last_error()).find("dtype"), std::string::npos)
      << kvarn_last_error();
}

TEST(CAPI, WithoutADriverCudaIsUnavailableAndSaysWhy) {
  ASSERT_TRUE(kNoDriverForThisProcess);
  int devices = -1;
  EXPECT_EQ(kvarn_cuda_available(&devices), KVARN_ERROR_NO_DRIVER);
  EXPECT_EQ(devices, 0);
  std::string why = kvarn_last_error();
  EXPECT_NE(why.find("no CUDA driver"), std::string::npos) << why;
  EXPECT_NE(why.find("/nonexistent/kvarn-capi-test/libcuda.so.1"),
            std::string::npos)
      << why;
  // The answer is remembered, and a null count is allowed.
  EXPECT_EQ(kvarn_cuda_available(nullptr), KVARN_ERROR_NO_DRIVER);
  EXPECT_EQ(kvarn_last_error(), why);
}

// A negative sliding window is refused, GPU or not, naming the call and the
// window; window 0 (none) gets as far as the missing kernels.
TEST(CAPI, NegativeWindowsAreArgumentErrors) {
  EXPECT_EQ(kvarn_decode_window(nullptr, nullptr, 0, 0, 0, 0, 0, 0, 0, 0, 0.1f,
                                -3, 1, 1, 1),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kvarn_last_error())
                .find("kvarn_decode_window: window "
                      "is -3 tokens"),
            std::string::npos)
      << kvarn_last_error();
  EXPECT_EQ(kvarn_decode_split_window(nullptr, nullptr, 0, 0, 0, 0, 0, 0, 0, 0,
                                      0, 0, 0.1f, -1, 1, 1, 1, 2),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kvarn_last_error()).find("window is -1 tokens"),
            std::string::npos);
  EXPECT_EQ(kvarn_verify_window(nullptr, nullptr, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                0.1f, INT32_MIN, 1, 1, 1, 1),
            KVARN_ERROR_INVALID_ARGUMENT);
  // Window 0 is no window: the next check is the missing kernels.
  EXPECT_EQ(kvarn_decode_window(nullptr, nullptr, 0, 0, 0, 0, 0, 0, 0, 0, 0.1f,
                                0, 1, 1, 1),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_EQ(std::string(kvarn_last_error()).find("window is"),
            std::string::npos)
      << kvarn_last_error();
}
