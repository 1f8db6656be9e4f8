//===- Error.h - kvarn errors carried through llvm::Error -------*- C++ -*-===//
//
// Internal code reports failures as llvm::Error values carrying a
// kvarn_status_t, so the C API and the tools can turn any failure into the
// same status code and message.
//
//===----------------------------------------------------------------------===//
#ifndef KVARN_SUPPORT_ERROR_H
#define KVARN_SUPPORT_ERROR_H

#include "kvarn/kvarn.h"

#include "llvm/Support/Error.h"
#include "llvm/Support/FormatVariadic.h"

namespace kvarn {

class KvarnError : public llvm::ErrorInfo<KvarnError> {
public:
  static char ID;
  KvarnError(kvarn_status_t status, std::string message)
      : status(status), message(std::move(message)) {}
  void log(llvm::raw_ostream &os) const override { os << message; }
  std::error_code convertToErrorCode() const override {
    return llvm::inconvertibleErrorCode();
  }
  kvarn_status_t getStatus() const { return status; }
  const std::string &getMessage() const { return message; }

private:
  kvarn_status_t status;
  std::string message;
};

/// An error with a status and a formatted message (llvm::formatv syntax).
template <typename... Ts>
llvm::Error makeError(kvarn_status_t status, const char *fmt, Ts &&...vals) {
  return llvm::make_error<KvarnError>(
      status, llvm::formatv(fmt, std::forward<Ts>(vals)...).str());
}

/// `err` with " (context)" appended to its message and its status kept, so a
/// low-level failure can say what it was doing ("cuMemAlloc: ... (allocating
/// 64 bytes on GPU 0)"). Success stays success.
llvm::Error withContext(llvm::Error err, llvm::StringRef context);

/// Consumes `err` and returns its status (KVARN_ERROR_INTERNAL for errors that
/// did not come from kvarn) and its message in `message`.
kvarn_status_t consumeError(llvm::Error err, std::string &message);

} // namespace kvarn

#endif // KVARN_SUPPORT_ERROR_H
