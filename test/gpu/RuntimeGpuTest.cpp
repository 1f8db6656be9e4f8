//===- RuntimeGpuTest.cpp - the runtime on a real GPU ---------------------===//
//
// Device query, memory, copies, fills, streams, events, module loading, the
// two PTX-to-cubin paths, a mixed-layer pool, and serving from several
// contexts at once (one GPU twice; every GPU, where there are two or more).
// Every test SKIPS with the driver loader's message where there is no
// driver or no GPU (unless KVARN_REQUIRE_GPU is set); a driver that loads
// but fails otherwise is a failure, not a skip. Inputs are fresh random
// bytes each run (KVARN_TEST_SEED replays one) and outputs are poisoned
// before being written.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Reference/Mla.h"
#include "kvarn/Runtime/Module.h"
#include "kvarn/Runtime/PtxAssembler.h"
#include "kvarn/Support/Half.h"
#include "kvarn/kvarn.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace kvarn;
using namespace kvarn::cuda;

namespace {

uint64_t freshSeed() {
  static uint64_t seed = [] {
    uint64_t s = 0;
    if (const char *env = std::getenv("KVARN_TEST_SEED"))
      s = std::strtoull(env, nullptr, 0);
    else
      s = uint64_t(std::random_device{}()) << 32 | std::random_device{}();
    std::fprintf(stderr, "[   seed   ] KVARN_TEST_SEED=%llu\n",
                 (unsigned long long)s);
    return s;
  }();
  return seed;
}

std::vector<uint8_t> randomBytes(size_t count) {
  static std::mt19937_64 rng(freshSeed());
  std::vector<uint8_t> bytes(count);
  for (size_t i = 0; i < count; i += 8) {
    uint64_t word = rng();
    std::memcpy(&bytes[i], &word, std::min<size_t>(8, count - i));
  }
  return bytes;
}

std::pair<kvarn_status_t, std::string> statusAndMessage(kvarn::Error err) {
  std::string message;
  kvarn_status_t status = kvarn::consumeError(std::move(err), message);
  return {status, message};
}

bool contains(const std::string &haystack, const std::string &needle) {
  return haystack.find(needle) != std::string::npos;
}

/// A PTX module with no kernels in it: enough to exercise the assemblers and
/// module loading without a hand-written kernel.
std::string ptxModuleWithNoKernels(const DeviceInfo &device) {
  const char *version = device.computeMajor <= 9 ? "8.0" : "8.7";
  return std::string(".version ") + version + "\n.target " + device.arch() +
         "\n.address_size 64\n";
}

/// A PTX header the driver recognizes as PTX, then a line that is not:
/// the JIT rejects it with CUDA_ERROR_INVALID_PTX and a ptxas-style log.
/// (Text that does not start like PTX is CUDA_ERROR_INVALID_IMAGE, "Binary
/// format ... is not recognized", as seen on the H100 with driver 580.)
std::string ptxWithASyntaxError(const DeviceInfo &device) {
  return ptxModuleWithNoKernels(device) + "this is not valid PTX\n";
}

/// The GPU every test uses, set up once; null with a reason where there is
/// none.
struct SharedGpu {
  std::unique_ptr<Context> context;
  kvarn_status_t status = KVARN_OK;
  std::string why;
};

const SharedGpu &sharedGpu() {
  static const SharedGpu *gpu = [] {
    auto *g = new SharedGpu();
    kvarn::Expected<Context> context = Context::create(0);
    if (context) {
      g->context = std::make_unique<Context>(std::move(*context));
      const DeviceInfo &d = g->context->info();
      std::fprintf(stderr,
                   "[   gpu    ] %s, %s, %d SMs, %.1f GiB, driver %d, %s\n",
                   d.name.c_str(), d.arch().c_str(), d.multiprocessors,
                   double(d.totalMemoryBytes) / (1u << 30),
                   g->context->driver().version(),
                   g->context->driver().libraryPath().c_str());
    } else {
      std::tie(g->status, g->why) = statusAndMessage(context.takeError());
    }
    return g;
  }();
  return *gpu;
}

class Gpu : public ::testing::Test {
protected:
  void SetUp() override {
    const SharedGpu &gpu = sharedGpu();
    // On the GPU machine run-on-device.sh sets KVARN_REQUIRE_GPU, so a
    // loader that fails there is a failure rather than a quiet skip.
    const char *required = std::getenv("KVARN_REQUIRE_GPU");
    bool mustRun = required && *required && *required != '0';
    if (!mustRun && (gpu.status == KVARN_ERROR_NO_DRIVER ||
                     gpu.status == KVARN_ERROR_NO_DEVICE))
      GTEST_SKIP() << gpu.why;
    ASSERT_TRUE(gpu.context) << "the CUDA driver loaded but failed: "
                             << gpu.why;
  }
  const Context &context() const { return *sharedGpu().context; }

  DeviceBuffer allocate(size_t bytes) {
    kvarn::Expected<DeviceBuffer> buffer =
        DeviceBuffer::allocate(context(), bytes);
    if (!buffer) {
      ADD_FAILURE() << kvarn::toString(buffer.takeError());
      return DeviceBuffer();
    }
    return std::move(*buffer);
  }
};

#define ASSERT_OK(expr)                                                        \
  do {                                                                         \
    if (kvarn::Error err_ = (expr))                                            \
      FAIL() << #expr << ": " << kvarn::toString(std::move(err_));             \
  } while (0)

} // namespace

TEST_F(Gpu, DeviceQuery) {
  const DeviceInfo &d = context().info();
  EXPECT_FALSE(d.name.empty());
  EXPECT_GE(d.computeMajor, 7);
  EXPECT_EQ(d.arch().rfind("sm_", 0), 0u);
  EXPECT_GT(d.multiprocessors, 0);
  EXPECT_GT(d.totalMemoryBytes, int64_t(1) << 30);
  EXPECT_GE(d.maxSharedBytesPerBlockOptin, d.maxSharedBytesPerBlock);
  EXPECT_GT(d.l2CacheBytes, 0);
  EXPECT_GE(context().driver().version(), 12000);
  EXPECT_GE(context().driver().deviceCount(), 1);

  kvarn::Expected<Context::MemoryInfo> memory = context().memoryInfo();
  ASSERT_TRUE(bool(memory)) << kvarn::toString(memory.takeError());
  EXPECT_GT(memory->freeBytes, 0);
  EXPECT_LE(memory->freeBytes, memory->totalBytes);
  std::fprintf(stderr,
               "[   info   ] %s: %d KiB shared per block (opt-in %d KiB), "
               "%d MiB L2, %.1f of %.1f GiB free\n",
               d.arch().c_str(), d.maxSharedBytesPerBlock / 1024,
               d.maxSharedBytesPerBlockOptin / 1024, d.l2CacheBytes >> 20,
               double(memory->freeBytes) / (1u << 30),
               double(memory->totalBytes) / (1u << 30));
}

