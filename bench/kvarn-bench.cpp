//===- kvarn-bench.cpp - kernel timings on the GPU ------------------------===//
//
// Times the generated kernels with CUDA events (warm-up, then the median of
// many launches) on fresh data larger than L2, next to the device-to-device
// copy bandwidth measured in the same run. Prints a table; --json FILE writes
// the figures. A benchmark, not a test: it asserts nothing.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Codegen/KernelCompiler.h"
#include "kvarn/Codegen/LaunchPolicy.h"
#include "kvarn/Layout/MlaRecordLayout.h"
#include "kvarn/Layout/Preset.h"
#include "kvarn/Layout/RecordLayout.h"
#include "kvarn/Runtime/Context.h"
#include "kvarn/Runtime/DecodeSplit.h"
#include "kvarn/Runtime/KernelCache.h"
#include "kvarn/Runtime/Module.h"
#include "kvarn/Support/Error.h"
#include "kvarn/Support/Half.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <random>

using namespace kvarn;
using namespace kvarn::cuda;

namespace {

struct Row {
  std::string what;
  double micros = 0;
  double gbPerSecond = 0; // over the bytes the kernel must move
  std::string note;
  llvm::json::Object extra; // more fields for --json
};

[[noreturn]] void die(kvarn::Error err) {
  std::string message;
  kvarn::consumeError(std::move(err), message);
  llvm::errs() << "kvarn-bench: error: " << message << "\n";
  std::exit(1);
}

template <typename T> T check(kvarn::Expected<T> v) {
  if (!v)
    die(v.takeError());
  return std::move(*v);
}

void check(kvarn::Error err) {
  if (err)
    die(std::move(err));
}

struct Bench {
  Context ctx;
  Stream stream;
  Event start, stop;
  std::mt19937_64 rng{12345};
  /// Decode rows keep each request's sink (and a partial tail) fp16 in the
  /// pool, as serving does; --no-pool-blocks makes every block a record
  /// (what the pool blocks cost, by difference).
  bool poolBlocks = true;

  DeviceBuffer buffer(size_t bytes) {
    return check(DeviceBuffer::allocate(ctx, std::max<size_t>(bytes, 1)));
  }
  template <typename T> DeviceBuffer upload(const std::vector<T> &v) {
    DeviceBuffer b = buffer(v.size() * sizeof(T));
    check(b.upload(v.data(), v.size() * sizeof(T)));
    return b;
  }
  DeviceBuffer randomHalves(size_t n) {
    std::normal_distribution<float> normal;
    std::vector<uint16_t> h(n);
    for (uint16_t &x : h)
      x = floatToHalf(normal(rng));
    return upload(h);
  }

  /// Median microseconds of `launch` over `reps` timed runs after warm-up.
  /// The median over `reps` samples of the time per launch; a sample is
  /// `perSample` launches back to back between two events. With one launch
  /// a sample the host's launch latency is inside it (the stream is idle
  /// when the start event is taken), which weighs on kernels of a few us.
  double time(const std::function<void()> &launch, int reps = 30,
              int perSample = 1) {
    for (int i = 0; i < 3; ++i)
      launch();
    check(stream.synchronize());
    std::vector<double> us;
    for (int i = 0; i < reps; ++i) {
      check(start.record(stream.handle()));
      for (int j = 0; j < perSample; ++j)
        launch();
      check(stop.record(stream.handle()));
      check(stop.synchronize());
      us.push_back(1000.0 * check(Event::elapsedMilliseconds(start, stop)) /
                   perSample);
    }
    std::sort(us.begin(), us.end());
    return us[us.size() / 2];
  }

  /// Median microseconds of one decode: `single` with first[i] (splits ==
  /// 1) or `split` then `combine` with first[i] and second[i], each launch
  /// taking the next set i of arguments (caches cycled past L2);
  /// `perSample` decodes back to back a sample (see time()).
  double timeDecode(const LoadedKernel &single, const LoadedKernel &split,
                    const LoadedKernel &combine, std::vector<KernelArgs> &first,
                    std::vector<KernelArgs> &second, int splits,
                    int perSample = 1) {
    size_t next = 0;
    return time(
        [&] {
          CUstream s = stream.handle();
          if (splits == 1) {
            check(single.launch(first[next], s));
          } else {
            check(split.launch(first[next], s));
            check(combine.launch(second[next], s));
          }
          next = (next + 1) % first.size();
        },
        20, perSample);
  }

