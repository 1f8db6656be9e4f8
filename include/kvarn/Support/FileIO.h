//===- FileIO.h - bounded reads of regular files ----------------*- C++ -*-===//
//
// Every file kvarn reads from a place it does not control (the kernel cache,
// a shapes file, a user's .kvt source) goes through readRegularFile: regular
// files only (a FIFO, a device or a directory is refused without blocking),
// at most a size that makes sense for that file, and JSON is checked for
// nesting depth before the recursive parser sees it.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_SUPPORT_FILEIO_H
#define KVARN_SUPPORT_FILEIO_H

#include "kvarn/Support/Error.h"
#include <nlohmann/json.hpp>
#include <string_view>

#include <cstdint>
#include <optional>
#include <string>

namespace kvarn {

/// Size limits of the files kvarn reads.
namespace limits {
inline constexpr uint64_t kGroupFileBytes = 1 << 20;      // __grp__<name>.json
inline constexpr uint64_t kMetadataBytes = 4 << 20;       // <name>.json
inline constexpr uint64_t kEntryFileBytes = 1ull << 30;   // a PTX, cubin, IR
inline constexpr uint64_t kShapesFileBytes = 4 << 20;     // cache warm --shapes
inline constexpr uint64_t kSourceFileBytes = 16 << 20;    // a .kvt source
/// Deeper than any file kvarn writes or documents (they nest 4 levels), far
/// below what the recursive JSON parser survives.
inline constexpr unsigned kJsonDepth = 64;
} // namespace limits

struct ReadOptions {
  uint64_t maxBytes = limits::kSourceFileBytes;
  /// Refuse a symbolic link as the last component (cache files: kvarn never
  /// writes links).
  bool noFollow = false;
};

/// The bytes of the regular file `path` (opened relative to `dirFd` unless
/// it is AT_FDCWD or the path is absolute). Reads until end of file, so
/// files whose size stat cannot tell (/proc) read whole. Fails with
/// KVARN_ERROR_IO when it cannot be opened or read and with
/// KVARN_ERROR_INVALID_ARGUMENT when it is not a regular file or holds more
/// than `maxBytes`; the message names `path` and says why, in one line.
kvarn::Expected<std::string> readRegularFile(std::string_view path,
                                             const ReadOptions &options,
                                             int dirFd = -100 /*AT_FDCWD*/);

/// `dir`/`file`, one '/' between them (just `file` when `dir` is empty).
std::string joinPath(std::string_view dir, std::string_view file);

/// The last component of `path` ("a/b/" -> "b"), or "" for "/" and "".
std::string_view baseName(std::string_view path);

/// `path` without its last component ("a/b" -> "a", "/b" -> "/", "b" -> "").
std::string_view parentPath(std::string_view path);

/// JSON of at most `maxDepth` nested arrays and objects, parsed (deeper
/// text is refused before parsing) as nlohmann::json, kvarn's JSON where
/// the runtime core reads it (no LLVM). Never throws (kvarn builds without
/// exceptions, where nlohmann would abort): a malformed text is an error
/// with nlohmann's message. Readers check each value's type before they
/// take it (nlohmann aborts on a wrong get<>() here too).
kvarn::Expected<nlohmann::json>
parseJsonDocument(std::string_view text,
                  unsigned maxDepth = limits::kJsonDepth);

/// Member `field` of `o` when `o` is an object that has it; else null (a
/// reader's one way in: nlohmann aborts on a missing key without
/// exceptions).
const nlohmann::json *jsonMember(const nlohmann::json *o, const char *field);

/// `v` as an integer: an integer, or a number with an integral value that
/// fits in int64 (128.0), as JSON writers may give it; else nothing.
std::optional<int64_t> jsonInteger(const nlohmann::json &v);

/// How deep `text`'s arrays and objects nest, counting brackets outside
/// strings; stops counting past `stopAt`.
unsigned jsonNestingDepth(std::string_view text, unsigned stopAt);

} // namespace kvarn

#endif // KVARN_SUPPORT_FILEIO_H