TEST_F(Gpu, TheCApiSeesTheSameGpus) {
  int devices = -1;
  ASSERT_EQ(kvarn_cuda_available(&devices), KVARN_OK) << kvarn_last_error();
  EXPECT_EQ(devices, context().driver().deviceCount());
  EXPECT_STREQ(kvarn_last_error(), "");
}

TEST_F(Gpu, AllocationAndRelease) {
  DeviceBuffer a = allocate(1 << 20);
  EXPECT_NE(a.address(), 0u);
  EXPECT_EQ(a.size(), size_t(1) << 20);
  DeviceBuffer moved = std::move(a);
  EXPECT_EQ(a.address(), 0u);
  EXPECT_EQ(moved.size(), size_t(1) << 20);

  DeviceBuffer empty = allocate(0);
  EXPECT_EQ(empty.address(), 0u);
  ASSERT_OK(empty.fill8(0)); // nothing to do, and no error

  // Far more than any GPU has: a clear out-of-memory error, not a crash.
  kvarn::Expected<DeviceBuffer> huge =
      DeviceBuffer::allocate(context(), size_t(1) << 50);
  ASSERT_FALSE(bool(huge));
  auto [status, message] = statusAndMessage(huge.takeError());
  EXPECT_EQ(status, KVARN_ERROR_OUT_OF_MEMORY);
  EXPECT_TRUE(contains(message, "cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY"))
      << message;
  EXPECT_TRUE(contains(message, "1125899906842624 bytes")) << message;
}

TEST_F(Gpu, MemcpyRoundTrip) {
  // An odd size, so nothing lines up by accident.
  const size_t bytes = (size_t(64) << 20) + 13;
  std::vector<uint8_t> host = randomBytes(bytes);
  DeviceBuffer first = allocate(bytes), second = allocate(bytes);
  ASSERT_OK(second.fill8(0xa5)); // poison
  ASSERT_OK(first.upload(host.data(), bytes));
  ASSERT_OK(second.copyFrom(first, bytes));
  std::vector<uint8_t> back(bytes, 0x5a);
  ASSERT_OK(second.download(back.data(), bytes));
  EXPECT_TRUE(back == host);

  // Partial copies at an offset.
  std::vector<uint8_t> patch = randomBytes(4096 + 3);
  ASSERT_OK(first.upload(patch.data(), patch.size(), 1001));
  std::vector<uint8_t> patchBack(patch.size());
  ASSERT_OK(first.download(patchBack.data(), patchBack.size(), 1001));
  EXPECT_TRUE(patchBack == patch);

  // Out of range: refused before the driver is called.
  auto [status, message] =
      statusAndMessage(first.upload(host.data(), 16, bytes - 8));
  EXPECT_EQ(status, KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(message, "overrun")) << message;
}

TEST_F(Gpu, Memset) {
  const size_t bytes = (size_t(16) << 20) + 4;
  DeviceBuffer buffer = allocate(bytes);
  std::vector<uint8_t> back(bytes);

  ASSERT_OK(buffer.fill8(0xc3));
  ASSERT_OK(buffer.download(back.data(), bytes));
  EXPECT_TRUE(std::all_of(back.begin(), back.end(),
                          [](uint8_t b) { return b == 0xc3; }));

  ASSERT_OK(buffer.fill16(0x7e00)); // the fp16 NaN we poison outputs with
  ASSERT_OK(buffer.download(back.data(), bytes));
  std::vector<uint16_t> halves(bytes / 2);
  std::memcpy(halves.data(), back.data(), bytes);
  EXPECT_TRUE(std::all_of(halves.begin(), halves.end(),
                          [](uint16_t h) { return h == 0x7e00; }));

  ASSERT_OK(buffer.fill32(0xdeadbeef));
  ASSERT_OK(buffer.download(back.data(), bytes));
  std::vector<uint32_t> words(bytes / 4);
  std::memcpy(words.data(), back.data(), bytes);
  EXPECT_TRUE(std::all_of(words.begin(), words.end(),
                          [](uint32_t w) { return w == 0xdeadbeef; }));

  DeviceBuffer odd = allocate(6);
  auto [status, message] = statusAndMessage(odd.fill32(0));
  EXPECT_EQ(status, KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(message, "multiple of 4")) << message;
}

TEST_F(Gpu, StreamsAndEvents) {
  const size_t bytes = size_t(256) << 20; // well past L2
  std::vector<uint8_t> host = randomBytes(bytes);
  DeviceBuffer source = allocate(bytes), target = allocate(bytes);
  kvarn::Expected<Stream> stream = Stream::create(context());
  ASSERT_TRUE(bool(stream)) << kvarn::toString(stream.takeError());
  kvarn::Expected<Event> start = Event::create(context());
  kvarn::Expected<Event> end = Event::create(context());
  ASSERT_TRUE(start && end);

  ASSERT_OK(target.fill8Async(0xa5, stream->handle()));
  ASSERT_OK(source.uploadAsync(host.data(), bytes, stream->handle()));
  // Warm once, then time a device-to-device copy between two events.
  ASSERT_OK(target.copyFromAsync(source, bytes, stream->handle()));
  ASSERT_OK(start->record(stream->handle()));
  constexpr int kCopies = 10;
  for (int i = 0; i < kCopies; ++i)
    ASSERT_OK(target.copyFromAsync(source, bytes, stream->handle()));
  ASSERT_OK(end->record(stream->handle()));
  std::vector<uint8_t> back(bytes);
  ASSERT_OK(target.downloadAsync(back.data(), bytes, stream->handle()));
  ASSERT_OK(stream->synchronize());
  ASSERT_OK(end->synchronize());
  EXPECT_TRUE(back == host);

  kvarn::Expected<float> ms = Event::elapsedMilliseconds(*start, *end);
  ASSERT_TRUE(bool(ms)) << kvarn::toString(ms.takeError());
  EXPECT_GT(*ms, 0.0f);
  // Bytes read plus bytes written, as METHOD.md counts a copy.
  double gbPerSecond = 2.0 * bytes * kCopies / (*ms * 1e-3) / 1e9;
  std::fprintf(stderr,
               "[   info   ] device-to-device copy: %d x %zu MiB in %.3f ms, "
               "%.0f GB/s (read + write)\n",
               kCopies, bytes >> 20, *ms, gbPerSecond);
}

