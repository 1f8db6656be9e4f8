//===- DiskCache.cpp - the on-disk level of the kernel cache --------------===//
//
// Readers never lock: an entry exists once its group file does, and the group
// file is renamed into place after every other file. Writers (compilers) take
// the entry's lock file, look again, and compile only if the entry is still
// missing or bad, so N processes asking for one kernel compile it once.
//
//===----------------------------------------------------------------------===//

#include "DiskCache.h"

#include "kvarn/Codegen/LaunchPolicy.h"
#include "kvarn/Layout/Preset.h"
#include "kvarn/Layout/RecordLayout.h"
#include "kvarn/Support/Error.h"
#include "kvarn/Support/FileIO.h"
#include "kvarn/Support/Hash.h"

#include "kvarn/Support/Strings.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <dirent.h>
#include <fcntl.h>
#include <filesystem>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace kvarn;
using namespace kvarn::cache;
using Json = nlohmann::json;

// 2: the metadata carries its own checksum (kvarn.metadata_xxh3); 3: that
// checksum is over nlohmann/json's compact text (2's was llvm::json's, which
// spells some numbers otherwise: a format-2 entry is stale, not edited).
static constexpr int kMetadataFormat = 3;

std::string cache::groupFileName(std::string_view name) {
  return "__grp__" + std::string(name) + ".json";
}

static std::string checksum(std::string_view bytes) {
  return hexString(xxh3_64(bytes), /*lowerCase=*/true, 16);
}

//===----------------------------------------------------------------------===//
// Files
//===----------------------------------------------------------------------===//

static bool isIdentifier(std::string_view s) {
  return !s.empty() && (isAlpha(s[0]) || s[0] == '_') &&
         std::all_of(s.begin(), s.end(),
                     [](char c) { return isAlnum(c) || c == '_'; });
}

bool cache::isCacheFileName(std::string_view file) {
  // <file>.tmp.<pid>.<n>: a temporary of writeFileAtomically.
  if (size_t tmp = file.find(".tmp."); tmp != std::string_view::npos) {
    std::string_view pid, n;
    std::tie(pid, n) = splitOnce(file.substr(tmp + 5), '.');
    if (pid.empty() || n.empty() || !allDigits(pid) || !allDigits(n))
      return false;
    file = file.substr(0, tmp);
  }
  if (consumeFront(file, "__grp__"))
    return consumeBack(file, ".json") && isIdentifier(file);
  size_t dot = file.find('.');
  if (dot == std::string_view::npos || !isIdentifier(file.substr(0, dot)))
    return false;
  return isOneOf(file.substr(dot),
                 {".kvt", ".kvt.mlir", ".kvgpu.mlir", ".nvvm.mlir", ".llir",
                  ".ptx", ".cubin", ".json", ".lock"});
}

kvarn::Expected<EntryDir> EntryDir::open(const std::string &path, bool create,
                                         int *errnoOut) {
  auto fail = [&](int err, const std::string &why) {
    if (errnoOut)
      *errnoOut = err;
    return makeError(KVARN_ERROR_IO, "{0}", why);
  };
  if (create) {
    // The root may be a link (a user's choice); the entry may not.
    // Something already there is left to the mkdir below to report.
    std::string root(parentPath(path));
    std::error_code ec;
    if (!root.empty() && !std::filesystem::exists(root, ec) && !ec)
      std::filesystem::create_directories(root, ec);
    if (ec)
      return fail(ec.value(), "cannot create the cache directory '" + root +
                                  "': " + ec.message());
    if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST)
      return fail(errno, "cannot create the cache directory '" + path +
                             "': " + std::strerror(errno));
  }
  int fd = ::open(path.c_str(),
                  O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    struct stat st;
    if ((err == ELOOP || err == ENOTDIR) && ::lstat(path.c_str(), &st) == 0)
      return fail(err,
                  std::string(S_ISLNK(st.st_mode) ? "a symbolic link"
                                                  : "not a directory") +
                      " is in the entry's place (not kvarn's; left alone)");
    return fail(err,
                "cannot open the entry: " + std::string(std::strerror(err)));
  }
  if (errnoOut)
    *errnoOut = 0;
  return EntryDir(fd, path);
}

EntryDir::~EntryDir() {
  if (fd >= 0)
    ::close(fd);
}

kvarn::Error cache::writeFileAtomically(const EntryDir &dir,
                                        std::string_view file,
                                        std::string_view contents) {
  static std::atomic<unsigned> counter{0};
  std::string temp = std::string(file) + ".tmp." + std::to_string(::getpid()) +
                     "." + std::to_string(counter++);
  std::string path = joinPath(dir.path(), file);
  auto create = [&] {
    return ::openat(dir.descriptor(), temp.c_str(),
                    O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
  };
  int fd = create();
  // A temporary of a crashed process that had this pid: ours to replace (we
  // hold the entry's lock; unlinkat removes a link, not its target).
  if (fd < 0 && errno == EEXIST &&
      ::unlinkat(dir.descriptor(), temp.c_str(), 0) == 0)
    fd = create();
  if (fd < 0)
    return makeError(KVARN_ERROR_IO, "cannot write '{0}': {1}", path,
                     std::strerror(errno));
  const char *p = contents.data();
  size_t left = contents.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      int saved = n < 0 ? errno : EIO;
      ::close(fd);
      ::unlinkat(dir.descriptor(), temp.c_str(), 0);
      return makeError(KVARN_ERROR_IO, "cannot write '{0}': {1}", path,
                       std::strerror(saved));
    }
    p += n;
    left -= size_t(n);
  }
  // rename replaces a link in the way, never writes through it.
  if (::close(fd) != 0 ||
      ::renameat(dir.descriptor(), temp.c_str(), dir.descriptor(),
                 std::string(file).c_str()) != 0) {
    int saved = errno;
    ::unlinkat(dir.descriptor(), temp.c_str(), 0);
    return makeError(KVARN_ERROR_IO, "cannot write '{0}': {1}", path,
                     std::strerror(saved));
  }
  return kvarn::Error::success();
}

