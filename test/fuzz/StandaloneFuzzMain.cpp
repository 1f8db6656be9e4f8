//===- StandaloneFuzzMain.cpp - run a libFuzzer target without libFuzzer --===//
//
// For CI, where the compiler is gcc: runs LLVMFuzzerTestOneInput on each
// seed (files and directories given on the command line), then on inputs
// mutated from them by a fixed-seed generator, until --runs inputs or
// --max-seconds have passed. The same seed gives the same inputs, so a
// failure reproduces; each input is written first to --crash-file (default
// ./crash-input), so after a crash it holds the input, which `--runs 0 F`
// replays (seeds always run).
//
//   kvarn-{dsl,cache}-fuzz-ci [--runs N] [--max-seconds S] [--seed K]
//                             [--crash-file F] [SEED_FILE_OR_DIR...]
//
//===----------------------------------------------------------------------===//

#include "kvarn/Support/FileIO.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
// Optional in a target, as with libFuzzer.
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int *argc,
                                                          char ***argv);

namespace {

/// Fragments that matter to JSON readers: structure, escapes, numbers at
/// the edges of their types, the fields the cache reads, deep nesting.
const char *const kTokens[] = {
    "[", "]", "{", "}", "\"", "\\", ",", ":", "\\u0000", "\\ud800", "null",
    "true", "false", "-1", "0", "1e309", "-9223372036854775808",
    "9223372036854775808", "18446744073709551616", "4294967296", "1.5",
    "\"num_warps\": ", "\"shared\": ", "\"programs_per_cta\": ",
    "\"ctas_per_sm\": ",
    "\"kvarn\": {", "\"files\": {", "\"bytes\": ", "\"xxh3\": ",
    "\"tiny.ptx\"", "\"../tiny.ptx\"", "\"/dev/zero\"", "\"child_paths\": {",
    "\"tiny.json\": ", "\"shapes\": [", "\"head_dim\": ", "\"gqa\": [",
    "\"arch\": ", "\"kernels\": [\"append\"]", "\"dtype\": \"bf16\"",
    "\"format\": 2", "\xff\xfe", "\n"};

std::string mutate(std::mt19937_64 &rng, const std::vector<std::string> &seeds) {
  auto pick = [&](size_t n) { return n ? size_t(rng() % n) : 0; };
  std::string s = seeds[pick(seeds.size())];
  int steps = 1 + int(rng() % 4);
  for (int i = 0; i < steps; ++i) {
    size_t at = pick(s.size() + 1);
    switch (rng() % 8) {
    case 0: // flip a bit
      if (!s.empty())
        s[pick(s.size())] ^= char(1 << (rng() % 8));
      break;
    case 1: // a random byte
      s.insert(s.begin() + at, char(rng() % 256));
      break;
    case 2: { // delete a span
      size_t n = pick(std::min<size_t>(s.size() - std::min(at, s.size()), 64) + 1);
      s.erase(std::min(at, s.size()), n);
      break;
    }
    case 3: // a token
    case 4:
      s.insert(at, kTokens[pick(std::size(kTokens))]);
      break;
    case 5: { // duplicate a span
      if (s.empty())
        break;
      size_t from = pick(s.size());
      size_t n = pick(std::min<size_t>(s.size() - from, 256) + 1);
      s.insert(at, s.substr(from, n));
      break;
    }
    case 6: { // splice another seed's tail
      const std::string &other = seeds[pick(seeds.size())];
      s = s.substr(0, at) + other.substr(pick(other.size() + 1));
      break;
    }
    case 7: { // deep nesting, now and then very deep; often where the
              // text starts (after a target's leading selector byte)
      size_t where = rng() % 2 ? std::min<size_t>(1, s.size()) : at;
      s.insert(where, std::string(rng() % 8 == 0 ? 200000 : 100,
                                  rng() % 2 ? '[' : '{'));
      break;
    }
    }
  }
  return s;
}

void addSeed(const std::string &path, std::vector<std::string> &seeds) {
  if (llvm::sys::fs::is_directory(path)) {
    std::error_code ec;
    for (llvm::sys::fs::directory_iterator it(path, ec), end; it != end && !ec;
         it.increment(ec))
      addSeed(it->path(), seeds);
    return;
  }
  kvarn::Expected<std::string> text =
      kvarn::readRegularFile(path, kvarn::ReadOptions{1 << 20});
  if (text)
    seeds.push_back(std::move(*text));
  else
    kvarn::consumeError(text.takeError());
}
} // namespace

int main(int argc, char **argv) {
  uint64_t runs = 1000, seed = 1;
  double maxSeconds = 60;
  std::string crashFile = "crash-input";
  std::vector<std::string> seeds;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--runs")
      runs = std::strtoull(value().c_str(), nullptr, 10);
    else if (a == "--max-seconds")
      maxSeconds = std::strtod(value().c_str(), nullptr);
    else if (a == "--seed")
      seed = std::strtoull(value().c_str(), nullptr, 10);
    else if (a == "--crash-file")
      crashFile = value();
    else
      addSeed(a, seeds);
  }
  if (seeds.empty())
    seeds.push_back("");
  if (LLVMFuzzerInitialize)
    LLVMFuzzerInitialize(&argc, &argv);
  std::mt19937_64 rng(seed);
  auto start = std::chrono::steady_clock::now();
  uint64_t done = 0;
  auto run = [&](const std::string &input) {
    // Saved before the run: a crash leaves the input behind.
    if (FILE *f = std::fopen(crashFile.c_str(), "wb")) {
      std::fwrite(input.data(), 1, input.size(), f);
      std::fclose(f);
    }
    LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t *>(input.data()),
                           input.size());
    ++done;
  };
  for (const std::string &s : seeds)
    run(s);
  while (done < runs &&
         std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
                 .count() < maxSeconds)
    run(mutate(rng, seeds));
  std::remove(crashFile.c_str());
  std::printf("%llu inputs in %.1f s, seed %llu: no crash\n",
              (unsigned long long)done,
              std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                            start)
                  .count(),
              (unsigned long long)seed);
  return 0;
}
