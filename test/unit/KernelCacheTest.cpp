//===- KernelCacheTest.cpp - the kernel cache -----------------------------===//
//
// The key (stable, and changed by each input), the disk layout and metadata,
// recovery from damaged entries, LRU eviction and compiling on threads. Tests
// compile a one-line user kernel where they can (fast) and a library kernel
// where the layout of a real kernel matters. No GPU needed.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Runtime/KernelCache.h"
#include "DiskCache.h"
#include "TempDir.h"
#include "TestUtil.h"

#include "kvarn/Layout/Preset.h"
#include "kvarn/Layout/RecordLayout.h"
#include "kvarn/Runtime/PtxAssembler.h"
#include "kvarn/Support/Error.h"
#include "kvarn/Support/FileIO.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Regex.h"
#include "llvm/Support/raw_ostream.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <future>
#include <random>
#include <set>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <utime.h>

using namespace kvarn;

namespace {

const char *kTinySource =
    "kernel tiny(p: ptr<f32>, n: i32) grid(n) { p[program_id(0)] = 1.0; }\n";

KernelRequest tiny(const std::string &source = kTinySource) {
  return {"tiny", {}, source, "tiny.kvt"};
}

CompileOptions sm90() {
  CompileOptions o;
  o.target.chip = "sm_90";
  return o;
}

std::string keyOf(const KernelRequest &r, const CompileOptions &o) {
  kvarn::Expected<CacheKey> key = computeCacheKey(r, o);
  EXPECT_TRUE(bool(key)) << kvarn::toString(key.takeError());
  return key ? key->hash : "";
}

std::string readFile(const std::string &path) {
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false);
  return buffer ? (*buffer)->getBuffer().str() : "";
}

void writeFile(const std::string &path, llvm::StringRef text) {
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec);
  ASSERT_FALSE(ec) << path;
  os << text;
}

/// A fresh directory per test.
struct TempDir : test::TempDir {
  TempDir() : test::TempDir("kvarn-cache-test") {}
};

/// A cache on `dir` that records its warnings instead of printing them.
struct TestCache {
  explicit TestCache(const std::string &dir, bool ptxas = false) {
    CacheOptions o;
    o.directory = dir;
    o.assembleWithPtxas = ptxas;
    o.warn = [this](llvm::StringRef w) { warnings.push_back(w.str()); };
    cache = std::make_unique<KernelCache>(o);
  }
  CacheResult get(const KernelRequest &r, const CompileOptions &o = sm90()) {
    kvarn::Expected<CacheResult> result = cache->getOrCompile(r, o);
    EXPECT_TRUE(bool(result)) << kvarn::toString(result.takeError());
    return result ? *result : CacheResult{};
  }
  std::vector<std::string> warnings;
  std::unique_ptr<KernelCache> cache;
};

//===----------------------------------------------------------------------===//
// The key
//===----------------------------------------------------------------------===//

TEST(CacheKey, Base32MatchesRfc4648) {
  auto enc = [](llvm::StringRef s) {
    return base32Encode(llvm::ArrayRef<uint8_t>(s.bytes_begin(), s.size()));
  };
  EXPECT_EQ(enc(""), "");
  EXPECT_EQ(enc("f"), "MY");
  EXPECT_EQ(enc("fo"), "MZXQ");
  EXPECT_EQ(enc("foo"), "MZXW6");
  EXPECT_EQ(enc("foob"), "MZXW6YQ");
  EXPECT_EQ(enc("fooba"), "MZXW6YTB");
  EXPECT_EQ(enc("foobar"), "MZXW6YTBOI");
}

TEST(CacheKey, IsStableAndNamesAValidDirectory) {
  KernelRequest r{"decode", {}, "", ""};
  kvarn::Expected<CacheKey> a = computeCacheKey(r, sm90());
  kvarn::Expected<CacheKey> b = computeCacheKey(r, sm90());
  ASSERT_TRUE(bool(a) && bool(b));
  EXPECT_EQ(a->hash, b->hash);
  EXPECT_EQ(a->hash.size(), 64u);
  EXPECT_TRUE(isCacheKeyDirectory(a->directory)) << a->directory;
  std::string digest;
  ASSERT_TRUE(llvm::tryGetFromHex(a->hash, digest));
  EXPECT_EQ(a->directory,
            base32Encode(llvm::ArrayRef<uint8_t>(
                reinterpret_cast<const uint8_t *>(digest.data()), 32)));
  // The inputs the issue names are all there.
  for (const char *field :
       {"kvarn_version", "build_id", "llvm_version", "source", "preset",
        "head_dim", "group", "gqa", "dtypes", "chip", "ptx_version",
        "num_warps", "min_ctas_per_sm", "env:KVARN_PTXAS"})
    EXPECT_NE(a->find(field), nullptr) << field;
  // No field needs the compiler: the runtime core keys alike (the pass
  // pipeline's code is in the build id).
  EXPECT_EQ(a->find("pipeline"), nullptr);
  // The default PTX version is filled in before hashing: 0 and its value
  // are one key.
  CompileOptions explicitPtx = sm90();
  explicitPtx.target.ptxVersion = std::stoi(*a->find("ptx_version"));
  EXPECT_EQ(keyOf(r, explicitPtx), a->hash);
}

TEST(CacheKey, ChangesWithEveryInput) {
  KernelRequest base{"decode", {}, "", ""};
  std::string baseKey = keyOf(base, sm90());
  std::set<std::string> keys = {baseKey};
  auto expectNew = [&](const char *what, const KernelRequest &r,
                       const CompileOptions &o) {
    std::string k = keyOf(r, o);
    EXPECT_TRUE(keys.insert(k).second) << what << " did not change the key";
  };
  KernelRequest r = base;
  r.kernel = "flush";
  expectNew("kernel", r, sm90());
  r = base;
  r.spec.preset = "kvarn_k4v4_g64";
  expectNew("preset", r, sm90());
  r = base;
  r.spec.preset = "kvarn_k4v2_g64"; // group only
  expectNew("group", r, sm90());
  r = base;
  r.spec.headDim = 96;
  expectNew("head_dim", r, sm90());
  r = base;
  r.spec.gqa = 4;
  expectNew("gqa", r, sm90());
  r = base;
  r.spec.dtype = DType::BF16;
  expectNew("dtype", r, sm90());
  kvarn::Expected<CacheKey> bf16Key = computeCacheKey(r, sm90());
  ASSERT_TRUE(bool(bf16Key));
  EXPECT_NE(bf16Key->find("dtypes")->find("q,k,v,out=bf16"), std::string::npos)
      << *bf16Key->find("dtypes");
  CompileOptions o = sm90();
  o.target.chip = "sm_80";
  expectNew("chip", base, o);
  o = sm90();
  o.target.ptxVersion = 84;
  expectNew("ptx version", base, o);
  o = sm90();
  o.numWarps = 8;
  expectNew("num_warps", base, o);
  expectNew("user source", tiny(), sm90());
  expectNew("user source text",
            tiny(std::string(kTinySource) + "// a comment\n"), sm90());
  KernelRequest renamed = tiny();
  renamed.sourceName = "other.kvt";
  expectNew("source name", renamed, sm90());
  ::setenv("KVARN_PTXAS", "/nonexistent/ptxas", 1);
  expectNew("KVARN_PTXAS", base, sm90());
  ::unsetenv("KVARN_PTXAS");
  EXPECT_EQ(keyOf(base, sm90()), baseKey);

  // What does not change the code does not change the key.
  o = sm90();
  o.printIRAfterAll = false;
  o.timing = true;
  o.onStage = [](llvm::StringRef, llvm::StringRef) {};
  o.crashReproducer = "/tmp/x.mlir";
  EXPECT_EQ(keyOf(base, o), baseKey);
}

TEST(CacheKey, RejectsWhatCannotCompile) {
  auto status = [](const KernelRequest &r, const CompileOptions &o) {
    kvarn::Expected<CacheKey> k = computeCacheKey(r, o);
    std::string message;
    return k ? KVARN_OK : kvarn::consumeError(k.takeError(), message);
  };
  KernelRequest r{"decode", {}, "", ""};
  r.spec.preset = "nope";
  EXPECT_EQ(status(r, sm90()), KVARN_ERROR_UNKNOWN_PRESET);
  r = {"decode", {}, "", ""};
  r.spec.headDim = 100;
  EXPECT_EQ(status(r, sm90()), KVARN_ERROR_UNSUPPORTED_SHAPE);
  r = {"nope", {}, "", ""};
  EXPECT_EQ(status(r, sm90()), KVARN_ERROR_INVALID_ARGUMENT);
  CompileOptions o = sm90();
  o.target.chip = "sm_70";
  EXPECT_EQ(status({"decode", {}, "", ""}, o), KVARN_ERROR_UNSUPPORTED_TARGET);
}

TEST(CacheOptions, ParsesSizes) {
  EXPECT_EQ(parseByteSize("0"), 0u);
  EXPECT_EQ(parseByteSize("1048576"), 1048576u);
  EXPECT_EQ(parseByteSize("512K"), 512u << 10);
  EXPECT_EQ(parseByteSize("3m"), 3u << 20);
  EXPECT_EQ(parseByteSize("2G"), 2ull << 30);
  EXPECT_FALSE(parseByteSize(""));
  EXPECT_FALSE(parseByteSize("G"));
  EXPECT_FALSE(parseByteSize("-1"));
  EXPECT_FALSE(parseByteSize("1.5G"));
  EXPECT_FALSE(parseByteSize("99999999999999999999"));
}