  /// Through the kernel cache; it keeps the kernel loaded.
  const LoadedKernel &load(const std::string &name,
                           const dsl::Specialization &spec) {
    CompileOptions options;
    options.numWarps = numWarps;
    options.minCtasPerSM = minCtasPerSM;
    options.warpStates = warpStates;
    options.pipelineCopies = pipelineCopies;
    return *check(cache->load({name, spec, "", ""}, options, ctx));
  }
  int numWarps = 0;     // 0: the compiler's choice
  int minCtasPerSM = 0; // 0: the compiler's choice
  bool warpStates = false;
  bool pipelineCopies = false;
  int splits = 0;       // > 0: the one split count decode rows time
  /// Run only the rows whose name contains one of these (all when empty).
  std::vector<std::string> only;
  bool wants(const std::string &row) const {
    return only.empty() || llvm::any_of(only, [&](const std::string &part) {
             return row.find(part) != std::string::npos;
           });
  }
  std::unique_ptr<KernelCache> cache = std::make_unique<KernelCache>();
};

/// One decode row of issue 14's table.
struct DecodePoint {
  int hq, hk, d, batch, context;
  std::string preset = "kvarn_k4v2_g128";
  /// A batch of mixed lengths: the first `longRequests` requests have
  /// `context` tokens, the others `shortContext` (0: every request
  /// `context`). The split count is the deployment's (the longest context).
  int longRequests = 0, shortContext = 0;

  int contextOf(int request) const {
    return shortContext && request >= longRequests ? shortContext : context;
  }

