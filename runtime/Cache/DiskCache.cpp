//===- DiskCache.cpp - the on-disk level of the kernel cache --------------===//
//
// Readers never lock: an entry exists once its group file does, and the group
// file is renamed into place after every other file. Writers (compilers) take
// the entry's lock file, look again, and compile only if the entry is still
// missing or bad, so N processes asking for one kernel compile it once.
//
//===----------------------------------------------------------------------===//

#include "DiskCache.h"

#include "kvarn/Layout/Preset.h"
#include "kvarn/Layout/RecordLayout.h"
#include "kvarn/Support/Error.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/Chrono.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Support/xxhash.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace kvarn;
using namespace kvarn::cache;
namespace fs = llvm::sys::fs;
namespace json = llvm::json;

static constexpr int kMetadataFormat = 1;

std::string cache::groupFileName(llvm::StringRef name) {
  return ("__grp__" + name + ".json").str();
}

static std::string joinPath(llvm::StringRef dir, llvm::StringRef file) {
  llvm::SmallString<256> path(dir);
  llvm::sys::path::append(path, file);
  return path.str().str();
}

static std::string checksum(llvm::StringRef bytes) {
  return llvm::utohexstr(llvm::xxh3_64bits(bytes), /*LowerCase=*/true, 16);
}

//===----------------------------------------------------------------------===//
// Files
//===----------------------------------------------------------------------===//

llvm::Error cache::writeFileAtomically(llvm::StringRef path,
                                       llvm::StringRef contents) {
  static std::atomic<unsigned> counter{0};
  std::string temp = (path + ".tmp." + llvm::Twine(::getpid()) + "." +
                      llvm::Twine(counter++))
                         .str();
  int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return makeError(KVARN_ERROR_IO, "cannot write '{0}': {1}", temp,
                     std::strerror(errno));
  const char *p = contents.data();
  size_t left = contents.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      int saved = errno;
      ::close(fd);
      ::unlink(temp.c_str());
      return makeError(KVARN_ERROR_IO, "cannot write '{0}': {1}", temp,
                       std::strerror(saved));
    }
    p += n;
    left -= size_t(n);
  }
  if (::close(fd) != 0 || ::rename(temp.c_str(), path.str().c_str()) != 0) {
    int saved = errno;
    ::unlink(temp.c_str());
    return makeError(KVARN_ERROR_IO, "cannot write '{0}': {1}", path,
                     std::strerror(saved));
  }
  return llvm::Error::success();
}

void cache::touchEntry(llvm::StringRef dir, llvm::StringRef name) {
  std::string group = joinPath(dir, groupFileName(name));
  ::utimensat(AT_FDCWD, group.c_str(), nullptr, 0); // now; best effort
}

llvm::Expected<FileLock> FileLock::acquire(const std::string &path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return makeError(KVARN_ERROR_IO, "cannot open the lock file '{0}': {1}",
                     path, std::strerror(errno));
  while (::flock(fd, LOCK_EX) != 0) {
    if (errno == EINTR)
      continue;
    int saved = errno;
    ::close(fd);
    return makeError(KVARN_ERROR_IO, "cannot lock '{0}': {1}", path,
                     std::strerror(saved));
  }
  return FileLock(fd);
}

FileLock::~FileLock() {
  if (fd >= 0)
    ::close(fd); // releases the flock
}

//===----------------------------------------------------------------------===//
// Metadata
//===----------------------------------------------------------------------===//

std::vector<std::string> cache::signatureFromPtx(llvm::StringRef ptx,
                                                 llvm::StringRef name) {
  std::vector<std::string> types;
  size_t entry = ptx.find((".entry " + name + "(").str());
  if (entry == llvm::StringRef::npos)
    return types;
  llvm::StringRef params = ptx.substr(entry);
  params = params.substr(0, params.find(')'));
  llvm::SmallVector<llvm::StringRef> lines;
  params.split(lines, '\n');
  for (llvm::StringRef line : lines) {
    line = line.trim();
    if (!line.starts_with(".param"))
      continue;
    if (line.contains(".ptr"))
      types.push_back("*i8");
    else if (line.contains(".u64") || line.contains(".s64") ||
             line.contains(".b64"))
      types.push_back("i64");
    else if (line.contains(".f32"))
      types.push_back("fp32");
    else
      types.push_back("i32");
  }
  // The last two are the global and profile scratch pointers, which a
  // Triton launcher appends itself.
  if (types.size() >= 2)
    types.resize(types.size() - 2);
  return types;
}

