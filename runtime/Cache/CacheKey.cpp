//===- CacheKey.cpp - what a cached kernel depends on ---------------------===//
//
// The key lists every input that changes a kernel's code, by name, so a test
// (and a curious user, through the metadata) can see what went in. Inputs
// that only change how the compiler reports (IR printing, timing, stage
// callbacks) are left out. The pass pipeline is not a field: its code is in
// the compiler's sources, which the build id hashes, and its options are
// num_warps and min_ctas_per_sm; so the runtime core, which has no
// compiler, computes the same keys as the JIT.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Runtime/KernelCache.h"

#include "kvarn/DSL/KernelLibrary.h"
#include "kvarn/Layout/Preset.h"
#include "kvarn/Layout/RecordLayout.h"
#include "kvarn/Support/Error.h"
#include "kvarn/Support/Hash.h"
#include "kvarn/Version.h"

#include "KernelCacheBuildId.inc" // KVARN_COMPILER_BUILD_ID

#include "kvarn/Support/Strings.h"

#include <cstdlib>

using namespace kvarn;

std::string kvarn::base32Encode(Span<const uint8_t> bytes) {
  static const char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  for (uint8_t byte : bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out.push_back(kAlphabet[(buffer >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  if (bits > 0)
    out.push_back(kAlphabet[(buffer << (5 - bits)) & 31]);
  return out;
}

bool kvarn::isCacheKeyDirectory(std::string_view name) {
  // 256 bits in 5-bit digits.
  return name.size() == 52 && std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7');
         });
}

Span<const char *const> kvarn::keyedEnvironmentVariables() {
  // KVARN_PTXAS picks the assembler that makes the cached cubin.
  static const char *const kVariables[] = {"KVARN_PTXAS"};
  return kVariables;
}

const CompilerIdentity &kvarn::compilerIdentity() {
  static const CompilerIdentity identity{
      KVARN_VERSION_STRING, KVARN_COMPILER_BUILD_ID, KVARN_LLVM_VERSION};
  return identity;
}

const std::string *CacheKey::find(std::string_view field) const {
  for (const auto &[name, value] : fields)
    if (name == field)
      return &value;
  return nullptr;
}

namespace {

/// The DSL text a library kernel is built from: its file and every module
/// it may import, directly or through another module.
std::string librarySource(const dsl::LibraryFile &kernel) {
  std::string text = "== " + std::string(kernel.fileName) + "\n";
  text += kernel.text;
  for (const dsl::LibraryFile &f : dsl::libraryFiles())
    if (!f.isKernel) {
      text += "\n== " + std::string(f.fileName) + "\n";
      text += f.text;
    }
  return text;
}

} // namespace

kvarn::Expected<CacheKey>
kvarn::computeCacheKey(const KernelRequest &request,
                       const CompileOptions &options) {
  if (kvarn::Error err = request.spec.check())
    return std::move(err);
  Target target = options.target;
  if (kvarn::Error err = validateTarget(target))
    return std::move(err);

  CacheKey key;
  auto add = [&](const char *name, const std::string &value) {
    key.fields.emplace_back(name, value);
  };
  const CompilerIdentity &id = compilerIdentity();
  add("format", "kvarn-cache-2");
  add("kvarn_version", id.kvarnVersion);
  add("build_id", id.buildId);
  add("llvm_version", id.llvmVersion);
  add("kernel", request.kernel);
  if (request.source.empty()) {
    kvarn::Expected<const dsl::LibraryFile *> file =
        dsl::findLibraryKernel(request.kernel, request.spec);
    if (!file)
      return file.takeError();
    add("source_name", "library:" + std::string((*file)->fileName));
    add("source", librarySource(**file));
  } else {
    add("source_name", request.sourceName);
    add("source", request.source);
  }
  // The preset's fields, not only its name: a preset table that changed
  // between versions gives new keys.
  add("preset", request.spec.preset);
  if (request.spec.isMla()) {
    const MlaPreset &p = *kvarn::cantFail(lookupMlaPreset(request.spec.preset));
    MlaRecordLayout layout = kvarn::cantFail(
        MlaRecordLayout::get(p, request.spec.headDim, request.spec.ropeDim));
    add("latent_bits", std::to_string(p.bits));
    add("group", std::to_string(p.group));
    add("sinkhorn_iters", std::to_string(p.sinkhornIters));
    add("head_dim", std::to_string(request.spec.headDim));
    add("rope_dim", std::to_string(request.spec.ropeDim));
    add("gqa", std::to_string(request.spec.gqa));
    add("record_bytes", std::to_string(layout.recordBytes));
  } else {
    const Preset &p = *kvarn::cantFail(lookupPreset(request.spec.preset));
    RecordLayout layout =
        kvarn::cantFail(RecordLayout::get(p, request.spec.headDim));
    add("key_bits", std::to_string(p.keyBits));
    add("value_bits", std::to_string(p.valueBits));
    add("group", std::to_string(p.group));
    add("sinkhorn_iters", std::to_string(p.sinkhornIters));
    add("head_dim", std::to_string(request.spec.headDim));
    add("gqa", std::to_string(request.spec.gqa));
    add("record_bytes", std::to_string(layout.recordBytes));
  }
  // The element types of the ABI (docs/dsl.md): the activations (q, append's
  // k/v, outputs) in the specialization's dtype; the fp16 pool, fp32
  // accumulation and byte records are fixed.
  add("dtypes", "q,k,v,out=" + std::string(spell(request.spec.dtype)) +
                    " pool=f16 accumulate=f32 records=u8");
  add("chip", target.chip);
  add("ptx_version", std::to_string(target.ptxVersion));
  add("codegen", "nvptx64-nvidia-cuda O3 " + target.features());
  add("num_warps", std::to_string(options.numWarps));
  add("min_ctas_per_sm", std::to_string(options.minCtasPerSM));
  if (options.warpStates) // keys without it stay as they were
    add("warp_states", "1");
  if (options.pipelineCopies)
    add("pipeline_copies", "1");
  for (const char *variable : keyedEnvironmentVariables()) {
    const char *value = std::getenv(variable);
    key.fields.emplace_back(std::string("env:") + variable,
                            value ? value : "<unset>");
  }

  // Length-prefixed fields, so no two lists serialize alike.
  Sha256 sha;
  for (const auto &[name, value] : key.fields) {
    std::string header = name;
    header.push_back('\0');
    header += std::to_string(value.size()) + "\n";
    sha.update(header);
    sha.update(value);
  }
  std::array<uint8_t, 32> digest = sha.final();
  key.hash = hexBytes(digest.data(), digest.size(), /*lowerCase=*/true);
  key.directory = base32Encode(digest);
  return key;
}