TEST(CacheOptions, ReadsTheEnvironment) {
  ::setenv("KVARN_CACHE_DIR", "/some/dir", 1);
  ::setenv("KVARN_ALWAYS_COMPILE", "1", 1);
  ::setenv("KVARN_CACHE_MAX_SIZE", "64M", 1);
  CacheOptions o = CacheOptions::fromEnvironment();
  EXPECT_EQ(o.directory, "/some/dir");
  EXPECT_TRUE(o.alwaysCompile);
  EXPECT_EQ(o.maxBytes, 64u << 20);
  ::setenv("KVARN_CACHE_DIR", "off", 1);
  ::setenv("KVARN_ALWAYS_COMPILE", "0", 1);
  EXPECT_EQ(CacheOptions::fromEnvironment().directory, "");
  EXPECT_FALSE(CacheOptions::fromEnvironment().alwaysCompile);
  ::unsetenv("KVARN_CACHE_DIR");
  ::unsetenv("KVARN_ALWAYS_COMPILE");
  ::unsetenv("KVARN_CACHE_MAX_SIZE");
  ::setenv("HOME", "/home/someone", 1);
  ::unsetenv("XDG_CACHE_HOME");
  EXPECT_EQ(CacheOptions::fromEnvironment().directory,
            "/home/someone/.cache/kvarn");
}

//===----------------------------------------------------------------------===//
// Entries on disk
//===----------------------------------------------------------------------===//

TEST(KernelCache, CompilesOnceThenHitsDiskThenMemory) {
  TempDir dir;
  TestCache first(dir.path);
  CacheResult a = first.get(tiny());
  ASSERT_TRUE(a.artifacts);
  EXPECT_EQ(a.outcome, CacheOutcome::Compiled);
  EXPECT_EQ(first.get(tiny()).outcome, CacheOutcome::MemoryHit);

  TestCache second(dir.path); // as a new process would
  CacheResult b = second.get(tiny());
  EXPECT_EQ(b.outcome, CacheOutcome::DiskHit);
  EXPECT_EQ(b.artifacts->ptx, a.artifacts->ptx);
  EXPECT_EQ(b.artifacts->numWarps, a.artifacts->numWarps);
  EXPECT_EQ(b.artifacts->sharedBytes, a.artifacts->sharedBytes);
  EXPECT_EQ(b.artifacts->ctasPerSM, a.artifacts->ctasPerSM);
  EXPECT_EQ(b.artifacts->signature, a.artifacts->signature);
  // The ABI as the compiler stated it: tiny(p: ptr<f32>, n: i32) grid(n).
  ASSERT_EQ(b.artifacts->abi.params.size(), 2u);
  EXPECT_EQ(b.artifacts->abi.params[0].name, "p");
  EXPECT_EQ(b.artifacts->abi.params[0].type, "*f32");
  EXPECT_EQ(b.artifacts->abi.params[1].name, "n");
  EXPECT_EQ(b.artifacts->abi.params[1].type, "i32");
  EXPECT_EQ(b.artifacts->abi.grid, (std::vector<int>{1, -2, -2}));
  EXPECT_EQ(b.artifacts->abi.grid, a.artifacts->abi.grid);
  EXPECT_TRUE(first.warnings.empty() && second.warnings.empty());
  EXPECT_EQ(second.cache->stats().compiled, 0u);
  EXPECT_EQ(second.cache->stats().diskHits, 1u);

  CacheOptions always;
  always.directory = dir.path;
  always.alwaysCompile = true;
  always.assembleWithPtxas = false;
  KernelCache third(always);
  kvarn::Expected<CacheResult> c = third.getOrCompile(tiny(), sm90());
  ASSERT_TRUE(bool(c));
  EXPECT_EQ(c->outcome, CacheOutcome::Compiled);
}

TEST(KernelCache, WritesTritonsLayout) {
  TempDir dir;
  TestCache cache(dir.path);
  CacheResult r = cache.get(tiny());
  ASSERT_TRUE(r.artifacts);
  const KernelArtifacts &a = *r.artifacts;
  EXPECT_EQ(llvm::sys::path::parent_path(a.directory), dir.path);
  EXPECT_EQ(llvm::sys::path::filename(a.directory), a.key);
  std::set<std::string> files;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(a.directory, ec), end;
       it != end && !ec; it.increment(ec))
    files.insert(llvm::sys::path::filename(it->path()).str());
  std::set<std::string> expected = {
      "tiny.kvt",  "tiny.kvt.mlir", "tiny.kvgpu.mlir", "tiny.nvvm.mlir",
      "tiny.llir", "tiny.ptx",      "tiny.json",       "__grp__tiny.json",
      "tiny.lock"};
  EXPECT_EQ(files, expected);
  EXPECT_EQ(readFile(a.directory + "/tiny.kvt"), kTinySource);

  // The group file lists every other file, by absolute path, as Triton's.
  llvm::Expected<llvm::json::Value> group =
      llvm::json::parse(readFile(a.directory + "/__grp__tiny.json"));
  ASSERT_TRUE(bool(group));
  const llvm::json::Object *children =
      group->getAsObject()->getObject("child_paths");
  ASSERT_NE(children, nullptr);
  std::set<std::string> listed;
  for (const auto &[name, path] : *children) {
    listed.insert(name.str());
    EXPECT_EQ(path.getAsString().value_or(""), a.directory + "/" + name.str());
  }
  expected.erase("__grp__tiny.json");
  expected.erase("tiny.lock");
  EXPECT_EQ(listed, expected);
}

/// Reads the metadata JSON of `a`.
llvm::json::Object metadataOf(const KernelArtifacts &a) {
  llvm::Expected<llvm::json::Value> v =
      llvm::json::parse(readFile(a.directory + "/" + a.name + ".json"));
  EXPECT_TRUE(bool(v));
  return v && v->getAsObject() ? *v->getAsObject() : llvm::json::Object();
}

/// The code of the error `err` carries, consumed.
kvarn_status_t statusOf(kvarn::Error err) {
  std::string message;
  return kvarn::consumeError(std::move(err), message);
}

/// The ABI the compiler states for library kernel `kernel` (k4v2_g128,
/// head_dim 128), compiled into a fresh cache; empty if it failed.
KernelAbi compiledAbi(const char *kernel, int gqa) {
  TempDir dir;
  TestCache cache(dir.path);
  CacheResult r = cache.get({kernel, {"kvarn_k4v2_g128", 128, gqa}, "", ""});
  return r.artifacts ? r.artifacts->image().abi : KernelAbi{};
}

TEST(KernelCache, LaunchArgumentsAreCheckedAgainstTheCompiledAbi) {
  // decode's ABI as the compiler states it, carried into the kernel image
  // every launch checks its arguments against.
  KernelAbi abi = compiledAbi("decode", 4);
  ASSERT_EQ(abi.params.size(), 13u);
  auto decodeArgs = [](bool scaleAsI32) {
    cuda::KernelArgs a;
    for (int i = 0; i < 8; ++i) // q ... out
      a.pointer(CUdeviceptr(0x1000 * (i + 1)));
    if (scaleAsI32)
      a.i32(1);
    else
      a.f32(0.088f);
    a.i32(0).i32(2).i32(16).i32(8); // window, batch, max_blocks, num_kv_heads
    return a;
  };
  cuda::KernelArgs good = decodeArgs(false);
  good.scratch();
  EXPECT_FALSE(bool(cuda::checkArguments("decode", abi, good)));

  cuda::KernelArgs noScratch = decodeArgs(false);
  kvarn::Error e = cuda::checkArguments("decode", abi, noScratch);
  ASSERT_TRUE(bool(e));
  std::string message = kvarn::toString(std::move(e));
  EXPECT_NE(message.find("13 arguments; it takes 15"), std::string::npos)
      << message;

  cuda::KernelArgs wrongKind = decodeArgs(true);
  wrongKind.scratch();
  e = cuda::checkArguments("decode", abi, wrongKind);
  ASSERT_TRUE(bool(e));
  message = kvarn::toString(std::move(e));
  EXPECT_NE(message.find("argument 8 (softmax_scale) is i32; the kernel takes "
                         "f32"),
            std::string::npos)
      << message;

  cuda::KernelArgs scalarForPointer;
  scalarForPointer.i64(0x1000);
  for (int i = 1; i < 8; ++i)
    scalarForPointer.pointer(CUdeviceptr(0x1000));
  scalarForPointer.f32(0.088f).i32(0).i32(2).i32(16).i32(8).scratch();
  EXPECT_EQ(statusOf(cuda::checkArguments("decode", abi, scalarForPointer)),
            KVARN_ERROR_INVALID_ARGUMENT);

  // An image without an ABI (built by hand) is launched unchecked.
  EXPECT_FALSE(bool(cuda::checkArguments("decode", KernelAbi{}, noScratch)));
}