json::Object cache::buildMetadata(const KernelArtifacts &a,
                                  const KernelRequest &request,
                                  const CacheKey &key,
                                  llvm::StringRef cubinMaker) {
  int arch = 0;
  llvm::StringRef digits = llvm::StringRef(a.chip).drop_front(3); // "sm_"
  digits.take_while(llvm::isDigit).getAsInteger(10, arch);
  json::Array signature;
  for (const std::string &t : a.signature)
    signature.push_back(t);

  json::Object kvarn{
      {"format", kMetadataFormat},
      {"version", compilerIdentity().kvarnVersion},
      {"build_id", compilerIdentity().buildId},
      {"llvm_version", compilerIdentity().llvmVersion},
      {"kernel", request.kernel},
      {"source", request.source.empty() ? "library" : request.sourceName},
      {"preset", request.spec.preset},
      {"head_dim", request.spec.headDim},
      {"gqa", request.spec.gqa},
      {"dtype", spell(request.spec.dtype)},
      {"chip", a.chip},
      {"ptx_version", a.ptxVersion},
      {"num_args", a.numArgs},
      {"programs_per_cta", a.programsPerCta},
      {"signature", std::move(signature)},
      {"cubin_by", cubinMaker.empty() ? json::Value(nullptr)
                                      : json::Value(cubinMaker)},
      {"compile_seconds", a.compileSeconds},
      {"created", int64_t(std::time(nullptr))},
      {"created_by_pid", int64_t(::getpid())},
  };
  if (llvm::Expected<const Preset *> preset = lookupPreset(request.spec.preset)) {
    kvarn["group"] = (*preset)->group;
    kvarn["key_bits"] = (*preset)->keyBits;
    kvarn["value_bits"] = (*preset)->valueBits;
    kvarn["sinkhorn_iters"] = (*preset)->sinkhornIters;
    if (llvm::Expected<RecordLayout> l =
            RecordLayout::get(**preset, request.spec.headDim)) {
      kvarn["record_layout"] = json::Object{
          {"record_bytes", l->recordBytes},
          {"unaligned_bytes", l->unalignedBytes},
          {"k_codes", l->kCodes},
          {"k_scale", l->kScale},
          {"k_zero", l->kZero},
          {"k_token_scale", l->kTokenScale},
          {"v_codes", l->vCodes},
          {"v_channel_scale", l->vChannelScale},
          {"v_scale", l->vScale},
          {"v_zero", l->vZero},
      };
    } else {
      llvm::consumeError(l.takeError());
    }
  } else {
    llvm::consumeError(preset.takeError());
  }
  // The key's inputs; long ones (source text, pipeline) by their checksum.
  json::Object keyFields;
  for (const auto &[name, value] : key.fields)
    keyFields[name] = value.size() > 120 ? "xxh3:" + checksum(value) : value;
  kvarn["key"] = std::move(keyFields);

  // Triton's fields: what triton.compiler.CompiledKernel and the CUDA
  // launcher of Triton 3.x read (docs/cache.md lists them).
  return json::Object{
      {"name", a.name},
      {"hash", a.hash},
      {"target",
       json::Object{{"backend", "cuda"}, {"arch", arch}, {"warp_size", 32}}},
      {"num_warps", a.numWarps},
      {"num_ctas", 1},
      {"num_stages", 1},
      {"shared", a.sharedBytes},
      {"cluster_dims", json::Array{1, 1, 1}},
      {"global_scratch_size", 0},
      {"global_scratch_align", 1},
      {"profile_scratch_size", 0},
      {"profile_scratch_align", 1},
      {"launch_cooperative_grid", false},
      {"launch_pdl", false},
      {"tmem_size", 0},
      {"ptx_version", a.ptxVersion},
      {"arch", ("sm" + llvm::Twine(arch)).str()},
      {"backend_name", "cuda"},
      {"enable_fp_fusion", true},
      {"debug", false},
      {"kvarn", std::move(kvarn)},
  };
}

