//===- GoldenCase.cpp - reader for golden-format cases --------------------===//

#include "kvarn/Golden/GoldenCase.h"
#include "kvarn/Layout/MlaRecordLayout.h"
#include "kvarn/Support/Error.h"

#include "llvm/ADT/StringSwitch.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

using namespace kvarn;

int kvarn::dtypeSize(llvm::StringRef dtype) {
  return llvm::StringSwitch<int>(dtype)
      .Case("float16", 2)
      .Case("bfloat16", 2)
      .Case("float32", 4)
      .Case("float64", 8)
      .Case("int32", 4)
      .Case("int64", 8)
      .Case("uint8", 1)
      .Default(0);
}

int64_t Tensor::numElements() const {
  int64_t n = 1;
  for (int64_t s : shape)
    n *= s;
  return n;
}

static kvarn::Error corrupt(llvm::StringRef dir, const llvm::Twine &what) {
  return makeError(KVARN_ERROR_CORRUPT_DATA, "{0}/case.json: {1}", dir,
                   what.str());
}

kvarn::Expected<GoldenCase> GoldenCase::load(llvm::StringRef dir) {
  if (!llvm::sys::fs::is_directory(dir))
    return makeError(KVARN_ERROR_IO, "case directory '{0}' does not exist",
                     dir);
  llvm::SmallString<256> path(dir);
  llvm::sys::path::append(path, "case.json");
  auto buffer = llvm::MemoryBuffer::getFile(path);
  if (!buffer)
    return makeError(KVARN_ERROR_IO, "cannot read '{0}': {1}", path,
                     buffer.getError().message());
  llvm::Expected<llvm::json::Value> parsed =
      llvm::json::parse((*buffer)->getBuffer());
  if (!parsed)
    return corrupt(dir, "not valid JSON: " + llvm::toString(parsed.takeError()));
  llvm::json::Object *obj = parsed->getAsObject();
  if (!obj)
    return corrupt(dir, "the top level is not an object");

  GoldenCase c;
  c.directory = dir.str();
  c.root = std::move(*obj);
  auto kind = c.root.getString("kind");
  auto preset = c.root.getString("preset");
  if (!kind || !preset)
    return corrupt(dir, "missing string field 'kind' or 'preset'");
  c.caseKind = kind->str();
  c.preset = preset->str();
  if (isMlaPresetName(c.preset))
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "{0}: an MLA case ({1}); kvarn-jit ref and run take the "
                     "dense cases, the MLA ones are read by the tests "
                     "(test/unit/MlaCase.h)",
                     dir, c.preset);
  kvarn::Expected<int64_t> headDim = c.getInt("head_dim");
  if (!headDim)
    return headDim.takeError();
  kvarn::Expected<const Preset *> p = lookupPreset(c.preset);
  if (!p)
    return p.takeError();
  if (*headDim < INT32_MIN || *headDim > INT32_MAX)
    return corrupt(dir, "head_dim out of range");
  kvarn::Expected<RecordLayout> layout = RecordLayout::get(**p, int(*headDim));
  if (!layout)
    return layout.takeError();
  c.layout = *layout;
  if (!c.root.getObject("tensors"))
    return corrupt(dir, "missing object 'tensors'");
  return c;
}

kvarn::Expected<int64_t> GoldenCase::getInt(llvm::StringRef key) const {
  if (auto v = root.getInteger(key))
    return *v;
  return corrupt(directory, "missing integer field '" + key + "'");
}

kvarn::Expected<double> GoldenCase::getNumber(llvm::StringRef key) const {
  if (auto v = root.getNumber(key))
    return *v;
  return corrupt(directory, "missing number field '" + key + "'");
}