TEST(KernelCache, LaunchGridsComeFromTheCompiledAbi) {
  // Launchers pass no grid: it is the .kvt's grid(...) evaluated on the
  // launch's arguments. decode_split's names three parameters; combine's
  // has GQA, a specialization constant, as its third axis.
  std::mt19937_64 rng(test::freshSeed());
  std::uniform_int_distribution<int> extent(1, 1000);
  int batch = extent(rng), heads = extent(rng), splits = extent(rng);
  for (int gqa : {1, 4, 8}) {
    KernelAbi splitAbi = compiledAbi("decode_split", gqa),
              combineAbi = compiledAbi("combine", gqa);
    ASSERT_FALSE(splitAbi.params.empty() || combineAbi.params.empty());
    cuda::KernelArgs s;
    for (int i = 0; i < 9; ++i) // q ... part_lse
      s.pointer(CUdeviceptr(0x1000));
    s.f32(0.088f).i32(0).i32(batch).i32(16).i32(heads).i32(splits).scratch();
    kvarn::Expected<cuda::Grid> g = cuda::gridOf("decode_split", splitAbi, s);
    ASSERT_TRUE(bool(g)) << kvarn::toString(g.takeError());
    EXPECT_EQ(g->x, unsigned(batch));
    EXPECT_EQ(g->y, unsigned(heads));
    EXPECT_EQ(g->z, unsigned(splits));

    cuda::KernelArgs c;
    for (int i = 0; i < 4; ++i) // part_out, part_lse, seq_lens, out
      c.pointer(CUdeviceptr(0x1000));
    c.i32(/*window=*/0).i32(batch).i32(heads).i32(splits).scratch();
    g = cuda::gridOf("combine", combineAbi, c);
    ASSERT_TRUE(bool(g)) << kvarn::toString(g.takeError());
    EXPECT_EQ(g->x, unsigned(batch));
    EXPECT_EQ(g->y, unsigned(heads));
    EXPECT_EQ(g->z, unsigned(gqa));

    cuda::KernelArgs negative;
    for (int i = 0; i < 4; ++i)
      negative.pointer(CUdeviceptr(0x1000));
    negative.i32(0).i32(batch).i32(-heads).i32(splits).scratch();
    kvarn::Expected<cuda::Grid> bad =
        cuda::gridOf("combine", combineAbi, negative);
    ASSERT_FALSE(bool(bad));
    std::string message = kvarn::toString(bad.takeError());
    EXPECT_NE(
        message.find("grid axis 1 (num_kv_heads) is " + std::to_string(-heads)),
        std::string::npos)
        << message;
  }
  // An image without an ABI has no grid to launch.
  cuda::KernelArgs any;
  any.i32(1).scratch();
  kvarn::Expected<cuda::Grid> none = cuda::gridOf("k", KernelAbi{}, any);
  ASSERT_FALSE(bool(none));
  EXPECT_EQ(statusOf(none.takeError()), KVARN_ERROR_INVALID_ARGUMENT);
}

TEST(KernelCache, ArgumentsAreBoundByNameInTheAbisOrder) {
  // The runtime's launchers name their arguments by the .kvt parameters;
  // bindArguments puts them in the compiled ABI's order, so no launcher
  // states an order.
  KernelAbi abi = compiledAbi("decode", 4);
  ASSERT_EQ(abi.params.size(), 13u);
  std::mt19937_64 rng(test::freshSeed());
  std::uniform_int_distribution<int32_t> extent(1, 1 << 20);
  int32_t batch = extent(rng), maxBlocks = extent(rng), heads = extent(rng),
          window = extent(rng);
  std::vector<cuda::NamedArg> named = {{"q", CUdeviceptr(0x1000)},
                                       {"block_table", CUdeviceptr(0x2000)},
                                       {"seq_lens", CUdeviceptr(0x3000)},
                                       {"block_to_slot", CUdeviceptr(0x4000)},
                                       {"cache", CUdeviceptr(0x5000)},
                                       {"pool_k", CUdeviceptr(0x6000)},
                                       {"pool_v", CUdeviceptr(0x7000)},
                                       {"out", CUdeviceptr(0x8000)},
                                       {"softmax_scale", 0.088f},
                                       {"window", window},
                                       {"batch", batch},
                                       {"max_blocks", maxBlocks},
                                       {"num_kv_heads", heads}};
  std::shuffle(named.begin(), named.end(), rng);
  kvarn::Expected<cuda::KernelArgs> bound =
      cuda::bindArguments("decode", abi, named);
  ASSERT_TRUE(bool(bound)) << kvarn::toString(bound.takeError());
  ASSERT_EQ(bound->size(), abi.params.size() + 2);
  for (size_t i = 0; i < abi.params.size(); ++i) {
    const cuda::NamedArg &given = *llvm::find_if(
        named, [&](const auto &a) { return abi.params[i].name == a.name; });
    EXPECT_EQ(bound->kind(i), given.kind) << abi.params[i].name;
    if (given.kind == cuda::KernelArgs::Kind::I32) {
      EXPECT_EQ(bound->integer(i), int32_t(given.bits)) << abi.params[i].name;
    }
  }
  // What the driver reads for each parameter: the pointer, the float, the
  // integer given under its name.
  void **slots = bound->data();
  for (size_t i = 0; i < abi.params.size(); ++i) {
    const cuda::NamedArg &given = *llvm::find_if(
        named, [&](const auto &a) { return abi.params[i].name == a.name; });
    switch (given.kind) {
    case cuda::KernelArgs::Kind::Pointer:
      EXPECT_EQ(*static_cast<CUdeviceptr *>(slots[i]), given.bits)
          << abi.params[i].name;
      break;
    case cuda::KernelArgs::Kind::F32:
      EXPECT_EQ(*static_cast<float *>(slots[i]), 0.088f) << abi.params[i].name;
      break;
    default:
      EXPECT_EQ(*static_cast<int32_t *>(slots[i]), int32_t(given.bits))
          << abi.params[i].name;
    }
  }
  EXPECT_EQ(*static_cast<CUdeviceptr *>(slots[0]), CUdeviceptr(0x1000)); // q
  // window, batch, max_blocks, num_kv_heads
  EXPECT_EQ(bound->integer(9), window);
  EXPECT_EQ(bound->integer(10), batch);
  EXPECT_EQ(bound->integer(11), maxBlocks);
  EXPECT_EQ(bound->integer(12), heads);
  EXPECT_EQ(bound->kind(13), cuda::KernelArgs::Kind::Pointer); // scratch
  EXPECT_EQ(bound->kind(14), cuda::KernelArgs::Kind::Pointer);

  auto failure = [&](std::vector<cuda::NamedArg> args) {
    kvarn::Expected<cuda::KernelArgs> b =
        cuda::bindArguments("decode", abi, args);
    EXPECT_FALSE(bool(b));
    return b ? std::string() : kvarn::toString(b.takeError());
  };
  std::vector<cuda::NamedArg> missing = named;
  missing.erase(llvm::find_if(missing, [](const auto &a) {
    return llvm::StringRef(a.name) == "max_blocks";
  }));
  EXPECT_NE(failure(missing).find("no argument for its parameter 'max_blocks'"),
            std::string::npos);
  std::vector<cuda::NamedArg> extra = named;
  extra.push_back({"num_splits", int32_t(2)});
  EXPECT_NE(failure(extra).find("has no parameter 'num_splits'"),
            std::string::npos);
  std::vector<cuda::NamedArg> twice = named;
  twice.push_back({"batch", int32_t(2)});
  EXPECT_NE(failure(twice).find("'batch' is given twice"), std::string::npos);
  std::vector<cuda::NamedArg> wrongKind = named;
  for (cuda::NamedArg &a : wrongKind)
    if (llvm::StringRef(a.name) == "softmax_scale")
      a = cuda::NamedArg("softmax_scale", int32_t(1));
  EXPECT_NE(
      failure(wrongKind).find("(softmax_scale) is i32; the kernel takes f32"),
      std::string::npos);
  EXPECT_NE(failure({}).find("no argument for its parameter 'q'"),
            std::string::npos);
  kvarn::Expected<cuda::KernelArgs> none =
      cuda::bindArguments("k", KernelAbi{}, named);
  ASSERT_FALSE(bool(none));
  EXPECT_EQ(statusOf(none.takeError()), KVARN_ERROR_INVALID_ARGUMENT);
}

// launch_pdl (Triton's field: its launcher then launches the kernel as a
// programmatic dependent) is true exactly where the PTX waits on the grid
// before it, and survives the disk level (a fresh cache reads it back).
TEST(KernelCache, MetadataSaysWhichKernelsWaitOnTheOneBefore) {
  TempDir dir;
  dsl::Specialization spec{"kvarn_k4v2_g128", 128, 4};
  for (const char *kernel : {"combine", "decode_split", "append"}) {
    bool waits = false;
    {
      TestCache cache(dir.path);
      CacheResult r = cache.get({kernel, spec, "", ""});
      ASSERT_TRUE(r.artifacts) << kernel;
      waits = r.artifacts->ptx.find("griddepcontrol.wait") != std::string::npos;
      EXPECT_EQ(r.artifacts->launchPdl, waits) << kernel;
      EXPECT_EQ(metadataOf(*r.artifacts).getBoolean("launch_pdl"),
                std::optional<bool>(waits))
          << kernel;
      EXPECT_EQ(r.artifacts->image().launchPdl, waits) << kernel;
    }
    TestCache reread(dir.path);
    CacheResult again = reread.get({kernel, spec, "", ""});
    ASSERT_TRUE(again.artifacts) << kernel;
    EXPECT_EQ(again.artifacts->launchPdl, waits) << kernel;
    EXPECT_EQ(waits, std::string(kernel) == "combine") << kernel;
  }
}

