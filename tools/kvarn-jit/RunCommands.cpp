//===- RunCommands.cpp - kvarn-jit run flush|append|decode ----------------===//
//
// The generated kernels on the GPU, on golden-format cases, writing the same
// outputs as `kvarn-jit ref ...` and printing the same comparisons.
//
//===----------------------------------------------------------------------===//

#include "Commands.h"

#include "kvarn/Codegen/KernelCompiler.h"
#include "kvarn/Runtime/Context.h"
#include "kvarn/Runtime/KernelCache.h"
#include "kvarn/Runtime/Module.h"
#include "kvarn/Support/Error.h"
#include "kvarn/Support/Half.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdlib>

using namespace kvarn;
using namespace kvarn::jit;
using namespace kvarn::cuda;

namespace {

/// The GPU, the kernel compiled for it, and buffers, for one command.
class GpuRun {
public:
  static kvarn::Expected<GpuRun> open(const std::string &kernel,
                                      const dsl::Specialization &spec) {
    kvarn::Expected<Context> ctx = Context::create(0);
    if (!ctx)
      return ctx.takeError();
    GpuRun run(std::move(*ctx));
    // Through the kernel cache: compiled once, then loaded from disk.
    run.cache = std::make_unique<KernelCache>();
    kvarn::Expected<std::shared_ptr<const LoadedKernel>> k =
        run.cache->load({kernel, spec, "", ""}, CompileOptions(), run.ctx);
    if (!k)
      return k.takeError();
    run.kernel = std::move(*k);
    return std::move(run);
  }

  kvarn::Expected<DeviceBuffer> upload(const void *data, size_t bytes) {
    kvarn::Expected<DeviceBuffer> b =
        DeviceBuffer::allocate(ctx, std::max<size_t>(bytes, 1));
    if (!b)
      return b.takeError();
    if (kvarn::Error err = b->upload(data, bytes))
      return std::move(err);
    return b;
  }
  template <typename T>
  kvarn::Expected<DeviceBuffer> upload(const std::vector<T> &v) {
    return upload(v.data(), v.size() * sizeof(T));
  }

  /// Launches the grid the kernel declares for `args`, and waits.
  kvarn::Error launch(KernelArgs &args) {
    if (kvarn::Error err = kernel->launch(args, nullptr))
      return err;
    return ctx.synchronize();
  }

