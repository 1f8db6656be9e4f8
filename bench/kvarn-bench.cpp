//===- kvarn-bench.cpp - kernel timings on the GPU ------------------------===//
//
// Times the generated kernels with CUDA events (warm-up, then the median of
// many launches) on fresh data larger than L2, next to the device-to-device
// copy bandwidth measured in the same run. Prints a table; --json FILE writes
// the figures. A benchmark, not a test: it asserts nothing.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Codegen/KernelCompiler.h"
#include "kvarn/Runtime/KernelCache.h"
#include "kvarn/Layout/RecordLayout.h"
#include "kvarn/Runtime/Context.h"
#include "kvarn/Runtime/DecodeSplit.h"
#include "kvarn/Runtime/Module.h"
#include "kvarn/Support/Error.h"
#include "kvarn/Support/Half.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
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
};

[[noreturn]] void die(llvm::Error err) {
  std::string message;
  kvarn::consumeError(std::move(err), message);
  llvm::errs() << "kvarn-bench: error: " << message << "\n";
  std::exit(1);
}

template <typename T> T check(llvm::Expected<T> v) {
  if (!v)
    die(v.takeError());
  return std::move(*v);
}

void check(llvm::Error err) {
  if (err)
    die(std::move(err));
}

struct Bench {
  Context ctx;
  Stream stream;
  Event start, stop;
  std::mt19937_64 rng{12345};

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
  double time(const std::function<void()> &launch, int reps = 30) {
    for (int i = 0; i < 3; ++i)
      launch();
    check(stream.synchronize());
    std::vector<double> us;
    for (int i = 0; i < reps; ++i) {
      check(start.record(stream.handle()));
      launch();
      check(stop.record(stream.handle()));
      check(stop.synchronize());
      us.push_back(1000.0 * check(Event::elapsedMilliseconds(start, stop)));
    }
    std::sort(us.begin(), us.end());
    return us[us.size() / 2];
  }

  /// Through the kernel cache; it keeps the kernel loaded.
  const LoadedKernel &load(const std::string &name,
                           const dsl::Specialization &spec) {
    CompileOptions options;
    options.numWarps = numWarps;
    options.minCtasPerSM = minCtasPerSM;
    return *check(cache->load({name, spec, "", ""}, options, ctx));
  }
  int numWarps = 0;     // 0: the compiler's choice
  int minCtasPerSM = 0; // 0: the compiler's choice
  std::string only; // run only the rows whose name contains this
  bool wants(const std::string &row) const {
    return only.empty() || row.find(only) != std::string::npos;
  }
  std::unique_ptr<KernelCache> cache = std::make_unique<KernelCache>();
};

} // namespace

