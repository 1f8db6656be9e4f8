//===- FileIO.cpp - bounded reads of regular files ------------------------===//

#include "kvarn/Support/FileIO.h"

#include "kvarn/Support/Error.h"
#include "kvarn/Support/Strings.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <limits>
#include <sys/stat.h>
#include <unistd.h>

using namespace kvarn;

static const char *fileKind(mode_t mode) {
  if (S_ISDIR(mode))
    return "a directory";
  if (S_ISFIFO(mode))
    return "a FIFO";
  if (S_ISCHR(mode))
    return "a character device";
  if (S_ISBLK(mode))
    return "a block device";
  if (S_ISSOCK(mode))
    return "a socket";
  if (S_ISLNK(mode))
    return "a symbolic link";
  return "not a regular file";
}

kvarn::Expected<std::string> kvarn::readRegularFile(std::string_view path,
                                                    const ReadOptions &options,
                                                    int dirFd) {
  std::string p = std::string(path);
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused
  // below. Regular files ignore the flag.
  int flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY |
              (options.noFollow ? O_NOFOLLOW : 0);
  int fd = ::openat(dirFd, p.c_str(), flags);
  if (fd < 0) {
    int saved = errno;
    if (saved == ELOOP && options.noFollow)
      return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                       "cannot read '{0}': a symbolic link", path);
    return makeError(KVARN_ERROR_IO, "cannot read '{0}': {1}", path,
                     std::strerror(saved));
  }
  auto fail = [&](kvarn_status_t status, const std::string &why) {
    ::close(fd);
    return makeError(status, "cannot read '{0}': {1}", path, why);
  };
  struct stat st;
  if (::fstat(fd, &st) != 0)
    return fail(KVARN_ERROR_IO, std::strerror(errno));
  if (!S_ISREG(st.st_mode))
    return fail(KVARN_ERROR_INVALID_ARGUMENT,
                std::string(fileKind(st.st_mode)) + ", not a regular file");
  auto tooLarge = [&] {
    return fail(KVARN_ERROR_INVALID_ARGUMENT,
                "larger than " + std::to_string(options.maxBytes) +
                    " bytes, the most this file may have");
  };
  if (uint64_t(st.st_size) > options.maxBytes)
    return tooLarge();
  std::string bytes;
  // Up to one byte past the limit, to tell a file that grew past it.
  bytes.resize(size_t(std::min<uint64_t>(uint64_t(st.st_size), options.maxBytes) + 1));
  size_t used = 0;
  for (;;) {
    if (used == bytes.size()) {
      if (used > options.maxBytes)
        return tooLarge();
      bytes.resize(size_t(std::min<uint64_t>(options.maxBytes + 1,
                                             std::max<uint64_t>(used * 2, 4096))));
    }
    ssize_t n = ::read(fd, bytes.data() + used, bytes.size() - used);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return fail(KVARN_ERROR_IO, std::strerror(errno));
    if (n == 0)
      break;
    used += size_t(n);
  }
  if (used > options.maxBytes)
    return tooLarge();
  ::close(fd);
  bytes.resize(used);
  return bytes;
}

unsigned kvarn::jsonNestingDepth(std::string_view text, unsigned stopAt) {
  unsigned depth = 0, deepest = 0;
  bool inString = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (inString) {
      if (c == '\\')
        ++i; // the escaped character cannot end the string
      else if (c == '"')
        inString = false;
      continue;
    }
    if (c == '"') {
      inString = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
      if (deepest > stopAt)
        return deepest;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

namespace {
/// Takes nothing but the message of the first syntax error (nlohmann's
/// non-throwing parse says only that there was one).
struct SyntaxErrorOf : nlohmann::json_sax<nlohmann::json> {
  std::string message;
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t &) override { return true; }
  bool string(string_t &) override { return true; }
  bool binary(binary_t &) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t &) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string &,
                   const nlohmann::detail::exception &e) override {
    message = e.what();
    return false;
  }
};
} // namespace

kvarn::Expected<nlohmann::json> kvarn::parseJsonDocument(std::string_view text,
                                                         unsigned maxDepth) {
  if (jsonNestingDepth(text, maxDepth) > maxDepth)
    return makeError(KVARN_ERROR_INVALID_ARGUMENT,
                     "nested deeper than {0} levels", maxDepth);
  nlohmann::json value = nlohmann::json::parse(text.begin(), text.end(),
                                               /*cb=*/nullptr,
                                               /*allow_exceptions=*/false);
  if (!value.is_discarded())
    return value;
  SyntaxErrorOf error;
  nlohmann::json::sax_parse(text.begin(), text.end(), &error);
  return makeError(KVARN_ERROR_INVALID_ARGUMENT, "{0}",
                   error.message.empty() ? "malformed JSON" : error.message);
}

std::optional<int64_t> kvarn::jsonInteger(const nlohmann::json &v) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u <= uint64_t(std::numeric_limits<int64_t>::max()))
      return int64_t(u);
    return std::nullopt;
  }
  if (v.is_number_integer())
    return v.get<int64_t>();
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (std::isfinite(d) && d == std::floor(d) && d >= -0x1p63 && d < 0x1p63)
      return int64_t(d);
  }
  return std::nullopt;
}

std::string kvarn::joinPath(std::string_view dir, std::string_view file) {
  if (dir.empty())
    return std::string(file);
  return std::string(dir) + (endsWith(dir, "/") ? "" : "/") + std::string(file);
}

std::string_view kvarn::baseName(std::string_view path) {
  path = rtrim(path, "/");
  size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

std::string_view kvarn::parentPath(std::string_view path) {
  std::string_view trimmed = rtrim(path, "/");
  size_t slash = trimmed.rfind('/');
  if (slash == std::string_view::npos)
    return "";
  std::string_view parent = rtrim(trimmed.substr(0, slash), "/");
  return parent.empty() ? path.substr(0, 1) : parent;
}

const nlohmann::json *kvarn::jsonMember(const nlohmann::json *o,
                                        const char *field) {
  if (!o || !o->is_object())
    return nullptr;
  auto it = o->find(field);
  return it == o->end() ? nullptr : &*it;
}