TEST_F(Gpu, TwoStreamsAtOnce) {
  const size_t bytes = size_t(8) << 20;
  std::vector<uint8_t> hostA = randomBytes(bytes), hostB = randomBytes(bytes);
  DeviceBuffer a = allocate(bytes), b = allocate(bytes);
  kvarn::Expected<Stream> s1 = Stream::create(context());
  kvarn::Expected<Stream> s2 = Stream::create(context());
  ASSERT_TRUE(s1 && s2);
  ASSERT_OK(a.uploadAsync(hostA.data(), bytes, s1->handle()));
  ASSERT_OK(b.uploadAsync(hostB.data(), bytes, s2->handle()));
  std::vector<uint8_t> backA(bytes), backB(bytes);
  ASSERT_OK(a.downloadAsync(backA.data(), bytes, s1->handle()));
  ASSERT_OK(b.downloadAsync(backB.data(), bytes, s2->handle()));
  ASSERT_OK(s1->synchronize());
  ASSERT_OK(s2->synchronize());
  EXPECT_TRUE(backA == hostA);
  EXPECT_TRUE(backB == hostB);
}

TEST_F(Gpu, WorksFromAnotherThreadAndLeavesItsContextAlone) {
  const size_t bytes = 1 << 20;
  std::vector<uint8_t> host = randomBytes(bytes), back(bytes);
  DeviceBuffer buffer = allocate(bytes);
  std::string failure;
  CUcontext currentAfter = reinterpret_cast<CUcontext>(uintptr_t(1));
  std::thread worker([&] {
    if (kvarn::Error err = buffer.upload(host.data(), bytes))
      failure = kvarn::toString(std::move(err));
    else if (kvarn::Error err = buffer.download(back.data(), bytes))
      failure = kvarn::toString(std::move(err));
    (void)context().driver().api().cuCtxGetCurrent(&currentAfter);
  });
  worker.join();
  EXPECT_EQ(failure, "");
  EXPECT_TRUE(back == host);
  EXPECT_EQ(currentAfter, nullptr); // restored to what the thread had: none
}

TEST_F(Gpu, BuffersSurviveMovingTheirContext) {
  // Objects keep a ContextRef, not the Context's address.
  kvarn::Expected<Context> first = Context::create(0);
  ASSERT_TRUE(bool(first)) << kvarn::toString(first.takeError());
  kvarn::Expected<DeviceBuffer> buffer = DeviceBuffer::allocate(*first, 4096);
  ASSERT_TRUE(bool(buffer)) << kvarn::toString(buffer.takeError());
  Context moved = std::move(*first);
  std::vector<uint8_t> host = randomBytes(4096), back(4096);
  ASSERT_OK(buffer->upload(host.data(), host.size()));
  ASSERT_OK(buffer->download(back.data(), back.size()));
  EXPECT_TRUE(back == host);
}

TEST_F(Gpu, DriverLinkerMakesALoadableCubin) {
  kvarn::Expected<CubinImage> cubin =
      linkPtxWithDriver(context(), ptxModuleWithNoKernels(context().info()));
  ASSERT_TRUE(bool(cubin)) << kvarn::toString(cubin.takeError());
  ASSERT_GE(cubin->bytes.size(), 4u);
  EXPECT_EQ(cubin->bytes.substr(0, 4), "\x7f" "ELF");
  kvarn::Expected<Module> module = Module::loadCubin(context(), cubin->bytes);
  ASSERT_TRUE(bool(module)) << kvarn::toString(module.takeError());

  kvarn::Expected<Kernel> missing = module->getKernel("no_such_kernel");
  ASSERT_FALSE(bool(missing));
  auto [status, message] = statusAndMessage(missing.takeError());
  EXPECT_EQ(status, KVARN_ERROR_CUDA);
  EXPECT_TRUE(contains(message, "cuModuleGetFunction: CUDA_ERROR_NOT_FOUND"))
      << message;
  EXPECT_TRUE(contains(message, "'no_such_kernel'")) << message;
}

TEST_F(Gpu, DriverLinkerReportsRejectedPtxWithItsLog) {
  for (const std::string &input :
       {ptxWithASyntaxError(context().info()), std::string("not PTX at all\n")}) {
    kvarn::Expected<CubinImage> cubin =
        linkPtxWithDriver(context(), input, "broken.ptx");
    ASSERT_FALSE(bool(cubin));
    auto [status, message] = statusAndMessage(cubin.takeError());
    std::fprintf(stderr, "[   info   ] rejected: %s\n", message.c_str());
    EXPECT_EQ(status, KVARN_ERROR_COMPILE);
    EXPECT_TRUE(contains(message, "cuLinkAddData: CUDA_ERROR_INVALID_"))
        << message;
    EXPECT_TRUE(contains(message, "broken.ptx")) << message;
    EXPECT_TRUE(contains(message, "JIT error log")) << message;
  }
}

TEST_F(Gpu, ModuleLoadsPtxThroughTheDriverJit) {
  kvarn::Expected<Module> module =
      Module::loadPtx(context(), ptxModuleWithNoKernels(context().info()));
  ASSERT_TRUE(bool(module)) << kvarn::toString(module.takeError());
  EXPECT_NE(module->handle(), nullptr);

  kvarn::Expected<Module> broken =
      Module::loadPtx(context(), ptxWithASyntaxError(context().info()));
  ASSERT_FALSE(bool(broken));
  auto [status, message] = statusAndMessage(broken.takeError());
  std::fprintf(stderr, "[   info   ] rejected: %s\n", message.c_str());
  EXPECT_EQ(status, KVARN_ERROR_COMPILE);
  EXPECT_TRUE(contains(message, "cuModuleLoadDataEx: CUDA_ERROR_INVALID_"))
      << message;
  EXPECT_TRUE(contains(message, "JIT error log")) << message;

  kvarn::Expected<Module> garbage = Module::loadCubin(context(), "garbage!");
  ASSERT_FALSE(bool(garbage));
  std::tie(status, message) = statusAndMessage(garbage.takeError());
  std::fprintf(stderr, "[   info   ] rejected: %s\n", message.c_str());
  EXPECT_TRUE(contains(message, "cuModuleLoadData: CUDA_ERROR_")) << message;
}

TEST_F(Gpu, PtxasCubinLoads) {
  kvarn::Expected<std::string> ptxas = findPtxas();
  if (!ptxas)
    GTEST_SKIP() << "no ptxas on this machine: "
                 << kvarn::toString(ptxas.takeError());
  PtxasOptions options;
  options.arch = context().info().arch();
  kvarn::Expected<CubinImage> cubin =
      assembleWithPtxas(ptxModuleWithNoKernels(context().info()), options);
  ASSERT_TRUE(bool(cubin)) << kvarn::toString(cubin.takeError());
  kvarn::Expected<Module> module = Module::loadCubin(context(), cubin->bytes);
  ASSERT_TRUE(bool(module)) << kvarn::toString(module.takeError());
  std::fprintf(stderr, "[   info   ] ptxas %s: %zu-byte cubin for %s loaded\n",
               ptxas->c_str(), cubin->bytes.size(), options.arch.c_str());
}