void cache::hideEntry(const EntryDir &dir, std::string_view name) {
  ::unlinkat(dir.descriptor(), groupFileName(name).c_str(), 0);
}

void cache::touchEntry(std::string_view dir, std::string_view name) {
  std::string group = joinPath(dir, groupFileName(name));
  // now; best effort (a read-only cache keeps its old times)
  ::utimensat(AT_FDCWD, group.c_str(), nullptr, AT_SYMLINK_NOFOLLOW);
}

kvarn::Expected<FileLock> FileLock::acquire(const EntryDir &dir,
                                            std::string_view name) {
  std::string file = std::string(name) + ".lock";
  std::string path = joinPath(dir.path(), file);
  // O_NONBLOCK: a FIFO in the lock's place must not block the open.
  int fd = ::openat(dir.descriptor(), file.c_str(),
                    O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC,
                    0644);
  if (fd < 0)
    return makeError(KVARN_ERROR_IO, "cannot open the lock file '{0}': {1}",
                     path, std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return makeError(KVARN_ERROR_IO,
                     "the lock file '{0}' is not a regular file", path);
  }
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

std::vector<std::string> cache::signatureFromPtx(std::string_view ptx,
                                                 std::string_view name) {
  std::vector<std::string> types;
  size_t entry = ptx.find(".entry " + std::string(name) + "(");
  if (entry == std::string_view::npos)
    return types;
  std::string_view params = ptx.substr(entry);
  params = params.substr(0, params.find(')'));
  for (std::string_view line : split(params, '\n')) {
    line = trim(line);
    if (!startsWith(line, ".param"))
      continue;
    if (contains(line, ".ptr"))
      types.push_back("*i8");
    else if (contains(line, ".u64") || contains(line, ".s64") ||
             contains(line, ".b64"))
      types.push_back("i64");
    else if (contains(line, ".f32"))
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

Json cache::buildMetadata(const KernelArtifacts &a,
                          const KernelRequest &request, const CacheKey &key,
                          std::string_view cubinMaker) {
  int arch = 0;
  std::string_view digits = std::string_view(a.chip).substr(3); // "sm_"
  parseInteger(leadingDigits(digits), arch);
  Json signature = Json::array();
  for (const std::string &t : a.signature)
    signature.push_back(t);
  Json params = Json::array(), grid = Json::array();
  for (const KernelAbi::Param &p : a.abi.params)
    params.push_back(Json{{"name", p.name}, {"type", p.type}});
  for (size_t axis = 0; axis < a.abi.grid.size(); ++axis)
    grid.push_back(a.abi.gridExpression(axis));

  Json kvarn{
      {"format", kMetadataFormat},
      {"version", compilerIdentity().kvarnVersion},
      {"build_id", compilerIdentity().buildId},
      {"llvm_version", compilerIdentity().llvmVersion},
      {"kernel", request.kernel},
      {"source", request.source.empty() ? "library" : request.sourceName},
      {"preset", request.spec.preset},
      {"head_dim", request.spec.headDim},
      {"gqa", request.spec.gqa},
      {"dtype", std::string(spell(request.spec.dtype))},
      {"chip", a.chip},
      {"ptx_version", a.ptxVersion},
      {"num_args", a.numArgs},
      {"programs_per_cta", a.programsPerCta},
      {"ctas_per_sm", a.ctasPerSM},
      {"signature", std::move(signature)},
      // The launch contract (Pipeline.h, KernelAbi): the parameters before
      // the two scratch pointers, and the grid along x, y, z as a parameter
      // name or a constant (x in programs: ceil(x / programs_per_cta) CTAs).
      {"abi", Json{{"params", std::move(params)}, {"grid", std::move(grid)}}},
      {"cubin_by",
       cubinMaker.empty() ? Json(nullptr) : Json(std::string(cubinMaker))},
      {"compile_seconds", a.compileSeconds},
      {"created", int64_t(std::time(nullptr))},
      {"created_by_pid", int64_t(::getpid())},
  };
  if (request.spec.isMla()) {
    kvarn["rope_dim"] = request.spec.ropeDim;
    const MlaPreset &p = *kvarn::cantFail(lookupMlaPreset(request.spec.preset));
    kvarn["group"] = p.group;
    kvarn["latent_bits"] = p.bits;
    kvarn["sinkhorn_iters"] = p.sinkhornIters;
    if (kvarn::Expected<MlaRecordLayout> l = MlaRecordLayout::get(
            p, request.spec.headDim, request.spec.ropeDim)) {
      kvarn["record_layout"] = Json{
          {"record_bytes", l->recordBytes},
          {"latent_codes", l->codes},
          {"latent_scale", l->scale},
          {"latent_zero", l->zero},
          {"latent_token_scale", l->tokenScale},
          {"rope", l->rope},
      };
    } else {
      kvarn::consumeError(l.takeError());
    }
  } else if (kvarn::Expected<const Preset *> preset =
                 lookupPreset(request.spec.preset)) {
    kvarn["group"] = (*preset)->group;
    kvarn["key_bits"] = (*preset)->keyBits;
    kvarn["value_bits"] = (*preset)->valueBits;
    kvarn["sinkhorn_iters"] = (*preset)->sinkhornIters;
    if (kvarn::Expected<RecordLayout> l =
            RecordLayout::get(**preset, request.spec.headDim)) {
      kvarn["record_layout"] = Json{
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
      kvarn::consumeError(l.takeError());
    }
  } else {
    kvarn::consumeError(preset.takeError());
  }
  // The key's inputs; long ones (source text) by their checksum.
  Json keyFields = Json::object();
  for (const auto &[name, value] : key.fields)
    keyFields[name] = value.size() > 120 ? "xxh3:" + checksum(value) : value;
  kvarn["key"] = std::move(keyFields);

  // Triton's fields: what triton.compiler.CompiledKernel and the CUDA
  // launcher of Triton 3.x read (docs/cache.md lists them).
  return Json{
      {"name", a.name},
      {"hash", a.hash},
      {"target", Json{{"backend", "cuda"}, {"arch", arch}, {"warp_size", 32}}},
      {"num_warps", a.numWarps},
      {"num_ctas", 1},
      {"num_stages", 1},
      {"shared", a.sharedBytes},
      {"cluster_dims", Json::array({1, 1, 1})},
      {"global_scratch_size", 0},
      {"global_scratch_align", 1},
      {"profile_scratch_size", 0},
      {"profile_scratch_align", 1},
      {"launch_cooperative_grid", false},
      {"launch_pdl", a.launchPdl},
      {"tmem_size", 0},
      {"ptx_version", a.ptxVersion},
      {"arch", "sm" + std::to_string(arch)},
      {"backend_name", "cuda"},
      {"enable_fp_fusion", true},
      {"debug", false},
      {"kvarn", std::move(kvarn)},
  };
}

/// `j` as text: compact (indent < 0) or indented; strings that are not
/// UTF-8 (a user's file name) with U+FFFD, as nlohmann would otherwise
/// abort without exceptions.
static std::string jsonText(const Json &j, int indent) {
  return j.dump(indent, ' ', /*ensure_ascii=*/false,
                Json::error_handler_t::replace);
}

std::string cache::metadataChecksum(const Json &metadata) {
  Json copy = metadata;
  if (copy.is_object()) {
    auto kvarn = copy.find("kvarn");
    if (kvarn != copy.end() && kvarn->is_object())
      kvarn->erase("metadata_xxh3");
  }
  // nlohmann::json keeps object keys sorted: one text per value.
  return checksum(jsonText(copy, -1));
}

void cache::sealMetadata(Json &metadata) {
  std::string sum = metadataChecksum(metadata);
  if (!metadata.is_object())
    return;
  auto kvarn = metadata.find("kvarn");
  if (kvarn != metadata.end() && kvarn->is_object())
    (*kvarn)["metadata_xxh3"] = std::move(sum);
}

kvarn::Error cache::writeEntry(const EntryDir &dir, std::string_view name,
                               const std::vector<EntryFile> &files,
                               Json metadata, std::string &metadataText) {
  Json sums = Json::object();
  Json children = Json::object();
  for (const EntryFile &f : files) {
    sums[f.name] = Json{{"bytes", int64_t(f.contents.size())},
                        {"xxh3", checksum(f.contents)}};
    if (kvarn::Error err = writeFileAtomically(dir, f.name, f.contents))
      return err;
    children[f.name] = joinPath(dir.path(), f.name);
  }
  auto kvarn = metadata.find("kvarn");
  if (kvarn != metadata.end() && kvarn->is_object())
    (*kvarn)["files"] = std::move(sums);
  sealMetadata(metadata);
  metadataText = jsonText(metadata, 2);
  std::string metadataName = std::string(name) + ".json";
  if (kvarn::Error err = writeFileAtomically(dir, metadataName, metadataText))
    return err;
  children[metadataName] = joinPath(dir.path(), metadataName);
  // Last: from now on readers see the entry.
  std::string group = jsonText(Json{{"child_paths", std::move(children)}}, 2);
  return writeFileAtomically(dir, groupFileName(name), group);
}

//===----------------------------------------------------------------------===//
// Reading and checking an entry
//===----------------------------------------------------------------------===//

/// The directives between `name`'s entry and its body in `ptx`; empty when
/// it has no such entry.
static std::string_view entryHeaderOf(std::string_view ptx,
                                      std::string_view name) {
  size_t entry = ptx.find(".entry " + std::string(name) + "(");
  if (entry == std::string_view::npos)
    return {};
  std::string_view rest = ptx.substr(entry);
  return rest.substr(0, rest.find('{'));
}

/// The numbers after `directive` ("X[, Y[, Z]]") in `name`'s entry header
/// in `ptx`; none when the directive or its first number is missing.
static std::vector<int64_t> directiveOperandsOf(std::string_view ptx,
                                                std::string_view name,
                                                std::string_view directive) {
  std::vector<int64_t> out;
  std::string_view header = entryHeaderOf(ptx, name);
  size_t at = header.find(directive);
  if (at == std::string_view::npos)
    return out;
  std::string_view rest = header.substr(at + directive.size());
  for (int i = 0; i < 3; ++i) {
    rest = ltrim(rest);
    std::string_view digits = leadingDigits(rest);
    int64_t n = 0;
    if (digits.empty() || digits.size() > 6 || !parseInteger(digits, n))
      break;
    out.push_back(n);
    rest = ltrim(rest.substr(digits.size()));
    if (!consumeFront(rest, ","))
      break;
  }
  return out;
}

/// `.minnctapersm N` of `name`'s entry in `ptx`, or 0 when it has none.
static int64_t minCtasPerSMOf(std::string_view ptx, std::string_view name) {
  std::vector<int64_t> n = directiveOperandsOf(ptx, name, ".minnctapersm");
  return n.empty() ? 0 : n[0];
}

/// `.maxntid X[, Y[, Z]]` of `name`'s entry in `ptx` as a thread count (the
/// product), or 0 when it has none.
/// The metadata's "abi" into `a.abi`, checked against `a.signature` (the
/// PTX's parameters): one typed, named parameter each, and a grid of three
/// integer parameters or constants.
/// The string `field` of `o`, or nothing.
static std::optional<std::string> stringOf(const Json *o, const char *field) {
  const Json *v = jsonMember(o, field);
  if (!v || !v->is_string())
    return std::nullopt;
  return v->get<std::string>();
}

static kvarn::Error readAbi(const Json &abi, KernelArtifacts &a) {
  auto fail = [](const std::string &why) {
    return kvarn::Error(KVARN_ERROR_CORRUPT_DATA, why);
  };
  const Json *params = jsonMember(&abi, "params");
  const Json *grid = jsonMember(&abi, "grid");
  if (!params || !grid || !params->is_array() || !grid->is_array())
    return fail("no params or grid");
  if (params->size() != a.signature.size())
    return fail(std::to_string(params->size()) + " parameters, the PTX " +
                std::to_string(a.signature.size()));
  KernelAbi out;
  for (size_t i = 0; i < params->size(); ++i) {
    const Json *p = &(*params)[i];
    std::optional<std::string> name = stringOf(p, "name");
    std::optional<std::string> type = stringOf(p, "type");
    if (!name || !type || name->empty() || !isIdentifier(*name))
      return fail("parameter " + std::to_string(i) + " has no name or type");
    KernelAbi::Param param{*name, *type};
    // The PTX's view of it (Param::ptxSignature).
    if (param.ptxSignature().empty() || param.ptxSignature() != a.signature[i])
      return fail("parameter '" + *name + "' is " + *type + ", the PTX's " +
                  a.signature[i]);
    out.params.push_back(std::move(param));
  }
  if (grid->size() != 3)
    return fail("the grid has " + std::to_string(grid->size()) + " extents");
  for (const Json &v : *grid) {
    std::optional<std::string> extent;
    if (v.is_string())
      extent = v.get<std::string>();
    int64_t constant = 0;
    if (extent && parseInteger(*extent, constant) && constant >= 0 &&
        constant <= INT32_MAX) {
      out.grid.push_back(-1 - int(constant));
      continue;
    }
    auto at = extent ? std::find_if(out.params.begin(), out.params.end(),
                                    [&](const KernelAbi::Param &p) {
                                      return p.name == *extent;
                                    })
                     : out.params.end();
    if (at == out.params.end() || (at->type != "i32" && at->type != "i64"))
      return fail("a grid extent is not an integer parameter or a constant");
    out.grid.push_back(int(at - out.params.begin()));
  }
  a.abi = std::move(out);
  return kvarn::Error::success();
}

static int64_t maxThreadsOf(std::string_view ptx, std::string_view name) {
  std::vector<int64_t> n = directiveOperandsOf(ptx, name, ".maxntid");
  if (n.empty())
    return 0;
  int64_t threads = 1;
  for (int64_t x : n)
    threads *= x;
  return threads;
}

EntryRead cache::readEntry(std::string_view dirPath, std::string_view name,
                           const std::string *expectedHash) {
  EntryRead r;
  std::string groupName = groupFileName(name);
  int openErrno = 0;
  kvarn::Expected<EntryDir> dir =
      EntryDir::open(std::string(dirPath), false, &openErrno);
  std::optional<EntryDir> held;
  auto takeMessage = [](kvarn::Error err) {
    std::string message;
    kvarn::consumeError(std::move(err), message);
    return message;
  };
  if (!dir) {
    std::string why = takeMessage(dir.takeError());
    // Something in the entry's place is damage; no entry (or no root) a miss.
    struct stat st;
    if (openErrno != ENOENT &&
        ::lstat(std::string(dirPath).c_str(), &st) == 0) {
      r.status = EntryRead::Bad;
      r.problem = why;
    }
    return r;
  }
  held.emplace(std::move(*dir));
  int fd = held->descriptor();
  auto read = [&](std::string_view file, uint64_t maxBytes) {
    return readRegularFile(file, ReadOptions{maxBytes, /*noFollow=*/true}, fd);
  };
  auto bad = [&](const std::string &why) -> EntryRead & {
    // A group file that went away meanwhile (evicted, cleared, being
    // rebuilt) is a miss, not a corrupt entry.
    struct stat st;
    r.status = ::fstatat(fd, groupName.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0
                   ? EntryRead::Bad
                   : EntryRead::Missing;
    r.problem = why;
    return r;
  };

  kvarn::Expected<std::string> groupText =
      read(groupName, limits::kGroupFileBytes);
  if (!groupText) {
    std::string why = takeMessage(groupText.takeError());
    struct stat st;
    if (::fstatat(fd, groupName.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
      return r; // no group file: not an entry yet
    return bad(why);
  }
  kvarn::Expected<Json> group = parseJsonDocument(*groupText);
  if (!group)
    return bad("the group file is not JSON (" + takeMessage(group.takeError()) +
               ")");
  const Json *children = jsonMember(&*group, "child_paths");
  std::string metadataName = std::string(name) + ".json";
  if (!jsonMember(children, metadataName.c_str()))
    return bad("the group file does not list " + metadataName);

  kvarn::Expected<std::string> metadataText =
      read(metadataName, limits::kMetadataBytes);
  if (!metadataText)
    return bad(takeMessage(metadataText.takeError()));
  kvarn::Expected<Json> parsed = parseJsonDocument(*metadataText);
  if (!parsed || !parsed->is_object()) {
    std::string why = parsed ? "" : " (" + takeMessage(parsed.takeError()) + ")";
    return bad(metadataName + " is not a JSON object" + why);
  }
  Json &m = *parsed;
  const Json *kvarn = jsonMember(&m, "kvarn");
  if (!kvarn || !kvarn->is_object())
    return bad(metadataName + " has no 'kvarn' section (not kvarn's)");
  auto str = [](const Json *o, const char *field) {
    return stringOf(o, field).value_or("");
  };
  auto integer = [](const Json *o, const char *field) {
    const Json *v = jsonMember(o, field);
    std::optional<int64_t> i = v ? jsonInteger(*v) : std::nullopt;
    return i ? *i : int64_t(-1);
  };
  const CompilerIdentity &id = compilerIdentity();
  if (integer(kvarn, "format") != kMetadataFormat)
    return bad("metadata format " + std::to_string(integer(kvarn, "format")) +
               ", expected " + std::to_string(kMetadataFormat));
  if (str(kvarn, "version") != id.kvarnVersion ||
      str(kvarn, "build_id") != id.buildId ||
      str(kvarn, "llvm_version") != id.llvmVersion)
    return bad("made by kvarn " + str(kvarn, "version") + " (build " +
               str(kvarn, "build_id").substr(0, 12) + ", LLVM " +
               str(kvarn, "llvm_version") + "), this is " + id.kvarnVersion +
               " (build " + id.buildId.substr(0, 12) + ", LLVM " +
               id.llvmVersion + ")");
  // Every field (the launch's among them) as written, or not at all.
  if (str(kvarn, "metadata_xxh3") != metadataChecksum(m))
    return bad(metadataName + " does not match its checksum (edited?)");
  if (str(&m, "name") != name)
    return bad("the metadata names kernel '" + str(&m, "name") + "'");
  std::string hash = str(&m, "hash");
  if (expectedHash ? hash != *expectedHash
                   : baseName(dirPath) != [&] {
                       std::string bytes;
                       if (!bytesFromHex(hash, bytes))
                         return std::string();
                       return base32Encode(Span<const uint8_t>(
                           reinterpret_cast<const uint8_t *>(bytes.data()),
                           bytes.size()));
                     }())
    return bad("the metadata's hash does not match the entry's key");
  const Json *files = jsonMember(kvarn, "files");
  if (!files || !files->is_object())
    return bad(metadataName + " lists no files");

  KernelArtifacts &a = r.artifacts;
  auto loadFile = [&](const std::string &file, std::string *into) -> bool {
    const Json *sum = jsonMember(files, file.c_str());
    if (!sum || !sum->is_object()) {
      bad(metadataName + " has no checksum for " + file);
      return false;
    }
    if (!isCacheFileName(file) || contains(file, ".tmp.")) {
      bad(metadataName + " lists '" + file + "', not a file of an entry");
      return false;
    }
    int64_t expected = integer(sum, "bytes");
    if (expected < 0 || uint64_t(expected) > limits::kEntryFileBytes) {
      bad(metadataName + " gives " + file + " an impossible size");
      return false;
    }
    // Bounded by the size the metadata gives: a longer file is damage.
    kvarn::Expected<std::string> bytes = read(file, uint64_t(expected));
    if (!bytes) {
      std::string why = takeMessage(bytes.takeError());
      if (endsWith(why, "the most this file may have"))
        why = file + " is longer than the metadata says (" +
              std::to_string(expected) + " bytes)";
      bad(why);
      return false;
    }
    if (expected != int64_t(bytes->size())) {
      bad(file + " has " + std::to_string(bytes->size()) +
          " bytes, the metadata " + "says " + std::to_string(expected) +
          " (truncated?)");
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
  // Every file the entry lists, the source and IR too: a lookup and
  // `cache verify` agree on which entries are usable.
  std::string ptxName = std::string(name) + ".ptx";
  std::string cubinName = std::string(name) + ".cubin";
  if (!loadFile(ptxName, &a.ptx))
    return r;
  if (jsonMember(files, cubinName.c_str()) && !loadFile(cubinName, &a.cubin))
    return r;
  for (const auto &item : files->items())
    if (item.key() != ptxName && item.key() != cubinName &&
        !loadFile(item.key(), nullptr))
      return r;

  a.name = std::string(name);
  a.hash = hash;
  a.key = std::string(baseName(dirPath));
  a.directory = std::string(dirPath);
  a.chip = str(kvarn, "chip");
  a.ptxVersion = int(std::clamp<int64_t>(integer(kvarn, "ptx_version"), -1, 1000));
  // Range-checked before narrowing; the checksum says they are as written.
  int64_t warps = integer(&m, "num_warps"), shared = integer(&m, "shared");
  int64_t args = integer(kvarn, "num_args");
  int64_t programs = 1; // absent in entries older than the field
  if (jsonMember(kvarn, "programs_per_cta"))
    programs = integer(kvarn, "programs_per_cta");
  if (warps < 1 || warps > kMaxWarpsPerCta || shared < 0 ||
      shared > (1 << 20) || a.chip.empty() || args < 0 || args > 1024)
    return bad(metadataName + " lacks num_warps, shared, num_args or the chip");
  if (!threadsPerProgram(warps, programs))
    return bad(metadataName + " has programs_per_cta that does not divide "
                              "its CTA into whole warps or equal parts of "
                              "one");
  // Every kernel of this format has it (the runtime plans waves with it).
  int64_t ctas = integer(kvarn, "ctas_per_sm");
  if (ctas < 1 || ctas > 64)
    return bad(metadataName + " lacks ctas_per_sm (1 to 64)");
  a.numWarps = int(warps);
  a.sharedBytes = shared;
  a.numArgs = int(args);
  a.programsPerCta = int(programs);
  a.ctasPerSM = int(ctas);
  // Absent or false in entries older than the field: a plain launch.
  if (const Json *pdl = jsonMember(&m, "launch_pdl"); pdl && pdl->is_boolean())
    a.launchPdl = pdl->get<bool>();
  if (const Json *sig = jsonMember(kvarn, "signature"); sig && sig->is_array())
    for (const Json &t : *sig)
      if (t.is_string())
        a.signature.push_back(t.get<std::string>());
  if (const Json *s = jsonMember(kvarn, "compile_seconds"); s && s->is_number())
    a.compileSeconds = s->get<double>();
  // What the verified PTX says must agree with the metadata.
  if (int64_t threads = maxThreadsOf(a.ptx, name);
      threads && threads != warps * 32)
    return bad(metadataName + " says " + std::to_string(warps) +
               " warps, the PTX " + std::to_string(threads) + " threads");
  if (int64_t minCtas = minCtasPerSMOf(a.ptx, name); minCtas && minCtas != ctas)
    return bad(metadataName + " says " + std::to_string(ctas) +
               " CTAs per SM, the PTX's .minnctapersm " +
               std::to_string(minCtas));
  if (a.signature != signatureFromPtx(a.ptx, name))
    return bad(metadataName + "'s signature is not the PTX's");
  if (const Json *abi = jsonMember(kvarn, "abi")) {
    if (kvarn::Error err = readAbi(*abi, a))
      return bad(metadataName + "'s abi: " + kvarn::toString(std::move(err)));
  }
  a.metadataJson = std::move(*metadataText);
  r.metadata = std::move(m);
  r.status = EntryRead::Ok;
  return r;
}

//===----------------------------------------------------------------------===//
// Listing, clearing, eviction
//
// Nothing here follows a link or deletes a name the cache does not write:
// directories are opened with O_NOFOLLOW and files removed with unlinkat
// relative to them, only when isCacheFileName says they are the cache's.
//===----------------------------------------------------------------------===//

namespace {

/// The names in the directory `dirFd` (without . and ..).
bool listNames(int dirFd, std::vector<std::string> &names, int &err) {
  int fd = ::openat(dirFd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    err = errno;
    return false;
  }
  DIR *d = ::fdopendir(fd);
  if (!d) {
    err = errno;
    ::close(fd);
    return false;
  }
  errno = 0;
  while (struct dirent *e = ::readdir(d)) {
    std::string_view n(e->d_name);
    if (n != "." && n != "..")
      names.push_back(std::string(n));
  }
  err = errno;
  ::closedir(d);
  return err == 0;
}

const char *kindOf(mode_t mode) {
  if (S_ISLNK(mode))
    return "a symbolic link";
  if (S_ISDIR(mode))
    return "a directory";
  if (S_ISFIFO(mode))
    return "a FIFO";
  return "not a regular file";
}

struct EntryScan {
  std::string key, directory, name;
  uint64_t bytes = 0;
  int64_t lastUsed = 0;
  bool complete = false;
  bool isDirectory = false;
  /// Why it cannot be an entry at all (an obstruction), if so.
  std::string problem;
  size_t ownFiles = 0;
  std::vector<std::string> foreign; // names that are not the cache's
};

class RootDir {
public:
  explicit RootDir(std::string_view root) : path(std::string(root)) {
    // The root itself may be a link: the user's choice of place.
    fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    err = fd < 0 ? errno : 0;
  }
  ~RootDir() {
    if (fd >= 0)
      ::close(fd);
  }
  std::string path;
  int fd = -1, err = 0;
};

EntryScan scanEntry(const RootDir &root, const std::string &key) {
  EntryScan e;
  e.key = key;
  e.directory = joinPath(root.path, key);
  struct stat st;
  if (::fstatat(root.fd, key.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    e.problem = std::string("cannot stat: ") + std::strerror(errno);
    return e;
  }
  e.lastUsed = st.st_mtime;
  if (!S_ISDIR(st.st_mode)) {
    e.problem = std::string(kindOf(st.st_mode)) +
                " in an entry's place (not kvarn's; left alone)";
    return e;
  }
  e.isDirectory = true;
  int fd = ::openat(root.fd, key.c_str(),
                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  std::vector<std::string> names;
  int err = 0;
  if (fd < 0 || !listNames(fd, names, err)) {
    e.problem = std::string("cannot read the entry: ") +
                std::strerror(fd < 0 ? errno : err);
    if (fd >= 0)
      ::close(fd);
    return e;
  }
  for (const std::string &file : names) {
    if (::fstatat(fd, file.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
      continue; // gone meanwhile
    if (!isCacheFileName(file) || S_ISDIR(st.st_mode)) {
      e.foreign.push_back(file);
      if (isCacheFileName(file) && e.problem.empty())
        e.problem = file + " is a directory, not a regular file";
      continue;
    }
    ++e.ownFiles;
    if (!S_ISREG(st.st_mode)) {
      if (e.problem.empty())
        e.problem = file + " is " + kindOf(st.st_mode) + ", not a regular file";
      continue;
    }
    e.bytes += uint64_t(st.st_size);
    std::string_view f(file);
    if (startsWith(f, "__grp__") && endsWith(f, ".json") &&
        !contains(f, ".tmp.")) {
      e.complete = true;
      e.name = std::string(f.substr(7, f.size() - 12));
      e.lastUsed = st.st_mtime;
    }
  }
  ::close(fd);
  return e;
}

kvarn::Expected<std::vector<EntryScan>> scan(const RootDir &root) {
  std::vector<EntryScan> entries;
  if (root.fd < 0) {
    if (root.err == ENOENT)
      return entries;
    return makeError(KVARN_ERROR_IO, "cannot list '{0}': {1}", root.path,
                     std::strerror(root.err));
  }
  std::vector<std::string> names;
  int err = 0;
  if (!listNames(root.fd, names, err))
    return makeError(KVARN_ERROR_IO, "cannot list '{0}': {1}", root.path,
                     std::strerror(err));
  for (const std::string &name : names)
    if (isCacheKeyDirectory(name))
      entries.push_back(scanEntry(root, name));
  return entries;
}

/// What removing one directory's cache files did.
struct Removal {
  enum Outcome { Removed, NotOurs, Failed } outcome = NotOurs;
  std::string message; // NotOurs, Failed: why; Removed: what was kept
};

/// Removes the cache's files of directory `name` under the root, the group
/// file first so readers see the entry gone, then the directory if nothing
/// else is in it. A directory holding only the cache's files is renamed out
/// of sight first (`hide`); one holding anything else keeps it and its place.
Removal removeCacheDirectory(const RootDir &root, const std::string &name,
                             bool hide) {
  Removal r;
  std::string path = joinPath(root.path, name);
  struct stat st;
  if (::fstatat(root.fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    r.message = errno == ENOENT ? "gone meanwhile"
                                : std::string(std::strerror(errno));
    r.outcome = errno == ENOENT ? Removal::NotOurs : Removal::Failed;
    return r;
  }
  if (!S_ISDIR(st.st_mode)) {
    r.message = std::string(kindOf(st.st_mode)) + ", not an entry";
    return r;
  }
  int fd = ::openat(root.fd, name.c_str(),
                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  std::vector<std::string> names, own, foreign;
  int err = 0;
  if (fd < 0 || !listNames(fd, names, err)) {
    r.outcome = Removal::Failed;
    r.message = std::strerror(fd < 0 ? errno : err);
    if (fd >= 0)
      ::close(fd);
    return r;
  }
  for (const std::string &file : names) {
    bool dir = ::fstatat(fd, file.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
               S_ISDIR(st.st_mode);
    (isCacheFileName(file) && !dir ? own : foreign).push_back(file);
  }
  if (own.empty() && !foreign.empty()) {
    ::close(fd);
    r.message = "holds no kvarn files (" + join(foreign, ", ") + ")";
    return r;
  }
  std::string hiddenAs;
  if (hide && foreign.empty()) {
    static std::atomic<unsigned> counter{0};
    hiddenAs = ".evicted." + std::to_string(::getpid()) + "." +
               std::to_string(counter++);
    if (::renameat(root.fd, name.c_str(), root.fd, hiddenAs.c_str()) != 0) {
      r.outcome = Removal::Failed;
      r.message = std::strerror(errno);
      ::close(fd);
      return r;
    }
  }
  // Group files first: from then on readers see no entry.
  std::stable_partition(own.begin(), own.end(), [](const std::string &f) {
    return startsWith(f, "__grp__");
  });
  for (const std::string &file : own)
    if (::unlinkat(fd, file.c_str(), 0) != 0 && errno != ENOENT) {
      r.outcome = Removal::Failed;
      r.message = file + ": " + std::strerror(errno);
      ::close(fd);
      return r;
    }
  ::close(fd);
  r.outcome = Removal::Removed;
  if (!foreign.empty()) {
    r.message = "kept, with what is not kvarn's in it: " + join(foreign, ", ");
    return r;
  }
  // Fails harmlessly if something was put in it meanwhile.
  (void)::unlinkat(root.fd, (hiddenAs.empty() ? name : hiddenAs).c_str(),
                   AT_REMOVEDIR);
  return r;
}

DiskEntry describe(const EntryScan &s) {
  DiskEntry e;
  e.key = s.key;
  e.directory = s.directory;
  e.name = s.name;
  e.bytes = s.bytes;
  e.lastUsed = s.lastUsed;
  e.complete = s.complete;
  e.problem = s.problem;
  if (e.problem.empty() && !s.complete)
    e.problem = s.ownFiles == 0 && !s.foreign.empty()
                    ? "holds no kvarn files (not kvarn's; left alone)"
                    : "incomplete (no group file: being compiled, or "
                      "abandoned)";
  return e;
}

void fillFrom(DiskEntry &e, const Json &m) {
  const Json *k = jsonMember(&m, "kvarn");
  if (!k || !k->is_object())
    return;
  auto integer = [&](const char *field) {
    const Json *v = jsonMember(k, field);
    std::optional<int64_t> i = v ? jsonInteger(*v) : std::nullopt;
    return int(std::clamp<int64_t>(i.value_or(0), INT32_MIN, INT32_MAX));
  };
  e.preset = stringOf(k, "preset").value_or("");
  e.chip = stringOf(k, "chip").value_or("");
  e.headDim = integer("head_dim");
  e.gqa = integer("gqa");
  e.ropeDim = integer("rope_dim");
  e.dtype = stringOf(k, "dtype").value_or("f16");
}
} // namespace

kvarn::Expected<std::vector<DiskEntry>>
kvarn::listDiskCache(std::string_view root, bool /*verify*/) {
  RootDir rootDir(root);
  kvarn::Expected<std::vector<EntryScan>> scanned = scan(rootDir);
  if (!scanned)
    return scanned.takeError();
  std::vector<DiskEntry> out;
  for (EntryScan &s : *scanned) {
    DiskEntry e = describe(s);
    if (!e.problem.empty() || !s.complete) {
      out.push_back(std::move(e));
      continue;
    }
    // Listing reads what verifying reads: the same check a lookup makes.
    EntryRead r = readEntry(s.directory, s.name, nullptr);
    if (r.status == EntryRead::Ok) {
      fillFrom(e, r.metadata);
    } else {
      e.problem = r.status == EntryRead::Missing && r.problem.empty()
                      ? "the group file went away"
                      : r.problem;
      // Unusable entries still say what they were, where they can.
      if (kvarn::Expected<std::string> text = readRegularFile(
              joinPath(s.directory, s.name + ".json"),
              ReadOptions{limits::kMetadataBytes, /*noFollow=*/true})) {
        if (kvarn::Expected<Json> v = parseJsonDocument(*text)) {
          fillFrom(e, *v);
        } else {
          kvarn::consumeError(v.takeError());
        }
      } else {
        kvarn::consumeError(text.takeError());
      }
    }
    out.push_back(std::move(e));
  }
  std::sort(out.begin(), out.end(), [](const DiskEntry &a, const DiskEntry &b) {
    return std::tie(a.name, a.preset, a.headDim, a.gqa, a.ropeDim, a.dtype,
                    a.chip, a.key) < std::tie(b.name, b.preset, b.headDim,
                                              b.gqa, b.ropeDim, b.dtype, b.chip,
                                              b.key);
  });
  return out;
}

static void record(CacheRemoval &report, const std::string &path,
                   const Removal &r, bool count) {
  switch (r.outcome) {
  case Removal::Removed:
    report.removed += count;
    if (!r.message.empty())
      report.leftAlone.push_back(path + ": " + r.message);
    break;
  case Removal::NotOurs:
    if (r.message != "gone meanwhile")
      report.leftAlone.push_back(path + ": " + r.message);
    break;
  case Removal::Failed:
    report.failed.push_back(path + ": " + r.message);
    break;
  }
}

CacheRemoval kvarn::removeDiskEntry(std::string_view root,
                                    std::string_view key) {
  CacheRemoval report;
  RootDir rootDir(root);
  std::string path = joinPath(root, key);
  if (rootDir.fd < 0) {
    report.failed.push_back(path + ": " + std::strerror(rootDir.err));
    return report;
  }
  if (!isCacheKeyDirectory(key)) {
    report.leftAlone.push_back(path + ": not an entry's name");
    return report;
  }
  record(report, path, removeCacheDirectory(rootDir, std::string(key), true),
         true);
  return report;
}

kvarn::Expected<CacheRemoval> kvarn::clearDiskCache(std::string_view root) {
  RootDir rootDir(root);
  kvarn::Expected<std::vector<EntryScan>> scanned = scan(rootDir);
  if (!scanned)
    return scanned.takeError();
  CacheRemoval report;
  for (const EntryScan &s : *scanned) {
    if (!s.isDirectory) {
      report.leftAlone.push_back(s.directory + ": " + s.problem);
      continue;
    }
    // An empty directory is removed but was not an entry.
    record(report, s.directory, removeCacheDirectory(rootDir, s.key, true),
           s.ownFiles > 0);
  }
  // Leftovers of interrupted removals.
  std::vector<std::string> names;
  int err = 0;
  if (rootDir.fd >= 0 && listNames(rootDir.fd, names, err))
    for (const std::string &name : names)
      if (startsWith(name, ".evicted."))
        record(report, joinPath(root, name),
               removeCacheDirectory(rootDir, name, false), false);
  return report;
}

kvarn::Expected<size_t> kvarn::evictDiskCache(std::string_view root,
                                              uint64_t maxBytes,
                                              std::string_view keep) {
  RootDir rootDir(root);
  kvarn::Expected<std::vector<EntryScan>> scanned = scan(rootDir);
  if (!scanned)
    return scanned.takeError();
  uint64_t total = 0;
  for (const EntryScan &s : *scanned)
    total += s.bytes;
  if (total <= maxBytes)
    return 0;
  // Oldest first; entries still being written (no group file) are left to
  // their writers unless abandoned for an hour; what is not a directory is
  // not the cache's.
  std::vector<const EntryScan *> order;
  int64_t now = std::time(nullptr);
  for (const EntryScan &s : *scanned)
    if (s.isDirectory && s.ownFiles && s.key != keep &&
        (s.complete || now - s.lastUsed > 3600))
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
    if (removeCacheDirectory(rootDir, s->key, true).outcome ==
        Removal::Removed) {
      total -= std::min(total, s->bytes);
      ++removed;
    }
  }
  return removed;
}
