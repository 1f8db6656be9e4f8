//===- WarmShapes.cpp - the shapes file of `kvarn-jit cache warm` ---------===//
//
// Parsed here, beside the cache, so the cache-reader fuzzer covers it.
//
//===----------------------------------------------------------------------===//

#include "kvarn/Runtime/KernelCache.h"

#include "kvarn/DSL/KernelLibrary.h"
#include "kvarn/Support/Error.h"
#include "kvarn/Support/FileIO.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/JSON.h"

#include <algorithm>

using namespace kvarn;
namespace json = llvm::json;

namespace {
constexpr size_t kMaxWarmKernels = 100000;

std::vector<std::string> libraryKernels() {
  std::vector<std::string> names;
  for (const dsl::LibraryFile &f : dsl::libraryFiles())
    if (f.isKernel)
      names.push_back(f.name.str());
  return names;
}

/// "sm_90", or 90 as Triton writes a target's arch.
llvm::Expected<std::string> archOf(const json::Value &v) {
  if (std::optional<llvm::StringRef> s = v.getAsString())
    return s->str();
  if (std::optional<int64_t> n = v.getAsInteger(); n && *n > 0 && *n < 1000)
    return "sm_" + std::to_string(*n);
  return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                   "'arch' must be a string (\"sm_90\") or a number (90)");
}
} // namespace

llvm::Expected<std::vector<WarmShape>>
kvarn::parseWarmShapes(llvm::StringRef text, llvm::StringRef path,
                       llvm::StringRef defaultArch) {
  llvm::Expected<json::Value> root = parseJson(text);
  if (!root)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT, "{0}: not JSON: {1}", path,
                     llvm::toString(root.takeError()));
  std::string arch = defaultArch.str();
  const json::Array *shapes = root->getAsArray();
  if (const json::Object *o = root->getAsObject()) {
    shapes = o->getArray("shapes");
    if (const json::Value *a = o->get("arch")) {
      llvm::Expected<std::string> chip = archOf(*a);
      if (!chip)
        return makeError(KVARN_ERROR_INVALID_ARGUMENT, "{0}: {1}", path,
                         llvm::toString(chip.takeError()));
      arch = *chip;
    }
  }
  if (!shapes)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: expected a list of shapes or {{\"shapes\": [...]}",
                     path);
  std::vector<WarmShape> items;
  for (size_t i = 0; i < shapes->size(); ++i) {
    auto bad = [&](const llvm::Twine &why) {
      return makeError(KVARN_ERROR_INVALID_ARGUMENT, "{0}: shapes[{1}]: {2}",
                       path, i, why.str());
    };
    const json::Object *shape = (*shapes)[i].getAsObject();
    if (!shape)
      return bad("not an object");
    for (const auto &[field, value] : *shape)
      if (!llvm::is_contained(
              {"preset", "head_dim", "gqa", "dtype", "kernels", "arch"},
              field.str()))
        return bad("unknown field '" + field.str() +
                   "' (fields: preset, head_dim, gqa, dtype, kernels, arch)");
    dsl::Specialization spec;
    if (const json::Value *p = shape->get("preset")) {
      if (!p->getAsString())
        return bad("'preset' must be a string");
      spec.preset = p->getAsString()->str();
    }
    std::optional<int64_t> headDim = shape->getInteger("head_dim");
    if (!headDim)
      return bad("needs an integer 'head_dim'");
    spec.headDim = int(std::clamp<int64_t>(*headDim, INT32_MIN, INT32_MAX));
    if (const json::Value *d = shape->get("dtype")) {
      if (!d->getAsString())
        return bad("'dtype' must be a string (f16 or bf16)");
      llvm::Expected<DType> dtype = parseDType(*d->getAsString());
      if (!dtype)
        return bad(llvm::toString(dtype.takeError()));
      spec.dtype = *dtype;
    }
    std::vector<int64_t> gqas = {1};
    if (const json::Value *g = shape->get("gqa")) {
      gqas.clear();
      if (std::optional<int64_t> one = g->getAsInteger())
        gqas.push_back(*one);
      else if (const json::Array *many = g->getAsArray())
        for (const json::Value &v : *many) {
          if (!v.getAsInteger())
            return bad("'gqa' must be an integer or a list of integers");
          gqas.push_back(*v.getAsInteger());
        }
      else
        return bad("'gqa' must be an integer or a list of integers");
    }
    std::vector<std::string> kernels = libraryKernels();
    if (const json::Value *k = shape->get("kernels")) {
      const json::Array *list = k->getAsArray();
      if (!list)
        return bad("'kernels' must be a list of kernel names");
      kernels.clear();
      for (const json::Value &v : *list) {
        std::optional<llvm::StringRef> name = v.getAsString();
        const dsl::LibraryFile *f = name ? dsl::findLibraryFile(*name) : nullptr;
        if (!f || !f->isKernel)
          return bad("unknown kernel " +
                     (name ? "'" + name->str() + "'" : std::string("(not a string)")) +
                     " (library kernels: " + llvm::join(libraryKernels(), ", ") +
                     ")");
        kernels.push_back(name->str());
      }
    }
    std::string chip = arch;
    if (const json::Value *a = shape->get("arch")) {
      llvm::Expected<std::string> given = archOf(*a);
      if (!given)
        return bad(llvm::toString(given.takeError()));
      chip = *given;
    }
    Target target{chip, 0};
    if (llvm::Error err = validateTarget(target))
      return bad(llvm::toString(std::move(err)));
    for (int64_t gqa : gqas) {
      spec.gqa = int(std::clamp<int64_t>(gqa, INT32_MIN, INT32_MAX));
      if (llvm::Error err = spec.check())
        return bad(llvm::toString(std::move(err)));
      // Every distinct kernel of every preset, head_dim, GQA ratio, dtype
      // and chip is far fewer; a file that lists more repeats itself
      // (e.g. a long "gqa" list) and would only take memory.
      if (items.size() + kernels.size() > kMaxWarmKernels)
        return bad("more than " + llvm::Twine(kMaxWarmKernels) +
                   " kernels in the file");
      for (const std::string &kernel : kernels)
        items.push_back(WarmShape{KernelRequest{kernel, spec, "", ""}, chip});
    }
  }
  return items;
}

