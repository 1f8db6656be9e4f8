//===- Kernels.cpp - contexts and the kernels of one shape ----------------===//

#include "Kernels.h"
#include "Internal.h"

#include "kvarn/Codegen/KernelCompiler.h"
#include "kvarn/DSL/KernelLibrary.h"
#include "kvarn/Runtime/DecodeSplit.h"
#include "kvarn/Runtime/KernelCache.h"
#include "kvarn/Support/Error.h"

#include <limits>

using namespace kvarn;
using namespace kvarn::runtime;
using namespace kvarn::cuda;

kvarn::Error ContextState::checkAlive(std::string_view what) const {
  if (!alive.load())
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: its context was destroyed", what);
  return kvarn::Error::success();
}

kvarn::Error ContextState::synchronize() const {
  KVARN_ENTER_CONTEXT(context);
  return KVARN_CUDA_CHECK(context.driver(), cuStreamSynchronize, stream);
}

// The kernels' names are the library's (dsl::libraryFiles: kernels first,
// in KernelKind's order); nothing here spells them again.
static Span<const dsl::LibraryFile> libraryKernels() {
  Span<const dsl::LibraryFile> files = dsl::libraryFiles();
  size_t n = 0;
  while (n < files.size() && files[n].isKernel)
    ++n;
  assert(n == kNumKernelKinds && "KernelKind and the kernel library differ");
  return Span<const dsl::LibraryFile>(files.data(), n);
}

const char *kvarn::runtime::kernelName(KernelKind kind) {
  // The library's names are literals embedded at build time.
  return libraryKernels()[size_t(kind)].name.data();
}

dsl::KernelFamily kvarn::runtime::kernelFamily(KernelKind kind) {
  return libraryKernels()[size_t(kind)].family;
}

kvarn::Expected<KernelKind>
kvarn::runtime::parseKernelName(std::string_view name) {
  Span<const dsl::LibraryFile> kernels = libraryKernels();
  for (size_t i = 0; i < kernels.size(); ++i)
    if (name == kernels[i].name)
      return KernelKind(i);
  std::string known;
  for (const dsl::LibraryFile &k : kernels)
    known += (known.empty() ? "" : ", ") + std::string(k.name);
  return makeError(KVARN_ERROR_INVALID_ARGUMENT, "unknown kernel '{0}' ({1})",
                   name, known);
}

kvarn::Expected<std::unique_ptr<KernelSet>>
KernelSet::create(std::shared_ptr<ContextState> context,
                  dsl::Specialization spec) {
  if (kvarn::Error e = spec.check())
    return std::move(e);
  return std::unique_ptr<KernelSet>(
      new KernelSet(std::move(context), std::move(spec)));
}

/// The process's kernel cache: memory, and disk at $KVARN_CACHE_DIR (see
/// docs/cache.md). Never destroyed: it holds only artifacts, no GPU state.
static KernelCache &processKernelCache() {
  static KernelCache *cache = new KernelCache();
  return *cache;
}

/// One library kernel for the context's GPU, from the cache or compiled,
/// loaded into the context.
static kvarn::Expected<LoadedKernel>
compileAndLoad(const Context &context, const char *kernel,
               const dsl::Specialization &spec) {
  CompileOptions options;
  options.target.chip = context.info().arch();
  kvarn::Expected<CacheResult> found = processKernelCache().getOrCompile(
      {kernel, spec, "", ""}, options, &context);
  if (!found)
    return found.takeError();
  return LoadedKernel::load(context, found->artifacts->image());
}

kvarn::Expected<const LoadedKernel *> KernelSet::get(KernelKind kind) {
  if (kernelFamily(kind) != family)
    return makeError(
        KVARN_ERROR_INVALID_ARGUMENT,
        "'{0}' is built for {1} presets, and these kernels are {2}'s, {3} "
        "({4})",
        kernelName(kind),
        kernelFamily(kind) == dsl::KernelFamily::Mla ? "MLA" : "dense",
        specialization.preset,
        specialization.isMla() ? "an MLA preset" : "a dense preset",
        specialization.isMla()
            ? "use the kvarn_mla_* calls"
            : "MLA kernels come from kvarn_mla_kernels_create");
  if (kvarn::Error e = ctx->checkAlive(kernelName(kind)))
    return std::move(e);
  std::lock_guard<std::mutex> lock(mutex);
  std::unique_ptr<LoadedKernel> &slot = loaded[size_t(kind)];
  if (!slot) {
    kvarn::Expected<LoadedKernel> k =
        compileAndLoad(ctx->context, kernelName(kind), specialization);
    if (!k)
      return withContext(k.takeError(),
                         format("{0} '{1}' for {2}",
                                linkedCompiler() ? "compiling" : "loading",
                                kernelName(kind), specialization.describe()));
    slot = std::make_unique<LoadedKernel>(std::move(*k));
  }
  return slot.get();
}

