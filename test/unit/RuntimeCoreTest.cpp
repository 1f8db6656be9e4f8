//===- RuntimeCoreTest.cpp - the kernel cache without a compiler ----------===//
//
// This binary links KvarnCacheCore, the runtime core's kernel cache, and no
// compiler (no MLIR, no LLVM code generator): that it links at all is half
// the test. Kernels `kvarn-jit cache warm` wrote are served as they are
// (the core computes the JIT's keys); any other kernel is
// KVARN_ERROR_KERNEL_NOT_CACHED, with a message saying how to warm it, and
// the cache is left as it was. No GPU needed.
//
//===----------------------------------------------------------------------===//

#include "TempDir.h"
#include "kvarn/Runtime/KernelCache.h"

#include "kvarn/Support/Error.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

using namespace kvarn;

namespace {

/// A fresh directory per test.
struct TempDir : test::TempDir {
  TempDir() : test::TempDir("kvarn-core-test") {}
};

/// Every file under `dir`, sorted, with its size: what a lookup must leave
/// alone.
std::vector<std::string> listing(const std::string &dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (llvm::sys::fs::recursive_directory_iterator it(dir, ec), end;
       it != end && !ec; it.increment(ec)) {
    uint64_t size = 0;
    llvm::sys::fs::file_size(it->path(), size);
    out.push_back(it->path() + " " + std::to_string(size));
  }
  std::sort(out.begin(), out.end());
  return out;
}

KernelRequest request(const char *kernel) {
  KernelRequest r;
  r.kernel = kernel;
  r.spec.preset = "kvarn_k4v2_g64";
  r.spec.headDim = 64;
  r.spec.gqa = 2;
  return r;
}

CompileOptions sm90() {
  CompileOptions o;
  o.target.chip = "sm_90";
  return o;
}

std::unique_ptr<KernelCache> coreCache(const std::string &dir,
                                       bool alwaysCompile = false) {
  CacheOptions o;
  o.directory = dir;
  o.alwaysCompile = alwaysCompile;
  o.warn = [](llvm::StringRef) {};
  return std::make_unique<KernelCache>(o);
}

/// The status and message of a lookup that must fail.
std::pair<kvarn_status_t, std::string> failure(KernelCache &cache,
                                               const KernelRequest &r) {
  kvarn::Expected<CacheResult> result = cache.getOrCompile(r, sm90());
  if (result)
    return {KVARN_OK, "served " + r.kernel};
  std::string message;
  kvarn_status_t status = consumeError(result.takeError(), message);
  return {status, message};
}

/// One cache that `kvarn-jit cache warm` fills with decode and append of
/// request()'s shape, for every test of the suite.
class WarmedCache : public ::testing::Test {
protected:
  static void SetUpTestSuite() {
    dir = new TempDir();
    std::string shapes = dir->path + "/shapes.json";
    {
      std::error_code ec;
      llvm::raw_fd_ostream os(shapes, ec);
      ASSERT_FALSE(ec);
      os << R"({"arch": "sm_90", "shapes": [{"preset": "kvarn_k4v2_g64", )"
            R"("head_dim": 64, "gqa": 2, "kernels": ["decode", "append"]}]})";
    }
    // The build's kvarn-jit, or, where the tests run from a package (the
    // GPU machine's, docs/device.md), the one on PATH.
    std::string jit =
        ::access(KVARN_JIT_BINARY, X_OK) == 0 ? KVARN_JIT_BINARY : "kvarn-jit";
    std::string command = jit + " cache warm --shapes " + shapes + " --dir " +
                          dir->path + "/cache >" + dir->path + "/warm.log 2>&1";
    ASSERT_EQ(std::system(command.c_str()), 0) << command;
  }
  static void TearDownTestSuite() {
    delete dir;
    dir = nullptr;
  }
  static std::string cacheDir() { return dir->path + "/cache"; }
  static TempDir *dir;
};
TempDir *WarmedCache::dir = nullptr;

TEST(RuntimeCore, LinksNoCompiler) { EXPECT_EQ(linkedCompiler(), nullptr); }

TEST(RuntimeCore, MissingKernelSaysHowToWarmAndWritesNothing) {
  TempDir dir;
  std::unique_ptr<KernelCache> cache = coreCache(dir.path);
  auto [status, message] = failure(*cache, request("decode"));
  EXPECT_EQ(status, KVARN_ERROR_KERNEL_NOT_CACHED) << message;
  for (const char *part : {"'decode'", "kvarn_k4v2_g64 head_dim 64 gqa 2",
                           "sm_90", "cannot be served from the kernel cache",
                           "has no entry", "kvarn-jit cache warm"})
    EXPECT_NE(message.find(part), std::string::npos) << part << ": " << message;
  EXPECT_TRUE(listing(dir.path).empty()) << "the core wrote to the cache";
  EXPECT_EQ(cache->stats().compiled, 0u);
}

TEST_F(WarmedCache, ServesWhatKvarnJitWarmed) {
  std::unique_ptr<KernelCache> cache = coreCache(cacheDir());
  for (const char *kernel : {"decode", "append"}) {
    kvarn::Expected<CacheResult> first =
        cache->getOrCompile(request(kernel), sm90());
    ASSERT_TRUE(bool(first)) << kvarn::toString(first.takeError());
    EXPECT_EQ(first->outcome, CacheOutcome::DiskHit) << kernel;
    const KernelArtifacts &a = *first->artifacts;
    EXPECT_EQ(a.name, kernel);
    EXPECT_NE(a.ptx.find(std::string(".entry ") + kernel), std::string::npos);
    EXPECT_GT(a.numWarps, 0);
    // The ABI the compiler wrote into the metadata, for the launchers.
    ASSERT_FALSE(a.abi.params.empty()) << kernel;
    EXPECT_EQ(a.abi.params.size() + 2, size_t(a.numArgs)) << kernel;
    kvarn::Expected<CacheResult> again =
        cache->getOrCompile(request(kernel), sm90());
    ASSERT_TRUE(bool(again)) << kvarn::toString(again.takeError());
    EXPECT_EQ(again->outcome, CacheOutcome::MemoryHit);
  }
  EXPECT_EQ(cache->stats().diskHits, 2u);
  EXPECT_EQ(cache->stats().compiled, 0u);
}

TEST_F(WarmedCache, OtherKernelsShapesAndOptionsAreNotCached) {
  std::unique_ptr<KernelCache> cache = coreCache(cacheDir());
  std::vector<std::string> before = listing(cacheDir());
  KernelRequest otherShape = request("decode");
  otherShape.spec.gqa = 4;
  CompileOptions eightWarps = sm90();
  eightWarps.numWarps = 8;
  for (auto [r, o] :
       {std::pair{request("flush"), sm90()}, std::pair{otherShape, sm90()},
        std::pair{request("decode"), eightWarps}}) {
    kvarn::Expected<CacheResult> result = cache->getOrCompile(r, o);
    ASSERT_FALSE(bool(result)) << r.kernel << " " << r.spec.describe();
    std::string message;
    EXPECT_EQ(consumeError(result.takeError(), message),
              KVARN_ERROR_KERNEL_NOT_CACHED)
        << message;
  }
  EXPECT_EQ(listing(cacheDir()), before);
}

TEST_F(WarmedCache, AlwaysCompileCannotBeHonoured) {
  std::unique_ptr<KernelCache> cache =
      coreCache(cacheDir(), /*alwaysCompile=*/true);
  auto [status, message] = failure(*cache, request("decode"));
  EXPECT_EQ(status, KVARN_ERROR_KERNEL_NOT_CACHED) << message;
  EXPECT_NE(message.find("KVARN_ALWAYS_COMPILE"), std::string::npos) << message;
}

TEST_F(WarmedCache, DamagedEntryIsReportedAndLeftAlone) {
  // A copy of the warmed cache, its append PTX overwritten: the sealed
  // checksums no longer match.
  TempDir copy;
  std::string command = "cp -r " + cacheDir() + "/. " + copy.path;
  ASSERT_EQ(std::system(command.c_str()), 0);
  std::string ptx;
  for (const std::string &line : listing(copy.path)) {
    std::string path = line.substr(0, line.rfind(' '));
    if (llvm::StringRef(path).ends_with("/append.ptx"))
      ptx = path;
  }
  ASSERT_FALSE(ptx.empty());
  {
    std::error_code ec;
    llvm::raw_fd_ostream os(ptx, ec);
    ASSERT_FALSE(ec);
    os << "// not the PTX that was sealed\n";
  }
  std::vector<std::string> before = listing(copy.path);
  std::unique_ptr<KernelCache> cache = coreCache(copy.path);
  auto [status, message] = failure(*cache, request("append"));
  EXPECT_EQ(status, KVARN_ERROR_KERNEL_NOT_CACHED) << message;
  EXPECT_NE(message.find("unusable"), std::string::npos) << message;
  EXPECT_EQ(listing(copy.path), before);
  // The intact entry beside it still serves.
  kvarn::Expected<CacheResult> decode =
      cache->getOrCompile(request("decode"), sm90());
  EXPECT_TRUE(bool(decode)) << kvarn::toString(decode.takeError());
}

} // namespace