TEST(KernelCache, MetadataCarriesTritonsFieldsAndKvarns) {
  TempDir dir;
  TestCache cache(dir.path);
  dsl::Specialization spec{"kvarn_k4v4_g64", 96, 4};
  CacheResult r = cache.get({"decode", spec, "", ""});
  ASSERT_TRUE(r.artifacts);
  llvm::json::Object m = metadataOf(*r.artifacts);

  // The field set Triton's CompiledKernel and CUDA launcher read, and no
  // surprise: additions must be deliberate (docs/cache.md lists them).
  std::set<std::string> fields;
  for (const auto &[k, v] : m)
    fields.insert(k.str());
  std::set<std::string> expected = {
      "name", "hash", "target", "num_warps", "num_ctas", "num_stages",
      "shared", "cluster_dims", "global_scratch_size", "global_scratch_align",
      "profile_scratch_size", "profile_scratch_align",
      "launch_cooperative_grid", "launch_pdl", "tmem_size", "ptx_version",
      "arch", "backend_name", "enable_fp_fusion", "debug", "kvarn"};
  EXPECT_EQ(fields, expected);

  EXPECT_EQ(m.getString("name").value_or(""), "decode");
  kvarn::Expected<CacheKey> key =
      computeCacheKey({"decode", spec, "", ""}, sm90());
  ASSERT_TRUE(bool(key));
  EXPECT_EQ(m.getString("hash").value_or(""), key->hash);
  const llvm::json::Object *target = m.getObject("target");
  ASSERT_NE(target, nullptr);
  EXPECT_EQ(target->getString("backend").value_or(""), "cuda");
  EXPECT_EQ(target->getInteger("arch").value_or(0), 90);
  EXPECT_EQ(target->getInteger("warp_size").value_or(0), 32);
  EXPECT_EQ(m.getInteger("num_ctas").value_or(0), 1);

  // num_warps is what the PTX says the kernel runs with.
  llvm::SmallVector<llvm::StringRef> match;
  llvm::Regex maxntid("\\.maxntid ([0-9]+)");
  ASSERT_TRUE(maxntid.match(r.artifacts->ptx, &match)) << "no .maxntid";
  int threads = 0;
  ASSERT_FALSE(match[1].getAsInteger(10, threads));
  EXPECT_EQ(m.getInteger("num_warps").value_or(0), threads / 32);
  EXPECT_GE(m.getInteger("shared").value_or(-1), 0);

  const llvm::json::Object *kvarn = m.getObject("kvarn");
  ASSERT_NE(kvarn, nullptr);
  // ctas_per_sm is the CTAs per SM the PTX budgets registers for.
  llvm::Regex minCtas("\\.minnctapersm ([0-9]+)");
  ASSERT_TRUE(minCtas.match(r.artifacts->ptx, &match)) << "no .minnctapersm";
  int ctas = 0;
  ASSERT_FALSE(match[1].getAsInteger(10, ctas));
  EXPECT_EQ(kvarn->getInteger("ctas_per_sm").value_or(0), ctas);
  EXPECT_EQ(r.artifacts->ctasPerSM, ctas);
  // decode reads nothing another kernel of the library writes: a plain
  // launch (combine's case: MetadataSaysWhichKernelsWaitOnTheOneBefore).
  EXPECT_EQ(m.getBoolean("launch_pdl"), std::optional<bool>(false));
  EXPECT_FALSE(r.artifacts->launchPdl);
  EXPECT_EQ(kvarn->getString("preset").value_or(""), "kvarn_k4v4_g64");
  EXPECT_EQ(kvarn->getInteger("head_dim").value_or(0), 96);
  EXPECT_EQ(kvarn->getInteger("gqa").value_or(0), 4);
  EXPECT_EQ(kvarn->getInteger("group").value_or(0), 64);
  EXPECT_EQ(kvarn->getInteger("key_bits").value_or(0), 4);
  EXPECT_EQ(kvarn->getInteger("value_bits").value_or(0), 4);
  EXPECT_EQ(kvarn->getString("chip").value_or(""), "sm_90");
  EXPECT_EQ(kvarn->getString("version").value_or(""),
            compilerIdentity().kvarnVersion);
  EXPECT_EQ(kvarn->getString("llvm_version").value_or(""),
            compilerIdentity().llvmVersion);
  kvarn::Expected<RecordLayout> layout =
      RecordLayout::get(**lookupPreset("kvarn_k4v4_g64"), 96);
  ASSERT_TRUE(bool(layout));
  const llvm::json::Object *rl = kvarn->getObject("record_layout");
  ASSERT_NE(rl, nullptr);
  EXPECT_EQ(rl->getInteger("record_bytes").value_or(0), layout->recordBytes);
  EXPECT_EQ(rl->getInteger("v_zero").value_or(0), layout->vZero);
  // decode(q, block_table, seq_lens, block_to_slot, kv_cache, pool_k, pool_v,
  // out, scale, window, batch, max_blocks, num_kv_heads): docs/dsl.md.
  const llvm::json::Array *sig = kvarn->getArray("signature");
  ASSERT_NE(sig, nullptr);
  std::vector<std::string> types;
  for (const llvm::json::Value &t : *sig)
    types.push_back(t.getAsString().value_or("").str());
  std::vector<std::string> decodeSig = {"*i8", "*i8", "*i8", "*i8",  "*i8",
                                        "*i8", "*i8", "*i8", "fp32", "i32",
                                        "i32", "i32", "i32"};
  EXPECT_EQ(types, decodeSig);
  EXPECT_EQ(kvarn->getInteger("num_args").value_or(0),
            int64_t(decodeSig.size() + 2));
  // The same parameters with their names and pointee types, and the grid
  // rule: decode.kvt's signature and grid(batch, num_kv_heads).
  const llvm::json::Object *abi = kvarn->getObject("abi");
  ASSERT_NE(abi, nullptr);
  std::vector<std::string> params;
  for (const llvm::json::Value &p : *abi->getArray("params"))
    params.push_back((p.getAsObject()->getString("name").value_or("") + ":" +
                      p.getAsObject()->getString("type").value_or(""))
                         .str());
  std::vector<std::string> decodeParams = {"q:*f16",
                                           "block_table:*i32",
                                           "seq_lens:*i32",
                                           "block_to_slot:*i32",
                                           "cache:*i8",
                                           "pool_k:*f16",
                                           "pool_v:*f16",
                                           "out:*f16",
                                           "softmax_scale:f32",
                                           "window:i32",
                                           "batch:i32",
                                           "max_blocks:i32",
                                           "num_kv_heads:i32"};
  EXPECT_EQ(params, decodeParams);
  std::vector<std::string> grid;
  for (const llvm::json::Value &g : *abi->getArray("grid"))
    grid.push_back(g.getAsString().value_or("").str());
  EXPECT_EQ(grid, (std::vector<std::string>{"batch", "num_kv_heads", "1"}));
  const llvm::json::Object *sums = kvarn->getObject("files");
  ASSERT_NE(sums, nullptr);
  const llvm::json::Object *ptx = sums->getObject("decode.ptx");
  ASSERT_NE(ptx, nullptr);
  EXPECT_EQ(ptx->getInteger("bytes").value_or(0),
            int64_t(r.artifacts->ptx.size()));
}

//===----------------------------------------------------------------------===//
// Damaged entries
//===----------------------------------------------------------------------===//

struct Damage {
  const char *name;
  const char *file; // relative to the entry, %s = the kernel
  std::function<std::string(const std::string &)> change;
};

class DamagedEntry : public ::testing::TestWithParam<Damage> {};

TEST_P(DamagedEntry, IsReportedOnceAndRebuilt) {
  TempDir dir;
  std::string ptx, entry;
  {
    TestCache cache(dir.path);
    CacheResult r = cache.get(tiny());
    ASSERT_TRUE(r.artifacts);
    ptx = r.artifacts->ptx;
    entry = r.artifacts->directory;
  }
  std::string file = entry + "/" + GetParam().file;
  writeFile(file, GetParam().change(readFile(file)));

  TestCache cache(dir.path);
  CacheResult r = cache.get(tiny());
  ASSERT_TRUE(r.artifacts);
  EXPECT_EQ(r.outcome, CacheOutcome::Compiled);
  EXPECT_EQ(r.artifacts->ptx, ptx);
  ASSERT_EQ(cache.warnings.size(), 1u);
  EXPECT_NE(cache.warnings[0].find(entry), std::string::npos)
      << cache.warnings[0];
  EXPECT_EQ(cache.cache->stats().rebuilt, 1u);

  // Rebuilt in place: the next process hits it, with no warning.
  TestCache next(dir.path);
  EXPECT_EQ(next.get(tiny()).outcome, CacheOutcome::DiskHit);
  EXPECT_TRUE(next.warnings.empty());
}