namespace {
/// Checks extents and required pointers, then launches with the arguments
/// bound by name to the kernel's ABI (its .kvt parameters, in their order).
struct Launch {
  KernelSet &ks;
  KernelKind kind;
  /// Integers that must not be negative; any of them 0 launches nothing.
  std::vector<std::pair<const char *, int64_t>> extents;
  /// Every argument by its parameter's name; every pointer must be set.
  std::vector<NamedArg> args;

  /// Launches the grid the kernel declares for the arguments (its ABI).
  kvarn::Error run(CUstream stream) {
    const char *name = kernelName(kind);
    bool empty = false;
    for (auto [what, n] : extents) {
      if (n < 0)
        return makeError(KVARN_ERROR_INVALID_ARGUMENT, "{0}: {1} is negative ({2})",
                         name, what, n);
      empty |= n == 0;
    }
    if (empty)
      return kvarn::Error::success();
    for (const NamedArg &a : args)
      if (a.kind == KernelArgs::Kind::Pointer && !a.bits)
        return makeError(KVARN_ERROR_INVALID_ARGUMENT, "{0}: {1} is null", name,
                         a.name);
    kvarn::Expected<const LoadedKernel *> k = ks.get(kind);
    if (!k)
      return k.takeError();
    kvarn::Expected<KernelArgs> bound = bindArguments(name, (*k)->abi(), args);
    if (!bound)
      return bound.takeError();
    return withContext((*k)->launch(*bound, ks.streamOr(stream)),
                       std::string("launching ") + name);
  }
};
} // namespace

kvarn::Error kvarn::runtime::launchAppend(
    KernelSet &ks, CUstream stream, CUdeviceptr k, CUdeviceptr v,
    CUdeviceptr slotMapping, CUdeviceptr blockToSlot, CUdeviceptr poolK,
    CUdeviceptr poolV, int32_t numTokens, int32_t numKvHeads) {
  return Launch{ks,
                KernelKind::Append,
                {{"num_tokens", numTokens}, {"num_kv_heads", numKvHeads}},
                {{"k", k},
                 {"v", v},
                 {"slot_mapping", slotMapping},
                 {"block_to_slot", blockToSlot},
                 {"pool_k", poolK},
                 {"pool_v", poolV},
                 {"num_tokens", numTokens},
                 {"num_kv_heads", numKvHeads}}}
      .run(stream);
}

kvarn::Error kvarn::runtime::launchFlush(KernelSet &ks, CUstream stream,
                                         CUdeviceptr poolK, CUdeviceptr poolV,
                                         CUdeviceptr tileSlots,
                                         CUdeviceptr tileBlocks,
                                         CUdeviceptr cache, int32_t numTiles,
                                         int32_t numKvHeads) {
  return Launch{ks,
                KernelKind::Flush,
                {{"num_tiles", numTiles}, {"num_kv_heads", numKvHeads}},
                {{"pool_k", poolK},
                 {"pool_v", poolV},
                 {"tile_slots", tileSlots},
                 {"tile_blocks", tileBlocks},
                 {"cache", cache},
                 {"num_tiles", numTiles},
                 {"num_kv_heads", numKvHeads}}}
      .run(stream);
}