int main(int argc, char **argv) {
  std::string jsonPath, only;
  int numWarps = 0, minCtasPerSM = 0;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--json") && i + 1 < argc)
      jsonPath = argv[++i];
    else if (!std::strcmp(argv[i], "--only") && i + 1 < argc)
      only = argv[++i];
    else if (!std::strcmp(argv[i], "--min-ctas") && i + 1 < argc) {
      minCtasPerSM = std::atoi(argv[++i]);
      if (minCtasPerSM < 0 || minCtasPerSM > 32) {
        llvm::errs() << "kvarn-bench: error: --min-ctas takes 0 (the "
                        "compiler's choice) to 32\n";
        return 2;
      }
    } else if (!std::strcmp(argv[i], "--num-warps") && i + 1 < argc) {
      numWarps = std::atoi(argv[++i]);
      if (numWarps < 0 || numWarps > 32) {
        llvm::errs() << "kvarn-bench: error: --num-warps takes 0 (the "
                        "compiler's choice) to 32\n";
        return 2;
      }
    }
    else if (!std::strcmp(argv[i], "--help")) {
      llvm::outs() << "usage: kvarn-bench [--json FILE] [--only SUBSTRING] "
                      "[--num-warps N] [--min-ctas N]\n"
                      "  --only       run only the rows whose name contains SUBSTRING\n"
                      "  --num-warps  compile every kernel with N warps per CTA\n"
                      "  --min-ctas   ... and registers budgeted for N CTAs per SM\n";
      return 0;
    } else {
      llvm::errs() << "kvarn-bench: error: unknown argument '" << argv[i]
                   << "' (see kvarn-bench --help)\n";
      return 2;
    }
  }
  Context ctx = check(Context::create(0));
  Bench b{std::move(ctx), Stream(), Event(), Event()};
  b.stream = check(Stream::create(b.ctx));
  b.start = check(Event::create(b.ctx));
  b.stop = check(Event::create(b.ctx));
  b.only = only;
  b.numWarps = numWarps;
  b.minCtasPerSM = minCtasPerSM;
  std::vector<Row> rows;
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
  if (b.wants("append 4096 tok x 8 heads, D=128")) {
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
    double us = b.time([&] {
      check(k.launch({unsigned(n), unsigned(hk), 1}, sets[next], b.stream.handle()));
      next = (next + 1) % kSets;
    });
    double bytes = 4.0 * n * hk * d * 2; // read k, v; write two pool rows
    rows.push_back({"append 4096 tok x 8 heads, D=128", us, bytes / us / 1e3,
                    llvm::formatv("{0:P0} of copy", bytes / us / 1e3 / copyGBs)});
  }

  // flush: 2048 (K, V) tile pairs (256 tiles x 8 heads), D = 128 and 256.
  for (int d : {128, 256}) {
    std::string what = llvm::formatv("flush 2048 tile pairs, D={0}", d).str();
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
    double us = b.time([&] {
      check(k.launch({unsigned(tiles), unsigned(hk), 1}, args, b.stream.handle()));
    }, 10);
    double bytes = 2.0 * poolElems * 2 + double(tiles) * hk * l.recordBytes;
    rows.push_back({what, us,
                    bytes / us / 1e3,
                    llvm::formatv("{0:f2} us per pair", us / 2048).str()});
  }

  // decode: k4v2_g128, every block quantized but the sink (fp16 in the
  // pool), block tables shuffled; plain decode and decode_split + combine
  // (split count from decodeSplitCount), the best of the two reported.
  struct DecodePoint {
    int hq, hk, d, batch, context;
  };
  std::vector<DecodePoint> points = {
      {32, 8, 128, 1, 32768},  {32, 8, 128, 1, 131072}, {32, 8, 128, 8, 32768},
      {32, 8, 128, 32, 8192},  {32, 8, 128, 64, 4096},  {32, 8, 128, 128, 2048},
      {64, 8, 128, 8, 32768},  {32, 32, 128, 8, 32768}, {32, 8, 64, 8, 32768},
      {32, 8, 256, 8, 32768}};
  for (const DecodePoint &p : points) {
    std::string what = llvm::formatv("decode {0}/{1} D={2} {3} x {4}", p.hq,
                                     p.hk, p.d, p.batch, p.context)
                           .str();
    if (!b.wants(what))
      continue;
    const int g = 128;
    dsl::Specialization spec{"kvarn_k4v2_g128", p.d, p.hq / p.hk};
    RecordLayout l = check(RecordLayout::get(*check(lookupPreset(spec.preset)), p.d));
    const LoadedKernel &single = b.load("decode", spec);
    const LoadedKernel &split = b.load("decode_split", spec);
    const LoadedKernel &combine = b.load("combine", spec);
    int perReq = p.context / g, numBlocks = p.batch * perReq;
    std::vector<int32_t> ids(numBlocks), table(numBlocks), lens(p.batch, p.context),
        toSlot(numBlocks, -1);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), b.rng);
    for (int i = 0; i < numBlocks; ++i)
      table[i] = ids[i];
    for (int r = 0; r < p.batch; ++r) // the sink block stays fp16 in the pool
      toSlot[table[size_t(r) * perReq]] = r;
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
    std::vector<uint8_t> cacheHost(size_t(numBlocks) * p.hk * l.recordBytes);
    for (size_t i = 0; i < size_t(numBlocks) * p.hk; ++i)
      std::memcpy(&cacheHost[i * l.recordBytes], rec.data(), l.recordBytes);
    int gqa = p.hq / p.hk;
    size_t parts = size_t(p.batch) * p.hk * kDecodeMaxSplits * gqa;
    DeviceBuffer q = b.randomHalves(size_t(p.batch) * p.hq * p.d), bt = b.upload(table),
                 sl = b.upload(lens), ts = b.upload(toSlot), cache = b.upload(cacheHost),
                 pk = b.randomHalves(size_t(p.batch) * g * p.hk * p.d),
                 pv = b.randomHalves(size_t(p.batch) * g * p.hk * p.d),
                 out = b.buffer(size_t(p.batch) * p.hq * p.d * 2),
                 partOut = b.buffer(parts * p.d * 4), partLse = b.buffer(parts * 4);
    float scale = 1.0f / std::sqrt(float(p.d));
    KernelArgs args;
    args.pointer(q).pointer(bt).pointer(sl).pointer(ts).pointer(cache)
        .pointer(pk).pointer(pv).pointer(out).f32(scale)
        .i32(p.batch).i32(perReq).i32(p.hk).scratch();
    double singleUs = b.time([&] {
      check(single.launch({unsigned(p.batch), unsigned(p.hk), 1}, args,
                          b.stream.handle()));
    }, 10);
    int splits = check(decodeSplitCount(
        {int64_t(p.batch) * p.hk, perReq, info.multiprocessors, split.ctasPerSM()}));
    KernelArgs splitArgs, combineArgs;
    splitArgs.pointer(q).pointer(bt).pointer(sl).pointer(ts).pointer(cache)
        .pointer(pk).pointer(pv).pointer(partOut).pointer(partLse).f32(scale)
        .i32(p.batch).i32(perReq).i32(p.hk).i32(splits).scratch();
    combineArgs.pointer(partOut).pointer(partLse).pointer(sl).pointer(out)
        .i32(p.batch).i32(p.hk).i32(splits).scratch();
    double splitUs = b.time([&] {
      check(split.launch({unsigned(p.batch), unsigned(p.hk), unsigned(splits)},
                         splitArgs, b.stream.handle()));
      check(combine.launch({unsigned(p.batch), unsigned(p.hk), 1}, combineArgs,
                           b.stream.handle()));
    }, 10);
    double us = std::min(singleUs, splitUs);
    double bytes = double(numBlocks) * p.hk * l.recordBytes;
    rows.push_back(
        {what,
         us, bytes / us / 1e3,
         llvm::formatv("single {0:f1} us, {1} splits {2:f1} us; limit {3:f1} us "
                       "at 2.98 TB/s",
                       singleUs, splits, splitUs, bytes / 2.98e6)
             .str()});
  }

  llvm::outs() << llvm::formatv("kvarn-bench on {0} ({1}, {2} SMs)\n\n",
                                info.name, info.arch(), info.multiprocessors);
  llvm::outs() << llvm::formatv("{0,-40} {1,12} {2,10}  {3}\n", "what",
                                "median us", "GB/s", "note");
  for (const Row &r : rows)
    llvm::outs() << llvm::formatv("{0,-40} {1,12:f1} {2,10:f1}  {3}\n", r.what,
                                  r.micros, r.gbPerSecond, r.note);
  if (!jsonPath.empty()) {
    llvm::json::Array array;
    for (const Row &r : rows)
      array.push_back(llvm::json::Object{{"what", r.what},
                                         {"median_us", r.micros},
                                         {"gb_per_s", r.gbPerSecond},
                                         {"note", r.note}});
    std::error_code ec;
    llvm::raw_fd_ostream os(jsonPath, ec);
    if (ec) {
      llvm::errs() << "kvarn-bench: error: cannot write '" << jsonPath
                   << "': " << ec.message() << "\n";
      return 1;
    }
    os << llvm::json::Value(llvm::json::Object{
        {"device", info.name}, {"arch", info.arch()}, {"rows", std::move(array)}});
  }
  return 0;
}
