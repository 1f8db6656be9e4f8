//===- Internal.h - helpers shared by the runtime's sources -----*- C++ -*-===//
//
// Not installed, not for callers of the runtime.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_RUNTIME_INTERNAL_H
#define KVARN_RUNTIME_INTERNAL_H

#include "kvarn/Runtime/Context.h"

#include "kvarn/Support/Strings.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace kvarn::cuda {

/// Enters `ctx` for the rest of the enclosing function, or returns its error.
#define KVARN_ENTER_CONTEXT(ctx)                                               \
  kvarn::Expected<ScopedContext> scopedContext = (ctx).enter();                \
  if (!scopedContext)                                                          \
    return scopedContext.takeError();

/// For destructors, which cannot report errors: calls the driver's release
/// function `fn` on `handle` with `ctx` current, ignoring failures (a
/// context that cannot be entered leaks the handle rather than abort).
template <typename Fn, typename Handle>
void releaseInContext(ContextRef ctx, Fn fn, Handle handle) {
  kvarn::Expected<ScopedContext> scope = ctx.enter();
  if (!scope) {
    kvarn::consumeError(scope.takeError());
    return;
  }
  (void)fn(handle);
}

/// The JIT's info and error logs, and the options that point the driver at
/// them (for cuLinkCreate and cuModuleLoadDataEx). Must outlive the call, and
/// for cuLink*, the link state.
class JitLogs {
public:
  /// `verbose` asks for the per-kernel figures (registers, spills) too.
  explicit JitLogs(bool verbose) {
    add(CU_JIT_INFO_LOG_BUFFER, infoLog.data());
    add(CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES, kLogBytes);
    add(CU_JIT_ERROR_LOG_BUFFER, errorLog.data());
    add(CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES, kLogBytes);
    if (verbose)
      add(CU_JIT_LOG_VERBOSE, 1);
  }
  JitLogs(const JitLogs &) = delete;
  JitLogs &operator=(const JitLogs &) = delete;

  unsigned count() const { return unsigned(options.size()); }
  CUjit_option *optionArray() { return options.data(); }
  void **valueArray() { return values.data(); }

  std::string info() const { return text(infoLog); }
  std::string errors() const { return text(errorLog); }

  /// "; JIT error log: ..." (or the info log where the error log is empty),
  /// to append to a failure's context; "" when both are empty.
  std::string forMessage() const {
    if (std::string e = errors(); !e.empty())
      return "; JIT error log: " + e;
    if (std::string i = info(); !i.empty())
      return "; JIT info log: " + i;
    return "";
  }

private:
  static constexpr size_t kLogBytes = 64 * 1024;

  void add(CUjit_option option, void *value) {
    options.push_back(option);
    values.push_back(value);
  }
  void add(CUjit_option option, uintptr_t value) {
    add(option, reinterpret_cast<void *>(value));
  }
  /// The driver writes NUL-terminated text into the buffer.
  static std::string text(const std::vector<char> &buffer) {
    return std::string(trim(std::string_view(
        buffer.data(), strnlen(buffer.data(), buffer.size()))));
  }

  std::vector<char> infoLog = std::vector<char>(kLogBytes, '\0');
  std::vector<char> errorLog = std::vector<char>(kLogBytes, '\0');
  std::vector<CUjit_option> options;
  std::vector<void *> values;
};

} // namespace kvarn::cuda

#endif // KVARN_RUNTIME_INTERNAL_H