  /// "decode 32/8 D=128 8 x 32768" ("... mixed: 1 at 32768, 31 at 1024"),
  /// the preset appended when not the default: stable names for
  /// --only.
  std::string name() const {
    std::string n =
        shortContext
            ? llvm::formatv("decode {0}/{1} D={2} mixed: {3} at {4}, {5} at "
                            "{6}",
                            hq, hk, d, longRequests, context,
                            batch - longRequests, shortContext)
                  .str()
            : llvm::formatv("decode {0}/{1} D={2} {3} x {4}", hq, hk, d, batch,
                            context)
                  .str();
    return preset == "kvarn_k4v2_g128" ? n : n + " " + preset;
  }
};

/// Issue 14's rows: Hq/Hk 32/8, head_dim 128, kvarn_k4v2_g128 unless named.
std::vector<DecodePoint> decodePoints() {
  return {{32, 8, 128, 4, 3000},
          {32, 8, 128, 1, 32768},
          {32, 8, 128, 1, 131072},
          {32, 8, 128, 8, 32768},
          {32, 8, 128, 36, 32768}, // the fp16 bytes of 8 x 32K
          {32, 8, 128, 32, 8192},
          {32, 8, 128, 64, 4096},
          {32, 8, 128, 128, 2048},
          {32, 8, 128, 256, 4096},
          {64, 8, 128, 8, 32768},
          {32, 32, 128, 8, 32768},
          {32, 8, 64, 8, 32768},
          {32, 8, 256, 8, 32768},
          {32, 8, 128, 8, 32768, "kvarn_k4v2_g64"},
          {32, 8, 128, 8, 32768, "kvarn_k4v4_g128"},
          {32, 8, 128, 8, 32768, "kvarn_k4v2_g128_e4m3"},
          // Mixed lengths (issue 14: no stragglers): one long request among
          // short ones, beside a uniform batch of the same tokens (64512).
          {32, 8, 128, 32, 32768, "kvarn_k4v2_g128", 1, 1024},
          {32, 8, 128, 32, 2016}};
}

/// The fixed split counts each row sweeps (1: plain decode).
std::vector<int> sweptSplitCounts() {
  std::vector<int> counts = {1, 2, 4, 8, 11, 16, 32, kDecodeMaxSplits};
  std::sort(counts.begin(), counts.end());
  counts.erase(std::unique(counts.begin(), counts.end()), counts.end());
  return counts;
}

/// Decodes a sample in DecodeResult::autoBackToBackUs.
constexpr int kBackToBackDecodes = 8;

struct DecodeResult {
  int autoSplits = 1, bestSplits = 1, ctasPerSM = 0;
  double autoUs = 0, bestUs = 0;
  /// The automatic count with kBackToBackDecodes decodes a sample: the
  /// GPU's time per decode without the host's launch latency (what a
  /// serving step's CUDA graph pays), where autoUs has it inside.
  double autoBackToBackUs = 0;
  double bytes = 0;   // the records of every block the requests span
  double limitUs = 0; // those bytes read once at the measured copy rate
  std::vector<std::pair<int, double>> sweep; // (splits, median us)
};

DecodeResult benchDecode(Bench &b, const DecodePoint &p, double copyGBs) {
  dsl::Specialization spec{p.preset, p.d, p.hq / p.hk};
  const Preset &preset = *check(lookupPreset(spec.preset));
  RecordLayout l = check(RecordLayout::get(preset, p.d));
  const int g = preset.group, gqa = p.hq / p.hk;
  const LoadedKernel &single = b.load("decode", spec);
  const LoadedKernel &split = b.load("decode_split", spec);
  const LoadedKernel &combine = b.load("combine", spec);
  // The block table's rows are perReq (the longest request's blocks) apart;
  // each request's blocks are distinct records, in random order.
  const int perReq = (p.context + g - 1) / g;
  std::vector<int32_t> lens(p.batch), blocksOf(p.batch);
  size_t numBlocks = 0;
  for (int r = 0; r < p.batch; ++r) {
    lens[r] = p.contextOf(r);
    blocksOf[r] = (lens[r] + g - 1) / g;
    numBlocks += size_t(blocksOf[r]);
  }
  std::vector<int32_t> ids(numBlocks), table(size_t(p.batch) * perReq, 0),
      toSlot(numBlocks, -1);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), b.rng);
  for (int r = 0, next = 0; r < p.batch; ++r)
    for (int i = 0; i < blocksOf[r]; ++i)
      table[size_t(r) * perReq + i] = ids[next++];
  int poolSlots = 0;
  for (int r = 0; r < p.batch && b.poolBlocks; ++r) {
    // A context that is not a whole number of blocks ends in a partial
    // block, which stays fp16 in the pool (as the sink does) until it fills.
    toSlot[table[size_t(r) * perReq]] = poolSlots++;
    if (lens[r] % g != 0 && blocksOf[r] > 1)
      toSlot[table[size_t(r) * perReq + blocksOf[r] - 1]] = poolSlots++;
  }
  // Records with plausible scales: random codes, unit scales.
  std::vector<uint8_t> rec(l.recordBytes);
  for (auto &x : rec)
    x = uint8_t(b.rng());
  auto setHalves = [&](int64_t at, int n, float v) {
    uint16_t h = floatToHalf(v);
    for (int i = 0; i < n; ++i)
      std::memcpy(&rec[at + 2 * i], &h, 2);
  };
  setHalves(l.kScale, p.d, 0.1f), setHalves(l.kZero, p.d, -0.7f);
  setHalves(l.kTokenScale, g, 1.0f), setHalves(l.vChannelScale, p.d, 1.0f);
  setHalves(l.vScale, g, 0.3f), setHalves(l.vZero, g, -0.45f);
  size_t records = numBlocks * p.hk, cacheBytes = records * l.recordBytes;

  // Small caches would stay in L2 from one launch to the next: launches
  // cycle through copies of the cache and pool, at least 256 MiB in all,
  // so each reads memory the previous ones did not touch.
  const size_t poolElems = size_t(poolSlots) * g * p.hk * p.d;
  const size_t setBytes = cacheBytes + 2 * poolElems * 2;
  const int sets = int(std::clamp<size_t>(
      ((size_t(256) << 20) + setBytes - 1) / setBytes, 1, 16));
  std::vector<uint8_t> cacheHost(cacheBytes);
  for (size_t i = 0; i < records; ++i)
    std::memcpy(&cacheHost[i * l.recordBytes], rec.data(), l.recordBytes);
  struct Set {
    DeviceBuffer cache, poolK, poolV;
  };
  std::vector<Set> copies;
  for (int i = 0; i < sets; ++i)
    copies.push_back({b.upload(cacheHost), b.randomHalves(poolElems),
                      b.randomHalves(poolElems)});
  cacheHost = {};

  DecodeSplitPartialBytes parts =
      check(decodeSplitPartialBytes(p.batch, p.hk, gqa, p.d));
  DeviceBuffer q = b.randomHalves(size_t(p.batch) * p.hq * p.d),
               bt = b.upload(table), sl = b.upload(lens), ts = b.upload(toSlot),
               out = b.buffer(size_t(p.batch) * p.hq * p.d * 2),
               partOut = b.buffer(size_t(parts.partOut)),
               partLse = b.buffer(size_t(parts.partLse));
  float scale = 1.0f / std::sqrt(float(p.d));

  // Median microseconds of `splits` (1: plain decode), cycling the sets.
  auto timeSplits = [&](int splits, int perSample = 1) {
    std::vector<KernelArgs> first(sets), second(sets);
    for (int i = 0; i < sets; ++i) {
      const Set &s = copies[i];
      if (splits == 1) {
        first[i]
            .pointer(q)
            .pointer(bt)
            .pointer(sl)
            .pointer(ts)
            .pointer(s.cache)
            .pointer(s.poolK)
            .pointer(s.poolV)
            .pointer(out)
            .f32(scale)
            .i32(/*window=*/0)
            .i32(p.batch)
            .i32(perReq)
            .i32(p.hk)
            .scratch();
        continue;
      }
      first[i]
          .pointer(q)
          .pointer(bt)
          .pointer(sl)
          .pointer(ts)
          .pointer(s.cache)
          .pointer(s.poolK)
          .pointer(s.poolV)
          .pointer(partOut)
          .pointer(partLse)
          .f32(scale)
          .i32(/*window=*/0)
          .i32(p.batch)
          .i32(perReq)
          .i32(p.hk)
          .i32(splits)
          .scratch();
      second[i]
          .pointer(partOut)
          .pointer(partLse)
          .pointer(sl)
          .pointer(out)
          .i32(/*window=*/0)
          .i32(p.batch)
          .i32(p.hk)
          .i32(splits)
          .scratch();
    }
    return b.timeDecode(single, split, combine, first, second, splits,
                        perSample);
  };

  DecodeResult r;
  r.ctasPerSM = split.ctasPerSM();
  // --splits N: that count alone, as the automatic choice too (for a
  // profiler to see one kernel shape).
  r.autoSplits = b.splits > 0
                     ? b.splits
                     : check(decodeSplitCount({int64_t(p.batch) * p.hk, perReq,
                                               b.ctx.info().multiprocessors,
                                               r.ctasPerSM}));
  // The sweep's counts, and the automatic one when it is not among them;
  // "best" is the fastest of the sweep's.
  const std::vector<int> swept =
      b.splits > 0 ? std::vector<int>{b.splits} : sweptSplitCounts();
  std::vector<int> counts = swept;
  if (!llvm::is_contained(counts, r.autoSplits))
    counts.insert(llvm::upper_bound(counts, r.autoSplits), r.autoSplits);
  r.bestUs = std::numeric_limits<double>::infinity();
  for (int splits : counts) {
    double us = timeSplits(splits);
    r.sweep.push_back({splits, us});
    if (splits == r.autoSplits)
      r.autoUs = us;
    if (llvm::is_contained(swept, splits) && us < r.bestUs) {
      r.bestUs = us;
      r.bestSplits = splits;
    }
  }
  r.autoBackToBackUs = timeSplits(r.autoSplits, kBackToBackDecodes);
  r.bytes = double(cacheBytes);
  r.limitUs = r.bytes / (copyGBs * 1e3);
  return r;
}

