//===- Kernels.h - contexts and the kernels of one shape --------*- C++ -*-===//
//
// Internal to the runtime: what the C API's context and kernels handles hold,
// and one launcher per kernel of docs/dsl.md in its ABI order.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_RUNTIME_KERNELS_H
#define KVARN_RUNTIME_KERNELS_H

#include "kvarn/DSL/KernelLibrary.h"
#include "kvarn/DSL/Specialization.h"
#include "kvarn/Runtime/Module.h"

#include <array>
#include <atomic>
#include <memory>
#include <mutex>

namespace kvarn::runtime {

/// A GPU's primary context and the stream launches default to. Shared by the
/// handles made from it; `alive` turns false when the caller destroys the
/// context handle, after which device calls through the others fail.
struct ContextState {
  cuda::Context context;
  CUstream stream = nullptr;
  std::atomic<bool> alive{true};

  explicit ContextState(cuda::Context c, CUstream s)
      : context(std::move(c)), stream(s) {}
  kvarn::Error checkAlive(std::string_view what) const;
  /// Waits for `stream` (cuStreamSynchronize).
  kvarn::Error synchronize() const;
};

/// The library's kernels, in its order (dsl::libraryFiles): the dense
/// presets', then the MLA presets'.
enum class KernelKind {
  Append,
  Flush,
  Decode,
  DecodeSplit,
  Combine,
  Verify,
  Materialize,
  MlaAppend,
  MlaFlush,
  MlaDecode,
  MlaDecodeSplit,
  MlaCombine,
  MlaVerify,
};
constexpr size_t kNumKernelKinds = 13;
const char *kernelName(KernelKind kind);
/// The specializations `kind` is built for.
dsl::KernelFamily kernelFamily(KernelKind kind);
/// "decode" -> KernelKind::Decode.
kvarn::Expected<KernelKind> parseKernelName(std::string_view name);

/// The library's kernels for one specialization in one context, each
/// compiled and loaded on first use.
class KernelSet {
public:
  static kvarn::Expected<std::unique_ptr<KernelSet>>
  create(std::shared_ptr<ContextState> context, dsl::Specialization spec);

  const dsl::Specialization &spec() const { return specialization; }
  ContextState &context() const { return *ctx; }
  CUstream streamOr(CUstream stream) const {
    return stream ? stream : ctx->stream;
  }
  /// The loaded kernel, compiling it first if needed (thread-safe).
  kvarn::Expected<const cuda::LoadedKernel *> get(KernelKind kind);

private:
  KernelSet(std::shared_ptr<ContextState> context, dsl::Specialization spec)
      : ctx(std::move(context)), specialization(std::move(spec)),
        family(dsl::kernelFamily(specialization)) {}