  Context ctx;
  // Destroyed before the context: the cache's modules live in it.
  std::unique_ptr<KernelCache> cache;
  std::shared_ptr<const LoadedKernel> kernel;

private:
  explicit GpuRun(Context ctx) : ctx(std::move(ctx)) {}
};

#define KVARN_TRY(decl, expr)                                                  \
  auto decl##OrErr = (expr);                                                   \
  if (!decl##OrErr)                                                            \
    return failure(decl##OrErr.takeError());                                   \
  auto decl = std::move(*decl##OrErr);

/// A flush case's tiles as a pool of one KV head ([tiles, G, 1, D] is the
/// case's own [tiles, G, D] layout).
int runFlush(const ParsedOptions &opts) {
  KVARN_TRY(c, loadCaseOption(opts));
  if (kvarn::Error err = c.checkLayout())
    return failure(std::move(err));
  if (c.kind() != "flush")
    return failure("'" + c.dir() + "' is a '" + c.kind() +
                   "' case, not a flush case");
  KVARN_TRY(k, c.tensor("k_rot", "float16", 3));
  KVARN_TRY(v, c.tensor("v_rot", "float16", 3));
  const RecordLayout &l = c.recordLayout();
  if (k.shape != v.shape || k.shape[1] != l.group || k.shape[2] != l.headDim)
    return failure("k_rot/v_rot must both be [tiles, G, head_dim]");
  int tiles = int(k.shape[0]);
  KVARN_TRY(run, GpuRun::open("flush", {c.presetName(), l.headDim, 1}));
  std::vector<int32_t> ids(tiles);
  for (int t = 0; t < tiles; ++t)
    ids[t] = t;
  KVARN_TRY(pk, run.upload(k.bytes));
  KVARN_TRY(pv, run.upload(v.bytes));
  KVARN_TRY(slots, run.upload(ids));
  KVARN_TRY(blocks, run.upload(ids));
  std::vector<uint8_t> records(size_t(tiles) * l.recordBytes, 0xA5);
  KVARN_TRY(cache, run.upload(records));
  KernelArgs args;
  args.pointer(pk).pointer(pv).pointer(slots).pointer(blocks).pointer(cache)
      .i32(tiles).i32(1).scratch();
  if (kvarn::Error err = run.launch(args))
    return failure(std::move(err));
  if (kvarn::Error err = cache.download(records.data(), records.size()))
    return failure(std::move(err));
  if (kvarn::Error err =
          writeBinaryFile(opts.get("out"), records.data(), records.size()))
    return failure(std::move(err));
  llvm::outs() << llvm::formatv("run flush on {0}: {1} tiles of {2} head_dim "
                                "{3}, {4} B per record -> {5}",
                                run.ctx.info().name, tiles, c.presetName(),
                                l.headDim, l.recordBytes, opts.get("out"));
  if (kvarn::Error err = describeRecordsAgainstCase(c, records))
    return failure(std::move(err));
  llvm::outs() << "\n";
  return kExitOk;
}

/// A flush case's raw tokens appended to a pool of one KV head: token i goes
/// to slot i (block i / G, pool slot i / G), so the pool comes back in the
/// case's [tiles, G, D] layout.
int runAppend(const ParsedOptions &opts) {
  KVARN_TRY(c, loadCaseOption(opts));
  if (c.kind() != "flush")
    return failure("'" + c.dir() + "' is a '" + c.kind() +
                   "' case; append runs on a flush case's k_raw/v_raw");
  KVARN_TRY(k, c.tensor("k_raw", "float16", 3));
  KVARN_TRY(v, c.tensor("v_raw", "float16", 3));
  const RecordLayout &l = c.recordLayout();
  if (k.shape != v.shape || k.shape[1] != l.group || k.shape[2] != l.headDim)
    return failure("k_raw/v_raw must both be [tiles, G, head_dim]");
  int tiles = int(k.shape[0]), tokens = tiles * l.group;
  KVARN_TRY(run, GpuRun::open("append", {c.presetName(), l.headDim, 1}));
  std::vector<int32_t> mapping(tokens), toSlot(tiles);
  for (int t = 0; t < tokens; ++t)
    mapping[t] = t;
  for (int b = 0; b < tiles; ++b)
    toSlot[b] = b;
  KVARN_TRY(dk, run.upload(k.bytes));
  KVARN_TRY(dv, run.upload(v.bytes));
  KVARN_TRY(dm, run.upload(mapping));
  KVARN_TRY(dt, run.upload(toSlot));
  std::vector<uint16_t> pool(2 * size_t(k.numElements()), 0x7E01);
  KVARN_TRY(pk, run.upload(pool.data(), pool.size()));
  KVARN_TRY(pv, run.upload(pool.data(), pool.size()));
  KernelArgs args;
  args.pointer(dk).pointer(dv).pointer(dm).pointer(dt).pointer(pk).pointer(pv)
      .i32(tokens).i32(1).scratch();
  if (kvarn::Error err = run.launch(args))
    return failure(std::move(err));
  size_t half = pool.size() / 2;
  if (kvarn::Error err = pk.download(pool.data(), half * 2))
    return failure(std::move(err));
  if (kvarn::Error err = pv.download(pool.data() + half, half * 2))
    return failure(std::move(err));
  if (kvarn::Error err =
          writeBinaryFile(opts.get("out"), pool.data(), pool.size() * 2))
    return failure(std::move(err));
  llvm::outs() << llvm::formatv("run append on {0}: {1} tokens of head_dim "
                                "{2} rotated -> {3}",
                                run.ctx.info().name, tokens, l.headDim,
                                opts.get("out"));
  if (kvarn::Error err = describeRotationAgainstCase(c, pool))
    return failure(std::move(err));
  llvm::outs() << "\n";
  return kExitOk;
}

/// A decode case's paged cache; fp32 [B, Hq, D] out (the kernel writes fp16).
int runDecode(const ParsedOptions &opts) {
  KVARN_TRY(c, loadCaseOption(opts));
  if (kvarn::Error err = c.checkLayout())
    return failure(std::move(err));
  if (c.kind() != "decode")
    return failure("'" + c.dir() + "' is a '" + c.kind() +
                   "' case, not a decode case");
  KVARN_TRY(q, c.tensor("q", "float16", 3));
  KVARN_TRY(table, c.tensor("block_table", "int32", 2));
  KVARN_TRY(lens, c.tensor("seq_lens", "int32", 1));
  KVARN_TRY(toSlot, c.tensor("block_to_slot", "int32", 1));
  KVARN_TRY(cache, c.tensor("kv_cache", "uint8", 3));
  KVARN_TRY(poolK, c.tensor("pool_k", "float16", 4));
  KVARN_TRY(poolV, c.tensor("pool_v", "float16", 4));
  KVARN_TRY(scale, c.getNumber("softmax_scale"));
  int batch = int(q.shape[0]), hq = int(q.shape[1]), d = int(q.shape[2]);
  int hk = int(cache.shape[1]), maxBlocks = int(table.shape[1]);
  if (hk <= 0 || hq % hk || d != c.headDim() || table.shape[0] != batch)
    return failure("the case's q, block_table and kv_cache shapes disagree");
  KVARN_TRY(run, GpuRun::open("decode", {c.presetName(), d, hq / hk}));
  KVARN_TRY(dq, run.upload(q.bytes));
  KVARN_TRY(dt, run.upload(table.bytes));
  KVARN_TRY(dl, run.upload(lens.bytes));
  KVARN_TRY(ds, run.upload(toSlot.bytes));
  KVARN_TRY(dc, run.upload(cache.bytes));
  KVARN_TRY(dpk, run.upload(poolK.bytes));
  KVARN_TRY(dpv, run.upload(poolV.bytes));
  std::vector<uint16_t> out(q.numElements(), 0);
  KVARN_TRY(dout, run.upload(out));
  KernelArgs args;
  args.pointer(dq)
      .pointer(dt)
      .pointer(dl)
      .pointer(ds)
      .pointer(dc)
      .pointer(dpk)
      .pointer(dpv)
      .pointer(dout)
      .f32(float(scale))
      .i32(/*window=*/0)
      .i32(batch)
      .i32(maxBlocks)
      .i32(hk)
      .scratch();
  if (kvarn::Error err = run.launch(args))
    return failure(std::move(err));
  if (kvarn::Error err = dout.download(out.data(), out.size() * 2))
    return failure(std::move(err));
  std::vector<float> result(out.size());
  for (size_t i = 0; i < out.size(); ++i)
    result[i] = halfToFloat(out[i]);
  if (kvarn::Error err = writeBinaryFile(opts.get("out"), result.data(),
                                         result.size() * sizeof(float)))
    return failure(std::move(err));
  llvm::outs() << llvm::formatv("run decode on {0}: batch {1}, {2} query "
                                "heads, head_dim {3}, {4} -> {5}",
                                run.ctx.info().name, batch, hq, d,
                                c.presetName(), opts.get("out"));
  if (kvarn::Error err = describeAttentionAgainstCase(c, result))
    return failure(std::move(err));
  llvm::outs() << "\n";
  return kExitOk;
}

/// The README's example: the generated flush and decode kernels on bundled
/// golden cases, compared with the reference. Without a GPU it says so and
/// runs the CPU reference on the same cases instead, and succeeds.
int runExample(const ParsedOptions &opts) {
  // --golden, else $KVARN_GOLDEN_DIR (as the tests read it), else the
  // source tree's cases.
  const char *env = std::getenv("KVARN_GOLDEN_DIR");
  std::string golden =
      opts.get("golden", env && *env ? env : KVARN_GOLDEN_DIR);
  std::string outDir = opts.get("out");
  if (outDir.empty()) {
    llvm::SmallString<256> tmp;
    llvm::sys::path::system_temp_directory(/*ErasedOnReboot=*/true, tmp);
    outDir = tmp.str().str();
  } else if (std::error_code ec = llvm::sys::fs::create_directories(outDir)) {
    return failure("cannot create '" + outDir + "': " + ec.message());
  }
  struct Step {
    const char *kernel, *caseName, *output;
  } steps[] = {{"flush", "flush_kvarn_k4v2_g128_d128_a", "example-records.bin"},
               {"decode", "decode_kvarn_k4v2_g128_d128_h32x8_a",
                "example-decode.bin"}};
  auto optionsFor = [&](const Step &step) {
    ParsedOptions o;
    o.values["case"] = golden + "/" + step.caseName;
    o.values["out"] = outDir + "/" + step.output;
    return o;
  };

  kvarn::Expected<Context> ctx = Context::create(0);
  if (!ctx) {
    std::string why;
    kvarn_status_t status = kvarn::consumeError(ctx.takeError(), why);
    if (status != KVARN_ERROR_NO_DRIVER && status != KVARN_ERROR_NO_DEVICE)
      return failure(why);
    llvm::outs() << "run example: no GPU here (" << why
                 << "): the kernels are built but not run; the CPU reference "
                    "on the same cases instead:\n";
    for (const Step &step : steps)
      for (const Command &c : refCommands())
        if (c.path == "ref " + std::string(step.kernel))
          if (int rc = c.run(optionsFor(step)))
            return rc;
    return kExitOk;
  }
  for (const Step &step : steps) {
    int rc = std::string(step.kernel) == "flush" ? runFlush(optionsFor(step))
                                                 : runDecode(optionsFor(step));
    if (rc)
      return rc;
  }
  return kExitOk;
}

} // namespace

std::vector<Command> kvarn::jit::runCommands() {
  std::vector<OptionSpec> caseOptions = {
      {"case", "DIR", "a golden-format case directory (case.json + binaries)",
       /*required=*/true},
      {"out", "FILE", "the output file (raw little-endian bytes)",
       /*required=*/true}};
  return {
      {"run flush", "run flush --case DIR --out FILE",
       "quantize a flush case's k_rot/v_rot tiles with the generated flush "
       "kernel on the GPU; writes records [tiles, record_bytes]",
       caseOptions, runFlush},
      {"run append", "run append --case DIR --out FILE",
       "rotate a flush case's k_raw/v_raw with the generated append kernel on "
       "the GPU; writes K then V, [tiles, G, D] fp16 each",
       caseOptions, runAppend},
      {"run decode", "run decode --case DIR --out FILE",
       "attend over a decode case's paged cache with the generated decode "
       "kernel on the GPU; writes fp32 [B, Hq, D]",
       caseOptions, runDecode},
      {"run example", "run example [--golden DIR] [--out DIR]",
       "run the generated flush and decode kernels on bundled golden cases "
       "and print their error against the reference; without a GPU, say so "
       "and run the CPU reference instead",
       {{"golden", "DIR", "the golden cases (default: $KVARN_GOLDEN_DIR, "
                          "else the source tree's test/data/golden)"},
        {"out", "DIR", "where the outputs go (default: the temporary "
                       "directory)"}},
       runExample},
  };
}