kvarn::Expected<Tensor> GoldenCase::tensor(llvm::StringRef name,
                                           llvm::StringRef dtype,
                                           int rank) const {
  const llvm::json::Object *entry =
      root.getObject("tensors")->getObject(name);
  if (!entry)
    return corrupt(directory, "no tensor '" + name + "'");
  auto file = entry->getString("file");
  auto type = entry->getString("dtype");
  const llvm::json::Array *shape = entry->getArray("shape");
  if (!file || !type || !shape)
    return corrupt(directory, "tensor '" + name +
                                  "' lacks 'file', 'dtype' or 'shape'");
  if (*type != dtype)
    return corrupt(directory, "tensor '" + name + "' has dtype " + *type +
                                  ", expected " + dtype);
  if (rank >= 0 && shape->size() != size_t(rank))
    return corrupt(directory, "tensor '" + name + "' has rank " +
                                  llvm::Twine(shape->size()) + ", expected " +
                                  llvm::Twine(rank));
  if (file->contains('/') || file->contains("..") || file->empty())
    return corrupt(directory, "tensor '" + name + "' names a file outside "
                                                  "the case: '" + *file + "'");
  Tensor t;
  t.name = name.str();
  t.dtype = type->str();
  int64_t elements = 1;
  for (const llvm::json::Value &dim : *shape) {
    std::optional<int64_t> d = dim.getAsInteger();
    if (!d || *d < 0 || *d > (int64_t(1) << 40))
      return corrupt(directory, "tensor '" + name + "' has a bad shape");
    t.shape.push_back(*d);
    elements *= *d;
    if (elements > (int64_t(1) << 40))
      return corrupt(directory, "tensor '" + name + "' is implausibly large");
  }
  llvm::SmallString<256> path(directory);
  llvm::sys::path::append(path, *file);
  auto buffer = llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                            /*RequiresNullTerminator=*/false);
  if (!buffer)
    return makeError(KVARN_ERROR_IO, "cannot read '{0}': {1}", path,
                     buffer.getError().message());
  int64_t expected = elements * dtypeSize(dtype);
  if (int64_t((*buffer)->getBufferSize()) != expected)
    return makeError(KVARN_ERROR_CORRUPT_DATA,
                     "'{0}' holds {1} bytes, but its shape and dtype need {2}",
                     path, (*buffer)->getBufferSize(), expected);
  llvm::StringRef data = (*buffer)->getBuffer();
  t.bytes.assign(data.begin(), data.end());
  return t;
}

kvarn::Error GoldenCase::checkLayout() const {
  const llvm::json::Object *offsets = root.getObject("offsets");
  if (!offsets)
    return corrupt(directory, "missing object 'offsets'");
  const std::pair<const char *, int64_t> expected[] = {
      {"k_packed", layout.kCodes},       {"k_s_col", layout.kScale},
      {"k_zp", layout.kZero},            {"k_s_row", layout.kTokenScale},
      {"v_packed", layout.vCodes},       {"v_s_col", layout.vChannelScale},
      {"v_s_row", layout.vScale},        {"v_zp", layout.vZero}};
  for (auto [key, value] : expected) {
    std::optional<int64_t> got = offsets->getInteger(key);
    if (!got)
      return corrupt(directory, llvm::Twine("missing offset '") + key + "'");
    if (*got != value)
      return makeError(KVARN_ERROR_CORRUPT_DATA,
                       "{0}: offset {1} is {2}, kvarn's layout says {3}",
                       directory, key, *got, value);
  }
  for (auto [key, value] :
       {std::pair<const char *, int64_t>{"tile_bytes", layout.unalignedBytes},
        {"tile_bytes_aligned", layout.recordBytes}}) {
    kvarn::Expected<int64_t> got = getInt(key);
    if (!got)
      return got.takeError();
    if (*got != value)
      return makeError(KVARN_ERROR_CORRUPT_DATA,
                       "{0}: {1} is {2}, kvarn's layout says {3}", directory,
                       key, *got, value);
  }
  return kvarn::Error::success();
}

kvarn::Error kvarn::writeBinaryFile(llvm::StringRef path, const void *data,
                                    size_t size) {
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec, llvm::sys::fs::OF_None);
  if (ec)
    return makeError(KVARN_ERROR_IO, "cannot write '{0}': {1}", path,
                     ec.message());
  os.write(static_cast<const char *>(data), size);
  os.close();
  if (os.has_error())
    return makeError(KVARN_ERROR_IO, "cannot write '{0}': {1}", path,
                     os.error().message());
  return kvarn::Error::success();
}