  std::shared_ptr<ContextState> ctx;
  dsl::Specialization specialization;
  /// The specialization's kernel family, looked up once (get() checks every
  /// launch's kernel against it).
  dsl::KernelFamily family;
  std::mutex mutex;
  std::array<std::unique_ptr<cuda::LoadedKernel>, kNumKernelKinds> loaded;
};

/// One launcher per kernel, parameters in the ABI order of docs/dsl.md. A
/// zero extent launches nothing; negative extents and null buffers that
/// would be read are errors.
kvarn::Error launchAppend(KernelSet &ks, CUstream stream, CUdeviceptr k,
                          CUdeviceptr v, CUdeviceptr slotMapping,
                          CUdeviceptr blockToSlot, CUdeviceptr poolK,
                          CUdeviceptr poolV, int32_t numTokens,
                          int32_t numKvHeads);
kvarn::Error launchFlush(KernelSet &ks, CUstream stream, CUdeviceptr poolK,
                         CUdeviceptr poolV, CUdeviceptr tileSlots,
                         CUdeviceptr tileBlocks, CUdeviceptr cache,
                         int32_t numTiles, int32_t numKvHeads);
kvarn::Error launchDecode(KernelSet &ks, CUstream stream, CUdeviceptr q,
                          CUdeviceptr blockTable, CUdeviceptr seqLens,
                          CUdeviceptr blockToSlot, CUdeviceptr cache,
                          CUdeviceptr poolK, CUdeviceptr poolV, CUdeviceptr out,
                          float scale, int32_t window, int32_t batch,
                          int32_t maxBlocks, int32_t numKvHeads);
/// decodeSplitCount for `pairs` (requests x Hk; MLA: requests x the
/// programs of one request's heads, HEAD_GROUPS) over `maxBlocks` blocks a
/// request on this set's GPU, with the CTAs per SM decode_split (or
/// mla_decode_split) was built for (its metadata); loads it if it is not
/// yet.
kvarn::Expected<int> decodeSplitCountFor(KernelSet &ks, int64_t pairs,
                                         int64_t maxBlocks);
kvarn::Error launchDecodeSplit(KernelSet &ks, CUstream stream, CUdeviceptr q,
                               CUdeviceptr blockTable, CUdeviceptr seqLens,
                               CUdeviceptr blockToSlot, CUdeviceptr cache,
                               CUdeviceptr poolK, CUdeviceptr poolV,
                               CUdeviceptr partOut, CUdeviceptr partLse,
                               CUdeviceptr out, float scale, int32_t window,
                               int32_t batch, int32_t maxBlocks,
                               int32_t numKvHeads, int32_t numSplits);
kvarn::Error launchVerify(KernelSet &ks, CUstream stream, CUdeviceptr q,
                          CUdeviceptr blockTable, CUdeviceptr contextLens,
                          CUdeviceptr queryLens, CUdeviceptr blockToSlot,
                          CUdeviceptr cache, CUdeviceptr poolK,
                          CUdeviceptr poolV, CUdeviceptr out, float scale,
                          int32_t window, int32_t batch, int32_t maxQueryTokens,
                          int32_t maxBlocks, int32_t numKvHeads);
kvarn::Error launchMaterialize(KernelSet &ks, CUstream stream,
                               CUdeviceptr blockTable, CUdeviceptr seqLens,
                               CUdeviceptr blockToSlot, CUdeviceptr cache,
                               CUdeviceptr poolK, CUdeviceptr poolV,
                               CUdeviceptr outStart, CUdeviceptr outK,
                               CUdeviceptr outV, int32_t batch,
                               int32_t maxBlocks, int32_t numKvHeads);

/// The MLA kernels (lib/kernels/mla_*.kvt), parameters in their ABI order.
kvarn::Error launchMlaAppend(KernelSet &ks, CUstream stream, CUdeviceptr latent,
                             CUdeviceptr kPe, CUdeviceptr slotMapping,
                             CUdeviceptr blockToSlot, CUdeviceptr poolLatent,
                             CUdeviceptr poolPe, int32_t numTokens);
kvarn::Error launchMlaFlush(KernelSet &ks, CUstream stream,
                            CUdeviceptr poolLatent, CUdeviceptr poolPe,
                            CUdeviceptr tileSlots, CUdeviceptr tileBlocks,
                            CUdeviceptr cache, int32_t numTiles);
kvarn::Error launchMlaDecode(KernelSet &ks, CUstream stream, CUdeviceptr q,
                             CUdeviceptr blockTable, CUdeviceptr seqLens,
                             CUdeviceptr blockToSlot, CUdeviceptr cache,
                             CUdeviceptr poolLatent, CUdeviceptr poolPe,
                             CUdeviceptr out, float scale, int32_t batch,
                             int32_t maxBlocks);
/// mla_decode_split then mla_combine.
kvarn::Error launchMlaDecodeSplit(KernelSet &ks, CUstream stream, CUdeviceptr q,
                                  CUdeviceptr blockTable, CUdeviceptr seqLens,
                                  CUdeviceptr blockToSlot, CUdeviceptr cache,
                                  CUdeviceptr poolLatent, CUdeviceptr poolPe,
                                  CUdeviceptr partOut, CUdeviceptr partLse,
                                  CUdeviceptr out, float scale, int32_t batch,
                                  int32_t maxBlocks, int32_t numSplits);

kvarn::Error launchMlaVerify(KernelSet &ks, CUstream stream, CUdeviceptr q,
                             CUdeviceptr blockTable, CUdeviceptr contextLens,
                             CUdeviceptr queryLens, CUdeviceptr blockToSlot,
                             CUdeviceptr cache, CUdeviceptr poolLatent,
                             CUdeviceptr poolPe, CUdeviceptr out, float scale,
                             int32_t batch, int32_t maxQueryTokens,
                             int32_t maxBlocks);

} // namespace kvarn::runtime

#endif // KVARN_RUNTIME_KERNELS_H