TEST_F(Gpu, LoadedKernelNamesWhatIsMissing) {
  KernelImage image;
  image.name = "flush";
  image.ptx = ptxModuleWithNoKernels(context().info());
  kvarn::Expected<LoadedKernel> loaded = LoadedKernel::load(context(), image);
  ASSERT_FALSE(bool(loaded));
  auto [status, message] = statusAndMessage(loaded.takeError());
  EXPECT_TRUE(contains(message, "'flush'")) << message;

  image.ptx.clear();
  loaded = LoadedKernel::load(context(), image);
  ASSERT_FALSE(bool(loaded));
  std::tie(status, message) = statusAndMessage(loaded.takeError());
  EXPECT_EQ(status, KVARN_ERROR_INVALID_ARGUMENT);

  // Programs a CTA that do not divide it, and warps out of range: refused
  // before the module is loaded.
  image.ptx = ptxModuleWithNoKernels(context().info());
  for (auto [warps, programs] : {std::pair{4, 3}, {1, 16}, {0, 1}, {33, 1}}) {
    image.numWarps = warps;
    image.programsPerCta = programs;
    loaded = LoadedKernel::load(context(), image);
    ASSERT_FALSE(bool(loaded)) << warps << " warps, " << programs;
    std::tie(status, message) = statusAndMessage(loaded.takeError());
    EXPECT_EQ(status, KVARN_ERROR_INVALID_ARGUMENT);
    EXPECT_TRUE(contains(message, "programs a CTA")) << message;
  }
}

// Issue 17: a pool whose layers are kvarn (two presets), fp16 and absent,
// driven through the C API next to one-layer pools of each preset given the
// same tokens. Each kvarn layer's decode output must equal, bit for bit, that
// of the one-layer pool of its preset (same kernels, same data: the mixed
// layout only moves where the layer lives); the fp16 layer's output must be
// exact attention (fp64 over the fp16 tokens) within fp16 rounding; the
// absent layer's calls fail. Not yet run on a GPU.
TEST_F(Gpu, MixedLayerPoolMatchesOneLayerPoolsAndExactAttention) {
  constexpr int32_t hk = 2, hq = 4, d = 64, blocks = 16, slots = 8;
  uint64_t seed = freshSeed();
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  auto config = [&](const char *preset, int32_t layers) {
    kvarn_pool_config_t c{};
    c.preset = preset;
    c.num_layers = layers;
    c.num_kv_heads = hk;
    c.num_q_heads = hq;
    c.head_dim = d;
    c.num_blocks = blocks;
    c.pool_slots = slots;
    c.max_requests = 2;
    c.max_blocks_per_request = 8;
    return c;
  };
  kvarn_context_t *ctx = nullptr;
  ASSERT_EQ(kvarn_context_create(0, nullptr, &ctx), KVARN_OK)
      << kvarn_last_error();
  // Two presets of one block size: fp16 scales and e4m3 scales.
  const char *presets[] = {"kvarn_k4v2_g64", "kvarn_k4v4_g64_e4m3"};
  std::vector<kvarn_layer_config_t> ls(4);
  ls[0] = {KVARN_LAYER_KVARN, 0, nullptr};
  ls[1] = {KVARN_LAYER_FP16, 0, nullptr};
  ls[2] = {KVARN_LAYER_ABSENT, 0, nullptr};
  ls[3] = {KVARN_LAYER_KVARN, 0, presets[1]};
  kvarn_pool_options_t o{sizeof o, sizeof(kvarn_layer_config_t), ls.data()};
  kvarn_pool_config_t mc = config(presets[0], 4);
  kvarn_pool_t *mixed = nullptr, *one[2] = {nullptr, nullptr};
  ASSERT_EQ(kvarn_pool_create_ex(ctx, &mc, &o, &mixed), KVARN_OK)
      << kvarn_last_error();
  for (int p = 0; p < 2; ++p) {
    kvarn_pool_config_t c = config(presets[p], 1);
    ASSERT_EQ(kvarn_pool_create(ctx, &c, &one[p]), KVARN_OK)
        << kvarn_last_error();
  }
  kvarn_step_t *ms = nullptr, *os[2] = {nullptr, nullptr};
  ASSERT_EQ(kvarn_step_create(mixed, &ms), KVARN_OK);
  for (int p = 0; p < 2; ++p)
    ASSERT_EQ(kvarn_step_create(one[p], &os[p]), KVARN_OK);
  int64_t id = 1;
  ASSERT_EQ(kvarn_pool_add_request(mixed, id), KVARN_OK);
  for (int p = 0; p < 2; ++p)
    ASSERT_EQ(kvarn_pool_add_request(one[p], id), KVARN_OK);

  int32_t prompt = 65 + int32_t(rng() % 300);
  std::fprintf(stderr, "[   seed   ] %llu, prompt %d tokens\n",
               (unsigned long long)seed, prompt);
  int32_t total = prompt + 1;
  // True tokens per layer, fp16 [total, hk, d].
  std::vector<std::vector<uint16_t>> k(4), v(4);
  for (int l = 0; l < 4; ++l)
    for (auto *x : {&k[l], &v[l]}) {
      x->resize(size_t(total) * hk * d);
      for (uint16_t &e : *x)
        e = floatToHalf(normal(rng));
    }
  std::vector<uint16_t> q(size_t(hq) * d);
  for (uint16_t &e : q)
    e = floatToHalf(normal(rng));
  DeviceBuffer dk = allocate(size_t(total) * hk * d * 2);
  DeviceBuffer dv = allocate(size_t(total) * hk * d * 2);
  DeviceBuffer dq = allocate(q.size() * 2);
  DeviceBuffer dout = allocate(q.size() * 2);
  ASSERT_OK(dq.upload(q.data(), q.size() * 2));
  // Writes layer l's tokens [from, from + n) through `step` to `layer`.
  std::string writeError;
  auto write = [&](kvarn_step_t *step, int32_t layer, int l, int32_t from,
                   int32_t n) -> kvarn_status_t {
    size_t at = size_t(from) * hk * d, count = size_t(n) * hk * d * 2;
    for (auto [buffer, host] : {std::pair{&dk, &k[l]}, std::pair{&dv, &v[l]}})
      if (kvarn::Error e = buffer->upload(host->data() + at, count)) {
        ADD_FAILURE() << kvarn::toString(std::move(e));
        return KVARN_ERROR_CUDA;
      }
    kvarn_status_t s =
        kvarn_step_write_kv(step, layer, dk.address(), dv.address());
    // Before the synchronize, whose success replaces the last error.
    writeError = s == KVARN_OK ? "" : kvarn_last_error();
    kvarn_context_synchronize(ctx); // the staging is reused
    return s;
  };
  std::vector<uint16_t> outs[4], oneOut[2];
  for (int phase = 0; phase < 2; ++phase) {
    int32_t from = phase ? prompt : 0, n = phase ? 1 : prompt;
    ASSERT_EQ(kvarn_step_begin(ms, 1, &id, &n), KVARN_OK) << kvarn_last_error();
    for (int l = 0; l < 4; ++l) {
      kvarn_status_t s = write(ms, l, l, from, n);
      if (l == 2) {
        EXPECT_EQ(s, KVARN_ERROR_INVALID_ARGUMENT);
        EXPECT_TRUE(contains(writeError, "layer 2 is absent")) << writeError;
      } else {
        ASSERT_EQ(s, KVARN_OK) << kvarn_last_error();
      }
    }
    for (int p = 0; p < 2; ++p) {
      ASSERT_EQ(kvarn_step_begin(os[p], 1, &id, &n), KVARN_OK);
      ASSERT_EQ(write(os[p], 0, p ? 3 : 0, from, n), KVARN_OK)
          << kvarn_last_error();
    }
    if (phase == 1) {
      for (int l = 0; l < 4; ++l) {
        kvarn_status_t s =
            kvarn_step_decode(ms, l, dq.address(), dout.address(), 0.125f);
        if (l == 2) {
          EXPECT_EQ(s, KVARN_ERROR_INVALID_ARGUMENT);
          continue;
        }
        ASSERT_EQ(s, KVARN_OK) << kvarn_last_error();
        ASSERT_EQ(kvarn_context_synchronize(ctx), KVARN_OK);
        outs[l].resize(q.size());
        ASSERT_OK(dout.download(outs[l].data(), q.size() * 2));
      }
      for (int p = 0; p < 2; ++p) {
        ASSERT_EQ(
            kvarn_step_decode(os[p], 0, dq.address(), dout.address(), 0.125f),
            KVARN_OK)
            << kvarn_last_error();
        ASSERT_EQ(kvarn_context_synchronize(ctx), KVARN_OK);
        oneOut[p].resize(q.size());
        ASSERT_OK(dout.download(oneOut[p].data(), q.size() * 2));
      }
    }
    ASSERT_EQ(kvarn_step_commit(ms, nullptr), KVARN_OK);
    int32_t flushed = -1, oneFlushed = -1;
    ASSERT_EQ(kvarn_pool_flush(mixed, &flushed), KVARN_OK)
        << kvarn_last_error();
    for (int p = 0; p < 2; ++p) {
      ASSERT_EQ(kvarn_step_commit(os[p], nullptr), KVARN_OK);
      ASSERT_EQ(kvarn_pool_flush(one[p], &oneFlushed), KVARN_OK);
      EXPECT_EQ(flushed, oneFlushed); // the same blocks
    }
  }
  // kvarn layers: bit for bit the one-layer pools.
  EXPECT_EQ(outs[0], oneOut[0]);
  EXPECT_EQ(outs[3], oneOut[1]);
  // The fp16 layer: exact attention over its fp16 tokens.
  double num = 0, den = 0;
  for (int h = 0; h < hq; ++h) {
    int kvh = h / (hq / hk);
    std::vector<double> score(total);
    double m = -1e300;
    for (int t = 0; t < total; ++t) {
      double s = 0;
      for (int i = 0; i < d; ++i)
        s += double(halfToFloat(q[size_t(h) * d + i])) *
             halfToFloat(k[1][(size_t(t) * hk + kvh) * d + i]);
      score[t] = s * 0.125;
      m = std::max(m, score[t]);
    }
    double sum = 0;
    for (double &s : score)
      sum += (s = std::exp(s - m));
    for (int i = 0; i < d; ++i) {
      double o = 0;
      for (int t = 0; t < total; ++t)
        o += score[t] * halfToFloat(v[1][(size_t(t) * hk + kvh) * d + i]);
      o /= sum;
      double got = halfToFloat(outs[1][size_t(h) * d + i]);
      num += (got - o) * (got - o);
      den += o * o;
    }
  }
  EXPECT_LT(std::sqrt(num / den), 5e-3) << "seed " << seed;
  // The fp16 layer's table is the identity; the kvarn layers' is the pool's.
  kvarn_layer_info_t info{};
  info.struct_size = sizeof info;
  ASSERT_EQ(kvarn_pool_layer_info(mixed, 1, &info), KVARN_OK);
  std::vector<int32_t> ident(blocks);
  {
    kvarn::Expected<ScopedContext> scope = context().enter();
    ASSERT_TRUE(bool(scope)) << kvarn::toString(scope.takeError());
    ASSERT_EQ(context().driver().api().cuMemcpyDtoH(
                  ident.data(), info.block_to_slot, ident.size() * 4),
              0);
  }
  for (int32_t b = 0; b < blocks; ++b)
    EXPECT_EQ(ident[b], b);
  EXPECT_EQ(info.cache, 0u);

  EXPECT_EQ(kvarn_step_destroy(ms), KVARN_OK);
  EXPECT_EQ(kvarn_pool_destroy(mixed), KVARN_OK);
  for (int p = 0; p < 2; ++p) {
    EXPECT_EQ(kvarn_step_destroy(os[p]), KVARN_OK);
    EXPECT_EQ(kvarn_pool_destroy(one[p]), KVARN_OK);
  }
  EXPECT_EQ(kvarn_context_destroy(ctx), KVARN_OK);
}

