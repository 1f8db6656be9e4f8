//===- WarmShapes.cpp - the shapes file of `kvarn-jit cache warm` ---------===//
//
// Parsed here, beside the cache, so the cache-reader fuzzer covers it; with
// nlohmann/json, as the runtime core reads JSON.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Runtime/KernelCache.h"

#include "kvarn/DSL/KernelLibrary.h"
#include "kvarn/Support/Error.h"
#include "kvarn/Support/FileIO.h"

#include "kvarn/Support/Strings.h"

#include <algorithm>

using namespace kvarn;
using Json = nlohmann::json;

namespace {
constexpr size_t kMaxWarmKernels = 100000;

/// "sm_90", or 90 as Triton writes a target's arch.
kvarn::Expected<std::string> archOf(const Json &v) {
  if (v.is_string())
    return v.get_ref<const std::string &>();
  if (std::optional<int64_t> n = jsonInteger(v); n && *n > 0 && *n < 1000)
    return "sm_" + std::to_string(*n);
  return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                   "'arch' must be a string (\"sm_90\") or a number (90)");
}
} // namespace

kvarn::Expected<std::vector<WarmShape>>
kvarn::parseWarmShapes(std::string_view text, std::string_view path,
                       std::string_view defaultArch) {
  kvarn::Expected<Json> root = parseJsonDocument(text);
  if (!root)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT, "{0}: not JSON: {1}", path,
                     kvarn::toString(root.takeError()));
  std::string arch = std::string(defaultArch);
  const Json *shapes = root->is_array() ? &*root : nullptr;
  if (root->is_object()) {
    shapes = jsonMember(&*root, "shapes");
    if (const Json *a = jsonMember(&*root, "arch")) {
      kvarn::Expected<std::string> chip = archOf(*a);
      if (!chip)
        return makeError(KVARN_ERROR_INVALID_ARGUMENT, "{0}: {1}", path,
                         kvarn::toString(chip.takeError()));
      arch = *chip;
    }
  }
  if (!shapes || !shapes->is_array())
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: expected a list of shapes or {{\"shapes\": [...]}",
                     path);
  std::vector<WarmShape> items;
  for (size_t i = 0; i < shapes->size(); ++i) {
    auto bad = [&](const std::string &why) {
      return makeError(KVARN_ERROR_INVALID_ARGUMENT, "{0}: shapes[{1}]: {2}",
                       path, i, why);
    };
    const Json &shape = (*shapes)[i];
    if (!shape.is_object())
      return bad("not an object");
    for (const auto &item : shape.items())
      if (!isOneOf(item.key(), {"preset", "head_dim", "gqa", "rope_dim",
                                "dtype", "kernels", "arch"}))
        return bad("unknown field '" + item.key() +
                   "' (fields: preset, head_dim, gqa, rope_dim, dtype, "
                   "kernels, arch)");
    dsl::Specialization spec;
    if (const Json *p = jsonMember(&shape, "preset")) {
      if (!p->is_string())
        return bad("'preset' must be a string");
      spec.preset = p->get_ref<const std::string &>();
    }
    const Json *headDimValue = jsonMember(&shape, "head_dim");
    std::optional<int64_t> headDim =
        headDimValue ? jsonInteger(*headDimValue) : std::nullopt;
    if (!headDim)
      return bad("needs an integer 'head_dim'");
    spec.headDim = int(std::clamp<int64_t>(*headDim, INT32_MIN, INT32_MAX));
    if (const Json *r = jsonMember(&shape, "rope_dim")) {
      std::optional<int64_t> ropeDim = jsonInteger(*r);
      if (!ropeDim)
        return bad("'rope_dim' must be an integer");
      spec.ropeDim = int(std::clamp<int64_t>(*ropeDim, INT32_MIN, INT32_MAX));
    }
    if (const Json *d = jsonMember(&shape, "dtype")) {
      if (!d->is_string())
        return bad("'dtype' must be a string (f16 or bf16)");
      kvarn::Expected<DType> dtype =
          parseDType(d->get_ref<const std::string &>());
      if (!dtype)
        return bad(kvarn::toString(dtype.takeError()));
      spec.dtype = *dtype;
    }
    std::vector<int64_t> gqas = {1};
    if (const Json *g = jsonMember(&shape, "gqa")) {
      gqas.clear();
      if (std::optional<int64_t> one = jsonInteger(*g))
        gqas.push_back(*one);
      else if (g->is_array())
        for (const Json &v : *g) {
          std::optional<int64_t> each = jsonInteger(v);
          if (!each)
            return bad("'gqa' must be an integer or a list of integers");
          gqas.push_back(*each);
        }
      else
        return bad("'gqa' must be an integer or a list of integers");
    }
    std::vector<std::string> kernels =
        dsl::libraryKernelNames(dsl::kernelFamily(spec));
    if (const Json *k = jsonMember(&shape, "kernels")) {
      if (!k->is_array())
        return bad("'kernels' must be a list of kernel names");
      kernels.clear();
      for (const Json &v : *k) {
        if (!v.is_string())
          return bad("kernel names must be strings");
        const std::string &name = v.get_ref<const std::string &>();
        kvarn::Expected<const dsl::LibraryFile *> f =
            dsl::findLibraryKernel(name, spec);
        if (!f)
          return bad(kvarn::toString(f.takeError()));
        kernels.push_back(name);
      }
    }
    std::string chip = arch;
    if (const Json *a = jsonMember(&shape, "arch")) {
      kvarn::Expected<std::string> given = archOf(*a);
      if (!given)
        return bad(kvarn::toString(given.takeError()));
      chip = *given;
    }
    Target target{chip, 0};
    if (kvarn::Error err = validateTarget(target))
      return bad(kvarn::toString(std::move(err)));
    for (int64_t gqa : gqas) {
      spec.gqa = int(std::clamp<int64_t>(gqa, INT32_MIN, INT32_MAX));
      if (kvarn::Error err = spec.check())
        return bad(kvarn::toString(std::move(err)));
      // Every distinct kernel of every preset, head_dim, GQA ratio, dtype
      // and chip is far fewer; a file that lists more repeats itself
      // (e.g. a long "gqa" list) and would only take memory.
      if (items.size() + kernels.size() > kMaxWarmKernels)
        return bad("more than " + std::to_string(kMaxWarmKernels) +
                   " kernels in the file");
      for (const std::string &kernel : kernels)
        items.push_back(WarmShape{KernelRequest{kernel, spec, "", ""}, chip});
    }
  }
  return items;
}