std::string setKvarnField(const std::string &json, const char *field,
                          llvm::json::Value value) {
  llvm::Expected<llvm::json::Value> v = llvm::json::parse(json);
  if (!v)
    return "garbage";
  (*v->getAsObject()->getObject("kvarn"))[field] = std::move(value);
  return llvm::formatv("{0}", *v).str();
}

/// The metadata with ctas_per_sm changed and sealed again, as a writer
/// that got the field wrong would: only the PTX's .minnctapersm says so.
std::string resealedWithOtherCtasPerSM(const std::string &json) {
  nlohmann::json m = nlohmann::json::parse(json, nullptr, false);
  if (!m.is_object() || !m.contains("kvarn"))
    return "garbage";
  nlohmann::json &kvarn = m["kvarn"];
  kvarn["ctas_per_sm"] = kvarn.value("ctas_per_sm", 1) + 1;
  cache::sealMetadata(m);
  return m.dump(2);
}

/// The metadata with its "abi" replaced (parameters p: `pType`, n: i32 and
/// the grid `gridX`) and sealed again, as a writer that got it wrong would:
/// only the check against the PTX's parameters says so.
std::string resealedWithAbi(const std::string &json, const char *pType,
                            const char *gridX) {
  nlohmann::json m = nlohmann::json::parse(json, nullptr, false);
  if (!m.is_object() || !m.contains("kvarn"))
    return "garbage";
  m["kvarn"]["abi"] = {
      {"params", nlohmann::json::array({{{"name", "p"}, {"type", pType}},
                                        {{"name", "n"}, {"type", "i32"}}})},
      {"grid", nlohmann::json::array({gridX, "1", "1"})}};
  cache::sealMetadata(m);
  return m.dump(2);
}

/// The metadata with launch fields changed the way a hand edit would.
std::string editLaunchFields(const std::string &json) {
  llvm::Expected<llvm::json::Value> v = llvm::json::parse(json);
  if (!v)
    return "garbage";
  llvm::json::Object &m = *v->getAsObject();
  // tiny has one warp and no shared memory; more of either is what the old
  // checks let through (a library kernel's case is in the lit tests).
  m["shared"] = m.getInteger("shared").value_or(0) + 4096;
  return llvm::formatv("{0:2}", *v).str();
}

INSTANTIATE_TEST_SUITE_P(
    Cache, DamagedEntry,
    ::testing::Values(
        Damage{"TruncatedPtx", "tiny.ptx",
               [](const std::string &s) { return s.substr(0, s.size() / 2); }},
        Damage{"FlippedPtx", "tiny.ptx",
               [](const std::string &s) {
                 std::string t = s;
                 t[t.size() / 2] ^= 1;
                 return t;
               }},
        Damage{"EmptyPtx", "tiny.ptx", [](const std::string &) { return ""; }},
        Damage{"TruncatedJson", "tiny.json",
               [](const std::string &s) { return s.substr(0, s.size() / 2); }},
        Damage{"GarbageJson", "tiny.json",
               [](const std::string &) { return "\x01\x02 not json"; }},
        Damage{"ForeignJson", "tiny.json",
               [](const std::string &) { return "{\"name\": \"tiny\"}"; }},
        Damage{"OtherVersion", "tiny.json",
               [](const std::string &s) {
                 return setKvarnField(s, "version", "0.0.0-other");
               }},
        Damage{"OtherBuild", "tiny.json",
               [](const std::string &s) {
                 return setKvarnField(s, "build_id", "0123");
               }},
        Damage{"OtherLLVM", "tiny.json",
               [](const std::string &s) {
                 return setKvarnField(s, "llvm_version", "17.0.0");
               }},
        Damage{"GarbageGroup", "__grp__tiny.json",
               [](const std::string &) { return "]["; }},
        Damage{"GroupWithoutMetadata", "__grp__tiny.json",
               [](const std::string &) { return "{\"child_paths\": {}}"; }},
        // Launch fields the checksum of the binaries did not cover.
        Damage{"LaunchFieldsEdited", "tiny.json", editLaunchFields},
        Damage{"NumWarpsEdited", "tiny.json",
               [](const std::string &s) {
                 llvm::Expected<llvm::json::Value> v = llvm::json::parse(s);
                 if (!v)
                   return std::string("garbage");
                 llvm::json::Object &m = *v->getAsObject();
                 m["num_warps"] = m.getInteger("num_warps").value_or(1) * 2;
                 return llvm::formatv("{0}", *v).str();
               }},
        Damage{"CtasPerSMEdited", "tiny.json",
               [](const std::string &s) {
                 return setKvarnField(s, "ctas_per_sm", 4);
               }},
        Damage{"CtasPerSMNotThePtxs", "tiny.json", resealedWithOtherCtasPerSM},
        Damage{"SignatureEdited", "tiny.json",
               [](const std::string &s) {
                 return setKvarnField(s, "signature",
                                      llvm::json::Array{"i64", "i64"});
               }},
        // An ABI that disagrees with the PTX's parameters, or whose grid
        // names a pointer.
        Damage{"AbiTypeNotThePtxs", "tiny.json",
               [](const std::string &s) {
                 return resealedWithAbi(s, "i32", "n");
               }},
        Damage{"AbiGridNamesAPointer", "tiny.json",
               [](const std::string &s) {
                 return resealedWithAbi(s, "*f32", "p");
               }},
        // Nesting deep enough to overflow a recursive parser's stack.
        Damage{"DeepMetadata", "tiny.json",
               [](const std::string &) { return std::string(200000, '['); }},
        Damage{"DeepGroup", "__grp__tiny.json",
               [](const std::string &) {
                 return "{\"child_paths\": " + std::string(200000, '{');
               }},
        Damage{"LongerThanItsSize", "tiny.ptx",
               [](const std::string &s) { return s + "// more\n"; }},
        Damage{"EditedSource", "tiny.kvt",
               [](const std::string &s) { return s + "// edited\n"; }}),
    [](const auto &info) { return std::string(info.param.name); });

TEST(KernelCache, RebuildsAnEntryWithADamagedCubin) {
  if (!cuda::findPtxas()) {
    kvarn::consumeError(cuda::findPtxas().takeError());
    GTEST_SKIP() << "no ptxas here, so no cubin";
  }
  TempDir dir;
  std::string entry;
  {
    TestCache cache(dir.path, /*ptxas=*/true);
    CacheResult r = cache.get(tiny());
    ASSERT_TRUE(r.artifacts && !r.artifacts->cubin.empty());
    entry = r.artifacts->directory;
  }
  std::string cubin = readFile(entry + "/tiny.cubin");
  writeFile(entry + "/tiny.cubin", cubin.substr(0, cubin.size() - 1));
  TestCache cache(dir.path, /*ptxas=*/true);
  CacheResult r = cache.get(tiny());
  EXPECT_EQ(r.outcome, CacheOutcome::Compiled);
  EXPECT_EQ(r.artifacts->cubin.size(), cubin.size());
  EXPECT_EQ(cache.warnings.size(), 1u);
}

TEST(KernelCache, AMissingFileOfAnEntryIsDamage) {
  TempDir dir;
  std::string entry;
  {
    TestCache cache(dir.path);
    entry = cache.get(tiny()).artifacts->directory;
  }
  llvm::sys::fs::remove(entry + "/tiny.ptx");
  TestCache cache(dir.path);
  EXPECT_EQ(cache.get(tiny()).outcome, CacheOutcome::Compiled);
  EXPECT_EQ(cache.warnings.size(), 1u);
  // An entry without its group file is not one yet: a silent miss.
  llvm::sys::fs::remove(entry + "/__grp__tiny.json");
  TestCache again(dir.path);
  EXPECT_EQ(again.get(tiny()).outcome, CacheOutcome::Compiled);
  EXPECT_TRUE(again.warnings.empty());
}

TEST(KernelCache, VerifyFindsDamage) {
  TempDir dir;
  std::string entry;
  {
    TestCache cache(dir.path);
    entry = cache.get(tiny()).artifacts->directory;
    cache.get(tiny(std::string(kTinySource) + "// two\n"));
  }
  kvarn::Expected<std::vector<DiskEntry>> entries =
      listDiskCache(dir.path, true);
  ASSERT_TRUE(bool(entries));
  ASSERT_EQ(entries->size(), 2u);
  for (const DiskEntry &e : *entries)
    EXPECT_EQ(e.problem, "") << e.key;
  // An edited source or IR file: verify and a lookup agree that the entry
  // is damaged, and the lookup's rebuild repairs it for verify too.
  for (const char *file : {"tiny.nvvm.mlir", "tiny.kvt"}) {
    writeFile(entry + "/" + file, "damaged");
    entries = listDiskCache(dir.path, true);
    ASSERT_TRUE(bool(entries));
    size_t bad = 0;
    for (const DiskEntry &e : *entries)
      bad += !e.problem.empty();
    EXPECT_EQ(bad, 1u) << file;
    TestCache cache(dir.path);
    EXPECT_EQ(cache.get(tiny()).outcome, CacheOutcome::Compiled) << file;
    EXPECT_EQ(cache.warnings.size(), 1u) << file;
    entries = listDiskCache(dir.path, true);
    ASSERT_TRUE(bool(entries));
    for (const DiskEntry &e : *entries)
      EXPECT_EQ(e.problem, "") << file;
  }

  kvarn::Expected<CacheRemoval> cleared = clearDiskCache(dir.path);
  ASSERT_TRUE(bool(cleared));
  EXPECT_EQ(cleared->removed, 2u);
  EXPECT_TRUE(cleared->failed.empty() && cleared->leftAlone.empty());
  entries = listDiskCache(dir.path, false);
  ASSERT_TRUE(bool(entries));
  EXPECT_TRUE(entries->empty());
}