namespace {

/// What serveOneStep left: its first error, the decode output, the blocks
/// its flush wrote.
struct ServedStep {
  std::string error;
  std::vector<uint16_t> out;
  int32_t flushed = -1;
};

/// The same random prompt and token for every caller of `seed`: K, V
/// fp16 [total, Hk, D] and q fp16 [Hq, D].
struct ServingInputs {
  static constexpr int32_t hk = 2, hq = 8, d = 128;
  int32_t prompt, total;
  std::vector<uint16_t> k, v, q;
  explicit ServingInputs(uint64_t seed) {
    std::mt19937_64 rng(seed ^ 0x19);
    std::normal_distribution<float> normal(0.f, 1.f);
    prompt = 129 + int32_t(rng() % 200);
    total = prompt + 1;
    k.resize(size_t(total) * hk * d);
    v.resize(k.size());
    q.resize(size_t(hq) * d);
    for (auto *x : {&k, &v, &q})
      for (uint16_t &e : *x)
        e = floatToHalf(normal(rng));
  }
};

/// On GPU `dev`, through the C API with a context of its own: a pool, the
/// prompt written, committed and flushed, then one token and a decode.
ServedStep serveOneStep(int dev, const ServingInputs &in) {
  constexpr int32_t hk = ServingInputs::hk, hq = ServingInputs::hq,
                    d = ServingInputs::d;
  ServedStep r;
  auto fail = [&](const std::string &what) {
    if (r.error.empty())
      r.error = "GPU " + std::to_string(dev) + ": " + what;
  };
  kvarn::Expected<Context> runtime = Context::create(dev);
  if (!runtime) {
    fail(kvarn::toString(runtime.takeError()));
    return r;
  }
  auto buffer = [&](size_t bytes) -> std::optional<DeviceBuffer> {
    kvarn::Expected<DeviceBuffer> b = DeviceBuffer::allocate(*runtime, bytes);
    if (!b) {
      fail(kvarn::toString(b.takeError()));
      return std::nullopt;
    }
    return std::move(*b);
  };
  std::optional<DeviceBuffer> dk = buffer(in.k.size() * 2),
                              dv = buffer(in.v.size() * 2),
                              dq = buffer(in.q.size() * 2),
                              dout = buffer(in.q.size() * 2);
  if (!dk || !dv || !dq || !dout)
    return r;
  for (auto [buf, host] :
       {std::pair{&*dk, &in.k}, std::pair{&*dv, &in.v}, std::pair{&*dq, &in.q}})
    if (kvarn::Error e = buf->upload(host->data(), host->size() * 2)) {
      fail(kvarn::toString(std::move(e)));
      return r;
    }
  kvarn_context_t *ctx = nullptr;
  kvarn_pool_t *pool = nullptr;
  kvarn_step_t *step = nullptr;
  auto check = [&](kvarn_status_t s, const char *what) {
    if (s != KVARN_OK)
      fail(std::string(what) + ": " + kvarn_last_error());
    return s == KVARN_OK;
  };
  if (check(kvarn_context_create(dev, nullptr, &ctx), "context")) {
    kvarn_pool_config_t c{};
    c.preset = "kvarn_k4v2_g64";
    c.num_layers = 1;
    c.num_kv_heads = hk;
    c.num_q_heads = hq;
    c.head_dim = d;
    c.num_blocks = 16;
    c.pool_slots = 8;
    c.max_requests = 1;
    c.max_blocks_per_request = 8;
    int64_t id = 7;
    int32_t n = in.prompt, one = 1;
    CUdeviceptr token = CUdeviceptr(in.prompt) * hk * d * 2;
    bool ok = check(kvarn_pool_create(ctx, &c, &pool), "pool") &&
              check(kvarn_step_create(pool, &step), "step") &&
              check(kvarn_pool_add_request(pool, id), "request") &&
              check(kvarn_step_begin(step, 1, &id, &n), "prompt") &&
              check(kvarn_step_write_kv(step, 0, dk->address(), dv->address()),
                    "prompt K/V") &&
              check(kvarn_context_synchronize(ctx), "synchronize") &&
              check(kvarn_step_commit(step, nullptr), "commit") &&
              check(kvarn_pool_flush(pool, &r.flushed), "flush") &&
              check(kvarn_step_begin(step, 1, &id, &one), "token") &&
              check(kvarn_step_write_kv(step, 0, dk->address() + token,
                                        dv->address() + token),
                    "token K/V") &&
              check(kvarn_step_decode(step, 0, dq->address(), dout->address(),
                                      0.088f),
                    "decode") &&
              check(kvarn_context_synchronize(ctx), "synchronize") &&
              check(kvarn_step_commit(step, nullptr), "commit");
    if (ok) {
      r.out.assign(in.q.size(), 0xFFFF); // poisoned
      if (kvarn::Error e = dout->download(r.out.data(), in.q.size() * 2))
        fail(kvarn::toString(std::move(e)));
    }
  }
  if (step)
    check(kvarn_step_destroy(step), "step destroy");
  if (pool)
    check(kvarn_pool_destroy(pool), "pool destroy");
  if (ctx)
    check(kvarn_context_destroy(ctx), "context destroy");
  return r;
}

/// serveOneStep on each of `devices` from threads of its own, all at once;
/// every output equal to the first's bit for bit, every flush the same
/// blocks.
void expectTheSameStepOn(const std::vector<int> &devices, uint64_t seed) {
  ServingInputs in(seed);
  std::fprintf(stderr, "[   seed   ] %llu, %zu contexts, prompt %d tokens\n",
               (unsigned long long)seed, devices.size(), in.prompt);
  std::vector<ServedStep> results(devices.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < devices.size(); ++i)
    threads.emplace_back([&, i] { results[i] = serveOneStep(devices[i], in); });
  for (std::thread &t : threads)
    t.join();
  for (size_t i = 0; i < devices.size(); ++i) {
    ASSERT_TRUE(results[i].error.empty()) << results[i].error;
    EXPECT_GT(results[i].flushed, 0) << "GPU " << devices[i];
    EXPECT_EQ(results[i].flushed, results[0].flushed) << "GPU " << devices[i];
    EXPECT_EQ(results[i].out, results[0].out)
        << "GPU " << devices[i] << " (context " << i
        << ") differs from the first, seed " << seed;
  }
}

} // namespace