/// One MLA decode row of issue 18: kv_lora_rank 512, rope 64, every block a
/// record (the MLA path flushes every full block and keeps no sink).
struct MlaPoint {
  int heads, batch, context;
  std::string name() const {
    // No "decode" in the name: `--only decode` selects issue 14's rows.
    return llvm::formatv("mla H={0} R=512 {1} x {2}", heads, batch, context)
        .str();
  }
};

/// DeepSeek-V2-Lite's 16 heads and a 128-head shape, batch 1-64 (issue 18).
std::vector<MlaPoint> mlaPoints() {
  return {{16, 1, 4096},  {16, 1, 32768},  {16, 8, 4096}, {16, 8, 32768},
          {16, 64, 4096}, {128, 1, 32768}, {128, 8, 4096}};
}

struct MlaResult {
  int autoSplits = 1, ctasPerSM = 0;
  double autoUs = 0, singleUs = 0, bytes = 0, limitUs = 0;
};

/// mla_decode and mla_decode_split + mla_combine at the runtime's split
/// count (decodeSplitCount for requests x HEAD_GROUPS programs, as
/// kvarn_mla_decode_split_count), launches cycling through copies of the
/// cache past L2.
MlaResult benchMlaDecode(Bench &b, const MlaPoint &p, double copyGBs) {
  const int r = 512, e = 64;
  const MlaPreset &preset = allMlaPresets().front();
  MlaRecordLayout l = check(MlaRecordLayout::get(preset, r, e));
  dsl::Specialization spec;
  spec.preset = preset.name;
  spec.headDim = r;
  spec.ropeDim = e;
  spec.gqa = p.heads;
  const LoadedKernel &single = b.load("mla_decode", spec);
  const LoadedKernel &split = b.load("mla_decode_split", spec);
  const LoadedKernel &combine = b.load("mla_combine", spec);
  const int g = l.group, perReq = (p.context + g - 1) / g;
  const size_t numBlocks = size_t(p.batch) * perReq;
  std::vector<int32_t> table(numBlocks), lens(p.batch, p.context),
      toSlot(numBlocks, -1);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), b.rng);
  // Records with plausible scales: random codes, fixed scales, small rope
  // keys (random bytes there could be NaN).
  std::vector<uint8_t> rec(l.recordBytes);
  for (auto &x : rec)
    x = uint8_t(b.rng());
  std::normal_distribution<float> normal;
  auto setHalves = [&](int64_t at, int64_t n, auto value) {
    for (int64_t i = 0; i < n; ++i) {
      uint16_t h = floatToHalf(value());
      std::memcpy(&rec[at + 2 * i], &h, 2);
    }
  };
  setHalves(l.scale, r, [] { return 0.1f; });
  setHalves(l.zero, r, [] { return -0.7f; });
  setHalves(l.tokenScale, g, [] { return 1.0f; });
  setHalves(l.rope, int64_t(g) * e, [&] { return 0.5f * normal(b.rng); });
  const size_t cacheBytes = numBlocks * l.recordBytes;
  const int sets = int(std::clamp<size_t>(
      ((size_t(256) << 20) + cacheBytes - 1) / cacheBytes, 1, 16));
  std::vector<uint8_t> cacheHost(cacheBytes);
  for (size_t i = 0; i < numBlocks; ++i)
    std::memcpy(&cacheHost[i * l.recordBytes], rec.data(), l.recordBytes);
  std::vector<DeviceBuffer> caches;
  for (int i = 0; i < sets; ++i)
    caches.push_back(b.upload(cacheHost));
  cacheHost = {};

  // No pool blocks: one slot's worth, never read (block_to_slot all -1).
  DecodeSplitPartialBytes parts =
      check(decodeSplitPartialBytes(p.batch, 1, p.heads, r));
  DeviceBuffer q = b.randomHalves(size_t(p.batch) * p.heads * (r + e)),
               bt = b.upload(table), sl = b.upload(lens), ts = b.upload(toSlot),
               poolLatent = b.randomHalves(size_t(g) * r),
               poolPe = b.randomHalves(size_t(g) * e),
               out = b.buffer(size_t(p.batch) * p.heads * r * 2),
               partOut = b.buffer(size_t(parts.partOut)),
               partLse = b.buffer(size_t(parts.partLse));
  const float scale = 1.0f / std::sqrt(192.0f);

  auto timeSplits = [&](int splits) {
    std::vector<KernelArgs> first(sets), second(sets);
    for (int i = 0; i < sets; ++i) {
      first[i].pointer(q).pointer(bt).pointer(sl).pointer(ts).pointer(
          caches[i]);
      first[i].pointer(poolLatent).pointer(poolPe);
      if (splits == 1) {
        first[i].pointer(out).f32(scale).i32(p.batch).i32(perReq).scratch();
        continue;
      }
      first[i]
          .pointer(partOut)
          .pointer(partLse)
          .f32(scale)
          .i32(p.batch)
          .i32(perReq)
          .i32(splits)
          .scratch();
      second[i]
          .pointer(partOut)
          .pointer(partLse)
          .pointer(sl)
          .pointer(out)
          .i32(p.batch)
          .i32(splits)
          .scratch();
    }
    return b.timeDecode(single, split, combine, first, second, splits);
  };

  MlaResult res;
  res.ctasPerSM = split.ctasPerSM();
  const int64_t programs = p.heads / mlaHeadsPerProgram(p.heads);
  res.autoSplits = b.splits > 0
                       ? b.splits
                       : check(decodeSplitCount(
                             {int64_t(p.batch) * programs, perReq,
                              b.ctx.info().multiprocessors, res.ctasPerSM}));
  res.autoUs = timeSplits(res.autoSplits);
  res.singleUs = res.autoSplits == 1 ? res.autoUs : timeSplits(1);
  res.bytes = double(cacheBytes);
  res.limitUs = res.bytes / (copyGBs * 1e3);
  return res;
}