//===----------------------------------------------------------------------===//
// Eviction
//===----------------------------------------------------------------------===//

void setLastUse(const std::string &entry, const std::string &name,
                time_t when) {
  struct utimbuf times = {when, when};
  ASSERT_EQ(::utime((entry + "/__grp__" + name + ".json").c_str(), &times), 0);
}

TEST(KernelCache, EvictsTheLeastRecentlyUsed) {
  TempDir dir;
  std::vector<std::string> entries;
  uint64_t entryBytes = 0;
  {
    TestCache cache(dir.path);
    for (int i = 0; i < 3; ++i)
      entries.push_back(
          cache.get(tiny(kTinySource + std::string("// v") + char('0' + i) +
                         "\n"))
              .artifacts->directory);
  }
  kvarn::Expected<std::vector<DiskEntry>> listed =
      listDiskCache(dir.path, false);
  ASSERT_TRUE(bool(listed));
  for (const DiskEntry &e : *listed)
    entryBytes = std::max(entryBytes, e.bytes);
  // Entry 1 is the oldest, then 0, then 2.
  time_t now = std::time(nullptr);
  setLastUse(entries[1], "tiny", now - 300);
  setLastUse(entries[0], "tiny", now - 200);
  setLastUse(entries[2], "tiny", now - 100);

  // Room for two: the oldest goes.
  kvarn::Expected<size_t> evicted =
      evictDiskCache(dir.path, 2 * entryBytes + 64);
  ASSERT_TRUE(bool(evicted));
  EXPECT_EQ(*evicted, 1u);
  EXPECT_FALSE(llvm::sys::fs::exists(entries[1]));
  EXPECT_TRUE(llvm::sys::fs::exists(entries[0]));
  EXPECT_TRUE(llvm::sys::fs::exists(entries[2]));

  // A hit makes an entry recent: entry 0 used now, so entry 2 goes next.
  {
    TestCache cache(dir.path);
    EXPECT_EQ(cache.get(tiny(kTinySource + std::string("// v0\n"))).outcome,
              CacheOutcome::DiskHit);
  }
  evicted = evictDiskCache(dir.path, entryBytes + 64);
  ASSERT_TRUE(bool(evicted));
  EXPECT_EQ(*evicted, 1u);
  EXPECT_TRUE(llvm::sys::fs::exists(entries[0]));
  EXPECT_FALSE(llvm::sys::fs::exists(entries[2]));
}

TEST(KernelCache, KeepsItsSizeCapWhenWriting) {
  TempDir dir;
  CacheOptions o;
  o.directory = dir.path;
  o.assembleWithPtxas = false;
  o.maxBytes = 1; // every write evicts all but the entry just written
  KernelCache cache(o);
  std::string last;
  for (int i = 0; i < 3; ++i) {
    kvarn::Expected<CacheResult> r = cache.getOrCompile(
        tiny(kTinySource + std::string("// w") + char('0' + i) + "\n"), sm90());
    ASSERT_TRUE(bool(r));
    last = r->artifacts->directory;
  }
  kvarn::Expected<std::vector<DiskEntry>> listed =
      listDiskCache(dir.path, false);
  ASSERT_TRUE(bool(listed));
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].directory, last);
  EXPECT_EQ(cache.stats().evicted, 2u);
}

//===----------------------------------------------------------------------===//
// Threads
//===----------------------------------------------------------------------===//

TEST(KernelCache, CompilesOnThreadsAndOncePerKernel) {
  TempDir dir;
  TestCache cache(dir.path);
  std::vector<KernelRequest> requests;
  for (int i = 0; i < 3; ++i)
    for (int copy = 0; copy < 2; ++copy) // every kernel asked for twice
      requests.push_back(
          tiny(kTinySource + std::string("// t") + char('0' + i) + "\n"));
  requests.push_back({"append", {}, "", ""});
  size_t calls = 0;
  std::vector<kvarn::Expected<CacheResult>> results =
      cache.cache->getOrCompileAll(requests, {sm90()}, 4, nullptr,
                                   [&](size_t, const CacheResult *r) {
                                     EXPECT_NE(r, nullptr);
                                     ++calls;
                                   });
  EXPECT_EQ(calls, requests.size());
  ASSERT_EQ(results.size(), requests.size());
  for (size_t i = 0; i < results.size(); ++i) {
    ASSERT_TRUE(bool(results[i])) << kvarn::toString(results[i].takeError());
    EXPECT_EQ(results[i]->artifacts->name, requests[i].kernel);
  }
  // Two threads asking for one kernel: one compiles, one waits and hits.
  EXPECT_EQ(cache.cache->stats().compiled, 4u);
  EXPECT_EQ(cache.cache->stats().diskHits + cache.cache->stats().memoryHits,
            3u);
}

// Several processes on one cache directory at once, as a host with one
// serving process per GPU has (issue 19): each asks for the same kernels,
// released together. Each entry's lock lets exactly one process compile it;
// the others wait and find it on disk; every entry checks out afterwards
// and no temporary is left.
TEST(KernelCache, ProcessesShareOneDirectory) {
  TempDir dir;
  constexpr int kProcesses = 6;
  std::vector<KernelRequest> requests = {
      tiny(kTinySource + std::string("// p0\n")),
      tiny(kTinySource + std::string("// p1\n")),
      {"append", {}, "", ""}};
  int go[2], report[2];
  ASSERT_EQ(::pipe(go), 0);
  ASSERT_EQ(::pipe(report), 0);
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      // The child: wait for the start, then one byte per request: 'C'
      // compiled, 'D' disk hit, 'M' memory hit, 'E' failed.
      ::close(go[1]);
      ::close(report[0]);
      char start;
      bool started = ::read(go[0], &start, 1) == 0; // the parent closed it
      TestCache cache(dir.path);
      // Child p starts at request p: the processes contend on every entry
      // at once, not one entry after another.
      std::string outcomes(requests.size(), '?');
      for (size_t k = 0; k < requests.size(); ++k) {
        size_t r = (size_t(p) + k) % requests.size();
        kvarn::Expected<CacheResult> result =
            cache.cache->getOrCompile(requests[r], sm90());
        if (!result) {
          kvarn::consumeError(result.takeError());
          outcomes[r] = 'E';
          continue;
        }
        outcomes[r] = result->outcome == CacheOutcome::Compiled  ? 'C'
                      : result->outcome == CacheOutcome::DiskHit ? 'D'
                                                                 : 'M';
      }
      bool wrote = ::write(report[1], outcomes.data(), outcomes.size()) ==
                   ssize_t(outcomes.size());
      ::_exit(started && wrote && cache.warnings.empty() ? 0 : 1);
    }
    children.push_back(pid);
  }
  ::close(go[0]);
  ::close(report[1]);
  ::close(go[1]); // every child starts now
  std::string all;
  char buffer[64];
  for (ssize_t n; (n = ::read(report[0], buffer, sizeof buffer)) > 0;)
    all.append(buffer, size_t(n));
  ::close(report[0]);
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "a child failed or warned (status " << status << ")";
  }
  // Writes of a few bytes to a pipe are atomic: one record per child.
  std::fprintf(stderr,
               "[ outcomes ] %s (each process's requests in request order)\n",
               all.c_str());
  ASSERT_EQ(all.size(), size_t(kProcesses) * requests.size()) << all;
  EXPECT_EQ(std::count(all.begin(), all.end(), 'E'), 0) << all;
  EXPECT_EQ(std::count(all.begin(), all.end(), 'C'), long(requests.size()))
      << "one compilation per kernel, whatever the order: " << all;
  for (size_t r = 0; r < requests.size(); ++r) {
    int compiled = 0;
    for (int p = 0; p < kProcesses; ++p)
      compiled += all[p * requests.size() + r] == 'C';
    EXPECT_EQ(compiled, 1) << requests[r].kernel << " " << r << ": " << all;
  }
  kvarn::Expected<std::vector<DiskEntry>> entries =
      listDiskCache(dir.path, /*verify=*/true);
  ASSERT_TRUE(bool(entries)) << kvarn::toString(entries.takeError());
  EXPECT_EQ(entries->size(), requests.size());
  for (const DiskEntry &e : *entries) {
    EXPECT_TRUE(e.complete) << e.directory;
    EXPECT_EQ(e.problem, "") << e.directory;
  }
  std::error_code ec;
  for (llvm::sys::fs::recursive_directory_iterator it(dir.path, ec), end;
       it != end && !ec; it.increment(ec))
    EXPECT_EQ(llvm::StringRef(it->path()).find(".tmp."), llvm::StringRef::npos)
        << it->path();
}