/// A sliding window is a token count; 0 means none.
static kvarn::Error checkWindow(const char *kernel, int32_t window) {
  if (window < 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: window is {1} tokens; it must be >= 0 (0: no "
                     "sliding window)",
                     kernel, window);
  return kvarn::Error::success();
}

kvarn::Error kvarn::runtime::launchDecode(
    KernelSet &ks, CUstream stream, CUdeviceptr q, CUdeviceptr blockTable,
    CUdeviceptr seqLens, CUdeviceptr blockToSlot, CUdeviceptr cache,
    CUdeviceptr poolK, CUdeviceptr poolV, CUdeviceptr out, float scale,
    int32_t window, int32_t batch, int32_t maxBlocks, int32_t numKvHeads) {
  if (maxBlocks < 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT, "decode: max_blocks is negative ({0})", maxBlocks);
  if (kvarn::Error e = checkWindow("decode", window))
    return e;
  return Launch{ks,
                KernelKind::Decode,
                {{"batch", batch}, {"num_kv_heads", numKvHeads}},
                {{"q", q},
                 {"block_table", blockTable},
                 {"seq_lens", seqLens},
                 {"block_to_slot", blockToSlot},
                 {"cache", cache},
                 {"pool_k", poolK},
                 {"pool_v", poolV},
                 {"out", out},
                 {"softmax_scale", scale},
                 {"window", window},
                 {"batch", batch},
                 {"max_blocks", maxBlocks},
                 {"num_kv_heads", numKvHeads}}}
      .run(stream);
}

kvarn::Expected<int> kvarn::runtime::decodeSplitCountFor(KernelSet &ks,
                                                         int64_t pairs,
                                                         int64_t maxBlocks) {
  kvarn::Expected<const LoadedKernel *> split = ks.get(
      ks.spec().isMla() ? KernelKind::MlaDecodeSplit : KernelKind::DecodeSplit);
  if (!split)
    return split.takeError();
  return decodeSplitCount({pairs, maxBlocks,
                           ks.context().context.info().multiprocessors,
                           (*split)->ctasPerSM()});
}

kvarn::Error kvarn::runtime::launchDecodeSplit(
    KernelSet &ks, CUstream stream, CUdeviceptr q, CUdeviceptr blockTable,
    CUdeviceptr seqLens, CUdeviceptr blockToSlot, CUdeviceptr cache,
    CUdeviceptr poolK, CUdeviceptr poolV, CUdeviceptr partOut,
    CUdeviceptr partLse, CUdeviceptr out, float scale, int32_t window,
    int32_t batch, int32_t maxBlocks, int32_t numKvHeads, int32_t numSplits) {
  if (maxBlocks < 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT, "decode_split: max_blocks is negative ({0})", maxBlocks);
  if (kvarn::Error e = checkWindow("decode_split", window))
    return e;
  if (numSplits < 1)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "decode_split: num_splits must be at least 1, got {0}",
                     numSplits);
  // decode_split numbers its partials (b x Hk + h) x MAX_SPLITS + chunk in
  // 32 bits (one register across the attention loop, not two).
  if (int64_t(batch) * numKvHeads * kDecodeMaxSplits >
      std::numeric_limits<int32_t>::max())
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "decode_split: batch {0} x num_kv_heads {1} x {2} "
                     "splits must fit in 32 bits",
                     batch, numKvHeads, kDecodeMaxSplits);
  // combine's output, checked before decode_split writes anything.
  if (batch > 0 && numKvHeads > 0 && !out)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT, "decode_split: out is null");
  // Both kernels are fetched first so a compile failure launches nothing.
  for (KernelKind kind : {KernelKind::DecodeSplit, KernelKind::Combine})
    if (batch > 0 && numKvHeads > 0)
      if (kvarn::Expected<const LoadedKernel *> k = ks.get(kind); !k)
        return k.takeError();
  if (kvarn::Error e = Launch{ks,
                              KernelKind::DecodeSplit,
                              {{"batch", batch}, {"num_kv_heads", numKvHeads}},
                              {{"q", q},
                               {"block_table", blockTable},
                               {"seq_lens", seqLens},
                               {"block_to_slot", blockToSlot},
                               {"cache", cache},
                               {"pool_k", poolK},
                               {"pool_v", poolV},
                               {"part_out", partOut},
                               {"part_lse", partLse},
                               {"softmax_scale", scale},
                               {"window", window},
                               {"batch", batch},
                               {"max_blocks", maxBlocks},
                               {"num_kv_heads", numKvHeads},
                               {"num_splits", numSplits}}}
                           .run(stream))
    return e;
  return Launch{ks,
                KernelKind::Combine,
                {{"batch", batch}, {"num_kv_heads", numKvHeads}},
                {{"part_out", partOut},
                 {"part_lse", partLse},
                 {"seq_lens", seqLens},
                 {"out", out},
                 {"window", window},
                 {"batch", batch},
                 {"num_kv_heads", numKvHeads},
                 {"num_splits", numSplits}}}
      .run(stream);
}