// Several GPUs in one process (issue 19): a context, a pool and a serving
// step per device, each driven from its own thread at once, the same random
// tokens everywhere. Skips, saying so, where the machine has one GPU.
TEST_F(Gpu, EveryDeviceServesTheSameStepBitForBit) {
  int devices = context().driver().deviceCount();
  if (devices < 2)
    GTEST_SKIP() << "one GPU (" << context().info().name
                 << "): serving on several devices in one process needs two";
  std::vector<int> all(devices);
  for (int dev = 0; dev < devices; ++dev)
    all[dev] = dev;
  expectTheSameStepOn(all, freshSeed());
}

// The same on one GPU: two contexts, pools and steps from two threads at
// once, as two ranks sharing a device would run.
TEST_F(Gpu, TwoThreadsServeOnOneDeviceAlike) {
  expectTheSameStepOn({0, 0}, freshSeed());
}

// The MLA kernels through the C API: created for a shape, loaded (all of
// the family and nothing of the other), a launch of each on buffers the
// caller owns, the split count, and each family refused by the other's
// calls without touching the output.
TEST_F(Gpu, MlaKernelsThroughTheCApi) {
  kvarn_context_t *ctx = nullptr;
  ASSERT_EQ(kvarn_context_create(0, nullptr, &ctx), KVARN_OK)
      << kvarn_last_error();
  kvarn_kernels_t *mla = nullptr;
  ASSERT_EQ(kvarn_mla_kernels_create(ctx, nullptr, 512, 64, 16, nullptr, &mla),
            KVARN_OK)
      << kvarn_last_error();
  ASSERT_EQ(kvarn_kernels_load(mla, nullptr), KVARN_OK) << kvarn_last_error();
  EXPECT_EQ(kvarn_kernels_load(mla, "decode"), KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kvarn_last_error()).find("kvarn_mla_"),
            std::string::npos)
      << kvarn_last_error();

  const int g = 128, r = 512, e = 64, heads = 16, batch = 1, len = g + 5;
  kvarn_mla_record_layout_t l;
  ASSERT_EQ(kvarn_mla_record_layout("kvarn_mla_k4_g128", r, e, &l), KVARN_OK);
  DeviceBuffer latent = allocate(size_t(len) * r * 2),
               pe = allocate(size_t(len) * e * 2), slots = allocate(len * 4),
               toSlot = allocate(2 * 4),
               poolLat = allocate(size_t(2) * g * r * 2),
               poolPe = allocate(size_t(2) * g * e * 2),
               cache = allocate(size_t(2) * l.record_bytes),
               q = allocate(size_t(batch) * heads * (r + e) * 2),
               out = allocate(size_t(batch) * heads * r * 2),
               table = allocate(2 * 4), lens = allocate(4), tile = allocate(4);
  std::vector<int32_t> slotMapping(len);
  for (int t = 0; t < len; ++t)
    slotMapping[t] = t;
  std::vector<int32_t> both = {0, 1}, one = {len}, zero = {0};
  ASSERT_OK(slots.upload(slotMapping.data(), len * 4));
  ASSERT_OK(toSlot.upload(both.data(), 8));
  ASSERT_OK(table.upload(both.data(), 8));
  ASSERT_OK(lens.upload(one.data(), 4));
  ASSERT_OK(tile.upload(zero.data(), 4));
  for (DeviceBuffer *b : {&latent, &pe, &q})
    ASSERT_OK(b->fill16(0x3c00)); // fp16 1.0
  EXPECT_EQ(kvarn_mla_append(mla, nullptr, latent.address(), pe.address(),
                             slots.address(), toSlot.address(),
                             poolLat.address(), poolPe.address(), len),
            KVARN_OK)
      << kvarn_last_error();
  EXPECT_EQ(kvarn_mla_flush(mla, nullptr, poolLat.address(), poolPe.address(),
                            tile.address(), tile.address(), cache.address(), 1),
            KVARN_OK)
      << kvarn_last_error();
  EXPECT_EQ(kvarn_mla_decode(mla, nullptr, q.address(), table.address(),
                             lens.address(), toSlot.address(), cache.address(),
                             poolLat.address(), poolPe.address(), out.address(),
                             0.07f, batch, 2),
            KVARN_OK)
      << kvarn_last_error();
  // The same token through mla_verify: no draft, one query token.
  DeviceBuffer contextLens = allocate(4), queryLens = allocate(4);
  std::vector<int32_t> context = {len - 1}, queries = {1};
  ASSERT_OK(contextLens.upload(context.data(), 4));
  ASSERT_OK(queryLens.upload(queries.data(), 4));
  EXPECT_EQ(kvarn_mla_verify(mla, nullptr, q.address(), table.address(),
                             contextLens.address(), queryLens.address(),
                             toSlot.address(), cache.address(),
                             poolLat.address(), poolPe.address(), out.address(),
                             0.07f, batch, 1, 2),
            KVARN_OK)
      << kvarn_last_error();
  int32_t splits = 0;
  EXPECT_EQ(kvarn_mla_decode_split_count(mla, 8, 256, &splits), KVARN_OK)
      << kvarn_last_error();
  EXPECT_GE(splits, 1);
  EXPECT_LE(splits, 64);
  EXPECT_EQ(kvarn_context_synchronize(ctx), KVARN_OK) << kvarn_last_error();

  // The dense calls refuse MLA kernels, and the MLA calls dense ones.
  EXPECT_EQ(kvarn_decode(mla, nullptr, q.address(), table.address(),
                         lens.address(), toSlot.address(), cache.address(),
                         poolLat.address(), poolPe.address(), out.address(),
                         0.07f, batch, 2, 1),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kvarn_last_error()).find("is built for dense presets"),
            std::string::npos)
      << kvarn_last_error();
  kvarn_kernels_t *dense = nullptr;
  ASSERT_EQ(kvarn_kernels_create(ctx, nullptr, 128, 1, &dense), KVARN_OK);
  EXPECT_EQ(kvarn_mla_decode(dense, nullptr, q.address(), table.address(),
                             lens.address(), toSlot.address(), cache.address(),
                             poolLat.address(), poolPe.address(), out.address(),
                             0.07f, batch, 2),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(kvarn_last_error()).find("is built for MLA presets"),
            std::string::npos)
      << kvarn_last_error();
  EXPECT_EQ(kvarn_mla_decode_split_count(dense, 8, 256, &splits),
            KVARN_ERROR_INVALID_ARGUMENT);
  kvarn_kernels_destroy(dense);
  kvarn_kernels_destroy(mla);
  kvarn_context_destroy(ctx);
}