TEST(KernelCache, WorksWithoutADiskLevel) {
  CacheOptions o;
  o.directory = "";
  KernelCache cache(o);
  kvarn::Expected<CacheResult> r = cache.getOrCompile(tiny(), sm90());
  ASSERT_TRUE(bool(r));
  EXPECT_EQ(r->outcome, CacheOutcome::Compiled);
  EXPECT_EQ(r->artifacts->directory, "");
  kvarn::Expected<CacheResult> again = cache.getOrCompile(tiny(), sm90());
  ASSERT_TRUE(bool(again));
  EXPECT_EQ(again->outcome, CacheOutcome::MemoryHit);
}

// The memory level keys the dtype too: a bf16 kernel of the same source and
// shape is another kernel, in memory and on disk.
TEST(KernelCache, TheDtypeSelectsAnotherKernel) {
  TempDir dir;
  TestCache cache(dir.path);
  KernelRequest f16 = tiny(
      "kernel tiny(p: ptr<ACT>, n: i32) grid(n) { p[program_id(0)] = ACT(1.5); }\n");
  KernelRequest bf16 = f16;
  bf16.spec.dtype = DType::BF16;
  CacheResult a = cache.get(f16);
  CacheResult b = cache.get(bf16);
  ASSERT_TRUE(a.artifacts && b.artifacts);
  EXPECT_EQ(b.outcome, CacheOutcome::Compiled);
  EXPECT_NE(a.artifacts->key, b.artifacts->key);
  // 1.5 is 0x3E00 in fp16 and 0x3FC0 in bf16.
  EXPECT_NE(a.artifacts->ptx.find(", 0x3E00;"),
            std::string::npos) << a.artifacts->ptx;
  EXPECT_NE(b.artifacts->ptx.find(", 0x3FC0;"),
            std::string::npos) << b.artifacts->ptx;
  EXPECT_EQ(cache.get(bf16).outcome, CacheOutcome::MemoryHit);
  EXPECT_NE(b.artifacts->metadataJson.find("\"dtype\": \"bf16\""),
            std::string::npos);
}

TEST(KernelCache, ReportsCompileErrors) {
  TempDir dir;
  TestCache cache(dir.path);
  kvarn::Expected<CacheResult> r =
      cache.cache->getOrCompile(tiny("kernel tiny(p: ptr<f32>) {"), sm90());
  ASSERT_FALSE(bool(r));
  std::string message;
  EXPECT_EQ(kvarn::consumeError(r.takeError(), message), KVARN_ERROR_COMPILE);
  // Where: the file, line 1.
  EXPECT_NE(message.find("tiny.kvt"), std::string::npos) << message;
  EXPECT_NE(message.find(":1:"), std::string::npos) << message;
}

//===----------------------------------------------------------------------===//
// Hostile files: links, FIFOs, devices, obstructions
//===----------------------------------------------------------------------===//

/// Runs `body` on a thread and fails (instead of hanging the suite) if it
/// has not returned within `seconds`; the thread is left behind then.
/// Runs `body` on a thread and waits for it up to `seconds`. A body still
/// running then is a hang: the process ends with a message at once, since
/// the thread still uses the caller's stack and cannot be stopped.
void finishesWithin(double seconds, std::function<void()> body,
                    const std::string &what) {
  std::promise<void> done;
  std::future<void> f = done.get_future();
  std::thread worker([&] {
    body();
    done.set_value();
  });
  if (f.wait_for(std::chrono::duration<double>(seconds)) !=
      std::future_status::ready) {
    std::fprintf(stderr, "FAILED: %s: still blocked after %.0f s\n",
                 what.c_str(), seconds);
    std::fflush(stderr);
    std::_Exit(1);
  }
  worker.join();
}

std::string compiledEntry(const std::string &root) {
  TestCache cache(root);
  CacheResult r = cache.get(tiny());
  return r.artifacts ? r.artifacts->directory : "";
}

// A FIFO or a link to a device in place of any file of an entry: damage,
// reported without blocking in open() or reading without end.
TEST(KernelCache, AFifoOrADeviceInAnEntryIsDamageNotAHang) {
  for (const char *file : {"tiny.ptx", "tiny.json", "__grp__tiny.json",
                           "tiny.kvt", "tiny.lock"})
    for (const char *kind : {"fifo", "/dev/zero", "/dev/urandom"}) {
      TempDir dir;
      std::string entry = compiledEntry(dir.path);
      ASSERT_FALSE(entry.empty());
      std::string path = entry + "/" + file;
      ASSERT_EQ(::unlink(path.c_str()), 0);
      if (std::string(kind) == "fifo")
        ASSERT_EQ(::mkfifo(path.c_str(), 0644), 0);
      else
        ASSERT_EQ(::symlink(kind, path.c_str()), 0);
      std::vector<std::string> warnings;
      CacheOutcome outcome = CacheOutcome::DiskHit;
      size_t unusable = 0;
      finishesWithin(
          60,
          [&] {
            kvarn::Expected<std::vector<DiskEntry>> listed =
                listDiskCache(dir.path, true);
            if (listed)
              for (const DiskEntry &e : *listed)
                unusable += !e.problem.empty();
            else
              kvarn::consumeError(listed.takeError());
            TestCache cache(dir.path);
            outcome = cache.get(tiny()).outcome;
            warnings = cache.warnings;
          },
          std::string(file) + " as " + kind);
      EXPECT_EQ(unusable, 1u) << file << " as " << kind;
      // A lookup does not need the lock: a hit. The rest is damage.
      bool lock = std::string(file) == "tiny.lock";
      EXPECT_EQ(outcome, lock ? CacheOutcome::DiskHit : CacheOutcome::Compiled)
          << file << " as " << kind;
      EXPECT_EQ(warnings.size(), lock ? 0u : 1u) << file << " as " << kind;
    }
}

// clear and eviction remove the cache's own files, never through a link and
// never a directory that is not an entry.
TEST(KernelCache, ClearAndEvictionDeleteOnlyTheirOwnFiles) {
  for (bool evict : {false, true}) {
    TempDir dir, outside;
    std::string precious = outside.path + "/precious";
    writeFile(precious, "keep me");
    ASSERT_EQ(::mkdir((outside.path + "/sub").c_str(), 0755), 0);
    writeFile(outside.path + "/sub/tiny.ptx", "keep me too");
    std::string entry = compiledEntry(dir.path);
    ASSERT_FALSE(entry.empty());
    // A link named like an entry, to a directory of kvarn-like names.
    std::string linkKey(52, 'A');
    ASSERT_EQ(::symlink((outside.path + "/sub").c_str(),
                        (dir.path + "/" + linkKey).c_str()), 0);
    // Links inside an entry named like the cache's files.
    ASSERT_EQ(::symlink(precious.c_str(),
                        (entry + "/tiny.cubin.tmp.1.2").c_str()), 0);
    // A key-named directory holding no kvarn files.
    std::string foreignDir = dir.path + "/" + std::string(52, 'B');
    ASSERT_EQ(::mkdir(foreignDir.c_str(), 0755), 0);
    writeFile(foreignDir + "/notes.txt", "mine");

    size_t removed = 0;
    if (evict) {
      kvarn::Expected<size_t> n = evictDiskCache(dir.path, 1);
      ASSERT_TRUE(bool(n));
      removed = *n;
    } else {
      kvarn::Expected<CacheRemoval> r = clearDiskCache(dir.path);
      ASSERT_TRUE(bool(r));
      removed = r->removed;
      EXPECT_TRUE(r->failed.empty());
      EXPECT_EQ(r->leftAlone.size(), 2u); // the link, the foreign directory
    }
    EXPECT_EQ(removed, 1u) << (evict ? "evict" : "clear");
    EXPECT_FALSE(llvm::sys::fs::exists(entry));
    EXPECT_EQ(readFile(precious), "keep me");
    EXPECT_EQ(readFile(outside.path + "/sub/tiny.ptx"), "keep me too");
    EXPECT_EQ(readFile(foreignDir + "/notes.txt"), "mine");
    EXPECT_TRUE(llvm::sys::fs::is_symlink_file(dir.path + "/" + linkKey));
  }
}

// An entry with one foreign file: its kvarn files go, the foreign file and
// so the directory stay.
TEST(KernelCache, RemovingAnEntryKeepsWhatIsNotKvarns) {
  TempDir dir;
  std::string entry = compiledEntry(dir.path);
  writeFile(entry + "/README", "someone's");
  CacheRemoval r =
      removeDiskEntry(dir.path, llvm::sys::path::filename(entry));
  EXPECT_EQ(r.removed, 1u);
  EXPECT_TRUE(r.failed.empty());
  ASSERT_EQ(r.leftAlone.size(), 1u);
  EXPECT_NE(r.leftAlone[0].find("README"), std::string::npos) << r.leftAlone[0];
  EXPECT_EQ(readFile(entry + "/README"), "someone's");
  EXPECT_FALSE(llvm::sys::fs::exists(entry + "/tiny.ptx"));
  EXPECT_FALSE(llvm::sys::fs::exists(entry + "/__grp__tiny.json"));
}