llvm::Error cache::writeEntry(llvm::StringRef dir, llvm::StringRef name,
                              const std::vector<EntryFile> &files,
                              json::Object metadata,
                              std::string &metadataText) {
  json::Object sums;
  json::Object children;
  for (const EntryFile &f : files) {
    sums[f.name] = json::Object{{"bytes", int64_t(f.contents.size())},
                                {"xxh3", checksum(f.contents)}};
    if (llvm::Error err = writeFileAtomically(joinPath(dir, f.name), f.contents))
      return err;
    children[f.name] = joinPath(dir, f.name);
  }
  if (json::Object *kvarn = metadata.getObject("kvarn"))
    (*kvarn)["files"] = std::move(sums);
  metadataText = llvm::formatv("{0:2}", json::Value(std::move(metadata))).str();
  std::string metadataName = (name + ".json").str();
  if (llvm::Error err =
          writeFileAtomically(joinPath(dir, metadataName), metadataText))
    return err;
  children[metadataName] = joinPath(dir, metadataName);
  // Last: from now on readers see the entry.
  std::string group =
      llvm::formatv("{0:2}", json::Value(json::Object{
                                 {"child_paths", std::move(children)}}))
          .str();
  return writeFileAtomically(joinPath(dir, groupFileName(name)), group);
}

//===----------------------------------------------------------------------===//
// Reading and checking an entry
//===----------------------------------------------------------------------===//

static llvm::Expected<std::string> readWholeFile(const std::string &path) {
  llvm::ErrorOr<std::unique_ptr<llvm::MemoryBuffer>> buffer =
      llvm::MemoryBuffer::getFile(path, /*IsText=*/false,
                                  /*RequiresNullTerminator=*/false);
  if (!buffer)
    return makeError(KVARN_ERROR_IO, "cannot read {0}: {1}",
                     llvm::sys::path::filename(path),
                     buffer.getError().message());
  return (*buffer)->getBuffer().str();
}

