//===- CacheFuzzer.cpp - fuzz target for the kernel cache's readers -------===//
//
// Each input is one file the cache reads from disk or a user: its first
// byte picks which, the rest is the file.
//   0: <name>.json, the metadata of a real entry (every other file intact)
//   1: the same, with its checksum fixed, so the checks past it see it
//   2: __grp__<name>.json, the group file
//   3: a `cache warm --shapes` file
//   4: the real metadata with bytes [at, at + n) replaced by the rest
//      (at: bytes 1-2, n: byte 3), its checksum fixed
//   5: the same for the real group file
// Any input may be refused; none may crash, hang or read past a bound, and
// an entry read as good must carry launch fields a launch can use. Built
// with libFuzzer (-DKVARN_BUILD_FUZZERS=ON), or with StandaloneFuzzMain.cpp
// for a fixed budget in CI (test/fuzz/CMakeLists.txt).
//
//===----------------------------------------------------------------------===//

#include "DiskCache.h"

#include "kvarn/Codegen/LaunchPolicy.h"
#include "kvarn/Runtime/KernelCache.h"
#include "kvarn/Support/FileIO.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

using namespace kvarn;

namespace {
struct Fixture {
  std::string root, entry, metadata, group;
};

Fixture *fixture = nullptr;

void writeFile(const std::string &path, llvm::StringRef text) {
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec);
  if (ec) {
    std::fprintf(stderr, "cannot write %s\n", path.c_str());
    std::abort();
  }
  os << text;
}

std::string readFile(const std::string &path) {
  kvarn::Expected<std::string> text =
      readRegularFile(path, ReadOptions{limits::kMetadataBytes});
  if (!text) {
    std::fprintf(stderr, "%s\n", kvarn::toString(text.takeError()).c_str());
    std::abort();
  }
  return *text;
}

/// A real entry of a one-line kernel, made once.
Fixture *makeFixture() {
  auto *f = new Fixture;
  llvm::SmallString<128> dir;
  if (llvm::sys::fs::createUniqueDirectory("kvarn-cache-fuzz", dir))
    std::abort();
  f->root = dir.str().str();
  CacheOptions o;
  o.directory = f->root;
  o.assembleWithPtxas = false;
  o.maxBytes = 0;
  KernelCache cache(o);
  CompileOptions c;
  c.target.chip = "sm_90";
  kvarn::Expected<CacheResult> r = cache.getOrCompile(
      {"tiny",
       {},
       "kernel tiny(p: ptr<f32>, n: i32) grid(n) { p[program_id(0)] = 1.0; }\n",
       "tiny.kvt"},
      c);
  if (!r) {
    std::fprintf(stderr, "%s\n", kvarn::toString(r.takeError()).c_str());
    std::abort();
  }
  f->entry = r->artifacts->directory;
  f->metadata = readFile(f->entry + "/tiny.json");
  f->group = readFile(f->entry + "/__grp__tiny.json");
  return f;
}

/// How far inputs got, printed at exit with KVARN_FUZZ_STATS=1: a target
/// whose inputs all stop at the first check tests little.
struct Stats {
  unsigned long ok = 0, bad = 0, missing = 0, shapesOk = 0, shapesBad = 0;
  ~Stats() {
    if (std::getenv("KVARN_FUZZ_STATS"))
      std::fprintf(stderr,
                   "entries: %lu good, %lu bad, %lu missing; shapes: %lu "
                   "good, %lu refused\n",
                   ok, bad, missing, shapesOk, shapesBad);
  }
} stats;

void check(bool ok, const char *what) {
  if (!ok) {
    std::fprintf(stderr, "cache fuzzer: %s\n", what);
    std::abort();
  }
}
} // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  if (!fixture)
    fixture = makeFixture();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!fixture)
    fixture = makeFixture();
  if (size == 0)
    return 0;
  int mode = data[0] % 6;
  std::string text(reinterpret_cast<const char *>(data) + 1, size - 1);
  if (mode >= 4) {
    // An edit of the real file, so the fuzzer starts from a good entry.
    if (size < 4)
      return 0;
    const std::string &real = mode == 4 ? fixture->metadata : fixture->group;
    size_t at = (size_t(data[1]) | size_t(data[2]) << 8) % (real.size() + 1);
    size_t n = std::min<size_t>(data[3], real.size() - at);
    text = real.substr(0, at) + text.substr(3) + real.substr(at + n);
    mode = mode == 4 ? 1 : 2;
  }

  if (mode == 3) {
    kvarn::Expected<std::vector<WarmShape>> shapes =
        parseWarmShapes(text, "fuzz.json", "sm_90");
    if (shapes) {
      ++stats.shapesOk;
      for (const WarmShape &s : *shapes)
        check(!s.chip.empty() && !s.request.kernel.empty(), "empty shape");
    } else {
      ++stats.shapesBad;
      kvarn::consumeError(shapes.takeError());
    }
    return 0;
  }

  std::string metadataPath = fixture->entry + "/tiny.json";
  std::string groupPath = fixture->entry + "/__grp__tiny.json";
  if (mode == 1) {
    // Sealed: what a tool that rewrites the metadata consistently makes.
    kvarn::Expected<nlohmann::json> v = parseJsonDocument(text);
    if (v && v->is_object() && v->contains("kvarn")) {
      cache::sealMetadata(*v);
      text = v->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    } else if (!v) {
      kvarn::consumeError(v.takeError());
    }
  }
  writeFile(mode == 2 ? groupPath : metadataPath, text);

  cache::EntryRead r = cache::readEntry(fixture->entry, "tiny", nullptr);
  ++(r.status == cache::EntryRead::Ok    ? stats.ok
     : r.status == cache::EntryRead::Bad ? stats.bad
                                         : stats.missing);
  if (r.status == cache::EntryRead::Ok) {
    const KernelArtifacts &a = r.artifacts;
    check(a.numWarps >= 1 && a.numWarps <= 32, "num_warps out of range");
    check(kvarn::threadsPerProgram(a.numWarps, a.programsPerCta) > 0,
          "programs_per_cta does not divide the CTA");
    check(a.sharedBytes >= 0 && a.sharedBytes <= (1 << 20),
          "shared out of range");
    check(a.ctasPerSM >= 1 && a.ctasPerSM <= 64, "ctas_per_sm out of range");
    check(!a.ptx.empty() && !a.chip.empty(), "no PTX or chip");
  } else {
    check(r.status == cache::EntryRead::Missing || !r.problem.empty(),
          "a bad entry without a reason");
  }
  kvarn::Expected<std::vector<DiskEntry>> listed =
      listDiskCache(fixture->root, true);
  if (listed)
    check(listed->size() == 1, "the entry went missing from the listing");
  else
    kvarn::consumeError(listed.takeError());

  writeFile(metadataPath, fixture->metadata);
  writeFile(groupPath, fixture->group);
  return 0;
}