constexpr const char *kAppendRow = "append 4096 tok x 8 heads, D=128";
std::string flushRow(int headDim) {
  return llvm::formatv("flush 2048 tile pairs, D={0}", headDim).str();
}

/// Every row --only can select, in the order they run (the device copy
/// always runs: the other rows' rates are relative to it).
std::vector<std::string> rowNames() {
  std::vector<std::string> names = {kAppendRow, flushRow(128), flushRow(256)};
  for (const DecodePoint &p : decodePoints())
    names.push_back(p.name());
  for (const MlaPoint &p : mlaPoints())
    names.push_back(p.name());
  return names;
}

} // namespace

int main(int argc, char **argv) {
  std::string jsonPath;
  std::vector<std::string> only;
  bool poolBlocks = true, warpStates = false, pipelineCopies = false;
  int numWarps = 0, minCtasPerSM = 0, splits = 0;
  for (int i = 1; i < argc; ++i) {
    bool takesValue = !std::strcmp(argv[i], "--json") ||
                      !std::strcmp(argv[i], "--only") ||
                      !std::strcmp(argv[i], "--min-ctas") ||
                      !std::strcmp(argv[i], "--num-warps") ||
                      !std::strcmp(argv[i], "--splits");
    if (takesValue && i + 1 == argc) {
      llvm::errs() << "kvarn-bench: error: " << argv[i] << " needs a value\n";
      return 2;
    }
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc)
      jsonPath = argv[++i];
    else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) {
      // Several patterns, comma-separated: row names have no commas.
      llvm::SmallVector<llvm::StringRef> parts;
      llvm::StringRef(argv[++i]).split(parts, ',');
      for (llvm::StringRef part : parts) {
        if (part.trim().empty()) {
          llvm::errs() << "kvarn-bench: error: --only '" << argv[i]
                       << "' has an empty pattern\n";
          return 2;
        }
        only.push_back(part.trim().str());
      }
    } else if (!std::strcmp(argv[i], "--min-ctas") && i + 1 < argc) {
      minCtasPerSM = std::atoi(argv[++i]);
      if (minCtasPerSM < 0 || minCtasPerSM > kMaxCtasPerSM) {
        llvm::errs() << "kvarn-bench: error: --min-ctas takes 0 (the "
                        "compiler's choice) to "
                     << kMaxCtasPerSM << "\n";
        return 2;
      }
    } else if (!std::strcmp(argv[i], "--num-warps") && i + 1 < argc) {
      numWarps = std::atoi(argv[++i]);
      if (numWarps < 0 || numWarps > kMaxWarpsPerCta) {
        llvm::errs() << "kvarn-bench: error: --num-warps takes 0 (the "
                        "compiler's choice) to "
                     << kMaxWarpsPerCta << "\n";
        return 2;
      }
    } else if (!std::strcmp(argv[i], "--splits") && i + 1 < argc) {
      splits = std::atoi(argv[++i]);
      if (splits < 1 || splits > kDecodeMaxSplits) {
        llvm::errs() << "kvarn-bench: error: --splits takes 1 (plain decode) "
                        "to "
                     << kDecodeMaxSplits << ", not '" << argv[i] << "'\n";
        return 2;
      }
    } else if (!std::strcmp(argv[i], "--no-pool-blocks")) {
      poolBlocks = false;
    } else if (!std::strcmp(argv[i], "--warp-states")) {
      warpStates = true;
    } else if (!std::strcmp(argv[i], "--pipeline-copies")) {
      pipelineCopies = true;
    } else if (!std::strcmp(argv[i], "--list")) {
      for (const std::string &name : rowNames())
        llvm::outs() << name << "\n";
      return 0;
    } else if (!std::strcmp(argv[i], "--help")) {
      llvm::outs()
          << "usage: kvarn-bench [--json FILE] [--only SUBSTRING[,...]] "
             "[--num-warps N] [--min-ctas N] [--splits N] [--no-pool-blocks] "
             "[--warp-states] [--pipeline-copies] [--list]\n"
             "  --only       run only the rows whose name contains SUBSTRING "
             "(or one of several, comma-separated)\n"
             "  --list       print the rows' names and exit\n"
             "  --num-warps  compile every kernel with N warps per CTA\n"
             "  --min-ctas   ... and registers budgeted for N CTAs per SM\n"
             "  --splits     decode rows time N splits only (1: plain "
             "decode)\n"
             "  --no-pool-blocks  decode rows read every block from its "
             "record (by default each request's sink and partial tail are "
             "fp16 pool blocks, as in serving)\n"
             "  --warp-states  compile with attention states held per warp "
             "(kvarn-jit's --warp-states)\n"
             "  --pipeline-copies  compile with the next record copied "
             "during this one (kvarn-jit's --pipeline-copies)\n"
             "rows: append, flush, issue 14's decode rows ('decode ...'), "
             "MLA decode ('mla ...': kv_lora_rank 512, rope 64, every block "
             "a record)\n";
      return 0;
    } else {
      llvm::errs() << "kvarn-bench: error: unknown argument '" << argv[i]
                   << "' (see kvarn-bench --help)\n";
      return 2;
    }
  }
  // Every pattern must select a row: a misspelt one would otherwise cost a
  // device run that times nothing it asked for.
  for (const std::string &part : only)
    if (llvm::none_of(rowNames(), [&](const std::string &name) {
          return name.find(part) != std::string::npos;
        })) {
      llvm::errs() << "kvarn-bench: error: --only pattern '" << part
                   << "' matches no row (kvarn-bench --list names them)\n";
      return 2;
    }
  Context ctx = check(Context::create(0));
  Bench b{std::move(ctx), Stream(), Event(), Event()};
  b.poolBlocks = poolBlocks;
  b.stream = check(Stream::create(b.ctx));
  b.start = check(Event::create(b.ctx));
  b.stop = check(Event::create(b.ctx));
  b.only = only;
  b.numWarps = numWarps;
  b.minCtasPerSM = minCtasPerSM;
  b.warpStates = warpStates;
  b.pipelineCopies = pipelineCopies;
  b.splits = splits;
  std::vector<Row> rows;
  std::vector<std::pair<std::string, DecodeResult>> decodeRows;
  const DeviceInfo &info = b.ctx.info();

  // Device-to-device copy of 1 GiB: read + write bytes per second.
  double copyGBs = 0;
  {
    size_t bytes = size_t(1) << 30;
    DeviceBuffer src = b.buffer(bytes), dst = b.buffer(bytes);
    double us = b.time([&] { check(dst.copyFromAsync(src, bytes, b.stream.handle())); }, 10);
    copyGBs = 2.0 * bytes / us / 1e3;
    rows.push_back({"device copy 1 GiB", us, copyGBs, "read + write"});
  }

  // append: 4096 tokens x 8 KV heads, head_dim 128.
  if (b.wants(kAppendRow)) {
    const int n = 4096, hk = 8, d = 128, g = 128;
    dsl::Specialization spec{"kvarn_k4v2_g128", d, 1};
    const LoadedKernel &k = b.load("append", spec);
    int blocks = n / g;
    std::vector<int32_t> mapping(n), toSlot(blocks);
    std::iota(toSlot.begin(), toSlot.end(), 0);
    std::shuffle(toSlot.begin(), toSlot.end(), b.rng);
    for (int t = 0; t < n; ++t)
      mapping[t] = t;
    // One launch moves 32 MiB, which the H100's 50 MB L2 could keep: the
    // launches cycle through 8 sets of inputs and pools (256 MiB), so each
    // reads and writes memory the previous ones did not touch.
    constexpr int kSets = 8;
    DeviceBuffer m = b.upload(mapping), ts = b.upload(toSlot);
    std::vector<DeviceBuffer> buffers;
    std::vector<KernelArgs> sets(kSets);
    for (KernelArgs &args : sets) {
      size_t at = buffers.size();
      buffers.push_back(b.randomHalves(size_t(n) * hk * d));
      buffers.push_back(b.randomHalves(size_t(n) * hk * d));
      buffers.push_back(b.buffer(size_t(n) * hk * d * 2));
      buffers.push_back(b.buffer(size_t(n) * hk * d * 2));
      args.pointer(buffers[at]).pointer(buffers[at + 1]).pointer(m).pointer(ts)
          .pointer(buffers[at + 2]).pointer(buffers[at + 3]).i32(n).i32(hk)
          .scratch();
    }
    int next = 0;
    auto launch = [&] {
      check(k.launch(sets[next], b.stream.handle()));
      next = (next + 1) % kSets;
    };
    // One launch a sample (the host's launch latency inside, as this row
    // was first measured), and kSets back to back (each on fresh memory):
    // the kernel's own rate, the one the copy's is.
    double single = b.time(launch);
    double us = b.time(launch, 30, kSets);
    double bytes = 4.0 * n * hk * d * 2; // read k, v; write two pool rows
    rows.push_back(
        {kAppendRow, us, bytes / us / 1e3,
         llvm::formatv("{0:P0} of copy ({1} launches back to back); one "
                       "launch a sample: {2:F1} us, {3:P0}",
                       bytes / us / 1e3 / copyGBs, kSets, single,
                       bytes / single / 1e3 / copyGBs)});
  }

  // flush: 2048 (K, V) tile pairs (256 tiles x 8 heads), D = 128 and 256.
  for (int d : {128, 256}) {
    std::string what = flushRow(d);
    if (!b.wants(what))
      continue;
    const int tiles = 256, hk = 8, g = 128;
    dsl::Specialization spec{"kvarn_k4v2_g128", d, 1};
    RecordLayout l = check(RecordLayout::get(*check(lookupPreset(spec.preset)), d));
    const LoadedKernel &k = b.load("flush", spec);
    std::vector<int32_t> slots(tiles), blocks(tiles);
    std::iota(slots.begin(), slots.end(), 0);
    std::iota(blocks.begin(), blocks.end(), 0);
    std::shuffle(slots.begin(), slots.end(), b.rng);
    std::shuffle(blocks.begin(), blocks.end(), b.rng);
    size_t poolElems = size_t(tiles) * g * hk * d;
    DeviceBuffer pk = b.randomHalves(poolElems), pv = b.randomHalves(poolElems),
                 s = b.upload(slots), bl = b.upload(blocks),
                 cache = b.buffer(size_t(tiles) * hk * l.recordBytes);
    KernelArgs args;
    args.pointer(pk).pointer(pv).pointer(s).pointer(bl).pointer(cache)
        .i32(tiles).i32(hk).scratch();
    double us = b.time([&] { check(k.launch(args, b.stream.handle())); }, 10);
    double bytes = 2.0 * poolElems * 2 + double(tiles) * hk * l.recordBytes;
    rows.push_back({what, us,
                    bytes / us / 1e3,
                    llvm::formatv("{0:f2} us per pair", us / 2048).str()});
  }

  // decode: issue 14's rows. Every block quantized but the sink (and a
  // partial last block), which stay fp16 in the pool as in serving; block
  // tables shuffled. Each row times the runtime's automatic split count
  // (decodeSplitCount: the wave model, with decode_split's own ctas_per_sm)
  // and a sweep of fixed counts, 1 being plain decode.
  for (const DecodePoint &p : decodePoints()) {
    std::string what = p.name();
    if (!b.wants(what))
      continue;
    DecodeResult r = benchDecode(b, p, copyGBs);
    std::string sweep;
    for (auto [splits, us] : r.sweep)
      sweep += llvm::formatv("{0}{1}: {2:f1}", sweep.empty() ? "" : ", ",
                             splits, us)
                   .str();
    Row row{what, r.autoUs, r.bytes / r.autoUs / 1e3,
            llvm::formatv("auto {0} splits; best {1} splits {2:f1} us, "
                          "auto/best {3:f2}; auto {7:f1} us with {8} back to "
                          "back; limit {4:f1} us at the copy rate, {5:P1} of "
                          "it; sweep (splits: us) {6}",
                          r.autoSplits, r.bestSplits, r.bestUs,
                          r.autoUs / r.bestUs, r.limitUs,
                          r.limitUs / r.autoUs, sweep, r.autoBackToBackUs,
                          kBackToBackDecodes)
                .str()};
    llvm::json::Object sweepJson;
    for (auto [splits, us] : r.sweep)
      sweepJson[std::to_string(splits)] = us;
    row.extra = llvm::json::Object{
        {"auto_splits", r.autoSplits},   {"auto_us", r.autoUs},
        {"best_splits", r.bestSplits},   {"best_us", r.bestUs},
        {"auto_over_best", r.autoUs / r.bestUs},
        {"auto_back_to_back_us", r.autoBackToBackUs},
        {"limit_us", r.limitUs},
        {"copy_fraction_auto", r.limitUs / r.autoUs},
        {"copy_fraction_best", r.limitUs / r.bestUs},
        {"quantized_bytes", r.bytes},
        {"ctas_per_sm", r.ctasPerSM},
        {"sweep_us", std::move(sweepJson)}};
    rows.push_back(std::move(row));
    decodeRows.push_back({what, r});
  }

  // MLA decode (issue 18): the runtime's split count and plain decode.
  for (const MlaPoint &p : mlaPoints()) {
    std::string what = p.name();
    if (!b.wants(what))
      continue;
    MlaResult r = benchMlaDecode(b, p, copyGBs);
    Row row{what, r.autoUs, r.bytes / r.autoUs / 1e3,
            llvm::formatv("auto {0} splits; plain mla_decode {1:f1} us; limit "
                          "{2:f1} us at the copy rate, {3:P1} of it",
                          r.autoSplits, r.singleUs, r.limitUs,
                          r.limitUs / r.autoUs)
                .str()};
    row.extra = llvm::json::Object{{"auto_splits", r.autoSplits},
                                   {"auto_us", r.autoUs},
                                   {"single_us", r.singleUs},
                                   {"limit_us", r.limitUs},
                                   {"copy_fraction_auto", r.limitUs / r.autoUs},
                                   {"quantized_bytes", r.bytes},
                                   {"ctas_per_sm", r.ctasPerSM}};
    rows.push_back(std::move(row));
  }

  llvm::outs() << llvm::formatv("kvarn-bench on {0} ({1}, {2} SMs)\n\n",
                                info.name, info.arch(), info.multiprocessors);
  llvm::outs() << llvm::formatv("{0,-44} {1,12} {2,10}  {3}\n", "what",
                                "median us", "GB/s", "note");
  for (const Row &r : rows)
    llvm::outs() << llvm::formatv("{0,-44} {1,12:f1} {2,10:f1}  {3}\n", r.what,
                                  r.micros, r.gbPerSecond, r.note);
  // Issue 14's table: the runtime's choice against the best swept count,
  // and the limit from this run's copy rate.
  if (!decodeRows.empty()) {
    llvm::outs() << llvm::formatv(
        "\ndecode: auto = decodeSplitCount, best = fastest of splits {0} "
        "(1 = plain decode), one decode between two events on an idle stream "
        "(the host's launch latency inside); back to back = auto, {2} "
        "decodes a sample; limit = the records read once at {1:f0} GB/s\n",
        llvm::join(llvm::map_range(sweptSplitCounts(),
                                   [](int s) { return std::to_string(s); }),
                   ","),
        copyGBs, kBackToBackDecodes);
    llvm::outs() << llvm::formatv(
        "{0,-44} {1,17} {2,17} {3,9} {4,13} {5,9} {6,8}\n", "shape",
        "auto us (splits)", "best us (splits)", "auto/best", "back to back",
        "limit us", "of copy");
    for (const auto &[what, r] : decodeRows)
      llvm::outs() << llvm::formatv(
          "{0,-44} {1,17} {2,17} {3,9:f2} {4,13:f1} {5,9:f1} {6,8:P1}\n",
          what, llvm::formatv("{0:f1} ({1})", r.autoUs, r.autoSplits).str(),
          llvm::formatv("{0:f1} ({1})", r.bestUs, r.bestSplits).str(),
          r.autoUs / r.bestUs, r.autoBackToBackUs, r.limitUs,
          r.limitUs / r.autoUs);
  }
  if (!jsonPath.empty()) {
    llvm::json::Array array;
    for (Row &r : rows) {
      llvm::json::Object o{{"what", r.what},
                           {"median_us", r.micros},
                           {"gb_per_s", r.gbPerSecond},
                           {"note", r.note}};
      for (auto &[key, value] : r.extra)
        o[key] = std::move(value);
      array.push_back(std::move(o));
    }
    std::error_code ec;
    llvm::raw_fd_ostream os(jsonPath, ec);
    if (ec) {
      llvm::errs() << "kvarn-bench: error: cannot write '" << jsonPath
                   << "': " << ec.message() << "\n";
      return 1;
    }
    os << llvm::json::Value(llvm::json::Object{
        {"device", info.name},
        {"arch", info.arch()},
        {"multiprocessors", info.multiprocessors},
        {"copy_gb_per_s", copyGBs},
        {"rows", std::move(array)}});
  }
  return 0;
}