EntryRead cache::readEntry(llvm::StringRef dir, llvm::StringRef name,
                           const std::string *expectedHash, bool verifyAll) {
  EntryRead r;
  std::string groupPath = joinPath(dir, groupFileName(name));
  auto bad = [&](const llvm::Twine &why) -> EntryRead & {
    // A group file that went away meanwhile (evicted, cleared, being
    // rebuilt) is a miss, not a corrupt entry.
    r.status = fs::exists(groupPath) ? EntryRead::Bad : EntryRead::Missing;
    r.problem = why.str();
    return r;
  };
  auto takeMessage = [](llvm::Error err) {
    std::string message;
    kvarn::consumeError(std::move(err), message);
    return message;
  };

  llvm::Expected<std::string> groupText = readWholeFile(groupPath);
  if (!groupText) {
    llvm::consumeError(groupText.takeError());
    r.status = EntryRead::Missing;
    return r;
  }
  llvm::Expected<json::Value> group = json::parse(*groupText);
  if (!group)
    return bad("the group file is not JSON (" + takeMessage(group.takeError()) +
               ")");
  const json::Object *children =
      group->getAsObject() ? group->getAsObject()->getObject("child_paths")
                           : nullptr;
  std::string metadataName = (name + ".json").str();
  if (!children || !children->get(metadataName))
    return bad("the group file does not list " + metadataName);

  llvm::Expected<std::string> metadataText =
      readWholeFile(joinPath(dir, metadataName));
  if (!metadataText)
    return bad(takeMessage(metadataText.takeError()));
  llvm::Expected<json::Value> parsed = json::parse(*metadataText);
  if (!parsed || !parsed->getAsObject()) {
    if (!parsed)
      llvm::consumeError(parsed.takeError());
    return bad(metadataName + " is not a JSON object");
  }
  json::Object &m = *parsed->getAsObject();
  const json::Object *kvarn = m.getObject("kvarn");
  if (!kvarn)
    return bad(metadataName + " has no 'kvarn' section (not kvarn's)");
  auto str = [](const json::Object *o, llvm::StringRef field) {
    std::optional<llvm::StringRef> s = o ? o->getString(field) : std::nullopt;
    return s ? s->str() : std::string();
  };
  auto integer = [](const json::Object *o, llvm::StringRef field) {
    std::optional<int64_t> i = o ? o->getInteger(field) : std::nullopt;
    return i ? *i : int64_t(-1);
  };
  const CompilerIdentity &id = compilerIdentity();
  if (integer(kvarn, "format") != kMetadataFormat)
    return bad("metadata format " + llvm::Twine(integer(kvarn, "format")) +
               ", expected " + llvm::Twine(kMetadataFormat));
  if (str(kvarn, "version") != id.kvarnVersion ||
      str(kvarn, "build_id") != id.buildId ||
      str(kvarn, "llvm_version") != id.llvmVersion)
    return bad("made by kvarn " + str(kvarn, "version") + " (build " +
               llvm::StringRef(str(kvarn, "build_id")).take_front(12) +
               ", LLVM " + str(kvarn, "llvm_version") + "), this is " +
               id.kvarnVersion + " (build " +
               llvm::StringRef(id.buildId).take_front(12) + ", LLVM " +
               id.llvmVersion + ")");
  if (str(&m, "name") != name)
    return bad("the metadata names kernel '" + str(&m, "name") + "'");
  std::string hash = str(&m, "hash");
  if (expectedHash ? hash != *expectedHash
                   : llvm::sys::path::filename(dir) != [&] {
                       std::string bytes;
                       if (!llvm::tryGetFromHex(hash, bytes))
                         return std::string();
                       return base32Encode(llvm::ArrayRef<uint8_t>(
                           reinterpret_cast<const uint8_t *>(bytes.data()),
                           bytes.size()));
                     }())
    return bad("the metadata's hash does not match the entry's key");
  const json::Object *files = kvarn->getObject("files");
  if (!files)
    return bad(metadataName + " lists no files");

  KernelArtifacts &a = r.artifacts;
  auto loadFile = [&](llvm::StringRef file, std::string *into) -> bool {
    const json::Object *sum = files->getObject(file);
    if (!sum) {
      bad(metadataName + " has no checksum for " + file);
      return false;
    }
    llvm::Expected<std::string> bytes = readWholeFile(joinPath(dir, file));
    if (!bytes) {
      bad(takeMessage(bytes.takeError()));
      return false;
    }
    if (integer(sum, "bytes") != int64_t(bytes->size())) {
      bad(file + " has " + llvm::Twine(bytes->size()) + " bytes, the metadata " +
          "says " + llvm::Twine(integer(sum, "bytes")) + " (truncated?)");
      return false;
    }
    if (str(sum, "xxh3") != checksum(*bytes)) {
      bad(file + " does not match its checksum");
      return false;
    }
    if (into)
      *into = std::move(*bytes);
    return true;
  };
  std::string ptxName = (name + ".ptx").str(), cubinName = (name + ".cubin").str();
  if (!loadFile(ptxName, &a.ptx))
    return r;
  if (files->get(cubinName) && !loadFile(cubinName, &a.cubin))
    return r;
  if (verifyAll)
    for (const auto &[file, sum] : *files)
      if (file != ptxName && file != cubinName && !loadFile(file, nullptr))
        return r;

  a.name = name.str();
  a.hash = hash;
  a.key = llvm::sys::path::filename(dir).str();
  a.directory = dir.str();
  a.chip = str(kvarn, "chip");
  a.ptxVersion = int(integer(kvarn, "ptx_version"));
  a.numWarps = int(integer(&m, "num_warps"));
  a.sharedBytes = integer(&m, "shared");
  a.numArgs = int(integer(kvarn, "num_args"));
  // Absent in entries older than the field: one program per CTA.
  if (std::optional<int64_t> p = kvarn->getInteger("programs_per_cta"))
    a.programsPerCta = int(*p);
  if (const json::Array *sig = kvarn->getArray("signature"))
    for (const json::Value &t : *sig)
      if (std::optional<llvm::StringRef> s = t.getAsString())
        a.signature.push_back(s->str());
  if (std::optional<double> s = kvarn->getNumber("compile_seconds"))
    a.compileSeconds = *s;
  if (a.numWarps <= 0 || a.sharedBytes < 0 || a.chip.empty())
    return bad(metadataName + " lacks num_warps, shared or the chip");
  if (a.programsPerCta <= 0 || a.numWarps % a.programsPerCta)
    return bad(metadataName + " has programs_per_cta that does not divide "
                              "num_warps");
  a.metadataJson = std::move(*metadataText);
  r.metadata = std::move(m);
  r.status = EntryRead::Ok;
  return r;
}