namespace {
/// `bytes` bytes of device memory at `p` (the pool's own buffers).
kvarn::Error downloadRaw(const Context &ctx, CUdeviceptr p, void *host,
                         size_t bytes) {
  kvarn::Expected<ScopedContext> scope = ctx.enter();
  if (!scope)
    return scope.takeError();
  return KVARN_CUDA_CHECK(ctx.driver(), cuMemcpyDtoH, host, p, bytes);
}
} // namespace

// An MLA pool on the GPU: a prompt through kvarn_step_write_kv (latents and
// rope keys) into two layers, flushed (every full block: no sink), then one
// decode step. What the pool holds afterwards (records, pool rows,
// block_to_slot, read back through kvarn_pool_layer_info) decoded by the
// CPU reference gives the step's output within the dense path's 4e-4, and
// the records meet the flush bars against encodeMlaRecord of the rotated
// inputs.
TEST_F(Gpu, MlaPoolServesAStepLikeTheCpuReference) {
  constexpr int32_t layers = 2, heads = 16, r = 512, e = 64, g = 128;
  uint64_t seed = freshSeed();
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  kvarn_context_t *ctx = nullptr;
  ASSERT_EQ(kvarn_context_create(0, nullptr, &ctx), KVARN_OK)
      << kvarn_last_error();
  kvarn_pool_config_t c{};
  c.num_layers = layers;
  c.num_kv_heads = 1;
  c.num_q_heads = heads;
  c.head_dim = r;
  c.num_blocks = 12;
  c.pool_slots = 4;
  c.max_requests = 2;
  c.max_blocks_per_request = 8;
  kvarn_pool_t *pool = nullptr;
  ASSERT_EQ(kvarn_mla_pool_create(ctx, &c, e, &pool), KVARN_OK)
      << kvarn_last_error();
  kvarn_step_t *step = nullptr;
  ASSERT_EQ(kvarn_step_create(pool, &step), KVARN_OK);
  int64_t id = 3;
  ASSERT_EQ(kvarn_pool_add_request(pool, id), KVARN_OK);
  int32_t prompt = 2 * g + 1 + int32_t(rng() % 200);
  std::fprintf(stderr, "[   seed   ] %llu, prompt %d tokens\n",
               (unsigned long long)seed, prompt);
  const int32_t total = prompt + 1;
  std::vector<std::vector<uint16_t>> lat(layers), pe(layers);
  for (int l = 0; l < layers; ++l) {
    lat[l].resize(size_t(total) * r);
    pe[l].resize(size_t(total) * e);
    for (auto *x : {&lat[l], &pe[l]})
      for (uint16_t &v : *x)
        v = floatToHalf(normal(rng));
  }
  std::vector<uint16_t> q(size_t(heads) * (r + e));
  for (uint16_t &v : q)
    v = floatToHalf(normal(rng));
  DeviceBuffer dl = allocate(size_t(total) * r * 2),
               dp = allocate(size_t(total) * e * 2),
               dq = allocate(q.size() * 2),
               dout = allocate(size_t(heads) * r * 2);
  ASSERT_OK(dq.upload(q.data(), q.size() * 2));
  const float scale = 0.072f;
  std::vector<uint16_t> out[layers], verified[layers];
  for (int phase = 0; phase < 2; ++phase) {
    int32_t from = phase ? prompt : 0, n = phase ? 1 : prompt;
    ASSERT_EQ(kvarn_step_begin(step, 1, &id, &n), KVARN_OK)
        << kvarn_last_error();
    for (int l = 0; l < layers; ++l) {
      ASSERT_OK(dl.upload(lat[l].data() + size_t(from) * r, size_t(n) * r * 2));
      ASSERT_OK(dp.upload(pe[l].data() + size_t(from) * e, size_t(n) * e * 2));
      ASSERT_EQ(kvarn_step_write_kv(step, l, dl.address(), dp.address()),
                KVARN_OK)
          << kvarn_last_error();
      ASSERT_EQ(kvarn_context_synchronize(ctx), KVARN_OK); // staging reused
      if (phase == 1) {
        ASSERT_EQ(
            kvarn_step_decode(step, l, dq.address(), dout.address(), scale),
            KVARN_OK)
            << kvarn_last_error();
        ASSERT_EQ(kvarn_context_synchronize(ctx), KVARN_OK);
        out[l].resize(size_t(heads) * r);
        ASSERT_OK(dout.download(out[l].data(), out[l].size() * 2));
        // The same token through mla_verify (one query token a request).
        ASSERT_EQ(
            kvarn_step_verify(step, l, dq.address(), dout.address(), scale),
            KVARN_OK)
            << kvarn_last_error();
        ASSERT_EQ(kvarn_context_synchronize(ctx), KVARN_OK);
        verified[l].resize(size_t(heads) * r);
        ASSERT_OK(dout.download(verified[l].data(), verified[l].size() * 2));
      }
    }
    ASSERT_EQ(kvarn_step_commit(step, nullptr), KVARN_OK);
    if (phase == 0) {
      int32_t flushed = 0;
      ASSERT_EQ(kvarn_pool_flush(pool, &flushed), KVARN_OK)
          << kvarn_last_error();
      EXPECT_EQ(flushed, prompt / g); // the first block too: no sink
      ASSERT_EQ(kvarn_context_synchronize(ctx), KVARN_OK);
    }
  }

  // What the pool holds, decoded by the CPU reference.
  MlaRecordLayout layout = *MlaRecordLayout::get(allMlaPresets().front(), r, e);
  std::vector<int32_t> blocks(8), toSlot(c.num_blocks);
  int32_t count = 0;
  ASSERT_EQ(kvarn_pool_request_blocks(pool, id, blocks.data(), 8, &count),
            KVARN_OK);
  blocks.resize(count);
  ASSERT_EQ(kvarn_pool_block_to_slot(pool, toSlot.data(), c.num_blocks),
            KVARN_OK);
  Rotation rot = *Rotation::get(r);
  for (int l = 0; l < layers; ++l) {
    SCOPED_TRACE("layer " + std::to_string(l));
    kvarn_layer_info_t info{};
    info.struct_size = sizeof info;
    ASSERT_EQ(kvarn_pool_layer_info(pool, l, &info), KVARN_OK)
        << kvarn_last_error();
    std::vector<uint8_t> cache(size_t(c.num_blocks) * layout.recordBytes);
    std::vector<uint16_t> poolLat(size_t(c.pool_slots) * g * r),
        poolPe(size_t(c.pool_slots) * g * e);
    ASSERT_OK(downloadRaw(context(), info.cache, cache.data(), cache.size()));
    ASSERT_OK(downloadRaw(context(), info.pool_k, poolLat.data(),
                          poolLat.size() * 2));
    ASSERT_OK(
        downloadRaw(context(), info.pool_v, poolPe.data(), poolPe.size() * 2));
    // The flushed blocks against encodeMlaRecord of the rotated inputs.
    std::vector<uint16_t> rows(size_t(g) * r);
    std::vector<uint8_t> want(layout.recordBytes);
    for (int32_t b = 0; b < prompt / g; ++b) {
      ASSERT_LT(toSlot[blocks[b]], 0) << "block " << b << " was flushed";
      for (int t = 0; t < g; ++t)
        rot.rotateHalf(&lat[l][(size_t(b) * g + t) * r], &rows[size_t(t) * r],
                       DType::F16);
      encodeMlaRecord(layout, rows.data(), &pe[l][size_t(b) * g * e],
                      want.data());
      QuantizedTile got = decodeMlaRecord(
          layout, &cache[size_t(blocks[b]) * layout.recordBytes]);
      QuantizedTile ref = decodeMlaRecord(layout, want.data());
      size_t equal = 0;
      int step = 0;
      for (size_t i = 0; i < got.codes.size(); ++i) {
        equal += got.codes[i] == ref.codes[i];
        step = std::max(step, std::abs(int(got.codes[i]) - ref.codes[i]));
      }
      EXPECT_GE(double(equal) / got.codes.size(), 0.99) << "block " << b;
      EXPECT_LE(step, 1) << "block " << b;
    }
    MlaPagedCacheView view{&layout,       c.num_blocks, cache.data(),
                           toSlot.data(), c.pool_slots, poolLat.data(),
                           poolPe.data()};
    std::vector<float> qf(q.size());
    for (size_t i = 0; i < q.size(); ++i)
      qf[i] = halfToFloat(q[i]);
    MlaDecodeBatchView bv;
    bv.batch = 1;
    bv.numHeads = heads;
    bv.q = qf.data();
    bv.blockTable = blocks.data();
    bv.maxBlocks = count;
    int32_t len = total;
    bv.seqLens = &len;
    bv.softmaxScale = scale;
    std::vector<float> ref(size_t(heads) * r);
    kvarn::Error err = mlaDecodeAttention(view, bv, rot, ref.data());
    ASSERT_FALSE(bool(err)) << kvarn::toString(std::move(err));
    for (auto [what, got] :
         {std::pair{"decode", &out[l]}, std::pair{"verify", &verified[l]}}) {
      double num = 0, den = 0;
      for (size_t i = 0; i < ref.size(); ++i) {
        double w = halfToFloat(floatToHalf(ref[i]));
        double x = halfToFloat((*got)[i]);
        num += (x - w) * (x - w);
        den += w * w;
      }
      double rel = std::sqrt(num / den);
      std::fprintf(stderr,
                   "[ figures  ] MLA pool layer %d %s: vs the CPU reference "
                   "%.3e\n",
                   l, what, rel);
      EXPECT_LE(rel, 4e-4) << what;
    }
  }
  kvarn_step_destroy(step);
  kvarn_pool_destroy(pool);
  kvarn_context_destroy(ctx);
}