// Something in an entry's place: the kernel is compiled in memory with one
// warning, nothing is written through it, and verify counts it unusable.
TEST(KernelCache, AnObstructionMeansCompilingInMemory) {
  kvarn::Expected<CacheKey> key = computeCacheKey(tiny(), sm90());
  ASSERT_TRUE(bool(key));
  struct Case {
    const char *name;
    std::function<void(const std::string &root, const std::string &entry)> make;
  };
  std::vector<Case> cases = {
      {"a file", [](const std::string &, const std::string &entry) {
         writeFile(entry, "not a directory");
       }},
      {"a lock that is a directory",
       [](const std::string &, const std::string &entry) {
         ASSERT_EQ(::mkdir(entry.c_str(), 0755), 0);
         ASSERT_EQ(::mkdir((entry + "/tiny.lock").c_str(), 0755), 0);
       }},
      {"a link to another entry",
       [](const std::string &root, const std::string &entry) {
         std::string other = root + "/" + std::string(52, 'C');
         ASSERT_EQ(::mkdir(other.c_str(), 0755), 0);
         writeFile(other + "/tiny.ptx", "another entry's");
         ASSERT_EQ(::symlink(other.c_str(), entry.c_str()), 0);
       }},
  };
  for (const Case &c : cases) {
    TempDir dir;
    std::string entry = dir.path + "/" + key->directory;
    c.make(dir.path, entry);
    TestCache cache(dir.path);
    kvarn::Expected<CacheResult> r = cache.cache->getOrCompile(tiny(), sm90());
    ASSERT_TRUE(bool(r)) << c.name << ": " << kvarn::toString(r.takeError());
    EXPECT_EQ(r->outcome, CacheOutcome::Compiled) << c.name;
    EXPECT_EQ(r->artifacts->directory, "") << c.name;
    EXPECT_EQ(cache.warnings.size(), 1u) << c.name;
    // Again in the same process: still one warning.
    ASSERT_TRUE(bool(cache.cache->getOrCompile(tiny(), sm90())));
    EXPECT_EQ(cache.warnings.size(), 1u) << c.name;
    kvarn::Expected<std::vector<DiskEntry>> listed =
        listDiskCache(dir.path, true);
    ASSERT_TRUE(bool(listed));
    size_t unusable = 0;
    for (const DiskEntry &e : *listed)
      unusable += e.key == key->directory && !e.problem.empty();
    EXPECT_EQ(unusable, 1u) << c.name;
    if (std::string(c.name) == "a link to another entry")
      EXPECT_EQ(readFile(dir.path + "/" + std::string(52, 'C') + "/tiny.ptx"),
                "another entry's");
  }
}

// A metadata file reformatted without a change of value still checks out:
// the checksum covers values, not the text's layout.
TEST(KernelCache, TheMetadataChecksumCoversValuesNotLayout) {
  TempDir dir;
  std::string entry = compiledEntry(dir.path);
  llvm::Expected<llvm::json::Value> v =
      llvm::json::parse(readFile(entry + "/tiny.json"));
  ASSERT_TRUE(bool(v));
  writeFile(entry + "/tiny.json", llvm::formatv("{0}", *v).str());
  TestCache cache(dir.path);
  EXPECT_EQ(cache.get(tiny()).outcome, CacheOutcome::DiskHit);
  EXPECT_TRUE(cache.warnings.empty());
}

TEST(WarmShapes, RefuseDeepNestingAndTakeANumericArch) {
  kvarn::Expected<std::vector<WarmShape>> deep =
      parseWarmShapes(std::string(200000, '['), "deep.json", "sm_90");
  ASSERT_FALSE(bool(deep));
  std::string message = kvarn::toString(deep.takeError());
  EXPECT_NE(message.find("deep.json: not JSON: nested deeper than"),
            std::string::npos)
      << message;
  kvarn::Expected<std::vector<WarmShape>> shapes = parseWarmShapes(
      R"({"arch": 80, "shapes": [{"head_dim": 64, "kernels": ["append"]},
          {"head_dim": 64, "kernels": ["append"], "arch": 90}]})",
      "s.json", "sm_90");
  ASSERT_TRUE(bool(shapes)) << kvarn::toString(shapes.takeError());
  ASSERT_EQ(shapes->size(), 2u);
  EXPECT_EQ((*shapes)[0].chip, "sm_80");
  EXPECT_EQ((*shapes)[1].chip, "sm_90");
  // A file that repeats itself does not turn into millions of requests.
  std::string many = R"([{"head_dim": 64, "gqa": [1)";
  for (int i = 0; i < 20000; ++i)
    many += ",1";
  many += "]}]";
  kvarn::Expected<std::vector<WarmShape>> tooMany =
      parseWarmShapes(many, "many.json", "sm_90");
  ASSERT_FALSE(bool(tooMany));
  EXPECT_NE(kvarn::toString(tooMany.takeError())
                .find("shapes[0]: more than 100000 kernels in the file"),
            std::string::npos);
  kvarn::Expected<std::vector<WarmShape>> bad =
      parseWarmShapes(R"({"arch": true, "shapes": []})", "b.json", "sm_90");
  ASSERT_FALSE(bool(bad));
  EXPECT_NE(kvarn::toString(bad.takeError()).find("'arch' must be"),
            std::string::npos);
}

TEST(FileIO, ReadsRegularFilesWithinTheirBoundOnly) {
  TempDir dir;
  std::string file = dir.path + "/f";
  writeFile(file, "0123456789");
  kvarn::Expected<std::string> whole = readRegularFile(file, ReadOptions{10});
  ASSERT_TRUE(bool(whole)) << kvarn::toString(whole.takeError());
  EXPECT_EQ(*whole, "0123456789");
  kvarn::Expected<std::string> over = readRegularFile(file, ReadOptions{9});
  ASSERT_FALSE(bool(over));
  std::string message;
  EXPECT_EQ(kvarn::consumeError(over.takeError(), message),
            KVARN_ERROR_INVALID_ARGUMENT);
  EXPECT_NE(message.find("larger than 9 bytes"), std::string::npos) << message;
  // stat says 0 bytes; the text is read whole.
  kvarn::Expected<std::string> proc =
      readRegularFile("/proc/self/status", ReadOptions{1 << 20});
  ASSERT_TRUE(bool(proc)) << kvarn::toString(proc.takeError());
  EXPECT_NE(proc->find("Pid:"), std::string::npos);
  ASSERT_EQ(::symlink(file.c_str(), (dir.path + "/link").c_str()), 0);
  EXPECT_TRUE(bool(readRegularFile(dir.path + "/link", ReadOptions{10})));
  kvarn::Expected<std::string> link =
      readRegularFile(dir.path + "/link", ReadOptions{10, /*noFollow=*/true});
  ASSERT_FALSE(bool(link));
  EXPECT_NE(kvarn::toString(link.takeError()).find("a symbolic link"),
            std::string::npos);
}

TEST(FileIO, CountsNestingOutsideStringsOnly) {
  EXPECT_EQ(jsonNestingDepth(R"({"a": [[1], {"b": "[[[[{{"}]})", 100), 3u);
  EXPECT_EQ(jsonNestingDepth(R"(["\"[[[", "\\", [0]])", 100), 2u);
  EXPECT_EQ(jsonNestingDepth(std::string(1000, '['), 10), 11u);
  kvarn::Expected<nlohmann::json> deepest =
      parseJsonDocument(std::string(64, '[') + std::string(64, ']'));
  EXPECT_TRUE(bool(deepest));
  if (!deepest)
    kvarn::consumeError(deepest.takeError());
  kvarn::Expected<nlohmann::json> deep =
      parseJsonDocument(std::string(65, '[') + std::string(65, ']'));
  ASSERT_FALSE(bool(deep));
  EXPECT_NE(kvarn::toString(deep.takeError()).find("nested deeper than 64"),
            std::string::npos);
}

// Temporaries left by a crashed process whose pid this one has (as links,
// to make it worse): replaced, not followed, and the entry still written.
// (CTest runs each test in its own process, so the temporaries' counter
// starts at 0 here.)
TEST(KernelCache, StaleTemporariesOfThisPidAreReplaced) {
  TempDir dir, outside;
  kvarn::Expected<CacheKey> key = computeCacheKey(tiny(), sm90());
  ASSERT_TRUE(bool(key));
  std::string entry = dir.path + "/" + key->directory;
  ASSERT_EQ(::mkdir(entry.c_str(), 0755), 0);
  std::string victim = outside.path + "/victim";
  writeFile(victim, "keep me");
  for (const char *file :
       {"tiny.kvt", "tiny.kvt.mlir", "tiny.kvgpu.mlir", "tiny.nvvm.mlir",
        "tiny.llir", "tiny.ptx", "tiny.json", "__grp__tiny.json"})
    for (int n = 0; n < 64; ++n) {
      std::string temp = entry + "/" + file + ".tmp." +
                         std::to_string(::getpid()) + "." + std::to_string(n);
      ASSERT_EQ(::symlink(victim.c_str(), temp.c_str()), 0);
    }
  TestCache cache(dir.path);
  CacheResult r = cache.get(tiny());
  ASSERT_TRUE(r.artifacts);
  EXPECT_EQ(r.artifacts->directory, entry);
  EXPECT_TRUE(cache.warnings.empty()) << cache.warnings[0];
  EXPECT_EQ(readFile(victim), "keep me");
  TestCache next(dir.path);
  EXPECT_EQ(next.get(tiny()).outcome, CacheOutcome::DiskHit);
}

} // namespace