//===----------------------------------------------------------------------===//
// Listing, clearing, eviction
//===----------------------------------------------------------------------===//

namespace {
struct EntryScan {
  std::string key, directory, name;
  uint64_t bytes = 0;
  int64_t lastUsed = 0;
  bool complete = false;
};

llvm::Expected<std::vector<EntryScan>> scan(llvm::StringRef root) {
  std::vector<EntryScan> entries;
  if (!fs::is_directory(root))
    return entries;
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; it != end && !ec;
       it.increment(ec)) {
    llvm::StringRef key = llvm::sys::path::filename(it->path());
    if (!isCacheKeyDirectory(key) || !fs::is_directory(it->path()))
      continue;
    EntryScan e;
    e.key = key.str();
    e.directory = it->path();
    struct stat st;
    if (::stat(e.directory.c_str(), &st) == 0)
      e.lastUsed = st.st_mtime;
    std::error_code inner;
    for (fs::directory_iterator f(it->path(), inner), fend; f != fend && !inner;
         f.increment(inner)) {
      llvm::StringRef file = llvm::sys::path::filename(f->path());
      if (::stat(f->path().c_str(), &st) != 0)
        continue;
      e.bytes += uint64_t(st.st_size);
      if (file.starts_with("__grp__") && file.ends_with(".json") &&
          !file.contains(".tmp.")) {
        e.complete = true;
        e.name = file.drop_front(7).drop_back(5).str();
        e.lastUsed = st.st_mtime;
      }
    }
    entries.push_back(std::move(e));
  }
  if (ec)
    return makeError(KVARN_ERROR_IO, "cannot list '{0}': {1}", root,
                     ec.message());
  return entries;
}

/// Renames the entry out of readers' sight, then deletes it.
bool removeEntry(llvm::StringRef root, const std::string &directory) {
  static std::atomic<unsigned> counter{0};
  std::string doomed = joinPath(root, (".evicted." + llvm::Twine(::getpid()) +
                                       "." + llvm::Twine(counter++))
                                          .str());
  if (::rename(directory.c_str(), doomed.c_str()) != 0)
    return false;
  (void)fs::remove_directories(doomed, /*IgnoreErrors=*/true);
  return true;
}
} // namespace