kvarn::Error kvarn::runtime::launchVerify(
    KernelSet &ks, CUstream stream, CUdeviceptr q, CUdeviceptr blockTable,
    CUdeviceptr contextLens, CUdeviceptr queryLens, CUdeviceptr blockToSlot,
    CUdeviceptr cache, CUdeviceptr poolK, CUdeviceptr poolV, CUdeviceptr out,
    float scale, int32_t window, int32_t batch, int32_t maxQueryTokens,
    int32_t maxBlocks, int32_t numKvHeads) {
  if (maxBlocks < 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT, "verify: max_blocks is negative ({0})", maxBlocks);
  if (kvarn::Error e = checkWindow("verify", window))
    return e;
  return Launch{ks,
                KernelKind::Verify,
                {{"batch", batch},
                 {"num_kv_heads", numKvHeads},
                 {"max_query_tokens", maxQueryTokens}},
                {{"q", q},
                 {"block_table", blockTable},
                 {"context_lens", contextLens},
                 {"query_lens", queryLens},
                 {"block_to_slot", blockToSlot},
                 {"cache", cache},
                 {"pool_k", poolK},
                 {"pool_v", poolV},
                 {"out", out},
                 {"softmax_scale", scale},
                 {"window", window},
                 {"batch", batch},
                 {"max_query_tokens", maxQueryTokens},
                 {"max_blocks", maxBlocks},
                 {"num_kv_heads", numKvHeads}}}
      .run(stream);
}

kvarn::Error kvarn::runtime::launchMaterialize(
    KernelSet &ks, CUstream stream, CUdeviceptr blockTable, CUdeviceptr seqLens,
    CUdeviceptr blockToSlot, CUdeviceptr cache, CUdeviceptr poolK,
    CUdeviceptr poolV, CUdeviceptr outStart, CUdeviceptr outK, CUdeviceptr outV,
    int32_t batch, int32_t maxBlocks, int32_t numKvHeads) {
  return Launch{ks,
                KernelKind::Materialize,
                {{"batch", batch},
                 {"num_kv_heads", numKvHeads},
                 {"max_blocks", maxBlocks}},
                {{"block_table", blockTable},
                 {"seq_lens", seqLens},
                 {"block_to_slot", blockToSlot},
                 {"cache", cache},
                 {"pool_k", poolK},
                 {"pool_v", poolV},
                 {"out_start", outStart},
                 {"out_k", outK},
                 {"out_v", outV},
                 {"batch", batch},
                 {"max_blocks", maxBlocks},
                 {"num_kv_heads", numKvHeads}}}
      .run(stream);
}

kvarn::Error kvarn::runtime::launchMlaAppend(
    KernelSet &ks, CUstream stream, CUdeviceptr latent, CUdeviceptr kPe,
    CUdeviceptr slotMapping, CUdeviceptr blockToSlot, CUdeviceptr poolLatent,
    CUdeviceptr poolPe, int32_t numTokens) {
  return Launch{ks,
                KernelKind::MlaAppend,
                {{"num_tokens", numTokens}},
                {{"latent", latent},
                 {"k_pe", kPe},
                 {"slot_mapping", slotMapping},
                 {"block_to_slot", blockToSlot},
                 {"pool_latent", poolLatent},
                 {"pool_pe", poolPe},
                 {"num_tokens", numTokens}}}
      .run(stream);
}

kvarn::Error
kvarn::runtime::launchMlaFlush(KernelSet &ks, CUstream stream,
                               CUdeviceptr poolLatent, CUdeviceptr poolPe,
                               CUdeviceptr tileSlots, CUdeviceptr tileBlocks,
                               CUdeviceptr cache, int32_t numTiles) {
  return Launch{ks,
                KernelKind::MlaFlush,
                {{"num_tiles", numTiles}},
                {{"pool_latent", poolLatent},
                 {"pool_pe", poolPe},
                 {"tile_slots", tileSlots},
                 {"tile_blocks", tileBlocks},
                 {"cache", cache},
                 {"num_tiles", numTiles}}}
      .run(stream);
}