llvm::Expected<std::vector<DiskEntry>> kvarn::listDiskCache(llvm::StringRef root,
                                                            bool verify) {
  llvm::Expected<std::vector<EntryScan>> scanned = scan(root);
  if (!scanned)
    return scanned.takeError();
  std::vector<DiskEntry> out;
  for (EntryScan &s : *scanned) {
    DiskEntry e;
    e.key = s.key;
    e.directory = s.directory;
    e.name = s.name;
    e.bytes = s.bytes;
    e.lastUsed = s.lastUsed;
    e.complete = s.complete;
    if (!s.complete) {
      e.problem = "incomplete (no group file: being compiled, or abandoned)";
      out.push_back(std::move(e));
      continue;
    }
    EntryRead r = readEntry(s.directory, s.name, nullptr, verify);
    if (r.status != EntryRead::Ok) {
      e.problem = r.status == EntryRead::Missing && r.problem.empty()
                      ? "the group file went away"
                      : r.problem;
    }
    if (const json::Object *kvarn = r.metadata.getObject("kvarn")) {
      e.preset = kvarn->getString("preset").value_or("").str();
      e.chip = kvarn->getString("chip").value_or("").str();
      e.headDim = int(kvarn->getInteger("head_dim").value_or(0));
      e.gqa = int(kvarn->getInteger("gqa").value_or(0));
      e.dtype = kvarn->getString("dtype").value_or("f16").str();
    } else if (llvm::Expected<std::string> text =
                   readWholeFile(joinPath(s.directory, s.name + ".json"))) {
      // Unusable entries still say what they were, where they can.
      if (llvm::Expected<json::Value> v = json::parse(*text)) {
        if (const json::Object *o = v->getAsObject())
          if (const json::Object *k = o->getObject("kvarn")) {
            e.preset = k->getString("preset").value_or("").str();
            e.chip = k->getString("chip").value_or("").str();
            e.headDim = int(k->getInteger("head_dim").value_or(0));
            e.gqa = int(k->getInteger("gqa").value_or(0));
            e.dtype = k->getString("dtype").value_or("f16").str();
          }
      } else {
        llvm::consumeError(v.takeError());
      }
    } else {
      llvm::consumeError(text.takeError());
    }
    out.push_back(std::move(e));
  }
  std::sort(out.begin(), out.end(), [](const DiskEntry &a, const DiskEntry &b) {
    return std::tie(a.name, a.preset, a.headDim, a.gqa, a.dtype, a.chip,
                    a.key) < std::tie(b.name, b.preset, b.headDim, b.gqa,
                                      b.dtype, b.chip, b.key);
  });
  return out;
}

llvm::Expected<size_t> kvarn::clearDiskCache(llvm::StringRef root) {
  llvm::Expected<std::vector<EntryScan>> scanned = scan(root);
  if (!scanned)
    return scanned.takeError();
  size_t removed = 0;
  for (const EntryScan &s : *scanned)
    removed += removeEntry(root, s.directory);
  // Leftovers of interrupted evictions.
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; it != end && !ec;
       it.increment(ec))
    if (llvm::sys::path::filename(it->path()).starts_with(".evicted."))
      (void)fs::remove_directories(it->path(), /*IgnoreErrors=*/true);
  return removed;
}

llvm::Expected<size_t> kvarn::evictDiskCache(llvm::StringRef root,
                                             uint64_t maxBytes,
                                             llvm::StringRef keep) {
  llvm::Expected<std::vector<EntryScan>> scanned = scan(root);
  if (!scanned)
    return scanned.takeError();
  uint64_t total = 0;
  for (const EntryScan &s : *scanned)
    total += s.bytes;
  if (total <= maxBytes)
    return 0;
  // Oldest first; entries still being written (no group file) are left to
  // their writers unless abandoned for an hour.
  std::vector<const EntryScan *> order;
  int64_t now = std::time(nullptr);
  for (const EntryScan &s : *scanned)
    if (s.key != keep && (s.complete || now - s.lastUsed > 3600))
      order.push_back(&s);
  std::sort(order.begin(), order.end(),
            [](const EntryScan *a, const EntryScan *b) {
              return std::tie(a->lastUsed, a->key) <
                     std::tie(b->lastUsed, b->key);
            });
  size_t removed = 0;
  for (const EntryScan *s : order) {
    if (total <= maxBytes)
      break;
    if (removeEntry(root, s->directory)) {
      total -= std::min(total, s->bytes);
      ++removed;
    }
  }
  return removed;
}