kvarn::Error kvarn::runtime::launchMlaDecode(
    KernelSet &ks, CUstream stream, CUdeviceptr q, CUdeviceptr blockTable,
    CUdeviceptr seqLens, CUdeviceptr blockToSlot, CUdeviceptr cache,
    CUdeviceptr poolLatent, CUdeviceptr poolPe, CUdeviceptr out, float scale,
    int32_t batch, int32_t maxBlocks) {
  if (maxBlocks < 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "mla_decode: max_blocks is negative ({0})", maxBlocks);
  return Launch{ks,
                KernelKind::MlaDecode,
                {{"batch", batch}},
                {{"q", q},
                 {"block_table", blockTable},
                 {"seq_lens", seqLens},
                 {"block_to_slot", blockToSlot},
                 {"cache", cache},
                 {"pool_latent", poolLatent},
                 {"pool_pe", poolPe},
                 {"out", out},
                 {"softmax_scale", scale},
                 {"batch", batch},
                 {"max_blocks", maxBlocks}}}
      .run(stream);
}

kvarn::Error kvarn::runtime::launchMlaDecodeSplit(
    KernelSet &ks, CUstream stream, CUdeviceptr q, CUdeviceptr blockTable,
    CUdeviceptr seqLens, CUdeviceptr blockToSlot, CUdeviceptr cache,
    CUdeviceptr poolLatent, CUdeviceptr poolPe, CUdeviceptr partOut,
    CUdeviceptr partLse, CUdeviceptr out, float scale, int32_t batch,
    int32_t maxBlocks, int32_t numSplits) {
  if (maxBlocks < 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "mla_decode_split: max_blocks is negative ({0})",
                     maxBlocks);
  if (numSplits < 1)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "mla_decode_split: num_splits must be at least 1, got {0}",
                     numSplits);
  if (batch > 0 && !out)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "mla_decode_split: out is null");
  // Both kernels are fetched first so a compile failure launches nothing.
  for (KernelKind kind : {KernelKind::MlaDecodeSplit, KernelKind::MlaCombine})
    if (batch > 0)
      if (kvarn::Expected<const LoadedKernel *> k = ks.get(kind); !k)
        return k.takeError();
  if (kvarn::Error e = Launch{ks,
                              KernelKind::MlaDecodeSplit,
                              {{"batch", batch}},
                              {{"q", q},
                               {"block_table", blockTable},
                               {"seq_lens", seqLens},
                               {"block_to_slot", blockToSlot},
                               {"cache", cache},
                               {"pool_latent", poolLatent},
                               {"pool_pe", poolPe},
                               {"part_out", partOut},
                               {"part_lse", partLse},
                               {"softmax_scale", scale},
                               {"batch", batch},
                               {"max_blocks", maxBlocks},
                               {"num_splits", numSplits}}}
                           .run(stream))
    return e;
  return Launch{ks,
                KernelKind::MlaCombine,
                {{"batch", batch}},
                {{"part_out", partOut},
                 {"part_lse", partLse},
                 {"seq_lens", seqLens},
                 {"out", out},
                 {"batch", batch},
                 {"num_splits", numSplits}}}
      .run(stream);
}

kvarn::Error kvarn::runtime::launchMlaVerify(
    KernelSet &ks, CUstream stream, CUdeviceptr q, CUdeviceptr blockTable,
    CUdeviceptr contextLens, CUdeviceptr queryLens, CUdeviceptr blockToSlot,
    CUdeviceptr cache, CUdeviceptr poolLatent, CUdeviceptr poolPe,
    CUdeviceptr out, float scale, int32_t batch, int32_t maxQueryTokens,
    int32_t maxBlocks) {
  if (maxBlocks < 0)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "mla_verify: max_blocks is negative ({0})", maxBlocks);
  return Launch{ks,
                KernelKind::MlaVerify,
                {{"batch", batch}, {"max_query_tokens", maxQueryTokens}},
                {{"q", q},
                 {"block_table", blockTable},
                 {"context_lens", contextLens},
                 {"query_lens", queryLens},
                 {"block_to_slot", blockToSlot},
                 {"cache", cache},
                 {"pool_latent", poolLatent},
                 {"pool_pe", poolPe},
                 {"out", out},
                 {"softmax_scale", scale},
                 {"batch", batch},
                 {"max_query_tokens", maxQueryTokens},
                 {"max_blocks", maxBlocks}}}
      .run(stream);
}
